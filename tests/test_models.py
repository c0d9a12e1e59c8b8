"""Tests for the model contract (``transferlens.models``): zoo architectures and ``wrap_model``."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import nn

from transferlens.models import ARCHITECTURES, CNN1D, CNN2D, MLP, FeatureModel, WrappedModel, build_model, wrap_model


# arch, input_shape, kwargs, expected feature_dim
CASES = [
    ("mlp", (40,), {}, 64),
    ("mlp", (1, 8, 8), {"hidden": (16, 8)}, 8),
    ("mlp", (5,), {"hidden": ()}, 5),
    ("cnn1d", (40,), {}, 64),
    ("cnn1d", (3, 17), {"channels": 4, "feature_dim": 10}, 10),
    ("cnn2d", (1, 8, 8), {}, 64),
    ("cnn2d", (3, 7, 9), {"channels": 4, "feature_dim": 12}, 12),
]
IDS = [f"{a}-{'x'.join(map(str, s))}" for a, s, _, _ in CASES]


def _x(shape: tuple[int, ...], n: int = 5, seed: int = 1) -> torch.Tensor:
    return torch.randn((n, *shape), generator=torch.Generator().manual_seed(seed))


def test_architectures_registry() -> None:
    assert ARCHITECTURES == {"mlp": MLP, "cnn1d": CNN1D, "cnn2d": CNN2D}


@pytest.mark.parametrize("arch,shape,kwargs,dim", CASES, ids=IDS)
def test_contract_forward_is_head_of_features(arch: str, shape: tuple[int, ...], kwargs: dict, dim: int) -> None:
    model = build_model(arch, shape, 7, seed=0, **kwargs)
    assert isinstance(model, FeatureModel) and isinstance(model, ARCHITECTURES[arch])
    assert model.arch == arch
    model.eval()
    x = _x(shape)
    with torch.no_grad():
        feats = model.features(x)
        out = model(x)
        via_head = model.head(feats)
    assert feats.shape == (5, dim)
    assert model.feature_dim == dim
    assert model.num_outputs == 7
    assert out.shape == (5, 7)
    assert torch.allclose(out, via_head)
    assert bool(torch.isfinite(out).all())


@pytest.mark.parametrize("arch,shape,kwargs,dim", CASES, ids=IDS)
def test_same_seed_same_weights_different_seed_differs(arch: str, shape: tuple[int, ...], kwargs: dict, dim: int) -> None:
    a = build_model(arch, shape, 4, seed=3, **kwargs).state_dict()
    b = build_model(arch, shape, 4, seed=3, **kwargs).state_dict()
    c = build_model(arch, shape, 4, seed=4, **kwargs).state_dict()
    assert a.keys() == b.keys() == c.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a)


def test_weights_do_not_depend_on_global_rng() -> None:
    torch.manual_seed(0)
    a = build_model("mlp", (6,), 3, seed=11).state_dict()
    torch.manual_seed(999)
    torch.rand(10)
    b = build_model("mlp", (6,), 3, seed=11).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("arch,shape", [("mlp", (40,)), ("cnn1d", (40,)), ("cnn2d", (1, 8, 8))])
def test_global_torch_rng_untouched(arch: str, shape: tuple[int, ...]) -> None:
    torch.manual_seed(123)
    state = torch.random.get_rng_state()
    build_model(arch, shape, 10, seed=5)
    assert torch.equal(torch.random.get_rng_state(), state)


def test_unknown_arch() -> None:
    with pytest.raises(ValueError, match="unknown architecture 'resnet'"):
        build_model("resnet", (40,), 10)


@pytest.mark.parametrize("shape", [(), (1, 8, 8), (1, 2, 3, 4)])
def test_cnn1d_wrong_input_shape(shape: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match="CNN1D needs inputs of shape"):
        build_model("cnn1d", shape, 10)


@pytest.mark.parametrize("shape", [(40,), (1, 40), (1, 1, 8, 8)])
def test_cnn2d_wrong_input_shape(shape: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match="CNN2D needs inputs of shape"):
        build_model("cnn2d", shape, 10)


@pytest.mark.parametrize("arch", ["mlp", "cnn1d", "cnn2d"])
@pytest.mark.parametrize("k", [1, 0, -3, 2.0, None])
def test_num_classes_invalid(arch: str, k: Any) -> None:
    shape = (1, 8, 8) if arch == "cnn2d" else (40,)
    with pytest.raises(ValueError, match="num_classes must be an integer >= 2"):
        build_model(arch, shape, k)


class _OddHead(FeatureModel):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Identity()
        self.head = nn.Sequential(nn.Linear(3, 2))


def test_feature_dim_unknown_for_non_linear_head() -> None:
    model = _OddHead()
    with pytest.raises(TypeError):
        model.feature_dim
    with pytest.raises(TypeError):
        model.num_outputs
    # the contract itself still holds
    x = _x((3,), n=2)
    assert torch.allclose(model(x), model.head(model.features(x)))


def test_feature_dim_error_message_explains_linear_head() -> None:
    with pytest.raises(TypeError, match="only known when the head is an nn.Linear"):
        _OddHead().feature_dim


# --------------------------------------------------------------------------------------------- wrap_model


class Custom(nn.Module):
    """A plain module with a ``fc`` final layer and a nested Linear candidate."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv1d(1, 3, 3, padding=1), nn.ReLU())
        self.proj = nn.Linear(3 * 6, 8)
        self.fc = nn.Linear(8, 4)

    def trunk(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.proj(self.stem(x.unsqueeze(1)).flatten(1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.trunk(x))


class Nested(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features_ = nn.Sequential(nn.Linear(5, 6), nn.ReLU())
        self.classifier = nn.Sequential(nn.Dropout(0.0), nn.Linear(6, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features_(x))


def _custom() -> Custom:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return Custom()


def test_wrap_model_features_are_input_of_head() -> None:
    module = _custom()
    wrapped = wrap_model(module, "fc")
    assert isinstance(wrapped, FeatureModel) and isinstance(wrapped, WrappedModel)
    x = _x((6,), n=7)
    with torch.no_grad():
        feats = wrapped.features(x)
        expected_feats = module.trunk(x)
        out = wrapped(x)
        expected_out = module(x)
        via_head = wrapped.head(feats)
    assert feats.shape == (7, 8)
    assert torch.allclose(feats, expected_feats)
    assert torch.allclose(out, expected_out)
    assert torch.allclose(via_head, out)
    assert wrapped.head is module.fc
    assert wrapped.feature_dim == 8
    assert wrapped.num_outputs == 4


def test_wrap_model_dotted_head_name() -> None:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        module = Nested()
    wrapped = wrap_model(module, "classifier.1")
    x = _x((5,), n=4)
    with torch.no_grad():
        assert torch.allclose(wrapped.features(x), module.features_(x))
        assert torch.allclose(wrapped(x), module(x))
    assert wrapped.feature_dim == 6


def test_wrap_model_features_keep_gradients() -> None:
    wrapped = wrap_model(_custom(), "fc")
    feats = wrapped.features(_x((6,), n=3))
    assert feats.requires_grad
    feats.sum().backward()
    assert wrapped.module.proj.weight.grad is not None


def test_wrap_model_bad_head_name_lists_candidates() -> None:
    with pytest.raises(ValueError, match="no submodule named 'head'") as info:
        wrap_model(_custom(), "head")
    msg = str(info.value)
    assert "'fc'" in msg and "'proj'" in msg


def test_wrap_model_empty_head_name_rejected() -> None:
    with pytest.raises(ValueError, match="candidates"):
        wrap_model(_custom(), "")


def test_wrap_model_head_not_called() -> None:
    class Unused(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Linear(2, 2)
            self.spare = nn.Linear(2, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.a(x)

    wrapped = wrap_model(Unused(), "spare")
    with pytest.raises(RuntimeError, match="was not called"):
        wrapped.features(torch.zeros(1, 2))


def test_wrap_model_on_feature_model_is_identity() -> None:
    model = build_model("mlp", (6,), 3, seed=0)
    assert wrap_model(model, "anything") is model
    assert wrap_model(model, "head") is model


def test_wrap_model_rejects_non_module() -> None:
    with pytest.raises(TypeError, match="torch.nn.Module"):
        wrap_model(lambda x: x, "fc")  # type: ignore[arg-type]


def test_wrapped_model_keeps_no_activations_after_forward() -> None:
    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body = nn.Linear(4, 3)
            self.fc = nn.Linear(3, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(torch.relu(self.body(x)))

    net = Net()
    wrapped = wrap_model(net, "fc")
    x = torch.randn(5, 4)
    wrapped(x)
    assert wrapped._captured is None
    assert wrapped.features(x).shape == (5, 3) and wrapped._captured is None
    wrapped.remove_hook()
    assert len(net.fc._forward_hooks) == 0
