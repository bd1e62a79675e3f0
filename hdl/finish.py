"""From finished partials to the normalizer: packet arbitration and each head's output scale.

Finished heads reach the normalizer from ``cores + 1`` places -- every core (heads that sit in one
core) and the root of the reduction tree (cut heads) -- as packets of ``head_dim // lanes``
partial beats. :class:`PacketArbiter` interleaves whole packets, round robin; :class:`ScaleLookup`
adds the head's output scale from the descriptor memory's copy kept for it.
"""

from amaranth.hdl import Array, Module, Signal, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from .jobload import descriptor_write_layout
from .layouts import final_layout, partial_layout
from .pipeline import check_unit_args

__all__ = ["PacketArbiter", "ScaleLookup", "out_scale_layout"]


def out_scale_layout(cfg):
    """The output scale of one head."""
    return data.StructLayout({
        "out_mant":  unsigned(cfg.scale_bits),
        "out_shift": unsigned(cfg.out_shift_bits),
    })


class PacketArbiter(wiring.Component):
    """Round-robin merge of ``count`` packet streams into one; packets are never interleaved.

    Parameters
    ----------
    shape : layout with a ``last`` field
        Payload of every stream; ``last`` marks a packet's final beat.
    count : int
        Number of inputs (>= 1).
    registered_grant : bool
        Whether the grant is a register (``sel``) rather than decided from the inputs' ``valid``
        in the cycle it is used. With it no input's ``valid`` reaches the output registers: their
        data is the selected input's payload, loaded whenever the output advances, and each input's
        ``ready`` depends only on ``sel`` and the output. For a fast clock with far-apart inputs.

    Members
    -------
    i_<n> : ``In(stream.Signature(shape))``, ``n = 0 .. count-1``
    o_data : ``Out(stream.Signature(shape))``
        ``valid`` and ``payload`` are registers.

    Latency: 1 cycle. Throughput: one beat per cycle.

    Grant, combinational (the default): the input owning the packet under way; between packets the
    first input with a beat waiting after the one served last (which comes last), with no idle
    cycle. Registered: ``sel`` (0 after reset) is served whenever it has a beat waiting. It moves to
    the first input after it with a beat waiting (staying when there is none) at a packet's last
    beat, and when no packet is under way and ``sel`` has no beat waiting; an input that offers a
    packet while ``sel`` idles on another is served a cycle later than with the combinational grant.
    """

    def __init__(self, *, shape, count, registered_grant=False):
        if not isinstance(count, int) or count < 1:
            raise ValueError(f"count must be a positive integer, not {count!r}")
        if "last" not in getattr(shape, "members", {}):
            raise TypeError(f"shape must be a struct layout with a 'last' field, not {shape!r}")
        if not isinstance(registered_grant, bool):
            raise TypeError(f"registered_grant must be a bool, not {registered_grant!r}")
        self._shape, self._count, self._registered = shape, count, registered_grant
        members = {f"i_{n}": In(stream.Signature(shape)) for n in range(count)}
        members["o_data"] = Out(stream.Signature(shape))
        super().__init__(members)

    @property
    def registered_grant(self):
        """Whether the grant is a register."""
        return self._registered

    def elaborate(self, platform):
        m = Module()
        inputs = [getattr(self, f"i_{n}") for n in range(self._count)]
        if self._registered:
            self._elaborate_registered(m, inputs)
        else:
            self._elaborate_combinational(m, inputs)
        return m

    def _elaborate_combinational(self, m, inputs):
        held    = Signal(range(self._count))    # input owning the packet under way
        locked  = Signal()                      # a packet is under way

        # --- grant: the locked input, else the first waiting input after the last one served -----
        grant = Signal(range(self._count))
        m.d.comb += grant.eq(held)
        with m.If(~locked):
            with m.Switch(held):
                for h in range(self._count):
                    with m.Case(h):
                        # Later assignments win: the lowest priority first, held + 1 last.
                        for k in reversed(range(1, self._count + 1)):
                            n = (h + k) % self._count
                            with m.If(inputs[n].valid):
                                m.d.comb += grant.eq(n)

        valid, last, advance = self._transfer(m, inputs, grant, locked)
        with m.If(valid & advance):
            m.d.sync += held.eq(grant)

    def _elaborate_registered(self, m, inputs):
        sel     = Signal(range(self._count))    # the grant
        locked  = Signal()                      # a packet is under way
        valid, last, advance = self._transfer(m, inputs, sel, locked)

        # --- the grant moves on at a packet's end, or off an idle input between packets ----------
        after = self._next_waiting(m, inputs, sel, "after")
        with m.If((valid & advance & last) | (~locked & ~valid)):
            m.d.sync += sel.eq(after)

    def _transfer(self, m, inputs, grant, locked):
        """The output registers, loaded from input ``grant`` whenever the output advances;
        ``locked`` follows the packets. Returns ``(valid, last, advance)``: the granted input's
        ``valid`` and ``last``, and whether the output registers load."""
        out = self.o_data
        advance = Signal()
        m.d.comb += advance.eq(~out.valid | out.ready)
        valid, last = _select(inputs, grant, "valid"), _select(inputs, grant, "last")
        for n, port in enumerate(inputs):
            m.d.comb += port.ready.eq(advance & (grant == n))
        with m.If(advance):
            m.d.sync += out.valid.eq(valid)
            with m.Switch(grant):
                for n, port in enumerate(inputs):
                    with m.Case(n):
                        m.d.sync += out.payload.eq(port.payload)
            with m.If(valid):
                m.d.sync += locked.eq(~last)
        return valid, last, advance

    def _next_waiting(self, m, inputs, at, name):
        """The first input after ``at`` (a signal) with a beat waiting, else ``at``: a signal."""
        after = Signal(range(self._count), name=name)
        m.d.comb += after.eq(at)
        with m.Switch(at):
            for h in range(self._count):
                with m.Case(h):
                    # Later assignments win: the lowest priority first, at + 1 last.
                    for k in reversed(range(1, self._count)):
                        n = (h + k) % self._count
                        with m.If(inputs[n].valid):
                            m.d.comb += after.eq(n)
        return after


def _select(inputs, sel, field):
    """``valid`` (``field == "valid"``) or ``payload.last`` (``"last"``) of ``inputs[sel]``."""
    bits = [port.valid if field == "valid" else port.payload.last for port in inputs]
    return Array(bits)[sel] if len(bits) > 1 else bits[0]


class ScaleLookup(wiring.Component):
    """Adds each final beat's output scale, read from a copy of the descriptors kept for it.

    Members
    -------
    i_dwrite : ``In(stream.Signature(descriptor_write_layout(cfg)))``
        Descriptor writes (always ready); only the output scale is kept.
    i_partial : ``In(stream.Signature(partial_layout(cfg)))``
    o_final : ``Out(stream.Signature(final_layout(cfg)))``
        The beat with its head's ``out_mant`` and ``out_shift``; registers.

    Latency: 1 cycle (a synchronous read alongside the beat's register). Throughput: one beat per
    cycle; the whole stage freezes while ``o_final`` holds a beat that is not taken.
    """

    #: Cycles from an input transfer to the earliest output transfer of the same beat.
    latency = 1

    def __init__(self, cfg):
        check_unit_args(cfg, 0)
        self._cfg = cfg
        super().__init__({
            "i_dwrite":  In(stream.Signature(descriptor_write_layout(cfg))),
            "i_partial": In(stream.Signature(partial_layout(cfg))),
            "o_final":   Out(stream.Signature(final_layout(cfg))),
        })

    def elaborate(self, platform):
        cfg = self._cfg
        m = Module()
        m.submodules.mem = mem = Memory(shape=out_scale_layout(cfg), depth=cfg.max_heads, init=[])
        write, read = mem.write_port(), mem.read_port()
        desc = self.i_dwrite.payload.desc
        m.d.comb += [
            self.i_dwrite.ready.eq(1),
            write.en.eq(self.i_dwrite.valid),
            write.addr.eq(self.i_dwrite.payload.addr),
            write.data.out_mant.eq(desc.out_mant),
            write.data.out_shift.eq(desc.out_shift),
        ]

        # --- one stage: the beat's register and the read advance together -------------------------
        advance = Signal()
        m.d.comb += [
            advance.eq(~self.o_final.valid | self.o_final.ready),
            self.i_partial.ready.eq(advance),
            read.en.eq(advance),
            read.addr.eq(self.i_partial.payload.head),
            self.o_final.payload.out_mant.eq(read.data.out_mant),
            self.o_final.payload.out_shift.eq(read.data.out_shift),
        ]
        with m.If(advance):
            m.d.sync += [self.o_final.valid.eq(self.i_partial.valid),
                         self.o_final.payload.partial.eq(self.i_partial.payload)]
        return m

