"""cocotb bench of :func:`leanattn.hdl.dsp.registered_product` (run by ``tests/test_dsp.py``).

The design under test has ports ``a``, ``b``, ``a_en``, ``b_en``, ``p_en`` and ``p``
(``tests/test_dsp.py``'s wrapper). tb_args (see :func:`leanattn.sim.cocotb_util.tb_args`):

* ``a_signed``, ``b_signed``: the operands' signedness (their widths are read from the ports);
* ``a_registered``, ``b_registered``: whether the operand passes its register;
* ``cycles``: cycles of random operands and enables (the extremes of each operand often).

Every cycle the bench compares ``p`` with a register-level model of the contract: the operand
registers load while their enable is high, the product register loads the product of the
operands as they are (registered or direct) while ``p_en`` is high.
"""

import random

import cocotb
from amaranth.hdl import Shape
from cocotb.clock import Clock
from cocotb.triggers import FallingEdge, RisingEdge

from leanattn.hdl.fixed import shape_range
from leanattn.sim.cocotb_util import tb_args

PERIOD_NS = 10


def _operand(rng, width, signed):
    lo, hi = shape_range(Shape(width, signed))
    if rng.random() < 0.3:
        return rng.choice([lo, hi, 0, min(1, hi), max(-1, lo)])
    return rng.randint(lo, hi)


@cocotb.test()
async def random_operands(dut):
    args = tb_args()
    rng = random.Random(cocotb.RANDOM_SEED)
    shapes = {"a": (len(dut.a), args["a_signed"]), "b": (len(dut.b), args["b_signed"])}
    registered = {"a": args["a_registered"], "b": args["b_registered"]}
    cocotb.start_soon(Clock(dut.clk, PERIOD_NS, unit="ns").start())
    dut.rst.value = 0
    for name in ("a", "b"):
        getattr(dut, name).value = 0
        if registered[name]:
            getattr(dut, f"{name}_en").value = 0
    dut.p_en.value = 0
    held = {"a": 0, "b": 0}
    product = None                      # unknown until the first load
    loads = 0
    await FallingEdge(dut.clk)
    for cycle in range(args["cycles"]):
        drive = {name: _operand(rng, *shapes[name]) for name in ("a", "b")}
        enable = {name: rng.random() < 0.5 for name in ("a", "b")}
        p_en = rng.random() < 0.7
        for name in ("a", "b"):
            getattr(dut, name).value = drive[name] & ((1 << shapes[name][0]) - 1)
            if registered[name]:
                getattr(dut, f"{name}_en").value = int(enable[name])
        dut.p_en.value = int(p_en)
        await RisingEdge(dut.clk)
        seen = {name: held[name] if registered[name] else drive[name] for name in ("a", "b")}
        if p_en:
            product, loads = seen["a"] * seen["b"], loads + 1
        for name in ("a", "b"):
            if registered[name] and enable[name]:
                held[name] = drive[name]
        await FallingEdge(dut.clk)
        if product is not None:
            got = dut.p.value.to_signed() if product < 0 or args["a_signed"] or args["b_signed"] \
                else dut.p.value.to_unsigned()
            assert got == product, (f"cycle {cycle}: p = {got}, expected {product} "
                                    f"(seed {cocotb.RANDOM_SEED})")
    assert loads > args["cycles"] // 2
