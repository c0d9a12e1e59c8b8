"""Import a user's object named ``package.module:attribute`` (a model factory, a task factory)."""

from __future__ import annotations

import importlib
import os
import sys
from typing import Any

__all__ = ["ImportSpecError", "import_object"]


class ImportSpecError(ValueError):
    """A ``package.module:name`` that cannot be imported; the message says why and what to do."""


def import_object(spec: str, what: str = "factory") -> Any:
    """The object named by ``"package.module:attribute"`` (dotted attributes allowed after the colon).

    Imported as ``python -m`` would: the current folder is on the path, so a user's own file next to where
    the command runs is found.
    """
    if not isinstance(spec, str) or spec.count(":") != 1:
        raise ImportSpecError(f"{what} must be written 'package.module:name' (e.g. 'mymodels:build_net'), got {spec!r}")
    module_name, attr = spec.split(":")
    if not module_name or not attr:
        raise ImportSpecError(f"{what} {spec!r} needs both a module and a name around the colon")
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise ImportSpecError(
            f"cannot import module {module_name!r} for {what} {spec!r}: {exc}. Run from the folder that holds it "
            "or put it on PYTHONPATH"
        ) from None
    except Exception as exc:  # noqa: BLE001 - the user's module raised while importing
        raise ImportSpecError(f"importing {module_name!r} for {what} {spec!r} raised {type(exc).__name__}: {exc}") from None
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ImportSpecError(f"module {module_name!r} has no attribute {attr!r} (named by {what} {spec!r})")
        obj = getattr(obj, part)
    return obj
