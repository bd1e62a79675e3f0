"""The decode-attention accelerator: stream-K over ``cores`` cores, reduction tree, normalizer.

:class:`LeanAttention` is the generated top. A job flows through it as follows:

1. :class:`~leanattn.hdl.jobload.JobLoader` takes the descriptors and queries, checks them and
   stores them (descriptors in the scheduler and in the output-scale memory, query beats in every
   core's query buffer). A bad job ends here: error code, ``done``, no output.
2. :class:`~leanattn.hdl.schedule.Scheduler` splits the job's keys into equal contiguous shares and
   feeds each :class:`~leanattn.hdl.core.AttentionCore` its segments; the cores read K and V through
   their own ports and emit one partial state per segment.
3. A partial of a head that lies wholly inside one core is final; a partial of a cut head goes to
   the :class:`~leanattn.hdl.tree.ReductionTree`, which merges the partials of each cut head in the
   golden model's fixed pairing.
4. Final states from the cores and from the tree are interleaved packet by packet, given their
   head's output scale and normalized into the output integers.

The job is done when every head's last output beat has left; then the next job may load.
"""

from amaranth.hdl import Module, Mux, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.fifo import SyncFIFO
from amaranth.lib.wiring import In, Out

from .config import bits_for
from .core import AttentionCore
from .finish import PacketArbiter, ScaleLookup
from .jobload import ERROR_BITS, JobLoader
from .layouts import output_layout, partial_layout, routed_partial_layout, tree_partial_layout
from .normalize import Normalizer
from .pipeline import check_unit_args
from .ports import descriptor_layout, kv_data_layout, kv_request_layout, query_layout
from .schedule import Scheduler
from .skid import MemorySlice, PipeRegister, through_skid
from .tree import ReductionTree

__all__ = ["LeanAttention", "cycle_bits", "RTL_SCHEDULES"]

#: The schedules (``cfg.schedule``) the generated hardware implements; the golden model and the
#: cycle model know every schedule of :data:`leanattn.hdl.config.SCHEDULES`.
RTL_SCHEDULES = ("lean", "fa2", "flashdecoding")


def cycle_bits(cfg):
    """Width of the cycle counter: four times a whole job's keys on one core; it saturates."""
    return bits_for(4 * cfg.max_heads * cfg.max_context * cfg.beats_per_key)


class LeanAttention(wiring.Component):
    """Decode attention for a job of up to ``max_heads`` heads over ``cores`` cores.

    Parameters
    ----------
    cfg : AttentionConfig
    partial_slices : bool
        A register slice (:class:`~leanattn.hdl.skid.MemorySlice`: a skid buffer's cycles, its
        two entries in distributed RAM, so the arbiter's or the leaf buffer's take moves a pointer,
        not an enable per payload bit; ``partial_slice_<c>``) behind every core's ``o_partial``.
        The route of a partial beat (to the tree's leaf buffer for a
        head cut across cores, else on to the arbiter) is decided in front of the slice, from
        the core's ``o_partial`` and the scheduler's ``o_cross`` (``o_split``), and travels
        through it as one more registered payload bit (``routed_partial_layout(cfg)``). A core's
        partial register then sees only the slice's registered ``ready``, and the slice's output
        only the arbiter's grant or the leaf buffer's ``ready``, not the cut test across the die
        (on the ECP5 the critical path of the two-core top). The route so taken early is the one
        taken late: ``o_cross`` and ``o_split`` are set when a job's scan ends, before its first
        segment, and held until the next job's scan, which starts after the job's last output
        beat, when every partial beat of the job has left its slice. Each partial beat reaches
        the routing one cycle later, at full throughput; outputs are bit for bit the same.
        ``o_cycles`` moves by a few cycles (one for a lone head; a core whose partial waits hands
        the slice two beats before it stalls, so some jobs end sooner):
        :func:`leanattn.sim.perf.predict` with ``partial_slices=True`` counts them exactly.
        Default off: every slice costs twice a partial's width (and the flag) in memory bits and
        its logic, and the iCE40 has no logic cells to spare.
    request_slices : bool
        A register slice (:class:`~leanattn.hdl.skid.SkidBuffer`, ``kreq_slice_<c>`` and
        ``vreq_slice_<c>``) on every core's ``o_kreq`` and ``o_vreq``, between the head of the
        core's request queue and the port: a request then leaves flip-flops, and the queue sees
        only the slice's registered ``ready``, not the memory's request logic across the die (on
        the ECP5 the critical path of the two-core top after the partial slices: a core's V
        request into the bank's word offset, window end and checks in one cycle). Each request
        reaches the memory one cycle later, at full throughput; outputs are bit for bit the same.
        ``o_cycles`` grows by one on most jobs (each core's first K and V requests; the slice
        holds two requests, so the later ones still reach the bank in time), by two or three on
        some jobs of short heads at long memory latencies: :func:`leanattn.sim.perf.predict`
        with ``request_slices=True`` counts them exactly.
        Default off: every slice costs twice a request's width (``kv_request_layout(cfg)``) in
        flip-flops, two slices per core.
    registered_grant : bool
        The packet arbiter's grant a register (:class:`~leanattn.hdl.finish.PacketArbiter` with
        ``registered_grant=True``): the arbiter's output registers are loaded from the input the
        register selects, so the cores' and the tree's ``valid`` (from all over the die) no
        longer decide the grant, the select and the enable of those registers in one cycle (on
        the ECP5 the critical path of the two-core top after the partial and request slices).
        Outputs are bit for bit the same. A packet from an input other than the one the grant
        rests on, offered while the arbiter idles, leaves a cycle later (the grant moves first),
        and the order of packets offered together may differ: :func:`leanattn.sim.perf.predict`
        with ``registered_grant=True`` counts the cycles exactly. About the logic of the
        combinational grant (at ``default``, three inputs, alone: 696 LUT4s against 717); default
        off so that the cycles of the combinational grant stay the reference. Has no effect on
        one core with the compact pipeline, which has no arbiter.

    Members
    -------
    i_desc : ``In(stream.Signature(descriptor_layout(cfg)))``
        One descriptor per head (flattened ``b*H + h``), ``last`` on the job's final head.
    i_query : ``In(stream.Signature(query_layout(cfg)))``
        ``head_dim // lanes`` beats per head, heads in order, ``last`` on the job's final beat.
    o_kreq_<c>, o_vreq_<c> : ``Out(stream.Signature(kv_request_layout(cfg)))``
        Core ``c``'s K and V read requests (``c = 0 .. cores-1``), at most
        ``AttentionCore.outstanding`` unanswered per port.
    i_k_<c>, i_v_<c> : ``In(stream.Signature(kv_data_layout(cfg)))``
        The answers, in request order, any latency.
    o_out : ``Out(stream.Signature(output_layout(cfg)))``
        ``head_dim // lanes`` beats of ``lanes`` output integers per head, tagged with the head;
        heads in the order they finish.
    o_busy : ``Out(1)``
        From a job's first input transfer until it is done.
    o_done : ``Out(1)``
        A one-cycle pulse the cycle after a job ends (its last output beat, or its rejection);
        ``o_busy``, ``o_error`` and ``o_cycles`` already show the finished job.
    o_error : ``Out(ERROR_BITS)``
        The last job's error code (:mod:`leanattn.hdl.jobload`), 0 for a good job.
    o_cycles : ``Out(cycle_bits(cfg))``
        Cycles of the last job, from its first input transfer to its end, both counted: the
        cycle of the last output beat (saturating).

    Latency and throughput: see ``docs/units.md`` (the cycle formula of a job).
    Numerics: bit-exact with :func:`leanattn.sim.golden.run`.
    """

    @staticmethod
    def cycle_constants(cfg):
        """``(A, B)`` of the cycle bound (see :meth:`cycle_bound`), from the configuration.

        * ``A``, once per job: the last tile's PV pass after its QK pass and the first tile's fill
          (``2 * tile * bpk``), the normalizer draining one finished head per core and the tree's
          (``(cores + 2) * norm_cycles * bpk``), the merge levels, scan, memory and pipeline
          latencies (``64 * (tree_levels + 2)``);
        * ``B``, per ``ceil(heads / cores)``: each head's query beats (``bpk``), its segment's
          partial and the gap between segments on a core (``bpk + 8``) and its normalization
          (``norm_cycles * bpk``), times ``cores`` since short heads may all sit in one core.

        A bound, checked on every job the tests run; not yet an exact formula.

        ``bpk = head_dim // lanes``.
        """
        bpk = cfg.beats_per_key
        a = 2 * cfg.tile * bpk + (cfg.cores + 2) * cfg.norm_cycles * bpk + 64 * (cfg.tree_levels + 2)
        b = cfg.cores * ((cfg.norm_cycles + 2) * bpk + 8)
        return a, b

    @classmethod
    def cycle_bound(cls, cfg, lengths):
        """The most cycles a good job of head lengths ``lengths`` takes with no stalls, from its
        first input transfer to its last output beat: ``1.05 * ideal + A + B * ceil(heads /
        cores)``, ``ideal = sum(lengths) * head_dim / (lanes * cores)``."""
        a, b = cls.cycle_constants(cfg)
        ideal = sum(int(n) for n in lengths) * cfg.beats_per_key / cfg.cores
        return 1.05 * ideal + a + b * -(-len(lengths) // cfg.cores)

    def __init__(self, cfg, *, partial_slices=False, request_slices=False, registered_grant=False):
        check_unit_args(cfg, 0)
        if cfg.schedule not in RTL_SCHEDULES:
            raise ValueError(f"schedule must be one of {', '.join(RTL_SCHEDULES)} for the hardware "
                             f"(the golden and cycle models also know the others), not {cfg.schedule!r}")
        if not isinstance(partial_slices, bool):
            raise TypeError(f"partial_slices must be a bool, not {partial_slices!r}")
        if not isinstance(request_slices, bool):
            raise TypeError(f"request_slices must be a bool, not {request_slices!r}")
        if not isinstance(registered_grant, bool):
            raise TypeError(f"registered_grant must be a bool, not {registered_grant!r}")
        self._cfg = cfg
        self._registered_grant = registered_grant
        self._partial_slices = partial_slices
        self._request_slices = request_slices
        members = {
            "i_desc":  In(stream.Signature(descriptor_layout(cfg))),
            "i_query": In(stream.Signature(query_layout(cfg))),
        }
        for c in range(cfg.cores):
            members[f"o_kreq_{c}"] = Out(stream.Signature(kv_request_layout(cfg)))
            members[f"i_k_{c}"]    = In(stream.Signature(kv_data_layout(cfg)))
            members[f"o_vreq_{c}"] = Out(stream.Signature(kv_request_layout(cfg)))
            members[f"i_v_{c}"]    = In(stream.Signature(kv_data_layout(cfg)))
        members.update({
            "o_out":    Out(stream.Signature(output_layout(cfg))),
            "o_busy":   Out(1),
            "o_done":   Out(1),
            "o_error":  Out(ERROR_BITS),
            "o_cycles": Out(cycle_bits(cfg)),
        })
        super().__init__(members)

    @property
    def partial_slices(self):
        """Whether every core's partial leaves through a register slice (see the parameter)."""
        return self._partial_slices

    @property
    def request_slices(self):
        """Whether every core's K and V requests leave through register slices (see the parameter)."""
        return self._request_slices

    @property
    def registered_grant(self):
        """Whether the packet arbiter's grant is a register (see the parameter)."""
        return self._registered_grant

    def elaborate(self, platform):
        cfg = self._cfg
        m = Module()
        m.submodules.loader = loader = JobLoader(cfg)
        m.submodules.sched  = sched  = Scheduler(cfg)
        m.submodules.scales = scales = ScaleLookup(cfg)
        cores = [AttentionCore(cfg) for _ in range(cfg.cores)]
        for c, core in enumerate(cores):
            m.submodules[f"core_{c}"] = core

        # --- loading: the job's inputs, descriptors to both memories, queries to every core ------
        wiring.connect(m, wiring.flipped(self.i_desc), loader.i_desc)
        wiring.connect(m, wiring.flipped(self.i_query), loader.i_query)
        dwrite = self._write_slice(m, "dwrite", loader.o_dwrite)
        for sink in (sched.i_dwrite, scales.i_dwrite):
            m.d.comb += [sink.valid.eq(dwrite.valid), sink.payload.eq(dwrite.payload)]
        m.d.comb += dwrite.ready.eq(sched.i_dwrite.ready & scales.i_dwrite.ready)
        qwrite = self._write_slice(m, "qwrite", loader.o_qwrite)
        for core in cores:
            m.d.comb += [core.i_qwrite.valid.eq(qwrite.valid), core.i_qwrite.payload.eq(qwrite.payload)]
        m.d.comb += qwrite.ready.eq(_all(core.i_qwrite.ready for core in cores))

        # --- the cores and their memory ports -----------------------------------------------------
        for c, core in enumerate(cores):
            wiring.connect(m, getattr(sched, f"o_seg_{c}"), core.i_seg)
            for kind, req in (("k", core.o_kreq), ("v", core.o_vreq)):
                req = self._request(m, kind, c, req)
                wiring.connect(m, req, wiring.flipped(getattr(self, f"o_{kind}req_{c}")))
            wiring.connect(m, wiring.flipped(getattr(self, f"i_k_{c}")), core.i_k)
            wiring.connect(m, wiring.flipped(getattr(self, f"i_v_{c}")), core.i_v)

        # --- finished heads: routed, merged, arbitrated, scaled, normalized -----------------------
        finals = self._route(m, sched, cores)
        wiring.connect(m, self._arbitrate(m, finals), scales.i_partial)
        final = self._final_slice(m, scales.o_final)
        m.submodules.norm = norm = Normalizer(cfg)
        wiring.connect(m, final, norm.i_final)
        wiring.connect(m, norm.o_out, wiring.flipped(self.o_out))

        self._control(m, loader, sched)
        return m

    def _write_slice(self, m, kind, source):
        """The loader's ``kind`` writes (``"dwrite"``: descriptors to the scheduler and the scale
        lookup; ``"qwrite"``: query beats to every core) on their way across the die: with the
        full pipeline through a :class:`~leanattn.hdl.skid.PipeRegister` (``<kind>_slice``),
        straight with the compact one. The memories they write are always ready, so the register
        is a plain pipeline stage (no ``ready`` logic) and costs no cycle: a job's descriptors
        and queries are read only after its report, two cycles after its last input beat, and a
        write lands one cycle after that beat."""
        if self._cfg.pipeline == "compact":
            return source
        m.submodules[f"{kind}_slice"] = pipe = PipeRegister(shape=source.payload.shape())
        wiring.connect(m, source, pipe.i_data)
        return pipe.o_data

    def _arbitrate(self, m, finals):
        """The streams of final states as one, packet by packet: the arbiter's output; with the
        compact pipeline a lone stream (one core) goes on without it (an arbiter of one input is
        only a register)."""
        if len(finals) == 1 and self._cfg.pipeline == "compact":
            return finals[0]
        m.submodules.arbiter = arbiter = PacketArbiter(shape=partial_layout(self._cfg), count=len(finals),
                                                       registered_grant=self._registered_grant)
        for n, source in enumerate(finals):
            wiring.connect(m, source, getattr(arbiter, f"i_{n}"))
        return arbiter.o_data

    def _final_slice(self, m, final):
        """The scale lookup's output on its way to the normalizer: through a skid buffer, or
        straight with the compact pipeline (the normalizer's ``ready`` then reaches back to the
        arbiter in the same cycle, as a slow clock allows)."""
        return through_skid(m, "final_skid", final, on=self._cfg.pipeline != "compact")

    def _request(self, m, kind, c, req):
        """Core ``c``'s ``kind`` (``"k"`` or ``"v"``) request stream: the core's own, or with
        ``request_slices`` the output of a register slice behind it."""
        return through_skid(m, f"{kind}req_slice_{c}", req, on=self._request_slices)

    def _partials(self, m, sched, cores):
        """Each core's partials with their routes: streams of ``routed_partial_layout(cfg)``, each
        beat with ``cut`` from its head (:meth:`_is_cut`) as it leaves the core; with
        ``partial_slices`` the output of a register slice behind the core, which registers the
        flag with the partial."""
        return [self._slice(m, c, self._routed(m, sched, c, core.o_partial))
                for c, core in enumerate(cores)]

    def _routed(self, m, sched, c, part):
        """Core ``c``'s stream of partials ``part`` as a stream of ``routed_partial_layout(cfg)``:
        ``part``'s beats and ``ready``, and each beat's ``cut`` (:meth:`_is_cut` of its head)."""
        routed = stream.Signature(routed_partial_layout(self._cfg)).create(path=(f"routed_{c}",))
        m.d.comb += [
            routed.valid.eq(part.valid), part.ready.eq(routed.ready),
            routed.payload.partial.eq(part.payload),
            routed.payload.cut.eq(self._is_cut(sched, c, part.payload.head)),
        ]
        return routed

    def _slice(self, m, c, source):
        """Core ``c``'s stream ``source`` (its partials, routed or not): itself, or with
        ``partial_slices`` the output of a register slice behind it, ``partial_slice_<c>``."""
        return through_skid(m, f"partial_slice_{c}", source, on=self._partial_slices, kind=MemorySlice)

    def _route(self, m, sched, cores):
        """Each core's partials to the tree (cut heads) or straight on (whole heads); returns the
        streams of final states: one per core, then the tree's root. One core has no cut heads:
        its partials go straight on."""
        cfg = self._cfg
        if cfg.cores == 1:
            return [self._slice(m, 0, cores[0].o_partial)]
        m.submodules.tree = tree = ReductionTree(cfg)
        if cfg.schedule != "flashdecoding":
            m.d.comb += tree.i_cross.eq(sched.o_cross)
        elif cfg.head_chunks > 1:
            m.d.comb += tree.i_split.eq(sched.o_split)
        finals = []
        for c, part in enumerate(self._partials(m, sched, cores)):
            cut = Signal(name=f"cut_{c}")
            beat = part.payload.partial
            m.d.comb += cut.eq(part.payload.cut)
            # A core's first partial may be cut: it waits in the tree until the core on its left
            # has finished its share. A buffer of one whole partial per leaf lets the core go on
            # meanwhile (under lean its only other cut partial is its last).
            # Each beat enters with its merge bit for the tree's first level. The buffer reads
            # asynchronously (distributed RAM on an FPGA) and has no output register: the node's
            # take (its inputs' ready) reaches only the buffer's pointer and level, and the node's
            # own take registers load the front beat as it is.
            buffer = SyncFIFO(width=tree_partial_layout(cfg).size, depth=cfg.beats_per_key)
            m.submodules[f"leaf_buffer_{c}"] = buffer
            tree_in = getattr(tree, f"i_leaf_{c}")
            m.d.comb += [tree_in.payload.eq(buffer.r_stream.payload), tree_in.valid.eq(buffer.r_stream.valid),
                         buffer.r_stream.ready.eq(tree_in.ready)]
            leaf = buffer.w_stream
            local = stream.Signature(partial_layout(cfg)).create(path=(f"local_{c}",))
            tagged = Signal(tree_partial_layout(cfg), name=f"leaf_beat_{c}")
            m.d.comb += [
                tagged.partial.eq(beat), tagged.merge.eq(tree.leaf_merge(c, beat.head)),
                leaf.payload.eq(tagged), local.payload.eq(beat),
                leaf.valid.eq(part.valid & cut), local.valid.eq(part.valid & ~cut),
                part.ready.eq(Mux(cut, leaf.ready, local.ready)),
            ]
            finals.append(local)
        return finals + [tree.o_partial]

    def _is_cut(self, sched, core, head):
        """Whether core ``core``'s partial of ``head`` goes to the tree: ``lean``, the head crosses
        one of the core's boundaries; ``flashdecoding``, it has more than one key (a chunk on a
        second core); ``fa2``, never."""
        cfg = self._cfg
        if cfg.schedule == "flashdecoding":
            return sched.o_split[0].bit_select(head, 1) if cfg.head_chunks > 1 else 0
        crossings = [sched.o_cross[b - 1] for b in (core, core + 1) if 1 <= b < cfg.cores]
        return _any(x.valid & (x.head == head) for x in crossings)

    def _control(self, m, loader, sched):
        """Job control: start a loaded job or reject it, count finished heads, status."""
        cfg = self._cfg
        running   = Signal()
        heads_out = Signal(range(cfg.max_heads + 1))     # heads still to leave o_out
        counter   = Signal(cycle_bits(cfg))
        limit     = (1 << cycle_bits(cfg)) - 1
        report    = loader.o_job.payload

        m.d.comb += loader.i_enable.eq(~running)
        m.d.comb += [sched.i_job.payload.heads.eq(report.heads), sched.i_job.payload.total.eq(report.total)]
        with m.If(report.error != 0):
            m.d.comb += loader.o_job.ready.eq(~running)
        with m.Else():
            m.d.comb += [sched.i_job.valid.eq(loader.o_job.valid & ~running),
                         loader.o_job.ready.eq(~running & sched.i_job.ready)]

        # --- busy and the cycle counter: from the first input transfer to done -------------------
        started = (self.i_desc.valid & self.i_desc.ready) | (self.i_query.valid & self.i_query.ready)
        finish = Signal()       # the job ends at this edge; o_done follows with the status updated
        with m.If(self.o_busy & (counter != limit)):
            m.d.sync += counter.eq(counter + 1)
        with m.Elif(~self.o_busy & started):
            m.d.sync += [self.o_busy.eq(1), counter.eq(1)]

        # --- a job ends when rejected, or when its last head has left --------------------------------
        with m.If(loader.o_job.valid & loader.o_job.ready):
            with m.If(report.error != 0):
                m.d.comb += finish.eq(1)
            with m.Else():
                m.d.sync += [running.eq(1), heads_out.eq(report.heads)]
            m.d.sync += self.o_error.eq(report.error)
        with m.If(running & self.o_out.valid & self.o_out.ready & self.o_out.payload.last):
            m.d.sync += heads_out.eq(heads_out - 1)
            with m.If(heads_out == 1):
                m.d.comb += finish.eq(1)
                m.d.sync += running.eq(0)
        m.d.sync += self.o_done.eq(finish)
        with m.If(finish):
            m.d.sync += [self.o_busy.eq(0), self.o_cycles.eq(counter)]
        return m


def _all(values):
    result = 1
    for v in values:
        result = result & v
    return result


def _any(values):
    result = 0
    for v in values:
        result = result | v
    return result
