"""Model selection on your own models and data: every estimator scores every candidate for one target.

``transferlens select --target TASK --candidates A B C`` (or ``transferlens run select --config F``) ranks
candidate models for a target task. Cells:

* ``select.extract`` (one per candidate): load the model (``package.module:factory`` plus weights), run it
  once over the target's training split in batches, keep its features (the input of the head layer) and
  its softmax outputs (the source head's class probabilities) as arrays in the store;
* ``select.score`` (candidate x estimator): one estimator on those arrays, with its wall time;
* ``select.zoo`` (one per zoo-relative estimator such as NCTI): all candidates at once;
* ``select.verify`` (optional, ``verify = K``): actually transfer the top K candidates by ``rank_by`` (a
  linear probe trained on the target's training split, accuracy on its test split), to see how the
  ranking held up.

A candidate's key holds its factory, arguments, head and the SHA-256 of its weights file; the target's the
SHA-256 of its ``.npz`` (or its factory / built-in name): changing either recomputes what depends on it,
and nothing else.
"""

from __future__ import annotations

import hashlib
import math
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .._torch import resolve_device
from .._validate import check_int, check_positive
from ..data.load import load_task, task_identity
from ..data.task import Task
from ..estimators import estimator_names, get_estimator
from ..evaluation import Correlation, correlate
from ..runs.context import CellOutput, Context
from ..runs.spec import Cell
from ._output import compact, environment, write_tables
from .base import Experiment, register

__all__ = ["Candidate", "SelectConfig", "SelectResult", "parse_candidate", "verify_top"]


@dataclass(frozen=True)
class Candidate:
    """One candidate model: ``factory`` (``package.module:name``, called with ``kwargs``), optional
    ``weights`` (``.safetensors`` or a weights-only checkpoint), ``head`` (the layer whose input gives the
    features; default the last ``nn.Linear``), a display ``name`` (default from the factory and weights)
    and optionally its ``source_accuracy`` on its own task (for the trivial baseline)."""

    factory: str = ""
    weights: str | None = None
    name: str = ""
    kwargs: dict[str, Any] = field(default_factory=dict)
    head: str | None = None
    source_accuracy: float | None = None

    def __post_init__(self) -> None:
        from ..models import ARCHITECTURES

        if not isinstance(self.factory, str) or (self.factory.count(":") != 1 and self.factory not in ARCHITECTURES):
            raise ValueError(
                f"candidate factory must be 'package.module:name' or a built-in architecture ({', '.join(ARCHITECTURES)}), "
                f"got {self.factory!r} (weights go in 'weights')"
            )
        if self.source_accuracy is not None and not 0.0 <= float(self.source_accuracy) <= 1.0:
            raise ValueError(f"candidate source_accuracy must be a fraction in [0, 1], got {self.source_accuracy}")

    @property
    def label(self) -> str:
        if self.name:
            return self.name
        base = self.factory.split(":")[-1]
        return f"{base}@{Path(self.weights).stem}" if self.weights else base


def parse_candidate(text: str) -> Candidate:
    """``[NAME=]package.module:factory[@WEIGHTS]`` as typed on the command line."""
    if not isinstance(text, str) or not text:
        raise ValueError(f"a candidate is written [NAME=]package.module:factory[@WEIGHTS], got {text!r}")
    name, sep, rest = text.partition("=")
    if not sep:
        name, rest = "", text
    factory, _, weights = rest.partition("@")
    return Candidate(factory=factory, weights=weights or None, name=name)


@dataclass(frozen=True)
class SelectConfig:
    """Rank ``candidates`` for ``target`` with ``estimators`` (empty: every registered estimator whose
    inputs are available). ``rank_by`` orders the table; ``verify`` > 0 transfers the top ``verify``
    candidates by it with a linear probe (C = ``probe_C``); ``verified`` names candidates to transfer
    explicitly. ``target`` is an ``.npz`` path, ``package.module:factory`` or ``mnist1d:DOMAIN`` /
    ``digits:TRANSFORM``, built with ``target_kwargs``. With a ``reference`` (a model trained on the target)
    the alpha metrics score every candidate too, on ``n_eval`` test samples with the ``preset`` options."""

    target: str = ""
    target_kwargs: dict[str, Any] = field(default_factory=dict)
    candidates: tuple[Candidate, ...] = ()
    estimators: tuple[str, ...] = ()
    rank_by: str = "logme"
    verify: int = 0
    verified: tuple[str, ...] = ()
    probe_C: float = 1.0
    reference: Candidate | None = None
    n_eval: int = 500
    preset: str = "theory"
    batch_size: int = 512
    n_boot: int = 1000
    seed: int = 0
    device: str = "auto"

    def __post_init__(self) -> None:
        object.__setattr__(self, "verify", check_int(self.verify, "verify", 0))
        object.__setattr__(self, "n_eval", check_int(self.n_eval, "n_eval", 10))
        object.__setattr__(self, "batch_size", check_int(self.batch_size, "batch_size", 1))
        object.__setattr__(self, "n_boot", check_int(self.n_boot, "n_boot", 1))
        object.__setattr__(self, "probe_C", check_positive(self.probe_C, "probe_C"))
        known = estimator_names()
        for name in (*self.estimators, self.rank_by):
            if name not in known:
                raise ValueError(f"unknown estimator {name!r}; choose from {', '.join(known)}")
        labels = [c.label for c in self.candidates]
        dupes = sorted({n for n in labels if labels.count(n) > 1})
        if dupes:
            raise ValueError(f"two candidates are called {dupes[0]!r}; give each a distinct name (NAME=factory@weights)")
        unknown = [n for n in self.verified if n not in labels]
        if unknown:
            raise ValueError(f"verified names {unknown} are not candidates; candidates: {labels}")

    def available_inputs(self) -> set[str]:
        have = {"features", "labels", "source_probs", "model"}
        if self.candidates and all(c.source_accuracy is not None for c in self.candidates):
            have.add("source_accuracy")
        if self.reference is not None:
            have |= {"reference", "inputs"}
        return have

    def chosen_estimators(self) -> list[str]:
        """The estimators to run: those asked for, or every one whose inputs the candidates provide."""
        have = self.available_inputs()
        names = list(self.estimators) or [n for n in estimator_names() if set(get_estimator(n).needs) <= have]
        if self.rank_by not in names:
            names.append(self.rank_by)
        for n in names:
            missing = set(get_estimator(n).needs) - have
            if "source_accuracy" in missing:
                raise ValueError(f"estimator {n!r} needs every candidate's source_accuracy (set it in the config)")
            if missing:
                raise ValueError(f"estimator {n!r} needs a reference model trained on the target: pass --reference "
                                 "package.module:factory@WEIGHTS (or set reference in the config)")
        return names


def _sha256(path: str) -> str:
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"weights file {path!r} does not exist")
    h = hashlib.sha256()
    with p.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _target_spec(cfg: SelectConfig) -> dict[str, Any]:
    return {"spec": cfg.target, "kwargs": dict(cfg.target_kwargs), "identity": task_identity(cfg.target, cfg.target_kwargs)}


def _candidate_spec(c: Candidate) -> dict[str, Any]:
    return {
        "factory": c.factory, "kwargs": dict(c.kwargs), "head": c.head, "weights": c.weights,
        "weights_sha256": _sha256(c.weights) if c.weights else None,
    }


def _grid(cfg: SelectConfig) -> list[Cell]:
    if not cfg.target:
        raise ValueError("select needs a target task: --target PATH.npz | package.module:factory | digits:TRANSFORM")
    if len(cfg.candidates) < 2:
        raise ValueError(f"select ranks at least 2 candidates, got {len(cfg.candidates)}: pass --candidates A B ...")
    target = _target_spec(cfg)
    extracts = {}
    cells: list[Cell] = []
    for c in cfg.candidates:
        cell = Cell.make("select.extract", {"target": target, "candidate": _candidate_spec(c)}, label=f"extract {c.label}")
        extracts[c.label] = cell
        cells.append(cell)
    names = cfg.chosen_estimators()
    alpha = [n for n in names if "reference" in get_estimator(n).needs]
    for c in cfg.candidates if alpha else ():
        spec = {"target": target, "candidate": _candidate_spec(c), "reference": _candidate_spec(cfg.reference),
                "n_eval": cfg.n_eval, "preset": cfg.preset, "seed": cfg.seed}
        cells.append(Cell.make("select.alpha", spec, label=f"alpha {c.label}"))
    for name in names:
        est = get_estimator(name)
        if "reference" in est.needs:
            continue
        if est.zoo_relative:
            keys = [extracts[c.label].key for c in cfg.candidates]
            cells.append(Cell.make("select.zoo", {"target": target, "extracts": keys, "estimator": name,
                                                  "options": dict(est.options)},
                                   deps=tuple(keys), label=f"{name} (all candidates)"))
            continue
        for c in cfg.candidates:
            x = extracts[c.label]
            spec = {"target": target, "extract": x.key, "estimator": name, "options": dict(est.options),
                    "source_accuracy": c.source_accuracy if "source_accuracy" in est.needs else None}
            cells.append(Cell.make("select.score", spec, deps=(x.key,), label=f"{name} {c.label}"))
    for c in cfg.candidates:
        if c.label in cfg.verified:
            spec = {"target": target, "candidate": _candidate_spec(c), "method": "linear_probe", "C": cfg.probe_C}
            cells.append(Cell.make("select.verify", spec, label=f"verify {c.label}"))
    return cells


def _task(spec: dict[str, Any], ctx: Context) -> Task:
    key = ("task", spec["spec"], repr(sorted(spec["kwargs"].items())))
    if key not in ctx.cache:
        ctx.cache[key] = load_task(spec["spec"], spec["kwargs"])
    return ctx.cache[key]


def _model(spec: dict[str, Any], ctx: Context, device: torch.device, task: Task):
    from ..models.load import load_model

    model = load_model(spec["factory"], weights=spec["weights"], kwargs=spec["kwargs"], head=spec["head"],
                       input_shape=task.input_shape)
    return model.to(device)


def _extract(cell: Cell, ctx: Context) -> CellOutput:
    from ..knowledge import extract_features

    spec = cell.spec
    task = _task(spec["target"], ctx)
    device = resolve_device(ctx.device)
    t0 = time.perf_counter()
    model = _model(spec["candidate"], ctx, device, task)
    x = task.x_train
    feats = extract_features(model, x, batch_size=512)
    logits = []
    with torch.no_grad():
        for i in range(0, len(x), 512):
            out = model(x[i : i + 512].to(device, next(model.parameters()).dtype))
            if out.ndim != 2:
                raise ValueError(f"the model's output has shape {tuple(out.shape)}; a classifier returns (N, classes)")
            logits.append(out.double().cpu())
    probs = torch.softmax(torch.cat(logits), dim=1).numpy()
    n_params = sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())
    return CellOutput(
        results=[("param_count", "", float(n_params)), ("feature_dim", "", float(feats.shape[1]))],
        payload={"seconds": time.perf_counter() - t0, "num_outputs": int(probs.shape[1])},
        arrays={"features": feats.detach().cpu().numpy(), "probs": probs},
    )


class _ParamCount(torch.nn.Module):
    """Stands in for the model when only its parameter count is needed (recorded by the extract cell)."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.n = n

    def parameters(self, recurse: bool = True):  # type: ignore[override]
        yield torch.empty(self.n, device="meta")


def _inputs(key: str, ctx: Context, labels: np.ndarray, source_accuracy: float | None) -> dict[str, Any]:
    return {
        "features": ctx.array(key, "features"),
        "source_probs": ctx.array(key, "probs"),
        "labels": labels,
        "source_accuracy": source_accuracy,
        "model": _ParamCount(int(ctx.results(key)["param_count"])),
    }


def _score(cell: Cell, ctx: Context) -> CellOutput:
    from ..estimators import score as run_estimator

    spec = cell.spec
    key = spec["extract"]
    labels = _task(spec["target"], ctx).y_train.numpy()
    inputs = _inputs(key, ctx, labels, spec["source_accuracy"])
    t0 = time.perf_counter()
    value = run_estimator(spec["estimator"], options=spec["options"], **inputs)
    return CellOutput(results=[(spec["estimator"], "", value)], payload={"seconds": time.perf_counter() - t0})


def _zoo(cell: Cell, ctx: Context) -> CellOutput:
    from ..estimators import score_zoo

    spec = cell.spec
    keys = spec["extracts"]
    labels = _task(spec["target"], ctx).y_train.numpy()
    cands = [_inputs(k, ctx, labels, None) for k in keys]
    t0 = time.perf_counter()
    values = score_zoo(spec["estimator"], cands, labels, options=spec["options"])
    seconds = time.perf_counter() - t0
    return CellOutput(results=[(spec["estimator"], k, v) for k, v in zip(keys, values)], payload={"seconds": seconds})


def _alpha(cell: Cell, ctx: Context) -> CellOutput:
    from ..adversarial import transferability

    spec = cell.spec
    task = _task(spec["target"], ctx)
    device = resolve_device(ctx.device)
    model, reference = _model(spec["candidate"], ctx, device, task), _model(spec["reference"], ctx, device, task)
    n = spec["n_eval"]
    t0 = time.perf_counter()
    tf = transferability(model, reference, task.x_test[:n], task.y_test[:n], preset=spec["preset"], seed=spec["seed"],
                         bounds=task.bounds)
    return CellOutput(results=[(m, "", float(v)) for m, v in tf.metrics().items()], payload={"seconds": time.perf_counter() - t0})


def _verify(cell: Cell, ctx: Context) -> CellOutput:
    from ..knowledge import linear_probe

    spec = cell.spec
    task = _task(spec["target"], ctx)
    model = _model(spec["candidate"], ctx, resolve_device(ctx.device), task)
    t0 = time.perf_counter()
    r = linear_probe(model, task, C=spec["C"])
    return CellOutput(
        results=[("linear_probe", "", r.accuracy), ("linear_probe_loss", "", r.loss)],
        payload={"seconds": time.perf_counter() - t0, "train_accuracy": r.train_accuracy},
    )


@dataclass(frozen=True)
class SelectResult:
    """The ranking: one row per candidate (scores, ranks and times per estimator, verified accuracy), the
    estimators' directions, and, when at least 3 candidates were verified, each estimator's correlation
    with the verified accuracy."""

    config: SelectConfig
    target: dict[str, Any]
    estimators: list[dict[str, Any]]
    candidates: list[dict[str, Any]]
    verification: dict[str, Correlation]
    seconds: float
    environment: dict[str, Any]
    failed_cells: list[tuple[str, str]] = field(default_factory=list)

    @property
    def correlations(self) -> dict[str, Correlation]:
        return self.verification

    def ranking(self) -> list[dict[str, Any]]:
        """Candidates ordered by ``rank_by`` (best first; unscored last)."""
        by = self.config.rank_by
        return sorted(self.candidates, key=lambda r: (r["ranks"].get(by) is None, r["ranks"].get(by) or 0))

    def rows(self) -> list[dict[str, Any]]:
        out = []
        for r in self.ranking():
            row: dict[str, Any] = {"candidate": r["name"], "factory": r["factory"], "weights": r["weights"]}
            for e in self.estimators:
                row[e["name"]] = r["scores"].get(e["name"])
                row[f"rank_{e['name']}"] = r["ranks"].get(e["name"])
            row["verified_accuracy"] = r["verified_accuracy"]
            out.append(row)
        return out

    def summary(self) -> dict[str, Any]:
        return {
            "experiment": "select",
            "target": self.target,
            "rank_by": self.config.rank_by,
            "estimators": self.estimators,
            "ranking": [
                {k: r[k] for k in ("name", "factory", "weights", "scores", "ranks", "seconds", "verified_accuracy")}
                for r in self.ranking()
            ],
            "verification": {k: compact(c) for k, c in self.verification.items()},
            "failed_cells": [list(f) for f in self.failed_cells],
            "config": _config_dict(self.config),
            "seconds": self.seconds,
            "environment": self.environment,
        }


def _config_dict(cfg: SelectConfig) -> dict[str, Any]:
    from ..runs.config import config_to_dict

    return config_to_dict(cfg)


def _ranks(values: dict[str, float | None], greater_is_better: bool) -> dict[str, int]:
    """1 for the best score; tied scores share the best of their ranks (1, 2, 2, 4); unscored: absent."""
    scored = [(v if greater_is_better else -v, n) for n, v in values.items() if v is not None and math.isfinite(v)]
    return {n: 1 + sum(1 for w, _ in scored if w > v) for v, n in scored}


class Select(Experiment):
    name = "select"
    title = "Rank candidate models for a target task with every transferability estimator"
    config_cls = SelectConfig
    ground_truth = "verified linear-probe accuracy"
    variants: dict[str, dict[str, Any]] = {"quick": {}}

    def grid(self, config: SelectConfig) -> list[Cell]:
        return _grid(config)

    cell_kinds = {"select.extract": _extract, "select.score": _score, "select.zoo": _zoo, "select.verify": _verify,
                  "select.alpha": _alpha}

    def describe(self, config: SelectConfig) -> str:
        return (
            f"select: {len(config.candidates)} candidates for {config.target or '(no target)'}, "
            f"{len(config.chosen_estimators())} estimators, ranked by {config.rank_by}"
        )

    def analyse(self, config: SelectConfig, cells: list[Cell], ctx: Context, seconds: float = 0.0) -> SelectResult:
        done = {c.key for c in cells}
        grid = _grid(config)
        by_label = {c.label: c for c in grid}
        names = config.chosen_estimators()
        extract_key = {c.label: by_label[f"extract {c.label}"].key for c in config.candidates}
        label_of_key = {v: k for k, v in extract_key.items()}
        scores: dict[str, dict[str, float | None]] = {c.label: {} for c in config.candidates}
        times: dict[str, dict[str, float]] = {c.label: {} for c in config.candidates}
        est_seconds: dict[str, float] = {n: 0.0 for n in names}
        alpha_names = [n for n in names if "reference" in get_estimator(n).needs]
        for cell in grid:
            if cell.kind == "select.alpha" and cell.key in done:
                who = cell.label.removeprefix("alpha ")
                res = ctx.results(cell.key)
                t = float(ctx.payload(cell.key).get("seconds", 0.0)) / len(alpha_names)
                for n in alpha_names:
                    scores[who][n] = res.get(n)
                    times[who][n] = t
                    est_seconds[n] += t
                continue
            if cell.key not in done or cell.kind not in ("select.score", "select.zoo"):
                continue
            res = ctx.results(cell.key)
            t = float(ctx.payload(cell.key).get("seconds", 0.0))
            est = cell.spec["estimator"]
            est_seconds[est] += t
            if cell.kind == "select.score":
                who = label_of_key[cell.spec["extract"]]
                scores[who][est] = res.get(est)
                times[who][est] = t
            else:
                for key in cell.spec["extracts"]:
                    scores[label_of_key[key]][est] = res.get(f"{est}_{key}")
                    times[label_of_key[key]][est] = t / len(cell.spec["extracts"])
        verified: dict[str, float | None] = {}
        for c in config.candidates:
            cell = by_label.get(f"verify {c.label}")
            if cell is not None and cell.key in done:
                verified[c.label] = ctx.results(cell.key).get("linear_probe")
        ranks: dict[str, dict[str, int]] = {c.label: {} for c in config.candidates}
        for n in names:
            per = _ranks({c.label: scores[c.label].get(n) for c in config.candidates}, get_estimator(n).greater_is_better)
            for who, rk in per.items():
                ranks[who][n] = rk
        rows = []
        for c in config.candidates:
            key = extract_key[c.label]
            info = ctx.results(key) if key in done else {}
            rows.append({
                "name": c.label, "factory": c.factory, "weights": c.weights, "scores": scores[c.label],
                "ranks": ranks[c.label], "seconds": times[c.label], "verified_accuracy": verified.get(c.label),
                "param_count": info.get("param_count"), "feature_dim": info.get("feature_dim"),
            })
        verification: dict[str, Correlation] = {}
        ok = [r for r in rows if r["verified_accuracy"] is not None]
        if len(ok) >= 3:
            truth = [r["verified_accuracy"] for r in ok]
            for n in names:
                vals = [r["scores"].get(n) for r in ok]
                if any(v is None for v in vals):
                    continue
                sign = 1.0 if get_estimator(n).greater_is_better else -1.0
                try:
                    verification[n] = correlate([sign * v for v in vals], truth, n_boot=config.n_boot, seed=config.seed)
                except ValueError:
                    continue
        estimators = [
            {"name": n, "greater_is_better": get_estimator(n).greater_is_better, "zoo_relative": get_estimator(n).zoo_relative,
             "summary": get_estimator(n).summary, "seconds": est_seconds[n]}
            for n in names
        ]
        target = _task(_target_spec(config), ctx).summary()
        failed = [(c.label, "not computed") for c in grid if c.key not in done]
        return SelectResult(config, target, estimators, rows, verification, seconds, environment(), failed)

    def write(self, result: SelectResult, out_dir: str | Path) -> dict[str, Path]:
        return write_select(result, out_dir)

    def summary_table(self, result: SelectResult) -> tuple[str, list[str], list[list[str]]]:
        """For the console: one row per estimator (its direction, each candidate's score with its rank, its
        time over all candidates), candidates as columns in ``rank_by`` order (the first 8; the rest are in
        results.csv), and the verified accuracies last."""
        shown = result.ranking()[:8]
        cols = ["estimator", "better", *[r["name"] for r in shown], "time (s)"]
        body = []
        for e in result.estimators:
            row = [e["name"], "higher" if e["greater_is_better"] else "lower"]
            for r in shown:
                v, rk = r["scores"].get(e["name"]), r["ranks"].get(e["name"])
                row.append("-" if v is None else f"{_fmt(v)} ({rk})")
            body.append([*row, f"{e['seconds']:.2f}"])
        if any(r["verified_accuracy"] is not None for r in result.candidates):
            body.append(["verified accuracy", "higher",
                         *["-" if r["verified_accuracy"] is None else f"{r['verified_accuracy']:.3f}" for r in shown], ""])
        more = len(result.candidates) - len(shown)
        title = (f"Candidates for {result.target['name']}, best first by {result.config.rank_by} (rank in brackets)"
                 + (f"; {more} more in results.csv" if more > 0 else ""))
        return title, cols, body


def _fmt(v: float) -> str:
    if float(v).is_integer() and abs(v) >= 100:  # counts (param_count)
        return str(int(v))
    return f"{v:.3g}" if abs(v) >= 1e4 or (v != 0 and abs(v) < 1e-3) else f"{v:.3f}"


EXPERIMENT = register(Select())


def verify_top(result: SelectResult) -> tuple[str, ...]:
    """The names of the top ``config.verify`` candidates by ``rank_by`` (for a second, verifying pass)."""
    k = result.config.verify
    return tuple(r["name"] for r in result.ranking()[:k])


def write_select(result: SelectResult, out_dir: str | Path) -> dict[str, Path]:
    """``results.csv`` (one row per candidate), ``summary.json`` and ``report.html``."""
    from ..report import CorrelationTable, Finding, Scatter, Section, Table, write_report

    out = Path(out_dir)
    rows = result.rows()
    csv_path, json_path = write_tables(rows, result.summary(), out)
    by = result.config.rank_by
    ranking = result.ranking()
    findings = []
    if ranking and ranking[0]["scores"].get(by) is not None:
        top = ranking[0]
        findings.append(Finding(f"Top candidate by {by}", top["name"], f"{by} {_fmt(top['scores'][by])}, first of {len(ranking)} candidates."))
    agree = [e["name"] for e in result.estimators if ranking and ranking[0]["ranks"].get(e["name"]) == 1]
    findings.append(Finding("Estimators that agree on the top candidate", f"{len(agree)} of {len(result.estimators)}",
                            ", ".join(agree) if agree else "none"))
    ver = [r for r in ranking if r["verified_accuracy"] is not None]
    if ver:
        best = max(ver, key=lambda r: r["verified_accuracy"])
        findings.append(Finding("Verified (linear probe on the target)", best["name"],
                                f"highest test accuracy {best['verified_accuracy']:.3f} among the {len(ver)} verified candidates."))
    est_names = [e["name"] for e in result.estimators]
    table = Table(
        columns=["candidate", *est_names[:6], "verified_accuracy"], rows=rows, title="Candidates",
        caption=f"Ranked by {by}; nc1 is lower-is-better, every other score higher-is-better.",
        sort_by=f"rank_{by}", descending=False, all_columns=list(rows[0]),
        names={n: n for n in est_names},
    )
    sections = [Section("Ranking", [table])]
    if result.verification:
        sections.append(Section("How the ranking held up", [
            CorrelationTable(result.verification, truth="verified linear-probe accuracy",
                             caption="Signed so that higher always means better agreement (nc1 negated).",
                             names={n: n for n in est_names}),
            Scatter(x=[r["scores"].get(by) for r in ver], y=[r["verified_accuracy"] for r in ver],
                    labels=[r["name"] for r in ver], xlabel=by, ylabel="verified linear-probe accuracy",
                    title=f"{by} against the verified accuracy"),
        ]))
    timing = Table(columns=["estimator", "seconds"], rows=[{"estimator": e["name"], "seconds": e["seconds"]} for e in result.estimators],
                   title="Time per estimator (all candidates)", sort_by="seconds")
    sections.append(Section("Cost", [timing]))
    html = write_report(
        out / "report.html", title=f"Model selection for {result.target['name']}", findings=findings, sections=sections,
        summary={"target": result.target["name"], "candidates": len(ranking), "estimators": len(est_names)},
        config=_config_dict(result.config), run_seconds=result.seconds,
    )
    return {"results": csv_path, "summary": json_path, "report": html}


def with_verified(cfg: SelectConfig, names: tuple[str, ...]) -> SelectConfig:
    return replace(cfg, verified=tuple(dict.fromkeys((*cfg.verified, *names))))

