"""Peak memory of the exact metrics does not grow with the number of samples beyond their results.

Each size runs in a fresh interpreter that reports its resident-memory high-water mark (VmHWM, Linux) just
before and just after ``exact_transferability``; the growth from N to 8 N samples must stay far below what
chunks of a fixed sample count would cost (per-sample Jacobians or Gram matrices held for thousands of
samples at once), while the per-sample results themselves (outputs and deviations, O(N d)) may grow.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

CHILD = r"""
import json, sys
import torch
from torch import nn
from transferlens.exact import exact_transferability

def hwm_kib():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])

torch.set_num_threads(1)
n_samples, budget = int(sys.argv[1]), int(sys.argv[2])
n_in, n_out, width = 40, 120, 30
torch.manual_seed(0)
source = nn.Sequential(nn.Linear(n_in, width), nn.Tanh(), nn.Linear(width, n_out)).double()
target = nn.Sequential(nn.Linear(n_in, width), nn.Tanh(), nn.Linear(width, n_out)).double()
x = torch.randn(n_samples, n_in, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
exact_transferability(source, target, x[:4], memory_budget=budget)  # libraries loaded, workspaces warmed
before = hwm_kib()
r = exact_transferability(source, target, x, memory_budget=budget)
print(json.dumps({"before": before, "after": hwm_kib(), "n_used": r.s2t.n_used}))
"""


def _growth_mib(n_samples: int, budget: int) -> float:
    out = subprocess.run(
        [sys.executable, "-c", CHILD, str(n_samples), str(budget)], capture_output=True, text=True, timeout=300, check=True
    )
    rec = json.loads(out.stdout.strip().splitlines()[-1])
    assert rec["n_used"] == n_samples
    return (rec["after"] - rec["before"]) / 1024


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="needs Linux /proc for the memory high-water mark")
def test_peak_memory_is_bounded_by_the_budget_not_by_the_number_of_samples():
    budget = 16 * 2**20
    small, large = _growth_mib(300, budget), _growth_mib(2400, budget)
    # Results grow by ~2100 x 120 x 8 bytes per array (~2 MiB each, a dozen arrays at most). Per-sample
    # 120 x 120 Gram matrices for 1024 samples alone would take 2 x 113 MiB; the Jacobians of 2400
    # samples held at once 2 x 88 MiB.
    assert large - small < 40, (small, large)
    assert large < 16 + 60, (small, large)  # the budget plus the results and the solvers' workspace
