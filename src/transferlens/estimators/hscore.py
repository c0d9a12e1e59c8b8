"""H-score (Bao et al., ICIP 2019) and shrinkage H-score (Ibrahim et al., ICLR 2023).

    H(F)       = tr( pinv(Cov(F)) Cov(E[F|y]) )
    H_shrink(F) = tr( inv((1 - a) Cov(F) + a (tr Cov(F) / D) I) (1 - a) Cov(E[F|y]) )

``E[F|y]`` replaces each row of F by the mean of its class. Both covariances are the population (``1/N``)
covariances of the N x D features; for the plain H-score the normalisation cancels, for the shrinkage
H-score it is the one the Ledoit-Wolf estimator is defined with. ``a`` is the data-driven Ledoit-Wolf
shrinkage (the same value as ``sklearn.covariance.ledoit_wolf``, computed here without D x D matrices).
Higher is better: the classes' means are far apart in the feature metric.

How it is computed. With ``F_c`` the centred features and ``g_j, v_j`` the eigenpairs of ``F_c^T F_c``
(``u_j = F_c v_j / sqrt(g_j)`` the left singular vectors), ``Cov(E[F|y]) = B^T B / N`` with
``B = diag(sqrt(n_c)) (class means of F_c)`` (C x D), and writing ``t_j = ||B v_j||^2 = g_j ||P u_j||^2``
(``P`` the projection onto the centred class indicators)::

    H        = sum_j t_j / g_j                       = sum_j ||P u_j||^2
    H_shrink = sum_j (1 - a) t_j / ((1 - a) g_j + a N m),   m = tr Cov(F) / D

so one eigendecomposition of the smaller Gram matrix (``F_c F_c^T`` if N <= D, else ``F_c^T F_c``) is all
that is needed. Directions outside the row space of ``F_c`` carry no between-class spread and add nothing.

Degenerate input:

* **rank cutoff** -- an eigenvalue ``g_j <= max(N, D) * eps * max_j g_j`` (``eps`` the float64 machine
  epsilon; the numpy ``pinv`` convention, applied to the covariance's eigenvalues) is treated as exactly
  zero. This makes rank-deficient features (duplicated columns, D > N) give a stable number: without it, a
  rounding-level eigenvalue divides rounding-level between-class spread and adds O(1) noise;
* **constant columns** (max == min) are centred to exactly zero; all-constant features give 0.0 for both
  scores (no direction separates the classes: the worst possible value);
* **any magnitude** -- both scores are invariant to scaling the features, which are rescaled by powers of
  two (exactly) to ``max |F_c|`` in ``[1/2, 1)`` first, so 1e-150 or 1e300 features neither underflow nor
  overflow;
* **D >= N - 1** with features in general position: ``F_c`` has rank N - 1, so a linear map of the features
  fits every centred class indicator exactly and ``H = C - 1`` whatever the features -- the H-score is
  saturated and does not rank models; the shrinkage H-score stays informative (why it exists). In
  general ``H = ||P U||_F^2`` lies in ``[0, min(rank F_c, C - 1)]``;
* a class with one sample is fine (its mean is that sample).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ._common import centred_scaled, class_sums, features_and_labels, rank_tol
from .registry import Estimator, register

__all__ = ["h_score", "shrinkage_h_score"]

_EPS = np.finfo(np.float64).eps


def _gram_eigh(fc: np.ndarray) -> tuple[np.ndarray, np.ndarray, bool, np.ndarray]:
    """``(g, vecs, left, gram)``: eigenvalues (>= 0) and eigenvectors of the smaller Gram matrix.

    ``left`` is True when the Gram is ``F_c F_c^T`` (N <= D; vectors are the left singular vectors) and
    False for ``F_c^T F_c`` (vectors are the right singular vectors)."""
    n, d = fc.shape
    left = n <= d
    gram = fc @ fc.T if left else fc.T @ fc
    g, vecs = np.linalg.eigh(gram)
    return np.clip(g, 0.0, None), vecs, left, gram


def _between_spread(
    fc: np.ndarray, y: np.ndarray, num_classes: int, g: np.ndarray, vecs: np.ndarray, left: bool
) -> np.ndarray:
    """``t_j = ||B v_j||^2``: the between-class scatter along each eigen-direction (see the module doc)."""
    n = fc.shape[0]
    if left:
        sums, counts = class_sums(vecs, y, num_classes)  # 1_c^T u_j
        proj = np.sum(sums**2 / counts[:, None], axis=0) - np.sum(vecs, axis=0) ** 2 / n  # ||P u_j||^2
        return g * np.clip(proj, 0.0, None)
    sums, counts = class_sums(fc, y, num_classes)
    b = sums / np.sqrt(counts)[:, None]  # sqrt(n_c) * class mean of F_c
    return np.sum((b @ vecs) ** 2, axis=0)


def _ledoit_wolf_shrinkage(fc: np.ndarray, gram: np.ndarray) -> float:
    """The Ledoit-Wolf shrinkage of ``Cov = F_c^T F_c / N`` towards ``(tr Cov / D) I``, in ``[0, 1]``.

    The formula of ``sklearn.covariance.ledoit_wolf_shrinkage`` (Ledoit & Wolf 2004), using
    ``sum_kl ((X^2)^T X^2)_kl = sum_i ||x_i||^4`` and ``||F_c^T F_c||_F = ||F_c F_c^T||_F`` so no D x D
    product is needed. When ``Cov`` is already a multiple of the identity (D = 1, or ``Cov`` within
    rounding of ``m I``) the target equals ``Cov`` and the shrinkage is 0."""
    n, d = fc.shape
    if d == 1:
        return 0.0
    row_sq = np.sum(fc**2, axis=1)
    trace = row_sq.sum() / n  # tr Cov
    mu = trace / d
    cov_fro2 = np.sum(gram**2) / n**2  # ||Cov||_F^2
    beta = (np.sum(row_sq**2) / n - cov_fro2) / (d * n)
    delta = (cov_fro2 - 2.0 * mu * trace + d * mu**2) / d  # ||Cov - mu I||_F^2 / D
    if not delta > rank_tol(n, d) * mu**2:
        return 0.0
    return float(np.clip(min(beta, delta) / delta, 0.0, 1.0))


# -- the estimators ------------------------------------------------------------------------------------


def h_score(features: Any, labels: Any) -> float:
    """H-score ``tr(pinv(Cov(F)) Cov(E[F|y]))``; higher is better.

    ``features``: N x D, ``labels``: N class ids (C >= 2). Covariances are ``1/N`` (the normalisation
    cancels). ``pinv`` drops eigenvalues ``<= max(N, D) * eps * largest``. Result in
    ``[0, min(rank F_c, C - 1)]``; it is ``C - 1`` when the centred features have rank N - 1 (e.g.
    D >= N - 1 in general position): it saturates for D > N. Constant features give 0.0; duplicated
    columns and a class with one sample are fine.
    """
    f, y, c = features_and_labels(features, labels)
    fc, _ = centred_scaled(f)  # H is invariant to the scale of the features
    g, vecs, left, _ = _gram_eigh(fc)
    if g[-1] <= 0.0:
        return 0.0
    keep = g > rank_tol(*fc.shape) * g[-1]
    t = _between_spread(fc, y, c, g[keep], vecs[:, keep], left)
    return float(np.sum(t / g[keep]))


def shrinkage_h_score(features: Any, labels: Any) -> float:
    """Shrinkage H-score ``tr(inv((1-a) Cov + a (tr Cov / D) I) (1-a) Cov(E[F|y]))``; higher is better.

    ``features``: N x D, ``labels``: N class ids. Covariances are ``1/N``; ``a`` is the Ledoit-Wolf
    shrinkage (as ``sklearn.covariance.ledoit_wolf``). Stable for D > N (the shrunk covariance is
    invertible whenever ``a > 0``); with ``a = 0`` it is the H-score, with the same rank cutoff
    (``max(N, D) * eps * largest`` eigenvalue; a cut direction would add at most ``(1-a) g_j / (a N m)``).
    Constant features, or ``a = 1``, give 0.0. Result in ``[0, C - 1]``.
    """
    f, y, c = features_and_labels(features, labels)
    fc, _ = centred_scaled(f)  # so is the shrinkage H-score (and a)
    n, d = fc.shape
    g, vecs, left, gram = _gram_eigh(fc)
    if g[-1] <= 0.0:
        return 0.0
    a = _ledoit_wolf_shrinkage(fc, gram)
    if a >= 1.0:
        return 0.0
    keep = g > rank_tol(n, d) * g[-1]
    g, vecs = g[keep], vecs[:, keep]
    t = _between_spread(fc, y, c, g, vecs, left)
    m = np.sum(fc**2) / (n * d)  # tr Cov / D
    return float(np.sum((1.0 - a) * t / ((1.0 - a) * g + a * n * m)))


register(
    Estimator(
        "h_score",
        h_score,
        needs=("features", "labels"),
        greater_is_better=True,
        reference="Bao et al., An Information-Theoretic Approach to Transferability in Task Transfer "
        "Learning, ICIP 2019",
        summary="tr(pinv(Cov F) Cov(E[F|y])): between-class spread in the feature metric (saturates at C-1 "
        "when D >= N)",
    )
)
register(
    Estimator(
        "shrinkage_h_score",
        shrinkage_h_score,
        needs=("features", "labels"),
        greater_is_better=True,
        reference="Ibrahim et al., Newer is Not Always Better: Rethinking Transferability Metrics, Their "
        "Peculiarities, Stability and Performance, ICLR 2023",
        summary="H-score with a Ledoit-Wolf shrunk feature covariance: stable when D is large relative to N",
    )
)
