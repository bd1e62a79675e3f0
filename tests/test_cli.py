# amaranth: UnusedElaboratable=no
"""The ``leanattn`` command line (``leanattn.cli``): configs, golden runs, errors, the demo."""

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from leanattn.cli import main
from leanattn.hdl.config import PRESETS, AttentionConfig
from leanattn.hdl.normalize import Normalizer
from leanattn.sim import golden, perf
from leanattn.sim.job import Job

TINY = PRESETS["tiny"]
ERROR = re.compile(r"^leanattn: error: \S.*\n$")   # exactly one line


def run(capsys, *argv):
    """``main(argv)`` in-process: (exit status, stdout, stderr)."""
    status = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def assert_usage_error(status, err, *fragments):
    assert status == 2
    assert ERROR.match(err), err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in err, (fragment, err)


def job_arrays(seed=1, batch=2, heads=2, n_max=24, d=32):
    rng = np.random.default_rng(seed)
    return {"q": rng.standard_normal((batch, heads, d)).astype(np.float32) * 2,
            "k": rng.standard_normal((batch, heads, n_max, d)).astype(np.float32),
            "v": rng.standard_normal((batch, heads, n_max, d)).astype(np.float32),
            "lengths": np.array([[24, 5], [17, 1]])[:batch, :heads]}


def write_job(path, **arrays):
    np.savez(path, **arrays)
    return path


# -- config ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_config_of_every_preset(capsys, tmp_path, name):
    status, out, err = run(capsys, "config", "--preset", name)
    assert status == 0 and err == ""
    data = json.loads(out)
    assert set(data) == {"fields", "derived"}
    assert data["fields"] == PRESETS[name].to_dict()
    assert data["derived"] == PRESETS[name].derived()
    assert data["derived"]["acc_o_bits"] == PRESETS[name].acc_o_bits
    # Its own output, given back with --config, is the same configuration.
    path = tmp_path / "cfg.json"
    path.write_text(out)
    status, again, _ = run(capsys, "config", "--config", path)
    assert status == 0 and again == out
    assert AttentionConfig.from_json(again) == PRESETS[name]
    # --fields-only: just the fields, and that round-trips as well.
    status, fields_only, _ = run(capsys, "config", "--preset", name, "--fields-only")
    assert status == 0
    assert json.loads(fields_only) == PRESETS[name].to_dict()
    path.write_text(fields_only)
    status, again, _ = run(capsys, "config", "--config", path)
    assert status == 0 and again == out


def test_config_defaults_to_the_default_preset(capsys):
    status, out, _ = run(capsys, "config", "--fields-only")
    assert status == 0
    assert AttentionConfig.from_json(out) == PRESETS["default"]


def test_schedule_shorthands(capsys):
    """--schedule and --chunks are --set schedule=... and --set chunks=..., in order with --set."""
    status, out, _ = run(capsys, "config", "--schedule", "flashdecoding", "--chunks", "2")
    assert status == 0
    fields = json.loads(out)["fields"]
    assert (fields["schedule"], fields["chunks"]) == ("flashdecoding", 2)
    status, out, _ = run(capsys, "config", "--preset", "tiny", "--schedule", "fa2")
    assert status == 0 and json.loads(out)["fields"]["schedule"] == "fa2"
    status, _, err = run(capsys, "config", "--chunks", "2")
    assert_usage_error(status, err, "invalid configuration:", "chunks must be 0 unless schedule is "
                       "flashdecoding (schedule 'lean'), not 2")


def test_config_to_a_file(capsys, tmp_path):
    path = tmp_path / "sub" / "tiny.json"
    status, out, err = run(capsys, "config", "--preset", "tiny", "-o", path)
    assert (status, out, err) == (0, "", "")
    assert AttentionConfig.from_json(path.read_text()) == TINY
    assert path.read_text().endswith("}\n")


def test_config_to_an_unwritable_file(capsys, tmp_path):
    status, _, err = run(capsys, "config", "-o", tmp_path)
    assert_usage_error(status, err, f"cannot write {tmp_path}")


def test_set_overrides(capsys):
    status, out, _ = run(capsys, "config", "--preset", "tiny", "--fields-only",
                         "--set", "cores=4", "--set", "max_context=0x800", "--set", "tile= 32",
                         "--set", "max_heads=1_000", "--set", "quant=per_tensor")
    assert status == 0
    assert AttentionConfig.from_json(out) == TINY.replace(cores=4, max_context=2048, tile=32,
                                                          max_heads=1000, quant="per_tensor")


def test_set_overrides_a_config_file(capsys, tmp_path):
    path = tmp_path / "cfg.json"
    path.write_text(TINY.to_json())
    status, out, _ = run(capsys, "config", "--config", path, "--fields-only", "--set", "lanes=4")
    assert status == 0
    assert AttentionConfig.from_json(out) == TINY.replace(lanes=4)


@pytest.mark.parametrize(("override", "fragments"), [
    ("foo=1", ["unknown configuration field 'foo'", "foo=1"]),
    ("cores", ["an override must look like FIELD=VALUE, not 'cores'"]),
    ("cores=abc", ["cores must be an integer, not 'abc'"]),
    ("cores=2.0", ["cores must be an integer, not '2.0'"]),
    ("cores=3", ["cores must be a power of two", "not 3"]),
    ("lanes=3", ["lanes must divide head_dim (64), not 3"]),
    ("head_dim=0", ["head_dim must be in the range 1..4096, not 0"]),
    ("input_bits=17", ["input_bits must be in the range 4..16, not 17"]),
    ("quant=per_row", ["quant must be one of per_tensor, per_head, not 'per_row'"]),
    ("schedule=", ["schedule must be one of lean, fa2, flashdecoding, not ''"]),
])
def test_bad_override(capsys, tmp_path, override, fragments):
    status, out, err = run(capsys, "config", "--set", override)
    assert out == ""
    assert_usage_error(status, err, "invalid configuration:", *fragments)
    # The same on the other commands, before any file is written.
    job = write_job(tmp_path / "job.npz", **job_arrays())
    status, _, err = run(capsys, "golden", job, "-o", tmp_path / "out.npz", "--set", override)
    assert_usage_error(status, err, *fragments)
    status, _, err = run(capsys, "demo", "-o", tmp_path / "demo", "--set", override)
    assert_usage_error(status, err, *fragments)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["job.npz"]


def test_preset_and_config_together(capsys, tmp_path):
    path = tmp_path / "cfg.json"
    path.write_text(TINY.to_json())
    status, out, err = run(capsys, "config", "--preset", "tiny", "--config", path)
    assert out == ""
    assert_usage_error(status, err, "give --preset or --config, not both")


@pytest.mark.parametrize(("text", "fragments"), [
    ("{not json", ["is not valid JSON"]),
    ("[1, 2]", ["a configuration must be a JSON object, not list"]),
    ('{"head_dim": 64}', ["invalid configuration:", "lanes"]),
    (json.dumps({**TINY.to_dict(), "bogus": 1}), ["unknown configuration field(s): bogus"]),
    (json.dumps({**TINY.to_dict(), "lanes": 5}), ["lanes must divide head_dim (32), not 5"]),
    (json.dumps({**TINY.to_dict(), "tile": "16"}), ["tile must be an integer, not '16'"]),
])
def test_bad_config_file(capsys, tmp_path, text, fragments):
    path = tmp_path / "cfg.json"
    path.write_text(text)
    status, _, err = run(capsys, "config", "--config", path)
    assert_usage_error(status, err, *fragments)


def test_missing_config_file(capsys, tmp_path):
    status, _, err = run(capsys, "config", "--config", tmp_path / "none.json")
    assert_usage_error(status, err, "cannot read config file", "none.json")


def test_unknown_preset_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as info:
        main(["config", "--preset", "huge"])
    assert info.value.code == 2
    assert "invalid choice: 'huge'" in capsys.readouterr().err


# -- golden --------------------------------------------------------------------------------------


def _load(path):
    with np.load(path, allow_pickle=False) as data:
        return {name: data[name] for name in data.files}


@pytest.mark.parametrize("extra", [[], ["--set", "cores=1", "--set", "quant=per_tensor"]])
def test_golden_writes_the_documented_arrays(capsys, tmp_path, extra):
    arrays = job_arrays()
    job_path = write_job(tmp_path / "job.npz", **arrays)
    out_path = tmp_path / "deep" / "out.npz"
    status, out, err = run(capsys, "golden", job_path, "-o", out_path, "--preset", "tiny", *extra)
    assert status == 0 and err == ""
    assert "golden model: 4 heads, 47 keys, head_dim 32, " in out
    cfg = TINY.replace(cores=1, quant="per_tensor") if extra else TINY
    r = _load(out_path)
    assert {"out", "out_int", "out_scale", "q_scale", "k_scale", "v_scale", "config"} <= set(r)
    assert AttentionConfig.from_json(str(r["config"])) == cfg
    # Bit for bit what the golden model gives on the same job.
    job = Job.from_arrays(cfg, **arrays)
    want = golden.run(cfg, job).out.reshape(2, 2, 32)
    assert r["out_int"].dtype == np.int64 and r["out_int"].shape == (2, 2, 32)
    np.testing.assert_array_equal(r["out_int"], want)
    assert r["out"].dtype == np.float64 and r["out"].shape == (2, 2, 32)
    np.testing.assert_array_equal(r["out"], want * job.out_scale[:, :, None])
    np.testing.assert_array_equal(r["out_scale"], job.out_scale)
    scale_shape = () if extra else (2, 2)
    for name in ("q_scale", "k_scale", "v_scale"):
        assert r[name].shape == scale_shape
        np.testing.assert_array_equal(r[name], getattr(job, name))
    assert np.abs(r["out_int"]).max() > 1000          # a real output, not zeros


def test_golden_with_a_config_file(capsys, tmp_path):
    cfg = TINY.replace(head_dim=16, lanes=4, cores=4, tile=4)
    cfg_path = tmp_path / "cfg.json"
    cfg_path.write_text(cfg.to_json(with_derived=True))
    arrays = job_arrays(seed=2, d=16)
    status, _, err = run(capsys, "golden", write_job(tmp_path / "job.npz", **arrays),
                         "-o", tmp_path / "out.npz", "--config", cfg_path)
    assert status == 0 and err == ""
    r = _load(tmp_path / "out.npz")
    assert AttentionConfig.from_json(str(r["config"])) == cfg
    np.testing.assert_array_equal(r["out_int"].reshape(4, 16),
                                  golden.run(cfg, Job.from_arrays(cfg, **arrays)).out)


def test_golden_integer_job(capsys, tmp_path):
    rng = np.random.default_rng(3)
    arrays = {"q": rng.integers(-128, 128, (1, 3, 32)).astype(np.int8),
              "k": rng.integers(-128, 128, (1, 3, 20, 32)).astype(np.int8),
              "v": rng.integers(-128, 128, (1, 3, 20, 32)).astype(np.int8),
              "lengths": np.array([[20, 7, 13]], dtype=np.int32),
              "q_scale": 0.01, "k_scale": np.array([[0.02, 0.03, 0.04]]), "v_scale": 0.5,
              "out_scale": 0.002}
    status, _, _ = run(capsys, "golden", write_job(tmp_path / "job.npz", **arrays),
                       "-o", tmp_path / "out.npz", "--preset", "tiny")
    assert status == 0
    r = _load(tmp_path / "out.npz")
    assert r["q_scale"] == 0.01 and r["v_scale"] == 0.5
    np.testing.assert_array_equal(r["k_scale"], [[0.02, 0.03, 0.04]])
    np.testing.assert_allclose(r["out_scale"], 0.002, rtol=2.0 ** -TINY.scale_bits)
    job = Job.from_arrays(TINY, **arrays)
    np.testing.assert_array_equal(r["out_int"].reshape(3, 32), golden.run(TINY, job).out)


def test_golden_reference(capsys, tmp_path):
    job_path = write_job(tmp_path / "job.npz", **job_arrays())
    status, out, _ = run(capsys, "golden", job_path, "-o", tmp_path / "out.npz", "--preset", "tiny",
                         "--reference")
    assert status == 0
    line = re.search(r"^datapath error vs float64 on the quantized inputs \(relative L2 per head\): "
                     r"median (\S+), p99 (\S+), max (\S+)$", out, re.MULTILINE)
    assert line, out
    median, p99, worst = map(float, line.groups())
    assert 0 < median <= p99 <= worst < 1e-2
    status, out, _ = run(capsys, "golden", job_path, "-o", tmp_path / "out.npz", "--preset", "tiny")
    assert "datapath error" not in out


# -- golden: malformed jobs ----------------------------------------------------------------------


def _drop(name):
    def change(a):
        del a[name]
    return change


def _set(name, index, value):
    def change(a):
        a[name] = a[name].astype(np.result_type(a[name], type(value)))
        a[name][index] = value
    return change


def _replace(**arrays):
    return lambda a: a.update(arrays)


MALFORMED = {
    "missing_k":          (_drop("k"), "the job has no array 'k'"),
    "missing_lengths":    (_drop("lengths"), "the job has no array 'lengths'"),
    "ndim":               (_replace(q=np.zeros((2, 2, 1, 32), np.float32)), "'q' must have shape (B, H, d)"),
    "head_dim":           (_replace(q=np.zeros((2, 2, 16), np.float32)), "'q' has head_dim 16 but the "
                                                                         "configuration has head_dim 32"),
    "v_shape":            (_replace(v=np.zeros((2, 2, 23, 32), np.float32)),
                           "'v' must have the shape of 'k'"),
    "lengths_shape":      (_replace(lengths=np.ones((2, 3), int)), "'lengths' must have shape (B, H)"),
    "length_zero":        (_set("lengths", (1, 0), 0), "lengths[1, 0] must be in 1..Nmax (24), not 0"),
    "length_over_nmax":   (_set("lengths", (0, 1), 25), "lengths[0, 1] must be in 1..Nmax (24), not 25"),
    "nan":                (_set("k", (1, 1, 0, 3), np.nan), "'k' holds NaN or infinity in head 3"),
    "inf":                (_set("q", (0, 0, 0), np.inf), "'q' holds NaN or infinity in head 0"),
    "float_with_scale":   (_replace(q_scale=np.float64(0.5)), "must not give 'q_scale'"),
    "ints_out_of_range":  (_replace(v=np.full((2, 2, 24, 32), 300, np.int16), v_scale=np.float64(1.0)),
                           "'v' must fit input_bits (8): values in -128..127"),
    "int_without_scale":  (_replace(v=np.ones((2, 2, 24, 32), np.int8)), "must give 'v_scale'"),
    "bad_scale":          (_replace(v=np.ones((2, 2, 24, 32), np.int8), v_scale=np.float64(-1.0)),
                           "'v_scale' must be finite and positive, not -1.0"),
    "bad_scale_shape":    (_replace(v=np.ones((2, 2, 24, 32), np.int8), v_scale=np.ones(4)),
                           "'v_scale' must be a number or an array of shape (B, H) = (2, 2)"),
    "bad_out_scale":      (_replace(out_scale=np.float64(0.0)), "'out_scale' must be finite and positive"),
    "object_array":       (_replace(q=np.zeros((2, 2, 32), object)), "is not a readable .npz job file"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_golden_malformed_job(capsys, tmp_path, case):
    change, fragment = MALFORMED[case]
    arrays = job_arrays()
    change(arrays)
    job_path = tmp_path / "job.npz"
    np.savez(job_path, **arrays)
    out_path = tmp_path / "out.npz"
    status, out, err = run(capsys, "golden", job_path, "-o", out_path, "--preset", "tiny")
    assert out == ""
    assert_usage_error(status, err, fragment)
    assert not out_path.exists()


def test_golden_job_limits_of_the_config(capsys, tmp_path):
    job_path = write_job(tmp_path / "job.npz", **job_arrays())
    out_path = tmp_path / "out.npz"
    status, _, err = run(capsys, "golden", job_path, "-o", out_path, "--preset", "tiny",
                         "--set", "max_context=20")
    assert_usage_error(status, err, "lengths[0, 0] must be at most max_context (20), not 24")
    status, _, err = run(capsys, "golden", job_path, "-o", out_path, "--preset", "tiny",
                         "--set", "max_heads=3")
    assert_usage_error(status, err, "the job has 4 heads (B*H) but max_heads is 3")
    status, _, err = run(capsys, "golden", job_path, "-o", out_path)     # default: head_dim 64
    assert_usage_error(status, err, "head_dim 32 but the configuration has head_dim 64")
    assert not out_path.exists()


@pytest.mark.parametrize("kind", ["missing", "npy", "text", "truncated", "directory"])
def test_golden_unreadable_job_file(capsys, tmp_path, kind):
    job_path = tmp_path / "job.npz"
    if kind == "npy":
        with open(job_path, "wb") as file:
            np.save(file, np.zeros(4))
    elif kind == "text":
        job_path.write_text("not a job\n")
    elif kind == "truncated":
        write_job(tmp_path / "full.npz", **job_arrays())
        job_path.write_bytes((tmp_path / "full.npz").read_bytes()[:200])
    elif kind == "directory":
        job_path.mkdir()
    out_path = tmp_path / "out.npz"
    status, out, err = run(capsys, "golden", job_path, "-o", out_path, "--preset", "tiny")
    assert out == ""
    assert_usage_error(status, err, "no job file at" if kind == "missing" else
                       "is not a readable .npz job file")
    assert not out_path.exists()


def test_golden_unwritable_output(capsys, tmp_path):
    job_path = write_job(tmp_path / "job.npz", **job_arrays())
    (tmp_path / "taken").mkdir()
    status, out, err = run(capsys, "golden", job_path, "-o", tmp_path / "taken", "--preset", "tiny")
    assert_usage_error(status, err, "cannot write", "taken")
    status, out, err = run(capsys, "golden", job_path, "-o", job_path / "out.npz", "--preset", "tiny")
    assert_usage_error(status, err, "cannot write")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["job.npz", "taken"]
    assert not any((tmp_path / "taken").iterdir())


# -- demo ----------------------------------------------------------------------------------------


def test_demo_default(capsys, tmp_path):
    status, out, err = run(capsys, "demo", "-o", tmp_path)
    assert status == 0 and err == ""
    assert "\nconfig: default (head_dim 64, cores 4, lanes 8, tile 32, int8 per_head)\n" in out
    r = _load(tmp_path / "golden.npz")
    job = _load(tmp_path / "job.npz")
    assert set(job) == {"q", "k", "v", "lengths"}
    assert r["out"].shape == job["q"].shape
    assert AttentionConfig.from_json(str(r["config"])) == PRESETS["default"]
    datapath = re.search(r"datapath error vs float64 on the quantized inputs: median (\S+), "
                         r"max (\S+)", out)
    assert datapath and float(datapath.group(2)) < 1e-2


def test_demo_preset_with_overrides(capsys, tmp_path):
    status, out, err = run(capsys, "demo", "--preset", "tiny", "--set", "max_context=64",
                           "--seed", "3", "-o", tmp_path / "d")
    assert status == 0 and err == ""
    assert "\nconfig: tiny + overrides (head_dim 32," in out
    arrays = _load(tmp_path / "d" / "job.npz")
    assert arrays["k"].shape[2] == 64
    cfg = TINY.replace(max_context=64)
    job = Job.from_arrays(cfg, **arrays)
    np.testing.assert_array_equal(_load(tmp_path / "d" / "golden.npz")["out_int"].reshape(
        job.flat_heads, -1), golden.run(cfg, job).out)


def test_demo_preset_and_config_names(capsys, tmp_path):
    status, out, _ = run(capsys, "demo", "--preset", "tiny", "-o", tmp_path / "a")
    assert status == 0 and "\nconfig: tiny (head_dim 32," in out
    cfg_path = tmp_path / "small.json"
    cfg_path.write_text(TINY.replace(max_context=32).to_json())
    status, out, _ = run(capsys, "demo", "--config", cfg_path, "-o", tmp_path / "b")
    assert status == 0 and f"\nconfig: {cfg_path} (head_dim 32," in out
    status, out, _ = run(capsys, "demo", "--config", cfg_path, "--set", "cores=1",
                         "-o", tmp_path / "c")
    assert status == 0 and f"\nconfig: {cfg_path} + overrides (head_dim 32, cores 1," in out


def test_demo_job_adapts_to_small_configurations(capsys, tmp_path):
    status, out, err = run(capsys, "demo", "--preset", "tiny", "--set", "max_heads=1",
                           "--set", "max_context=40", "-o", tmp_path / "d")
    assert status == 0, err
    with np.load(tmp_path / "d" / "job.npz") as job:
        assert job["lengths"].shape == (1, 1) and int(job["lengths"].max()) <= 40


# -- as a program --------------------------------------------------------------------------------


def _program(*argv):
    return subprocess.run([*argv], capture_output=True, text=True, timeout=120)


def test_console_script(tmp_path):
    script = Path(sys.executable).parent / "leanattn"
    result = _program(script, "config", "--preset", "tiny", "--fields-only")
    assert result.returncode == 0, result.stderr
    assert AttentionConfig.from_json(result.stdout) == TINY


def test_module_golden_and_errors(tmp_path):
    job_path = write_job(tmp_path / "job.npz", **job_arrays())
    cli = [sys.executable, "-m", "leanattn.cli"]
    result = _program(*cli, "golden", job_path, "-o", tmp_path / "out.npz", "--preset", "tiny",
                      "--reference")
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert "datapath error vs float64" in result.stdout
    assert (tmp_path / "out.npz").exists()
    # A malformed job: one line on stderr, status 2, no traceback, nothing written.
    arrays = job_arrays()
    arrays["lengths"][1, 1] = 0
    bad = write_job(tmp_path / "bad.npz", **arrays)
    result = _program(*cli, "golden", bad, "-o", tmp_path / "bad_out.npz", "--preset", "tiny")
    assert result.returncode == 2
    assert result.stdout == ""
    assert ERROR.match(result.stderr), result.stderr
    assert "lengths[1, 1] must be in 1..Nmax (24), not 0" in result.stderr
    assert not (tmp_path / "bad_out.npz").exists()
    # A bad configuration the same way.
    result = _program(*cli, "config", "--set", "lanes=3")
    assert result.returncode == 2
    assert result.stderr == "leanattn: error: invalid configuration: lanes must divide head_dim (64), " \
                            "not 3\n"


# -- gen and sim ---------------------------------------------------------------------------------

def test_gen_writes_verilog_config_and_manifest(capsys, tmp_path):
    status, out, err = run(capsys, "gen", "--preset", "tiny", "-o", tmp_path / "tiny")
    assert status == 0, err
    verilog = (tmp_path / "tiny" / "lean_attention.v").read_text()
    assert "module lean_attention(" in verilog
    assert AttentionConfig.from_json((tmp_path / "tiny" / "config.json").read_text()) == TINY
    manifest = json.loads((tmp_path / "tiny" / "manifest.json").read_text())
    ports = {p["name"]: p for p in manifest["ports"]}
    for c in range(TINY.cores):
        for name in (f"o_kreq_{c}", f"i_k_{c}", f"o_vreq_{c}", f"i_v_{c}"):
            assert ports[name]["kind"] == "stream"
            assert f"{name}__payload" in verilog
    assert ports["i_k_0"]["payload_width"] == TINY.lanes * TINY.input_bits
    assert sum(f["width"] for f in ports["i_desc"]["fields"]) == ports["i_desc"]["payload_width"]
    assert ports["o_error"]["width"] == 2 and manifest["error_codes"]["heads"] == 2
    assert (manifest["cycles"]["A"], manifest["cycles"]["B"]) == (1536, 200)
    assert manifest["cycles"]["schedule"] == "lean"
    assert manifest["cycles"]["timing"]["logit_latency"] == perf.timing(TINY, latency=0).logit_latency
    assert "lean_attention.v" in out


def test_gen_manifest_of_another_schedule(capsys, tmp_path):
    """The lean bound is stated for lean only; every schedule points to the exact model."""
    status, _, _ = run(capsys, "gen", "--preset", "tiny", "--schedule", "fa2", "-o", tmp_path / "fa2")
    assert status == 0
    cycles = json.loads((tmp_path / "fa2" / "manifest.json").read_text())["cycles"]
    assert cycles["schedule"] == "fa2" and "bound" not in cycles and "leanattn perf" in cycles["exact"]


def test_gen_axis_and_fusesoc_core(capsys, tmp_path):
    """--axis adds the AXI4-Stream wrapper; the .core file parses with FuseSoC and names each
    target's toplevel and files."""
    from fusesoc.capi2.core import CoreInterface
    from fusesoc.capi2.coreparser import Core2Parser

    status, out, err = run(capsys, "gen", "--preset", "tiny", "--axis", "-o", tmp_path / "tiny")
    assert status == 0, err
    folder = tmp_path / "tiny"
    assert "module lean_attention_axis(" in (folder / "lean_attention_axis.v").read_text()
    axis = json.loads((folder / "manifest.json").read_text())["axis"]
    assert axis["interfaces"]["m_axis_out"]["tuser"] == "head index"
    assert axis["interfaces"][f"s_axis_k{TINY.cores - 1}"]["tdata_width"] == 8
    assert "lean_attention_tiny.core" in out
    core = CoreInterface(Core2Parser(), folder / "lean_attention_tiny.core")
    assert str(core.name) == "leanattn:ip:lean_attention_tiny:0.1.0"
    files = lambda target: [f["name"] for f in core.get_files({"target": target, "is_toplevel": True})]
    toplevel = lambda target: core.get_toplevel({"target": target, "is_toplevel": True})
    assert (toplevel("default"), files("default")) == (
        "lean_attention", ["lean_attention.v", "config.json", "manifest.json"])
    assert (toplevel("axis"), files("axis")[0]) == ("lean_attention_axis", "lean_attention_axis.v")


def test_gen_target_ecp5(capsys, tmp_path):
    """--target ecp5: the products with registers become MULT18X18D instances (one per PV lane of
    every core, one per lane slice of the normalizer), the block's model is written beside them
    and the two compile together; the manifest names the target, the core a ``sim`` target with
    the model. The generic Verilog has no instance."""
    from fusesoc.capi2.core import CoreInterface
    from fusesoc.capi2.coreparser import Core2Parser

    status, out, err = run(capsys, "gen", "--preset", "default", "--target", "ecp5", "-o", tmp_path / "ecp5")
    assert status == 0, err
    folder = tmp_path / "ecp5"
    verilog = (folder / "lean_attention.v").read_text()
    cfg = PRESETS["default"]
    blocks = Normalizer(cfg).lane_products.multipliers + 1 + cfg.cores * cfg.lanes
    assert len(re.findall(r"^\s*MULT18X18D #\(", verilog, re.M)) == blocks == 49
    assert "default, ecp5 ->" in out and "mult18x18d.v" in out
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["target"] == "ecp5" and "mult18x18d.v" in manifest["simulation_models"]
    compiled = subprocess.run(["iverilog", "-g2005", "-s", "lean_attention", "-o", str(folder / "a.vvp"),
                               str(folder / "lean_attention.v"), str(folder / "mult18x18d.v")],
                              capture_output=True, text=True)
    assert compiled.returncode == 0, compiled.stderr
    core = CoreInterface(Core2Parser(), folder / "lean_attention_default.core")
    files = lambda target: [f["name"] for f in core.get_files({"target": target, "is_toplevel": True})]
    assert files("default") == ["lean_attention.v", "config.json", "manifest.json"]
    assert files("sim") == ["lean_attention.v", "mult18x18d.v", "config.json", "manifest.json"]

    status, _, err = run(capsys, "gen", "--preset", "tiny", "-o", tmp_path / "generic")
    assert status == 0, err
    assert "MULT18X18D" not in (tmp_path / "generic" / "lean_attention.v").read_text()
    assert json.loads((tmp_path / "generic" / "manifest.json").read_text())["target"] == "generic"
    assert not (tmp_path / "generic" / "mult18x18d.v").exists()


def test_gen_core_names_custom_configs(capsys, tmp_path):
    status, out, err = run(capsys, "gen", "--preset", "tiny", "--set", "tile=32", "-o", tmp_path)
    assert status == 0, err
    assert not (tmp_path / "lean_attention_axis.v").exists()
    (core,) = tmp_path.glob("*.core")
    assert re.fullmatch(r"lean_attention_[0-9a-f]{8}\.core", core.name)
    assert "targets:\n  default:" in core.read_text() and "axis" not in core.read_text()


def test_sim_is_bit_exact_and_reports_cycles(capsys, tmp_path):
    """A small job on the generated tiny RTL (Verilator): the same outputs as `leanattn golden`,
    plus the cycle count and the ideal."""
    job = write_job(tmp_path / "job.npz", **job_arrays())
    status, out, err = run(capsys, "golden", job, "-o", tmp_path / "golden.npz", "--preset", "tiny")
    assert status == 0, err
    status, out, err = run(capsys, "sim", job, "-o", tmp_path / "rtl.npz", "--preset", "tiny",
                           "--simulator", "verilator", "--stall-rate", "40",
                           "--build-dir", tmp_path / "sim")
    assert status == 0, err
    assert "bit-exact with the golden model: yes" in out
    rtl, gold = _load(tmp_path / "rtl.npz"), _load(tmp_path / "golden.npz")
    assert np.array_equal(rtl["out_int"], gold["out_int"])
    assert rtl["cycles"] > rtl["ideal_cycles"] > 0
    assert re.search(r"cycles: \d+ \(ideal \d+, efficiency 0\.\d+\)", out)


def test_sim_target_ecp5(capsys, tmp_path):
    """--target ecp5: the RTL with its MULT18X18D instances (and the block's model), bit-exact."""
    job = write_job(tmp_path / "job.npz", **job_arrays(batch=1, heads=2))
    status, out, err = run(capsys, "sim", job, "-o", tmp_path / "rtl.npz", "--preset", "tiny",
                           "--simulator", "icarus", "--target", "ecp5", "--build-dir", tmp_path / "sim")
    assert status == 0, err
    assert "bit-exact with the golden model: yes" in out
    assert "MULT18X18D #(" in (tmp_path / "sim" / "system.v").read_text()


def test_sim_rejects_a_job_with_too_many_heads(capsys, tmp_path):
    arrays = job_arrays(seed=2, batch=2, heads=2)
    arrays = {name: np.concatenate([a] * 3, axis=1) if name != "lengths" else np.tile(a, (1, 3))
              for name, a in arrays.items()}                      # 2 x 6 = 12 heads
    job = write_job(tmp_path / "job.npz", **arrays)
    status, _, err = run(capsys, "sim", job, "-o", tmp_path / "rtl.npz", "--preset", "tiny")
    assert_usage_error(status, err, "12 heads", "max_heads is 8")
    assert not (tmp_path / "rtl.npz").exists()


@pytest.mark.parametrize("simulator", ["icarus", pytest.param("verilator", marks=pytest.mark.slow)])
def test_sim_waves(capsys, tmp_path, simulator):
    """--waves: an FST from either simulator (binary, header block of type 0 and length 329)."""
    job = write_job(tmp_path / "job.npz", **job_arrays(batch=1, heads=1))
    status, out, err = run(capsys, "sim", job, "-o", tmp_path / "rtl.npz", "--preset", "tiny",
                           "--simulator", simulator, "--waves", tmp_path / "job.wave",
                           "--build-dir", tmp_path / "sim")
    assert status == 0, err
    head = (tmp_path / "job.wave").read_bytes()[:9]
    assert head[0] == 0 and int.from_bytes(head[1:9], "big") == 329
