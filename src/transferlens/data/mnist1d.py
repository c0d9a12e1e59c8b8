"""MNIST-1D domains, generated procedurally by the ``mnist1d`` package (never downloaded).

The generator's own arguments are natural domain-shift knobs: noise levels, shear, translation,
scale, and the spatial shuffle of the sequence. ``MNIST1D_DOMAINS`` names a ladder of domains from the
reference domain to severe shifts; :func:`mnist1d_task` builds any of them, or any custom mix of knobs.

Generating a 5,000-sample domain takes seconds and gives the same arrays every time for the same
arguments, so each generated set is kept on disk (an ``.npz`` named by a hash of the generator arguments
and the ``mnist1d`` version) under ``$TRANSFERLENS_CACHE`` (default ``$XDG_CACHE_HOME/transferlens``,
else ``~/.cache/transferlens``), and read back instead of generated again. ``TRANSFERLENS_CACHE=off``
turns the disk cache off; a cache that cannot be written is skipped silently (the data are generated).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import tempfile
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

from .._validate import check_int, check_real, check_seed
from .task import Task

# Knobs of mnist1d's generator that describe the domain (plus ``seed`` and sample counts).
SHIFT_KNOBS = (
    "scale_coeff",
    "max_translation",
    "corr_noise_scale",
    "iid_noise_scale",
    "shear_scale",
    "shuffle_seq",
    "padding",
    "template_len",
)

# Named domains, ordered from no shift to severe shift. Each maps to generator overrides and a
# one-line description. "reference" is mnist1d's default domain.
MNIST1D_DOMAINS: dict[str, tuple[dict[str, Any], str]] = {
    "reference": ({}, "MNIST-1D default domain"),
    "noisy": ({"iid_noise_scale": 0.1, "corr_noise_scale": 0.5}, "MNIST-1D with stronger background noise"),
    "sheared": ({"shear_scale": 2.0, "scale_coeff": 0.8}, "MNIST-1D with strong shear and scale jitter"),
    "untranslated": ({"max_translation": 2, "corr_noise_scale": 0.05}, "MNIST-1D with digits barely translated"),
    "very-noisy": ({"iid_noise_scale": 0.4, "corr_noise_scale": 1.0}, "MNIST-1D drowned in noise"),
    "shuffled": ({"shuffle_seq": True}, "MNIST-1D with the 40 positions permuted (spatial structure destroyed)"),
}


@contextmanager
def _preserve_global_rng() -> Iterator[None]:
    """mnist1d seeds Python's and NumPy's global RNGs; keep the caller's streams untouched."""
    np_state = np.random.get_state()
    py_state = random.getstate()
    try:
        yield
    finally:
        np.random.set_state(np_state)
        random.setstate(py_state)


Arrays = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]
_FIELDS = ("x", "y", "x_test", "y_test")


def cache_dir() -> Path | None:
    """Where generated MNIST-1D sets are kept on disk (``None``: ``TRANSFERLENS_CACHE=off``)."""
    env = os.environ.get("TRANSFERLENS_CACHE")
    if env is not None and env.strip().lower() in ("off", "0", "no", "false", ""):
        return None
    if env:
        return Path(env).expanduser() / "mnist1d"
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "transferlens" / "mnist1d"


def _cache_path(items: tuple[tuple[str, Any], ...]) -> Path | None:
    folder = cache_dir()
    if folder is None:
        return None
    from importlib.metadata import PackageNotFoundError, version

    try:
        generator = version("mnist1d")
    except PackageNotFoundError:
        generator = "unknown"
    digest = hashlib.sha256(json.dumps([generator, [list(i) for i in items]], default=str).encode()).hexdigest()[:24]
    return folder / f"{digest}.npz"


def _read_cached(path: Path) -> Arrays | None:
    import zipfile

    try:
        with np.load(path, allow_pickle=False) as f:
            return tuple(f[k] for k in _FIELDS)  # type: ignore[return-value]
    except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile):  # unreadable or truncated: generate again
        return None


def _write_cached(path: Path, arrays: Arrays) -> None:
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **dict(zip(_FIELDS, arrays)))
        os.replace(tmp, path)  # atomic: a reader never sees half a file
    except OSError:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)


@lru_cache(maxsize=32)
def _generate(items: tuple[tuple[str, Any], ...]) -> Arrays:
    """The generated arrays for these generator arguments: from memory, else from the disk cache, else made."""
    path = _cache_path(items)
    cached = _read_cached(path) if path is not None and path.exists() else None
    if cached is not None:
        return cached
    arrays = _make(items)
    if path is not None:
        _write_cached(path, arrays)
    return arrays


def _make(items: tuple[tuple[str, Any], ...]) -> Arrays:
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args(as_dict=True)
    for key, value in items:
        args[key] = list(value) if isinstance(value, tuple) else value
    args.pop("url", None)

    class _Args:  # mnist1d reads attributes
        pass

    obj = _Args()
    obj.__dict__.update(args)
    with _preserve_global_rng():
        data = make_dataset(obj)
    return data["x"], data["y"], data["x_test"], data["y_test"]


def mnist1d_task(
    domain: str = "reference",
    *,
    seed: int = 42,
    num_samples: int = 5000,
    train_split: float = 0.8,
    name: str | None = None,
    **overrides: Any,
) -> Task:
    """Build an MNIST-1D task.

    ``domain`` picks a named domain from :data:`MNIST1D_DOMAINS`; ``overrides`` set any generator knob
    in :data:`SHIFT_KNOBS` on top of it. Inputs are (N, 40) float32 signals standardized over the whole
    generated set (mnist1d's own convention), 10 classes, no input bounds.
    """
    if domain not in MNIST1D_DOMAINS:
        raise ValueError(f"unknown MNIST-1D domain {domain!r}; choose one of {sorted(MNIST1D_DOMAINS)}")
    unknown = set(overrides) - set(SHIFT_KNOBS)
    if unknown:
        raise ValueError(f"unknown MNIST-1D knob(s) {sorted(unknown)}; valid knobs: {list(SHIFT_KNOBS)}")
    num_samples = check_int(num_samples, "num_samples", 20)
    train_split = check_real(train_split, "train_split", positive=True, below=1.0)
    seed = check_seed(seed, limit=2**32)  # mnist1d seeds numpy's legacy global RNG
    base, description = MNIST1D_DOMAINS[domain]
    knobs = {**base, **overrides}
    items = dict(knobs, seed=int(seed), num_samples=num_samples, train_split=float(train_split))
    key = tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in items.items()))
    x, y, xt, yt = _generate(key)
    if overrides:
        description += " + " + ", ".join(f"{k}={v}" for k, v in sorted(overrides.items()))
    return Task(
        name=name or (f"mnist1d-{domain}" + (f"-s{seed}" if seed != 42 else "")),
        x_train=torch.tensor(x, dtype=torch.float32),
        y_train=torch.tensor(y, dtype=torch.long),
        x_test=torch.tensor(xt, dtype=torch.float32),
        y_test=torch.tensor(yt, dtype=torch.long),
        num_classes=10,
        bounds=None,
        description=description + f" (generator seed {seed})",
        meta={"generator": "mnist1d", "domain": domain, **items},
    )
