"""The host-side packer: a job's K and V laid out in the per-core banks of :class:`KVMemory`.

Layout (the contract of :mod:`leanattn.hdl.kvmem` and :mod:`leanattn.hdl.ports`): the keys of all
heads lie end to end, each head contiguous, in *memory order*: the heads sorted by the first core
that holds a part of them (the schedule's shares, :func:`leanattn.sim.partition.schedule_shares`),
then by head index. Under ``lean`` that is the flattened head order itself (the stream-K order);
under ``fa2`` it puts the heads of core 0 first, then those of core 1, and so on. With
``head_start[h]`` the keys before head ``h`` in that order, head ``h`` begins at element address
``k_base[h] = head_start[h] * head_dim`` and element ``e`` of its key ``j`` is at ``k_base[h] +
j*head_dim + e``; V the same in its own address space (``v_base == k_base``). These bases are what
the job descriptors carry.

Each core reads one contiguous range of global keys, its **window** ``[lo, hi)``: from the first
key of its first segment to the last key of its last (under ``lean`` the share ``[bound[c],
bound[c+1])`` of :func:`~leanattn.sim.partition.core_bounds`, under ``fa2`` its own heads). Its K
bank and its V bank hold exactly that range. A bank's **window base** is the global word address
of its first word (a word is ``lanes`` elements): ``lo * head_dim // lanes``. Bank word ``i`` of
core ``c`` holds global word ``window_base[c] + i``; the words past the window are left as they
are (zero in :attr:`PackedKV.k_banks`, not written by :meth:`PackedKV.writes`). An idle core's
window is empty.
"""

from dataclasses import dataclass

import numpy as np

from ..hdl.config import AttentionConfig
from ..hdl.kvmem import Kind, max_bank_keys
from .partition import schedule_shares

__all__ = ["PackedKV", "pack_kv", "bank_keys_for", "memory_order"]


def _check_cfg(cfg):
    if not isinstance(cfg, AttentionConfig):
        raise TypeError(f"cfg must be an AttentionConfig, not {cfg!r}")


def _check_int(name, value):
    if not isinstance(value, (int, np.integer)) or isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be an integer, not {value!r}")
    return int(value)


def memory_order(cfg, lengths):
    """The heads in memory order and each core's window ``(lo, hi)`` in global keys (see the module
    docstring), for a job of ``lengths``: ``(order, head_start, windows)``, ``head_start[h]`` the
    global key where head ``h`` begins."""
    shares = schedule_shares(lengths, cfg)
    first = {}
    for core, segments in enumerate(shares):
        for seg in segments:
            first.setdefault(seg.head, core)
    order = sorted(range(len(lengths)), key=lambda h: (first[h], h))
    head_start, at = [0] * len(lengths), 0
    for h in order:
        head_start[h], at = at, at + int(lengths[h])
    windows = []
    for segments in shares:
        if segments:
            windows.append((head_start[segments[0].head] + segments[0].start,
                            head_start[segments[-1].head] + segments[-1].stop))
        else:
            windows.append((at, at))
    return order, head_start, windows


def bank_keys_for(cfg, lengths):
    """Keys a bank needs for a job of head lengths ``lengths``: the largest window (under
    ``lean``, the largest share, ``ceil(sum(lengths) / cores)``)."""
    _check_cfg(cfg)
    lengths = _check_lengths(cfg, lengths)
    _, _, windows = memory_order(cfg, lengths)
    return max(1, max(hi - lo for lo, hi in windows))


@dataclass(frozen=True, eq=False)
class PackedKV:
    """A job's K and V in bank form.

    ``k_base``, ``v_base``: element address of each head's first key (descriptor fields).
    ``windows``: each core's window ``(lo, hi)`` in global keys. ``window_base``: each core's window base
    (global word address), the same for its K and V bank. ``k_banks``, ``v_banks``: per core, the
    bank image, ``(bank_keys * head_dim // lanes, lanes)`` int64.
    """
    cfg:         AttentionConfig
    bank_keys:   int
    lengths:     tuple
    k_base:      tuple
    v_base:      tuple
    windows:     tuple
    window_base: tuple
    k_banks:     tuple
    v_banks:     tuple

    @property
    def bank_words(self):
        return self.bank_keys * self.cfg.beats_per_key

    def share_words(self, core):
        """Words of core ``core``'s window (the loaded part of its banks)."""
        lo, hi = self.windows[core]
        return (hi - lo) * self.cfg.beats_per_key

    def writes(self):
        """The ``i_write`` payloads of :class:`~leanattn.hdl.kvmem.KVMemory` that load the job, as
        dicts for ``kv_write_layout(cfg).const``: the window base of every bank, then every word of
        every window (K then V of core 0, core 1, ...)."""
        zero = [0] * self.cfg.lanes
        for core in range(self.cfg.cores):
            for kind in Kind:
                yield {"base": 1, "kind": kind, "bank": core, "addr": self.window_base[core], "data": zero}
        for core in range(self.cfg.cores):
            for kind, banks in ((Kind.K, self.k_banks), (Kind.V, self.v_banks)):
                words = banks[core]
                for addr in range(self.share_words(core)):
                    yield {"base": 0, "kind": kind, "bank": core, "addr": addr,
                           "data": [int(x) for x in words[addr]]}


def _check_lengths(cfg, lengths):
    lengths = np.asarray(lengths).reshape(-1)
    if lengths.size and not np.issubdtype(lengths.dtype, np.integer):
        raise TypeError(f"lengths must be integers, not {lengths.dtype}")
    if not 1 <= lengths.size <= cfg.max_heads:
        raise ValueError(f"the number of heads must be in the range 1..{cfg.max_heads} (max_heads), "
                         f"not {lengths.size}")
    bad = [(h, int(n)) for h, n in enumerate(lengths) if not 1 <= n <= cfg.max_context]
    if bad:
        h, n = bad[0]
        raise ValueError(f"the length of head {h} must be in the range 1..{cfg.max_context} "
                         f"(max_context), not {n}")
    return tuple(int(n) for n in lengths)


def _check_kv(cfg, name, x, lengths):
    x = np.asarray(x)
    if not np.issubdtype(x.dtype, np.integer):
        raise TypeError(f"{name} must be an integer array, not {x.dtype}")
    if x.ndim != 3 or x.shape[0] != len(lengths) or x.shape[1] < max(lengths) or x.shape[2] != cfg.head_dim:
        raise ValueError(f"{name} must have the shape (heads, n_max, head_dim) = ({len(lengths)}, "
                         f">= {max(lengths)}, {cfg.head_dim}), not {x.shape}")
    for h, n in enumerate(lengths):
        used = x[h, :n]
        if used.size and (used.min() < cfg.input_min or used.max() > cfg.input_max):
            raise ValueError(f"{name} of head {h} must be in the range {cfg.input_min}..{cfg.input_max} "
                             f"(input_bits {cfg.input_bits})")
    return x


def pack_kv(cfg, lengths, k, v, *, bank_keys):
    """Lay out ``k`` and ``v`` (int arrays ``(heads, n_max, head_dim)``; keys past a head's length
    are ignored) for a job of ``lengths`` in banks of ``bank_keys`` keys: a :class:`PackedKV`.

    Raises ``ValueError`` naming ``bank_keys``, the keys needed and the core when a share does not
    fit.
    """
    _check_cfg(cfg)
    bank_keys = _check_int("bank_keys", bank_keys)
    if not 1 <= bank_keys <= max_bank_keys(cfg):
        raise ValueError(f"bank_keys must be in the range 1..{max_bank_keys(cfg)} "
                         f"(max_heads * max_context), not {bank_keys}")
    lengths = _check_lengths(cfg, lengths)
    k = _check_kv(cfg, "k", k, lengths)
    v = _check_kv(cfg, "v", v, lengths)

    _, head_start, windows = memory_order(cfg, lengths)
    base = tuple(start * cfg.head_dim for start in head_start)
    for core, (lo, hi) in enumerate(windows):
        if hi - lo > bank_keys:
            raise ValueError(f"bank_keys ({bank_keys}) is too small: core {core} reads {hi - lo} keys "
                             f"(global keys {lo}..{hi - 1})")

    def banks(x):
        flat = np.zeros((max(hi for _, hi in windows), cfg.head_dim), dtype=np.int64)   # (keys, d)
        for h, n in enumerate(lengths):
            flat[head_start[h]:head_start[h] + n] = x[h, :n]
        images = []
        for lo, hi in windows:
            image = np.zeros((bank_keys, cfg.head_dim), dtype=np.int64)
            image[:hi - lo] = flat[lo:hi]
            images.append(image.reshape(-1, cfg.lanes))
        return tuple(images)

    return PackedKV(cfg=cfg, bank_keys=bank_keys, lengths=lengths, k_base=base, v_base=base,
                    windows=tuple(windows), window_base=tuple(lo * cfg.beats_per_key for lo, _ in windows),
                    k_banks=banks(k), v_banks=banks(v))
