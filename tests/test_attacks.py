"""Tests for transferlens.attacks: ThreatModel, pgd, fgsm, model_output.

Invariants in the spirit of attack-library test suites (eps ball and bounds, per-sample independence,
input untouched, model state restored, determinism), known answers on linear models, and input
validation. Exact-equality checks use float64 models so that they test the algorithm, not float32
rounding; the float32 behaviour is tested separately.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from transferlens.attacks import OBJECTIVES, PROBE_SCALE, ThreatModel, fgsm, model_output, pgd
from transferlens.models import build_model

from helpers import linear, mlp, params_snapshot, rand, randn

F64 = torch.float64


# ----------------------------------------------------------------------------------------------
# Helpers
# ----------------------------------------------------------------------------------------------


def _norms(delta: torch.Tensor, norm: str) -> torch.Tensor:
    flat = delta.flatten(1).double()
    return flat.abs().amax(1) if norm == "linf" else flat.norm(dim=1)


def assert_feasible(delta: torch.Tensor, x: torch.Tensor, threat: ThreatModel) -> None:
    """``||delta|| <= eps`` (1e-6 relative) and ``lo <= x + delta <= hi``.

    When bounds are used, ``delta = clip(x + delta) - x`` is only exact to an ulp of ``x``; that
    rounding (zero in float64 for these magnitudes) is allowed on top of the relative tolerance.
    """
    assert delta.shape == x.shape
    assert delta.dtype == x.dtype
    assert bool(torch.isfinite(delta).all())
    ulp = torch.finfo(x.dtype).eps * max(1.0, float(x.abs().max()) + threat.eps)
    n_coords = x[0].numel()
    slack = 0.0 if threat.bounds is None else ulp * (1.0 if threat.norm == "linf" else math.sqrt(n_coords))
    assert float(_norms(delta, threat.norm).max()) <= threat.eps * (1 + 1e-6) + slack
    if threat.bounds is not None:
        lo, hi = threat.bounds
        xa = (x + delta).double()
        assert float(xa.min()) >= lo - ulp and float(xa.max()) <= hi + ulp


class ZeroGrad(nn.Module):
    """Constant output, but still a function of x (zero gradient everywhere)."""

    def __init__(self, k: int = 3) -> None:
        super().__init__()
        self.register_buffer("const", torch.arange(k, dtype=torch.float32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 0.0 * x.flatten(1).sum(1, keepdim=True) + self.const


class TrulyConstant(nn.Module):
    """Output independent of x: no autograd path from the input at all."""

    def __init__(self, k: int = 3) -> None:
        super().__init__()
        self.c = nn.Parameter(torch.arange(k, dtype=torch.float32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c.expand(len(x), -1)


class NoisyNet(nn.Module):
    """Linear -> BatchNorm -> ReLU -> Dropout -> Linear: differs between train and eval mode."""

    def __init__(self, n_in: int = 6, n_out: int = 3) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(5)
        self.net = nn.Sequential(nn.Linear(n_in, 12), nn.BatchNorm1d(12), nn.ReLU(), nn.Dropout(0.5), nn.Linear(12, n_out))
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)
        # Give BatchNorm non-trivial running statistics.
        self.train()
        with torch.no_grad():
            for s in range(3):
                self.net(randn(16, n_in, seed=100 + s) * 2 + 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


THREATS = [
    ThreatModel("linf", 0.1, 5),
    ThreatModel("linf", 0.3, 4, random_start=True),
    ThreatModel("l2", 0.5, 5),
    ThreatModel("l2", 1.0, 3, random_start=True),
    ThreatModel("linf", 0.2, 4, bounds=(0.0, 1.0)),
    ThreatModel("l2", 0.7, 4, random_start=True, bounds=(0.0, 1.0)),
    ThreatModel("linf", 0.25, 3, step_size=0.2, random_start=True, bounds=(0.0, 1.0)),
]
THREAT_IDS = [f"{t.norm}-{t.eps}-rs{int(t.random_start)}-{'b' if t.bounds else 'nob'}" for t in THREATS]


# ----------------------------------------------------------------------------------------------
# ThreatModel
# ----------------------------------------------------------------------------------------------


def test_threat_model_alpha_is_a_deprecated_alias_of_step() -> None:
    t = ThreatModel("l2", 0.5, 10, step_size=0.07)
    with pytest.warns(DeprecationWarning, match="ThreatModel.step"):
        assert t.alpha == t.step == 0.07
    with pytest.warns(DeprecationWarning):
        assert ThreatModel("linf", 0.5, 4).alpha == pytest.approx(2.5 * 0.5 / 4)


def test_threat_model_defaults_and_to_dict() -> None:
    t = ThreatModel("l2", 0.5, 10)
    assert t.step == pytest.approx(2.5 * 0.5 / 10)
    assert ThreatModel("linf", 0.5, 4, step_size=0.3).step == 0.3
    f = ThreatModel.fgsm(0.2, "l2", bounds=(0, 1))
    assert (f.steps, f.step, f.norm, f.bounds, f.random_start) == (1, 0.2, "l2", (0.0, 1.0), False)
    d = ThreatModel("linf", 0.1, 3, bounds=(-1, 2)).to_dict()
    assert d == {"norm": "linf", "eps": 0.1, "steps": 3, "step_size": pytest.approx(2.5 * 0.1 / 3),
                 "random_start": False, "bounds": [-1.0, 2.0]}


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(eps=0.0), "eps must be"),
        (dict(eps=-0.1), "eps must be"),
        (dict(eps=float("nan")), "eps must be"),
        (dict(eps=float("inf")), "eps must be"),
        (dict(steps=0), "steps must be"),
        (dict(steps=-3), "steps must be"),
        (dict(steps=2.0), "steps must be"),
        (dict(steps=True), "steps must be"),
        (dict(norm="l1"), "norm must be one of"),
        (dict(norm="Linf"), "norm must be one of"),
        (dict(step_size=0.0), "step_size must be"),
        (dict(bounds=(1.0, 0.0)), "lo < hi"),
        (dict(bounds=(0.5, 0.5)), "lo < hi"),
        (dict(bounds=(0.0, float("inf"))), "lo < hi"),
        (dict(bounds=(0.0,)), "bounds must be a pair"),
        (dict(bounds="ab"), "bounds must be a pair"),
    ],
)
def test_threat_model_validation(kwargs, match) -> None:
    with pytest.raises(ValueError, match=match):
        ThreatModel(**kwargs)


# ----------------------------------------------------------------------------------------------
# Feasibility: eps ball and bounds
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("objective", OBJECTIVES)
@pytest.mark.parametrize("threat", THREATS, ids=THREAT_IDS)
def test_pgd_stays_in_ball_and_bounds(threat: ThreatModel, objective: str) -> None:
    model = mlp(6, 3, seed=1)
    x = rand(10, 6, seed=2) if threat.bounds else randn(10, 6, seed=2)
    delta = pgd(model, x, threat, objective, seed=7)
    assert_feasible(delta, x, threat)
    assert not delta.requires_grad
    assert float(delta.abs().max()) > 0  # the attack moved


@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize("objective", OBJECTIVES)
def test_fgsm_stays_in_ball_and_bounds(norm: str, objective: str) -> None:
    model = mlp(6, 3, seed=3)
    x = rand(10, 6, seed=4)
    for bounds in (None, (0.0, 1.0)):
        delta = fgsm(model, x, 0.3, objective, norm=norm, bounds=bounds)
        assert_feasible(delta, x, ThreatModel.fgsm(0.3, norm, bounds))


def test_bounds_are_active_at_the_edge() -> None:
    # Both rows are predicted class 0, so ce-FGSM moves along eps * sign(w1 - w0) = eps * (-, +, -),
    # then x + delta is clipped into [0, 1] (hand-computed).
    lin = linear([[1.0, -1.0, 2.0], [-1.0, 1.0, -2.0]])
    x = torch.tensor([[0.0, 0.0, 1.0], [0.9, 0.05, 0.2]])
    assert lin(x).argmax(1).tolist() == [0, 0]
    delta = fgsm(lin, x, 0.25, "ce", bounds=(0.0, 1.0))
    assert torch.allclose(delta[0], torch.tensor([0.0, 0.25, -0.25]))  # coordinate 0 blocked at 0
    assert torch.allclose(delta[1], torch.tensor([-0.25, 0.25, -0.2]))  # coordinate 2 clipped at 0
    assert torch.allclose(fgsm(lin, x, 0.25, "ce"), torch.tensor([[-0.25, 0.25, -0.25]] * 2))  # no bounds


# ----------------------------------------------------------------------------------------------
# Known answers on linear models
# ----------------------------------------------------------------------------------------------


def test_pgd_l2_deviation_on_linear_model_finds_top_singular_vector() -> None:
    g = torch.Generator().manual_seed(0)
    u, _ = torch.linalg.qr(torch.randn(3, 3, generator=g, dtype=F64))
    v, _ = torch.linalg.qr(torch.randn(6, 6, generator=g, dtype=F64))
    w = u @ torch.diag(torch.tensor([3.0, 1.0, 0.5], dtype=F64)) @ v[:, :3].T
    lin = linear(w, bias=torch.randn(3, generator=g))
    v1 = torch.linalg.svd(w)[2][0].float()  # top right singular vector
    x = randn(8, 6, seed=1)
    eps = 0.3
    delta = pgd(lin, x, ThreatModel("l2", eps, 20), "deviation")
    cos = (delta @ v1) / delta.norm(dim=1)
    assert float(cos.abs().min()) > 0.999
    assert torch.allclose(delta.norm(dim=1), torch.full((8,), eps), rtol=1e-5)
    # The deviation achieved is (close to) sigma_max * eps, the maximum possible.
    dev = (lin(x + delta) - lin(x)).norm(dim=1)
    assert torch.allclose(dev, torch.full((8,), 3.0 * eps), rtol=1e-3)


def test_pgd_linf_deviation_on_one_output_linear_model() -> None:
    # f(x) = w.x: max |w.delta| over the linf ball is at eps * sign(w) (up to sign).
    w = torch.tensor([[0.5, -2.0, 1.0, -0.1]])
    lin = linear(w)
    x = randn(5, 4, seed=3)
    delta = pgd(lin, x, ThreatModel("linf", 0.2, 10), "deviation")
    s = torch.sign(w[0]) * 0.2
    for d in delta:
        assert torch.allclose(d, s, atol=1e-7) or torch.allclose(d, -s, atol=1e-7)


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_fgsm_ce_on_two_class_linear_model(norm: str) -> None:
    # CE against the clean prediction p: grad_x = (1 - softmax_p) (w_other - w_p), so the FGSM step is
    # eps * sign(w_other - w_p) (linf) or eps * (w_other - w_p) / ||w_other - w_p|| (l2).
    w = torch.tensor([[1.0, -2.0, 0.5, 0.0, 3.0], [-1.0, 1.0, -0.5, 2.0, -1.0]])
    lin = linear(w, bias=[0.1, -0.1])
    x = randn(12, 5, seed=4) * 0.3
    pred = lin(x).argmax(1)
    assert 0 < int(pred.sum()) < len(x)  # both classes are predicted
    eps = 0.15
    delta = fgsm(lin, x, eps, "ce", norm=norm)
    for i in range(len(x)):
        diff = w[1 - pred[i]] - w[pred[i]]
        want = eps * (torch.sign(diff) if norm == "linf" else diff / diff.norm())
        assert torch.allclose(delta[i], want, atol=1e-6)
        # and FGSM really increases the loss / decreases the margin
        assert lin(x[i : i + 1] + delta[i])[0, pred[i]] - lin(x[i : i + 1] + delta[i])[0, 1 - pred[i]] < (
            lin(x[i : i + 1])[0, pred[i]] - lin(x[i : i + 1])[0, 1 - pred[i]]
        )


def test_fgsm_equals_one_pgd_step_with_step_eps() -> None:
    model = mlp(6, 3, seed=8)
    x = randn(7, 6, seed=9)
    a = fgsm(model, x, 0.2, "ce", norm="l2")
    b = pgd(model, x, ThreatModel("l2", 0.2, 1, step_size=0.2), "ce")
    assert torch.equal(a, b)


# ----------------------------------------------------------------------------------------------
# Per-sample independence
# ----------------------------------------------------------------------------------------------

MODELS64 = {
    "mlp": lambda: (mlp(8, 4, seed=1, dtype=F64), (8,)),
    "cnn1d": lambda: (build_model("cnn1d", (8,), 4, seed=2, channels=4, feature_dim=8).to(F64), (8,)),
    "cnn2d": lambda: (build_model("cnn2d", (1, 4, 4), 4, seed=3, channels=3, feature_dim=8).to(F64), (1, 4, 4)),
}


@pytest.mark.parametrize("arch", list(MODELS64))
@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize("objective", OBJECTIVES)
def test_batch_equals_one_sample_at_a_time(arch: str, norm: str, objective: str) -> None:
    model, shape = MODELS64[arch]()
    x = randn(5, *shape, seed=11, dtype=F64)
    threat = ThreatModel(norm, 0.3, 4)
    full = pgd(model, x, threat, objective, seed=2)
    bs1 = pgd(model, x, threat, objective, seed=2, batch_size=1)
    bs2 = pgd(model, x, threat, objective, seed=2, batch_size=2)
    each = torch.cat([pgd(model, x[i : i + 1], threat, objective, seed=2) for i in range(len(x))])
    for other in (bs1, bs2, each):
        assert torch.allclose(full, other, rtol=0, atol=1e-9)


@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize("objective", OBJECTIVES)
def test_random_start_independent_of_chunking(norm: str, objective: str) -> None:
    model = mlp(6, 3, seed=4)
    x = randn(9, 6, seed=5)
    threat = ThreatModel(norm, 0.4, 3, random_start=True)
    full = pgd(model, x, threat, objective, seed=13)
    for bs in (1, 2, 4):
        # float32: deviation/kl are differences of nearby outputs, so rounding (which depends on the batch
        # through BLAS) is amplified to ~1e-5 here; the start itself is drawn once for the whole input.
        assert torch.allclose(full, pgd(model, x, threat, objective, seed=13, batch_size=bs), rtol=0, atol=1e-4)
    # float64: exact up to rounding
    m64, x64 = mlp(6, 3, seed=4, dtype=F64), x.to(F64)
    full64 = pgd(m64, x64, threat, objective, seed=13)
    for bs in (1, 2, 4):
        assert torch.allclose(full64, pgd(m64, x64, threat, objective, seed=13, batch_size=bs), rtol=0, atol=1e-10)


def test_ce_float32_batch_equals_one_sample_at_a_time() -> None:
    model = mlp(8, 4, seed=1)
    x = randn(12, 8, seed=3)
    for norm in ("linf", "l2"):
        threat = ThreatModel(norm, 0.3, 6)
        full = pgd(model, x, threat, "ce")
        each = torch.cat([pgd(model, x[i : i + 1], threat, "ce") for i in range(len(x))])
        assert torch.allclose(full, each, rtol=0, atol=1e-6)


def test_ce_float32_agrees_with_float64() -> None:
    # Control for the two float32 tests below: ce starts at delta = 0 with a well-conditioned gradient, so the
    # float32 attack matches the float64 one to rounding.
    model = build_model("mlp", (8,), 4, seed=1, hidden=(32, 16))
    x = randn(16, 8, seed=0)
    threat = ThreatModel("l2", 0.3, 10)
    d32 = pgd(model, x, threat, "ce")
    d64 = pgd(model.to(F64), x.to(F64), threat, "ce")
    assert torch.allclose(d32.to(F64), d64, rtol=0, atol=1e-5)


def test_deviation_float32_batch_equals_one_sample_at_a_time() -> None:
    model = build_model("mlp", (8,), 4, seed=1, hidden=(32, 16))
    x = randn(16, 8, seed=0)
    threat = ThreatModel("l2", 0.3, 10)  # the 'theory' preset's attack
    full = pgd(model, x, threat, "deviation")
    bs1 = pgd(model, x, threat, "deviation", batch_size=1)
    # The same attack in float64 (no cancellation) is the reference; a well-conditioned float32 attack
    # (e.g. ce, or this one with a larger probe) agrees with it to ~1e-7.
    d64 = pgd(model.to(F64), x.to(F64), threat, "deviation")
    assert torch.allclose(full, bs1, rtol=0, atol=1e-5)
    assert torch.allclose(full.to(F64), d64, rtol=0, atol=1e-5)


def test_kl_float32_agrees_with_float64() -> None:
    model = build_model("mlp", (8,), 4, seed=1, hidden=(32, 16))
    x = randn(16, 8, seed=0)
    threat = ThreatModel("l2", 0.3, 10)
    d32 = pgd(model, x, threat, "kl")
    d64 = pgd(model.to(F64), x.to(F64), threat, "kl")
    assert torch.allclose(d32.to(F64), d64, rtol=0, atol=1e-4)


# ----------------------------------------------------------------------------------------------
# Inputs untouched, model state restored
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("requires_grad", [False, True])
@pytest.mark.parametrize("objective", OBJECTIVES)
def test_input_never_modified(requires_grad: bool, objective: str) -> None:
    model = mlp(6, 3, seed=1)
    x = rand(6, 6, seed=2)
    if requires_grad:
        x.requires_grad_(True)
    before = x.detach().clone()
    delta = pgd(model, x, ThreatModel("l2", 0.5, 3, random_start=True, bounds=(0, 1)), objective)
    assert torch.equal(x.detach(), before)
    assert x.grad is None
    assert x.requires_grad is requires_grad
    assert not delta.requires_grad and delta.grad_fn is None
    assert delta.data_ptr() != x.data_ptr()


@pytest.mark.parametrize("objective", OBJECTIVES)
def test_model_mode_and_requires_grad_restored(objective: str) -> None:
    model = NoisyNet()
    frozen = model.net[0].bias
    frozen.requires_grad_(False)
    state = params_snapshot(model)
    x = randn(8, 6, seed=3)
    for training in (True, False):
        model.train(training)
        pgd(model, x, ThreatModel("linf", 0.2, 3), objective)
        assert model.training is training
        assert all(m.training is training for m in model.modules())
        assert frozen.requires_grad is False
        assert all(p.requires_grad for p in model.parameters() if p is not frozen)
        assert all(p.grad is None for p in model.parameters())
        # parameters and BatchNorm running statistics untouched
        assert all(torch.equal(a, b) for a, b in zip(state, params_snapshot(model)))


def test_model_state_restored_after_an_error() -> None:
    model = NoisyNet().train()
    with pytest.raises(ValueError, match="could not process inputs"):
        pgd(model, randn(4, 5), ThreatModel())
    assert model.training
    assert all(p.requires_grad for p in model.parameters())
    with pytest.raises(TypeError, match="features"):
        pgd(model, randn(4, 6), ThreatModel(), output="features")  # NoisyNet has no features()
    assert model.training
    assert all(p.requires_grad for p in model.parameters())


@pytest.mark.parametrize("objective", OBJECTIVES)
@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_train_mode_model_attacked_in_eval_mode(objective: str, norm: str) -> None:
    model = NoisyNet()
    x = randn(8, 6, seed=6)
    threat = ThreatModel(norm, 0.3, 4, random_start=True)
    model.train()
    a = pgd(model, x, threat, objective, seed=1)
    model.eval()
    b = pgd(model, x, threat, objective, seed=1)
    assert torch.equal(a, b)
    # Train mode would have given different (random, batch-dependent) outputs.
    model.train()
    with torch.no_grad():
        assert not torch.allclose(model(x), model.eval()(x))


# ----------------------------------------------------------------------------------------------
# Zero gradient, determinism
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("objective", OBJECTIVES)
@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_zero_gradient_keeps_random_start(objective: str, norm: str) -> None:
    model = ZeroGrad()
    x = randn(6, 5, seed=1)
    eps = 0.4
    a = pgd(model, x, ThreatModel(norm, eps, 1, random_start=True), objective, seed=3)
    b = pgd(model, x, ThreatModel(norm, eps, 7, random_start=True), objective, seed=3)
    assert bool(torch.isfinite(a).all()) and bool(torch.isfinite(b).all())
    assert torch.equal(a, b)  # no step moved it: the random start is kept
    n = _norms(a, norm)
    assert bool((n > 0).all()) and float(n.max()) <= eps * (1 + 1e-6)
    assert len(set(a.flatten().tolist())) > len(x)  # random, not a constant
    # different seed, different start
    assert not torch.allclose(a, pgd(model, x, ThreatModel(norm, eps, 3, random_start=True), objective, seed=4))


@pytest.mark.parametrize("objective", OBJECTIVES)
@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_zero_gradient_without_random_start(objective: str, norm: str) -> None:
    x = randn(4, 5, seed=1)
    eps = 0.4
    delta = pgd(ZeroGrad(), x, ThreatModel(norm, eps, 5), objective)
    assert bool(torch.isfinite(delta).all())
    if objective == "ce":
        assert torch.equal(delta, torch.zeros_like(x))
    else:  # the documented PROBE_SCALE * eps probe, shared by every sample
        assert torch.allclose(_norms(delta, norm), torch.full((4,), PROBE_SCALE * eps, dtype=F64), rtol=1e-5)
        assert torch.equal(delta, delta[:1].expand_as(delta))


def test_saturated_softmax_gives_no_nan() -> None:
    # Logit gaps of ~1e4: float32 softmax saturates and the ce/kl gradients underflow to exactly 0.
    lin = linear([[1e4, 0.0], [-1e4, 0.0]])
    x = torch.tensor([[1.0, 0.0], [-2.0, 1.0]])
    for objective in OBJECTIVES:
        for rs in (False, True):
            delta = pgd(lin, x, ThreatModel("l2", 0.1, 3, random_start=rs), objective)
            assert bool(torch.isfinite(delta).all())
            assert_feasible(delta, x, ThreatModel("l2", 0.1))


def test_truly_constant_model_keeps_random_start() -> None:
    x = randn(4, 5)
    delta = pgd(TrulyConstant(), x, ThreatModel("l2", 0.3, 3, random_start=True), "deviation")
    assert bool(torch.isfinite(delta).all())


@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize("objective", OBJECTIVES)
def test_seed_determinism(norm: str, objective: str) -> None:
    model = mlp(6, 3, seed=2)
    x = randn(5, 6, seed=3)
    rs = ThreatModel(norm, 0.3, 2, random_start=True)
    assert torch.equal(pgd(model, x, rs, objective, seed=5), pgd(model, x, rs, objective, seed=5))
    assert not torch.allclose(pgd(model, x, rs, objective, seed=5), pgd(model, x, rs, objective, seed=6))
    det = ThreatModel(norm, 0.3, 2)
    assert torch.equal(pgd(model, x, det, objective, seed=5), pgd(model, x, det, objective, seed=5))


def test_seed_does_not_touch_global_rng() -> None:
    model = mlp(6, 3, seed=2)
    x = randn(5, 6, seed=3)
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    pgd(model, x, ThreatModel("l2", 0.3, 2, random_start=True), "deviation", seed=9)
    assert torch.equal(torch.rand(3), expected)


# ----------------------------------------------------------------------------------------------
# model_output, outputs
# ----------------------------------------------------------------------------------------------


def test_model_output_choices() -> None:
    model = mlp(6, 3, seed=1)
    x = randn(4, 6, seed=2)
    logits = model_output(model, x, "logits")
    assert torch.equal(logits, model(x))
    assert torch.allclose(model_output(model, x, "probs"), torch.softmax(logits, 1))
    feats = model_output(model, x, "features")
    assert feats.shape == (4, 16) and torch.allclose(model.head(feats), logits)
    with pytest.raises(ValueError, match="output must be one of"):
        model_output(model, x, "embedding")
    with pytest.raises(TypeError, match="features"):
        model_output(nn.Linear(6, 3), x, "features")


@pytest.mark.parametrize("output", ["probs", "features"])
def test_pgd_deviation_on_other_outputs(output: str) -> None:
    model = mlp(6, 3, seed=1, dtype=F64)
    x = randn(4, 6, seed=2, dtype=F64)
    threat = ThreatModel("l2", 0.3, 5)
    delta = pgd(model, x, threat, "deviation", output=output)
    assert_feasible(delta, x, threat)
    # The attack increases the deviation of the chosen output over the initial probe.
    base = pgd(model, x, ThreatModel("l2", 0.3, 1, step_size=1e-12), "deviation", output=output)
    gain = (model_output(model, x + delta, output) - model_output(model, x, output)).norm(dim=1)
    probe = (model_output(model, x + base, output) - model_output(model, x, output)).norm(dim=1)
    assert bool((gain > 10 * probe).all())


# ----------------------------------------------------------------------------------------------
# Validation
# ----------------------------------------------------------------------------------------------


class ThreeD(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, :6].reshape(len(x), 2, 3)


class OneD(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.sum(1)


def _bad_x(kind: str) -> torch.Tensor:
    x = randn(4, 6)
    if kind == "nan":
        x[1, 2] = float("nan")
    elif kind == "inf":
        x[0, 0] = float("inf")
    elif kind == "empty":
        x = torch.empty(0, 6)
    elif kind == "scalar":
        x = torch.tensor(1.0)
    return x


@pytest.mark.parametrize(
    "kind, match",
    [("nan", "NaN/Inf"), ("inf", "NaN/Inf"), ("empty", "empty"), ("scalar", "empty")],
)
def test_bad_inputs_rejected(kind: str, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        pgd(mlp(6, 3), _bad_x(kind), ThreatModel())


def test_bad_arguments_rejected() -> None:
    model = mlp(6, 3)
    x = randn(4, 6)
    with pytest.raises(ValueError, match="objective must be one of"):
        pgd(model, x, ThreatModel(), "cw")
    with pytest.raises(ValueError, match="output must be one of"):
        pgd(model, x, ThreatModel(), output="embedding")
    with pytest.raises(TypeError, match="threat must be a ThreatModel"):
        pgd(model, x, {"norm": "linf", "eps": 0.1})
    for bs in (0, -1, 2.0):
        with pytest.raises(ValueError, match="batch_size must be"):
            pgd(model, x, ThreatModel(), batch_size=bs)
    with pytest.raises(ValueError, match="eps must be"):
        fgsm(model, x, 0.0)
    with pytest.raises(ValueError, match="norm must be one of"):
        fgsm(model, x, 0.1, norm="l1")
    with pytest.raises(ValueError, match="objective must be one of"):
        fgsm(model, x, 0.1, "hinge")


def test_shape_mismatch_and_bad_model_outputs() -> None:
    with pytest.raises(ValueError, match="could not process inputs of shape"):
        pgd(mlp(6, 3), randn(4, 7), ThreatModel())
    with pytest.raises(ValueError, match="could not process inputs of shape"):
        pgd(build_model("cnn2d", (1, 4, 4), 3, channels=2, feature_dim=4), randn(4, 16), ThreatModel())
    with pytest.raises(ValueError, match="2-D"):
        pgd(ThreeD(), randn(4, 6), ThreatModel())
    with pytest.raises(ValueError, match="2-D"):
        pgd(OneD(), randn(4, 6), ThreatModel())


def test_inputs_outside_bounds_rejected() -> None:
    x = rand(4, 6)
    x[2, 3] = 1.5
    with pytest.raises(ValueError, match="outside the input bounds"):
        pgd(mlp(6, 3), x, ThreatModel(bounds=(0.0, 1.0)))
    with pytest.raises(ValueError, match="outside the input bounds"):
        fgsm(mlp(6, 3), x - 2.0, 0.1, bounds=(-1.0, 1.0))
    with pytest.raises(ValueError, match="lo < hi"):
        fgsm(mlp(6, 3), x, 0.1, bounds=(1.0, 0.0))


def test_validate_false_skips_checks_but_still_feasible() -> None:
    model = mlp(6, 3)
    x = rand(4, 6)
    threat = ThreatModel("l2", 0.5, 3, bounds=(0.0, 1.0))
    assert torch.equal(pgd(model, x, threat, validate=False), pgd(model, x, threat))


def test_pgd_accepts_numpy_like_transferability_does() -> None:
    model = mlp(6, 3)
    x = randn(4, 6)
    assert torch.equal(pgd(model, x.numpy(), ThreatModel()), pgd(model, x, ThreatModel()))


def test_integer_inputs_are_converted() -> None:
    model = mlp(6, 3)
    x = torch.randint(0, 2, (4, 6))
    delta = pgd(model, x, ThreatModel("linf", 0.2, 2, bounds=(0, 1)), "ce")
    assert delta.dtype == torch.get_default_dtype()
    assert_feasible(delta, x.float(), ThreatModel("linf", 0.2, bounds=(0, 1)))


# ----------------------------------------------------------------------------------------------
# Property: projection onto the ball and the bounds
# ----------------------------------------------------------------------------------------------

_PROP_MODEL = linear(randn(3, 4, seed=21, dtype=F64) * 2, dtype=F64)


@settings(max_examples=25, deadline=None, derandomize=True)
@given(
    eps=st.floats(1e-3, 3.0),
    norm=st.sampled_from(["linf", "l2"]),
    lo=st.floats(-3.0, 3.0),
    width=st.floats(0.05, 4.0),
    use_bounds=st.booleans(),
    random_start=st.booleans(),
    objective=st.sampled_from(list(OBJECTIVES)),
    steps=st.integers(1, 4),
    step_mult=st.floats(0.1, 5.0),
    seed=st.integers(0, 2**16),
)
def test_property_projection(eps, norm, lo, width, use_bounds, random_start, objective, steps, step_mult, seed) -> None:
    bounds = (lo, lo + width) if use_bounds else None
    threat = ThreatModel(norm, eps, steps, step_size=step_mult * eps, random_start=random_start, bounds=bounds)
    u = rand(5, 4, seed=seed, dtype=F64)
    x = lo + width * u if use_bounds else (u - 0.5) * 6
    x[0] = lo if use_bounds else x[0]  # one sample exactly on a bound
    delta = pgd(_PROP_MODEL, x, threat, objective, seed=seed)
    # float64: the strict 1e-6 relative tolerance, no ulp slack needed
    assert float(_norms(delta, norm).max()) <= eps * (1 + 1e-6)
    if bounds is not None:
        xa = x + delta
        assert float(xa.min()) >= lo - 1e-12 and float(xa.max()) <= lo + width + 1e-12
    assert bool(torch.isfinite(delta).all())


def test_float32_bounds_rounding_is_at_most_an_ulp() -> None:
    # Documented slack in assert_feasible: the only float32 excess over eps comes from x + delta rounding.
    model = mlp(6, 3, seed=1)
    x = rand(50, 6, seed=2) * 0.98 + 0.01
    for norm in ("linf", "l2"):
        threat = ThreatModel(norm, 8 / 255, 5, bounds=(0.0, 1.0))
        delta = pgd(model, x, threat, "ce")
        excess = float(_norms(delta, norm).max()) - threat.eps
        assert excess <= 2 * torch.finfo(torch.float32).eps * math.sqrt(6)
        assert np.isfinite(excess)


# ----------------------------------------------------------------------------------------------
# Random starts per sample, dtypes, seeds
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize("objective", OBJECTIVES)
def test_random_start_depends_only_on_the_sample(norm: str, objective: str) -> None:
    model = mlp(6, 3, seed=1)
    x = randn(9, 6, seed=4)
    threat = ThreatModel(norm, 0.3, 3, random_start=True)
    full = pgd(model, x, threat, objective, seed=2)
    assert torch.allclose(pgd(model, x[:4], threat, objective, seed=2), full[:4], atol=1e-6)
    assert torch.allclose(pgd(model, x[3:4], threat, objective, seed=2), full[3:4], atol=1e-6)
    shuffled = pgd(model, x.flip(0), threat, objective, seed=2).flip(0)
    assert torch.allclose(shuffled, full, atol=1e-6)


def test_float64_input_on_a_float32_model_is_cast() -> None:
    model = mlp(6, 3, seed=1)
    x = randn(5, 6, seed=2)
    d64 = pgd(model, x.double().numpy(), ThreatModel("l2", 0.2, 3), "ce")
    assert d64.dtype == torch.float64
    assert torch.allclose(d64.float(), pgd(model, x, ThreatModel("l2", 0.2, 3), "ce"), atol=1e-6)


@pytest.mark.parametrize("seed", [1.5, -1, 2**64, True])
def test_bad_seed_is_refused(seed) -> None:
    with pytest.raises(ValueError, match="seed"):
        pgd(mlp(6, 3), randn(2, 6), ThreatModel(), seed=seed)


class _Overflows(nn.Module):
    """Finite on the first rows, overflowing on the rest (exp of a large value)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.exp(x[:, :2] * 200.0)


def test_overflowing_model_is_refused_not_nan() -> None:
    x = torch.zeros(6, 3)
    x[3:] = 5.0
    with pytest.raises(ValueError, match="NaN/Inf"):
        pgd(_Overflows(), x, ThreatModel("l2", 0.1, 2), "deviation")
