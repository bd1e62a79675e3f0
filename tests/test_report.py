"""The job report: sections and numbers equal to what the golden model, the float64 reference and the
cycle model compute, figures present (as files beside the Markdown, embedded in the HTML), synthesis
reports found or given, and one clear error line for every bad input."""

import base64
import json
import os
import re

import numpy as np
import pytest

from leanattn.hdl.config import PRESETS
from leanattn.sim import golden, report
from leanattn.sim.configs import TINY2
from leanattn.sim.job import load_job
from leanattn.sim.perf import predict
from leanattn.sim.reference import attention, datapath_error_bounds, rel_l2

PNG = b"\x89PNG\r\n\x1a\n"
SECTIONS = ("Summary", "Accuracy", "Per head", "Cycles", "Synthesis")


def _float_job(path, *, lengths=(20, 7, 33), seed=3):
    """A float job for ``tiny``: one batch of ``len(lengths)`` heads (20 + 7 + 33 keys cut the third
    head across the two cores)."""
    rng = np.random.default_rng(seed)
    n_max, d = max(lengths), PRESETS["tiny"].head_dim
    arrays = {"q": rng.standard_normal((1, len(lengths), d)) * 1.5,
              "k": rng.standard_normal((1, len(lengths), n_max, d)),
              "v": rng.standard_normal((1, len(lengths), n_max, d)),
              "lengths": np.array([lengths])}
    np.savez(path, **arrays)
    return path


def _int_job(path, seed=4):
    rng = np.random.default_rng(seed)
    d = PRESETS["tiny"].head_dim
    np.savez(path, q=rng.integers(-127, 128, (1, 2, d), dtype=np.int8),
             k=rng.integers(-127, 128, (1, 2, 9, d), dtype=np.int8),
             v=rng.integers(-127, 128, (1, 2, 9, d), dtype=np.int8),
             lengths=np.array([[9, 5]]), q_scale=0.02, k_scale=0.03, v_scale=0.01)
    return path


def _run(capsys, *argv):
    code = report.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def _synth_report(path, *, cfg=None, fmax=61.25):
    cfg = cfg or PRESETS["tiny"]
    path.mkdir(parents=True, exist_ok=True)
    rep = {"board": "icebreaker", "device": "iCE40UP5K", "preset": "tiny", "fits": True,
           "timing_met": True, "fmax_mhz": fmax, "target_mhz": 12.0, "config": cfg.to_dict(),
           "resources": {"LUT4": {"used": 4321, "available": 5280, "primitive": "SB_LUT4"},
                         "DSP": {"used": 6, "available": 8, "primitive": "SB_MAC16"},
                         "BRAM": {"used": None, "available": 30, "primitive": "SB_RAM40_4K"}}}
    (path / "report.json").write_text(json.dumps(rep))
    return path


@pytest.fixture(scope="module")
def float_report(tmp_path_factory):
    """``leanattn report`` of a float job at ``tiny`` on two cores (as ``tiny2``: a head cut and
    merged): the output folder and what it was made from."""
    tmp = tmp_path_factory.mktemp("report")
    job_path = _float_job(tmp / "job.npz")
    out = tmp / "out"
    # From an empty folder: the report looks for synthesis reports under ./build/synth.
    cwd = os.getcwd()
    os.chdir(tmp)
    try:
        assert report.main([str(job_path), "--preset", "tiny", "--set", "cores=2", "--set", "pipeline=full",
                            "-o", str(out)]) == 0
    finally:
        os.chdir(cwd)
    return out, job_path


def test_files_and_sections(float_report):
    out, _ = float_report
    md = (out / "report.md").read_text()
    page = (out / "report.html").read_text()
    for name in SECTIONS:
        assert f"\n## {name}\n" in md
        assert f"<h2>{name}</h2>" in page
    for figure in report.FIGURES:
        assert (out / figure).read_bytes().startswith(PNG)
        assert f"]({figure})" in md
    # One self-contained page: every figure embedded, nothing fetched from elsewhere.
    embedded = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert [base64.b64decode(e) for e in embedded] == [(out / f).read_bytes() for f in report.FIGURES]
    assert "http" not in page and "<link" not in page and "<script" not in page
    assert "exact cycle model" in md and "not from a simulation" in md


def test_numbers_equal_the_models(float_report):
    out, job_path = float_report
    cfg = TINY2
    md = (out / "report.md").read_text()
    job = load_job(job_path, cfg)
    result = golden.run(cfg, job).out * job.head_scales("out")[:, None]
    floor = attention(*job.dequantized(), job.lengths)
    with np.load(job_path) as data:
        q, k, v = (data[name].reshape(job.flat_heads, *data[name].shape[2:]) for name in "qkv")
    exact = attention(q, k, v, job.lengths)
    datapath, end_to_end = rel_l2(result, floor), rel_l2(result, exact)
    bounds = datapath_error_bounds(cfg, job)
    pred = predict(cfg, [int(n) for n in job.lengths], latency=2)

    assert f"The job takes **{pred.cycles}** cycles" in md
    assert f"| datapath error vs float64 on the quantized inputs | median {np.median(datapath):.3e}" in md
    assert f"end-to-end error vs float64 on the float inputs | median {np.median(end_to_end):.3e}" in md
    floor_error = np.median(rel_l2(floor, exact))
    assert f"| quantization floor vs float64 on the float inputs | {floor_error:.3e}" in md
    for h in range(job.flat_heads):
        error = np.abs(result[h] - floor[h]).max()
        row = (f"| {h} | (0, {h}) | {int(job.lengths[h])} | ")
        line = next(line for line in md.splitlines() if line.startswith(row))
        cells = [c.strip() for c in line.strip("|").split("|")]
        assert cells[4:] == [f"{datapath[h]:.3e}", f"{end_to_end[h]:.3e}", f"{error:.3e}", f"{bounds[h]:.3e}",
                             f"{error / bounds[h]:.3f}", str(pred.head_done[h])]
        assert error <= bounds[h]
    # The third head (33 keys) lies on both cores and is merged in the tree, at the model's cycle.
    assert "| 2 | (0, 2) | 33 | 0,1 |" in md
    merge = pred.merges[0]
    assert f"head {merge.head} at node ({merge.level}, {merge.index}), cycle {merge.cycle}" in md
    for core in pred.cores:
        keys = sum(s.keys for s in core.segments)
        row = f"| {core.core} | {len(core.segments)} | {keys} | {core.busy} | {pred.ideal_cycles:.1f} |"
        assert row in md
    assert "within the datapath error bound | yes" in md


def test_integer_job_has_no_float_reference(tmp_path, capsys):
    code, out, err = _run(capsys, _int_job(tmp_path / "job.npz"), "--preset", "tiny", "-o", tmp_path / "o")
    assert code == 0, err
    md = (tmp_path / "o" / "report.md").read_text()
    assert "integers with their scales (already quantized)" in md
    assert "end-to-end" not in md
    assert (tmp_path / "o" / "accuracy.png").read_bytes().startswith(PNG)
    assert "leanattn report: tiny, 2 heads, 14 keys" in out


def test_analysis_matches_golden_and_latency(tmp_path):
    cfg = PRESETS["tiny"]
    job = load_job(_float_job(tmp_path / "job.npz", lengths=(5, 3)), cfg)
    analysis = report.analyze(cfg, job, latency=7)
    assert np.array_equal(analysis.out, golden.run(cfg, job).out)
    assert analysis.prediction.cycles == predict(cfg, [5, 3], latency=7).cycles
    assert analysis.end_to_end is None and analysis.floor is None


def test_synthesis_report_given(tmp_path, capsys):
    job = _float_job(tmp_path / "job.npz", lengths=(4, 4))
    synth = _synth_report(tmp_path / "synth")
    code, out, err = _run(capsys, job, "--preset", "tiny", "-o", tmp_path / "o", "--synth", synth)
    assert code == 0, err
    md = (tmp_path / "o" / "report.md").read_text()
    assert "icebreaker (iCE40UP5K), preset `tiny`: fits; Fmax **61.2 MHz** (target 12.0 MHz: met)" in md
    assert "| LUT4 | SB_LUT4 | 4321 | 5280 | 81.8 % |" in md
    assert "| BRAM | SB_RAM40_4K | - | 30 | - |" in md
    assert "differs" not in md
    assert "synthesis reports: 1" in out


def test_synthesis_report_found_and_config_difference(tmp_path, capsys, monkeypatch):
    job = _float_job(tmp_path / "job.npz", lengths=(4, 4))
    _synth_report(tmp_path / "build" / "synth" / "icebreaker-tiny",
                  cfg=PRESETS["tiny"].replace(norm_cycles=2))
    monkeypatch.chdir(tmp_path)
    code, _, err = _run(capsys, job, "--preset", "tiny", "-o", "o")
    assert code == 0, err
    md = (tmp_path / "o" / "report.md").read_text()
    assert "build/synth/icebreaker-tiny/report.json" in md
    assert "Its configuration differs from this report's in: norm_cycles." in md


def test_no_synthesis_report(float_report):
    md = (float_report[0] / "report.md").read_text()
    assert "No synthesis report found (looked for build/synth/*-tiny/report.json)" in md


@pytest.mark.parametrize("case, message", [
    ("missing job", "no job file at"),
    ("not a job", "is not a readable .npz job file"),
    ("wrong head_dim", "'q' has head_dim 32 but the configuration has head_dim 64"),
    ("preset and config", "give --preset or --config, not both"),
    ("bad override", "invalid configuration"),
    ("bad latency", "--latency must be at least 0, not -1"),
    ("no synth report", "no synthesis report at"),
    ("synth not json", "is not valid JSON"),
    ("synth not a report", "is not a report.json of `leanattn synth` (no board"),
    ("output is a file", "is a file, not a folder"),
])
def test_bad_input_gives_one_clear_line(tmp_path, capsys, case, message):
    job = _float_job(tmp_path / "job.npz", lengths=(3,))
    out_dir = tmp_path / "o"
    args = [job, "--preset", "tiny", "-o", out_dir]
    if case == "missing job":
        args[0] = tmp_path / "none.npz"
    elif case == "not a job":
        args[0] = tmp_path / "junk.npz"
        args[0].write_text("junk")
    elif case == "wrong head_dim":
        args[2] = "default"
    elif case == "preset and config":
        args += ["--config", tmp_path / "cfg.json"]
    elif case == "bad override":
        args += ["--set", "lanes=5"]
    elif case == "bad latency":
        args += ["--latency", "-1"]
    elif case == "no synth report":
        args += ["--synth", tmp_path]
    elif case in ("synth not json", "synth not a report"):
        (tmp_path / "report.json").write_text("{" if case == "synth not json" else "{}")
        args += ["--synth", tmp_path / "report.json"]
    elif case == "output is a file":
        out_dir.write_text("")
    code, out, err = _run(capsys, *args)
    assert code == 2
    assert err.startswith("leanattn: error: ") and message in err and err.count("\n") == 1
    assert not (tmp_path / "o" / "report.html").exists() and not (tmp_path / "o" / "report.md").exists()
