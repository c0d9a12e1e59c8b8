"""What every experiment writes the same way: the CSV table, summary.json, and correlation rows."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import torch

from ..evaluation import Correlation

SUMMARY_KEYS = ("pearson", "spearman", "kendall", "spearman_ci", "pearson_ci", "kendall_ci", "weighted_tau", "relative_top1", "n")


def compact(c: Correlation, keys: tuple[str, ...] = SUMMARY_KEYS) -> dict[str, Any]:
    """The statistics of a :class:`Correlation` that go into ``summary.json``."""
    d = c.to_dict()
    return {k: d[k] for k in keys}


def _blas_threads() -> int | None:
    """The largest thread count among the BLAS/OpenMP libraries loaded in this process (None if unknown)."""
    try:
        from threadpoolctl import threadpool_info

        counts = [int(p["num_threads"]) for p in threadpool_info() if p.get("num_threads") is not None]
    except Exception:  # threadpoolctl inspects native libraries: never let it break writing results
        return None
    return max(counts) if counts else None


def environment() -> dict[str, Any]:
    """What the numbers also depend on: library versions, and the thread count in force when this is
    called (floating-point reductions differ with it). The same seed reproduces a summary exactly on the
    same versions and thread count.

    ``threads`` is torch's intra-op thread count, ``blas_threads`` the largest thread count of the loaded
    BLAS/OpenMP libraries (``transferlens run --threads N`` sets both to N for the whole run).
    """
    import platform
    from importlib.metadata import version

    from .. import __version__

    # sorted keys: the same text whether it comes from this process or back from the store
    return dict(sorted({
        "transferlens": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        # read from the installed metadata: importing scikit-learn only for its version costs 0.4 s
        "numpy": version("numpy"),
        "scipy": version("scipy"),
        "scikit-learn": version("scikit-learn"),
        "threads": torch.get_num_threads(),
        "blas_threads": _blas_threads(),
    }.items()))


def write_tables(rows: list[dict[str, Any]], summary: dict[str, Any], out_dir: str | Path) -> tuple[Path, Path]:
    """Create ``out_dir`` and write ``results.csv`` (floats with 6 significant digits, None empty) and
    ``summary.json``; return both paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    csv_path = out / "results.csv"
    with csv_path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        for r in rows:
            writer.writerow({k: ("" if v is None else (f"{v:.6g}" if isinstance(v, float) else v)) for k, v in r.items()})
    json_path = out / "summary.json"
    json_path.write_text(json.dumps(summary, indent=2) + "\n")
    return csv_path, json_path
