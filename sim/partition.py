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

Two more schedules run on the same hardware, for comparison (:func:`schedule_shares`):

* ``fa2`` (FlashAttention-2 style, :func:`fa2_shares`): whole heads. Head by head, in order, each
  goes to the core with the fewest keys so far (the lowest-numbered among equals) -- the static
  form of "a core takes the next head when it is free", so that a job's schedule, and with it its
  cycle count, does not depend on memory timing. No head is cut; the tree has nothing to do.
* ``flashdecoding`` (:func:`flashdecoding_shares`): the cores form groups of ``k = chunks``
  consecutive cores (``k`` a power of two, so a group is one subtree of the reduction tree). Head
  by head, each goes to the group with the fewest keys so far; its ``p = min(k, n)`` chunks, chunk
  ``j`` holding keys ``[j*n//p, (j+1)*n//p)``, go to the group's first ``p`` cores in order. The
  tree merges each head inside its group's subtree.

Under every schedule a core processes its segments in increasing head order, and every head's
partials sit on cores that :func:`tree_reduce` combines the same way.
"""

from dataclasses import dataclass

import numpy as np

__all__ = ["Segment", "partition", "core_bounds", "head_spans", "tree_reduce", "tree_merges",
           "fa2_shares", "flashdecoding_shares", "schedule_shares"]


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


def _head_lengths(lengths):
    lengths = [int(n) for n in np.asarray(lengths).reshape(-1)]
    if any(n < 1 for n in lengths):
        raise ValueError("every head length must be at least 1")
    return lengths


def partition(lengths, cores):
    """Segments of each core, in processing order: a list of ``cores`` lists of :class:`Segment`."""
    lengths = _head_lengths(lengths)
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


def _least_loaded(load):
    """The index of the smallest entry, the first among equals."""
    return min(range(len(load)), key=load.__getitem__)


def fa2_shares(lengths, cores):
    """Whole heads: each, in order, to the core with the fewest keys so far (the first such)."""
    return flashdecoding_shares(lengths, cores, 1)


def flashdecoding_shares(lengths, cores, chunks):
    """Each head in ``min(chunks, n)`` near-equal chunks on the least-loaded group of ``chunks``
    consecutive cores (see the module docstring); ``chunks`` a power of two up to ``cores``."""
    lengths = _head_lengths(lengths)
    if not (1 <= chunks <= cores and chunks & (chunks - 1) == 0 and cores % chunks == 0):
        raise ValueError(f"chunks must be a power of two in the range 1..{cores}, not {chunks}")
    load = [0] * (cores // chunks)
    shares = [[] for _ in range(cores)]
    for head, n in enumerate(lengths):
        group = _least_loaded(load)
        load[group] += n
        parts = min(chunks, n)
        for j in range(parts):
            core = group * chunks + j
            shares[core].append(Segment(core, head, j * n // parts, (j + 1) * n // parts))
    return shares


def schedule_shares(lengths, cfg):
    """The segments of every core under ``cfg.schedule`` (``lean``, ``fa2`` or ``flashdecoding``)."""
    if cfg.schedule == "lean":
        return partition(lengths, cfg.cores)
    if cfg.schedule == "fa2":
        return fa2_shares(lengths, cfg.cores)
    if cfg.schedule == "flashdecoding":
        return flashdecoding_shares(lengths, cfg.cores, cfg.head_chunks)
    raise ValueError(f"unknown schedule {cfg.schedule!r}")


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
