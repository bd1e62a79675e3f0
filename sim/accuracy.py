"""Accuracy of the datapath: the golden model against the quantization floor and against float64.

Three errors per head, each the relative L2 error of :func:`leanattn.sim.reference.rel_l2`
(denominator floored at 0.05 rms):

* **datapath**: golden-model output (dequantized) vs the quantization floor, i.e. float64
  attention on the same quantized integers -- the datapath's own error (targets in
  docs/numerics.md: median ≤ 0.5 %, p99 ≤ 2 %);
* **end to end**: golden-model output vs float64 attention on the float inputs (docs/numerics.md, 12-bit
  per-head inputs on the real activations: p99 ≤ 2.5 %);
* **floor**: the quantization floor vs float64 on the float inputs -- input quantization alone.

Every output is also checked against :func:`leanattn.sim.reference.datapath_error_bound`.

Data sets: the real attention activations (``real_attn_dev.npz``, head size 32: each preset is run
with ``head_dim`` 32) and synthetic distributions (:data:`DISTRIBUTIONS`, at each preset's own
``head_dim``). Input formats: :data:`FORMATS`.

Run ``python -m leanattn.sim.accuracy [--out build/accuracy]``: prints the table as Markdown and
writes ``accuracy.json``, ``accuracy.md`` and PNG plots into the output folder.
"""

import argparse
import json
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..hdl.config import PRESETS
from . import golden
from .job import Job
from .reference import attention, datapath_error_bounds, rel_l2

__all__ = [
    "FORMATS", "DISTRIBUTIONS", "REAL_DATA_PATHS", "real_data_path", "real_arrays",
    "synthetic_arrays", "fit_config", "Evaluation", "evaluate", "stats", "accuracy_table",
    "markdown_table", "main",
]

#: Input formats: name -> (input_bits, quant).
FORMATS = {
    "int8 per-tensor": (8, "per_tensor"),
    "int8 per-head":   (8, "per_head"),
    "int12 per-head":  (12, "per_head"),
}

#: Synthetic score distributions (see :func:`synthetic_arrays`).
DISTRIBUTIONS = ("gaussian", "student_t", "dominant", "equal", "negative_max", "wide_range")

#: Where the real activations are looked for, in order (``LEANATTN_REAL_DATA`` first, if set).
REAL_DATA_PATHS = (
    Path(__file__).resolve().parent.parent / "tests" / "data" / "real_attn_dev.npz",
)


# -- data ----------------------------------------------------------------------------------------

def real_data_path():
    """The real activations file: ``$LEANATTN_REAL_DATA`` or the first of :data:`REAL_DATA_PATHS`
    that exists."""
    if os.environ.get("LEANATTN_REAL_DATA"):
        return Path(os.environ["LEANATTN_REAL_DATA"])
    for path in REAL_DATA_PATHS:
        if path.exists():
            return path
    raise FileNotFoundError("real_attn_dev.npz not found (set LEANATTN_REAL_DATA); looked in "
                            + ", ".join(map(str, REAL_DATA_PATHS)))


def real_arrays(path=None):
    """Job arrays of the 96 real cases as one batch of 96 heads, and their float64 ``ref_out``."""
    with np.load(path or real_data_path(), allow_pickle=False) as data:
        arrays = {"q": data["q"][None], "k": data["k"][None], "v": data["v"][None],
                  "lengths": data["n"][None].astype(np.int64)}
        return arrays, np.array(data["ref_out"], dtype=np.float64)


def _along(q, scores, rng, noise):
    """Keys whose scores with ``q`` (natural units, ``q.k / sqrt(d)``) are ``scores`` ``(n,)``: the
    component along ``q`` sets the score, a Gaussian part orthogonal to ``q`` makes them differ."""
    d = q.shape[0]
    unit = q / np.linalg.norm(q)
    z = rng.standard_normal((scores.shape[0], d)) * noise
    z -= np.outer(z @ unit, unit)
    return z + np.outer(scores * math.sqrt(d) / np.linalg.norm(q), unit)


def synthetic_arrays(kind, head_dim, *, heads=32, n_max=1024, seed=0):
    """Float64 job arrays (one batch of ``heads`` heads) of a synthetic distribution, and float64
    attention on them. Ragged lengths in ``1 .. n_max`` (the first head ``n_max``, the last 1).

    * ``gaussian``: q, k, v standard normal, q scaled by 0.3 .. 2.5 per head (scores to about ±10);
    * ``student_t``: q, k, v Student-t with 3 degrees of freedom (heavy tails), q scaled 0.3 .. 1.5;
    * ``dominant``: Gaussian scores (std 1) and one key 4 .. 25 above all others;
    * ``equal``: every key of a head the same vector: all scores equal (and non-zero);
    * ``negative_max``: scores ``-mu + 2 N(0, 1)`` with ``mu`` in 10 .. 60: the row max is negative;
    * ``wide_range``: scores uniform in ``±R``, ``R`` in 30 .. 70 (the first head exactly ±70:
      base-2 logits of about ±101, inside the logit range of ±128).
    """
    if kind not in DISTRIBUTIONS:
        raise ValueError(f"kind must be one of {', '.join(DISTRIBUTIONS)}, not {kind!r}")
    rng = np.random.default_rng([seed, DISTRIBUTIONS.index(kind), head_dim])
    d = head_dim
    lengths = rng.integers(1, n_max + 1, size=heads)
    lengths[0] = n_max
    if heads > 1:
        lengths[-1] = 1
    q = rng.standard_normal((heads, d))
    k = rng.standard_normal((heads, n_max, d))
    v = rng.standard_normal((heads, n_max, d))
    for h in range(heads):
        n = n_max
        if kind == "gaussian":
            q[h] *= rng.uniform(0.3, 2.5)
        elif kind == "student_t":
            q[h] = rng.standard_t(3, d) * rng.uniform(0.3, 1.5)
            k[h] = rng.standard_t(3, (n, d))
            v[h] = rng.standard_t(3, (n, d))
        elif kind == "dominant":
            j = int(rng.integers(lengths[h]))
            others = k[h, :lengths[h]] @ q[h] / math.sqrt(d)
            others[j] = -np.inf
            top = (others.max() if lengths[h] > 1 else 0.0) + rng.uniform(4, 25)
            k[h, j] = _along(q[h], np.array([top]), rng, 1.0)[0]
        elif kind == "equal":
            q[h] *= rng.uniform(0.3, 3.0)
            k[h] = k[h, 0]
        elif kind == "negative_max":
            scores = -rng.uniform(10, 60) + 2 * rng.standard_normal(n)
            k[h] = _along(q[h], scores, rng, 1.0)
        elif kind == "wide_range":
            r = 70.0 if h == 0 else rng.uniform(30, 70)
            scores = rng.uniform(-r, r, n)
            if h == 0:
                scores[:2] = r, -r
            k[h] = _along(q[h], scores, rng, 0.5)
    valid = np.arange(n_max)[None, :, None] < lengths[:, None, None]
    k, v = k * valid, v * valid
    arrays = {"q": q[None], "k": k[None], "v": v[None], "lengths": lengths[None]}
    return arrays, attention(q, k, v, lengths)


# -- evaluation ----------------------------------------------------------------------------------

def fit_config(cfg, *, head_dim=None, heads=1, input_bits=None, quant=None):
    """``cfg`` adapted to a data set: ``head_dim`` (lanes: the largest common divisor with the
    preset's lanes), ``max_heads`` at least ``heads``, and the input format. The numerics formats
    (logits, tables, weights, reciprocal, output) stay those of ``cfg``."""
    head_dim = cfg.head_dim if head_dim is None else head_dim
    return cfg.replace(head_dim=head_dim, lanes=math.gcd(cfg.lanes, head_dim),
                       max_heads=max(cfg.max_heads, heads),
                       input_bits=cfg.input_bits if input_bits is None else input_bits,
                       quant=cfg.quant if quant is None else quant)


@dataclass
class Evaluation:
    """Per-head errors of one data set on one configuration (arrays of shape ``(heads,)``).

    ``datapath``, ``end_to_end``, ``floor``: relative L2 errors (see the module docstring);
    ``abs_error``: largest absolute error of a head vs the floor, in output units; ``bound``: its
    :func:`~leanattn.sim.reference.datapath_error_bound`.
    """
    datapath:   np.ndarray
    end_to_end: np.ndarray
    floor:      np.ndarray
    abs_error:  np.ndarray
    bound:      np.ndarray

    @property
    def within_bound(self):
        return bool(np.all(self.abs_error <= self.bound))


def evaluate(cfg, arrays, reference):
    """Run ``arrays`` through quantization and the golden model on ``cfg`` and measure it against
    the quantization floor and against ``reference`` (float64 attention on the float inputs)."""
    job = Job.from_arrays(cfg, **arrays)
    out = golden.run(cfg, job).out * job.head_scales("out")[:, None]
    floor = attention(*job.dequantized(), job.lengths)
    reference = np.asarray(reference, dtype=np.float64).reshape(out.shape)
    return Evaluation(datapath=rel_l2(out, floor), end_to_end=rel_l2(out, reference),
                      floor=rel_l2(floor, reference), abs_error=np.abs(out - floor).max(axis=1),
                      bound=datapath_error_bounds(cfg, job))


def stats(x):
    """``{"median", "p99", "max"}`` of per-head errors (numpy ``percentile``, linear)."""
    x = np.asarray(x, dtype=np.float64)
    return {"median": float(np.median(x)), "p99": float(np.percentile(x, 99)),
            "max": float(x.max())}


def _datasets(head_dim, heads, n_max, seed, real_path):
    yield "real", real_arrays(real_path)
    for kind in DISTRIBUTIONS:
        yield kind, synthetic_arrays(kind, head_dim, heads=heads, n_max=n_max, seed=seed)


def accuracy_table(presets=tuple(PRESETS), formats=tuple(FORMATS), *, heads=32, n_max=1024,
                   seed=0, real_path=None):
    """One row per preset x data set x input format: stats of the three errors, the bound check.

    Returns ``(rows, evaluations)``; ``evaluations[(preset, data, format)]`` is the
    :class:`Evaluation`.
    """
    rows, evaluations = [], {}
    for preset in presets:
        base = PRESETS[preset]
        for data, (arrays, reference) in _datasets(base.head_dim, heads, n_max, seed, real_path):
            head_dim = arrays["q"].shape[-1]
            n = arrays["lengths"].size
            for fmt in formats:
                bits, quant = FORMATS[fmt]
                cfg = fit_config(base, head_dim=head_dim, heads=n, input_bits=bits, quant=quant)
                cfg = cfg.replace(max_context=max(cfg.max_context, int(arrays["lengths"].max())))
                ev = evaluate(cfg, arrays, reference)
                evaluations[(preset, data, fmt)] = ev
                rows.append({
                    "preset": preset, "data": data, "format": fmt, "head_dim": head_dim,
                    "heads": n, "datapath": stats(ev.datapath), "end_to_end": stats(ev.end_to_end),
                    "floor": stats(ev.floor), "within_bound": ev.within_bound,
                    "bound_use": float((ev.abs_error / ev.bound).max()),
                })
    return rows, evaluations


# -- report --------------------------------------------------------------------------------------

def markdown_table(rows):
    """The rows as a Markdown table (errors in percent)."""
    def pct(s):
        return f"{100 * s['median']:.3f} / {100 * s['p99']:.3f} / {100 * s['max']:.3f}"

    lines = [
        "| preset | data | input | datapath vs floor % (median / p99 / max) | end to end % "
        "(median / p99 / max) | floor alone % (median / p99 / max) | within bound (max use) |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        lines.append(f"| {r['preset']} | {r['data']} | {r['format']} | {pct(r['datapath'])} | "
                     f"{pct(r['end_to_end'])} | {pct(r['floor'])} | "
                     f"{'yes' if r['within_bound'] else 'NO'} ({r['bound_use']:.2f}) |")
    return "\n".join(lines)


def _plot(evaluations, presets, out_dir):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    fig, axes = plt.subplots(1, len(presets), figsize=(5 * len(presets), 4), squeeze=False,
                             sharey=True)
    for ax, preset in zip(axes[0], presets):
        for i, fmt in enumerate(FORMATS):
            ev = evaluations.get((preset, "real", fmt))
            if ev is None:
                continue
            color = f"C{i}"
            for values, style, label in ((ev.datapath, "-", f"datapath, {fmt}"),
                                         (ev.floor, ":", f"floor alone, {fmt}")):
                x = np.sort(np.maximum(values, 1e-7))
                ax.step(x, np.arange(1, x.size + 1) / x.size, style, color=color, label=label,
                        where="post")
        ax.axvline(0.005, color="grey", lw=0.8)
        ax.axvline(0.02, color="grey", lw=0.8, ls="--")
        ax.set_xscale("log")
        ax.set_title(f"{preset}: real activations (head_dim 32)")
        ax.set_xlabel("relative L2 error per head")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("fraction of heads (CDF)")
    axes[0][-1].legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    paths.append(out_dir / "accuracy_real_cdf.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)

    fig, axes = plt.subplots(1, len(presets), figsize=(5 * len(presets), 4), squeeze=False,
                             sharey=True)
    fmt = "int8 per-head"
    for ax, preset in zip(axes[0], presets):
        names = [d for d in ("real",) + DISTRIBUTIONS if (preset, d, fmt) in evaluations]
        data = [np.maximum(evaluations[(preset, d, fmt)].datapath, 1e-7) for d in names]
        ax.boxplot(data, whis=(1, 99))
        ax.set_xticks(range(1, len(names) + 1), names, rotation=30, fontsize=8)
        ax.axhline(0.005, color="grey", lw=0.8)
        ax.axhline(0.02, color="grey", lw=0.8, ls="--")
        ax.set_yscale("log")
        ax.set_title(f"{preset}: datapath error vs floor ({fmt})")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("relative L2 error per head")
    fig.tight_layout()
    paths.append(out_dir / "accuracy_distributions.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)
    return paths


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m leanattn.sim.accuracy",
                                     description="Accuracy table of the leanattn datapath.")
    parser.add_argument("--out", default="build/accuracy", help="output folder")
    parser.add_argument("--presets", nargs="+", default=list(PRESETS), choices=list(PRESETS))
    parser.add_argument("--heads", type=int, default=32, help="heads per synthetic data set")
    parser.add_argument("--n-max", type=int, default=1024, help="longest synthetic context")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-plots", action="store_true")
    args = parser.parse_args(argv)

    start = time.perf_counter()
    rows, evaluations = accuracy_table(args.presets, heads=args.heads, n_max=args.n_max,
                                       seed=args.seed)
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    table = markdown_table(rows)
    header = ("Relative L2 error per head, denominator floored at 0.05 rms; datapath = golden "
              "model vs float64 on the quantized inputs (the quantization floor); end to end = vs "
              "float64 on the float inputs; floor alone = input quantization only. Targets "
              "(targets): datapath median <= 0.5 %, p99 <= 2 %; end to end with int12 per-head "
              "on the real activations p99 <= 2.5 %. 'max use' = largest |error| / bound.")
    (out_dir / "accuracy.md").write_text(f"# Accuracy\n\n{header}\n\n{table}\n")
    (out_dir / "accuracy.json").write_text(json.dumps(
        {"heads": args.heads, "n_max": args.n_max, "seed": args.seed, "rows": rows}, indent=2))
    written = [out_dir / "accuracy.md", out_dir / "accuracy.json"]
    if not args.no_plots:
        written += _plot(evaluations, args.presets, out_dir)
    print(table)
    print(f"\n{len(rows)} rows in {time.perf_counter() - start:.1f} s -> "
          + ", ".join(map(str, written)))
    return 0 if all(r["within_bound"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
