"""Jobs through the generated accelerator: stream vectors from jobs, one simulation, checked results.

:func:`system_vectors` turns a list of jobs into the input streams of
:class:`~leanattn.sim.systop.SystemBench` (each job's KV load, descriptors and queries) and the
outputs the golden model says must come out (every head's output beats, tagged with the job, and
one status beat per job). :func:`run_system` simulates them all in one cocotb run on Icarus Verilog
or Verilator and checks every beat; :func:`job_cycles` reads each job's measured cycle count back.

A :class:`BadJob` is a job the accelerator must reject (a length of 0 or above ``max_context``,
more heads than ``max_heads``, a query of the wrong length): it is loaded like any other and must
give its error code and no output.
"""

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from amaranth.hdl import Shape
from amaranth.lib import data

from ..hdl.jobload import ERR_NONE
from ..hdl.kvmem import Kind
from ..hdl.ports import descriptor_layout, query_layout
from . import golden, synthkv
from .packer import bank_keys_for, pack_kv
from .stream_bench import run_cocotb_bench
from .systop import SystemBench, load_layout, status_layout, tagged_output_layout

__all__ = ["BadJob", "system_vectors", "run_system", "job_cycles", "ideal_cycles", "read_outputs"]


@dataclass
class BadJob:
    """A job to be rejected: raw descriptor lengths, query beats sent, the error it must raise."""
    lengths: list
    query_beats: int
    error: int
    seed: int = 0
    extra: dict = field(default_factory=dict)


def ideal_cycles(cfg, lengths):
    """``sum(lengths) * head_dim / (lanes * cores)``: every core busy on every cycle."""
    return int(np.sum(lengths)) * cfg.beats_per_key / cfg.cores


def _descriptors(cfg, job, packed):
    n = len(job.lengths)
    return [{"length": int(job.lengths[h]), "k_base": packed.k_base[h], "v_base": packed.v_base[h],
             "score_mant": int(job.score_mant[h]), "score_shift": int(job.score_shift[h]),
             "out_mant": int(job.out_mant[h]), "out_shift": int(job.out_shift[h]), "last": int(h == n - 1)}
            for h in range(n)]


def _queries(cfg, q):
    beats = np.asarray(q, dtype=np.int64).reshape(-1, cfg.lanes)
    return [{"q": [int(x) for x in row], "last": int(i == len(beats) - 1)} for i, row in enumerate(beats)]


def _bad_streams(cfg, bad):
    rng = np.random.default_rng(bad.seed)
    n = len(bad.lengths)
    descs = [{"length": int(length), "k_base": 0, "v_base": 0, "score_mant": 1 << (cfg.scale_bits - 1),
              "score_shift": 0, "out_mant": 1, "out_shift": 0, "last": int(h == n - 1)}
             for h, length in enumerate(bad.lengths)]
    q = rng.integers(cfg.input_min, cfg.input_max + 1, (bad.query_beats, cfg.lanes))
    return descs, _queries(cfg, q)


def _bits(shape, value):
    """The bits of ``value`` (a dict, list or int) under layout ``shape``: the same number as
    ``shape.const(value).as_bits()``, without building a constant (hundreds of thousands of beats
    per simulation)."""
    if isinstance(shape, data.StructLayout):
        return sum(_bits(field.shape, value[name]) << field.offset for name, field in shape)
    if isinstance(shape, data.ArrayLayout):
        width = Shape.cast(shape.elem_shape).width
        return sum(_bits(shape.elem_shape, item) << (i * width) for i, item in enumerate(value))
    return int(getattr(value, "value", value)) & ((1 << Shape.cast(shape).width) - 1)


def _load_bits(cfg, packed):
    """The ``i_load`` payloads (bits of :func:`load_layout`) of a packed job, ``last`` on the final
    one: the same values as ``load_layout(cfg).const(...)`` of every ``packed.writes()`` item,
    computed a column at a time (a job of a few thousand keys is a million words at ``tiny``)."""
    layout = load_layout(cfg)
    write = layout["write"].shape
    offset = lambda name: write[name].offset
    data_offset, elem_bits = offset("data"), cfg.input_bits
    mask = (1 << elem_bits) - 1
    head = lambda kind, core, base, addr: ((base << offset("base")) | (kind.value << offset("kind"))
                                           | (core << offset("bank")) | (addr << offset("addr")))
    bits = [head(kind, core, 1, packed.window_base[core]) for core in range(cfg.cores) for kind in Kind]
    for core in range(cfg.cores):
        words = packed.share_words(core)
        addr = np.arange(words).astype(object) << offset("addr")
        for kind, banks in ((Kind.K, packed.k_banks), (Kind.V, packed.v_banks)):
            elements = (np.asarray(banks[core][:words], dtype=np.int64) & mask).astype(object)
            value = np.zeros(words, dtype=object)
            for lane in range(cfg.lanes):
                value = value | (elements[:, lane] << (data_offset + lane * elem_bits))
            bits += list(value | addr | head(kind, core, 0, 0))
    bits[-1] |= 1 << layout["last"].offset
    return [int(b) for b in bits]


def _synthetic_writes(cfg, job):
    """``(i_load payloads, layout)`` of a job for the synthetic memory: only the window bases;
    the job's K and V must be the memory's elements (:func:`~leanattn.sim.synthkv.synthetic_job`)."""
    place = synthkv.layout(cfg, job.lengths)
    d = cfg.head_dim
    for h, n in enumerate(job.lengths):
        addr = np.arange(int(n) * d)
        if not (np.array_equal(np.asarray(job.k[h, :n]).reshape(-1),
                               synthkv.elements(place.k_base[h] + addr, cfg.input_bits))
                and np.array_equal(np.asarray(job.v[h, :n]).reshape(-1),
                                   synthkv.elements(place.v_base[h] + addr, cfg.input_bits))):
            raise ValueError(f"head {h} of a job for the synthetic memory holds other K or V than the "
                             f"memory serves (make the job with leanattn.sim.synthkv.synthetic_job)")
    layout = load_layout(cfg)
    writes = [{"write": {"base": 1, "kind": kind, "bank": core, "addr": window[core],
                         "data": [0] * cfg.lanes}, "last": 0}
              for core in range(cfg.cores)
              for kind, window in ((Kind.K, place.k_window), (Kind.V, place.v_window))]
    writes[-1]["last"] = 1
    return [_bits(layout, w) for w in writes], place


def system_vectors(cfg, jobs, *, bank_keys=None, synthetic=False):
    """Input and expected output streams (payload bits) of ``jobs`` (:class:`~leanattn.sim.job.Job`
    or :class:`BadJob`), run in order. Returns ``(inputs, outputs, results, bank_keys)``,
    ``results`` the golden :class:`~leanattn.sim.golden.Result` of each good job (None for a bad
    one). ``synthetic``: for the synthetic memory (:mod:`leanattn.sim.synthkv`): no data words,
    only window bases."""
    good = [job for job in jobs if not isinstance(job, BadJob)]
    if bank_keys is None and synthetic:
        bank_keys = max([synthkv.layout(cfg, job.lengths).bank_keys for job in good] or [1])
    elif bank_keys is None:
        bank_keys = max([bank_keys_for(cfg, job.lengths) for job in good] or [1])
    loads, descs, queries, outs, statuses, results = [], [], [], [], [], []
    for number, job in enumerate(jobs):
        if isinstance(job, BadJob):
            d, q = _bad_streams(cfg, job)
            writes = [load_layout(cfg).const({"write": {"base": 1, "kind": 0, "bank": 0, "addr": 0,
                                                        "data": [0] * cfg.lanes}, "last": 1}).as_bits()]
            error, result = job.error, None
        else:
            if synthetic:
                writes, packed = _synthetic_writes(cfg, job)
            else:
                packed = pack_kv(cfg, job.lengths, job.k, job.v, bank_keys=bank_keys)
                writes = _load_bits(cfg, packed)
            d, q = _descriptors(cfg, job, packed), _queries(cfg, job.q)
            result = golden.run(cfg, job)
            error = ERR_NONE
            for head, row in enumerate(result.out):
                beats = np.asarray(row).reshape(-1, cfg.lanes)
                outs += [{"job": number, "beat": {"head": head, "out": [int(x) for x in beat],
                                                  "last": int(i == len(beats) - 1)}}
                         for i, beat in enumerate(beats)]
        loads += writes
        descs += d
        queries += q
        statuses.append({"job": number, "error": error, "cycles": 0, "mem_error": 0})
        results.append(result)
    pack = lambda layout, items: [_bits(layout, item) for item in items]
    inputs = {"i_load": loads, "i_desc": pack(descriptor_layout(cfg), descs),
              "i_query": pack(query_layout(cfg), queries)}
    outputs = {"o_out": pack(tagged_output_layout(cfg), outs), "o_status": pack(status_layout(cfg), statuses)}
    return inputs, outputs, results, bank_keys


def canonical(cfg):
    """Output order is completion order: compare packets sorted by (job, head); status beats with
    their cycle counts cleared (checked on their own)."""
    out_layout, status = tagged_output_layout(cfg), status_layout(cfg)
    beat = out_layout["beat"].shape
    last_at = out_layout["beat"].offset + beat["last"].offset
    field = lambda offset, shape: lambda bits: (bits >> offset) & ((1 << Shape.cast(shape).width) - 1)
    job_of = field(out_layout["job"].offset, out_layout["job"].shape)
    head_of = field(out_layout["beat"].offset + beat["head"].offset, beat["head"].shape)

    def packets(items):
        groups, current = [], []
        for bits in items:
            current.append(bits)
            if (bits >> last_at) & 1:
                groups.append(current)
                current = []
        if current:
            groups.append(current)
        return [bits for g in sorted(groups, key=lambda g: (job_of(g[0]), head_of(g[0]))) for bits in g]

    cycles = status["cycles"]
    mask = ~(((1 << cycles.width) - 1) << cycles.offset)
    return {"o_out": packets, "o_status": lambda items: [bits & mask for bits in items]}


def job_cycles(cfg, build_dir, run=0):
    """Each job's cycle count, from the status log of run ``run`` of the last :func:`run_system`."""
    field_ = status_layout(cfg)["cycles"]
    cycles = []
    for line in (Path(build_dir) / "xfer_o_status.txt").read_text().splitlines():
        number, payload, _ = line.split()
        if int(number) == run:
            cycles.append(int(payload, 16) >> field_.offset & ((1 << field_.width) - 1))
    return cycles


def read_outputs(cfg, build_dir, heads, *, job=0, run=0):
    """The output integers ``(heads, head_dim)`` of job ``job`` that the RTL sent in run ``run``
    (from the transfer log; a head that never came out stays at 0)."""
    layout = tagged_output_layout(cfg)
    out = np.zeros((heads, cfg.head_dim), dtype=np.int64)
    beat = {}
    path = Path(build_dir) / "xfer_o_out.txt"
    for line in (path.read_text().splitlines() if path.exists() else []):
        number, payload, _ = line.split()
        item = layout.from_bits(int(payload, 16))
        if int(number) != run or item.job != job or item.beat.head >= heads:
            continue
        h = item.beat.head
        b = beat.get(h, 0)
        if b < cfg.beats_per_key:
            out[h, b * cfg.lanes:(b + 1) * cfg.lanes] = [int(x) for x in item.beat.out]
        beat[h] = 0 if item.beat.last else b + 1
    return out


def run_system(cfg, jobs, *, simulator, build_dir, latency=0, stall_rate=0, patterns=(("none", "none"),),
               seed=None, waves=False, bank_keys=None, top=None, extra_sources=None, synthetic=False,
               partial_slices=False, request_slices=False, registered_grant=False, platform=None):
    """Run ``jobs`` through the generated accelerator; raise on any difference from the golden model.
    Returns ``(golden results, cycles per job of the first pattern, the cocotb run)``.

    ``top`` and ``extra_sources`` put another accelerator in :class:`SystemBench` (its ``top``)
    and give the Verilog files it needs (:func:`~leanattn.sim.cocotb_util.run_cocotb`); default:
    the generated RTL. ``synthetic``: the KV memory computes every element from its address
    (:mod:`leanattn.sim.synthkv`; long contexts without loading them), for jobs made with
    :func:`~leanattn.sim.synthkv.synthetic_job`. ``partial_slices``: the generated RTL with a
    register slice behind every core's partial (``LeanAttention(cfg, partial_slices=True)``);
    ``request_slices``: with one on every core's K and V requests (``request_slices=True``);
    ``registered_grant``: with the packet arbiter's grant in a register (``registered_grant=True``).
    ``platform``: the bench elaborated for it (:class:`leanattn.hdl.dsp.ECP5`: the multipliers
    in MULT18X18D blocks; give their model, :func:`~leanattn.hdl.dsp.write_mult18x18d_model`, in
    ``extra_sources``)."""
    build_dir = Path(build_dir)
    inputs, outputs, results, bank_keys = system_vectors(cfg, jobs, bank_keys=bank_keys,
                                                         synthetic=synthetic)
    bench = SystemBench(cfg, bank_keys=bank_keys, latency=latency, stall_rate=stall_rate, top=top,
                        memory=synthkv.synthetic_memory if synthetic else None, partial_slices=partial_slices,
                        request_slices=request_slices, registered_grant=registered_grant)
    # Without loads (synthetic memory) few items drive long runs: allow 8 cycles per key and core
    # beat on top of the per-item budget, for stalls and latency.
    work = sum(8 * int(np.sum(job.lengths)) * cfg.beats_per_key + 4000 for job in jobs)
    run = run_cocotb_bench(bench, toplevel="system", inputs=inputs, outputs=outputs, simulator=simulator,
                           build_dir=build_dir, patterns=list(patterns), seed=seed, waves=waves,
                           canonical=canonical(cfg), extra_sources=extra_sources, budget=work,
                           platform=platform)
    return results, job_cycles(cfg, build_dir), run
