"""TransRate: the mutual information between features and labels measured by coding rates
(Huang et al., ICML 2022).

With ``Z`` the features centred once globally (N x D) and ``Z_c`` the ``n_c`` rows of class c of that
same ``Z`` (not re-centred)::

    R(Z)      = 1/2 logdet(I_D + D / (N eps^2) Z^T Z)
    TransRate = R(Z) - sum_c (n_c / N) R(Z_c)        (R(Z_c) uses n_c in place of N)

``eps`` (default ``1e-2``, so ``eps^2 = 1e-4`` as in the authors' code) is the distortion: the resolution
at which features are coded; it is recorded in the registry options. Higher is better; TransRate >= 0
(concavity of logdet: ``D/(N eps^2) Z^T Z`` is the ``n_c / N``-weighted average of the per-class
matrices). It is not invariant to rescaling the features (by design: scale enters against ``eps``).

Each logdet is ``1/2 sum_j log1p(D / (n eps^2) g_j)`` over the eigenvalues ``g_j`` of the smaller Gram
matrix (``Z Z^T`` or ``Z^T Z``, whichever is ``min(n, D)`` sized; the other's extra eigenvalues are zero
and add ``log1p(0) = 0``), so it is exact for D > N and fast. Eigenvalues that round to zero or below
are dropped (they add ``log1p(0) = 0``); the features are rescaled by a power of two (exactly) before the Gram is
formed and the scale is put back in log space, so no magnitude overflows. Degenerate input: constant columns are centred to exactly zero and all-constant features
give 0.0 (no information); a class with one sample contributes ``1/2 log1p(D / eps^2 ||z_i||^2)``;
duplicated columns and D > N need nothing special.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .._validate import check_real
from ._common import centred_scaled, features_and_labels
from .registry import Estimator, register

__all__ = ["transrate"]

DEFAULT_EPS = 1e-2


def _rate(z: np.ndarray, log_scale: float, d: int, eps: float) -> float:
    """``1/2 logdet(I + D / (n eps^2) Z^T Z)`` for the n x D block ``Z = exp(log_scale) z``, via the
    eigenvalues ``g_j`` of the smaller Gram of ``z``: ``1/2 sum_j log1p(c g_j)`` with
    ``c = exp(2 log_scale) D / (n eps^2)``, evaluated as ``logaddexp(0, log g_j + log c)`` so that no
    magnitude of the features or of eps overflows."""
    n = z.shape[0]
    gram = z @ z.T if n <= z.shape[1] else z.T @ z
    g = np.linalg.eigvalsh(gram)
    g = g[g > 0]  # zero (and rounding-negative) eigenvalues add log1p(0) = 0
    log_c = 2.0 * log_scale + math.log(d) - math.log(n) - 2.0 * math.log(eps)
    return 0.5 * float(np.sum(np.logaddexp(0.0, np.log(g) + log_c)))


def transrate(features: Any, labels: Any, eps: float = DEFAULT_EPS) -> float:
    """TransRate ``R(Z) - sum_c (n_c/N) R(Z_c)`` with ``R(Z) = 1/2 logdet(I + D/(N eps^2) Z^T Z)``.

    ``features``: N x D (centred once globally), ``labels``: N class ids (C >= 2), ``eps``: the coding
    distortion (default 1e-2). Higher is better; >= 0. Constant features give 0.0; D > N, duplicated
    columns and one-sample classes are handled exactly (logdets from the ``min(n, D)`` Gram eigenvalues).
    """
    eps = check_real(eps, "eps", positive=True)
    f, y, c = features_and_labels(features, labels)
    z, exponent = centred_scaled(f)  # the centred features are z * 2**exponent
    n, d = z.shape
    if not np.any(z):
        return 0.0
    log_scale = exponent * math.log(2.0)
    order = np.argsort(y, kind="stable")
    counts = np.bincount(y, minlength=c)
    blocks = np.split(z[order], np.cumsum(counts)[:-1])
    within = sum(blk.shape[0] / n * _rate(blk, log_scale, d, eps) for blk in blocks)
    return float(max(_rate(z, log_scale, d, eps) - within, 0.0))


register(
    Estimator(
        "transrate",
        transrate,
        needs=("features", "labels"),
        greater_is_better=True,
        reference="Huang et al., Frustratingly Easy Transferability Estimation, ICML 2022",
        summary="coding rate of the features minus the class-size weighted coding rate within each class",
        options={"eps": DEFAULT_EPS},
    )
)
