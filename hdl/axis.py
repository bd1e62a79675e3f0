"""AXI4-Stream port names around the accelerator, for vendor flows and IP integrators.

:class:`AXIStreamAttention` contains one :class:`~leanattn.hdl.top.LeanAttention` and nothing else:
every stream of the top becomes an AXI4-Stream interface with the usual signal names, every other
port keeps its meaning under a plain name. No logic is added: valid/ready are TVALID/TREADY, and
the handshake rules of :mod:`amaranth.lib.stream` are those of AXI4-Stream.

========================  =====  ====================================  ==========  ===============
interface                 dir    TDATA (from bit 0, layout order)      TUSER       TLAST
========================  =====  ====================================  ==========  ===============
``s_axis_desc``           in     descriptor fields except ``last``     --          job's last head
``s_axis_query``          in     ``lanes`` query elements              --          job's last beat
``m_axis_out``            out    ``lanes`` output integers             head index  head's last beat
``m_axis_kreq<c>``        out    K request ``{addr, keys}``            --          --
``s_axis_k<c>``           in     ``lanes`` K elements                  --          --
``m_axis_vreq<c>``        out    V request ``{addr, keys}``            --          --
``s_axis_v<c>``           in     ``lanes`` V elements                  --          --
========================  =====  ====================================  ==========  ===============

Every TDATA is a whole number of bytes (AXI4-Stream's rule): the payload sits in the low bits, the
padding above it is zero on outputs and ignored on inputs. The field offsets of each TDATA are in
:func:`axis_interfaces` (and in the manifest ``leanattn gen --axis`` writes). Status: ``busy``,
``done``, ``error``, ``cycles`` -- ``o_busy`` ... ``o_cycles`` of the top, same timing.
"""

from amaranth.hdl import Module, Shape
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from .config import AttentionConfig
from .layouts import output_layout
from .ports import descriptor_layout, kv_data_layout, kv_request_layout, query_layout
from .top import ERROR_BITS, LeanAttention, cycle_bits

__all__ = ["AXIStreamAttention", "axis_interfaces", "byte_width"]


def byte_width(bits):
    """``bits`` rounded up to whole bytes (at least one)."""
    return max(8, -(-bits // 8) * 8)


def _without(layout, name):
    """A struct layout without one of its fields (offsets packed again from bit 0)."""
    return data.StructLayout({n: f.shape for n, f in layout if n != name})


def axis_interfaces(cfg):
    """``{interface: (flow, top member, TDATA layout, TUSER field or None, TLAST field or None)}``.

    ``flow`` is the direction of TDATA as seen from the wrapper (``In``: a slave interface).
    """
    interfaces = {
        "s_axis_desc":  (In, "i_desc", _without(descriptor_layout(cfg), "last"), None, "last"),
        "s_axis_query": (In, "i_query", _without(query_layout(cfg), "last"), None, "last"),
        "m_axis_out":   (Out, "o_out", _without(_without(output_layout(cfg), "last"), "head"),
                         "head", "last"),
    }
    for c in range(cfg.cores):
        interfaces |= {
            f"m_axis_kreq{c}": (Out, f"o_kreq_{c}", kv_request_layout(cfg), None, None),
            f"s_axis_k{c}":    (In, f"i_k_{c}", kv_data_layout(cfg), None, None),
            f"m_axis_vreq{c}": (Out, f"o_vreq_{c}", kv_request_layout(cfg), None, None),
            f"s_axis_v{c}":    (In, f"i_v_{c}", kv_data_layout(cfg), None, None),
        }
    return interfaces


#: Status ports: wrapper name -> top member.
STATUS = {"busy": "o_busy", "done": "o_done", "error": "o_error", "cycles": "o_cycles"}


def status_widths(cfg):
    """Widths of the status ports, those of :class:`LeanAttention`'s members."""
    return {"busy": 1, "done": 1, "error": ERROR_BITS, "cycles": cycle_bits(cfg)}


class AXIStreamAttention(wiring.Component):
    """:class:`LeanAttention` with AXI4-Stream interfaces (see the module docstring).

    Parameters
    ----------
    cfg : AttentionConfig

    Members
    -------
    <interface>_tdata, _tvalid, _tready[, _tuser, _tlast]
        One set per interface of :func:`axis_interfaces`; TVALID/TDATA/TUSER/TLAST flow with the
        data, TREADY against it.
    busy, done, error, cycles : ``Out``
        The top's status outputs.

    Latency and throughput: those of :class:`LeanAttention` (no register is added).
    """

    def __init__(self, cfg):
        if not isinstance(cfg, AttentionConfig):
            raise TypeError(f"cfg must be an AttentionConfig, not {cfg!r}")
        self._cfg = cfg
        members = {}
        for name, (flow, _, layout, user, last) in axis_interfaces(cfg).items():
            back = Out if flow == In else In
            members[f"{name}_tdata"] = flow(byte_width(Shape.cast(layout).width))
            members[f"{name}_tvalid"] = flow(1)
            members[f"{name}_tready"] = back(1)
            if user is not None:
                members[f"{name}_tuser"] = flow(cfg.head_index_bits)
            if last is not None:
                members[f"{name}_tlast"] = flow(1)
        for name, width in status_widths(cfg).items():
            members[name] = Out(width)
        super().__init__(wiring.Signature(members))

    @property
    def cfg(self):
        return self._cfg

    def elaborate(self, platform):
        m = Module()
        m.submodules.core = top = LeanAttention(self.cfg)
        for name, (flow, member, layout, user, last) in axis_interfaces(self.cfg).items():
            stream = getattr(top, member)
            tdata = data.View(layout, getattr(self, f"{name}_tdata")[:Shape.cast(layout).width])
            if flow == In:
                self._receive(m, name, stream, tdata, last)
            else:
                self._send(m, name, stream, tdata, user, last)
        for name, member in STATUS.items():
            m.d.comb += getattr(self, name).eq(getattr(top, member))
        return m

    def _receive(self, m, name, stream, tdata, last):
        """A slave interface drives one of the top's input streams."""
        m.d.comb += [stream.valid.eq(getattr(self, f"{name}_tvalid")),
                     getattr(self, f"{name}_tready").eq(stream.ready)]
        if last is None:
            m.d.comb += stream.payload.eq(tdata)
            return
        for field, _ in tdata.shape():
            m.d.comb += stream.payload[field].eq(tdata[field])
        m.d.comb += stream.payload[last].eq(getattr(self, f"{name}_tlast"))

    def _send(self, m, name, stream, tdata, user, last):
        """One of the top's output streams drives a master interface."""
        m.d.comb += [getattr(self, f"{name}_tvalid").eq(stream.valid),
                     stream.ready.eq(getattr(self, f"{name}_tready"))]
        if last is None:
            m.d.comb += tdata.eq(stream.payload)
            return
        for field, _ in tdata.shape():
            m.d.comb += tdata[field].eq(stream.payload[field])
        m.d.comb += [getattr(self, f"{name}_tuser").eq(stream.payload[user]),
                     getattr(self, f"{name}_tlast").eq(stream.payload[last])]
