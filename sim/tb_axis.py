"""cocotb bench of the AXI4-Stream wrapper, with its own AXI-Stream source and sink.

The jobs (TDATA words of the descriptors and query beats, and the flat K and V element memories)
come in a JSON file named by :func:`~leanattn.sim.cocotb_util.tb_args` (``{"file": path}``).
:class:`AxisSource` plays the descriptors and queries (one frame per job: TLAST on its last head
and beat), a memory model answers every core's K and V requests through an :class:`AxisSink` and
an :class:`AxisSource` per port, and an :class:`AxisSink` collects the output frames (one per
head: TLAST on its last beat, the head in TUSER). Every interface pauses at random (seeded):
sources hold TVALID low, sinks hold TREADY low. The bench writes ``axis_results.json`` (outputs and
status) for the test to check against the golden model; it fails itself only on protocol facts
(TDATA stable while stalled, one head per frame, busy low at done).

(cocotbext-axi 0.1.28 calls cocotb APIs that cocotb 2 deprecates, which the benches treat as
errors; these two classes are the part of it this bench needs.)
"""

import json
import random

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, RisingEdge

from .cocotb_util import tb_args


class AxisSource:
    """Drives ``<prefix>_tdata/_tvalid[/_tlast]`` from queued words, pausing with probability ``pause``."""

    def __init__(self, dut, prefix, rng, pause):
        self._clk = dut.clk
        self._tdata, self._tvalid = getattr(dut, f"{prefix}_tdata"), getattr(dut, f"{prefix}_tvalid")
        self._tready = getattr(dut, f"{prefix}_tready")
        self._tlast = getattr(dut, f"{prefix}_tlast", None)
        self._rng, self._pause = rng, pause
        self._tvalid.value = 0

    async def send(self, words, *, last=True):
        """Send ``words`` as one frame (TLAST on the final word if ``last``); returns when all
        were taken."""
        for i, word in enumerate(words):
            while self._rng.random() < self._pause:
                self._tvalid.value = 0
                await RisingEdge(self._clk)
            self._tdata.value = int(word)
            if self._tlast is not None:
                self._tlast.value = int(last and i == len(words) - 1)
            self._tvalid.value = 1
            while True:
                await RisingEdge(self._clk)
                if int(self._tready.value):
                    break
            self._tvalid.value = 0


class AxisSink:
    """Takes words from ``<prefix>_tdata/_tvalid[/_tuser/_tlast]``, TREADY low with probability
    ``pause``; checks that a stalled word does not change."""

    def __init__(self, dut, prefix, rng, pause):
        self._clk = dut.clk
        self._tdata, self._tvalid = getattr(dut, f"{prefix}_tdata"), getattr(dut, f"{prefix}_tvalid")
        self._tready = getattr(dut, f"{prefix}_tready")
        self._tuser = getattr(dut, f"{prefix}_tuser", None)
        self._tlast = getattr(dut, f"{prefix}_tlast", None)
        self._rng, self._pause = rng, pause
        self._words = []
        self._tready.value = 0
        cocotb.start_soon(self._run())

    def _beat(self):
        return (int(self._tdata.value), int(self._tuser.value) if self._tuser is not None else None,
                int(self._tlast.value) if self._tlast is not None else 1)

    async def _run(self):
        # Values read right after a rising edge are those the edge sampled (cocotb's usual idiom).
        held, ready = None, 0
        while True:
            await RisingEdge(self._clk)
            if int(self._tvalid.value):
                beat = self._beat()
                assert held is None or beat == held, f"a stalled beat changed: {held} -> {beat}"
                if ready:
                    self._words.append(beat)
                    held = None
                else:
                    held = beat
            else:
                assert held is None, f"TVALID dropped before the beat {held} was taken"
            ready = int(self._rng.random() >= self._pause)
            self._tready.value = ready

    async def recv(self):
        """The next frame: a list of ``(tdata, tuser, tlast)`` up to and including TLAST."""
        while True:
            for i, (_, _, last) in enumerate(self._words):
                if last:
                    frame, self._words = self._words[:i + 1], self._words[i + 1:]
                    return frame
            await RisingEdge(self._clk)

    def empty(self):
        return not self._words


def _pack(values, bits):
    mask = (1 << bits) - 1
    return sum((int(x) & mask) << (i * bits) for i, x in enumerate(values))


async def _serve(dut, args, kind, core, rng):
    """Answer core ``core``'s ``kind`` ("k" or "v") requests from the flat element memory."""
    requests = AxisSink(dut, f"m_axis_{kind}req{core}", rng, args["pause"])
    answers = AxisSource(dut, f"s_axis_{kind}{core}", rng, args["pause"])
    memory, lanes, addr_bits = args[kind], args["lanes"], args["addr_bits"]
    while True:
        (word, _, _), = await requests.recv()
        addr, keys = word & ((1 << addr_bits) - 1), word >> addr_bits
        beats = [_pack(memory[addr + b * lanes: addr + (b + 1) * lanes], args["input_bits"])
                 for b in range(keys * args["beats_per_key"])]
        await ClockCycles(dut.clk, args["latency"])
        await answers.send(beats, last=False)


async def _watch_status(dut, statuses):
    """Record error and cycles at every ``done`` pulse (busy must have dropped by then)."""
    while True:
        await RisingEdge(dut.clk)
        if int(dut.done.value):
            assert not int(dut.busy.value), "busy while done"
            statuses.append({"error": int(dut.error.value), "cycles": int(dut.cycles.value)})


@cocotb.test()
async def job_through_axis(dut):
    with open(tb_args()["file"]) as f:
        args = json.load(f)
    rng = random.Random(args["seed"])
    cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
    dut.rst.value = 1
    desc = AxisSource(dut, "s_axis_desc", rng, args["pause"])
    query = AxisSource(dut, "s_axis_query", rng, args["pause"])
    out = AxisSink(dut, "m_axis_out", rng, args["pause"])
    for core in range(args["cores"]):
        for kind in ("k", "v"):
            cocotb.start_soon(_serve(dut, args, kind, core, rng))
    await ClockCycles(dut.clk, 4)
    dut.rst.value = 0
    statuses = []
    cocotb.start_soon(_watch_status(dut, statuses))
    results = []
    for number, job in enumerate(args["jobs"]):
        cocotb.start_soon(desc.send(job["desc"]))
        await query.send(job["query"])
        heads = []
        for _ in range(job["heads"]):
            frame = await out.recv()
            users = {user for _, user, _ in frame}
            assert len(users) == 1, f"one head per output frame, got TUSER {users}"
            assert len(frame) == args["beats_per_key"], f"{len(frame)} beats in a head's frame"
            heads.append({"head": users.pop(), "tdata": [word for word, _, _ in frame]})
        while len(statuses) <= number:
            await RisingEdge(dut.clk)
        results.append({"heads": heads, **statuses[number]})
    await ClockCycles(dut.clk, 20)
    assert out.empty(), "an output beat after the job ended"
    with open("axis_results.json", "w") as f:
        json.dump(results, f)
