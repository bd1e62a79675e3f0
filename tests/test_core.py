# amaranth: UnusedElaboratable=no
"""AttentionCore: segments in, partial states out, bit-exact with the golden model.

The reference of every segment is ``golden.online_softmax(cfg, golden.score(cfg, golden.dot(cfg, q,
k), mant, shift), v)`` over its keys. Two benches:

* ``amaranth.sim`` with a memory model on each port (:func:`run_core`): it checks each request's
  address and length, answers from NumPy arrays after a random latency with random idle cycles,
  stalls the request ports at random, and applies backpressure on the partials; the stream rules
  are checked on every output; documented cycle facts are measured without stalls;
* cocotb on Icarus Verilog and Verilator through :func:`run_cocotb_bench`: the response beats are
  given as input streams (the core takes a response beat only while a request of its port is in
  flight), the requests are checked as output streams.

Jobs hold heads in random order, repeated heads, segments of 1 key, of a tile, of a tile +-1, of
several tiles, and extremes: logits saturated at both ends, all logits 0 (the largest shift, a zero
mantissa), values at both ends of the input range.
"""

import math
import random
from collections import deque
from dataclasses import dataclass, field

import numpy as np
import pytest
from amaranth.hdl import Module, Shape, Signal, Value
from amaranth.lib import data, wiring
from amaranth.sim import Simulator
from tiers import config_params

from leanattn.hdl.config import PRESETS
from leanattn.hdl.core import AttentionCore, KeyJoin, RequestIssuer, ValueGate
from leanattn.hdl.layouts import partial_layout
from leanattn.hdl.ports import kv_data_layout, kv_request_layout, query_write_layout, segment_layout
from leanattn.hdl.pv import pv_latency
from leanattn.hdl.ring import Ring
from leanattn.sim import golden
from leanattn.sim.cocotb_util import (
    AMARANTH_LINT_WAIVERS,
    HIERARCHY_LINT_WAIVERS,
    design_verilog,
    verilator_lint,
)
from leanattn.sim.configs import TEST_CONFIGS
from leanattn.sim.softmax_vectors import partial_beats
from leanattn.sim.stream_bench import bench_dir, run_cocotb_bench

#: head_dim == lanes: one beat per key (ScoreScale then has a multiplier per slice).
ONE_BEAT = PRESETS["default"].replace(head_dim=16, lanes=16, max_heads=8, max_context=1024)
CONFIGS  = {**TEST_CONFIGS, "one_beat": ONE_BEAT}


# --- packing -------------------------------------------------------------------------------------

def _leaves(shape, offset=0, path=()):
    """``(path, offset, width, signed)`` of every leaf field of a layout."""
    if isinstance(shape, data.StructLayout):
        for name, fld in shape:
            yield from _leaves(fld.shape, offset + fld.offset, (*path, name))
    elif isinstance(shape, data.ArrayLayout):
        width = Shape.cast(shape.elem_shape).width
        for i in range(shape.length):
            yield from _leaves(shape.elem_shape, offset + i * width, (*path, i))
    else:
        shape = Shape.cast(shape)
        yield path, offset, shape.width, shape.signed


class Packer:
    """Payload bits of nested dicts/lists under a layout; the same bits as ``layout.const(value)``
    (:func:`test_packer_is_the_layout`), at a fraction of its cost."""

    def __init__(self, layout):
        self.layout = layout
        self.leaves = list(_leaves(layout))

    def __call__(self, value):
        bits = 0
        for path, offset, width, is_signed in self.leaves:
            x = value
            for key in path:
                x = x[key]
            x = int(x)
            lo, hi = (-(1 << (width - 1)), (1 << (width - 1)) - 1) if is_signed else (0, (1 << width) - 1)
            assert lo <= x <= hi, f"{'.'.join(map(str, path))} = {x} outside {lo}..{hi}"
            bits |= (x & ((1 << width) - 1)) << offset
        return bits

    def describe(self, bits):
        return str(data.Const(self.layout, bits))


# --- jobs ----------------------------------------------------------------------------------------

@dataclass
class Head:
    q:     np.ndarray
    mant:  int
    shift: int


@dataclass
class Seg:
    head:   int
    k:      np.ndarray
    v:      np.ndarray
    k_addr: int = 0
    v_addr: int = 0


@dataclass
class Job:
    """Heads (query, score scale), segments, and every stream payload of the core derived from them."""
    cfg:   object
    heads: dict
    segs:  list
    kmem:  np.ndarray = field(init=False)
    vmem:  np.ndarray = field(init=False)

    def __post_init__(self):
        cfg, lanes, rng = self.cfg, self.cfg.lanes, np.random.default_rng(len(self.segs))
        # Each segment's keys and values contiguous (head_dim elements per key), gaps of random
        # multiples of lanes between them, from a random base up to the top of the address range.
        gaps = rng.integers(0, 2 * cfg.beats_per_key + 1, (len(self.segs) + 1, 2)) * lanes
        span = sum(seg.k.size for seg in self.segs) + gaps.sum(axis=0)
        top = 1 << cfg.kv_addr_bits
        self.base = [int(rng.integers(0, (top - n) // lanes + 1)) * lanes for n in span]
        addr = [self.base[0] + int(gaps[0, 0]), self.base[1] + int(gaps[0, 1])]
        for seg, gap in zip(self.segs, gaps[1:]):
            seg.k_addr, seg.v_addr = addr
            addr = [seg.k_addr + seg.k.size + int(gap[0]), seg.v_addr + seg.v.size + int(gap[1])]
        assert max(addr) <= top
        self.kmem, self.vmem = (np.zeros(int(n), np.int64) for n in span)
        for seg in self.segs:
            self.kmem[seg.k_addr - self.base[0]:][:seg.k.size] = seg.k.reshape(-1)
            self.vmem[seg.v_addr - self.base[1]:][:seg.v.size] = seg.v.reshape(-1)

    @property
    def keys(self):
        return sum(len(seg.k) for seg in self.segs)

    def partial(self, seg):
        """The golden partial state of one segment."""
        head = self.heads[seg.head]
        s = golden.score(self.cfg, golden.dot(self.cfg, head.q, seg.k), head.mant, head.shift)
        return golden.online_softmax(self.cfg, s, seg.v)

    def query_words(self, head):
        return query_words(self.cfg, head, self.heads[head].q)

    def segment(self, seg):
        head = self.heads[seg.head]
        return {"head": seg.head, "k_addr": seg.k_addr, "v_addr": seg.v_addr, "keys": len(seg.k),
                "score_mant": head.mant, "score_shift": head.shift}

    def requests(self, port):
        return [{"addr": seg.k_addr if port == "k" else seg.v_addr, "keys": len(seg.k)} for seg in self.segs]

    def responses(self, port, seg):
        """The response beats of one segment's request on port ``k`` or ``v``."""
        mem, addr = (self.kmem, seg.k_addr - self.base[0]) if port == "k" else \
            (self.vmem, seg.v_addr - self.base[1])
        lanes = self.cfg.lanes
        return [mem[a:a + lanes] for a in range(addr, addr + seg.k.size, lanes)]

    def partial_items(self):
        return [beat for seg in self.segs for beat in partial_beats(self.cfg, self.partial(seg), seg.head)]


def query_words(cfg, head, q):
    """``{addr, q}`` of the query buffer words of one head."""
    lanes, beats = cfg.lanes, cfg.beats_per_key
    return [{"addr": head * beats + b, "q": q[b * lanes:(b + 1) * lanes]} for b in range(beats)]


def packers(cfg):
    return {"i_qwrite": Packer(query_write_layout(cfg)), "i_seg": Packer(segment_layout(cfg)),
            "req": Packer(kv_request_layout(cfg)), "beat": Packer(kv_data_layout(cfg)),
            "o_partial": Packer(partial_layout(cfg))}


def random_head(cfg, rng, spread=None):
    """A random query and a score scale that spreads its logits over about +-``spread`` (base 2)."""
    q = rng.integers(cfg.input_min, cfg.input_max + 1, cfg.head_dim)
    mant = int(rng.integers(1 << (cfg.scale_bits - 1), 1 << cfg.scale_bits))
    spread = spread if spread is not None else float(rng.choice([0.5, 4.0, 30.0]))
    qk_std = math.sqrt(max(1, int(q @ q))) * -cfg.input_min / math.sqrt(3)
    shift = round(math.log2(qk_std * mant / (spread * (1 << cfg.logit_frac_bits))))
    return Head(q, mant, min(max(shift, 0), cfg.score_shift_max))


def random_kv(cfg, rng, head, n):
    k = rng.integers(cfg.input_min, cfg.input_max + 1, (n, cfg.head_dim))
    if rng.random() < 0.3:
        k = k[np.argsort(k @ head.q, kind="stable")]          # the running max rises every tile
    return k, rng.integers(cfg.input_min, cfg.input_max + 1, (n, cfg.head_dim))


def edge_lengths(cfg):
    """1 key, a tile -1, a tile, a tile +1, several tiles."""
    return [1, cfg.tile - 1, cfg.tile, cfg.tile + 1, 2 * cfg.tile + 3]


def extreme_job_parts(cfg, rng):
    """Heads 0..2 with extreme scales and segments of extreme keys and values."""
    d, lo, hi = cfg.head_dim, cfg.input_min, cfg.input_max
    full = lambda n, x: np.full((n, d), x)
    heads = {
        0: Head(np.full(d, lo), (1 << cfg.scale_bits) - 1, 0),             # logits saturate
        1: Head(rng.integers(lo, hi + 1, d), (1 << cfg.scale_bits) - 1, cfg.score_shift_max),  # all 0
        2: Head(rng.integers(lo, hi + 1, d), 0, 0),                        # a zero mantissa: all 0
    }
    n = cfg.tile + 3
    alternate = np.where(np.arange(n)[:, None] % 2 == 0, lo, hi) * np.ones((1, d), np.int64)
    segs = [
        Seg(0, full(n, lo), full(n, lo)),          # every logit at logit_max; o at its low end
        Seg(0, full(n, hi), full(n, hi)),          # every logit at logit_min; o at its high end
        Seg(0, alternate, full(n, lo)),            # max and min logits alternate: weights 1 and 0
        Seg(1, rng.integers(lo, hi + 1, (n, d)), full(n, hi)),
        Seg(2, full(1, lo), full(1, lo)),          # one key
        Seg(0, full(1, hi), full(1, hi)),
    ]
    return heads, segs


def random_job(cfg, seed, *, segments=8, max_len=None, extremes=True, lengths=(), first=()):
    """A job: ``first`` (segment lengths, in this order, at the front), then in random order the
    extreme segments (optionally), segments of the given ``lengths`` and ``segments`` random ones;
    heads in random order, some repeated back to back."""
    rng = np.random.default_rng(seed)
    heads, extreme = extreme_job_parts(cfg, rng) if extremes else ({}, [])
    free = [h for h in range(cfg.max_heads) if h not in heads]
    for h in free:
        heads[h] = random_head(cfg, rng)
    max_len = max_len or 3 * cfg.tile + 5

    def random_segs(plan):
        segs = []
        for n in plan:
            same = segs and rng.random() < 0.3
            head = segs[-1].head if same else int(rng.choice(free))
            segs.append(Seg(head, *random_kv(cfg, rng, heads[head], n)))
        return segs

    rest = extreme + random_segs(list(lengths) + [int(rng.integers(1, max_len + 1)) for _ in range(segments)])
    return Job(cfg, heads, random_segs(first) + [rest[i] for i in rng.permutation(len(rest))])


# --- amaranth.sim bench with a memory model ------------------------------------------------------

@dataclass
class Timing:
    """Random behaviour of the bench: memory latency (cycles from a request to its first beat),
    and rates of idle cycles (queries, segments, responses), request stalls and backpressure."""
    latency:      tuple = (1, 1)
    idle:         float = 0.0
    stall:        float = 0.0
    backpressure: float = 0.0
    v_block:      int = 0          # the V request port takes nothing before this cycle
    serial:       bool = False     # each segment waits until the previous one's partial is out


QUIET = Timing()
NOISY = Timing(latency=(1, 12), idle=0.3, stall=0.3, backpressure=0.3)


class Drive:
    """``ctx.set`` only on a change (each set costs the simulator a delta cycle)."""

    def __init__(self, ctx):
        self.ctx, self.last = ctx, {}

    def __call__(self, signal, value):
        key = id(signal)
        if self.last.get(key) != value:
            self.last[key] = value
            self.ctx.set(signal, value)


def critical(process):
    async def run(ctx):
        with ctx.critical():
            await process(ctx)
    return run


def run_core(cfg, job, timing=QUIET, *, seed=0, dut=None):
    """Run ``job`` through an AttentionCore under amaranth.sim; returns the transfer cycles of every
    port, ``{port: [cycle]}``. Fails (naming the seed) on a wrong request, a wrong or missing or
    extra partial beat, an extra request, or a broken stream rule."""
    dut = dut or AttentionCore(cfg)
    pack = packers(cfg)
    where = f"(seed {seed}, {timing})"
    expected = [pack["o_partial"](beat) for beat in job.partial_items()]
    beats = sum(len(seg.k) for seg in job.segs) * cfg.beats_per_key
    max_cycles = 30 * beats + 60 * len(job.segs) + 3000 + timing.v_block
    log = {name: [] for name in ("i_qwrite", "i_seg", "o_kreq", "o_vreq", "i_k", "i_v", "o_partial")}
    done = {"partials": False}

    async def feeder(ctx):
        """Each head's query words before its first segment, then the segment."""
        rng, cycle, written, drive = random.Random(f"{seed}-feed"), 0, set(), Drive(ctx)
        qw, seg_port = dut.i_qwrite, dut.i_seg

        async def offer(port, bits, name):
            nonlocal cycle
            while rng.random() < timing.idle:
                drive(port.valid, 0)
                await ctx.tick()
                cycle += 1
            drive(port.valid, 1)
            drive(Value.cast(port.payload), bits)
            while True:
                _, _, ready = await ctx.tick().sample(port.ready)
                cycle += 1
                if ready:
                    break
                assert name != "i_qwrite", f"i_qwrite not ready at cycle {cycle} {where}"
                assert cycle < max_cycles, f"{name} stuck {where}"
            log[name].append(cycle)
            drive(port.valid, 0)

        for i, seg in enumerate(job.segs):
            if seg.head not in written:
                written.add(seg.head)
                for word in job.query_words(seg.head):
                    await offer(qw, pack["i_qwrite"](word), "i_qwrite")
            while timing.serial and len(log["o_partial"]) < i * cfg.beats_per_key:
                await ctx.tick()
                cycle += 1
            await offer(seg_port, pack["i_seg"](job.segment(seg)), "i_seg")

    def memory(port):
        """One read port: takes requests (checking them), answers in order after a random latency."""
        req, resp = getattr(dut, f"o_{port}req"), getattr(dut, f"i_{port}")
        req_bits, resp_bits = Value.cast(req.payload), Value.cast(resp.payload)
        requests = [pack["req"](r) for r in job.requests(port)]
        answers = [[pack["beat"](b) for b in job.responses(port, seg)] for seg in job.segs]
        block = timing.v_block if port == "v" else 0

        async def run(ctx):
            rng, drive = random.Random(f"{seed}-{port}"), Drive(ctx)
            cycle, issued, pending, current, offered, held, extra = 0, 0, deque(), deque(), False, None, 0
            while extra < 16:
                req_ready = cycle >= block and rng.random() >= timing.stall
                drive(req.ready, req_ready)
                if not offered:
                    if not current and pending and pending[0][0] <= cycle:
                        current.extend(pending.popleft()[1])
                    if current and rng.random() >= timing.idle:
                        offered = True
                        drive(resp_bits, current[0])
                drive(resp.valid, offered)
                _, _, valid, bits, ready = await ctx.tick().sample(req.valid, req_bits, resp.ready)
                cycle += 1
                if held is not None:
                    assert valid and bits == held, f"o_{port}req broke the stream rule at {cycle} {where}"
                held = bits if valid and not req_ready else None
                assert not (valid and done["partials"]), f"an extra o_{port}req at cycle {cycle} {where}"
                if valid and req_ready:
                    assert issued < len(requests), f"an extra o_{port}req at cycle {cycle} {where}"
                    assert bits == requests[issued], (
                        f"o_{port}req[{issued}] is {pack['req'].describe(bits)}, expected "
                        f"{pack['req'].describe(requests[issued])} {where}")
                    pending.append((cycle + rng.randint(*timing.latency) - 1, answers[issued]))
                    issued += 1
                    log[f"o_{port}req"].append(cycle)
                if offered and ready:
                    current.popleft()
                    offered = False
                    log[f"i_{port}"].append(cycle)
                assert cycle < max_cycles, f"port {port} stuck {where}"
                extra += done["partials"]
            assert issued == len(requests) and not pending and not current, f"port {port} {where}"

        return run

    async def consumer(ctx):
        rng, cycle, held, got, drive = random.Random(f"{seed}-out"), 0, None, 0, Drive(ctx)
        out, bits_of = dut.o_partial, Value.cast(dut.o_partial.payload)
        while got < len(expected):
            ready = rng.random() >= timing.backpressure
            drive(out.ready, ready)
            _, _, valid, bits = await ctx.tick().sample(out.valid, bits_of)
            cycle += 1
            if held is not None:
                assert valid and bits == held, f"o_partial broke the stream rule at {cycle} {where}"
            held = bits if valid and not ready else None
            if valid and ready:
                assert bits == expected[got], (
                    f"o_partial[{got}] is {pack['o_partial'].describe(bits)}, expected "
                    f"{pack['o_partial'].describe(expected[got])} {where}")
                got += 1
                log["o_partial"].append(cycle)
            assert cycle < max_cycles, f"o_partial stuck after {got} of {len(expected)} beats {where}"
        done["partials"] = True
        drive(out.ready, 1)
        for _ in range(16):
            _, _, valid = await ctx.tick().sample(out.valid)
            assert not valid, f"an extra o_partial beat {where}"

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    # Processes, not testbenches: their settings take effect together, in one delta cycle. Each
    # is critical until its own end, so the run lasts until all of them are done.
    for process in (feeder, memory("k"), memory("v"), consumer):
        sim.add_process(critical(process))
    sim.run()
    return log


# --- cocotb bench ----------------------------------------------------------------------------------

class QueriesFirst(wiring.Component):
    """The core, with ``i_seg`` held back until the whole query buffer has been written
    (``max_heads * beats_per_key`` words): the top level's guarantee that a head's query is
    written before its first segment, for the stream harness, whose inputs play independently."""

    def __init__(self, cfg):
        self.core = AttentionCore(cfg)
        self.words = cfg.max_heads * cfg.beats_per_key
        super().__init__(dict(self.core.signature.members))

    def elaborate(self, platform):
        m = Module()
        m.submodules.core = core = self.core
        for name in ("i_qwrite", "i_k", "i_v"):
            wiring.connect(m, wiring.flipped(getattr(self, name)), getattr(core, name))
        for name in ("o_kreq", "o_vreq", "o_partial"):
            wiring.connect(m, getattr(core, name), wiring.flipped(getattr(self, name)))
        written = Signal(range(self.words + 1))
        with m.If(self.i_qwrite.valid & self.i_qwrite.ready & (written != self.words)):
            m.d.sync += written.eq(written + 1)
        open_ = written == self.words
        m.d.comb += [
            core.i_seg.valid.eq(self.i_seg.valid & open_),
            core.i_seg.payload.eq(self.i_seg.payload),
            self.i_seg.ready.eq(core.i_seg.ready & open_),
        ]
        return m


def stream_vectors(cfg, job):
    """``(inputs, outputs)`` of the stream harness: every query word of the buffer (random ones for
    heads the job does not use), the segments, all K and V response beats in request order; the
    expected requests and partial beats."""
    pack = packers(cfg)
    rng = np.random.default_rng(7)
    queries = {h: job.heads[h].q if h in job.heads else rng.integers(cfg.input_min, cfg.input_max + 1,
                                                                    cfg.head_dim)
               for h in range(cfg.max_heads)}
    words = [w for h in range(cfg.max_heads) for w in query_words(cfg, h, queries[h])]
    inputs = {
        "i_qwrite": [pack["i_qwrite"](w) for w in words],
        "i_seg":    [pack["i_seg"](job.segment(seg)) for seg in job.segs],
        "i_k":      [pack["beat"](b) for seg in job.segs for b in job.responses("k", seg)],
        "i_v":      [pack["beat"](b) for seg in job.segs for b in job.responses("v", seg)],
    }
    outputs = {
        "o_kreq":    [pack["req"](r) for r in job.requests("k")],
        "o_vreq":    [pack["req"](r) for r in job.requests("v")],
        "o_partial": [pack["o_partial"](b) for b in job.partial_items()],
    }
    return inputs, outputs



# --- tests: vectors --------------------------------------------------------------------------------

@pytest.mark.parametrize("name", list(CONFIGS))
def test_packer_is_the_layout(name):
    cfg = CONFIGS[name]
    job = random_job(cfg, 5, segments=2)
    pack = packers(cfg)
    seg = job.segs[0]
    cases = [("i_seg", job.segment(seg)), ("i_qwrite", job.query_words(seg.head)[-1]),
             ("req", job.requests("v")[0]), ("beat", job.responses("k", seg)[-1]),
             *(("o_partial", beat) for beat in job.partial_items()[:3])]
    for port, value in cases:
        value = {k: list(map(int, v)) if isinstance(v, np.ndarray) else v for k, v in value.items()} \
            if isinstance(value, dict) else list(map(int, value))
        assert pack[port](value) == pack[port].layout.const(value).as_bits(), port


# --- tests: amaranth.sim with the memory model -----------------------------------------------------

#: Stall patterns of the fast tests: everything random; and a slow V memory with a port that
#: rarely takes requests, against an eager K side and heavy output backpressure.
TIMINGS = {
    "noisy":  NOISY,
    "slow_v": Timing(latency=(1, 40), idle=0.1, stall=0.6, backpressure=0.5),
}


@pytest.mark.parametrize("timing", list(TIMINGS))
@pytest.mark.parametrize("name", config_params(["tiny", "default", "odd", "one_beat"],
                                               fast=("tiny", "default", "odd", "one_beat")))
def test_core_amaranth(name, timing):
    """Extremes, 1 key, tile -1 / tile / tile +1, several tiles and random segments, heads in random
    order and repeated, under random memory latency, idle cycles, request stalls and backpressure."""
    cfg = CONFIGS[name]
    tiny = cfg.beats_per_key > 16               # 32 cycles a key: fewer random segments
    job = random_job(cfg, 100 + len(timing), segments=2 if tiny else 6,
                     lengths=edge_lengths(cfg)[::2 if tiny else 1])
    run_core(cfg, job, TIMINGS[timing], seed=len(name) + len(timing))


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(2))
@pytest.mark.parametrize("name", ["tiny", "default", "odd", "one_beat"])
def test_core_amaranth_more(name, seed):
    """More random jobs (``wide`` runs on Verilator, :func:`test_core_cocotb_full`)."""
    cfg = CONFIGS[name]
    job = random_job(cfg, 1000 + seed, segments=10 if cfg.beats_per_key <= 8 else 4,
                     max_len=2 * cfg.tile + 2)
    run_core(cfg, job, NOISY if seed % 2 else TIMINGS["slow_v"], seed=seed)


@pytest.mark.parametrize("name", config_params(list(CONFIGS), fast=("tiny", "default", "odd", "one_beat")))
def test_core_segment_latency(name):
    """No stalls, a memory answering one cycle after each request, each segment sent once the core
    is idle again: the last partial beat of a segment leaves exactly ``segment_latency(n)`` cycles
    after the segment, for 1 key, a tile -1, a tile, a tile +1 and several tiles; the K and V
    requests leave ``issue_latency`` after it."""
    cfg = CONFIGS[name]
    beats = cfg.beats_per_key
    lengths = edge_lengths(cfg) if beats * cfg.tile <= 256 else [1, 2, cfg.tile + 1]
    dut = AttentionCore(cfg)
    job = random_job(cfg, 2, segments=0, extremes=False, first=lengths)
    log = run_core(cfg, job, Timing(serial=True), dut=dut)
    for i, n in enumerate(lengths):
        t0 = log["i_seg"][i]
        assert log["o_kreq"][i] - t0 == log["o_vreq"][i] - t0 == AttentionCore.issue_latency
        measured = log["o_partial"][(i + 1) * beats - 1] - t0
        documented = dut.segment_latency(n)
        assert documented == dut.fill + 1 + (min(n, cfg.tile) + n + 1) * beats
        assert measured == documented, f"{n} keys: last partial beat after {measured}, not {documented}"


@pytest.mark.parametrize("name", ["tiny", "default", "odd", "one_beat"])
def test_core_flows_across_segments(name):
    """No stalls, a memory answering one cycle after each request: the K beats of all segments are
    taken on consecutive cycles (across tiles and segment boundaries); the V beats too, except for
    one pause between segments of exactly the partial's readout (``beats_per_key`` beats after
    ``pv_latency(cfg)`` cycles)."""
    cfg = CONFIGS[name]
    lengths = [cfg.tile + 1, 1, cfg.tile - 1, 2 * cfg.tile, 5, cfg.tile, 3]
    job = random_job(cfg, 3, segments=0, extremes=False, first=lengths[:3 if cfg.beats_per_key > 16 else 7])
    log = run_core(cfg, job)
    k_gaps, v_gaps = np.diff(log["i_k"]), np.diff(log["i_v"])
    assert np.all(k_gaps == 1), f"K bubbles at beats {np.flatnonzero(k_gaps != 1)}"
    bounds = np.cumsum([len(seg.k) * cfg.beats_per_key for seg in job.segs])[:-1] - 1
    assert np.all(np.delete(v_gaps, bounds) == 1), "V bubbles inside a segment"
    assert np.all(v_gaps[bounds] == cfg.beats_per_key + pv_latency(cfg) + 1), v_gaps[bounds]


def in_flight(requests, beats, keys, bpk):
    """Requests in flight right after each request's transfer: issued, and not all of their beats
    taken before that cycle (a request completing at the same edge still held its slot)."""
    last_beat = np.cumsum([n * bpk for n in keys]) - 1
    done = np.array(beats)[last_beat]
    return [i + 1 - int(np.sum(done < t)) for i, t in enumerate(requests)]


@pytest.mark.parametrize("name", ["default", "one_beat", "odd"])
def test_core_outstanding(name):
    """A memory of long latency and short segments: each port keeps exactly ``outstanding``
    requests in flight (issued, responses not all taken), never more."""
    cfg = CONFIGS[name]
    job = random_job(cfg, 9, segments=14, max_len=3, extremes=False)
    log = run_core(cfg, job, Timing(latency=(40, 40)))
    keys = [len(seg.k) for seg in job.segs]
    for port in "kv":
        counts = in_flight(log[f"o_{port}req"], log[f"i_{port}"], keys, cfg.beats_per_key)
        assert max(counts) == AttentionCore.outstanding, (port, counts)


@pytest.mark.parametrize("name", ["default", "one_beat", "odd"])
def test_core_lead(name):
    """While the V request port takes nothing, the core takes ``lead`` segments and issues all their
    K requests (their K beats are all taken too); the V side then catches up, bit-exact. At
    ``odd`` (compact pipeline) the V command queue is block RAM."""
    cfg = CONFIGS[name]
    block = 600
    job = random_job(cfg, 4, segments=AttentionCore.lead + 4, max_len=1, extremes=False)
    log = run_core(cfg, job, Timing(v_block=block))
    before = {port: sum(t <= block for t in cycles) for port, cycles in log.items()}
    assert before["i_seg"] == before["o_kreq"] == AttentionCore.lead, before
    assert before["i_k"] == AttentionCore.lead * cfg.beats_per_key and before["o_vreq"] == 0, before
    assert log["o_vreq"][0] == block + 1


@pytest.mark.parametrize("depth", [1, 2, 5, 8])
def test_ring_forms(depth):
    """``Ring`` in registers and in block RAM, pushed and popped at random (also both at once, on
    a full and an empty ring): the same ``head``, ``valid`` and ``room`` as a reference queue in
    every cycle, the entry pushed at an edge at the head from the next cycle on."""
    shape = 13
    m = Module()
    rings = [Ring(m, shape, depth, "regs"), Ring(m, shape, depth, "bram", block=True)]
    push, pop, value = Signal(), Signal(), Signal(shape)
    for ring in rings:
        m.d.comb += [ring.push.eq(push & ring.room), ring.pop.eq(pop & ring.valid), ring.data.eq(value)]
    sim = Simulator(m)
    sim.add_clock(1e-6)
    rng = random.Random(depth)
    seen = {"pushes": 0, "both": 0}

    async def bench(ctx):
        model = deque()
        for cycle in range(600):
            phase = (cycle // 100) % 3         # mostly pushes, balanced, mostly pops
            want_push = rng.random() < (0.8, 0.5, 0.2)[phase]
            want_pop = rng.random() < (0.2, 0.5, 0.8)[phase]
            word = rng.randrange(1 << shape)
            ctx.set(push, want_push)
            ctx.set(pop, want_pop)
            ctx.set(value, word)
            for ring in rings:
                assert ctx.get(ring.valid) == bool(model), cycle
                assert ctx.get(ring.room) == (len(model) < depth), cycle
                if model:
                    assert ctx.get(ring.head) == model[0], cycle
            pushing, popping = want_push and len(model) < depth, want_pop and bool(model)
            seen["both"] += pushing and popping
            seen["pushes"] += pushing
            if popping:
                model.popleft()
            if pushing:
                model.append(word)
            await ctx.tick()

    sim.add_testbench(bench)
    sim.run()
    assert seen["pushes"] > 100 and (seen["both"] > 20 or depth == 1), seen   # (one slot: never both)


# --- tests: cocotb on Icarus Verilog and Verilator ---------------------------------------------------

def check_first_segment(cfg, job, build_dir, runs):
    """From the harness logs of the runs without stalls: the first segment's last partial beat left
    exactly ``segment_latency`` after it (the K player's beats wait on the port: M = 1), and the
    K beats of the first two segments were taken on consecutive cycles."""
    logs = {}
    for port in ("i_seg", "i_k", "o_partial"):
        for line in (build_dir / f"xfer_{port}.txt").read_text().splitlines():
            run, _, cycle = line.split()
            logs.setdefault((port, int(run)), []).append(int(cycle))
    dut = AttentionCore(cfg)
    beats = cfg.beats_per_key
    for run in runs:
        t0 = logs["i_seg", run][0]
        assert logs["o_partial", run][beats - 1] - t0 == dut.segment_latency(len(job.segs[0].k)), run
        k = logs["i_k", run][:(len(job.segs[0].k) + len(job.segs[1].k)) * beats]
        assert np.all(np.diff(k) == 1), run


def cocotb_job(cfg, seed, segments):
    return random_job(cfg, seed, segments=segments, first=[2 * cfg.tile + 3, cfg.tile + 1],
                      max_len=2 * cfg.tile + 2)


@pytest.mark.parametrize("simulator", ["icarus", "verilator"])
@pytest.mark.parametrize("name", ["tiny", "default"])
def test_core_cocotb(name, simulator, request):
    cfg = CONFIGS[name]
    job = cocotb_job(cfg, 21, 1 if cfg.beats_per_key > 16 else 2)
    inputs, outputs = stream_vectors(cfg, job)
    where = bench_dir(request)
    patterns = [("random", "random"), ("none", "none")]
    run_cocotb_bench(QueriesFirst(cfg), toplevel="core", inputs=inputs, outputs=outputs,
                     simulator=simulator, build_dir=where, patterns=patterns)
    check_first_segment(cfg, job, where, [1])


#: Keys per run of the slow tier (a quarter at 32 beats a key; Icarus runs one configuration).
FULL_KEYS = {"verilator": 1000, "icarus": 300}


@pytest.mark.slow
@pytest.mark.parametrize("name, simulator", [("tiny", "verilator"), ("default", "verilator"),
                                             ("odd", "verilator"), ("wide", "verilator"),
                                             ("odd", "icarus")])
def test_core_cocotb_full(name, simulator, request):
    """The extremes, the edge lengths and random segments, FULL_KEYS keys in all, under every
    stall pattern of the bench."""
    cfg = CONFIGS[name]
    keys = FULL_KEYS[simulator] // (4 if cfg.beats_per_key > 16 else 1)
    segments = 0
    while (job := cocotb_job(cfg, 33, segments)).keys < keys:
        segments += 2
    inputs, outputs = stream_vectors(cfg, job)
    where = bench_dir(request)
    run_cocotb_bench(QueriesFirst(cfg), toplevel="core", inputs=inputs, outputs=outputs,
                     simulator=simulator, build_dir=where, seed=33)
    check_first_segment(cfg, job, where, [0])


# --- tests: lint and constructor errors ------------------------------------------------------------

@pytest.mark.parametrize("name", config_params(list(CONFIGS), fast=("tiny", "default", "odd", "one_beat")))
def test_core_lint(name, request):
    path = bench_dir(request) / "core.v"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(design_verilog(AttentionCore(CONFIGS[name]), toplevel="core"))
    assert verilator_lint(path, waivers={**AMARANTH_LINT_WAIVERS, **HIERARCHY_LINT_WAIVERS}) == []


def test_constructor_errors():
    cfg = PRESETS["tiny"]
    for unit in (AttentionCore, KeyJoin, ValueGate):
        with pytest.raises(TypeError, match=r"^cfg must be an AttentionConfig, not 'tiny'$"):
            unit("tiny")
    with pytest.raises(TypeError, match=r"^cfg must be an AttentionConfig, not None$"):
        RequestIssuer(None, queue=2, outstanding=4)
    with pytest.raises(TypeError, match=r"^tag_shape must be a shape-castable object, not 'x'$"):
        RequestIssuer(cfg, tag_shape="x", queue=2, outstanding=4)
    with pytest.raises(ValueError, match=r"^queue must be at least 1, not 0$"):
        RequestIssuer(cfg, queue=0, outstanding=4)
    with pytest.raises(TypeError, match=r"^outstanding must be an integer, not 4.0$"):
        RequestIssuer(cfg, queue=2, outstanding=4.0)
    with pytest.raises(TypeError, match=r"^outstanding must be an integer, not True$"):
        RequestIssuer(cfg, queue=2, outstanding=True)
