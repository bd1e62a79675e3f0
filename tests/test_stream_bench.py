"""The generic stream benches themselves: they pass a correct unit, measure its latency, and fail
on a wrong latency or a corrupted item (so a green unit test means something)."""

import random

import pytest

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
