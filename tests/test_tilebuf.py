"""TileBuffer: logits in, exp2 arguments out against the running max, as golden tile_schedule."""

import numpy as np
import pytest
from tiers import config_params, full_pairs

from leanattn.hdl.tilebuf import TileBuffer, key_layout, score_layout
from leanattn.sim.cocotb_util import AMARANTH_LINT_WAIVERS, design_verilog, verilator_lint
from leanattn.sim.configs import TEST_CONFIGS
from leanattn.sim.softmax_vectors import (
    Segment,
    key_items,
    pack,
    random_segments,
    score_items,
    segments_of_keys,
)
from leanattn.sim.stream_bench import bench_dir, run_cocotb_bench, simulate

NAMES = sorted(TEST_CONFIGS)


def vectors(cfg, segments):
    return ({"i_score": pack(score_layout(cfg), score_items(cfg, segments))},
            {"o_key": pack(key_layout(cfg), key_items(cfg, segments))})


def extreme_segments(cfg):
    one = 1 << cfg.logit_frac_bits
    d = cfg.head_dim
    v = np.zeros((3 * cfg.tile + 1, d), dtype=np.int64)
    n = 3 * cfg.tile + 1
    return [
        Segment(0, [cfg.logit_min], v[:1]),                           # one key, the most negative logit
        Segment(1, [cfg.logit_max] * n, v),                           # all at the top
        Segment(1, np.linspace(cfg.logit_min, cfg.logit_max, n).astype(np.int64), v),  # rises by >200
        Segment(2, [-1, -one, -one - 1, 0] * cfg.tile, np.zeros((4 * cfg.tile, d))),   # floors near 0
        Segment(3, [5 * one] * cfg.tile, v[:cfg.tile]),               # exactly one tile
        Segment(3, [5 * one] * (cfg.tile + 1), v[:cfg.tile + 1]),     # one key more
    ]


@pytest.mark.parametrize("name", config_params(NAMES))
@pytest.mark.parametrize("idle, backpressure", [("none", "none"), ("random", "random"),
                                                ("none", "random"), ("random", "none")])
def test_tilebuf_amaranth(name, idle, backpressure):
    cfg = TEST_CONFIGS[name]
    rng = np.random.default_rng(7)
    segments = extreme_segments(cfg) + random_segments(cfg, rng, 12)
    inputs, outputs = vectors(cfg, segments)
    simulate(TileBuffer(cfg), inputs, outputs, idle=idle, backpressure=backpressure, seed=11)


@pytest.mark.parametrize("name", NAMES)
def test_tilebuf_replay_overlaps_fill(name):
    """With no stalls, a tile's keys leave while the next tile streams in: one key per cycle
    sustained, only a fixed gap per tile at the start."""
    cfg = TEST_CONFIGS[name]
    n = 8 * cfg.tile
    seg = Segment(0, np.arange(n) % 977, np.zeros((n, cfg.head_dim)))
    inputs, outputs = vectors(cfg, [seg])
    sent, received = simulate(TileBuffer(cfg), inputs, outputs)
    assert sent["i_score"] == list(range(1, n + 1))               # never stalls the logits
    first = received["o_key"][0][1]
    assert first == sent["i_score"][cfg.tile - 1] + TileBuffer.latency  # the tile's last logit
    assert [c for _, c in received["o_key"]] == list(range(first, first + n))


@pytest.mark.parametrize("simulator", ["icarus", "verilator"])
@pytest.mark.parametrize("name", config_params(NAMES))
def test_tilebuf_cocotb(name, simulator, request):
    cfg = TEST_CONFIGS[name]
    rng = np.random.default_rng(3)
    inputs, outputs = vectors(cfg, extreme_segments(cfg) + random_segments(cfg, rng, 8))
    run_cocotb_bench(TileBuffer(cfg), toplevel="tilebuf", inputs=inputs, outputs=outputs,
                     simulator=simulator, build_dir=bench_dir(request),
                     patterns=[("none", "none"), ("random", "random")])


#: Keys per configuration and simulator in the slow tier's run.
FULL_KEYS = 10_000


@pytest.mark.slow
@pytest.mark.parametrize("name, simulator", full_pairs(NAMES))
def test_tilebuf_cocotb_full(name, simulator, request):
    """At least FULL_KEYS random keys in random segments, plus the extremes, under random stalls."""
    cfg = TEST_CONFIGS[name]
    rng = np.random.default_rng(31)
    segments = extreme_segments(cfg) + segments_of_keys(cfg, rng, FULL_KEYS)
    inputs, outputs = vectors(cfg, segments)
    assert sum(len(seg.s) for seg in segments) >= FULL_KEYS
    run_cocotb_bench(TileBuffer(cfg), toplevel="tilebuf", inputs=inputs, outputs=outputs,
                     simulator=simulator, build_dir=bench_dir(request), seed=31,
                     patterns=[("random", "random")])


@pytest.mark.parametrize("name", NAMES)
def test_tilebuf_lint(name, request):
    path = bench_dir(request) / "tilebuf.v"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(design_verilog(TileBuffer(TEST_CONFIGS[name]), toplevel="tilebuf"))
    verilator_lint(path, waivers=AMARANTH_LINT_WAIVERS)
