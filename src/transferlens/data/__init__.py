"""Tasks and the embedded domains (MNIST-1D, scikit-learn digits, synthetic RBF regression)."""

from .digits import DIGITS_TRANSFORMS, digits_task
from .mnist1d import MNIST1D_DOMAINS, SHIFT_KNOBS, mnist1d_task
from .synthetic import (
    RefitResult,
    RegressionData,
    RegressionFit,
    SigmoidNet,
    build_sigmoid_net,
    deviation_scales,
    perturbed_copy,
    random_direction,
    rbf_regression,
    refit_output_layer,
    train_regression,
)
from .task import Task

__all__ = [
    "DIGITS_TRANSFORMS", "MNIST1D_DOMAINS", "SHIFT_KNOBS", "RefitResult", "RegressionData", "RegressionFit",
    "SigmoidNet", "Task", "build_sigmoid_net", "deviation_scales", "digits_task", "mnist1d_task",
    "perturbed_copy", "random_direction", "rbf_regression", "refit_output_layer", "train_regression",
]
