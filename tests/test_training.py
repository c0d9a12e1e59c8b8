"""Tests for ``transferlens.training``: ``fit``, ``TrainConfig``, ``TrainResult`` and ``accuracy``."""

from __future__ import annotations

import copy
import json
import math
from dataclasses import FrozenInstanceError, dataclass
from typing import Any

import pytest
import torch
from torch import nn

from transferlens.data.mnist1d import mnist1d_task
from transferlens.data.task import Task
from transferlens.models import FeatureModel, build_model
from transferlens.training import TrainConfig, TrainResult, accuracy, fit

from helpers import same_state


@pytest.fixture(scope="module")
def small() -> Task:
    return mnist1d_task(num_samples=400)  # 320 train / 80 test


def _tiny_task(n_train: int = 12, n_test: int = 6, dim: int = 4, k: int = 3) -> Task:
    g = torch.Generator().manual_seed(0)
    return Task(
        name="tiny",
        x_train=torch.randn(n_train, dim, generator=g),
        y_train=torch.arange(n_train) % k,
        x_test=torch.randn(n_test, dim, generator=g),
        y_test=torch.arange(n_test) % k,
        num_classes=k,
    )


@dataclass
class Trained:
    model: nn.Module
    result: TrainResult
    calls: list[tuple[int, float, float]]
    snapshots: list[dict[str, torch.Tensor]]


@pytest.fixture(scope="module")
def trained() -> Trained:
    """A cnn1d trained on a 1000-sample MNIST-1D task (800 train / 200 test), ~0.3 s."""
    task = mnist1d_task(num_samples=1000)
    model = build_model("cnn1d", task.input_shape, 10, seed=0)
    calls: list[tuple[int, float, float]] = []
    snapshots: list[dict[str, torch.Tensor]] = []

    def on_epoch(epoch: int, train_loss: float, val_loss: float) -> None:
        calls.append((epoch, train_loss, val_loss))
        snapshots.append(copy.deepcopy(model.state_dict()))

    model.train()
    result = fit(
        model, task, TrainConfig(epochs=10, batch_size=64, lr=1e-2, patience=100), device="cpu", on_epoch=on_epoch
    )
    return Trained(model, result, calls, snapshots)


# --------------------------------------------------------------------------------------------- fit


def test_learns_well_above_chance(trained: Trained) -> None:
    r = trained.result
    assert r.epochs_run == 10
    assert r.test_accuracy > 0.3, r
    assert r.val_accuracy > 0.2, r
    assert r.train_loss[-1] < r.train_loss[0]
    assert min(r.val_loss) < r.val_loss[0]


def test_result_fields_consistent(trained: Trained) -> None:
    r = trained.result
    assert r.task == "mnist1d-reference"
    assert len(r.train_loss) == len(r.val_loss) == r.epochs_run
    assert 1 <= r.best_epoch <= r.epochs_run
    assert all(math.isfinite(v) and v > 0 for v in r.train_loss + r.val_loss)
    assert 0.0 <= r.val_accuracy <= 1.0 and 0.0 <= r.test_accuracy <= 1.0
    # the best epoch is the one with the lowest validation loss (1e-6 improvement threshold)
    assert r.val_loss[r.best_epoch - 1] <= min(r.val_loss) + 1e-6
    assert r.config == TrainConfig(epochs=10, batch_size=64, lr=1e-2, patience=100)


def test_test_accuracy_matches_accuracy_helper(trained: Trained) -> None:
    task = mnist1d_task(num_samples=1000)
    assert trained.result.test_accuracy == accuracy(trained.model, task.x_test, task.y_test)


def test_model_left_in_eval_mode(trained: Trained) -> None:
    assert not trained.model.training
    assert not any(m.training for m in trained.model.modules())
    assert all(p.requires_grad for p in trained.model.parameters())


def test_on_epoch_called_once_per_epoch(trained: Trained) -> None:
    r = trained.result
    assert len(trained.calls) == r.epochs_run
    assert [c[0] for c in trained.calls] == list(range(1, r.epochs_run + 1))
    assert tuple(c[1] for c in trained.calls) == r.train_loss
    assert tuple(c[2] for c in trained.calls) == r.val_loss


def test_best_weights_restored(trained: Trained) -> None:
    best = trained.snapshots[trained.result.best_epoch - 1]
    assert same_state(trained.model.state_dict(), best)


def test_deterministic(small: Task) -> None:
    cfg = TrainConfig(epochs=3, batch_size=64, lr=3e-3, seed=5)
    models, results = [], []
    for global_seed in (1, 2):  # the global RNG must not matter
        torch.manual_seed(global_seed)
        model = build_model("cnn1d", small.input_shape, 10, seed=7)
        results.append(fit(model, small, cfg, device="cpu"))
        models.append(model)
    assert same_state(models[0].state_dict(), models[1].state_dict())
    assert results[0] == results[1]
    assert results[0].to_dict() == results[1].to_dict()


def test_different_training_seed_differs(small: Task) -> None:
    states = []
    for seed in (0, 1):
        model = build_model("mlp", small.input_shape, 10, seed=0, hidden=(16,))
        fit(model, small, epochs=2, seed=seed, device="cpu")
        states.append(model.state_dict())
    assert not same_state(*states)


def test_early_stopping_when_val_loss_stalls(small: Task) -> None:
    # lr so tiny that the validation loss never improves by more than 1e-6 after epoch 1
    model = build_model("mlp", small.input_shape, 10, seed=0, hidden=(16,))
    calls: list[int] = []
    r = fit(model, small, epochs=50, lr=1e-12, patience=2, device="cpu", on_epoch=lambda e, *_: calls.append(e))
    assert r.best_epoch == 1
    assert r.epochs_run == 3 < 50
    assert calls == [1, 2, 3]
    assert not model.training


def test_early_stopping_on_overfitting(small: Task) -> None:
    model = build_model("cnn1d", small.input_shape, 10, seed=0)
    snaps: list[dict[str, torch.Tensor]] = []
    r = fit(
        model, small, epochs=60, batch_size=64, lr=1e-2, patience=3, device="cpu",
        on_epoch=lambda *_: snaps.append(copy.deepcopy(model.state_dict())),
    )
    assert r.epochs_run < 60
    assert r.epochs_run == r.best_epoch + 3
    assert all(v >= r.val_loss[r.best_epoch - 1] - 1e-6 for v in r.val_loss[r.best_epoch :])
    assert same_state(model.state_dict(), snaps[r.best_epoch - 1])
    assert not same_state(model.state_dict(), snaps[-1])


def test_overrides_merge_into_config(small: Task) -> None:
    model = build_model("mlp", small.input_shape, 10, seed=0, hidden=(8,))
    r = fit(model, small, TrainConfig(batch_size=32, seed=3), epochs=1, device="cpu")
    assert r.config == TrainConfig(epochs=1, batch_size=32, seed=3)
    assert r.epochs_run == 1


def test_unknown_override_rejected(small: Task) -> None:
    model = build_model("mlp", small.input_shape, 10, seed=0, hidden=(8,))
    with pytest.raises(TypeError, match="learning_rate"):
        fit(model, small, epochs=1, learning_rate=0.1, device="cpu")


def test_invalid_override_rejected(small: Task) -> None:
    model = build_model("mlp", small.input_shape, 10, seed=0, hidden=(8,))
    with pytest.raises(ValueError, match="lr must be a finite number > 0"):
        fit(model, small, lr=0.0, device="cpu")


def test_extra_outputs_allowed() -> None:
    task = _tiny_task()
    model = build_model("mlp", task.input_shape, 5, seed=0, hidden=(4,))
    r = fit(model, task, epochs=2, batch_size=4, device="cpu")
    assert r.epochs_run == 2


def test_fewer_outputs_than_classes_rejected(small: Task) -> None:
    model = build_model("mlp", small.input_shape, 5, seed=0, hidden=(8,))
    with pytest.raises(ValueError, match="model has 5 outputs but task 'mnist1d-reference' has 10 classes"):
        fit(model, small, epochs=1, device="cpu")


def test_model_that_cannot_process_inputs_rejected(small: Task) -> None:
    model = build_model("mlp", (7,), 10, seed=0)
    with pytest.raises(ValueError, match="could not process inputs of shape"):
        fit(model, small, epochs=1, device="cpu")


def test_model_with_non_2d_outputs_rejected() -> None:
    task = _tiny_task()
    model = nn.Sequential(nn.Linear(4, 3), nn.Unflatten(1, (3, 1)))
    with pytest.raises(ValueError, match="2-D"):
        fit(model, task, epochs=1, device="cpu")


def test_too_few_samples_for_validation_split() -> None:
    task = Task("one", torch.zeros(1, 2), torch.tensor([0]), torch.zeros(1, 2), torch.tensor([1]), 2)
    with pytest.raises(ValueError, match="too few training samples"):
        fit(nn.Linear(2, 2), task, epochs=1, device="cpu")


# --------------------------------------------------------------------------------------------- TrainConfig


def test_config_defaults() -> None:
    cfg = TrainConfig()
    assert (cfg.epochs, cfg.batch_size, cfg.lr, cfg.weight_decay, cfg.val_fraction, cfg.patience, cfg.seed) == (
        100, 128, 3e-3, 1e-4, 0.1, 10, 0,
    )
    assert TrainConfig(weight_decay=0.0).weight_decay == 0.0


@pytest.mark.parametrize("name", ["epochs", "batch_size", "patience"])
@pytest.mark.parametrize("value", [0, -1, 2.0, "3", None])
def test_config_positive_integers(name: str, value: Any) -> None:
    with pytest.raises(ValueError, match=f"{name} must be an integer >= 1"):
        TrainConfig(**{name: value})


@pytest.mark.parametrize("lr", [0.0, -1e-3, float("nan"), float("inf"), True, "0.1"])
def test_config_lr(lr: Any) -> None:
    with pytest.raises(ValueError, match="lr must be a finite number > 0"):
        TrainConfig(lr=lr)


@pytest.mark.parametrize("val_fraction", [0.0, 1.0, -0.2, 1.3, float("nan")])
def test_config_val_fraction(val_fraction: float) -> None:
    with pytest.raises(ValueError, match=r"val_fraction must be in \(0, 1\)"):
        TrainConfig(val_fraction=val_fraction)


@pytest.mark.parametrize("wd", [-1e-4, -1.0])
def test_config_negative_weight_decay(wd: float) -> None:
    with pytest.raises(ValueError, match="weight_decay must be a finite number >= 0"):
        TrainConfig(weight_decay=wd)


@pytest.mark.parametrize("wd", [float("inf"), float("nan")])
def test_config_non_finite_weight_decay(wd: float) -> None:
    with pytest.raises(ValueError, match="weight_decay"):
        TrainConfig(weight_decay=wd)


def test_config_frozen() -> None:
    with pytest.raises(FrozenInstanceError, match="cannot assign to field 'epochs'"):
        TrainConfig().epochs = 3  # type: ignore[misc]


# --------------------------------------------------------------------------------------------- TrainResult


def test_result_to_dict_json_serializable(trained: Trained) -> None:
    d = trained.result.to_dict()
    back = json.loads(json.dumps(d))
    assert back["epochs_run"] == trained.result.epochs_run
    assert back["train_loss"] == list(trained.result.train_loss)
    assert back["val_loss"] == list(trained.result.val_loss)
    assert back["config"]["epochs"] == 10 and back["config"]["lr"] == 1e-2
    assert set(back) == {
        "task", "epochs_run", "best_epoch", "val_accuracy", "test_accuracy", "train_loss", "val_loss", "config",
        "initial_val_loss", "regime",
    }
    assert back["regime"] == {"name": "standard"}


# --------------------------------------------------------------------------------------------- accuracy


class _Pick(nn.Module):
    """Outputs the input itself: the predicted class is the argmax of the input row."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale


def test_accuracy_known_answer() -> None:
    x = torch.tensor([[1.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, 3.0], [5.0, 1.0, 0.0]])
    y = torch.tensor([0, 1, 0, 2])  # right, right, wrong, wrong
    model = _Pick()
    assert accuracy(model, x, y) == 0.5
    assert accuracy(model, x, y, batch_size=1) == 0.5
    assert accuracy(model, x[:2], y[:2]) == 1.0
    assert accuracy(model, x[2:], y[2:]) == 0.0


def test_accuracy_restores_mode_and_grad() -> None:
    model = nn.Sequential(nn.Linear(3, 3), nn.Dropout(0.5))
    model.train()
    x = torch.eye(3)
    y = torch.tensor([0, 1, 2])
    first = accuracy(model, x, y)
    assert model.training and all(m.training for m in model.modules())
    assert all(p.requires_grad for p in model.parameters())
    # dropout is off during accuracy(): the answer is repeatable
    assert accuracy(model, x, y) == first


def test_resolve_device_messages() -> None:
    from transferlens._torch import resolve_device

    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type in ("cpu", "cuda")
    with pytest.raises(ValueError, match="unknown device"):
        resolve_device("tpu-9000")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            resolve_device("cuda")


class _BNNet(FeatureModel):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6), nn.ReLU())
        self.head = nn.Linear(6, 3)


def test_shape_check_does_not_touch_batchnorm_statistics() -> None:
    model = _BNNet()
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(ValueError, match="classes"):  # 3 outputs, 5 classes: refused by the check itself
        task = _tiny_task(n_train=40)
        fit(model, Task("five", task.x_train, task.y_train, task.x_test, task.y_test, num_classes=5))
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_a_refused_model_is_not_moved_to_the_training_device(monkeypatch) -> None:
    import transferlens.training as training

    model = _BNNet()
    # "meta" stands in for a GPU: a model moved there before the refusal would have lost its weights
    monkeypatch.setattr(training, "resolve_device", lambda device: torch.device("meta"))
    task = _tiny_task(n_train=40)
    with pytest.raises(ValueError, match="classes"):
        fit(model, Task("five", task.x_train, task.y_train, task.x_test, task.y_test, num_classes=5))
    assert {p.device.type for p in model.parameters()} == {"cpu"}


def test_model_ends_in_eval_mode_when_training_diverges() -> None:
    class Exploding(FeatureModel):
        def __init__(self) -> None:
            super().__init__()
            self.body = nn.Linear(4, 6)
            self.head = nn.Linear(6, 3)

        def features(self, x: torch.Tensor) -> torch.Tensor:
            out = self.body(x)
            return out * float("inf") if self.training else out

    model = Exploding()
    with pytest.raises(ValueError, match="diverged"):
        fit(model, _tiny_task(n_train=40), epochs=2)
    assert not model.training


# --------------------------------------------------------------------------- optimiser and schedule


def _lrs_and_optimizer(task: Task, monkeypatch: pytest.MonkeyPatch, **options: Any) -> tuple[list[float], Any]:
    """The learning rate in force after each epoch, and the optimiser fit built."""
    from transferlens import training

    built = []
    real = training._optimizer
    monkeypatch.setattr(training, "_optimizer", lambda cfg, params: built.append(real(cfg, params)) or built[-1])
    lrs: list[float] = []
    model = build_model("mlp", task.input_shape, 10, seed=0)
    fit(model, task, TrainConfig(lr=0.01, patience=100, **options), device="cpu",
        on_epoch=lambda *_: lrs.append(built[0].param_groups[0]["lr"]))
    return lrs, built[0]


def test_step_schedule_divides_the_rate_by_ten_at_half_and_three_quarters(small: Task, monkeypatch) -> None:
    lrs, opt = _lrs_and_optimizer(small, monkeypatch, epochs=4, schedule="step")
    assert lrs == pytest.approx([0.01, 0.001, 0.0001, 0.0001]) and isinstance(opt, torch.optim.Adam)


def test_cosine_schedule_anneals_to_zero(small: Task, monkeypatch) -> None:
    lrs, _ = _lrs_and_optimizer(small, monkeypatch, epochs=4, schedule="cosine")
    assert lrs == pytest.approx([0.01 * (1 + math.cos(math.pi * k / 4)) / 2 for k in range(1, 5)], abs=1e-12)


def test_the_constant_default_keeps_the_rate(small: Task, monkeypatch) -> None:
    lrs, _ = _lrs_and_optimizer(small, monkeypatch, epochs=3)
    assert lrs == [0.01, 0.01, 0.01]


@pytest.mark.parametrize("name, cls", [("sgd", torch.optim.SGD), ("adamw", torch.optim.AdamW), ("adam", torch.optim.Adam)])
def test_the_optimizer_option_builds_that_optimizer(small: Task, monkeypatch, name: str, cls: type) -> None:
    _, opt = _lrs_and_optimizer(small, monkeypatch, epochs=1, optimizer=name, momentum=0.5, weight_decay=1e-3)
    assert type(opt) is cls and opt.param_groups[0]["weight_decay"] == 1e-3
    if name == "sgd":
        assert opt.param_groups[0]["momentum"] == 0.5


def test_spec_leaves_default_optimizer_options_out_so_old_cell_keys_stay() -> None:
    assert set(TrainConfig().spec()) == {"epochs", "batch_size", "lr", "weight_decay", "val_fraction", "patience", "seed"}
    assert TrainConfig(schedule="cosine").spec()["schedule"] == "cosine"
    assert "momentum" in TrainConfig(optimizer="sgd", momentum=0.0).spec()


@pytest.mark.parametrize("options, match", [
    ({"optimizer": "lbfgs"}, "unknown optimizer 'lbfgs'"), ({"schedule": "linear"}, "unknown schedule 'linear'"),
    ({"momentum": 1.0}, "momentum"), ({"momentum": -0.1}, "momentum"),
])
def test_bad_optimizer_options_are_refused(options: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        TrainConfig(**options)
