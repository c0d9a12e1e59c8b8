"""Training regimes: PGD adversarial training and TRADES through fit(), with real, seeded checks."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch.nn import functional as F

import transferlens as tl
from transferlens.attacks import ThreatModel
from transferlens.regimes import PGDAdversarial, Standard, Trades, attack, regime_from_dict, robust_accuracy


@pytest.fixture(scope="module")
def task():
    return tl.mnist1d_task("reference", num_samples=2000, seed=1)


EPS = 0.3


@pytest.fixture(scope="module")
def trained(task):
    out = {}
    for name, regime in (("standard", None), ("pgd_at", PGDAdversarial(eps=EPS, steps=5))):
        model = tl.build_model("mlp", task.input_shape, 10, seed=0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", tl.TrainingWarning)
            result = tl.fit(model, task, epochs=15, device="cpu", regime=regime)
        out[name] = (model, result)
    return out


def test_adversarial_training_raises_pgd_accuracy_at_its_eps(task, trained):
    threat = ThreatModel(norm="linf", eps=EPS, steps=10)
    robust = {k: robust_accuracy(m, task.x_test, task.y_test, threat) for k, (m, _) in trained.items()}
    assert robust["pgd_at"] > robust["standard"] + 0.08, robust
    assert trained["pgd_at"][1].regime == {"name": "pgd_at", "eps": EPS, "steps": 5, "step_size": None,
                                           "norm": "linf", "random_start": True}
    # a vanishing radius measures the clean accuracy
    model, result = trained["standard"]
    tiny = robust_accuracy(model, task.x_test, task.y_test, ThreatModel(norm="linf", eps=1e-9, steps=1))
    assert tiny == pytest.approx(result.test_accuracy)


def test_adversarial_training_is_deterministic(task):
    small = tl.Task("small", task.x_train[:300], task.y_train[:300], task.x_test[:50], task.y_test[:50], 10)
    runs = []
    for _ in range(2):
        model = tl.build_model("mlp", small.input_shape, 10, seed=3)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", tl.TrainingWarning)
            r = tl.fit(model, small, epochs=2, device="cpu", regime=Trades(eps=0.2, steps=2, beta=3.0))
        runs.append((r.train_loss, [p.detach().clone() for p in model.parameters()]))
    assert runs[0][0] == runs[1][0]
    assert all(torch.equal(a, b) for a, b in zip(runs[0][1], runs[1][1]))


def test_trades_with_beta_zero_is_standard_training(task):
    small = tl.Task("small", task.x_train[:300], task.y_train[:300], task.x_test[:50], task.y_test[:50], 10)
    results = []
    for regime in (Standard(), Trades(beta=0.0, eps=0.2)):
        model = tl.build_model("mlp", small.input_shape, 10, seed=2)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", tl.TrainingWarning)
            results.append(tl.fit(model, small, epochs=3, device="cpu", regime=regime))
    assert results[0].train_loss == results[1].train_loss and results[0].val_loss == results[1].val_loss
    model = tl.build_model("mlp", small.input_shape, 10, seed=2)
    x, y = small.x_train[:32], small.y_train[:32]
    assert float(Trades(beta=0.0).loss(model, x, y, seed=0).detach()) == pytest.approx(float(F.cross_entropy(model(x), y).detach()), rel=1e-7)
    # with beta > 0 the robust term is a KL (>= 0) added to the same cross-entropy
    assert float(Trades(beta=2.0, eps=0.2).loss(model, x, y, seed=0).detach()) >= float(F.cross_entropy(model(x), y).detach()) - 1e-6


def test_the_training_attack_stays_in_the_ball_and_is_per_sample(task):
    model = tl.build_model("mlp", task.input_shape, 10, seed=0)
    x, y = task.x_test[:16], task.y_test[:16]
    threat = PGDAdversarial(eps=0.25, steps=4).threat()
    x_before = x.clone()

    def objective(xa, yb=y):
        return F.cross_entropy(model(xa), yb, reduction="none")

    delta = attack(model, x, objective, threat, seed=7)
    assert torch.equal(x, x_before)
    assert float(delta.abs().max()) <= 0.25 + 1e-6
    one_by_one = torch.cat([attack(model, x[i : i + 1], lambda xa, i=i: objective(xa, y[i : i + 1]), threat, seed=7)
                            for i in range(len(x))])
    assert torch.allclose(delta, one_by_one, atol=1e-6)
    boxed = attack(model, x, objective, PGDAdversarial(eps=0.25, steps=4).threat(bounds=(-1.0, 1.0)), seed=7)
    assert float((x + boxed).max()) <= 1.0 + 1e-6 and float((x + boxed).min()) >= -1.0 - 1e-6


def test_bad_regimes_are_refused_before_training():
    digits = tl.digits_task("none")  # inputs in [0, 1]
    model = tl.build_model("mlp", digits.input_shape, 10, seed=0)
    before = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(ValueError, match="at least half the input range"):
        tl.fit(model, digits, epochs=1, device="cpu", regime=PGDAdversarial(eps=0.6))
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
    with pytest.raises(TypeError, match="regime must be a transferlens Regime"):
        tl.fit(model, digits, epochs=1, device="cpu", regime="pgd_at")
    with pytest.raises(ValueError, match="beta"):
        Trades(beta=-1.0)
    with pytest.raises(ValueError, match="eps"):
        PGDAdversarial(eps=0.0)
    with pytest.raises(ValueError, match="unknown training regime 'mixup'"):
        regime_from_dict({"name": "mixup"})
    with pytest.raises(ValueError, match=r"no option\(s\) \['gamma'\]"):
        regime_from_dict({"name": "trades", "gamma": 1.0})
    assert regime_from_dict(Trades(beta=2.0, eps=0.1).to_dict()) == Trades(beta=2.0, eps=0.1)
    assert regime_from_dict({"name": "standard"}) == Standard()


def test_a_train_cell_carries_its_regime_in_its_key():
    from transferlens.experiments import _zoo
    from transferlens.runs.context import Context
    from transferlens.runs.spec import Cell

    task = {"generator": "mnist1d", "domain": "reference", "num_samples": 300, "draw": "source", "seed": 0}
    base = {"epochs": 1, "batch_size": 64, "lr": 3e-3, "weight_decay": 0.0, "val_fraction": 0.2, "patience": 1, "seed": 0}
    cells = [Cell.make("train", {"task": task, "arch": "mlp", "regime": {"name": name, **extra, **base}})
             for name, extra in (("standard", {}), ("pgd_at", {"eps": 0.2, "steps": 2}), ("pgd_at", {"eps": 0.3, "steps": 2}))]
    assert len({c.key for c in cells}) == 3
    ctx = Context(device="cpu")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", tl.TrainingWarning)
        out = _zoo.train_cell(cells[1], ctx)
    assert out.value.regime == {"name": "pgd_at", "eps": 0.2, "steps": 2, "step_size": None, "norm": "linf",
                                "random_start": True}
    assert out.value.config.epochs == 1 and out.value.config.batch_size == 64
    bad = Cell.make("train", {"task": task, "arch": "mlp", "regime": {"name": "mixup", **base}})
    with pytest.raises(ValueError, match="unknown training regime 'mixup'"):
        _zoo.train_cell(bad, ctx)
