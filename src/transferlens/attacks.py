"""Attacks: a threat model (norm, radius, steps, bounds) plus an objective, optimised by FGSM/PGD.

Objectives, maximised on the attacked model ``f`` (see the metrics reference):

* ``deviation``: ``||f(x + delta) - f(x)||_2`` on the chosen output (label-free; the theory's attack);
* ``ce``: cross-entropy of the logits at ``x + delta`` against ``f``'s own clean prediction;
* ``kl``: ``KL(softmax f(x) || softmax f(x + delta))`` on the logits.

Every attack is batched and per-sample independent (a sample's result never depends on the rest of the
batch), never modifies its input, runs the model in eval mode with parameter gradients off, and
restores the model's previous mode afterwards.

``delta = 0`` is a stationary point of ``deviation`` and ``kl`` (their gradient vanishes there), so
without a random start those attacks begin from a tiny fixed probe: one pseudo-random direction drawn
from ``seed``, shared by every sample, of size ``0.1 * eps`` (large enough that ``f(x + probe) - f(x)`` is
not lost to float32 rounding). The first ascent steps then act as a power iteration towards the top
singular direction of the model's Jacobian.
"""

from __future__ import annotations

import warnings
import zlib
from dataclasses import asdict, dataclass
from typing import Any, Callable, Literal

import torch
from torch import nn
from torch.nn import functional as F

from ._torch import fresh, frozen_eval, model_device, model_dtype
from .models.base import feature_extractor
from ._validate import (
    as_float_tensor,
    check_bounds,
    check_choice,
    check_finite,
    check_flag,
    check_int,
    check_model,
    check_nonempty,
    check_positive,
    check_seed,
    check_within_bounds,
    model_outputs_2d,
)

Norm = Literal["linf", "l2"]
Objective = Literal["deviation", "ce", "kl"]
Output = Literal["logits", "probs", "features"]

NORMS = ("linf", "l2")
OBJECTIVES = ("deviation", "ce", "kl")
OUTPUTS = ("logits", "probs", "features")
PROBE_SCALE = 0.1


@dataclass(frozen=True)
class ThreatModel:
    """Where the attacker may move: ``||delta||_norm <= eps`` and ``lo <= x + delta <= hi``.

    ``step_size`` defaults to ``2.5 * eps / steps`` (:attr:`step` is the one actually used); FGSM is
    ``steps=1, step_size=eps``.
    """

    norm: str = "linf"
    eps: float = 0.1
    steps: int = 10
    step_size: float | None = None
    random_start: bool = False
    bounds: tuple[float, float] | None = None

    def __post_init__(self) -> None:
        check_choice(self.norm, "norm", NORMS)
        # Numbers are normalised to plain Python types (numpy scalars and 0-d tensors are accepted).
        object.__setattr__(self, "eps", check_positive(self.eps, "eps"))
        object.__setattr__(self, "steps", check_int(self.steps, "steps", 1))
        if self.step_size is not None:
            object.__setattr__(self, "step_size", check_positive(self.step_size, "step_size"))
        object.__setattr__(self, "random_start", check_flag(self.random_start, "random_start"))
        object.__setattr__(self, "bounds", check_bounds(self.bounds))

    @classmethod
    def fgsm(cls, eps: float, norm: str = "linf", bounds: tuple[float, float] | None = None) -> "ThreatModel":
        return cls(norm=norm, eps=eps, steps=1, step_size=eps, bounds=bounds)

    @property
    def step(self) -> float:
        """The step size actually used: ``step_size``, else ``2.5 * eps / steps``."""
        return self.step_size if self.step_size is not None else 2.5 * self.eps / self.steps

    @property
    def alpha(self) -> float:
        """Deprecated alias of :attr:`step` (the name clashed with the alpha metrics)."""
        warnings.warn(
            "ThreatModel.alpha is deprecated (it is the step size, not an alpha metric); use ThreatModel.step",
            DeprecationWarning,
            stacklevel=2,
        )
        return self.step

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["step_size"] = self.step
        d["bounds"] = list(self.bounds) if self.bounds else None
        return d


def model_output(model: nn.Module, x: torch.Tensor, output: str = "logits") -> torch.Tensor:
    """The measured output of ``model``: logits, softmax probabilities, or ``model.features(x)``."""
    check_model(model)
    if output == "logits":
        return model(x)
    if output == "probs":
        return torch.softmax(model(x), dim=1)
    if output == "features":
        return feature_extractor(model)(x).flatten(1)
    raise ValueError(f"output must be one of {OUTPUTS}, got {output!r}")


def _per_sample_norm(t: torch.Tensor, norm: str) -> torch.Tensor:
    flat = t.flatten(1)
    return flat.abs().amax(1) if norm == "linf" else flat.norm(dim=1)


def _view(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return v.view(-1, *([1] * (like.ndim - 1)))


def _project(delta: torch.Tensor, x: torch.Tensor, threat: ThreatModel) -> torch.Tensor:
    """Project onto the eps ball, then clip ``x + delta`` into the bounds (clipping never leaves the ball)."""
    if threat.norm == "linf":
        delta = delta.clamp(-threat.eps, threat.eps)
    else:
        n = _per_sample_norm(delta, "l2")
        delta = delta * _view(torch.clamp(threat.eps / n.clamp_min(1e-30), max=1.0), delta)
    if threat.bounds is not None:
        lo, hi = threat.bounds
        delta = (x + delta).clamp(lo, hi) - x
    return delta


def _ascent(grad: torch.Tensor, threat: ThreatModel) -> torch.Tensor:
    """Steepest-ascent direction for the norm; zero where the gradient is zero (no NaN)."""
    if threat.norm == "linf":
        return grad.sign()
    n = _per_sample_norm(grad, "l2")
    return grad / _view(n.clamp_min(1e-30), grad)


def _sample_generators(x: torch.Tensor, seed: int) -> list[torch.Generator]:
    """One generator per sample, seeded from ``seed`` and the sample's own values (CRC-32 of its bytes),
    so a sample's random start is the same wherever it sits in a batch and whatever the batch holds."""
    rows = x.detach().cpu().contiguous().reshape(len(x), -1).numpy()
    base = (seed * 0x9E3779B97F4A7C15) % (1 << 63)
    return [torch.Generator().manual_seed((base + zlib.crc32(r.tobytes())) % (1 << 63)) for r in rows]


def _start(x: torch.Tensor, threat: ThreatModel, objective: str, seed: int) -> torch.Tensor:
    """Initial perturbation for every sample of ``x``; each sample's depends only on itself and ``seed``."""
    shape = x.shape
    if threat.random_start:
        n = x[0].numel()
        starts = []
        for gen in _sample_generators(x, seed):
            if threat.norm == "linf":
                d = (torch.rand(shape[1:], generator=gen, dtype=torch.float64) * 2 - 1) * threat.eps
            else:
                g = torch.randn(shape[1:], generator=gen, dtype=torch.float64)
                r = torch.rand((), generator=gen, dtype=torch.float64) ** (1.0 / n)
                d = g / g.norm().clamp_min(1e-30) * (r * threat.eps)
            starts.append(d)
        return torch.stack(starts).to(x.dtype)
    if objective == "ce":
        return torch.zeros_like(x)
    gen = torch.Generator().manual_seed(seed)
    probe = torch.rand(shape[1:], generator=gen, dtype=torch.float64) * 2 - 1
    probe = probe / (probe.abs().max() if threat.norm == "linf" else probe.norm())
    return (PROBE_SCALE * threat.eps * probe).to(x.dtype).expand(shape).clone()


def _objective_fn(model: nn.Module, objective: str, output: str, x: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    """Per-sample objective of the perturbed input, with the clean reference computed once (on a copy of
    ``x``: a model with an in-place first operation must not change the inputs being attacked)."""
    with torch.no_grad():
        if objective == "deviation":
            ref = model_output(model, fresh(x), output)
            return lambda xa: 0.5 * (model_output(model, xa, output) - ref).flatten(1).pow(2).sum(1)
        logits = model(fresh(x))
        if objective == "ce":
            label = logits.argmax(1)
            return lambda xa: F.cross_entropy(model(xa), label, reduction="none")
        # In float64: near delta = 0 the KL is tiny and float32 log-softmax differences lose it to rounding.
        p_log = F.log_softmax(logits.double(), dim=1)
        return lambda xa: F.kl_div(F.log_softmax(model(xa).double(), dim=1), p_log, log_target=True, reduction="none").sum(1)


def validate_inputs(x: Any, name: str = "x") -> torch.Tensor:
    x = as_float_tensor(x, name)
    check_nonempty(x, name)
    check_finite(x, name)
    return x


def check_threat(threat: Any) -> ThreatModel:
    if isinstance(threat, ThreatModel):
        return threat
    hint = " (build one with transferlens.ThreatModel(**that_dict))" if isinstance(threat, dict) else ""
    raise TypeError(
        f"threat must be a ThreatModel (transferlens.ThreatModel), e.g. ThreatModel(norm='l2', eps=0.5, steps=10), got "
        f"{type(threat).__name__}{hint}"
    )


def check_attack_args(objective: Any, output: Any, batch_size: Any, seed: Any) -> tuple[int, int]:
    """Shared checks of the attack options; returns the normalised ``(batch_size, seed)``."""
    check_choice(objective, "objective", OBJECTIVES)
    check_choice(output, "output", OUTPUTS)
    return check_int(batch_size, "batch_size", 1), check_seed(seed)


def pgd(
    model: nn.Module,
    x: torch.Tensor,
    threat: ThreatModel,
    objective: str = "deviation",
    *,
    output: str = "logits",
    seed: int = 0,
    batch_size: int = 1024,
    validate: bool = True,
) -> torch.Tensor:
    """Projected gradient ascent of ``objective`` on ``model``; returns the perturbation ``delta``.

    ``delta`` has the shape of ``x`` and satisfies the threat model. The last iterate is returned.
    Shapes: ``x`` is ``(N, *input_shape)``; the model must map it to ``(N, K)``.
    """
    check_model(model)
    threat = check_threat(threat)
    batch_size, seed = check_attack_args(objective, output, batch_size, seed)
    validate = check_flag(validate, "validate")
    if validate:
        x = validate_inputs(x)
        check_within_bounds(x, threat.bounds, "x")
    x = x.detach()
    dev, dt = model_device(model), model_dtype(model, x.dtype)
    start = _start(x, threat, objective, seed)
    chunks = []
    with frozen_eval(model):
        if validate:
            model_outputs_2d(model, x[:2].to(dev, dt), "model")
        for i in range(0, len(x), batch_size):
            xb = fresh(x[i : i + batch_size], dev, dt)  # a copy in the model's dtype
            delta = _project(start[i : i + batch_size].to(dev, dt), xb, threat)
            obj = _objective_fn(model, objective, output, xb)
            for _ in range(threat.steps):
                delta.requires_grad_(True)
                with torch.enable_grad():
                    value = obj(xb + delta).sum()
                # A model with no gradient path from its input (constant output) keeps its start.
                grad = torch.autograd.grad(value, delta)[0] if value.requires_grad else torch.zeros_like(delta)
                delta = _project(delta.detach() + threat.step * _ascent(grad, threat), xb, threat)
            if not bool(torch.isfinite(delta).all()):
                raise ValueError(
                    f"the attack produced NaN/Inf perturbations for inputs {i}..{i + len(xb) - 1}: the model's "
                    "output or gradient is not finite there (overflow?); rescale the inputs or check the model"
                )
            chunks.append(delta.detach().to(x.device, x.dtype))
    return torch.cat(chunks)


def fgsm(
    model: nn.Module,
    x: torch.Tensor,
    eps: float,
    objective: str = "ce",
    *,
    norm: str = "linf",
    bounds: tuple[float, float] | None = None,
    output: str = "logits",
    seed: int = 0,
    batch_size: int = 1024,
) -> torch.Tensor:
    """One full-size gradient step (``ThreatModel.fgsm``); returns ``delta``."""
    check_choice(norm, "norm", NORMS)
    return pgd(model, x, ThreatModel.fgsm(eps, norm, bounds), objective, output=output, seed=seed, batch_size=batch_size)
