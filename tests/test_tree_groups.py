# amaranth: UnusedElaboratable=no
"""ReductionTree under ``flashdecoding``: heads in chunks on groups of cores, merged inside each
group's subtree by the split bits, every chunked head leaving once, bit-exact with
``golden.reduce_partials`` -- the pairing :func:`leanattn.sim.partition.tree_reduce` gives the
chunks of :func:`leanattn.sim.partition.flashdecoding_shares`.

Each job runs in its own amaranth.sim run (``i_split`` is held for a whole job), under every
stall pattern of the tree's own tests; the jobs mix long heads (a chunk on every core of the
group), heads shorter than the group (chunks on its first cores only), one-key heads (no chunk on
a second core: never in the tree) and idle groups.
"""

import functools

import numpy as np
import pytest
from amaranth.hdl import Module
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out
from test_tree import PATTERNS, beats, by_job, head_keys

from leanattn.hdl.config import PRESETS
from leanattn.hdl.layouts import partial_layout
from leanattn.hdl.tree import ReductionTree
from leanattn.sim import golden
from leanattn.sim.configs import TINY2
from leanattn.sim.partition import flashdecoding_shares, head_spans
from leanattn.sim.stream_bench import simulate

#: (preset, cores, chunks): one group over all cores, groups of two and of four.
CASES = {
    "tiny-2":    TINY2.replace(schedule="flashdecoding"),
    "default-4": PRESETS["default"].replace(schedule="flashdecoding"),
    "default-2": PRESETS["default"].replace(schedule="flashdecoding", chunks=2),
    "cores8-4":  PRESETS["default"].replace(cores=8, schedule="flashdecoding", chunks=4),
}


class SplitFixture(wiring.Component):
    """The tree with ``i_split`` tied to one job's split bits."""

    def __init__(self, cfg, split):
        self._cfg, self._split = cfg, split
        layout = partial_layout(cfg)
        super().__init__({
            **{f"i_leaf_{c}": In(stream.Signature(layout)) for c in range(cfg.cores)},
            "o_partial": Out(stream.Signature(layout)),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.tree = tree = ReductionTree(self._cfg)
        for o, bits in enumerate(self._split):
            m.d.comb += tree.i_split[o].eq(bits)
        for c, leaf in enumerate(tree.leaves):
            outer = getattr(self, f"i_leaf_{c}")
            m.d.comb += [leaf.valid.eq(outer.valid), outer.ready.eq(leaf.ready),
                         leaf.payload.partial.eq(outer.payload),
                         leaf.payload.merge.eq(tree.leaf_merge(c, outer.payload.head))]
        wiring.connect(m, tree.o_partial, wiring.flipped(self.o_partial))
        return m


def split_bits(cfg, lengths):
    """Entry ``o - 1``: bit ``h`` set when head ``h`` has more than ``o`` keys (the scheduler's)."""
    return [sum(1 << h for h, n in enumerate(lengths) if n > o) for o in range(1, cfg.head_chunks)]


def chunked_job(cfg, lengths, rng):
    """Leaf packets (per core, head order) and expected finals of a job's chunked heads."""
    leaves, finals = [[] for _ in range(cfg.cores)], {}
    for head, segs in sorted(head_spans(flashdecoding_shares(lengths, cfg.cores, cfg.head_chunks)).items()):
        if len(segs) < 2:
            continue
        s, v = head_keys(cfg, rng, lengths[head])
        parts = {seg.core: golden.online_softmax(cfg, s[seg.start:seg.stop], v[seg.start:seg.stop])
                 for seg in segs}
        for core, part in parts.items():
            leaves[core].append((head, part))
        finals[head] = golden.reduce_partials(cfg, parts)
    return leaves, finals


def job_lengths(cfg, rng, count):
    """Fixed shapes (one head on every group, short heads of 1 .. chunks keys, one-key heads),
    then random mixes."""
    k = cfg.head_chunks
    shapes = [[5 * k + 3], list(range(1, k + 2)), [1, 1, 2, 1], [3 * cfg.tile, 1, k - 1 or 1, 40]]
    while len(shapes) < count:
        heads = int(rng.integers(1, min(cfg.max_heads, 12) + 1))
        top = int(rng.choice([k + 1, cfg.tile, 4 * cfg.tile]))
        shapes.append([int(n) for n in rng.integers(1, top + 1, heads)])
    return [[min(n, cfg.max_context) for n in shape[:cfg.max_heads]] for shape in shapes]


#: The fast tier runs no stalls and random stalls; the fixed patterns are in the slow tier.
STALLS = [pytest.param(*p, marks=() if p[0] == p[1] else pytest.mark.slow) for p in PATTERNS]


@pytest.mark.parametrize("name", list(CASES))
@pytest.mark.parametrize(("idle", "backpressure"), STALLS)
def test_chunked_heads_merge_in_their_group(name, idle, backpressure):
    cfg = CASES[name]
    rng = np.random.default_rng(sorted(CASES).index(name))
    merged = 0
    for number, lengths in enumerate(job_lengths(cfg, rng, 6)):
        leaves, finals = chunked_job(cfg, lengths, rng)
        inputs = {f"i_leaf_{c}": [b for head, part in leaves[c] for b in beats(cfg, head, part)]
                  for c in range(cfg.cores)}
        outputs = {"o_partial": [b for head, part in sorted(finals.items()) for b in beats(cfg, head, part)]}
        simulate(SplitFixture(cfg, split_bits(cfg, lengths)), inputs, outputs, idle=idle,
                 backpressure=backpressure, seed=number,
                 canonical={"o_partial": functools.partial(by_job, cfg, [len(finals)])})
        merged += len(finals)
    assert merged > 0


def test_split_bits_are_the_partition():
    """A head has a chunk on the cores from offset o of its group on exactly when it has more than
    o keys: the bits the tree uses are the shares' own."""
    cfg = CASES["cores8-4"]
    lengths = [1, 2, 3, 4, 9, 1, 4, 2]
    shares = flashdecoding_shares(lengths, cfg.cores, cfg.head_chunks)
    for o, bits in enumerate(split_bits(cfg, lengths), start=1):
        for head in range(len(lengths)):
            on = any(s.head == head and s.core % cfg.head_chunks >= o for segs in shares for s in segs)
            assert bool(bits >> head & 1) == on
