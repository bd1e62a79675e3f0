# amaranth: UnusedElaboratable=no
"""AcceptProbe: the gaps between input transfers of a wrapped unit, under amaranth.sim and cocotb;
a wrong rate fails the bench; argument errors."""

import random
import re

import pytest

from leanattn.hdl.score import ScoreScale, qk_scale_layout, score_layout
from leanattn.hdl.skid import SkidBuffer
from leanattn.sim import golden
from leanattn.sim.accept_probe import AcceptProbe
from leanattn.sim.configs import TEST_CONFIGS
from leanattn.sim.stream_bench import bench_dir, run_cocotb_bench, simulate


def skid_streams(n=40):
    items = [random.Random(1).getrandbits(12) for _ in range(n)]
    return {"i_data": items}, {"o_data": items}


def score_streams(cfg, n=40):
    """q.k items with their golden scores (no tag)."""
    rng = random.Random(2)
    rows = [(rng.randint(-cfg.qk_max, cfg.qk_max), rng.randrange(1 << cfg.scale_bits),
             rng.randint(0, cfg.score_shift_max)) for _ in range(n)]
    ins = [qk_scale_layout(cfg).const({"qk": q, "mant": m, "shift": s}).as_bits() for q, m, s in rows]
    outs = [score_layout(cfg).const({"s": int(golden.score(cfg, q, m, s))}).as_bits() for q, m, s in rows]
    return {"i_qk": ins}, {"o_score": outs}


def test_gaps_of_a_full_rate_unit():
    """A skid buffer takes an item every cycle: gaps of 1 after the first (gap_max)."""
    inputs, outputs = skid_streams()
    probe = AcceptProbe(SkidBuffer(shape=12), port="i_data")
    assert probe.gap_max == 255 and isinstance(probe.unit, SkidBuffer)
    gaps = [probe.gap_max] + [1] * 39
    simulate(probe, inputs, {**outputs, "o_gaps": gaps},
             latency={"o_gaps": ("i_data", 1, None), "o_data": ("i_data", SkidBuffer.latency, None)})


def test_gaps_of_a_serial_unit():
    """ScoreScale at default takes a q.k every 2 cycles; claiming 1 fails the bench."""
    cfg = TEST_CONFIGS["default"]
    inputs, outputs = score_streams(cfg)
    probe = AcceptProbe(ScoreScale(cfg), port="i_qk", gap_bits=4)
    assert probe.unit.interval == 2 and probe.gap_max == 15
    simulate(probe, inputs, {**outputs, "o_gaps": [15] + [2] * 39},
             latency={"o_gaps": ("i_qk", 1, None), "o_score": ("i_qk", probe.unit.latency, None)})
    with pytest.raises(AssertionError, match="o_gaps"):
        simulate(probe, inputs, {**outputs, "o_gaps": [15] + [1] * 39})


@pytest.mark.parametrize("simulator", ["icarus", "verilator"])
def test_cocotb(request, simulator):
    """The same under cocotb; the unit's own streams alone under every stall pattern (o_gaps left
    out), then the gaps without stalls, one build for both."""
    cfg = TEST_CONFIGS["default"]
    inputs, outputs = score_streams(cfg)
    probe = AcceptProbe(ScoreScale(cfg), port="i_qk")
    build = bench_dir(request)
    run_cocotb_bench(probe, toplevel="probe", inputs=inputs, outputs=outputs, simulator=simulator,
                     build_dir=build, seed=11, latency={"o_score": ("i_qk", probe.unit.latency, None)})
    run_cocotb_bench(probe, toplevel="probe", inputs=inputs,
                     outputs={**outputs, "o_gaps": [probe.gap_max] + [2] * 39}, simulator=simulator,
                     build_dir=build, seed=12, patterns=[("none", "none")],
                     latency={"o_gaps": ("i_qk", 1, None)})


@pytest.mark.parametrize(("unit", "port", "error", "message"), [
    (None, "i_data", TypeError, "unit must be a wiring.Component, not None"),
    ("skid", "o_data", ValueError, "port must name an input stream of the unit, not 'o_data'"),
    ("skid", "i_nope", ValueError, "port must name an input stream of the unit, not 'i_nope'"),
    ("skid", 3, ValueError, "port must name an input stream of the unit, not 3"),
])
def test_argument_errors(unit, port, error, message):
    unit = SkidBuffer(shape=4) if unit == "skid" else unit
    with pytest.raises(error, match=re.escape(message)):
        AcceptProbe(unit, port=port)
