"""First-in, first-out rings inside a module: in registers, or in block RAM read a cycle ahead."""

from amaranth.hdl import Array, Mux, Signal
from amaranth.lib.memory import Memory

__all__ = ["Ring", "ring_for", "BLOCK_DEPTH"]

#: With the compact pipeline, :func:`ring_for` puts rings of at least this many entries in block
#: RAM: on an iCE40 each register of a ring costs a logic cell, and the read multiplexer more.
BLOCK_DEPTH = 4


def ring_for(cfg, m, shape, depth, name):
    """A :class:`Ring` for ``cfg``: in block RAM with the compact pipeline from
    :data:`BLOCK_DEPTH` entries on, else in registers."""
    return Ring(m, shape, depth, name, block=cfg.pipeline == "compact" and depth >= BLOCK_DEPTH)


class Ring:
    """A first-in, first-out ring of ``depth`` slots inside a module. Drive ``push`` (with
    ``data``) only while ``room``, and ``pop`` only while ``valid``; ``head`` is the oldest entry.
    An entry pushed at one edge is at the head from the next cycle on.

    ``block=False``: the slots are registers and ``head`` is a multiplexer over them. ``block=True``:
    the slots are a memory (block RAM) whose synchronous read port is addressed a cycle ahead, with
    the slot that will be the oldest after this edge (the next one when ``pop``), and which reads
    a slot written at the same edge as written (transparent): ``head`` is the port's data, the same
    entry in the same cycle as with registers."""

    def __init__(self, m, shape, depth, name, *, block=False):
        ptr_range  = range(max(2, depth))                # (a bit even for a single slot)
        take       = Signal(ptr_range, name=f"{name}_take")
        count      = Signal(range(depth + 1), name=f"{name}_count")
        self.pop   = Signal(name=f"{name}_pop")
        self.room  = count != depth
        self.valid = count != 0
        wrap = lambda ptr: Mux(ptr == depth - 1, 0, (ptr + 1)[:len(ptr)])
        if block:
            # The ports' own signals are the ring's (no alias of them is left unused); the read
            # address is the slot at the head after this edge.
            m.submodules[name] = mem = Memory(shape=shape, depth=depth, init=[],
                                              attrs={"ram_style": "block"})
            write = mem.write_port()
            read = mem.read_port(transparent_for=(write,))
            self.push, put, self.data, self.head = write.en, write.addr, write.data, read.data
            m.d.comb += read.addr.eq(Mux(self.pop, wrap(take), take))
        else:
            self.push = Signal(name=f"{name}_push")
            put = Signal(ptr_range, name=f"{name}_put")
            self.data = Signal(shape, name=f"{name}_data")
            slots = Array(Signal(shape, name=f"{name}_{i}", reset_less=True) for i in range(depth))
            with m.If(self.push):
                m.d.sync += slots[put].eq(self.data)
            self.head = slots[take]
        m.d.sync += count.eq(count + self.push - self.pop)
        with m.If(self.pop):
            m.d.sync += take.eq(wrap(take))
        with m.If(self.push):
            m.d.sync += put.eq(wrap(put))
