"""Shared pytest configuration for the transferlens test suite."""

from __future__ import annotations

from typing import Iterator

import pytest
import torch
from threadpoolctl import threadpool_limits


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
