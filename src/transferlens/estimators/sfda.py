"""SFDA: Self-challenging Fisher Discriminant Analysis (Shao et al., ECCV 2022, "Not All Models Are Equal").

A regularised Fisher (LDA) classifier is fitted on the features; every sample is then pushed towards the
other classes in proportion to how unsure that classifier is about it ("ConfMix"), the classifier is
refitted on the pushed features, and the score is its mean posterior of the true class. Models whose
classes stay separable under this challenge score high.

The published description leaves details open; this module implements exactly the following. With
``pi_c = n_c / N``, class means ``m_c``, ``Sw = (1/N) sum_i (x_i - m_{y_i})(x_i - m_{y_i})^T`` (population
within-class scatter), ``St`` the population total covariance and ``D`` the feature dimension::

    lambda      = exp(-a * sigma_max(Sw))                         (shrinkage, fixed by the first fit)
    S(X)        = (1 - lambda) Sw + (lambda tr(Sw) / D + eps) I    (eps = 1e-10 tr(St) / D, a fixed floor)
    p(c|x)      = softmax_c( x^T S^-1 m_c - 1/2 m_c^T S^-1 m_c + ln pi_c )        (LDA posterior)
    x'_i        = p_i x_i + (1 - p_i) mbar_{y_i},  p_i = p(y_i|x_i),  mbar_c = mean of the samples not in c
    SFDA        = (1/N) sum_i p'(y_i | x'_i)     (p' refitted on X' with the same lambda and eps)

Notes on the choices:

* the posterior is the LDA posterior with the shrunk within-class scatter; it equals the posterior of the
  nearest projected class mean in the Fisher discriminant space (the projection onto the generalised
  eigenvectors of ``(Sb, S)``): directions outside it add the same amount to every class;
* ``lambda`` is the paper's rule ``exp(-a * largest eigenvalue of Sw)``, so it depends on the scale of the
  features, as in the paper (multiplying the features by 10 shrinks less). The second fit reuses it;
  ``tr(Sw)`` and the class means are recomputed from the mixed features;
* the mixing weight is the posterior itself (the authors' released code re-applies a softmax to the
  posteriors first; we do not);
* ``eps`` keeps ``S`` invertible when ``Sw`` is (near) zero (every class a single point) and changes
  nothing measurable otherwise; constant features use ``eps = 1``.

**Higher is better**; the score lies in ``(0, 1]``. It is invariant to the order of the samples, to
renaming the classes and to translating the features.

Degenerate input: a class with one sample contributes no within-class scatter (fine); constant features
give every class the same mean, so ``p(c|x) = pi_c`` and the score is ``sum_c pi_c^2``; D > N is computed
exactly in an N-dimensional isometric embedding of the centred samples (``D`` in the formulas stays the
original dimension); rank-deficient ``Sw`` is handled by the shrinkage and the floor.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.linalg import LinAlgError, cho_factor, cho_solve, eigh, solve

from .._validate import check_real
from ._inputs import check_features, check_labels
from ._common import centre, class_means
from .registry import Estimator, register

__all__ = ["sfda"]

#: relative floor added to the diagonal of the shrunk within-class scatter: ``eps = FLOOR * tr(St) / D``
FLOOR = 1e-10


def _within(x: np.ndarray, y: np.ndarray, means: np.ndarray) -> np.ndarray:
    """Population within-class scatter ``(1/N) sum_i (x_i - m_{y_i})(x_i - m_{y_i})^T``."""
    r = x - means[y]
    return (r.T @ r) / x.shape[0]


def _solve_spd(cov: np.ndarray, rhs: np.ndarray) -> np.ndarray:
    try:
        return cho_solve(cho_factor(cov, lower=True, check_finite=False), rhs, check_finite=False)
    except LinAlgError:  # not numerically positive definite: a symmetric solve still works
        return solve(cov, rhs, assume_a="sym", check_finite=False)


def _lda_posteriors(x: np.ndarray, means: np.ndarray, priors: np.ndarray, cov: np.ndarray) -> np.ndarray:
    """N x C LDA posteriors ``softmax_c(x^T S^-1 m_c - 1/2 m_c^T S^-1 m_c + ln pi_c)`` with ``S = cov``."""
    a = _solve_spd(cov, means.T)  # d x C
    logits = x @ a - 0.5 * np.sum(means.T * a, axis=0) + np.log(priors)
    logits -= logits.max(axis=1, keepdims=True)
    p = np.exp(logits)
    return p / p.sum(axis=1, keepdims=True)


def _embed(xc: np.ndarray) -> np.ndarray:
    """Rows of centred ``xc`` in an isometric embedding of dimension min(N, D) (Gram matrix unchanged)."""
    n, d = xc.shape
    if d <= n:
        return xc
    lam, u = np.linalg.eigh(xc @ xc.T)
    return u * np.sqrt(np.maximum(lam, 0.0))


def sfda(features: Any, labels: Any, *, a: float = 1.0) -> float:
    """SFDA score: mean LDA posterior of the true class after the self-challenging ConfMix; higher is better.

    ``features``: N x D; ``labels``: N class ids (C >= 2); ``a >= 0``: the shrinkage rate in
    ``lambda = exp(-a * sigma_max(Sw))``. First fit: LDA posteriors ``p`` with the within-class scatter
    shrunk to ``(1 - lambda) Sw + lambda tr(Sw)/D I``; ConfMix ``x'_i = p_i x_i + (1 - p_i) mbar_{y_i}``
    (``mbar_c`` the mean of the other classes' samples); refit on ``X'`` (same lambda) and return
    ``mean_i p'(y_i|x'_i)`` in ``(0, 1]``. Constant features give ``sum_c pi_c^2``; a class with one sample
    and D > N are fine (see the module docstring).
    """
    x = check_features(features, "features")
    y, classes = check_labels(labels, "labels", n=x.shape[0])
    a = check_real(a, "a", nonnegative=True)
    c = int(classes.size)
    n, d_in = x.shape

    z = _embed(centre(x))
    p_dim = z.shape[1]
    eye = np.eye(p_dim)
    total = float(np.sum(z**2)) / n  # tr(St)
    eps = FLOOR * total / d_in if total > 0 else 1.0

    means, counts = class_means(z, y, c)
    priors = counts / n
    sw = _within(z, y, means)
    sigma = float(eigh(sw, eigvals_only=True, subset_by_index=[p_dim - 1, p_dim - 1], check_finite=False)[0])
    lam = float(np.exp(-a * max(sigma, 0.0)))

    def shrunk(s: np.ndarray) -> np.ndarray:
        return (1.0 - lam) * s + (lam * np.trace(s) / d_in + eps) * eye

    post = _lda_posteriors(z, means, priors, shrunk(sw))
    conf = post[np.arange(n), y][:, None]
    outer = (z.sum(axis=0) - counts[:, None] * means) / (n - counts)[:, None]  # mean of the other classes
    mixed = conf * z + (1.0 - conf) * outer[y]

    means2, _ = class_means(mixed, y, c)
    post2 = _lda_posteriors(mixed, means2, priors, shrunk(_within(mixed, y, means2)))
    return float(np.mean(post2[np.arange(n), y]))


register(
    Estimator(
        "sfda",
        sfda,
        needs=("features", "labels"),
        greater_is_better=True,
        reference="Shao et al., Not All Models Are Equal: Predicting Model Transferability in a Self-challenging "
        "Fisher Space, ECCV 2022",
        summary="mean LDA posterior of the true class after pushing each sample towards the other classes by "
        "its own uncertainty (ConfMix) and refitting a regularised Fisher discriminant",
        options={"a": 1.0},
    )
)
