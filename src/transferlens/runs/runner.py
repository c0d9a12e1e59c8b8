"""Run an experiment's grid of cells, in memory or against a store that keeps each result as it exists.

With a store, a cell already recorded as done is skipped (its outputs are read back when another cell or
the analysis needs them), every computed cell is committed the moment it finishes, a cell that raises is
recorded with its error while the run goes on, and Ctrl-C stops after the cells in progress.

Cells are computed by an executor (:mod:`transferlens.runs.executors`): ``serial`` in this process (the
default), ``process`` on a local process pool, ``ray`` on a Ray cluster. Whichever computes them, this
process submits a cell once every cell it depends on is finished, and it alone writes to the store.
"""

from __future__ import annotations

import dataclasses
import heapq
import inspect
import signal
import threading
import time
from collections import OrderedDict
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Iterator

from .context import CellOutput, Context
from .executors import Executor, Finished, make_executor
from .spec import Cell, check_grid

if TYPE_CHECKING:
    from ..experiments.base import Experiment
    from .store import Store

STORED_OUTPUTS_KEPT = 256  # dependency outputs read back from the store, kept for the cells that share them

# progress(stage, done, total): ``done`` counts the finished cells (computed, skipped or failed). A callback
# that also takes a ``state`` keyword gets a :class:`RunState` with it, and a call when each cell finishes.
Progress = Callable[..., None]


class RunInterrupted(Exception):
    """Ctrl-C: the run stopped after the cells in progress; everything finished so far is in the store."""

    def __init__(self, run_id: str | None, n_done: int, n_total: int) -> None:
        super().__init__(f"interrupted after {n_done} of {n_total} cells")
        self.run_id, self.n_done, self.n_total = run_id, n_done, n_total


@dataclass(frozen=True)
class RunOutcome:
    """What a run did: the experiment's result, and how many cells were computed, skipped and failed."""

    result: Any
    run_id: str | None
    n_cells: int
    n_computed: int
    n_skipped: int
    failed: tuple[tuple[str, str], ...]  # (label, error) of each failed cell
    seconds: float


@dataclass(frozen=True)
class RunState:
    """Where a run stands: cells computed, skipped (already in the store), failed and running now, of
    ``total``; seconds since the run started and the estimated seconds left (``None`` before the first
    cell finishes), from the rate at which cells have finished across all workers."""

    total: int
    computed: int
    skipped: int
    failed: int
    running: int
    elapsed: float
    eta: float | None

    @property
    def finished(self) -> int:
        return self.computed + self.skipped + self.failed


class _StopFlag:
    """Set by the first Ctrl-C (the run stops after the cells in progress); a second Ctrl-C stops at once."""

    def __init__(self) -> None:
        self.set = False

    def handler(self, signum: int, frame: Any) -> None:
        if self.set:
            raise KeyboardInterrupt
        self.set = True


@contextmanager
def _graceful_interrupt(enabled: bool) -> Iterator[_StopFlag]:
    flag = _StopFlag()
    if not enabled or threading.current_thread() is not threading.main_thread():
        yield flag
        return
    previous = signal.signal(signal.SIGINT, flag.handler)
    try:
        yield flag
    finally:
        signal.signal(signal.SIGINT, previous)


def _takes_state(progress: Progress) -> bool:
    try:
        params = inspect.signature(progress).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.name == "state" or p.kind is inspect.Parameter.VAR_KEYWORD for p in params)


class _Schedule:
    """The cells still to run: a cell becomes ready once every cell it depends on is finished. With one
    worker, ready cells come out in grid order (so it runs them exactly in grid order). With several
    (``by_chain``), the cells with the longest chain of cells waiting on them go first, in grid order among
    equals: in E2 every source is trained before any is measured, so the run ends on the short measurement
    cells spread over all workers, not on one worker finishing a training and then its measurement while
    the others idle. The order never changes a number: every cell's seed comes from its key."""

    def __init__(self, cells: list[Cell], done: set[str], by_chain: bool = False) -> None:
        self.cells = {c.key: c for c in cells}
        chain = _chain_lengths(cells, done) if by_chain else {}
        self.index = {c.key: (-chain.get(c.key, 0), i) for i, c in enumerate(cells)}
        self.blockers: dict[str, int] = {}
        self.dependents: dict[str, list[str]] = {}
        self.ready: list[tuple[tuple[int, int], str]] = []
        for c in cells:
            if c.key in done:
                continue
            waits = {d for d in c.deps if d not in done}
            self.blockers[c.key] = len(waits)
            for d in waits:
                self.dependents.setdefault(d, []).append(c.key)
            if not waits:
                self.ready.append((self.index[c.key], c.key))
        heapq.heapify(self.ready)
        self.pending = len(self.blockers)

    def pop(self) -> Cell | None:
        if not self.ready:
            return None
        self.pending -= 1
        return self.cells[heapq.heappop(self.ready)[1]]

    def finish(self, key: str) -> None:
        for k in self.dependents.pop(key, ()):
            self.blockers[k] -= 1
            if self.blockers[k] == 0:
                heapq.heappush(self.ready, (self.index[k], k))


def _chain_lengths(cells: list[Cell], done: set[str] = frozenset()) -> dict[str, int]:
    """For each cell, how many cells the longest chain of cells that wait on it holds (0 when none does);
    cells already ``done`` wait on nothing."""
    dependents: dict[str, list[str]] = {}
    for c in cells:
        if c.key in done:
            continue
        for d in c.deps:
            dependents.setdefault(d, []).append(c.key)
    length: dict[str, int] = {}
    for c in reversed(cells):  # a checked grid lists every cell after the cells it depends on
        length[c.key] = max((1 + length[k] for k in dependents.get(c.key, ())), default=0)
    return length


class _Loop:
    """Submits ready cells to the executor (at most ``executor.workers`` at once), records each finished
    cell (into the store when there is one, into ``ctx.outputs`` always) and reports progress."""

    def __init__(
        self, cells: list[Cell], done: set[str], executor: Executor, ctx: Context,
        store: "Store | None", progress: Progress | None,
    ) -> None:
        self.schedule = _Schedule(cells, done, by_chain=executor.workers > 1)
        self.executor, self.ctx, self.store = executor, ctx, store
        self.progress, self.with_state = progress, progress is not None and _takes_state(progress)
        self.total, self.skipped = len(cells), len(done)
        self.running: dict[str, Cell] = {}
        self.failed: dict[str, str] = {}
        self.computed = 0
        self.t0 = time.perf_counter()
        self._stored: OrderedDict[str, CellOutput] = OrderedDict()

    # ---------------------------------------------------------------------------------------- progress
    def state(self) -> RunState:
        elapsed = time.perf_counter() - self.t0
        here = self.computed + len(self.failed)
        left = self.total - self.skipped - here
        eta = elapsed / here * left if here else None
        return RunState(self.total, self.computed, self.skipped, len(self.failed), len(self.running), elapsed, eta)

    def report(self, stage: str, finishing: bool = False) -> None:
        if self.progress is None or (finishing and not self.with_state):
            return
        done = self.computed + self.skipped + len(self.failed)
        if self.with_state:
            self.progress(stage, done, self.total, state=self.state())
        else:
            self.progress(stage, done, self.total)

    # ---------------------------------------------------------------------------------------- the loop
    def run(self, stop: Any) -> None:
        while self.schedule.pending or self.running:
            if stop.set and not self.running:
                raise KeyboardInterrupt
            if not stop.set:
                self.submit_ready()
                if not self.running and self.schedule.pending:  # cannot happen with a checked grid
                    raise RuntimeError("cells are left that wait on cells that never finish")
            if self.running:
                for finished in self.executor.wait():
                    self.record(finished)

    def submit_ready(self) -> None:
        while len(self.running) < self.executor.workers:
            cell = self.schedule.pop()
            if cell is None:
                return
            broken = [d for d in cell.deps if d in self.failed]
            if broken:
                self.report(cell.label or cell.kind)
                reason = f"not computed: a cell it needs failed ({', '.join(broken)})"
                self.record(Finished(cell.key, None, reason, None, time.time(), 0.0), cell)
                continue
            self.running[cell.key] = cell
            self.report(cell.label or cell.kind)
            deps = {} if self.executor.in_process else {d: self.shipped(d) for d in cell.deps}
            self.executor.submit(cell, deps)

    def shipped(self, key: str) -> CellOutput:
        """A dependency's outputs for a worker: from this run, else read back from the store (the last
        :data:`STORED_OUTPUTS_KEPT` of those are kept: the cells that share a dependency sit together)."""
        if key in self.ctx.outputs:
            return dataclasses.replace(self.ctx.outputs[key], value=None)
        if key not in self._stored:
            self._stored[key] = _stored_output(self.store, key)
            if len(self._stored) > STORED_OUTPUTS_KEPT:
                self._stored.popitem(last=False)
        self._stored.move_to_end(key)
        return self._stored[key]

    def record(self, f: Finished, cell: Cell | None = None) -> None:
        cell = cell or self.running.pop(f.key)
        if f.output is not None:
            self.ctx.outputs[cell.key] = f.output
            self.computed += 1
            if self.store is not None:
                out = f.output
                self.store.record_cell(
                    cell.key, cell.kind, cell.spec, results=out.results, payload=out.payload, arrays=out.arrays,
                    weights=out.weights, started=f.started, seconds=f.seconds,
                )
        else:
            self.failed[cell.key] = f.error or "failed"
            if self.store is not None:
                error = self.failed[cell.key] + (f"\n\n{f.detail}" if f.detail else "")
                self.store.record_cell(
                    cell.key, cell.kind, cell.spec, started=f.started, seconds=f.seconds, status="failed", error=error,
                )
        self.schedule.finish(cell.key)
        self.report(cell.label or cell.kind, finishing=True)


def _stored_output(store: "Store | None", key: str) -> CellOutput:
    if store is None:
        raise KeyError(f"cell {key} has no output in this run and no store to read it from")
    arts = store.artifacts(key)
    return CellOutput(
        results=store.results(key),
        payload=(store.cell(key) or {}).get("payload") or {},
        arrays={a["name"]: store.load_array(key, a["name"]) for a in arts if a["kind"] == "array"},
        weights={a["name"]: store.load_weights(key, a["name"]) for a in arts if a["kind"] == "weights"},
    )


def _as_executor(executor: "str | Executor", workers: int | None) -> Executor:
    if isinstance(executor, Executor):
        if workers is not None:
            raise ValueError("workers is set on the executor object itself; pass executor='process' with workers=N, or the object alone")
        return executor
    if not isinstance(executor, str):
        raise TypeError(f"executor must be 'serial', 'process', 'ray' or an Executor, got {type(executor).__name__}")
    return make_executor(executor, workers=workers)


def _begin(experiment: "Experiment", config: Any, store: "Store | None", keys: list[str], fresh: bool, out_dir: str | None) -> tuple[str | None, set[str]]:
    if store is None:
        return None, set()
    from ..experiments._output import environment
    from .config import config_to_dict

    run_id = store.begin_run(experiment.name, config_to_dict(config), out_dir=out_dir, environment=environment())
    store.set_run_cells(run_id, keys)
    return run_id, (set() if fresh else store.done_keys(keys))


def execute(
    experiment: "Experiment",
    config: Any,
    *,
    store: "Store | None" = None,
    fresh: bool = False,
    progress: Progress | None = None,
    out_dir: str | None = None,
    graceful_interrupt: bool = False,
    executor: "str | Executor" = "serial",
    workers: int | None = None,
) -> RunOutcome:
    """Compute every cell of ``experiment.grid(config)`` that is not done yet, then analyse.

    ``store=None`` runs in memory. ``fresh=True`` recomputes every cell even when the store has it.
    ``graceful_interrupt=True`` (the CLI) makes Ctrl-C finish the cells in progress, mark the run
    interrupted and raise :class:`RunInterrupted`.

    ``executor``: ``"serial"`` (default: one cell at a time in this process), ``"process"`` or ``"ray"``
    with ``workers`` cells at once, or an executor object from
    :func:`transferlens.runs.executors.make_executor` (for Ray's address and resources, or threads per
    worker). Every executor gives the same numbers; only a serial run keeps each cell's in-memory
    ``CellOutput.value`` for the analysis.

    ``progress(stage, done, total)`` is called as each cell starts; a callback that also takes a ``state``
    keyword gets a :class:`RunState` (running, failed, ETA) and a call as each cell finishes too.
    """
    report = progress or (lambda *_: None)
    t0 = time.perf_counter()
    cells: list[Cell] = check_grid(experiment.grid(config))
    runner = _as_executor(executor, workers)
    ctx = Context(store, device=experiment.device(config))
    runner.start(experiment, ctx)  # before the store is touched: a cluster out of reach leaves no run behind
    try:
        run_id, done = _begin(experiment, config, store, [c.key for c in cells], fresh, out_dir)
        loop = _Loop(cells, done, runner, ctx, store, progress)
        with _graceful_interrupt(graceful_interrupt) as stop:
            try:
                loop.run(stop)
            except KeyboardInterrupt:
                runner.close(abort=True)
                if store is not None:
                    store.finish_run(run_id, "interrupted")
                raise RunInterrupted(run_id, len(done) + loop.computed, len(cells)) from None
    except BaseException:
        runner.close(abort=True)
        raise
    runner.close()
    return _analyse(experiment, config, cells, ctx, store, run_id, loop, report, t0)


def _analyse(
    experiment: "Experiment", config: Any, cells: list[Cell], ctx: Context, store: "Store | None",
    run_id: str | None, loop: _Loop, report: Progress, t0: float,
) -> RunOutcome:
    total = len(cells)
    report("analysis", total, total)
    failed = loop.failed
    ok = [c for c in cells if c.key not in failed]
    failed_labels = tuple((c.label or c.key, failed[c.key]) for c in cells if c.key in failed)
    seconds = time.perf_counter() - t0
    try:
        result = experiment.analyse(config, ok, ctx, seconds)
        if failed_labels and dataclasses.is_dataclass(result) and hasattr(result, "failed_cells"):
            result = dataclasses.replace(result, failed_cells=failed_labels)
    except Exception:
        if store is not None:
            store.finish_run(run_id, "failed")
        raise
    if store is not None:
        store.finish_run(run_id, "failed" if failed else "done")
    report("done", total, total)
    return RunOutcome(result, run_id, total, loop.computed, loop.skipped, failed_labels, seconds)
