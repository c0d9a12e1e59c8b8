"""The alpha kernel: alpha1, alpha2 and combined of one direction from its output deviations.

Both measurement paths feed it: the attack-based one (:func:`transferlens.adversarial.transferability`,
deviations of perturbed outputs) and the exact one (:func:`transferlens.exact.exact_transferability`,
Jacobians times singular vectors). For the attack crafted on ``a`` and evaluated on ``b``:

* ``alpha1(x) = ||Delta_{a->b}(x)|| / ||Delta_{b->b}(x)||`` (per sample; the mean is reported);
* ``alpha2 = ||E[u v^T]||_F`` with ``u = Delta_{a->a}/||.||`` and ``v = Delta_{a->b}/||.||``;
* ``combined = ||E[alpha1(x) u v^T]||_F`` (not the product of the two means).

This module knows nothing about attacks or Jacobians: it takes arrays and returns a :class:`DirectionResult`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

__all__ = ["DIRECTIONS", "DirectionResult", "SuccessRates", "direction_metrics"]

DIRECTIONS = ("s2t", "t2s")


@dataclass(frozen=True)
class SuccessRates:
    """Transfer success of the attack crafted on ``attacked`` and evaluated on ``victim`` (denominators stated).

    * ``error_rate``: victim wrong on ``x + delta`` over all ``n`` samples;
    * ``fooling_rate``: victim wrong on ``x + delta`` over the ``n_victim_correct`` samples it gets right clean;
    * ``conditional_rate``: over the ``n_conditional`` samples both models get right clean and the attacked
      model is fooled on, the fraction where the victim is fooled too (``None`` when there are none);
    * ``whitebox_rate``: the attacked model fooled by its own attack, over its ``n_attacked_correct`` clean-correct;
    * ``gradient_masking_suspected``: the transfer fooling rate beats the white-box rate.
    """

    n: int
    error_rate: float
    fooling_rate: float | None
    n_victim_correct: int
    conditional_rate: float | None
    n_conditional: int
    whitebox_rate: float | None
    n_attacked_correct: int
    gradient_masking_suspected: bool

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class DirectionResult:
    """Alpha metrics for one direction; ``s2t`` means the attack is crafted on S and evaluated on T."""

    direction: str
    alpha1: float
    alpha1_median: float
    alpha2: float
    combined: float
    n_used: int
    n_filtered: int
    n_degenerate: int
    alpha1_samples: np.ndarray = field(repr=False)
    used_index: np.ndarray = field(repr=False)
    success: SuccessRates | None = None
    saturation: float | None = None

    def to_dict(self, samples: bool = False) -> dict[str, Any]:
        d = {
            k: getattr(self, k)
            for k in (
                "direction", "alpha1", "alpha1_median", "alpha2", "combined", "n_used", "n_filtered", "n_degenerate",
                "saturation",
            )
        }
        d["success"] = self.success.to_dict() if self.success else None
        if samples:
            d["alpha1_samples"] = self.alpha1_samples.tolist()
            d["used_index"] = self.used_index.tolist()
        return d


def _frob(m: np.ndarray, squared: bool) -> float:
    v = float(np.sqrt((m * m).sum()))
    return v * v if squared else v


def _row_norms(a: np.ndarray) -> np.ndarray:
    """Euclidean norm of each row, scaled first so that tiny (or huge) rows neither underflow nor overflow."""
    scale = np.abs(a).max(axis=1)
    safe = np.where(scale > 0, scale, 1.0)
    return scale * np.linalg.norm(a / safe[:, None], axis=1)


def _no_sample_message(name, keep, degenerate, n_aa, n_bb, tol, outputs) -> str:
    """Why nothing is left to measure, in terms of what was actually degenerate."""
    msg = f"no sample left to measure the {name} direction: "
    if not keep.any():
        return msg + (
            f"all {len(keep)} were filtered out (correct_only keeps only samples the target classifies "
            "correctly, and it gets none right). Check the target and the labels, or pass correct_only=False"
        )
    a, b = ("source", "target") if name == "s2t" else ("target", "source")
    zero_a, zero_b = int((keep & (n_aa <= tol)).sum()), int((keep & (n_bb <= tol)).sum())
    msg += (
        f"{int(degenerate.sum())} of {int(keep.sum())} have a deviation <= tol={tol:g} "
        f"(the attacked {a} model's own deviation on {zero_a}, the {b} model's reference deviation on {zero_b}). "
    )
    if outputs is not None:
        key = "s" if (name == "s2t") == (zero_a >= zero_b) else "t"
        size = float(np.median(_row_norms(outputs[key])))
        if size > 0 and size * 1e-6 > tol:
            return msg + (
                f"The {'source' if key == 's' else 'target'} model's outputs are of size {size:.3g}: a change of "
                f"{tol:g} is below their floating-point resolution, so the deviation rounds to 0. Rescale the inputs "
                "or the model (standardise the data) rather than changing eps"
            )
    return msg + (
        "The model's output does not move within the attack's ball: it is flat or saturated there (constant "
        "outputs, a dead ReLU layer, a hard-thresholded output). Increase eps (attacks), pick a lower level "
        "(exact metrics), or lower tol"
    )


def direction_metrics(
    name, dev_aa, dev_ab, dev_bb, keep, tol, squared, success, saturation=None, outputs=None
) -> DirectionResult:
    """Alpha metrics of the attack crafted on ``a``: ``dev_aa = Delta_{a->a}``, ``dev_ab = Delta_{a->b}``,
    ``dev_bb = Delta_{b->b}`` (the denominator of alpha1); arrays (N, m), (N, d), (N, d) in float64.
    ``outputs`` (clean outputs ``{"s": ..., "t": ...}``) only serve a clearer error message."""
    n_aa, n_ab, n_bb = (_row_norms(d) for d in (dev_aa, dev_ab, dev_bb))
    degenerate = keep & ((n_bb <= tol) | (n_aa <= tol))
    used = keep & ~degenerate
    idx = np.flatnonzero(used)
    if len(idx) == 0:
        raise ValueError(_no_sample_message(name, keep, degenerate, n_aa, n_bb, tol, outputs))
    a1 = n_ab[idx] / n_bb[idx]
    u = dev_aa[idx] / n_aa[idx, None]
    nab = n_ab[idx]
    v = np.divide(dev_ab[idx], nab[:, None], out=np.zeros_like(dev_ab[idx]), where=nab[:, None] > 0)  # 0 contributes 0
    m = u.T @ v / len(idx)
    w = (u * a1[:, None]).T @ v / len(idx)
    return DirectionResult(
        direction=name,
        alpha1=float(a1.mean()),
        alpha1_median=float(np.median(a1)),
        alpha2=_frob(m, squared),
        combined=_frob(w, squared),
        n_used=int(len(idx)),
        n_filtered=int((~keep).sum()),
        n_degenerate=int(degenerate.sum()),
        alpha1_samples=a1,
        used_index=idx,
        success=success,
        saturation=saturation,
    )
