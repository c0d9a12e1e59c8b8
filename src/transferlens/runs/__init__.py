"""Runs as data: cells with content-hash keys, a results store, TOML configs, and the runner."""

from .context import CellOutput, Context
from .runner import RunInterrupted, RunOutcome, execute
from .spec import SCHEMA_VERSION, Cell, canonical_json, cell_key, derive_seed

__all__ = [
    "SCHEMA_VERSION", "Cell", "CellOutput", "Context", "RunInterrupted", "RunOutcome", "canonical_json",
    "cell_key", "derive_seed", "execute",
]
