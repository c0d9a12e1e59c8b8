"""Small helpers shared by several test modules (import with ``from helpers import ...``)."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import torch
from torch import nn

from transferlens.models import build_model


def randn(*shape: int, seed: int = 0, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Standard-normal tensor from its own seeded generator (the global RNG is untouched)."""
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def rand(*shape: int, seed: int = 0, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Uniform [0, 1) tensor from its own seeded generator (the global RNG is untouched)."""
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def mlp(n_in: int = 6, n_out: int = 3, seed: int = 0, dtype: torch.dtype = torch.float32) -> nn.Module:
    """A zoo MLP with one hidden layer of 16 units on ``(n_in,)`` inputs."""
    return build_model("mlp", (n_in,), n_out, seed=seed, hidden=(16,)).to(dtype)


def linear(weight, bias=None, dtype: torch.dtype = torch.float32) -> nn.Linear:
    """An ``nn.Linear`` with the given weight (out x in) and bias (zeros when ``None``)."""
    w = torch.as_tensor(weight, dtype=dtype)
    lin = nn.Linear(w.shape[1], w.shape[0]).to(dtype)
    with torch.no_grad():
        lin.weight.copy_(w)
        lin.bias.copy_(torch.zeros(w.shape[0]) if bias is None else torch.as_tensor(bias))
    return lin


def params_snapshot(model: nn.Module) -> list[torch.Tensor]:
    """Detached copies of every parameter and buffer, in order."""
    return [t.detach().clone() for t in list(model.parameters()) + list(model.buffers())]


def same_state(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    """Two state dicts with the same keys and exactly equal tensors."""
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def wait_for_done_cells(db: Path, keys: list[str], at_least: int, proc: subprocess.Popen) -> set[str]:
    """Poll the store at ``db`` until ``at_least`` of ``keys`` are done or ``proc`` has exited; the done keys."""
    from transferlens.runs.store import Store

    deadline = time.monotonic() + 120  # a guard against hanging, not a speed check
    done: set[str] = set()
    while time.monotonic() < deadline and len(done) < at_least and proc.poll() is None:
        if db.exists():
            try:
                with Store(db) as s:
                    done = s.done_keys(keys)
            except Exception:  # noqa: BLE001 - the file may be mid-creation
                done = set()
        time.sleep(0.05)
    return done
