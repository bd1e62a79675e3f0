# amaranth: UnusedElaboratable=no
"""Normalizer: bit-exact against ``golden.normalize`` beat by beat, at every test configuration.

Vectors: beats of final states of real segments (``golden.online_softmax`` on random logits and
values; some cut into two to four pieces merged with ``golden.merge``, as the reduction tree does),
with realistic output scales (``sim.quant.encode_scale`` of ``output_max / max|v|``) and random ones;
plus extremes: the smallest ``l`` (``2**P``) and the top of ``acc_l_bits``, every exponent of ``l``,
``o`` at both ends of ``acc_o_bits`` and of what the aligned ``o`` can hold, ``out_shift``
0 and ``out_shift_max``, ``out_mant`` 0 and its maximum, saturation at both ends, rounding ties of
both signs at the alignment and at the output. The reference of each beat is
``golden.normalize(cfg, o_lanes[None, :], [l], [out_mant], [out_shift])`` (computed for all beats at
once, one beat per row).

Fast tier: amaranth.sim at every configuration under each stall pattern, full throughput, lint,
constructor errors, and one short cocotb run per simulator. Slow: >= 10,000 real beats plus the
extremes per configuration through cocotb on Icarus and on Verilator.
"""

import functools
import random
import re

import numpy as np
import pytest
from amaranth.back import verilog
from amaranth.hdl import Fragment, Shape
from amaranth.lib import stream
from amaranth.lib.data import ArrayLayout, StructLayout
from amaranth.lib.wiring import In, Out

from leanattn.hdl.config import PRESETS
from leanattn.hdl.layouts import final_layout, output_layout
from leanattn.hdl.normalize import Normalizer
from leanattn.hdl.recip import Reciprocal, recip_stages
from leanattn.sim import golden
from leanattn.sim.cocotb_util import AMARANTH_LINT_WAIVERS, verilator_lint
from leanattn.sim.configs import TEST_CONFIGS
from leanattn.sim.quant import encode_scale
from leanattn.sim.stream_bench import bench_dir, run_cocotb_bench, simulate

CONFIGS = list(TEST_CONFIGS)
PATTERNS = [("none", "none"), ("random", "random"), ("fixed", "none"), ("none", "fixed")]

#: Lint waivers of the normalizer beyond AMARANTH_LINT_WAIVERS.
NORMALIZE_LINT_WAIVERS = {
    **AMARANTH_LINT_WAIVERS,
    ("UNUSEDSIGNAL", "Signal is not used: 'i_l__*'"):
        "the recip submodule's input valid/ready as seen from the normalizer: the same nets as "
        "i_final's valid/ready, which the backend connects to the instance directly, leaving these "
        "named copies without a reader.",
    ("DECLFILENAME", "*does not match MODULE name: 'normalize.*'"):
        "Amaranth writes each submodule into the top's file as a module named `top.sub` "
        "(`normalize.recip`), which no file name can match; the top itself is checked.",
}


# --- vectors --------------------------------------------------------------------------------------

def pack(shape, value):
    """Payload bits of a (nested) dict / list / int under a layout, at the layout's offsets."""
    if isinstance(shape, StructLayout):
        return sum(pack(field.shape, value[name]) << field.offset for name, field in shape)
    if isinstance(shape, ArrayLayout):
        return sum(pack(shape.elem_shape, v) << shape[i].offset for i, v in enumerate(value))
    return int(value) & ((1 << Shape.cast(shape).width) - 1)


def _segment(cfg, rng, n):
    """Logits around a random centre with a random spread (saturating at the logit bounds) and
    random values (sometimes of a smaller range, as real values are)."""
    scale = 1 << cfg.logit_frac_bits
    centre = rng.uniform(cfg.logit_min, cfg.logit_max)
    spread = rng.choice([0.3, 2.0, 8.0, 40.0]) * scale
    s = np.clip(np.rint(centre + rng.normal(0.0, spread, n)), cfg.logit_min, cfg.logit_max)
    top = int(rng.choice([cfg.input_max, max(1, cfg.input_max >> 3)]))
    v = rng.integers(max(cfg.input_min, -top - 1), top + 1, (n, cfg.head_dim))
    return s.astype(np.int64), v


def real_state(cfg, rng):
    """A final state ``(partial, max|v|)``: one segment, or a head cut into pieces and merged."""
    n = int(rng.integers(1, min(cfg.max_context, 600) + 1))
    s, v = _segment(cfg, rng, n)
    pieces = int(rng.integers(1, min(n, 4) + 1)) if rng.random() < 0.4 else 1
    cuts = np.sort(rng.choice(np.arange(1, n), pieces - 1, replace=False)) if pieces > 1 else []
    bounds = [0, *map(int, cuts), n]
    state = golden.Partial.empty(cfg.head_dim)
    for lo, hi in zip(bounds, bounds[1:]):
        state = golden.merge(cfg, state, golden.online_softmax(cfg, s[lo:hi], v[lo:hi]))
    return state, int(np.abs(v).max())


def output_scale(cfg, rng, v_max):
    """``(out_mant, out_shift)``: mostly the host's default (the whole output range for the
    largest |v|), sometimes a random mantissa and shift."""
    if rng.random() < 0.75:
        value = cfg.output_max / max(v_max, 1) * 2.0 ** rng.uniform(-3, 3)
        return encode_scale(value, mant_bits=cfg.scale_bits, shift_max=cfg.out_shift_max)
    return int(rng.integers(0, 1 << cfg.scale_bits)), int(rng.integers(0, cfg.out_shift_max + 1))


def beat(cfg, head, l, o, out_mant, out_shift, *, m=0, last=0):
    return {"partial": {"head": head, "valid": 1, "m": m, "l": int(l), "o": [int(x) for x in o],
                        "last": last},
            "out_mant": int(out_mant), "out_shift": int(out_shift)}


def beats_of(cfg, state, head, out_mant, out_shift):
    """The beats of one final state: ``lanes`` accumulators each, last at the end."""
    count = cfg.beats_per_key
    return [beat(cfg, head, state.l, state.o[k * cfg.lanes:(k + 1) * cfg.lanes], out_mant, out_shift,
                 m=state.m, last=int(k == count - 1)) for k in range(count)]


def real_beats(cfg, seed, count):
    """At least ``count`` beats of final states of real segments."""
    rng = np.random.default_rng(seed)
    beats = []
    while len(beats) < count:
        state, v_max = real_state(cfg, rng)
        beats += beats_of(cfg, state, int(rng.integers(cfg.max_heads)), *output_scale(cfg, rng, v_max))
    return beats


def aligned_top(cfg, e):
    """The largest o whose alignment ``round_shift(o, e - P)`` fits norm_o_bits."""
    top, shift = (1 << (cfg.norm_o_bits - 1)) - 1, e - cfg.exp_frac_bits
    return (top << shift) + (1 << shift >> 1) - 1 if shift else top


def extreme_beats(cfg, seed):
    """Beats at the edges of the formats, each within the contract (golden.normalize accepts it)."""
    rng = random.Random(seed)
    P, B = cfg.exp_frac_bits, cfg.input_bits
    l_min, l_top = 1 << P, (1 << cfg.acc_l_bits) - 1
    o_min, o_max = -(1 << (cfg.acc_o_bits - 1)), (1 << (cfg.acc_o_bits - 1)) - 1
    mant_max, shift_max = (1 << cfg.scale_bits) - 1, cfg.out_shift_max
    lanes = lambda values: [values[i % len(values)] for i in range(cfg.lanes)]
    head = lambda: rng.randrange(cfg.max_heads)
    scales = [(0, 0), (0, shift_max), (mant_max, 0), (mant_max, shift_max), (1, 0),
              (1 << (cfg.scale_bits - 1), max(0, cfg.scale_bits - cfg.output_bits + B))]
    beats = []
    # The smallest l: one key of weight 1.0 and its value, at every scale corner.
    for out_mant, out_shift in scales:
        beats.append(beat(cfg, head(), l_min, lanes([cfg.input_min << P, cfg.input_max << P, 0, 1, -1]),
                          out_mant, out_shift))
    # The top of l with o at both ends of acc_o_bits.
    for out_mant, out_shift in scales:
        for o in ([o_min], [o_max], [o_min, o_max, 0, -1]):
            beats.append(beat(cfg, head(), l_top, lanes(o), out_mant, out_shift, last=1))
    # Every exponent of l; o at both ends of what acc_o_bits and the aligned o can hold (about
    # 2**B * l, twice what real keys produce) and in between.
    for e in range(P, cfg.acc_l_bits):
        for l in ((1 << e), (2 << e) - 1, rng.randrange(1 << e, 2 << e)):
            lo, hi = max(-(l << B), o_min), min(l << B, aligned_top(cfg, e), o_max)
            o = lanes([lo, hi, rng.randint(lo, hi), rng.randint(lo >> 3, hi >> 3)])
            beats.append(beat(cfg, head(), l, o, *rng.choice(scales[2:]), last=rng.getrandbits(1)))
    # Saturation at both ends: one key of value +-1 (o = +-2**P, l = 2**P) gives out = +-factor,
    # which rises by at most 1 per out_mant step; out_mant around the first to reach each limit.
    r_min = int(golden.reciprocal(cfg, [l_min])[0][0])
    factor = lambda mant: (r_min * mant + (1 << (cfg.recip_frac_bits - 1))) >> cfg.recip_frac_bits
    for limit, one in ((cfg.output_max, l_min), (-cfg.output_min, -l_min)):
        first = next(mant for mant in range(limit, mant_max + 1) if factor(mant) >= limit)
        for out_mant in (first - 1, first, first + 1):
            beats.append(beat(cfg, head(), l_min, lanes([one, -one, cfg.input_max << P]), out_mant, 0))
    # Ties at the output: l = 2**P and out_mant = 1 make the factor 1 and the product o, so
    # o = (2k+1) * 2**(P+s-1) is halfway between two outputs (ties go up, also for negative o).
    for out_shift in range(0, min(shift_max, B + 1) + 1):
        half = 1 << (P + out_shift - 1)
        for first in (1, -1):                               # signs alternate over the lanes
            ks = [rng.randrange(0, 1 << max(0, B - out_shift)) for _ in range(cfg.lanes)]
            o = [(2 * k + 1) * half * first * (-1) ** i for i, k in enumerate(ks)]
            beats.append(beat(cfg, head(), l_min, o, 1, out_shift))
    # Ties at the alignment: e = P + 1 and odd o round_shift(o, 1) halfway, both signs.
    for j in range(4):
        l = (2 << P) + rng.randrange(1 << (P + 1))
        o = [(2 * rng.randrange(l << (B - 1)) + 1) * (-1) ** (i + j) for i in range(cfg.lanes)]
        beats.append(beat(cfg, head(), l, o, *rng.choice(scales[2:])))
    return beats


def expected(cfg, beats):
    """golden.normalize with one beat per row: ``o`` ``(beats, lanes)``, one l / scale per row."""
    o = np.array([b["partial"]["o"] for b in beats], dtype=np.int64)
    l = np.array([b["partial"]["l"] for b in beats], dtype=np.int64)
    mant = np.array([b["out_mant"] for b in beats], dtype=np.int64)
    shift = np.array([b["out_shift"] for b in beats], dtype=np.int64)
    out = golden.normalize(cfg, o, l, mant, shift)
    return [{"head": b["partial"]["head"], "out": [int(x) for x in row], "last": b["partial"]["last"]}
            for b, row in zip(beats, out)]


@functools.lru_cache(maxsize=16)
def vectors(name, *, real, seed=2024):
    """``(inputs, outputs)`` for the benches: the extremes, then ``real`` beats of real states."""
    cfg = TEST_CONFIGS[name]
    beats = extreme_beats(cfg, seed) + real_beats(cfg, seed, real)
    return ({"i_final": [pack(final_layout(cfg), b) for b in beats]},
            {"o_out": [pack(output_layout(cfg), b) for b in expected(cfg, beats)]})


def latency_of(dut):
    return {"o_out": ("i_final", dut.latency, None)}


@pytest.mark.parametrize("name", CONFIGS)
def test_vectors_reach_the_edges(name):
    """The extremes hit what they claim: l at both ends, o at the acc_o limits, saturation at both
    ends, ties at the output and the alignment, out_shift and out_mant at both ends."""
    cfg = TEST_CONFIGS[name]
    beats = extreme_beats(cfg, 1)
    outs = expected(cfg, beats)
    P = cfg.exp_frac_bits
    l_all = {b["partial"]["l"] for b in beats}
    assert {1 << P, (1 << cfg.acc_l_bits) - 1} <= l_all
    o_all = {x for b in beats for x in b["partial"]["o"]}
    assert {-(1 << (cfg.acc_o_bits - 1)), (1 << (cfg.acc_o_bits - 1)) - 1} <= o_all
    out_all = [x for o in outs for x in o["out"]]
    assert out_all.count(cfg.output_max) >= 2 and out_all.count(cfg.output_min) >= 2
    assert cfg.output_max - 1 in out_all and cfg.output_min + 1 in out_all
    assert {b["out_shift"] for b in beats} >= {0, cfg.out_shift_max}
    assert {b["out_mant"] for b in beats} >= {0, (1 << cfg.scale_bits) - 1}
    # Ties: the exact quotient o / 2**(P+s) lies halfway, for both signs, at several shifts.
    ties = {(b["out_shift"], x > 0) for b in beats if b["partial"]["l"] == 1 << P and b["out_mant"] == 1
            for x in b["partial"]["o"] if (2 * x) % (1 << (P + b["out_shift"])) == 0
            and x % (1 << (P + b["out_shift"])) != 0}
    assert {(0, True), (0, False), (3, True), (3, False)} <= ties
    # Real beats: final states with l far above 1.0 and outputs spread over the range.
    real = real_beats(cfg, 5, 600)
    assert max(b["partial"]["l"] for b in real) > 64 << P
    real_out = [x for o in expected(cfg, real) for x in o["out"]]
    assert min(real_out) < cfg.output_min // 4 and max(real_out) > cfg.output_max // 4


# --- amaranth.sim -----------------------------------------------------------------------------------

@pytest.mark.parametrize("name", CONFIGS)
@pytest.mark.parametrize(("idle", "backpressure"), PATTERNS)
def test_amaranth(name, idle, backpressure):
    inputs, outputs = vectors(name, real=300)
    dut = Normalizer(TEST_CONFIGS[name])
    simulate(dut, inputs, outputs, idle=idle, backpressure=backpressure,
             seed=300 + PATTERNS.index((idle, backpressure)), latency=latency_of(dut))


@pytest.mark.parametrize("name", CONFIGS)
def test_full_throughput(name):
    """No stalls: one beat per cycle in and out, latency cycles apart."""
    inputs, outputs = vectors(name, real=300)
    dut = Normalizer(TEST_CONFIGS[name])
    sent, received = simulate(dut, inputs, outputs, latency=latency_of(dut))
    count = len(outputs["o_out"])
    assert sent["i_final"] == list(range(1, count + 1))
    assert [cycle for _, cycle in received["o_out"]] == [c + dut.latency for c in sent["i_final"]]


def test_unused_fields_ignored():
    """The partial's m and valid do not matter (a final state is never empty)."""
    cfg = TEST_CONFIGS["odd"]
    beats = real_beats(cfg, 9, 64)
    outputs = [pack(output_layout(cfg), b) for b in expected(cfg, beats)]
    rng = random.Random(9)
    for b in beats:
        b["partial"]["m"] = rng.randint(cfg.max_min, cfg.max_max)
        b["partial"]["valid"] = rng.getrandbits(1)
    inputs = [pack(final_layout(cfg), b) for b in beats]
    simulate(Normalizer(cfg), {"i_final": inputs}, {"o_out": outputs}, idle="random",
             backpressure="random", seed=9)


def test_wrong_reference_fails():
    """The bench notices one wrong bit of one output (so the passing runs mean something)."""
    inputs, outputs = vectors("tiny", real=40)
    wrong = list(outputs["o_out"])
    wrong[-1] ^= 1 << output_layout(TEST_CONFIGS["tiny"])["out"].offset       # the LSB of out[0]
    with pytest.raises(AssertionError, match="corrupted"):
        simulate(Normalizer(TEST_CONFIGS["tiny"]), inputs, {"o_out": wrong})


# --- contract ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", CONFIGS)
def test_ports_and_contract(name):
    cfg = TEST_CONFIGS[name]
    dut = Normalizer(cfg)
    assert dut.cfg is cfg
    assert dut.signature.members["i_final"] == In(stream.Signature(final_layout(cfg)))
    assert dut.signature.members["o_out"] == Out(stream.Signature(output_layout(cfg)))
    assert dut.stages == ("scale", "mul", "out")
    assert dut.latency == len(recip_stages(cfg)) + 3 == 7
    module = dut.elaborate(platform=None)
    recip = module.submodules["recip"]
    Fragment.get(module, platform=None)            # elaborated for real, the reciprocal too
    assert isinstance(recip, Reciprocal) and recip.cfg is cfg
    assert dut.latency == recip.latency + len(dut.stages)
    # The reciprocal is the named submodule "recip" (the Verilog hierarchy shows it).
    text = verilog.convert(Normalizer(cfg), name="normalize", emit_src=False)
    assert re.search(r"^module \\normalize\.recip\b", text, re.M)
    assert re.search(r"\\normalize\.recip\s+recip\s*\(", text)


@pytest.mark.parametrize("cfg", [None, "tiny", PRESETS["tiny"].to_dict(), 3])
def test_cfg_not_a_config(cfg):
    with pytest.raises(TypeError, match=re.escape(f"cfg must be an AttentionConfig, not {cfg!r}")):
        Normalizer(cfg)


@pytest.mark.parametrize("name", CONFIGS)
def test_lint(request, name):
    path = bench_dir(request) / "normalize.v"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(verilog.convert(Normalizer(TEST_CONFIGS[name]), name="normalize", emit_src=False))
    assert verilator_lint(path, waivers=NORMALIZE_LINT_WAIVERS) == []


# --- cocotb on the generated Verilog ------------------------------------------------------------------

@pytest.mark.parametrize("simulator", ["icarus", "verilator"])
def test_cocotb_quick(request, simulator):
    """A few hundred beats at odd, under every stall pattern; the latency checked without stalls."""
    inputs, outputs = vectors("odd", real=300)
    dut = Normalizer(TEST_CONFIGS["odd"])
    run_cocotb_bench(dut, toplevel="normalize", inputs=inputs, outputs=outputs, simulator=simulator,
                     build_dir=bench_dir(request), latency=latency_of(dut), seed=4242,
                     patterns=PATTERNS)


@pytest.mark.slow
@pytest.mark.parametrize("name", CONFIGS)
@pytest.mark.parametrize("simulator", ["icarus", "verilator"])
def test_cocotb_full(request, simulator, name):
    """>= 10,000 real beats plus the extremes under random stalls on both sides; the latency
    checked on a no-stall pass over the first few hundred."""
    inputs, outputs = vectors(name, real=10_000)
    assert len(outputs["o_out"]) >= 10_000
    dut = Normalizer(TEST_CONFIGS[name])
    where = bench_dir(request)
    head = 300
    run_cocotb_bench(dut, toplevel="normalize", simulator=simulator, build_dir=where,
                     inputs={k: v[:head] for k, v in inputs.items()},
                     outputs={k: v[:head] for k, v in outputs.items()},
                     latency=latency_of(dut), seed=7000, patterns=[("none", "none")])
    run_cocotb_bench(dut, toplevel="normalize", inputs=inputs, outputs=outputs, simulator=simulator,
                     build_dir=where, seed=7001, patterns=[("random", "random")])
