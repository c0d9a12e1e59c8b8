"""Compatibility module: the synthetic study (experiment E1) now lives in one module per layer.

Nothing is defined here; every name below keeps working from ``transferlens.data.synthetic`` (and from
``transferlens.data``), resolved from its new home on first access:

* data: :mod:`transferlens.data.rbf` - ``RegressionData``, ``rbf_regression``, ``MIN_RBF_WIDTH``,
  ``deviation_scales``, ``DEVIATION_SCHEDULES``;
* models: :mod:`transferlens.models.sigmoid` - ``SigmoidNet``, ``build_sigmoid_net``, ``SIGMOID_INITS``;
  :mod:`transferlens.models.sources` - ``random_direction``, ``perturbed_copy``;
* training: :mod:`transferlens.training_regression` - ``train_regression``, ``RegressionFit``,
  ``model_rmse``, ``regression_rmse``, ``TRAIN_OPTIMIZERS``;
* knowledge transfer: :mod:`transferlens.knowledge` - ``refit_output_layer``, ``RefitResult``.

The data layer does not depend on the layers above it: the names of the upper layers are looked up lazily
(module ``__getattr__``), so importing the data package never imports models, training or knowledge.
New code should import from the modules above.
"""

from __future__ import annotations

import importlib
from typing import Any

from .rbf import DEVIATION_SCHEDULES, MIN_RBF_WIDTH, RegressionData, deviation_scales, rbf_regression

# Name -> module (absolute) of everything that moved to a layer above data.
MOVED: dict[str, str] = {
    "SIGMOID_INITS": "transferlens.models.sigmoid",
    "SigmoidNet": "transferlens.models.sigmoid",
    "build_sigmoid_net": "transferlens.models.sigmoid",
    "perturbed_copy": "transferlens.models.sources",
    "random_direction": "transferlens.models.sources",
    "RegressionFit": "transferlens.training_regression",
    "TRAIN_OPTIMIZERS": "transferlens.training_regression",
    "model_rmse": "transferlens.training_regression",
    "regression_rmse": "transferlens.training_regression",
    "train_regression": "transferlens.training_regression",
    "RefitResult": "transferlens.knowledge",
    "refit_output_layer": "transferlens.knowledge",
}

# What this module offers: the data names it imports, and the moved ones (resolved on first access).
__all__ = ["DEVIATION_SCHEDULES", "MIN_RBF_WIDTH", "RegressionData", "deviation_scales", "rbf_regression", *MOVED]


def moved(name: str) -> Any:
    """The object ``name`` from its new home (one of the names in :data:`MOVED`)."""
    return getattr(importlib.import_module(MOVED[name]), name)


def __getattr__(name: str) -> Any:
    if name not in MOVED:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = globals()[name] = moved(name)  # resolved once
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(MOVED))
