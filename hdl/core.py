# amaranth: UnusedElaboratable=no
"""One attention core: the segments of its share in, one partial softmax state per segment out.

:class:`AttentionCore` reads the keys and values of each segment through its own K and V read
ports and runs them through the datapath units::

    i_seg ─┬─► RequestIssuer K ─► o_kreq    i_qwrite ─► query buffer ─┐
           │         └─ in flight ─┐                                  ▼
           │                 i_k ──┴──────────────────────────────► KeyJoin ─► skid ─► DotProduct
           │                                                                               │
           │                                             ScoreScale ◄─ skid ◄──────────────┘
           │                                                 │ logits
           └─► RequestIssuer V ─► o_vreq                     ▼
                     └─ in flight ─┐                  OnlineSoftmax ─► o_partial
                             i_v ──┴─► ValueGate ─────────►┘ values

Each segment is forked into a K-side and a V-side command queue; each side issues its requests
on its own, and remembers every issued request until its last response beat has been taken (at
most :attr:`AttentionCore.outstanding` per port). So a V port that is slow to take requests or to
answer them never holds back the K requests of later segments: the QK pass of tile ``t + 1`` (and
of the next segment's first tile) runs while the PV pass of tile ``t`` waits for its values.
"""

from amaranth.hdl import Module, Mux, Shape, Signal, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from .config import AttentionConfig
from .dot import DotProduct, beat_layout
from .exp2 import exp2_stages
from .layouts import partial_layout
from .pipeline import has_tag
from .ports import kv_data_layout, kv_request_layout, query_write_layout, segment_layout
from .pv import pv_latency, v_layout
from .ring import ring_for
from .score import ScoreScale, qk_scale_layout
from .skid import SkidBuffer
from .softmax import OnlineSoftmax
from .tilebuf import TileBuffer

__all__ = [
    "AttentionCore", "RequestIssuer", "KeyJoin", "ValueGate",
    "command_layout", "pending_layout", "k_tag_layout", "logit_tag_layout", "dot_tag_layout",
]


# --- layouts -------------------------------------------------------------------------------------

def k_tag_layout(cfg):
    """What the K side keeps of a segment while its keys are read: its head and score scale."""
    return data.StructLayout({
        "head":        unsigned(cfg.head_index_bits),
        "score_mant":  unsigned(cfg.scale_bits),
        "score_shift": unsigned(cfg.score_shift_bits),
    })


def command_layout(cfg, tag_shape=0):
    """A read to issue: ``keys`` keys from element address ``addr``, and a tag for its responses
    (no ``tag`` field when ``tag_shape`` has no bits)."""
    return data.StructLayout({
        "addr": unsigned(cfg.kv_addr_bits),
        "keys": unsigned(cfg.length_bits),
        **({"tag": tag_shape} if has_tag(tag_shape) else {}),
    })


def pending_layout(cfg, tag_shape=0):
    """An issued request whose responses are not all taken yet: its length and tag."""
    return data.StructLayout({
        "keys": unsigned(cfg.length_bits),
        **({"tag": tag_shape} if has_tag(tag_shape) else {}),
    })


def logit_tag_layout(cfg):
    """What travels with a key from the K port to the online softmax."""
    return data.StructLayout({
        "head":     unsigned(cfg.head_index_bits),
        "seg_last": 1,                               # the last key of its segment
    })


def dot_tag_layout(cfg):
    """The tag of a key through the dot product: the score scale it needs next, and its logit tag."""
    return data.StructLayout({
        "mant":  unsigned(cfg.scale_bits),
        "shift": unsigned(cfg.score_shift_bits),
        "key":   logit_tag_layout(cfg),
    })


def _check_cfg(cfg):
    if not isinstance(cfg, AttentionConfig):
        raise TypeError(f"cfg must be an AttentionConfig, not {cfg!r}")


def _check_depth(name, value):
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{name} must be an integer, not {value!r}")
    if value < 1:
        raise ValueError(f"{name} must be at least 1, not {value}")


def _times(value, factor):
    """``value * factor`` for a constant ``factor >= 1``, as a sum of shifted copies (a constant
    factor needs no hardware multiplier; written out so that none is inferred)."""
    terms = [value << bit for bit in range(factor.bit_length()) if (factor >> bit) & 1]
    total = terms[0]
    for term in terms[1:]:
        total = total + term
    return total


def _count_beats(m, cfg, fire, keys, name):
    """Counters of the response beats of one request: the beat within its key, the key within the
    request (``keys`` keys of ``beats_per_key`` beats). Returns ``(beat, key_last, req_last)`` for
    the beat offered now; the counters advance on ``fire`` and restart after the request's last."""
    beats = cfg.beats_per_key
    beat = Signal(range(max(2, beats)), name=f"{name}_beat")     # (a bit even for one beat per key)
    # The key's number plus one, compared with keys as it is: no subtraction after the record.
    key  = Signal(len(keys), init=1, name=f"{name}_key")
    key_last = beat == beats - 1
    req_last = key_last & (key == keys)
    with m.If(fire):
        m.d.sync += beat.eq(Mux(key_last, 0, beat + 1))
        with m.If(key_last):
            m.d.sync += key.eq(Mux(req_last, 1, key + 1))
    return beat, key_last, req_last


# --- request issuer ------------------------------------------------------------------------------

class RequestIssuer(wiring.Component):
    """A command queue, a read-request port, and the record of the requests in flight.

    A command waits in a queue of ``queue`` entries until fewer than ``outstanding`` requests are
    in flight; it then leaves on ``o_req`` (``addr``, ``keys``) and at the same edge its length and
    tag enter the in-flight record, which ``o_pending`` offers to the response side. The response
    side takes the record (``o_pending.ready``) with the request's last response beat: that frees
    the slot. Both queues are rings (:func:`~leanattn.hdl.ring.ring_for`): of registers, or with the
    compact pipeline of block RAM from :data:`~leanattn.hdl.ring.BLOCK_DEPTH` entries on (the same
    cycles).

    Parameters
    ----------
    cfg : AttentionConfig
    tag_shape : shape-like
        The tag each command carries to its response side (default 0: none).
    queue : int
        Commands the queue holds.
    outstanding : int
        Requests in flight at most: issued, and not all of their response beats taken.

    Members
    -------
    i_cmd : ``In(stream.Signature(command_layout(cfg, tag_shape)))``
        ``ready`` comes from the queue's fill count (a register).
    o_req : ``Out(stream.Signature(kv_request_layout(cfg)))``
        ``valid`` and ``payload`` come from the queue and the in-flight count, never from ``ready``.
    o_pending : ``Out(stream.Signature(pending_layout(cfg, tag_shape)))``
        The oldest request in flight.

    Latency: 1 cycle from a command's transfer (into an empty queue) to its request being
    offered, and from a request's transfer to its record being offered on ``o_pending``.
    Throughput: one request per cycle while fewer than ``outstanding`` are in flight.
    Numerics: none.
    """

    def __init__(self, cfg, *, tag_shape=0, queue, outstanding):
        _check_cfg(cfg)
        try:
            Shape.cast(tag_shape)
        except TypeError:
            raise TypeError(f"tag_shape must be a shape-castable object, not {tag_shape!r}") from None
        _check_depth("queue", queue)
        _check_depth("outstanding", outstanding)
        self._cfg         = cfg
        self._tag_shape   = tag_shape
        self._queue       = queue
        self._outstanding = outstanding
        super().__init__({
            "i_cmd":     In(stream.Signature(command_layout(cfg, self._tag_shape))),
            "o_req":     Out(stream.Signature(kv_request_layout(cfg))),
            "o_pending": Out(stream.Signature(pending_layout(cfg, self._tag_shape))),
        })

    def elaborate(self, platform):
        cfg, tagged = self._cfg, has_tag(self._tag_shape)
        m = Module()
        queue  = ring_for(cfg, m, command_layout(cfg, self._tag_shape), self._queue, "queue")
        flight = ring_for(cfg, m, pending_layout(cfg, self._tag_shape), self._outstanding, "flight")

        # --- queue: commands not yet issued ------------------------------------------------------
        m.d.comb += [
            self.i_cmd.ready.eq(queue.room),
            queue.push.eq(self.i_cmd.valid & queue.room),
            queue.data.eq(self.i_cmd.payload),
        ]

        # --- issue: while a slot is free; the request's record enters the flight ring -------------
        cmd, issue = queue.head, self.o_req.valid & self.o_req.ready
        m.d.comb += [
            self.o_req.valid.eq(queue.valid & flight.room),
            self.o_req.payload.addr.eq(cmd.addr),
            self.o_req.payload.keys.eq(cmd.keys),
            queue.pop.eq(issue),
            flight.push.eq(issue),
            flight.data.keys.eq(cmd.keys),
            *([flight.data.tag.eq(cmd.tag)] if tagged else []),
        ]

        # --- flight: the oldest request, until the response side takes its last beat ---------------
        m.d.comb += [
            self.o_pending.valid.eq(flight.valid),
            self.o_pending.payload.eq(flight.head),
            flight.pop.eq(self.o_pending.valid & self.o_pending.ready),
        ]
        return m


# --- K beats joined with the query ---------------------------------------------------------------

class KeyJoin(wiring.Component):
    """The query buffer, and each K response beat joined with the matching query beat.

    The query buffer is a memory of ``max_heads * beats_per_key`` words of ``lanes`` elements,
    word ``head * beats_per_key + beat``, written from ``i_qwrite`` and read synchronously. Each K
    beat is annotated from the oldest K request in flight (``i_pending``: the segment's length,
    head and score scale) and from counters of its beats: ``last`` on a key's final beat, and in the
    tag ``seg_last`` on the segment's last key. The beat and the query word read for it leave
    together one cycle later.

    Parameters
    ----------
    cfg : AttentionConfig

    Members
    -------
    i_qwrite : ``In(stream.Signature(query_write_layout(cfg)))``
        Writes one query word; ``ready`` is always 1.
    i_pending : ``In(stream.Signature(pending_layout(cfg, k_tag_layout(cfg))))``
        The oldest K request in flight; taken with its last response beat.
    i_k : ``In(stream.Signature(kv_data_layout(cfg)))``
        K response beats; taken only while a request is in flight.
    o_beat : ``Out(stream.Signature(beat_layout(cfg, dot_tag_layout(cfg))))``
        The DotProduct's input; ``valid`` and all but ``q`` from flip-flops, ``q`` from the query
        buffer's read register (held while the output stalls: the read is enabled only when the
        output register loads).

    Precondition: the query words of a head are written before its first K beat arrives and not
    rewritten while its beats are read (writes and reads of one word never meet).
    Latency: 1 cycle from a K beat's transfer to its transfer on ``o_beat``.
    Throughput: one beat per cycle. Stalls: ``i_k.ready = (~o_beat.valid | o_beat.ready) &
    i_pending.valid``.
    Numerics: none.
    """

    def __init__(self, cfg):
        _check_cfg(cfg)
        self._cfg = cfg
        super().__init__({
            "i_qwrite":  In(stream.Signature(query_write_layout(cfg))),
            "i_pending": In(stream.Signature(pending_layout(cfg, k_tag_layout(cfg)))),
            "i_k":       In(stream.Signature(kv_data_layout(cfg))),
            "o_beat":    Out(stream.Signature(beat_layout(cfg, dot_tag_layout(cfg)))),
        })

    def elaborate(self, platform):
        cfg = self._cfg
        rec, out = self.i_pending.payload, self.o_beat
        m = Module()

        # --- query buffer: written whenever a query word comes (it never waits) ------------------
        words = cfg.max_heads * cfg.beats_per_key
        m.submodules.query = query = Memory(shape=kv_data_layout(cfg), depth=max(2, words), init=[])
        wr, rd = query.write_port(), query.read_port()
        m.d.comb += [
            self.i_qwrite.ready.eq(1),
            wr.addr.eq(self.i_qwrite.payload.addr),
            wr.data.eq(self.i_qwrite.payload.q),
            wr.en.eq(self.i_qwrite.valid),
        ]

        # --- count: the K beat's place in its request; the record leaves with the last beat -------
        advance = ~out.valid | out.ready
        fire    = self.i_k.valid & self.i_k.ready
        beat, key_last, seg_last = _count_beats(m, cfg, fire, rec.keys, "count")
        m.d.comb += [
            self.i_k.ready.eq(advance & self.i_pending.valid),
            self.i_pending.ready.eq(fire & seg_last),
            rd.addr.eq(_times(rec.tag.head, cfg.beats_per_key) + beat),
            rd.en.eq(advance),
        ]

        # --- join: the beat and its tag, registered as the query word is read ----------------------
        join_k   = Signal(kv_data_layout(cfg), name="join_k", reset_less=True)
        join_tag = Signal(dot_tag_layout(cfg), name="join_tag", reset_less=True)
        join_last = Signal(name="join_last", reset_less=True)
        with m.If(advance):
            m.d.sync += [
                out.valid.eq(fire),
                join_k.eq(self.i_k.payload),
                join_last.eq(key_last),
                join_tag.mant.eq(rec.tag.score_mant),
                join_tag.shift.eq(rec.tag.score_shift),
                join_tag.key.head.eq(rec.tag.head),
                join_tag.key.seg_last.eq(seg_last),
            ]
        m.d.comb += [
            out.payload.q.eq(rd.data),
            out.payload.k.eq(join_k),
            out.payload.last.eq(join_last),
            out.payload.tag.eq(join_tag),
        ]
        return m


# --- V beats, counted against their requests -----------------------------------------------------

class ValueGate(wiring.Component):
    """Passes V response beats on while a V request is in flight, and retires each request with its
    last beat.

    Parameters
    ----------
    cfg : AttentionConfig

    Members
    -------
    i_pending : ``In(stream.Signature(pending_layout(cfg)))``
        The oldest V request in flight; taken with its last response beat.
    i_v : ``In(stream.Signature(kv_data_layout(cfg)))``
    o_v : ``Out(stream.Signature(v_layout(cfg)))``
        ``i_v`` unchanged: ``valid = i_v.valid & i_pending.valid``, ``i_v.ready = o_v.ready &
        i_pending.valid``.

    Latency: 0 (combinational). Throughput: one beat per cycle. Numerics: none.
    """

    def __init__(self, cfg):
        _check_cfg(cfg)
        self._cfg = cfg
        super().__init__({
            "i_pending": In(stream.Signature(pending_layout(cfg))),
            "i_v":       In(stream.Signature(kv_data_layout(cfg))),
            "o_v":       Out(stream.Signature(v_layout(cfg))),
        })

    def elaborate(self, platform):
        m = Module()
        fire = self.o_v.valid & self.o_v.ready
        _, _, req_last = _count_beats(m, self._cfg, fire, self.i_pending.payload.keys, "count")
        m.d.comb += [
            self.o_v.valid.eq(self.i_v.valid & self.i_pending.valid),
            self.o_v.payload.eq(self.i_v.payload),
            self.i_v.ready.eq(self.o_v.ready & self.i_pending.valid),
            self.i_pending.ready.eq(fire & req_last),
        ]
        return m


# --- the core ------------------------------------------------------------------------------------

class AttentionCore(wiring.Component):
    """One core: segments in, partial states ``(m, l, o)`` out, with its own K and V read ports.

    Datapath: K response beats are joined with the head's query beat (:class:`KeyJoin`), summed
    per key (:class:`~.dot.DotProduct`), scaled to a base-2 logit (:class:`~.score.ScoreScale`)
    and fed with the V response beats to the :class:`~.softmax.OnlineSoftmax`, which emits each
    segment's partial state. Two register slices, before and after the dot product, have one
    cycle of latency each: :class:`~.skid.SkidBuffer` slices that keep every ``ready`` path inside
    one unit, also with ``pipeline == "compact"`` (a one-entry :class:`~.skid.PipeRegister` would
    save flip-flops, but pass the tile buffer's ``ready`` through the score unit and the dot
    product to the memory in one cycle: on the iCE40 the longest path).

    Parameters
    ----------
    cfg : AttentionConfig

    Members
    -------
    i_qwrite : ``In(stream.Signature(query_write_layout(cfg)))``
        Writes query word ``addr = head * beats_per_key + beat`` of the core's query buffer (a
        memory of ``max_heads * beats_per_key`` words of ``lanes`` elements). ``ready`` is always
        1: the core never waits for queries, nor checks for them.
    i_seg : ``In(stream.Signature(segment_layout(cfg)))``
        The core's segments in order (``keys >= 1``). ``ready`` comes from the fill level of the
        two command queues.
    o_kreq, o_vreq : ``Out(stream.Signature(kv_request_layout(cfg)))``
        One request per segment on each port: ``addr = k_addr`` (``v_addr``), ``keys``.
    i_k, i_v : ``In(stream.Signature(kv_data_layout(cfg)))``
        Response beats in request order, ``keys * beats_per_key`` per request, any latency. Beats
        are taken only while a request of that port is in flight.
    o_partial : ``Out(stream.Signature(partial_layout(cfg)))``
        Per segment, in order, ``beats_per_key`` beats of its partial state with ``head`` set.
    outstanding : int
        Requests per port whose responses are not all taken, at most (4). A request is issued
        only while fewer are in flight.
    lead : int
        Segments the V command queue holds (8): while the V port takes no requests, the core
        still accepts this many segments and issues their K requests (and takes their K beats).

    Precondition: a head's query words are written before that head's first segment reaches
    ``i_seg``, and not rewritten while any of its segments is in the core.

    Latency: for an idle core and a memory that sends a request's first beat ``M`` cycles after
    taking the request and the rest back to back, the last partial beat of a single segment of
    ``n`` keys leaves :meth:`segment_latency` ``(n, M)`` = ``fill + M + (min(n, tile) + n + 1) *
    beats_per_key`` cycles after the segment's transfer on ``i_seg``; :attr:`fill` is derived from
    the unit latencies (the K request, the K path to the logit :attr:`logit_latency`, the tile's
    replay and exp2, the PV accumulator), the rest is the first tile's K beats, all ``n`` keys' V
    beats and the partial's readout. A request leaves :attr:`issue_latency` (1) cycle after its
    segment.
    Throughput: one K beat and one V beat per cycle in steady state, i.e. one key per
    ``beats_per_key`` cycles (ScoreScale has as many multipliers as that rate needs, so this holds
    for ``beats_per_key == 1`` too), across tiles and across segments: with a memory that keeps up,
    the K beats of consecutive segments are taken on consecutive cycles. Between two segments the
    V side pauses for the partial's readout (``beats_per_key + pv_latency(cfg)`` cycles);
    the K side does not wait for it, but runs ahead until the tile buffer (four tiles) is full, so
    a job of many segments much shorter than a tile runs at the V side's rate.
    Stalls: every stream may stall at any time, and each port only stops its own side. Every
    ``ready`` path crosses at most one unit: ``i_seg.ready``, ``o_kreq.valid`` and ``o_vreq.valid``
    come from registers; ``i_k.ready`` from the join register, the skid behind it and the
    in-flight count; ``i_v.ready`` from the PV accumulator's registers and the in-flight count;
    ``o_*.ready`` goes no further than the unit that drives the port.
    Numerics: the partial of each segment equals ``golden.online_softmax(cfg, s, v)`` with ``s =
    golden.score(cfg, golden.dot(cfg, q, k), mant, shift)`` over the segment's keys, bit for bit.
    Storage and multipliers: the query buffer (block RAM) and the units' own (DotProduct: ``lanes``
    multipliers; ScoreScale: :attr:`ScoreScale.multipliers`; OnlineSoftmax: ``lanes`` in the PV
    accumulator, and its tile, table and accumulator memories); the command queues (``k_queue +
    lead`` segments), the in-flight records (``2 * outstanding``) and the two register slices are
    registers, except that with the compact pipeline the rings of
    :data:`~leanattn.hdl.ring.BLOCK_DEPTH` entries or more (the V queue and both in-flight records)
    are block RAM. The query address ``head * beats_per_key`` is a sum of shifted copies, not a
    multiplier.
    """

    #: Requests in flight per port, at most.
    outstanding = 4
    #: Segments of K requests issued while the V request port takes nothing (the V command queue's
    #: depth). The K side runs ahead of the V side by at most the tile buffer's four tiles and the
    #: keys in the K pipeline: for segments of at least a tile, eight cover it.
    lead = 8
    #: Segments the K command queue holds (the K side issues them as soon as a slot is free); 1
    #: with the compact pipeline (:attr:`k_queue`).
    K_QUEUE = 2

    def __init__(self, cfg):
        _check_cfg(cfg)
        self._cfg = cfg
        # The datapath units are built here, so that their latencies can be read before (or without)
        # elaboration; the comment on this file's first line keeps a core that is only asked for
        # its latency from warning about them (the core itself still warns where it was built).
        self._dot     = DotProduct(cfg, tag_shape=dot_tag_layout(cfg))
        self._scale   = ScoreScale(cfg, tag_shape=logit_tag_layout(cfg))
        self._softmax = OnlineSoftmax(cfg)
        super().__init__({
            "i_qwrite":  In(stream.Signature(query_write_layout(cfg))),
            "i_seg":     In(stream.Signature(segment_layout(cfg))),
            "o_kreq":    Out(stream.Signature(kv_request_layout(cfg))),
            "o_vreq":    Out(stream.Signature(kv_request_layout(cfg))),
            "i_k":       In(stream.Signature(kv_data_layout(cfg))),
            "i_v":       In(stream.Signature(kv_data_layout(cfg))),
            "o_partial": Out(stream.Signature(partial_layout(cfg))),
        })

    @property
    def cfg(self):
        return self._cfg

    @property
    def k_queue(self):
        """Segments the K command queue holds: :data:`K_QUEUE`, 1 with the compact pipeline (the
        K side then takes a segment once the one before has left as a request; the queue's
        registers would cost a logic cell each on an iCE40)."""
        return 1 if self._cfg.pipeline == "compact" else self.K_QUEUE

    @property
    def logit_latency(self):
        """Cycles from the transfer of a key's last K beat to its logit's transfer into the online
        softmax (no stalls): the join register, a skid, the dot product, a skid, the score scale."""
        return 1 + SkidBuffer.latency + self._dot.latency + SkidBuffer.latency + self._scale.latency

    #: Cycles from a segment's transfer on ``i_seg`` to its K (and V) request's transfer, for an
    #: idle core (the command queue's register).
    issue_latency = 1

    @property
    def fill(self):
        """The constant part of :meth:`segment_latency`."""
        return self.segment_latency(1, memory_latency=0) - 3 * self._cfg.beats_per_key

    def segment_latency(self, keys, memory_latency=1):
        """Cycles from a lone segment's transfer on ``i_seg`` (idle core) to the transfer of its
        last partial beat, without stalls, for a memory that sends the first response beat
        ``memory_latency`` cycles after taking the request and the others back to back.

        The K beats of the first tile (``min(keys, tile)`` keys) arrive one per cycle; each key's
        logit enters the tile buffer :attr:`logit_latency` cycles after the key's last beat; the
        tile replays into exp2; the PV accumulator takes the first weight and, from the next cycle
        on, the V beats of all ``keys`` keys one per cycle (every later tile is complete just when
        the PV pass reaches it, since both sides move one key per ``beats_per_key`` cycles); the
        partial's ``beats_per_key`` beats leave :func:`~leanattn.hdl.pv.pv_latency` cycles after the
        last V beat.
        """
        cfg = self._cfg
        beats = cfg.beats_per_key
        first_v = 1                     # the PV key register: a weight's V beats follow a cycle later
        return (self.issue_latency + memory_latency
                + min(keys, cfg.tile) * beats - 1 + self.logit_latency
                + TileBuffer.latency + len(exp2_stages(cfg)) + first_v
                + keys * beats - 1 + pv_latency(cfg)
                + beats - 1)

    def elaborate(self, platform):
        cfg = self._cfg
        m = Module()
        m.submodules.kissue    = kissue    = RequestIssuer(cfg, tag_shape=k_tag_layout(cfg),
                                                           queue=self.k_queue, outstanding=self.outstanding)
        m.submodules.vissue    = vissue    = RequestIssuer(cfg, queue=self.lead, outstanding=self.outstanding)
        m.submodules.join      = join      = KeyJoin(cfg)
        m.submodules.vgate     = vgate     = ValueGate(cfg)
        m.submodules.beat_skid = beat_skid = SkidBuffer(shape=beat_layout(cfg, dot_tag_layout(cfg)))
        m.submodules.dot       = dot       = self._dot
        m.submodules.qk_skid   = qk_skid   = SkidBuffer(shape=qk_scale_layout(cfg, logit_tag_layout(cfg)))
        m.submodules.scale     = scale     = self._scale
        m.submodules.softmax   = softmax   = self._softmax

        # --- fork: each segment enters both command queues at once --------------------------------
        seg, kcmd, vcmd = self.i_seg.payload, kissue.i_cmd.payload, vissue.i_cmd.payload
        m.d.comb += [
            self.i_seg.ready.eq(kissue.i_cmd.ready & vissue.i_cmd.ready),
            kissue.i_cmd.valid.eq(self.i_seg.valid & vissue.i_cmd.ready),
            vissue.i_cmd.valid.eq(self.i_seg.valid & kissue.i_cmd.ready),
            kcmd.addr.eq(seg.k_addr),
            kcmd.keys.eq(seg.keys),
            kcmd.tag.head.eq(seg.head),
            kcmd.tag.score_mant.eq(seg.score_mant),
            kcmd.tag.score_shift.eq(seg.score_shift),
            vcmd.addr.eq(seg.v_addr),
            vcmd.keys.eq(seg.keys),
        ]

        # --- ports: requests out, responses matched with the requests in flight -------------------
        wiring.connect(m, kissue.o_req, wiring.flipped(self.o_kreq))
        wiring.connect(m, vissue.o_req, wiring.flipped(self.o_vreq))
        wiring.connect(m, kissue.o_pending, join.i_pending)
        wiring.connect(m, vissue.o_pending, vgate.i_pending)
        wiring.connect(m, wiring.flipped(self.i_qwrite), join.i_qwrite)
        wiring.connect(m, wiring.flipped(self.i_k), join.i_k)
        wiring.connect(m, wiring.flipped(self.i_v), vgate.i_v)

        # --- K path: join -> skid -> dot -> skid -> score scale -> online softmax ---------------------
        wiring.connect(m, join.o_beat, beat_skid.i_data)
        wiring.connect(m, beat_skid.o_data, dot.i_beat)
        qk, tag = dot.o_qk.payload, dot.o_qk.payload.tag
        m.d.comb += [
            qk_skid.i_data.valid.eq(dot.o_qk.valid),
            qk_skid.i_data.payload.qk.eq(qk.qk),
            qk_skid.i_data.payload.mant.eq(tag.mant),
            qk_skid.i_data.payload.shift.eq(tag.shift),
            qk_skid.i_data.payload.tag.eq(tag.key),
            dot.o_qk.ready.eq(qk_skid.i_data.ready),
        ]
        wiring.connect(m, qk_skid.o_data, scale.i_qk)
        score = scale.o_score.payload
        m.d.comb += [
            softmax.i_score.valid.eq(scale.o_score.valid),
            softmax.i_score.payload.s.eq(score.s),
            softmax.i_score.payload.seg_last.eq(score.tag.seg_last),
            softmax.i_score.payload.head.eq(score.tag.head),
            scale.o_score.ready.eq(softmax.i_score.ready),
        ]

        # --- V path and the partials ----------------------------------------------------------------
        wiring.connect(m, vgate.o_v, softmax.i_v)
        wiring.connect(m, softmax.o_partial, wiring.flipped(self.o_partial))
        return m
