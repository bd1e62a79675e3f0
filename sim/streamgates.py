"""Simulation-only stream stages that make a memory slow and irregular: latency and random stalls.

They sit between the reference KV memory and the accelerator in the system bench
(:mod:`leanattn.sim.systop`), so the accelerator meets request and response streams that wait,
stall and arrive late -- inside the simulator, with no per-cycle Python.
"""

from amaranth.hdl import Module, Shape, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from ..hdl.skid import SkidBuffer

__all__ = ["StallGate", "Delay"]


class StallGate(wiring.Component):
    """Passes a stream, refusing it on pseudo-random cycles (a seeded 32-bit xorshift).

    A stall only starts between transfers: once an item is offered downstream it stays offered
    until taken (the stream rules hold on both sides). ``rate`` is the stall probability in 1/256.

    Latency: 0 (combinational). Throughput: ``1 - rate/256`` of the cycles, on average.
    """

    def __init__(self, *, shape, rate, seed):
        Shape.cast(shape)
        if not isinstance(rate, int) or not 0 <= rate <= 255:
            raise ValueError(f"rate must be an integer in 0 .. 255, not {rate!r}")
        if not isinstance(seed, int) or not 0 < seed < (1 << 32):
            raise ValueError(f"seed must be an integer in 1 .. 2**32 - 1, not {seed!r}")
        self._rate, self._seed = rate, seed
        super().__init__({"i_data": In(stream.Signature(shape)), "o_data": Out(stream.Signature(shape))})

    def elaborate(self, platform):
        m = Module()
        state = Signal(32, init=self._seed)
        x1 = state ^ (state << 13)[:32]
        x2 = x1 ^ (x1 >> 17)
        m.d.sync += state.eq(x2 ^ (x2 << 5)[:32])
        offered = Signal()      # an item was offered last cycle and not taken
        stall = Signal()
        m.d.comb += [
            stall.eq(~offered & (state[:8] < self._rate)),
            self.o_data.payload.eq(self.i_data.payload),
            self.o_data.valid.eq(self.i_data.valid & ~stall),
            self.i_data.ready.eq(self.o_data.ready & ~stall),
        ]
        m.d.sync += offered.eq(self.o_data.valid & ~self.o_data.ready)
        return m


class Delay(wiring.Component):
    """``cycles`` register slices in a row: a stream ``cycles`` cycles late, at full throughput."""

    def __init__(self, *, shape, cycles):
        if not isinstance(cycles, int) or cycles < 0:
            raise ValueError(f"cycles must be a non-negative integer, not {cycles!r}")
        self._shape, self._cycles = shape, cycles
        super().__init__({"i_data": In(stream.Signature(shape)), "o_data": Out(stream.Signature(shape))})

    def elaborate(self, platform):
        m = Module()
        source = wiring.flipped(self.i_data)
        for n in range(self._cycles):
            m.submodules[f"slice_{n}"] = stage = SkidBuffer(shape=self._shape)
            wiring.connect(m, source, stage.i_data)
            source = stage.o_data
        wiring.connect(m, source, wiring.flipped(self.o_data))
        return m
