"""Payload layouts at the edges of a core and of the accelerator: jobs, queries, K/V memory ports,
segments of work, and the cut heads the reduction tree merges.

A **job** is a list of heads (flattened b-major, index ``b*H + h``): one descriptor per head on the
descriptor stream, ``last`` on the job's final head; and ``head_dim // lanes`` query beats per head
on the query stream, heads in the same order, ``last`` on the job's final beat.

Each core has a **K read port** and a **V read port**, each a request stream out and a response stream
in. A request asks for ``keys`` consecutive keys starting at element address ``addr`` (a multiple of
``lanes``); the memory answers with ``keys * head_dim // lanes`` beats of ``lanes`` elements, in
request order, with any latency. Keys of one head are contiguous in memory, ``head_dim`` elements per
key, starting at the head's ``k_base`` / ``v_base``.

A **segment** is the run of keys of one head inside one core's share (the stream-K partition of
:func:`leanattn.sim.partition.partition`): the scheduler hands each core its segments in order, with
the K and V addresses of the segment's first key and the head's score scale.

A head whose keys sit in more than one core is **cut** at every core boundary inside it. Boundary
``b`` (``1 <= b < cores``, between cores ``b - 1`` and ``b``) is crossed by at most one head;
:func:`cross_layout` records which, and the reduction tree merges partials of that head at the
node whose two subtrees meet at ``b``.
"""

from amaranth.hdl import signed, unsigned
from amaranth.lib import data

from .config import bits_for

__all__ = [
    "descriptor_layout", "query_layout", "query_write_layout", "kv_request_layout", "kv_data_layout",
    "segment_layout", "cross_layout", "query_addr_bits",
]


def descriptor_layout(cfg):
    """One head of a job: its length, where its keys and values start, and its two scales."""
    return data.StructLayout({
        "length":      unsigned(cfg.length_bits),       # keys, 1 .. max_context
        "k_base":      unsigned(cfg.kv_addr_bits),      # element address of key 0
        "v_base":      unsigned(cfg.kv_addr_bits),      # element address of value 0
        "score_mant":  unsigned(cfg.scale_bits),        # logit = q.k * mant * 2**-shift
        "score_shift": unsigned(cfg.score_shift_bits),
        "out_mant":    unsigned(cfg.scale_bits),        # output = o/l * mant * 2**-shift
        "out_shift":   unsigned(cfg.out_shift_bits),
        "last":        1,                               # the job's final head
    })


def query_layout(cfg):
    """One beat of a query: ``lanes`` elements; ``last`` on the job's final beat."""
    return data.StructLayout({
        "q":    data.ArrayLayout(signed(cfg.input_bits), cfg.lanes),
        "last": 1,
    })


def query_addr_bits(cfg):
    """Width of a query-beat address ``head * beats_per_key + beat``."""
    return bits_for(cfg.max_heads * cfg.beats_per_key - 1)


def query_write_layout(cfg):
    """One query beat on its way into a core's query buffer (written once per job, every core)."""
    return data.StructLayout({
        "addr": unsigned(query_addr_bits(cfg)),
        "q":    data.ArrayLayout(signed(cfg.input_bits), cfg.lanes),
    })


def kv_request_layout(cfg):
    """A K or V read request: ``keys`` keys from element address ``addr``."""
    return data.StructLayout({
        "addr": unsigned(cfg.kv_addr_bits),
        "keys": unsigned(cfg.length_bits),
    })


def kv_data_layout(cfg):
    """One response beat: ``lanes`` elements."""
    return data.ArrayLayout(signed(cfg.input_bits), cfg.lanes)


def segment_layout(cfg):
    """One segment of a core's share: keys ``start .. start + keys - 1`` of head ``head``."""
    return data.StructLayout({
        "head":        unsigned(cfg.head_index_bits),
        "k_addr":      unsigned(cfg.kv_addr_bits),      # k_base + start * head_dim
        "v_addr":      unsigned(cfg.kv_addr_bits),      # v_base + start * head_dim
        "keys":        unsigned(cfg.length_bits),       # >= 1
        "score_mant":  unsigned(cfg.scale_bits),
        "score_shift": unsigned(cfg.score_shift_bits),
    })


def cross_layout(cfg):
    """The head crossing one core boundary, if any."""
    return data.StructLayout({
        "valid": 1,
        "head":  unsigned(cfg.head_index_bits),
    })
