"""Knowledge distillation: a student trained to match a frozen teacher's softened outputs.

* :func:`distill`: a copy of the student is trained with Adam on the task's training split to minimise
  ``(1 - alpha) * T**2 * KL + alpha * CE(student, y)``, where ``KL`` is the forward ``KL(p || q)`` or the
  reverse ``KL(q || p)`` divergence between the teacher's ``p = softmax(teacher_logits / T)`` and the
  student's ``q = softmax(student_logits / T)`` (early stopping on a validation split, best weights kept).
* :func:`forward_kl`, :func:`reverse_kl`: the two divergences per sample, at temperature ``T``.

Forward KL (Hinton et al., 2015) is *mass-covering*: the student is penalised wherever the teacher puts
probability and the student does not. Reverse KL is *mode-seeking*: the student is penalised wherever it
puts probability and the teacher does not, so it may concentrate on the teacher's main class.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from ._torch import batched_apply, cpu_generator, model_dtype, resolve_device, train_epochs
from ._validate import (
    as_float_tensor,
    check_choice,
    check_finite,
    check_int,
    check_model,
    check_real,
    check_seed,
    model_outputs_2d,
)
from .data.task import Task, check_task

__all__ = ["DIVERGENCES", "DistillResult", "distill", "forward_kl", "reverse_kl"]

DIVERGENCES = ("forward", "reverse")
_EVAL_BATCH = 2048


# ------------------------------------------------------------------------------------------------------
# the divergences
# ------------------------------------------------------------------------------------------------------


def _log_probs(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    # log_softmax subtracts the row maximum first: finite for any finite logits (no log(0) = -inf)
    return F.log_softmax(logits / temperature, dim=1)


def _forward_kl(teacher_logits: torch.Tensor, student_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    log_p = _log_probs(teacher_logits, temperature)
    log_q = _log_probs(student_logits, temperature)
    return (log_p.exp() * (log_p - log_q)).sum(dim=1)


def _reverse_kl(teacher_logits: torch.Tensor, student_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    log_p = _log_probs(teacher_logits, temperature)
    log_q = _log_probs(student_logits, temperature)
    return (log_q.exp() * (log_q - log_p)).sum(dim=1)


_KL = {"forward": _forward_kl, "reverse": _reverse_kl}


def _check_temperature(temperature: Any) -> float:
    t = check_real(temperature, "temperature")  # type and finiteness, with the argument's name
    if t <= 0:
        raise ValueError(f"temperature must be > 0, got {t!r}")
    return t


def _check_logit_pair(teacher_logits: Any, student_logits: Any) -> tuple[torch.Tensor, torch.Tensor]:
    t = as_float_tensor(teacher_logits, "teacher_logits")
    s = as_float_tensor(student_logits, "student_logits")
    for x, name in ((t, "teacher_logits"), (s, "student_logits")):
        if x.ndim != 2 or x.shape[1] < 1:
            raise ValueError(f"{name} must be a 2-D (samples, classes) tensor, got shape {tuple(x.shape)}")
        check_finite(x.detach(), name)
    if t.shape != s.shape:
        raise ValueError(
            f"teacher_logits and student_logits must have the same shape (samples, classes), got "
            f"{tuple(t.shape)} and {tuple(s.shape)}"
        )
    if t.device != s.device:
        raise ValueError(f"teacher_logits and student_logits are on different devices ({t.device} and {s.device})")
    dt = torch.promote_types(t.dtype, s.dtype)
    return t.to(dt), s.to(dt)


def forward_kl(teacher_logits: torch.Tensor, student_logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Per-sample forward divergence ``KL(p || q) = sum_c p_c (log p_c - log q_c)``, shape ``(N,)``.

    ``p = softmax(teacher_logits / T)``, ``q = softmax(student_logits / T)``; both logit tensors are
    ``(N, C)`` and finite. The log-probabilities come from ``log_softmax``, so logits of any finite size
    (``+-1e4`` included) give finite values. Gradients flow to both inputs (detach the teacher's yourself).

    The value is the plain divergence at temperature ``T``: it is **not** multiplied by ``T**2``. The
    ``T**2`` factor (Hinton's, which keeps gradient sizes comparable across temperatures) is applied by
    :func:`distill`'s training loss only.
    """
    t, s = _check_logit_pair(teacher_logits, student_logits)
    return _forward_kl(t, s, _check_temperature(temperature))


def reverse_kl(teacher_logits: torch.Tensor, student_logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Per-sample reverse divergence ``KL(q || p) = sum_c q_c (log q_c - log p_c)``, shape ``(N,)``.

    Same conventions as :func:`forward_kl` (``p`` the teacher's, ``q`` the student's softened distribution;
    no ``T**2`` factor).
    """
    t, s = _check_logit_pair(teacher_logits, student_logits)
    return _reverse_kl(t, s, _check_temperature(temperature))


def _objective(
    teacher_logits: torch.Tensor,
    student_logits: torch.Tensor,
    y: torch.Tensor,
    divergence: str,
    temperature: float,
    alpha: float,
) -> torch.Tensor:
    """The distillation loss, averaged over the batch: ``(1 - alpha) * T**2 * KL + alpha * CE``.

    A term whose weight is 0 is not computed at all, so ``alpha == 1`` never looks at the teacher's logits.
    """
    loss = student_logits.new_zeros(())
    if alpha < 1.0:
        kl = _KL[divergence](teacher_logits, student_logits, temperature).mean()
        loss = loss + (1.0 - alpha) * temperature**2 * kl
    if alpha > 0.0:
        loss = loss + alpha * F.cross_entropy(student_logits, y)
    return loss


# ------------------------------------------------------------------------------------------------------
# distillation
# ------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DistillResult:
    """A distilled student and how close it got to its teacher on the task's test split."""

    divergence: str  # "forward" or "reverse"
    temperature: float
    accuracy: float  # the trained student's test accuracy
    teacher_accuracy: float  # the teacher's test accuracy
    agreement: float  # fraction of test samples where student and teacher predict the same class
    kl_test: float  # mean per-sample divergence (the one trained) on the test split at temperature T, no T**2
    options: dict[str, Any]  # every option, epochs_run, best_epoch, n_train, n_val
    student: nn.Module = field(compare=False, repr=False)  # the trained copy, eval mode; not in equality

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly fields (the student left out)."""
        return {
            "divergence": self.divergence,
            "temperature": self.temperature,
            "accuracy": self.accuracy,
            "teacher_accuracy": self.teacher_accuracy,
            "agreement": self.agreement,
            "kl_test": self.kl_test,
            "options": dict(self.options),
        }


def _copy(model: nn.Module, role: str) -> nn.Module:
    try:
        return copy.deepcopy(model)
    except Exception as exc:  # noqa: BLE001 - re-raised with what went wrong
        raise TypeError(f"distill works on a deep copy of the {role}, but copy.deepcopy({role}) failed: {exc}") from exc


def _probe_outputs(model: nn.Module, x: torch.Tensor, role: str, dev: torch.device) -> int:
    """The number of outputs of ``model`` (checked to be a per-sample (N, K) tensor) on two task inputs."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        out = model_outputs_2d(model, x[:2].to(device=dev, dtype=model_dtype(model)), role)
    finally:
        for m, training in modes:
            m.training = training
    return int(out.shape[1])


def distill(
    teacher: nn.Module,
    student: nn.Module,
    task: Task,
    *,
    divergence: str = "forward",
    temperature: float = 4.0,
    alpha: float = 0.0,
    epochs: int = 20,
    lr: float = 1e-3,
    batch_size: int = 128,
    val_fraction: float = 0.2,
    patience: int = 3,
    seed: int = 0,
    device: str | torch.device = "auto",
) -> DistillResult:
    """Distil ``teacher`` into a copy of ``student`` on ``task``'s inputs; report how close the student got.

    The training loss, averaged over a mini-batch, is ``(1 - alpha) * T**2 * KL + alpha * CE(student_logits, y)``
    with ``KL`` the per-sample :func:`forward_kl` (``divergence="forward"``, ``KL(p || q)``) or
    :func:`reverse_kl` (``"reverse"``, ``KL(q || p)``) at temperature ``T``, ``p`` the teacher's and ``q`` the
    student's softened distribution. ``alpha = 0`` is pure distillation; ``alpha = 1`` ignores the teacher
    (plain supervised training of the student on the labels).

    Neither model is modified: the teacher is deep-copied, frozen (eval mode, no gradients) and its logits on
    the training and test inputs are computed once; the student is deep-copied and all its floating
    parameters (including ones the caller had frozen) are trained with Adam. Both must return ``(N, K)``
    logits with the same ``K`` (at least ``task.num_classes``); anything else is refused with a
    ``ValueError`` before training starts.

    Options:
        divergence: ``"forward"`` or ``"reverse"``.
        temperature: ``T > 0``; larger values soften both distributions (more of the teacher's "dark
            knowledge" about wrong classes).
        alpha: weight in ``[0, 1]`` of the hard-label cross-entropy.
        epochs: at most this many passes over the training data (integer >= 1).
        lr: Adam learning rate (> 0).
        batch_size: mini-batch size (>= 1); batches are reshuffled each epoch from ``seed``.
        val_fraction: fraction in ``(0, 1)`` of the task's training split held out (drawn from ``seed``, as
            :func:`~transferlens.training.fit` and :func:`~transferlens.finetune.fine_tune` do) for early
            stopping on the validation value of the training loss; training stops after ``patience`` epochs
            (>= 1) without a lower one, and the weights of the lowest are restored.
        seed: validation split, batch order and dropout (integer >= 0). Same seed, same result on the CPU (at
            a given thread count).
        device: ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"`` or a ``torch.device``.

    Returns a :class:`DistillResult`: the student's and the teacher's test accuracy, their ``agreement``
    (fraction of test samples with the same predicted class), ``kl_test`` (the trained divergence, at ``T``
    and without the ``T**2`` factor, averaged over the test split, computed in float64), ``options`` (every
    option, plus ``epochs_run``, ``best_epoch`` (1-based), ``n_train`` and ``n_val``) and the trained
    ``student`` copy (eval mode, on ``device``). A non-finite training or validation loss raises
    ``ValueError`` (lower ``lr``).
    """
    check_model(teacher, "teacher")
    check_model(student, "student")
    check_task(task)
    divergence = check_choice(divergence, "divergence", DIVERGENCES)
    temperature = _check_temperature(temperature)
    alpha = check_real(alpha, "alpha")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1] (the weight of the hard-label cross-entropy), got {alpha!r}")
    epochs = check_int(epochs, "epochs", 1)
    lr = check_real(lr, "lr", positive=True)
    batch_size = check_int(batch_size, "batch_size", 1)
    val_fraction = check_real(val_fraction, "val_fraction", positive=True, below=1.0)
    patience = check_int(patience, "patience", 1)
    seed = check_seed(seed)
    dev = resolve_device(device)

    n = len(task.x_train)
    n_val = max(1, int(round(val_fraction * n)))
    if n - n_val < 1:
        raise ValueError(
            f"task {task.name!r} has too few training samples ({n}) for a validation split of val_fraction="
            f"{val_fraction:g}; lower val_fraction or use a larger task"
        )

    work = _copy(student, "student").to(dev)
    frozen = _copy(teacher, "teacher").to(dev)
    frozen.eval()
    for p in frozen.parameters():
        p.requires_grad_(False)
    k_teacher = _probe_outputs(frozen, task.x_train, "teacher", dev)
    k_student = _probe_outputs(work, task.x_train, "student", dev)
    if k_teacher != k_student:
        raise ValueError(
            f"teacher and student must output the same number of classes: the teacher returns {k_teacher} logits "
            f"per sample, the student {k_student}; distillation matches the two distributions class by class"
        )
    if k_student < task.num_classes:
        raise ValueError(
            f"the models return {k_student} logits per sample but task {task.name!r} has {task.num_classes} classes"
        )

    dt_s, dt_t = model_dtype(work), model_dtype(frozen)
    # the teacher's logits, once: training split (training and validation parts) and test split, on the CPU
    t_train = batched_apply(frozen, task.x_train.to(dtype=dt_t), _EVAL_BATCH, dev)
    t_test = batched_apply(frozen, task.x_test.to(dtype=dt_t), _EVAL_BATCH, dev)
    del frozen
    if not (bool(torch.isfinite(t_train).all()) and bool(torch.isfinite(t_test).all())):
        raise ValueError("the teacher returned NaN/Inf logits on the task inputs; check the teacher and the data")

    gen = cpu_generator(seed)
    perm = torch.randperm(n, generator=gen)
    val_idx, tr_idx = perm[:n_val], perm[n_val:]
    x_all = task.x_train.to(dtype=dt_s)
    x_tr, y_tr = x_all[tr_idx].to(dev), task.y_train[tr_idx].to(dev)
    t_tr = t_train[tr_idx].to(device=dev, dtype=dt_s)
    x_val, y_val, t_val = x_all[val_idx], task.y_train[val_idx], t_train[val_idx].double()

    for p in work.parameters():
        if p.is_floating_point():
            p.requires_grad_(True)
    opt = torch.optim.Adam([p for p in work.parameters() if p.requires_grad], lr=lr)

    epochs_run, best = train_epochs(
        work, opt, lambda idx: _objective(t_tr[idx], work(x_tr[idx]), y_tr[idx], divergence, temperature, alpha),
        lambda: float(_objective(t_val, batched_apply(work, x_val, _EVAL_BATCH, dev).double(), y_val, divergence, temperature, alpha)),
        len(tr_idx), epochs=epochs, batch_size=batch_size, patience=patience, seed=seed, gen=gen, device=dev,
        diverged=lambda epoch, train, val: (
            f"distillation on task {task.name!r} diverged in epoch {epoch} (training loss {train:.4g}, validation "
            f"loss {val:.4g}); lower lr (now {lr:g}) or check the models and the data"
        ),
    )
    work.eval()

    s_test = batched_apply(work, task.x_test.to(dtype=dt_s), _EVAL_BATCH, dev)
    pred_s, pred_t = s_test.argmax(1), t_test.argmax(1)
    kl_test = _KL[divergence](t_test.double(), s_test.double(), temperature)
    return DistillResult(
        divergence=divergence,
        temperature=temperature,
        accuracy=float((pred_s == task.y_test).double().mean()),
        teacher_accuracy=float((pred_t == task.y_test).double().mean()),
        agreement=float((pred_s == pred_t).double().mean()),
        kl_test=float(kl_test.mean()),
        options={
            "divergence": divergence,
            "temperature": temperature,
            "alpha": alpha,
            "epochs": epochs,
            "lr": lr,
            "batch_size": batch_size,
            "val_fraction": val_fraction,
            "patience": patience,
            "seed": seed,
            "device": dev.type,
            "epochs_run": epochs_run,
            "best_epoch": best.epoch,
            "n_train": int(len(tr_idx)),
            "n_val": int(n_val),
        },
        student=work,
    )
