"""Tasks and the embedded domains (MNIST-1D, scikit-learn digits)."""

from .digits import DIGITS_TRANSFORMS, digits_task
from .mnist1d import MNIST1D_DOMAINS, SHIFT_KNOBS, mnist1d_task
from .task import Task

__all__ = ["DIGITS_TRANSFORMS", "MNIST1D_DOMAINS", "SHIFT_KNOBS", "Task", "digits_task", "mnist1d_task"]
