# amaranth: UnusedElaboratable=no
"""Fixed-point helpers: formats, and round_shift / saturate bit-exact with the golden model."""

import numpy as np
import pytest
from amaranth.hdl import Module, Signal, signed, unsigned
from amaranth.sim import Simulator
from hypothesis import given
from hypothesis import strategies as st

from leanattn.hdl.fixed import QFormat, add_rounded, round_shift, saturate
from leanattn.sim import golden


def evaluate(build, inputs):
    """Evaluate a combinational expression for a list of input tuples under amaranth.sim."""
    m = Module()
    signals, out = build(m)
    results = []

    async def bench(ctx):
        for values in inputs:
            for sig, v in zip(signals, values):
                ctx.set(sig, v)
            results.append(ctx.get(out))

    sim = Simulator(m)
    sim.add_testbench(bench)
    sim.run()
    return results


@pytest.mark.parametrize("shape", [signed(7), unsigned(7), signed(13), unsigned(1), signed(2)])
def test_round_shift_runtime_amount_exhaustive(shape):
    """Every operand and every shift amount 0..15 (beyond the width too) against the golden model."""
    width = shape.width
    lo, hi = (-(1 << (width - 1)), (1 << (width - 1)) - 1) if shape.signed else (0, (1 << width) - 1)
    step = max(1, (hi - lo) // 800)
    cases = [(x, n) for x in range(lo, hi + 1, step) for n in range(16)] + [(lo, 15), (hi, 15)]

    def build(m):
        x, n, out = Signal(shape), Signal(4), Signal(signed(width + 2))
        m.d.comb += out.eq(round_shift(x, n))
        return (x, n), out

    got = evaluate(build, cases)
    want = [int(golden.round_shift(np.int64(x), n)) for x, n in cases]
    assert got == want


@given(st.integers(-(1 << 40), (1 << 40) - 1), st.integers(0, 45))
def test_round_shift_constant_amount(x, n):
    def build(m):
        a, out = Signal(signed(41)), Signal(signed(43))
        m.d.comb += out.eq(round_shift(a, n))
        return (a,), out
    assert evaluate(build, [(x,)]) == [int(golden.round_shift(np.int64(x), n))]


@pytest.mark.parametrize("signed_value", [True, False])
@pytest.mark.parametrize("amount", [1, 2, 5])
def test_add_rounded(signed_value, amount):
    """base + round_shift(y, amount) with the rounding bit as carry in, exhaustively on 9 bits; and
    the split form of a runtime shift: add_rounded(b, (2 * x) >> n, 1) == b + round_shift(x, n)."""
    shape = signed(9) if signed_value else unsigned(9)
    values = range(-256, 256) if signed_value else range(512)

    def build(m):
        base, y, out = Signal(signed(6)), Signal(shape), Signal(signed(12))
        m.d.comb += out.eq(add_rounded(base, y, amount))
        return (base, y), out
    cases = [(b, y) for b in (-32, -1, 0, 31) for y in values]
    assert evaluate(build, cases) == [b + int(golden.round_shift(np.int64(y), amount)) for b, y in cases]

    def split(m):
        base, x, n, out = Signal(signed(6)), Signal(shape), Signal(4), Signal(signed(12))
        m.d.comb += out.eq(add_rounded(base, (x << 1) >> n, 1))
        return (base, x, n), out
    cases = [(b, x, n) for b in (-5, 7) for x in values[::7] for n in range(12)]
    assert evaluate(split, cases) == [b + int(golden.round_shift(np.int64(x), n)) for b, x, n in cases]


@pytest.mark.parametrize("amount", [0, -1, 1.0])
def test_add_rounded_needs_a_positive_constant(amount):
    with pytest.raises(ValueError, match="amount must be an integer of at least 1"):
        add_rounded(0, Signal(8), amount)


def test_saturate():
    def build(m):
        x, out = Signal(signed(10)), Signal(signed(10))
        m.d.comb += out.eq(saturate(x, -100, 77))
        return (x,), out
    xs = list(range(-512, 512))
    assert evaluate(build, [(x,) for x in xs]) == [min(max(x, -100), 77) for x in xs]


@pytest.mark.parametrize("n", [1, 2, 5, 9, 10, 12])
def test_saturate_to_width(n):
    """Bounds of a signed width: the bit test, exhaustively on 10 bits (n >= 10 passes unchanged)."""
    lo, hi = -(1 << (n - 1)), (1 << (n - 1)) - 1

    def build(m):
        x, out = Signal(signed(10)), Signal(signed(12))
        m.d.comb += out.eq(saturate(x, lo, hi))
        return (x,), out
    xs = list(range(-512, 512))
    assert evaluate(build, [(x,) for x in xs]) == [min(max(x, lo), hi) for x in xs]


def test_qformat_arithmetic():
    a = QFormat(True, 8, 0)                  # int8
    w = QFormat(False, 1, 16)                # weight: unsigned 1.16
    assert (a.min, a.max, a.width) == (-128, 127, 8)
    assert w.shape == unsigned(17) and (w.min, w.max) == (0, (1 << 17) - 1)
    p = w.mul(a)
    assert p.signed and p.frac_bits == 16 and p.min <= w.max * a.min and p.max >= w.max * a.max
    assert p.width == 25
    s = a.sum(terms=64)
    assert s.width == 14 and s.min <= -128 * 64 and s.max >= 127 * 64
    assert QFormat.for_range(-1, 0).width == 1 and QFormat.for_range(0, 256).width == 9


@pytest.mark.parametrize("args, error, message", [
    ((1, 8, 0), TypeError, "signed must be a bool, not 1"),
    ((True, 8.0, 0), TypeError, "int_bits must be an integer, not 8.0"),
    ((True, 8, -1), ValueError, "frac_bits must be at least 0, not -1"),
    ((True, 0, 0), ValueError, "a format needs at least one bit, not 0"),
])
def test_qformat_errors(args, error, message):
    with pytest.raises(error, match=message):
        QFormat(*args)


def test_round_shift_errors():
    with pytest.raises(ValueError, match="amount must be at least 0, not -1"):
        round_shift(Signal(8), -1)
    with pytest.raises(TypeError, match="must be unsigned"):
        round_shift(Signal(8), Signal(signed(4)))
    with pytest.raises(ValueError, match="different fraction bits"):
        QFormat(True, 4, 2).sum(QFormat(True, 4, 3))
