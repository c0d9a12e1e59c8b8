"""Adversarial transferability between a source model S and a target (reference) model T.

For an attack crafted on model ``a`` and evaluated on ``b``: ``Delta_{a->b}(x) = f_b(x + delta_a(x)) - f_b(x)``.

* ``alpha1^{S->T}(x) = ||Delta_{S->T}(x)|| / ||Delta_{T->T}(x)||`` (per sample; the mean is reported);
* ``alpha2^{S->T} = ||E[u v^T]||_F`` with ``u = Delta_{S->S}/||.||`` and ``v = Delta_{S->T}/||.||``;
* ``combined^{S->T} = ||E[alpha1^{S->T}(x) u v^T]||_F`` (not the product of the two means);

and the same with S and T swapped for the T->S direction (attack the target, evaluate on the source).
This module runs the attacks; the metrics themselves come from the shared kernel in
:mod:`transferlens.alpha` (``DirectionResult`` and ``SuccessRates`` are re-exported from here).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import warnings

import numpy as np
import torch
from torch import nn

from ._torch import fresh, frozen_eval, model_device, model_dtype
from ._validate import (
    check_bounds,
    check_flag,
    check_labels,
    check_model,
    check_positive,
    check_within_bounds,
    model_outputs_2d,
)
# The alpha kernel and its result types live in .alpha (shared with the exact path); re-exported here.
from .alpha import DIRECTIONS, DirectionResult, SuccessRates, direction_metrics
from .attacks import ThreatModel, check_attack_args, check_threat, model_output, pgd, validate_inputs

# An attack whose perturbed inputs sit on the input box's faces in more than this share of the coordinates
# it moved is reported as saturated: the box, not the model, then decides where it ends.
SATURATION_WARN = 0.5


class SaturationWarning(UserWarning):
    """The attack's radius is so large that the perturbed inputs are pinned to the input bounds."""


@dataclass(frozen=True)
class Preset:
    """A named bundle of measurement options."""

    name: str
    threat: ThreatModel
    objective: str
    correct_only: bool
    squared: bool
    description: str


PRESETS: dict[str, Preset] = {
    "paper": Preset(
        "paper",
        ThreatModel.fgsm(0.1, "linf"),
        "ce",
        True,
        True,
        "ce objective, one FGSM-style linf step, only samples the target classifies correctly, squared "
        "Frobenius norms (the protocol of the numbers published with the original code)",
    ),
    "theory": Preset(
        "theory",
        ThreatModel(norm="l2", eps=0.1, steps=10),
        "deviation",
        False,
        False,
        "label-free deviation objective, small-eps l2 PGD, all samples, plain Frobenius norms",
    ),
}


@dataclass(frozen=True)
class Transferability:
    """Result of :func:`transferability`: both directions, clean accuracies, and every option used."""

    s2t: DirectionResult
    t2s: DirectionResult
    source_accuracy: float | None
    target_accuracy: float | None
    n: int
    options: dict[str, Any]

    def __getitem__(self, key: str) -> float:
        """``result["alpha1_t2s"]`` etc."""
        metric, _, direction = key.rpartition("_")
        if direction not in DIRECTIONS or metric not in ("alpha1", "alpha2", "combined"):
            raise KeyError(f"{key!r}; use METRIC_DIRECTION with METRIC in alpha1/alpha2/combined and DIRECTION in s2t/t2s")
        return float(getattr(getattr(self, direction), metric))

    def metrics(self) -> dict[str, float]:
        return {f"{m}_{d}": self[f"{m}_{d}"] for d in DIRECTIONS for m in ("alpha1", "alpha2", "combined")}

    def to_dict(self, samples: bool = False) -> dict[str, Any]:
        return {
            "metrics": self.metrics(),
            "s2t": self.s2t.to_dict(samples),
            "t2s": self.t2s.to_dict(samples),
            "source_accuracy": self.source_accuracy,
            "target_accuracy": self.target_accuracy,
            "n": self.n,
            "options": self.options,
        }


def _success(pred_clean_a, pred_adv_a, pred_clean_b, pred_adv_b, y) -> SuccessRates:
    a_ok, b_ok = pred_clean_a == y, pred_clean_b == y
    a_fooled, b_fooled = pred_adv_a != y, pred_adv_b != y
    cond = a_ok & b_ok & a_fooled

    def rate(mask: np.ndarray, hit: np.ndarray) -> float | None:
        return float(hit[mask].mean()) if mask.any() else None

    fooling, whitebox = rate(b_ok, b_fooled), rate(a_ok, a_fooled)
    return SuccessRates(
        n=int(len(y)),
        error_rate=float(b_fooled.mean()),
        fooling_rate=fooling,
        n_victim_correct=int(b_ok.sum()),
        conditional_rate=rate(cond, b_fooled),
        n_conditional=int(cond.sum()),
        whitebox_rate=whitebox,
        n_attacked_correct=int(a_ok.sum()),
        gradient_masking_suspected=bool(fooling is not None and whitebox is not None and fooling > whitebox),
    )


def _preset(preset: Any) -> Preset:
    base = PRESETS.get(preset or "theory") if isinstance(preset, (str, type(None))) else None
    if base is None:
        raise ValueError(f"unknown preset {preset!r}; choose one of {sorted(PRESETS)}")
    return base


def preset_threat(
    preset: str | None = "theory", norm: str | None = None, eps: float | None = None, steps: int | None = None
) -> ThreatModel:
    """The threat model of ``preset`` with ``norm``, ``eps`` and ``steps`` overridden where given.

    With no override the preset's own threat model is returned unchanged. Otherwise a one-step attack keeps
    the FGSM step (``step_size = eps``) and a multi-step one the default ``2.5 * eps / steps``.
    """
    base = _preset(preset).threat
    if norm is None and eps is None and steps is None:
        return base
    eps = eps if eps is not None else base.eps
    steps = steps if steps is not None else base.steps
    # a one-step attack keeps the FGSM step (= eps); otherwise the default 2.5 * eps / steps
    return replace(base, norm=norm or base.norm, eps=eps, steps=steps, step_size=eps if steps == 1 else None)


def resolve_options(
    preset: str | None,
    threat: ThreatModel | None,
    objective: str | None,
    correct_only: bool | None,
    squared: bool | None,
    bounds: Any = None,
) -> tuple[ThreatModel, str, bool, bool]:
    """Every measurement option: the explicit ones, else the preset's. ``bounds`` (the task's input box) is
    applied to a threat model that has no bounds of its own."""
    base = _preset(preset)
    threat = check_threat(threat) if threat is not None else preset_threat(preset)
    bounds = check_bounds(bounds)
    if bounds is not None and threat.bounds is None:
        threat = replace(threat, bounds=bounds)
    return (
        threat,
        objective if objective is not None else base.objective,
        base.correct_only if correct_only is None else check_flag(correct_only, "correct_only"),
        base.squared if squared is None else check_flag(squared, "squared"),
    )


def saturation(x: np.ndarray, delta: np.ndarray, bounds: tuple[float, float] | None) -> float | None:
    """Share of the coordinates an attack moved that ended on a face of the input box (``None`` without
    bounds or when nothing moved)."""
    if bounds is None:
        return None
    lo, hi = bounds
    tol = 1e-6 * max(1.0, abs(lo), abs(hi))
    moved = np.abs(delta) > tol
    if not moved.any():
        return None
    xa = x + delta
    pinned = moved & ((xa <= lo + tol) | (xa >= hi - tol))
    return float(pinned.sum() / moved.sum())


def transferability(
    source: nn.Module,
    target: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor | None = None,
    *,
    preset: str = "theory",
    threat: ThreatModel | None = None,
    objective: str | None = None,
    output: str = "logits",
    correct_only: bool | None = None,
    squared: bool | None = None,
    same_label_space: bool | None = None,
    tol: float = 1e-6,
    seed: int = 0,
    batch_size: int = 1024,
    bounds: tuple[float, float] | None = None,
) -> Transferability:
    """Alpha metrics (both directions), success rates and clean accuracies of ``source`` vs ``target`` on ``x``.

    ``x`` are inputs of the target task, ``y`` its labels (needed for ``correct_only``, accuracies and
    success rates). ``preset`` (``"theory"`` or ``"paper"``) fills every option not given explicitly.
    ``correct_only`` keeps the samples the target model classifies correctly. ``squared`` reports alpha2
    and combined as squared Frobenius norms. Samples whose reference deviation is ``<= tol`` are excluded
    and counted (``n_degenerate``). Success rates need the same label space (by default: the same number
    of logits); otherwise they are ``None``.

    ``bounds`` is the ``(lo, hi)`` box the inputs live in (pass the target task's ``Task.bounds``). When
    given and the threat model has no bounds of its own, the attacks clip ``x + delta`` into it (the
    threat model's own bounds win when it has them); ``x`` must then lie in the box. ``None`` (the default)
    leaves the threat model as it is.

    On a glibc system's CPU, call :func:`transferlens.tune_allocator` once per process first (the command line
    does): with glibc's default thresholds every attack step maps its large tensors afresh, which made this
    call 1.3x-2.1x slower at the default batch size (README, "CPU and GPU").
    """
    check_model(source, "source")
    check_model(target, "target")
    threat, objective, correct_only, squared = resolve_options(preset, threat, objective, correct_only, squared, bounds)
    batch_size, seed = check_attack_args(objective, output, batch_size, seed)
    if same_label_space is not None:
        same_label_space = check_flag(same_label_space, "same_label_space")
    tol = check_positive(tol, "tol")
    x = validate_inputs(x).detach()
    check_within_bounds(x, threat.bounds, "x")
    dev_s, dev_t = model_device(source), model_device(target)
    dt_s, dt_t = model_dtype(source, x.dtype), model_dtype(target, x.dtype)
    with frozen_eval(source, target):
        k_s = model_outputs_2d(source, x[:2].to(dev_s, dt_s), "source").shape[1]
        k_t = model_outputs_2d(target, x[:2].to(dev_t, dt_t), "target").shape[1]
    if y is not None:
        y = check_labels(y, k_t, "y", len(x)).numpy()
    if correct_only and y is None:
        raise ValueError("correct_only=True (the 'paper' preset) needs the labels y of the target task")
    if same_label_space is None:
        same_label_space = k_s == k_t
    if same_label_space and k_s != k_t:
        raise ValueError(f"same_label_space=True but source has {k_s} outputs and target {k_t}")

    attack_kw = dict(output=output, seed=seed, batch_size=batch_size, validate=False)
    d_s = pgd(source, x, threat, objective, **attack_kw)
    d_t = pgd(target, x, threat, objective, **attack_kw)

    # Clean and perturbed outputs of both models on both perturbations, chunk by chunk.
    outs: dict[str, list[np.ndarray]] = {}
    with frozen_eval(source, target), torch.no_grad():
        for i in range(0, len(x), batch_size):
            xb = x[i : i + batch_size]
            parts = (("clean", xb), ("adv_s", xb + d_s[i : i + batch_size]), ("adv_t", xb + d_t[i : i + batch_size]))
            for mname, model, dev, dt in (("s", source, dev_s, dt_s), ("t", target, dev_t, dt_t)):
                # One forward per part: a chunk three times as large runs slower per sample (cache).
                for pname, xin in parts:
                    xd = fresh(xin, dev, dt)  # a copy: the model may work in place on its input
                    logits = model(xd)
                    if output == "logits":
                        o = logits
                    elif output == "probs":
                        o = torch.softmax(logits, 1)
                    else:
                        o = model_output(model, xd, output)
                    outs.setdefault(f"{mname}_{pname}", []).append(o.double().cpu().numpy())
                    outs.setdefault(f"{mname}_{pname}_pred", []).append(logits.argmax(1).cpu().numpy())
    cat = {k: np.concatenate(v) for k, v in outs.items()}
    dev = {f"{a}2{b}": cat[f"{b}_adv_{a}"] - cat[f"{b}_clean"] for a in "st" for b in "st"}
    for key in ("s_clean", "t_clean", "s_adv_s", "s_adv_t", "t_adv_s", "t_adv_t"):
        bad = ~np.isfinite(cat[key]).all(axis=1)
        if bad.any():
            model_name = "source" if key[0] == "s" else "target"
            raise ValueError(
                f"the {model_name} model produced NaN/Inf outputs for {int(bad.sum())} "
                f"{'clean' if 'clean' in key else 'perturbed'} input(s) (first at index {int(np.argmax(bad))}); "
                "it overflows there: rescale the inputs, lower eps, or check the model"
            )

    keep = np.ones(len(x), dtype=bool)
    if correct_only:
        keep = cat["t_clean_pred"] == y
    src_acc = tgt_acc = None
    succ_s2t = succ_t2s = None
    if y is not None:
        tgt_acc = float((cat["t_clean_pred"] == y).mean())
        if same_label_space:
            src_acc = float((cat["s_clean_pred"] == y).mean())
            succ_s2t = _success(cat["s_clean_pred"], cat["s_adv_s_pred"], cat["t_clean_pred"], cat["t_adv_s_pred"], y)
            succ_t2s = _success(cat["t_clean_pred"], cat["t_adv_t_pred"], cat["s_clean_pred"], cat["s_adv_t_pred"], y)

    x_np = x.double().cpu().numpy().reshape(len(x), -1)
    sat = {a: saturation(x_np, d.double().cpu().numpy().reshape(len(x), -1), threat.bounds) for a, d in (("s", d_s), ("t", d_t))}
    for a, value in sat.items():
        if value is not None and value > SATURATION_WARN:
            warnings.warn(
                f"the attack on the {'source' if a == 's' else 'target'} model pinned {100 * value:.0f}% of the "
                f"coordinates it moved to the input bounds {threat.bounds}: eps={threat.eps} ({threat.norm}) is so "
                "large that the box, not the model, decides the perturbation, and the alpha metrics say little. "
                "Lower eps",
                SaturationWarning,
                stacklevel=2,
            )
    outputs = {"s": cat["s_clean"], "t": cat["t_clean"]}
    s2t = direction_metrics("s2t", dev["s2s"], dev["s2t"], dev["t2t"], keep, tol, squared, succ_s2t, sat["s"], outputs)
    t2s = direction_metrics("t2s", dev["t2t"], dev["t2s"], dev["s2s"], keep, tol, squared, succ_t2s, sat["t"], outputs)
    options = {
        "preset": preset,
        "threat": threat.to_dict(),
        "objective": objective,
        "output": output,
        "correct_only": correct_only,
        "squared": squared,
        "same_label_space": bool(same_label_space),
        "tol": tol,
        "seed": seed,
        "batch_size": batch_size,
        "attack": "fgsm" if threat.steps == 1 else "pgd",
    }
    return Transferability(s2t=s2t, t2s=t2s, source_accuracy=src_acc, target_accuracy=tgt_acc, n=len(x), options=options)
