"""The reference K/V memory: one K bank and one V bank per core, loaded by the host, read by the cores.

Memory layout (written by :func:`leanattn.sim.packer.pack_kv`)
-------------------------------------------------------------
K and V have address spaces of their own, counted in **elements**; a **word** is ``lanes``
elements (word ``w`` holds elements ``w*lanes .. w*lanes + lanes - 1``), one beat of a read port.
The keys of all heads of a job lie end to end, each head contiguous (under the ``lean`` schedule
in flattened-head order, the stream-K order; under the others grouped by the cores that read them):
head ``h`` starts at element ``k_base[h]`` and key ``j`` of head ``h`` is elements ``k_base[h] +
j*head_dim ..`` of it. V is laid out the same way (``v_base == k_base``). Core ``c`` reads one
contiguous range of keys (under ``lean`` its share ``[bound[c], bound[c+1])`` of
:func:`leanattn.sim.partition.core_bounds`), so its K bank and its V bank hold exactly that range,
at most ``bank_keys`` keys.

Each bank covers a **window** of the address space: ``bank_keys * head_dim // lanes`` words from
its window base (a global word address; ``bound[c] * head_dim // lanes`` under ``lean``). Bank word
``i`` holds global word ``base + i``.

Banks on an FPGA
----------------
A bank word is ``lanes * input_bits`` bits wide and a bank has ``bank_keys * head_dim // lanes``
words, with one read port and one write port (the load always precedes the reads, so a
single-port RAM serves a bank if a board top multiplexes the two). Word widths: 8 bits at
``tiny`` -- half of an iCE40UP5K SPRAM word (16K x 16); with the SPRAM's nibble write mask two
words share one SPRAM word, so one SPRAM (32 KiB) holds 1024 keys, and the four SPRAMs hold
``tiny``'s K and V bank (one core) of up to 2048 keys each (a full ``tiny`` job, 8 x 1024 keys,
needs four times that); 64 bits at ``default`` (two 36-bit ECP5 PDPW16KD side by side per 512 words);
33 at ``odd``; 128 at ``wide``.
"""

from amaranth.hdl import Cat, Const, Module, Mux, Signal, ValueCastable, unsigned
from amaranth.lib import data, enum, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from .config import AttentionConfig, bits_for, ceil_log2, is_pow2
from .ports import kv_data_layout, kv_request_layout

__all__ = ["Kind", "KVBank", "KVMemory", "kv_write_layout", "bank_write_layout", "kv_word_bits",
           "max_bank_keys", "reciprocal"]


class Kind(enum.Enum, shape=1):
    """Which of a core's two banks a write goes to."""
    K = 0
    V = 1


def kv_word_bits(cfg):
    """Unsigned width of a global word address (every head at ``max_context``)."""
    return bits_for(cfg.max_heads * cfg.max_context * cfg.beats_per_key - 1)


def max_bank_keys(cfg):
    """Most keys a bank may hold: a whole job of ``max_heads`` heads at ``max_context``."""
    return cfg.max_heads * cfg.max_context


def bank_write_layout(cfg):
    """One write into one bank: a data word at bank word ``addr``, or (``base``) the window base."""
    return data.StructLayout({
        "base": 1,                                  # 1: addr is the window base (global word)
        "addr": unsigned(kv_word_bits(cfg)),        # 0: bank word address of data
        "data": kv_data_layout(cfg),
    })


def kv_write_layout(cfg):
    """One write into the memory: :func:`bank_write_layout` for bank ``bank`` of kind ``kind``."""
    return data.StructLayout({
        "base": 1,
        "kind": Kind,
        "bank": unsigned(ceil_log2(cfg.cores)),     # the core whose bank it is
        "addr": unsigned(kv_word_bits(cfg)),
        "data": kv_data_layout(cfg),
    })


def reciprocal(divisor, bound):
    """``(mult, shift)`` with ``(x * mult) >> shift == x // divisor`` for every ``0 <= x < bound``.

    ``mult = ceil(2**shift / divisor) = (2**shift + e) / divisor`` with ``0 <= e < divisor``; for
    ``x = q*divisor + r`` the product is ``q + r/divisor + x*e / (divisor * 2**shift)``, whose
    floor is ``q`` while ``x*e < 2**shift``: true with ``shift = bits(bound - 1) + bits(divisor)``.
    """
    shift = bits_for(bound - 1) + divisor.bit_length()
    return -(-(1 << shift) // divisor), shift


def _check_args(cfg, bank_keys):
    if not isinstance(cfg, AttentionConfig):
        raise TypeError(f"cfg must be an AttentionConfig, not {cfg!r}")
    if not isinstance(bank_keys, int) or isinstance(bank_keys, bool):
        raise TypeError(f"bank_keys must be an integer, not {bank_keys!r}")
    if not 1 <= bank_keys <= max_bank_keys(cfg):
        raise ValueError(f"bank_keys must be in the range 1..{max_bank_keys(cfg)} "
                         f"(max_heads * max_context), not {bank_keys}")


class KVBank(wiring.Component):
    """One bank with its read port: ``bank_keys`` keys of K (or V) and the window they cover.

    Parameters
    ----------
    cfg : AttentionConfig
    bank_keys : int
        Keys the bank holds (``bank_keys * head_dim // lanes`` words), ``1 .. max_heads *
        max_context``.

    Members
    -------
    i_write : ``In(stream.Signature(bank_write_layout(cfg)))``
        A data word to bank word ``addr`` (ignored, and ``o_error`` pulses, if ``addr`` is past
        the bank), or with ``base`` the window base, a global word address. ``ready`` is always 1.
    i_req : ``In(stream.Signature(kv_request_layout(cfg)))``
        Read requests. ``ready`` is a register, high while no request waits: a request is taken
        while the one before it is answered, so at most two are outstanding.
    o_data : ``Out(stream.Signature(kv_data_layout(cfg)))``
        ``keys * head_dim // lanes`` beats per request, in request order; ``valid`` is a register.
    o_error : ``Out(1)``
        A one-cycle pulse in the cycle a bad request or write transfers.

    A request is **bad** if ``keys`` is 0, ``addr`` is not a multiple of ``lanes``, or the keys do
    not all lie inside the window (checked against the window base at the transfer). It is answered
    with its full count of beats, all zero (none if ``keys`` is 0), so a requester never hangs.
    The check and the conversion to a bank word address lie between ``i_req`` and the request
    register: a subtraction of the window base (in words; for ``lanes`` not a power of two in
    elements, then a multiply by the constant of :func:`reciprocal`), an addition of the beat count
    and comparisons with constants.

    Latency: :attr:`latency` (2) cycles from a request's transfer to its first beat's, when the
    port is idle: the request register, then the memory read into the output register.
    Throughput: one beat per cycle; the next request's first beat follows the last beat of the
    current one without a gap when the current one has at least two beats (a one-beat request
    every two cycles otherwise). Stalls: the read and the word counter freeze while ``o_data``
    holds a beat that is not taken (the read port keeps its output: payload held).
    Numerics: none; words as written. A read and a write of one word at the same edge read the
    old word. Reset clears the requests in flight; the words and the window base survive it.
    """

    #: Cycles from a request transfer to its first beat's transfer, on an idle port.
    latency = 2

    #: Hold the window base negated (:class:`_NegatedBase`): the request check adds it. Cheaper
    #: where a carry chain cannot invert an operand (iCE40); a subclass sets it.
    _negated_base = False

    def __init__(self, cfg, *, bank_keys):
        _check_args(cfg, bank_keys)
        self._cfg = cfg
        self._bank_keys = bank_keys
        super().__init__({
            "i_write": In(stream.Signature(bank_write_layout(cfg))),
            "i_req":   In(stream.Signature(kv_request_layout(cfg))),
            "o_data":  Out(stream.Signature(kv_data_layout(cfg))),
            "o_error": Out(1),
        })

    @property
    def cfg(self):
        return self._cfg

    @property
    def bank_keys(self):
        return self._bank_keys

    @property
    def words(self):
        """Words of the bank: ``bank_keys * head_dim // lanes``."""
        return self._bank_keys * self._cfg.beats_per_key

    def elaborate(self, platform):
        m = Module()
        m.submodules.mem = mem = Memory(shape=kv_data_layout(self._cfg), depth=self.words, init=[])
        base, write_error = self._write(m, mem.write_port())
        req_error = self._read(m, mem.read_port(), base)
        m.d.comb += self.o_error.eq(write_error | req_error)
        return m

    def _window_base(self, m):
        """The window base: a register loaded by ``base`` writes (``i_write`` is always ready), 0
        until the first. Kept across resets, like the words: the load survives a reset of the
        requests. Returns it as a value in elements; with :attr:`_negated_base` as a
        :class:`_NegatedBase`, which is one too."""
        write = self.i_write.payload
        load = self.i_write.valid & write.base
        m.d.comb += self.i_write.ready.eq(1)
        if self._negated_base:
            width = max(len(write.addr), len(self.i_req.payload.addr) - _log2(self._cfg.lanes))
            return _NegatedBase(m, write.addr, load, width, self._cfg.lanes)
        base = Signal.like(write.addr, reset_less=True)     # a global word address
        with m.If(load):
            m.d.sync += base.eq(write.addr)
        return _times(base, self._cfg.lanes)

    def _write(self, m, wr):
        """Data words into the memory, the window base into a register; return ``(window base
        (:meth:`_window_base`), error pulse)``."""
        write = self.i_write.payload
        in_bank = Signal()
        m.d.comb += [
            in_bank.eq(write.addr < self.words),
            wr.addr.eq(write.addr),
            wr.data.eq(write.data),
            wr.en.eq(self.i_write.valid & ~write.base & in_bank),
        ]
        return self._window_base(m), self.i_write.valid & ~write.base & ~in_bank

    def _read(self, m, rd, base):
        """Check and hold one request; read its beats out of the memory; return the error pulse.
        ``base`` is the window base of :meth:`_window_base`."""
        req, error = self._request(m, base)
        advance = Signal()                          # the output register may load
        m.d.comb += advance.eq(~self.o_data.valid | self.o_data.ready)
        beat, zero = self._generate(m, rd, req, advance)

        # --- out: the read port's register is the payload; valid and the zero flag beside it -----
        with m.If(advance):
            m.d.sync += self.o_data.valid.eq(beat)
        with m.If(~zero):
            m.d.comb += self.o_data.payload.eq(rd.data)
        return error

    def _request(self, m, base):
        """The waiting request: ``i_req`` checked against the window and converted to bank words,
        in a register; ``ready`` while it is empty. Returns ``(the register (a :class:`_Request`),
        error pulse)``.

        In bank words the request reads ``offset .. end - 1``; it is good when it is aligned,
        ``keys > 0``, ``offset >= 0`` and ``end <= words``. The offset is one subtraction of the
        base (an addition of a :class:`_NegatedBase`), whose borrow (carry) answers ``addr <
        base``; for ``lanes`` a power of two it is taken in words (the base is a whole word, so
        alignment is the low bits of ``addr``), else in elements and divided (:func:`_divide`). An
        offset of ``2**word_bits`` or more is past the window whatever ``keys``; ``end`` adds
        ``keys * beats_per_key`` to the offset's low ``word_bits`` bits, one addition for both the
        check and the count: kept to :func:`_count_bits` bits, ``end - offset`` is the beat count
        modulo their range, for a bad request too."""
        cfg = self._cfg
        req = self.i_req.payload
        word_bits = ceil_log2(self.words) or 1      # a bank word address (a 1-word bank: 1 bit)
        shift = _log2(cfg.lanes)
        far = Const(0)
        if is_pow2(cfg.lanes) and isinstance(base, _NegatedBase):
            total = req.addr[shift:] + base.negated
            offset, below = total[:-1], base.nonzero & ~total[-1]   # the carry: addr >= base
            aligned = req.addr[:shift] == 0
        elif is_pow2(cfg.lanes):
            diff = req.addr[shift:] - base[shift:]                  # the top bit: the borrow
            offset, below, aligned = diff[:-1], diff[-1], req.addr[:shift] == 0
        else:
            window = self._bank_keys * cfg.head_dim
            span = bits_for(window - 1)
            diff = req.addr - base
            offset, aligned = _divide(diff[:span], cfg.lanes, 1 << span)
            below, far = diff[-1], diff[span:-1].any()
        far = far | offset[word_bits:].any()
        end = _add_multiple(offset[:word_bits], req.keys, cfg.beats_per_key)

        r = _Request(word_bits, _count_bits(cfg, word_bits))
        bad = Signal()                              # answer with zero beats
        m.d.comb += [
            self.i_req.ready.eq(~r.valid),
            r.accept.eq(self.i_req.valid & ~r.valid),
            bad.eq((req.keys == 0) | ~aligned | below | far | (end > self.words)),
        ]
        with m.If(r.accept):
            m.d.sync += [r.valid.eq(1), r.word.eq(offset), r.end.eq(end), r.some.eq(req.keys != 0),
                         r.zero.eq(bad)]
        return r, r.accept & bad

    def _generate(self, m, rd, req, advance):
        """The request being answered: a read at each ``advance``, of its next word or, when it has
        none left, of the waiting request's first. Drives ``rd.en`` and ``rd.addr``; returns
        ``(beat, zero)``: whether the read is a beat, and a register loaded at ``advance`` with the
        read's zero flag (its request is bad).

        One counter, no beat count: ``ahead``, the word after the last read, counts up to the
        request's ``end`` (reads are left while ``ahead != end``; both are 0 after reset). It loads
        the word read plus one, so the incrementer feeds the register alone (on an iCE40 they share
        logic cells). ``active`` is ``ahead != end`` as a register, worked out beside the counter
        from registers alone, so the read address is a two-way choice between registers
        (``ahead``, ``req.word``) on a register's select, with no compare or ``advance`` in front
        of the block RAMs it fans out to. The zero flag of a read of the current request is that of
        the read before."""
        ahead  = Signal(req.bits)                   # the word after the last read
        end    = Signal(req.bits)                   # one past the request's last word
        active = Signal()                           # ahead != end: the request has words left
        word   = Signal(req.bits)                   # the word read now
        more   = Signal()                           # the next read of the current request
        take   = Signal()                           # start the waiting request: its first read
        zero   = Signal()
        m.d.comb += [
            more.eq(advance & active),
            take.eq(advance & ~active & req.valid),
            word.eq(Mux(active, ahead, req.word)),
            rd.en.eq(advance),
            rd.addr.eq(word),
        ]
        with m.If(take):
            m.d.sync += req.valid.eq(0)
        with m.If(more | (take & req.some)):
            m.d.sync += ahead.eq(word + 1)
        with m.If(more):
            m.d.sync += active.eq(ahead + 1 != end)
        with m.If(take & req.some):
            m.d.sync += [end.eq(req.end), active.eq(req.word + 1 != req.end)]
        with m.If(advance & ~more):
            m.d.sync += zero.eq(req.zero)
        return more | (take & req.some), zero


class _Request:
    """The request register of :meth:`KVBank._request`: a bank word address of ``word_bits`` bits,
    and ``bits`` for the word counter."""

    def __init__(self, word_bits, bits):
        self.bits   = bits
        self.valid  = Signal(name="req_valid")
        self.accept = Signal(name="req_accept")
        self.word   = Signal(word_bits, name="req_word")    # offset: its first word
        self.end    = Signal(bits, name="req_end")          # offset + beats, modulo 2**bits
        self.some   = Signal(name="req_some")               # keys != 0: it has beats
        self.zero   = Signal(name="req_zero")               # bad: its beats are zero


class _NegatedBase(ValueCastable):
    """A window base register holding ``-base`` modulo ``2**width`` (``~(addr - 1)``, computed
    where it is loaded), and whether the base is nonzero (the carry of that decrement). A request
    check adds it: no operand to invert, and a base of 0 is still 0 at power-up. As a value, the
    base in elements (global word address times ``lanes``)."""

    def __init__(self, m, addr, load, width, lanes):
        self.negated = Signal(width, reset_less=True)
        self.nonzero = Signal(reset_less=True)
        less = addr + ((1 << width) - 1)                        # addr - 1, and the carry: addr != 0
        with m.If(load):
            m.d.sync += [self.negated.eq(~less[:width]), self.nonzero.eq(less[width])]
        self._elements = _times((-self.negated)[:width], lanes)

    def shape(self):
        return self._elements.shape()

    def as_value(self):
        return self._elements


def _count_bits(cfg, word_bits):
    """Bits of the word counter: a bank word address, and a beat count up to ``keys`` of
    ``2**length_bits - 1``."""
    return max(word_bits, bits_for(((1 << cfg.length_bits) - 1) * cfg.beats_per_key))


def _log2(n):
    """The exponent of a power of two (0 otherwise: no shift)."""
    return ceil_log2(n) if is_pow2(n) else 0


def _times(value, factor):
    """``value * factor``; a power of two as a shift."""
    return value << _log2(factor) if is_pow2(factor) else value * factor


def _add_multiple(value, other, factor):
    """``value + other * factor``: the low bits of ``value`` below the power-of-two part of
    ``factor`` pass by the adder."""
    shift = (factor & -factor).bit_length() - 1
    if len(value) <= shift:
        return value + _times(other, factor)
    return Cat(value[:shift], value[shift:] + _times(other, factor >> shift))


def _divide(value, divisor, bound):
    """``(value // divisor, divisor divides value)`` for ``0 <= value < bound``: a shift for a
    power of two, else a multiply by :func:`reciprocal`."""
    if is_pow2(divisor):
        shift = _log2(divisor)
        return value >> shift, (value[:shift] == 0) if shift else Const(1, 1)
    mult, shift = reciprocal(divisor, bound)
    quotient = (value * mult) >> shift
    return quotient, quotient * divisor == value


class KVMemory(wiring.Component):
    """The reference K/V memory of the accelerator: a K bank and a V bank per core.

    Each core's K read port and V read port is served by its own :class:`KVBank`, so the ports
    never wait for each other. The host loads the banks through ``i_write`` (see
    :func:`leanattn.sim.packer.pack_kv` for the layout and :meth:`PackedKV.writes
    <leanattn.sim.packer.PackedKV.writes>` for the stream).

    Parameters
    ----------
    cfg : AttentionConfig
    bank_keys : int
        Keys per bank, ``1 .. max_heads * max_context``; a job fits when every core's share does
        (:func:`leanattn.sim.packer.bank_keys_for`).
    bank : callable, optional
        Makes each bank: ``bank(cfg, bank_keys=bank_keys)`` returns a component with the members
        of :class:`KVBank` and its behaviour (a board top passes one built on its own RAM
        primitives). Default :class:`KVBank`.

    Members
    -------
    i_write : ``In(stream.Signature(kv_write_layout(cfg)))``
        One write per transfer, to the ``kind`` (K or V) bank of core ``bank``: with ``base == 0``
        the data word at bank word ``addr`` (``addr`` past the bank: ignored, an error); with
        ``base == 1`` the window base of that bank, the global word address in ``addr`` (``data``
        ignored). ``ready`` is always 1.
    i_kreq_<c>, i_vreq_<c> : ``In(stream.Signature(kv_request_layout(cfg)))``
        Core ``c``'s K and V read requests; each port takes a request while it answers at most
        one other (two outstanding), and answers in order.
    o_k_<c>, o_v_<c> : ``Out(stream.Signature(kv_data_layout(cfg)))``
        ``keys * head_dim // lanes`` beats per request.
    o_error : ``Out(1)``
        Sticky: set at the clock edge that transfers a bad request on any port (``keys`` 0,
        ``addr`` not a multiple of ``lanes``, or keys outside the bank's window: answered with its
        count of zero beats all the same) or a data write past a bank. Cleared by a cycle of
        ``i_clear`` (an error in that same cycle wins) or by reset.
    i_clear : ``In(1)``

    Latency: :attr:`latency` (2) cycles from a request to its first beat on an idle port
    (:class:`KVBank`).
    Throughput: one beat per cycle on every port at once; back-to-back requests of two or more
    beats without a gap. Stalls: each port freezes alone while its output is not taken.
    Numerics: none; the words as written. Reset aborts the requests in flight and clears
    ``o_error``; the loaded words and window bases survive it.
    """

    latency = KVBank.latency

    def __init__(self, cfg, *, bank_keys, bank=None):
        _check_args(cfg, bank_keys)
        if bank is not None and not callable(bank):
            raise TypeError(f"bank must be a callable that makes a bank, not {bank!r}")
        self._cfg = cfg
        self._bank_keys = bank_keys
        self._make_bank = KVBank if bank is None else bank
        members = {
            "i_write": In(stream.Signature(kv_write_layout(cfg))),
            "o_error": Out(1),
            "i_clear": In(1),
        }
        for c in range(cfg.cores):
            members |= {
                f"i_kreq_{c}": In(stream.Signature(kv_request_layout(cfg))),
                f"i_vreq_{c}": In(stream.Signature(kv_request_layout(cfg))),
                f"o_k_{c}":    Out(stream.Signature(kv_data_layout(cfg))),
                f"o_v_{c}":    Out(stream.Signature(kv_data_layout(cfg))),
            }
        super().__init__(members)

    @property
    def cfg(self):
        return self._cfg

    @property
    def bank_keys(self):
        return self._bank_keys

    def elaborate(self, platform):
        m = Module()
        cfg = self._cfg
        write = self.i_write.payload
        m.d.comb += self.i_write.ready.eq(1)
        errors = []

        # --- banks: each its core's port; the write stream fans out by kind and bank -------------
        for c in range(cfg.cores):
            for kind, req, out in ((Kind.K, f"i_kreq_{c}", f"o_k_{c}"),
                                   (Kind.V, f"i_vreq_{c}", f"o_v_{c}")):
                bank = self._make_bank(cfg, bank_keys=self._bank_keys)
                m.submodules[f"{kind.name.lower()}_bank_{c}"] = bank
                wiring.connect(m, wiring.flipped(getattr(self, req)), bank.i_req)
                wiring.connect(m, bank.o_data, wiring.flipped(getattr(self, out)))
                m.d.comb += [
                    bank.i_write.valid.eq(self.i_write.valid & (write.kind == kind) & (write.bank == c)),
                    bank.i_write.payload.base.eq(write.base),
                    bank.i_write.payload.addr.eq(write.addr),
                    bank.i_write.payload.data.eq(write.data),
                ]
                errors.append(bank.o_error)

        # --- the sticky error bit: a register, set by any bank's error pulse ----------------------
        m.d.sync += self.o_error.eq((self.o_error & ~self.i_clear) | Cat(*errors).any())
        return m
