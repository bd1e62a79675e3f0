"""Spec functions of the lookup tables: exp2 of the logit fraction, and the reciprocal mantissa.

The hardware units store these tables in memories; the golden model builds its own copies by calling
the same functions with the same parameters (never by reading the hardware's copy), and a test
compares the two. Entries are exact: computed with integer arithmetic, independent of the float
library, so every platform builds the same bits.

Both tables are read the same way (:func:`lut_read`): the top bits of the argument index the table,
and the remaining bits, if any, interpolate linearly to the next entry.
"""

import math

import numpy as np

__all__ = ["exp2_table", "recip_table", "round_div", "lut_read", "exp2_error_bound", "recip_error_bound"]


def round_div(num, den):
    """``num / den`` rounded to the nearest integer, ties up (``den > 0``); exact for Python ints."""
    return (2 * num + den) // (2 * den)


def _round_pow2_frac(i, index_bits, frac_bits):
    """``round(2**(i / 2**index_bits) * 2**frac_bits)``, nearest, exactly.

    The float value is within a few ulps; when it is not that close to a half-integer, rounding it
    is exact. Otherwise ``t`` is checked with integers: it is the answer iff
    ``(2t - 1)**N <= 2**(i + (P+1)*N) < (2t + 1)**N`` with ``N = 2**index_bits``. (The value is
    irrational for ``0 < i < N``, so there are no ties.)
    """
    n = 1 << index_bits
    value = math.ldexp(2.0 ** (i / n), frac_bits)
    guess = round(value)
    if abs(abs(value - math.floor(value)) - 0.5) > math.ldexp(1.0, frac_bits - 46):
        return guess
    target = 1 << (i + (frac_bits + 1) * n)
    for t in (guess - 1, guess, guess + 1):
        if (2 * t - 1) ** n <= target < (2 * t + 1) ** n:
            return t
    raise AssertionError(f"exp2 table entry {i} not bracketed")  # pragma: no cover


def exp2_table(*, index_bits, frac_bits, interp):
    """Table of ``2**f`` for the fraction ``f`` of a non-positive base-2 logit.

    Entry ``i`` is ``2**(i / 2**index_bits)`` with ``frac_bits`` fraction bits, rounded to nearest
    and clamped to ``2**(frac_bits+1) - 1`` (so every entry fits one integer bit and ``frac_bits``
    fraction bits). With ``interp``, one more entry (``i = 2**index_bits``, the clamped 2.0) is the
    right end point of the last interpolation interval.
    """
    top = (1 << (frac_bits + 1)) - 1
    count = (1 << index_bits) + (1 if interp else 0)
    return [min(_round_pow2_frac(i, index_bits, frac_bits), top) for i in range(count)]


def recip_table(*, index_bits, frac_bits, interp):
    """Table of ``1 / x`` for the mantissa ``x`` in [1, 2) of the softmax denominator.

    With ``interp``: entry ``i`` is ``2**frac_bits / (1 + i / 2**index_bits)`` for ``i`` in
    ``0 .. 2**index_bits`` (end points of the interpolation intervals). Without: entry ``i`` is the
    value at the interval's midpoint, ``2**frac_bits / (1 + (i + 1/2) / 2**index_bits)``, which halves
    the worst error of a truncated mantissa. Rounded to nearest, ties up; values in (2**(frac_bits-1),
    2**frac_bits].
    """
    n = 1 << index_bits
    if interp:
        return [round_div(n << frac_bits, n + i) for i in range(n + 1)]
    return [round_div((2 * n) << frac_bits, 2 * n + 2 * i + 1) for i in range(n)]


def lut_read(table, arg, interp_bits):
    """Read a table at an unsigned argument (NumPy int64 arrays or ints).

    ``index = arg >> interp_bits``; with ``interp_bits`` > 0 the value is
    ``T[index] + round_shift((T[index+1] - T[index]) * rem, interp_bits)`` where ``rem`` are the low
    ``interp_bits`` bits of ``arg`` and ``round_shift`` rounds half up. This is the hardware's
    arithmetic exactly: one table read pair, one signed multiply, one add.
    """
    table = np.asarray(table, dtype=np.int64)
    arg = np.asarray(arg, dtype=np.int64)
    index = arg >> interp_bits
    if interp_bits == 0:
        return table[index]
    rem = arg & ((1 << interp_bits) - 1)
    left = table[index]
    slope = table[index + 1] - left
    return left + ((slope * rem + (1 << (interp_bits - 1))) >> interp_bits)



def exp2_error_bound(*, index_bits, frac_bits, interp_bits):
    """Bound on ``|lut_read(exp2 table, f) - 2**(f / 2**(index_bits + interp_bits)) * 2**frac_bits|``
    in LSBs, over every fraction ``f``.

    Without interpolation the entries are the exact values rounded: 1/2 LSB. With it: the end
    points' rounding (1/2), the interpolation's rounding (1/2), the clamp of the last end point
    (2.0 -> 2 - 1 LSB, at most 1) and the chord error of a convex function,
    ``h**2 / 8 * max (2**x)'' = h**2 * ln(2)**2 / 4`` in units of 1.0 with ``h = 2**-index_bits``.
    """
    if interp_bits == 0:
        return 0.5
    chord = math.ldexp(math.log(2.0) ** 2 / 4, frac_bits - 2 * index_bits)
    return 2.0 + chord


def recip_error_bound(*, index_bits, interp_bits, frac_bits):
    """Bound on the relative error ``|r * x / 2**frac_bits - 1|`` of the reciprocal of any
    mantissa ``x`` in [1, 2), where ``r`` is read at the truncated ``index_bits + interp_bits``
    mantissa bits.

    Without interpolation: the midpoint entry is off by at most half an interval,
    ``2**-(index_bits+1)`` relative, plus its rounding, 1/2 LSB of values above 2**(frac_bits-1),
    i.e. ``2**-frac_bits``. With it: mantissa truncation ``2**-(index_bits+interp_bits)``, the chord
    error of 1/x (``h**2/8 * max |2/x**3| = h**2/4`` against values >= 1/2: ``h**2/2`` relative),
    and the roundings of the entries and of the interpolation (1 LSB: ``2**-(frac_bits-1)``).
    """
    if interp_bits == 0:
        return math.ldexp(1.0, -(index_bits + 1)) + math.ldexp(1.0, -frac_bits)
    return (math.ldexp(1.0, -(index_bits + interp_bits)) + math.ldexp(1.0, -(2 * index_bits + 1))
            + math.ldexp(1.0, -(frac_bits - 1)))
