# amaranth: UnusedElaboratable=no
"""KVMemory: loaded by the packer's write stream, every port answers its requests word for word.

The reference of a response is the job's own K and V arrays in the documented layout: core ``c``'s
bank window shows the flattened keys ``[bound[c], bound[c+1])`` of
:func:`~leanattn.sim.partition.core_bounds` from its first word, zeros after them (the banks start
empty); a request of ``keys`` keys at element ``addr`` reads ``keys * head_dim`` elements from
``addr - window start``. Bad requests (outside the window, straddling its end, ``keys`` 0, not
aligned to ``lanes``, past the end of the address space) are answered with their count of zero
beats.

The stream benches play every input stream at once; a request answered before the load finished
would read an empty bank. :class:`Loaded` therefore holds the read ports closed until the number of
write transfers of the load has passed (a test wrapper around the unchanged memory), so the
expected answers do not depend on timing. The sticky error bit, its clear and reset are checked
by a sequential testbench.

Fast tier: amaranth.sim at tiny, default and odd (no stalls and random stalls on every stream), the
cycle facts, errors, clear and reset, two outstanding requests, lint, constructor errors, one
short cocotb run per simulator. Slow: the fixed stall patterns, wide under amaranth.sim, lint of
wide, and larger jobs through cocotb on Icarus and Verilator at tiny, default and odd.
"""

import functools
import re

import numpy as np
import pytest
from amaranth.back import verilog
from amaranth.hdl import Module, ResetInserter, Shape, Signal, Value
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.sim import Simulator
from tiers import config_params

from leanattn.hdl.config import PRESETS
from leanattn.hdl.kvmem import Kind, KVBank, KVMemory, bank_write_layout, kv_write_layout, reciprocal
from leanattn.hdl.ports import kv_data_layout, kv_request_layout
from leanattn.sim.cocotb_util import AMARANTH_LINT_WAIVERS, HIERARCHY_LINT_WAIVERS, verilator_lint
from leanattn.sim.configs import TEST_CONFIGS
from leanattn.sim.packer import bank_keys_for, pack_kv
from leanattn.sim.partition import core_bounds
from leanattn.sim.stream_bench import bench_dir, run_cocotb_bench, simulate

PATTERNS = [("none", "none"), ("random", "random"), ("fixed", "none"), ("none", "fixed")]
FAST = ["tiny", "default", "odd"]
#: One beat per key: a one-key request is a one-beat request.
ONE_BEAT = PRESETS["tiny"].replace(head_dim=8, lanes=8, max_context=64, max_heads=4)


# --- payloads ---------------------------------------------------------------------------------------

def packer(layout):
    """A fast ``value -> bits`` for ``layout`` (``layout.const`` costs about 0.5 ms an item)."""
    if isinstance(layout, data.StructLayout):
        parts = [(name, field.offset, packer(field.shape)) for name, field in layout]
        return lambda value: sum(pack(value[name]) << offset for name, offset, pack in parts)
    if isinstance(layout, data.ArrayLayout):
        width, pack = Shape.cast(layout.elem_shape).width, packer(layout.elem_shape)
        return lambda value: sum(pack(x) << (i * width) for i, x in enumerate(value))
    mask = (1 << Shape.cast(layout).width) - 1
    return lambda value: int(getattr(value, "value", value)) & mask


@functools.cache
def packers(cfg):
    return (packer(kv_write_layout(cfg)), packer(kv_request_layout(cfg)), packer(kv_data_layout(cfg)))


# --- jobs and requests ------------------------------------------------------------------------------

class Job:
    """A random job packed into banks of ``bank_keys_for + slack`` keys, and the windows as the
    layout defines them (from the arrays, not from the packer's banks)."""

    def __init__(self, cfg, seed, *, heads, max_len, slack=2):
        rng = np.random.default_rng(seed)
        self.cfg = cfg
        self.lengths = [int(n) for n in rng.integers(1, max_len + 1, heads)]
        shape = (heads, max(self.lengths), cfg.head_dim)
        self.k = rng.integers(cfg.input_min, cfg.input_max + 1, shape)
        self.v = rng.integers(cfg.input_min, cfg.input_max + 1, shape)
        self.bank_keys = bank_keys_for(cfg, sum(self.lengths)) + slack
        self.packed = pack_kv(cfg, self.lengths, self.k, self.v, bank_keys=self.bank_keys)
        self.bounds = core_bounds(sum(self.lengths), cfg.cores)

    def window(self, kind, core):
        """``(element address of the window's first element, its elements)``."""
        d = self.cfg.head_dim
        x = self.k if kind is Kind.K else self.v
        flat = np.concatenate([x[h, :n].ravel() for h, n in enumerate(self.lengths)])
        image = np.zeros(self.bank_keys * d, dtype=np.int64)
        share = flat[self.bounds[core] * d:self.bounds[core + 1] * d]
        image[:len(share)] = share
        return self.bounds[core] * d, image

    def writes(self):
        pack = packers(self.cfg)[0]
        return [pack(item) for item in self.packed.writes()]


def port_requests(cfg, start, image, rng, count, *, max_keys):
    """``(requests, expected beats)`` for one port whose window begins at element ``start``: the
    edge cases, then ``count`` random ones (mostly inside the window, some bad)."""
    d, lanes, bpk = cfg.head_dim, cfg.lanes, cfg.beats_per_key
    words = len(image) // lanes
    bank_keys = len(image) // d
    top = (1 << cfg.kv_addr_bits) - 1                       # the largest address the field holds
    requests, beats = [], []

    def good(word, keys):
        requests.append({"addr": start + word * lanes, "keys": keys})
        beats.extend(image[word * lanes:word * lanes + keys * d].reshape(-1, lanes))

    def bad(addr, keys):
        requests.append({"addr": addr, "keys": keys})
        beats.extend(np.zeros((keys * bpk, lanes), dtype=np.int64))

    # Edges: the first and the last key, a word that starts no key, the whole window; just past
    # the end, straddling it, keys 0, one key more than the window, an end past the address space.
    good(0, 1)
    good(words - bpk, 1)
    good(words - bpk - 1, 1) if words > bpk else good(0, 1)
    good(0, bank_keys)
    bad(start + words * lanes, 1)
    bad(start + (words - bpk + 1) * lanes, 1) if bpk > 1 else bad(start + (words - 1) * lanes, 2)
    bad(start, 0)
    bad(start, bank_keys + 1)
    bad(start + (top - start) // lanes * lanes, 2)
    if start:
        bad(start - lanes, 1)                               # the word before the window
    if lanes > 1:
        bad(start + 1, 1)                                   # not a multiple of lanes
    for _ in range(count):
        kind = rng.choice(["good"] * 6 + ["below", "past", "straddle", "zero", "unaligned"])
        keys = int(rng.integers(1, min(max_keys, bank_keys) + 1))
        if kind == "good":
            good(int(rng.integers(0, words - keys * bpk + 1)), keys)
        elif kind == "below" and start >= lanes:
            bad(int(rng.integers(0, start // lanes)) * lanes, keys)
        elif kind == "past":
            bad(start + int(rng.integers(words, words + 4 * bpk)) * lanes, keys)
        elif kind == "straddle" and keys * bpk > 1:
            bad(start + (words - keys * bpk + int(rng.integers(1, keys * bpk))) * lanes, keys)
        elif kind == "zero":
            bad(start + int(rng.integers(0, words)) * lanes, 0)
        elif kind == "unaligned" and lanes > 1:
            bad(start + int(rng.integers(0, words)) * lanes + int(rng.integers(1, lanes)), keys)
    return requests, beats


def vectors(job, seed, *, count, max_keys):
    """``(inputs, outputs)``: the load on ``i_write``, random requests on every read port."""
    cfg = job.cfg
    _, pack_req, pack_beat = packers(cfg)
    rng = np.random.default_rng(seed)
    inputs, outputs = {"i_write": job.writes()}, {}
    for core in range(cfg.cores):
        for kind, req, out in ((Kind.K, f"i_kreq_{core}", f"o_k_{core}"),
                               (Kind.V, f"i_vreq_{core}", f"o_v_{core}")):
            requests, beats = port_requests(cfg, *job.window(kind, core), rng, count, max_keys=max_keys)
            inputs[req] = [pack_req(r) for r in requests]
            outputs[out] = [pack_beat(b) for b in beats]
    return inputs, outputs


class Loaded(wiring.Component):
    """:class:`KVMemory` whose read ports open once ``writes`` write transfers have passed (the
    load), so that a bench playing all streams at once reads the loaded job. ``i_clear`` is held
    low; ``o_error`` is left out (the stream benches see streams only)."""

    def __init__(self, cfg, *, bank_keys, writes):
        self.mem = KVMemory(cfg, bank_keys=bank_keys)
        self._writes = writes
        super().__init__({name: member for name, member in self.mem.signature.members.items()
                          if name not in ("o_error", "i_clear")})

    def elaborate(self, platform):
        m = Module()
        m.submodules.mem = mem = self.mem
        count = Signal(range(self._writes + 1))
        loaded = count == self._writes
        with m.If(self.i_write.valid & self.i_write.ready & ~loaded):
            m.d.sync += count.eq(count + 1)
        wiring.connect(m, wiring.flipped(self.i_write), mem.i_write)
        for name in self.signature.members:
            if name.startswith("o_"):
                wiring.connect(m, getattr(mem, name), wiring.flipped(getattr(self, name)))
            elif name != "i_write":
                outer, inner = getattr(self, name), getattr(mem, name)
                m.d.comb += [inner.payload.eq(outer.payload), inner.valid.eq(outer.valid & loaded),
                             outer.ready.eq(inner.ready & loaded)]
        return m


@functools.lru_cache(maxsize=8)
def fast_case(name):
    cfg = TEST_CONFIGS[name]
    job = Job(cfg, 17, heads=min(cfg.max_heads, 3), max_len=24 // cfg.beats_per_key + 3, slack=1)
    return job, vectors(job, 23, count=8, max_keys=max(1, 24 // cfg.beats_per_key))


# --- the divider ------------------------------------------------------------------------------------

@pytest.mark.parametrize("divisor", [1, 2, 3, 5, 6, 7, 8, 9, 11, 12, 24, 31, 100])
@pytest.mark.parametrize("bound", [1, 2, 3, 10, 1000, 1 << 12, 5003, 1 << 16])
def test_reciprocal(divisor, bound):
    """Exhaustively: the multiply-shift quotient is the floor quotient below the bound."""
    mult, shift = reciprocal(divisor, bound)
    x = np.arange(bound, dtype=np.int64)
    assert np.array_equal((x * mult) >> shift, x // divisor)


# --- amaranth.sim -----------------------------------------------------------------------------------

def test_packer_is_the_layout():
    cfg = TEST_CONFIGS["odd"]
    job, _ = fast_case("odd")
    pack_write, pack_req, pack_beat = packers(cfg)
    items = list(job.packed.writes())
    for item in items[:10] + items[-10:]:
        assert pack_write(item) == kv_write_layout(cfg).const(item).as_bits()
    for req in ({"addr": 0, "keys": 0}, {"addr": (1 << cfg.kv_addr_bits) - 1, "keys": 1000}):
        assert pack_req(req) == kv_request_layout(cfg).const(req).as_bits()
    beat = [cfg.input_min, cfg.input_max, -1]
    assert pack_beat(beat) == kv_data_layout(cfg).const(beat).as_bits()


def test_requests_cover_the_cases():
    """The random requests include every bad kind and good ones all over the window."""
    job, (inputs, outputs) = fast_case("odd")
    cfg = job.cfg
    start, image = job.window(Kind.V, 1)
    requests, _ = port_requests(cfg, start, image, np.random.default_rng(1), 200, max_keys=8)
    end = start + len(image)
    inside = [r for r in requests if r["keys"] and start <= r["addr"]
              and r["addr"] + r["keys"] * cfg.head_dim <= end and (r["addr"] - start) % cfg.lanes == 0]
    assert len(inside) > 100 and {r["addr"] for r in inside} >= {start, end - cfg.head_dim}
    assert any(r["addr"] < start for r in requests) and any(r["addr"] >= end for r in requests)
    assert any(r["addr"] < end < r["addr"] + r["keys"] * cfg.head_dim for r in requests)
    assert any(r["keys"] == 0 for r in requests) and any((r["addr"] - start) % cfg.lanes for r in requests)
    assert any(r["addr"] + r["keys"] * cfg.head_dim > 1 << cfg.kv_addr_bits for r in requests)


@pytest.mark.parametrize("name", FAST)
@pytest.mark.parametrize(("idle", "backpressure"), [
    pytest.param(*p, marks=() if p[0] == p[1] else pytest.mark.slow, id="-".join(p)) for p in PATTERNS])
def test_amaranth(name, idle, backpressure):
    job, (inputs, outputs) = fast_case(name)
    dut = Loaded(job.cfg, bank_keys=job.bank_keys, writes=len(inputs["i_write"]))
    simulate(dut, inputs, outputs, idle=idle, backpressure=backpressure,
             seed=PATTERNS.index((idle, backpressure)))


def test_amaranth_wrong_word_fails():
    """The bench notices one wrong element (so the passing runs mean something)."""
    job, (inputs, outputs) = fast_case("tiny")
    wrong = dict(outputs, o_v_0=outputs["o_v_0"][:5] + [outputs["o_v_0"][5] ^ 1] + outputs["o_v_0"][6:])
    with pytest.raises(AssertionError, match="o_v_0"):
        simulate(Loaded(job.cfg, bank_keys=job.bank_keys, writes=len(inputs["i_write"])), inputs, wrong)


def _timing(cfg, keys_list, bank_keys=8):
    """Transfer cycles of requests on ``i_kreq_0`` of an empty memory, no stalls."""
    _, pack_req, pack_beat = packers(cfg)
    requests = [pack_req({"addr": 0, "keys": keys}) for keys in keys_list]
    zero = pack_beat([0] * cfg.lanes)
    beats = [zero] * (sum(keys_list) * cfg.beats_per_key)
    sent, received = simulate(KVMemory(cfg, bank_keys=bank_keys), {"i_kreq_0": requests}, {"o_k_0": beats})
    return sent["i_kreq_0"], [cycle for _, cycle in received["o_k_0"]]


@pytest.mark.parametrize("name", FAST)
def test_latency_and_throughput(name):
    """An idle port: the first beat ``latency`` (2) cycles after the request, then one per cycle;
    back-to-back requests of at least two beats answered without a gap; each request after the
    first accepted in the cycle after the previous one's first read."""
    cfg = TEST_CONFIGS[name]
    assert KVMemory.latency == KVBank.latency == 2
    sent, beats = _timing(cfg, [1])
    assert beats == [sent[0] + 2 + i for i in range(cfg.beats_per_key)]
    keys_list = [1, 3, 1, 2, 1]
    sent, beats = _timing(cfg, keys_list)
    assert beats == list(range(sent[0] + 2, sent[0] + 2 + len(beats)))
    firsts = np.cumsum([0] + [keys * cfg.beats_per_key for keys in keys_list[:-1]])
    assert sent[1:] == [sent[0] + 2 + int(f) for f in firsts[:-1]]


def test_one_beat_requests():
    """With one beat per request the port answers one request every two cycles."""
    assert ONE_BEAT.beats_per_key == 1
    sent, beats = _timing(ONE_BEAT, [1] * 12)
    assert beats == [sent[0] + 2 + 2 * i for i in range(12)]
    assert sent == [sent[0] + 2 * i for i in range(12)]


class Bench:
    """A sequential testbench on a :class:`KVMemory` with a reset input (``ResetInserter``)."""

    def __init__(self, ctx, dut, rst, job):
        self.ctx, self.dut, self.rst, self.job = ctx, dut, rst, job
        self.cfg = job.cfg
        self.pack_write, self.pack_req, self.pack_beat = packers(job.cfg)

    async def write(self, items):
        ctx, port = self.ctx, self.dut.i_write
        for item in items:
            ctx.set(port.valid, 1)
            ctx.set(Value.cast(port.payload), item)
            _, _, ready = await ctx.tick().sample(port.ready)
            assert ready
        ctx.set(port.valid, 0)

    async def request(self, kind, core, addr, keys, *, clear=False):
        """Send one request; return ``o_error`` before and after its transfer edge."""
        ctx = self.ctx
        port = getattr(self.dut, f"i_{'k' if kind is Kind.K else 'v'}req_{core}")
        ctx.set(port.valid, 1)
        ctx.set(Value.cast(port.payload), self.pack_req({"addr": addr, "keys": keys}))
        ctx.set(self.dut.i_clear, clear)
        while True:
            _, _, ready, before = await ctx.tick().sample(port.ready, self.dut.o_error)
            if ready:
                break
        ctx.set(port.valid, 0)
        ctx.set(self.dut.i_clear, 0)
        return before, ctx.get(self.dut.o_error)

    async def beats(self, kind, core, count, *, quiet=10):
        """Take ``count`` beats, then check that no more come for ``quiet`` cycles."""
        ctx, port = self.ctx, getattr(self.dut, f"o_{'k' if kind is Kind.K else 'v'}_{core}")
        ctx.set(port.ready, 1)
        got = []
        for _ in range(count + quiet):
            _, _, valid, payload = await ctx.tick().sample(port.valid, port.payload)
            if valid:
                got.append([int(x) for x in payload])
        ctx.set(port.ready, 0)
        assert len(got) == count
        return got

    async def read(self, kind, core, word, keys):
        """A good request; its beats against the window; ``o_error`` unchanged by it."""
        start, image = self.job.window(kind, core)
        d, lanes = self.cfg.head_dim, self.cfg.lanes
        before, after = await self.request(kind, core, start + word * lanes, keys)
        assert after == before
        got = await self.beats(kind, core, keys * self.cfg.beats_per_key)
        assert np.array_equal(np.array(got), image[word * lanes:word * lanes + keys * d].reshape(-1, lanes))

    async def bad(self, kind, core, addr, keys, *, clear=False):
        """A bad request: ``o_error`` set at its transfer edge, its count of zero beats."""
        _, after = await self.request(kind, core, addr, keys, clear=clear)
        assert after == 1
        got = await self.beats(kind, core, keys * self.cfg.beats_per_key)
        assert not np.any(got)

    async def clear(self):
        self.ctx.set(self.dut.i_clear, 1)
        await self.ctx.tick()
        self.ctx.set(self.dut.i_clear, 0)
        assert self.ctx.get(self.dut.o_error) == 0


@pytest.mark.parametrize("name", ["tiny2", "default", "odd"])
def test_errors_clear_and_reset(name):
    """Sticky ``o_error``: set by each kind of bad request and by a write past a bank, kept through
    good requests, cleared by ``i_clear`` (an error in the clear cycle wins) and by reset; a reset
    in the middle of a request keeps the loaded words and windows. (Two banks at least: ``tiny``
    has one.)"""
    cfg = TEST_CONFIGS[name]
    job = Job(cfg, 5, heads=min(cfg.max_heads, 3), max_len=9, slack=3)
    rst = Signal()
    dut = KVMemory(cfg, bank_keys=job.bank_keys)
    top = Module()
    top.submodules.dut = ResetInserter(rst)(dut)
    words, lanes = job.packed.bank_words, cfg.lanes
    K, V = Kind.K, Kind.V

    async def testbench(ctx):
        tb = Bench(ctx, dut, rst, job)
        await tb.write(job.writes())
        assert ctx.get(dut.o_error) == 0
        await tb.read(K, 1, 0, 2)
        start, _ = job.window(V, 1)
        await tb.bad(V, 1, start + words * lanes, 2)                    # past the window
        await tb.read(V, 1, words - 2 * cfg.beats_per_key, 2)           # the last two keys
        assert ctx.get(dut.o_error) == 1                                # sticky
        await tb.clear()
        await tb.bad(V, 1, start - lanes, 1)                            # the word before it
        await tb.clear()
        await tb.bad(K, 0, (words - cfg.beats_per_key + 1) * lanes, 1)  # straddling the end
        await tb.bad(K, 1, start, 0, clear=True)                        # keys 0, during a clear
        await tb.clear()
        if lanes > 1:
            await tb.bad(K, 1, start + lanes + 1, 1)                    # not a multiple of lanes
            await tb.clear()

        # A write past a bank: ignored, an error; the bank reads as before.
        await tb.write([tb.pack_write({"base": 0, "kind": V, "bank": 1, "addr": words, "data": [7] * lanes})])
        assert ctx.get(dut.o_error) == 1
        await tb.read(V, 1, 0, job.bank_keys)
        await tb.clear()

        # Reset in the middle of a request: no more beats, error cleared, the load kept.
        await tb.bad(K, 0, words * lanes, 1)
        await tb.request(K, 1, start, 3)
        port = dut.o_k_1
        ctx.set(port.ready, 1)
        for _ in range(4):
            await ctx.tick()
        ctx.set(port.ready, 0)
        ctx.set(rst, 1)
        await ctx.tick()
        ctx.set(rst, 0)
        assert ctx.get(dut.o_error) == 0 and ctx.get(port.valid) == 0
        await tb.beats(K, 1, 0)
        await tb.read(K, 1, 0, job.bank_keys)
        await tb.read(V, 0, 1, 1)
        assert ctx.get(dut.o_error) == 0

    sim = Simulator(top)
    sim.add_clock(1e-6)
    sim.add_testbench(testbench)
    sim.run()


def test_two_outstanding():
    """With the output stalled a port takes two requests (one being answered, one waiting) and no
    third; released, it answers all of them in order."""
    cfg = TEST_CONFIGS["default"]
    job = Job(cfg, 9, heads=3, max_len=8, slack=3)
    dut = KVMemory(cfg, bank_keys=job.bank_keys)
    start, image = job.window(Kind.V, 2)
    d, lanes = cfg.head_dim, cfg.lanes
    words_of = [(0, 1), (cfg.beats_per_key, 2), (1, 1)]

    async def testbench(ctx):
        tb = Bench(ctx, dut, None, job)
        await tb.write(job.writes())
        port = dut.i_vreq_2
        accepted = 0
        ctx.set(port.valid, 1)
        for _ in range(30):
            if accepted < len(words_of):
                word, keys = words_of[accepted]
                ctx.set(Value.cast(port.payload), tb.pack_req({"addr": start + word * lanes, "keys": keys}))
            _, _, ready = await ctx.tick().sample(port.ready)
            accepted += ready
        assert accepted == 2 and ctx.get(dut.o_v_2.valid)
        # Released: the two answered, then the third accepted and answered.
        expected = [image[w * lanes:w * lanes + n * d].reshape(-1, lanes) for w, n in words_of]
        count = sum(n for _, n in words_of) * cfg.beats_per_key
        ctx.set(dut.o_v_2.ready, 1)
        got = []
        for _ in range(count + 10):
            if accepted < len(words_of):
                word, keys = words_of[accepted]
                ctx.set(Value.cast(port.payload), tb.pack_req({"addr": start + word * lanes, "keys": keys}))
            ctx.set(port.valid, accepted < len(words_of))
            _, _, ready, valid, payload = await ctx.tick().sample(port.ready, dut.o_v_2.valid,
                                                                  dut.o_v_2.payload)
            accepted += ready and accepted < len(words_of)
            if valid:
                got.append([int(x) for x in payload])
        assert np.array_equal(np.array(got), np.concatenate(expected))

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(testbench)
    sim.run()


# --- contract ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", list(TEST_CONFIGS))
def test_ports(name):
    cfg = TEST_CONFIGS[name]
    dut = KVMemory(cfg, bank_keys=5)
    assert dut.cfg is cfg and dut.bank_keys == 5
    members = dut.signature.members
    assert members["i_write"] == In(stream.Signature(kv_write_layout(cfg)))
    assert members["o_error"] == Out(1) and members["i_clear"] == In(1)
    for c in range(cfg.cores):
        for req, out in ((f"i_kreq_{c}", f"o_k_{c}"), (f"i_vreq_{c}", f"o_v_{c}")):
            assert members[req] == In(stream.Signature(kv_request_layout(cfg)))
            assert members[out] == Out(stream.Signature(kv_data_layout(cfg)))
    assert len(members) == 3 + 4 * cfg.cores
    bank = KVBank(cfg, bank_keys=5)
    assert bank.words == 5 * cfg.beats_per_key
    assert bank.signature.members["i_write"] == In(stream.Signature(bank_write_layout(cfg)))
    # The write layout holds a global word address and every bank index.
    layout = kv_write_layout(cfg)
    assert 1 << layout["addr"].shape.width >= cfg.max_heads * cfg.max_context * cfg.beats_per_key
    assert 1 << layout["bank"].shape.width == cfg.cores


@pytest.mark.parametrize(("bank_keys", "error", "message"), [
    (0, ValueError, "bank_keys must be in the range 1..8192 (max_heads * max_context), not 0"),
    (-3, ValueError, "bank_keys must be in the range 1..8192 (max_heads * max_context), not -3"),
    (8193, ValueError, "bank_keys must be in the range 1..8192 (max_heads * max_context), not 8193"),
    (4.0, TypeError, "bank_keys must be an integer, not 4.0"),
    (True, TypeError, "bank_keys must be an integer, not True"),
    (None, TypeError, "bank_keys must be an integer, not None"),
])
@pytest.mark.parametrize("unit", [KVMemory, KVBank])
def test_bank_keys_errors(unit, bank_keys, error, message):
    with pytest.raises(error, match=re.escape(message)):
        unit(PRESETS["tiny"], bank_keys=bank_keys)


@pytest.mark.parametrize("unit", [KVMemory, KVBank])
def test_cfg_and_keyword_errors(unit):
    with pytest.raises(TypeError, match=re.escape("cfg must be an AttentionConfig, not 'tiny'")):
        unit("tiny", bank_keys=4)
    with pytest.raises(TypeError, match="positional argument"):
        unit(PRESETS["tiny"], 4)
    with pytest.raises(TypeError, match="bank_keys"):
        unit(PRESETS["tiny"])


@pytest.mark.parametrize("name", config_params(TEST_CONFIGS, fast=FAST))
def test_lint(request, name):
    """The bank alone with the waivers every design needs; the memory with the hierarchy's too."""
    cfg = TEST_CONFIGS[name]
    where = bench_dir(request)
    where.mkdir(parents=True, exist_ok=True)
    (where / "kvbank.v").write_text(verilog.convert(KVBank(cfg, bank_keys=3), name="kvbank", emit_src=False))
    assert verilator_lint(where / "kvbank.v", waivers=AMARANTH_LINT_WAIVERS) == []
    (where / "kvmem.v").write_text(verilog.convert(KVMemory(cfg, bank_keys=3), name="kvmem", emit_src=False))
    assert verilator_lint(where / "kvmem.v", top="kvmem",
                          waivers={**AMARANTH_LINT_WAIVERS, **HIERARCHY_LINT_WAIVERS}) == []


# --- cocotb on the generated Verilog ----------------------------------------------------------------

@pytest.mark.parametrize("simulator", ["icarus", "verilator"])
def test_cocotb_quick(request, simulator):
    job, (inputs, outputs) = fast_case("tiny")
    dut = Loaded(job.cfg, bank_keys=job.bank_keys, writes=len(inputs["i_write"]))
    run_cocotb_bench(dut, toplevel="kvmem", inputs=inputs, outputs=outputs, simulator=simulator,
                     build_dir=bench_dir(request), seed=4242,
                     patterns=[("none", "none"), ("random", "random")])


@functools.lru_cache(maxsize=8)
def full_case(name, count):
    """A job of several heads over every core, ``count`` random requests per port besides the edges."""
    cfg = TEST_CONFIGS[name]
    job = Job(cfg, 31, heads=min(cfg.max_heads, 7), max_len=320 // cfg.beats_per_key + 8, slack=3)
    return job, vectors(job, 37, count=count, max_keys=max(2, 128 // cfg.beats_per_key))


#: Icarus runs about 50 times slower than Verilator on this many streams: it gets fewer requests
#: and the two stall patterns that matter most; Verilator gets more requests and every pattern.
FULL_RUNS = {
    "icarus":    (20, [("random", "random"), ("none", "none")]),
    "verilator": (60, PATTERNS),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", ["tiny", "default", "odd"])
@pytest.mark.parametrize("simulator", ["icarus", "verilator"])
def test_cocotb_full(request, simulator, name):
    count, patterns = FULL_RUNS[simulator]
    job, (inputs, outputs) = full_case(name, count)
    dut = Loaded(job.cfg, bank_keys=job.bank_keys, writes=len(inputs["i_write"]))
    run_cocotb_bench(dut, toplevel="kvmem", inputs=inputs, outputs=outputs, simulator=simulator,
                     build_dir=bench_dir(request), seed=5151, patterns=patterns)


@pytest.mark.slow
@pytest.mark.parametrize(("idle", "backpressure"), [("none", "none"), ("random", "random")])
def test_amaranth_wide(idle, backpressure):
    """wide (16 banks of 128-bit words) under amaranth.sim: a small job, every kind of request.
    (Its Verilator build alone takes about 80 s of CPU, more than this whole tier may spend.)"""
    cfg = TEST_CONFIGS["wide"]
    job = Job(cfg, 41, heads=3, max_len=8, slack=1)
    inputs, outputs = vectors(job, 43, count=4, max_keys=3)
    dut = Loaded(cfg, bank_keys=job.bank_keys, writes=len(inputs["i_write"]))
    simulate(dut, inputs, outputs, idle=idle, backpressure=backpressure, seed=8)
