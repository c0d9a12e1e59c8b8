"""Selected eigenpairs of batches of small symmetric PSD matrices (transferlens._eigen)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from transferlens._eigen import eigenpairs


def _psd(b: int, m: int, rank: int, seed: int) -> torch.Tensor:
    a = torch.randn(b, m, rank, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return a @ a.transpose(1, 2)


@pytest.mark.parametrize("m,rank", [(6, 6), (12, 5), (40, 40)])
@pytest.mark.parametrize("levels", [(0,), (0, 2), (3, 0)])
def test_eigenpairs_match_numpy(m, rank, levels):
    g = _psd(7, m, rank, seed=m + rank)
    lam, vecs = eigenpairs(g, levels)
    ref_w, ref_v = np.linalg.eigh(g.numpy())  # ascending
    np.testing.assert_allclose(lam.numpy(), ref_w[:, ::-1], rtol=1e-12, atol=1e-12 * ref_w.max())
    assert vecs.shape == (7, m, len(levels))
    for k, level in enumerate(levels):
        want = ref_v[:, :, m - 1 - level]
        cos = np.abs((vecs[:, :, k].numpy() * want).sum(1))
        np.testing.assert_allclose(cos, 1.0, atol=1e-9)
    assert g.equal(_psd(7, m, rank, seed=m + rank))  # the input is left as it was


def test_eigenpairs_fall_back_per_level_where_the_factorisation_fails(monkeypatch):
    g = _psd(6, 8, 8, seed=3)
    ref_lam, ref_vecs = eigenpairs(g, (0, 1))
    chol, ldl = torch.linalg.cholesky_ex, torch.linalg.ldl_factor_ex

    def fail(out, rows):
        *factors, info = out
        info, first = info.clone(), factors[0].clone()
        info[rows], first[rows] = 1, float("nan")
        return (first, *factors[1:], info)

    monkeypatch.setattr(torch.linalg, "cholesky_ex", lambda a, **kw: fail(chol(a, **kw), [0, 3]))
    monkeypatch.setattr(torch.linalg, "ldl_factor_ex", lambda a, **kw: fail(ldl(a, **kw), [1]))
    lam, vecs = eigenpairs(g, (0, 1))
    np.testing.assert_array_equal(lam.numpy(), ref_lam.numpy())
    np.testing.assert_allclose((vecs * ref_vecs).sum(1).abs().numpy(), 1.0, atol=1e-9)
    assert bool(torch.isfinite(vecs).all())


@pytest.mark.parametrize("rel_gap", [1e-8, 1e-9])
@pytest.mark.parametrize("level", [0, 1])
def test_nearly_repeated_eigenvalues_get_the_full_decompositions_vectors(rel_gap, level):
    """Three steps of inverse iteration shrink the error by ``1e-10 * lambda_max / gap`` each: useless when the
    wanted eigenvalue is within about 1e-7 of a neighbour (the vector came back 0.014 rad off at a gap of 1e-9).
    Such samples take the full decomposition's vectors, off by about ``eps / gap`` (checked against the exact
    eigenvectors the matrices were built from, with a margin of 100)."""
    rng = np.random.default_rng(5)
    q, _ = np.linalg.qr(rng.standard_normal((9, 9)))
    w = np.array([3.0, 2.5, 2.0, 1.5, 1.0, 0.5, 0.2, 0.1, 0.0])
    w[level + 1] = w[level] * (1 - rel_gap)  # the wanted eigenvalue and the next one nearly coincide
    g = torch.from_numpy(np.stack([(q * w) @ q.T, (q[:, ::-1] * w[::-1]) @ q[:, ::-1].T]))
    _, vecs = eigenpairs(g, (level,))
    exact = np.stack([q[:, level], q[:, level]])  # the same spectrum, the same eigenvectors, other order
    angle = np.arccos(np.clip(np.abs((vecs[:, :, 0].numpy() * exact).sum(1)), 0, 1))
    assert angle.max() <= 100 * np.finfo(np.float64).eps / rel_gap


def test_a_vector_that_is_no_eigenvector_is_caught_by_its_residual(monkeypatch):
    """Finite factors that do not give the eigenvector (here the triangular solves are knocked off course on
    every other sample, as a start orthogonal to the wanted vector would leave it) must not pass: the residual
    ``||G u - lambda u||`` sends those samples to the full decomposition."""
    g = _psd(6, 9, 9, seed=8)
    ref_lam, ref_vecs = eigenpairs(g, (0,))
    solve = torch.linalg.solve_triangular

    def off_course(a, b, **kw):
        x = solve(a, b, **kw).clone()
        x[::2, 0] += 1e-3 * x[::2].norm(dim=1)
        return x

    monkeypatch.setattr(torch.linalg, "solve_triangular", off_course)
    lam, vecs = eigenpairs(g, (0,))
    np.testing.assert_allclose((vecs * ref_vecs).sum(1).abs().numpy(), 1.0, atol=1e-12)


def test_levels_outside_the_matrix_are_refused():
    with pytest.raises(ValueError, match="levels must lie in 0..3"):
        eigenpairs(_psd(2, 4, 4, seed=9), (0, 4))
