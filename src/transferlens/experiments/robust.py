"""E5: do robust (adversarially trained) and self-trained sources transfer better?

Sources are trained on one MNIST-1D domain with each regime of :mod:`transferlens.regimes` -- standard
training, PGD adversarial training at several ``eps``, TRADES -- over several seeds, and transferred to
shifted target domains by a linear probe and by full fine-tuning. Each source's clean and PGD accuracy on
its own task, and the alpha metrics against a reference model trained on each target, are measured too.

The semi-supervised half of the claim is a 2 x 2 design in which only ``labeled_fraction`` of the source's
training labels are kept (the same hidden labels for every arm): standard or PGD adversarial training
(``self_training_eps``), each on the labeled part alone or followed by self-training on the confident
pseudo-labels of the rest (:func:`transferlens.self_train`). Self-training *helps* when it beats the same
regime without it; robustness and self-training are *complementary* when the combined arm beats both
single arms.

For every regime and target the means over seeds come with 95% percentile-bootstrap intervals over the
seeds; each arm is compared with its baseline (difference of means, bootstrap interval), and the claim is
called *holds* when the interval of the difference lies above 0, *reversed* below 0, *inconclusive*
otherwise (Salman et al. 2020; Deng et al. 2021).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .._validate import check_int, check_positive, check_real, check_seed
from ..data.mnist1d import MNIST1D_DOMAINS
from ..regimes import PGDAdversarial, Standard, Trades
from ..runs.context import CellOutput, Context
from ..runs.spec import Cell
from ..training import TrainConfig
from . import _zoo
from ._output import environment, write_tables
from .base import Experiment, register

__all__ = ["RobustConfig", "RobustResult"]

TRANSFERS = ("probe", "fine_tune")
METRICS = ("probe_accuracy", "fine_tune_accuracy", "alpha1_t2s", "alpha1_s2t", "combined_t2s", "combined_s2t")

QUICK: dict[str, Any] = {
    "num_samples": 600, "pgd_eps": [0.3], "trades": False, "seeds": 2, "target_domains": ["noisy"],
    "n_eval": 50, "fine_tune_epochs": 1, "n_boot": 200, "train": {"epochs": 3, "lr": 0.01, "batch_size": 32},
    "attack_steps": 3, "labeled_fraction": 0.3, "self_training_threshold": 0.5,
}


@dataclass(frozen=True)
class RobustConfig:
    """Sources on ``source_domain`` with each regime, ``seeds`` each; targets ``target_domains``."""

    seed: int = 0
    source_domain: str = "reference"
    target_domains: tuple[str, ...] = ("noisy", "sheared")
    arch: str = "cnn1d"
    num_samples: int = 4000
    pgd_eps: tuple[float, ...] = (0.1, 0.3)
    trades: bool = True
    trades_beta: float = 6.0
    trades_eps: float = 0.3
    attack_steps: int = 5
    seeds: int = 3
    train: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=40))
    fine_tune_epochs: int = 3
    probe_C: float = 1.0
    robust_eps: float = 0.3
    n_eval: int = 300
    preset: str = "theory"
    n_boot: int = 1000
    device: str = "auto"
    self_training: bool = True
    labeled_fraction: float = 0.2
    self_training_threshold: float = 0.9
    self_training_rounds: int = 1
    self_training_eps: float = 0.1

    def __post_init__(self) -> None:
        object.__setattr__(self, "seed", check_seed(self.seed))
        for d in (self.source_domain, *self.target_domains):
            if d not in MNIST1D_DOMAINS:
                raise ValueError(f"unknown MNIST-1D domain {d!r}; choose from {sorted(MNIST1D_DOMAINS)}")
        if not self.target_domains:
            raise ValueError("target_domains is empty: name at least one MNIST-1D domain to transfer to")
        if self.arch not in ("mlp", "cnn1d"):
            raise ValueError(f"arch {self.arch!r} does not fit MNIST-1D; choose from ['cnn1d', 'mlp']")
        object.__setattr__(self, "pgd_eps", tuple(check_positive(e, "pgd_eps entries") for e in self.pgd_eps))
        object.__setattr__(self, "seeds", check_int(self.seeds, "seeds", 2))
        object.__setattr__(self, "num_samples", check_int(self.num_samples, "num_samples", 200))
        object.__setattr__(self, "attack_steps", check_int(self.attack_steps, "attack_steps", 1))
        object.__setattr__(self, "fine_tune_epochs", check_int(self.fine_tune_epochs, "fine_tune_epochs", 1))
        object.__setattr__(self, "n_eval", check_int(self.n_eval, "n_eval", 10))
        object.__setattr__(self, "n_boot", check_int(self.n_boot, "n_boot", 10))
        for name in ("trades_eps", "robust_eps", "probe_C"):
            object.__setattr__(self, name, check_positive(getattr(self, name), name))
        Trades(beta=self.trades_beta, eps=self.trades_eps)  # validates beta
        object.__setattr__(self, "labeled_fraction",
                           check_real(self.labeled_fraction, "labeled_fraction", positive=True, below=1.0))
        object.__setattr__(self, "self_training_threshold",
                           check_real(self.self_training_threshold, "self_training_threshold", positive=True, below=1.0))
        object.__setattr__(self, "self_training_rounds", check_int(self.self_training_rounds, "self_training_rounds", 1))
        object.__setattr__(self, "self_training_eps", check_positive(self.self_training_eps, "self_training_eps"))
        if self.self_training and int(round(self.labeled_fraction * self.num_samples * 0.8)) < 20:
            raise ValueError(f"labeled_fraction={self.labeled_fraction} of {self.num_samples} samples leaves fewer than "
                             "20 labeled training samples; raise labeled_fraction or num_samples")

    def regimes(self) -> dict[str, dict[str, Any]]:
        """Name -> regime dict (the first is the standard baseline; then the semi-supervised arms)."""
        out = {"standard": Standard().to_dict()}
        for e in self.pgd_eps:
            out[f"pgd_at eps={e:g}"] = PGDAdversarial(eps=e, steps=self.attack_steps).to_dict()
        if self.trades:
            out[f"trades beta={self.trades_beta:g}"] = Trades(beta=self.trades_beta, eps=self.trades_eps,
                                                              steps=self.attack_steps).to_dict()
        if self.self_training:
            labels = f"{100 * self.labeled_fraction:g}% labels"
            adv = PGDAdversarial(eps=self.self_training_eps, steps=self.attack_steps).to_dict()
            for base, regime in (("standard", Standard().to_dict()), (f"pgd_at eps={self.self_training_eps:g}", adv)):
                for rounds in (0, self.self_training_rounds):
                    semi = {"labeled_fraction": self.labeled_fraction, "threshold": self.self_training_threshold,
                            "rounds": rounds}
                    name = (f"{base} {labels}" if rounds == 0 else f"self_training {labels}" if base == "standard"
                            else f"{base} + self_training {labels}")
                    out[name] = {**regime, "self_training": semi}
        return out

    def comparisons(self) -> list[tuple[str, str, str]]:
        """``(arm, baseline, question)`` pairs compared by the study."""
        regimes = self.regimes()
        out = [(n, "standard", "robust") for n, r in regimes.items() if n != "standard" and "self_training" not in r]
        if self.self_training:
            std, st, adv, both = [n for n, r in regimes.items() if "self_training" in r]
            out += [(st, std, "self-training"), (adv, std, "robust"), (both, adv, "self-training"), (both, st, "robust")]
        return out


def _task_spec(cfg: RobustConfig, domain: str, draw: str) -> dict[str, Any]:
    return {"generator": "mnist1d", "domain": domain, "num_samples": cfg.num_samples, "draw": draw, "seed": cfg.seed,
            "study": "robust"}


def _train_spec(cfg: RobustConfig, regime: dict[str, Any], replicate: int | None, domain: str, draw: str) -> dict[str, Any]:
    task = _task_spec(cfg, domain, draw)
    if replicate is not None:
        task["replicate"] = replicate
    return {"task": task, "arch": cfg.arch, "regime": {**regime, **cfg.train.spec()}}


def _grid(cfg: RobustConfig) -> list[Cell]:
    cells: list[Cell] = []
    refs = {}
    for t in cfg.target_domains:
        ref = Cell.make("train", _train_spec(cfg, Standard().to_dict(), None, t, "target"), label=f"reference {t}")
        refs[t] = ref
        cells.append(ref)
    for name, regime in cfg.regimes().items():
        for r in range(cfg.seeds):
            src = Cell.make("train", _train_spec(cfg, regime, r, cfg.source_domain, "source"), label=f"train {name} #{r}")
            cells.append(src)
            cells.append(Cell.make("e5.robustness", {"source": src.spec, "eps": cfg.robust_eps, "steps": 10},
                                   deps=(src.key,), label=f"robustness {name} #{r}"))
            for t in cfg.target_domains:
                spec = {"source": src.spec, "reference": refs[t].spec, "target": _task_spec(cfg, t, "target"),
                        "probe_C": cfg.probe_C, "fine_tune_epochs": cfg.fine_tune_epochs, "n_eval": cfg.n_eval,
                        "preset": cfg.preset}
                cells.append(Cell.make("e5.transfer", spec, deps=(src.key, refs[t].key), label=f"transfer {name} #{r} -> {t}"))
    return cells


def _robustness(cell: Cell, ctx: Context) -> CellOutput:
    from ..attacks import ThreatModel
    from ..regimes import robust_accuracy

    spec = cell.spec
    model = _zoo.load_model(ctx, cell.deps[0], spec["source"])
    t = _zoo.task(ctx, spec["source"]["task"])
    threat = ThreatModel(norm="linf", eps=spec["eps"], steps=spec["steps"], bounds=t.bounds)
    acc = robust_accuracy(model, t.x_test, t.y_test, threat, seed=cell.seed("attack"))
    return CellOutput(results=[("robust_accuracy", "", acc)])


def _transfer(cell: Cell, ctx: Context) -> CellOutput:
    from ..adversarial import transferability
    from ..finetune import fine_tune
    from ..knowledge import linear_probe

    spec = cell.spec
    source = _zoo.load_model(ctx, cell.deps[0], spec["source"])
    reference = _zoo.load_model(ctx, cell.deps[1], spec["reference"])
    t = _zoo.task(ctx, spec["target"])
    t0 = time.perf_counter()
    probe = linear_probe(source, t, C=spec["probe_C"])
    ft = fine_tune(source, t, epochs=spec["fine_tune_epochs"], seed=cell.seed("fine_tune"), device=ctx.device)
    n = spec["n_eval"]
    tf = transferability(source, reference, t.x_test[:n], t.y_test[:n], preset=spec["preset"], seed=cell.seed("attack"),
                         bounds=t.bounds)
    results = [("probe_accuracy", "", probe.accuracy), ("fine_tune_accuracy", "", ft.accuracy)]
    results += [(m, "", float(v)) for m, v in tf.metrics().items()]
    return CellOutput(results=results, payload={"seconds": time.perf_counter() - t0})


def _mean_ci(values: list[float], n_boot: int, seed: int) -> tuple[float, list[float]]:
    v = np.asarray(values, dtype=np.float64)
    boots = v[np.random.default_rng(seed).integers(0, len(v), size=(n_boot, len(v)))].mean(axis=1)
    return float(v.mean()), [float(np.percentile(boots, 2.5)), float(np.percentile(boots, 97.5))]


def _diff_ci(a: list[float], b: list[float], n_boot: int, seed: int) -> tuple[float, list[float]]:
    """Mean(a) - mean(b), with a percentile-bootstrap interval resampling each group's seeds."""
    rng = np.random.default_rng(seed)
    va, vb = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    da = va[rng.integers(0, len(va), size=(n_boot, len(va)))].mean(axis=1)
    db = vb[rng.integers(0, len(vb), size=(n_boot, len(vb)))].mean(axis=1)
    d = da - db
    return float(va.mean() - vb.mean()), [float(np.percentile(d, 2.5)), float(np.percentile(d, 97.5))]


def _verdict(ci: list[float]) -> str:
    return "holds" if ci[0] > 0 else "reversed" if ci[1] < 0 else "inconclusive"


@dataclass(frozen=True)
class RobustResult:
    """Per source cell: its regime, seed, clean / PGD accuracy and per-target transfer; per regime and target:
    means with intervals; per compared arm, target and transfer: the difference from its baseline; the
    semi-supervised claims (self-training helps; robustness and self-training are complementary)."""

    config: RobustConfig
    sources: list[dict[str, Any]]
    means: list[dict[str, Any]]
    comparisons: list[dict[str, Any]]
    seconds: float
    environment: dict[str, Any]
    failed_cells: list[tuple[str, str]] = field(default_factory=list)
    claims: list[dict[str, Any]] = field(default_factory=list)

    def rows(self) -> list[dict[str, Any]]:
        return [dict(r) for r in self.sources]

    def summary(self) -> dict[str, Any]:
        from ..runs.config import config_to_dict

        return {
            "experiment": "robust",
            "title": "robust (adversarially trained) sources and transfer",
            "config": config_to_dict(self.config),
            "means": self.means,
            "comparisons": self.comparisons,
            "claims": self.claims,
            "failed_cells": [list(f) for f in self.failed_cells],
            "environment": self.environment,
        }


def _analyse(cfg: RobustConfig, cells: list[Cell], ctx: Context, seconds: float) -> RobustResult:
    done = {c.key for c in cells}
    grid = {c.label: c for c in _grid(cfg)}
    sources, failed = [], [(label, "not computed") for label, c in grid.items() if c.key not in done]
    for name in cfg.regimes():
        for r in range(cfg.seeds):
            train, rob = grid[f"train {name} #{r}"], grid[f"robustness {name} #{r}"]
            for t in cfg.target_domains:
                tr = grid[f"transfer {name} #{r} -> {t}"]
                if not {train.key, rob.key, tr.key} <= done:
                    continue
                row: dict[str, Any] = {
                    "regime": name, "seed": r, "target": t,
                    "source_accuracy": ctx.results(train.key).get("test_accuracy"),
                    "robust_accuracy": ctx.results(rob.key).get("robust_accuracy"),
                }
                trained = ctx.results(train.key)  # pseudo-label counts: None for the fully supervised arms
                row.update({k: trained.get(k) for k in ("n_labeled", "n_pseudo", "pseudo_accuracy")})
                res = ctx.results(tr.key)
                row.update({m: res.get(m) for m in METRICS})
                sources.append(row)
    means, comparisons = [], []
    keys = ("source_accuracy", "robust_accuracy", *METRICS)

    def group(name: str, t: str) -> list[dict[str, Any]]:
        return [r for r in sources if r["target"] == t and r["regime"] == name]

    for t in cfg.target_domains:
        for name in cfg.regimes():
            rows = group(name, t)
            if len(rows) < 2:
                continue
            entry: dict[str, Any] = {"regime": name, "target": t, "n": len(rows)}
            for k in keys:
                entry[k], entry[f"{k}_ci"] = _mean_ci([r[k] for r in rows], cfg.n_boot, cfg.seed)
            means.append(entry)
        for name, baseline, question in cfg.comparisons():
            a, b = group(name, t), group(baseline, t)
            if len(a) < 2 or len(b) < 2:
                continue
            for k in ("probe_accuracy", "fine_tune_accuracy", "robust_accuracy"):
                d, ci = _diff_ci([r[k] for r in a], [r[k] for r in b], cfg.n_boot, cfg.seed)
                comparisons.append({"regime": name, "baseline": baseline, "question": question, "target": t,
                                    "metric": k, "difference": d, "ci": ci, "verdict": _verdict(ci)})
    return RobustResult(cfg, sources, means, comparisons, seconds, environment(), failed, _claims(cfg, comparisons))


def _claims(cfg: RobustConfig, comparisons: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per target and transfer: does self-training help (over standard training on the labeled part), and are
    robustness and self-training complementary (the combined arm beats both single arms: *holds* when both
    comparisons hold, *reversed* when either is reversed)?"""
    if not cfg.self_training:
        return []
    st_vs_std, _, both_vs_adv, both_vs_st = [(a, b) for a, b, _ in cfg.comparisons()[-4:]]
    out = []
    for t in cfg.target_domains:
        for k in ("probe_accuracy", "fine_tune_accuracy"):
            found = {(c["regime"], c["baseline"]): c["verdict"] for c in comparisons if c["target"] == t and c["metric"] == k}
            if not {st_vs_std, both_vs_adv, both_vs_st} <= set(found):
                continue
            joint = (found[both_vs_adv], found[both_vs_st])
            complementary = ("holds" if joint == ("holds", "holds") else "reversed" if "reversed" in joint else "inconclusive")
            out.append({"target": t, "metric": k, "self_training_helps": found[st_vs_std],
                        "self_training_helps_robust": found[both_vs_adv], "robust_helps_self_trained": found[both_vs_st],
                        "complementary": complementary})
    return out


class Robust(Experiment):
    name = "robust"
    aliases = ("e5",)
    title = "E5: robust (adversarially trained) sources and transfer to shifted targets"
    config_cls = RobustConfig
    variants = {"quick": QUICK}
    ground_truth = "transfer accuracy (linear probe, fine-tuning)"

    def grid(self, config: RobustConfig) -> list[Cell]:
        return _grid(config)

    cell_kinds = {"train": _zoo.train_cell, "e5.robustness": _robustness, "e5.transfer": _transfer}

    def describe(self, config: RobustConfig) -> str:
        return (f"E5: {len(config.regimes())} regimes x {config.seeds} seeds of {config.arch} on "
                f"{config.source_domain}, transferred to {', '.join(config.target_domains)}")

    def analyse(self, config: RobustConfig, cells: list[Cell], ctx: Context, seconds: float = 0.0) -> RobustResult:
        return _analyse(config, cells, ctx, seconds)

    def write(self, result: RobustResult, out_dir: str | Path) -> dict[str, Path]:
        return write_robust(result, out_dir)

    def summary_table(self, result: RobustResult) -> tuple[str, list[str], list[list[str]]]:
        cols = ["regime", "target", "clean acc.", "PGD acc.", "probe acc.", "fine-tune acc.", "alpha1_t2s"]
        body = []
        for m in result.means:
            body.append([m["regime"], m["target"], *[f"{m[k]:.3f} [{m[k + '_ci'][0]:.3f}, {m[k + '_ci'][1]:.3f}]"
                         for k in ("source_accuracy", "robust_accuracy", "probe_accuracy", "fine_tune_accuracy", "alpha1_t2s")]])
        return "Means over seeds [95% bootstrap interval]", cols, body


def write_robust(result: RobustResult, out_dir: str | Path) -> dict[str, Path]:
    from ..report import Finding, Section, Table, write_report

    out = Path(out_dir)
    csv_path, json_path = write_tables(result.rows() or [{"regime": None}], result.summary(), out)
    findings = [Finding(f"Robustness and self-training complementary ({c['metric'].replace('_', ' ')} on {c['target']})",
                        c["complementary"], f"self-training alone: {c['self_training_helps']}; on top of PGD-AT: "
                        f"{c['self_training_helps_robust']}") for c in result.claims]
    for c in result.comparisons:
        if c["metric"] in ("probe_accuracy", "fine_tune_accuracy"):
            findings.append(Finding(
                f"{c['regime']} vs {c['baseline']}, {c['metric'].replace('_', ' ')} on {c['target']}", c["verdict"],
                f"difference {c['difference']:+.3f} (95% interval [{c['ci'][0]:+.3f}, {c['ci'][1]:+.3f}])",
            ))
    mean_rows = [{**{k: v for k, v in m.items() if not k.endswith("_ci")},
                  **{f"{k}_interval": f"[{v[0]:.3f}, {v[1]:.3f}]" for k, v in m.items() if k.endswith("_ci")}}
                 for m in result.means]
    sections = [
        Section("Means over seeds", [Table(columns=["regime", "target", "source_accuracy", "robust_accuracy",
                                                    "probe_accuracy", "fine_tune_accuracy", "alpha1_t2s"],
                                           rows=mean_rows, title="Per regime and target",
                                           all_columns=list(mean_rows[0]) if mean_rows else None)]),
        Section("Each arm against its baseline", [Table(
            columns=["regime", "baseline", "target", "metric", "difference", "verdict"], title="Difference of means",
            rows=[{**c, "ci": f"[{c['ci'][0]:.3f}, {c['ci'][1]:.3f}]"} for c in result.comparisons],
            all_columns=["regime", "baseline", "question", "target", "metric", "difference", "ci", "verdict"])]),
    ]
    html = write_report(out / "report.html", title="Robust sources and transfer (E5)", findings=findings[: len(result.claims) + 6],
                        sections=sections, config=result.summary()["config"], run_seconds=result.seconds)
    return {"results": csv_path, "summary": json_path, "report": html}


EXPERIMENT = register(Robust())
