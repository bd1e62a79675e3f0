"""Cycle model of the accelerator: a job's ``o_cycles`` predicted without simulating the RTL.

:func:`predict` gives the cycle count of any job -- any number of heads, any lengths, also beyond a
configuration's ``max_heads`` and ``max_context`` -- for a memory that answers every request
``latency`` cycles later than :class:`~leanattn.hdl.kvmem.KVMemory` alone (the system bench's
``latency``) and nothing that stalls. It equals ``LeanAttention.o_cycles`` exactly, cycle for
cycle, on every job ``tests/test_perf.py`` runs on the RTL: one Verilator run of the system bench
per case, ``tiny`` (one core) and ``tiny2`` (two cores) at latency 2 (fast tier), ``tiny2`` at 7,
``default`` at latency 5, plus cycle counts measured at ``default`` latency 2 and ``tiny`` and
``tiny2`` latencies 2 to 150. With ``partial_slices=True`` it is the count of
``LeanAttention(cfg, partial_slices=True)`` (a register slice behind every core's partial),
compared the same way at ``tiny2`` latency 2 (fast tier; also on one core), ``default`` latency 3
and ``default`` under ``flashdecoding`` at latency 5. With ``request_slices=True`` it is the count
of ``LeanAttention(cfg, request_slices=True)`` (a register slice on every core's K and V
requests), compared at ``tiny2`` latency 2 (fast tier), ``default`` latencies 3 and 150, and with
both kinds of slices at ``tiny2`` latency 2 and ``default`` latency 3. With
``registered_grant=True`` it is the count of ``LeanAttention(cfg, registered_grant=True)`` (the
packet arbiter's grant a register), compared at ``tiny2`` latencies 0 (also with the partial
slices) and 7, ``default`` under ``flashdecoding`` at latency 5, and with both kinds of slices
(the board's options with block RAM) at ``default`` latencies 0 and 3.

The model
---------
Cycles count from the job's first input transfer (cycle 0) to its last output beat.

1. **Load and scan.** Descriptors and query beats arrive one per cycle each; the job report follows
   2 cycles after the last (``heads * bpk - 1``); the scheduler scans one head per cycle, and every
   segment generator offers its first segment at ``F = heads * (bpk + 1) + 6``, the next ones 2
   cycles after the previous was taken (``bpk = head_dim // lanes``).
2. **K side of a core** (closed form per segment). A segment enters when the K command queue has
   room; its K request leaves the next cycle, but no sooner than a cycle after the bank took the
   previous request (the bank holds one request beside the one it answers) and after the request
   ``outstanding`` before it was fully read. The beats of one request follow the previous one's
   back to back; the first arrives ``M = KVBank.latency + latency`` cycles after its request.
   With ``request_slices`` a register slice (two entries) stands between the core's request
   queue and the bank: a request reaches the bank a cycle after it left the core at the
   earliest, and leaves the core only once the request two back has left the slice (the rule of
   both ports, K and V: :func:`_request`).
   Each key's logit reaches the tile buffer ``logit_latency`` cycles after its last K beat, so a
   tile *closes* ``logit_latency`` cycles after the K beat that ends it. The K side never waits
   for the V side in a way that matters: it only stalls when four tiles wait in the tile buffer,
   and then every tile the PV pass needs next is already closed.
3. **V side of a core** (per tile). The PV accumulator takes the weight of a tile's first key
   ``weight_latency`` cycles after the tile closes (tile buffer replay and exp2), and then one
   weight every ``bpk`` cycles with that key's ``bpk`` value beats. Inside a segment a new tile
   starts when both the previous tile's keys are done and the tile is closed. After a segment's
   last value beat the partial leaves ``PVAccumulator.latency`` cycles later, ``bpk`` beats; the
   next segment's first weight is taken the cycle after the partial's last beat was taken.
4. **Downstream** (simulated cycle by cycle, only while something moves). The partial register of
   every core, the leaf buffers (one whole partial each), the tree nodes (take registers and a four-stage
   merge pipe, then a skid buffer each; a node merges the head crossing its boundary and passes every other
   packet, the left input first), the round-robin packet arbiter (none for one core with the
   compact pipeline), the scale lookup, the skid buffer (none with the compact pipeline) and the
   normalizer (one beat per ``norm_cycles`` cycles, output ``norm_latency`` cycles
   later) -- register for register, with their ready rules. Whether a core's partial is taken at
   once or waits for the arbiter, for a full leaf buffer or for the tree decides when that core's
   next segment may start, so the cores and the downstream are advanced together in time order.
   With ``partial_slices`` a register slice stands between every core's partial register and the
   routing: it takes a beat whenever its skid register is empty, so every partial beat reaches the
   leaf buffer or the arbiter a cycle later, and a core whose partial waits has it taken up to two
   beats sooner (the slice holds two). With ``registered_grant`` the arbiter serves the input its
   grant rests on and moves the grant a cycle ahead: at a packet's last beat, or while no packet
   is under way and that input has nothing, to the first input after it with a beat waiting.

The partition is an input: :func:`predict` takes the segment list of every core from the
configuration's schedule (:func:`leanattn.sim.partition.schedule_shares`: ``lean``, ``fa2`` or
``flashdecoding``), or any other list given as ``shares``. A head cut across cores is merged at
every tree node whose two subtrees hold a part of it, as :func:`leanattn.sim.partition.tree_reduce`
pairs them.

Cost: closed forms per segment and per tile, and one step per downstream cycle in which a beat
moves (about ``heads * bpk * norm_cycles`` steps): a 524288-key job of 64 heads on 16 cores takes
well under 0.1 s (``wide`` with 16 cores); 2000 one-key heads at ``tiny`` about 2 s.

Exact cycle formulas for regular jobs
-------------------------------------
Notation: ``H`` heads of ``n`` keys each on ``C`` cores; ``B = head_dim // lanes`` (beats per key),
``T = tile``, ``R = norm_cycles``, ``lev = tree_levels``, ``M = 2 + latency`` (request to first
beat), ``Lq = logit_latency``, ``W = weight_latency``, ``P = 3`` (last value beat to the first
partial beat), ``NL = norm_latency``, ``X = partial_slice`` (1 with ``partial_slices``, else 0),
``Z = request_slice`` (1 with ``request_slices``, else 0), ``G = merge_latency + 1`` (a tree
node: 6, or 2 with the compact pipeline) -- all in
:func:`timing`. Per preset: ``tiny`` B 32, T 16, C 1, R 4, Lq 11, W 4, NL 11, lev 0;
``default`` B 8, T 32, C 4, R 1, Lq 13, W 5, NL 12, lev 2; ``wide`` B 8, T 64, C 8, R 1, Lq 14,
W 7, NL 12, lev 3. Every formula starts with the cycle at
which a core whose first segment has ``k`` keys takes that segment's last value beat::

    E(k) = H * (B + 1) + 6 + M + Z + Lq + W + (min(T, k) + k) * B

(loading ``H * B`` query beats, the scan of ``H`` heads, the K request -- through the request
slice a cycle later; a core's later requests are off the critical path of these jobs -- the
first tile's QK pass, the logit and weight latencies, then the PV pass of all ``k`` keys: the last
tile's PV pass after its QK pass is what a core pays once per segment start).

*Heads split over cores* -- ``H`` divides ``C``, ``H < C``, ``n`` a multiple of ``C / H``; every
core holds one segment of ``n0 = n * H / C`` keys and every partial is merged in the tree
(:func:`split_heads_cycles`; ``H = 1`` is one head over all cores)::

    cycles = E(n0) + P + X + 1 + G * lev + D + R * (B - 1) + NL + (H - 1) * R * B

(the partial slice, leaf buffer 1, tree G per level, ``D`` for the arbiter, the scale lookup and
the final skid buffer -- 3, or 2 with the compact pipeline, which has no final slice -- then the
normalizer: ``B`` beats of each head, ``R`` cycles apart). For one head of any ``n >= C`` the same holds with
``n0 = ceil(n / C)``.

*Whole heads* -- ``H = m * C`` (:func:`whole_heads_cycles`): every core holds ``m`` whole heads,
nothing is merged. With ``S = (n + 1) * B + 3 + (B - 1 - 2 * X - Q) * (R - 1)`` (the cycles from
one segment's end to the next on a core whose partial finds the normalizer idle; the partial
slice's two registers let a core go on two beats sooner, and so do the ``Q`` beats the registers
from the arbiter to the normalizer hold: 4 with the full pipeline, 2 with the compact one, 1 for
one core, which has no arbiter then; needs ``B >= 1 + 2 * X + Q`` if ``R > 1``)::

    cycles = E(n) + P + X + D + NL + max((m - 1) * S + (C - 1) * R * B + R * (B - 1), R * (H * B - 1))

The first term: the cores' partials, ready in the same cycle, go through the arbiter one after the
other, so the last core is ``(C - 1) * R * B`` cycles late, once; it holds while ``S >= C * R *
B``. The second: the normalizer (one beat per ``R`` cycles, ``H * B`` beats) never waits, which
happens for short heads (``S < C * R * B``: at ``default`` ``n <= 2``, at ``tiny`` on two cores ``n <= 4``).

``tests/test_perf.py`` checks both formulas against :func:`predict` on grids of ``(H, n)`` and
latencies, for every preset, with and without ``partial_slices`` and ``request_slices``, and
:func:`predict` against the RTL. Other shapes (ragged lengths, heads cut unevenly) have no closed
form worth stating: a core's segments, its cut partials waiting in the leaf buffers and the order
of the arbiter's grants all shift the end by a few beats; :func:`predict` covers them.

Limits
------
Exact for a memory without stalls and an output that is always ready, as in the system bench with
``stall_rate=0``; compared with the RTL at latencies 2 to 150, at ``tiny``, ``default`` and the
test configuration ``odd`` (3 lanes, interpolated exp2); ``wide`` shares every rule, its constants
are checked against its units, but a run of it has not been compared. With ``head_dim == lanes``
(one beat per key) the model has not been compared with the RTL: there the one-beat requests of the
bank and the bubbles of the exp2 pipe could add cycles it does not count. Memory stalls, a slow
output consumer and resets are outside the model.
"""

import dataclasses
import json
import zipfile
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from ..hdl.config import AttentionConfig, bits_for, ceil_log2
from .partition import schedule_shares

__all__ = [
    "Timing", "timing", "predict", "Prediction", "SegmentTiming", "CoreTimeline", "Merge",
    "whole_heads_cycles", "split_heads_cycles", "read_job_lengths", "add_parser", "run", "report",
]


# --- constants of the hardware ----------------------------------------------------------------------
# Each is the documented latency of one unit; tests/test_perf.py checks every one against the unit.

#: SegmentGen: one segment every 2 cycles (a descriptor read, then the segment).
GEN_INTERVAL = 2
#: Scheduler: job transfer -> first segment offered is ``heads + SCAN_TO_SEGMENT`` cycles (a read
#: cycle, one head per cycle, the done state, the start transfer, the generator's read and emit).
SCAN_TO_SEGMENT = 5
#: JobLoader: the report can be taken 2 cycles after the later of the two ``last`` transfers.
LOAD_TO_JOB = 2
#: AttentionCore.issue_latency: segment transfer -> request offered.
ISSUE = 1
#: KVBank.latency: request transfer -> first beat on an idle port.
BANK_LATENCY = 2

def _for_range(lo, hi):
    """(signed, width) of QFormat.for_range(lo, hi)."""
    if lo < 0:
        bits = 1
        while not (-(1 << (bits - 1)) <= lo and hi < 1 << (bits - 1)):
            bits += 1
        return True, bits
    return False, bits_for(hi)


def _cuts(lo, hi, low_bits, dsp_bits):
    signed, width = _for_range(lo, hi)
    cuts, off = [], 0
    while width - off > dsp_bits:
        cuts.append((off, False))
        off += low_bits
    cuts.append((off, signed))
    return cuts


def _phases(x_range, y_range, dsp_bits, cycles, count=1):
    """``SlicedProducts(...).phases``: cycles a shared-multiplier product takes (same plan)."""
    def plan(low_bits):
        xs, ys = _cuts(*x_range, low_bits, dsp_bits), _cuts(*y_range, dsp_bits, dsp_bits)
        order = []
        for _ in range(count):
            order += [s for _, s in sorted(((-(xo + yo), xs_) for xo, xs_ in xs for yo, _ in ys),
                                           key=lambda item: item[0])]
        multipliers = -(-len(order) // cycles)
        phases = -(-len(order) // multipliers)
        order = [None] * (phases * multipliers - len(order)) + order
        table = [order[p * multipliers:(p + 1) * multipliers] for p in range(phases)]
        mixed = any(len({s for s in column if s is not None}) > 1 for column in zip(*table))
        return phases, mixed
    phases, mixed = plan(dsp_bits)
    return plan(dsp_bits - 1)[0] if mixed else phases


@dataclass(frozen=True)
class Timing:
    """The unit latencies and depths of one configuration that the model uses (cycles)."""
    bpk:            int     # beats per key, head_dim // lanes
    tile:           int
    cores:          int
    tree_levels:    int
    memory_latency: int     # request transfer -> its first K/V beat at the core: bank + extra
    logit_latency:  int     # last K beat at the core -> the key's logit into the tile buffer
    weight_latency: int     # a tile's closing logit -> its first weight into the PV accumulator
    pv_latency:     int     # last value beat -> first partial beat offered
    outstanding:    int     # requests in flight per port
    k_queue:        int     # segments the K command queue holds
    norm_cycles:    int     # normalizer: cycles per beat
    norm_latency:   int     # normalizer: input beat -> output beat
    merge_latency:  int     # a tree node's take registers and merge pipe: input beat -> output beat
    partial_slice:  int     # a core's partial register -> the routing: 0, or 1 through a register slice
    request_slice:  int     # a core's request -> the bank's request port: 0, or 1 through a register slice
    pipe_slices:    bool    # the tree nodes' register slices are PipeRegisters (compact)
    final_slice:    bool    # a skid buffer between the scale lookup and the normalizer (not compact)
    arbiter:        bool    # the arbiter's register (not on one core with the compact pipeline)
    registered_grant: bool  # the arbiter's grant is a register (PacketArbiter(registered_grant=True))


def timing(cfg, latency=2, partial_slices=False, request_slices=False, registered_grant=False):
    """:class:`Timing` of ``cfg`` for a memory answering ``latency`` cycles later than the bank;
    ``partial_slices``, ``request_slices``, ``registered_grant``: for ``LeanAttention(cfg,
    partial_slices=True)`` and so on."""
    _check_cfg(cfg)
    _check_latency(latency)
    _check_slices("partial_slices", partial_slices)
    _check_slices("request_slices", request_slices)
    _check_slices("registered_grant", registered_grant)
    bpk = cfg.beats_per_key
    # ScoreScale: 5 stages (4 compact), plus the load stage and interval - 1 cycles with shared
    # multipliers.
    interval = _phases((-cfg.qk_max, cfg.qk_max), (0, (1 << cfg.scale_bits) - 1), cfg.dsp_bits, bpk)
    stages = 4 if cfg.pipeline == "compact" else 5
    scale = stages if interval == 1 else stages + interval
    dot = 1 + (ceil_log2(cfg.lanes) + 2) // 2                  # DotProduct.latency
    skid = 1                                                    # SkidBuffer.latency
    logit = 1 + skid + dot + skid + scale                       # AttentionCore.logit_latency
    exp2 = 2 if cfg.pipeline == "compact" else 5 if cfg.exp_interp_bits else 3   # len(exp2_stages)
    if cfg.pipeline == "compact":                               # len(recip_stages(cfg))
        recip = 2 if cfg.recip_interp_bits else 1
    else:
        recip = 6 if cfg.recip_interp_bits else 4
    if cfg.norm_cycles == 1:
        norm = 6                                                # align, scale, mul, sum, round, out
    else:
        mant_max = (1 << cfg.scale_bits) - 1
        factor_max = (((1 << cfg.recip_frac_bits) * mant_max + (1 << (cfg.recip_frac_bits - 1)))
                      >> cfg.recip_frac_bits)
        top = 1 << (cfg.norm_o_bits - 1)
        fac = _phases((0, 1 << cfg.recip_frac_bits), (0, mant_max), cfg.dsp_bits, cfg.norm_cycles)
        lane = _phases((-top, top - 1), (0, factor_max), cfg.dsp_bits, cfg.norm_cycles, cfg.lanes)
        norm = 6 + fac + lane                                   # scale, fac*, lanes, mul*, round, out
    return Timing(
        bpk=bpk, tile=cfg.tile, cores=cfg.cores, tree_levels=cfg.tree_levels,
        memory_latency=BANK_LATENCY + latency,
        logit_latency=logit,
        weight_latency=2 + exp2,                                # TileBuffer.latency + exp2
        pv_latency=3 if cfg.beats_per_key > 1 else 4,           # PVAccumulator.latency
        outstanding=4,                                          # AttentionCore.outstanding
        k_queue=1 if cfg.pipeline == "compact" else 2,          # AttentionCore.k_queue
        norm_cycles=cfg.norm_cycles,
        norm_latency=recip + norm,                              # Normalizer.latency
        merge_latency=1 if cfg.pipeline == "compact" else 5,    # len(tree.node_stages(cfg))
        partial_slice=skid if partial_slices else 0,
        request_slice=skid if request_slices else 0,
        pipe_slices=cfg.pipeline == "compact",                  # register_slice(cfg)
        final_slice=cfg.pipeline != "compact",                  # LeanAttention._final_slice
        arbiter=cfg.cores > 1 or cfg.pipeline != "compact",     # LeanAttention._arbitrate
        registered_grant=registered_grant,
    )


def _check_cfg(cfg):
    if not isinstance(cfg, AttentionConfig):
        raise TypeError(f"cfg must be an AttentionConfig, not {cfg!r}")


def _check_latency(latency):
    if not isinstance(latency, (int, np.integer)) or isinstance(latency, bool):
        raise TypeError(f"latency must be an integer, not {latency!r}")
    if latency < 0:
        raise ValueError(f"latency must be at least 0, not {latency}")


def _check_slices(name, value):
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool, not {value!r}")


def _lengths(lengths):
    try:
        values = np.asarray(lengths).reshape(-1)
    except (TypeError, ValueError):
        raise TypeError(f"lengths must be a sequence of integers, not {lengths!r}") from None
    if values.size == 0:
        raise ValueError("a job needs at least one head")
    if values.dtype.kind not in "iu":
        raise TypeError(f"lengths must be integers, not {values.dtype}")
    out = [int(n) for n in values]
    bad = [n for n in out if n < 1]
    if bad:
        raise ValueError(f"every head length must be at least 1, not {bad[0]}")
    return out


# --- results -----------------------------------------------------------------------------------------

@dataclass
class SegmentTiming:
    """One segment on one core, with the cycles of its events (transfers, from the job's start).

    ``skipped``: heads the segment generator passed over just before this segment (under
    ``flashdecoding``, heads too short to have a chunk on this core; 2 cycles each).
    ``k_enter``: its transfer into the core; ``k_request``: its K request's transfer out of the
    core (with ``request_slices`` into the register slice); ``k_first`` / ``k_last``: its first
    and last K beat;
    ``tile_close``: when each of its tiles closed (last logit into the tile buffer); ``v_first`` /
    ``v_last``: its first and last value beat (the PV pass); ``partial_first`` / ``partial_end``:
    its partial's first and last beat taken (by the arbiter, or the leaf buffer when ``cut``; by
    the register slice with ``partial_slices``).
    """
    head:          int
    start:         int
    stop:          int
    cut:           bool
    skipped:       int = 0
    k_request:     int = 0
    k_first:       int = 0
    k_last:        int = 0
    tile_close:    list = field(default_factory=list)
    k_enter:       int = 0
    v_first:       int = 0
    v_last:        int = 0
    partial_first: int = 0
    partial_end:   int = 0

    @property
    def keys(self):
        return self.stop - self.start


@dataclass
class CoreTimeline:
    """The segments of one core in order; ``busy`` counts its value beats (one per cycle)."""
    core:     int
    segments: list
    bpk:      int

    @property
    def busy(self):
        return sum(s.keys for s in self.segments) * self.bpk

    @property
    def end(self):
        return self.segments[-1].partial_end if self.segments else 0


@dataclass(frozen=True)
class Merge:
    """The tree node ``(level, index)`` started merging ``head``'s two parts at ``cycle``."""
    level: int
    index: int
    head:  int
    cycle: int


@dataclass
class Prediction:
    """What :func:`predict` returns.

    ``cycles``: the job's ``o_cycles``. ``ideal_cycles``: ``sum(lengths) * bpk / cores``.
    ``first_segment``: when the segment generators offer their first segments. ``cores``: one
    :class:`CoreTimeline` per core. ``merges``: the tree's merges in time order. ``head_done``:
    the cycle of each head's last output beat. ``arbiter_held``: the packet arbiter's round-robin
    pointer after the job (pass it to the next job's prediction to chain jobs as the RTL runs them).
    """
    cycles:        int
    ideal_cycles:  float
    first_segment: int
    cores:         list
    merges:        list
    head_done:     dict
    arbiter_held:  int

    @property
    def efficiency(self):
        return self.ideal_cycles / self.cycles

    def to_dict(self):
        return {
            "cycles": self.cycles,
            "ideal_cycles": self.ideal_cycles,
            "efficiency": self.efficiency,
            "first_segment": self.first_segment,
            "busy": [core.busy for core in self.cores],
            "cores": [{"core": core.core, "busy": core.busy, "end": core.end,
                       "segments": [dataclasses.asdict(s) for s in core.segments]}
                      for core in self.cores],
            "merges": [{"level": g.level, "index": g.index, "head": g.head, "cycle": g.cycle}
                       for g in self.merges],
            "head_done": {str(h): c for h, c in sorted(self.head_done.items())},
            "arbiter_held": self.arbiter_held,
        }


# --- one core: the K side in closed form, the V side per tile --------------------------------------------

def _request(t, segs, j, offered, issued, reach, bank):
    """A port's request ``j`` (0, 1, ... on one core) that the core's request queue offers from
    cycle ``offered`` on (its command queued, the request before it issued, a slot free):
    appends its transfer out of the core to ``issued``, into the bank's request register to
    ``reach`` and the bank's first read of it to ``bank``.

    The bank's request register takes a request while empty, from the cycle after the bank
    started reading the one before (``bank[j-1] + 1``); the bank reads it from the next cycle,
    but back to back: not before the previous request's ``keys * B`` reads
    (``bank[j-1] + keys[j-1] * B``). Without a request slice the core's transfer is the bank's.
    With one (a :class:`~leanattn.hdl.skid.SkidBuffer`: two entries, ``ready`` while its skid
    register is empty, latency 1) the core hands request ``j`` to the slice once request ``j-2``
    has left it (``reach[j-2] + 1``), and the slice hands it on no sooner than a cycle later::

        issued[j] = max(offered, reach[j-2] + 1)
        reach[j]  = max(issued[j] + 1, bank[j-1] + 1)          (reach[j-1] < bank[j-1])
        bank[j]   = max(reach[j] + 1, bank[j-1] + keys[j-1] * B)
    """
    if t.request_slice:
        out = max(offered, reach[j - 2] + 1) if j >= 2 else offered
        into = out + t.request_slice
        if j:
            into = max(into, bank[j - 1] + 1)
    else:
        out = into = max(offered, bank[j - 1] + 1) if j else offered
    first_read = into + 1
    if j:
        first_read = max(first_read, bank[j - 1] + segs[j - 1].keys * t.bpk)
    issued.append(out)
    reach.append(into)
    bank.append(first_read)


def _k_side(t, segs, first_offer):
    """Fill in each segment's K request, first and last K beat and tile closes."""
    b = t.bpk
    taken, issued, reach, bank = [], [], [], []     # segment transfer, the K request's (see _request)
    for j, seg in enumerate(segs):
        offer = (first_offer if j == 0 else taken[j - 1] + GEN_INTERVAL) + GEN_INTERVAL * seg.skipped
        # The K command queue has room once the request k_queue segments back has left.
        enter = max(offer, issued[j - t.k_queue] + 1) if j >= t.k_queue else offer
        offered = enter + ISSUE
        if j:
            offered = max(offered, issued[j - 1] + 1)
        if j >= t.outstanding:
            # A request slot frees when the last beat of the request outstanding back is taken.
            offered = max(offered, segs[j - t.outstanding].k_last + 1)
        _request(t, segs, j, offered, issued, reach, bank)
        k_first = bank[j] + t.memory_latency - 1
        if j:
            k_first = max(k_first, segs[j - 1].k_last + 1)
        taken.append(enter)
        seg.k_enter = enter
        seg.k_request, seg.k_first = issued[j], k_first
        seg.k_last = k_first + seg.keys * b - 1
        seg.tile_close = [k_first + min((i + 1) * t.tile, seg.keys) * b - 1 + t.logit_latency
                          for i in range(-(-seg.keys // t.tile))]


def _v_side(t, segs):
    """Generator over a core's segments: yields each one's last value beat, receives the cycle its
    partial's last beat was taken.

    A segment's V request leaves after the segment entered, after the V request before it, once
    the bank can take it (:func:`_request`: the bank holds one request beside the one it
    answers; with ``request_slices`` the slice holds two more) and once the request
    ``outstanding`` back was fully taken; its first beat arrives ``memory_latency`` cycles after
    the bank's first read. With the presets that never holds the PV pass back (the weights come
    later), except with memory latencies far beyond the tested ones, where the bound kept here is
    a lower one (the bank's reads are taken as never stalled)."""
    b = t.bpk
    drain = None
    issued, reach, bank = [], [], []
    for j, seg in enumerate(segs):
        offered = seg.k_enter + ISSUE
        if j:
            offered = max(offered, issued[j - 1] + 1)
        if j >= t.outstanding:
            offered = max(offered, segs[j - t.outstanding].v_last + 1)
        _request(t, segs, j, offered, issued, reach, bank)
        first_read = bank[j]
        load = seg.tile_close[0] + t.weight_latency          # the first weight into the PV unit
        if drain is not None:
            load = max(load, drain + 1)
        load = max(load, first_read + t.memory_latency - 2)  # its value beats fire from the next cycle
        seg.v_first = load + 1
        for i, close in enumerate(seg.tile_close):
            if i:
                load = max(load + b, close + t.weight_latency)
            load += (min(t.tile, seg.keys - i * t.tile) - 1) * b
        seg.v_last = load + b
        drain = yield seg.v_last


# --- downstream, cycle by cycle ------------------------------------------------------------------------

class _Source:
    """A core's partial register: beats offered one per cycle while taken. A beat is ``(head,
    last)``."""

    def __init__(self, core, segs, t):
        self.core, self.segs, self.t = core, segs, t
        self.gen = _v_side(t, segs)
        self.index = 0
        self.sent = 0
        self.ready_at = next(self.gen) + t.pv_latency

    def valid(self, x):
        return self.ready_at is not None and x >= self.ready_at

    def beat(self):
        return self.segs[self.index].head, self.sent == self.t.bpk - 1

    def is_cut(self):
        return self.segs[self.index].cut

    def take(self, x):
        seg = self.segs[self.index]
        if self.sent == 0:
            seg.partial_first = x
        self.sent += 1
        if self.sent < self.t.bpk:
            self.ready_at = x + 1
            return
        seg.partial_end = x
        self.index += 1
        self.sent = 0
        try:
            self.ready_at = self.gen.send(x) + self.t.pv_latency
        except StopIteration:
            self.ready_at = None


class _Sliced:
    """A core's partial register behind a register slice (``partial_slices``): the routing sees
    the slice's output register; the slice takes the core's beat whenever its skid register is
    empty, so the core waits for the routing only once the slice holds two beats."""

    def __init__(self, source):
        self.source = source
        self.slice = _Skid()
        self.taken = False

    @property
    def ready_at(self):
        return self.source.ready_at

    def valid(self, x):
        return self.slice.main is not None

    def beat(self):
        return self.slice.main[:2]

    def is_cut(self):
        return self.slice.main[2]

    def take(self, x):
        self.taken = True

    def step(self, x):
        """The end of cycle ``x``, after the routing took (or not) the slice's output beat;
        returns whether anything moved."""
        source, item = self.source, None
        if source.valid(x) and self.slice.skid is None:
            item = (*source.beat(), source.is_cut())
            source.take(x)
        taken, self.taken = self.taken, False
        self.slice.step(item, taken)
        return item is not None or taken


class _Fifo:
    """SyncFIFO of ``depth`` (asynchronous read): a word written at one edge is the front from the
    next cycle on."""

    def __init__(self, depth):
        self.depth = depth
        self.words = deque()
        self.read = False

    def w_rdy(self):
        return len(self.words) != self.depth

    def front(self):
        return self.words[0] if self.words else None


class _Skid:
    """SkidBuffer: ``main`` is the output register; ``skid`` takes an item that came during a stall."""

    def __init__(self):
        self.main = None
        self.skid = None

    def front(self):
        return self.main

    def free(self, o_ready):
        """The input's ``ready`` in this cycle (a register: ``o_ready`` does not matter)."""
        return self.skid is None

    def step(self, item, o_ready):
        """One cycle; ``item`` (or None) is offered at the input; returns whether anything changed."""
        before = (self.main, self.skid)
        fire = item is not None and self.skid is None
        if self.main is None or o_ready:
            if self.skid is not None:
                self.main, self.skid = self.skid, None
            else:
                self.main = item if fire else None
        elif fire:
            self.skid = item
        return before != (self.main, self.skid)



class _Pipe:
    """PipeRegister: ``main`` is the output register, loaded whenever it is empty or its item
    leaves (the input's ``ready``); ``skid`` is always None."""

    skid = None

    def __init__(self):
        self.main = None

    def front(self):
        return self.main

    def free(self, o_ready):
        """The input's ``ready`` in this cycle."""
        return self.main is None or o_ready

    def step(self, item, o_ready):
        """One cycle; ``item`` (or None) is offered at the input; returns whether anything changed."""
        before = self.main
        if self.free(o_ready):
            self.main = item
        return before != self.main

class _Node:
    """A tree node: route register, merge pipe (``stages`` registers), output skid buffer."""

    def __init__(self, level, index, merges, a, b, stages, out):
        self.level, self.index, self.merges, self.a, self.b = level, index, merges, a, b
        self.held = None                 # None (idle), "a", "b" (passing) or "m" (merging)
        self.pipe = [None] * stages
        self.out = out

    def front(self):
        return self.out.main


def _downstream(t, sources, merges_at, held, heads, record):
    """Run the downstream logic; returns ``(last normalizer input cycle, arbiter pointer)``."""
    cores = t.cores
    slice_ = _Pipe if t.pipe_slices else _Skid         # register_slice(cfg)
    fifos = [_Fifo(t.bpk) for _ in range(cores)] if cores > 1 else []
    levels = []
    below = fifos
    for level in range(1, t.tree_levels + 1):
        below = [_Node(level, i, merges_at.get((level, i), frozenset()), below[2 * i], below[2 * i + 1],
                       t.merge_latency, slice_())
                 for i in range(len(below) // 2)]
        levels.append(below)
    nodes = [node for level in reversed(levels) for node in level]       # root first
    root = nodes[0] if nodes else None
    count = len(sources) + (1 if root else 0)
    # final: the slice in front of the normalizer (None: the scale lookup's register feeds it).
    locked, arb, scales, final, wait = False, None, None, _Skid() if t.final_slice else None, 0
    sliced = [s for s in sources if isinstance(s, _Sliced)]
    left = heads
    last_in = None
    x = min(s.ready_at for s in sources if s.ready_at is not None)
    while True:
        moved = False
        # --- ready, from the normalizer back to the arbiter -------------------------------------------
        norm_ready = wait == 0
        sc_adv = scales is None or (final.free(norm_ready) if final else norm_ready)
        ar_adv = arb is None or sc_adv
        valid = [s.valid(x) and not s.is_cut() for s in sources]
        if root:
            valid.append(root.out.main is not None)
        grant = held
        if not locked and not t.registered_grant:
            for k in range(1, count + 1):
                if valid[(held + k) % count]:
                    grant = (held + k) % count
                    break
        # --- the tree, root first: each node's route and the ready of its inputs ---------------------
        ready = {id(root): ar_adv and grant == count - 1} if root else {}
        plan = []
        for node in nodes:
            adv = node.pipe[-1] is None or node.out.free(ready[id(node)])
            a, b = node.a.front(), node.b.front()
            route = node.held
            if route is None:
                if a is not None and a[0] not in node.merges:
                    route = "a"
                elif b is not None and b[0] not in node.merges:
                    route = "b"
                elif a is not None and b is not None:
                    if a[0] != b[0]:
                        raise ValueError(f"tree node {node.level}.{node.index} would wait forever: heads "
                                         f"{a[0]} and {b[0]} both wait for a partner (schedule not "
                                         f"supported by the reduction tree)")
                    route = "m"
            item, a_ready, b_ready = None, False, False
            if route == "m":
                a_ready, b_ready = adv and b is not None, adv and a is not None
                item = a if a_ready and b_ready else None
            elif route == "a":
                a_ready = adv
                item = a if adv else None
            elif route == "b":
                b_ready = adv
                item = b if adv else None
            ready[id(node.a)], ready[id(node.b)] = a_ready, b_ready
            plan.append((node, adv, route, item))
        # --- normalizer, final skid, scale lookup, arbiter ----------------------------------------------
        offered = final.main if final else scales       # the normalizer's input
        if offered is not None and norm_ready:
            head, last = offered
            last_in = x
            if last:
                record["head_done"][head] = x + t.norm_latency
                left -= 1
            wait = t.norm_cycles - 1
            moved = True
        elif wait:
            wait -= 1
        if final:
            moved |= final.step(scales, norm_ready)
        if not t.arbiter:                               # a lone core: its beats enter the scale lookup
            if sc_adv:
                moved |= scales is not None
                scales = None
                if valid[0]:
                    scales = sources[0].beat()
                    sources[0].take(x)
                    moved = True
        elif sc_adv:
            moved |= scales is not None or arb is not None
            scales = arb
        was_locked, ended = locked, False
        if t.arbiter and ar_adv:
            moved |= arb is not None
            arb = None
            if valid[grant]:
                if grant < len(sources):
                    arb = sources[grant].beat()
                    sources[grant].take(x)
                else:
                    arb = root.out.main
                held, locked, ended = grant, not arb[1], arb[1]
                moved = True
        if t.arbiter and t.registered_grant and (ended or not (was_locked or valid[grant])):
            # The registered grant moves on at a packet's end, or off an idle input between
            # packets: to the first input after it with a beat waiting (PacketArbiter).
            for k in range(1, count):
                if valid[(grant + k) % count]:
                    held = (grant + k) % count
                    moved = True
                    break
        # --- tree nodes ---------------------------------------------------------------------------------
        for node, adv, route, item in plan:
            o_ready = ready[id(node)]
            if adv:
                moved |= node.out.step(node.pipe[-1], o_ready)
                moved |= any(p is not None for p in node.pipe)
                node.pipe = [item] + node.pipe[:-1]
            else:
                moved |= node.out.step(None, o_ready)
            if item is not None:
                moved = True
                if route == "m" and node.held is None:
                    record["merges"].append(Merge(node.level, node.index, item[0], x))
                node.held = None if item[1] else route
                for side, child in (("a", node.a), ("b", node.b)):
                    if route in (side, "m"):
                        if isinstance(child, _Fifo):
                            child.read = True
        # --- leaf buffers and the cores' partial registers --------------------------------------------------
        for c, fifo in enumerate(fifos):
            moved |= _fifo_step(fifo, sources[c], x)
        for source in sliced:
            moved |= source.step(x)
        if left == 0:
            return last_in, held
        if moved:
            x += 1
            continue
        # Nothing moved: nothing will until a core offers a partial or the normalizer takes a beat.
        pending = [s.ready_at for s in sources if s.ready_at is not None and s.ready_at > x]
        if (final.main if final else scales) is not None:
            pending.append(x + wait + 1)
        if not pending:
            raise RuntimeError("the downstream model has nothing left to do before the job ends")
        step = min(pending) - x
        wait = max(0, wait - (step - 1))
        x += step


def _fifo_step(fifo, src, x):
    read, fifo.read = fifo.read, False
    write = src.valid(x) and src.is_cut() and fifo.w_rdy()
    if read:
        fifo.words.popleft()
    if write:
        fifo.words.append(src.beat())
        src.take(x)
    return read or write


class _Idle:
    """A core with no keys."""
    ready_at = None

    def valid(self, x):
        return False

    def is_cut(self):
        return False


def _merge_nodes(cores_of_head, cores):
    """Tree nodes ``(level, index)`` whose two subtrees both hold a part of the head."""
    have = set(cores_of_head)
    found = []

    def node(level, index):
        if level == 0:
            return index in have
        left, right = node(level - 1, 2 * index), node(level - 1, 2 * index + 1)
        if left and right:
            found.append((level, index))
        return left or right
    node(ceil_log2(cores), 0)
    return found


# --- the job --------------------------------------------------------------------------------------------

def predict(cfg, lengths, *, latency=2, shares=None, arbiter_held=0, partial_slices=False,
            request_slices=False, registered_grant=False):
    """The cycles of a job (head lengths ``lengths``, flattened heads) on ``cfg``, for a memory that
    answers ``latency`` cycles later than the bank alone and no stalls.

    ``shares``: the segments of every core (default: those of ``cfg.schedule``,
    :func:`~leanattn.sim.partition.schedule_shares`).
    ``arbiter_held``: the packet arbiter's round-robin pointer when the job starts (0 after reset;
    :attr:`Prediction.arbiter_held` of the job before, to chain jobs).
    ``partial_slices``: the cycles of ``LeanAttention(cfg, partial_slices=True)`` (a register slice
    behind every core's partial). ``request_slices``: of ``LeanAttention(cfg,
    request_slices=True)`` (a register slice on every core's K and V requests).
    ``registered_grant``: of ``LeanAttention(cfg, registered_grant=True)`` (the packet arbiter's
    grant a register). Any of the three may be on with the others.
    Returns a :class:`Prediction`.
    """
    _check_cfg(cfg)
    _check_latency(latency)
    lengths = _lengths(lengths)
    t = timing(cfg, latency, partial_slices, request_slices, registered_grant)
    scheduled = shares is None
    shares = schedule_shares(lengths, cfg) if scheduled else shares
    _check_shares(shares, lengths, cfg.cores)
    inputs = cfg.cores + 1 if cfg.cores > 1 else 1         # the arbiter's: every core, the tree
    if (not isinstance(arbiter_held, (int, np.integer)) or isinstance(arbiter_held, bool)
            or not 0 <= arbiter_held < inputs):
        raise ValueError(f"arbiter_held must be in the range 0..{inputs - 1}, not {arbiter_held!r}")
    heads = len(lengths)
    # Loading (descriptors and query beats in parallel) and the scan.
    first_offer = max(heads, heads * t.bpk) - 1 + LOAD_TO_JOB + heads + SCAN_TO_SEGMENT
    # Heads with parts on several cores go through the leaf buffers and the tree.
    spans = {}
    for c, segs in enumerate(shares):
        for s in segs:
            spans.setdefault(s.head, []).append(c)
    merges_at = {}
    for head, cs in spans.items():
        if len(cs) > 1:
            for node in _merge_nodes(cs, cfg.cores):
                merges_at.setdefault(node, set()).add(head)
    skips = _skips(cfg, shares) if scheduled else [[0] * len(segs) for segs in shares]
    timelines, sources = [], []
    for c, segs in enumerate(shares):
        segs = [SegmentTiming(s.head, s.start, s.stop, len(spans[s.head]) > 1, skip)
                for s, skip in zip(segs, skips[c])]
        timelines.append(CoreTimeline(c, segs, t.bpk))
        if segs:
            _k_side(t, segs, first_offer)
            source = _Source(c, segs, t)
            sources.append(_Sliced(source) if t.partial_slice else source)
        else:
            sources.append(_Idle())
    record = {"head_done": {}, "merges": []}
    last_in, held = _downstream(t, sources, merges_at, int(arbiter_held), heads, record)
    return Prediction(cycles=last_in + t.norm_latency, ideal_cycles=sum(lengths) * t.bpk / cfg.cores,
                      first_segment=first_offer, cores=timelines, merges=record["merges"],
                      head_done=record["head_done"], arbiter_held=held)


def _skips(cfg, shares):
    """Per core, the heads its segment generator skips before each segment. Under
    ``flashdecoding`` every generator of a group walks all the group's heads (the heads of the
    group's first core, which has a chunk of each) and skips those without a chunk for it; under
    the other schedules a generator never skips."""
    if cfg.schedule != "flashdecoding":
        return [[0] * len(segs) for segs in shares]
    k = cfg.head_chunks
    skips = []
    for c, segs in enumerate(shares):
        walk = {seg.head: i for i, seg in enumerate(shares[c - c % k])}
        at, row = -1, []
        for seg in segs:
            row.append(walk[seg.head] - at - 1)
            at = walk[seg.head]
        skips.append(row)
    return skips


def _check_shares(shares, lengths, cores):
    if len(shares) != cores:
        raise ValueError(f"shares must hold one segment list per core ({cores}), not {len(shares)}")
    covered = {}
    for c, segs in enumerate(shares):
        for s in segs:
            if not 0 <= s.head < len(lengths) or not 0 <= s.start < s.stop <= lengths[s.head]:
                raise ValueError(f"segment {s} of core {c} is not inside its head")
            covered[s.head] = covered.get(s.head, 0) + s.stop - s.start
    for head, n in enumerate(lengths):
        if covered.get(head, 0) != n:
            raise ValueError(f"the segments of head {head} cover {covered.get(head, 0)} keys, not {n}")


# --- exact formulas for regular jobs ---------------------------------------------------------------------

def _front_end(t, heads):
    """Cycles to the end of the first segment of n keys on an idle core, without ``(min + n) * B``:
    load and scan, the K request (through the request slice), the first K beat, the logit, the
    first weight."""
    return (heads * (t.bpk + 1) + 6 + t.memory_latency + t.request_slice + t.logit_latency
            + t.weight_latency)


def split_heads_cycles(cfg, heads, n, *, latency=2, partial_slices=False, request_slices=False,
                       registered_grant=False):
    """Cycles of ``heads`` heads of ``n`` keys each, every head split evenly over ``cores / heads``
    cores (``heads`` divides ``cores``, ``cores / heads >= 2`` divides ``n``): every core holds one
    segment of ``n0 = n * heads / cores`` keys, every partial goes through the tree.

    ``H * (B + 1) + 6 + M + Z + Lq + W + (min(T, n0) + n0) * B + P + X + 1 + G * lev + D + Y + R *
    (B - 1) + NL + (H - 1) * R * B``, ``X = 1`` with ``partial_slices``, ``Z = 1`` with
    ``request_slices`` (each core's one K request a cycle later), ``Y = 1`` with
    ``registered_grant`` (the grant, at input 0, moves to the tree's root before the first packet),
    else 0; ``D`` the registers from the arbiter to the normalizer (3; 2 with the compact pipeline,
    which has no final slice).
    """
    t = timing(cfg, latency, partial_slices, request_slices, registered_grant)
    _check_positive("heads", heads)
    _check_positive("n", n)
    if heads >= cfg.cores or cfg.cores % heads:
        raise ValueError(f"heads must divide cores ({cfg.cores}) and be fewer, not {heads}")
    if n % (cfg.cores // heads):
        raise ValueError(f"n must be a multiple of cores / heads ({cfg.cores // heads}), not {n}")
    b, r = t.bpk, t.norm_cycles
    n0 = n * heads // cfg.cores
    return (_front_end(t, heads) + (min(t.tile, n0) + n0) * b + t.pv_latency + t.partial_slice
            + 1 + (t.merge_latency + 1) * t.tree_levels + _registers(t) + t.registered_grant
            + r * (b - 1) + t.norm_latency + (heads - 1) * r * b)


def _registers(t):
    """``D``: the registers from the arbiter's input to the normalizer's: the arbiter's (unless a
    lone core has none), the scale lookup's, the final slice's (not with the compact pipeline)."""
    return t.arbiter + 1 + t.final_slice


def _held(t):
    """``Q``: the beats those registers hold (the final slice is a skid buffer: two)."""
    return t.arbiter + 1 + 2 * t.final_slice


def whole_heads_cycles(cfg, heads, n, *, latency=2, partial_slices=False, request_slices=False,
                       registered_grant=False):
    """Cycles of ``heads = m * cores`` heads of ``n`` keys each: every core holds ``m`` whole heads.

    ``H * (B + 1) + 6 + M + Z + Lq + W + (min(T, n) + n) * B + P + X + D + NL + max((m - 1) * S +
    (C - 1) * R * B + R * (B - 1), R * (H * B - 1))`` with ``S = (n + 1) * B + 3 + Y + (B - 1 - 2 *
    X - Q) * (R - 1)``, the cycles between two segments of a core when its partial finds the
    normalizer idle, ``Y = 1`` with ``registered_grant`` and more than one core (the grant rests
    on the last core and moves to the first before its partial goes), else 0, ``X = 1`` with
    ``partial_slices`` (a partial beat a cycle later; the slice's two registers let the core go
    on two beats earlier), else 0; ``Z = 1`` with ``request_slices`` (the first K
    request a cycle later; the later ones are off the critical path), else 0; ``D`` the registers
    from the arbiter's input to the normalizer's and ``Q`` the beats they hold: the arbiter (1; none
    for one core with the compact pipeline), the scale lookup (1) and the final skid buffer (1
    register, 2 beats; none with the compact pipeline), so ``D = 3, Q = 4`` with the full pipeline.
    The first term holds while the cores keep the normalizer waiting (``S >= C * R * B``), the
    second while the normalizer keeps the cores waiting. Needs ``B >= 1 + 2 * X + Q`` when ``R >
    1``.
    """
    t = timing(cfg, latency, partial_slices, request_slices, registered_grant)
    _check_positive("heads", heads)
    _check_positive("n", n)
    if heads % cfg.cores:
        raise ValueError(f"heads must be a multiple of cores ({cfg.cores}), not {heads}")
    b, r, c, x = t.bpk, t.norm_cycles, cfg.cores, t.partial_slice
    buffered = 1 + 2 * x + _held(t)
    if r > 1 and b < buffered:
        raise ValueError(f"the formula needs head_dim / lanes >= {buffered} when norm_cycles > 1"
                         f"{' and partial_slices' if x else ''}, not {b}")
    m = heads // c
    moves = int(t.registered_grant and c > 1)
    step = (n + 1) * b + 3 + moves + (b - buffered) * (r - 1)
    return (_front_end(t, heads) + (min(t.tile, n) + n) * b + t.pv_latency + x + _registers(t)
            + t.norm_latency + max((m - 1) * step + (c - 1) * r * b + r * (b - 1), r * (heads * b - 1)))


def _check_positive(name, value):
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool):
        raise TypeError(f"{name} must be an integer, not {value!r}")
    if value < 1:
        raise ValueError(f"{name} must be at least 1, not {value}")


# --- job files and the command line ------------------------------------------------------------------------

def read_job_lengths(path, cfg):
    """The head lengths of a job file (flattened ``b * H + h``), checked for shape but not against
    ``max_heads`` or ``max_context``; reads only the array headers of ``q``, ``k`` and ``v``.
    Raises :class:`leanattn.sim.job.JobError`."""
    from .job import FLOAT_KINDS, JobError

    try:
        archive = zipfile.ZipFile(path)
    except FileNotFoundError:
        raise JobError(f"no job file at {path}") from None
    except (OSError, zipfile.BadZipFile) as error:
        raise JobError(f"{path} is not a readable .npz job file ({error or type(error).__name__})") \
            from None
    with archive:
        members = {name[:-4]: name for name in archive.namelist() if name.endswith(".npy")}
        arrays = {}
        for name in ("q", "k", "v", "lengths"):
            if name not in members:
                raise JobError(f"the job has no array '{name}'")
            try:
                with archive.open(members[name]) as file:
                    if name == "lengths":
                        value = np.lib.format.read_array(file, allow_pickle=False)
                        arrays[name] = (value.shape, value.dtype, value)
                        continue
                    version = np.lib.format.read_magic(file)
                    read = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                            else np.lib.format.read_array_header_2_0)
                    shape, _, dtype = read(file)
                    arrays[name] = (shape, dtype, None)
            except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
                raise JobError(f"'{name}' in {path} is not a readable array ({error})") from None
    for name, (_, dtype, _) in arrays.items():
        if dtype.kind not in "iuf" or (dtype.kind == "f" and dtype.name not in FLOAT_KINDS):
            raise JobError(f"'{name}' must hold integers or float16/32/64, not {dtype}")
    shapes = {name: shape for name, (shape, _, _) in arrays.items()}
    for name, ndim, form in (("q", 3, "(B, H, d)"), ("k", 4, "(B, H, Nmax, d)"), ("v", 4, "(B, H, Nmax, d)"),
                             ("lengths", 2, "(B, H)")):
        if len(shapes[name]) != ndim:
            raise JobError(f"'{name}' must have shape {form}, not {shapes[name]}")
    batch, heads, d = shapes["q"]
    n_max = shapes["k"][2]
    if min(batch, heads) < 1 or n_max < 1:
        raise JobError(f"the job must have at least one head and one key, not q {shapes['q']}, "
                       f"k {shapes['k']}")
    if d != cfg.head_dim:
        raise JobError(f"'q' has head_dim {d} but the configuration has head_dim {cfg.head_dim}")
    if shapes["k"] != (batch, heads, n_max, d):
        raise JobError(f"'k' must have shape (B, H, Nmax, d) = ({batch}, {heads}, Nmax, {d}), "
                       f"not {shapes['k']}")
    if shapes["v"] != shapes["k"]:
        raise JobError(f"'v' must have the shape of 'k' {shapes['k']}, not {shapes['v']}")
    if shapes["lengths"] != (batch, heads):
        raise JobError(f"'lengths' must have shape (B, H) = ({batch}, {heads}), not {shapes['lengths']}")
    lengths = arrays["lengths"][2]
    if lengths.dtype.kind not in "iu":
        raise JobError(f"'lengths' must hold integers, not {lengths.dtype}")
    for index in np.ndindex(lengths.shape):
        if not 1 <= int(lengths[index]) <= n_max:
            raise JobError(f"lengths{list(index)} must be in 1..Nmax ({n_max}), not {int(lengths[index])}")
    return [int(n) for n in lengths.reshape(-1)]


def add_parser(subparsers):
    """The ``perf`` subcommand: ``leanattn perf JOB.npz [--preset NAME] [--schedule S] [--latency 2]
    [--json]``."""
    from ..cli import config_args

    parser = subparsers.add_parser(
        "perf", help="predict a job's cycles with the cycle model (no simulation)",
        description="Predict the cycles of a job file on the generated accelerator from the cycle "
                    "model (leanattn.sim.perf), without simulating: exact for the RTL with no stalls.")
    parser.add_argument("job", metavar="JOB.npz")
    parser.add_argument("--latency", type=int, default=2,
                        help="extra cycles on every memory response, as `leanattn sim` (default 2)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    parser.add_argument("--timeline", action="store_true",
                        help="with --json: add every core's segments, the merges and each head's end")
    config_args(parser)
    parser.set_defaults(func=run)
    return parser


def run(args):
    """Run ``leanattn perf``; a bad configuration, job or latency raises ``leanattn.cli.UsageError``."""
    from ..cli import UsageError, load_config
    from .job import JobError

    cfg = load_config(args.preset, args.config, args.overrides)
    if args.latency < 0:
        raise UsageError(f"--latency must be at least 0, not {args.latency}")
    try:
        lengths = read_job_lengths(args.job, cfg)
    except JobError as error:
        raise UsageError(str(error)) from None
    pred = predict(cfg, lengths, latency=args.latency)
    name = args.preset or args.config or "default"
    if args.overrides:
        name += " + overrides"
    if args.json:
        data = pred.to_dict()
        summary = {"config": name, "heads": len(lengths), "keys": sum(lengths), "latency": args.latency,
                   **{key: data[key] for key in ("cycles", "ideal_cycles", "efficiency", "busy")},
                   "core_end": [core["end"] for core in data["cores"]]}
        if args.timeline:
            summary.update({key: data[key] for key in ("first_segment", "cores", "merges", "head_done")})
        print(json.dumps(summary))
        return 0
    print(report(pred, title=f"leanattn perf: {name}, {len(lengths)} heads, {sum(lengths)} keys, "
                             f"memory latency {args.latency} (cycle model, no simulation)"))
    return 0


def report(pred, title=None):
    """A readable table of a prediction."""
    lines = [title] if title else []
    lines.append(f"cycles {pred.cycles}   ideal {pred.ideal_cycles:.0f}   efficiency {pred.efficiency:.3f}")
    lines.append(f"{'core':>4}  {'segments':>8}  {'keys':>7}  {'busy':>8}  {'first V':>8}  {'last V':>8}  "
                 f"{'end':>8}")
    for core in pred.cores:
        segs = core.segments
        if not segs:
            lines.append(f"{core.core:>4}  {0:>8}  {0:>7}  {0:>8}  {'-':>8}  {'-':>8}  {'-':>8}")
            continue
        lines.append(f"{core.core:>4}  {len(segs):>8}  {sum(s.keys for s in segs):>7}  {core.busy:>8}  "
                     f"{segs[0].v_first:>8}  {segs[-1].v_last:>8}  {core.end:>8}")
    if pred.merges:
        lines.append(f"tree merges: {len(pred.merges)}, the last at cycle {pred.merges[-1].cycle}")
    done = sorted(pred.head_done.values())
    lines.append(f"heads out: first at cycle {done[0]}, last at cycle {done[-1]}")
    return "\n".join(lines)
