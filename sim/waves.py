"""Waveform of one job on the generated RTL: the accelerator's top-level ports as WaveDrom and SVG.

``python -m leanattn.sim.waves --out docs/img --set cores=2 --set pipeline=full`` runs a small job
(``tiny`` on two cores, the smallest configuration with a reduction tree: one head of 2 keys, cut
across the two cores and merged in the tree) through the generated Verilog of
:class:`~leanattn.sim.systop.SystemBench` -- the accelerator with its KV memory, ``latency`` extra
cycles on every memory response, no stalls -- inside the stream harness of :mod:`leanattn.sim.harness`
that the system bench uses, on Icarus Verilog, which writes a VCD of the accelerator's own scope.
The outputs the harness recorded must equal the golden model's; then the ports of one core and of
the job are read back from the VCD (:func:`read_vcd`, :func:`sample`) and written as WaveDrom JSON
(:func:`wavedrom`) and rendered to SVG with the ``wavedrom`` package: ``job_waveform.json`` and
``job_waveform.svg`` in ``--out``.

Stretches in which every shown row repeats with a short period (a burst of K beats, the normalizer's
one beat every ``norm_cycles`` cycles, waiting) are shortened to their first cycles and their last,
with a gap (``|`` in WaveDrom, drawn as ``//``) in between; the ``cycle`` row gives the cycle
numbers, counted from the job's first input transfer (cycle 0), as ``o_cycles`` and
:mod:`leanattn.sim.perf` count them.
"""

import argparse
import json
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["VcdSignal", "read_vcd", "sample", "JobRun", "job_arrays", "run_job", "wavedrom", "render_svg",
           "main"]

#: The job of the documented waveform: head lengths on ``tiny`` ...
DEFAULT_LENGTHS = (2,)

#: ... with these ``--set`` overrides (tiny on two cores: ``leanattn.sim.configs.TINY2``).
DOC_OVERRIDES = ("cores=2", "pipeline=full")

#: Where the accelerator sits in the simulation: test bench, harness, system bench, top.
TOP_SCOPE = "waves_tb.h.dut.top"

#: A stretch that repeats with period ``p`` is shortened when it lasts at least this many periods
#: and cycles.
_MIN_PERIODS, _MIN_CYCLES, _MAX_PERIOD = 5, 12, 8


# --- reading a VCD --------------------------------------------------------------------------------

@dataclass
class VcdSignal:
    """One variable of a VCD: its full dotted name, width and ``[(time, value)]`` changes in time
    order; ``value`` is an int, or None when any bit is x or z."""
    name:    str
    width:   int
    changes: list


def read_vcd(path, *, scope=None):
    """The variables of the VCD file ``path`` as ``{full name: VcdSignal}`` and its timescale text.

    Full names join the scopes and the reference with dots (``waves_tb.h.dut.top.o_busy``); a bit
    or range suffix of the declaration is not part of the name. ``scope``: keep only the variables
    declared directly in that scope (a dotted name). Variables sharing an identifier code share
    their changes. Raises ``ValueError`` for a file that is not a VCD or a change of an undeclared
    variable.
    """
    from vcd.reader import TokenKind, VCDParseError, tokenize

    scopes, by_code, signals, timescale, now = [], {}, {}, None, 0
    try:
        with open(path, "rb") as file:
            for token in tokenize(file):
                kind = token.kind
                if kind is TokenKind.SCOPE:
                    scopes.append(token.data.ident)
                elif kind is TokenKind.UPSCOPE:
                    scopes.pop()
                elif kind is TokenKind.TIMESCALE:
                    timescale = f"{token.data.magnitude.value}{token.data.unit.value}"
                elif kind is TokenKind.VAR:
                    var = token.data
                    where = ".".join(scopes)
                    if scope is not None and where != scope:
                        by_code.setdefault(var.id_code, [])
                        continue
                    signal = VcdSignal(f"{where}.{var.reference}", var.size, [])
                    signals[signal.name] = signal
                    by_code.setdefault(var.id_code, []).append(signal)
                elif kind is TokenKind.CHANGE_TIME:
                    now = token.data
                elif kind in (TokenKind.CHANGE_SCALAR, TokenKind.CHANGE_VECTOR):
                    code, value = token.data.id_code, token.data.value
                    if code not in by_code:
                        raise ValueError(f"{path}: a change of the undeclared variable {code!r}")
                    value = _value(value)
                    for signal in by_code[code]:
                        signal.changes.append((now, value))
    except (VCDParseError, UnicodeDecodeError) as error:
        raise ValueError(f"{path} is not a readable VCD file ({error})") from None
    if timescale is None:
        raise ValueError(f"{path} is not a VCD file: no $timescale")
    return signals, timescale


def _value(value):
    if isinstance(value, int):
        return value
    text = value.lower()
    if any(c in text for c in "xz"):
        return None
    return int(text, 2)


def sample(signals, clock, names):
    """The value of each signal of ``names`` just before every rising edge of ``clock`` (what a
    flip-flop on that edge sees): ``{name: [value per edge]}`` and the edge times."""
    for name in (clock, *names):
        if name not in signals:
            raise KeyError(f"no signal {name!r} in the trace")
    edges, previous = [], None
    for time, value in signals[clock].changes:
        if previous == 0 and value == 1:
            edges.append(time)
        previous = value
    values = {}
    for name in names:
        changes, out, i, current = signals[name].changes, [], 0, None
        for edge in edges:
            while i < len(changes) and changes[i][0] < edge:
                current = changes[i][1]
                i += 1
            out.append(current)
        values[name] = out
    return values, edges


# --- running one job ------------------------------------------------------------------------------

@dataclass
class JobRun:
    """A job simulated with a VCD: ``vcd`` path, measured ``cycles`` (``o_cycles``), the golden
    output integers (equal to the RTL's), the configuration, lengths and memory latency."""
    cfg:     object
    lengths: list
    latency: int
    vcd:     Path
    cycles:  int
    out:     np.ndarray


def job_arrays(cfg, lengths, seed=1):
    """Float job arrays of one batch, ``len(lengths)`` heads, standard normal q, k, v."""
    rng = np.random.default_rng(seed)
    heads, n_max, d = len(lengths), max(lengths), cfg.head_dim
    k, v = rng.standard_normal((2, 1, heads, n_max, d))
    return {"q": rng.standard_normal((1, heads, d)), "k": k, "v": v,
            "lengths": np.array([list(lengths)], dtype=np.int64)}


_TESTBENCH = """// Runs one job through the harness and dumps the accelerator's scope (leanattn.sim.waves).
module waves_tb;
  reg clk = 1'b0;
  reg rst = 1'b1;
  reg flush = 1'b0;
  wire done;
  wire [31:0] rule_errors;
  harness h (.clk(clk), .rst(rst), .seed(32'd1), .run_id(16'd0), .idle_mode(2'd0), .bp_mode(2'd0),
             .flush(flush), .done(done), .rule_errors(rule_errors));
  always #1 clk = ~clk;
  initial begin
    $dumpfile("job.vcd");
    $dumpvars(1, {scope});
    repeat (3) @(posedge clk);
    @(negedge clk) rst = 1'b0;
    wait (done);
    repeat (8) @(posedge clk);
    flush = 1'b1;
    repeat (2) @(posedge clk);
    $display("waves_tb: done, rule_errors %0d", rule_errors);
    $finish;
  end
  initial begin
    #{budget};
    $display("waves_tb: timeout");
    $finish;
  end
endmodule
"""


def run_job(cfg, lengths=DEFAULT_LENGTHS, *, build_dir="build/waves", latency=2, seed=1, timeout=300):
    """Simulate one job of head ``lengths`` on Icarus Verilog with a VCD of the accelerator's scope.

    Raises ``RuntimeError`` when Icarus is missing or the simulation fails, and ``AssertionError``
    when the RTL's outputs differ from the golden model's.
    """
    from amaranth.back import verilog

    from .cocotb_util import check_simulators
    from .harness import harness_verilog, stream_ports
    from .job import Job
    from .system import job_cycles, read_outputs, system_vectors
    from .systop import SystemBench

    if not isinstance(latency, int) or latency < 0:
        raise ValueError(f"latency must be a non-negative integer, not {latency!r}")
    check_simulators("icarus")
    job = Job.from_arrays(cfg, **job_arrays(cfg, lengths, seed))
    build = Path(build_dir)
    build.mkdir(parents=True, exist_ok=True)
    inputs, outputs, results, bank_keys = system_vectors(cfg, [job])
    bench = SystemBench(cfg, bank_keys=bank_keys, latency=latency)
    ports = stream_ports(bench, inputs, outputs)
    (build / "system.v").write_text(verilog.convert(bench, name="system", emit_src=False))
    (build / "harness.v").write_text(harness_verilog("system", ports, {n: len(i) for n, i in inputs.items()}))
    for name, items in inputs.items():
        (build / f"in_{name}.hex").write_text("".join(f"{v:x}\n" for v in items))
    vectors = {**inputs, **outputs}
    (build / "counts.hex").write_text("".join(f"{len(vectors[name]):x}\n" for name, _, _ in ports))
    budget = 2 * (50 * sum(len(v) for v in vectors.values()) + 1000)      # time units: 2 per cycle
    (build / "waves_tb.v").write_text(_TESTBENCH.replace("{scope}", TOP_SCOPE)
                                      .replace("{budget}", str(budget)))
    for name in ("job.vcd", *(f"xfer_{name}.txt" for name, _, _ in ports)):
        (build / name).unlink(missing_ok=True)
    _tool(["iverilog", "-g2005", "-o", "job.vvp", "-s", "waves_tb", "system.v", "harness.v", "waves_tb.v"],
          build, timeout)
    log = _tool(["vvp", "-n", "job.vvp"], build, timeout)
    if "waves_tb: done, rule_errors 0" not in log:
        raise RuntimeError(f"the simulation in {build} did not finish cleanly:\n{log[-2000:]}")
    rtl = read_outputs(cfg, build, job.flat_heads)
    if not np.array_equal(rtl, results[0].out):
        raise AssertionError(f"the RTL's outputs differ from the golden model's in "
                             f"{int(np.sum(rtl != results[0].out))} places (build {build})")
    return JobRun(cfg=cfg, lengths=[int(n) for n in lengths], latency=latency, vcd=build / "job.vcd",
                  cycles=job_cycles(cfg, build)[0], out=rtl)


def _tool(argv, cwd, timeout):
    if shutil.which(argv[0]) is None:
        raise RuntimeError(f"{argv[0]} not found on PATH; install it with: apt-get install -y iverilog")
    try:
        done = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"{argv[0]} did not finish in {timeout} s (in {cwd})") from None
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed in {cwd} (exit {done.returncode}):\n"
                           f"{(done.stdout + done.stderr)[-2000:]}")
    return done.stdout + done.stderr


# --- WaveDrom ---------------------------------------------------------------------------------------

def _rows(cfg, core):
    """``[(port, kind, decode)]`` of the waveform: ``kind`` is ``bit`` or ``stream`` (a
    payload row plus valid and ready rows); ``decode(value, state)`` labels a beat."""
    from ..hdl.layouts import output_layout
    from ..hdl.ports import descriptor_layout, kv_data_layout, kv_request_layout, query_layout

    def desc(bits, state):
        d = descriptor_layout(cfg).from_bits(bits)
        return f"n{int(d.length)}"

    def query(bits, state):
        return str(int(query_layout(cfg).from_bits(bits).q[0]))

    def request(bits, state):
        r = kv_request_layout(cfg).from_bits(bits)
        return f"{int(r.addr)}/{int(r.keys)}"

    def element(bits, state):
        return str(int(kv_data_layout(cfg).from_bits(bits)[0]))

    def out(bits, state):
        o = output_layout(cfg).from_bits(bits)
        head = int(o.head)
        beat = state.setdefault(head, 0)
        state[head] = 0 if o.last else beat + 1
        return f"h{head}.{beat}"

    return [("i_desc", "stream", desc), ("i_query", "stream", query),
            (f"o_kreq_{core}", "stream", request), (f"i_k_{core}", "stream", element),
            (f"o_vreq_{core}", "stream", request), (f"i_v_{core}", "stream", element),
            ("o_out", "stream", out), ("o_busy", "bit", None), ("o_done", "bit", None)]


def _cells(rows, values, cycles):
    """Per row and cycle ``(char, label, signature)``: WaveDrom's own continuation rules, beats
    labelled, and what the shortening compares."""
    table = []
    for port, kind, decode in rows:
        if kind == "bit":
            v = values[port]
            table.append((port, [(("x" if v[c] is None else str(v[c])), None, v[c]) for c in range(cycles)]))
            continue
        valid, ready, payload = (values[f"{port}__{s}"] for s in ("valid", "ready", "payload"))
        state, cells, prev_fire = {}, [], False
        for c in range(cycles):
            if valid[c] != 1:
                cells.append(("x", None, (0, 0)))
                prev_fire = False
                continue
            new = c == 0 or valid[c - 1] != 1 or prev_fire or payload[c] != payload[c - 1]
            cells.append(("=", decode(payload[c], state) if new else None, (1, int(new))))
            prev_fire = ready[c] == 1
        table.append((f"{port}.payload", cells))
        for part, series in (("valid", valid), ("ready", ready)):
            table.append((f"{port}.{part}", [("x" if series[c] is None else str(series[c]), None, series[c])
                                               for c in range(cycles)]))
    return table


def _shorten(signatures):
    """The cycles to show: ``[(start, stop)]`` windows. A stretch that repeats with a period ``p``
    (at most ``_MAX_PERIOD``) for at least ``_MIN_PERIODS`` periods and ``_MIN_CYCLES`` cycles keeps
    its first cycles (two periods, at least 4 cycles) and its last (one period, at least 2) when
    that leaves out 4 cycles or more."""
    n, windows, i, start = len(signatures), [], 0, 0
    while i < n:
        best = None
        for p in range(1, _MAX_PERIOD + 1):
            run = 0
            while i + run + p < n and signatures[i + run] == signatures[i + run + p]:
                run += 1
            keep = p * max(2, -(-4 // p)), p * max(1, -(-2 // p))
            length = run + p
            cut = length - sum(keep)
            if length >= max(_MIN_PERIODS * p, _MIN_CYCLES) and cut >= 4 and (best is None or cut > best[0]):
                best = (cut, keep, length)
        if best is None:
            i += 1
            continue
        _, (head, tail), length = best
        windows.append((start, i + head))
        start, i = i + length - tail, i + length
    windows.append((start, n))
    return [w for w in windows if w[1] > w[0]]


def wavedrom(cfg, vcd_path, *, core=0, margin=3, title=None):
    """WaveDrom JSON (a dict) of the job in the VCD ``vcd_path``: ``clk``, the ``cycle`` row, and
    the ports ``i_desc``, ``i_query``, core ``core``'s ``o_kreq``/``i_k``/``o_vreq``/``i_v``,
    ``o_out`` (payload, valid and ready rows each), ``o_busy`` and ``o_done``, from ``margin`` cycles
    before the job's first input transfer to ``margin`` cycles after ``o_done``, shortened (see the
    module docstring)."""
    if not 0 <= core < cfg.cores:
        raise ValueError(f"core must be in the range 0..{cfg.cores - 1}, not {core}")
    rows = _rows(cfg, core)
    names = [f"{port}__{s}" for port, kind, _ in rows if kind == "stream"
             for s in ("valid", "ready", "payload")] + [port for port, kind, _ in rows if kind == "bit"]
    signals, _ = read_vcd(vcd_path, scope=TOP_SCOPE)
    values, _ = sample(signals, f"{TOP_SCOPE}.clk", [f"{TOP_SCOPE}.{n}" for n in names])
    values = {n: values[f"{TOP_SCOPE}.{n}"] for n in names}
    fire = [values["i_desc__valid"][c] == 1 and values["i_desc__ready"][c] == 1
            or values["i_query__valid"][c] == 1 and values["i_query__ready"][c] == 1
            for c in range(len(values["o_done"]))]
    if not any(fire) or 1 not in values["o_done"]:
        raise ValueError(f"{vcd_path} holds no whole job (no input transfer, or no o_done)")
    first = fire.index(True)
    lo, hi = max(first - margin, 0), min(values["o_done"].index(1) + margin + 1, len(fire))
    values = {n: v[lo:hi] for n, v in values.items()}
    table = _cells(rows, values, hi - lo)
    windows = _shorten([tuple(cells[c][2] for _, cells in table) for c in range(hi - lo)])
    signal = [{"name": "clk", "wave": "|".join("p" + "." * (b - a - 1) for a, b in windows)},
              _ruler(windows, lo - first)]
    groups = {}
    for name, cells in table:
        port, part = name.split(".") if "." in name else (name, None)
        wave, data = _wave(cells, windows)
        entry = {"name": part or name, "wave": wave, **({"data": data} if data else {})}
        groups.setdefault(port, []).append(entry)
    for port, entries in groups.items():
        signal.append([port, *entries] if len(entries) > 1 else entries[0])
    shown = sum(b - a for a, b in windows)
    head = title or (f"one job on {cfg.head_dim}-dim heads, {cfg.cores} cores; cycles from the first "
                     f"input transfer; // = cycles left out")
    return {"signal": signal, "config": {"hscale": 1},
            "head": {"text": head}, "foot": {"text": f"{shown} of {hi - lo} cycles shown"}}


def _ruler(windows, offset):
    """A ``cycle`` row: boxes labelled with the cycle number (``offset`` maps a trace cycle to the
    job's) at multiples of 8 (cycle 0 among them) at least 3 cycles apart, and at each window's
    start unless a multiple of 8 follows within 3 cycles (then the start's box stays blank)."""
    wave, data = [], []
    for k, (a, b) in enumerate(windows):
        if k:
            wave.append("|")
        labels, last = {a: ""}, None
        for c in range(a, b):
            number = c + offset
            if c == a and not any((x + offset) % 8 == 0 for x in range(a, min(a + 3, b))):
                labels[c], last = str(number), c
            elif number % 8 == 0 and (last is None or c - last >= 3):
                labels[c], last = str(number), c
        for c in range(a, b):
            wave.append("=" if c in labels else ".")
            if c in labels:
                data.append(labels[c])
    return {"name": "cycle", "wave": "".join(wave), "data": data}


def _wave(cells, windows):
    """The wave string and data labels of one row over the windows. A gap (``|``) continues the
    state before it, so a row whose state differs after the gap states it anew, and a beat in
    flight after a gap starts a new box."""
    wave, data = [], []
    for k, (a, b) in enumerate(windows):
        if k:
            wave.append("|")
        for c in range(a, b):
            char, label, _ = cells[c]
            fresh = c == a and k > 0
            previous = cells[windows[k - 1][1] - 1][0] if fresh else (cells[c - 1][0] if c > a else None)
            if char == "=":
                if label is None and fresh:
                    label = "..."
                if label is not None:
                    wave.append("=")
                    data.append(label)
                else:
                    wave.append(".")
            else:
                wave.append("." if previous == char else char)
    return "".join(wave), data


def render_svg(source):
    """SVG text of a WaveDrom source (dict), rendered by the ``wavedrom`` package."""
    import wavedrom as wd

    return wd.render(json.dumps(source)).tostring()


# --- command line -----------------------------------------------------------------------------------

def main(argv=None):
    """``python -m leanattn.sim.waves [--out docs/img] [--set FIELD=VALUE ...]``: simulate the job,
    write the JSON and SVG."""
    from ..cli import UsageError, load_config
    from ..hdl.config import PRESETS
    from .perf import predict

    parser = argparse.ArgumentParser(prog="python -m leanattn.sim.waves",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="docs/img", metavar="DIR",
                        help="where job_waveform.json and .svg go")
    parser.add_argument("--build-dir", default="build/waves", metavar="DIR", help="simulation folder")
    parser.add_argument("--preset", default="tiny", choices=sorted(PRESETS))
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="FIELD=VALUE",
                        help="change a field of the preset (repeatable; the docs' waveform: "
                             + " ".join(f"--set {o}" for o in DOC_OVERRIDES) + ")")
    parser.add_argument("--lengths", type=int, nargs="+", default=list(DEFAULT_LENGTHS), metavar="N",
                        help="head lengths of the job (default: %(default)s)")
    parser.add_argument("--latency", type=int, default=2, help="extra cycles on every memory response")
    parser.add_argument("--core", type=int, help="the core whose ports are shown (default: the one with "
                        "the most segments)")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    try:
        cfg = load_config(args.preset, None, args.overrides)
    except UsageError as error:
        parser.error(str(error))
    name = args.preset + "".join(f" {o}" for o in args.overrides)
    if any(n < 1 for n in args.lengths) or args.latency < 0:
        parser.error("--lengths must be at least 1 and --latency at least 0")
    pred = predict(cfg, args.lengths, latency=args.latency)
    core = args.core
    if core is None:
        core = max(range(cfg.cores), key=lambda c: len(pred.cores[c].segments))
    run = run_job(cfg, args.lengths, build_dir=args.build_dir, latency=args.latency, seed=args.seed)
    title = (f"leanattn {name}: one job, heads of {', '.join(map(str, args.lengths))} keys, memory "
             f"latency {args.latency}, {run.cycles} cycles; ports of core {core}; // = cycles left out")
    source = wavedrom(cfg, run.vcd, core=core, title=title)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "job_waveform.json").write_text(json.dumps(source, indent=1) + "\n")
    (out / "job_waveform.svg").write_text(render_svg(source) + "\n")
    print(f"leanattn waves: {name}, lengths {args.lengths}: o_cycles {run.cycles} (cycle model "
          f"{pred.cycles}), outputs equal the golden model's -> {out / 'job_waveform.json'}, "
          f"{out / 'job_waveform.svg'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
