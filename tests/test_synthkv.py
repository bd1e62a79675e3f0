# amaranth: UnusedElaboratable=no
"""The synthetic KV memory: its words are :func:`elements` of their addresses, served with the
request checks and the timing of the stored banks; synthetic jobs carry exactly those elements."""

import numpy as np
import pytest
from amaranth.lib import data

from leanattn.hdl.config import PRESETS
from leanattn.hdl.kvmem import KVBank, bank_write_layout
from leanattn.hdl.ports import kv_data_layout, kv_request_layout
from leanattn.sim.stream_bench import simulate
from leanattn.sim.synthkv import SyntheticBank, elements, layout, synthetic_job

CFG = PRESETS["default"]                    # lanes 8, head_dim 64


def test_elements_cover_the_input_range():
    values = elements(np.arange(1 << 16), 8)
    assert values.min() == -128 and values.max() == 127
    counts = np.bincount(values + 128, minlength=256)
    assert counts.min() > 0.8 * counts.mean()          # close to uniform
    assert np.mean(values[1:] == values[:-1]) < 0.02    # neighbours differ
    assert elements([5], 11)[0] == elements(5, 11)      # any shape


def bank_vectors(cfg, base_word, requests):
    """Payload bits: one window-base write, the requests, the expected beats (``elements``)."""
    wlayout, rlayout = bank_write_layout(cfg), kv_request_layout(cfg)
    writes = [wlayout.const({"base": 1, "addr": base_word, "data": [0] * cfg.lanes}).as_bits()]
    reqs = [rlayout.const({"addr": a, "keys": k}).as_bits() for a, k in requests]
    layout_ = data.ArrayLayout(kv_data_layout(cfg).elem_shape, cfg.lanes)
    beats = []
    for addr, keys in requests:
        for word in range(keys * cfg.beats_per_key):
            lanes = elements(addr + word * cfg.lanes + np.arange(cfg.lanes), cfg.input_bits)
            beats.append(layout_.const([int(x) for x in lanes]).as_bits())
    return writes, reqs, beats


@pytest.mark.parametrize(("idle", "backpressure"), [("none", "none"), ("random", "random")])
def test_bank_serves_the_function(idle, backpressure):
    # Window base 0, its value after reset: the base write races the first request here (the
    # system bench loads the bases before any request; KVBank's own tests cover moved windows).
    base_word = 0
    base = base_word * CFG.lanes
    requests = [(base, 1), (base + 3 * CFG.head_dim, 5), (base + 64 * CFG.head_dim, 2), (base, 3)]
    writes, reqs, beats = bank_vectors(CFG, base_word, requests)
    simulate(SyntheticBank(CFG, bank_keys=70), {"i_write": writes, "i_req": reqs}, {"o_data": beats},
             idle=idle, backpressure=backpressure, seed=3)


def test_bank_keeps_the_checks_and_the_latency():
    """A request outside the window is answered with zeros, as KVBank does; the latency is KVBank's."""
    assert SyntheticBank.latency == KVBank.latency
    base_word = 8
    writes, reqs, _ = bank_vectors(CFG, base_word, [(base_word * CFG.lanes + 10 * CFG.head_dim, 1)])
    zero = data.ArrayLayout(kv_data_layout(CFG).elem_shape, CFG.lanes).const([0] * CFG.lanes).as_bits()
    simulate(SyntheticBank(CFG, bank_keys=10), {"i_write": writes, "i_req": reqs},
             {"o_data": [zero] * CFG.beats_per_key})


@pytest.mark.parametrize("schedule", ["lean", "fa2", "flashdecoding"])
def test_jobs_hold_the_served_elements(schedule):
    cfg = CFG.replace(schedule=schedule)
    job, place = synthetic_job(cfg, [40, 3, 100, 7], np.random.default_rng(1))
    for h, n in enumerate(job.lengths):
        addr = place.k_base[h] + np.arange(n * cfg.head_dim)
        assert np.array_equal(job.k[h, :n].reshape(-1), elements(addr, cfg.input_bits))
        assert np.array_equal(job.v[h, :n].reshape(-1), elements(addr + place.v_offset, cfg.input_bits))
    assert place.v_offset == 150 * cfg.head_dim
    assert place.v_window == tuple(w + place.v_offset // cfg.lanes for w in place.k_window)


def test_layout_must_fit_the_addresses():
    cfg = PRESETS["tiny"].replace(max_heads=1, max_context=4)
    with pytest.raises(ValueError, match="does not fit twice"):
        layout(cfg, [4])
