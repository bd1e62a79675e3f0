"""cocotb 2 helpers for ``amaranth.lib.stream`` ports of generated Verilog.

An Amaranth stream port ``i_x`` appears in Verilog as ``i_x__valid``, ``i_x__ready`` and
``i_x__payload`` (double underscores); a struct or array payload is one flat vector, packed and
unpacked here with the same Amaranth layout the hardware uses (:func:`pack`, :func:`unpack`), so the
bench and the RTL cannot disagree about bit positions. A stream made with ``always_valid`` or
``always_ready`` has no such port, and the helpers treat it as constantly 1.

Timing discipline, the same for every helper: signals are written just after the falling clock
edge and sampled in the ``ReadOnly`` phase that follows, half a cycle before the rising edge that
acts on them. A transfer therefore happens at the next rising edge exactly when both ``valid`` and
``ready`` read 1 there, whatever the simulator's scheduling order at the rising edge itself.

* :class:`StreamDriver` drives a stream into the design, with optional idle cycles.
* :class:`StreamMonitor` watches a stream, checks the stream rules and records every transfer;
  :class:`StreamSink` is a monitor that also drives ``ready`` (with optional backpressure).
* :func:`stall_pattern` makes the idle/backpressure patterns: none, fixed or seeded random.
* :func:`check_in_order` is the scoreboard: it compares what came out with what was expected and
  names every dropped, duplicated, extra or corrupted item.
"""

import difflib
import itertools
import random
from collections import Counter, deque
from dataclasses import dataclass

import cocotb
from cocotb.simtime import get_sim_time
from cocotb.triggers import FallingEdge, ReadOnly, RisingEdge

__all__ = [
    "Transfer", "StreamDriver", "StreamMonitor", "StreamSink", "StreamProtocolError",
    "stall_pattern", "STALL_KINDS", "check_in_order", "pack", "unpack",
]


#: Kinds of pattern :func:`stall_pattern` makes.
STALL_KINDS = ("none", "fixed", "random")


@dataclass(frozen=True)
class Transfer:
    """One stream transfer: the payload (raw bits, an int) and when it happened.

    ``time`` is the simulation time in steps of the ``ReadOnly`` phase half a cycle before the
    transferring clock edge; two transfers are ``(b.time - a.time) / period`` cycles apart.
    """
    value: int
    time:  int


class StreamProtocolError(AssertionError):
    """A stream broke a transfer rule (valid dropped or payload changed before the transfer)."""


def stall_pattern(kind, *, seed=None, rate=0.3, period=4):
    """An endless iterator of bools, one per cycle; True means stall (idle, or not ready) that cycle.

    ``"none"``: never. ``"fixed"``: one stall cycle in every ``period``. ``"random"``: each cycle
    independently with probability ``rate``, from ``random.Random(seed)`` (so seed it).
    """
    if kind == "none":
        return itertools.repeat(False)
    if kind == "fixed":
        if not (isinstance(period, int) and period >= 2):
            raise ValueError(f"period must be an integer >= 2, not {period!r}")
        return itertools.cycle([True] + [False] * (period - 1))
    if kind == "random":
        if not 0 <= rate < 1:
            raise ValueError(f"rate must be in [0, 1), not {rate!r}")
        rng = random.Random(seed)
        return iter(lambda: rng.random() < rate, None)
    raise ValueError(f"stall pattern kind must be one of {', '.join(STALL_KINDS)}, not {kind!r}")


def _port(dut, prefix, role, required=True):
    name = f"{prefix}__{role}"
    try:
        return getattr(dut, name)
    except AttributeError:
        if required:
            raise AttributeError(f"{dut._name} has no port {name}") from None
        return None


def _read_bit(handle):
    return True if handle is None else bool(handle.value)


def _read_bits(handle):
    return 0 if handle is None else int(handle.value)   # raises ValueError on X/Z bits


class StreamDriver:
    """Drives ``<prefix>__valid`` and ``__payload`` of ``dut``, honouring ``__ready``.

    Queue items with :meth:`send` (raw ints; use :func:`pack` for layouts). Each item is presented
    with ``valid`` high until a transfer, never withdrawn. ``idle`` (from :func:`stall_pattern`)
    inserts idle cycles before new items: each cycle the driver could start one, it first asks the
    pattern. Every transfer is appended to :attr:`sent`.
    """

    def __init__(self, dut, prefix, clk, *, idle=None):
        self.name     = prefix
        self.clk      = clk
        self.valid    = _port(dut, prefix, "valid", required=False)
        self.ready    = _port(dut, prefix, "ready", required=False)
        self.payload  = _port(dut, prefix, "payload", required=False)
        self._idle    = idle if idle is not None else stall_pattern("none")
        self._queue   = deque()
        self._current = None     # item on the bus, not yet transferred
        self.sent     = []
        if self.valid is not None:
            self.valid.value = 0
        self._task    = cocotb.start_soon(self._run())

    def send(self, value):
        """Queue one item (an int of the payload's width)."""
        self._queue.append(int(value))

    def send_all(self, values):
        for value in values:
            self.send(value)

    @property
    def pending(self):
        """Items queued or on the bus, not yet transferred."""
        return len(self._queue) + (self._current is not None)

    async def wait_idle(self, *, timeout_cycles=100_000):
        """Wait until every queued item has been transferred."""
        for _ in range(timeout_cycles):
            if not self.pending:
                return
            await RisingEdge(self.clk)
        raise AssertionError(f"{self.name}: {self.pending} items still unsent after {timeout_cycles} cycles")

    def stop(self):
        self._task.cancel()

    async def _run(self):
        while True:
            await FallingEdge(self.clk)
            if self._current is None:
                stall = next(self._idle)
                if self._queue and not stall:
                    self._current = self._queue.popleft()
                    if self.payload is not None:
                        self.payload.value = self._current
                    if self.valid is not None:
                        self.valid.value = 1
                elif self.valid is not None:
                    self.valid.value = 0
            await ReadOnly()
            if self._current is not None and _read_bit(self.ready):
                self.sent.append(Transfer(self._current, get_sim_time("step")))
                self._current = None


class StreamMonitor:
    """Watches ``<prefix>__valid/ready/payload``, records transfers in :attr:`received`.

    Raises :class:`StreamProtocolError` (failing the cocotb test) the moment the stream breaks the
    rules: ``valid`` dropped, or ``payload`` changed, while ``valid`` is high and ``ready`` low.
    """

    def __init__(self, dut, prefix, clk):
        self.name     = prefix
        self.clk      = clk
        self.valid    = _port(dut, prefix, "valid", required=False)
        self.ready    = _port(dut, prefix, "ready", required=False)
        self.payload  = _port(dut, prefix, "payload", required=False)
        self.received = []
        self._task    = cocotb.start_soon(self._run())

    @property
    def values(self):
        """Payloads received so far, in order."""
        return [transfer.value for transfer in self.received]

    async def wait_count(self, count, *, timeout_cycles=100_000):
        """Wait until ``count`` transfers have been seen in all."""
        for _ in range(timeout_cycles):
            if len(self.received) >= count:
                return
            await RisingEdge(self.clk)
        raise AssertionError(f"{self.name}: {len(self.received)} of {count} items received "
                             f"after {timeout_cycles} cycles")

    def stop(self):
        self._task.cancel()

    def _drive(self):
        """Hook run just after each falling edge, before sampling (a sink drives ready here)."""

    async def _run(self):
        waiting = None      # payload offered but not taken in the previous cycle
        while True:
            await FallingEdge(self.clk)
            self._drive()
            await ReadOnly()
            valid = _read_bit(self.valid)
            now = get_sim_time("step")
            if waiting is not None:
                if not valid:
                    raise StreamProtocolError(f"{self.name}: valid dropped at {now} before the transfer "
                                              f"of payload {waiting:#x}")
                payload = _read_bits(self.payload)
                if payload != waiting:
                    raise StreamProtocolError(f"{self.name}: payload changed from {waiting:#x} to "
                                              f"{payload:#x} at {now} while valid and not ready")
            if not valid:
                waiting = None
                continue
            payload = _read_bits(self.payload)
            if _read_bit(self.ready):
                self.received.append(Transfer(payload, now))
                waiting = None
            else:
                waiting = payload


class StreamSink(StreamMonitor):
    """A :class:`StreamMonitor` that also drives ``<prefix>__ready``.

    ``backpressure`` (from :func:`stall_pattern`) says, per cycle, when ``ready`` is low; default
    never. The times (as in :class:`Transfer`) of the cycles with ``ready`` low are kept in
    :attr:`stalls`, so a bench can prove that every other cycle carried a transfer.
    """

    def __init__(self, dut, prefix, clk, *, backpressure=None):
        self._backpressure = backpressure if backpressure is not None else stall_pattern("none")
        self.stalls = []
        super().__init__(dut, prefix, clk)
        if self.ready is None:
            raise AttributeError(f"{dut._name} has no port {prefix}__ready (always_ready stream: "
                                 f"use StreamMonitor)")
        self.ready.value = 0

    def _drive(self):
        if next(self._backpressure):
            self.ready.value = 0
            self.stalls.append(get_sim_time("step"))    # the same time step as the ReadOnly phase
        else:
            self.ready.value = 1


# --- scoreboard ----------------------------------------------------------------------------------

def _key(item):
    try:
        hash(item)
        return item
    except TypeError:
        return repr(item)


def check_in_order(expected, received, *, name="stream", fmt=None, limit=20):
    """Assert ``received == expected`` (same items, same order); otherwise say precisely how not.

    The message lists, by index, every item dropped (expected, never received), duplicated (an
    expected item received once too often), extra (received, never expected), corrupted (an extra
    item in the place of a dropped one) and out of order, at most ``limit`` lines. ``fmt`` formats
    items (default: hex for ints, repr otherwise).
    """
    expected, received = list(expected), list(received)
    if expected == received:
        return
    if fmt is None:
        def fmt(item):
            return f"{item:#x}" if isinstance(item, int) else repr(item)

    expected_keys = [_key(item) for item in expected]
    received_keys = [_key(item) for item in received]
    expected_set  = set(expected_keys)
    # How many copies of each item came out too many (duplicated, extra) or too few (dropped); an
    # unmatched item whose count is right was only moved (out of order).
    surplus = Counter(received_keys) - Counter(expected_keys)
    deficit = Counter(expected_keys) - Counter(received_keys)

    lines = []
    matcher = difflib.SequenceMatcher(None, expected_keys, received_keys, autojunk=False)
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "equal":
            continue
        for k in range(max(i2 - i1, j2 - j1)):
            i = i1 + k if i1 + k < i2 else None
            j = j1 + k if j1 + k < j2 else None
            e_key = expected_keys[i] if i is not None else None
            r_key = received_keys[j] if j is not None else None
            if i is not None and j is not None and deficit[e_key] and surplus[r_key] \
                    and r_key not in expected_set:
                deficit[e_key] -= 1
                surplus[r_key] -= 1
                lines.append(f"corrupted: expected[{i}] = {fmt(expected[i])}, "
                             f"received[{j}] = {fmt(received[j])}")
                continue
            if i is not None and deficit[e_key]:
                deficit[e_key] -= 1
                lines.append(f"dropped: expected[{i}] = {fmt(expected[i])} never received "
                             f"(missing before received[{j if j is not None else j2}])")
            if j is not None:
                item = fmt(received[j])
                if surplus[r_key] and r_key in expected_set:
                    surplus[r_key] -= 1
                    lines.append(f"duplicated: received[{j}] = {item} is a second copy of "
                                 f"expected[{expected_keys.index(r_key)}]")
                elif surplus[r_key]:
                    surplus[r_key] -= 1
                    lines.append(f"extra: received[{j}] = {item} was never expected")
                elif j >= len(expected_keys) or expected_keys[j] != r_key:   # else: right place after all
                    lines.append(f"out of order: received[{j}] = {item} is "
                                 f"expected[{expected_keys.index(r_key)}]")
    if not lines:   # cannot happen for unequal lists, but never pass silently
        lines.append("the sequences differ in order")
    shown = lines[:limit]
    if len(lines) > limit:
        shown.append(f"... and {len(lines) - limit} more")
    raise AssertionError(f"{name}: {len(expected)} items expected, {len(received)} received, "
                         f"{len(lines)} difference(s):\n  " + "\n  ".join(shown))


# --- payload packing -----------------------------------------------------------------------------

def pack(shape, value):
    """Raw bits (an int) of ``value`` in ``shape``: a dict/list for a layout, an int otherwise."""
    from amaranth.hdl import Shape
    from amaranth.lib import data

    if isinstance(shape, data.Layout):
        return shape.const(value).as_bits()
    shape = Shape.cast(shape)
    value = int(value)
    lo, hi = (-(1 << (shape.width - 1)), (1 << (shape.width - 1)) - 1) if shape.signed \
        else (0, (1 << shape.width) - 1)
    if not lo <= value <= hi:
        raise ValueError(f"value must be in the range {lo}..{hi} of {shape!r}, not {value}")
    return value & ((1 << shape.width) - 1)


def unpack(shape, bits):
    """Inverse of :func:`pack`: a dict (struct/union), list (array) or int (signed if the shape is)."""
    from amaranth.hdl import Shape
    from amaranth.lib import data

    def python(item):
        if not isinstance(item, data.Const):
            return item
        layout = item.shape()
        if isinstance(layout, data.ArrayLayout):
            return [python(item[index]) for index in range(layout.length)]
        return {field: python(item[field]) for field, _ in layout}

    if isinstance(shape, data.Layout):
        return python(shape.from_bits(bits))
    shape = Shape.cast(shape)
    bits &= (1 << shape.width) - 1
    if shape.signed and bits >> (shape.width - 1):
        bits -= 1 << shape.width
    return bits
