# amaranth: UnusedElaboratable=no
"""JobLoader: descriptors and query beats stored at their indices, one report per job, bad jobs
taken to their last beats with the right error code, the next job unaffected."""

import numpy as np
import pytest
from amaranth.hdl import Module
from amaranth.lib import wiring

from leanattn.hdl.jobload import (
    ERR_HEADS,
    ERR_LENGTH,
    ERR_NONE,
    ERR_QUERY,
    JobLoader,
    descriptor_write_layout,
    job_layout,
)
from leanattn.hdl.ports import descriptor_layout, query_layout, query_write_layout
from leanattn.sim.configs import TEST_CONFIGS
from leanattn.sim.stream_bench import PATTERNS, bench_dir, run_cocotb_bench, simulate

NAMES = ["tiny", "default", "odd"]


class Enabled(wiring.Component):
    """The loader with ``i_enable`` held high: job after job, as fast as the streams go."""

    def __init__(self, cfg):
        self._cfg = cfg
        loader = JobLoader(cfg)
        self._loader = loader
        super().__init__({name: member for name, member in loader.signature.members.items()
                          if name != "i_enable"})

    def elaborate(self, platform):
        m = Module()
        m.submodules.loader = loader = self._loader
        m.d.comb += loader.i_enable.eq(1)
        for name in ("i_desc", "i_query"):
            wiring.connect(m, wiring.flipped(getattr(self, name)), getattr(loader, name))
        for name in ("o_dwrite", "o_qwrite", "o_job"):
            wiring.connect(m, getattr(loader, name), wiring.flipped(getattr(self, name)))
        return m


def make_job(cfg, rng, *, heads=None, error=ERR_NONE):
    """Descriptors and query beats of one job, with the report and the writes it must give."""
    heads = heads or int(rng.integers(1, cfg.max_heads + 1))
    lengths = rng.integers(1, cfg.max_context + 1, heads)
    beats = heads * cfg.beats_per_key
    if error == ERR_LENGTH:
        lengths[rng.integers(heads)] = rng.choice([0, cfg.max_context + 1, (1 << cfg.length_bits) - 1])
    elif error == ERR_HEADS:
        heads = cfg.max_heads + int(rng.integers(1, 3))
        lengths = rng.integers(1, cfg.max_context + 1, heads)
        beats = heads * cfg.beats_per_key
    elif error == ERR_QUERY:
        beats += int(rng.choice([-1, 1, cfg.beats_per_key])) if beats > 1 else 1
    descs = [dict(length=int(n), k_base=int(rng.integers(1 << cfg.kv_addr_bits)),
                  v_base=int(rng.integers(1 << cfg.kv_addr_bits)),
                  score_mant=int(rng.integers(1 << cfg.scale_bits)),
                  score_shift=int(rng.integers(1 << cfg.score_shift_bits)),
                  out_mant=int(rng.integers(1 << cfg.scale_bits)),
                  out_shift=int(rng.integers(1 << cfg.out_shift_bits)),
                  last=int(i == heads - 1)) for i, n in enumerate(lengths)]
    qs = rng.integers(cfg.input_min, cfg.input_max + 1, (beats, cfg.lanes))
    queries = [dict(q=[int(x) for x in row], last=int(i == beats - 1)) for i, row in enumerate(qs)]
    kept = min(heads, cfg.max_heads)
    total = int(sum(int(n) for n in lengths[:kept]))
    report = dict(heads=kept, total=total, error=error)
    dwrites = [dict(addr=i, desc=d) for i, d in enumerate(descs[:kept])]
    qwrites = [dict(addr=i, q=q["q"]) for i, q in enumerate(queries[:cfg.max_heads * cfg.beats_per_key])]
    return descs, queries, report, dwrites, qwrites


def vectors(cfg, rng, kinds):
    jobs = [make_job(cfg, rng, error=kind) for kind in kinds]
    pack = lambda layout, items: [layout.const(x).as_bits() for x in items]
    inputs = {"i_desc": pack(descriptor_layout(cfg), [d for j in jobs for d in j[0]]),
              "i_query": pack(query_layout(cfg), [q for j in jobs for q in j[1]])}
    outputs = {"o_job": pack(job_layout(cfg), [j[2] for j in jobs]),
               "o_dwrite": pack(descriptor_write_layout(cfg), [w for j in jobs for w in j[3]]),
               "o_qwrite": pack(query_write_layout(cfg), [w for j in jobs for w in j[4]])}
    return inputs, outputs


KINDS = [ERR_NONE, ERR_LENGTH, ERR_NONE, ERR_HEADS, ERR_NONE, ERR_QUERY, ERR_NONE, ERR_QUERY, ERR_NONE]


@pytest.mark.parametrize("idle, backpressure", PATTERNS)
@pytest.mark.parametrize("name", NAMES)
def test_jobs_and_bad_jobs(name, idle, backpressure):
    """Good and bad jobs in a row under every stall pattern: each report, every write."""
    cfg = TEST_CONFIGS[name]
    rng = np.random.default_rng(NAMES.index(name))
    inputs, outputs = vectors(cfg, rng, KINDS + list(rng.choice(KINDS, 12)))
    simulate(Enabled(cfg), inputs, outputs, idle=idle, backpressure=backpressure, seed=5)


@pytest.mark.parametrize("simulator", ["icarus", "verilator"])
def test_cocotb(request, simulator):
    cfg = TEST_CONFIGS["default"]
    rng = np.random.default_rng(11)
    inputs, outputs = vectors(cfg, rng, KINDS * 3)
    run_cocotb_bench(Enabled(cfg), toplevel="loader", inputs=inputs, outputs=outputs,
                     simulator=simulator, build_dir=bench_dir(request), seed=17)


def test_report_timing():
    """The report is taken two cycles after the later last transfer (no stalls): the done flags,
    then the report register."""
    cfg = TEST_CONFIGS["tiny"]
    rng = np.random.default_rng(3)
    inputs, outputs = vectors(cfg, rng, [ERR_NONE])
    sent, received = simulate(Enabled(cfg), inputs, outputs)
    last_in = max(sent["i_desc"][-1], sent["i_query"][-1])
    assert received["o_job"][0][1] == last_in + 2


def test_constructor_errors():
    with pytest.raises(TypeError, match="cfg must be an AttentionConfig"):
        JobLoader(None)
