# amaranth: UnusedElaboratable=no
"""ScoreScale: bit-exact against golden.score under amaranth.sim and cocotb (Icarus and Verilator),
at every test configuration, under idle cycles and backpressure; rounding ties, saturation edges,
shift clamps, latency, throughput, ports, lint and constructor errors."""

import re

import numpy as np
import pytest
from amaranth.back import verilog
from amaranth.hdl import Shape, signed, unsigned
from amaranth.lib import data, stream
from amaranth.lib.wiring import In, Out
from amaranth.sim import Simulator
from tiers import full_pairs

from leanattn.fpga.unit_resources import synthesize
from leanattn.hdl.config import PRESETS
from leanattn.hdl.score import ScoreScale, qk_scale_layout, score_layout
from leanattn.sim import golden
from leanattn.sim.accept_probe import AcceptProbe
from leanattn.sim.cocotb_util import AMARANTH_LINT_WAIVERS, verilator_lint
from leanattn.sim.configs import TEST_CONFIGS
from leanattn.sim.stream_bench import PATTERNS, bench_dir, run_cocotb_bench, simulate

TAG_BITS = 5
CONFIGS  = list(TEST_CONFIGS)

#: Lint waivers for the arithmetic Amaranth generates (here: round_shift and saturate from
#: hdl/fixed.py, and the sum of partial products), besides AMARANTH_LINT_WAIVERS.
ARITH_LINT_WAIVERS = {
    ("WIDTHEXPAND", "Operator * expects * bits on the *, but *'s SIGNED generates * bits."):
        "Amaranth writes an operation (add, compare) on signed operands of different widths as "
        "`$signed(a) op $signed(b)`, which Verilog sign-extends to the operation's width; Yosys "
        "folds an explicit extension in the source back into this form.",
    ("WIDTHTRUNC", "Logical operator LOGNOT expects 1 bit on the LHS, but LHS's VARREF '*' generates "
                   "* bits."):
        "Yosys writes the test `amount == 0` of round_shift as `! amount`, the logical negation of "
        "a vector, which is 1 exactly when every bit is 0.",
    ("UNUSEDSIGNAL", "Bits of signal are not used: '$*'[*]"):
        "Amaranth's anonymous intermediates ('$N') have the generic width of their operation; "
        "the register each feeds is only as wide as the exact range of the value (the saturated "
        "logit, the rounded product), and round_shift drops bit 0 of its final `+ 1` by design.",
}
#: With tag_shape=0 the tag fields have no bits: Amaranth still declares them, as `[-1:0]`.
NO_TAG_LINT_WAIVERS = {
    ("ASCRANGE", "Ascending bit range vector: left < right of bit range: [-1:0]"):
        "a zero-width signal (the absent tag) is declared `[-1:0]` by Amaranth; it has no bits.",
    ("UNUSEDSIGNAL", "Signal is not driven, nor used: '*tag'"):
        "the zero-width tag signals have no bits to drive or use.",
}


# --- vectors -------------------------------------------------------------------------------------

def pack_rows(layout, **columns):
    """Raw payload bits of many items at once, each field at the layout's own offset; the same
    bits as ``layout.const(...).as_bits()`` (checked by :func:`test_pack_rows_is_the_layout`), at a
    fraction of its cost."""
    n = len(next(iter(columns.values())))
    bits = np.zeros(n, dtype=object)
    for name, values in columns.items():
        field = layout[name]
        shape = Shape.cast(field.shape)
        values = np.asarray(values, dtype=np.int64)
        lo, hi = (-(1 << (shape.width - 1)), (1 << (shape.width - 1)) - 1) if shape.signed \
            else (0, (1 << shape.width) - 1)
        if values.size and (values.min() < lo or values.max() > hi):
            raise ValueError(f"{name} out of its field's range {lo}..{hi}")
        bits += (values & ((1 << shape.width) - 1)).astype(object) << field.offset
    return [int(b) for b in bits]


def random_vectors(cfg, count, seed):
    """``(qk, mant, shift)`` arrays: a third uniform over the full field ranges (``|qk| <= qk_max``,
    every mantissa, shifts ``0 .. score_shift_max``); the rest with magnitudes spread over every
    bit length and a shift near the one that brings ``qk * mant`` to the logit range (uniform
    fields mostly saturate or round to 0)."""
    rng = np.random.default_rng(seed)
    qk = rng.integers(-cfg.qk_max, cfg.qk_max + 1, count)
    mant = rng.integers(0, 1 << cfg.scale_bits, count)
    shift = rng.integers(0, cfg.score_shift_max + 1, count)

    spread = rng.random(count) >= 1 / 3
    qk_len = rng.integers(0, cfg.qk_bits, count)              # |qk| < 2**qk_len
    mant_len = rng.integers(0, cfg.scale_bits + 1, count)
    mag = rng.integers(0, 1 << 62, count) >> (62 - qk_len)
    qk_spread = np.clip(np.where(rng.random(count) < 0.5, -mag, mag), -cfg.qk_max, cfg.qk_max)
    mant_spread = rng.integers(0, 1 << 62, count) >> (62 - mant_len)
    near = qk_len + mant_len - (cfg.logit_bits - 1) + rng.integers(-3, 4, count)
    qk[spread] = qk_spread[spread]
    mant[spread] = mant_spread[spread]
    shift[spread] = np.clip(near, 0, cfg.score_shift_max)[spread]
    return qk, mant, shift


def corner_vectors(cfg):
    """Every combination of extreme fields: qk = +-qk_max and near 0, mant = 0, 1, 2**(B-1) and
    2**B - 1, shift = 0, 1 and the largest two."""
    qks = [-cfg.qk_max, -cfg.qk_max + 1, -1, 0, 1, cfg.qk_max - 1, cfg.qk_max]
    top = (1 << cfg.scale_bits) - 1
    mants = [0, 1, 1 << (cfg.scale_bits - 1), top]
    shifts = [0, 1, cfg.score_shift_max - 1, cfg.score_shift_max]
    rows = [(q, m, s) for q in qks for m in mants for s in shifts]
    return tuple(np.array(col) for col in zip(*rows))


def tie_vectors(cfg, seed, per_shift=4):
    """Rounding ties: ``qk * mant = t * 2**(shift-1)`` with ``t`` odd, positive and negative, at
    every shift where the product can be one: ``mant = u * 2**j`` and ``qk = +-t * 2**r`` with
    ``u``, ``t`` odd and ``j + r = shift - 1``."""
    rng = np.random.default_rng(seed)
    rows = []
    for s in range(1, cfg.score_shift_max + 1):
        for n in range(per_shift):
            j = min(s - 1, cfg.scale_bits - 1) if n % 2 else int(rng.integers(0, min(s, cfg.scale_bits)))
            r = s - 1 - j
            if cfg.qk_max >> r == 0:
                continue
            u = 1 if n == 0 else int(rng.integers(0, 1 << (cfg.scale_bits - j - 1))) * 2 + 1
            t = 1 if n == 0 else int(rng.integers(0, (cfg.qk_max >> r) // 2 + 1)) * 2 + 1
            if (t << r) > cfg.qk_max or u << j >= 1 << cfg.scale_bits:
                continue
            for sign in (1, -1):
                rows.append((sign * (t << r), u << j, s))
    return tuple(np.array(col) for col in zip(*rows))


def saturation_vectors(cfg, seed):
    """Products around the rounding boundaries of ``logit_max`` and ``logit_min``: for several
    (mant, shift), the qk on either side of the one whose logit first leaves the range."""
    rng = np.random.default_rng(seed)
    top = (1 << cfg.scale_bits) - 1
    rows = []
    for mant in (1, top, 1 << (cfg.scale_bits - 1), int(rng.integers(1, top)) | 1):
        for shift in range(cfg.score_shift_max + 1):
            half = (1 << shift) >> 1                      # 2**(shift-1); 0 for shift 0
            # round_shift(p, shift) > logit_max  iff  p >= (logit_max + 1) * 2**shift - half;
            # round_shift(p, shift) < logit_min  iff  p <  logit_min * 2**shift - half.
            for bound in (((cfg.logit_max + 1) << shift) - half, (cfg.logit_min << shift) - half):
                base = -(-bound // mant)                  # smallest qk with qk * mant >= bound
                for qk in range(base - 2, base + 2):
                    if abs(qk) <= cfg.qk_max:
                        rows.append((qk, mant, shift))
    return tuple(np.array(col) for col in zip(*rows))


def extreme_vectors(cfg, seed=0):
    parts = [corner_vectors(cfg), tie_vectors(cfg, seed), saturation_vectors(cfg, seed)]
    return tuple(np.concatenate(col) for col in zip(*parts))


def expected_scores(cfg, qk, mant, shift):
    return np.array([golden.score(cfg, int(q), int(m), int(s)) for q, m, s in zip(qk, mant, shift)])


def streams(cfg, qk, mant, shift, *, tag_shape=TAG_BITS, seed=0, expected=None):
    """Inputs, and outputs from golden.score (or ``expected``), as payload bits; random tags."""
    tag_width = Shape.cast(tag_shape).width
    tags = np.random.default_rng(seed + 1).integers(0, 1 << tag_width, len(qk)) if tag_width \
        else np.zeros(len(qk), int)
    if expected is None:
        expected = expected_scores(cfg, qk, mant, shift)
    ins = pack_rows(qk_scale_layout(cfg, tag_shape), qk=qk, mant=mant, shift=shift, tag=tags)
    outs = pack_rows(score_layout(cfg, tag_shape), s=expected, tag=tags)
    return {"i_qk": ins}, {"o_score": outs}


def latency_of(dut):
    return {"o_score": ("i_qk", dut.latency, None)}


def join(*vectors):
    return tuple(np.concatenate(col) for col in zip(*vectors))


# --- cocotb on the generated Verilog -------------------------------------------------------------
# First in the file, so that under pytest-xdist the long runs start first.

def cocotb_runs(cfg, simulator, build, *, stalled, back_to_back, patterns, seed):
    """The unit inside an :class:`AcceptProbe` (one Verilog, one simulator build for both runs):
    ``stalled`` (inputs, outputs) under ``patterns``, the latency checked where nothing stalls;
    then ``back_to_back`` without stalls, where the latency is checked and the probe's gaps prove
    the inputs taken exactly ``interval`` cycles apart."""
    probe = AcceptProbe(ScoreScale(cfg, tag_shape=TAG_BITS), port="i_qk")
    latency = latency_of(probe.unit)
    run_cocotb_bench(probe, toplevel="score", inputs=stalled[0], outputs=stalled[1], simulator=simulator,
                     build_dir=build, latency=latency, patterns=patterns, seed=seed)
    inputs, outputs = back_to_back
    gaps = [probe.gap_max] + [probe.unit.interval] * (len(inputs["i_qk"]) - 1)
    run_cocotb_bench(probe, toplevel="score", inputs=inputs, outputs={**outputs, "o_gaps": gaps},
                     simulator=simulator, build_dir=build, patterns=[("none", "none")], seed=seed + 1,
                     latency={**latency, "o_gaps": ("i_qk", 1, None)})


@pytest.mark.parametrize("simulator", ["icarus", "verilator"])
def test_cocotb_quick(request, simulator):
    """The fast tier's run: the extremes and 300 random vectors of the odd config, under every stall
    pattern, with the latency checked where nothing stalls; the rate on 200 more."""
    cfg = TEST_CONFIGS["odd"]
    vectors = join(extreme_vectors(cfg, seed=1), random_vectors(cfg, 300, seed=1))
    cocotb_runs(cfg, simulator, bench_dir(request), stalled=streams(cfg, *vectors, seed=1),
                back_to_back=streams(cfg, *random_vectors(cfg, 200, seed=2), seed=2),
                patterns=PATTERNS, seed=6100)


@pytest.mark.slow
@pytest.mark.parametrize("name, simulator", full_pairs(CONFIGS))
def test_cocotb_full(request, name, simulator):
    """The extremes and 10,000 random vectors under random idle cycles and backpressure; then 300
    without stalls for the latency and the rate."""
    cfg = TEST_CONFIGS[name]
    seed = 7000 + 10 * CONFIGS.index(name) + (simulator == "verilator")
    extremes, randoms = extreme_vectors(cfg, seed), random_vectors(cfg, 10_000, seed)
    cocotb_runs(cfg, simulator, bench_dir(request), stalled=streams(cfg, *join(extremes, randoms), seed=seed),
                back_to_back=streams(cfg, *(col[:300] for col in randoms), seed=seed + 1),
                patterns=[("random", "random")], seed=seed)


# --- the vectors themselves ----------------------------------------------------------------------

@pytest.mark.parametrize("name", CONFIGS)
def test_pack_rows_is_the_layout(name):
    cfg = TEST_CONFIGS[name]
    layout = qk_scale_layout(cfg, TAG_BITS)
    qk, mant, shift = corner_vectors(cfg)
    tag = np.arange(len(qk)) % (1 << TAG_BITS)
    fast = pack_rows(layout, qk=qk, mant=mant, shift=shift, tag=tag)
    slow = [layout.const({"qk": int(a), "mant": int(b), "shift": int(c), "tag": int(d)}).as_bits()
            for a, b, c, d in zip(qk, mant, shift, tag)]
    assert fast == slow
    with pytest.raises(ValueError, match=r"mant out of its field's range"):
        pack_rows(layout, mant=[1 << cfg.scale_bits])


@pytest.mark.parametrize("name", CONFIGS)
def test_extreme_vectors_cover_the_edges(name):
    """The generators hit what they claim (pre-saturation values from golden.round_shift): ties of
    both signs at many shifts, and for saturation, logits exactly at and one LSB beyond both
    bounds."""
    cfg = TEST_CONFIGS[name]
    qk, mant, shift = tie_vectors(cfg, seed=0)
    product = qk * mant
    assert np.all(product % (1 << shift) == 1 << (shift - 1))          # exactly half an LSB over
    assert {1, -1} <= set(np.sign(product)) and len(set(shift)) > cfg.score_shift_max // 2
    qk, mant, shift = saturation_vectors(cfg, seed=0)
    rounded = {int(golden.round_shift(q * m, s)) for q, m, s in zip(qk, mant, shift)}
    assert {cfg.logit_max - 1, cfg.logit_max, cfg.logit_max + 1,
            cfg.logit_min + 1, cfg.logit_min, cfg.logit_min - 1} <= rounded
    random = expected_scores(cfg, *random_vectors(cfg, 2000, seed=0))
    inside = (random > cfg.logit_min) & (random < cfg.logit_max)
    assert 0.3 < inside.mean() < 0.9                # most random logits neither saturate nor vanish


# --- amaranth.sim ----------------------------------------------------------------------------------

PATTERNS_SIM = [("none", "none"), ("random", "random"), ("random", "none"), ("none", "random"),
                ("fixed", "fixed")]
#: The fast tier crosses every configuration with no stalls and with random stalls on both sides;
#: the one-sided and fixed patterns run in the full suite.
PATTERNS_FAST = PATTERNS_SIM[:2]


@pytest.mark.parametrize("name", CONFIGS)
@pytest.mark.parametrize(("idle", "backpressure"), [
    pattern if pattern in PATTERNS_FAST else pytest.param(*pattern, marks=pytest.mark.slow)
    for pattern in PATTERNS_SIM])
def test_random(name, idle, backpressure):
    cfg = TEST_CONFIGS[name]
    seed = 100 + CONFIGS.index(name) * 10 + PATTERNS_SIM.index((idle, backpressure))
    inputs, outputs = streams(cfg, *random_vectors(cfg, 1500, seed), seed=seed)
    dut = ScoreScale(cfg, tag_shape=TAG_BITS)
    simulate(dut, inputs, outputs, idle=idle, backpressure=backpressure, seed=seed,
             latency=latency_of(dut))


@pytest.mark.parametrize("name", CONFIGS)
@pytest.mark.parametrize(("idle", "backpressure"), [("none", "none"), ("random", "random")])
def test_extremes(name, idle, backpressure):
    """Corners, rounding ties and saturation edges."""
    cfg = TEST_CONFIGS[name]
    inputs, outputs = streams(cfg, *extreme_vectors(cfg, seed=5), seed=5)
    dut = ScoreScale(cfg, tag_shape=TAG_BITS)
    simulate(dut, inputs, outputs, idle=idle, backpressure=backpressure, seed=5,
             latency=latency_of(dut))


@pytest.mark.parametrize("name", CONFIGS)
def test_shift_beyond_max(name):
    """Shifts the field holds beyond score_shift_max give what score_shift_max gives: 0 (a shift
    from the operand's width on rounds every product to 0, docs/numerics.md)."""
    cfg = TEST_CONFIGS[name]
    qk, mant, _ = corner_vectors(cfg)
    shift = np.resize(np.arange(cfg.score_shift_max, 1 << cfg.score_shift_bits), len(qk))
    expected = expected_scores(cfg, qk, mant, np.full(len(qk), cfg.score_shift_max))
    assert not expected.any()
    inputs, outputs = streams(cfg, qk, mant, shift, expected=expected, seed=9)
    simulate(ScoreScale(cfg, tag_shape=TAG_BITS), inputs, outputs, idle="random",
             backpressure="random", seed=9)


#: Operand widths and rates beyond the presets: q.k in one slice; two slices on two multipliers
#: (a new q.k every cycle); three slices on one multiplier and on two (the first cycle takes one);
#: a mantissa wider than the multipliers (slices of both operands), on one multiplier and on two.
NARROW     = PRESETS["tiny"].replace(head_dim=2, lanes=1, input_bits=4)
PARALLEL   = PRESETS["default"].replace(lanes=64)
BROAD      = PRESETS["default"].replace(head_dim=4096, lanes=64, input_bits=16)
BROAD_PAIR = BROAD.replace(lanes=2048)
WIDE_MANT  = PRESETS["tiny"].replace(scale_bits=24)
WIDE_PAIR  = WIDE_MANT.replace(lanes=16)
SLICE_CASES = {
    # name: (cfg, slices, multipliers, interval)
    "narrow":     (NARROW, 1, 1, 1),
    "parallel":   (PARALLEL, 2, 2, 1),
    "default":    (TEST_CONFIGS["default"], 2, 1, 2),
    "broad":      (BROAD, 3, 1, 3),
    "broad_pair": (BROAD_PAIR, 3, 2, 2),
    "wide_mant":  (WIDE_MANT, 4, 1, 4),
    "wide_pair":  (WIDE_PAIR, 4, 2, 2),
}


@pytest.mark.parametrize("case", [case if case in ("narrow", "parallel", "default")
                                  else pytest.param(case, marks=pytest.mark.slow)
                                  for case in SLICE_CASES])
def test_multiplier_slices(case):
    """q.k (and mant, when wider than dsp_bits) cut into slices of at most dsp_bits bits, on
    ceil(slices / beats_per_key) multipliers over `interval` cycles; exact in every case, under
    stalls and back to back (one input per `interval` cycles, each result `latency` later)."""
    cfg, slices, multipliers, interval = SLICE_CASES[case]
    dut = ScoreScale(cfg)
    assert (len(dut.products.slices), dut.multipliers, dut.interval) == (slices, multipliers, interval)
    assert dut.multipliers == -(-slices // cfg.beats_per_key)
    assert dut.interval == -(-slices // dut.multipliers) <= cfg.beats_per_key
    stages = 4 if cfg.pipeline == "compact" else 5
    assert dut.latency == (stages if interval == 1 else stages + interval)
    for s in dut.products.slices:                   # every partial product fits one multiplier
        assert s.x_width <= cfg.dsp_bits and s.y_width <= cfg.dsp_bits
    for column in zip(*dut.products.table):         # a multiplier that also takes the signed top
        taken = [s for s in column if s is not None]  # slice takes unsigned ones one bit narrower
        if any(s.x_signed for s in taken):
            assert all(s.x_width <= cfg.dsp_bits - 1 for s in taken if not s.x_signed)
    text = verilog.convert(dut, name="score", emit_src=False)
    parts = re.findall(r"\breg (?:signed )?(?:\[\d+:0\] )?(mul_part_\d+)\b", text)
    assert sorted(parts) == [f"mul_part_{j}" for j in range(multipliers)]
    assert bool(re.search(r"\breg (\[\d+:0\] )?load\b", text)) == (interval > 1)
    vectors = join(extreme_vectors(cfg, seed=3), random_vectors(cfg, 1000, seed=3))
    inputs, outputs = streams(cfg, *vectors, tag_shape=0, seed=3)
    simulate(dut, inputs, outputs, idle="random", backpressure="random", seed=3)
    check_throughput(ScoreScale(cfg), cfg, 200, seed=4)


def check_throughput(dut, cfg, n, *, seed, tag_shape=0):
    """No stalls, inputs back to back: one accepted every ``interval`` cycles, the first in the
    first cycle, and each result ``latency`` cycles after its input."""
    inputs, outputs = streams(cfg, *random_vectors(cfg, n, seed), tag_shape=tag_shape, seed=seed)
    sent, received = simulate(dut, inputs, outputs, latency=latency_of(dut))
    assert sent["i_qk"] == [1 + dut.interval * i for i in range(n)]
    assert [cycle for _, cycle in received["o_score"]] == [c + dut.latency for c in sent["i_qk"]]


def test_no_tag():
    cfg = TEST_CONFIGS["odd"]
    inputs, outputs = streams(cfg, *random_vectors(cfg, 300, seed=21), tag_shape=0, seed=21)
    dut = ScoreScale(cfg)
    assert dut.tag_shape == 0
    simulate(dut, inputs, outputs, latency=latency_of(dut))


def test_layout_tag():
    """A tag may be any shape, a layout too."""
    cfg = TEST_CONFIGS["default"]
    tag = data.StructLayout({"head": 3, "last": 1})
    inputs, outputs = streams(cfg, *random_vectors(cfg, 200, seed=22), tag_shape=tag, seed=22)
    simulate(ScoreScale(cfg, tag_shape=tag), inputs, outputs, idle="random", backpressure="random",
             seed=22)


@pytest.mark.parametrize("name", CONFIGS)
def test_throughput(name):
    """No stalls: one input every ``interval`` cycles, one output ``latency`` after each."""
    cfg = TEST_CONFIGS[name]
    check_throughput(ScoreScale(cfg, tag_shape=TAG_BITS), cfg, 200, seed=31, tag_shape=TAG_BITS)


@pytest.mark.parametrize("name", CONFIGS)
def test_ready_low_while_busy(name):
    """i_qk.ready, cycle by cycle, with an input always offered: high in the cycle an item is
    accepted, low for the `interval - 1` cycles it spends in the serial multiplier (and while
    o_score holds a result not taken)."""
    cfg = TEST_CONFIGS[name]
    dut = ScoreScale(cfg)
    qk, mant, shift = random_vectors(cfg, 1, seed=41)
    item = qk_scale_layout(cfg).const({"qk": int(qk[0]), "mant": int(mant[0]), "shift": int(shift[0])})
    seen = []

    async def bench(ctx):
        ctx.set(dut.i_qk.valid, 1)
        ctx.set(dut.i_qk.payload, item)
        ctx.set(dut.o_score.ready, 1)
        for cycle in range(4 * dut.interval + 12):
            if cycle == 2 * dut.interval + 8:
                ctx.set(dut.o_score.ready, 0)       # a result is held from here on
            _, _, ready, out_valid = await ctx.tick().sample(dut.i_qk.ready, dut.o_score.valid)
            seen.append((ready, out_valid))

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    stop = 2 * dut.interval + 8
    assert [ready for ready, _ in seen[:stop]] == [int(c % dut.interval == 0) for c in range(stop)]
    frozen = [ready for ready, valid in seen[stop:] if valid]
    assert frozen and not any(frozen)


def test_latency_property():
    """mul, sum, shf, rnd and the output register (compact, tiny and odd: no rnd); with a serial
    multiplier also load and the further cycles of mul. Every test configuration gets one 18- or
    16-bit multiplier taking q.k's two slices over two cycles; a wrong latency fails the bench."""
    assert {name: (len(dut.products.slices), dut.multipliers, dut.interval, dut.latency)
            for name, dut in ((name, ScoreScale(cfg)) for name, cfg in TEST_CONFIGS.items())} == \
        {name: (2, 1, 2, 6 if TEST_CONFIGS[name].pipeline == "compact" else 7) for name in CONFIGS}
    assert ScoreScale(PARALLEL).latency == 5
    assert ScoreScale(PARALLEL.replace(pipeline="compact")).latency == 4
    cfg = TEST_CONFIGS["default"]
    dut = ScoreScale(cfg, tag_shape=TAG_BITS)
    inputs, outputs = streams(cfg, *random_vectors(cfg, 4, seed=3), seed=3)
    wrong = dut.latency + 1
    with pytest.raises(AssertionError, match=f"the documented latency is {wrong}"):
        simulate(dut, inputs, outputs, latency={"o_score": ("i_qk", wrong, None)})


def test_ports_and_contract():
    cfg = TEST_CONFIGS["default"]
    dut = ScoreScale(cfg, tag_shape=TAG_BITS)
    assert dut.cfg is cfg
    assert dut.signature.members["i_qk"] == In(stream.Signature(qk_scale_layout(cfg, TAG_BITS)))
    assert dut.signature.members["o_score"] == Out(stream.Signature(score_layout(cfg, TAG_BITS)))
    layout = qk_scale_layout(cfg)
    assert (layout["qk"].shape, layout["mant"].shape, layout["shift"].shape) == \
        (signed(cfg.qk_bits), unsigned(cfg.scale_bits), unsigned(cfg.score_shift_bits))
    assert score_layout(cfg)["s"].shape == signed(cfg.logit_bits)
    text = verilog.convert(dut, name="score", emit_src=False)
    for port in ("i_qk__payload", "i_qk__valid", "i_qk__ready",
                 "o_score__payload", "o_score__valid", "o_score__ready", "clk", "rst"):
        assert re.search(rf"\b(input|output) (\[\d+:0\] )?{port};", text), port
    for name in ("load", "load_phase", "mul_part_0", "mul_phase", "mul_coarse", "mul_fine", "sum_prod",
                 "shf_x", "rnd_s"):
        assert re.search(rf"\breg (signed )?(\[\d+:0\] )?{name}\b", text), name
    assert "mul_part_1" not in text                 # one multiplier, two slices
    assert dut.products.table == ((dut.products.slices[0],), (dut.products.slices[1],))


# --- constructor errors ----------------------------------------------------------------------------

@pytest.mark.parametrize("cfg", [None, "default", {"head_dim": 64}])
def test_cfg_not_a_config(cfg):
    with pytest.raises(TypeError, match=re.escape(f"cfg must be an AttentionConfig, not {cfg!r}")):
        ScoreScale(cfg)


@pytest.mark.parametrize("tag_shape", ["foo", None, 1.5, -1])
def test_tag_shape_not_a_shape(tag_shape):
    with pytest.raises(TypeError, match=re.escape(f"tag_shape must be a shape-castable object, "
                                                  f"not {tag_shape!r}")):
        ScoreScale(TEST_CONFIGS["default"], tag_shape=tag_shape)


def test_keyword_only():
    with pytest.raises(TypeError, match="positional argument"):
        ScoreScale(TEST_CONFIGS["default"], 4)


# --- lint ------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("name", "tag_shape"),
                         [(name, tag) for name in CONFIGS for tag in (0, TAG_BITS)]
                         + [(name, 0) for name in ("parallel", "broad_pair", "wide_mant")])
def test_lint(request, name, tag_shape):
    """Every test configuration, and the other kinds of multiplier plans: one multiplier per slice,
    an empty slot, mant sliced too."""
    cfg = TEST_CONFIGS[name] if name in TEST_CONFIGS else SLICE_CASES[name][0]
    path = bench_dir(request) / "score.v"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(verilog.convert(ScoreScale(cfg, tag_shape=tag_shape), name="score", emit_src=False))
    waivers = {**AMARANTH_LINT_WAIVERS, **ARITH_LINT_WAIVERS,
               **(NO_TAG_LINT_WAIVERS if not tag_shape else {})}
    assert verilator_lint(path, waivers=waivers) == []


# --- resources -------------------------------------------------------------------------------------

@pytest.mark.slow
def test_tiny_uses_one_mac16(request):
    """At tiny (iCE40UP5K) the unit takes one SB_MAC16: q.k's two slices share it."""
    cfg = TEST_CONFIGS["tiny"]
    result = synthesize(ScoreScale(cfg), top="scorescale", out_dir=bench_dir(request))
    assert result["resources"]["SB_MAC16"] == ScoreScale(cfg).multipliers == 1
