"""Benchmark the executors: E2's grid computed serially, on a local process pool and on a local Ray instance.

Targets (README, "Scale-out"), 2-core CPU, one thread per worker, E2's quick config with ``num_samples``
raised to ``NUM_SAMPLES`` (13 cells of about half a second to two seconds each):

* ``process_x2_vs_serial``: a 2-worker pool computes the grid at least 1.7x as fast as the serial run;
* ``ray_overhead_per_cell``: in a 1-worker Ray run, a cell costs at most 50 ms beyond its own seconds (the
  run's wall time less the cells' own seconds and the driver's analysis, per cell);
* ``ray_x2_vs_serial``: 2 Ray workers, 1.7x as the pool.

Every arm runs ``REPEATS`` times, interleaved, and the fastest run of each is reported, with how many cores
the whole machine kept busy meanwhile (/proc/stat): 2 workers can only be twice as fast when other
processes leave both cores free. Every run goes into its own store (as the CLI's runs do) and must give the
serial run's numbers. The pool's
forkserver and the Ray instance are started (and Ray's workers have imported transferlens) before the
timed runs, as a long-lived cluster would be; those one-off start-up times are reported on their own. Also
reported: the bytes that travel per cell (the pickled job: spec, experiment and dependency outputs; the
pickled output coming back), the sum of the cells' own seconds, and the model
``total = sum(cell seconds) / N + per-cell overhead x cells / N + driver time`` against the 2-worker runs.

Run: ``.venv/bin/python benchmarks/bench_scale.py``. The last lines are one JSON object per benchmark.
"""

from __future__ import annotations

import os

# One thread per process for every BLAS/OpenMP pool, also those that load later (the CLI's --threads 1 does
# the same); the workers pin themselves.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import pickle
import sqlite3
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402

from _common import OtherLoad, _machine_busy_seconds, emit, note, record, say, tune_malloc  # noqa: E402
from transferlens.experiments import get_experiment  # noqa: E402
from transferlens.runs import Context, execute  # noqa: E402
from transferlens.runs.config import build_config  # noqa: E402
from transferlens.runs.executors import ProcessExecutor, make_executor  # noqa: E402
from transferlens.runs.store import Store  # noqa: E402

NUM_SAMPLES = 2000
REPEATS = 3  # rounds of every arm, interleaved; the fastest of each is reported
TARGET_SPEEDUP = 1.7
TARGET_OVERHEAD_MS = 50.0


class Measured(ProcessExecutor):
    """A process pool that also records the pickled size of every job sent and every output received."""

    def __init__(self, workers: int) -> None:
        super().__init__(workers)
        self.sent: list[tuple[str, int]] = []
        self.received: list[tuple[str, int]] = []

    def pack(self, cell, deps) -> bytes:
        blob = super().pack(cell, deps)
        self.sent.append((cell.kind, len(blob)))
        return blob

    def wait(self):
        done = super().wait()
        self.received += [(f.key, len(pickle.dumps(f, protocol=pickle.HIGHEST_PROTOCOL))) for f in done]
        return done


def timed_run(exp, cfg, folder: Path, name: str, executor: Any) -> dict[str, Any]:
    """One run into its own store: wall seconds, the summary (no environment), the sum of cell seconds."""
    db = folder / f"{name}.db"
    t0, c0, mark, busy0 = time.perf_counter(), time.process_time(), OtherLoad.mark(), _machine_busy_seconds()
    with Store(db) as store:
        out = execute(exp, cfg, store=store, executor=executor)
    wall, cpu, other = time.perf_counter() - t0, time.process_time() - c0, OtherLoad.cores(mark, OtherLoad.mark())
    busy1 = _machine_busy_seconds()
    busy = None if busy0 is None or busy1 is None else (busy1 - busy0) / wall
    summary = out.result.summary()
    summary.pop("environment")
    with sqlite3.connect(db) as conn:
        cell_seconds = conn.execute("SELECT SUM(seconds) FROM cells").fetchone()[0]
    say(f"{name:>12}: {wall:6.2f} s wall, {out.n_cells / wall:5.2f} cells/s, cells' own time {cell_seconds:.2f} s, "
        f"machine busy {busy if busy is not None else float('nan'):.2f} cores")
    return {"wall": wall, "summary": summary, "cells": out.n_cells, "cell_seconds": cell_seconds,
            "driver_seconds": wall - out.seconds, "driver_cpu_seconds": cpu, "other_cores": other, "busy_cores": busy}


def start_pool_server(exp) -> float:
    """The forkserver (imports transferlens once) and one worker: the process pool's one-off start-up."""
    t0 = time.perf_counter()
    ex = ProcessExecutor(1)
    ex.start(exp, Context())
    ex._pool.submit(os.getpid).result()
    ex.close()
    return time.perf_counter() - t0


def start_ray(workers: int) -> tuple[float, float]:
    """A local Ray instance, then every worker importing transferlens: the seconds of each."""
    import ray

    t0 = time.perf_counter()
    ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False)
    t1 = time.perf_counter()

    @ray.remote(num_cpus=1)
    def warm() -> int:
        import importlib

        from transferlens.runs.executors import PRELOAD

        for name in PRELOAD:  # what the process pool's forkserver imports up front
            importlib.import_module(name)
        time.sleep(0.5)  # keep this worker busy so that the other task lands on another one
        return os.getpid()

    ray.get([warm.remote() for _ in range(workers)])
    return t1 - t0, time.perf_counter() - t1


def byte_sizes(ex: Measured) -> dict[str, Any]:
    by_kind: dict[str, list[int]] = {}
    for kind, n in ex.sent:
        by_kind.setdefault(kind, []).append(n)
    back = [n for _, n in ex.received]
    return {
        "sent_bytes_per_cell": {k: round(sum(v) / len(v)) for k, v in by_kind.items()},
        "returned_bytes_per_cell": {"mean": round(sum(back) / len(back)), "max": max(back)},
    }


def main() -> None:
    torch.set_num_threads(1)
    threadpool_limits(limits=1)
    tune_malloc()
    exp = get_experiment("e2")
    cfg = build_config(exp.config_cls, defaults={**exp.variants["quick"], "num_samples": NUM_SAMPLES})
    cores = os.cpu_count() or 1
    load_before = os.getloadavg()
    say(f"E2 quick config, num_samples={NUM_SAMPLES}; {cores} cores, load average {load_before[0]:.2f} before start")
    pool_start = start_pool_server(exp)
    say(f"process pool start-up (forkserver importing transferlens, one worker): {pool_start:.2f} s")
    measured: list[Measured] = []
    arms = {
        "serial": lambda: "serial",
        "process_x1": lambda: measured.append(Measured(1)) or measured[-1],
        "process_x2": lambda: make_executor("process", workers=2),
    }
    ray_start = None
    try:
        import ray
    except ImportError:
        ray = None
        say("ray is not installed (pip install 'transferlens[ray]'): the Ray runs are skipped")
    else:
        ray_init, ray_warm = start_ray(2)
        ray_start = {"init_seconds": round(ray_init, 3), "workers_import_seconds": round(ray_warm, 3)}
        say(f"ray start-up: init {ray_init:.2f} s, workers importing transferlens {ray_warm:.2f} s")
        arms["ray_x1"] = lambda: make_executor("ray", workers=1)
        arms["ray_x2"] = lambda: make_executor("ray", workers=2)
    runs: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(REPEATS):
            for name, make in arms.items():
                run = timed_run(exp, cfg, Path(tmp), f"{name}-{r}", make())
                if name not in runs or run["wall"] < runs[name]["wall"]:
                    runs[name] = run
    if ray is not None:
        ray.shutdown()
    report(runs, cores, measured[0], pool_start, ray_start, load_before)


def report(runs, cores, measured, pool_start, ray_start, load_before) -> None:
    serial = runs["serial"]
    same = all(r["summary"] == serial["summary"] for r in runs.values())
    say("every executor gave the serial run's numbers" if same else "MISMATCH: an executor gave other numbers")
    cells = serial["cells"]
    common = {"cells": cells, "cores": cores, "num_samples": NUM_SAMPLES, "same_numbers": same,
              # cores other processes kept busy during the fastest serial run (the pools' and Ray's own
              # processes count as "other" during the parallel runs, so those are not shown)
              "other_load_cores": None if runs["serial"]["other_cores"] is None else round(runs["serial"]["other_cores"], 2),
              "loadavg_before": round(load_before[0], 2), "loadavg_after": round(os.getloadavg()[0], 2)}
    for name, r in runs.items():
        note(f"scale_{name}", seconds=round(r["wall"], 3), cells_per_second=round(cells / r["wall"], 3),
             ratio_vs_serial=round(serial["wall"] / r["wall"], 3), cell_seconds=round(r["cell_seconds"], 3),
             driver_seconds=round(r["driver_seconds"], 3),
             driver_cpu_ms_per_cell=round(r["driver_cpu_seconds"] / cells * 1000, 2),
             machine_busy_cores=None if r["busy_cores"] is None else round(r["busy_cores"], 2), **common)
    record("process_x2_vs_serial", ratio=serial["wall"] / runs["process_x2"]["wall"], target=TARGET_SPEEDUP,
           target_kind="min", pool_startup_seconds=round(pool_start, 3), passed=same, **common)
    note("bytes_per_cell", **byte_sizes(measured))
    for name in ("process", "ray"):
        if f"{name}_x1" in runs:
            model_check(name, runs, cells)
    if "ray_x1" in runs:
        one = runs["ray_x1"]
        # what a cell costs beyond its own compute: the 1-worker run's wall time less the cells' own seconds
        # and the driver's analysis (the difference with the serial run's wall time is also reported, but
        # Ray's workers keep the data they generated between runs of one driver, which can make it negative)
        overhead_ms = (one["wall"] - one["driver_seconds"] - one["cell_seconds"]) / cells * 1000
        record("ray_overhead_per_cell", ratio=overhead_ms, target=TARGET_OVERHEAD_MS, target_kind="max",
               unit="ms", vs_serial_wall_ms=round((one["wall"] - serial["wall"]) / cells * 1000, 1),
               ray_startup=ray_start, passed=same, **common)
        record("ray_x2_vs_serial", ratio=serial["wall"] / runs["ray_x2"]["wall"], target=TARGET_SPEEDUP,
               target_kind="min", passed=same, **common)
    emit()


def model_check(name: str, runs, cells: int) -> None:
    """total(N) = sum(cell seconds) / N + overhead x cells / N + driver time, every term measured in the
    1-worker run (overhead: its wall time less the cells' own time and the driver's analysis, per cell),
    predicted for 2 workers and compared with the 2-worker run. The model ignores the grid's dependencies
    (here the target's training, the longest cell, must finish before any measurement starts)."""
    one, two = runs[f"{name}_x1"], runs.get(f"{name}_x2")
    driver = one["driver_seconds"]
    overhead = max(0.0, (one["wall"] - driver - one["cell_seconds"]) / cells)
    if two is None:
        return
    predicted = one["cell_seconds"] / 2 + overhead * cells / 2 + driver  # from the 1-worker run alone
    say(f"{name}: overhead {overhead * 1000:.0f} ms/cell; model for 2 workers {predicted:.2f} s, measured {two['wall']:.2f} s")
    note(f"model_{name}_x2", predicted_seconds=round(predicted, 3), measured_seconds=round(two["wall"], 3),
         overhead_ms_per_cell=round(overhead * 1000, 1), driver_seconds=round(two["driver_seconds"], 3),
         cell_seconds_x2=round(two["cell_seconds"], 3))


if __name__ == "__main__":
    main()
