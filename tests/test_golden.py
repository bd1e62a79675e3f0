"""The golden model's own arithmetic: each unit against its definition, the vectorized online softmax
against a key-by-key loop, the segmented tree against float sums, and the determinism statement."""

from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from leanattn.hdl.config import PRESETS
from leanattn.hdl.tables import exp2_error_bound, recip_error_bound
from leanattn.sim import golden
from leanattn.sim.configs import ODD
from leanattn.sim.jobgen import int_job, random_int_job
from leanattn.sim.partition import head_spans, partition

CONFIGS = {**PRESETS, "odd": ODD}
CONFIG_NAMES = sorted(CONFIGS)


# -- primitives ----------------------------------------------------------------------------------

@given(st.integers(-(1 << 60), (1 << 60) - 1), st.integers(0, 70))
def test_round_shift_is_nearest_ties_up(x, n):
    got = int(golden.round_shift(np.int64(x), n))
    exact = Fraction(x, 1 << n)
    assert got - Fraction(1, 2) <= exact < got + Fraction(1, 2)


def test_round_shift_ties_and_limits():
    x = np.array([-3, -2, -1, 1, 2, 3])
    assert list(golden.round_shift(x, 1)) == [-1, -1, 0, 1, 1, 2]      # ties toward +infinity
    assert list(golden.round_shift(x, 0)) == list(x)
    big = np.array([-(1 << 61), (1 << 61) - 1])
    assert list(golden.round_shift(big, 62)) == [0, 0] and list(golden.round_shift(big, 200)) == [0, 0]
    with pytest.raises(AssertionError, match="negative"):
        golden.round_shift(x, -1)
    with pytest.raises(AssertionError, match="62-bit|derived range"):
        golden.round_shift(np.int64(1 << 61), 1)


@given(st.lists(st.integers(0, (1 << 62) - 1), min_size=1, max_size=50))
def test_bit_length(values):
    assert list(golden.bit_length(np.array(values, dtype=np.int64))) == [v.bit_length() for v in values]


# -- scores --------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", CONFIG_NAMES)
@settings(max_examples=200)
@given(data=st.data())
def test_score_rounds_and_saturates(name, data):
    cfg = CONFIGS[name]
    qk = data.draw(st.integers(-cfg.qk_max, cfg.qk_max))
    mant = data.draw(st.integers(0, (1 << cfg.scale_bits) - 1))
    shift = data.draw(st.integers(0, cfg.score_shift_max))
    got = int(golden.score(cfg, np.array([qk]), mant, shift)[0])
    exact = Fraction(qk * mant, 1 << shift)
    nearest = int(np.floor(exact + Fraction(1, 2)))
    assert got == min(max(nearest, cfg.logit_min), cfg.logit_max)


def test_tile_max_is_floor():
    cfg = PRESETS["default"]
    one = 1 << cfg.logit_frac_bits
    assert golden.tile_max(cfg, np.array([-one - 1, -5])) == -1          # floor(-5/1024) = -1
    assert golden.tile_max(cfg, np.array([3 * one + one - 1, 0])) == 3
    assert golden.tile_max(cfg, np.array([cfg.logit_min])) == cfg.max_min


# -- exp2 ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", CONFIG_NAMES)
def test_exp2_against_exact(name):
    """Exhaustive over the arguments with a non-zero result, plus the underflow edge."""
    cfg = CONFIGS[name]
    frac, lsb = cfg.logit_frac_bits, 1 << cfg.exp_frac_bits
    t = np.arange(-(cfg.exp_shift_max << frac), 1 << frac)
    w = golden.exp2(cfg, t)
    assert w[t == 0][0] == lsb                                   # 2**0 is exactly 1
    assert np.all(np.diff(w) >= 0)                               # monotonic
    exact = np.exp2(t / (1 << frac)) * lsb
    table_error = exp2_error_bound(index_bits=cfg.exp_index_bits, frac_bits=cfg.exp_frac_bits,
                                   interp_bits=cfg.exp_interp_bits)
    shift = np.maximum(-(t >> frac), 0)
    assert np.all(np.abs(w - exact) <= table_error / np.exp2(shift) + 0.5 * (shift > 0))
    assert list(golden.exp2(cfg, np.array([cfg.exp_in_min, -(cfg.exp_shift_max << frac)]))) == [0, 0]


# -- online softmax ------------------------------------------------------------------------------

def online_softmax_by_key(cfg, s, v, tile):
    """The definition, one tile and one key at a time."""
    frac = cfg.logit_frac_bits
    m, l, o = None, 0, [0] * v.shape[1]
    for lo in range(0, len(s), tile):
        m_tile = max(int(x) for x in s[lo:lo + tile]) >> frac
        m_new = m_tile if m is None else max(m, m_tile)
        if m is not None:
            l = int(golden.round_shift(l, m_new - m))
            o = [int(golden.round_shift(x, m_new - m)) for x in o]
        m = m_new
        for j in range(lo, min(lo + tile, len(s))):
            w = int(golden.exp2(cfg, np.array([int(s[j]) - (m << frac)]))[0])
            l += w
            o = [x + w * int(y) for x, y in zip(o, v[j])]
    return m, l, o


@pytest.mark.parametrize("name", CONFIG_NAMES)
@settings(max_examples=40)
@given(data=st.data())
def test_online_softmax_matches_key_by_key(name, data):
    cfg = CONFIGS[name]
    n = data.draw(st.integers(1, 70))
    tile = data.draw(st.sampled_from([2, 4, 8, cfg.tile]))
    spread = data.draw(st.sampled_from([1, 4, 40, 250])) << cfg.logit_frac_bits
    seed = data.draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    if data.draw(st.booleans()):                                 # rising: the max moves every tile
        s = np.sort(rng.integers(-spread, spread, n))
    else:
        s = rng.integers(-spread, spread, n)
    s = np.clip(s, cfg.logit_min, cfg.logit_max)
    v = rng.integers(cfg.input_min, cfg.input_max + 1, (n, 3))
    part = golden.online_softmax(cfg, s, v, tile)
    m, l, o = online_softmax_by_key(cfg, s, v, tile)
    assert (part.m, part.l, list(part.o)) == (m, l, o)
    assert part.l >= 1 << cfg.exp_frac_bits                     # the max key weighs at least 1.0


def test_empty_partial_is_identity():
    cfg = PRESETS["default"]
    part = golden.online_softmax(cfg, np.array([5, 900, -40]), np.ones((3, 2), dtype=np.int64))
    empty = golden.Partial.empty(2)
    assert golden.online_softmax(cfg, np.zeros(0, dtype=np.int64), np.zeros((0, 2))).valid is False
    for merged in (golden.merge(cfg, part, empty), golden.merge(cfg, empty, part)):
        assert (merged.m, merged.l, list(merged.o)) == (part.m, part.l, list(part.o))


@settings(max_examples=200)
@given(st.integers(-128, 127), st.integers(-128, 127), st.integers(1 << 14, 1 << 20),
       st.integers(1 << 14, 1 << 20), st.integers(-(1 << 25), 1 << 25), st.integers(-(1 << 25), 1 << 25))
def test_merge_definition_and_commutativity(m1, m2, l1, l2, o1, o2):
    cfg = PRESETS["default"]
    a = golden.Partial(True, m1, l1, np.array([o1]))
    b = golden.Partial(True, m2, l2, np.array([o2]))
    ab, ba = golden.merge(cfg, a, b), golden.merge(cfg, b, a)
    assert (ab.m, ab.l, list(ab.o)) == (ba.m, ba.l, list(ba.o))
    m = max(m1, m2)
    nearest = lambda x, d: int(np.floor(Fraction(x, 1 << d) + Fraction(1, 2)))  # noqa: E731
    assert ab.m == m and ab.l == nearest(l1, m - m1) + nearest(l2, m - m2)
    assert ab.o[0] == nearest(o1, m - m1) + nearest(o2, m - m2)


# -- reciprocal and normalizer -------------------------------------------------------------------

@pytest.mark.parametrize("name", CONFIG_NAMES)
@settings(max_examples=50)
@given(data=st.data())
def test_reciprocal_relative_error(name, data):
    cfg = CONFIGS[name]
    l = np.array(data.draw(st.lists(st.integers(1 << cfg.exp_frac_bits, (1 << cfg.acc_l_bits) - 1),
                                    min_size=1, max_size=20)), dtype=np.int64)
    r, e = golden.reciprocal(cfg, l)
    assert np.all(l >> e == 1)                                   # e is the leading one
    rel = np.abs(r.astype(np.float64) * l / np.exp2(e + cfg.recip_frac_bits) - 1)
    assert np.all(rel <= recip_error_bound(index_bits=cfg.recip_index_bits,
                                           interp_bits=cfg.recip_interp_bits,
                                           frac_bits=cfg.recip_frac_bits))


@pytest.mark.parametrize("name", CONFIG_NAMES)
@settings(max_examples=50)
@given(data=st.data())
def test_normalize_approximates_o_over_l(name, data):
    cfg = CONFIGS[name]
    l = data.draw(st.integers(1 << cfg.exp_frac_bits, (1 << (cfg.acc_l_bits - 1))))
    ratio = data.draw(st.floats(-1.0, 1.0))
    o = int(ratio * cfg.input_max * l)
    mant = data.draw(st.integers(1 << (cfg.scale_bits - 1), (1 << cfg.scale_bits) - 1))
    shift = data.draw(st.integers(cfg.scale_bits - cfg.output_bits, cfg.out_shift_max))
    out = int(golden.normalize(cfg, np.array([[o]]), np.array([l]), np.array([mant]),
                               np.array([shift]))[0, 0])
    exact = o / l * mant / 2.0 ** shift
    rel = recip_error_bound(index_bits=cfg.recip_index_bits, interp_bits=cfg.recip_interp_bits,
                            frac_bits=cfg.recip_frac_bits) + 2.0 ** -(cfg.scale_bits - 2)
    gain = mant / 2.0 ** shift
    tolerance = abs(exact) * rel + gain * 2.0 ** -(cfg.exp_frac_bits + 1) + 0.5
    clipped = min(max(exact, cfg.output_min - tolerance), cfg.output_max + tolerance)
    assert abs(out - clipped) <= tolerance + 1e-9
    assert cfg.output_min <= out <= cfg.output_max


# -- jobs: the segmented tree, determinism --------------------------------------------------------

@pytest.mark.parametrize("name", CONFIG_NAMES)
@settings(max_examples=60)
@given(data=st.data())
def test_segmented_tree_matches_unsegmented_float_sums(name, data):
    """Heads spanning any run of cores (and cores holding two cut heads): the final (m, l, o) of
    every head equals float sums of 2**(s - m) over the whole head, within the roundings."""
    cfg = CONFIGS[name].replace(cores=data.draw(st.sampled_from([2, 4, 8])))
    lengths = data.draw(st.lists(st.integers(1, 90), min_size=1, max_size=6))
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    job = random_int_job(cfg, lengths, rng, spread_bits=data.draw(st.sampled_from([0, 3, 6])))
    result = golden.run(cfg, job)
    frac, lsb = cfg.logit_frac_bits, 1 << cfg.exp_frac_bits
    table_error = exp2_error_bound(index_bits=cfg.exp_index_bits, frac_bits=cfg.exp_frac_bits,
                                   interp_bits=cfg.exp_interp_bits)
    for head, segments in head_spans(result.shares).items():
        n = lengths[head]
        s = golden.score(cfg, golden.dot(cfg, job.q[head], job.k[head, :n]),
                         int(job.score_mant[head]), int(job.score_shift[head]))
        final = result.finals[head]
        assert final.m == int(s.max()) >> frac                   # the head's integer max
        p = np.exp2((s - (final.m << frac)) / (1 << frac)) * lsb
        events = sum(-(-seg.length // cfg.tile) for seg in segments) + len(segments)
        per_key = table_error + 0.5
        v = job.v[head, :n].astype(np.float64)
        assert abs(final.l - p.sum()) <= n * per_key + events * 0.5
        assert np.all(np.abs(final.o - p @ v) <= n * per_key * np.abs(v).max(axis=0) + events * 0.5)


def test_same_job_same_bits():
    cfg = PRESETS["default"]
    job = random_int_job(cfg, [300, 5, 1000, 77], np.random.default_rng(7), spread_bits=5)
    assert np.array_equal(golden.run(cfg, job).out, golden.run(cfg, job).out)


@pytest.mark.parametrize("name", CONFIG_NAMES)
def test_uncut_head_independent_of_cores_and_neighbours(name):
    """A head processed in one core gives the same bits whatever the cores and the other heads."""
    cfg = CONFIGS[name]
    rng = np.random.default_rng(3)
    alone = random_int_job(cfg, [40], rng, spread_bits=6)
    reference = golden.run(cfg.replace(cores=1), alone).out[0]
    checked = 0
    for cores in (1, 2, 4, 8):
        for before in (1, 17, 333):
            lengths = [before, 40, 1]
            job = random_int_job(cfg, lengths, rng, spread_bits=6)
            job.q[1], job.k[1, :40], job.v[1, :40] = alone.q[0], alone.k[0], alone.v[0]
            shares = partition(lengths, cores)
            if len(head_spans(shares)[1]) == 1:
                assert np.array_equal(golden.run(cfg.replace(cores=cores), job).out[1], reference)
                checked += 1
    assert checked >= 6


@pytest.mark.parametrize("name", CONFIG_NAMES)
def test_no_rescale_means_independent_of_cores_and_tile(name):
    """Logits that all share one integer part never shift a partial: bits equal for every cores
    and tile."""
    cfg = CONFIGS[name]
    rng = np.random.default_rng(11)
    n = 200
    q = np.zeros((1, cfg.head_dim), dtype=np.int64)
    q[0, 0] = 1
    k = np.zeros((1, n, cfg.head_dim), dtype=np.int64)
    k[0, :, 0] = rng.integers(0, min(cfg.input_max, (1 << cfg.logit_frac_bits) - 1) + 1, n)  # in [0, 1)
    v = rng.integers(cfg.input_min, cfg.input_max + 1, (1, n, cfg.head_dim))
    job = int_job(cfg, q, k, v, [n], 1 << (cfg.scale_bits - 1), cfg.scale_bits - 1)
    outs = {(cores, tile): golden.run(cfg.replace(cores=cores, tile=tile), job).out[0]
            for cores in (1, 2, 4, 8) for tile in (2, 8, 64, 256)}
    first = next(iter(outs.values()))
    assert all(np.array_equal(out, first) for out in outs.values())


def test_rescales_can_change_bits_between_configurations():
    """The converse, documented: with a rising running max, tile and cores move the rounding."""
    cfg = PRESETS["default"]
    n = 256
    q = np.zeros((1, cfg.head_dim), dtype=np.int64)
    q[0, 0] = 1
    k = np.zeros((1, n, cfg.head_dim), dtype=np.int64)
    k[0, :, 0] = np.linspace(-127, 127, n).astype(np.int64)       # rising logits: -15.9 .. 15.9
    rng = np.random.default_rng(5)
    v = rng.integers(-127, 128, (1, n, cfg.head_dim))
    job = int_job(cfg, q, k, v, [n], 1 << (cfg.scale_bits - 1), cfg.scale_bits - 1 - 7)
    outs = [golden.run(cfg.replace(tile=tile), job).out[0] for tile in (2, 4, 8, 16, 32, 64, 128)]
    assert any(not np.array_equal(outs[0], out) for out in outs[1:])
