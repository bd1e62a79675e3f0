"""PLLs that make a board's core clock from its oscillator, their dividers computed and checked.

* :class:`ICE40PLL`: an ``SB_PLL40_PAD`` (the reference comes straight from the clock pin, which on
  the iCE40UP5K's SG48 package is the PLL's pad) in ``SIMPLE`` feedback mode:
  ``f_out = f_in * (DIVF + 1) / ((DIVR + 1) * 2**DIVQ)``, with the limits of the iCE40 PLL
  (:func:`ice40_pll_params`). iCEBreaker: 12 MHz -> 24 MHz exactly (DIVR 0, DIVF 63, DIVQ 5;
  VCO 768 MHz).
* :class:`ECP5PLL`: an ``EHXPLLL`` with CLKOP fed back: ``f_out = f_in * CLKFB_DIV /
  CLKI_DIV``, VCO ``f_out * CLKOP_DIV`` (:func:`ecp5_pll_params`). ULX3S: 25 MHz -> 100 MHz
  exactly (CLKI_DIV 1, CLKFB_DIV 4, CLKOP_DIV 6; VCO 600 MHz).

Each component has the achieved frequency as :attr:`frequency` (a search picks the closest
setting, and fails when none is within :data:`TOLERANCE`), a clock output and a lock output.
"""

from dataclasses import dataclass

from amaranth.hdl import Instance, Module
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

__all__ = ["TOLERANCE", "ICE40PLLParams", "ECP5PLLParams", "ice40_pll_params", "ecp5_pll_params",
           "ICE40PLL", "ECP5PLL"]

#: Largest relative error of an achieved frequency.
TOLERANCE = 0.01

MHZ = 1e6

# iCE40 sysCLOCK PLL (Lattice TN1251, the iCE40 LP/HX/UltraPlus data sheets).
ICE40_PFD = (10 * MHZ, 133 * MHZ)       # phase detector input, f_in / (DIVR + 1)
ICE40_VCO = (533 * MHZ, 1066 * MHZ)
ICE40_OUT = (16 * MHZ, 275 * MHZ)
ICE40_DIVR = range(16)                  # 4 bits
ICE40_DIVF = range(128)                 # 7 bits
ICE40_DIVQ = range(1, 7)                # 3 bits, 1..6
#: Loop filter setting by phase detector frequency: (upper bound, FILTER_RANGE), as icepll chooses.
ICE40_FILTER = ((17 * MHZ, 1), (26 * MHZ, 2), (44 * MHZ, 3), (66 * MHZ, 4), (101 * MHZ, 5), (None, 6))

# ECP5 EHXPLLL (Lattice TN1263, the ECP5 data sheet).
ECP5_PFD = (3.125 * MHZ, 400 * MHZ)
ECP5_VCO = (400 * MHZ, 800 * MHZ)
ECP5_OUT = (3.125 * MHZ, 400 * MHZ)
ECP5_CLKI_DIV = range(1, 129)
ECP5_CLKFB_DIV = range(1, 81)
ECP5_CLKOP_DIV = range(1, 129)
#: The VCO frequency preferred among settings of equal output (the middle of its range).
ECP5_VCO_TARGET = 600 * MHZ


def _check_frequency(name, value):
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not value > 0:
        raise ValueError(f"{name} must be a positive frequency in Hz, not {value!r}")


def _pick(candidates, f_in, f_out, device):
    if not candidates:
        raise ValueError(f"no {device} PLL setting makes {f_out / MHZ:g} MHz from {f_in / MHZ:g} MHz")
    best = min(candidates, key=lambda c: c[0])
    error = abs(best[1].frequency - f_out) / f_out
    if error > TOLERANCE:
        raise ValueError(f"the {device} PLL reaches {best[1].frequency / MHZ:g} MHz at best from "
                         f"{f_in / MHZ:g} MHz, not {f_out / MHZ:g} MHz (within {TOLERANCE:.0%})")
    return best[1]


@dataclass(frozen=True)
class ICE40PLLParams:
    divr: int
    divf: int
    divq: int
    filter_range: int
    f_in: float
    frequency: float    # achieved output
    vco: float


def ice40_pll_params(f_in, f_out):
    """The ``SB_PLL40_*`` setting (``SIMPLE`` feedback) closest to ``f_out`` from ``f_in``."""
    _check_frequency("f_in", f_in)
    _check_frequency("f_out", f_out)
    candidates = []
    for divr in ICE40_DIVR:
        pfd = f_in / (divr + 1)
        if not ICE40_PFD[0] <= pfd <= ICE40_PFD[1]:
            continue
        for divf in ICE40_DIVF:
            vco = pfd * (divf + 1)
            if not ICE40_VCO[0] <= vco <= ICE40_VCO[1]:
                continue
            for divq in ICE40_DIVQ:
                out = vco / (1 << divq)
                if ICE40_OUT[0] <= out <= ICE40_OUT[1]:
                    filter_range = next(r for bound, r in ICE40_FILTER if bound is None or pfd < bound)
                    candidates.append(((abs(out - f_out), divr), ICE40PLLParams(
                        divr, divf, divq, filter_range, f_in, out, vco)))
    return _pick(candidates, f_in, f_out, "iCE40")


@dataclass(frozen=True)
class ECP5PLLParams:
    clki_div: int
    clkfb_div: int
    clkop_div: int
    f_in: float
    frequency: float
    vco: float

    @property
    def clkop_cphase(self):
        """CLKOP's coarse phase for 0 degrees, as nextpnr's ``ecppll`` writes it (``CLKOP_DIV // 2``;
        with CLKOP fed back, the phase does not change the output frequency)."""
        return self.clkop_div // 2


def ecp5_pll_params(f_in, f_out):
    """The ``EHXPLLL`` setting (CLKOP feedback) closest to ``f_out`` from ``f_in``."""
    _check_frequency("f_in", f_in)
    _check_frequency("f_out", f_out)
    candidates = []
    for clki in ECP5_CLKI_DIV:
        pfd = f_in / clki
        if not ECP5_PFD[0] <= pfd <= ECP5_PFD[1]:
            continue
        for fb in ECP5_CLKFB_DIV:
            out = pfd * fb
            if not ECP5_OUT[0] <= out <= ECP5_OUT[1]:
                continue
            for op in ECP5_CLKOP_DIV:
                vco = out * op
                if ECP5_VCO[0] <= vco <= ECP5_VCO[1]:
                    candidates.append(((abs(out - f_out), abs(vco - ECP5_VCO_TARGET)),
                                       ECP5PLLParams(clki, fb, op, f_in, out, vco)))
    return _pick(candidates, f_in, f_out, "ECP5")


class ICE40PLL(wiring.Component):
    """``SB_PLL40_PAD``: the core clock from a clock pin.

    Parameters
    ----------
    pad : io port
        The reference clock's pin, as ``platform.request(clock, dir="-").io``.
    f_in, f_out : float
        Reference and wanted output frequency, in Hz.

    Members
    -------
    o_clk : ``Out(1)``
        The output clock (``PLLOUTGLOBAL``, on a global net); :attr:`frequency` Hz.
    o_locked : ``Out(1)``
    """

    def __init__(self, *, pad, f_in, f_out):
        self._params = ice40_pll_params(f_in, f_out)
        self._pad = pad
        super().__init__({"o_clk": Out(1), "o_locked": Out(1)})

    @property
    def params(self):
        return self._params

    @property
    def frequency(self):
        """The achieved output frequency, in Hz."""
        return self._params.frequency

    def elaborate(self, platform):
        m = Module()
        p = self._params
        m.submodules.pll = Instance(
            "SB_PLL40_PAD",
            p_FEEDBACK_PATH="SIMPLE",
            p_DIVR=p.divr, p_DIVF=p.divf, p_DIVQ=p.divq, p_FILTER_RANGE=p.filter_range,
            i_PACKAGEPIN=self._pad,
            i_RESETB=1, i_BYPASS=0,
            o_PLLOUTGLOBAL=self.o_clk, o_LOCK=self.o_locked,
        )
        return m


class ECP5PLL(wiring.Component):
    """``EHXPLLL`` with CLKOP fed back: the core clock from the board's clock.

    Parameters
    ----------
    f_in, f_out : float
        Reference and wanted output frequency, in Hz.

    Members
    -------
    i_clk : ``In(1)``
        The reference clock.
    o_clk : ``Out(1)``
        CLKOP, :attr:`frequency` Hz.
    o_locked : ``Out(1)``
    """

    def __init__(self, *, f_in, f_out):
        self._params = ecp5_pll_params(f_in, f_out)
        super().__init__({"i_clk": In(1), "o_clk": Out(1), "o_locked": Out(1)})

    @property
    def params(self):
        return self._params

    @property
    def frequency(self):
        """The achieved output frequency, in Hz."""
        return self._params.frequency

    def elaborate(self, platform):
        m = Module()
        p = self._params
        m.submodules.pll = Instance(
            "EHXPLLL",
            a_FREQUENCY_PIN_CLKI=f"{p.f_in / MHZ:g}", a_FREQUENCY_PIN_CLKOP=f"{p.frequency / MHZ:g}",
            a_ICP_CURRENT="12", a_LPF_RESISTOR="8", a_MFG_ENABLE_FILTEROPAMP="1", a_MFG_GMCREF_SEL="2",
            p_PLLRST_ENA="DISABLED", p_INTFB_WAKE="DISABLED", p_STDBY_ENABLE="DISABLED",
            p_DPHASE_SOURCE="DISABLED", p_OUTDIVIDER_MUXA="DIVA", p_FEEDBK_PATH="CLKOP",
            p_CLKI_DIV=p.clki_div, p_CLKFB_DIV=p.clkfb_div,
            p_CLKOP_ENABLE="ENABLED", p_CLKOP_DIV=p.clkop_div, p_CLKOP_CPHASE=p.clkop_cphase,
            p_CLKOP_FPHASE=0,
            i_CLKI=self.i_clk, i_CLKFB=self.o_clk, i_RST=0, i_STDBY=0,
            i_PHASESEL0=0, i_PHASESEL1=0, i_PHASEDIR=1, i_PHASESTEP=1, i_PHASELOADREG=1,
            i_PLLWAKESYNC=0, i_ENCLKOP=0,
            o_CLKOP=self.o_clk, o_LOCK=self.o_locked,
        )
        return m
