"""Fixed-point formats and the two lossy operations of the datapath, as Amaranth expressions.

Amaranth 0.5 has no fixed-point type; :class:`QFormat` is the small local one. A format is a raw
integer width with a binary point: ``signed``, ``int_bits`` (the sign included when signed) and
``frac_bits``. Products and sums have exact formats (:meth:`QFormat.mul`, :meth:`QFormat.sum`);
the only lossy steps are explicit:

* :func:`round_shift` -- ``floor((x + 2**(n-1)) / 2**n)``: a right shift rounding to nearest, ties
  toward +infinity, for a constant or a runtime shift amount. This is
  :func:`leanattn.sim.golden.round_shift` bit for bit, including shifts wider than the operand (0).
* :func:`saturate` -- clamp to ``lo .. hi``, never wrap.
"""

from dataclasses import dataclass

from amaranth.hdl import Mux, Shape, Value, signed, unsigned

from .config import bits_for

__all__ = ["QFormat", "shape_range", "product_range", "round_shift", "add_rounded", "saturate"]


def shape_range(shape):
    """``(lo, hi)``: the smallest and largest value of a shape (signed or unsigned)."""
    shape = Shape.cast(shape)
    if shape.signed:
        return -(1 << (shape.width - 1)), (1 << (shape.width - 1)) - 1
    return 0, (1 << shape.width) - 1


def product_range(a, b):
    """``(lo, hi)`` of every product of a value in ``a = (lo, hi)`` and one in ``b``: the extremes
    are products of the ranges' ends."""
    corners = [x * y for x in a for y in b]
    return min(corners), max(corners)


@dataclass(frozen=True)
class QFormat:
    """A fixed-point format: ``int_bits`` integer bits (with the sign when ``signed``) and
    ``frac_bits`` fraction bits; raw values are integers scaled by ``2**-frac_bits``."""
    signed:    bool
    int_bits:  int
    frac_bits: int = 0

    def __post_init__(self):
        if not isinstance(self.signed, bool):
            raise TypeError(f"signed must be a bool, not {self.signed!r}")
        for name in ("int_bits", "frac_bits"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool):
                raise TypeError(f"{name} must be an integer, not {value!r}")
        if self.frac_bits < 0:
            raise ValueError(f"frac_bits must be at least 0, not {self.frac_bits}")
        if self.width < 1:
            raise ValueError(f"a format needs at least one bit, not {self.width}")

    @classmethod
    def for_range(cls, lo, hi, frac_bits=0):
        """The narrowest format holding every raw value in ``lo .. hi``."""
        if lo < 0:
            bits = 1
            while not (-(1 << (bits - 1)) <= lo and hi < 1 << (bits - 1)):
                bits += 1
            return cls(True, bits - frac_bits, frac_bits)
        return cls(False, bits_for(hi) - frac_bits, frac_bits)

    @property
    def width(self):
        return self.int_bits + self.frac_bits

    @property
    def shape(self):
        return signed(self.width) if self.signed else unsigned(self.width)

    @property
    def min(self):
        """Smallest raw value."""
        return -(1 << (self.width - 1)) if self.signed else 0

    @property
    def max(self):
        """Largest raw value."""
        return (1 << (self.width - (1 if self.signed else 0))) - 1

    def mul(self, other):
        """Exact format of a product (the extreme products fit)."""
        corners = [a * b for a in (self.min, self.max) for b in (other.min, other.max)]
        return QFormat.for_range(min(corners), max(corners), self.frac_bits + other.frac_bits)

    def sum(self, other=None, terms=2):
        """Exact format of a sum of ``terms`` values of this format (or of this and ``other``)."""
        if other is not None:
            if other.frac_bits != self.frac_bits:
                raise ValueError(f"sum of formats with different fraction bits ({self.frac_bits}, "
                                 f"{other.frac_bits}): align them first")
            return QFormat.for_range(self.min + other.min, self.max + other.max, self.frac_bits)
        return QFormat.for_range(self.min * terms, self.max * terms, self.frac_bits)


def round_shift(value, amount):
    """``floor((value + 2**(amount-1)) / 2**amount)``; ``value`` for ``amount == 0``.

    ``amount`` is an ``int`` (a constant shift) or an unsigned ``Value`` (a barrel shifter). A
    constant is built as ``((value >> (amount - 1)) + 1) >> 1``, which is the same integer for every
    ``amount >= 1`` and needs no wider intermediate; a runtime amount as ``(((2 * value) >> amount)
    + 1) >> 1``, the same integer for every ``amount >= 0`` (``amount == 0``: ``floor((2v + 1) / 2)
    = v``), so the shifter's select is the amount itself, with no decrement or test of 0 in front
    of it. Shifts beyond the operand's width give 0 (or the rounding of the sign bit), exactly as
    the golden model. The result has the operand's signedness and width + 1.
    """
    value = Value.cast(value)
    if isinstance(amount, int):
        if amount < 0:
            raise ValueError(f"amount must be at least 0, not {amount}")
        if amount == 0:
            return value
        return ((value >> (amount - 1)) + 1) >> 1
    amount = Value.cast(amount)
    if amount.shape().signed:
        raise TypeError(f"a runtime shift amount must be unsigned, not {amount.shape()}")
    return (((value << 1) >> amount) + 1) >> 1


def add_rounded(base, value, amount):
    """``base + round_shift(value, amount)`` for a constant ``amount >= 1``, written
    ``base + (value >> amount) + value[amount - 1]``: the same integer for every ``value`` (the
    rounding increment is bit ``amount - 1``), so it is the sum's carry in and needs no adder of its
    own. With ``value = (2 * x) >> n`` and ``amount = 1`` this is ``base + round_shift(x, n)``:
    the barrel shift can sit in the stage before the sum."""
    value = Value.cast(value)
    if not isinstance(amount, int) or amount < 1:
        raise ValueError(f"amount must be an integer of at least 1, not {amount!r}")
    return base + (value >> amount) + value[amount - 1]


def saturate(value, lo, hi):
    """``value`` clamped to ``lo .. hi`` (integers): the largest or smallest representable value
    instead of a wrap.

    When the bounds are those of a narrower signed width ``n`` (``-2**(n-1) .. 2**(n-1) - 1``) and
    ``value`` is signed, the test is on bits, not a comparison: ``value`` fits when its bits from
    ``n - 1`` up are all equal (no carry chain), and the result is ``signed(n)``."""
    value = Value.cast(value)
    width = len(value)
    if value.shape().signed and hi >= 0 and lo == -hi - 1 and (hi + 1) & hi == 0:
        n = (hi + 1).bit_length()                  # hi + 1 == 2**(n-1)
        if n >= width:
            return value
        top = value[n - 1:]
        return Mux(top.all() | ~top.any(), value[:n].as_signed(), Mux(value[-1], lo, hi))
    return Mux(value < lo, lo, Mux(value > hi, hi, value))
