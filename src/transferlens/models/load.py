"""Load a user's model: ``package.module:factory`` plus weights from ``.safetensors`` or a safe checkpoint.

A *factory* is any callable that returns an ``nn.Module`` (a class or a function), named as
``package.module:attribute`` and imported like ``python -m`` would (the current directory is on the path).
Weights come from

* a ``.safetensors`` file (a flat state dict; no code is ever run), or
* a PyTorch checkpoint read with ``torch.load(..., weights_only=True)``: a state dict, or a dict holding one
  under ``"state_dict"``, ``"model_state_dict"`` or ``"model"``. A checkpoint that needs to unpickle
  arbitrary objects is refused with the reason (re-save it with ``torch.save(model.state_dict(), path)`` or
  as ``.safetensors``).

Features are taken at the input of the head layer (default: the module's last ``nn.Linear``), through
:func:`~transferlens.wrap_model`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .._imports import ImportSpecError, import_object
from .base import FeatureModel, _final_layer_candidates, wrap_model
from .zoo import ARCHITECTURES, build_model

__all__ = ["ModelLoadError", "default_head", "import_object", "load_model", "load_state_dict"]

_STATE_KEYS = ("state_dict", "model_state_dict", "model")


class ModelLoadError(ImportSpecError):
    """A model, factory or weights file that cannot be used; the message says why and what to do."""


def load_state_dict(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """The state dict in a ``.safetensors`` file or a ``weights_only`` PyTorch checkpoint, on the CPU."""
    p = Path(path)
    if not p.is_file():
        raise ModelLoadError(f"weights file {str(p)!r} does not exist")
    if p.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return dict(load_file(str(p), device="cpu"))
        except Exception as exc:  # noqa: BLE001 - safetensors raises its own types for a damaged file
            raise ModelLoadError(f"{str(p)!r} is not a readable .safetensors file: {exc}") from None
    try:
        obj = torch.load(str(p), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - UnpicklingError, RuntimeError, EOFError ... all mean "refused"
        text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ModelLoadError(
            f"{str(p)!r} cannot be read as weights only ({text}). transferlens never unpickles code from a "
            "checkpoint: save the weights with torch.save(model.state_dict(), path) or as .safetensors"
        ) from None
    if isinstance(obj, Mapping):
        for key in _STATE_KEYS:
            if isinstance(obj.get(key), Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ModelLoadError(
            f"{str(p)!r} does not hold a state dict (a mapping of names to tensors, possibly under one of "
            f"{list(_STATE_KEYS)}); save it with torch.save(model.state_dict(), path)"
        )
    return {str(k): v for k, v in obj.items()}


def _check_matches(model: nn.Module, state: Mapping[str, torch.Tensor], source: str) -> None:
    expected = model.state_dict()
    for key, value in expected.items():
        if key not in state:
            raise ModelLoadError(
                f"weights {source!r} have no tensor {key!r} that the model needs "
                f"({len(state)} tensors there, e.g. {sorted(state)[:3]}); is this the right model?"
            )
        if tuple(state[key].shape) != tuple(value.shape):
            raise ModelLoadError(
                f"tensor {key!r} in weights {source!r} has shape {tuple(state[key].shape)}, the model's has "
                f"{tuple(value.shape)}; check the factory's arguments"
            )
    extra = sorted(set(state) - set(expected))
    if extra:
        raise ModelLoadError(
            f"weights {source!r} hold tensors the model does not have, first {extra[0]!r} "
            f"({len(extra)} in all); is this the right model?"
        )


def default_head(module: nn.Module) -> str:
    """The dotted name of ``module``'s last ``nn.Linear`` (its usual output layer)."""
    names = _final_layer_candidates(module, limit=1)
    if not names:
        raise ModelLoadError(
            "the model has no nn.Linear layer to take features from; name its output layer with head=..."
        )
    return names[0]


def load_model(
    factory: str | nn.Module,
    *,
    weights: str | os.PathLike[str] | None = None,
    kwargs: Mapping[str, Any] | None = None,
    head: str | None = None,
    input_shape: Sequence[int] | None = None,
) -> FeatureModel:
    """Build (``factory(**kwargs)``), load ``weights`` into, and wrap a candidate model; in eval mode.

    ``factory`` is ``"package.module:name"``, a built-in zoo architecture (``mlp``, ``cnn1d``, ``cnn2d``:
    built for ``input_shape``, with ``num_classes`` from ``kwargs`` or else from the weights' head), or an
    ``nn.Module`` already built. ``head`` is the dotted name of the output layer whose input gives the
    features (default: the last ``nn.Linear``; a ``FeatureModel`` keeps its own ``features``).
    """
    state = None
    if isinstance(factory, nn.Module):
        module = factory
        where = type(factory).__name__
    elif isinstance(factory, str) and factory in ARCHITECTURES:
        options = dict(kwargs or {})
        if weights is not None:
            state = load_state_dict(weights)
        if "num_classes" not in options:
            if state is None or "head.weight" not in state:
                raise ModelLoadError(
                    f"a built-in {factory!r} needs its number of classes: pass kwargs num_classes=..., or weights "
                    "saved from a transferlens zoo model (they hold head.weight)"
                )
            options["num_classes"] = int(state["head.weight"].shape[0])
        if input_shape is None:
            raise ModelLoadError(f"a built-in {factory!r} is built for the target's input shape; pass input_shape")
        try:
            module = build_model(factory, input_shape, **options)
        except (TypeError, ValueError) as exc:
            raise ModelLoadError(f"building {factory!r}: {exc}") from None
        where = factory
    else:
        try:
            fn = import_object(factory)
        except ImportSpecError as exc:
            raise ModelLoadError(str(exc)) from None
        if not callable(fn):
            raise ModelLoadError(f"{factory!r} is a {type(fn).__name__}, not a callable that builds a model")
        try:
            module = fn(**dict(kwargs or {}))
        except Exception as exc:  # noqa: BLE001 - the user's code: report, do not crash with its traceback
            raise ModelLoadError(f"the factory {factory!r} raised {type(exc).__name__}: {exc}") from None
        where = factory
    if not isinstance(module, nn.Module):
        raise ModelLoadError(f"{where!r} returned a {type(module).__name__}, not a torch.nn.Module")
    if weights is not None:
        state = state if state is not None else load_state_dict(weights)
        _check_matches(module, state, str(weights))
        module.load_state_dict(state)
    module.eval()
    if isinstance(module, FeatureModel):
        return module
    try:
        return wrap_model(module, head if head is not None else default_head(module))
    except (TypeError, ValueError) as exc:
        raise ModelLoadError(str(exc)) from None
