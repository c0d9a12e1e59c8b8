"""NCE: negative conditional entropy of target labels given the source head's hard predictions
(Tran et al., ICCV 2019).

With ``z_i = argmax_z theta_z(x_i)`` the source class predicted for sample i and the empirical joint
``P(y, z) = #{i : y_i = y, z_i = z} / N``::

    NCE = sum_{y,z} P(y, z) log P(y | z) = -H(Y | Z)

Higher is better; NCE lies in ``[-H(Y), 0] \\subset [-log C, 0]``: 0 when the source prediction determines
the target label, ``-H(Y)`` when it carries no information about it. Empty cells contribute 0
(``0 log 0 = 0``), source classes never predicted are ignored; ties in the argmax go to the lowest source
class index (``numpy.argmax``). A class with one sample is fine.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ._inputs import check_labels, check_probs
from .registry import Estimator, register

__all__ = ["nce"]


def nce(source_probs: Any, labels: Any) -> float:
    """NCE ``sum_{y,z} P(y,z) log P(y|z) = -H(Y|Z)`` with ``z_i = argmax theta(x_i)``.

    ``source_probs``: N x C_s softmax outputs (rows sum to 1; logits are refused), ``labels``: N target
    class ids (C >= 2). Higher is better; in ``[-log C, 0]``. Ties in the argmax take the lowest index.
    """
    p = check_probs(source_probs, "source_probs")
    y, classes = check_labels(labels, "labels", n=p.shape[0])
    n, cs, c = p.shape[0], p.shape[1], int(classes.size)
    z = np.argmax(p, axis=1)
    counts = np.bincount(y * cs + z, minlength=c * cs).reshape(c, cs)
    per_z = counts.sum(axis=0)
    yy, zz = np.nonzero(counts)
    nonzero = counts[yy, zz].astype(np.float64)
    value = np.sum(nonzero * np.log(nonzero / per_z[zz])) / n
    return float(min(value, 0.0)) + 0.0  # + 0.0: never -0.0


register(
    Estimator(
        "nce",
        nce,
        needs=("source_probs", "labels"),
        greater_is_better=True,
        reference="Tran et al., Transferability and Hardness of Supervised Classification Tasks, ICCV 2019",
        summary="-H(Y|Z): how well the source head's hard predictions determine the target label",
    )
)
