"""Full-batch regression training of a :class:`~transferlens.models.base.FeatureModel` (experiment E1).

* :func:`train_regression` fits a model to a :class:`~transferlens.data.rbf.RegressionData` with MSE
  (variable projection, L-BFGS or Adam);
* :func:`model_rmse` / :func:`regression_rmse` measure the fit.

RMSE, used everywhere in the synthetic study (:func:`regression_rmse`), is the definition of the published
study: the squared error summed over the ``d`` outputs, averaged over the ``N`` samples, then rooted -
``sqrt(mean_i ||f(x_i) - y_i||^2)``, which is ``sqrt(d)`` times the element-wise RMSE. With it the numbers
are comparable to the published ones (target ~0.066; re-fitted sources up to ~0.44, which is close to the
RMSE of the per-output mean predictor on this data).

Training runs inside a seeded ``torch.random.fork_rng`` (CPU and CUDA generators restored), so results
depend only on the seeds passed in and no global random state is read or changed.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch
from torch import nn

from ._torch import keep_mode, seeded
from ._validate import check_int, check_positive, check_seed
from .data.rbf import DTYPE, RegressionData
from .models.base import FeatureModel

__all__ = ["RegressionFit", "TRAIN_OPTIMIZERS", "model_rmse", "regression_rmse", "train_regression"]

TRAIN_OPTIMIZERS: tuple[str, ...] = ("varpro", "lbfgs", "adam")
"""Optimizers accepted by :func:`train_regression`."""


def regression_rmse(pred: torch.Tensor, target: torch.Tensor) -> float:
    """``sqrt(mean_i ||pred_i - target_i||^2)`` - the RMSE of the synthetic study.

    The squared error is summed over the ``d`` outputs and averaged over the ``N`` samples (the
    definition of the published synthetic study), so it is ``sqrt(d)`` times the element-wise RMSE.
    """
    if pred.shape != target.shape or pred.ndim != 2:
        raise ValueError(
            f"predictions and targets must both be (N, d) with the same shape, got {tuple(pred.shape)} "
            f"and {tuple(target.shape)}"
        )
    return math.sqrt(float(_sq_error(pred.detach().to(DTYPE), target.detach().to(DTYPE))))


def _sq_error(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``mean_i ||pred_i - target_i||^2`` (differentiable): the training objective and ``RMSE ** 2``."""
    return (pred - target).square().sum(dim=1).mean()


def check_model_data(model: nn.Module, data: RegressionData) -> tuple[torch.Tensor, torch.Tensor]:
    if not isinstance(model, FeatureModel):
        raise TypeError(f"model must be a FeatureModel (e.g. a SigmoidNet), got {type(model).__name__}")
    if not isinstance(data, RegressionData):
        raise TypeError(f"data must be a RegressionData, got {type(data).__name__}")
    param = next(model.parameters(), None)
    device = param.device if param is not None else data.x.device
    dtype = param.dtype if param is not None else DTYPE
    return data.x.to(device=device, dtype=dtype), data.y.to(device=device, dtype=dtype)


def _check_outputs(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> None:
    with torch.no_grad():
        out = model(x[:2])
    if not isinstance(out, torch.Tensor) or out.ndim != 2 or out.shape[1] != y.shape[1]:
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(f"model returns {shape} for 2 samples but the targets have {y.shape[1]} outputs per sample")


@torch.no_grad()
def model_rmse(model: nn.Module, data: RegressionData) -> float:
    """RMSE (:func:`regression_rmse`) of ``model``'s own predictions on ``data``."""
    x, y = check_model_data(model, data)
    _check_outputs(model, x, y)
    return regression_rmse(model(x), y)


@dataclass(frozen=True)
class RegressionFit:
    """Result of :func:`train_regression`.

    ``rmse`` is the training RMSE (:func:`regression_rmse`) after training, ``final_loss`` the training
    objective ``mean_i ||f(x_i) - y_i||^2`` (``rmse ** 2``), ``steps`` the optimizer iterations taken and
    ``options`` every training option plus the function evaluations and the wall time.
    """

    rmse: float
    steps: int
    final_loss: float
    options: dict


def closed_form_head(feats: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Least-squares ``[feats, 1] W ~ y`` (minimum norm via SVD); returns ``W`` of shape ``(D + 1, d)``."""
    design = torch.cat([feats, torch.ones(feats.shape[0], 1, dtype=feats.dtype, device=feats.device)], dim=1)
    if design.device.type != "cpu":  # "gelsd" is CPU only
        return torch.linalg.lstsq(design.cpu(), y.cpu(), driver="gelsd").solution.to(feats.device)
    return torch.linalg.lstsq(design, y, driver="gelsd").solution


def train_regression(
    model: FeatureModel,
    data: RegressionData,
    *,
    steps: int = 200,
    lr: float = 1e-2,
    seed: int = 0,
    optimizer: str = "varpro",
) -> RegressionFit:
    """Fit ``model`` **in place** to ``data``, minimising ``mean_i ||f(x_i) - y_i||^2`` on the full batch.

    ``optimizer``:

    * ``"varpro"`` (default; needs an ``nn.Linear`` head): variable projection. The objective is
      minimised over the feature parameters only, with the output layer solved in closed form (least
      squares with bias) at every evaluation, by ``steps`` iterations of ``torch.optim.LBFGS`` with a
      strong-Wolfe line search. The head is then set to the exact least-squares solution on the final
      features. This is the fastest route to near convergence: on the E1 sizes it passes the published
      target RMSE (0.066) after ~50 iterations and reaches ~0.050 after the default 200.
    * ``"lbfgs"``: ``steps`` L-BFGS iterations (strong Wolfe) on all parameters.
    * ``"adam"``: ``steps`` full-batch Adam steps with learning rate ``lr`` (``lr`` is ignored otherwise).

    L-BFGS may stop before ``steps`` iterations once the gradient or the change in loss reaches float64
    round-off. Training is full batch and deterministic; it runs inside a forked RNG seeded
    with ``seed`` (so a model with random layers is deterministic too) and leaves the global RNG alone.
    """
    x, y = check_model_data(model, data)
    steps = check_int(steps, "steps", 1)
    lr = check_positive(lr, "lr")
    seed = check_seed(seed)
    if optimizer not in TRAIN_OPTIMIZERS:
        raise ValueError(f"unknown optimizer {optimizer!r}; choose one of {list(TRAIN_OPTIMIZERS)}")
    _check_outputs(model, x, y)
    head = model.head
    if optimizer == "varpro":
        if not isinstance(head, nn.Linear) or head.bias is None:
            raise ValueError('optimizer="varpro" needs an nn.Linear head with a bias; use "lbfgs" or "adam"')
        params = [p for p in model.body.parameters() if p.requires_grad]
    else:
        params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("model has no trainable parameters")

    evaluations = 0
    start = time.perf_counter()
    with seeded(seed), keep_mode(model):
        model.train()
        if optimizer == "adam":
            opt_adam = torch.optim.Adam(params, lr=lr)
            for _ in range(steps):
                loss = _sq_error(model(x), y)
                opt_adam.zero_grad(set_to_none=True)
                loss.backward()
                opt_adam.step()
                evaluations += 1
            taken = steps
        else:
            ones = torch.ones(x.shape[0], 1, dtype=x.dtype, device=x.device)
            opt = torch.optim.LBFGS(
                params,
                lr=1.0,
                max_iter=steps,
                max_eval=2 * steps + 10,
                history_size=20,
                line_search_fn="strong_wolfe",
                tolerance_grad=1e-12,
                tolerance_change=1e-15,
            )

            def objective() -> torch.Tensor:
                if optimizer == "lbfgs":
                    return _sq_error(model(x), y)
                design = torch.cat([model.features(x), ones], dim=1)
                with torch.no_grad():
                    # Inner least squares by the normal equations (cheap); the gradient w.r.t. the
                    # features at the optimal head is the gradient of the projected objective.
                    dd = design.detach()
                    chol, info = torch.linalg.cholesky_ex(dd.T @ dd)
                    if int(info) == 0:
                        w = torch.cholesky_solve(dd.T @ y, chol)
                    else:  # rank-deficient features: fall back to the SVD solve
                        w = closed_form_head(dd[:, :-1], y)
                return _sq_error(design @ w, y)

            def closure() -> torch.Tensor:
                nonlocal evaluations
                opt.zero_grad(set_to_none=True)
                loss = objective()
                loss.backward()
                evaluations += 1
                return loss

            opt.step(closure)
            taken = int(opt.state[params[0]].get("n_iter", 0))
            if optimizer == "varpro":
                with torch.no_grad():
                    w = closed_form_head(model.features(x), y)
                    head.weight.copy_(w[:-1].T)
                    head.bias.copy_(w[-1])
    seconds = time.perf_counter() - start
    model.zero_grad(set_to_none=True)
    with torch.no_grad():
        final_loss = float(_sq_error(model(x), y))
    return RegressionFit(
        rmse=math.sqrt(final_loss),
        steps=taken,
        final_loss=final_loss,
        options={
            "optimizer": optimizer,
            "steps": steps,
            "lr": lr if optimizer == "adam" else None,
            "seed": seed,
            "loss": "mean_i ||f(x_i) - y_i||^2",
            "full_batch": True,
            "evaluations": evaluations,
            "seconds": seconds,
        },
    )
