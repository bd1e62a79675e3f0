# amaranth: UnusedElaboratable=no
"""DotProduct: bit-exact against golden.dot under amaranth.sim and cocotb (Icarus and Verilator), at
every test configuration, under idle cycles and backpressure; latency, throughput, ports, lint and
constructor errors."""

import re

import numpy as np
import pytest
from amaranth.back import verilog
from amaranth.hdl import Shape, signed
from amaranth.lib import data, stream
from amaranth.lib.wiring import In, Out
from tiers import full_pairs

from leanattn.hdl.config import PRESETS, ceil_log2
from leanattn.hdl.dot import DotProduct, beat_layout, qk_layout
from leanattn.sim import golden
from leanattn.sim.cocotb_util import AMARANTH_LINT_WAIVERS, verilator_lint
from leanattn.sim.configs import TEST_CONFIGS
from leanattn.sim.stream_bench import bench_dir, run_cocotb_bench, simulate

TAG_BITS = 5            # a tag wide enough to tell neighbouring keys apart
#: Not tiny2: it differs from tiny only in cores and pipeline, and the dot product has no compact form.
CONFIGS  = [name for name in TEST_CONFIGS if name != "tiny2"]
#: head_dim == lanes: every beat is a whole key, one result per cycle.
ONE_BEAT = PRESETS["default"].replace(head_dim=16, lanes=16)

#: Lint waivers for the arithmetic Amaranth generates, besides AMARANTH_LINT_WAIVERS.
ARITH_LINT_WAIVERS = {
    ("WIDTHEXPAND", "Operator ADD expects * bits on the *, but *'s SIGNED generates * bits."):
        "Amaranth writes an addition of signed operands of different widths as `$signed(a) + "
        "$signed(b)`, which Verilog sign-extends to the sum's width; Yosys folds an explicit "
        "extension in the source back into this form.",
    ("UNUSEDSIGNAL", "Bits of signal are not used: '$*'[*]"):
        "Amaranth's anonymous intermediates ('$N') have the generic width of their operation (a "
        "sum one bit wider than its widest operand); where the exact range of the value needs "
        "fewer bits, the register it feeds is that narrow and the top bits are left unused.",
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
    """Raw payload bits of many items at once, each field at the layout's own offset (array fields
    element by element); the same bits as ``layout.const(...).as_bits()``, which
    :func:`test_pack_rows_is_the_layout` checks, at a fraction of its cost."""
    n = len(next(iter(columns.values())))
    bits = np.zeros(n, dtype=object)
    for name, values in columns.items():
        field = layout[name]
        if isinstance(field.shape, data.ArrayLayout):
            elem = Shape.cast(field.shape.elem_shape)
            offsets = [field.offset + i * elem.width for i in range(field.shape.length)]
        else:
            elem = Shape.cast(field.shape)
            offsets = [field.offset]
        values = np.asarray(values, dtype=np.int64).reshape(n, len(offsets))
        lo, hi = (-(1 << (elem.width - 1)), (1 << (elem.width - 1)) - 1) if elem.signed \
            else (0, (1 << elem.width) - 1)
        if values.size and (values.min() < lo or values.max() > hi):
            raise ValueError(f"{name} out of its field's range {lo}..{hi}")
        weights = np.array([1 << off for off in offsets], dtype=object)
        bits += (values & ((1 << elem.width) - 1)).astype(object) @ weights
    return [int(b) for b in bits]


def random_keys(cfg, count, seed):
    """``count`` random (q, k) pairs of head_dim elements: most uniform over the input range, some
    drawn from the extremes only (sums near +-qk_max)."""
    rng = np.random.default_rng(seed)
    q = rng.integers(cfg.input_min, cfg.input_max + 1, (count, cfg.head_dim))
    k = rng.integers(cfg.input_min, cfg.input_max + 1, (count, cfg.head_dim))
    edge = rng.random(count) < 0.1
    ends = np.array([cfg.input_min, cfg.input_max, -1, 0, 1])
    q[edge] = rng.choice(ends, (edge.sum(), cfg.head_dim), p=[0.6, 0.1, 0.1, 0.1, 0.1])
    k[edge] = rng.choice(ends, (edge.sum(), cfg.head_dim), p=[0.6, 0.1, 0.1, 0.1, 0.1])
    return q, k


def extreme_keys(cfg):
    """The corners, in an order that also tests the accumulator's restart (a large key, then 0)."""
    d, lo, hi = cfg.head_dim, cfg.input_min, cfg.input_max
    full = lambda v: np.full(d, v)
    alternate = np.where(np.arange(d) % 2 == 0, lo, hi)
    pairs = [
        (full(lo), full(lo)),            # the worst case: +qk_max
        (full(0), full(0)),              # zero right after it
        (full(hi), full(hi)),            # all input_max
        (full(lo), full(hi)),            # mixed signs: the most negative q.k
        (full(hi), full(lo)),
        (full(0), full(lo)),
        (alternate, full(lo)),           # signs alternate lane by lane
        (alternate, alternate),
        (full(-1), full(lo)),
        (full(lo), full(lo)),            # +qk_max twice in a row
        (full(lo), full(lo)),
    ]
    # One element at a time at the extreme: every lane and every beat position on its own.
    for j in range(d):
        one = full(0)
        one[j] = lo
        pairs.append((one, full(lo)))
    q, k = (np.array(side) for side in zip(*pairs))
    return q, k


def key_lengths_random(cfg, count, seed):
    """Keys of 1 .. beats_per_key beats (the unit follows ``last``, it does not count)."""
    return np.random.default_rng(seed).integers(1, cfg.beats_per_key + 1, count)


def streams(cfg, q, k, *, tag_shape=TAG_BITS, beats=None, seed=0):
    """Beats of the keys (``beats[i]`` beats each, all of head_dim by default), the expected results
    from golden.dot, and each result's last beat (for the latency check). Tags are random per beat;
    a result carries the tag of its key's last beat."""
    n = len(q)
    beats = np.full(n, cfg.beats_per_key) if beats is None else np.asarray(beats)
    rng = np.random.default_rng(seed + 1)
    tag_width = Shape.cast(tag_shape).width
    rows_q, rows_k, last, key_of = [], [], [], []
    for i in range(n):
        width = beats[i] * cfg.lanes
        rows_q.append(q[i, :width].reshape(beats[i], cfg.lanes))
        rows_k.append(k[i, :width].reshape(beats[i], cfg.lanes))
        last.append(np.arange(beats[i]) == beats[i] - 1)
        key_of.append(np.full(beats[i], i))
    rows_q, rows_k = np.concatenate(rows_q), np.concatenate(rows_k)
    last, key_of = np.concatenate(last), np.concatenate(key_of)
    tags = rng.integers(0, 1 << tag_width, len(last)) if tag_width else np.zeros(len(last), int)
    ends = np.flatnonzero(last)

    expected = np.array([golden.dot(cfg, q[i, :beats[i] * cfg.lanes], k[i:i + 1, :beats[i] * cfg.lanes])[0]
                         for i in range(n)])
    beat_bits = pack_rows(beat_layout(cfg, tag_shape), q=rows_q, k=rows_k, last=last, tag=tags)
    qk_bits = pack_rows(qk_layout(cfg, tag_shape), qk=expected, tag=tags[ends])
    return {"i_beat": beat_bits}, {"o_qk": qk_bits}, [int(e) for e in ends]


def latency_of(dut, ends):
    return {"o_qk": ("i_beat", dut.latency, ends)}


# --- cocotb on the generated Verilog -------------------------------------------------------------
# First in the file, so that under pytest-xdist the long runs start first.

#: Random keys per configuration and simulator in the slow tier's run (besides the extremes).
FULL_KEYS = 10_000


@pytest.mark.parametrize("simulator", ["icarus", "verilator"])
def test_cocotb_quick(request, simulator):
    """The fast tier's run: the extremes and 100 random keys of the odd config, under every stall
    pattern, with the latency checked where nothing stalls."""
    cfg = TEST_CONFIGS["odd"]
    q, k = random_keys(cfg, 100, seed=41)
    eq, ek = extreme_keys(cfg)
    inputs, outputs, ends = streams(cfg, np.concatenate([eq, q]), np.concatenate([ek, k]), seed=41)
    dut = DotProduct(cfg, tag_shape=TAG_BITS)
    run_cocotb_bench(dut, toplevel="dot", inputs=inputs, outputs=outputs, simulator=simulator,
                     build_dir=bench_dir(request), latency=latency_of(dut, ends), seed=4100)


@pytest.mark.slow
@pytest.mark.parametrize("name, simulator", full_pairs(CONFIGS))
def test_cocotb_full(request, name, simulator):
    """The extremes and FULL_KEYS random keys under random idle cycles and backpressure; then 100
    keys without stalls for the latency."""
    cfg = TEST_CONFIGS[name]
    seed = 5000 + 10 * CONFIGS.index(name) + (simulator == "verilator")
    q, k = random_keys(cfg, FULL_KEYS, seed)
    eq, ek = extreme_keys(cfg)
    inputs, outputs, _ = streams(cfg, np.concatenate([eq, q]), np.concatenate([ek, k]), seed=seed)
    dut = DotProduct(cfg, tag_shape=TAG_BITS)
    build = bench_dir(request)
    run_cocotb_bench(dut, toplevel="dot", inputs=inputs, outputs=outputs, simulator=simulator,
                     build_dir=build, patterns=[("random", "random")], seed=seed)

    inputs, outputs, ends = streams(cfg, q[:100], k[:100], seed=seed + 1)
    run_cocotb_bench(dut, toplevel="dot", inputs=inputs, outputs=outputs, simulator=simulator,
                     build_dir=build, latency=latency_of(dut, ends), patterns=[("none", "none")],
                     seed=seed + 1)


# --- amaranth.sim ----------------------------------------------------------------------------------

@pytest.mark.parametrize("name", CONFIGS)
def test_pack_rows_is_the_layout(name):
    cfg = TEST_CONFIGS[name]
    layout = beat_layout(cfg, TAG_BITS)
    q, k = random_keys(cfg, 40, seed=1)
    q, k = q[:, :cfg.lanes], k[:, :cfg.lanes]
    last, tag = np.arange(40) % 2, np.arange(40) % (1 << TAG_BITS)
    fast = pack_rows(layout, q=q, k=k, last=last, tag=tag)
    slow = [layout.const({"q": [int(x) for x in q[i]], "k": [int(x) for x in k[i]], "last": int(last[i]),
                          "tag": int(tag[i])}).as_bits() for i in range(40)]
    assert fast == slow
    with pytest.raises(ValueError, match=r"qk out of its field's range"):
        pack_rows(qk_layout(cfg), qk=[cfg.qk_max * 2])


PATTERNS_SIM = [("none", "none"), ("random", "random"), ("random", "none"), ("none", "random"),
                ("fixed", "fixed")]


@pytest.mark.parametrize("name", CONFIGS)
@pytest.mark.parametrize(("idle", "backpressure"), PATTERNS_SIM)
def test_random_keys(name, idle, backpressure):
    cfg = TEST_CONFIGS[name]
    seed = 100 + CONFIGS.index(name) * 10 + PATTERNS_SIM.index((idle, backpressure))
    q, k = random_keys(cfg, max(40, 1200 // cfg.beats_per_key), seed)
    inputs, outputs, ends = streams(cfg, q, k, seed=seed)
    dut = DotProduct(cfg, tag_shape=TAG_BITS)
    simulate(dut, inputs, outputs, idle=idle, backpressure=backpressure, seed=seed,
             latency=latency_of(dut, ends))


@pytest.mark.parametrize("name", CONFIGS)
@pytest.mark.parametrize(("idle", "backpressure"), [("none", "none"), ("random", "random")])
def test_extremes(name, idle, backpressure):
    cfg = TEST_CONFIGS[name]
    q, k = extreme_keys(cfg)
    inputs, outputs, ends = streams(cfg, q, k, seed=7)
    assert golden.dot(cfg, q[0], k[:1])[0] == cfg.qk_max
    dut = DotProduct(cfg, tag_shape=TAG_BITS)
    simulate(dut, inputs, outputs, idle=idle, backpressure=backpressure, seed=7,
             latency=latency_of(dut, ends))


@pytest.mark.parametrize("name", CONFIGS)
@pytest.mark.parametrize(("idle", "backpressure"), [("none", "none"), ("random", "random")])
def test_follows_last(name, idle, backpressure):
    """Keys of 1 .. beats_per_key beats, mixed: each result is the sum up to its ``last`` beat."""
    cfg = TEST_CONFIGS[name]
    q, k = random_keys(cfg, 150, seed=11)
    beats = key_lengths_random(cfg, 150, seed=12)
    inputs, outputs, ends = streams(cfg, q, k, beats=beats, seed=13)
    dut = DotProduct(cfg, tag_shape=TAG_BITS)
    simulate(dut, inputs, outputs, idle=idle, backpressure=backpressure, seed=13,
             latency=latency_of(dut, ends))


def test_no_tag():
    cfg = TEST_CONFIGS["odd"]
    q, k = random_keys(cfg, 60, seed=21)
    inputs, outputs, ends = streams(cfg, q, k, tag_shape=0, seed=21)
    dut = DotProduct(cfg)
    assert dut.tag_shape == 0
    simulate(dut, inputs, outputs, idle="random", backpressure="random", seed=21)
    simulate(DotProduct(cfg), inputs, outputs, latency=latency_of(dut, ends))


def test_layout_tag():
    """A tag may be any shape, a layout too."""
    cfg = TEST_CONFIGS["default"]
    tag = data.StructLayout({"head": 3, "first": 1})
    q, k = random_keys(cfg, 30, seed=22)
    inputs, outputs, _ = streams(cfg, q, k, tag_shape=tag, seed=22)
    simulate(DotProduct(cfg, tag_shape=tag), inputs, outputs, idle="random", backpressure="random", seed=22)


@pytest.mark.parametrize("cfg", [*(TEST_CONFIGS[name] for name in CONFIGS), ONE_BEAT],
                         ids=[*CONFIGS, "one_beat"])
def test_throughput(cfg):
    """No stalls: a beat every cycle in, a result every beats_per_key cycles out (every cycle when
    head_dim == lanes), each ``latency`` after its last beat."""
    n = 64
    q, k = random_keys(cfg, n, seed=31)
    inputs, outputs, ends = streams(cfg, q, k, seed=31)
    dut = DotProduct(cfg, tag_shape=TAG_BITS)
    sent, received = simulate(dut, inputs, outputs, latency=latency_of(dut, ends))
    assert sent["i_beat"] == list(range(1, n * cfg.beats_per_key + 1))
    cycles = [cycle for _, cycle in received["o_qk"]]
    assert np.all(np.diff(cycles) == cfg.beats_per_key)


def test_one_beat_random():
    cfg = ONE_BEAT
    q, k = random_keys(cfg, 600, seed=32)
    inputs, outputs, ends = streams(cfg, q, k, seed=32)
    dut = DotProduct(cfg, tag_shape=TAG_BITS)
    simulate(dut, inputs, outputs, idle="random", backpressure="random", seed=32)


@pytest.mark.parametrize("lanes", [1, 2, 3, 4, 5, 8, 9, 16, 32])
def test_latency_property(lanes):
    """One register for the products, then one per two adder levels; the accumulator is the last
    level. Each measured by simulation (a few keys, no stalls)."""
    cfg = PRESETS["default"].replace(head_dim=lanes * 2, lanes=lanes)
    dut = DotProduct(cfg)
    assert dut.latency == 1 + (ceil_log2(lanes) + 2) // 2
    q, k = random_keys(cfg, 8, seed=lanes)
    inputs, outputs, ends = streams(cfg, q, k, tag_shape=0, seed=lanes)
    simulate(dut, inputs, outputs, latency=latency_of(dut, ends))


def test_latency_presets():
    latency = {name: DotProduct(cfg).latency for name, cfg in TEST_CONFIGS.items()}
    assert latency == {"tiny": 2, "default": 3, "wide": 4, "tiny2": 2, "odd": 3}


def test_wrong_latency_is_caught():
    cfg = TEST_CONFIGS["default"]
    q, k = random_keys(cfg, 4, seed=3)
    inputs, outputs, ends = streams(cfg, q, k, seed=3)
    dut = DotProduct(cfg, tag_shape=TAG_BITS)
    with pytest.raises(AssertionError, match=f"the documented latency is {dut.latency + 1}"):
        simulate(dut, inputs, outputs, latency={"o_qk": ("i_beat", dut.latency + 1, ends)})


def test_ports_and_contract():
    cfg = TEST_CONFIGS["default"]
    dut = DotProduct(cfg, tag_shape=TAG_BITS)
    assert dut.cfg is cfg
    assert dut.signature.members["i_beat"] == In(stream.Signature(beat_layout(cfg, TAG_BITS)))
    assert dut.signature.members["o_qk"] == Out(stream.Signature(qk_layout(cfg, TAG_BITS)))
    assert beat_layout(cfg)["q"].shape == data.ArrayLayout(signed(cfg.input_bits), cfg.lanes)
    assert qk_layout(cfg)["qk"].shape == signed(cfg.qk_bits)
    text = verilog.convert(dut, name="dot", emit_src=False)
    for port in ("i_beat__payload", "i_beat__valid", "i_beat__ready",
                 "o_qk__payload", "o_qk__valid", "o_qk__ready", "clk", "rst"):
        assert re.search(rf"\b(input|output) (\[\d+:0\] )?{port};", text), port
    # The named stages reach the Verilog.
    for name in ("mul_prod_0", "mul_prod_7", "add1_sum_0", "add1_sum_1", "acc_restart"):
        assert re.search(rf"\breg (\[\d+:0\] )?{name}\b", text), name


# --- constructor errors ----------------------------------------------------------------------------

@pytest.mark.parametrize("cfg", [None, "default", {"head_dim": 64}])
def test_cfg_not_a_config(cfg):
    with pytest.raises(TypeError, match=re.escape(f"cfg must be an AttentionConfig, not {cfg!r}")):
        DotProduct(cfg)


@pytest.mark.parametrize("tag_shape", ["foo", None, 1.5, -1])
def test_tag_shape_not_a_shape(tag_shape):
    with pytest.raises(TypeError, match=re.escape(f"tag_shape must be a shape-castable object, "
                                                  f"not {tag_shape!r}")):
        DotProduct(TEST_CONFIGS["default"], tag_shape=tag_shape)


def test_keyword_only():
    with pytest.raises(TypeError, match="positional argument"):
        DotProduct(TEST_CONFIGS["default"], 4)


# --- lint ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", CONFIGS)
@pytest.mark.parametrize("tag_shape", [0, TAG_BITS])
def test_lint(request, name, tag_shape):
    path = bench_dir(request) / "dot.v"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(verilog.convert(DotProduct(TEST_CONFIGS[name], tag_shape=tag_shape), name="dot",
                                    emit_src=False))
    waivers = {**AMARANTH_LINT_WAIVERS, **ARITH_LINT_WAIVERS,
               **(NO_TAG_LINT_WAIVERS if not tag_shape else {})}
    assert verilator_lint(path, waivers=waivers) == []
