"""PVAccumulator: weights and value beats in, partial states out, as golden online_softmax."""

import numpy as np
import pytest
from tiers import config_params, full_pairs

from leanattn.hdl.dsp import ECP5, write_mult18x18d_model
from leanattn.hdl.layouts import partial_layout
from leanattn.hdl.pv import PVAccumulator, v_layout, weight_layout
from leanattn.sim.cocotb_util import (
    AMARANTH_LINT_WAIVERS,
    HIERARCHY_LINT_WAIVERS,
    design_verilog,
    verilator_lint,
)
from leanattn.sim.configs import TEST_CONFIGS
from leanattn.sim.softmax_vectors import (
    Segment,
    pack,
    partial_items,
    random_segments,
    segments_of_keys,
    v_items,
    weight_items,
)
from leanattn.sim.stream_bench import bench_dir, run_cocotb_bench, simulate

#: Besides the test configurations, the beats per key around the read-modify-write's three stages:
#: one (every beat's word is the one the add stage writes), two (a word can be the one written the
#: cycle before) and three (the first count that needs no forwarding).
#: Not tiny2: it differs from tiny only in cores and pipeline, and the PV accumulator has no
#: compact form.
CONFIGS = {**{name: cfg for name, cfg in TEST_CONFIGS.items() if name != "tiny2"},
           "one_beat":    TEST_CONFIGS["default"].replace(head_dim=8, lanes=8),
           "two_beats":   TEST_CONFIGS["default"].replace(head_dim=16, lanes=8),
           "three_beats": TEST_CONFIGS["default"].replace(head_dim=24, lanes=8)}
NAMES = sorted(CONFIGS)


def vectors(cfg, segments):
    return ({"i_w": pack(weight_layout(cfg), weight_items(cfg, segments)),
             "i_v": pack(v_layout(cfg), v_items(cfg, segments))},
            {"o_partial": pack(partial_layout(cfg), partial_items(cfg, segments))})


def extreme_segments(cfg):
    """Largest weights with the most negative and most positive values (fills acc_o), a rise of
    the running max by more than the accumulator width (rescale to 0), one-key segments."""
    one = 1 << cfg.logit_frac_bits
    d, n = cfg.head_dim, 2 * cfg.tile + 3
    top = np.full(n, one - 1)                          # fraction .11..1: the largest weight
    rise = np.concatenate([np.full(cfg.tile, cfg.logit_min), np.full(n - cfg.tile, cfg.logit_max)])
    return [
        Segment(0, top, np.full((n, d), cfg.input_min)),
        Segment(1, top, np.full((n, d), cfg.input_max)),
        Segment(1, rise, np.full((n, d), cfg.input_min)),
        Segment(2, [0], np.full((1, d), cfg.input_max)),
        Segment(2, [cfg.logit_min], np.full((1, d), cfg.input_min)),
    ]


@pytest.mark.parametrize("name", config_params(NAMES))
@pytest.mark.parametrize("idle, backpressure", [("none", "none"), ("random", "random"),
                                                ("fixed", "random")])
def test_pv_amaranth(name, idle, backpressure):
    cfg = CONFIGS[name]
    rng = np.random.default_rng(5)
    inputs, outputs = vectors(cfg, extreme_segments(cfg) + random_segments(cfg, rng, 10))
    latency = None
    simulate(PVAccumulator(cfg), inputs, outputs, idle=idle, backpressure=backpressure, seed=2,
             latency=latency)


@pytest.mark.parametrize("name", NAMES)
def test_pv_throughput_and_latency(name):
    """Without stalls: one value beat per cycle across keys and tiles; a segment's partial leaves
    ``latency`` cycles after its last value beat and takes head_dim // lanes cycles."""
    cfg = CONFIGS[name]
    rng = np.random.default_rng(9)
    segments = random_segments(cfg, rng, 3)
    inputs, outputs = vectors(cfg, segments)
    dut = PVAccumulator(cfg)
    sent, received = simulate(dut, inputs, outputs)
    beats = cfg.beats_per_key
    v_cycles = sent["i_v"]
    out_cycles = [c for _, c in received["o_partial"]]
    start = 0
    for k, seg in enumerate(segments):
        count = len(seg.s) * beats
        seg_cycles = v_cycles[start:start + count]
        assert seg_cycles == list(range(seg_cycles[0], seg_cycles[0] + count))   # no bubble
        first_out = out_cycles[k * beats]
        assert first_out - seg_cycles[-1] == dut.latency
        assert out_cycles[k * beats:(k + 1) * beats] == list(range(first_out, first_out + beats))
        start += count


@pytest.mark.parametrize("simulator", ["icarus", "verilator"])
@pytest.mark.parametrize("name", config_params(NAMES))
def test_pv_cocotb(name, simulator, request):
    cfg = CONFIGS[name]
    rng = np.random.default_rng(4)
    inputs, outputs = vectors(cfg, extreme_segments(cfg) + random_segments(cfg, rng, 6))
    run_cocotb_bench(PVAccumulator(cfg), toplevel="pv", inputs=inputs, outputs=outputs,
                     simulator=simulator, build_dir=bench_dir(request),
                     patterns=[("none", "none"), ("random", "random")])


@pytest.mark.parametrize("simulator", ["icarus", "verilator"])
@pytest.mark.parametrize("name", ["tiny", "default"])
def test_pv_cocotb_ecp5(name, simulator, request):
    """Elaborated for the ECP5: each lane's product in a MULT18X18D that holds its own copy of the
    key's weight (its input register, loaded with the key register) and the product register,
    simulated with the block's model: bit-exact, the same latency."""
    cfg = CONFIGS[name]
    text = design_verilog(PVAccumulator(cfg), toplevel="pv", platform=ECP5())
    assert text.count("MULT18X18D #(") == cfg.lanes
    assert "MULT18X18D" not in design_verilog(PVAccumulator(cfg), toplevel="pv")
    rng = np.random.default_rng(5)
    inputs, outputs = vectors(cfg, extreme_segments(cfg) + random_segments(cfg, rng, 6))
    build = bench_dir(request)
    run_cocotb_bench(PVAccumulator(cfg), toplevel="pv", inputs=inputs, outputs=outputs,
                     simulator=simulator, build_dir=build, platform=ECP5(),
                     extra_sources=[write_mult18x18d_model(build)],
                     patterns=[("none", "none"), ("random", "random")])


#: Keys per configuration and simulator in the slow tier's run.
FULL_KEYS = 10_000


@pytest.mark.slow
@pytest.mark.parametrize("name, simulator", full_pairs(NAMES))
def test_pv_cocotb_full(name, simulator, request):
    """At least FULL_KEYS random keys in random segments, plus the extremes, under random stalls."""
    cfg = CONFIGS[name]
    rng = np.random.default_rng(32)
    segments = extreme_segments(cfg) + segments_of_keys(cfg, rng, FULL_KEYS)
    inputs, outputs = vectors(cfg, segments)
    assert sum(len(seg.s) for seg in segments) >= FULL_KEYS
    run_cocotb_bench(PVAccumulator(cfg), toplevel="pv", inputs=inputs, outputs=outputs,
                     simulator=simulator, build_dir=bench_dir(request), seed=32,
                     patterns=[("random", "random")])


@pytest.mark.parametrize("name", NAMES)
def test_pv_lint(name, request):
    path = bench_dir(request) / "pv.v"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(design_verilog(PVAccumulator(CONFIGS[name]), toplevel="pv"))
    # The accumulator memory is a submodule: its port wires appear in the parent too.
    verilator_lint(path, waivers={**AMARANTH_LINT_WAIVERS, **HIERARCHY_LINT_WAIVERS})
