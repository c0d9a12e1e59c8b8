"""One battery of bad and unusual inputs for every public function that takes a number, a flag, a seed or a
model: numpy scalars and 0-d tensors are accepted where a number is meant (and give the same result as the
Python value); strings, bools used as counts, NaN, negative seeds and non-modules are refused with a message
that names the argument. A coverage test keeps new public parameters from slipping past the battery."""

from __future__ import annotations

import inspect
import re
from typing import Any, Callable

import numpy as np
import pytest
import torch
from torch import nn

import transferlens as tl
from helpers import mlp, randn

X = randn(6, 4, seed=1)
Y = torch.tensor([0, 1, 2, 0, 1, 2])
THREAT = tl.ThreatModel(norm="l2", eps=0.1, steps=2)


def _task() -> tl.Task:
    g = torch.Generator().manual_seed(0)
    xtr, xte = torch.randn(30, 4, generator=g), torch.randn(12, 4, generator=g)
    return tl.Task("tiny", xtr, torch.arange(30) % 3, xte, torch.arange(12) % 3, 3)


TASK = _task()
REG = tl.rbf_regression(40, 3, 2, 5, n_clusters=2, seed=0)

T, V = TypeError, ValueError  # a wrong type (ArgumentTypeError is both) / a wrong value (ValueError only)
NAN, INF = float("nan"), float("inf")
# kind -> (values that must be accepted, (value, the error it must raise) pairs that must be refused)
KINDS: dict[str, tuple[Callable[[Any], list[Any]], list[tuple[Any, type]]]] = {
    "real+": (
        lambda v: [np.float32(v), np.float64(v), torch.tensor(float(v))],
        [("0.1", T), (True, T), (1 + 2j, T), (NAN, V), (INF, V), (-1.0, V), (0.0, V)],
    ),
    "real0": (
        lambda v: [np.float32(v), np.float64(v), torch.tensor(float(v))],
        [("0.1", T), (True, T), (1 + 2j, T), (NAN, V), (INF, V), (-1.0, V)],
    ),
    "count": (lambda v: [np.int64(v), np.int32(v), torch.tensor(int(v))], [("3", T), (True, T), (2.5, T), (NAN, T), (-1, V)]),
    "index": (lambda v: [np.int64(v), torch.tensor(int(v))], [("1", T), (True, T), (1.0, T), (-1, V)]),
    "flag": (lambda v: [np.bool_(v), bool(v)], [("False", T), ("no", T), (1, T), (0, T), (0.0, T)]),
    "seed": (
        lambda v: [np.int64(v), np.uint32(v), torch.tensor(int(v))],
        [(-1, V), (2**70, V), ("3", T), (True, T), (1.5, T), (NAN, T)],
    ),
    "model": (lambda v: [], [(lambda z: z, T), (None, T), ("model", T), ((nn.Linear(4, 3),), T)]),
}

FEATS = randn(30, 5, seed=2).numpy()
FEATS2 = randn(30, 5, seed=3).numpy()
LABELS = np.arange(30) % 3

# (public name, argument, kind, value to vary around, call(value) -> result)
CASES: list[tuple[str, str, str, Any, Callable[[Any], Any]]] = [
    ("logme", "tol", "real+", 1e-8, lambda v: tl.logme(FEATS, LABELS, tol=v)),
    ("logme", "regression", "flag", False, lambda v: tl.logme(FEATS, LABELS, regression=v)),
    ("transrate", "eps", "real+", 1e-2, lambda v: tl.transrate(FEATS, LABELS, eps=v)),
    ("gbc", "pca_dim", "count", 3, lambda v: tl.gbc(FEATS, LABELS, pca_dim=v)),
    ("ncti", "pca_dim", "count", 3, lambda v: tl.ncti([FEATS, FEATS2], LABELS, pca_dim=v)),
    ("sfda", "a", "real0", 1.0, lambda v: tl.sfda(FEATS, LABELS, a=v)),
    ("knn_accuracy", "k", "count", 3, lambda v: tl.knn_accuracy(FEATS, LABELS, k=v)),
    ("linear_probe_accuracy", "C", "real+", 1.0, lambda v: tl.linear_probe_accuracy(FEATS, LABELS, C=v)),
    ("linear_probe_accuracy", "folds", "count", 3, lambda v: tl.linear_probe_accuracy(FEATS, LABELS, folds=v)),
    ("linear_probe_accuracy", "seed", "seed", 0, lambda v: tl.linear_probe_accuracy(FEATS, LABELS, seed=v)),
    ("linear_probe_accuracy", "max_iter", "count", 200, lambda v: tl.linear_probe_accuracy(FEATS, LABELS, max_iter=v)),
    ("source_accuracy", "source_accuracy", "real0", 0.5, lambda v: tl.source_accuracy(v)),
    ("param_count", "model", "model", None, lambda v: tl.param_count(v)),
    ("fine_tune", "model", "model", None, lambda v: tl.fine_tune(v, TASK, epochs=1, device="cpu")),
    ("fine_tune", "epochs", "count", 1, lambda v: tl.fine_tune(mlp(4, 3), TASK, epochs=v, device="cpu")),
    ("fine_tune", "lr_backbone", "real0", 1e-3, lambda v: tl.fine_tune(mlp(4, 3), TASK, epochs=1, lr_backbone=v, device="cpu")),
    ("fine_tune", "lr_head", "real+", 1e-2, lambda v: tl.fine_tune(mlp(4, 3), TASK, epochs=1, lr_head=v, device="cpu")),
    ("fine_tune", "batch_size", "count", 8, lambda v: tl.fine_tune(mlp(4, 3), TASK, epochs=1, batch_size=v, device="cpu")),
    ("fine_tune", "weight_decay", "real0", 0.0, lambda v: tl.fine_tune(mlp(4, 3), TASK, epochs=1, weight_decay=v, device="cpu")),
    ("fine_tune", "val_fraction", "real+", 0.2, lambda v: tl.fine_tune(mlp(4, 3), TASK, epochs=1, val_fraction=v, device="cpu")),
    ("fine_tune", "patience", "count", 2, lambda v: tl.fine_tune(mlp(4, 3), TASK, epochs=1, patience=v, device="cpu")),
    ("fine_tune", "seed", "seed", 3, lambda v: tl.fine_tune(mlp(4, 3), TASK, epochs=1, seed=v, device="cpu")),
    ("TrainConfig", "weight_decay", "real0", 0.0, lambda v: tl.TrainConfig(weight_decay=v)),
    ("TrainConfig", "val_fraction", "real+", 0.2, lambda v: tl.TrainConfig(val_fraction=v)),
    ("TrainConfig", "momentum", "real0", 0.5, lambda v: tl.TrainConfig(momentum=v)),
    ("retrain_last_layer", "weight_decay", "real0", 1e-4, lambda v: tl.retrain_last_layer(mlp(4, 3), TASK, steps=2, weight_decay=v)),
    ("PGDAdversarial", "eps", "real+", 0.1, lambda v: tl.PGDAdversarial(eps=v)),
    ("PGDAdversarial", "steps", "count", 3, lambda v: tl.PGDAdversarial(steps=v)),
    ("PGDAdversarial", "step_size", "real+", 0.05, lambda v: tl.PGDAdversarial(step_size=v)),
    ("PGDAdversarial", "random_start", "flag", True, lambda v: tl.PGDAdversarial(random_start=v)),
    ("Trades", "eps", "real+", 0.1, lambda v: tl.Trades(eps=v)),
    ("Trades", "steps", "count", 3, lambda v: tl.Trades(steps=v)),
    ("Trades", "step_size", "real+", 0.05, lambda v: tl.Trades(step_size=v)),
    ("Trades", "random_start", "flag", True, lambda v: tl.Trades(random_start=v)),
    ("robust_accuracy", "model", "model", None, lambda v: tl.robust_accuracy(v, X, Y, THREAT)),
    ("robust_accuracy", "seed", "seed", 3, lambda v: tl.robust_accuracy(mlp(4, 3), X, Y, THREAT, seed=v)),
    ("robust_accuracy", "batch_size", "count", 4, lambda v: tl.robust_accuracy(mlp(4, 3), X, Y, THREAT, batch_size=v)),
    ("distill", "teacher", "model", None, lambda v: tl.distill(v, mlp(4, 3), TASK, epochs=1, device="cpu")),
    ("distill", "student", "model", None, lambda v: tl.distill(mlp(4, 3), v, TASK, epochs=1, device="cpu")),
    ("distill", "temperature", "real+", 2.0, lambda v: tl.distill(mlp(4, 3), mlp(4, 3, seed=1), TASK, epochs=1, temperature=v, device="cpu")),
    ("distill", "alpha", "real0", 0.0, lambda v: tl.distill(mlp(4, 3), mlp(4, 3, seed=1), TASK, epochs=1, alpha=v, device="cpu")),
    ("distill", "epochs", "count", 1, lambda v: tl.distill(mlp(4, 3), mlp(4, 3, seed=1), TASK, epochs=v, device="cpu")),
    ("distill", "lr", "real+", 1e-3, lambda v: tl.distill(mlp(4, 3), mlp(4, 3, seed=1), TASK, epochs=1, lr=v, device="cpu")),
    ("distill", "batch_size", "count", 8, lambda v: tl.distill(mlp(4, 3), mlp(4, 3, seed=1), TASK, epochs=1, batch_size=v, device="cpu")),
    ("distill", "val_fraction", "real+", 0.2, lambda v: tl.distill(mlp(4, 3), mlp(4, 3, seed=1), TASK, epochs=1, val_fraction=v, device="cpu")),
    ("distill", "patience", "count", 2, lambda v: tl.distill(mlp(4, 3), mlp(4, 3, seed=1), TASK, epochs=1, patience=v, device="cpu")),
    ("distill", "seed", "seed", 3, lambda v: tl.distill(mlp(4, 3), mlp(4, 3, seed=1), TASK, epochs=1, seed=v, device="cpu")),
    ("forward_kl", "temperature", "real+", 2.0, lambda v: tl.forward_kl(X[:, :3], X[:, 1:], temperature=v)),
    ("reverse_kl", "temperature", "real+", 2.0, lambda v: tl.reverse_kl(X[:, :3], X[:, 1:], temperature=v)),
    ("self_train", "model", "model", None, lambda v: tl.self_train(v, TASK, config=tl.TrainConfig(epochs=1), device="cpu")),
    ("self_train", "seed", "seed", 3, lambda v: tl.self_train(mlp(4, 3), TASK, seed=v, config=tl.TrainConfig(epochs=1), device="cpu")),
    ("self_train", "rounds", "count", 1, lambda v: tl.self_train(mlp(4, 3), TASK, rounds=v, config=tl.TrainConfig(epochs=1), device="cpu")),
    ("self_train", "threshold", "real+", 0.5, lambda v: tl.self_train(mlp(4, 3), TASK, threshold=v, config=tl.TrainConfig(epochs=1), device="cpu")),
    ("self_train", "labeled_fraction", "real+", 0.5, lambda v: tl.self_train(mlp(4, 3), TASK, labeled_fraction=v, config=tl.TrainConfig(epochs=1), device="cpu")),
    ("knn_transfer", "model", "model", None, lambda v: tl.knn_transfer(v, TASK)),
    ("knn_transfer", "k", "count", 3, lambda v: tl.knn_transfer(mlp(4, 3), TASK, k=v)),
    ("transfer", "model", "model", None, lambda v: tl.transfer("knn", v, TASK)),
    ("transfer", "seed", "seed", 3, lambda v: tl.transfer("knn", mlp(4, 3), TASK, seed=v)),
    ("ThreatModel", "eps", "real+", 0.1, lambda v: tl.ThreatModel(eps=v)),
    ("ThreatModel", "steps", "count", 3, lambda v: tl.ThreatModel(steps=v)),
    ("ThreatModel", "step_size", "real+", 0.05, lambda v: tl.ThreatModel(step_size=v)),
    ("ThreatModel", "random_start", "flag", True, lambda v: tl.ThreatModel(random_start=v)),
    ("pgd", "model", "model", None, lambda v: tl.pgd(v, X, THREAT)),
    ("pgd", "seed", "seed", 3, lambda v: tl.pgd(mlp(4, 3), X, THREAT, seed=v)),
    ("pgd", "batch_size", "count", 4, lambda v: tl.pgd(mlp(4, 3), X, THREAT, batch_size=v)),
    ("pgd", "validate", "flag", True, lambda v: tl.pgd(mlp(4, 3), X, THREAT, validate=v)),
    ("fgsm", "eps", "real+", 0.1, lambda v: tl.fgsm(mlp(4, 3), X, v)),
    ("fgsm", "seed", "seed", 3, lambda v: tl.fgsm(mlp(4, 3), X, 0.1, "deviation", seed=v)),
    ("fgsm", "batch_size", "count", 4, lambda v: tl.fgsm(mlp(4, 3), X, 0.1, batch_size=v)),
    ("model_output", "model", "model", None, lambda v: tl.model_output(v, X)),
    ("transferability", "source", "model", None, lambda v: tl.transferability(v, mlp(4, 3), X)),
    ("transferability", "target", "model", None, lambda v: tl.transferability(mlp(4, 3), v, X)),
    ("transferability", "tol", "real+", 1e-6, lambda v: _tf(tol=v)),
    ("transferability", "seed", "seed", 3, lambda v: _tf(seed=v)),
    ("transferability", "batch_size", "count", 4, lambda v: _tf(batch_size=v)),
    ("transferability", "correct_only", "flag", False, lambda v: _tf(correct_only=v)),
    ("transferability", "squared", "flag", True, lambda v: _tf(squared=v)),
    ("transferability", "same_label_space", "flag", True, lambda v: _tf(same_label_space=v)),
    ("exact_transferability", "source", "model", None, lambda v: tl.exact_transferability(v, _f64(1), X.double())),
    ("exact_transferability", "level", "index", 1, lambda v: tl.exact_transferability(_f64(0), _f64(1), X.double(), level=v)),
    ("exact_transferability", "chunk_size", "count", 4, lambda v: tl.exact_transferability(_f64(0), _f64(1), X.double(), chunk_size=v)),
    ("exact_transferability", "tol", "real+", 1e-10, lambda v: tl.exact_transferability(_f64(0), _f64(1), X.double(), tol=v)),
    ("exact_transferability", "squared", "flag", True, lambda v: tl.exact_transferability(_f64(0), _f64(1), X.double(), squared=v)),
    ("exact_transferability", "krylov_tol", "real+", 1e-8, lambda v: tl.exact_transferability(_f64(0), _f64(1), X.double(), method="krylov", krylov_tol=v)),
    ("exact_transferability", "krylov_steps", "count", 3, lambda v: tl.exact_transferability(_f64(0), _f64(1), X.double(), method="krylov", krylov_steps=v)),
    ("jacobians", "model", "model", None, lambda v: tl.jacobians(v, X)),
    ("jacobians", "chunk_size", "count", 4, lambda v: tl.jacobians(_f64(0), X.double(), chunk_size=v)),
    ("singular_directions", "k", "count", 2, lambda v: tl.singular_directions(_f64(0), X.double(), v)),
    ("singular_directions", "chunk_size", "count", 4, lambda v: tl.singular_directions(_f64(0), X.double(), chunk_size=v)),
    ("exact_attack", "eps", "real+", 0.1, lambda v: tl.exact_attack(_f64(0), X.double(), v)),
    ("exact_attack", "level", "index", 1, lambda v: tl.exact_attack(_f64(0), X.double(), 0.1, level=v)),
    ("exact_attack", "chunk_size", "count", 4, lambda v: tl.exact_attack(_f64(0), X.double(), 0.1, chunk_size=v)),
    ("exact_transferability", "memory_budget", "count", 4096, lambda v: tl.exact_transferability(_f64(0), _f64(1), X.double(), memory_budget=v)),
    ("jacobians", "memory_budget", "count", 4096, lambda v: tl.jacobians(_f64(0), X.double(), memory_budget=v)),
    ("singular_directions", "memory_budget", "count", 4096, lambda v: tl.singular_directions(_f64(0), X.double(), memory_budget=v)),
    ("exact_attack", "memory_budget", "count", 4096, lambda v: tl.exact_attack(_f64(0), X.double(), 0.1, memory_budget=v)),
    ("check_consistency", "steps", "count", 2, lambda v: tl.check_consistency(_f64(0), _f64(1), X.double(), eps=(0.1,), steps=v)),
    ("check_consistency", "step_multiplier", "real+", 10.0, lambda v: tl.check_consistency(_f64(0), _f64(1), X.double(), eps=(0.1,), steps=2, step_multiplier=v)),
    ("check_consistency", "seed", "seed", 3, lambda v: tl.check_consistency(_f64(0), _f64(1), X.double(), eps=(0.1,), steps=2, seed=v)),
    ("check_consistency", "eps", "real+", 0.1, lambda v: tl.check_consistency(_f64(0), _f64(1), X.double(), eps=(v,), steps=2)),
    ("check_consistency", "source", "model", None, lambda v: tl.check_consistency(v, _f64(1), X.double(), eps=(0.1,), steps=2)),
    ("check_consistency", "target", "model", None, lambda v: tl.check_consistency(_f64(0), v, X.double(), eps=(0.1,), steps=2)),
    ("exact_transferability", "target", "model", None, lambda v: tl.exact_transferability(_f64(0), v, X.double())),
    ("singular_directions", "model", "model", None, lambda v: tl.singular_directions(v, X.double())),
    ("exact_attack", "model", "model", None, lambda v: tl.exact_attack(v, X.double(), 0.1)),
    ("fgsm", "model", "model", None, lambda v: tl.fgsm(v, X, 0.1)),
    ("wrap_model", "module", "model", None, lambda v: tl.wrap_model(v, "fc")),
    ("random_direction", "model", "model", None, lambda v: tl.random_direction(v, seed=0)),
    ("perturbed_copy", "model", "model", None, lambda v: tl.perturbed_copy(v, [], 0.1)),
    ("refit_output_layer", "model", "model", None, lambda v: tl.refit_output_layer(v, REG)),
    ("train_regression", "model", "model", None, lambda v: tl.train_regression(v, REG, steps=2)),
    ("build_model", "seed", "seed", 3, lambda v: tl.build_model("mlp", (4,), 3, seed=v)),
    ("build_model", "num_classes", "count", 3, lambda v: tl.build_model("mlp", (4,), v)),
    ("TrainConfig", "epochs", "count", 2, lambda v: tl.TrainConfig(epochs=v)),
    ("TrainConfig", "batch_size", "count", 8, lambda v: tl.TrainConfig(batch_size=v)),
    ("TrainConfig", "patience", "count", 2, lambda v: tl.TrainConfig(patience=v)),
    ("TrainConfig", "lr", "real+", 1e-3, lambda v: tl.TrainConfig(lr=v)),
    ("TrainConfig", "seed", "seed", 3, lambda v: tl.TrainConfig(seed=v)),
    ("fit", "model", "model", None, lambda v: tl.fit(v, TASK, epochs=1, device="cpu")),
    ("fit", "epochs", "count", 1, lambda v: tl.fit(mlp(4, 3), TASK, epochs=v, device="cpu")),
    ("fit", "seed", "seed", 3, lambda v: tl.fit(mlp(4, 3), TASK, epochs=1, seed=v, device="cpu")),
    ("accuracy", "model", "model", None, lambda v: tl.accuracy(v, X, Y)),
    ("accuracy", "batch_size", "count", 4, lambda v: tl.accuracy(mlp(4, 3), X, Y, batch_size=v)),
    ("extract_features", "model", "model", None, lambda v: tl.extract_features(v, X)),
    ("extract_features", "batch_size", "count", 4, lambda v: tl.extract_features(mlp(4, 3), X, batch_size=v)),
    ("linear_probe", "model", "model", None, lambda v: tl.linear_probe(v, TASK)),
    ("linear_probe", "C", "real+", 1.0, lambda v: tl.linear_probe(mlp(4, 3), TASK, C=v)),
    ("linear_probe", "max_iter", "count", 50, lambda v: tl.linear_probe(mlp(4, 3), TASK, max_iter=v)),
    ("retrain_last_layer", "model", "model", None, lambda v: tl.retrain_last_layer(v, TASK)),
    ("retrain_last_layer", "steps", "count", 5, lambda v: tl.retrain_last_layer(mlp(4, 3), TASK, steps=v)),
    ("retrain_last_layer", "lr", "real+", 1e-2, lambda v: tl.retrain_last_layer(mlp(4, 3), TASK, lr=v)),
    ("retrain_last_layer", "seed", "seed", 3, lambda v: tl.retrain_last_layer(mlp(4, 3), TASK, steps=2, seed=v)),
    ("mnist1d_task", "seed", "seed", 3, lambda v: tl.mnist1d_task(seed=v, num_samples=40)),
    ("mnist1d_task", "num_samples", "count", 40, lambda v: tl.mnist1d_task(num_samples=v)),
    ("digits_task", "seed", "seed", 3, lambda v: tl.digits_task("noise", seed=v)),
    ("digits_task", "split_seed", "seed", 3, lambda v: tl.digits_task("flip", split_seed=v)),
    ("digits_task", "strength", "real0", 1.0, lambda v: tl.digits_task("blur", strength=v)),
    ("rbf_regression", "seed", "seed", 3, lambda v: tl.rbf_regression(20, 3, 2, 4, n_clusters=2, seed=v)),
    ("rbf_regression", "n_samples", "count", 20, lambda v: tl.rbf_regression(v, 3, 2, 4, n_clusters=2)),
    ("build_sigmoid_net", "seed", "seed", 3, lambda v: tl.build_sigmoid_net(3, 2, 4, seed=v)),
    ("build_sigmoid_net", "width", "count", 4, lambda v: tl.build_sigmoid_net(3, 2, v)),
    ("random_direction", "seed", "seed", 3, lambda v: tl.random_direction(tl.build_sigmoid_net(3, 2, 4), seed=v)),
    ("train_regression", "steps", "count", 2, lambda v: tl.train_regression(tl.build_sigmoid_net(3, 2, 4), REG, steps=v)),
    ("train_regression", "lr", "real+", 1.0, lambda v: tl.train_regression(tl.build_sigmoid_net(3, 2, 4), REG, steps=2, lr=v)),
    ("train_regression", "seed", "seed", 3, lambda v: tl.train_regression(tl.build_sigmoid_net(3, 2, 4), REG, steps=2, seed=v)),
    ("bootstrap_ci", "n_boot", "count", 50, lambda v: tl.bootstrap_ci([1, 2, 3, 4], [1, 3, 2, 4], "spearman", n_boot=v)),
    ("bootstrap_ci", "confidence", "real+", 0.9, lambda v: tl.bootstrap_ci([1, 2, 3, 4], [1, 3, 2, 4], "spearman", confidence=v)),
    ("bootstrap_ci", "seed", "seed", 3, lambda v: tl.bootstrap_ci([1, 2, 3, 4], [1, 3, 2, 4], "spearman", seed=v)),
    ("correlate", "n_boot", "count", 50, lambda v: tl.correlate([1, 2, 3, 4], [1, 3, 2, 4], n_boot=v)),
    ("correlate", "confidence", "real+", 0.9, lambda v: tl.correlate([1, 2, 3, 4], [1, 3, 2, 4], n_boot=20, confidence=v)),
    ("correlate", "seed", "seed", 3, lambda v: tl.correlate([1, 2, 3, 4], [1, 3, 2, 4], n_boot=20, seed=v)),
    ("E1Config", "seed", "seed", 3, lambda v: tl.E1Config(seed=v)),
    ("E1Config", "n_samples", "count", 100, lambda v: tl.E1Config(n_samples=v)),
    ("E1Config", "width", "count", 50, lambda v: tl.E1Config(width=v)),
    ("E1Config", "step", "real+", 0.1, lambda v: tl.E1Config(step=v)),
    ("E1Config", "level", "index", 1, lambda v: tl.E1Config(level=v, ablation_level=0)),
    ("E2Config", "seed", "seed", 3, lambda v: tl.E2Config(seed=v, device="cpu")),
    ("E2Config", "n_eval", "count", 100, lambda v: tl.E2Config(n_eval=v, device="cpu")),
    ("E2Config", "eps", "real+", 0.2, lambda v: tl.E2Config(eps=v, device="cpu")),
    ("E2Config", "steps", "count", 5, lambda v: tl.E2Config(steps=v, device="cpu")),
    ("E2Config", "num_samples", "count", 500, lambda v: tl.E2Config(num_samples=v, device="cpu")),
    ("E2Config", "n_boot", "count", 100, lambda v: tl.E2Config(n_boot=v, device="cpu")),
    ("E2Config", "probe_C", "real+", 0.5, lambda v: tl.E2Config(probe_C=v, device="cpu")),
]


def _f64(seed: int) -> nn.Module:
    return mlp(4, 3, seed=seed, dtype=torch.float64)


def _tf(**kw: Any) -> tl.Transferability:
    return tl.transferability(mlp(4, 3, seed=0), mlp(4, 3, seed=1), X, Y, threat=THREAT, **kw)


def _ids(case: tuple) -> str:
    return f"{case[0]}-{case[1]}"


def _equal(a: Any, b: Any) -> bool:
    """Results compare equal (tensors exactly, dataclasses by their tensors/values)."""
    if isinstance(a, torch.Tensor):
        return torch.equal(a, b)
    if isinstance(a, tuple) and a and isinstance(a[0], torch.Tensor):
        return all(torch.equal(u, v) for u, v in zip(a, b))
    if hasattr(a, "metrics") and callable(a.metrics):
        return a.metrics() == b.metrics()
    if isinstance(a, tl.Task):
        return torch.equal(a.x_train, b.x_train) and torch.equal(a.y_test, b.y_test)
    if isinstance(a, nn.Module):
        return all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))
    return True  # configs, fits: acceptance is what is checked


@pytest.mark.parametrize("case", [c for c in CASES if c[2] != "model"], ids=_ids)
def test_numpy_scalars_and_0d_tensors_are_accepted(case: tuple) -> None:
    name, arg, kind, value, call = case
    reference = call(value)
    for v in KINDS[kind][0](value):
        result = call(v)
        if kind.startswith("real") and isinstance(v, (np.float32, torch.Tensor)):
            continue  # float32 rounds the value: acceptance is what counts
        assert _equal(reference, result), f"{name}({arg}={v!r}) differs from {arg}={value!r}"


@pytest.mark.parametrize("case", CASES, ids=_ids)
def test_bad_values_are_refused_naming_the_argument(case: tuple) -> None:
    name, arg, kind, value, call = case
    for bad, expected in KINDS[kind][1]:
        pattern = re.escape(arg) if kind != "model" else r"Module|Model"
        with pytest.raises(expected, match=pattern) as info:
            call(bad)
        if expected is ValueError:  # a wrong value is not reported as a wrong type
            assert not isinstance(info.value, TypeError), f"{name}({arg}={bad!r}): {info.value!r}"
        # never an error from deep inside torch/numpy: the message is ours and says what is expected
        assert "must" in str(info.value), f"{name}({arg}={bad!r}): {info.value}"


def test_type_errors_are_also_value_errors() -> None:
    """Wrong types raise an error that is both a TypeError and a ValueError (earlier versions raised
    ValueError for these, so existing handlers keep working)."""
    with pytest.raises(TypeError):
        tl.ThreatModel(steps="3")
    with pytest.raises(ValueError):
        tl.ThreatModel(steps="3")


def test_string_flags_are_not_read_as_true() -> None:
    """bool("False") is True: a string flag must never silently flip an option."""
    with pytest.raises(TypeError, match="correct_only must be True or False"):
        _tf(correct_only="False")
    with pytest.raises(TypeError, match="squared must be True or False"):
        _tf(squared="no")
    with pytest.raises(TypeError, match="batch_size must be an integer"):
        _tf(batch_size=True)


def test_normalised_values_are_plain_python_types() -> None:
    t = tl.ThreatModel(eps=np.float64(0.25), steps=np.int64(4), random_start=np.bool_(True))
    assert type(t.eps) is float and type(t.steps) is int and type(t.random_start) is bool
    assert t.to_dict()["steps"] == 4
    c = tl.TrainConfig(epochs=np.int64(3), lr=np.float32(0.5), seed=torch.tensor(7))
    assert (type(c.epochs), type(c.lr), type(c.seed)) == (int, float, int)
    r = _tf(seed=np.int64(3))
    assert type(r.options["seed"]) is int


PARAMETER_KINDS = {
    "pca_dim", "folds", "a", "regression", "source_accuracy", "lr_backbone", "lr_head", "weight_decay", "val_fraction",
    "teacher", "student", "temperature", "alpha", "threshold", "labeled_fraction", "rounds", "momentum", "memory_budget",
    "eps", "steps", "step_size", "seed", "split_seed", "batch_size", "tol", "lr", "C", "max_iter", "level",
    "chunk_size", "k", "n_boot", "confidence", "num_samples", "n_samples", "epochs", "patience", "num_classes",
    "correct_only", "squared", "same_label_space", "random_start", "validate", "strength", "width", "n_eval",
    "probe_C", "step", "step_multiplier", "model", "source", "target", "module", "krylov_tol", "krylov_steps",
}
# Result objects are built by the library, not by users: their fields are outputs.
RESULT_TYPES = {
    "ConsistencyCheck", "Correlation", "DirectionResult", "E1Result", "E2Result", "ExactTransferability",
    "KnowledgeResult", "MatchingDistance", "RegressionData", "SuccessRates", "TrainResult", "Transferability",
    "Task", "SigmoidNet", "MLP", "CNN1D", "CNN2D", "FeatureModel", "DistillResult", "SelfTrainResult",
}


def test_every_public_numeric_flag_seed_or_model_parameter_is_in_the_battery() -> None:
    covered = {(c[0], c[1]) for c in CASES}
    missing = []
    for name in tl.__all__:
        obj = getattr(tl, name)
        if name in RESULT_TYPES or not callable(obj):
            continue
        try:
            params = inspect.signature(obj).parameters
        except (TypeError, ValueError):
            continue
        for p in params:
            if p in PARAMETER_KINDS and (name, p) not in covered:
                missing.append(f"{name}({p})")
    assert not missing, f"add these public parameters to CASES: {missing}"
