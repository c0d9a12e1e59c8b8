"""Self-training: only confident predictions become pseudo-labels; the hidden labels never train the model."""

from __future__ import annotations

import warnings

import pytest
import torch

import transferlens as tl
from transferlens import selftrain
from transferlens.regimes import PGDAdversarial


@pytest.fixture(scope="module")
def task():
    return tl.mnist1d_task("reference", num_samples=800, seed=2)


def _quiet_fit(*args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", tl.TrainingWarning)
        return tl.fit(*args, **kwargs)


def test_only_predictions_above_the_threshold_are_used(task, monkeypatch):
    seen = []

    def spy(model, sub, config=None, **kwargs):
        if seen:  # a pseudo-labelling round: check the added samples against the model as it is now
            n_lab = seen[0]
            extra_x, extra_y = sub.x_train[n_lab:], sub.y_train[n_lab:]
            with torch.no_grad():
                probs = torch.softmax(model.eval()(unlabeled_x).double(), dim=1)
            conf, pred = probs.max(1)
            keep = conf >= 0.6
            assert torch.equal(extra_x, unlabeled_x[keep]) and torch.equal(extra_y, pred[keep])
            assert len(extra_x) < len(unlabeled_x)  # some predictions were not confident enough
        seen.append(len(sub.x_train))
        return _quiet_fit(model, sub, config, **kwargs)

    perm = torch.randperm(len(task.x_train), generator=torch.Generator().manual_seed(5))
    n_lab = int(round(0.25 * len(task.x_train)))
    unlabeled_x = task.x_train[perm[n_lab:]]
    monkeypatch.setattr(selftrain, "fit", spy)
    model = tl.build_model("mlp", task.input_shape, 10, seed=0)
    r = selftrain.self_train(model, task, labeled_fraction=0.25, threshold=0.6, rounds=2, seed=5, device="cpu",
                             config=tl.TrainConfig(epochs=5))
    assert len(seen) == 3 and seen[0] == n_lab == r.n_labeled
    assert [h["n_pseudo"] for h in r.rounds] == [s - n_lab for s in seen[1:]]
    for h in r.rounds:
        assert 0 <= h["n_pseudo"] <= r.n_unlabeled and (h["pseudo_accuracy"] is None or 0 <= h["pseudo_accuracy"] <= 1)


def test_self_training_is_deterministic_and_combines_with_adversarial_training(task):
    runs = []
    for _ in range(2):
        model = tl.build_model("mlp", task.input_shape, 10, seed=1)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", tl.TrainingWarning)
            runs.append(tl.self_train(model, task, rounds=1, config=tl.TrainConfig(epochs=2), device="cpu",
                                      regime=PGDAdversarial(eps=0.2, steps=2)))
    assert runs[0].rounds == runs[1].rounds and runs[0].train.train_loss == runs[1].train.train_loss
    assert runs[0].options["regime"]["name"] == "pgd_at"


def test_zero_rounds_is_supervised_training_on_the_same_labeled_split(task, monkeypatch):
    """rounds=0 trains once on exactly the labeled part that a self-training run with the same seed starts from."""
    seen = []

    def spy(model, sub, config=None, **kwargs):
        seen.append((sub.x_train.clone(), sub.y_train.clone()))
        return _quiet_fit(model, sub, config, **kwargs)

    monkeypatch.setattr(selftrain, "fit", spy)
    cfg = tl.TrainConfig(epochs=2)
    base = selftrain.self_train(tl.build_model("mlp", task.input_shape, 10, seed=0), task, labeled_fraction=0.3,
                                rounds=0, seed=7, config=cfg, device="cpu")
    assert len(seen) == 1 and base.rounds == () and base.n_labeled == len(seen[0][0])
    selftrain.self_train(tl.build_model("mlp", task.input_shape, 10, seed=0), task, labeled_fraction=0.3, rounds=1,
                         seed=7, config=cfg, device="cpu")
    assert len(seen) == 3 and torch.equal(seen[0][0], seen[1][0]) and torch.equal(seen[0][1], seen[1][1])
    perm = torch.randperm(len(task.x_train), generator=torch.Generator().manual_seed(7))[: base.n_labeled]
    assert torch.equal(seen[0][0], task.x_train[perm]) and torch.equal(seen[0][1], task.y_train[perm])


@pytest.mark.parametrize("kwargs, match", [
    ({"threshold": 0.0}, "threshold"), ({"threshold": 1.0}, "threshold"), ({"threshold": 1.5}, "threshold"),
    ({"labeled_fraction": 1.0}, "labeled_fraction"), ({"labeled_fraction": 0.9995}, "empty unlabeled split"),
    ({"rounds": -1}, "rounds"),
])
def test_bad_options_are_refused_before_training(task, kwargs, match):
    model = tl.build_model("mlp", task.input_shape, 10, seed=0)
    before = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(ValueError, match=match):
        tl.self_train(model, task, device="cpu", **kwargs)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
