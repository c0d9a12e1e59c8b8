"""`transferlens select`: the README's worked example end to end, caching in the store, and clear refusals."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from typer.testing import CliRunner

from transferlens.cli import app
from transferlens.data.load import TaskLoadError, load_task, save_task, task_identity
from transferlens.estimators import logme
from transferlens.experiments.select import Candidate, SelectConfig, _grid, _ranks, parse_candidate
from transferlens.knowledge import extract_features
from transferlens.models.load import load_model

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
NAMES = ("plain", "blur", "flip", "invert", "untrained")


def _candidates(names=NAMES) -> list[str]:
    return [f"{n}=examples.digits_models:small_mlp@examples/weights/{n}.safetensors" for n in names]


@pytest.fixture()
def in_repo(monkeypatch, tmp_path):
    """Run from the repository root (as the README does), with the store and outputs in tmp_path."""
    monkeypatch.chdir(ROOT)
    return tmp_path


def _select(tmp_path: Path, *extra: str, out: str = "out", names=NAMES):
    # on the CPU, as the features the tests recompute: a GPU rounds them differently (about 1e-7)
    args = ["select", "--target", "examples/target_rotate.npz", "--candidates", *_candidates(names), *extra,
            "--device", "cpu", "--store", str(tmp_path / "runs.db"), "--out", str(tmp_path / out)]
    return CliRunner().invoke(app, args)


def test_readme_example_ranks_every_candidate_and_verifies_the_top(in_repo):
    tmp = in_repo
    res = _select(tmp, "--verify", "3")
    assert res.exit_code == 0, res.output
    assert "best first by logme" in res.output and "verified accuracy" in res.output
    summary = json.loads((tmp / "out" / "summary.json").read_text())
    ranking = summary["ranking"]
    assert [r["name"] for r in ranking] and sorted(r["name"] for r in ranking) == sorted(NAMES)
    assert len(summary["estimators"]) >= 12
    # ranked by logme, best first, and the scores are the library's own on the extracted features
    values = [r["scores"]["logme"] for r in ranking]
    assert values == sorted(values, reverse=True) and [r["ranks"]["logme"] for r in ranking] == [1, 2, 3, 4, 5]
    task = load_task("examples/target_rotate.npz")
    top = ranking[0]
    model = load_model("examples.digits_models:small_mlp", weights=top["weights"])
    assert logme(extract_features(model, task.x_train), task.y_train) == pytest.approx(top["scores"]["logme"], rel=1e-9)
    # the top 3 by logme were verified, the others not
    assert [r["verified_accuracy"] is not None for r in ranking] == [True, True, True, False, False]
    rows = (tmp / "out" / "results.csv").read_text().splitlines()
    assert rows[0].startswith("candidate,factory,weights,leep") and len(rows) == 6
    assert (tmp / "out" / "report.html").stat().st_size > 0

    # a rerun computes nothing; asking for fewer estimators reuses the stored scores
    again = _select(tmp, "--verify", "3", out="again")
    assert again.exit_code == 0 and "0 cells computed" in again.output, again.output
    subset = _select(tmp, "--estimators", "logme", "leep", out="subset")
    assert subset.exit_code == 0 and "0 cells computed" in subset.output, subset.output
    assert json.loads((tmp / "subset" / "summary.json").read_text())["ranking"][0]["scores"]["logme"] == values[0]


def test_select_with_five_verified_reports_correlations(in_repo):
    res = _select(in_repo, "--verify", "5", "--estimators", "logme", "gbc", "nc1")
    assert res.exit_code == 0, res.output
    summary = json.loads((in_repo / "out" / "summary.json").read_text())
    assert set(summary["verification"]) == {"logme", "gbc", "nc1"}
    assert all(-1 <= v["spearman"] <= 1 for v in summary["verification"].values() if v["spearman"] is not None)


def test_keys_follow_the_content_not_the_names(in_repo, tmp_path):
    weights = tmp_path / "copy.safetensors"
    shutil.copy(EXAMPLES / "weights" / "plain.safetensors", weights)
    cfg = SelectConfig(target="examples/target_rotate.npz", estimators=("logme",), candidates=(
        Candidate("examples.digits_models:small_mlp", str(weights), name="a"),
        Candidate("examples.digits_models:small_mlp", "examples/weights/blur.safetensors", name="b"),
    ))
    keys = [c.key for c in _grid(cfg)]
    renamed = SelectConfig(target=cfg.target, estimators=cfg.estimators, candidates=(
        Candidate(cfg.candidates[0].factory, str(weights), name="renamed"), cfg.candidates[1]))
    assert [c.key for c in _grid(renamed)] == keys  # a display name is not part of any key
    state = load_model("examples.digits_models:small_mlp", weights=weights).module.state_dict()
    save_file({k: v + 1e-3 for k, v in state.items()}, str(weights))  # new weights, same path
    changed = [c.key for c in _grid(cfg)]
    assert changed[1] == keys[1] and changed[0] != keys[0]  # only what depends on the changed file
    assert sum(a != b for a, b in zip(changed, keys)) == 2  # its extract cell and its score


def test_parse_candidate():
    c = parse_candidate("mine=pkg.mod:build@w/x.safetensors")
    assert (c.name, c.factory, c.weights) == ("mine", "pkg.mod:build", "w/x.safetensors")
    c = parse_candidate("pkg.mod:build")
    assert (c.name, c.factory, c.weights, c.label) == ("", "pkg.mod:build", None, "build")
    assert parse_candidate("pkg.mod:build@w/x.pt").label == "build@x"
    with pytest.raises(ValueError, match="package.module:name"):
        parse_candidate("just_a_file.safetensors")


def test_ranks_share_ties_and_follow_the_direction():
    assert _ranks({"a": 1.0, "b": 3.0, "c": 3.0, "d": None}, True) == {"b": 1, "c": 1, "a": 3}
    assert _ranks({"a": 1.0, "b": 3.0}, False) == {"a": 1, "b": 2}


def test_bad_selections_are_refused_before_any_work(in_repo):
    tmp = in_repo
    one = _select(tmp, names=("plain",))
    assert one.exit_code == 2 and "at least 2 candidates" in one.output
    res = CliRunner().invoke(app, ["select", "--candidates", *_candidates(), "--store", str(tmp / "db"), "--out", str(tmp / "x")])
    assert res.exit_code == 2 and "needs a target task" in res.output
    res = _select(tmp, "--estimators", "logmee")
    assert res.exit_code == 2 and "unknown estimator 'logmee'" in res.output
    res = CliRunner().invoke(app, ["select", "--target", "examples/target_rotate.npz", "--candidates",
                                   "a=examples.digits_models:small_mlp@missing.safetensors", *_candidates(("plain",)),
                                   "--store", str(tmp / "db"), "--out", str(tmp / "y")])
    assert res.exit_code == 2 and "weights file 'missing.safetensors' does not exist" in res.output
    res = _select(tmp, "--bogus", "1")
    assert res.exit_code == 2 and "unknown option --bogus" in res.output
    assert not (tmp / "db").exists() or not any((tmp / "x").iterdir())


def test_a_candidate_that_fails_is_recorded_and_the_rest_are_ranked(in_repo):
    tmp = in_repo
    pickled = tmp / "whole.pt"
    torch.save(load_model("examples.digits_models:small_mlp").module, pickled)  # needs code to unpickle
    res = CliRunner().invoke(app, [
        "select", "--target", "examples/target_rotate.npz", "--estimators", "logme", "--candidates",
        *_candidates(("plain", "blur")), f"bad=examples.digits_models:small_mlp@{pickled}",
        "--store", str(tmp / "runs.db"), "--out", str(tmp / "out"),
    ])
    assert res.exit_code == 1, res.output
    assert "failed cell" in res.output and "never unpickles code" in res.output
    summary = json.loads((tmp / "out" / "summary.json").read_text())
    scored = {r["name"]: r["scores"].get("logme") for r in summary["ranking"]}
    assert scored["plain"] is not None and scored["blur"] is not None and scored["bad"] is None


def test_task_files_round_trip_and_bad_ones_are_refused(tmp_path):
    task = load_task("digits:rotate", {"strength": 0.5, "seed": 1})
    path = save_task(task, tmp_path / "t.npz")
    back = load_task(str(path))
    assert torch.equal(back.x_train, task.x_train) and torch.equal(back.y_test, task.y_test)
    assert back.num_classes == task.num_classes and back.bounds == task.bounds
    assert task_identity(str(path)) == task_identity(str(path)) and "npz_sha256" in task_identity(str(path))
    np.savez(tmp_path / "partial.npz", x_train=np.zeros((4, 2)), y_train=np.zeros(4))
    with pytest.raises(TaskLoadError, match=r"lacks the arrays \['x_test', 'y_test'\]"):
        load_task(str(tmp_path / "partial.npz"))
    np.savez(tmp_path / "obj.npz", x_train=np.array([object()]), y_train=np.zeros(1), x_test=np.zeros(1), y_test=np.zeros(1))
    with pytest.raises(TaskLoadError, match="not a readable .npz"):
        load_task(str(tmp_path / "obj.npz"))
    with pytest.raises(TaskLoadError, match="does not exist"):
        load_task(str(tmp_path / "nope.npz"))
    with pytest.raises(TaskLoadError, match="unknown transform"):
        load_task("digits:nope")
    with pytest.raises(TaskLoadError, match="cannot import module"):
        load_task("no_such_module_abc:make")


def _readme_block(marker: str, fence: str) -> str:
    readme = (ROOT / "README.md").read_text()
    blocks = [b for b in readme.split(f"```{fence}\n")[1:] if marker in b.split("```")[0]]
    assert blocks, f"no ```{fence} block with {marker!r} in the README"
    return blocks[0].split("```")[0]


def test_the_readme_select_command_and_config_work_as_written(in_repo):
    import shlex
    import tomllib

    command = _readme_block("transferlens select --target", "bash").replace("\\\n", " ")
    args = shlex.split(command)
    assert args[0] == "transferlens"
    res = CliRunner().invoke(app, [*args[1:], "--store", str(in_repo / "runs.db"), "--out", str(in_repo / "readme")])
    assert res.exit_code == 0, res.output
    assert "untrained" in res.output and "verified accuracy" in res.output
    toml_text = _readme_block("[[candidates]]", "toml")
    cfg_path = in_repo / "select.toml"
    cfg_path.write_text(toml_text)
    tomllib.loads(toml_text)
    res = CliRunner().invoke(app, ["select", "--config", str(cfg_path), "--store", str(in_repo / "runs.db"),
                                   "--out", str(in_repo / "from-config")])
    assert res.exit_code == 0, res.output
    summary = json.loads((in_repo / "from-config" / "summary.json").read_text())
    assert [e["name"] for e in summary["estimators"]] == ["logme", "gbc", "nc1", "source_accuracy"]
    assert sum(r["verified_accuracy"] is not None for r in summary["ranking"]) == 2


def test_reference_adds_the_alpha_metrics(in_repo):
    ref = "examples.digits_models:small_mlp@examples/weights/reference.safetensors"
    res = _select(in_repo, "--reference", ref, "--estimators", "logme", "alpha1_t2s", "combined_s2t",
                  names=("plain", "untrained", "flip"))
    assert res.exit_code == 0, res.output
    ranking = json.loads((in_repo / "out" / "summary.json").read_text())["ranking"]
    for r in ranking:
        assert 0 < r["scores"]["alpha1_t2s"] and r["scores"]["combined_s2t"] is not None
    no_ref = _select(in_repo, "--estimators", "alpha1_t2s", out="noref")
    assert no_ref.exit_code == 2 and "needs a reference model" in no_ref.output


def test_a_candidate_that_cannot_take_the_target_inputs_fails_clearly(in_repo, tmp_path):
    (tmp_path / "wrong_shape.py").write_text(
        "from torch import nn\n\ndef build():\n    return nn.Sequential(nn.Linear(40, 16), nn.ReLU(), nn.Linear(16, 10))\n"
    )
    import sys

    sys.path.insert(0, str(tmp_path))
    try:
        res = CliRunner().invoke(app, [
            "select", "--target", "examples/target_rotate.npz", "--estimators", "logme", "--candidates",
            *_candidates(("plain", "blur")), "bad=wrong_shape:build", "--store", str(tmp_path / "runs.db"),
            "--out", str(tmp_path / "out"),
        ])
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("wrong_shape", None)
    assert res.exit_code == 1, res.output
    assert "failed cell" in res.output and "extract bad" in res.output
    assert "shape" in res.output  # the reason names the shape problem


def test_built_in_architectures_are_candidates_too(in_repo, tmp_path):
    import transferlens as tl

    task = load_task("examples/target_rotate.npz")
    paths = []
    for i, arch in enumerate(("mlp", "cnn2d")):
        model = tl.build_model(arch, task.input_shape, 7, seed=i)  # a 7-class source head: read from the weights
        paths.append(tmp_path / f"{arch}.safetensors")
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(paths[-1]))
    res = CliRunner().invoke(app, [
        "select", "--target", "examples/target_rotate.npz", "--estimators", "logme", "leep", "--candidates",
        f"mlp@{paths[0]}", f"cnn2d@{paths[1]}", *_candidates(("plain",)),
        "--store", str(tmp_path / "runs.db"), "--out", str(tmp_path / "out"),
    ])
    assert res.exit_code == 0, res.output
    ranking = json.loads((tmp_path / "out" / "summary.json").read_text())["ranking"]
    assert {r["name"] for r in ranking} == {"mlp@mlp", "cnn2d@cnn2d", "plain"}
    assert all(r["scores"]["logme"] is not None and r["scores"]["leep"] is not None for r in ranking)
    model = load_model("cnn2d", weights=paths[1], input_shape=task.input_shape)
    assert model.num_outputs == 7
    from transferlens.models.load import ModelLoadError

    with pytest.raises(ModelLoadError, match="needs its number of classes"):
        load_model("mlp", input_shape=task.input_shape)
    with pytest.raises(ModelLoadError, match="pass input_shape"):
        load_model("mlp", kwargs={"num_classes": 3})
