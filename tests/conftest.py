"""Shared test settings: the hypothesis profiles live here and only here.

`ci` (the default) keeps the property suite fast; `thorough` is for a local deep run:
    HYPOTHESIS_PROFILE=thorough pytest -q tests/test_factorize.py
"""

import os

import torch
from hypothesis import HealthCheck, settings

# The networks in the tests are tiny: one intra-op thread is as fast as two on a quiet 2-core machine and avoids the
# thread thrashing (up to 100x slower) seen when other processes share the cores. Subprocesses set their own.
torch.set_num_threads(1)

settings.register_profile(
    "ci", max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True
)
settings.register_profile("thorough", max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
