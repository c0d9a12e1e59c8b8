"""Attacks: a threat model (norm, radius, steps, bounds) plus an objective, optimised by FGSM/PGD.

Objectives, maximised on the attacked model ``f`` (see the metrics reference):

* ``deviation``: ``||f(x + delta) - f(x)||_2`` on the chosen output (label-free; the theory's attack);
* ``ce``: cross-entropy of the logits at ``x + delta`` against ``f``'s own clean prediction;
* ``kl``: ``KL(softmax f(x) || softmax f(x + delta))`` on the logits.

Every attack is batched and per-sample independent (a sample's result never depends on the rest of the
batch), never modifies its input, runs the model in eval mode with parameter gradients off, and
restores the model's previous mode afterwards. With ``random_start``, each sample's start is drawn by a
counter-based generator (SplitMix64) keyed by ``seed`` and a hash of the sample's own bytes.

``delta = 0`` is a stationary point of ``deviation`` and ``kl`` (their gradient vanishes there), so
without a random start those attacks begin from a tiny fixed probe: one pseudo-random direction drawn
from ``seed``, shared by every sample, of size ``0.1 * eps`` (large enough that ``f(x + probe) - f(x)`` is
not lost to float32 rounding). The first ascent steps then act as a power iteration towards the top
singular direction of the model's Jacobian.
"""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass
from typing import Any, Callable, Literal

import numpy as np
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


# Per-sample random starts: a counter-based generator (SplitMix64) in vectorised uint64 arithmetic, so a
# whole batch is drawn at once while each sample's draw depends only on ``seed`` and the sample's bytes.
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)  # SplitMix64's increment (2**64 / golden ratio, odd)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)
_CHUNK_WORDS = 1 << 21  # uint64 words per chunk of samples (bounds the temporaries to a few tens of MB)


def _mix64(z: np.ndarray) -> np.ndarray:
    """SplitMix64's finaliser, elementwise on a uint64 array (mod 2**64; a bijection); returns a new array:
    ``z ^= z >> 30; z *= 0xBF58476D1CE4E5B9; z ^= z >> 27; z *= 0x94D049BB133111EB; z ^= z >> 31``."""
    z = z ^ (z >> np.uint64(30))
    z *= _MIX1
    z ^= z >> np.uint64(27)
    z *= _MIX2
    z ^= z >> np.uint64(31)
    return z


def _counters(count: int) -> np.ndarray:
    """``(j + 1) * GOLDEN mod 2**64`` for ``j = 0 .. count - 1`` (SplitMix64's state after ``j + 1`` steps from 0)."""
    return np.arange(1, count + 1, dtype=np.uint64) * _GOLDEN


def _sample_keys(x: torch.Tensor, seed: int) -> np.ndarray:
    """One uint64 key per sample: ``mix(h ^ mix(seed + G))`` with ``h`` a hash of the sample's own bytes.

    The bytes of each row (C order, native byte order), zero-padded to a multiple of 8, are read as
    little-endian uint64 words ``w_k``; ``h = mix(nbytes + sum_k mix(w_k ^ mix((k + 1) * G)))`` (mod 2**64).
    So a sample's key is the same wherever it sits in a batch and whatever the batch holds, and changing
    any one word of a sample always changes ``h``.
    """
    rows = x.detach().cpu().contiguous().reshape(len(x), x[0].numel())
    data = rows.view(torch.uint8).numpy()  # (N, nbytes), sharing x's memory when it is already on the CPU
    nbytes = data.shape[1]
    pad = -nbytes % 8
    if pad:
        data = np.concatenate([data, np.zeros((len(data), pad), np.uint8)], axis=1)
    words = np.ascontiguousarray(data).view("<u8").astype(np.uint64, copy=False)
    positions = _mix64(_counters(words.shape[1]))
    seed_key = _mix64(np.array([seed], dtype=np.uint64) + _GOLDEN)
    step = max(1, _CHUNK_WORDS // max(1, words.shape[1]))
    h = np.concatenate(
        [_mix64(words[i : i + step] ^ positions).sum(axis=1, dtype=np.uint64) for i in range(0, len(words), step)]
    )
    return _mix64(_mix64(h + np.uint64(nbytes)) ^ seed_key)


def _uniforms(keys: np.ndarray, count: int) -> np.ndarray:
    """``(len(keys), count)`` float64 uniforms in [0, 1): ``U[i, j] = (mix(key_i + (j + 1) * G) >> 11) * 2**-53``,
    i.e. the first ``count`` outputs of SplitMix64 seeded with ``key_i``, at 53 bits each."""
    u = _mix64(keys[:, None] + _counters(count)[None, :])
    return (u >> np.uint64(11)).astype(np.float64) * 2.0**-53


def _normals(u: np.ndarray, n: int) -> np.ndarray:
    """``n`` standard normals per row by Box-Muller on the uniform pairs ``(u[:, 2t], u[:, 2t + 1])``:
    ``z[2t] = r cos(theta)``, ``z[2t + 1] = r sin(theta)`` with ``r = sqrt(-2 log(1 - u[2t]))``,
    ``theta = 2 pi u[2t + 1]``; needs ``2 * ceil(n / 2)`` columns of ``u`` (an odd ``n`` drops the last sine)."""
    pairs = (n + 1) // 2
    r = np.sqrt(-2.0 * np.log(1.0 - np.ascontiguousarray(u[:, 0 : 2 * pairs : 2])))
    theta = (2.0 * np.pi) * np.ascontiguousarray(u[:, 1 : 2 * pairs : 2])
    z = np.empty((len(u), 2 * pairs))
    z[:, 0::2] = r * np.cos(theta)
    z[:, 1::2] = r * np.sin(theta)
    return z[:, :n]


def _random_start(x: torch.Tensor, threat: ThreatModel, seed: int) -> torch.Tensor:
    """Random start of every sample, drawn in float64 from the sample's key (:func:`_sample_keys`).

    ``linf``: ``eps * (2 U[j] - 1)`` for element ``j``. ``l2``: ``eps * U[2p] ** (1 / n) * z / ||z||_2``
    with ``z`` the ``n`` Box-Muller normals of ``U[0 .. 2p - 1]`` (:func:`_normals`, ``p = ceil(n / 2)``):
    uniform in the ball. ``U`` is the sample's row of :func:`_uniforms`; the draw is cast to ``x.dtype`` at the end.
    """
    n = x[0].numel()
    if n == 0:
        return torch.zeros_like(x)
    keys = _sample_keys(x, seed)
    out = np.empty((len(x), n))
    step = max(1, _CHUNK_WORDS // (n + 2))
    for i in range(0, len(x), step):  # chunks of samples, to bound the memory of the temporaries
        k = keys[i : i + step]
        if threat.norm == "linf":
            out[i : i + step] = (_uniforms(k, n) * 2.0 - 1.0) * threat.eps
        else:
            pairs = (n + 1) // 2
            u = _uniforms(k, 2 * pairs + 1)
            z = _normals(u, n)
            radius = threat.eps * u[:, 2 * pairs] ** (1.0 / n)
            norm = np.maximum(np.sqrt((z * z).sum(axis=1)), 1e-30)
            out[i : i + step] = z * (radius / norm)[:, None]
    return torch.from_numpy(out).reshape(x.shape).to(x.device, x.dtype)


def _start(x: torch.Tensor, threat: ThreatModel, objective: str, seed: int) -> torch.Tensor:
    """Initial perturbation for every sample of ``x``, on ``x``'s device and in its dtype.

    With ``random_start`` each sample's is drawn from a counter-based generator keyed by ``seed`` and the
    sample's own bytes (:func:`_random_start`), so it depends only on the sample and ``seed``; otherwise
    it is zero (``ce``) or the fixed probe shared by every sample (see the module docstring).
    """
    shape = x.shape
    if threat.random_start:
        return _random_start(x, threat, seed)
    if objective == "ce":
        return torch.zeros_like(x)
    gen = torch.Generator().manual_seed(seed)
    probe = torch.rand(shape[1:], generator=gen, dtype=torch.float64) * 2 - 1
    probe = probe / (probe.abs().max() if threat.norm == "linf" else probe.norm())
    return (PROBE_SCALE * threat.eps * probe).to(x.device, x.dtype).expand(shape).clone()


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
    Shapes: ``x`` is ``(N, *input_shape)``; the model must map it to ``(N, K)``. On a glibc system's CPU,
    :func:`transferlens.tune_allocator` (once per process) keeps the large per-step tensors from being mapped
    afresh at every step.
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
