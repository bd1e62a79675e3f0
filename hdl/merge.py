"""The partial merge unit: the reduction operator of the tree, one beat per cycle.

:class:`Merge` combines two partial softmax states of one head, beat by beat, into one:
``m = max(m_a, m_b)``, ``l = round_shift(l_a, m - m_a) + round_shift(l_b, m - m_b)`` and the same
for every ``o`` lane (``docs/numerics.md``, step 8; :func:`leanattn.sim.golden.merge` bit for bit).
The integer running max makes both alignments pure shifts: no multiplier.
"""

from amaranth.hdl import Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from .config import AttentionConfig, bits_for
from .fixed import round_shift
from .layouts import partial_layout

__all__ = ["Merge"]


class Merge(wiring.Component):
    """Merge of two partial states, one beat of each into one beat out (a join).

    A transfer takes one beat from ``i_a`` and one from ``i_b`` at the same clock edge, never one
    without the other. If one side is empty (``valid == 0``) the other passes unchanged (both
    empty: ``i_b``'s beat); otherwise both are aligned to the larger max and added. ``head`` is
    ``i_a``'s when ``i_a`` is valid, else ``i_b``'s; ``last`` is ``i_a``'s.

    Pipeline, one register per stage. The alignment uses ``round_shift(x, n) ==
    round_shift((2 * x) >> n, 1)`` for every ``n >= 0``: an exact floor shift of ``x`` with one more
    bit below, then the one rounding step of :func:`leanattn.hdl.fixed.round_shift`. Floor shifts
    compose exactly, so the barrel shifter splits across two stages:

    * ``align``: compare the maxima; each side's shift ``n`` (its distance to the larger max),
      clamped to :attr:`zero_shift`. An empty side gets ``zero_shift``, which drops it exactly.
    * ``coarse``: ``(2 * x) >> c``, ``c`` = ``n`` with its low :attr:`fine_shift_bits` cleared.
    * ``fine``: ``>> (n - c)`` (the low bits of ``n``), then ``round_shift(., 1)``.
    * ``add``: the two sums, into the output register.

    No stage holds more than half the shifter's levels, and the one with the rounding carry chain
    has the smaller half: 124 MHz on an ECP5-85F at the default preset (nextpnr-ecp5, out of
    context), where one stage with the whole shifter reached 73 MHz.

    Parameters
    ----------
    cfg : AttentionConfig
        Gives the beat layout (``partial_layout(cfg)``: ``lanes`` accumulators of ``acc_o_bits``,
        ``l`` of ``acc_l_bits``, ``m`` of ``max_bits``).

    Members
    -------
    i_a : ``In(stream.Signature(partial_layout(cfg)))``
        First partial, beat by beat. ``ready`` needs ``i_b.valid`` (a join) and a free pipe.
    i_b : ``In(stream.Signature(partial_layout(cfg)))``
        Second partial, the same number of beats. ``ready`` needs ``i_a.valid`` and a free pipe.
    o_partial : ``Out(stream.Signature(partial_layout(cfg)))``
        The merged partial; ``valid`` and ``payload`` are registers.

    Latency: 4 cycles (:attr:`latency`). The whole pipe freezes while ``o_partial`` holds a beat
    that is not taken: every stage advances when ``~o_partial.valid | o_partial.ready``.
    Throughput: 1 beat per cycle, sustained, while both inputs are valid and the output is ready.
    Numerics: ``round_shift`` (nearest, ties toward +inf) of each side by its distance to the
    larger max, then an exact sum. Not saturated: the sums fit ``acc_l_bits`` / ``acc_o_bits``
    because the two partials cover disjoint keys of one head (``docs/numerics.md``, Widths), the
    golden model's checked precondition.
    """

    def __init__(self, cfg):
        if not isinstance(cfg, AttentionConfig):
            raise TypeError(f"cfg must be an AttentionConfig, not {cfg!r}")
        self._cfg = cfg
        layout = partial_layout(cfg)
        super().__init__({
            "i_a":       In(stream.Signature(layout)),
            "i_b":       In(stream.Signature(layout)),
            "o_partial": Out(stream.Signature(layout)),
        })

    @property
    def cfg(self):
        """The configuration the unit was built for."""
        return self._cfg

    @property
    def latency(self):
        """Cycles from an input transfer to the output transfer of the merged beat (no stalls):
        one per stage, ``align``, ``coarse``, ``fine``, ``add``."""
        return 4

    @property
    def zero_shift(self):
        """Smallest right shift that gives exactly 0 for both accumulators: ``round_shift`` of an
        unsigned ``l`` is 0 from its width + 1 on, of a signed ``o`` from its width on."""
        return max(self._cfg.acc_l_bits + 1, self._cfg.acc_o_bits)

    @property
    def fine_shift_bits(self):
        """Low bits of the shift amount applied by the ``fine`` stage: the smaller half, since that
        stage also holds the rounding increment."""
        return bits_for(self.zero_shift) // 2

    def elaborate(self, platform):
        m = Module()
        cfg = self._cfg
        a, b, out = self.i_a, self.i_b, self.o_partial
        meta  = data.StructLayout({"head": unsigned(cfg.head_index_bits), "valid": 1,
                                   "m": signed(cfg.max_bits), "last": 1})
        acc   = data.StructLayout({"l": unsigned(cfg.acc_l_bits),
                                   "o": data.ArrayLayout(signed(cfg.acc_o_bits), cfg.lanes)})
        # The accumulators with one more bit below the rounding point (2 * x, floor-shifted).
        acc2  = data.StructLayout({"l": unsigned(cfg.acc_l_bits + 1),
                                   "o": data.ArrayLayout(signed(cfg.acc_o_bits + 1), cfg.lanes)})
        fine  = self.fine_shift_bits

        # --- flow control: every stage advances together; a join on the inputs --------------------
        advance = Signal()
        m.d.comb += [
            advance.eq(~out.valid | out.ready),
            a.ready.eq(advance & b.valid),
            b.ready.eq(advance & a.valid),
        ]

        # --- align: the larger max and each side's shift --------------------------------------------
        align_valid, align_meta = Signal(), Signal(meta)
        align_shift = {s: Signal(range(self.zero_shift + 1), name=f"align_shift_{s}") for s in "ab"}
        align_acc   = {s: Signal(acc, name=f"align_acc_{s}") for s in "ab"}
        align_next  = self._align(m, a.payload, b.payload, align_meta, align_shift)
        with m.If(advance):
            m.d.sync += [align_valid.eq(a.valid & b.valid), *align_next]
            for s, beat in (("a", a.payload), ("b", b.payload)):
                m.d.sync += [align_acc[s].l.eq(beat.l), align_acc[s].o.eq(beat.o)]

        # --- coarse: 2 * x floor-shifted by the high bits of n ---------------------------------------
        coarse_valid, coarse_meta = Signal(), Signal(meta)
        coarse_shift = {s: Signal(fine, name=f"coarse_shift_{s}") for s in "ab"}    # n's low bits
        coarse_acc   = {s: Signal(acc2, name=f"coarse_acc_{s}") for s in "ab"}
        with m.If(advance):
            m.d.sync += [coarse_valid.eq(align_valid), coarse_meta.eq(align_meta)]
            for s in "ab":
                n = align_shift[s]
                m.d.sync += [coarse_shift[s].eq(n[:fine]),
                             *self._each(coarse_acc[s], align_acc[s],
                                         lambda x, n=n: (x << 1) >> (n[fine:] << fine))]

        # --- fine: the low bits of n, then round_shift by 1 (the result fits the accumulator) -------
        fine_valid, fine_meta = Signal(), Signal(meta)
        fine_acc = {s: Signal(acc, name=f"fine_acc_{s}") for s in "ab"}
        with m.If(advance):
            m.d.sync += [fine_valid.eq(coarse_valid), fine_meta.eq(coarse_meta)]
            for s in "ab":
                m.d.sync += self._each(fine_acc[s], coarse_acc[s],
                                       lambda x, s=s: round_shift(x >> coarse_shift[s], 1))

        # --- add: the exact sums, into the output register -----------------------------------------
        with m.If(advance):
            m.d.sync += [
                out.valid.eq(fine_valid),
                out.payload.head.eq(fine_meta.head),
                out.payload.valid.eq(fine_meta.valid),
                out.payload.m.eq(fine_meta.m),
                out.payload.last.eq(fine_meta.last),
                out.payload.l.eq(fine_acc["a"].l + fine_acc["b"].l),
            ]
            for lane in range(cfg.lanes):
                m.d.sync += out.payload.o[lane].eq(fine_acc["a"].o[lane] + fine_acc["b"].o[lane])

        return m

    def _align(self, m, a, b, meta, shift):
        """The ``align`` stage: compares the maxima (combinational, into ``m``) and returns the
        register updates of the beat's metadata and of both shift amounts."""
        zero   = self.zero_shift
        gap    = Signal(signed(self._cfg.max_bits + 1), name="align_gap")   # m_a - m_b
        a_wins = Signal(name="align_a_wins")   # a's max is the larger (or equal): b shifts, a not
        m.d.comb += [gap.eq(a.m - b.m), a_wins.eq(gap >= 0)]
        clamp  = lambda diff: Mux(diff > zero, zero, diff)
        return [
            meta.head.eq(Mux(a.valid, a.head, b.head)),
            meta.last.eq(a.last),
            # An empty a: the beat is b (empty or not); an empty b: the beat is a.
            meta.valid.eq(a.valid | b.valid),
            meta.m.eq(Mux(a.valid & (a_wins | ~b.valid), a.m, b.m)),
            shift["a"].eq(Mux(~a.valid, zero, Mux(~b.valid | a_wins, 0, clamp(-gap)))),
            shift["b"].eq(Mux(~b.valid & a.valid, zero, Mux(~a.valid | ~a_wins, 0, clamp(gap)))),
        ]

    def _each(self, dst, src, fn):
        """``dst = fn(src)`` for ``l`` and every ``o`` lane of an accumulator struct."""
        return [dst.l.eq(fn(src.l)),
                *(dst.o[lane].eq(fn(src.o[lane])) for lane in range(self._cfg.lanes))]
