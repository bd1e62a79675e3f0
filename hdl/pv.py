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

from .dsp import registered_product
from .fixed import add_rounded
from .layouts import partial_layout
from .tilebuf import key_tag_layout

__all__ = ["PVAccumulator", "pv_latency", "weight_layout", "v_layout"]


def pv_latency(cfg):
    """Cycles from a segment's last value beat to its first partial beat (:class:`PVAccumulator`):
    3, or 4 with one beat per key, where the drain's first read waits for the last write."""
    return 3 if cfg.beats_per_key > 1 else 4


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

    Latency: :attr:`latency` cycles from a segment's last value beat to its first partial beat.
    Throughput: one value beat per cycle (``lanes`` multiply-accumulates); the ``head_dim // lanes``
    partial beats of a segment take as many cycles, during which no value beat is taken.
    Stalls: value beats wait for their key's weight; the partial output holds while not ready.
    Pipeline: ``mul`` (the products, registered, while the beat's word is read), ``shift`` (the old
    word restarted or rescaled by the tile's max difference, registered with one bit below the
    rounding point), ``add`` (the product plus the rounded word, written back). A word is
    read-modified-written over three cycles; with fewer than three beats per key the next access to
    it can come sooner and takes the newer value from the write path (:meth:`_forward`).
    Storage: the ``o`` accumulators are a memory of ``head_dim // lanes`` words (block RAM or
    distributed RAM); ``l`` is a register.
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

    @property
    def latency(self):
        """Cycles from a segment's last value beat to its first partial beat (:func:`pv_latency`)."""
        return pv_latency(self._cfg)

    def elaborate(self, platform):
        cfg = self._cfg
        m = Module()
        word_layout = data.ArrayLayout(signed(cfg.acc_o_bits), cfg.lanes)
        # The o accumulators: one memory word of `lanes` accumulators per beat position (block RAM
        # on an FPGA). Each beat reads its word and writes it back two cycles later.
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

        # -- mul: products w * v, registered, while the beat's word is read -------------------------
        # Each lane's multiplier holds its own copy of the key's weight (inside the multiplier
        # block on the ECP5, loaded with the key register), so no one register drives them all.
        mul_valid = Signal()
        mul_beat  = Signal.like(beat)
        mul_key   = Signal(weight_layout(cfg))
        mul_prod  = [registered_product(m, platform, a=self.i_w.payload.w,
                                        a_en=self.i_w.valid & self.i_w.ready, b=self.i_v.payload[i],
                                        p_en=fire, name=f"mul_prod_{i}")
                     for i in range(cfg.lanes)]
        # The shift stage's choice, decided here from the key's flags: the old word's shift (the
        # tile's max difference on a later tile's first key, else 0) and whether it restarts.
        mul_shift = Signal.like(key.tag.delta)
        mul_zero  = Signal()
        m.d.sync += mul_valid.eq(fire)
        with m.If(fire):
            m.d.sync += [mul_beat.eq(beat), mul_key.eq(key), mul_zero.eq(key.tag.first_seg),
                         mul_shift.eq(Mux(key.tag.first_tile & ~key.tag.first_seg, key.tag.delta, 0))]

        # -- the add stage's registers (its valid bit and beat are the write port's) ----------------
        add_valid = wr.en
        add_beat  = wr.addr
        add_prod  = Signal(data.ArrayLayout(signed(cfg.pv_product_bits), cfg.lanes))
        add_w     = Signal.like(key.w)
        add_y     = Signal(data.ArrayLayout(signed(cfg.acc_o_bits + 1), cfg.lanes))
        add_yl    = Signal(unsigned(cfg.acc_l_bits + 1))

        # -- add: product + round_shift(old, delta), the rounding bit as the carry in; write back -----
        sum_l = add_rounded(add_w, add_yl, 1)
        m.d.comb += [wr.data[i].eq(add_rounded(add_prod[i], add_y[i], 1)) for i in range(cfg.lanes)]
        with m.If(add_valid & (add_beat == 0)):
            m.d.sync += acc_l.eq(sum_l)

        # -- shift: the old word, restarted or rescaled, with one bit below the rounding point ---------
        # y = 2 * old floor-shifted by delta on a tile's first key, 2 * old otherwise, 0 on a
        # segment's first key; round_shift(old, delta) == (y >> 1) + y[0] for every delta.
        old, old_l = self._forward(m, rd.data, wr, mul_beat, acc_l, sum_l, add_valid)
        old_word = data.View(word_layout, old)

        def shifted(old):
            return Mux(mul_zero, 0, (old << 1) >> mul_shift)

        m.d.sync += add_valid.eq(mul_valid)
        with m.If(mul_valid):
            m.d.sync += [add_y[i].eq(shifted(old_word[i])) for i in range(cfg.lanes)]
            m.d.sync += [add_prod[i].eq(mul_prod[i]) for i in range(cfg.lanes)]
            m.d.sync += [add_beat.eq(mul_beat), add_w.eq(mul_key.w), add_yl.eq(shifted(old_l))]

        # -- drain: after the segment's last beat is accumulated, read its words out --------------
        # The first read may go as soon as the last beat left the shift stage: the add stage then
        # writes the last word while the first is read (the same word with one beat per key, so
        # there the read waits for the write).
        busy = (mul_valid | add_valid) if beats == 1 else mul_valid
        self._drain(m, rd, acc_l, key, beat, fire, key_done, busy, draining)
        return m

    def _forward(self, m, word, wr, beat, acc_l, sum_l, add_valid):
        """The shift stage's old word and old ``l``, with the writes the memory read missed.

        The word was read the cycle before, so it misses the writes of that cycle and of this one.
        With three beats per key or more, the next access to a word comes after both. With two or
        fewer, a beat's word can be the one written the cycle before (kept in a register). With one,
        it can also be the one the add stage writes now (and ``l`` the one it adds now): taken
        combinationally, so the accumulation loop is one cycle there.
        """
        beats = self._cfg.beats_per_key
        if beats > 2:
            return word, acc_l
        fwd_valid = Signal()
        fwd_beat  = Signal.like(beat)
        fwd_word  = Signal.like(word)
        m.d.sync += [fwd_valid.eq(wr.en), fwd_beat.eq(wr.addr), fwd_word.eq(wr.data)]
        word = Mux(fwd_valid & (fwd_beat == beat), fwd_word, word)
        if beats == 1:
            return Mux(add_valid, wr.data, word), Mux(add_valid, sum_l, acc_l)
        return word, acc_l

    def _drain(self, m, rd, acc_l, key, beat, fire, key_done, busy, draining):
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
        read      = draining & ~busy & advance & (issued != beats)
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
