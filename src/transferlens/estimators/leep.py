"""LEEP: the log expected empirical prediction of the source head (Nguyen et al., ICML 2020).

With ``theta(x)`` the source head's softmax over C_s source classes::

    P(y, z) = (1/N) sum_i theta_z(x_i) [y_i = y],   P(y | z) = P(y, z) / sum_y' P(y', z)
    LEEP    = (1/N) sum_i log sum_z P(y_i | z) theta_z(x_i)

i.e. the average log-likelihood of the "dummy" classifier that maps source predictions to target labels
through the empirical conditional. Higher is better; LEEP lies in ``[-log(N C_s), 0]``, is 0 when each
target class is predicted (one-hot) as its own source class, and ``-H(y)`` (``-log C`` for balanced
classes) when the predictions are uniform.

Degenerate input: a source class ``z`` that receives zero total probability on the target data has
``P(., z)`` undefined; it is set to uniform ``1/C``, which changes nothing (it is always multiplied by
``theta_z(x_i) = 0``) but keeps NaN out. No floor is needed: since ``P(y_i, z) >= theta_z(x_i) / N``,
each sample's expected prediction is at least ``sum_z theta_z(x_i)^2 / N >= 1 / (N C_s)`` (the sum is
clipped to ``[tiny, 1]`` only against rounding), so LEEP is finite for any valid probabilities. A class with
one sample is fine.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ._inputs import check_labels, check_probs
from .registry import Estimator, register

__all__ = ["leep"]


def leep(source_probs: Any, labels: Any) -> float:
    """LEEP ``mean_i log sum_z P(y_i|z) theta_z(x_i)`` with ``P(y|z)`` the empirical conditional.

    ``source_probs``: N x C_s softmax outputs of the source head (rows sum to 1; logits are refused),
    ``labels``: N target class ids (C >= 2). Higher is better; in ``[-log(N C_s), 0]``. A source class with
    zero mass gets a uniform conditional (harmless: it is weighted by zero); never NaN or -inf.
    """
    p = check_probs(source_probs, "source_probs")
    y, classes = check_labels(labels, "labels", n=p.shape[0])
    n, c = p.shape[0], int(classes.size)
    order = np.argsort(y, kind="stable")
    counts = np.bincount(y, minlength=c)
    starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
    joint = np.add.reduceat(p[order], starts, axis=0) / n  # C x C_s: P(y, z)
    mass = joint.sum(axis=0)  # P(z)
    with np.errstate(divide="ignore", invalid="ignore"):
        cond = np.where(mass > 0, joint / np.where(mass > 0, mass, 1.0), 1.0 / c)  # P(y | z)
    eep = np.einsum("ij,ij->i", p, cond[y])  # expected empirical prediction of the true label
    return float(np.mean(np.log(np.clip(eep, np.finfo(np.float64).tiny, 1.0))))


register(
    Estimator(
        "leep",
        leep,
        needs=("source_probs", "labels"),
        greater_is_better=True,
        reference="Nguyen et al., LEEP: A New Measure to Evaluate Transferability of Learned "
        "Representations, ICML 2020",
        summary="log-likelihood of the source head's predictions mapped to target labels through the "
        "empirical P(y|z)",
    )
)
