"""The host protocol of the board: frames of payloads over the UART, in both directions.

This module is the single source of truth of the wire format: the host driver
(:mod:`leanattn.fpga.host`) encodes and decodes with it, the tests use it, and the hardware parser
and writer (:mod:`leanattn.fpga.hostif`) take their opcodes, sizes and layouts from it.
:class:`CommandModel` is the executable specification of the board's command parser, malformed
input included.

Frames
------
Every frame, in both directions:

====== ========================================================================================
byte   field
====== ========================================================================================
0      :data:`SYNC` (``0xA5``)
1      opcode (:class:`Command` host to board, :class:`Reply` board to host)
2, 3   ``count``: payloads that follow, little-endian, ``0 .. 65535`` (:data:`MAX_COUNT`)
4 ...  ``count`` payloads, each the opcode's payload size
====== ========================================================================================

A **payload** is the bits of the opcode's layout (``layout.const(value).as_bits()``) little-endian,
padded with zero bits to whole bytes: ``ceil(Shape.cast(layout).width / 8)`` bytes
(:func:`payload_bytes`). The bits and offsets are those of the Amaranth layouts the hardware uses,
so the host and the RTL cannot disagree about them. A long burst is split into frames of at most
:data:`MAX_COUNT` payloads.

Commands (host to board)
------------------------

====== ========== ============================= ============================================================
opcode name       payload                       meaning
====== ========== ============================= ============================================================
0x01   KV_WRITE   ``kv_write_layout(cfg)``      each payload is one write of ``KVMemory.i_write``, as is
0x02   KV_DATA    ``kv_data_layout(cfg)``       each payload is a data word (``base`` 0) for the bank of the
                                                last KV write, at the word after that write's ``addr``
0x03   DESC       ``descriptor_layout(cfg)``    descriptors to ``LeanAttention.i_desc``, in order
0x04   QUERY      ``query_layout(cfg)``         query beats to ``LeanAttention.i_query``, in order
0x05   STATUS     none (count 0)                send the last STATUS record again
0x06   INFO       none (count 0)                send the INFO record
0x07   RESET      none (count 0)                reset the accelerator and the KV memory's read side (the
                                                loaded words stay); an OUTPUT frame in progress is
                                                completed with zero beats
====== ========== ============================= ============================================================

KV_DATA makes a load one payload per memory word: the encoder (:func:`encode_kv_writes`) sends a
run of writes to consecutive words of one bank as one KV_WRITE and a KV_DATA burst. The "last KV
write" is a register of the board (after reset: K bank 0, word 0), updated by every KV write of
either command.

Replies (board to host)
-----------------------

====== ======== ============================= ==============================================================
opcode name     payload                       sent
====== ======== ============================= ==============================================================
0x81   OUTPUT   ``output_layout(cfg)``        one head's output, ``count = head_dim // lanes`` beats as
                                              the accelerator emits them (heads in the order they finish)
0x82   STATUS   :func:`status_layout` (1)     when a job ends (good or rejected), and on a STATUS command
0x83   INFO     :func:`info_layout` (1)       on an INFO command
0x84   ERROR    :func:`error_layout` (1)      when the parser meets malformed input (:class:`ErrorCode`)
====== ======== ============================= ==============================================================

Frames never interleave: a STATUS or ERROR reply waits for an OUTPUT frame in progress. A job's
STATUS record follows its last OUTPUT frame.

Rules for the host: load a job's KV memory, then send its descriptors and queries (the job starts
at the first of them), read its OUTPUT frames and its STATUS record; only then send the next job.
A KV write that arrives while a job runs waits for its end (it would change the job's inputs), and
descriptors or queries of a next job wait likewise: the UART cannot wait, so the bytes behind
them are lost (``link_error``). Reading the INFO record first checks that the board runs the same
configuration (``config_crc``) and says how many keys a bank holds.

Malformed input
---------------
The parser (:class:`CommandModel`) never waits for the link and never hangs:

=============== ==============================================================================
error code      cause, and what the parser does next
=============== ==============================================================================
1 GARBAGE       a byte other than SYNC where a frame should start: reported once, then bytes are
                dropped until a SYNC (or until the line idles)
2 OPCODE        an unknown opcode after SYNC: dropped until the next SYNC
3 COUNT         a nonzero count on STATUS, INFO or RESET: dropped until the next SYNC
4 TIMEOUT       the line went idle (``timeout`` cycles without a byte) inside a frame: the frame's
                unfinished payload is dropped (finished ones have been delivered); the next byte
                starts a frame
=============== ==============================================================================

The ERROR payload carries the code and the offending byte (the opcode for COUNT and TIMEOUT, 0 for
a TIMEOUT before the opcode). While one ERROR reply waits to be sent, later errors are not
reported. ``link_error`` in the STATUS record says that the UART receiver saw a framing error or
lost a byte since the previous STATUS record was sent.
"""

import enum
import numbers
import zlib
from dataclasses import dataclass

from amaranth.hdl import Shape, unsigned
from amaranth.lib import data

from ..hdl.jobload import ERROR_BITS
from ..hdl.kvmem import kv_write_layout
from ..hdl.layouts import output_layout
from ..hdl.ports import descriptor_layout, kv_data_layout, query_layout
from ..hdl.top import cycle_bits

__all__ = [
    "SYNC", "HEADER_BYTES", "MAX_COUNT", "PROTOCOL_VERSION", "JOB_COUNT_BITS",
    "Command", "Reply", "ErrorCode", "ProtocolError",
    "status_layout", "info_layout", "error_layout", "command_layouts", "reply_layouts",
    "payload_bytes", "pack", "unpack", "to_bytes", "from_bytes", "frames", "config_crc",
    "encode_kv_writes", "encode_descriptors", "encode_queries", "encode_command",
    "Frame", "Malformed", "FrameDecoder", "CommandModel", "Status", "Info",
    "info_value", "decode_status", "decode_info", "decode_error",
]

#: First byte of every frame.
SYNC = 0xA5
#: SYNC, opcode, count (two bytes).
HEADER_BYTES = 4
#: Most payloads in one frame (the count field's range).
MAX_COUNT = 0xFFFF
#: INFO's ``version``; changes whenever the wire format does.
PROTOCOL_VERSION = 1
#: Width of STATUS's ``jobs``: jobs ended since reset, modulo 256.
JOB_COUNT_BITS = 8


class Command(enum.IntEnum):
    """Opcodes from the host to the board."""
    KV_WRITE = 0x01
    KV_DATA  = 0x02
    DESC     = 0x03
    QUERY    = 0x04
    STATUS   = 0x05
    INFO     = 0x06
    RESET    = 0x07


class Reply(enum.IntEnum):
    """Opcodes from the board to the host."""
    OUTPUT = 0x81
    STATUS = 0x82
    INFO   = 0x83
    ERROR  = 0x84


class ErrorCode(enum.IntEnum):
    """Codes of an ERROR reply (see the module docstring)."""
    GARBAGE = 1
    OPCODE  = 2
    COUNT   = 3
    TIMEOUT = 4


class ProtocolError(ValueError):
    """Bytes that do not follow the protocol (a malformed reply, a value that does not fit)."""


# --- layouts -----------------------------------------------------------------------------------

def status_layout(cfg):
    """The STATUS record: the end of the last job, and the board's state when it was sent."""
    return data.StructLayout({
        "error":      unsigned(ERROR_BITS),         # the last job's error code (hdl.jobload)
        "mem_error":  1,                            # KV memory error during its load or run
        "link_error": 1,                            # UART framing error or lost byte since the last STATUS
        "busy":       1,                            # a job runs now
        "jobs":       unsigned(JOB_COUNT_BITS),     # jobs ended since reset, mod 256
        "cycles":     unsigned(cycle_bits(cfg)),    # LeanAttention.o_cycles of the last job (*)
    })
    # (*) From the job's first descriptor or query beat to its last output beat: on the board this
    # includes the time its queries take over the UART and the time its outputs wait for it.


def info_layout():
    """The INFO record. Fixed, whatever the configuration: a host reads it before it knows."""
    return data.StructLayout({
        "version":     8,                           # PROTOCOL_VERSION
        "config_crc":  32,                          # config_crc(cfg)
        "cores":       8,
        "lanes":       8,
        "head_dim":    16,
        "max_heads":   16,
        "max_context": 32,
        "bank_keys":   32,                          # keys per KV memory bank
        "divisor":     32,                          # clock cycles per UART bit
    })


def error_layout():
    """The ERROR record: what went wrong and the byte concerned."""
    return data.StructLayout({"code": 8, "byte": 8})


def command_layouts(cfg):
    """``{Command: payload layout, or None for a command without payload}``."""
    return {
        Command.KV_WRITE: kv_write_layout(cfg),
        Command.KV_DATA:  kv_data_layout(cfg),
        Command.DESC:     descriptor_layout(cfg),
        Command.QUERY:    query_layout(cfg),
        Command.STATUS:   None,
        Command.INFO:     None,
        Command.RESET:    None,
    }


def reply_layouts(cfg):
    """``{Reply: payload layout}``."""
    return {
        Reply.OUTPUT: output_layout(cfg),
        Reply.STATUS: status_layout(cfg),
        Reply.INFO:   info_layout(),
        Reply.ERROR:  error_layout(),
    }


def payload_bytes(layout):
    """Bytes of one payload of ``layout`` (0 for None)."""
    return 0 if layout is None else -(-Shape.cast(layout).width // 8)


def config_crc(cfg):
    """CRC-32 of the configuration's JSON: equal exactly when the configurations are."""
    return zlib.crc32(cfg.to_json().encode())


# --- payload bits --------------------------------------------------------------------------------

def pack(layout, value):
    """The bits of ``value`` in ``layout``: a dict for a struct (missing fields are 0), a list for
    an array, an integer or an enum member for a plain shape; an integer given for a struct or an
    array is taken as its bits. Equal to ``layout.const(value).as_bits()`` (a test checks it), and
    fast enough for a whole KV load."""
    if isinstance(value, enum.Enum):                # amaranth.lib.enum members are Python enums
        value = value.value
    if isinstance(value, numbers.Integral):
        value, shape = int(value), Shape.cast(layout)
        if isinstance(layout, data.Layout):
            lo, hi = 0, (1 << shape.width) - 1
        elif shape.signed:
            lo, hi = -(1 << (shape.width - 1)), (1 << (shape.width - 1)) - 1
        else:
            lo, hi = 0, (1 << shape.width) - 1
        if not lo <= value <= hi:
            raise ProtocolError(f"{value} does not fit {layout}")
        return value & ((1 << shape.width) - 1)
    if isinstance(layout, data.StructLayout):
        unknown = set(value) - {name for name, _ in layout}
        if unknown:
            raise ProtocolError(f"no field(s) {', '.join(sorted(unknown))} in {layout}")
        return sum(pack(field.shape, value.get(name, 0)) << field.offset for name, field in layout)
    if isinstance(layout, data.ArrayLayout):
        if len(value) != layout.length:
            raise ProtocolError(f"{layout} needs {layout.length} elements, not {len(value)}")
        width = Shape.cast(layout.elem_shape).width
        return sum(pack(layout.elem_shape, item) << (i * width) for i, item in enumerate(value))
    raise ProtocolError(f"cannot pack {value!r} into {layout}")


def unpack(layout, bits):
    """The value of ``bits`` in ``layout``: dicts, lists and ints (signed fields sign-extended)."""
    if isinstance(layout, data.StructLayout):
        return {name: unpack(field.shape, bits >> field.offset & ((1 << field.width) - 1))
                for name, field in layout}
    if isinstance(layout, data.ArrayLayout):
        width = Shape.cast(layout.elem_shape).width
        return [unpack(layout.elem_shape, bits >> (i * width) & ((1 << width) - 1))
                for i in range(layout.length)]
    shape = Shape.cast(layout)
    if shape.signed and bits >> (shape.width - 1) & 1:
        return bits - (1 << shape.width)
    return bits


def to_bytes(layout, bits):
    """A payload: ``bits`` little-endian, padded to :func:`payload_bytes`."""
    return bits.to_bytes(payload_bytes(layout), "little")


def from_bytes(layout, payload):
    """The bits of a payload; padding bits must be 0."""
    bits = int.from_bytes(payload, "little")
    if bits >> Shape.cast(layout).width:
        raise ProtocolError(f"padding bits of a {Shape.cast(layout).width}-bit payload are not 0: "
                            f"{bytes(payload).hex()}")
    return bits


# --- encoding --------------------------------------------------------------------------------------

def frames(opcode, payloads):
    """Frames of opcode ``opcode`` carrying ``payloads`` (a list of bytes objects): bursts of at
    most :data:`MAX_COUNT`; one empty frame when there are none."""
    payloads = list(payloads)
    out = bytearray()
    for start in range(0, max(len(payloads), 1), MAX_COUNT):
        chunk = payloads[start:start + MAX_COUNT]
        out += bytes([SYNC, int(opcode)]) + len(chunk).to_bytes(2, "little")
        for payload in chunk:
            out += payload
    return bytes(out)


def encode_command(command):
    """A command without payload: STATUS, INFO or RESET."""
    if command not in (Command.STATUS, Command.INFO, Command.RESET):
        raise ValueError(f"command must be STATUS, INFO or RESET, not {command!r}")
    return frames(command, [])


def encode_kv_writes(cfg, writes):
    """KV_WRITE and KV_DATA frames for ``writes`` (``kv_write_layout`` values, as from
    :meth:`PackedKV.writes <leanattn.sim.packer.PackedKV.writes>`, or their bits), in order. A
    data write to the word after the previous write's, in the same bank, travels as a KV_DATA
    payload; any other write as a KV_WRITE payload."""
    layouts = command_layouts(cfg)
    write_layout, data_layout = layouts[Command.KV_WRITE], layouts[Command.KV_DATA]
    fields = dict(write_layout)
    data_field = fields["data"]
    data_mask = (1 << data_field.width) - 1
    # The bits that must match for a KV_DATA: base (0), kind and bank; addr must be the next word.
    addr_field = fields["addr"]
    addr_mask = ((1 << addr_field.width) - 1) << addr_field.offset
    target_mask = ((1 << write_layout.size) - 1) & ~addr_mask & ~(data_mask << data_field.offset)
    base_bit = 1 << fields["base"].offset

    out, run_op, run = bytearray(), None, []
    previous = None                                 # the board's pointer is not known yet
    pack_write = _write_packer(write_layout)
    for write in writes:
        bits = pack_write(write)
        addr = (bits & addr_mask) >> addr_field.offset
        if previous is not None and (bits & target_mask) == (previous & target_mask & ~base_bit) \
                and addr == ((previous & addr_mask) >> addr_field.offset) + 1:
            op, payload = Command.KV_DATA, to_bytes(data_layout, bits >> data_field.offset & data_mask)
        else:
            op, payload = Command.KV_WRITE, to_bytes(write_layout, bits)
        if op != run_op and run:
            out += frames(run_op, run)
            run = []
        run_op = op
        run.append(payload)
        previous = bits
    if run:
        out += frames(run_op, run)
    return bytes(out)


def _write_packer(layout):
    """:func:`pack` for ``kv_write_layout`` values, specialized: a whole job's load is 10**5 writes.
    Every field is range-checked as :func:`pack` does."""
    fields = dict(layout)
    data_shape = fields["data"].shape
    elem = Shape.cast(data_shape.elem_shape)
    lo = -(1 << (elem.width - 1)) if elem.signed else 0
    hi = lo + (1 << elem.width) - 1
    mask = (1 << elem.width) - 1
    plain = [(name, field.offset, 1 << field.width) for name, field in fields.items() if name != "data"]
    data_offset = fields["data"].offset

    def pack_write(write):
        if isinstance(write, numbers.Integral) or set(write) != set(fields):
            return pack(layout, write)
        bits = 0
        for name, offset, limit in plain:
            value = write[name]
            value = value.value if isinstance(value, enum.Enum) else int(value)
            if not 0 <= value < limit:
                raise ProtocolError(f"{name} {value} does not fit {layout}")
            bits |= value << offset
        items = write["data"]
        if len(items) != data_shape.length:
            raise ProtocolError(f"{data_shape} needs {data_shape.length} elements, not {len(items)}")
        for i, value in enumerate(items):
            if not lo <= value <= hi:
                raise ProtocolError(f"{value} does not fit {elem}")
            bits |= (int(value) & mask) << (data_offset + i * elem.width)
        return bits
    return pack_write


def encode_descriptors(cfg, descriptors):
    """One DESC burst of ``descriptors`` (``descriptor_layout`` values or bits)."""
    layout = command_layouts(cfg)[Command.DESC]
    return frames(Command.DESC, [to_bytes(layout, pack(layout, d)) for d in descriptors])


def encode_queries(cfg, beats):
    """One QUERY burst of query ``beats`` (``query_layout`` values or bits)."""
    layout = command_layouts(cfg)[Command.QUERY]
    return frames(Command.QUERY, [to_bytes(layout, pack(layout, b)) for b in beats])


# --- decoding --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Frame:
    """A whole frame: its opcode and its payloads' bits."""
    opcode:   int
    payloads: tuple


@dataclass(frozen=True)
class Malformed:
    """Malformed input met by a decoder: an :class:`ErrorCode` and the byte concerned."""
    code: int
    byte: int


class FrameDecoder:
    """Frames out of a byte stream, resynchronizing on malformed input exactly like the board's
    command parser (see the module docstring).

    ``layouts`` is ``{opcode: payload layout or None}`` (:func:`command_layouts` or
    :func:`reply_layouts`); an opcode whose layout is None takes no payload (a nonzero count is
    malformed). :meth:`feed` returns the :class:`Frame` and :class:`Malformed` items completed by
    the bytes given, in order; :meth:`idle` tells it the line went idle (a frame in progress is
    dropped: :data:`ErrorCode.TIMEOUT`). ``partial`` receives each payload as soon as it is
    complete, before its frame is (the board acts on payloads one by one).
    """

    def __init__(self, layouts, *, partial=None):
        self._layouts = dict(layouts)
        self._sizes = {int(op): payload_bytes(layout) for op, layout in self._layouts.items()}
        self._partial = partial
        self._state = "idle"
        self._opcode = 0
        self._count = 0
        self._buffer = bytearray()
        self._payloads = []

    @property
    def needed(self):
        """Bytes that can still belong to the frame under way (1 between frames): a reader that
        reads no more than this never takes bytes of the next frame."""
        if self._state in ("idle", "hunt"):
            return 1
        if self._state != "payload":
            return {"opcode": 3, "count0": 2, "count1": 1}[self._state]
        size = self._sizes[self._opcode]
        return (self._count - len(self._payloads)) * size - len(self._buffer)

    @property
    def in_frame(self):
        """Whether a frame has begun and not ended."""
        return self._state not in ("idle", "hunt")

    def idle(self):
        """The line idled: drop a frame in progress (TIMEOUT), stop hunting for SYNC."""
        events = []
        if self.in_frame:
            events.append(Malformed(ErrorCode.TIMEOUT, self._opcode if self._state != "opcode" else 0))
        self._state = "idle"
        return events

    def feed(self, chunk):
        events = []
        for byte in bytes(chunk):
            event = self._byte(byte)
            if event is not None:
                events.append(event)
        return events

    def _byte(self, byte):
        state = self._state
        if state in ("idle", "hunt"):
            if byte == SYNC:
                self._state = "opcode"
                return None
            self._state = "hunt"
            return Malformed(ErrorCode.GARBAGE, byte) if state == "idle" else None
        if state == "opcode":
            if byte not in self._sizes:
                self._state = "hunt"
                return Malformed(ErrorCode.OPCODE, byte)
            self._opcode, self._state = byte, "count0"
            return None
        if state == "count0":
            self._count, self._state = byte, "count1"
            return None
        if state == "count1":
            self._count |= byte << 8
            self._payloads, self._buffer = [], bytearray()
            if self._sizes[self._opcode] == 0 and self._count:
                self._state = "hunt"
                return Malformed(ErrorCode.COUNT, self._opcode)
            if self._count == 0:
                self._state = "idle"
                return Frame(self._opcode, ())
            self._state = "payload"
            return None
        self._buffer.append(byte)               # payload
        if len(self._buffer) < self._sizes[self._opcode]:
            return None
        bits = from_bytes(self._layouts[self._opcode], self._buffer) if self._partial is None else \
            int.from_bytes(self._buffer, "little")
        self._buffer = bytearray()
        self._payloads.append(bits)
        if self._partial is not None:
            self._partial(self._opcode, bits)
        if len(self._payloads) < self._count:
            return None
        self._state = "idle"
        return Frame(self._opcode, tuple(self._payloads))


class CommandModel:
    """The executable specification of the board's command parser.

    Feed it the bytes the board receives, in chunks separated by idle gaps longer than the
    board's timeout (:meth:`run`); it returns what the board does, in order:
    ``("kv", bits)`` (a ``kv_write_layout`` write, KV_DATA already expanded), ``("desc", bits)``,
    ``("query", bits)``, ``("status",)``, ``("info",)``, ``("reset",)`` and ``("error", code,
    byte)``. Payloads are delivered one by one as they complete, with their padding bits dropped
    (the board ignores them).
    """

    def __init__(self, cfg):
        self._cfg = cfg
        layouts = command_layouts(cfg)
        self._write_layout = layouts[Command.KV_WRITE]
        self._fields = dict(self._write_layout)
        self._actions = []
        self._pointer = 0
        self._decoder = FrameDecoder(layouts, partial=self._payload)

    def _payload(self, opcode, bits):
        layouts = command_layouts(self._cfg)
        bits &= (1 << Shape.cast(layouts[opcode]).width) - 1        # the board ignores the padding
        if opcode == Command.KV_WRITE:
            self._pointer = bits
            self._actions.append(("kv", bits))
        elif opcode == Command.KV_DATA:
            addr, data_field = self._fields["addr"], self._fields["data"]
            addr_mask = (1 << addr.width) - 1
            keep = self._pointer & ~(1 << self._fields["base"].offset) & ~(addr_mask << addr.offset) \
                & ~(((1 << data_field.width) - 1) << data_field.offset)
            next_addr = ((self._pointer >> addr.offset) + 1) & addr_mask
            self._pointer = keep | next_addr << addr.offset | bits << data_field.offset
            self._actions.append(("kv", self._pointer))
        else:
            self._actions.append(("desc" if opcode == Command.DESC else "query", bits))

    def feed(self, chunk):
        """Bytes arriving without an idle gap; returns the actions they cause."""
        for byte in bytes(chunk):           # one at a time: payload actions and events in order
            for event in self._decoder.feed(bytes([byte])):
                self._event(event)
        return self._take()

    def idle(self):
        """An idle gap longer than the timeout."""
        for event in self._decoder.idle():
            self._event(event)
        return self._take()

    def run(self, chunks):
        """Every chunk in turn, an idle gap after each; all the actions."""
        actions = []
        for chunk in chunks:
            actions += self.feed(chunk) + self.idle()
        return actions

    def _event(self, event):
        if isinstance(event, Malformed):
            self._actions.append(("error", int(event.code), event.byte))
        elif event.opcode in (Command.STATUS, Command.INFO, Command.RESET):
            self._actions.append((Command(event.opcode).name.lower(),))

    def _take(self):
        actions, self._actions = self._actions, []
        return actions


@dataclass(frozen=True)
class Status:
    """A STATUS record (see :func:`status_layout`)."""
    error:      int
    mem_error:  int
    link_error: int
    busy:       int
    jobs:       int
    cycles:     int


@dataclass(frozen=True)
class Info:
    """An INFO record (see :func:`info_layout`)."""
    version:     int
    config_crc:  int
    cores:       int
    lanes:       int
    head_dim:    int
    max_heads:   int
    max_context: int
    bank_keys:   int
    divisor:     int


def info_value(cfg, *, bank_keys, divisor):
    """The INFO record of a board built from ``cfg`` with these banks and this UART divisor."""
    return Info(version=PROTOCOL_VERSION, config_crc=config_crc(cfg), cores=cfg.cores, lanes=cfg.lanes,
                head_dim=cfg.head_dim, max_heads=cfg.max_heads, max_context=cfg.max_context,
                bank_keys=bank_keys, divisor=divisor)


def decode_status(cfg, bits):
    return Status(**unpack(status_layout(cfg), bits))


def decode_info(bits):
    return Info(**unpack(info_layout(), bits))


def decode_error(bits):
    value = unpack(error_layout(), bits)
    return Malformed(value["code"], value["byte"])
