"""E3: knowledge transferability indicates adversarial transferability, as the class overlap grows.

The target task is MNIST-1D restricted to a fixed set ``T`` of ``k`` classes (``target_classes``, or drawn
from ``seed``); a reference model is trained on it. Each source model is trained on another draw of the same
domain restricted to a class set ``S`` with ``|S| = k`` and

    overlap = |S ∩ T| / |T|    (the share of the target's classes the source has seen)

for every level of ``overlaps`` (default 0, 0.25, 0.5, 0.75, 1), ``seeds`` sources per level. Which classes fill
``S`` is drawn for each (level, replicate) by ``numpy.random.default_rng`` seeded from ``seed``, the target
classes, the level and the replicate: ``round(overlap * k)`` classes from ``T`` and the rest from the other
classes. Labels keep their MNIST-1D ids and every model has a 10-way head (a task spec's ``"classes"`` key,
see :mod:`transferlens.experiments._zoo`), so source and reference outputs share one label space.

Per source: knowledge transfer to the target (linear-probe and last-layer-retraining accuracy on the target's
test split), the alpha metrics against the reference (both directions, ``preset``, on the first ``n_eval``
target test samples) and the source's own test accuracy (on its own classes ``S``).

The analysis, from the cells' recorded results only: per level, the mean over the seeds of every metric with a
95% percentile-bootstrap interval over the seeds (``numpy.random.default_rng(seed)``, ``n_boot`` resamples; none
with a single seed); across all sources, the Spearman correlation of each metric with the overlap, and of each
alpha metric with linear-probe accuracy (:func:`transferlens.evaluation.correlate`, percentile-bootstrap
intervals over sources). A metric *rises* with overlap when its Spearman interval lies above 0, *falls* when it
lies below, and is *inconclusive* otherwise (always with fewer than 5 sources). The published claim (Liang et al. 2021) is that both knowledge and
adversarial transferability increase with overlap; the verdict is read off the data per metric.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .._validate import check_int, check_positive, check_seed
from ..adversarial import PRESETS
from ..data.mnist1d import MNIST1D_DOMAINS
from ..evaluation import Correlation, correlate
from ..runs.context import CellOutput, Context
from ..runs.spec import Cell, derive_seed
from ..training import TrainConfig
from . import _zoo
from ._output import compact, environment, write_tables
from .base import Experiment, register

__all__ = ["OverlapConfig", "OverlapResult", "OVERLAP_DEFINITION", "source_classes", "target_classes"]

NUM_CLASSES = 10  # MNIST-1D
OVERLAP_DEFINITION = ("overlap = |S ∩ T| / |T|: the share of the target's k classes T that the source's k training "
                      "classes S include (|S| = |T| = k; labels keep their MNIST-1D ids, 10-way heads)")
CI_METHOD = ("95% percentile bootstrap over the seeds of a level (numpy.random.default_rng(config.seed), n_boot "
             "resamples of the seeds with replacement, 2.5 and 97.5 percentiles of the resampled means); none "
             "with one seed")
ALPHA_METRICS = ("alpha1_s2t", "alpha1_t2s", "alpha2_s2t", "alpha2_t2s", "combined_s2t", "combined_t2s")
# the metrics reported per level and correlated with the overlap
METRICS = ("probe_accuracy", "last_layer_accuracy", *ALPHA_METRICS, "source_accuracy", "source_accuracy_on_target")
# the ones the findings, the plots and the console table lead with
HEADLINE = ("probe_accuracy", "last_layer_accuracy", "alpha1_s2t", "alpha1_t2s", "combined_s2t", "combined_t2s")

# fewer sources than this never give a "rises"/"falls" verdict (see _verdict)
MIN_VERDICT_N = 5

QUICK: dict[str, Any] = {
    "num_samples": 600, "overlaps": [0.0, 0.5, 1.0], "seeds": 1, "n_eval": 50, "n_boot": 200,
    "train": {"epochs": 3},
}


@dataclass(frozen=True)
class OverlapConfig:
    """The study: ``k`` target classes, the overlap levels, ``seeds`` sources per level.

    ``target_classes`` empty means drawn from ``seed`` (``k`` distinct classes). ``num_samples`` is the size of
    each generated 10-class MNIST-1D draw before it is restricted to a task's ``k`` classes (so a task keeps
    about ``k / 10`` of it, 80% train and 20% test).
    """

    seed: int = 0
    k: int = 4
    target_classes: tuple[int, ...] = ()
    overlaps: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 1.0)
    seeds: int = 5
    domain: str = "reference"
    arch: str = "cnn1d"
    num_samples: int = 5000
    train: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=30))
    probe_C: float = 1.0
    n_eval: int = 300
    preset: str = "theory"
    n_boot: int = 1000
    device: str = "auto"

    def __post_init__(self) -> None:
        object.__setattr__(self, "seed", check_seed(self.seed))
        k = check_int(self.k, "k", 2)
        if k > NUM_CLASSES:
            raise ValueError(f"k = {k} target classes, but MNIST-1D has only {NUM_CLASSES}; choose k between 2 and {NUM_CLASSES}")
        object.__setattr__(self, "k", k)
        classes = []
        for c in self.target_classes:
            if isinstance(c, bool) or not isinstance(c, (int, np.integer)):
                raise ValueError(f"target_classes must hold integer class ids, got {c!r}")
            if not 0 <= int(c) < NUM_CLASSES:
                raise ValueError(f"target_classes: class {c} does not exist; MNIST-1D has classes 0..{NUM_CLASSES - 1}")
            classes.append(int(c))
        if len(set(classes)) != len(classes):
            raise ValueError(f"target_classes lists a class twice: {classes}")
        if classes and len(classes) != k:
            raise ValueError(f"target_classes has {len(classes)} classes but k = {k}; give k classes, or none to draw them")
        object.__setattr__(self, "target_classes", tuple(sorted(classes)))
        levels = []
        for o in self.overlaps:
            if isinstance(o, bool) or not isinstance(o, (int, float, np.integer, np.floating)) or not math.isfinite(o):
                raise ValueError(f"overlaps must hold numbers in [0, 1], got {o!r}")
            o = float(o)
            if not 0.0 <= o <= 1.0:
                raise ValueError(f"overlaps: {o:g} is outside [0, 1] (overlap = |S ∩ T| / |T|)")
            m = o * k
            if abs(m - round(m)) > 1e-9:
                ok = ", ".join(f"{j / k:g}" for j in range(k + 1))
                raise ValueError(f"overlaps: {o:g} is not achievable with k = {k}: k * overlap = {m:g} shared classes is "
                                 f"not a whole number; achievable levels: {ok}")
            outside = k - int(round(m))
            if outside > NUM_CLASSES - k:
                raise ValueError(f"overlaps: {o:g} needs {outside} source classes outside the {k} target classes, but "
                                 f"MNIST-1D has only {NUM_CLASSES - k} others; lower k (at most {NUM_CLASSES // 2} for "
                                 "overlap 0) or drop the level")
            levels.append(round(m) / k)
        if len(levels) < 2:
            raise ValueError(f"overlaps needs at least 2 levels to relate anything to the overlap, got {list(self.overlaps)}")
        if len(set(levels)) != len(levels):
            raise ValueError(f"overlaps lists a level twice: {list(self.overlaps)}")
        object.__setattr__(self, "overlaps", tuple(sorted(levels)))
        object.__setattr__(self, "seeds", check_int(self.seeds, "seeds", 1))
        if len(levels) * self.seeds < 3:
            raise ValueError("overlaps x seeds gives fewer than 3 sources; the correlations need at least 3")
        if self.domain not in MNIST1D_DOMAINS:
            raise ValueError(f"domain: unknown MNIST-1D domain {self.domain!r}; choose from {sorted(MNIST1D_DOMAINS)}")
        if self.arch not in ("mlp", "cnn1d"):
            raise ValueError(f"arch {self.arch!r} does not fit MNIST-1D; choose from ['cnn1d', 'mlp']")
        if self.preset not in PRESETS:
            raise ValueError(f"preset: unknown preset {self.preset!r}; choose one of {sorted(PRESETS)}")
        object.__setattr__(self, "num_samples", check_int(self.num_samples, "num_samples", 200))
        object.__setattr__(self, "n_eval", check_int(self.n_eval, "n_eval", 10))
        object.__setattr__(self, "n_boot", check_int(self.n_boot, "n_boot", 10))
        object.__setattr__(self, "probe_C", check_positive(self.probe_C, "probe_C"))
        if not isinstance(self.train, TrainConfig):
            raise TypeError(f"train must be a TrainConfig, got {type(self.train).__name__}")


# ----------------------------------------------------------------------------------------------- classes


def target_classes(cfg: OverlapConfig) -> list[int]:
    """``T``: ``cfg.target_classes``, or ``k`` classes drawn from ``cfg.seed`` (sorted)."""
    if cfg.target_classes:
        return list(cfg.target_classes)
    rng = np.random.default_rng(derive_seed(cfg.seed, "overlap", "target-classes", cfg.k))
    return sorted(int(c) for c in rng.choice(NUM_CLASSES, size=cfg.k, replace=False))


def source_classes(cfg: OverlapConfig, overlap: float, replicate: int) -> list[int]:
    """``S`` of one source: ``round(overlap * k)`` classes of ``T`` and the rest from the other classes, drawn by
    ``numpy.random.default_rng`` seeded from ``cfg.seed``, ``T``, the number of shared classes and ``replicate``."""
    t = target_classes(cfg)
    shared = int(round(overlap * cfg.k))
    others = [c for c in range(NUM_CLASSES) if c not in t]
    rng = np.random.default_rng(derive_seed(cfg.seed, "overlap", "source-classes", t, shared, replicate))
    s = list(rng.choice(t, size=shared, replace=False)) + list(rng.choice(others, size=cfg.k - shared, replace=False))
    return sorted(int(c) for c in s)


def overlap_of(source: list[int], target: list[int]) -> float:
    """``|S ∩ T| / |T|``."""
    return len(set(source) & set(target)) / len(target)


# ----------------------------------------------------------------------------------------------- grid


def _task_spec(cfg: OverlapConfig, draw: str, classes: list[int], replicate: int | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"generator": "mnist1d", "domain": cfg.domain, "num_samples": cfg.num_samples, "draw": draw,
                            "seed": cfg.seed, "study": "overlap", "classes": list(classes)}
    if replicate is not None:
        spec["replicate"] = replicate
    return spec


def _train_spec(cfg: OverlapConfig, task: dict[str, Any]) -> dict[str, Any]:
    return {"task": task, "arch": cfg.arch, "regime": {"name": "standard", **cfg.train.spec()}}


def _name(overlap: float, replicate: int) -> str:
    return f"overlap {overlap:g} #{replicate}"


def _grid(cfg: OverlapConfig) -> list[Cell]:
    t = target_classes(cfg)
    target = _task_spec(cfg, "target", t)
    ref = Cell.make("train", _train_spec(cfg, target), label=f"reference on classes {t}")
    cells = [ref]
    for o in cfg.overlaps:
        for r in range(cfg.seeds):
            s = source_classes(cfg, o, r)
            src = Cell.make("train", _train_spec(cfg, _task_spec(cfg, "source", s, r)), label=f"train {_name(o, r)} {s}")
            spec = {"source": src.spec, "reference": ref.spec, "target": target, "probe_C": cfg.probe_C,
                    "n_eval": cfg.n_eval, "preset": cfg.preset}
            cells += [src, Cell.make("e3.measure", spec, deps=(src.key, ref.key), label=f"measure {_name(o, r)}")]
    return cells


# ----------------------------------------------------------------------------------------------- cells


def _measure(cell: Cell, ctx: Context) -> CellOutput:
    from ..adversarial import transferability
    from ..knowledge import linear_probe, retrain_last_layer

    spec = cell.spec
    source = _zoo.load_model(ctx, cell.deps[0], spec["source"])
    reference = _zoo.load_model(ctx, cell.deps[1], spec["reference"])
    t = _zoo.task(ctx, spec["target"])
    t0 = time.perf_counter()
    probe = linear_probe(source, t, C=spec["probe_C"])
    last = retrain_last_layer(source, t, seed=cell.seed("last_layer"))
    n = spec["n_eval"]
    tf = transferability(source, reference, t.x_test[:n], t.y_test[:n], preset=spec["preset"], seed=cell.seed("attack"),
                         bounds=t.bounds)
    results: list[tuple[str, str, float | None]] = [
        ("probe_accuracy", "", probe.accuracy), ("probe_loss", "", probe.loss),
        ("last_layer_accuracy", "", last.accuracy), ("last_layer_loss", "", last.loss),
        ("source_accuracy_on_target", "", tf.source_accuracy), ("target_accuracy", "", tf.target_accuracy),
    ]
    results += [(m, "", float(v)) for m, v in tf.metrics().items()]
    for d in ("s2t", "t2s"):
        results.append(("n_used", d, float(getattr(tf, d).n_used)))
    return CellOutput(results=results, payload={"seconds": time.perf_counter() - t0, "n_eval": tf.n})


# ----------------------------------------------------------------------------------------------- analysis


def mean_ci(values: list[float], n_boot: int, seed: int) -> tuple[float, list[float] | None]:
    """The mean and its 95% percentile-bootstrap interval over ``values`` (``default_rng(seed)``); no interval
    for fewer than 2 values."""
    v = np.asarray(values, dtype=np.float64)
    if len(v) < 2:
        return float(v.mean()), None
    boots = v[np.random.default_rng(seed).integers(0, len(v), size=(n_boot, len(v)))].mean(axis=1)
    return float(v.mean()), [float(np.percentile(boots, 2.5)), float(np.percentile(boots, 97.5))]


def _verdict(c: Correlation | None) -> str:
    """``rises`` / ``falls`` when the Spearman interval excludes 0, else ``inconclusive`` (``undefined`` when
    the correlation is). Fewer than :data:`MIN_VERDICT_N` sources are always ``inconclusive``: a bootstrap over
    3 or 4 points mostly redraws the same order and gives intervals such as [1, 1]."""
    if c is None or c.spearman is None:
        return "undefined"
    if c.spearman_ci is None or c.n < MIN_VERDICT_N:
        return "inconclusive"
    return "rises" if c.spearman_ci[0] > 0 else "falls" if c.spearman_ci[1] < 0 else "inconclusive"


def claim(verdicts: dict[str, str]) -> dict[str, Any]:
    """The published claim, read off the verdicts: knowledge transfer (linear-probe accuracy) *and* adversarial
    transferability (each alpha1 / combined direction) rise with overlap. ``holds`` when probe accuracy and every
    one of them rise, ``partly`` when probe accuracy and some rise, ``not shown`` otherwise."""
    adversarial = [m for m in ALPHA_METRICS if not m.startswith("alpha2")]
    rising = [m for m in adversarial if verdicts.get(m) == "rises"]
    knowledge = verdicts.get("probe_accuracy") == "rises"
    verdict = ("holds" if knowledge and len(rising) == len(adversarial) else
               "partly" if knowledge and rising else "not shown")
    return {"verdict": verdict, "probe_accuracy": verdicts.get("probe_accuracy"), "alpha_metrics_rising": rising,
            "alpha_metrics_judged": adversarial}


def _correlate(x: list[Any], y: list[Any], cfg: OverlapConfig) -> Correlation | None:
    ok = [i for i in range(len(x)) if x[i] is not None and y[i] is not None and math.isfinite(x[i]) and math.isfinite(y[i])]
    if len(ok) < 3:
        return None
    return correlate([x[i] for i in ok], [y[i] for i in ok], n_boot=cfg.n_boot, seed=cfg.seed)


@dataclass(frozen=True)
class OverlapResult:
    """Per source: its classes, overlap and metrics; per level: means with intervals; across sources: each
    metric's correlation with the overlap (``correlations``) and each alpha metric's with probe accuracy."""

    config: OverlapConfig
    target: dict[str, Any]
    sources: list[dict[str, Any]]
    levels: list[dict[str, Any]]
    correlations: dict[str, Correlation]
    correlations_probe: dict[str, Correlation]
    verdicts: dict[str, str]
    seconds: float
    environment: dict[str, Any]
    failed_cells: list[tuple[str, str]] = field(default_factory=list)

    def rows(self) -> list[dict[str, Any]]:
        return [{**r, "source_classes": " ".join(map(str, r["source_classes"])),
                 "target_classes": " ".join(map(str, r["target_classes"]))} for r in self.sources]

    def summary(self) -> dict[str, Any]:
        from ..runs.config import config_to_dict

        return {
            "experiment": "overlap",
            "title": "knowledge and adversarial transferability against class overlap (MNIST-1D)",
            "overlap_definition": OVERLAP_DEFINITION,
            "ci_method": CI_METHOD,
            "correlation_method": "Spearman over all sources, percentile-bootstrap interval over sources "
                                  "(transferlens.evaluation.correlate, seed = config.seed)",
            "config": config_to_dict(self.config),
            "target": self.target,
            "n_sources": len(self.sources),
            "levels": self.levels,
            "correlations_with_overlap": {m: compact(c) for m, c in self.correlations.items()},
            "verdicts": self.verdicts,
            "claim": claim(self.verdicts),
            "correlations_with_probe_accuracy": {m: compact(c) for m, c in self.correlations_probe.items()},
            "sources": self.sources,
            "failed_cells": [list(f) for f in self.failed_cells],
            "environment": self.environment,
        }


def _analyse(cfg: OverlapConfig, cells: list[Cell], ctx: Context, seconds: float) -> OverlapResult:
    done = {c.key for c in cells}
    grid = _grid(cfg)
    failed = [(c.label, "not computed") for c in grid if c.key not in done]
    ref = grid[0]
    t = target_classes(cfg)
    target: dict[str, Any] = {"classes": t, "k": cfg.k, "architecture": cfg.arch}
    if ref.key in done:
        target["test_accuracy"] = ctx.results(ref.key).get("test_accuracy")
        target["task"] = ctx.payload(ref.key).get("task")
    by_label = {c.label: c for c in grid}
    sources = []
    for o in cfg.overlaps:
        for r in range(cfg.seeds):
            m = by_label[f"measure {_name(o, r)}"]
            if not {m.key, m.deps[0]} <= done:
                continue
            s = m.spec["source"]["task"]["classes"]
            res = ctx.results(m.key)
            row: dict[str, Any] = {
                "overlap": overlap_of(s, t), "n_shared": len(set(s) & set(t)), "replicate": r,
                "source_classes": list(s), "target_classes": list(t),
                "source_accuracy": ctx.results(m.deps[0]).get("test_accuracy"),
            }
            row.update({k: res.get(k) for k in METRICS if k != "source_accuracy"})
            sources.append(row)
    levels = []
    for o in cfg.overlaps:
        group = [r for r in sources if r["overlap"] == o]
        if not group:
            continue
        entry: dict[str, Any] = {"overlap": o, "n_shared": int(round(o * cfg.k)), "n": len(group)}
        for k in METRICS:
            vals = [r[k] for r in group if r[k] is not None and math.isfinite(r[k])]
            entry[k], entry[f"{k}_ci"] = mean_ci(vals, cfg.n_boot, cfg.seed) if vals else (None, None)
        levels.append(entry)
    overlaps = [r["overlap"] for r in sources]
    corr = {k: c for k in METRICS if (c := _correlate([r[k] for r in sources], overlaps, cfg)) is not None}
    probe = [r["probe_accuracy"] for r in sources]
    corr_probe = {k: c for k in ALPHA_METRICS if (c := _correlate([r[k] for r in sources], probe, cfg)) is not None}
    verdicts = {k: _verdict(corr.get(k)) for k in METRICS}
    return OverlapResult(cfg, target, sources, levels, corr, corr_probe, verdicts, seconds, environment(), failed)


# ----------------------------------------------------------------------------------------------- experiment


def _ci(ci: list[float] | None) -> str:
    return "-" if not ci else f"{ci[0]:.2f}, {ci[1]:.2f}"


class OverlapStudy(Experiment):
    name = "overlap"
    aliases = ("e3",)
    title = "class overlap (E3): knowledge and adversarial transferability as source and target share classes"
    config_cls = OverlapConfig
    variants = {"quick": QUICK}
    ground_truth = "class overlap |S ∩ T| / |T|"

    def grid(self, config: OverlapConfig) -> list[Cell]:
        return _grid(config)

    cell_kinds = {"train": _zoo.train_cell, "e3.measure": _measure}

    def describe(self, config: OverlapConfig) -> str:
        return (f"E3 overlap: target classes {target_classes(config)} (k = {config.k}); overlaps "
                f"{', '.join(f'{o:g}' for o in config.overlaps)} x {config.seeds} seed(s) of {config.arch} sources")

    def analyse(self, config: OverlapConfig, cells: list[Cell], ctx: Context, seconds: float = 0.0) -> OverlapResult:
        return _analyse(config, cells, ctx, seconds)

    def write(self, result: OverlapResult, out_dir: str | Path) -> dict[str, Path]:
        return write_overlap(result, out_dir)

    def summary_table(self, result: OverlapResult) -> tuple[str, list[str], list[list[str]]]:
        keys = ("source_accuracy", *HEADLINE)
        cols = ["overlap", "n", "source acc.", "probe acc.", "last-layer acc.", "alpha1_s2t", "alpha1_t2s",
                "combined_s2t", "combined_t2s"]
        body = []
        for lv in result.levels:
            body.append([f"{lv['overlap']:g}", str(lv["n"]),
                         *["-" if lv[k] is None else f"{lv[k]:.3f}" + (f" [{_ci(lv[k + '_ci'])}]" if lv[k + "_ci"] else "")
                           for k in keys]])
        return (f"Means over seeds [95% bootstrap interval] per overlap level; target classes {result.target['classes']}",
                cols, body)


def _spearman_text(c: Correlation | None) -> str:
    if c is None or c.spearman is None:
        return "Spearman undefined"
    ci = f"[{c.spearman_ci[0]:.2f}, {c.spearman_ci[1]:.2f}]" if c.spearman_ci else "none"
    return f"Spearman {c.spearman:.2f} (95% CI {ci}) over {c.n} sources"


def write_overlap(result: OverlapResult, out_dir: str | Path) -> dict[str, Path]:
    """``results.csv`` (one row per source), ``summary.json`` and ``report.html`` (findings first)."""
    from ..report import CorrelationTable, Finding, LinePlot, Scatter, Section, Table, label, write_report

    out = Path(out_dir)
    rows = result.rows()
    csv_path, json_path = write_tables(rows or [{"overlap": None}], result.summary(), out)
    cfg = result.config
    levels = result.levels
    answer = {"rises": "yes", "falls": "no: it falls", "inconclusive": "inconclusive", "undefined": "undefined"}
    c = claim(result.verdicts)
    findings = [Finding(
        "Claim: knowledge and adversarial transfer both rise with overlap", c["verdict"],
        f"Linear-probe accuracy {result.verdicts.get('probe_accuracy')} with overlap; alpha metrics that rise: "
        f"{', '.join(c['alpha_metrics_rising']) or 'none'} (of {', '.join(c['alpha_metrics_judged'])}). A metric rises "
        "when its Spearman interval with the overlap lies above 0.")]
    for k in HEADLINE:
        lv = [x for x in levels if x[k] is not None]
        trend = (f"; mean {lv[0][k]:.3f} at overlap {lv[0]['overlap']:g}, {lv[-1][k]:.3f} at {lv[-1]['overlap']:g}"
                 if len(lv) >= 2 else "")
        findings.append(Finding(f"Does {k} rise with overlap?", answer[result.verdicts.get(k, "undefined")],
                                f"{_spearman_text(result.correlations.get(k))}{trend}."))
    ranked = sorted(((c.spearman, m) for m, c in result.correlations_probe.items() if c.spearman is not None), reverse=True)
    if ranked:
        best = ranked[0][1]
        findings.append(Finding("Alpha metric closest to probe accuracy", best,
                                f"{_spearman_text(result.correlations_probe[best])}, ranked by Spearman with "
                                "linear-probe accuracy (knowledge transferability indicating adversarial)."))
    x = [lv["overlap"] for lv in levels]
    figures: list[Any] = []
    acc_keys = ("probe_accuracy", "last_layer_accuracy", "source_accuracy")
    if len(x) >= 1 and all(lv[k] is not None for lv in levels for k in acc_keys):
        figures.append(LinePlot(x=x, series={label(k): [lv[k] for lv in levels] for k in acc_keys}, xlabel="overlap |S ∩ T| / |T|",
                                ylabel="accuracy (mean over seeds)", title="Knowledge transfer against overlap"))
    alpha_keys = ("alpha1_s2t", "alpha1_t2s", "combined_s2t", "combined_t2s")
    if len(x) >= 1 and all(lv[k] is not None for lv in levels for k in alpha_keys):
        figures.append(LinePlot(x=x, series={k: [lv[k] for lv in levels] for k in alpha_keys}, xlabel="overlap |S ∩ T| / |T|",
                                ylabel="alpha (mean over seeds)", title="Alpha metrics against overlap"))
    level_rows = [{"overlap": lv["overlap"], "n_shared": lv["n_shared"], "n": lv["n"],
                   **{k: lv[k] for k in METRICS}, **{f"{k}_interval": _ci(lv[f"{k}_ci"]) for k in METRICS}}
                  for lv in levels]
    shown = ["overlap", "n", *[c for k in HEADLINE for c in (k, f"{k}_interval")]]
    names = {f"{k}_interval": "95% CI" for k in METRICS}
    names.update({k: k for k in HEADLINE})
    sections = [
        Section("Metrics against overlap", [*figures, Table(
            columns=shown, rows=level_rows, title="Per overlap level: mean over seeds and 95% interval",
            caption=CI_METHOD + ".", all_columns=list(level_rows[0]) if level_rows else None, names=names)],
            intro=OVERLAP_DEFINITION + f". Target classes T = {result.target['classes']}."),
        Section("Correlations", [
            CorrelationTable(result.correlations, truth="overlap", title="Spearman of each metric with the overlap",
                             caption="Across all sources; percentile-bootstrap intervals over sources."),
            CorrelationTable(result.correlations_probe, truth="probe_accuracy",
                             title="Spearman of each alpha metric with linear-probe accuracy",
                             caption="Does knowledge transferability go with adversarial transferability, source by source?"),
        ]),
    ]
    if rows:
        sections.append(Section("Sources", [
            Scatter(x=[r["probe_accuracy"] for r in result.sources], y=[r["alpha1_s2t"] for r in result.sources],
                    xlabel=label("probe_accuracy"), ylabel="alpha1_s2t", title="alpha1_s2t against probe accuracy",
                    groups=[f"overlap {r['overlap']:g}" for r in result.sources], fit_line=True),
            Table(columns=["overlap", "replicate", "source_classes", "source_accuracy", *HEADLINE], rows=rows,
                  title="Every source", all_columns=list(rows[0]), names={k: k for k in HEADLINE}),
        ]))
    intro = (f"Sources trained on k = {cfg.k} MNIST-1D classes S, transferred to a target on the classes T = "
             f"{result.target['classes']}. {OVERLAP_DEFINITION}.")
    html = write_report(out / "report.html", title="Class overlap and transferability (E3)", intro=intro,
                        findings=findings, sections=sections,
                        summary={"target classes": " ".join(map(str, result.target["classes"])),
                                 "sources": len(result.sources), "levels": ", ".join(f"{o:g}" for o in cfg.overlaps)},
                        config=result.summary()["config"], run_seconds=result.seconds)
    return {"results": csv_path, "summary": json_path, "report": html}


EXPERIMENT = register(OverlapStudy())
