"""The schedule benchmark: its sweep, its row math, its writers and plots, the model-against-RTL check,
and (slow) the quick benchmark end to end with one RTL job on Verilator."""

import argparse
import json

import numpy as np
import pytest

from leanattn.hdl.config import PRESETS
from leanattn.sim import bench
from leanattn.sim.perf import predict
from leanattn.sim.stream_bench import bench_dir

# --- the sweep -------------------------------------------------------------------------------------


def test_full_sweep_covers_the_paper_range():
    model, rtl = bench.sweep()
    assert model.preset == "wide" and model.cores == (1, 2, 4, 8, 16) and model.rtl == ()
    assert {s.batch for s in model.shapes} == {1, 2, 4, 8, 16}
    assert {s.heads for s in model.shapes} == {1, 8, 32, 64}
    assert min(s.context for s in model.shapes) == 512
    assert max(s.context for s in model.shapes) == 524288
    assert all(s.max_keys <= bench.KEY_BUDGET for s in model.shapes)
    # Every shape within the budget is there, in both length kinds, once.
    expected = {(b, h, n) for b in bench.BATCHES for h in bench.HEADS for n in bench.CONTEXTS
                if b * h * n <= bench.KEY_BUDGET}
    assert len(model.shapes) == 2 * len(expected) == len(set(model.shapes))
    assert {(s.batch, s.heads, s.context) for s in model.shapes if s.kind == "ragged"} == expected
    # The RTL jobs fit the RTL preset and come in both kinds.
    cfg = PRESETS[rtl.preset]
    assert rtl.preset == "default" and rtl.rtl == bench.SCHEDULES
    assert all(s.flat_heads <= cfg.max_heads and s.context <= cfg.max_context for s in rtl.shapes)
    assert {s.kind for s in rtl.shapes} == {"uniform", "ragged"}


def test_quick_sweep_is_small_with_one_rtl_job():
    model, rtl = bench.sweep(quick=True)
    assert len(model.shapes) * len(model.cores) * len(bench.SCHEDULES) <= 300
    assert rtl.rtl == ("lean",) and len(rtl.cores) == 1
    tasks = [t for t in bench._tasks([model, rtl], ("lean", "fa2")) if t[4]]
    assert len(tasks) == 1                          # one simulation, of lean only
    assert tasks[0][1:3] == (2, "lean") and tasks[0][3] == rtl.shapes
    # Without lean in the hardware, everything comes from the model.
    assert not any(t[4] for t in bench._tasks([model, rtl], ("fa2",)))


def test_shape_lengths():
    uniform = bench.Shape(2, 3, 100, "uniform")
    assert bench.shape_lengths(uniform) == [100] * 6
    ragged = bench.Shape(4, 8, 512, "ragged")
    lengths = bench.shape_lengths(ragged)
    assert len(lengths) == 32 and all(1 <= n <= 512 for n in lengths)
    assert lengths == bench.shape_lengths(bench.Shape(4, 8, 512, "ragged"))     # seeded
    assert len(set(lengths)) > 20                                                # really ragged
    assert lengths != bench.shape_lengths(bench.Shape(8, 4, 512, "ragged"))     # seeded by the shape
    many = bench.shape_lengths(bench.Shape(16, 64, 4096, "ragged"))
    assert 0.45 * 4096 < np.mean(many) < 0.55 * 4096                             # uniform on 1..context


@pytest.mark.parametrize("changes, error, message", [
    ({"batch": 0}, ValueError, "batch must be at least 1, not 0"),
    ({"heads": 2.0}, TypeError, "heads must be an integer, not 2.0"),
    ({"context": True}, TypeError, "context must be an integer, not True"),
    ({"kind": "even"}, ValueError, "kind must be one of uniform, ragged, not 'even'"),
])
def test_shape_errors(changes, error, message):
    args = {"batch": 1, "heads": 1, "context": 8, "kind": "uniform", **changes}
    with pytest.raises(error, match=message):
        bench.Shape(**args)


def test_schedule_config():
    for cores in (1, 2, 4, 8, 16):
        lean = bench.schedule_config("wide", cores, "lean")
        assert (lean.cores, lean.head_dim, lean.lanes, lean.chunks) == (cores, 128, 16, 0)
        flash = bench.schedule_config("wide", cores, "flashdecoding")
        assert flash.schedule == "flashdecoding" and flash.head_chunks == cores
        assert bench.schedule_config("wide", cores, "fa2").head_chunks == 1
    assert bench.config_id("wide", 16, "fa2") == "wide-c16-fa2"
    with pytest.raises(ValueError, match="schedule must be one of lean, fa2, flashdecoding, not 'x'"):
        bench.schedule_config("wide", 4, "x")


# --- rows ------------------------------------------------------------------------------------------


def test_model_row_math():
    shape = bench.Shape(2, 3, 700, "ragged")
    lengths = bench.shape_lengths(shape)
    cache = {}
    row = bench.model_row("wide", 4, "lean", shape, cache)
    pred = predict(bench.schedule_config("wide", 4, "lean"), lengths, latency=bench.LATENCY)
    assert row["cycles"] == row["model_cycles"] == pred.cycles and row["source"] == "model"
    assert row["keys"] == sum(lengths) and row["flat_heads"] == 6
    assert row["ideal"] == sum(lengths) * 8 / 4              # head_dim / lanes = 8 beats per key
    assert row["efficiency"] == row["ideal"] / row["cycles"] == pred.efficiency
    assert row["rtl_cycles"] is None and row["config"] == "wide-c4-lean"
    # The cache keys on the lengths: another split of the same uniform heads reuses the prediction.
    a = bench.model_row("wide", 4, "fa2", bench.Shape(2, 4, 64, "uniform"), cache)
    size = len(cache)
    b = bench.model_row("wide", 4, "fa2", bench.Shape(4, 2, 64, "uniform"), cache)
    assert len(cache) == size and a["cycles"] == b["cycles"] and (b["batch"], b["heads"]) == (4, 2)


def _rows(preset, cores, shapes):
    return [bench.model_row(preset, c, s, shape) for c in cores for shape in shapes for s in bench.SCHEDULES]


def test_speedups_are_cycle_ratios():
    shapes = [bench.Shape(1, 1, 4096, "uniform"), bench.Shape(2, 3, 1000, "ragged")]
    rows = bench.add_speedups(_rows("wide", (1, 8), shapes))
    by = {(r["cores"], r["batch"], r["schedule"]): r for r in rows}
    for (cores, batch, _), row in by.items():
        lean = by[cores, batch, "lean"]
        assert row["speedup_vs_fa2"] == by[cores, batch, "fa2"]["cycles"] / lean["cycles"]
        assert row["speedup_vs_flashdecoding"] == by[cores, batch, "flashdecoding"]["cycles"] / lean["cycles"]
    # One core: the three schedules are the same partition.
    assert by[1, 1, "lean"]["speedup_vs_fa2"] == by[1, 1, "lean"]["speedup_vs_flashdecoding"] == 1.0
    # One head on 8 cores: fa2 leaves 7 cores idle, lean splits the head.
    assert by[8, 1, "lean"]["speedup_vs_fa2"] > 6
    # A group without lean keeps None.
    lone = bench.add_speedups([{**by[8, 1, "fa2"]}])
    assert lone[0]["speedup_vs_fa2"] is None


def test_lean_beats_fa2_on_ragged_and_few_heads():
    """Fewer heads than cores, or ragged lengths: fa2 idles cores where lean stays balanced."""
    shapes = [bench.Shape(1, 1, 32768, "uniform"), bench.Shape(1, 8, 8192, "ragged"),
              bench.Shape(4, 8, 8192, "ragged"), bench.Shape(2, 2, 65536, "ragged")]
    rows = bench.add_speedups(_rows("wide", (16,), shapes))
    lean = {(r["batch"], r["heads"]): r for r in rows if r["schedule"] == "lean"}
    fa2 = {(r["batch"], r["heads"]): r for r in rows if r["schedule"] == "fa2"}
    for key, row in lean.items():
        assert row["efficiency"] > fa2[key]["efficiency"]
        assert row["efficiency"] > 0.9
    assert lean[1, 1]["speedup_vs_fa2"] > 15         # one head: close to 16 cores
    assert lean[4, 8]["speedup_vs_fa2"] > 1.2         # 32 ragged heads: fa2's tail


def test_summary_and_losses():
    shapes = [bench.Shape(1, 1, 512, "uniform"), bench.Shape(4, 1, 512, "ragged"),
              bench.Shape(1, 1, 65536, "ragged")]
    rows = bench.add_speedups(_rows("wide", (16,), shapes))
    s = bench.summary(rows)
    lean = [r for r in rows if r["schedule"] == "lean"]
    ratios = [r["speedup_vs_fa2"] for r in lean]
    assert s["fa2"]["all"]["count"] == 3 and s["fa2"]["uniform"]["count"] == 1
    assert s["fa2"]["all"]["mean"] == pytest.approx(np.mean(ratios))
    assert s["fa2"]["all"]["max"] == max(ratios) and s["fa2"]["ragged"]["min"] == min(ratios[1:])
    # Four short ragged heads on 16 cores: flashdecoding's 32-key chunks pay a shorter tile tail.
    assert [(r["batch"], r["context"]) for r in s["lean_loses"]] == \
        [(r["batch"], r["context"]) for r in lean if r["speedup_vs_flashdecoding"] < 1]
    assert s["lean_loses"] and all(min(r["speedup_vs_fa2"], r["speedup_vs_flashdecoding"]) < 1
                                   for r in s["lean_loses"])


def test_reference_points():
    ref = {(r["heads"], r["keys"]): r for r in bench.reference_points()}
    assert ref[1, 512]["cores"] == 4
    assert ref[8, 512]["lean"] >= 0.85                # DESIGN section 5 target
    assert ref[1, 512]["lean"] > 3 * ref[1, 512]["fa2"]


# --- the model against the RTL ------------------------------------------------------------------------


def test_check_rtl_equal_and_mismatch():
    cfg = bench.schedule_config("tiny", 2, "lean")
    jobs = [[48], [1] * 8, [15, 17, 1, 32]]
    held, chained = 0, []
    for lengths in jobs:
        pred = predict(cfg, lengths, latency=2, arbiter_held=held)
        held = pred.arbiter_held
        chained.append(pred.cycles)
    predicted, wrong = bench.check_rtl(cfg, jobs, chained)
    assert predicted == chained and wrong == []
    off = list(chained)
    off[2] += 1
    predicted, wrong = bench.check_rtl(cfg, jobs, off)
    assert predicted == chained
    assert wrong == [{"job": 2, "heads": 4, "keys": 65, "rtl": chained[2] + 1, "model": chained[2]}]
    with pytest.raises(ValueError, match=r"measured must hold one cycle count per job \(3\), not 2"):
        bench.check_rtl(cfg, jobs, chained[:2])


def test_sim_speed_from_results(tmp_path):
    path = tmp_path / "results.xml"
    path.write_text(
        '<testsuites><testsuite><testcase name="a" time="2.0"><properties>'
        '<property name="sim_time_unit" value="ns"/><property name="sim_time_duration" value="50000.0"/>'
        '</properties></testcase><testcase name="b" time="0.5"><properties>'
        '<property name="sim_time_unit" value="us"/><property name="sim_time_duration" value="10.0"/>'
        '</properties></testcase></testsuite></testsuites>')
    assert bench._sim_cycles_and_seconds(path) == (5000 + 1000, 2.5)    # a 10 ns clock


# --- writers and plots -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def report():
    shapes = [bench.Shape(b, h, n, k) for b, h in ((1, 1), (2, 4), (1, 32)) for n in (512, 8192)
              for k in bench.KINDS]
    rows = bench.add_speedups(_rows("wide", (1, 4, 16), shapes))
    rtl = bench._row("tiny", 2, "lean", bench.Shape(1, 2, 48, "uniform"), [48, 48], 999, 96.0 * 32 / 2,
                     "rtl", 998, rtl_cycles=999)
    mismatch = {"job": 0, "heads": 2, "keys": 96, "rtl": 999, "model": 998, "config": "tiny-c2-lean"}
    speed = {"golden": [{"preset": "tiny", "batch": 1, "heads": 2, "keys_per_head": 256, "keys": 512,
                         "wall_s": 1.5, "keys_per_s": 341}],
             "simulators": [{"simulator": "verilator", "preset": "tiny", "lengths": [32], "job_cycles": 900,
                             "sim_cycles": 3000, "sim_s": 0.1, "cycles_per_s": 30000, "wall_s": 9.0}]}
    return {"latency": 2, "rtl_schedules": ["lean"], "seconds": 12.0, "summary": bench.summary(rows),
            "reference": bench.reference_points(), "mismatches": [mismatch], "software_speed": speed,
            "configs": {}, "rows": rows + [rtl]}


def test_write_json(tmp_path, report):
    path = bench.write_json(tmp_path / "bench.json", report)
    data = json.loads(path.read_text())
    assert data["rows"] == report["rows"]
    assert data["mismatches"][0]["rtl"] == 999
    assert {r["source"] for r in data["rows"]} == {"model", "rtl"}
    assert data["summary"]["fa2"]["all"]["count"] == 36


def test_write_markdown(tmp_path, report):
    text = bench.write_markdown(tmp_path / "bench.md", report).read_text()
    assert text.startswith("# leanattn bench")
    assert "**MODEL AND RTL DIFFER on 1 job(s)**" in text
    for heading in ("### Speedup of lean (`wide`", "### Mean efficiency per schedule",
                    "### Speedup of lean over fa2, uniform", "### Speedup of lean over flashdecoding, ragged",
                    "### RTL (Verilator)", "### Software speed", "### Efficiency on `default`"):
        assert heading in text
    # The RTL row with its two counts, flagged as unequal.
    assert "| tiny | 2 | lean | 1 x 2 | 48 | uniform | 96 | 999 | 998 | **NO** |" in text
    mean = report["summary"]["fa2"]["all"]["mean"]
    assert f"| fa2 | all | 36 | {mean:.3f} |" in text
    # Every table row has as many cells as its header.
    assert text.endswith("\n")
    tables, lines = 0, text.splitlines()
    for i, line in enumerate(lines[:-1]):
        if line.startswith("|") and lines[i + 1].startswith("| --- |") and not lines[i - 1].startswith("|"):
            tables += 1
            j = i + 1
            while j < len(lines) and lines[j].startswith("|"):
                assert lines[j].count("|") == line.count("|"), lines[j]
                j += 1
    assert tables >= 11


def test_plots(tmp_path, report):
    import matplotlib.image

    paths = [bench.plot_efficiency(tmp_path / "efficiency.png", report["rows"])]
    paths += [bench.plot_speedup(tmp_path / f"speedup_{x}.png", report["rows"], x)
              for x in ("fa2", "flashdecoding")]
    for path in paths:
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert path.stat().st_size > 20000
        image = matplotlib.image.imread(path)
        assert image.shape[0] > 300 and image.shape[1] > 1000
        assert np.std(image[..., :3]) > 0.05          # not a blank canvas


def test_parser():
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers()
    bench.add_parser(sub)
    args = parser.parse_args(["bench", "--out", "x", "--quick"])
    assert (args.out, args.quick, args.func) == ("x", True, bench.run)
    assert parser.parse_args(["bench"]).out == "build/bench"


# --- end to end --------------------------------------------------------------------------------------


@pytest.mark.slow
def test_quick_end_to_end(request, capsys):
    out = bench_dir(request)
    assert bench.main(["--out", str(out), "--quick"]) == 0
    data = json.loads((out / "bench.json").read_text())
    rtl = [r for r in data["rows"] if r["source"] == "rtl"]
    assert len(rtl) == 2 and {r["kind"] for r in rtl} == {"uniform", "ragged"}
    assert all(r["rtl_cycles"] == r["model_cycles"] == r["cycles"] for r in rtl)
    assert data["mismatches"] == []
    assert all(r["config"] in data["configs"] for r in data["rows"])
    assert {r["source"] for r in data["rows"]} == {"rtl", "model"}
    speed = data["software_speed"]
    assert [s["simulator"] for s in speed["simulators"]] == ["verilator", "icarus"]
    assert all(s["cycles_per_s"] > 100 and s["sim_cycles"] > s["job_cycles"] for s in speed["simulators"])
    assert speed["golden"][0]["keys_per_s"] > 0
    for name in ("bench.md", "efficiency.png", "speedup_fa2.png", "speedup_flashdecoding.png"):
        assert (out / name).stat().st_size > 1000
    assert "RTL rows: 2, model equal on 2" in capsys.readouterr().out


def test_run_exit_status(monkeypatch, tmp_path, capsys, report):
    """A model/RTL mismatch makes the command fail loudly; without one it succeeds."""
    monkeypatch.setattr(bench, "run_bench", lambda out, quick: report)
    args = argparse.Namespace(out=str(tmp_path), quick=True)
    assert bench.run(args) == 1
    captured = capsys.readouterr()
    assert "ERROR: the model differs from the RTL on 1 job(s)" in captured.err
    assert "RTL rows: 1, model equal on 0" in captured.out
    monkeypatch.setattr(bench, "run_bench", lambda out, quick: {**report, "mismatches": []})
    assert bench.run(args) == 0
