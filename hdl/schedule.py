"""The scheduler: a loaded job's heads split over the cores, as ``cfg.schedule`` says.

Under ``lean`` (stream-K) the cores take equal contiguous shares of keys; under ``fa2`` every head
goes whole to one core, under ``flashdecoding`` in chunks to a group of cores
(:func:`leanattn.sim.partition.schedule_shares`). :class:`Scheduler` holds the
descriptor memory. For each ``lean`` job it

1. **scans** the heads once (one head per cycle), finding for every core the head and key where its
   share starts -- core ``c`` takes global keys ``[b[c], b[c+1])`` with ``b[c] = c*q + min(c, r)``,
   ``total = q * cores + r`` (:func:`leanattn.sim.partition.core_bounds`) -- and which head, if any,
   crosses each core boundary (``o_cross``, for the reduction tree and the partial routing);
2. hands each core's :class:`SegmentGen` its start; the generators then walk their shares in
   parallel, one segment (the piece of one head inside the share) every two cycles, exactly the
   segments of :func:`leanattn.sim.partition.partition`.

For an ``fa2`` job the same scan gives each head, in order, to the core with the fewest keys so
far (the lowest-numbered among equals) and links each core's heads into a list (a *link memory*:
entry ``h`` is the next head of the core that holds head ``h``); each generator starts at its
core's first head with its core's key count and follows the links, one whole head per segment.
A ``flashdecoding`` job is scanned the same way over groups of ``head_chunks`` cores; every
generator of a group walks the group's heads and takes its own chunk of each (skipping heads too
short to have one), and the scan marks which heads have chunks on which part of a group
(``o_split``, for the reduction tree). Scan and generators take the same cycles under every
schedule, a skipped head as many as a segment.
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


def _read_port_signature(cfg, shape=None):
    return ReadPort.Signature(addr_width=cfg.head_index_bits,
                              shape=head_layout(cfg) if shape is None else shape)


def _links(cfg):
    """Whether the schedule walks linked heads (``fa2``, ``flashdecoding``) rather than
    consecutive ones (``lean``)."""
    return cfg.schedule != "lean"


class SegmentGen(wiring.Component):
    """Walks one core's share: from ``(head, offset)``, ``keys`` keys, one segment per head.

    Parameters
    ----------
    cfg : AttentionConfig
    position : int
        ``flashdecoding`` only: the core's place in its group (``core % head_chunks``), which
        chunk of every head it takes.

    Members
    -------
    i_start : ``In(stream.Signature(start_layout(cfg)))``
        The share; ``keys == 0`` (an idle core) gives no segment. Taken only while idle. Under
        ``flashdecoding``, ``keys`` counts the group's heads, not keys (and ``offset`` is unused).
    desc : ``In(ReadPort.Signature(addr_width=head_index_bits, shape=head_layout(cfg)))``
        A synchronous read port of the descriptor memory (``en`` held high). This unit addresses
        the head it reads next a cycle ahead -- the start's head while idle, the following head
        while it emits -- so that the descriptor is out in the read cycle; the memory can then be
        block RAM.
    link : ``In(ReadPort.Signature(...))`` (``fa2`` and ``flashdecoding``)
        A read port of the link memory, at ``head``: the core's (or group's) head after ``head``,
        out from the cycle after ``head`` is loaded (the emit cycle).
    o_seg : ``Out(stream.Signature(segment_layout(cfg)))``
        ``lean`` and ``fa2``: ``keys = min(length - offset, left)`` keys of each head in turn, from
        ``k_base + offset * head_dim`` (offset 0 after the first head); the next head is
        ``head + 1`` (``lean``) or the linked one (``fa2``). ``flashdecoding``: chunk ``j =
        position`` of every linked head of ``n`` keys, keys ``[j*n//p, (j+1)*n//p)`` with ``p =
        min(head_chunks, n)``; a head with ``n <= j`` has no chunk here and is skipped.

    Latency: the first segment is valid 2 cycles after the start transfer.
    Throughput: one head every 2 cycles (the descriptor out, then the segment or the skip).
    """

    def __init__(self, cfg, position=0):
        check_unit_args(cfg, 0)
        if not isinstance(position, int) or not 0 <= position < cfg.head_chunks:
            raise ValueError(f"position must be in the range 0..{cfg.head_chunks - 1} (head_chunks), "
                             f"not {position!r}")
        self._cfg = cfg
        self._position = position
        members = {
            "i_start": In(stream.Signature(start_layout(cfg))),
            "desc":    In(_read_port_signature(cfg)),
            "o_seg":   Out(stream.Signature(segment_layout(cfg))),
        }
        if _links(cfg):
            members["link"] = In(_read_port_signature(cfg, cfg.head_index_bits))
        super().__init__(members)

    def elaborate(self, platform):
        cfg = self._cfg
        m = Module()
        head   = Signal(cfg.head_index_bits)
        offset = Signal(cfg.length_bits)
        left   = Signal(total_bits(cfg))
        if _links(cfg):
            m.d.comb += self.link.addr.eq(head)
        following = self.link.data if _links(cfg) else head + 1

        # --- this head's segment: its first key, its keys, and what it takes of the share ---------
        # The descriptor is out in the read cycle (addressed in the cycle before, see the FSM): the
        # segment is worked out from it and registered, so the emit cycle only subtracts what it
        # takes from the share.
        desc = self.desc.data
        m.d.comb += [self.desc.en.eq(1), self.desc.addr.eq(following)]   # while emitting
        if cfg.schedule == "flashdecoding":
            first, keys, empty = self._chunk(m, desc.length)
        else:
            first, keys, empty = offset, Signal(cfg.length_bits), 0
            rest = desc.length - offset
            m.d.comb += keys.eq(Mux(left < rest, left, rest))
        seg = self.o_seg.payload
        seg_empty = Signal()
        loads = [
            seg.head.eq(head),
            seg.k_addr.eq(desc.k_base + first * cfg.head_dim),
            seg.v_addr.eq(desc.v_base + first * cfg.head_dim),
            seg.keys.eq(keys),
            seg.score_mant.eq(desc.score_mant),
            seg.score_shift.eq(desc.score_shift),
            seg_empty.eq(empty),
        ]
        used = 1 if cfg.schedule == "flashdecoding" else seg.keys   # the share counts heads there

        # --- walk: read the head's descriptor, then emit its segment (or skip the head) ----------
        with m.FSM():
            with m.State("idle"):
                start = self.i_start.payload
                m.d.comb += [self.i_start.ready.eq(1), self.desc.addr.eq(start.head)]
                with m.If(self.i_start.valid):
                    m.d.sync += [head.eq(start.head), offset.eq(start.offset), left.eq(start.keys)]
                    with m.If(start.keys != 0):
                        m.next = "read"
            with m.State("read"):
                m.d.sync += loads
                m.next = "emit"
            with m.State("emit"):
                m.d.comb += self.o_seg.valid.eq(~seg_empty)
                with m.If(self.o_seg.ready | seg_empty):
                    m.d.sync += [head.eq(following), offset.eq(0), left.eq(left - used)]
                    with m.If(left == used):
                        m.next = "idle"
                    with m.Else():
                        m.next = "read"
        return m

    def _chunk(self, m, n):
        """``flashdecoding``: the first key, the keys and the emptiness of this core's chunk of a
        head of ``n`` keys (``head_chunks`` a power of two, so ``j*n//p`` is a shift when ``n >=
        p``, and every chunk is one key when ``n < p``)."""
        cfg, j = self._cfg, self._position
        shift = ceil_log2(cfg.head_chunks)
        first = Signal(cfg.length_bits, name="chunk_first")
        keys  = Signal(cfg.length_bits, name="chunk_keys")
        empty = Signal(name="chunk_empty")
        whole = n >= cfg.head_chunks
        lo, hi = (j * n) >> shift, ((j + 1) * n) >> shift
        m.d.comb += [
            first.eq(Mux(whole, lo, j)),
            keys.eq(Mux(whole, hi - lo, 1)),
            empty.eq(n <= j),
        ]
        return first, keys, empty


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
    o_split : ``Out(data.ArrayLayout(max_heads, head_chunks - 1))`` (``flashdecoding``, ``head_chunks > 1``)
        Entry ``o - 1``, bit ``h``: head ``h`` has more than ``o`` keys, so it has a chunk on the
        cores from ``o`` on in its group (set during the scan, held until the next job's scan).
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
        if cfg.head_chunks > 1:
            members["o_split"] = Out(data.ArrayLayout(cfg.max_heads, cfg.head_chunks - 1))
        super().__init__(members)

    def elaborate(self, platform):
        cfg = self._cfg
        m = Module()

        # --- descriptor memory: one write port, a read port per reader ---------------------------
        # Every reader has a synchronous port, so the memory can be block RAM (a copy per port
        # where the RAM has too few); the compact pipeline asks for it, as on an iCE40 the
        # flip-flops and read multiplexers of a register memory cost more logic cells than the
        # rest of the scheduler. Otherwise synthesis chooses.
        style = {"ram_style": "block"} if cfg.pipeline == "compact" else {}
        m.submodules.desc = desc = Memory(shape=head_layout(cfg), depth=cfg.max_heads, init=[],
                                          attrs=style)
        write = desc.write_port()
        w = self.i_dwrite.payload.desc
        m.d.comb += [
            self.i_dwrite.ready.eq(1),
            write.en.eq(self.i_dwrite.valid),
            write.addr.eq(self.i_dwrite.payload.addr),
        ]
        m.d.comb += [write.data[name].eq(w[name]) for name in head_layout(cfg).members]

        link = None
        if _links(cfg):
            m.submodules.link = link = Memory(shape=cfg.head_index_bits, depth=cfg.max_heads, init=[])
        starts = self._scan(m, desc.read_port(), link.write_port() if link is not None else None)
        for c in range(cfg.cores):
            m.submodules[f"gen_{c}"] = gen = SegmentGen(cfg, c % cfg.head_chunks)
            wiring.connect(m, gen.desc, desc.read_port())
            if link is not None:
                wiring.connect(m, gen.link, link.read_port())
            wiring.connect(m, starts[c], gen.i_start)
            wiring.connect(m, gen.o_seg, wiring.flipped(getattr(self, f"o_seg_{c}")))
        return m

    def _scan(self, m, port, link):
        """The scan FSM; returns each core's start stream."""
        cfg = self._cfg
        job = Signal(scan_job_layout(cfg))
        h = Signal(range(cfg.max_heads + 1))           # the head whose descriptor is read
        found = [Signal(start_layout(cfg), name=f"start_{c}") for c in range(cfg.cores)]
        pending = Signal(cfg.cores)
        streams = []
        for c in range(cfg.cores):
            s = stream.Signature(start_layout(cfg)).create(path=(f"start_{c}",))
            m.d.comb += [s.valid.eq(pending[c]), s.payload.eq(found[c])]
            with m.If(s.valid & s.ready):
                m.d.sync += pending[c].eq(0)
            streams.append(s)
        walker = _LinkWalk(cfg, found, link, self) if _links(cfg) else _ShareWalk(cfg, found, self)

        scanned = (h - 1)[:cfg.head_index_bits]       # the head whose descriptor is out (unsigned)
        m.d.comb += port.addr.eq(h)
        with m.FSM():
            with m.State("idle"):
                m.d.comb += self.i_job.ready.eq(pending == 0)
                with m.If(self.i_job.valid & self.i_job.ready):
                    m.d.sync += [job.eq(self.i_job.payload), h.eq(0)]
                    walker.begin(m)
                    m.next = "read"
            with m.State("read"):                      # descriptor h is read at this edge
                walker.prepare(m, job)
                m.d.sync += h.eq(h + 1)
                m.next = "walk"
            with m.State("walk"):                      # port.data is descriptor h - 1
                walker.head(m, job, scanned, port.data.length)
                m.d.sync += h.eq(h + 1)
                with m.If(h == job.heads):
                    m.next = "done"
            with m.State("done"):
                walker.end(m, job)
                m.d.sync += pending.eq((1 << cfg.cores) - 1)
                m.d.comb += self.o_scanned.eq(1)
                m.next = "idle"
        return streams


class _ShareWalk:
    """``lean``: the scan finds each core's start in its equal contiguous share, and the heads
    crossing the core boundaries."""

    def __init__(self, cfg, found, sched):
        self.cfg, self.found, self.sched = cfg, found, sched
        self.start = Signal(total_bits(cfg))         # the first global key of the head scanned
        # Each core's first global key, registered while the first descriptor is read: the walk
        # then compares registers, with no multiply-add in front of the comparison.
        self.bounds = [Signal(total_bits(cfg), name=f"bound_{c}") for c in range(cfg.cores)]

    def _shares(self, total):
        cfg = self.cfg
        shift = ceil_log2(cfg.cores)
        q = total >> shift
        r = total & (cfg.cores - 1)
        bounds = [c * q + Mux(r < c, r, c) if c else 0 for c in range(cfg.cores)]   # min(c, r)
        share = [q + (r > c) for c in range(cfg.cores)]
        return bounds, share

    def begin(self, m):
        m.d.sync += self.start.eq(0)

    def prepare(self, m, job):
        bounds, _ = self._shares(job.total)
        m.d.sync += [reg.eq(bound) for reg, bound in zip(self.bounds, bounds)]

    def head(self, m, job, head, length):
        for c, found in enumerate(self.found):
            bound = self.bounds[c]
            with m.If((self.start <= bound) & (bound < self.start + length)):
                m.d.sync += [found.head.eq(head), found.offset.eq(bound - self.start)]
        m.d.sync += self.start.eq(self.start + length)

    def end(self, m, job):
        cfg, found = self.cfg, self.found
        _, share = self._shares(job.total)
        for c in range(cfg.cores):
            m.d.sync += found[c].keys.eq(share[c])
        if cfg.cores > 1:
            cross = self.sched.o_cross
            for b in range(1, cfg.cores):
                m.d.sync += [cross[b - 1].valid.eq((share[b] != 0) & (found[b].offset != 0)),
                             cross[b - 1].head.eq(found[b].head)]


class _LinkWalk:
    """``fa2`` and ``flashdecoding``: the scan gives each head to the group of ``head_chunks``
    cores (one core under ``fa2``) with the fewest keys so far and links each group's heads;
    ``o_cross`` stays clear. Under ``flashdecoding`` it also sets, for every offset ``o`` of a
    tree node's right half inside a group, bit ``h`` of ``o_split[o - 1]`` when head ``h`` has more
    than ``o`` keys (a chunk on that half)."""

    def __init__(self, cfg, found, link, sched):
        self.cfg, self.found, self.link, self.sched = cfg, found, link, sched
        self.size = cfg.head_chunks
        groups = cfg.cores // self.size
        self.load  = [Signal(total_bits(cfg), name=f"load_{g}") for g in range(groups)]
        self.count = [Signal(range(cfg.max_heads + 1), name=f"count_{g}") for g in range(groups)]
        self.last  = [Signal(cfg.head_index_bits, name=f"last_{g}") for g in range(groups)]

    def _least_loaded(self):
        """The group with the smallest load, the lowest-numbered among equals (a tournament in
        which the left side wins ties)."""
        level = [(g, load) for g, load in enumerate(self.load)]
        while len(level) > 1:
            pairs = []
            for (i, a), (j, b) in zip(level[0::2], level[1::2]):
                left = a <= b
                pairs.append((Mux(left, i, j), Mux(left, a, b)))
            level = pairs
        return level[0][0]

    def begin(self, m):
        m.d.sync += [load.eq(0) for load in self.load] + [count.eq(0) for count in self.count]

    def prepare(self, m, job):
        pass

    def head(self, m, job, head, length):
        group = 0
        if len(self.load) > 1:
            group = Signal(range(len(self.load)), name="least_loaded")
            m.d.comb += group.eq(self._least_loaded())
        with m.Switch(group):
            for g in range(len(self.load)):
                with m.Case(g):
                    m.d.sync += [self.load[g].eq(self.load[g] + length), self.last[g].eq(head),
                                 self.count[g].eq(self.count[g] + 1)]
                    with m.If(self.count[g] != 0):
                        m.d.comb += [self.link.en.eq(1), self.link.addr.eq(self.last[g]),
                                     self.link.data.eq(head)]
                    with m.Else():
                        for c in range(g * self.size, (g + 1) * self.size):
                            m.d.sync += [self.found[c].head.eq(head), self.found[c].offset.eq(0)]
        for offset in range(1, self.size):
            m.d.sync += self.sched.o_split[offset - 1].bit_select(head, 1).eq(length > offset)

    def end(self, m, job):
        for c, found in enumerate(self.found):
            g = c // self.size
            share = self.count[g] if self.cfg.schedule == "flashdecoding" else self.load[g]
            m.d.sync += found.keys.eq(share)
