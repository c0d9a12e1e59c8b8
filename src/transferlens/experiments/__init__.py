"""Experiments: each a pure function ``config -> result`` (no printing), plus a writer for its outputs."""

from .e2 import E2Config, E2Result, SourceRecord, run_e2, write_e2

__all__ = ["E2Config", "E2Result", "SourceRecord", "run_e2", "write_e2"]
