"""Host-side quantization and the encoding of the runtime scales (``leanattn.sim.quant``)."""

import math

import numpy as np
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from leanattn.sim.quant import (
    LOG2_E,
    decode_scale,
    encode_scale,
    quant_scale,
    quantize,
    score_scale_value,
)

# -- quant_scale ---------------------------------------------------------------------------------


@pytest.mark.parametrize("bits", [4, 8, 16])
def test_quant_scale_is_max_over_top(bits):
    top = (1 << (bits - 1)) - 1
    assert quant_scale(3.5, bits) == 3.5 / top
    assert np.array_equal(quant_scale(np.array([1.0, 254.0, 1e-20]), bits),
                          np.array([1.0, 254.0, 1e-20]) / top)


def test_quant_scale_of_zero_is_one():
    assert quant_scale(0.0, 8) == 1.0
    assert np.array_equal(quant_scale(np.array([[0.0, 127.0], [0.0, 0.0]]), 8),
                          [[1.0, 1.0], [1.0, 1.0]])


def test_quant_scale_keeps_shape_and_dtype():
    scale = quant_scale(np.zeros((2, 3), dtype=np.float32), 8)
    assert scale.shape == (2, 3) and scale.dtype == np.float64
    assert quant_scale(1.0, 8).shape == ()


def test_quant_scale_never_zero():
    """A maximum in the lowest subnormals would give a scale of exactly 0 (a division by zero)."""
    tiny = np.nextafter(0.0, 1.0)                    # 5e-324
    assert 0 < tiny and tiny / 127 == 0.0
    assert quant_scale(tiny, 8) == 1.0
    assert np.all(quant_scale(np.array([tiny, 1e-310, 1e-300]), 8) > 0)


# -- quantize ------------------------------------------------------------------------------------


def test_quantize_rounds_half_to_even():
    x = np.array([0.5, 1.5, 2.5, 3.5, -0.5, -1.5, -2.5, -3.5, 0.49, 0.51, -0.51])
    assert quantize(x, 1.0, 8).tolist() == [0, 2, 2, 4, 0, -2, -2, -4, 0, 1, -1]
    # Ties at the scale in use, not at integers of x.
    assert quantize(np.array([0.25, 0.75, 1.25]), 0.5, 8).tolist() == [0, 2, 2]


def test_quantize_divides_by_scale():
    scale = 0.1
    x = np.array([[1.27, -1.27], [0.04, 0.06]])
    assert quantize(x, scale, 8).tolist() == [[13, -13], [0, 1]]


def test_quantize_clips_to_the_symmetric_range():
    assert quantize(np.array([1000.0, -1000.0, 127.4, -127.4, 127.6]), 1.0, 8).tolist() == \
        [127, -127, 127, -127, 127]
    assert quantize(np.array([8.0, -8.0]), 1.0, 4).tolist() == [7, -7]


def test_quantize_of_the_maximum_is_top():
    rng = np.random.default_rng(5)
    for bits in (4, 8, 12, 16):
        x = rng.standard_normal(1000) * 10.0 ** rng.uniform(-20, 20)
        ints = quantize(x, quant_scale(np.abs(x).max(), bits), bits)
        top = (1 << (bits - 1)) - 1
        assert ints.dtype == np.int64
        assert np.abs(ints).max() == top
        assert ints[np.argmax(np.abs(x))] == np.sign(x[np.argmax(np.abs(x))]) * top


def test_quantize_broadcasts_per_head_scales():
    x = np.array([[1.0, 2.0], [1.0, 2.0]])
    assert quantize(x, np.array([[1.0], [0.5]]), 8).tolist() == [[1, 2], [2, 4]]


# -- encode_scale: fixed cases -------------------------------------------------------------------


@pytest.mark.parametrize(("value", "mant_bits", "expected"), [
    (1.0,   16, (1 << 15, 15)),
    (0.75,  16, (0xC000, 16)),
    (3.0,    8, (0xC0, 6)),
    (255.0,  8, (255, 0)),                      # largest value at shift 0, exact
    (0.5,    8, (128, 8)),
])
def test_encode_scale_normal(value, mant_bits, expected):
    mant, shift = encode_scale(value, mant_bits=mant_bits, shift_max=40)
    assert (mant, shift) == expected
    assert 1 << (mant_bits - 1) <= mant < 1 << mant_bits
    assert decode_scale(mant, shift) == value


def test_encode_scale_rounds_mantissa_half_to_even():
    # mant_bits 8: value * 2**8 = 128.5 -> 128, 129.5 -> 130, 128.5000001 -> 129.
    assert encode_scale(128.5 / 256, mant_bits=8, shift_max=40) == (128, 8)
    assert encode_scale(129.5 / 256, mant_bits=8, shift_max=40) == (130, 8)
    assert encode_scale(128.51 / 256, mant_bits=8, shift_max=40) == (129, 8)


@pytest.mark.parametrize("mant_value", [255.5, 255.75, 255.9999])
def test_encode_scale_renormalizes_a_mantissa_rounded_up_to_2_pow_bits(mant_value):
    mant, shift = encode_scale(mant_value / 256, mant_bits=8, shift_max=40)
    assert (mant, shift) == (128, 7)           # 256 * 2**-8 == 128 * 2**-7 == 1.0
    assert decode_scale(mant, shift) == 1.0


def test_encode_scale_below_the_renormalization_tie():
    assert encode_scale(255.49 / 256, mant_bits=8, shift_max=40) == (255, 8)


@pytest.mark.parametrize("value", [256.0, 255.6, 1000.0, 1e30, 2.0 ** 200])
def test_encode_scale_saturates_when_shift_would_be_negative(value):
    assert encode_scale(value, mant_bits=8, shift_max=40) == (255, 0)


def test_encode_scale_saturates_at_every_width():
    for mant_bits in (8, 13, 16, 24):
        top = (1 << mant_bits) - 1
        assert encode_scale(2.0 ** mant_bits, mant_bits=mant_bits, shift_max=50) == (top, 0)
        assert encode_scale(top, mant_bits=mant_bits, shift_max=50) == (top, 0)
        assert encode_scale(top - 1, mant_bits=mant_bits, shift_max=50) == (top - 1, 0)


@pytest.mark.parametrize(("value", "expected"), [
    (2.0 ** -3,       (128, 10)),              # normal, exactly at shift_max
    (2.0 ** -4,       (64, 10)),               # one below: mantissa loses its top bit
    (3 * 2.0 ** -11,  (2, 10)),                # 1.5 LSB -> 2 (half to even)
    (5 * 2.0 ** -12,  (1, 10)),                # 1.25 LSB -> 1
    (2.0 ** -11,      (0, 10)),                # half an LSB -> 0 (half to even)
    (2.0 ** -12,      (0, 10)),
    (1e-300,          (0, 10)),
])
def test_encode_scale_denormal_at_shift_max(value, expected):
    assert encode_scale(value, mant_bits=8, shift_max=10) == expected


def test_encode_scale_denormal_just_below_the_normal_range():
    # value * 2**shift_max = 127.7: the normalized mantissa 255.4 would need shift_max + 1.
    assert encode_scale(127.7 * 2.0 ** -10, mant_bits=8, shift_max=10) == (128, 10)
    assert encode_scale(127.2 * 2.0 ** -10, mant_bits=8, shift_max=10) == (127, 10)


def test_encode_scale_with_shift_max_zero():
    assert encode_scale(0.3, mant_bits=8, shift_max=0) == (0, 0)
    assert encode_scale(100.4, mant_bits=8, shift_max=0) == (100, 0)
    assert encode_scale(200.0, mant_bits=8, shift_max=0) == (200, 0)


def test_encode_scale_of_zero():
    assert encode_scale(0.0, mant_bits=16, shift_max=30) == (0, 0)
    assert encode_scale(-0.0, mant_bits=16, shift_max=30) == (0, 0)


def test_encode_scale_returns_python_ints():
    mant, shift = encode_scale(np.float64(0.3), mant_bits=16, shift_max=30)
    assert type(mant) is int and type(shift) is int


@pytest.mark.parametrize("value", [-1.0, -1e-300, math.inf, -math.inf, math.nan])
def test_encode_scale_rejects(value):
    with pytest.raises(ValueError, match=r"a scale must be finite and non-negative, not "):
        encode_scale(value, mant_bits=16, shift_max=30)


# -- encode_scale: properties --------------------------------------------------------------------


@given(value=st.floats(min_value=1e-30, max_value=1e30),
       mant_bits=st.integers(8, 24), shift_max=st.integers(0, 240))
@example(value=255.5 / 256, mant_bits=8, shift_max=40)
@example(value=2.0 ** 8 - 0.01, mant_bits=8, shift_max=40)
@example(value=1e-30, mant_bits=24, shift_max=240)
@example(value=1e30, mant_bits=24, shift_max=0)
def test_encode_scale_realizes_the_request(value, mant_bits, shift_max):
    mant, shift = encode_scale(value, mant_bits=mant_bits, shift_max=shift_max)
    top = (1 << mant_bits) - 1
    assert 0 <= mant <= top and 0 <= shift <= shift_max
    realized = float(decode_scale(mant, shift))
    lowest_normal = math.ldexp(1 << (mant_bits - 1), -shift_max)
    if value >= 1 << mant_bits:                           # too large for shift 0: saturated
        assert (mant, shift) == (top, 0)
    elif value >= lowest_normal:                          # the normal range
        assert mant >= 1 << (mant_bits - 1)
        assert abs(realized - value) <= value * 2.0 ** -mant_bits
    else:                                                 # below it: rounded at shift_max
        assert shift == shift_max
        assert abs(mant - math.ldexp(value, shift_max)) <= 0.5


@given(mant_bits=st.integers(8, 24), data=st.data())
def test_encode_scale_of_a_representable_value_is_exact(mant_bits, data):
    shift_max = data.draw(st.integers(0, 120))
    mant = data.draw(st.integers(1 << (mant_bits - 1), (1 << mant_bits) - 1))
    shift = data.draw(st.integers(0, shift_max))
    value = float(decode_scale(mant, shift))
    assert encode_scale(value, mant_bits=mant_bits, shift_max=shift_max) == (mant, shift)


@given(value=st.floats(min_value=1e-30, max_value=1e30), mant_bits=st.integers(8, 24))
def test_encode_scale_is_monotonic(value, mant_bits):
    bigger = value * 1.001
    a = decode_scale(*encode_scale(value, mant_bits=mant_bits, shift_max=120))
    b = decode_scale(*encode_scale(bigger, mant_bits=mant_bits, shift_max=120))
    assert a <= b


# -- decode_scale and score_scale_value ----------------------------------------------------------


def test_decode_scale():
    assert decode_scale(3, 2) == 0.75
    assert decode_scale(0, 7) == 0.0
    assert decode_scale(1 << 23, 0) == 2.0 ** 23
    got = decode_scale(np.array([1, 3, 5]), np.array([0, 1, 60]))
    assert got.dtype == np.float64
    assert got.tolist() == [1.0, 1.5, 5 * 2.0 ** -60]


def test_score_scale_value():
    assert LOG2_E == pytest.approx(1.4426950408889634, rel=1e-15)
    got = score_scale_value(np.array([[0.5, 2.0]]), 0.25, 64)
    assert got.shape == (1, 2)
    np.testing.assert_allclose(got, [[0.5 * 0.25 * LOG2_E / 8, 2.0 * 0.25 * LOG2_E / 8]], rtol=1e-15)
    assert score_scale_value(1.0, 1.0, 1) == pytest.approx(1.0 / math.log(2.0), rel=1e-15)
