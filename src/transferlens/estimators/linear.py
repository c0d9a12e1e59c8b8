"""Linear-probe accuracy: cross-validated accuracy of L2-regularised multinomial logistic regression.

    acc = (1/N) sum_i [ argmax_c (W_f^T s_f(x_i) + b_f)_c = y_i ],   f = the fold that holds sample i out

where, on the training part of fold f, ``s_f`` standardises every feature (mean 0, variance 1; a constant
feature is only centred, as ``sklearn.preprocessing.StandardScaler`` does) and ``(W_f, b_f)`` minimises::

    (1/n) sum_{i in train} -ln softmax(W^T s_f(x_i) + b)_{y_i}  +  ||W||_F^2 / (2 C n)

(``n`` the training size; the bias is not penalised). This is scikit-learn's ``LogisticRegression(C=C)``
objective (multinomial for every number of classes, also for two -- sklearn fits a single binary logit
there, which equals this model with ``2 C``). **Higher is better**; the score lies in ``[0, 1]``.

Exactly defined as follows:

* **folds** -- ``sklearn.model_selection.StratifiedKFold(folds, shuffle=True, random_state=seed)``; every
  sample is tested exactly once. Deterministic for a fixed seed.
* **small classes** -- a class with fewer samples than ``folds`` is allowed: its samples land in some of
  the test folds only, each scored by a probe trained on the remaining samples of that class. When none
  remain (a class with one sample), the probe cannot predict that class and the sample counts as an error.
  ``folds`` larger than the largest class raises ``ValueError`` (no stratified split exists).
* **classes absent from a training fold** are left out of that fold's softmax; a training fold with a
  single class predicts that class.
* **solver** -- L-BFGS (``scipy.optimize.minimize(method="L-BFGS-B")``) from zero, float64, stopped when the
  largest gradient component is ``<= 1e-6`` or after ``max_iter`` iterations (a ``RuntimeWarning`` says so).

Cost: one fit per fold, each iteration two N x D x C products; on N = 5000, D = 2048, C = 100 (3 folds)
expect tens of seconds on a few CPU cores, dominated by BLAS.

Degenerate input: constant features give a probe that predicts from the bias alone (the majority class of
each training fold); D > N and rank-deficient features are fine (the L2 penalty makes the optimum unique).
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from .._validate import check_int, check_real, check_seed
from ._inputs import check_features, check_labels
from .registry import Estimator, register

__all__ = ["linear_probe_accuracy"]

#: L-BFGS stops when the largest component of the gradient of the (per-sample mean) objective is below this
GTOL = 1e-6


def _fit_predict(xtr: np.ndarray, ytr: np.ndarray, xte: np.ndarray, c_reg: float, max_iter: int) -> np.ndarray:
    """Class predictions for ``xte`` from the L2-regularised multinomial probe fitted on ``(xtr, ytr)``."""
    from scipy.optimize import minimize  # imported on use: scikit-learn and scipy.optimize take ~1 s to load
    from sklearn.preprocessing import StandardScaler

    present = np.unique(ytr)
    if present.size == 1:
        return np.full(xte.shape[0], present[0])
    yk = np.searchsorted(present, ytr)
    scaler = StandardScaler().fit(xtr)
    a, b = scaler.transform(xtr), scaler.transform(xte)
    n, d = a.shape
    kk = present.size
    lam = 1.0 / (c_reg * n)
    rows = np.arange(n)
    nw = d * kk

    def objective(theta: np.ndarray) -> tuple[float, np.ndarray]:
        w = theta[:nw].reshape(d, kk)
        z = a @ w + theta[nw:]
        z -= z.max(axis=1, keepdims=True)
        ez = np.exp(z)
        s = ez.sum(axis=1, keepdims=True)
        loss = (float(np.sum(np.log(s))) - float(np.sum(z[rows, yk]))) / n + 0.5 * lam * float(theta[:nw] @ theta[:nw])
        g = ez / s
        g[rows, yk] -= 1.0
        g /= n
        grad = np.empty_like(theta)
        grad[:nw] = (a.T @ g + lam * w).ravel()
        grad[nw:] = g.sum(axis=0)
        return loss, grad

    res = minimize(
        objective,
        np.zeros(nw + kk),
        jac=True,
        method="L-BFGS-B",
        options={"maxiter": max_iter, "gtol": GTOL, "ftol": 0.0},
    )
    if res.nit >= max_iter and np.max(np.abs(res.jac)) > GTOL:
        warnings.warn(
            f"linear probe did not converge in max_iter={max_iter} iterations (largest gradient "
            f"{np.max(np.abs(res.jac)):.2g} > {GTOL:g}); increase max_iter",
            RuntimeWarning,
            stacklevel=3,
        )
    w = res.x[:nw].reshape(d, kk)
    return present[np.argmax(b @ w + res.x[nw:], axis=1)]


def linear_probe_accuracy(
    features: Any, labels: Any, *, C: float = 1.0, folds: int = 3, seed: int = 0, max_iter: int = 1000
) -> float:
    """Stratified ``folds``-fold cross-validated accuracy of an L2 multinomial logistic probe; higher is better.

    ``features``: N x D; ``labels``: N class ids (C >= 2). Each fold standardises the features on its
    training part and minimises ``mean CE + ||W||^2 / (2 C n)`` (sklearn's ``C``) with L-BFGS to a gradient
    of ``1e-6``. Folds: ``StratifiedKFold(folds, shuffle=True, random_state=seed)``; a class with fewer
    samples than folds is allowed (a held-out sample whose class is absent from training counts as an
    error); ``folds`` above the largest class size raises ``ValueError``. Returns a float in ``[0, 1]``.
    """
    x = check_features(features, "features")
    y, classes = check_labels(labels, "labels", n=x.shape[0])
    c_reg = check_real(C, "C", positive=True)
    folds = check_int(folds, "folds", minimum=2)
    seed = check_seed(seed, "seed", limit=2**32)
    max_iter = check_int(max_iter, "max_iter", minimum=1)
    largest = int(np.bincount(y).max())
    if folds > largest:
        raise ValueError(
            f"folds={folds} exceeds the size of the largest class ({largest} samples): a stratified split "
            f"needs folds <= {largest}; use fewer folds or more samples"
        )
    from sklearn.model_selection import StratifiedKFold

    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    with warnings.catch_warnings():  # classes smaller than `folds` are allowed (see the module docstring)
        warnings.filterwarnings("ignore", message="The least populated class", category=UserWarning)
        splits = list(splitter.split(np.zeros((y.size, 1)), y))
    correct = 0
    for train, test in splits:
        pred = _fit_predict(x[train], y[train], x[test], c_reg, max_iter)
        correct += int(np.sum(pred == y[test]))
    return correct / y.size


register(
    Estimator(
        "linear_probe_accuracy",
        linear_probe_accuracy,
        needs=("features", "labels"),
        greater_is_better=True,
        reference="linear evaluation protocol (e.g. Kornblith et al., Do Better ImageNet Models Transfer "
        "Better?, CVPR 2019)",
        summary="3-fold stratified cross-validated accuracy of L2 multinomial logistic regression on the "
        "standardized frozen features",
        options={"C": 1.0, "folds": 3, "seed": 0, "max_iter": 1000},
    )
)
