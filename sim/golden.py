"""The golden model: the executable, bit-exact specification of the leanattn datapath.

Integer NumPy throughout, one function per hardware unit, composed by :func:`run` exactly as the
hardware composes its units; the unit tests of each hardware block use the same functions. Every
lossy step names its rounding and overflow rule, and every intermediate is checked against the width
the configuration derives for it (and against the 62-bit limit of this model).

Rounding rule used everywhere: :func:`round_shift` -- an arithmetic right shift that rounds to
nearest, ties toward +infinity (``floor((x + 2**(n-1)) / 2**n)``). A shift beyond the operand's width
gives exactly 0 (a signed operand: from its width on), so hardware may clamp shift amounts there.

Units, in dataflow order (see ``docs/numerics.md`` for the formats):

* :func:`dot`            -- q.k, exact.
* :func:`score`          -- base-2 logit ``sat(round_shift(q.k * mant, shift))``.
* :func:`tile_max`       -- the integer running max: ``floor`` of the largest logit of a tile.
* :func:`tile_schedule`  -- tiles of a segment and the running max of each.
* :func:`exp2`           -- weight ``2**(s - m)`` from a shift and the exp2 table.
* :func:`online_softmax` -- (m, l, o) of one segment, tile by tile with one rescale per tile.
* :func:`merge`          -- the reduction operator on two partials.
* :func:`reciprocal`     -- leading-one normalization and the reciprocal table.
* :func:`normalize`      -- o / l times the output scale, rounded and saturated.
"""

import functools
from dataclasses import dataclass

import numpy as np

from ..hdl.config import GOLDEN_INT_BITS
from ..hdl.tables import exp2_table, lut_read, recip_table
from .partition import head_spans, schedule_shares, tree_reduce

__all__ = [
    "round_shift", "check_range", "tables", "dot", "score", "tile_schedule", "tile_max", "exp2", "Partial",
    "online_softmax", "merge", "reduce_partials", "reciprocal", "normalize", "bit_length", "run",
    "Result",
]

_LIMIT = 1 << (GOLDEN_INT_BITS - 1)      # |x| < 2**61: a 62-bit two's complement value


# -- fixed-point primitives ----------------------------------------------------------------------

def check_range(x, lo, hi, what):
    """Assert that every element of ``x`` lies in ``lo .. hi`` (a width the config derived)."""
    x = np.asarray(x)
    if x.size and (x.min() < lo or x.max() > hi):
        raise AssertionError(f"{what} out of its derived range {lo}..{hi}: "
                             f"{int(x.min())}..{int(x.max())}")
    return x


def check_signed(x, bits, what):
    return check_range(x, -(1 << (bits - 1)), (1 << (bits - 1)) - 1, what)


def check_unsigned(x, bits, what):
    return check_range(x, 0, (1 << bits) - 1, what)


def round_shift(x, n):
    """``x / 2**n`` rounded to nearest, ties up: ``(x + 2**(n-1)) >> n``; ``x`` for ``n == 0``.

    ``x`` and ``n`` are integer arrays (broadcast), ``n >= 0``. Shifts of ``GOLDEN_INT_BITS`` or
    more give 0 for every 62-bit ``x``, so ``n`` is clamped there.
    """
    x = np.asarray(x, dtype=np.int64)
    n = np.asarray(n, dtype=np.int64)
    if np.any(n < 0):
        raise AssertionError("round_shift by a negative amount")
    check_range(x, -_LIMIT, _LIMIT - 1, "round_shift operand")
    n = np.minimum(n, GOLDEN_INT_BITS)
    half = np.where(n > 0, np.left_shift(np.int64(1), np.maximum(n - 1, 0)), 0)
    return (x + half) >> n


def bit_length(x):
    """Vectorized ``int.bit_length`` of non-negative int64 values."""
    x = np.asarray(x, dtype=np.int64)
    top = np.zeros_like(x)                     # position of the leading one, by binary search
    for step in (32, 16, 8, 4, 2, 1):
        top = np.where((x >> (top + step)) > 0, top + step, top)
    return np.where(x > 0, top + 1, 0)


@functools.lru_cache(maxsize=64)
def tables(cfg):
    """The exp2 and reciprocal tables of ``cfg``, built from the spec functions in ``hdl.tables``."""
    exp = exp2_table(index_bits=cfg.exp_index_bits, frac_bits=cfg.exp_frac_bits,
                     interp=cfg.exp_interp_bits > 0)
    rec = recip_table(index_bits=cfg.recip_index_bits, frac_bits=cfg.recip_frac_bits,
                      interp=cfg.recip_interp_bits > 0)
    return np.array(exp, dtype=np.int64), np.array(rec, dtype=np.int64)


# -- QK^T and scores -----------------------------------------------------------------------------

def dot(cfg, q, k):
    """Exact dot products ``k @ q`` of one query ``(d,)`` with keys ``(n, d)``: int64 ``(n,)``.

    Computed in float64, which is exact here: ``|q.k| <= head_dim * 2**(2*input_bits - 2) < 2**53``.
    """
    assert cfg.qk_bits <= 53
    q = np.asarray(q)
    k = np.asarray(k)
    out = np.empty(k.shape[0], dtype=np.int64)
    chunk = 1 << 16                       # bounds the float64 copy of K
    qf = q.astype(np.float64)
    for lo in range(0, k.shape[0], chunk):
        out[lo:lo + chunk] = (k[lo:lo + chunk].astype(np.float64) @ qf).astype(np.int64)
    return check_signed(out, cfg.qk_bits, "q.k")


def score(cfg, qk, mant, shift):
    """Base-2 logits ``sat(round_shift(qk * mant, shift))`` in ``logit_frac_bits`` fraction bits.

    ``mant`` (``scale_bits`` unsigned) and ``shift`` (``0 .. score_shift_max``) encode the head's
    score scale ``s_q * s_k * log2(e) / sqrt(d) = mant * 2**-(shift + logit_frac_bits)``.
    Saturates to ``logit_min .. logit_max``.
    """
    if not (0 <= mant < 1 << cfg.scale_bits and 0 <= shift <= cfg.score_shift_max):
        raise AssertionError(f"score scale ({mant}, {shift}) outside its fields")
    product = check_signed(np.asarray(qk, dtype=np.int64) * np.int64(mant), cfg.scaled_qk_bits,
                           "q.k * score_mant")
    return np.clip(round_shift(product, shift), cfg.logit_min, cfg.logit_max)


def tile_schedule(cfg, s, tile=None):
    """Tiles of one segment's logits ``s``: ``(starts, run_max)``.

    Tile ``i`` holds keys ``starts[i] .. starts[i+1]-1`` (``tile`` keys from the segment's first,
    the last tile possibly short); ``run_max[i] = max(run_max[i-1], tile_max(tile i))`` is the
    integer running max its keys are weighed against, and ``run_max[i] - run_max[i-1]`` the rescale
    shift at its start.
    """
    tile = cfg.tile if tile is None else tile
    s = np.asarray(s, dtype=np.int64)
    starts = np.arange(0, s.shape[0], tile)
    return starts, np.maximum.accumulate(np.maximum.reduceat(s, starts) >> cfg.logit_frac_bits)


def tile_max(cfg, s):
    """The integer max of a run of logits: ``floor(max(s))`` (an arithmetic shift of the max)."""
    return int(np.max(s)) >> cfg.logit_frac_bits


# -- exp2 ----------------------------------------------------------------------------------------

def exp2(cfg, t):
    """Weights ``2**t`` for logits relative to the integer max, ``t = s - m * 2**F < 2**F``.

    ``t = n + f`` with ``n = floor(t) <= 0`` (an arithmetic shift) and ``f`` the fraction; the table
    gives ``2**f`` in [1, 2) (interpolated when ``exp_index_bits < logit_frac_bits``), then
    ``round_shift(2**f, -n)`` applies ``2**n``. Output: unsigned, ``exp_frac_bits`` fraction bits,
    below 2; underflows to exactly 0 for ``-n >= exp_frac_bits + 2``.
    """
    frac = cfg.logit_frac_bits
    t = check_range(np.asarray(t, dtype=np.int64), cfg.exp_in_min, (1 << frac) - 1, "exp2 argument")
    exp_table, _ = tables(cfg)
    y = lut_read(exp_table, t & ((1 << frac) - 1), cfg.exp_interp_bits)
    w = round_shift(y, np.minimum(-(t >> frac), cfg.exp_shift_max))
    return check_unsigned(w, cfg.weight_bits, "exp2 weight")


# -- online softmax over one segment -------------------------------------------------------------

@dataclass
class Partial:
    """Online-softmax state of a run of keys of one head.

    ``m``: integer running max (``max_bits`` signed); ``l``: sum of weights (``acc_l_bits``
    unsigned, ``exp_frac_bits`` fraction bits); ``o``: weighted sum of values (``acc_o_bits``
    signed each). ``valid`` is False for the empty partial, which :func:`merge` treats as identity.
    """
    valid: bool
    m:     int
    l:     int
    o:     np.ndarray

    @classmethod
    def empty(cls, head_dim):
        return cls(False, 0, 0, np.zeros(head_dim, dtype=np.int64))


def _check_state(cfg, m, l, o):
    check_range(m, cfg.max_min, cfg.max_max, "running max")
    check_unsigned(l, cfg.acc_l_bits, "l accumulator")
    check_signed(o, cfg.acc_o_bits, "o accumulator")


def online_softmax(cfg, s, v, tile=None):
    """Partial ``(m, l, o)`` of one segment: logits ``s`` ``(n,)`` and values ``v`` ``(n, d)``.

    Tiles of ``tile`` keys (default ``cfg.tile``) from the segment's first key; the last may be
    short. Per tile: ``m_new = max(m, tile_max)``; ``l`` and ``o`` are rescaled once by
    ``round_shift(., m_new - m)``; then every key adds ``w = exp2(s - m_new * 2**F)`` to ``l`` and
    ``w * v`` to ``o``. The first tile starts from the empty state (no rescale).
    """
    tile = cfg.tile if tile is None else tile
    frac = cfg.logit_frac_bits
    s = np.asarray(s, dtype=np.int64)
    n = s.shape[0]
    if n == 0:
        return Partial.empty(v.shape[1])
    # Running integer max per tile, the rescale shifts, and every key's weight.
    starts, run_max = tile_schedule(cfg, s, tile)
    key_max = np.repeat(run_max, np.diff(np.append(starts, n)))
    w = exp2(cfg, s - (key_max << frac))
    # Sums of each tile. Computed as float64 products, which is exact: every partial sum is below
    # tile * weight_max * 2**(input_bits-1) < 2**53.
    d = v.shape[1]
    assert tile * cfg.weight_max * -cfg.input_min < 1 << 53
    tile_l = np.add.reduceat(w, starts)
    tile_o = np.empty((starts.size, d), dtype=np.int64)
    full = n // tile                                  # full tiles, then at most one short one
    chunk = max(1, (1 << 16) // tile)                 # bounds the float64 copies
    for lo in range(0, full, chunk):
        hi = min(full, lo + chunk)
        wf = w[lo * tile:hi * tile].reshape(hi - lo, 1, tile).astype(np.float64)
        vf = np.asarray(v[lo * tile:hi * tile]).reshape(hi - lo, tile, d).astype(np.float64)
        tile_o[lo:hi] = np.matmul(wf, vf)[:, 0, :].astype(np.int64)
    if full < starts.size:
        tile_o[full] = w[full * tile:] @ np.asarray(v[full * tile:], dtype=np.int64)
    # Accumulate in order. Between two rises of the running max the rescale shift is 0 and the
    # accumulation is an exact sum, so tiles are summed in groups and shifted once per rise.
    rises = np.flatnonzero(np.diff(run_max)) + 1
    group_starts = np.concatenate([[0], rises])
    group_l = np.add.reduceat(tile_l, group_starts)
    group_o = np.add.reduceat(tile_o, group_starts, axis=0)
    l, o = int(group_l[0]), group_o[0].copy()
    for g in range(1, group_starts.size):
        shift = int(run_max[group_starts[g]] - run_max[group_starts[g] - 1])
        l = int(round_shift(l, shift)) + int(group_l[g])
        o = round_shift(o, shift) + group_o[g]
        _check_state(cfg, run_max[group_starts[g]], l, o)
    _check_state(cfg, run_max[-1], l, o)
    return Partial(True, int(run_max[-1]), l, o)


# -- reduction -----------------------------------------------------------------------------------

def merge(cfg, a, b):
    """The reduction operator ``a (+) b``: align both to ``m = max(m_a, m_b)`` and add.

    ``l = round_shift(l_a, m - m_a) + round_shift(l_b, m - m_b)``, the same for ``o``. Shifts beyond the
    accumulator width give exactly 0. An empty partial is the identity.
    """
    if not a.valid:
        return b
    if not b.valid:
        return a
    m = max(a.m, b.m)
    l = int(round_shift(a.l, m - a.m)) + int(round_shift(b.l, m - b.m))
    o = round_shift(a.o, m - a.m) + round_shift(b.o, m - b.m)
    _check_state(cfg, m, l, o)
    return Partial(True, m, l, o)


def reduce_partials(cfg, partials):
    """Final state of one head from ``{core: Partial}`` in the reduction tree's fixed pairing."""
    return tree_reduce(partials, cfg.cores, functools.partial(merge, cfg))


# -- reciprocal and output -----------------------------------------------------------------------

def reciprocal(cfg, l):
    """Reciprocal of the denominators ``l`` (int64 array, every ``l >= 2**exp_frac_bits``).

    ``e = floor(log2(l))``; the ``recip_index_bits + recip_interp_bits`` mantissa bits below the
    leading one (truncated) read the reciprocal table. Returns ``(r, e)`` with
    ``r ~= 2**recip_frac_bits * 2**e / l`` in (2**(recip_frac_bits-1), 2**recip_frac_bits].
    """
    l = check_range(np.asarray(l, dtype=np.int64), 1 << cfg.exp_frac_bits,
                    (1 << cfg.acc_l_bits) - 1, "denominator l")
    mant_bits = cfg.recip_index_bits + cfg.recip_interp_bits
    e = bit_length(l) - 1
    x = np.where(e >= mant_bits, l >> np.maximum(e - mant_bits, 0),
                 l << np.maximum(mant_bits - e, 0))
    _, rec_table = tables(cfg)
    r = lut_read(rec_table, x - (1 << mant_bits), cfg.recip_interp_bits)
    return check_unsigned(r, cfg.recip_bits, "reciprocal"), e


def normalize(cfg, o, l, out_mant, out_shift):
    """Output integers of heads: ``o`` ``(h, d)``, ``l``, ``out_mant``, ``out_shift`` ``(h,)``.

    ``o_n = round_shift(o, e - exp_frac_bits)`` aligns o to ``exp_frac_bits`` fraction bits of o/l
    (``e >= exp_frac_bits`` since ``l >= 1.0``); the per-head factor is
    ``round_shift(r * out_mant, recip_frac_bits)``; the output is
    ``sat(round_shift(o_n * factor, exp_frac_bits + out_shift))``, i.e. ``o/l * out_mant *
    2**-out_shift`` rounded to nearest (ties up) and saturated to ``output_bits``.
    """
    o = np.asarray(o, dtype=np.int64)
    out_mant = np.asarray(out_mant, dtype=np.int64)
    out_shift = np.asarray(out_shift, dtype=np.int64)
    r, e = reciprocal(cfg, l)
    aligned = check_signed(round_shift(o, (e - cfg.exp_frac_bits)[:, None]), cfg.norm_o_bits,
                           "aligned o")
    factor = check_unsigned(round_shift(r * out_mant, cfg.recip_frac_bits), cfg.out_factor_bits,
                            "output factor")
    product = check_signed(aligned * factor[:, None], cfg.out_product_bits, "o * factor")
    out = round_shift(product, (cfg.exp_frac_bits + out_shift)[:, None])
    return np.clip(out, cfg.output_min, cfg.output_max)


# -- the whole datapath --------------------------------------------------------------------------

@dataclass
class Result:
    """What :func:`run` returns: output integers ``(heads, d)`` and each head's final state."""
    out:      np.ndarray
    partials: dict            # {head: {core: Partial}}
    finals:   list            # [Partial] per head
    shares:   list            # partition: [[Segment]] per core


def run(cfg, job):
    """Run a job through the datapath: the schedule's shares, online softmax per segment, tree merge.

    ``job`` has flattened-head integer arrays ``q`` ``(h, d)``, ``k``/``v`` ``(h, n_max, d)``,
    ``lengths`` ``(h,)`` and the descriptor fields ``score_mant``, ``score_shift``, ``out_mant``,
    ``out_shift`` ``(h,)`` (see :mod:`leanattn.sim.job`).
    """
    heads = len(job.lengths)
    shares = schedule_shares(job.lengths, cfg)
    partials = {}
    for head, segments in sorted(head_spans(shares).items()):
        n = int(job.lengths[head])
        s = score(cfg, dot(cfg, job.q[head], job.k[head, :n]),
                  int(job.score_mant[head]), int(job.score_shift[head]))
        partials[head] = {seg.core: online_softmax(cfg, s[seg.start:seg.stop],
                                                   job.v[head, seg.start:seg.stop])
                          for seg in segments}
    finals = [reduce_partials(cfg, partials[head]) for head in range(heads)]
    out = normalize(cfg, np.stack([p.o for p in finals]), np.array([p.l for p in finals]),
                    job.out_mant, job.out_shift)
    return Result(out, partials, finals, shares)
