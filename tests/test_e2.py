"""End-to-end tests of the default experiment (E2) and the command line, on a reduced zoo."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
from scipy import stats
from typer.testing import CliRunner

import transferlens.experiments
import transferlens.runs.runner
from transferlens.cli import app
from transferlens.experiments.e2 import QUICK
from transferlens.experiments import E2Config, run_e2, write_e2
from transferlens.experiments.e2 import METRICS
from transferlens.training import TrainConfig

TINY = dict(
    source_domains=("reference", "shuffled"),
    architectures=("mlp", "cnn1d"),
    num_samples=300,
    n_eval=60,
    n_boot=50,
    train=TrainConfig(epochs=3, patience=2),
    device="cpu",  # same seed, same numbers is a CPU guarantee: GPU kernels may round differently run to run
)


@pytest.fixture(scope="module")
def tiny_result():
    return run_e2(E2Config(**TINY))


QUICK_SEED = 1  # not the default seed, so that the CLI test also shows --seed is passed on


@pytest.fixture(scope="module")
def quick_cli(tmp_path_factory):
    """`transferlens run --quick --seed 1`, run once for the module; the E2Result is captured on the way."""
    out = tmp_path_factory.mktemp("quick") / "run"
    captured = []
    real = transferlens.runs.runner.execute

    def spy(exp, cfg, **kwargs):
        outcome = real(exp, cfg, **kwargs)
        captured.append(outcome.result)
        return outcome

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(transferlens.runs.runner, "execute", spy)
        result = CliRunner().invoke(app, ["run", "--quick", "--out", str(out), "--seed", str(QUICK_SEED)])
    assert len(captured) == 1, result.output
    return result, out, captured[0]


def test_run_produces_every_source_and_metric(tiny_result):
    assert len(tiny_result.sources) == 4
    assert {s.name for s in tiny_result.sources} == {"mlp@reference", "cnn1d@reference", "mlp@shuffled", "cnn1d@shuffled"}
    for row in tiny_result.rows():
        for m in METRICS:
            assert 0.0 <= row[m] < 10.0
        assert 0.0 <= row["probe_accuracy"] <= 1.0
        assert row["n_used_t2s"] == 60


def test_outputs_have_the_documented_schema(tiny_result, tmp_path):
    paths = write_e2(tiny_result, tmp_path)
    summary = json.loads(paths["summary"].read_text())
    assert summary["experiment"] == "E2"
    assert set(summary["correlations"]) == set(METRICS)
    for m in METRICS:
        c = summary["correlations"][m]
        for key in ("pearson", "spearman", "kendall", "spearman_ci"):
            assert key in c
    assert summary["config"]["seed"] == 0 and summary["config"]["threat"]["norm"] == "l2"
    rows = list(csv.DictReader(paths["results"].open()))
    assert len(rows) == 4
    for col in ("domain", "architecture", "source_accuracy", "alpha1_t2s", "alpha1_s2t", "fooling_rate_t2s", "probe_accuracy", "probe_loss", "last_layer_accuracy", "last_layer_loss"):
        assert col in rows[0]
    html = paths["report"].read_text()
    assert html.count("<svg") == len(METRICS) + 1 + 1 + 2  # metric scatters + baseline scatter, heat map, histograms
    assert "http://" not in html and "https://" not in html


def test_same_seed_reproduces_summary_exactly(tiny_result, tmp_path):
    again = run_e2(E2Config(**TINY))
    a = write_e2(tiny_result, tmp_path / "a")["summary"].read_bytes()
    b = write_e2(again, tmp_path / "b")["summary"].read_bytes()
    assert a == b


def test_another_seed_changes_the_numbers(tiny_result):
    other = run_e2(E2Config(**{**TINY, "seed": 1}))
    assert other.rows()[0]["alpha1_t2s"] != tiny_result.rows()[0]["alpha1_t2s"]


def test_progress_is_reported():
    """One call per cell (target, then a training and a measurement per source), then the analysis."""
    calls = []
    run_e2(E2Config(**{**TINY, "source_domains": ("reference", "noisy", "shuffled"), "architectures": ("mlp",)}), lambda *a: calls.append(a))
    assert calls[0][1] == 0 and calls[-1][1] == calls[-1][2] == 7
    assert [c[1] for c in calls[:7]] == list(range(7))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"source_domains": ("nowhere",)}, "unknown MNIST-1D domain"),
        ({"architectures": ("cnn2d",)}, "does not fit MNIST-1D"),
        ({"preset": "magic"}, "unknown preset"),
        ({"source_domains": ("reference",), "architectures": ("mlp",)}, "at least 3 sources"),
        ({"n_eval": 2}, "n_eval"),
        ({"architectures": ("mlp", "cnn1d", "mlp")}, "architectures lists 'mlp' twice"),
        ({"source_domains": ("noisy", "noisy")}, "source_domains lists 'noisy' twice"),
    ],
)
def test_config_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        E2Config(**kwargs)


def test_cli_quick_run_writes_outputs(quick_cli):
    result, out, e2 = quick_cli
    assert result.exit_code == 0, result.output
    assert "alpha1_t2s" in result.output and "report" in result.output
    for name in ("results.csv", "summary.json", "report.html"):
        assert (out / name).is_file()
    assert e2.config == E2Config(seed=QUICK_SEED, **QUICK)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["config"]["seed"] == QUICK_SEED
    assert summary["correlations"]["alpha1_t2s"]["spearman"] == pytest.approx(e2.correlations["alpha1_t2s"].spearman)


def test_quick_headline_alpha1_t2s_ranks_sources_like_probe_accuracy(quick_cli):
    # The finding E2 exists to show: sources whose features transfer better (higher linear-probe accuracy
    # on the target) are also more adversarially transferable. On the quick config it is ~0.71 (seeds 0
    # and 1; six sources, so it moves in steps of ~0.06 and differs between seeds: 0.49 for seed 3).
    _, _, e2 = quick_cli
    alpha1 = [s.transfer.t2s.alpha1 for s in e2.sources]
    probe = [s.probe.accuracy for s in e2.sources]
    rho = stats.spearmanr(alpha1, probe).statistic
    assert rho > 0.4, (alpha1, probe)
    assert e2.correlations["alpha1_t2s"].spearman == pytest.approx(rho, abs=1e-12)
    assert [r["alpha1_t2s"] for r in e2.rows()] == alpha1
    assert [r["probe_accuracy"] for r in e2.rows()] == probe


def test_quick_per_sample_contract(quick_cli):
    _, _, e2 = quick_cli
    n_eval = QUICK["n_eval"]
    assert e2.target["n_eval"] == n_eval
    assert len(e2.sources) == len(QUICK["source_domains"]) * len(QUICK["architectures"])
    for source, row in zip(e2.sources, e2.rows()):
        assert row["source"] == source.name
        for d in ("t2s", "s2t"):
            r = getattr(source.transfer, d)
            samples, used = np.asarray(r.alpha1_samples), np.asarray(r.used_index)
            assert r.n_used == len(samples) == len(used), (source.name, d)
            assert r.n_used + r.n_filtered + r.n_degenerate == n_eval, (source.name, d)
            assert r.n_filtered == 0  # the theory preset keeps every sample
            assert np.isfinite(samples).all() and (samples > 0).all(), (source.name, d)
            assert r.alpha1 == pytest.approx(math.fsum(samples) / len(samples), rel=1e-12, abs=0), (source.name, d)
            assert r.alpha1_median == pytest.approx(float(np.median(samples)), rel=1e-12, abs=0)
            assert ((0 <= used) & (used < n_eval)).all() and (np.diff(used) > 0).all()
            assert row[f"n_used_{d}"] == r.n_used


def test_cli_rejects_bad_input(tmp_path):
    runner = CliRunner()
    bad = runner.invoke(app, ["run", "nonsense", "--out", str(tmp_path)])
    assert bad.exit_code == 2 and "unknown experiment" in bad.output
    bad = runner.invoke(app, ["run", "--preset", "magic", "--out", str(tmp_path)])
    assert bad.exit_code == 2 and "unknown preset" in bad.output
    assert runner.invoke(app, ["--version"]).output.startswith("transferlens ")
    bad = runner.invoke(app, ["run", "--device", "tpu-9000", "--out", str(tmp_path)])
    assert bad.exit_code == 2 and "unknown device" in bad.output


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"eps": -1.0}, "eps"),
        ({"steps": 0}, "steps"),
        ({"norm": "l1"}, "norm"),
        ({"n_boot": 0}, "n_boot"),
        ({"probe_C": -1.0}, "C"),
        ({"num_samples": 10}, "num_samples"),
        ({"device": "tpu-9000"}, "unknown device"),
    ],
)
def test_bad_config_fails_before_any_training(kwargs, match):
    with pytest.raises(ValueError, match=match):
        E2Config(**kwargs)


def test_threat_overrides_keep_the_preset_protocol():
    paper = E2Config(preset="paper")
    assert paper.threat.steps == 1 and paper.threat.step == paper.threat.eps
    bigger = E2Config(preset="paper", eps=0.2)
    assert bigger.threat.steps == 1 and bigger.threat.step == pytest.approx(0.2)
    pgd10 = E2Config(preset="paper", steps=10)
    assert pgd10.threat.step == pytest.approx(2.5 * 0.1 / 10)


def test_cli_bad_eps_is_a_message_not_a_traceback(tmp_path):
    res = CliRunner().invoke(app, ["run", "--eps", "-1", "--out", str(tmp_path)])
    assert res.exit_code == 2 and "eps must be" in res.output


def test_extra_transfer_methods_are_ground_truths_too(tmp_path):
    """E2 with ``transfer_methods=("knn",)`` reuses every stored cell, adds one kNN transfer per source, and
    correlates the metrics with kNN accuracy exactly as with probe accuracy."""
    from transferlens.evaluation import correlate
    from transferlens.experiments.e2 import EXPERIMENT, METRICS
    from transferlens.runs.runner import execute
    from transferlens.runs.store import Store

    with Store(tmp_path / "runs.db") as store:
        plain = execute(EXPERIMENT, E2Config(**TINY), store=store)
        extra = execute(EXPERIMENT, E2Config(**TINY, transfer_methods=("knn",)), store=store)
    assert "transfer_methods" not in plain.result.summary()["config"]
    assert extra.n_computed == len(plain.result.rows()) and not extra.failed
    assert extra.result.summary()["correlations"] == plain.result.summary()["correlations"]
    rows = extra.result.rows()
    assert all(0.0 <= r["knn_accuracy"] <= 1.0 for r in rows)
    corr = extra.result.correlations_by_method["knn"]
    want = correlate([r["alpha1_t2s"] for r in rows], [r["knn_accuracy"] for r in rows], n_boot=TINY["n_boot"], seed=0)
    assert corr["alpha1_t2s"] == want and set(corr) == set(METRICS)
    assert set(extra.result.summary()["correlations_transfer_methods"]) == {"knn"}


@pytest.mark.parametrize("methods, match", [
    (("linear_probe",), "always measured"), (("vibes",), "unknown method 'vibes'"), (("knn", "knn"), "twice"),
])
def test_bad_transfer_methods_are_refused(methods, match):
    with pytest.raises(ValueError, match=match):
        E2Config(**TINY, transfer_methods=methods)
