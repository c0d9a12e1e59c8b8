"""Tests for transferlens.evaluation."""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from transferlens.evaluation import (
    Correlation,
    bootstrap_ci,
    correlate,
    kendall,
    pearson,
    relative_top1,
    spearman,
    weighted_tau,
)

CORRELATIONS = [pearson, spearman, kendall, weighted_tau]
ALL_STATS = [pearson, spearman, kendall, weighted_tau, relative_top1]


def _strongly_correlated(n: int = 20, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    truth = rng.uniform(0.5, 0.9, size=n)
    scores = 3.0 * truth + rng.normal(scale=0.02, size=n)
    return scores, truth


# ----------------------------------------------------------------------------------------------
# Known answers
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fn", CORRELATIONS)
def test_perfectly_monotone_is_one(fn):
    scores = [0.1, 0.5, 2.0, 7.0, 7.5]
    truth = [1.0, 2.0, 3.0, 4.0, 5.0]
    expected_pearson_not_one = fn is pearson  # monotone but not linear
    value = fn(scores, truth)
    if expected_pearson_not_one:
        assert 0 < value < 1
    else:
        assert value == pytest.approx(1.0)


@pytest.mark.parametrize("fn", CORRELATIONS)
def test_linear_and_reversed(fn):
    x = [1.0, 2.0, 3.0, 4.0, 5.0]
    assert fn(x, [2 * v + 1 for v in x]) == pytest.approx(1.0)
    assert fn(x, [-v for v in x]) == pytest.approx(-1.0)


def test_pearson_by_hand():
    # s = [1, 2, 3], t = [1, 3, 2]: deviations (-1, 0, 1) and (-1, 1, 0)
    # r = (1 + 0 + 0) / sqrt(2 * 2) = 0.5
    assert pearson([1, 2, 3], [1, 3, 2]) == pytest.approx(0.5)


def test_kendall_by_hand():
    # s = [1, 2, 3, 4], t = [1, 3, 2, 4]: 6 pairs, only (2, 3) is discordant -> (5 - 1) / 6
    assert kendall([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(4 / 6)
    # with a tie in scores: s = [1, 1, 2], t = [1, 2, 3]
    # pairs: (0,1) tied in s, (0,2) concordant, (1,2) concordant -> 2 / sqrt(2 * 3)
    assert kendall([1, 1, 2], [1, 2, 3]) == pytest.approx(2 / math.sqrt(6))


def test_spearman_by_hand():
    # ranks equal the values; d = (0, 1, -1, 0), rho = 1 - 6 * 2 / (4 * 15) = 0.8
    assert spearman([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(0.8)


def test_weighted_tau_uses_scipy_defaults_by_default():
    scores = np.array([0.3, 0.1, 0.9, 0.5, 0.7])
    truth = np.array([0.2, 0.4, 0.8, 0.6, 0.9])
    assert weighted_tau(scores, truth) == pytest.approx(stats.weightedtau(scores, truth).statistic)
    assert weighted_tau(scores, truth, rank_by="truth") == pytest.approx(stats.weightedtau(truth, scores, rank=None).statistic)
    assert weighted_tau(scores, truth, rank_by="scores") == pytest.approx(
        stats.weightedtau(scores, truth, rank=None).statistic
    )
    assert weighted_tau(scores, truth, rank_by="both") == pytest.approx(stats.weightedtau(scores, truth).statistic)


def test_weighted_tau_penalises_top_mistakes_more():
    truth = np.arange(10.0)
    swap_top = truth.copy()
    swap_top[[8, 9]] = swap_top[[9, 8]]
    swap_bottom = truth.copy()
    swap_bottom[[0, 1]] = swap_bottom[[1, 0]]
    assert kendall(swap_top, truth) == pytest.approx(kendall(swap_bottom, truth))
    assert weighted_tau(swap_top, truth) < weighted_tau(swap_bottom, truth)


def test_relative_top1_known_answers():
    assert relative_top1([0.1, 0.9, 0.5], [0.5, 0.8, 0.6]) == pytest.approx(1.0)
    assert relative_top1([0.9, 0.1, 0.5], [0.5, 0.8, 0.6]) == pytest.approx(0.5 / 0.8)
    # ties in scores: the first of the tied models is taken
    assert relative_top1([0.9, 0.9, 0.1], [0.4, 0.8, 0.2]) == pytest.approx(0.5)
    assert relative_top1([0.9, 0.9, 0.1], [0.8, 0.4, 0.2]) == pytest.approx(1.0)
    assert isinstance(relative_top1([1, 2], [1, 2]), float)


def test_relative_top1_nonpositive_truth_raises():
    with pytest.raises(ValueError, match=r"max\(truth\) > 0"):
        relative_top1([1, 2, 3], [-1.0, -2.0, 0.0])


# ----------------------------------------------------------------------------------------------
# Agreement with scipy
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("n", [3, 7, 30])
def test_agrees_with_scipy(seed, n):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    y = 0.5 * x + rng.normal(size=n)
    if seed % 2:  # add ties
        x = np.round(x, 0)
        y = np.round(y, 0)
    assert pearson(x, y) == pytest.approx(stats.pearsonr(x, y).statistic, abs=1e-12)
    assert spearman(x, y) == pytest.approx(stats.spearmanr(x, y).statistic, abs=1e-12)
    assert kendall(x, y) == pytest.approx(stats.kendalltau(x, y).statistic, abs=1e-12)
    assert weighted_tau(x, y) == pytest.approx(stats.weightedtau(x, y).statistic, abs=1e-12)


@settings(max_examples=150, deadline=None)
@given(
    st.lists(st.tuples(st.integers(-3, 3), st.integers(-3, 3)), min_size=2, max_size=25),
    st.sampled_from([1.0, 0.25, 1e-3]),
)
def test_rank_statistics_agree_with_scipy_under_heavy_ties(pairs, scale):
    x = np.array([p[0] for p in pairs], dtype=float) * scale
    y = np.array([p[1] for p in pairs], dtype=float) * scale
    if np.all(x == x[0]) or np.all(y == y[0]):
        assert spearman(x, y) is None and kendall(x, y) is None and weighted_tau(x, y) is None
        return
    assert spearman(x, y) == pytest.approx(stats.spearmanr(x, y).statistic, abs=1e-12)
    assert kendall(x, y) == pytest.approx(stats.kendalltau(x, y).statistic, abs=1e-12)
    assert weighted_tau(x, y) == pytest.approx(stats.weightedtau(x, y).statistic, abs=1e-12)
    assert weighted_tau(x, y, rank_by="scores") == pytest.approx(stats.weightedtau(x, y, rank=None).statistic, abs=1e-12)
    assert weighted_tau(x, y, rank_by="truth") == pytest.approx(stats.weightedtau(y, x, rank=None).statistic, abs=1e-12)


def test_accepts_lists_arrays_and_tensors():
    scores, truth = _strongly_correlated(8)
    expected = correlate(scores, truth, n_boot=50)
    assert correlate(list(scores), list(truth), n_boot=50) == expected
    assert correlate(torch.tensor(scores), torch.tensor(truth), n_boot=50) == expected
    t = torch.tensor(scores, requires_grad=True)
    assert pearson(t, truth) == pytest.approx(expected.pearson)
    assert pearson(np.arange(5), np.arange(5) ** 2) == pytest.approx(stats.pearsonr(np.arange(5), np.arange(5) ** 2)[0])


def test_return_types_are_python_floats():
    scores, truth = _strongly_correlated(6)
    for fn in ALL_STATS:
        assert type(fn(scores, truth)) is float


# ----------------------------------------------------------------------------------------------
# Undefined values
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fn", CORRELATIONS)
@pytest.mark.parametrize("constant_side", ["scores", "truth", "both"])
def test_constant_input_is_none_without_warnings(fn, constant_side):
    varying = [0.1, 0.4, 0.3, 0.9]
    constant = [0.5, 0.5, 0.5, 0.5]
    scores = constant if constant_side in ("scores", "both") else varying
    truth = constant if constant_side in ("truth", "both") else varying
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert fn(scores, truth) is None


def test_correlate_constant_input_without_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = correlate([1.0, 1.0, 1.0, 1.0], [0.2, 0.5, 0.4, 0.3], n_boot=100)
    assert result.pearson is None and result.spearman is None
    assert result.kendall is None and result.weighted_tau is None
    assert result.pearson_ci is None and result.spearman_ci is None and result.kendall_ci is None
    assert result.relative_top1 == pytest.approx(0.2 / 0.5)  # ties -> first model
    for value in result.to_dict().values():
        assert not (isinstance(value, float) and math.isnan(value))


def test_correlate_nonpositive_truth_gives_none_top1():
    result = correlate([1, 2, 3], [-3.0, -2.0, -1.0], n_boot=50)
    assert result.relative_top1 is None
    assert result.spearman == pytest.approx(1.0)


def test_nearly_constant_and_extreme_scales():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert pearson([1e-300, 2e-300, 3e-300], [1, 2, 3]) == pytest.approx(1.0)
        assert pearson([1e300, 2e300, 3e300], [1, 2, 3]) == pytest.approx(1.0)
        assert pearson([1.0, 1.0 + 1e-15, 1.0], [1, 2, 3]) is not None


# ----------------------------------------------------------------------------------------------
# Bootstrap
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["pearson", "spearman", "kendall", "weighted_tau", "relative_top1"])
def test_bootstrap_ci_contains_estimate_and_is_reproducible(name):
    scores, truth = _strongly_correlated(20)
    fn = globals()[name]
    estimate = fn(scores, truth)
    ci = bootstrap_ci(scores, truth, fn, n_boot=500, seed=1)
    assert ci is not None
    lo, hi = ci
    assert lo <= estimate <= hi
    assert -1.0 <= lo <= hi <= 1.0
    assert bootstrap_ci(scores, truth, fn, n_boot=500, seed=1) == ci
    assert bootstrap_ci(scores, truth, name, n_boot=500, seed=1) == ci  # by name too


def test_bootstrap_ci_changes_with_seed():
    rng = np.random.default_rng(3)
    x = rng.normal(size=15)
    y = x + rng.normal(size=15)
    a = bootstrap_ci(x, y, spearman, n_boot=300, seed=0)
    b = bootstrap_ci(x, y, spearman, n_boot=300, seed=1)
    assert a != b


def test_bootstrap_ci_narrows_with_confidence():
    rng = np.random.default_rng(4)
    x = rng.normal(size=15)
    y = x + rng.normal(size=15)
    lo90, hi90 = bootstrap_ci(x, y, pearson, confidence=0.9)
    lo99, hi99 = bootstrap_ci(x, y, pearson, confidence=0.99)
    assert lo99 <= lo90 <= hi90 <= hi99


@pytest.mark.parametrize("name", ["pearson", "spearman", "kendall", "relative_top1"])
def test_vectorised_bootstrap_matches_generic_callable(name):
    rng = np.random.default_rng(5)
    x = np.round(rng.normal(size=6), 1)
    y = np.round(x + rng.normal(size=6), 1) + 5.0
    fn = globals()[name]

    def wrapped(a, b):
        try:
            return fn(a, b)
        except ValueError:
            return None

    fast = bootstrap_ci(x, y, name, n_boot=200, seed=7)
    slow = bootstrap_ci(x, y, wrapped, n_boot=200, seed=7)
    assert fast == pytest.approx(slow, abs=1e-12)


def test_bootstrap_custom_callable_and_none_when_mostly_undefined():
    scores, truth = _strongly_correlated(10)
    ci = bootstrap_ci(scores, truth, lambda s, t: float(np.mean(s - t)), n_boot=200)
    assert ci is not None and ci[0] <= ci[1]
    # a statistic undefined on every resample gives None
    assert bootstrap_ci([1, 2, 3], [1, 2, 3], lambda s, t: None, n_boot=50) is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert bootstrap_ci([1, 2, 3], [5, 5, 5], "pearson", n_boot=200) is None
        # 3 models: a resample is constant with probability 3/27 per vector, so most are valid
        assert bootstrap_ci([1, 2, 3], [1, 3, 2], "kendall", n_boot=200) is not None


def test_bootstrap_none_when_fewer_than_half_valid():
    calls = iter(range(10_000))

    def undefined_on_most(s, t):
        return 0.5 if next(calls) % 10 < 4 else None  # 40% valid

    assert bootstrap_ci([1, 2, 3], [1, 2, 3], undefined_on_most, n_boot=100) is None
    calls = iter(range(10_000))

    def defined_on_half(s, t):
        return 0.5 if next(calls) % 2 == 0 else None  # exactly 50% valid

    assert bootstrap_ci([1, 2, 3], [1, 2, 3], defined_on_half, n_boot=100) == (0.5, 0.5)


# ----------------------------------------------------------------------------------------------
# Bootstrap: known answers (an independent slow bootstrap; exact binomial and normal quantiles)
# ----------------------------------------------------------------------------------------------


def _scipy_statistic(name: str, a: np.ndarray, b: np.ndarray) -> float | None:
    """The statistic on one resample, straight from scipy (None where it is undefined)."""
    if name == "relative_top1":
        best = float(np.max(b))
        return float(b[int(np.argmax(a))] / best) if best > 0 else None
    if np.all(a == a[0]) or np.all(b == b[0]):  # a constant resample: every correlation is undefined
        return None
    if name == "pearson":
        return float(stats.pearsonr(a, b).statistic)
    if name == "spearman":
        return float(stats.spearmanr(a, b).statistic)
    if name == "kendall":
        return float(stats.kendalltau(a, b, variant="b").statistic)
    if name == "weighted_tau":
        return float(stats.weightedtau(a, b).statistic)
    raise AssertionError(name)


def _slow_percentile_bootstrap(scores, truth, name, n_boot, confidence, seed):
    """Textbook percentile bootstrap, one resample at a time: ``n_boot`` resamples of the ``n`` (score, truth)
    pairs with replacement (indices drawn as ``default_rng(seed).integers(0, n, size=(n_boot, n))``), the
    statistic on each, undefined resamples skipped (None if fewer than half are left), then the
    ``(1 - confidence) / 2`` and ``(1 + confidence) / 2`` quantiles."""
    s, t = np.asarray(scores, dtype=float), np.asarray(truth, dtype=float)
    n = len(s)
    idx = np.random.default_rng(seed).integers(0, n, size=(n_boot, n))
    values = []
    for row in idx:
        assert len(row) == n
        v = _scipy_statistic(name, s[row], t[row])
        if v is not None and math.isfinite(v):
            values.append(v)
    if 2 * len(values) < n_boot:
        return None
    tail = 100.0 * (1.0 - confidence) / 2.0
    lo, hi = np.percentile(np.array(values), [tail, 100.0 - tail])
    return float(lo), float(hi)


def _tied_pairs() -> tuple[np.ndarray, np.ndarray]:
    # 4 of the 5 truths are equal: about a third of the resamples have a constant truth and are skipped.
    return np.array([0.3, 0.1, 0.4, 0.2, 0.9]), np.array([0.5, 0.5, 0.5, 0.5, 0.8])


@pytest.mark.parametrize("confidence", [0.95, 0.8])
@pytest.mark.parametrize("name", ["pearson", "spearman", "kendall", "weighted_tau", "relative_top1"])
@pytest.mark.parametrize("data", ["continuous", "tied"])
def test_bootstrap_ci_equals_slow_textbook_bootstrap(name, confidence, data):
    if data == "continuous":
        rng = np.random.default_rng(11)
        scores = rng.normal(size=25)
        truth = 0.6 * scores + rng.normal(size=25) + 3.0
    else:
        scores, truth = _tied_pairs()
    want = _slow_percentile_bootstrap(scores, truth, name, n_boot=400, confidence=confidence, seed=3)
    got = bootstrap_ci(scores, truth, name, n_boot=400, confidence=confidence, seed=3)
    assert want is not None and got is not None
    assert got == pytest.approx(want, abs=1e-12, rel=0)


@pytest.mark.parametrize("confidence", [0.95, 0.9])
def test_correlate_intervals_equal_slow_textbook_bootstrap(confidence):
    rng = np.random.default_rng(12)
    scores = np.round(rng.normal(size=8), 1)  # a few ties
    truth = np.round(scores + rng.normal(size=8), 1)
    result = correlate(scores, truth, n_boot=300, confidence=confidence, seed=4)
    for name in ("pearson", "spearman", "kendall"):
        want = _slow_percentile_bootstrap(scores, truth, name, n_boot=300, confidence=confidence, seed=4)
        assert getattr(result, f"{name}_ci") == pytest.approx(want, abs=1e-12, rel=0), name


def test_bootstrap_ci_is_the_percentile_interval_of_every_resample():
    # Statistic-independent: the callable sees each resample once, each of length n, and the interval is
    # exactly the pair of percentiles of everything it returned.
    scores, truth = _strongly_correlated(13, seed=2)
    seen: list[np.ndarray] = []
    returned: list[float] = []

    def mean_gap(s, t):
        assert s.shape == t.shape == (13,)
        seen.append(s.copy())
        returned.append(float(np.mean(s) - np.mean(t)))
        return returned[-1]

    lo, hi = bootstrap_ci(scores, truth, mean_gap, n_boot=777, confidence=0.9, seed=6)
    assert len(seen) == 777
    assert {len(s) for s in seen} == {13}
    assert (lo, hi) == pytest.approx(tuple(np.percentile(returned, [5.0, 95.0])), abs=1e-15, rel=0)
    # every resample is drawn from the original pairs
    assert all(np.isin(s, scores).all() for s in seen)


def test_bootstrap_ci_of_a_binomial_statistic_is_the_binomial_quantile_interval():
    # Half of the 10 scores are 1, half 0: the number of ones in a resample of size 10 is exactly
    # Binomial(10, 1/2), so with many resamples the percentile interval is the pair of binomial quantiles
    # (integers, as no quantile level is near a jump of the CDF). A resample of the wrong size or the wrong
    # percentile levels moves an end by at least one.
    n, n_boot = 10, 4000
    scores = np.array([1.0, 0.0] * (n // 2))
    truth = np.arange(n, dtype=float)
    law = stats.binom(n, 0.5)
    for confidence, expected in ((0.95, (2.0, 8.0)), (0.8, (3.0, 7.0))):
        levels = ((1 - confidence) / 2, (1 + confidence) / 2)
        for q in levels:  # the empirical quantile is the exact one with overwhelming probability
            gap = min(abs(law.cdf(k) - q) for k in range(n + 1))
            assert gap > 5 * math.sqrt(q * (1 - q) / n_boot)
        assert tuple(law.ppf(levels)) == expected
        got = bootstrap_ci(scores, truth, lambda s, t: float(np.sum(s)), n_boot=n_boot, confidence=confidence, seed=0)
        assert got == expected, confidence


def test_bootstrap_ci_of_a_mean_has_normal_quantile_widths():
    # The bootstrap distribution of a mean of n = 100 values is close to N(mean, sigma^2 / n), sigma^2 the
    # plug-in variance: the 95% interval is ~2 * 1.96 sd wide and the 90% one ~2 * 1.645 sd.
    rng = np.random.default_rng(21)
    scores = rng.normal(size=100)
    truth = rng.normal(size=100)
    sd = float(np.std(scores)) / math.sqrt(len(scores))
    widths = {}
    for confidence in (0.9, 0.95):
        lo, hi = bootstrap_ci(scores, truth, lambda s, t: float(np.mean(s)), n_boot=20_000, confidence=confidence, seed=1)
        assert lo < float(np.mean(scores)) < hi
        widths[confidence] = hi - lo
        z = stats.norm.ppf((1 + confidence) / 2)
        assert widths[confidence] / (2 * sd) == pytest.approx(z, rel=0.03), confidence
    assert widths[0.9] / widths[0.95] == pytest.approx(stats.norm.ppf(0.95) / stats.norm.ppf(0.975), rel=0.03)


# ----------------------------------------------------------------------------------------------
# correlate / Correlation
# ----------------------------------------------------------------------------------------------


def test_correlate_fields_and_to_dict():
    scores, truth = _strongly_correlated(12)
    result = correlate(scores, truth, n_boot=200, confidence=0.9, seed=3)
    assert isinstance(result, Correlation)
    assert result.n == 12 and result.n_boot == 200 and result.confidence == 0.9 and result.seed == 3
    assert result.pearson == pytest.approx(pearson(scores, truth))
    assert result.spearman == pytest.approx(spearman(scores, truth))
    assert result.kendall == pytest.approx(kendall(scores, truth))
    assert result.weighted_tau == pytest.approx(weighted_tau(scores, truth))
    assert result.relative_top1 == pytest.approx(relative_top1(scores, truth))
    assert result.spearman_ci == bootstrap_ci(scores, truth, spearman, n_boot=200, confidence=0.9, seed=3)
    d = result.to_dict()
    assert list(d) == [
        "n", "pearson", "spearman", "kendall", "weighted_tau", "relative_top1",
        "pearson_ci", "spearman_ci", "kendall_ci", "confidence", "n_boot", "seed",
    ]  # fmt: skip
    assert isinstance(d["pearson_ci"], list) and len(d["pearson_ci"]) == 2
    assert json.loads(json.dumps(d)) == d
    with pytest.raises(AttributeError):
        result.n = 3  # frozen


def test_correlate_deterministic_and_two_models():
    scores, truth = _strongly_correlated(9)
    assert correlate(scores, truth, n_boot=100, seed=5) == correlate(scores, truth, n_boot=100, seed=5)
    two = correlate([0.1, 0.2], [0.3, 0.9], n_boot=100)
    assert two.spearman == pytest.approx(1.0)
    assert two.pearson_ci is None and two.spearman_ci is None and two.kendall_ci is None


# ----------------------------------------------------------------------------------------------
# Bad input
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fn", ALL_STATS + [correlate])
@pytest.mark.parametrize(
    ("scores", "truth", "match"),
    [
        ([1, 2, 3], [1, 2], "same length"),
        ([1], [1], "at least 2"),
        ([], [], "at least 2"),
        ([1, float("nan"), 3], [1, 2, 3], "NaN/Inf"),
        ([1, 2, 3], [1, float("inf"), 3], "NaN/Inf"),
        ([[1, 2], [3, 4]], [1, 2], "1-D"),
        (5.0, [1, 2], "1-D"),
        (np.ones((3, 1)), [1, 2, 3], "1-D"),
    ],
)
def test_bad_input_raises(fn, scores, truth, match):
    with pytest.raises(ValueError, match=match):
        fn(scores, truth)


def test_non_numeric_raises_type_error():
    with pytest.raises(TypeError, match="real numbers"):
        pearson(["a", "b", "c"], [1, 2, 3])
    with pytest.raises(TypeError, match="real numbers"):
        pearson([1, None, 3], [1, 2, 3])


def test_bootstrap_bad_arguments():
    x, y = [1.0, 2.0, 3.0, 4.0], [1.0, 3.0, 2.0, 4.0]
    with pytest.raises(ValueError, match="at least 3"):
        bootstrap_ci([1, 2], [1, 2], pearson)
    with pytest.raises(ValueError, match="n_boot"):
        bootstrap_ci(x, y, pearson, n_boot=0)
    with pytest.raises(ValueError, match="n_boot"):
        correlate(x, y, n_boot=-5)
    for bad in (0.0, 1.0, 1.5, -0.1, float("nan")):
        with pytest.raises(ValueError, match="confidence"):
            bootstrap_ci(x, y, pearson, confidence=bad)
        with pytest.raises(ValueError, match="confidence"):
            correlate(x, y, confidence=bad)
    with pytest.raises(ValueError, match="unknown statistic"):
        bootstrap_ci(x, y, "r2")
    with pytest.raises(ValueError, match="same length"):
        bootstrap_ci(x, [1, 2, 3], pearson)
    with pytest.raises(ValueError, match="NaN/Inf"):
        bootstrap_ci(x, [1, 2, 3, float("nan")], pearson)
    with pytest.raises(ValueError, match="rank_by"):
        weighted_tau(x, y, rank_by="model")


# ----------------------------------------------------------------------------------------------
# Properties
# ----------------------------------------------------------------------------------------------

_finite = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, allow_infinity=False)
_pairs = st.integers(min_value=2, max_value=15).flatmap(
    lambda n: st.tuples(st.lists(_finite, min_size=n, max_size=n), st.lists(_finite, min_size=n, max_size=n))
)


@settings(max_examples=50, derandomize=True, deadline=None)
@given(_pairs)
def test_values_in_range_and_never_nan(pair):
    scores, truth = pair
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for fn in CORRELATIONS:
            value = fn(scores, truth)
            assert value is None or (-1.0 <= value <= 1.0)
        if max(truth) > 0:
            assert relative_top1(scores, truth) <= 1.0


@settings(max_examples=50, derandomize=True, deadline=None)
@given(_pairs)
def test_rank_statistics_invariant_under_increasing_transform(pair):
    scores, truth = pair
    s = np.asarray(scores)
    transformed = np.arctan(s / 1e6) * 7.0 + 3.0  # strictly increasing on the domain
    # arctan may merge values that differ by less than float resolution; only check when it didn't
    if len(np.unique(transformed)) == len(np.unique(s)):
        for fn in (spearman, kendall, weighted_tau):
            a, b = fn(scores, truth), fn(transformed, truth)
            assert (a is None and b is None) or a == pytest.approx(b, abs=1e-9)


@settings(max_examples=50, derandomize=True, deadline=None)
@given(st.lists(_finite, min_size=2, max_size=15).filter(lambda v: len(set(v)) > 1))
def test_self_correlation_is_one(x):
    result = correlate(x, x, n_boot=20)
    assert result.spearman == pytest.approx(1.0)
    assert result.kendall == pytest.approx(1.0)
    assert result.weighted_tau == pytest.approx(1.0)
    assert result.pearson == pytest.approx(1.0)


@settings(max_examples=50, derandomize=True, deadline=None)
@given(_pairs)
def test_symmetric_statistics(pair):
    scores, truth = pair
    for fn in (pearson, spearman, kendall):
        a, b = fn(scores, truth), fn(truth, scores)
        assert (a is None and b is None) or a == pytest.approx(b, abs=1e-12)
    neg = [-v for v in truth]
    a, b = spearman(scores, truth), spearman(scores, neg)
    assert (a is None and b is None) or a == pytest.approx(-b, abs=1e-12)


@pytest.mark.parametrize("statistic", ["kendall", "weighted_tau"])
@pytest.mark.parametrize("rank_by", ["both", "scores", "truth"])
def test_scipy_path_for_many_models_equals_the_vectorised_pair_sums(monkeypatch, statistic, rank_by):
    """Above KENDALL_SCIPY_FROM / WEIGHTED_TAU_SCIPY_FROM models the rows go through SciPy one by one; both
    paths must give the same values, ties and constant rows included."""
    import transferlens.evaluation as ev

    rng = np.random.default_rng(5)
    x = np.round(rng.standard_normal((12, 40)), 1)  # many ties
    y = np.round(x + rng.standard_normal((12, 40)), 1)
    x[3] = 1.0  # a constant row: undefined
    y[7] = y[7, 0]

    def rows(a, b):
        if statistic == "kendall":
            return ev._kendall_rows(a, b)
        return ev._weighted_tau_by(a, b, rank_by)

    monkeypatch.setattr(ev, "KENDALL_SCIPY_FROM", 10**9)
    monkeypatch.setattr(ev, "WEIGHTED_TAU_SCIPY_FROM", 10**9)
    pairs = rows(x, y)
    monkeypatch.setattr(ev, "KENDALL_SCIPY_FROM", 2)
    monkeypatch.setattr(ev, "WEIGHTED_TAU_SCIPY_FROM", 2)
    via_scipy = rows(x, y)
    assert np.isnan(pairs[3]) and np.isnan(via_scipy[3]) and np.isnan(pairs[7]) and np.isnan(via_scipy[7])
    np.testing.assert_allclose(via_scipy, pairs, rtol=0, atol=1e-12)


def test_bootstrap_of_many_models_uses_the_fast_path_with_the_same_interval(monkeypatch):
    import transferlens.evaluation as ev

    rng = np.random.default_rng(6)
    s = rng.standard_normal(260)
    t = s + rng.standard_normal(260)
    fast = {name: bootstrap_ci(s, t, name, n_boot=40, seed=1) for name in ("kendall", "weighted_tau")}
    monkeypatch.setattr(ev, "KENDALL_SCIPY_FROM", 10**9)
    monkeypatch.setattr(ev, "WEIGHTED_TAU_SCIPY_FROM", 10**9)
    for name, interval in fast.items():
        assert interval == pytest.approx(bootstrap_ci(s, t, name, n_boot=40, seed=1), abs=1e-12)
