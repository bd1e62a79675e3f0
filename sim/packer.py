"""The host-side packer: a job's K and V laid out in the per-core banks of :class:`KVMemory`.

Layout (the contract of :mod:`leanattn.hdl.kvmem` and :mod:`leanattn.hdl.ports`): the keys of all
heads lie end to end in flattened-head order, the stream-K order of
:func:`leanattn.sim.partition.partition`. With ``head_start[h] = lengths[0] + ... + lengths[h-1]``,
head ``h`` begins at element address ``k_base[h] = head_start[h] * head_dim`` and element ``e`` of
its key ``j`` is at ``k_base[h] + j*head_dim + e``; V the same in its own address space
(``v_base == k_base``). These bases are what the job descriptors carry.

Core ``c`` reads the global keys ``[bound[c], bound[c+1])`` (:func:`~leanattn.sim.partition.core_bounds`):
one contiguous address range, so its K bank and its V bank hold exactly that share, and the
shares -- and hence the banks' fill -- differ by at most one key. A bank's **window base** is the
global word address of its first word (a word is ``lanes`` elements): ``bound[c] * head_dim // lanes``.
Bank word ``i`` of core ``c`` holds global word ``window_base[c] + i``; the words past the share are
left as they are (zero in :attr:`PackedKV.k_banks`, not written by :meth:`PackedKV.writes`).
"""

from dataclasses import dataclass

import numpy as np

from ..hdl.config import AttentionConfig
from ..hdl.kvmem import Kind, max_bank_keys
from .partition import core_bounds

__all__ = ["PackedKV", "pack_kv", "bank_keys_for"]


def _check_cfg(cfg):
    if not isinstance(cfg, AttentionConfig):
        raise TypeError(f"cfg must be an AttentionConfig, not {cfg!r}")


def _check_int(name, value):
    if not isinstance(value, (int, np.integer)) or isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be an integer, not {value!r}")
    return int(value)


def bank_keys_for(cfg, total_keys):
    """Keys a bank needs for a job of ``total_keys`` keys: the largest share, ``ceil(total / cores)``."""
    _check_cfg(cfg)
    total_keys = _check_int("total_keys", total_keys)
    if not 1 <= total_keys <= max_bank_keys(cfg):
        raise ValueError(f"total_keys must be in the range 1..{max_bank_keys(cfg)} "
                         f"(max_heads * max_context), not {total_keys}")
    return -(-total_keys // cfg.cores)


@dataclass(frozen=True, eq=False)
class PackedKV:
    """A job's K and V in bank form.

    ``k_base``, ``v_base``: element address of each head's first key (descriptor fields).
    ``bounds``: the global key offsets of the core shares. ``window_base``: each core's window base
    (global word address), the same for its K and V bank. ``k_banks``, ``v_banks``: per core, the
    bank image, ``(bank_keys * head_dim // lanes, lanes)`` int64.
    """
    cfg:         AttentionConfig
    bank_keys:   int
    lengths:     tuple
    k_base:      tuple
    v_base:      tuple
    bounds:      tuple
    window_base: tuple
    k_banks:     tuple
    v_banks:     tuple

    @property
    def bank_words(self):
        return self.bank_keys * self.cfg.beats_per_key

    def share_words(self, core):
        """Words of core ``core``'s share (the loaded part of its banks)."""
        return (self.bounds[core + 1] - self.bounds[core]) * self.cfg.beats_per_key

    def writes(self):
        """The ``i_write`` payloads of :class:`~leanattn.hdl.kvmem.KVMemory` that load the job, as
        dicts for ``kv_write_layout(cfg).const``: the window base of every bank, then every word of
        every share (K then V of core 0, core 1, ...)."""
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

    head_start = np.concatenate([[0], np.cumsum(lengths)])
    base = tuple(int(s) * cfg.head_dim for s in head_start[:-1])
    bounds = tuple(core_bounds(int(head_start[-1]), cfg.cores))
    for core in range(cfg.cores):
        need = bounds[core + 1] - bounds[core]
        if need > bank_keys:
            raise ValueError(f"bank_keys ({bank_keys}) is too small: core {core} reads {need} keys "
                             f"(global keys {bounds[core]}..{bounds[core + 1] - 1})")

    def banks(x):
        flat = np.concatenate([x[h, :n].astype(np.int64) for h, n in enumerate(lengths)])   # (keys, d)
        images = []
        for core in range(cfg.cores):
            image = np.zeros((bank_keys, cfg.head_dim), dtype=np.int64)
            share = flat[bounds[core]:bounds[core + 1]]
            image[:len(share)] = share
            images.append(image.reshape(-1, cfg.lanes))
        return tuple(images)

    return PackedKV(cfg=cfg, bank_keys=bank_keys, lengths=lengths, k_base=base, v_base=base,
                    bounds=bounds, window_base=tuple(b * cfg.beats_per_key for b in bounds[:-1]),
                    k_banks=banks(k), v_banks=banks(v))
