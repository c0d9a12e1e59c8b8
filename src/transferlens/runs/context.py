"""What a cell computes and what it may read while it does."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

if TYPE_CHECKING:  # the store is optional: an in-memory run has none
    from .store import Store

Row = tuple[str, str, "float | None"]


@dataclass
class CellOutput:
    """The outputs of one cell: ``results`` are ``(metric, direction, value)`` rows (direction ``""`` when
    the metric has none), ``payload`` small JSON data, ``arrays`` per-sample numpy arrays, ``weights`` state
    dicts of trained models. ``value`` is the rich in-memory object for a caller in the same process (a
    trained model, a result dataclass); it is never stored."""

    results: list[Row] = field(default_factory=list)
    payload: dict[str, Any] = field(default_factory=dict)
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    weights: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)
    value: Any = None

    def results_dict(self) -> dict[str, float | None]:
        return {(m if not d else f"{m}_{d}"): v for m, d, v in self.results}


class Context:
    """A cell's view of the run: the outputs of cells computed in this process, else the store's records,
    plus a cache for objects that several cells rebuild (tasks, models), and the device."""

    def __init__(self, store: "Store | None" = None, device: str = "auto") -> None:
        self.store = store
        self.device = device
        self.outputs: dict[str, CellOutput] = {}
        self.cache: dict[Any, Any] = {}

    def _missing(self, key: str) -> KeyError:
        return KeyError(f"cell {key} has no output in this run and no store to read it from")

    def results(self, key: str) -> dict[str, float | None]:
        if key in self.outputs:
            return self.outputs[key].results_dict()
        if self.store is None:
            raise self._missing(key)
        return self.store.results_dict(key)

    def payload(self, key: str) -> dict[str, Any]:
        if key in self.outputs:
            # as the store gives it back (sorted keys), so that an analysis reads the same either way
            return json.loads(json.dumps(self.outputs[key].payload, sort_keys=True))
        if self.store is None:
            raise self._missing(key)
        cell = self.store.cell(key)
        return (cell or {}).get("payload") or {}

    def weights(self, key: str, name: str = "weights") -> dict[str, torch.Tensor]:
        if key in self.outputs and name in self.outputs[key].weights:
            return self.outputs[key].weights[name]
        if self.store is None:
            raise self._missing(key)
        return self.store.load_weights(key, name)

    def array(self, key: str, name: str) -> np.ndarray:
        if key in self.outputs and name in self.outputs[key].arrays:
            return self.outputs[key].arrays[name]
        if self.store is None:
            raise self._missing(key)
        return self.store.load_array(key, name)

    def value(self, key: str) -> Any:
        """The in-memory object of a cell computed in this process (``None`` when it came from the store)."""
        out = self.outputs.get(key)
        return out.value if out is not None else None
