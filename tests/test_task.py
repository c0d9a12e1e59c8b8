"""Tests for ``transferlens.data.task.Task``: boundary validation, normalisation, summary."""

from __future__ import annotations

import json
import math
from dataclasses import FrozenInstanceError
from typing import Any

import numpy as np
import pytest
import torch

from transferlens.data.task import Task


def _parts(n_train: int = 6, n_test: int = 4, shape: tuple[int, ...] = (3,), num_classes: int = 3) -> dict[str, Any]:
    g = torch.Generator().manual_seed(0)
    return {
        "name": "toy",
        "x_train": torch.rand((n_train, *shape), generator=g),
        "y_train": torch.arange(n_train) % num_classes,
        "x_test": torch.rand((n_test, *shape), generator=g),
        "y_test": torch.arange(n_test) % num_classes,
        "num_classes": num_classes,
    }


def make(**changes: Any) -> Task:
    return Task(**{**_parts(), **changes})


# --------------------------------------------------------------------------------------------- valid


def test_valid_task_basics() -> None:
    task = make(bounds=(0, 1), description="toy task", meta={"k": 1})
    assert task.input_shape == (3,)
    assert task.num_classes == 3
    assert task.bounds == (0.0, 1.0)
    assert all(isinstance(b, float) for b in task.bounds)
    assert task.y_train.dtype == torch.int64 and task.y_test.dtype == torch.int64
    assert torch.is_floating_point(task.x_train) and torch.is_floating_point(task.x_test)
    assert "toy" in repr(task)


def test_input_shape_multi_dim() -> None:
    task = Task(**_parts(shape=(1, 4, 5)))
    assert task.input_shape == (1, 4, 5)
    assert isinstance(task.input_shape, tuple)


def test_integer_inputs_become_float_and_arrays_accepted() -> None:
    task = make(
        x_train=np.arange(18).reshape(6, 3),
        x_test=[[1, 2, 3]] * 4,
        y_train=np.array([0, 1, 2, 0, 1, 2]),
        y_test=[0, 1, 2, 0],
    )
    assert torch.is_floating_point(task.x_train) and torch.is_floating_point(task.x_test)
    assert task.x_train.shape == (6, 3) and task.x_test.shape == (4, 3)
    assert task.y_train.dtype == torch.int64
    assert task.y_test.tolist() == [0, 1, 2, 0]


def test_integer_valued_float_labels_accepted() -> None:
    task = make(y_train=torch.tensor([0.0, 1.0, 2.0, 0.0, 1.0, 2.0]))
    assert task.y_train.dtype == torch.int64
    assert task.y_train.tolist() == [0, 1, 2, 0, 1, 2]


def test_values_within_bounds_tolerance_accepted() -> None:
    x = torch.full((6, 3), 1.0 + 1e-8)
    task = make(x_train=x, bounds=(0.0, 1.0))
    assert task.bounds == (0.0, 1.0)


def test_frozen() -> None:
    task = make()
    with pytest.raises(FrozenInstanceError, match="cannot assign to field 'num_classes'"):
        task.num_classes = 5  # type: ignore[misc]


# --------------------------------------------------------------------------------------------- invalid


@pytest.mark.parametrize("split", ["x_train", "x_test"])
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_nonfinite_inputs_rejected(split: str, bad: float) -> None:
    x = _parts()[split].clone()
    x[1, 2] = bad
    with pytest.raises(ValueError, match=r"NaN/Inf"):
        make(**{split: x})


@pytest.mark.parametrize("split", ["y_train", "y_test"])
@pytest.mark.parametrize("bad", [-1, 3, 99])
def test_labels_outside_range_rejected(split: str, bad: int) -> None:
    y = _parts()[split].clone()
    y[0] = bad
    with pytest.raises(ValueError, match=r"must lie in \[0, 3\)"):
        make(**{split: y})


@pytest.mark.parametrize("split", ["y_train", "y_test"])
def test_non_integer_float_labels_rejected(split: str) -> None:
    y = _parts()[split].float()
    y[0] = 0.5
    with pytest.raises(ValueError, match="integer class indices"):
        make(**{split: y})


def test_nan_label_rejected() -> None:
    y = torch.tensor([0.0, 1.0, float("nan"), 0.0, 1.0, 2.0])
    with pytest.raises(ValueError, match="integer class indices"):
        make(y_train=y)


def test_2d_labels_rejected() -> None:
    with pytest.raises(ValueError, match="1-D tensor"):
        make(y_train=torch.zeros(6, 1, dtype=torch.long))


@pytest.mark.parametrize("split", ["train", "test"])
def test_empty_split_rejected(split: str) -> None:
    with pytest.raises(ValueError, match="empty"):
        make(**{f"x_{split}": torch.zeros(0, 3), f"y_{split}": torch.zeros(0, dtype=torch.long)})


def test_scalar_inputs_rejected() -> None:
    with pytest.raises(ValueError, match="empty"):
        make(x_train=torch.tensor(1.0))


@pytest.mark.parametrize("split", ["train", "test"])
def test_mismatched_lengths_rejected(split: str) -> None:
    y = _parts()[f"y_{split}"][:-1]
    with pytest.raises(ValueError, match=r"labels but there are \d+ inputs"):
        make(**{f"y_{split}": y})


def test_train_test_shape_mismatch_rejected() -> None:
    with pytest.raises(ValueError, match="differ in shape"):
        make(x_test=torch.rand(4, 5))


@pytest.mark.parametrize("k", [1, 0, -2, 2.0, "3", None, True])
def test_num_classes_invalid(k: Any) -> None:
    with pytest.raises(ValueError, match="num_classes must be an integer >= 2"):
        make(num_classes=k, y_train=torch.zeros(6, dtype=torch.long), y_test=torch.zeros(4, dtype=torch.long))


@pytest.mark.parametrize(
    "bounds", [(1.0, 1.0), (1.0, 0.0), (0.0, float("nan")), (-float("inf"), 1.0), (0.0, float("inf"))]
)
def test_bad_bounds_rejected(bounds: tuple[float, float]) -> None:
    with pytest.raises(ValueError, match="lo < hi"):
        make(bounds=bounds)


@pytest.mark.parametrize("bounds", [(0.0,), (0.0, 1.0, 2.0), "ab", 3.0])
def test_malformed_bounds_rejected(bounds: Any) -> None:
    with pytest.raises(ValueError, match="bounds must be"):
        make(bounds=bounds)


@pytest.mark.parametrize("split", ["x_train", "x_test"])
@pytest.mark.parametrize("value", [-0.5, 1.5])
def test_inputs_outside_bounds_rejected(split: str, value: float) -> None:
    x = _parts()[split].clone()
    x[0, 0] = value
    with pytest.raises(ValueError, match="outside the input bounds"):
        make(**{split: x}, bounds=(0.0, 1.0))


def test_non_numeric_inputs_rejected() -> None:
    with pytest.raises(TypeError, match="array-like of numbers"):
        make(x_train=object())


# --------------------------------------------------------------------------------------------- summary


def test_summary_json_serializable() -> None:
    task = make(bounds=(0, 1), description="d", meta={"seed": 3, "knobs": [1, 2]})
    s = task.summary()
    back = json.loads(json.dumps(s))
    assert back == {
        "name": "toy",
        "description": "d",
        "n_train": 6,
        "n_test": 4,
        "input_shape": [3],
        "num_classes": 3,
        "bounds": [0.0, 1.0],
        "meta": {"seed": 3, "knobs": [1, 2]},
    }
    assert not any(isinstance(v, torch.Tensor) for v in s.values())


def test_summary_without_bounds() -> None:
    s = make().summary()
    assert s["bounds"] is None
    assert json.loads(json.dumps(s))["input_shape"] == [3]
    assert math.isclose(s["n_train"] + s["n_test"], 10)
