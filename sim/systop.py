"""The system under test: the accelerator with its reference KV memory, made slow and irregular.

:class:`SystemBench` is simulation-only hardware. It wires :class:`~leanattn.hdl.top.LeanAttention`
to :class:`~leanattn.hdl.kvmem.KVMemory` through a :class:`~leanattn.sim.streamgates.StallGate` on
every request and response stream and a :class:`~leanattn.sim.streamgates.Delay` on every response,
and runs jobs one after another from three input streams, alternating two phases:

* **load**: KV memory writes pass until the one marked ``last`` (a job's KV cache);
* **run**: the job's descriptors and queries pass to the accelerator until it signals ``done``;
  then one status beat (job number, error code, cycles, memory error) leaves on ``o_status``.

Output beats leave tagged with the job number. Every stream is a plain stream port, so the
generated Verilog harness (:mod:`leanattn.sim.harness`) can play hundreds of jobs with no per-cycle
Python.
"""

from amaranth.hdl import Module, Signal, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from ..hdl.jobload import ERROR_BITS
from ..hdl.kvmem import KVMemory, kv_write_layout
from ..hdl.layouts import output_layout
from ..hdl.ports import descriptor_layout, kv_data_layout, kv_request_layout, query_layout
from ..hdl.top import LeanAttention, cycle_bits
from .streamgates import Delay, StallGate

__all__ = ["SystemBench", "load_layout", "tagged_output_layout", "status_layout", "JOB_BITS"]

#: Width of the job number on tagged outputs and status beats.
JOB_BITS = 16


def load_layout(cfg):
    """One KV memory write; ``last`` ends a job's load."""
    return data.StructLayout({"write": kv_write_layout(cfg), "last": 1})


def tagged_output_layout(cfg):
    """An output beat with the number of its job."""
    return data.StructLayout({"job": unsigned(JOB_BITS), "beat": output_layout(cfg)})


def status_layout(cfg):
    """The end of one job."""
    return data.StructLayout({
        "job":       unsigned(JOB_BITS),
        "error":     unsigned(ERROR_BITS),
        "cycles":    unsigned(cycle_bits(cfg)),
        "mem_error": 1,
    })


class SystemBench(wiring.Component):
    """Accelerator + KV memory + latency and stalls on every memory stream.

    Parameters
    ----------
    cfg : AttentionConfig
    bank_keys : int
        Keys per KV memory bank (:func:`leanattn.sim.packer.bank_keys_for`).
    latency : int
        Extra cycles on every response stream (register slices).
    stall_rate : int
        Stall probability of every request and response stream, in 1/256.
    seed : int
        Seeds the stall generators (each stream its own).
    top : callable, optional
        ``top(cfg)`` makes the accelerator: a component with :class:`LeanAttention`'s signature
        (default ``LeanAttention``; for example a synthesized netlist in its place).
    partial_slices : bool
        The default top with a register slice behind every core's partial
        (``LeanAttention(cfg, partial_slices=True)``); not with ``top``.
    request_slices : bool
        The default top with a register slice on every core's K and V requests
        (``LeanAttention(cfg, request_slices=True)``); not with ``top``.
    registered_grant : bool
        The default top with the packet arbiter's grant in a register
        (``LeanAttention(cfg, registered_grant=True)``); not with ``top``.
    memory : callable, optional
        ``memory(cfg, bank_keys=bank_keys)`` makes the KV memory: a component with
        :class:`KVMemory`'s signature (default ``KVMemory``; for example
        :func:`leanattn.sim.synthkv.synthetic_memory`).
    """

    def __init__(self, cfg, *, bank_keys, latency=0, stall_rate=0, seed=1, top=None, memory=None,
                 partial_slices=False, request_slices=False, registered_grant=False):
        options = {"partial_slices": partial_slices, "request_slices": request_slices,
                   "registered_grant": registered_grant}
        for name, value in options.items():
            if not isinstance(value, bool):
                raise TypeError(f"{name} must be a bool, not {value!r}")
            if value and top is not None:
                raise ValueError(f"{name} applies to the default top only; with top, make it "
                                 "part of top(cfg)")
        self._cfg, self._bank_keys = cfg, bank_keys
        if top is None:
            def top(cfg):
                return LeanAttention(cfg, **options)
        self._top = top
        self._memory = KVMemory if memory is None else memory
        self._latency, self._rate, self._seed = latency, stall_rate, seed
        super().__init__({
            "i_load":   In(stream.Signature(load_layout(cfg))),
            "i_desc":   In(stream.Signature(descriptor_layout(cfg))),
            "i_query":  In(stream.Signature(query_layout(cfg))),
            "o_out":    Out(stream.Signature(tagged_output_layout(cfg))),
            "o_status": Out(stream.Signature(status_layout(cfg))),
        })

    def elaborate(self, platform):
        cfg = self._cfg
        m = Module()
        m.submodules.top = top = self._top(cfg)
        m.submodules.mem = mem = self._memory(cfg, bank_keys=self._bank_keys)
        self._memory_paths(m, top, mem)

        # --- phases ------------------------------------------------------------------------------
        job = Signal(JOB_BITS)
        running = Signal()
        m.d.comb += [
            mem.i_write.payload.eq(self.i_load.payload.write),
            # A new load waits for the previous job's status to be taken: no status is lost.
            mem.i_write.valid.eq(self.i_load.valid & ~running & ~self.o_status.valid),
            self.i_load.ready.eq(mem.i_write.ready & ~running & ~self.o_status.valid),
        ]
        with m.If(self.i_load.valid & self.i_load.ready & self.i_load.payload.last):
            m.d.sync += running.eq(1)
        m.d.comb += mem.i_clear.eq(self.i_load.valid & self.i_load.ready & self.i_load.payload.last)
        for name in ("i_desc", "i_query"):
            outer, inner = getattr(self, name), getattr(top, name)
            # Not in the cycle of o_done either: the next job's inputs wait for its KV load.
            gate = running & ~top.o_done
            m.d.comb += [inner.payload.eq(outer.payload), inner.valid.eq(outer.valid & gate),
                         outer.ready.eq(inner.ready & gate)]

        # --- outputs: tagged beats, and one status beat per job ------------------------------------
        m.d.comb += [self.o_out.payload.job.eq(job), self.o_out.payload.beat.eq(top.o_out.payload),
                     self.o_out.valid.eq(top.o_out.valid), top.o_out.ready.eq(self.o_out.ready)]
        mem_error = Signal()
        with m.If(mem.o_error):
            m.d.sync += mem_error.eq(1)
        status = self.o_status
        with m.If(status.valid & status.ready):
            m.d.sync += status.valid.eq(0)
        with m.If(top.o_done):
            report = status.payload
            m.d.sync += [status.valid.eq(1), report.job.eq(job), report.error.eq(top.o_error),
                         report.cycles.eq(top.o_cycles), report.mem_error.eq(mem_error | mem.o_error),
                         job.eq(job + 1), running.eq(0), mem_error.eq(0)]
        return m

    def _memory_paths(self, m, top, mem):
        """Request: accelerator -> gate -> memory. Response: memory -> delay -> gate -> accelerator."""
        cfg = self._cfg
        seed = self._seed
        for c in range(cfg.cores):
            for kind in ("k", "v"):
                seed = (seed * 1103515245 + 12345) % (1 << 31) or 1
                gate = StallGate(shape=kv_request_layout(cfg), rate=self._rate, seed=seed)
                m.submodules[f"{kind}req_gate_{c}"] = gate
                wiring.connect(m, getattr(top, f"o_{kind}req_{c}"), gate.i_data)
                wiring.connect(m, gate.o_data, getattr(mem, f"i_{kind}req_{c}"))
                seed = (seed * 1103515245 + 12345) % (1 << 31) or 1
                delay = Delay(shape=kv_data_layout(cfg), cycles=self._latency)
                gate = StallGate(shape=kv_data_layout(cfg), rate=self._rate, seed=seed)
                m.submodules[f"{kind}_delay_{c}"] = delay
                m.submodules[f"{kind}_gate_{c}"] = gate
                wiring.connect(m, getattr(mem, f"o_{kind}_{c}"), delay.i_data)
                wiring.connect(m, delay.o_data, gate.i_data)
                wiring.connect(m, gate.o_data, getattr(top, f"i_{kind}_{c}"))
