"""Score scaling: the base-2 logit of a key from its q.k and the head's score scale.

:class:`ScoreScale` computes ``s = sat(round_shift(qk * mant, shift))``, step 2 of
``docs/numerics.md``: the score scale ``mant * 2**-(shift + logit_frac_bits)`` folds the query and
key quantization scales, ``log2(e)`` and ``1 / sqrt(head_dim)``. The reference is
:func:`leanattn.sim.golden.score`.
"""

from amaranth.hdl import C, Cat, Module, Mux, Shape, Signal, signed, unsigned
from amaranth.lib import stream, wiring
from amaranth.lib.data import StructLayout
from amaranth.lib.wiring import In, Out

from .config import AttentionConfig
from .fixed import round_shift, saturate
from .slicemul import SlicedProducts

__all__ = ["ScoreScale", "qk_scale_layout", "score_layout", "FINE_SHIFT_BITS"]

#: The shift is applied in two stages (see ``elaborate``): ``rnd`` rounds by at most
#: ``2**FINE_SHIFT_BITS`` bits, ``shf`` takes the rest in whole multiples of that. A one-level
#: shifter is then all that precedes the rounding adder: on ECP5-85F the unit reaches 135-142 MHz
#: at the test configurations, limited by the multiplier (the whole shift before the adder: 81 MHz).
FINE_SHIFT_BITS = 1


def qk_scale_layout(cfg, tag_shape=0):
    """A key's q.k with its head's score scale ``mant * 2**-shift``, and a tag."""
    return StructLayout({
        "qk":    signed(cfg.qk_bits),
        "mant":  unsigned(cfg.scale_bits),
        "shift": unsigned(cfg.score_shift_bits),
        "tag":   tag_shape,
    })


def score_layout(cfg, tag_shape=0):
    """A key's logit (``logit_frac_bits`` fraction bits) with the tag of its input."""
    return StructLayout({
        "s":   signed(cfg.logit_bits),
        "tag": tag_shape,
    })


def _check_params(cfg, tag_shape):
    if not isinstance(cfg, AttentionConfig):
        raise TypeError(f"cfg must be an AttentionConfig, not {cfg!r}")
    try:
        Shape.cast(tag_shape)
    except TypeError:
        raise TypeError(f"tag_shape must be a shape-castable object, not {tag_shape!r}") from None


class ScoreScale(wiring.Component):
    """Multiply, round and saturate: one logit per q.k.

    Pipeline stages: ``load`` (only when :attr:`interval` > 1: the item, held while its slices go
    through the multipliers), ``mul`` (slices of q.k times ``mant``, see below, one per multiplier
    and cycle, each registered), ``sum`` (the partial products shifted into place and added: the
    exact ``qk * mant``), ``shf`` (a floor shift by the part of ``shift`` above
    :data:`FINE_SHIFT_BITS` bits), ``rnd`` (``round_shift`` by the rest: a short shifter and the
    rounding incrementer) and the output register (saturation to the logit range).

    Multipliers: q.k is cut into slices of at most ``cfg.dsp_bits`` bits (the operand width of the
    target's multipliers), unsigned below a signed top slice; each slice times ``mant`` (or times
    each ``dsp_bits``-bit slice of it, when ``scale_bits`` is wider) fits one hardware multiplier
    (:class:`~.slicemul.SlicedProducts`).
    A DotProduct delivers one q.k per ``cfg.beats_per_key`` cycles, so :attr:`multipliers` =
    ``ceil(slices / beats_per_key)`` multipliers take the slices over :attr:`interval` =
    ``ceil(slices / multipliers)`` cycles, most significant first, the ``sum`` register
    accumulating them. With ``interval == 1`` there is one multiplier per slice and no ``load``
    stage: the multipliers take the input directly and ``sum`` adds their products at once.

    Stalls: the whole pipe advances together when ``~o_score.valid | o_score.ready`` and freezes
    otherwise. ``i_qk.ready`` is that condition, and with ``interval > 1`` also requires the
    ``load`` stage to be free: empty, or in the last cycle of its item (combinational from
    ``o_score.ready`` and registers; low while an item is in the serial multiplier).

    Parameters
    ----------
    cfg : AttentionConfig
        ``qk_bits``, ``scale_bits``, ``score_shift_bits`` and the logit format size the unit;
        ``dsp_bits`` and ``beats_per_key`` its multipliers.
    tag_shape : shape-like
        Shape of the tag carried from each input to its output (default 0: none).

    Members
    -------
    i_qk : ``In(stream.Signature(qk_scale_layout(cfg, tag_shape)))``
        q.k (``|qk| <= qk_max``, every value a DotProduct can give) with the score scale.
    o_score : ``Out(stream.Signature(score_layout(cfg, tag_shape)))``
        The logit, in order; ``valid`` and ``payload`` come from flip-flops.
    products : SlicedProducts
        The plan of the multipliers: slices, and which multiplier takes which slice in which cycle.
    multipliers : int
        Hardware multipliers (``dsp_bits`` x ``dsp_bits``).
    interval : int
        Cycles between accepted inputs: at least this many, exactly this many when inputs are
        offered back to back (1: one per cycle).
    latency : int
        Cycles from an input transfer to its output transfer: 5 with ``interval == 1``, else
        ``5 + interval`` (the ``load`` register and ``interval - 1`` more cycles in ``mul``); 4
        and ``4 + interval`` with ``pipeline == "compact"`` (no ``rnd`` register: its logic feeds
        the output register).

    Latency: :attr:`latency` cycles, without stalls.
    Throughput: one result per :attr:`interval` cycles, sustained (inputs offered back to back are
    accepted exactly :attr:`interval` cycles apart).
    Numerics: ``qk * mant`` exact in ``scaled_qk_bits``; ``round_shift`` to nearest, ties toward
    +infinity (every shift from ``score_shift_max`` on, up to the field's largest, gives 0);
    saturated to ``logit_min .. logit_max``, never wrapped. Equals :func:`golden.score` bit for bit.
    """

    def __init__(self, cfg, *, tag_shape=0):
        _check_params(cfg, tag_shape)
        self._cfg       = cfg
        self._tag_shape = tag_shape
        self.products = SlicedProducts(x_range=(-cfg.qk_max, cfg.qk_max),
                                       y_range=(0, (1 << cfg.scale_bits) - 1),
                                       dsp_bits=cfg.dsp_bits, cycles=cfg.beats_per_key)
        super().__init__({
            "i_qk":    In(stream.Signature(qk_scale_layout(cfg, tag_shape))),
            "o_score": Out(stream.Signature(score_layout(cfg, tag_shape))),
        })

    @property
    def cfg(self):
        return self._cfg

    @property
    def tag_shape(self):
        return self._tag_shape

    @property
    def multipliers(self):
        """Hardware multipliers: ``ceil(slices / cfg.beats_per_key)``."""
        return self.products.multipliers

    @property
    def interval(self):
        """Cycles between accepted inputs (at least; exactly, back to back):
        ``ceil(slices / multipliers)``."""
        return self.products.phases

    @property
    def latency(self):
        """Cycles from an input transfer to its output transfer (no stalls): the ``mul``, ``sum``,
        ``shf`` and ``rnd`` (not compact) registers and the output register; with a serial multiplier also the
        ``load`` register and ``interval - 1`` more cycles of ``mul``."""
        stages = 4 if self._cfg.pipeline == "compact" else 5
        return stages if self.interval == 1 else stages + self.interval

    @staticmethod
    def _stage(m, advance, name, valid, registered=True, **fields):
        """The registers of one pipeline stage, loaded when the pipe advances: ``<name>_valid``
        (reset) and ``<name>_<field>`` for each ``field=(value, shape)`` (data: no reset). Not
        ``registered`` (a stage the compact pipeline leaves out): the values themselves."""
        if not registered:
            return {"valid": valid, **{field: value for field, (value, _) in fields.items()}}
        regs = {"valid": Signal(name=f"{name}_valid")}
        regs.update({field: Signal(shape, name=f"{name}_{field}", reset_less=True)
                     for field, (_, shape) in fields.items()})
        with m.If(advance):
            m.d.sync += regs["valid"].eq(valid)
            m.d.sync += [regs[field].eq(value) for field, (value, _) in fields.items()]
        return regs

    def _load(self, m, advance):
        """The ``load`` stage of a serial multiplier: ``(item, valid, phase)``, the item held from
        its input transfer until its last phase (``phase`` counts them, ``interval`` when empty)."""
        plan = self.products
        item  = Signal(qk_scale_layout(self._cfg, self._tag_shape), name="load", reset_less=True)
        phase = plan.counter(m, enable=advance, start=self.i_qk.valid & self.i_qk.ready,
                             name="load_phase")
        m.d.comb += self.i_qk.ready.eq(advance & (phase >= plan.phases - 1))
        with m.If(advance & self.i_qk.ready):
            m.d.sync += item.eq(self.i_qk.payload)
        return item, phase != plan.phases, phase

    def elaborate(self, platform):
        m   = Module()
        cfg = self._cfg
        out = self.o_score
        prod_shape = signed(cfg.scaled_qk_bits)
        tag_shape  = self._tag_shape
        plan = self.products

        # --- flow control -------------------------------------------------------------------------
        # One enable for every register: the pipe freezes while a result waits on o_score. With
        # one multiplier per slice it is i_qk.ready: the pipe advances exactly when it may accept.
        advance = self.i_qk.ready if plan.phases == 1 else Signal()
        m.d.comb += advance.eq(~out.valid | out.ready)

        # --- load: with a serial multiplier, the item stays for `interval` cycles ----------------
        if plan.phases == 1:
            inp, valid, phase = self.i_qk.payload, self.i_qk.valid, None
        else:
            inp, valid, phase = self._load(m, advance)

        # --- mul: the slices of q.k times mant; the shift split in two -----------------------------
        # round_shift(x, n) == round_shift(x >> k, n - k) for every 0 <= k < n (floor shifts
        # compose), so shf shifts by k, the multiple of 2**FINE_SHIFT_BITS below n, and rnd rounds
        # by the rest, 1 .. 2**FINE_SHIFT_BITS (0 when n is 0): two short shifters, not one long.
        parts, mul_phase = plan.multiply(m, enable=advance, phase=phase, xs=[inp.qk], y=inp.mant,
                                         name="mul")
        shift = inp.shift
        below = Mux(shift == 0, 0, shift - 1)[:len(shift)]
        mul = self._stage(m, advance, "mul", valid,
                          coarse=(below[FINE_SHIFT_BITS:], unsigned(len(shift) - FINE_SHIFT_BITS)),
                          fine=(Mux(shift == 0, 0, below[:FINE_SHIFT_BITS] + 1),
                                unsigned(FINE_SHIFT_BITS + 1)),
                          tag=(inp.tag, tag_shape))

        # --- sum: the partial products in place (accumulated over the phases), the exact qk * mant -
        (prod,) = plan.accumulate(m, enable=advance, parts=parts, mul_phase=mul_phase, names=["sum_prod"])
        summed = self._stage(m, advance, "sum", mul["valid"] & plan.last(mul_phase),
                             coarse=(mul["coarse"], mul["coarse"].shape()),
                             fine=(mul["fine"], mul["fine"].shape()), tag=(mul["tag"], tag_shape))

        # --- shf: the coarse floor shift by whole multiples of 2**FINE_SHIFT_BITS ------------------
        # (With the compact pipeline rnd is the out stage's logic.)
        full = cfg.pipeline == "full"
        coarse = Cat(C(0, FINE_SHIFT_BITS), summed["coarse"])
        shf = self._stage(m, advance, "shf", summed["valid"], x=(prod >> coarse, prod_shape),
                          fine=(summed["fine"], summed["fine"].shape()), tag=(summed["tag"], tag_shape))

        # --- rnd: round to nearest (ties up) by the rest of the shift ------------------------------
        # |round_shift(x, n)| never exceeds the range of x, so the operand's width holds it.
        rnd = self._stage(m, advance, "rnd", shf["valid"], full,
                          s=(round_shift(shf["x"], shf["fine"]), prod_shape), tag=(shf["tag"], tag_shape))

        # --- out: saturate to the logit range ---------------------------------------------------------
        with m.If(advance):
            m.d.sync += [
                out.valid.eq(rnd["valid"]),
                out.payload.s.eq(saturate(rnd["s"], cfg.logit_min, cfg.logit_max)),
                out.payload.tag.eq(rnd["tag"]),
            ]

        return m
