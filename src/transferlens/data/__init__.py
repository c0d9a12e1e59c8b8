"""Tasks and the embedded domains (MNIST-1D, scikit-learn digits, synthetic RBF regression).

The synthetic study's models, training and refit (``SigmoidNet``, ``build_sigmoid_net``,
``random_direction``, ``perturbed_copy``, ``train_regression``, ``RegressionFit``, ``refit_output_layer``,
``RefitResult``) are still importable from here for compatibility; they live in the layers above
(see :mod:`transferlens.data.synthetic`) and are looked up on first access.
"""

from __future__ import annotations

from typing import Any

from . import synthetic as _synthetic
from .digits import DIGITS_TRANSFORMS, digits_task
from .mnist1d import MNIST1D_DOMAINS, SHIFT_KNOBS, mnist1d_task
from .rbf import RegressionData, deviation_scales, rbf_regression
from .task import Task

# The names this package re-exports from the layers above (lazily, see __getattr__).
_COMPAT = (
    "RefitResult", "RegressionFit", "SigmoidNet", "build_sigmoid_net", "perturbed_copy", "random_direction",
    "refit_output_layer", "train_regression",
)

__all__ = [
    "DIGITS_TRANSFORMS", "MNIST1D_DOMAINS", "SHIFT_KNOBS", "RefitResult", "RegressionData", "RegressionFit",
    "SigmoidNet", "Task", "build_sigmoid_net", "deviation_scales", "digits_task", "mnist1d_task",
    "perturbed_copy", "random_direction", "rbf_regression", "refit_output_layer", "train_regression",
]


def __getattr__(name: str) -> Any:
    if name not in _COMPAT:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = globals()[name] = _synthetic.moved(name)  # resolved once
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_COMPAT))
