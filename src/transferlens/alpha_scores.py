"""The alpha metrics as registered estimators: a candidate scored by how it and a reference model trained on
the target transfer attacks to each other (Liang et al., ICML 2021).

``alpha1_t2s`` (the default pick of E2) crafts attacks on the reference and measures how much of the
candidate's worst-case deviation they cause; ``_s2t`` the other way round; ``alpha2`` and ``combined`` as
in :func:`transferlens.transferability`. They need ``model`` (the candidate), ``reference`` and ``inputs``
(target samples), so they apply wherever a reference model exists (``transferlens select --reference``,
E2, E4). Higher is better.
"""

from __future__ import annotations

from typing import Any

from .adversarial import transferability
from .estimators.registry import Estimator, register

__all__ = ["ALPHA_ESTIMATORS", "alpha_score"]

ALPHA_ESTIMATORS = tuple(f"{m}_{d}" for d in ("t2s", "s2t") for m in ("alpha1", "alpha2", "combined"))


def alpha_score(
    model: Any, reference: Any, inputs: Any, *, metric: str = "alpha1_t2s", preset: str = "theory", seed: int = 0,
    bounds: tuple[float, float] | None = None,
) -> float:
    """One alpha metric of ``model`` (the candidate) against ``reference`` on ``inputs`` (``transferability``'s
    options: ``preset``, ``seed``, the input ``bounds``)."""
    if metric not in ALPHA_ESTIMATORS:
        raise ValueError(f"metric must be one of {list(ALPHA_ESTIMATORS)}, got {metric!r}")
    return float(transferability(model, reference, inputs, preset=preset, seed=seed, bounds=bounds)[metric])


def _entry(name: str) -> Estimator:
    def fn(model: Any, reference: Any, inputs: Any, *, preset: str = "theory", seed: int = 0,
           bounds: tuple[float, float] | None = None) -> float:
        return alpha_score(model, reference, inputs, metric=name, preset=preset, seed=seed, bounds=bounds)

    fn.__name__ = fn.__qualname__ = name
    fn.__doc__ = f"``{name}`` of the candidate ``model`` against ``reference`` on ``inputs`` (see :func:`alpha_score`)."
    return Estimator(
        name=name, fn=fn, needs=("model", "reference", "inputs"), greater_is_better=True,
        reference="Liang et al., Uncovering the Connections Between Adversarial Transferability and Knowledge "
        "Transferability, ICML 2021",
        summary=f"{name.replace('_', ' ')}: adversarial transferability between the candidate and a model trained on the target",
        options={"preset": "theory", "seed": 0, "bounds": None},
    )


for _name in ALPHA_ESTIMATORS:
    register(_entry(_name))
