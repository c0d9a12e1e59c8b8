"""Semi-supervised self-training: train on a labeled part, pseudo-label the confident unlabeled samples, retrain.

:func:`self_train` hides the labels of all but ``labeled_fraction`` of a task's training split (drawn from
``seed``), trains on the labeled part with :func:`transferlens.fit` (any regime: standard, PGD adversarial
training, TRADES -- so adversarial + self-training is ``regime=PGDAdversarial(...)``), then for each of
``rounds`` rounds labels every hidden sample whose predicted class probability is at least ``threshold``
with that class and continues training on labeled + pseudo-labeled samples. Only predictions above the
threshold are used; the hidden labels are used for nothing but reporting how accurate the pseudo-labels
were.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ._torch import frozen_eval, model_device, model_dtype
from ._validate import check_int, check_model, check_real, check_seed
from .data.task import Task, check_task
from .regimes import Regime
from .training import TrainConfig, TrainingWarning, TrainResult, fit

__all__ = ["SelfTrainResult", "self_train"]


@dataclass(frozen=True)
class SelfTrainResult:
    """What :func:`self_train` did: the labeled / unlabeled split, per round the number of pseudo-labels and
    their accuracy against the hidden labels, and the last training run (test accuracy, history)."""

    n_labeled: int
    n_unlabeled: int
    rounds: tuple[dict[str, Any], ...]
    train: TrainResult
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def test_accuracy(self) -> float:
        return self.train.test_accuracy

    def to_dict(self) -> dict[str, Any]:
        return {"n_labeled": self.n_labeled, "n_unlabeled": self.n_unlabeled, "rounds": [dict(r) for r in self.rounds],
                "train": self.train.to_dict(), "options": dict(self.options)}


def _subset(task: Task, x: torch.Tensor, y: torch.Tensor, name: str) -> Task:
    return Task(name=name, x_train=x, y_train=y, x_test=task.x_test, y_test=task.y_test, num_classes=task.num_classes,
                bounds=task.bounds, description=task.description, meta=task.meta)


def confident(model: nn.Module, x: torch.Tensor, threshold: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``(mask, labels)``: which samples the model predicts with probability >= ``threshold``, and the
    predicted classes (in eval mode, without gradients)."""
    with frozen_eval(model), torch.no_grad():
        probs = torch.softmax(model(x.to(model_device(model), model_dtype(model, x.dtype))).double(), dim=1).cpu()
    top, labels = probs.max(dim=1)
    return top >= threshold, labels


def self_train(
    model: nn.Module,
    task: Task,
    *,
    labeled_fraction: float = 0.2,
    threshold: float = 0.9,
    rounds: int = 2,
    config: TrainConfig | None = None,
    regime: Regime | None = None,
    seed: int = 0,
    device: str | torch.device = "auto",
) -> SelfTrainResult:
    """Self-train ``model`` (in place, as :func:`fit` does) on ``task`` with most training labels hidden.

    ``labeled_fraction`` in (0, 1) of the training split keeps its labels; ``threshold`` in (0, 1) is the
    confidence a pseudo-label needs; ``rounds`` >= 0 pseudo-labelling rounds follow the supervised start
    (``rounds=0`` is the supervised baseline: training on the labeled part only, with the same split).
    ``config`` and ``regime`` go to every :func:`fit` call.
    """
    check_model(model)
    check_task(task)
    labeled_fraction = check_real(labeled_fraction, "labeled_fraction", positive=True, below=1.0)
    threshold = check_real(threshold, "threshold", positive=True, below=1.0)
    rounds = check_int(rounds, "rounds", 0)
    seed = check_seed(seed)
    n = len(task.x_train)
    n_lab = int(round(labeled_fraction * n))
    if n_lab < 2 or n - n_lab < 1:
        raise ValueError(
            f"labeled_fraction={labeled_fraction} of {n} training samples leaves {n_lab} labeled and {n - n_lab} "
            "unlabeled; both parts need samples (an empty unlabeled split has nothing to pseudo-label)"
        )
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    lab, unl = perm[:n_lab], perm[n_lab:]
    x_lab, y_lab = task.x_train[lab], task.y_train[lab]
    x_unl, y_hidden = task.x_train[unl], task.y_train[unl]
    result = fit(model, _subset(task, x_lab, y_lab, f"{task.name}-labeled"), config, device=device, regime=regime)
    history = []
    for r in range(1, rounds + 1):
        mask, pseudo = confident(model, x_unl, threshold)
        n_pseudo = int(mask.sum())
        accuracy = float((pseudo[mask] == y_hidden[mask]).double().mean()) if n_pseudo else None
        history.append({"round": r, "n_pseudo": n_pseudo, "pseudo_accuracy": accuracy})
        x = torch.cat([x_lab, x_unl[mask]])
        y = torch.cat([y_lab, pseudo[mask].to(y_lab.dtype)])
        with warnings.catch_warnings():  # the round starts from a trained model: "did not improve" would mislead
            warnings.simplefilter("ignore", TrainingWarning)
            result = fit(model, _subset(task, x, y, f"{task.name}-self-trained-{r}"), config, device=device, regime=regime)
    return SelfTrainResult(
        n_labeled=n_lab, n_unlabeled=n - n_lab, rounds=tuple(history), train=result,
        options={"labeled_fraction": labeled_fraction, "threshold": threshold, "rounds": rounds, "seed": seed,
                 "regime": result.regime},
    )
