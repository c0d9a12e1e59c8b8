"""GBC: Gaussian Bhattacharyya Coefficient (Pandy et al., CVPR 2022).

The features are reduced by PCA, each class is modelled as a Gaussian with a diagonal (or spherical)
covariance, and the overlap of every pair of classes is measured by the Bhattacharyya coefficient
``exp(-D_B)``::

    D_B(i, j) = 1/8 (mu_i - mu_j)^T S^-1 (mu_i - mu_j) + 1/2 ln( det S / sqrt(det S_i det S_j) ),
                S = (S_i + S_j) / 2
    GBC       = - sum_{i != j} exp(-D_B(i, j))            in [-C(C-1), 0]

**Higher is better** (0: no two classes overlap; ``-C(C-1)``: all classes have the same Gaussian).

Precisely:

* **PCA** -- the features are centred and projected on their top ``d = min(pca_dim, rank)`` principal
  directions (no whitening), computed from one eigendecomposition of the smaller Gram matrix. The rank
  counts the eigenvalues of the Gram matrix above ``max(N, D) * eps * largest`` (the numpy ``pinv``
  convention); exactly-constant columns are centred to exactly zero.
* **class Gaussians** -- mean ``mu_c`` and the population (``1/n_c``) variance of every PCA dimension within
  the class; ``gaussian="spherical"`` replaces the ``d`` variances by their average (``sigma_c^2 I``).
* **variance floor** -- every class variance is floored at ``VAR_FLOOR * v`` with ``v = tr(Cov) / d`` the
  average variance of the PCA features over all samples (``VAR_FLOOR = 1e-6``). A class with one sample (or
  a class whose samples coincide in some direction) has zero variance there; the floor keeps ``D_B`` finite:
  such a class is treated as a very narrow Gaussian, so it overlaps little with classes whose means differ.
  Rounding can make ``D_B`` a hair negative for identical Gaussians; it is clipped at 0.

Degenerate input: constant features (rank 0) give every class the same Gaussian, hence the worst score
``-C(C-1)``; D > N and rank-deficient features just reduce ``d`` to the rank. The score is invariant to
the order of the samples and to renaming the classes.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .._validate import check_choice, check_int
from ._common import class_means, pca_project
from ._inputs import check_features, check_labels
from .registry import Estimator, register

__all__ = ["gbc"]

_EPS = np.finfo(np.float64).eps

#: class variances are floored at this fraction of the average variance of the PCA features
VAR_FLOOR = 1e-6

# pairwise terms are computed for blocks of rows so that memory stays below ~this many float64 values
_BLOCK_ELEMS = 1 << 22


def gbc(features: Any, labels: Any, *, gaussian: str = "diagonal", pca_dim: int = 64) -> float:
    """Gaussian Bhattacharyya Coefficient: ``-sum_{i != j} exp(-D_B(i, j))`` over class pairs; higher is better.

    ``features``: N x D; ``labels``: N class ids (C >= 2). The features are PCA-reduced to
    ``min(pca_dim, rank)`` dimensions; each class is a Gaussian with per-dimension (``"diagonal"``) or one
    shared (``"spherical"``) population variance, floored at ``1e-6`` times the average PCA-feature variance
    (a class with one sample stays finite). ``D_B`` is the Bhattacharyya distance between two classes'
    Gaussians. Returns a float in ``[-C(C-1), 0]``; constant features give ``-C(C-1)``.
    """
    x = check_features(features, "features")
    y, classes = check_labels(labels, "labels", n=x.shape[0])
    gaussian = check_choice(gaussian, "gaussian", ("diagonal", "spherical"))
    pca_dim = check_int(pca_dim, "pca_dim", minimum=1)
    c = int(classes.size)

    z = pca_project(x, pca_dim)
    d = z.shape[1]
    means, counts = class_means(z, y, c)
    var_sums = np.zeros((c, d))
    np.add.at(var_sums, y, (z - means[y]) ** 2)
    var = var_sums / counts[:, None]
    if gaussian == "spherical":
        var = np.repeat(var.mean(axis=1, keepdims=True), d, axis=1)
    overall = float(np.mean(z**2))  # tr(Cov) / d (z is centred)
    floor = VAR_FLOOR * overall if overall > 0 else 1.0
    var = np.maximum(var, floor)
    log_var = np.log(var)

    total = 0.0
    block = max(1, _BLOCK_ELEMS // max(1, c * d))
    for start in range(0, c, block):
        rows = slice(start, min(c, start + block))
        s = 0.5 * (var[rows, None, :] + var[None, :, :])  # b x C x d
        diff2 = (means[rows, None, :] - means[None, :, :]) ** 2
        db = 0.125 * np.sum(diff2 / s, axis=2) + 0.5 * np.sum(
            np.log(s) - 0.5 * (log_var[rows, None, :] + log_var[None, :, :]), axis=2
        )
        coeff = np.exp(-np.maximum(db, 0.0))
        idx = np.arange(rows.start, rows.stop)
        coeff[idx - start, idx] = 0.0  # i == j is not a pair
        total += float(coeff.sum())
    return float(-total)


register(
    Estimator(
        "gbc",
        gbc,
        needs=("features", "labels"),
        greater_is_better=True,
        reference="Pandy et al., Transferability Estimation using Bhattacharyya Class Separability, CVPR 2022",
        summary="minus the summed Bhattacharyya overlap of per-class Gaussians (diagonal covariance) in a "
        "64-dim PCA space; 0 = classes separated",
        options={"gaussian": "diagonal", "pca_dim": 64},
    )
)
