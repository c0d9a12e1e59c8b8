"""Helpers shared by several estimators: validation of (features, labels), centring, class means, PCA."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy.linalg import eigh

from ._inputs import check_features, check_labels

_EPS = np.finfo(np.float64).eps


def rank_tol(n: int, d: int) -> float:
    """Relative eigenvalue cutoff: eigenvalues ``<= _rank_tol(N, D) * largest`` count as zero."""
    return max(n, d) * _EPS


def centred_scaled(f: np.ndarray) -> tuple[np.ndarray, int]:
    """``(fc, e)``: the centred features are ``fc * 2**e`` with ``max |fc|`` in ``[1/2, 1)``.

    Centred in two passes (the second removes what rounding left of a large offset); exactly-constant
    columns (max == min) are set to exactly zero (not rounding dust); all-constant
    features give ``fc = 0``, ``e = 0``. The scalings are by powers of two, so exact: they only keep the
    column means, Gram matrices and fourth powers clear of overflow/underflow for any float64 magnitude."""
    top = float(np.max(np.abs(f)))
    e_in = math.frexp(top)[1] if top > 0 else 0
    f = np.ldexp(f, -e_in)  # |f| < 1: the column sums cannot overflow
    fc = f - f.mean(axis=0)
    fc -= fc.mean(axis=0)  # a second pass removes the rounding residue of a large common offset
    const = f.max(axis=0) == f.min(axis=0)
    if const.any():
        fc[:, const] = 0.0
    spread = float(np.max(np.abs(fc)))
    if spread == 0.0:
        return fc, 0
    e_c = math.frexp(spread)[1]
    return np.ldexp(fc, -e_c), e_in + e_c


def features_and_labels(features: Any, labels: Any) -> tuple[np.ndarray, np.ndarray, int]:
    """``(F, y, C)``: validated float64 features and labels mapped to ``0..C-1``."""
    f = check_features(features, "features")
    y, classes = check_labels(labels, "labels", n=f.shape[0])
    return f, y, int(classes.size)


def class_sums(x: np.ndarray, y: np.ndarray, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-class row sums of ``x`` (C x ...) and the class sizes; every class must occur."""
    order = np.argsort(y, kind="stable")
    counts = np.bincount(y, minlength=num_classes)
    starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
    return np.add.reduceat(x[order], starts, axis=0), counts


def centre(x: np.ndarray) -> np.ndarray:
    """``x`` minus its column means; exactly-constant columns become exactly zero (not rounding dust)."""
    xc = x - x.mean(axis=0)
    const = x.max(axis=0) == x.min(axis=0)
    if const.any():
        xc[:, const] = 0.0
    return xc


def class_means(z: np.ndarray, y: np.ndarray, c: int) -> tuple[np.ndarray, np.ndarray]:
    """Class means (C x d) and class sizes (float); every class must occur."""
    counts = np.bincount(y, minlength=c).astype(np.float64)
    sums = np.zeros((c, z.shape[1]))
    np.add.at(sums, y, z)
    return sums / counts[:, None], counts


def pca_project(x: np.ndarray, dim: int) -> np.ndarray:
    """Centred PCA scores: N x d with ``d = min(dim, numerical rank)``, columns by decreasing variance.

    No whitening (column j has variance ``s_j^2 / N``). The directions come from the top eigenpairs of the
    smaller Gram matrix (``Xc^T Xc`` if N >= D, else ``Xc Xc^T``); eigenvalues ``<= max(N, D) * eps *
    largest`` are rank deficiency and dropped. Constant features (rank 0) give one column of zeros.
    """
    xc = centre(x)
    n, d_in = xc.shape
    k = min(dim, n, d_in)
    if d_in <= n:
        gram = xc.T @ xc
        lam, vec = eigh(gram, subset_by_index=[d_in - k, d_in - 1])
    else:
        gram = xc @ xc.T
        lam, vec = eigh(gram, subset_by_index=[n - k, n - 1])
    lam, vec = lam[::-1], vec[:, ::-1]  # decreasing
    keep = lam > max(n, d_in) * _EPS * lam[0] if lam[0] > 0 else np.zeros(lam.shape, dtype=bool)
    if not keep.any():
        return np.zeros((n, 1))
    lam, vec = lam[keep], vec[:, keep]
    if d_in <= n:
        return xc @ vec
    return vec * np.sqrt(lam)  # U diag(s): the same scores without forming the D x D basis
