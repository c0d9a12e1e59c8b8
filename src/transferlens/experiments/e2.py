"""E2: adversarial transferability indicates knowledge transferability (the default ``transferlens run``).

One MNIST-1D target task and a reference model trained on it; a zoo of source models that differ in
architecture and in source domain (from the target domain with another generator seed to severe shifts).
For every source: alpha metrics in both directions on the target's test inputs, transfer success rates,
and knowledge transferability (linear-probe and last-layer accuracy on the target). The result correlates
every alpha metric with linear-probe accuracy.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from .._torch import resolve_device
from .._validate import check_int, check_positive, check_seed
from ..adversarial import DIRECTIONS, PRESETS, ThreatModel, Transferability, preset_threat, transferability
from ..data.mnist1d import MNIST1D_DOMAINS
from ..evaluation import Correlation, correlate
from ..knowledge import KnowledgeResult, linear_probe, retrain_last_layer
from ..models import ARCHITECTURES
from ..runs.context import CellOutput, Context
from ..runs.spec import Cell, canonical_json
from ..training import TrainConfig, TrainResult
from . import _zoo
from ._output import compact, environment, write_tables
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
    # more ground truths from transferlens.transfer_methods (linear_probe and last_layer are always measured)
    transfer_methods: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        from ..transfer_methods import transfer_method_names

        extra = tuple(self.transfer_methods)
        for m in extra:
            if m in ("linear_probe", "last_layer"):
                raise ValueError(f"transfer_methods: {m!r} is always measured by E2; list only other methods")
            if m not in transfer_method_names():
                raise ValueError(f"transfer_methods: unknown method {m!r}; choose from {transfer_method_names()[2:]}")
        if len(set(extra)) != len(extra):
            raise ValueError(f"transfer_methods lists a method twice: {list(extra)}")
        object.__setattr__(self, "transfer_methods", extra)
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
        """The preset's threat model with ``norm``, ``eps`` and ``steps`` overridden where given
        (:func:`transferlens.adversarial.preset_threat`)."""
        return preset_threat(self.preset, norm=self.norm, eps=self.eps, steps=self.steps)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["source_domains"], d["architectures"] = list(self.source_domains), list(self.architectures)
        if self.transfer_methods:
            d["transfer_methods"] = list(self.transfer_methods)
        else:  # the default: summary.json stays as it was before extra methods existed
            del d["transfer_methods"]
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
    # per extra transfer method (config.transfer_methods): the metrics' correlations with its accuracy
    correlations_by_method: dict[str, dict[str, Correlation]] = field(default_factory=dict)

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
        if self.correlations_by_method:
            out["correlations_transfer_methods"] = {
                method: {m: compact(c) for m, c in corr.items()} for method, corr in self.correlations_by_method.items()
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
    regime = cfg.train.spec()
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
            for method in cfg.transfer_methods:
                cells.append(Cell.make(
                    "e2.transfer", {"source": spec, "target": target_spec["task"], "method": method, "options": {}},
                    deps=(train.key,), label=f"{method} {arch}@{domain}",
                ))
    return cells


_task = _zoo.task
_train = _zoo.train_cell
_model = _zoo.load_model


def _measure(cell: Cell, ctx: Context) -> CellOutput:
    spec = cell.spec
    source_key, target_key = cell.deps
    source = _model(ctx, source_key, spec["source"])
    target = _model(ctx, target_key, spec["target"])
    target_task = _task(ctx, spec["target"]["task"])
    n = spec["n_eval"]
    x_eval, y_eval = target_task.x_test[:n], target_task.y_test[:n]
    threat = ThreatModel(**{**spec["threat"], "bounds": tuple(spec["threat"]["bounds"]) if spec["threat"]["bounds"] else None})
    # The attacks stay in the target task's input box when the threat model sets none (MNIST-1D has none).
    tf = transferability(
        source, target, x_eval, y_eval, preset=spec["preset"], threat=threat, seed=cell.seed("attack"),
        bounds=target_task.bounds,
    )
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


def _add_transfer_accuracies(rows: list[dict[str, Any]], measured: list[Cell], transfers: list[Cell], ctx: Context) -> None:
    """Each source row gains ``<method>_accuracy`` (None where that transfer failed) for every extra method."""
    acc = {(canonical_json(c.spec["source"]), c.spec["method"]): ctx.results(c.key)["accuracy"] for c in transfers}
    methods = sorted({c.spec["method"] for c in transfers})
    for row, cell in zip(rows, measured):
        source = canonical_json(cell.spec["source"])
        for method in methods:
            row[f"{method}_accuracy"] = acc.get((source, method))


class E2(Experiment):
    name = "e2"
    aliases = ("default",)
    title = "adversarial transferability indicates knowledge transferability (MNIST-1D)"
    config_cls = E2Config
    variants = {"quick": QUICK}
    ground_truth = "linear-probe accuracy on the target"

    def grid(self, config: E2Config) -> list[Cell]:
        return _grid(config)

    cell_kinds = {"train": _train, "e2.measure": _measure, "e2.transfer": _zoo.transfer_cell}

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
        if config.transfer_methods:
            _add_transfer_accuracies(rows, measured, [c for c in cells if c.kind == "e2.transfer"], ctx)
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
            have = [r for r in rows if r.get(truth) is not None]
            t = [r[truth] for r in have]
            return {m: correlate([r[m] for r in have], t, n_boot=config.n_boot, seed=config.seed) for m in METRICS}

        by_method = {}
        for method in config.transfer_methods:
            if sum(r.get(f"{method}_accuracy") is not None for r in rows) >= 3:
                by_method[method] = corr(f"{method}_accuracy")

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
            correlations_by_method=by_method,
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
    """Write ``results.csv``, ``summary.json`` and ``report.html`` into ``out_dir``; return their paths.

    The report leads with the finding: the metric that best predicts linear-probe accuracy (Spearman and
    its interval), the source that alpha1_t2s ranks first against the truly best one (relative top-1), and
    the alphas against a trivial baseline (the source's own test accuracy as the predictor).
    """
    import math

    from ..evaluation import relative_top1
    from ..report import (
        CorrelationTable, Finding, HeatMap, Histograms, Scatter, Section, Table, best_metric, fmt_ci,
        format_value as f3, label, write_report,
    )

    out = Path(out_dir)
    rows = result.rows()
    summary = result.summary()
    csv_path, json_path = write_tables(rows, summary, out)

    cfg = result.config
    truth = "probe_accuracy"
    truth_name = label(truth)
    n = len(rows)
    acc = [r[truth] for r in rows]
    by_truth = sorted(rows, key=lambda r: -r[truth] if r[truth] is not None and math.isfinite(r[truth]) else math.inf)
    corr = result.correlations
    any_c = next(iter(corr.values()))
    pct = f"{round(any_c.confidence * 100)}%"
    baselines = {}
    try:
        baselines["source_accuracy"] = correlate([r["source_accuracy"] for r in rows], acc, n_boot=cfg.n_boot, seed=cfg.seed)
    except ValueError:  # a non-finite accuracy: no baseline rather than no report
        pass

    # ------------------------------------------------------------------ findings: what the run shows
    findings = []
    best = best_metric(corr)
    if best is None:
        findings.append(Finding("Best predictor", "none", f"No alpha metric has a defined rank correlation with {truth_name} (constant values)."))
    else:
        c = corr[best]
        findings.append(Finding(
            f"Best predictor of {truth_name}", label(best),
            f"Spearman {f3(c.spearman)} ({pct} CI {fmt_ci(c.spearman_ci)}) over {c.n} sources.",
        ))
    pick_metric = "alpha1_t2s"
    scores = [r[pick_metric] for r in rows]
    if all(math.isfinite(v) for v in scores + acc):
        i_pick = max(range(n), key=lambda i: (scores[i], -i))  # the first of tied maxima, as relative_top1
        i_best = max(range(n), key=lambda i: (acc[i], -i))
        try:
            top1 = f3(relative_top1(scores, acc))
        except ValueError:  # max(truth) <= 0
            top1 = "undefined"
        pick, truly = rows[i_pick], rows[i_best]
        if i_pick == i_best or pick[truth] == truly[truth]:
            detail = f"{label(pick_metric)} ranks {pick['source']} first, the truly best source ({truth_name} {f3(pick[truth])})."
        else:
            detail = (
                f"{label(pick_metric)} ranks {pick['source']} first ({truth_name} {f3(pick[truth])}); "
                f"the truly best source is {truly['source']} ({f3(truly[truth])})."
            )
        findings.append(Finding("Top-ranked source vs the truly best", f"relative top-1 {top1}", detail))
    base = baselines.get("source_accuracy")
    if best is not None and base is not None:
        b, s = corr[best].spearman, base.spearman
        beat = sum(1 for c in corr.values() if c.spearman is not None and s is not None and c.spearman > s)
        if s is None:
            verdict = "The baseline's correlation is undefined (every source has the same accuracy)."
        else:
            best_ci, base_ci = corr[best].spearman_ci, base.spearman_ci
            overlap = best_ci is not None and base_ci is not None and best_ci[0] <= base_ci[1] and base_ci[0] <= best_ci[1]
            verdict = (
                f"{beat} of {len(corr)} alpha metrics rank the sources better than the source's own test accuracy "
                f"does (Spearman {f3(s)}, {pct} CI {fmt_ci(base.spearman_ci)})"
            )
            verdict += "; the intervals of the best metric and the baseline overlap, so this run cannot tell them apart." if overlap else "."
        findings.append(Finding("Alpha metrics vs a trivial baseline", f"Spearman {f3(b)} vs {f3(s)}", verdict))

    # ------------------------------------------------------------------ views
    order = sorted(corr, key=lambda m: (corr[m].spearman is None, -(corr[m].spearman or 0.0)))

    def scatter(metric: str, c) -> Scatter:
        return Scatter(
            x=[r[metric] for r in rows], y=acc, xlabel=label(metric), ylabel=truth_name,
            title=f"{label(metric)}: Spearman {f3(c.spearman)} {fmt_ci(c.spearman_ci)}",
            labels=[r["domain"] for r in rows], groups=[r["architecture"] for r in rows],
        )

    rates = [[r.get("fooling_rate_t2s"), r.get("fooling_rate_s2t")] for r in by_truth]
    figures = [scatter(m, corr[m]) for m in order] + [scatter(m, c) for m, c in baselines.items()]
    stats = ("spearman", "spearman_ci", "pearson", "kendall", "weighted_tau", "relative_top1")
    boot = f"Intervals: {any_c.n_boot} bootstrap resamples of the {n} sources, {pct} percentile interval."
    sections = [
        Section("Which metric predicts knowledge transfer", [
            CorrelationTable(
                corr, truth, title=f"Agreement with {truth_name}", baselines=baselines, stats=stats, sort=True,
                caption=(
                    f"Every statistic is higher when the metric ranks the sources the way {truth_name} does. "
                    f"Relative top-1: {truth_name} of the source the metric ranks first, over the best one. {boot}"
                ),
            ),
            CorrelationTable(
                result.correlations_last_layer, "last_layer_accuracy", title=f"The same against {label('last_layer_accuracy')}",
                stats=stats, sort=True,
            ),
            *[CorrelationTable(c, f"{method}_accuracy", title=f"The same against {method} accuracy", stats=stats, sort=True)
              for method, c in result.correlations_by_method.items()],
        ]),
        Section(
            f"Each metric against {truth_name}", figures,
            intro="One point per source, labelled with its domain and coloured by architecture; the dashed line is the least-squares fit. Hover a point for its values.",
        ),
        Section("Sources", [
            Table(
                columns=["source", truth, "source_accuracy", "alpha1_t2s", "alpha1_s2t", "fooling_rate_t2s", "fooling_rate_s2t"],
                rows=rows, sort_by=truth, all_columns=list(rows[0]),
            ),
            Table(columns=["domain", "description"], rows=[{"domain": k, "description": v} for k, v in result.domain_descriptions.items()], title="Source domains"),
        ]),
        Section("Transfer success", [
            HeatMap(
                values=rates,
                rows=[r["source"] for r in by_truth],
                columns=["target \u2192 source (t2s)", "source \u2192 target (s2t)"],
                title=f"Fooling rate per source and direction (sorted by {truth_name}, best at the top)",
                value_label="fooling rate", vmax=max([v for r in rates for v in r if v is not None and math.isfinite(v) and v > 0] or [1.0]),
            ),
        ], intro=(
            "Fooling rate: the share of the inputs the victim model classifies correctly that the attack crafted on the "
            "other model makes it misclassify. t2s: crafted on the target, evaluated on the source; s2t: the reverse. "
            "The colour runs from 0 to the largest rate shown."
        )),
    ]
    notes = [boot]
    if result.sources:
        records = {s.name: s for s in result.sources}
        views = [
            Histograms(
                {r["source"]: getattr(records[r["source"]].transfer, d).alpha1_samples for r in by_truth if r["source"] in records},
                xlabel=f"per-sample {label('alpha1_' + d)}", title=f"Per-sample {label('alpha1_' + d)}",
            )
            for d in ("t2s", "s2t")
        ]
        sections.append(Section("Per-sample alpha1", views, intro=f"The distribution behind each source's mean alpha1, sources sorted by {truth_name} (best at the top)."))
    else:
        notes.append(
            "Per-sample alpha1 histograms are drawn when the measurements ran in this process; "
            "this report was built from recorded results only."
        )
    if result.failed_cells:
        notes += [f"failed cell {label_}: {err}" for label_, err in result.failed_cells]

    threat = cfg.threat
    intro = (
        f"Target: {result.target['task']['description']} with a {cfg.target_arch} reference model "
        f"(test accuracy {f3(result.target['test_accuracy'])}). {n} source models "
        f"({', '.join(cfg.architectures)} x {len(cfg.source_domains)} source domains) were each attacked and "
        f"probed on {result.target['n_eval']} target test inputs with the '{cfg.preset}' preset "
        f"({threat.norm}, eps={threat.eps:g}, {threat.steps} step{'s' if threat.steps != 1 else ''}). "
        "t2s: attack crafted on the target, evaluated on the source; s2t: the reverse. "
        f"Knowledge transferability (the ground truth) is {truth_name}: a linear probe on the source's frozen features."
    )
    html = write_report(
        out / "report.html",
        title="transferlens E2: does adversarial transferability indicate knowledge transferability?",
        intro=intro,
        findings=findings,
        sections=sections,
        config=summary["config"],
        notes=notes,
        run_seconds=result.seconds,
    )
    return {"results": csv_path, "summary": json_path, "report": html}
