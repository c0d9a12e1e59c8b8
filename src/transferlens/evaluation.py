"""Statistics that compare transferability scores with a ground truth.

A transferability estimator gives one score per candidate source model; the ground truth is what
actually happened when each model was transferred (e.g. fine-tuned target accuracy). A good
estimator ranks the models the way the ground truth does, so every statistic here measures
agreement between the vector ``scores`` and the vector ``truth`` (one entry per model, same order).
For every statistic, **higher means the scores agree better with the truth**.

* :func:`pearson` -- linear correlation, in [-1, 1].
* :func:`spearman` -- Pearson correlation of the ranks, in [-1, 1].
* :func:`kendall` -- Kendall's tau-b (pairwise order agreement, tie-corrected), in [-1, 1].
* :func:`weighted_tau` -- Kendall's tau with hyperbolic weights that emphasise the best models.
* :func:`relative_top1` -- truth of the model the scores pick, relative to the best truth (<= 1).
* :func:`bootstrap_ci` -- percentile bootstrap confidence interval for any of the above.
* :func:`correlate` -- all of the above at once, as a :class:`Correlation`.

Conventions
-----------
* Inputs are 1-D array-likes (lists, numpy arrays, torch tensors) of equal length, finite values.
  Bad input raises ``ValueError`` (``TypeError`` for non-numeric data) with a message saying what
  to do.
* A correlation involving a constant vector is undefined: the functions return ``None`` (never
  NaN) and emit no warning.
* Everything is deterministic; the bootstrap uses ``numpy.random.default_rng(seed)``.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np

from ._validate import check_int, check_real, check_seed

__all__ = [
    "Correlation",
    "bootstrap_ci",
    "correlate",
    "kendall",
    "pearson",
    "relative_top1",
    "spearman",
    "weighted_tau",
]

StatisticName = Literal["pearson", "spearman", "kendall", "weighted_tau", "relative_top1"]
Statistic = Callable[[np.ndarray, np.ndarray], "float | None"]

# Bound on the number of array elements the vectorised bootstrap materialises at once.
_CHUNK_ELEMENTS = 4_000_000
# From this many models on, Kendall's tau and the weighted tau go through SciPy's O(n log n) routines one
# resample at a time instead of the vectorised O(n^2) pair sums (measured crossovers on one core).
KENDALL_SCIPY_FROM = 200
WEIGHTED_TAU_SCIPY_FROM = 100


# --------------------------------------------------------------------------------------------
# Input validation
# --------------------------------------------------------------------------------------------


def _as_vector(x: Any, name: str) -> np.ndarray:
    """Return ``x`` as a 1-D float64 numpy array, or raise with a helpful message."""
    if hasattr(x, "detach") and hasattr(x, "cpu") and hasattr(x, "numpy"):  # torch tensor
        x = x.detach().cpu().numpy()
    try:
        arr = np.asarray(x)
    except Exception as exc:  # noqa: BLE001 - re-raised with a clear message
        raise TypeError(
            f"{name} must be a 1-D array-like of numbers (list, numpy array or torch tensor), "
            f"got {type(x).__name__}"
        ) from exc
    if arr.dtype.kind not in "biuf":
        raise TypeError(
            f"{name} must contain real numbers, got dtype {arr.dtype}; convert it to floats "
            "(and drop missing entries) before evaluating"
        )
    if arr.ndim != 1:
        raise ValueError(
            f"{name} must be 1-D (one value per candidate model), got shape {arr.shape}; "
            "flatten it (e.g. .ravel()) or select one column"
        )
    arr = arr.astype(np.float64, copy=False)
    if not np.all(np.isfinite(arr)):
        bad = int(np.sum(~np.isfinite(arr)))
        raise ValueError(
            f"{name} contains {bad} NaN/Inf value(s); remove or impute those models before evaluating"
        )
    return arr


def _check_pair(scores: Any, truth: Any, min_n: int = 2) -> tuple[np.ndarray, np.ndarray]:
    s = _as_vector(scores, "scores")
    t = _as_vector(truth, "truth")
    if s.shape[0] != t.shape[0]:
        raise ValueError(
            f"scores and truth must have the same length (one entry per model), got "
            f"{s.shape[0]} and {t.shape[0]}; align them model by model"
        )
    if s.shape[0] < min_n:
        raise ValueError(
            f"need at least {min_n} models to compare scores with truth, got {s.shape[0]}; "
            "evaluate more candidate models"
        )
    return s, t


def _is_constant(x: np.ndarray) -> bool:
    return bool(np.all(x == x[0]))


def _rows_constant(x: np.ndarray) -> np.ndarray:
    return np.all(x == x[:, :1], axis=1)


# --------------------------------------------------------------------------------------------
# Row-wise (vectorised) kernels; each returns NaN where the statistic is undefined.
# --------------------------------------------------------------------------------------------


def _scaled_deviations(x: np.ndarray) -> np.ndarray:
    """Rows of ``x`` centred and divided by their largest absolute deviation (avoids over/underflow)."""
    d = x - x.mean(axis=1, keepdims=True)
    scale = np.max(np.abs(d), axis=1, keepdims=True)
    scale[scale == 0] = 1.0
    return d / scale


def _pearson_rows(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    dx = _scaled_deviations(x)
    dy = _scaled_deviations(y)
    num = np.sum(dx * dy, axis=1)
    den = np.sqrt(np.sum(dx * dx, axis=1) * np.sum(dy * dy, axis=1))
    out = np.full(x.shape[0], np.nan)
    ok = (den > 0) & ~_rows_constant(x) & ~_rows_constant(y)
    out[ok] = np.clip(num[ok] / den[ok], -1.0, 1.0)
    return out


def _average_ranks(x: np.ndarray) -> np.ndarray:
    """Ranks 1..n along each row, ties sharing the mean of the ranks they span."""
    order = np.argsort(x, axis=1, kind="stable")
    v = np.take_along_axis(x, order, axis=1)
    n = x.shape[1]
    pos = np.broadcast_to(np.arange(n), x.shape)
    starts = np.ones(x.shape, dtype=bool)
    starts[:, 1:] = v[:, 1:] != v[:, :-1]
    ends = np.ones(x.shape, dtype=bool)
    ends[:, :-1] = starts[:, 1:]
    first = np.maximum.accumulate(np.where(starts, pos, 0), axis=1)
    last = np.minimum.accumulate(np.where(ends, pos, n - 1)[:, ::-1], axis=1)[:, ::-1]
    ranks = np.empty(x.shape, dtype=np.float64)
    np.put_along_axis(ranks, order, (first + last) / 2.0 + 1.0, axis=1)
    return ranks


def _spearman_rows(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return _pearson_rows(_average_ranks(x), _average_ranks(y))


def _scipy_rows(fn: Callable[[np.ndarray, np.ndarray], Any], x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """``fn(x_i, y_i).statistic`` per row, NaN where undefined (SciPy's warnings about constant rows
    silenced: such rows are NaN here as in the vectorised paths), clipped to [-1, 1]."""
    import warnings

    out = np.empty(x.shape[0])
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        for r in range(x.shape[0]):
            out[r] = fn(x[r], y[r]).statistic
    out[~(np.isfinite(x).all(axis=1) & np.isfinite(y).all(axis=1))] = np.nan  # as the pair sums give
    return np.clip(out, -1.0, 1.0)


def _kendall_rows(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Tau-b per row: sum_{i<j} sgn(dx) sgn(dy) / sqrt(#pairs untied in x * #pairs untied in y)."""
    n = x.shape[1]
    if n >= KENDALL_SCIPY_FROM:
        from scipy.stats import kendalltau

        return _scipy_rows(kendalltau, x, y)
    i, j = np.triu_indices(n, k=1)
    out = np.full(x.shape[0], np.nan)
    n_pairs = max(len(i), 1)
    chunk = max(1, _CHUNK_ELEMENTS // n_pairs)
    for start in range(0, x.shape[0], chunk):
        stop = start + chunk
        sx = np.sign(x[start:stop, i] - x[start:stop, j])
        sy = np.sign(y[start:stop, i] - y[start:stop, j])
        num = np.sum(sx * sy, axis=1)
        tx = np.count_nonzero(sx, axis=1).astype(np.float64)
        ty = np.count_nonzero(sy, axis=1).astype(np.float64)
        den = np.sqrt(tx * ty)
        ok = den > 0
        block = np.full(sx.shape[0], np.nan)
        block[ok] = np.clip(num[ok] / den[ok], -1.0, 1.0)
        out[start:stop] = block
    return out


def _relative_top1_rows(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    picked = np.take_along_axis(y, np.argmax(x, axis=1)[:, None], axis=1)[:, 0]
    best = np.max(y, axis=1)
    out = np.full(x.shape[0], np.nan)
    ok = best > 0
    out[ok] = picked[ok] / best[ok]
    return out


def _decreasing_ranks(key: np.ndarray, tiebreak: np.ndarray) -> np.ndarray:
    """Rank 0 for the largest ``key`` per row (ties broken by the larger ``tiebreak``)."""
    order = np.lexsort((tiebreak, key), axis=-1)[:, ::-1]
    ranks = np.empty(key.shape, dtype=np.float64)
    np.put_along_axis(ranks, order, np.broadcast_to(np.arange(key.shape[1], dtype=np.float64), key.shape), axis=1)
    return ranks


def _weighted_tau_ranked(x: np.ndarray, y: np.ndarray, ranks: np.ndarray) -> np.ndarray:
    """Vigna's weighted tau per row, additive hyperbolic weights ``1 / (r + 1)`` on the given ranks.

    ``sum_{i<j} w_ij sgn(x_i - x_j) sgn(y_i - y_j) / sqrt(sum_{x_i != x_j} w_ij * sum_{y_i != y_j} w_ij)``
    with ``w_ij = 1 / (r_i + 1) + 1 / (r_j + 1)``; NaN where a row has no untied pair.
    """
    n = x.shape[1]
    i, j = np.triu_indices(n, k=1)
    out = np.full(x.shape[0], np.nan)
    chunk = max(1, _CHUNK_ELEMENTS // max(len(i), 1))
    for start in range(0, x.shape[0], chunk):
        stop = start + chunk
        w = 1.0 / (ranks[start:stop] + 1.0)
        wij = w[:, i] + w[:, j]
        sx = np.sign(x[start:stop, i] - x[start:stop, j])
        sy = np.sign(y[start:stop, i] - y[start:stop, j])
        num = np.sum(wij * sx * sy, axis=1)
        den = np.sqrt(np.sum(wij * np.abs(sx), axis=1) * np.sum(wij * np.abs(sy), axis=1))
        ok = den > 0
        block = np.full(sx.shape[0], np.nan)
        block[ok] = np.clip(num[ok] / den[ok], -1.0, 1.0)
        out[start:stop] = block
    return out


def _weighted_tau_by(x: np.ndarray, y: np.ndarray, rank_by: str) -> np.ndarray:
    """Weighted tau rows, the ranking taken from ``"scores"`` (x, then y), ``"truth"`` or ``"both"``."""
    if x.shape[1] >= WEIGHTED_TAU_SCIPY_FROM:
        from scipy.stats import weightedtau

        if rank_by == "both":
            return _scipy_rows(weightedtau, x, y)
        a, b = (x, y) if rank_by == "scores" else (y, x)
        return _scipy_rows(lambda u, v: weightedtau(u, v, rank=None), a, b)
    if rank_by == "scores":
        return _weighted_tau_ranked(x, y, _decreasing_ranks(x, y))
    if rank_by == "truth":
        return _weighted_tau_ranked(x, y, _decreasing_ranks(y, x))
    return (_weighted_tau_by(x, y, "scores") + _weighted_tau_by(x, y, "truth")) / 2.0


def _weighted_tau_value(s: np.ndarray, t: np.ndarray, rank_by: str) -> float | None:
    if _is_constant(s) or _is_constant(t):
        return None
    return _row_value(_weighted_tau_by(s[None, :], t[None, :], rank_by))


def _weighted_tau_rows(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return _weighted_tau_by(x, y, "both")


def _row_value(values: np.ndarray) -> float | None:
    v = float(values[0])
    return v if math.isfinite(v) else None


# --------------------------------------------------------------------------------------------
# Point statistics
# --------------------------------------------------------------------------------------------


def pearson(scores: Any, truth: Any) -> float | None:
    """Pearson correlation between ``scores`` and ``truth``.

    ``r = sum((s - mean s)(t - mean t)) / sqrt(sum (s - mean s)^2 * sum (t - mean t)^2)``, in [-1, 1].
    Higher means the scores are more linearly related to the truth (1: exactly affine, increasing).
    Returns ``None`` if either vector is constant.
    """
    s, t = _check_pair(scores, truth)
    return _row_value(_pearson_rows(s[None, :], t[None, :]))


def spearman(scores: Any, truth: Any) -> float | None:
    """Spearman rank correlation: Pearson correlation of the (average, tie-aware) ranks.

    ``rho = pearson(rank(s), rank(t))``, in [-1, 1]. Higher means the scores order the models more
    like the truth does (1: same order). Returns ``None`` if either vector is constant.
    """
    s, t = _check_pair(scores, truth)
    return _row_value(_spearman_rows(s[None, :], t[None, :]))


def kendall(scores: Any, truth: Any) -> float | None:
    """Kendall's tau-b (the same value as :func:`scipy.stats.kendalltau`).

    ``tau_b = (C - D) / sqrt((P - T_s) (P - T_t))`` with C/D the concordant/discordant pairs, P the
    number of pairs and T_s/T_t the pairs tied in scores/truth; in [-1, 1]. Higher means more
    pairs of models are ordered the same way as the truth. Returns ``None`` if either vector is
    constant.
    """
    s, t = _check_pair(scores, truth)
    if _is_constant(s) or _is_constant(t):
        return None
    return _row_value(_kendall_rows(s[None, :], t[None, :]))


def weighted_tau(
    scores: Any, truth: Any, *, rank_by: Literal["truth", "scores", "both"] = "both"
) -> float | None:
    """Weighted Kendall tau (Vigna 2015; the value of :func:`scipy.stats.weightedtau`, hyperbolic weights ``1 / (r + 1)``).

    Like Kendall's tau, but a swap between two models is weighted by the sum of their weights,
    where ``r`` is a model's rank (0 = best) in the chosen ordering; in [-1, 1]. Higher means
    better agreement, with mistakes among the top models counting most.

    ``rank_by="both"`` (default) is scipy's default, ``weightedtau(scores, truth)`` with ``rank=True``:
    the average of ranking by scores and by truth, the convention of the transferability-estimation
    literature. ``"truth"`` ranks the models by decreasing truth only (``weightedtau(truth, scores,
    rank=None)``: getting the truly best models right matters most), ``"scores"`` by decreasing score.
    Returns ``None`` if either vector is constant.
    """
    if rank_by not in ("truth", "scores", "both"):
        raise ValueError(f"rank_by must be 'truth', 'scores' or 'both', got {rank_by!r}")
    s, t = _check_pair(scores, truth)
    return _weighted_tau_value(s, t, rank_by)


def relative_top1(scores: Any, truth: Any) -> float:
    """Truth of the model the scores rank first, relative to the best truth.

    ``truth[argmax(scores)] / max(truth)``; ties in ``scores`` pick the first such model. It is 1
    when the top-scored model is (one of) the truly best, and smaller otherwise -- higher is
    better, at most 1 (it can be negative if ``truth`` has negative entries). Only meaningful for
    a ground truth that is positive, such as accuracy: raises ``ValueError`` if ``max(truth) <= 0``.
    """
    s, t = _check_pair(scores, truth)
    best = float(np.max(t))
    if best <= 0:
        raise ValueError(
            f"relative_top1 needs max(truth) > 0 (a positive ground truth such as accuracy), got "
            f"max(truth) = {best}; shift the truth to be positive or use a correlation statistic instead"
        )
    return float(t[int(np.argmax(s))] / best)


# --------------------------------------------------------------------------------------------
# Bootstrap
# --------------------------------------------------------------------------------------------

_VECTORISED: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "pearson": _pearson_rows,
    "spearman": _spearman_rows,
    "kendall": _kendall_rows,
    "weighted_tau": _weighted_tau_rows,
    "relative_top1": _relative_top1_rows,
}
_BY_FUNCTION: dict[Callable[..., Any], str] = {
    pearson: "pearson",
    spearman: "spearman",
    kendall: "kendall",
    weighted_tau: "weighted_tau",
    relative_top1: "relative_top1",
}


def _check_bootstrap_args(n_boot: Any, confidence: Any, seed: Any) -> tuple[int, float, int | None]:
    """Normalised ``(n_boot, confidence, seed)``; numpy scalars and 0-d tensors accepted, ``seed`` may be None."""
    return (
        check_int(n_boot, "n_boot (e.g. 1000)", 1),
        check_real(confidence, "confidence (e.g. 0.95)", positive=True, below=1.0),
        None if seed is None else check_seed(seed),
    )


def _generic_rows(statistic: Statistic, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    out = np.full(x.shape[0], np.nan)
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        for b in range(x.shape[0]):
            v = statistic(x[b], y[b])
            if v is not None:
                v = float(v)
                if math.isfinite(v):
                    out[b] = v
    return out


def _bootstrap(
    s: np.ndarray,
    t: np.ndarray,
    rows: Callable[[np.ndarray, np.ndarray], np.ndarray],
    n_boot: int,
    confidence: float,
    seed: int | None,
) -> tuple[float, float] | None:
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, s.shape[0], size=(int(n_boot), s.shape[0]))
    values = rows(s[idx], t[idx])
    valid = values[np.isfinite(values)]
    if 2 * valid.size < n_boot:
        return None
    alpha = 1.0 - confidence
    lo, hi = np.percentile(valid, [100.0 * alpha / 2.0, 100.0 * (1.0 - alpha / 2.0)])
    return float(lo), float(hi)


def bootstrap_ci(
    scores: Any,
    truth: Any,
    statistic: StatisticName | Statistic,
    n_boot: int = 1000,
    confidence: float = 0.95,
    seed: int | None = 0,
) -> tuple[float, float] | None:
    """Percentile bootstrap confidence interval for ``statistic(scores, truth)``.

    Draws ``n_boot`` resamples of the (score, truth) *pairs* with replacement
    (``numpy.random.default_rng(seed)``), evaluates the statistic on each, and returns the
    ``(1 - confidence) / 2`` and ``(1 + confidence) / 2`` percentiles. Resamples on which the
    statistic is undefined (``None``/NaN, e.g. a constant resample; for ``relative_top1`` a
    resample with ``max(truth) <= 0``) are skipped; returns ``None`` if fewer than half of the
    resamples are valid. A narrower interval means a more certain estimate.

    ``statistic`` is one of this module's functions (or its name, e.g. ``"spearman"``) -- these
    are vectorised over resamples -- or any callable ``f(scores, truth) -> float | None`` taking
    two 1-D float arrays, which is called once per resample. Needs at least 3 models.
    """
    n_boot, confidence, seed = _check_bootstrap_args(n_boot, confidence, seed)
    if isinstance(statistic, str):
        if statistic not in _VECTORISED:
            raise ValueError(
                f"unknown statistic {statistic!r}; use one of {sorted(_VECTORISED)} or pass a callable"
            )
        rows = _VECTORISED[statistic]
    elif callable(statistic):
        name = _BY_FUNCTION.get(statistic)
        if name is not None:
            rows = _VECTORISED[name]
        else:
            def rows(x: np.ndarray, y: np.ndarray) -> np.ndarray:
                return _generic_rows(statistic, x, y)
    else:
        raise ValueError(
            f"statistic must be a name such as 'spearman' or a callable f(scores, truth), got {statistic!r}"
        )
    s, t = _check_pair(scores, truth, min_n=3)
    return _bootstrap(s, t, rows, n_boot, confidence, seed)


# --------------------------------------------------------------------------------------------
# Everything at once
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Correlation:
    """All agreement statistics between transferability scores and ground truth.

    Every statistic is "higher is better". ``None`` marks an undefined value (constant input;
    ``relative_top1`` with ``max(truth) <= 0``; confidence intervals when there are fewer than 3
    models or fewer than half of the bootstrap resamples are valid).
    """

    n: int
    pearson: float | None
    spearman: float | None
    kendall: float | None
    weighted_tau: float | None
    relative_top1: float | None
    pearson_ci: tuple[float, float] | None
    spearman_ci: tuple[float, float] | None
    kendall_ci: tuple[float, float] | None
    confidence: float
    n_boot: int
    seed: int

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly dict keyed by field name (intervals become ``[low, high]`` lists)."""
        out = asdict(self)
        for key, value in out.items():
            if isinstance(value, tuple):
                out[key] = [float(v) for v in value]
        return out


def correlate(
    scores: Any,
    truth: Any,
    *,
    n_boot: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> Correlation:
    """Compute every statistic of this module for one estimator (see :class:`Correlation`).

    Intervals are percentile bootstrap intervals (:func:`bootstrap_ci`) sharing ``seed``; they
    are ``None`` when there are only 2 models. ``relative_top1`` is ``None`` (instead of raising)
    when ``max(truth) <= 0``.
    """
    n_boot, confidence, seed = _check_bootstrap_args(n_boot, confidence, seed)
    if seed is None:
        raise ValueError("correlate needs an integer seed (its intervals must be reproducible), got None")
    s, t = _check_pair(scores, truth)
    n = int(s.shape[0])
    x, y = s[None, :], t[None, :]
    top1 = _row_value(_relative_top1_rows(x, y))

    def ci(name: str) -> tuple[float, float] | None:
        if n < 3:
            return None
        return _bootstrap(s, t, _VECTORISED[name], n_boot, confidence, seed)

    return Correlation(
        n=n,
        pearson=_row_value(_pearson_rows(x, y)),
        spearman=_row_value(_spearman_rows(x, y)),
        kendall=kendall(s, t),
        weighted_tau=_weighted_tau_value(s, t, "both"),
        relative_top1=top1,
        pearson_ci=ci("pearson"),
        spearman_ci=ci("spearman"),
        kendall_ci=ci("kendall"),
        confidence=float(confidence),
        n_boot=int(n_boot),
        seed=int(seed),
    )
