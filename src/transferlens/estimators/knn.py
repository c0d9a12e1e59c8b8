"""Leave-one-out k-nearest-neighbour accuracy on frozen features.

    kNN-acc = (1/N) sum_i [ vote_k(i) = y_i ],   vote_k(i) = majority class of the k nearest j != i

**Higher is better**; the score lies in ``[0, 1]``. Exactly defined as follows:

* **distance** -- Euclidean, computed as ``||a||^2 + ||b||^2 - 2 a.b`` (clipped at 0) on the column-centred
  features (centring changes no distance and keeps the formula accurate; exactly-constant columns are
  exactly zero), between the *distinct* rows: duplicated samples are at distance exactly 0 and have
  bitwise-equal distances to every other sample, so they are exact ties. Other ties are decided on the
  computed float64 values. A sample is never its own neighbour (leave-one-out).
* **neighbours** -- the first k other samples in the order (distance, sample index): samples at equal
  distance are taken by increasing index.
* **vote** -- the class with most of the k neighbours; a tie between classes goes to the tied class whose
  first neighbour comes earliest in that order (the class of the nearest tied neighbour).

Distances are computed for blocks of rows (about 4M float64 values at a time), so memory stays bounded
(at most ~150 MB at N = 5000) and the result does not depend on the block size. Invariant to renaming classes and,
when distances are distinct, to the order of the samples.

Degenerate input: constant features make all distances 0, so the neighbours of i are the k lowest other
indices; a class with one sample can never be predicted for its own sample (its only member is left out);
D > N and rank-deficient features need nothing special. ``k`` must satisfy ``1 <= k < N``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .._validate import check_int
from ._inputs import check_features, check_labels
from ._common import centre
from .registry import Estimator, register

__all__ = ["knn_accuracy"]

_BLOCK_ELEMS = 1 << 22


def _neighbours(d2: np.ndarray, k: int) -> np.ndarray:
    """Indices (b x k) of the k smallest entries of each row of ``d2``, ordered by (value, column index)."""
    part = np.argpartition(d2, k - 1, axis=1)[:, :k]
    vals = np.take_along_axis(d2, part, axis=1)
    kth = vals.max(axis=1)
    order = np.lexsort((part, vals), axis=-1)  # by value, then index
    nb = np.take_along_axis(part, order, axis=1)
    # rows with a tie at the k-th distance: the partition may have picked any of the tied samples
    ties = np.nonzero(np.sum(d2 <= kth[:, None], axis=1) > k)[0]
    for r in ties:
        nb[r] = np.argsort(d2[r], kind="stable")[:k]
    return nb


def knn_accuracy(features: Any, labels: Any, *, k: int = 5) -> float:
    """Leave-one-out k-NN accuracy ``(1/N) sum_i [majority class of i's k nearest others == y_i]``.

    ``features``: N x D; ``labels``: N class ids (C >= 2); ``1 <= k < N``. Euclidean distance; equal
    distances are ordered by sample index; a vote tie goes to the class of the nearest tied neighbour.
    Returns a float in ``[0, 1]``; higher is better.
    """
    x = check_features(features, "features")
    y, classes = check_labels(labels, "labels", n=x.shape[0])
    n = x.shape[0]
    k = check_int(k, "k", minimum=1)
    if k >= n:
        raise ValueError(
            f"k={k} must be smaller than the number of samples N={n}: leave-one-out leaves N-1 neighbours "
            "for each sample"
        )
    c = int(classes.size)
    # distances between distinct rows only: duplicated samples then have bitwise equal distances to everyone
    uniq, inv = np.unique(centre(x), axis=0, return_inverse=True)
    inv = inv.reshape(-1)
    sq = np.sum(uniq**2, axis=1)
    block = max(1, min(n, _BLOCK_ELEMS // n))
    correct = 0
    for start in range(0, n, block):
        stop = min(n, start + block)
        b = stop - start
        rows = np.arange(b)
        ui = inv[start:stop]
        du = sq[ui, None] + sq[None, :] - 2.0 * (uniq[ui] @ uniq.T)  # b x U squared distances
        np.maximum(du, 0.0, out=du)
        du[rows, ui] = 0.0  # a row and its duplicates: exactly 0
        d2 = du[:, inv]  # b x N
        del du
        d2[rows, np.arange(start, stop)] = np.inf  # never one's own neighbour
        nb_labels = y[_neighbours(d2, k)]  # b x k, nearest first
        del d2
        counts = np.bincount((rows[:, None] * c + nb_labels).ravel(), minlength=b * c).reshape(b, c)
        tied = counts == counts.max(axis=1, keepdims=True)
        first = np.argmax(tied[rows[:, None], nb_labels], axis=1)  # nearest neighbour of a top class
        pred = nb_labels[rows, first]
        correct += int(np.sum(pred == y[start:stop]))
    return correct / n


register(
    Estimator(
        "knn_accuracy",
        knn_accuracy,
        needs=("features", "labels"),
        greater_is_better=True,
        reference="leave-one-out k-nearest-neighbour accuracy on frozen features (e.g. Kornblith et al., Do "
        "Better ImageNet Models Transfer Better?, CVPR 2019)",
        summary="leave-one-out k-NN accuracy (Euclidean, majority vote, k = 5) on the frozen features",
        options={"k": 5},
    )
)
