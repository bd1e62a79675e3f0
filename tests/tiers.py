"""Test tiers: which configurations the fast tier (``make test-fast``) runs.

The full suite (``make test``) runs every configuration; the fast tier keeps the two presets that
exercise both table shapes (tiny: no interpolation; default: wider words) and marks the others
``slow``.
"""

import pytest

FAST_CONFIGS = ("tiny", "default")


def config_params(names, fast=FAST_CONFIGS):
    """``pytest.param`` per configuration name, marked ``slow`` unless it is in ``fast``."""
    return [pytest.param(name, marks=() if name in fast else pytest.mark.slow, id=name)
            for name in names]


def full_pairs(names):
    """``(name, simulator)`` pairs of the 10,000-vector runs: every configuration on both
    simulators, except ``wide`` on Icarus (about ten minutes of one core per unit there); ``wide``
    keeps its regular-length Icarus runs in the slow tier and its 10,000 vectors on Verilator."""
    return [(name, simulator) for name in names for simulator in ("icarus", "verilator")
            if (name, simulator) != ("wide", "icarus")]
