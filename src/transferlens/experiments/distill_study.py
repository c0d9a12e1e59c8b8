"""E6, distillation as knowledge transfer: forward vs reverse KL, over temperatures, against hard labels.

A teacher (``teacher_arch``, trained on an MNIST-1D task by a ``"train"`` cell) is distilled into fresh
students (``student_arch``) by minimising the forward ``KL(teacher || student)`` or the reverse
``KL(student || teacher)`` at each temperature, ``seeds`` students per setting (each cell draws its own
initialisation, validation split and batch order from its key). A baseline student per seed is trained on
the hard labels alone (``distill(..., alpha=1)``: the teacher's outputs never enter its loss), so the report
shows what the teacher's soft targets add. For each student the cell records its test accuracy, its
agreement with the teacher (fraction of test samples with the same predicted class), the trained
divergence on the test split (``kl_test``, at the setting's temperature, no ``T**2``; the baseline's is the
forward KL at ``T = 1``) and the six alpha metrics between the two models.

**Direction convention for the alpha metrics**: ``transferability(source=student, target=teacher)``, so
``s2t`` is the *student's* attack evaluated on the *teacher* and ``t2s`` the *teacher's* attack evaluated
on the *student*.

Statistics (all computed from the recorded cell results only):

* per setting (divergence, temperature) and for the baseline: the mean over seeds of every metric with a
  95% **Student-t interval** ``mean +- t_{0.975, n-1} * sd / sqrt(n)`` (``sd`` with ``ddof=1``; none when
  ``n < 2``). With a handful of seeds a percentile bootstrap of the mean has very few distinct resample
  means (10 for 3 seeds) and its 95% interval is much too narrow; the t-interval is the honest one here
  (it assumes roughly normal per-seed values).
* forward vs reverse at each temperature, and each setting vs the hard-label baseline: the difference of
  the means with a 95% **Welch t-interval** (unequal variances, Welch-Satterthwaite degrees of freedom);
  the students of different cells are independent draws, so the comparison is unpaired.
* across all students (distilled and baseline): Spearman (and Pearson, Kendall) correlation of each alpha
  metric with agreement and with accuracy, with 95% percentile bootstrap intervals over students
  (:func:`transferlens.evaluation.correlate`, ``n_boot`` resamples, seeded from ``seed``).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .._validate import check_choice, check_int, check_positive, check_real, check_seed
from ..data.mnist1d import MNIST1D_DOMAINS
from ..distill import DIVERGENCES
from ..runs.context import CellOutput, Context
from ..runs.spec import Cell, derive_seed
from ..training import TrainConfig
from . import _zoo
from ._output import compact, environment, write_tables
from .base import Experiment, register

__all__ = ["ALPHA_METRICS", "DistillConfig", "DistillStudyResult", "DistillStudy", "EXPERIMENT", "QUICK", "write_distill"]

ALPHA_METRICS = ("alpha1_s2t", "alpha1_t2s", "alpha2_s2t", "alpha2_t2s", "combined_s2t", "combined_t2s")
METRICS = ("accuracy", "agreement", "kl_test", *ALPHA_METRICS)
COMPARED = ("accuracy", "agreement")
CORRELATION_TRUTHS = ("agreement", "accuracy")
BASELINE = "hard-labels"
ARCHS = ("mlp", "cnn1d")
PRESETS = ("theory", "paper")
CONFIDENCE = 0.95

# readable names (source = student, target = teacher)
NAMES = {
    "alpha1_s2t": "alpha1 (student's attack on the teacher)",
    "alpha1_t2s": "alpha1 (teacher's attack on the student)",
    "alpha2_s2t": "alpha2 (student's attack on the teacher)",
    "alpha2_t2s": "alpha2 (teacher's attack on the student)",
    "combined_s2t": "combined alpha (student's attack on the teacher)",
    "combined_t2s": "combined alpha (teacher's attack on the student)",
    "accuracy": "student accuracy",
    "agreement": "agreement with the teacher",
    "kl_test": "test KL (trained divergence, at T)",
    "teacher_accuracy": "teacher accuracy",
}

QUICK: dict[str, Any] = {
    "num_samples": 500, "temperatures": [1.0, 4.0], "seeds": 2, "epochs": 3, "n_eval": 50,
    "teacher_train": {"epochs": 3},
}


@dataclass(frozen=True)
class DistillConfig:
    """The study: the task, the teacher and its training, the student, the settings swept, the alpha metrics."""

    seed: int = 0
    domain: str = "reference"
    num_samples: int = 4000
    teacher_arch: str = "cnn1d"
    student_arch: str = "mlp"
    temperatures: tuple[float, ...] = (1.0, 2.0, 4.0, 8.0)
    divergences: tuple[str, ...] = ("forward", "reverse")
    seeds: int = 3
    alpha: float = 0.0
    epochs: int = 100
    lr: float = 1e-3
    teacher_train: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=100))
    n_eval: int = 300
    preset: str = "theory"
    n_boot: int = 1000
    device: str = "auto"

    def __post_init__(self) -> None:
        object.__setattr__(self, "seed", check_seed(self.seed))
        if self.domain not in MNIST1D_DOMAINS:
            raise ValueError(f"domain: unknown MNIST-1D domain {self.domain!r}; choose from {sorted(MNIST1D_DOMAINS)}")
        object.__setattr__(self, "num_samples", check_int(self.num_samples, "num_samples", 200))
        check_choice(self.teacher_arch, "teacher_arch", ARCHS)
        check_choice(self.student_arch, "student_arch", ARCHS)
        temps = tuple(check_positive(t, "temperatures") for t in self.temperatures)
        if not temps:
            raise ValueError("temperatures is empty: give at least one temperature > 0")
        if len(set(temps)) != len(temps):
            raise ValueError(f"temperatures: each temperature once, got {list(temps)}")
        object.__setattr__(self, "temperatures", temps)
        divs = tuple(check_choice(d, "divergences", DIVERGENCES) for d in self.divergences)
        if not divs:
            raise ValueError(f"divergences is empty: choose at least one of {list(DIVERGENCES)}")
        if len(set(divs)) != len(divs):
            raise ValueError(f"divergences: each divergence once, got {list(divs)}")
        object.__setattr__(self, "divergences", divs)
        object.__setattr__(self, "seeds", check_int(self.seeds, "seeds", 1))
        a = check_real(self.alpha, "alpha")
        if not 0.0 <= a < 1.0:
            raise ValueError(f"alpha must be in [0, 1) (the weight of the hard labels; alpha = 1 ignores the teacher, "
                             f"which the hard-label baseline already does), got {a!r}")
        object.__setattr__(self, "alpha", a)
        object.__setattr__(self, "epochs", check_int(self.epochs, "epochs", 1))
        object.__setattr__(self, "lr", check_positive(self.lr, "lr"))
        if not isinstance(self.teacher_train, TrainConfig):
            raise TypeError(f"teacher_train must be a TrainConfig, got {type(self.teacher_train).__name__}")
        object.__setattr__(self, "n_eval", check_int(self.n_eval, "n_eval", 10))
        check_choice(self.preset, "preset", PRESETS)
        object.__setattr__(self, "n_boot", check_int(self.n_boot, "n_boot", 100))
        if not isinstance(self.device, str) or not self.device:
            raise ValueError(f"device must be 'auto', 'cpu' or 'cuda', got {self.device!r}")


# ----------------------------------------------------------------------------------------------- grid


def _task_spec(cfg: DistillConfig) -> dict[str, Any]:
    return {"generator": "mnist1d", "domain": cfg.domain, "num_samples": cfg.num_samples, "draw": "target",
            "seed": cfg.seed, "study": "distill"}


def _teacher_cell(cfg: DistillConfig) -> Cell:
    spec = {"task": _task_spec(cfg), "arch": cfg.teacher_arch, "regime": {"name": "standard", **cfg.teacher_train.spec()}}
    return Cell.make("train", spec, label=f"train teacher {cfg.teacher_arch}@{cfg.domain}")


def _student_spec(cfg: DistillConfig, teacher: Cell, replicate: int, divergence: str, temperature: float,
                  alpha: float) -> dict[str, Any]:
    return {"teacher": teacher.spec, "task": _task_spec(cfg), "student_arch": cfg.student_arch,
            "divergence": divergence, "temperature": float(temperature), "alpha": float(alpha), "epochs": cfg.epochs,
            "lr": cfg.lr, "replicate": replicate, "n_eval": cfg.n_eval, "preset": cfg.preset}


def _setting_label(divergence: str, temperature: float | None) -> str:
    return "hard labels (baseline)" if divergence == BASELINE else f"{divergence} T={temperature:g}"


@dataclass(frozen=True)
class _Student:
    divergence: str  # "forward", "reverse" or BASELINE
    temperature: float | None  # None for the baseline
    replicate: int
    cell: Cell


def _students(cfg: DistillConfig, teacher: Cell) -> list[_Student]:
    out = []
    for r in range(cfg.seeds):
        for d in cfg.divergences:
            for t in cfg.temperatures:
                spec = _student_spec(cfg, teacher, r, d, t, cfg.alpha)
                out.append(_Student(d, t, r, Cell.make("e6.distill", spec, deps=(teacher.key,),
                                                       label=f"distill {d} T={t:g} #{r}")))
        # the baseline ignores the teacher in training (alpha = 1); divergence/temperature only set kl_test
        spec = _student_spec(cfg, teacher, r, "forward", 1.0, 1.0)
        out.append(_Student(BASELINE, None, r, Cell.make("e6.baseline", spec, deps=(teacher.key,),
                                                         label=f"hard-label student #{r}")))
    return out


def _grid(cfg: DistillConfig) -> list[Cell]:
    teacher = _teacher_cell(cfg)
    return [teacher, *(s.cell for s in _students(cfg, teacher))]


# ----------------------------------------------------------------------------------------------- cells


def _student_cell(cell: Cell, ctx: Context) -> CellOutput:
    """Distil (or, for the baseline, train on the hard labels) one student; measure it against the teacher."""
    from ..adversarial import transferability
    from ..distill import distill
    from ..models import build_model

    spec = cell.spec
    teacher = _zoo.load_model(ctx, cell.deps[0], spec["teacher"])
    t = _zoo.task(ctx, spec["task"])
    student = build_model(spec["student_arch"], t.input_shape, t.num_classes, seed=cell.seed("init"))
    t0 = time.perf_counter()
    r = distill(teacher, student, t, divergence=spec["divergence"], temperature=spec["temperature"], alpha=spec["alpha"],
                epochs=spec["epochs"], lr=spec["lr"], seed=cell.seed("distill"), device=ctx.device)
    t_distill = time.perf_counter() - t0
    n = spec["n_eval"]
    t1 = time.perf_counter()
    # source = student, target = teacher: s2t is the student's attack on the teacher
    tf = transferability(r.student, teacher, t.x_test[:n], t.y_test[:n], preset=spec["preset"],
                         seed=cell.seed("attack"), bounds=t.bounds)
    results: list[tuple[str, str, float | None]] = [
        ("accuracy", "", r.accuracy), ("teacher_accuracy", "", r.teacher_accuracy), ("agreement", "", r.agreement),
        ("kl_test", "", r.kl_test),
    ]
    arrays = {}
    for d in ("s2t", "t2s"):
        dr = getattr(tf, d)
        for m in ("alpha1", "alpha2", "combined"):
            results.append((m, d, float(getattr(dr, m))))
        arrays[f"alpha1_samples_{d}"] = np.asarray(dr.alpha1_samples, dtype=np.float64)
    payload = {"epochs_run": r.options["epochs_run"], "best_epoch": r.options["best_epoch"],
               "seconds_distill": t_distill, "seconds_alpha": time.perf_counter() - t1,
               "n_used": {d: int(getattr(tf, d).n_used) for d in ("s2t", "t2s")}}
    return CellOutput(results=results, payload=payload, arrays=arrays, value=r)


# ----------------------------------------------------------------------------------------------- statistics


def _t_interval(values: list[float]) -> list[float] | None:
    """95% Student-t interval of the mean (None for fewer than 2 values)."""
    from scipy import stats

    n = len(values)
    if n < 2:
        return None
    v = np.asarray(values, dtype=np.float64)
    mean, sd = float(v.mean()), float(v.std(ddof=1))
    half = float(stats.t.ppf(0.5 + CONFIDENCE / 2, n - 1)) * sd / math.sqrt(n)
    return [mean - half, mean + half]


def _welch(a: list[float], b: list[float]) -> tuple[float, list[float] | None]:
    """``mean(a) - mean(b)`` and its 95% Welch t-interval (None when either side has fewer than 2 values)."""
    from scipy import stats

    diff = float(np.mean(a) - np.mean(b))
    if len(a) < 2 or len(b) < 2:
        return diff, None
    va, vb = np.var(a, ddof=1) / len(a), np.var(b, ddof=1) / len(b)
    se = math.sqrt(va + vb)
    if se == 0.0:
        return diff, [diff, diff]
    dof = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    half = float(stats.t.ppf(0.5 + CONFIDENCE / 2, dof)) * se
    return diff, [diff - half, diff + half]


def _verdict(diff: float, ci: list[float] | None, higher: str, lower: str) -> str:
    if ci is None:
        return f"{higher} higher (no interval)" if diff > 0 else f"{lower} higher (no interval)" if diff < 0 else "equal"
    if ci[0] > 0:
        return f"{higher} higher"
    if ci[1] < 0:
        return f"{lower} higher"
    return "no clear difference"


# ----------------------------------------------------------------------------------------------- result


@dataclass(frozen=True)
class DistillStudyResult:
    """One record per student; per setting the means with t-intervals; the comparisons; the correlations."""

    config: DistillConfig
    task: dict[str, Any]
    teacher: dict[str, Any]
    students: list[dict[str, Any]]
    settings: list[dict[str, Any]]
    comparisons: list[dict[str, Any]]
    vs_baseline: list[dict[str, Any]]
    correlations: list[dict[str, Any]]
    seconds: float
    environment: dict[str, Any]
    failed_cells: list[tuple[str, str]] = field(default_factory=list)

    def rows(self) -> list[dict[str, Any]]:
        return [dict(s) for s in self.students]

    def setting(self, divergence: str, temperature: float | None = None) -> dict[str, Any] | None:
        return next((s for s in self.settings if s["divergence"] == divergence
                     and (divergence == BASELINE or s["temperature"] == temperature)), None)

    def summary(self) -> dict[str, Any]:
        from ..runs.config import config_to_dict

        return {
            "experiment": "distill",
            "title": "distillation as knowledge transfer: forward vs reverse KL over temperatures",
            "config": config_to_dict(self.config),
            "conventions": {
                "alpha_direction": "transferability(source=student, target=teacher): s2t = the student's attack "
                                   "evaluated on the teacher, t2s = the teacher's attack evaluated on the student",
                "mean_ci": "95% Student-t interval over seeds: mean +- t(0.975, n-1) * sd / sqrt(n)",
                "difference_ci": "95% Welch t-interval of the difference of means (unpaired)",
                "correlation_ci": "95% percentile bootstrap over students (n_boot resamples)",
                "baseline": "student trained on the hard labels only (distill alpha = 1); its kl_test is the "
                            "forward KL at T = 1",
            },
            "task": self.task,
            "teacher": self.teacher,
            "settings": self.settings,
            "comparisons": self.comparisons,
            "vs_baseline": self.vs_baseline,
            "correlations": self.correlations,
            "students": self.students,
            "failed_cells": [list(f) for f in self.failed_cells],
            "environment": self.environment,
        }


def _analyse(config: DistillConfig, cells: list[Cell], ctx: Context, seconds: float) -> DistillStudyResult:
    from ..evaluation import correlate

    done = {c.key for c in cells}
    teacher_cell = _teacher_cell(config)
    students = _students(config, teacher_cell)
    failed = [(c.label, "not computed") for c in _grid(config) if c.key not in done]
    t = _zoo.task(ctx, _task_spec(config))
    task_info = {**t.summary(), "task": t.name}
    teacher: dict[str, Any] = {"architecture": config.teacher_arch, "test_accuracy": None}
    if teacher_cell.key in done:
        res = ctx.results(teacher_cell.key)
        teacher.update({"test_accuracy": res.get("test_accuracy"), "epochs_run": res.get("epochs_run")})

    records = []
    for s in students:
        if s.cell.key not in done:
            continue
        res = ctx.results(s.cell.key)
        pay = ctx.payload(s.cell.key)
        row: dict[str, Any] = {"setting": _setting_label(s.divergence, s.temperature), "divergence": s.divergence,
                               "temperature": s.temperature, "seed": s.replicate}
        for m in ("accuracy", "agreement", "kl_test", "teacher_accuracy", *ALPHA_METRICS):
            row[m] = res.get(m)
        row["epochs_run"] = pay.get("epochs_run")
        records.append(row)

    def values(divergence: str, temperature: float | None, metric: str) -> list[float]:
        return [r[metric] for r in records if r["divergence"] == divergence and r["temperature"] == temperature
                and r[metric] is not None and math.isfinite(r[metric])]

    keys = [(d, t_) for d in config.divergences for t_ in sorted(config.temperatures)] + [(BASELINE, None)]
    settings = []
    for d, temp in keys:
        entry: dict[str, Any] = {"setting": _setting_label(d, temp), "divergence": d, "temperature": temp,
                                 "n": len([r for r in records if r["divergence"] == d and r["temperature"] == temp])}
        for m in METRICS:
            v = values(d, temp, m)
            entry[m] = float(np.mean(v)) if v else None
            entry[f"{m}_ci"] = _t_interval(v)
            entry[f"{m}_sd"] = float(np.std(v, ddof=1)) if len(v) >= 2 else None
        settings.append(entry)

    comparisons = []
    if "forward" in config.divergences and "reverse" in config.divergences:
        for temp in sorted(config.temperatures):
            for m in COMPARED:
                a, b = values("forward", temp, m), values("reverse", temp, m)
                if not a or not b:
                    continue
                diff, ci = _welch(a, b)
                comparisons.append({"temperature": temp, "metric": m, "forward": float(np.mean(a)),
                                    "reverse": float(np.mean(b)), "difference": diff, "difference_ci": ci,
                                    "verdict": _verdict(diff, ci, "forward", "reverse")})
    vs_baseline = []
    for d, temp in keys[:-1]:
        for m in COMPARED:
            a, b = values(d, temp, m), values(BASELINE, None, m)
            if not a or not b:
                continue
            diff, ci = _welch(a, b)
            vs_baseline.append({"setting": _setting_label(d, temp), "divergence": d, "temperature": temp, "metric": m,
                                "difference": diff, "difference_ci": ci,
                                "verdict": _verdict(diff, ci, "distilled", "hard labels")})

    correlations = []
    for m in ALPHA_METRICS:
        for truth in CORRELATION_TRUTHS:
            pairs = [(r[m], r[truth]) for r in records if r[m] is not None and r[truth] is not None
                     and math.isfinite(r[m]) and math.isfinite(r[truth])]
            entry = {"metric": m, "truth": truth}
            if len(pairs) >= 2:
                c = correlate([p[0] for p in pairs], [p[1] for p in pairs], n_boot=config.n_boot,
                              seed=derive_seed(config.seed, "e6-correlation", m, truth))
                entry.update(compact(c, ("spearman", "spearman_ci", "pearson", "pearson_ci", "kendall", "n")))
            else:
                entry.update({"spearman": None, "spearman_ci": None, "pearson": None, "pearson_ci": None,
                              "kendall": None, "n": len(pairs)})
            correlations.append(entry)

    return DistillStudyResult(config, task_info, teacher, records, settings, comparisons, vs_baseline, correlations,
                         seconds, environment(), failed)


# ----------------------------------------------------------------------------------------------- outputs


def _num(v: float | None) -> str:
    return "-" if v is None else f"{v:.3f}"


def _ci(ci: list[float] | None) -> str:
    return "-" if not ci else f"[{ci[0]:.3f}, {ci[1]:.3f}]"


def _findings(result: DistillStudyResult, Finding: Any) -> list[Any]:
    """The report's headlines (``Finding`` is the report's class, passed in by the writer)."""

    cfg = result.config
    findings = []
    for m in COMPARED:
        comps = [c for c in result.comparisons if c["metric"] == m]
        if not comps:
            continue
        verdicts = {c["verdict"] for c in comps}
        value = verdicts.pop() if len(verdicts) == 1 else "depends on T"
        detail = "; ".join(f"T={c['temperature']:g}: forward - reverse = {c['difference']:.3f} {_ci(c['difference_ci'])} "
                           f"({c['verdict']})" for c in comps)
        findings.append(Finding(f"Forward vs reverse KL: {NAMES[m]}", value,
                                f"{detail}. Welch 95% intervals over {cfg.seeds} students per setting."))
    distilled = [s for s in result.settings if s["divergence"] != BASELINE and s["accuracy"] is not None]
    base = result.setting(BASELINE)
    if distilled and base is not None and base["accuracy"] is not None:
        best = max(distilled, key=lambda s: s["accuracy"])
        gain = next((v for v in result.vs_baseline if v["setting"] == best["setting"] and v["metric"] == "accuracy"), None)
        detail = (f"{best['accuracy']:.3f} {_ci(best['accuracy_ci'])} vs {base['accuracy']:.3f} {_ci(base['accuracy_ci'])} "
                  f"for the student trained on the hard labels alone")
        if gain is not None:
            detail += f"; difference {gain['difference']:.3f} {_ci(gain['difference_ci'])} ({gain['verdict']})"
        teacher_acc = result.teacher.get("test_accuracy")
        if teacher_acc is not None:
            detail += f"; the teacher scores {teacher_acc:.3f}"
        findings.append(Finding("Best distilled student accuracy", best["setting"], detail + "."))
    for m in ("alpha1_s2t", "alpha1_t2s"):
        c = next((c for c in result.correlations if c["metric"] == m and c["truth"] == "agreement"), None)
        if c is None or c["spearman"] is None:
            continue
        ci = c["spearman_ci"]
        if not ci:
            tracks = "no interval"
        elif ci[0] > 0:
            tracks = "yes, more transferable attacks go with more agreement"
        elif ci[1] < 0:
            tracks = "yes, inversely"
        else:
            tracks = "not clearly (the interval includes 0)"
        findings.append(Finding(f"Does {NAMES[m]} track agreement?", f"rho = {c['spearman']:.3f}",
                                f"Spearman over {c['n']} students (every setting and the baseline, so it mixes "
                                f"differences between settings with seed-to-seed noise), 95% bootstrap interval "
                                f"{_ci(ci)}: {tracks}."))
    return findings


def write_distill(result: DistillStudyResult, out_dir: str | Path) -> dict[str, Path]:
    """``results.csv`` (one row per student), ``summary.json``, ``report.html``."""
    from ..report import Finding, LinePlot, Scatter, Section, Table, write_report

    out = Path(out_dir)
    rows = result.rows() or [{"setting": None}]
    csv_path, json_path = write_tables(rows, result.summary(), out)
    cfg = result.config
    temps = sorted(cfg.temperatures)
    base = result.setting(BASELINE)
    teacher_acc = result.teacher.get("test_accuracy")

    def series(metric: str) -> dict[str, list[float]]:
        s: dict[str, list[float]] = {}
        for d in cfg.divergences:
            ys = [(result.setting(d, t) or {}).get(metric) for t in temps]
            s[f"{d} KL"] = [math.nan if y is None else y for y in ys]
        if base is not None and base.get(metric) is not None:
            s["hard labels (baseline)"] = [base[metric]] * len(temps)
        return s

    acc = series("accuracy")
    if teacher_acc is not None:
        acc["teacher"] = [teacher_acc] * len(temps)
    plots = [
        LinePlot(x=temps, series=acc, xlabel="temperature T", ylabel="student test accuracy",
                 title="Student accuracy vs temperature (mean over seeds)"),
        LinePlot(x=temps, series=series("agreement"), xlabel="temperature T", ylabel="agreement with the teacher",
                 title="Agreement vs temperature (mean over seeds)"),
        LinePlot(x=temps, series=series("alpha1_s2t"), xlabel="temperature T", ylabel="alpha1 (student -> teacher)",
                 title="alpha1, student's attack on the teacher"),
        LinePlot(x=temps, series=series("alpha1_t2s"), xlabel="temperature T", ylabel="alpha1 (teacher -> student)",
                 title="alpha1, teacher's attack on the student"),
    ]
    shown = ["setting", "n", "accuracy", "accuracy_ci", "agreement", "agreement_ci", "kl_test", "kl_test_ci",
             "alpha1_s2t", "alpha1_s2t_ci", "alpha1_t2s", "alpha1_t2s_ci"]
    table_rows = [{k: (_ci(v) if k.endswith("_ci") else v) for k, v in s.items()} for s in result.settings]
    names = {**NAMES, **{f"{m}_ci": "95% CI" for m in METRICS}, "setting": "setting"}
    means = Table(columns=shown, rows=table_rows, title="Means over seeds with 95% t-intervals",
                  caption="Student-t intervals over the seeds of each setting. alpha metrics: s2t is the student's "
                          "attack evaluated on the teacher, t2s the teacher's attack evaluated on the student.",
                  all_columns=list(table_rows[0]) if table_rows else None, names=names)
    comp_rows = [{**c, "difference_ci": _ci(c["difference_ci"])} for c in result.comparisons]
    comps = Table(columns=["temperature", "metric", "forward", "reverse", "difference", "difference_ci", "verdict"],
                  rows=comp_rows, title="Forward minus reverse KL at each temperature",
                  caption="Difference of the means over seeds with a 95% Welch t-interval.",
                  names={"difference": "forward - reverse", "difference_ci": "95% CI", "temperature": "T"})
    base_rows = [{**c, "difference_ci": _ci(c["difference_ci"])} for c in result.vs_baseline]
    vs_base = Table(columns=["setting", "metric", "difference", "difference_ci", "verdict"], rows=base_rows,
                    title="Distilled minus hard-label student",
                    caption="Difference of the means over seeds with a 95% Welch t-interval.",
                    names={"difference": "distilled - hard labels", "difference_ci": "95% CI"})
    corr_rows = [{**c, "metric": NAMES.get(c["metric"], c["metric"]), "spearman_ci": _ci(c["spearman_ci"]),
                  "pearson_ci": _ci(c["pearson_ci"])} for c in result.correlations]
    corr = Table(columns=["metric", "truth", "spearman", "spearman_ci", "pearson", "kendall", "n"], rows=corr_rows,
                 title="Alpha metrics vs knowledge transferred (all students)",
                 caption="Correlation across every student (distilled and baseline); 95% percentile bootstrap "
                         "intervals over students.", names={"spearman_ci": "Spearman 95% CI", "metric": "alpha metric"})
    points = [r for r in result.students if r["alpha1_s2t"] is not None and r["agreement"] is not None]
    scatter = Scatter(x=[r["alpha1_s2t"] for r in points], y=[r["agreement"] for r in points],
                      xlabel="alpha1 (student's attack on the teacher)", ylabel="agreement with the teacher",
                      title="alpha1 vs agreement, one point per student",
                      labels=[f"{r['setting']} #{r['seed']}" for r in points],
                      groups=[r["divergence"] for r in points])
    alpha_views: list[Any] = [*plots[2:], corr]
    if points:
        alpha_views.insert(2, scatter)
    sections = [
        Section("Accuracy and agreement over temperature", [*plots[:2], means],
                intro="One line per divergence; the hard-label baseline (and, for accuracy, the teacher) as flat references."),
        Section("Forward vs reverse KL", [comps, vs_base]),
        Section("Adversarial transferability between teacher and student", alpha_views),
    ]
    summary = {"task": result.task.get("task"), "teacher": f"{cfg.teacher_arch}, test accuracy {_num(teacher_acc)}",
               "student": cfg.student_arch, "students": len(result.students), "seeds per setting": cfg.seeds}
    html = write_report(out / "report.html", title="Distillation as knowledge transfer (E6)",
                        intro=_INTRO, findings=_findings(result, Finding), sections=sections,
                        summary=summary, config=result.summary()["config"], run_seconds=result.seconds)
    return {"results": csv_path, "summary": json_path, "report": html}


_INTRO = (
    "A trained teacher is distilled into fresh students by minimising the forward KL(teacher || student) or the "
    "reverse KL(student || teacher) at each temperature; a student trained on the hard labels alone is the "
    "baseline. Knowledge transferred is measured by the students' accuracy and their agreement with the teacher; "
    "the alpha metrics measure how adversarial perturbations transfer between the two models (s2t: the student's "
    "attack evaluated on the teacher; t2s: the teacher's attack evaluated on the student)."
)


# ----------------------------------------------------------------------------------------------- experiment


class DistillStudy(Experiment):
    name = "distill"
    aliases = ("e6",)
    title = "distillation (E6): forward vs reverse KL over temperatures, with the alpha metrics between teacher and student"
    config_cls = DistillConfig
    variants = {"quick": QUICK}
    ground_truth = "student accuracy and agreement with the teacher"

    def grid(self, config: DistillConfig) -> list[Cell]:
        return _grid(config)

    cell_kinds = {"train": _zoo.train_cell, "e6.distill": _student_cell, "e6.baseline": _student_cell}

    def describe(self, config: DistillConfig) -> str:
        n = len(config.divergences) * len(config.temperatures)
        return (f"E6 distillation: {config.teacher_arch} teacher -> {config.student_arch} students on MNIST-1D "
                f"{config.domain}; {n} settings ({', '.join(config.divergences)} x T in "
                f"{', '.join(f'{t:g}' for t in config.temperatures)}) + hard-label baseline, {config.seeds} seeds each")

    def analyse(self, config: DistillConfig, cells: list[Cell], ctx: Context, seconds: float = 0.0) -> DistillStudyResult:
        return _analyse(config, cells, ctx, seconds)

    def write(self, result: DistillStudyResult, out_dir: str | Path) -> dict[str, Path]:
        return write_distill(result, out_dir)

    def summary_table(self, result: DistillStudyResult) -> tuple[str, list[str], list[list[str]]]:
        body = []
        for s in result.settings:
            body.append([s["setting"], str(s["n"])] + [f"{_num(s[m])} {_ci(s[f'{m}_ci'])}"
                                                       for m in ("accuracy", "agreement", "alpha1_s2t", "alpha1_t2s")])
        teacher = result.teacher.get("test_accuracy")
        return (f"E6 distillation: mean over seeds [95% t-interval]; teacher accuracy {_num(teacher)}; "
                "s2t = student's attack on the teacher",
                ["setting", "n", "accuracy", "agreement", "alpha1 s2t", "alpha1 t2s"], body)


EXPERIMENT = register(DistillStudy())
