"""Shared pytest setup: reproducible hypothesis runs."""

import os

from hypothesis import HealthCheck, settings

# Derandomized in CI so a run can be repeated exactly; a failing example is printed by hypothesis.
settings.register_profile("ci", derandomize=True, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("dev", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("ci" if os.environ.get("CI") else os.environ.get("HYPOTHESIS_PROFILE", "dev"))
