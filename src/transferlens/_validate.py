"""Boundary checks shared by every public entry point.

Each check raises ``ValueError``/``TypeError`` with a message that says what to do, so that bad input
never surfaces as NaN or as an error from deep inside torch.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import nn


def as_float_tensor(x: Any, name: str) -> torch.Tensor:
    """Return ``x`` as a floating tensor (no copy when it already is one)."""
    if not isinstance(x, torch.Tensor):
        try:
            x = torch.as_tensor(x)
        except Exception as exc:  # noqa: BLE001 - re-raised with a clear message
            raise TypeError(f"{name} must be a tensor or array-like of numbers, got {type(x).__name__}") from exc
    if not torch.is_floating_point(x):
        x = x.to(torch.get_default_dtype())
    return x


def check_finite(x: torch.Tensor, name: str) -> None:
    if x.numel() and not bool(torch.isfinite(x).all()):
        bad = int((~torch.isfinite(x)).sum())
        raise ValueError(
            f"{name} contains {bad} NaN/Inf value(s); clean or impute the data before measuring transferability"
        )


def check_nonempty(x: torch.Tensor, name: str) -> None:
    if x.ndim == 0 or x.shape[0] == 0:
        raise ValueError(f"{name} is empty (shape {tuple(x.shape)}); pass at least one sample")


def check_labels(y: Any, num_classes: int, name: str, n: int | None = None) -> torch.Tensor:
    """Class indices as a 1-D int64 CPU tensor, each in ``[0, num_classes)``."""
    y = torch.as_tensor(y).detach().cpu()
    if y.ndim != 1:
        raise ValueError(f"{name} must be a 1-D tensor of class indices, got shape {tuple(y.shape)}")
    if y.dtype == torch.bool or y.is_complex():
        raise TypeError(f"{name} must hold integer class indices, got dtype {y.dtype}")
    if torch.is_floating_point(y) and y.numel():
        if not bool(torch.isfinite(y).all()):
            raise ValueError(f"{name} contains NaN/Inf; labels must be integer class indices")
        if not bool((y == y.round()).all()):
            raise ValueError(f"{name} must hold integer class indices, got non-integer values")
    if n is not None and y.shape[0] != n:
        raise ValueError(f"{name} has {y.shape[0]} labels but there are {n} inputs; they must match")
    if y.numel():
        lo, hi = float(y.min()), float(y.max())  # before any cast, so huge values are reported as they are
        if lo < 0 or hi >= num_classes:
            raise ValueError(
                f"{name} must lie in [0, {num_classes}) (num_classes={num_classes}), got values in [{lo:g}, {hi:g}]"
            )
    return y.long()


def check_seed(seed: Any, name: str = "seed") -> int:
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or not 0 <= int(seed) < 2**63:
        raise ValueError(f"{name} must be an integer in [0, 2**63), got {seed!r}")
    return int(seed)


def check_positive(value: float, name: str) -> None:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")


def check_bounds(bounds: Any) -> tuple[float, float] | None:
    if bounds is None:
        return None
    try:
        lo, hi = (float(b) for b in bounds)
    except Exception as exc:  # noqa: BLE001
        raise ValueError(f"bounds must be a pair (lo, hi) or None, got {bounds!r}") from exc
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise ValueError(f"bounds must satisfy lo < hi with finite values, got {bounds!r}")
    return (lo, hi)


def check_within_bounds(x: torch.Tensor, bounds: tuple[float, float] | None, name: str) -> None:
    if bounds is None or x.numel() == 0:
        return
    lo, hi = bounds
    tol = 1e-6 * max(1.0, abs(lo), abs(hi))
    lo_x, hi_x = float(x.detach().min()), float(x.detach().max())
    if lo_x < lo - tol or hi_x > hi + tol:
        raise ValueError(
            f"{name} has values in [{lo_x:.4g}, {hi_x:.4g}] outside the input bounds "
            f"{bounds}; clip the data or pass the bounds the data actually lives in"
        )


def model_outputs_2d(model: nn.Module, x: torch.Tensor, name: str = "model") -> torch.Tensor:
    """Run ``model`` on a small slice of ``x`` and check it returns (N, K) floating outputs."""
    probe = x[:2]
    try:
        with torch.no_grad():
            out = model(probe)
    except Exception as exc:  # noqa: BLE001 - shape mismatches surface here; rewrap them
        raise ValueError(
            f"{name} could not process inputs of shape {tuple(x.shape[1:])} (per sample, dtype {x.dtype}): {exc}. "
            "Check that the data matches the model's expected input shape and dtype."
        ) from exc
    if not isinstance(out, torch.Tensor):
        raise TypeError(f"{name} must return a tensor, got {type(out).__name__}")
    if out.ndim != 2 or out.shape[0] != probe.shape[0]:
        raise ValueError(
            f"{name} must return a 2-D (batch, outputs) tensor, got shape {tuple(out.shape)} for a batch of "
            f"{probe.shape[0]}; flatten or select the output you want to measure"
        )
    if not torch.is_floating_point(out):
        raise TypeError(f"{name} must return floating-point outputs, got dtype {out.dtype}")
    return out
