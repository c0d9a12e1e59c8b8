"""NC1: within-class variability collapse of the target features (Papyan, Han & Donoho, PNAS 2020; used
as a transferability estimator by Galanti et al., ICLR 2022).

With ``mu_c`` the mean of class c's features and ``mu_G = (1/C) sum_c mu_c`` the mean of the class means
(unweighted: every class counts once, as in the neural-collapse literature)::

    Sigma_W = (1/N) sum_i (f_i - mu_{y_i})(f_i - mu_{y_i})^T
    Sigma_B = (1/C) sum_c (mu_c - mu_G)(mu_c - mu_G)^T
    NC1     = (1/C) tr(Sigma_W pinv(Sigma_B))

**Lower is better**: the features of each class collapse to their mean relative to the spread of the
means. NC1 >= 0; it is invariant to renaming classes and to the order of samples.

No D x D matrix is formed: with ``A = U diag(s) V^T`` the SVD of the C x D matrix of centred class means,
``Sigma_B = V diag(s^2 / C) V^T`` and ``NC1 = ||W V diag(1/s)||_F^2 / N`` with ``W`` the N x D within-class
residuals (``W V`` is computed as ``F V - M[y] V``, never forming W).

Degenerate input:

* **rank cutoff** -- a direction of ``Sigma_B`` with eigenvalue ``<= max(N, D) * eps * largest`` (the
  numpy ``pinv`` convention on ``Sigma_B``; eps = float64 machine epsilon) is treated as null. The C class
  means span at most C - 1 directions, so there is always at least one such rounding-level direction;
* **floor** -- the kept eigenvalues are floored at ``tau = max(N, D) * eps * tr(Sigma_T)`` (``Sigma_T`` the
  total covariance): between-class spread below the float64 resolution of the features is not trusted.
  This bounds ``NC1 <= tr(Sigma_W) / (C tau)`` and changes nothing unless the class means differ only at
  rounding level;
* **class means coincide** (largest eigenvalue of ``Sigma_B <= tau``: the features do not separate the
  classes at all) -- NC1 is +inf in the limit; the finite worst value ``tr(Sigma_W) / (C tau)`` (about
  ``1 / (C max(N, D) eps)``, i.e. ~1e13 / C for N = 100) is returned, so such a model ranks last;
* **constant features** (every column constant) -- NC1 is 0/0: ``ValueError``;
* a class with one sample adds no within-class spread; D > N and duplicated columns need nothing special;
  features of any magnitude are rescaled by a power of two (exactly) first -- NC1 is scale invariant.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ._common import centred_scaled, class_sums, features_and_labels, rank_tol
from .registry import Estimator, register

__all__ = ["nc1"]


def nc1(features: Any, labels: Any) -> float:
    """NC1 ``(1/C) tr(Sigma_W pinv(Sigma_B))``; lower is better.

    ``features``: N x D, ``labels``: N class ids (C >= 2). ``Sigma_W`` is the ``1/N`` within-class
    covariance, ``Sigma_B`` the ``1/C`` covariance of the class means around their unweighted mean.
    ``pinv`` drops eigenvalues ``<= max(N, D) * eps * largest`` and floors the rest at
    ``tau = max(N, D) * eps * tr(Sigma_T)``; coinciding class means give the finite worst value
    ``tr(Sigma_W) / (C tau)``. Constant features raise ``ValueError``.
    """
    f, y, c = features_and_labels(features, labels)
    fc, _ = centred_scaled(f)  # NC1 is invariant to the scale of the features
    n, d = fc.shape
    total = float(np.sum(fc**2)) / n  # tr(Sigma_T)
    if total <= 0.0:
        raise ValueError(
            "features are constant (every column takes one value): NC1 compares within- and between-class "
            "spread and is undefined (0/0) without any spread; check the feature extraction"
        )
    sums, counts = class_sums(fc, y, c)
    means = sums / counts[:, None]  # C x D
    within = max(total - float(np.sum(counts * np.sum(means**2, axis=1))) / n, 0.0)  # tr(Sigma_W)
    tau = rank_tol(n, d) * total
    a = means - means.mean(axis=0)
    _, s, vt = np.linalg.svd(a, full_matrices=False)
    lam = s**2 / c  # eigenvalues of Sigma_B
    if lam.size == 0 or lam[0] <= tau:
        return within / (c * tau)
    keep = lam > rank_tol(n, d) * lam[0]
    lam, v = np.maximum(lam[keep], tau), vt[keep].T  # D x r
    wv = fc @ v - (means @ v)[y]  # N x r: W V without forming the N x D residuals W
    return float(np.sum(wv**2 / lam) / (n * c))


register(
    Estimator(
        "nc1",
        nc1,
        needs=("features", "labels"),
        greater_is_better=False,
        reference="Papyan, Han & Donoho, Prevalence of neural collapse during the terminal phase of deep "
        "learning training, PNAS 2020; Galanti et al., On the Role of Neural Collapse in Transfer Learning, "
        "ICLR 2022",
        summary="within-class variability relative to between-class spread, (1/C) tr(Sigma_W pinv Sigma_B); "
        "lower = more collapse",
    )
)
