"""Boundary checks shared by every estimator: features, labels, source probabilities.

Every estimator works in float64 numpy. Inputs may be numpy arrays, torch tensors (any device) or nested
lists. Bad input raises ``ValueError`` (``TypeError`` for non-numeric data, via
:class:`~transferlens.ArgumentTypeError`) with a message that says what to do; an estimator never returns
NaN.

Labels are class ids of any integer values (e.g. ``{3, 7, 9}``); they are mapped to ``0..C-1`` in sorted
order (:func:`check_labels` returns the map). Every estimator is invariant to renaming the classes, so the
mapping changes no score.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .._validate import ArgumentTypeError

__all__ = ["as_array", "check_features", "check_labels", "check_probs", "check_targets"]

# Rows of ``source_probs`` must sum to 1 within this tolerance (float32 softmax outputs sum to 1 +- 1e-6).
PROB_SUM_TOL = 1e-3


def as_array(x: Any, name: str) -> np.ndarray:
    """``x`` as a float64 numpy array (a copy when the input is a tensor); refuses non-numeric data."""
    if hasattr(x, "detach") and hasattr(x, "cpu"):  # a torch tensor, on any device
        if x.is_complex():
            raise ArgumentTypeError(f"{name} must be real-valued, got a complex tensor")
        x = x.detach().cpu().double().numpy()
    try:
        arr = np.asarray(x)
    except (TypeError, ValueError) as exc:  # ragged lists
        raise ArgumentTypeError(f"{name} must be a numeric array (N rows of equal length): {exc}") from None
    if arr.dtype == object or arr.dtype.kind not in "biuf":
        raise ArgumentTypeError(f"{name} must be a real numeric array, got dtype {arr.dtype}")
    return np.array(arr, dtype=np.float64)


def check_features(features: Any, name: str = "features", n: int | None = None) -> np.ndarray:
    """An N x D float64 matrix of finite values (N >= 2, D >= 1); ``n`` checks N against the labels."""
    f = as_array(features, name)
    if f.ndim != 2:
        raise ValueError(
            f"{name} must be a 2-D array (N samples x D features), got shape {tuple(f.shape)}; "
            "flatten each sample's features into one row"
        )
    if f.shape[0] < 2 or f.shape[1] < 1:
        raise ValueError(f"{name} needs at least 2 samples and 1 feature, got shape {tuple(f.shape)}")
    if n is not None and f.shape[0] != n:
        raise ValueError(f"{name} has {f.shape[0]} rows but there are {n} labels: give one label per sample")
    bad = ~np.isfinite(f)
    if bad.any():
        rows = np.unique(np.nonzero(bad)[0])
        raise ValueError(
            f"{name} contains NaN or Inf in {rows.size} of {f.shape[0]} rows (first: row {int(rows[0])}); "
            "the model's features overflowed or the data has missing values -- clean them first"
        )
    return f


def check_labels(labels: Any, name: str = "labels", n: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``(y, classes)``: labels mapped to ``0..C-1`` (int64) and the original class ids in that order.

    Needs integer-valued labels (floats such as ``2.0`` are accepted), one per sample, and at least two
    classes. A class with a single sample is allowed (each estimator documents what it does with it).
    """
    raw = as_array(labels, name)
    if raw.ndim == 2 and raw.shape[1] == 1:
        raw = raw[:, 0]
    if raw.ndim != 1:
        raise ValueError(
            f"{name} must be a 1-D array of class ids, got shape {tuple(raw.shape)}; "
            "for one-hot labels pass labels.argmax(1)"
        )
    if n is not None and raw.shape[0] != n:
        raise ValueError(f"{name} has {raw.shape[0]} entries but there are {n} samples: give one label per sample")
    if not np.all(np.isfinite(raw)) or np.any(raw != np.round(raw)):
        raise ValueError(
            f"{name} must be integer class ids, got non-integer values such as {raw[raw != np.round(raw)][:3]!r}; "
            "for a regression target use logme(..., regression=True)"
        )
    classes, y = np.unique(raw.astype(np.int64), return_inverse=True)
    if classes.size < 2:
        raise ValueError(
            f"{name} has a single class ({int(classes[0])}): ranking models needs at least two classes"
        )
    return y.astype(np.int64), classes


def check_targets(targets: Any, name: str = "targets", n: int | None = None) -> np.ndarray:
    """Regression targets as an N x K float64 matrix (a 1-D vector becomes one column)."""
    t = as_array(targets, name)
    if t.ndim == 1:
        t = t[:, None]
    if t.ndim != 2:
        raise ValueError(f"{name} must be N values or an N x K matrix, got shape {tuple(t.shape)}")
    if n is not None and t.shape[0] != n:
        raise ValueError(f"{name} has {t.shape[0]} rows but there are {n} samples: give one target per sample")
    if not np.all(np.isfinite(t)):
        raise ValueError(f"{name} contains NaN or Inf; drop or impute those samples first")
    return t


def check_probs(probs: Any, name: str = "source_probs", n: int | None = None) -> np.ndarray:
    """An N x C_s matrix of class probabilities: finite, in [0, 1], each row summing to 1 (within 1e-3)."""
    p = check_features(probs, name, n)
    if p.shape[1] < 2:
        raise ValueError(f"{name} must have one column per source class (at least 2), got shape {tuple(p.shape)}")
    if p.min() < 0 or p.max() > 1:
        raise ValueError(
            f"{name} must be probabilities in [0, 1], got values in [{p.min():.3g}, {p.max():.3g}]; "
            "these look like logits -- apply softmax(logits, dim=1) first"
        )
    sums = p.sum(axis=1)
    worst = int(np.argmax(np.abs(sums - 1.0)))
    if abs(sums[worst] - 1.0) > PROB_SUM_TOL:
        raise ValueError(
            f"each row of {name} must sum to 1, but row {worst} sums to {sums[worst]:.6g}; "
            "pass softmax outputs over all source classes"
        )
    return p / sums[:, None]  # exact normalisation of rounding-level deviations
