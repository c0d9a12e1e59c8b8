"""Reading runs back from the store: the experiment's analysis rebuilt from recorded results alone, long or
wide tables for export, and :func:`load_run` for notebooks (a pandas DataFrame)."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

from .context import Context
from .spec import check_grid
from .store import Store, StoreError

DEFAULT_STORE = Path("runs") / "runs.db"


def resolve_run(store: Store, run: str | None) -> dict[str, Any]:
    """A run by id, unique id prefix, or ``None``/``"latest"`` for the newest run."""
    if run in (None, "latest"):
        latest = store.latest_run()
        if latest is None:
            raise StoreError(f"the store {store.path} holds no run yet; start one with `transferlens run`")
        return latest
    runs = store.runs()
    exact = [r for r in runs if r["run_id"] == run]
    if exact:
        return exact[0]
    matches = [r for r in runs if r["run_id"].startswith(run)]
    if len(matches) == 1:
        return matches[0]
    if matches:
        raise StoreError(f"{run!r} matches {len(matches)} runs ({', '.join(r['run_id'] for r in matches[:5])}); give more of the id")
    return store.run(run)  # raises the store's own "unknown run" error, listing the known ids


def analyse_run(store: Store, run: str | None = None) -> tuple[Any, Any, dict[str, Any]]:
    """``(experiment, result, run)``: the experiment's analysis rebuilt from what the run's cells recorded,
    with the environment the run had. Cells not done (failed, or never reached) are left out and named."""
    from ..experiments import get_experiment
    from .config import config_from_dict

    info = resolve_run(store, run)
    exp = get_experiment(info["experiment"])
    cfg = config_from_dict(exp.config_cls, info["config"])
    cells = check_grid(exp.grid(cfg))
    done = store.done_keys(c.key for c in cells)
    ok = [c for c in cells if c.key in done]
    missing = tuple(
        (c.label or c.key, (store.cell(c.key) or {}).get("error") or "not computed")
        for c in cells if c.key not in done
    )
    result = exp.analyse(cfg, ok, Context(store, device="cpu"), 0.0)
    if dataclasses.is_dataclass(result):
        changes: dict[str, Any] = {}
        if hasattr(result, "environment") and info.get("environment"):
            changes["environment"] = info["environment"]
        if hasattr(result, "failed_cells") and missing:
            changes["failed_cells"] = missing
        if changes:
            result = dataclasses.replace(result, **changes)
    return exp, result, info


def wide_rows(store: Store, run_id: str) -> list[dict[str, Any]]:
    """One row per cell of the run: ``cell_key``, ``kind``, ``label`` fields, then every metric as a column."""
    by_cell: dict[str, dict[str, Any]] = {}
    for r in store.run_results(run_id):
        row = by_cell.setdefault(r["cell_key"], {"run_id": r["run_id"], "cell_key": r["cell_key"], "kind": r["kind"]})
        name = r["metric"] if not r["direction"] else f"{r['metric']}_{r['direction']}"
        row[name] = r["value"]
    return list(by_cell.values())


def load_run(store: str | os.PathLike | Store = DEFAULT_STORE, run: str | None = None, *, wide: bool = True) -> Any:
    """A run's results as a pandas DataFrame (pandas is optional: ``pip install pandas``).

    ``wide=True``: one row per cell with one column per metric (``alpha1_t2s``, ``probe_accuracy``, ...);
    ``wide=False``: the long format of the store (``run_id, cell_key, kind, metric, direction, value``).
    ``run`` is a run id, a unique prefix, or ``None`` for the newest run.
    """
    try:
        import pandas as pd
    except ImportError as exc:
        raise ImportError("load_run returns a pandas DataFrame: install pandas (pip install pandas)") from exc
    own = not isinstance(store, Store)
    s = Store(store, readonly=True) if own else store
    try:
        info = resolve_run(s, run)
        rows = wide_rows(s, info["run_id"]) if wide else s.run_results(info["run_id"])
    finally:
        if own:
            s.close()
    return pd.DataFrame(rows)
