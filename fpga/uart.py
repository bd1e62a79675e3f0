"""An 8N1 UART: a receiver and a transmitter between a pin and a byte stream.

Frames are one start bit (0), eight data bits least significant first and one stop bit (1); the
line idles high. Both sides count ``divisor`` clock cycles per bit (``clock / baud``, rounded), so
the rate error of the link is the sum of both sides' rounding: a divisor of 16 or more keeps it
below the 2 % that sampling at mid-bit tolerates over a frame.

:class:`UARTReceiver` has no way to hold the sender back: a byte that completes while the one
before it still waits on its output is dropped and counted as an overrun (a sticky flag), and a
frame whose stop bit reads 0 is dropped as a framing error (sticky too). A consumer that takes a
byte within ``10 * divisor`` cycles never loses one.
"""

from amaranth.hdl import Cat, Module, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

__all__ = ["UARTReceiver", "UARTTransmitter", "DATA_BITS", "FRAME_BITS", "MIN_DIVISOR", "check_divisor"]

#: Data bits of a frame.
DATA_BITS = 8
#: Bits of a frame on the line: start, data, stop.
FRAME_BITS = 1 + DATA_BITS + 1
#: The smallest divisor: the receiver needs a mid-bit sample point at least two cycles after the
#: edge it saw (one cycle of which the synchronizer already spent).
MIN_DIVISOR = 4


def check_divisor(divisor):
    """The constructor check of both sides (``TypeError``, ``ValueError``)."""
    if not isinstance(divisor, int) or isinstance(divisor, bool):
        raise TypeError(f"divisor must be an integer, not {divisor!r}")
    if divisor < MIN_DIVISOR:
        raise ValueError(f"divisor must be at least {MIN_DIVISOR} (clock cycles per bit), not {divisor}")


class UARTReceiver(wiring.Component):
    """Bytes from an 8N1 line.

    Parameters
    ----------
    divisor : int
        Clock cycles per bit, at least :data:`MIN_DIVISOR`.

    Members
    -------
    rx : ``In(1, init=1)``
        The line, asynchronous to the clock (two flip-flops synchronize it).
    o_data : ``Out(stream.Signature(8))``
        One byte per good frame; ``valid`` and ``payload`` are registers.
    o_error : ``Out(1)``
        Sticky: a frame whose stop bit was 0 (the byte is dropped). Cleared by ``i_clear`` (an
        error in the same cycle wins).
    o_overrun : ``Out(1)``
        Sticky: a byte completed while ``o_data`` still held the one before (the new byte is
        dropped). Cleared by ``i_clear`` likewise.
    i_clear : ``In(1)``

    A low level seen on an idle line starts a frame; it is checked again at mid-bit and a glitch
    that is gone by then is ignored. Each bit is sampled once, at its middle (``divisor // 2``
    cycles after the start edge as seen, then every ``divisor`` cycles). After the stop bit's
    sample the receiver waits for the next start edge at once (half a bit early, which tolerates a
    faster sender); after a framing error it first waits for the line to return high, so a break
    (a line held low) yields one error, not a stream of zero bytes.

    Latency: a byte is on ``o_data`` ``2 + divisor // 2 + 9 * divisor`` cycles after its start
    edge reaches ``rx`` (the synchronizer, then the stop bit's middle).
    Throughput: one byte per frame, ``10 * divisor`` cycles; never stalls the line.
    Numerics: none.
    """

    def __init__(self, *, divisor):
        check_divisor(divisor)
        self._divisor = divisor
        super().__init__({
            "rx":        In(1, init=1),
            "o_data":    Out(stream.Signature(DATA_BITS)),
            "o_error":   Out(1),
            "o_overrun": Out(1),
            "i_clear":   In(1),
        })

    @property
    def divisor(self):
        return self._divisor

    def elaborate(self, platform):
        m = Module()
        div = self._divisor

        # --- sync: two flip-flops against metastability; the line idles high --------------------
        sync_0 = Signal(init=1)
        line   = Signal(init=1)
        m.d.sync += [sync_0.eq(self.rx), line.eq(sync_0)]

        # --- frame: a countdown to each sample point, the bits shifted in LSB first --------------
        timer = Signal(range(div))          # cycles left to the next sample point
        index = Signal(range(DATA_BITS))    # the data bit being received
        shift = Signal(DATA_BITS)
        deliver = Signal()                  # a good frame ends in this cycle
        framing = Signal()                  # a frame with a bad stop bit ends in this cycle
        with m.If(timer != 0):
            m.d.sync += timer.eq(timer - 1)
        with m.FSM():
            with m.State("IDLE"):
                with m.If(~line):
                    m.d.sync += timer.eq(div // 2 - 1)
                    m.next = "START"
            with m.State("START"):
                with m.If(timer == 0):
                    m.d.sync += [timer.eq(div - 1), index.eq(0)]
                    m.next = "DATA"
                    with m.If(line):        # gone by mid-bit: a glitch, not a start bit
                        m.next = "IDLE"
            with m.State("DATA"):
                with m.If(timer == 0):
                    m.d.sync += [timer.eq(div - 1), shift.eq(Cat(shift[1:], line)), index.eq(index + 1)]
                    with m.If(index == DATA_BITS - 1):
                        m.next = "STOP"
            with m.State("STOP"):
                with m.If(timer == 0):
                    m.d.comb += [deliver.eq(line), framing.eq(~line)]
                    m.next = "IDLE"
                    with m.If(~line):
                        m.next = "BREAK"
            with m.State("BREAK"):          # after a framing error: wait for an idle line
                with m.If(line):
                    m.next = "IDLE"

        # --- out: one byte register; a byte that finds it full is an overrun ----------------------
        with m.If(self.o_data.valid & self.o_data.ready):
            m.d.sync += self.o_data.valid.eq(0)
        with m.If(self.i_clear):
            m.d.sync += [self.o_error.eq(0), self.o_overrun.eq(0)]
        with m.If(deliver):
            with m.If(~self.o_data.valid | self.o_data.ready):
                m.d.sync += [self.o_data.valid.eq(1), self.o_data.payload.eq(shift)]
            with m.Else():
                m.d.sync += self.o_overrun.eq(1)
        with m.If(framing):
            m.d.sync += self.o_error.eq(1)
        return m


class UARTTransmitter(wiring.Component):
    """Bytes onto an 8N1 line.

    Parameters
    ----------
    divisor : int
        Clock cycles per bit, at least :data:`MIN_DIVISOR`.

    Members
    -------
    i_data : ``In(stream.Signature(8))``
        Bytes to send. ``ready`` is low while a frame is on the line, except in the last cycle of
        its stop bit, so frames of bytes offered back to back follow each other without a gap.
    tx : ``Out(1, init=1)``
        The line, driven by a flip-flop (no glitches).

    ``i_data.ready`` (inverted) and the "bit ends" flag are flip-flops, each worked out a cycle
    ahead, so no compare on the bit timer lies between the timer and a producer's logic.

    Latency: the start bit begins at the clock edge that takes the byte.
    Throughput: one byte per ``10 * divisor`` cycles, each bit exactly ``divisor`` cycles long.
    Numerics: none.
    """

    def __init__(self, *, divisor):
        check_divisor(divisor)
        self._divisor = divisor
        super().__init__({
            "i_data": In(stream.Signature(DATA_BITS)),
            "tx":     Out(1, init=1),
        })

    @property
    def divisor(self):
        return self._divisor

    def elaborate(self, platform):
        m = Module()
        div = self._divisor

        # --- frame: the bits after the one on the line, and how many are left ---------------------
        shift = Signal(DATA_BITS + 1)               # data bits, then the stop bit
        left  = Signal(range(FRAME_BITS + 1))       # bits of the frame from the one on the line on
        timer = Signal(range(div))                  # cycles left of the bit on the line
        zero  = Signal(init=1)                      # timer == 0, a register
        edge  = Signal()                            # the bit on the line ends at this clock edge
        busy  = Signal()                            # ~i_data.ready, a register
        m.d.comb += [
            edge.eq((left != 0) & zero),
            self.i_data.ready.eq(~busy),
        ]
        with m.If(~zero):
            m.d.sync += [timer.eq(timer - 1), zero.eq(timer == 1)]

        # --- line: a new frame's start bit, or the next bit of this one ----------------------------
        # ready is (left == 0) | (edge & (left == 1)); busy is its inverse, worked out a cycle ahead
        with m.If(self.i_data.valid & ~busy):
            m.d.sync += [self.tx.eq(0), shift.eq(Cat(self.i_data.payload, 1)), left.eq(FRAME_BITS),
                         timer.eq(div - 1), zero.eq(0), busy.eq(1)]
        with m.Elif(edge):
            m.d.sync += [left.eq(left - 1), busy.eq(left != 1)]
            with m.If(left != 1):
                m.d.sync += [self.tx.eq(shift[0]), shift.eq(Cat(shift[1:], 1)), timer.eq(div - 1),
                             zero.eq(0)]
        with m.Else():
            m.d.sync += busy.eq((left != 0) & ((left != 1) | (timer != 1)))
        return m
