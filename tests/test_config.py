import json

import numpy as np
import pytest

from leanattn.hdl.config import (
    GOLDEN_INT_BITS,
    PRESETS,
    AttentionConfig,
    bits_for,
    ceil_log2,
    parse_overrides,
    signed_bits,
)
from leanattn.sim import golden
from leanattn.sim.configs import ODD

BASE = PRESETS["default"]


# -- helpers -------------------------------------------------------------------------------------

@pytest.mark.parametrize("n, k", [(1, 0), (2, 1), (3, 2), (4, 2), (5, 3), (1 << 19, 19), ((1 << 19) + 1, 20)])
def test_ceil_log2(n, k):
    assert ceil_log2(n) == k


@pytest.mark.parametrize("n, bits", [(0, 1), (1, 1), (2, 2), (255, 8), (256, 9)])
def test_bits_for(n, bits):
    assert bits_for(n) == bits


@pytest.mark.parametrize("lo, hi, bits", [(0, 0, 1), (-1, 0, 1), (-128, 127, 8), (-129, 0, 9),
                                          (0, 128, 9), (-1 << 40, (1 << 40) - 1, 41)])
def test_signed_bits(lo, hi, bits):
    assert signed_bits(lo, hi) == bits


# -- validation: every message -------------------------------------------------------------------

@pytest.mark.parametrize("changes, message", [
    ({"head_dim": 0}, r"head_dim must be in the range 1\.\.4096, not 0"),
    ({"lanes": 6}, r"lanes must divide head_dim \(64\), not 6"),
    ({"lanes": 0}, r"lanes must be in the range 1\.\.64, not 0"),
    ({"lanes": 128}, r"lanes must be in the range 1\.\.64, not 128"),
    ({"cores": 6}, r"cores must be a power of two \(the reduction tree is binary\), not 6"),
    ({"cores": 0}, r"cores must be in the range 1\.\.256, not 0"),
    ({"tile": 24}, r"tile must be a power of two .*, not 24"),
    ({"tile": 1}, r"tile must be in the range 2\.\.4096, not 1"),
    ({"max_context": 0}, r"max_context must be in the range 1\.\.16777216, not 0"),
    ({"max_heads": 0}, r"max_heads must be in the range 1\.\.65536, not 0"),
    ({"schedule": "fa3"}, r"schedule must be one of lean, fa2, flashdecoding, not 'fa3'"),
    ({"chunks": 2}, r"chunks must be 0 unless schedule is flashdecoding \(schedule 'lean'\), not 2"),
    ({"schedule": "flashdecoding", "chunks": 3},
     r"chunks must be a power of two \(a head's chunks fill one subtree of the reduction tree\), not 3"),
    ({"schedule": "flashdecoding", "chunks": 8}, r"chunks must be in the range 0\.\.4, not 8"),
    ({"input_bits": 3}, r"input_bits must be in the range 4\.\.16, not 3"),
    ({"input_bits": 17}, r"input_bits must be in the range 4\.\.16, not 17"),
    ({"quant": "per_row"}, r"quant must be one of per_tensor, per_head, not 'per_row'"),
    ({"logit_int_bits": 1}, r"logit_int_bits must be in the range 2\.\.10, not 1"),
    ({"logit_frac_bits": 17}, r"logit_frac_bits must be in the range 2\.\.16, not 17"),
    ({"scale_bits": 7}, r"scale_bits must be in the range 8\.\.24, not 7"),
    ({"exp_index_bits": 13}, r"exp_index_bits must be in the range 2\.\.12, not 13"),
    ({"exp_index_bits": 11}, r"exp_index_bits must be at most logit_frac_bits \(10\), not 11"),
    ({"exp_frac_bits": 25}, r"exp_frac_bits must be in the range 10\.\.24, not 25"),
    ({"recip_index_bits": 1}, r"recip_index_bits must be in the range 2\.\.14, not 1"),
    ({"recip_interp_bits": 17}, r"recip_interp_bits must be in the range 0\.\.16, not 17"),
    ({"recip_frac_bits": 7}, r"recip_frac_bits must be in the range 8\.\.24, not 7"),
    ({"output_bits": 3}, r"output_bits must be in the range 4\.\.32, not 3"),
    ({"dsp_bits": 8}, r"dsp_bits must be in the range 9\.\.27, not 8"),
    ({"norm_cycles": 0}, r"norm_cycles must be in the range 1\.\.16, not 0"),
    ({"input_bits": 16, "max_context": 1 << 24, "exp_frac_bits": 24},
     r"acc_o_bits \(65 bits, derived from max_context 16777216, input_bits 16, .*\) must be at "
     r"most 62 bits"),
])
def test_invalid_value(changes, message):
    with pytest.raises(ValueError, match=message):
        BASE.replace(**changes)


@pytest.mark.parametrize("field, value", [("head_dim", 64.0), ("lanes", "8"), ("cores", True),
                                          ("quant", 1), ("schedule", None)])
def test_invalid_type(field, value):
    with pytest.raises(TypeError, match=rf"{field} must be an? (integer|string), not {value!r}"):
        BASE.replace(**{field: value})


def test_positional_arguments_rejected():
    with pytest.raises(TypeError):
        AttentionConfig(64, 8, 4, 32, 4096, 32)  # the constructor is keyword-only


def test_frozen():
    with pytest.raises(AttributeError):
        BASE.lanes = 4


# -- presets and serialization -------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(PRESETS))
def test_preset_json_round_trip(name):
    cfg = PRESETS[name]
    assert AttentionConfig.from_json(cfg.to_json()) == cfg
    with_derived = json.loads(cfg.to_json(with_derived=True))
    assert AttentionConfig.from_dict(with_derived) == cfg
    assert with_derived["derived"] == cfg.derived()
    assert with_derived["derived"]["acc_o_bits"] == cfg.acc_o_bits


def test_presets_as_specified():
    tiny, default, wide = PRESETS["tiny"], PRESETS["default"], PRESETS["wide"]
    # tiny: one core, the compact pipeline (what fits the iCE40UP5K; two cores take about twice
    # its logic cells, docs/synthesis.md); the larger presets split heads over cores and merge them.
    assert (tiny.head_dim, tiny.cores, tiny.lanes, tiny.max_context) == (32, 1, 1, 1024)
    assert tiny.pipeline == "compact"
    assert (default.head_dim, default.cores, default.max_context) == (64, 4, 4096)
    assert wide.head_dim == 128 and wide.cores >= 8 and wide.max_context >= 524288
    assert default.tree_levels == 2 and wide.tree_levels == 3 and tiny.tree_levels == 0
    assert wide.acc_o_bits > 40


def test_tiny_weights_fit_one_ice40_multiplier():
    # A weight x value product must fit one signed 16x16 SB_MAC16: the unsigned weight needs one
    # more bit as a signed operand.
    tiny = PRESETS["tiny"]
    assert tiny.weight_bits + 1 <= 16 and tiny.input_bits <= 16


def test_unknown_field_rejected():
    with pytest.raises(ValueError, match=r"unknown configuration field\(s\): colour"):
        AttentionConfig.from_dict({**BASE.to_dict(), "colour": 1})
    with pytest.raises(TypeError, match="must be a JSON object"):
        AttentionConfig.from_dict([1, 2])


def test_preset_lookup():
    assert AttentionConfig.preset("tiny") is PRESETS["tiny"]
    with pytest.raises(ValueError, match=r"preset must be one of tiny, default, wide, not 'huge'"):
        AttentionConfig.preset("huge")


def test_overrides():
    cfg = parse_overrides(BASE, ["lanes=4", "quant=per_tensor", "max_context=0x800"])
    assert (cfg.lanes, cfg.quant, cfg.max_context) == (4, "per_tensor", 2048)
    with pytest.raises(ValueError, match=r"unknown configuration field 'lane'"):
        parse_overrides(BASE, ["lane=4"])
    with pytest.raises(ValueError, match=r"lanes must be an integer, not 'four'"):
        parse_overrides(BASE, ["lanes=four"])
    with pytest.raises(ValueError, match=r"must look like FIELD=VALUE, not 'lanes'"):
        parse_overrides(BASE, ["lanes"])
    with pytest.raises(ValueError, match=r"lanes must divide head_dim \(64\), not 5"):
        parse_overrides(BASE, ["lanes=5"])


# -- derived widths never overflow: worst-case inputs through the golden model -------------------
# The golden model checks every intermediate against the width the config derives for it; these
# tests drive each one to its extreme and also check that the width is needed (not padded).

WIDTH_CONFIGS = {**PRESETS, "odd": ODD,
                 "int16": PRESETS["default"].replace(input_bits=16, max_context=1 << 16)}


def _needs_top_bit(value, bits, signed):
    magnitude_bits = bits - 1 if signed else bits
    return abs(int(value)) >= 1 << (magnitude_bits - 1)


@pytest.mark.parametrize("name", sorted(WIDTH_CONFIGS))
def test_worst_case_scores(name):
    cfg = WIDTH_CONFIGS[name]
    q = np.full(cfg.head_dim, cfg.input_min)
    k = np.full((2, cfg.head_dim), cfg.input_min)
    k[1] = cfg.input_max
    qk = golden.dot(cfg, q, k)
    assert qk[0] == cfg.qk_max and _needs_top_bit(qk[0], cfg.qk_bits, True)
    top_mant = (1 << cfg.scale_bits) - 1
    logits = golden.score(cfg, qk, top_mant, 0)                 # saturates, never wraps
    assert list(logits) == [cfg.logit_max, cfg.logit_min]
    assert list(golden.score(cfg, qk, top_mant, cfg.score_shift_max)) == [0, 0]


@pytest.mark.parametrize("name", sorted(WIDTH_CONFIGS))
def test_worst_case_exp2(name):
    cfg = WIDTH_CONFIGS[name]
    frac = cfg.logit_frac_bits
    t = np.array([cfg.exp_in_min, -1, 0, (1 << frac) - 1])
    w = golden.exp2(cfg, t)
    assert w[0] == 0 and w[2] == 1 << cfg.exp_frac_bits
    assert w[3] <= cfg.weight_max and _needs_top_bit(w[3], cfg.weight_bits, False)
    assert golden.exp2(cfg, np.array([-(cfg.exp_shift_max << frac)]))[0] == 0
    with pytest.raises(AssertionError, match="exp2 argument out of its derived range"):
        golden.exp2(cfg, np.array([1 << frac]))


@pytest.mark.parametrize("name", sorted(WIDTH_CONFIGS))
def test_worst_case_accumulators(name):
    """max_context keys at the largest weight and the most negative value fill l and o."""
    cfg = WIDTH_CONFIGS[name]
    frac = cfg.logit_frac_bits
    n = cfg.max_context
    top = (1 << frac) - 1                                        # fraction .111..1: largest weight
    s = np.full(n, top, dtype=np.int64)
    v = np.full((n, 1), cfg.input_min, dtype=np.int16)
    part = golden.online_softmax(cfg, s, v)
    assert part.l == golden.exp2(cfg, np.array([top]))[0] * n
    assert part.l < 1 << cfg.acc_l_bits and _needs_top_bit(part.l, cfg.acc_l_bits, False)
    assert -part.o[0] < 1 << (cfg.acc_o_bits - 1) and _needs_top_bit(part.o[0], cfg.acc_o_bits, True)
    # Merging two halves of the same keys gives the same sums: the widths hold merged partials too.
    half = golden.online_softmax(cfg, s[: n // 2], v[: n // 2])
    rest = golden.online_softmax(cfg, s[n // 2:], v[n // 2:])
    if n >= 2:
        merged = golden.merge(cfg, half, rest)
        assert merged.l == part.l and merged.o[0] == part.o[0]


@pytest.mark.parametrize("name", sorted(WIDTH_CONFIGS))
def test_worst_case_normalizer(name):
    cfg = WIDTH_CONFIGS[name]
    n = cfg.max_context
    w_top = int(golden.exp2(cfg, np.array([(1 << cfg.logit_frac_bits) - 1]))[0])
    # Largest |o| / l ratio (every value at input_min), smallest and largest l, largest factor.
    cases = [(cfg.input_min * (1 << cfg.exp_frac_bits), 1 << cfg.exp_frac_bits),
             (cfg.input_min * w_top * n, w_top * n),
             (cfg.input_max * w_top * n, w_top * n)]
    o = np.array([[c[0]] for c in cases], dtype=np.int64)
    l = np.array([c[1] for c in cases], dtype=np.int64)
    top_mant = np.full(len(cases), (1 << cfg.scale_bits) - 1)
    out = golden.normalize(cfg, o, l, top_mant, np.zeros(len(cases), dtype=np.int64))
    assert list(out[:, 0]) == [cfg.output_min, cfg.output_min, cfg.output_max]   # saturated
    out = golden.normalize(cfg, o, l, top_mant, np.full(len(cases), cfg.out_shift_max))
    assert list(out[:, 0]) == [0, 0, 0]


def test_golden_limit_respected_by_every_preset():
    for cfg in WIDTH_CONFIGS.values():
        for name in ("acc_o_bits", "out_product_bits", "scaled_qk_bits", "pv_product_bits"):
            assert getattr(cfg, name) <= GOLDEN_INT_BITS
