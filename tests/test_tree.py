# amaranth: UnusedElaboratable=no
"""ReductionTree: every cut head of a job leaves once, bit-exact with ``golden.reduce_partials``.

Jobs are head lengths, split by :func:`leanattn.sim.partition.partition`; each cut head gets random
logits and values, its segments' partials come from ``golden.online_softmax`` and its expected final
state from ``golden.reduce_partials`` (the tree's fixed pairing). Core ``c``'s partials of cut heads
go to leaf ``c`` in head order; ``i_cross`` says which head crosses each boundary.

``i_cross`` is not a stream, so the benches drive the tree through :class:`JobFixture`, which adds
one stream of job records: it takes a record (the job's ``i_cross`` and how many packets each leaf
and the output carry), opens the leaves for exactly those packets, and takes the next record when
the job's last output packet has left -- the contract of ``i_cross`` (stable while a job is in the
tree). Output packets are compared job by job, sorted by head (their order depends on timing).

Edge cases: one head spanning all cores, a head on every smaller run of cores, a different head at
every boundary (every inner core holds two cut heads), idle cores, jobs with no cut head, the
largest head index, empty partials (the merge identity) on any leaf; ``test_jobs_reach_the_edges``
checks that the benches' job sets hold them all.

Configurations: tiny2 (tiny on two cores), default, odd (and wide, slow) plus ``cores8`` /
``cores16`` (default with 8 and 16 cores: three and four levels). Fast tier: amaranth.sim at
tiny2, default and odd under every stall pattern and at cores8 under random stalls; the
lone-merge latency and the root's rate; lint; cocotb at tiny2 on both simulators and at default
on Icarus. Slow: the larger configurations in amaranth.sim, cocotb with 60 random jobs at tiny2,
default and odd on both simulators and at wide on Verilator.
"""

import functools
import re

import numpy as np
import pytest
from amaranth.back import verilog
from amaranth.hdl import Cat, Fragment, Module, Shape, Signal, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out
from tiers import config_params

from leanattn.hdl.config import PRESETS, bits_for
from leanattn.hdl.layouts import partial_layout, tree_partial_layout
from leanattn.hdl.merge import Merge
from leanattn.hdl.ports import cross_layout
from leanattn.hdl.skid import SkidBuffer
from leanattn.hdl.tree import ReductionTree, TreeNode, node_stages
from leanattn.sim import golden
from leanattn.sim.cocotb_util import AMARANTH_LINT_WAIVERS, HIERARCHY_LINT_WAIVERS, verilator_lint
from leanattn.sim.configs import TEST_CONFIGS
from leanattn.sim.partition import head_spans, partition, tree_merges
from leanattn.sim.softmax_vectors import partial_beats
from leanattn.sim.stream_bench import bench_dir, run_cocotb_bench, simulate

#: Every test configuration with a tree (tiny has one core, so none: tiny2 stands in for it).
CONFIGS = {**{name: cfg for name, cfg in TEST_CONFIGS.items() if cfg.cores > 1},
           "cores8":  PRESETS["default"].replace(cores=8),
           "cores16": PRESETS["default"].replace(cores=16)}
PATTERNS = [("none", "none"), ("random", "random"), ("fixed", "none"), ("none", "fixed")]

#: Most packets one leaf (or the output) carries in one job of these benches: a real job has at
#: most two per leaf and ``cores - 1`` out.
MAX_PACKETS = 15


# --- the job fixture ----------------------------------------------------------------------------------

def job_layout(cfg):
    """One job record: the tree's ``i_cross`` and the packets of each leaf and of the output."""
    count = unsigned(bits_for(MAX_PACKETS))
    return data.StructLayout({
        "cross":        data.ArrayLayout(cross_layout(cfg), cfg.cores - 1),
        "leaf_packets": data.ArrayLayout(count, cfg.cores),
        "out_packets":  count,
    })


class JobFixture(wiring.Component):
    """The tree with ``i_cross`` driven job by job from a stream of :func:`job_layout` records.

    A record is taken while no job is under way; then leaf ``c`` is open for ``leaf_packets[c]``
    packets, and the job ends once every leaf has delivered its packets and ``out_packets``
    packets have left. ``ready`` of a closed leaf is 0 (its producer holds the packet).
    """

    def __init__(self, cfg):
        self._cfg = cfg
        layout = partial_layout(cfg)
        super().__init__({
            "i_job":     In(stream.Signature(job_layout(cfg))),
            **{f"i_leaf_{c}": In(stream.Signature(layout)) for c in range(cfg.cores)},
            "o_partial": Out(stream.Signature(layout)),
        })

    def elaborate(self, platform):
        cfg = self._cfg
        m = Module()
        m.submodules.tree = tree = ReductionTree(cfg)

        busy  = Signal()
        cross = Signal(data.ArrayLayout(cross_layout(cfg), cfg.cores - 1))
        count = bits_for(MAX_PACKETS)
        leaf_left = [Signal(count, name=f"leaf_left_{c}") for c in range(cfg.cores)]
        out_left  = Signal(count)
        job = self.i_job.payload
        m.d.comb += [tree.i_cross.eq(cross), self.i_job.ready.eq(~busy)]
        with m.If(self.i_job.valid & ~busy):
            m.d.sync += [busy.eq(1), cross.eq(job.cross), out_left.eq(job.out_packets),
                         *(left.eq(job.leaf_packets[c]) for c, left in enumerate(leaf_left))]

        for c, (outer, inner) in enumerate(zip(self.leaves, tree.leaves)):
            open_ = Signal(name=f"open_{c}")
            m.d.comb += [open_.eq(busy & (leaf_left[c] != 0)),
                         inner.valid.eq(outer.valid & open_), inner.payload.partial.eq(outer.payload),
                         inner.payload.merge.eq(tree.leaf_merge(c, outer.payload.head)),
                         outer.ready.eq(inner.ready & open_)]
            with m.If(inner.valid & inner.ready & inner.payload.partial.last):
                m.d.sync += leaf_left[c].eq(leaf_left[c] - 1)

        wiring.connect(m, tree.o_partial, wiring.flipped(self.o_partial))
        out = self.o_partial
        with m.If(out.valid & out.ready & out.payload.last):
            m.d.sync += out_left.eq(out_left - 1)
        done = Signal()
        m.d.comb += done.eq(busy & (out_left == 0) & Cat(*(left == 0 for left in leaf_left)).all())
        with m.If(done):
            m.d.sync += busy.eq(0)
        return m

    @property
    def leaves(self):
        return [getattr(self, f"i_leaf_{c}") for c in range(self._cfg.cores)]


# --- jobs -----------------------------------------------------------------------------------------

class TreeJob:
    """A partitioned job's cut heads: ``cross`` (head or None per boundary), ``leaves`` (per core,
    ``[(head, Partial)]`` in head order) and ``finals`` (``{head: Partial}``, golden)."""

    def __init__(self, cfg, lengths, rng, *, empty_rate=0.0):
        self.lengths = [int(n) for n in lengths]
        assert len(self.lengths) <= cfg.max_heads and max(self.lengths) <= cfg.max_context
        spans = head_spans(partition(self.lengths, cfg.cores))
        cut = {head: segs for head, segs in sorted(spans.items()) if len(segs) > 1}
        self.cross = [None] * (cfg.cores - 1)
        self.spans = {}
        self.leaves = [[] for _ in range(cfg.cores)]
        self.finals = {}
        for head, segs in cut.items():
            self.spans[head] = (segs[0].core, segs[-1].core)
            for seg in segs[1:]:
                assert self.cross[seg.core - 1] is None
                self.cross[seg.core - 1] = head
            s, v = head_keys(cfg, rng, self.lengths[head])
            parts = {}
            for seg in segs:
                part = golden.online_softmax(cfg, s[seg.start:seg.stop], v[seg.start:seg.stop])
                if rng.random() < empty_rate:
                    part = golden.Partial.empty(cfg.head_dim)
                parts[seg.core] = part
                self.leaves[seg.core].append((head, part))
            self.finals[head] = golden.reduce_partials(cfg, parts)

    def record(self, cfg):
        assert max(len(packets) for packets in self.leaves) <= MAX_PACKETS >= len(self.finals)
        return job_layout(cfg).const({
            "cross": [{"valid": int(h is not None), "head": h or 0} for h in self.cross],
            "leaf_packets": [len(packets) for packets in self.leaves],
            "out_packets": len(self.finals),
        }).as_bits()


def head_keys(cfg, rng, n):
    """Logits (flat, moderate or extreme spread around a random centre, saturated) and values."""
    one = 1 << cfg.logit_frac_bits
    width = rng.choice([0.5, 6, 40, 127])
    base = rng.uniform(-width, width) if rng.random() < 0.5 else 0
    s = np.clip(np.round((base + rng.uniform(-width, width, n)) * one), cfg.logit_min, cfg.logit_max)
    v = rng.integers(cfg.input_min, cfg.input_max + 1, (n, cfg.head_dim))
    return s.astype(np.int64), v


def random_lengths(cfg, rng):
    """Head lengths of a random job: a few heads to many, short to a few tiles, sometimes fewer
    keys than cores."""
    heads = int(rng.integers(1, min(cfg.max_heads, 2 * cfg.cores + 3) + 1))
    top = int(rng.choice([2, cfg.tile, 3 * cfg.tile, 10 * cfg.tile]))
    return rng.integers(1, min(top, cfg.max_context) + 1, heads)


def edge_lengths(cfg, rng):
    """Named jobs at the edges of the partition."""
    cores, q = cfg.cores, 4                       # q keys per core in the boundary jobs
    spans = {}
    for k in range(2, cores):                     # a head from the middle of core f to that of f+k-1
        first = int(rng.integers(0, cores - k + 1))
        start, stop = first * q + 1, (first + k - 1) * q + 3
        spans[f"a head on {k} cores"] = [start, stop - start, cores * q - stop]
    return {
        **spans,
        "one head on every core": [cores * int(rng.integers(1, 3 * cfg.tile)) + int(rng.integers(cores))],
        "a head at every boundary": [q // 2] + [q] * (cores - 1) + [q - q // 2],
        "idle cores": [max(cores - 1, 2)] + ([1] if cores > 2 else []),
        "no cut head": [q] * cores,
        "one key": [1],
        "the last head index on every core": [1] * (cfg.max_heads - 1) + [cores * (cfg.max_heads - 1)],
        "three-core head beside two-core heads": [3, 2 * q + 1, q] + [q] * max(0, cores - 3),
    }


def jobs_for(cfg, seed, count, *, empty_rate=0.0, edges=True):
    rng = np.random.default_rng(seed)
    lengths = list(edge_lengths(cfg, rng).values()) if edges else []
    lengths += [random_lengths(cfg, rng) for _ in range(count)]
    return [TreeJob(cfg, n, rng, empty_rate=empty_rate if k % 2 else 0.0)
            for k, n in enumerate(lengths)]


@functools.lru_cache(maxsize=16)
def _fields(cfg):
    """``{name: (offset, width, count)}`` of the beat layout, read from the layout itself (an
    array field: ``count`` elements of ``width`` bits)."""
    fields = {}
    for name, field in partial_layout(cfg):
        if isinstance(field.shape, data.ArrayLayout):
            fields[name] = (field.offset, Shape.cast(field.shape.elem_shape).width, field.shape.length)
        else:
            fields[name] = (field.offset, Shape.cast(field.shape).width, None)
    return fields


def pack(cfg, beat):
    """Bits of a beat dict in ``partial_layout(cfg)``, as ``layout.const(beat).as_bits()`` (which
    costs about 0.5 ms a beat; the slow sets pack tens of thousands)."""
    bits = 0
    for name, (offset, width, count) in _fields(cfg).items():
        for index, value in enumerate(beat[name] if count is not None else [beat[name]]):
            bits |= (int(value) & ((1 << width) - 1)) << (offset + index * width)
    return bits


def beats(cfg, head, part):
    """The packed beats of one partial (``softmax_vectors.partial_beats``)."""
    return [pack(cfg, beat) for beat in partial_beats(cfg, part, head)]


def vectors(cfg, jobs):
    """``(inputs, outputs, canonical)`` for the fixture: job records, leaf beats, final beats."""
    inputs = {"i_job": [job.record(cfg) for job in jobs]}
    for c in range(cfg.cores):
        inputs[f"i_leaf_{c}"] = [b for job in jobs for head, part in job.leaves[c]
                                 for b in beats(cfg, head, part)]
    outputs = {"o_partial": [b for job in jobs for head, part in sorted(job.finals.items())
                             for b in beats(cfg, head, part)]}
    counts = [len(job.finals) for job in jobs]
    return inputs, outputs, {"o_partial": functools.partial(by_job, cfg, counts)}


def packets_of(cfg, items):
    """Beats grouped into packets by their ``last`` bit (a trailing partial packet kept)."""
    last = 1 << partial_layout(cfg)["last"].offset
    packets, packet = [], []
    for item in items:
        packet.append(item)
        if item & last:
            packets.append(tuple(packet))
            packet = []
    return packets + ([tuple(packet)] if packet else [])


def by_job(cfg, counts, items):
    """Canonical order: packets cut into jobs by ``counts``, sorted by head (then bits) in each."""
    field = partial_layout(cfg)["head"]
    head = lambda packet: (packet[0] >> field.offset) & ((1 << field.width) - 1)
    packets, out, at = packets_of(cfg, items), [], 0
    for count in counts + [len(packets)]:             # anything beyond the jobs: one more group
        group = sorted(packets[at:at + count], key=lambda p: (head(p), p))
        out += [b for packet in group for b in packet]
        at += count
    return out


#: The vector sets of the benches: (seed, random jobs, rate of empty partials) after the edge jobs.
AMARANTH_SET, QUICK_SET, FULL_SET = (31, 12, 0.3), (77, 8, 0.3), (2024, 60, 0.2)
MANY_CORES_SET = (31, 4, 0.3)


@functools.lru_cache(maxsize=32)
def bench_jobs(name, seed, count, empty_rate):
    return jobs_for(CONFIGS[name], seed, count, empty_rate=empty_rate)


@functools.lru_cache(maxsize=32)
def bench_vectors(name, seed, count, empty_rate):
    jobs = bench_jobs(name, seed, count, empty_rate)
    return (jobs, *vectors(CONFIGS[name], jobs))


@pytest.mark.parametrize("name", list(CONFIGS))
def test_pack_is_the_layout(name):
    """The fast packer gives the bits of ``layout.const``, empty partials and extremes included."""
    cfg = CONFIGS[name]
    layout = partial_layout(cfg)
    jobs = bench_jobs(name, *AMARANTH_SET)
    parts = [(head, part) for job in jobs for packets in job.leaves for head, part in packets]
    o_min, o_max = -(1 << (cfg.acc_o_bits - 1)), (1 << (cfg.acc_o_bits - 1)) - 1
    parts.append((cfg.max_heads - 1, golden.Partial(True, cfg.max_min, (1 << cfg.acc_l_bits) - 1,
                                                    np.array([o_min, o_max] * cfg.head_dim)[:cfg.head_dim])))
    for head, part in parts[:40] + parts[-1:]:
        for beat in partial_beats(cfg, part, head):
            assert pack(cfg, beat) == layout.const(beat).as_bits()


# --- the partition and the tree's pairing ------------------------------------------------------------

@pytest.mark.parametrize("cores", [2, 4, 8, 16, 32])
def test_node_boundaries_are_tree_merges(cores):
    """A node merges the head crossing its midpoint; for every span ``first .. last`` those nodes
    are exactly ``tree_merges`` (so the hardware pairing is ``tree_reduce``'s)."""
    cfg = PRESETS["default"].replace(cores=cores)
    nodes = [(level, index) for level in range(1, cfg.tree_levels + 1) for index in range(cores >> level)]
    assert sorted(ReductionTree.boundary(*node) for node in nodes) == list(range(1, cores))
    for first in range(cores):
        for last in range(first, cores):
            crossing = {node for node in nodes if first < ReductionTree.boundary(*node) <= last}
            assert crossing == set(tree_merges(first, last, cores)), (first, last)


@pytest.mark.parametrize("name", list(CONFIGS))
@pytest.mark.parametrize("which", [AMARANTH_SET, QUICK_SET, FULL_SET, MANY_CORES_SET])
def test_jobs_reach_the_edges(name, which):
    """The benches' job sets hold what the tests claim: every boundary crossed, spans of every
    length up to all cores, cores holding two cut heads, idle cores, jobs without cut heads,
    empty partials, the largest head index."""
    cfg = CONFIGS[name]
    jobs = bench_jobs(name, *which)
    spans = {last - first + 1 for job in jobs for first, last in job.spans.values()}
    assert spans == set(range(2, cfg.cores + 1))
    assert {b for job in jobs for b, h in enumerate(job.cross) if h is not None} == set(range(cfg.cores - 1))
    assert any(len(packets) == 2 for job in jobs for packets in job.leaves) == (cfg.cores > 2)
    assert any(not job.finals for job in jobs)
    assert any(not part.valid for job in jobs for packets in job.leaves for _, part in packets)
    assert all(len(packets) <= 2 for job in jobs for packets in job.leaves)
    assert any(cfg.max_heads - 1 in job.finals for job in jobs)
    if cfg.cores > 2:
        assert any(sum(job.lengths) < cfg.cores for job in jobs)


# --- amaranth.sim ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["tiny2", "default", "odd"])
@pytest.mark.parametrize(("idle", "backpressure"), PATTERNS)
def test_amaranth(name, idle, backpressure):
    """Edge jobs and random jobs (half of them with empty partials), every stall pattern."""
    _, inputs, outputs, canonical = bench_vectors(name, *AMARANTH_SET)
    seed = 500 + PATTERNS.index((idle, backpressure))
    simulate(JobFixture(CONFIGS[name]), inputs, outputs, idle=idle, backpressure=backpressure,
             seed=seed, canonical=canonical)


@pytest.mark.parametrize("name", config_params(["cores8", "wide", "cores16"], fast=("cores8",)))
def test_amaranth_many_cores(name):
    """Three and four levels: edge jobs and random jobs under random stalls on every stream."""
    _, inputs, outputs, canonical = bench_vectors(name, *MANY_CORES_SET)
    simulate(JobFixture(CONFIGS[name]), inputs, outputs, idle="random", backpressure="random",
             seed=600, canonical=canonical)


@pytest.mark.parametrize("name", config_params(list(CONFIGS), fast=("tiny2", "default", "odd", "cores8")))
def test_lone_merge_latency(name):
    """One head on cores 0 and 1 and nothing else: merged at node (1, 0), passed by every level
    above; each output beat leaves ``ReductionTree.latency`` (6 per level, 2 compact) cycles after its leaf
    beats, one beat per cycle."""
    cfg = CONFIGS[name]
    jobs = [TreeJob(cfg, [2], np.random.default_rng(3))]
    assert jobs[0].spans == {0: (0, 1)}
    inputs, outputs, canonical = vectors(cfg, jobs)
    dut = JobFixture(cfg)
    latency = (2 if cfg.pipeline == "compact" else 6) * cfg.tree_levels
    assert ReductionTree(cfg).latency == latency
    sent, received = simulate(dut, inputs, outputs, canonical=canonical,
                              latency={"o_partial": ("i_leaf_0", latency, None)})
    assert sent["i_leaf_0"] == sent["i_leaf_1"]                     # the join
    cycles = [cycle for _, cycle in received["o_partial"]]
    assert cycles == list(range(cycles[0], cycles[0] + cfg.beats_per_key))


@pytest.mark.parametrize("name", config_params(["tiny2", "default", "cores8", "cores16"],
                                               fast=("tiny2", "default", "cores8")))
def test_root_back_to_back(name):
    """A different head at every boundary, no stalls: the ``cores - 1`` packets leave the root
    back to back (one beat per cycle, the root's rate), the first ``latency`` cycles after the
    leaves' first beats, although each node passes and merges several packets in turn."""
    cfg = CONFIGS[name]
    jobs = [TreeJob(cfg, edge_lengths(cfg, np.random.default_rng(0))["a head at every boundary"],
                    np.random.default_rng(4))]
    assert sorted(job_head for job_head in jobs[0].cross) == list(range(1, cfg.cores))
    inputs, outputs, canonical = vectors(cfg, jobs)
    sent, received = simulate(JobFixture(cfg), inputs, outputs, canonical=canonical)
    cycles = [cycle for _, cycle in received["o_partial"]]
    first_leaf = min(cycles[0] for name, cycles in sent.items() if name.startswith("i_leaf_"))
    assert first_leaf == 2                          # the job record at edge 1, leaves from edge 2
    assert cycles[0] == first_leaf + ReductionTree(cfg).latency
    assert cycles == list(range(cycles[0], cycles[0] + (cfg.cores - 1) * cfg.beats_per_key))


def test_no_cut_heads():
    """Jobs whose heads each sit in one core: nothing in, nothing out."""
    cfg = CONFIGS["default"]
    rng = np.random.default_rng(0)
    jobs = [TreeJob(cfg, lengths, rng)
            for lengths in ([4, 4, 4, 4], [1], [1, 1, 1], [2, 2, 2, 2], [8, 8, 8, 8])]
    assert all(not job.finals for job in jobs)
    inputs, outputs, canonical = vectors(cfg, jobs)
    assert outputs == {"o_partial": []}
    simulate(JobFixture(cfg), inputs, outputs, canonical=canonical)


def test_wrong_reference_fails():
    """The bench notices one wrong bit of one expected beat, and a swapped pairing."""
    cfg = CONFIGS["default"]
    _, inputs, outputs, canonical = bench_vectors("default", *AMARANTH_SET)
    wrong = list(outputs["o_partial"])
    wrong[-3] ^= 1 << partial_layout(cfg)["o"].offset
    with pytest.raises(AssertionError, match="corrupted"):
        simulate(JobFixture(cfg), inputs, {"o_partial": wrong}, canonical=canonical)


def test_pairing_matters():
    """A head over three cores: the tree's pairing ``(0, 1), 2`` and the other one ``0, (1, 2)``
    give different bits for these partials, and the hardware gives the tree's."""
    cfg = CONFIGS["default"]
    for seed in range(100):
        job = TreeJob(cfg, [3 * 40, 40], np.random.default_rng(seed))
        parts = {core: part for core in range(3) for head, part in job.leaves[core] if head == 0}
        other = golden.merge(cfg, parts[0], golden.merge(cfg, parts[1], parts[2]))
        if not np.array_equal(other.o, job.finals[0].o):
            break
    else:
        raise AssertionError("no job where the pairing matters")
    assert job.spans == {0: (0, 2)} and job.cross == [0, 0, None]
    inputs, outputs, canonical = vectors(cfg, [job])
    simulate(JobFixture(cfg), inputs, outputs, idle="random", backpressure="random", seed=3,
             canonical=canonical)


# --- contract -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", list(CONFIGS))
def test_ports_and_contract(name):
    cfg = CONFIGS[name]
    dut = ReductionTree(cfg)
    layout = partial_layout(cfg)
    members = dut.signature.members
    assert dut.cfg is cfg
    assert members["i_cross"] == In(data.ArrayLayout(cross_layout(cfg), cfg.cores - 1))
    assert [name for name in members if name.startswith("i_leaf_")] == \
        [f"i_leaf_{c}" for c in range(cfg.cores)]
    for c in range(cfg.cores):
        assert members[f"i_leaf_{c}"] == In(stream.Signature(tree_partial_layout(cfg)))
    assert members["o_partial"] == Out(stream.Signature(layout))
    assert dut.leaves == [getattr(dut, f"i_leaf_{c}") for c in range(cfg.cores)]
    node_latency = 2 if cfg.pipeline == "compact" else 6
    take = 0 if cfg.pipeline == "compact" else 1
    assert TreeNode(cfg).latency == take + Merge(cfg).latency + SkidBuffer.latency == node_latency
    assert len(node_stages(cfg)) == take + Merge(cfg).latency
    assert dut.latency == node_latency * cfg.tree_levels
    node, root = TreeNode(cfg), TreeNode(cfg, root=True)
    tagged = stream.Signature(tree_partial_layout(cfg))
    assert node.cfg is cfg and not node.root and root.root
    assert dict(node.signature.members) == {
        "i_up_cross": In(cross_layout(cfg)), "i_a": In(tagged), "i_b": In(tagged),
        "o_partial": Out(tagged)}
    assert dict(root.signature.members) == {
        "i_a": In(tagged), "i_b": In(tagged), "o_partial": Out(stream.Signature(layout))}
    top = Fragment.get(dut, None)
    assert sorted(name for _, name, _ in top.subfragments) == sorted(
        f"node_{level}_{index}" for level in range(1, cfg.tree_levels + 1)
        for index in range(cfg.cores >> level))


@pytest.mark.parametrize("cfg", [None, "tiny", PRESETS["tiny"].to_dict(), 3])
def test_cfg_not_a_config(cfg):
    for unit in (ReductionTree, TreeNode):
        with pytest.raises(TypeError, match=re.escape(f"cfg must be an AttentionConfig, not {cfg!r}")):
            unit(cfg)


def test_one_core():
    with pytest.raises(ValueError, match=re.escape(
            "cores must be at least 2 (a reduction tree merges partials of heads cut across cores), "
            "not 1")):
        ReductionTree(PRESETS["tiny"].replace(cores=1))


#: Lint waivers of the tree: the hierarchy's, plus one for the node's plain (non-stream) port.
TREE_LINT_WAIVERS = {
    **AMARANTH_LINT_WAIVERS, **HIERARCHY_LINT_WAIVERS,
    ("UNUSEDSIGNAL", "Signal is not used: 'i_up_cross*'"):
        "In the tree module Amaranth keeps a named wire for each node's `i_up_cross` port "
        "(`i_up_cross`, `i_up_cross$31`, ...) next to the instance connection that carries the "
        "value, for waveform viewers; being a plain port it has no `__` in its name, so "
        "HIERARCHY_LINT_WAIVERS does not cover it. The port is checked where it is used: in the "
        "node's own lint (test_lint_node, no extra waiver).",
}


@pytest.mark.parametrize("name", ["tiny2", "default", "odd"])
def test_lint(request, name):
    """The whole tree (one and two levels); the node alone at every configuration below."""
    path = bench_dir(request) / "tree.v"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(verilog.convert(ReductionTree(CONFIGS[name]), name="tree", emit_src=False))
    assert verilator_lint(path, waivers=TREE_LINT_WAIVERS) == []


@pytest.mark.parametrize("name", config_params([name for name in TEST_CONFIGS if name in CONFIGS],
                                               fast=("tiny2", "default")))
@pytest.mark.parametrize("root", [False, True], ids=["inner", "root"])
def test_lint_node(request, name, root):
    path = bench_dir(request) / "node.v"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(verilog.convert(TreeNode(CONFIGS[name], root=root), name="node", emit_src=False))
    assert verilator_lint(path, waivers={**AMARANTH_LINT_WAIVERS, **HIERARCHY_LINT_WAIVERS}) == []
    # Icarus Verilog runs an `always @*` process only when one of its inputs changes after time 0;
    # a purely combinational one whose inputs are constant from then on (idle leaves) would stay X
    # and poison the merge pipe. The node's control is therefore written as expressions
    # (`assign`): every process left is a register's next state, which reads rst.
    processes = re.findall(r"always @\* begin(.*?)\n  end\n", path.read_text(), re.S)
    assert processes and all(re.search(r"\brst\b", body) for body in processes)


# --- cocotb on the generated Verilog ----------------------------------------------------------------------

#: The fast tier's cocotb runs (a cold Verilator build of the default tree takes over a minute).
QUICK_RUNS = [("tiny2", "icarus"), ("tiny2", "verilator"), ("default", "icarus")]


@pytest.mark.parametrize(("name", "simulator"), QUICK_RUNS)
def test_cocotb_quick(request, name, simulator):
    """Edge jobs and 8 random jobs, without stalls and with random stalls on every stream."""
    _, inputs, outputs, canonical = bench_vectors(name, *QUICK_SET)
    run_cocotb_bench(JobFixture(CONFIGS[name]), toplevel="tree_jobs", inputs=inputs, outputs=outputs,
                     simulator=simulator, build_dir=bench_dir(request), canonical=canonical, seed=4242,
                     patterns=[("none", "none"), ("random", "random")])


#: The slow tier's cocotb runs: tiny2, default and odd on both simulators, wide on Verilator.
FULL_RUNS = [(name, sim) for name in ("tiny2", "default", "odd") for sim in ("icarus", "verilator")] + \
            [("wide", "verilator")]


@pytest.mark.slow
@pytest.mark.parametrize(("name", "simulator"), FULL_RUNS)
def test_cocotb_full(request, name, simulator):
    """Edge jobs and 60 random jobs, every stall pattern (with a reset between)."""
    _, inputs, outputs, canonical = bench_vectors(name, *FULL_SET)
    run_cocotb_bench(JobFixture(CONFIGS[name]), toplevel="tree_jobs", inputs=inputs, outputs=outputs,
                     simulator=simulator, build_dir=bench_dir(request), canonical=canonical, seed=9001,
                     patterns=PATTERNS)
