# amaranth: UnusedElaboratable=no
"""LeanAttention end to end: the generated Verilog with its reference KV memory, jobs after jobs,
bit-exact with the golden model on Icarus Verilog and Verilator, under memory latency and random
stalls on every stream; bad jobs rejected with their error code and no output, the next job right."""

import numpy as np
import pytest

from leanattn.hdl.dsp import ECP5, write_mult18x18d_model
from leanattn.hdl.jobload import ERR_HEADS, ERR_LENGTH, ERR_QUERY
from leanattn.hdl.layouts import partial_layout, routed_partial_layout
from leanattn.hdl.normalize import Normalizer
from leanattn.hdl.top import LeanAttention
from leanattn.sim import perf, synthkv
from leanattn.sim.cocotb_util import (
    AMARANTH_LINT_WAIVERS,
    HIERARCHY_LINT_WAIVERS,
    design_verilog,
    verilator_lint,
)
from leanattn.sim.configs import TEST_CONFIGS
from leanattn.sim.jobgen import random_int_job
from leanattn.sim.stream_bench import bench_dir
from leanattn.sim.system import BadJob, ideal_cycles, run_system
from leanattn.sim.systop import SystemBench, tagged_output_layout

NAMES = ["tiny", "default", "odd"]


def job_shapes(cfg, rng, count, *, max_keys, long_share=1 / 3):
    """Head lengths of ``count`` jobs: one head over every core, many short heads, ragged mixes,
    length 1, tiles cut at every position, and the longest context the budget allows. A random
    job has heads of up to ``max_keys`` keys with probability ``long_share``, else of up to three
    tiles or up to four keys."""
    top = min(cfg.max_context, max_keys)
    shapes = [[top], [1], [cfg.tile - 1, cfg.tile + 1, 1, 2 * cfg.tile],
              list(range(1, min(cfg.max_heads, 8) + 1))]
    while len(shapes) < count:
        heads = int(rng.integers(1, cfg.max_heads + 1))
        kind = 0 if rng.random() < long_share else 1 + rng.integers(2)
        hi = top if kind == 0 else min(top, 3 * cfg.tile) if kind == 1 else min(top, 4)
        lengths = rng.integers(1, hi + 1, heads)
        while lengths.sum() > max_keys:
            lengths = lengths[:-1] if len(lengths) > 1 else np.minimum(lengths, max_keys)
        shapes.append([int(n) for n in lengths])
    return shapes[:count]


def jobs_for(cfg, seed, count, *, max_keys, bad=True, long_share=1 / 3):
    rng = np.random.default_rng(seed)
    jobs = [random_int_job(cfg, lengths, rng, spread_bits=int(rng.integers(0, 6)))
            for lengths in job_shapes(cfg, rng, count, max_keys=max_keys, long_share=long_share)]
    if bad:
        bads = [BadJob([3, 0, 2], 3 * cfg.beats_per_key, ERR_LENGTH),
                BadJob([cfg.max_context + 1], cfg.beats_per_key, ERR_LENGTH),
                BadJob([1] * (cfg.max_heads + 1), (cfg.max_heads + 1) * cfg.beats_per_key, ERR_HEADS),
                BadJob([2, 2], 2 * cfg.beats_per_key - 1, ERR_QUERY)]
        for k, job in enumerate(bads):
            jobs.insert(1 + 2 * k, job)
    return jobs


def check_cycles(cfg, jobs, cycles):
    """Every job within its documented cycle bound (bad jobs: a few cycles)."""
    for job, measured in zip(jobs, cycles):
        if isinstance(job, BadJob):
            assert measured <= len(job.lengths) + job.query_beats + 8
        else:
            bound = LeanAttention.cycle_bound(cfg, job.lengths)
            assert measured <= bound, (list(job.lengths), measured, bound, ideal_cycles(cfg, job.lengths))


#: The fast tier runs tiny on Verilator; every other pair is in the slow tier.
SYSTEM_PAIRS = [pytest.param(name, simulator, marks=() if (name, simulator) == ("tiny", "verilator")
                             else pytest.mark.slow)
                for name in NAMES for simulator in ("verilator", "icarus")]


@pytest.mark.parametrize("name, simulator", SYSTEM_PAIRS)
def test_jobs_bit_exact(request, name, simulator):
    """Good and bad jobs in a row: with no stalls (cycles checked against the bound), then with
    memory latency and random stalls everywhere."""
    cfg = TEST_CONFIGS[name]
    count = 8 if simulator == "verilator" else 4
    jobs = jobs_for(cfg, 100 + NAMES.index(name), count, max_keys=4 * cfg.tile * cfg.cores)
    _, cycles, _ = run_system(cfg, jobs, simulator=simulator, build_dir=bench_dir(request) / "plain",
                              patterns=[("none", "none")], seed=1)
    check_cycles(cfg, jobs, cycles)
    run_system(cfg, jobs, simulator=simulator, build_dir=bench_dir(request) / "stalls", latency=3,
               stall_rate=64, patterns=[("random", "random")], seed=2)


#: The comparison schedules on the same top: (preset, schedule, chunks, simulator).
SCHEDULE_CASES = [
    pytest.param("tiny", "fa2", 0, "verilator", marks=pytest.mark.slow),
    pytest.param("tiny", "flashdecoding", 0, "icarus", marks=pytest.mark.slow),
    pytest.param("tiny", "fa2", 0, "icarus", marks=pytest.mark.slow),
    pytest.param("default", "fa2", 0, "verilator", marks=pytest.mark.slow),
    pytest.param("default", "flashdecoding", 0, "verilator", marks=pytest.mark.slow),
    pytest.param("default", "flashdecoding", 2, "verilator", marks=pytest.mark.slow),
    pytest.param("odd", "flashdecoding", 0, "verilator", marks=pytest.mark.slow),
]


@pytest.mark.parametrize("name, schedule, chunks, simulator", SCHEDULE_CASES)
def test_schedules_bit_exact(request, name, schedule, chunks, simulator):
    """fa2 and flashdecoding: good and bad jobs in a row, bit-exact with the golden model running
    the same schedule; with no stalls every job takes the cycles of the cycle model, then again
    with memory latency and random stalls everywhere."""
    cfg = TEST_CONFIGS[name].replace(schedule=schedule, chunks=chunks)
    count = 8 if simulator == "verilator" else 4
    jobs = jobs_for(cfg, 300 + NAMES.index(name), count, max_keys=4 * cfg.tile * cfg.cores)
    _, cycles, _ = run_system(cfg, jobs, simulator=simulator, build_dir=bench_dir(request) / "plain",
                              patterns=[("none", "none")], seed=1)
    held = 0
    for job, measured in zip(jobs, cycles):
        if isinstance(job, BadJob):
            assert measured <= len(job.lengths) + job.query_beats + 8
            continue
        pred = perf.predict(cfg, job.lengths, latency=0, arbiter_held=held)
        assert measured == pred.cycles, list(job.lengths)
        held = pred.arbiter_held
    run_system(cfg, jobs, simulator=simulator, build_dir=bench_dir(request) / "stalls", latency=3,
               stall_rate=64, patterns=[("random", "random")], seed=2)


PARTIAL, REQUEST, GRANT = ({"partial_slices": True}, {"request_slices": True}, {"registered_grant": True})

#: (configuration, LeanAttention options, seed) of the runs with options; the last is the board's
#: set with block RAM (BoardTop on the ECP5).
OPTION_CASES = [
    ("tiny", PARTIAL, 500),
    pytest.param("default", PARTIAL, 501, marks=pytest.mark.slow),
    ("tiny", REQUEST, 700),
    pytest.param("default", PARTIAL | REQUEST, 701, marks=pytest.mark.slow),
    pytest.param("tiny2", GRANT, 900, marks=pytest.mark.slow),
    pytest.param("tiny2", PARTIAL | GRANT, 901, marks=pytest.mark.slow),
    pytest.param("default", PARTIAL | REQUEST | GRANT, 902, marks=pytest.mark.slow),
]


def check_model_cycles(cfg, jobs, cycles, options):
    """Every good job in the cycle model's cycles for LeanAttention ``options`` (no stalls, memory
    latency 0; the arbiter's resting grant carried from job to job); bad jobs in a few cycles."""
    held = 0
    for job, measured in zip(jobs, cycles):
        if isinstance(job, BadJob):
            assert measured <= len(job.lengths) + job.query_beats + 8
            continue
        pred = perf.predict(cfg, job.lengths, latency=0, arbiter_held=held, **options)
        assert measured == pred.cycles, list(job.lengths)
        held = pred.arbiter_held


@pytest.mark.parametrize("name, options, seed", OPTION_CASES)
def test_options_bit_exact(request, name, options, seed):
    """LeanAttention with register slices (``partial_slices``, ``request_slices``) or the registered
    grant: good and bad jobs in a row, with no stalls (every good job in the cycles of the cycle
    model with the same options), then with memory latency and random stalls on every stream, the
    output's and the request ports' too (the slices fill and hold): bit-exact."""
    cfg = TEST_CONFIGS[name]
    jobs = jobs_for(cfg, seed, 8, max_keys=4 * cfg.tile * cfg.cores)
    _, cycles, _ = run_system(cfg, jobs, simulator="verilator", build_dir=bench_dir(request) / "plain",
                              patterns=[("none", "none")], seed=1, **options)
    check_model_cycles(cfg, jobs, cycles, options)
    run_system(cfg, jobs, simulator="verilator", build_dir=bench_dir(request) / "stalls", latency=3,
               stall_rate=64, patterns=[("random", "random")], seed=2, **options)


@pytest.mark.parametrize("simulator", [pytest.param("verilator"),
                                       pytest.param("icarus", marks=pytest.mark.slow)])
def test_ecp5_bit_exact(request, simulator):
    """The accelerator as the ECP5 board builds it: elaborated for the ECP5 (the normalizer's and
    every core's PV products in MULT18X18D blocks with their own registers, simulated with the
    block's model) with the board's options (register slices, registered grant). Good and bad
    jobs in a row: with no stalls in the cycles of the cycle model, then with memory latency and
    random stalls: bit-exact."""
    cfg = TEST_CONFIGS["default"]
    options = PARTIAL | REQUEST | GRANT
    build = bench_dir(request)
    text = design_verilog(LeanAttention(cfg, **options), toplevel="top", platform=ECP5())
    blocks = Normalizer(cfg).lane_products.multipliers + 1 + cfg.cores * cfg.lanes  # + 1: the factor
    assert text.count("MULT18X18D #(") == blocks
    target = dict(platform=ECP5(), extra_sources=[write_mult18x18d_model(build)])
    count = 6 if simulator == "verilator" else 3
    jobs = jobs_for(cfg, 1100, count, max_keys=4 * cfg.tile * cfg.cores)
    _, cycles, _ = run_system(cfg, jobs, simulator=simulator, build_dir=build / "plain",
                              patterns=[("none", "none")], seed=1, **options, **target)
    check_model_cycles(cfg, jobs, cycles, options)
    run_system(cfg, jobs, simulator=simulator, build_dir=build / "stalls", latency=3,
               stall_rate=64, patterns=[("random", "random")], seed=2, **options, **target)


#: (preset, simulator, jobs, most keys per job) of the long runs. A tenth of the random jobs have
#: heads up to that many keys, the others up to three tiles or four keys; the KV load (one word
#: per cycle) costs more cycles than the job itself, so short jobs are what makes hundreds cheap.
#: Icarus (1-3k cycles/s on the whole system) runs the jobs of test_jobs_bit_exact only.
MANY_JOBS = [("tiny", "verilator", 200, 1024), ("default", "verilator", 200, 4096)]


@pytest.mark.slow
@pytest.mark.parametrize("name, simulator, count, max_keys", MANY_JOBS)
def test_many_jobs(request, name, simulator, count, max_keys):
    """Hundreds of random jobs per preset (fewer on Icarus), good and bad, with memory latency 5
    and random stalls on every stream: every output bit-exact, nothing lost or duplicated."""
    cfg = TEST_CONFIGS[name]
    jobs = jobs_for(cfg, 7 + NAMES.index(name), count, max_keys=min(max_keys, cfg.max_context),
                    long_share=0.1)
    run_system(cfg, jobs, simulator=simulator, build_dir=bench_dir(request), latency=5, stall_rate=40,
               patterns=[("random", "random")], seed=3)


#: Long contexts through the synthetic KV memory (every element a function of its address, no
#: load): (preset, schedule, job lengths). ``wide`` holds a head of 65536 keys and a ragged mix
#: of 63008; tiny checks the mechanism on every schedule.
SYNTHETIC_CASES = [
    pytest.param("tiny", "lean", [[1024], [5, 300, 1, 77], [1] * 8], marks=pytest.mark.slow),
    pytest.param("tiny", "flashdecoding", [[1024], [5, 300, 1, 77]], marks=pytest.mark.slow),
    pytest.param("wide", "lean", [[65536], [40000, 7, 1, 20000, 3000]], marks=pytest.mark.slow),
]


@pytest.mark.parametrize("name, schedule, shapes", SYNTHETIC_CASES)
def test_long_contexts(request, name, schedule, shapes):
    """Jobs up to 64k keys on Verilator, served by the synthetic memory: bit-exact, and with no
    stalls every job takes the cycles of the cycle model (the synthetic banks keep the stored
    banks' timing); then again with latency and random stalls on every stream."""
    cfg = TEST_CONFIGS[name].replace(schedule=schedule)
    rng = np.random.default_rng(41)
    jobs = [synthkv.synthetic_job(cfg, lengths, rng)[0] for lengths in shapes]
    jobs.insert(1, BadJob([2, cfg.max_context + 1], 2 * cfg.beats_per_key, ERR_LENGTH))
    _, cycles, _ = run_system(cfg, jobs, simulator="verilator", build_dir=bench_dir(request) / "plain",
                              latency=2, synthetic=True)
    held = 0
    for job, measured in zip(jobs, cycles):
        if isinstance(job, BadJob):
            continue
        pred = perf.predict(cfg, job.lengths, latency=2, arbiter_held=held)
        assert measured == pred.cycles, list(job.lengths)
        held = pred.arbiter_held
    run_system(cfg, jobs, simulator="verilator", build_dir=bench_dir(request) / "stalls", latency=5,
               stall_rate=48, patterns=[("random", "random")], seed=5, synthetic=True)


#: Alias wires of the whole top, by name. Yosys keeps the name of a signal it merged into another
#: as an undriven-reader wire beside it: the segment generator's ``head`` register is emitted as
#: ``desc__addr`` (the read port it drives) and ``keys`` / ``rest`` fold into the segment payload;
#: the scheduler's start streams (``start_<c>``) into the generators' inputs, and with one core
#: its one-bit ``pending`` into ``start_0``'s valid; the plain ports ``o_cross`` / ``i_cross`` /
#: ``i_up_cross`` (and ``o_scanned``, a pulse for the scheduler's own tests) leave a
#: parent-side wire beside the instance connection, as stream ports do (HIERARCHY_LINT_WAIVERS).
#: Every other unused signal stays an error; the units are linted alone in their own tests.
TOP_ALIASES = ("head", "keys", "rest", "h", "start_*", "o_cross", "i_cross", "i_up_cross*", "o_scanned",
               "least_loaded", "chunk_first", "chunk_keys", "cut_*", "o_split", "i_up_heads*",
               "pending")
#: The leaf buffers are amaranth.lib.fifo.SyncFIFO: their level outputs and pointer
#: bookkeeping (``level``, ``r_level``, ``w_level``, ``produce``, ``consume``) are unused by a
#: stream user, and their ports leave parent-side aliases (``r_data$N``, ``w_rdy`` ...) as above.
FIFO_SIGNALS = ("level", "r_level", "w_level", "produce", "consume", "r_data*", "r_rdy*", "r_en*",
                "w_data*", "w_rdy*", "w_en*")
TOP_LINT_WAIVERS = {
    **AMARANTH_LINT_WAIVERS, **HIERARCHY_LINT_WAIVERS,
    **{("UNUSEDSIGNAL", f"Signal is not used: '{name}'"): "an alias wire (see TOP_ALIASES)"
       for name in TOP_ALIASES},
    **{("UNUSEDSIGNAL", f"Signal is not used: '{name}'"): "a FIFO signal (see FIFO_SIGNALS)"
       for name in FIFO_SIGNALS},
    ("WIDTHTRUNC", "Operator ASSIGNW expects 1 bits on the Assign RHS, but Assign RHS's SHIFTR generates*"):
        "A one-bit select at a variable offset (Amaranth bit_select: which heads merge at a tree "
        "node, whether a partial is cut under flashdecoding) is written as `x >> head` assigned to "
        "one bit: bit 0 of the shift, the selected bit, exactly.",
}


@pytest.mark.parametrize("name, schedule", [(name, "lean") for name in NAMES] +
                         [("default", "fa2"), ("default", "flashdecoding")])
def test_lint(request, name, schedule):
    path = bench_dir(request) / "lean_attention.v"
    path.parent.mkdir(parents=True, exist_ok=True)
    cfg = TEST_CONFIGS[name].replace(schedule=schedule)
    path.write_text(design_verilog(LeanAttention(cfg), toplevel="lean_attention"))
    assert verilator_lint(path, waivers=TOP_LINT_WAIVERS) == []


@pytest.mark.parametrize("name", ["tiny", "tiny2", "default"])
def test_partial_slices_structure(request, name):
    """With ``partial_slices`` a register slice per core, ``partial_slice_<c>``, none without;
    each slice carries the partial and its cut flag (the route is decided in front of it; one
    core has no route to decide); the top with them lints clean."""
    cfg = TEST_CONFIGS[name]
    assert not LeanAttention(cfg).partial_slices
    plain = design_verilog(LeanAttention(cfg), toplevel="lean_attention")
    top = LeanAttention(cfg, partial_slices=True)
    assert top.partial_slices
    sliced = design_verilog(top, toplevel="lean_attention")
    assert "partial_slice" not in plain
    assert all(f"module \\lean_attention.partial_slice_{c} (" in sliced for c in range(cfg.cores))
    assert f"partial_slice_{cfg.cores}" not in sliced
    width = routed_partial_layout(cfg).size if cfg.cores > 1 else partial_layout(cfg).size
    assert width == partial_layout(cfg).size + (cfg.cores > 1)
    for c in range(cfg.cores):
        module = sliced[sliced.index(f"module \\lean_attention.partial_slice_{c} ("):]
        module = module[:module.index("endmodule")]
        assert f"input [{width - 1}:0] i_data__payload;" in module
        assert f"output [{width - 1}:0] o_data__payload;" in module
    path = bench_dir(request) / "lean_attention.v"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(sliced)
    assert verilator_lint(path, waivers=TOP_LINT_WAIVERS) == []


@pytest.mark.parametrize("name", ["tiny", "default"])
def test_request_slices_structure(request, name):
    """With ``request_slices`` a register slice on each core's K and V requests,
    ``kreq_slice_<c>`` and ``vreq_slice_<c>``, none without; the top with them lints clean."""
    cfg = TEST_CONFIGS[name]
    assert not LeanAttention(cfg).request_slices
    plain = design_verilog(LeanAttention(cfg), toplevel="lean_attention")
    top = LeanAttention(cfg, request_slices=True)
    assert top.request_slices and not top.partial_slices
    sliced = design_verilog(top, toplevel="lean_attention")
    assert "req_slice" not in plain
    assert all(f"module \\lean_attention.{kind}req_slice_{c} (" in sliced
               for kind in "kv" for c in range(cfg.cores))
    assert f"kreq_slice_{cfg.cores}" not in sliced and f"vreq_slice_{cfg.cores}" not in sliced
    assert "partial_slice" not in sliced
    path = bench_dir(request) / "lean_attention.v"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(sliced)
    assert verilator_lint(path, waivers=TOP_LINT_WAIVERS) == []


@pytest.mark.parametrize("name", ["tiny", "tiny2"])
def test_write_slices_structure(name):
    """With the full pipeline the loader's descriptor and query writes leave a register each
    (``dwrite_slice``, ``qwrite_slice``, one-entry: no skid register), with the compact one they
    go straight; a register's payload is the write's (the cycles are the same either way:
    test_rtl_tiny_fast, test_rtl_compact)."""
    cfg = TEST_CONFIGS[name]
    verilog = design_verilog(LeanAttention(cfg), toplevel="lean_attention")
    full = cfg.pipeline == "full"
    for kind in ("dwrite", "qwrite"):
        assert (f"module \\lean_attention.{kind}_slice (" in verilog) == full
    if full:
        module = verilog[verilog.index("module \\lean_attention.qwrite_slice ("):]
        module = module[:module.index("endmodule")]
        assert "skid" not in module


@pytest.mark.parametrize("name", ["tiny2", pytest.param("default", marks=pytest.mark.slow)])
def test_registered_grant_structure(request, name):
    """With ``registered_grant`` the arbiter keeps its grant in ``sel`` instead of ``held``; the
    top lints clean."""
    cfg = TEST_CONFIGS[name]
    assert not LeanAttention(cfg).registered_grant
    top = LeanAttention(cfg, registered_grant=True)
    assert top.registered_grant and not top.partial_slices and not top.request_slices
    verilog = design_verilog(top, toplevel="lean_attention")
    module = verilog[verilog.index("module \\lean_attention.arbiter ("):]
    module = module[:module.index("endmodule")]
    assert " sel;" in module and " held;" not in module
    path = bench_dir(request) / "lean_attention.v"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(verilog)
    assert verilator_lint(path, waivers=TOP_LINT_WAIVERS) == []


def test_constructor_errors():
    with pytest.raises(TypeError, match="cfg must be an AttentionConfig"):
        LeanAttention({"head_dim": 64})
    cfg = TEST_CONFIGS["tiny"]
    for option in ("partial_slices", "request_slices", "registered_grant"):
        for value in (1, None, "yes"):
            with pytest.raises(TypeError, match=f"{option} must be a bool, not {value!r}"):
                LeanAttention(cfg, **{option: value})
        with pytest.raises(TypeError, match=f"{option} must be a bool, not 0"):
            SystemBench(cfg, bank_keys=8, **{option: 0})
        with pytest.raises(ValueError, match=f"{option} applies to the default top only"):
            SystemBench(cfg, bank_keys=8, top=LeanAttention, **{option: True})


@pytest.mark.parametrize("simulator", ["verilator", pytest.param("icarus", marks=pytest.mark.slow)])
def test_reset_mid_job(request, simulator):
    """Reset in the middle of a job -- while its KV cache loads, while K/V responses are in flight,
    while its outputs leave -- each followed by a full run of all jobs that must be exact. The
    transfer logs of the cut runs show where each reset landed."""
    cfg = TEST_CONFIGS["tiny"]
    jobs = jobs_for(cfg, 55, 3, max_keys=2 * cfg.tile * cfg.cores, bad=False)
    keys = int(sum(jobs[0].lengths))
    load = 2 * cfg.cores + 2 * keys * cfg.beats_per_key      # window bases, then K and V words
    compute = keys * cfg.beats_per_key // cfg.cores
    # Where the first job's outputs leave, from a run without stalls (the same build).
    probe = bench_dir(request) / "probe"
    run_system(cfg, jobs, simulator=simulator, build_dir=probe, latency=4, stall_rate=64, seed=9)
    layout = tagged_output_layout(cfg)
    out_cycles = [int(line.split()[2]) for line in (probe / "xfer_o_out.txt").read_text().splitlines()
                  if layout.from_bits(int(line.split()[1], 16)).job == 0]
    cuts = [load // 2, load + compute // 2, (out_cycles[0] + out_cycles[-1]) // 2]
    patterns = [("none", "none", cuts[0]), ("random", "random"), ("none", "none", cuts[1]),
                ("none", "none"), ("none", "none", cuts[2]), ("random", "random")]
    where = bench_dir(request)
    run_system(cfg, jobs, simulator=simulator, build_dir=where, latency=4, stall_rate=64,
               patterns=patterns, seed=9)

    def transfers(port, run):
        lines = (where / f"xfer_{port}.txt").read_text().splitlines()
        return sum(1 for line in lines if int(line.split()[0]) == run)
    assert 0 < transfers("i_load", 0) < load and transfers("i_desc", 0) == 0      # loading
    assert transfers("i_desc", 2) > 0 and transfers("o_out", 2) == 0             # K/V in flight
    assert 0 < transfers("o_out", 4) < len(jobs[0].lengths) * cfg.beats_per_key  # outputs leaving
