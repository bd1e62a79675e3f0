"""The stream-K scheduler: a loaded job's heads split into equal contiguous shares, one per core.

:class:`Scheduler` holds the descriptor memory. For each job it

1. **scans** the heads once (one head per cycle), finding for every core the head and key where its
   share starts -- core ``c`` takes global keys ``[b[c], b[c+1])`` with ``b[c] = c*q + min(c, r)``,
   ``total = q * cores + r`` (:func:`leanattn.sim.partition.core_bounds`) -- and which head, if any,
   crosses each core boundary (``o_cross``, for the reduction tree and the partial routing);
2. hands each core's :class:`SegmentGen` its start; the generators then walk their shares in
   parallel, one segment (the piece of one head inside the share) every two cycles, exactly the
   segments of :func:`leanattn.sim.partition.partition`.
"""

from amaranth.hdl import Module, Mux, Signal, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory, ReadPort
from amaranth.lib.wiring import In, Out

from .config import bits_for, ceil_log2
from .jobload import descriptor_write_layout, total_bits
from .pipeline import check_unit_args
from .ports import cross_layout, segment_layout

__all__ = ["Scheduler", "SegmentGen", "start_layout", "scan_job_layout"]


def head_layout(cfg):
    """What the scheduler keeps of a descriptor."""
    return data.StructLayout({
        "length":      unsigned(cfg.length_bits),
        "k_base":      unsigned(cfg.kv_addr_bits),
        "v_base":      unsigned(cfg.kv_addr_bits),
        "score_mant":  unsigned(cfg.scale_bits),
        "score_shift": unsigned(cfg.score_shift_bits),
    })


def start_layout(cfg):
    """Where one core's share starts (head, key inside it) and how many keys it holds."""
    return data.StructLayout({
        "head":   unsigned(cfg.head_index_bits),
        "offset": unsigned(cfg.length_bits),
        "keys":   unsigned(total_bits(cfg)),
    })


def scan_job_layout(cfg):
    """A job to schedule: its number of heads and total keys."""
    return data.StructLayout({
        "heads": unsigned(bits_for(cfg.max_heads)),
        "total": unsigned(total_bits(cfg)),
    })


def _read_port_signature(cfg):
    return ReadPort.Signature(addr_width=cfg.head_index_bits, shape=head_layout(cfg))


class SegmentGen(wiring.Component):
    """Walks one core's share: from ``(head, offset)``, ``keys`` keys, one segment per head.

    Members
    -------
    i_start : ``In(stream.Signature(start_layout(cfg)))``
        The share; ``keys == 0`` (an idle core) gives no segment. Taken only while idle.
    desc : ``In(ReadPort.Signature(...))``
        A read port of the descriptor memory (this unit drives the address).
    o_seg : ``Out(stream.Signature(segment_layout(cfg)))``
        ``keys = min(length - offset, left)`` keys of each head in turn, from ``k_base +
        offset * head_dim`` (offset 0 after the first head).

    Latency: the first segment is valid 2 cycles after the start transfer.
    Throughput: one segment every 2 cycles (a descriptor read, then the segment).
    """

    def __init__(self, cfg):
        check_unit_args(cfg, 0)
        self._cfg = cfg
        super().__init__({
            "i_start": In(stream.Signature(start_layout(cfg))),
            "desc":    In(_read_port_signature(cfg)),
            "o_seg":   Out(stream.Signature(segment_layout(cfg))),
        })

    def elaborate(self, platform):
        cfg = self._cfg
        m = Module()
        head   = Signal(cfg.head_index_bits)
        offset = Signal(cfg.length_bits)
        left   = Signal(total_bits(cfg))
        m.d.comb += self.desc.addr.eq(head)

        # --- this head's segment -----------------------------------------------------------------
        desc = self.desc.data
        rest = Signal(cfg.length_bits)
        keys = Signal(cfg.length_bits)
        seg  = self.o_seg.payload
        m.d.comb += [
            rest.eq(desc.length - offset),
            keys.eq(Mux(left < rest, left, rest)),
            seg.head.eq(head),
            seg.k_addr.eq(desc.k_base + offset * cfg.head_dim),
            seg.v_addr.eq(desc.v_base + offset * cfg.head_dim),
            seg.keys.eq(keys),
            seg.score_mant.eq(desc.score_mant),
            seg.score_shift.eq(desc.score_shift),
        ]

        # --- walk: read the head's descriptor, then emit its segment -----------------------------
        with m.FSM():
            with m.State("idle"):
                m.d.comb += self.i_start.ready.eq(1)
                with m.If(self.i_start.valid):
                    start = self.i_start.payload
                    m.d.sync += [head.eq(start.head), offset.eq(start.offset), left.eq(start.keys)]
                    with m.If(start.keys != 0):
                        m.next = "read"
            with m.State("read"):
                m.next = "emit"
            with m.State("emit"):
                m.d.comb += self.o_seg.valid.eq(1)
                with m.If(self.o_seg.ready):
                    m.d.sync += [head.eq(head + 1), offset.eq(0), left.eq(left - keys)]
                    with m.If(left == keys):
                        m.next = "idle"
                    with m.Else():
                        m.next = "read"
        return m


class Scheduler(wiring.Component):
    """Descriptor memory, share scan and one segment generator per core.

    Parameters
    ----------
    cfg : AttentionConfig

    Members
    -------
    i_dwrite : ``In(stream.Signature(descriptor_write_layout(cfg)))``
        Descriptor writes from the job loader (always ready).
    i_job : ``In(stream.Signature(scan_job_layout(cfg)))``
        A loaded, valid job to schedule. Taken when the previous job's shares are all handed out.
    o_seg_<c> : ``Out(stream.Signature(segment_layout(cfg)))``, ``c = 0 .. cores-1``
        Core ``c``'s segments, in order.
    o_cross : ``Out(data.ArrayLayout(cross_layout(cfg), cores - 1))`` (``cores > 1``)
        Entry ``b - 1``: the head crossing boundary ``b``; set when the scan ends, held until the
        next job's scan ends.
    o_scanned : ``Out(1)``
        A one-cycle pulse when a job's scan ends (``o_cross`` valid from the next cycle).

    Latency: ``o_scanned`` pulses ``heads + 1`` cycles after the job transfer (one read, then one
    head per cycle); the starts are offered from the next cycle, and each generator's first segment
    is valid 2 cycles after it took its start (see :class:`SegmentGen`).
    Throughput: one job at a time; each core's segments every 2 cycles.
    Numerics: exact integer shares (``cores`` is a power of two: ``q`` and ``r`` are a shift and
    a mask).
    """

    def __init__(self, cfg):
        check_unit_args(cfg, 0)
        self._cfg = cfg
        members = {
            "i_dwrite":  In(stream.Signature(descriptor_write_layout(cfg))),
            "i_job":     In(stream.Signature(scan_job_layout(cfg))),
            "o_scanned": Out(1),
        }
        for c in range(cfg.cores):
            members[f"o_seg_{c}"] = Out(stream.Signature(segment_layout(cfg)))
        if cfg.cores > 1:
            members["o_cross"] = Out(data.ArrayLayout(cross_layout(cfg), cfg.cores - 1))
        super().__init__(members)

    def elaborate(self, platform):
        cfg = self._cfg
        m = Module()

        # --- descriptor memory: one write port, a read port per reader ---------------------------
        m.submodules.desc = desc = Memory(shape=head_layout(cfg), depth=cfg.max_heads, init=[])
        write = desc.write_port()
        w = self.i_dwrite.payload.desc
        m.d.comb += [
            self.i_dwrite.ready.eq(1),
            write.en.eq(self.i_dwrite.valid),
            write.addr.eq(self.i_dwrite.payload.addr),
        ]
        m.d.comb += [write.data[name].eq(w[name]) for name in head_layout(cfg).members]

        starts = self._scan(m, desc.read_port())
        for c in range(cfg.cores):
            m.submodules[f"gen_{c}"] = gen = SegmentGen(cfg)
            wiring.connect(m, gen.desc, desc.read_port())
            wiring.connect(m, starts[c], gen.i_start)
            wiring.connect(m, gen.o_seg, wiring.flipped(getattr(self, f"o_seg_{c}")))
        return m

    def _scan(self, m, port):
        """The scan FSM; returns each core's start stream."""
        cfg = self._cfg
        shift = ceil_log2(cfg.cores)
        job = Signal(scan_job_layout(cfg))
        h = Signal(range(cfg.max_heads + 1))           # the head whose descriptor is read
        start = Signal(total_bits(cfg))                 # its first global key
        q = job.total >> shift
        r = job.total & (cfg.cores - 1)
        bounds = [c * q + Mux(r < c, r, c) if c else 0 for c in range(cfg.cores)]   # min(c, r)
        share = [q + (r > c) for c in range(cfg.cores)]

        found = [Signal(start_layout(cfg), name=f"start_{c}") for c in range(cfg.cores)]
        pending = Signal(cfg.cores)
        streams = []
        for c in range(cfg.cores):
            s = stream.Signature(start_layout(cfg)).create(path=(f"start_{c}",))
            m.d.comb += [s.valid.eq(pending[c]), s.payload.eq(found[c])]
            with m.If(s.valid & s.ready):
                m.d.sync += pending[c].eq(0)
            streams.append(s)

        length = port.data.length
        m.d.comb += port.addr.eq(h)
        with m.FSM():
            with m.State("idle"):
                m.d.comb += self.i_job.ready.eq(pending == 0)
                with m.If(self.i_job.valid & self.i_job.ready):
                    m.d.sync += [job.eq(self.i_job.payload), h.eq(0), start.eq(0)]
                    m.next = "read"
            with m.State("read"):                      # descriptor h is read at this edge
                m.d.sync += h.eq(h + 1)
                m.next = "walk"
            with m.State("walk"):                      # port.data is descriptor h - 1
                for c in range(cfg.cores):
                    with m.If((start <= bounds[c]) & (bounds[c] < start + length)):
                        m.d.sync += [found[c].head.eq(h - 1), found[c].offset.eq(bounds[c] - start)]
                m.d.sync += [start.eq(start + length), h.eq(h + 1)]
                with m.If(h == job.heads):
                    m.next = "done"
            with m.State("done"):
                for c in range(cfg.cores):
                    m.d.sync += found[c].keys.eq(share[c])
                if cfg.cores > 1:
                    for b in range(1, cfg.cores):
                        m.d.sync += [self.o_cross[b - 1].valid.eq((share[b] != 0) & (found[b].offset != 0)),
                                     self.o_cross[b - 1].head.eq(found[b].head)]
                m.d.sync += pending.eq((1 << cfg.cores) - 1)
                m.d.comb += self.o_scanned.eq(1)
                m.next = "idle"
        return streams
