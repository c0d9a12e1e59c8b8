"""Supervised training of a model on a task: validation split, early stopping, deterministic on CPU."""

from __future__ import annotations

import copy
import math
import warnings
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Callable

import torch
from torch import nn
from torch.nn import functional as F

from ._torch import batched_apply, frozen_eval, model_device, model_dtype, resolve_device, seeded
from ._validate import check_int, check_labels, check_model, check_positive, check_real, check_seed, model_outputs_2d
from .attacks import validate_inputs
from .data.task import Task, check_task
from .regimes import Regime, Standard

# A training loss this many times above the untrained model's is divergence, even while it stays finite.
DIVERGENCE_FACTOR = 100.0


OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULES = ("constant", "cosine", "step")
TRAIN_DEFAULTS = {"optimizer": "adam", "momentum": 0.9, "schedule": "constant"}


class TrainingWarning(UserWarning):
    """Training ran but did not improve on the untrained model."""


def _optimizer(cfg: "TrainConfig", params: Any) -> torch.optim.Optimizer:
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def _schedule(cfg: "TrainConfig", opt: torch.optim.Optimizer) -> torch.optim.lr_scheduler.LRScheduler | None:
    if cfg.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.epochs)
    if cfg.schedule == "step":
        milestones = sorted({max(1, cfg.epochs // 2), max(1, (3 * cfg.epochs) // 4)})
        return torch.optim.lr_scheduler.MultiStepLR(opt, milestones=milestones, gamma=0.1)
    return None


@dataclass(frozen=True)
class TrainConfig:
    """Options of :func:`fit`. ``patience`` epochs without a better validation loss stop training.

    ``optimizer`` is ``"adam"`` (the default), ``"adamw"`` (decoupled weight decay) or ``"sgd"`` (with
    ``momentum``); ``schedule`` is ``"constant"`` (the default), ``"cosine"`` (annealed to 0 over ``epochs``)
    or ``"step"`` (the learning rate times 0.1 after half and again after three quarters of ``epochs``). The
    schedule steps once per epoch.
    """

    epochs: int = 100
    batch_size: int = 128
    lr: float = 3e-3
    weight_decay: float = 1e-4
    val_fraction: float = 0.1
    patience: int = 10
    seed: int = 0
    optimizer: str = "adam"
    momentum: float = 0.9
    schedule: str = "constant"

    def spec(self) -> dict[str, Any]:
        """The options as plain data for a cell spec. ``optimizer``, ``momentum`` and ``schedule`` are left out
        while they hold their defaults, so the keys of cells from before they existed stay the same."""
        d = asdict(self)
        for name in ("optimizer", "momentum", "schedule"):
            if d[name] == TRAIN_DEFAULTS[name]:
                del d[name]
        return d

    def __post_init__(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {self.optimizer!r}; choose from {list(OPTIMIZERS)}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"unknown schedule {self.schedule!r}; choose from {list(SCHEDULES)}")
        object.__setattr__(self, "momentum", check_real(self.momentum, "momentum", nonnegative=True, below=1.0))
        # Numbers are normalised to plain Python types (numpy scalars and 0-d tensors are accepted).
        for name in ("epochs", "batch_size", "patience"):
            object.__setattr__(self, name, check_int(getattr(self, name), name, 1))
        object.__setattr__(self, "lr", check_positive(self.lr, "lr"))
        object.__setattr__(self, "weight_decay", check_real(self.weight_decay, "weight_decay", nonnegative=True))
        val_fraction = check_real(self.val_fraction, "val_fraction", positive=True, below=1.0)
        object.__setattr__(self, "val_fraction", val_fraction)
        object.__setattr__(self, "seed", check_seed(self.seed))


@dataclass(frozen=True)
class TrainResult:
    """What :func:`fit` did: best epoch, accuracies, and the per-epoch history."""

    task: str
    epochs_run: int
    best_epoch: int
    val_accuracy: float
    test_accuracy: float
    train_loss: tuple[float, ...]
    val_loss: tuple[float, ...]
    config: TrainConfig = field(default_factory=TrainConfig)
    initial_val_loss: float | None = None
    regime: dict[str, Any] = field(default_factory=lambda: {"name": "standard"})

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["train_loss"], d["val_loss"] = list(self.train_loss), list(self.val_loss)
        return d


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 2048) -> float:
    """Fraction of samples whose argmax output equals the label (model run in eval mode)."""
    check_model(model)
    batch_size = check_int(batch_size, "batch_size", 1)
    x = validate_inputs(x)
    with frozen_eval(model):
        out = model_outputs_2d(model, x[:2].to(model_device(model), model_dtype(model, x.dtype)), "model")
    y = check_labels(y, out.shape[1], "y", len(x))
    x = x.to(dtype=model_dtype(model, x.dtype))
    with frozen_eval(model):
        pred = batched_apply(model, x, batch_size, model_device(model)).argmax(1)
    return float((pred == y.cpu()).float().mean())


def fit(
    model: nn.Module,
    task: Task,
    config: TrainConfig | None = None,
    *,
    device: str | torch.device = "auto",
    on_epoch: Callable[[int, float, float], None] | None = None,
    regime: Regime | None = None,
    **overrides: Any,
) -> TrainResult:
    """Train ``model`` on ``task`` (Adam by default; ``config.optimizer`` and ``config.schedule`` choose);
    keep the weights of the best validation loss.

    ``regime`` supplies the per-batch loss (:mod:`transferlens.regimes`: ``Standard()`` cross-entropy, the
    default; ``PGDAdversarial(eps=...)``; ``Trades(beta=..., eps=...)``); early stopping always uses the
    clean validation cross-entropy. A fraction ``val_fraction`` of the training split (drawn from ``seed``)
    is held out. ``on_epoch(epoch, train_loss, val_loss)`` is called after each epoch (for progress
    display). The model is left in eval mode on ``device``.
    """
    check_model(model)
    if regime is None:
        regime = Standard()
    if not isinstance(regime, Regime):
        raise TypeError(f"regime must be a transferlens Regime (Standard, PGDAdversarial, Trades), got {type(regime).__name__}")
    check_task(task)
    if config is not None and not isinstance(config, TrainConfig):
        raise TypeError(f"config must be a TrainConfig, got {type(config).__name__}; or pass options as keywords")
    cfg = config or TrainConfig()
    if overrides:
        valid = [f.name for f in fields(TrainConfig)]
        unknown = sorted(set(overrides) - set(valid))
        if unknown:
            raise TypeError(f"unknown training option(s) {unknown}; valid options: {valid}")
        cfg = TrainConfig(**{**asdict(cfg), **overrides})
    regime.check_bounds(task.bounds)
    dev = resolve_device(device)
    # checked where the model is now: a refused model is left as it was, on its own device
    with frozen_eval(model):  # the shape check must not touch BatchNorm statistics
        out = model_outputs_2d(model, task.x_train[:2].to(model_device(model)), "model")
    if out.shape[1] < task.num_classes:
        raise ValueError(
            f"model has {out.shape[1]} outputs but task {task.name!r} has {task.num_classes} classes"
        )
    gen = torch.Generator().manual_seed(cfg.seed)
    n = len(task.x_train)
    perm = torch.randperm(n, generator=gen)
    n_val = max(1, int(round(cfg.val_fraction * n)))
    if n - n_val < 1:
        raise ValueError(f"task {task.name!r} has too few training samples ({n}) for a validation split")
    val_idx, tr_idx = perm[:n_val], perm[n_val:]
    model.to(dev)
    x_tr, y_tr = task.x_train[tr_idx].to(dev), task.y_train[tr_idx].to(dev)
    x_val, y_val = task.x_train[val_idx].to(dev), task.y_train[val_idx].to(dev)

    opt = _optimizer(cfg, model.parameters())
    schedule = _schedule(cfg, opt)
    with frozen_eval(model), torch.no_grad():
        initial_loss = float(F.cross_entropy(model(x_val), y_val))
    best_loss, best_state, best_epoch, bad = float("inf"), None, 0, 0
    train_hist: list[float] = []
    val_hist: list[float] = []
    # Dropout and other random layers draw from a forked RNG seeded from the config; the model ends in
    # eval mode even when training fails.
    try:
        with seeded(cfg.seed):
            for epoch in range(1, cfg.epochs + 1):
                model.train()
                order = torch.randperm(len(x_tr), generator=gen).to(dev)
                total = 0.0
                for i in range(0, len(order), cfg.batch_size):
                    idx = order[i : i + cfg.batch_size]
                    if isinstance(regime, Standard):
                        loss = F.cross_entropy(model(x_tr[idx]), y_tr[idx])
                    else:  # the attack's seed: the training seed, the epoch and the batch
                        batch_seed = hash((cfg.seed, epoch, i)) % (1 << 62)
                        loss = regime.loss(model, x_tr[idx], y_tr[idx], batch_seed, task.bounds)
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    total += float(loss.detach()) * len(idx)
                train_loss = total / len(order)
                if schedule is not None:
                    schedule.step()
                limit = DIVERGENCE_FACTOR * max(initial_loss, 1.0) if math.isfinite(initial_loss) else math.inf
                if not math.isfinite(train_loss) or train_loss > limit:
                    raise ValueError(
                        f"training on task {task.name!r} diverged in epoch {epoch}: the training loss is {train_loss:.4g}, "
                        f"up from {initial_loss:.4g} for the untrained model; lower lr (now {cfg.lr:g}) or check the data"
                    )
                model.eval()
                with torch.no_grad():
                    val_loss = float(F.cross_entropy(model(x_val), y_val))
                train_hist.append(train_loss)
                val_hist.append(val_loss)
                if on_epoch is not None:
                    on_epoch(epoch, train_loss, val_loss)
                if val_loss < best_loss - 1e-6:
                    best_loss, best_epoch, bad = val_loss, epoch, 0
                    best_state = copy.deepcopy(model.state_dict())
                else:
                    bad += 1
                    if bad >= cfg.patience:
                        break
    finally:
        model.eval()
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    if math.isfinite(initial_loss) and best_loss >= initial_loss:
        warnings.warn(
            f"training on task {task.name!r} did not improve on the untrained model (validation loss "
            f"{initial_loss:.4g} before training, best {best_loss:.4g} after {len(train_hist)} epochs); "
            f"lower lr (now {cfg.lr:g}), train longer, or check that the labels are learnable",
            TrainingWarning,
            stacklevel=2,
        )
    return TrainResult(
        task=task.name,
        epochs_run=len(train_hist),
        best_epoch=best_epoch,
        val_accuracy=accuracy(model, x_val, y_val),
        test_accuracy=accuracy(model, task.x_test.to(dev), task.y_test.to(dev)),
        train_loss=tuple(train_hist),
        val_loss=tuple(val_hist),
        config=cfg,
        initial_val_loss=initial_loss,
        regime=regime.to_dict(),
    )
