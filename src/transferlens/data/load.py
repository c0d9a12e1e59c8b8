"""A target task named by a string: an ``.npz`` file, a ``package.module:factory``, or a built-in domain.

* ``path/to/data.npz`` -- arrays ``x_train``, ``y_train``, ``x_test``, ``y_test`` (inputs of any shape, one
  row per sample; integer labels), optionally ``num_classes`` (default: the largest label + 1) and
  ``bounds`` (``[lo, hi]``, the box the inputs live in). Read with ``allow_pickle=False``.
* ``package.module:factory`` -- a callable (no arguments, or the keyword arguments given) returning a
  :class:`~transferlens.Task`.
* ``mnist1d:DOMAIN`` / ``digits:TRANSFORM`` -- the embedded domains (``mnist1d:noisy``, ``digits:rotate``; a bare
  ``mnist1d`` or ``digits`` is the reference / untransformed one).

:func:`task_identity` gives what a cache key needs to know about the task: the file's SHA-256, or the
factory name and its arguments, or the built-in name.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from .._imports import ImportSpecError, import_object
from .digits import digits_task
from .mnist1d import mnist1d_task
from .task import Task

__all__ = ["TaskLoadError", "load_task", "save_task", "task_identity"]

NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")


class TaskLoadError(ValueError):
    """A task that cannot be loaded; the message says why and what to do."""


def _builtin(spec: str) -> tuple[str, str] | None:
    family, _, variant = spec.partition(":")
    if family in ("mnist1d", "digits") and "/" not in spec and not spec.endswith(".npz"):
        return family, variant
    return None


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def task_identity(spec: str, kwargs: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Plain data that changes whenever the task does (for cache keys)."""
    if not isinstance(spec, str) or not spec:
        raise TaskLoadError(f"a task is named by a string (an .npz path, package.module:factory, mnist1d:DOMAIN or digits:TRANSFORM), got {spec!r}")
    if spec.endswith(".npz"):
        path = Path(spec)
        if not path.is_file():
            raise TaskLoadError(f"task file {spec!r} does not exist")
        return {"npz_sha256": _sha256(path)}
    if _builtin(spec):
        return {"builtin": spec}
    return {"factory": spec, "kwargs": dict(kwargs or {})}


def _load_npz(path: Path) -> Task:
    try:
        with np.load(path, allow_pickle=False) as data:
            missing = [k for k in NPZ_KEYS if k not in data.files]
            arrays = {k: data[k] for k in NPZ_KEYS if k in data.files}
            extra = {k: data[k] for k in ("num_classes", "bounds") if k in data.files}
    except (OSError, ValueError, EOFError) as exc:  # not a zip, damaged, or object arrays (pickles)
        raise TaskLoadError(f"{str(path)!r} is not a readable .npz file of plain arrays: {exc}") from None
    if missing:
        raise TaskLoadError(
            f"{str(path)!r} lacks the arrays {missing}; a task file holds {list(NPZ_KEYS)} (np.savez(path, "
            "x_train=..., y_train=..., x_test=..., y_test=...)), optionally num_classes and bounds"
        )
    for k in ("y_train", "y_test"):
        y = arrays[k]
        if y.ndim != 1 or y.dtype.kind not in "iub" and not (y.dtype.kind == "f" and np.all(y == np.round(y))):
            raise TaskLoadError(f"{k} in {str(path)!r} must be a 1-D array of integer class ids, got {y.dtype} of shape {y.shape}")
        arrays[k] = y.astype(np.int64)
    labels = np.concatenate([arrays["y_train"], arrays["y_test"]])
    if labels.size and labels.min() < 0:
        raise TaskLoadError(f"labels in {str(path)!r} must be class ids 0..C-1, found {int(labels.min())}")
    num_classes = int(extra["num_classes"]) if "num_classes" in extra else int(labels.max()) + 1
    bounds = tuple(float(b) for b in extra["bounds"]) if "bounds" in extra else None
    try:
        return Task(
            name=path.stem, x_train=arrays["x_train"].astype(np.float32), y_train=arrays["y_train"],
            x_test=arrays["x_test"].astype(np.float32), y_test=arrays["y_test"], num_classes=num_classes,
            bounds=bounds, description=f"loaded from {path.name}", meta={"file": str(path)},
        )
    except (TypeError, ValueError) as exc:
        raise TaskLoadError(f"{str(path)!r} does not make a valid task: {exc}") from None


def load_task(spec: str, kwargs: Mapping[str, Any] | None = None) -> Task:
    """The :class:`~transferlens.Task` named by ``spec`` (see the module docstring)."""
    task_identity(spec, kwargs)  # validates the name and that a file exists
    if spec.endswith(".npz"):
        return _load_npz(Path(spec))
    builtin = _builtin(spec)
    if builtin is not None:
        family, variant = builtin
        try:
            if family == "mnist1d":
                return mnist1d_task(variant or "reference", **dict(kwargs or {}))
            return digits_task(variant or "none", **dict(kwargs or {}))
        except (TypeError, ValueError) as exc:
            raise TaskLoadError(f"{spec!r}: {exc}") from None
    try:
        factory = import_object(spec, "task factory")
    except ImportSpecError as exc:
        raise TaskLoadError(str(exc)) from None
    try:
        task = factory(**dict(kwargs or {}))
    except Exception as exc:  # noqa: BLE001 - the user's code: report it, do not crash with its traceback
        raise TaskLoadError(f"the task factory {spec!r} raised {type(exc).__name__}: {exc}") from None
    if not isinstance(task, Task):
        raise TaskLoadError(
            f"the task factory {spec!r} returned a {type(task).__name__}, not a transferlens.Task; build one with "
            "transferlens.Task(name, x_train, y_train, x_test, y_test, num_classes)"
        )
    return task


def save_task(task: Task, path: str | os.PathLike[str]) -> Path:
    """Write ``task`` as an ``.npz`` file that :func:`load_task` reads back."""
    p = Path(path)
    extra: dict[str, Any] = {"num_classes": np.int64(task.num_classes)}
    if task.bounds is not None:
        extra["bounds"] = np.array(task.bounds, dtype=np.float64)
    np.savez_compressed(p, x_train=task.x_train.numpy(), y_train=task.y_train.numpy(), x_test=task.x_test.numpy(),
             y_test=task.y_test.numpy(), **extra)
    return p
