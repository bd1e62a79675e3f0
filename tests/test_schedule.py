# amaranth: UnusedElaboratable=no
"""Scheduler: every core's segments and every boundary crossing, exactly the golden model's shares
under each schedule the hardware implements."""

import numpy as np
import pytest
from amaranth.lib import data
from amaranth.sim import Simulator

from leanattn.hdl.jobload import descriptor_write_layout
from leanattn.hdl.schedule import Scheduler, SegmentGen, scan_job_layout
from leanattn.sim.configs import TEST_CONFIGS
from leanattn.sim.partition import head_spans, schedule_shares

#: The test configurations, and wider ones for the scan: 8 and 16 cores, 3 of 16 idle at times.
CONFIGS = {
    **TEST_CONFIGS,
    "cores8":  TEST_CONFIGS["default"].replace(cores=8, max_heads=12, max_context=300),
    "cores16": TEST_CONFIGS["tiny"].replace(cores=16, max_heads=9, max_context=40),
}
#: The same under fa2 (whole heads on the least-loaded core).
CONFIGS |= {f"{name}-fa2": CONFIGS[name].replace(schedule="fa2")
            for name in ("tiny", "default", "cores8", "cores16")}
#: And under flashdecoding: chunks over all cores, or groups of 2 and 4.
CONFIGS |= {f"{name}-fd{chunks}": CONFIGS[name].replace(schedule="flashdecoding", chunks=chunks)
            for name, chunks in (("tiny", 0), ("default", 0), ("default", 2), ("cores8", 4),
                                 ("cores16", 4), ("cores16", 0))}
#: One core: every schedule is the same single share.
CONFIGS |= {f"one_core-{schedule}": TEST_CONFIGS["tiny"].replace(cores=1, schedule=schedule)
            for schedule in ("lean", "fa2", "flashdecoding")}


def random_jobs(cfg, rng, count):
    """Jobs of random head counts and lengths: long and short, many heads, fewer keys than cores."""
    jobs = []
    for i in range(count):
        heads = int(rng.integers(1, min(cfg.max_heads, 12) + 1))
        kind = i % 4
        if kind == 0:
            top = cfg.max_context
        elif kind == 1:
            top = min(cfg.max_context, 3)
        elif kind == 2:
            top = min(cfg.max_context, 2 * cfg.tile)
        else:
            heads, top = 1, cfg.max_context
        lengths = rng.integers(1, top + 1, heads)
        if kind == 3 and i % 8 == 3:
            lengths[:] = cfg.max_context
        jobs.append(lengths)
    return jobs


def descriptors(cfg, lengths, rng):
    k_base = rng.integers(0, 1 << (cfg.kv_addr_bits - 1), len(lengths)) // cfg.lanes * cfg.lanes
    v_base = rng.integers(0, 1 << (cfg.kv_addr_bits - 1), len(lengths)) // cfg.lanes * cfg.lanes
    mant = rng.integers(0, 1 << cfg.scale_bits, len(lengths))
    shift = rng.integers(0, cfg.score_shift_max + 1, len(lengths))
    return [dict(length=int(n), k_base=int(k), v_base=int(v), score_mant=int(a), score_shift=int(s))
            for n, k, v, a, s in zip(lengths, k_base, v_base, mant, shift)]


def expected_segments(cfg, lengths, descs):
    shares = schedule_shares(lengths, cfg)
    return [[dict(head=s.head, keys=s.length,
                  k_addr=descs[s.head]["k_base"] + s.start * cfg.head_dim,
                  v_addr=descs[s.head]["v_base"] + s.start * cfg.head_dim,
                  score_mant=descs[s.head]["score_mant"], score_shift=descs[s.head]["score_shift"])
             for s in segments] for segments in shares]


def expected_cross(cfg, lengths):
    cross = [None] * (cfg.cores - 1)
    if cfg.schedule != "lean":
        return cross
    for head, segments in head_spans(schedule_shares(lengths, cfg)).items():
        for seg in segments[1:]:
            cross[seg.core - 1] = head
    return cross


def run_jobs(cfg, jobs, rng, *, stall=0.3):
    """Simulate the scheduler over ``jobs`` (``(lengths, descriptors)``) with random backpressure
    on every segment stream. Returns the segments each core received (all jobs, in order) and,
    per job, the crossings and the cycles from the job transfer to the end of the scan."""
    dut = Scheduler(cfg)
    wlayout, jlayout = descriptor_write_layout(cfg), scan_job_layout(cfg)
    fields = ("head", "k_addr", "v_addr", "keys", "score_mant", "score_shift")
    collected = [[] for _ in range(cfg.cores)]
    per_job = []

    async def bench(ctx):
        expected = [0] * cfg.cores
        for lengths, descs in jobs:
            for i, d in enumerate(descs):
                ctx.set(dut.i_dwrite.valid, 1)
                ctx.set(dut.i_dwrite.payload, wlayout.const({"addr": i, "desc": {**d, "last": 0}}))
                await ctx.tick()
            ctx.set(dut.i_dwrite.valid, 0)
            ctx.set(dut.i_job.valid, 1)
            ctx.set(dut.i_job.payload, jlayout.const({"heads": len(descs), "total": int(sum(lengths))}))
            await ctx.tick().until(dut.i_job.ready)
            ctx.set(dut.i_job.valid, 0)
            cycles = 0
            while not ctx.get(dut.o_scanned):
                await ctx.tick()
                cycles += 1
            await ctx.tick()
            cross = ([ctx.get(dut.o_cross[b].head) if ctx.get(dut.o_cross[b].valid) else None
                      for b in range(cfg.cores - 1)] if cfg.cores > 1 else [])
            split = [[(ctx.get(dut.o_split[o]) >> h) & 1 for h in range(len(descs))]
                     for o in range(cfg.head_chunks - 1)]
            per_job.append((cross, split, cycles))
            expected = [e + len(s) for e, s in zip(expected, schedule_shares(lengths, cfg))]
            while [len(c) for c in collected] != expected:
                await ctx.tick()
            await ctx.tick().repeat(8)           # anything extra would arrive by now

    def consumer(c):
        port = getattr(dut, f"o_seg_{c}")

        async def run(ctx):
            ctx.set(port.ready, int(rng.random() >= stall))
            async for _, _, valid, ready, payload in ctx.tick().sample(port.valid, port.ready, port.payload):
                if valid and ready:
                    collected[c].append({f: int(getattr(payload, f)) for f in fields})
                ctx.set(port.ready, int(rng.random() >= stall))
        return run

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    for c in range(cfg.cores):
        sim.add_process(consumer(c))
    sim.add_testbench(bench)
    sim.run()
    return collected, per_job


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_segments_and_crossings(name):
    cfg = CONFIGS[name]
    rng = np.random.default_rng(sorted(CONFIGS).index(name))
    jobs = []
    for lengths in random_jobs(cfg, rng, 12):
        jobs.append((lengths, descriptors(cfg, lengths, rng)))
    collected, per_job = run_jobs(cfg, jobs, rng)
    offset = [0] * cfg.cores
    for (lengths, descs), (cross, split, scan_cycles) in zip(jobs, per_job):
        want = expected_segments(cfg, lengths, descs)
        for c in range(cfg.cores):
            n = len(want[c])
            assert collected[c][offset[c]:offset[c] + n] == want[c], (name, list(lengths), c)
            offset[c] += n
        assert cross == expected_cross(cfg, lengths), (name, list(lengths))
        assert split == [[int(n > o) for n in lengths] for o in range(1, cfg.head_chunks)]
        assert scan_cycles == len(lengths) + 1      # o_scanned: read, one cycle per head, done
    assert [len(c) for c in collected] == offset


def test_constructor_errors():
    with pytest.raises(TypeError, match="cfg must be an AttentionConfig"):
        Scheduler(3)
    with pytest.raises(TypeError, match="cfg must be an AttentionConfig"):
        SegmentGen("tiny")


def test_layouts_derive_from_the_config():
    cfg = CONFIGS["default"]
    assert isinstance(scan_job_layout(cfg), data.StructLayout)
    assert scan_job_layout(cfg).size == (cfg.max_heads).bit_length() + (
        cfg.max_heads * cfg.max_context).bit_length()
