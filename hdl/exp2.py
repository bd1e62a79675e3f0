"""The exp2 unit: softmax weights ``2**t`` of logits taken relative to the integer running max.

:class:`Exp2` is step 6 of ``docs/numerics.md``: ``t = n + f`` with ``n = floor(t) <= 0`` and ``f``
the logit fraction; the table (``hdl.tables.exp2_table``) gives ``2**f`` in [1, 2), linearly
interpolated when the fraction has more bits than the table's index; ``round_shift(2**f, -n)``
then applies ``2**n``. It equals :func:`leanattn.sim.golden.exp2` bit for bit.
"""

from amaranth.hdl import Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import stream, wiring
from amaranth.lib.data import StructLayout
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from .fixed import add_rounded, round_shift
from .pipeline import carry, check_unit_args, has_tag
from .tables import exp2_table

__all__ = ["Exp2", "exp2_input_layout", "exp2_output_layout", "exp2_stages"]




def exp2_input_layout(cfg, tag_shape=0):
    """One exp2 argument: ``t = s - m * 2**F`` in logit LSBs, and a tag that travels with it
    (no ``tag`` field when ``tag_shape`` has no bits)."""
    return StructLayout({
        "t": signed(cfg.exp_in_bits),
        **({"tag": tag_shape} if has_tag(tag_shape) else {}),
    })


def exp2_output_layout(cfg, tag_shape=0):
    """One weight: unsigned, ``exp_frac_bits`` fraction bits, in [0, 2); and the argument's tag."""
    return StructLayout({
        "w": unsigned(cfg.weight_bits),
        **({"tag": tag_shape} if has_tag(tag_shape) else {}),
    })


def exp2_stages(cfg):
    """Names of the exp2 unit's pipeline stages at ``cfg``, in order (one register each). With
    ``pipeline == "compact"`` the ``shift`` stage takes the table's output as it is read
    (interpolated in its logic, with interpolation)."""
    if cfg.pipeline == "compact":
        return ("read", "shift")
    if cfg.exp_interp_bits:
        return ("read", "table", "slope", "interp", "shift")
    return ("read", "table", "shift")


class Exp2(wiring.Component):
    """Weights ``2**t`` for ``t < 2**logit_frac_bits``, one per cycle, from a lookup table.

    The table lives in a ROM (:class:`amaranth.lib.memory.Memory`, initialized with
    :attr:`table`). With interpolation (``exp_interp_bits > 0``) the ROM has two synchronous read
    ports, one at ``i`` and one at ``i + 1``, so both ends of the interval come out in the same
    cycle: one true dual-port block RAM, no second copy of the table. The ``table`` stage registers
    what the ROM read, so that no logic follows a block RAM's output (its clock-to-output delay is
    most of a cycle at 100 MHz on an ECP5).

    Parameters
    ----------
    cfg : AttentionConfig
        Formats: ``exp_in_bits`` (argument), ``logit_frac_bits`` (F), ``exp_index_bits``,
        ``exp_frac_bits`` (P), ``exp_shift_max``.
    tag_shape : shape-like
        Shape of a tag carried from each argument to its weight unchanged (default 0: none).

    Members
    -------
    i_t : ``In(stream.Signature(exp2_input_layout(cfg, tag_shape)))``
        Arguments ``t`` (signed, F fraction bits) in ``cfg.exp_in_min .. 2**F - 1``, with a tag.
    o_w : ``Out(stream.Signature(exp2_output_layout(cfg, tag_shape)))``
        Weights ``w`` (unsigned ``weight_bits``, P fraction bits), with the argument's tag.
    table : list of int
        The ROM's contents: ``exp2_table(index_bits=exp_index_bits, frac_bits=exp_frac_bits,
        interp=exp_interp_bits > 0)``.
    stages : tuple of str
        Names of the pipeline stages, in order: ``read`` (the ROM read), ``table`` (its output
        registered), ``slope`` and ``interp`` (with interpolation only: ``(T[i+1] - T[i]) * rem``,
        then ``T[i]`` plus the rounded product), ``shift``.
    latency : int
        ``len(stages)``: 5 with interpolation, 3 without.

    Latency: :attr:`latency` cycles (one register per stage) from an input transfer to its output.
    Throughput: one weight per cycle. The whole pipe freezes while ``o_w`` holds a weight that is
    not taken (``i_t.ready = ~o_w.valid | o_w.ready``, combinational); bubbles travel with it.
    Numerics: ``w = round_shift(T(f), min(-floor(t), exp_shift_max))``, where ``T(f)`` is the table
    read at the fraction, ``T[i] + round_shift((T[i+1] - T[i]) * rem, exp_interp_bits)`` when
    interpolating. Rounding to nearest, ties up; no overflow (``T(f)`` lies between two entries
    below ``2**(P+1)``, and shifting only shrinks it); the clamp at ``exp_shift_max`` changes no
    bit (any shift from there on gives exactly 0).
    """

    def __init__(self, cfg, *, tag_shape=0):
        check_unit_args(cfg, tag_shape)
        self._cfg       = cfg
        self._tag_shape = tag_shape
        self.table = exp2_table(index_bits=cfg.exp_index_bits, frac_bits=cfg.exp_frac_bits,
                                interp=cfg.exp_interp_bits > 0)
        self.stages = exp2_stages(cfg)
        super().__init__({
            "i_t": In(stream.Signature(exp2_input_layout(cfg, tag_shape))),
            "o_w": Out(stream.Signature(exp2_output_layout(cfg, tag_shape))),
        })

    @property
    def cfg(self):
        return self._cfg

    @property
    def tag_shape(self):
        return self._tag_shape

    @property
    def latency(self):
        """Cycles from an input transfer to the output transfer of the same item, without stalls."""
        return len(self.stages)

    def elaborate(self, platform):
        cfg = self._cfg
        frac, interp = cfg.logit_frac_bits, cfg.exp_interp_bits
        m = Module()

        # --- control: the whole pipe advances unless o_w holds a weight not taken ----------------
        # i_t.ready is the pipe's clock enable.
        advance = self.i_t.ready
        m.d.comb += advance.eq(~self.o_w.valid | self.o_w.ready)

        # --- valid and tag: one register per stage, frozen with the pipe -------------------------
        carry(m, self.i_t.valid, self.o_w.valid, self.stages, "valid", advance)
        if has_tag(self._tag_shape):
            carry(m, self.i_t.payload.tag, self.o_w.payload.tag, self.stages, "tag", advance)

        # --- read: t = n + f; the top bits of f address the table, T[i] and T[i+1] ---------------
        t = self.i_t.payload.t
        m.submodules.table = table = Memory(shape=unsigned(cfg.weight_bits), depth=len(self.table),
                                            init=self.table)
        index = t[interp:frac]
        read_ports = [table.read_port() for _ in range(2 if interp else 1)]
        for k, port in enumerate(read_ports):
            m.d.comb += [port.addr.eq(index + k if k else index), port.en.eq(advance)]

        if cfg.pipeline == "compact":
            self._compact(m, advance, t, read_ports)
            return m
        read_floor = Signal(signed(len(t) - frac))                 # floor(t) <= 0
        with m.If(advance):
            m.d.sync += read_floor.eq(t >> frac)

        # --- table: the ROM's output registered; the shift -floor(t), clamped --------------------
        neg_floor   = -read_floor
        shift_max   = Const(cfg.exp_shift_max, neg_floor.shape())
        table_y     = [Signal(cfg.weight_bits, name=f"table_y{k}") for k in range(len(read_ports))]
        table_shift = Signal(range(cfg.exp_shift_max + 1))          # clamped: changes no bit
        with m.If(advance):
            m.d.sync += [reg.eq(port.data) for reg, port in zip(table_y, read_ports)]
            m.d.sync += table_shift.eq(Mux(neg_floor > shift_max, shift_max, neg_floor))
        y, y_shift = table_y[0], table_shift

        # --- interp: T[i] + round_shift((T[i+1] - T[i]) * rem, interp) ---------------------------
        if interp:
            read_rem, table_rem = Signal(interp), Signal(interp)    # fraction bits below the index
            with m.If(advance):
                m.d.sync += [read_rem.eq(t[:interp]), table_rem.eq(read_rem)]

            # --- slope: (T[i+1] - T[i]) * rem (T[i+1] >= T[i]) ------------------------------------
            slope_prod  = Signal(signed(cfg.weight_bits + 1 + interp))
            slope_y     = Signal.like(table_y[0])
            slope_shift = Signal.like(table_shift)
            with m.If(advance):
                m.d.sync += [slope_prod.eq((table_y[1] - table_y[0]) * table_rem),
                             slope_y.eq(table_y[0]), slope_shift.eq(table_shift)]

            # --- interp: T[i] + round_shift(product, interp), between T[i] and T[i+1]: fits -------
            interp_y     = Signal(cfg.weight_bits)
            interp_shift = Signal.like(table_shift)
            with m.If(advance):
                m.d.sync += [interp_y.eq(add_rounded(slope_y, slope_prod, interp)),
                             interp_shift.eq(slope_shift)]
            y, y_shift = interp_y, interp_shift

        # --- shift: 2**n as a rounding right shift (never grows a value: no overflow) ------------
        with m.If(advance):
            m.d.sync += self.o_w.payload.w.eq(round_shift(y, y_shift))

        return m

    def _compact(self, m, advance, t, read_ports):
        """``pipeline == "compact"``: the clamped shift ``-floor(t)`` registered in ``read``
        beside the table's read; the ``shift`` stage from the table's output as read: the
        interpolation (if any) and the rounding shift, into ``o_w``."""
        cfg, interp = self._cfg, self._cfg.exp_interp_bits
        neg_floor = -(t >> cfg.logit_frac_bits)
        shift_max = Const(cfg.exp_shift_max, neg_floor.shape())
        read_shift = Signal(range(cfg.exp_shift_max + 1))          # clamped: changes no bit
        with m.If(advance):
            m.d.sync += read_shift.eq(Mux(neg_floor > shift_max, shift_max, neg_floor))
        y = read_ports[0].data
        if interp:
            read_rem = Signal(interp)                               # fraction bits below the index
            with m.If(advance):
                m.d.sync += read_rem.eq(t[:interp])
            y = add_rounded(y, (read_ports[1].data - y) * read_rem, interp)[:cfg.weight_bits]
        with m.If(advance):
            m.d.sync += self.o_w.payload.w.eq(round_shift(y, read_shift))

