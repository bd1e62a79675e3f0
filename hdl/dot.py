"""The dot-product MAC array: the exact q.k of one key, ``lanes`` products per cycle.

:class:`DotProduct` takes a key as beats of ``lanes`` (q, k) element pairs, multiplies each pair,
sums the products in a pipelined adder tree and accumulates the beats of a key until the one marked
``last``; then it emits the exact dot product with that beat's tag. Step 1 of ``docs/numerics.md``;
the reference is :func:`leanattn.sim.golden.dot`.
"""

from amaranth.hdl import Module, Mux, Shape, Signal, signed
from amaranth.lib import stream, wiring
from amaranth.lib.data import ArrayLayout, StructLayout
from amaranth.lib.wiring import In, Out

from .config import AttentionConfig, ceil_log2
from .fixed import QFormat

__all__ = ["DotProduct", "beat_layout", "qk_layout"]


def beat_layout(cfg, tag_shape=0):
    """One beat of a key: ``lanes`` query and key elements, the key's end, and a tag."""
    return StructLayout({
        "q":    ArrayLayout(signed(cfg.input_bits), cfg.lanes),
        "k":    ArrayLayout(signed(cfg.input_bits), cfg.lanes),
        "last": 1,                  # final beat of this key
        "tag":  tag_shape,          # carried to the result from the key's last beat
    })


def qk_layout(cfg, tag_shape=0):
    """One key's result: the exact q.k and the tag of its last beat."""
    return StructLayout({
        "qk":  signed(cfg.qk_bits),
        "tag": tag_shape,
    })


def _check_params(cfg, tag_shape):
    if not isinstance(cfg, AttentionConfig):
        raise TypeError(f"cfg must be an AttentionConfig, not {cfg!r}")
    try:
        Shape.cast(tag_shape)
    except TypeError:
        raise TypeError(f"tag_shape must be a shape-castable object, not {tag_shape!r}") from None


def _add_pairs(terms):
    """One adder-tree level: neighbours summed pairwise, an odd one out passed on. Terms are
    ``(value, lo, hi)`` with the exact range of the value."""
    pairs = [(a + b, a_lo + b_lo, a_hi + b_hi)
             for (a, a_lo, a_hi), (b, b_lo, b_hi) in zip(terms[0::2], terms[1::2])]
    return pairs + terms[len(pairs) * 2:]


class DotProduct(wiring.Component):
    """``lanes`` signed multipliers, an adder tree and a key accumulator.

    Beats of a key arrive on ``i_beat`` back to back; the unit does not count them (a key is
    normally ``head_dim // lanes`` beats), it accumulates until a beat with ``last`` set and then
    emits that key's q.k with the tag of its last beat. Pipeline stages: ``mul`` (the products,
    registered), ``add1``, ``add2``, ... (the adder tree, registered after every second level) and
    ``acc`` (the beat accumulator, one more adder, whose register is ``o_qk``'s payload).

    Stalls: the whole pipe advances together when ``~o_qk.valid | o_qk.ready`` and freezes
    otherwise; ``i_beat.ready`` is that same condition (combinational from ``o_qk.ready``).

    Parameters
    ----------
    cfg : AttentionConfig
        ``lanes``, ``input_bits`` and ``head_dim`` (through ``qk_bits``) size the unit.
    tag_shape : shape-like
        Shape of the tag carried from a key's last beat to its result (default 0: none).

    Members
    -------
    i_beat : ``In(stream.Signature(beat_layout(cfg, tag_shape)))``
        Beats of keys: ``lanes`` (q, k) pairs each, ``last`` on a key's final beat.
    o_qk : ``Out(stream.Signature(qk_layout(cfg, tag_shape)))``
        One q.k per key, in order; ``valid`` and ``payload`` come from flip-flops.

    Latency: :attr:`latency` cycles from the transfer of a key's last beat to the transfer of its
    result: ``1 + (ceil_log2(lanes) + 2) // 2`` (2 for 1 or 2 lanes, 3 for 3 to 8, 4 for 9 to 32).
    Throughput: one beat per cycle, sustained: one result every ``head_dim // lanes`` cycles (every
    cycle when ``head_dim == lanes``).
    Numerics: exact. Products ``signed(2 * input_bits)``, every tree register as wide as the
    exact range of its sum, the key's sum ``signed(qk_bits)``: exact for keys of up to
    ``head_dim`` elements (``|q.k| <= qk_max``); a key of more beats than ``head_dim // lanes`` may
    wrap.
    """

    def __init__(self, cfg, *, tag_shape=0):
        _check_params(cfg, tag_shape)
        self._cfg       = cfg
        self._tag_shape = tag_shape
        super().__init__({
            "i_beat": In(stream.Signature(beat_layout(cfg, tag_shape))),
            "o_qk":   Out(stream.Signature(qk_layout(cfg, tag_shape))),
        })

    @property
    def cfg(self):
        return self._cfg

    @property
    def tag_shape(self):
        return self._tag_shape

    @property
    def latency(self):
        """Cycles from the transfer of a key's last beat to the transfer of its result (no stalls):
        the product register, then one register per two adder levels, the accumulator being the
        last level of ``ceil_log2(lanes) + 1``."""
        return 1 + (ceil_log2(self._cfg.lanes) + 2) // 2

    def _register(self, m, advance, stage, ctl, terms, what):
        """Register the stage's ``(valid, last, tag)`` and terms (``what_0``, ``what_1``, ...), each
        as wide as its range needs; the registers load when the pipe advances."""
        regs = (Signal(name=f"{stage}_valid"),                   # only valid bits need a reset
                Signal(name=f"{stage}_last", reset_less=True),
                Signal(self._tag_shape, name=f"{stage}_tag", reset_less=True))
        out_terms = []
        with m.If(advance):
            m.d.sync += [reg.eq(value) for reg, value in zip(regs, ctl)]
            for i, (value, lo, hi) in enumerate(terms):
                reg = Signal(QFormat.for_range(lo, hi).shape, name=f"{stage}_{what}_{i}",
                             reset_less=True)
                m.d.sync += reg.eq(value)      # exact: the value lies in lo .. hi
                out_terms.append((reg, lo, hi))
        return regs, out_terms

    def elaborate(self, platform):
        m   = Module()
        cfg = self._cfg
        beat, out = self.i_beat.payload, self.o_qk

        # --- flow control -------------------------------------------------------------------------
        # One enable for every register: the pipe advances exactly when it accepts a beat, and
        # freezes while a result waits on o_qk.
        m.d.comb += self.i_beat.ready.eq(~out.valid | out.ready)
        advance = self.i_beat.ready

        # --- mul: lanes signed multipliers, registered ---------------------------------------------
        product_lo = cfg.input_min * cfg.input_max            # exact range of one product
        product_hi = cfg.input_min * cfg.input_min
        terms = [(beat.q[i] * beat.k[i], product_lo, product_hi) for i in range(cfg.lanes)]
        ctl, terms = self._register(m, advance, "mul", (self.i_beat.valid, beat.last, beat.tag),
                                    terms, "prod")

        # --- add1, add2, ...: the adder tree, a register after every second level -----------------
        levels = ceil_log2(cfg.lanes)
        for level in range(1, levels + 1):
            terms = _add_pairs(terms)
            if level % 2 == 0:
                ctl, terms = self._register(m, advance, f"add{level // 2}", ctl, terms, "sum")
        (tree, _, _), = terms

        # --- acc: the sum of a key's beats; its register is o_qk's payload --------------------------
        valid, last, tag = ctl
        acc_restart = Signal(init=1, name="acc_restart")       # the next beat starts a key
        with m.If(advance):
            m.d.sync += out.valid.eq(valid & last)
            with m.If(valid):
                m.d.sync += [
                    out.payload.qk.eq(Mux(acc_restart, 0, out.payload.qk) + tree),
                    out.payload.tag.eq(tag),
                    acc_restart.eq(last),
                ]

        return m
