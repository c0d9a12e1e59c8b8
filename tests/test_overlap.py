"""E3, the class-overlap study: the class subsets, the task restriction in ``_zoo`` (and that specs without it
are untouched), the quick run's analysis recomputed from the stored cells, a rerun from the store, and the
config checks."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch

from transferlens.data.mnist1d import mnist1d_task
from transferlens.evaluation import correlate, spearman
from transferlens.experiments import _zoo, get_experiment
from transferlens.experiments.overlap import (
    ALPHA_METRICS, EXPERIMENT, METRICS, NUM_CLASSES, QUICK, OverlapConfig, _verdict, claim, mean_ci, overlap_of,
    source_classes, target_classes, write_overlap,
)
from transferlens.runs.config import ConfigError, build_config
from transferlens.runs.context import Context
from transferlens.runs.runner import execute
from transferlens.runs.spec import derive_seed
from transferlens.runs.store import Store


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    folder = tmp_path_factory.mktemp("e3")
    cfg = build_config(OverlapConfig, defaults=QUICK)
    with Store(folder / "runs.db") as store:
        outcome = execute(EXPERIMENT, cfg, store=store)
        again = execute(EXPERIMENT, cfg, store=store)
    return cfg, outcome, again, folder


def _sources(cfg):
    """(source train spec, train cell, measure cell) of every source in the grid."""
    grid = EXPERIMENT.grid(cfg)
    by_key = {c.key: c for c in grid}
    return [(c.spec["source"], by_key[c.deps[0]], c) for c in grid if c.kind == "e3.measure"]


# ----------------------------------------------------------------------------------------------- classes


def test_every_source_shares_exactly_overlap_times_k_classes_with_the_target():
    cfg = OverlapConfig()
    t = target_classes(cfg)
    assert len(t) == cfg.k == 4 and len(set(t)) == 4 and all(0 <= c < NUM_CLASSES for c in t)
    grid = EXPERIMENT.grid(cfg)
    assert grid[0].spec["task"]["classes"] == t  # the reference is trained on T
    seen = []
    for o in cfg.overlaps:
        for r in range(cfg.seeds):
            s = source_classes(cfg, o, r)
            assert len(s) == cfg.k and len(set(s)) == cfg.k and s == sorted(s)
            assert len(set(s) & set(t)) == round(o * cfg.k)
            assert overlap_of(s, t) == o
            assert source_classes(cfg, o, r) == s  # deterministic
            seen.append(s)
    sources = _sources(cfg)
    assert len(sources) == len(cfg.overlaps) * cfg.seeds
    assert sorted(map(tuple, seen)) == sorted(tuple(spec["task"]["classes"]) for spec, _, _ in sources)
    for spec, train, measure in sources:
        s = spec["task"]["classes"]
        assert train.spec == spec and measure.spec["target"]["classes"] == t
        assert len(set(s) & set(t)) / cfg.k in cfg.overlaps
    # explicit target classes are used as given; another seed draws other source classes
    fixed = OverlapConfig(target_classes=(3, 1, 0, 2))
    assert target_classes(fixed) == [0, 1, 2, 3]
    other = OverlapConfig(seed=1)
    assert [source_classes(other, 0.5, r) for r in range(3)] != [source_classes(cfg, 0.5, r) for r in range(3)]


def test_a_restricted_task_holds_exactly_its_classes_with_their_original_ids():
    cfg = build_config(OverlapConfig, defaults=QUICK)
    ctx = Context()
    for spec, _, _ in _sources(cfg):
        s = spec["task"]["classes"]
        t = _zoo.task(ctx, spec["task"])
        assert t.num_classes == 10
        assert sorted(t.y_train.unique().tolist()) == s
        assert sorted(t.y_test.unique().tolist()) == s
        assert t.meta["classes"] == s
    # the restriction is a subset of the unrestricted draw (same generator seed: "classes" is not in it)
    spec = _sources(cfg)[0][0]["task"]
    full_spec = {k: v for k, v in spec.items() if k != "classes"}
    full, part = _zoo.task(ctx, full_spec), _zoo.task(ctx, spec)
    keep = torch.isin(full.y_train, torch.tensor(spec["classes"]))
    assert torch.equal(part.x_train, full.x_train[keep]) and torch.equal(part.y_train, full.y_train[keep])
    keep = torch.isin(full.y_test, torch.tensor(spec["classes"]))
    assert torch.equal(part.x_test, full.x_test[keep]) and torch.equal(part.y_test, full.y_test[keep])
    with pytest.raises(ValueError, match="class 12 does not exist"):
        _zoo.task(ctx, {**full_spec, "classes": [0, 12]})


def test_a_task_spec_without_classes_generates_the_same_task_as_before():
    """E2's tasks: ``_zoo.task`` still calls ``mnist1d_task`` with the seed of the whole spec."""
    from transferlens.experiments.e2 import E2Config, _task_spec

    cfg = E2Config(num_samples=500)
    ctx = Context()
    for draw in ("target", "source"):
        spec = _task_spec(cfg, "noisy", draw)
        got = _zoo.task(ctx, spec)
        want = mnist1d_task("noisy", seed=derive_seed(spec, "data"), num_samples=500)
        for name in ("x_train", "y_train", "x_test", "y_test"):
            assert torch.equal(getattr(got, name), getattr(want, name)), name
        assert got.name == want.name and got.num_classes == 10 and "classes" not in got.meta
    shuffled = _zoo.task(ctx, {**spec, "labels": "shuffled"})
    assert torch.equal(shuffled.x_train, want.x_train) and not torch.equal(shuffled.y_train, want.y_train)


# ----------------------------------------------------------------------------------------------- the quick run


def test_quick_run_computes_every_cell(quick):
    cfg, outcome, _, _ = quick
    assert get_experiment("e3") is EXPERIMENT and get_experiment("overlap") is EXPERIMENT
    assert not outcome.failed and outcome.n_computed == outcome.n_cells == 1 + 2 * len(cfg.overlaps) * cfg.seeds
    res = outcome.result
    assert not res.failed_cells
    assert [lv["overlap"] for lv in res.levels] == [0.0, 0.5, 1.0]
    assert res.target["classes"] == target_classes(cfg)
    assert len(res.sources) == len(cfg.overlaps) * cfg.seeds
    for r in res.sources:
        assert r["overlap"] == len(set(r["source_classes"]) & set(r["target_classes"])) / cfg.k
        assert 0.0 <= r["probe_accuracy"] <= 1.0 and 0.0 <= r["last_layer_accuracy"] <= 1.0
        assert all(np.isfinite(r[m]) for m in ALPHA_METRICS)
    # a source with no target class never predicts one: its accuracy on the target's inputs is 0
    assert all(r["source_accuracy_on_target"] == 0.0 for r in res.sources if r["overlap"] == 0.0)


def test_level_means_and_spearman_recomputed_from_the_stored_cells(quick):
    cfg, outcome, _, folder = quick
    res = outcome.result
    with Store(folder / "runs.db", readonly=True) as store:
        ctx = Context(store)
        stored = []
        for spec, train, measure in _sources(cfg):
            r = dict(ctx.results(measure.key))
            r["source_accuracy"] = ctx.results(train.key)["test_accuracy"]
            r["overlap"] = overlap_of(spec["task"]["classes"], target_classes(cfg))
            stored.append(r)
    for lv in res.levels:
        group = [r for r in stored if r["overlap"] == lv["overlap"]]
        assert lv["n"] == len(group) == cfg.seeds
        for m in METRICS:
            assert lv[m] == pytest.approx(np.mean([r[m] for r in group]), rel=1e-12)
    overlaps = [r["overlap"] for r in stored]
    for m in METRICS:
        values = [r[m] for r in stored]
        want = spearman(values, overlaps)
        if want is None:
            assert m not in res.correlations or res.correlations[m].spearman is None
        else:
            assert res.correlations[m].spearman == pytest.approx(want)
    probe = [r["probe_accuracy"] for r in stored]
    for m in ALPHA_METRICS:
        assert res.correlations_probe[m].spearman == pytest.approx(spearman([r[m] for r in stored], probe))
    # 3 sources: never a verdict other than inconclusive (or undefined)
    assert set(res.verdicts.values()) <= {"inconclusive", "undefined"}


def test_rerun_from_the_store_computes_nothing_and_gives_the_same_summary(quick, tmp_path):
    _, outcome, again, _ = quick
    assert again.n_computed == 0 and again.n_skipped == outcome.n_cells
    assert json.dumps(again.result.summary(), sort_keys=True) == json.dumps(outcome.result.summary(), sort_keys=True)
    paths = write_overlap(again.result, tmp_path / "out")
    assert set(EXPERIMENT.write(again.result, tmp_path / "out2")) == {"results", "summary", "report"}
    summary = json.loads(paths["summary"].read_text())
    assert summary["experiment"] == "overlap" and summary["overlap_definition"].startswith("overlap = |S ∩ T| / |T|")
    assert summary["n_sources"] == 3 and len(summary["levels"]) == 3
    assert set(summary["correlations_with_overlap"]) <= set(METRICS) and "claim" in summary
    with paths["results"].open() as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 3 and rows[0]["overlap"] == "0"
    assert len(rows[0]["source_classes"].split()) == 4
    html = paths["report"].read_text()
    assert "Does probe_accuracy rise with overlap?" in html and "<svg" in html
    title, cols, body = EXPERIMENT.summary_table(again.result)
    assert len(body) == 3 and len(body[0]) == len(cols) and "target classes" in title


# ----------------------------------------------------------------------------------------------- analysis pieces


def test_mean_interval_is_a_percentile_bootstrap_over_the_seeds():
    values = [0.5, 0.7, 0.9]
    mean, ci = mean_ci(values, 500, 7)
    boots = np.asarray(values)[np.random.default_rng(7).integers(0, 3, size=(500, 3))].mean(axis=1)
    assert mean == pytest.approx(0.7) and ci == pytest.approx(list(np.percentile(boots, [2.5, 97.5])))
    assert mean_ci([0.4], 500, 7) == (0.4, None)


def test_verdicts_need_an_interval_clear_of_zero_and_five_sources():
    x = [0, 0, 0.5, 0.5, 1, 1]
    assert _verdict(correlate([0.1, 0.2, 0.3, 0.4, 0.5, 0.6], x)) == "rises"
    assert _verdict(correlate([0.6, 0.5, 0.4, 0.3, 0.2, 0.1], x)) == "falls"
    assert _verdict(correlate([0.1, 0.2, 0.3], [0, 0.5, 1])) == "inconclusive"  # 3 sources
    assert _verdict(None) == "undefined"
    assert claim({"probe_accuracy": "rises", "alpha1_s2t": "rises", "alpha1_t2s": "rises", "combined_s2t": "rises",
                  "combined_t2s": "rises"})["verdict"] == "holds"
    assert claim({"probe_accuracy": "rises", "alpha1_s2t": "rises"})["verdict"] == "partly"
    assert claim({"probe_accuracy": "inconclusive", "alpha1_s2t": "rises"})["verdict"] == "not shown"


# ----------------------------------------------------------------------------------------------- config


@pytest.mark.parametrize("sets, message", [
    (["overlaps=[0.0, 0.3, 1.0]"], r"overlaps: 0.3 is not achievable with k = 4"),
    (["k=11"], r"k = 11 target classes, but MNIST-1D has only 10"),
    (["target_classes=[0, 1, 2, 12]"], r"target_classes: class 12 does not exist"),
    (["overlaps=[0.0, 1.5]"], r"overlaps: 1.5 is outside \[0, 1\]"),
    (["k=6", "overlaps=[0.0, 0.5, 1.0]"], r"overlaps: 0 needs 6 source classes outside the 6 target classes"),
    (["target_classes=[0, 1, 2]"], r"target_classes has 3 classes but k = 4"),
    (["overlaps=[1.0]"], r"overlaps needs at least 2 levels"),
    (["arch='cnn2d'"], r"arch 'cnn2d' does not fit MNIST-1D"),
])
def test_bad_configs_are_refused_with_the_field_named(sets, message):
    with pytest.raises((ConfigError, ValueError), match=message):
        build_config(OverlapConfig, sets=sets)


def test_quick_and_default_configs_build():
    quick = build_config(OverlapConfig, defaults=QUICK)
    assert quick.overlaps == (0.0, 0.5, 1.0) and quick.seeds == 1 and quick.train.epochs == 3
    default = OverlapConfig()
    assert default.overlaps == (0.0, 0.25, 0.5, 0.75, 1.0) and default.seeds == 5 and default.k == 4
    assert OverlapConfig(k=5, overlaps=(0.0, 0.2, 1.0)).overlaps == (0.0, 0.2, 1.0)
    assert OverlapConfig(overlaps=(1, 0, 0.5)).overlaps == (0.0, 0.5, 1.0)


def test_a_second_seed_adds_only_its_cells_and_the_level_means_average_both(quick):
    cfg, outcome, _, folder = quick
    two = build_config(OverlapConfig, defaults=QUICK, sets=["seeds=2"])
    with Store(folder / "runs.db") as store:
        out = execute(EXPERIMENT, two, store=store)
        ctx = Context(store)
        assert not out.failed and out.n_skipped == outcome.n_cells and out.n_computed == 2 * len(two.overlaps)
        for lv in out.result.levels:
            group = [(spec, train, m) for spec, train, m in _sources(two)
                     if overlap_of(spec["task"]["classes"], target_classes(two)) == lv["overlap"]]
            assert lv["n"] == len(group) == 2
            for m in ("probe_accuracy", "alpha1_s2t"):
                values = [ctx.results(meas.key)[m] for _, _, meas in group]
                assert lv[m] == pytest.approx(np.mean(values), rel=1e-12)
                assert lv[f"{m}_ci"] == pytest.approx(mean_ci(values, two.n_boot, two.seed)[1])
            acc = [ctx.results(train.key)["test_accuracy"] for _, train, _ in group]
            assert lv["source_accuracy"] == pytest.approx(np.mean(acc), rel=1e-12)
