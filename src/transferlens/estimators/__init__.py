"""Transferability estimators: cheap scores that predict how well a candidate model will transfer.

Each estimator is a plain function over arrays (``logme(features, labels)``, ``leep(source_probs,
labels)``, ...) and one entry in the registry (:mod:`.registry`) recording the inputs it needs, whether
higher is better, whether it is zoo-relative, and its reference. Importing this package registers them all.
"""

# Registration order is the order `estimator_names()` lists them in (and tables show them): the
# probability-based scores, the feature-based ones, the accuracy-based ones, then trivial baselines.
from ._inputs import check_features, check_labels, check_probs, check_targets  # isort: skip
from .registry import INPUTS, Estimator, estimator_names, get_estimator, register, score, score_zoo  # isort: skip
from .leep import leep  # isort: skip
from .nce import nce  # isort: skip
from .logme import logme  # isort: skip
from .hscore import h_score, shrinkage_h_score  # isort: skip
from .transrate import transrate  # isort: skip
from .gbc import gbc  # isort: skip
from .nc1 import nc1  # isort: skip
from .ncti import ncti  # isort: skip
from .sfda import sfda  # isort: skip
from .knn import knn_accuracy  # isort: skip
from .linear import linear_probe_accuracy  # isort: skip
from .baselines import param_count, source_accuracy  # isort: skip

__all__ = [
    "INPUTS", "Estimator", "check_features", "check_labels", "check_probs", "check_targets",
    "estimator_names", "get_estimator", "register", "score", "score_zoo",
    "gbc", "h_score", "knn_accuracy", "leep", "linear_probe_accuracy", "logme", "nc1", "nce", "ncti",
    "param_count", "sfda", "shrinkage_h_score", "source_accuracy", "transrate",
]
