"""Stream vectors of the online-softmax units, derived from the golden model.

A *segment* is a run of keys of one head in one core: logits ``s`` ``(n,)`` and values ``v``
``(n, d)``. These helpers turn segments into the payloads the hardware exchanges -- logits in,
exp2 arguments and weights with their tags, value beats, partial-state beats -- using
:func:`leanattn.sim.golden.tile_schedule`, :func:`~leanattn.sim.golden.exp2` and
:func:`~leanattn.sim.golden.online_softmax`, and packs them with the units' own layouts.
"""

import numpy as np

from ..hdl.layouts import partial_layout
from ..hdl.pv import v_layout, weight_layout
from ..hdl.tilebuf import key_layout, score_layout
from . import golden

__all__ = ["Segment", "random_segments", "segments_of_keys", "score_items", "key_items", "weight_items",
           "v_items", "partial_items", "partial_beats", "pack"]


class Segment:
    """Logits and values of one segment of ``head``."""

    def __init__(self, head, s, v):
        self.head = int(head)
        self.s = np.asarray(s, dtype=np.int64)
        self.v = np.asarray(v, dtype=np.int64)


def pack(layout, items):
    """Payload bits of dicts (or arrays) under ``layout``."""
    return [layout.const(item).as_bits() for item in items]


def random_segments(cfg, rng, count, *, max_len=None, spread=None):
    """``count`` segments of random length, logits spread over about ±``spread`` (base 2, default
    random per segment: flat, moderate or extreme) and random values; heads cycle, repeating so
    that consecutive segments may belong to the same head."""
    max_len = max_len or 3 * cfg.tile + 5
    one = 1 << cfg.logit_frac_bits
    segments = []
    for i in range(count):
        n = int(rng.integers(1, max_len + 1))
        width = spread if spread is not None else rng.choice([0.5, 6, 40, 127])
        base = rng.uniform(-width, width) if rng.random() < 0.5 else 0
        s = np.clip(np.round((base + rng.uniform(-width, width, n)) * one), cfg.logit_min, cfg.logit_max)
        if rng.random() < 0.3:
            s = np.sort(s)                               # the max rises every tile
        v = rng.integers(cfg.input_min, cfg.input_max + 1, (n, cfg.head_dim))
        segments.append(Segment(i % cfg.max_heads, s, v))
    return segments


def segments_of_keys(cfg, rng, keys, **kwargs):
    """Random segments (as :func:`random_segments`) until they hold at least ``keys`` keys."""
    segments = []
    while sum(len(seg.s) for seg in segments) < keys:
        segments += random_segments(cfg, rng, 16, **kwargs)
    return [Segment(i % cfg.max_heads, seg.s, seg.v) for i, seg in enumerate(segments)]


def score_items(cfg, segments):
    """Logits into the tile buffer: ``{s, seg_last, head}`` per key."""
    return [{"s": int(x), "seg_last": int(j == len(seg.s) - 1), "head": seg.head}
            for seg in segments for j, x in enumerate(seg.s)]


def key_items(cfg, segments):
    """What the tile buffer replays: ``{t, tag}`` per key (golden ``tile_schedule``)."""
    items = []
    for seg in segments:
        n = len(seg.s)
        starts, run_max = golden.tile_schedule(cfg, seg.s)
        for i, start in enumerate(starts):
            stop = starts[i + 1] if i + 1 < len(starts) else n
            for j in range(start, stop):
                items.append({"t": int(seg.s[j] - (int(run_max[i]) << cfg.logit_frac_bits)), "tag": {
                    "head": seg.head, "m": int(run_max[i]),
                    "delta": int(run_max[i] - run_max[i - 1]) if i and j == start else 0,
                    "first_tile": int(j == start), "first_seg": int(j == 0),
                    "last_seg": int(j == n - 1)}})
    return items


def weight_items(cfg, segments):
    """What the exp2 unit delivers: ``{w, tag}`` per key (golden ``exp2`` of the replayed keys)."""
    keys = key_items(cfg, segments)
    weights = golden.exp2(cfg, np.array([k["t"] for k in keys], dtype=np.int64))
    return [{"w": int(w), "tag": k["tag"]} for w, k in zip(weights, keys)]


def v_items(cfg, segments):
    """Value beats: ``head_dim // lanes`` per key, ``lanes`` elements each."""
    lanes = cfg.lanes
    return [[int(x) for x in row[b * lanes:(b + 1) * lanes]]
            for seg in segments for row in seg.v for b in range(cfg.beats_per_key)]


def partial_beats(cfg, partial, head):
    """The beats of one partial state (golden :class:`~leanattn.sim.golden.Partial`)."""
    lanes, beats = cfg.lanes, cfg.beats_per_key
    return [{"head": head, "valid": int(partial.valid), "m": int(partial.m), "l": int(partial.l),
             "o": [int(x) for x in partial.o[b * lanes:(b + 1) * lanes]], "last": int(b == beats - 1)}
            for b in range(beats)]


def partial_items(cfg, segments):
    """Partial beats of every segment (golden ``online_softmax``)."""
    return [beat for seg in segments
            for beat in partial_beats(cfg, golden.online_softmax(cfg, seg.s, seg.v), seg.head)]


LAYOUTS = {
    "score": score_layout, "key": key_layout, "weight": weight_layout, "v": v_layout,
    "partial": partial_layout,
}
