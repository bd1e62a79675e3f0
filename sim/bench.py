"""Benchmark of the three schedules on the same hardware: lean (stream-K), fa2 and flashdecoding.

One run measures every shape of a sweep like the LeanAttention paper's -- batch 1 to 16, heads 1 to
64 (flattened heads ``batch * heads``), contexts of 512 to 524288 keys, uniform and ragged lengths --
under each schedule and on 1 to 16 cores, and writes the cycles, the ideal cycles, the efficiency
and the speedup of ``lean`` over the two others.

Sources of the cycle counts
---------------------------
* **model**: :func:`leanattn.sim.perf.predict` (memory latency :data:`LATENCY`, no stalls), on
  configurations derived from the ``wide`` preset (head_dim 128, lanes 16) with ``cores`` replaced.
  The model takes any shape, also beyond ``max_heads`` and ``max_context``.
* **rtl**: small and medium jobs on configurations derived from the ``default`` preset (``tiny`` in
  ``--quick``) with ``cores`` replaced, simulated on the generated Verilog with Verilator by
  :func:`leanattn.sim.system.run_system` (which checks every output beat against the golden model),
  for every schedule in :data:`leanattn.hdl.top.RTL_SCHEDULES` as it reads at run time. The jobs of
  one configuration run back to back in one simulation; each RTL cycle count is compared with the
  model's prediction chained the same way (the packet arbiter's pointer carried from job to job).
  A difference is printed loudly, recorded under ``mismatches`` in ``bench.json`` and makes the
  run exit with status 1. The schedules not in the hardware get model rows for the same shapes.

Every row says which source its ``cycles`` come from.

Shapes
------
:data:`BATCHES` x :data:`HEADS` x :data:`CONTEXTS`, with at most :data:`KEY_BUDGET` keys per job
(the KV cache of ``2**24`` keys at head_dim 128, int8, is 4 GiB). Lengths are flattened b-major.

* ``uniform``: every head holds ``context`` keys.
* ``ragged``: every (b, h) draws its own length, independently and uniformly from the integers
  ``1 .. context`` (mean ``context / 2``), from a generator seeded by ``(SEED, batch, heads,
  context)`` -- so the same shape gets the same lengths in every run and under every schedule.

Speedup of lean over ``X``: ``cycles(X) / cycles(lean)`` on the same shape, configuration and
cores. Efficiency: ``ideal / cycles`` with ``ideal = keys * head_dim / (lanes * cores)``.

Software speed
--------------
The golden model's throughput (keys/s, ``leanattn golden`` in a fresh process, as
:mod:`leanattn.sim.bench_golden` measures it) and the RTL simulation speed (simulated cycles per
second of simulator wall time, from cocotb's results) on Verilator and on Icarus Verilog, one small
``tiny`` job each.

Outputs in ``--out``: ``bench.json`` (every row, the configuration of every row, software speed,
mismatches), ``bench.md`` (tables), ``efficiency.png`` (efficiency against context per schedule),
``speedup_fa2.png`` and ``speedup_flashdecoding.png`` (heat maps over flattened heads x context).

    python -m leanattn.sim.bench --out build/bench [--quick]
"""

import argparse
import json
import platform
import sys
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ..hdl.config import PRESETS
from .perf import predict

__all__ = [
    "SCHEDULES", "Shape", "Part", "sweep", "shape_lengths", "schedule_config", "config_id",
    "model_row", "reference_points", "rtl_rows", "check_rtl", "add_speedups", "summary", "write_json",
    "write_markdown",
    "plot_efficiency", "plot_speedup", "simulator_speed", "golden_speed", "run_bench",
    "add_parser", "run", "main",
]

#: The schedules compared, lean first.
SCHEDULES = ("lean", "fa2", "flashdecoding")
#: Memory latency of every row (cycles beyond the bank's own), as ``leanattn sim`` by default.
LATENCY = 2
#: Seeds the ragged lengths and the RTL jobs' data.
SEED = 2405

MODEL_PRESET = "wide"
CORES = (1, 2, 4, 8, 16)
BATCHES = (1, 2, 4, 8, 16)
HEADS = (1, 8, 32, 64)
CONTEXTS = (512, 2048, 8192, 32768, 131072, 524288)
KINDS = ("uniform", "ragged")
KEY_BUDGET = 1 << 24

RTL_PRESET = "default"
RTL_CORES = (1, 2, 4)
#: (batch, heads, context) of the RTL jobs: within ``default``'s max_heads and max_context, and at
#: most 4096 keys, because the bench's KV memory is sized for the largest job and its size sets the
#: time Verilog generation and the Verilator build take (about a minute per configuration).
RTL_SHAPES = ((1, 1, 512), (1, 8, 512), (1, 1, 2048), (2, 2, 1024))

#: The software-speed jobs: golden model (preset, batch, heads, keys per head), as in bench_golden.
GOLDEN_JOBS = (("tiny", 2, 4, 1024), ("default", 4, 8, 4096), ("wide", 1, 1, 524288))
#: One small job for the simulator speed: (preset, lengths).
SPEED_JOB = ("tiny", (128,))

QUICK_CORES = (1, 4, 16)
QUICK_BATCHES = (1, 4)
QUICK_HEADS = (1, 8)
QUICK_CONTEXTS = (512, 4096, 65536)
QUICK_RTL = ("tiny", (2,), ((1, 2, 48),))
QUICK_GOLDEN = (("tiny", 1, 2, 256),)
QUICK_SPEED_JOB = ("tiny", (32,))


# --- the sweep -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Shape:
    """``batch`` sequences of ``heads`` heads over contexts of ``context`` keys, ``kind`` uniform or
    ragged (see the module docstring)."""
    batch:   int
    heads:   int
    context: int
    kind:    str

    def __post_init__(self):
        for name in ("batch", "heads", "context"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool):
                raise TypeError(f"{name} must be an integer, not {value!r}")
            if value < 1:
                raise ValueError(f"{name} must be at least 1, not {value}")
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {', '.join(KINDS)}, not {self.kind!r}")

    @property
    def flat_heads(self):
        return self.batch * self.heads

    @property
    def max_keys(self):
        return self.flat_heads * self.context

    def key(self):
        return (self.batch, self.heads, self.context, self.kind)


@dataclass(frozen=True)
class Part:
    """A block of the sweep: every shape on every core count of configurations derived from
    ``preset``; ``rtl``: the schedules to measure on the RTL when the hardware has them (the
    others, and these when it does not, come from the model)."""
    preset: str
    cores:  tuple
    shapes: tuple
    rtl:    tuple = ()


def _grid(batches, heads, contexts, budget=KEY_BUDGET):
    return tuple(Shape(b, h, n, kind) for n in contexts for b in batches for h in heads for kind in KINDS
                 if b * h * n <= budget)


def sweep(quick=False):
    """The parts of the benchmark: the model sweep on ``wide``, then the RTL part."""
    if quick:
        preset, cores, shapes = QUICK_RTL
        return [Part(MODEL_PRESET, QUICK_CORES, _grid(QUICK_BATCHES, QUICK_HEADS, QUICK_CONTEXTS)),
                Part(preset, cores, tuple(Shape(b, h, n, k) for b, h, n in shapes for k in KINDS),
                     rtl=("lean",))]
    return [Part(MODEL_PRESET, CORES, _grid(BATCHES, HEADS, CONTEXTS)),
            Part(RTL_PRESET, RTL_CORES, tuple(Shape(b, h, n, k) for b, h, n in RTL_SHAPES for k in KINDS),
                 rtl=SCHEDULES)]


def shape_lengths(shape):
    """The flattened head lengths of ``shape`` (deterministic; see the module docstring)."""
    if shape.kind == "uniform":
        return [shape.context] * shape.flat_heads
    rng = np.random.default_rng([SEED, shape.batch, shape.heads, shape.context])
    return [int(n) for n in rng.integers(1, shape.context + 1, shape.flat_heads)]


def schedule_config(preset, cores, schedule):
    """``preset`` with ``cores`` and ``schedule`` replaced; flashdecoding cuts heads in ``cores``
    chunks."""
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {', '.join(SCHEDULES)}, not {schedule!r}")
    return PRESETS[preset].replace(cores=cores, schedule=schedule,
                                   chunks=cores if schedule == "flashdecoding" else 0)


def config_id(preset, cores, schedule):
    """The name of a row's configuration in ``bench.json``'s ``configs``."""
    return f"{preset}-c{cores}-{schedule}"


# --- rows ------------------------------------------------------------------------------------------

def _row(preset, cores, schedule, shape, lengths, cycles, ideal, source, model_cycles, rtl_cycles=None):
    return {
        "preset": preset, "cores": cores, "schedule": schedule,
        "config": config_id(preset, cores, schedule),
        "batch": shape.batch, "heads": shape.heads, "flat_heads": shape.flat_heads,
        "context": shape.context, "kind": shape.kind, "keys": int(sum(lengths)),
        "cycles": int(cycles), "ideal": float(ideal), "efficiency": float(ideal) / int(cycles),
        "source": source, "model_cycles": int(model_cycles),
        "rtl_cycles": None if rtl_cycles is None else int(rtl_cycles),
        "speedup_vs_fa2": None, "speedup_vs_flashdecoding": None,
    }


def model_row(preset, cores, schedule, shape, cache=None):
    """A row from the cycle model (fresh accelerator: arbiter pointer 0). ``cache``: a dict that
    keeps ``(cycles, ideal)`` per configuration and lengths across calls (shapes of the same
    flattened heads share their uniform lengths)."""
    lengths = shape_lengths(shape)
    key = (preset, cores, schedule, tuple(lengths))
    if cache is None or key not in cache:
        pred = predict(schedule_config(preset, cores, schedule), lengths, latency=LATENCY)
        value = (pred.cycles, pred.ideal_cycles)
        if cache is not None:
            cache[key] = value
    cycles, ideal = cache[key] if cache is not None else value
    return _row(preset, cores, schedule, shape, lengths, cycles, ideal, "model", cycles)


def reference_points(preset=RTL_PRESET, shapes=((1, 512), (8, 512))):
    """Model efficiency of every schedule on ``preset`` as it is (its own core count) for
    ``(heads, keys)`` jobs of uniform lengths: ``[{"preset", "heads", "keys", schedule: eff}]``."""
    cfg = PRESETS[preset]
    out = []
    for heads, keys in shapes:
        item = {"preset": preset, "cores": cfg.cores, "heads": heads, "keys": keys}
        for schedule in SCHEDULES:
            item[schedule] = predict(schedule_config(preset, cfg.cores, schedule), [keys] * heads,
                                     latency=LATENCY).efficiency
        out.append(item)
    return out


def check_rtl(cfg, jobs_lengths, measured, latency=LATENCY):
    """The model's cycles of jobs run back to back from reset (the arbiter pointer chained as the RTL
    carries it), beside the RTL's ``measured`` cycles.

    Returns ``(predicted, mismatches)``: a list of predicted cycles, one per job, and a list of
    ``{"job", "heads", "keys", "rtl", "model"}`` for every job whose counts differ.
    """
    if len(measured) != len(jobs_lengths):
        raise ValueError(f"measured must hold one cycle count per job ({len(jobs_lengths)}), "
                         f"not {len(measured)}")
    held, predicted, mismatches = 0, [], []
    for number, (lengths, cycles) in enumerate(zip(jobs_lengths, measured)):
        pred = predict(cfg, lengths, latency=latency, arbiter_held=held)
        held = pred.arbiter_held
        predicted.append(pred.cycles)
        if pred.cycles != cycles:
            mismatches.append({"job": number, "heads": len(lengths), "keys": int(sum(lengths)),
                               "rtl": int(cycles), "model": int(pred.cycles)})
    return predicted, mismatches


def rtl_rows(preset, cores, schedule, shapes, build_dir, simulator="verilator"):
    """Rows of ``shapes`` measured on the RTL in one simulation (outputs checked against the golden
    model by :func:`~leanattn.sim.system.run_system`), each with the model's chained prediction.
    Returns ``(rows, mismatches)``; a mismatch names the configuration and the shape."""
    from .jobgen import random_int_job
    from .system import run_system

    cfg = schedule_config(preset, cores, schedule)
    lengths = [shape_lengths(shape) for shape in shapes]
    rng = np.random.default_rng([SEED, cores])
    jobs = [random_int_job(cfg, each, rng) for each in lengths]
    _, measured, _ = run_system(cfg, jobs, simulator=simulator, build_dir=build_dir, latency=LATENCY,
                                stall_rate=0, patterns=[("none", "none")], seed=SEED)
    predicted, mismatches = check_rtl(cfg, lengths, measured)
    rows = [_row(preset, cores, schedule, shape, each, cycles, sum(each) * cfg.beats_per_key / cores,
                 "rtl", model, rtl_cycles=cycles)
            for shape, each, cycles, model in zip(shapes, lengths, measured, predicted)]
    for item in mismatches:
        shape = shapes[item["job"]]
        item.update(config=config_id(preset, cores, schedule), batch=shape.batch, heads=shape.heads,
                    context=shape.context, kind=shape.kind)
    return rows, mismatches


def _group(row):
    return (row["preset"], row["cores"], row["batch"], row["heads"], row["context"], row["kind"])


def add_speedups(rows):
    """Fill ``speedup_vs_fa2`` and ``speedup_vs_flashdecoding`` of every row: ``cycles(X) /
    cycles(lean)`` of its group (same preset, cores and shape). A group without a lean row or
    without ``X`` keeps None. Returns ``rows``."""
    groups = {}
    for row in rows:
        groups.setdefault(_group(row), {})[row["schedule"]] = row
    for members in groups.values():
        lean = members.get("lean")
        for other in ("fa2", "flashdecoding"):
            value = members[other]["cycles"] / lean["cycles"] if lean and other in members else None
            for row in members.values():
                row[f"speedup_vs_{other}"] = value
    return rows


# --- software speed ---------------------------------------------------------------------------------

def _sim_cycles_and_seconds(results):
    """Simulated clock cycles and simulator wall seconds of a cocotb results file."""
    from .tb_streams import PERIOD_NS

    units = {"fs": 1e-6, "ps": 1e-3, "ns": 1.0, "us": 1e3, "ms": 1e6, "s": 1e9}
    cycles, seconds = 0.0, 0.0
    for case in ET.parse(results).getroot().iter("testcase"):
        props = {p.get("name"): p.get("value") for p in case.iter("property")}
        cycles += float(props["sim_time_duration"]) * units[props["sim_time_unit"]] / PERIOD_NS
        seconds += float(case.get("time"))
    return round(cycles), seconds


def simulator_speed(simulator, build_dir, job=SPEED_JOB):
    """Simulated cycles per second of ``simulator`` on one small system-bench job (KV load included).
    ``wall_s`` also counts Verilog generation, the build (cached) and the golden model."""
    from .jobgen import random_int_job
    from .system import run_system

    preset, lengths = job
    cfg = PRESETS[preset]
    start = time.perf_counter()
    _, measured, run = run_system(cfg, [random_int_job(cfg, list(lengths), np.random.default_rng(SEED))],
                                  simulator=simulator, build_dir=build_dir, latency=LATENCY,
                                  patterns=[("none", "none")], seed=SEED)
    wall = time.perf_counter() - start
    cycles, seconds = _sim_cycles_and_seconds(run.results)
    return {"simulator": simulator, "preset": preset, "lengths": list(lengths), "job_cycles": measured[0],
            "sim_cycles": cycles, "sim_s": round(seconds, 3), "cycles_per_s": round(cycles / seconds),
            "wall_s": round(wall, 2)}


def golden_speed(out_dir, jobs=GOLDEN_JOBS):
    """Golden model throughput, one :func:`leanattn.sim.bench_golden.run_one` row per job."""
    from .bench_golden import run_one

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    return [run_one(out_dir, *job) for job in jobs]


# --- summary and writers ------------------------------------------------------------------------------

def _stats(values):
    values = list(values)
    if not values:
        return {"count": 0, "mean": None, "geomean": None, "min": None, "max": None}
    return {"count": len(values), "mean": float(np.mean(values)),
            "geomean": float(np.exp(np.mean(np.log(values)))),
            "min": float(min(values)), "max": float(max(values))}


def _lean_rows(rows, preset=None):
    return [r for r in rows if r["schedule"] == "lean" and (preset is None or r["preset"] == preset)]


def summary(rows, preset=MODEL_PRESET):
    """Speedup statistics of ``preset``'s rows (all, uniform, ragged) and the shapes where lean does
    not win (speedup below 1 against either schedule)."""
    lean = _lean_rows(rows, preset)
    out = {}
    for other in ("fa2", "flashdecoding"):
        key = f"speedup_vs_{other}"
        out[other] = {kind: _stats(r[key] for r in lean if r[key] is not None and kind in ("all", r["kind"]))
                      for kind in ("all",) + KINDS}
    out["lean_loses"] = [{k: r[k] for k in ("cores", "batch", "heads", "context", "kind", "cycles",
                                             "speedup_vs_fa2", "speedup_vs_flashdecoding")}
                         for r in lean if any(r[f"speedup_vs_{x}"] is not None and r[f"speedup_vs_{x}"] < 1
                                              for x in ("fa2", "flashdecoding"))]
    return out


def write_json(path, report):
    """``report`` as indented JSON (rows, configs, software speed, mismatches, summary)."""
    Path(path).write_text(json.dumps(report, indent=1) + "\n")
    return path


def _fmt(value, digits=3):
    return "-" if value is None else f"{value:.{digits}f}"


def _table(header, lines):
    out = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    out += ["| " + " | ".join(str(x) for x in line) + " |" for line in lines]
    return out


def _mean(values):
    values = list(values)
    return float(np.mean(values)) if values else None


def _efficiency_tables(rows, preset):
    rows = [r for r in rows if r["preset"] == preset]
    cores = sorted({r["cores"] for r in rows})
    out = [f"### Mean efficiency per schedule (`{preset}`, model)", ""]
    header = ["cores"] + [f"{s} {k}" for s in SCHEDULES for k in KINDS]
    lines = [[c] + [_fmt(_mean(r["efficiency"] for r in rows if r["cores"] == c and r["schedule"] == s
                                and r["kind"] == k)) for s in SCHEDULES for k in KINDS] for c in cores]
    out += _table(header, lines) + [""]
    top = max(cores)
    contexts = sorted({r["context"] for r in rows})
    out += [f"### Mean efficiency against context (`{preset}`, {top} cores)", ""]
    lines = [[n] + [_fmt(_mean(r["efficiency"] for r in rows if r["cores"] == top and r["context"] == n
                                and r["schedule"] == s and r["kind"] == k)) for s in SCHEDULES for k in KINDS]
             for n in contexts]
    return out + _table(["context"] + header[1:], lines) + [""]


def _speedup_matrix(rows, preset, cores, other, kind):
    """``(flat heads, contexts, matrix)``: the mean speedup of lean over ``other`` per cell (NaN where
    the sweep has no shape)."""
    lean = [r for r in _lean_rows(rows, preset) if r["cores"] == cores and r["kind"] == kind]
    heads = sorted({r["flat_heads"] for r in lean})
    contexts = sorted({r["context"] for r in lean})
    matrix = np.full((len(heads), len(contexts)), np.nan)
    for i, h in enumerate(heads):
        for j, n in enumerate(contexts):
            cell = [r[f"speedup_vs_{other}"] for r in lean if r["flat_heads"] == h and r["context"] == n]
            if cell:
                matrix[i, j] = np.mean(cell)
    return heads, contexts, matrix


def _speedup_tables(rows, preset):
    top = max(r["cores"] for r in rows if r["preset"] == preset)
    out = []
    for other in ("fa2", "flashdecoding"):
        for kind in KINDS:
            heads, contexts, matrix = _speedup_matrix(rows, preset, top, other, kind)
            out += [f"### Speedup of lean over {other}, {kind} (`{preset}`, {top} cores, model; "
                    f"rows: batch x heads, mean over batch splits)", ""]
            lines = [[h] + [_fmt(None if np.isnan(v) else v, 2) for v in matrix[i]]
                     for i, h in enumerate(heads)]
            out += _table(["heads \\ keys"] + [str(n) for n in contexts], lines) + [""]
    return out


def _headline(report):
    s = report["summary"]
    out = [f"### Speedup of lean (`{MODEL_PRESET}`, every shape and core count of the model sweep)", ""]
    lines = []
    for other in ("fa2", "flashdecoding"):
        for kind in ("all",) + KINDS:
            st = s[other][kind]
            lines.append([other, kind, st["count"], _fmt(st["mean"]), _fmt(st["geomean"]), _fmt(st["min"]),
                          _fmt(st["max"])])
    out += _table(["over", "lengths", "shapes", "mean", "geomean", "min", "max"], lines) + [""]
    ref = report["reference"]
    out += [f"### Efficiency on `{ref[0]['preset']}` ({ref[0]['cores']} cores, model)", ""]
    out += _table(["job"] + list(SCHEDULES), [[f"{r['heads']} x {r['keys']} keys"]
                                              + [_fmt(r[x]) for x in SCHEDULES] for r in ref]) + [""]
    loses = s["lean_loses"]
    out += [f"Shapes where lean is slower than fa2 or flashdecoding: {len(loses)}.", ""]
    if loses:
        worst = sorted(loses, key=lambda r: min(v for k, v in r.items() if k.startswith("speedup") and v))
        worst = worst[:15]
        out += _table(["cores", "batch", "heads", "context", "lengths", "vs fa2", "vs flashdecoding"],
                      [[r["cores"], r["batch"], r["heads"], r["context"], r["kind"],
                        _fmt(r["speedup_vs_fa2"], 4), _fmt(r["speedup_vs_flashdecoding"], 4)] for r in worst])
        out.append("")
    return out


def _rtl_table(rows):
    rtl = [r for r in rows if r["source"] == "rtl"]
    if not rtl:
        return ["No RTL rows.", ""]
    lines = [[r["preset"], r["cores"], r["schedule"], f"{r['batch']} x {r['heads']}", r["context"], r["kind"],
              r["keys"], r["rtl_cycles"], r["model_cycles"], "yes" if r["rtl_cycles"] == r["model_cycles"]
              else "**NO**", _fmt(r["efficiency"]), _fmt(r["speedup_vs_fa2"]),
              _fmt(r["speedup_vs_flashdecoding"])] for r in rtl]
    return (["### RTL (Verilator) against the model", ""]
            + _table(["preset", "cores", "schedule", "B x H", "context", "lengths", "keys", "RTL cycles",
                      "model cycles", "equal", "efficiency", "vs fa2", "vs flashdecoding"], lines) + [""])


def _speed_tables(speed):
    out = ["### Software speed", ""]
    out += _table(["golden model job", "keys", "wall (s)", "keys/s"],
                  [[f"{r['preset']} {r['batch']} x {r['heads']} x {r['keys_per_head']}", r["keys"],
                    f"{r['wall_s']:.2f}", f"{r['keys_per_s']:,}"] for r in speed["golden"]]) + [""]
    out += _table(["simulator", "job", "simulated cycles", "simulator time (s)", "cycles/s", "wall (s)"],
                  [[r["simulator"], f"{r['preset']} {r['lengths']}", r["sim_cycles"], f"{r['sim_s']:.2f}",
                    f"{r['cycles_per_s']:,}", f"{r['wall_s']:.1f}"] for r in speed["simulators"]]) + [""]
    return out


def write_markdown(path, report):
    """The tables of ``report`` as Markdown."""
    rows = report["rows"]
    lines = ["# leanattn bench: lean against fa2 and flashdecoding", "",
             f"Memory latency {report['latency']}, no stalls. RTL schedules: "
             f"{', '.join(report['rtl_schedules'])}. Sweep took {report['seconds']:.0f} s.", ""]
    if report["mismatches"]:
        lines += [f"**MODEL AND RTL DIFFER on {len(report['mismatches'])} job(s)**: see bench.json.", ""]
    lines += _headline(report)
    lines += _efficiency_tables(rows, MODEL_PRESET)
    lines += _speedup_tables(rows, MODEL_PRESET)
    lines += _rtl_table(rows)
    lines += _speed_tables(report["software_speed"])
    Path(path).write_text("\n".join(lines).rstrip("\n") + "\n")
    return path


# --- plots ----------------------------------------------------------------------------------------------

def _pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def plot_efficiency(path, rows, preset=MODEL_PRESET):
    """Mean efficiency against context (log x), one panel per schedule, one line per core count
    (solid uniform, dashed ragged)."""
    plt = _pyplot()
    rows = [r for r in rows if r["preset"] == preset]
    cores = sorted({r["cores"] for r in rows})
    fig, axes = plt.subplots(1, len(SCHEDULES), figsize=(5 * len(SCHEDULES), 4), sharey=True, squeeze=False)
    for ax, schedule in zip(axes[0], SCHEDULES):
        for k, c in enumerate(cores):
            for kind, style in zip(KINDS, ("-", "--")):
                pts = {}
                for r in rows:
                    if r["schedule"] == schedule and r["cores"] == c and r["kind"] == kind:
                        pts.setdefault(r["context"], []).append(r["efficiency"])
                xs = sorted(pts)
                ax.plot(xs, [np.mean(pts[x]) for x in xs], style, marker="o", ms=3, color=f"C{k}",
                        label=f"{c} cores" if kind == "uniform" else None)
        ax.set_xscale("log", base=2)
        ax.set_title(schedule)
        ax.set_xlabel("context (keys)")
        ax.grid(True, alpha=0.3)
    axes[0][0].set_ylabel("mean efficiency (ideal / cycles)")
    axes[0][0].legend(title="solid uniform, dashed ragged", fontsize=8)
    fig.suptitle(f"Efficiency per schedule ({preset}, cycle model)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_speedup(path, rows, other, preset=MODEL_PRESET):
    """Heat map of lean's mean speedup over ``other`` across flattened heads x context at the largest
    core count, one panel per length kind."""
    from matplotlib.colors import LogNorm

    plt = _pyplot()
    top = max(r["cores"] for r in rows if r["preset"] == preset)
    fig, axes = plt.subplots(1, len(KINDS), figsize=(6 * len(KINDS), 5), squeeze=False)
    for ax, kind in zip(axes[0], KINDS):
        heads, contexts, matrix = _speedup_matrix(rows, preset, top, other, kind)
        # A log scale symmetric about 1: x and 1/x get opposite colours of the same strength.
        hi = max(1.1, float(np.nanmax(matrix)), 1 / float(np.nanmin(matrix)))
        image = ax.imshow(np.ma.masked_invalid(matrix), cmap="RdYlGn", origin="lower", aspect="auto",
                          norm=LogNorm(vmin=1 / hi, vmax=hi))
        for i in range(len(heads)):
            for j in range(len(contexts)):
                if not np.isnan(matrix[i, j]):
                    ax.text(j, i, f"{matrix[i, j]:.2f}", ha="center", va="center", fontsize=7)
        ax.set_xticks(range(len(contexts)), [f"{n // 1024}k" if n >= 1024 else str(n) for n in contexts])
        ax.set_yticks(range(len(heads)), [str(h) for h in heads])
        ax.set_xlabel("context (keys)")
        ax.set_ylabel("heads (batch x heads)")
        ax.set_title(f"{kind} lengths")
        bar = fig.colorbar(image, ax=ax, label=f"cycles({other}) / cycles(lean)")
        top_exp = int(np.ceil(np.log2(hi)))
        ticks = [2.0 ** k for k in range(-top_exp, top_exp + 1) if 1 / hi <= 2.0 ** k <= hi] \
            if hi >= 2 else [1 / hi, 1.0, hi]
        bar.set_ticks(ticks, labels=[f"{t:.3g}" if t >= 1 else f"1/{1 / t:.3g}" for t in ticks])
        bar.minorticks_off()
    fig.suptitle(f"Speedup of lean over {other} ({preset}, {top} cores, cycle model)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# --- the run ----------------------------------------------------------------------------------------

def _rtl_schedules():
    from ..hdl.top import RTL_SCHEDULES
    return tuple(RTL_SCHEDULES)


def _tasks(parts, rtl_schedules):
    """``[(part, cores, schedule, shapes, on_rtl)]``: one RTL run per (cores, schedule) in the
    hardware, one model prediction per row otherwise."""
    tasks = []
    for part in parts:
        for cores in part.cores:
            for schedule in SCHEDULES:
                if schedule in part.rtl and schedule in rtl_schedules:
                    tasks.append((part, cores, schedule, part.shapes, True))
                else:
                    tasks += [(part, cores, schedule, (shape,), False) for shape in part.shapes]
    return tasks


def run_bench(out_dir, *, quick=False, progress=True):
    """Run the benchmark, write every output into ``out_dir`` and return the report dict."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    rtl_schedules = _rtl_schedules()
    parts = sweep(quick)
    tasks = _tasks(parts, rtl_schedules)
    rows, mismatches, configs = [], [], {}
    cache = {}
    weight = lambda task: 50 * len(task[3]) if task[4] else 1
    with tqdm(total=sum(map(weight, tasks)) + 3, desc="bench", unit="step", disable=not progress) as bar:
        for part, cores, schedule, shapes, on_rtl in tasks:
            configs[config_id(part.preset, cores, schedule)] = \
                schedule_config(part.preset, cores, schedule).to_dict()
            if on_rtl:
                bar.set_postfix_str(f"RTL {part.preset} {cores} cores {schedule}")
                new, wrong = rtl_rows(part.preset, cores, schedule, shapes,
                                      out_dir / "rtl" / config_id(part.preset, cores, schedule))
                rows += new
                for item in wrong:
                    tqdm.write(f"MISMATCH: RTL {item['rtl']} cycles, model {item['model']}: {item}",
                               file=sys.stderr)
                mismatches += wrong
            else:
                rows.append(model_row(part.preset, cores, schedule, shapes[0], cache))
            bar.update(weight((part, cores, schedule, shapes, on_rtl)))
        add_speedups(rows)
        bar.set_postfix_str("software speed")
        quick_golden, quick_speed = (QUICK_GOLDEN, QUICK_SPEED_JOB) if quick else (GOLDEN_JOBS, SPEED_JOB)
        speed = {"golden": golden_speed(out_dir / "golden", quick_golden), "simulators": []}
        bar.update(1)
        for simulator in ("verilator", "icarus"):
            speed["simulators"].append(simulator_speed(simulator, out_dir / "speed" / simulator, quick_speed))
            bar.update(1)
    report = {
        "benchmark": "schedules", "quick": quick, "latency": LATENCY, "rtl_schedules": list(rtl_schedules),
        "machine": platform.machine(), "python": platform.python_version(),
        "seconds": round(time.perf_counter() - start, 1),
        "sweep": {"model_preset": MODEL_PRESET, "key_budget": KEY_BUDGET, "seed": SEED,
                  "ragged": "lengths uniform on 1..context, per (b, h)",
                  "parts": [{"preset": p.preset, "cores": list(p.cores), "rtl": list(p.rtl),
                             "shapes": len(p.shapes)} for p in parts]},
        "summary": summary(rows), "reference": reference_points(), "mismatches": mismatches,
        "software_speed": speed,
        "configs": configs, "rows": rows,
    }
    write_json(out_dir / "bench.json", report)
    write_markdown(out_dir / "bench.md", report)
    plot_efficiency(out_dir / "efficiency.png", rows)
    for other in ("fa2", "flashdecoding"):
        plot_speedup(out_dir / f"speedup_{other}.png", rows, other)
    return report


def _print_summary(report, out_dir):
    s = report["summary"]
    for other in ("fa2", "flashdecoding"):
        st = s[other]["all"]
        print(f"lean over {other}: mean {_fmt(st['mean'])}, geomean {_fmt(st['geomean'])}, "
              f"min {_fmt(st['min'])}, max {_fmt(st['max'])} ({st['count']} shapes)")
    print(f"shapes where lean is slower: {len(s['lean_loses'])}")
    for r in report["reference"]:
        print(f"{r['preset']} ({r['cores']} cores) {r['heads']} x {r['keys']} keys: efficiency "
              + ", ".join(f"{x} {r[x]:.3f}" for x in SCHEDULES))
    rtl = [r for r in report["rows"] if r["source"] == "rtl"]
    print(f"RTL rows: {len(rtl)}, model equal on {sum(r['rtl_cycles'] == r['model_cycles'] for r in rtl)}")
    if report["mismatches"]:
        print(f"ERROR: the model differs from the RTL on {len(report['mismatches'])} job(s); "
              f"see {out_dir / 'bench.json'}", file=sys.stderr)
    print(f"written: {out_dir / 'bench.json'}, bench.md, efficiency.png, speedup_fa2.png, "
          f"speedup_flashdecoding.png ({report['seconds']:.0f} s)")


def _add_arguments(parser):
    parser.add_argument("--out", default="build/bench", help="output folder (default build/bench)")
    parser.add_argument("--quick", action="store_true",
                        help="a small sweep: model rows plus one tiny RTL job (for tests)")


def add_parser(subparsers):
    """The ``bench`` subcommand: ``leanattn bench [--out build/bench] [--quick]``."""
    parser = subparsers.add_parser(
        "bench", help="compare the lean, fa2 and flashdecoding schedules (model and RTL)",
        description="Benchmark the schedules lean, fa2 and flashdecoding on the same hardware: the "
                    "cycle model over a sweep of shapes, small jobs on the RTL (Verilator) checked "
                    "against the model, golden model and simulator speed.")
    _add_arguments(parser)
    parser.set_defaults(func=run)
    return parser


def run(args):
    """Run ``leanattn bench``; exit status 1 if the model differs from the RTL on any job."""
    out_dir = Path(args.out)
    report = run_bench(out_dir, quick=args.quick)
    _print_summary(report, out_dir)
    return 1 if report["mismatches"] else 0


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    _add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
