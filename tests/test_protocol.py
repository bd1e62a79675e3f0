"""The host protocol: payload packing equal to the Amaranth layouts', frames and bursts, round trips
of every command and reply (hypothesis), the KV load's compact encoding, and the parser model's
recovery from malformed input."""

import enum

import numpy as np
import pytest
from amaranth.hdl import Shape
from amaranth.lib import data
from hypothesis import given, settings
from hypothesis import strategies as st

from leanattn.fpga import protocol as P
from leanattn.hdl.config import PRESETS
from leanattn.hdl.kvmem import kv_write_layout
from leanattn.sim.configs import TEST_CONFIGS
from leanattn.sim.jobgen import random_int_job
from leanattn.sim.packer import bank_keys_for, pack_kv

NAMES = ["tiny", "default", "odd"]


def values(layout):
    """A hypothesis strategy for values of ``layout``."""
    if isinstance(layout, data.StructLayout):
        return st.fixed_dictionaries({name: values(field.shape) for name, field in layout})
    if isinstance(layout, data.ArrayLayout):
        return st.lists(values(layout.elem_shape), min_size=layout.length, max_size=layout.length)
    if isinstance(layout, type) and issubclass(layout, enum.Enum):
        return st.sampled_from(list(layout))
    shape = Shape.cast(layout)
    if shape.signed:
        return st.integers(-(1 << (shape.width - 1)), (1 << (shape.width - 1)) - 1)
    return st.integers(0, (1 << shape.width) - 1)


def all_layouts(cfg):
    layouts = {op.name: layout for op, layout in P.command_layouts(cfg).items() if layout is not None}
    layouts.update({f"reply_{op.name}": layout for op, layout in P.reply_layouts(cfg).items()})
    return layouts


@pytest.mark.parametrize("name", NAMES)
@settings(max_examples=30)
@given(st.data())
def test_pack_matches_amaranth(name, draw):
    """pack() gives the bits of layout.const() and unpack() inverts it, for every payload layout."""
    cfg = TEST_CONFIGS[name]
    for label, layout in all_layouts(cfg).items():
        value = draw.draw(values(layout), label=label)
        bits = P.pack(layout, value)
        assert bits == layout.const(value).as_bits(), label
        assert P.pack(layout, P.unpack(layout, bits)) == bits, label
        payload = P.to_bytes(layout, bits)
        assert len(payload) == -(-Shape.cast(layout).width // 8) == P.payload_bytes(layout)
        assert P.from_bytes(layout, payload) == bits


def test_pack_errors():
    layout = kv_write_layout(PRESETS["tiny"])
    with pytest.raises(P.ProtocolError, match="does not fit"):
        P.pack(layout, {"data": [128]})
    with pytest.raises(P.ProtocolError, match="no field"):
        P.pack(layout, {"size": 1})
    with pytest.raises(P.ProtocolError, match="needs 1 elements, not 2"):
        P.pack(layout, {"data": [1, 2]})
    cfg = PRESETS["tiny"]
    with pytest.raises(P.ProtocolError, match="300 does not fit signed"):
        P.encode_kv_writes(cfg, [{"base": 0, "kind": 0, "bank": 0, "addr": 0, "data": [300]}])
    with pytest.raises(P.ProtocolError, match="addr 262144 does not fit"):
        P.encode_kv_writes(cfg, [{"base": 0, "kind": 0, "bank": 0, "addr": 1 << 18, "data": [3]}])
    status = P.status_layout(PRESETS["tiny"])
    payload = bytearray(P.to_bytes(status, 0))
    payload[-1] |= 0x80                                     # a padding bit
    with pytest.raises(P.ProtocolError, match="padding bits"):
        P.from_bytes(status, bytes(payload))


def test_frame_layout():
    """SYNC, opcode, count little-endian, then the payloads; long bursts split at MAX_COUNT."""
    assert P.encode_command(P.Command.STATUS) == bytes([0xA5, 0x05, 0, 0])
    frames = P.frames(P.Command.KV_DATA, [bytes([n & 0xFF]) for n in range(P.MAX_COUNT + 3)])
    assert frames[:4] == bytes([0xA5, 0x02, 0xFF, 0xFF])
    second = 4 + P.MAX_COUNT
    assert frames[second:second + 4] == bytes([0xA5, 0x02, 3, 0])
    assert len(frames) == 2 * 4 + P.MAX_COUNT + 3
    with pytest.raises(ValueError, match="must be STATUS, INFO or RESET"):
        P.encode_command(P.Command.DESC)


@pytest.mark.parametrize("name", NAMES)
@settings(max_examples=20)
@given(st.data())
def test_commands_round_trip(name, draw):
    """Descriptors and query beats, encoded, come out of the parser model as they went in."""
    cfg = TEST_CONFIGS[name]
    layouts = P.command_layouts(cfg)
    descs = draw.draw(st.lists(values(layouts[P.Command.DESC]), max_size=5), label="descriptors")
    beats = draw.draw(st.lists(values(layouts[P.Command.QUERY]), max_size=5), label="beats")
    actions = P.CommandModel(cfg).run([P.encode_descriptors(cfg, descs) + P.encode_queries(cfg, beats)])
    assert actions == ([("desc", P.pack(layouts[P.Command.DESC], d)) for d in descs]
                       + [("query", P.pack(layouts[P.Command.QUERY], b)) for b in beats])


@pytest.mark.parametrize("name", NAMES)
@settings(max_examples=20)
@given(st.data())
def test_kv_writes_round_trip(name, draw):
    """Any list of KV writes comes out of the model exactly, KV_DATA runs expanded."""
    cfg = TEST_CONFIGS[name]
    layout = kv_write_layout(cfg)
    writes = draw.draw(st.lists(values(layout), max_size=12), label="writes")
    # Runs of consecutive words, so that KV_DATA is used.
    if writes and draw.draw(st.booleans(), label="run"):
        first = dict(writes[0], base=0, addr=writes[0]["addr"] % 1000)
        writes = [dict(first, addr=first["addr"] + n, data=w["data"]) for n, w in enumerate(writes)] + writes
    encoded = P.encode_kv_writes(cfg, writes)
    assert P.CommandModel(cfg).run([encoded]) == [("kv", P.pack(layout, w)) for w in writes]


@pytest.mark.parametrize("name", ["tiny", "default"])
def test_kv_load_compact(name):
    """A packed job's load: every write back out of the model; one payload per word plus a header
    run per bank, so the load is not dominated by headers or addresses."""
    cfg = TEST_CONFIGS[name]
    rng = np.random.default_rng(3)
    job = random_int_job(cfg, [40, 7, 81], rng)
    packed = pack_kv(cfg, job.lengths, job.k, job.v, bank_keys=bank_keys_for(cfg, [128]))
    writes = list(packed.writes())
    encoded = P.encode_kv_writes(cfg, writes)
    layout = kv_write_layout(cfg)
    assert P.CommandModel(cfg).run([encoded]) == [("kv", P.pack(layout, w)) for w in writes]
    layouts = P.command_layouts(cfg)
    words = sum(1 for w in writes if not w["base"])
    runs = 2 * cfg.cores                    # one per bank: its first word is a KV_WRITE
    bound = (words * P.payload_bytes(layouts[P.Command.KV_DATA])
             + (runs + 2 * cfg.cores) * P.payload_bytes(layouts[P.Command.KV_WRITE])
             + (2 * runs + 1) * P.HEADER_BYTES)
    assert len(encoded) <= bound


@pytest.mark.parametrize("name", ["tiny", "odd"])
@settings(max_examples=25)
@given(junk=st.binary(max_size=40), cut=st.integers(0, 30))
def test_recovery(name, junk, cut):
    """Whatever arrives -- junk, a frame cut short -- an idle gap puts the parser back at the start
    of a frame: the next chunk gives exactly what it gives alone. Malformed input is reported."""
    cfg = TEST_CONFIGS[name]
    good = (P.encode_descriptors(cfg, [{"length": 3, "last": 1}]) + P.encode_command(P.Command.INFO)
            + P.encode_queries(cfg, [{"last": 1}] * 2))
    alone = P.CommandModel(cfg).run([good])
    model = P.CommandModel(cfg)
    actions = model.run([junk + good[:cut]])
    assert model.run([good]) == alone
    if junk and junk[0] != P.SYNC:
        assert actions[0] == ("error", P.ErrorCode.GARBAGE, junk[0])


def test_malformed_replies():
    """Each kind of malformed input: its error, then the parser resynchronizes."""
    cfg = PRESETS["tiny"]
    info = P.encode_command(P.Command.INFO)
    model = P.CommandModel(cfg)
    assert model.run([b"\x00\x11" + info]) == [("error", P.ErrorCode.GARBAGE, 0x00), ("info",)]
    assert model.run([bytes([P.SYNC, 0x42, 1, 0, 7]) + info]) == [("error", P.ErrorCode.OPCODE, 0x42),
                                                                  ("info",)]
    assert model.run([bytes([P.SYNC, P.Command.RESET, 1, 0]) + info]) == [
        ("error", P.ErrorCode.COUNT, P.Command.RESET), ("info",)]
    desc = P.encode_descriptors(cfg, [{"length": 1}, {"length": 2}])
    size = P.payload_bytes(P.command_layouts(cfg)[P.Command.DESC])
    layout = P.command_layouts(cfg)[P.Command.DESC]
    assert model.run([desc[:4 + size + 1], info]) == [
        ("desc", P.pack(layout, {"length": 1})), ("error", P.ErrorCode.TIMEOUT, P.Command.DESC), ("info",)]
    assert model.run([bytes([P.SYNC]), info]) == [("error", P.ErrorCode.TIMEOUT, 0), ("info",)]
    assert model.run([bytes([P.SYNC, P.Command.STATUS, 0, 0, P.SYNC, P.Command.RESET, 0, 0])]) == [
        ("status",), ("reset",)]


@pytest.mark.parametrize("name", NAMES)
@settings(max_examples=15)
@given(st.data())
def test_replies_round_trip(name, draw):
    """Reply frames decode to what was encoded; garbage before them is reported, not fatal."""
    cfg = TEST_CONFIGS[name]
    layouts = P.reply_layouts(cfg)
    sent, stream = [], bytearray()
    for reply in draw.draw(st.lists(st.sampled_from(list(P.Reply)), max_size=5), label="replies"):
        count = cfg.beats_per_key if reply == P.Reply.OUTPUT else 1
        items = [P.pack(layouts[reply], draw.draw(values(layouts[reply]))) for _ in range(count)]
        sent.append(P.Frame(reply, tuple(items)))
        stream += P.frames(reply, [P.to_bytes(layouts[reply], bits) for bits in items])
    decoder = P.FrameDecoder(layouts)
    assert decoder.feed(bytes(stream)) == sent
    assert decoder.feed(b"\x13" + bytes(stream)) == [P.Malformed(P.ErrorCode.GARBAGE, 0x13)] + sent


def test_records():
    cfg = PRESETS["tiny"]
    info = P.info_value(cfg, bank_keys=1024, divisor=208)
    assert P.decode_info(P.pack(P.info_layout(), vars(info))) == info
    assert info.config_crc == P.config_crc(cfg) != P.config_crc(PRESETS["default"])
    assert P.config_crc(cfg.replace(max_heads=7)) != info.config_crc
    status = P.Status(error=1, mem_error=0, link_error=1, busy=0, jobs=200, cycles=12345)
    assert P.decode_status(cfg, P.pack(P.status_layout(cfg), vars(status))) == status
    assert P.decode_error(P.pack(P.error_layout(), {"code": 4, "byte": 3})) == P.Malformed(4, 3)
    assert Shape.cast(P.info_layout()).width == sum(w for w in (8, 32, 8, 8, 16, 16, 32, 32, 32))
