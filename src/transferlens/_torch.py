"""Small torch helpers shared by the measuring modules."""

from __future__ import annotations

import math
from contextlib import contextmanager
from typing import Callable, Iterator

import torch
from torch import nn


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` picks CUDA when available, else CPU."""
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError as exc:
        raise ValueError(f"unknown device {device!r}; use 'auto', 'cpu' or 'cuda'") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available here; use 'auto' or 'cpu'")
    return dev


def model_device(model: nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    for b in model.buffers():
        return b.device
    return torch.device("cpu")


def model_dtype(model: nn.Module, fallback: torch.dtype | None = None) -> torch.dtype:
    """The floating dtype of the model's parameters (inputs are cast to it). A model without floating
    parameters takes ``fallback`` (the inputs' own dtype, so float64 data stays float64), else the
    default dtype."""
    for p in model.parameters():
        if torch.is_floating_point(p):
            return p.dtype
    return fallback if fallback is not None else torch.get_default_dtype()


@contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Run a block with the global torch RNG seeded from ``seed``; every generator (CPU and CUDA) is
    restored afterwards, so the caller's random streams are untouched."""
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


def _modes(model: nn.Module) -> list[tuple[nn.Module, bool]]:
    """The train/eval flag of every submodule: a user's model may mix them (a frozen BatchNorm in eval mode
    inside a model in train mode), and ``model.train(flag)`` alone would overwrite them all."""
    return [(m, m.training) for m in model.modules()]


def _restore_modes(modes: list[tuple[nn.Module, bool]]) -> None:
    for m, training in modes:
        m.training = training


@contextmanager
def keep_mode(model: nn.Module) -> Iterator[None]:
    """Restore the train/eval mode of the model and of each submodule when the block ends, also on an exception."""
    modes = _modes(model)
    try:
        yield
    finally:
        _restore_modes(modes)


@contextmanager
def frozen_eval(*models: nn.Module) -> Iterator[None]:
    """Eval mode and no parameter gradients for the duration; previous state restored afterwards (the mode
    of every submodule, not just the top one).

    The same model may appear twice: states are restored in reverse order, so the original wins.
    """
    saved = []
    for m in models:
        saved.append((_modes(m), [(p, p.requires_grad) for p in m.parameters()]))
        m.eval()
        for p in m.parameters():
            p.requires_grad_(False)
    try:
        yield
    finally:
        for modes, params in reversed(saved):
            _restore_modes(modes)
            for p, rg in params:
                p.requires_grad_(rg)


def fresh(x: torch.Tensor, device: torch.device | None = None, dtype: torch.dtype | None = None) -> torch.Tensor:
    """``x`` on ``device``/``dtype`` as a new tensor that shares no memory with ``x``: what a model is given,
    so that a model whose first operation is in place (``nn.ReLU(inplace=True)``, ``x.clamp_()``) can never
    modify the caller's data."""
    return x.to(device=device if device is not None else x.device, dtype=dtype if dtype is not None else x.dtype, copy=True)


def batched_apply(fn, x: torch.Tensor, batch_size: int, device: torch.device) -> torch.Tensor:
    """Apply ``fn`` chunk by chunk without gradients (each chunk a fresh copy); results concatenated on the CPU."""
    outs = []
    with torch.no_grad():
        for i in range(0, len(x), batch_size):
            outs.append(fn(fresh(x[i : i + batch_size], device)).detach().cpu())
    return torch.cat(outs)


def cpu_generator(seed: int) -> torch.Generator:
    """A CPU ``torch.Generator`` seeded with ``seed``: every draw made from it depends on ``seed`` only."""
    return torch.Generator(device="cpu").manual_seed(seed)


def uniform(
    shape: tuple[int, ...], gen: torch.Generator, low: float = -0.5, high: float = 0.5, dtype: torch.dtype = torch.float64
) -> torch.Tensor:
    """``U(low, high)`` draws of ``shape`` (float64 by default) from ``gen``."""
    return torch.rand(shape, generator=gen, dtype=dtype) * (high - low) + low


def cpu_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """A detached CPU copy of the model's state dict (what a store saves as weights)."""
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}


class BestWeights:
    """Early stopping on a validation loss: keeps a copy of the weights of the best epoch so far (an
    improvement must exceed ``min_delta``) and says when ``patience`` epochs have passed without one."""

    def __init__(self, patience: int, min_delta: float = 1e-6) -> None:
        self.patience, self.min_delta = patience, min_delta
        self.loss, self.epoch, self.bad = float("inf"), 0, 0
        self.state: dict[str, torch.Tensor] | None = None

    def update(self, model: nn.Module, loss: float, epoch: int) -> bool:
        """Record epoch ``epoch``'s validation ``loss``; True when training should stop."""
        if loss < self.loss - self.min_delta:
            self.loss, self.epoch, self.bad = loss, epoch, 0
            self.state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            return False
        self.bad += 1
        return self.bad >= self.patience

    def restore(self, model: nn.Module) -> None:
        """Load the best epoch's weights into ``model``."""
        if self.state is None:
            raise RuntimeError("no epoch was recorded; call update() after each epoch")
        model.load_state_dict(self.state)


def train_epochs(
    model: nn.Module,
    opt: torch.optim.Optimizer,
    batch_loss: Callable[[torch.Tensor], torch.Tensor],
    val_loss: Callable[[], float],
    n_train: int,
    *,
    epochs: int,
    batch_size: int,
    patience: int,
    seed: int,
    gen: torch.Generator,
    device: torch.device,
    diverged: Callable[[int, float, float], str],
) -> tuple[int, BestWeights]:
    """Minibatch training with early stopping, the loop shared by fine-tuning and distillation.

    Each epoch draws a permutation of the ``n_train`` training indices from ``gen``, steps ``opt`` on
    ``batch_loss(indices)`` for each batch, then scores ``val_loss()`` in eval mode; stops after ``patience``
    epochs without improvement and loads the best epoch's weights. Dropout and other random layers draw from
    a forked RNG seeded from ``seed``. A non-finite training or validation loss raises ``ValueError`` with the
    message ``diverged(epoch, train_loss, val_loss)``. Returns the epochs run and the early-stopping record.
    """
    best, epochs_run = BestWeights(patience), 0
    with seeded(seed):
        for epoch in range(1, epochs + 1):
            model.train()
            order = torch.randperm(n_train, generator=gen).to(device)
            total = 0.0
            for i in range(0, len(order), batch_size):
                idx = order[i : i + batch_size]
                loss = batch_loss(idx)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                total += float(loss.detach()) * len(idx)
            model.eval()
            epochs_run = epoch
            v = val_loss()
            if not (math.isfinite(total) and math.isfinite(v)):
                raise ValueError(diverged(epoch, total / len(order), v))
            if best.update(model, v, epoch):
                break
    best.restore(model)  # epoch 1 always improves on inf (or raised above)
    return epochs_run, best
