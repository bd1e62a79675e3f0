"""The reduction tree: the segmented merge of the partials of cut heads, over log2(cores) levels.

A head cut across cores leaves one partial per core it touches (:mod:`leanattn.hdl.ports`, boundary
crossings). :class:`ReductionTree` combines them on the perfect binary tree over core indices, the
pairing of :func:`leanattn.sim.partition.tree_reduce`: the node covering cores ``[lo, hi)``, with
midpoint ``mid``, merges the partials of the head crossing boundary ``mid`` (one from each side)
with a :class:`~leanattn.hdl.merge.Merge` unit, and passes every other partial up unchanged. A head
spanning cores ``first .. last`` crosses the boundaries ``first + 1 .. last``, so it is merged at
exactly the nodes of :func:`~leanattn.sim.partition.tree_merges` and leaves the root as one partial,
bit for bit :func:`leanattn.sim.golden.reduce_partials`.

Under ``flashdecoding`` a head's partials sit on the first ``p`` cores of one group of
``head_chunks`` cores (a subtree), and every core of a group takes the group's heads in the same
order. A node inside a group's subtree, whose right half starts ``o`` cores into the group,
merges every head with more than ``o`` keys (``i_split``, from the scheduler); nodes above the
groups merge nothing. On both inputs of such a node the heads arrive in increasing order and the
right input's heads are a subset of the left's, so when both fronts are heads that merge there
they are the same head, and the node rule below holds unchanged.

Node rule (:class:`TreeNode`). A packet is one partial, ``head_dim // lanes`` beats. If the front
packet of either input is not the node's crossing head, it passes (the left input first when both
qualify); when both fronts are the crossing head, they merge. Whether a beat is of the crossing
head travels with it as a payload bit (``merge``,
:func:`~leanattn.hdl.layouts.tree_partial_layout`), worked out in front of the register it
leaves: by the producer of a leaf (:meth:`ReductionTree.leaf_merge`) and by each node for its
parent, before its output register slice. A node's routing then starts from flip-flops, with no
compare against the crossing head across the die. A packet, once started, holds the node until
its ``last`` beat. The rule never deadlocks: only a packet of the crossing head waits,
for its partner on the other input; each side holds one packet of that head per job, so every
packet ahead of the partner passes, and the partner's subtree waits on nothing above it. It is
work-conserving: a node idles only when neither input offers a packet it can take.
"""

from amaranth.hdl import Module, Mux, Signal
from amaranth.lib import data, enum, stream, wiring
from amaranth.lib.wiring import In, Out

from .config import AttentionConfig
from .layouts import partial_layout, partial_meta_layout, tree_partial_layout
from .merge import Merge, merge_stages
from .ports import cross_layout
from .skid import MemorySlice, PipeRegister, SkidBuffer

__all__ = ["ReductionTree", "TreeNode", "Route", "node_stages"]


class Route(enum.Enum, shape=2):
    """What a node feeds into its merge pipe."""
    IDLE   = 0     # nothing (no packet can go)
    PASS_A = 1     # the left input's packet, unchanged
    PASS_B = 2     # the right input's packet, unchanged
    MERGE  = 3     # both inputs' packets of the crossing head, merged


def _check_cfg(cfg):
    if not isinstance(cfg, AttentionConfig):
        raise TypeError(f"cfg must be an AttentionConfig, not {cfg!r}")


def _merges(cfg, rule, head):
    """Whether a packet of ``head`` merges at a node whose rule is ``rule``: its crossing
    (``cross_layout(cfg)``; ``lean``, ``fa2``) or its bit mask of heads (``flashdecoding``)."""
    if cfg.schedule == "flashdecoding":
        return rule.bit_select(head, 1)
    return rule.valid & (head == rule.head)


def node_stages(cfg):
    """A tree node's registered stages in front of its output register slice, in order: its
    ``take`` registers (not with ``pipeline == "compact"``), then the merge unit's
    (:func:`~leanattn.hdl.merge.merge_stages`)."""
    return (() if cfg.pipeline == "compact" else ("take",)) + merge_stages(cfg)


def _output_slice(cfg, shape):
    """A node's output slice: a :class:`~leanattn.hdl.skid.MemorySlice` (a skid buffer's cycles,
    its two entries in distributed RAM, so that the parent's take moves a pointer, not an enable
    per payload bit), or with ``pipeline == "compact"`` a
    :class:`~leanattn.hdl.skid.PipeRegister`."""
    return PipeRegister(shape=shape) if cfg.pipeline == "compact" else MemorySlice(shape=shape)


def _node_latency(cfg):
    """A tree node's latency: its stages' (:func:`node_stages`) and its output register
    slice's (1, a skid buffer's or a pipe register's)."""
    return len(node_stages(cfg)) + SkidBuffer.latency


class TreeNode(wiring.Component):
    """One node of the reduction tree: merges the partials of one head, passes all others.

    Every packet goes through the node's one :class:`~leanattn.hdl.merge.Merge` pipe: a merge
    feeds ``i_a``'s packet to the pipe's ``i_a`` and ``i_b``'s to its ``i_b``
    (``golden.merge(cfg, left, right)``); a passing packet enters on the pipe's ``i_b`` beside an
    empty partial (``valid == 0``, the merge identity, with the packet's ``last``), so it leaves
    bit for bit unchanged and in the order the node took it. In front of the pipe the ``take``
    registers hold both inputs' front beats as they are, and what the pipe's two inputs say of
    themselves (head, empty flag, max, ``last``) as the route steers them; the accumulators'
    steering follows the registers (with ``pipeline == "compact"`` there are no ``take``
    registers). So the route, worked out from the inputs' ``valid`` and ``merge`` bits, reaches
    only the inputs' ``ready`` and a few flags, not a multiplexer per payload bit. A
    :class:`~leanattn.hdl.skid.MemorySlice` (a skid buffer's cycles, its entries in distributed
    RAM) holds the output, so no ``ready`` path crosses the node and the parent's take moves only
    its pointer and flags (with ``pipeline == "compact"`` a
    :class:`~leanattn.hdl.skid.PipeRegister`, whose ``ready`` does cross).

    Parameters
    ----------
    cfg : AttentionConfig
    root : bool
        The tree's root: its output beats carry no ``merge`` bit (``partial_layout(cfg)``) and it
        has no ``i_up_*`` rule.

    Members
    -------
    i_up_cross : ``In(cross_layout(cfg))`` (``lean``, ``fa2``; not at the root)
        The head crossing the boundary of the node this one feeds, if any (``valid``): an output
        beat of that head leaves with ``merge`` set. Stable while a job's packets are in the node.
    i_up_heads : ``In(max_heads)`` (``flashdecoding``; not at the root)
        Bit ``h`` set: head ``h`` merges at the node this one feeds (0 above the groups); stable
        likewise.
    i_a, i_b : ``In(stream.Signature(tree_partial_layout(cfg)))``
        The left and the right subtree's packets; ``merge`` set on every beat of this node's
        crossing head, clear on every other. Per job, each side delivers exactly one packet of
        the crossing head (if there is one). ``ready`` depends on both inputs' ``valid`` and
        ``merge`` and on registers of the node (the route, the merge pipe's output, the skid
        buffer's state), on nothing outside it. The payload goes into registers as it is.
    o_partial : ``Out(stream.Signature(tree_partial_layout(cfg)))`` (``partial_layout(cfg)`` at the root)
        Merged and passed packets, ``merge`` by ``i_up_*``; ``valid`` is a register, ``payload``
        a register or (full pipeline) the output slice's memory word under a register pointer.

    Latency: :attr:`latency` (6; 2 with ``pipeline == "compact"``) cycles from a beat's input
    transfer to its output transfer, when nothing stalls.
    Throughput: one beat per cycle, merged or passed; a crossing packet waits (without blocking
    the other input) until its partner arrives. The ``take`` registers and the merge pipe freeze
    together while the merge unit's output register holds a beat the output slice does not take.
    Numerics: those of :class:`~leanattn.hdl.merge.Merge` for merged packets
    (``golden.merge``); passed packets are unchanged, every bit.
    """


    def __init__(self, cfg, *, root=False):
        _check_cfg(cfg)
        self._cfg = cfg
        self._root = bool(root)
        layout = tree_partial_layout(cfg)
        if self._root:
            rule = {}
        elif cfg.schedule == "flashdecoding":
            rule = {"i_up_heads": In(cfg.max_heads)}
        else:
            rule = {"i_up_cross": In(cross_layout(cfg))}
        super().__init__({
            **rule,
            "i_a":       In(stream.Signature(layout)),
            "i_b":       In(stream.Signature(layout)),
            "o_partial": Out(stream.Signature(partial_layout(cfg) if self._root else layout)),
        })

    @property
    def cfg(self):
        return self._cfg

    @property
    def root(self):
        return self._root

    @property
    def up_rule(self):
        """The parent's rule port, ``i_up_cross`` or ``i_up_heads`` (None at the root)."""
        if self._root:
            return None
        return self.i_up_heads if self._cfg.schedule == "flashdecoding" else self.i_up_cross

    @property
    def latency(self):
        """Cycles from an input beat to its output beat, without stalls: one per stage
        (:func:`node_stages`: ``take`` and the merge unit's four, or the merge unit's one with
        ``pipeline == "compact"``) and the skid buffer's 1."""
        return _node_latency(self._cfg)

    def elaborate(self, platform):
        m = Module()

        # --- the merge pipe, then the output register slice, the parent's merge bit in front ------
        m.submodules.merge = merge = Merge(self._cfg)
        m.submodules.skid  = skid  = _output_slice(self._cfg, self.o_partial.payload.shape())
        wiring.connect(m, skid.o_data, wiring.flipped(self.o_partial))
        done = merge.o_partial
        m.d.comb += [skid.i_data.valid.eq(done.valid), done.ready.eq(skid.i_data.ready)]
        if self._root:
            m.d.comb += skid.i_data.payload.eq(done.payload)
        else:
            m.d.comb += [skid.i_data.payload.partial.eq(done.payload),
                         skid.i_data.payload.merge.eq(_merges(self._cfg, self.up_rule, done.payload.head))]

        # Control is written as expressions, not m.If/m.Switch: Yosys writes those as `always @*`
        # processes, which Icarus Verilog never runs if none of their inputs changes after time 0
        # (idle leaves driven by registers), and an X there would poison the merge pipe's valids.
        # The pipe advances as the merge unit's stages do: while its output register is free.
        advance = Signal()
        m.d.comb += advance.eq(~done.valid | done.ready)
        route, fire = self._route(m, advance)
        self._steer(m, merge, self._take(m, merge, route, fire, advance))
        return m

    def _route(self, m, advance):
        """The route of this cycle (a packet under way keeps its route until its last beat), the
        inputs' ``ready`` and whether a beat goes into the pipe (``fire``)."""
        a, b = self.i_a, self.i_b
        held    = Signal(Route, name="route_held")
        route   = Signal(Route)
        a_cross, b_cross = a.payload.merge, b.payload.merge     # the front packet merges here
        merging, pass_a, pass_b, fire = (Signal(name=n) for n in ("merging", "pass_a", "pass_b", "fire"))
        m.d.comb += [
            route.eq(Mux(held != Route.IDLE,   held,
                     Mux(a.valid & ~a_cross,   Route.PASS_A,
                     Mux(b.valid & ~b_cross,   Route.PASS_B,
                     Mux(a.valid & b.valid,    Route.MERGE, Route.IDLE))))),
            merging.eq(route == Route.MERGE),
            pass_a.eq(route == Route.PASS_A),
            pass_b.eq(route == Route.PASS_B),
            fire.eq(advance & Mux(merging, a.valid & b.valid, (pass_a & a.valid) | (pass_b & b.valid))),
            a.ready.eq(advance & Mux(merging, b.valid, pass_a)),
            b.ready.eq(advance & Mux(merging, a.valid, pass_b)),
        ]
        last = Mux(pass_a, a.payload.partial.last, b.payload.partial.last)
        with m.If(fire):
            m.d.sync += held.eq(Mux(last, Route.IDLE, route))
        return route, fire

    def _take(self, m, merge, route, fire, advance):
        """The ``take`` stage, registered while the pipe advances (the compact pipeline: the values
        themselves). The route decides here only what the merge pipe's two inputs say of
        themselves -- ``head``, ``valid``, ``m`` and ``last``, a few bits -- so the pipe's
        comparison starts from flip-flops; both fronts' accumulators are taken as they are and
        steered behind the registers (:meth:`_steer`). Drives the
        merge pipe's ``i_a.valid``; returns the stage's ``(pass_a, meta of i_a, meta of i_b, a,
        b)``."""
        a, b = self.i_a.payload.partial, self.i_b.payload.partial
        meta = partial_meta_layout(self._cfg)
        pass_a, pass_b = route == Route.PASS_A, route == Route.PASS_B
        # A merge: i_a is a's beat, i_b is b's. A passing packet rides on i_b beside an empty i_a
        # (the merge identity, with the packet's last).
        meta_a, meta_b = Signal(meta, name="steer_a"), Signal(meta, name="steer_b")
        m.d.comb += [
            meta_a.valid.eq((route == Route.MERGE) & a.valid),
            meta_a.head.eq(a.head),
            meta_a.m.eq(a.m),
            meta_a.last.eq(Mux(pass_b, b.last, a.last)),
            meta_b.valid.eq(Mux(pass_a, a.valid, b.valid)),
            meta_b.head.eq(Mux(pass_a, a.head, b.head)),
            meta_b.m.eq(Mux(pass_a, a.m, b.m)),
        ]
        # The stage's valid is the merge pipe's i_a.valid itself (a register in the full pipeline).
        values = (pass_a, meta_a, meta_b, a, b)
        if self._cfg.pipeline == "compact":
            m.d.comb += merge.i_a.valid.eq(fire)
            return values
        layout = partial_layout(self._cfg)
        regs = (Signal(name="take_pass_a"),
                Signal(meta, name="take_meta_a"), Signal(meta, name="take_meta_b"),
                Signal(layout, name="take_a"), Signal(layout, name="take_b"))
        with m.If(advance):
            m.d.sync += [merge.i_a.valid.eq(fire), *(reg.eq(value) for reg, value in zip(regs, values))]
        return regs

    @staticmethod
    def _steer(m, merge, take):
        """Into the merge pipe: each input's ``head``, ``valid``, ``m`` and ``last`` as steered in
        ``take``; ``i_a``'s accumulators are ``a``'s (0 when ``i_a`` is empty), ``i_b``'s are
        ``a``'s for a packet passing from ``i_a``, else ``b``'s. Each accumulator bit passes one
        multiplexer whose select is a register."""
        pass_a, meta_a, meta_b, take_a, take_b = take
        ia, ib = merge.i_a.payload, merge.i_b.payload
        # Both inputs are valid together (the merge pipe joins them); i_b's valid is i_a's.
        m.d.comb += merge.i_b.valid.eq(merge.i_a.valid)
        for port, meta in ((ia, meta_a), (ib, meta_b)):
            m.d.comb += [port.head.eq(meta.head), port.valid.eq(meta.valid), port.m.eq(meta.m),
                         port.last.eq(meta.last)]
        # An empty i_a is shifted out whatever its accumulators hold; they are cleared all the
        # same, so that no undefined bits (a front that was never valid, in simulation) enter the
        # shifts.
        m.d.comb += [
            ia.l.eq(Mux(meta_a.valid, take_a.l, 0)), ia.o.eq(Mux(meta_a.valid, take_a.o, 0)),
            ib.l.eq(Mux(pass_a, take_a.l, take_b.l)), ib.o.eq(Mux(pass_a, take_a.o, take_b.o)),
        ]


class ReductionTree(wiring.Component):
    """The segmented reduction of cut heads over the cores: ``log2(cores)`` levels of :class:`TreeNode`.

    Node ``(level, index)`` (level ``1 .. tree_levels``) covers cores ``[index * 2**level,
    (index + 1) * 2**level)`` and merges the head crossing its midpoint, boundary
    :meth:`boundary` ``(level, index)``; its inputs are the two nodes below (at level 1, leaves
    ``2 * index`` and ``2 * index + 1``), and the root's output is ``o_partial``.

    Output order. Each cut head leaves once, as ``head_dim // lanes`` beats tagged with its head.
    The order of different heads depends on when the leaves deliver and on stalls (a node passes
    whichever front packet can go, the left one first, and a merged head leaves when its last
    part has arrived), so the consumer must not rely on it; the bits of every head do not depend
    on timing. Packets of one head never interleave with another's: every packet is whole.

    Parameters
    ----------
    cfg : AttentionConfig
        ``cfg.cores`` must be at least 2 (one core has nothing to merge).

    Members
    -------
    i_cross : ``In(data.ArrayLayout(cross_layout(cfg), cfg.cores - 1))`` (``lean``, ``fa2``)
        Not a stream: entry ``b - 1`` is the head crossing boundary ``b`` (between cores ``b - 1``
        and ``b``), if any. It must stay stable from a job's first leaf beat until the last beat
        of its last cut head has left ``o_partial`` (every leaf packet of a job belongs to a head
        that leaves, so the tree is empty then).
    i_split : ``In(data.ArrayLayout(max_heads, head_chunks - 1))`` (``flashdecoding``, ``head_chunks > 1``)
        Not a stream: bit ``h`` of entry ``o - 1`` is set when head ``h`` has more than ``o`` keys
        (:class:`~leanattn.hdl.schedule.Scheduler`'s ``o_split``); stable like ``i_cross``.
    i_leaf_0 ... i_leaf_{cores-1} : ``In(stream.Signature(tree_partial_layout(cfg)))``
        Core ``c``'s partials of its cut heads (under ``lean`` at most two per job: its first and
        its last segment), ``head_dim // lanes`` beats each with ``last`` on the final one, and
        ``merge`` as :meth:`leaf_merge` ``(c, head)`` (worked out by the producer in front of a
        register, so that the first level's routing starts from flip-flops).
    o_partial : ``Out(stream.Signature(partial_layout(cfg)))``
        The final state of every cut head, once; ``valid`` is a register, ``payload`` the root's
        output slice's (:class:`TreeNode`).

    Latency: :attr:`latency` cycles (``tree_levels`` times :attr:`TreeNode.latency`: 6 per
    level, 2 compact) from a leaf beat's transfer to the transfer of the output beat it becomes,
    when nothing stalls and the beat's partner at every merging node arrives at the same edge
    (tiny on two cores: 6, default: 12, wide: 18). A partner arriving later delays the merged beat by as much.
    Throughput: one beat per cycle out of the root; every node moves one beat per cycle. No
    ``ready`` path is longer than one node: every node's output slice keeps a skid buffer's
    registered ``ready`` (the compact pipeline's register slices pass ``ready`` through).
    Numerics: :func:`leanattn.sim.golden.reduce_partials` of each cut head, bit for bit (the Merge
    unit's ``round_shift`` alignment, exact sums); empty partials (``valid == 0``) are the identity.
    """

    def __init__(self, cfg):
        _check_cfg(cfg)
        if cfg.cores < 2:
            raise ValueError(f"cores must be at least 2 (a reduction tree merges partials of heads cut "
                             f"across cores), not {cfg.cores}")
        self._cfg = cfg
        layout = partial_layout(cfg)
        if cfg.schedule != "flashdecoding":
            rule = {"i_cross": In(data.ArrayLayout(cross_layout(cfg), cfg.cores - 1))}
        elif cfg.head_chunks > 1:
            rule = {"i_split": In(data.ArrayLayout(cfg.max_heads, cfg.head_chunks - 1))}
        else:
            rule = {}
        super().__init__({
            **rule,
            **{f"i_leaf_{core}": In(stream.Signature(tree_partial_layout(cfg)))
               for core in range(cfg.cores)},
            "o_partial": Out(stream.Signature(layout)),
        })

    @property
    def cfg(self):
        return self._cfg

    @property
    def leaves(self):
        """The leaf ports, in core order."""
        return [getattr(self, f"i_leaf_{core}") for core in range(self._cfg.cores)]

    @staticmethod
    def boundary(level, index):
        """The boundary (``1 .. cores - 1``) at the midpoint of node ``(level, index)``."""
        return (index << level) + (1 << (level - 1))

    @property
    def latency(self):
        """Cycles from a leaf beat to the root's output beat, without stalls or waiting."""
        return self._cfg.tree_levels * _node_latency(self._cfg)

    def leaf_merge(self, core, head):
        """Whether a leaf packet of ``head`` on core ``core`` merges at its first-level node: the
        ``merge`` bit of ``i_leaf_<core>``, from this tree's ``i_cross`` (``i_split``)."""
        rule = self._rule_at(1, core // 2)
        return 0 if rule is None else _merges(self._cfg, rule, head)

    def _rule_at(self, level, index):
        """The rule of node ``(level, index)``: the crossing of its boundary (``lean``, ``fa2``),
        the split bits of its offset in a group (``flashdecoding``), or None above the groups
        (nothing merges there)."""
        cfg = self._cfg
        if cfg.schedule != "flashdecoding":
            return self.i_cross[self.boundary(level, index) - 1]
        if 1 << level <= cfg.head_chunks:                   # inside a group: split at offset o
            return self.i_split[self.boundary(level, index) % cfg.head_chunks - 1]
        return None

    def _rule(self, m, node, level, index):
        """Tell node ``(level, index)`` which heads merge at its parent (not at the root; above
        the groups its ``i_up_heads`` stays 0)."""
        rule = None if node.root else self._rule_at(level + 1, index // 2)
        if rule is not None:
            m.d.comb += node.up_rule.eq(rule)

    def elaborate(self, platform):
        m = Module()

        # --- level by level: the pairs of the level below feed this level's nodes -----------------
        below = [wiring.flipped(leaf) for leaf in self.leaves]
        for level in range(1, self._cfg.tree_levels + 1):
            here = []
            for index in range(len(below) // 2):
                root = level == self._cfg.tree_levels
                m.submodules[f"node_{level}_{index}"] = node = TreeNode(self._cfg, root=root)
                wiring.connect(m, below[2 * index], node.i_a)
                wiring.connect(m, below[2 * index + 1], node.i_b)
                self._rule(m, node, level, index)
                here.append(node.o_partial)
            below = here

        # --- the root's output ---------------------------------------------------------------------
        wiring.connect(m, below[0], wiring.flipped(self.o_partial))
        return m
