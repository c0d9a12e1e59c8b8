"""Small torch helpers shared by the measuring modules."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
from torch import nn


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` picks CUDA when available, else CPU."""
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError as exc:
        raise ValueError(f"unknown device {device!r}; use 'auto', 'cpu' or 'cuda'") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available here; use 'auto' or 'cpu'")
    return dev


def model_device(model: nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    for b in model.buffers():
        return b.device
    return torch.device("cpu")


def model_dtype(model: nn.Module) -> torch.dtype:
    """The floating dtype of the model's parameters (inputs are cast to it), else the default dtype."""
    for p in model.parameters():
        if torch.is_floating_point(p):
            return p.dtype
    return torch.get_default_dtype()


@contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Run a block with the global torch RNG seeded from ``seed``; every generator (CPU and CUDA) is
    restored afterwards, so the caller's random streams are untouched."""
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


@contextmanager
def keep_mode(model: nn.Module) -> Iterator[None]:
    """Restore the model's train/eval mode when the block ends, also on an exception."""
    was_training = model.training
    try:
        yield
    finally:
        model.train(was_training)


@contextmanager
def frozen_eval(*models: nn.Module) -> Iterator[None]:
    """Eval mode and no parameter gradients for the duration; previous state restored afterwards.

    The same model may appear twice: states are restored in reverse order, so the original wins.
    """
    saved = []
    for m in models:
        saved.append((m, m.training, [(p, p.requires_grad) for p in m.parameters()]))
        m.eval()
        for p in m.parameters():
            p.requires_grad_(False)
    try:
        yield
    finally:
        for m, training, params in reversed(saved):
            m.train(training)
            for p, rg in params:
                p.requires_grad_(rg)


def batched_apply(fn, x: torch.Tensor, batch_size: int, device: torch.device) -> torch.Tensor:
    """Apply ``fn`` chunk by chunk without gradients; results concatenated on the CPU."""
    outs = []
    with torch.no_grad():
        for i in range(0, len(x), batch_size):
            outs.append(fn(x[i : i + batch_size].to(device)).detach().cpu())
    return torch.cat(outs)
