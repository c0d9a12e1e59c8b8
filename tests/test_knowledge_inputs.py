"""The input contract of ``transferlens.knowledge``: what ``extract_features``, ``linear_probe`` and
``retrain_last_layer`` accept (numpy scalars, a float64 model on float32 data) and what they refuse with a
clear error (a non-Task, a non-module, a model for another input shape, bad numbers)."""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest
import torch
from sklearn.exceptions import ConvergenceWarning
from torch import nn

import transferlens as tl
from transferlens.knowledge import extract_features, linear_probe, retrain_last_layer

from helpers import rand


def _task(n_in: int = 6, k: int = 3, n_train: int = 30, n_test: int = 15) -> tl.Task:
    x_tr, x_te = rand(n_train, n_in, seed=0), rand(n_test, n_in, seed=1)
    label = lambda x: (x[:, 0] * k).long().clamp_max(k - 1)  # noqa: E731 - learnable from the first input
    return tl.Task("inputs", x_tr, label(x_tr), x_te, label(x_te), k)


def _model(n_in: int = 6, k: int = 3, dtype: torch.dtype = torch.float32) -> nn.Module:
    return tl.build_model("mlp", (n_in,), k, seed=0, hidden=(8,)).to(dtype)


@pytest.fixture(scope="module")
def task() -> tl.Task:
    return _task()


# --------------------------------------------------------------------------------------------- numbers


@pytest.mark.parametrize("max_iter", [0, -1, np.int64(0)])
def test_max_iter_below_one_refused(task: tl.Task, max_iter) -> None:
    with pytest.raises(ValueError, match="max_iter must be an integer >= 1"):
        linear_probe(_model(), task, max_iter=max_iter)


@pytest.mark.parametrize("max_iter", ["100", True, 10.0, float("nan"), None])
def test_max_iter_of_wrong_type_refused(task: tl.Task, max_iter) -> None:
    with pytest.raises(TypeError, match="max_iter must be an integer"):
        linear_probe(_model(), task, max_iter=max_iter)


@pytest.mark.parametrize("fn,kwargs,name", [
    (linear_probe, {"C": "1"}, "C"),
    (linear_probe, {"C": True}, "C"),
    (retrain_last_layer, {"steps": "5"}, "steps"),
    (retrain_last_layer, {"steps": True}, "steps"),
    (retrain_last_layer, {"lr": "0.1"}, "lr"),
    (retrain_last_layer, {"lr": False}, "lr"),
    (retrain_last_layer, {"weight_decay": "0"}, "weight_decay"),
    (retrain_last_layer, {"weight_decay": True}, "weight_decay"),
    (retrain_last_layer, {"seed": "0"}, "seed"),
    (retrain_last_layer, {"seed": True}, "seed"),
    (retrain_last_layer, {"seed": 1.0}, "seed"),
])
def test_strings_and_bools_refused_naming_the_argument(task: tl.Task, fn, kwargs: dict, name: str) -> None:
    with pytest.raises(TypeError, match=rf"^{name} must be"):
        fn(_model(), task, **kwargs)


@pytest.mark.parametrize("fn,kwargs,name", [
    (linear_probe, {"C": float("nan")}, "C"),
    (linear_probe, {"C": -1.0}, "C"),
    (retrain_last_layer, {"steps": 0}, "steps"),
    (retrain_last_layer, {"steps": -3}, "steps"),
    (retrain_last_layer, {"lr": float("nan")}, "lr"),
    (retrain_last_layer, {"lr": -0.1}, "lr"),
    (retrain_last_layer, {"weight_decay": -1e-4}, "weight_decay"),
    (retrain_last_layer, {"weight_decay": float("nan")}, "weight_decay"),
    (retrain_last_layer, {"weight_decay": float("inf")}, "weight_decay"),
    (retrain_last_layer, {"seed": -1}, "seed"),
])
def test_nan_and_negative_numbers_refused(task: tl.Task, fn, kwargs: dict, name: str) -> None:
    with pytest.raises(ValueError, match=rf"^{name} must be"):
        fn(_model(), task, **kwargs)


def test_numpy_scalars_and_0d_tensors_accepted(task: tl.Task) -> None:
    model = _model()
    a = linear_probe(model, task, C=np.float32(0.5), max_iter=np.int64(200))
    b = linear_probe(model, task, C=0.5, max_iter=200)
    assert a == b
    assert a.options == {"C": 0.5, "max_iter": 200, "standardize": True}
    assert type(a.options["max_iter"]) is int and type(a.options["C"]) is float
    c = retrain_last_layer(
        model, task, steps=np.int32(10), lr=np.float64(0.01), weight_decay=torch.tensor(0.0), seed=np.uint8(3)
    )
    d = retrain_last_layer(model, task, steps=10, lr=0.01, weight_decay=0.0, seed=3)
    assert c == d
    json.dumps(c.to_dict())  # plain Python numbers in the options
    assert [type(c.options[k]) for k in ("steps", "lr", "weight_decay", "seed")] == [int, float, float, int]
    assert retrain_last_layer(model, task, steps=5, weight_decay=0).options["weight_decay"] == 0.0  # >= 0 allowed


@pytest.mark.parametrize(
    "batch_size,exc", [(0, ValueError), (-2, ValueError), ("8", TypeError), (True, TypeError), (2.0, TypeError)]
)
def test_extract_features_batch_size_checked(batch_size, exc) -> None:
    with pytest.raises(exc, match="batch_size must be an integer"):
        extract_features(_model(), rand(4, 6), batch_size=batch_size)


def test_extract_features_batch_size_numpy_accepted() -> None:
    model, x = _model(), rand(7, 6)
    assert torch.equal(extract_features(model, x, batch_size=np.int64(3)), extract_features(model, x, batch_size=3))


# --------------------------------------------------------------------------------------------- task and model


@pytest.mark.parametrize("fn", [linear_probe, retrain_last_layer])
@pytest.mark.parametrize("bad", [None, "task", {"x_train": 1}])
def test_non_task_refused(fn, bad) -> None:
    with pytest.raises(TypeError, match=r"task must be a transferlens Task.*transferlens\.Task\("):
        fn(_model(), bad)


@pytest.mark.parametrize("fn", [linear_probe, retrain_last_layer])
def test_tuple_instead_of_task_refused(fn, task: tl.Task) -> None:
    with pytest.raises(TypeError, match="task must be a transferlens Task, got tuple"):
        fn(_model(), (task.x_train, task.y_train, task.x_test, task.y_test))


@pytest.mark.parametrize("fn", [linear_probe, retrain_last_layer])
@pytest.mark.parametrize("bad", [None, lambda x: x, "mlp"])
def test_non_module_model_refused(fn, bad, task: tl.Task) -> None:
    with pytest.raises(TypeError, match="model must be a torch.nn.Module"):
        fn(bad, task)
    with pytest.raises(TypeError, match="model must be a torch.nn.Module"):
        extract_features(bad, task.x_test)


@pytest.mark.parametrize("fn", [linear_probe, retrain_last_layer])
def test_model_for_another_input_size_gives_clear_error(fn, task: tl.Task) -> None:
    with pytest.raises(ValueError, match=r"^model could not process inputs of shape \(6,\)") as info:
        fn(_model(n_in=9), task)
    assert isinstance(info.value.__cause__, RuntimeError)  # torch's own error is kept as the cause


def test_extract_features_input_size_mismatch_gives_clear_error() -> None:
    with pytest.raises(ValueError, match=r"^model could not process inputs of shape \(5,\)"):
        extract_features(_model(n_in=9), rand(3, 5))


def test_features_that_fail_where_forward_works_give_clear_error() -> None:
    class OddFeatures(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(6, 3)
            self.enc = nn.Linear(9, 4)

        def features(self, x: torch.Tensor) -> torch.Tensor:
            return self.enc(x)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(x)

    with pytest.raises(ValueError, match=r"^model\.features could not process inputs of shape \(6,\)"):
        extract_features(OddFeatures(), rand(3, 6))


def test_extract_features_refuses_empty_and_nan_inputs() -> None:
    with pytest.raises(ValueError, match="empty"):
        extract_features(_model(), torch.zeros(0, 6))
    x = rand(3, 6)
    x[1, 2] = float("nan")
    with pytest.raises(ValueError, match="NaN/Inf"):
        extract_features(_model(), x)


def test_extract_features_accepts_array_like() -> None:
    model, x = _model(), rand(4, 6)
    assert torch.equal(extract_features(model, x.numpy()), extract_features(model, x))


# --------------------------------------------------------------------------------------------- dtypes


def test_float64_model_on_float32_task(task: tl.Task) -> None:
    assert task.x_train.dtype == torch.float32
    m64 = _model(dtype=torch.float64)
    f = extract_features(m64, task.x_test)
    assert f.dtype == torch.float64
    with torch.no_grad():
        assert torch.equal(f, m64.features(task.x_test.double()))
    lp = linear_probe(m64, task, max_iter=200)
    rl = retrain_last_layer(m64, task, steps=10)
    assert math.isfinite(lp.loss) and math.isfinite(rl.loss)
    # the same weights in float32 give the same probe up to rounding
    lp32 = linear_probe(_model(), task, max_iter=200)
    assert abs(lp.accuracy - lp32.accuracy) <= 1 / len(task.y_test)
    assert task.x_train.dtype == torch.float32  # the task's data is not converted in place


def test_float32_model_on_float64_inputs() -> None:
    model, x = _model(), rand(5, 6, dtype=torch.float64)
    f = extract_features(model, x)
    assert f.dtype == torch.float32
    with torch.no_grad():
        assert torch.equal(f, model.features(x.float()))


def test_inplace_first_op_does_not_touch_task_data() -> None:
    class InPlace(tl.FeatureModel):
        def __init__(self) -> None:
            super().__init__()
            self.body = nn.Sequential(nn.ReLU(inplace=True), nn.Linear(6, 4))
            self.head = nn.Linear(4, 3)

    x_tr = rand(20, 6) - 0.5
    task = tl.Task("neg", x_tr, torch.arange(20) % 3, x_tr.clone(), torch.arange(20) % 3, 3)
    before = task.x_train.clone()
    linear_probe(InPlace(), task, max_iter=50)
    retrain_last_layer(InPlace(), task, steps=2)
    assert torch.equal(task.x_train, before)


# --------------------------------------------------------------------------------------------- convergence


def test_linear_probe_that_did_not_converge_warns(task: tl.Task) -> None:
    with pytest.warns(ConvergenceWarning, match=r"linear_probe did not converge.*max_iter=1\b.*raise max_iter"):
        r = linear_probe(_model(), task, max_iter=1)
    assert 0.0 <= r.accuracy <= 1.0


def test_converged_linear_probe_is_silent(task: tl.Task) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        linear_probe(_model(), task, max_iter=500)


def test_one_dimensional_features_become_one_column() -> None:
    class Scalar(tl.FeatureModel):
        def __init__(self) -> None:
            super().__init__()
            self.body = nn.Linear(6, 1)
            self.head = nn.Linear(1, 3)

        def features(self, x: torch.Tensor) -> torch.Tensor:
            return self.body(x)[:, 0]  # (N,)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.head(self.features(x).unsqueeze(1))

    model, x = Scalar(), rand(5, 6)
    f = extract_features(model, x, batch_size=2)
    assert f.shape == (5, 1)
    with torch.no_grad():
        assert torch.allclose(f[:, 0], model.features(x), atol=1e-6)
