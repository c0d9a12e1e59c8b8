"""Small helpers shared by the benchmark scripts (plain scripts, run as ``python benchmarks/bench_*.py``).

Conventions (targets: README, "Benchmarks"): every benchmark measures a baseline in the same run
and reports a ratio; human-readable lines go first, and the LAST lines printed are one JSON object per
benchmark. A missed target is reported ("MISSED TARGET") but never turns into a non-zero exit code.
"""

from __future__ import annotations

import json
import os
import statistics
import time
from typing import Any, Callable

_RESULTS: list[dict[str, Any]] = []


def say(msg: str) -> None:
    """A human-readable progress line (flushed, so it shows while running)."""
    print(msg, flush=True)


def _cpu_by_pid() -> dict[int, float]:
    """CPU seconds (user + system) used so far by every live process except this one (Linux /proc)."""
    me, out = os.getpid(), {}
    tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    try:
        pids = [int(d) for d in os.listdir("/proc") if d.isdigit()]
    except OSError:
        return out
    for pid in pids:
        if pid == me:
            continue
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            out[pid] = (int(fields[11]) + int(fields[12])) / tick  # utime, stime
        except (OSError, IndexError, ValueError):
            continue
    return out


class Contention:
    """Watch how busy the rest of the machine is while a benchmark runs.

    With torch's default threads (one per core) a busy machine makes small ops wait on descheduled
    threads, which slows per-sample loops far more than batched code: ratios measured then are not
    trustworthy. ``report()`` prints the average number of cores other processes kept busy (a lower
    bound: processes that ended during the run are missed) and warns when that exceeds ``warn_cores``.
    """

    def __init__(self, warn_cores: float = 0.25) -> None:
        self.warn_cores = warn_cores
        self.t0, self.c0 = time.perf_counter(), _cpu_by_pid()
        load = os.getloadavg()[0]
        cores = os.cpu_count() or 1
        say(f"machine: {cores} cores, load average {load:.2f} before start")
        if load > 0.5 * cores:
            say(f"WARNING: load average {load:.2f} on {cores} cores before start; timings may be distorted")

    def report(self) -> float:
        # Processes alive at the end: CPU used since the start (all of it for those started since).
        # Processes that ended meanwhile are not seen, so this is a lower bound.
        c1 = _cpu_by_pid()
        used = sum(max(0.0, c - self.c0.get(pid, 0.0)) for pid, c in c1.items())
        busy = used / max(time.perf_counter() - self.t0, 1e-9)
        say(f"other processes kept {busy:.2f} cores busy on average during the run")
        if busy > self.warn_cores:
            say(f"WARNING: other processes used {busy:.2f} cores during the run; timings and ratios may be distorted")
        return busy


def _pid_cpu_seconds(pid: int) -> float:
    """CPU seconds (user + system) used so far by one live process (0.0 if it cannot be read)."""
    tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / tick
    except (OSError, IndexError, ValueError):
        return 0.0


def _machine_busy_seconds() -> float | None:
    """CPU seconds all cores of this machine spent busy since boot (Linux /proc/stat: user, nice, system,
    irq, softirq; idle, iowait and time stolen by a hypervisor excluded). None where unavailable."""
    tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    try:
        with open("/proc/stat") as f:
            fields = f.readline().split()
        user, nice, system, _idle, _iowait, irq, softirq = (int(v) for v in fields[1:8])
    except (OSError, ValueError):
        return None
    return (user + nice + system + irq + softirq) / tick


class OtherLoad:
    """Cores kept busy by everything except this process and its children, over a window.

    Unlike :class:`Contention` (which sees only processes alive at both ends) this counts processes that
    started and ended meanwhile too: machine-wide busy time (/proc/stat) minus the CPU time of this process,
    of its children already waited for (``os.times``) and of the live children named in ``live_pids``.
    Take ``mark()`` at both ends of a window, naming the children that are alive and not yet waited for at
    that moment, and pass both marks to ``cores()``.
    """

    @staticmethod
    def mark(live_pids: tuple[int, ...] = ()) -> tuple[float, float | None, float]:
        t = os.times()
        own = t.user + t.system + t.children_user + t.children_system + sum(_pid_cpu_seconds(p) for p in live_pids)
        return time.perf_counter(), _machine_busy_seconds(), own

    @staticmethod
    def cores(a: tuple[float, float | None, float], b: tuple[float, float | None, float]) -> float | None:
        if a[1] is None or b[1] is None:
            return None
        wall = max(b[0] - a[0], 1e-9)
        return max(0.0, (b[1] - a[1]) - (b[2] - a[2])) / wall


def time_once(fn: Callable[[], Any]) -> tuple[float, Any]:
    """Wall time (``time.perf_counter``) of one call, and its return value."""
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def best_of(fn: Callable[[], Any], repeats: int) -> tuple[float, list[float], Any]:
    """Minimum wall time over ``repeats`` calls, all the times, and the last return value."""
    times, out = [], None
    for _ in range(repeats):
        t, out = time_once(fn)
        times.append(t)
    return min(times), times, out


def best_of_interleaved(fns: dict[str, Callable[[], Any]], repeats: int) -> dict[str, list[float]]:
    """Time several callables round-robin (``a b a b ...``) so machine noise hits them alike; all times."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            times[k].append(time_once(fn)[0])
    return times


def record(benchmark: str, *, ratio: float, target: float, target_kind: str, **fields: Any) -> dict[str, Any]:
    """Check ``ratio`` against ``target`` (``target_kind`` "min": ratio >= target; "max": ratio <= target),
    print a PASS / MISSED TARGET line, and keep the JSON record for :func:`emit`.

    A field ``passed`` given by the caller (e.g. to fold in an accuracy check) is and-ed with the ratio check.
    """
    if target_kind not in ("min", "max"):
        raise ValueError(f"target_kind must be 'min' or 'max', got {target_kind!r}")
    ok = ratio >= target if target_kind == "min" else ratio <= target
    passed = bool(ok and fields.pop("passed", True))
    rec = {"benchmark": benchmark, "ratio": round(float(ratio), 4), "target": target, "target_kind": target_kind}
    rec.update(fields)
    rec["passed"] = passed
    op = ">=" if target_kind == "min" else "<="
    if passed:
        say(f"PASS {benchmark}: ratio {ratio:.3g} (target {op} {target})")
    else:
        why = "" if ok else f"ratio {ratio:.3g}, target {op} {target}"
        extra = fields.get("failure")
        say(f"MISSED TARGET {benchmark}: " + "; ".join(s for s in (why, extra) if s))
    _RESULTS.append(rec)
    return rec


def emit(**extra: Any) -> None:
    """Print every recorded benchmark as one JSON object per line (the last lines of the output);
    ``extra`` fields (e.g. the measured contention) are added to each."""
    for rec in _RESULTS:
        print(json.dumps({**rec, **extra}), flush=True)


def note(benchmark: str, **fields: Any) -> dict[str, Any]:
    """Keep a measurement that has no target (e.g. one estimator's time) for :func:`emit`."""
    rec = {"benchmark": benchmark, **fields}
    _RESULTS.append(rec)
    return rec


# ---------------------------------------------------------------------------------------------------------
# Load-robust comparisons: arms timed alternately, min and median of each, competing load over the window.
# ---------------------------------------------------------------------------------------------------------


def pin_threads(n: int) -> int:
    """Run torch (and every BLAS/OpenMP pool it drives) with ``n`` threads; returns ``n``.

    On the shared 2-core machine a run with one thread per core is at the mercy of any other process: a worker
    thread that is descheduled stalls every parallel region until it runs again, which slows the many small
    calls of a per-sample loop (and batched small-matrix LAPACK calls) by up to 100x and the large batched calls
    far less. With one thread, a busy core costs every arm alike and ratios stay put.
    """
    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(n)
    # numpy's and SciPy's OpenBLAS keep their own pools (one thread per core by default): a "one-thread" arm that
    # calls SciPy would otherwise still run its BLAS on every core
    _LIMITS.append(threadpool_limits(n))
    return n


_LIMITS: list[Any] = []  # the BLAS limits set by pin_threads, kept alive for the whole run


def tune_malloc() -> None:
    """glibc's malloc set up as the ``transferlens`` command sets it (:func:`transferlens.tune_allocator`), and a
    line saying so; ``TRANSFERLENS_TUNE_MALLOC=0`` measures with glibc's defaults instead."""
    from transferlens import tune_allocator

    t = tune_allocator()
    if t.applied:
        say(f"allocator: glibc mmap / trim thresholds {t.mmap_threshold >> 20} / {t.trim_threshold >> 20} MiB, as the transferlens command sets them")
    else:
        say(f"allocator: glibc's defaults ({t.reason})")


def alternate(fns: dict[str, Callable[[], Any]], repeats: int) -> tuple[dict[str, list[float]], dict[str, Any]]:
    """Time the arms alternately (``a b a b ...``) ``repeats`` times each; all times per arm and each arm's
    last return value."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    outs: dict[str, Any] = {}
    for _ in range(repeats):
        for k, fn in fns.items():
            t, outs[k] = time_once(fn)
            times[k].append(t)
    return times, outs


def min_median(times: list[float]) -> tuple[float, float]:
    """Minimum and median of a list of timings."""
    return min(times), statistics.median(times)


def fmt_times(times: list[float], scale: float = 1.0) -> str:
    """``min a, median b (t1, t2, ...)`` in seconds, each time multiplied by ``scale`` (an extrapolation)."""
    lo, med = min_median([t * scale for t in times])
    return f"min {lo:.3f} s, median {med:.3f} s ({', '.join(f'{t * scale:.3f}' for t in times)})"


class LoadWindow:
    """Competing load (:class:`OtherLoad`: /proc/stat minus this process and its waited-for children) over one
    benchmark's window, with a warning above ``warn_cores``::

        with LoadWindow("alpha_batched_vs_per_sample") as w:
            ...
        w.cores  # None where /proc/stat is unavailable
    """

    def __init__(self, name: str, warn_cores: float = 0.25) -> None:
        self.name, self.warn_cores = name, warn_cores
        self.cores: float | None = None

    def __enter__(self) -> "LoadWindow":
        self._a = OtherLoad.mark()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.cores = OtherLoad.cores(self._a, OtherLoad.mark())
        if self.cores is None:
            say(f"  {self.name}: competing load unknown (no /proc/stat)")
        elif self.cores > self.warn_cores:
            say(f"  WARNING {self.name}: other processes kept {self.cores:.2f} cores busy during the window; "
                "ratios may be distorted")
        else:
            say(f"  {self.name}: other processes kept {self.cores:.2f} cores busy during the window")

    @property
    def rounded(self) -> float | None:
        return None if self.cores is None else round(self.cores, 3)
