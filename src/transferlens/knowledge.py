"""Knowledge transferability: how well a source model's frozen features solve the target task.

* :func:`linear_probe`: L2-regularised multinomial logistic regression on standardized frozen features
  (scikit-learn, L-BFGS) — the usual "linear evaluation" protocol.
* :func:`retrain_last_layer`: a fresh linear head trained with Adam and cross-entropy on the raw frozen
  features (what fine-tuning only the last layer does), full batch.

Both report accuracy and mean cross-entropy on the target task's test split.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from ._torch import batched_apply, frozen_eval, model_device, seeded
from ._validate import check_positive
from .data.task import Task


@dataclass(frozen=True)
class KnowledgeResult:
    """Target-test accuracy and cross-entropy of a transfer method on a source's frozen features."""

    method: str
    accuracy: float
    loss: float
    train_accuracy: float
    feature_dim: int
    options: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "accuracy": self.accuracy,
            "loss": self.loss,
            "train_accuracy": self.train_accuracy,
            "feature_dim": self.feature_dim,
            "options": self.options,
        }


def extract_features(model: nn.Module, x: torch.Tensor, batch_size: int = 2048) -> torch.Tensor:
    """``model.features(x)`` flattened to (N, D), in eval mode without gradients (model mode restored)."""
    if not hasattr(model, "features"):
        raise TypeError(
            "the model needs a features(x) method; build it with transferlens.build_model or wrap it with "
            "transferlens.wrap_model(module, head_name)"
        )
    with frozen_eval(model):
        feats = batched_apply(lambda b: model.features(b).flatten(1), x, batch_size, model_device(model))
    if not bool(torch.isfinite(feats).all()):
        raise ValueError("the model produced NaN/Inf features on the task inputs; check the model and the data")
    return feats


def _check_task(task: Task) -> None:
    if not isinstance(task, Task):
        raise TypeError(f"task must be a transferlens Task, got {type(task).__name__}")


def linear_probe(model: nn.Module, task: Task, *, C: float = 1.0, max_iter: int = 500) -> KnowledgeResult:
    """Fit ``LogisticRegression(C)`` on standardized train features; score the test split.

    ``C`` is the inverse L2 strength (scikit-learn convention). Deterministic (L-BFGS, no sampling).
    """
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import log_loss
    from sklearn.preprocessing import StandardScaler

    _check_task(task)
    check_positive(C, "C")
    f_tr = extract_features(model, task.x_train).double().numpy()
    f_te = extract_features(model, task.x_test).double().numpy()
    scaler = StandardScaler().fit(f_tr)
    clf = LogisticRegression(C=C, max_iter=max_iter)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(scaler.transform(f_tr), task.y_train.numpy())
    z_te = scaler.transform(f_te)
    proba = np.zeros((len(z_te), task.num_classes))
    proba[:, clf.classes_] = clf.predict_proba(z_te)
    y_te = task.y_test.numpy()
    return KnowledgeResult(
        method="linear_probe",
        accuracy=float((proba.argmax(1) == y_te).mean()),
        loss=float(log_loss(y_te, np.clip(proba, 1e-12, 1.0), labels=np.arange(task.num_classes))),
        train_accuracy=float(clf.score(scaler.transform(f_tr), task.y_train.numpy())),
        feature_dim=int(f_tr.shape[1]),
        options={"C": C, "max_iter": max_iter, "standardize": True},
    )


def retrain_last_layer(
    model: nn.Module,
    task: Task,
    *,
    steps: int = 300,
    lr: float = 1e-2,
    weight_decay: float = 1e-4,
    seed: int = 0,
) -> KnowledgeResult:
    """Train a new ``nn.Linear(D, num_classes)`` head on the frozen features (full-batch Adam, ``steps`` steps)."""
    _check_task(task)
    check_positive(lr, "lr")
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be an integer >= 1, got {steps!r}")
    f_tr = extract_features(model, task.x_train)
    f_te = extract_features(model, task.x_test)
    with seeded(seed):
        head = nn.Linear(f_tr.shape[1], task.num_classes)
    opt = torch.optim.Adam(head.parameters(), lr=lr, weight_decay=weight_decay)
    for _ in range(steps):
        loss = F.cross_entropy(head(f_tr), task.y_train)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    with torch.no_grad():
        logits_te = head(f_te)
        train_acc = float((head(f_tr).argmax(1) == task.y_train).float().mean())
    return KnowledgeResult(
        method="last_layer",
        accuracy=float((logits_te.argmax(1) == task.y_test).float().mean()),
        loss=float(F.cross_entropy(logits_te, task.y_test)),
        train_accuracy=train_acc,
        feature_dim=int(f_tr.shape[1]),
        options={"steps": steps, "lr": lr, "weight_decay": weight_decay, "seed": seed},
    )
