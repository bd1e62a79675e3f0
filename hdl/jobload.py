"""The job loader: a job's descriptors and queries in, checked and stored, one job report out.

:class:`JobLoader` takes the two input streams of a job (``hdl/ports.py``) at once, in any
interleaving: every descriptor is written to the descriptor memory at its head index and every
query beat to the cores' query buffers at its beat index, as they arrive. When both streams have
delivered their ``last`` beat it reports the job -- heads, total keys and an error code -- and
takes nothing more until the accelerator says the job is finished (``i_enable``).

A job is bad when a length is 0 or above ``max_context`` (:data:`ERR_LENGTH`), when it has more
than ``max_heads`` descriptors (:data:`ERR_HEADS`), or when its query stream does not hold exactly
``head_dim // lanes`` beats per head (:data:`ERR_QUERY`). A bad job's streams are still taken to
their ``last`` beats (so the next job starts in step), nothing is written past the memories' ends,
and the report carries the error: no work starts.
"""

from amaranth.hdl import Module, Signal, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from .config import bits_for
from .pipeline import check_unit_args
from .ports import descriptor_layout, query_layout, query_write_layout

__all__ = ["JobLoader", "job_layout", "descriptor_write_layout", "ERR_NONE", "ERR_LENGTH", "ERR_HEADS",
           "ERR_QUERY", "ERROR_BITS"]

#: Error codes of a job report (and of the accelerator's status).
ERR_NONE   = 0
ERR_LENGTH = 1      # a head of length 0 or above max_context
ERR_HEADS  = 2      # more descriptors than max_heads
ERR_QUERY  = 3      # not head_dim // lanes query beats per head
ERROR_BITS = bits_for(ERR_QUERY)


def total_bits(cfg):
    """Width of a job's total key count (at most max_heads * max_context)."""
    return bits_for(cfg.max_heads * cfg.max_context)


def job_layout(cfg):
    """The report of one loaded job."""
    return data.StructLayout({
        "heads": unsigned(bits_for(cfg.max_heads)),
        "total": unsigned(total_bits(cfg)),
        "error": unsigned(ERROR_BITS),
    })


def descriptor_write_layout(cfg):
    """One descriptor on its way into the descriptor memory."""
    return data.StructLayout({
        "addr": unsigned(cfg.head_index_bits),
        "desc": descriptor_layout(cfg),
    })


class JobLoader(wiring.Component):
    """Loads one job at a time: checks, stores, reports.

    Parameters
    ----------
    cfg : AttentionConfig

    Members
    -------
    i_desc : ``In(stream.Signature(descriptor_layout(cfg)))``
        One descriptor per head, ``last`` on the job's final head.
    i_query : ``In(stream.Signature(query_layout(cfg)))``
        ``head_dim // lanes`` beats per head, ``last`` on the job's final beat.
    o_dwrite : ``Out(stream.Signature(descriptor_write_layout(cfg)))``
        Descriptor ``n`` of the job at address ``n``; a descriptor is taken only with its write.
    o_qwrite : ``Out(stream.Signature(query_write_layout(cfg)))``
        Query beat ``n`` of the job at address ``n`` (``head * head_dim // lanes + beat``).
    o_job : ``Out(stream.Signature(job_layout(cfg)))``
        One report per job, after both ``last`` beats: heads, total keys, error code.
    i_enable : ``In(1)``
        Whether a new job may load; the accelerator holds it low from a report until the job is
        finished. Inputs in flight are not cut: it is sampled only between jobs.

    Latency: the report is a register loaded the cycle after the later of the two ``last``
    transfers, so it can be taken 2 cycles after that transfer.
    Throughput: one descriptor and one query beat per cycle, taken independently.
    Numerics: none; lengths are summed exactly (``total_bits``).
    """

    def __init__(self, cfg):
        check_unit_args(cfg, 0)
        self._cfg = cfg
        super().__init__({
            "i_desc":   In(stream.Signature(descriptor_layout(cfg))),
            "i_query":  In(stream.Signature(query_layout(cfg))),
            "o_dwrite": Out(stream.Signature(descriptor_write_layout(cfg))),
            "o_qwrite": Out(stream.Signature(query_write_layout(cfg))),
            "o_job":    Out(stream.Signature(job_layout(cfg))),
            "i_enable": In(1),
        })

    def elaborate(self, platform):
        cfg = self._cfg
        m = Module()
        q_beats_max = cfg.max_heads * cfg.beats_per_key

        # --- job state ---------------------------------------------------------------------------
        heads     = Signal(range(cfg.max_heads + 1))
        total     = Signal(total_bits(cfg))
        q_count   = Signal(range(q_beats_max + 1))
        desc_done = Signal()
        q_done    = Signal()
        err_len   = Signal()
        err_heads = Signal()
        err_query = Signal()         # more beats than max_heads can use
        begun     = Signal()         # the job's first transfer happened (a flip-flop: no wide ORs
                                     # of the counts in front of the inputs' ready)
        loading   = Signal()         # the job's first transfer happened (or may happen now)
        m.d.comb += loading.eq(~self.o_job.valid & (self.i_enable | begun))
        with m.If((self.i_desc.valid & self.i_desc.ready) | (self.i_query.valid & self.i_query.ready)):
            m.d.sync += begun.eq(1)

        # --- descriptors -------------------------------------------------------------------------
        desc = self.i_desc.payload
        room = Signal()
        m.d.comb += [
            room.eq(heads < cfg.max_heads),
            self.o_dwrite.payload.addr.eq(heads),
            self.o_dwrite.payload.desc.eq(desc),
            self.o_dwrite.valid.eq(self.i_desc.valid & loading & ~desc_done & room),
            self.i_desc.ready.eq(loading & ~desc_done & (~room | self.o_dwrite.ready)),
        ]
        with m.If(self.i_desc.valid & self.i_desc.ready):
            with m.If(room):
                m.d.sync += [heads.eq(heads + 1), total.eq(total + desc.length)]
                with m.If((desc.length == 0) | (desc.length > cfg.max_context)):
                    m.d.sync += err_len.eq(1)
            with m.Else():
                m.d.sync += err_heads.eq(1)
            m.d.sync += desc_done.eq(desc.last)

        # --- queries -----------------------------------------------------------------------------
        q_room = Signal()
        m.d.comb += [
            q_room.eq(q_count < q_beats_max),
            self.o_qwrite.payload.addr.eq(q_count),
            self.o_qwrite.payload.q.eq(self.i_query.payload.q),
            self.o_qwrite.valid.eq(self.i_query.valid & loading & ~q_done & q_room),
            self.i_query.ready.eq(loading & ~q_done & (~q_room | self.o_qwrite.ready)),
        ]
        with m.If(self.i_query.valid & self.i_query.ready):
            with m.If(q_room):
                m.d.sync += q_count.eq(q_count + 1)
            with m.Else():
                m.d.sync += err_query.eq(1)
            m.d.sync += q_done.eq(self.i_query.payload.last)

        # --- report ------------------------------------------------------------------------------
        report = self.o_job.payload
        with m.If(self.o_job.valid):
            with m.If(self.o_job.ready):
                m.d.sync += [self.o_job.valid.eq(0), heads.eq(0), total.eq(0), q_count.eq(0),
                             desc_done.eq(0), q_done.eq(0), err_len.eq(0), err_heads.eq(0),
                             err_query.eq(0), begun.eq(0)]
        with m.Elif(desc_done & q_done):
            m.d.sync += [self.o_job.valid.eq(1), report.heads.eq(heads), report.total.eq(total)]
            with m.If(err_heads):
                m.d.sync += report.error.eq(ERR_HEADS)
            with m.Elif(err_len):
                m.d.sync += report.error.eq(ERR_LENGTH)
            with m.Elif(err_query | (q_count != heads * cfg.beats_per_key)):
                m.d.sync += report.error.eq(ERR_QUERY)
            with m.Else():
                m.d.sync += report.error.eq(ERR_NONE)
        return m
