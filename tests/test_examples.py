"""The scripts in examples/ run as documented and produce what they promise."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from leanattn.hdl.config import PRESETS
from leanattn.sim import golden
from leanattn.sim.job import Job, load_job

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"


def _run(script, *args, cwd=ROOT):
    return subprocess.run([sys.executable, str(EXAMPLES / script), *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, stdin=subprocess.DEVNULL)


def test_own_activations_golden_only(tmp_path):
    result = _run("own_activations.py", "--no-sim", "-o", tmp_path)
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["preset"] == "tiny" and report["heads"] == 2
    assert "rtl_bit_exact" not in report
    datapath, total = np.array(report["datapath_error"]), np.array(report["end_to_end_error"])
    assert np.all(datapath < 0.005), datapath          # the datapath target of docs/numerics.md
    assert np.all(total >= datapath * 0.5) and np.all(total < 0.05), total
    assert (tmp_path / "errors.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "datapath error (relative L2 per head)" in result.stdout


def test_own_activations_job_file_gives_the_bits_of_the_float_arrays(tmp_path):
    """The integer job the script writes runs bit for bit like the float arrays it came from."""
    sys.path.insert(0, str(EXAMPLES))
    try:
        import own_activations
    finally:
        sys.path.remove(str(EXAMPLES))
    cfg = PRESETS["tiny"]
    q, k, v, lengths = own_activations.make_activations(cfg, seed=5)
    job = Job.from_arrays(cfg, q=q, k=k, v=v, lengths=lengths)
    own_activations.write_job(tmp_path / "job.npz", job)
    again = load_job(tmp_path / "job.npz", cfg)
    assert np.array_equal(golden.run(cfg, again).out, golden.run(cfg, job).out)
    assert np.array_equal(again.out_mant, job.out_mant) and np.array_equal(again.score_mant, job.score_mant)


def test_own_activations_takes_an_input_file(tmp_path):
    rng = np.random.default_rng(2)
    acts = tmp_path / "acts.npz"
    np.savez(acts, q=rng.standard_normal((2, 1, 32)).astype(np.float16),
             k=rng.standard_normal((2, 1, 20, 32)), v=rng.standard_normal((2, 1, 20, 32)),
             lengths=np.array([[20], [3]]))
    result = _run("own_activations.py", "--no-sim", "--input", acts, "-o", tmp_path / "out")
    assert result.returncode == 0, result.stderr
    assert json.loads((tmp_path / "out/report.json").read_text())["lengths"] == [20, 3]


def test_own_activations_bad_input_is_one_line(tmp_path):
    acts = tmp_path / "acts.npz"
    np.savez(acts, q=np.zeros((1, 1, 32)), lengths=np.array([[1]]))
    result = _run("own_activations.py", "--no-sim", "--input", acts, "-o", tmp_path / "out")
    assert result.returncode == 2
    expected = f"own_activations: error: {acts} has no array k, v (needs q, k, v, lengths)"
    assert result.stderr.strip() == expected
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_own_activations_on_the_rtl(tmp_path):
    result = _run("own_activations.py", "-o", tmp_path, "--simulator", "verilator")
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["rtl_bit_exact"] is True
    assert report["cycles"] > report["ideal_cycles"] > 0
    assert "bit-exact with the golden model: yes" in result.stdout


def test_amaranth_embed_writes_the_parent(tmp_path):
    result = _run("amaranth_embed.py", "--preset", "tiny", "-o", tmp_path)
    assert result.returncode == 0, result.stderr
    verilog = tmp_path / "attention_subsystem.v"
    text = verilog.read_text()
    assert "\nmodule attention_subsystem(" in text
    assert "\nmodule \\attention_subsystem.attention " in text          # the core, a submodule
    for port in ("i_write__payload", "i_desc__valid", "o_out__ready", "o_mem_error"):
        assert port in result.stdout and port in text
    compiled = subprocess.run(["iverilog", "-g2005", "-s", "attention_subsystem",
                               "-o", str(tmp_path / "a.vvp"), str(verilog)], capture_output=True, text=True)
    assert compiled.returncode == 0, compiled.stderr


def test_amaranth_embed_rejects_a_bad_bank_size(tmp_path):
    result = _run("amaranth_embed.py", "--bank-keys", "0", "-o", tmp_path)
    assert result.returncode == 2
    assert result.stderr.startswith("amaranth_embed: error: bank_keys")
    assert not (tmp_path / "attention_subsystem.v").exists()
