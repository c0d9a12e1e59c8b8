"""Cells: units of work named by plain data, with content-hash keys and key-derived seeds.

A study is a grid of cells (train this model; measure these two models with these options). A cell is
its ``kind`` plus a ``spec`` of plain JSON data; its key hashes the canonical JSON of both together with
:data:`SCHEMA_VERSION`, so the same work always has the same key, whatever grid it sits in. Every random
draw a cell makes takes its seed from the key (:meth:`Cell.seed`), never from a list position: adding,
removing or reordering cells leaves every other cell's numbers unchanged.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from typing import Any, Mapping

# Bump when a cell's computation or the meaning of its results changes: every key changes with it, so a
# store never serves results computed under the old meaning.
SCHEMA_VERSION = 1

# Derived seeds stay below 2**31: every generator in use (torch, numpy, mnist1d, scikit-learn) takes them.
SEED_BITS = 31


def _check_plain(obj: Any, path: str) -> None:
    if obj is None or isinstance(obj, (str, bool, int)):
        return
    if isinstance(obj, float):
        if not math.isfinite(obj):
            raise ValueError(f"cell spec value at {path or '<root>'} is {obj}; specs hold finite numbers only")
        return
    if isinstance(obj, Mapping):
        for k, v in obj.items():
            if not isinstance(k, str):
                raise TypeError(f"cell spec keys must be strings, got {k!r} at {path or '<root>'}")
            _check_plain(v, f"{path}.{k}" if path else k)
        return
    if isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            _check_plain(v, f"{path}[{i}]")
        return
    raise TypeError(
        f"cell spec value at {path or '<root>'} is a {type(obj).__name__}; specs hold plain JSON data only "
        "(dict, list, str, int, float, bool, None)"
    )


def canonical_json(obj: Any) -> str:
    """The one JSON text of ``obj``: sorted keys, no whitespace, tuples as lists, finite floats only."""
    _check_plain(obj, "")
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)


def digest(obj: Any) -> str:
    """SHA-256 (hex) of the canonical JSON of ``obj``."""
    return hashlib.sha256(canonical_json(obj).encode()).hexdigest()


def derive_seed(*parts: Any) -> int:
    """A seed in ``[0, 2**31)`` from any plain data (e.g. a key and a purpose such as ``"init"``)."""
    h = hashlib.sha256(canonical_json(list(parts)).encode()).digest()
    return int.from_bytes(h[:8], "big") >> (64 - SEED_BITS)


@dataclass(frozen=True)
class Cell:
    """One unit of work: ``kind`` names the computation, ``spec`` (plain JSON data) everything it depends on.

    ``deps`` are the keys of the cells whose outputs this one reads (a measurement reads two trained
    models); they are derived from the spec, so they do not enter the key. ``label`` is a short human name.
    """

    kind: str
    spec_json: str
    deps: tuple[str, ...] = ()
    label: str = ""
    key: str = field(init=False)

    def __post_init__(self) -> None:
        if not isinstance(self.kind, str) or not self.kind:
            raise ValueError(f"cell kind must be a non-empty string, got {self.kind!r}")
        object.__setattr__(self, "key", cell_key(self.kind, json.loads(self.spec_json)))

    @classmethod
    def make(cls, kind: str, spec: Mapping[str, Any], deps: tuple[str, ...] = (), label: str = "") -> "Cell":
        return cls(kind=kind, spec_json=canonical_json(dict(spec)), deps=tuple(deps), label=label)

    @property
    def spec(self) -> dict[str, Any]:
        """A fresh copy of the spec (the cell itself stays immutable)."""
        return json.loads(self.spec_json)

    def seed(self, purpose: str) -> int:
        """The seed of one random draw of this cell (``purpose`` names it: ``"init"``, ``"train"``, ...)."""
        return derive_seed(self.key, purpose)


def cell_key(kind: str, spec: Mapping[str, Any]) -> str:
    """The key of a cell: 20 hex digits of the hash of its kind, spec and the result-schema version."""
    return digest({"kind": kind, "spec": dict(spec), "schema": SCHEMA_VERSION})[:20]


def check_grid(cells: list[Cell]) -> list[Cell]:
    """Cells in an order that respects dependencies, each key once; a dependency outside the grid or a
    duplicate key with another spec is an error."""
    seen: dict[str, Cell] = {}
    for c in cells:
        if c.key in seen:
            if seen[c.key].spec_json != c.spec_json or seen[c.key].kind != c.kind:
                raise ValueError(f"two different cells share the key {c.key}")
            continue
        for d in c.deps:
            if d not in seen:
                raise ValueError(f"cell {c.label or c.key} depends on {d}, which does not come before it in the grid")
        seen[c.key] = c
    return list(seen.values())
