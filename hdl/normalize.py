"""The output normalizer: a finished head's ``o / l``, times its output scale, as output integers.

:class:`Normalizer` is step 10 of ``docs/numerics.md``, beat by beat: the reciprocal of the beat's
``l`` (a :class:`~leanattn.hdl.recip.Reciprocal` submodule), the per-head factor
``round_shift(r * out_mant, recip_frac_bits)``, ``o`` aligned to ``exp_frac_bits`` fraction bits of
``o / l``, and the saturated, rounded product. It equals :func:`leanattn.sim.golden.normalize` bit
for bit.
"""

from amaranth.hdl import Module, Signal, signed, unsigned
from amaranth.lib import stream, wiring
from amaranth.lib.data import ArrayLayout, StructLayout
from amaranth.lib.wiring import In, Out

from .config import AttentionConfig
from .fixed import round_shift, saturate
from .layouts import final_layout, output_layout
from .recip import Reciprocal, _carry, recip_stages

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


class Normalizer(wiring.Component):
    """Output integers of finished heads, one beat of ``lanes`` outputs per cycle, no state.

    Each beat of a final state carries the head's ``l``, ``out_mant`` and ``out_shift``, so every
    beat is normalized on its own: the ``recip`` submodule (:class:`~leanattn.hdl.recip.Reciprocal`)
    computes ``(r, e)`` of ``l`` and carries the rest of the beat as its tag; three stages follow.

    Parameters
    ----------
    cfg : AttentionConfig
        Formats: ``acc_l_bits``, ``acc_o_bits``, ``exp_frac_bits`` (P), ``recip_frac_bits`` (Rr),
        ``norm_o_bits``, ``out_factor_bits``, ``out_product_bits``, ``output_bits``, ``lanes``.

    Members
    -------
    i_final : ``In(stream.Signature(final_layout(cfg)))``
        Beats of final states (``hdl.layouts.final_layout``). Contract: ``l >= 2**P`` (a non-empty
        state) and ``o`` as rescales and merges of real keys produce it (``|o|`` about
        ``2**(input_bits-1) * l``, ``docs/numerics.md``), so that ``o`` aligned to ``o / l`` fits
        ``norm_o_bits``. The partial's ``m`` and ``valid`` are not used.
    o_out : ``Out(stream.Signature(output_layout(cfg)))``
        Beats of output integers (``hdl.layouts.output_layout``); ``head`` and ``last`` are the
        input beat's.
    stages : tuple of str
        Names of the pipeline stages after the reciprocal's, in order: ``scale`` (the factor and
        the alignment), ``mul`` (the products), ``out`` (rounding and saturation).
    latency : int
        The reciprocal's latency (``len(recip_stages(cfg))``) plus ``len(stages)``: 7.

    Latency: :attr:`latency` cycles from an input beat to its output beat.
    Throughput: one beat per cycle. Two frozen pipes in a row: the reciprocal (``i_final.ready`` is
    its ``i_l.ready``) freezes while its output holds a beat the stages after it do not take, and
    those freeze while ``o_out`` holds a beat that is not taken (they advance on
    ``~o_out.valid | o_out.ready``). The ready paths are combinational; a stall lets the
    reciprocal fill a bubble at its output, nothing more.
    Numerics: ``out = sat(round_shift(round_shift(o, e - P) * round_shift(r * out_mant, Rr),
    P + out_shift))`` per lane, ``r, e`` the reciprocal of ``l``; signed ``output_bits``, rounding
    to nearest (ties up) at every shift, saturated (never wrapped). Within the contract the aligned
    ``o`` fits ``norm_o_bits``; outside it, it saturates there.
    """

    def __init__(self, cfg):
        if not isinstance(cfg, AttentionConfig):
            raise TypeError(f"cfg must be an AttentionConfig, not {cfg!r}")
        self._cfg = cfg
        self.stages = ("scale", "mul", "out")
        super().__init__({
            "i_final": In(stream.Signature(final_layout(cfg))),
            "o_out":   Out(stream.Signature(output_layout(cfg))),
        })

    @property
    def cfg(self):
        return self._cfg

    @property
    def latency(self):
        """Cycles from an input transfer to the output transfer of the same beat, without stalls."""
        return len(recip_stages(self._cfg)) + len(self.stages)

    def elaborate(self, platform):
        cfg = self._cfg
        frac = cfg.exp_frac_bits
        beat, out = self.i_final.payload, self.o_out.payload
        m = Module()

        # --- recip: (r, e) of l; the rest of the beat rides along as the tag ---------------------
        m.submodules.recip = recip = Reciprocal(cfg, tag_shape=_carried_layout(cfg))
        carried = recip.i_l.payload.tag
        m.d.comb += [
            recip.i_l.valid.eq(self.i_final.valid),
            self.i_final.ready.eq(recip.i_l.ready),
            recip.i_l.payload.l.eq(beat.partial.l),
            carried.head.eq(beat.partial.head),
            carried.o.eq(beat.partial.o),
            carried.last.eq(beat.partial.last),
            carried.out_mant.eq(beat.out_mant),
            carried.out_shift.eq(beat.out_shift),
        ]

        # --- control: the pipe after the reciprocal advances unless o_out holds a beat -----------
        # recip.o_recip.ready is this pipe's clock enable (and so the reciprocal's).
        advance = recip.o_recip.ready
        m.d.comb += advance.eq(~self.o_out.valid | self.o_out.ready)
        r, e, tag = recip.o_recip.payload.r, recip.o_recip.payload.e, recip.o_recip.payload.tag

        # --- valid, head, last: one register per stage, frozen with the pipe ---------------------
        _carry(m, recip.o_recip.valid, self.o_out.valid, self.stages, "valid", advance)
        _carry(m, tag.head, out.head, self.stages, "head", advance)
        _carry(m, tag.last, out.last, self.stages, "last", advance)

        # --- scale: the head's factor; o aligned to P fraction bits of o / l ---------------------
        # factor <= 2**scale_bits as r <= 2**Rr: it fits out_factor_bits. e >= P as l >= 1.0.
        lanes = range(cfg.lanes)
        norm_min, norm_max = -(1 << (cfg.norm_o_bits - 1)), (1 << (cfg.norm_o_bits - 1)) - 1
        scale_factor  = Signal(cfg.out_factor_bits)
        scale_aligned = [Signal(signed(cfg.norm_o_bits), name=f"scale_aligned_{k}") for k in lanes]
        scale_amount  = Signal(range(frac + cfg.out_shift_max + 1))      # P + out_shift
        with m.If(advance):
            m.d.sync += [
                scale_factor.eq(round_shift(r * tag.out_mant, cfg.recip_frac_bits)),
                scale_amount.eq(tag.out_shift + frac),
            ]
            m.d.sync += [scale_aligned[k].eq(saturate(round_shift(tag.o[k], (e - frac)[:len(e)]),
                                                      norm_min, norm_max)) for k in lanes]

        # --- mul: aligned o x factor, exact in out_product_bits ----------------------------------
        mul_product = [Signal(signed(cfg.out_product_bits), name=f"mul_product_{k}") for k in lanes]
        mul_amount  = Signal.like(scale_amount)
        with m.If(advance):
            m.d.sync += mul_amount.eq(scale_amount)
            m.d.sync += [mul_product[k].eq(scale_aligned[k] * scale_factor) for k in lanes]

        # --- out: round away P + out_shift fraction bits, saturate to output_bits ----------------
        with m.If(advance):
            m.d.sync += [out.out[k].eq(saturate(round_shift(mul_product[k], mul_amount),
                                                cfg.output_min, cfg.output_max)) for k in lanes]

        return m
