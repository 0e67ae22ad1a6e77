"""Shared fixtures: small real models and data, seeded."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from hypothesis import Phase, settings

# The suite is deterministic: hypothesis draws the same examples on every run (a CI failure is
# reproducible, never a coin toss). FITLENS_HYPOTHESIS=explore draws fresh ones, for bug hunts;
# pin what they find with @example.
settings.register_profile("fitlens", derandomize=True, deadline=None, print_blob=True)
settings.register_profile("explore", deadline=None, print_blob=True)
# FITLENS_HYPOTHESIS=mutation: the suite's examples without shrinking a failure (a mutation run
# only needs to know that a test fails; shrinking took up to 16 s per killed mutant).
settings.register_profile(
    "mutation", derandomize=True, deadline=None, phases=(Phase.explicit, Phase.generate)
)
_PROFILE = os.environ.get("FITLENS_HYPOTHESIS", "fitlens")
settings.load_profile(_PROFILE if _PROFILE in ("explore", "mutation") else "fitlens")


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    np.random.seed(0)


@pytest.fixture
def blobs():
    """A 3-class problem: 200 samples of 8 float32 features, integer labels."""
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, size=200)
    centers = rng.normal(size=(3, 8)) * 2
    x = (centers[y] + rng.normal(size=(200, 8))).astype(np.float32)
    return x, y


@pytest.fixture
def mlp():
    return torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))
