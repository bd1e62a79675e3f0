"""Docs cannot rot: every shell command in the documentation runs, and does what the page says.

Every line of a fenced ``sh`` block, and every ``$ `` line of a ``console`` block, in README.md,
docs/*.md and examples/README.md is run with bash, from a scratch folder that looks like the
repository root (the venv, the Makefile, the sources and the examples linked in; ``build/`` its
own), so commands write nothing into the repository. The commands of one page run in order in one
folder, so a command can use what an earlier one wrote (``leanattn demo`` then ``leanattn golden``
on its job) and heavy builds are reused (``make`` builds the Verilator model that ``leanattn sim``
then reuses).

* Fast tier: the commands that take seconds; the heavy ones (:data:`SLOW`) are left out.
* Slow tier (``-m slow``): every command of the page, the heavy ones included.
* Never run (:data:`NOT_RUN`): commands that cannot run here, each with its reason.

A command must exit with status 0, except where the page shows its output: a ``console`` block's
output lines must appear in what the command prints, and a shown ``leanattn: error:`` line means
exit status 2. ``leanattn synth`` exits 1 by design when the design does not fit or misses timing
(``docs/synthesis.md``); its status is checked against the report it writes.
"""

import json
import os
import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

#: Pages whose commands are run.
PAGES = ["README.md", *sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "docs").glob("*.md")),
         "examples/README.md"]

#: Linked into the scratch folder (read only for the commands); ``build/`` is the folder's own.
LINKED = [".venv", "Makefile", "pyproject.toml", "gen", "hdl", "sim", "fpga", "tests", "examples", "LICENSE"]

#: Commands that are not run, with the reason: (pattern, reason).
NOT_RUN = [
    (r"^make test(\s|$)", "the full test suite, which holds this test: running it from here would recurse"),
    (r"leanattn board --port ", "needs an FPGA board on a serial port (JOB.npz and OUT.npz are "
                                "placeholders); the driver runs against the simulated board in "
                                "tests/test_board.py"),
]

#: Heavy commands, run in the slow tier only: (pattern, why).
SLOW = [
    (r"^make(\s+#|\s*$|\s+PRESET=)", "generates the Verilog and runs the demo job on Verilator"),
    (r"leanattn sim ", "simulates the RTL (builds a Verilator model)"),
    (r"leanattn synth ", "synthesis, placement and routing"),
    (r"^make synth", "synthesis, placement and routing"),
    (r"examples/own_activations\.py(?!.*--no-sim)", "runs the example job on the RTL"),
]

TIMEOUT = {"fast": 600, "slow": 5400}


@dataclass
class DocCommand:
    """One command of a page: where it is, the text bash runs, and the output the page shows."""
    page:     str
    line:     int
    command:  str
    expected: list = field(default_factory=list)

    def __str__(self):
        return f"{self.page}:{self.line}: {self.command}"


_FENCE = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```", re.M | re.S)


def extract(text, page="<text>"):
    """The commands of the ``sh`` and ``console`` blocks of a Markdown text, in order."""
    commands = []
    for match in _FENCE.finditer(text):
        lang, body = match.group(1), match.group(2)
        if lang not in ("sh", "console"):
            continue
        first = text.count("\n", 0, match.start(2)) + 1
        lines = body.splitlines()
        i = 0
        while i < len(lines):
            line, number = lines[i], first + i
            i += 1
            if lang == "console":
                if not line.startswith("$ "):
                    if commands and commands[-1].page == page and line.strip():
                        commands[-1].expected.append(line.strip())
                    continue
                line = line[2:]
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            while line.endswith("\\") and i < len(lines):
                line = line[:-1] + " " + lines[i].strip()
                i += 1
            commands.append(DocCommand(page, number, line.strip()))
    return commands


def classify(command):
    """``("not run" | "slow" | "fast", reason)`` of a command."""
    for pattern, reason in NOT_RUN:
        if re.search(pattern, command.command):
            return "not run", reason
    for pattern, reason in SLOW:
        if re.search(pattern, command.command):
            return "slow", reason
    return "fast", ""


def all_commands():
    return [c for page in PAGES for c in extract((ROOT / page).read_text(), page)]


def _scratch(tmp_path):
    for name in LINKED:
        (tmp_path / name).symlink_to(ROOT / name)
    return tmp_path


def _check_setup():
    """Make would reinstall the venv from the scratch folder if its stamp were stale: refuse."""
    stamp = ROOT / ".venv" / ".installed"
    assert stamp.exists() and stamp.stat().st_mtime >= (ROOT / "pyproject.toml").stat().st_mtime, \
        "the venv is older than pyproject.toml: run `make setup` first"


def _synth_status_ok(command, cwd, status):
    """``leanattn synth``: 0 when the report says it fits and meets timing, else 1."""
    out = re.search(r"-o\s+(\S+)", command.command)
    report = json.loads((cwd / out.group(1) / "report.json").read_text())
    return status == (0 if report["fits"] and report["timing_met"] else 1)


def run_page(page, tier, tmp_path):
    """Run the page's commands of ``tier`` in one scratch folder; return the failures."""
    cwd = _scratch(tmp_path)
    env = dict(os.environ, MPLBACKEND="Agg")
    failures = []
    for command in extract((ROOT / page).read_text(), page):
        kind, _ = classify(command)
        if kind == "not run" or (kind == "slow" and tier == "fast"):
            continue
        if command.command.startswith("make"):
            _check_setup()
        result = subprocess.run(["bash", "-c", command.command], cwd=cwd, env=env, text=True,
                                capture_output=True, stdin=subprocess.DEVNULL, timeout=TIMEOUT[tier])
        output = result.stdout + result.stderr
        shows_error = any(line.startswith("leanattn: error:") for line in command.expected)
        if re.search(r"leanattn synth ", command.command):
            ok = _synth_status_ok(command, cwd, result.returncode)
        else:
            ok = result.returncode == (2 if shows_error else 0)
        missing = [line for line in command.expected if line not in output]
        if not ok or missing:
            failures.append(f"{command}\n  exit status {result.returncode}"
                            + (f"; output lacks {missing}" if missing else "")
                            + "\n  " + "\n  ".join(output.strip().splitlines()[-15:]))
    return failures


def _pages_with(tier):
    kinds = {"fast": ("fast",), "slow": ("fast", "slow")}[tier]
    pages = []
    for page in PAGES:
        commands = [classify(c)[0] for c in extract((ROOT / page).read_text(), page)]
        if any(k in kinds for k in commands) and (tier == "fast" or "slow" in commands):
            pages.append(page)
    return pages


@pytest.mark.parametrize("page", _pages_with("fast"))
def test_fast_commands_run(page, tmp_path):
    failures = run_page(page, "fast", tmp_path)
    assert not failures, "\n\n".join(failures)


@pytest.mark.slow
@pytest.mark.parametrize("page", _pages_with("slow"))
def test_all_commands_run(page, tmp_path):
    failures = run_page(page, "slow", tmp_path)
    assert not failures, "\n\n".join(failures)


# --- the extraction and the lists themselves ---------------------------------------------------------

def test_extract_reads_sh_and_console_blocks():
    text = ("intro\n```sh\nmake   # comment\n# only a comment\n\nleanattn gen \\\n  --preset tiny\n```\n"
            "```python\nprint('not a command')\n```\n"
            "```console\n$ leanattn config --set lanes=3\nleanattn: error: bad\n$ ls\n```\n")
    commands = extract(text, "page.md")
    assert [c.command for c in commands] == ["make   # comment", "leanattn gen  --preset tiny",
                                             "leanattn config --set lanes=3", "ls"]
    assert [c.line for c in commands] == [3, 6, 13, 15]
    assert commands[2].expected == ["leanattn: error: bad"] and commands[3].expected == []


def test_the_docs_have_commands_in_every_tier():
    kinds = [classify(c)[0] for c in all_commands()]
    assert kinds.count("fast") >= 20 and kinds.count("slow") >= 3 and kinds.count("not run") >= 1


@pytest.mark.parametrize("pattern, reason", NOT_RUN)
def test_every_not_run_entry_is_still_needed(pattern, reason):
    assert any(re.search(pattern, c.command) for c in all_commands()), \
        f"no command matches {pattern!r} any more: remove it from NOT_RUN"
    assert len(reason) > 20


def test_not_run_commands():
    """The commands no tier runs, listed so that a new one is a deliberate choice."""
    skipped = sorted({c.command for c in all_commands() if classify(c)[0] == "not run"})
    assert skipped == [
        ".venv/bin/leanattn board --port /dev/ttyUSB0 JOB.npz -o OUT.npz --preset tiny  "
        "# a job on a board (UART)",
        "make test     # set up what is missing, then run the full test suite",
    ]
