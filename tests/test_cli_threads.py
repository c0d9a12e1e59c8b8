"""``transferlens run --threads N``: refused below 1 before any work, applied to torch and BLAS/OpenMP for the
whole run (summary.json records it), and the caller's settings restored afterwards."""

from __future__ import annotations

import json
import subprocess
import sys
from types import SimpleNamespace

import pytest
import torch
from threadpoolctl import threadpool_info
from typer.testing import CliRunner

import transferlens.experiments
from transferlens.cli import DEFAULT_THREADS, app
from transferlens.experiments._output import environment


def _pools() -> list[tuple[str, int]]:
    return sorted((p["filepath"], p["num_threads"]) for p in threadpool_info())


@pytest.fixture
def caller_threads():
    """The caller runs torch with 2 threads (the session default here is 1), so restoring is observable.
    The thread pools the CLI touches are loaded first, so that the before/after comparison of the pools does
    not depend on which tests ran earlier."""
    import scipy.linalg  # noqa: F401 - their BLAS/OpenMP pools loaded before the comparison
    import sklearn.linear_model  # noqa: F401

    from transferlens.cli import _thread_limit

    with _thread_limit(2):
        torch.zeros(4).sum()
    old = torch.get_num_threads()
    torch.set_num_threads(2)
    yield 2
    torch.set_num_threads(old)


def _stand_ins(monkeypatch, execute):
    """Replace the runner with ``execute`` and E2's writer with one that writes environment() as summary.json."""
    import transferlens.runs.runner
    from transferlens.experiments.e2 import E2

    def writer(self, result, out_dir):
        out_dir.mkdir(parents=True, exist_ok=True)
        path = out_dir / "summary.json"
        path.write_text(json.dumps({"environment": environment()}))
        return {"summary": path}

    monkeypatch.setattr(transferlens.runs.runner, "execute", execute)
    monkeypatch.setattr(E2, "write", writer)


@pytest.fixture
def cheap_run(monkeypatch):
    """A stand-in run that records the threads in force (no cells computed)."""
    from transferlens.runs.runner import RunOutcome

    seen = {}

    def execute(exp, cfg, **kwargs):
        seen["torch"] = torch.get_num_threads()
        seen["blas"] = {n for _, n in _pools()}
        return RunOutcome(SimpleNamespace(correlations={}), "run-id", 0, 0, 0, (), 0.0)

    _stand_ins(monkeypatch, execute)
    return seen


@pytest.mark.parametrize("value", ["0", "-1"])
def test_threads_below_one_refused_before_any_work(value, tmp_path, cheap_run):
    out = tmp_path / "run"
    res = CliRunner().invoke(app, ["run", "--quick", "--threads", value, "--out", str(out)])
    assert res.exit_code == 2
    assert "--threads" in res.output and "Traceback" not in res.output
    assert not cheap_run and not out.exists()


def test_threads_not_an_integer_refused(tmp_path):
    res = CliRunner().invoke(app, ["run", "--threads", "two", "--out", str(tmp_path / "run")])
    assert res.exit_code == 2


@pytest.mark.parametrize("n", [1, 2, 3])
def test_threads_applied_recorded_and_restored(n, tmp_path, cheap_run, caller_threads):
    pools_before = _pools()
    res = CliRunner().invoke(app, ["run", "--quick", "--threads", str(n), "--out", str(tmp_path / "run")])
    assert res.exit_code == 0, res.output
    assert cheap_run["torch"] == n and cheap_run["blas"] <= {n}
    env = json.loads((tmp_path / "run" / "summary.json").read_text())["environment"]
    assert env["threads"] == n and env["blas_threads"] in (None, n)
    assert torch.get_num_threads() == caller_threads and _pools() == pools_before


def test_threads_restored_when_the_run_fails(tmp_path, monkeypatch, caller_threads):
    pools_before = _pools()

    def failing(exp, cfg, **kwargs):
        assert torch.get_num_threads() == 3
        raise RuntimeError("boom")

    _stand_ins(monkeypatch, failing)
    res = CliRunner().invoke(app, ["run", "--quick", "--threads", "3", "--out", str(tmp_path / "run")])
    assert isinstance(res.exception, RuntimeError) and str(res.exception) == "boom"
    assert torch.get_num_threads() == caller_threads and _pools() == pools_before


def test_default_is_one_thread(tmp_path, cheap_run, caller_threads):
    assert DEFAULT_THREADS == 1
    res = CliRunner().invoke(app, ["run", "--quick", "--out", str(tmp_path / "run")])
    assert res.exit_code == 0, res.output
    assert cheap_run["torch"] == 1


def test_quick_run_with_one_thread_records_it(tmp_path, caller_threads):
    out = tmp_path / "run"
    res = CliRunner().invoke(app, ["run", "--quick", "--threads", "1", "--out", str(out)])
    assert res.exit_code == 0, res.output
    env = json.loads((out / "summary.json").read_text())["environment"]
    assert env["threads"] == 1 and env["blas_threads"] in (None, 1)
    assert env["transferlens"] == transferlens.__version__
    assert torch.get_num_threads() == caller_threads


def test_limit_reaches_libraries_loaded_lazily():
    """In a fresh process scikit-learn (and its OpenMP runtime) is not loaded yet when the run starts;
    the limit must reach it anyway, since the probes run inside the block."""
    code = (
        "import json, torch\n"
        "from threadpoolctl import threadpool_info\n"
        "from transferlens.cli import _thread_limit\n"
        "torch.set_num_threads(2)\n"
        "with _thread_limit(1):\n"
        "    import sklearn.linear_model\n"
        "    inside = sorted({p['num_threads'] for p in threadpool_info()})\n"
        "    apis = sorted({p['user_api'] for p in threadpool_info()})\n"
        "print(json.dumps({'inside': inside, 'apis': apis, 'after': torch.get_num_threads()}))\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["inside"] == [1] and "openmp" in out["apis"] and "blas" in out["apis"]
    assert out["after"] == 2
