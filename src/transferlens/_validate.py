"""Boundary checks shared by every public entry point.

Each check raises ``ValueError``/``TypeError`` with a message that says what to do, so that bad input
never surfaces as NaN or as an error from deep inside torch.
"""

from __future__ import annotations

import math
import numbers
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
    if x.is_complex():
        raise TypeError(
            f"{name} is complex ({x.dtype}); transferlens measures real-valued inputs. Pass x.real, x.abs() or "
            "the real and imaginary parts as separate channels"
        )
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


class ArgumentTypeError(ValueError, TypeError):
    """An argument of the wrong type (a string where a number belongs, a float count, a string flag).

    Both a ``TypeError`` and a ``ValueError``, so that code catching either (as earlier versions raised
    ``ValueError`` for these) keeps working."""


def _type_name(value: Any) -> str:
    return type(value).__name__


def _scalar(value: Any) -> Any:
    """A 0-d tensor or a 1-element numpy array as its Python value; anything else unchanged."""
    if isinstance(value, torch.Tensor) and value.ndim == 0:
        if value.is_complex():
            return complex(value.item())
        return value.item()
    if isinstance(value, np.ndarray) and value.ndim == 0:
        return value.item()
    return value


def _int_rule(minimum: int | None, maximum: int | None) -> str:
    if minimum is not None and maximum is not None:
        return f"an integer in [{minimum}, {maximum}]"
    if minimum is not None:
        return f"an integer >= {minimum}"
    if maximum is not None:
        return f"an integer <= {maximum}"
    return "an integer"


def check_int(value: Any, name: str, minimum: int | None = None, maximum: int | None = None) -> int:
    """An integer count or index: ``int``, a numpy integer or a 0-d integer tensor (never a bool, a float or
    a string), within ``[minimum, maximum]`` where given. Returns a plain ``int``."""
    rule = f"{name} must be {_int_rule(minimum, maximum)}"
    v = _scalar(value)
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, (numbers.Integral, np.integer)):
        raise ArgumentTypeError(f"{rule}, got {value!r} ({_type_name(value)})")
    v = int(v)
    if (minimum is not None and v < minimum) or (maximum is not None and v > maximum):
        raise ValueError(f"{rule}, got {v}")
    return v


def check_real(
    value: Any,
    name: str,
    *,
    positive: bool = False,
    nonnegative: bool = False,
    below: float | None = None,
) -> float:
    """A finite real number: any ``numbers.Real`` (int, float, numpy scalars) or a 0-d real tensor; never a
    bool, complex or string. ``positive``: > 0; ``nonnegative``: >= 0; ``below``: < that value."""
    if positive and below is not None:
        rule = f"{name} must be in (0, {below:g})"
    elif positive:
        rule = f"{name} must be a finite number > 0"
    elif nonnegative:
        rule = f"{name} must be a finite number >= 0"
    else:
        rule = f"{name} must be a finite real number"
    v = _scalar(value)
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, (numbers.Real, np.integer, np.floating)):
        raise ArgumentTypeError(f"{rule}, got {value!r} ({_type_name(value)})")
    v = float(v)
    if (
        not math.isfinite(v)
        or (positive and v <= 0)
        or (nonnegative and v < 0)
        or (below is not None and v >= below)
    ):
        raise ValueError(f"{rule}, got {v!r}")
    return v


def check_positive(value: Any, name: str) -> float:
    """A finite real number > 0, returned as ``float``."""
    return check_real(value, name, positive=True)


def check_flag(value: Any, name: str) -> bool:
    """A real boolean (``True``/``False``, ``numpy.bool_`` or a 0-d bool tensor). Strings such as "False" and
    numbers are refused: ``bool("False")`` is True, so accepting them would silently flip the option."""
    v = _scalar(value)
    if not isinstance(v, (bool, np.bool_)):
        raise ArgumentTypeError(f"{name} must be True or False, got {value!r} ({_type_name(value)})")
    return bool(v)


SEED_LIMIT = 2**63


def check_seed(seed: Any, name: str = "seed", limit: int = SEED_LIMIT) -> int:
    """A seed: an integer in ``[0, limit)`` (numpy integers and 0-d tensors accepted). One rule everywhere."""
    v = _scalar(seed)
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, (numbers.Integral, np.integer)):
        raise ArgumentTypeError(f"{name} must be an integer in [0, {_limit_text(limit)}), got {seed!r} ({_type_name(seed)})")
    v = int(v)
    if not 0 <= v < limit:
        raise ValueError(f"{name} must be an integer in [0, {_limit_text(limit)}), got {v}")
    return v


def _limit_text(limit: int) -> str:
    exp = limit.bit_length() - 1
    return f"2**{exp}" if limit == 1 << exp else str(limit)


def check_choice(value: Any, name: str, choices: Any) -> str:
    """One of ``choices`` (strings)."""
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name} must be one of {tuple(choices)}, got {value!r}")
    return value


def check_model(model: Any, name: str = "model") -> nn.Module:
    """A ``torch.nn.Module``; a plain function, None or anything else is refused with what to do."""
    if not isinstance(model, nn.Module):
        hint = (
            "; wrap a function in an nn.Module (a subclass whose forward calls it)"
            if callable(model)
            else ""
        )
        raise TypeError(f"{name} must be a torch.nn.Module, got {_type_name(model)}{hint}")
    return model


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
            out = model(probe.clone())  # a copy: a model whose first op is in place must not touch x
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
    if probe.shape[0] == 2 and not model.training:
        with torch.no_grad():
            alone = model(probe[:1].clone())
        scale = float(out[:1].abs().max()) if out.numel() else 0.0
        if isinstance(alone, torch.Tensor) and alone.shape == out[:1].shape and bool(torch.isfinite(out).all()):
            change = float((alone - out[:1]).abs().max()) / max(scale, 1e-6)
            tol = batch_tolerance(out.dtype, out.device.type)
            if change > tol:
                raise ValueError(
                    f"{name}'s output for a sample changes with the other samples in the batch (alone vs. in a batch "
                    f"of two: by {change:.2g} of its largest value, more than the {tol:.0e} rounding allows); "
                    "transferlens needs per-sample outputs. Remove batch statistics from the forward pass "
                    "(BatchNorm in train mode, normalising over dim 0)"
                    + (_REDUCED_PRECISION_HINT if out.device.type == "cuda" else "")
                )
    return out


_REDUCED_PRECISION_HINT = (
    ". If the model is per-sample and this is the rounding of reduced-precision GPU kernels, run it in float32 "
    "with TF32 off (torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False) or in float64"
)


def batch_tolerance(dtype: torch.dtype, device_type: str) -> float:
    """How far (relative to its largest value) a sample's output may move between a batch of one and of two before
    :func:`model_outputs_2d` calls the model batch-dependent: ``1e-4``, or ``8 eps`` of a coarser dtype
    (float16: 0.008, bfloat16: 0.06), or ``1e-2`` for float32 on CUDA when TF32 is allowed
    (``torch.backends.cuda.matmul.allow_tf32`` for matrix products, ``torch.backends.cudnn.allow_tf32``, on by
    default, for convolutions, which a model may run through ``torch.nn.functional`` or a scripted module where
    no convolution module shows): 10-bit mantissas, in kernels picked by batch size, leave outputs about 1e-3
    apart. Batch statistics move outputs by far more."""
    try:
        eps = torch.finfo(dtype).eps
    except (TypeError, ValueError, NotImplementedError):  # a dtype without finfo: as coarse as it gets
        eps = 0.5
    tol = max(1e-4, 8 * eps)
    tf32 = torch.backends.cuda.matmul.allow_tf32 or torch.backends.cudnn.allow_tf32
    if device_type == "cuda" and dtype == torch.float32 and tf32:
        tol = max(tol, 1e-2)
    return tol
