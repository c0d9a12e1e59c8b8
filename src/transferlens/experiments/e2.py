"""E2: adversarial transferability indicates knowledge transferability (the default ``transferlens run``).

One MNIST-1D target task and a reference model trained on it; a zoo of source models that differ in
architecture and in source domain (from the target domain with another generator seed to severe shifts).
For every source: alpha metrics in both directions on the target's test inputs, transfer success rates,
and knowledge transferability (linear-probe and last-layer accuracy on the target). The result correlates
every alpha metric with linear-probe accuracy.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

from .._torch import resolve_device
from .._validate import check_int, check_positive, check_seed
from ..adversarial import PRESETS, ThreatModel, Transferability, transferability
from ..data.mnist1d import MNIST1D_DOMAINS, mnist1d_task
from ..evaluation import Correlation, correlate
from ..knowledge import KnowledgeResult, linear_probe, retrain_last_layer
from ..models import ARCHITECTURES, build_model
from ..training import TrainConfig, TrainResult, fit
from ._output import compact, correlation_rows, environment, write_tables

METRICS = ("alpha1_t2s", "alpha2_t2s", "combined_t2s", "alpha1_s2t", "alpha2_s2t", "combined_s2t")
DEFAULT_DOMAINS = ("reference", "noisy", "sheared", "untranslated", "very-noisy", "shuffled")

Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class E2Config:
    """Everything that determines an E2 run. The same config gives the same numbers on CPU.

    Generator seeds: the target domain uses ``42 + seed``; source domain ``i`` uses ``43 + seed + i``, so the
    ``reference`` source is the target domain drawn with another seed. Model seeds: target ``seed``,
    source ``j`` ``seed + 1 + j``.
    """

    seed: int = 0
    target_domain: str = "reference"
    target_arch: str = "cnn1d"
    source_domains: tuple[str, ...] = DEFAULT_DOMAINS
    architectures: tuple[str, ...] = ("mlp", "cnn1d")
    num_samples: int = 5000
    n_eval: int = 1000
    preset: str = "theory"
    norm: str | None = None
    eps: float | None = None
    steps: int | None = None
    train: TrainConfig = field(default_factory=TrainConfig)
    probe_C: float = 1.0
    n_boot: int = 1000
    device: str = "auto"

    def __post_init__(self) -> None:
        for d in (self.target_domain, *self.source_domains):
            if d not in MNIST1D_DOMAINS:
                raise ValueError(f"unknown MNIST-1D domain {d!r}; choose from {sorted(MNIST1D_DOMAINS)}")
        for a in (self.target_arch, *self.architectures):
            if a not in ARCHITECTURES or a == "cnn2d":
                raise ValueError(f"architecture {a!r} does not fit MNIST-1D; choose from ['cnn1d', 'mlp']")
        if self.preset not in PRESETS:
            raise ValueError(f"unknown preset {self.preset!r}; choose one of {sorted(PRESETS)}")
        if len(self.source_domains) * len(self.architectures) < 3:
            raise ValueError("E2 needs at least 3 sources (domains x architectures) to correlate anything")
        # Numbers normalised to plain Python types; fail here, with the reason, rather than minutes into a run.
        object.__setattr__(self, "n_eval", check_int(self.n_eval, "n_eval", 10))
        resolve_device(self.device)
        if self.eps is not None:
            object.__setattr__(self, "eps", check_positive(self.eps, "eps"))
        if self.steps is not None:
            object.__setattr__(self, "steps", check_int(self.steps, "steps", 1))
        _ = self.threat  # validates norm, eps and steps
        object.__setattr__(self, "num_samples", check_int(self.num_samples, "num_samples", 100))
        object.__setattr__(self, "n_boot", check_int(self.n_boot, "n_boot", 1))
        object.__setattr__(self, "probe_C", check_positive(self.probe_C, "probe_C"))
        # the generator seeds (43 + seed + i) must stay within mnist1d's range [0, 2**32)
        object.__setattr__(self, "seed", check_seed(self.seed, limit=2**32 - 64))
        if not isinstance(self.train, TrainConfig):
            raise TypeError(f"train must be a TrainConfig, got {type(self.train).__name__}")
        object.__setattr__(self, "source_domains", tuple(self.source_domains))
        object.__setattr__(self, "architectures", tuple(self.architectures))

    @property
    def threat(self) -> ThreatModel:
        """The preset's threat model with ``norm``, ``eps`` and ``steps`` overridden where given."""
        base = PRESETS[self.preset].threat
        if self.norm is None and self.eps is None and self.steps is None:
            return base
        eps = self.eps if self.eps is not None else base.eps
        steps = self.steps if self.steps is not None else base.steps
        # a one-step attack keeps the FGSM step (= eps); otherwise the default 2.5 * eps / steps
        return replace(base, norm=self.norm or base.norm, eps=eps, steps=steps, step_size=eps if steps == 1 else None)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["source_domains"], d["architectures"] = list(self.source_domains), list(self.architectures)
        d["threat"] = self.threat.to_dict()
        d["train"]["seed"] = "target: seed; source j: seed + 1 + j"
        d["generator_seeds"] = "target domain: 42 + seed; source domain i: 43 + seed + i"
        return d


@dataclass(frozen=True)
class SourceRecord:
    """One source model: where it came from and everything measured on it."""

    name: str
    domain: str
    architecture: str
    description: str
    train: TrainResult
    transfer: Transferability
    probe: KnowledgeResult
    last_layer: KnowledgeResult

    def row(self) -> dict[str, Any]:
        """Flat row for ``results.csv``."""
        r: dict[str, Any] = {
            "source": self.name,
            "domain": self.domain,
            "architecture": self.architecture,
            "source_accuracy": self.train.test_accuracy,
            "source_accuracy_on_target": self.transfer.source_accuracy,
        }
        r.update(self.transfer.metrics())
        for d in ("s2t", "t2s"):
            res = getattr(self.transfer, d)
            r[f"n_used_{d}"] = res.n_used
            s = res.success
            r[f"fooling_rate_{d}"] = s.fooling_rate if s else None
            r[f"error_rate_{d}"] = s.error_rate if s else None
            r[f"whitebox_rate_{d}"] = s.whitebox_rate if s else None
        r["probe_accuracy"] = self.probe.accuracy
        r["probe_loss"] = self.probe.loss
        r["last_layer_accuracy"] = self.last_layer.accuracy
        r["last_layer_loss"] = self.last_layer.loss
        return r


@dataclass(frozen=True)
class E2Result:
    config: E2Config
    target: dict[str, Any]
    sources: tuple[SourceRecord, ...]
    correlations: dict[str, Correlation]
    correlations_last_layer: dict[str, Correlation]
    seconds: float
    environment: dict[str, Any] = field(default_factory=environment)

    def rows(self) -> list[dict[str, Any]]:
        return [s.row() for s in self.sources]

    def summary(self) -> dict[str, Any]:
        """The ``summary.json`` content (no timings, so the same seed reproduces it exactly)."""

        return {
            "experiment": "E2",
            "title": "adversarial transferability indicates knowledge transferability (MNIST-1D)",
            "ground_truth": "probe_accuracy",
            "config": self.config.to_dict(),
            "target": self.target,
            "n_sources": len(self.sources),
            "environment": self.environment,
            "correlations": {m: compact(c) for m, c in self.correlations.items()},
            "correlations_last_layer": {m: compact(c) for m, c in self.correlations_last_layer.items()},
        }


def run_e2(config: E2Config | None = None, progress: Progress | None = None) -> E2Result:
    """Train the target and the source zoo, measure every source, correlate. ``progress(stage, done, total)``."""
    cfg = config or E2Config()
    t0 = time.perf_counter()
    plan = [(d, a) for d in cfg.source_domains for a in cfg.architectures]
    total = 1 + len(plan)
    report = progress or (lambda *_: None)

    report("target: training", 0, total)
    target_task = mnist1d_task(cfg.target_domain, seed=42 + cfg.seed, num_samples=cfg.num_samples)
    target = build_model(cfg.target_arch, target_task.input_shape, target_task.num_classes, seed=cfg.seed)
    target_train = fit(target, target_task, cfg.train, device=cfg.device, seed=cfg.seed)
    x_eval, y_eval = target_task.x_test[: cfg.n_eval], target_task.y_test[: cfg.n_eval]

    records: list[SourceRecord] = []
    domain_tasks = {
        d: mnist1d_task(d, seed=43 + cfg.seed + i, num_samples=cfg.num_samples) for i, d in enumerate(dict.fromkeys(cfg.source_domains))
    }
    for j, (domain, arch) in enumerate(plan):
        name = f"{arch}@{domain}"
        report(f"source {name}", 1 + j, total)
        task = domain_tasks[domain]
        model = build_model(arch, task.input_shape, task.num_classes, seed=cfg.seed + 1 + j)
        tr = fit(model, task, cfg.train, device=cfg.device, seed=cfg.seed + 1 + j)
        tf = transferability(model, target, x_eval, y_eval, preset=cfg.preset, threat=cfg.threat, seed=cfg.seed)
        probe = linear_probe(model, target_task, C=cfg.probe_C)
        last = retrain_last_layer(model, target_task, seed=cfg.seed)
        records.append(SourceRecord(name, domain, arch, task.description, tr, tf, probe, last))
    report("done", total, total)

    def corr(truth: list[float]) -> dict[str, Correlation]:
        return {m: correlate([r.transfer[m] for r in records], truth, n_boot=cfg.n_boot, seed=cfg.seed) for m in METRICS}

    return E2Result(
        config=cfg,
        target={
            "task": target_task.summary(),
            "architecture": cfg.target_arch,
            "test_accuracy": target_train.test_accuracy,
            "n_eval": len(x_eval),
            "epochs_run": target_train.epochs_run,
        },
        sources=tuple(records),
        correlations=corr([r.probe.accuracy for r in records]),
        correlations_last_layer=corr([r.last_layer.accuracy for r in records]),
        seconds=time.perf_counter() - t0,
        environment=environment(),  # captured under the thread limits the run had
    )


def write_e2(result: E2Result, out_dir: str | Path) -> dict[str, Path]:
    """Write ``results.csv``, ``summary.json`` and ``report.html`` into ``out_dir``; return their paths."""
    from ..report import Scatter, Table, write_report

    out = Path(out_dir)
    rows = result.rows()
    summary = result.summary()
    csv_path, json_path = write_tables(rows, summary, out)

    acc = [r["probe_accuracy"] for r in rows]
    figures = []
    for m in METRICS:
        c = result.correlations[m]
        ci = c.spearman_ci
        ci_txt = f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else ""
        rho = "undefined" if c.spearman is None else f"{c.spearman:.2f}"
        figures.append(
            Scatter(
                x=[r[m] for r in rows],
                y=acc,
                xlabel=m,
                ylabel="linear-probe accuracy on target",
                title=f"{m}: Spearman {rho}{ci_txt}",
                labels=[r["domain"] for r in rows],
                groups=[r["architecture"] for r in rows],
            )
        )
    columns = ["source", "source_accuracy", "probe_accuracy", "last_layer_accuracy", *METRICS, "fooling_rate_t2s", "fooling_rate_s2t"]
    cfg = result.config
    intro = (
        f"Target: {result.target['task']['description']} with a {cfg.target_arch} reference model "
        f"(test accuracy {result.target['test_accuracy']:.3f}). {len(rows)} source models "
        f"({', '.join(cfg.architectures)} x {len(cfg.source_domains)} source domains) were each attacked and "
        f"probed on {cfg.n_eval} target test inputs with the '{cfg.preset}' preset "
        f"({cfg.threat.norm}, eps={cfg.threat.eps}, {cfg.threat.steps} steps). "
        "t2s: attack crafted on the target, evaluated on the source; s2t: the reverse. "
        "Knowledge transferability is the target test accuracy of a linear probe on the source's frozen features."
    )
    domains = {r.domain: r.description for r in result.sources}
    html = write_report(
        out / "report.html",
        title="transferlens E2: adversarial transferability indicates knowledge transferability",
        intro=intro,
        summary={"run time (s)": round(result.seconds, 1), "sources": len(rows), "ground truth": "linear-probe accuracy"},
        tables=[
            Table(columns=["metric", "spearman", "spearman_ci", "pearson", "kendall", "weighted_tau"], rows=correlation_rows(result.correlations), title="Correlation with linear-probe accuracy"),
            Table(columns=columns, rows=rows, title="Sources"),
            Table(columns=["domain", "description"], rows=[{"domain": k, "description": v} for k, v in domains.items()], title="Source domains"),
        ],
        figures=figures,
        config=summary["config"],
        notes=[f"Spearman intervals: {cfg.n_boot} bootstrap resamples of the sources, 95% percentile interval."],
    )
    return {"results": csv_path, "summary": json_path, "report": html}
