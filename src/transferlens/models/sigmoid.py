"""The one-hidden-layer sigmoid network of the synthetic study (experiment E1).

:class:`SigmoidNet` follows the :class:`~transferlens.models.base.FeatureModel` contract (``features`` is
the hidden activation, ``head`` the output layer); :func:`build_sigmoid_net` builds one from a seed
without touching the global random state. Parameters are float64.
"""

from __future__ import annotations

import torch
from torch import nn

from .._torch import seeded
from .._validate import check_int, check_seed
from .base import FeatureModel

__all__ = ["SIGMOID_INITS", "SigmoidNet", "build_sigmoid_net"]

DTYPE = torch.float64

SIGMOID_INITS: tuple[str, ...] = ("default", "uniform")
"""Initialisations accepted by :func:`build_sigmoid_net`."""


class SigmoidNet(FeatureModel):
    """One hidden sigmoid layer: ``x -> h = sigmoid(W1 x + b1) -> W2 h + b2``.

    ``features(x)`` is the hidden activation ``h`` (``(N, width)``), ``head`` is ``nn.Linear(width, d)``
    and ``forward(x) == head(features(x))``. Parameters are float64. Constructing the class directly
    draws the (PyTorch default) initialisation from the global RNG; use :func:`build_sigmoid_net` for a
    seeded build that leaves the global RNG alone.
    """

    def __init__(self, n_inputs: int, n_outputs: int, width: int = 100) -> None:
        super().__init__()
        n_inputs = check_int(n_inputs, "n_inputs", 1)
        n_outputs = check_int(n_outputs, "n_outputs", 1)
        width = check_int(width, "width", 1)
        self.body = nn.Sequential(nn.Linear(n_inputs, width, dtype=DTYPE), nn.Sigmoid())
        self.head = nn.Linear(width, n_outputs, dtype=DTYPE)
        self.n_inputs = n_inputs
        self.width = width

    def extra_repr(self) -> str:
        return f"n_inputs={self.n_inputs}, width={self.width}, n_outputs={self.head.out_features}"


def build_sigmoid_net(
    n_inputs: int, n_outputs: int, width: int = 100, seed: int = 0, *, init: str = "default"
) -> SigmoidNet:
    """A :class:`SigmoidNet` whose initial weights depend only on ``seed`` (global RNG untouched).

    ``init="default"`` keeps PyTorch's ``nn.Linear`` initialisation; ``init="uniform"`` draws every
    parameter from ``U(-0.5, 0.5)`` (as the official synthetic script did).
    """
    seed = check_seed(seed)
    if init not in SIGMOID_INITS:
        raise ValueError(f"unknown init {init!r}; choose one of {list(SIGMOID_INITS)}")
    with seeded(seed):
        model = SigmoidNet(n_inputs, n_outputs, width)
        if init == "uniform":
            with torch.no_grad():
                for p in model.parameters():
                    p.uniform_(-0.5, 0.5)
    return model
