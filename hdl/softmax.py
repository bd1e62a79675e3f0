"""The online-softmax accumulator of one core: logits and values in, partial states out.

:class:`OnlineSoftmax` chains three units with ``wiring.connect``:

* :class:`~leanattn.hdl.tilebuf.TileBuffer` -- holds each tile's logits until its maximum is known
  and replays them against the integer running max (the next tile fills meanwhile: the scores are
  double-buffered, so the PV pass of tile ``t`` overlaps the QK pass of tile ``t + 1``);
* :class:`~leanattn.hdl.exp2.Exp2` -- one weight ``2**(s - m)`` per key;
* :class:`~leanattn.hdl.pv.PVAccumulator` -- ``l`` and ``o``, rescaled once per tile, emitted per
  segment as partial beats.

Keys of several segments (heads) follow each other without draining: the tile buffer keeps
accepting the next segment's logits while the accumulator finishes the previous one.
"""

from amaranth.hdl import Module
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from .exp2 import Exp2
from .layouts import partial_layout
from .pv import PVAccumulator, v_layout
from .tilebuf import TileBuffer, key_tag_layout, score_layout

__all__ = ["OnlineSoftmax"]


class OnlineSoftmax(wiring.Component):
    """Online softmax over segments: ``(m, l, o)`` per segment, tile by tile.

    Parameters
    ----------
    cfg : AttentionConfig

    Members
    -------
    i_score : ``In(stream.Signature(score_layout(cfg)))``
        One logit per key (from the score unit), ``seg_last`` on each segment's last key.
    i_v : ``In(stream.Signature(v_layout(cfg)))``
        The value vectors of the same keys, ``head_dim // lanes`` beats each (the V read port).
    o_partial : ``Out(stream.Signature(partial_layout(cfg)))``
        ``head_dim // lanes`` beats per segment.

    Latency: a segment's first partial beat leaves :func:`~leanattn.hdl.pv.pv_latency` cycles
    after its last value beat; a tile's first weight is ready ``tile + 2 + Exp2.latency`` cycles after the
    tile's first logit arrived (the value beats of that tile may wait until then).
    Throughput: one value beat per cycle in steady state, across tiles and segments; each segment
    adds ``head_dim // lanes`` cycles for its partial. Stalls: every stream may stall any time.
    Numerics: bit-exact with :func:`leanattn.sim.golden.online_softmax` per segment.
    """

    def __init__(self, cfg):
        self._cfg = cfg
        super().__init__({
            "i_score":   In(stream.Signature(score_layout(cfg))),
            "i_v":       In(stream.Signature(v_layout(cfg))),
            "o_partial": Out(stream.Signature(partial_layout(cfg))),
        })

    def elaborate(self, platform):
        cfg = self._cfg
        m = Module()
        m.submodules.tiles = tiles = TileBuffer(cfg)
        m.submodules.exp2  = exp2  = Exp2(cfg, tag_shape=key_tag_layout(cfg))
        m.submodules.pv    = pv    = PVAccumulator(cfg)

        wiring.connect(m, wiring.flipped(self.i_score), tiles.i_score)
        wiring.connect(m, tiles.o_key, exp2.i_t)
        wiring.connect(m, exp2.o_w, pv.i_w)
        wiring.connect(m, wiring.flipped(self.i_v), pv.i_v)
        wiring.connect(m, pv.o_partial, wiring.flipped(self.o_partial))
        return m
