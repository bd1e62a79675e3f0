# amaranth: UnusedElaboratable=no
"""Reciprocal: bit-exact against ``golden.reciprocal`` at every test configuration, the table as the
ROM holds it.

Vectors: all ``2**U`` mantissas (``U = recip_index_bits + recip_interp_bits`` bits below the leading
one) at the exponents ``e = exp_frac_bits`` and ``e = acc_l_bits - 1``, with random bits below the
mantissa (which the truncation must ignore); at every exponent below ``U`` (zero-filled mantissas)
where the configuration has one; at least 10,000 random ``l`` (half uniform, half log-uniform); and
the extremes: ``2**P``, the top of ``acc_l_bits``, every power of two and every all-ones value. The
reference is ``golden.reciprocal`` on the same ``l``.

No preset has ``exp_frac_bits < U``, so two more configurations cover the zero-filled mantissas:
``short`` (default with ``exp_frac_bits = 10``, interpolating) and ``short_mid`` (tiny with
``exp_frac_bits = 8``, midpoint table). They run in amaranth.sim and under cocotb on Verilator.

Fast tier: amaranth.sim on a sample of the vectors (the extremes all in) at every configuration
under each stall pattern, full throughput, the tag, the table, lint, constructor errors, and one
short cocotb run per simulator. Slow: every vector through cocotb on Icarus and on Verilator at the
test configurations (on Verilator at the short ones): all without stalls, checking the latency of
each, and the first 10,000 under random stalls on both sides.
"""

import functools
import re

import numpy as np
import pytest
from amaranth.back import verilog
from amaranth.hdl import Fragment, Shape, unsigned
from amaranth.lib import stream
from amaranth.lib.data import StructLayout
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out
from tiers import full_pairs

from leanattn.hdl.config import PRESETS, bits_for
from leanattn.hdl.recip import Reciprocal, recip_input_layout, recip_output_layout
from leanattn.hdl.tables import recip_table
from leanattn.sim import golden
from leanattn.sim.cocotb_util import AMARANTH_LINT_WAIVERS, verilator_lint
from leanattn.sim.configs import TEST_CONFIGS
from leanattn.sim.stream_bench import bench_dir, run_cocotb_bench, simulate

#: Configurations whose leading one can sit below the mantissa width (exp_frac_bits < U);
#: ``short_mid`` also covers the compact pipeline without interpolation (``odd``: with).
SHORT_CONFIGS = {
    "short":     TEST_CONFIGS["default"].replace(exp_frac_bits=10),
    "short_mid": TEST_CONFIGS["tiny"].replace(exp_frac_bits=8, pipeline="compact"),
}
ALL_CONFIGS = {**TEST_CONFIGS, **SHORT_CONFIGS}
CONFIGS = list(TEST_CONFIGS)
PATTERNS = [("none", "none"), ("random", "random"), ("fixed", "none"), ("none", "fixed")]
TAG = StructLayout({"head": 5, "last": 1})


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


def mantissa_bits(cfg):
    return cfg.recip_index_bits + cfg.recip_interp_bits


def exhaustive_exponents(cfg):
    """Exponents at which every mantissa is tried: P, the top, and every one below U."""
    top = cfg.acc_l_bits - 1
    return sorted({cfg.exp_frac_bits, top} | set(range(cfg.exp_frac_bits, min(mantissa_bits(cfg), top))))


def every_mantissa(cfg, e, rng):
    """Every ``l`` with its leading one at ``e`` that differs in the U bits below it (all of them
    when ``e < U``); random bits below the mantissa."""
    mant = mantissa_bits(cfg)
    if e < mant:
        return (1 << e) + np.arange(1 << e)
    below = e - mant
    junk = rng.integers(0, 1 << below, 1 << mant) if below else 0
    return (1 << e) + (np.arange(1 << mant) << below) + junk


@functools.lru_cache(maxsize=8)
def denominators(name, seed=2024):
    """Every ``l`` of the vectors (int64), the extremes first, the rest shuffled."""
    cfg = ALL_CONFIGS[name]
    rng = np.random.default_rng(seed)
    lo, width = cfg.exp_frac_bits, cfg.acc_l_bits
    powers = np.array([1 << e for e in range(lo, width)])
    extremes = np.concatenate([[1 << lo, (1 << lo) + 1, (1 << width) - 1, (1 << width) - 2],
                               powers, 2 * powers - 1, powers + 1])
    uniform = rng.integers(1 << lo, 1 << width, 5000)
    e = rng.integers(lo, width, 5000)                              # log-uniform
    log_uniform = (1 << e) + rng.integers(0, 1 << 62, 5000) % (1 << e)
    body = np.concatenate([every_mantissa(cfg, e, rng) for e in exhaustive_exponents(cfg)]
                          + [uniform, log_uniform])
    return np.concatenate([extremes, rng.permutation(body)]).astype(np.int64)


def vectors(name, count=None, tag_shape=0, seed=2024):
    """``(inputs, outputs)`` for the benches: the first ``count`` denominators (all by default),
    with random tags when ``tag_shape`` has bits."""
    cfg = ALL_CONFIGS[name]
    l = denominators(name)[:count]
    r, e = golden.reciprocal(cfg, l)
    columns_in, columns_out = {"l": l}, {"r": r, "e": e}
    if Shape.cast(tag_shape).width:
        tag = np.random.default_rng(seed).integers(0, 1 << Shape.cast(tag_shape).width, len(l))
        columns_in["tag"] = columns_out["tag"] = tag
    return ({"i_l": pack(recip_input_layout(cfg, tag_shape), **columns_in)},
            {"o_recip": pack(recip_output_layout(cfg, tag_shape), **columns_out)})


def latency_of(dut):
    return {"o_recip": ("i_l", dut.latency, None)}


@pytest.mark.parametrize("name", ALL_CONFIGS)
def test_vectors_cover_the_domain(name):
    cfg = ALL_CONFIGS[name]
    l = denominators(name)
    mant = mantissa_bits(cfg)
    assert l.min() == 1 << cfg.exp_frac_bits and l.max() == (1 << cfg.acc_l_bits) - 1
    _, e = golden.reciprocal(cfg, l)
    for exp in exhaustive_exponents(cfg):
        at = l[e == exp]
        # The U bits below the leading one (zero-filled below bit 0) take every value.
        x = (at >> (exp - mant) if exp >= mant else at << (mant - exp)) & ((1 << mant) - 1)
        assert len(set(x.tolist())) == 1 << min(mant, exp)
    assert len(l) >= 10_000 + sum(1 << min(mant, exp) for exp in exhaustive_exponents(cfg))
    assert set(e.tolist()) == set(range(cfg.exp_frac_bits, cfg.acc_l_bits))
    if name in SHORT_CONFIGS:
        assert cfg.exp_frac_bits < mant                 # the zero-filled mantissas really occur


# --- the table --------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ALL_CONFIGS)
def test_table_as_held(name):
    """The ROM of the elaborated design (and of its Verilog) holds golden's reciprocal table."""
    cfg = ALL_CONFIGS[name]
    expected = golden.tables(cfg)[1].tolist()
    dut = Reciprocal(cfg)
    module = dut.elaborate(platform=None)
    rom = module.submodules["table"]
    Fragment.get(module, platform=None)            # elaborated for real, down to the ROM
    assert isinstance(rom, Memory)
    assert rom.shape == unsigned(cfg.recip_bits) and rom.depth == cfg.recip_table_entries
    assert [int(x) for x in rom.init] == expected
    assert len(rom.read_ports) == 1
    assert dut.table == expected
    if cfg.recip_interp_bits:                       # the falls T[i] - T[i+1], in their own ROM
        descent = module.submodules["descent"]
        assert [int(x) for x in descent.init] == [a - b for a, b in zip(expected, expected[1:])]
        assert descent.depth == cfg.recip_table_entries - 1 and len(descent.read_ports) == 1
        assert descent.shape == unsigned(bits_for(max(dut.descents)))
    else:
        assert dut.descents == []
        with pytest.raises(AttributeError):
            module.submodules["descent"]
    text = verilog.convert(Reciprocal(cfg), name="recip", emit_src=False)
    held = {int(i): int(v, 16) for i, v in re.findall(r"\\table \[(\d+)\] = \d+'h([0-9a-f]+);", text)}
    assert [held.get(i, 0) for i in range(cfg.recip_table_entries)] == expected


# --- amaranth.sim -----------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ALL_CONFIGS)
@pytest.mark.parametrize(("idle", "backpressure"), PATTERNS)
def test_amaranth(name, idle, backpressure):
    inputs, outputs = vectors(name, count=600)
    dut = Reciprocal(ALL_CONFIGS[name])
    simulate(dut, inputs, outputs, idle=idle, backpressure=backpressure,
             seed=100 + PATTERNS.index((idle, backpressure)), latency=latency_of(dut))


@pytest.mark.parametrize("name", CONFIGS)
def test_full_throughput(name):
    """No stalls: one denominator per cycle in, one reciprocal per cycle out, latency cycles later."""
    inputs, outputs = vectors(name, count=300)
    dut = Reciprocal(TEST_CONFIGS[name])
    sent, received = simulate(dut, inputs, outputs, latency=latency_of(dut))
    assert sent["i_l"] == list(range(1, 301))
    assert [cycle for _, cycle in received["o_recip"]] == [c + dut.latency for c in sent["i_l"]]


@pytest.mark.parametrize("name", CONFIGS)
def test_tag_travels(name):
    inputs, outputs = vectors(name, count=400, tag_shape=TAG)
    dut = Reciprocal(TEST_CONFIGS[name], tag_shape=TAG)
    simulate(dut, inputs, outputs, idle="random", backpressure="random", seed=7,
             latency=latency_of(dut))
    simulate(dut, inputs, outputs, latency=latency_of(dut))


def test_wrong_reference_fails():
    """The bench notices one wrong bit of one reciprocal (so the passing runs mean something)."""
    inputs, outputs = vectors("odd", count=50)
    wrong = list(outputs["o_recip"])
    wrong[20] ^= 1
    with pytest.raises(AssertionError, match="corrupted"):
        simulate(Reciprocal(TEST_CONFIGS["odd"]), inputs, {"o_recip": wrong})


# --- contract ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ALL_CONFIGS)
def test_ports_and_contract(name):
    cfg = ALL_CONFIGS[name]
    dut = Reciprocal(cfg, tag_shape=TAG)
    assert dut.cfg is cfg and dut.tag_shape is TAG
    assert dut.signature.members["i_l"] == In(stream.Signature(recip_input_layout(cfg, TAG)))
    assert dut.signature.members["o_recip"] == Out(stream.Signature(recip_output_layout(cfg, TAG)))
    assert recip_input_layout(cfg, TAG)["l"].shape == unsigned(cfg.acc_l_bits)
    assert recip_output_layout(cfg, TAG)["r"].shape == unsigned(cfg.recip_bits)
    assert recip_output_layout(cfg, TAG)["e"].shape == unsigned(bits_for(cfg.acc_l_bits - 1))
    # Without a tag the payloads have no tag field at all (no zero-width signals in the Verilog).
    assert list(dict(recip_input_layout(cfg)).keys()) == ["l"]
    assert list(dict(recip_output_layout(cfg)).keys()) == ["r", "e"]
    interp = cfg.recip_interp_bits > 0
    if cfg.pipeline == "compact":
        assert dut.stages == (("read", "interp") if interp else ("read",))
    else:
        assert dut.stages == (("chunk", "lead", "read", "table", "slope", "interp") if interp
                              else ("chunk", "lead", "read", "out"))
    assert dut.latency == len(dut.stages) == {(False, True): 6, (False, False): 4,
                                              (True, True): 2, (True, False): 1}[
                                                  (cfg.pipeline == "compact", interp)]
    assert dut.table == recip_table(index_bits=cfg.recip_index_bits, frac_bits=cfg.recip_frac_bits,
                                    interp=interp)


@pytest.mark.parametrize("cfg", [None, "tiny", PRESETS["tiny"].to_dict(), 3])
def test_cfg_not_a_config(cfg):
    with pytest.raises(TypeError, match=re.escape(f"cfg must be an AttentionConfig, not {cfg!r}")):
        Reciprocal(cfg)


@pytest.mark.parametrize("tag_shape", ["foo", None, 1.5, -1])
def test_tag_shape_not_a_shape(tag_shape):
    with pytest.raises(TypeError, match=re.escape(f"tag_shape must be a shape-castable object, "
                                                  f"not {tag_shape!r}")):
        Reciprocal(PRESETS["tiny"], tag_shape=tag_shape)


def test_tag_shape_keyword_only():
    with pytest.raises(TypeError, match="positional argument"):
        Reciprocal(PRESETS["tiny"], 8)


@pytest.mark.parametrize("name", ALL_CONFIGS)
@pytest.mark.parametrize("tag_shape", [0, TAG], ids=["untagged", "tagged"])
def test_lint(request, name, tag_shape):
    path = bench_dir(request) / "recip.v"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(verilog.convert(Reciprocal(ALL_CONFIGS[name], tag_shape=tag_shape), name="recip",
                                    emit_src=False))
    assert verilator_lint(path, waivers=AMARANTH_LINT_WAIVERS) == []


# --- cocotb on the generated Verilog ------------------------------------------------------------------

@pytest.mark.parametrize("simulator", ["icarus", "verilator"])
def test_cocotb_quick(request, simulator):
    """A few hundred tagged denominators at odd (interpolating), under every stall pattern; the
    latency checked without stalls."""
    inputs, outputs = vectors("odd", count=400, tag_shape=TAG)
    dut = Reciprocal(TEST_CONFIGS["odd"], tag_shape=TAG)
    run_cocotb_bench(dut, toplevel="recip", inputs=inputs, outputs=outputs, simulator=simulator,
                     build_dir=bench_dir(request), latency=latency_of(dut), seed=4242,
                     patterns=PATTERNS)


def run_all(request, simulator, name):
    """Every vector without stalls (the latency checked on each), then the first 10,000 under
    random stalls on both sides."""
    inputs, outputs = vectors(name)
    dut = Reciprocal(ALL_CONFIGS[name])
    where = bench_dir(request)
    run_cocotb_bench(dut, toplevel="recip", inputs=inputs, outputs=outputs, simulator=simulator,
                     build_dir=where, latency=latency_of(dut), seed=7000, patterns=[("none", "none")])
    head = 10_000
    run_cocotb_bench(dut, toplevel="recip", simulator=simulator, build_dir=where,
                     inputs={k: v[:head] for k, v in inputs.items()},
                     outputs={k: v[:head] for k, v in outputs.items()},
                     seed=7001, patterns=[("random", "random")])


@pytest.mark.slow
@pytest.mark.parametrize("name, simulator", full_pairs(CONFIGS))
def test_cocotb_full(request, simulator, name):
    run_all(request, simulator, name)


@pytest.mark.slow
@pytest.mark.parametrize("name", SHORT_CONFIGS)
def test_cocotb_full_short(request, name):
    """The zero-filled mantissas through the Verilog too (Verilator: the faster simulator)."""
    run_all(request, "verilator", name)
