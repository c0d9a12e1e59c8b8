"""The model contract every transferlens model follows.

``features(x) -> (N, D)`` gives the penultimate representation, ``head`` maps it to outputs and
``forward(x) == head(features(x))``. Inputs are raw samples in the task's input space; any
normalization lives inside the model.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import nn

from .._validate import check_model


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


def _final_layer_candidates(module: nn.Module, limit: int = 5) -> list[str]:
    """Dotted names of the module's ``nn.Linear`` layers, last ``limit`` in registration order: the usual
    candidates for the final (head) layer."""
    return [n for n, m in module.named_modules() if n and isinstance(m, nn.Linear)][-limit:]


class WrappedModel(FeatureModel):
    """Adapter that gives an arbitrary ``nn.Module`` the ``FeatureModel`` contract.

    ``head_name`` is the dotted name of the final layer (e.g. ``"fc"`` or ``"classifier.6"``). Features are
    the input to that layer, captured by a forward hook that exists only while :meth:`features` runs (the
    wrapped module is never left with a hook, however often it is wrapped). Each :meth:`features` call also
    checks that the module's output *is* the head's output (the head must be the module's last operation),
    so that the captured input really is the penultimate representation.

    The wrapper has no train/eval state of its own: ``training`` is the wrapped module's flag, so wrapping
    an eval-mode module gives an eval-mode wrapper, and ``train()``/``eval()`` on the wrapper propagate to
    the module as for any ``nn.Module``.
    """

    def __init__(self, module: nn.Module, head_name: str) -> None:
        super().__init__()
        if not isinstance(head_name, str):
            raise TypeError(
                f"head_name must be a string (the dotted name of the final layer), got {type(head_name).__name__}"
            )
        names = dict(module.named_modules())
        if head_name not in names or head_name == "":
            raise ValueError(
                f"module has no submodule named {head_name!r}; candidates for the final layer: "
                f"{_final_layer_candidates(module)}"
            )
        self.module = module
        self.head_name = head_name
        self._captured: torch.Tensor | None = None  # never holds activations between calls

    # ``nn.Module.__init__`` and ``train()`` assign ``self.training``; reading it gives the module's flag.
    @property  # type: ignore[override]
    def training(self) -> bool:
        module = self.__dict__.get("_modules", {}).get("module")
        return bool(module.training) if module is not None else self.__dict__.get("_own_training", True)

    @training.setter
    def training(self, mode: bool) -> None:
        self.__dict__["_own_training"] = mode
        module = self.__dict__.get("_modules", {}).get("module")
        if module is not None:
            module.training = mode  # the module's own flag only; train()/eval() recurse as usual

    def remove_hook(self) -> None:
        """Kept for compatibility: the feature hook only exists while :meth:`features` runs, so there is
        never one to remove."""

    @property
    def head(self) -> nn.Module:  # type: ignore[override]
        return self.module.get_submodule(self.head_name)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        head = self.head
        seen: list[Any] = []  # (input of the head, output of the head) of its last call

        def capture(_mod: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], output: Any) -> None:
            first = args[0] if args else next(iter(kwargs.values()), None)
            seen[:] = [first, output]

        handle = head.register_forward_hook(capture, with_kwargs=True)
        try:
            out = self.module(x)
        finally:
            handle.remove()
        if not seen:
            raise RuntimeError(f"the layer {self.head_name!r} was not called in forward(); pick the final layer")
        feats, head_out = seen
        if not _is_same_output(out, head_out):
            raise ValueError(
                f"the wrapped module's output is not the output of the head layer {self.head_name!r}: the head "
                "must be the module's last operation (forward(x) == head(features(x))), otherwise its input is "
                "not the penultimate representation. Wrap with the layer that produces the output; candidates "
                f"for the final layer: {_final_layer_candidates(self.module)}"
            )
        if not isinstance(feats, torch.Tensor):
            raise TypeError(
                f"the head layer {self.head_name!r} was called with {type(feats).__name__}, not a tensor; "
                "pick a final layer that takes the feature tensor"
            )
        return feats.flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.module(x)


def _is_same_output(out: Any, head_out: Any) -> bool:
    """Whether the module returned the head's output: the same tensor, or an exactly equal one."""
    if out is head_out:
        return True
    if not (isinstance(out, torch.Tensor) and isinstance(head_out, torch.Tensor)):
        return False
    if out.shape != head_out.shape:
        return False
    try:
        return bool(torch.equal(out, head_out))
    except RuntimeError:
        # Under torch.func transforms (vmap) a data-dependent comparison is not possible; the check has
        # already run on the plain calls that precede them (model validation), so accept.
        return True


def feature_extractor(model: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    """The function that gives ``model``'s penultimate features, ``x -> (N, ...)``.

    * a ``FeatureModel`` (the zoo, :func:`wrap_model`'s ``WrappedModel``): its ``features`` method;
    * any other module whose ``features`` is a method of its own (not a submodule): that method;
    * a module whose ``features`` attribute is a submodule (torchvision's VGG, AlexNet, MobileNet,
      DenseNet...: there it is the convolutional trunk, not the penultimate representation) or that has
      no ``features`` at all: ``TypeError`` saying how to wrap it.
    """
    check_model(model)
    if isinstance(model, FeatureModel):
        return model.features
    attr = getattr(model, "features", None)
    if not isinstance(attr, nn.Module) and callable(attr):
        return attr
    candidates = _final_layer_candidates(model)
    example = candidates[-1] if candidates else "name_of_final_layer"
    if isinstance(attr, nn.Module):
        raise TypeError(
            f"model.features is a submodule ({type(attr).__name__}), not a features(x) method: in torchvision-style "
            "models (VGG, AlexNet, MobileNet, DenseNet) it is the convolutional trunk, not the penultimate "
            f"representation. Wrap the model: transferlens.wrap_model(model, {example!r}) (the head is the final "
            f"layer; candidates: {candidates})"
        )
    raise TypeError(
        "the model needs a features(x) method; build it with transferlens.build_model or wrap it with "
        f"transferlens.wrap_model(module, head_name), e.g. transferlens.wrap_model(model, {example!r}) "
        f"(candidates for the final layer: {candidates})"
    )


def wrap_model(module: nn.Module, head_name: str) -> FeatureModel:
    """Give ``module`` the ``features``/``head`` contract (no-op for a ``FeatureModel``)."""
    if isinstance(module, FeatureModel):
        return module
    check_model(module, "module")
    return WrappedModel(module, head_name)
