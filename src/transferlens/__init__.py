"""transferlens: measure and predict how well what one neural network learned carries over to another.

Adversarial transferability (alpha metrics of Liang et al., ICML 2021, attack-based and exact),
knowledge transferability (linear probe, last-layer retraining, full fine-tuning, kNN, closed-form
refit), and the standard
transferability estimators (LogME, LEEP, NCE, H-score, TransRate, GBC, NC1, NCTI, SFDA, ...), on embedded
data, with a CLI and an HTML report.
"""

from ._validate import ArgumentTypeError
from . import alpha_scores as _alpha_scores  # registers the alpha metrics as estimators  # noqa: F401
from .adversarial import PRESETS, DirectionResult, SaturationWarning, SuccessRates, Transferability, transferability
from .allocator import AllocatorTuning, tune_allocator
from .attacks import ThreatModel, fgsm, model_output, pgd
from .data import DIGITS_TRANSFORMS, MNIST1D_DOMAINS, RegressionData, Task, digits_task, mnist1d_task, rbf_regression
from .estimators import (
    Estimator,
    estimator_names,
    gbc,
    get_estimator,
    h_score,
    knn_accuracy,
    leep,
    linear_probe_accuracy,
    logme,
    nc1,
    nce,
    ncti,
    param_count,
    sfda,
    shrinkage_h_score,
    source_accuracy,
    transrate,
)
from .evaluation import Correlation, bootstrap_ci, correlate, kendall, pearson, relative_top1, spearman, weighted_tau
from .exact import (
    ConsistencyCheck,
    ExactTransferability,
    MatchingDistance,
    check_consistency,
    exact_attack,
    exact_transferability,
    jacobians,
    singular_directions,
)
from .experiments import E1Config, E1Result, E2Config, E2Result, run_e1, run_e2, write_e1, write_e2
from .distill import DistillResult, distill, forward_kl, reverse_kl
from .finetune import fine_tune, knn_transfer
from .knowledge import KnowledgeResult, extract_features, linear_probe, refit_output_layer, retrain_last_layer
from .models import CNN1D, CNN2D, MLP, FeatureModel, build_model, wrap_model
from .models.load import ModelLoadError, load_model
from .models.sigmoid import SigmoidNet, build_sigmoid_net
from .models.sources import perturbed_copy, random_direction
from .regimes import PGDAdversarial, Regime, Standard, Trades, robust_accuracy
from .selftrain import SelfTrainResult, self_train
from .runs.results import load_run
from .training import TrainConfig, TrainingWarning, TrainResult, accuracy, fit
from .transfer_methods import TRANSFER_METHODS, TransferMethod, transfer, transfer_method_names
from .training_regression import train_regression

try:  # declared once, in pyproject.toml, and read back from the installed package's metadata
    from importlib.metadata import version as _dist_version

    __version__ = _dist_version("transferlens")
except ImportError:  # PackageNotFoundError is an ImportError: a source tree that is not installed
    __version__ = "0+unknown"

__all__ = [
    "Estimator", "estimator_names", "get_estimator", "gbc", "h_score", "knn_accuracy", "leep",
    "linear_probe_accuracy", "logme", "nc1", "nce", "ncti", "param_count", "sfda", "shrinkage_h_score",
    "source_accuracy", "transrate", "ModelLoadError", "load_model", "fine_tune", "knn_transfer",
    "PGDAdversarial", "Regime", "Standard", "Trades", "robust_accuracy", "SelfTrainResult", "self_train", "DistillResult", "distill", "forward_kl",
    "reverse_kl", "TRANSFER_METHODS", "TransferMethod", "transfer", "transfer_method_names",
    "AllocatorTuning", "tune_allocator", "ArgumentTypeError", "SaturationWarning", "TrainingWarning", "load_run",
    "ConsistencyCheck", "E1Config", "E1Result", "ExactTransferability", "MatchingDistance", "RegressionData",
    "SigmoidNet", "build_sigmoid_net", "check_consistency", "exact_attack", "exact_transferability",
    "jacobians", "perturbed_copy", "random_direction", "rbf_regression", "refit_output_layer", "run_e1",
    "singular_directions", "train_regression", "write_e1",
    "CNN1D", "CNN2D", "DIGITS_TRANSFORMS", "MLP", "MNIST1D_DOMAINS", "PRESETS",
    "Correlation", "DirectionResult", "E2Config", "E2Result", "FeatureModel", "KnowledgeResult",
    "SuccessRates", "Task", "ThreatModel", "TrainConfig", "TrainResult", "Transferability",
    "accuracy", "bootstrap_ci", "build_model", "correlate", "digits_task", "extract_features", "fgsm", "fit",
    "kendall", "linear_probe", "mnist1d_task", "model_output", "pearson", "pgd", "relative_top1",
    "retrain_last_layer", "run_e2", "spearman", "transferability", "weighted_tau", "wrap_model", "write_e2",
]
