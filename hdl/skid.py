"""Stream register slices: a stream's ``valid`` and ``payload`` out of flip-flops, at full throughput.

:class:`SkidBuffer` is the pipeline register for :mod:`amaranth.lib.stream`. A pipe that runs free
(never looks at its output's ``ready``) ends in one of these, and so does any long path between two
blocks: ``valid``, ``payload`` and ``ready`` all leave a flip-flop, on both sides.
:class:`PipeRegister` is its one-entry form for a slow clock: half the flip-flops, with ``ready``
passed back combinationally. :func:`register_slice` picks one by the configuration's
``pipeline``. :class:`MemorySlice` behaves as a :class:`SkidBuffer`, cycle for cycle, with its two
entries in a memory read asynchronously (distributed RAM on an FPGA): for a wide payload whose
consumer decides ``ready`` late, which then moves a pointer and a count, not an enable per bit.
"""

from amaranth.hdl import Module, Shape, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

__all__ = ["SkidBuffer", "PipeRegister", "MemorySlice", "register_slice", "through_skid"]


def _check_shape(shape):
    try:
        Shape.cast(shape)
    except TypeError:
        raise TypeError(f"shape must be a shape-castable object, not {shape!r}") from None


class _RegisterSlice(wiring.Component):
    """What both register slices share: the two streams of one payload shape, latency 1."""

    #: Cycles from an input transfer to the earliest output transfer of the same item.
    latency = 1

    def __init__(self, *, shape):
        _check_shape(shape)
        self._shape = shape
        super().__init__({
            "i_data": In(stream.Signature(shape)),
            "o_data": Out(stream.Signature(shape)),
        })

    @property
    def shape(self):
        """The payload shape, as given to the constructor."""
        return self._shape


def register_slice(cfg, *, shape):
    """The register slice of ``cfg.pipeline``: a :class:`SkidBuffer` (``full``) or a
    :class:`PipeRegister` (``compact``); both have latency 1 and full throughput."""
    return PipeRegister(shape=shape) if cfg.pipeline == "compact" else SkidBuffer(shape=shape)


def through_skid(m, name, source, *, on=True, kind=None):
    """The stream ``source`` (an output, or the flipped view of an input) through a
    :class:`SkidBuffer` (or ``kind``, :class:`MemorySlice`: the same cycles) added to ``m`` as
    submodule ``name``; returns the buffer's output. With ``on`` false, ``source`` itself: no
    buffer."""
    if not on:
        return source
    m.submodules[name] = skid = (kind or SkidBuffer)(shape=source.payload.shape())
    wiring.connect(m, source, skid.i_data)
    return skid.o_data


class SkidBuffer(_RegisterSlice):
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


class PipeRegister(_RegisterSlice):
    """One-entry register slice for a stream of any shape.

    ``o_data``'s ``valid`` and ``payload`` are registers, loaded whenever the register is empty or
    its item leaves; ``i_data.ready`` is exactly that (``~o_data.valid | o_data.ready``), so the
    input's ``ready`` follows the output's in the same cycle. Half the flip-flops of a
    :class:`SkidBuffer`, for a ``ready`` path through the slice.

    Parameters
    ----------
    shape : shape-like
        Payload shape of both streams.

    Members
    -------
    i_data : ``In(stream.Signature(shape))``
        Input stream. ``ready`` is combinational from ``o_data.ready`` and ``o_data.valid``.
    o_data : ``Out(stream.Signature(shape))``
        Output stream. ``valid`` and ``payload`` are driven by flip-flops.

    Latency: 1 cycle.
    Throughput: 1 item per cycle, sustained; stalls only while ``o_data`` is not ready.
    Numerics: none; the payload is passed through bit for bit.
    """

    def elaborate(self, platform):
        m = Module()
        m.d.comb += self.i_data.ready.eq(~self.o_data.valid | self.o_data.ready)
        with m.If(self.i_data.ready):
            m.d.sync += [self.o_data.valid.eq(self.i_data.valid),
                         self.o_data.payload.eq(self.i_data.payload)]
        return m


class MemorySlice(_RegisterSlice):
    """Two-entry stream buffer in a memory: a :class:`SkidBuffer`'s transfers, cycle for cycle.

    The entries are the two words of a memory with an asynchronous read port (distributed RAM on
    an FPGA); ``o_data.payload`` is the front word as read. ``i_data.ready`` and ``o_data.valid``
    are flags kept in registers (fewer than two items, at least one). A transfer on either side
    moves a one-bit pointer and the flags, nothing per payload bit: where the consumer's ``ready``
    comes late and the payload is wide, the path ends in a few flip-flops, not in an enable that
    fans out to every bit of an output register.

    Parameters
    ----------
    shape : shape-like
        Payload shape of both streams.

    Members
    -------
    i_data : ``In(stream.Signature(shape))``
        Input stream. ``ready`` is a register: high while fewer than two items are held.
    o_data : ``Out(stream.Signature(shape))``
        Output stream. ``valid`` is a register; ``payload`` is the memory's word under the read
        pointer (a register, through the memory's read multiplexer).

    Latency: 1 cycle (an item accepted at one clock edge can leave at the next).
    Throughput: 1 item per cycle, sustained; stalls only while ``o_data`` is not ready. Its
    ``ready`` and ``valid`` are those of a :class:`SkidBuffer` in every cycle, for any input and
    output pattern.
    Numerics: none; the payload is passed through bit for bit.
    """

    def elaborate(self, platform):
        m = Module()
        m.submodules.words = words = Memory(shape=self._shape, depth=2, init=[])
        wr, rd = words.write_port(), words.read_port(domain="comb")
        # The ports' addresses are the pointers: rd.addr the front item's word, wr.addr the word
        # the next item goes to.
        count = Signal(range(3))
        put, get = Signal(), Signal()
        m.d.comb += [
            put.eq(self.i_data.valid & self.i_data.ready),
            get.eq(self.o_data.valid & self.o_data.ready),
            wr.data.eq(self.i_data.payload), wr.en.eq(put),
            self.o_data.payload.eq(rd.data),
        ]
        after = count + put - get
        m.d.sync += [count.eq(after), self.o_data.valid.eq(after != 0)]
        # ready is a register: open while fewer than two items stay (reset: empty, open).
        full = Signal()
        m.d.sync += full.eq(after == 2)
        m.d.comb += self.i_data.ready.eq(~full)
        with m.If(put):
            m.d.sync += wr.addr.eq(~wr.addr)
        with m.If(get):
            m.d.sync += rd.addr.eq(~rd.addr)
        return m
