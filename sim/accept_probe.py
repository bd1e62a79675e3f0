"""A test wrapper that makes a unit's input rate visible to the generic stream benches.

:class:`AcceptProbe` wraps a stream unit and adds one output stream, ``o_gaps``: for every transfer
on one of the unit's inputs, the cycles since the previous transfer there. A bench that expects
``[GAP_MAX, n, n, ...]`` on ``o_gaps`` (with ``latency={"o_gaps": (input, 1, None)}``) proves, with
:func:`leanattn.sim.stream_bench.run_cocotb_bench` as with ``simulate``, that inputs offered back to
back are taken exactly ``n`` cycles apart. Runs that leave ``o_gaps`` out test the unit as it is,
so one simulator build of the probe serves every run.
"""

from amaranth.hdl import Module, Mux, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

__all__ = ["AcceptProbe"]


class AcceptProbe(wiring.Component):
    """``unit`` with the same ports, and ``o_gaps`` for its input ``port``.

    Parameters
    ----------
    unit : wiring.Component
        The unit; it becomes the submodule ``unit``, every port passed through unchanged.
    port : str
        Name of the input stream whose transfers are timed.
    gap_bits : int
        Width of a gap; gaps saturate at :attr:`gap_max` (also the first one after reset).

    Members
    -------
    unit : wiring.Component
        The wrapped unit.
    gap_max : int
        The largest gap (``2**gap_bits - 1``).
    o_gaps : ``Out(stream.Signature(gap_bits))``
        One item per transfer on ``port``, one cycle after it: the cycles since the previous one.
        ``valid`` is a one-cycle pulse that ignores ``ready``: check ``o_gaps`` only in runs
        without backpressure on it, and leave it out of the others (the same Verilog serves both).
    """

    def __init__(self, unit, *, port, gap_bits=8):
        if not isinstance(unit, wiring.Component):
            raise TypeError(f"unit must be a wiring.Component, not {unit!r}")
        members = unit.signature.members
        member = members[port] if isinstance(port, str) and port in members else None
        if member is None or not member.is_signature or member.flow != In:
            raise ValueError(f"port must name an input stream of the unit, not {port!r}")
        self._unit, self._port = unit, port
        self.gap_max = (1 << gap_bits) - 1
        super().__init__({**unit.signature.members, "o_gaps": Out(stream.Signature(gap_bits))})

    @property
    def unit(self):
        return self._unit

    def elaborate(self, platform):
        m = Module()
        m.submodules.unit = unit = self._unit

        # --- the unit's ports, passed through --------------------------------------------------------
        for name, member in unit.signature.members.items():
            if member.flow == In:
                wiring.connect(m, wiring.flipped(getattr(self, name)), getattr(unit, name))
            else:
                wiring.connect(m, getattr(unit, name), wiring.flipped(getattr(self, name)))

        # --- gaps: cycles since the previous transfer on `port`, saturating ---------------------------
        watched = getattr(self, self._port)
        since = Signal(range(self.gap_max + 1), init=self.gap_max)
        fire  = watched.valid & watched.ready
        m.d.sync += [
            since.eq(Mux(fire, 1, Mux(since == self.gap_max, since, since + 1))),
            self.o_gaps.valid.eq(fire),
            self.o_gaps.payload.eq(since),
        ]
        return m
