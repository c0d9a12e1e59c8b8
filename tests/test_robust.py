"""E5 (robust sources) on its quick variant: cells, means and comparisons recomputed from the store, rerun."""

from __future__ import annotations

import json

import numpy as np
import pytest

from transferlens.experiments.robust import EXPERIMENT, QUICK, RobustConfig, _diff_ci, _mean_ci, write_robust
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
        b = [r[c["metric"]] for r in res.rows() if r["regime"] == "standard" and r["target"] == c["target"]]
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
