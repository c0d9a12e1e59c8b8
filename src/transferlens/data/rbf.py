"""Synthetic RBF regression data (experiment E1): the data of the paper's synthetic study.

* :func:`rbf_regression` draws inputs from a mixture of Gaussians and maps them through random RBF
  features and a random affine map to regression targets (a :class:`RegressionData`);
* :func:`deviation_scales` is the schedule of deviation sizes of the E1 sources (target weights plus a
  growing multiple of a fixed random direction, see :mod:`transferlens.models.sources`).

The models, their training and the closed-form refit live in their own layers:
:mod:`transferlens.models.sigmoid`, :mod:`transferlens.models.sources`,
:mod:`transferlens.training_regression` and :mod:`transferlens.knowledge`.

Everything is ``float64``. Every random draw comes from an explicit ``torch.Generator`` seeded with the
``seed`` passed in, so no global random state (torch, numpy or Python's) is read or changed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import torch

from .._torch import cpu_generator, uniform
from .._validate import check_int, check_positive, check_seed

__all__ = ["DEVIATION_SCHEDULES", "DTYPE", "MIN_RBF_WIDTH", "RegressionData", "deviation_scales", "rbf_regression"]

DTYPE = torch.float64

MIN_RBF_WIDTH = 1e-3
"""Lower clamp for the RBF widths ``s_j = 100 * U(0, 1)``.

A width of exactly 0 (probability ~2^-53 per draw) would divide by zero; widths below ``1e-3`` give a
feature that is 0 to machine precision for every input anyway (``||x - mu||^2`` is ~50 for the E1
sizes), so clamping changes nothing measurable and only rules out NaN.
"""

DEVIATION_SCHEDULES: tuple[str, ...] = ("accumulated", "linear")
"""Schedules accepted by :func:`deviation_scales`."""


@dataclass(frozen=True, eq=False)
class RegressionData:
    """A regression data set: inputs ``x`` ``(N, n)`` and targets ``y`` ``(N, d)``, both float64.

    Tensors (or array-likes) of another floating or integer dtype are converted to float64 on
    construction. ``meta`` records every option of the generator that made the data, so that a run
    can store its full configuration.
    """

    x: torch.Tensor
    y: torch.Tensor
    name: str = "regression"
    description: str = ""
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        for attr in ("x", "y"):
            value = getattr(self, attr)
            if not isinstance(value, torch.Tensor):
                try:
                    value = torch.as_tensor(value)
                except Exception as exc:  # noqa: BLE001 - rewrapped with a clear message
                    raise TypeError(f"{attr} must be a tensor or array-like of numbers, got {type(value).__name__}") from exc
            if value.is_complex() or value.dtype == torch.bool:
                raise TypeError(f"{attr} must hold real numbers, got dtype {value.dtype}")
            if value.ndim != 2:
                raise ValueError(
                    f"{attr} must be a 2-D (samples, {'inputs' if attr == 'x' else 'outputs'}) tensor, "
                    f"got shape {tuple(value.shape)}"
                )
            if value.shape[0] < 1 or value.shape[1] < 1:
                raise ValueError(f"{attr} is empty (shape {tuple(value.shape)}); pass at least one sample and one column")
            value = value.detach().to(dtype=DTYPE)
            if not bool(torch.isfinite(value).all()):
                bad = int((~torch.isfinite(value)).sum())
                raise ValueError(f"{attr} contains {bad} NaN/Inf value(s); regression data must be finite")
            object.__setattr__(self, attr, value)
        if self.x.shape[0] != self.y.shape[0]:
            raise ValueError(
                f"x has {self.x.shape[0]} samples but y has {self.y.shape[0]}; they must have the same N"
            )
        if not isinstance(self.name, str) or not isinstance(self.description, str):
            raise TypeError("name and description must be strings")
        if not isinstance(self.meta, Mapping):
            raise TypeError(f"meta must be a dict, got {type(self.meta).__name__}")
        object.__setattr__(self, "meta", dict(self.meta))

    @property
    def n_samples(self) -> int:
        return int(self.x.shape[0])

    @property
    def n_inputs(self) -> int:
        return int(self.x.shape[1])

    @property
    def n_outputs(self) -> int:
        return int(self.y.shape[1])

    def __repr__(self) -> str:
        return (
            f"RegressionData(name={self.name!r}, N={self.n_samples}, n_inputs={self.n_inputs}, "
            f"n_outputs={self.n_outputs})"
        )


def rbf_regression(
    n_samples: int = 5000,
    n_inputs: int = 50,
    n_outputs: int = 10,
    n_rbf: int = 100,
    n_clusters: int = 10,
    seed: int = 0,
) -> RegressionData:
    """The E1 synthetic regression data (the defaults are the published sizes).

    * inputs: a mixture of ``n_clusters`` Gaussians with equal weights and identity covariance, centres
      ``c_k ~ U(-0.5, 0.5)^n``; each sample picks its component uniformly at random;
    * ``m = n_rbf`` RBF features ``phi_j(x) = exp(-||x - mu_j||^2 / s_j)`` with
      ``mu_j ~ U(-0.5, 0.5)^n`` and ``s_j = 100 * U(0, 1)``, clamped to ``>= MIN_RBF_WIDTH`` (1e-3) so
      that a zero width cannot produce NaN;
    * targets ``y = A phi(x) + b`` with ``A`` (``d x m``) and ``b`` (``d``) entries ``~ U(-0.5, 0.5)``.

    All draws come from one ``torch.Generator`` seeded with ``seed``, in this order: centres,
    component labels, Gaussian noise, ``mu``, ``s``, ``A``, ``b``.
    """
    n_samples = check_int(n_samples, "n_samples", 1)
    n_inputs = check_int(n_inputs, "n_inputs", 1)
    n_outputs = check_int(n_outputs, "n_outputs", 1)
    n_rbf = check_int(n_rbf, "n_rbf", 1)
    n_clusters = check_int(n_clusters, "n_clusters", 1)
    seed = check_seed(seed)
    gen = cpu_generator(seed)

    centres = uniform((n_clusters, n_inputs), gen)
    labels = torch.randint(0, n_clusters, (n_samples,), generator=gen)
    noise = torch.randn((n_samples, n_inputs), generator=gen, dtype=DTYPE)
    x = centres[labels] + noise

    mu = uniform((n_rbf, n_inputs), gen)
    widths = (100.0 * torch.rand((n_rbf,), generator=gen, dtype=DTYPE)).clamp_min(MIN_RBF_WIDTH)
    # Direct (not matmul-expanded) distances: exact, never negative.
    sq_dist = torch.cdist(x, mu, compute_mode="donot_use_mm_for_euclid_dist").square()
    phi = torch.exp(-sq_dist / widths)
    weight = uniform((n_outputs, n_rbf), gen)
    bias = uniform((n_outputs,), gen)
    y = phi @ weight.T + bias

    meta = {
        "generator": "rbf_regression",
        "n_samples": n_samples,
        "n_inputs": n_inputs,
        "n_outputs": n_outputs,
        "n_rbf": n_rbf,
        "n_clusters": n_clusters,
        "seed": seed,
        "cluster_std": 1.0,
        "centre_range": [-0.5, 0.5],
        "rbf_centre_range": [-0.5, 0.5],
        "rbf_width_scale": 100.0,
        "min_rbf_width": MIN_RBF_WIDTH,
        "output_param_range": [-0.5, 0.5],
        "dtype": "float64",
    }
    description = (
        f"{n_samples} samples of {n_inputs}-dim inputs from a mixture of {n_clusters} unit-variance Gaussians "
        f"(centres ~ U(-0.5,0.5)); {n_outputs} outputs y = A phi(x) + b of {n_rbf} RBF features "
        f"exp(-||x - mu_j||^2 / s_j), mu_j ~ U(-0.5,0.5), s_j ~ 100*U(0,1); A, b ~ U(-0.5,0.5); seed {seed}"
    )
    return RegressionData(x=x, y=y, name=f"rbf_regression(seed={seed})", description=description, meta=meta)


def deviation_scales(steps: int = 10, schedule: str = "accumulated", step: float = 0.1) -> list[float]:
    """Deviation scales ``scale_i`` for ``i = 0 .. steps-1`` (source ``i`` = target + ``scale_i`` * direction).

    * ``"accumulated"`` (the official script): at step ``i`` it added ``step * i`` to the running
      perturbation, so ``scale_i = step * i * (i + 1) / 2`` -> 0, 0.1, 0.3, 0.6, 1.0, ... for ``step=0.1``;
    * ``"linear"``: ``scale_i = step * i`` -> 0, 0.1, 0.2, ...
    """
    steps = check_int(steps, "steps", 1)
    step = check_positive(step, "step")
    if schedule == "accumulated":
        return [float(step) * (i * (i + 1) // 2) for i in range(steps)]
    if schedule == "linear":
        return [float(step) * i for i in range(steps)]
    raise ValueError(f"unknown schedule {schedule!r}; choose one of {list(DEVIATION_SCHEDULES)}")
