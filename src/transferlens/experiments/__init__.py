"""Experiments: registry entries (config, grid of cells, analysis, outputs) looked up by name."""

from .base import REGISTRY, Experiment, experiment_names, get_experiment
from .e1 import E1Config, E1Result, run_e1, write_e1
from .e2 import E2Config, E2Result, SourceRecord, run_e2, write_e2
from .select import Candidate, SelectConfig, SelectResult
from .selection import SelectionConfig, SelectionResult
from .robust import RobustConfig, RobustResult
from .overlap import OverlapConfig, OverlapResult
from .distill_study import DistillConfig, DistillStudyResult

__all__ = [
    "Candidate", "E1Config", "E1Result", "SelectConfig", "SelectResult", "SelectionConfig", "SelectionResult", "RobustConfig", "RobustResult", "OverlapConfig", "OverlapResult", "DistillConfig", "DistillStudyResult", "E2Config", "E2Result", "Experiment", "REGISTRY", "SourceRecord", "experiment_names",
    "get_experiment", "run_e1", "run_e2", "write_e1", "write_e2",
]
