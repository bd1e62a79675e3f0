import random
import pytest
from leanattn.hdl.skid import SkidBuffer
from leanattn.sim.stream_bench import simulate, run_cocotb_bench, bench_dir

def vectors(n=300):
    rng = random.Random(1)
    return [rng.getrandbits(12) for _ in range(n)]

@pytest.mark.parametrize("idle,bp", [("none","none"),("random","random"),("fixed","fixed")])
def test_amaranth(idle, bp):
    v = vectors()
    simulate(SkidBuffer(shape=12), {"i_data": v}, {"o_data": v}, idle=idle, backpressure=bp, seed=3,
             latency={"o_data": ("i_data", 1, None)})

def test_amaranth_wrong_latency_fails():
    v = vectors(20)
    with pytest.raises(AssertionError, match="documented latency is 2"):
        simulate(SkidBuffer(shape=12), {"i_data": v}, {"o_data": v}, latency={"o_data": ("i_data", 2, None)})

@pytest.mark.parametrize("sim", ["icarus", "verilator"])
def test_cocotb(sim, request):
    v = vectors()
    run_cocotb_bench(SkidBuffer(shape=12), toplevel="skid", inputs={"i_data": v}, outputs={"o_data": v},
                     simulator=sim, build_dir=bench_dir(request), latency={"o_data": ("i_data", 1, None)})

@pytest.mark.parametrize("sim", ["icarus"])
def test_cocotb_mismatch_fails(sim, request):
    v = vectors(50)
    with pytest.raises(AssertionError):
        run_cocotb_bench(SkidBuffer(shape=12), toplevel="skid", inputs={"i_data": v}, outputs={"o_data": v[:-1] + [v[-1] ^ 1]},
                         simulator=sim, build_dir=bench_dir(request))
