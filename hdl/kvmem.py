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
words share one SPRAM word, so one SPRAM (32 KiB) holds a bank of up to 1024 keys, and the four
SPRAMs hold the 2 x 2 banks of jobs up to 2048 keys (a full ``tiny`` job, 8 x 1024 keys, needs
four times that); 64 bits at ``default`` (two 36-bit ECP5 PDPW16KD side by side per 512 words);
33 at ``odd``; 128 at ``wide``.
"""

from amaranth.hdl import Cat, Const, Module, Mux, Signal, unsigned
from amaranth.lib import data, enum, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from .config import AttentionConfig, bits_for, ceil_log2
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
    The check and the conversion to a bank word address (a subtraction, a shift -- or for
    ``lanes`` not a power of two a multiply by the constant of :func:`reciprocal` -- and two
    comparisons) lie between ``i_req`` and the request register.

    Latency: :attr:`latency` (2) cycles from a request's transfer to its first beat's, when the
    port is idle: the request register, then the memory read into the output register.
    Throughput: one beat per cycle; the next request's first beat follows the last beat of the
    current one without a gap when the current one has at least two beats (a one-beat request
    every two cycles otherwise). Stalls: the read and the beat counter freeze while ``o_data``
    holds a beat that is not taken (the read port keeps its output: payload held).
    Numerics: none; words as written. A read and a write of one word at the same edge read the
    old word. Reset clears the requests in flight; the words and the window base survive it.
    """

    #: Cycles from a request transfer to its first beat's transfer, on an idle port.
    latency = 2

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
        base_elem, write_error = self._write(m, mem.write_port())
        req_error = self._read(m, mem.read_port(), base_elem)
        m.d.comb += self.o_error.eq(write_error | req_error)
        return m

    def _window_base(self, m):
        """The window base, in elements: a register loaded by ``base`` writes (``i_write`` is
        always ready). Kept across resets, like the words: the load survives a reset of the
        requests."""
        write = self.i_write.payload
        base_elem = Signal(range(((1 << len(write.addr)) - 1) * self._cfg.lanes + 1), reset_less=True)
        m.d.comb += self.i_write.ready.eq(1)
        with m.If(self.i_write.valid & write.base):
            m.d.sync += base_elem.eq(write.addr * self._cfg.lanes)
        return base_elem

    def _write(self, m, wr):
        """Data words into the memory, the window base into a register; return ``(window base in
        elements, error pulse)``."""
        write = self.i_write.payload
        in_bank = Signal()
        m.d.comb += [
            in_bank.eq(write.addr < self.words),
            wr.addr.eq(write.addr),
            wr.data.eq(write.data),
            wr.en.eq(self.i_write.valid & ~write.base & in_bank),
        ]
        return self._window_base(m), self.i_write.valid & ~write.base & ~in_bank

    def _read(self, m, rd, base_elem):
        """Check and hold one request; read its beats out of the memory; return the error pulse."""
        cfg = self._cfg
        req = self.i_req.payload
        max_beats = ((1 << len(req.keys)) - 1) * cfg.beats_per_key
        window = self._bank_keys * cfg.head_dim     # elements of the window
        word_bits = ceil_log2(self.words) or 1      # a bank word address (a 1-word bank: 1 bit)

        # --- req: the waiting request, checked and converted to a bank word address --------------
        req_valid  = Signal()
        req_word   = Signal(word_bits)
        req_beats  = Signal(range(max_beats + 1))
        req_zero   = Signal()                       # a bad request: answer with zero beats
        req_accept = Signal()
        req_bad    = Signal()
        word, aligned = _divide((req.addr - base_elem)[:bits_for(window - 1)], cfg.lanes, window)
        m.d.comb += [
            self.i_req.ready.eq(~req_valid),
            req_accept.eq(self.i_req.valid & self.i_req.ready),
            req_bad.eq((req.keys == 0) | (req.addr < base_elem) | ~aligned
                       | (req.addr + req.keys * cfg.head_dim > base_elem + window)),
        ]
        with m.If(req_accept):
            m.d.sync += [
                req_valid.eq(1),
                req_word.eq(word),
                req_beats.eq(req.keys * cfg.beats_per_key),
                req_zero.eq(req_bad),
            ]

        # --- gen: the request being answered; one read per cycle while the output moves ----------
        gen_left    = Signal(range(max_beats + 1))  # its beats not yet read
        gen_word    = Signal(word_bits)
        gen_zero    = Signal()
        gen_advance = Signal()                      # the output register may load
        gen_take    = Signal()                      # start the waiting request: its first read
        gen_more    = Signal()                      # the next read of the current request
        m.d.comb += [
            gen_advance.eq(~self.o_data.valid | self.o_data.ready),
            gen_take.eq(gen_advance & (gen_left == 0) & req_valid),
            gen_more.eq(gen_advance & (gen_left != 0)),
        ]
        with m.If(gen_take):
            m.d.sync += [
                req_valid.eq(0),
                gen_left.eq(req_beats - (req_beats != 0)),
                gen_word.eq(req_word + 1),
                gen_zero.eq(req_zero),
            ]
        with m.Elif(gen_more):
            m.d.sync += [gen_left.eq(gen_left - 1), gen_word.eq(gen_word + 1)]

        # --- out: the read port's register is the payload; valid and the zero flag beside it -----
        out_zero = Signal()
        m.d.comb += [
            rd.en.eq(gen_advance),
            rd.addr.eq(Mux(gen_more, gen_word, req_word)),
        ]
        with m.If(gen_advance):
            m.d.sync += [
                self.o_data.valid.eq(gen_more | (gen_take & (req_beats != 0))),
                out_zero.eq(Mux(gen_more, gen_zero, req_zero)),
            ]
        with m.If(~out_zero):
            m.d.comb += self.o_data.payload.eq(rd.data)
        return req_accept & req_bad


def _divide(value, divisor, bound):
    """``(value // divisor, divisor divides value)`` for ``0 <= value < bound``: a shift for a
    power of two, else a multiply by :func:`reciprocal`."""
    if divisor & (divisor - 1) == 0:
        shift = divisor.bit_length() - 1
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
