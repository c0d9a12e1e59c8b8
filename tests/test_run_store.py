"""The runner against a store: resume skips finished cells, one changed option recomputes only what it
touches, failures and Ctrl-C are recorded, a kill -9 loses only the cell in flight, and the CLI's
outputs rebuilt from the store equal the first run's byte for byte."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from helpers import wait_for_done_cells
from toy_experiment import Toy, ToyConfig
from transferlens.cli import app
from transferlens.runs import RunInterrupted, execute
from transferlens.runs.store import Store

HERE = Path(__file__).resolve().parent


@pytest.fixture
def store(tmp_path: Path):
    with Store(tmp_path / "runs.db") as s:
        yield s


def test_rerun_skips_every_finished_cell_and_gives_the_same_result(store: Store) -> None:
    first = execute(Toy(), ToyConfig(n=4), store=store)
    toy = Toy()
    again = execute(toy, ToyConfig(n=4), store=store)
    assert toy.calls == [] and again.n_skipped == 5 and again.n_computed == 0
    assert again.result == first.result
    assert store.run(again.run_id)["status"] == "done"


def test_changing_one_option_recomputes_only_the_cells_it_touches(store: Store) -> None:
    execute(Toy(), ToyConfig(n=3), store=store)
    toy = Toy()
    out = execute(toy, ToyConfig(n=5), store=store)  # two more items; base and items 0-2 unchanged
    assert toy.calls == ["item 3", "item 4"] and out.n_skipped == 4
    toy = Toy()
    execute(toy, ToyConfig(n=5, scale=2.0), store=store)  # every spec holds the scale
    assert toy.calls == ["base"] + [f"item {i}" for i in range(5)]
    toy = Toy()
    execute(toy, ToyConfig(n=3), store=store, fresh=True)
    assert toy.calls == ["base", "item 0", "item 1", "item 2"]


def test_a_failed_cell_is_stored_with_its_error_and_computed_again_on_rerun(store: Store) -> None:
    out = execute(Toy(), ToyConfig(n=3, fail=(1,)), store=store)
    assert [label for label, _ in out.failed] == ["item 1"]
    failed = [c for c in Toy().grid(ToyConfig(n=3, fail=(1,))) if c.label == "item 1"][0]
    row = store.cell(failed.key)
    assert row["status"] == "failed" and "RuntimeError: item 1 cannot be computed" in row["error"]
    assert store.run(out.run_id)["status"] == "failed"
    toy = Toy()
    execute(toy, ToyConfig(n=3, fail=(1,)), store=store)
    assert toy.calls == ["item 1"]  # only the failed cell is tried again


def test_ctrl_c_stops_after_the_current_cell_and_the_run_resumes(store: Store, monkeypatch) -> None:
    monkeypatch.setenv("TOY_INTERRUPT_AT", "1")
    toy = Toy()
    with pytest.raises(RunInterrupted) as info:
        execute(toy, ToyConfig(n=4), store=store, graceful_interrupt=True)
    assert toy.calls == ["base", "item 0", "item 1"]  # item 1 (which got the signal) finished
    assert info.value.n_done == 3 and info.value.n_total == 5
    assert store.run(info.value.run_id)["status"] == "interrupted"
    monkeypatch.delenv("TOY_INTERRUPT_AT")
    toy = Toy()
    out = execute(toy, ToyConfig(n=4), store=store)
    assert toy.calls == ["item 2", "item 3"]
    assert out.result == execute(Toy(), ToyConfig(n=4)).result  # equal to an uninterrupted in-memory run


def test_kill_9_midway_loses_only_the_cell_in_flight(tmp_path: Path) -> None:
    db = tmp_path / "runs.db"
    n = 8
    env = {**os.environ, "TOY_DELAY": "0.3", "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, str(HERE / "toy_experiment.py"), str(db), str(n)], env=env)
    keys = [c.key for c in Toy().grid(ToyConfig(n=n))]
    try:
        done = wait_for_done_cells(db, keys, 3, proc)
        proc.kill()  # SIGKILL: no handler runs
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert 3 <= len(done) < len(keys), "the subprocess finished (or never started) before it could be killed"
    with Store(db) as s:
        survived = s.done_keys(keys)
        assert survived >= done  # nothing committed before the kill was lost
        toy = Toy()
        out = execute(toy, ToyConfig(n=n), store=s)
    assert toy.calls == [c.label for c in Toy().grid(ToyConfig(n=n)) if c.key not in survived]
    assert out.result == execute(Toy(), ToyConfig(n=n)).result


def test_cli_resume_rebuilds_identical_outputs_from_the_store(tmp_path: Path) -> None:
    runner = CliRunner()
    args = ["run", "synthetic", "--quick", "--store", str(tmp_path / "s.db")]
    first = runner.invoke(app, [*args, "--out", str(tmp_path / "a")])
    assert first.exit_code == 0, first.output
    second = runner.invoke(app, [*args, "--out", str(tmp_path / "b")])
    assert second.exit_code == 0, second.output
    assert "0 cells computed" in second.output and "6 of 6 cells were already in the store" in second.output
    for name in ("summary.json", "results.csv"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    with Store(tmp_path / "s.db") as s:
        assert [r["status"] for r in s.runs()] == ["done", "done"]


def test_cli_config_show_round_trips_through_run_config(tmp_path: Path) -> None:
    runner = CliRunner()
    shown = runner.invoke(app, ["config", "show", "synthetic", "--quick"])
    assert shown.exit_code == 0 and "n_scales = 5" in shown.output
    cfg = tmp_path / "quick.toml"
    cfg.write_text(shown.output)
    res = runner.invoke(app, ["run", "synthetic", "--config", str(cfg), "--set", "schedule=linear", "--out", str(tmp_path / "r")])
    assert res.exit_code == 0, res.output
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert summary["config"]["n_scales"] == 5 and summary["config"]["schedule"] == "linear"


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--set", "n_scalez=3"], "unknown key 'n_scalez'"),
        (["--set", "step=abc"], "step"),
        (["--set", "step=-1"], "step must be"),
        (["--eps", "0.1"], "--eps does not apply"),
    ],
)
def test_cli_refuses_bad_configs_before_any_work(tmp_path: Path, extra: list[str], message: str) -> None:
    res = CliRunner().invoke(app, ["run", "synthetic", "--quick", *extra, "--out", str(tmp_path / "r")])
    assert res.exit_code == 2 and message in res.output.replace("\n", " ")
    assert not (tmp_path / "r").exists() and not (tmp_path / "runs.db").exists()


def test_cli_refuses_an_output_path_it_cannot_use_before_any_work(tmp_path: Path) -> None:
    runner = CliRunner()
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    res = runner.invoke(app, ["run", "synthetic", "--quick", "--out", str(a_file)])
    assert res.exit_code == 2 and "is not a folder" in res.output
    full = tmp_path / "full"
    full.mkdir()
    (full / "results.csv").write_text("old")
    res = runner.invoke(app, ["run", "synthetic", "--quick", "--out", str(full)])
    assert res.exit_code == 2 and "not empty" in res.output and (full / "results.csv").read_text() == "old"
    res = runner.invoke(app, ["run", "synthetic", "--quick", "--out", str(full), "--overwrite"])
    assert res.exit_code == 0, res.output


def test_cli_refuses_a_corrupt_store_with_its_name(tmp_path: Path) -> None:
    bad = tmp_path / "runs.db"
    bad.write_text("this is not a database\n" * 50)
    res = CliRunner().invoke(app, ["run", "synthetic", "--quick", "--out", str(tmp_path / "r"), "--store", str(bad)])
    assert res.exit_code == 2, res.output
    assert "runs.db" in res.output.replace("\n", "") and isinstance(res.exception, SystemExit)
    assert not (tmp_path / "r" / "summary.json").exists()


@pytest.fixture(scope="module")
def synthetic_run(tmp_path_factory):
    """`transferlens run synthetic --quick` into a fresh store, run once for the module."""
    base = tmp_path_factory.mktemp("results")
    res = CliRunner().invoke(app, ["run", "synthetic", "--quick", "--out", str(base / "run"), "--store", str(base / "s.db")])
    assert res.exit_code == 0, res.output
    return base


def test_cli_list_show_report_and_export(synthetic_run: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    db = str(synthetic_run / "s.db")
    with Store(db) as s:
        (run,) = s.runs()
    listed = runner.invoke(app, ["list", "--store", db])
    assert listed.exit_code == 0 and run["run_id"] in listed.output and "6/6" in listed.output
    shown = runner.invoke(app, ["show", run["run_id"][:-2], "--store", db])  # a unique prefix is enough
    assert shown.exit_code == 0, shown.output
    assert "n_scales = 5" in shown.output and "alpha1_t2s" in shown.output
    # the report rebuilt from the store alone equals what the run wrote
    rebuilt = runner.invoke(app, ["report", "latest", "--store", db, "--out", str(tmp_path / "rebuilt")])
    assert rebuilt.exit_code == 0, rebuilt.output
    for name in ("summary.json", "results.csv"):
        assert (tmp_path / "rebuilt" / name).read_bytes() == (synthetic_run / "run" / name).read_bytes(), name
    assert (tmp_path / "rebuilt" / "report.html").stat().st_size > 1000
    out = tmp_path / "long.csv"
    exported = runner.invoke(app, ["export", "--store", db, "--format", "csv", "--out", str(out)])
    assert exported.exit_code == 0, exported.output
    import csv

    rows = list(csv.DictReader(out.open()))
    assert set(rows[0]) == {"run_id", "cell_key", "kind", "metric", "direction", "value"}
    refit = [r for r in rows if r["metric"] == "refit_rmse"]
    assert len(refit) == 5 and all(r["kind"] == "e1.measure" for r in refit)
    js = runner.invoke(app, ["export", "--store", db, "--format", "json", "--wide", "--out", str(tmp_path / "w.json")])
    assert js.exit_code == 0
    wide = json.loads((tmp_path / "w.json").read_text())
    assert len(wide) == 6 and "alpha1_t2s" in wide[1] and "target_rmse" in wide[0]


def test_cli_results_commands_refuse_what_they_cannot_do(synthetic_run: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    db = str(synthetic_run / "s.db")
    res = runner.invoke(app, ["show", "nope", "--store", db])
    assert res.exit_code == 2 and "nope" in res.output
    res = runner.invoke(app, ["list", "--store", str(tmp_path / "missing.db")])
    assert res.exit_code == 2 and "no results store" in res.output
    res = runner.invoke(app, ["export", "--store", db, "--format", "xlsx"])
    assert res.exit_code == 2 and "--format must be csv, json or parquet" in res.output
    import importlib.util

    if importlib.util.find_spec("pyarrow") is None:
        res = runner.invoke(app, ["export", "--store", db, "--format", "parquet", "--out", str(tmp_path / "x.parquet")])
        assert res.exit_code == 2 and "needs pyarrow" in res.output


def test_load_run_gives_a_dataframe_per_cell(synthetic_run: Path) -> None:
    pd = pytest.importorskip("pandas")
    import transferlens as tl

    df = tl.load_run(synthetic_run / "s.db")
    assert isinstance(df, pd.DataFrame) and len(df) == 6
    measured = df[df["kind"] == "e1.measure"]
    csv_rows = (synthetic_run / "run" / "results.csv").read_text().splitlines()
    header = csv_rows[0].split(",")
    first = dict(zip(header, csv_rows[1].split(",")))
    assert float(first["refit_rmse"]) == pytest.approx(measured["refit_rmse"].iloc[0], rel=1e-5)
    long = tl.load_run(synthetic_run / "s.db", wide=False)
    assert list(long.columns) == ["run_id", "cell_key", "kind", "metric", "direction", "value"]


def test_cli_seeds_at_the_ends_of_the_range(tmp_path: Path) -> None:
    """Seeds feed key-derived seeds, never arithmetic: the largest seed runs, one past it is refused."""
    runner = CliRunner()
    top = runner.invoke(app, ["run", "synthetic", "--quick", "--seed", str(2**63 - 1), "--out", str(tmp_path / "top")])
    assert top.exit_code == 0, top.output
    past = runner.invoke(app, ["run", "synthetic", "--quick", "--seed", str(2**63), "--out", str(tmp_path / "past")])
    assert past.exit_code == 2 and "seed must be an integer in [0, 2**63)" in past.output.replace("\n", " ")
    e2 = runner.invoke(app, ["run", "--seed", "-1", "--out", str(tmp_path / "neg")])
    assert e2.exit_code == 2 and "seed" in e2.output


@pytest.mark.filterwarnings("ignore::transferlens.TrainingWarning")
def test_e2_with_another_preset_reuses_every_trained_model(store: Store) -> None:
    """Trained models are cells too: a second study on the same sources measures again, never retrains."""
    from transferlens.experiments.e2 import EXPERIMENT, E2Config
    from transferlens.training import TrainConfig

    tiny = dict(source_domains=("reference", "shuffled"), architectures=("mlp", "cnn1d"), num_samples=300, n_eval=60,
                n_boot=50, train=TrainConfig(epochs=3, patience=2), device="cpu")
    first = execute(EXPERIMENT, E2Config(**tiny), store=store)
    assert first.n_computed == 9  # the target, 4 sources, 4 measurements
    paper = execute(EXPERIMENT, E2Config(preset="paper", **tiny), store=store)
    assert paper.n_skipped == 5 and paper.n_computed == 4  # only the measurements
    # the models a measurement reads back from the store are the ones that were trained
    assert [r["source_accuracy"] for r in paper.result.rows()] == [r["source_accuracy"] for r in first.result.rows()]
    again = execute(EXPERIMENT, E2Config(preset="paper", **tiny))  # everything in memory
    for a, b in zip(again.result.rows(), paper.result.rows()):
        assert a == b
