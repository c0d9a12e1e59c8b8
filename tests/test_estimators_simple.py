"""LEEP, NCE, H-score, shrinkage H-score, TransRate, NC1 and the trivial baselines.

Each estimator is checked against a slow textbook implementation written here (explicit loops over
samples and classes, dense D x D matrices, ``np.linalg.pinv`` / ``slogdet``; none calls the code under
test), on hand-computed answers, on properties (bounds, invariances) with hypothesis, on bad input and on
degenerate input (constant / duplicated columns, D > N, a class with one sample).
"""

from __future__ import annotations

import inspect
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.covariance import ledoit_wolf
from torch import nn

from transferlens.estimators.baselines import param_count, source_accuracy
from transferlens.estimators.hscore import h_score, shrinkage_h_score
from transferlens.estimators.leep import leep
from transferlens.estimators.nc1 import nc1
from transferlens.estimators.nce import nce
from transferlens.estimators.registry import get_estimator, score
from transferlens.estimators.transrate import transrate

EPS = np.finfo(np.float64).eps
FEATURE_FNS = [h_score, shrinkage_h_score, transrate, nc1]
PROB_FNS = [leep, nce]
PROPS = settings(max_examples=25, deadline=None)


# -- textbook references (slow, explicit; independent of the package) ---------------------------------


def ref_leep(p: np.ndarray, labels: np.ndarray) -> float:
    classes = sorted(set(labels.tolist()))
    n, cs = p.shape
    joint = np.zeros((len(classes), cs))
    for i in range(n):
        joint[classes.index(labels[i])] += p[i] / n
    total = 0.0
    for i in range(n):
        yi = classes.index(labels[i])
        s = 0.0
        for z in range(cs):
            mass = joint[:, z].sum()
            if mass > 0:
                s += joint[yi, z] / mass * p[i, z]
        total += math.log(s)
    return total / n


def ref_nce(p: np.ndarray, labels: np.ndarray) -> float:
    n = len(labels)
    pairs: dict[tuple[int, int], int] = {}
    zs: dict[int, int] = {}
    for i in range(n):
        z = int(np.argmax(p[i]))
        pairs[(int(labels[i]), z)] = pairs.get((int(labels[i]), z), 0) + 1
        zs[z] = zs.get(z, 0) + 1
    return sum(k / n * math.log(k / zs[z]) for (_, z), k in pairs.items())


def _class_means_rows(f: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """E[F|y]: each row replaced by the mean of its class (explicit loop)."""
    out = np.zeros_like(f)
    for c in set(labels.tolist()):
        rows = [i for i in range(len(labels)) if labels[i] == c]
        out[rows] = f[rows].mean(axis=0)
    return out


def _cov(x: np.ndarray) -> np.ndarray:
    xc = x - x.mean(axis=0)
    return xc.T @ xc / x.shape[0]


def ref_h(f: np.ndarray, labels: np.ndarray) -> float:
    n, d = f.shape
    cov_pinv = np.linalg.pinv(_cov(f), rtol=max(n, d) * EPS)
    return float(np.trace(cov_pinv @ _cov(_class_means_rows(f, labels))))


def ref_shrink(f: np.ndarray, labels: np.ndarray) -> float:
    shrunk, a = ledoit_wolf(f)
    return float(np.trace(np.linalg.inv(shrunk) @ ((1 - a) * _cov(_class_means_rows(f, labels)))))


def ref_transrate(f: np.ndarray, labels: np.ndarray, eps: float) -> float:
    z = f - f.mean(axis=0)
    d = f.shape[1]

    def rate(block: np.ndarray) -> float:
        sign, logdet = np.linalg.slogdet(np.eye(d) + d / (block.shape[0] * eps**2) * block.T @ block)
        assert sign > 0
        return 0.5 * logdet

    out = rate(z)
    for c in set(labels.tolist()):
        block = z[labels == c]
        out -= block.shape[0] / len(labels) * rate(block)
    return out


def ref_nc1(f: np.ndarray, labels: np.ndarray) -> float:
    n, d = f.shape
    classes = sorted(set(labels.tolist()))
    mu = {c: f[labels == c].mean(axis=0) for c in classes}
    mu_g = sum(mu.values()) / len(classes)
    sw = np.zeros((d, d))
    for i in range(n):
        r = f[i] - mu[labels[i]]
        sw += np.outer(r, r) / n
    sb = np.zeros((d, d))
    for c in classes:
        sb += np.outer(mu[c] - mu_g, mu[c] - mu_g) / len(classes)
    return float(np.trace(sw @ np.linalg.pinv(sb, rtol=max(n, d) * EPS)) / len(classes))


# -- data -------------------------------------------------------------------------------------------


def make_features(n: int, d: int, c: int, seed: int, spread: float = 1.0, singleton: bool = False):
    """Gaussian class clusters; labels are arbitrary ids (not 0..C-1); ``singleton``: one class has 1 sample."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % c
    if singleton:
        y = np.where(y == c - 1, 0, y)
        y[rng.integers(n)] = c - 1
    rng.shuffle(y)
    centres = rng.standard_normal((c, d)) * spread
    f = centres[y] + rng.standard_normal((n, d)) * rng.uniform(0.5, 2.0, d)
    ids = np.array([7, -2, 30, 4, 11, 0, 5, 9])[:c]
    return f, ids[y]


def make_probs(n: int, cs: int, c: int, seed: int, singleton: bool = False):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % c
    if singleton:
        y = np.where(y == c - 1, 0, y)
        y[rng.integers(n)] = c - 1
    rng.shuffle(y)
    logits = rng.standard_normal((n, cs)) * rng.uniform(0.3, 4.0)
    logits[np.arange(n), (y * 3) % cs] += rng.uniform(0.0, 3.0)  # some signal
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    return p / p.sum(axis=1, keepdims=True), y + 100


FEATURE_CASES = [  # (N, D, C, seed, singleton)
    (40, 5, 3, 0, False),
    (60, 12, 4, 1, True),
    (30, 80, 3, 2, False),  # D > N
    (25, 40, 5, 3, True),  # D > N with a one-sample class
    (50, 49, 2, 4, False),  # D = N - 1
]


# -- agreement with the references ------------------------------------------------------------------


@pytest.mark.parametrize("n,cs,c,seed,singleton", [(30, 4, 3, 0, False), (50, 10, 5, 1, True), (20, 2, 4, 2, False)])
def test_leep_nce_match_reference(n, cs, c, seed, singleton):
    p, y = make_probs(n, cs, c, seed, singleton)
    assert leep(p, y) == pytest.approx(ref_leep(p, y), rel=1e-10, abs=1e-12)
    assert nce(p, y) == pytest.approx(ref_nce(p, y), rel=1e-10, abs=1e-12)


def test_leep_source_class_without_mass_matches_reference():
    p, y = make_probs(30, 5, 3, 7)
    p = np.hstack([p, np.zeros((30, 2))])  # two source classes never predicted
    value = leep(p, y)
    assert math.isfinite(value)
    assert value == pytest.approx(ref_leep(p, y), rel=1e-10)
    assert value == pytest.approx(leep(p[:, :5], y), rel=1e-12)


@pytest.mark.parametrize("n,d,c,seed,singleton", FEATURE_CASES)
def test_feature_estimators_match_reference(n, d, c, seed, singleton):
    f, y = make_features(n, d, c, seed, singleton=singleton)
    assert h_score(f, y) == pytest.approx(ref_h(f, y), rel=1e-8)
    assert shrinkage_h_score(f, y) == pytest.approx(ref_shrink(f, y), rel=1e-8)
    assert nc1(f, y) == pytest.approx(ref_nc1(f, y), rel=1e-8)
    for eps in (1.0, 0.1):
        assert transrate(f, y, eps=eps) == pytest.approx(ref_transrate(f, y, eps), rel=1e-8)
    # the default eps makes I + D/(N eps^2) Z^T Z ill-conditioned: the dense slogdet itself loses digits
    assert transrate(f, y) == pytest.approx(ref_transrate(f, y, 1e-2), rel=1e-7)


def test_shrinkage_h_score_with_little_shrinkage():
    """N >> D, uncorrelated columns of unequal scale: Ledoit-Wolf picks a small a; shrinking lowers the score."""
    rng = np.random.default_rng(5)
    y = np.arange(400) % 3
    f = rng.standard_normal((400, 3)) * [1.0, 3.0, 10.0] + np.eye(3)[y] * 0.5
    _, a = ledoit_wolf(f)
    assert 0 < a < 0.05
    assert shrinkage_h_score(f, y) == pytest.approx(ref_shrink(f, y), rel=1e-8)
    assert shrinkage_h_score(f, y) < h_score(f, y)


# -- hand-computed answers ---------------------------------------------------------------------------


def test_known_answers_probs():
    # P(y, z) from the 4 rows: y=0 -> [2, 0]/4, y=1 -> [0.5, 1.5]/4; P(z) = [0.625, 0.375]
    # P(y=0|z) = [0.8, 0], P(y=1|z) = [0.2, 1]; expected predictions of the true labels: 0.8, 0.8, 1, 0.6
    p = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.5, 0.5]])
    y = np.array([0, 0, 1, 1])
    assert leep(p, y) == pytest.approx((2 * math.log(0.8) + math.log(0.6)) / 4, rel=1e-14)
    # argmax z = [0, 0, 1, 0] (the tie goes to 0): counts (0,0)=2, (1,0)=1, (1,1)=1; P(z=0) = 3/4
    assert nce(p, y) == pytest.approx(0.5 * math.log(2 / 3) + 0.25 * math.log(1 / 3), rel=1e-14)


def test_known_answers_features():
    f = np.array([[0.0], [2.0], [4.0], [6.0]])
    y = np.array([0, 0, 1, 1])
    # Var F = (9 + 1 + 1 + 9)/4 = 5; class means 1, 5 -> Var E[F|y] = 4; H = 4/5
    assert h_score(f, y) == pytest.approx(0.8, rel=1e-14)
    assert shrinkage_h_score(f, y) == pytest.approx(0.8, rel=1e-14)  # D = 1: no shrinkage
    # Sigma_W = (1 + 1 + 1 + 1)/4 = 1; mu_G = 3, Sigma_B = (4 + 4)/2 = 4; NC1 = (1/2) * 1/4
    assert nc1(f, y) == pytest.approx(0.125, rel=1e-14)
    # eps = 1, D = 1: Z = [-3, -1, 1, 3], R(Z) = 1/2 log(1 + 20/4); class 0 = [-3, -1, 1] -> 1/2 log(1 + 11/3);
    # class 1 = [3] -> 1/2 log(1 + 9)
    want = 0.5 * (math.log(6) - 0.75 * math.log(14 / 3) - 0.25 * math.log(10))
    assert transrate(f, [0, 0, 0, 1], eps=1.0) == pytest.approx(want, rel=1e-13)


def test_h_score_saturates_when_d_at_least_n_minus_1():
    """rank F_c = N - 1: every centred class indicator is a linear function of the features."""
    for n, d, c in [(20, 19, 3), (20, 60, 4)]:
        f, y = make_features(n, d, c, n + d)
        assert h_score(f, y) == pytest.approx(c - 1, rel=1e-10)
        assert 0 < shrinkage_h_score(f, y) < c - 1


# -- properties -------------------------------------------------------------------------------------

sizes = st.tuples(st.integers(6, 40), st.integers(1, 30), st.integers(2, 5), st.integers(0, 2**31 - 1))


def _probs_case(n, cs, c, seed, one_hot_frac=0.0):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % c
    rng.shuffle(y)
    p = rng.dirichlet(np.full(cs, rng.uniform(0.05, 3.0)), size=n)
    hard = rng.random(n) < one_hot_frac
    p[hard] = np.eye(cs)[rng.integers(cs, size=hard.sum())]
    return p, y


@PROPS
@given(st.integers(4, 60), st.integers(2, 12), st.integers(2, 6), st.integers(0, 2**31 - 1), st.floats(0, 1))
def test_leep_nce_bounds(n, cs, c, seed, hard):
    p, y = _probs_case(n, cs, c, seed, hard)
    lv, nv = leep(p, y), nce(p, y)
    assert math.isfinite(lv) and lv <= 0.0
    assert lv >= -math.log(n * cs) - 1e-12
    assert -math.log(c) - 1e-12 <= nv <= 0.0


@PROPS
@given(st.integers(2, 6), st.integers(0, 6), st.integers(1, 8), st.integers(0, 2**31 - 1))
def test_perfect_predictions_score_zero(c, extra, reps, seed):
    """Each target class predicted (one-hot) as its own source class: LEEP = NCE = 0."""
    rng = np.random.default_rng(seed)
    cs = c + extra
    y = np.repeat(np.arange(c), reps)
    rng.shuffle(y)
    own = rng.permutation(cs)[:c]  # target class -> its source class
    p = np.eye(cs)[own[y]]
    assert abs(leep(p, y)) <= 1e-12
    assert abs(nce(p, y)) <= 1e-12


@PROPS
@given(st.integers(2, 6), st.integers(2, 10), st.integers(1, 6), st.integers(0, 2**31 - 1))
def test_useless_predictions(c, cs, reps, seed):
    """Predictions that ignore x (uniform, or any fixed q): LEEP = -H(y) = -log C for balanced classes."""
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(c), reps)
    n = y.size
    assert leep(np.full((n, cs), 1.0 / cs), y) == pytest.approx(-math.log(c), abs=1e-12)
    q = rng.dirichlet(np.ones(cs))
    assert leep(np.tile(q, (n, 1)), y) == pytest.approx(-math.log(c), abs=1e-12)
    y_unbalanced = np.concatenate([y, np.zeros(reps + 1, dtype=int)])
    freq = np.bincount(y_unbalanced) / y_unbalanced.size
    uniform = np.full((y_unbalanced.size, cs), 1.0 / cs)
    assert leep(uniform, y_unbalanced) == pytest.approx(float(np.sum(freq * np.log(freq))), abs=1e-12)
    assert nce(uniform, y_unbalanced) == pytest.approx(float(np.sum(freq * np.log(freq))), abs=1e-12)


def _relabellings(y: np.ndarray, seed: int):
    perm = np.random.default_rng(seed).permutation(int(y.max()) + 1)
    return [perm[y], 10 * y + 3, -y]


@PROPS
@given(st.integers(4, 40), st.integers(2, 8), st.integers(2, 5), st.integers(0, 2**31 - 1))
def test_prob_estimators_invariances(n, cs, c, seed):
    p, y = _probs_case(n, cs, c, seed, one_hot_frac=0.3)
    order = np.random.default_rng(seed + 1).permutation(n)
    for fn in PROB_FNS:
        base = fn(p, y)
        assert fn(p[order], y[order]) == pytest.approx(base, rel=1e-12, abs=1e-14)
        for y2 in _relabellings(y, seed):
            assert fn(p, y2) == pytest.approx(base, rel=1e-12, abs=1e-14)


@PROPS
@given(sizes, st.booleans())
def test_feature_estimators_invariances_and_bounds(size, singleton):
    n, d, c, seed = size
    f, y = make_features(n, d, c, seed, singleton=singleton)
    order = np.random.default_rng(seed + 1).permutation(n)
    values = {fn.__name__: fn(f, y) for fn in FEATURE_FNS}
    for fn in FEATURE_FNS:
        base = values[fn.__name__]
        assert math.isfinite(base)
        assert fn(f[order], y[order]) == pytest.approx(base, rel=1e-8, abs=1e-9)
        for y2 in _relabellings(np.unique(y, return_inverse=True)[1], seed):
            assert fn(f, y2) == pytest.approx(base, rel=1e-8, abs=1e-9)
    assert -1e-9 <= values["h_score"] <= c - 1 + 1e-9
    assert -1e-9 <= values["shrinkage_h_score"] <= values["h_score"] + 1e-9
    assert values["transrate"] >= 0.0
    assert values["nc1"] >= 0.0


@PROPS
@given(sizes)
def test_h_score_and_nc1_invariant_to_redundant_columns(size):
    """Duplicated / linearly dependent columns and constant columns change neither H-score nor NC1."""
    n, d, c, seed = size
    f, y = make_features(n, d, c, seed)
    rng = np.random.default_rng(seed)
    doubled = np.hstack([f, f])
    mixed = f @ rng.standard_normal((d, 2 * d + 1))  # same column space, rank d
    padded = np.hstack([f, np.full((n, 3), 2.7)])
    for g in (doubled, mixed, padded):
        assert h_score(g, y) == pytest.approx(h_score(f, y), rel=1e-6, abs=1e-8)
    for g in (doubled, padded):
        assert nc1(g, y) == pytest.approx(nc1(f, y), rel=1e-6)


# -- bad input --------------------------------------------------------------------------------------

F0, Y0 = make_features(20, 4, 2, 0)
P0, YP = make_probs(20, 3, 2, 0)


@pytest.mark.parametrize("fn", FEATURE_FNS)
def test_feature_estimators_bad_input(fn):
    bad = F0.copy()
    bad[3, 1] = np.nan
    with pytest.raises(ValueError, match="NaN or Inf"):
        fn(bad, Y0)
    with pytest.raises(ValueError, match="2-D array"):
        fn(F0[:, 0], Y0)
    with pytest.raises(ValueError, match="19 entries but there are 20 samples"):
        fn(F0, Y0[:19])
    with pytest.raises(ValueError, match="single class"):
        fn(F0, np.zeros(20))
    with pytest.raises(ValueError, match="integer class ids"):
        fn(F0, Y0 + 0.5)
    with pytest.raises(TypeError, match="numeric"):
        fn([["a", "b"]] * 20, Y0)


@pytest.mark.parametrize("fn", PROB_FNS)
def test_prob_estimators_bad_input(fn):
    with pytest.raises(ValueError, match="must sum to 1"):
        fn(P0 * 0.9, YP)
    with pytest.raises(ValueError, match="look like logits"):
        fn(np.log(P0), YP)
    with pytest.raises(ValueError, match="NaN or Inf"):
        fn(np.where(P0 > 0.5, np.nan, P0), YP)
    with pytest.raises(ValueError, match="21 entries but there are 20 samples"):
        fn(P0, np.append(YP, 100))
    with pytest.raises(ValueError, match="single class"):
        fn(P0, np.full(20, 4))
    with pytest.raises(ValueError, match="at least 2"):
        fn(np.ones((20, 1)), YP)


def test_transrate_eps_is_validated():
    with pytest.raises(ValueError, match="eps must be a finite number > 0"):
        transrate(F0, Y0, eps=0.0)
    with pytest.raises(TypeError, match="eps"):
        transrate(F0, Y0, eps="0.1")


def test_torch_inputs_accepted():
    ft, yt = torch.tensor(F0, dtype=torch.float32), torch.tensor(Y0)
    for fn in FEATURE_FNS:
        assert fn(ft, yt) == pytest.approx(fn(ft.double().numpy(), Y0), rel=1e-12)
    assert leep(torch.tensor(P0), torch.tensor(YP)) == pytest.approx(leep(P0, YP), rel=1e-12)


# -- degenerate input -------------------------------------------------------------------------------


def test_constant_features():
    f = np.full((12, 5), 3.3)
    y = np.arange(12) % 3
    assert h_score(f, y) == 0.0
    assert shrinkage_h_score(f, y) == 0.0
    assert transrate(f, y) == 0.0
    with pytest.raises(ValueError, match="features are constant"):
        nc1(f, y)


def test_features_that_do_not_separate_the_classes():
    """Every class holds the same rows: H = 0 (worst), NC1 a huge finite value (worst), TransRate ~ 0."""
    rng = np.random.default_rng(0)
    base = rng.standard_normal((10, 6)) * 3 + 1
    f = np.vstack([base, base[rng.permutation(10)]])  # the second class's rows in another order
    y = np.repeat([0, 1], 10)
    assert h_score(f, y) == pytest.approx(0.0, abs=1e-12)
    assert shrinkage_h_score(f, y) == pytest.approx(0.0, abs=1e-12)
    assert transrate(f, y) == pytest.approx(0.0, abs=1e-9)
    worst = nc1(f, y)
    assert math.isfinite(worst) and worst > 1e10
    f2, y2 = make_features(20, 6, 2, 1, spread=1e-3)  # barely separated, still better than not at all
    assert nc1(f2, y2) < worst


@pytest.mark.parametrize("fn", FEATURE_FNS)
def test_degenerate_features_give_finite_scores(fn):
    f, y = make_features(15, 200, 3, 9, singleton=True)  # D >> N and a one-sample class
    f[:, 50:100] = f[:, :50]  # duplicated columns
    f[:, 100] = -1.0  # a constant column
    assert math.isfinite(fn(f, y))
    tiny = make_features(30, 4, 2, 3)[0] * 1e-150  # scale at the edge of float64
    assert math.isfinite(fn(tiny, np.arange(30) % 2))


def test_two_samples():
    """N = 2, D = 3: rank-1 covariance, Ledoit-Wolf's a is 0, so only the rank cutoff keeps 0/0 away."""
    f, y = [[0.0, 1.0, 2.0], [3.0, 5.0, 7.0]], [0, 1]
    assert h_score(f, y) == pytest.approx(1.0, rel=1e-12)
    assert shrinkage_h_score(f, y) == pytest.approx(1.0, rel=1e-12)
    assert nc1(f, y) == 0.0  # each class is one point: total collapse
    assert transrate(f, y) == pytest.approx(0.0, abs=1e-12)  # each class block is one row of +-z


@pytest.mark.parametrize("fn", FEATURE_FNS)
def test_large_common_offset(fn):
    """Features riding on a large offset (1e12: the data itself keeps ~1e-4 of its digits) score the same."""
    f, y = make_features(60, 5, 3, 11)
    assert fn(f + 1e12, y) == pytest.approx(fn(f, y), rel=1e-3)


def test_nc1_bound_for_barely_separated_directions():
    """A between-class direction below the float64 resolution tau of the total spread is floored at tau,
    so NC1 <= tr(Sigma_W) / (C tau), the value returned when the class means coincide."""
    rng = np.random.default_rng(3)
    y = np.arange(30) % 3
    noise = rng.standard_normal((30, 2))
    for c in range(3):
        noise[y == c] -= noise[y == c].mean(axis=0)
    f = noise + np.array([[0.01, 0.0], [-0.01, 0.0], [0.0, 2e-8]])[y]  # 2nd direction: eigenvalue ~ 1e-16
    n, d = f.shape
    total = np.sum((f - f.mean(axis=0)) ** 2) / n
    tau = max(n, d) * EPS * total
    cap = np.sum(noise**2) / n / (3 * tau)
    assert ref_nc1(f, y) > 2 * cap  # the textbook formula overshoots: it trusts the unresolvable direction
    assert 0.1 * cap < nc1(f, y) <= cap * (1 + 1e-9)


def test_extreme_magnitudes():
    """H-scores and NC1 are scale invariant -- also where squares (or column sums) overflow float64;
    TransRate stays finite (it is not scale invariant: scale enters against eps)."""
    f, y = make_features(50, 6, 4, 0)
    for fn in (h_score, shrinkage_h_score, nc1):
        base = fn(f, y)
        for scale in (1e-300, 1e-150, 1e150, 3e306):
            assert fn(f * scale, y) == pytest.approx(base, rel=1e-10)
    for scale in (1e-300, 1e150, 3e306):
        assert 0.0 <= transrate(f * scale, y) < 1e3
    assert transrate(f * 1e150, y) == pytest.approx(transrate(f * 1e200, y), rel=1e-10)  # the large-scale limit


def test_scores_are_python_floats():
    for fn in FEATURE_FNS:
        assert type(fn(F0, Y0)) is float
    for fn in PROB_FNS:
        assert type(fn(P0, YP)) is float


# -- baselines --------------------------------------------------------------------------------------


def test_source_accuracy_baseline():
    assert source_accuracy(0.761) == 0.761
    assert source_accuracy(np.float32(0.5)) == 0.5
    assert source_accuracy(torch.tensor(1.0)) == 1.0
    with pytest.raises(ValueError, match="fraction"):
        source_accuracy(76.1)
    for bad in (-0.1, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="source_accuracy"):
            source_accuracy(bad)
    for bad in (True, "0.7", None):
        with pytest.raises(TypeError, match="source_accuracy"):
            source_accuracy(bad)


def test_param_count_baseline():
    lin = nn.Linear(4, 3)  # 12 weights + 3 biases
    assert param_count(lin) == 15.0
    shared = nn.Sequential(lin, nn.ReLU(), lin)  # shared parameters count once
    assert param_count(shared) == 15.0
    assert param_count(nn.Sequential(nn.Linear(4, 3), nn.Linear(3, 2))) == 15.0 + 8.0
    with pytest.raises(TypeError, match="nn.Module"):
        param_count(lambda x: x)


# -- registration -----------------------------------------------------------------------------------

ENTRIES = {  # name -> (function, needs, greater_is_better, options)
    "leep": (leep, ("source_probs", "labels"), True, {}),
    "nce": (nce, ("source_probs", "labels"), True, {}),
    "h_score": (h_score, ("features", "labels"), True, {}),
    "shrinkage_h_score": (shrinkage_h_score, ("features", "labels"), True, {}),
    "transrate": (transrate, ("features", "labels"), True, {"eps": 1e-2}),
    "nc1": (nc1, ("features", "labels"), False, {}),
    "source_accuracy": (source_accuracy, ("source_accuracy",), True, {}),
    "param_count": (param_count, ("model",), True, {}),
}


@pytest.mark.parametrize("name", list(ENTRIES))
def test_registration(name):
    fn, needs, greater, options = ENTRIES[name]
    est = get_estimator(name)
    assert est.fn is fn
    assert tuple(est.needs) == needs
    assert est.greater_is_better is greater
    assert not est.zoo_relative
    assert dict(est.options) == options
    assert est.reference and est.summary
    params = inspect.signature(fn).parameters
    assert [p for p in params if p not in options] == list(needs)  # needs are exactly the inputs it takes
    assert {k: params[k].default for k in options} == options  # the recorded defaults are the real ones


def test_score_through_registry():
    assert score("h_score", features=F0, labels=Y0, source_probs=None) == h_score(F0, Y0)
    assert score("transrate", features=F0, labels=Y0, options={"eps": 0.5}) == transrate(F0, Y0, eps=0.5)
    assert score("leep", source_probs=P0, labels=YP) == leep(P0, YP)
    assert score("param_count", model=nn.Linear(2, 2)) == 6.0
