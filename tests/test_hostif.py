# amaranth: UnusedElaboratable=no
"""The host interface in amaranth.sim: the command parser against the protocol's executable model
on good and malformed byte streams under backpressure, the byte serializer, the reply writer's
frames (whole, in priority order, completed after a reset), and the whole interface: KV writes
held while a job runs, the STATUS and INFO records."""

import random

import pytest
from amaranth.hdl import Module, Signal, Value
from amaranth.sim import Simulator

from leanattn.fpga import protocol as P
from leanattn.fpga.hostif import (
    ByteSerializer,
    CommandParser,
    HostInterface,
    ReplyWriter,
    _Timer,
    serializer_layout,
)
from leanattn.hdl.config import PRESETS
from leanattn.hdl.kvmem import kv_write_layout
from leanattn.hdl.layouts import output_layout
from leanattn.sim.configs import TEST_CONFIGS
from leanattn.sim.stream_bench import simulate

TIMEOUT = 12


def job_bytes(cfg, rng):
    """Commands of a small job: a KV load with runs, descriptors, queries, STATUS and INFO."""
    lanes = cfg.lanes
    writes = [{"base": 1, "kind": 0, "bank": 0, "addr": 77, "data": [0] * lanes}]
    writes += [{"base": 0, "kind": 1, "bank": cfg.cores - 1, "addr": a,
                "data": [rng.randrange(cfg.input_min, cfg.input_max + 1) for _ in range(lanes)]}
               for a in list(range(5, 12)) + [3, 4]]
    descs = [{"length": rng.randrange(1, cfg.max_context + 1), "k_base": rng.randrange(1000), "last": h == 1}
             for h in range(2)]
    beats = [{"q": [rng.randrange(cfg.input_min, cfg.input_max + 1) for _ in range(lanes)],
              "last": b == 2} for b in range(3)]
    return (P.encode_kv_writes(cfg, writes) + P.encode_descriptors(cfg, descs)
            + P.encode_command(P.Command.STATUS) + P.encode_queries(cfg, beats)
            + P.encode_command(P.Command.INFO))


def malformed_chunks(cfg, rng):
    """Chunks (each followed by an idle gap): good commands, garbage, bad opcodes and counts, cut
    frames, and good commands after each."""
    good = job_bytes(cfg, rng)
    return [
        good,
        b"\x00\x13" + good,
        bytes([P.SYNC, 0x99, 0, 0]) + good,
        bytes([P.SYNC, P.Command.RESET, 2, 0]) + P.encode_command(P.Command.RESET),
        good[:rng.randrange(5, len(good) - 1)],
        bytes([P.SYNC]),
        good,
        bytes(rng.randrange(256) for _ in range(30)),
        good,
    ]


def run_parser(cfg, chunks, seed):
    """The bytes of ``chunks`` into a CommandParser (random gaps within a chunk, an idle gap after
    each, random backpressure on its outputs); what it did, in order, as CommandModel says it."""
    rng = random.Random(seed)
    dut = CommandParser(cfg, timeout=TIMEOUT)
    streams = [("kv", dut.o_kv), ("desc", dut.o_desc), ("query", dut.o_query)]
    pulses = [("status", dut.o_status_req), ("info", dut.o_info_req), ("reset", dut.o_reset)]
    todo = []
    for chunk in chunks:
        todo += [(byte, rng.randrange(3)) for byte in chunk] + [(None, TIMEOUT + 3)]
    got = []

    async def bench(ctx):
        position, gap, cycle = 0, 0, 0
        while position < len(todo):
            byte, wait = todo[position]
            offer = gap >= wait and byte is not None
            ctx.set(dut.i_rx.valid, offer)
            ctx.set(dut.i_rx.payload, byte or 0)
            for _, port in streams:
                ctx.set(port.ready, rng.random() < 0.6)
            await ctx.delay(1e-9)                  # let the combinational outputs settle
            taken = offer and ctx.get(dut.i_rx.ready)
            got.extend((name, ctx.get(Value.cast(port.payload))) for name, port in streams
                       if ctx.get(port.valid) and ctx.get(port.ready))
            got.extend((name,) for name, pulse in pulses if ctx.get(pulse))
            if ctx.get(dut.o_error.valid):
                got.append(("error", ctx.get(dut.o_error.payload.code), ctx.get(dut.o_error.payload.byte)))
            await ctx.tick()
            cycle += 1
            assert cycle < 200_000, "the parser is stuck"
            if taken or (byte is None and gap >= wait):
                position, gap = position + 1, 0
            else:
                gap += 1
    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    return got


@pytest.mark.parametrize("name", ["tiny", "default", "odd"])
@pytest.mark.parametrize("seed", [1, 2])
def test_parser_matches_model(name, seed):
    cfg = TEST_CONFIGS[name]
    chunks = malformed_chunks(cfg, random.Random(seed))
    expected = P.CommandModel(cfg).run(chunks)
    assert any(action[0] == "error" for action in expected) and any(a[0] == "kv" for a in expected)
    assert run_parser(cfg, chunks, seed) == expected


def test_serializer():
    """Items of 0..4 bytes out least significant byte first, under stalls on both sides."""
    rng = random.Random(5)
    layout = serializer_layout(29)
    items = [(rng.randrange(1 << 29), rng.randrange(5)) for _ in range(60)] + [(0x1234, 2), (7, 0)]
    out = [bits >> (8 * i) & 0xFF for bits, count in items for i in range(count)]
    inputs = [layout.const({"bits": bits, "bytes": count}).as_bits() for bits, count in items]
    simulate(ByteSerializer(width=29), {"i_data": inputs}, {"o_data": out}, idle="random",
             backpressure="random", seed=2)


def run_writer(cfg, heads, events, *, seed=0, cycles=4000):
    """A ReplyWriter fed ``heads`` output packets (beat payloads) and ``events`` ``{cycle: [what]}``
    (``"status"``, ``"info"``, ``("error", code, byte)``, ``"abort"``: stop the packets and
    reset); returns its frames, decoded."""
    rng = random.Random(seed)
    info = P.pack(P.info_layout(), vars(P.info_value(cfg, bank_keys=9, divisor=4)))
    dut = ReplyWriter(cfg, info=info)
    beats = [bits for h in heads for bits in packet(cfg, h).payloads]
    data = []

    async def bench(ctx):
        queue = list(beats)
        ctx.set(Value.cast(dut.i_status), P.pack(P.status_layout(cfg), {"jobs": 3, "cycles": 99}))
        for cycle in range(cycles):
            todo = events.get(cycle, [])
            ctx.set(dut.i_status_req, "status" in todo)
            ctx.set(dut.i_info_req, "info" in todo)
            ctx.set(dut.i_abort, "abort" in todo)
            if "abort" in todo:
                queue = queue[-cfg.beats_per_key:]          # the accelerator is reset: its packet is lost
            errors = [e for e in todo if isinstance(e, tuple)]
            ctx.set(dut.i_error.valid, bool(errors))
            if errors:
                code, byte = errors[0][1:]
                error = P.pack(P.error_layout(), {"code": code, "byte": byte})
                ctx.set(Value.cast(dut.i_error.payload), error)
            ctx.set(dut.i_out.valid, bool(queue) and rng.random() < 0.7)
            ctx.set(Value.cast(dut.i_out.payload), queue[0] if queue else 0)
            ctx.set(dut.o_tx.ready, rng.random() < 0.5)
            await ctx.delay(1e-9)
            if ctx.get(dut.i_out.valid) and ctx.get(dut.i_out.ready):
                queue.pop(0)
            if ctx.get(dut.o_tx.valid) and ctx.get(dut.o_tx.ready):
                data.append(ctx.get(dut.o_tx.payload))
            await ctx.tick()
    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    return P.FrameDecoder(P.reply_layouts(cfg)).feed(bytes(data))


def packet(cfg, head):
    layout = output_layout(cfg)
    """Head ``head``'s OUTPUT frame in these tests: outputs ``40 * head + beat + 1`` (never 0)."""
    beats = [{"head": head, "out": [head * 40 + b + 1] * cfg.lanes, "last": b == cfg.beats_per_key - 1}
             for b in range(cfg.beats_per_key)]
    return P.Frame(P.Reply.OUTPUT, tuple(layout.const(beat).as_bits() for beat in beats))


#: An output beat of one byte, narrower than an ERROR record (4-bit outputs, one head).
NARROW = PRESETS["tiny"].replace(output_bits=4, max_heads=1)


@pytest.mark.parametrize("name", ["tiny", "default", "narrow"])
def test_writer_frames(name):
    """Output packets become whole OUTPUT frames; requests made during a frame wait for its end and
    go out in the order ERROR, STATUS, INFO; a second error while one waits is dropped. Also with
    output beats narrower than an ERROR record."""
    cfg = NARROW if name == "narrow" else TEST_CONFIGS[name]
    status = P.pack(P.status_layout(cfg), {"jobs": 3, "cycles": 99})
    info = P.pack(P.info_layout(), vars(P.info_value(cfg, bank_keys=9, divisor=4)))
    frames = run_writer(cfg, [0, 1, 2], {10: ["info"], 11: ["status"], 12: [("error", 2, 0x42)],
                                         13: [("error", 1, 0x07)]})
    error = P.pack(P.error_layout(), {"code": 2, "byte": 0x42})
    assert frames == [packet(cfg, 0), P.Frame(P.Reply.ERROR, (error,)), P.Frame(P.Reply.STATUS, (status,)),
                      P.Frame(P.Reply.INFO, (info,)), packet(cfg, 1), packet(cfg, 2)]


def test_writer_request_while_read():
    """A STATUS request in the very cycle a STATUS record is read (a job ending just then) is kept:
    a second frame carries the newer record."""
    cfg = PRESETS["tiny"]
    info = P.pack(P.info_layout(), vars(P.info_value(cfg, bank_keys=9, divisor=4)))
    dut = ReplyWriter(cfg, info=info)
    data, collided = [], []

    async def bench(ctx):
        ctx.set(Value.cast(dut.i_status), P.pack(P.status_layout(cfg), {"jobs": 1}))
        ctx.set(dut.o_tx.ready, 1)
        for cycle in range(200):
            ctx.set(dut.i_status_req, cycle == 3)
            await ctx.delay(1e-9)
            newer = ctx.get(dut.o_status_sent) and not collided
            if newer:                           # the job ends now: its record shows from the edge on
                collided.append(cycle)
                ctx.set(dut.i_status_req, 1)
            if ctx.get(dut.o_tx.valid):
                data.append(ctx.get(dut.o_tx.payload))
            await ctx.tick()
            if newer:
                ctx.set(Value.cast(dut.i_status), P.pack(P.status_layout(cfg), {"jobs": 2}))
    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    frames = P.FrameDecoder(P.reply_layouts(cfg)).feed(bytes(data))
    assert collided and [P.decode_status(cfg, f.payloads[0]).jobs for f in frames] == [1, 2]


def test_writer_abort():
    """A reset during an OUTPUT frame completes it with zero beats; the next packet is whole."""
    cfg = PRESETS["tiny"]
    frames = run_writer(cfg, [0, 1], {40: ["abort"]}, seed=3)
    assert len(frames) == 2 and frames[1] == packet(cfg, 1)
    first = frames[0]
    assert first.opcode == P.Reply.OUTPUT and len(first.payloads) == cfg.beats_per_key
    sent = [b for b in first.payloads if b]         # every real beat has a nonzero output
    assert 0 < len(sent) < cfg.beats_per_key and all(b == 0 for b in first.payloads[len(sent):])
    assert list(sent) == list(packet(cfg, 0).payloads[:len(sent)])


def test_host_interface():
    """Bytes in: KV writes (held while busy), descriptors, queries; a job's end: a STATUS frame with
    its record; STATUS and INFO commands answered; the link flag read and cleared."""
    cfg = PRESETS["tiny"]
    rng = random.Random(4)
    dut = HostInterface(cfg, bank_keys=9, divisor=4, timeout=100)
    stream_ = P.encode_command(P.Command.STATUS) + job_bytes(cfg, rng) + P.encode_command(P.Command.RESET)
    expected = P.CommandModel(cfg).run([stream_])
    got, tx, flags = [], [], {}
    busy_cycles = set(range(30, 90))

    async def bench(ctx):
        queue = list(stream_)
        for cycle in range(1200):
            ctx.set(dut.i_busy, cycle in busy_cycles)
            ctx.set(dut.i_done, cycle == 95)
            ctx.set(dut.i_error, 2 if cycle == 95 else 0)
            ctx.set(dut.i_cycles, 1234)
            ctx.set(dut.i_mem_error, cycle == 95)
            ctx.set(dut.i_link_error, cycle >= 20)
            ctx.set(dut.i_rx.valid, bool(queue))
            ctx.set(dut.i_rx.payload, queue[0] if queue else 0)
            for port in (dut.o_kv, dut.o_desc, dut.o_query):
                ctx.set(port.ready, 1)
            ctx.set(dut.o_tx.ready, 1)
            await ctx.delay(1e-9)
            if queue and ctx.get(dut.i_rx.ready):
                queue.pop(0)
            for name, port in (("kv", dut.o_kv), ("desc", dut.o_desc), ("query", dut.o_query)):
                if ctx.get(port.valid) and ctx.get(port.ready):
                    got.append((name, ctx.get(Value.cast(port.payload))))
                    if name == "kv":
                        assert cycle not in busy_cycles, "a KV write while busy"
            if ctx.get(dut.o_reset):
                got.append(("reset",))
            if ctx.get(dut.o_link_clear):
                flags.setdefault("clear", cycle)
            if ctx.get(dut.o_tx.valid):
                tx.append(ctx.get(dut.o_tx.payload))
            await ctx.tick()
    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    assert got == [a for a in expected if a[0] not in ("status", "info")]
    frames = P.FrameDecoder(P.reply_layouts(cfg)).feed(bytes(tx))
    records = [(f.opcode, f.payloads[0]) for f in frames]
    # The first STATUS command: the record from reset, the link flag not yet raised; the job's
    # end: its record, the receiver's flag raised since.
    statuses = [P.decode_status(cfg, bits) for op, bits in records if op == P.Reply.STATUS]
    infos = [P.decode_info(bits) for op, bits in records if op == P.Reply.INFO]
    assert statuses[0] == P.Status(error=0, mem_error=0, link_error=0, busy=0, jobs=0, cycles=0)
    assert statuses[-1] == P.Status(error=2, mem_error=1, link_error=1, busy=0, jobs=1, cycles=1234)
    assert infos == [dut.info] and dut.info.bank_keys == 9 and dut.info.divisor == 4
    assert "clear" in flags


def test_constructor_errors():
    cfg = PRESETS["tiny"]
    with pytest.raises(TypeError, match="cfg must be an AttentionConfig"):
        CommandParser({}, timeout=3)
    with pytest.raises(ValueError, match="timeout must be at least 1, not 0"):
        CommandParser(cfg, timeout=0)
    with pytest.raises(ValueError, match="bank_keys must be in the range 1..8192"):
        HostInterface(cfg, bank_keys=8193, divisor=4, timeout=10)
    with pytest.raises(TypeError, match="divisor must be an integer"):
        HostInterface(cfg, bank_keys=8, divisor=None, timeout=10)
    with pytest.raises(ValueError, match="info must be the bits of an INFO record"):
        ReplyWriter(cfg, info=-1)
    with pytest.raises(ValueError, match="width must be at least 1, not 0"):
        ByteSerializer(width=0)
    assert kv_write_layout(cfg) == HostInterface(cfg, bank_keys=8, divisor=4, timeout=9).o_kv.payload.shape()


@pytest.mark.parametrize("cycles", [1, 2, 3, 4, 5, 7, 8, 9, 31, 32, 33, 100, 1023, 1024, 1025, 4099])
def test_timer_cycles(cycles):
    """The parser's LFSR timer is done exactly ``cycles - 1`` steps after a restart, not before."""
    timer = _Timer(cycles)
    m = Module()
    restart = Signal()
    done = Signal()
    m.d.comb += done.eq(timer.done)
    with m.If(restart):
        m.d.sync += timer.restart()
    with m.Else():
        m.d.sync += timer.step()
    steps = []

    async def bench(ctx):
        ctx.set(restart, 1)
        await ctx.tick()
        ctx.set(restart, 0)
        for step in range(cycles + 2):
            if ctx.get(done):
                steps.append(step)
            await ctx.tick()
    sim = Simulator(m)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    assert steps[:1] == [cycles - 1]
