"""Configurations exercised by tests and benches besides the presets.

``odd`` has nothing a power of two could hide behind: head_dim 24 over 3 lanes, 11-bit inputs, a
9-bit logit fraction, an interpolated 64-entry exp2 table and a 32-entry interpolated reciprocal;
and it is built with ``pipeline="compact"``. ``tiny2`` is ``tiny`` on two cores with the full
pipeline: the smallest configuration with a reduction tree and heads cut across cores, and
with ``tiny`` it covers each of tiny's units in both pipelines.
"""

from ..hdl.config import PRESETS

__all__ = ["ODD", "TINY2", "TEST_CONFIGS"]

ODD = PRESETS["default"].replace(
    head_dim=24, lanes=3, cores=2, tile=8, max_context=1000, max_heads=5, input_bits=11,
    logit_frac_bits=9, exp_index_bits=6, exp_frac_bits=13, recip_index_bits=5, recip_interp_bits=3,
    pipeline="compact")

TINY2 = PRESETS["tiny"].replace(cores=2, pipeline="full")

#: The presets plus ``tiny2`` and ``odd``: every unit is verified at each of these.
TEST_CONFIGS = {**PRESETS, "tiny2": TINY2, "odd": ODD}
