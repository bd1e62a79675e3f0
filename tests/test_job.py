"""Decode jobs: validation, quantization, descriptor scales and result files (``leanattn.sim.job``)."""

import json
import re

import numpy as np
import pytest

from leanattn.hdl.config import AttentionConfig
from leanattn.sim import golden
from leanattn.sim.job import Job, JobError, load_job, save_result
from leanattn.sim.quant import decode_scale, score_scale_value
from leanattn.sim.reference import attention

CFG = AttentionConfig(head_dim=8, lanes=2, cores=2, tile=4, max_context=64, max_heads=8)
CFG_TENSOR = CFG.replace(quant="per_tensor")


def float_arrays(seed, batch=2, heads=3, n_max=16, d=8, lengths=None, dtype=np.float32):
    """Random float job arrays; every head has its own magnitude, so per-head scales differ."""
    rng = np.random.default_rng(seed)
    mag = 10.0 ** rng.uniform(-1, 1, size=(batch, heads, 1))
    q = rng.standard_normal((batch, heads, d)) * mag
    k = rng.standard_normal((batch, heads, n_max, d)) * mag[..., None]
    v = rng.standard_normal((batch, heads, n_max, d)) * mag[..., None] * 3
    if lengths is None:
        lengths = rng.integers(1, n_max + 1, size=(batch, heads))
    return {"q": q.astype(dtype), "k": k.astype(dtype), "v": v.astype(dtype),
            "lengths": np.asarray(lengths, dtype=np.int64)}


def int_arrays(seed, batch=2, heads=3, n_max=16, d=8, bits=8, dtype=np.int8):
    rng = np.random.default_rng(seed)
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    return {"q": rng.integers(lo, hi + 1, size=(batch, heads, d)).astype(dtype),
            "k": rng.integers(lo, hi + 1, size=(batch, heads, n_max, d)).astype(dtype),
            "v": rng.integers(lo, hi + 1, size=(batch, heads, n_max, d)).astype(dtype),
            "lengths": rng.integers(1, n_max + 1, size=(batch, heads))}


def valid_abs_max(x, lengths=None):
    """max |x| over the valid positions of every (b, h), computed the plain way."""
    batch, heads = x.shape[:2]
    out = np.zeros((batch, heads))
    for b in range(batch):
        for h in range(heads):
            rows = x[b, h] if lengths is None else x[b, h, :lengths[b, h]]
            out[b, h] = np.abs(rows.astype(np.float64)).max()
    return out


def expected_scale(abs_max, bits=8):
    top = 2 ** (bits - 1) - 1
    return np.where(abs_max > 0, abs_max / top, 1.0)


def expected_ints(x, scale, lengths=None):
    """``rint(x / scale)`` on valid positions (scale per (b, h) or scalar), 0 on padding."""
    batch, heads = x.shape[:2]
    scale = np.broadcast_to(scale, (batch, heads))
    out = np.zeros(x.shape, dtype=np.int64)
    for b in range(batch):
        for h in range(heads):
            n = x.shape[2] if lengths is None else lengths[b, h]
            out[b, h, :n] = np.rint(x[b, h, :n].astype(np.float64) / scale[b, h])
    return out


def flat(x):
    return x.reshape(x.shape[0] * x.shape[1], *x.shape[2:])


# -- float inputs ----------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_float_per_head_scales_and_integers(dtype):
    a = float_arrays(1, dtype=dtype)
    job = Job.from_arrays(CFG, **a)
    n = a["lengths"]
    for name, lengths in (("q", None), ("k", n), ("v", n)):
        scale = expected_scale(valid_abs_max(a[name], lengths))
        got = getattr(job, f"{name}_scale")
        assert got.shape == (2, 3) and got.dtype == np.float64
        np.testing.assert_array_equal(got, scale)
        ints = getattr(job, name)
        assert ints.shape == flat(a[name]).shape
        assert ints.dtype.kind == "i"
        np.testing.assert_array_equal(ints, flat(expected_ints(a[name], scale, lengths)))
        # Each head's largest valid value reaches the top code exactly.
        assert np.abs(ints).reshape(6, -1).max(axis=1).tolist() == [127] * 6
    assert job.batch == 2 and job.heads == 3 and job.flat_heads == 6
    np.testing.assert_array_equal(job.lengths, n.reshape(-1))
    assert job.lengths.dtype == np.int64


def test_float_per_tensor_scales():
    a = float_arrays(2)
    job = Job.from_arrays(CFG_TENSOR, **a)
    n = a["lengths"]
    for name, lengths in (("q", None), ("k", n), ("v", n)):
        scale = expected_scale(valid_abs_max(a[name], lengths).max())
        got = getattr(job, f"{name}_scale")
        assert got.shape == () and got.dtype == np.float64
        assert got == scale
        np.testing.assert_array_equal(getattr(job, name), flat(expected_ints(a[name], scale, lengths)))
        np.testing.assert_array_equal(job.head_scales(name), np.full(6, scale))


@pytest.mark.parametrize("cfg", [CFG, CFG_TENSOR], ids=["per_head", "per_tensor"])
@pytest.mark.parametrize("padding", [1e30, -1e30, np.inf, np.nan])
def test_padding_does_not_count(cfg, padding):
    """Huge, infinite or NaN values beyond a head's length change neither scales nor integers."""
    a = float_arrays(3, dtype=np.float64)
    lengths = a["lengths"].copy()
    lengths[0, 1] = 5
    lengths[1, 2] = 16                         # one head without padding
    a["lengths"] = lengths
    clean = {**a, "k": a["k"].copy(), "v": a["v"].copy()}
    mask = np.arange(16)[None, None, :] >= lengths[:, :, None]
    clean["k"][mask] = 0.0
    clean["v"][mask] = 0.0
    dirty = {**a, "k": a["k"].copy(), "v": a["v"].copy()}
    dirty["k"][mask] = padding
    dirty["v"][mask] = padding
    ref, job = Job.from_arrays(cfg, **clean), Job.from_arrays(cfg, **dirty)
    for name in ("q", "k", "v", "out"):
        np.testing.assert_array_equal(getattr(job, f"{name}_scale"), getattr(ref, f"{name}_scale"))
    for name in ("q", "k", "v", "score_mant", "score_shift", "out_mant", "out_shift"):
        np.testing.assert_array_equal(getattr(job, name), getattr(ref, name))
    assert not job.k[flat(mask)].any() and not job.v[flat(mask)].any()


def test_zero_tensors_get_scale_one():
    a = float_arrays(4)
    a["q"][1, 2] = 0.0                         # one head of q is all zero
    a["v"][:] = 0.0
    job = Job.from_arrays(CFG, **a)
    assert job.q_scale[1, 2] == 1.0 and job.q_scale[0, 0] != 1.0
    np.testing.assert_array_equal(job.v_scale, np.ones((2, 3)))
    assert not job.v.any() and not job.q[5].any()
    out = golden.run(CFG, job).out
    assert not out.any()


def test_float_and_integer_tensors_mix():
    a = float_arrays(5)
    a["k"] = np.clip(np.rint(a["k"]), -127, 127).astype(np.int16)
    job = Job.from_arrays(CFG, **a, k_scale=0.5)
    assert job.k_scale == 0.5
    assert job.q_scale.shape == (2, 3) and job.v_scale.shape == (2, 3)
    np.testing.assert_array_equal(job.q_scale, expected_scale(valid_abs_max(a["q"])))
    want = score_scale_value(job.q_scale, 0.5, CFG.head_dim).reshape(-1)
    assert np.all(np.abs(_decoded_score(job) - want) <= want * 2.0 ** -CFG.scale_bits)


def _decoded_score(job):
    """The real score scale each head's descriptor realizes: ``mant * 2**-(shift + F)``."""
    return decode_scale(job.score_mant, job.score_shift + CFG.logit_frac_bits)


# -- integer inputs --------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.int8, np.int16, np.int32, np.int64, np.uint8])
def test_integer_inputs_with_scalar_scales(dtype):
    a = int_arrays(6, dtype=np.int64)
    if dtype == np.uint8:
        for name in ("q", "k", "v"):
            a[name] = np.abs(a[name]).clip(0, 127)
    a = {name: x.astype(dtype) if name != "lengths" else x for name, x in a.items()}
    job = Job.from_arrays(CFG, **a, q_scale=0.5, k_scale=np.float32(0.25), v_scale=np.array(3))
    assert (job.q_scale, job.k_scale, job.v_scale) == (0.5, 0.25, 3.0)
    for scale in (job.q_scale, job.k_scale, job.v_scale):
        assert scale.shape == () and scale.dtype == np.float64
    n = a["lengths"]
    np.testing.assert_array_equal(job.q, flat(a["q"]))
    valid = flat(np.arange(16)[None, None, :] < n[:, :, None])
    np.testing.assert_array_equal(job.k[valid], flat(a["k"])[valid])
    np.testing.assert_array_equal(job.v[valid], flat(a["v"])[valid])
    want = score_scale_value(0.5, 0.25, CFG.head_dim)
    assert np.all(np.abs(_decoded_score(job) - want) <= want * 2.0 ** -CFG.scale_bits)


def test_integer_inputs_with_per_head_scales():
    a = int_arrays(7)
    rng = np.random.default_rng(7)
    scales = {f"{x}_scale": rng.uniform(0.01, 2.0, size=(2, 3)) for x in "qkv"}
    for cfg in (CFG, CFG_TENSOR):              # integer inputs ignore the quant mode
        job = Job.from_arrays(cfg, **a, **scales)
        for x in "qkv":
            np.testing.assert_array_equal(getattr(job, f"{x}_scale"), scales[f"{x}_scale"])
            np.testing.assert_array_equal(job.head_scales(x), scales[f"{x}_scale"].reshape(-1))
        want = score_scale_value(scales["q_scale"], scales["k_scale"], 8).reshape(-1)
        assert np.all(np.abs(_decoded_score(job) - want) <= want * 2.0 ** -CFG.scale_bits)


def test_integer_inputs_full_range_and_padding():
    """-2**(B-1) is a legal input integer; out-of-range padding is ignored and zeroed."""
    cfg = CFG.replace(input_bits=16)
    a = int_arrays(8, bits=16, dtype=np.int16)
    a["lengths"][:] = 10
    a["v"][0, 0, 0, :] = -32768
    a["q"][1, 1, :] = -32768
    wide = {**a, "k": a["k"].astype(np.int64), "v": a["v"].astype(np.int64)}
    wide["k"][:, :, 10:] = 1 << 40
    wide["v"][:, :, 10:] = -(1 << 40)
    job = Job.from_arrays(cfg, **wide, q_scale=1.0, k_scale=1.0, v_scale=1.0)
    assert not job.k[:, 10:].any() and not job.v[:, 10:].any()
    assert job.v[0, 0].min() == -32768
    # Default output scale of head 0: its largest |v| is 32768, not a wrapped int16 abs.
    assert job.out_scale[0, 0] == pytest.approx(32768 / cfg.output_max, rel=2.0 ** -cfg.scale_bits)
    golden.run(cfg, job)


# -- flattened heads -------------------------------------------------------------------------------


def _one_head(a, b, h):
    return {"q": a["q"][b:b + 1, h:h + 1], "k": a["k"][b:b + 1, h:h + 1],
            "v": a["v"][b:b + 1, h:h + 1], "lengths": a["lengths"][b:b + 1, h:h + 1]}


@pytest.mark.parametrize("kind", ["float", "int"])
def test_heads_flatten_b_major(kind):
    """Head ``b*H + h`` of a B=2, H=3 job is exactly that head run alone (one core: same tiles)."""
    cfg = CFG.replace(cores=1)
    a = float_arrays(9, lengths=[[16, 3, 9], [1, 12, 7]])
    extra = {}
    if kind == "int":
        a = {**int_arrays(9), "lengths": a["lengths"]}
        extra = {"q_scale": np.array([[0.1, 0.2, 0.3], [0.4, 0.5, 0.6]]), "k_scale": 0.05,
                 "v_scale": np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])}
    job = Job.from_arrays(cfg, **a, **extra)
    out = golden.run(cfg, job).out
    assert job.lengths.tolist() == [16, 3, 9, 1, 12, 7]
    for b in range(2):
        for h in range(3):
            scales = {name: (s[b:b + 1, h:h + 1] if np.ndim(s) else s) for name, s in extra.items()}
            alone = Job.from_arrays(cfg, **_one_head(a, b, h), **scales)
            i = b * 3 + h
            np.testing.assert_array_equal(job.q[i], alone.q[0])
            np.testing.assert_array_equal(job.k[i], alone.k[0])
            assert job.score_mant[i] == alone.score_mant[0]
            assert job.out_mant[i] == alone.out_mant[0] and job.out_shift[i] == alone.out_shift[0]
            np.testing.assert_array_equal(out[i], golden.run(cfg, alone).out[0])
    # The heads really are different, so a wrong order could not pass.
    assert len({out[i].tobytes() for i in range(6)}) == 6


def test_flattened_output_matches_reference_per_head():
    """With several cores (heads cut across them) each flattened head still follows its own data."""
    a = float_arrays(10, lengths=[[16, 3, 9], [1, 12, 7]], dtype=np.float64)
    job = Job.from_arrays(CFG, **a)
    out = golden.run(CFG, job).out * job.head_scales("out")[:, None]
    for b in range(2):
        for h in range(3):
            n = a["lengths"][b, h]
            ref = attention(a["q"][b, h][None], a["k"][b, h][None], a["v"][b, h][None], [n])[0]
            v_max = np.abs(a["v"][b, h, :n]).max()
            assert np.abs(out[b * 3 + h] - ref).max() < 0.05 * v_max


# -- output scale ----------------------------------------------------------------------------------


def test_default_out_scale_uses_the_full_output_range():
    a = float_arrays(11, dtype=np.float64)
    job = Job.from_arrays(CFG, **a)
    v_max = np.abs(job.v).reshape(6, -1).max(axis=1)
    wanted = job.head_scales("v") * v_max / CFG.output_max
    got = job.out_scale.reshape(-1)
    assert np.all(np.abs(got - wanted) <= wanted * 2.0 ** -CFG.scale_bits * 1.0001)
    # The realized scale is exactly what the descriptor encodes.
    np.testing.assert_array_equal(got, job.head_scales("v") / decode_scale(job.out_mant, job.out_shift))
    assert job.out_scale.shape == (2, 3) and job.out_scale.dtype == np.float64


def test_default_out_scale_maps_max_v_to_output_max():
    """A head whose every value equals its largest |v| outputs that value: about output_max."""
    a = float_arrays(12)
    a["v"][:] = 0.0
    a["v"][:, :, :, 3] = 2.5
    a["v"][:, :, :, 5] = -2.5
    job = Job.from_arrays(CFG, **a)
    out = golden.run(CFG, job).out
    assert np.all(np.abs(out[:, 3] - CFG.output_max) <= 2)
    assert np.all(np.abs(out[:, 5] + CFG.output_max) <= 2)
    assert not out[:, [0, 1, 2, 4, 6, 7]].any()


def test_default_out_scale_of_zero_values_is_v_scale():
    a = int_arrays(13)
    a["v"][0, 1] = 0
    job = Job.from_arrays(CFG, **a, q_scale=1.0, k_scale=1.0, v_scale=0.5)
    assert job.out_scale[0, 1] == pytest.approx(0.5, rel=2.0 ** -CFG.scale_bits)


@pytest.mark.parametrize("out_scale", [0.001, np.array([[0.001, 0.01, 0.1], [1e-4, 2e-3, 3e-2]])])
def test_given_out_scale(out_scale):
    a = float_arrays(14)
    job = Job.from_arrays(CFG, **a, out_scale=out_scale)
    wanted = np.broadcast_to(out_scale, (2, 3))
    assert job.out_scale.shape == (2, 3)
    assert np.all(np.abs(job.out_scale - wanted) <= wanted * 2.0 ** -CFG.scale_bits * 1.0001)
    np.testing.assert_array_equal(job.out_scale.reshape(-1),
                                  job.head_scales("v") / decode_scale(job.out_mant, job.out_shift))
    out = golden.run(CFG, job).out * job.head_scales("out")[:, None]
    ref = attention(*job.dequantized(), job.lengths)
    fits = np.abs(ref).max(axis=1) < CFG.output_max * job.head_scales("out") * 0.9
    assert fits.any()
    assert np.all(np.abs(out - ref)[fits] <= 3 * job.head_scales("out")[fits, None])


def test_dequantized():
    a = int_arrays(15)
    job = Job.from_arrays(CFG, **a, q_scale=0.5, k_scale=np.full((2, 3), 0.25), v_scale=2.0)
    q, k, v = job.dequantized()
    np.testing.assert_array_equal(q, flat(a["q"]) * 0.5)
    np.testing.assert_array_equal(k, job.k * 0.25)
    np.testing.assert_array_equal(v, job.v * 2.0)
    assert q.dtype == k.dtype == v.dtype == np.float64


# -- every JobError --------------------------------------------------------------------------------


def good():
    return float_arrays(20)


def _raises(match, cfg=CFG, **arrays):
    with pytest.raises(JobError, match=match):
        Job.from_arrays(cfg, **arrays)


def test_job_error_is_a_value_error():
    assert issubclass(JobError, ValueError)


@pytest.mark.parametrize("name", ["q", "k", "v", "lengths"])
def test_missing_array(name):
    _raises(f"^the job has no array '{name}'$", **{**good(), name: None})


@pytest.mark.parametrize(("name", "value", "dtype"), [
    ("q", np.zeros((2, 3, 8), dtype=bool), "bool"),
    ("k", np.zeros((2, 3, 16, 8), dtype=np.complex64), "complex64"),
    ("v", np.full((2, 3, 16, 8), "x"), "<U1"),
    ("lengths", np.ones((2, 3), dtype=bool), "bool"),
])
def test_bad_dtype(name, value, dtype):
    _raises(f"^'{name}' must hold integers or float16/32/64, not {re.escape(dtype)}$",
            **{**good(), name: value})


def test_object_and_long_double_arrays():
    _raises(r"^'q' must hold integers or float16/32/64, not object$",
            **{**good(), "q": np.zeros((2, 3, 8), dtype=object)})
    long_double = np.dtype(np.longdouble)
    if long_double.itemsize > 8:               # x86-64: float128, not one of the accepted widths
        _raises(rf"^'k' must hold integers or float16/32/64, not {long_double.name}$",
                **{**good(), "k": np.zeros((2, 3, 16, 8), dtype=long_double)})


@pytest.mark.parametrize(("name", "shape", "text"), [
    ("q", (2, 3, 1, 8), "(B, H, d)"),
    ("k", (2, 3, 16), "(B, H, Nmax, d)"),
    ("v", (2, 3, 16, 8, 1), "(B, H, Nmax, d)"),
    ("lengths", (6,), "(B, H)"),
])
def test_wrong_ndim(name, shape, text):
    arrays = {**good(), name: np.ones(shape, dtype=np.int64)}
    _raises(f"^'{name}' must have shape {re.escape(text)}, not {re.escape(str(shape))}$", **arrays)


@pytest.mark.parametrize(("q", "k"), [((0, 3, 8), (0, 3, 16, 8)), ((2, 0, 8), (2, 0, 16, 8)),
                                      ((2, 3, 8), (2, 3, 0, 8))])
def test_empty_job(q, k):
    arrays = {"q": np.zeros(q), "k": np.zeros(k), "v": np.zeros(k),
              "lengths": np.ones(q[:2], dtype=np.int64)}
    _raises(r"^the job must have at least one head and one key, not q ", **arrays)


def test_head_dim_mismatch():
    a = float_arrays(21, d=4)
    _raises(r"^'q' has head_dim 4 but the configuration has head_dim 8$", **a)


@pytest.mark.parametrize("shape", [(1, 3, 16, 8), (2, 2, 16, 8), (2, 3, 16, 4)])
def test_k_shape_mismatch(shape):
    _raises(rf"^'k' must have shape \(B, H, Nmax, d\) = \(2, 3, Nmax, 8\), not {re.escape(str(shape))}$",
            **{**good(), "k": np.zeros(shape)})


@pytest.mark.parametrize("shape", [(2, 3, 15, 8), (2, 3, 16, 4), (3, 2, 16, 8)])
def test_v_shape_mismatch(shape):
    _raises(rf"^'v' must have the shape of 'k' \(2, 3, 16, 8\), not {re.escape(str(shape))}$",
            **{**good(), "v": np.zeros(shape)})


@pytest.mark.parametrize("shape", [(3, 2), (2, 1), (1, 3)])
def test_lengths_shape_mismatch(shape):
    _raises(rf"^'lengths' must have shape \(B, H\) = \(2, 3\), not {re.escape(str(shape))}$",
            **{**good(), "lengths": np.ones(shape, dtype=np.int64)})


def test_lengths_must_be_integers():
    _raises(r"^'lengths' must hold integers, not float64$",
            **{**good(), "lengths": np.full((2, 3), 4.0)})


def test_too_many_heads():
    a = float_arrays(22, batch=3, heads=3)
    _raises(r"^the job has 9 heads \(B\*H\) but max_heads is 8$", **a)
    Job.from_arrays(CFG.replace(max_heads=9), **a)


@pytest.mark.parametrize("n", [0, -1, 17])
def test_length_outside_nmax(n):
    a = good()
    a["lengths"][1, 2] = n
    _raises(rf"^lengths\[1, 2\] must be in 1\.\.Nmax \(16\), not {n}$", **a)


def test_length_above_max_context():
    a = float_arrays(23, n_max=80)
    a["lengths"][:] = 64
    Job.from_arrays(CFG, **a)                  # exactly max_context is fine
    a["lengths"][0, 1] = 65
    _raises(r"^lengths\[0, 1\] must be at most max_context \(64\), not 65$", **a)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize(("name", "index", "head"), [("q", (1, 0, 3), 3), ("k", (0, 2, 0, 0), 2),
                                                     ("v", (1, 1, 0, 7), 4)])
def test_nan_or_inf(bad, name, index, head):
    a = good()
    a[name][index] = bad
    _raises(rf"^'{name}' holds NaN or infinity in head {head} \(flattened b\*H \+ h\)$", **a)


@pytest.mark.parametrize("name", ["q", "k", "v"])
def test_float_with_scale(name):
    _raises(rf"^'{name}' holds floats, so the job must not give '{name}_scale' \(the tool chooses it\)$",
            **good(), **{f"{name}_scale": 1.0})


@pytest.mark.parametrize("name", ["q", "k", "v"])
def test_integers_without_scale(name):
    scales = {f"{x}_scale": 1.0 for x in "qkv" if x != name}
    _raises(rf"^'{name}' holds integers, so the job must give '{name}_scale' \(a number or \(B, H\)\)$",
            **int_arrays(24), **scales)


@pytest.mark.parametrize("bad", [np.ones(3), np.ones((3, 2)), np.ones((2, 3, 1)), "1.0",
                                 np.array([[True] * 3] * 2)])
@pytest.mark.parametrize("name", ["q_scale", "k_scale", "v_scale", "out_scale"])
def test_bad_scale_shape_or_type(name, bad):
    scales = {f"{x}_scale": 1.0 for x in "qkv"}
    _raises(rf"^'{name}' must be a number or an array of shape \(B, H\) = \(2, 3\)$",
            **int_arrays(25), **{**scales, name: bad})


@pytest.mark.parametrize(("bad", "shown"), [(0.0, "0.0"), (-2.0, "-2.0"), (np.nan, "nan"),
                                            (np.inf, "inf"),
                                            (np.array([[1.0, 1.0, -3.0], [1.0, 0.0, 1.0]]), "-3.0")])
@pytest.mark.parametrize("name", ["q_scale", "k_scale", "v_scale", "out_scale"])
def test_scale_not_finite_positive(name, bad, shown):
    scales = {f"{x}_scale": 1.0 for x in "qkv"}
    _raises(rf"^'{name}' must be finite and positive, not {re.escape(shown)}$",
            **int_arrays(26), **{**scales, name: bad})


@pytest.mark.parametrize(("bits", "value", "lo", "hi"), [(8, 128, -128, 127), (8, -129, -128, 127),
                                                         (4, 8, -8, 7), (4, -9, -8, 7)])
@pytest.mark.parametrize("name", ["q", "k", "v"])
def test_integers_outside_input_bits(name, bits, value, lo, hi):
    cfg = CFG.replace(input_bits=bits)
    a = int_arrays(27, bits=bits, dtype=np.int16)
    a["lengths"][:] = 16
    a[name][1, 0, ..., 0] = value
    a[name][0, 1, ..., 0] = lo                # the full range is legal
    a[name][0, 2, ..., 0] = hi
    got_lo, got_hi = min(value, int(a[name][1, 0].min())), max(value, int(a[name][1, 0].max()))
    _raises(rf"^'{name}' must fit input_bits \({bits}\): values in {lo}\.\.{hi}, but head 3 holds "
            rf"{got_lo}\.\.{got_hi}$", cfg=cfg, **a, q_scale=1.0, k_scale=1.0, v_scale=1.0)


def test_unsigned_integers_outside_input_bits():
    a = int_arrays(28)
    a = {**a, "v": np.abs(a["v"].astype(np.int64)).astype(np.uint64)}
    a["v"][0, 0, 0, 0] = 1 << 63
    _raises(r"^'v' must fit input_bits \(8\): values in -128\.\.127, but head 0 holds "
            r"\d+\.\.9223372036854775808$",
            **a, q_scale=1.0, k_scale=1.0, v_scale=1.0)


def test_out_scale_too_large():
    a = int_arrays(29)
    _raises(r"^out_scale of head 0 \(1e\+06\) is too large for v_scale 0\.001: every output would "
            r"round to 0$", **a, q_scale=1.0, k_scale=1.0, v_scale=0.001, out_scale=1e6)


def test_score_scale_overflow():
    _raises(r"^the score scale of head 0 \(q_scale \* k_scale \* log2\(e\) / sqrt\(d\)\) overflows "
            r"float64$", **int_arrays(30), q_scale=1e200, k_scale=1e200, v_scale=1.0)


def test_out_scale_ratio_overflow():
    _raises(r"^v_scale / out_scale of head 0 \(1e\+300 / 1e-300\) overflows float64$",
            **int_arrays(31), q_scale=1.0, k_scale=1.0, v_scale=1e300, out_scale=1e-300)


def test_realized_out_scale_overflow():
    """A request near the float64 maximum whose encoding rounds down (1.4 LSB at out_shift_max -> 1
    LSB): the realized scale, 1.4 times the request, overflows."""
    assert CFG.out_shift_max == 25
    v_scale = 6e300
    _raises(r"^the output scale of head 0 \(v_scale 6e\+300 over the largest output factor\) "
            r"overflows float64$", **int_arrays(35), q_scale=1.0, k_scale=1.0, v_scale=v_scale,
            out_scale=v_scale * (2.0 ** 25 / 1.4))


def test_huge_v_scale_default_out_scale():
    job = Job.from_arrays(CFG, **int_arrays(36), q_scale=1.0, k_scale=1.0, v_scale=1e300)
    assert np.all(np.isfinite(job.out_scale)) and np.all(job.out_scale > 1e295)


# -- files -----------------------------------------------------------------------------------------


def _assert_same_job(a, b):
    for name in ("q", "k", "v", "lengths", "q_scale", "k_scale", "v_scale", "out_scale",
                 "score_mant", "score_shift", "out_mant", "out_shift"):
        x, y = getattr(a, name), getattr(b, name)
        assert x.shape == y.shape and x.dtype == y.dtype, name
        np.testing.assert_array_equal(x, y, err_msg=name)
    assert (a.batch, a.heads) == (b.batch, b.heads)


def test_load_job_float(tmp_path):
    a = float_arrays(32)
    np.savez(tmp_path / "job.npz", **a)
    _assert_same_job(load_job(tmp_path / "job.npz", CFG), Job.from_arrays(CFG, **a))


def test_load_job_integers_with_scales(tmp_path):
    a = int_arrays(33)
    scales = {"q_scale": 0.5, "k_scale": np.full((2, 3), 0.25), "v_scale": np.float32(2.0),
              "out_scale": 0.01}
    np.savez(tmp_path / "job.npz", **a, **scales, unrelated=np.zeros(3))
    _assert_same_job(load_job(str(tmp_path / "job.npz"), CFG), Job.from_arrays(CFG, **a, **scales))


def test_load_job_validates(tmp_path):
    a = good()
    del a["v"]
    np.savez(tmp_path / "job.npz", **a)
    with pytest.raises(JobError, match=r"^the job has no array 'v'$"):
        load_job(tmp_path / "job.npz", CFG)


def test_load_job_missing_file(tmp_path):
    with pytest.raises(JobError, match=r"^no job file at .*nothing\.npz$"):
        load_job(tmp_path / "nothing.npz", CFG)


def _write_unreadable(tmp_path, kind):
    path = tmp_path / f"{kind}.npz"
    if kind == "npy":
        with open(path, "wb") as file:
            np.save(file, np.zeros(3))
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "text":
        path.write_text("q = [1, 2, 3]\n")
    elif kind == "truncated":
        np.savez(tmp_path / "full.npz", **good())
        path.write_bytes((tmp_path / "full.npz").read_bytes()[:100])
    elif kind == "pickled":
        np.savez(path, **good(), q_scale=np.array([None], dtype=object))
    elif kind == "directory":
        path.mkdir()
    return path


@pytest.mark.parametrize("kind", ["npy", "empty", "text", "truncated", "pickled", "directory"])
def test_load_job_unreadable(tmp_path, kind):
    path = _write_unreadable(tmp_path, kind)
    with pytest.raises(JobError, match=rf"^{re.escape(str(path))} is not a readable \.npz job file "
                                       rf"\(.+\)$") as info:
        load_job(path, CFG)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("cfg", [CFG, CFG_TENSOR], ids=["per_head", "per_tensor"])
def test_save_result_round_trip(tmp_path, cfg):
    a = float_arrays(34)
    job = Job.from_arrays(cfg, **a)
    out_int = golden.run(cfg, job).out
    path = tmp_path / "result.bin"             # written at exactly this path (no .npz appended)
    save_result(path, cfg, job, out_int)
    assert path.exists() and not (tmp_path / "result.bin.npz").exists()
    with np.load(path, allow_pickle=False) as data:
        r = {name: data[name] for name in data.files}
    assert {"out", "out_int", "out_scale", "q_scale", "k_scale", "v_scale", "config"} <= set(r)
    assert r["out"].shape == (2, 3, 8) and r["out"].dtype == np.float64
    assert r["out_int"].shape == (2, 3, 8) and r["out_int"].dtype == np.int64
    assert r["out_scale"].shape == (2, 3) and r["out_scale"].dtype == np.float64
    scale_shape = (2, 3) if cfg.quant == "per_head" else ()
    for name in ("q_scale", "k_scale", "v_scale"):
        assert r[name].shape == scale_shape and r[name].dtype == np.float64
        np.testing.assert_array_equal(r[name], getattr(job, name))
    np.testing.assert_array_equal(r["out_int"], out_int.reshape(2, 3, 8))
    np.testing.assert_array_equal(r["out_scale"], job.out_scale)
    np.testing.assert_array_equal(r["out"], r["out_int"] * r["out_scale"][:, :, None])
    assert r["config"].shape == () and r["config"].dtype.kind == "U"
    assert AttentionConfig.from_json(str(r["config"])) == cfg
    assert json.loads(str(r["config"])) == cfg.to_dict()
    for name in ("score_mant", "score_shift", "out_mant", "out_shift"):
        np.testing.assert_array_equal(r[name], getattr(job, name).reshape(2, 3))
    # The dequantized output is close to float attention on the quantized inputs.
    ref = attention(*job.dequantized(), job.lengths).reshape(2, 3, 8)
    assert np.abs(r["out"] - ref).max() <= 4 * job.out_scale.max()


def test_save_result_extra_arrays(tmp_path):
    job = Job.from_arrays(CFG, **good())
    save_result(tmp_path / "r.npz", CFG, job, np.zeros((6, 8), dtype=np.int64), note=np.arange(3))
    with np.load(tmp_path / "r.npz") as data:
        assert data["note"].tolist() == [0, 1, 2]
        assert not data["out"].any()
