"""Tests for knowledge transferability (``transferlens.knowledge``): linear probe and last-layer retraining."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from transferlens.data.mnist1d import mnist1d_task
from transferlens.data.task import Task
from transferlens.knowledge import KnowledgeResult, extract_features, linear_probe, retrain_last_layer
from transferlens.models import FeatureModel, build_model, wrap_model
from transferlens.training import fit

from helpers import same_state


@pytest.fixture(scope="module")
def small() -> Task:
    return mnist1d_task(num_samples=400)


@pytest.fixture(scope="module")
def target() -> Task:
    return mnist1d_task(num_samples=400, seed=3)  # same domain, fresh samples


@pytest.fixture(scope="module")
def trained(small: Task) -> FeatureModel:
    model = build_model("cnn1d", small.input_shape, 10, seed=0)
    fit(model, small, epochs=6, batch_size=64, lr=1e-2, device="cpu")
    return model


def _state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


# ------------------------------------------------------------------------------------ hand-made models


class _OneHot(nn.Module):
    def __init__(self, k: int) -> None:
        super().__init__()
        self.k = k

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.one_hot(x[:, 0].round().long(), self.k).float()


class OneHotModel(FeatureModel):
    """Features are a perfect one-hot encoding of the label stored in the input's first coordinate."""

    def __init__(self, k: int) -> None:
        super().__init__()
        self.body = _OneHot(k)
        self.head = nn.Linear(k, k)


class NaNModel(FeatureModel):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Linear(2, 3)
        self.head = nn.Linear(3, 2)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        f = self.body(x)
        return torch.where(torch.arange(len(x)).unsqueeze(1) == 1, torch.full_like(f, float("nan")), f)


def _label_task(y_train: list[int], y_test: list[int], k: int, noise_dim: int = 1) -> Task:
    """Inputs hold the label in column 0 (plus ``noise_dim`` irrelevant columns)."""
    g = torch.Generator().manual_seed(0)

    def x_of(y: list[int]) -> torch.Tensor:
        lab = torch.tensor(y, dtype=torch.float32).unsqueeze(1)
        return torch.cat([lab, torch.rand(len(y), noise_dim, generator=g)], 1)

    return Task("labels", x_of(y_train), torch.tensor(y_train), x_of(y_test), torch.tensor(y_test), k)


@pytest.fixture(scope="module")
def onehot_task() -> Task:
    return _label_task([c for c in range(4) for _ in range(5)], [c for c in range(4) for _ in range(3)], 4)


def _check_result(r: KnowledgeResult, method: str, dim: int) -> None:
    assert r.method == method
    assert 0.0 <= r.accuracy <= 1.0
    assert 0.0 <= r.train_accuracy <= 1.0
    assert math.isfinite(r.loss) and r.loss > 0
    assert r.feature_dim == dim
    assert isinstance(r.feature_dim, int)
    json.loads(json.dumps(r.to_dict()))


# --------------------------------------------------------------------------------------------- probes


def test_linear_probe_on_trained_model(trained: FeatureModel, target: Task) -> None:
    r = linear_probe(trained, target)
    _check_result(r, "linear_probe", 64)
    assert r.accuracy > 0.2  # well above the 0.1 chance level
    assert r.options == {"C": 1.0, "max_iter": 500, "standardize": True}


def test_retrain_last_layer_on_trained_model(trained: FeatureModel, target: Task) -> None:
    r = retrain_last_layer(trained, target, steps=100)
    _check_result(r, "last_layer", 64)
    assert r.accuracy > 0.2
    assert r.options == {"steps": 100, "lr": 1e-2, "weight_decay": 1e-4, "seed": 0}


def test_linear_probe_deterministic(trained: FeatureModel, target: Task) -> None:
    assert linear_probe(trained, target, C=0.5, max_iter=200) == linear_probe(trained, target, C=0.5, max_iter=200)


def test_retrain_last_layer_deterministic_and_seeded(trained: FeatureModel, target: Task) -> None:
    a = retrain_last_layer(trained, target, steps=50, seed=1)
    b = retrain_last_layer(trained, target, steps=50, seed=1)
    c = retrain_last_layer(trained, target, steps=50, seed=2)
    assert a == b
    assert c.loss != a.loss


def test_retrain_last_layer_leaves_global_rng(trained: FeatureModel, target: Task) -> None:
    torch.manual_seed(77)
    state = torch.random.get_rng_state()
    retrain_last_layer(trained, target, steps=5)
    assert torch.equal(torch.random.get_rng_state(), state)


def test_source_model_untouched(trained: FeatureModel, target: Task) -> None:
    before = _state(trained)
    for p in trained.parameters():
        p.grad = None  # fit() leaves the last step's gradients behind
    trained.train()
    try:
        linear_probe(trained, target)
        retrain_last_layer(trained, target, steps=10)
        assert trained.training
        assert all(p.requires_grad for p in trained.parameters())
        assert all(p.grad is None for p in trained.parameters())
    finally:
        trained.eval()
    assert same_state(_state(trained), before)


def test_stronger_regularisation_is_less_confident(trained: FeatureModel, target: Task) -> None:
    weak = linear_probe(trained, target, C=2.0, max_iter=200)
    strong = linear_probe(trained, target, C=1e-4)
    assert weak.train_accuracy >= strong.train_accuracy
    # with C -> 0 the probe predicts the class prior: loss close to log(10)
    assert abs(strong.loss - math.log(10)) < 0.05


def test_perfect_features_give_perfect_probe(onehot_task: Task) -> None:
    model = OneHotModel(4)
    lp = linear_probe(model, onehot_task)
    assert lp.accuracy == 1.0 and lp.train_accuracy == 1.0
    assert lp.feature_dim == 4
    assert 0 < lp.loss < 0.5
    rl = retrain_last_layer(model, onehot_task)
    assert rl.accuracy == 1.0 and rl.train_accuracy == 1.0
    assert rl.feature_dim == 4
    assert 0 < rl.loss < 0.5


def test_wrapped_module_can_be_probed(onehot_task: Task) -> None:
    class Plain(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.enc = _OneHot(4)
            self.fc = nn.Linear(4, 4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(self.enc(x))

    r = linear_probe(wrap_model(Plain(), "fc"), onehot_task)
    assert r.accuracy == 1.0 and r.feature_dim == 4


# --------------------------------------------------------------------------------------------- extract_features


def test_extract_features_shape_and_values(trained: FeatureModel, small: Task) -> None:
    x = small.x_test[:30]
    f = extract_features(trained, x)
    assert f.shape == (30, 64)
    assert not f.requires_grad
    with torch.no_grad():
        assert torch.allclose(f, trained.features(x))
    # float32 rounding only: a CPU may pick other convolution kernels for another batch size
    torch.testing.assert_close(extract_features(trained, x, batch_size=7), f, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("training", [True, False])
def test_extract_features_restores_mode(training: bool) -> None:
    model = build_model("mlp", (5,), 3, seed=0, hidden=(8,))
    model.head.weight.requires_grad_(False)
    model.train(training)
    extract_features(model, torch.zeros(4, 5))
    assert model.training is training
    assert all(m.training is training for m in model.modules())
    assert model.head.weight.requires_grad is False
    assert model.head.bias.requires_grad is True


def test_extract_features_in_eval_mode() -> None:
    class Drop(FeatureModel):
        def __init__(self) -> None:
            super().__init__()
            self.body = nn.Dropout(0.9)
            self.head = nn.Linear(6, 2)

    model = Drop().train()
    x = torch.ones(3, 6)
    assert torch.equal(extract_features(model, x), x)  # dropout inactive
    assert model.training


def test_model_without_features_rejected(onehot_task: Task) -> None:
    for fn in (linear_probe, retrain_last_layer):
        with pytest.raises(TypeError, match=r"features\(x\) method.*wrap_model"):
            fn(nn.Linear(2, 4), onehot_task)
    with pytest.raises(TypeError, match="wrap_model"):
        extract_features(nn.Linear(2, 4), torch.zeros(1, 2))


@pytest.mark.parametrize("fn", [linear_probe, retrain_last_layer])
def test_nan_features_rejected(fn) -> None:
    task = _label_task([0, 1, 0, 1], [0, 1], 2)
    with pytest.raises(ValueError, match="NaN/Inf features"):
        fn(NaNModel(), task)


@pytest.mark.parametrize("fn", [linear_probe, retrain_last_layer])
def test_non_task_rejected(fn) -> None:
    with pytest.raises(TypeError, match="Task"):
        fn(OneHotModel(2), (torch.zeros(2, 2), torch.zeros(2)))


@pytest.mark.parametrize("C", [0.0, -1.0, float("nan"), float("inf"), "1"])
def test_bad_C_rejected(onehot_task: Task, C: object) -> None:
    with pytest.raises(ValueError, match="C must be a finite number > 0"):
        linear_probe(OneHotModel(4), onehot_task, C=C)  # type: ignore[arg-type]


@pytest.mark.parametrize("kwargs,match", [
    ({"lr": 0.0}, "lr must be"),
    ({"lr": -1.0}, "lr must be"),
    ({"steps": 0}, "steps must be an integer >= 1"),
    ({"steps": 2.5}, "steps must be an integer >= 1"),
])
def test_bad_retrain_options_rejected(onehot_task: Task, kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        retrain_last_layer(OneHotModel(4), onehot_task, **kwargs)


# --------------------------------------------------------------------------------------------- missing classes


@pytest.fixture(scope="module")
def missing_task() -> Task:
    # class 3 never appears in the train split but is 1/4 of the test split; class 4 appears nowhere
    return _label_task([c for c in range(3) for _ in range(4)], [c for c in range(4) for _ in range(2)], 5)


def test_linear_probe_with_classes_missing_from_train(missing_task: Task) -> None:
    r = linear_probe(OneHotModel(5), missing_task)
    assert math.isfinite(r.loss) and r.loss > 0
    assert r.accuracy == 0.75  # every seen class right, the unseen class can never be predicted
    assert r.train_accuracy == 1.0
    assert r.feature_dim == 5
    # the unseen class gets probability ~0 (clipped at 1e-12): its samples dominate the mean loss
    assert r.loss > 0.25 * -math.log(1e-6)


def test_retrain_last_layer_with_classes_missing_from_train(missing_task: Task) -> None:
    r = retrain_last_layer(OneHotModel(5), missing_task, steps=100)
    assert math.isfinite(r.loss) and r.loss > 0
    assert r.accuracy == 0.75
    assert r.train_accuracy == 1.0


def test_probe_with_two_of_many_classes_in_train() -> None:
    task = _label_task([0, 1] * 4, [0, 1, 2, 3], 4)
    r = linear_probe(OneHotModel(4), task)
    assert r.accuracy == 0.5 and math.isfinite(r.loss)


def test_knowledge_result_to_dict() -> None:
    r = KnowledgeResult("linear_probe", 0.5, 1.2, 0.75, 8, {"C": 1.0})
    assert json.loads(json.dumps(r.to_dict())) == {
        "method": "linear_probe", "accuracy": 0.5, "loss": 1.2, "train_accuracy": 0.75, "feature_dim": 8,
        "options": {"C": 1.0},
    }
