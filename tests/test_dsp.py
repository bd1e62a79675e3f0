# amaranth: UnusedElaboratable=no
"""registered_product: exact products with every enable pattern, fabric registers under
amaranth.sim and the ECP5's MULT18X18D (with its own registers, simulated with the block's model)
under cocotb on Icarus and Verilator; when the block is used; its parameters; product shapes."""

import random

import pytest
from amaranth.hdl import Module, signed, unsigned
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out
from amaranth.sim import Simulator

from leanattn.hdl.dsp import (
    ECP5,
    MULT18X18D_BITS,
    product_shape,
    registered_product,
    uses_mult18x18d,
    write_mult18x18d_model,
)
from leanattn.hdl.fixed import shape_range
from leanattn.sim.cocotb_util import design_verilog, run_cocotb
from leanattn.sim.stream_bench import bench_dir


class Product(wiring.Component):
    """``registered_product`` with every operand, enable and the product as ports."""

    def __init__(self, a_shape, b_shape, *, a_registered=True, b_registered=True):
        self.registered = {"a": a_registered, "b": b_registered}
        members = {"a": In(a_shape), "b": In(b_shape), "p_en": In(1),
                   "p": Out(product_shape(a_shape, b_shape))}
        members.update({f"{k}_en": In(1) for k, on in self.registered.items() if on})
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        m.d.comb += self.p.eq(registered_product(
            m, platform, a=self.a, b=self.b, p_en=self.p_en, name="prod",
            a_en=self.a_en if self.registered["a"] else None,
            b_en=self.b_en if self.registered["b"] else None))
        return m


#: (a_shape, b_shape): both signed, both unsigned at the block's full width, mixed (the
#: normalizer's top slice times the factor; the PV unit's weight times a value), one bit.
SHAPES = {
    "signed18":   (signed(18), signed(18)),
    "unsigned18": (unsigned(18), unsigned(18)),
    "mixed18":    (unsigned(18), signed(18)),
    "norm_top":   (signed(9), unsigned(16)),
    "pv":         (unsigned(17), signed(8)),
    "one_bit":    (signed(1), unsigned(1)),
}
REGISTERED = [(True, True), (True, False), (False, True), (False, False)]


def random_operand(rng, shape):
    lo, hi = shape_range(shape)
    return rng.choice([lo, hi, 0]) if rng.random() < 0.3 else rng.randint(lo, hi)


@pytest.mark.parametrize("registered", REGISTERED)
@pytest.mark.parametrize("shapes", SHAPES)
def test_amaranth(shapes, registered):
    """Fabric registers: 400 cycles of random operands and enables against the register model."""
    dut = Product(*SHAPES[shapes], a_registered=registered[0], b_registered=registered[1])
    rng = random.Random(f"{shapes}-{registered}")
    checked = []

    async def bench(ctx):
        held, product = {"a": 0, "b": 0}, None
        for _ in range(400):
            drive = {k: random_operand(rng, SHAPES[shapes][i]) for i, k in enumerate("ab")}
            enable = {k: rng.random() < 0.5 for k in "ab"}
            p_en = rng.random() < 0.7
            for k in "ab":
                ctx.set(getattr(dut, k), drive[k])
                if dut.registered[k]:
                    ctx.set(getattr(dut, f"{k}_en"), enable[k])
            ctx.set(dut.p_en, p_en)
            await ctx.tick()
            seen = {k: held[k] if dut.registered[k] else drive[k] for k in "ab"}
            if p_en:
                product = seen["a"] * seen["b"]
            held.update({k: drive[k] for k in "ab" if dut.registered[k] and enable[k]})
            if product is not None:
                assert ctx.get(dut.p) == product
                checked.append(product)

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    assert len(checked) > 350
    assert len(set(checked)) > (1 if shapes == "one_bit" else 100)


@pytest.mark.parametrize("simulator", ["icarus", "verilator"])
@pytest.mark.parametrize("registered", REGISTERED)
@pytest.mark.parametrize("shapes", ["signed18", "unsigned18", "mixed18", "pv"])
def test_mult18x18d_cocotb(request, shapes, registered, simulator):
    """Elaborated for the ECP5: one MULT18X18D and no fabric register; 2,000 cycles of random
    operands and enables through the block's model match the register model."""
    a_shape, b_shape = SHAPES[shapes]
    dut = Product(a_shape, b_shape, a_registered=registered[0], b_registered=registered[1])
    text = design_verilog(dut, toplevel="product", platform=ECP5())
    assert text.count("MULT18X18D #(") == 1 and "always @(posedge clk)" not in text
    build = bench_dir(request)
    run_cocotb(text, toplevel="product", test_module="leanattn.sim.tb_dsp", simulator=simulator,
               build_dir=build, extra_sources=[write_mult18x18d_model(build)],
               tb_args={"a_signed": a_shape.signed, "b_signed": b_shape.signed,
                        "a_registered": registered[0], "b_registered": registered[1],
                        "cycles": 2000})


def test_parameters():
    """The block's registers on CLK0 with one clock enable each, no reset, signedness from the
    operands; a direct operand has no input register."""
    text = design_verilog(Product(signed(9), unsigned(16), b_registered=False), toplevel="product",
                          platform=ECP5())
    for line in ('.REG_INPUTA_CLK("CLK0")', '.REG_INPUTA_CE("CE0")', '.REG_INPUTB_CLK("NONE")',
                 '.REG_OUTPUT_CLK("CLK0")', '.REG_OUTPUT_CE("CE2")', '.GSR("DISABLED")',
                 ".SIGNEDA(1'h1)", ".SIGNEDB(1'h0)", ".RST0(1'h0)", ".CE2(p_en)", ".CE0(a_en)",
                 ".A17(a[8])", ".B17(1'h0)"):
        assert line in text, line


@pytest.mark.parametrize("a_shape, b_shape, expected", [
    (signed(18), signed(18), True), (unsigned(18), signed(18), True),
    (unsigned(19), unsigned(8), False), (signed(8), signed(19), False),
])
def test_uses_mult18x18d(a_shape, b_shape, expected):
    """Only on the ECP5, and only for operands of at most 18 bits; elsewhere registers and ``*``."""
    assert uses_mult18x18d(ECP5(), a_shape, b_shape) is expected
    assert not uses_mult18x18d(None, a_shape, b_shape)
    text = design_verilog(Product(a_shape, b_shape), toplevel="product", platform=ECP5())
    assert ("MULT18X18D" in text) is expected
    assert MULT18X18D_BITS == 18


@pytest.mark.parametrize("a_shape, b_shape, expected", [
    (signed(18), signed(18), signed(36)),          # -2**17 * -2**17 = 2**34 needs the 36th bit
    (unsigned(18), unsigned(18), unsigned(36)),
    (unsigned(17), signed(8), signed(25)),
    (signed(9), unsigned(16), signed(25)),
    (signed(1), unsigned(1), signed(1)),
])
def test_product_shape(a_shape, b_shape, expected):
    assert product_shape(a_shape, b_shape) == expected
