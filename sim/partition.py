"""Stream-K partition of a decode job over the cores, and the fixed pairing of the reduction tree.

Work is counted in keys. The heads of a job (flattened b-major, index ``b*H + h``) are laid end to end
into one list of ``N = sum(lengths)`` keys, and the cores take equal contiguous shares in
order (:func:`core_bounds`): shares differ by at most one key, may start and end anywhere, and cross
head boundaries. The piece of one head inside one core's share is a :class:`Segment`.

A head whose keys all sit in one core is finished there. A head cut across cores leaves one partial
per core, on a run of consecutive cores ``first .. last``; a core holds at most two cut heads (its
first and its last segment). The reduction tree is the perfect binary tree over core indices; the
partials of one head are combined at every tree node where both subtrees hold a partial of that head
(:func:`tree_reduce`), so a head spanning ``k`` cores takes exactly ``k - 1`` merges, in a pairing
that depends only on which cores it spans.
"""

from dataclasses import dataclass

import numpy as np

__all__ = ["Segment", "partition", "core_bounds", "head_spans", "tree_reduce", "tree_merges"]


@dataclass(frozen=True)
class Segment:
    """Keys ``start .. stop-1`` (head-relative) of head ``head``, processed by core ``core``."""
    core:  int
    head:  int
    start: int
    stop:  int

    @property
    def length(self):
        return self.stop - self.start


def core_bounds(total, cores):
    """Global key offsets of the shares: core ``c`` takes ``[b[c], b[c+1])``.

    With ``total = q * cores + r``, the first ``r`` cores take ``q + 1`` keys and the others ``q``,
    so idle cores (when there are fewer keys than cores) are the last ones and a cut head always
    spans consecutive busy cores.
    """
    q, r = divmod(total, cores)
    return [c * q + min(c, r) for c in range(cores + 1)]


def partition(lengths, cores):
    """Segments of each core, in processing order: a list of ``cores`` lists of :class:`Segment`."""
    lengths = [int(n) for n in np.asarray(lengths).reshape(-1)]
    if any(n < 1 for n in lengths):
        raise ValueError("every head length must be at least 1")
    starts = np.concatenate([[0], np.cumsum(lengths, dtype=np.int64)])
    bounds = core_bounds(int(starts[-1]), cores)
    shares = []
    for core in range(cores):
        lo, hi = bounds[core], bounds[core + 1]
        segments = []
        head = int(np.searchsorted(starts, lo, side="right")) - 1
        while lo < hi:
            head_end = int(starts[head + 1])
            stop = min(hi, head_end)
            segments.append(Segment(core, head, lo - int(starts[head]), stop - int(starts[head])))
            lo = stop
            head += 1
        shares.append(segments)
    return shares


def head_spans(shares):
    """``{head: [segments in core order]}`` for every head of a partition."""
    spans = {}
    for segments in shares:
        for segment in segments:
            spans.setdefault(segment.head, []).append(segment)
    return spans


def tree_reduce(leaves, cores, combine):
    """Combine ``leaves`` (``{core: value}``) over the perfect binary tree on ``0 .. cores-1``.

    ``combine(left, right)`` runs at every node whose two subtrees both hold a value; a subtree
    without one passes the other side up unchanged (the empty partial is the identity).
    """
    def node(lo, hi):
        if hi - lo == 1:
            return leaves.get(lo)
        mid = (lo + hi) // 2
        left, right = node(lo, mid), node(mid, hi)
        if left is None:
            return right
        if right is None:
            return left
        return combine(left, right)

    if not leaves:
        raise ValueError("tree_reduce needs at least one leaf")
    return node(0, cores)


def tree_merges(first, last, cores):
    """Tree nodes ``(level, index)`` that merge a head spanning cores ``first .. last``, bottom up.

    Level ``k`` node ``i`` covers cores ``[i * 2**k, (i+1) * 2**k)``.
    """
    merges = []

    def node(level, index):
        lo, hi = index << level, (index + 1) << level
        if hi <= first or lo > last:
            return False
        if level == 0:
            return True
        left, right = node(level - 1, 2 * index), node(level - 1, 2 * index + 1)
        if left and right:
            merges.append((level, index))
        return left or right

    node((cores - 1).bit_length(), 0)
    return merges
