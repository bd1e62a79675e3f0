"""Generic stream benches for one unit: recorded input transfers in, expected output transfers out.

A unit test computes its vectors with the golden model, packs them with the unit's own payload
layouts, and hands them to one of two runners that share this contract:

* :func:`simulate` -- ``amaranth.sim``, in-process, for fast tests while developing;
* :func:`run_cocotb_bench` -- the generated Verilog under cocotb on Icarus Verilog or Verilator
  inside the Verilog harness of :mod:`leanattn.sim.harness` (bench module :mod:`leanattn.sim.tb_streams`).

Both drive every input stream with its own seeded idle pattern and every output with its own seeded
backpressure, record the cycle of each transfer, check the stream rules on the outputs, check that
every output stream carries exactly the expected items in order (nothing dropped, duplicated or
extra), and, when ``latency`` is given and nothing stalls, that each output item leaves exactly
``latency`` cycles after the input item it depends on.

``latency`` is ``{output: (input, cycles, index_map)}``: output item ``i`` depends on input item
``index_map[i]`` of stream ``input`` (``None`` means item ``i``, a one-to-one unit).

``canonical`` is ``{output: function}`` for outputs whose order depends on timing (for example
packets of different sources merged in completion order): the function maps a list of payloads to
a canonical list (say, packets sorted by a tag), applied to the expected and the received items
alike before they are compared -- still item for item, so a dropped or duplicated one fails.
"""

import itertools
import random
import re
from pathlib import Path

from amaranth.hdl import Value
from amaranth.sim import Simulator

from .cocotb_stream import check_in_order
from .cocotb_util import run_cocotb

__all__ = ["stall_iter", "simulate", "check_latency", "run_cocotb_bench", "bench_dir", "PATTERNS"]

#: (idle, backpressure) pairs a full cocotb run crosses.
PATTERNS = [("none", "none"), ("random", "random"), ("fixed", "none"), ("none", "fixed")]


def stall_iter(kind, seed, rate=0.3, period=3):
    """Per-cycle stall decisions: never, one cycle in ``period``, or seeded random at ``rate``."""
    if kind == "none":
        return itertools.repeat(False)
    if kind == "fixed":
        return itertools.cycle([True] + [False] * (period - 1))
    if kind == "random":
        rng = random.Random(seed)
        return iter(lambda: rng.random() < rate, None)
    raise ValueError(f"stall kind must be none, fixed or random, not {kind!r}")


def check_latency(latency, sent, received, where=""):
    """Assert the documented latency from transfer cycles (only meaningful without stalls)."""
    for out_name, (in_name, cycles, index_map) in (latency or {}).items():
        for i, (_, t_out) in enumerate(received[out_name]):
            j = i if index_map is None else index_map[i]
            measured = t_out - sent[in_name][j]
            assert measured == cycles, (f"{out_name}[{i}] left {measured} cycles after {in_name}[{j}], "
                                        f"the documented latency is {cycles} {where}")


def _canonical(canonical, name, items):
    return list(canonical[name](list(items))) if canonical and name in canonical else list(items)


def simulate(dut, inputs, outputs, *, idle="none", backpressure="none", seed=0, latency=None,
             max_cycles=None, canonical=None):
    """Run ``dut`` under ``amaranth.sim``: ``inputs`` ``{port: [payload bits]}``, ``outputs``
    ``{port: [expected payload bits]}``. Returns ``(sent, received)``: ``{port: [cycle]}`` and
    ``{port: [(payload, cycle)]}``; raises AssertionError (with the seed) on any mismatch."""
    where = f"(seed {seed}, idle {idle}, backpressure {backpressure})"
    total = sum(len(v) for v in inputs.values()) + sum(len(v) for v in outputs.values())
    max_cycles = max_cycles or 20 * total + 200
    sent = {name: [] for name in inputs}
    received = {name: [] for name in outputs}
    done = {name: False for name in outputs}

    def producer(name, items, stall):
        port = getattr(dut, name)
        payload = Value.cast(port.payload)

        async def run(ctx):
            cycle = 0
            for item in items:
                while next(stall):
                    ctx.set(port.valid, 0)
                    await ctx.tick()
                    cycle += 1
                ctx.set(port.valid, 1)
                ctx.set(payload, item)
                while True:
                    _, _, ready = await ctx.tick().sample(port.ready)
                    cycle += 1
                    if ready:
                        sent[name].append(cycle)
                        break
                    assert cycle < max_cycles, f"{name} stuck at item {len(sent[name])} {where}"
            ctx.set(port.valid, 0)
        return run

    def consumer(name, expected, stall):
        port = getattr(dut, name)
        payload = Value.cast(port.payload)

        async def run(ctx):
            cycle, held = 0, None
            while len(received[name]) < len(expected):
                ready = not next(stall)
                ctx.set(port.ready, ready)
                _, _, valid, value = await ctx.tick().sample(port.valid, payload)
                cycle += 1
                if held is not None:
                    assert valid and value == held, f"{name}: stream rule broken at cycle {cycle} {where}"
                if valid and ready:
                    received[name].append((value, cycle))
                held = value if valid and not ready else None
                assert cycle < max_cycles, (f"{name} stuck after {len(received[name])} of "
                                            f"{len(expected)} items {where}")
            ctx.set(port.ready, 1)                  # nothing more may come out
            for _ in range(8):
                _, _, valid = await ctx.tick().sample(port.valid)
                assert not valid, f"{name}: an extra item after the expected ones {where}"
            done[name] = True
        return run

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    for k, (name, items) in enumerate(sorted(inputs.items())):
        sim.add_testbench(producer(name, items, stall_iter(idle, f"{seed}-in-{k}")))
    for k, (name, expected) in enumerate(sorted(outputs.items())):
        sim.add_testbench(consumer(name, expected, stall_iter(backpressure, f"{seed}-out-{k}")))
    sim.run()
    assert all(done.values())
    for name, expected in outputs.items():
        check_in_order(_canonical(canonical, name, expected),
                       _canonical(canonical, name, [v for v, _ in received[name]]), name=f"{name} {where}")
    if idle == "none" and backpressure == "none":
        check_latency(latency, sent, received, where)
    return sent, received


def bench_dir(request, root=None):
    """This test's own build directory, ``build/tests/<module>/<test>`` (safe under xdist)."""
    root = Path(root) if root else Path(__file__).resolve().parent.parent / "build" / "tests"
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.name)
    return root / Path(request.node.path).stem / name


def _read_log(path, runs):
    """``[{"items": [payload], "cycles": [cycle]} per run]`` from a harness transfer log."""
    logs = [{"items": [], "cycles": []} for _ in range(runs)]
    with open(path) as file:
        for line in file:
            run, payload, cycle = line.split()
            logs[int(run)]["items"].append(int(payload, 16))
            logs[int(run)]["cycles"].append(int(cycle))
    return logs


def run_cocotb_bench(design, *, toplevel, inputs, outputs, simulator, build_dir, latency=None,
                     patterns=PATTERNS, seed=None, waves=False, canonical=None, extra_sources=None,
                     budget=None, platform=None):
    """Run the generated Verilog of ``design`` under cocotb, inside the :mod:`leanattn.sim.harness`.

    Payloads go to ``build_dir/in_<port>.hex``; the bench (:mod:`leanattn.sim.tb_streams`) runs
    every ``(idle, backpressure)`` pattern in turn with a reset between (``(idle, backpressure,
    n)``: cut short by the next reset after ``n`` cycles, and not checked); then the transfer logs are
    checked here: every input item sent once, every output exactly the expected items in order,
    and without stalls the documented latency. Failures name the run, the pattern and the seed.
    ``extra_sources`` are more Verilog files for the build (see :func:`~leanattn.sim.cocotb_util.run_cocotb`).
    ``budget``: the most cycles a run may take (default: 50 per item plus 1000; more is taken when
    given, for designs that work long on few items). ``platform``: elaborate ``design`` for it
    (:func:`~leanattn.sim.cocotb_util.design_verilog`).
    """
    from amaranth.hdl import Elaboratable

    from .harness import harness_verilog, stream_ports

    build_dir = Path(build_dir)
    build_dir.mkdir(parents=True, exist_ok=True)
    if not isinstance(design, Elaboratable):
        design = design()
    ports = stream_ports(design, inputs, outputs)
    vectors = {**inputs, **outputs}
    for name, items in inputs.items():
        (build_dir / f"in_{name}.hex").write_text("".join(f"{v:x}\n" for v in items) or "0\n")
    (build_dir / "counts.hex").write_text("".join(f"{len(vectors[name]):x}\n" for name, _, _ in ports))
    for name, _, _ in ports:
        (build_dir / f"xfer_{name}.txt").unlink(missing_ok=True)
    wrapper = harness_verilog(toplevel, ports, {name: len(items) for name, items in inputs.items()})
    budget = max(50 * sum(len(v) for v in vectors.values()) + 1000, budget or 0)
    run = run_cocotb(design, toplevel=toplevel, test_module="leanattn.sim.tb_streams",
                     simulator=simulator, build_dir=build_dir, seed=seed, waves=waves,
                     wrapper=("harness", wrapper), extra_sources=extra_sources, platform=platform,
                     tb_args={"patterns": [list(p) for p in patterns], "budget": budget})
    logs = {name: _read_log(build_dir / f"xfer_{name}.txt", len(patterns)) for name, _, _ in ports}
    for k, (idle, backpressure, *abort) in enumerate(patterns):
        if abort:
            continue                    # a run cut short by a reset: only the runs after it count
        where = f"(run {k}, idle {idle}, backpressure {backpressure}, seed {run.seed}, {simulator})"
        for name, items in vectors.items():
            check_in_order(_canonical(canonical, name, items),
                           _canonical(canonical, name, logs[name][k]["items"]), name=f"{name} {where}")
        if idle == "none" and backpressure == "none":
            sent = {name: logs[name][k]["cycles"] for name in inputs}
            received = {name: list(zip(logs[name][k]["items"], logs[name][k]["cycles"]))
                        for name in outputs}
            check_latency(latency, sent, received, where)
    return run
