"""Generic cocotb bench of one stream unit (run through :func:`leanattn.sim.stream_bench.run_cocotb_bench`).

tb_args: ``{"vectors": path}``; the JSON file holds ``inputs`` and ``outputs`` (``{port: [hex
payload]}``), ``latency`` (``{output: [input, cycles, index_map or null]}``) and ``patterns``
(``[[idle, backpressure], ...]``). For each pattern, after a reset: every input stream is driven
with its own seeded idle pattern, every output drained with its own seeded backpressure; the
scoreboard proves each output carries exactly the expected items in order, and without stalls each
output item leaves exactly the documented latency after the input item it depends on.
"""

import json
import os
import random

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, FallingEdge
from cocotb.utils import get_sim_steps

from leanattn.sim.cocotb_stream import StreamDriver, StreamSink, check_in_order, stall_pattern
from leanattn.sim.cocotb_util import tb_args

PERIOD_NS = 10


def _load():
    with open(tb_args()["vectors"]) as file:
        data = json.load(file)
    to_ints = lambda streams: {name: [int(v, 16) for v in items] for name, items in streams.items()}  # noqa: E731
    return to_ints(data["inputs"]), to_ints(data["outputs"]), data["latency"], data["patterns"]


async def _reset(dut, inputs, outputs):
    dut.rst.value = 1
    for name in inputs:
        getattr(dut, f"{name}__valid").value = 0
    for name in outputs:
        getattr(dut, f"{name}__ready").value = 0
    await ClockCycles(dut.clk, 3)
    await FallingEdge(dut.clk)
    dut.rst.value = 0


async def _run_pattern(dut, inputs, outputs, latency, idle, backpressure, rng, seed):
    where = f"(run seed {seed}, idle {idle}, backpressure {backpressure})"
    await _reset(dut, inputs, outputs)
    drivers = {name: StreamDriver(dut, name, dut.clk,
                                  idle=stall_pattern(idle, seed=rng.random()))
               for name in sorted(inputs)}
    sinks = {name: StreamSink(dut, name, dut.clk,
                              backpressure=stall_pattern(backpressure, seed=rng.random()))
             for name in sorted(outputs)}
    for name, items in inputs.items():
        drivers[name].send_all(items)
    budget = 50 * (sum(map(len, inputs.values())) + sum(map(len, outputs.values()))) + 1000
    for name, items in outputs.items():
        await sinks[name].wait_count(len(items), timeout_cycles=budget)
    for driver in drivers.values():
        await driver.wait_idle(timeout_cycles=budget)
    await ClockCycles(dut.clk, 8)                   # a duplicate or extra item would show by now
    for name, items in outputs.items():
        check_in_order(items, sinks[name].values, name=f"{name} {where}")
    if idle == "none" and backpressure == "none":
        period = get_sim_steps(PERIOD_NS, "ns")
        for out, (src, cycles, index_map) in latency.items():
            for i, transfer in enumerate(sinks[out].received):
                j = i if index_map is None else index_map[i]
                measured = (transfer.time - drivers[src].sent[j].time) // period
                assert measured == cycles, (f"{out}[{i}] left {measured} cycles after {src}[{j}], "
                                            f"the documented latency is {cycles} {where}")
    for task in (*drivers.values(), *sinks.values()):
        task.stop()


@cocotb.test()
async def test_vectors(dut):
    """Every recorded vector through the unit, under each requested stall pattern."""
    inputs, outputs, latency, patterns = _load()
    cocotb.start_soon(Clock(dut.clk, PERIOD_NS, unit="ns").start())
    rng = random.Random(cocotb.RANDOM_SEED)
    seed = os.environ.get("COCOTB_RANDOM_SEED", "?")
    for idle, backpressure in patterns:
        await _run_pattern(dut, inputs, outputs, latency, idle, backpressure, rng, seed)
