"""The model contract every transferlens model follows.

``features(x) -> (N, D)`` gives the penultimate representation, ``head`` maps it to outputs and
``forward(x) == head(features(x))``. Inputs are raw samples in the task's input space; any
normalization lives inside the model.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


class FeatureModel(nn.Module):
    """Base class: subclasses define ``self.body`` (input -> features) and ``self.head``."""

    body: nn.Module
    head: nn.Module

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))

    @property
    def feature_dim(self) -> int:
        head = self.head
        if isinstance(head, nn.Linear):
            return head.in_features
        # TypeError, not AttributeError: nn.Module.__getattr__ would swallow the message.
        raise TypeError("feature_dim is only known when the head is an nn.Linear")

    @property
    def num_outputs(self) -> int:
        head = self.head
        if isinstance(head, nn.Linear):
            return head.out_features
        raise TypeError("num_outputs is only known when the head is an nn.Linear")


class WrappedModel(FeatureModel):
    """Adapter that gives an arbitrary ``nn.Module`` the ``FeatureModel`` contract.

    ``head_name`` is the dotted name of the final layer (e.g. ``"fc"`` or ``"classifier.2"``). Features
    are the input to that layer, captured with a forward hook, so the wrapped module runs unchanged.
    """

    def __init__(self, module: nn.Module, head_name: str) -> None:
        super().__init__()
        names = dict(module.named_modules())
        if head_name not in names or head_name == "":
            raise ValueError(
                f"module has no submodule named {head_name!r}; candidates for the final layer: "
                f"{[n for n, m in names.items() if n and isinstance(m, nn.Linear)][-5:]}"
            )
        self.module = module
        self.head_name = head_name
        self._captured: torch.Tensor | None = None
        self._hook = names[head_name].register_forward_hook(self._capture)

    def remove_hook(self) -> None:
        """Detach the feature hook from the wrapped module (the wrapper's ``features`` stops working)."""
        self._hook.remove()

    @property
    def head(self) -> nn.Module:  # type: ignore[override]
        return self.module.get_submodule(self.head_name)

    def _capture(self, _mod: nn.Module, inputs: tuple[Any, ...], _out: Any) -> None:
        if self._capturing:
            self._captured = inputs[0]

    _capturing = False

    def features(self, x: torch.Tensor) -> torch.Tensor:
        # Capture only inside features(): plain forward passes keep no reference to the activations.
        self._captured, self._capturing = None, True
        try:
            self.module(x)
        finally:
            self._capturing = False
        feats = self._captured
        self._captured = None
        if feats is None:
            raise RuntimeError(f"the layer {self.head_name!r} was not called in forward(); pick the final layer")
        return feats.flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.module(x)


def wrap_model(module: nn.Module, head_name: str) -> FeatureModel:
    """Give ``module`` the ``features``/``head`` contract (no-op for a ``FeatureModel``)."""
    if isinstance(module, FeatureModel):
        return module
    if not isinstance(module, nn.Module):
        raise TypeError(f"expected a torch.nn.Module, got {type(module).__name__}")
    return WrappedModel(module, head_name)
