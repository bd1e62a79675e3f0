"""Float64 reference attention, the error measures used to judge the datapath, and the datapath's
error bound derived from the formats.

The datapath is judged against the **quantization floor**: exact float64 attention on the same
quantized integers (dequantized with the exact scales), so that input quantization is never blamed
on the datapath. End-to-end error compares with float64 attention on the float inputs.

:func:`datapath_error_bound` bounds, per head, the largest absolute difference between the golden
model's dequantized output (``out_int * out_scale``) and the quantization floor. The derivation is in
its docstring; the constants it needs from the lookup tables are measured exhaustively over every
argument the tables can see (:func:`exp2_read_error`, :func:`recip_read_error`). Their values for
the presets:

===========  ====================  ==========  =============  ============
preset       exp2 abs (2**f >= 1)  exp2 rel    recip rel e_r  min r / 2**R
===========  ====================  ==========  =============  ============
``tiny``     3.052e-05 (1/2 LSB)   2.943e-05   4.931e-04      0.50012
``default``  7.629e-06 (1/2 LSB)   7.541e-06   5.587e-05      0.50002
``wide``     2.635e-06             1.733e-06   5.587e-05      0.50002
===========  ====================  ==========  =============  ============

(``tests/test_reference.py`` checks these figures and that they stay within the bounds stated in
:mod:`leanattn.hdl.tables`.)
"""

import functools
import math

import numpy as np

from ..hdl.tables import exp2_table, lut_read, recip_error_bound, recip_table
from .partition import head_spans, schedule_shares
from .quant import score_scale_value

__all__ = [
    "attention", "rel_l2", "REL_L2_FLOOR", "exp2_read_error", "recip_read_error",
    "datapath_error_bound", "datapath_error_bounds", "bound_terms",
]

#: Denominator floor of the relative L2 error, in output units per element (an output of about
#: 0.05 rms): near-zero output vectors would otherwise dominate the tail.
REL_L2_FLOOR = 0.05

#: Relative slack on float64 evaluations of exact quantities (powers of two, table values): the
#: bound is computed in float64 and must not undercut the exact one by a rounding.
_FLOAT_SLACK = 2.0 ** -40

#: Largest table argument width measured exhaustively (2**22 reads).
_EXHAUSTIVE_BITS = 22


def attention(q, k, v, lengths):
    """``softmax(q . k^T / sqrt(d)) . v`` per head, float64: ``q`` ``(h, d)``, ``k``/``v``
    ``(h, n_max, d)``, ``lengths`` ``(h,)``; only the first ``lengths[h]`` keys count."""
    q = np.asarray(q, dtype=np.float64)
    out = np.empty(q.shape, dtype=np.float64)
    scale = 1.0 / np.sqrt(q.shape[-1])
    for h in range(q.shape[0]):
        n = int(lengths[h])
        s = (np.asarray(k[h, :n], dtype=np.float64) @ q[h]) * scale
        p = np.exp(s - s.max())
        out[h] = (p @ np.asarray(v[h, :n], dtype=np.float64)) / p.sum()
    return out


def rel_l2(out, ref, floor=REL_L2_FLOOR):
    """Relative L2 error per head: ``|out - ref| / max(|ref|, floor * sqrt(d))``."""
    out = np.asarray(out, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    denom = np.maximum(np.linalg.norm(ref, axis=-1), floor * np.sqrt(ref.shape[-1]))
    return np.linalg.norm(out - ref, axis=-1) / denom


# -- table error constants, measured exhaustively ------------------------------------------------

def _exp2_reads(cfg):
    """Every exp2 table read ``y(f)`` (``exp_frac_bits`` fraction bits) and the exact ``2**f``."""
    exp = np.array(exp2_table(index_bits=cfg.exp_index_bits, frac_bits=cfg.exp_frac_bits,
                              interp=cfg.exp_interp_bits > 0), dtype=np.int64)
    f = np.arange(1 << cfg.logit_frac_bits, dtype=np.int64)
    y = lut_read(exp, f, cfg.exp_interp_bits)
    return y, np.exp2(f / float(1 << cfg.logit_frac_bits))


@functools.lru_cache(maxsize=64)
def exp2_read_error(cfg):
    """Errors of the exp2 table read (interpolation included) over all ``2**logit_frac_bits``
    fractions ``f``, in units where ``2**f`` is in [1, 2): ``(a_abs, a_rel, y_min)`` with
    ``a_abs = max |y(f) - 2**f|``, ``a_rel = max |y(f) / 2**f - 1|`` and ``y_min = min y(f)`` (1.0
    when the table starts with an exact 2**0 and never reads below it)."""
    y, exact = _exp2_reads(cfg)
    value = np.ldexp(y.astype(np.float64), -cfg.exp_frac_bits)
    a_abs = float(np.max(np.abs(value - exact))) * (1 + _FLOAT_SLACK) + 2.0 ** -52
    a_rel = float(np.max(np.abs(value / exact - 1))) * (1 + _FLOAT_SLACK) + 2.0 ** -52
    return a_abs, a_rel, float(value.min())


@functools.lru_cache(maxsize=64)
def recip_read_error(cfg):
    """Relative error of the reciprocal unit over every mantissa it can see: ``(e_r, r_min)``.

    The unit reads its table at ``x``, the ``M = recip_index_bits + recip_interp_bits`` mantissa bits
    below the leading one of ``l`` (truncated), so the true mantissa ``mu`` lies in
    ``[x, x + 1) / 2**M``. ``e_r`` is the largest ``|r(x) * mu / 2**recip_frac_bits - 1|`` over all
    ``2**M`` values of ``x`` at both ends of that interval (computed with integers, so exactly);
    ``r_min`` is the smallest output ``r / 2**recip_frac_bits``. Above ``2**22`` mantissas the
    stated bound :func:`leanattn.hdl.tables.recip_error_bound` is used instead, and ``r_min`` is the
    smallest entry (an interpolated read never falls below both of its end points).
    """
    bits = cfg.recip_index_bits + cfg.recip_interp_bits
    rec = np.array(recip_table(index_bits=cfg.recip_index_bits, frac_bits=cfg.recip_frac_bits,
                               interp=cfg.recip_interp_bits > 0), dtype=np.int64)
    if bits > _EXHAUSTIVE_BITS:
        return (recip_error_bound(index_bits=cfg.recip_index_bits,
                                  interp_bits=cfg.recip_interp_bits, frac_bits=cfg.recip_frac_bits),
                math.ldexp(int(rec.min()), -cfg.recip_frac_bits))
    x = np.arange(1 << bits, 2 << bits, dtype=np.int64)
    r = lut_read(rec, x - (1 << bits), cfg.recip_interp_bits)
    one = 1 << (cfg.recip_frac_bits + bits)           # r * (x + 1) <= 2**(R + M + 2): exact int64
    worst = max(int(np.max(np.abs(r * x - one))), int(np.max(np.abs(r * (x + 1) - one))))
    return math.ldexp(worst, -(cfg.recip_frac_bits + bits)), math.ldexp(int(r.min()),
                                                                       -cfg.recip_frac_bits)


# -- the datapath error bound ---------------------------------------------------------------------

def _rounding_events(cfg, segments):
    """Bound on the rounding events of the rescales and merges of one head, weighted by their LSB in
    units of the head's final max: per segment of ``t`` tiles the rises of the running max are at
    most ``t - 1``, at distinct integer maxima below or at the final one, so their LSBs sum to at
    most ``1 + 1/2 + ... = 2 - 2**(2-t)``; each merge rounds one side at most once."""
    events = 0.0
    for seg in segments:
        tiles = -(-seg.length // cfg.tile)
        events += 2.0 - 2.0 ** (2 - tiles) if tiles > 1 else 0.0
    return events + len(segments) - 1


def bound_terms(cfg, job, head, *, segments=None):
    """The datapath error bound of one head with its intermediate terms, as a dict (see
    :func:`datapath_error_bound`; ``bound`` is the result, in output units)."""
    F, P = cfg.logit_frac_bits, cfg.exp_frac_bits
    if segments is None:
        segments = head_spans(schedule_shares(job.lengths, cfg))[head]
    n = int(job.lengths[head])
    q = np.asarray(job.q[head], dtype=np.float64)
    k = np.asarray(job.k[head, :n], dtype=np.float64)
    v = np.asarray(job.v[head, :n], dtype=np.int64)
    v_scale = float(job.head_scales("v")[head])
    out_scale = float(job.head_scales("out")[head])
    terms = {"head": head, "length": n}

    # Score: s_hat = round_shift(qk * mant, shift) / 2**F, the exact base-2 logit s* = qk * c.
    c = float(score_scale_value(job.head_scales("q")[head], job.head_scales("k")[head],
                                cfg.head_dim))
    mant, shift = int(job.score_mant[head]), int(job.score_shift[head])
    delta = abs(math.ldexp(mant, -(shift + F)) / c - 1) * (1 + _FLOAT_SLACK)
    if mant >= 1 << (cfg.scale_bits - 1):
        delta = max(delta, math.ldexp(1.0, -cfg.scale_bits) * (1 + _FLOAT_SLACK))
    s = (k @ q) * c                  # q.k is exact in float64 (qk_bits <= 53), then one rounding
    s_max = float(s.max())
    S = float(np.abs(s).max())
    r_s = math.ldexp(1.0, -(F + 1)) if shift > 0 else 0.0
    terms.update(delta=delta, score_abs_max=S, score_max=s_max)
    if S * (1 + delta) * (1 + _FLOAT_SLACK) > math.ldexp(cfg.logit_max, -F):
        terms.update(saturates=True, bound=math.inf)       # logits may saturate: no bound
        return terms
    gap = s_max - s
    eps = delta * gap + r_s                                 # |s_hat_j - s*_j - delta s*_max|
    terms["eps_max"] = float(eps.max())

    # exp2: w_j = p_j (1 + alpha_j) + beta_j in units of the final integer max m,
    # p_j = lam * pi_j, pi_j = 2**(s*_j - s*_max), lam = 2**(s*_max (1 + delta) - m).
    _, a_rel, y_min = exp2_read_error(cfg)
    pi = np.exp2(-gap)
    alpha = (np.expm1(eps * math.log(2.0)) + a_rel * np.exp2(eps)) * (1 + _FLOAT_SLACK)
    L_star = float(pi.sum())
    A = float((pi * alpha).sum())
    lam_lo, lam_hi = 2.0 ** -r_s, 2.0 ** (1 + r_s)
    b = math.ldexp(1.0, -(P + 1))
    beta = np.minimum(b, lam_hi * pi * (1 + alpha))        # |beta_j| bounds
    B = float(beta.sum())
    E = _rounding_events(cfg, segments) * b
    terms.update(alpha_max=float(alpha.max()), L_star=L_star, A=A, B=B, events=E / b)

    # o / l in v-integer units, per output column i: the floor y*_i (a convex combination of the
    # v_ij) and the deviations |v_ij - y*_i| (float64, with a slack far above its rounding).
    y_star = (pi @ v) / L_star
    dev = np.abs(v - y_star) + 1e-9 * (1 + np.abs(v).max())
    y_abs = np.abs(y_star) + 1e-9 * (1 + np.abs(v).max())
    A_col = (pi * alpha) @ dev                               # sum pi_j |alpha_j| |v_ij - y*_i|
    C1 = beta @ dev + E * (1 + y_abs)                        # roundings of weights, rescales, merges
    C2 = B + E
    K1 = L_star - A

    def ratio(lam):                                          # (lam A_i + C1_i) / l_hat lower bound
        den = max(y_min, lam * K1 - C2)
        return (lam * A_col + C1) / den if den > 0 else np.full(A_col.shape, math.inf)

    candidates = [lam_lo, lam_hi]
    if K1 > 0 and lam_lo < (y_min + C2) / K1 < lam_hi:
        candidates.append((y_min + C2) / K1)
    dy = np.max([ratio(lam) for lam in candidates], axis=0) * (1 + _FLOAT_SLACK)
    terms["delta_y"] = float(dy.max())

    # Output: aligned o (1/2 LSB of 2**-P), reciprocal e_r, per-head factor rounding, final 1/2 LSB.
    e_r, r_min = recip_read_error(cfg)
    out_mant, out_shift = int(job.out_mant[head]), int(job.out_shift[head])
    gain = math.ldexp(out_mant, -out_shift)                 # output integers per v integer
    f_rel = 0.5 / (r_min * out_mant)
    eta = (1 + e_r) * (1 + f_rel) - 1
    err_int = gain * (dy + b + (y_abs + dy + b) * eta) + 0.5
    excess = gain * y_abs - cfg.output_max                  # a true value beyond the output range
    bound = out_scale * float(np.maximum(err_int, excess).max()) * (1 + _FLOAT_SLACK) \
        + 1e-9 * v_scale * (1 + float(np.abs(v).max()))     # float64 error of the floor itself
    terms.update(e_r=e_r, eta=eta, gain=gain, saturates=False, bound=bound)
    return terms


def datapath_error_bound(cfg, job, head):
    """Bound on ``max_i |out_int_i * out_scale - y_i|`` for one head, in output units, where ``out``
    is the golden model's output and ``y`` the quantization floor (float64 attention on the
    dequantized integers). ``math.inf`` if the head's logits may saturate.

    Notation: ``F = logit_frac_bits``, ``P = exp_frac_bits``, ``R = recip_frac_bits``,
    ``b = 2**-(P+1)``; ``s*_j = q.k_j * c`` the exact base-2 logits with ``c = s_q s_k log2(e)/sqrt(d)``
    (the floor's softmax is ``2**s*`` normalized); all weights below are in units of the head's
    final integer max ``m = floor(max_j s_hat_j)`` of the hardware.

    1. **Score.** ``mant * 2**-(shift+F) = c (1 + delta)``; ``|delta| <= 2**-scale_bits`` (with a
       float slack) when ``mant >= 2**(scale_bits-1)``, else ``delta`` is computed from the actual
       ``mant``, ``shift`` and ``c``. ``s_hat_j = s*_j (1 + delta) + r_j``, ``|r_j| <= 2**-(F+1)``
       (0 when ``shift == 0``). Requires no saturation: ``S (1 + |delta|) <= logit_max * 2**-F``,
       ``S = max |s*_j|``; otherwise the result is ``inf``.
       Softmax ignores a common offset, so the scale error is charged against the gap to the
       max, not against ``|s*|``: ``s_hat_j - s*_j - delta s*_max = delta (s*_j - s*_max) + r_j``,
       ``|.| <= eps_j = |delta| (s*_max - s*_j) + 2**-(F+1)``.
    2. **exp2.** ``w_j = p_j (1 + alpha_j) + beta_j`` with ``p_j = lam pi_j``,
       ``pi_j = 2**(s*_j - s*_max)``, ``lam = 2**(s*_max (1+delta) - m)``; ``m = floor(max s_hat)``
       and ``max s_hat`` is within ``r = 2**-(F+1)`` of ``s*_max (1+delta)``, so ``lam`` is in
       ``[2**-r, 2**(1+r))``. ``|alpha_j| <= (2**eps_j - 1) + a 2**eps_j`` with ``a`` the largest *relative*
       error of the table read over all ``2**F`` fractions (:func:`exp2_read_error`; at most the
       absolute error in units where 2**f is in [1, 2)). ``beta_j`` is the rounding of the final
       shift, at most ``b`` in the units of the running max of the key's tile, so at most ``b`` in
       final units; and as weights are never negative, ``|beta_j| <= p_j (1 + alpha_j)`` too:
       ``sum |beta_j| <= B = sum_j min(b, 2**(1+r) pi_j (1 + alpha_j))``.
    3. **Accumulation.** Each rescale or merge rounding adds at most 1/2 LSB, in units of the max it
       aligns to, to ``l`` and to each ``o_i``. A segment of ``t`` tiles rises at most ``t-1`` times,
       at distinct integer maxima ``<= m``: their LSBs sum to less than ``2 b`` (``(2 - 2**(2-t)) b``
       exactly); each of the ``segments - 1`` merges rounds one side once: ``E = b [sum over
       segments (2 - 2**(2-t)) + segments - 1]`` (the cruder ``(tiles + segments - 1) b`` holds too).
    4. **Quotient.** With ``y*_i = sum p_j v_ij / sum p_j`` (the floor, in v integers),
       ``o_i/l - y*_i = [sum p_j alpha_j (v_ij - y*_i) + sum beta_j (v_ij - y*_i) + e_oi - y*_i e_l] /
       l`` with ``|e_oi|, |e_l| <= E``, and ``l >= max(y_min, lam (L* - A) - B - E)`` where
       ``L* = sum pi_j`` (>= 1), ``A = sum pi_j |alpha_j|`` and ``y_min`` the smallest table read
       (1: the key at the max has weight ``T[0] = 2**P`` or more and is never shifted later). Per
       column, with ``dev_ij = |v_ij - y*_i|`` (at most the column's range, at most ``2 vmax``):
       ``|o_i/l - y*_i| <= dy_i = sup over lam of (lam sum_j pi_j |alpha_j| dev_ij +
       sum_j |beta_j|max dev_ij + E (1 + |y*_i|)) / max(y_min, lam (L* - A) - B - E)``. The quotient
       rises with ``lam`` while the denominator is clamped, then falls, so the sup is at an end of
       the ``lam`` range or at the clamp's corner.
    5. **Output.** ``e = floor(log2 l)``, ``mu = l 2**-e`` in [1, 2); ``aligned 2**-P = mu o/l + rho``,
       ``|rho| <= b``; the table gives ``r 2**-R = (1 + eps_r) / mu``, ``|eps_r| <= e_r`` measured
       over every truncated mantissa and the ends of its truncation interval
       (:func:`recip_read_error`); ``factor = r out_mant 2**-R (1 + phi)``, ``|phi| <= 1 /
       (2 r_min out_mant)`` (``2**-(scale_bits-1)`` for a normalized ``out_mant``). With ``g =
       out_mant 2**-out_shift`` (output integers per v integer) and ``eta = (1 + e_r)(1 + phi) - 1``:
       ``|out_int_i - g y*_i| <= g [dy_i + b + (|y*_i| + dy_i + b) eta] + 1/2`` (the last term is
       the output rounding). Saturation moves an output toward its true value, unless the true
       value itself lies outside the output range: then the error is at most ``g |y*_i| -
       output_max``.
    6. In output units (``out_scale * g = v_scale``), plus ``1e-9 v_scale (1 + vmax)`` for the
       float64 error of the floor itself: ``bound = out_scale * max_i max(g [dy_i + b + (|y*_i| +
       dy_i + b) eta] + 1/2, g |y*_i| - output_max)``.

    The simpler form of ``docs/numerics.md`` (one ``alpha`` from ``eps_s = S |delta| +
    2**-(F+1)``, ``n b`` for the weight roundings, ``E = (tiles + segments - 1) b``, ``D = 2 vmax``
    for every deviation, denominator ``L (1 - alpha) - n b - E`` with ``L >= L* 2**-eps_s``) is
    also a valid bound; every term here is smaller or equal, and the denominator cannot reach zero
    (``l >= 1``) -- which makes the quotient non-monotonic in ``L``, hence ``lam`` bounded from both
    sides. On the real activations it is 3 to 90 times tighter (median 9).
    """
    return bound_terms(cfg, job, head)["bound"]


def datapath_error_bounds(cfg, job):
    """:func:`datapath_error_bound` of every head of ``job``: float64 ``(flat_heads,)``."""
    spans = head_spans(schedule_shares(job.lengths, cfg))
    return np.array([bound_terms(cfg, job, h, segments=spans[h])["bound"]
                     for h in range(len(job.lengths))])
