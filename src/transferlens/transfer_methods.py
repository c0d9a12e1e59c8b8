"""Knowledge-transfer methods as ground truths: one registry shared by the experiments and by users.

Every method takes a source model and a target :class:`~transferlens.data.task.Task` and returns a
:class:`~transferlens.knowledge.KnowledgeResult` (target test accuracy and loss, per-sample test hits, every
option used), so any of them can serve as the ground truth that a transferability score is judged against
(E2's ``transfer_methods``, E4's ``ground_truths``):

============== =========================================================================================
``linear_probe`` :func:`~transferlens.linear_probe`: logistic regression on the frozen features
``last_layer``   :func:`~transferlens.retrain_last_layer`: a new linear head trained by Adam on them
``fine_tune``    :func:`~transferlens.fine_tune`: new head, every parameter trained, early stopping
``knn``          :func:`~transferlens.knn_transfer`: k nearest neighbours on the frozen features
``distill``      :func:`~transferlens.distill`: the source as teacher of a fresh ``student`` network
                 (an architecture name of :func:`~transferlens.build_model`, default ``"mlp"``) trained on
                 the target's inputs; accuracy and loss are the student's
============== =========================================================================================

``transfer(name, model, task, seed=..., device=..., **options)`` runs one; options are the method's own
keyword arguments and are checked before any work (an unknown one is refused with the list of known ones).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from ._validate import check_model, check_seed
from .data.task import Task
from .distill import distill
from .finetune import fine_tune, knn_transfer
from .knowledge import KnowledgeResult, linear_probe, retrain_last_layer

__all__ = ["TRANSFER_METHODS", "TransferMethod", "transfer", "transfer_method_names"]


@dataclass(frozen=True)
class TransferMethod:
    """A registered method: ``fn`` is the library function, ``uses`` which of ``seed`` / ``device`` it takes."""

    name: str
    fn: Callable[..., Any]
    summary: str
    uses: tuple[str, ...] = ()
    extra_options: tuple[str, ...] = field(default=())

    def option_names(self) -> list[str]:
        return sorted({*_keyword_only(self.fn), *self.extra_options} - {"seed", "device"})


def _keyword_only(fn: Callable[..., Any]) -> list[str]:
    return [p.name for p in inspect.signature(fn).parameters.values() if p.kind is inspect.Parameter.KEYWORD_ONLY]


def _distill(teacher: nn.Module, task: Task, *, student: str = "mlp", seed: int = 0, device: Any = "auto",
             **options: Any) -> KnowledgeResult:
    """Distil ``teacher`` into a fresh ``student`` (architecture name) on ``task``: the student's accuracy and
    cross-entropy on the test split. ``feature_dim`` is the number of teacher outputs the student learns from."""
    from .models import build_model

    if not isinstance(student, str):
        raise ValueError(f"distill's student must be an architecture name (e.g. 'mlp'), got {student!r}")
    net = build_model(student, task.input_shape, task.num_classes, seed=seed)
    r = distill(teacher, net, task, seed=seed, device=device, **options)
    model = r.student.cpu()
    with torch.no_grad():
        logits_te, logits_tr = model(task.x_test).double(), model(task.x_train).double()
    hits = logits_te.argmax(1) == task.y_test
    return KnowledgeResult(
        method="distill", accuracy=float(hits.double().mean()), loss=float(F.cross_entropy(logits_te, task.y_test)),
        train_accuracy=float((logits_tr.argmax(1) == task.y_train).double().mean()), feature_dim=int(logits_te.shape[1]),
        options={**r.options, "student": student, "teacher_accuracy": r.teacher_accuracy, "agreement": r.agreement},
        test_correct=hits.numpy(),
    )


TRANSFER_METHODS: dict[str, TransferMethod] = {
    m.name: m for m in (
        TransferMethod("linear_probe", linear_probe, "logistic regression on the frozen features"),
        TransferMethod("last_layer", retrain_last_layer, "a new linear head trained on the frozen features", ("seed",)),
        TransferMethod("fine_tune", fine_tune, "new head, every parameter trained", ("seed", "device")),
        TransferMethod("knn", knn_transfer, "k nearest neighbours on the frozen features"),
        TransferMethod("distill", _distill, "the source teaches a fresh student on the target", ("seed", "device"),
                       extra_options=tuple(_keyword_only(distill))),
    )
}


def transfer_method_names() -> list[str]:
    """The registered method names, in registry order."""
    return list(TRANSFER_METHODS)


def get_transfer_method(name: str) -> TransferMethod:
    if name not in TRANSFER_METHODS:
        raise ValueError(f"unknown transfer method {name!r}; choose from {transfer_method_names()}")
    return TRANSFER_METHODS[name]


def check_transfer_options(name: str, options: dict[str, Any]) -> None:
    """Refuse options the method does not take (before any work), naming the ones it does."""
    known = get_transfer_method(name).option_names()
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise ValueError(f"transfer method {name!r} takes no option(s) {unknown}; its options are {known}")


def transfer(name: str, model: nn.Module, task: Task, *, seed: int = 0, device: str | torch.device = "auto",
             **options: Any) -> KnowledgeResult:
    """Transfer ``model`` to ``task`` with the registered method ``name``; ``seed`` and ``device`` go to the
    methods that use them (the others are deterministic and run on the CPU)."""
    method = get_transfer_method(name)
    check_transfer_options(name, options)
    check_model(model)
    given = {"seed": check_seed(seed), "device": device}
    return method.fn(model, task, **{k: given[k] for k in method.uses}, **options)
