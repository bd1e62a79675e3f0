"""The output normalizer: a finished head's ``o / l``, times its output scale, as output integers.

:class:`Normalizer` is step 10 of ``docs/numerics.md``, beat by beat: the reciprocal of the
partial's ``l`` (a :class:`~leanattn.hdl.recip.Reciprocal` submodule), the per-head factor
``round_shift(r * out_mant, recip_frac_bits)``, ``o`` aligned to ``exp_frac_bits`` fraction bits of
``o / l``, and the saturated, rounded product. The reciprocal, the factor and the shifts are taken
from the first beat of each partial and held for its other beats. It equals
:func:`leanattn.sim.golden.normalize` bit for bit.
"""

from amaranth.hdl import Array, Module, Mux, Signal, signed, unsigned
from amaranth.lib import stream, wiring
from amaranth.lib.data import ArrayLayout, StructLayout
from amaranth.lib.wiring import In, Out

from .config import AttentionConfig, bits_for
from .dsp import registered_product
from .fixed import add_rounded, round_shift, saturate
from .layouts import final_layout, output_layout
from .pipeline import carry
from .recip import Reciprocal, recip_stages
from .slicemul import SlicedProducts

__all__ = ["Normalizer"]


def _carried_layout(cfg):
    """What travels through the reciprocal unit as its tag: the rest of a final beat."""
    return StructLayout({
        "head":      unsigned(cfg.head_index_bits),
        "o":         ArrayLayout(signed(cfg.acc_o_bits), cfg.lanes),
        "last":      1,
        "out_mant":  unsigned(cfg.scale_bits),
        "out_shift": unsigned(cfg.out_shift_bits),
    })


def _through(m, value, shape, stages, suffix, enable, *, reset_less=True):
    """``value`` through one register of ``shape`` per stage, ``<stage>_<suffix>``, loaded while
    ``enable``; returns the registers by stage."""
    regs = {}
    for stage in stages:
        reg = Signal(shape, name=f"{stage}_{suffix}", reset_less=reset_less)
        with m.If(enable):
            m.d.sync += reg.eq(value)
        regs[stage] = value = reg
    return regs


def _queue(m, fields, *, put, take, depth, name):
    """``fields`` (name: ``(value, shape)``) stored on ``put`` in the next of ``depth`` slots in
    turn, registers of ``shape``; returns the oldest stored entry's fields (name: value), read until
    ``take`` moves on to the next slot. In order, at most ``depth`` entries held: a beat's values
    while it is in a run of stages that holds at most ``depth`` beats at a time, in place of a
    register per stage."""
    slots = {key: [Signal(shape, name=f"{name}_{key}_{i}", reset_less=True) for i in range(depth)]
             for key, (_, shape) in fields.items()}
    fields = {key: value for key, (value, _) in fields.items()}
    if depth == 1:
        with m.If(put):
            m.d.sync += [slots[key][0].eq(value) for key, value in fields.items()]
        return {key: regs[0] for key, regs in slots.items()}
    put_at  = Signal(range(depth), name=f"{name}_put")
    take_at = Signal(range(depth), name=f"{name}_take")
    with m.If(put):
        m.d.sync += put_at.eq(Mux(put_at == depth - 1, 0, put_at + 1))
        for i in range(depth):
            with m.If(put_at == i):
                m.d.sync += [slots[key][i].eq(value) for key, value in fields.items()]
    with m.If(take):
        m.d.sync += take_at.eq(Mux(take_at == depth - 1, 0, take_at + 1))
    return {key: Array(regs)[take_at] for key, regs in slots.items()}


def _gate(m, *, enable, transfer, cycles, name):
    """Open (``1``) unless one of the last ``cycles - 1`` cycles with ``enable`` had a
    ``transfer``: at most one transfer per ``cycles`` enabled cycles."""
    wait = Signal(range(cycles), name=name)
    with m.If(transfer):
        m.d.sync += wait.eq(cycles - 1)
    with m.Elif(enable & (wait != 0)):
        m.d.sync += wait.eq(wait - 1)
    return wait == 0


class Normalizer(wiring.Component):
    """Output integers of finished heads, one beat of ``lanes`` outputs per ``norm_cycles`` cycles.

    Every beat passes through the ``recip`` submodule (:class:`~leanattn.hdl.recip.Reciprocal`),
    which computes ``(r, e)`` of the beat's ``l`` and carries the rest of the beat as its tag.
    Per partial: ``l``, ``out_mant`` and ``out_shift`` are the same on every beat of a partial (the
    core guarantees it), so the first beat of a partial (the first after reset, and every beat
    after one with ``last``) sets the partial's ``e``, output shift and factor
    ``round_shift(r * out_mant, recip_frac_bits)``, which are held for its other beats (whose own
    ``l``, ``out_mant`` and ``out_shift`` are not used). The factor's multiply is then off the
    per-beat path: with ``norm_cycles > 1`` it runs in the cycles a first beat spends in the
    ``fac`` stages.

    ``norm_cycles == 1``: stages ``align`` (``o`` shifted by ``e - P``; a first beat's
    ``r * out_mant``, its product register inside the multiplier block on the ECP5), ``scale``
    (the shift's rounding and saturation; the first beat's factor, rounded, into every lane
    multiplier's operand register), ``mul`` and ``sum`` (aligned ``o`` times the factor, one
    product per lane, from ``dsp_bits``-wide partial products: :attr:`lane_products` with one
    phase), ``round`` (the product shifted by ``P + out_shift``) and ``out`` (rounding and
    saturation); one beat per cycle. No stage holds both a barrel shift and a carry chain, or a
    multiply and a sum.

    ``norm_cycles > 1``: the products are built from ``dsp_bits``-wide slices
    (:class:`~leanattn.hdl.slicemul.SlicedProducts`) on multipliers shared over ``norm_cycles``
    cycles: :attr:`factor_products` for ``r * out_mant`` and :attr:`lane_products` for the
    ``lanes`` products aligned ``o`` x factor. Stages: ``scale`` (``2 * o`` floor-shifted by
    ``e - P``; a first beat loads the factor multiplier's operands), ``fac1`` .. ``facF`` (``F =
    factor phases + 1``: the beat waits while the factor's slices go through its multipliers; in
    ``facF`` a first beat's factor is complete and held), ``lanes`` (the aligned lanes, rounded
    and saturated, held as the lane multipliers' operands), ``mul1`` .. ``mulM`` (``M = lane
    phases + 1``: the lane products, complete in ``mulM``), ``round`` (the product floor-shifted
    by ``P - 1 + out_shift``) and ``out`` (the rounding add and the saturation). A beat enters
    ``recip`` at most once per ``norm_cycles`` cycles, and ``scale`` as well, so every multiplier
    is free again when the next beat reaches it. For the same reason ``scale`` .. ``facF`` hold at
    most ``ceil((F + 1) / norm_cycles)`` beats and the stages before ``out`` at most
    ``ceil((len(stages) - 1) / norm_cycles)``: a beat's aligned lanes and whether it is a first
    beat wait for ``lanes``, its output shift for ``round``, its head and last for ``out``, in that
    many slots taken in turn rather than in a register per stage (``o_out``'s
    payload means something only with ``valid``).

    Parameters
    ----------
    cfg : AttentionConfig
        Formats: ``acc_l_bits``, ``acc_o_bits``, ``exp_frac_bits`` (P), ``recip_frac_bits`` (Rr),
        ``norm_o_bits``, ``scale_bits``, ``output_bits``, ``lanes``; ``norm_cycles`` and
        ``dsp_bits`` for the multipliers.

    Members
    -------
    i_final : ``In(stream.Signature(final_layout(cfg)))``
        Beats of final states (``hdl.layouts.final_layout``), a partial's beats in a row, the last
        one with ``last``. Contract: ``l``, ``out_mant`` and ``out_shift`` the same on every beat
        of a partial; ``l >= 2**P`` (a non-empty state) and ``o`` as rescales and merges of real
        keys produce it (``|o|`` about ``2**(input_bits-1) * l``, ``docs/numerics.md``), so that
        ``o`` aligned to ``o / l`` fits ``norm_o_bits``. The partial's ``m`` and ``valid`` are not
        used.
    o_out : ``Out(stream.Signature(output_layout(cfg)))``
        Beats of output integers (``hdl.layouts.output_layout``); ``head`` and ``last`` are the
        input beat's.
    stages : tuple of str
        Names of the pipeline stages after the reciprocal's, in order (see above).
    lane_products : SlicedProducts
        The plan of the lanes' multipliers (aligned ``o`` x factor from ``dsp_bits``-wide slices;
        shared over ``norm_cycles`` cycles when that is above 1).
    factor_products : SlicedProducts or None
        With ``norm_cycles > 1``, the plan of the factor's multipliers (the two plans'
        ``multipliers`` add up to the unit's hardware multipliers); ``None`` otherwise.
    interval : int
        ``norm_cycles``: cycles between accepted beats, at least; exactly, when beats are offered
        back to back.
    latency : int
        The reciprocal's latency (``len(recip_stages(cfg))``: 6 with interpolation, 4 without;
        2 and 1 with ``pipeline == "compact"``) plus ``len(stages)``: 6 with ``norm_cycles ==
        1`` (12 in all at ``default``), ``6 + factor phases + lane phases`` otherwise (tiny: 11
        in all, compact; 14 with the full pipeline).

    Latency: :attr:`latency` cycles from an input beat to its output beat.
    Throughput: one beat per :attr:`interval` cycles, sustained (beats offered back to back are
    accepted exactly that far apart). Two frozen pipes in a row: the reciprocal (``i_final.ready``
    is its ``i_l.ready``, with ``norm_cycles > 1`` also gated to one beat per ``norm_cycles``
    cycles) freezes while its output holds a beat the stages after it do not take, and those
    freeze while ``o_out`` holds a beat that is not taken (they advance on
    ``~o_out.valid | o_out.ready``). The ready paths are combinational; a stall lets the
    reciprocal fill a bubble at its output, nothing more.
    Numerics: ``out = sat(round_shift(round_shift(o, e - P) * round_shift(r * out_mant, Rr),
    P + out_shift))`` per lane, ``r, e`` the reciprocal of ``l``; signed ``output_bits``, rounding
    to nearest (ties up) at every shift, saturated (never wrapped). Within the contract the aligned
    ``o`` fits ``norm_o_bits``; outside it, it saturates there. The factor is at most
    ``2**scale_bits - 1`` (``r <= 2**Rr``): products are exact.
    """

    def __init__(self, cfg):
        if not isinstance(cfg, AttentionConfig):
            raise TypeError(f"cfg must be an AttentionConfig, not {cfg!r}")
        self._cfg = cfg
        # r <= 2**Rr and out_mant < 2**scale_bits: the factor rounds to at most 2**scale_bits - 1.
        mant_max = (1 << cfg.scale_bits) - 1
        self._factor_max = ((1 << cfg.recip_frac_bits) * mant_max
                            + (1 << (cfg.recip_frac_bits - 1))) >> cfg.recip_frac_bits
        self.factor_products = None
        norm_top = 1 << (cfg.norm_o_bits - 1)
        self.lane_products = SlicedProducts(
            x_range=(-norm_top, norm_top - 1), y_range=(0, self._factor_max), count=cfg.lanes,
            dsp_bits=cfg.dsp_bits, cycles=cfg.norm_cycles)
        if cfg.norm_cycles == 1:
            self.stages = ("align", "scale", "mul", "sum", "round", "out")
        else:
            self.factor_products = SlicedProducts(
                x_range=(0, 1 << cfg.recip_frac_bits), y_range=(0, mant_max),
                dsp_bits=cfg.dsp_bits, cycles=cfg.norm_cycles)
            self.stages = ("scale",
                           *(f"fac{i}" for i in range(1, self.factor_products.phases + 2)),
                           "lanes",
                           *(f"mul{i}" for i in range(1, self.lane_products.phases + 2)),
                           "round", "out")
        super().__init__({
            "i_final": In(stream.Signature(final_layout(cfg))),
            "o_out":   Out(stream.Signature(output_layout(cfg))),
        })

    @property
    def cfg(self):
        return self._cfg

    @property
    def interval(self):
        """Cycles between accepted beats (at least; exactly, back to back): ``norm_cycles``."""
        return self._cfg.norm_cycles

    @property
    def latency(self):
        """Cycles from an input transfer to the output transfer of the same beat, without stalls."""
        return len(recip_stages(self._cfg)) + len(self.stages)

    def elaborate(self, platform):
        cfg = self._cfg
        frac, cycles = cfg.exp_frac_bits, cfg.norm_cycles
        beat, out = self.i_final.payload, self.o_out.payload
        m = Module()

        # --- recip: (r, e) of l; the rest of the beat rides along as the tag ---------------------
        # With norm_cycles > 1 at most one beat per norm_cycles cycles enters (counted in cycles
        # the pipe after the reciprocal advances, the pipe the multipliers are in).
        m.submodules.recip = recip = Reciprocal(cfg, tag_shape=_carried_layout(cfg))
        advance = Signal()
        m.d.comb += advance.eq(~self.o_out.valid | self.o_out.ready)
        accept = 1
        if cycles > 1:
            accept = _gate(m, enable=advance, transfer=self.i_final.valid & self.i_final.ready,
                           cycles=cycles, name="in_wait")
        carried = recip.i_l.payload.tag
        m.d.comb += [
            recip.i_l.valid.eq(self.i_final.valid & accept),
            self.i_final.ready.eq(recip.i_l.ready & accept),
            recip.i_l.payload.l.eq(beat.partial.l),
            carried.head.eq(beat.partial.head),
            carried.o.eq(beat.partial.o),
            carried.last.eq(beat.partial.last),
            carried.out_mant.eq(beat.out_mant),
            carried.out_shift.eq(beat.out_shift),
        ]

        # --- control: the pipe after the reciprocal advances unless o_out holds a beat -----------
        # A stall can let the reciprocal fill a bubble at its output, so beats may reach it closer
        # than they entered: with norm_cycles > 1 a second gate spaces them again for scale.
        recip_out = recip.o_recip
        enter = 1 if cycles == 1 else _gate(m, enable=advance, transfer=recip_out.valid & recip_out.ready,
                                            cycles=cycles, name="scale_wait")
        m.d.comb += recip_out.ready.eq(advance & enter)
        take = recip_out.valid & recip_out.ready
        tag = recip_out.payload.tag

        # --- valid, head, last: one register per stage, frozen with the pipe ---------------------
        valids = _through(m, recip_out.valid & enter, 1, self.stages[:-1], "valid", advance,
                          reset_less=False)
        carry(m, valids[self.stages[-2]], self.o_out.valid, self.stages[-1:], "valid", advance)
        if cycles == 1:
            carry(m, tag.head, out.head, self.stages, "head", advance)
            carry(m, tag.last, out.last, self.stages, "last", advance)

        # --- partial: a first beat sets e and the output shift; the other beats use them ---------
        first, e, shift = self._partial(m, take, recip_out.payload.e, tag)
        # P <= e < acc_l_bits as l >= 1.0: the shift takes the bits of e - P's range.
        align = (e - frac)[:bits_for(cfg.acc_l_bits - 1 - frac)]

        # --- the factor, the products, out --------------------------------------------------------
        if cycles == 1:
            self._parallel(m, platform, advance, take & first, recip_out.payload.r, tag, align,
                           shift + frac)
        else:
            # 2 * o floor-shifted by e - P: its rounding and saturation wait for the lanes stage.
            ys = [(tag.o[k] << 1) >> align for k in range(cfg.lanes)]
            self._serial(m, advance, valids, take, first, recip_out.payload.r, tag, ys, shift)
        return m

    def _partial(self, m, take, e, tag):
        """``(first, e, shift)``: whether the beat at the reciprocal's output starts a partial,
        and the partial's ``e`` and ``out_shift`` (the beat's own on a first beat, else held
        from its partial's first)."""
        first = Signal(init=1, name="first")       # the next beat starts a partial
        part_e = Signal.like(e, name="part_e")
        part_shift = Signal.like(tag.out_shift, name="part_shift")
        with m.If(take):
            m.d.sync += first.eq(tag.last)
            with m.If(first):
                m.d.sync += [part_e.eq(e), part_shift.eq(tag.out_shift)]
        return first, Mux(first, e, part_e), Mux(first, tag.out_shift, part_shift)

    def _aligned(self, y):
        """``round_shift(o, e - P)`` from ``y = (2 * o) >> (e - P)``, ``(y >> 1) + y[0]``,
        saturated to ``norm_o_bits`` (the stage after the barrel shift, in both paths)."""
        top = 1 << (self._cfg.norm_o_bits - 1)
        return saturate(add_rounded(0, y, 1), -top, top - 1)

    def _factor_shape(self):
        return unsigned(bits_for(self._factor_max))

    def _parallel(self, m, platform, advance, starts, r, tag, align, amount):
        """``norm_cycles == 1``: stages ``align``, ``scale``, ``mul``, ``sum``, ``round`` and
        ``out``, one beat per cycle. Each rounding shift is split as ``round_shift(x, n) ==
        (y >> 1) + y[0]`` with ``y = (2 * x) >> n``: the barrel shift in one stage, the rounding
        add (its increment the carry in) and the saturation in the next."""
        cfg = self._cfg
        lanes = range(cfg.lanes)
        out = self.o_out.payload

        # --- align: 2 * o floor-shifted by e - P; a first beat's r * out_mant --------------------
        # (The product register is the multiplier block's own on the ECP5: the reciprocal's
        # output reaches the block and nothing else in this cycle.)
        align_y      = [Signal(signed(cfg.acc_o_bits + 1), name=f"align_y_{k}") for k in lanes]
        align_amount = Signal.like(amount, name="align_amount")
        align_first  = Signal(name="align_first")
        with m.If(advance):
            m.d.sync += [align_amount.eq(amount), align_first.eq(starts)]
            m.d.sync += [align_y[k].eq((tag.o[k] << 1) >> align) for k in lanes]
        align_prod = registered_product(m, platform, a=r, b=tag.out_mant, p_en=starts, name="align_prod")

        # --- scale: the aligned o, rounded and saturated; a first beat's factor, held ------------
        # The factor's register is the multipliers' operand register (inside each multiplier
        # block on the ECP5, so no one register drives them all); the aligned lanes stay fabric
        # registers, so the rounding add and the saturation end in a flip-flop, not in a block's
        # input.
        scale_aligned = [Signal(signed(cfg.norm_o_bits), name=f"scale_aligned_{k}") for k in lanes]
        scale_amount  = Signal.like(amount, name="scale_amount")
        with m.If(advance):
            m.d.sync += scale_amount.eq(align_amount)
            m.d.sync += [scale_aligned[k].eq(self._aligned(align_y[k])) for k in lanes]

        # --- mul, sum: aligned o x factor, exact, from dsp_bits-wide slices ------------------------
        lane = self.lane_products
        parts = lane.registered_multiply(m, platform, xs=scale_aligned, x_enable=None,
                                         y=round_shift(align_prod, cfg.recip_frac_bits),
                                         y_enable=advance & align_first, enable=advance, name="mul")
        products = lane.accumulate(m, enable=advance, parts=parts, mul_phase=None,
                                   names=[f"sum_product_{k}" for k in lanes])
        mul_amount, sum_amount = Signal.like(scale_amount), Signal.like(scale_amount)
        with m.If(advance):
            m.d.sync += [mul_amount.eq(scale_amount), sum_amount.eq(mul_amount)]

        # --- round: 2 * product floor-shifted by P + out_shift -------------------------------------
        round_z = [Signal(signed(len(products[0]) + 1), name=f"round_z_{k}") for k in lanes]
        with m.If(advance):
            m.d.sync += [round_z[k].eq((products[k] << 1) >> sum_amount) for k in lanes]

        # --- out: the rounding add, saturated to output_bits --------------------------------------
        with m.If(advance):
            m.d.sync += [out.out[k].eq(saturate(add_rounded(0, round_z[k], 1), cfg.output_min,
                                                cfg.output_max)) for k in lanes]

    def _serial(self, m, advance, valids, take, first, r, tag, ys, shift):
        """``norm_cycles > 1``: the factor and the lane products on shared multipliers.

        Beats enter ``scale`` at least ``norm_cycles`` advancing cycles apart, so a run of ``n``
        stages holds at most ``ceil(n / norm_cycles)`` of them: what a beat takes from ``scale``
        to a later stage waits in that many slots (:func:`_queue`), not in a register per stage.
        """
        cfg = self._cfg
        lanes = range(cfg.lanes)
        out = self.o_out.payload
        fac, lane = self.factor_products, self.lane_products
        fac_stages = self.stages[:self.stages.index("lanes")]          # scale, fac1 .. facF
        fac_last, out_from = fac_stages[-1], self.stages[-2]
        starts = take & first
        slots = lambda count: -(-count // cfg.norm_cycles)

        # --- scale .. facF: the beat waits while a first beat's factor is multiplied -------------
        # The output shift, head and last wait for out (from scale to the stage before it); first and
        # the lanes' shifted o (``ys``: 2 * o floor-shifted by e - P) for lanes (from scale to facF).
        waiting = _queue(m, {"first": (first, 1),
                             **{f"y_{k}": (ys[k], ys[k].shape()) for k in lanes}},
                         put=take, take=advance & valids[fac_last], depth=slots(len(fac_stages)),
                         name="fac_q")
        ending  = _queue(m, {"shift": (shift, shift.shape()), "head": (tag.head, len(tag.head)),
                             "last": (tag.last, 1)},
                         put=take, take=advance & valids[out_from], depth=slots(len(self.stages) - 1),
                         name="out_q")
        with m.If(advance):
            m.d.sync += [out.head.eq(ending["head"]), out.last.eq(ending["last"])]

        # --- factor: r * out_mant of a first beat, from scale on, on the factor's multipliers ----
        fac_r    = Signal(unsigned(cfg.recip_bits), name="fac_r", reset_less=True)
        fac_mant = Signal(unsigned(cfg.scale_bits), name="fac_mant", reset_less=True)
        with m.If(starts):
            m.d.sync += [fac_r.eq(r), fac_mant.eq(tag.out_mant)]
        phase = fac.counter(m, enable=advance, start=starts, name="fac_phase")
        parts, mul_phase = fac.multiply(m, enable=advance, phase=phase, xs=[fac_r], y=fac_mant,
                                        name="fmul")
        (product,) = fac.accumulate(m, enable=advance, parts=parts, mul_phase=mul_phase,
                                    names=["facc_prod"])

        # --- lanes: complete in facF, a first beat's factor is held; the lanes are held ----------
        part_factor   = Signal(self._factor_shape(), name="part_factor", reset_less=True)
        lanes_aligned = [Signal(signed(cfg.norm_o_bits), name=f"lanes_aligned_{k}", reset_less=True)
                         for k in lanes]
        with m.If(advance & valids[fac_last]):
            # round_shift(o, e - P) == (y >> 1) + y[0]: the rounding add and the saturation here,
            # the barrel shift before the queue.
            m.d.sync += [lanes_aligned[k].eq(self._aligned(waiting[f"y_{k}"])) for k in lanes]
            with m.If(waiting["first"]):
                m.d.sync += part_factor.eq(round_shift(product, cfg.recip_frac_bits))

        # --- mul1 .. mulM: aligned o x factor on the lane multipliers ----------------------------
        phase = lane.counter(m, enable=advance, start=valids[fac_last], name="lanes_phase")
        parts, mul_phase = lane.multiply(m, enable=advance, phase=phase, xs=lanes_aligned,
                                         y=part_factor, name="lmul")
        products = lane.accumulate(m, enable=advance, parts=parts, mul_phase=mul_phase,
                                   names=[f"lacc_prod_{k}" for k in lanes])

        # --- round, out: round away P + out_shift fraction bits, saturate to output_bits ----------
        # round_shift(x, P + s) == (z >> 1) + z[0] with z = (x >> (P - 1)) >> s (floor shifts
        # compose): the constant part of the shift costs nothing, the barrel shifter is the
        # out_shift's bits wide over P - 1 fewer bits, and the rounding add and the saturation
        # are the next stage's. Beats are at least two stages apart, so the queue's oldest entry
        # is the beat leaving mulM, whose output shift is read here.
        round_z = [Signal(signed(len(products[k]) - cfg.exp_frac_bits + 1), name=f"round_z_{k}",
                          reset_less=True) for k in lanes]
        with m.If(advance):
            m.d.sync += [round_z[k].eq((products[k] >> (cfg.exp_frac_bits - 1)) >> ending["shift"])
                         for k in lanes]
            m.d.sync += [out.out[k].eq(saturate(add_rounded(0, round_z[k], 1), cfg.output_min,
                                                cfg.output_max)) for k in lanes]
