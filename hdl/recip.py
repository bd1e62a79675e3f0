"""The reciprocal unit: ``1 / l`` of the softmax denominator as a mantissa and an exponent.

:class:`Reciprocal` is step 9 of ``docs/numerics.md``: ``e = floor(log2 l)`` from a pipelined
priority encoder; the ``recip_index_bits + recip_interp_bits`` bits of ``l`` below its leading one
(truncated, or zero-filled when ``l`` has fewer) read the reciprocal table
(``hdl.tables.recip_table``), linearly interpolated over the low ``recip_interp_bits``. It equals
:func:`leanattn.sim.golden.reciprocal` bit for bit.
"""

from amaranth.hdl import Cat, Const, Module, Mux, Shape, Signal, Value, unsigned
from amaranth.lib import stream, wiring
from amaranth.lib.data import StructLayout
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from .config import bits_for
from .pipeline import carry, check_unit_args, has_tag
from .tables import recip_table

__all__ = ["Reciprocal", "recip_input_layout", "recip_output_layout", "recip_stages"]


#: Bits of ``l`` per first-level priority encoder: the encoder is pipelined as a leading-one search
#: within chunks of this many bits (one stage), then across the chunks (the next stage).
ENCODER_CHUNK_BITS = 8






def recip_input_layout(cfg, tag_shape=0):
    """One denominator ``l`` (``exp_frac_bits`` fraction bits, at least 1.0), and a tag that
    travels with it (no ``tag`` field when ``tag_shape`` has no bits)."""
    return StructLayout({
        "l": unsigned(cfg.acc_l_bits),
        **({"tag": tag_shape} if has_tag(tag_shape) else {}),
    })


def recip_output_layout(cfg, tag_shape=0):
    """One reciprocal: mantissa ``r ~= 2**(recip_frac_bits + e) / l`` and exponent
    ``e = floor(log2 l)``; and the denominator's tag."""
    return StructLayout({
        "r": unsigned(cfg.recip_bits),
        "e": unsigned(bits_for(cfg.acc_l_bits - 1)),
        **({"tag": tag_shape} if has_tag(tag_shape) else {}),
    })


def recip_stages(cfg):
    """Names of the reciprocal unit's pipeline stages at ``cfg``, in order (one register each).
    With ``pipeline == "compact"`` the leading one is found in the ``read`` stage's logic, the
    table's output is the result (no ``out``), and the slope and the interpolation share one
    stage."""
    if cfg.pipeline == "compact":
        return ("read", "interp") if cfg.recip_interp_bits else ("read",)
    if cfg.recip_interp_bits:
        return ("chunk", "lead", "read", "table", "slope", "interp")
    return ("chunk", "lead", "read", "out")


class Reciprocal(wiring.Component):
    """Reciprocal ``(r, e)`` of denominators ``l >= 2**exp_frac_bits``, one per cycle.

    The table lives in a ROM (:class:`amaranth.lib.memory.Memory`, initialized with
    :attr:`table`). With interpolation (``recip_interp_bits > 0``) a second ROM, ``descent``,
    holds each interval's fall ``D[i] = T[i] - T[i+1]`` (:attr:`descents`, a few bits narrower
    than ``T``), read at the same address in the same cycle: the slope's multiply takes two
    registers, with no subtraction or address increment in front of it.

    Parameters
    ----------
    cfg : AttentionConfig
        Formats: ``acc_l_bits`` (the denominator), ``exp_frac_bits`` (P), ``recip_index_bits``,
        ``recip_interp_bits``, ``recip_frac_bits``.
    tag_shape : shape-like
        Shape of a tag carried from each denominator to its reciprocal unchanged (default 0: none).

    Members
    -------
    i_l : ``In(stream.Signature(recip_input_layout(cfg, tag_shape)))``
        Denominators ``l``, unsigned ``acc_l_bits``, with a tag. Contract: ``l >= 2**P`` (every
        non-empty softmax state has ``l >= 1.0``); a smaller ``l`` gives an unspecified result.
    o_recip : ``Out(stream.Signature(recip_output_layout(cfg, tag_shape)))``
        ``r`` (unsigned ``recip_bits``, ``recip_frac_bits`` fraction bits, in (1/2, 1]) and
        ``e = floor(log2 l)``, so that ``1 / l ~= r * 2**-(recip_frac_bits + e)``; with the tag.
    table : list of int
        The ROM's contents: ``recip_table(index_bits=recip_index_bits, frac_bits=recip_frac_bits,
        interp=recip_interp_bits > 0)``.
    descents : list of int
        The ``descent`` ROM's contents with interpolation: ``table[i] - table[i + 1]`` for ``i`` in
        ``0 .. 2**recip_index_bits - 1`` (the last entry of ``table`` is only read through them);
        empty without.
    stages : tuple of str
        Names of the pipeline stages, in order: ``chunk`` (leading one within each chunk of
        :data:`ENCODER_CHUNK_BITS` bits, but the chunks wholly below bit P, which the contract
        leaves without the leading one; ``l`` goes on without its bits below ``P - U``, which no
        mantissa reaches), ``lead`` (across the chunks: ``e``), ``read`` (the mantissa bits below
        the leading one address the table), then, with interpolation, ``table`` (both entries
        registered: no logic follows a block RAM's output), ``slope`` (``D[i] * rem``)
        and ``interp`` (``T[i]`` minus the product, rounded: one subtraction);
        without, ``out`` (the entry registered).
        With ``cfg.pipeline == "compact"``: ``read`` (the leading one, the shift and the table
        address are its logic; the table's synchronous read is its register) and, with
        interpolation, ``interp`` (slope, product and rounded sum); without, the table's output
        is ``r``.
    latency : int
        ``len(stages)``: 6 with interpolation, 4 without; compact 2 and 1.

    Latency: :attr:`latency` cycles (one register per stage) from an input transfer to its output.
    Throughput: one reciprocal per cycle. The whole pipe freezes while ``o_recip`` holds a result
    that is not taken (``i_l.ready = ~o_recip.valid | o_recip.ready``, combinational); bubbles
    travel with it.
    Numerics: ``U = recip_index_bits + recip_interp_bits`` bits below the leading one, truncated
    (zero-filled when ``e < U``), form ``x``; ``r = T[i] + round_shift((T[i+1] - T[i]) * rem,
    recip_interp_bits)`` with ``i = x >> recip_interp_bits`` (``r = T[x]`` without interpolation).
    Rounding to nearest, ties up; no overflow (``r`` lies between two entries in (2**(Rr-1), 2**Rr]).
    """

    def __init__(self, cfg, *, tag_shape=0):
        check_unit_args(cfg, tag_shape)
        self._cfg       = cfg
        self._tag_shape = tag_shape
        self.table = recip_table(index_bits=cfg.recip_index_bits, frac_bits=cfg.recip_frac_bits,
                                 interp=cfg.recip_interp_bits > 0)
        self.descents = ([hi - lo for hi, lo in zip(self.table, self.table[1:])]
                         if cfg.recip_interp_bits else [])
        self.stages = recip_stages(cfg)
        super().__init__({
            "i_l":     In(stream.Signature(recip_input_layout(cfg, tag_shape))),
            "o_recip": Out(stream.Signature(recip_output_layout(cfg, tag_shape))),
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
        width, interp = cfg.acc_l_bits, cfg.recip_interp_bits
        mant = cfg.recip_index_bits + interp           # U: mantissa bits below the leading one
        out = self.o_recip.payload
        m = Module()

        # --- control: the whole pipe advances unless o_recip holds a result not taken ------------
        # i_l.ready is the pipe's clock enable.
        advance = self.i_l.ready
        m.d.comb += advance.eq(~self.o_recip.valid | self.o_recip.ready)

        # --- valid and tag: one register per stage, frozen with the pipe -------------------------
        carry(m, self.i_l.valid, self.o_recip.valid, self.stages, "valid", advance)
        if has_tag(self._tag_shape):
            carry(m, self.i_l.payload.tag, out.tag, self.stages, "tag", advance)

        # --- table: a ROM read at i; with interpolation a second ROM of the descents ----------------
        # The descent T[i] - T[i + 1] comes out of its own ROM beside T[i], so no subtraction (and
        # no address increment) lies in front of the slope's multiply.
        m.submodules.table = table = Memory(shape=unsigned(cfg.recip_bits), depth=len(self.table),
                                            init=self.table)
        roms = [table]
        if interp:
            m.submodules.descent = descent = Memory(shape=unsigned(bits_for(max(self.descents))),
                                                    depth=len(self.descents), init=self.descents)
            roms.append(descent)
        read_ports = [rom.read_port() for rom in roms]
        for port in read_ports:
            m.d.comb += port.en.eq(advance)

        # --- chunk, lead: e = floor(log2 l), a two-stage priority encoder -------------------------
        # The contract l >= 2**P puts the leading one at P or above, and the mantissa at P - U or
        # above: the encoder leaves out the chunks wholly below P, the registers the bits below
        # P - U.
        low = max(0, cfg.exp_frac_bits - mant)
        compact = cfg.pipeline == "compact"
        lead_e, lead_l = _leading_one(m, self.i_l.payload.l, advance, floor=cfg.exp_frac_bits,
                                      low=low, registered=not compact)

        # --- read: the U bits below the leading one address the table -----------------------------
        # l is shifted left so that its leading one lands on bit width - 1, with U zeros below it
        # for a short l (the contract e >= P bounds the shift by width - 1 - P); the ROM's output
        # registers and these are the stage's.
        read_shift = (width - 1 - lead_e)[:bits_for(width - 1 - cfg.exp_frac_bits)]
        read_x     = (Cat(Const(0, mant + low), lead_l) << read_shift)[width - 1:width - 1 + mant]
        for port in read_ports:
            m.d.comb += port.addr.eq(read_x[interp:])
        lo = read_ports[0].data
        if compact and not interp:
            # --- the table's output is r; e is registered beside it ------------------------------
            m.d.comb += out.r.eq(lo)
            with m.If(advance):
                m.d.sync += out.e.eq(lead_e)
            return m
        read_e = Signal(len(lead_e))
        with m.If(advance):
            m.d.sync += read_e.eq(lead_e)

        if interp:
            read_rem = Signal(interp)                      # mantissa bits below the index
            with m.If(advance):
                m.d.sync += read_rem.eq(read_x[:interp])
            if compact:
                # --- interp: T[i] - round_shift(D[i] * rem) ---------------------------------------
                with m.If(advance):
                    m.d.sync += [
                        out.r.eq(_interpolated(lo, read_ports[1].data * read_rem, interp)),
                        out.e.eq(read_e),
                    ]
                return m

            # --- table: T[i], D[i] registered -------------------------------------------------------
            table_lo, table_d = Signal(cfg.recip_bits), Signal.like(read_ports[1].data)
            table_e, table_rem = Signal.like(read_e), Signal.like(read_rem)
            with m.If(advance):
                m.d.sync += [table_lo.eq(lo), table_d.eq(read_ports[1].data),
                             table_e.eq(read_e), table_rem.eq(read_rem)]

            # --- slope: D[i] * rem, a multiply of two registers -------------------------------------
            slope_prod = Signal(len(table_d) + interp)
            slope_lo, slope_e = Signal.like(table_lo), Signal.like(table_e)
            with m.If(advance):
                m.d.sync += [slope_prod.eq(table_d * table_rem),
                             slope_lo.eq(table_lo), slope_e.eq(table_e)]

            # --- interp: T[i] minus the product, rounded -------------------------------------------
            with m.If(advance):
                m.d.sync += [
                    out.r.eq(_interpolated(slope_lo, slope_prod, interp)),
                    out.e.eq(slope_e),
                ]
        else:
            # --- out: the table's value, registered (every output bit leaves a flip-flop) ----------
            with m.If(advance):
                m.d.sync += [out.r.eq(lo), out.e.eq(read_e)]

        return m




def _interpolated(lo, descent_prod, interp):
    """``T[i] + round_shift((T[i+1] - T[i]) * rem, interp)`` from ``lo = T[i]`` and
    ``descent_prod = (T[i] - T[i+1]) * rem``: ``(lo * 2**interp + 2**(interp-1) - descent_prod) >>
    interp``, one subtraction (the rounding constant fills the low bits of ``lo``'s operand). Never
    negative: ``descent_prod < 2**interp * lo``."""
    return (Cat(Const(1 << (interp - 1), interp), lo) - descent_prod)[interp:][:len(lo)]


def _leading_one(m, l, advance, *, floor, low, registered=True):
    """The ``chunk`` and ``lead`` stages: ``(lead_e, lead_l)``, the leading one's position and
    ``l >> low`` (``l``'s bits from ``low`` up), two stages after ``l`` (or the same cycle's
    logic, when not ``registered``). The leading one is sought from bit ``floor`` up (the chunks
    wholly below it are left out); ``lead_e`` is 0 when those bits are all 0."""
    width = len(l)

    def stage(name, shape, value):
        # A register of the stage, or (not registered) the value itself, cut to the shape's width.
        if not registered:
            return Value.cast(value)[:Shape.cast(shape).width]
        sig = Signal(shape, name=name)
        with m.If(advance):
            m.d.sync += sig.eq(value)
        return sig

    # --- chunk: the leading one within each chunk of l ---------------------------------------
    first = floor // ENCODER_CHUNK_BITS * ENCODER_CHUNK_BITS
    bases = range(first, width, ENCODER_CHUNK_BITS)
    chunks = [l[lo:lo + ENCODER_CHUNK_BITS] for lo in bases]
    chunk_any = stage("chunk_any", len(chunks), Cat(c.any() for c in chunks))
    chunk_pos = []
    for k, chunk in enumerate(chunks):
        if len(chunk) == 1:
            chunk_pos.append(Const(0, 1))
            continue
        pos = Const(0, range(len(chunk)))
        for bit in range(1, len(chunk)):           # the highest set bit decides (outermost)
            pos = Mux(chunk[bit], bit, pos)
        chunk_pos.append(stage(f"chunk_pos_{k}", range(len(chunk)), pos))
    chunk_l = stage("chunk_l", width - low, l[low:])

    # --- lead: e = the leading one of the highest non-zero chunk -----------------------------
    e = Const(0, bits_for(width - 1))              # 0 for l < 2**floor (outside the contract)
    for k, (base, pos) in enumerate(zip(bases, chunk_pos)):   # the highest non-zero chunk decides
        e = Mux(chunk_any[k], base + pos, e)
    lead_e = stage("lead_e", bits_for(width - 1), e)
    lead_l = stage("lead_l", len(chunk_l), chunk_l)
    return lead_e, lead_l
