"""The ``Task``: a supervised classification problem with a train and a test split."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from .._validate import (
    as_float_tensor,
    check_bounds,
    check_finite,
    check_int,
    check_labels,
    check_nonempty,
    check_within_bounds,
)


@dataclass(frozen=True, eq=False)
class Task:
    """A classification task.

    Inputs are float tensors of shape ``(N, *input_shape)``; labels are ``int64`` class indices in
    ``[0, num_classes)``. ``bounds`` is the optional ``(lo, hi)`` box the inputs live in (attacks clip to
    it). ``description`` says in one line what the domain is; ``meta`` holds the generator options.
    """

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int
    bounds: tuple[float, float] | None = None
    description: str = ""
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str):
            raise TypeError(f"Task name must be a string, got {type(self.name).__name__}")
        object.__setattr__(self, "num_classes", check_int(self.num_classes, "num_classes", 2))
        bounds = check_bounds(self.bounds)
        for split in ("train", "test"):
            x = as_float_tensor(getattr(self, f"x_{split}"), f"x_{split}")
            check_nonempty(x, f"Task {self.name!r} x_{split}")
            check_finite(x, f"Task {self.name!r} x_{split}")
            check_within_bounds(x, bounds, f"Task {self.name!r} x_{split}")
            y = check_labels(getattr(self, f"y_{split}"), self.num_classes, f"Task {self.name!r} y_{split}", len(x))
            object.__setattr__(self, f"x_{split}", x)
            object.__setattr__(self, f"y_{split}", y)
        if self.x_train.shape[1:] != self.x_test.shape[1:]:
            raise ValueError(
                f"train and test inputs of task {self.name!r} differ in shape: "
                f"{tuple(self.x_train.shape[1:])} vs {tuple(self.x_test.shape[1:])}"
            )
        object.__setattr__(self, "bounds", bounds)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])

    def __repr__(self) -> str:
        return (
            f"Task(name={self.name!r}, train={len(self.x_train)}, test={len(self.x_test)}, "
            f"input_shape={self.input_shape}, num_classes={self.num_classes}, bounds={self.bounds})"
        )

    def summary(self) -> dict[str, Any]:
        """JSON-friendly description (no tensors)."""
        return {
            "name": self.name,
            "description": self.description,
            "n_train": len(self.x_train),
            "n_test": len(self.x_test),
            "input_shape": list(self.input_shape),
            "num_classes": self.num_classes,
            "bounds": list(self.bounds) if self.bounds else None,
            "meta": self.meta,
        }


def check_task(task: Any, name: str = "task") -> Task:
    """A :class:`Task`; a tuple of tensors or anything else is refused with how to build one."""
    if not isinstance(task, Task):
        raise TypeError(
            f"{name} must be a transferlens Task, got {type(task).__name__}; build one with "
            "transferlens.Task(name, x_train, y_train, x_test, y_test, num_classes) or a data helper such as "
            "transferlens.mnist1d_task()"
        )
    return task
