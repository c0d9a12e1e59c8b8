"""The estimator registry as a whole: every entry runs on one fixture, returns finite floats, and its declared
direction ranks a clearly good candidate above a useless one."""

from __future__ import annotations

import inspect
import math

import numpy as np
import pytest
import torch

import transferlens as tl
from transferlens.estimators import registry
from transferlens.estimators.registry import Estimator, estimator_names, get_estimator, register, score, score_zoo

N, C, D = 90, 3, 6
LABELS = np.arange(N) % C


def _candidates() -> tuple[dict, dict]:
    rng = np.random.default_rng(0)
    centres = 4.0 * rng.normal(size=(C, D))
    good_feats = centres[LABELS] + rng.normal(size=(N, D))
    bad_feats = rng.normal(size=(N, D))
    good_probs = np.full((N, 5), 0.05)
    good_probs[np.arange(N), LABELS] = 0.8  # the source head already separates the target classes
    bad_logits = rng.normal(size=(N, 5))
    bad_probs = np.exp(bad_logits) / np.exp(bad_logits).sum(axis=1, keepdims=True)
    good = {"features": good_feats, "source_probs": good_probs, "source_accuracy": 0.9,
            "model": torch.nn.Linear(D, 10)}
    bad = {"features": bad_feats, "source_probs": bad_probs, "source_accuracy": 0.3,
           "model": torch.nn.Linear(D, 2)}
    return good, bad


EXPECTED = {
    "leep", "nce", "logme", "h_score", "shrinkage_h_score", "transrate", "gbc", "nc1", "ncti", "sfda",
    "knn_accuracy", "linear_probe_accuracy", "source_accuracy", "param_count",
}


def test_every_estimator_of_the_spec_is_registered():
    assert EXPECTED <= set(estimator_names())


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_every_entry_is_finite_and_its_direction_ranks_good_above_bad(name):
    est = get_estimator(name)
    good, bad = _candidates()
    values = score_zoo(name, [good, bad], LABELS)
    assert len(values) == 2 and all(isinstance(v, float) and math.isfinite(v) for v in values)
    signed = values if est.greater_is_better else [-v for v in values]
    assert signed[0] > signed[1], f"{name}: good {values[0]}, bad {values[1]}"
    if not est.zoo_relative:
        assert score(name, labels=LABELS, **good) == values[0]


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_entries_describe_their_function(name):
    est = get_estimator(name)
    params = inspect.signature(est.fn).parameters
    assert set(est.needs) <= set(params), "needs are keyword names of the function"
    for option, default in est.options.items():
        assert params[option].default == default, f"{name}: option {option} default differs from the function's"
    assert est.reference and est.summary
    assert getattr(tl, est.fn.__name__) is est.fn, "every estimator function is public"


def test_registry_errors_are_clear():
    good, _ = _candidates()
    with pytest.raises(ValueError, match="unknown estimator 'nope'; choose from"):
        get_estimator("nope")
    with pytest.raises(ValueError, match="needs source_probs"):
        score("leep", labels=LABELS, features=good["features"])
    with pytest.raises(ValueError, match="zoo-relative"):
        score("ncti", labels=LABELS, features=good["features"])
    with pytest.raises(ValueError, match="already registered"):
        register(get_estimator("logme"))
    with pytest.raises(ValueError, match="unknown inputs"):
        Estimator("x", lambda logits: 0.0, needs=("logits",), greater_is_better=True, reference="r", summary="s")
    with pytest.raises(ValueError, match="at least one candidate"):
        score_zoo("logme", [], LABELS)


def test_a_user_estimator_registers_and_a_nan_score_is_refused(monkeypatch):
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))  # leave the real registry untouched

    def spread(features, labels):
        return float(np.ptp(np.asarray(features)))

    register(Estimator("spread", spread, needs=("features", "labels"), greater_is_better=True, reference="me",
                       summary="range of the features"))
    assert "spread" in estimator_names()
    assert score("spread", features=np.array([[0.0], [2.0]]), labels=[0, 1]) == 2.0
    register(Estimator("broken", lambda features, labels: float("nan"), needs=("features", "labels"),
                       greater_is_better=True, reference="me", summary="always NaN"))
    with pytest.raises(FloatingPointError, match="'broken' returned nan"):
        score("broken", features=np.zeros((2, 1)), labels=[0, 1])


def test_alpha_metrics_are_registered_and_rank_the_reference_itself_first():
    """A candidate identical to the reference suffers the reference's own attacks fully (alpha1 = 1); an
    unrelated random network much less."""
    from transferlens.alpha_scores import ALPHA_ESTIMATORS

    torch.manual_seed(0)
    reference = tl.build_model("mlp", (8,), 3, seed=0)
    same = tl.build_model("mlp", (8,), 3, seed=0)
    other = tl.build_model("mlp", (8,), 3, seed=5)
    x = torch.randn(64, 8, generator=torch.Generator().manual_seed(1))
    for name in ALPHA_ESTIMATORS:
        est = get_estimator(name)
        assert est.needs == ("model", "reference", "inputs") and est.greater_is_better and name in estimator_names()
        values = score_zoo(name, [{"model": same, "inputs": x, "reference": reference},
                                  {"model": other, "inputs": x, "reference": reference}])
        assert all(math.isfinite(v) for v in values) and values[0] > values[1], (name, values)
    assert score("alpha1_t2s", model=same, reference=reference, inputs=x) == pytest.approx(1.0, abs=1e-6)
