"""cocotb bench of the register slices of :mod:`leanattn.hdl.skid` (run by ``tests/test_skid.py``).

tb_args (see :func:`leanattn.sim.cocotb_util.tb_args`):

* ``items``: items sent per test;
* ``latency``: the latency the bench must measure (the class's ``latency``).

The payload width is read from the port. Every test crosses an input idle pattern with an output
backpressure pattern (none / fixed / seeded random) and proves: nothing dropped, duplicated or
reordered; latency exactly ``latency`` when the output never stalls, at least that otherwise; no
lost cycle (with a steady input, every cycle the output is ready carries a transfer); and, with no
stalls at all, ``items`` transfers in ``items + latency`` cycles.
"""

import os
import random

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, FallingEdge
from cocotb.utils import get_sim_steps

from leanattn.sim.cocotb_stream import STALL_KINDS, StreamDriver, StreamSink, check_in_order, stall_pattern
from leanattn.sim.cocotb_util import tb_args

PERIOD_NS = 10


class TB:
    """Clock, reset, input driver, output sink and the checks for one SkidBuffer."""

    def __init__(self, dut, *, idle, backpressure):
        self.dut     = dut
        self.args    = tb_args()
        self.width   = len(dut.i_data__payload)
        self.period  = get_sim_steps(PERIOD_NS, "ns")
        # cocotb reseeds per test from the run's seed and the test's full name (parameters included).
        self.rng     = random.Random(cocotb.RANDOM_SEED)
        self.seed    = os.environ.get("COCOTB_RANDOM_SEED", "?")     # the run's seed, to reproduce
        self.idle_kind, self.bp_kind = idle, backpressure
        cocotb.start_soon(Clock(dut.clk, PERIOD_NS, unit="ns").start())

    async def reset(self):
        """Hold reset two cycles, then start the driver and sink (nothing may transfer in reset)."""
        self.dut.rst.value = 1
        self.dut.i_data__valid.value = 0
        self.dut.o_data__ready.value = 0
        await ClockCycles(self.dut.clk, 2)
        await FallingEdge(self.dut.clk)
        self.dut.rst.value = 0
        self.driver = StreamDriver(self.dut, "i_data", self.dut.clk,
                                   idle=stall_pattern(self.idle_kind, seed=self.rng.random()))
        self.sink   = StreamSink(self.dut, "o_data", self.dut.clk,
                                 backpressure=stall_pattern(self.bp_kind, seed=self.rng.random()))

    def random_items(self, count):
        """Extremes first (all zeros, all ones, alternating bits), then uniform random values."""
        top = (1 << self.width) - 1
        items = [0, top, 0x5555_5555 & top, 0xAAAA_AAAA & top]
        items += [self.rng.getrandbits(self.width) for _ in range(count - len(items))]
        return items[:count]

    def cycles(self, t0, t1):
        """Clock cycles between two transfer times (both taken at the same clock phase)."""
        assert (t1 - t0) % self.period == 0, f"transfer times {t0}, {t1} not a whole number of cycles apart"
        return (t1 - t0) // self.period

    def check(self, expected):
        where = (f"(run seed {self.seed}, idle {self.idle_kind}, backpressure {self.bp_kind}, "
                 f"width {self.width})")
        latency, sent, received = self.args["latency"], self.driver.sent, self.sink.received

        # Nothing dropped, duplicated or reordered, on either side of the DUT.
        check_in_order(expected, [t.value for t in sent], name=f"i_data {where}")
        check_in_order(expected, [t.value for t in received], name=f"o_data {where}")

        # Latency: exactly `latency` when the output never stalls (nothing can hold an item back),
        # at least `latency` otherwise.
        delays = [self.cycles(i.time, o.time) for i, o in zip(sent, received, strict=True)]
        if self.bp_kind == "none":
            assert set(delays) == {latency}, f"latencies {sorted(set(delays))}, expected {latency} {where}"
        else:
            assert min(delays) >= latency, f"an item left after {min(delays)} < {latency} cycles {where}"

        # No lost cycle: with a steady input, every cycle between the first and the last output
        # transfer either carries a transfer or has ready low.
        if self.idle_kind == "none":
            first, last = received[0].time, received[-1].time
            stalls = [t for t in self.sink.stalls if first <= t <= last]
            span = self.cycles(first, last) + 1
            assert len(received) + len(stalls) == span, \
                f"{span - len(received) - len(stalls)} lost cycles in {span} {where}"

        # Full throughput: N items in N + latency cycles, counted from the first input transfer.
        if self.idle_kind == "none" and self.bp_kind == "none":
            span = self.cycles(sent[0].time, received[-1].time) + 1
            assert span == len(expected) + latency, \
                f"{len(expected)} items took {span} cycles, expected {len(expected) + latency} {where}"


@cocotb.test()
@cocotb.parametrize(idle=STALL_KINDS, backpressure=STALL_KINDS)
async def test_stream(dut, idle, backpressure):
    """Random data through the skid buffer under one crossed idle/backpressure pattern."""
    tb = TB(dut, idle=idle, backpressure=backpressure)
    await tb.reset()
    items = tb.random_items(tb.args["items"])
    tb.driver.send_all(items)
    await tb.driver.wait_idle()
    await tb.sink.wait_count(len(items))
    await ClockCycles(dut.clk, 4)       # anything extra (a duplicate) would show up by now
    tb.check(items)
