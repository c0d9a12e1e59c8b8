"""E1: the synthetic study with exact (Jacobian) metrics.

RBF regression data; a one-hidden-layer sigmoid target trained with MSE; sources are the target's weights
plus a fixed random direction (U(-0.5, 0.5) per parameter) scaled by a growing deviation. For every scale:
exact alphas both ways (top singular vector, plus the 2nd-singular-vector ablation), gradient- and
function-matching distances, and knowledge transfer = RMSE after refitting only the source's output
layer on the target data in closed form. The published trend: alphas ~1 at zero deviation and falling
as the deviation grows, while the refit RMSE and the gradient-matching distance rise.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from ..data.synthetic import (
    build_sigmoid_net,
    deviation_scales,
    model_rmse,
    perturbed_copy,
    random_direction,
    rbf_regression,
    refit_output_layer,
    train_regression,
)
from .._validate import check_int, check_positive, check_seed
from ..evaluation import Correlation, correlate
from ..exact import ExactTransferability, exact_transferability
from ._output import compact, correlation_rows, environment, write_tables

ALPHAS = ("alpha1_s2t", "alpha2_s2t", "combined_s2t", "alpha1_t2s", "alpha2_t2s", "combined_t2s")
DISTANCES = ("grad_match_s2t", "grad_match_t2s", "func_match_s2t", "func_match_t2s")
METRICS = ALPHAS + DISTANCES
SCHEDULES = ("accumulated", "linear")
# Ranking statistics that presume "higher truth is better" (relative top-1) do not apply to an RMSE.
E1_KEYS = ("pearson", "spearman", "kendall", "spearman_ci", "pearson_ci", "kendall_ci", "n")

Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class E1Config:
    """Everything that determines an E1 run (defaults: the published sizes).

    ``schedule``: ``accumulated`` adds ``step * i`` to the running deviation at step ``i`` (as the original
    script did: scale ``step * i (i + 1) / 2``), ``linear`` uses scale ``step * i``. ``level`` is the singular
    vector of the main measurement (0 = top); ``ablation_level`` the one of the ablation (None to skip).
    """

    seed: int = 0
    n_samples: int = 5000
    n_inputs: int = 50
    n_outputs: int = 10
    n_rbf: int = 100
    width: int = 100
    n_scales: int = 10
    schedule: str = "accumulated"
    step: float = 0.1
    level: int = 0
    ablation_level: int | None = 1
    train_steps: int = 200

    def __post_init__(self) -> None:
        # Numbers normalised to plain Python types (numpy scalars accepted); the direction uses seed + 1.
        object.__setattr__(self, "seed", check_seed(self.seed, limit=2**63 - 1))
        if self.schedule not in SCHEDULES:
            raise ValueError(f"unknown schedule {self.schedule!r}; choose one of {SCHEDULES}")
        for name in ("n_samples", "n_inputs", "n_outputs", "n_rbf", "width", "train_steps"):
            object.__setattr__(self, name, check_int(getattr(self, name), name, 1))
        object.__setattr__(self, "step", check_positive(self.step, "step"))
        object.__setattr__(self, "n_scales", check_int(self.n_scales, "n_scales (a trend needs points)", 3))
        limit = min(self.n_inputs, self.n_outputs)
        for name in ("level", "ablation_level"):
            v = getattr(self, name)
            if v is not None:
                object.__setattr__(self, name, check_int(v, f"{name} (< min(n_inputs, n_outputs))", 0, limit - 1))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class E1Result:
    config: E1Config
    scales: tuple[float, ...]
    target_rmse: float
    measurements: tuple[ExactTransferability, ...]
    ablation: tuple[ExactTransferability, ...]
    refit_rmse: tuple[float, ...]
    correlations: dict[str, Correlation]
    ablation_correlations: dict[str, Correlation]
    seconds: float
    environment: dict[str, Any] = field(default_factory=environment)

    def rows(self) -> list[dict[str, Any]]:
        out = []
        for i, scale in enumerate(self.scales):
            r: dict[str, Any] = {"step": i, "scale": scale}
            r.update({m: self.measurements[i][m] for m in METRICS})
            for d in ("s2t", "t2s"):
                r[f"grad_match_rel_{d}"] = self.measurements[i].gradient_matching[d].relative
                r[f"func_match_rel_{d}"] = self.measurements[i].function_matching[d].relative
            r["refit_rmse"] = self.refit_rmse[i]
            if self.ablation:
                r.update({f"{m}_level{self.config.ablation_level}": self.ablation[i][m] for m in ALPHAS})
            out.append(r)
        return out

    def summary(self) -> dict[str, Any]:
        """The ``summary.json`` content (no timings: the same seed reproduces it exactly)."""

        return {
            "experiment": "E1",
            "title": "synthetic study with exact metrics: alphas vs refit RMSE as the source drifts",
            "ground_truth": "refit_rmse",
            "config": self.config.to_dict(),
            "target_rmse": self.target_rmse,
            "environment": self.environment,
            "scales": list(self.scales),
            "correlations": {m: compact(c, E1_KEYS) for m, c in self.correlations.items()},
            "ablation_level": self.config.ablation_level,
            "ablation_correlations": {m: compact(c, E1_KEYS) for m, c in self.ablation_correlations.items()},
        }


def run_e1(config: E1Config | None = None, progress: Progress | None = None) -> E1Result:
    """Train the target, sweep the deviation scale, measure everything; ``progress(stage, done, total)``."""
    cfg = config or E1Config()
    report = progress or (lambda *_: None)
    t0 = time.perf_counter()
    scales = deviation_scales(cfg.n_scales, cfg.schedule, cfg.step)
    total = 1 + len(scales)
    report("target: training", 0, total)
    data = rbf_regression(cfg.n_samples, cfg.n_inputs, cfg.n_outputs, cfg.n_rbf, seed=cfg.seed)
    target = build_sigmoid_net(cfg.n_inputs, cfg.n_outputs, cfg.width, seed=cfg.seed)
    train_regression(target, data, steps=cfg.train_steps, seed=cfg.seed)
    direction = random_direction(target, seed=cfg.seed + 1)
    measured, ablation, rmse = [], [], []
    for i, scale in enumerate(scales):
        report(f"scale {scale:.3g}", 1 + i, total)
        source = perturbed_copy(target, direction, scale)
        measured.append(exact_transferability(source, target, data.x, level=cfg.level))
        if cfg.ablation_level is not None:
            ablation.append(exact_transferability(source, target, data.x, level=cfg.ablation_level))
        rmse.append(refit_output_layer(source, data).rmse)
    report("done", total, total)

    def corr(results: list[ExactTransferability], names: tuple[str, ...]) -> dict[str, Correlation]:
        return {m: correlate([r[m] for r in results], rmse, n_boot=1000, seed=cfg.seed) for m in names}

    return E1Result(
        config=cfg,
        scales=tuple(scales),
        target_rmse=model_rmse(target, data),
        measurements=tuple(measured),
        ablation=tuple(ablation),
        refit_rmse=tuple(rmse),
        correlations=corr(measured, METRICS),
        ablation_correlations=corr(ablation, ALPHAS) if ablation else {},
        seconds=time.perf_counter() - t0,
        environment=environment(),  # captured under the thread limits the run had
    )


def write_e1(result: E1Result, out_dir: str | Path) -> dict[str, Path]:
    """Write ``results.csv``, ``summary.json`` and ``report.html`` into ``out_dir``; return their paths."""
    from ..report import LinePlot, Table, write_report

    out = Path(out_dir)
    rows = result.rows()
    summary = result.summary()
    csv_path, json_path = write_tables(rows, summary, out)

    cfg = result.config
    x = list(result.scales)
    col = lambda k: [r[k] for r in rows]  # noqa: E731
    lvl = cfg.ablation_level
    figures = [
        LinePlot(x=x, series={m: col(m) for m in ("alpha1_s2t", "alpha1_t2s")}, xlabel="deviation scale", ylabel="alpha1", title="alpha1 (exact, top singular vector)"),
        LinePlot(x=x, series={m: col(m) for m in ("alpha2_s2t", "alpha2_t2s", "combined_s2t", "combined_t2s")}, xlabel="deviation scale", ylabel="value", title="alpha2 and combined"),
        LinePlot(x=x, series={"refit RMSE": col("refit_rmse")}, xlabel="deviation scale", ylabel="RMSE", title=f"knowledge transfer: refit RMSE (target alone {result.target_rmse:.3f})"),
        LinePlot(
            x=x,
            series={m.replace("_rel", ""): col(m) for m in ("grad_match_rel_s2t", "grad_match_rel_t2s", "func_match_rel_s2t", "func_match_rel_t2s")},
            xlabel="deviation scale",
            ylabel="distance / RMS size of the matched quantity",
            title="gradient- and function-matching distances (relative)",
        ),
    ]
    if result.ablation:
        figures.append(
            LinePlot(
                x=x,
                series={f"{m} (level {lvl})": col(f"{m}_level{lvl}") for m in ("alpha1_s2t", "alpha1_t2s", "combined_s2t")},
                xlabel="deviation scale",
                ylabel="value",
                title=f"ablation: singular vector {lvl + 1} instead of the top one",
            )
        )

    tables = [Table(columns=["metric", "spearman", "spearman_ci", "pearson", "kendall", "weighted_tau"], rows=correlation_rows(result.correlations), title="Correlation with refit RMSE (negative = the metric falls as transfer gets worse)")]
    if result.ablation:
        tables.append(Table(columns=["metric", "spearman", "spearman_ci", "pearson", "kendall", "weighted_tau"], rows=correlation_rows(result.ablation_correlations), title=f"Ablation (singular vector {lvl + 1}): correlation with refit RMSE"))
    tables.append(Table(columns=list(rows[0]), rows=rows, title="Sweep"))
    intro = (
        f"RBF regression (N={cfg.n_samples}, n={cfg.n_inputs}, d={cfg.n_outputs}, {cfg.n_rbf} RBF features); "
        f"a sigmoid target of width {cfg.width} (RMSE {result.target_rmse:.4f}); sources = target weights + scale x a fixed "
        f"U(-0.5, 0.5) direction, {cfg.schedule} schedule with step {cfg.step}. All metrics are exact (Jacobian-based). "
        "Knowledge transfer: RMSE after refitting only the source's output layer on the target data (closed form)."
    )
    html = write_report(
        out / "report.html",
        title="transferlens E1: exact metrics on the synthetic study",
        intro=intro,
        summary={"run time (s)": round(result.seconds, 1), "scales": len(x), "target RMSE": result.target_rmse},
        tables=tables,
        figures=figures,
        config=summary["config"],
    )
    return {"results": csv_path, "summary": json_path, "report": html}
