"""The partial merge unit: the reduction operator of the tree, one beat per cycle.

:class:`Merge` combines two partial softmax states of one head, beat by beat, into one:
``m = max(m_a, m_b)``, ``l = round_shift(l_a, m - m_a) + round_shift(l_b, m - m_b)`` and the same
for every ``o`` lane (``docs/numerics.md``, step 8; :func:`leanattn.sim.golden.merge` bit for bit).
The integer running max makes both alignments pure shifts: no multiplier.
"""

from amaranth.hdl import Cat, Module, Mux, Shape, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from .config import AttentionConfig, bits_for
from .fixed import add_rounded
from .layouts import partial_layout, partial_meta_layout

__all__ = ["Merge", "merge_stages"]


def merge_stages(cfg):
    """The merge unit's registered stages at ``cfg``, in order (one register each): all four
    with ``pipeline == "full"``; only ``add`` with ``compact`` (the other three are then its
    logic, from the inputs on)."""
    if cfg.pipeline == "compact":
        return ("add",)
    return ("align", "coarse", "fine", "add")


class Merge(wiring.Component):
    """Merge of two partial states, one beat of each into one beat out (a join).

    A transfer takes one beat from ``i_a`` and one from ``i_b`` at the same clock edge, never one
    without the other. If one side is empty (``valid == 0``) the other passes unchanged (both
    empty: ``i_b``'s beat); otherwise both are aligned to the larger max and added. ``head`` is
    ``i_a``'s when ``i_a`` is valid, else ``i_b``'s; ``last`` is ``i_a``'s.

    Pipeline, one register per stage (with ``cfg.pipeline == "compact"``, only ``add``'s:
    :func:`merge_stages`). Only one side ever shifts: the side with the larger max
    (``hi``; ``i_a`` on equal maxima) has shift 0, which is ``x`` itself, so it passes unchanged
    and only the other side (``lo``) goes through the barrel shifter, one per field. An empty side
    is always ``lo``, shifted by :attr:`zero_shift`, which drops it exactly (both empty: ``hi`` is
    ``i_b``). The alignment uses ``round_shift(x, n) == round_shift((2 * x) >> n, 1)`` for every
    ``n >= 0``: an exact floor shift of ``x`` with one more bit below, then the one rounding step
    of :func:`leanattn.hdl.fixed.round_shift`. Floor shifts compose exactly, so the shifter splits
    across two stages. Stages:

    * ``align``: compare the maxima: which side is ``hi``, and ``lo``'s shift ``n`` (its distance
      to the larger max), clamped to :attr:`zero_shift`; both accumulators registered as they are.
    * ``coarse``: route the accumulators to ``hi`` and ``lo`` (the select is a register, so its
      fan-out to every multiplexer follows no logic); ``y = (2 * lo) >> c``, ``c`` = ``n`` with
      its low :attr:`fine_shift_bits` cleared.
    * ``fine``: ``y >>= n - c`` (the low bits of ``n``).
    * ``add``: ``hi + round_shift(y, 1)``, as ``hi + (y >> 1) + y[0]``: the rounding increment
      is the carry in of the sum. Into the output register.

    The accumulators are delayed by one register per stage. No stage holds more than half the shifter's
    levels; the carry chains are those of the ``align`` stage (the maxima's difference and the
    clamp) and the sums. The ``align`` stage starts from the inputs: a user feeds them from
    registers (a tree node, :class:`~leanattn.hdl.tree.TreeNode`, from its ``take`` registers
    through one multiplexer).

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

    Latency: 4 cycles, 1 compact (:attr:`latency`). The whole pipe freezes while ``o_partial`` holds a beat
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
        one per registered stage (:func:`merge_stages`)."""
        return len(merge_stages(self._cfg))

    @property
    def zero_shift(self):
        """Smallest right shift that gives exactly 0 for both accumulators: ``round_shift`` of an
        unsigned ``l`` is 0 from its width + 1 on, of a signed ``o`` from its width on."""
        return max(self._cfg.acc_l_bits + 1, self._cfg.acc_o_bits)

    @property
    def fine_shift_bits(self):
        """Low bits of the shift amount applied by the ``fine`` stage: half of them (the smaller
        half for an odd count)."""
        return bits_for(self.zero_shift) // 2

    def elaborate(self, platform):
        m = Module()
        cfg = self._cfg
        a, b, out = self.i_a, self.i_b, self.o_partial
        meta  = partial_meta_layout(cfg)
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
        stage = _Stages(m, merge_stages(cfg), advance)

        # --- align: the larger max, which side passes (hi) and which shifts (lo), lo's shift ------
        align_meta, align_shift, align_a_hi = self._align(m, stage, a.payload, b.payload, meta)
        align_valid = stage.copy("align", "valid", 1, a.valid & b.valid)
        align_a = stage.copy("align", "a", acc, Cat(a.payload.l, a.payload.o))   # the layout of acc
        align_b = stage.copy("align", "b", acc, Cat(b.payload.l, b.payload.o))

        # --- coarse: hi and lo routed; 2 * lo floor-shifted by the high bits of n -----------------
        # (the select is a register in the full pipeline, so its fan-out to every multiplexer
        # follows no logic)
        coarse_valid = stage.copy("coarse", "valid", 1, align_valid)
        coarse_meta  = stage.copy("coarse", "meta", meta, align_meta)
        coarse_shift = stage.copy("coarse", "shift", fine, align_shift[:fine])    # n's low bits
        coarse_hi    = stage.logic("coarse", "hi", acc, Mux(align_a_hi, align_a, align_b))
        align_lo = Signal(acc)
        m.d.comb += align_lo.eq(Mux(align_a_hi, align_b, align_a))
        coarse_lo = stage.each("coarse", "lo", acc2, align_lo,
                               lambda x: (x << 1) >> (align_shift[fine:] << fine))

        # --- fine: lo floor-shifted by the low bits of n; hi delayed ------------------------------
        fine_valid = stage.copy("fine", "valid", 1, coarse_valid)
        fine_meta  = stage.copy("fine", "meta", meta, coarse_meta)
        fine_hi    = stage.copy("fine", "hi", acc, coarse_hi)
        fine_lo    = stage.each("fine", "lo", acc2, coarse_lo, lambda x: x >> coarse_shift)

        # --- add: hi + round_shift(lo, 1), into the output register -------------------------------
        with m.If(advance):
            m.d.sync += [
                out.valid.eq(fine_valid),
                out.payload.head.eq(fine_meta.head),
                out.payload.valid.eq(fine_meta.valid),
                out.payload.m.eq(fine_meta.m),
                out.payload.last.eq(fine_meta.last),
                out.payload.l.eq(add_rounded(fine_hi.l, fine_lo.l, 1)),
            ]
            for lane in range(cfg.lanes):
                m.d.sync += out.payload.o[lane].eq(
                    add_rounded(fine_hi.o[lane], fine_lo.o[lane], 1))

        return m

    def _align(self, m, stage, a, b, meta):
        """The ``align`` stage: compares the maxima; returns the beat's metadata, ``lo``'s shift
        amount and ``a_hi`` (``i_a`` passes and ``i_b`` shifts)."""
        zero   = self.zero_shift
        gap    = Signal(signed(self._cfg.max_bits + 1), name="align_gap")   # m_a - m_b
        a_wins = Signal(name="align_a_wins")   # a's max is the larger (or equal)
        a_pass = Signal(name="align_a_pass")   # a passes, b shifts: a valid and (a wins or b empty)
        m.d.comb += [gap.eq(a.m - b.m), a_wins.eq(gap >= 0),
                     a_pass.eq(a.valid & (a_wins | ~b.valid))]
        dist   = Mux(a_wins, gap, b.m - a.m)   # m_hi - m_lo when both are valid
        fields = Signal(meta, name="align_next")
        m.d.comb += [
            fields.head.eq(Mux(a.valid, a.head, b.head)),
            fields.last.eq(a.last),
            # An empty a: the beat is b (empty or not); an empty b: the beat is a.
            fields.valid.eq(a.valid | b.valid),
            fields.m.eq(Mux(a_pass, a.m, b.m)),
        ]
        # An empty side is always lo, and zero_shift drops it exactly. (dist is in 0 .. zero
        # where it is taken: its low bits are the amount.)
        amount = Shape.cast(range(zero + 1)).width
        shift = Mux(~(a.valid & b.valid) | (dist > zero), zero, dist[:amount])
        return (stage.copy("align", "meta", meta, fields),
                stage.logic("align", "shift", range(zero + 1), shift),
                stage.copy("align", "a_hi", 1, a_pass))


class _Stages:
    """The merge pipe's stages: a value of a registered stage is a register loaded while the pipe
    advances; in a stage that is not registered (``pipeline == "compact"``) a copy is the value
    itself and logic is a combinational signal, so no name merely aliases another."""

    def __init__(self, m, registered, advance):
        self.m, self.registered, self.advance = m, registered, advance

    def _register(self, stage, name, shape, value):
        reg = Signal(shape, name=f"{stage}_{name}")
        with self.m.If(self.advance):
            self.m.d.sync += reg.eq(value)
        return reg

    def copy(self, stage, name, shape, value):
        """``value`` unchanged: registered, or ``value`` itself."""
        if stage in self.registered:
            return self._register(stage, name, shape, value)
        return value

    def logic(self, stage, name, shape, value):
        """``value`` computed in this stage: registered, or a combinational signal."""
        if stage in self.registered:
            return self._register(stage, name, shape, value)
        sig = Signal(shape, name=f"{stage}_{name}")
        self.m.d.comb += sig.eq(value)
        return sig

    def each(self, stage, name, layout, src, fn):
        """``fn`` of ``l`` and of every ``o`` lane of an accumulator struct, into ``layout``."""
        dst = Signal(layout, name=f"{stage}_{name}")
        assigns = [dst.l.eq(fn(src.l)), *(dst.o[lane].eq(fn(src.o[lane])) for lane in range(len(src.o)))]
        if stage in self.registered:
            with self.m.If(self.advance):
                self.m.d.sync += assigns
        else:
            self.m.d.comb += assigns
        return dst
