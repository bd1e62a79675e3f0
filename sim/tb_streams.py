"""cocotb bench of one stream unit inside the Verilog harness of :mod:`leanattn.sim.harness`.

Run through :func:`leanattn.sim.stream_bench.run_cocotb_bench`. tb_args: ``{"patterns": [[idle,
backpressure], ...], "budget": cycles}``; a pattern ``[idle, backpressure, n]`` is cut short after
``n`` cycles, so that the next run's reset arrives in the middle of the work. For each pattern, in
turn: set the pattern and a seed, reset, wait for ``done`` (every input sent, every expected output
received), let 8 more cycles pass (an extra or duplicated item would be logged by then) and check
that no output broke the stream rules. The per-cycle work -- stimulus, stalls, recording -- runs in
the simulator; the transfer logs are checked afterwards by the caller.
"""

import random

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, FallingEdge, RisingEdge, with_timeout

from leanattn.sim.cocotb_util import tb_args

PERIOD_NS = 10
MODES = {"none": 0, "fixed": 1, "random": 2}


@cocotb.test()
async def test_vectors(dut):
    """Every recorded vector through the unit, under each requested stall pattern."""
    args = tb_args()
    cocotb.start_soon(Clock(dut.clk, PERIOD_NS, unit="ns").start())
    rng = random.Random(cocotb.RANDOM_SEED)
    dut.flush.value = 0
    for run, (idle, backpressure, *abort) in enumerate(args["patterns"]):
        seed = rng.randrange(1, 1 << 32)
        where = f"(run {run}, idle {idle}, backpressure {backpressure}, harness seed {seed:#x})"
        dut.rst.value = 1
        dut.run_id.value = run
        dut.seed.value = seed
        dut.idle_mode.value = MODES[idle]
        dut.bp_mode.value = MODES[backpressure]
        await ClockCycles(dut.clk, 3)
        await FallingEdge(dut.clk)
        dut.rst.value = 0
        errors_before = int(dut.rule_errors.value)
        if abort:                       # cut short: the next run's reset lands mid-work
            await ClockCycles(dut.clk, abort[0])
            continue
        try:
            await with_timeout(RisingEdge(dut.done), args["budget"] * PERIOD_NS, "ns")
        except TimeoutError:
            raise AssertionError(f"not done after {args['budget']} cycles {where}") from None
        await ClockCycles(dut.clk, 8)
        broken = int(dut.rule_errors.value) - errors_before
        assert broken == 0, f"{broken} stream rule violations {where} (see the log)"
    dut.flush.value = 1
    await ClockCycles(dut.clk, 2)
