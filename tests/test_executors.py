"""Executors: the same numbers from serial, a process pool and Ray; dependencies first; one writer (the
driver); a cell that raises or a worker that dies is recorded and the run goes on; a killed driver loses
nothing finished; options are checked before any work."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from helpers import wait_for_done_cells
from toy_experiment import Toy, ToyConfig
from transferlens import allocator
from transferlens.cli import app
from transferlens.experiments import get_experiment
from transferlens.experiments.base import REGISTRY, Experiment, register
from transferlens.runs import Cell, CellOutput, Context, execute
from transferlens.runs.config import build_config
from transferlens.runs.executors import (
    RAY_INSTALL, WORKER_DIED, ExecutorError, ProcessExecutor, RayExecutor, SerialExecutor, make_executor,
)
from transferlens.runs.store import Store

HERE = Path(__file__).resolve().parent
NO_RAY = "Ray is not installed (pip install 'transferlens[ray]'; make test installs it)"
try:
    import ray
except ImportError:  # the ray tests are skipped with NO_RAY
    ray = None


# ------------------------------------------------------------------------- a test-only experiment


@dataclass(frozen=True)
class ChainConfig:
    """``first`` -> ``risky`` (``mode``: ok, raise, die-once, die) -> ``after``, and an independent ``free``.
    ``marker``: a file that ``die-once`` creates before it kills its worker, so that it dies once only."""

    mode: str = "ok"
    marker: str = ""


def _step(cell: Cell, ctx: Context) -> CellOutput:
    spec = cell.spec
    if spec["mode"] == "raise":
        raise RuntimeError(f"{spec['name']} cannot be computed")
    if spec["mode"] == "die" or (spec["mode"] == "die-once" and not Path(spec["marker"]).exists()):
        Path(spec["marker"]).touch()
        os.kill(os.getpid(), signal.SIGKILL)
    inherited = sum(float(ctx.weights(d)["w"].sum()) + ctx.results(d)["value"] for d in cell.deps)
    value = inherited + float(np.random.default_rng(cell.seed("value")).random())
    return CellOutput(
        results=[
            ("value", "", value), ("pid", "", float(os.getpid())), ("had_store", "", float(ctx.store is not None)),
            ("torch_threads", "", float(torch.get_num_threads())), ("omp", "", float(os.environ.get("OMP_NUM_THREADS", -1))),
            ("on_cuda", "", float(ctx.device == "cuda")),
            ("gpu_visible", "", float(os.environ.get("CUDA_VISIBLE_DEVICES", "") not in ("", "-1"))),
            ("malloc_tuned", "", float(allocator._state.get("done", None) is not None and allocator._state["done"].applied)),
        ],
        weights={"weights": {"w": torch.full((2,), value)}},
        value=("in-memory", spec["name"]),
    )


class Chain(Experiment):
    name = "executor-test-chain"
    config_cls = ChainConfig
    cell_kinds = {"chain.step": _step}

    def grid(self, config: ChainConfig) -> list[Cell]:
        def step(name: str, mode: str = "ok", deps: tuple[str, ...] = ()) -> Cell:
            return Cell.make("chain.step", {"name": name, "mode": mode, "marker": config.marker}, deps=deps, label=name)

        first = step("first")
        risky = step("risky", config.mode, (first.key,))
        return [first, risky, step("after", deps=(risky.key,)), step("free")]

    def analyse(self, config: ChainConfig, cells: list[Cell], ctx: Context, seconds: float = 0.0) -> Any:
        return {c.label: ctx.results(c.key) for c in cells}

    def write(self, result: Any, out_dir: str | Path) -> dict[str, Path]:
        return {}


@pytest.fixture(scope="module", autouse=True)
def chain() -> Any:
    """The test experiment, registered for this module only (workers get it pickled, by its module)."""
    exp = register(Chain())
    yield get_experiment(exp.name)
    REGISTRY.pop(exp.name, None)


@pytest.fixture(scope="module")
def ray_cluster() -> Any:
    """One local Ray instance for every Ray test of this module: 2 CPUs and one GPU that Ray is told about
    (none is needed: the cells only report the device they were given)."""
    if ray is None:
        pytest.skip(NO_RAY)
    ray.init(num_cpus=2, num_gpus=1, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def _executor(kind: str, request: pytest.FixtureRequest, workers: int = 2) -> Any:
    if kind == "ray":
        request.getfixturevalue("ray_cluster")
    return make_executor(kind, workers=workers)


def _values(result: dict[str, dict[str, float]]) -> dict[str, float]:
    return {label: r["value"] for label, r in result.items()}


# ------------------------------------------------------------------------- the same numbers everywhere


@pytest.fixture(scope="module")
def e2_quick() -> tuple[Any, Any, Any]:
    exp = get_experiment("e2")
    # on the CPU, where equal seeds give equal numbers (GPU kernels may round differently run to run)
    cfg = build_config(exp.config_cls, defaults={**exp.variants["quick"], "device": "cpu"})
    return exp, cfg, execute(exp, cfg).result


def _summary(result: Any) -> dict[str, Any]:
    s = result.summary()
    s.pop("environment")
    return s


@pytest.mark.parametrize("kind", ["process", "ray"])
def test_e2_quick_gives_the_serial_numbers_on_every_executor(kind, e2_quick, request, tmp_path) -> None:
    exp, cfg, serial = e2_quick
    with Store(tmp_path / "runs.db") as store:
        out = execute(exp, cfg, executor=_executor(kind, request), store=store)
        assert store.run(out.run_id)["status"] == "done"
    assert out.n_computed == 13 and not out.failed
    assert _summary(out.result) == _summary(serial)
    assert out.result.rows() == serial.rows()
    # in-memory values stay in the worker; the analysis copes (no per-sample records, same numbers)
    assert len(serial.sources) == 6 and out.result.sources == ()


def test_serial_is_the_default_and_keeps_in_memory_values(chain) -> None:
    default = execute(chain, ChainConfig())
    explicit = execute(chain, ChainConfig(), executor=SerialExecutor())
    assert _values(default.result) == _values(explicit.result)
    assert default.result["first"]["pid"] == os.getpid()


class OutOfOrder(SerialExecutor):
    """Three cells in flight, computed newest first: a stand-in for workers that finish in any order."""

    def __init__(self, seen: list[tuple[str, set[str]]]) -> None:
        super().__init__()
        self.workers, self.seen, self.finished = 3, seen, set()

    def submit(self, cell, deps) -> None:
        self.seen.append((cell.key, set(self.finished)))
        super().submit(cell, deps)

    def wait(self):
        out = [self.compute(self._queue.pop())]
        self.finished |= {f.key for f in out}
        return out

    def compute(self, cell):
        from transferlens.runs.executors import compute_cell

        return compute_cell(self._experiment, cell, self._ctx)


def test_a_cell_is_submitted_only_after_its_dependencies_finish() -> None:
    seen: list[tuple[str, set[str]]] = []
    cfg = ToyConfig(n=5)
    out = execute(Toy(), cfg, executor=OutOfOrder(seen))
    cells = {c.key: c for c in Toy().grid(cfg)}
    assert len(seen) == 6
    assert all(set(cells[key].deps) <= finished for key, finished in seen)
    assert out.result == execute(Toy(), cfg).result


def _e2_like_grid() -> list[Cell]:
    """E2's shape: a target, then per source a training followed by its measurement (needs both)."""
    target = Cell.make("train", {"name": "target"}, label="target")
    grid = [target]
    for name in ("s1", "s2", "s3"):
        src = Cell.make("train", {"name": name}, label=f"train {name}")
        grid += [src, Cell.make("measure", {"name": name}, deps=(src.key, target.key), label=f"measure {name}")]
    return grid


def _pop_all(schedule) -> list[str]:
    """Labels in the order a schedule hands its cells out when each finishes as soon as it is taken."""
    order = []
    while (cell := schedule.pop()) is not None:
        order.append(cell.label)
        schedule.finish(cell.key)
    return order


def test_chain_lengths_count_the_longest_chain_of_cells_waiting_on_each() -> None:
    from transferlens.runs.runner import _chain_lengths

    a = Cell.make("k", {"n": "a"})
    b = Cell.make("k", {"n": "b"}, deps=(a.key,))
    c = Cell.make("k", {"n": "c"}, deps=(b.key,))
    d = Cell.make("k", {"n": "d"}, deps=(a.key,))
    e = Cell.make("k", {"n": "e"})
    assert _chain_lengths([a, b, c, d, e]) == {a.key: 2, b.key: 1, c.key: 0, d.key: 0, e.key: 0}
    # a stored cell waits on nothing: b's chain ends with it
    assert _chain_lengths([a, b, c, d, e], {c.key}) == {a.key: 1, b.key: 0, c.key: 0, d.key: 0, e.key: 0}


def test_one_worker_keeps_grid_order_and_several_train_every_source_before_measuring() -> None:
    from transferlens.runs.runner import _Schedule

    grid = _e2_like_grid()
    assert _pop_all(_Schedule(grid, set())) == [c.label for c in grid]
    assert _pop_all(_Schedule(grid, set(), by_chain=True)) == [
        "target", "train s1", "train s2", "train s3", "measure s1", "measure s2", "measure s3",
    ]
    # cells already done leave the chains of the rest as they are
    done = {grid[0].key}
    assert _pop_all(_Schedule(grid, done, by_chain=True))[:3] == ["train s1", "train s2", "train s3"]


class E2Shape(Experiment):
    name = "executor-test-e2-shape"
    config_cls = ChainConfig
    cell_kinds = {"train": lambda cell, ctx: CellOutput(), "measure": lambda cell, ctx: CellOutput()}

    def grid(self, config: Any) -> list[Cell]:
        return _e2_like_grid()

    def analyse(self, config: Any, cells: list[Cell], ctx: Context, seconds: float = 0.0) -> Any:
        return None

    def write(self, result: Any, out_dir: str | Path) -> dict[str, Path]:
        return {}


class Recording(SerialExecutor):
    """Computes in this process, in submission order, with ``workers`` cells in flight."""

    def __init__(self, workers: int) -> None:
        super().__init__()
        self.workers, self.order = workers, []

    def submit(self, cell, deps) -> None:
        self.order.append(cell.label)
        super().submit(cell, deps)


def test_two_workers_submit_every_training_before_any_measurement() -> None:
    one, two = Recording(1), Recording(2)
    execute(E2Shape(), ChainConfig(), executor=one)
    execute(E2Shape(), ChainConfig(), executor=two)
    assert one.order == [c.label for c in _e2_like_grid()]
    assert [label.split()[0] for label in two.order] == ["target"] + ["train"] * 3 + ["measure"] * 3


def test_workers_compute_in_other_processes_without_the_store_with_pinned_threads(chain, tmp_path) -> None:
    with Store(tmp_path / "runs.db") as store:
        out = execute(chain, ChainConfig(), executor=make_executor("process", workers=2, threads_per_worker=2), store=store)
    rows = out.result.values()
    assert all(r["pid"] != os.getpid() and r["had_store"] == 0.0 for r in rows)
    assert all(r["torch_threads"] == 2.0 and r["omp"] == 2.0 for r in rows)
    # each worker tunes glibc's malloc, as the command line does in the driver
    assert all(r["malloc_tuned"] == float(allocator._skip_reason() == "") for r in rows)
    assert _values(out.result) == _values(execute(chain, ChainConfig()).result)


def test_progress_reports_running_and_failed_cells_across_workers() -> None:
    calls: list[tuple[str, int, int, Any]] = []

    def progress(stage: str, done: int, total: int, state=None) -> None:
        calls.append((stage, done, total, state))

    execute(Toy(), ToyConfig(n=3, fail=(2,)), executor="process", workers=2, progress=progress)
    states = [s for *_, s in calls if s is not None]
    assert max(s.running for s in states) == 2
    assert states[-1].finished == 4 and states[-1].failed == 1 and states[-1].eta == 0.0
    assert calls[-1][:3] == ("done", 4, 4)


# ------------------------------------------------------------------------- faults


@pytest.mark.parametrize("kind", ["process", "ray"])
def test_a_cell_that_raises_on_a_worker_is_recorded_with_its_traceback(kind, chain, request, tmp_path) -> None:
    serial = execute(chain, ChainConfig(mode="raise"))
    with Store(tmp_path / "runs.db") as store:
        out = execute(chain, ChainConfig(mode="raise"), executor=_executor(kind, request), store=store)
        risky = next(c for c in chain.grid(ChainConfig(mode="raise")) if c.label == "risky")
        record = store.cell(risky.key)
    assert out.failed == serial.failed
    assert out.failed[0] == ("risky", "RuntimeError: risky cannot be computed")
    assert out.failed[1][0] == "after" and "a cell it needs failed" in out.failed[1][1]
    assert record["status"] == "failed" and record["error"].startswith("RuntimeError: risky cannot be computed")
    assert "Traceback" in record["error"] and "_step" in record["error"]
    assert _values(out.result) == _values(serial.result)  # first and free


@pytest.mark.parametrize("kind", ["process", "ray"])
def test_a_worker_killed_once_is_retried(kind, chain, request, tmp_path) -> None:
    cfg = ChainConfig(mode="die-once", marker=str(tmp_path / "died"))
    with Store(tmp_path / "runs.db") as store:
        out = execute(chain, cfg, executor=_executor(kind, request), store=store)
    assert (tmp_path / "died").exists()  # it did die once
    assert not out.failed and out.n_computed == 4
    expected = execute(chain, cfg).result  # in this process: the marker exists now, so it does not die
    assert _values(out.result) == _values(expected)


@pytest.mark.parametrize("kind", ["process", "ray"])
def test_a_worker_killed_twice_is_recorded_failed_with_the_reason(kind, chain, request, tmp_path) -> None:
    cfg = ChainConfig(mode="die", marker=str(tmp_path / "died"))
    with Store(tmp_path / "runs.db") as store:  # one worker: no other cell is in flight when it dies
        out = execute(chain, cfg, executor=_executor(kind, request, workers=1), store=store)
        grid = {c.label: c.key for c in chain.grid(cfg)}
        assert store.cell(grid["risky"])["error"] == WORKER_DIED
        assert store.cell(grid["free"])["status"] == "done"
    assert dict(out.failed)["risky"] == WORKER_DIED
    assert "a cell it needs failed" in dict(out.failed)["after"]
    assert set(out.result) == {"first", "free"}


def test_a_killed_driver_rerun_recomputes_nothing_finished(tmp_path, monkeypatch) -> None:
    db, n = tmp_path / "runs.db", 8
    script = (
        "import sys\nfrom toy_experiment import Toy, ToyConfig\nfrom transferlens.runs import execute\n"
        "from transferlens.runs.store import Store\n"
        "with Store(sys.argv[1]) as s:\n    execute(Toy(), ToyConfig(n=int(sys.argv[2])), store=s, executor='process', workers=2)\n"
    )
    env = {**os.environ, "TOY_DELAY": "0.4", "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, "-c", script, str(db), str(n)], env=env, start_new_session=True)
    keys = [c.key for c in Toy().grid(ToyConfig(n=n))]
    done = wait_for_done_cells(db, keys, 3, proc)
    os.killpg(proc.pid, signal.SIGKILL)  # the driver and its workers: no handler runs
    proc.wait(timeout=30)
    assert 3 <= len(done) < len(keys), "the driver finished (or never started) before it could be killed"
    monkeypatch.delenv("TOY_DELAY", raising=False)
    with Store(db) as s:
        survived = s.done_keys(keys)
        out = execute(Toy(), ToyConfig(n=n), store=s, executor="process", workers=2)
    assert survived >= done
    assert out.n_skipped == len(survived) and out.n_computed == len(keys) - len(survived)
    assert out.result == execute(Toy(), ToyConfig(n=n)).result


# ------------------------------------------------------------------------- options, checked before any work


def test_executor_options_are_checked() -> None:
    with pytest.raises(ValueError, match="workers must be an integer >= 1, got 0"):
        make_executor("process", workers=0)
    with pytest.raises(ValueError, match="executor must be one of serial, process, ray, got 'threads'"):
        make_executor("threads")
    with pytest.raises(ValueError, match="serial executor computes one cell at a time"):
        make_executor("serial", workers=2)
    with pytest.raises(ValueError, match="apply to the ray executor only"):
        make_executor("process", address="auto")
    with pytest.raises(ValueError, match="gpus_per_cell must be a finite number >= 0"):
        make_executor("ray", gpus_per_cell=-1)
    with pytest.raises(ValueError, match="workers is set on the executor object"):
        execute(Toy(), ToyConfig(), executor=SerialExecutor(), workers=1)


def test_more_workers_than_cpus_warns_and_is_capped() -> None:
    cpus = os.cpu_count() or 1
    with pytest.warns(UserWarning, match=f"more than the {cpus} CPUs"):
        ex = make_executor("process", workers=cpus + 3)
    assert isinstance(ex, ProcessExecutor) and ex.workers == cpus
    assert make_executor("process").workers == cpus and make_executor("serial").workers == 1


def test_missing_ray_says_how_to_install_it(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(ExecutorError, match=r"pip install 'transferlens\[ray\]'"):
        make_executor("ray", workers=1)
    res = CliRunner().invoke(app, ["run", "--quick", "--executor", "ray", "--out", "unused"])
    assert res.exit_code == 2 and RAY_INSTALL in " ".join(res.output.split())


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.skipif(ray is None, reason=NO_RAY)
def test_an_unreachable_cluster_is_a_clear_error_before_the_run(tmp_path) -> None:
    port = _closed_port()
    ex = make_executor("ray", workers=1, address=f"127.0.0.1:{port}")
    assert isinstance(ex, RayExecutor)
    with Store(tmp_path / "runs.db") as store:
        with pytest.raises(ExecutorError, match=f"cannot reach a Ray cluster at 127.0.0.1:{port}.*ray start --head"):
            execute(Toy(), ToyConfig(), executor=ex, store=store)
        assert store.runs() == []  # refused before the run began
    res = CliRunner().invoke(app, ["run", "--quick", "--executor", "ray", "--address", f"127.0.0.1:{port}",
                                   "--out", str(tmp_path / "out"), "--store", str(tmp_path / "cli.db")])
    assert res.exit_code == 2 and "cannot reach a Ray cluster" in " ".join(res.output.split())


def test_a_cell_given_a_gpu_by_ray_computes_on_cuda(ray_cluster, chain) -> None:
    with_gpu = execute(chain, ChainConfig(), executor=make_executor("ray", workers=1, gpus_per_cell=1)).result
    without = execute(chain, ChainConfig(), executor=make_executor("ray", workers=1)).result
    assert all(r["on_cuda"] == 1.0 and r["gpu_visible"] == 1.0 for r in with_gpu.values())
    assert all(r["on_cuda"] == 0.0 and r["gpu_visible"] == 0.0 for r in without.values())
    assert _values(with_gpu) == _values(without)


def test_a_cluster_without_the_resources_a_cell_asks_for_is_refused(ray_cluster, chain) -> None:
    for options, message in (({"gpus_per_cell": 2}, "2 GPU"), ({"cpus_per_cell": 3}, "3 CPU")):
        with pytest.raises(ExecutorError, match=f"each cell asks for {message}.*the Ray cluster has"):
            execute(chain, ChainConfig(), executor=make_executor("ray", workers=1, **options))
    assert ray_cluster.is_initialized()  # the cluster this process joined is left running


@pytest.mark.parametrize("args, message", [
    (["--workers", "0"], "--workers must be an integer >= 1"),
    (["--executor", "process", "--address", "auto"], "apply to --executor ray only"),
    (["--executor", "dask"], "--executor must be one of serial, process, ray"),
    (["--executor", "ray", "--cpus-per-cell", "0"], "--cpus-per-cell must be a finite number > 0"),
    (["--executor", "serial", "--workers", "2"], "serial executor computes one cell at a time"),
])
@pytest.mark.parametrize("command", ["run", "select"])
def test_cli_refuses_bad_executor_options_before_any_work(command, args, message, tmp_path) -> None:
    out = tmp_path / "out"
    res = CliRunner().invoke(app, [command, *args, "--out", str(out)])
    assert res.exit_code == 2 and message in " ".join(res.output.split()) and "Traceback" not in res.output
    assert not out.exists()


def test_cli_passes_the_executor_through(tmp_path, monkeypatch) -> None:
    import transferlens.runs.runner

    seen: dict[str, Any] = {}

    def stand_in(exp, cfg, **kwargs):
        seen.update(kwargs)
        raise ValueError("stand-in: no cells computed")

    monkeypatch.setattr(transferlens.runs.runner, "execute", stand_in)
    res = CliRunner().invoke(app, ["run", "--quick", "--executor", "process", "--workers", "1", "--threads", "2",
                                   "--out", str(tmp_path / "out"), "--store", str(tmp_path / "runs.db")])
    assert res.exit_code == 2 and "stand-in" in res.output
    ex = seen["executor"]
    assert isinstance(ex, ProcessExecutor) and ex.workers == 1 and ex.threads_per_worker == 2
