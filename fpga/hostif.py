"""The board's host interface: UART bytes in, the accelerator's input streams out, and back.

:class:`HostInterface` follows :mod:`leanattn.fpga.protocol` (the wire format, its tables and the
parser's behaviour on malformed input are documented there). It is made of:

* :class:`CommandParser` -- bytes to KV memory writes, descriptors and query beats, plus the
  commands without payload and the error events;
* :class:`ReplyWriter` -- OUTPUT, STATUS, INFO and ERROR frames to bytes, one frame at a time;
* :class:`ByteSerializer` -- the writer's datapath: a word and a byte count in, bytes out.

Nothing is dropped inside: every stream waits on the one after it (the accelerator's outputs wait
for the UART, which is far slower than the core). Only the UART receiver, which cannot hold the
host back, may lose a byte, and then says so (``link_error``).
"""

from amaranth.hdl import Cat, Const, Module, Shape, Signal, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from ..hdl.config import AttentionConfig, bits_for
from ..hdl.jobload import ERROR_BITS
from ..hdl.kvmem import kv_write_layout, max_bank_keys
from ..hdl.layouts import output_layout
from ..hdl.ports import descriptor_layout, query_layout
from ..hdl.top import cycle_bits
from .protocol import (
    HEADER_BYTES,
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

    Latency: a payload is offered the cycle after its last byte is taken; a pulse or an error
    comes in the cycle its byte is taken.
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

        # --- frame registers: opcode, payloads left, the payload being assembled -------------------
        opcode  = Signal(BYTE)
        left    = Signal(range(MAX_COUNT + 1))      # the count field: payloads still to come
        index   = Signal(range(max(sizes.values())))
        buffer  = Signal(BYTE * max(sizes.values()))
        byte    = self.i_rx.payload
        take    = Signal()                          # a byte transfers at this edge
        last    = Signal()                          # it is the last byte of a payload
        m.d.comb += take.eq(self.i_rx.valid & self.i_rx.ready)
        with m.Switch(opcode):
            for op, size in sizes.items():
                if size:
                    with m.Case(op):
                        m.d.comb += last.eq(index == size - 1)

        # --- timer: cycles waiting for a byte inside a frame ----------------------------------------
        waiting = Signal()
        timer   = Signal(range(self._timeout))
        expired = Signal()
        m.d.comb += expired.eq(waiting & ~self.i_rx.valid & (timer == self._timeout - 1))
        with m.If(waiting & ~self.i_rx.valid & ~expired):
            m.d.sync += timer.eq(timer + 1)
        with m.Else():
            m.d.sync += timer.eq(0)

        with m.FSM():
            with m.State("IDLE"):                   # a frame must start here
                m.d.comb += self.i_rx.ready.eq(1)
                with m.If(take & (byte == SYNC)):
                    m.next = "OPCODE"
                with m.Elif(take):
                    self._report(m, ErrorCode.GARBAGE, byte)
                    m.next = "HUNT"
            with m.State("HUNT"):                   # after garbage: drop bytes until SYNC or silence
                m.d.comb += [self.i_rx.ready.eq(1), waiting.eq(1)]
                with m.If(take & (byte == SYNC)):
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
                with m.Elif(expired):
                    self._report(m, ErrorCode.TIMEOUT, 0)
                    m.next = "IDLE"
            with m.State("COUNT0"):
                m.d.comb += [self.i_rx.ready.eq(1), waiting.eq(1)]
                with m.If(take):
                    m.d.sync += left[:BYTE].eq(byte)
                    m.next = "COUNT1"
                self._timed_out(m, expired, opcode)
            with m.State("COUNT1"):
                m.d.comb += [self.i_rx.ready.eq(1), waiting.eq(1)]
                with m.If(take):
                    self._count(m, opcode, Cat(left[:BYTE], byte), sizes)
                    m.d.sync += [left.eq(Cat(left[:BYTE], byte)), index.eq(0)]
                self._timed_out(m, expired, opcode)
            with m.State("PAYLOAD"):
                m.d.comb += [self.i_rx.ready.eq(1), waiting.eq(1)]
                with m.If(take):
                    m.d.sync += [buffer.word_select(index, BYTE).eq(byte), index.eq(index + 1)]
                    with m.If(last):
                        m.next = "HOLD"
                self._timed_out(m, expired, opcode)
            with m.State("HOLD"):                   # the payload waits on its stream
                with m.If(self._deliver(m, opcode, buffer, layouts)):
                    m.d.sync += [left.eq(left - 1), index.eq(0)]
                    m.next = "PAYLOAD"
                    with m.If(left == 1):
                        m.next = "IDLE"
        return m

    def _report(self, m, code, byte):
        m.d.comb += [self.o_error.valid.eq(1), self.o_error.payload.code.eq(code),
                     self.o_error.payload.byte.eq(byte)]

    def _timed_out(self, m, expired, opcode):
        with m.If(expired):
            self._report(m, ErrorCode.TIMEOUT, opcode)
            m.next = "IDLE"

    def _count(self, m, opcode, count, sizes):
        """At the count's second byte: act on a command without payload, or start the payloads."""
        pulses = {Command.STATUS: self.o_status_req, Command.INFO: self.o_info_req,
                  Command.RESET: self.o_reset}
        with m.Switch(opcode):
            for op, pulse in pulses.items():
                with m.Case(op):
                    with m.If(count == 0):
                        m.d.comb += pulse.eq(1)
                        m.next = "IDLE"
                    with m.Else():
                        self._report(m, ErrorCode.COUNT, opcode)
                        m.next = "HUNT"
            with m.Default():
                m.next = "IDLE"
                with m.If(count != 0):
                    m.next = "PAYLOAD"

    def _deliver(self, m, opcode, buffer, layouts):
        """Offer the assembled payload on its stream; return the transfer."""
        kv = self.o_kv.payload
        pointer = Signal(kv_write_layout(self._cfg))    # the last KV write: where KV_DATA continues
        fields = data.View(layouts[Command.KV_WRITE], buffer[:Shape.cast(layouts[Command.KV_WRITE]).width])
        word = buffer[:Shape.cast(layouts[Command.KV_DATA]).width]
        with m.If(opcode == Command.KV_DATA):
            m.d.comb += [kv.base.eq(0), kv.kind.eq(pointer.kind), kv.bank.eq(pointer.bank),
                         kv.addr.eq(pointer.addr + 1), kv.data.eq(word)]
        with m.Else():
            m.d.comb += kv.eq(fields)
        m.d.comb += [
            self.o_kv.valid.eq((opcode == Command.KV_WRITE) | (opcode == Command.KV_DATA)),
            self.o_desc.valid.eq(opcode == Command.DESC),
            self.o_desc.payload.eq(buffer[:Shape.cast(layouts[Command.DESC]).width]),
            self.o_query.valid.eq(opcode == Command.QUERY),
            self.o_query.payload.eq(buffer[:Shape.cast(layouts[Command.QUERY]).width]),
        ]
        kv_fire = self.o_kv.valid & self.o_kv.ready
        with m.If(kv_fire):
            m.d.sync += pointer.eq(kv)
        return (kv_fire | (self.o_desc.valid & self.o_desc.ready)
                | (self.o_query.valid & self.o_query.ready))


def serializer_layout(width):
    """An item of :class:`ByteSerializer`: ``bytes`` bytes of ``bits``, least significant first."""
    return data.StructLayout({"bits": unsigned(width), "bytes": unsigned(bits_for(-(-width // BYTE)))})


class ByteSerializer(wiring.Component):
    """A word to bytes, least significant first.

    Parameters
    ----------
    width : int
        Bits of the widest item.

    Members
    -------
    i_data : ``In(stream.Signature(serializer_layout(width)))``
        Items; ``bytes`` (at most ``ceil(width / 8)``; 0 sends nothing) of ``bits`` each.
    o_data : ``Out(stream.Signature(8))``
        The bytes; ``valid`` and ``payload`` are registers.

    Latency: 1 cycle, item to first byte.
    Throughput: one byte per cycle; the next item is taken with the last byte of the current one.
    Numerics: none.
    """

    def __init__(self, *, width):
        _check_positive("width", width)
        self._width = width
        super().__init__({
            "i_data": In(stream.Signature(serializer_layout(width))),
            "o_data": Out(stream.Signature(BYTE)),
        })

    def elaborate(self, platform):
        m = Module()
        nbytes = -(-self._width // BYTE)
        shift = Signal(nbytes * BYTE)
        left  = Signal(range(nbytes + 1))           # bytes of the item still to leave
        out_fire = self.o_data.valid & self.o_data.ready
        m.d.comb += [
            self.o_data.valid.eq(left != 0),
            self.o_data.payload.eq(shift[:BYTE]),
            self.i_data.ready.eq((left == 0) | ((left == 1) & self.o_data.ready)),
        ]
        with m.If(self.i_data.valid & self.i_data.ready):
            m.d.sync += [shift.eq(self.i_data.payload.bits), left.eq(self.i_data.payload.bytes)]
        with m.Elif(out_fire):
            m.d.sync += [shift.eq(shift >> BYTE), left.eq(left - 1)]
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
        The STATUS record to send, read when its frame's payload starts.
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
        """``{Reply: (payload layout, payloads per frame)}``."""
        cfg = self._cfg
        return {Reply.ERROR: (error_layout(), 1), Reply.STATUS: (status_layout(cfg), 1),
                Reply.INFO: (info_layout(), 1), Reply.OUTPUT: (output_layout(cfg), cfg.beats_per_key)}

    def elaborate(self, platform):
        m = Module()
        frames = self._frames()
        width = max([HEADER_BYTES * BYTE] + [payload_bytes(layout) * BYTE for layout, _ in frames.values()])
        m.submodules.serializer = ser = ByteSerializer(width=width)
        wiring.connect(m, ser.o_data, wiring.flipped(self.o_tx))
        item = ser.i_data.payload

        error_pend = Signal()
        error_item = Signal(error_layout())
        status_pend = Signal()
        info_pend = Signal()

        # --- frame: which reply, its payloads left, the record it sends ---------------------------
        kind   = Signal(BYTE)
        beats  = Signal(range(MAX_COUNT + 1))       # payloads of the frame still to send: its count
        record = Signal(max(Shape.cast(frames[reply][0]).width
                            for reply in (Reply.ERROR, Reply.STATUS, Reply.INFO)))
        pad    = Signal()                           # the accelerator was reset in this frame
        with m.If(self.i_abort):
            m.d.sync += pad.eq(1)
        accept = ser.i_data.valid & ser.i_data.ready
        with m.FSM() as fsm:
            with m.State("IDLE"):
                m.d.sync += pad.eq(0)
                choices = [(error_pend, Reply.ERROR), (status_pend, Reply.STATUS), (info_pend, Reply.INFO),
                           (self.i_out.valid, Reply.OUTPUT)]
                for n, (pending, reply) in enumerate(choices):
                    with (m.If if n == 0 else m.Elif)(pending):
                        m.d.sync += [kind.eq(reply), beats.eq(frames[reply][1])]
                        m.next = "HEADER"
            with m.State("HEADER"):
                m.d.comb += [ser.i_data.valid.eq(1), item.bytes.eq(HEADER_BYTES),
                             item.bits.eq(Cat(Const(SYNC, BYTE), kind, beats))]
                with m.If(accept):
                    self._load_record(m, kind, record, error_pend, status_pend, info_pend, error_item)
                    m.next = "PAYLOAD"
            with m.State("PAYLOAD"):
                self._payload(m, ser.i_data, kind, record, pad, frames)
                with m.If(accept):
                    m.d.sync += beats.eq(beats - 1)
                    with m.If(beats == 1):
                        m.next = "IDLE"

        in_payload = fsm.ongoing("PAYLOAD")

        # --- pending requests: one of each kind waits; after the FSM, so that a request in the
        # cycle its kind's record is taken is kept for the next frame -------------------------------
        with m.If(self.i_error.valid & (~error_pend | (accept & (kind == Reply.ERROR) & ~in_payload))):
            m.d.sync += [error_pend.eq(1), error_item.eq(self.i_error.payload)]
        with m.If(self.i_status_req):
            m.d.sync += status_pend.eq(1)
        with m.If(self.i_info_req):
            m.d.sync += info_pend.eq(1)
        return m

    def _load_record(self, m, kind, record, error_pend, status_pend, info_pend, error_item):
        """At the header's transfer: take the record the frame sends, and clear its request."""
        with m.Switch(kind):
            with m.Case(Reply.ERROR):
                m.d.sync += [record.eq(error_item), error_pend.eq(0)]
            with m.Case(Reply.STATUS):
                m.d.sync += [record.eq(self.i_status), status_pend.eq(0)]
                m.d.comb += self.o_status_sent.eq(1)
            with m.Case(Reply.INFO):
                m.d.sync += [record.eq(self._info), info_pend.eq(0)]

    def _payload(self, m, item, kind, record, pad, frames):
        """Offer the frame's next payload to ``item``: the record, or the next output beat (zero
        after a reset)."""
        with m.If(kind == Reply.OUTPUT):
            size = payload_bytes(frames[Reply.OUTPUT][0])
            m.d.comb += [item.payload.bytes.eq(size), item.valid.eq(self.i_out.valid | pad),
                         self.i_out.ready.eq(item.ready & ~pad)]
            with m.If(~pad):
                m.d.comb += item.payload.bits.eq(self.i_out.payload)
        with m.Else():
            m.d.comb += [item.valid.eq(1), item.payload.bits.eq(record)]
            with m.Switch(kind):
                for reply in (Reply.ERROR, Reply.STATUS, Reply.INFO):
                    with m.Case(reply):
                        m.d.comb += item.payload.bytes.eq(payload_bytes(frames[reply][0]))


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


def _any(values):
    result = Const(0, 1)
    for value in values:
        result = result | value
    return result
