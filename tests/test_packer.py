"""The host-side packer: every key's elements at ``k_base + j*head_dim`` in the bank of the core that
reads it (the core of its segment in :func:`~leanattn.sim.partition.schedule_shares`), under
``lean`` shares balanced to within one key, and the write stream that loads exactly those banks.

The reference is the schedule's shares and the input arrays themselves: heads lie end to end in
memory order (by first core, then index); each segment's keys ``k[head, start:stop]`` must sit, in
order, at the bank offset its address ``k_base[head] + start*head_dim`` gives relative to the
core's window base.
"""

import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from leanattn.hdl.config import PRESETS
from leanattn.hdl.kvmem import Kind, kv_write_layout, max_bank_keys
from leanattn.sim.configs import TEST_CONFIGS, TINY2
from leanattn.sim.packer import PackedKV, bank_keys_for, pack_kv
from leanattn.sim.partition import core_bounds, schedule_shares

#: Beside the test configurations: one core, eight cores over a short head, lanes == head_dim.
EXTRA_CONFIGS = {
    "one_core":   PRESETS["tiny"].replace(cores=1, head_dim=6, lanes=3, max_context=300, max_heads=4),
    "eight_core": PRESETS["default"].replace(cores=8, head_dim=10, lanes=2, max_context=200,
                                             max_heads=40),
    "one_beat":   PRESETS["tiny"].replace(head_dim=4, lanes=4, cores=4, max_context=100, max_heads=9),
}
CONFIGS = {**TEST_CONFIGS, **EXTRA_CONFIGS}
#: Whole heads per core (fa2): each core's heads lie together.
CONFIGS |= {f"{name}-fa2": CONFIGS[name].replace(schedule="fa2") for name in ("default", "eight_core")}

#: Most elements of one k array a property example builds (heads x longest length x head_dim):
#: lengths reach max_context with few heads and heads reach max_heads with shorter lengths.
ELEMENT_BUDGET = 1 << 21


def random_kv(cfg, lengths, seed):
    rng = np.random.default_rng(seed)
    shape = (len(lengths), max(lengths), cfg.head_dim)
    return (rng.integers(cfg.input_min, cfg.input_max + 1, shape),
            rng.integers(cfg.input_min, cfg.input_max + 1, shape))


@st.composite
def jobs(draw, cfg):
    """Lengths of a job: 1..max_heads heads of 1..max_context keys, within the element budget."""
    heads = draw(st.integers(1, cfg.max_heads))
    longest = max(1, min(cfg.max_context, ELEMENT_BUDGET // (heads * cfg.head_dim)))
    lengths = draw(st.one_of(
        st.lists(st.integers(1, longest), min_size=heads, max_size=heads),
        st.lists(st.integers(1, 3), min_size=heads, max_size=heads),
        st.tuples(st.integers(1, longest)).map(lambda t: [t[0]] * heads),
    ))
    return lengths


def check_packed(cfg, lengths, k, v, packed):
    """The layout contract, from the schedule's shares and the arrays."""
    d, lanes = cfg.head_dim, cfg.lanes
    shares = schedule_shares(lengths, cfg)
    # Heads are contiguous and tile the address space from 0 without overlap; under lean they lie
    # in head order (the stream-K order). Which order the others use is pinned by the window
    # checks below (every core's segments back to back from its window base).
    spans = sorted((packed.k_base[h], packed.k_base[h] + n * d) for h, n in enumerate(lengths))
    assert spans[0][0] == 0 and all(a[1] == b[0] for a, b in zip(spans, spans[1:]))
    if cfg.schedule == "lean":
        assert packed.k_base == tuple(int(x) * d for x in np.cumsum([0, *lengths[:-1]]))
    assert packed.v_base == packed.k_base
    sizes = [sum(seg.length for seg in segments) for segments in shares]
    if cfg.schedule == "lean":
        assert max(sizes) - min(sizes) <= 1                 # balanced to within one key
    assert max(sizes) <= packed.bank_keys
    for core, segments in enumerate(shares):
        window = packed.window_base[core] * lanes           # element address of bank word 0
        for x, banks in ((k, packed.k_banks), (v, packed.v_banks)):
            bank = banks[core]
            assert bank.shape == (packed.bank_keys * d // lanes, lanes)
            flat = bank.reshape(-1)
            offset = 0
            for seg in segments:
                addr = packed.k_base[seg.head] + seg.start * d
                # The segment's keys follow each other in the bank, from word 0 on.
                assert addr - window == offset
                keys = x[seg.head, seg.start:seg.stop].ravel()
                assert np.array_equal(flat[offset:offset + seg.length * d], keys)
                offset += seg.length * d
            assert offset == sizes[core] * d
            assert not flat[offset:].any()                  # the rest of the bank is empty


@pytest.mark.parametrize("name", list(CONFIGS))
@settings(max_examples=25)
@given(data=st.data())
def test_layout_property(name, data):
    cfg = CONFIGS[name]
    lengths = data.draw(jobs(cfg))
    k, v = random_kv(cfg, lengths, data.draw(st.integers(0, 1 << 30)))
    bank_keys = bank_keys_for(cfg, lengths) + data.draw(st.sampled_from([0, 0, 1, 7]))
    bank_keys = min(bank_keys, max_bank_keys(cfg))
    check_packed(cfg, lengths, k, v, pack_kv(cfg, lengths, k, v, bank_keys=bank_keys))


@pytest.mark.parametrize("name", list(CONFIGS))
@settings(max_examples=60)
@given(data=st.data())
def test_bank_keys_for_is_the_largest_share(name, data):
    cfg = CONFIGS[name]
    lengths = data.draw(st.lists(st.integers(1, cfg.max_context), min_size=1, max_size=cfg.max_heads))
    total = sum(lengths)
    sizes = [sum(seg.length for seg in segments) for segments in schedule_shares(lengths, cfg)]
    assert bank_keys_for(cfg, lengths) == max(sizes)
    if cfg.schedule == "lean":
        assert max(sizes) == -(-total // cfg.cores)
        assert sizes == list(np.diff(core_bounds(total, cfg.cores)))


@pytest.mark.parametrize("name", list(CONFIGS))
def test_extremes(name):
    """Heads at max_context (as many as the element budget allows: at wide, one head of
    ``ELEMENT_BUDGET // head_dim`` keys), max_heads heads of one key, one key in all."""
    cfg = CONFIGS[name]
    longest = min(cfg.max_context, ELEMENT_BUDGET // cfg.head_dim)
    heads = max(1, min(cfg.max_heads, ELEMENT_BUDGET // (longest * cfg.head_dim)))
    for lengths in ([longest] * heads, [1] * cfg.max_heads, [1], [longest, 1, longest]):
        k, v = random_kv(cfg, lengths, len(lengths))
        packed = pack_kv(cfg, lengths, k, v, bank_keys=bank_keys_for(cfg, lengths))
        check_packed(cfg, lengths, k, v, packed)


def apply_writes(cfg, packed):
    """The documented effect of the write stream, on a model of the banks: every payload is
    packed in ``kv_write_layout(cfg)`` and read back field by field."""
    layout = kv_write_layout(cfg)
    words = packed.bank_words
    banks = {(kind, core): np.full((words, cfg.lanes), -1 << 20)
             for kind in Kind for core in range(cfg.cores)}
    bases = {}
    for item in packed.writes():
        value = layout.from_bits(layout.const(item).as_bits())
        key = (Kind(value.kind), value.bank)
        if value.base:
            bases[key] = value.addr
        else:
            assert value.addr < words
            banks[key][value.addr] = [value.data[i] for i in range(cfg.lanes)]
    return banks, bases


@pytest.mark.parametrize("name", list(CONFIGS))
def test_writes_load_the_banks(name):
    """The bases of every bank, then the words of every share, each once."""
    cfg = CONFIGS[name]
    rng = np.random.default_rng(5)
    lengths = list(rng.integers(1, min(cfg.max_context, 24) + 1, min(cfg.max_heads, 5)))
    k, v = random_kv(cfg, lengths, 6)
    packed = pack_kv(cfg, lengths, k, v, bank_keys=bank_keys_for(cfg, lengths) + 2)
    banks, bases = apply_writes(cfg, packed)
    items = list(packed.writes())
    assert len(items) == 2 * cfg.cores + 2 * sum(lengths) * cfg.beats_per_key
    for core in range(cfg.cores):
        share = packed.share_words(core)
        for kind, image in ((Kind.K, packed.k_banks[core]), (Kind.V, packed.v_banks[core])):
            assert bases[kind, core] == packed.window_base[core]
            assert np.array_equal(banks[kind, core][:share], image[:share])
            assert (banks[kind, core][share:] == -1 << 20).all()        # not written


def test_idle_cores():
    """Fewer keys than cores: the last cores get empty shares, their windows start at the end."""
    cfg = EXTRA_CONFIGS["eight_core"]
    k, v = random_kv(cfg, [3], 1)
    packed = pack_kv(cfg, [3], k, v, bank_keys=1)
    assert packed.windows == ((0, 1), (1, 2), (2, 3)) + ((3, 3),) * 5
    assert [packed.share_words(c) for c in range(8)] == [5, 5, 5, 0, 0, 0, 0, 0]
    assert packed.window_base == (0, 5, 10, 15, 15, 15, 15, 15)
    check_packed(cfg, [3], k, v, packed)


def test_result_type():
    cfg = TINY2                                             # two cores: a window per bank
    k, v = random_kv(cfg, [5, 9], 0)
    packed = pack_kv(cfg, [5, 9], k, v, bank_keys=7)
    assert isinstance(packed, PackedKV)
    assert packed.bank_words == 7 * 32 and packed.lengths == (5, 9) and packed.windows == ((0, 7), (7, 14))
    assert packed.k_base == (0, 5 * 32) and packed.window_base == (0, 7 * 32)


# --- errors -----------------------------------------------------------------------------------------

def test_share_does_not_fit():
    cfg = PRESETS["default"]                                # 4 cores
    lengths = [10, 7]                                       # shares 5, 4, 4, 4
    k, v = random_kv(cfg, lengths, 0)
    with pytest.raises(ValueError, match=re.escape("bank_keys (4) is too small: core 0 reads 5 keys "
                                                   "(global keys 0..4)")):
        pack_kv(cfg, lengths, k, v, bank_keys=4)
    pack_kv(cfg, lengths, k, v, bank_keys=5)


@pytest.mark.parametrize(("bank_keys", "error", "message"), [
    (0, ValueError, "bank_keys must be in the range 1..8192 (max_heads * max_context), not 0"),
    (8193, ValueError, "bank_keys must be in the range 1..8192 (max_heads * max_context), not 8193"),
    (2.0, TypeError, "bank_keys must be an integer, not 2.0"),
    (True, TypeError, "bank_keys must be an integer, not True"),
    ("3", TypeError, "bank_keys must be an integer, not '3'"),
])
def test_bank_keys_errors(bank_keys, error, message):
    cfg = PRESETS["tiny"]
    k, v = random_kv(cfg, [4], 0)
    with pytest.raises(error, match=re.escape(message)):
        pack_kv(cfg, [4], k, v, bank_keys=bank_keys)


@pytest.mark.parametrize(("lengths", "shape", "message"), [
    ([], None, "the number of heads must be in the range 1..8 (max_heads), not 0"),
    ([1] * 9, None, "the number of heads must be in the range 1..8 (max_heads), not 9"),
    ([3, 0], None, "the length of head 1 must be in the range 1..1024 (max_context), not 0"),
    ([1025], None, "the length of head 0 must be in the range 1..1024 (max_context), not 1025"),
    ([4, 6], (2, 5, 32), "k must have the shape (heads, n_max, head_dim) = (2, >= 6, 32), not (2, 5, 32)"),
    ([4, 6], (2, 6, 16), "k must have the shape (heads, n_max, head_dim) = (2, >= 6, 32), not (2, 6, 16)"),
    ([4, 6], (3, 6, 32), "k must have the shape (heads, n_max, head_dim) = (2, >= 6, 32), not (3, 6, 32)"),
])
def test_job_errors(lengths, shape, message):
    cfg = PRESETS["tiny"]
    k = np.zeros(shape or (max(len(lengths), 1), max(lengths or [1]), cfg.head_dim), dtype=np.int64)
    with pytest.raises(ValueError, match=re.escape(message)):
        pack_kv(cfg, lengths, k, k, bank_keys=100)


def test_value_errors():
    cfg = PRESETS["tiny"]
    k, v = random_kv(cfg, [4, 6], 0)
    v[1, 5, 3] = 128
    message = "v of head 1 must be in the range -128..127 (input_bits 8)"
    with pytest.raises(ValueError, match=re.escape(message)):
        pack_kv(cfg, [4, 6], k, v, bank_keys=100)
    v[1, 5, 3] = 0
    k[0, 5, 0] = 1000                                       # past head 0's length: ignored
    pack_kv(cfg, [4, 6], k, v, bank_keys=100)
    with pytest.raises(TypeError, match="k must be an integer array, not float64"):
        pack_kv(cfg, [4, 6], k * 1.0, v, bank_keys=100)
    with pytest.raises(TypeError, match="lengths must be integers, not float64"):
        pack_kv(cfg, [4.0, 6.0], k, v, bank_keys=100)


def test_config_errors():
    k, v = random_kv(PRESETS["tiny"], [4], 0)
    with pytest.raises(TypeError, match=re.escape("cfg must be an AttentionConfig, not 'tiny'")):
        pack_kv("tiny", [4], k, v, bank_keys=4)
    with pytest.raises(TypeError, match=re.escape("cfg must be an AttentionConfig, not None")):
        bank_keys_for(None, 4)
    with pytest.raises(TypeError, match="positional argument"):
        pack_kv(PRESETS["tiny"], [4], k, v, 4)


@pytest.mark.parametrize(("lengths", "error", "message"), [
    ([], ValueError, "the number of heads must be in the range 1..8 (max_heads), not 0"),
    ([1025], ValueError, "the length of head 0 must be in the range 1..1024 (max_context), not 1025"),
    ([1.5], TypeError, "lengths must be integers, not float64"),
])
def test_bank_keys_for_errors(lengths, error, message):
    with pytest.raises(error, match=re.escape(message)):
        bank_keys_for(PRESETS["tiny"], lengths)


def test_fa2_layout():
    """Under fa2 each core's heads lie together, the heads of core 0 first: the windows are the
    cores' own heads, back to back."""
    cfg = PRESETS["default"].replace(schedule="fa2")        # 4 cores
    lengths = [10, 3, 4, 5, 6, 2]                           # cores 0, 1, 2, 3, 1, 2
    k, v = random_kv(cfg, lengths, 2)
    packed = pack_kv(cfg, lengths, k, v, bank_keys=bank_keys_for(cfg, lengths))
    assert packed.bank_keys == 10
    assert packed.windows == ((0, 10), (10, 19), (19, 25), (25, 30))
    assert packed.k_base == tuple(x * cfg.head_dim for x in (0, 10, 19, 25, 13, 23))
    check_packed(cfg, lengths, k, v, packed)
