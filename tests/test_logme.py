"""LogME against a dense textbook computation (D x D matrices, slogdet over all D eigenvalues)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import optimize

from transferlens.estimators.logme import logme
from transferlens.estimators.registry import get_estimator


def _dense_evidence(f: np.ndarray, t: np.ndarray, log_a: float, log_b: float) -> float:
    """The log evidence of the spec, term by term, with dense D x D algebra."""
    n, d = f.shape
    a, b = math.exp(log_a), math.exp(log_b)
    A = a * np.eye(d) + b * f.T @ f
    m = b * np.linalg.solve(A, f.T @ t)
    sign, logdet = np.linalg.slogdet(A)
    assert sign > 0
    return (
        d / 2 * math.log(a)
        + n / 2 * math.log(b)
        - n / 2 * math.log(2 * math.pi)
        - b / 2 * float(np.sum((t - f @ m) ** 2))
        - a / 2 * float(m @ m)
        - logdet / 2
    )


def _dense_mackay(f: np.ndarray, t: np.ndarray, steps: int = 300) -> tuple[float, float]:
    """MacKay's fixed point with dense solves: gamma = D - a tr(A^-1)."""
    n, d = f.shape
    a = b = 1.0
    for _ in range(steps):
        A = a * np.eye(d) + b * f.T @ f
        Ainv = np.linalg.inv(A)
        m = b * Ainv @ f.T @ t
        gamma = d - a * np.trace(Ainv)
        a = gamma / float(m @ m)
        b = (n - gamma) / float(np.sum((t - f @ m) ** 2))
    return math.log(a), math.log(b)


def _dense_logme(f: np.ndarray, columns: np.ndarray) -> float:
    """Mean over columns of max_{a, b} L / N: the best of a coarse (log a, log b) grid and of MacKay's fixed
    point, refined by Nelder-Mead. Dense algebra throughout, so keep b moderate (huge b loses precision)."""
    n = f.shape[0]
    grid = np.linspace(-12.0, 16.0, 29)
    values = []
    for t in columns.T:
        starts = [_dense_mackay(f, t)]
        coarse = [(_dense_evidence(f, t, la, lb), la, lb) for la in grid for lb in grid]
        starts.append(max(coarse)[1:])
        best = max(v for v, _, _ in coarse)
        for start in starts:
            res = optimize.minimize(
                lambda p: -_dense_evidence(f, t, p[0], p[1]),
                np.array(start),
                method="Nelder-Mead",
                options={"xatol": 1e-10, "fatol": 1e-13, "maxiter": 4000},
            )
            best = max(best, -res.fun, _dense_evidence(f, t, *start))
        values.append(best / n)
    return float(np.mean(values))


def _one_hot(y: np.ndarray) -> np.ndarray:
    t = np.zeros((y.size, y.max() + 1))
    t[np.arange(y.size), y] = 1.0
    return t


def _task(
    rng: np.random.Generator, n: int, d: int, c: int, signal: float, rank: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Class-centred Gaussian features; ``rank`` < min(n, d) gives features of that rank (F = G W)."""
    y = np.arange(n) % c
    rng.shuffle(y)
    k = d if rank is None else rank
    centres = rng.normal(size=(c, k)) * signal
    f = centres[y] + rng.normal(size=(n, k))
    if rank is not None:
        f = f @ rng.normal(size=(k, d))
    return f, y


@pytest.mark.parametrize(
    "n, d, c, signal, rank",
    [(60, 5, 3, 2.0, None), (80, 12, 4, 0.7, None), (40, 25, 3, 1.5, None), (30, 60, 2, 1.0, 12),
     (50, 8, 5, 0.0, None), (40, 30, 3, 1.0, 6)],
)
def test_logme_equals_dense_textbook_maximum(n, d, c, signal, rank):
    rng = np.random.default_rng(n + d + c)
    f, y = _task(rng, n, d, c, signal, rank)
    want = _dense_logme(f, _one_hot(y))
    assert logme(f, y) == pytest.approx(want, rel=1e-7, abs=1e-9)


def test_logme_d_greater_than_n_counts_every_zero_eigenvalue():
    """The trap: with D > N, D - N eigenvalues of F^T F are zero and each adds log a to log det."""
    rng = np.random.default_rng(7)
    f, y = _task(rng, 20, 70, 2, 1.0, rank=8)  # D = 70 > N = 20; rank 8, so 62 zero eigenvalues
    t = _one_hot(y)
    want = _dense_logme(f, t)
    got = logme(f, y)
    assert got == pytest.approx(want, rel=1e-7)
    # The widely copied variant drops the zero eigenvalues from the log-det: it scores higher by
    # (D - rank)/2 log a per column, a large error here.
    n, d = f.shape
    s = np.linalg.eigvalsh(f.T @ f)
    nonzero = np.sort(s)[-8:]
    inflated = []
    for col in t.T:
        la, lb = _dense_mackay(f, col)
        a, b = math.exp(la), math.exp(lb)
        dropped = _dense_evidence(f, col, la, lb) + 0.5 * (d - 8) * math.log(a)
        assert dropped - _dense_evidence(f, col, la, lb) == pytest.approx(
            0.5 * np.sum(np.log(a + b * s)) - 0.5 * np.sum(np.log(a + b * nonzero)), rel=1e-6
        )
        inflated.append(dropped / n)
    assert float(np.mean(inflated)) - got > 1.0


def test_logme_interpolating_features_d_greater_than_n():
    """Rank N features (D > N) fit every indicator exactly (no residual): the maximum is still found."""
    rng = np.random.default_rng(5)
    f, y = _task(rng, 16, 40, 2, 1.0)
    assert logme(f, y) == pytest.approx(_dense_logme(f, _one_hot(y)), rel=1e-7)


def test_logme_takes_the_small_ratio_limit_when_it_is_the_supremum():
    """Interpolating features whose evidence keeps rising as a / b -> 0: LogME is that limit,
    -1/2 sum log s_j + N/2 log(N / sum_j u_j^2 / s_j) per column (thin SVD F = U S V^T, u = U^T t)."""
    n = 6
    f = np.eye(n) * np.array([1.0, 1.0, 1.0, 1e3, 1e3, 1e3])[:, None]  # orthogonal rows, rank N
    # The target lies along the large singular directions: the profile's slope at a / b = 0 is
    # N sum(u^2/s^2) / sum(u^2/s) - sum(1/s) < 0 there, and the dense grid below confirms the supremum.
    t = np.array([[0.0, 0.0, 0.0, 1.0, 1.0, 1.0], [0.0, 0.0, 0.0, 1.0, -2.0, 0.5]]).T
    uu, sv, _ = np.linalg.svd(f, full_matrices=False)
    limits = []
    for col in t.T:
        u = uu.T @ col
        limits.append(
            -0.5 * np.sum(np.log(sv**2)) / n + 0.5 * math.log(n / np.sum(u**2 / sv**2)) - 0.5 * (1 + math.log(2 * math.pi))
        )
        grid = np.linspace(-12.0, 14.0, 27)
        assert max(_dense_evidence(f, col, la, lb) for la in grid for lb in grid) / n <= limits[-1] + 1e-9
    assert logme(f, t, regression=True) == pytest.approx(float(np.mean(limits)), rel=1e-9)


def test_logme_regression_equals_dense():
    rng = np.random.default_rng(3)
    f = rng.normal(size=(70, 9))
    w = rng.normal(size=(9, 2))
    targets = f @ w + 0.3 * rng.normal(size=(70, 2))
    assert logme(f, targets, regression=True) == pytest.approx(_dense_logme(f, targets), rel=1e-7)
    assert logme(f, targets[:, 0], regression=True) == pytest.approx(_dense_logme(f, targets[:, :1]), rel=1e-7)


def test_logme_more_signal_scores_higher():
    rng = np.random.default_rng(0)
    y = np.arange(200) % 4
    centres = rng.normal(size=(4, 16))
    noise = rng.normal(size=(200, 16))
    scores = [logme(s * centres[y] + noise, y) for s in (0.0, 0.5, 1.0, 3.0)]
    assert scores == sorted(scores)


def test_logme_degenerate_features_are_finite():
    rng = np.random.default_rng(1)
    y = np.arange(30) % 3
    base = rng.normal(size=(30, 4))
    duplicated = np.hstack([base, base, np.ones((30, 1)), np.zeros((30, 2))])
    value = logme(duplicated, y)
    assert math.isfinite(value)
    assert value == pytest.approx(_dense_logme(duplicated, _one_hot(y)), rel=1e-7)
    assert math.isfinite(logme(np.ones((30, 3)), y))  # constant features: no signal, still a number
    assert math.isfinite(logme(base, np.r_[0, np.ones(29, dtype=int)]))  # a class with one sample


def test_logme_no_signal_is_the_zero_model_limit():
    """Features orthogonal to every indicator: the supremum is the a -> inf limit, m = 0, b = N / ||t||^2."""
    y = np.array([0, 1] * 10)
    f = np.zeros((20, 3))
    f[:, 0] = 1.0
    f[::2, 1] = 1.0
    f[1::2, 1] = -1.0
    f[:, 2] = np.tile([1.0, 1.0, -1.0, -1.0], 5)
    t = _one_hot(y)
    # centred features cannot see a balanced indicator, but the constant column can: use only col 2
    g = f[:, 2:3]
    assert np.allclose(g.T @ (t - 0.5), 0)
    want = np.mean([0.5 * math.log(20 / float(col @ col)) - 0.5 * (1 + math.log(2 * math.pi)) for col in (t - 0.5).T])
    assert logme(g, (t - 0.5), regression=True) == pytest.approx(want, rel=1e-12)


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 10_000), st.integers(2, 4), st.integers(1, 12))
def test_logme_invariances(seed, c, d):
    rng = np.random.default_rng(seed)
    n = 24
    f, y = _task(rng, n, d, c, 1.0)
    base = logme(f, y)
    perm = rng.permutation(n)
    assert logme(f[perm], y[perm]) == pytest.approx(base, rel=1e-9, abs=1e-12)
    assert logme(f, 10 * y + 3) == pytest.approx(base, rel=1e-9, abs=1e-12)  # class ids renamed
    q, _ = np.linalg.qr(rng.normal(size=(d, d)))
    assert logme(f @ q, y) == pytest.approx(base, rel=1e-7, abs=1e-9)  # isotropic prior: rotation invariant
    assert logme(f * 37.5, y) == pytest.approx(base, rel=1e-7, abs=1e-9)  # scale absorbed by a


def test_logme_bad_input():
    f = np.random.default_rng(0).normal(size=(10, 3))
    y = np.arange(10) % 2
    with pytest.raises(ValueError, match="one label per sample"):
        logme(f, y[:9])
    with pytest.raises(ValueError, match="NaN or Inf"):
        logme(np.where(np.eye(10, 3) > 0, np.nan, f), y)
    with pytest.raises(ValueError, match="single class"):
        logme(f, np.zeros(10))
    with pytest.raises(ValueError, match="integer class ids"):
        logme(f, y + 0.5)
    with pytest.raises(ValueError, match="all zero"):
        logme(np.zeros((10, 3)), y)
    with pytest.raises(ValueError, match="2-D"):
        logme(f[:, 0], y)
    with pytest.raises(ValueError, match="all zero"):
        logme(f, np.zeros(10), regression=True)
    with pytest.raises(TypeError):
        logme(f, y, regression="yes")


def test_logme_registry_entry():
    est = get_estimator("logme")
    assert est.fn is logme and est.needs == ("features", "labels") and est.greater_is_better
    assert not est.zoo_relative
