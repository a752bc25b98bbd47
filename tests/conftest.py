"""Shared test settings: the hypothesis profiles live here and only here.

`ci` (the default) keeps the property suite fast; `thorough` is for a local deep run:
    HYPOTHESIS_PROFILE=thorough pytest -q tests/test_factorize.py
"""

import os

from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci", max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True
)
settings.register_profile("thorough", max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
