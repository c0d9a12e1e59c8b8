"""Tests for transferlens.exact: Jacobians, singular directions, the exact attack and exact transferability.

References are independent and written out by hand: linear models (constant Jacobian = weight matrix)
checked against ``numpy.linalg.svd``/``lstsq``, central finite differences for nonlinear models, and
structural identities (f_T = A f_S + b, S == T, sign flips, chunking). Everything runs in float64 on tiny
models so that tolerances test the mathematics, not float32 rounding.
"""

from __future__ import annotations

import copy
import json
import math

import numpy as np
import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from torch import nn

from transferlens.alpha import direction_metrics
from transferlens.exact import (
    MEMORY_BUDGET,
    ConsistencyCheck,
    ExactTransferability,
    MatchingDistance,
    check_consistency,
    exact_attack,
    exact_transferability,
    jacobians,
    singular_directions,
)
from transferlens.models import build_model

F64 = torch.float64
METRICS = ("alpha1", "alpha2", "combined", "grad_match", "func_match")
METRIC_KEYS = {f"{m}_{d}" for m in METRICS for d in ("s2t", "t2s")}
ALPHA_KEYS = [f"{m}_{d}" for d in ("s2t", "t2s") for m in ("alpha1", "alpha2", "combined")]


# ----------------------------------------------------------------------------------------------
# Helpers
# ----------------------------------------------------------------------------------------------


def _randn(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=F64)


def _linear(w, b=None) -> nn.Linear:
    """nn.Linear (float64) with hand-set weight ``w`` (d x n) and bias ``b`` (zeros when None)."""
    w = torch.as_tensor(np.asarray(w, dtype=np.float64))
    m = nn.Linear(w.shape[1], w.shape[0]).double()
    with torch.no_grad():
        m.weight.copy_(w)
        m.bias.copy_(torch.zeros(w.shape[0], dtype=F64) if b is None else torch.as_tensor(np.asarray(b, dtype=np.float64)))
    return m


def _mlp(n_in: int, n_out: int, hidden: int = 7, seed: int = 0) -> nn.Module:
    """Smooth (tanh) float64 MLP: no ReLU kinks to trip finite differences."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return nn.Sequential(nn.Linear(n_in, hidden), nn.Tanh(), nn.Linear(hidden, n_out)).double()


class _Neg(nn.Module):
    """Output of ``inner`` negated: J -> -J, which flips the sign of every singular-vector pair."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return -self.inner(x)


def _fd_jacobian(fn, x: torch.Tensor, h: float = 1e-6) -> torch.Tensor:
    """Central finite-difference Jacobians (N, d, n) of ``fn`` w.r.t. the flattened per-sample input."""
    n_samples, shape = x.shape[0], x.shape[1:]
    flat = x.reshape(n_samples, -1)
    cols = []
    with torch.no_grad():
        for k in range(flat.shape[1]):
            e = torch.zeros_like(flat)
            e[:, k] = h
            plus = fn((flat + e).reshape(n_samples, *shape))
            minus = fn((flat - e).reshape(n_samples, *shape))
            cols.append((plus - minus) / (2 * h))
    return torch.stack(cols, dim=2)


def _np_top_right(w: np.ndarray, level: int = 0) -> tuple[float, np.ndarray]:
    _, s, vt = np.linalg.svd(w)
    return float(s[level]), vt[level]


def _assert_metrics_close(a: dict[str, float], b: dict[str, float], rtol: float, atol: float, keys=None) -> None:
    for k in keys or a:
        assert a[k] == pytest.approx(b[k], rel=rtol, abs=atol), k


# Fixed linear pair with different output dimensions (m = 3, d = 4, n = 5); x is generic (not on a line).
W_S = np.array(
    [[1.0, -0.5, 0.3, 0.0, 2.0], [0.2, 1.5, -1.0, 0.7, 0.1], [-0.4, 0.3, 0.8, -1.2, 0.5]]
)
W_T = np.array(
    [
        [0.9, -0.2, 0.4, 0.3, 1.1],
        [-0.6, 1.0, 0.2, -0.3, 0.4],
        [0.1, 0.2, -0.9, 1.4, -0.2],
        [0.5, -0.7, 0.3, 0.2, 0.6],
    ]
)
B_S = np.array([0.1, -0.2, 0.3])
B_T = np.array([0.5, 0.0, -0.1, 0.2])


# ----------------------------------------------------------------------------------------------
# Jacobians
# ----------------------------------------------------------------------------------------------


def test_jacobian_of_linear_model_is_its_weight():
    x = _randn(6, 5)
    j = jacobians(_linear(W_T, B_T), x)
    assert j.shape == (6, 4, 5) and j.dtype == F64
    np.testing.assert_allclose(j.numpy(), np.broadcast_to(W_T, (6, 4, 5)), rtol=0, atol=1e-15)


def test_jacobian_matches_finite_differences_tanh_mlp():
    model, x = _mlp(5, 3), _randn(8, 5, seed=1)
    j = jacobians(model, x)
    assert j.shape == (8, 3, 5)
    np.testing.assert_allclose(j.numpy(), _fd_jacobian(model, x).numpy(), rtol=0, atol=1e-8)


def test_jacobian_matches_finite_differences_relu_zoo_mlp():
    model, x = build_model("mlp", (5,), 3, hidden=(7,), seed=3).double(), _randn(8, 5, seed=2)
    np.testing.assert_allclose(jacobians(model, x).numpy(), _fd_jacobian(model, x).numpy(), rtol=0, atol=1e-6)


def test_jacobian_n_less_than_d_uses_forward_mode_and_is_correct():
    """n = 3 inputs, d = 6 outputs (the jacfwd path)."""
    model, x = _mlp(3, 6, seed=4), _randn(7, 3, seed=3)
    j = jacobians(model, x)
    assert j.shape == (7, 6, 3)
    np.testing.assert_allclose(j.numpy(), _fd_jacobian(model, x).numpy(), rtol=0, atol=1e-8)
    w = _randn(6, 3, seed=9).numpy()
    np.testing.assert_allclose(jacobians(_linear(w), x).numpy(), np.broadcast_to(w, (7, 6, 3)), atol=1e-15)


class _MixesSamples(nn.Module):
    """``tanh(W x_b) + c (s - s.detach())`` with ``s = W sum_b' x_b'``: the outputs are per sample (the added term
    is zero, so the models' batch check passes), but the gradients mix the batch. One input's Jacobian alone is
    ``diag(tanh') W + c W``; the sum of the batch's Jacobians with respect to it is ``diag(tanh') W + B c W``."""

    def __init__(self, n_in: int, n_out: int, c: float = 0.3) -> None:
        super().__init__()
        self.lin = _linear(_randn(n_out, n_in, seed=60).numpy())
        self.c = c

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.lin.weight @ x.sum(0)
        return torch.tanh(self.lin(x)) + self.c * (s - s.detach()).expand(len(x), -1)


def _jacobians_one_at_a_time(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Each input's Jacobian from a batch of that input alone (torch.autograd.functional, one per sample)."""
    return torch.stack([torch.autograd.functional.jacobian(lambda z: model(z[None])[0], xi) for xi in x])


def test_model_that_mixes_samples_is_differentiated_one_input_at_a_time():
    import transferlens.exact as exact_module

    model, x = _MixesSamples(6, 4), _randn(5, 6, seed=61)
    assert not exact_module._prepare(model, x, "model", "logits").by_batch
    torch.testing.assert_close(jacobians(model, x), _jacobians_one_at_a_time(model, x), rtol=1e-12, atol=1e-12)


class _SpreadOfBatch(nn.Module):
    """``tanh(W x_b) + v ||x_b - mean_b' x_b'||^2``: the added term and its gradient vanish for a lone input and
    for a batch of equal inputs, so equal inputs hide that it mixes the batch (outputs and gradients alike)."""

    def __init__(self, n_in: int, n_out: int) -> None:
        super().__init__()
        self.lin = _linear(_randn(n_out, n_in, seed=60).numpy())
        self.v = _randn(n_out, seed=69)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.lin(x)) + ((x - x.mean(0)) ** 2).sum(1, keepdim=True) * self.v


@pytest.mark.parametrize("duplicates", [1, 3])
def test_batch_pass_check_skips_inputs_equal_to_the_first(duplicates):
    """Equal inputs cannot show that a model mixes the batch (here even the models' output check on the first two
    inputs passes): the batch-pass check takes the first input that differs from x[0]."""
    import transferlens.exact as exact_module

    model, x = _SpreadOfBatch(6, 4), _randn(5, 6, seed=64)
    x[1 : 1 + duplicates] = x[0]
    assert not exact_module._prepare(model, x, "model", "logits").by_batch
    torch.testing.assert_close(jacobians(model, x), _jacobians_one_at_a_time(model, x), rtol=1e-12, atol=1e-12)


def test_batch_pass_check_is_inconclusive_without_two_distinct_inputs_or_with_zero_gradients():
    import transferlens.exact as exact_module

    same = _randn(1, 6, seed=65).expand(4, 6).clone()
    assert not exact_module._prepare(_mlp(6, 4, seed=66), same, "model", "logits").by_batch
    zero = _linear(np.zeros((4, 6)))
    assert not exact_module._prepare(zero, _randn(4, 6, seed=67), "model", "logits").by_batch
    assert exact_module._prepare(_mlp(6, 4, seed=66), _randn(4, 6, seed=67), "model", "logits").by_batch


def test_krylov_forms_no_jacobian_to_check_the_batch_pass(monkeypatch):
    import transferlens.exact as exact_module

    def refuse(*_args, **_kw):
        raise AssertionError("the batch-pass check ran")

    monkeypatch.setattr(exact_module, "_samples_independent", refuse)
    s, t = build_model("mlp", (40,), 34, hidden=(20,), seed=3).double(), build_model("mlp", (40,), 34, hidden=(20,), seed=4).double()
    r = exact_transferability(s, t, _randn(3, 40, seed=68), method="krylov")
    assert 0 < r["alpha1_s2t"] <= 1


def test_one_blas_thread_is_shared_and_restored_by_the_last_caller_to_leave():
    """Two overlapping callers (as from two threads): the limit holds until both have left, then the setting
    from before comes back."""
    from threadpoolctl import threadpool_info, threadpool_limits

    import transferlens.exact as exact_module

    def blas_threads() -> set[int]:
        return {i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"}

    with threadpool_limits(2, user_api="blas"):
        before = blas_threads()
        a, b = exact_module._one_blas_thread(), exact_module._one_blas_thread()
        a.__enter__()
        b.__enter__()
        assert blas_threads() == {1}
        a.__exit__(None, None, None)
        assert blas_threads() == {1}
        b.__exit__(None, None, None)
        assert blas_threads() == before == {2}


@pytest.mark.parametrize("n_out,by_batch", [(4, True), (6, True), (9, False)])  # d < n, d = n, n < d (forward mode)
def test_independent_samples_take_one_reverse_pass_over_the_batch(n_out, by_batch):
    import transferlens.exact as exact_module

    model, x = _mlp(6, n_out, seed=62), _randn(5, 6, seed=63)
    assert exact_module._prepare(model, x, "model", "logits").by_batch is by_batch
    torch.testing.assert_close(jacobians(model, x), _jacobians_one_at_a_time(model, x), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("rows_per_pass", [1, 3, 7, 1024])  # blocks of 1 .. 4 samples, 1 .. 3 outputs per pass, one pass
@pytest.mark.parametrize("output", ["logits", "probs"])
def test_batch_pass_in_blocks_and_output_groups_gives_each_samples_jacobian(monkeypatch, rows_per_pass, output):
    """However the chunk is cut into blocks of samples and groups of outputs per reverse pass, every sample gets
    its own Jacobian (against one input at a time), and the metrics do not move."""
    import transferlens.exact as exact_module

    s, t = _mlp(6, 5, seed=70), _mlp(6, 4, seed=71)
    x = _randn(10, 6, seed=72)
    ref = exact_transferability(s, t, x, output=output)
    monkeypatch.setattr(exact_module, "ROWS_PER_PASS", rows_per_pass)
    assert exact_module._prepare(s, x, "model", output).by_batch
    def one(z: torch.Tensor) -> torch.Tensor:
        y = s(z[None])[0]
        return torch.softmax(y, 0) if output == "probs" else y

    want = torch.stack([torch.autograd.functional.jacobian(one, xi) for xi in x])
    torch.testing.assert_close(jacobians(s, x, output=output), want, rtol=1e-12, atol=1e-12)
    got = exact_transferability(s, t, x, output=output)
    _assert_metrics_close(got.metrics(), ref.metrics(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(got.s2t.alpha1_samples, ref.s2t.alpha1_samples, rtol=1e-12)


def test_jacobian_image_shaped_input_is_flattened():
    w = _randn(3, 16, seed=5).numpy()
    model = nn.Sequential(nn.Flatten(), _linear(w))
    x = _randn(4, 1, 4, 4, seed=6)
    j = jacobians(model, x)
    assert j.shape == (4, 3, 16)
    np.testing.assert_allclose(j.numpy(), np.broadcast_to(w, (4, 3, 16)), atol=1e-15)
    cnn = build_model("cnn2d", (1, 4, 4), 3, channels=2, feature_dim=5, seed=0).double()
    np.testing.assert_allclose(jacobians(cnn, x).numpy(), _fd_jacobian(cnn, x).numpy(), atol=1e-6)


def test_jacobian_of_probs_and_features_outputs():
    model, x = build_model("mlp", (5,), 3, hidden=(6,), seed=7).double(), _randn(5, 5, seed=7)
    jp = jacobians(model, x, output="probs")
    np.testing.assert_allclose(jp.numpy(), _fd_jacobian(lambda z: torch.softmax(model(z), 1), x).numpy(), atol=1e-8)
    # softmax sums to 1: each column of the probs Jacobian sums to 0
    np.testing.assert_allclose(jp.sum(1).numpy(), 0.0, atol=1e-14)
    jf = jacobians(model, x, output="features")
    assert jf.shape == (5, 6, 5)
    np.testing.assert_allclose(jf.numpy(), _fd_jacobian(model.features, x).numpy(), atol=1e-6)


def test_jacobians_leave_input_model_mode_and_grads_untouched():
    model = nn.Sequential(nn.Linear(4, 6), nn.Dropout(0.5), nn.Tanh(), nn.Linear(6, 3)).double()
    model.train()
    x = _randn(5, 4)
    x0 = x.clone()
    j1, j2 = jacobians(model, x), jacobians(model, x)
    assert torch.equal(j1, j2), "dropout must be off (eval mode) while differentiating"
    assert torch.equal(x, x0)
    assert model.training and all(p.requires_grad and p.grad is None for p in model.parameters())
    model.eval()
    np.testing.assert_allclose(j1.numpy(), _fd_jacobian(model, x).numpy(), atol=1e-8)


def test_jacobians_accept_numpy_input_and_float32_models():
    w = _randn(3, 4, seed=11)
    x = _randn(3, 4, seed=12).numpy()
    j = jacobians(_linear(w.numpy()), x)
    np.testing.assert_allclose(j.numpy(), np.broadcast_to(w.numpy(), (3, 3, 4)), atol=1e-15)
    m32 = _linear(w.numpy()).float()
    j32 = jacobians(m32, torch.as_tensor(x, dtype=torch.float32))
    assert j32.dtype == F64  # always returned in float64
    np.testing.assert_allclose(j32.numpy(), np.broadcast_to(w.numpy(), (3, 3, 4)), atol=1e-6)


# ----------------------------------------------------------------------------------------------
# Singular directions
# ----------------------------------------------------------------------------------------------


@pytest.fixture(params=["batched", "lapack"])
def eigen_path(request, monkeypatch):
    """Both ways of solving the samples' Gram eigenproblems: one torch batch, or LAPACK sample by sample."""
    import transferlens.exact as exact_module

    monkeypatch.setattr(exact_module, "LAPACK_FROM", 10**9 if request.param == "batched" else 1)
    return request.param


@pytest.mark.parametrize("n_in,n_out", [(5, 3), (3, 6), (4, 4)])
def test_singular_directions_match_numpy_svd(n_in, n_out, eigen_path):
    model, x = _mlp(n_in, n_out, seed=n_in + n_out), _randn(9, n_in, seed=13)
    k = min(n_in, n_out)
    sigma, v = singular_directions(model, x, k)
    assert sigma.shape == (9, k) and v.shape == (9, k, n_in)
    assert torch.isfinite(sigma).all() and torch.isfinite(v).all()
    j = jacobians(model, x).numpy()
    for i in range(len(x)):
        _, s_np, vt_np = np.linalg.svd(j[i])
        np.testing.assert_allclose(sigma[i].numpy(), s_np[:k], rtol=1e-10, atol=1e-12)
        gram = v[i].numpy() @ v[i].numpy().T
        np.testing.assert_allclose(gram, np.eye(k), atol=1e-9)  # unit norm, orthogonal across k
        np.testing.assert_allclose(np.abs(np.sum(v[i].numpy() * vt_np[:k], axis=1)), 1.0, atol=1e-9)
        # J v_i has norm sigma_i
        np.testing.assert_allclose(np.linalg.norm(j[i] @ v[i].numpy().T, axis=0), s_np[:k], rtol=1e-10)


def test_singular_directions_of_linear_model_match_svd_of_weight():
    sigma, v = singular_directions(_linear(W_T), _randn(4, 5), 2)
    _, s_np, vt_np = np.linalg.svd(W_T)
    np.testing.assert_allclose(sigma.numpy(), np.broadcast_to(s_np[:2], (4, 2)), rtol=1e-12)
    for i in range(4):
        np.testing.assert_allclose(np.abs(v[i].numpy() @ vt_np[:2].T).diagonal(), 1.0, atol=1e-12)


@pytest.mark.parametrize("n_out", [3, 8])  # d <= n (Gram J J^T) and n < d (Gram J^T J)
def test_singular_directions_zero_jacobian_no_nan(n_out):
    model = _linear(np.zeros((n_out, 4)), np.arange(n_out))  # constant output
    sigma, v = singular_directions(model, _randn(5, 4), 2)
    assert torch.isfinite(sigma).all() and torch.isfinite(v).all()
    assert (sigma == 0).all()


def test_singular_directions_bad_k():
    model, x = _mlp(5, 3), _randn(4, 5)
    with pytest.raises(ValueError, match="k must"):
        singular_directions(model, x, 0)
    with pytest.raises(ValueError, match="level"):
        singular_directions(model, x, 4)  # only min(n, d) = 3 singular values


# 3 x 5 rank-1 matrices: sigma_2 = sigma_3 = 0. Several of them, so that the bug below shows whatever the
# rounding of the local LAPACK eigh (an eigenvalue that happens to come out <= 0 is clamped to an exact 0).
RANK1 = [
    np.outer([1.0, 2.0, 3.0], [1.0, -1.0, 0.5, 2.0, 0.3]),
    np.outer([1.0, -2.0, 0.5], [0.3, 1.0, -1.0, 0.7, 2.0]),
    np.outer([0.7, 0.1, -1.3], [2.0, 0.4, -0.6, 1.1, -0.9]),
    np.outer([-0.2, 1.7, 0.9], [0.5, 0.5, 1.5, -2.0, 0.1]),
]


def test_singular_directions_rank_deficient_jacobian():
    for w in RANK1:
        sigma, v = singular_directions(_linear(w), _randn(3, 5), 2)
        s_np = np.linalg.svd(w, compute_uv=False)
        np.testing.assert_allclose(sigma.numpy(), np.broadcast_to(s_np[:2], (3, 2)), rtol=1e-12, atol=1e-12 * s_np[0])
        norms = v.norm(dim=2)
        # each vector is either a unit vector or the documented 0 for a vanishing singular value
        assert bool((((norms - 1).abs() < 1e-9) | (norms == 0)).all()), norms


def test_exact_transferability_level1_rank_deficient_source_is_degenerate():
    for w in RANK1:
        with pytest.raises(ValueError, match="no sample left"):
            exact_transferability(_linear(w), _linear(W_T[:3]), _randn(4, 5), level=1)


# ----------------------------------------------------------------------------------------------
# Exact attack
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("level", [0, 1])
def test_exact_attack_linear_model_is_eps_times_singular_vector(level):
    x = _randn(6, 5)
    x0 = x.clone()
    delta = exact_attack(_linear(W_T), x, 0.3, level=level)
    assert delta.shape == x.shape and delta.dtype == x.dtype
    assert torch.equal(x, x0)
    np.testing.assert_allclose(delta.norm(dim=1).numpy(), 0.3, rtol=1e-12)
    s, v = _np_top_right(W_T, level)
    np.testing.assert_allclose(np.abs(delta.numpy() @ v), 0.3, rtol=1e-12)
    # the deviation it causes is eps * sigma_level
    np.testing.assert_allclose(np.linalg.norm(delta.numpy() @ W_T.T, axis=1), 0.3 * s, rtol=1e-12)


def test_exact_attack_image_shape_and_norm():
    cnn = build_model("cnn2d", (1, 4, 4), 3, channels=2, feature_dim=5, seed=1).double()
    x = _randn(5, 1, 4, 4, seed=2)
    delta = exact_attack(cnn, x, 0.05)
    assert delta.shape == (5, 1, 4, 4)
    np.testing.assert_allclose(delta.flatten(1).norm(dim=1).numpy(), 0.05, rtol=1e-12)
    _, v = singular_directions(cnn, x, 1)
    np.testing.assert_allclose(delta.flatten(1).numpy(), 0.05 * v[:, 0].numpy(), atol=1e-15)


def test_exact_attack_maximises_first_order_deviation():
    """No random unit direction moves a smooth model's output further, to first order, than the exact attack."""
    model, x = _mlp(5, 3, seed=2), _randn(4, 5, seed=3)
    j = jacobians(model, x).numpy()
    delta = exact_attack(model, x, 1.0).numpy()
    best = np.linalg.norm(np.einsum("bdn,bn->bd", j, delta), axis=1)
    dirs = _randn(200, 5, seed=4).numpy()
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    for i in range(len(x)):
        assert np.linalg.norm(dirs @ j[i].T, axis=1).max() <= best[i] * (1 + 1e-12)


def test_exact_attack_zero_jacobian_is_finite():
    for n_out in (3, 8):  # both Gram paths
        delta = exact_attack(_linear(np.zeros((n_out, 4))), _randn(3, 4), 0.1)
        assert torch.isfinite(delta).all()
        assert bool((delta.norm(dim=1) <= 0.1 + 1e-12).all())


def test_exact_attack_bad_arguments():
    model, x = _linear(W_T), _randn(3, 5)
    for eps in (0.0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="eps"):
            exact_attack(model, x, eps)
    with pytest.raises(ValueError, match="level"):
        exact_attack(model, x, 0.1, level=4)  # min(n, d) = 4


def test_exact_attack_negative_level_message_names_level():
    with pytest.raises(ValueError, match="level"):
        exact_attack(_linear(W_T), _randn(3, 5), 0.1, level=-1)


# ----------------------------------------------------------------------------------------------
# Exact transferability: hand-computed linear models
# ----------------------------------------------------------------------------------------------


def _hand_grad_match(wa: np.ndarray, wb: np.ndarray) -> tuple[float, float]:
    """A* = W_b W_a^T (W_a W_a^T)^+; distance ||W_b - A* W_a||_F and that over ||W_b||_F.

    ``A* W_a = W_b P`` with ``P = V V^T`` the projector onto the row space of ``W_a`` (``V``: its right-singular
    vectors above the numerical rank, from an SVD of ``W_a`` itself). The pseudo-inverse of a rank-deficient
    ``W_a W_a^T`` would depend on where its cut-off falls among the rounding-level eigenvalues (with numpy 2.5.2 it
    gave a distance of 0.45 where the answer is 0)."""
    _, s, vt = np.linalg.svd(wa, full_matrices=False)
    v = vt[s > max(wa.shape) * np.finfo(np.float64).eps * s[0]].T
    dist = float(np.linalg.norm(wb - (wb @ v) @ v.T))
    return dist, dist / float(np.linalg.norm(wb))


def _hand_func_match(fa: np.ndarray, fb: np.ndarray) -> tuple[float, float]:
    design = np.hstack([fa, np.ones((len(fa), 1))])
    coef, *_ = np.linalg.lstsq(design, fb, rcond=None)
    resid = fb - design @ coef
    dist = math.sqrt(float((resid**2).sum(1).mean()))
    scale = math.sqrt(float(((fb - fb.mean(0)) ** 2).sum(1).mean()))
    return dist, dist / scale


def test_linear_models_every_quantity_by_hand():
    x = _randn(30, 5, seed=21)
    r = exact_transferability(_linear(W_S, B_S), _linear(W_T, B_T), x)
    assert isinstance(r, ExactTransferability) and r.n == 30
    s_s, v_s = _np_top_right(W_S)
    s_t, v_t = _np_top_right(W_T)
    a1_s2t = np.linalg.norm(W_T @ v_s) / s_t
    a1_t2s = np.linalg.norm(W_S @ v_t) / s_s
    assert 0 < a1_s2t < 1 and 0 < a1_t2s < 1
    for res, a1 in ((r.s2t, a1_s2t), (r.t2s, a1_t2s)):
        np.testing.assert_allclose(res.alpha1_samples, a1, rtol=1e-10)
        assert res.alpha1 == pytest.approx(a1, rel=1e-10)
        assert res.alpha1_median == pytest.approx(a1, rel=1e-10)
        # constant Jacobian: u and v are the same for every sample, so ||E[u v^T]||_F = ||u|| ||v|| = 1
        assert res.alpha2 == pytest.approx(1.0, abs=1e-12)
        assert res.combined == pytest.approx(a1, rel=1e-10)
        assert res.n_used == 30 and res.n_degenerate == 0 and res.n_filtered == 0
        np.testing.assert_array_equal(res.used_index, np.arange(30))
    for direction, (wa, wb) in (("s2t", (W_S, W_T)), ("t2s", (W_T, W_S))):
        dist, rel = _hand_grad_match(wa, wb)
        got = r.gradient_matching[direction]
        assert isinstance(got, MatchingDistance) and got.direction == direction
        assert got.distance == pytest.approx(dist, rel=1e-7, abs=1e-7)
        assert got.relative == pytest.approx(rel, rel=1e-7, abs=1e-7)
        assert r[f"grad_match_{direction}"] == got.distance
    # s2t: W_S's rows span only 3 of W_T's 5 input dimensions, so no A maps W_S onto W_T exactly
    assert r.gradient_matching["s2t"].distance > 0.1
    x_np = x.numpy()
    f_s, f_t = x_np @ W_S.T + B_S, x_np @ W_T.T + B_T
    for direction, (fa, fb) in (("s2t", (f_s, f_t)), ("t2s", (f_t, f_s))):
        dist, rel = _hand_func_match(fa, fb)
        got = r.function_matching[direction]
        assert got.distance == pytest.approx(dist, rel=1e-9, abs=1e-12)
        assert got.relative == pytest.approx(rel, rel=1e-9, abs=1e-12)
        assert r[f"func_match_{direction}"] == got.distance


def test_linear_alpha1_by_hand_at_level1():
    """level=k: alpha1 = ||W_T v_S,k|| / sigma_max(W_T): the attack uses the (k+1)-th singular vector, the
    denominator stays the target's own worst case."""
    r = exact_transferability(_linear(W_S), _linear(W_T), _randn(5, 5), level=1)
    _, v_s = _np_top_right(W_S, 1)
    s_t, _ = _np_top_right(W_T, 0)
    np.testing.assert_allclose(r.s2t.alpha1_samples, np.linalg.norm(W_T @ v_s) / s_t, rtol=1e-9)
    assert r.s2t.alpha2 == pytest.approx(1.0, abs=1e-12)


def test_linear_source_inside_target_row_space_has_zero_gradient_distance():
    """W_S = C W_T with C invertible: each Jacobian is an exact linear map of the other."""
    c = np.array([[2.0, 0.5, 0.0, -1.0], [0.0, 1.0, 0.3, 0.2], [0.1, 0.0, 1.5, 0.0], [0.4, -0.3, 0.0, 1.0]])
    r = exact_transferability(_linear(c @ W_T), _linear(W_T), _randn(10, 5))
    for direction in ("s2t", "t2s"):
        assert r.gradient_matching[direction].distance == pytest.approx(0.0, abs=1e-6)
        assert r.function_matching[direction].distance == pytest.approx(0.0, abs=1e-8)


@pytest.mark.parametrize("d", [2, 4])
def test_target_is_affine_map_of_source(d):
    """f_T = A f_S + b: J_T = A J_S, so s2t gradient matching and function matching are ~0."""
    src = build_model("mlp", (5,), 3, hidden=(7,), seed=11).double()
    head = _linear(_randn(d, 3, seed=12).numpy(), _randn(d, seed=13).numpy())
    tgt = nn.Sequential(src, head)
    r = exact_transferability(src, tgt, _randn(40, 5, seed=14))
    # moment sums: the distance is the square root of a cancellation, ~1e-8 precision
    assert r.gradient_matching["s2t"].distance == pytest.approx(0.0, abs=1e-6)
    assert r.gradient_matching["s2t"].relative == pytest.approx(0.0, abs=1e-6)
    assert r.function_matching["s2t"].distance == pytest.approx(0.0, abs=1e-8)
    assert r.function_matching["s2t"].relative == pytest.approx(0.0, abs=1e-8)
    if d >= 3:  # A has full column rank: f_S = A^+ (f_T - b), so the reverse direction is exact too
        assert r.gradient_matching["t2s"].distance == pytest.approx(0.0, abs=1e-6)
        assert r.function_matching["t2s"].distance == pytest.approx(0.0, abs=1e-8)
    else:  # A (2 x 3) loses a direction: the reverse map cannot be exact
        assert r.gradient_matching["t2s"].relative > 1e-3
        assert r.function_matching["t2s"].relative > 1e-3


# ----------------------------------------------------------------------------------------------
# Exact transferability: identities and invariances
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("same_object", [True, False])
def test_source_equals_target(same_object):
    model = build_model("mlp", (6,), 4, hidden=(8,), seed=5).double()
    other = model if same_object else copy.deepcopy(model)
    r = exact_transferability(model, other, _randn(25, 6, seed=5))
    d = 4
    for res in (r.s2t, r.t2s):
        np.testing.assert_allclose(res.alpha1_samples, 1.0, rtol=1e-12)
        assert res.alpha2 == pytest.approx(res.combined, rel=1e-12)
        assert 1 / math.sqrt(d) - 1e-12 <= res.alpha2 <= 1 + 1e-12
        assert res.alpha2 < 1 - 1e-6  # Jacobian directions vary with x
    for direction in ("s2t", "t2s"):
        assert r.gradient_matching[direction].distance == pytest.approx(0.0, abs=1e-6)
        assert r.function_matching[direction].distance == pytest.approx(0.0, abs=1e-10)


def test_model_mode_restored_for_distinct_models():
    s, t = _mlp(5, 3, seed=1), _mlp(5, 3, seed=2)
    s.train()
    t.eval()
    t[0].weight.requires_grad_(False)
    exact_transferability(s, t, _randn(4, 5))
    assert s.training and not t.training
    assert all(p.requires_grad for p in s.parameters())
    assert [p.requires_grad for p in t.parameters()] == [False, True, True, True]
    with pytest.raises(ValueError, match="level"):
        exact_transferability(s, t, _randn(4, 5), level=3)
    assert s.training and not t.training and all(p.requires_grad for p in s.parameters())


def test_model_mode_restored_when_source_is_target():
    m = _mlp(5, 3)
    m.train()
    exact_transferability(m, m, _randn(4, 5))
    assert m.training
    assert all(p.requires_grad for p in m.parameters())


@pytest.mark.parametrize("negate", ["source", "target", "both"])
def test_sign_flip_of_a_model_changes_no_metric(negate):
    s, t = _mlp(5, 3, seed=1), _mlp(5, 4, seed=2)
    x = _randn(20, 5, seed=3)
    base = exact_transferability(s, t, x).metrics()
    s2 = _Neg(s) if negate in ("source", "both") else s
    t2 = _Neg(t) if negate in ("target", "both") else t
    _assert_metrics_close(exact_transferability(s2, t2, x).metrics(), base, rtol=1e-10, atol=1e-10)


def test_direction_metrics_invariant_to_singular_vector_signs():
    g = np.random.default_rng(0)
    dev_aa, dev_ab, dev_bb = g.normal(size=(12, 3)), g.normal(size=(12, 4)), g.normal(size=(12, 4))
    keep = np.ones(12, dtype=bool)
    ref = direction_metrics("s2t", dev_aa, dev_ab, dev_bb, keep, 1e-10, False, None)
    signs = g.choice([-1.0, 1.0], size=(12, 1))
    variants = [
        (-dev_aa, -dev_ab, dev_bb),  # v_a -> -v_a for every sample
        (signs * dev_aa, signs * dev_ab, dev_bb),  # v_a sign flipped per sample
        (dev_aa, dev_ab, signs * dev_bb),  # v_b sign flipped per sample
        (-dev_aa, dev_ab, dev_bb),  # model a negated: J_a -> -J_a, u flips for every sample
        (dev_aa, -dev_ab, -dev_bb),  # model b negated
    ]
    for aa, ab, bb in variants:
        got = direction_metrics("s2t", aa, ab, bb, keep, 1e-10, False, None)
        np.testing.assert_allclose(got.alpha1_samples, ref.alpha1_samples, rtol=1e-14)
        assert got.alpha2 == pytest.approx(ref.alpha2, rel=1e-13)
        assert got.combined == pytest.approx(ref.combined, rel=1e-13)


@pytest.mark.parametrize("n_out", [3, 8])
def test_chunk_size_does_not_change_results(n_out):
    s = build_model("mlp", (6,), n_out, hidden=(8,), seed=1).double()
    t = build_model("mlp", (6,), n_out, hidden=(8,), seed=2).double()
    x = _randn(20, 6, seed=0)
    results = [exact_transferability(s, t, x, chunk_size=c) for c in (1, 7, 1024)]
    for r in results[1:]:
        _assert_metrics_close(r.metrics(), results[0].metrics(), rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(r.s2t.alpha1_samples, results[0].s2t.alpha1_samples, rtol=1e-12)
        np.testing.assert_allclose(r.t2s.alpha1_samples, results[0].t2s.alpha1_samples, rtol=1e-12)
    full = jacobians(s, x)
    for c in (1, 7):
        np.testing.assert_array_equal(jacobians(s, x, chunk_size=c).numpy(), full.numpy())
        sv_c, v_c = singular_directions(s, x, 2, chunk_size=c)
        sv, v = singular_directions(s, x, 2)
        np.testing.assert_allclose(sv_c.numpy(), sv.numpy(), rtol=1e-12)
        np.testing.assert_allclose(v_c.numpy(), v.numpy(), rtol=1e-12, atol=1e-12)


def test_batch_result_equals_per_sample_results():
    s, t = _mlp(5, 3, seed=3), _mlp(5, 3, seed=4)
    x = _randn(6, 5, seed=5)
    r = exact_transferability(s, t, x)
    singles = [exact_transferability(s, t, x[i : i + 1]).s2t.alpha1 for i in range(len(x))]
    np.testing.assert_allclose(r.s2t.alpha1_samples, singles, rtol=1e-12)


def test_level1_differs_from_level0_and_too_large_level_raises():
    s, t = _mlp(6, 3, seed=1), _mlp(6, 3, seed=2)
    x = _randn(15, 6)
    r0, r1 = exact_transferability(s, t, x), exact_transferability(s, t, x, level=1)
    assert r1.options["level"] == 1
    for k in ALPHA_KEYS:
        assert abs(r0[k] - r1[k]) > 1e-4, k
    # matching distances do not depend on the level
    for k in ("grad_match_s2t", "grad_match_t2s", "func_match_s2t", "func_match_t2s"):
        assert r0[k] == pytest.approx(r1[k], rel=1e-12)
    with pytest.raises(ValueError, match="level"):
        exact_transferability(s, t, x, level=3)  # min(n, d) = 3
    with pytest.raises(ValueError, match="level"):
        exact_transferability(_mlp(2, 5), _mlp(2, 5, seed=1), _randn(4, 2), level=2)  # n < d: min = 2


def test_degenerate_samples_dead_relu_excluded_and_counted():
    """Samples in the dead region of a ReLU net have J = 0: excluded, counted, never NaN."""
    w1 = np.array([[1.0, 0.1, 0.2, 0.3], [1.0, -0.2, 0.1, 0.1], [1.0, 0.3, -0.1, 0.2]])
    src = nn.Sequential(_linear(w1), nn.ReLU(), _linear([[1.0, -0.5, 0.2], [0.3, 0.8, -1.0]]))
    tgt = _linear(W_T[:, :4])
    x = _randn(10, 4, seed=1).clamp(-1, 1)
    dead = np.array([0, 1, 0, 1, 1, 0, 0, 0, 1, 0], dtype=bool)
    x[:, 0] = torch.where(torch.as_tensor(dead), torch.tensor(-5.0, dtype=F64), torch.tensor(5.0, dtype=F64))
    assert (jacobians(src, x)[torch.as_tensor(dead)] == 0).all()
    sigma, v = singular_directions(src, x, 1)
    assert torch.isfinite(v).all() and (sigma[torch.as_tensor(dead)] == 0).all()
    r = exact_transferability(src, tgt, x)
    for res in (r.s2t, r.t2s):
        assert res.n_degenerate == int(dead.sum()) and res.n_used == int((~dead).sum())
        np.testing.assert_array_equal(res.used_index, np.flatnonzero(~dead))
        assert np.isfinite(res.alpha1_samples).all()
        assert all(math.isfinite(getattr(res, k)) for k in ("alpha1", "alpha2", "combined"))
    assert all(math.isfinite(v) for v in r.metrics().values())


def test_constant_model_all_degenerate_raises_clearly():
    const = _linear(np.zeros((3, 5)), [1.0, 2.0, 3.0])
    x = _randn(4, 5)
    assert (jacobians(const, x) == 0).all()
    with pytest.raises(ValueError, match="no sample left"):
        exact_transferability(const, _linear(W_T), x)
    with pytest.raises(ValueError, match="no sample left"):
        exact_transferability(_linear(W_T), const, x)


def test_tol_excludes_small_singular_values():
    """Samples whose singular value at level is <= tol (either model) are excluded."""
    s, t = _linear(W_S), _linear(W_T)
    sig = min(np.linalg.svd(W_S, compute_uv=False)[0], np.linalg.svd(W_T, compute_uv=False)[0])
    r = exact_transferability(s, t, _randn(3, 5), tol=sig * 0.999)
    assert r.s2t.n_used == r.t2s.n_used == 3
    with pytest.raises(ValueError, match="no sample left"):
        exact_transferability(s, t, _randn(3, 5), tol=sig * 1.001)


# ----------------------------------------------------------------------------------------------
# Consistency with the attack-based metrics
# ----------------------------------------------------------------------------------------------


def test_check_consistency_converges_on_small_mlps():
    s = build_model("mlp", (6,), 3, hidden=(8,), seed=1).double()
    t = build_model("mlp", (6,), 3, hidden=(8,), seed=2).double()
    x = _randn(60, 6, seed=0)
    c = check_consistency(s, t, x, steps=40)
    assert isinstance(c, ConsistencyCheck)
    assert c.eps == (1e-1, 1e-2, 1e-3) and c.steps == 40
    assert all(a > b for a, b in zip(c.max_abs_diff, c.max_abs_diff[1:])), c.max_abs_diff
    assert c.max_abs_diff[-1] < 1e-2
    assert c.converges
    exact = exact_transferability(s, t, x)
    for k in ALPHA_KEYS:
        assert c.exact_metrics[k] == pytest.approx(exact[k], rel=1e-12)
        assert abs(c.attack_metrics[-1][k] - exact[k]) <= c.max_abs_diff[-1] + 1e-15
    d = c.to_dict()
    json.dumps(d)
    assert d["converges"] is True and d["eps"] == [1e-1, 1e-2, 1e-3]


def test_check_consistency_bad_step_multiplier():
    with pytest.raises(ValueError, match="step_multiplier"):
        check_consistency(_mlp(5, 3), _mlp(5, 3, seed=1), _randn(3, 5), step_multiplier=0.0)


# ----------------------------------------------------------------------------------------------
# Bad input
# ----------------------------------------------------------------------------------------------


class _Argmax(nn.Module):
    def __init__(self, keepdim: bool) -> None:
        super().__init__()
        self.lin, self.keepdim = _linear(W_T), keepdim

    def forward(self, x):
        return self.lin(x).argmax(1, keepdim=self.keepdim)


class _Round(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = _linear(W_T)

    def forward(self, x):
        return torch.round(self.lin(x))


class _Detach(_Round):
    def forward(self, x):
        return self.lin(x).detach()


class _Item(_Round):
    def forward(self, x):
        return self.lin(x) * float(x.sum().item())


class _PerSampleItem(_Round):
    """Per-sample (no batch dependence) but calls .item(), which torch.func cannot vmap: with n < d (forward mode,
    one sample at a time under vmap) it cannot be differentiated; with d <= n the one reverse pass over the batch
    vmaps only the backward, and works."""

    def __init__(self, wide: bool = True) -> None:
        super().__init__()
        self.lin = _linear(W_T.T if wide else W_T)  # wide: 4 inputs -> 5 outputs

    def forward(self, x):
        scale = torch.tensor([float(v.detach()) for v in x[:, 0]], dtype=x.dtype).unsqueeze(1)
        return self.lin(x) * scale


class _Overflow(_Round):
    def forward(self, x):
        return torch.exp(1000 * self.lin(x))


def test_bad_inputs_raise_clearly():
    s, t = _linear(W_S), _linear(W_T)
    for fn in (
        lambda x: jacobians(t, x),
        lambda x: singular_directions(t, x),
        lambda x: exact_attack(t, x, 0.1),
        lambda x: exact_transferability(s, t, x),
    ):
        with pytest.raises(ValueError, match="empty"):
            fn(torch.zeros(0, 5, dtype=F64))
        bad = _randn(3, 5)
        bad[1, 2] = float("nan")
        with pytest.raises(ValueError, match="NaN"):
            fn(bad)
        bad[1, 2] = float("inf")
        with pytest.raises(ValueError, match="NaN/Inf"):
            fn(bad)
        with pytest.raises(ValueError, match="could not process inputs"):
            fn(_randn(3, 4))  # model expects 5 features


def test_bad_models_raise_clearly():
    x = _randn(3, 5)
    with pytest.raises(TypeError, match="nn.Module"):
        exact_transferability(lambda z: z, _linear(W_T), x)
    with pytest.raises(ValueError, match="2-D"):
        jacobians(_Argmax(keepdim=False), x)
    with pytest.raises(TypeError, match="floating"):
        jacobians(_Argmax(keepdim=True), x)
    with pytest.raises(TypeError, match="floating"):
        exact_transferability(_linear(W_S), _Argmax(keepdim=True), x)
    # _Item's output depends on the whole batch: refused up front, before any differentiation
    with pytest.raises(ValueError, match="changes with the other samples in the batch"):
        jacobians(_Item(), x)
    with pytest.raises(ValueError, match="changes with the other samples in the batch"):
        exact_transferability(_Item(), _linear(W_T), x)
    with pytest.raises(ValueError, match="could not differentiate"):
        jacobians(_PerSampleItem(), x[:, :4])
    with pytest.raises(ValueError, match="could not differentiate"):
        exact_transferability(_PerSampleItem(), _linear(W_T.T), x[:, :4])
    # overflow: exp(1000 * .) is inf, its Jacobian inf/NaN
    with pytest.raises(ValueError, match="NaN/Inf"):
        jacobians(_Overflow(), x)
    with pytest.raises(ValueError, match="NaN/Inf"):
        exact_transferability(_linear(W_S), _Overflow(), x)


def test_model_torch_func_cannot_vmap_is_differentiated_by_the_batch_pass():
    x = _randn(3, 5)
    model = _PerSampleItem(wide=False)
    torch.testing.assert_close(jacobians(model, x), _jacobians_one_at_a_time(model, x), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("model_cls", [_Round, _Detach])
def test_non_differentiable_model_gives_zero_jacobian_and_degenerate_samples(model_cls):
    """round/detach have zero derivative: Jacobian exactly 0, samples degenerate, clear error -- never NaN."""
    x = _randn(4, 5)
    j = jacobians(model_cls(), x)
    assert (j == 0).all()
    sigma, v = singular_directions(model_cls(), x)
    assert (sigma == 0).all() and torch.isfinite(v).all()
    with pytest.raises(ValueError, match="no sample left"):
        exact_transferability(model_cls(), _linear(W_S), x)


def test_bad_options_raise():
    s, t, x = _linear(W_S), _linear(W_T), _randn(3, 5)
    for level in (-1, 1.0, True, "0"):
        with pytest.raises(ValueError, match="level"):
            exact_transferability(s, t, x, level=level)
    for chunk in (0, -3, 2.5):
        with pytest.raises(ValueError, match="chunk_size"):
            exact_transferability(s, t, x, chunk_size=chunk)
        with pytest.raises(ValueError, match="chunk_size"):
            jacobians(t, x, chunk_size=chunk)
    for tol in (0.0, -1e-3, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="tol"):
            exact_transferability(s, t, x, tol=tol)
    with pytest.raises(ValueError, match="output"):
        exact_transferability(s, t, x, output="softmax")
    with pytest.raises(ValueError, match="output"):
        jacobians(t, x, output="nope")
    with pytest.raises(TypeError, match="features"):
        jacobians(t, x, output="features")  # a plain nn.Linear has no features()


# ----------------------------------------------------------------------------------------------
# Result API
# ----------------------------------------------------------------------------------------------


def test_result_metrics_to_dict_and_options():
    s, t = _mlp(5, 3, seed=1), _mlp(5, 4, seed=2)
    x = _randn(12, 5)
    r = exact_transferability(s, t, x, level=1, output="probs", chunk_size=5)
    m = r.metrics()
    assert set(m) == METRIC_KEYS
    assert all(isinstance(v, float) and math.isfinite(v) for v in m.values())
    assert m["alpha1_s2t"] == r.s2t.alpha1 and m["combined_t2s"] == r.t2s.combined
    assert m["grad_match_t2s"] == r.gradient_matching["t2s"].distance
    with pytest.raises(KeyError):
        r["alpha3_s2t"]
    with pytest.raises(KeyError):
        r["alpha1_x2y"]
    assert r.options["level"] == 1 and r.options["output"] == "probs" and r.options["squared"] is False
    assert r.options["chunk_size"] == 5 and r.options["attack"] == "exact"
    for samples in (False, True):
        d = r.to_dict(samples=samples)
        back = json.loads(json.dumps(d))
        assert back["metrics"] == pytest.approx(m)
        assert back["options"]["level"] == 1 and back["options"]["output"] == "probs"
        assert back["n"] == 12
        assert back["gradient_matching"]["s2t"] == r.gradient_matching["s2t"].to_dict()
        assert back["function_matching"]["t2s"]["direction"] == "t2s"
        assert ("alpha1_samples" in back["s2t"]) is samples
    assert len(r.to_dict(samples=True)["s2t"]["alpha1_samples"]) == r.s2t.n_used


def test_squared_option_squares_alpha2_and_combined_only():
    s, t = _mlp(5, 3, seed=1), _mlp(5, 3, seed=2)
    x = _randn(12, 5)
    plain, sq = exact_transferability(s, t, x), exact_transferability(s, t, x, squared=True)
    assert sq.options["squared"] is True
    for d in ("s2t", "t2s"):
        assert sq[f"alpha2_{d}"] == pytest.approx(plain[f"alpha2_{d}"] ** 2, rel=1e-12)
        assert sq[f"combined_{d}"] == pytest.approx(plain[f"combined_{d}"] ** 2, rel=1e-12)
        for k in ("alpha1", "grad_match", "func_match"):
            assert sq[f"{k}_{d}"] == plain[f"{k}_{d}"]


def test_tiny_transferred_deviation_keeps_alpha2_at_most_one():
    r = exact_transferability(_linear([[1.0, 0.0]]), _linear([[1e-264, 1.0]]), _randn(3, 2))
    assert r.s2t.alpha2 <= 1 + 1e-12
    assert r.s2t.alpha2 == pytest.approx(1.0)  # J_T v_S = 1e-264 != 0: one constant direction, alpha2 = 1


# ----------------------------------------------------------------------------------------------
# Property test: random linear models
# ----------------------------------------------------------------------------------------------


def _weights(rows: int, cols: int):
    # entries are 0 or of magnitude >= 1e-6: deviations below ~1e-154 underflow in direction_metrics (a
    # separate, deterministic test below)
    elements = st.floats(-2, 2, allow_nan=False, allow_subnormal=False).map(lambda v: 0.0 if abs(v) < 1e-6 else v)
    return hnp.arrays(np.float64, (rows, cols), elements=elements)


@st.composite
def _linear_pair(draw):
    n = draw(st.integers(1, 4))
    m, d = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    return draw(_weights(m, n)), draw(_weights(d, n))


@settings(max_examples=25, deadline=None, derandomize=True)
@given(_linear_pair())
def test_property_random_linear_models(pair):
    ws, wt = pair
    assume(np.linalg.svd(ws, compute_uv=False)[0] > 1e-3 and np.linalg.svd(wt, compute_uv=False)[0] > 1e-3)
    x = _randn(3, ws.shape[1], seed=1)
    r = exact_transferability(_linear(ws), _linear(wt), x)
    for res, (wa, wb) in ((r.s2t, (ws, wt)), (r.t2s, (wt, ws))):
        assert res.n_used == 3
        # the exact attack is optimal for the model's own deviation: alpha1 <= 1
        assert bool(((res.alpha1_samples >= 0) & (res.alpha1_samples <= 1 + 1e-12)).all()), res.alpha1_samples
        s_a = np.linalg.svd(wa, compute_uv=False)
        if len(s_a) == 1 or s_a[0] - s_a[1] > 1e-6 * s_a[0]:  # top right-singular vector of W_a is unique
            _, v_a = _np_top_right(wa)
            s_b, _ = _np_top_right(wb)
            np.testing.assert_allclose(res.alpha1_samples, np.linalg.norm(wb @ v_a) / s_b, rtol=1e-6, atol=1e-9)
        assert 0 <= res.alpha2 <= 1 + 1e-12
        assert 0 <= res.combined <= res.alpha1 + 1e-12
    for direction in ("s2t", "t2s"):
        g = r.gradient_matching[direction]
        assert 0 <= g.relative <= 1 + 1e-9 and g.distance >= 0
        assert 0 <= r.function_matching[direction].relative <= 1 + 1e-9


def test_exact_attack_on_integer_inputs_is_a_float_perturbation():
    x = torch.tensor([[1, 2, 3, 4, 5], [0, 1, 0, 1, 0]])
    delta = exact_attack(_linear(W_T), x, 0.5)
    assert torch.is_floating_point(delta)
    np.testing.assert_allclose(delta.norm(dim=1).numpy(), 0.5, rtol=1e-6)


def test_rank_cutoff_applies_when_n_is_smaller_than_d():
    # d=4 outputs, n=2 inputs, rank 1: the 2nd singular value is 0 with a zero vector, as when d <= n
    w = np.outer([1.0, 2.0, -1.0, 0.5], [0.3, 1.0])
    s, v = singular_directions(_linear(w), _randn(3, 2), 2)
    assert torch.all(s[:, 1] == 0) and torch.all(v[:, 1] == 0)
    assert torch.allclose(v[:, 0].norm(dim=1), torch.ones(3, dtype=v.dtype))


# ----------------------------------------------------------------------------------------------
# Memory budget, chunking and the eigenvector paths
# ----------------------------------------------------------------------------------------------


class _Counting(nn.Module):
    """Counts forward calls: under ``vmap`` a whole chunk is one call."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner, self.calls = inner, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.inner(x)


def _chunks_used(fn, n_out: int, **kw) -> int:
    """Forward calls made by ``fn(model, **kw)`` beyond those of a single-chunk run (the input checks)."""
    model = _Counting(_mlp(5, n_out, seed=1))
    fn(model, chunk_size=10_000, memory_budget=2**40)
    single = model.calls
    model.calls = 0
    fn(model, **kw)
    return model.calls - single + 1


@pytest.mark.parametrize("n_out", [3, 8])  # d <= n and n < d
def test_memory_budget_sets_the_chunk_size(n_out):
    x = _randn(10, 5, seed=2)
    one = lambda m, **kw: jacobians(m, x, **kw)  # noqa: E731
    assert _chunks_used(one, n_out, memory_budget=1) == 10  # at least one sample per chunk
    assert _chunks_used(one, n_out, memory_budget=2**40) == 1
    assert _chunks_used(one, n_out, memory_budget=2**40, chunk_size=4) == 3  # chunk_size caps the rows
    assert _chunks_used(one, n_out, memory_budget=1, chunk_size=4) == 10  # the budget caps them too
    # the budget is counted in bytes per sample: more of it, fewer chunks, with sizes in between
    counts = [_chunks_used(one, n_out, memory_budget=b) for b in (1, 1_000, 2_000, 4_000, 8_000, 16_000, 32_000, 2**40)]
    assert counts == sorted(counts, reverse=True) and counts[0] == 10 and counts[-1] == 1, counts
    assert any(1 < c < 10 for c in counts), counts
    pair = lambda m, **kw: exact_transferability(m, _mlp(5, n_out, seed=2), x, **kw)  # noqa: E731
    assert _chunks_used(pair, n_out, memory_budget=1) == 10


@pytest.mark.parametrize("level", [0, 1])
@pytest.mark.parametrize("n_out", [3, 8])
def test_memory_budget_does_not_change_results(n_out, level):
    s = build_model("mlp", (6,), n_out, hidden=(8,), seed=1).double()
    t = build_model("mlp", (6,), n_out, hidden=(8,), seed=2).double()
    x = _randn(23, 6, seed=4)
    ref = exact_transferability(s, t, x, level=level)
    for budget in (1, 30_000):
        r = exact_transferability(s, t, x, level=level, memory_budget=budget)
        _assert_metrics_close(r.metrics(), ref.metrics(), rtol=1e-12, atol=1e-12)
        for d in ("s2t", "t2s"):
            np.testing.assert_allclose(getattr(r, d).alpha1_samples, getattr(ref, d).alpha1_samples, rtol=1e-12)
    np.testing.assert_array_equal(jacobians(s, x, memory_budget=1).numpy(), jacobians(s, x).numpy())
    sv_1, v_1 = singular_directions(s, x, 2, memory_budget=1)
    sv, v = singular_directions(s, x, 2)
    np.testing.assert_allclose(sv_1.numpy(), sv.numpy(), rtol=1e-12)
    np.testing.assert_allclose(v_1.numpy(), v.numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(exact_attack(s, x, 0.1, memory_budget=1).numpy(), exact_attack(s, x, 0.1).numpy())


def test_memory_budget_and_chunk_size_options_are_checked_and_recorded():
    s, t, x = _linear(W_S), _linear(W_T), _randn(3, 5)
    r = exact_transferability(s, t, x)
    assert r.options["chunk_size"] is None and r.options["memory_budget"] == MEMORY_BUDGET == 256 * 2**20
    r = exact_transferability(s, t, x, memory_budget=np.int64(1000), chunk_size=2)
    assert r.options["memory_budget"] == 1000 and type(r.options["memory_budget"]) is int and r.options["chunk_size"] == 2
    calls = (
        lambda v: exact_transferability(s, t, x, memory_budget=v),
        lambda v: jacobians(t, x, memory_budget=v),
        lambda v: singular_directions(t, x, memory_budget=v),
        lambda v: exact_attack(t, x, 0.1, memory_budget=v),
    )
    for call in calls:
        for bad, err in ((0, ValueError), (-5, ValueError), (2.5, TypeError), ("1", TypeError), (True, TypeError), (None, TypeError)):
            with pytest.raises(err, match="memory_budget must"):
                call(bad)
    with pytest.raises(ValueError, match="chunk_size"):
        exact_attack(t, x, 0.1, chunk_size=0)


@pytest.mark.parametrize("level", [0, 1, 4])
@pytest.mark.parametrize("n_in,n_out", [(170, 160), (160, 170)])  # Gram J J^T (d <= n) / J^T J (n < d), > 150 x 150
def test_large_linear_jacobians_by_hand(n_in, n_out, level):
    ws = _randn(n_out, n_in, seed=30).numpy()
    wt = ws + 0.5 * _randn(n_out, n_in, seed=31).numpy()
    r = exact_transferability(_linear(ws), _linear(wt), _randn(3, n_in, seed=32), level=level)
    for res, (wa, wb) in ((r.s2t, (ws, wt)), (r.t2s, (wt, ws))):
        _, v_a = _np_top_right(wa, level)
        s_b, _ = _np_top_right(wb)
        np.testing.assert_allclose(res.alpha1_samples, np.linalg.norm(wb @ v_a) / s_b, rtol=1e-9)
        assert res.alpha2 == pytest.approx(1.0, abs=1e-9)
    for direction, (wa, wb) in (("s2t", (ws, wt)), ("t2s", (wt, ws))):
        dist, rel = _hand_grad_match(wa, wb)
        assert r.gradient_matching[direction].distance == pytest.approx(dist, rel=1e-8, abs=1e-9)
        assert r.gradient_matching[direction].relative == pytest.approx(rel, rel=1e-8, abs=1e-9)


def test_n_less_than_d_level1_by_hand(eigen_path):
    """n = 3 inputs, d = 5 outputs: the eigenvector of J^T J below the top, alpha1 against numpy's SVD."""
    ws, wt = _randn(5, 3, seed=40).numpy(), _randn(5, 3, seed=41).numpy()
    r = exact_transferability(_linear(ws), _linear(wt), _randn(4, 3, seed=42), level=1)
    for res, (wa, wb) in ((r.s2t, (ws, wt)), (r.t2s, (wt, ws))):
        _, v_a = _np_top_right(wa, 1)
        s_b, _ = _np_top_right(wb)
        np.testing.assert_allclose(res.alpha1_samples, np.linalg.norm(wb @ v_a) / s_b, rtol=1e-10)


@pytest.mark.parametrize("level", [0, 2])
# J J^T of both (d <= n: one joint Gram matrix per sample) / J^T J of both (n < d) / one of each
@pytest.mark.parametrize("n_in,n_out,n_out_t", [(40, 34, 34), (34, 40, 40), (40, 34, 50)])
def test_lapack_and_batched_eigen_paths_agree(monkeypatch, n_in, n_out, n_out_t, level):
    import transferlens.exact as exact_module

    s = build_model("mlp", (n_in,), n_out, hidden=(20,), seed=3).double()
    t = build_model("mlp", (n_in,), n_out_t, hidden=(20,), seed=4).double()
    x = _randn(11, n_in, seed=6)
    assert min(n_in, n_out, n_out_t) >= exact_module.LAPACK_FROM
    lapack = exact_transferability(s, t, x, level=level)
    sig_l, v_l = singular_directions(s, x, 3)
    monkeypatch.setattr(exact_module, "LAPACK_FROM", 10**9)
    batched = exact_transferability(s, t, x, level=level)
    sig_b, v_b = singular_directions(s, x, 3)
    _assert_metrics_close(lapack.metrics(), batched.metrics(), rtol=1e-10, atol=1e-12)
    for d in ("s2t", "t2s"):
        np.testing.assert_allclose(getattr(lapack, d).alpha1_samples, getattr(batched, d).alpha1_samples, rtol=1e-10)
    np.testing.assert_allclose(sig_l.numpy(), sig_b.numpy(), rtol=1e-10)
    np.testing.assert_allclose((v_l * v_b).sum(2).abs().numpy(), 1.0, atol=1e-9)  # same vectors up to sign


def test_failed_lapack_eigensolver_falls_back_to_numpy(monkeypatch):
    import scipy.linalg.lapack as lapack

    s = build_model("mlp", (36,), 40, hidden=(20,), seed=1).double()
    t = build_model("mlp", (36,), 40, hidden=(20,), seed=2).double()
    x = _randn(7, 36, seed=5)
    ref = exact_transferability(s, t, x, level=1)
    real, calls = lapack.dsyevr, []

    def fail_some(a, **kw):  # every third call reports failure after scribbling over its input
        calls.append(1)
        if len(calls) % 3 == 0:
            a[:] = np.nan
            return np.zeros(2), np.zeros((len(a), 2)), 0, np.zeros(4, dtype=np.int32), 1
        return real(a, **kw)

    monkeypatch.setattr(lapack, "dsyevr", fail_some)
    r = exact_transferability(s, t, x, level=1)
    assert len(calls) == 2 * len(x)
    _assert_metrics_close(r.metrics(), ref.metrics(), rtol=1e-10, atol=1e-12)
    for d in ("s2t", "t2s"):
        np.testing.assert_allclose(getattr(r, d).alpha1_samples, getattr(ref, d).alpha1_samples, rtol=1e-10)


@pytest.mark.parametrize("level", [0, 1])
@pytest.mark.parametrize("n_out", [3, 8])
def test_failed_factorisation_falls_back_to_the_full_eigendecomposition(monkeypatch, n_out, level):
    s = build_model("mlp", (6,), n_out, hidden=(8,), seed=1).double()
    t = build_model("mlp", (6,), n_out, hidden=(8,), seed=2).double()
    x = _randn(9, 6, seed=5)
    ref = exact_transferability(s, t, x, level=level)
    chol, ldl = torch.linalg.cholesky_ex, torch.linalg.ldl_factor_ex

    def fail_some(out):  # report samples 0, 3, 6 as failed, with garbage factors
        *factors, info = out
        info = info.clone()
        info[::3] = 1
        factors[0] = factors[0].clone()
        factors[0][::3] = float("nan")
        return (*factors, info)

    monkeypatch.setattr(torch.linalg, "cholesky_ex", lambda a, **kw: fail_some(chol(a, **kw)))
    monkeypatch.setattr(torch.linalg, "ldl_factor_ex", lambda a, **kw: fail_some(ldl(a, **kw)))
    r = exact_transferability(s, t, x, level=level)
    _assert_metrics_close(r.metrics(), ref.metrics(), rtol=1e-10, atol=1e-12)
    for d in ("s2t", "t2s"):
        np.testing.assert_allclose(getattr(r, d).alpha1_samples, getattr(ref, d).alpha1_samples, rtol=1e-10)


def test_linear_models_with_fewer_inputs_than_outputs_gradient_matching_by_hand():
    """n = 3 inputs, d = 5 and 6 outputs: the moments are chunk-wide products there, checked by hand. W_S has
    rank 2, so W_T is not a linear map of it (s2t > 0) while W_S is one of W_T (t2s = 0)."""
    ws = _randn(5, 2, seed=50).numpy() @ _randn(2, 3, seed=53).numpy()
    wt = _randn(6, 3, seed=51).numpy()
    for budget in (1, MEMORY_BUDGET):
        r = exact_transferability(_linear(ws), _linear(wt), _randn(7, 3, seed=52), memory_budget=budget)
        for direction, (wa, wb) in (("s2t", (ws, wt)), ("t2s", (wt, ws))):
            dist, rel = _hand_grad_match(wa, wb)
            got = r.gradient_matching[direction]
            assert got.distance == pytest.approx(dist, rel=1e-7, abs=1e-7)
            assert got.relative == pytest.approx(rel, rel=1e-7, abs=1e-7)
        assert r.gradient_matching["s2t"].relative > 0.1


def test_scaled_models_scale_the_distances_and_keep_the_alphas():
    """Outputs 1e20 or 1e139 times larger: alpha metrics unchanged, both distances times the factor (the function
    matching once lost the intercept beside outputs that large and moved by 1.2%)."""
    ws, wt = _randn(5, 8, seed=40).numpy(), _randn(5, 8, seed=41).numpy()
    x = _randn(20, 8, seed=42)
    ref = exact_transferability(_linear(ws), _linear(wt), x).metrics()
    for factor in (1e20, 1e139):
        big = exact_transferability(_linear(ws * factor), _linear(wt * factor), x).metrics()
        for key, value in ref.items():
            expected = value * factor if "match" in key else value
            assert big[key] == pytest.approx(expected, rel=1e-10), (factor, key)


def test_function_matching_ignores_a_large_common_offset():
    ws, wt = _randn(5, 8, seed=40).numpy(), _randn(5, 8, seed=41).numpy()
    x = _randn(20, 8, seed=42)
    ref = exact_transferability(_linear(ws), _linear(wt), x)
    shifted = exact_transferability(_linear(ws, np.full(5, 1e9)), _linear(wt, np.full(5, -3e8)), x)
    for direction in ("s2t", "t2s"):
        assert shifted.function_matching[direction].distance == pytest.approx(ref.function_matching[direction].distance, rel=1e-6)


@pytest.mark.parametrize("method", ["jacobian", "krylov"])
def test_jacobians_whose_products_overflow_are_refused_with_the_remedy(method):
    ws, wt = _randn(5, 8, seed=40).numpy(), _randn(5, 8, seed=41).numpy()
    with pytest.raises(ValueError, match=r"Jacobian entries reach .*e\+150.*Divide the model's outputs by a constant"):
        exact_transferability(_linear(ws * 1e150), _linear(wt), _randn(4, 8), method=method)
    with pytest.raises(ValueError, match=r"target's Jacobian entries reach"):
        exact_transferability(_linear(ws), _linear(wt * 1e150), _randn(4, 8), method=method)


def test_jacobians_alone_are_returned_however_large():
    w = _randn(5, 8, seed=40).numpy() * 1e150
    j = jacobians(_linear(w), _randn(3, 8))
    np.testing.assert_allclose(j.numpy(), np.broadcast_to(w, (3, 5, 8)), rtol=1e-15)
    with pytest.raises(ValueError, match="Jacobian entries reach"):
        singular_directions(_linear(w), _randn(3, 8))


class _NegSqrt(nn.Module):
    """Finite outputs, NaN in the Jacobian at a zero input (-0.5 / sqrt(0) times the zero tangents of the other
    inputs)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return -torch.sqrt(x)


def test_non_finite_jacobians_behind_finite_outputs_are_refused():
    x = _randn(3, 5).abs() + 0.5
    x[1, 2] = 0.0
    for call in (lambda: jacobians(_NegSqrt(), x), lambda: exact_transferability(_NegSqrt(), _linear(W_T), x)):
        with pytest.raises(ValueError, match="NaN/Inf in its outputs or Jacobians"):
            call()


def _np_function_matching(fa: np.ndarray, fb: np.ndarray) -> float:
    """RMS residual of fb ~ A fa + b by numpy's least squares on the unscaled design (well-scaled inputs only)."""
    design = np.hstack([fa, np.ones((len(fa), 1))])
    coef, *_ = np.linalg.lstsq(design, fb, rcond=None)
    return math.sqrt(float(((fb - design @ coef) ** 2).sum(1).mean()))


def test_function_matching_drops_columns_constant_up_to_rounding_and_survives_huge_outputs():
    from transferlens.exact import _function_matching

    rng = np.random.default_rng(50)
    fa, fb = rng.standard_normal((8, 2)), rng.standard_normal((8, 3))
    ref = _np_function_matching(fa, fb)
    assert _function_matching(torch.from_numpy(fa), torch.from_numpy(fb), "s2t").distance == pytest.approx(ref, rel=1e-10)
    # six columns that differ from 1.0 by rounding only: constant, held by the intercept, not fitted noise
    noise = 1.0 + rng.integers(0, 2, size=(8, 6)) * np.finfo(np.float64).eps
    padded = torch.from_numpy(np.hstack([fa, noise]))
    assert _function_matching(padded, torch.from_numpy(fb), "s2t").distance == pytest.approx(ref, rel=1e-10)
    # outputs of size 1e160 (their squares overflow): the relative distance is the unscaled one
    big = _function_matching(torch.from_numpy(fa * 1e160), torch.from_numpy(fb * 1e160), "s2t")
    assert big.relative == pytest.approx(_function_matching(torch.from_numpy(fa), torch.from_numpy(fb), "s2t").relative, rel=1e-10)
    exact_fit = _function_matching(torch.from_numpy(fa * 1e160), torch.from_numpy(fa @ rng.standard_normal((2, 3)) * 1e160 + 1e150), "s2t")
    assert exact_fit.relative < 1e-12


def test_finite_outputs_whose_sum_overflows_are_not_taken_for_overflow():
    w = np.full((4, 1), 5e307)  # each output 5e307 on x = 1, their sum above float64's range
    j = jacobians(_linear(w), torch.ones(2, 1, dtype=F64))
    np.testing.assert_array_equal(j.numpy(), np.broadcast_to(w, (2, 4, 1)))


@pytest.mark.parametrize("n", [50, 2000])
@pytest.mark.parametrize("offset", [1e12, 1e14])
def test_function_matching_keeps_a_small_variation_on_a_large_offset(n, offset):
    """A column offset + z (z small integers: offset + z is exact in float64) fits as z alone does: the
    intercept takes the offset, and no rounding of the offset may leak into the variation or drop the column.
    The fit is nearly exact (residual 1e-3), so the distance shows any error in the variation."""
    from transferlens.exact import _function_matching

    rng = np.random.default_rng(51)
    z = rng.integers(-50, 50, size=n).astype(np.float64)
    other = rng.standard_normal(n)
    fb = np.stack([z + 1e-3 * rng.standard_normal(n), other], axis=1)
    plain = _function_matching(torch.from_numpy(np.stack([z, other], 1)), torch.from_numpy(fb), "s2t")
    shifted = _function_matching(torch.from_numpy(np.stack([offset + z, other], 1)), torch.from_numpy(fb), "s2t")
    assert shifted.distance == pytest.approx(plain.distance, rel=1e-12)
    assert plain.distance == pytest.approx(_np_function_matching(np.stack([z, other], 1), fb), rel=1e-12)
