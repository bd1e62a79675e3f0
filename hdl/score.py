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
from .fixed import QFormat, round_shift, saturate

__all__ = ["ScoreScale", "qk_scale_layout", "score_layout", "MUL_SLICE_BITS", "FINE_SHIFT_BITS"]

#: Width of the unsigned low slices q.k is cut into, one multiplier each: the operand width of the
#: smallest target multiplier (iCE40 SB_MAC16, 16 x 16 unsigned), which ECP5's 18 x 18 signed
#: MULT18X18D takes as it is. No multiplier then needs an adder behind it in the same cycle.
MUL_SLICE_BITS = 16

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

    Pipeline stages: ``mul`` (q.k cut into :data:`MUL_SLICE_BITS`-bit slices, the low ones
    unsigned and the top one signed, each times ``mant`` in its own registered multiplier), ``sum``
    (the partial products shifted into place: the exact ``qk * mant``), ``shf`` (a floor shift by
    the part of ``shift`` above :data:`FINE_SHIFT_BITS` bits), ``rnd`` (``round_shift`` by the
    rest: a short shifter and the rounding incrementer) and the output register (saturation to the
    logit range).

    Stalls: the whole pipe advances together when ``~o_score.valid | o_score.ready`` and freezes
    otherwise; ``i_qk.ready`` is that same condition (combinational from ``o_score.ready``).

    Parameters
    ----------
    cfg : AttentionConfig
        ``qk_bits``, ``scale_bits``, ``score_shift_bits`` and the logit format size the unit.
    tag_shape : shape-like
        Shape of the tag carried from each input to its output (default 0: none).

    Members
    -------
    i_qk : ``In(stream.Signature(qk_scale_layout(cfg, tag_shape)))``
        q.k (``|qk| <= qk_max``, every value a DotProduct can give) with the score scale.
    o_score : ``Out(stream.Signature(score_layout(cfg, tag_shape)))``
        The logit, in order; ``valid`` and ``payload`` come from flip-flops.

    Latency: :attr:`latency` = 5 cycles from an input transfer to its output transfer.
    Throughput: one result per cycle, sustained.
    Numerics: ``qk * mant`` exact in ``scaled_qk_bits``; ``round_shift`` to nearest, ties toward
    +infinity (every shift from ``score_shift_max`` on, up to the field's largest, gives 0);
    saturated to ``logit_min .. logit_max``, never wrapped. Equals :func:`golden.score` bit for bit.
    """

    def __init__(self, cfg, *, tag_shape=0):
        _check_params(cfg, tag_shape)
        self._cfg       = cfg
        self._tag_shape = tag_shape
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
    def latency(self):
        """Cycles from an input transfer to its output transfer (no stalls): the ``mul``, ``sum``,
        ``shf`` and ``rnd`` registers, then the output register."""
        return 5

    def _slices(self):
        """``(offset, width, lo, hi)`` of each partial product ``qk[offset:offset+width] * mant``,
        with its exact range (``|qk| <= qk_max``); the top slice is the signed one."""
        cfg = self._cfg
        mant_max = (1 << cfg.scale_bits) - 1
        offsets = list(range(0, cfg.qk_bits, MUL_SLICE_BITS))
        slices = [(off, MUL_SLICE_BITS, 0, ((1 << MUL_SLICE_BITS) - 1) * mant_max)
                  for off in offsets[:-1]]
        top = offsets[-1]
        slices.append((top, cfg.qk_bits - top, (-cfg.qk_max >> top) * mant_max,
                       (cfg.qk_max >> top) * mant_max))
        return slices

    @staticmethod
    def _stage(m, advance, name, valid, **fields):
        """The registers of one pipeline stage, loaded when the pipe advances: ``<name>_valid``
        (reset) and ``<name>_<field>`` for each ``field=(value, shape)`` (data: no reset)."""
        regs = {"valid": Signal(name=f"{name}_valid")}
        regs.update({field: Signal(shape, name=f"{name}_{field}", reset_less=True)
                     for field, (_, shape) in fields.items()})
        with m.If(advance):
            m.d.sync += regs["valid"].eq(valid)
            m.d.sync += [regs[field].eq(value) for field, (value, _) in fields.items()]
        return regs

    def elaborate(self, platform):
        m   = Module()
        cfg = self._cfg
        inp, out = self.i_qk.payload, self.o_score
        prod_shape = signed(cfg.scaled_qk_bits)
        tag_shape  = self._tag_shape

        # --- flow control -------------------------------------------------------------------------
        # One enable for every register: the pipe advances exactly when it accepts an input, and
        # freezes while a result waits on o_score.
        m.d.comb += self.i_qk.ready.eq(~out.valid | out.ready)
        advance = self.i_qk.ready

        # --- mul: one multiplier per slice of q.k; the shift split in two -------------------------
        # round_shift(x, n) == round_shift(x >> k, n - k) for every 0 <= k < n (floor shifts
        # compose), so shf shifts by k, the multiple of 2**FINE_SHIFT_BITS below n, and rnd rounds
        # by the rest, 1 .. 2**FINE_SHIFT_BITS (0 when n is 0): two short shifters, not one long.
        slices = self._slices()
        parts = {}
        for i, (off, width, lo, hi) in enumerate(slices):
            piece = inp.qk[off:off + width]
            piece = piece.as_signed() if off + width == cfg.qk_bits else piece
            parts[f"part_{i}"] = (piece * inp.mant, QFormat.for_range(lo, hi).shape)
        shift = inp.shift
        below = Mux(shift == 0, 0, shift - 1)[:len(shift)]
        mul = self._stage(m, advance, "mul", self.i_qk.valid, **parts,
                          coarse=(below[FINE_SHIFT_BITS:], unsigned(len(shift) - FINE_SHIFT_BITS)),
                          fine=(Mux(shift == 0, 0, below[:FINE_SHIFT_BITS] + 1),
                                unsigned(FINE_SHIFT_BITS + 1)),
                          tag=(inp.tag, tag_shape))

        # --- sum: the partial products in place, the exact qk * mant --------------------------------
        placed = [mul[f"part_{i}"] << off for i, (off, _, _, _) in enumerate(slices)]
        summed = self._stage(m, advance, "sum", mul["valid"], prod=(sum(placed[1:], placed[0]), prod_shape),
                             coarse=(mul["coarse"], mul["coarse"].shape()),
                             fine=(mul["fine"], mul["fine"].shape()), tag=(mul["tag"], tag_shape))

        # --- shf: the coarse floor shift by whole multiples of 2**FINE_SHIFT_BITS ------------------
        coarse = Cat(C(0, FINE_SHIFT_BITS), summed["coarse"])
        shf = self._stage(m, advance, "shf", summed["valid"], x=(summed["prod"] >> coarse, prod_shape),
                          fine=(summed["fine"], summed["fine"].shape()), tag=(summed["tag"], tag_shape))

        # --- rnd: round to nearest (ties up) by the rest of the shift ------------------------------
        # |round_shift(x, n)| never exceeds the range of x, so the operand's width holds it.
        rnd = self._stage(m, advance, "rnd", shf["valid"],
                          s=(round_shift(shf["x"], shf["fine"]), prod_shape), tag=(shf["tag"], tag_shape))

        # --- out: saturate to the logit range ---------------------------------------------------------
        with m.If(advance):
            m.d.sync += [
                out.valid.eq(rnd["valid"]),
                out.payload.s.eq(saturate(rnd["s"], cfg.logit_min, cfg.logit_max)),
                out.payload.tag.eq(rnd["tag"]),
            ]

        return m
