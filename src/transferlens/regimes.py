"""Training regimes: what :func:`transferlens.fit` minimises on each mini-batch.

* :class:`Standard` -- cross-entropy on the clean batch.
* :class:`PGDAdversarial` -- Madry et al. (2018): cross-entropy on ``x + delta``, ``delta`` the PGD attack
  (``steps`` steps of size ``step_size`` in the ``norm`` ball of radius ``eps``, random start) that maximises
  the cross-entropy with the **true** labels.
* :class:`Trades` -- Zhang et al. (2019): ``CE(f(x), y) + beta * KL(softmax f(x) || softmax f(x + delta))``,
  ``delta`` the PGD attack that maximises that KL. ``beta = 0`` is standard training.

The attacks are computed with the model in eval mode (BatchNorm statistics untouched, no dropout) and a
seed derived from the training seed, the epoch and the batch, so training stays deterministic on CPU. The
attack of a sample depends on that sample only (the per-sample random start of
:mod:`transferlens.attacks`). A regime is plain frozen data; ``to_dict()`` goes into a trained model's
cell spec, so its options are part of the model's key.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, fields
from typing import Any, ClassVar

import torch
from torch import nn
from torch.nn import functional as F

from ._torch import frozen_eval, model_device, model_dtype
from ._validate import (
    check_choice, check_flag, check_int, check_labels, check_model, check_positive, check_real, check_seed,
    model_outputs_2d,
)
from .attacks import NORMS, ThreatModel, _ascent, _project, _start, check_threat, validate_inputs

__all__ = ["REGIMES", "PGDAdversarial", "Regime", "Standard", "Trades", "regime_from_dict", "robust_accuracy"]


@dataclass(frozen=True)
class Regime(ABC):
    """Base class: a regime supplies the per-batch loss."""

    name: ClassVar[str] = ""

    @abstractmethod
    def loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, seed: int,
             bounds: tuple[float, float] | None = None) -> torch.Tensor:
        """The mean training loss of the batch ``(x, y)``; ``seed`` seeds its attack, ``bounds`` is the input box."""

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, **asdict(self)}

    def check_bounds(self, bounds: tuple[float, float] | None) -> None:
        """Refuse, before training, an attack radius that covers the whole input range."""


@dataclass(frozen=True)
class Standard(Regime):
    """Cross-entropy on the clean batch."""

    name: ClassVar[str] = "standard"

    def loss(self, model, x, y, seed, bounds=None):  # type: ignore[override]
        return F.cross_entropy(model(x), y)


def _threat(eps: float, steps: int, step_size: float | None, norm: str, random_start: bool,
            bounds: tuple[float, float] | None) -> ThreatModel:
    return ThreatModel(norm=norm, eps=eps, steps=steps, step_size=step_size, random_start=random_start, bounds=bounds)


def attack(model: nn.Module, x: torch.Tensor, objective, threat: ThreatModel, seed: int) -> torch.Tensor:
    """PGD ascent of ``objective(x_adv) -> (N,)`` from the per-sample start; the model in eval mode; returns
    the detached perturbation."""
    with frozen_eval(model):
        delta = _project(_start(x, threat, "kl", seed).to(x.device, x.dtype), x, threat)
        for _ in range(threat.steps):
            delta.requires_grad_(True)
            with torch.enable_grad():
                value = objective(x + delta).sum()
            grad = torch.autograd.grad(value, delta)[0]
            delta = _project(delta.detach() + threat.step * _ascent(grad, threat), x, threat)
    return delta.detach()


@dataclass(frozen=True)
class _Attacked(Regime):
    eps: float = 0.1
    steps: int = 7
    step_size: float | None = None  # None: 2.5 * eps / steps
    norm: str = "linf"
    random_start: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "eps", check_positive(self.eps, "eps"))
        object.__setattr__(self, "steps", check_int(self.steps, "steps", 1))
        if self.step_size is not None:
            object.__setattr__(self, "step_size", check_positive(self.step_size, "step_size"))
        object.__setattr__(self, "norm", check_choice(self.norm, "norm", NORMS))
        object.__setattr__(self, "random_start", check_flag(self.random_start, "random_start"))

    def threat(self, bounds: tuple[float, float] | None = None) -> ThreatModel:
        return _threat(self.eps, self.steps, self.step_size, self.norm, self.random_start, bounds)

    def check_bounds(self, bounds: tuple[float, float] | None) -> None:
        if bounds is not None and self.norm == "linf" and self.eps >= (bounds[1] - bounds[0]) / 2:
            raise ValueError(
                f"eps={self.eps} is at least half the input range {bounds}: every input could be moved anywhere in "
                "the box; choose a smaller eps"
            )


@dataclass(frozen=True)
class PGDAdversarial(_Attacked):
    """Madry's PGD adversarial training: cross-entropy on the worst case in the eps ball (true labels)."""

    name: ClassVar[str] = "pgd_at"

    def loss(self, model, x, y, seed, bounds=None):  # type: ignore[override]
        delta = attack(model, x, lambda xa: F.cross_entropy(model(xa), y, reduction="none"), self.threat(bounds), seed)
        return F.cross_entropy(model(x + delta), y)


@dataclass(frozen=True)
class Trades(_Attacked):
    """TRADES: clean cross-entropy plus ``beta`` times the KL between clean and attacked predictions."""

    name: ClassVar[str] = "trades"
    beta: float = 6.0

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(self, "beta", check_real(self.beta, "beta", nonnegative=True))

    def loss(self, model, x, y, seed, bounds=None):  # type: ignore[override]
        logits = model(x)
        ce = F.cross_entropy(logits, y)
        if self.beta == 0:
            return ce
        with torch.no_grad():
            clean_log_p = F.log_softmax(model(x).detach().double(), dim=1)

        def kl(xa: torch.Tensor) -> torch.Tensor:
            return F.kl_div(F.log_softmax(model(xa).double(), dim=1), clean_log_p, log_target=True, reduction="none").sum(1)

        delta = attack(model, x, kl, self.threat(bounds), seed)
        robust = F.kl_div(F.log_softmax(model(x + delta), dim=1), F.log_softmax(logits, dim=1), log_target=True,
                          reduction="batchmean")
        return ce + self.beta * robust


REGIMES: dict[str, type[Regime]] = {r.name: r for r in (Standard, PGDAdversarial, Trades)}


def regime_from_dict(data: dict[str, Any]) -> Regime:
    """The regime named by ``data["name"]`` with the other keys as its options."""
    data = dict(data)
    name = data.pop("name", "standard")
    if name not in REGIMES:
        raise ValueError(f"unknown training regime {name!r}; choose one of {sorted(REGIMES)}")
    cls = REGIMES[name]
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"regime {name!r} has no option(s) {unknown}; its options: {sorted(known)}")
    return cls(**data)


def robust_accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, threat: ThreatModel, *, seed: int = 0,
                    batch_size: int = 1024) -> float:
    """Accuracy under the PGD attack of ``threat`` that maximises the cross-entropy with the true labels
    (``threat.bounds``, if any, clip the attacked inputs; ``seed`` draws the per-sample random starts)."""
    model = check_model(model)
    threat = check_threat(threat)
    seed = check_seed(seed)
    batch_size = check_int(batch_size, "batch_size", 1)
    x = validate_inputs(x)
    with frozen_eval(model):
        out = model_outputs_2d(model, x[:2].to(model_device(model), model_dtype(model, x.dtype)), "model")
    y = check_labels(y, out.shape[1], "y", len(x))
    device = model_device(model)
    hits = 0
    for i in range(0, len(x), batch_size):
        xb, yb = x[i : i + batch_size].to(device), y[i : i + batch_size].to(device)
        delta = attack(model, xb, lambda xa: F.cross_entropy(model(xa), yb, reduction="none"), threat, seed)
        with frozen_eval(model), torch.no_grad():
            hits += int((model(xb + delta).argmax(1) == yb).sum())
    return hits / len(x)
