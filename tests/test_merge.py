# amaranth: UnusedElaboratable=no
"""Merge: bit-exact against ``golden.merge`` beat by beat, at every test configuration.

Vectors: partials of real segments (``golden.online_softmax`` on random logits and values: two
adjacent segments of one head, independent segments, empty sides), plus extremes: every shift
distance that matters (0, 1, the accumulator widths and their neighbours, ``shift_diff_max``),
sums at the ``acc_l_bits`` / ``acc_o_bits`` limits, rounding ties of both signs, empty a / b /
both (with zero and with junk fields), and beat-level random states. The reference of each beat
is ``golden.merge`` on ``golden.Partial(valid, m, l, o_lanes)`` of both sides.

Fast tier: amaranth.sim at every configuration under each stall pattern, hypothesis-drawn beats
of every swap case (a wins, b wins, equal maxima, a / b / both empty, gaps up to
``shift_diff_max``), the join property, lint, constructor errors, and one short cocotb run per
simulator. Slow: >= 10,000 beats per configuration through cocotb on Icarus and on Verilator.
"""

import functools
import random
import re

import numpy as np
import pytest
from amaranth.back import verilog
from amaranth.hdl import Shape
from amaranth.lib import data, stream
from amaranth.lib.wiring import In, Out
from hypothesis import given, settings
from hypothesis import strategies as st
from tiers import full_pairs

from leanattn.hdl.config import PRESETS
from leanattn.hdl.layouts import partial_layout
from leanattn.hdl.merge import Merge
from leanattn.sim import golden
from leanattn.sim.cocotb_util import AMARANTH_LINT_WAIVERS, verilator_lint
from leanattn.sim.configs import TEST_CONFIGS
from leanattn.sim.stream_bench import bench_dir, run_cocotb_bench, simulate, stall_iter

CONFIGS = list(TEST_CONFIGS)
PATTERNS = [("none", "none"), ("random", "random"), ("fixed", "none"), ("none", "fixed")]

# --- vectors --------------------------------------------------------------------------------------

@functools.lru_cache(maxsize=16)
def _fields(cfg):
    """``(name, offset, width, signed, count)`` of every field of the beat layout, read from the
    layout itself (an array field: ``count`` elements of ``width`` bits)."""
    fields = []
    for name, field in partial_layout(cfg):
        shape = field.shape
        if isinstance(shape, data.ArrayLayout):
            elem = Shape.cast(shape.elem_shape)
            fields.append((name, field.offset, elem.width, elem.signed, shape.length))
        else:
            shape = Shape.cast(shape)
            fields.append((name, field.offset, shape.width, shape.signed, None))
    return fields


def pack(cfg, beat):
    """Raw bits of a beat in ``partial_layout(cfg)``: ``layout.const(beat).as_bits()``, with the
    offsets taken from the layout once (``const`` costs 0.5 ms a beat; the big runs pack 30,000)."""
    bits = 0
    for name, offset, width, is_signed, count in _fields(cfg):
        values = beat[name] if count is not None else [beat[name]]
        assert len(values) == (count or 1), name
        for index, value in enumerate(values):
            lo, hi = (-(1 << (width - 1)), (1 << (width - 1)) - 1) if is_signed else (0, (1 << width) - 1)
            assert lo <= value <= hi, f"{name} = {value} outside {lo}..{hi}"
            bits |= (int(value) & ((1 << width) - 1)) << (offset + index * width)
    return bits


def as_partial(beat):
    return golden.Partial(bool(beat["valid"]), beat["m"], beat["l"], np.array(beat["o"], dtype=np.int64))


def expected_beat(cfg, a, b):
    """The merged beat: golden.merge on both sides' lanes; head and last as the unit's contract."""
    merged = golden.merge(cfg, as_partial(a), as_partial(b))
    return {"head": a["head"] if a["valid"] else b["head"], "valid": int(merged.valid),
            "m": int(merged.m), "l": int(merged.l), "o": [int(x) for x in merged.o], "last": a["last"]}


def beats_of(cfg, partial, head):
    """The beats of a whole partial: ``lanes`` accumulators each, m and l repeated, last at the end."""
    count = cfg.head_dim // cfg.lanes
    return [{"head": head, "valid": int(partial.valid), "m": int(partial.m), "l": int(partial.l),
             "o": [int(x) for x in partial.o[k * cfg.lanes:(k + 1) * cfg.lanes]],
             "last": int(k == count - 1)} for k in range(count)]


def _segment(cfg, rng, n):
    """Logits around a random centre with a random spread (saturating at the logit bounds) and
    random values."""
    scale = 1 << cfg.logit_frac_bits
    centre = rng.uniform(cfg.logit_min, cfg.logit_max)
    spread = rng.choice([0.3, 2.0, 8.0, 40.0]) * scale
    s = np.clip(np.rint(centre + rng.normal(0.0, spread, n)), cfg.logit_min, cfg.logit_max)
    v = rng.integers(cfg.input_min, cfg.input_max + 1, (n, cfg.head_dim))
    return s.astype(np.int64), v


def real_pair(cfg, rng):
    """Two whole partials of one head, as the reduction tree sees them."""
    kind = rng.choice(["adjacent", "independent", "empty_a", "empty_b", "both_empty"],
                      p=[0.45, 0.40, 0.06, 0.06, 0.03])
    n_max = min(cfg.max_context, 400)
    empty = golden.Partial.empty(cfg.head_dim)
    if kind == "adjacent":                     # one head's keys cut between two cores
        n = int(rng.integers(2, n_max + 1))
        s, v = _segment(cfg, rng, n)
        cut = int(rng.integers(1, n))
        return (golden.online_softmax(cfg, s[:cut], v[:cut]),
                golden.online_softmax(cfg, s[cut:], v[cut:]))
    if kind == "independent":                  # different logit ranges: any shift distance
        n_a = int(rng.integers(1, n_max))
        n_b = int(rng.integers(1, n_max - n_a + 1))
        return (golden.online_softmax(cfg, *_segment(cfg, rng, n_a)),
                golden.online_softmax(cfg, *_segment(cfg, rng, n_b)))
    one = golden.online_softmax(cfg, *_segment(cfg, rng, int(rng.integers(1, n_max + 1))))
    return {"empty_a": (empty, one), "empty_b": (one, empty), "both_empty": (empty, empty)}[kind]


def real_beats(cfg, seed, count):
    """At least ``count`` beat pairs from whole partials of real segments."""
    rng = np.random.default_rng(seed)
    pairs = []
    while len(pairs) < count:
        a, b = real_pair(cfg, rng)
        head = int(rng.integers(cfg.max_heads))
        pairs += list(zip(beats_of(cfg, a, head), beats_of(cfg, b, head)))
    return pairs


class _Extremes:
    """Beat pairs at the edges of the formats, each legal for golden.merge (the sums fit)."""

    def __init__(self, cfg, seed):
        self.cfg = cfg
        self.rng = random.Random(seed)
        self.l_max = (1 << cfg.acc_l_bits) - 1
        self.o_min, self.o_max = -(1 << (cfg.acc_o_bits - 1)), (1 << (cfg.acc_o_bits - 1)) - 1

    def rs(self, x, n):
        return int(golden.round_shift(x, n))

    def beat(self, valid, m, l, o):
        return {"head": self.rng.randrange(self.cfg.max_heads), "valid": valid, "m": m, "l": l,
                "o": list(o), "last": self.rng.getrandbits(1)}

    def lanes(self, values):
        return [values[i % len(values)] for i in range(self.cfg.lanes)]

    def pair(self, delta, lo_l, lo_o, swap, *, at_limit=False):
        """The side with the smaller max (shifted by ``delta``) holds ``lo_l``/``lo_o``; the other
        side is the complement that puts the sums exactly at the limits, or a random legal one."""
        cfg, rng = self.cfg, self.rng
        m_hi = rng.randint(cfg.max_min + delta, cfg.max_max)
        r_l = self.rs(lo_l, delta)
        r_o = [self.rs(x, delta) for x in lo_o]
        if at_limit:
            hi_l = self.l_max - r_l
            hi_o = [(self.o_max if x >= 0 else self.o_min) - r for x, r in zip(lo_o, r_o)]
        else:
            hi_l = rng.randint(0, self.l_max - r_l)
            hi_o = [rng.randint(self.o_min - min(r, 0), self.o_max - max(r, 0)) for r in r_o]
        hi, lo = self.beat(1, m_hi, hi_l, hi_o), self.beat(1, m_hi - delta, lo_l, lo_o)
        return (lo, hi) if swap else (hi, lo)

    def random_state(self):
        return (self.rng.randint(0, self.l_max),
                [self.rng.randint(self.o_min, self.o_max) for _ in range(self.cfg.lanes)])

    def ties(self, delta, bound, negative):
        """Values exactly halfway between two results of a shift by ``delta`` (``delta >= 1``)."""
        top = ((bound >> (delta - 1)) - 1) // 2
        if top < 0:
            return None
        return [(-1 if negative and i % 2 else 1) * (2 * self.rng.randint(0, top) + 1) << (delta - 1)
                for i in range(self.cfg.lanes)]

    def all(self):
        cfg = self.cfg
        l_bits, o_bits = cfg.acc_l_bits, cfg.acc_o_bits
        deltas = sorted({d for d in (0, 1, 2, 3, l_bits - 1, l_bits, l_bits + 1, o_bits - 1, o_bits,
                                     o_bits + 1, cfg.shift_diff_max - 1, cfg.shift_diff_max)
                         if 0 <= d <= cfg.shift_diff_max})
        pairs = []
        for delta in deltas:
            for swap in (False, True):
                # Sums exactly at the limits: l at acc_l_bits, o at both ends of acc_o_bits.
                for o in ([self.o_min], [self.o_max], [self.o_min, self.o_max, self.o_max - 1]):
                    pairs.append(self.pair(delta, self.l_max, self.lanes(o), swap, at_limit=True))
                # Rounding ties of both signs, and small odd values.
                if delta >= 1:
                    for negative in (False, True):
                        lo_o = self.ties(delta, self.o_max, negative)
                        lo_l = self.ties(delta, self.l_max, False)
                        if lo_o is not None and lo_l is not None:
                            pairs.append(self.pair(delta, lo_l[0], lo_o, swap))
                    pairs.append(self.pair(delta, 3, self.lanes([1, -1, 3, -3, 5, -5]), swap))
                pairs += [self.pair(delta, *self.random_state(), swap) for _ in range(3)]
        # Both maxima at the range ends, every combination.
        for m_a in (cfg.max_min, cfg.max_max):
            for m_b in (cfg.max_min, cfg.max_max):
                a = self.beat(1, m_a, self.l_max >> 1, self.lanes([self.o_min >> 1, self.o_max >> 1]))
                b = self.beat(1, m_b, self.l_max >> 1, self.lanes([self.o_max >> 1, self.o_min >> 1]))
                pairs.append((a, b))
        # Empty sides, with zero and with junk fields (the empty side must be ignored entirely).
        for junk in (False, True):
            def empty(junk=junk):
                if not junk:
                    return self.beat(0, 0, 0, [0] * cfg.lanes)
                return self.beat(0, self.rng.randint(cfg.max_min, cfg.max_max), *self.random_state())
            for _ in range(3):
                full = self.beat(1, self.rng.randint(cfg.max_min, cfg.max_max), *self.random_state())
                pairs += [(empty(), full), (full, empty()), (empty(), empty())]
        pairs.append((self.beat(1, cfg.max_max, self.l_max, self.lanes([self.o_min, self.o_max])),
                      self.beat(0, cfg.max_min, 0, [0] * cfg.lanes)))
        return pairs

    def random_beats(self, count):
        """Beat-level random states with maxima anywhere in range (any shift distance)."""
        cfg = self.cfg
        return [self.pair(self.rng.randint(0, cfg.shift_diff_max), *self.random_state(),
                          self.rng.getrandbits(1)) for _ in range(count)]


@functools.lru_cache(maxsize=16)
def vectors(name, *, real, extra_random, seed):
    """``(inputs, outputs)`` for the benches: real-segment beats, the extremes, random beats."""
    cfg = TEST_CONFIGS[name]
    extremes = _Extremes(cfg, seed)
    pairs = extremes.all() + real_beats(cfg, seed, real) + extremes.random_beats(extra_random)
    inputs = {"i_a": [pack(cfg, a) for a, _ in pairs], "i_b": [pack(cfg, b) for _, b in pairs]}
    outputs = {"o_partial": [pack(cfg, expected_beat(cfg, a, b)) for a, b in pairs]}
    return inputs, outputs


def latency_of(dut):
    return {"o_partial": ("i_a", dut.latency, None)}


# --- the vectors themselves -----------------------------------------------------------------------

@pytest.mark.parametrize("name", CONFIGS)
def test_pack_is_the_layout(name):
    """The fast packer gives the bits of ``layout.const`` (extremes and real beats)."""
    cfg = TEST_CONFIGS[name]
    layout = partial_layout(cfg)
    beats = [beat for pair in _Extremes(cfg, 9).all() + real_beats(cfg, 9, 50) for beat in pair]
    for beat in beats:
        assert pack(cfg, beat) == layout.const(beat).as_bits()

@pytest.mark.parametrize("name", CONFIGS)
def test_vectors_reach_the_edges(name):
    """The extremes really hit what they claim: every shift distance, ties, sums at the limits."""
    cfg = TEST_CONFIGS[name]
    pairs = _Extremes(cfg, 1).all()
    layout = partial_layout(cfg)
    deltas = {abs(a["m"] - b["m"]) for a, b in pairs if a["valid"] and b["valid"]}
    assert {0, 1, cfg.acc_l_bits, cfg.acc_l_bits + 1, cfg.acc_o_bits, cfg.shift_diff_max} <= deltas
    merged = [layout.const(expected_beat(cfg, a, b)) for a, b in pairs]
    assert max(beat.l for beat in merged) == (1 << cfg.acc_l_bits) - 1
    o_all = [x for beat in merged for x in beat.o]
    assert min(o_all) == -(1 << (cfg.acc_o_bits - 1)) and max(o_all) == (1 << (cfg.acc_o_bits - 1)) - 1
    ties = [(a, b) for a, b in pairs if a["valid"] and b["valid"] and a["m"] != b["m"]
            and any(x % 2 for x in (a if a["m"] < b["m"] else b)["o"])]
    assert ties
    kinds = {(a["valid"], b["valid"]) for a, b in pairs}
    assert kinds == {(0, 0), (0, 1), (1, 0), (1, 1)}
    # Real segments include adjacent cuts of one head with different maxima on both sides.
    real = real_beats(cfg, 5, 2000)
    assert any(a["valid"] and b["valid"] and a["m"] < b["m"] for a, b in real)
    assert any(a["valid"] and b["valid"] and a["m"] > b["m"] for a, b in real)


def test_alignment_identity():
    """What the coarse/fine split relies on: ``round_shift(x, n) == round_shift((2x) >> n, 1)``,
    exhaustively over 12-bit x and every shift up to past the width."""
    x = np.arange(-(1 << 11), 1 << 11, dtype=np.int64)[:, None]
    n = np.arange(0, 15, dtype=np.int64)[None, :]
    assert np.array_equal(golden.round_shift(x, n), golden.round_shift((2 * x) >> n, 1))
    # The winner passes unshifted (n == 0 gives x), and the final rounding is the sum's carry in.
    assert np.array_equal(golden.round_shift(x, 0)[:, 0], x[:, 0])
    assert np.array_equal(golden.round_shift(x, 1), (x >> 1) + (x & 1))


# --- amaranth.sim -----------------------------------------------------------------------------------

@pytest.mark.parametrize("name", CONFIGS)
@pytest.mark.parametrize(("idle", "backpressure"), PATTERNS)
def test_amaranth(name, idle, backpressure):
    cfg = TEST_CONFIGS[name]
    inputs, outputs = vectors(name, real=200, extra_random=100, seed=11)
    dut = Merge(cfg)
    seed = 300 + PATTERNS.index((idle, backpressure))
    simulate(dut, inputs, outputs, idle=idle, backpressure=backpressure, seed=seed,
             latency=latency_of(dut))


#: Which side passes unshifted (the larger max; a on equal maxima) or which sides are empty.
SWAP_CASES = ("a_wins", "b_wins", "equal", "a_empty", "b_empty", "both_empty")


@st.composite
def swap_pair(draw, cfg, case):
    """One beat pair of ``case``. The shifted side's distance reaches past ``zero_shift`` up to
    ``shift_diff_max``; an empty side carries junk fields; the sums fit (golden.merge's precondition)."""
    l_max = (1 << cfg.acc_l_bits) - 1
    o_min, o_max = -(1 << (cfg.acc_o_bits - 1)), (1 << (cfg.acc_o_bits - 1)) - 1
    zero = Merge(cfg).zero_shift

    def beat(valid, m, l, o):
        return {"head": draw(st.integers(0, cfg.max_heads - 1)), "valid": valid, "m": m, "l": l,
                "o": o, "last": draw(st.integers(0, 1))}

    def state(valid, m):
        return beat(valid, m, draw(st.integers(0, l_max)),
                    draw(st.lists(st.integers(o_min, o_max), min_size=cfg.lanes, max_size=cfg.lanes)))

    any_m = st.integers(cfg.max_min, cfg.max_max)
    if case.endswith("empty"):
        a = state(int(case == "b_empty"), draw(any_m))
        b = state(int(case == "a_empty"), draw(any_m))
        return a, b
    gap = 0 if case == "equal" else draw(st.one_of(st.integers(1, zero + 1),
                                                   st.integers(zero - 1, cfg.shift_diff_max)))
    m_hi = draw(st.integers(cfg.max_min + gap, cfg.max_max))
    lo = state(1, m_hi - gap)
    r_l = int(golden.round_shift(lo["l"], gap))
    r_o = [int(golden.round_shift(x, gap)) for x in lo["o"]]
    hi = beat(1, m_hi, draw(st.integers(0, l_max - r_l)),
              [draw(st.integers(o_min - min(r, 0), o_max - max(r, 0))) for r in r_o])
    return (lo, hi) if case == "b_wins" else (hi, lo)


@pytest.mark.parametrize("name", CONFIGS)
@settings(max_examples=25)
@given(data=st.data())
def test_swap_cases(name, data):
    """Every swap case in each run, in a drawn order with more drawn pairs, under random stalls."""
    cfg = TEST_CONFIGS[name]
    pairs = [data.draw(swap_pair(cfg, case), label=case) for case in SWAP_CASES]
    pairs += data.draw(st.lists(st.sampled_from(SWAP_CASES).flatmap(lambda c: swap_pair(cfg, c)),
                                max_size=12), label="more")
    pairs = data.draw(st.permutations(pairs), label="order")
    inputs = {"i_a": [pack(cfg, a) for a, _ in pairs], "i_b": [pack(cfg, b) for _, b in pairs]}
    outputs = {"o_partial": [pack(cfg, expected_beat(cfg, a, b)) for a, b in pairs]}
    simulate(Merge(cfg), inputs, outputs, idle="random", backpressure="random",
             seed=data.draw(st.integers(0, 1 << 16), label="stall seed"))


@pytest.mark.parametrize("name", CONFIGS)
def test_join(name):
    """The two inputs idle independently (different seeded patterns); every transfer on one side
    happens at the same clock edge as one on the other, and the pairing is the golden one."""
    cfg = TEST_CONFIGS[name]
    inputs, outputs = vectors(name, real=200, extra_random=100, seed=11)
    seed = 77
    patterns = [[next(it) for _ in range(200)] for it in
                (stall_iter("random", f"{seed}-in-{k}") for k in range(2))]
    assert patterns[0] != patterns[1]           # the inputs really idle differently
    sent, _ = simulate(Merge(cfg), inputs, outputs, idle="random", backpressure="random", seed=seed)
    assert sent["i_a"] == sent["i_b"]


@pytest.mark.parametrize("name", CONFIGS)
def test_full_throughput(name):
    """No stalls: one beat per cycle on both inputs and the output, latency cycles apart."""
    cfg = TEST_CONFIGS[name]
    inputs, outputs = vectors(name, real=200, extra_random=100, seed=11)
    dut = Merge(cfg)
    sent, received = simulate(dut, inputs, outputs, latency=latency_of(dut))
    count = len(outputs["o_partial"])
    assert sent["i_a"] == list(range(1, count + 1))
    assert [cycle for _, cycle in received["o_partial"]] == [c + dut.latency for c in sent["i_a"]]


def test_wrong_reference_fails():
    """The bench notices one wrong bit of the expected o (so the passing runs mean something)."""
    inputs, outputs = vectors("tiny", real=40, extra_random=0, seed=3)
    wrong = list(outputs["o_partial"])
    wrong[-1] ^= 1 << partial_layout(TEST_CONFIGS["tiny"])["o"].offset      # the LSB of o[0]
    with pytest.raises(AssertionError, match="corrupted"):
        simulate(Merge(TEST_CONFIGS["tiny"]), inputs, {"o_partial": wrong})


# --- contract ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", CONFIGS)
def test_ports_and_contract(name):
    cfg = TEST_CONFIGS[name]
    dut = Merge(cfg)
    layout = partial_layout(cfg)
    assert dut.cfg is cfg
    assert dut.signature.members["i_a"] == In(stream.Signature(layout))
    assert dut.signature.members["i_b"] == In(stream.Signature(layout))
    assert dut.signature.members["o_partial"] == Out(stream.Signature(layout))
    assert dut.latency == (1 if cfg.pipeline == "compact" else 4)
    # zero_shift really zeroes both accumulators, and one less does not (for some operand).
    zero = dut.zero_shift
    l_max, o_min = (1 << cfg.acc_l_bits) - 1, -(1 << (cfg.acc_o_bits - 1))
    assert golden.round_shift(l_max, zero) == 0 and golden.round_shift(o_min, zero) == 0
    assert golden.round_shift(l_max, zero - 1) != 0 or golden.round_shift(o_min, zero - 1) != 0


@pytest.mark.parametrize("cfg", [None, "tiny", PRESETS["tiny"].to_dict(), 3])
def test_cfg_not_a_config(cfg):
    with pytest.raises(TypeError, match=re.escape(f"cfg must be an AttentionConfig, not {cfg!r}")):
        Merge(cfg)


def test_one_positional_argument():
    with pytest.raises(TypeError, match="positional argument"):
        Merge(PRESETS["tiny"], 3)


@pytest.mark.parametrize("name", CONFIGS)
def test_lint(request, name):
    path = bench_dir(request) / "merge.v"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(verilog.convert(Merge(TEST_CONFIGS[name]), name="merge", emit_src=False))
    assert verilator_lint(path, waivers=AMARANTH_LINT_WAIVERS) == []


# --- cocotb on the generated Verilog ------------------------------------------------------------------

@pytest.mark.parametrize("simulator", ["icarus", "verilator"])
def test_cocotb_quick(request, simulator):
    """A few hundred beats at tiny, with and without stalls (the latency checked without)."""
    cfg = TEST_CONFIGS["tiny"]
    inputs, outputs = vectors("tiny", real=200, extra_random=100, seed=11)
    dut = Merge(cfg)
    run_cocotb_bench(dut, toplevel="merge", inputs=inputs, outputs=outputs, simulator=simulator,
                     build_dir=bench_dir(request), latency=latency_of(dut), seed=4242,
                     patterns=[("none", "none"), ("random", "random")])


@pytest.mark.slow
@pytest.mark.parametrize("name, simulator", full_pairs(CONFIGS))
def test_cocotb_full(request, simulator, name):
    """>= 10,000 real-segment beats plus extremes and random states under random stalls on both
    sides; the latency checked on a no-stall pass over the first few hundred."""
    cfg = TEST_CONFIGS[name]
    inputs, outputs = vectors(name, real=10_000, extra_random=1000, seed=2024)
    assert len(outputs["o_partial"]) >= 11_000
    dut = Merge(cfg)
    where = bench_dir(request)
    head = 400
    run_cocotb_bench(dut, toplevel="merge", simulator=simulator, build_dir=where,
                     inputs={k: v[:head] for k, v in inputs.items()},
                     outputs={k: v[:head] for k, v in outputs.items()},
                     latency=latency_of(dut), seed=7000, patterns=[("none", "none")])
    run_cocotb_bench(dut, toplevel="merge", inputs=inputs, outputs=outputs, simulator=simulator,
                     build_dir=where, seed=7001, patterns=[("random", "random")])
