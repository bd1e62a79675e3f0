"""The tile buffer: logits of one tile wait here for the tile's maximum, while the next tile fills.

:class:`TileBuffer` is the front half of the online softmax. Logits arrive one per key from the
score unit, tagged with their head and whether the key ends its segment. The buffer counts tiles of
``cfg.tile`` keys from each segment's first key (the last tile of a segment may be short), keeps the
tile's maximum as logits stream in, and once a tile is complete replays its logits relative to the
new integer running max ``m_new = max(m, floor(max s))``: ``t = s - m_new * 2**F``, the argument of
the exp2 unit. Replay of tile ``t`` overlaps the arrival of tile ``t + 1`` (the logit memory holds
four tiles), which is how the PV pass of one tile runs while the QK pass of the next is under way.
"""

from amaranth.hdl import Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from .config import bits_for, ceil_log2
from .ring import ring_for

__all__ = ["TileBuffer", "score_layout", "key_tag_layout", "key_layout"]

#: Tiles the logit memory holds: one being replayed, one filling, and slack so that the filling
#: side never waits for the replay of a tile to finish before it may start the next.
TILES_BUFFERED = 4


def score_layout(cfg):
    """One logit from the score unit."""
    return data.StructLayout({
        "s":        signed(cfg.logit_bits),
        "seg_last": 1,                              # the last key of its segment
        "head":     unsigned(cfg.head_index_bits),
    })


def key_tag_layout(cfg):
    """What travels with each key from the tile buffer, through exp2, to the PV accumulator."""
    return data.StructLayout({
        "head":       unsigned(cfg.head_index_bits),
        "m":          signed(cfg.max_bits),          # running max after this key's tile
        "delta":      unsigned(cfg.shift_diff_bits),  # rise of the running max at this tile
        "first_tile": 1,                             # first key of a tile: rescale by delta
        "first_seg":  1,                             # first key of a segment: start afresh
        "last_seg":   1,                             # last key of a segment: emit the partial
    })


def key_layout(cfg):
    """One exp2 argument with its tag."""
    return data.StructLayout({"t": signed(cfg.exp_in_bits), "tag": key_tag_layout(cfg)})


def _tile_layout(cfg):
    """A completed tile waiting for replay."""
    return data.StructLayout({
        "max":       signed(cfg.max_bits),          # floor of the tile's largest logit
        "count":     unsigned(bits_for(cfg.tile)),
        "first_seg": 1,
        "last_seg":  1,
        "head":      unsigned(cfg.head_index_bits),
    })


class TileBuffer(wiring.Component):
    """Buffers logits per tile and replays them as exp2 arguments against the running max.

    Parameters
    ----------
    cfg : AttentionConfig

    Members
    -------
    i_score : ``In(stream.Signature(score_layout(cfg)))``
        Logits in key order; ``seg_last`` marks the last key of each segment.
    o_key : ``Out(stream.Signature(key_layout(cfg)))``
        One exp2 argument per key, in the same order, with ``key_tag_layout`` flags.

    Latency: a tile's first key leaves :attr:`latency` (2) cycles after the tile's last logit.
    Throughput: one logit in and one key out per cycle; ``i_score`` stalls only when four tiles are
    buffered. Stalls: the replay side freezes while ``o_key`` is not ready.
    Numerics: exact. ``m_new = max(m_run, floor(max s))`` (``floor(max s)`` for a segment's first
    tile), ``delta = m_new - m_run`` (0 at a segment's first tile), ``t = s - m_new * 2**F``.
    """

    #: Cycles from the transfer of a tile's last logit to the transfer of its first key.
    latency = 2

    def __init__(self, cfg):
        self._cfg = cfg
        super().__init__({
            "i_score": In(stream.Signature(score_layout(cfg))),
            "o_key":   Out(stream.Signature(key_layout(cfg))),
        })

    def elaborate(self, platform):
        cfg = self._cfg
        m = Module()
        depth = TILES_BUFFERED * cfg.tile
        ptr_bits = ceil_log2(depth)

        m.submodules.logits = logits = Memory(shape=signed(cfg.logit_bits), depth=depth, init=[])
        used = Signal(range(depth + 1))                 # logits written and not yet replayed
        wrote, replayed = Signal(), Signal()
        m.d.sync += used.eq(used + wrote - replayed)
        # used < depth, a register set a cycle ahead (no compare between the count and i_score.ready)
        full = Signal(name="logits_full")
        with m.If(wrote & ~replayed):
            m.d.sync += full.eq(used == depth - 1)
        with m.If(replayed & ~wrote):
            m.d.sync += full.eq(0)

        # Completed tiles waiting for replay: a ring of records (at most one per buffered tile),
        # its oldest at the head.
        tiles = ring_for(cfg, m, _tile_layout(cfg), TILES_BUFFERED, "records")
        self._fill(m, logits.write_port(), tiles, full, wrote, ptr_bits)
        self._replay(m, logits.read_port(), tiles, replayed, ptr_bits)
        return m

    def _fill(self, m, wr, tiles, full, wrote, ptr_bits):
        """Write logits, track the tile's max and length, close tiles into the tile FIFO."""
        cfg = self._cfg
        fill_ptr   = Signal(ptr_bits)
        fill_count = Signal(range(cfg.tile + 1))        # keys of the open tile so far
        fill_max   = Signal(signed(cfg.logit_bits))
        fill_first = Signal(init=1)                     # the open tile starts a segment
        fill_end   = Signal(init=cfg.tile == 1)         # fill_count == tile - 1, a register
        score = self.i_score.payload
        count = fill_count + 1
        tile_max = Mux(fill_count == 0, score.s, Mux(score.s > fill_max, score.s, fill_max))
        closes = score.seg_last | fill_end

        record = tiles.data
        m.d.comb += [
            # Room for the logit, and for the tile record if this logit closes its tile.
            self.i_score.ready.eq(~full & (~closes | tiles.room)),
            wrote.eq(self.i_score.valid & self.i_score.ready),
            wr.addr.eq(fill_ptr),
            wr.data.eq(score.s),
            wr.en.eq(wrote),
            tiles.push.eq(wrote & closes),
            record.max.eq(tile_max >> cfg.logit_frac_bits),
            record.count.eq(count),
            record.first_seg.eq(fill_first),
            record.last_seg.eq(score.seg_last),
            record.head.eq(score.head),
        ]
        with m.If(wrote):
            m.d.sync += [
                fill_ptr.eq(fill_ptr + 1),
                fill_max.eq(tile_max),
                fill_count.eq(Mux(closes, 0, count)),
                fill_end.eq(Mux(closes, cfg.tile == 1, fill_count == cfg.tile - 2)),
            ]
            with m.If(closes):
                m.d.sync += fill_first.eq(score.seg_last)

    def _replay(self, m, rd, tiles, replayed, ptr_bits):
        """Pop tiles; read their logits back in order and emit ``t = s - m_new * 2**F``."""
        cfg = self._cfg
        tile, ready, pop = tiles.head, tiles.valid, tiles.pop
        run_max  = Signal(signed(cfg.max_bits))
        read_ptr = Signal(ptr_bits)
        left     = Signal(range(cfg.tile + 1))          # logits of the current tile still to read
        cur_last = Signal()                             # the current tile ends its segment

        # -- stage 0: choose the next read (a new tile's first key, or the next of this one) --------
        # stage 1 (the read port's output register) holds one key; it advances when o_key can take it.
        out_tag   = Signal(key_tag_layout(cfg))
        advance   = ~self.o_key.valid | self.o_key.ready
        # One subtraction decides both: rise = max(s) - m_run; a rise below 0 keeps m_run.
        rise      = Signal(signed(cfg.max_bits + 1))
        m.d.comb += rise.eq(tile.max - run_max)
        keep      = ~tile.first_seg & rise[-1]
        new_max   = Mux(keep, run_max, tile.max)
        start     = advance & (left == 0) & ready
        more      = advance & (left != 0)
        m.d.comb += [
            pop.eq(start),
            rd.en.eq(advance),
            rd.addr.eq(read_ptr),
            replayed.eq(self.o_key.valid & self.o_key.ready),
        ]
        with m.If(start):
            m.d.sync += [
                run_max.eq(new_max),
                left.eq(tile.count - 1),
                read_ptr.eq(read_ptr + 1),
                cur_last.eq(tile.last_seg),
                out_tag.head.eq(tile.head),
                out_tag.m.eq(new_max),
                out_tag.delta.eq(Mux(tile.first_seg | rise[-1], 0, rise)),
                out_tag.first_tile.eq(1),
                out_tag.first_seg.eq(tile.first_seg),
                out_tag.last_seg.eq(tile.last_seg & (tile.count == 1)),
            ]
        with m.Elif(more):
            m.d.sync += [
                left.eq(left - 1),
                read_ptr.eq(read_ptr + 1),
                out_tag.first_tile.eq(0),
                out_tag.first_seg.eq(0),
                out_tag.delta.eq(0),
                out_tag.last_seg.eq(cur_last & (left == 1)),
            ]
        with m.If(advance):
            m.d.sync += self.o_key.valid.eq(start | more)

        # -- stage 1: the exp2 argument -----------------------------------------------------------
        key = self.o_key.payload
        m.d.comb += [
            key.t.eq(rd.data - (out_tag.m << cfg.logit_frac_bits)),
            key.tag.eq(out_tag),
        ]
