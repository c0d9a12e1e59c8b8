"""Shared pytest configuration for the transferlens test suite."""

from __future__ import annotations

from typing import Iterator

import os
import tempfile

import pytest
import torch
from hypothesis import settings
from threadpoolctl import threadpool_limits

# Property tests draw the same examples on every run, so a green suite stays green (CI, a clean clone);
# HYPOTHESIS_PROFILE=explore draws fresh ones to look for new counterexamples.
settings.register_profile("reproducible", derandomize=True, deadline=None)
settings.register_profile("explore", derandomize=False, deadline=None, max_examples=200)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "reproducible"))

# Generated MNIST-1D sets are cached on disk; the suite keeps its own cache, not the user's.
os.environ.setdefault("TRANSFERLENS_CACHE", tempfile.mkdtemp(prefix="transferlens-test-cache-"))


@pytest.fixture(scope="session", autouse=True)
def _one_thread() -> Iterator[None]:
    """One torch intra-op thread and one BLAS/OpenMP thread for the whole session; restored afterwards.

    The models and data in these tests are tiny: one thread is faster and immune to CPU contention
    (scikit-learn's L-BFGS in particular is ~10x slower on busy cores otherwise).
    """
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    with threadpool_limits(limits=1):
        yield
    torch.set_num_threads(old)
