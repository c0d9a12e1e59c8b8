"""Attacks honour a task's input bounds: ``transferability(..., bounds=task.bounds)`` and the E2 measurement."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

import transferlens.experiments.e2 as e2
from transferlens import adversarial
from transferlens.adversarial import SaturationWarning, resolve_options, transferability
from transferlens.attacks import ThreatModel
from transferlens.data.digits import digits_task
from transferlens.experiments import E2Config, run_e2
from transferlens.models import build_model
from transferlens.training import TrainConfig

EPS = 0.5  # large for [0, 1] images: unclipped, x + delta leaves the box


@pytest.fixture(scope="module")
def digits():
    return digits_task()


@pytest.fixture(scope="module")
def models(digits):
    source = build_model("cnn2d", digits.input_shape, digits.num_classes, seed=0)
    target = build_model("mlp", digits.input_shape, digits.num_classes, seed=1)
    return source, target


def _spy_attacks(monkeypatch: pytest.MonkeyPatch) -> list[tuple[torch.Tensor, torch.Tensor, ThreatModel]]:
    """Record ``(x, delta, threat)`` of every attack that ``transferability`` runs."""
    calls = []
    real = adversarial.pgd

    def spy(model, x, threat, *args, **kwargs):
        delta = real(model, x, threat, *args, **kwargs)
        calls.append((x, delta, threat))
        return delta

    monkeypatch.setattr(adversarial, "pgd", spy)
    return calls


@pytest.mark.filterwarnings("ignore::transferlens.adversarial.SaturationWarning")
def test_attack_with_the_task_bounds_stays_in_the_box(digits, models, monkeypatch):
    assert digits.bounds == (0.0, 1.0)
    lo, hi = digits.bounds
    source, target = models
    x, y = digits.x_test[:64], digits.y_test[:64]
    threat = ThreatModel(norm="linf", eps=EPS, steps=5)
    calls = _spy_attacks(monkeypatch)

    r = transferability(source, target, x, y, threat=threat, bounds=digits.bounds)
    assert r.options["threat"]["bounds"] == [0.0, 1.0]
    assert len(calls) == 2  # one attack per model
    for xin, delta, used in calls:
        assert used.bounds == digits.bounds
        xa = xin + delta
        assert float(xa.min()) >= lo - 1e-6 and float(xa.max()) <= hi + 1e-6
        assert float(delta.abs().max()) <= EPS + 1e-6
    assert r.s2t.saturation is not None and r.t2s.saturation is not None  # measured against the box

    # The same attack without the box leaves [0, 1]: the check above is not vacuous.
    calls.clear()
    free = transferability(source, target, x, y, threat=threat)
    assert free.options["threat"]["bounds"] is None and free.s2t.saturation is None
    assert any(float((xin + d).min()) < lo - 1e-3 or float((xin + d).max()) > hi + 1e-3 for xin, d, _ in calls)


def test_the_threat_models_own_bounds_win(digits, models, monkeypatch):
    source, target = models
    x = digits.x_test[:16]
    calls = _spy_attacks(monkeypatch)
    own = ThreatModel(norm="l2", eps=0.1, steps=2, bounds=(-1.0, 2.0))
    r = transferability(source, target, x, threat=own, bounds=digits.bounds)
    assert r.options["threat"]["bounds"] == [-1.0, 2.0]
    assert all(t.bounds == (-1.0, 2.0) for _, _, t in calls)


def test_bounds_apply_to_the_preset_threat_and_are_validated(digits, models):
    threat, *_ = resolve_options("paper", None, None, None, None, (0, 1))
    assert threat.bounds == (0.0, 1.0) and threat.eps == 0.1 and threat.steps == 1
    threat, *_ = resolve_options("theory", None, None, None, None, None)
    assert threat.bounds is None
    source, target = models
    x = digits.x_test[:8]
    for bad in ((1.0, 0.0), (0.0, math.inf), "box", (0.0,)):
        with pytest.raises(ValueError, match="bounds"):
            transferability(source, target, x, bounds=bad)
    # Inputs outside the box given are refused, as they are for a threat model's own bounds.
    with pytest.raises(ValueError, match="outside the input bounds"):
        transferability(source, target, x + 2.0, bounds=digits.bounds)


def test_saturating_attack_in_the_task_box_warns(digits, models):
    source, target = models
    with pytest.warns(SaturationWarning, match="input bounds"):
        transferability(source, target, digits.x_test[:16], threat=ThreatModel(norm="l2", eps=1e3, steps=2), bounds=digits.bounds)


@pytest.mark.filterwarnings("ignore::transferlens.training.TrainingWarning")
def test_e2_measurement_uses_the_target_task_bounds(monkeypatch):
    """E2 attacks stay in the target task's box when the threat model sets none (MNIST-1D itself has none)."""
    from transferlens.experiments import _zoo

    real_task = _zoo.mnist1d_task
    tasks = []

    def bounded_task(*args, **kwargs):
        task = real_task(*args, **kwargs)
        assert task.bounds is None
        # a box that holds the data, different for every task generated
        lo = math.floor(min(float(task.x_train.min()), float(task.x_test.min()))) - 1.0 - len(tasks)
        hi = math.ceil(max(float(task.x_train.max()), float(task.x_test.max()))) + 1.0
        tasks.append(dataclasses.replace(task, bounds=(lo, hi)))
        return tasks[-1]

    seen = []
    real_transferability = e2.transferability

    def spy(source, target, x, y, **kwargs):
        seen.append((x, kwargs.get("bounds")))
        return real_transferability(source, target, x, y, **kwargs)

    monkeypatch.setattr(_zoo, "mnist1d_task", bounded_task)  # where E2's tasks are generated
    monkeypatch.setattr(e2, "transferability", spy)
    cfg = E2Config(
        source_domains=("reference", "shuffled"), architectures=("mlp", "cnn1d"), num_samples=200, n_eval=20,
        n_boot=10, train=TrainConfig(epochs=1, patience=1),
    )
    assert cfg.threat.bounds is None
    result = run_e2(cfg)
    assert len(seen) == 4 and len(result.sources) == 4
    for x, bounds in seen:
        # the task whose test inputs are attacked is the target task: its box is the one applied
        (owner,) = [t for t in tasks if t.x_test[: len(x)].shape == x.shape and torch.equal(t.x_test[: len(x)], x)]
        assert owner.bounds is not None and bounds == owner.bounds
    assert len({b for _, b in seen}) == 1
    for record in result.sources:
        assert record.transfer.options["threat"]["bounds"] == list(seen[0][1])
