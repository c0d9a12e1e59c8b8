"""Benchmark the thread count of a run: the quick E2 experiment (``transferlens run --quick``) with 1 and 2
CPU threads, each alone and beside a competing CPU-bound process. This is what chose the default of
``transferlens run --threads``.

Every measurement is a fresh Python process that applies the CLI's own thread limit (torch intra-op threads
and BLAS/OpenMP pools via threadpoolctl), builds the ``--quick`` E2 configuration (device cpu) and times
``run_e2`` alone (imports and writing excluded). The competitor is a pure-Python busy loop (one core),
started before the "busy" measurements of each round and killed after them (it also stops by itself after
``COMPETITOR_MAX_S``). Rounds alternate the order of the thread counts so machine noise hits both alike.

Targets (README, "Benchmarks"), 2-core CPU:

* threads_busy_2_vs_1: beside one busy process, 2 threads take >= 1.5x the time of 1 thread;
* threads_alone_1_vs_2: without our competitor, 1 thread takes <= 1.2x the time of 2 threads.

Both met means one thread is the better default. Every record also says how many cores other processes
(not this benchmark, its measurements or its competitor) kept busy during its measurements
(``other_cpu_cores_*``, from machine-wide CPU time, processes that came and went included).

Run: ``.venv/bin/python benchmarks/bench_threads.py [--repeats R]`` (R rounds, default 2; a few minutes).
The last lines are one JSON object per benchmark. Exit code is 0 even when a target is missed (this is a
measurement); look for "MISSED TARGET".
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch  # noqa: E402

from _common import Contention, OtherLoad, emit, record, say, tune_malloc  # noqa: E402
from transferlens.cli import DEFAULT_THREADS  # noqa: E402

THREADS = (1, 2)
TARGET_BUSY = 1.5  # min: t(2 threads, busy) / t(1 thread, busy)
TARGET_ALONE = 1.2  # max: t(1 thread, alone) / t(2 threads, alone)
CHILD_TIMEOUT_S = 900  # one measurement; a timed-out one counts as this many seconds
COMPETITOR_MAX_S = 1800  # the competitor stops by itself after this, whatever happens here

# One measurement: the CLI's thread limit around run_e2 on the --quick configuration.
CHILD = r"""
import json, sys, time
n = int(sys.argv[1])
from transferlens.cli import _thread_limit
from transferlens.experiments.e2 import QUICK
from transferlens.experiments import E2Config, run_e2
cfg = E2Config(device="cpu", **QUICK)
with _thread_limit(n):
    import torch
    from threadpoolctl import threadpool_info
    threads = torch.get_num_threads()
    blas = max((p["num_threads"] for p in threadpool_info()), default=None)
    t0 = time.perf_counter()
    res = run_e2(cfg)
    seconds = time.perf_counter() - t0
print(json.dumps({"seconds": seconds, "threads": threads, "blas_threads": blas,
                  "spearman": {m: c.spearman for m, c in res.correlations.items()}}))
"""

# The competitor: one core kept busy by a pure-Python loop, bounded in time.
SPIN = "import sys, time\nend = time.monotonic() + float(sys.argv[1])\nwhile time.monotonic() < end:\n    pass\n"


def measure(n: int, live: tuple[int, ...]) -> dict:
    """Run one measurement with ``n`` threads; ``live`` are our running children (the competitor)."""
    a = OtherLoad.mark(live)
    try:
        proc = subprocess.run([sys.executable, "-c", CHILD, str(n)], capture_output=True, text=True, timeout=CHILD_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        b = OtherLoad.mark(live)
        say(f"    TIMEOUT after {CHILD_TIMEOUT_S} s")
        return {"seconds": float(CHILD_TIMEOUT_S), "timeout": True, "other": OtherLoad.cores(a, b), "spearman": {}}
    b = OtherLoad.mark(live)
    if proc.returncode != 0:
        raise RuntimeError(f"measurement with {n} threads failed:\n{proc.stderr[-3000:]}")
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    if out["threads"] != n or out["blas_threads"] not in (None, n):
        raise RuntimeError(f"asked for {n} threads, the run had torch {out['threads']} / BLAS {out['blas_threads']}")
    out["other"] = OtherLoad.cores(a, b)
    return out


def start_competitor() -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", SPIN, str(COMPETITOR_MAX_S)])
    time.sleep(0.5)  # let it start spinning
    return proc


def stop_competitor(proc: subprocess.Popen) -> None:
    proc.kill()
    proc.wait()


def mean(xs: list[float]) -> float | None:
    xs = [x for x in xs if x is not None]
    return sum(xs) / len(xs) if xs else None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=2, help="rounds (each: every thread count alone, then busy)")
    args = ap.parse_args()
    if args.repeats < 1:
        ap.error("--repeats must be >= 1")
    tune_malloc()
    t0 = time.perf_counter()
    say(
        f"bench_threads: quick E2 (run_e2, device cpu) with {' and '.join(map(str, THREADS))} threads, alone and beside one "
        f"busy process; {args.repeats} rounds; torch {torch.__version__} (default here: {torch.get_num_threads()} threads)"
    )
    contention = Contention()
    whole = OtherLoad.mark()
    times: dict[tuple[int, str], list[float]] = {(n, c): [] for n in THREADS for c in ("alone", "busy")}
    other: dict[str, list[float]] = {"alone": [], "busy": []}
    other_by: dict[tuple[int, str], list[float | None]] = {k: [] for k in times}
    spearman: dict[int, dict[str, float]] = {}
    timeouts = 0
    for r in range(args.repeats):
        order = THREADS if r % 2 == 0 else tuple(reversed(THREADS))
        for cond in ("alone", "busy"):
            competitor = start_competitor() if cond == "busy" else None
            try:
                for n in order:
                    res = measure(n, (competitor.pid,) if competitor else ())
                    times[(n, cond)].append(res["seconds"])
                    other[cond].append(res["other"])
                    other_by[(n, cond)].append(res["other"])
                    timeouts += bool(res.get("timeout"))
                    spearman.setdefault(n, res["spearman"])
                    busy = "-" if res["other"] is None else f"{res['other']:.2f}"
                    say(f"  round {r + 1} {cond:5s} {n} thread(s): {res['seconds']:7.2f} s   (other processes: {busy} cores)")
            finally:
                if competitor is not None:
                    stop_competitor(competitor)

    say("")
    say(f"  {'threads':>7}  {'alone (min) s':>13}  {'busy (min) s':>12}  all times")
    for n in THREADS:
        ta, tb = times[(n, "alone")], times[(n, "busy")]
        say(f"  {n:>7}  {min(ta):13.2f}  {min(tb):12.2f}  alone {', '.join(f'{t:.2f}' for t in ta)}; busy {', '.join(f'{t:.2f}' for t in tb)}")
    oa, ob = mean(other["alone"]), mean(other["busy"])
    say(f"  other processes kept {oa if oa is not None else float('nan'):.2f} cores busy during the 'alone' runs, "
        f"{ob if ob is not None else float('nan'):.2f} during the 'busy' runs (besides our competitor)")
    keys = sorted(set(spearman[1]) & set(spearman[2]))
    diffs = [abs(spearman[1][k] - spearman[2][k]) for k in keys if spearman[1][k] is not None and spearman[2][k] is not None]
    max_diff = max(diffs) if diffs else None
    say(f"  spearman, 1 vs 2 threads: max abs diff {max_diff if max_diff is not None else float('nan'):.3g} (floating-point reductions differ with threads)")

    t1a, t2a, t1b, t2b = (min(times[k]) for k in ((1, "alone"), (2, "alone"), (1, "busy"), (2, "busy")))
    common = dict(default_threads=DEFAULT_THREADS, repeats=args.repeats, timeouts=timeouts, spearman_max_abs_diff=max_diff)
    rnd = lambda v: None if v is None else round(v, 3)  # noqa: E731
    others = lambda n, c: [rnd(v) for v in other_by[(n, c)]]  # noqa: E731  (per measurement, same order as *_all_s)
    record(
        "threads_busy_2_vs_1", ratio=t2b / t1b, target=TARGET_BUSY, target_kind="min",
        one_thread_s=round(t1b, 3), two_threads_s=round(t2b, 3),
        one_thread_all_s=[round(t, 3) for t in times[(1, "busy")]], two_threads_all_s=[round(t, 3) for t in times[(2, "busy")]],
        other_cpu_cores_during=rnd(ob), one_thread_other_cpu_cores=others(1, "busy"), two_threads_other_cpu_cores=others(2, "busy"),
        **common,
    )
    record(
        "threads_alone_1_vs_2", ratio=t1a / t2a, target=TARGET_ALONE, target_kind="max",
        one_thread_s=round(t1a, 3), two_threads_s=round(t2a, 3),
        one_thread_all_s=[round(t, 3) for t in times[(1, "alone")]], two_threads_all_s=[round(t, 3) for t in times[(2, "alone")]],
        other_cpu_cores_during=rnd(oa), one_thread_other_cpu_cores=others(1, "alone"), two_threads_other_cpu_cores=others(2, "alone"),
        **common,
    )
    pids_seen = contention.report()
    total = OtherLoad.cores(whole, OtherLoad.mark())
    say(f"other processes (all, including those that ended) kept {total if total is not None else float('nan'):.2f} cores busy over the whole run")
    say(f"total wall time {time.perf_counter() - t0:.1f} s")
    emit(other_cpu_cores=rnd(total if total is not None else pids_seen), other_cpu_cores_live_pids=round(pids_seen, 3))
    return 0


if __name__ == "__main__":
    sys.exit(main())
