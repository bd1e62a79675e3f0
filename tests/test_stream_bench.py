"""The generic stream benches themselves: they pass a correct unit, measure its latency, apply the
stall patterns they claim, and fail on a wrong latency, a corrupted, missing or extra item, a broken
stream rule (so a green unit test means something)."""

import random

import pytest
from amaranth.hdl import Module, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from leanattn.hdl.skid import SkidBuffer
from leanattn.sim.stream_bench import bench_dir, run_cocotb_bench, simulate

LATENCY = {"o_data": ("i_data", SkidBuffer.latency, None)}


def vectors(n=300):
    rng = random.Random(1)
    return [rng.getrandbits(12) for _ in range(n)]


@pytest.mark.parametrize("idle, backpressure", [("none", "none"), ("random", "random"),
                                                ("fixed", "fixed")])
def test_simulate_passes_a_correct_unit(idle, backpressure):
    items = vectors()
    sent, received = simulate(SkidBuffer(shape=12), {"i_data": items}, {"o_data": items},
                              idle=idle, backpressure=backpressure, seed=3, latency=LATENCY)
    assert len(sent["i_data"]) == len(received["o_data"]) == len(items)


def test_simulate_fails_on_a_wrong_latency():
    items = vectors(20)
    with pytest.raises(AssertionError, match="documented latency is 2"):
        simulate(SkidBuffer(shape=12), {"i_data": items}, {"o_data": items},
                 latency={"o_data": ("i_data", 2, None)})


def test_simulate_fails_on_a_corrupted_item():
    items = vectors(20)
    with pytest.raises(AssertionError):
        simulate(SkidBuffer(shape=12), {"i_data": items}, {"o_data": items[:-1] + [items[-1] ^ 1]})


@pytest.mark.parametrize("simulator", ["icarus", "verilator"])
def test_cocotb_bench_passes_a_correct_unit(simulator, request):
    items = vectors()
    run = run_cocotb_bench(SkidBuffer(shape=12), toplevel="skid", inputs={"i_data": items},
                           outputs={"o_data": items}, simulator=simulator,
                           build_dir=bench_dir(request), latency=LATENCY)
    assert run.tests >= 1


@pytest.mark.parametrize("simulator", ["icarus", "verilator"])
def test_cocotb_bench_fails_on_a_corrupted_item(simulator, request):
    items = vectors(50)
    with pytest.raises(AssertionError, match="seed"):
        run_cocotb_bench(SkidBuffer(shape=12), toplevel="skid", inputs={"i_data": items},
                         outputs={"o_data": items[:-1] + [items[-1] ^ 1]}, simulator=simulator,
                         build_dir=bench_dir(request))


class RuleBreaker(wiring.Component):
    """A pass-through that lowers ``valid`` every other cycle, taken or not: a broken unit."""

    def __init__(self):
        super().__init__({"i_data": In(stream.Signature(12)), "o_data": Out(stream.Signature(12))})

    def elaborate(self, platform):
        m = Module()
        toggle = Signal()
        m.d.sync += toggle.eq(~toggle)
        m.d.comb += [self.o_data.payload.eq(self.i_data.payload),
                     self.o_data.valid.eq(self.i_data.valid & toggle),
                     self.i_data.ready.eq(self.o_data.ready & toggle)]
        return m


@pytest.mark.parametrize("simulator", ["icarus", "verilator"])
def test_cocotb_bench_fails_on_a_wrong_latency(simulator, request):
    items = vectors(20)
    with pytest.raises(AssertionError, match="documented latency is 2"):
        run_cocotb_bench(SkidBuffer(shape=12), toplevel="skid", inputs={"i_data": items},
                         outputs={"o_data": items}, simulator=simulator, build_dir=bench_dir(request),
                         latency={"o_data": ("i_data", 2, None)}, patterns=[("none", "none")])


@pytest.mark.parametrize("simulator", ["icarus", "verilator"])
def test_cocotb_bench_fails_on_an_extra_item(simulator, request):
    items = vectors(30)
    with pytest.raises(AssertionError, match="extra"):
        run_cocotb_bench(SkidBuffer(shape=12), toplevel="skid", inputs={"i_data": items},
                         outputs={"o_data": items[:-1]}, simulator=simulator,
                         build_dir=bench_dir(request), patterns=[("random", "random")])


@pytest.mark.parametrize("simulator", ["icarus", "verilator"])
def test_cocotb_bench_fails_on_a_broken_stream_rule(simulator, request):
    items = vectors(40)
    with pytest.raises(AssertionError, match="stream rule"):
        run_cocotb_bench(RuleBreaker(), toplevel="breaker", inputs={"i_data": items},
                         outputs={"o_data": items}, simulator=simulator,
                         build_dir=bench_dir(request), patterns=[("none", "random")])


@pytest.mark.parametrize("simulator", ["icarus", "verilator"])
def test_cocotb_bench_fails_when_a_unit_stops(simulator, request):
    items = vectors(10)
    with pytest.raises(AssertionError, match="not done after"):
        run_cocotb_bench(SkidBuffer(shape=12), toplevel="skid", inputs={"i_data": items},
                         outputs={"o_data": items + [0]}, simulator=simulator,
                         build_dir=bench_dir(request), patterns=[("none", "none")])


@pytest.mark.parametrize("simulator", ["icarus", "verilator"])
def test_cocotb_bench_applies_the_stall_patterns(simulator, request):
    """Without stalls the skid buffer moves one item per cycle; with fixed idle cycles one input
    cycle in three is empty; with random ones about 30 % (the harness's own logs)."""
    items = vectors(600)
    where = bench_dir(request)
    patterns = [("none", "none"), ("fixed", "none"), ("random", "none"), ("none", "random")]
    run_cocotb_bench(SkidBuffer(shape=12), toplevel="skid", inputs={"i_data": items},
                     outputs={"o_data": items}, simulator=simulator, build_dir=where,
                     patterns=patterns, seed=99)
    spans = {}
    for name in ("i_data", "o_data"):
        runs = {}
        for line in (where / f"xfer_{name}.txt").read_text().splitlines():
            run, _, cycle = line.split()
            runs.setdefault(int(run), []).append(int(cycle))
        spans[name] = [runs[k][-1] - runs[k][0] + 1 for k in range(len(patterns))]
    n = len(items)
    assert spans["i_data"][0] == n and spans["o_data"][0] == n
    assert abs(spans["i_data"][1] - 1.5 * n) <= 3
    assert 1.3 * n < spans["i_data"][2] < 1.6 * n
    assert 1.3 * n < spans["o_data"][3] < 1.6 * n
