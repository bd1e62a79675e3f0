"""A synthetic KV memory for long-context system runs: every element a fixed function of its address.

Loading a KV cache word by word costs the system bench one cycle per word: a 65536-key job at
``wide`` is a million words, and the bank memories holding them make the generated Verilog huge.
:class:`SyntheticBank` answers read requests exactly like :class:`~leanattn.hdl.kvmem.KVBank`
(same ports, same checks, same timing: the cycle model holds unchanged) but computes each word
from its global element addresses instead of storing it, with :func:`element` -- a 32-bit
integer hash of the address, cut to ``input_bits`` signed bits. Only the window bases are loaded.

K and V share the function; V lives ``v_offset`` elements above K in the address space
(:func:`layout`), so a key and its value differ. :func:`synthetic_job` builds a job whose arrays
are these elements, so the golden model sees exactly what the memory serves.
"""

from dataclasses import dataclass

import numpy as np
from amaranth.hdl import Module, Signal

from ..hdl.config import ceil_log2
from ..hdl.kvmem import KVBank, KVMemory
from ..hdl.ports import kv_data_layout
from .packer import memory_order

__all__ = ["element", "elements", "SyntheticBank", "synthetic_memory", "SyntheticLayout", "layout",
           "synthetic_job"]

_MASK = (1 << 32) - 1
#: Added to the address first, then the two odd multipliers of a 32-bit integer hash.
_SALT, _MUL1, _MUL2 = 0x9E3779B9, 0x7FEB352D, 0x846CA68B


def elements(addresses, bits):
    """The element at each global element address (NumPy, any shape): the 32-bit hash
    ``x = (a + 0x9E3779B9) * 0x7FEB352D; x ^= x >> 15; x *= 0x846CA68B`` (mod 2**32), its top
    ``bits`` bits as a signed integer."""
    x = (np.asarray(addresses, dtype=np.uint64) + np.uint64(_SALT)) & np.uint64(_MASK)
    x = (x * np.uint64(_MUL1)) & np.uint64(_MASK)
    x ^= x >> np.uint64(15)
    x = (x * np.uint64(_MUL2)) & np.uint64(_MASK)
    value = (x >> np.uint64(32 - bits)).astype(np.int64)
    return np.where(value >= 1 << (bits - 1), value - (1 << bits), value)


def element(address, bits):
    """:func:`elements` in Amaranth: ``address`` an unsigned value; a ``bits``-bit value."""
    x = ((address + _SALT)[:32] * _MUL1)[:32]
    x = x ^ (x >> 15)
    x = (x * _MUL2)[:32]
    return x[32 - bits:]


class _FunctionPort:
    """Stands in for a memory read port: ``data`` loads ``f(window base + addr)`` when ``en``."""

    def __init__(self, m, cfg, base_elem, word_bits):
        self.en = Signal()
        self.addr = Signal(word_bits)
        self.data = Signal(kv_data_layout(cfg))
        first = base_elem + self.addr * cfg.lanes
        with m.If(self.en):
            m.d.sync += [self.data[lane].eq(element(first + lane, cfg.input_bits))
                         for lane in range(cfg.lanes)]


class SyntheticBank(KVBank):
    """:class:`~leanattn.hdl.kvmem.KVBank` whose words are computed, not stored: word ``i`` of
    the window is the elements at global element addresses ``base + i*lanes ..`` (:func:`element`).
    Data writes are taken and ignored (so is their range check); everything else -- window base,
    request checks, latency, throughput, stalls, reset -- is :class:`KVBank`'s."""

    def elaborate(self, platform):
        m = Module()
        base_elem = self._window_base(m)
        word_bits = ceil_log2(self.words) or 1          # as KVBank._read
        port = _FunctionPort(m, self._cfg, base_elem, word_bits)
        m.d.comb += self.o_error.eq(self._read(m, port, base_elem))
        return m


def synthetic_memory(cfg, *, bank_keys):
    """A :class:`~leanattn.hdl.kvmem.KVMemory` of :class:`SyntheticBank` banks."""
    return KVMemory(cfg, bank_keys=bank_keys, bank=SyntheticBank)


@dataclass(frozen=True)
class SyntheticLayout:
    """Where a job's K and V sit: ``k_base``/``v_base`` per head (elements), each core's K and V
    window base (global words), and the bank size in keys."""
    k_base:      tuple
    v_base:      tuple
    k_window:    tuple
    v_window:    tuple
    bank_keys:   int
    v_offset:    int


def layout(cfg, lengths):
    """The packer's memory order (:func:`leanattn.sim.packer.memory_order`) for K; V the same,
    ``v_offset`` (the job's K elements, rounded up to a word) higher."""
    lengths = [int(n) for n in lengths]
    _, head_start, windows = memory_order(cfg, lengths)
    total = sum(lengths) * cfg.head_dim
    v_offset = -(-total // cfg.lanes) * cfg.lanes
    if 2 * v_offset > 1 << cfg.kv_addr_bits:
        raise ValueError(f"a job of {sum(lengths)} keys does not fit twice in the "
                         f"{cfg.kv_addr_bits}-bit element addresses")
    bpk = cfg.beats_per_key
    k_base = tuple(start * cfg.head_dim for start in head_start)
    return SyntheticLayout(
        k_base=k_base, v_base=tuple(b + v_offset for b in k_base),
        k_window=tuple(lo * bpk for lo, _ in windows),
        v_window=tuple(lo * bpk + v_offset // cfg.lanes for lo, _ in windows),
        bank_keys=max(1, max(hi - lo for lo, hi in windows)), v_offset=v_offset)


def synthetic_job(cfg, lengths, rng, **job_args):
    """A random integer job (:func:`leanattn.sim.jobgen.random_int_job`) whose K and V are the
    synthetic memory's elements at :func:`layout`'s addresses; returns ``(job, layout)``."""
    from .jobgen import random_int_job

    job = random_int_job(cfg, lengths, rng, **job_args)
    place = layout(cfg, job.lengths)
    d = cfg.head_dim
    offsets = np.arange(job.k.shape[1] * d).reshape(job.k.shape[1], d)
    for h in range(len(job.lengths)):
        job.k[h] = elements(place.k_base[h] + offsets, cfg.input_bits)
        job.v[h] = elements(place.v_base[h] + offsets, cfg.input_bits)
    return job, place
