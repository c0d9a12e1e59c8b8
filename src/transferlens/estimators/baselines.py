"""Trivial baselines every comparison of estimators should report next to the sophisticated ones.

Recent work finds that such heuristics -- the source model's accuracy on its own task, its size -- rank
candidates about as well as, and sometimes better than, dedicated transferability estimators on some
model zoos (e.g. Agostinelli et al., ECCV 2022; Kornblith et al., CVPR 2019 for ImageNet accuracy). Neither
looks at the target data.
"""

from __future__ import annotations

from typing import Any

from .._validate import check_model, check_real
from .registry import Estimator, register

__all__ = ["param_count", "source_accuracy"]


def source_accuracy(source_accuracy: Any) -> float:
    """The candidate's accuracy on its own source task, a fraction in ``[0, 1]``; higher is better.

    A trivial baseline: better source models tend to transfer better. Refuses NaN, bools, strings and
    values outside ``[0, 1]`` (a percentage such as 76.1 must be passed as 0.761).
    """
    acc = check_real(source_accuracy, "source_accuracy", nonnegative=True)
    if acc > 1.0:
        raise ValueError(
            f"source_accuracy must be a fraction in [0, 1], got {acc!r}; pass a percentage as a fraction "
            f"(e.g. {acc / 100:g} for {acc:g}%)"
        )
    return acc


def param_count(model: Any) -> float:
    """The number of parameters of ``model`` (an ``nn.Module``; shared parameters counted once), as float.

    A trivial baseline: bigger models tend to transfer better. Higher is better.
    """
    model = check_model(model, "model")
    return float(sum(p.numel() for p in model.parameters()))


register(
    Estimator(
        "source_accuracy",
        source_accuracy,
        needs=("source_accuracy",),
        greater_is_better=True,
        reference="trivial baseline (e.g. Kornblith et al., Do Better ImageNet Models Transfer Better?, "
        "CVPR 2019)",
        summary="trivial baseline: the candidate's accuracy on its own source task",
    )
)
register(
    Estimator(
        "param_count",
        param_count,
        needs=("model",),
        greater_is_better=True,
        reference="trivial baseline (bigger models tend to transfer better)",
        summary="trivial baseline: the number of parameters of the candidate model",
    )
)
