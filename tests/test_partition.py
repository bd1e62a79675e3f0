import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from leanattn.hdl.config import PRESETS
from leanattn.sim.partition import (
    core_bounds,
    fa2_shares,
    flashdecoding_shares,
    head_spans,
    partition,
    schedule_shares,
    tree_merges,
    tree_reduce,
)

CORES = st.sampled_from([1, 2, 4, 8, 16])


def job_shapes():
    """Lengths of many kinds: uniform, ragged, 1-key heads, one huge head among tiny ones."""
    return st.one_of(
        st.lists(st.integers(1, 5000), min_size=1, max_size=64),
        st.lists(st.integers(1, 3), min_size=1, max_size=200),
        st.tuples(st.integers(1, 64), st.integers(1, 4096)).map(lambda t: [t[1]] * t[0]),
        st.tuples(st.lists(st.integers(1, 8), max_size=20), st.integers(1000, 1 << 19),
                  st.lists(st.integers(1, 8), max_size=20)).map(lambda t: t[0] + [t[1]] + t[2]),
    )


def check_partition(lengths, cores):
    shares = partition(lengths, cores)
    total = sum(lengths)
    assert len(shares) == cores
    # Every key of every head is covered exactly once, in order: walking the shares core by core
    # visits the flattened key list from first to last.
    walk = [(seg.head, seg.start, seg.stop) for segments in shares for seg in segments]
    expected_head, expected_start = 0, 0
    for head, start, stop in walk:
        if expected_start == lengths[expected_head]:
            expected_head, expected_start = expected_head + 1, 0
        assert (head, start) == (expected_head, expected_start)
        assert start < stop <= lengths[head]
        expected_start = stop
    assert (expected_head, expected_start) == (len(lengths) - 1, lengths[-1])
    # Shares are contiguous and differ by at most one key (so by at most one tile of any size).
    sizes = [sum(seg.length for seg in segments) for segments in shares]
    assert sum(sizes) == total and max(sizes) - min(sizes) <= 1
    bounds = core_bounds(total, cores)
    assert sizes == [bounds[c + 1] - bounds[c] for c in range(cores)]
    # Cut heads: exactly the heads with segments in more than one core, on consecutive cores; a
    # core holds at most two cut heads, its first and its last segment.
    spans = head_spans(shares)
    assert sorted(spans) == list(range(len(lengths)))
    for head, segments in spans.items():
        cores_of_head = [seg.core for seg in segments]
        assert cores_of_head == list(range(cores_of_head[0], cores_of_head[-1] + 1))
        assert sum(seg.length for seg in segments) == lengths[head]
    for segments in shares:
        cut = [i for i, seg in enumerate(segments) if len(spans[seg.head]) > 1]
        assert len(cut) <= 2 and all(i in (0, len(segments) - 1) for i in cut)
    return shares, spans


def check_tree(spans, cores):
    """The merges the tree performs are exactly those of the cut heads: span - 1 per head, each at
    a node whose two subtrees hold the head; combining preserves core order."""
    for segments in spans.values():
        first, last = segments[0].core, segments[-1].core
        merges = tree_merges(first, last, cores)
        assert len(merges) == last - first
        for level, index in merges:
            mid = (2 * index + 1) << (level - 1)
            assert first < mid <= last                     # both halves hold a partial
        leaves = {seg.core: (seg.core,) for seg in segments}
        assert tree_reduce(leaves, cores, lambda a, b: a + b) == tuple(range(first, last + 1))


@settings(max_examples=1500)
@given(job_shapes(), CORES)
def test_partition_properties(lengths, cores):
    _, spans = check_partition(lengths, cores)
    check_tree(spans, cores)


@pytest.mark.parametrize("cores", [2, 4, 8, 16])
def test_one_head_spans_every_core(cores):
    shares, spans = check_partition([100 * cores + 3], cores)
    assert [seg.core for seg in spans[0]] == list(range(cores))
    assert tree_merges(0, cores - 1, cores)[-1] == (cores.bit_length() - 1, 0)   # the root merges


@pytest.mark.parametrize("cores", [2, 4, 8])
def test_many_one_key_heads(cores):
    shares, spans = check_partition([1] * 37, cores)
    assert all(len(segments) == 1 for segments in spans.values())                # nothing cut
    assert [len(segments) for segments in shares] == [
        37 // cores + (c < 37 % cores) for c in range(cores)]


def test_fewer_keys_than_cores_leaves_cores_idle():
    shares, spans = check_partition([1, 2], 8)
    assert [len(segments) for segments in shares] == [1, 1, 1, 0, 0, 0, 0, 0]


def test_core_with_two_cut_heads():
    shares, spans = check_partition([5, 6, 5], 4)       # 16 keys, shares of 4
    middle = shares[1]                                   # keys 4..7: end of head 0, start of head 1
    assert [(seg.head, seg.start, seg.stop) for seg in middle] == [(0, 4, 5), (1, 0, 3)]
    assert len(spans[0]) == 2 and len(spans[1]) == 2


def test_tree_pairing_is_fixed():
    # A head on cores 1..6 of 8: (1 (2 3)) ((4 5) 6) -- the perfect binary tree over core indices.
    leaves = {c: str(c) for c in range(1, 7)}
    assert tree_reduce(leaves, 8, lambda a, b: f"({a} {b})") == "((1 (2 3)) ((4 5) 6))"
    assert tree_merges(1, 6, 8) == [(1, 1), (2, 0), (1, 2), (2, 1), (3, 0)]


def test_invalid_lengths():
    with pytest.raises(ValueError, match="at least 1"):
        partition([3, 0], 2)
    with pytest.raises(ValueError, match="at least one leaf"):
        tree_reduce({}, 4, lambda a, b: a)


# --- the comparison schedules ---------------------------------------------------------------------

def check_grouped(lengths, cores, chunks, shares):
    """fa2 / flashdecoding: each head on the first min(chunks, n) cores of one group, in chunks
    j*n//p .. (j+1)*n//p; a core's heads in increasing order; each head to the group with the
    fewest keys before it (the first such)."""
    assert len(shares) == cores
    spans = head_spans(shares)
    assert sorted(spans) == list(range(len(lengths)))
    load = [0] * (cores // chunks)
    for head, n in enumerate(lengths):
        segs = spans[head]
        group = segs[0].core // chunks
        assert group == min(range(len(load)), key=lambda g: (load[g], g))
        load[group] += n
        parts = min(chunks, n)
        assert [s.core for s in segs] == [group * chunks + j for j in range(parts)]
        assert [(s.start, s.stop) for s in segs] == [(j * n // parts, (j + 1) * n // parts)
                                                    for j in range(parts)]
    for segments in shares:
        heads = [s.head for s in segments]
        assert heads == sorted(set(heads))


@settings(max_examples=150, deadline=None)
@given(lengths=job_shapes(), cores=CORES, data=st.data())
def test_grouped_schedules(lengths, cores, data):
    chunks = data.draw(st.sampled_from([c for c in (1, 2, 4, 8, 16) if c <= cores]))
    check_grouped(lengths, cores, chunks, flashdecoding_shares(lengths, cores, chunks))
    check_grouped(lengths, cores, 1, fa2_shares(lengths, cores))


def test_schedule_shares_follows_the_config():
    cfg = PRESETS["default"]                                  # 4 cores
    lengths = [100, 3, 50, 2]
    assert schedule_shares(lengths, cfg) == partition(lengths, 4)
    assert schedule_shares(lengths, cfg.replace(schedule="fa2")) == fa2_shares(lengths, 4)
    fd = schedule_shares(lengths, cfg.replace(schedule="flashdecoding"))
    assert fd == flashdecoding_shares(lengths, 4, 4)
    assert [[(s.head, s.start, s.stop) for s in segs] for segs in fd] == [
        [(0, 0, 25), (1, 0, 1), (2, 0, 12), (3, 0, 1)], [(0, 25, 50), (1, 1, 2), (2, 12, 25), (3, 1, 2)],
        [(0, 50, 75), (1, 2, 3), (2, 25, 37)], [(0, 75, 100), (2, 37, 50)]]
    fd2 = schedule_shares(lengths, cfg.replace(schedule="flashdecoding", chunks=2))
    assert [[s.head for s in segs] for segs in fd2] == [[0], [0], [1, 2, 3], [1, 2, 3]]


def test_grouped_errors():
    with pytest.raises(ValueError, match="chunks must be a power of two in the range 1..4, not 3"):
        flashdecoding_shares([5], 4, 3)
    with pytest.raises(ValueError, match="every head length must be at least 1"):
        fa2_shares([5, 0], 2)
