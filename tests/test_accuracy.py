"""The accuracy targets of docs/numerics.md per preset: the datapath against the quantization
floor (median ≤ 0.5 %, p99 ≤ 2 % relative L2) on the real activations and on synthetic
distributions, the end-to-end error with 12-bit per-head inputs (p99 ≤ 2.5 %), every output within
the datapath error bound, and the accuracy report command."""

import functools
import json

import numpy as np
import pytest

from leanattn.hdl.config import PRESETS
from leanattn.sim import accuracy
from leanattn.sim.accuracy import (
    DISTRIBUTIONS,
    FORMATS,
    evaluate,
    fit_config,
    real_arrays,
    stats,
    synthetic_arrays,
)

PRESET_NAMES = sorted(PRESETS)
DATAPATH_MEDIAN, DATAPATH_P99 = 0.005, 0.02
END_TO_END_P99 = 0.025


@functools.cache
def _real():
    return real_arrays()


@functools.cache
def _evaluation(preset, data, fmt):
    bits, quant = FORMATS[fmt]
    base = PRESETS[preset]
    if data == "real":
        arrays, reference = _real()
    else:
        arrays, reference = synthetic_arrays(data, base.head_dim, heads=32,
                                             n_max=min(base.max_context, 1024), seed=0)
    cfg = fit_config(base, head_dim=arrays["q"].shape[-1], heads=arrays["lengths"].size,
                     input_bits=bits, quant=quant)
    return evaluate(cfg, arrays, reference)


def _check_datapath(ev, what):
    s = stats(ev.datapath)
    figures = f"{what}: datapath median {s['median']:.3e}, p99 {s['p99']:.3e}, max {s['max']:.3e}"
    assert s["median"] <= DATAPATH_MEDIAN, figures
    assert s["p99"] <= DATAPATH_P99, figures
    worst = int(np.argmax(ev.abs_error / ev.bound))
    assert ev.within_bound, (f"{what}: head {worst} error {ev.abs_error[worst]:.3e} above its "
                             f"bound {ev.bound[worst]:.3e}")


@pytest.mark.parametrize("fmt", ["int8 per-tensor", "int8 per-head"])
@pytest.mark.parametrize("preset", PRESET_NAMES)
def test_datapath_on_real_activations(preset, fmt):
    _check_datapath(_evaluation(preset, "real", fmt), f"{preset} real {fmt}")


@pytest.mark.parametrize("data", DISTRIBUTIONS)
@pytest.mark.parametrize("preset", PRESET_NAMES)
def test_datapath_on_synthetic_distributions(preset, data):
    _check_datapath(_evaluation(preset, data, "int8 per-head"), f"{preset} {data} int8 per-head")


@pytest.mark.parametrize("preset", PRESET_NAMES)
def test_end_to_end_int12_per_head_on_real_activations(preset):
    ev = _evaluation(preset, "real", "int12 per-head")
    _check_datapath(ev, f"{preset} real int12 per-head")
    s, f = stats(ev.end_to_end), stats(ev.floor)
    assert s["p99"] <= END_TO_END_P99, (
        f"{preset}: end-to-end median {s['median']:.3e}, p99 {s['p99']:.3e}, max {s['max']:.3e} "
        f"(quantization floor alone: p99 {f['p99']:.3e})")


def test_synthetic_distributions_have_their_shape():
    d = 64
    c = np.log2(np.e) / np.sqrt(d)

    def scores(kind):
        arrays, _ = synthetic_arrays(kind, d, heads=8, n_max=256, seed=1)
        q, k, n = arrays["q"][0], arrays["k"][0], arrays["lengths"][0]
        return [k[h, :n[h]] @ q[h] / np.sqrt(d) for h in range(8)]

    wide = scores("wide_range")
    assert 69 < wide[0].max() <= 70.01 and -70.01 <= wide[0].min() < -69
    assert 100 < wide[0].max() * c * np.sqrt(d) < 102                   # base-2 logits ~ +-101
    assert all(s.max() < 0 for s in scores("negative_max"))
    assert all(np.ptp(s) < 1e-9 for s in scores("equal"))
    for s in scores("dominant"):
        if s.size > 1:
            top2 = np.sort(s)[-2:]
            assert top2[1] - top2[0] >= 4 - 1e-9


def test_accuracy_report(tmp_path):
    out = tmp_path / "acc"
    assert accuracy.main(["--out", str(out), "--presets", "tiny", "--heads", "4",
                          "--n-max", "64"]) == 0
    report = json.loads((out / "accuracy.json").read_text())
    assert len(report["rows"]) == (1 + len(DISTRIBUTIONS)) * len(FORMATS)
    assert all(row["within_bound"] for row in report["rows"])
    assert "| tiny | real | int12 per-head |" in (out / "accuracy.md").read_text()
    for png in ("accuracy_real_cdf.png", "accuracy_distributions.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
