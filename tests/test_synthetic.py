"""Tests for the E1 synthetic regression pipeline (``transferlens.data.synthetic``)."""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from transferlens.data.synthetic import (
    DEVIATION_SCHEDULES,
    MIN_RBF_WIDTH,
    SIGMOID_INITS,
    TRAIN_OPTIMIZERS,
    RefitResult,
    RegressionData,
    RegressionFit,
    SigmoidNet,
    build_sigmoid_net,
    deviation_scales,
    model_rmse,
    perturbed_copy,
    random_direction,
    rbf_regression,
    refit_output_layer,
    regression_rmse,
    train_regression,
)
from transferlens.models.base import FeatureModel

SMALL = {"n_samples": 120, "n_inputs": 6, "n_outputs": 3, "n_rbf": 12, "n_clusters": 4}


@pytest.fixture(scope="module")
def small() -> RegressionData:
    return rbf_regression(**SMALL, seed=3)


def _net(data: RegressionData, width: int = 8, seed: int = 0, **kw: Any) -> SigmoidNet:
    return build_sigmoid_net(data.n_inputs, data.n_outputs, width, seed=seed, **kw)


def _params(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.named_parameters()}


# --------------------------------------------------------------------------------------------------
# data
# --------------------------------------------------------------------------------------------------


def test_rbf_regression_shapes_dtypes_meta(small: RegressionData) -> None:
    assert isinstance(small, RegressionData)
    assert small.x.shape == (120, 6) and small.y.shape == (120, 3)
    assert small.x.dtype == torch.float64 and small.y.dtype == torch.float64
    assert (small.n_samples, small.n_inputs, small.n_outputs) == (120, 6, 3)
    assert bool(torch.isfinite(small.x).all()) and bool(torch.isfinite(small.y).all())
    for key, value in {**SMALL, "seed": 3}.items():
        assert small.meta[key] == value
    assert small.meta["min_rbf_width"] == MIN_RBF_WIDTH
    assert "seed 3" in small.description and small.name


def test_rbf_regression_e1_size_smoke() -> None:
    data = rbf_regression(seed=0)
    assert data.x.shape == (5000, 50) and data.y.shape == (5000, 10)
    assert data.x.dtype == torch.float64 and data.y.dtype == torch.float64
    assert bool(torch.isfinite(data.y).all())
    # Unit-variance clusters around centres in [-0.5, 0.5]: per-coordinate std a little above 1.
    assert 0.95 < float(data.x.std()) < 1.15
    # RBF features lie in (0, 1] and A, b ~ U(-0.5, 0.5): |y| <= 0.5 * (m + 1).
    assert float(data.y.abs().max()) <= 0.5 * 101
    # y varies across samples (not just the per-output offset b).
    assert float(data.y.std(dim=0).min()) > 1e-3


def test_rbf_regression_deterministic_and_seed_sensitive() -> None:
    a, b, c = rbf_regression(**SMALL, seed=5), rbf_regression(**SMALL, seed=5), rbf_regression(**SMALL, seed=6)
    assert torch.equal(a.x, b.x) and torch.equal(a.y, b.y)
    assert not torch.equal(a.x, c.x) and not torch.equal(a.y, c.y)


def test_rbf_regression_cluster_structure() -> None:
    # Equal-weight mixture: with many samples the overall mean approaches the mean of the centres,
    # which lies in [-0.5, 0.5]; the within-data spread is dominated by the unit noise.
    data = rbf_regression(n_samples=4000, n_inputs=3, n_outputs=2, n_rbf=5, n_clusters=1, seed=0)
    mean = data.x.mean(0)
    assert float(mean.abs().max()) < 0.5 + 0.1
    cov = torch.cov(data.x.T)
    assert torch.allclose(cov, torch.eye(3, dtype=torch.float64), atol=0.1)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"n_samples": 0}, "n_samples must be an integer >= 1"),
        ({"n_inputs": -1}, "n_inputs must be an integer >= 1"),
        ({"n_outputs": 2.5}, "n_outputs must be an integer >= 1"),
        ({"n_rbf": True}, "n_rbf must be an integer >= 1"),
        ({"n_clusters": "3"}, "n_clusters must be an integer >= 1"),
        ({"seed": -1}, "seed must be an integer"),
        ({"seed": 1.0}, "seed must be an integer"),
    ],
)
def test_rbf_regression_validation(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        rbf_regression(**{**SMALL, **kwargs})


def test_regression_data_converts_and_validates() -> None:
    data = RegressionData(x=np.ones((4, 2), dtype=np.float32), y=[[1.0], [2.0], [3.0], [4.0]], name="toy")
    assert data.x.dtype == torch.float64 and data.y.dtype == torch.float64
    assert data.description == "" and data.meta == {}
    with pytest.raises(AttributeError):
        data.x = torch.zeros(4, 2)  # type: ignore[misc]
    ok = torch.zeros(4, 2, dtype=torch.float64)
    with pytest.raises(ValueError, match="x must be a 2-D"):
        RegressionData(x=torch.zeros(4), y=ok, name="n", description="", meta={})
    with pytest.raises(ValueError, match="y must be a 2-D"):
        RegressionData(x=ok, y=torch.zeros(4, 2, 1), name="n", description="", meta={})
    with pytest.raises(ValueError, match="same N"):
        RegressionData(x=ok, y=torch.zeros(3, 1), name="n", description="", meta={})
    with pytest.raises(ValueError, match="empty"):
        RegressionData(x=torch.zeros(0, 2), y=torch.zeros(0, 1), name="n", description="", meta={})
    bad = ok.clone()
    bad[1, 1] = float("nan")
    with pytest.raises(ValueError, match="NaN/Inf"):
        RegressionData(x=bad, y=ok, name="n", description="", meta={})
    with pytest.raises(ValueError, match="NaN/Inf"):
        RegressionData(x=ok, y=torch.full((4, 1), float("inf")), name="n", description="", meta={})


def test_regression_rmse_definition() -> None:
    # Squared error summed over outputs, averaged over samples: sqrt((3^2 + 4^2 + 0) / 2).
    y = torch.tensor([[3.0, 4.0], [0.0, 0.0]], dtype=torch.float64)
    assert regression_rmse(torch.zeros_like(y), y) == pytest.approx(math.sqrt(12.5))
    assert regression_rmse(y, y) == 0.0
    with pytest.raises(ValueError, match="same shape"):
        regression_rmse(torch.zeros(2, 3), y)


# --------------------------------------------------------------------------------------------------
# global RNG
# --------------------------------------------------------------------------------------------------


def test_global_rng_untouched(small: RegressionData) -> None:
    torch.manual_seed(1234)
    np.random.seed(99)
    random.seed(7)
    torch_state, np_state, py_state = torch.get_rng_state(), np.random.get_state(), random.getstate()

    data = rbf_regression(**SMALL, seed=1)
    model = _net(data, seed=2)
    build_sigmoid_net(6, 3, 5, seed=4, init="uniform")
    direction = random_direction(model, seed=5)
    perturbed_copy(model, direction, 0.3)
    train_regression(model, data, steps=3)
    train_regression(_net(data), data, steps=3, optimizer="adam")
    refit_output_layer(model, data)

    assert torch.equal(torch.get_rng_state(), torch_state)
    after = np.random.get_state()
    assert after[0] == np_state[0] and np.array_equal(after[1], np_state[1]) and after[2:] == np_state[2:]
    assert random.getstate() == py_state


# --------------------------------------------------------------------------------------------------
# model
# --------------------------------------------------------------------------------------------------


def test_sigmoid_net_contract(small: RegressionData) -> None:
    model = _net(small, width=7)
    assert isinstance(model, FeatureModel)
    assert all(p.dtype == torch.float64 for p in model.parameters())
    assert model.feature_dim == 7 and model.num_outputs == 3
    assert isinstance(model.head, nn.Linear) and model.head.in_features == 7
    feats = model.features(small.x).detach()
    assert feats.shape == (120, 7) and feats.dtype == torch.float64
    assert float(feats.min()) > 0.0 and float(feats.max()) < 1.0  # sigmoid range
    out = model(small.x)
    assert out.shape == (120, 3)
    assert torch.equal(out, model.head(feats))
    w1, b1 = model.body[0].weight, model.body[0].bias
    expected = torch.sigmoid(small.x @ w1.T + b1) @ model.head.weight.T + model.head.bias
    torch.testing.assert_close(out, expected)


def test_sigmoid_net_validation() -> None:
    with pytest.raises(ValueError, match="width must be an integer >= 1"):
        SigmoidNet(3, 2, width=0)
    with pytest.raises(ValueError, match="n_inputs must be an integer >= 1"):
        build_sigmoid_net(0, 2)
    with pytest.raises(ValueError, match="unknown init"):
        build_sigmoid_net(3, 2, init="xavier")
    with pytest.raises(ValueError, match="seed must be an integer"):
        build_sigmoid_net(3, 2, seed=-3)


@pytest.mark.parametrize("init", SIGMOID_INITS)
def test_build_sigmoid_net_deterministic(init: str) -> None:
    a, b, c = (build_sigmoid_net(4, 2, 5, seed=s, init=init) for s in (0, 0, 1))
    for (name, pa), pb, pc in zip(a.named_parameters(), b.parameters(), c.parameters()):
        assert torch.equal(pa, pb), name
        assert not torch.equal(pa, pc), name
        if init == "uniform":
            assert float(pa.detach().min()) >= -0.5 and float(pa.detach().max()) <= 0.5


# --------------------------------------------------------------------------------------------------
# training
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("optimizer", TRAIN_OPTIMIZERS)
def test_train_regression_reduces_loss_and_is_deterministic(small: RegressionData, optimizer: str) -> None:
    kwargs = {"steps": 30, "optimizer": optimizer, "lr": 0.05}
    before = model_rmse(_net(small), small)
    m1, m2 = _net(small), _net(small)
    fit1 = train_regression(m1, small, **kwargs)
    fit2 = train_regression(m2, small, **kwargs)
    assert isinstance(fit1, RegressionFit)
    assert fit1.rmse < 0.8 * before
    assert fit1.final_loss == pytest.approx(fit1.rmse**2)
    assert fit1.rmse == pytest.approx(model_rmse(m1, small), rel=1e-12)
    assert 1 <= fit1.steps <= 30
    assert fit1.options["optimizer"] == optimizer and fit1.options["steps"] == 30
    assert fit1.rmse == fit2.rmse and fit1.steps == fit2.steps
    for p1, p2 in zip(m1.parameters(), m2.parameters()):
        assert torch.equal(p1, p2)
    assert all(p.grad is None for p in m1.parameters())


def test_train_regression_varpro_head_is_closed_form(small: RegressionData) -> None:
    model = _net(small)
    fit = train_regression(model, small, steps=20)
    refit = refit_output_layer(model, small)
    assert refit.rmse == pytest.approx(fit.rmse, rel=1e-9)
    torch.testing.assert_close(refit.weight, model.head.weight.detach(), atol=1e-8, rtol=1e-6)
    torch.testing.assert_close(refit.bias, model.head.bias.detach(), atol=1e-8, rtol=1e-6)


def test_train_regression_validation(small: RegressionData) -> None:
    model = _net(small)
    with pytest.raises(ValueError, match="steps must be an integer >= 1"):
        train_regression(model, small, steps=0)
    with pytest.raises(ValueError, match="lr must be a finite number > 0"):
        train_regression(model, small, lr=-1.0, optimizer="adam")
    with pytest.raises(ValueError, match="unknown optimizer"):
        train_regression(model, small, optimizer="sgd")
    with pytest.raises(ValueError, match="outputs per sample"):
        train_regression(build_sigmoid_net(6, 2, 4), small, steps=1)
    with pytest.raises(TypeError, match="RegressionData"):
        train_regression(model, (small.x, small.y))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="FeatureModel"):
        train_regression(nn.Linear(6, 3), small)  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------------
# sources
# --------------------------------------------------------------------------------------------------


def test_random_direction(small: RegressionData) -> None:
    model = _net(small)
    d1, d2, d3 = random_direction(model, 4), random_direction(model, 4), random_direction(model, 5)
    assert list(d1) == [n for n, _ in model.named_parameters()]
    for name, p in model.named_parameters():
        assert d1[name].shape == p.shape and d1[name].dtype == torch.float64
        assert float(d1[name].min()) >= -0.5 and float(d1[name].max()) < 0.5
        assert torch.equal(d1[name], d2[name]) and not torch.equal(d1[name], d3[name])
    flat = torch.cat([v.flatten() for v in d1.values()])
    assert abs(float(flat.mean())) < 0.1 and float(flat.var()) == pytest.approx(1 / 12, rel=0.3)


def test_perturbed_copy(small: RegressionData) -> None:
    model = _net(small)
    original = _params(model)
    direction = random_direction(model, 0)

    same = perturbed_copy(model, direction, 0.0)
    assert same is not model and type(same) is SigmoidNet
    for name, p in same.named_parameters():
        assert torch.equal(p, original[name])
    assert torch.equal(same(small.x), model(small.x))

    moved = perturbed_copy(model, direction, 0.7)
    for name, p in moved.named_parameters():
        torch.testing.assert_close(p.detach(), original[name] + 0.7 * direction[name])
    for name, p in model.named_parameters():  # original untouched
        assert torch.equal(p, original[name])
    with torch.no_grad():  # and the copy shares no storage with it
        next(moved.parameters()).add_(1.0)
    assert torch.equal(next(model.parameters()), next(iter(original.values())))


def test_perturbed_copy_validation(small: RegressionData) -> None:
    model = _net(small)
    direction = random_direction(model, 0)
    with pytest.raises(ValueError, match="missing"):
        perturbed_copy(model, {k: v for k, v in direction.items() if k != "head.bias"}, 1.0)
    with pytest.raises(ValueError, match="shape"):
        perturbed_copy(model, {**direction, "head.bias": torch.zeros(5)}, 1.0)
    with pytest.raises(ValueError, match="scale must be a finite real number"):
        perturbed_copy(model, direction, float("nan"))


def test_deviation_scales_known_answers() -> None:
    acc = [0.0, 0.1, 0.3, 0.6, 1.0, 1.5, 2.1, 2.8, 3.6, 4.5]
    lin = [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]
    assert deviation_scales() == pytest.approx(acc)
    assert deviation_scales(10, "accumulated", 0.1) == pytest.approx(acc)
    assert deviation_scales(10, "linear") == pytest.approx(lin)
    assert deviation_scales(3, "linear", step=2.0) == [0.0, 2.0, 4.0]
    assert deviation_scales(1) == [0.0]
    assert set(DEVIATION_SCHEDULES) == {"accumulated", "linear"}
    # "accumulated" is the running sum of the official script's increments step * i.
    running, expected = 0.0, []
    for i in range(10):
        running += 0.1 * i
        expected.append(running)
    assert deviation_scales(10) == pytest.approx(expected)


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda: deviation_scales(0), "steps must be an integer >= 1"),
        (lambda: deviation_scales(5, "quadratic"), "unknown schedule"),
        (lambda: deviation_scales(5, step=0.0), "step must be a finite number > 0"),
    ],
)
def test_deviation_scales_validation(call: Callable[[], Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        call()


# --------------------------------------------------------------------------------------------------
# closed-form output layer
# --------------------------------------------------------------------------------------------------


def test_refit_recovers_head_when_exact() -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(200, 5, generator=gen, dtype=torch.float64)
    model = build_sigmoid_net(5, 3, 8, seed=1, init="uniform")
    with torch.no_grad():
        y = model(x)
    data = RegressionData(x=x, y=y, name="from-model", description="", meta={})
    result = refit_output_layer(model, data)
    assert isinstance(result, RefitResult)
    assert result.rmse < 1e-10
    assert result.weight.shape == (3, 8) and result.bias.shape == (3,)
    assert result.weight.dtype == torch.float64
    torch.testing.assert_close(result.weight, model.head.weight.detach(), atol=1e-8, rtol=1e-8)
    torch.testing.assert_close(result.bias, model.head.bias.detach(), atol=1e-8, rtol=1e-8)


@pytest.mark.parametrize("scale", [0.0, 0.5, 3.0])
def test_refit_is_at_least_as_good_as_own_head(small: RegressionData, scale: float) -> None:
    model = perturbed_copy(_net(small, width=10), random_direction(_net(small, width=10), 1), scale)
    before = _params(model)
    result = refit_output_layer(model, small)
    assert result.rmse <= model_rmse(model, small) + 1e-12
    # The per-output mean predictor is one candidate layer (zero weights), so the fit is never worse.
    mean_rmse = regression_rmse(small.y.mean(0).expand_as(small.y), small.y)
    assert result.rmse <= mean_rmse + 1e-12
    # The RMSE reported is that of the returned layer; the model itself is untouched.
    with torch.no_grad():
        pred = model.features(small.x) @ result.weight.T + result.bias
    assert regression_rmse(pred, small.y) == pytest.approx(result.rmse, rel=1e-9)
    for name, p in model.named_parameters():
        assert torch.equal(p, before[name])


def test_refit_rank_deficient_features(small: RegressionData) -> None:
    # Saturated / duplicated hidden units give a rank-deficient design; the fit stays finite and
    # optimal (equal to the fit on the de-duplicated features).
    model = _net(small, width=4)
    with torch.no_grad():
        model.body[0].weight[1] = model.body[0].weight[0]
        model.body[0].bias[1] = model.body[0].bias[0]
        model.body[0].weight[3] = 0.0
        model.body[0].bias[3] = 40.0  # constant feature == 1, collinear with the bias column
    result = refit_output_layer(model, small)
    assert bool(torch.isfinite(result.weight).all()) and bool(torch.isfinite(result.bias).all())
    feats = model.features(small.x).detach()[:, [0, 2]]
    design = torch.cat([feats, torch.ones(len(feats), 1, dtype=torch.float64)], 1)
    sol = torch.linalg.lstsq(design, small.y).solution
    assert result.rmse == pytest.approx(regression_rmse(design @ sol, small.y), rel=1e-8)
