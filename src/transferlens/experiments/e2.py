"""E2: adversarial transferability indicates knowledge transferability (the default ``transferlens run``).

One MNIST-1D target task and a reference model trained on it; a zoo of source models that differ in
architecture and in source domain (from the target domain with another generator seed to severe shifts).
For every source: alpha metrics in both directions on the target's test inputs, transfer success rates,
and knowledge transferability (linear-probe and last-layer accuracy on the target). The result correlates
every alpha metric with linear-probe accuracy.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import torch

from .._torch import resolve_device
from .._validate import check_int, check_positive, check_seed
from ..adversarial import DIRECTIONS, PRESETS, ThreatModel, Transferability, transferability
from ..data.mnist1d import MNIST1D_DOMAINS, mnist1d_task
from ..data.task import Task
from ..evaluation import Correlation, correlate
from ..knowledge import KnowledgeResult, linear_probe, retrain_last_layer
from ..models import ARCHITECTURES, build_model
from ..runs.context import CellOutput, Context
from ..runs.spec import Cell, canonical_json, derive_seed
from ..training import TrainConfig, TrainResult, fit
from ._output import compact, correlation_rows, environment, write_tables
from .base import Experiment, register

METRICS = ("alpha1_t2s", "alpha2_t2s", "combined_t2s", "alpha1_s2t", "alpha2_s2t", "combined_s2t")
DEFAULT_DOMAINS = ("reference", "noisy", "sheared", "untranslated", "very-noisy", "shuffled")
# The named "quick" variant: a 6-source zoo on less data, a smoke test in seconds.
QUICK: dict[str, Any] = {
    "source_domains": ["reference", "noisy", "shuffled"], "architectures": ["mlp", "cnn1d"],
    "num_samples": 1000, "n_eval": 200, "n_boot": 200,
}

Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class E2Config:
    """Everything that determines an E2 run. The same config gives the same numbers on CPU.

    Every random draw takes its seed from the key of the cell that makes it (see
    :mod:`transferlens.runs.spec`): a task's generator seed from its spec (domain, size, whether it is the
    target's or a source's draw, and ``seed``), a model's initialisation and training order from its
    training cell, an attack's from its measurement cell. ``seed`` enters every spec, so another ``seed``
    gives another study; adding or removing a source changes no other source's numbers.
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
        for name in ("source_domains", "architectures"):
            values = list(getattr(self, name))
            twice = next((v for v in values if values.count(v) > 1), None)
            if twice is not None:
                raise ValueError(f"{name} lists {twice!r} twice; each source (domain x architecture) is measured once")
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
        object.__setattr__(self, "seed", check_seed(self.seed))
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
        return d


@dataclass(frozen=True)
class SourceRecord:
    """One source model measured in this process: where it came from and the full result objects (per-sample
    arrays, options). A run read back from the store has the same numbers in :meth:`E2Result.rows`."""

    name: str
    domain: str
    architecture: str
    description: str
    train: TrainResult
    transfer: Transferability
    probe: KnowledgeResult
    last_layer: KnowledgeResult


@dataclass(frozen=True)
class E2Result:
    """The analysis of an E2 run, built from what its cells recorded."""

    config: E2Config
    target: dict[str, Any]
    source_rows: tuple[dict[str, Any], ...]
    correlations: dict[str, Correlation]
    correlations_last_layer: dict[str, Correlation]
    seconds: float
    environment: dict[str, Any] = field(default_factory=environment)
    sources: tuple[SourceRecord, ...] = ()
    domain_descriptions: dict[str, str] = field(default_factory=dict)
    failed_cells: tuple[tuple[str, str], ...] = ()

    def rows(self) -> list[dict[str, Any]]:
        return [dict(r) for r in self.source_rows]

    def summary(self) -> dict[str, Any]:
        """The ``summary.json`` content (no timings, so the same seed reproduces it exactly)."""
        out = {
            "experiment": "E2",
            "title": "adversarial transferability indicates knowledge transferability (MNIST-1D)",
            "ground_truth": "probe_accuracy",
            "config": self.config.to_dict(),
            "target": self.target,
            "n_sources": len(self.source_rows),
            "environment": self.environment,
            "correlations": {m: compact(c) for m, c in self.correlations.items()},
            "correlations_last_layer": {m: compact(c) for m, c in self.correlations_last_layer.items()},
        }
        if self.failed_cells:
            out["failed_cells"] = [{"cell": label, "error": err} for label, err in self.failed_cells]
        return out


# ----------------------------------------------------------------------------------------------- cells


def _task_spec(cfg: E2Config, domain: str, draw: str) -> dict[str, Any]:
    """A task: ``draw`` is ``"target"`` or ``"source"``, so the reference source is the target domain drawn
    with another generator seed."""
    return {"generator": "mnist1d", "domain": domain, "num_samples": cfg.num_samples, "draw": draw, "seed": cfg.seed}


def _train_spec(cfg: E2Config, task: dict[str, Any], arch: str) -> dict[str, Any]:
    regime = {k: v for k, v in asdict(cfg.train).items()}
    return {"task": task, "arch": arch, "regime": {"name": "standard", **regime}}


def _grid(cfg: E2Config) -> list[Cell]:
    target_spec = _train_spec(cfg, _task_spec(cfg, cfg.target_domain, "target"), cfg.target_arch)
    target = Cell.make("train", target_spec, label=f"target {cfg.target_arch}@{cfg.target_domain}")
    cells = [target]
    measure = {
        "n_eval": cfg.n_eval,
        "preset": cfg.preset,
        "threat": cfg.threat.to_dict(),
        "probe_C": cfg.probe_C,
        "seed": cfg.seed,
    }
    for domain in cfg.source_domains:
        for arch in cfg.architectures:
            spec = _train_spec(cfg, _task_spec(cfg, domain, "source"), arch)
            train = Cell.make("train", spec, label=f"train {arch}@{domain}")
            m = Cell.make(
                "e2.measure", {"source": spec, "target": target_spec, **measure},
                deps=(train.key, target.key), label=f"measure {arch}@{domain}",
            )
            cells += [train, m]
    return cells


def _task(ctx: Context, spec: dict[str, Any]) -> Task:
    """The task of a spec, generated once per run (its seed derives from the spec)."""
    key = ("task", canonical_json(spec))
    if key not in ctx.cache:
        seed = derive_seed(spec, "data")
        ctx.cache[key] = mnist1d_task(spec["domain"], seed=seed, num_samples=spec["num_samples"])
    return ctx.cache[key]


def _train(cell: Cell, ctx: Context) -> CellOutput:
    spec = cell.spec
    task = _task(ctx, spec["task"])
    regime = {k: v for k, v in spec["regime"].items() if k != "name"}
    cfg = TrainConfig(**{**regime, "seed": cell.seed("train")})
    model = build_model(spec["arch"], task.input_shape, task.num_classes, seed=cell.seed("init"))
    tr = fit(model, task, cfg, device=ctx.device)
    ctx.cache[("model", cell.key)] = model
    return CellOutput(
        results=[
            ("test_accuracy", "", tr.test_accuracy), ("val_accuracy", "", tr.val_accuracy),
            ("epochs_run", "", float(tr.epochs_run)), ("best_epoch", "", float(tr.best_epoch)),
        ],
        payload={"task": task.summary(), "train_loss": list(tr.train_loss), "val_loss": list(tr.val_loss)},
        weights={"weights": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}},
        value=tr,
    )


def _model(ctx: Context, key: str, spec: dict[str, Any]) -> torch.nn.Module:
    """The trained model of a training cell: from this process, else rebuilt from the stored weights."""
    cached = ctx.cache.get(("model", key))
    if cached is not None:
        return cached
    task = _task(ctx, spec["task"])
    model = build_model(spec["arch"], task.input_shape, task.num_classes)
    model.load_state_dict(ctx.weights(key))
    model.to(resolve_device(ctx.device)).eval()
    ctx.cache[("model", key)] = model
    return model


def _measure(cell: Cell, ctx: Context) -> CellOutput:
    spec = cell.spec
    source_key, target_key = cell.deps
    source = _model(ctx, source_key, spec["source"])
    target = _model(ctx, target_key, spec["target"])
    target_task = _task(ctx, spec["target"]["task"])
    n = spec["n_eval"]
    x_eval, y_eval = target_task.x_test[:n], target_task.y_test[:n]
    threat = ThreatModel(**{**spec["threat"], "bounds": tuple(spec["threat"]["bounds"]) if spec["threat"]["bounds"] else None})
    tf = transferability(source, target, x_eval, y_eval, preset=spec["preset"], threat=threat, seed=cell.seed("attack"))
    probe = linear_probe(source, target_task, C=spec["probe_C"])
    last = retrain_last_layer(source, target_task, seed=cell.seed("last_layer"))
    results: list[tuple[str, str, float | None]] = []
    arrays = {}
    for d in DIRECTIONS:
        r = getattr(tf, d)
        for m in ("alpha1", "alpha2", "combined", "alpha1_median"):
            results.append((m, d, float(getattr(r, m))))
        for m in ("n_used", "n_filtered", "n_degenerate"):
            results.append((m, d, float(getattr(r, m))))
        results.append(("saturation", d, r.saturation))
        for m in ("error_rate", "fooling_rate", "conditional_rate", "whitebox_rate"):
            results.append((m, d, getattr(r.success, m) if r.success else None))
        arrays[f"alpha1_samples_{d}"] = r.alpha1_samples
        arrays[f"used_index_{d}"] = r.used_index
    results += [
        ("source_accuracy_on_target", "", tf.source_accuracy), ("target_accuracy", "", tf.target_accuracy),
        ("probe_accuracy", "", probe.accuracy), ("probe_loss", "", probe.loss),
        ("probe_train_accuracy", "", probe.train_accuracy),
        ("last_layer_accuracy", "", last.accuracy), ("last_layer_loss", "", last.loss),
    ]
    return CellOutput(
        results=results, payload={"options": tf.options}, arrays=arrays, value=(tf, probe, last),
    )


def _row(cell: Cell, ctx: Context) -> dict[str, Any]:
    """The ``results.csv`` row of one measured source, from what its cells recorded."""
    spec = cell.spec
    src = spec["source"]
    m = ctx.results(cell.key)
    row: dict[str, Any] = {
        "source": f"{src['arch']}@{src['task']['domain']}",
        "domain": src["task"]["domain"],
        "architecture": src["arch"],
        "source_accuracy": ctx.results(cell.deps[0])["test_accuracy"],
        "source_accuracy_on_target": m["source_accuracy_on_target"],
    }
    for d in DIRECTIONS:
        for metric in ("alpha1", "alpha2", "combined"):
            row[f"{metric}_{d}"] = m[f"{metric}_{d}"]
    for d in DIRECTIONS:
        row[f"n_used_{d}"] = int(m[f"n_used_{d}"])
        for metric in ("fooling_rate", "error_rate", "whitebox_rate"):
            row[f"{metric}_{d}"] = m[f"{metric}_{d}"]
    for k in ("probe_accuracy", "probe_loss", "last_layer_accuracy", "last_layer_loss"):
        row[k] = m[k]
    return row


class E2(Experiment):
    name = "e2"
    aliases = ("default",)
    title = "adversarial transferability indicates knowledge transferability (MNIST-1D)"
    config_cls = E2Config
    variants = {"quick": QUICK}
    ground_truth = "linear-probe accuracy on the target"

    def grid(self, config: E2Config) -> list[Cell]:
        return _grid(config)

    def run_cell(self, cell: Cell, ctx: Context) -> CellOutput:
        return _train(cell, ctx) if cell.kind == "train" else _measure(cell, ctx)

    def describe(self, config: E2Config) -> str:
        return (
            f"E2: {len(config.source_domains) * len(config.architectures)} sources ({', '.join(config.architectures)} x "
            f"{', '.join(config.source_domains)}) vs a {config.target_arch} target, preset {config.preset}"
        )

    def analyse(self, config: E2Config, cells: list[Cell], ctx: Context, seconds: float = 0.0) -> E2Result:
        target_key = _grid(config)[0].key
        target_cell = next((c for c in cells if c.key == target_key), None)
        if target_cell is None:
            raise ValueError("the target model could not be trained, so nothing was measured; see the failed cells")
        measured = [c for c in cells if c.kind == "e2.measure"]
        if len(measured) < 3:
            raise ValueError(f"only {len(measured)} sources were measured; E2 needs at least 3 to correlate anything")
        rows = [_row(c, ctx) for c in measured]
        t_res = ctx.results(target_cell.key)
        target = {
            "task": ctx.payload(target_cell.key)["task"],
            "architecture": config.target_arch,
            "test_accuracy": t_res["test_accuracy"],
            "n_eval": min(config.n_eval, ctx.payload(target_cell.key)["task"]["n_test"]),
            "epochs_run": int(t_res["epochs_run"]),
        }
        by_key = {c.key: c for c in cells}
        records = []
        for c in measured:
            value, train = ctx.value(c.key), ctx.value(c.deps[0])
            if value is not None and train is not None:
                tf, probe, last = value
                spec = c.spec["source"]
                records.append(SourceRecord(
                    f"{spec['arch']}@{spec['task']['domain']}", spec["task"]["domain"], spec["arch"],
                    ctx.payload(c.deps[0])["task"]["description"], train, tf, probe, last,
                ))
        descriptions = {}
        for c in measured:
            dep = by_key.get(c.deps[0])
            if dep is not None:
                task = ctx.payload(dep.key)["task"]
                descriptions[task["meta"]["domain"]] = task["description"]

        def corr(truth: str) -> dict[str, Correlation]:
            t = [r[truth] for r in rows]
            return {m: correlate([r[m] for r in rows], t, n_boot=config.n_boot, seed=config.seed) for m in METRICS}

        return E2Result(
            config=config,
            target=target,
            source_rows=tuple(rows),
            correlations=corr("probe_accuracy"),
            correlations_last_layer=corr("last_layer_accuracy"),
            seconds=seconds,
            environment=environment(),
            sources=tuple(records) if len(records) == len(measured) else (),
            domain_descriptions=descriptions,
        )

    def write(self, result: E2Result, out_dir: str | Path) -> dict[str, Path]:
        return write_e2(result, out_dir)


EXPERIMENT = register(E2())


def run_e2(config: E2Config | None = None, progress: Progress | None = None) -> E2Result:
    """Train the target and the source zoo, measure every source, correlate (in memory, no store).
    ``progress(stage, done, total)``."""
    from ..runs.runner import execute

    return execute(EXPERIMENT, config or E2Config(), progress=progress).result


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
    domains = dict(result.domain_descriptions)
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
