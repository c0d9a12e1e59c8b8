"""E4, the selection benchmark, on its quick variant: the grid, the judged statistics recomputed by hand, the
half-sample replicates re-derived from the stored arrays, and a rerun from the store."""

from __future__ import annotations

import json

import numpy as np
import pytest

from transferlens.estimators import score
from transferlens.evaluation import spearman, weighted_tau
from transferlens.experiments import _zoo
from transferlens.experiments.selection import (
    ALPHA_METRICS, EXPERIMENT, GROUND_TRUTHS, QUICK, SelectionConfig, _half_indices, _task_spec, write_selection,
)
from transferlens.runs.config import ConfigError, build_config
from transferlens.runs.context import Context
from transferlens.runs.runner import execute
from transferlens.runs.store import Store


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    folder = tmp_path_factory.mktemp("e4")
    cfg = build_config(SelectionConfig, defaults=QUICK)
    with Store(folder / "runs.db") as store:
        outcome = execute(EXPERIMENT, cfg, store=store)
        again = execute(EXPERIMENT, cfg, store=store)
    return cfg, outcome, again, folder


def test_quick_run_judges_every_predictor_on_every_target_and_ground_truth(quick):
    cfg, outcome, _, _ = quick
    res = outcome.result
    assert not outcome.failed
    targets = [t["name"] for t in res.targets]
    assert targets == ["mnist1d:noisy", "digits:rotate"]
    for t in targets:
        kinds = [c["kind"] for c in res.candidates[t]]
        assert kinds.count("trained") == 2 and "untrained" in kinds and "shuffled-labels" in kinds
    combos = {(j["target"], j["ground_truth"], j["predictor"]) for j in res.judged}
    assert combos == {(t, g, p) for t in targets for g in GROUND_TRUTHS for p in cfg.predictors()}
    for j in res.judged:
        for s in ("pearson", "spearman", "kendall", "weighted_tau"):
            assert j[s] is None or -1.0 <= j[s] <= 1.0
        assert j["relative_top1"] is None or j["relative_top1"] <= 1.0
    assert set(ALPHA_METRICS) <= set(cfg.predictors())


def test_statistics_recomputed_from_the_candidate_table(quick):
    _, outcome, _, _ = quick
    res = outcome.result
    for t, rows in res.candidates.items():
        truth = [r["linear_probe_accuracy"] for r in rows]
        for p, sign in (("logme", 1.0), ("nc1", -1.0), ("alpha1_t2s", 1.0)):
            scores = [sign * r[p] for r in rows]
            j = next(j for j in res.judged if j["target"] == t and j["ground_truth"] == "linear_probe" and j["predictor"] == p)
            assert j["spearman"] == pytest.approx(spearman(scores, truth))
            assert j["weighted_tau"] == pytest.approx(weighted_tau(scores, truth))


def test_half_sample_replicates_rescore_a_half_of_the_target(quick):
    cfg, outcome, _, folder = quick
    rows = outcome.result.candidates["digits:rotate"]
    with Store(folder / "runs.db", readonly=True) as store:
        ctx = Context(store)
        cell = next(c for c in EXPERIMENT.grid(cfg) if c.kind == "e4.score" and c.spec["estimator"] == "logme"
                    and c.label.startswith("logme mlp@none") and c.label.endswith("digits:rotate"))
        features = ctx.array(cell.spec["extract"], "features")
        labels = _zoo.task(ctx, cell.spec["target"]).y_train.numpy()
        halves = _half_indices(len(labels), cell.spec["halves"], "train")
        assert halves.shape == (cfg.half_samples, len(labels) // 2)
        assert all(len(set(h)) == len(h) for h in halves)  # without replacement
        stored = ctx.array(cell.key, "halves")
        assert stored == pytest.approx([score("logme", features=features[h], labels=labels[h]) for h in halves], rel=1e-12)
        assert ctx.results(cell.key)["logme"] == pytest.approx(next(r["logme"] for r in rows if r["candidate"] == "mlp@none#0"))
        truth = next(c for c in EXPERIMENT.grid(cfg) if c.kind == "e4.truth" and c.label == "fine_tune mlp@none#0 -> digits:rotate")
        correct = ctx.array(truth.key, "test_correct")
        assert correct.mean() == pytest.approx(ctx.results(truth.key)["accuracy"])
    target = _task_spec(cfg, "digits", "rotate", "target")
    assert cell.spec["target"] == target


def test_rerun_from_the_store_computes_nothing_and_gives_the_same_judgement(quick, tmp_path):
    _, outcome, again, _ = quick
    assert again.n_computed == 0 and again.n_skipped == outcome.n_cells
    assert json.dumps(again.result.judged, sort_keys=True) == json.dumps(outcome.result.judged, sort_keys=True)
    paths = write_selection(again.result, tmp_path / "out")
    summary = json.loads(paths["summary"].read_text())
    assert summary["n_candidates"] == {"mnist1d:noisy": 4, "digits:rotate": 4}
    header = paths["results"].read_text().splitlines()[0]
    assert header.startswith("target,ground_truth,predictor,n,pearson,pearson_lo,pearson_hi")


def test_bad_configs_are_refused_with_the_key():
    with pytest.raises((ConfigError, ValueError), match="unknown digits transform 'twist'"):
        build_config(SelectionConfig, sets=["digits_targets=['twist']"])
    with pytest.raises((ConfigError, ValueError), match="does not fit MNIST-1D"):
        build_config(SelectionConfig, sets=["mnist1d_archs=['cnn2d']"])
    with pytest.raises((ConfigError, ValueError), match="unknown ground truth"):
        build_config(SelectionConfig, sets=["ground_truths=['vibes']"])
    with pytest.raises((ConfigError, ValueError), match="half_samples"):
        build_config(SelectionConfig, sets=["half_samples=1"])
    with pytest.raises((ConfigError, ValueError), match="no target task"):
        build_config(SelectionConfig, sets=["mnist1d_targets=[]", "digits_targets=[]"])
    assert np.isfinite(build_config(SelectionConfig).digits_strength)


def test_the_readme_table_is_generated_from_the_summary(quick, tmp_path):
    import importlib.util
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    spec = importlib.util.spec_from_file_location("readme_figures_e4", root / "tools" / "readme_figures.py")
    tool = importlib.util.module_from_spec(spec)
    sys.modules["readme_figures_e4"] = tool
    spec.loader.exec_module(tool)
    _, outcome, _, _ = quick
    paths = write_selection(outcome.result, tmp_path / "run")
    block = tool.build_blocks({"e4": tmp_path / "run"})["e4-selection"]
    j = next(j for j in outcome.result.judged if j["target"] == "digits:rotate" and j["ground_truth"] == "linear_probe"
             and j["predictor"] == "logme")
    line = next(li for li in block.splitlines() if li.startswith("| logme |"))
    assert f"{j['weighted_tau']:.3f}" in line
    assert "Candidates per target: mnist1d:noisy: 4, digits:rotate: 4" in block
    assert paths["report"].stat().st_size > 0


def test_any_registered_transfer_method_is_a_ground_truth(quick):
    """A rerun with ground truths ``linear_probe`` and ``knn`` reuses every stored cell but the new kNN
    transfers, judges the probe exactly as before, and judges kNN on the zoo too."""
    cfg, outcome, _, folder = quick
    cfg2 = build_config(SelectionConfig, defaults=QUICK, sets=["ground_truths=['linear_probe', 'knn']"])
    with Store(folder / "runs.db") as store:
        second = execute(EXPERIMENT, cfg2, store=store)
    n_candidates = sum(len(c) for c in outcome.result.candidates.values())
    assert not second.failed and second.n_computed == n_candidates  # one kNN transfer per candidate and target
    key = lambda j: (j["target"], j["predictor"])  # noqa: E731
    probe = {key(j): j for j in outcome.result.judged if j["ground_truth"] == "linear_probe"}
    assert {key(j): j for j in second.result.judged if j["ground_truth"] == "linear_probe"} == probe
    knn = [j for j in second.result.judged if j["ground_truth"] == "knn"]
    assert {key(j) for j in knn} == set(probe)
