"""The estimator registry: name -> function, the inputs it needs, which direction is better.

Each estimator module registers itself with :func:`register` when it is imported; importing
:mod:`transferlens.estimators` imports them all. A user adds an estimator the same way::

    from transferlens.estimators import Estimator, register

    def my_score(features, labels):
        ...

    register(Estimator("mine", my_score, needs=("features", "labels"), greater_is_better=True,
                       reference="me, 2026", summary="what it measures"))

Inputs an estimator may need (the keyword arguments its function takes):

* ``features`` -- N x D frozen features of the candidate on the target's samples;
* ``labels`` -- the N target labels;
* ``source_probs`` -- N x C_s softmax outputs of the candidate's own (source) head on the target samples;
* ``source_accuracy`` -- the candidate's accuracy on its own source task;
* ``model`` -- the candidate ``nn.Module`` itself;
* ``reference`` -- a model trained on the target task (the alpha metrics compare the candidate with it);
* ``inputs`` -- target samples to attack (the alpha metrics), with ``bounds`` of the input box if any.

A *zoo-relative* estimator (NCTI) is only meaningful across a set of candidates: its function takes a
list with one entry per candidate for each needed input (``labels`` excepted) and returns one score per
candidate.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["INPUTS", "Estimator", "estimator_names", "get_estimator", "register", "score", "score_zoo"]

INPUTS = ("features", "labels", "source_probs", "source_accuracy", "model", "reference", "inputs")


@dataclass(frozen=True)
class Estimator:
    """One registered estimator: ``fn(**inputs, **options) -> float`` (a list of floats if zoo-relative)."""

    name: str
    fn: Callable[..., Any]
    needs: tuple[str, ...]
    greater_is_better: bool
    reference: str
    summary: str
    zoo_relative: bool = False
    options: Mapping[str, Any] = field(default_factory=dict)  # the defaults, recorded with every score

    def __post_init__(self) -> None:
        unknown = [n for n in self.needs if n not in INPUTS]
        if unknown:
            raise ValueError(f"estimator {self.name!r} needs unknown inputs {unknown}; known inputs: {list(INPUTS)}")
        if not self.needs:
            raise ValueError(f"estimator {self.name!r} must need at least one input of {list(INPUTS)}")


_REGISTRY: dict[str, Estimator] = {}


def register(estimator: Estimator, *, replace: bool = False) -> Estimator:
    """Add ``estimator`` to the registry (``replace=True`` to overwrite an entry of the same name)."""
    if not isinstance(estimator, Estimator):
        raise TypeError(f"register() takes an Estimator, got {type(estimator).__name__}")
    if estimator.name in _REGISTRY and not replace:
        raise ValueError(f"an estimator named {estimator.name!r} is already registered; pass replace=True")
    _REGISTRY[estimator.name] = estimator
    return estimator


def estimator_names() -> list[str]:
    """Every registered estimator's name, in registration order."""
    return list(_REGISTRY)


def get_estimator(name: str) -> Estimator:
    """The registry entry called ``name``; a clear error listing the names otherwise."""
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown estimator {name!r}; choose from {', '.join(_REGISTRY)}") from None


def _inputs_for(est: Estimator, given: Mapping[str, Any]) -> dict[str, Any]:
    missing = [n for n in est.needs if given.get(n) is None]
    if missing:
        raise ValueError(f"estimator {est.name!r} needs {', '.join(missing)}; pass them as keyword arguments")
    return {n: given[n] for n in est.needs}


def score(name: str, *, options: Mapping[str, Any] | None = None, **inputs: Any) -> float:
    """``name``'s score for one candidate from keyword ``inputs`` (those it does not need are ignored)."""
    est = get_estimator(name)
    if est.zoo_relative:
        raise ValueError(f"{name!r} is zoo-relative: it compares candidates, so call score_zoo with all of them")
    value = float(est.fn(**_inputs_for(est, inputs), **dict(options or {})))
    if not np.isfinite(value):  # the kernels guarantee this; a user-registered one might not
        raise FloatingPointError(f"estimator {name!r} returned {value}; its inputs are degenerate")
    return value


def score_zoo(
    name: str, candidates: Sequence[Mapping[str, Any]], labels: Any = None, *, options: Mapping[str, Any] | None = None
) -> list[float]:
    """One score per candidate; ``candidates[i]`` maps input names to candidate i's inputs."""
    est = get_estimator(name)
    if not candidates:
        raise ValueError("score_zoo needs at least one candidate")
    if not est.zoo_relative:
        return [score(name, options=options, labels=labels, **dict(c)) for c in candidates]
    per = [_inputs_for(est, {**dict(c), "labels": labels}) for c in candidates]
    kwargs = {n: (labels if n == "labels" else [p[n] for p in per]) for n in est.needs}
    values = [float(v) for v in est.fn(**kwargs, **dict(options or {}))]
    if not all(np.isfinite(values)):
        raise FloatingPointError(f"estimator {name!r} returned a non-finite score; its inputs are degenerate")
    return values
