"""E6, the distillation study, on its quick variant: the grid, the per-setting means and the comparisons
recomputed from the store, a rerun from the store, the outputs and the config checks."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

import transferlens.experiments.distill_study  # noqa: F401 - registers "distill"
from transferlens.experiments.base import get_experiment
from transferlens.experiments.distill_study import (
    ALPHA_METRICS, BASELINE, EXPERIMENT, METRICS, QUICK, DistillConfig, _students, _teacher_cell, write_distill,
)
from transferlens.runs.config import ConfigError, build_config
from transferlens.runs.context import Context
from transferlens.runs.runner import execute
from transferlens.runs.store import Store


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    folder = tmp_path_factory.mktemp("e6")
    cfg = build_config(DistillConfig, defaults=QUICK)
    with Store(folder / "runs.db") as store:
        outcome = execute(EXPERIMENT, cfg, store=store)
        again = execute(EXPERIMENT, cfg, store=store)
    return cfg, outcome, again, folder


def _stored(cfg, folder):
    """(divergence, temperature) -> list of the stored results of its students, read back from the store."""
    out: dict = {}
    with Store(folder / "runs.db", readonly=True) as store:
        ctx = Context(store)
        for s in _students(cfg, _teacher_cell(cfg)):
            out.setdefault((s.divergence, s.temperature), []).append(ctx.results(s.cell.key))
    return out


def test_registered_under_both_names():
    assert get_experiment("distill") is EXPERIMENT and get_experiment("e6") is EXPERIMENT


def test_quick_run_computes_every_cell(quick):
    cfg, outcome, _, _ = quick
    assert not outcome.failed and not outcome.result.failed_cells
    grid = EXPERIMENT.grid(cfg)
    kinds = [c.kind for c in grid]
    n_settings = len(cfg.divergences) * len(cfg.temperatures)
    assert kinds.count("train") == 1
    assert kinds.count("e6.distill") == n_settings * cfg.seeds
    assert kinds.count("e6.baseline") == cfg.seeds
    assert outcome.n_cells == len(grid) == outcome.n_computed
    res = outcome.result
    assert len(res.rows()) == (n_settings + 1) * cfg.seeds
    assert {(s["divergence"], s["temperature"]) for s in res.settings} == {
        *((d, t) for d in cfg.divergences for t in cfg.temperatures), (BASELINE, None)}
    for row in res.rows():
        for m in ("accuracy", "agreement", "teacher_accuracy"):
            assert 0.0 <= row[m] <= 1.0
        assert row["kl_test"] >= 0.0
        assert all(math.isfinite(row[m]) and row[m] >= 0.0 for m in ALPHA_METRICS)
        assert row["teacher_accuracy"] == pytest.approx(res.teacher["test_accuracy"])


def test_setting_means_are_the_means_of_the_stored_cells(quick):
    cfg, outcome, _, folder = quick
    stored = _stored(cfg, folder)
    res = outcome.result
    for (d, t), results in stored.items():
        s = res.setting(d, t)
        assert s["n"] == len(results) == cfg.seeds
        for m in METRICS:
            values = [r[m] for r in results]
            assert s[m] == pytest.approx(float(np.mean(values)), abs=1e-12)
            lo, hi = s[f"{m}_ci"]
            assert lo <= s[m] + 1e-12 and s[m] <= hi + 1e-12


def test_forward_reverse_comparison_is_the_difference_of_the_means(quick):
    cfg, outcome, _, folder = quick
    stored = _stored(cfg, folder)
    res = outcome.result
    assert {(c["temperature"], c["metric"]) for c in res.comparisons} == {
        (t, m) for t in cfg.temperatures for m in ("accuracy", "agreement")}
    for c in res.comparisons:
        fwd = np.mean([r[c["metric"]] for r in stored[("forward", c["temperature"])]])
        rev = np.mean([r[c["metric"]] for r in stored[("reverse", c["temperature"])]])
        assert c["difference"] == pytest.approx(fwd - rev, abs=1e-12)
        assert c["forward"] == pytest.approx(fwd) and c["reverse"] == pytest.approx(rev)
        lo, hi = c["difference_ci"]
        assert lo <= c["difference"] + 1e-12 and c["difference"] <= hi + 1e-12
    for v in res.vs_baseline:
        base = np.mean([r[v["metric"]] for r in stored[(BASELINE, None)]])
        dist = np.mean([r[v["metric"]] for r in stored[(v["divergence"], v["temperature"])]])
        assert v["difference"] == pytest.approx(dist - base, abs=1e-12)
    n_students = (len(cfg.divergences) * len(cfg.temperatures) + 1) * cfg.seeds
    assert {(c["metric"], c["truth"]) for c in res.correlations} == {
        (m, t) for m in ALPHA_METRICS for t in ("agreement", "accuracy")}
    assert all(c["n"] == n_students for c in res.correlations)


def test_rerun_from_the_store_computes_nothing_and_gives_the_same_summary(quick, tmp_path):
    _, outcome, again, _ = quick
    assert again.n_computed == 0 and again.n_skipped == outcome.n_cells
    assert json.dumps(again.result.summary(), sort_keys=True) == json.dumps(outcome.result.summary(), sort_keys=True)
    paths = write_distill(again.result, tmp_path / "out")
    assert {p.name for p in paths.values()} == {"results.csv", "summary.json", "report.html"}
    assert all(p.exists() for p in paths.values())
    header = paths["results"].read_text().splitlines()[0]
    assert header.startswith("setting,divergence,temperature,seed,accuracy,agreement,kl_test")
    summary = json.loads(paths["summary"].read_text())
    assert summary["experiment"] == "distill" and "student" in summary["conventions"]["alpha_direction"]
    html = paths["report"].read_text()
    assert "Forward vs reverse KL" in html and "hard labels (baseline)" in html
    title, columns, rows = EXPERIMENT.summary_table(again.result)
    assert columns[0] == "setting" and len(rows) == len(again.result.settings)


@pytest.mark.parametrize("sets, field", [
    (["temperatures=[0.0, 1.0]"], "temperatures"),
    (["temperatures=[1.0, 1.0]"], "temperatures"),
    (["divergences=['sideways']"], "divergences"),
    (["divergences=[]"], "divergences"),
    (["seeds=0"], "seeds"),
    (["alpha=1.0"], "alpha"),
    (["epochs=0"], "epochs"),
    (["lr=0.0"], "lr"),
    (["n_eval=1"], "n_eval"),
    (["domain='moon'"], "domain"),
    (["teacher_arch='cnn2d'"], "teacher_arch"),
    (["student_arch='resnet'"], "student_arch"),
    (["preset='vibes'"], "preset"),
    (["num_samples=10"], "num_samples"),
    (["n_boot=5"], "n_boot"),
])
def test_bad_configs_are_refused_with_the_field(sets, field):
    with pytest.raises((ConfigError, ValueError), match=field):
        build_config(DistillConfig, sets=sets)


def test_default_config_is_valid():
    cfg = DistillConfig()
    assert cfg.temperatures == (1.0, 2.0, 4.0, 8.0) and cfg.divergences == ("forward", "reverse")
    assert "E6" in EXPERIMENT.describe(cfg)
