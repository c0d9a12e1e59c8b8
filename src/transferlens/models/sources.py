"""Source models by deviation: a model's weights plus a scaled, fixed random direction (experiment E1).

:func:`random_direction` draws the direction (``U(-0.5, 0.5)`` per parameter, from a seed) and
:func:`perturbed_copy` builds the source ``target + scale * direction``; the scales of E1 come from
:func:`transferlens.data.rbf.deviation_scales`.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping

import torch
from torch import nn

from .._torch import cpu_generator, uniform
from .._validate import check_real, check_seed
from .base import FeatureModel

__all__ = ["perturbed_copy", "random_direction"]


def random_direction(model: nn.Module, seed: int) -> dict[str, torch.Tensor]:
    """A fixed random deviation: ``U(-0.5, 0.5)`` per parameter, keyed by ``named_parameters()`` name.

    Draws come (in float64, on the CPU) from one generator seeded with ``seed``, in
    ``named_parameters()`` order, and are cast to each parameter's dtype and device.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    gen = cpu_generator(check_seed(seed))
    return {
        name: uniform(tuple(p.shape), gen).to(device=p.device, dtype=p.dtype)
        for name, p in model.named_parameters()
    }


def perturbed_copy(model: FeatureModel, direction: Mapping[str, torch.Tensor], scale: float) -> FeatureModel:
    """A deep copy of ``model`` with every parameter ``p`` replaced by ``p + scale * direction[name]``.

    ``direction`` must have exactly the model's parameter names and shapes (as from
    :func:`random_direction`). The original model is not modified.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    scale = check_real(scale, "scale")
    names = [n for n, _ in model.named_parameters()]
    if set(direction) != set(names):
        missing = sorted(set(names) - set(direction))
        extra = sorted(set(direction) - set(names))
        raise ValueError(f"direction does not match the model's parameters (missing {missing}, unexpected {extra})")
    for name, p in model.named_parameters():
        d = direction[name]
        if not isinstance(d, torch.Tensor) or tuple(d.shape) != tuple(p.shape):
            shape = tuple(d.shape) if isinstance(d, torch.Tensor) else type(d).__name__
            raise ValueError(f"direction[{name!r}] has shape {shape}, expected {tuple(p.shape)}")
    clone = copy.deepcopy(model)
    with torch.no_grad():
        for name, p in clone.named_parameters():
            p.add_(direction[name].to(device=p.device, dtype=p.dtype), alpha=float(scale))
    return clone
