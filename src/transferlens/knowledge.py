"""Knowledge transferability: how well a source model's frozen features solve the target task.

* :func:`linear_probe`: L2-regularised multinomial logistic regression on standardized frozen features
  (scikit-learn, L-BFGS) — the usual "linear evaluation" protocol.
* :func:`retrain_last_layer`: a fresh linear head trained with Adam and cross-entropy on the raw frozen
  features (what fine-tuning only the last layer does), full batch.

Both report accuracy and mean cross-entropy on the target task's test split.

* :func:`refit_output_layer` (regression, experiment E1): the output layer re-fitted in closed form (least
  squares) on the frozen features; reports the RMSE on the target data.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from ._torch import batched_apply, frozen_eval, model_device, model_dtype, seeded
from ._validate import (
    as_float_tensor,
    check_finite,
    check_int,
    check_model,
    check_nonempty,
    check_positive,
    check_real,
    check_seed,
    model_outputs_2d,
)
from .data.rbf import RegressionData
from .data.task import Task
from .models.base import FeatureModel, feature_extractor
from .training_regression import check_model_data, closed_form_head, regression_rmse


@dataclass(frozen=True)
class KnowledgeResult:
    """Target-test accuracy and cross-entropy of a transfer method on a source's frozen features."""

    method: str
    accuracy: float
    loss: float
    train_accuracy: float
    feature_dim: int
    options: dict[str, Any] = field(default_factory=dict)
    # per test sample: whether the transferred model got it right (accuracy == test_correct.mean()); kept out
    # of equality and of to_dict (an array), used to resample the test set for confidence intervals
    test_correct: np.ndarray | None = field(default=None, compare=False, repr=False)

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
    """``model``'s penultimate features of ``x`` flattened to (N, D), in eval mode without gradients (the
    mode of every submodule restored afterwards).

    The features come from :func:`transferlens.models.base.feature_extractor`: a ``FeatureModel``'s (or a
    ``wrap_model`` wrapper's) ``features``; a module whose ``features`` is a submodule (torchvision's
    convolutional trunk) is refused with a ``TypeError`` saying how to wrap it. ``x`` is cast to the
    model's dtype and device (each chunk a copy: the model never sees the caller's tensor), and the model
    is first run on two samples so that a wrong input shape fails with a ``ValueError`` that says so.
    """
    return _features(model, x, batch_size, "x")


def _features(model: Any, x: Any, batch_size: Any, name: str) -> torch.Tensor:
    check_model(model)
    features = feature_extractor(model)
    batch_size = check_int(batch_size, "batch_size", 1)
    x = as_float_tensor(x, name).detach()
    check_nonempty(x, name)
    check_finite(x, name)
    dev, dt = model_device(model), model_dtype(model)
    x = x.to(dtype=dt)  # batched_apply copies each chunk onto the device
    with frozen_eval(model):
        model_outputs_2d(model, x[:2].to(dev), "model")
        try:
            with torch.no_grad():
                probe = features(x[:2].to(dev, copy=True))
        except RuntimeError as exc:  # the forward pass worked, so this is the features() path itself
            raise ValueError(
                f"model.features could not process inputs of shape {tuple(x.shape[1:])} (per sample, dtype {dt}): "
                f"{exc}"
            ) from exc
        if not isinstance(probe, torch.Tensor) or probe.ndim < 1 or probe.shape[0] != min(2, len(x)):
            raise ValueError(
                "model.features must return a (batch, ...) tensor with one row per sample, got "
                f"{type(probe).__name__}{tuple(probe.shape) if isinstance(probe, torch.Tensor) else ''} for a batch "
                f"of {min(2, len(x))}"
            )
        feats = batched_apply(lambda b: features(b).reshape(len(b), -1), x, batch_size, dev)
    if not bool(torch.isfinite(feats).all()):
        raise ValueError("the model produced NaN/Inf features on the task inputs; check the model and the data")
    return feats


def _check_task(task: Any) -> None:
    if not isinstance(task, Task):
        raise TypeError(
            f"task must be a transferlens Task, got {type(task).__name__}; build one with "
            "transferlens.Task(name, x_train, y_train, x_test, y_test, num_classes)"
        )


def _task_features(model: Any, task: Task) -> tuple[torch.Tensor, torch.Tensor]:
    """Frozen features of the task's train and test splits."""
    _check_task(task)
    check_model(model)
    return _features(model, task.x_train, 2048, "task.x_train"), _features(model, task.x_test, 2048, "task.x_test")


def linear_probe(model: nn.Module, task: Task, *, C: float = 1.0, max_iter: int = 500) -> KnowledgeResult:
    """Fit ``LogisticRegression(C)`` on standardized train features; score the test split.

    ``C`` is the inverse L2 strength (scikit-learn convention). Deterministic (L-BFGS, no sampling). When
    L-BFGS stops at ``max_iter`` before converging, a ``sklearn.exceptions.ConvergenceWarning`` says so
    (with what to change); the result is still returned.
    """
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import log_loss
    from sklearn.preprocessing import StandardScaler

    _check_task(task)
    check_model(model)
    C = check_positive(C, "C")
    max_iter = check_int(max_iter, "max_iter", 1)
    f_tr, f_te = (f.double().numpy() for f in _task_features(model, task))
    scaler = StandardScaler().fit(f_tr)
    clf = LogisticRegression(C=C, max_iter=max_iter)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        clf.fit(scaler.transform(f_tr), task.y_train.numpy())
    converged = True
    for w in caught:  # scikit-learn's own convergence warning is replaced by ours; anything else passes on
        if issubclass(w.category, ConvergenceWarning):
            converged = False
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno, source=w.source)
    if not converged:
        warnings.warn(
            f"linear_probe did not converge: L-BFGS stopped after {int(np.max(clf.n_iter_))} iteration(s) "
            f"(max_iter={max_iter}) before reaching its tolerance, so the probe is under-fitted and its accuracy "
            "and loss understate what the features support; raise max_iter (or lower C)",
            ConvergenceWarning,
            stacklevel=2,
        )
    z_te = scaler.transform(f_te)
    proba = np.zeros((len(z_te), task.num_classes))
    proba[:, clf.classes_] = clf.predict_proba(z_te)
    y_te = task.y_test.numpy()
    correct = proba.argmax(1) == y_te
    return KnowledgeResult(
        method="linear_probe",
        accuracy=float(correct.mean()),
        loss=float(log_loss(y_te, np.clip(proba, 1e-12, 1.0), labels=np.arange(task.num_classes))),
        train_accuracy=float(clf.score(scaler.transform(f_tr), task.y_train.numpy())),
        feature_dim=int(f_tr.shape[1]),
        options={"C": C, "max_iter": max_iter, "standardize": True},
        test_correct=correct,
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
    """Train a new ``nn.Linear(D, num_classes)`` head on the frozen features (full-batch Adam, ``steps`` steps).

    The head is trained in float64 when the model's features are float64, else in float32.
    """
    _check_task(task)
    check_model(model)
    steps = check_int(steps, "steps", 1)
    lr = check_positive(lr, "lr")
    weight_decay = check_real(weight_decay, "weight_decay", nonnegative=True)
    seed = check_seed(seed)
    f_tr, f_te = _task_features(model, task)
    dt = torch.float64 if f_tr.dtype == torch.float64 else torch.float32
    f_tr, f_te = f_tr.to(dt), f_te.to(dt)
    with seeded(seed):
        head = nn.Linear(f_tr.shape[1], task.num_classes).to(dt)
    opt = torch.optim.Adam(head.parameters(), lr=lr, weight_decay=weight_decay)
    for _ in range(steps):
        loss = F.cross_entropy(head(f_tr), task.y_train)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    with torch.no_grad():
        logits_te = head(f_te)
        train_acc = float((head(f_tr).argmax(1) == task.y_train).float().mean())
    hits = logits_te.argmax(1) == task.y_test
    correct = hits.numpy()
    return KnowledgeResult(
        method="last_layer",
        accuracy=float(hits.float().mean()),
        loss=float(F.cross_entropy(logits_te, task.y_test)),
        train_accuracy=train_acc,
        feature_dim=int(f_tr.shape[1]),
        options={"steps": steps, "lr": lr, "weight_decay": weight_decay, "seed": seed},
        test_correct=correct,
    )


# ------------------------------------------------------------------------------------------------------
# regression: closed-form output layer (experiment E1)
# ------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RefitResult:
    """Closed-form output layer: ``weight`` ``(d, D)``, ``bias`` ``(d,)`` and its RMSE on the data."""

    rmse: float
    weight: torch.Tensor
    bias: torch.Tensor


def refit_output_layer(model: FeatureModel, data: RegressionData) -> RefitResult:
    """Knowledge transfer: keep ``model.features`` frozen and re-fit only the output layer.

    Solves the least-squares problem ``min ||[F, 1] W - Y||_F`` in closed form, with ``F =
    model.features(data.x)`` in float64 on the CPU, using ``torch.linalg.lstsq(..., driver="gelsd")``
    (SVD based): when ``[F, 1]`` is rank-deficient (e.g. saturated or duplicated hidden units) it returns
    the minimum-norm solution, treating singular values below ``eps * max(N, D + 1)`` times the largest
    as zero, so the fit is still optimal and finite. The model itself is not modified. Returns the RMSE
    (:func:`~transferlens.training_regression.regression_rmse`) of the re-fitted layer on ``data`` and the
    layer (float64, CPU).
    """
    x, _ = check_model_data(model, data)
    with torch.no_grad():
        feats = model.features(x)
    if not isinstance(feats, torch.Tensor) or feats.ndim != 2 or feats.shape[0] != data.n_samples:
        shape = tuple(feats.shape) if isinstance(feats, torch.Tensor) else type(feats).__name__
        raise ValueError(f"model.features must return (N, D) = ({data.n_samples}, D), got {shape}")
    feats = feats.detach().to(device="cpu", dtype=torch.float64)
    if not bool(torch.isfinite(feats).all()):
        raise ValueError("model.features returned NaN/Inf values; cannot fit an output layer")
    y = data.y.to("cpu")
    solution = closed_form_head(feats, y)  # (D + 1, d)
    pred = feats @ solution[:-1] + solution[-1]
    return RefitResult(
        rmse=regression_rmse(pred, y),
        weight=solution[:-1].T.contiguous(),
        bias=solution[-1].contiguous(),
    )
