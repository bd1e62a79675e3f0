from decimal import Decimal, localcontext
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from leanattn.hdl.config import PRESETS
from leanattn.hdl.tables import (
    exp2_error_bound,
    exp2_table,
    lut_read,
    recip_error_bound,
    recip_table,
    round_div,
)
from leanattn.sim import golden

EXP_SHAPES = [(2, 4), (6, 10), (8, 14), (8, 20), (10, 16), (12, 24)]
RECIP_SHAPES = [(2, 8), (5, 12), (7, 16), (10, 16), (14, 24)]


def _exact_pow2(i, index_bits, frac_bits):
    with localcontext() as ctx:
        ctx.prec = 60
        return (Decimal(2).ln() * Decimal(i) / Decimal(1 << index_bits)).exp() * (1 << frac_bits)


@given(st.integers(-10**12, 10**12), st.integers(1, 10**9))
def test_round_div_is_nearest_ties_up(num, den):
    exact = Fraction(num, den)
    r = round_div(num, den)
    assert r - Fraction(1, 2) <= exact < r + Fraction(1, 2)


@pytest.mark.parametrize("index_bits, frac_bits", EXP_SHAPES)
@pytest.mark.parametrize("interp", [False, True])
def test_exp2_table_entries_exact(index_bits, frac_bits, interp):
    table = exp2_table(index_bits=index_bits, frac_bits=frac_bits, interp=interp)
    assert len(table) == (1 << index_bits) + interp
    top = (1 << (frac_bits + 1)) - 1
    step = max(1, len(table) // 512)                       # every entry of the small tables
    for i in list(range(0, len(table), step)) + [len(table) - 1]:
        exact = _exact_pow2(i, index_bits, frac_bits)
        assert table[i] == min(top, int((exact + Decimal("0.5")).to_integral_value(rounding="ROUND_FLOOR")))
    assert table[0] == 1 << frac_bits                      # 2**0 is exactly 1
    assert all(a <= b for a, b in zip(table, table[1:]))   # monotonic
    assert max(table) <= top


@pytest.mark.parametrize("index_bits, frac_bits", RECIP_SHAPES)
@pytest.mark.parametrize("interp", [False, True])
def test_recip_table_entries_exact(index_bits, frac_bits, interp):
    table = recip_table(index_bits=index_bits, frac_bits=frac_bits, interp=interp)
    n = 1 << index_bits
    assert len(table) == n + interp
    for i, entry in enumerate(table):
        point = Fraction(n + i, n) if interp else Fraction(2 * n + 2 * i + 1, 2 * n)
        exact = Fraction(1 << frac_bits) / point
        assert entry - Fraction(1, 2) <= exact < entry + Fraction(1, 2)
    assert all(a >= b for a, b in zip(table, table[1:]))
    assert (1 << (frac_bits - 1)) <= min(table) and max(table) <= 1 << frac_bits


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_golden_tables_come_from_the_spec(name):
    cfg = PRESETS[name]
    exp, rec = golden.tables(cfg)
    assert list(exp) == exp2_table(index_bits=cfg.exp_index_bits, frac_bits=cfg.exp_frac_bits,
                                   interp=cfg.exp_interp_bits > 0)
    assert list(rec) == recip_table(index_bits=cfg.recip_index_bits, frac_bits=cfg.recip_frac_bits,
                                    interp=cfg.recip_interp_bits > 0)
    assert len(exp) == cfg.exp_table_entries and len(rec) == cfg.recip_table_entries
    assert int(exp.max()) <= cfg.weight_max and int(rec.max()) < 1 << cfg.recip_bits


EXP_READS = [(8, 0, 14), (10, 0, 16), (8, 4, 20), (6, 4, 16), (4, 6, 16), (7, 1, 12)]


@pytest.mark.parametrize("index_bits, interp_bits, frac_bits", EXP_READS)
def test_exp2_read_error_within_bound(index_bits, interp_bits, frac_bits):
    """Exhaustive over every fraction the exp2 unit can see."""
    table = exp2_table(index_bits=index_bits, frac_bits=frac_bits, interp=interp_bits > 0)
    f_bits = index_bits + interp_bits
    f = np.arange(1 << f_bits)
    got = lut_read(table, f, interp_bits)
    exact = np.exp2(f / (1 << f_bits)) * (1 << frac_bits)
    error = np.abs(got - exact).max()
    bound = exp2_error_bound(index_bits=index_bits, frac_bits=frac_bits, interp_bits=interp_bits)
    assert error <= bound, (error, bound)


@pytest.mark.parametrize("index_bits, interp_bits, frac_bits", [(10, 0, 16), (7, 8, 16), (5, 3, 12),
                                                                (4, 0, 10), (8, 6, 20)])
def test_recip_read_error_within_bound(index_bits, interp_bits, frac_bits):
    """Exhaustive over every truncated mantissa, at both ends of its truncation interval."""
    table = recip_table(index_bits=index_bits, frac_bits=frac_bits, interp=interp_bits > 0)
    u_bits = index_bits + interp_bits
    u = np.arange(1 << u_bits)
    r = lut_read(table, u, interp_bits).astype(np.float64)
    error = 0.0
    for end in (0.0, 1.0):
        x = 1.0 + (u + end) / (1 << u_bits)
        error = max(error, np.abs(r * x / (1 << frac_bits) - 1.0).max())
    bound = recip_error_bound(index_bits=index_bits, interp_bits=interp_bits, frac_bits=frac_bits)
    assert error <= bound, (error, bound)


def test_interpolation_reads_the_end_point():
    table = [0, 16]
    assert list(lut_read(table, np.arange(8), 3)) == [0, 2, 4, 6, 8, 10, 12, 14]
    table = [16, 0]                                    # a falling slope rounds half up as well
    assert list(lut_read(table, np.arange(8), 3)) == [16, 14, 12, 10, 8, 6, 4, 2]
    assert list(lut_read([5, 6], np.arange(4), 2)) == [5, 5, 6, 6]   # 5.5 rounds up to 6
