"""A plain, slow reference PGD for the tests, written from the definitions in ``transferlens.attacks``'s docstrings.

It shares no code with the library's attack: one sample at a time, one autograd call per step, and every
piece (start, objective, ascent direction, step size, projection) spelled out here. Only the
:class:`~transferlens.attacks.ThreatModel` container is reused, for its fields. Tests that compare the
library's metrics with a textbook computation use this attack, so a bug in ``transferlens.attacks.pgd`` cannot
hide by appearing on both sides of the comparison.

The definitions reproduced:

* threat model: ``||delta||_norm <= eps`` and ``lo <= x + delta <= hi``; step size ``step_size`` or, when it
  is not given, ``2.5 * eps / steps``;
* each step: ``delta <- project(delta + step * ascent(grad))`` with ``ascent = sign(grad)`` for linf and
  ``grad / ||grad||_2`` for l2 (zero for a zero gradient); ``project`` first projects onto the eps ball
  (clamp for linf, rescale to radius eps when outside it for l2), then clips ``x + delta`` into the bounds;
* objectives of the perturbed input, maximised: ``deviation`` ``||f(x + delta) - f(x)||^2`` on the chosen output
  (logits, softmax probabilities or ``model.features``); ``ce`` the cross-entropy of the logits against the
  model's own clean prediction; ``kl`` ``KL(softmax f(x) || softmax f(x + delta))`` of the logits, in float64;
* start (no random start): zero for ``ce``; otherwise a fixed probe shared by every sample: a direction ``u``
  with entries ``U(-1, 1)`` drawn in float64 from ``torch.Generator().manual_seed(seed)`` (one ``torch.rand`` of
  the input shape, times 2, minus 1), scaled to ``||u||_norm = 0.1 * eps``, then projected like every iterate;
* the model runs in eval mode (every module's mode is restored afterwards); the last iterate is returned.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from transferlens.attacks import ThreatModel

PROBE_FRACTION = 0.1  # size of the fixed start probe, as a fraction of eps


def _output(model: nn.Module, x: torch.Tensor, output: str) -> torch.Tensor:
    if output == "logits":
        return model(x)
    if output == "probs":
        return torch.softmax(model(x), dim=1)
    if output == "features":
        return model.features(x).flatten(1)
    raise ValueError(output)


def _norm(t: torch.Tensor, norm: str) -> torch.Tensor:
    return t.abs().max() if norm == "linf" else torch.sqrt((t * t).sum())


def _step_size(threat: ThreatModel) -> float:
    return threat.step_size if threat.step_size is not None else 2.5 * threat.eps / threat.steps


def _project(delta: torch.Tensor, x: torch.Tensor, threat: ThreatModel) -> torch.Tensor:
    if threat.norm == "linf":
        delta = torch.clamp(delta, -threat.eps, threat.eps)
    else:
        length = _norm(delta, "l2")
        if length > threat.eps:
            delta = delta * (threat.eps / length)
    if threat.bounds is not None:
        lo, hi = threat.bounds
        delta = torch.clamp(x + delta, lo, hi) - x
    return delta


def _ascent(grad: torch.Tensor, norm: str) -> torch.Tensor:
    if norm == "linf":
        return torch.sign(grad)
    length = _norm(grad, "l2")
    return grad / length if length > 0 else torch.zeros_like(grad)


def _probe(shape: torch.Size, threat: ThreatModel, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    u = torch.rand(shape, generator=gen, dtype=torch.float64) * 2 - 1
    return PROBE_FRACTION * threat.eps * u / _norm(u, threat.norm)


def _objective(model: nn.Module, objective: str, output: str, x: torch.Tensor):
    """The objective as a function of the perturbed input (one sample, batch of 1)."""
    with torch.no_grad():
        clean_out = _output(model, x, output)
        clean_logits = model(x)
    if objective == "deviation":
        return lambda xa: ((_output(model, xa, output) - clean_out) ** 2).sum()
    if objective == "ce":
        label = clean_logits.argmax(dim=1)
        return lambda xa: F.cross_entropy(model(xa), label)
    if objective == "kl":
        log_p = F.log_softmax(clean_logits.double(), dim=1)
        return lambda xa: (log_p.exp() * (log_p - F.log_softmax(model(xa).double(), dim=1))).sum()
    raise ValueError(objective)


def reference_pgd(
    model: nn.Module,
    x: torch.Tensor,
    threat: ThreatModel,
    objective: str = "deviation",
    *,
    output: str = "logits",
    seed: int = 0,
) -> torch.Tensor:
    """Projected gradient ascent, sample by sample; returns ``delta`` with the shape (and dtype) of ``x``."""
    if threat.random_start:
        raise NotImplementedError("the reference attack covers the fixed (non-random) starts only")
    dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), x.dtype)  # inputs take the model's dtype
    modes = [(m, m.training) for m in model.modules()]  # restored module by module afterwards
    model.eval()
    try:
        deltas = []
        for i in range(len(x)):
            xi = x[i : i + 1].detach().to(dtype)
            if objective == "ce":
                delta = torch.zeros_like(xi)
            else:
                delta = _probe(xi.shape[1:], threat, seed).to(dtype).unsqueeze(0)
            delta = _project(delta, xi, threat)
            fn = _objective(model, objective, output, xi)
            for _ in range(threat.steps):
                d = delta.clone().requires_grad_(True)
                value = fn(xi + d)
                (grad,) = torch.autograd.grad(value, d) if value.requires_grad else (torch.zeros_like(d),)
                delta = _project(delta + _step_size(threat) * _ascent(grad, threat.norm), xi, threat)
            deltas.append(delta.detach().to(x.dtype))
        return torch.cat(deltas)
    finally:
        for m, training in modes:
            m.training = training
