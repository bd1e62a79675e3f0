# amaranth: UnusedElaboratable=no
"""The AXI4-Stream wrapper: port names and widths, and jobs through it on both simulators, driven by
AXI-Stream sources and sinks with random pauses on every interface, bit-exact with the golden
model."""

import json

import numpy as np
import pytest
from amaranth.hdl import Shape
from amaranth.lib.wiring import Out
from test_top import TOP_LINT_WAIVERS

from leanattn.hdl.axis import STATUS, AXIStreamAttention, axis_interfaces, byte_width
from leanattn.hdl.config import PRESETS
from leanattn.hdl.top import LeanAttention
from leanattn.sim import golden
from leanattn.sim.cocotb_util import (
    design_verilog,
    run_cocotb,
    verilator_lint,
)
from leanattn.sim.configs import TEST_CONFIGS
from leanattn.sim.jobgen import random_int_job
from leanattn.sim.stream_bench import bench_dir
from leanattn.sim.system import ideal_cycles


def test_ports_are_axis_names_with_byte_widths():
    cfg = PRESETS["tiny"]
    members = AXIStreamAttention(cfg).signature.members
    for name, (flow, _, layout, user, last) in axis_interfaces(cfg).items():
        width = Shape.cast(members[f"{name}_tdata"].shape).width
        assert width % 8 == 0 and width - 8 < Shape.cast(layout).width <= width
        assert members[f"{name}_tvalid"].flow == flow and members[f"{name}_tready"].flow != flow
        assert (f"{name}_tuser" in members) == (user is not None)
        assert (f"{name}_tlast" in members) == (last is not None)
    assert Shape.cast(members["m_axis_out_tuser"].shape).width == cfg.head_index_bits
    assert {f"s_axis_k{c}_tdata" for c in range(cfg.cores)} <= set(members)
    assert byte_width(1) == 8 and byte_width(8) == 8 and byte_width(9) == 16
    top = LeanAttention(cfg).signature.members
    for name, member in STATUS.items():
        assert members[name].shape == top[member].shape and members[name].flow == Out


def test_constructor_error():
    with pytest.raises(TypeError, match="cfg must be an AttentionConfig"):
        AXIStreamAttention({"lanes": 1})


def _signed(values, bits):
    values = np.asarray(values, dtype=np.int64)
    return np.where(values >= 1 << (bits - 1), values - (1 << bits), values)


def _axis_job(cfg, job, offset):
    """TDATA words of one job whose keys lie end to end from element ``offset`` of K and V."""
    interfaces = axis_interfaces(cfg)
    desc_layout, query_layout = interfaces["s_axis_desc"][2], interfaces["s_axis_query"][2]
    bases = offset + cfg.head_dim * np.concatenate([[0], np.cumsum(job.lengths)])
    descs = [desc_layout.const({
        "length": int(n), "k_base": int(bases[h]), "v_base": int(bases[h]),
        "score_mant": int(job.score_mant[h]), "score_shift": int(job.score_shift[h]),
        "out_mant": int(job.out_mant[h]), "out_shift": int(job.out_shift[h])}).as_bits()
        for h, n in enumerate(job.lengths)]
    beats = np.asarray(job.q, dtype=np.int64).reshape(-1, cfg.lanes)
    queries = [query_layout.const({"q": [int(x) for x in row]}).as_bits() for row in beats]
    return {"desc": descs, "query": queries, "heads": len(job.lengths)}


def _flat(x, lengths):
    """Keys (or values) of every head end to end, as a flat element list."""
    return [int(e) for h, n in enumerate(lengths) for e in np.asarray(x[h])[:n].reshape(-1)]


def run_axis(cfg, jobs, *, simulator, build_dir, pause, latency, seed):
    """Run ``jobs`` one after another through the wrapper (each job's K and V after the previous
    job's in the memory model); returns the bench's results."""
    build_dir.mkdir(parents=True, exist_ok=True)
    entries, k_mem, v_mem = [], [], []
    for job in jobs:
        entries.append(_axis_job(cfg, job, len(k_mem)))
        k_mem += _flat(job.k, job.lengths)
        v_mem += _flat(job.v, job.lengths)
    interfaces = axis_interfaces(cfg)
    args = {"jobs": entries, "k": k_mem, "v": v_mem, "lanes": cfg.lanes, "input_bits": cfg.input_bits,
            "beats_per_key": cfg.beats_per_key, "cores": cfg.cores, "pause": pause, "latency": latency,
            "seed": seed, "addr_bits": interfaces["m_axis_kreq0"][2]["addr"].shape.width}
    (build_dir / "axis_job.json").write_text(json.dumps(args))
    run_cocotb(AXIStreamAttention(cfg), toplevel="lean_attention_axis", test_module="leanattn.sim.tb_axis",
               simulator=simulator, build_dir=build_dir, tb_args={"file": str(build_dir / "axis_job.json")},
               seed=seed)
    return json.loads((build_dir / "axis_results.json").read_text())


def _outputs(cfg, heads):
    """Output integers per head from the collected frames (one TDATA word per beat)."""
    mask = (1 << cfg.output_bits) - 1
    return {head["head"]: _signed([(word >> (i * cfg.output_bits)) & mask
                                   for word in head["tdata"] for i in range(cfg.lanes)], cfg.output_bits)
            for head in heads}


@pytest.mark.parametrize("name, simulator", [
    ("tiny", "verilator"), ("tiny", "icarus"),
    pytest.param("default", "verilator", marks=pytest.mark.slow),
    pytest.param("default", "icarus", marks=pytest.mark.slow)])
def test_jobs_through_axis(request, name, simulator):
    """Two jobs (a head cut across the cores, then ragged short heads) with random pauses
    everywhere: every head's frame bit-exact, TUSER its head, status error 0 and cycles within
    the top's bound."""
    cfg = TEST_CONFIGS[name]
    rng = np.random.default_rng(11)
    shapes = [[3 * cfg.tile + 5], [1, cfg.tile + 1, 7]]
    jobs = [random_int_job(cfg, lengths, rng, spread_bits=3) for lengths in shapes]
    results = run_axis(cfg, jobs, simulator=simulator, build_dir=bench_dir(request), pause=0.2,
                       latency=2, seed=5)
    assert len(results) == len(jobs)
    for job, result in zip(jobs, results):
        expected = golden.run(cfg, job).out
        got = _outputs(cfg, result["heads"])
        assert sorted(got) == list(range(len(job.lengths)))
        for head, row in enumerate(expected):
            np.testing.assert_array_equal(got[head], row, err_msg=f"head {head}")
        assert result["error"] == 0
        assert ideal_cycles(cfg, job.lengths) < result["cycles"]


#: Beyond the top's own waivers: the padding bits of an input TDATA (a whole number of bytes) are
#: ignored by definition, and the top's plain status ports leave parent-side alias wires beside the
#: instance connection, as stream ports do (HIERARCHY_LINT_WAIVERS).
AXIS_LINT_WAIVERS = {
    **TOP_LINT_WAIVERS,
    ("UNUSEDSIGNAL", "Bits of signal are not used: 's_axis_*_tdata'*"): "TDATA padding",
    **{("UNUSEDSIGNAL", f"Signal is not used: '{name}'"): "an alias wire of a status port"
       for name in ("o_busy", "o_done", "o_error", "o_cycles")},
}


@pytest.mark.parametrize("name", ["tiny", pytest.param("default", marks=pytest.mark.slow)])
def test_lint(request, name):
    """The wrapper adds nothing to lint but TDATA padding and alias wires."""
    path = bench_dir(request) / "lean_attention_axis.v"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(design_verilog(AXIStreamAttention(TEST_CONFIGS[name]), toplevel="lean_attention_axis"))
    assert verilator_lint(path, waivers=AXIS_LINT_WAIVERS) == []
