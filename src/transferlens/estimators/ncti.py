"""NCTI: Neural Collapse informed Transferability Index (Wang et al., CVPR 2023).

Zoo-relative: it scores each candidate by how close its target features are to neural collapse, with three
terms min-max normalised *across the candidates*, so a score only means something next to the others.

For each candidate k (features ``F_k``, N x D_k)::

    Z     = PCA(F_k) to d = min(pca_dim, rank) dims (centred, no whitening)
    S     = (1 - s) Sw + (s tr(Sw)/d + eps) I      shrunk within-class scatter (s: Ledoit-Wolf, below)
    V     = top q = min(C-1, d) generalised eigenvectors of (Sb, S), normalised V^T S V = I
    P     = softmax_c( z^T S^-1 m_c - 1/2 m_c^T S^-1 m_c + ln pi_c )          (N x C LDA posteriors)
    t1_k  = || Z V ||_*                        nuclear norm of the (centred) LDA projection
    t2_k  = (1/N) sum_i P[i, y_i]              mean probability of the true class
    t3_k  = ln sum_c || P[y == c] ||_*         per-class nuclear norms of the predicted probabilities
    NCTI_k = n(t1)_k + n(t2)_k - n(t3)_k,      n(t)_k = (t_k - min_j t_j) / (max_j t_j - min_j t_j)

with ``Sw`` the population (1/N) within-class scatter of Z, ``Sb = sum_c pi_c (m_c - m)(m_c - m)^T``,
``pi_c = n_c / N``, and the Ledoit-Wolf intensity ``s`` computed from the within-class residuals
``r_i = z_i - m_{y_i}`` (treated as centred; the formula of ``sklearn.covariance.ledoit_wolf_shrinkage``)::

    mu = tr(Sw)/d,  delta = ||Sw - mu I||_F^2 / d,  beta = (sum_i ||r_i||^4 / N - ||Sw||_F^2) / (d N),
    s  = min(beta, delta) / delta   (s = 0 when delta = 0)

``eps = 1e-10 tr(St) / d`` (``St`` the total covariance of Z; 1 for constant features) keeps ``S``
invertible when the classes have no within-class spread. This is a from-scratch shrunk LDA (the original
used scikit-learn's ``LinearDiscriminantAnalysis(solver="eigen", shrinkage="auto")``, which shrinks each
class's covariance separately and subtracts shrunk covariances to get ``Sb``); the three terms are the
published ones.

**Higher is better.** Every score lies in ``[-1, 2]``. A term on which all candidates agree (spread
``max - min <= 1e-9 * max(|max|, |min|)``, i.e. equal up to rounding) contributes 0 to every candidate.
Needs at least two candidates (``ValueError`` otherwise), each with one row per label.

Degenerate input: constant features give ``t1 = 0`` and ``P[i] = pi`` (posteriors equal to the priors);
a class with one sample, D > N and rank-deficient features are fine (PCA keeps the numerical rank, the
shrinkage and the floor keep ``S`` invertible). If ``Sb`` has rank below ``q`` (e.g. two classes with the
same mean), the remaining directions of V are the eigenvectors returned for the zero eigenvalue
(deterministic for given input).

Note: when ``Sb`` has its full rank ``q``, ``t1`` is the nuclear norm of the ``S``-whitened features
projected onto the span of the class means; any ``S``-orthonormal basis of that span (so any weighting
of the classes in ``Sb``) gives the same value.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy.linalg import cholesky, eigh, solve_triangular

from .._validate import check_int
from ._inputs import check_features, check_labels
from ._common import class_means, pca_project
from .registry import Estimator, register
from .sfda import FLOOR, _lda_posteriors

__all__ = ["ncti"]

#: a term whose spread across candidates is below this fraction of its magnitude contributes 0
SPREAD_RTOL = 1e-9


def _ledoit_wolf(r: np.ndarray, sw: np.ndarray) -> float:
    """Ledoit-Wolf shrinkage intensity of residuals ``r`` (N x d, treated as centred) with ``sw = r^T r / N``."""
    n, d = r.shape
    mu = np.trace(sw) / d
    delta = (np.sum(sw**2) - 2.0 * mu * np.trace(sw) + d * mu**2) / d  # ||sw - mu I||_F^2 / d
    beta = (np.sum(np.sum(r**2, axis=1) ** 2) / n - np.sum(sw**2)) / (d * n)
    beta = min(beta, delta)
    return 0.0 if delta <= 0 or beta <= 0 else float(beta / delta)


def _terms(z: np.ndarray, y: np.ndarray, c: int) -> tuple[float, float, float]:
    """``(t1, t2, t3)`` of one candidate from its PCA features ``z`` (N x d, centred)."""
    n, d = z.shape
    means, counts = class_means(z, y, c)
    priors = counts / n
    r = z - means[y]
    sw = (r.T @ r) / n
    total = float(np.sum(z**2)) / n
    eps = FLOOR * total / d if total > 0 else 1.0
    s = _ledoit_wolf(r, sw)
    cov = (1.0 - s) * sw + (s * np.trace(sw) / d + eps) * np.eye(d)

    centred_means = means - priors @ means
    sb = (centred_means.T * priors) @ centred_means
    low = cholesky(cov, lower=True, check_finite=False)  # cov = L L^T
    tmp = solve_triangular(low, sb, lower=True, check_finite=False)
    a = solve_triangular(low, tmp.T, lower=True, check_finite=False)  # L^-1 Sb L^-T
    rho, w = eigh(0.5 * (a + a.T))
    q = min(c - 1, d)
    w = w[:, np.argsort(rho, kind="stable")[::-1][:q]]
    v = solve_triangular(low.T, w, lower=False, check_finite=False)  # L^-T W: V^T cov V = I
    proj = (z - z.mean(axis=0)) @ v
    t1 = float(np.sum(np.linalg.svd(proj, compute_uv=False)))

    post = _lda_posteriors(z, means, priors, cov)
    t2 = float(np.mean(post[np.arange(n), y]))
    nuc = sum(float(np.sum(np.linalg.svd(post[y == k], compute_uv=False))) for k in range(c))
    t3 = float(np.log(nuc))
    return t1, t2, t3


def _normalise(t: np.ndarray) -> np.ndarray:
    lo, hi = float(t.min()), float(t.max())
    if hi - lo <= SPREAD_RTOL * max(abs(lo), abs(hi)):
        return np.zeros_like(t)
    return (t - lo) / (hi - lo)


def ncti(features: Sequence[Any], labels: Any, *, pca_dim: int = 64) -> list[float]:
    """NCTI of every candidate: ``n(t1) + n(t2) - n(t3)`` (terms min-max normalised across candidates).

    ``features``: a list with one N x D_k feature matrix per candidate (at least 2; D_k may differ);
    ``labels``: the N class ids (C >= 2). ``t1`` = nuclear norm of the centred shrunk-LDA projection of the
    PCA(``pca_dim``) features, ``t2`` = mean LDA probability of the true class, ``t3`` = log of the summed
    per-class nuclear norms of the LDA probability matrix. Returns one float in ``[-1, 2]`` per candidate;
    higher is better. A term equal for all candidates contributes 0.
    """
    if isinstance(features, (str, bytes)) or not isinstance(features, Sequence):
        ndim = getattr(features, "ndim", None)
        if ndim == 2:
            raise ValueError(
                "ncti compares candidates: pass a list of feature matrices (one N x D_k matrix per candidate), "
                "not a single matrix; score a zoo with score_zoo('ncti', ...)"
            )
        if ndim != 3:
            raise TypeError(
                f"ncti needs a list of feature matrices (one per candidate), got {type(features).__name__}"
            )
    mats = list(features)
    if len(mats) < 2:
        raise ValueError(
            f"ncti is zoo-relative and needs at least 2 candidates to normalise its terms, got {len(mats)}; "
            "use an absolute estimator (e.g. logme) to score a single model"
        )
    y, classes = check_labels(labels, "labels")
    pca_dim = check_int(pca_dim, "pca_dim", minimum=1)
    c = int(classes.size)
    xs = [check_features(m, f"features[{k}]", n=y.size) for k, m in enumerate(mats)]
    terms = np.array([_terms(pca_project(x, pca_dim), y, c) for x in xs])  # K x 3
    score = _normalise(terms[:, 0]) + _normalise(terms[:, 1]) - _normalise(terms[:, 2])
    return [float(v) for v in score]


register(
    Estimator(
        "ncti",
        ncti,
        needs=("features", "labels"),
        greater_is_better=True,
        reference="Wang et al., How Far Pre-trained Models Are from Neural Collapse on the Target Dataset "
        "Informs their Transferability, CVPR 2023",
        summary="zoo-relative neural-collapse index: LDA-projection nuclear norm + LDA accuracy - class-wise "
        "prediction nuclear norm, each min-max normalised across the candidates",
        zoo_relative=True,
        options={"pca_dim": 64},
    )
)
