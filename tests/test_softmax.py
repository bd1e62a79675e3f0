"""OnlineSoftmax (tile buffer -> exp2 -> PV accumulator): bit-exact with golden online_softmax per
segment, under any stall pattern, flowing from one segment into the next."""

import numpy as np
import pytest
from tiers import config_params, full_pairs

from leanattn.hdl.layouts import partial_layout
from leanattn.hdl.pv import pv_latency, v_layout
from leanattn.hdl.softmax import OnlineSoftmax
from leanattn.hdl.tilebuf import score_layout
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
    score_items,
    segments_of_keys,
    v_items,
)
from leanattn.sim.stream_bench import bench_dir, run_cocotb_bench, simulate

NAMES = sorted(TEST_CONFIGS)


def vectors(cfg, segments):
    return ({"i_score": pack(score_layout(cfg), score_items(cfg, segments)),
             "i_v": pack(v_layout(cfg), v_items(cfg, segments))},
            {"o_partial": pack(partial_layout(cfg), partial_items(cfg, segments))})


def extreme_segments(cfg):
    one = 1 << cfg.logit_frac_bits
    d, n = cfg.head_dim, 2 * cfg.tile + 3
    rise = np.concatenate([np.full(cfg.tile, cfg.logit_min), np.full(n - cfg.tile, cfg.logit_max)])
    return [
        Segment(0, np.full(n, one - 1), np.full((n, d), cfg.input_min)),   # largest weights, fills o
        Segment(1, rise, np.full((n, d), cfg.input_max)),                  # the max rises by 255
        Segment(1, np.clip(-rise, cfg.logit_min, cfg.logit_max), np.full((n, d), cfg.input_min)),
        Segment(2, [cfg.logit_min], np.full((1, d), cfg.input_min)),       # one key
        Segment(3, np.full(cfg.tile, -one), np.zeros((cfg.tile, d))),      # exactly one tile
    ]


@pytest.mark.parametrize("name", config_params(NAMES))
@pytest.mark.parametrize("idle, backpressure", [("none", "none"), ("random", "random"),
                                                ("random", "none"), ("none", "fixed")])
def test_softmax_amaranth(name, idle, backpressure):
    cfg = TEST_CONFIGS[name]
    rng = np.random.default_rng(21)
    inputs, outputs = vectors(cfg, extreme_segments(cfg) + random_segments(cfg, rng, 8))
    simulate(OnlineSoftmax(cfg), inputs, outputs, idle=idle, backpressure=backpressure, seed=8)


@pytest.mark.parametrize("name", NAMES)
def test_softmax_flows_between_segments(name):
    """No stalls: value beats are taken one per cycle within a segment, across its tiles; between
    two segments the gap is exactly the partial's readout plus the accumulator latency."""
    cfg = TEST_CONFIGS[name]
    rng = np.random.default_rng(1)
    segments = random_segments(cfg, rng, 5, max_len=4 * cfg.tile)
    inputs, outputs = vectors(cfg, segments)
    dut = OnlineSoftmax(cfg)
    sent, _ = simulate(dut, inputs, outputs)
    beats = cfg.beats_per_key
    v_cycles = np.array(sent["i_v"])
    bounds = np.cumsum([len(seg.s) * beats for seg in segments])[:-1]
    gaps = np.diff(v_cycles)
    inside = np.delete(gaps, bounds - 1)
    assert np.all(inside == 1), f"bubbles inside segments: {np.flatnonzero(inside != 1)}"
    # Between segments: the accumulator's latency, the partial's beats, then the next beat.
    assert np.all(gaps[bounds - 1] == beats + pv_latency(cfg) + 1), gaps[bounds - 1]


@pytest.mark.parametrize("simulator", ["icarus", "verilator"])
@pytest.mark.parametrize("name", config_params(NAMES))
def test_softmax_cocotb(name, simulator, request):
    cfg = TEST_CONFIGS[name]
    rng = np.random.default_rng(13)
    inputs, outputs = vectors(cfg, extreme_segments(cfg) + random_segments(cfg, rng, 4))
    run_cocotb_bench(OnlineSoftmax(cfg), toplevel="softmax", inputs=inputs, outputs=outputs,
                     simulator=simulator, build_dir=bench_dir(request),
                     patterns=[("random", "random"), ("none", "none")])


#: Keys per configuration and simulator in the slow tier's run.
FULL_KEYS = 10_000


@pytest.mark.slow
@pytest.mark.parametrize("name, simulator", full_pairs(NAMES))
def test_softmax_cocotb_full(name, simulator, request):
    """At least FULL_KEYS random keys in random segments, plus the extremes, under random stalls."""
    cfg = TEST_CONFIGS[name]
    rng = np.random.default_rng(33)
    segments = extreme_segments(cfg) + segments_of_keys(cfg, rng, FULL_KEYS)
    inputs, outputs = vectors(cfg, segments)
    assert sum(len(seg.s) for seg in segments) >= FULL_KEYS
    run_cocotb_bench(OnlineSoftmax(cfg), toplevel="softmax", inputs=inputs, outputs=outputs,
                     simulator=simulator, build_dir=bench_dir(request), seed=33,
                     patterns=[("random", "random")])


@pytest.mark.parametrize("name", NAMES)
def test_softmax_lint(name, request):
    path = bench_dir(request) / "softmax.v"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(design_verilog(OnlineSoftmax(TEST_CONFIGS[name]), toplevel="softmax"))
    verilator_lint(path, waivers={**AMARANTH_LINT_WAIVERS, **HIERARCHY_LINT_WAIVERS})
