"""The board's host interface: UART bytes in, the accelerator's input streams out, and back.

:class:`HostInterface` follows :mod:`leanattn.fpga.protocol` (the wire format, its tables and the
parser's behaviour on malformed input are documented there). It is made of:

* :class:`CommandParser` -- bytes to KV memory writes, descriptors and query beats, plus the
  commands without payload and the error events;
* :class:`ReplyWriter` -- OUTPUT, STATUS, INFO and ERROR frames to bytes, one frame at a time;
* :class:`ByteSerializer` -- the writer's datapath: a word and a byte count in, bytes out; the
  bytes known when the design is built (headers, the INFO record) come from its tables.

Nothing is dropped inside: every stream waits on the one after it (the accelerator's outputs wait
for the UART, which is far slower than the core). Only the UART receiver, which cannot hold the
host back, may lose a byte, and then says so (``link_error``).
"""

import functools
import itertools

from amaranth.hdl import Cat, Const, Module, Mux, Shape, Signal, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from ..hdl.config import AttentionConfig, bits_for
from ..hdl.jobload import ERROR_BITS
from ..hdl.kvmem import kv_write_layout, max_bank_keys
from ..hdl.layouts import output_layout
from ..hdl.ports import descriptor_layout, query_layout
from ..hdl.top import cycle_bits
from .protocol import (
    JOB_COUNT_BITS,
    MAX_COUNT,
    SYNC,
    Command,
    ErrorCode,
    Reply,
    command_layouts,
    error_layout,
    info_layout,
    info_value,
    pack,
    payload_bytes,
    status_layout,
    to_bytes,
)
from .uart import DATA_BITS

__all__ = ["CommandParser", "ByteSerializer", "ReplyWriter", "HostInterface", "serializer_layout"]

#: Bits of a byte on the byte streams.
BYTE = DATA_BITS


def _check_cfg(cfg):
    if not isinstance(cfg, AttentionConfig):
        raise TypeError(f"cfg must be an AttentionConfig, not {cfg!r}")


def _check_positive(name, value):
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{name} must be an integer, not {value!r}")
    if value < 1:
        raise ValueError(f"{name} must be at least 1, not {value}")


class CommandParser(wiring.Component):
    """Commands from a byte stream, as :class:`~leanattn.fpga.protocol.CommandModel` specifies.

    Parameters
    ----------
    cfg : AttentionConfig
    timeout : int
        Cycles without a byte inside a frame after which the frame is dropped (TIMEOUT); also
        ends the hunt for SYNC after garbage.

    Members
    -------
    i_rx : ``In(stream.Signature(8))``
        Bytes from the host. ``ready`` is high except while a payload waits on its output.
    o_kv : ``Out(stream.Signature(kv_write_layout(cfg)))``
        KV_WRITE payloads as they are, KV_DATA payloads expanded to a data write at the word after
        the previous KV write's, in its bank.
    o_desc : ``Out(stream.Signature(descriptor_layout(cfg)))``
    o_query : ``Out(stream.Signature(query_layout(cfg)))``
    o_status_req, o_info_req, o_reset : ``Out(1)``
        One-cycle pulses: a STATUS, INFO or RESET command was received.
    o_error : ``Out(stream.Signature(error_layout(), always_ready=True))``
        One transfer per malformed input (:class:`~leanattn.fpga.protocol.ErrorCode`).

    Every byte taken enters a shift register at its top: a payload is its top bytes, and the
    count field passes through it too. The register of the payloads left holds the count less
    one; the one decrement that makes it also says (its borrow) whether the count, or the payloads
    left, are 0. The timeout is counted by a linear-feedback shift register (:class:`_Timer`). The
    opcode register is cleared at SYNC, so that it is the byte of every error but GARBAGE and
    OPCODE.

    Latency: a payload is offered the cycle after its last byte is taken; a pulse or an error
    comes in the cycle its byte is taken (or the line's silence reaches ``timeout`` cycles).
    Throughput: one byte per cycle; a payload holds ``i_rx`` until it is taken.
    Numerics: none; payload padding bits are ignored.
    """

    def __init__(self, cfg, *, timeout):
        _check_cfg(cfg)
        _check_positive("timeout", timeout)
        self._cfg = cfg
        self._timeout = timeout
        super().__init__({
            "i_rx":         In(stream.Signature(BYTE)),
            "o_kv":         Out(stream.Signature(kv_write_layout(cfg))),
            "o_desc":       Out(stream.Signature(descriptor_layout(cfg))),
            "o_query":      Out(stream.Signature(query_layout(cfg))),
            "o_status_req": Out(1),
            "o_info_req":   Out(1),
            "o_reset":      Out(1),
            "o_error":      Out(stream.Signature(error_layout(), always_ready=True)),
        })

    def elaborate(self, platform):
        m = Module()
        layouts = command_layouts(self._cfg)
        sizes = {op: payload_bytes(layout) for op, layout in layouts.items()}

        # --- frame registers: opcode, payloads left, the bytes taken --------------------------------
        opcode  = Signal(max(Command).bit_length())     # a command's opcode (its byte's low bits)
        left    = Signal(range(MAX_COUNT))              # payloads of the frame after this one
        index   = Signal(range(max(sizes.values())))    # bytes of the payload taken
        shift   = Signal(BYTE * max(sizes.values()))    # the bytes taken, the newest at the top
        byte    = self.i_rx.payload
        take    = Signal()                              # a byte transfers at this edge
        last    = Signal()                              # it is the last byte of a payload
        m.d.comb += take.eq(self.i_rx.valid & self.i_rx.ready)
        with m.If(take):
            m.d.sync += shift.eq(Cat(shift[BYTE:], byte))
        with m.Switch(opcode):
            for op, size in sizes.items():
                if size:
                    with m.Case(op):
                        m.d.comb += last.eq(index == size - 1)
        has_payload = _any(opcode == op for op, size in sizes.items() if size)

        # --- left: the count less one, then one less at each payload; one decrement does both, and
        # its borrow says that the value decremented was 0 ----------------------------------------------
        count   = Cat(shift[-BYTE:], byte)                  # the count field, at its last byte
        counted = Signal()                                  # that byte is on i_rx
        less    = Mux(counted, count, left) - 1             # signed: one bit wider
        none    = less[-1]                                  # the count, or left, is 0

        # --- timer: cycles waiting for a byte inside a frame (an LFSR: no carry chain) --------------
        waiting = Signal()
        timer   = _Timer(self._timeout)
        expired = Signal()
        m.d.comb += expired.eq(waiting & ~self.i_rx.valid & timer.done)
        with m.If(waiting & ~self.i_rx.valid & ~expired):
            m.d.sync += timer.step()
        with m.Else():
            m.d.sync += timer.restart()

        # --- payloads out: the streams' payloads are wires, only their valid depends on the state --
        offer = Signal()                            # the payload is complete
        delivered = self._deliver(m, opcode, shift, layouts, offer)

        # --- errors: the opcode (COUNT, TIMEOUT; 0 before the opcode: the register is cleared at
        # SYNC), or the byte taken (GARBAGE, OPCODE) -------------------------------------------------
        m.d.comb += self.o_error.payload.byte.eq(opcode)

        with m.FSM():
            with m.State("IDLE"):                   # a frame must start here
                m.d.comb += self.i_rx.ready.eq(1)
                with m.If(take & (byte == SYNC)):
                    m.d.sync += opcode.eq(0)
                    m.next = "OPCODE"
                with m.Elif(take):
                    self._report(m, ErrorCode.GARBAGE, byte)
                    m.next = "HUNT"
            with m.State("HUNT"):                   # after garbage: drop bytes until SYNC or silence
                m.d.comb += [self.i_rx.ready.eq(1), waiting.eq(1)]
                with m.If(take & (byte == SYNC)):
                    m.d.sync += opcode.eq(0)
                    m.next = "OPCODE"
                with m.Elif(expired):
                    m.next = "IDLE"
            with m.State("OPCODE"):
                m.d.comb += [self.i_rx.ready.eq(1), waiting.eq(1)]
                with m.If(take & _any(byte == op for op in Command)):
                    m.d.sync += opcode.eq(byte)
                    m.next = "COUNT0"
                with m.Elif(take):
                    self._report(m, ErrorCode.OPCODE, byte)
                    m.next = "HUNT"
                self._timed_out(m, expired)
            with m.State("COUNT0"):                 # its byte goes to the shift register
                m.d.comb += [self.i_rx.ready.eq(1), waiting.eq(1)]
                with m.If(take):
                    m.next = "COUNT1"
                self._timed_out(m, expired)
            with m.State("COUNT1"):
                m.d.comb += [self.i_rx.ready.eq(1), waiting.eq(1), counted.eq(1)]
                with m.If(take):
                    m.d.sync += [left.eq(less), index.eq(0)]
                    self._count(m, opcode, none, has_payload)
                self._timed_out(m, expired)
            with m.State("PAYLOAD"):
                m.d.comb += [self.i_rx.ready.eq(1), waiting.eq(1)]
                with m.If(take):
                    m.d.sync += index.eq(index + 1)
                    with m.If(last):
                        m.d.sync += index.eq(0)
                        m.next = "HOLD"
                self._timed_out(m, expired)
            with m.State("HOLD"):                   # the payload waits on its stream
                m.d.comb += offer.eq(1)
                with m.If(delivered):
                    m.d.sync += left.eq(less)
                    m.next = "PAYLOAD"
                    with m.If(none):
                        m.next = "IDLE"
        return m

    def _report(self, m, code, byte=None):
        """An error; its byte is the opcode unless given."""
        m.d.comb += [self.o_error.valid.eq(1), self.o_error.payload.code.eq(code)]
        if byte is not None:
            m.d.comb += self.o_error.payload.byte.eq(byte)

    def _timed_out(self, m, expired):
        with m.If(expired):
            self._report(m, ErrorCode.TIMEOUT)
            m.next = "IDLE"

    def _count(self, m, opcode, empty, has_payload):
        """At the count's last byte: act on a command without payload (its pulse if its count is
        0, else a COUNT error), or start the payloads."""
        pulses = {Command.STATUS: self.o_status_req, Command.INFO: self.o_info_req,
                  Command.RESET: self.o_reset}
        m.next = "IDLE"
        with m.If(empty):
            for op, pulse in pulses.items():
                m.d.comb += pulse.eq(opcode == op)
        with m.Elif(has_payload):
            m.next = "PAYLOAD"
        with m.Else():
            self._report(m, ErrorCode.COUNT)
            m.next = "HUNT"

    def _deliver(self, m, opcode, shift, layouts, offer):
        """Offer the payload at the top of ``shift`` on its stream while ``offer``; return the
        transfer."""

        def payload(op):
            return shift[len(shift) - BYTE * payload_bytes(layouts[op]):][:Shape.cast(layouts[op]).width]

        kv = self.o_kv.payload
        pointer = Signal(kv_write_layout(self._cfg))    # the last KV write: where KV_DATA continues
        is_data = opcode == Command.KV_DATA
        with m.If(is_data):
            m.d.comb += [kv.base.eq(0), kv.kind.eq(pointer.kind), kv.bank.eq(pointer.bank),
                         kv.addr.eq(pointer.addr + 1), kv.data.eq(payload(Command.KV_DATA))]
        with m.Else():
            m.d.comb += kv.eq(payload(Command.KV_WRITE))
        m.d.comb += [
            self.o_kv.valid.eq(offer & ((opcode == Command.KV_WRITE) | is_data)),
            self.o_desc.valid.eq(offer & (opcode == Command.DESC)),
            self.o_desc.payload.eq(payload(Command.DESC)),
            self.o_query.valid.eq(offer & (opcode == Command.QUERY)),
            self.o_query.payload.eq(payload(Command.QUERY)),
        ]
        kv_fire = self.o_kv.valid & self.o_kv.ready
        with m.If(kv_fire):
            m.d.sync += pointer.eq(kv)
        return (kv_fire | (self.o_desc.valid & self.o_desc.ready)
                | (self.o_query.valid & self.o_query.ready))


def serializer_layout(width, tables=()):
    """An item of :class:`ByteSerializer`: ``bytes`` bytes of ``bits``, least significant first.

    With ``tables`` (byte strings), also ``table``: ``k > 0`` sends the bytes of ``tables[k - 1]``
    instead (``bytes`` is ignored), and ``keep``: the item's ``bits`` are not loaded; its bytes are
    those of the bits loaded by the item before (which a table item does not consume).
    """
    fields = {"bits": unsigned(width), "bytes": unsigned(bits_for(-(-width // BYTE)))}
    if tables:
        fields.update(table=unsigned(bits_for(len(tables))), keep=1)
    return data.StructLayout(fields)


class ByteSerializer(wiring.Component):
    """A word to bytes, least significant first; or a constant string of bytes, in its order.

    Parameters
    ----------
    width : int
        Bits of the widest item.
    tables : sequence of bytes, optional
        Constant byte strings that items can send (see :func:`serializer_layout`): a table of
        the bytes, indexed by the bytes left, instead of a register that would hold them.

    Members
    -------
    i_data : ``In(stream.Signature(serializer_layout(width, tables)))``
        Items; ``bytes`` (at most ``ceil(width / 8)``; 0 sends nothing) of ``bits`` each, or a
        table's bytes.
    o_data : ``Out(stream.Signature(8))``
        The bytes; ``valid`` is a register, ``payload`` a register or the table's byte.

    Latency: 1 cycle, item to first byte.
    Throughput: one byte per cycle; the next item is taken with the last byte of the current one.
    Numerics: none.
    """

    def __init__(self, *, width, tables=()):
        _check_positive("width", width)
        tables = tuple(bytes(table) for table in tables)
        if not all(tables):
            raise ValueError("a table must hold at least one byte")
        self._width = width
        self._tables = tables
        super().__init__({
            "i_data": In(stream.Signature(serializer_layout(width, tables))),
            "o_data": Out(stream.Signature(BYTE)),
        })

    def elaborate(self, platform):
        m = Module()
        tables = self._tables
        item = self.i_data.payload
        most = max([-(-self._width // BYTE)] + [len(table) for table in tables])
        shift = Signal(self._width)                 # the item's bits not yet sent
        left  = Signal(range(most + 1))             # bytes of the item still to leave
        table = Signal(range(len(tables) + 1))      # the item's table, 0: its bits
        accept = self.i_data.valid & self.i_data.ready
        out_fire = self.o_data.valid & self.o_data.ready
        m.d.comb += [
            self.o_data.valid.eq(left != 0),
            self.i_data.ready.eq((left == 0) | ((left == 1) & self.o_data.ready)),
        ]
        with m.Switch(table):
            with m.Case(0):
                m.d.comb += self.o_data.payload.eq(shift[:BYTE])
            for k, content in enumerate(tables, 1):
                # the last table takes the values that never occur; only the bits of left that can
                # be set are looked at
                with (m.Default() if k == len(tables) else m.Case(k)):
                    with m.Switch(left[:bits_for(len(content))]):
                        for n in range(1, len(content) + 1):
                            with m.Case(n):
                                m.d.comb += self.o_data.payload.eq(content[len(content) - n])

        with m.If(accept):
            m.d.sync += [left.eq(item.bytes), table.eq(item.table if tables else 0)]
            for k, content in enumerate(tables, 1):
                with m.If(item.table == k):
                    m.d.sync += left.eq(len(content))
        with m.Elif(out_fire):
            m.d.sync += left.eq(left - 1)
        load = (accept & ~item.keep) if tables else accept
        with m.If(load):
            m.d.sync += shift.eq(item.bits)
        with m.Elif(out_fire & (table == 0)):
            m.d.sync += shift.eq(shift >> BYTE)
        return m


class ReplyWriter(wiring.Component):
    """Reply frames, one at a time, as bytes.

    Parameters
    ----------
    cfg : AttentionConfig
    info : int
        The bits of the INFO record (:func:`~leanattn.fpga.protocol.info_layout`).

    Members
    -------
    i_out : ``In(stream.Signature(output_layout(cfg)))``
        The accelerator's output beats: ``head_dim // lanes`` beats per OUTPUT frame.
    i_error : ``In(stream.Signature(error_layout(), always_ready=True))``
        Errors to report; one waits at a time, and later ones are dropped while it does.
    i_status : ``In(status_layout(cfg))``
        The STATUS record to send, read when its frame's header is taken by the serializer.
    i_status_req, i_info_req : ``In(1)``
        Pulses: send a STATUS (INFO) frame; one of each waits at a time.
    i_abort : ``In(1)``
        A pulse: the accelerator was reset; the rest of an OUTPUT frame under way is sent as zero
        beats, so that the frame stays whole.
    o_status_sent : ``Out(1)``
        A pulse when a STATUS record is read.
    o_tx : ``Out(stream.Signature(8))``

    A frame waiting to be sent goes out when the one before it has ended, in the order ERROR,
    STATUS, INFO, OUTPUT.

    The bytes known when the design is built -- every header (a reply's count is fixed: 1, or
    ``head_dim // lanes`` for OUTPUT) and the INFO record -- are tables of the
    :class:`ByteSerializer`; its register is no wider than the widest of an ERROR record, a
    STATUS record and an output beat. An ERROR or STATUS record is loaded into it with its frame's
    header, and sent after it.

    Latency: a frame's first byte two cycles after its request (or its first beat), when idle.
    Throughput: as fast as ``o_tx`` takes bytes; an OUTPUT frame takes each beat when its bytes
    can go.
    Numerics: none.
    """

    def __init__(self, cfg, *, info):
        _check_cfg(cfg)
        if not isinstance(info, int) or not 0 <= info < 1 << info_layout().size:
            raise ValueError(f"info must be the bits of an INFO record, not {info!r}")
        self._cfg = cfg
        self._info = info
        super().__init__({
            "i_out":         In(stream.Signature(output_layout(cfg))),
            "i_error":       In(stream.Signature(error_layout(), always_ready=True)),
            "i_status":      In(status_layout(cfg)),
            "i_status_req":  In(1),
            "i_info_req":    In(1),
            "i_abort":       In(1),
            "o_status_sent": Out(1),
            "o_tx":          Out(stream.Signature(BYTE)),
        })

    def _frames(self):
        """``{Reply: (payload layout, payloads per frame)}``, in the order of priority."""
        cfg = self._cfg
        return {Reply.ERROR: (error_layout(), 1), Reply.STATUS: (status_layout(cfg), 1),
                Reply.INFO: (info_layout(), 1), Reply.OUTPUT: (output_layout(cfg), cfg.beats_per_key)}

    def elaborate(self, platform):
        m = Module()
        frames = self._frames()
        replies = list(frames)                      # a frame's reply: its index here
        headers = [bytes([SYNC, reply]) + frames[reply][1].to_bytes(2, "little") for reply in replies]
        info_table = len(headers) + 1               # the serializer's table of the INFO record
        width = max(Shape.cast(frames[reply][0]).width for reply in (Reply.ERROR, Reply.STATUS, Reply.OUTPUT))
        m.submodules.serializer = ser = ByteSerializer(
            width=width, tables=headers + [to_bytes(info_layout(), self._info)])
        wiring.connect(m, ser.o_data, wiring.flipped(self.o_tx))
        item = ser.i_data.payload
        accept = ser.i_data.valid & ser.i_data.ready

        error_pend = Signal()
        error_item = Signal(error_layout())
        status_pend = Signal()
        info_pend = Signal()

        # --- frame: which reply, its payloads left after the one offered, the reset flag ----------
        kind  = Signal(range(len(replies)))
        beats = Signal(range(frames[Reply.OUTPUT][1]), init=frames[Reply.OUTPUT][1] - 1)
        pad   = Signal()                            # the accelerator was reset in this frame
        less  = beats - 1                           # signed; its sign: beats was 0
        with m.If(self.i_abort):
            m.d.sync += pad.eq(1)
        read = Signal()                             # the header is taken: its record read
        with m.FSM() as fsm:
            with m.State("IDLE"):
                m.d.sync += [pad.eq(0), beats.eq(beats.init)]
                choices = [(error_pend, Reply.ERROR), (status_pend, Reply.STATUS), (info_pend, Reply.INFO),
                           (self.i_out.valid, Reply.OUTPUT)]
                for n, (pending, reply) in enumerate(choices):
                    with (m.If if n == 0 else m.Elif)(pending):
                        m.d.sync += kind.eq(replies.index(reply))
                        m.next = "HEADER"
            with m.State("HEADER"):                 # its table; the record is loaded with it
                m.d.comb += [ser.i_data.valid.eq(1), item.table.eq(kind + 1), read.eq(accept)]
                with m.If(accept):
                    self._clear(m, kind, replies, error_pend, status_pend, info_pend)
                    m.next = "PAYLOAD"
            with m.State("PAYLOAD"):
                with m.Switch(kind):
                    with m.Case(replies.index(Reply.OUTPUT)):   # each beat, zero after a reset
                        m.d.comb += [ser.i_data.valid.eq(self.i_out.valid | pad),
                                     item.bytes.eq(payload_bytes(frames[Reply.OUTPUT][0])),
                                     self.i_out.ready.eq(ser.i_data.ready & ~pad)]
                        with m.If(accept):
                            m.d.sync += beats.eq(less)
                            with m.If(less[-1]):
                                m.next = "IDLE"
                    with m.Case(replies.index(Reply.INFO)):
                        m.d.comb += [ser.i_data.valid.eq(1), item.table.eq(info_table)]
                        with m.If(accept):
                            m.next = "IDLE"
                    for reply in (Reply.ERROR, Reply.STATUS):   # the record loaded with the header
                        with m.Case(replies.index(reply)):
                            m.d.comb += [ser.i_data.valid.eq(1), item.keep.eq(1),
                                         item.bytes.eq(payload_bytes(frames[reply][0]))]
                            with m.If(accept):
                                m.next = "IDLE"

        # --- the serializer's bits: the record with the header (the error one if it is an ERROR
        # frame), a beat in the payload (zero after a reset); above a beat's and an error record's
        # bytes only a STATUS record has bits to send ------------------------------------------------
        beat_bits = max(payload_bytes(frames[Reply.OUTPUT][0]), payload_bytes(frames[Reply.ERROR][0])) * BYTE
        status = self.i_status.as_value()
        in_header = fsm.ongoing("HEADER")
        is_error = kind == replies.index(Reply.ERROR)
        either = (_masked(error_item.as_value(), in_header & is_error)
                  | _masked(status, in_header & ~is_error)
                  | _masked(self.i_out.payload.as_value(), ~in_header & ~pad))
        m.d.comb += item.bits.eq(Cat(either[:beat_bits], status[beat_bits:]))
        m.d.comb += self.o_status_sent.eq(read & (kind == replies.index(Reply.STATUS)))

        # --- pending requests: one of each kind waits; after the FSM, so that a request in the
        # cycle its kind's record is read is kept for the next frame --------------------------------
        with m.If(self.i_error.valid & (~error_pend | (read & is_error))):
            m.d.sync += [error_pend.eq(1), error_item.eq(self.i_error.payload)]
        with m.If(self.i_status_req):
            m.d.sync += status_pend.eq(1)
        with m.If(self.i_info_req):
            m.d.sync += info_pend.eq(1)
        return m

    def _clear(self, m, kind, replies, error_pend, status_pend, info_pend):
        """At the header's transfer: clear the frame's request."""
        with m.Switch(kind):
            for reply, pending in ((Reply.ERROR, error_pend), (Reply.STATUS, status_pend),
                                   (Reply.INFO, info_pend)):
                with m.Case(replies.index(reply)):
                    m.d.sync += pending.eq(0)


class HostInterface(wiring.Component):
    """The board's end of the host protocol (:mod:`leanattn.fpga.protocol`).

    Parameters
    ----------
    cfg : AttentionConfig
    bank_keys : int
        Keys per KV memory bank, reported in the INFO record.
    divisor : int
        The UART's clock cycles per bit, reported in the INFO record.
    timeout : int
        Cycles of silence inside a frame after which it is dropped (:class:`CommandParser`).

    Members
    -------
    i_rx : ``In(stream.Signature(8))``, o_tx : ``Out(stream.Signature(8))``
        Bytes from and to the UART.
    o_kv : ``Out(stream.Signature(kv_write_layout(cfg)))``
        KV memory writes; held while ``i_busy`` (a write never changes a running job's inputs).
    o_desc : ``Out(stream.Signature(descriptor_layout(cfg)))``
    o_query : ``Out(stream.Signature(query_layout(cfg)))``
    i_out : ``In(stream.Signature(output_layout(cfg)))``
        The accelerator's outputs, sent in OUTPUT frames as the UART allows.
    i_busy, i_done, i_error, i_cycles : ``In``
        The accelerator's status (``LeanAttention.o_busy`` ...); ``i_done`` ends a job: its
        record is kept and a STATUS frame sent.
    i_mem_error : ``In(1)``
        The KV memory's error flag, read at ``i_done`` (the board clears the memory's flag then).
    i_link_error : ``In(1)``
        The UART receiver's sticky errors, sent in each STATUS record; ``o_link_clear`` pulses
        when they have been read.
    o_link_clear : ``Out(1)``
    o_reset : ``Out(1)``
        A one-cycle pulse on a RESET command: reset the accelerator and the memory's read side.

    Latency: a payload reaches its stream one cycle after its last byte.
    Throughput: one byte per cycle each way, far above any UART's.
    Numerics: none.
    """

    def __init__(self, cfg, *, bank_keys, divisor, timeout):
        _check_cfg(cfg)
        for name, value in (("bank_keys", bank_keys), ("divisor", divisor), ("timeout", timeout)):
            _check_positive(name, value)
        if bank_keys > max_bank_keys(cfg):
            raise ValueError(f"bank_keys must be in the range 1..{max_bank_keys(cfg)} "
                             f"(max_heads * max_context), not {bank_keys}")
        self._cfg = cfg
        self._bank_keys, self._divisor, self._timeout = bank_keys, divisor, timeout
        super().__init__({
            "i_rx":         In(stream.Signature(BYTE)),
            "o_tx":         Out(stream.Signature(BYTE)),
            "o_kv":         Out(stream.Signature(kv_write_layout(cfg))),
            "o_desc":       Out(stream.Signature(descriptor_layout(cfg))),
            "o_query":      Out(stream.Signature(query_layout(cfg))),
            "i_out":        In(stream.Signature(output_layout(cfg))),
            "i_busy":       In(1),
            "i_done":       In(1),
            "i_error":      In(ERROR_BITS),
            "i_cycles":     In(cycle_bits(cfg)),
            "i_mem_error":  In(1),
            "i_link_error": In(1),
            "o_link_clear": Out(1),
            "o_reset":      Out(1),
        })

    @property
    def info(self):
        """The INFO record this interface sends."""
        return info_value(self._cfg, bank_keys=self._bank_keys, divisor=self._divisor)

    def elaborate(self, platform):
        m = Module()
        cfg = self._cfg
        m.submodules.parser = parser = CommandParser(cfg, timeout=self._timeout)
        m.submodules.writer = writer = ReplyWriter(cfg, info=pack(info_layout(), vars(self.info)))

        # --- commands in: KV writes wait while a job runs ---------------------------------------
        wiring.connect(m, wiring.flipped(self.i_rx), parser.i_rx)
        wiring.connect(m, parser.o_desc, wiring.flipped(self.o_desc))
        wiring.connect(m, parser.o_query, wiring.flipped(self.o_query))
        m.d.comb += [
            self.o_kv.payload.eq(parser.o_kv.payload),
            self.o_kv.valid.eq(parser.o_kv.valid & ~self.i_busy),
            parser.o_kv.ready.eq(self.o_kv.ready & ~self.i_busy),
            self.o_reset.eq(parser.o_reset),
        ]

        # --- the status record: the last job's end, the link and busy as they are ----------------
        error  = Signal(ERROR_BITS)
        mem    = Signal()
        jobs   = Signal(JOB_COUNT_BITS)
        cycles = Signal(cycle_bits(cfg))
        with m.If(self.i_done):
            m.d.sync += [error.eq(self.i_error), mem.eq(self.i_mem_error), jobs.eq(jobs + 1),
                         cycles.eq(self.i_cycles)]
        status = writer.i_status
        m.d.comb += [status.error.eq(error), status.mem_error.eq(mem), status.jobs.eq(jobs),
                     status.cycles.eq(cycles), status.link_error.eq(self.i_link_error),
                     status.busy.eq(self.i_busy)]

        # --- replies out --------------------------------------------------------------------------
        wiring.connect(m, wiring.flipped(self.i_out), writer.i_out)
        wiring.connect(m, parser.o_error, writer.i_error)
        wiring.connect(m, writer.o_tx, wiring.flipped(self.o_tx))
        m.d.comb += [
            writer.i_status_req.eq(self.i_done | parser.o_status_req),
            writer.i_info_req.eq(parser.o_info_req),
            writer.i_abort.eq(parser.o_reset),
            self.o_link_clear.eq(writer.o_status_sent),
        ]
        return m


class _Timer:
    """A timer that is done ``cycles - 1`` steps after its restart: a Galois LFSR whose states are
    the powers of ``x`` modulo a primitive polynomial of degree ``cycles.bit_length()``, so they
    do not repeat before that; its end is the power ``cycles - 1``. Compared with a binary counter
    it needs no carry chain, one LUT per tap at most. Beyond 32 bits (where the search below would
    be slow) it is a binary counter."""

    def __init__(self, cycles):
        width = cycles.bit_length()
        if width > 32:
            self._poly = None
            self.value = Signal(range(cycles))
            self.done = self.value == cycles - 1
            return
        self._poly = _primitive_poly(width)
        self.value = Signal(width, init=1)
        self.done = self.value == _xpow(cycles - 1, self._poly)

    def restart(self):
        return self.value.eq(self.value.init)

    def step(self):
        if self._poly is None:
            return self.value.eq(self.value + 1)
        top = self.value[-1]
        bits = [top] + [self.value[i - 1] ^ top if self._poly >> i & 1 else self.value[i - 1]
                        for i in range(1, len(self.value))]
        return self.value.eq(Cat(*bits))


def _polymulmod(a, b, poly):
    """``a * b`` modulo ``poly``, polynomials over GF(2) as integers."""
    degree = poly.bit_length() - 1
    result = 0
    while b:
        if b & 1:
            result ^= a
        b >>= 1
        a <<= 1
        if a >> degree & 1:
            a ^= poly
    return result


def _xpow(k, poly):
    """``x ** k`` modulo ``poly``."""
    result, base = 1, 2 if poly.bit_length() > 2 else 1
    while k:
        if k & 1:
            result = _polymulmod(result, base, poly)
        base = _polymulmod(base, base, poly)
        k >>= 1
    return result


@functools.cache
def _primitive_poly(degree):
    """The first primitive polynomial of ``degree`` with 2, 3 or 5 terms (``x ** degree`` and 1
    among them): ``x`` has the order ``2 ** degree - 1`` modulo it."""
    order = (1 << degree) - 1
    primes, rest, q = [], order, 2
    while q * q <= rest:
        if rest % q:
            q += 1
            continue
        primes.append(q)
        while rest % q == 0:
            rest //= q
    if rest > 1:
        primes.append(rest)
    middle = range(1, degree)
    for taps in [()] + [(k,) for k in middle] + list(itertools.combinations(middle, 3)):
        poly = 1 << degree | 1 | sum(1 << k for k in taps)
        if _xpow(order, poly) == 1 and all(_xpow(order // q, poly) != 1 for q in primes):
            return poly
    raise AssertionError(f"no primitive polynomial of degree {degree} found")


def _masked(value, enable):
    """``value`` where ``enable`` is high, else 0."""
    return value & enable.replicate(len(value))


def _any(values):
    result = Const(0, 1)
    for value in values:
        result = result | value
    return result
