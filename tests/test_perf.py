# amaranth: UnusedElaboratable=no
"""The cycle model against the RTL: predicted cycles equal ``o_cycles`` of real Verilator runs of
the system bench (no stalls, two memory latencies); its constants equal the units' documented
latencies; its closed formulas equal the model; its command line and its errors."""

import argparse
import json
import random
import time
from types import SimpleNamespace

import numpy as np
import pytest
from amaranth.hdl import Fragment, Module
from amaranth.lib import wiring
from amaranth.sim import Simulator

from leanattn.cli import UsageError
from leanattn.hdl.config import PRESETS
from leanattn.hdl.core import AttentionCore
from leanattn.hdl.exp2 import Exp2
from leanattn.hdl.finish import ScaleLookup
from leanattn.hdl.kvmem import KVBank
from leanattn.hdl.normalize import Normalizer
from leanattn.hdl.pv import PVAccumulator
from leanattn.hdl.skid import SkidBuffer
from leanattn.hdl.slicemul import SlicedProducts
from leanattn.hdl.tilebuf import TileBuffer
from leanattn.hdl.top import LeanAttention
from leanattn.hdl.tree import TreeNode, node_stages
from leanattn.sim import perf
from leanattn.sim.configs import TEST_CONFIGS, TINY2
from leanattn.sim.job import JobError
from leanattn.sim.jobgen import random_int_job
from leanattn.sim.partition import partition, tree_merges
from leanattn.sim.stream_bench import bench_dir
from leanattn.sim.system import run_system

# --- the model against the RTL -------------------------------------------------------------------

#: Fast tier, tiny and tiny2: max_context (1024; on two cores one head over both), many one-key
#: heads, ragged mixes, tile +- 1, one tile per core, a head one key past a tile per core, and (on
#: two cores) a job whose cycles depend on the arbiter pointer the job before left.
FAST_SHAPES = [
    [1024], [1] * 8, [15, 17, 1, 32], [3, 1, 4, 1, 5, 9, 2, 6], [16, 16], [33], [40, 7, 20, 2],
    [1, 47], [31, 1, 1, 1, 1, 1, 1, 30], [2, 1, 2],
]


def random_shapes(cfg, rng, count):
    """Head lengths of ``count`` jobs: max_context, fixed corner cases, then random mixes of long,
    tile-sized and very short heads of at most four tiles per core in all (the KV load of a job
    costs the bench far more time than its run)."""
    budget = 4 * cfg.tile * cfg.cores
    shapes = [[cfg.max_context], [1], [cfg.tile - 1, cfg.tile + 1, 1, 2 * cfg.tile],
              [1] * cfg.max_heads, [cfg.tile] * cfg.cores, [cfg.tile * cfg.cores + 1]]
    while len(shapes) < count:
        heads = int(rng.integers(1, cfg.max_heads + 1))
        top = [budget, 3 * cfg.tile, 4, cfg.tile + 2][int(rng.integers(4))]
        lengths = rng.integers(1, top + 1, heads)
        while lengths.sum() > budget:
            lengths = lengths[:-1]
        shapes.append([int(n) for n in lengths])
    return shapes


def check_against_rtl(request, cfg, shapes, latency, seed, *, partial_slices=False, request_slices=False,
                      registered_grant=False):
    """Run every job in one Verilator simulation; every job's predicted cycles must equal its
    o_cycles. Jobs run back to back, so each prediction starts from the arbiter pointer the
    previous job left. Returns the measured cycles."""
    rng = np.random.default_rng(seed)
    jobs = [random_int_job(cfg, lengths, rng) for lengths in shapes]
    _, cycles, _ = run_system(cfg, jobs, simulator="verilator", build_dir=bench_dir(request),
                              latency=latency, stall_rate=0, patterns=[("none", "none")], seed=1,
                              partial_slices=partial_slices, request_slices=request_slices,
                              registered_grant=registered_grant)
    assert len(cycles) == len(shapes)
    held, wrong = 0, []
    for lengths, measured in zip(shapes, cycles):
        pred = perf.predict(cfg, lengths, latency=latency, arbiter_held=held, partial_slices=partial_slices,
                            request_slices=request_slices, registered_grant=registered_grant)
        held = pred.arbiter_held
        if pred.cycles != measured:
            wrong.append((lengths, measured, pred.cycles))
    assert not wrong, f"{len(wrong)} of {len(shapes)} jobs off (lengths, RTL, model): {wrong}"
    return cycles


@pytest.mark.parametrize("name", ["tiny", "tiny2"])
def test_rtl_tiny_fast(request, name):
    """tiny (one core, compact pipeline) and tiny2 (two cores, full pipeline)."""
    check_against_rtl(request, TEST_CONFIGS[name], FAST_SHAPES, latency=2, seed=11)


@pytest.mark.parametrize("name, latency", [("tiny2", 2),
                                           pytest.param("default", 5, marks=pytest.mark.slow),
                                           pytest.param("tiny4", 3, marks=pytest.mark.slow)])
def test_rtl_compact(request, name, latency):
    """The compact pipeline (fewer registers in the merge, reciprocal, exp2 and score units;
    one-beat register slices in the cores and the tree; no slice before the normalizer, and no
    arbiter for one core): the model's cycles on every job, at tiny on two cores (the normalizer
    slower than the cores: it holds back the scale lookup), default and four tiny cores (two tree
    levels). On one core it is the tiny preset (test_rtl_tiny_fast)."""
    cfg = FORMULA_CONFIGS[name].replace(pipeline="compact")
    shapes = FAST_SHAPES if name == "tiny2" else random_shapes(
        cfg, np.random.default_rng(31), 16)
    check_against_rtl(request, cfg, shapes, latency=latency, seed=13)


@pytest.mark.parametrize("name, schedule, chunks, latency", [
    pytest.param("tiny2", "fa2", 0, 2, marks=pytest.mark.slow), ("tiny2", "flashdecoding", 0, 2),
    pytest.param("default", "fa2", 0, 5, marks=pytest.mark.slow),
    pytest.param("default", "flashdecoding", 0, 5, marks=pytest.mark.slow),
    pytest.param("default", "flashdecoding", 2, 3, marks=pytest.mark.slow)])
def test_rtl_schedules(request, name, schedule, chunks, latency):
    """The fa2 and flashdecoding schedules in the RTL: bit-exact with the golden model (which
    runs the same schedule), and the model's cycles on every job."""
    cfg = TEST_CONFIGS[name].replace(schedule=schedule, chunks=chunks)
    check_against_rtl(request, cfg, random_shapes(cfg, np.random.default_rng(29), 16), latency, seed=7)


@pytest.mark.slow
@pytest.mark.parametrize("name, latency", [("tiny2", 7), ("default", 5)])
def test_rtl_many_jobs(request, name, latency):
    cfg = TEST_CONFIGS[name]
    check_against_rtl(request, cfg, random_shapes(cfg, np.random.default_rng(23), 24), latency, seed=5)


#: With a register slice behind every core's partial: tiny2's fast shapes (cut heads over both
#: cores, ragged mixes, one-key heads that queue at the arbiter; also on one core with the full
#: pipeline, the slice straight into the arbiter) and random jobs at default (cut heads over one
#: and two tree levels, whole heads, many heads per core; lean and flashdecoding).
SLICED_CASES = [
    pytest.param("tiny2", {}, FAST_SHAPES, 2, id="tiny2"),
    pytest.param("tiny2", {"cores": 1}, FAST_SHAPES, 2, id="tiny2-one-core", marks=pytest.mark.slow),
    pytest.param("default", {}, None, 3, id="default", marks=pytest.mark.slow),
    pytest.param("default", {"schedule": "flashdecoding"}, None, 5, id="default-flashdecoding",
                 marks=pytest.mark.slow),
]


@pytest.mark.parametrize("name, changes, shapes, latency", SLICED_CASES)
def test_rtl_partial_slices(request, name, changes, shapes, latency):
    """LeanAttention(partial_slices=True): the model with ``partial_slices=True`` equals the RTL
    on every job, and the slices change the cycles of jobs (a partial beat reaches the routing
    a cycle later, and a core may go on while the slice holds two beats)."""
    cfg = TEST_CONFIGS[name].replace(**changes)
    shapes = shapes or random_shapes(cfg, np.random.default_rng(31), 16)
    cycles = check_against_rtl(request, cfg, shapes, latency, seed=13, partial_slices=True)
    held, plain = 0, []
    for lengths in shapes:
        pred = perf.predict(cfg, lengths, latency=latency, arbiter_held=held)
        held = pred.arbiter_held
        plain.append(pred.cycles)
    assert cycles != plain


#: With a register slice on every core's K and V requests: tiny2's fast shapes, and random jobs at
#: default (latency 3 as for the partial slices, and 150, where the request slots bound the K
#: side of short heads and some jobs take two or three cycles more, not one), then with both
#: kinds of slices.
REQUEST_SLICED_CASES = [
    pytest.param("tiny2", {}, FAST_SHAPES, 2, False, id="tiny2"),
    pytest.param("default", {}, None, 3, False, id="default", marks=pytest.mark.slow),
    pytest.param("default", {}, None, 150, False, id="default-latency150", marks=pytest.mark.slow),
    pytest.param("tiny2", {}, FAST_SHAPES, 2, True, id="tiny2-partial-slices", marks=pytest.mark.slow),
    pytest.param("default", {}, None, 3, True, id="default-partial-slices", marks=pytest.mark.slow),
]


@pytest.mark.parametrize("name, changes, shapes, latency, partial", REQUEST_SLICED_CASES)
def test_rtl_request_slices(request, name, changes, shapes, latency, partial):
    """LeanAttention(request_slices=True), also with ``partial_slices=True``: the model with the
    same slices equals the RTL on every job, and the request slices change the cycles of jobs
    (every request reaches its bank a cycle later)."""
    cfg = TEST_CONFIGS[name].replace(**changes)
    shapes = shapes or random_shapes(cfg, np.random.default_rng(37), 16)
    cycles = check_against_rtl(request, cfg, shapes, latency, seed=17, partial_slices=partial,
                               request_slices=True)
    held, plain = 0, []
    for lengths in shapes:
        pred = perf.predict(cfg, lengths, latency=latency, arbiter_held=held, partial_slices=partial)
        held = pred.arbiter_held
        plain.append(pred.cycles)
    assert cycles != plain


#: With the arbiter's grant in a register: tiny2's fast shapes at latency 7 (one-key heads that
#: queue at the arbiter, cut heads from the tree's root), and random jobs at default with the
#: board's options (both kinds of slices too) at latency 3 and under flashdecoding at latency 5.
GRANT_CASES = [
    pytest.param("tiny2", {}, FAST_SHAPES, 7, {}, id="tiny2"),
    pytest.param("default", {}, None, 3, {"partial_slices": True, "request_slices": True},
                 id="default-board"),
    pytest.param("default", {"schedule": "flashdecoding"}, None, 5, {}, id="default-flashdecoding"),
]


@pytest.mark.slow
@pytest.mark.parametrize("name, changes, shapes, latency, slices", GRANT_CASES)
def test_rtl_registered_grant(request, name, changes, shapes, latency, slices):
    """LeanAttention(registered_grant=True), also with both kinds of slices: the model with the same
    options equals the RTL on every job, and the registered grant changes the cycles of jobs (a
    packet from an input the grant does not rest on waits a cycle while the grant moves)."""
    cfg = TEST_CONFIGS[name].replace(**changes)
    shapes = shapes or random_shapes(cfg, np.random.default_rng(41), 16)
    cycles = check_against_rtl(request, cfg, shapes, latency, seed=19, registered_grant=True, **slices)
    held, plain = 0, []
    for lengths in shapes:
        pred = perf.predict(cfg, lengths, latency=latency, arbiter_held=held, **slices)
        held = pred.arbiter_held
        plain.append(pred.cycles)
    assert cycles != plain


#: Cycle counts measured on Verilator (system bench, no stalls), with the arbiter pointer the job
#: before left: ``(configuration, latency, pointer, lengths, o_cycles)``.
MEASURED = [
    ("tiny2", 2, 0, [40], 1363),
    ("tiny2", 2, 0, [1] * 8, 1395),
    ("default", 2, 0, [3, 3, 1, 3, 2, 2, 2, 1, 3, 1, 1, 2, 2, 2, 1, 1, 1, 1, 1, 3, 1, 2, 3, 1, 1, 2, 1,
                       3, 1, 3, 3, 3], 636),
    ("default", 2, 0, [31, 33, 1, 64], 625),
    ("default", 2, 4, [1] * 32, 605),
    ("default", 2, 4, [11, 29, 40, 79, 44, 9, 33, 58, 79, 70, 96, 19, 85, 6, 54, 27, 20, 64, 30, 54, 25,
                       15, 72, 42, 66, 65, 91], 3226),
    ("default", 2, 4, [1060, 413], 3300),
    ("default", 2, 4, [3, 2, 4, 4, 4, 1, 3, 4, 3, 1, 3, 3, 4, 3, 1, 1, 3, 4, 3, 1], 437),
    ("default", 2, 1, [24, 9, 30, 6, 32, 14, 13, 20, 1, 33], 762),
    ("tiny2", 30, 2, [1] * 8, 1423),
    ("tiny2", 30, 2, [36, 48, 37], 2893),
    ("tiny2", 30, 2, [6, 16, 7, 2, 11, 16, 12, 8], 2686),
    ("tiny2", 30, 1, [10, 13, 41, 29, 9, 43, 47], 4330),
    ("tiny", 2, 0, [40], 1989),
    ("tiny", 2, 0, [1] * 8, 1591),
    ("tiny", 30, 0, [36, 48, 37], 4925),
    ("tiny", 30, 0, [6, 16, 7, 2, 11, 16, 12, 8], 4214),
    ("tiny", 2, 0, [1024], 33477),
    ("tiny", 150, 0, [10, 13, 41, 29, 9, 43, 47], 7757),
]


@pytest.mark.parametrize("name, latency, held, lengths, cycles", MEASURED)
def test_measured(name, latency, held, lengths, cycles):
    assert perf.predict(TEST_CONFIGS[name], lengths, latency=latency, arbiter_held=held).cycles == cycles


# --- the constants are the units' ---------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(TEST_CONFIGS))
@pytest.mark.parametrize("latency", [0, 3])
def test_timing_matches_units(name, latency):
    cfg = TEST_CONFIGS[name]
    t = perf.timing(cfg, latency)
    core = AttentionCore(cfg)
    assert t.bpk == cfg.beats_per_key
    assert t.logit_latency == core.logit_latency
    assert t.weight_latency == TileBuffer.latency + Exp2(cfg).latency
    assert t.pv_latency == PVAccumulator(cfg).latency
    assert t.memory_latency == KVBank.latency + latency
    assert perf.BANK_LATENCY == KVBank.latency
    assert perf.ISSUE == AttentionCore.issue_latency
    assert (t.outstanding, t.k_queue) == (AttentionCore.outstanding, core.k_queue)
    assert t.norm_latency == Normalizer(cfg).latency
    assert t.merge_latency == len(node_stages(cfg))
    assert TreeNode(cfg).latency == t.merge_latency + SkidBuffer.latency
    assert ScaleLookup.latency == 1 and SkidBuffer.latency == 1
    assert t.partial_slice == 0 and perf.timing(cfg, latency, True).partial_slice == SkidBuffer.latency
    assert t.request_slice == 0
    assert perf.timing(cfg, latency, request_slices=True).request_slice == SkidBuffer.latency
    # The single-segment latency the core documents follows from the same constants.
    n = 3 * cfg.tile + 1
    assert core.segment_latency(n, memory_latency=t.memory_latency) == (
        perf.ISSUE + t.memory_latency + cfg.tile * t.bpk - 1 + t.logit_latency + t.weight_latency
        + 1 + n * t.bpk - 1 + t.pv_latency + t.bpk - 1)


@pytest.mark.parametrize("cfg", [PRESETS["tiny"], TINY2, TINY2.replace(cores=1), TEST_CONFIGS["odd"],
                                 TEST_CONFIGS["odd"].replace(cores=1)],
                         ids=["tiny", "tiny2", "tiny2_1", "odd", "odd1"])
def test_timing_matches_top(cfg):
    """The downstream registers the model counts are the top's: the arbiter (not for a lone core
    with the compact pipeline) and the final skid buffer (not with the compact pipeline)."""
    t = perf.timing(cfg)
    names = {name for _, name, _ in Fragment.get(LeanAttention(cfg), None).subfragments}
    assert ("arbiter" in names) == t.arbiter == (cfg.cores > 1 or cfg.pipeline == "full")
    assert ("final_skid" in names) == t.final_slice == (cfg.pipeline == "full")
    assert {"scales", "norm"} <= names


def request_transfers(cfg, keys, gaps, *, sliced):
    """A bank's request port (a :class:`KVBank`), with ``sliced`` behind a :class:`SkidBuffer`,
    under ``amaranth.sim``: request ``j`` of ``keys[j]`` keys is offered ``gaps[j]`` cycles after
    the one before was taken (request 0 from cycle ``gaps[0]``), every beat is taken at once.
    Returns the cycles of the requests' transfers into the port, into the bank and of their first
    beats."""
    m = Module()
    m.submodules.bank = bank = KVBank(cfg, bank_keys=8)
    port = bank.i_req
    if sliced:
        m.submodules.skid = skid = SkidBuffer(shape=port.payload.shape())
        wiring.connect(m, skid.o_data, bank.i_req)
        port = skid.i_data
    issued, reach, first = [], [], []
    starts = set(np.cumsum([0] + [k * cfg.beats_per_key for k in keys[:-1]]).tolist())

    async def bench(ctx):
        ctx.set(bank.o_data.ready, 1)
        cycle, beats = 0, 0
        while len(first) < len(keys):
            j = len(issued)
            offer = j < len(keys) and cycle >= (issued[-1] + 1 if j else 0) + gaps[j]
            ctx.set(port.valid, offer)
            if offer:
                ctx.set(port.payload.keys, keys[j])
            _, _, ready, into, out = await ctx.tick().sample(port.ready, bank.i_req.valid & bank.i_req.ready,
                                                              bank.o_data.valid)
            if offer and ready:
                issued.append(cycle)
            if into:
                reach.append(cycle)
            if out:
                if beats in starts:
                    first.append(cycle)
                beats += 1
            cycle += 1
            assert cycle < 100 * len(keys) * cfg.beats_per_key

    sim = Simulator(m)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    return issued, reach, first


@pytest.mark.parametrize("name", ["tiny", "default"])
@pytest.mark.parametrize("sliced", [False, True], ids=["plain", "request_slices"])
def test_request_rule_matches_units(name, sliced):
    """The model's rule for a port's requests (:func:`perf._request`: the core's transfer, the
    bank's, the bank's first read) equals a :class:`KVBank` simulated alone, and with a
    :class:`SkidBuffer` in front of it as ``request_slices`` puts it: requests of 1 to 4 keys,
    offered back to back or after gaps of up to 20 cycles, so that the slice fills, holds two and
    drains."""
    cfg = PRESETS[name]
    t = perf.timing(cfg, 0, request_slices=sliced)
    for seed in range(4):
        rng = random.Random(seed)
        keys = [rng.randint(1, 4) for _ in range(40)]
        gaps = [rng.choice([0, 0, 0, 0, 1, 2, 5, 20]) for _ in keys]
        issued, reach, first = request_transfers(cfg, keys, gaps, sliced=sliced)
        segs = [SimpleNamespace(keys=k) for k in keys]
        model = ([], [], [])
        for j, gap in enumerate(gaps):
            perf._request(t, segs, j, (model[0][-1] + 1 if j else 0) + gap, *model)
        bank_first = [b + t.memory_latency - 1 for b in model[2]]
        assert (issued, reach, first) == (model[0], model[1], bank_first), f"seed {seed}"
        if sliced:      # the slice held two requests, so the core waited for it
            assert any(issued[j] > issued[j - 1] + 1 + gaps[j] for j in range(1, len(keys)))


@pytest.mark.parametrize("dsp_bits", [9, 16, 17, 18, 27])
@pytest.mark.parametrize("cycles", [1, 2, 3, 8, 32])
def test_phases_match_sliced_products(dsp_bits, cycles):
    for x_range, y_range, count in [((-(1 << 21), 1 << 21), (0, (1 << 16) - 1), 1),
                                    ((0, 1 << 16), (0, (1 << 16) - 1), 1),
                                    ((-(1 << 26), (1 << 26) - 1), (0, (1 << 17) - 1), 4),
                                    ((-5, 5), (0, 3), 3)]:
        plan = SlicedProducts(x_range=x_range, y_range=y_range, count=count, dsp_bits=dsp_bits, cycles=cycles)
        assert perf._phases(x_range, y_range, dsp_bits, cycles, count) == plan.phases


# --- the closed formulas equal the model ----------------------------------------------------------------

FORMULA_CONFIGS = {
    **PRESETS,
    "tiny2": TINY2,
    "tiny2_compact": TINY2.replace(pipeline="compact"),
    "tiny4": TINY2.replace(cores=4, norm_cycles=2, max_heads=64),
    "tiny4_compact": TINY2.replace(cores=4, norm_cycles=2, max_heads=64, pipeline="compact"),
    "default_r3": PRESETS["default"].replace(norm_cycles=3),
    "default_c1": PRESETS["default"].replace(cores=1),
}


#: The register slice options of LeanAttention, and all three with its registered grant (the
#: board's options with block RAM), as keyword arguments of the model.
SLICES = {
    "plain":            {},
    "partial_slices":   {"partial_slices": True},
    "request_slices":   {"request_slices": True},
    "both_slices":      {"partial_slices": True, "request_slices": True},
    "board":            {"partial_slices": True, "request_slices": True, "registered_grant": True},
}


@pytest.mark.parametrize("name", sorted(FORMULA_CONFIGS))
@pytest.mark.parametrize("latency", [0, 2, 7])
@pytest.mark.parametrize("slices", SLICES.values(), ids=SLICES.keys())
def test_whole_heads_formula(name, latency, slices):
    cfg = FORMULA_CONFIGS[name]
    for m in (1, 2, 3):
        heads = m * cfg.cores
        for n in [1, 2, 3, 4, 5, 6, 9, cfg.tile - 1, cfg.tile, cfg.tile + 1, 2 * cfg.tile + 3]:
            predicted = perf.predict(cfg, [n] * heads, latency=latency, **slices).cycles
            formula = perf.whole_heads_cycles(cfg, heads, n, latency=latency, **slices)
            assert formula == predicted, (m, n)


@pytest.mark.parametrize("name", sorted(FORMULA_CONFIGS))
@pytest.mark.parametrize("latency", [0, 2, 7])
@pytest.mark.parametrize("slices", SLICES.values(), ids=SLICES.keys())
def test_split_heads_formula(name, latency, slices):
    cfg = FORMULA_CONFIGS[name]
    for heads in [h for h in (1, 2, 4) if h < cfg.cores and cfg.cores % h == 0]:
        step = cfg.cores // heads
        for n in range(step, 3 * cfg.tile * step + 1, step * 3):
            predicted = perf.predict(cfg, [n] * heads, latency=latency, **slices).cycles
            formula = perf.split_heads_cycles(cfg, heads, n, latency=latency, **slices)
            assert formula == predicted, (heads, n)


def test_request_slices_one_cycle():
    """The request slices move a core's first K and first V beat one cycle later; the later
    requests reach their banks before the banks are done with the ones before, so ragged jobs of
    short and long heads at latencies 0 to 30 take exactly one cycle more too (at latencies far
    beyond, 150 at default, where the request slots bound the K side of short heads, some take
    two or three: ``test_rtl_request_slices``)."""
    for name in ("tiny", "default"):
        cfg = PRESETS[name]
        rng = np.random.default_rng(43)
        for latency in (0, 2, 30):
            for _ in range(20):
                lengths = rng.integers(1, int(rng.choice([3, 10, 4 * cfg.tile])), int(rng.integers(1, 12)))
                plain = perf.predict(cfg, lengths, latency=latency)
                sliced = perf.predict(cfg, lengths, latency=latency, request_slices=True)
                assert sliced.cycles == plain.cycles + 1, list(lengths)
                for a, b in zip(plain.cores, sliced.cores):
                    if a.segments:
                        assert (b.segments[0].k_first, b.segments[0].v_first) == (
                            a.segments[0].k_first + 1, a.segments[0].v_first + 1), list(lengths)


def test_one_head_any_length():
    """One head of any n >= cores takes as long as one of cores * ceil(n / cores) keys: the
    largest share decides."""
    for cfg in (*PRESETS.values(), TINY2):
        for n in range(cfg.cores, 12 * cfg.tile, 5):
            rounded = cfg.cores * -(-n // cfg.cores)
            formula = perf.split_heads_cycles if cfg.cores > 1 else perf.whole_heads_cycles
            assert perf.predict(cfg, [n]).cycles == formula(cfg, 1, rounded), n


def test_formula_errors():
    cfg = PRESETS["default"]
    with pytest.raises(ValueError, match=r"heads must be a multiple of cores \(4\), not 6"):
        perf.whole_heads_cycles(cfg, 6, 10)
    with pytest.raises(ValueError, match=r"heads must divide cores \(4\) and be fewer, not 4"):
        perf.split_heads_cycles(cfg, 4, 10)
    with pytest.raises(ValueError, match=r"n must be a multiple of cores / heads \(2\), not 5"):
        perf.split_heads_cycles(cfg, 2, 5)
    with pytest.raises(ValueError, match="n must be at least 1, not 0"):
        perf.whole_heads_cycles(cfg, 4, 0)
    with pytest.raises(TypeError, match="heads must be an integer"):
        perf.whole_heads_cycles(cfg, 4.0, 3)
    with pytest.raises(ValueError, match="needs head_dim / lanes >= 5"):
        perf.whole_heads_cycles(cfg.replace(lanes=16, norm_cycles=2), 4, 3)
    with pytest.raises(ValueError, match="lanes >= 7 when norm_cycles > 1 and partial_slices, not 4"):
        perf.whole_heads_cycles(cfg.replace(lanes=16, norm_cycles=2), 4, 3, partial_slices=True)


# --- what a prediction holds --------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["tiny", "tiny2", "default", "wide"])
@pytest.mark.parametrize("slices", SLICES.values(), ids=SLICES.keys())
def test_timeline(name, slices):
    """Event order inside every segment, cut flags and merges as the partition says, the last head
    out at the job's end, and the value beats counted once."""
    cfg = TEST_CONFIGS[name]
    rng = np.random.default_rng(3)
    for _ in range(10):
        lengths = [int(n) for n in rng.integers(1, 4 * cfg.tile, int(rng.integers(1, 12)))]
        pred = perf.predict(cfg, lengths, **slices)
        shares = partition(lengths, cfg.cores)
        spans = {}
        for c, segs in enumerate(shares):
            for s in segs:
                spans.setdefault(s.head, []).append(c)
        assert max(pred.head_done.values()) == pred.cycles
        assert sorted(pred.head_done) == list(range(len(lengths)))
        assert sum(core.busy for core in pred.cores) == sum(lengths) * cfg.beats_per_key
        expected = sorted((lv, ix, h) for h, cs in spans.items() for lv, ix in tree_merges(cs[0], cs[-1],
                                                                                          cfg.cores))
        assert sorted((g.level, g.index, g.head) for g in pred.merges) == expected
        for core, segs in zip(pred.cores, shares):
            assert [(s.head, s.start, s.stop) for s in core.segments] == [(s.head, s.start, s.stop)
                                                                         for s in segs]
            prev = None
            for s in core.segments:
                assert s.cut == (len(spans[s.head]) > 1)
                assert s.k_request < s.k_first <= s.k_last < s.tile_close[-1] < s.v_last
                assert s.v_first < s.v_last < s.partial_first < s.partial_end
                assert s.v_last - s.v_first + 1 >= s.keys * cfg.beats_per_key
                assert s.partial_end - s.partial_first + 1 >= cfg.beats_per_key
                if prev is not None:
                    assert s.k_first > prev.k_last and s.v_first > prev.partial_end
                prev = s
        assert 0 < pred.efficiency < 1
        assert pred.cycles >= pred.ideal_cycles


def test_schedules():
    """The same datapath fed by the other schedules: one head per core is lean when heads ==
    cores; a head in ``cores`` chunks is lean's shares when cores divide its length; whole heads
    leave cores idle where lean does not."""
    cfg = PRESETS["default"]
    fa2, fd = cfg.replace(schedule="fa2"), cfg.replace(schedule="flashdecoding")
    equal = [300] * cfg.cores
    assert perf.predict(fa2, equal).cycles == perf.predict(cfg, equal).cycles
    assert perf.predict(fd, [400]).cycles == perf.predict(cfg, [400]).cycles
    ragged = [2048, 64, 64]
    whole = perf.predict(fa2, ragged)
    lean = perf.predict(cfg, ragged)
    assert whole.cycles > 3 * lean.cycles
    assert all(not s.cut for core in whole.cores for s in core.segments)
    chunked = perf.predict(cfg.replace(schedule="flashdecoding", chunks=2), ragged)
    assert [len(core.segments) for core in chunked.cores] == [1, 1, 2, 2]
    assert chunked.cycles > lean.cycles


def test_arbiter_pointer():
    """The arbiter's round-robin pointer carries over from the job before: with short heads it
    decides which core's partial waits, and so the cycles (the RTL runs check the chaining)."""
    cfg = TINY2
    assert [perf.predict(cfg, [2, 1, 2], arbiter_held=h).cycles for h in range(3)] == [674, 654, 654]
    assert perf.predict(cfg, [2, 1, 2]).arbiter_held in range(3)


def test_large_job_is_fast():
    cfg = PRESETS["wide"].replace(cores=16)
    start = time.perf_counter()
    pred = perf.predict(cfg, [8192] * 64)
    elapsed = time.perf_counter() - start
    assert elapsed < 1.0, elapsed
    assert pred.efficiency > 0.99
    assert len(pred.head_done) == 64


# --- errors -------------------------------------------------------------------------------------------

def test_predict_errors():
    cfg = TINY2
    with pytest.raises(ValueError, match="every head length must be at least 1, not 0"):
        perf.predict(cfg, [3, 0, 2])
    with pytest.raises(ValueError, match="a job needs at least one head"):
        perf.predict(cfg, [])
    with pytest.raises(TypeError, match="lengths must be integers, not float64"):
        perf.predict(cfg, [1.5, 2.0])
    with pytest.raises(TypeError, match="cfg must be an AttentionConfig"):
        perf.predict({"cores": 2}, [1])
    with pytest.raises(ValueError, match="latency must be at least 0, not -1"):
        perf.predict(cfg, [4], latency=-1)
    with pytest.raises(TypeError, match="latency must be an integer"):
        perf.predict(cfg, [4], latency=2.5)
    with pytest.raises(TypeError, match="partial_slices must be a bool, not 1"):
        perf.predict(cfg, [4], partial_slices=1)
    with pytest.raises(TypeError, match="partial_slices must be a bool, not None"):
        perf.timing(cfg, 2, None)
    with pytest.raises(TypeError, match="request_slices must be a bool, not 1"):
        perf.predict(cfg, [4], request_slices=1)
    with pytest.raises(TypeError, match="request_slices must be a bool, not 'yes'"):
        perf.whole_heads_cycles(cfg, 2, 3, request_slices="yes")
    with pytest.raises(ValueError, match=r"arbiter_held must be in the range 0..2, not 3"):
        perf.predict(cfg, [4], arbiter_held=3)
    with pytest.raises(ValueError, match="shares must hold one segment list per core"):
        perf.predict(cfg, [4], shares=[[]])
    with pytest.raises(ValueError, match="the segments of head 0 cover 3 keys, not 4"):
        perf.predict(cfg, [4], shares=partition([3], 2))


def write_job(path, job_lengths, *, d=32, n_max=None, **changes):
    """A job file of float arrays (ones), with some arrays replaced (or left out: None)."""
    job_lengths = np.asarray(job_lengths)
    b, h = job_lengths.shape
    n_max = n_max or int(job_lengths.max())
    arrays = {"q": np.ones((b, h, d), np.float32), "k": np.ones((b, h, n_max, d), np.float32),
              "v": np.ones((b, h, n_max, d), np.float32), "lengths": job_lengths}
    arrays.update(changes)
    np.savez(path, **{k: v for k, v in arrays.items() if v is not None})
    return path


def test_read_job_lengths(tmp_path):
    cfg = PRESETS["tiny"]
    # Beyond max_heads (8) and max_context (1024): the model takes any shape.
    path = write_job(tmp_path / "big.npz", [[2000] * 6, [1] * 6])
    assert perf.read_job_lengths(path, cfg) == [2000] * 6 + [1] * 6
    cases = [
        ({"lengths": np.array([[3, 0]])}, r"lengths\[0, 1\] must be in 1..Nmax \(3\), not 0"),
        ({"lengths": np.array([[3, 4]])}, r"lengths\[0, 1\] must be in 1..Nmax \(3\), not 4"),
        ({"v": None}, "the job has no array 'v'"),
        ({"q": np.ones((1, 2, 16), np.float32)}, "'q' has head_dim 16 but the configuration has head_dim 32"),
        ({"k": np.ones((1, 2, 3), np.float32)}, r"'k' must have shape \(B, H, Nmax, d\)"),
        ({"v": np.ones((1, 2, 4, 32), np.float32)}, "'v' must have the shape of 'k'"),
        ({"lengths": np.array([3.0, 2.0])}, r"'lengths' must have shape \(B, H\)"),
        ({"lengths": np.array([[3.0, 2.0]])}, "'lengths' must hold integers, not float64"),
        ({"q": np.ones((1, 2, 32), bool)}, "'q' must hold integers or float16/32/64, not bool"),
    ]
    for k, (changes, message) in enumerate(cases):
        path = write_job(tmp_path / f"bad{k}.npz", [[3, 2]], n_max=3, **changes)
        with pytest.raises(JobError, match=message):
            perf.read_job_lengths(path, cfg)
    with pytest.raises(JobError, match="no job file at"):
        perf.read_job_lengths(tmp_path / "missing.npz", cfg)
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(JobError, match="is not a readable .npz job file"):
        perf.read_job_lengths(tmp_path / "junk.npz", cfg)


# --- the command line ---------------------------------------------------------------------------------

def cli(argv):
    parser = argparse.ArgumentParser(prog="leanattn")
    perf.add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["perf", *argv])
    return args.func(args)


def test_cli_json(tmp_path, capsys):
    lengths = [[100, 3, 40]]
    path = write_job(tmp_path / "job.npz", lengths)
    assert cli([str(path), "--preset", "tiny", "--latency", "5", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    pred = perf.predict(PRESETS["tiny"], [100, 3, 40], latency=5)
    assert out["cycles"] == pred.cycles
    assert out["ideal_cycles"] == pred.ideal_cycles == 143 * 32 / PRESETS["tiny"].cores
    assert out["efficiency"] == pytest.approx(pred.ideal_cycles / pred.cycles)
    assert out["busy"] == [core.busy for core in pred.cores]
    assert (out["heads"], out["keys"], out["latency"], out["config"]) == (3, 143, 5, "tiny")
    assert "cores" not in out
    assert cli([str(path), "--preset", "tiny", "--json", "--timeline"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [len(core["segments"]) for core in out["cores"]] == [3]          # one core: every head
    done = perf.predict(PRESETS["tiny"], [100, 3, 40]).head_done
    assert out["head_done"] == {str(h): c for h, c in done.items()}


def test_cli_table(tmp_path, capsys):
    path = write_job(tmp_path / "job.npz", [[512] * 8], d=64)
    assert cli([str(path), "--set", "max_heads=4"]) == 0       # beyond max_heads: still predicted
    text = capsys.readouterr().out
    pred = perf.predict(PRESETS["default"], [512] * 8)
    assert text.splitlines()[0].startswith("leanattn perf: default + overrides, 8 heads, 4096 keys")
    assert f"cycles {pred.cycles}   ideal 8192   efficiency {pred.efficiency:.3f}" in text


def test_cli_errors(tmp_path):
    path = write_job(tmp_path / "job.npz", [[3, 0]], n_max=3)
    with pytest.raises(UsageError, match=r"lengths\[0, 1\] must be in 1..Nmax \(3\), not 0"):
        cli([str(path), "--preset", "tiny"])
    good = write_job(tmp_path / "good.npz", [[3]])
    with pytest.raises(UsageError, match="--latency must be at least 0, not -2"):
        cli([str(good), "--preset", "tiny", "--latency", "-2"])
    with pytest.raises(UsageError, match="invalid configuration: lanes must divide head_dim"):
        cli([str(good), "--set", "lanes=7"])
