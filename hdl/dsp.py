"""A product between registers, built in the target's multiplier block with its own registers.

:func:`registered_product` builds ``p = a * b`` with ``a`` and ``b`` each from an operand register
(or straight from its value) and ``p`` a register, every register with its own clock enable.
Elaborated for the ECP5 (an amaranth platform whose ``family`` is ``"ecp5"``) with operands of at
most 18 bits it is one MULT18X18D whose input and output registers are the block's own
(``REG_INPUTA_CLK``, ``REG_INPUTB_CLK``, ``REG_OUTPUT_CLK``), which Yosys never infers there: the
fabric then reaches the block into a register and leaves it from one, and the 3.9 ns of the
multiplier array stay inside the block instead of adding to the routes on both sides. Elsewhere
(simulation, exported Verilog, the iCE40, whose ``synth_ice40 -dsp`` packs SB_MAC16 registers by
itself) it is the same registers around ``*``. It is a builder, like
:class:`~leanattn.hdl.slicemul.SlicedProducts`, not a component: the registers belong to the stage
of the unit that uses them, and no port wires of a submodule appear in that unit.

:func:`mult18x18d_model` is a behavioural Verilog model of the part of the MULT18X18D this uses,
for simulating an ECP5 elaboration (Yosys has only a black box of it).
"""

from amaranth.hdl import ClockSignal, Instance, Shape, Signal, Value

from .fixed import QFormat, product_range, shape_range

__all__ = ["ECP5", "registered_product", "product_shape", "uses_mult18x18d", "mult18x18d_model",
           "write_mult18x18d_model", "MULT18X18D_BITS"]

#: Operand width of the ECP5's MULT18X18D (each operand signed or unsigned by its SIGNEDA/SIGNEDB).
MULT18X18D_BITS = 18
#: Its product width.
_P_BITS = 2 * MULT18X18D_BITS
#: The block's clock enables, one per register group: the operand registers and the product's.
_CE = {"a": "CE0", "b": "CE1", "p": "CE2"}


class ECP5:
    """A stand-in platform for elaborating for the ECP5 without a board: the one thing
    :func:`registered_product` reads of a platform (``family``). Exported Verilog elaborated
    for it instantiates MULT18X18D; simulate it with :func:`mult18x18d_model`."""
    family = "ecp5"


def product_shape(a_shape, b_shape):
    """The exact shape of a product of an ``a_shape`` and a ``b_shape`` value."""
    return QFormat.for_range(*product_range(shape_range(a_shape), shape_range(b_shape))).shape


def uses_mult18x18d(platform, a_shape, b_shape):
    """Whether :func:`registered_product` builds a MULT18X18D: an ECP5 platform (``family ==
    "ecp5"``) and both operands of at most 18 bits."""
    return (getattr(platform, "family", None) == "ecp5"
            and all(Shape.cast(s).width <= MULT18X18D_BITS for s in (a_shape, b_shape)))


def registered_product(m, platform, *, a, b, p_en, a_en=None, b_en=None, name):
    """``p = a * b`` into a product register; returns ``p`` (``product_shape`` of the operands).

    Parameters
    ----------
    m : Module
        Where the registers (or the MULT18X18D instance, submodule ``name``) go.
    platform
        The platform ``elaborate`` was given: on the ECP5 with operands of at most 18 bits
        (:func:`uses_mult18x18d`) the registers are the MULT18X18D's own; else fabric registers
        around ``*``.
    a, b : Value
        The operands (signed or unsigned, by their shapes).
    a_en, b_en : Value or None
        With an enable, the operand passes an operand register (``<name>_a`` / ``<name>_b``)
        loaded from it while the enable is high; with ``None`` it reaches the multiplier directly.
    p_en : Value
        Load the product register ``<name>`` with the product of the operands as they are now
        (the operand registers' contents, or the direct operands).

    Latency: ``p`` holds the product one cycle after ``p_en``; an operand register's value counts
    from the cycle after its enable.
    Numerics: exact. Every register is reset-less: it means something only as its user's valid
    says.
    """
    a, b = Value.cast(a), Value.cast(b)
    p = Signal(product_shape(a.shape(), b.shape()), name=name, reset_less=True)
    if uses_mult18x18d(platform, a.shape(), b.shape()):
        m.d.comb += p.eq(_mult18x18d(m, {"a": (a, a_en), "b": (b, b_en)}, p_en, name)[:len(p)])
        return p
    operands = []
    for suffix, value, enable in (("a", a, a_en), ("b", b, b_en)):
        if enable is not None:
            held = Signal.like(value, name=f"{name}_{suffix}", reset_less=True)
            with m.If(enable):
                m.d.sync += held.eq(value)
            value = held
        operands.append(value)
    with m.If(p_en):
        m.d.sync += p.eq(operands[0] * operands[1])
    return p


def _mult18x18d(m, operands, p_en, name):
    """One MULT18X18D (submodule ``name``); returns its 36-bit product. Operands sign- or
    zero-extended to 18 bits (SIGNEDA / SIGNEDB from their shapes); registers on CLK0 with clock
    enables CE0 (a), CE1 (b), CE2 (p); no reset (RST tied low, GSR off); cascade and pre-adder
    inputs unused."""
    params = dict(p_REG_OUTPUT_CLK="CLK0", p_REG_OUTPUT_CE=_CE["p"], p_GSR="DISABLED",
                  p_RESETMODE="SYNC")
    ports = {"i_CLK0": ClockSignal("sync"), f"i_{_CE['p']}": p_en, "i_CE3": 0,
             **{f"i_RST{i}": 0 for i in range(4)}, **{f"i_C{i}": 0 for i in range(MULT18X18D_BITS)},
             "i_SOURCEA": 0, "i_SOURCEB": 0}
    for key, (value, enable) in operands.items():
        pin = key.upper()
        wide = Signal(Shape(MULT18X18D_BITS, value.shape().signed), name=f"{name}_{key}18")
        m.d.comb += wide.eq(value)                  # sign- or zero-extends by the operand's shape
        ports.update({f"i_{pin}{i}": wide[i] for i in range(MULT18X18D_BITS)})
        ports[f"i_SIGNED{pin}"] = int(value.shape().signed)
        params[f"p_REG_INPUT{pin}_CLK"] = "NONE" if enable is None else "CLK0"
        params[f"p_REG_INPUT{pin}_CE"] = _CE[key]
        ports[f"i_{_CE[key]}"] = 0 if enable is None else enable
    product = Signal(_P_BITS, name=f"{name}_p36")
    ports.update({f"o_P{i}": product[i] for i in range(_P_BITS)})
    m.submodules[name] = Instance("MULT18X18D", **params, **ports)
    return product


def mult18x18d_model():
    """Verilog text of a behavioural MULT18X18D model: ``P = A * B`` (each operand signed when its
    SIGNEDA / SIGNEDB is high), with the input registers (``REG_INPUTA_CLK`` / ``REG_INPUTB_CLK``
    ``"CLK0"``) and the output register (``REG_OUTPUT_CLK`` ``"CLK0"``) each enabled by the clock
    enable its ``*_CE`` parameter names; registers start at 0. Only what
    :func:`registered_product` uses: no pipeline register, resets, cascades or pre-adder."""
    ports_in = ", ".join(f"A{i}, B{i}, C{i}" for i in range(MULT18X18D_BITS))
    bits = lambda pin, n: "{" + ", ".join(f"{pin}{i}" for i in reversed(range(n))) + "}"
    p_out = ", ".join(f"P{i}" for i in range(_P_BITS))
    ce = lambda group: (f"({group} == \"CE0\" ? CE0 : {group} == \"CE1\" ? CE1 : "
                        f"{group} == \"CE2\" ? CE2 : CE3)")
    return f"""// Behavioural model of the MULT18X18D features leanattn.hdl.dsp.registered_product uses.
module MULT18X18D (
    input {ports_in},
    input SIGNEDA, SIGNEDB, SOURCEA, SOURCEB,
    input CLK0, CE0, CE1, CE2, CE3, RST0, RST1, RST2, RST3,
    output {p_out}
);
    parameter REG_INPUTA_CLK = "NONE";
    parameter REG_INPUTA_CE = "CE0";
    parameter REG_INPUTA_RST = "RST0";
    parameter REG_INPUTB_CLK = "NONE";
    parameter REG_INPUTB_CE = "CE0";
    parameter REG_INPUTB_RST = "RST0";
    parameter REG_INPUTC_CLK = "NONE";
    parameter REG_PIPELINE_CLK = "NONE";
    parameter REG_OUTPUT_CLK = "NONE";
    parameter REG_OUTPUT_CE = "CE0";
    parameter REG_OUTPUT_RST = "RST0";
    parameter GSR = "ENABLED";
    parameter RESETMODE = "SYNC";
    wire [17:0] a_in = {bits("A", MULT18X18D_BITS)};
    wire [17:0] b_in = {bits("B", MULT18X18D_BITS)};
    reg  [17:0] a_reg = 18'd0, b_reg = 18'd0;
    reg  [35:0] p_reg = 36'd0;
    always @(posedge CLK0) begin
        if ({ce("REG_INPUTA_CE")}) a_reg <= a_in;
        if ({ce("REG_INPUTB_CE")}) b_reg <= b_in;
    end
    wire [17:0] a = REG_INPUTA_CLK == "CLK0" ? a_reg : a_in;
    wire [17:0] b = REG_INPUTB_CLK == "CLK0" ? b_reg : b_in;
    wire signed [36:0] a_x = SIGNEDA ? {{{{19{{a[17]}}}}, a}} : {{19'd0, a}};
    wire signed [36:0] b_x = SIGNEDB ? {{{{19{{b[17]}}}}, b}} : {{19'd0, b}};
    wire signed [73:0] product = a_x * b_x;
    always @(posedge CLK0)
        if ({ce("REG_OUTPUT_CE")}) p_reg <= product[35:0];
    wire [35:0] p = REG_OUTPUT_CLK == "CLK0" ? p_reg : product[35:0];
    assign {bits("P", _P_BITS)} = p;
endmodule
"""


def write_mult18x18d_model(folder):
    """Write :func:`mult18x18d_model` to ``folder/mult18x18d.v``; return the path (for a
    simulator's extra sources)."""
    from pathlib import Path

    path = Path(folder) / "mult18x18d.v"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(mult18x18d_model())
    return path
