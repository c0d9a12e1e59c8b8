"""Matrix-free exact metrics (``method="krylov"``) and the block Krylov solver behind them."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from transferlens import exact_transferability
from transferlens.krylov import _compact, sample_operators, top_pairs
from transferlens.models import build_model

F64 = torch.float64
ALPHAS = [f"{m}_{d}" for d in ("s2t", "t2s") for m in ("alpha1", "alpha2", "combined")]


def _randn(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=F64)


def _mlp(n_in: int, n_out: int, seed: int, hidden: int = 24) -> nn.Module:
    return build_model("mlp", (n_in,), n_out, hidden=(hidden,), seed=seed).double()


def _linear(w: np.ndarray) -> nn.Linear:
    layer = nn.Linear(w.shape[1], w.shape[0]).double()
    with torch.no_grad():
        layer.weight.copy_(torch.as_tensor(w))
        layer.bias.zero_()
    return layer


def _matrix_operators(j: torch.Tensor):
    """``J V`` and ``J^T U`` for explicit per-sample matrices ``j`` (B, d, n): an operator independent of
    any model or autograd."""
    def pick(rows):
        return j if rows is None else j[rows]

    return (lambda v, rows=None: pick(rows) @ v), (lambda u, rows=None: pick(rows).transpose(1, 2) @ u)


@pytest.mark.parametrize("d,n", [(30, 50), (50, 30)])
@pytest.mark.parametrize("level", [0, 2])
def test_top_pairs_match_numpy_svd_of_explicit_matrices(d, n, level):
    # singular values 1, 0.9, 0.81, ...: a gap everywhere, as the vectors need
    b = 5
    j = torch.empty(b, d, n, dtype=F64)
    rng = np.random.default_rng(1)
    for i in range(b):
        u, _ = np.linalg.qr(rng.standard_normal((d, d)))
        v, _ = np.linalg.qr(rng.standard_normal((n, n)))
        s = 0.9 ** np.arange(min(d, n))
        j[i] = torch.as_tensor((u[:, : len(s)] * s) @ v[:, : len(s)].T * (i + 1))
    jv, jtv = _matrix_operators(j)
    pairs = top_pairs(jv, jtv, b, n, d, level=level, max_steps=40)
    assert pairs.converged.all()
    for i in range(b):
        _, s_np, vt = np.linalg.svd(j[i].numpy())
        assert pairs.sigma_max[i].item() == pytest.approx(s_np[0], rel=1e-12)
        assert abs(float(pairs.vector[i] @ torch.as_tensor(vt[level]))) == pytest.approx(1.0, abs=1e-9)
        np.testing.assert_allclose(pairs.image[i].numpy(), j[i].numpy() @ pairs.vector[i].numpy(), atol=1e-12)


def test_top_pairs_of_a_zero_operator_give_zero_without_nan():
    j = torch.zeros(3, 8, 6, dtype=F64)
    pairs = top_pairs(*_matrix_operators(j), 3, 6, 8)
    assert pairs.converged.all() and (pairs.sigma_max == 0).all()
    assert (pairs.vector == 0).all() and (pairs.image == 0).all()


def test_operators_are_the_jacobian_products():
    model, x = _mlp(7, 5, seed=2), _randn(4, 7, seed=3)
    jv, jtv, outputs = sample_operators(model, x, "logits", F64, torch.device("cpu"))
    j = torch.stack([torch.autograd.functional.jacobian(lambda xi: model(xi[None])[0], xi) for xi in x])
    v, u = _randn(4, 7, 3, seed=4), _randn(4, 5, 2, seed=5)
    np.testing.assert_allclose(jv(v).numpy(), (j @ v).numpy(), atol=1e-13)
    np.testing.assert_allclose(jtv(u).numpy(), (j.transpose(1, 2) @ u).numpy(), atol=1e-13)
    np.testing.assert_allclose(outputs().numpy(), model(x).detach().numpy(), atol=1e-14)


@pytest.mark.parametrize("n_in,n_out", [(60, 40), (40, 60)])
@pytest.mark.parametrize("level", [0, 1])
def test_krylov_gives_the_jacobian_methods_alphas(n_in, n_out, level):
    s, t, x = _mlp(n_in, n_out, seed=1), _mlp(n_in, n_out, seed=2), _randn(9, n_in, seed=3)
    ref = exact_transferability(s, t, x, level=level)
    r = exact_transferability(s, t, x, level=level, method="krylov")
    assert r.diagnostics["samples_from_jacobians"] == 0
    for key in ALPHAS:
        assert r[key] == pytest.approx(ref[key], rel=1e-9, abs=1e-12)
    for d in ("s2t", "t2s"):
        np.testing.assert_allclose(getattr(r, d).alpha1_samples, getattr(ref, d).alpha1_samples, rtol=1e-9)
        assert r[f"func_match_{d}"] == pytest.approx(ref[f"func_match_{d}"], rel=1e-9, abs=1e-12)
    assert r.options["method"] == "krylov" and ref.options["method"] == "jacobian"


def test_krylov_leaves_gradient_matching_out_and_says_why():
    s, t, x = _mlp(8, 5, seed=1), _mlp(8, 5, seed=2), _randn(4, 8)
    r = exact_transferability(s, t, x, method="krylov")
    assert r.gradient_matching == {} and not any(k.startswith("grad_match") for k in r.metrics())
    assert len(r.metrics()) == 8 and "diagnostics" in r.to_dict()
    with pytest.raises(KeyError, match="method='jacobian'"):
        r["grad_match_s2t"]


@pytest.mark.parametrize("level", [0, 3])
def test_krylov_on_linear_models_by_hand(level):
    ws = _randn(45, 50, seed=30).numpy()
    wt = ws + 0.5 * _randn(45, 50, seed=31).numpy()
    r = exact_transferability(_linear(ws), _linear(wt), _randn(3, 50, seed=32), level=level, method="krylov")
    for res, (wa, wb) in ((r.s2t, (ws, wt)), (r.t2s, (wt, ws))):
        v_a = np.linalg.svd(wa)[2][level]
        s_b = np.linalg.svd(wb, compute_uv=False)[0]
        np.testing.assert_allclose(res.alpha1_samples, np.linalg.norm(wb @ v_a) / s_b, rtol=1e-8)


@pytest.mark.parametrize("method", ["krylov", "jacobian"])
@pytest.mark.parametrize("level", [0, 1])
def test_nearly_repeated_singular_values_keep_the_direction_accurate(method, level):
    """The source's singular value at ``level`` and its neighbour differ by 1e-9 (relative): the direction is
    then only determined to about ``eps / gap`` (1e-7), and alpha1 must be that close to the SVD of the weight.
    Inverse iteration on the Ritz (or Gram) matrix alone missed it by 1e-3 here."""
    rng = np.random.default_rng(4)
    u, _ = np.linalg.qr(rng.standard_normal((12, 12)))
    v, _ = np.linalg.qr(rng.standard_normal((30, 30)))
    sv = np.array([3.0, 2.5, 2, 1.5, 1, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3])
    sv[level + 1] = sv[level] * (1 - 1e-9)
    w = (u * sv) @ v[:, :12].T
    target = _mlp(30, 10, seed=21, hidden=9)
    x = _randn(15, 30, seed=22)
    r = exact_transferability(_linear(w), target, x, level=level, method=method)
    jt = np.stack([torch.autograd.functional.jacobian(lambda z: target(z[None])[0], xi).numpy() for xi in x])
    want = np.linalg.norm(jt @ np.linalg.svd(w)[2][level], axis=1) / np.linalg.svd(jt, compute_uv=False)[:, 0]
    np.testing.assert_allclose(r.s2t.alpha1_samples, want, rtol=1e-5)


def test_unconverged_samples_are_computed_from_their_jacobians():
    s, t, x = _mlp(50, 40, seed=1), _mlp(50, 40, seed=2), _randn(6, 50, seed=3)
    ref = exact_transferability(s, t, x)
    r = exact_transferability(s, t, x, method="krylov", krylov_steps=2)
    assert r.diagnostics["samples_from_jacobians"] == 12 and r.diagnostics["krylov_blocks_max"] == 2
    for key in ALPHAS:
        assert r[key] == pytest.approx(ref[key], rel=1e-10)


def test_krylov_chunks_and_repeats_give_the_same_numbers():
    s, t, x = _mlp(30, 35, seed=4), _mlp(30, 35, seed=5), _randn(7, 30, seed=6)
    x0 = x.clone()
    # a loose tolerance: the Ritz vectors then still carry their start blocks' traces, which must not depend
    # on how the samples were chunked
    whole = exact_transferability(s, t, x, method="krylov", krylov_tol=1e-4)
    chunked = exact_transferability(s, t, x, method="krylov", krylov_tol=1e-4, memory_budget=1)
    again = exact_transferability(s, t, x, method="krylov", krylov_tol=1e-4)
    assert torch.equal(x, x0)
    assert whole.metrics() == again.metrics()
    for key in ALPHAS:  # every sample starts from its own block and stops on its own: only rounding differs
        assert chunked[key] == pytest.approx(whole[key], rel=1e-14)
    for d in ("s2t", "t2s"):
        np.testing.assert_allclose(getattr(chunked, d).alpha1_samples, getattr(whole, d).alpha1_samples, rtol=1e-13)


def test_krylov_on_float32_models_converges_at_their_precision():
    s32, t32, x = _mlp(40, 30, seed=1).float(), _mlp(40, 30, seed=2).float(), _randn(5, 40, seed=3)
    r = exact_transferability(s32, t32, x.float(), method="krylov")
    ref = exact_transferability(s32, t32, x.float())
    assert r.diagnostics["samples_from_jacobians"] == 0
    for key in ALPHAS:
        assert r[key] == pytest.approx(ref[key], rel=1e-4)


@pytest.mark.parametrize("method", ["jacobian", "krylov"])
def test_a_constant_source_is_refused_with_the_same_advice(method):
    const = _linear(np.zeros((6, 5)))
    with pytest.raises(ValueError, match="no sample left to measure the s2t direction: 4 of 4"):
        exact_transferability(const, _mlp(5, 6, seed=1), _randn(4, 5), method=method)


def test_bad_method_is_refused():
    s, x = _mlp(4, 3, seed=1), _randn(2, 4)
    with pytest.raises(ValueError, match="method"):
        exact_transferability(s, s, x, method="lanczos")


def test_a_pair_below_the_top_is_judged_against_its_own_size():
    """sigma = 300, 1, 0.9, 0.81, ...: a residual small against sigma_max^2 says nothing about the pair at
    level 1; it must be small against its own eigenvalue before the direction is accepted."""
    b, d, n = 3, 20, 30
    rng = np.random.default_rng(2)
    j = torch.empty(b, d, n, dtype=F64)
    for i in range(b):
        u, _ = np.linalg.qr(rng.standard_normal((d, d)))
        v, _ = np.linalg.qr(rng.standard_normal((n, n)))
        s = np.concatenate([[300.0], 0.9 ** np.arange(d - 1)])
        j[i] = torch.as_tensor((u * s) @ v[:, :d].T)
    pairs = top_pairs(*_matrix_operators(j), b, n, d, level=1, tol=1.2e-5, max_steps=30)
    for i in range(b):
        vt = np.linalg.svd(j[i].numpy())[2]
        cos = abs(float(pairs.vector[i] @ torch.as_tensor(vt[1])))
        assert not bool(pairs.converged[i]) or cos > 1 - 1e-6


def test_orthonormal_keeps_the_rows_after_one_that_lay_in_the_subspace():
    from transferlens.krylov import _orthonormal

    basis = torch.eye(6, dtype=F64)[None, :2]  # e0, e1
    v = torch.tensor([[[0, 0, 1, 0, 0, 0], [1, 1, 0, 0, 0, 0], [0, 0, 1, 1, 0, 0]]], dtype=F64)  # row 1 in span
    q = _orthonormal(v, basis, 1e-10)[0]
    assert torch.allclose(q[1], torch.zeros(6, dtype=F64))
    np.testing.assert_allclose(q[[0, 2]].numpy(), torch.eye(6, dtype=F64)[[2, 3]].numpy(), atol=1e-15)


def test_half_precision_models_are_sent_to_the_jacobian_method():
    s, x = _mlp(6, 4, seed=1).to(torch.bfloat16), _randn(3, 6).to(torch.bfloat16)
    with pytest.raises(ValueError, match="method='krylov' needs float32 or float64 models.*method='jacobian'"):
        exact_transferability(s, s, x, method="krylov")


class _Overflow(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.exp(1e4 * x[:, :3])


@pytest.mark.parametrize("method", ["jacobian", "krylov"])
def test_overflowing_models_get_the_same_advice(method):
    with pytest.raises(ValueError, match="NaN/Inf in its outputs or Jacobian"):
        exact_transferability(_Overflow(), _mlp(5, 3, seed=1), _randn(4, 5), method=method)


def test_unconverged_samples_keep_to_the_memory_budget_and_the_numbers():
    s, t, x = _mlp(50, 40, seed=1), _mlp(50, 40, seed=2), _randn(6, 50, seed=3)
    ref = exact_transferability(s, t, x)
    r = exact_transferability(s, t, x, method="krylov", krylov_steps=1, memory_budget=1)
    assert r.diagnostics["samples_from_jacobians"] == 12
    for key in ALPHAS:
        assert r[key] == pytest.approx(ref[key], rel=1e-10)


@pytest.mark.parametrize("mask", [[1, 0, 1, 1, 0], [0, 0, 0, 0, 1], [1, 1, 1, 1, 1], [0, 0, 0, 0, 0]])
def test_compacting_the_finished_samples_away_keeps_the_rest_in_the_same_storage(mask):
    """Dropping the samples that have finished must not hold a second copy of the subspaces (at n=d=1000,
    N=160 that was 100 MiB on top of a 256 MiB budget): the kept rows move forward in place."""
    t = _randn(5, 3, 4, seed=40)
    keep = torch.tensor(mask, dtype=torch.bool)
    want = t[keep].clone()
    got = _compact(t, keep)
    assert got.equal(want) and (len(want) == 0 or got.data_ptr() == t.data_ptr())
