"""The board top: the accelerator, its KV memory and a UART host link on one FPGA.

:class:`BoardTop` holds :class:`~leanattn.hdl.top.LeanAttention`,
:class:`~leanattn.hdl.kvmem.KVMemory`, a :class:`~leanattn.fpga.hostif.HostInterface` and an 8N1
UART (:mod:`leanattn.fpga.uart`). The host loads a job and reads its outputs over the UART with
the protocol of :mod:`leanattn.fpga.protocol` (the driver is :mod:`leanattn.fpga.host`).

On a board (``elaborate(platform)`` with an amaranth-boards platform):

* the clock comes from a PLL where the board's oscillator is slower than the core's clock
  (:mod:`leanattn.fpga.pll`): iCEBreaker 12 MHz -> 24 MHz (exactly, SB_PLL40_PAD), ULX3S
  25 MHz -> 100 MHz (exactly, EHXPLLL); the core stays in reset until the PLL locks;
* the UART divisor is ``round(clock / baud)`` (115200 baud: 208 at 24 MHz, 868 at 100 MHz);
* the pins are the platform's ``uart`` resource, and as many of these LEDs as it has:
  ``led`` 0 a job was rejected or an error was seen (red on the iCEBreaker), ``led`` 1 busy,
  ``led`` 2 toggles at the end of every job, ``led`` 3 UART activity;
* on an iCE40UP5K the KV banks are SPRAMs (:class:`~leanattn.fpga.spram.SPRAMBank`: at ``tiny``
  a K and a V bank of two SB_SPRAM256KA each, 2048 keys per bank and per job; on two cores one
  SPRAM per bank, 1024 keys per bank); elsewhere
  :class:`~leanattn.hdl.kvmem.KVBank` on block RAM (on the ECP5, DP16KD), :data:`BRAM_BANK_KEYS`
  keys per bank by default.

Without a platform (simulation) ``rx`` and ``tx`` are ports and ``divisor`` is used as given.
"""

from amaranth.build import ResourceError
from amaranth.hdl import ClockDomain, Module, ResetInserter, Signal
from amaranth.lib import io, wiring
from amaranth.lib.cdc import ResetSynchronizer
from amaranth.lib.wiring import In, Out
from amaranth.vendor import LatticeECP5Platform, LatticeICE40Platform

from ..hdl.config import AttentionConfig
from ..hdl.kvmem import KVMemory, max_bank_keys
from ..hdl.skid import through_skid
from ..hdl.top import LeanAttention
from .hostif import HostInterface
from .pll import ECP5PLL, ICE40PLL
from .uart import FRAME_BITS, MIN_DIVISOR, UARTReceiver, UARTTransmitter, check_divisor

__all__ = ["BoardTop", "BRAM_BANK_KEYS", "default_bank_keys", "DEFAULT_BAUD", "TIMEOUT_BYTES", "MEMORIES",
           "ICE40_CLOCK", "ECP5_CLOCK"]

#: The UART's rate on a board unless told otherwise.
DEFAULT_BAUD = 115200
#: Keys per bank on block RAM by default: at ``default`` (64-bit words, 8 per key) a bank of 512
#: keys is 4096 words, 16 DP16KD (two 36-bit halves, 512 words deep), the 8 banks 128 of the
#: ECP5-85F's 208.
BRAM_BANK_KEYS = 512


#: Byte times of silence inside a frame after which the parser drops it (22 ms at 115200 baud).
TIMEOUT_BYTES = 256
#: Kinds of KV memory bank.
MEMORIES = ("bram", "spram")
#: The core clock on a board, by FPGA family: ``tiny`` on the iCE40UP5K, ``default`` on the ECP5.
ICE40_CLOCK = 24e6
ECP5_CLOCK = 100e6
#: Largest rate error of the UART divisor on a board (both sides' errors add up; see fpga.uart).
BAUD_TOLERANCE = 0.01
#: How long the activity LED stays lit after the line moves.
ACTIVITY_SECONDS = 0.05


def default_bank_keys(cfg, memory):
    """Keys per bank of a board top's KV memory of kind ``memory`` (``"spram"`` or ``"bram"``)
    when the top is not given them: on SPRAM all the UP5K's four hold, on block RAM
    :data:`BRAM_BANK_KEYS` (at most what the configuration can address)."""
    if memory == "spram":
        from .spram import SPRAMBank
        return SPRAMBank.max_keys(cfg)
    return min(BRAM_BANK_KEYS, max_bank_keys(cfg))


class BoardTop(wiring.Component):
    """LeanAttention with its KV memory and a UART host interface.

    Parameters
    ----------
    cfg : AttentionConfig
    divisor : int, optional
        UART clock cycles per bit. Needed without a platform; on a board derived from the clock
        and ``baud`` when not given.
    bank_keys : int, optional
        Keys per KV memory bank; default (:func:`default_bank_keys`): what the four SPRAMs hold
        per bank on an iCE40UP5K (:meth:`SPRAMBank.max_keys
        <leanattn.fpga.spram.SPRAMBank.max_keys>`), else :data:`BRAM_BANK_KEYS` (at most
        ``max_heads * max_context``).
    baud : int
        The UART's rate on a board (default :data:`DEFAULT_BAUD`).
    frequency : float, optional
        The core clock on a board, in Hz; default 24 MHz on an iCE40, 100 MHz on an ECP5, the
        board's own clock elsewhere.
    memory : str, optional
        ``"spram"`` or ``"bram"`` (:data:`MEMORIES`); default ``"spram"`` on an iCE40UP5K and
        ``"bram"`` elsewhere, also in simulation.
    timeout_bytes : int
        Byte times of silence after which the parser drops a frame (default :data:`TIMEOUT_BYTES`).
    kv_slices : bool, optional
        A register slice (:class:`~leanattn.hdl.skid.SkidBuffer`) on every K and V response stream
        between the memory and the accelerator, so that a bank's RAM output and the core's first
        multiplier are a cycle apart (on the ECP5 the DP16KD's unregistered output and the route
        to a core took 14 of a 18.6 ns critical path). Default: with block RAM, not with SPRAM
        (the UP5K's logic cells are scarce). Each response arrives a cycle later: the cycle model's
        memory ``latency`` is 1 with them. With them the host's KV writes pass a register slice
        too (``kv_write_slice``; a write lands a cycle later, long before a job can read it).
    partial_slices : bool, optional
        The accelerator with a register slice behind every core's partial
        (``LeanAttention(partial_slices=True)``), so that a core's partial register no longer waits
        on the cut test and the arbiter's grant in the same cycle (on the ECP5 the critical path of
        the two-core top after the KV slices), nor the grant on the cut test: the test is made in
        front of the slice and its result registered with the partial. Default: as ``kv_slices``,
        with block RAM, not with SPRAM. Each partial beat reaches the tree or the arbiter a cycle
        later: the cycle model's ``partial_slices=True``.
    request_slices : bool, optional
        The accelerator with a register slice on every core's K and V requests
        (``LeanAttention(request_slices=True)``), so that a request leaves the head of a core's
        queue into a register, not across the die into the bank's request arithmetic in the same
        cycle (on the ECP5 the critical path of the two-core top after the partial slices).
        Default: as ``kv_slices``, with block RAM, not with SPRAM. Each request reaches its bank a
        cycle later: the cycle model's ``request_slices=True``.
    registered_grant : bool, optional
        The accelerator's packet arbiter with its grant in a register
        (``LeanAttention(registered_grant=True)``), so that the cores' and the tree's ``valid``
        no longer decide the grant and the arbiter's output registers in one cycle across the die
        (on the ECP5 the critical path of the two-core top after the request slices). Default: as
        ``kv_slices``, with block RAM, not with SPRAM. Some packets leave the arbiter a cycle
        later: the cycle model's ``registered_grant=True``.

    Members
    -------
    rx : ``In(1, init=1)``, tx : ``Out(1, init=1)``
        The UART lines in simulation; with a platform the ``uart`` pins are used instead and these
        stay unconnected.

    Latency and throughput: those of the UART (``10 * divisor`` cycles per byte), see
    :mod:`leanattn.fpga.protocol` for the bytes of a job.
    Numerics: the accelerator's, bit-exact with :func:`leanattn.sim.golden.run`.
    """

    def __init__(self, cfg, *, divisor=None, bank_keys=None, baud=DEFAULT_BAUD, frequency=None, memory=None,
                 timeout_bytes=TIMEOUT_BYTES, kv_slices=None, partial_slices=None, request_slices=None,
                 registered_grant=None):
        if not isinstance(cfg, AttentionConfig):
            raise TypeError(f"cfg must be an AttentionConfig, not {cfg!r}")
        if divisor is not None:
            check_divisor(divisor)
        if bank_keys is not None:
            if not isinstance(bank_keys, int) or isinstance(bank_keys, bool):
                raise TypeError(f"bank_keys must be an integer, not {bank_keys!r}")
            if not 1 <= bank_keys <= max_bank_keys(cfg):
                raise ValueError(f"bank_keys must be in the range 1..{max_bank_keys(cfg)} "
                                 f"(max_heads * max_context), not {bank_keys}")
        for name, value in (("baud", baud), ("timeout_bytes", timeout_bytes)):
            if not isinstance(value, int) or isinstance(value, bool):
                raise TypeError(f"{name} must be an integer, not {value!r}")
            if value < 1:
                raise ValueError(f"{name} must be at least 1, not {value}")
        if frequency is not None and not (isinstance(frequency, (int, float)) and frequency > 0):
            raise ValueError(f"frequency must be a positive number of Hz, not {frequency!r}")
        if memory is not None and memory not in MEMORIES:
            raise ValueError(f"memory must be one of {', '.join(MEMORIES)}, not {memory!r}")
        for name, value in (("kv_slices", kv_slices), ("partial_slices", partial_slices),
                            ("request_slices", request_slices), ("registered_grant", registered_grant)):
            if value is not None and not isinstance(value, bool):
                raise TypeError(f"{name} must be a bool or None, not {value!r}")
        self._kv_slices, self._partial_slices = kv_slices, partial_slices
        self._request_slices, self._registered_grant = request_slices, registered_grant
        self._cfg = cfg
        self._divisor, self._bank_keys, self._baud = divisor, bank_keys, baud
        self._frequency, self._memory, self._timeout_bytes = frequency, memory, timeout_bytes
        super().__init__({"rx": In(1, init=1), "tx": Out(1, init=1)})

    @property
    def cfg(self):
        return self._cfg

    def memory_for(self, platform):
        """The kind of KV bank this top uses with ``platform`` (None: simulation)."""
        if self._memory is not None:
            return self._memory
        return "spram" if platform is not None and _is_up5k(platform) else "bram"

    def kv_slices_for(self, platform):
        """Whether this top puts a register slice on the K and V responses with ``platform``."""
        return self._slices_for(self._kv_slices, platform)

    def partial_slices_for(self, platform):
        """Whether this top's accelerator has a register slice behind every core's partial with
        ``platform``."""
        return self._slices_for(self._partial_slices, platform)

    def request_slices_for(self, platform):
        """Whether this top's accelerator has a register slice on every core's K and V requests
        with ``platform``."""
        return self._slices_for(self._request_slices, platform)

    def registered_grant_for(self, platform):
        """Whether this top's accelerator has its packet arbiter's grant in a register with
        ``platform``."""
        return self._slices_for(self._registered_grant, platform)

    def _slices_for(self, choice, platform):
        """A register slice option (or the registered grant): as given, else on with block RAM
        (the ECP5 boards, where it cuts a long path) and off with SPRAM (the iCE40UP5K, where
        every flip-flop costs one of its scarce logic cells, and the slow clock needs no cut)."""
        return self.memory_for(platform) == "bram" if choice is None else choice

    def bank_keys_for(self, platform):
        """Keys per bank with ``platform``."""
        if self._bank_keys is not None:
            return self._bank_keys
        return default_bank_keys(self._cfg, self.memory_for(platform))

    def elaborate(self, platform):
        if platform is None and self._divisor is None:
            raise ValueError("divisor must be given to simulate a BoardTop (there is no platform clock)")
        m = Module()
        cfg = self._cfg

        # --- clock and pins: a board's PLL and uart resource, or the simulator's ---------------------
        if platform is None:
            divisor, rx, tx = self._divisor, self.rx, self.tx
        else:
            frequency = _board_clock(m, platform, self._frequency)
            divisor = self._divisor or _divisor(frequency, self._baud)
            pins = platform.request("uart", 0, dir="-")
            m.submodules.rx_buffer = rx_buffer = io.Buffer("i", pins.rx)
            m.submodules.tx_buffer = tx_buffer = io.Buffer("o", pins.tx)
            rx, tx = rx_buffer.i, tx_buffer.o

        # --- the accelerator and its memory; a RESET command resets both (the words stay) --------
        host = HostInterface(cfg, bank_keys=self.bank_keys_for(platform), divisor=divisor,
                             timeout=self._timeout_bytes * FRAME_BITS * divisor)
        top = LeanAttention(cfg, partial_slices=self.partial_slices_for(platform),
                            request_slices=self.request_slices_for(platform),
                            registered_grant=self.registered_grant_for(platform))
        mem = self._memory_banks(platform)
        # The pulse through a register: it reaches every register of both, and straight from the
        # parser's state it was the ECP5's critical path (the UART's next byte is far off).
        reset = Signal()
        m.d.sync += reset.eq(host.o_reset)
        m.submodules.top = ResetInserter(reset)(top)
        m.submodules.mem = ResetInserter(reset)(mem)
        for c in range(cfg.cores):
            for kind in ("k", "v"):
                wiring.connect(m, getattr(top, f"o_{kind}req_{c}"), getattr(mem, f"i_{kind}req_{c}"))
                response = through_skid(m, f"{kind}_slice_{c}", getattr(mem, f"o_{kind}_{c}"),
                                        on=self.kv_slices_for(platform))
                wiring.connect(m, response, getattr(top, f"i_{kind}_{c}"))

        # --- the host link: UART, parser and writer ----------------------------------------------
        m.submodules.uart_rx = uart_rx = UARTReceiver(divisor=divisor)
        m.submodules.uart_tx = uart_tx = UARTTransmitter(divisor=divisor)
        m.submodules.host = host
        m.d.comb += [uart_rx.rx.eq(rx), tx.eq(uart_tx.tx)]
        wiring.connect(m, uart_rx.o_data, host.i_rx)
        wiring.connect(m, host.o_tx, uart_tx.i_data)
        # The KV writes through a register slice with block RAM: the memory decodes a write's
        # kind, bank and range from flip-flops, not from the parser's opcode in the same cycle (on
        # the ECP5 that path into the memory's error flag missed 10 ns). The memory is always
        # ready, so the slice is one register and costs a cycle of each write, nothing more.
        wiring.connect(m, through_skid(m, "kv_write_slice", host.o_kv, on=self.kv_slices_for(platform)),
                       mem.i_write)
        wiring.connect(m, host.o_desc, top.i_desc)
        wiring.connect(m, host.o_query, top.i_query)
        # The output beats through a skid buffer: the UART's ready then stops at its register and
        # does not reach back through the normalizer into the cores in the same cycle (on the
        # iCE40 that was the longest path once the compact pipeline had removed the others).
        wiring.connect(m, through_skid(m, "out_slice", top.o_out), host.i_out)
        m.d.comb += [
            host.i_busy.eq(top.o_busy), host.i_done.eq(top.o_done), host.i_error.eq(top.o_error),
            host.i_cycles.eq(top.o_cycles), host.i_mem_error.eq(mem.o_error),
            mem.i_clear.eq(top.o_done),             # the memory's flag is per job: read, then cleared
            host.i_link_error.eq(uart_rx.o_error | uart_rx.o_overrun),
            uart_rx.i_clear.eq(host.o_link_clear),
        ]

        if platform is not None:
            _leds(m, platform, top=top, mem=mem, uart_rx=uart_rx, uart_tx=uart_tx,
                  frequency=frequency)
        return m

    def _memory_banks(self, platform):
        bank = None
        if self.memory_for(platform) == "spram":
            from .spram import SPRAMBank
            bank = SPRAMBank
        return KVMemory(self._cfg, bank_keys=self.bank_keys_for(platform), bank=bank)


def _is_up5k(platform):
    return getattr(platform, "device", "").startswith("iCE40UP")


def _board_clock(m, platform, frequency):
    """Make the ``sync`` domain from the board's oscillator, through a PLL where the wanted clock
    differs from it; hold it in reset until the PLL locks. Returns its frequency in Hz."""
    f_in = platform.default_clk_frequency
    if isinstance(platform, LatticeICE40Platform):
        f_out = frequency or ICE40_CLOCK
    elif isinstance(platform, LatticeECP5Platform):
        f_out = frequency or ECP5_CLOCK
    else:
        f_out = frequency or f_in
    if f_out == f_in:
        return f_in                                 # the platform makes the domain from its clock
    if isinstance(platform, LatticeICE40Platform):
        pad = platform.request(platform.default_clk, dir="-")
        m.submodules.pll = pll = ICE40PLL(pad=pad.io, f_in=f_in, f_out=f_out)
    elif isinstance(platform, LatticeECP5Platform):
        m.submodules.pll = pll = ECP5PLL(f_in=f_in, f_out=f_out)
        m.submodules.clk_buffer = clk_buffer = io.Buffer("i", platform.request(platform.default_clk, dir="-"))
        m.d.comb += pll.i_clk.eq(clk_buffer.i)
    else:
        raise ValueError(f"no PLL for {type(platform).__name__}: frequency must be its clock, "
                         f"{f_in / 1e6:g} MHz, not {f_out / 1e6:g} MHz")
    m.domains.sync = sync = ClockDomain("sync")
    m.d.comb += sync.clk.eq(pll.o_clk)
    m.submodules.reset_sync = ResetSynchronizer(~pll.o_locked, domain="sync")
    platform.add_clock_constraint(sync.clk, pll.frequency)
    return pll.frequency


def _divisor(frequency, baud):
    """Clock cycles per UART bit, checked against the rate error the receiver tolerates."""
    divisor = round(frequency / baud)
    if divisor < MIN_DIVISOR:
        raise ValueError(f"a {frequency / 1e6:g} MHz clock is too slow for {baud} baud "
                         f"({MIN_DIVISOR} cycles per bit at least)")
    error = abs(frequency / divisor - baud) / baud
    if error > BAUD_TOLERANCE:
        raise ValueError(f"{baud} baud is {error:.1%} off at {frequency / 1e6:g} MHz "
                         f"(divisor {divisor}); at most {BAUD_TOLERANCE:.0%}")
    return divisor


def _leds(m, platform, *, top, mem, uart_rx, uart_tx, frequency):
    """As many status LEDs as the board has: error, busy, a toggle per job, UART activity."""
    bad      = Signal()                 # the last job was rejected or met a memory error, or the link
    toggle   = Signal()
    activity = Signal(range(int(frequency * ACTIVITY_SECONDS) + 1))
    with m.If(top.o_done):
        m.d.sync += [bad.eq((top.o_error != 0) | mem.o_error), toggle.eq(~toggle)]
    with m.If(~uart_rx.rx | ~uart_tx.tx):
        m.d.sync += activity.eq(int(frequency * ACTIVITY_SECONDS))
    with m.Elif(activity != 0):
        m.d.sync += activity.eq(activity - 1)
    signals = [bad | uart_rx.o_error | uart_rx.o_overrun, top.o_busy, toggle, activity != 0]
    for number, value in enumerate(signals):
        try:
            pin = platform.request("led", number, dir="-")
        except ResourceError:
            break
        m.submodules[f"led_{number}"] = led = io.Buffer("o", pin)
        m.d.comb += led.o.eq(value)
