"""A stream register slice: cuts every combinational path of a stream at full throughput.

:class:`SkidBuffer` is the pipeline register for :mod:`amaranth.lib.stream`. A pipe that runs free
(never looks at its output's ``ready``) ends in one of these, and so does any long path between two
blocks: ``valid``, ``payload`` and ``ready`` all leave a flip-flop, on both sides.
"""

from amaranth.hdl import Module, Shape, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

__all__ = ["SkidBuffer"]


class SkidBuffer(wiring.Component):
    """Two-entry register slice for a stream of any shape.

    The main register drives ``o_data``. When the output stalls while an input transfer is under
    way (the input's ``ready`` is a register, so it cannot drop in the same cycle), that item goes to
    the skid register and ``i_data.ready`` falls on the next cycle. The skid register drains first
    when the output moves on, so order is kept and nothing is lost.

    Parameters
    ----------
    shape : shape-like
        Payload shape of both streams: any Amaranth shape, shape-castable or layout
        (``8``, ``signed(12)``, ``data.StructLayout({...})``).

    Members
    -------
    i_data : ``In(stream.Signature(shape))``
        Input stream. ``ready`` comes from a flip-flop (through an inverter), not from ``o_data``.
    o_data : ``Out(stream.Signature(shape))``
        Output stream. ``valid`` and ``payload`` are driven by flip-flops.

    Latency: 1 cycle (an item accepted at one clock edge can leave at the next).
    Throughput: 1 item per cycle, sustained; stalls only while ``o_data`` is not ready.
    Numerics: none; the payload is passed through bit for bit.
    """

    #: Cycles from an input transfer to the earliest output transfer of the same item.
    latency = 1

    def __init__(self, *, shape):
        try:
            Shape.cast(shape)
        except TypeError:
            raise TypeError(f"shape must be a shape-castable object, not {shape!r}") from None
        self._shape = shape
        super().__init__({
            "i_data": In(stream.Signature(shape)),
            "o_data": Out(stream.Signature(shape)),
        })

    @property
    def shape(self):
        """The payload shape, as given to the constructor."""
        return self._shape

    def elaborate(self, platform):
        m = Module()

        # --- state -----------------------------------------------------------------------------
        # The main register is o_data's valid/payload itself; the skid register holds one item
        # that arrived while the output was stalled.
        skid_valid   = Signal()
        skid_payload = Signal(self._shape)

        # Input ready comes from a flip-flop (no path from o_data.ready): open while the skid
        # register is empty, so an item accepted during an output stall always has a place.
        m.d.comb += self.i_data.ready.eq(~skid_valid)

        in_fire  = Signal()   # an input transfer happens at this edge
        out_free = Signal()   # the main register may be loaded at this edge
        m.d.comb += [
            in_fire.eq(self.i_data.valid & self.i_data.ready),
            out_free.eq(~self.o_data.valid | self.o_data.ready),
        ]

        # --- main register -----------------------------------------------------------------------
        with m.If(out_free):
            with m.If(skid_valid):
                # Drain the older item first; no input transfer can be under way (ready is low).
                m.d.sync += [
                    self.o_data.valid.eq(1),
                    self.o_data.payload.eq(skid_payload),
                ]
            with m.Else():
                m.d.sync += [
                    self.o_data.valid.eq(in_fire),
                    self.o_data.payload.eq(self.i_data.payload),
                ]

        # --- skid register -----------------------------------------------------------------------
        with m.If(out_free):
            m.d.sync += skid_valid.eq(0)
        with m.Elif(in_fire):
            m.d.sync += [
                skid_valid.eq(1),
                skid_payload.eq(self.i_data.payload),
            ]

        return m
