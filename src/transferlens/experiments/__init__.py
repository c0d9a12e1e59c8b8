"""Experiments: each a pure function ``config -> result`` (no printing), plus a writer for its outputs."""

from .e1 import E1Config, E1Result, run_e1, write_e1
from .e2 import E2Config, E2Result, SourceRecord, run_e2, write_e2

__all__ = ["E1Config", "E1Result", "E2Config", "E2Result", "SourceRecord", "run_e1", "run_e2", "write_e1", "write_e2"]
