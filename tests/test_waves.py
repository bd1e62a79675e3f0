"""The waveform of one job: the VCD reader on a hand-made trace, the shortening of repeated stretches,
a real Icarus run of the documented job (outputs bit-exact, cycles equal to the cycle model, the VCD
agreeing with the harness's transfer logs), the WaveDrom JSON and SVG, and docs/timing.md against
the code."""

import json
import re
from pathlib import Path

import numpy as np
import pytest
from amaranth.hdl import Shape

from leanattn.hdl.config import PRESETS
from leanattn.hdl.core import AttentionCore
from leanattn.hdl.jobload import ERROR_BITS
from leanattn.hdl.kvmem import KVBank
from leanattn.hdl.layouts import output_layout
from leanattn.hdl.ports import descriptor_layout, kv_data_layout, kv_request_layout, query_layout
from leanattn.hdl.top import cycle_bits
from leanattn.sim import golden, waves
from leanattn.sim.configs import TINY2
from leanattn.sim.job import Job
from leanattn.sim.perf import predict, timing
from leanattn.sim.system import job_cycles, read_outputs
from leanattn.sim.systop import tagged_output_layout

ROOT = Path(__file__).resolve().parent.parent

HAND_VCD = """$date today $end
$version hand made $end
$timescale 1ns $end
$scope module tb $end
$var wire 1 ! clk $end
$scope module dut $end
$var wire 1 ! clk $end
$var wire 4 " data [3:0] $end
$var wire 1 # valid $end
$upscope $end
$upscope $end
$enddefinitions $end
#0
$dumpvars
0!
bx "
0#
$end
#5
1!
#6
b1010 "
1#
#10
0!
#15
1!
#16
b1x10 "
#20
0!
#25
1!
#26
0#
b11 "
"""


@pytest.fixture
def hand_vcd(tmp_path):
    path = tmp_path / "hand.vcd"
    path.write_text(HAND_VCD)
    return path


def test_read_vcd_hand_made(hand_vcd):
    signals, timescale = waves.read_vcd(hand_vcd)
    assert timescale == "1ns"
    assert sorted(signals) == ["tb.clk", "tb.dut.clk", "tb.dut.data", "tb.dut.valid"]
    assert signals["tb.dut.data"].width == 4
    assert signals["tb.dut.data"].changes == [(0, None), (6, 10), (16, None), (26, 3)]
    # Two declarations of one identifier code share its changes.
    assert signals["tb.clk"].changes == signals["tb.dut.clk"].changes == [
        (0, 0), (5, 1), (10, 0), (15, 1), (20, 0), (25, 1)]
    only, _ = waves.read_vcd(hand_vcd, scope="tb.dut")
    assert sorted(only) == ["tb.dut.clk", "tb.dut.data", "tb.dut.valid"]


def test_sample_sees_values_before_each_rising_edge(hand_vcd):
    signals, _ = waves.read_vcd(hand_vcd)
    values, edges = waves.sample(signals, "tb.clk", ["tb.dut.data", "tb.dut.valid"])
    assert edges == [5, 15, 25]
    assert values == {"tb.dut.data": [None, 10, None], "tb.dut.valid": [0, 1, 1]}
    with pytest.raises(KeyError, match="no signal 'tb.nothing'"):
        waves.sample(signals, "tb.clk", ["tb.nothing"])


def test_read_vcd_errors(tmp_path):
    junk = tmp_path / "junk.vcd"
    junk.write_text("this is not a trace\n")
    with pytest.raises(ValueError, match="junk.vcd is not a"):
        waves.read_vcd(junk)
    undeclared = tmp_path / "undeclared.vcd"
    undeclared.write_text("$timescale 1ns $end\n$scope module t $end\n$var wire 1 ! a $end\n$upscope $end\n"
                          "$enddefinitions $end\n#0\n1?\n")
    with pytest.raises(ValueError, match="undeclared variable '\\?'"):
        waves.read_vcd(undeclared)


def test_shorten_keeps_the_ends_of_repeated_stretches():
    steady = [("a",)] * 3 + [("b",)] * 30 + [("c",)] * 3
    assert waves._shorten(steady) == [(0, 7), (31, 36)]
    periodic = [("a",)] * 2 + [("x",), ("y",), ("y",), ("y",)] * 10 + [("c",)] * 2
    windows = waves._shorten(periodic)
    assert windows[0] == (0, 2 + 8) and windows[-1] == (2 + 36, 44)
    short = [("a",), ("b",)] * 3
    assert waves._shorten(short) == [(0, 6)]


# --- a real run ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def documented_run(tmp_path_factory):
    """``python -m leanattn.sim.waves`` as the docs are made (tiny on two cores), into a temporary
    folder."""
    out, build = tmp_path_factory.mktemp("img"), tmp_path_factory.mktemp("build")
    overrides = [arg for o in waves.DOC_OVERRIDES for arg in ("--set", o)]
    assert waves.main(["--out", str(out), "--build-dir", str(build), *overrides]) == 0
    return out, build


def test_real_run_is_exact_and_matches_the_cycle_model(documented_run):
    _, build = documented_run
    cfg = TINY2
    job = Job.from_arrays(cfg, **waves.job_arrays(cfg, waves.DEFAULT_LENGTHS))
    assert np.array_equal(read_outputs(cfg, build, job.flat_heads), golden.run(cfg, job).out)
    cycles = predict(cfg, list(waves.DEFAULT_LENGTHS), latency=2).cycles
    assert job_cycles(cfg, build) == [cycles] == [275]


def test_vcd_agrees_with_the_harness_logs(documented_run):
    """Every transfer the harness logged on i_desc, i_query and o_out is in the VCD, in the same
    cycle (relative to the first input transfer), with the same payload."""
    _, build = documented_run
    scope = waves.TOP_SCOPE
    signals, _ = waves.read_vcd(build / "job.vcd", scope=scope)
    names = [f"{scope}.{p}__{s}" for p in ("i_desc", "i_query", "o_out")
             for s in ("valid", "ready", "payload")]
    values, edges = waves.sample(signals, f"{scope}.clk", names)

    def fired(port):
        v = {s: values[f"{scope}.{port}__{s}"] for s in ("valid", "ready", "payload")}
        return [(c, v["payload"][c]) for c in range(len(edges)) if v["valid"][c] == 1 and v["ready"][c] == 1]

    def logged(port, shift=0):
        rows = [line.split() for line in (build / f"xfer_{port}.txt").read_text().splitlines()]
        return [(int(cycle), int(payload, 16) >> shift) for _, payload, cycle in rows]

    cfg = TINY2
    vcd = {p: fired(p) for p in ("i_desc", "i_query", "o_out")}
    # The harness logs o_out tagged with the job number (tagged_output_layout): the beat sits above it.
    logs = {"i_desc": logged("i_desc"), "i_query": logged("i_query"),
            "o_out": logged("o_out", tagged_output_layout(cfg)["beat"].offset)}
    assert [len(vcd[p]) for p in vcd] == [1, 32, 32]
    start_vcd, start_log = vcd["i_desc"][0][0], logs["i_desc"][0][0]
    for port in vcd:
        assert [(c - start_vcd, p) for c, p in vcd[port]] == [(c - start_log, p) for c, p in logs[port]]
    assert vcd["o_out"][-1][0] - start_vcd == 275                  # o_cycles: the last output beat


def test_wavedrom_structure(documented_run):
    out, _ = documented_run
    source = json.loads((out / "job_waveform.json").read_text())
    signal = source["signal"]
    assert signal[0]["name"] == "clk" and signal[0]["wave"].startswith("p")
    assert signal[1]["name"] == "cycle"
    groups = {entry[0]: entry[1:] for entry in signal if isinstance(entry, list)}
    assert list(groups) == ["i_desc", "i_query", "o_kreq_0", "i_k_0", "o_vreq_0", "i_v_0", "o_out"]
    rows = [e for g in groups.values() for e in g] + [e for e in signal if isinstance(e, dict)]
    assert [r["name"] for r in signal if isinstance(r, dict)] == ["clk", "cycle", "o_busy", "o_done"]
    length = len(signal[0]["wave"])
    for row in rows:
        assert len(row["wave"]) == length, row["name"]
        assert row["wave"].count("=") == len(row.get("data", [])), row["name"]
        assert set(row["wave"]) <= set("pxX01=.|"), row["name"]
    for entries in groups.values():
        assert [e["name"] for e in entries] == ["payload", "valid", "ready"]
    assert groups["i_desc"][0]["data"] == ["n2"]
    assert groups["o_kreq_0"][0]["data"] == groups["o_vreq_0"][0]["data"] == ["0/1"]
    assert groups["o_out"][0]["data"][0] == "h0.0" and groups["o_out"][0]["data"][-1] == "h0.31"
    done = next(r for r in rows if r["name"] == "o_done")["wave"]
    assert done.count("1") == 1
    ruler = signal[1]
    assert "0" in ruler["data"] and ruler["data"][0] == "-3"
    assert source["foot"]["text"].endswith("of 283 cycles shown")


def test_svg_rendered_and_docs_current(documented_run):
    out, _ = documented_run
    svg = (out / "job_waveform.svg").read_text()
    assert svg.startswith("<svg") and "<svg" in svg and "o_kreq_0" in svg and "h0.31" in svg
    for name in ("job_waveform.json", "job_waveform.svg"):
        assert (out / name).read_text() == (ROOT / "docs" / "img" / name).read_text(), (
            f"docs/img/{name} is stale: run `python -m leanattn.sim.waves --out docs/img "
            "--set cores=2 --set pipeline=full`")


# --- docs/timing.md against the code ----------------------------------------------------------------

def _table_rows(text, first_header):
    start = text.index(first_header)
    lines = []
    for line in text[start:].splitlines()[2:]:
        if not line.startswith("|"):
            break
        lines.append([c.strip() for c in line.strip().strip("|").split("|")])
    return lines


def test_timing_doc_port_widths():
    text = (ROOT / "docs" / "timing.md").read_text()
    rows = {r[0].strip("`"): r[3:6] for r in _table_rows(text, "| port | Verilog | dir |")}
    for i, cfg in enumerate(PRESETS[name] for name in ("tiny", "default", "wide")):
        width = lambda layout: str(Shape.cast(layout).width)
        request, beat = width(kv_request_layout(cfg)), width(kv_data_layout(cfg))
        expected = {"clk": "1", "rst": "1", "i_desc": width(descriptor_layout(cfg)),
                    "i_query": width(query_layout(cfg)), "o_kreq_<c>": request, "o_vreq_<c>": request,
                    "i_k_<c>": beat, "i_v_<c>": beat, "o_out": width(output_layout(cfg)),
                    "o_busy": "1", "o_done": "1", "o_error": str(ERROR_BITS),
                    "o_cycles": str(cycle_bits(cfg))}
        assert {port: widths[i] for port, widths in rows.items()} == expected


def test_timing_doc_latencies():
    text = (ROOT / "docs" / "timing.md").read_text()
    rows = {r[0]: r[1:] for r in _table_rows(text, "| figure | `tiny` |")}
    for i, name in enumerate(("tiny", "default", "wide")):
        cfg, t = PRESETS[name], timing(PRESETS[name])
        column = {figure: values[i] for figure, values in rows.items()}
        assert column["beats per key, `head_dim / lanes` (`B`)"] == str(t.bpk)
        assert column["keys per tile"] == str(t.tile)
        assert column[next(k for k in column if k.startswith("reference memory"))] == str(KVBank.latency)
        assert column["last K beat of a key to its logit in the tile buffer"] == str(t.logit_latency)
        weight = column["a tile's last logit to its first weight in the PV accumulator"]
        assert weight == str(t.weight_latency)
        assert column["last value beat of a segment to its partial's first beat"] == str(t.pv_latency)
        sliced = timing(PRESETS[name], partial_slices=True).partial_slice
        slice_row = "a core's partial beat to the routing (`partial_slices`: through a register slice)"
        assert column[slice_row] == f"{t.partial_slice} ({sliced})"
        sliced = timing(PRESETS[name], request_slices=True).request_slice
        slice_row = "a core's request to the memory (`request_slices`: through a register slice)"
        assert column[slice_row] == f"{t.request_slice} ({sliced})"
        assert column["normalizer: cycles per output beat (`norm_cycles`)"] == str(t.norm_cycles)
        assert column["normalizer: input beat to output beat"] == str(t.norm_latency)
        assert column["requests in flight per port, at most"] == str(t.outstanding)
        assert t.outstanding == AttentionCore.outstanding
        queues = column["segments in the K command queue / V lead"]
        assert queues == f"{t.k_queue} / {AttentionCore.lead}"     # t.k_queue: test_perf checks it
        # H (B + 1) + 6: the cycle model's first segment offer.
        assert column["job start to the first segments offered, for `H` heads"] == "`H·(B+1) + 6`"
        for heads in (1, 3):
            assert predict(cfg, [cfg.cores * 4] * heads).first_segment == heads * (t.bpk + 1) + 6
    assert re.search(r"`o_cycles` = 275", text)


def test_bad_override_is_a_usage_error(capsys):
    """A ``--set`` the configuration rejects stops before any simulation, naming the constraint."""
    with pytest.raises(SystemExit) as stop:
        waves.main(["--set", "lanes=3", "--out", "build/tests/test_waves/unused"])
    assert stop.value.code == 2
    assert "lanes must divide head_dim (32), not 3" in capsys.readouterr().err
