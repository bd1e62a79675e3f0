# amaranth: UnusedElaboratable=no
"""PacketArbiter (whole packets, round robin, nothing lost) and ScaleLookup (each beat gets its
head's output scale)."""

import numpy as np
import pytest
from amaranth.hdl import Value, unsigned
from amaranth.lib import data
from amaranth.sim import Simulator

from leanattn.hdl.finish import PacketArbiter, ScaleLookup
from leanattn.hdl.jobload import descriptor_write_layout
from leanattn.hdl.layouts import final_layout, partial_layout
from leanattn.sim.cocotb_stream import check_in_order
from leanattn.sim.configs import TEST_CONFIGS
from leanattn.sim.stream_bench import PATTERNS, bench_dir, run_cocotb_bench, simulate, stall_iter

PACKET = data.StructLayout({"src": unsigned(3), "seq": unsigned(10), "last": 1})


def packets(count, rng, per_input=30):
    """Per input: packets of 1..5 beats, each beat naming its source and running number."""
    inputs = {}
    for n in range(count):
        beats, seq = [], 0
        for _ in range(per_input):
            size = int(rng.integers(1, 6))
            for i in range(size):
                beats.append({"src": n, "seq": seq, "last": int(i == size - 1)})
                seq += 1
        inputs[f"i_{n}"] = beats
    return inputs


def by_source(items):
    """The merged stream split back per source: each must be its input, in order."""
    return sorted(items, key=lambda bits: PACKET.from_bits(bits).src)


def check_packets_whole(received):
    """No packet is interleaved with another."""
    current = None
    for bits in received:
        beat = PACKET.from_bits(bits)
        assert current in (None, beat.src), "packets interleaved"
        current = None if beat.last else beat.src


@pytest.mark.parametrize("idle, backpressure", PATTERNS)
@pytest.mark.parametrize("count", [1, 2, 3, 5])
@pytest.mark.parametrize("registered", [False, True])
def test_arbiter_merges_whole_packets(count, idle, backpressure, registered):
    rng = np.random.default_rng(count)
    items = packets(count, rng)
    inputs = {name: [PACKET.const(b).as_bits() for b in beats] for name, beats in items.items()}
    expected = [bits for name in sorted(inputs, key=lambda s: int(s[2:])) for bits in inputs[name]]
    dut = PacketArbiter(shape=PACKET, count=count, registered_grant=registered)
    _, received = simulate(dut, inputs, {"o_data": expected},
                           idle=idle, backpressure=backpressure, seed=count,
                           canonical={"o_data": by_source})
    check_packets_whole([bits for bits, _ in received["o_data"]])


def test_arbiter_round_robin_without_gaps():
    """All inputs always offering one-beat packets: grants rotate 1, 2, 0, 1, ... (after reset the
    grant is at input 0, so input 1 comes first), one per cycle."""
    count = 3
    inputs = {f"i_{n}": [PACKET.const({"src": n, "seq": i, "last": 1}).as_bits() for i in range(10)]
              for n in range(count)}
    order = [PACKET.const({"src": n, "seq": i, "last": 1}).as_bits() for i in range(10) for n in (1, 2, 0)]
    sent, received = simulate(PacketArbiter(shape=PACKET, count=count), inputs, {"o_data": order})
    cycles = [c for _, c in received["o_data"]]
    assert cycles == list(range(cycles[0], cycles[0] + len(order)))


def test_registered_grant_round_robin_without_gaps():
    """The same with the grant a register: it rests on input 0 after reset, so input 0 comes
    first, then 1, 2, 0, ...; one beat per cycle, the grant moving with each packet's last beat."""
    count = 3
    inputs = {f"i_{n}": [PACKET.const({"src": n, "seq": i, "last": 1}).as_bits() for i in range(10)]
              for n in range(count)}
    order = [PACKET.const({"src": n, "seq": i, "last": 1}).as_bits() for i in range(10) for n in (0, 1, 2)]
    dut = PacketArbiter(shape=PACKET, count=count, registered_grant=True)
    sent, received = simulate(dut, inputs, {"o_data": order})
    cycles = [c for _, c in received["o_data"]]
    assert cycles == list(range(cycles[0], cycles[0] + len(order)))


@pytest.mark.parametrize("simulator", ["icarus", "verilator"])
@pytest.mark.parametrize("registered", [False, True])
def test_arbiter_cocotb(request, simulator, registered):
    rng = np.random.default_rng(7)
    items = packets(3, rng, per_input=200)
    inputs = {name: [PACKET.const(b).as_bits() for b in beats] for name, beats in items.items()}
    expected = [bits for name in ("i_0", "i_1", "i_2") for bits in inputs[name]]
    dut = PacketArbiter(shape=PACKET, count=3, registered_grant=registered)
    run_cocotb_bench(dut, toplevel="arbiter", inputs=inputs,
                     outputs={"o_data": expected}, simulator=simulator, build_dir=bench_dir(request),
                     canonical={"o_data": by_source}, seed=7)


def test_arbiter_constructor_errors():
    with pytest.raises(ValueError, match="count must be a positive integer, not 0"):
        PacketArbiter(shape=PACKET, count=0)
    with pytest.raises(TypeError, match="shape must be a struct layout with a 'last' field"):
        PacketArbiter(shape=unsigned(8), count=2)
    with pytest.raises(TypeError, match="registered_grant must be a bool, not 1"):
        PacketArbiter(shape=PACKET, count=2, registered_grant=1)


def scale_vectors(cfg, rng, beats=300):
    """Descriptor writes for every head, then partial beats of random heads."""
    heads = cfg.max_heads
    mant = rng.integers(0, 1 << cfg.scale_bits, heads)
    shift = rng.integers(0, 1 << cfg.out_shift_bits, heads)
    wl, pl, fl = descriptor_write_layout(cfg), partial_layout(cfg), final_layout(cfg)
    writes = [wl.const({"addr": h, "desc": {"out_mant": int(mant[h]), "out_shift": int(shift[h]),
                                             "length": h + 1}}).as_bits() for h in range(heads)]
    parts, finals = [], []
    for _ in range(beats):
        h = int(rng.integers(heads))
        p = {"head": h, "valid": 1, "m": int(rng.integers(-5, 5)), "l": int(rng.integers(1 << 10)),
             "o": [int(x) for x in rng.integers(-100, 100, cfg.lanes)], "last": int(rng.integers(2))}
        parts.append(pl.const(p).as_bits())
        final = {"partial": p, "out_mant": int(mant[h]), "out_shift": int(shift[h])}
        finals.append(fl.const(final).as_bits())
    return writes, parts, finals


@pytest.mark.parametrize("idle, backpressure", PATTERNS)
@pytest.mark.parametrize("name", ["tiny", "default", "odd"])
def test_scale_lookup(name, idle, backpressure):
    """Descriptor writes first (as in the accelerator: a job's descriptors are stored before any
    head finishes), then every partial beat leaves with its head's output scale; latency 1."""
    cfg = TEST_CONFIGS[name]
    rng = np.random.default_rng(3)
    writes, parts, finals = scale_vectors(cfg, rng)
    dut = ScaleLookup(cfg)
    sent, received = [], []
    in_payload, out_payload = Value.cast(dut.i_partial.payload), Value.cast(dut.o_final.payload)

    async def producer(ctx):
        for w in writes:
            ctx.set(dut.i_dwrite.valid, 1)
            ctx.set(Value.cast(dut.i_dwrite.payload), w)
            await ctx.tick()
        ctx.set(dut.i_dwrite.valid, 0)
        stall, cycle = stall_iter(idle, "in"), len(writes)
        for p in parts:
            while next(stall):
                ctx.set(dut.i_partial.valid, 0)
                await ctx.tick()
                cycle += 1
            ctx.set(dut.i_partial.valid, 1)
            ctx.set(in_payload, p)
            while True:
                _, _, ready = await ctx.tick().sample(dut.i_partial.ready)
                cycle += 1
                if ready:
                    sent.append(cycle)
                    break
        ctx.set(dut.i_partial.valid, 0)

    async def consumer(ctx):
        stall, cycle = stall_iter(backpressure, "out"), 0
        while len(received) < len(finals):
            ctx.set(dut.o_final.ready, int(not next(stall)))
            _, _, valid, ready, value = await ctx.tick().sample(dut.o_final.valid, dut.o_final.ready,
                                                                out_payload)
            cycle += 1
            if valid and ready:
                received.append((value, cycle))
            assert cycle < 20 * len(finals) + len(writes), "stuck"

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(producer)
    sim.add_testbench(consumer)
    sim.run()
    check_in_order(finals, [v for v, _ in received], name="o_final")
    if idle == "none" and backpressure == "none":
        assert [c for _, c in received] == [c + ScaleLookup.latency for c in sent]


def test_scale_lookup_constructor_errors():
    with pytest.raises(TypeError, match="cfg must be an AttentionConfig"):
        ScaleLookup(8)
