# amaranth: UnusedElaboratable=no
"""The 8N1 UART: transmitter and receiver in loopback at several divisors (amaranth.sim, and the
generated Verilog on Icarus Verilog and Verilator), the line's exact bit timing against a reference
decoder, and the receiver on a line driven bit by bit: framing errors, glitches, a break, a
sender off by 3 %, overruns."""

import random

import pytest
from amaranth.hdl import Module
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.sim import Simulator

from leanattn.fpga.uart import FRAME_BITS, UARTReceiver, UARTTransmitter
from leanattn.sim.stream_bench import bench_dir, run_cocotb_bench, simulate


class Loopback(wiring.Component):
    """Transmitter -> line -> receiver."""

    def __init__(self, divisor):
        self._divisor = divisor
        super().__init__({"i_data": In(stream.Signature(8)), "o_data": Out(stream.Signature(8)),
                          "line": Out(1), "o_error": Out(1), "o_overrun": Out(1)})

    def elaborate(self, platform):
        m = Module()
        m.submodules.tx = tx = UARTTransmitter(divisor=self._divisor)
        m.submodules.rx = rx = UARTReceiver(divisor=self._divisor)
        wiring.connect(m, wiring.flipped(self.i_data), tx.i_data)
        wiring.connect(m, rx.o_data, wiring.flipped(self.o_data))
        m.d.comb += [rx.rx.eq(tx.tx), self.line.eq(tx.tx), self.o_error.eq(rx.o_error),
                     self.o_overrun.eq(rx.o_overrun)]
        return m


def decode_line(levels, divisor):
    """Reference 8N1 decoder of a line sampled every cycle: bytes, checking that every bit of
    every frame lasts exactly ``divisor`` cycles and that stop bits are 1."""
    out, t = [], 0
    while t < len(levels):
        if levels[t]:
            t += 1
            continue
        frame = levels[t:t + FRAME_BITS * divisor]
        if len(frame) < FRAME_BITS * divisor:
            raise AssertionError(f"a frame cut short at cycle {t}")
        bits = [frame[b * divisor:(b + 1) * divisor] for b in range(FRAME_BITS)]
        assert all(len(set(bit)) == 1 for bit in bits), f"a bit at cycle {t} is not {divisor} cycles long"
        assert bits[0][0] == 0 and bits[-1][0] == 1, f"bad start or stop bit at cycle {t}"
        out.append(sum(bits[1 + i][0] << i for i in range(8)))
        t += (FRAME_BITS - 1) * divisor + 1         # inside the stop bit: the next start is a fall
    return out


@pytest.mark.parametrize("divisor", [4, 5, 7, 16])
def test_loopback(divisor):
    """Random bytes, random gaps, random backpressure: all arrive, in order, none twice."""
    rng = random.Random(divisor)
    data = [rng.randrange(256) for _ in range(40)] + [0x00, 0xFF, 0x55, 0xAA]
    simulate(Loopback(divisor), {"i_data": data}, {"o_data": data}, idle="random", backpressure="random",
             seed=divisor, max_cycles=len(data) * FRAME_BITS * divisor * 3)


@pytest.mark.parametrize("divisor", [4, 5, 7, 16])
def test_line_timing(divisor):
    """The line carries exactly the bytes sent, each bit ``divisor`` cycles, whatever the gaps."""
    rng = random.Random(100 + divisor)
    data = [rng.randrange(256) for _ in range(24)]
    dut = Loopback(divisor)
    levels = []

    async def watch(ctx):
        async for _, _, line in ctx.tick().sample(dut.line):
            levels.append(line)

    async def drive(ctx):
        ctx.set(dut.o_data.ready, 1)
        for byte in data:
            ctx.set(dut.i_data.valid, 1)
            ctx.set(dut.i_data.payload, byte)
            await ctx.tick().until(dut.i_data.ready)
            ctx.set(dut.i_data.valid, 0)
            await ctx.tick().repeat(rng.randrange(1, 3 * divisor))
        await ctx.tick().repeat(FRAME_BITS * divisor + 4)
    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_process(watch)
    sim.add_testbench(drive)
    sim.run_until(1e-6 * len(data) * FRAME_BITS * divisor * 3)
    assert decode_line(levels, divisor) == data


@pytest.mark.parametrize("divisor", [4, 9])
def test_back_to_back(divisor):
    """Bytes offered without a gap leave without a gap: one frame every 10 * divisor cycles, and
    ``ready`` is low while a frame is on the line but for the last cycle of its stop bit."""
    dut = UARTTransmitter(divisor=divisor)
    data = [0x12, 0xFE, 0x00, 0x81]
    takes, levels, readys = [], [], []

    async def bench(ctx):
        ctx.set(dut.i_data.valid, 1)
        cycle = 0
        for byte in data:
            ctx.set(dut.i_data.payload, byte)
            while True:
                _, _, ready, line = await ctx.tick().sample(dut.i_data.ready, dut.tx)
                levels.append(line)
                readys.append(ready)
                cycle += 1
                if ready:
                    takes.append(cycle)
                    break
        ctx.set(dut.i_data.valid, 0)
        for _ in range(FRAME_BITS * divisor):
            _, _, line = await ctx.tick().sample(dut.tx)
            levels.append(line)
    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    assert [b - a for a, b in zip(takes, takes[1:])] == [FRAME_BITS * divisor] * (len(data) - 1)
    assert sum(readys) == len(data)
    assert decode_line(levels[takes[0]:], divisor) == data


def line_bench(divisor, waveform, *, ready=True, clear_at=None):
    """Drive a receiver's ``rx`` with ``waveform`` ``[(level, cycles)]``; return the bytes it gives
    and ``(error, overrun)`` per cycle."""
    dut = UARTReceiver(divisor=divisor)
    got, flags = [], []

    async def bench(ctx):
        ctx.set(dut.o_data.ready, ready)
        cycle = 0
        for level, cycles in waveform + [(1, 3 * FRAME_BITS * divisor)]:
            ctx.set(dut.rx, level)
            for _ in range(cycles):
                ctx.set(dut.i_clear, cycle == clear_at)
                _, _, valid, payload, error, overrun = await ctx.tick().sample(
                    dut.o_data.valid, dut.o_data.payload, dut.o_error, dut.o_overrun)
                if valid and ready:
                    got.append(payload)
                flags.append((error, overrun))
                cycle += 1
        _, _, valid, payload = await ctx.tick().sample(dut.o_data.valid, dut.o_data.payload)
        if valid and not ready:
            got.append(payload)
    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    return got, flags


def frame(byte, bit, *, stop=1):
    """A frame's waveform with bits of ``bit`` cycles."""
    levels = [0] + [byte >> i & 1 for i in range(8)] + [stop]
    return [(level, bit) for level in levels]


@pytest.mark.parametrize("divisor", [4, 16])
def test_framing_error(divisor):
    """A frame whose stop bit is 0 gives no byte and sets the sticky error; the next good frame
    arrives; i_clear clears the flag."""
    waveform = frame(0x3C, divisor) + frame(0x5A, divisor, stop=0) + [(1, 2 * divisor)] + frame(0xC3, divisor)
    got, flags = line_bench(divisor, waveform)
    assert got == [0x3C, 0xC3]
    assert flags[FRAME_BITS * divisor][0] == 0 and flags[-1] == (1, 0)
    clear = 3 * FRAME_BITS * divisor
    got, flags = line_bench(divisor, waveform, clear_at=clear)
    # Flags are sampled at each edge, before it acts: the clear shows one cycle later.
    assert flags[clear] == (1, 0) and flags[clear + 1] == (0, 0) and flags[-1] == (0, 0)


def test_glitch_and_break():
    """A low pulse shorter than half a bit is no start bit; a line held low (a break) gives one
    framing error, not a stream of zero bytes; afterwards bytes arrive again."""
    divisor = 8
    waveform = ([(1, 20), (0, divisor // 2 - 2), (1, 30)] + frame(0x01, divisor)
                + [(0, 40 * divisor), (1, 3 * divisor)] + frame(0x80, divisor))
    got, flags = line_bench(divisor, waveform)
    assert got == [0x01, 0x80]
    assert flags[-1] == (1, 0)
    glitch_only, flags = line_bench(divisor, [(1, 10), (0, divisor // 2 - 2), (1, 10)])
    assert glitch_only == [] and flags[-1] == (0, 0)


@pytest.mark.parametrize("bit", [31, 33])
def test_rate_tolerance(bit):
    """A sender 3 % fast or slow (bits of 31 or 33 cycles at a divisor of 32) is still read right,
    back to back."""
    data = [0x00, 0xFF, 0x96, 0x69, 0x01, 0x80]
    got, flags = line_bench(32, [step for byte in data for step in frame(byte, bit)])
    assert got == data and flags[-1] == (0, 0)


def test_overrun():
    """A byte that finds the last one not taken is dropped, and counted."""
    divisor = 4
    got, flags = line_bench(divisor, frame(0x11, divisor) + frame(0x22, divisor), ready=False)
    assert got == [0x11]
    assert flags[-1] == (0, 1)


@pytest.mark.parametrize("cls", [UARTReceiver, UARTTransmitter])
def test_constructor_errors(cls):
    with pytest.raises(ValueError, match=r"divisor must be at least 4 \(clock cycles per bit\), not 3"):
        cls(divisor=3)
    with pytest.raises(TypeError, match="divisor must be an integer, not 4.0"):
        cls(divisor=4.0)
    assert cls(divisor=4).divisor == 4


@pytest.mark.parametrize("simulator", ["icarus", "verilator"])
def test_loopback_cocotb(request, simulator):
    """The generated Verilog of the loopback: random bytes, with and without stalls on both sides."""
    rng = random.Random(7)
    data = [rng.randrange(256) for _ in range(120)]
    run_cocotb_bench(Loopback(4), toplevel="loopback", inputs={"i_data": data}, outputs={"o_data": data},
                     simulator=simulator, build_dir=bench_dir(request),
                     patterns=[("none", "none"), ("random", "random"), ("fixed", "fixed")], seed=11)
