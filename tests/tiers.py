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
