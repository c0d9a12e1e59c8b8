"""Benchmark the results store: what keeping every cell's results (SQLite rows, weights as safetensors,
per-sample arrays as .npy) costs a run, and how fast a run whose cells are all stored finishes.

* store_overhead: the default E2 run (``make demo``'s configuration, one thread) computed in memory and
  computed against a fresh store (``fresh=True``), in the same process after an untimed warm-up, the
  in-process data cache cleared before each, alternating the order over the rounds; ratio = best time
  with the store / best time without. Target <= 1.05.
* resumed_run_seconds: ``transferlens run`` as a user types it (a new process: imports, analysis from the
  store, writing results.csv / summary.json / report.html) when every cell is already in the store;
  ratio = its wall time in seconds. Target < 3.

Run: ``.venv/bin/python benchmarks/bench_store.py [--quick] [--repeats R]`` (default: the full E2, one
round, about two minutes; ``--quick`` uses the quick E2 and 3 rounds). The last lines are one JSON object per
benchmark; a missed target is reported, never an error exit.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common import Contention, emit, record, say, tune_malloc  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="the quick E2 configuration (a smoke test of the benchmark)")
    ap.add_argument("--repeats", type=int, default=None, help="rounds of (in memory, with store); default 1, or 3 with --quick")
    args = ap.parse_args()
    repeats = args.repeats or (3 if args.quick else 1)
    tune_malloc()

    import torch
    from threadpoolctl import threadpool_limits

    from transferlens.experiments.e2 import EXPERIMENT, QUICK, E2Config
    from transferlens.runs.runner import execute
    from transferlens.runs.store import Store

    from transferlens.data.mnist1d import _generate

    torch.set_num_threads(1)
    cfg = E2Config(device="cpu", **(QUICK if args.quick else {}))
    say("warm-up: one quick run, untimed (imports, first-call costs)")
    execute(EXPERIMENT, E2Config(device="cpu", **QUICK))
    work = Path(tempfile.mkdtemp(prefix="bench-store-"))
    watch = Contention()
    times: dict[str, list[float]] = {"memory": [], "store": []}
    try:
        with threadpool_limits(1):
            for r in range(repeats):
                order = ("memory", "store") if r % 2 == 0 else ("store", "memory")
                for mode in order:
                    db = work / f"round{r}" / "runs.db"
                    _generate.cache_clear()  # generated data is cached in-process: every timed run generates it
                    t0 = time.perf_counter()
                    if mode == "memory":
                        execute(EXPERIMENT, cfg)
                    else:
                        with Store(db) as store:
                            execute(EXPERIMENT, cfg, store=store, fresh=True)
                    times[mode].append(time.perf_counter() - t0)
                    say(f"round {r + 1}: {mode:<6} {times[mode][-1]:.1f} s")
        busy = watch.report()
        best_mem, best_store = min(times["memory"]), min(times["store"])
        size = sum(p.stat().st_size for p in (work / "round0").rglob("*") if p.is_file())
        record(
            "store_overhead", ratio=best_store / best_mem, target=1.05, target_kind="max",
            seconds_memory=[round(t, 2) for t in times["memory"]], seconds_store=[round(t, 2) for t in times["store"]],
            store_bytes=size, config="quick" if args.quick else "default", other_cpu_cores=round(busy, 2),
        )

        # A user's rerun: a new process, every cell already in the store of round 0.
        exe = Path(sys.executable).with_name("transferlens")
        cmd = [str(exe), "run", "--store", str(work / "round0" / "runs.db"), "--out", str(work / "resumed"), "--set", "device='cpu'"]
        if args.quick:
            cmd.append("--quick")
        watch = Contention()
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        wall = time.perf_counter() - t0
        busy = watch.report()
        ok = proc.returncode == 0 and "0 cells computed" in proc.stdout
        say(f"resumed run: {wall:.2f} s (exit {proc.returncode})" + ("" if ok else f"\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}"))
        record("resumed_run_seconds", ratio=wall, target=3.0, target_kind="max", passed=ok, other_cpu_cores=round(busy, 2))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    emit()


if __name__ == "__main__":
    main()
