# amaranth: UnusedElaboratable=no
"""SlicedProducts: the plan (slices, multipliers, phases, the narrower low slices of a shared signed
operand), exact products under amaranth.sim for every kind of plan (parallel, serial, padded,
both operands sliced, several products), with a random clock enable; one multiplier per slot on
the iCE40 (slow); argument errors."""

import random
import re

import pytest
from amaranth.hdl import Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out
from amaranth.sim import Simulator

from leanattn.fpga.unit_resources import synthesize
from leanattn.hdl.slicemul import SlicedProducts
from leanattn.sim.stream_bench import bench_dir

#: name: (arguments, (slices per product, multipliers, phases)).
CASES = {
    # q.k x score mantissa at tiny: two slices on one multiplier.
    "serial":      (dict(x_range=(-(1 << 19), 1 << 19), y_range=(0, 65535), dsp_bits=16, cycles=32),
                    (2, 1, 2)),
    # The same, a new operand every cycle: two multipliers, 16-bit low slice.
    "parallel":    (dict(x_range=(-(1 << 19), 1 << 19), y_range=(0, 65535), dsp_bits=16, cycles=1),
                    (2, 2, 1)),
    # Three slices on two multipliers: one empty slot in the first phase.
    "padded":      (dict(x_range=(-(1 << 42), 1 << 42), y_range=(0, 65535), dsp_bits=18, cycles=2),
                    (3, 2, 2)),
    # Both operands sliced; offsets 0, 15, 16, 31: the accumulator's shift changes by phase.
    "both":        (dict(x_range=(-(1 << 20), 1 << 20), y_range=(0, (1 << 24) - 1), dsp_bits=16,
                         cycles=4), (4, 1, 4)),
    # Lanes: three products, a lane per phase on two multipliers.
    "lanes":       (dict(x_range=(-(1 << 26), (1 << 26) - 1), y_range=(0, 65535), count=3, dsp_bits=18,
                         cycles=4), (2, 2, 3)),
    # Eight lanes over two phases on eight multipliers.
    "wide_lanes":  (dict(x_range=(-(1 << 26), (1 << 26) - 1), y_range=(0, 65535), count=8, dsp_bits=18,
                         cycles=2), (2, 8, 2)),
    # Three lanes of three slices over two cycles: lanes split across phases, one empty slot.
    "split_lanes": (dict(x_range=(-(1 << 36), (1 << 36) - 1), y_range=(0, 4095), count=3, dsp_bits=18,
                         cycles=2), (3, 5, 2)),
    # Unsigned x (the normalizer's reciprocal times its output mantissa).
    "unsigned":    (dict(x_range=(0, 1 << 16), y_range=(0, 65535), dsp_bits=16, cycles=4), (2, 1, 2)),
    # Ranges at no power of two; x only slightly negative.
    # Both sliced, each multiplier keeping its signedness: full-width slices.
    "odd_ranges":  (dict(x_range=(-1000, 77777), y_range=(3, 40000), dsp_bits=9, cycles=3), (4, 2, 2)),
}


def slice_value(s, x, y):
    """The partial product of slice ``s`` for operands ``x`` and ``y`` (Python integers)."""
    mask = lambda w: (1 << w) - 1
    xs = (x >> s.x_off) & mask(s.x_width)
    if s.x_signed and xs >> (s.x_width - 1):
        xs -= 1 << s.x_width
    return xs * ((y >> s.y_off) & mask(s.y_width))


def operands(plan, count, seed):
    """Extremes of both ranges (and 0, +-1 where inside), then random values."""
    rng = random.Random(seed)
    (x_lo, x_hi), (y_lo, y_hi) = plan.x_range, plan.y_range
    xs = [v for v in (x_lo, x_hi, 0, 1, -1, x_lo + 1, x_hi - 1) if x_lo <= v <= x_hi]
    ys = [v for v in (y_lo, y_hi, y_hi - 1, 1) if y_lo <= v <= y_hi]
    rows = [([x] * plan.count, y) for x in xs for y in ys]
    rows += [([rng.randint(x_lo, x_hi) for _ in range(plan.count)], rng.randint(y_lo, y_hi))
             for _ in range(count)]
    return rows


@pytest.mark.parametrize("case", CASES)
def test_plan(case):
    """Counts; every slot of the table once, empty slots first; every partial product fits one
    multiplier (a shared one takes the signed top slice and narrower unsigned ones); the slices
    add up to x * y; the accumulator holds exactly the product."""
    args, (slices, multipliers, phases) = CASES[case]
    plan = SlicedProducts(**args)
    count, dsp = plan.count, plan.dsp_bits
    assert (len(plan.slices) // count, plan.multipliers, plan.phases) == (slices, multipliers, phases)
    assert plan.multipliers == -(-len(plan.slices) // plan.cycles) and plan.phases <= plan.cycles
    assert plan.latency == phases + 1
    flat = [s for row in plan.table for s in row]
    assert len(plan.table) == phases and all(len(row) == multipliers for row in plan.table)
    empty = flat.count(None)
    assert flat[empty:] == list(plan.slices) and None not in flat[empty:] and empty < multipliers
    for column in zip(*plan.table):
        taken = [s for s in column if s is not None]
        mixed = len({s.x_signed for s in taken}) > 1
        for s in taken:
            assert s.y_width <= dsp and s.x_width <= (dsp - 1 if mixed and not s.x_signed else dsp)
    for k in range(count):
        mine = [s for s in plan.slices if s.product == k]
        assert len(mine) == slices and [s.offset for s in mine] == sorted((s.offset for s in mine),
                                                                          reverse=True)
    for xs, y in operands(plan, 200, seed=1):
        for k, x in enumerate(xs):
            parts = [slice_value(s, x, y) for s in plan.slices if s.product == k]
            assert all(s.lo <= p <= s.hi for s, p in zip([s for s in plan.slices if s.product == k], parts))
            assert sum(p << s.offset for s, p in zip([s for s in plan.slices if s.product == k], parts)) \
                == x * y
    lo, hi = plan.x_range[0] * plan.y_range[1], plan.x_range[1] * plan.y_range[1]
    width, signed = plan.product_shape.width, plan.product_shape.signed
    assert (not signed or -(1 << (width - 1)) <= lo) and hi < 1 << (width - signed)


class Harness(wiring.Component):
    """A plan built as it is in a unit: a phase counter started by ``start``, the partial products
    stage and the accumulators (``acc_<k>``), every register enabled by ``en``."""

    def __init__(self, plan):
        self.plan = plan
        super().__init__({
            **{f"x_{k}": In(plan.x_shape) for k in range(plan.count)},
            "y":     In(plan.y_shape),
            "start": In(1),
            "en":    In(1),
            **{f"acc_{k}": Out(plan.product_shape) for k in range(plan.count)},
        })
        self.xs   = [getattr(self, f"x_{k}") for k in range(plan.count)]
        self.accs = [getattr(self, f"acc_{k}") for k in range(plan.count)]

    def elaborate(self, platform):
        m, plan = Module(), self.plan
        phase = plan.counter(m, enable=self.en, start=self.start, name="phase")
        parts, mul_phase = plan.multiply(m, enable=self.en, phase=phase, xs=self.xs, y=self.y, name="mul")
        accs = plan.accumulate(m, enable=self.en, parts=parts, mul_phase=mul_phase,
                               names=[f"sum_{k}" for k in range(plan.count)])
        m.d.comb += [out.eq(acc) for out, acc in zip(self.accs, accs)]
        return m


@pytest.mark.parametrize("case", CASES)
def test_exact(case):
    """Each set of operands (held while the products take shape) gives x_k * y in every
    accumulator ``latency`` enabled cycles after the start, under a random clock enable; the
    accumulators then hold their values while the counter is idle."""
    plan = SlicedProducts(**CASES[case][0])
    harness = Harness(plan)
    sim = Simulator(harness)
    sim.add_clock(1e-6)
    rng = random.Random(case)
    checked = []

    async def bench(ctx):
        for xs, y in operands(plan, 150, seed=2):
            for signal, x in zip(harness.xs, xs):
                ctx.set(signal, x)
            ctx.set(harness.y, y)
            ctx.set(harness.start, 1)
            ctx.set(harness.en, 1)
            await ctx.tick()
            ctx.set(harness.start, 0)
            done = 0
            while done < plan.latency:
                enabled = rng.random() < 0.7
                ctx.set(harness.en, enabled)
                await ctx.tick()
                done += enabled
            want = [x * y for x in xs]
            assert [ctx.get(acc) for acc in harness.accs] == want, (xs, y)
            ctx.set(harness.en, 1)
            for _ in range(2):                      # idle: nothing changes
                await ctx.tick()
            assert [ctx.get(acc) for acc in harness.accs] == want, (xs, y)
            checked.append(y)

    sim.add_testbench(bench)
    sim.run()
    assert len(checked) > 150


@pytest.mark.slow
@pytest.mark.parametrize("case", ["serial", "lanes", "unsigned"])
def test_one_mac16_per_multiplier(request, case):
    """On the iCE40 (16 x 16 SB_MAC16) each multiplier of a 16-bit plan is one DSP block, whatever
    the slices it takes in turn."""
    args = {**CASES[case][0], "dsp_bits": 16}
    plan = SlicedProducts(**args)
    result = synthesize(Harness(plan), top="harness", out_dir=bench_dir(request))
    assert result["resources"]["SB_MAC16"] == plan.multipliers


# --- argument errors --------------------------------------------------------------------------------

GOOD = dict(x_range=(-8, 7), y_range=(0, 15), dsp_bits=4, cycles=2)


@pytest.mark.parametrize(("changes", "error", "message"), [
    (dict(x_range=[-8, 7]), TypeError, "x_range must be a pair of integers, not [-8, 7]"),
    (dict(y_range=(0, 1.5)), TypeError, "y_range must be a pair of integers, not (0, 1.5)"),
    (dict(x_range=(3, 2)), ValueError, "x_range must be (lo, hi) with lo <= hi, not (3, 2)"),
    (dict(y_range=(-1, 2)), ValueError, "y_range must be unsigned (lo >= 0), not (-1, 2)"),
    (dict(count=0), ValueError, "count must be at least 1, not 0"),
    (dict(dsp_bits=1), ValueError, "dsp_bits must be at least 2, not 1"),
    (dict(cycles=True), TypeError, "cycles must be an integer, not True"),
    (dict(cycles=0), ValueError, "cycles must be at least 1, not 0"),
])
def test_argument_errors(changes, error, message):
    with pytest.raises(error, match=re.escape(message)):
        SlicedProducts(**{**GOOD, **changes})


def test_keyword_only():
    with pytest.raises(TypeError, match="positional argument"):
        SlicedProducts((-8, 7), (0, 15), dsp_bits=4, cycles=2)


def test_operand_count():
    plan = SlicedProducts(**GOOD, count=2)
    m = Module()
    with pytest.raises(ValueError, match=re.escape("xs must have 2 values, not 1")):
        plan.multiply(m, enable=1, phase=Signal(2), xs=[Signal(4)], y=Signal(4), name="mul")
    parts, phase = plan.multiply(m, enable=1, phase=Signal(2), xs=[Signal(4)] * 2, y=Signal(4), name="mul")
    with pytest.raises(ValueError, match=re.escape("names must have 2 names, not 1")):
        plan.accumulate(m, enable=1, parts=parts, mul_phase=phase, names=["acc"])
