"""Knowledge transfer beyond frozen features: full fine-tuning and k-nearest neighbours.

* :func:`fine_tune`: a copy of the source model gets a fresh linear head for the target classes and *all*
  its parameters are trained on the target task (Adam, backbone and head at their own learning rates,
  early stopping on a validation split).
* :func:`knn_transfer`: k-nearest-neighbour classification of the target test split on the source's
  frozen features of the target train split (no training at all).

Both return a :class:`~transferlens.knowledge.KnowledgeResult` (accuracy and a loss on the target task's
test split), like :func:`~transferlens.knowledge.linear_probe` and
:func:`~transferlens.knowledge.retrain_last_layer`.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from ._torch import batched_apply, cpu_generator, model_dtype, resolve_device, seeded, train_epochs
from ._validate import check_int, check_model, check_positive, check_real, check_seed, model_outputs_2d
from .data.task import Task, check_task
from .estimators.knn import _neighbours
from .knowledge import KnowledgeResult, _task_features
from .models.base import feature_extractor

__all__ = ["fine_tune", "knn_transfer"]

_EVAL_BATCH = 2048
_BLOCK_ELEMS = 1 << 22  # distances computed per block of queries: about 4M float64 values (32 MB) at a time


# ------------------------------------------------------------------------------------------------------
# full fine-tuning
# ------------------------------------------------------------------------------------------------------


def _head_paths(model: nn.Module) -> tuple[nn.Linear, list[str]]:
    """The model's head (an ``nn.Linear``) and every dotted name it is registered under in ``model``."""
    feature_extractor(model)  # a model without the features(x) contract: TypeError saying how to wrap it
    try:
        head = getattr(model, "head")
    except AttributeError:
        head = None
    if head is None:
        raise TypeError(
            f"fine_tune needs the model's head (its final layer): {type(model).__name__} has a features(x) method "
            "but no head attribute; wrap the underlying module with transferlens.wrap_model(module, head_name)"
        )
    if not isinstance(head, nn.Linear):
        raise TypeError(
            f"fine_tune replaces the model's head with a new nn.Linear(feature_dim, num_classes), so the head must "
            f"be an nn.Linear (its in_features is the feature dimension), got {type(head).__name__}; wrap the model "
            "with transferlens.wrap_model(module, head_name) naming its final nn.Linear layer"
        )
    paths = [name for name, m in model.named_modules(remove_duplicate=False) if m is head and name]
    if not paths:
        raise TypeError(
            f"the model's head ({type(head).__name__}) is not a registered submodule of the model, so it cannot be "
            "replaced; register it (assign it as a module attribute) or use transferlens.wrap_model"
        )
    return head, paths


def _set_submodule(root: nn.Module, path: str, module: nn.Module) -> None:
    parent_name, _, leaf = path.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, leaf, module)


def _mean_ce(logits: torch.Tensor, y: torch.Tensor) -> float:
    return float(F.cross_entropy(logits.double(), y.to(logits.device)))


def fine_tune(
    model: nn.Module,
    task: Task,
    *,
    epochs: int = 20,
    lr_backbone: float = 1e-3,
    lr_head: float = 1e-2,
    batch_size: int = 128,
    weight_decay: float = 0.0,
    val_fraction: float = 0.2,
    patience: int = 3,
    seed: int = 0,
    device: str | torch.device = "auto",
) -> KnowledgeResult:
    """Fine-tune a copy of ``model`` on ``task``: new head, every parameter trained, best validation weights.

    The source's head is replaced (in a deep copy; the caller's model, its weights, modes, device and
    ``requires_grad`` flags are never touched) by a fresh ``nn.Linear(feature_dim, task.num_classes)``
    initialised from ``seed``, because the source's output classes are not the target's. Then all parameters,
    including ones the caller had frozen, are trained with Adam and cross-entropy.

    Options:
        epochs: at most this many passes over the training data (integer >= 1).
        lr_backbone, lr_head: Adam learning rates of the copied backbone (>= 0; 0 leaves it bit-identical:
            only the new head trains) and of the new head (> 0).
        batch_size: mini-batch size (>= 1); batches are reshuffled each epoch from ``seed``.
        weight_decay: Adam's L2 penalty (>= 0), on both parameter groups.
        val_fraction: fraction in ``(0, 1)`` of the task's training split held out (drawn from ``seed``, as
            :func:`~transferlens.training.fit` does) for early stopping; training stops after ``patience``
            epochs (>= 1) without a lower validation loss, and the weights of the lowest one are restored.
        seed: head initialisation, validation split, batch order and dropout (integer >= 0). Same seed, same
            result on the CPU (at a given thread count); on CUDA, nondeterministic cuDNN kernels can change the
            last digits of the loss.
        device: ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"`` or a ``torch.device``.

    ``accuracy`` and ``loss`` are the fine-tuned copy's accuracy and mean cross-entropy on ``task``'s test
    split; ``train_accuracy`` its accuracy on the part of the training split it was trained on (the validation
    part excluded). ``options`` records every option, plus ``epochs_run`` (epochs actually run),
    ``best_epoch`` (whose weights were kept, 1-based), ``n_train`` and ``n_val``. The copy is discarded.
    A non-finite training or validation loss raises ``ValueError`` (lower the learning rates).
    """
    check_model(model)
    check_task(task)
    epochs = check_int(epochs, "epochs", 1)
    lr_backbone = check_real(lr_backbone, "lr_backbone", nonnegative=True)
    lr_head = check_positive(lr_head, "lr_head")
    batch_size = check_int(batch_size, "batch_size", 1)
    weight_decay = check_real(weight_decay, "weight_decay", nonnegative=True)
    val_fraction = check_real(val_fraction, "val_fraction", positive=True, below=1.0)
    patience = check_int(patience, "patience", 1)
    seed = check_seed(seed)
    dev = resolve_device(device)
    old_head, paths = _head_paths(model)
    feature_dim = int(old_head.in_features)

    n = len(task.x_train)
    n_val = max(1, int(round(val_fraction * n)))
    if n - n_val < 1:
        raise ValueError(
            f"task {task.name!r} has too few training samples ({n}) for a validation split of val_fraction="
            f"{val_fraction:g}; lower val_fraction or use a larger task"
        )

    try:
        work = copy.deepcopy(model)
    except Exception as exc:  # noqa: BLE001 - re-raised with what to do
        raise TypeError(f"fine_tune works on a deep copy of the model, but copy.deepcopy(model) failed: {exc}") from exc
    dt = model_dtype(work)
    with seeded(seed):
        new_head = nn.Linear(feature_dim, task.num_classes)
    new_head = new_head.to(device=dev, dtype=dt)
    for path in paths:
        _set_submodule(work, path, new_head)
    work.to(dev)
    head_ids = {id(p) for p in new_head.parameters()}
    for p in work.parameters():
        if p.is_floating_point():
            p.requires_grad_(True)
    backbone = [p for p in work.parameters() if id(p) not in head_ids and p.requires_grad]

    # The copy must now map inputs to num_classes logits through the new head (forward == head(features)).
    x_all = task.x_train.to(dtype=dt)
    work.eval()
    probe = x_all[:2].to(dev)
    out = model_outputs_2d(work, probe, "model")
    if out.shape[1] != task.num_classes:
        raise ValueError(
            f"after replacing the head with nn.Linear({feature_dim}, {task.num_classes}) the model returns "
            f"{out.shape[1]} outputs: its forward(x) must end with head(features(x))"
        )
    with torch.no_grad():
        via_head = new_head(feature_extractor(work)(probe.clone()).reshape(len(probe), -1))
    if not torch.allclose(out, via_head, rtol=1e-4, atol=1e-5):
        raise ValueError("the model's forward(x) does not equal head(features(x)); fine_tune needs that contract")

    gen = cpu_generator(seed)
    perm = torch.randperm(n, generator=gen)
    val_idx, tr_idx = perm[:n_val], perm[n_val:]
    x_tr, y_tr = x_all[tr_idx].to(dev), task.y_train[tr_idx].to(dev)
    x_val, y_val = x_all[val_idx], task.y_train[val_idx]

    groups = [{"params": list(new_head.parameters()), "lr": lr_head}]
    if backbone and lr_backbone > 0:  # lr 0: the backbone is not in the optimizer at all, so it cannot move
        groups.insert(0, {"params": backbone, "lr": lr_backbone})
    opt = torch.optim.Adam(groups, weight_decay=weight_decay)

    epochs_run, best = train_epochs(
        work, opt, lambda idx: F.cross_entropy(work(x_tr[idx]), y_tr[idx]),
        lambda: _mean_ce(batched_apply(work, x_val, _EVAL_BATCH, dev), y_val),
        len(tr_idx), epochs=epochs, batch_size=batch_size, patience=patience, seed=seed, gen=gen, device=dev,
        diverged=lambda epoch, train, val: (
            f"fine-tuning on task {task.name!r} diverged in epoch {epoch} (training loss {train:.4g}, validation "
            f"loss {val:.4g}); lower lr_backbone (now {lr_backbone:g}) and lr_head (now {lr_head:g}) or check the data"
        ),
    )
    work.eval()

    logits_te = batched_apply(work, task.x_test.to(dtype=dt), _EVAL_BATCH, dev)
    pred_tr = batched_apply(work, x_all[tr_idx], _EVAL_BATCH, dev).argmax(1)
    hits = logits_te.argmax(1) == task.y_test
    return KnowledgeResult(
        method="fine_tune",
        accuracy=float(hits.double().mean()),
        test_correct=hits.cpu().numpy(),
        loss=_mean_ce(logits_te, task.y_test),
        train_accuracy=float((pred_tr == task.y_train[tr_idx]).double().mean()),
        feature_dim=feature_dim,
        options={
            "epochs": epochs,
            "lr_backbone": lr_backbone,
            "lr_head": lr_head,
            "batch_size": batch_size,
            "weight_decay": weight_decay,
            "val_fraction": val_fraction,
            "patience": patience,
            "seed": seed,
            "device": dev.type,
            "epochs_run": epochs_run,
            "best_epoch": best.epoch,
            "n_train": int(len(tr_idx)),
            "n_val": int(n_val),
        },
    )


# ------------------------------------------------------------------------------------------------------
# k-nearest neighbours on frozen features
# ------------------------------------------------------------------------------------------------------


def _knn_votes(
    queries: torch.Tensor, ref: torch.Tensor, y_ref: np.ndarray, k: int, num_classes: int, leave_one_out: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Per query: class vote counts (Q x C) among its k nearest ``ref`` rows and the predicted class.

    Distances are Euclidean, computed pair by pair in float64 (``torch.cdist`` without the matrix-product
    shortcut, so identical rows have bitwise-equal distances and a query equal to a reference row is at 0);
    neighbours are ordered by (distance, reference index). ``leave_one_out``: query ``i`` is reference ``i``
    and is never its own neighbour. Queries are processed in blocks of about 4M distances.
    """
    n_ref = len(ref)
    block = max(1, _BLOCK_ELEMS // n_ref)
    counts_all, preds = [], []
    for start in range(0, len(queries), block):
        q = queries[start : start + block]
        rows = np.arange(len(q))
        d = torch.cdist(q, ref, compute_mode="donot_use_mm_for_euclid_dist").numpy()
        if leave_one_out:
            d[rows, start + rows] = np.inf
        nb_labels = y_ref[_neighbours(d, k)]  # (b, k), nearest first
        del d
        counts = np.bincount((rows[:, None] * num_classes + nb_labels).ravel(), minlength=len(q) * num_classes)
        counts = counts.reshape(len(q), num_classes)
        tied = counts == counts.max(axis=1, keepdims=True)
        first = np.argmax(tied[rows[:, None], nb_labels], axis=1)  # the nearest neighbour of a top class
        counts_all.append(counts)
        preds.append(nb_labels[rows, first])
    return np.concatenate(counts_all), np.concatenate(preds)


def knn_transfer(model: nn.Module, task: Task, *, k: int = 5) -> KnowledgeResult:
    """Classify the target test split by its ``k`` nearest neighbours among the target train split, on
    ``model``'s frozen penultimate features (no training).

    Euclidean distance on the raw (flattened, not standardized) features, computed in float64 and in blocks
    of test samples so memory stays bounded; equal distances are ordered by training-sample index; the
    prediction is the majority class of the ``k`` neighbours, a tie between classes going to the tied class
    of the nearest neighbour. ``k`` must satisfy ``1 <= k < len(task.x_train)``.

    ``accuracy``: fraction of test samples predicted correctly. ``loss``: the mean over test samples of
    ``-log((v + 1) / (k + C))``, where ``v`` is the number of the ``k`` neighbours with the sample's true class
    and ``C = task.num_classes`` (the cross-entropy of the Laplace-smoothed vote shares: always finite, between
    ``log((k + C) / (k + 1))`` and ``log(k + C)``). ``train_accuracy``: leave-one-out k-NN accuracy on the
    train split (each sample classified by its ``k`` nearest *other* training samples).
    """
    check_task(task)
    check_model(model)
    k = check_int(k, "k", 1)
    n_train = len(task.x_train)
    if k >= n_train:
        raise ValueError(
            f"k must be smaller than the number of training samples ({n_train}) of task {task.name!r}, got k={k}: "
            "the training accuracy is leave-one-out, which leaves N-1 neighbours per sample"
        )
    f_tr, f_te = (f.double() for f in _task_features(model, task))
    y_tr, y_te = task.y_train.numpy(), task.y_test.numpy()
    c = task.num_classes
    counts_te, pred_te = _knn_votes(f_te, f_tr, y_tr, k, c, leave_one_out=False)
    _, pred_tr = _knn_votes(f_tr, f_tr, y_tr, k, c, leave_one_out=True)
    votes_true = counts_te[np.arange(len(y_te)), y_te]
    return KnowledgeResult(
        method="knn",
        accuracy=float(np.mean(pred_te == y_te)),
        test_correct=pred_te == y_te,
        loss=float(np.mean(-np.log((votes_true + 1.0) / (k + c)))),
        train_accuracy=float(np.mean(pred_tr == y_tr)),
        feature_dim=int(f_tr.shape[1]),
        options={"k": k, "metric": "euclidean", "train_accuracy": "leave-one-out"},
    )
