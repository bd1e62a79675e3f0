"""The PV accumulator: weights times values into the running (l, o) of a segment.

:class:`PVAccumulator` is the back half of the online softmax. Each key brings its exp2 weight and
the flags of :func:`leanattn.hdl.tilebuf.key_tag_layout`; its value vector arrives separately as
``head_dim // lanes`` beats of ``lanes`` elements (the V read port). Beat ``b`` of a key updates
accumulator word ``b`` (``lanes`` accumulators):

* first key of a segment: ``o = w * v`` (a fresh state);
* first key of a later tile: ``o = round_shift(o, delta) + w * v`` (the once-per-tile rescale);
* any other key: ``o = o + w * v``;

and ``l`` follows the same rule with ``w`` once per key. After the last key of a segment the state
leaves as ``head_dim // lanes`` partial beats (:func:`leanattn.hdl.layouts.partial_layout`).
"""

from amaranth.hdl import Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from .fixed import round_shift
from .layouts import partial_layout
from .tilebuf import key_tag_layout

__all__ = ["PVAccumulator", "weight_layout", "v_layout"]


def weight_layout(cfg):
    """One key's exp2 weight with its tag (the exp2 unit's output)."""
    return data.StructLayout({"w": unsigned(cfg.weight_bits), "tag": key_tag_layout(cfg)})


def v_layout(cfg):
    """One beat of a value vector: ``lanes`` elements."""
    return data.ArrayLayout(signed(cfg.input_bits), cfg.lanes)


class PVAccumulator(wiring.Component):
    """Accumulates ``w * v`` per segment, rescaling once per tile, and emits partial states.

    Parameters
    ----------
    cfg : AttentionConfig

    Members
    -------
    i_w : ``In(stream.Signature(weight_layout(cfg)))``
        One weight per key, in key order.
    i_v : ``In(stream.Signature(v_layout(cfg)))``
        ``head_dim // lanes`` beats per key, in key order.
    o_partial : ``Out(stream.Signature(partial_layout(cfg)))``
        ``head_dim // lanes`` beats per segment, after its last key.

    Latency: the first partial beat of a segment leaves 3 cycles after its last value beat arrived.
    Throughput: one value beat per cycle (``lanes`` multiply-accumulates); the ``head_dim // lanes``
    partial beats of a segment take as many cycles, during which no value beat is taken.
    Stalls: value beats wait for their key's weight; the partial output holds while not ready.
    Storage: the ``o`` accumulators are a memory of ``head_dim // lanes`` words (block RAM), read
    and written back once per beat; ``l`` is a register.
    Numerics: exact products (``pv_product_bits``) and sums (``acc_l_bits``, ``acc_o_bits``); the
    rescale is ``round_shift`` (nearest, ties up), as :func:`leanattn.sim.golden.online_softmax`.
    """

    def __init__(self, cfg):
        self._cfg = cfg
        super().__init__({
            "i_w":       In(stream.Signature(weight_layout(cfg))),
            "i_v":       In(stream.Signature(v_layout(cfg))),
            "o_partial": Out(stream.Signature(partial_layout(cfg))),
        })

    #: Cycles from a segment's last value beat to its first partial beat (accumulate, read).
    latency = 3

    def elaborate(self, platform):
        cfg = self._cfg
        m = Module()
        word_layout = data.ArrayLayout(signed(cfg.acc_o_bits), cfg.lanes)
        # The o accumulators: one memory word of `lanes` accumulators per beat position (block RAM
        # on an FPGA). Each beat reads its word and writes it back a cycle later.
        # (At least two words, so that the address has a bit even for one beat per key.)
        m.submodules.acc = acc = Memory(shape=word_layout, depth=max(2, cfg.beats_per_key), init=[])
        rd, wr = acc.read_port(), acc.write_port()
        acc_l = Signal(unsigned(cfg.acc_l_bits))

        # -- key register: the weight and flags of the key whose value beats are arriving ------------
        beats     = cfg.beats_per_key
        key_valid = Signal()
        key       = Signal(weight_layout(cfg))
        beat      = Signal(range(max(2, beats)))  # (one bit even for one beat per key)
        draining  = Signal()                 # a segment's last beat went in: emit before more keys
        last_beat = beat == beats - 1
        fire      = key_valid & self.i_v.valid & ~draining
        key_done  = fire & last_beat
        m.d.comb += [
            self.i_v.ready.eq(key_valid & ~draining),
            self.i_w.ready.eq((~key_valid | (key_done & ~key.tag.last_seg)) & ~draining),
        ]
        with m.If(self.i_w.valid & self.i_w.ready):
            m.d.sync += [key_valid.eq(1), key.eq(self.i_w.payload)]
        with m.Elif(key_done):
            m.d.sync += key_valid.eq(0)
        with m.If(fire):
            m.d.sync += beat.eq(Mux(last_beat, 0, beat + 1))

        # -- stage 1: products w * v, registered, while the beat's word is read -----------------------
        # The write port's address and enable are this stage's beat number and valid bit.
        mul_prod = Signal(data.ArrayLayout(signed(cfg.pv_product_bits), cfg.lanes))
        mul_key  = Signal(weight_layout(cfg))
        m.d.sync += [wr.en.eq(fire)]
        with m.If(fire):
            m.d.sync += [mul_prod[i].eq(key.w * self.i_v.payload[i]) for i in range(cfg.lanes)]
            m.d.sync += [wr.addr.eq(beat), mul_key.eq(key)]

        # -- stage 2: accumulate (rescale on a tile's first key, restart on a segment's first) --------
        old_word = rd.data
        if beats == 1:
            # Every beat reads the word the previous beat is writing: forward it.
            fwd_valid = Signal()
            fwd_word  = Signal(word_layout)
            m.d.sync += fwd_valid.eq(wr.en)
            with m.If(wr.en):
                m.d.sync += fwd_word.eq(wr.data)
            old_word = data.View(word_layout, Mux(fwd_valid, fwd_word, rd.data))
        tag = mul_key.tag
        rescale = tag.first_tile & ~tag.first_seg
        for i in range(cfg.lanes):
            old = Mux(rescale, round_shift(old_word[i], tag.delta), old_word[i])
            m.d.comb += wr.data[i].eq(Mux(tag.first_seg, 0, old) + mul_prod[i])
        with m.If(wr.en & (wr.addr == 0)):
            old_l = Mux(rescale, round_shift(acc_l, tag.delta), acc_l)
            m.d.sync += acc_l.eq(Mux(tag.first_seg, 0, old_l) + mul_key.w)

        # -- drain: after the segment's last beat is accumulated, read its words out --------------
        self._drain(m, rd, acc_l, key, beat, fire, key_done, wr.en, draining)
        return m

    def _drain(self, m, rd, acc_l, key, beat, fire, key_done, writing, draining):
        cfg = self._cfg
        beats = cfg.beats_per_key
        head     = Signal.like(key.tag.head)
        run_max  = Signal.like(key.tag.m)
        with m.If(key_done & key.tag.last_seg):
            m.d.sync += [draining.eq(1), head.eq(key.tag.head), run_max.eq(key.tag.m)]

        # The read port serves the beats while accumulating and the drain's reads after; its
        # output register is the partial's payload and holds while the output stalls.
        read_beat = Signal(range(max(2, beats)))      # next word to read out
        issued    = Signal(range(beats + 1))          # words read out so far
        out_last  = Signal()
        advance   = ~self.o_partial.valid | self.o_partial.ready
        read      = draining & ~writing & advance & (issued != beats)
        m.d.comb += [
            rd.addr.eq(Mux(draining, read_beat, beat)),
            rd.en.eq(Mux(draining, advance, fire)),
        ]
        with m.If(read):
            m.d.sync += [read_beat.eq(Mux(read_beat == beats - 1, 0, read_beat + 1)),
                         issued.eq(issued + 1), out_last.eq(issued == beats - 1)]
        with m.If(advance):
            m.d.sync += self.o_partial.valid.eq(read)

        out = self.o_partial.payload
        m.d.comb += [
            out.head.eq(head),
            out.valid.eq(1),
            out.m.eq(run_max),
            out.l.eq(acc_l),
            out.o.eq(rd.data),
            out.last.eq(out_last),
        ]
        with m.If(self.o_partial.valid & self.o_partial.ready & out_last):
            m.d.sync += [draining.eq(0), issued.eq(0)]
