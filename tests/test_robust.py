"""E5 (robust sources) on its quick variant: cells, means and comparisons recomputed from the store, rerun."""

from __future__ import annotations

import json

import numpy as np
import pytest

from transferlens.experiments.robust import (
    EXPERIMENT, QUICK, RobustConfig, _claims, _diff_ci, _mean_ci, _train_spec, write_robust,
)
from transferlens.runs.config import ConfigError, build_config
from transferlens.runs.runner import execute
from transferlens.runs.store import Store


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    folder = tmp_path_factory.mktemp("e5")
    cfg = build_config(RobustConfig, defaults=QUICK)
    with Store(folder / "runs.db") as store:
        first = execute(EXPERIMENT, cfg, store=store)
        again = execute(EXPERIMENT, cfg, store=store)
    return cfg, first, again


def test_quick_run_measures_every_regime_seed_and_target(quick):
    cfg, first, _ = quick
    assert not first.failed
    rows = first.result.rows()
    assert {(r["regime"], r["seed"], r["target"]) for r in rows} == {
        (name, s, t) for name in cfg.regimes() for s in range(cfg.seeds) for t in cfg.target_domains
    }
    for r in rows:
        assert 0.0 <= r["robust_accuracy"] <= r["source_accuracy"] + 0.05  # PGD cannot help much
        assert 0.0 <= r["probe_accuracy"] <= 1.0 and 0.0 <= r["fine_tune_accuracy"] <= 1.0
    regimes = [json.loads(c.spec_json)["regime"]["name"] for c in EXPERIMENT.grid(cfg) if c.kind == "train"]
    assert "pgd_at" in regimes and "standard" in regimes


def test_means_and_comparisons_follow_from_the_rows(quick):
    cfg, first, _ = quick
    res = first.result
    for m in res.means:
        group = [r for r in res.rows() if r["regime"] == m["regime"] and r["target"] == m["target"]]
        assert m["probe_accuracy"] == pytest.approx(np.mean([r["probe_accuracy"] for r in group]))
        lo, hi = m["probe_accuracy_ci"]
        assert lo - 1e-12 <= m["probe_accuracy"] <= hi + 1e-12
    for c in res.comparisons:
        a = [r[c["metric"]] for r in res.rows() if r["regime"] == c["regime"] and r["target"] == c["target"]]
        b = [r[c["metric"]] for r in res.rows() if r["regime"] == c["baseline"] and r["target"] == c["target"]]
        assert c["difference"] == pytest.approx(np.mean(a) - np.mean(b))
        assert c["verdict"] == ("holds" if c["ci"][0] > 0 else "reversed" if c["ci"][1] < 0 else "inconclusive")


def test_the_bootstrap_helpers_on_known_answers():
    mean, ci = _mean_ci([1.0, 1.0, 1.0], 100, 0)
    assert mean == 1.0 and ci == [1.0, 1.0]
    d, ci = _diff_ci([2.0, 2.0], [1.0, 1.0], 100, 0)
    assert d == 1.0 and ci == [1.0, 1.0]
    _, ci = _mean_ci([0.0, 1.0], 2000, 0)
    assert ci[0] == 0.0 and ci[1] == 1.0  # all-0 and all-1 resamples happen


def test_rerun_is_identical_and_writes_outputs(quick, tmp_path):
    _, first, again = quick
    assert again.n_computed == 0
    assert json.dumps(again.result.summary()["means"]) == json.dumps(first.result.summary()["means"])
    paths = write_robust(again.result, tmp_path / "out")
    assert all(p.stat().st_size > 0 for p in paths.values())


def test_bad_configs_are_refused():
    with pytest.raises((ConfigError, ValueError), match="unknown MNIST-1D domain 'fuzzy'"):
        build_config(RobustConfig, sets=["target_domains=['fuzzy']"])
    with pytest.raises((ConfigError, ValueError), match="seeds"):
        build_config(RobustConfig, sets=["seeds=1"])
    with pytest.raises((ConfigError, ValueError), match="pgd_eps"):
        build_config(RobustConfig, sets=["pgd_eps=[-0.1]"])
    with pytest.raises((ConfigError, ValueError), match="beta"):
        build_config(RobustConfig, sets=["trades_beta=-1.0"])


def test_semi_supervised_arms_hide_the_same_labels_and_report_pseudo_labels(quick):
    cfg, first, _ = quick
    semi = {n for n, r in cfg.regimes().items() if "self_training" in r}
    assert len(semi) == 4
    rows = [r for r in first.result.rows() if r["regime"] in semi]
    n_train = int(round(cfg.num_samples * 0.8))
    assert {r["n_labeled"] for r in rows} == {round(cfg.labeled_fraction * n_train)}
    for r in rows:
        if "self_training" in r["regime"]:
            assert 0 < r["n_pseudo"] <= n_train - r["n_labeled"] and 0.0 <= r["pseudo_accuracy"] <= 1.0
        else:
            assert r["n_pseudo"] == 0 and r["pseudo_accuracy"] is None
    assert all(r["n_labeled"] is None for r in first.result.rows() if r["regime"] not in semi)


def test_the_labeled_split_depends_on_the_task_and_fraction_only(monkeypatch):
    from transferlens.experiments import _zoo

    seeds = []
    monkeypatch.setattr(_zoo, "self_train", lambda *a, seed, **k: seeds.append(seed))
    cfg = build_config(RobustConfig, defaults=QUICK)
    for replicate in (0, 1):
        for name, regime in cfg.regimes().items():
            if "self_training" in regime:
                spec = _train_spec(cfg, regime, replicate, cfg.source_domain, "source")
                _zoo._self_train(None, None, spec["task"], regime["self_training"], None, None, "cpu")
    assert len(set(seeds[:4])) == 1 and len(set(seeds[4:])) == 1 and seeds[0] != seeds[4]
    with pytest.raises(ValueError, match="labeled_fraction, threshold, rounds"):
        _zoo._self_train(None, None, {}, {"fraction": 0.2}, None, None, "cpu")


def test_complementary_needs_both_gains():
    cfg = RobustConfig(target_domains=("noisy",))
    (st, std, _), _, (both, adv, _), (_, st2, _) = cfg.comparisons()[-4:]

    def comps(v_st, v_adv, v_both):
        return [{"regime": a, "baseline": b, "target": "noisy", "metric": "probe_accuracy", "verdict": v}
                for a, b, v in ((st, std, v_st), (both, adv, v_adv), (both, st2, v_both))]

    claim = lambda *v: _claims(cfg, comps(*v))[0]  # noqa: E731
    assert claim("holds", "holds", "holds")["complementary"] == "holds"
    assert claim("holds", "holds", "inconclusive")["complementary"] == "inconclusive"
    assert claim("inconclusive", "reversed", "holds")["complementary"] == "reversed"
    assert claim("reversed", "holds", "holds")["self_training_helps"] == "reversed"
    assert _claims(RobustConfig(self_training=False), comps("holds", "holds", "holds")) == []


def test_bad_self_training_options_are_refused():
    for sets, match in ((["labeled_fraction=1.0"], "labeled_fraction"), (["self_training_threshold=0.0"], "threshold"),
                        (["self_training_rounds=0"], "self_training_rounds"), (["self_training_eps=-0.1"], "self_training_eps"),
                        (["labeled_fraction=0.01", "num_samples=400"], "fewer than 20 labeled")):
        with pytest.raises((ConfigError, ValueError), match=match):
            build_config(RobustConfig, sets=sets)
