"""E4, the model-selection benchmark: how well does each estimator rank a zoo of candidates?

For each target task, a zoo of candidate sources (architectures x source domains x training seeds, plus
deliberately bad ones: a random initialisation and a model trained on shuffled labels per architecture) is
scored by every registered estimator and by the alpha metrics (against a reference model trained on the
target), and actually transferred three ways -- linear probe, last-layer retraining, full fine-tuning --
which are the ground truths (``ground_truths`` may name any method of :mod:`transferlens.transfer_methods`,
e.g. ``knn`` or ``distill``). Per target and ground truth, each estimator's ranking is judged with Pearson,
Spearman, Kendall, weighted tau and relative top-1.

Intervals are over **target samples**: each of ``half_samples`` replicates draws a random half of the
target's training samples (the estimators re-score on it) and a random half of its test samples (the
ground truths' accuracies are re-measured on it), the same halves for every candidate. For a mean, a
half-sample drawn without replacement has the variance of the full-sample mean, so the replicates' spread
has the right scale, without the duplicates a with-replacement bootstrap would put into kNN and
cross-validated scores. Their location does not: scores from half the samples are noisier, which pulls
correlations down. A statistic's interval is therefore the replicates' 2.5-97.5 percentile spread
re-centred on the full-sample value (shifted by the replicates' median), clipped to the statistic's range. The alpha metrics
are measured on ``n_eval`` test samples; alpha1 is re-averaged over each replicate's half of them, while
alpha2 and combined (matrix norms) keep their point value (their intervals are not reported).

MNIST-1D targets share one zoo (trained once, measured against each target); digits targets have their
own (the inputs differ). No part of the zoo or of the protocol is tuned for any estimator.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .._validate import check_int, check_positive, check_seed
from ..data.digits import DIGITS_TRANSFORMS
from ..data.mnist1d import MNIST1D_DOMAINS
from ..estimators import estimator_names, get_estimator
from ..evaluation import kendall, pearson, relative_top1, spearman, weighted_tau
from ..runs.context import CellOutput, Context
from ..runs.spec import Cell, derive_seed
from ..training import TrainConfig
from . import _zoo
from ._output import environment, write_tables
from .base import Experiment, register

__all__ = ["SelectionConfig", "SelectionResult", "STATISTICS", "GROUND_TRUTHS"]

GROUND_TRUTHS = ("linear_probe", "last_layer", "fine_tune")
STATISTICS = ("pearson", "spearman", "kendall", "weighted_tau", "relative_top1")
ALPHA_METRICS = ("alpha1_t2s", "alpha1_s2t", "alpha2_t2s", "alpha2_s2t", "combined_t2s", "combined_s2t")
# metrics never used as predictors: inputs of others or trivially constant within one family's zoo
_NOT_PREDICTORS = ("param_count",)

QUICK: dict[str, Any] = {
    "mnist1d_targets": ["noisy"], "digits_targets": ["rotate"], "mnist1d_sources": ["reference", "shuffled"],
    "digits_sources": ["none", "invert"], "mnist1d_archs": ["mlp"], "digits_archs": ["mlp"], "replicates": 1,
    "num_samples": 600, "fine_tune_epochs": 1, "half_samples": 5, "n_eval": 100,
    "train": {"epochs": 5},
}


@dataclass(frozen=True)
class SelectionConfig:
    """The benchmark: targets, the zoo, the ground truths and the statistics' replicates."""

    seed: int = 0
    mnist1d_targets: tuple[str, ...] = ("noisy", "sheared")
    digits_targets: tuple[str, ...] = ("rotate",)
    mnist1d_sources: tuple[str, ...] = ("reference", "noisy", "sheared", "untranslated", "very-noisy", "shuffled")
    digits_sources: tuple[str, ...] = ("none", "blur", "flip", "invert", "noise", "crop")
    mnist1d_archs: tuple[str, ...] = ("mlp", "cnn1d")
    digits_archs: tuple[str, ...] = ("mlp", "cnn2d")
    replicates: int = 2
    bad_candidates: bool = True
    num_samples: int = 2000
    digits_strength: float = 0.5
    train: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=15))
    ground_truths: tuple[str, ...] = GROUND_TRUTHS
    fine_tune_epochs: int = 5
    estimators: tuple[str, ...] = ()
    alpha: bool = True
    n_eval: int = 300
    preset: str = "theory"
    probe_C: float = 1.0
    half_samples: int = 20
    device: str = "auto"

    def __post_init__(self) -> None:
        object.__setattr__(self, "seed", check_seed(self.seed))
        for d in (*self.mnist1d_targets, *self.mnist1d_sources):
            if d not in MNIST1D_DOMAINS:
                raise ValueError(f"unknown MNIST-1D domain {d!r}; choose from {sorted(MNIST1D_DOMAINS)}")
        for d in (*self.digits_targets, *self.digits_sources):
            if d not in DIGITS_TRANSFORMS:
                raise ValueError(f"unknown digits transform {d!r}; choose from {list(DIGITS_TRANSFORMS)}")
        for a in self.mnist1d_archs:
            if a not in ("mlp", "cnn1d"):
                raise ValueError(f"mnist1d_archs: {a!r} does not fit MNIST-1D; choose from ['mlp', 'cnn1d']")
        for a in self.digits_archs:
            if a not in ("mlp", "cnn2d"):
                raise ValueError(f"digits_archs: {a!r} does not fit digits; choose from ['mlp', 'cnn2d']")
        from ..transfer_methods import transfer_method_names

        for g in self.ground_truths:
            if g not in transfer_method_names():
                raise ValueError(f"unknown ground truth {g!r}; choose from the transfer methods {transfer_method_names()}")
        if not self.ground_truths:
            raise ValueError("ground_truths is empty: choose at least one of " + ", ".join(transfer_method_names()))
        for e in self.estimators:
            if e not in estimator_names():
                raise ValueError(f"unknown estimator {e!r}; choose from {', '.join(estimator_names())}")
            if not set(get_estimator(e).needs) <= {"features", "labels", "source_probs", "source_accuracy"}:
                raise ValueError(f"estimators: {e!r} is not scored from features here (set alpha = true for the alpha metrics)")
        if not (self.mnist1d_targets or self.digits_targets):
            raise ValueError("no target task: set mnist1d_targets and/or digits_targets")
        if self.mnist1d_targets and (not self.mnist1d_sources or not self.mnist1d_archs):
            raise ValueError("MNIST-1D targets need mnist1d_sources and mnist1d_archs")
        if self.digits_targets and (not self.digits_sources or not self.digits_archs):
            raise ValueError("digits targets need digits_sources and digits_archs")
        object.__setattr__(self, "replicates", check_int(self.replicates, "replicates", 1))
        object.__setattr__(self, "num_samples", check_int(self.num_samples, "num_samples", 200))
        object.__setattr__(self, "fine_tune_epochs", check_int(self.fine_tune_epochs, "fine_tune_epochs", 1))
        object.__setattr__(self, "n_eval", check_int(self.n_eval, "n_eval", 10))
        object.__setattr__(self, "half_samples", check_int(self.half_samples, "half_samples", 2))
        object.__setattr__(self, "probe_C", check_positive(self.probe_C, "probe_C"))
        object.__setattr__(self, "digits_strength", check_positive(self.digits_strength, "digits_strength"))

    def chosen_estimators(self) -> list[str]:
        """Every registered estimator (or those asked for) except ``source_accuracy``-free trivial ones that
        cannot vary here; ``source_accuracy`` is the candidates' own test accuracy on their source task."""
        arrays = {"features", "labels", "source_probs", "source_accuracy"}  # the alpha metrics are measured apart
        return list(self.estimators) or [
            n for n in estimator_names() if n not in _NOT_PREDICTORS and set(get_estimator(n).needs) <= arrays
        ]

    def predictors(self) -> list[str]:
        return self.chosen_estimators() + (list(ALPHA_METRICS) if self.alpha else [])


# ----------------------------------------------------------------------------------------------- grid


def _regime(cfg: SelectionConfig) -> dict[str, Any]:
    return {"name": "standard", **cfg.train.spec()}


def _task_spec(cfg: SelectionConfig, family: str, domain: str, draw: str, replicate: int | None = None,
               labels: str | None = None) -> dict[str, Any]:
    if family == "mnist1d":
        spec: dict[str, Any] = {"generator": "mnist1d", "domain": domain, "num_samples": cfg.num_samples}
    else:
        spec = {"generator": "digits", "transform": domain, "strength": cfg.digits_strength}
    spec.update({"draw": draw, "seed": cfg.seed, "study": "selection"})
    if replicate is not None:
        spec["replicate"] = replicate
    if labels:
        spec["labels"] = labels
    return spec


@dataclass(frozen=True)
class _Candidate:
    name: str
    family: str
    arch: str
    domain: str
    kind: str  # "trained", "untrained", "shuffled-labels"
    cell: Cell


def _zoo_cells(cfg: SelectionConfig, family: str) -> list[_Candidate]:
    archs = cfg.mnist1d_archs if family == "mnist1d" else cfg.digits_archs
    domains = cfg.mnist1d_sources if family == "mnist1d" else cfg.digits_sources
    out = []
    for arch in archs:
        for domain in domains:
            for r in range(cfg.replicates):
                spec = {"task": _task_spec(cfg, family, domain, "source", r), "arch": arch, "regime": _regime(cfg)}
                name = f"{arch}@{domain}#{r}"
                out.append(_Candidate(name, family, arch, domain, "trained", Cell.make("train", spec, label=f"train {name}")))
        if cfg.bad_candidates:
            base = _task_spec(cfg, family, domains[0], "source", 0)
            spec = {"task": base, "arch": arch, "regime": {"name": "untrained"}}
            out.append(_Candidate(f"{arch}@untrained", family, arch, domains[0], "untrained",
                                  Cell.make("train", spec, label=f"init {arch}")))
            spec = {"task": {**base, "labels": "shuffled"}, "arch": arch, "regime": _regime(cfg)}
            out.append(_Candidate(f"{arch}@shuffled-labels", family, arch, domains[0], "shuffled-labels",
                                  Cell.make("train", spec, label=f"train {arch}@shuffled-labels")))
    return out


def _targets(cfg: SelectionConfig) -> list[tuple[str, str, str]]:
    """(target name, family, domain)."""
    return [(f"mnist1d:{d}", "mnist1d", d) for d in cfg.mnist1d_targets] + [
        (f"digits:{d}", "digits", d) for d in cfg.digits_targets
    ]


def _reference_spec(cfg: SelectionConfig, family: str, domain: str) -> dict[str, Any]:
    arch = (cfg.mnist1d_archs if family == "mnist1d" else cfg.digits_archs)[-1]
    return {"task": _task_spec(cfg, family, domain, "target"), "arch": arch, "regime": _regime(cfg)}


def _grid(cfg: SelectionConfig) -> list[Cell]:
    cells: list[Cell] = []
    zoos = {}
    for family in ("mnist1d", "digits"):
        if (cfg.mnist1d_targets if family == "mnist1d" else cfg.digits_targets):
            zoos[family] = _zoo_cells(cfg, family)
            cells += [c.cell for c in zoos[family]]
    names = cfg.chosen_estimators()
    for target_name, family, domain in _targets(cfg):
        target_task = _task_spec(cfg, family, domain, "target")
        halves = {"n": cfg.half_samples, "seed": derive_seed(target_task, "half-samples")}
        ref = None
        if cfg.alpha:
            ref = Cell.make("train", _reference_spec(cfg, family, domain), label=f"reference {target_name}")
            cells.append(ref)
        extracts = []
        for cand in zoos[family]:
            source = cand.cell.spec
            x = Cell.make("e4.extract", {"source": source, "target": target_task}, deps=(cand.cell.key,),
                          label=f"extract {cand.name} -> {target_name}")
            extracts.append(x)
            cells.append(x)
            for name in names:
                est = get_estimator(name)
                if est.zoo_relative:
                    continue
                spec = {"extract": x.key, "target": target_task, "estimator": name, "options": dict(est.options),
                        "halves": halves, "source_accuracy_from": cand.cell.key if "source_accuracy" in est.needs else None}
                deps = (x.key, cand.cell.key) if "source_accuracy" in est.needs else (x.key,)
                cells.append(Cell.make("e4.score", spec, deps=deps, label=f"{name} {cand.name} -> {target_name}"))
            for gt in cfg.ground_truths:
                spec = {"source": source, "target": target_task, "method": gt, "probe_C": cfg.probe_C,
                        "fine_tune_epochs": cfg.fine_tune_epochs}
                cells.append(Cell.make("e4.truth", spec, deps=(cand.cell.key,), label=f"{gt} {cand.name} -> {target_name}"))
            if ref is not None:
                spec = {"source": source, "reference": ref.spec, "target": target_task, "n_eval": cfg.n_eval,
                        "preset": cfg.preset}
                cells.append(Cell.make("e4.alpha", spec, deps=(cand.cell.key, ref.key), label=f"alpha {cand.name} -> {target_name}"))
        for name in names:
            est = get_estimator(name)
            if est.zoo_relative:
                keys = [x.key for x in extracts]
                spec = {"extracts": keys, "target": target_task, "estimator": name, "options": dict(est.options),
                        "halves": halves}
                cells.append(Cell.make("e4.zoo", spec, deps=tuple(keys), label=f"{name} -> {target_name}"))
    return cells


# ----------------------------------------------------------------------------------------------- cells


def _half_indices(n: int, halves: dict[str, Any], side: str) -> np.ndarray:
    """(replicates, n // 2) sorted index sets: a random half of ``n`` samples per replicate."""
    rng = np.random.default_rng(derive_seed(halves["seed"], side, n))
    return np.sort(np.stack([rng.permutation(n)[: n // 2] for _ in range(halves["n"])]), axis=1)


def _extract(cell: Cell, ctx: Context) -> CellOutput:
    import torch

    from ..knowledge import extract_features

    spec = cell.spec
    model = _zoo.load_model(ctx, cell.deps[0], spec["source"])
    t = _zoo.task(ctx, spec["target"])
    feats = extract_features(model, t.x_train)
    dev = next(model.parameters()).device
    with torch.no_grad():
        logits = torch.cat([model(t.x_train[i : i + 1024].to(dev)).double().cpu() for i in range(0, len(t.x_train), 1024)])
    return CellOutput(arrays={"features": feats.cpu().numpy(), "probs": torch.softmax(logits, 1).numpy()})


def _score_inputs(ctx: Context, key: str, labels: np.ndarray, idx: np.ndarray | None, acc: float | None) -> dict[str, Any]:
    f, p = ctx.array(key, "features"), ctx.array(key, "probs")
    if idx is not None:
        f, p, labels = f[idx], p[idx], labels[idx]
    return {"features": f, "source_probs": p, "labels": labels, "source_accuracy": acc}


def _score(cell: Cell, ctx: Context) -> CellOutput:
    from ..estimators import score

    spec = cell.spec
    labels = _zoo.task(ctx, spec["target"]).y_train.numpy()
    acc = ctx.results(spec["source_accuracy_from"])["test_accuracy"] if spec["source_accuracy_from"] else None
    t0 = time.perf_counter()
    value = score(spec["estimator"], options=spec["options"], **_score_inputs(ctx, spec["extract"], labels, None, acc))
    seconds = time.perf_counter() - t0
    halves = _half_indices(len(labels), spec["halves"], "train")
    reps = np.array([score(spec["estimator"], options=spec["options"], **_score_inputs(ctx, spec["extract"], labels, i, acc))
                     for i in halves])
    return CellOutput(results=[(spec["estimator"], "", value)], payload={"seconds": seconds}, arrays={"halves": reps})


def _zoo_score(cell: Cell, ctx: Context) -> CellOutput:
    from ..estimators import score_zoo

    spec = cell.spec
    labels = _zoo.task(ctx, spec["target"]).y_train.numpy()
    t0 = time.perf_counter()
    values = score_zoo(spec["estimator"], [_score_inputs(ctx, k, labels, None, None) for k in spec["extracts"]], labels,
                       options=spec["options"])
    seconds = time.perf_counter() - t0
    reps = np.array([
        score_zoo(spec["estimator"], [_score_inputs(ctx, k, labels, i, None) for k in spec["extracts"]], labels[i],
                  options=spec["options"])
        for i in _half_indices(len(labels), spec["halves"], "train")
    ])  # (replicates, candidates)
    return CellOutput(results=[(spec["estimator"], k, v) for k, v in zip(spec["extracts"], values)],
                      payload={"seconds": seconds}, arrays={"halves": reps})


def _alpha(cell: Cell, ctx: Context) -> CellOutput:
    from ..adversarial import transferability

    spec = cell.spec
    source = _zoo.load_model(ctx, cell.deps[0], spec["source"])
    reference = _zoo.load_model(ctx, cell.deps[1], spec["reference"])
    t = _zoo.task(ctx, spec["target"])
    n = spec["n_eval"]
    t0 = time.perf_counter()
    tf = transferability(source, reference, t.x_test[:n], t.y_test[:n], preset=spec["preset"], seed=cell.seed("attack"),
                         bounds=t.bounds)
    results, arrays = [], {}
    for d in ("t2s", "s2t"):
        r = getattr(tf, d)
        for m in ("alpha1", "alpha2", "combined"):
            results.append((m, d, float(getattr(r, m))))
        arrays[f"alpha1_samples_{d}"] = np.asarray(r.alpha1_samples, dtype=np.float64)
        arrays[f"used_index_{d}"] = np.asarray(r.used_index, dtype=np.int64)
    return CellOutput(results=results, payload={"seconds": time.perf_counter() - t0}, arrays=arrays)


# ----------------------------------------------------------------------------------------------- analysis


def _recentred(point: float, replicates: list[float], statistic: str) -> list[float]:
    """The replicates' 2.5-97.5 percentile spread, shifted so that their median sits on the full-sample value
    (and clipped to the statistic's range). Half-sample scores are noisier than full-sample ones, which pulls
    their correlations down; the spread is what half-samples estimate well, the location is not."""
    lo, mid, hi = np.percentile(replicates, [2.5, 50.0, 97.5])
    low, high = point + (lo - mid), point + (hi - mid)
    top = 1.0
    bottom = -1.0 if statistic != "relative_top1" else -math.inf
    return [float(min(max(low, bottom), top)), float(min(max(high, bottom), top))]


def _stats(scores: list[float], truth: list[float]) -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    for name, fn in (("pearson", pearson), ("spearman", spearman), ("kendall", kendall), ("weighted_tau", weighted_tau)):
        try:
            out[name] = fn(scores, truth)
        except ValueError:
            out[name] = None
    try:
        out["relative_top1"] = relative_top1(scores, truth)
    except ValueError:
        out["relative_top1"] = None
    return out


@dataclass(frozen=True)
class SelectionResult:
    """Per target: the candidates' scores and ground truths; per (target, ground truth, predictor): the
    statistics with their half-sample intervals; per predictor: its time."""

    config: SelectionConfig
    targets: list[dict[str, Any]]
    candidates: dict[str, list[dict[str, Any]]]
    judged: list[dict[str, Any]]
    seconds_per_predictor: dict[str, float]
    seconds: float
    environment: dict[str, Any]
    failed_cells: list[tuple[str, str]] = field(default_factory=list)

    def rows(self) -> list[dict[str, Any]]:
        return [dict(r) for r in self.judged]

    def summary(self) -> dict[str, Any]:
        from ..runs.config import config_to_dict

        return {
            "experiment": "selection",
            "title": "model-selection benchmark: estimators and alpha metrics against three ground truths",
            "config": config_to_dict(self.config),
            "targets": self.targets,
            "n_candidates": {t: len(c) for t, c in self.candidates.items()},
            "judged": self.judged,
            "seconds_per_predictor": self.seconds_per_predictor,
            "candidates": self.candidates,
            "failed_cells": [list(f) for f in self.failed_cells],
            "environment": self.environment,
        }


class Selection(Experiment):
    name = "selection"
    aliases = ("e4",)
    title = "model-selection benchmark (E4): every estimator and the alpha metrics against three ground truths"
    config_cls = SelectionConfig
    variants = {"quick": QUICK}
    ground_truth = "transfer accuracy (linear probe, last layer, fine-tuning)"

    def grid(self, config: SelectionConfig) -> list[Cell]:
        return _grid(config)

    cell_kinds = {"train": _zoo.train_cell, "e4.extract": _extract, "e4.score": _score, "e4.zoo": _zoo_score,
                  "e4.truth": _zoo.transfer_cell, "e4.alpha": _alpha}

    def describe(self, config: SelectionConfig) -> str:
        n = {f: len(_zoo_cells(config, f)) for f in ("mnist1d", "digits")}
        targets = ", ".join(t for t, _, _ in _targets(config))
        return (f"E4 selection benchmark: targets {targets}; zoo of {n['mnist1d']} MNIST-1D / {n['digits']} digits "
                f"candidates; {len(config.predictors())} predictors; ground truths {', '.join(config.ground_truths)}")

    def analyse(self, config: SelectionConfig, cells: list[Cell], ctx: Context, seconds: float = 0.0) -> SelectionResult:
        return _analyse(config, cells, ctx, seconds)

    def write(self, result: SelectionResult, out_dir: str | Path) -> dict[str, Path]:
        return write_selection(result, out_dir)

    def summary_table(self, result: SelectionResult) -> tuple[str, list[str], list[list[str]]]:
        gt = result.config.ground_truths[0]
        targets = [t["name"] for t in result.targets]
        body = []
        for p in result.config.predictors():
            row = [p]
            for t in targets:
                j = next((r for r in result.judged if r["target"] == t and r["ground_truth"] == gt and r["predictor"] == p), None)
                row.append("-" if j is None or j["weighted_tau"] is None else
                           f"{j['weighted_tau']:.2f} [{_ci(j.get('weighted_tau_ci'))}]")
            row.append(f"{result.seconds_per_predictor.get(p, 0.0):.1f}")
            body.append(row)
        return (f"Weighted tau with {gt} accuracy (half-sample 95% interval), per target",
                ["predictor", *targets, "time (s)"], body)


def _ci(ci: list[float] | None) -> str:
    return "-" if not ci else f"{ci[0]:.2f}, {ci[1]:.2f}"


def _analyse(config: SelectionConfig, cells: list[Cell], ctx: Context, seconds: float) -> SelectionResult:
    done = {c.key for c in cells}
    grid = _grid(config)
    predictors = config.predictors()
    seconds_per: dict[str, float] = {p: 0.0 for p in predictors}
    zoos = {f: _zoo_cells(config, f) for f in ("mnist1d", "digits")}
    targets_out, candidates_out, judged = [], {}, []
    failed = [(c.label, "not computed") for c in grid if c.key not in done]
    by_kind: dict[tuple[str, str], Cell] = {}
    for c in grid:
        by_kind[(c.kind, c.label)] = c
    for target_name, family, domain in _targets(config):
        t = _zoo.task(ctx, _task_spec(config, family, domain, "target"))
        targets_out.append({**t.summary(), "task": t.name, "name": target_name})
        rows = []
        preds: dict[str, list[float | None]] = {p: [] for p in predictors}
        pred_halves: dict[str, list[np.ndarray | None]] = {p: [] for p in predictors}
        truths: dict[str, list[float | None]] = {g: [] for g in config.ground_truths}
        truth_halves: dict[str, list[np.ndarray | None]] = {g: [] for g in config.ground_truths}
        n_test = len(t.y_test)
        test_halves = _half_indices(n_test, {"n": config.half_samples,
                                             "seed": derive_seed(_task_spec(config, family, domain, "target"), "half-samples")}, "test")
        for i, cand in enumerate(zoos[family]):
            row: dict[str, Any] = {"candidate": cand.name, "architecture": cand.arch, "domain": cand.domain, "kind": cand.kind}
            src_acc = ctx.results(cand.cell.key).get("test_accuracy") if cand.cell.key in done else None
            row["source_accuracy"] = src_acc
            for p in predictors:
                value, halves = None, None
                if p in ALPHA_METRICS:
                    cell = by_kind.get(("e4.alpha", f"alpha {cand.name} -> {target_name}"))
                    if cell is not None and cell.key in done:
                        res = ctx.results(cell.key)
                        value = res.get(p)
                        seconds_per[p] += float(ctx.payload(cell.key).get("seconds", 0.0)) / len(ALPHA_METRICS)
                        metric, d = p.rsplit("_", 1)
                        if metric == "alpha1":
                            a = ctx.array(cell.key, f"alpha1_samples_{d}")
                            used = ctx.array(cell.key, f"used_index_{d}")
                            eval_halves = _half_indices(config.n_eval, {"n": config.half_samples,
                                                         "seed": derive_seed(_task_spec(config, family, domain, "target"), "half-samples")}, "eval")
                            pos = {int(u): k for k, u in enumerate(used)}
                            halves = np.array([np.mean([a[pos[j]] for j in h if j in pos]) if any(j in pos for j in h) else np.nan
                                               for h in eval_halves])
                elif get_estimator(p).zoo_relative:
                    cell = by_kind.get(("e4.zoo", f"{p} -> {target_name}"))
                    if cell is not None and cell.key in done:
                        value = ctx.results(cell.key).get(f"{p}_{cell.spec['extracts'][i]}")
                        halves = ctx.array(cell.key, "halves")[:, i]
                        if i == 0:
                            seconds_per[p] += float(ctx.payload(cell.key).get("seconds", 0.0))
                else:
                    cell = by_kind.get(("e4.score", f"{p} {cand.name} -> {target_name}"))
                    if cell is not None and cell.key in done:
                        value = ctx.results(cell.key).get(p)
                        halves = ctx.array(cell.key, "halves")
                        seconds_per[p] += float(ctx.payload(cell.key).get("seconds", 0.0))
                sign = 1.0 if (p in ALPHA_METRICS or get_estimator(p).greater_is_better) else -1.0
                preds[p].append(None if value is None else sign * value)
                pred_halves[p].append(None if halves is None else sign * np.asarray(halves, dtype=np.float64))
                row[p] = value
            for g in config.ground_truths:
                cell = by_kind.get(("e4.truth", f"{g} {cand.name} -> {target_name}"))
                acc, halves = None, None
                if cell is not None and cell.key in done:
                    acc = ctx.results(cell.key).get("accuracy")
                    correct = ctx.array(cell.key, "test_correct")
                    halves = correct[test_halves].mean(axis=1)
                truths[g].append(acc)
                truth_halves[g].append(halves)
                row[f"{g}_accuracy"] = acc
            rows.append(row)
        candidates_out[target_name] = rows
        for g in config.ground_truths:
            ok_truth = [k for k, v in enumerate(truths[g]) if v is not None]
            for p in predictors:
                ok = [k for k in ok_truth if preds[p][k] is not None and math.isfinite(preds[p][k])]
                entry: dict[str, Any] = {"target": target_name, "ground_truth": g, "predictor": p, "n": len(ok)}
                if len(ok) < 3:
                    entry.update({s: None for s in STATISTICS})
                    judged.append(entry)
                    continue
                entry.update(_stats([preds[p][k] for k in ok], [truths[g][k] for k in ok]))
                if all(pred_halves[p][k] is not None for k in ok) and not p.startswith(("alpha2", "combined")):
                    reps = [
                        _stats([float(pred_halves[p][k][b]) for k in ok], [float(truth_halves[g][k][b]) for k in ok])
                        for b in range(config.half_samples)
                        if all(math.isfinite(pred_halves[p][k][b]) for k in ok)
                    ]
                    for s in STATISTICS:
                        vals = [r[s] for r in reps if r[s] is not None]
                        entry[f"{s}_ci"] = (_recentred(entry[s], vals, s)
                                            if entry[s] is not None and len(vals) * 2 >= config.half_samples else None)
                judged.append(entry)
    return SelectionResult(config, targets_out, candidates_out, judged, seconds_per, seconds, environment(), failed)


def write_selection(result: SelectionResult, out_dir: str | Path) -> dict[str, Path]:
    """``results.csv`` (one row per target x ground truth x predictor), ``summary.json``, ``report.html``."""
    from ..report import Finding, HeatMap, Section, Table, write_report

    out = Path(out_dir)
    rows = []
    for j in result.judged:
        row = {k: j[k] for k in ("target", "ground_truth", "predictor", "n")}
        for s in STATISTICS:
            row[s] = j.get(s)
            ci = j.get(f"{s}_ci")
            row[f"{s}_lo"], row[f"{s}_hi"] = (ci[0], ci[1]) if ci else (None, None)
        rows.append(row)
    csv_path, json_path = write_tables(rows, result.summary(), out)
    cfg = result.config
    targets = [t["name"] for t in result.targets]
    predictors = cfg.predictors()
    findings, sections = [], []
    for g in cfg.ground_truths:
        wt = {(j["target"], j["predictor"]): j["weighted_tau"] for j in result.judged if j["ground_truth"] == g}
        means = {p: [wt.get((t, p)) for t in targets] for p in predictors}
        mean_wt = {p: float(np.mean(v)) for p, v in means.items() if v and all(x is not None for x in v)}
        if mean_wt:
            best = max(mean_wt, key=mean_wt.get)
            findings.append(Finding(f"Best mean weighted tau, {g.replace('_', ' ')}", best,
                                    f"{mean_wt[best]:.3f} averaged over {len(targets)} targets."))
        grid_values = [[wt.get((t, p)) for t in targets] for p in predictors]
        sections.append(Section(f"Ground truth: {g.replace('_', ' ')} accuracy", [
            HeatMap(values=grid_values, rows=predictors, columns=targets, title=f"weighted tau ({g})", vmin=-1.0, vmax=1.0),
            Table(columns=["predictor", *targets], rows=[{"predictor": p, **{t: wt.get((t, p)) for t in targets}} for p in predictors],
                  title=f"Weighted tau per target ({g})", caption="Signed so that higher is better agreement for every predictor."),
        ]))
    sections.append(Section("Cost", [Table(columns=["predictor", "seconds"], title="Time per predictor (all targets)",
                                           rows=[{"predictor": p, "seconds": s} for p, s in result.seconds_per_predictor.items()],
                                           sort_by="seconds")]))
    html = write_report(out / "report.html", title="Model-selection benchmark (E4)", findings=findings, sections=sections,
                        summary={"targets": ", ".join(targets), "candidates": sum(len(c) for c in result.candidates.values())},
                        config=result.summary()["config"], run_seconds=result.seconds)
    return {"results": csv_path, "summary": json_path, "report": html}


EXPERIMENT = register(Selection())
