# amaranth: UnusedElaboratable=no
"""Exp2: bit-exact against ``golden.exp2`` at every test configuration, the table as the ROM holds it.

Vectors: every argument ``t`` from ``-exp_shift_max * 2**F`` to ``2**F - 1`` when that is at most
2**16 points (tiny, default, odd); otherwise (wide) every fraction at the shifts 0, 1 and the last
two before underflow, plus 10,000 random arguments over the whole range. Always added: the clamp
region below ``-exp_shift_max * 2**F`` down to ``exp_in_min`` (random, and both ends) and the edges
of the range. The reference is ``golden.exp2`` on the same arguments.

Fast tier: amaranth.sim on a sample of the vectors (the extremes all in) at every configuration
under each stall pattern, full throughput, the tag, the table, lint, constructor errors, and one
short cocotb run per simulator. Slow: every vector through amaranth.sim, and through cocotb on
Icarus and on Verilator, at every configuration.
"""

import functools
import re

import numpy as np
import pytest
from amaranth.back import verilog
from amaranth.hdl import Fragment, Shape, signed, unsigned
from amaranth.lib import stream
from amaranth.lib.data import StructLayout
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out
from tiers import full_pairs

from leanattn.hdl.config import PRESETS
from leanattn.hdl.exp2 import Exp2, exp2_input_layout, exp2_output_layout
from leanattn.hdl.tables import exp2_table
from leanattn.sim import golden
from leanattn.sim.cocotb_util import AMARANTH_LINT_WAIVERS, verilator_lint
from leanattn.sim.configs import TEST_CONFIGS
from leanattn.sim.stream_bench import bench_dir, run_cocotb_bench, simulate

#: The test configurations and tiny's compact pipeline (odd is compact with interpolation).
EXP2_CONFIGS = {**TEST_CONFIGS, "tiny_compact": TEST_CONFIGS["tiny"].replace(pipeline="compact")}
CONFIGS = list(EXP2_CONFIGS)
PATTERNS = [("none", "none"), ("random", "random"), ("fixed", "none"), ("none", "fixed")]
TAG = StructLayout({"key": 7, "last": 1})     # a tag with structure, as the softmax core carries


# --- vectors --------------------------------------------------------------------------------------

def pack(layout, **columns):
    """Payload bits of items given column by column (one sequence per field), at the layout's
    offsets."""
    fields = []
    for name, values in columns.items():
        field = layout[name]
        fields.append((field.offset, (1 << Shape.cast(field.shape).width) - 1, values))
    count = len(fields[0][2])
    return [sum((int(values[i]) & mask) << offset for offset, mask, values in fields)
            for i in range(count)]


def exhaustive(cfg):
    """Whether the whole range -exp_shift_max * 2**F .. 2**F - 1 is at most 2**16 arguments."""
    return (cfg.exp_shift_max + 1) << cfg.logit_frac_bits <= 1 << 16


@functools.lru_cache(maxsize=8)
def arguments(name, seed=2024):
    """Every argument of the vectors (int64), shuffled, the extremes first."""
    cfg = EXP2_CONFIGS[name]
    one = 1 << cfg.logit_frac_bits
    lo = -cfg.exp_shift_max * one                  # from here on down every weight is 0
    rng = np.random.default_rng(seed)
    if exhaustive(cfg):
        body = np.arange(lo, one)
    else:
        shifts = (0, 1, cfg.exp_shift_max - 2, cfg.exp_shift_max - 1)
        body = np.concatenate([np.arange(one) - n * one for n in shifts]
                              + [rng.integers(cfg.exp_in_min, one, 10_000)])
    extremes = np.array([cfg.exp_in_min, cfg.exp_in_min + 1, lo - 1, lo, lo + 1, -one - 1, -one,
                         -1, 0, 1, one - 1])
    clamp = rng.integers(cfg.exp_in_min, lo, 500)  # the clamped shift
    return np.concatenate([extremes, rng.permutation(np.concatenate([body, clamp]))])


def vectors(name, count=None, tag_shape=0, seed=2024):
    """``(inputs, outputs)`` for the benches: the first ``count`` arguments (all by default),
    with random tags when ``tag_shape`` has bits."""
    cfg = EXP2_CONFIGS[name]
    t = arguments(name)[:count]
    w = golden.exp2(cfg, t)
    columns_in, columns_out = {"t": t}, {"w": w}
    if Shape.cast(tag_shape).width:
        tag = np.random.default_rng(seed).integers(0, 1 << Shape.cast(tag_shape).width, len(t))
        columns_in["tag"] = columns_out["tag"] = tag
    return ({"i_t": pack(exp2_input_layout(cfg, tag_shape), **columns_in)},
            {"o_w": pack(exp2_output_layout(cfg, tag_shape), **columns_out)})


def latency_of(dut):
    return {"o_w": ("i_t", dut.latency, None)}


@pytest.mark.parametrize("name", CONFIGS)
def test_vectors_cover_the_domain(name):
    cfg = EXP2_CONFIGS[name]
    t = arguments(name)
    one = 1 << cfg.logit_frac_bits
    lo = -cfg.exp_shift_max * one
    covered = set(t.tolist())
    assert min(covered) == cfg.exp_in_min and max(covered) == one - 1
    if exhaustive(cfg):
        assert covered >= set(range(lo, one))
    else:
        for n in (0, 1, cfg.exp_shift_max - 2, cfg.exp_shift_max - 1):
            assert covered >= set(range(-n * one, -n * one + one))
        assert len(t) >= 4 * one + 10_000
    w = golden.exp2(cfg, t)
    # The last shift before underflow still gives 1 LSB, the clamp region only 0, 2**0 exactly 1.0.
    assert set(w[(t >= lo + one) & (t < lo + 2 * one)].tolist()) == {1}
    assert not w[t < lo].any()
    assert set(w[t == 0].tolist()) == {1 << cfg.exp_frac_bits}
    assert w.max() <= cfg.weight_max


# --- the table --------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", CONFIGS)
def test_table_as_held(name):
    """The ROM of the elaborated design (and of its Verilog) holds golden's exp2 table."""
    cfg = EXP2_CONFIGS[name]
    expected = golden.tables(cfg)[0].tolist()
    dut = Exp2(cfg)
    module = dut.elaborate(platform=None)
    rom = module.submodules["table"]
    Fragment.get(module, platform=None)            # elaborated for real, down to the ROM
    assert isinstance(rom, Memory)
    assert rom.shape == unsigned(cfg.weight_bits) and rom.depth == cfg.exp_table_entries
    assert [int(x) for x in rom.init] == expected
    assert len(rom.read_ports) == (2 if cfg.exp_interp_bits else 1)
    assert dut.table == expected
    text = verilog.convert(Exp2(cfg), name="exp2", emit_src=False)
    held = {int(i): int(v, 16) for i, v in re.findall(r"\\table \[(\d+)\] = \d+'h([0-9a-f]+);", text)}
    assert [held.get(i, 0) for i in range(cfg.exp_table_entries)] == expected


# --- amaranth.sim -----------------------------------------------------------------------------------

@pytest.mark.parametrize("name", CONFIGS)
@pytest.mark.parametrize(("idle", "backpressure"), PATTERNS)
def test_amaranth(name, idle, backpressure):
    inputs, outputs = vectors(name, count=600)
    dut = Exp2(EXP2_CONFIGS[name])
    simulate(dut, inputs, outputs, idle=idle, backpressure=backpressure,
             seed=100 + PATTERNS.index((idle, backpressure)), latency=latency_of(dut))


@pytest.mark.parametrize("name", CONFIGS)
def test_full_throughput(name):
    """No stalls: one argument per cycle in, one weight per cycle out, latency cycles later."""
    inputs, outputs = vectors(name, count=300)
    dut = Exp2(EXP2_CONFIGS[name])
    sent, received = simulate(dut, inputs, outputs, latency=latency_of(dut))
    assert sent["i_t"] == list(range(1, 301))
    assert [cycle for _, cycle in received["o_w"]] == [c + dut.latency for c in sent["i_t"]]


@pytest.mark.parametrize("name", CONFIGS)
def test_tag_travels(name):
    inputs, outputs = vectors(name, count=400, tag_shape=TAG)
    dut = Exp2(EXP2_CONFIGS[name], tag_shape=TAG)
    simulate(dut, inputs, outputs, idle="random", backpressure="random", seed=7,
             latency=latency_of(dut))
    simulate(dut, inputs, outputs, latency=latency_of(dut))


def test_wrong_reference_fails():
    """The bench notices one wrong bit of one weight (so the passing runs mean something)."""
    inputs, outputs = vectors("odd", count=50)
    wrong = list(outputs["o_w"])
    wrong[20] ^= 1
    with pytest.raises(AssertionError, match="corrupted"):
        simulate(Exp2(TEST_CONFIGS["odd"]), inputs, {"o_w": wrong})


@pytest.mark.slow
@pytest.mark.parametrize("name", CONFIGS)
def test_amaranth_all_vectors(name):
    inputs, outputs = vectors(name)
    simulate(Exp2(EXP2_CONFIGS[name]), inputs, outputs, idle="random", backpressure="random",
             seed=500)


# --- contract ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", CONFIGS)
def test_ports_and_contract(name):
    cfg = EXP2_CONFIGS[name]
    dut = Exp2(cfg, tag_shape=TAG)
    assert dut.cfg is cfg and dut.tag_shape is TAG
    assert dut.signature.members["i_t"] == In(stream.Signature(exp2_input_layout(cfg, TAG)))
    assert dut.signature.members["o_w"] == Out(stream.Signature(exp2_output_layout(cfg, TAG)))
    assert exp2_input_layout(cfg, TAG)["t"].shape == signed(cfg.exp_in_bits)
    assert exp2_output_layout(cfg, TAG)["w"].shape == unsigned(cfg.weight_bits)
    # Without a tag the payloads have no tag field at all (no zero-width signals in the Verilog).
    assert list(dict(exp2_input_layout(cfg)).keys()) == ["t"]
    assert list(dict(exp2_output_layout(cfg)).keys()) == ["w"]
    interp = cfg.exp_interp_bits > 0
    if cfg.pipeline == "compact":
        assert dut.stages == ("read", "shift")
    else:
        assert dut.stages == (("read", "table", "slope", "interp", "shift") if interp
                              else ("read", "table", "shift"))
    assert dut.latency == len(dut.stages) == (2 if cfg.pipeline == "compact" else 5 if interp else 3)
    assert dut.table == exp2_table(index_bits=cfg.exp_index_bits, frac_bits=cfg.exp_frac_bits,
                                   interp=interp)


@pytest.mark.parametrize("cfg", [None, "tiny", PRESETS["tiny"].to_dict(), 3])
def test_cfg_not_a_config(cfg):
    with pytest.raises(TypeError, match=re.escape(f"cfg must be an AttentionConfig, not {cfg!r}")):
        Exp2(cfg)


@pytest.mark.parametrize("tag_shape", ["foo", None, 1.5, -1])
def test_tag_shape_not_a_shape(tag_shape):
    with pytest.raises(TypeError, match=re.escape(f"tag_shape must be a shape-castable object, "
                                                  f"not {tag_shape!r}")):
        Exp2(PRESETS["tiny"], tag_shape=tag_shape)


def test_tag_shape_keyword_only():
    with pytest.raises(TypeError, match="positional argument"):
        Exp2(PRESETS["tiny"], 8)


@pytest.mark.parametrize("name", CONFIGS)
@pytest.mark.parametrize("tag_shape", [0, TAG], ids=["untagged", "tagged"])
def test_lint(request, name, tag_shape):
    path = bench_dir(request) / "exp2.v"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(verilog.convert(Exp2(EXP2_CONFIGS[name], tag_shape=tag_shape), name="exp2",
                                    emit_src=False))
    assert verilator_lint(path, waivers=AMARANTH_LINT_WAIVERS) == []


# --- cocotb on the generated Verilog ------------------------------------------------------------------

@pytest.mark.parametrize("simulator", ["icarus", "verilator"])
def test_cocotb_quick(request, simulator):
    """A few hundred tagged arguments at odd (interpolating), under every stall pattern; the
    latency checked without stalls."""
    inputs, outputs = vectors("odd", count=400, tag_shape=TAG)
    dut = Exp2(TEST_CONFIGS["odd"], tag_shape=TAG)
    run_cocotb_bench(dut, toplevel="exp2", inputs=inputs, outputs=outputs, simulator=simulator,
                     build_dir=bench_dir(request), latency=latency_of(dut), seed=4242,
                     patterns=PATTERNS)


@pytest.mark.slow
@pytest.mark.parametrize("name, simulator", full_pairs(CONFIGS))
def test_cocotb_full(request, simulator, name):
    """Every vector under random stalls on both sides; the latency checked on a no-stall pass over
    the first few hundred."""
    inputs, outputs = vectors(name)
    dut = Exp2(EXP2_CONFIGS[name])
    where = bench_dir(request)
    head = 300
    run_cocotb_bench(dut, toplevel="exp2", simulator=simulator, build_dir=where,
                     inputs={k: v[:head] for k, v in inputs.items()},
                     outputs={k: v[:head] for k, v in outputs.items()},
                     latency=latency_of(dut), seed=7000, patterns=[("none", "none")])
    run_cocotb_bench(dut, toplevel="exp2", inputs=inputs, outputs=outputs, simulator=simulator,
                     build_dir=where, seed=7001, patterns=[("random", "random")])
