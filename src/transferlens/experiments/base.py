"""The experiment framework: an experiment is a config class, a grid of cells, a cell runner and an analysis.

An :class:`Experiment` declares

* ``config_cls``: a frozen dataclass (TOML round trip through :mod:`transferlens.runs.config`), with
  named ``variants`` (partial configs such as ``"quick"``);
* ``grid(config)``: the cells to compute, dependencies first;
* ``run_cell(cell, ctx)``: one cell's outputs (:class:`~transferlens.runs.context.CellOutput`); by default
  the function ``cell_kinds[cell.kind]``;
* ``analyse(config, cells, ctx)``: the result object, built only from what the cells recorded (so the
  same analysis runs on a fresh in-memory run and on a run read back from the store);
* ``write(result, out_dir)``: ``results.csv``, ``summary.json`` and ``report.html``.

The CLI knows no experiment by name: it looks them up in :data:`REGISTRY`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from collections.abc import Mapping
from typing import Any, Callable, ClassVar

from ..runs.context import CellOutput, Context
from ..runs.spec import Cell

Progress = Callable[[str, int, int], None]


class Experiment(ABC):
    """Base class of the registry entries (subclasses set the class attributes and the four methods)."""

    name: ClassVar[str]
    aliases: ClassVar[tuple[str, ...]] = ()
    title: ClassVar[str] = ""
    config_cls: ClassVar[type]
    variants: ClassVar[dict[str, dict[str, Any]]] = {}
    ground_truth: ClassVar[str] = ""
    # cell kind -> the function that computes such a cell, ``fn(cell, ctx) -> CellOutput``
    cell_kinds: ClassVar[Mapping[str, Callable[[Cell, Context], CellOutput]]] = {}

    @abstractmethod
    def grid(self, config: Any) -> list[Cell]:
        """The cells of a run, dependencies first."""

    def run_cell(self, cell: Cell, ctx: Context) -> CellOutput:
        """Compute one cell: the function :attr:`cell_kinds` names for its kind."""
        try:
            fn = self.cell_kinds[cell.kind]
        except KeyError:
            raise ValueError(f"experiment {self.name!r} has no cell kind {cell.kind!r}; it knows {sorted(self.cell_kinds)}") from None
        return fn(cell, ctx)

    @abstractmethod
    def analyse(self, config: Any, cells: list[Cell], ctx: Context, seconds: float = 0.0) -> Any:
        """The result object, from the cells' recorded outputs only."""

    @abstractmethod
    def write(self, result: Any, out_dir: str | Path) -> dict[str, Path]:
        """Write results.csv, summary.json and report.html; return their paths."""

    def describe(self, config: Any) -> str:
        """One line for the console before the run starts."""
        return self.title

    def device(self, config: Any) -> str:
        return getattr(config, "device", "auto")


REGISTRY: dict[str, Experiment] = {}


def register(exp: Experiment) -> Experiment:
    for n in (exp.name, *exp.aliases):
        if n in REGISTRY and REGISTRY[n] is not exp:
            raise ValueError(f"experiment name {n!r} is registered twice")
        REGISTRY[n] = exp
    return exp


def experiment_names() -> list[str]:
    """Primary names, in registration order."""
    return list(dict.fromkeys(e.name for e in REGISTRY.values()))


def get_experiment(name: str) -> Experiment:
    if not isinstance(name, str) or name not in REGISTRY:
        known = ", ".join(f"{e.name}" + (f" ({', '.join(e.aliases)})" if e.aliases else "") for e in dict.fromkeys(REGISTRY.values()))
        raise ValueError(f"unknown experiment {name!r}; choose one of: {known}")
    return REGISTRY[name]
