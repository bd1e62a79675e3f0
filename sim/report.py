"""The report of one job: accuracy, per-head error against its bound, the cycle timeline, resources.

``leanattn report JOB.npz --preset NAME -o DIR`` runs the job through the bit-exact golden model and
the float64 reference, predicts its cycles with the exact cycle model, and writes

* ``DIR/report.md`` with the figures beside it (``accuracy.png``, ``timeline.png``), and
* ``DIR/report.html``: the same content on one self-contained page (figures embedded as base64 PNG).

Sections:

1. **Summary**: the configuration, the job, the predicted cycles and the error figures.
2. **Accuracy**: histograms of the relative L2 error per head (:func:`~leanattn.sim.reference.rel_l2`)
   of the golden model's output against float64 attention on the quantized inputs (the
   quantization floor, :mod:`leanattn.sim.reference`) and, for a job of float inputs, against float64
   attention on those inputs, and of the quantization floor itself against the float inputs. A job
   of integer inputs has no float inputs beside its integers: its floor is exact and only the
   datapath error is shown.
3. **Per head**: the errors of every head and its largest absolute error against
   :func:`~leanattn.sim.reference.datapath_error_bound`.
4. **Cycles**: from :func:`leanattn.sim.perf.predict`, the cycle model that equals the RTL's
   ``o_cycles`` for a memory of the given latency and no stalls -- no simulation is run. Per core its
   segments, keys, value beats (busy cycles) against the ideal, and a timeline chart of what each core
   did and when the reduction tree merged.
5. **Synthesis**: resources and Fmax of ``report.json`` written by ``leanattn synth``, from
   ``--synth DIR`` or else every ``build/synth/*-<preset>/report.json`` (the preset's name, or the
   stem of the ``--config`` file, as ``leanattn synth`` names its folders).

Every problem with the input (configuration, job file, synthesis report, output folder) raises
:class:`leanattn.cli.UsageError` with one line naming the argument and the value.
"""

import base64
import html
import json
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import golden
from .job import FLOAT_KINDS, JobError, load_job
from .perf import predict
from .reference import attention, datapath_error_bounds, rel_l2

__all__ = ["Analysis", "analyze", "find_synth_reports", "build_sections", "to_markdown", "to_html",
           "write_report", "add_parser", "run"]

#: Figures written beside ``report.md`` (and embedded in ``report.html``).
FIGURES = ("accuracy.png", "timeline.png")

#: Smallest error drawn on a log axis: exact heads are drawn there.
_LOG_FLOOR = 1e-7


# --- the numbers ------------------------------------------------------------------------------------

@dataclass
class Analysis:
    """Everything the report shows of one job (per-head arrays have shape ``(flat_heads,)``).

    ``datapath``: relative L2 error of the golden output vs the quantization floor; ``end_to_end``
    and ``floor``: of the golden output and of the floor vs float64 on the float inputs (None for a
    job of integer inputs); ``abs_error``: largest absolute error of a head vs the floor, in output
    units, and ``bound`` its datapath error bound; ``prediction``: the cycle model's
    :class:`~leanattn.sim.perf.Prediction`; ``out``: the golden output integers.
    """
    cfg:        object
    job:        object
    out:        np.ndarray
    datapath:   np.ndarray
    abs_error:  np.ndarray
    bound:      np.ndarray
    prediction: object
    latency:    int
    end_to_end: np.ndarray = None
    floor:      np.ndarray = None
    seconds:    dict = field(default_factory=dict)

    @property
    def within_bound(self):
        return bool(np.all(self.abs_error <= self.bound))


def _float_inputs(path, job):
    """float64 ``q, k, v`` (flattened heads) of a job file whose q, k and v are all floats, else None."""
    with np.load(path, allow_pickle=False) as data:
        arrays = {name: data[name] for name in ("q", "k", "v")}
    if not all(a.dtype.name in FLOAT_KINDS for a in arrays.values()):
        return None
    flat = job.flat_heads
    q = arrays["q"].reshape(flat, -1).astype(np.float64)
    n_max = arrays["k"].shape[2]
    k, v = (arrays[name].reshape(flat, n_max, -1).astype(np.float64) for name in ("k", "v"))
    return q, k, v


def analyze(cfg, job, *, float_inputs=None, latency=2):
    """Golden model, float64 references, error bounds and the cycle model of ``job`` on ``cfg``.

    ``float_inputs``: ``(q, k, v)`` float64 of the job before quantization (flattened heads), for the
    end-to-end and quantization-floor errors; None for a job given as integers.
    """
    seconds = {}
    start = time.perf_counter()
    out_int = golden.run(cfg, job).out
    seconds["golden"] = time.perf_counter() - start
    out = out_int * job.head_scales("out")[:, None]
    floor_out = attention(*job.dequantized(), job.lengths)
    analysis = Analysis(cfg=cfg, job=job, out=out_int, datapath=rel_l2(out, floor_out),
                        abs_error=np.abs(out - floor_out).max(axis=1),
                        bound=datapath_error_bounds(cfg, job), prediction=None, latency=latency,
                        seconds=seconds)
    if float_inputs is not None:
        exact = attention(*float_inputs, job.lengths)
        analysis.end_to_end, analysis.floor = rel_l2(out, exact), rel_l2(floor_out, exact)
    seconds["reference"] = time.perf_counter() - start - seconds["golden"]
    start = time.perf_counter()
    analysis.prediction = predict(cfg, [int(n) for n in job.lengths], latency=latency)
    seconds["cycle model"] = time.perf_counter() - start
    return analysis


def _stats(x):
    x = np.asarray(x, dtype=np.float64)
    return float(np.median(x)), float(np.percentile(x, 99)), float(x.max())


def _e(x):
    """An error figure as the report prints it."""
    return f"{x:.3e}"


# --- synthesis reports ------------------------------------------------------------------------------

def find_synth_reports(synth=None, *, name=None, root="build/synth"):
    """``[(path, report dict)]``: ``synth/report.json`` (``synth`` a folder or the file itself), or
    every ``root/*-<name>/report.json`` when ``synth`` is None. A ``synth`` without a report, or a
    report that is not a synthesis report, raises :class:`~leanattn.cli.UsageError`."""
    from ..cli import UsageError

    if synth is not None:
        path = Path(synth)
        path = path / "report.json" if path.is_dir() else path
        if not path.is_file():
            raise UsageError(f"--synth {synth}: no synthesis report at {path} (run `leanattn synth` "
                             f"first)")
        paths = [path]
    elif name is None:
        paths = []
    else:
        paths = sorted(Path(root).glob(f"*-{name}/report.json"))
    return [(path, _read_synth(path)) for path in paths]


def _read_synth(path):
    from ..cli import UsageError

    try:
        report = json.loads(Path(path).read_text())
    except OSError as error:
        raise UsageError(f"cannot read synthesis report {path}: {error.strerror or error}") from None
    except json.JSONDecodeError as error:
        raise UsageError(f"synthesis report {path} is not valid JSON: {error}") from None
    needed = ("board", "device", "fits", "fmax_mhz", "target_mhz", "resources", "config")
    missing = [key for key in needed if not isinstance(report, dict) or key not in report]
    if missing:
        raise UsageError(f"{path} is not a report.json of `leanattn synth` (no {', '.join(missing)})")
    return report


# --- sections ------------------------------------------------------------------------------------------
# A section is (title, blocks); a block is ("p", text), ("table", header, rows) or ("img", file, alt).
# Text may hold `code` spans; both writers render them.

def _summary(analysis, name):
    cfg, job, pred = analysis.cfg, analysis.job, analysis.prediction
    keys = int(job.lengths.sum())
    median, p99, worst = _stats(analysis.datapath)
    lines = [
        ("configuration", f"`{name}`: head_dim {cfg.head_dim}, lanes {cfg.lanes}, cores {cfg.cores}, tile "
                          f"{cfg.tile}, schedule {cfg.schedule}, int{cfg.input_bits} {cfg.quant}"),
        ("job", f"{job.batch} x {job.heads} heads, {keys} keys, lengths {_lengths_text(job.lengths)}"),
        ("inputs", "float (quantized by the tool)" if analysis.floor is not None
         else "integers with their scales (already quantized)"),
        ("cycles (cycle model)", f"{pred.cycles} (ideal {pred.ideal_cycles:.1f}, efficiency "
                                 f"{pred.efficiency:.3f}), memory latency {analysis.latency}"),
        ("datapath error vs float64 on the quantized inputs",
         f"median {_e(median)}, p99 {_e(p99)}, max {_e(worst)} (relative L2 per head)"),
    ]
    if analysis.end_to_end is not None:
        median, p99, worst = _stats(analysis.end_to_end)
        lines.append(("end-to-end error vs float64 on the float inputs",
                      f"median {_e(median)}, p99 {_e(p99)}, max {_e(worst)}"))
    use = float(np.max(analysis.abs_error / analysis.bound))
    lines.append(("within the datapath error bound", f"{'yes' if analysis.within_bound else 'NO'} "
                                                      f"(largest error / bound {use:.3f})"))
    return ("Summary", [("table", ["", "value"], lines)])


def _lengths_text(lengths, most=16):
    values = [str(int(n)) for n in lengths]
    return ", ".join(values) if len(values) <= most else ", ".join(values[:most]) + f", ... ({len(values)})"


def _accuracy(analysis):
    blocks = [("p", "Relative L2 error per head, `|out - ref| / max(|ref|, 0.05 sqrt(d))` "
                    "(`leanattn.sim.reference.rel_l2`). The datapath is judged against the quantization "
                    "floor: float64 attention on the same quantized integers, so that input quantization "
                    "is not blamed on it.")]
    rows = [["golden model vs float64 on the quantized inputs (datapath)",
             *map(_e, _stats(analysis.datapath))]]
    if analysis.end_to_end is not None:
        rows.append(["golden model vs float64 on the float inputs (end to end)",
                     *map(_e, _stats(analysis.end_to_end))])
        rows.append(["quantization floor vs float64 on the float inputs", *map(_e, _stats(analysis.floor))])
    else:
        blocks.append(("p", "The job gives integer inputs: the quantization floor is the reference itself "
                            "(no float inputs to compare with)."))
    blocks.append(("table", ["error", "median", "p99", "max"], rows))
    blocks.append(("img", "accuracy.png", "histograms of the relative L2 error per head"))
    return ("Accuracy", blocks)


def _per_head(analysis):
    job, pred = analysis.job, analysis.prediction
    holders = {}
    for core in pred.cores:
        for s in core.segments:
            holders.setdefault(s.head, []).append(core.core)
    header = ["head", "(b, h)", "keys", "cores", "datapath rel L2"]
    if analysis.end_to_end is not None:
        header.append("end-to-end rel L2")
    header += ["max abs error", "bound", "error / bound", "out at cycle"]
    rows = []
    for h in range(job.flat_heads):
        row = [str(h), f"({h // job.heads}, {h % job.heads})", str(int(job.lengths[h])),
               ",".join(map(str, holders[h])), _e(analysis.datapath[h])]
        if analysis.end_to_end is not None:
            row.append(_e(analysis.end_to_end[h]))
        row += [_e(analysis.abs_error[h]), _e(analysis.bound[h]),
                f"{analysis.abs_error[h] / analysis.bound[h]:.3f}", str(pred.head_done[h])]
        rows.append(row)
    return ("Per head", [
        ("p", "Largest absolute error of each head's output against the quantization floor, in output "
              "units, and the datapath error bound derived from the formats "
              "(`leanattn.sim.reference.datapath_error_bound`). `cores`: the cores holding a part of the "
              "head (more than one: merged in the reduction tree); `out at cycle`: its last output "
              "beat, from the cycle model."),
        ("table", header, rows)])


def _cycles(analysis):
    pred, cfg = analysis.prediction, analysis.cfg
    rows = []
    for core in pred.cores:
        segs = core.segments
        keys = sum(s.keys for s in segs)
        rows.append([str(core.core), str(len(segs)), str(keys), str(core.busy), f"{pred.ideal_cycles:.1f}",
                     str(segs[0].v_first) if segs else "-", str(core.end) if segs else "-",
                     f"{core.busy / pred.cycles:.3f}"])
    merges = ", ".join(f"head {g.head} at node ({g.level}, {g.index}), cycle {g.cycle}" for g in pred.merges)
    done = sorted(pred.head_done.values())
    return ("Cycles", [
        ("p", f"Cycle counts come from the exact cycle model (`leanattn.sim.perf.predict`), not from a "
              f"simulation: it equals the RTL's `o_cycles` cycle for cycle for a memory answering "
              f"{analysis.latency} cycles after the bank and no stalls. Cycles count from the job's first "
              f"input transfer. The job takes **{pred.cycles}** cycles; ideal (every core busy on every "
              f"cycle) is {pred.ideal_cycles:.1f}: efficiency {pred.efficiency:.3f}. The segment "
              f"generators offer the first segments at cycle {pred.first_segment}."),
        ("table", ["core", "segments", "keys", "busy (value beats)", "ideal", "first value beat",
                   "last partial beat", "busy / cycles"], rows),
        ("p", f"Tree merges: {merges or 'none (no head is cut across cores)'}. Heads out: the first at "
              f"cycle {done[0]}, the last at cycle {done[-1]}. A core is busy one cycle per value beat: "
              f"`keys * head_dim / lanes` = `keys * {cfg.beats_per_key}` cycles; the ideal is the "
              f"job's value beats spread evenly over the {cfg.cores} cores."),
        ("img", "timeline.png", "timeline of every core's segments and the tree merges")])


def _synthesis(reports, cfg, hint):
    if not reports:
        return ("Synthesis", [("p", f"No synthesis report found ({hint}). Run `leanattn synth --board BOARD "
                                    f"...` and give its folder with `--synth DIR`.")])
    blocks = []
    for path, rep in reports:
        fmax = "no timing (place and route did not finish)" if rep["fmax_mhz"] is None else (
            f"Fmax **{rep['fmax_mhz']:.1f} MHz** (target {rep['target_mhz']:.1f} MHz: "
            f"{'met' if rep.get('timing_met') else 'MISSED'})")
        text = (f"`{path}`: {rep['board']} ({rep['device']}), preset `{rep.get('preset', '?')}`: "
                f"{'fits' if rep['fits'] else 'DOES NOT FIT'}; {fmax}.")
        if rep["config"] != cfg.to_dict():
            changed = sorted(k for k in set(rep["config"]) | set(cfg.to_dict())
                             if rep["config"].get(k) != cfg.to_dict().get(k))
            text += f" Its configuration differs from this report's in: {', '.join(changed)}."
        rows = []
        for key, res in rep["resources"].items():
            if not res.get("available") and not res.get("used"):
                continue
            use = "-"
            if res.get("used") is not None and res.get("available"):
                use = f"{100 * res['used'] / res['available']:.1f} %"
            used = "-" if res.get("used") is None else str(res["used"])
            rows.append([key, str(res.get("primitive") or "-"), used, str(res.get("available")), use])
        blocks += [("p", text), ("table", ["resource", "primitive", "used", "available", "use"], rows)]
    return ("Synthesis", blocks)


def build_sections(analysis, name, synth_reports, synth_hint=""):
    """The report's sections (see the module docstring), without the figures' pixels."""
    return [_summary(analysis, name), _accuracy(analysis), _per_head(analysis), _cycles(analysis),
            _synthesis(synth_reports, analysis.cfg, synth_hint)]


# --- figures ---------------------------------------------------------------------------------------------

def _figure():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def plot_accuracy(analysis, path):
    """Histograms (log x) of the per-head errors; left: the golden model, right: the floor."""
    plt = _figure()
    series = [("vs float64 on the quantized inputs (datapath)", analysis.datapath, "C0")]
    if analysis.end_to_end is not None:
        series.append(("vs float64 on the float inputs (end to end)", analysis.end_to_end, "C1"))
    everything = np.concatenate([s for _, s, _ in series]
                                + ([analysis.floor] if analysis.floor is not None else []))
    lo = np.log10(max(float(everything.min()), _LOG_FLOOR))
    hi = np.log10(max(float(everything.max()), _LOG_FLOOR * 10))
    bins = np.logspace(np.floor(lo), np.ceil(hi + 1e-9), 31)
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8), sharex=True)
    for label, values, color in series:
        axes[0].hist(np.maximum(values, _LOG_FLOOR), bins=bins, alpha=0.6, color=color, label=label)
    axes[0].set_title("golden model output error")
    axes[0].legend(fontsize=8)
    if analysis.floor is not None:
        axes[1].hist(np.maximum(analysis.floor, _LOG_FLOOR), bins=bins, color="C2",
                     label="quantization floor vs float64 on the float inputs")
        axes[1].legend(fontsize=8)
    else:
        axes[1].text(0.5, 0.5, "integer inputs:\nthe quantization floor is exact", ha="center",
                     va="center", transform=axes[1].transAxes)
    axes[1].set_title("quantization floor error")
    from matplotlib.ticker import MaxNLocator
    for ax in axes:
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xscale("log")
        ax.set_xlabel("relative L2 error per head")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("heads")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_timeline(analysis, path):
    """Gantt chart: per core a K row (K beats of each segment) and a V row (value beats, then the
    partial's beats), the load phase, each head's last output beat and the tree merges."""
    plt = _figure()
    pred = analysis.prediction
    cores = len(pred.cores)
    colors = plt.get_cmap("tab10")
    fig, ax = plt.subplots(figsize=(11, 1.2 + 0.9 * cores))
    rows, y = [], 0
    ax.broken_barh([(0, pred.first_segment)], (y, 0.8), color="0.7")
    ax.text(pred.first_segment * 1.05 + 1, y + 0.4, "load and scan", va="center", fontsize=7)
    rows.append("job")
    for core in reversed(pred.cores):
        for kind in ("V", "K"):
            y += 1
            rows.append(f"core {core.core} {kind}")
            for s in core.segments:
                color = colors(s.head % 10)
                if kind == "K":
                    ax.broken_barh([(s.k_first, s.k_last + 1 - s.k_first)], (y, 0.8), color=color)
                else:
                    ax.broken_barh([(s.v_first, s.v_last + 1 - s.v_first)], (y, 0.8), color=color)
                    ax.broken_barh([(s.partial_first, s.partial_end + 1 - s.partial_first)], (y + 0.25, 0.3),
                                   color="black")
                start = s.k_first if kind == "K" else s.v_first
                ax.text(start + 1, y + 0.4, f"h{s.head}", va="center", fontsize=7)
    y += 1
    rows.append("heads out")
    done = sorted(pred.head_done.items())
    ax.plot([c for _, c in done], [y + 0.4] * len(done), "v", color="black", markersize=5)
    for g in pred.merges:
        ax.axvline(g.cycle, color="C3", ls="--", lw=0.8)
        ax.text(g.cycle, y + 0.9, f"merge h{g.head}", color="C3", fontsize=7, rotation=90, va="bottom")
    ax.axvline(pred.ideal_cycles, color="C2", lw=0.8)
    ax.axvline(pred.cycles, color="black", lw=0.8)
    ax.set_yticks([i + 0.4 for i in range(len(rows))], rows, fontsize=8)
    ax.set_ylim(-0.2, y + 2.2)
    ax.set_xlim(0, pred.cycles * 1.02)
    ax.set_xlabel(f"cycle (ideal {pred.ideal_cycles:.0f}: green line, job end {pred.cycles}: black line; "
                  f"black bars: partials leaving)")
    ax.set_title("what each core did (cycle model): K beats, value beats per segment, coloured by head")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# --- writers ---------------------------------------------------------------------------------------------

def to_markdown(sections, title):
    """The sections as Markdown; figures are linked by file name."""
    lines = [f"# {title}", ""]
    for name, blocks in sections:
        lines += [f"## {name}", ""]
        for block in blocks:
            if block[0] == "p":
                lines += [block[1], ""]
            elif block[0] == "table":
                header, rows = block[1], block[2]
                lines.append("| " + " | ".join(header) + " |")
                lines.append("| " + " | ".join("---" for _ in header) + " |")
                lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
                lines.append("")
            else:
                lines += [f"![{block[2]}]({block[1]})", ""]
    return "\n".join(lines)


def _inline(text):
    text = html.escape(text)
    text = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", text)
    return re.sub(r"`(.+?)`", r"<code>\1</code>", text)


_STYLE = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}"
          "table{border-collapse:collapse;margin:0.5em 0}td,th{border:1px solid #bbb;padding:2px 8px;"
          "text-align:right}td:first-child,th:first-child{text-align:left}th{background:#eee}"
          "code{background:#f3f3f3;padding:0 2px}img{max-width:100%}")


def to_html(sections, title, images):
    """The sections as one self-contained HTML page; ``images`` maps figure file names to PNG bytes."""
    parts = ["<!DOCTYPE html>", "<html><head><meta charset=\"utf-8\">",
             f"<title>{html.escape(title)}</title>", f"<style>{_STYLE}</style></head><body>",
             f"<h1>{html.escape(title)}</h1>"]
    for name, blocks in sections:
        parts.append(f"<h2>{html.escape(name)}</h2>")
        for block in blocks:
            if block[0] == "p":
                parts.append(f"<p>{_inline(block[1])}</p>")
            elif block[0] == "table":
                header = "".join(f"<th>{_inline(h)}</th>" for h in block[1])
                body = "".join("<tr>" + "".join(f"<td>{_inline(str(c))}</td>" for c in row) + "</tr>"
                               for row in block[2])
                parts.append(f"<table><tr>{header}</tr>{body}</table>")
            else:
                data = base64.b64encode(images[block[1]]).decode("ascii")
                alt = html.escape(block[2])
                parts.append(f"<p><img alt=\"{alt}\" src=\"data:image/png;base64,{data}\"></p>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def write_report(out_dir, analysis, name, synth_reports, synth_hint=""):
    """Write ``report.md``, ``report.html`` and the figures into ``out_dir``; return their paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    plot_accuracy(analysis, out_dir / "accuracy.png")
    plot_timeline(analysis, out_dir / "timeline.png")
    sections = build_sections(analysis, name, synth_reports, synth_hint)
    job = analysis.job
    title = f"leanattn report: {name}, {job.flat_heads} heads, {int(job.lengths.sum())} keys"
    images = {figure: (out_dir / figure).read_bytes() for figure in FIGURES}
    (out_dir / "report.md").write_text(to_markdown(sections, title))
    (out_dir / "report.html").write_text(to_html(sections, title, images))
    return [out_dir / "report.html", out_dir / "report.md", *(out_dir / f for f in FIGURES)]


# --- command line -----------------------------------------------------------------------------------------

def add_parser(subparsers):
    """The ``report`` subcommand: ``leanattn report JOB.npz [--preset NAME] -o DIR [--synth DIR]``."""
    from ..cli import config_args

    parser = subparsers.add_parser(
        "report", help="an HTML and Markdown report of a job: accuracy, error bounds, cycles, resources",
        description="Run a job file through the golden model and the float64 reference, predict its "
                    "cycles with the exact cycle model (no simulation) and write DIR/report.html (self-"
                    "contained) and DIR/report.md with its figures.")
    parser.add_argument("job", metavar="JOB.npz")
    parser.add_argument("-o", "--output", required=True, metavar="DIR", help="output folder")
    parser.add_argument("--synth", metavar="DIR", help="a `leanattn synth` folder (default: every "
                        "build/synth/*-PRESET/report.json)")
    parser.add_argument("--latency", type=int, default=2,
                        help="extra cycles on every memory response, as `leanattn sim` (default 2)")
    config_args(parser)
    parser.set_defaults(func=run)
    return parser


def run(args):
    """Run ``leanattn report``; a bad configuration, job, synthesis report, latency or output folder
    raises ``leanattn.cli.UsageError``."""
    from ..cli import UsageError, load_config

    cfg = load_config(args.preset, args.config, args.overrides)
    if args.latency < 0:
        raise UsageError(f"--latency must be at least 0, not {args.latency}")
    try:
        job = load_job(args.job, cfg)
    except JobError as error:
        raise UsageError(str(error)) from None
    out_dir = Path(args.output)
    if out_dir.exists() and not out_dir.is_dir():
        raise UsageError(f"-o {args.output} is a file, not a folder")
    stem = Path(args.config).stem if args.config else (args.preset or "default")
    reports = find_synth_reports(args.synth, name=stem)
    hint = f"looked in {args.synth}" if args.synth else f"looked for build/synth/*-{stem}/report.json"
    name = args.preset or args.config or "default"
    if args.overrides:
        name += " + overrides"
    analysis = analyze(cfg, job, float_inputs=_float_inputs(args.job, job), latency=args.latency)
    try:
        paths = write_report(out_dir, analysis, name, reports, hint)
    except OSError as error:
        raise UsageError(f"cannot write {out_dir}: {error.strerror or error}") from None
    pred = analysis.prediction
    median, _, worst = _stats(analysis.datapath)
    print(f"leanattn report: {name}, {job.flat_heads} heads, {int(job.lengths.sum())} keys -> "
          + ", ".join(str(p) for p in paths[:2]))
    print(f"cycles {pred.cycles} (cycle model, ideal {pred.ideal_cycles:.1f}); datapath error median "
          f"{_e(median)}, max {_e(worst)}; within bound: {'yes' if analysis.within_bound else 'NO'}; "
          f"synthesis reports: {len(reports)}")
    return 0


def main(argv=None):
    """``python -m leanattn.sim.report ...``: the ``report`` subcommand on its own."""
    from ..cli import run_subcommand

    return run_subcommand("report", add_parser, argv)


if __name__ == "__main__":
    raise SystemExit(main())
