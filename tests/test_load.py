"""Loading a user's model: factories, safetensors / weights-only checkpoints, clear refusals."""

from __future__ import annotations

import sys
import textwrap

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from transferlens.models.load import ModelLoadError, default_head, import_object, load_model, load_state_dict

USER_MODULE = textwrap.dedent(
    """
    import torch
    from torch import nn

    class Net(nn.Module):
        def __init__(self, width=8, classes=3):
            super().__init__()
            self.body = nn.Sequential(nn.Linear(4, width), nn.ReLU())
            self.out = nn.Linear(width, classes)

        def forward(self, x):
            return self.out(self.body(x))

    def build(width=8):
        return Net(width)

    def broken():
        raise RuntimeError("no GPU here")

    def not_a_model():
        return 42

    def no_linear():
        return nn.Sequential(nn.Conv1d(1, 2, 3), nn.Flatten())
    """
)


@pytest.fixture()
def user_module(tmp_path, monkeypatch):
    name = f"user_models_{abs(hash(str(tmp_path))) % 10**8}"
    (tmp_path / f"{name}.py").write_text(USER_MODULE)
    monkeypatch.chdir(tmp_path)
    yield name
    sys.modules.pop(name, None)
    if str(tmp_path) in sys.path:
        sys.path.remove(str(tmp_path))


def _trained_state(module_name, width=8):
    torch.manual_seed(3)
    return import_object(f"{module_name}:build")(width).state_dict()


@pytest.mark.parametrize("fmt", ["safetensors", "state_dict", "nested"])
def test_load_model_reads_weights_in_every_safe_format(user_module, tmp_path, fmt):
    state = _trained_state(user_module)
    if fmt == "safetensors":
        path = tmp_path / "w.safetensors"
        save_file(state, str(path))
    elif fmt == "state_dict":
        path = tmp_path / "w.pt"
        torch.save(state, path)
    else:
        path = tmp_path / "w.ckpt"
        torch.save({"state_dict": state, "epoch": 3}, path)
    model = load_model(f"{user_module}:build", weights=path)
    for key, value in model.module.state_dict().items():
        assert torch.equal(value, state[key])
    assert not model.training
    x = torch.randn(5, 4)
    feats = model.features(x)
    assert feats.shape == (5, 8)
    assert torch.allclose(model(x), model.module.out(feats))


def test_factory_kwargs_and_default_head(user_module):
    model = load_model(f"{user_module}:build", kwargs={"width": 5})
    assert model.head_name == "out" and model.features(torch.randn(2, 4)).shape == (2, 5)
    assert default_head(nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 4))) == "2"
    assert load_model(f"{user_module}:Net", head="body.0").head_name == "body.0"


def test_pickled_module_is_refused_with_the_reason(user_module, tmp_path):
    path = tmp_path / "whole.pt"
    torch.save(import_object(f"{user_module}:build")(), path)  # pickles the class: needs code to load
    with pytest.raises(ModelLoadError, match="never unpickles code"):
        load_model(f"{user_module}:build", weights=path)


def test_mismatching_weights_name_the_first_bad_key(user_module, tmp_path):
    state = _trained_state(user_module)
    missing = {k: v for k, v in state.items() if k != "out.bias"}
    save_file(missing, str(tmp_path / "missing.safetensors"))
    with pytest.raises(ModelLoadError, match="no tensor 'out.bias'"):
        load_model(f"{user_module}:build", weights=tmp_path / "missing.safetensors")
    with pytest.raises(ModelLoadError, match=r"'body.0.weight'.*shape \(8, 4\).*\(5, 4\)"):
        save_file(state, str(tmp_path / "w.safetensors"))
        load_model(f"{user_module}:build", kwargs={"width": 5}, weights=tmp_path / "w.safetensors")
    extra = dict(state, **{"aux.weight": torch.zeros(2)})
    save_file(extra, str(tmp_path / "extra.safetensors"))
    with pytest.raises(ModelLoadError, match="'aux.weight'"):
        load_model(f"{user_module}:build", weights=tmp_path / "extra.safetensors")


def test_bad_factories_are_refused_clearly(user_module):
    with pytest.raises(ModelLoadError, match="raised RuntimeError: no GPU here"):
        load_model(f"{user_module}:broken")
    with pytest.raises(ModelLoadError, match="not a torch.nn.Module"):
        load_model(f"{user_module}:not_a_model")
    with pytest.raises(ModelLoadError, match="no nn.Linear"):
        load_model(f"{user_module}:no_linear")
    with pytest.raises(ModelLoadError, match="no attribute 'nope'"):
        load_model(f"{user_module}:nope")
    with pytest.raises(ModelLoadError, match="cannot import module 'no_such_module_xyz'"):
        load_model("no_such_module_xyz:build")
    with pytest.raises(ModelLoadError, match="package.module:name"):
        load_model("just_a_name")
    with pytest.raises(ModelLoadError, match="no submodule|not a callable|candidates"):
        load_model(f"{user_module}:build", head="missing_layer")


def test_bad_weight_files(tmp_path):
    with pytest.raises(ModelLoadError, match="does not exist"):
        load_state_dict(tmp_path / "nope.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ModelLoadError, match="not a readable .safetensors"):
        load_state_dict(tmp_path / "junk.safetensors")
    torch.save([1, 2, 3], tmp_path / "list.pt")
    with pytest.raises(ModelLoadError, match="does not hold a state dict"):
        load_state_dict(tmp_path / "list.pt")
    (tmp_path / "junk.pt").write_bytes(b"\x00garbage")
    with pytest.raises(ModelLoadError, match="cannot be read as weights only"):
        load_state_dict(tmp_path / "junk.pt")
