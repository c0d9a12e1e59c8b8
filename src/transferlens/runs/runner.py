"""Run an experiment's grid of cells, in memory or against a store that keeps each result as it exists.

With a store, a cell already recorded as done is skipped (its outputs are read back when another cell or
the analysis needs them), every computed cell is committed the moment it finishes, a cell that raises is
recorded with its error while the run goes on, and Ctrl-C stops after the current cell.
"""

from __future__ import annotations

import dataclasses
import signal
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Iterator

from .context import Context
from .spec import Cell, check_grid

if TYPE_CHECKING:
    from ..experiments.base import Experiment
    from .store import Store

Progress = Callable[[str, int, int], None]


class RunInterrupted(Exception):
    """Ctrl-C: the run stopped after the cell in progress; everything finished so far is in the store."""

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


class _StopFlag:
    """Set by the first Ctrl-C (the run stops after the current cell); a second Ctrl-C stops at once."""

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


def _error_text(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def execute(
    experiment: "Experiment",
    config: Any,
    *,
    store: "Store | None" = None,
    fresh: bool = False,
    progress: Progress | None = None,
    out_dir: str | None = None,
    graceful_interrupt: bool = False,
) -> RunOutcome:
    """Compute every cell of ``experiment.grid(config)`` that is not done yet, then analyse.

    ``store=None`` runs in memory. ``fresh=True`` recomputes every cell even when the store has it.
    ``graceful_interrupt=True`` (the CLI) makes Ctrl-C finish the current cell, mark the run interrupted
    and raise :class:`RunInterrupted`.
    """
    report = progress or (lambda *_: None)
    t0 = time.perf_counter()
    cells: list[Cell] = check_grid(experiment.grid(config))
    keys = [c.key for c in cells]
    ctx = Context(store, device=experiment.device(config))
    run_id = None
    done: set[str] = set()
    if store is not None:
        from ..experiments._output import environment
        from .config import config_to_dict

        run_id = store.begin_run(experiment.name, config_to_dict(config), out_dir=out_dir, environment=environment())
        store.set_run_cells(run_id, keys)
        if not fresh:
            done = store.done_keys(keys)
    failed: dict[str, str] = {}
    computed = 0
    total = len(cells)
    with _graceful_interrupt(graceful_interrupt) as stop:
        try:
            for i, cell in enumerate(cells):
                if stop.set:
                    raise KeyboardInterrupt
                if cell.key in done:
                    continue
                report(cell.label or cell.kind, i, total)
                broken = [d for d in cell.deps if d in failed]
                started, t_cell = time.time(), time.perf_counter()
                if broken:
                    failed[cell.key] = f"not computed: a cell it needs failed ({', '.join(broken)})"
                else:
                    try:
                        out = experiment.run_cell(cell, ctx)
                    except KeyboardInterrupt:
                        raise
                    except Exception as exc:  # noqa: BLE001 - recorded with the cell; the run goes on
                        failed[cell.key] = _error_text(exc)
                    else:
                        ctx.outputs[cell.key] = out
                        computed += 1
                        if store is not None:
                            store.record_cell(
                                cell.key, cell.kind, cell.spec, results=out.results, payload=out.payload,
                                arrays=out.arrays, weights=out.weights, started=started,
                                seconds=time.perf_counter() - t_cell,
                            )
                        continue
                if store is not None:
                    store.record_cell(
                        cell.key, cell.kind, cell.spec, started=started, seconds=time.perf_counter() - t_cell,
                        status="failed", error=failed[cell.key],
                    )
        except KeyboardInterrupt:
            if store is not None:
                store.finish_run(run_id, "interrupted")
            n_done = len(done) + computed
            raise RunInterrupted(run_id, n_done, total) from None
    report("analysis", total, total)
    ok = [c for c in cells if c.key not in failed]
    failed_labels = tuple((next(c.label or c.key for c in cells if c.key == k), e) for k, e in failed.items())
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
    return RunOutcome(result, run_id, total, computed, len(done), failed_labels, seconds)
