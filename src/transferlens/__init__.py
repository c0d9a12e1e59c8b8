"""transferlens: measure and predict how well what one neural network learned carries over to another.

Adversarial transferability (alpha metrics of Liang et al., ICML 2021) and knowledge transferability
(linear probe, last-layer retraining), on embedded data, with a CLI and an HTML report.
"""

from .adversarial import PRESETS, DirectionResult, SuccessRates, Transferability, transferability
from .attacks import ThreatModel, fgsm, model_output, pgd
from .data import DIGITS_TRANSFORMS, MNIST1D_DOMAINS, Task, digits_task, mnist1d_task
from .evaluation import Correlation, bootstrap_ci, correlate, kendall, pearson, relative_top1, spearman, weighted_tau
from .experiments import E2Config, E2Result, run_e2, write_e2
from .knowledge import KnowledgeResult, extract_features, linear_probe, retrain_last_layer
from .models import CNN1D, CNN2D, MLP, FeatureModel, build_model, wrap_model
from .training import TrainConfig, TrainResult, accuracy, fit

__version__ = "0.1.0"

__all__ = [
    "CNN1D", "CNN2D", "DIGITS_TRANSFORMS", "MLP", "MNIST1D_DOMAINS", "PRESETS",
    "Correlation", "DirectionResult", "E2Config", "E2Result", "FeatureModel", "KnowledgeResult",
    "SuccessRates", "Task", "ThreatModel", "TrainConfig", "TrainResult", "Transferability",
    "accuracy", "bootstrap_ci", "build_model", "correlate", "digits_task", "extract_features", "fgsm", "fit",
    "kendall", "linear_probe", "mnist1d_task", "model_output", "pearson", "pgd", "relative_top1",
    "retrain_last_layer", "run_e2", "spearman", "transferability", "weighted_tau", "wrap_model", "write_e2",
]
