# amaranth: UnusedElaboratable=no
"""Normalizer: bit-exact against ``golden.normalize`` beat by beat, at every test configuration.

Vectors: beats of final states of real segments (``golden.online_softmax`` on random logits and
values; some cut into two to four pieces merged with ``golden.merge``, as the reduction tree does),
with realistic output scales (``sim.quant.encode_scale`` of ``output_max / max|v|``) and random ones;
plus extremes: the smallest ``l`` (``2**P``) and the top of ``acc_l_bits``, every exponent of ``l``,
``o`` at both ends of ``acc_o_bits`` and of what the aligned ``o`` can hold, ``out_shift``
0 and ``out_shift_max``, ``out_mant`` 0 and its maximum, saturation at both ends, rounding ties of
both signs at the alignment and at the output. Every partial keeps ``l``, ``out_mant`` and
``out_shift`` on all its beats (the unit's contract: it holds its first beat's); extremes come in
partials of one to three beats. The reference of each beat is
``golden.normalize(cfg, o_lanes[None, :], [l], [out_mant], [out_shift])`` (computed for all beats at
once, one beat per row).

Configurations: the test configurations (tiny with 4 cycles per beat on shared multipliers, the
others one beat per cycle) and :data:`SERIAL_CONFIGS`, more rates of the shared multipliers.

Fast tier: amaranth.sim at every configuration under each stall pattern (the further
configurations: no stalls and random ones), throughput and latency, the held per-partial values,
the multiplier plans, lint, constructor errors, and one short cocotb run per simulator (tiny, its
rate checked through :class:`AcceptProbe`). Slow: >= 10,000 real beats plus the extremes per test
configuration through cocotb on Icarus and on Verilator; two SB_MAC16 at tiny.
"""

import functools
import json
import random
import re
import subprocess

import numpy as np
import pytest
from amaranth.back import verilog
from amaranth.hdl import Fragment, Shape
from amaranth.lib import stream
from amaranth.lib.data import ArrayLayout, StructLayout
from amaranth.lib.wiring import In, Out
from tiers import full_pairs

from leanattn.fpga.unit_resources import yosys_command
from leanattn.hdl.config import PRESETS
from leanattn.hdl.dsp import ECP5, write_mult18x18d_model
from leanattn.hdl.layouts import final_layout, output_layout
from leanattn.hdl.normalize import Normalizer
from leanattn.hdl.recip import Reciprocal, recip_stages
from leanattn.sim import golden
from leanattn.sim.accept_probe import AcceptProbe
from leanattn.sim.cocotb_util import AMARANTH_LINT_WAIVERS, design_verilog, verilator_lint
from leanattn.sim.configs import TEST_CONFIGS
from leanattn.sim.quant import encode_scale
from leanattn.sim.stream_bench import bench_dir, run_cocotb_bench, simulate

CONFIGS = list(TEST_CONFIGS)
PATTERNS = [("none", "none"), ("random", "random"), ("fixed", "none"), ("none", "fixed")]

#: Shared multipliers at other rates than the test configurations' (tiny: 4 cycles per beat, the
#: others 1): tiny at 2 (the factor's two slices take all of a beat's cycles), default at 2 (8
#: lanes on 8 multipliers, half the lanes per cycle) and odd at 4 (3 lanes on 2 multipliers, one
#: lane per cycle).
SERIAL_CONFIGS = {
    "tiny_n2":    TEST_CONFIGS["tiny"].replace(norm_cycles=2),
    "default_n2": TEST_CONFIGS["default"].replace(norm_cycles=2),
    "odd_n4":     TEST_CONFIGS["odd"].replace(norm_cycles=4),
}
ALL_CONFIGS = {**TEST_CONFIGS, **SERIAL_CONFIGS}

#: Lint waivers of the normalizer beyond AMARANTH_LINT_WAIVERS.
NORMALIZE_LINT_WAIVERS = {
    **AMARANTH_LINT_WAIVERS,
    ("UNUSEDSIGNAL", "Signal is not used: 'i_l__*'"):
        "the recip submodule's input valid/ready as seen from the normalizer: the same nets as "
        "i_final's valid/ready, which the backend connects to the instance directly, leaving these "
        "named copies without a reader.",
    ("UNUSEDSIGNAL", "Signal is not used: 'o_recip__payload'"):
        "the recip submodule's result as one named wire; with the compact pipeline and no "
        "interpolation the result is the table's read data beside the registered exponent, two "
        "instance ports that the normalizer reads field by field, leaving the whole without a reader.",
    ("DECLFILENAME", "*does not match MODULE name: 'normalize.*'"):
        "Amaranth writes each submodule into the top's file as a module named `top.sub` "
        "(`normalize.recip`), which no file name can match; the top itself is checked.",
}


# --- vectors --------------------------------------------------------------------------------------

def packer(shape):
    """A function giving the payload bits of a (nested) dict / list / int under a layout, at the
    layout's offsets (looked up once, not per item: the benches pack tens of thousands)."""
    if isinstance(shape, StructLayout):
        fields = [(name, field.offset, packer(field.shape)) for name, field in shape]
        return lambda value: sum(part(value[name]) << offset for name, offset, part in fields)
    if isinstance(shape, ArrayLayout):
        offsets, part = [shape[i].offset for i in range(shape.length)], packer(shape.elem_shape)
        return lambda value: sum(part(v) << offset for offset, v in zip(offsets, value))
    mask = (1 << Shape.cast(shape).width) - 1
    return lambda value: int(value) & mask


def pack_all(shape, values):
    """The payload bits of each of ``values`` under ``shape``."""
    part = packer(shape)
    return [part(value) for value in values]


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


def partial_beats(cfg, head, l, os, out_mant, out_shift):
    """One partial: a beat per lane vector in ``os``, all with ``l``, ``out_mant`` and
    ``out_shift`` (the contract), ``last`` on the final one."""
    return [beat(cfg, head, l, o, out_mant, out_shift, last=int(i == len(os) - 1)) for i, o in enumerate(os)]


def extreme_beats(cfg, seed):
    """Beats at the edges of the formats, each within the contract (golden.normalize accepts it),
    in partials of one to three beats."""
    rng = random.Random(seed)
    P, B = cfg.exp_frac_bits, cfg.input_bits
    l_min, l_top = 1 << P, (1 << cfg.acc_l_bits) - 1
    o_min, o_max = -(1 << (cfg.acc_o_bits - 1)), (1 << (cfg.acc_o_bits - 1)) - 1
    mant_max, shift_max = (1 << cfg.scale_bits) - 1, cfg.out_shift_max
    lanes = lambda values: [values[i % len(values)] for i in range(cfg.lanes)]
    part = lambda l, os, out_mant, out_shift: partial_beats(cfg, rng.randrange(cfg.max_heads), l, os,
                                                            out_mant, out_shift)
    scales = [(0, 0), (0, shift_max), (mant_max, 0), (mant_max, shift_max), (1, 0),
              (1 << (cfg.scale_bits - 1), max(0, cfg.scale_bits - cfg.output_bits + B))]
    beats = []
    # The smallest l: one key of weight 1.0 and its value, at every scale corner.
    for out_mant, out_shift in scales:
        beats += part(l_min, [lanes([cfg.input_min << P, cfg.input_max << P, 0, 1, -1])], out_mant,
                      out_shift)
    # The top of l with o at both ends of acc_o_bits: one partial per scale corner.
    for out_mant, out_shift in scales:
        beats += part(l_top, [lanes(o) for o in ([o_min], [o_max], [o_min, o_max, 0, -1])], out_mant,
                      out_shift)
    # Every exponent of l; o at both ends of what acc_o_bits and the aligned o can hold (about
    # 2**B * l, twice what real keys produce) and in between, over two beats.
    for e in range(P, cfg.acc_l_bits):
        for l in ((1 << e), (2 << e) - 1, rng.randrange(1 << e, 2 << e)):
            lo, hi = max(-(l << B), o_min), min(l << B, aligned_top(cfg, e), o_max)
            values = [lo, hi, rng.randint(lo, hi), rng.randint(lo >> 3, hi >> 3)]
            beats += part(l, [lanes(values), lanes(values[1:] + values[:1])], *rng.choice(scales[2:]))
    # Saturation at both ends: one key of value +-1 (o = +-2**P, l = 2**P) gives out = +-factor,
    # which rises by at most 1 per out_mant step; out_mant around the first to reach each limit.
    r_min = int(golden.reciprocal(cfg, [l_min])[0][0])
    factor = lambda mant: (r_min * mant + (1 << (cfg.recip_frac_bits - 1))) >> cfg.recip_frac_bits
    for limit, one in ((cfg.output_max, l_min), (-cfg.output_min, -l_min)):
        first = next(mant for mant in range(limit, mant_max + 1) if factor(mant) >= limit)
        for out_mant in (first - 1, first, first + 1):
            beats += part(l_min, [lanes([one, -one, cfg.input_max << P])], out_mant, 0)
    # Ties at the output: l = 2**P and out_mant = 1 make the factor 1 and the product o, so
    # o = (2k+1) * 2**(P+s-1) is halfway between two outputs (ties go up, also for negative o).
    for out_shift in range(0, min(shift_max, B + 1) + 1):
        half = 1 << (P + out_shift - 1)
        os = []
        for first in (1, -1):                               # signs alternate over the lanes
            ks = [rng.randrange(0, 1 << max(0, B - out_shift)) for _ in range(cfg.lanes)]
            os.append([(2 * k + 1) * half * first * (-1) ** i for i, k in enumerate(ks)])
        beats += part(l_min, os, 1, out_shift)
    # Ties at the alignment: e = P + 1 and odd o round_shift(o, 1) halfway, both signs.
    for j in range(4):
        l = (2 << P) + rng.randrange(1 << (P + 1))
        o = [(2 * rng.randrange(l << (B - 1)) + 1) * (-1) ** (i + j) for i in range(cfg.lanes)]
        beats += part(l, [o], *rng.choice(scales[2:]))
    return beats


def partials_of(beats):
    """The beats cut into partials at each ``last`` (a trailing partial without one included)."""
    partials, current = [], []
    for b in beats:
        current.append(b)
        if b["partial"]["last"]:
            partials.append(current)
            current = []
    return partials + ([current] if current else [])


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
    cfg = ALL_CONFIGS[name]
    beats = extreme_beats(cfg, seed) + real_beats(cfg, seed, real)
    return ({"i_final": pack_all(final_layout(cfg), beats)},
            {"o_out": pack_all(output_layout(cfg), expected(cfg, beats))})


def latency_of(dut):
    return {"o_out": ("i_final", dut.latency, None)}


@functools.cache
def verilog_of(name):
    """The generated Verilog of the unit at ``ALL_CONFIGS[name]`` (converted once per process)."""
    return verilog.convert(Normalizer(ALL_CONFIGS[name]), name="normalize", emit_src=False)


# --- cocotb on the generated Verilog ------------------------------------------------------------------
# First in the file, so that under pytest-xdist the long runs start first.

def cocotb_runs(name, simulator, build, *, stalled, back_to_back, patterns, seed, ecp5=False):
    """The unit inside an :class:`AcceptProbe` (one Verilog, one simulator build for both runs):
    ``stalled`` (inputs, outputs) under ``patterns``, the latency checked where nothing stalls;
    then ``back_to_back`` without stalls, where the latency is checked and the probe's gaps prove
    the beats taken exactly ``interval`` cycles apart. ``ecp5``: elaborated for the ECP5 (its
    multiplier blocks, simulated with their model)."""
    probe = AcceptProbe(Normalizer(ALL_CONFIGS[name]), port="i_final")
    latency = latency_of(probe.unit)
    target = dict(platform=ECP5(), extra_sources=[write_mult18x18d_model(build)]) if ecp5 else {}
    run_cocotb_bench(probe, toplevel="normalize", inputs=stalled[0], outputs=stalled[1],
                     simulator=simulator, build_dir=build, latency=latency, patterns=patterns, seed=seed,
                     **target)
    inputs, outputs = back_to_back
    gaps = [probe.gap_max] + [probe.unit.interval] * (len(inputs["i_final"]) - 1)
    run_cocotb_bench(probe, toplevel="normalize", inputs=inputs, outputs={**outputs, "o_gaps": gaps},
                     simulator=simulator, build_dir=build, patterns=[("none", "none")], seed=seed + 1,
                     latency={**latency, "o_gaps": ("i_final", 1, None)}, **target)


def head_of(streams, count):
    return {port: items[:count] for port, items in streams.items()}


@pytest.mark.parametrize("simulator", ["icarus", "verilator"])
def test_cocotb_quick(request, simulator):
    """A few hundred beats at tiny (4 cycles per beat) under every stall pattern, the latency
    checked without stalls; the rate on the first 100 back to back."""
    inputs, outputs = vectors("tiny", real=300)
    cocotb_runs("tiny", simulator, bench_dir(request), stalled=(inputs, outputs),
                back_to_back=(head_of(inputs, 100), head_of(outputs, 100)), patterns=PATTERNS,
                seed=4242)


@pytest.mark.parametrize("simulator", ["icarus", "verilator"])
def test_cocotb_ecp5(request, simulator):
    """default elaborated for the ECP5: each lane slice's product in a MULT18X18D whose factor
    input register and product register are the scale and mul stages' (one instance per
    multiplier of the plan), and the factor's own product (``r * out_mant``) in one whose product
    register is the align stage's, simulated with the block's model: bit-exact, the same latency
    and rate."""
    unit = Normalizer(ALL_CONFIGS["default"])
    text = design_verilog(unit, toplevel="normalize", platform=ECP5())
    assert text.count("MULT18X18D #(") == unit.lane_products.multipliers + 1 == 17
    assert "MULT18X18D" not in design_verilog(unit, toplevel="normalize")
    inputs, outputs = vectors("default", real=300)
    cocotb_runs("default", simulator, bench_dir(request), stalled=(inputs, outputs),
                back_to_back=(head_of(inputs, 100), head_of(outputs, 100)), patterns=PATTERNS[:2],
                seed=4343, ecp5=True)


@pytest.mark.slow
@pytest.mark.parametrize("name, simulator", full_pairs(CONFIGS))
def test_cocotb_full(request, simulator, name):
    """>= 10,000 real beats plus the extremes under random stalls on both sides; the latency and
    the rate checked on a no-stall pass over the first few hundred."""
    inputs, outputs = vectors(name, real=10_000)
    assert len(outputs["o_out"]) >= 10_000
    cocotb_runs(name, simulator, bench_dir(request), stalled=(inputs, outputs),
                back_to_back=(head_of(inputs, 300), head_of(outputs, 300)),
                patterns=[("random", "random")], seed=7000)


# --- resources --------------------------------------------------------------------------------------

def mac16_count(component, out_dir):
    """SB_MAC16 blocks of ``component`` for the iCE40: ``synth_ice40 -dsp`` up to the end of its
    coarse pass, where multipliers become DSP blocks (the rest of the flow, mapping logic to LUTs,
    takes five times as long and adds none)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "top.v").write_text(verilog.convert(component, name="top", emit_src=False))
    script = "read_verilog top.v; synth_ice40 -dsp -top top -run :map_ram; tee -q -o stat.json stat -json"
    subprocess.run([yosys_command(), "-q", "-p", script], cwd=out_dir, check=True, timeout=600)
    return json.loads((out_dir / "stat.json").read_text())["design"]["num_cells_by_type"].get("SB_MAC16", 0)


@pytest.mark.slow
def test_tiny_uses_two_mac16(request):
    """At tiny (iCE40UP5K) the unit takes two SB_MAC16: one for the factor's slices, one for the
    lane's (the full report: ``python -m leanattn.fpga.unit_resources``)."""
    dut = Normalizer(TEST_CONFIGS["tiny"])
    assert mac16_count(dut, bench_dir(request)) == \
        dut.factor_products.multipliers + dut.lane_products.multipliers == 2


@pytest.mark.parametrize("name", CONFIGS)
def test_pack_is_the_layout(name):
    """The benches' packing gives the bits of ``layout.const(...)``."""
    cfg = TEST_CONFIGS[name]
    beats = extreme_beats(cfg, 3)[:12]
    for layout, items in ((final_layout(cfg), beats), (output_layout(cfg), expected(cfg, beats))):
        assert pack_all(layout, items) == [layout.const(item).as_bits() for item in items]


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
    # The contract: l, out_mant and out_shift the same within each partial; several beats long.
    for beats_ in (beats, real_beats(cfg, 5, 100)):
        parts = partials_of(beats_)
        assert beats_[-1]["partial"]["last"] == 1
        for p in parts:
            assert len({(b["partial"]["l"], b["out_mant"], b["out_shift"]) for b in p}) == 1
    assert max(len(p) for p in partials_of(beats)) >= 3
    # Real beats: final states with l far above 1.0 and outputs spread over the range.
    real = real_beats(cfg, 5, 600)
    assert max(b["partial"]["l"] for b in real) > 64 << P
    real_out = [x for o in expected(cfg, real) for x in o["out"]]
    assert min(real_out) < cfg.output_min // 4 and max(real_out) > cfg.output_max // 4


# --- amaranth.sim -----------------------------------------------------------------------------------

@pytest.mark.parametrize(("name", "idle", "backpressure"), [
    (name, *pattern) for name in ALL_CONFIGS for pattern in PATTERNS[1:]
    if name in TEST_CONFIGS or pattern == ("random", "random")])
def test_amaranth(name, idle, backpressure):
    """Under stalls (the further configurations: random ones on both sides); without any,
    test_full_throughput runs the same beats (and checks more)."""
    inputs, outputs = vectors(name, real=300)
    dut = Normalizer(ALL_CONFIGS[name])
    simulate(dut, inputs, outputs, idle=idle, backpressure=backpressure,
             seed=300 + PATTERNS.index((idle, backpressure)), latency=latency_of(dut))


def check_throughput(dut, inputs, outputs):
    """No stalls, beats back to back: one accepted every ``interval`` cycles from the first cycle
    on, each output ``latency`` cycles after its input."""
    sent, received = simulate(dut, inputs, outputs, latency=latency_of(dut))
    count = len(outputs["o_out"])
    assert sent["i_final"] == [1 + dut.interval * i for i in range(count)]
    assert [cycle for _, cycle in received["o_out"]] == [c + dut.latency for c in sent["i_final"]]


@pytest.mark.parametrize("name", list(ALL_CONFIGS))
def test_full_throughput(name):
    """No stalls: one beat per ``norm_cycles`` cycles in and out, ``latency`` cycles apart."""
    cfg = ALL_CONFIGS[name]
    dut = Normalizer(cfg)
    assert dut.interval == cfg.norm_cycles
    check_throughput(dut, *vectors(name, real=300))


def test_unused_fields_ignored():
    """The partial's m and valid do not matter (a final state is never empty)."""
    cfg = TEST_CONFIGS["odd"]
    beats = real_beats(cfg, 9, 64)
    outputs = pack_all(output_layout(cfg), expected(cfg, beats))
    rng = random.Random(9)
    for b in beats:
        b["partial"]["m"] = rng.randint(cfg.max_min, cfg.max_max)
        b["partial"]["valid"] = rng.getrandbits(1)
    inputs = pack_all(final_layout(cfg), beats)
    simulate(Normalizer(cfg), {"i_final": inputs}, {"o_out": outputs}, idle="random",
             backpressure="random", seed=9)


@pytest.mark.parametrize("name", ["odd", "tiny", "tiny_n2"])
def test_partial_values_from_first_beat(name):
    """l, out_mant and out_shift come from a partial's first beat (after reset, or after a beat
    with last) and are held: the other beats' own are not used. Every beat but the first of each
    partial gets another l, out_mant and out_shift; the outputs stay those of the partials."""
    cfg = ALL_CONFIGS[name]
    beats = real_beats(cfg, 12, 3 * cfg.beats_per_key) + extreme_beats(cfg, 12)
    outputs = pack_all(output_layout(cfg), expected(cfg, beats))
    rng = random.Random(12)
    l_lo, l_hi = 1 << cfg.exp_frac_bits, (1 << cfg.acc_l_bits) - 1
    changed = 0
    for partial in partials_of(beats):
        for b in partial[1:]:
            b["partial"]["l"] = rng.randint(l_lo, l_hi)
            b["out_mant"] = rng.randrange(1 << cfg.scale_bits)
            b["out_shift"] = rng.randint(0, cfg.out_shift_max)
            changed += 1
    assert changed > len(beats) // 2
    inputs = pack_all(final_layout(cfg), beats)
    simulate(Normalizer(cfg), {"i_final": inputs}, {"o_out": outputs}, idle="random",
             backpressure="random", seed=12)


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
    if cfg.norm_cycles == 1:                        # default, wide, odd
        assert dut.stages == ("align", "scale", "mul", "sum", "round", "out")
        recip = {"full": 6, "compact": 2}[cfg.pipeline] if cfg.recip_interp_bits else 4
        assert dut.latency == len(recip_stages(cfg)) + 6 == recip + 6
        assert dut.factor_products is None and dut.lane_products.phases == 1
    else:                                           # tiny, tiny2: the factor's and the lanes' two slices
        assert dut.stages == ("scale", "fac1", "fac2", "fac3", "lanes", "mul1", "mul2", "mul3", "round",
                              "out")
        recip = {"full": 4, "compact": 1}[cfg.pipeline]     # (no interpolation)
        assert dut.latency == len(recip_stages(cfg)) + 10 == recip + 10
    assert dut.interval == cfg.norm_cycles
    module = dut.elaborate(platform=None)
    recip = module.submodules["recip"]
    Fragment.get(module, platform=None)            # elaborated for real, the reciprocal too
    assert isinstance(recip, Reciprocal) and recip.cfg is cfg
    assert dut.latency == recip.latency + len(dut.stages)
    # The reciprocal is the named submodule "recip" (the Verilog hierarchy shows it).
    text = verilog_of(name)
    assert re.search(r"^module \\normalize\.recip\b", text, re.M)
    assert re.search(r"\\normalize\.recip\s+recip\s*\(", text)


@pytest.mark.parametrize("name", list(ALL_CONFIGS))
def test_multipliers(name):
    """With norm_cycles > 1 the factor r * out_mant and the lane products come from dsp_bits-wide
    slices on ceil(slices / norm_cycles) multipliers each, one register per multiplier in the
    Verilog; the latency is the reciprocal's plus 5 plus the phases of both."""
    cfg = ALL_CONFIGS[name]
    dut = Normalizer(cfg)
    if cfg.norm_cycles == 1:
        assert dut.latency == len(recip_stages(cfg)) + 6
        assert dut.factor_products is None and dut.lane_products.phases == 1
        return
    text = verilog_of(name)
    fac, lane = dut.factor_products, dut.lane_products
    for plan, count in ((fac, 1), (lane, cfg.lanes)):
        assert plan.phases <= cfg.norm_cycles == plan.cycles
        assert plan.multipliers == -(-len(plan.slices) // cfg.norm_cycles)
        assert len(plan.slices) % count == 0 and plan.count == count
        assert all(s.x_width <= cfg.dsp_bits and s.y_width <= cfg.dsp_bits for s in plan.slices)
    for prefix, plan in (("fmul", fac), ("lmul", lane)):
        parts = re.findall(rf"\breg (?:signed )?(?:\[\d+:0\] )?({prefix}_part_\d+)\b", text)
        assert sorted(parts, key=lambda p: int(p.rsplit("_", 1)[1])) == \
            [f"{prefix}_part_{j}" for j in range(plan.multipliers)]
    assert dut.latency == len(recip_stages(cfg)) + 6 + fac.phases + lane.phases
    expected_plans = {                               # (factor, lanes): (multipliers, phases)
        "tiny":       ((1, 2), (1, 2)),
        "tiny2":      ((1, 2), (1, 2)),
        "tiny_n2":    ((1, 2), (1, 2)),
        "default_n2": ((1, 1), (8, 2)),
        "odd_n4":     ((1, 1), (2, 3)),
    }
    assert ((fac.multipliers, fac.phases), (lane.multipliers, lane.phases)) == expected_plans[name]


@pytest.mark.parametrize("cfg", [None, "tiny", PRESETS["tiny"].to_dict(), 3])
def test_cfg_not_a_config(cfg):
    with pytest.raises(TypeError, match=re.escape(f"cfg must be an AttentionConfig, not {cfg!r}")):
        Normalizer(cfg)


@pytest.mark.parametrize("name", list(ALL_CONFIGS))
def test_lint(request, name):
    path = bench_dir(request) / "normalize.v"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(verilog_of(name))
    assert verilator_lint(path, waivers=NORMALIZE_LINT_WAIVERS) == []
