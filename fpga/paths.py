"""The worst register-to-register paths of a routed design, from the SDF file nextpnr writes.

nextpnr prints one critical path per clock: fix it, route again, and the next one shows up. This
module reads the delays nextpnr back-annotates (``nextpnr-ecp5 ... --sdf top.sdf``, and the same
for ``nextpnr-ice40``) and lists the worst paths of the whole design at once, one per distinct
problem::

    python -m leanattn.fpga.paths build/synth/ulx3s-default/top.sdf --period 10 --count 20 \\
        [--depth 2] [--group register] [--netlist top.json] [--json paths.json] [--hops]

What it computes
----------------
The SDF file is read with a small parser of its s-expressions (:func:`parse_sdf`) into a timing
graph whose nodes are cell pins (instance and port) and whose edges are the ``INTERCONNECT``
delays (routing: driver pin to sink pin) and the ``IOPATH`` delays inside a cell (logic: input pin
to output pin). An ``IOPATH`` from a clock pin -- a pin that is the clock of a timing check in a
cell of that type, or an ``IOPATH`` written with an edge, ``(posedge CLK)`` -- is a path start
(``CLK -> Q`` of a flip-flop, clock to output of a block RAM or DSP) and not an edge, so the graph
breaks at every clocked cell. Every input pin with a ``SETUP`` or ``SETUPHOLD`` check is a path end,
its setup time added. Each delay is the largest value written: the maximum of the rise and fall
values, and the max corner of a ``(min:typ:max)`` triple, as nextpnr's setup analysis takes them.

Arrival times are propagated longest-first in topological order, kept apart per *source unit*
(see below) and clock: the result is, for every endpoint and every unit that reaches it, the
worst path. The clock's last net, the ``INTERCONNECT`` into a clock pin, counts as nextpnr counts
it (its clock skew): its delay at the launching cell is added to the arrival, its delay at the
capturing cell taken off the path (a ``clk-skew`` hop when the two differ); the clock tree before
it is common to both ends. A path's slack is ``period_ns`` minus its delay. These are the rules of
nextpnr's timing analyser: on routed ECP5 and iCE40 designs the worst path is nextpnr's critical
path, and the arrival at every endpoint the one its ``--detailed-timing-report`` gives.
:meth:`Analysis.paths` keeps one path per distinct problem (``group``):

* ``"register"`` (the default): the worst path into each endpoint *register group*, the register
  the endpoint cell was made from (:func:`register_group`: ``top.core_1.pv.acc_TRELLIS_FF_Q_12``
  belongs to ``top.core_1.pv.acc``), so a 40-bit register that misses timing is one line;
* ``"endpoint"``: the worst path into each endpoint pin;
* ``"unit"``: the worst path of each (source unit, sink unit) pair.

Each path says how many endpoints its group holds and how many of them fail. Units are the
hierarchical prefix of a register group, ``depth`` levels of it (depth 2: ``top.core_1``;
registers of the top level are in :data:`TOP_UNIT`). :meth:`Analysis.unit_pairs` sums the
analysis up per (source unit, sink unit) pair: endpoints reached, endpoints that fail, worst slack.

The command line prints the worst paths, then the unit pairs (the failing ones, and at least
``--count``), and writes everything as JSON with ``--json``; without ``--netlist`` it reads the
Yosys netlist beside the SDF file if there is one (``top.json`` for ``top.sdf``). It exits with 0
when every endpoint meets the period, 1 when one does not, 2 for a bad argument or file.

Limits
------
* Setup only, against one period: launch and capture on the same edge, no multicycle or false
  path. A path between two clocks -- clock pins on nets of different drivers, where the SDF shows
  them -- is not timed (:attr:`Analysis.cross_clock` counts the endpoints left out), as nextpnr
  leaves it out of a clock's Fmax; without clock nets in the SDF (out of context) all is one clock.
* Paths from and to the design's ports are not timed: nextpnr's SDF has no arcs in the I/O cells
  (and out of context the ports are no cells at all). Distributed RAM is timed as nextpnr does: its
  write (``WD``, ``WAD``, ``WRE`` against ``WCK``) ends paths, its read address goes through the
  LUT, and the stored contents start no path.
* Read and ignored, counted in :attr:`Analysis.ignored`: ``INCREMENT`` delays, ``PORT``, ``DEVICE``,
  ``NETDELAY`` and ``PATHPULSE`` entries, every timing check but setup, ``TIMINGENV``, wildcard
  instances (``INSTANCE *``). A ``COND`` delay counts whatever its condition.
* A combinational loop is reported (:attr:`Analysis.loops`) and the edges inside it are not timed;
  the paths into and out of it are. (nextpnr stops on a loop unless run with ``--force``.)
* Flattening writes the hierarchy into cell names with dots, and Amaranth writes the fields of a
  layout the same way (``i_q__payload.tag``). Without a netlist a dotted segment counts as a level
  of the hierarchy unless it holds ``__`` (a flattened port) or starts with ``$``; with the Yosys
  netlist nextpnr read (``netlist=``, ``--netlist top.json``) the levels are the real instances.
"""

import argparse
import json
import math
import re
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

__all__ = ["SdfError", "Pin", "Hop", "TimingPath", "UnitPair", "Sdf", "Analysis", "GROUPS", "TOP_UNIT",
           "parse_sdf", "analyze", "worst_paths", "unit_pairs", "register_group", "unit_of", "report",
           "main"]

#: Ways of keeping one path per distinct problem (:meth:`Analysis.paths`).
GROUPS = ("register", "endpoint", "unit")

#: The unit of a register at the top level of the design.
TOP_UNIT = "(top)"

#: Seconds per unit of an SDF ``TIMESCALE``.
_TIME_UNITS = {"s": 1.0, "ms": 1e-3, "us": 1e-6, "ns": 1e-9, "ps": 1e-12, "fs": 1e-15}

#: Timing checks whose first value is a setup time.
_SETUP_CHECKS = ("SETUP", "SETUPHOLD")

#: Timing checks of a data (or asynchronous) port against a clock, the second port.
_CLOCKED_CHECKS = ("SETUP", "SETUPHOLD", "HOLD", "RECOVERY", "REMOVAL", "RECREM", "NOCHANGE")


class SdfError(ValueError):
    """The text is not an SDF file, or an entry of it cannot be read."""


class _NetlistError(SdfError):
    """The netlist given to name the instances cannot be read."""


class Pin(NamedTuple):
    """A pin of a cell: its instance name (as nextpnr names the cell) and its port."""
    cell: str
    port: str

    def __str__(self):
        return f"{self.cell}.{self.port}"


class Hop(NamedTuple):
    """One step of a path: the pin reached, the time there in ns, and how it was reached:
    ``"clk-to-q"`` (at the path's start), ``"routing"``, ``"logic"``, ``"setup"`` (the last hop,
    at the endpoint, the setup time added). Times count from the clock edge at the capturing
    register, so that the last one is the path's delay; when the clock reaches the launching
    register at another time, a first ``"clk-skew"`` hop at its clock pin says by how much."""
    pin: Pin
    at_ns: float
    kind: str


@dataclass(frozen=True)
class TimingPath:
    """One register-to-register path.

    ``delay_ns`` runs from the clock edge to the endpoint's setup requirement (clock skew,
    clock-to-output, routing and logic, setup time); ``slack_ns`` is the period minus it.
    ``hops`` are :class:`Hop` from the start to the end.
    ``logic_levels`` counts the logic hops. ``start_group``/``end_group`` are the register groups
    of the two ends, ``start_unit``/``end_unit`` their units. ``endpoints`` and ``failing`` count
    the endpoints of the group the path stands for (the end register group, the endpoint, or the
    unit pair, after ``group``) and those of them with a negative slack. ``launch_clock`` and
    ``capture_clock`` name the driver of the clock net at each end (``cell.port``), where the SDF
    has that net (else None).
    """
    start: Pin
    end: Pin
    delay_ns: float
    slack_ns: float
    hops: tuple
    logic_levels: int
    start_group: str
    end_group: str
    start_unit: str
    end_unit: str
    endpoints: int
    failing: int
    launch_clock: str = None
    capture_clock: str = None

    @property
    def breakdown_ns(self):
        """Delay by kind of hop: ``{"clk-to-q": ..., "routing": ..., "logic": ..., "setup": ...}``."""
        split, before = {}, 0.0
        for hop in self.hops:
            split[hop.kind] = split.get(hop.kind, 0.0) + hop.at_ns - before
            before = hop.at_ns
        return {kind: round(ns, 6) for kind, ns in split.items()}

    def to_dict(self):
        """The path as JSON-ready data."""
        return {
            "from": str(self.start), "to": str(self.end), "delay_ns": self.delay_ns,
            "slack_ns": self.slack_ns, "logic_levels": self.logic_levels,
            "breakdown_ns": self.breakdown_ns, "start_group": self.start_group,
            "end_group": self.end_group, "start_unit": self.start_unit, "end_unit": self.end_unit,
            "endpoints": self.endpoints, "failing": self.failing,
            "launch_clock": self.launch_clock, "capture_clock": self.capture_clock,
            "hops": [{"pin": str(hop.pin), "at_ns": hop.at_ns, "kind": hop.kind} for hop in self.hops],
        }


@dataclass(frozen=True)
class UnitPair:
    """The paths from one unit into another: endpoints of ``sink`` reached from ``source``, those
    of them that fail, and the worst path (its slack, start and end)."""
    source: str
    sink: str
    endpoints: int
    failing: int
    worst_slack_ns: float
    worst_from: Pin
    worst_to: Pin

    def to_dict(self):
        return {"source": self.source, "sink": self.sink, "endpoints": self.endpoints,
                "failing": self.failing, "worst_slack_ns": self.worst_slack_ns,
                "worst_from": str(self.worst_from), "worst_to": str(self.worst_to)}


# --- reading SDF -----------------------------------------------------------------------------------

@dataclass
class Sdf:
    """What the timing graph needs of an SDF file, delays in ns.

    Members
    -------
    design : str
        The ``DESIGN`` name ('' when absent).
    timescale_ns : float
        ns per unit of the file's values.
    celltypes : dict
        ``{instance: CELLTYPE}``.
    iopaths : list
        ``(instance, input port, output port, delay_ns, edge)``; ``edge`` is ``"posedge"``,
        ``"negedge"`` or None.
    interconnects : list
        ``(driver Pin, sink Pin, delay_ns)``.
    setups : list
        ``(instance, data port, clock port, setup_ns)``.
    clock_ports : dict
        ``{CELLTYPE: set of ports}``: the clocks of the timing checks of each cell type.
    ignored : dict
        ``{construct: count}`` of the entries read and not used.
    """
    design: str = ""
    timescale_ns: float = 1.0
    celltypes: dict = field(default_factory=dict)
    iopaths: list = field(default_factory=list)
    interconnects: list = field(default_factory=list)
    setups: list = field(default_factory=list)
    clock_ports: dict = field(default_factory=lambda: defaultdict(set))
    ignored: dict = field(default_factory=lambda: defaultdict(int))


#: One token: a parenthesis, a quoted string, an identifier (with its backslash escapes), or a
#: stray character (an unclosed quote, a lone backslash) that makes the text unreadable.
_TOKEN = re.compile(r'[()]|"(?:[^"\\]|\\.)*"|(?:[^\s()"\\]|\\.)+|\S')

#: Characters per slice of the text tokenized at once (cut at a line end).
_CHUNK = 1 << 20


def _chunks(text):
    """The tokens of ``text``, one list per slice of about :data:`_CHUNK` characters."""
    start, lines = 0, 1
    while start < len(text):
        end = text.find("\n", start + _CHUNK)
        end = len(text) if end < 0 else end + 1
        tokens = _TOKEN.findall(text, start, end)
        for stray in ('"', "\\"):
            if stray in tokens:
                at = next(m.start() for m in _TOKEN.finditer(text, start, end) if m.group() == stray)
                line = lines + text.count("\n", start, at)
                raise SdfError(f"unexpected character {stray!r} on line {line}")
        yield tokens
        lines += text.count("\n", start, end)
        start = end


def _unquote(atoms):
    return "".join(a[1:-1] if a.startswith('"') else a for a in atoms if isinstance(a, str))


class _Tokens:
    """The tokens of an SDF text, read one at a time: ``"("``, ``")"``, identifiers (raw, with
    their escapes) and quoted strings (with their quotes)."""

    def __init__(self, text):
        self._chunks = _chunks(text)
        self._next = iter(()).__next__
        self._ahead = None

    def _scan(self):
        while True:
            try:
                return self._next()
            except StopIteration:
                chunk = next(self._chunks, None)
                if chunk is None:
                    return None
                self._next = iter(chunk).__next__

    def next(self):
        token, self._ahead = self._ahead, None
        if token is None:
            token = self._scan()
            if token is None:
                raise SdfError("the SDF text ends inside an entry (unbalanced parentheses)")
        return token

    def peek(self):
        if self._ahead is None:
            self._ahead = self._scan()
        return self._ahead

    def keyword(self):
        """After a ``"("``: the entry's keyword, upper case."""
        token = self.next()
        if token in "()":
            raise SdfError("an SDF entry must start with a keyword, not a parenthesis")
        return token.upper()

    def rest(self):
        """The rest of the current entry up to its ``")"``, as nested lists."""
        stack = [[]]
        top = stack[0]
        token, self._ahead = self._ahead, None
        take = self._next
        while True:
            if token is None:
                try:
                    token = take()
                except StopIteration:
                    token, take = self._scan(), self._next
                    if token is None:
                        raise SdfError("the SDF text ends inside an entry (unbalanced parentheses)") from None
            if token == "(":
                top = []
                stack.append(top)
            elif token == ")":
                done = stack.pop()
                if not stack:
                    return done
                top = stack[-1]
                top.append(done)
            else:
                top.append(token)
            token = None


def _unescape(name):
    return re.sub(r"\\(.)", r"\1", name) if "\\" in name else name


def _split_path(raw, divider):
    """``instance<divider>port`` (raw, escaped) as ``(instance, port)``, split at the last
    divider that is not escaped."""
    if "\\" not in raw:
        instance, _, port = raw.rpartition(divider)
        return instance, port
    match = re.fullmatch(r"((?:[^\\]|\\.)*)" + re.escape(divider) + r"((?:[^\\]|\\.)*)", raw)
    if match is None:
        return "", _unescape(raw)
    return _unescape(match.group(1)), _unescape(match.group(2))


def _number(text, what):
    try:
        return float(text)
    except ValueError:
        raise SdfError(f"{what}: {text!r} is not a number") from None


def _value(item, what):
    """The largest number of one delay value: ``(1:2:3)``, ``(2)``, ``()`` (None), or a value with
    pulse limits ``((1:2:3) (...))``, of which the first one is the delay."""
    if item and isinstance(item[0], list):
        return _value(item[0], what)
    numbers = [_number(part, what) for atom in item for part in atom.split(":") if part]
    return max(numbers) if numbers else None


def _delay(values, what):
    """The largest of the delay values of an entry (rise, fall, ...), None if all are empty; a
    keyword entry among them (``RETAIN``) is skipped."""
    values = [v for v in values if isinstance(v, list)
              and not (v and isinstance(v[0], str) and v[0].upper() == "RETAIN")]
    numbers = [n for n in (_value(v, what) for v in values) if n is not None]
    return max(numbers) if numbers else None


def _port_spec(item):
    """``PORT``, ``(posedge PORT)`` or ``(COND expr PORT)`` as ``(PORT raw, edge or None)``."""
    if isinstance(item, str):
        return item, None
    if not item:
        raise SdfError("an empty port specification")
    head = item[0].lower() if isinstance(item[0], str) else ""
    if head in ("posedge", "negedge", "01", "10"):
        return item[1], "posedge" if head in ("posedge", "01") else "negedge"
    if head == "cond":
        return _port_spec(item[-1])
    raise SdfError(f"cannot read the port specification {item!r}")


def _timescale(entry):
    text = "".join(atom for atom in entry if isinstance(atom, str)).strip().lower()
    match = re.fullmatch(r"([0-9.]+)\s*(s|ms|us|ns|ps|fs)", text)
    if not match:
        raise SdfError(f"cannot read the TIMESCALE {text!r}")
    return float(match.group(1)) * _TIME_UNITS[match.group(2)] / 1e-9


class _Reader:
    """Reads the entries of an SDF text one at a time into an :class:`Sdf`."""

    def __init__(self, text):
        self.tokens = _Tokens(text)
        self.sdf = Sdf()
        self.divider = "."
        self._per_ns = 1

    def _ns(self, value):
        return value / self._per_ns if self._per_ns else value * self.sdf.timescale_ns

    def read(self):
        tokens = self.tokens
        if tokens.peek() != "(":
            raise SdfError("not an SDF file: it does not start with (DELAYFILE")
        tokens.next()
        if tokens.peek() == "(" or tokens.keyword() != "DELAYFILE":
            raise SdfError("not an SDF file: it does not start with (DELAYFILE")
        while True:
            token = tokens.next()
            if token == ")":
                break
            if token != "(":
                raise SdfError(f"unexpected {token!r} in DELAYFILE")
            keyword = tokens.keyword()
            if keyword == "CELL":
                self._cell()
                continue
            entry = tokens.rest()
            if keyword == "DESIGN":
                self.sdf.design = _unquote(entry)
            elif keyword == "DIVIDER" and entry:
                self.divider = _unquote(entry)
            elif keyword == "TIMESCALE":
                self.sdf.timescale_ns = _timescale(entry)
                per_ns = 1 / self.sdf.timescale_ns
                # Divide by a whole number of units per ns (1000 for ps): 236 ps is then 0.236
                # exactly as Python writes it, not 236 * 0.001.
                self._per_ns = round(per_ns) if per_ns >= 1 and abs(per_ns - round(per_ns)) < 1e-6 else None
        if tokens.peek() is not None:
            raise SdfError("text after the end of the DELAYFILE")
        return self.sdf

    def _cell(self):
        tokens, celltype, instance = self.tokens, None, None
        while True:
            token = tokens.next()
            if token == ")":
                return
            if token != "(":
                raise SdfError(f"unexpected {token!r} in a CELL")
            keyword = tokens.keyword()
            if keyword == "CELLTYPE":
                celltype = _unquote(tokens.rest())
            elif keyword == "INSTANCE":
                raw = _unquote(tokens.rest())
                instance = None if raw == "*" else _unescape(raw)
                if instance is None:
                    self.sdf.ignored["INSTANCE *"] += 1
                elif celltype is not None:
                    self.sdf.celltypes[instance] = celltype
            elif keyword in ("DELAY", "TIMINGCHECK") and instance is not None:
                self._section(keyword, celltype, instance)
            else:
                tokens.rest()
                if instance is not None or keyword not in ("DELAY", "TIMINGCHECK"):
                    self.sdf.ignored[keyword] += 1

    def _section(self, keyword, celltype, instance):
        """A DELAY (its ABSOLUTE and INCREMENT blocks) or TIMINGCHECK of a cell, entry by entry."""
        tokens = self.tokens
        while True:
            token = tokens.next()
            if token == ")":
                return
            if token != "(":
                raise SdfError(f"unexpected {token!r} in {keyword} of {instance!r}")
            inner = tokens.keyword()
            if keyword == "TIMINGCHECK":
                self._check(inner, tokens.rest(), celltype, instance)
            elif inner == "ABSOLUTE":
                while True:
                    token = tokens.next()
                    if token == ")":
                        break
                    if token != "(":
                        raise SdfError(f"unexpected {token!r} in ABSOLUTE of {instance!r}")
                    self._delay_entry(tokens.keyword(), tokens.rest(), instance)
            else:
                tokens.rest()
                self.sdf.ignored[inner] += 1

    def _delay_entry(self, keyword, entry, instance):
        if keyword == "COND":
            inner = next((e for e in reversed(entry) if isinstance(e, list) and e
                          and isinstance(e[0], str) and e[0].upper() == "IOPATH"), None)
            if inner is None:
                self.sdf.ignored["COND"] += 1
                return
            keyword, entry = "IOPATH", inner[1:]
        what = f"{keyword} in {instance or 'the top cell'}"
        if keyword in ("IOPATH", "INTERCONNECT") and len(entry) < 3:
            raise SdfError(f"{what} needs two ports and a delay, not {entry!r}")
        if keyword == "IOPATH":
            (source, edge), (sink, _) = _port_spec(entry[0]), _port_spec(entry[1])
            delay = _delay(entry[2:], what)
            if delay is not None:
                self.sdf.iopaths.append((instance, _unescape(source), _unescape(sink),
                                         self._ns(delay), edge))
        elif keyword == "INTERCONNECT":
            driver, sink = (_split_path(_port_spec(e)[0], self.divider) for e in entry[:2])
            if instance:
                driver, sink = ((instance + self.divider + cell if cell else instance, port)
                                for cell, port in (driver, sink))
            delay = _delay(entry[2:], what)
            if delay is not None:
                self.sdf.interconnects.append((Pin(*driver), Pin(*sink), self._ns(delay)))
        else:
            self.sdf.ignored[keyword] += 1

    def _check(self, keyword, entry, celltype, instance):
        if keyword in _CLOCKED_CHECKS and len(entry) >= 2:
            self.sdf.clock_ports[celltype].add(_unescape(_port_spec(entry[1])[0]))
        if keyword not in _SETUP_CHECKS:
            self.sdf.ignored[keyword] += 1
            return
        if len(entry) < 3:
            raise SdfError(f"{keyword} in {instance!r} needs a data port, a clock port and a value")
        (data, _), (clock, _) = _port_spec(entry[0]), _port_spec(entry[1])
        clock = _unescape(clock)
        setup = _value(entry[2], f"{keyword} in {instance}") if isinstance(entry[2], list) else None
        if setup is not None:
            self.sdf.setups.append((instance, _unescape(data), clock, self._ns(setup)))


def parse_sdf(text):
    """The delays of an SDF text (as nextpnr writes it) as an :class:`Sdf`. Raises
    :class:`SdfError` when the text is not SDF or an entry cannot be read."""
    if not isinstance(text, str):
        raise TypeError(f"text must be a string, not {type(text).__name__}")
    return _Reader(text).read()


# --- names ----------------------------------------------------------------------------------------

#: The first suffix a tool appended to a register's name: ``_TRELLIS_FF_Q_12``, ``_LUT4_Z``,
#: ``_SB_DFFESR_Q_D_SB_LUT4_O_LC``, ``_DIAN_CCU2C_S0`` (Yosys names a mapped cell after its net,
#: the cell type and the port in capitals; Amaranth's names are lower case).
_TOOL_SUFFIX = re.compile(r"_[A-Z][A-Z0-9]+(?=_|\$|$)")


def register_group(cell):
    """The register a cell was made from: the cell name without the suffixes Yosys and nextpnr
    appended (``_TRELLIS_FF_Q_12``, ``_LUT4_Z``, ``$RAMW_SLICE``), bit indices (``[3]``) and
    memory block indices (``.0.1``); a generated name keeps its first part (``$signature__data``).
    ``top.core_1.pv.acc_TRELLIS_FF_Q_12`` -> ``top.core_1.pv.acc``."""
    name = _TOOL_SUFFIX.split(cell, 1)[0]
    dollar = name.find("$")
    if dollar >= 0:
        if dollar == 0 or name[dollar - 1] == ".":
            end = name.find("$", dollar + 1)
            name = name if end < 0 else name[:end]
        else:
            name = name[:dollar]
    name = re.sub(r"\[[^\]]*\]", "", name)
    name = re.sub(r"(\.\d+)+$", "", name).rstrip("._")
    return name or cell


def unit_of(name, depth, instances=None):
    """The unit of a register group: its hierarchical prefix, at most ``depth`` levels
    (:data:`TOP_UNIT` for a register of the top level). ``instances``, the set of instance paths
    of the design (dotted), says which prefixes are instances; without it every dotted segment but
    the last is one, up to the first that holds ``__`` (a flattened port, ``i_q__payload.tag``)
    or starts with ``$``."""
    segments = name.split(".")
    levels = 0
    if instances is not None:
        for i in range(1, len(segments)):
            if ".".join(segments[:i]) in instances:
                levels = i
    else:
        for segment in segments[:-1]:
            if "__" in segment or segment.startswith("$"):
                break
            levels += 1
    return ".".join(segments[:min(levels, depth)]) or TOP_UNIT


def _netlist_instances(netlist, design):
    """The instance paths (dotted) of a Yosys JSON netlist, from the ``hdlname`` attributes
    flattening leaves on wires and cells."""
    data = netlist
    if not isinstance(netlist, dict):
        try:
            data = json.loads(Path(netlist).read_text())
        except (OSError, ValueError) as error:
            raise _NetlistError(f"cannot read the netlist {netlist}: {error}") from None
    modules = data.get("modules") if isinstance(data, dict) else None
    if not isinstance(modules, dict) or not modules:
        name = "the netlist" if isinstance(netlist, dict) else netlist
        raise _NetlistError(f"{name} is not a Yosys JSON netlist (no modules)")
    module = modules.get(design) or next(
        (m for m in modules.values() if str(m.get("attributes", {}).get("top", "0")).strip("0")), None)
    if module is None:
        raise _NetlistError(f"the netlist has no module {design!r} nor a top module")
    instances = set()
    for kind in ("netnames", "cells"):
        for item in module.get(kind, {}).values():
            parts = item.get("attributes", {}).get("hdlname", "").split()
            for i in range(1, len(parts)):
                instances.add(".".join(parts[:i]))
    return frozenset(instances)


# --- the timing graph ------------------------------------------------------------------------------

def _read(sdf):
    """An :class:`Sdf` from an :class:`Sdf`, an SDF text or the path of an SDF file."""
    if isinstance(sdf, Sdf):
        return sdf, None
    if isinstance(sdf, str) and ("\n" in sdf or sdf.lstrip().startswith("(")):
        return parse_sdf(sdf), None
    if not isinstance(sdf, (str, Path)):
        raise TypeError(f"sdf must be an SDF text or the path of an SDF file, not {type(sdf).__name__}")
    path = Path(sdf)
    if not path.is_file():
        raise FileNotFoundError(f"no SDF file at {path}")
    try:
        text = path.read_text(errors="replace")
    except OSError as error:
        raise SdfError(f"cannot read {path}: {error}") from None
    try:
        return parse_sdf(text), path
    except SdfError as error:
        raise SdfError(f"{path}: {error}") from None


def _sccs(nodes, succ):
    """The strongly connected components of the subgraph on ``nodes`` with more than one node or
    a self loop (iterative Tarjan)."""
    inside = set(nodes)
    index, low, on_stack, stack, found, counter = {}, {}, set(), [], [], 0
    for root in nodes:
        if root in index:
            continue
        work = [(root, 0)]
        while work:
            node, i = work.pop()
            if i == 0:
                index[node] = low[node] = counter
                counter += 1
                stack.append(node)
                on_stack.add(node)
            edges = succ[node]
            while i < len(edges):
                nxt = edges[i][0]
                i += 1
                if nxt not in inside:
                    continue
                if nxt not in index:
                    work.append((node, i))
                    work.append((nxt, 0))
                    break
                if nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
            else:
                if low[node] == index[node]:
                    component = []
                    while True:
                        top = stack.pop()
                        on_stack.discard(top)
                        component.append(top)
                        if top == node:
                            break
                    if len(component) > 1 or any(e[0] == node for e in succ[node]):
                        found.append(component)
                if work:
                    parent = work[-1][0]
                    low[parent] = min(low[parent], low[node])
    return found


def _topological(count, succ):
    """Kahn's order of the nodes; the nodes left out are on or behind a cycle."""
    indegree = [0] * count
    for edges in succ:
        for v, _, _ in edges:
            indegree[v] += 1
    order = [n for n in range(count) if indegree[n] == 0]
    for u in order:                         # (order grows while it is walked)
        for v, _, _ in succ[u]:
            indegree[v] -= 1
            if indegree[v] == 0:
                order.append(v)
    return order


def _check_number(name, value, *, integer=False, minimum=None, above=None):
    kinds = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds):
        raise TypeError(f"{name} must be {'an integer' if integer else 'a number'}, not {value!r}")
    if above is not None and not value > above:
        raise ValueError(f"{name} must be above {above:g}, not {value:g}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be at least {minimum}, not {value}")
    if not integer and not math.isfinite(value):
        raise ValueError(f"{name} must be finite, not {value}")


class Analysis:
    """The timing graph of one SDF file with, for every endpoint, the worst arrival from each
    source unit (and clock). Built by :func:`analyze`; :meth:`paths`, :meth:`unit_pairs`,
    :meth:`summary` and :meth:`endpoint_arrivals` read it.

    Members
    -------
    design : str
        The SDF's ``DESIGN``.
    depth : int
        Levels of hierarchy in a unit name.
    pins, edges : int
        Size of the timing graph (clock networks left out).
    starts : int
        Pins that launch paths (clocked outputs).
    endpoints : int
        Pins with a setup check that a path from the same clock reaches.
    cross_clock : int
        Endpoints reached from another clock only (not timed: see the module's limits).
    hierarchy : str
        Where the units come from: ``"from dotted names"`` or the netlist.
    loops : list
        Combinational loops, each a sorted list of :class:`Pin`; their edges are not timed.
    ignored : dict
        ``{SDF construct: count}`` of the entries read and not used.
    """

    def __init__(self, sdf, *, depth=2, netlist=None):
        _check_number("depth", depth, integer=True, minimum=1)
        sdf, self.source = _read(sdf)
        self.design, self.depth = sdf.design, depth
        self.ignored = dict(sdf.ignored)
        self._instances = None if netlist is None else _netlist_instances(netlist, sdf.design)
        self.hierarchy = "from dotted names" if netlist is None else (
            f"from {netlist}" if not isinstance(netlist, dict) else "from the netlist")
        self._group, self._unit = {}, {}
        self._build(sdf)
        self._propagate()

    # graph
    def _node(self, pin):
        node = self._ids.get(pin)
        if node is None:
            node = self._ids[pin] = len(self._pins)
            self._pins.append(pin)
        return node

    def _build(self, sdf):
        self._ids, self._pins = {}, []
        clocks = defaultdict(set)                                # instance -> its clock ports
        for instance, _, clock, _ in sdf.setups:
            clocks[instance].add(clock)
        for instance, celltype in sdf.celltypes.items():
            clocks[instance] |= sdf.clock_ports.get(celltype, set())
        arcs = {}                                                # (u, v) -> (delay, kind)
        launches = {}                                            # node -> (clock-to-output, clock Pin)

        def arc(u, v, delay, kind):
            if u != v and (arcs.get((u, v)) is None or delay > arcs[(u, v)][0]):
                arcs[(u, v)] = (delay, kind)

        for instance, source, sink, delay, edge in sdf.iopaths:
            out = self._node(Pin(instance, sink))
            if edge is not None or source in clocks.get(instance, ()):
                if out not in launches or delay > launches[out][0]:
                    launches[out] = (delay, Pin(instance, source))
            else:
                arc(self._node(Pin(instance, source)), out, delay, "logic")
        # The clock network ends in the clock pins: its last net says which clock a cell is on and
        # how late the edge reaches it (nextpnr's clock skew), and is no data path.
        self._clock_net = {}                                     # clock Pin -> (driver, delay)
        for driver, sink, delay in sdf.interconnects:
            if sink.port in clocks.get(sink.cell, ()):
                old = self._clock_net.get(sink)
                if old is None or delay > old[1]:
                    self._clock_net[sink] = (str(driver), delay)
                continue
            arc(self._node(driver), self._node(sink), delay, "routing")
        self._setup = {}                                         # node -> (setup, clock Pin)
        for instance, port, clock, setup in sdf.setups:
            node = self._node(Pin(instance, port))
            if node not in self._setup or setup > self._setup[node][0]:
                self._setup[node] = (setup, Pin(instance, clock))
        self._launches = launches
        self._succ = [[] for _ in self._pins]
        for (u, v), (delay, kind) in arcs.items():
            self._succ[u].append((v, delay, kind))
        self.pins, self.edges, self.starts = len(self._pins), len(arcs), len(launches)

    def _clock(self, pin):
        """``(driver of the clock net or None, delay of its last net)`` at a clock pin."""
        return self._clock_net.get(pin, (None, 0.0))

    def _propagate(self):
        succ, count = self._succ, len(self._pins)
        order = _topological(count, succ)
        self.loops = []
        if len(order) < count:
            placed = set(order)
            loops = _sccs([n for n in range(count) if n not in placed], succ)
            member = {node: i for i, loop in enumerate(loops) for node in loop}
            for u in member:
                succ[u] = [e for e in succ[u] if member.get(e[0]) != member[u]]
            self.loops = [sorted(self._pins[n] for n in loop) for loop in loops]
            order = _topological(count, succ)
        # Arrival per node and source: {(unit, clock): (ns, previous node or -1, kind of hop)},
        # counted from the clock edge at the clock's last net, so that skew is in.
        arrival = [None] * count
        for node, (delay, clock_pin) in self._launches.items():
            clock, late = self._clock(clock_pin)
            unit = self._unit_of_cell(self._pins[node].cell)
            arrival[node] = {(unit, clock): (late + delay, -1, "clk-to-q")}
        for u in order:
            here = arrival[u]
            if not here:
                continue
            for v, delay, kind in succ[u]:
                there = arrival[v]
                if there is None:
                    there = arrival[v] = {}
                for key, (ns, _, _) in here.items():
                    ns += delay
                    old = there.get(key)
                    if old is None or ns > old[0]:
                        there[key] = (ns, u, kind)
        self._arrival = arrival
        # (delay with setup and skew, endpoint node, source key), worst first; paths between two
        # different clocks are left out, as nextpnr leaves them out of a clock's Fmax.
        ends, cross = [], set()
        for node, (setup, clock_pin) in self._setup.items():
            capture, late = self._clock(clock_pin)
            for key, (ns, _, _) in (arrival[node] or {}).items():
                if key[1] is not None and capture is not None and key[1] != capture:
                    cross.add(node)
                    continue
                ends.append((ns + setup - late, node, key))
        ends.sort(key=lambda e: (-e[0], str(self._pins[e[1]]), e[2][0]))
        self._ends = ends
        self.endpoints = len({node for _, node, _ in ends})
        self.cross_clock = len(cross - {node for _, node, _ in ends})

    # names
    def _group_of_cell(self, cell):
        group = self._group.get(cell)
        if group is None:
            group = self._group[cell] = register_group(cell)
        return group

    def _unit_of_cell(self, cell):
        unit = self._unit.get(cell)
        if unit is None:
            unit = self._unit[cell] = unit_of(self._group_of_cell(cell), self.depth, self._instances)
        return unit

    # results
    def _chain(self, node, key):
        """The nodes of the worst path from ``key`` into ``node``, start first, with the arrival
        and the kind of hop at each."""
        chain = []
        while node >= 0:
            ns, before, kind = self._arrival[node][key]
            chain.append((node, ns, kind))
            node = before
        chain.reverse()
        return chain

    def _path(self, delay, node, key, period_ns, endpoints, failing):
        chain = self._chain(node, key)
        start = self._pins[chain[0][0]]
        launch_pin, capture_pin = self._launches[chain[0][0]][1], self._setup[node][1]
        (launch, early), (capture, late) = self._clock(launch_pin), self._clock(capture_pin)
        hops = []
        if abs(early - late) > 1e-9:
            hops.append(Hop(launch_pin, round(early - late, 6), "clk-skew"))
        hops += [Hop(self._pins[n], round(ns - late, 6), kind) for n, ns, kind in chain]
        hops.append(Hop(self._pins[node], round(delay, 6), "setup"))
        end = self._pins[node]
        return TimingPath(
            start=start, end=end, delay_ns=round(delay, 6), slack_ns=round(period_ns - delay, 6),
            hops=tuple(hops), logic_levels=sum(1 for hop in hops if hop.kind == "logic"),
            start_group=self._group_of_cell(start.cell), end_group=self._group_of_cell(end.cell),
            start_unit=key[0], end_unit=self._unit_of_cell(end.cell), endpoints=endpoints,
            failing=failing, launch_clock=launch, capture_clock=capture)

    def _key(self, group, node, key):
        pin = self._pins[node]
        if group == "endpoint":
            return pin
        if group == "register":
            return self._group_of_cell(pin.cell)
        return (key[0], self._unit_of_cell(pin.cell))

    def paths(self, *, period_ns, count=20, group="register"):
        """The ``count`` worst paths against a clock of ``period_ns``, worst first, one per
        ``group`` (see :data:`GROUPS`): a list of :class:`TimingPath`."""
        _check_number("period_ns", period_ns, above=0)
        _check_number("count", count, integer=True, minimum=1)
        if group not in GROUPS:
            raise ValueError(f"group must be one of {', '.join(GROUPS)}, not {group!r}")
        # Endpoints per group, and those that fail (an endpoint fails if its worst path does).
        members, failing, chosen = defaultdict(set), defaultdict(set), {}
        for delay, node, key in self._ends:
            kept = self._key(group, node, key)
            members[kept].add(node)
            if delay > period_ns:
                failing[kept].add(node)
            chosen.setdefault(kept, (delay, node, key))
        picked = sorted(chosen.items(), key=lambda kv: (-kv[1][0], str(self._pins[kv[1][1]])))[:count]
        return [self._path(delay, node, key, period_ns, len(members[kept]), len(failing[kept]))
                for kept, (delay, node, key) in picked]

    def unit_pairs(self, *, period_ns):
        """Per (source unit, sink unit) pair with a path: endpoints reached, endpoints that fail
        against ``period_ns``, worst slack; a list of :class:`UnitPair`, worst slack first."""
        _check_number("period_ns", period_ns, above=0)
        pairs = {}
        for delay, node, key in self._ends:
            pair = (key[0], self._unit_of_cell(self._pins[node].cell))
            entry = pairs.get(pair)
            if entry is None:
                start = self._pins[self._chain(node, key)[0][0]]
                entry = pairs[pair] = [set(), set(), delay, start, self._pins[node]]
            entry[0].add(node)
            if delay > period_ns:
                entry[1].add(node)
        result = [UnitPair(source, sink, len(nodes), len(fail), round(period_ns - delay, 6), start, end)
                  for (source, sink), (nodes, fail, delay, start, end) in pairs.items()]
        return sorted(result, key=lambda p: (p.worst_slack_ns, p.source, p.sink))

    def endpoint_arrivals(self):
        """``{endpoint Pin: ns}``: the latest arrival at each endpoint from its own clock, setup not
        added, counted from the clock edge where the clock's last net starts (as nextpnr's
        ``--detailed-timing-report`` gives it)."""
        arrivals = {}
        for node in self._setup:
            for key, (ns, _, _) in (self._arrival[node] or {}).items():
                capture = self._clock(self._setup[node][1])[0]
                if key[1] is None or capture is None or key[1] == capture:
                    pin = self._pins[node]
                    arrivals[pin] = max(arrivals.get(pin, ns), ns)
        return arrivals

    def summary(self, *, period_ns):
        """``{"endpoints", "failing", "worst_delay_ns", "worst_slack_ns", "fmax_mhz"}`` for a clock
        of ``period_ns`` (None for the last three without a path)."""
        _check_number("period_ns", period_ns, above=0)
        worst = {}
        for delay, node, _ in self._ends:
            worst.setdefault(node, delay)
        top = self._ends[0][0] if self._ends else None
        return {"endpoints": len(worst), "failing": sum(1 for d in worst.values() if d > period_ns),
                "worst_delay_ns": None if top is None else round(top, 6),
                "worst_slack_ns": None if top is None else round(period_ns - top, 6),
                "fmax_mhz": None if not top or top <= 0 else round(1000.0 / top, 3)}


def analyze(sdf, *, depth=2, netlist=None):
    """The :class:`Analysis` of ``sdf`` (an SDF text, the path of an SDF file, or an :class:`Sdf`)
    with units of ``depth`` levels; ``netlist`` (the path of the Yosys JSON netlist nextpnr read,
    or its data) names the instances. Raises :class:`SdfError` for a text that is not SDF and
    ``FileNotFoundError`` for a missing file."""
    return Analysis(sdf, depth=depth, netlist=netlist)


def worst_paths(sdf, *, period_ns, count=20, group="register", depth=2, netlist=None):
    """The ``count`` worst register-to-register paths of ``sdf`` against a clock of ``period_ns``,
    worst first, one per ``group``: ``"register"`` (endpoint register group, the default),
    ``"endpoint"`` (endpoint pin) or ``"unit"`` (source and sink unit of ``depth`` levels).
    A list of :class:`TimingPath`; see :func:`analyze` for the arguments."""
    return analyze(sdf, depth=depth, netlist=netlist).paths(period_ns=period_ns, count=count, group=group)


def unit_pairs(sdf, *, period_ns, depth=2, netlist=None):
    """Per (source unit, sink unit) pair of ``sdf``: endpoints, failing endpoints and worst slack
    against ``period_ns`` (:meth:`Analysis.unit_pairs`)."""
    return analyze(sdf, depth=depth, netlist=netlist).unit_pairs(period_ns=period_ns)


# --- command line --------------------------------------------------------------------------------

def _table(rows, header, right):
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]

    def line(row):
        return "  ".join(str(cell).rjust(w) if i in right else str(cell).ljust(w)
                         for i, (cell, w) in enumerate(zip(row, widths))).rstrip()

    return [line(header), line(["-" * w for w in widths]), *(line(row) for row in rows)]


def report(analysis, *, period_ns, count=20, group="register", hops=False):
    """The text the command line prints, and its JSON data: ``(text, data)``."""
    paths = analysis.paths(period_ns=period_ns, count=count, group=group)
    pairs = analysis.unit_pairs(period_ns=period_ns)
    summary = analysis.summary(period_ns=period_ns)
    lines = [f"{analysis.design or 'design'}: {analysis.endpoints} endpoints, {analysis.starts} "
             f"path starts, {analysis.pins} pins; clock period {period_ns:g} ns "
             f"({1000 / period_ns:.2f} MHz)"]
    if not paths:
        lines.append("no register-to-register path")
    else:
        lines.append(f"worst path {summary['worst_delay_ns']:.3f} ns (Fmax {summary['fmax_mhz']:.2f} MHz), "
                     f"slack {summary['worst_slack_ns']:.3f} ns; {summary['failing']} of "
                     f"{summary['endpoints']} endpoints fail")
        title = {"register": "endpoint register group", "endpoint": "endpoint",
                 "unit": "source and sink unit"}[group]
        lines += ["", f"Worst paths, one per {title} ({len(paths)}):"]
        rows = [[i, f"{p.slack_ns:.3f}", f"{p.delay_ns:.3f}", p.logic_levels,
                 f"{p.failing}/{p.endpoints}", str(p.start), str(p.end)]
                for i, p in enumerate(paths, 1)]
        lines += _table(rows, ["#", "slack ns", "delay ns", "levels", "fail/ends", "from", "to"],
                        right={0, 1, 2, 3, 4})
        if hops:
            for i, p in enumerate(paths, 1):
                lines += ["", f"Path {i}: {p.start} -> {p.end}"]
                before = 0.0
                rows = []
                for hop in p.hops:
                    rows.append([hop.kind, f"{hop.at_ns - before:.3f}", f"{hop.at_ns:.3f}", str(hop.pin)])
                    before = hop.at_ns
                lines += ["  " + row for row in _table(rows, ["type", "ns", "total", "pin"], right={1, 2})]
        shown = [p for i, p in enumerate(pairs) if p.failing or i < count]
        lines += ["", f"Per unit pair (depth {analysis.depth}, units {analysis.hierarchy}): "
                  f"{len(shown)} of {len(pairs)} pairs, the failing ones and the {count} worst"]
        rows = [[p.source, p.sink, p.failing, p.endpoints, f"{p.worst_slack_ns:.3f}"] for p in shown]
        lines += _table(rows, ["source unit", "sink unit", "failing", "endpoints", "worst slack ns"],
                        right={2, 3, 4})
    if analysis.cross_clock:
        lines.append(f"note: {analysis.cross_clock} endpoints reached from another clock only are not timed")
    for loop in analysis.loops:
        names = ", ".join(str(pin) for pin in loop[:4]) + (", ..." if len(loop) > 4 else "")
        lines.append(f"warning: combinational loop of {len(loop)} pins not timed: {names}")
    data = {"sdf": None if analysis.source is None else str(analysis.source), "design": analysis.design,
            "period_ns": period_ns, "group": group, "depth": analysis.depth,
            "hierarchy": analysis.hierarchy, **summary, "cross_clock": analysis.cross_clock,
            "paths": [p.to_dict() for p in paths], "unit_pairs": [p.to_dict() for p in pairs],
            "loops": [[str(pin) for pin in loop] for loop in analysis.loops],
            "ignored": dict(sorted(analysis.ignored.items()))}
    return "\n".join(lines) + "\n", data


def _parser():
    parser = argparse.ArgumentParser(
        prog="python -m leanattn.fpga.paths",
        description="The worst register-to-register paths of a design routed by nextpnr, from its "
        "SDF file (nextpnr-ecp5/nextpnr-ice40 --sdf), one per distinct problem, and a summary per "
        "pair of units. Exit status 1 when an endpoint misses the period.")
    parser.add_argument("sdf", help="the SDF file nextpnr wrote")
    parser.add_argument("--period", type=float, required=True, metavar="NS", help="clock period in ns")
    parser.add_argument("--count", type=int, default=20, help="paths to list (default 20)")
    parser.add_argument("--group", choices=GROUPS, default="register",
                        help="one path per endpoint register group (default), endpoint, or unit pair")
    parser.add_argument("--depth", type=int, default=2,
                        help="levels of hierarchy in a unit name (default 2, e.g. top.core_1)")
    parser.add_argument("--netlist", metavar="JSON",
                        help="the Yosys JSON netlist nextpnr read, which names the instances exactly "
                        "(default: the .json file beside the SDF file with its name, if there is one)")
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON to FILE")
    parser.add_argument("--hops", action="store_true", help="print every hop of each path")
    return parser


def main(argv=None):
    """The command line: 0 when every endpoint meets the period, 1 when one does not, 2 for a bad
    argument or a file that cannot be read."""
    parser = _parser()
    args = parser.parse_args(argv)
    if not (math.isfinite(args.period) and args.period > 0):
        parser.error(f"--period must be a clock period above 0 ns, not {args.period:g}")
    if args.count < 1:
        parser.error(f"--count must be at least 1, not {args.count}")
    if args.depth < 1:
        parser.error(f"--depth must be at least 1, not {args.depth}")
    netlist, beside = args.netlist, Path(args.sdf).with_suffix(".json")
    if netlist is None and beside.is_file():
        netlist = beside
    try:
        try:
            analysis = analyze(args.sdf, depth=args.depth, netlist=netlist)
        except _NetlistError as error:
            if args.netlist is not None:
                raise
            print(f"paths: note: units from dotted names: {error}", file=sys.stderr)
            analysis = analyze(args.sdf, depth=args.depth)
    except (SdfError, FileNotFoundError) as error:
        print(f"paths: error: {error}", file=sys.stderr)
        return 2
    text, data = report(analysis, period_ns=args.period, count=args.count, group=args.group,
                        hops=args.hops)
    print(text, end="")
    if args.json:
        Path(args.json).write_text(json.dumps(data, indent=2) + "\n")
    return 1 if data["failing"] else 0


if __name__ == "__main__":
    sys.exit(main())
