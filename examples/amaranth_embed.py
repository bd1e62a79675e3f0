#!/usr/bin/env python3
"""LeanAttention inside another Amaranth design, and the Verilog of that design.

:class:`AttentionSubsystem` is a parent component of the kind an integrator writes: it puts one
:class:`~leanattn.hdl.top.LeanAttention` beside its K/V memory (here the reference memory
:class:`~leanattn.hdl.kvmem.KVMemory`, a K and a V bank per core), connects every core's K and V
ports to its banks with ``wiring.connect``, and offers the rest as its own ports: the job streams,
the memory's write stream, the output stream and the status. Payload layouts come from the
package, so the parent and the core cannot disagree about a bit.

Run ``python examples/amaranth_embed.py --preset tiny -o build/examples/embed``: it writes
``attention_subsystem.v`` (module ``attention_subsystem``) and prints its ports.
"""

import argparse
import sys
from pathlib import Path

from amaranth.back import verilog
from amaranth.hdl import Module, Value
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from leanattn.hdl.config import PRESETS, AttentionConfig
from leanattn.hdl.jobload import ERROR_BITS
from leanattn.hdl.kvmem import KVMemory, kv_write_layout
from leanattn.hdl.layouts import output_layout
from leanattn.hdl.ports import descriptor_layout, query_layout
from leanattn.hdl.top import LeanAttention, cycle_bits


class AttentionSubsystem(wiring.Component):
    """LeanAttention and its K/V memory as one block.

    Parameters
    ----------
    cfg : AttentionConfig
    bank_keys : int
        Keys per K or V bank (each core's share of a job must fit one bank).

    Members
    -------
    i_write : the memory's write stream (:func:`leanattn.sim.packer.pack_kv` makes the words).
    i_desc, i_query, o_out : the accelerator's job and output streams.
    o_busy, o_done, o_error, o_cycles : the accelerator's status; o_mem_error the memory's.

    Latency and throughput: those of LeanAttention with a memory 2 cycles deep (no extra register).
    """

    def __init__(self, cfg, *, bank_keys):
        if not isinstance(cfg, AttentionConfig):
            raise TypeError(f"cfg must be an AttentionConfig, not {cfg!r}")
        self._cfg = cfg
        # Built here, so that a bad bank size fails at construction, not at elaboration.
        self._memory = KVMemory(cfg, bank_keys=bank_keys)
        self._attention = LeanAttention(cfg)
        super().__init__({
            "i_write":     In(stream.Signature(kv_write_layout(cfg))),
            "i_desc":      In(stream.Signature(descriptor_layout(cfg))),
            "i_query":     In(stream.Signature(query_layout(cfg))),
            "o_out":       Out(stream.Signature(output_layout(cfg))),
            "o_busy":      Out(1),
            "o_done":      Out(1),
            "o_error":     Out(ERROR_BITS),
            "o_cycles":    Out(cycle_bits(cfg)),
            "o_mem_error": Out(1),
        })

    def elaborate(self, platform):
        cfg = self._cfg
        m = Module()
        m.submodules.attention = attention = self._attention
        m.submodules.memory = memory = self._memory

        # --- the parent's own ports ----------------------------------------------------------------
        wiring.connect(m, wiring.flipped(self.i_write), memory.i_write)
        wiring.connect(m, wiring.flipped(self.i_desc), attention.i_desc)
        wiring.connect(m, wiring.flipped(self.i_query), attention.i_query)
        wiring.connect(m, attention.o_out, wiring.flipped(self.o_out))
        m.d.comb += [self.o_busy.eq(attention.o_busy), self.o_done.eq(attention.o_done),
                     self.o_error.eq(attention.o_error), self.o_cycles.eq(attention.o_cycles),
                     self.o_mem_error.eq(memory.o_error), memory.i_clear.eq(0)]

        # --- every core's K and V ports to its banks -------------------------------------------------
        for c in range(cfg.cores):
            wiring.connect(m, getattr(attention, f"o_kreq_{c}"), getattr(memory, f"i_kreq_{c}"))
            wiring.connect(m, getattr(memory, f"o_k_{c}"), getattr(attention, f"i_k_{c}"))
            wiring.connect(m, getattr(attention, f"o_vreq_{c}"), getattr(memory, f"i_vreq_{c}"))
            wiring.connect(m, getattr(memory, f"o_v_{c}"), getattr(attention, f"i_v_{c}"))
        return m


def ports(component):
    """``[(Verilog name, direction, width)]`` of a component's ports, as Amaranth names them."""
    out = []
    for path, member, value in component.signature.flatten(component):
        name = "__".join(map(str, path))
        out.append((name, "in" if member.flow == In else "out", Value.cast(value).shape().width))
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default="tiny")
    parser.add_argument("--bank-keys", type=int, default=256,
                        help="keys per K or V bank (default 256: a job of up to 256 keys per core)")
    parser.add_argument("-o", "--output", type=Path, default=Path("build/examples/embed"))
    args = parser.parse_args(argv)

    cfg = AttentionConfig.preset(args.preset)
    bank_keys = args.bank_keys
    try:
        top = AttentionSubsystem(cfg, bank_keys=bank_keys)
    except (TypeError, ValueError) as error:
        print(f"amaranth_embed: error: {error}", file=sys.stderr)
        return 2
    text = verilog.convert(top, name="attention_subsystem", emit_src=False)
    args.output.mkdir(parents=True, exist_ok=True)
    path = args.output / "attention_subsystem.v"
    path.write_text(text)
    print(f"{path}: module attention_subsystem ({len(text):,} bytes), {args.preset}, {cfg.cores} cores, "
          f"{bank_keys} keys per bank")
    for name, direction, width in [("clk", "in", 1), ("rst", "in", 1)] + ports(top):
        print(f"  {direction:<3} {width:>4}  {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
