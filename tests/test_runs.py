"""Cells, keys and key-derived seeds, and the runner (in memory): a cell's numbers never depend on its
position in the grid, a failing cell is recorded while the others go on."""

from __future__ import annotations

import math

import numpy as np
import pytest

from toy_experiment import Toy, ToyConfig
from transferlens.experiments.base import REGISTRY, experiment_names, get_experiment
from transferlens.experiments.e2 import E2Config, run_e2
from transferlens.runs import Cell, CellOutput, Context, canonical_json, cell_key, derive_seed, execute
from transferlens.runs.spec import SCHEMA_VERSION, check_grid
from transferlens.training import TrainConfig


def test_canonical_json_is_order_free_and_plain() -> None:
    assert canonical_json({"b": 1, "a": [1, 2.5, None, True]}) == '{"a":[1,2.5,null,true],"b":1}'
    assert canonical_json({"a": (1, 2)}) == canonical_json({"a": [1, 2]})
    with pytest.raises(ValueError, match="finite"):
        canonical_json({"eps": math.nan})
    with pytest.raises(TypeError, match="plain JSON"):
        canonical_json({"x": np.float32(1.0)})
    with pytest.raises(TypeError, match="keys must be strings"):
        canonical_json({1: 2})


def test_keys_hash_kind_spec_and_schema_version() -> None:
    a = Cell.make("train", {"arch": "mlp", "lr": 0.01})
    assert a.key == Cell.make("train", {"lr": 0.01, "arch": "mlp"}).key  # key order does not matter
    assert a.key != Cell.make("train", {"arch": "mlp", "lr": 0.02}).key
    assert a.key != Cell.make("measure", {"arch": "mlp", "lr": 0.01}).key
    assert len(a.key) == 20 and int(a.key, 16) >= 0
    assert cell_key("train", {"arch": "mlp", "lr": 0.01}) == a.key
    # the schema version is part of the key: results computed under another meaning are never served
    import hashlib

    expected = hashlib.sha256(canonical_json({"kind": "train", "spec": {"arch": "mlp", "lr": 0.01}, "schema": SCHEMA_VERSION}).encode()).hexdigest()[:20]
    assert a.key == expected
    # the spec handed out is a copy: the cell stays immutable
    a.spec["arch"] = "cnn1d"
    assert a.spec["arch"] == "mlp"


def test_derived_seeds_are_stable_distinct_and_in_range() -> None:
    c = Cell.make("train", {"arch": "mlp"})
    assert c.seed("init") == c.seed("init") == derive_seed(c.key, "init")
    assert c.seed("init") != c.seed("train")
    seeds = [derive_seed("k", i) for i in range(2000)]
    assert all(0 <= s < 2**31 for s in seeds) and len(set(seeds)) == len(seeds)


def test_grid_checks_dependencies_and_duplicates() -> None:
    a = Cell.make("train", {"x": 1})
    b = Cell.make("measure", {"x": 1}, deps=(a.key,))
    assert [c.key for c in check_grid([a, b, a])] == [a.key, b.key]
    with pytest.raises(ValueError, match="does not come before it"):
        check_grid([b, a])


# The toy experiment (tests/toy_experiment.py): a base cell, then one cell per item.


def test_a_cells_numbers_do_not_depend_on_its_position_in_the_grid() -> None:
    full = execute(Toy(), ToyConfig(n=5)).result
    fewer = execute(Toy(), ToyConfig(n=3)).result
    assert all(fewer[k] == full[k] for k in fewer)
    assert len(set(full.values())) == 5


def test_a_failing_cell_is_recorded_and_the_others_go_on() -> None:
    toy = Toy()
    out = execute(toy, ToyConfig(n=4, fail=(1,)))
    assert out.failed == (("item 1", "RuntimeError: item 1 cannot be computed"),)
    assert set(out.result) == {"item 0", "item 2", "item 3"} and out.n_computed == 4
    assert toy.calls == ["base", "item 0", "item 1", "item 2", "item 3"]


def test_dependents_of_a_failed_cell_are_not_computed() -> None:
    class BrokenBase(Toy):
        def run_cell(self, cell: Cell, ctx: Context) -> CellOutput:
            if cell.kind == "toy.base":
                raise ValueError("no base")
            return super().run_cell(cell, ctx)

    toy = BrokenBase()
    out = execute(toy, ToyConfig(n=2))
    assert toy.calls == []  # the items never ran
    assert [label for label, _ in out.failed] == ["base", "item 0", "item 1"]
    assert "a cell it needs failed" in out.failed[1][1]


def test_progress_names_each_cell() -> None:
    calls = []
    execute(Toy(), ToyConfig(n=2), progress=lambda *a: calls.append(a))
    assert calls[:3] == [("base", 0, 3), ("item 0", 1, 3), ("item 1", 2, 3)] and calls[-1] == ("done", 3, 3)


def test_registry_lists_e1_and_e2_and_refuses_unknown_names() -> None:
    assert {"synthetic", "e2"} <= set(experiment_names())
    assert get_experiment("e1") is get_experiment("synthetic") and get_experiment("default") is get_experiment("e2")
    assert "toy" not in REGISTRY  # defining a subclass does not register it
    with pytest.raises(ValueError, match="unknown experiment 'e9'; choose one of: .*e2"):
        get_experiment("e9")


# on the CPU, where equal seeds give equal numbers (GPU kernels may round differently run to run)
TINY = dict(num_samples=300, n_eval=60, n_boot=50, train=TrainConfig(epochs=3, patience=2), device="cpu")


@pytest.mark.filterwarnings("ignore::transferlens.TrainingWarning")
def test_e2_adding_a_source_leaves_every_other_source_unchanged() -> None:
    small = run_e2(E2Config(source_domains=("reference", "shuffled"), architectures=("mlp", "cnn1d"), **TINY))
    large = run_e2(E2Config(source_domains=("noisy", "reference", "shuffled"), architectures=("mlp", "cnn1d"), **TINY))
    rows = {r["source"]: r for r in large.rows()}
    for r in small.rows():
        assert r == rows[r["source"]], r["source"]
    assert small.target == large.target
