"""The float64 reference and the datapath error bound: ``attention`` against a naive loop, the table
error constants, and the bound holding on every output element of many random and extreme jobs."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from leanattn.hdl.config import PRESETS
from leanattn.hdl.tables import exp2_error_bound, recip_error_bound
from leanattn.sim import golden
from leanattn.sim.accuracy import real_arrays, synthetic_arrays
from leanattn.sim.configs import TEST_CONFIGS
from leanattn.sim.job import Job
from leanattn.sim.partition import head_spans, partition
from leanattn.sim.reference import (
    REL_L2_FLOOR,
    attention,
    bound_terms,
    datapath_error_bound,
    datapath_error_bounds,
    exp2_read_error,
    recip_read_error,
    rel_l2,
)

CONFIGS = {
    **TEST_CONFIGS,                                   # the presets and ``odd`` (odd formats too)
    "odd_default": PRESETS["default"].replace(head_dim=24, lanes=3),
    # Narrow formats, where rounding terms dominate: 8-bit weights (4096 keys of 1/2 LSB each can
    # outweigh l), a 64-entry midpoint reciprocal, 10-bit scales and outputs.
    "low_precision": PRESETS["default"].replace(
        logit_frac_bits=8, exp_index_bits=8, exp_frac_bits=8, recip_index_bits=6,
        recip_interp_bits=0, recip_frac_bits=8, scale_bits=10, output_bits=10),
}
CONFIG_NAMES = sorted(CONFIGS)
LOG2_E = 1 / math.log(2)


# -- attention and rel_l2 --------------------------------------------------------------------------

def _naive_attention(q, k, v, lengths):
    heads, d = q.shape
    out = np.zeros((heads, d))
    for h in range(heads):
        n = int(lengths[h])
        scores = [sum(float(q[h, i]) * float(k[h, j, i]) for i in range(d)) / math.sqrt(d)
                  for j in range(n)]
        top = max(scores)
        weights = [math.exp(s - top) for s in scores]
        total = math.fsum(weights)
        for i in range(d):
            out[h, i] = math.fsum(w * float(v[h, j, i]) for j, w in enumerate(weights)) / total
    return out


@pytest.mark.parametrize("seed", range(4))
def test_attention_matches_naive_loop(seed):
    rng = np.random.default_rng(seed)
    heads, n_max, d = 5, 23, 7
    q = rng.standard_normal((heads, d)) * rng.uniform(0.1, 30, (heads, 1))   # up to peaked rows
    k = rng.standard_normal((heads, n_max, d))
    v = rng.standard_normal((heads, n_max, d))
    lengths = rng.integers(1, n_max + 1, heads)
    lengths[0] = 1
    k_pad, v_pad = k.copy(), v.copy()
    for h in range(heads):                       # padding must never be read
        k_pad[h, lengths[h]:] = 1e6
        v_pad[h, lengths[h]:] = np.nan
    got = attention(q, k_pad, v_pad, lengths)
    np.testing.assert_allclose(got, _naive_attention(q, k, v, lengths), rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(got[0], v[0, 0])                 # one key: its value


def test_attention_is_shift_safe_and_exact_for_equal_scores():
    q = np.full((1, 4), 100.0)
    k = np.full((1, 3, 4), 100.0)                                # scores of 20000: no overflow
    v = np.arange(12.0).reshape(1, 3, 4)
    np.testing.assert_allclose(attention(q, k, v, [3]), v.mean(axis=1), rtol=1e-15)


def test_rel_l2_floor():
    ref = np.zeros((1, 16))
    out = np.full((1, 16), 0.01)
    assert rel_l2(out, ref)[0] == pytest.approx(0.01 / REL_L2_FLOOR)
    ref = np.full((1, 16), 3.0)
    assert rel_l2(ref * 1.01, ref)[0] == pytest.approx(0.01)


# -- table error constants -------------------------------------------------------------------------

#: The figures stated in the docstring of ``sim/reference.py``: exp2 abs, exp2 rel, recip e_r, r_min.
STATED = {
    "tiny":    (3.052e-05, 2.943e-05, 4.931e-04, 0.50012),
    "default": (7.629e-06, 7.541e-06, 5.587e-05, 0.50002),
    "wide":    (2.635e-06, 1.733e-06, 5.587e-05, 0.50002),
}


@pytest.mark.parametrize("name", sorted(STATED))
def test_table_error_constants_as_stated(name):
    cfg = PRESETS[name]
    a_abs, a_rel, y_min = exp2_read_error(cfg)
    e_r, r_min = recip_read_error(cfg)
    for got, stated in zip((a_abs, a_rel, e_r, r_min), STATED[name]):
        assert got == pytest.approx(stated, rel=1e-3), (name, got, stated)
    assert y_min == 1.0                                          # the max key's weight is >= 1
    if cfg.exp_interp_bits == 0:                                 # only the entries' rounding
        assert a_abs <= 2.0 ** -(cfg.exp_frac_bits + 1) * (1 + 1e-9)


@pytest.mark.parametrize("name", CONFIG_NAMES)
def test_table_errors_within_stated_format_bounds(name):
    cfg = CONFIGS[name]
    a_abs, a_rel, _ = exp2_read_error(cfg)
    e_r, r_min = recip_read_error(cfg)
    exp_bound = exp2_error_bound(index_bits=cfg.exp_index_bits, frac_bits=cfg.exp_frac_bits,
                                 interp_bits=cfg.exp_interp_bits)
    assert a_rel <= a_abs <= math.ldexp(exp_bound, -cfg.exp_frac_bits) * (1 + 1e-9)
    assert e_r <= recip_error_bound(index_bits=cfg.recip_index_bits,
                                    interp_bits=cfg.recip_interp_bits, frac_bits=cfg.recip_frac_bits)
    assert 0.5 < r_min <= 1.0


@pytest.mark.parametrize("name", CONFIG_NAMES)
def test_exp2_unit_within_alpha_beta(name):
    """Every weight of the golden exp2 unit is 2**t (1 + alpha) + beta, |alpha| <= a_rel,
    |beta| <= 1/2 LSB, over every fraction and shifts through underflow."""
    cfg = CONFIGS[name]
    F, P = cfg.logit_frac_bits, cfg.exp_frac_bits
    _, a_rel, _ = exp2_read_error(cfg)
    t = np.arange(-(P + 4) << F, 1 << F, dtype=np.int64)
    w = golden.exp2(cfg, t).astype(np.float64)
    exact = np.exp2(t / (1 << F) + P)
    assert np.all(np.abs(w - exact) <= a_rel * exact * (1 + 1e-9) + 0.5)


@pytest.mark.parametrize("name", CONFIG_NAMES)
def test_reciprocal_unit_within_e_r(name):
    cfg = CONFIGS[name]
    e_r, _ = recip_read_error(cfg)
    rng = np.random.default_rng(7)
    lo, hi = 1 << cfg.exp_frac_bits, (1 << cfg.acc_l_bits) - 1
    edges = [lo, lo + 1, hi, hi - 1] + [(1 << e) + o for e in range(cfg.exp_frac_bits,
                                                                  cfg.acc_l_bits) for o in (-1, 0, 1)]
    l = np.unique(np.clip(np.concatenate([rng.integers(lo, hi, 20000), edges]), lo, hi))
    r, e = golden.reciprocal(cfg, l)
    rel = r.astype(np.float64) * l / np.ldexp(1.0, e + cfg.recip_frac_bits) - 1
    assert np.abs(rel).max() <= e_r * (1 + 1e-9)


def test_wide_reciprocal_argument_falls_back_to_the_stated_bound():
    cfg = PRESETS["default"].replace(recip_index_bits=12, recip_interp_bits=12, recip_frac_bits=20)
    e_r, r_min = recip_read_error(cfg)
    assert e_r == recip_error_bound(index_bits=12, interp_bits=12, frac_bits=20)
    l = np.random.default_rng(5).integers(1 << cfg.exp_frac_bits, 1 << cfg.acc_l_bits, 50000)
    r, e = golden.reciprocal(cfg, l)
    rel = r.astype(np.float64) * l / np.ldexp(1.0, e + cfg.recip_frac_bits) - 1
    assert np.abs(rel).max() <= e_r and r.min() / 2.0 ** 20 >= r_min >= 0.5


# -- the bound on random and extreme jobs ----------------------------------------------------------

KINDS = ("uniform", "synthetic_float", "ascending", "descending", "extreme_range", "minmax",
         "single_keys", "equal", "big_gap", "tiny_scale", "out_scale", "long")


def _int_job(cfg, rng, kind):
    """An integer-input job (scales given), with lengths, values and score scales chosen by kind;
    base-2 logits up to about +-124 (inside the logit range of +-128)."""
    d, lo, hi = cfg.head_dim, cfg.input_min, cfg.input_max
    heads = int(rng.integers(1, min(8, cfg.max_heads) + 1))
    n_cap = min(cfg.max_context, 6 * cfg.tile * cfg.cores // max(1, heads // 2))
    lengths = rng.integers(1, n_cap + 1, heads)
    if kind == "single_keys":
        lengths[:] = 1
    if kind == "long":
        heads, lengths = 2, np.array([min(cfg.max_context, 40 * cfg.tile * cfg.cores), 3])
    n_max = int(lengths.max())
    q = rng.integers(lo, hi + 1, (heads, d))
    k = rng.integers(lo, hi + 1, (heads, n_max, d))
    v = rng.integers(lo, hi + 1, (heads, n_max, d))
    out_scale = None
    target = rng.uniform(1, 40)                                  # largest |base-2 logit| wanted
    if kind == "extreme_range":
        target = rng.uniform(100, 124)
    if kind == "minmax":                                         # every element at the range ends
        q = np.where(rng.random((heads, d)) < 0.5, lo, hi)
        k = np.where(rng.random((heads, n_max, d)) < 0.5, lo, hi)
        v = np.where(rng.random((heads, n_max, d)) < 0.5, lo, hi)
        target = rng.uniform(20, 120)
    if kind in ("ascending", "descending"):                     # the running max rises every tile
        target = rng.uniform(40, 120)
    if kind == "equal":
        k[:] = k[:, :1]
    if kind == "big_gap":
        target = rng.uniform(60, 120)
    qk = np.einsum("hd,hnd->hn", q.astype(np.float64), k.astype(np.float64))
    for h in range(heads):
        n = lengths[h]
        if kind in ("ascending", "descending"):
            order = np.argsort(qk[h, :n])[::1 if kind == "ascending" else -1]
            k[h, :n], qk[h, :n] = k[h, order], qk[h, order]
        if kind == "big_gap":                                     # one key far above the rest
            j = int(rng.integers(n))
            k[h, j] = np.where(q[h] >= 0, hi, lo)
            qk[h, :n] = k[h, :n] @ q[h]
    qk_abs = np.array([max(1.0, np.abs(qk[h, :lengths[h]]).max()) for h in range(heads)])
    k_scale = np.full(heads, 0.01)
    q_scale = target / (qk_abs * k_scale * LOG2_E / math.sqrt(d))
    if kind == "tiny_scale":                                     # mantissa cannot be normalized
        q_scale = q_scale * 2.0 ** -float(rng.integers(cfg.score_shift_max - 30,
                                                       cfg.score_shift_max + 8))
    v_scale = rng.uniform(0.001, 10, heads)
    if kind == "out_scale":                                      # user output scales: some saturate
        out_scale = v_scale * hi / cfg.output_max * rng.choice([0.2, 1.0, 7.0, 300.0], heads)
    job = Job.from_arrays(cfg, q=q[None], k=k[None], v=v[None], lengths=lengths[None],
                          q_scale=q_scale[None], k_scale=k_scale[None], v_scale=v_scale[None],
                          out_scale=None if out_scale is None else out_scale[None])
    return job


def _float_job(cfg, rng):
    """A float job of a synthetic distribution, quantized per head or per tensor."""
    kind = str(rng.choice(["gaussian", "student_t", "dominant", "equal", "negative_max",
                           "wide_range"]))
    heads = int(rng.integers(2, min(10, cfg.max_heads + 1)))
    arrays, _ = synthetic_arrays(kind, cfg.head_dim, heads=heads,
                                 n_max=int(min(cfg.max_context, 700)), seed=int(rng.integers(1 << 30)))
    cfg = cfg.replace(quant=str(rng.choice(["per_head", "per_tensor"])))
    return cfg, Job.from_arrays(cfg, **arrays)


def _job(cfg, rng, kind):
    return _float_job(cfg, rng) if kind == "synthetic_float" else (cfg, _int_job(cfg, rng, kind))


def _check_bound(cfg, job, context):
    out = golden.run(cfg, job).out * job.head_scales("out")[:, None]
    floor = attention(*job.dequantized(), job.lengths)
    bounds = datapath_error_bounds(cfg, job)
    err = np.abs(out - floor).max(axis=1)
    infinite = np.flatnonzero(~np.isfinite(bounds))
    assert infinite.size == 0, f"{context}: no bound for heads {infinite.tolist()}"
    bad = np.flatnonzero(err > bounds)
    assert bad.size == 0, (f"{context}: heads {bad.tolist()} exceed the bound: errors "
                           f"{err[bad].tolist()} > bounds {bounds[bad].tolist()}")
    return err, bounds


@pytest.mark.parametrize("name", CONFIG_NAMES)
@pytest.mark.parametrize("kind", KINDS)
def test_bound_holds(name, kind):
    cfg = CONFIGS[name]
    for seed in range(3):
        rng = np.random.default_rng([seed, KINDS.index(kind), CONFIG_NAMES.index(name)])
        _check_bound(*_job(cfg, rng, kind), f"{name} {kind} seed {seed}")


@settings(max_examples=40)
@given(seed=st.integers(0, 2**32 - 1), name=st.sampled_from(CONFIG_NAMES),
       kind=st.sampled_from([k for k in KINDS if k != "long"]))
def test_bound_holds_hypothesis(seed, name, kind):
    cfg = CONFIGS[name]
    _check_bound(*_job(cfg, np.random.default_rng(seed), kind), f"{name} {kind} seed {seed}")


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_bound_holds_on_real_data_and_is_useful(name):
    arrays, _ = real_arrays()
    base = PRESETS[name]
    cfg = base.replace(head_dim=32, lanes=math.gcd(base.lanes, 32), max_heads=96)
    job = Job.from_arrays(cfg, **arrays)
    err, bounds = _check_bound(cfg, job, f"{name} real")
    floor = attention(*job.dequantized(), job.lengths)
    scale = np.maximum(np.linalg.norm(floor, axis=1), REL_L2_FLOOR * math.sqrt(32)) / math.sqrt(32)
    relative = bounds / scale                                   # bound per element vs output rms
    assert np.median(relative) <= 0.02, f"{name}: median bound {np.median(relative):.3e} of rms"
    assert np.max(err / bounds) >= 0.05, f"{name}: bound at least 20x loose everywhere"


def test_bound_is_infinite_when_logits_may_saturate():
    cfg = PRESETS["default"]
    d = cfg.head_dim
    q = np.full((1, 1, d), 100)
    k = np.full((1, 1, 4, d), 100)
    k[0, 0, 1] = -100
    v = np.ones((1, 1, 4, d), dtype=np.int64)
    c = 130.0 / (100 * 100 * d)                                  # |logit| 130 > 128: saturates
    scale = math.sqrt(c * math.sqrt(d) / LOG2_E)
    job = Job.from_arrays(cfg, q=q, k=k, v=v, lengths=np.array([[4]]), q_scale=scale,
                          k_scale=scale, v_scale=1.0)
    assert datapath_error_bound(cfg, job, 0) == math.inf
    assert bound_terms(cfg, job, 0)["saturates"]


@pytest.mark.parametrize("name", CONFIG_NAMES)
def test_bound_terms_against_the_formats(name):
    cfg = CONFIGS[name]
    rng = np.random.default_rng(3)
    job = _int_job(cfg, rng, "ascending")
    spans = head_spans(partition(job.lengths, cfg.cores))
    for h in range(job.flat_heads):
        t = bound_terms(cfg, job, h)
        if job.score_mant[h] >= 1 << (cfg.scale_bits - 1):
            assert t["delta"] <= 2.0 ** -cfg.scale_bits * (1 + 1e-9)
        tiles = sum(-(-seg.length // cfg.tile) for seg in spans[h])
        assert t["events"] <= tiles + len(spans[h]) - 1               # the cruder count of docs/numerics.md
        assert t["events"] <= 2 * len(spans[h]) + len(spans[h]) - 1  # geometric sum per segment
        assert t["L_star"] >= 1 and t["bound"] >= job.head_scales("out")[h] / 2
        assert t["bound"] == datapath_error_bound(cfg, job, h)
