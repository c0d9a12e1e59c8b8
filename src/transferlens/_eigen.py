"""Selected eigenpairs of a batch of small symmetric positive semi-definite matrices, without the full
eigendecomposition: the eigenvalues alone, then inverse iteration for the wanted eigenvectors."""

from __future__ import annotations

from collections.abc import Sequence

import torch


CLOSE = 1e-6
"""Relative gap (to the largest eigenvalue) below which a wanted eigenvector comes from the full
eigendecomposition rather than inverse iteration."""


def rank_cutoff(d: int, n: int, top):
    """The numerical-rank cut-off of a ``d x n`` float64 matrix whose largest singular value is ``top`` (a number
    or a tensor): singular values at or below ``max(d, n) * eps * top`` are rounding noise, as in ``pinv``."""
    return max(d, n) * torch.finfo(torch.float64).eps * top


RESIDUAL = 100.0
"""A vector from inverse iteration is kept when ``||G u - lambda u|| <= RESIDUAL * m * eps * lambda_max``."""


def eigenpairs(gram: torch.Tensor, levels: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """All eigenvalues ``(B, m)``, descending, and unit eigenvectors ``(B, m, len(levels))`` of the eigenvalues
    ``levels`` places below the top, for a batch of symmetric positive semi-definite ``gram`` (B, m, m).

    The eigenvalues alone (no eigenvectors: several times cheaper), then for each level three steps of inverse
    iteration shifted just past the wanted eigenvalue (each step shrinks the error by
    ``1e-10 * lambda_max / gap``). At level 0 the shift lies above every eigenvalue, so ``shift I - G`` is
    positive definite and a Cholesky factorisation serves; below the top the shifted matrix is indefinite and a
    symmetric (Bunch-Kaufman) factorisation is used. Either is factorised once for the three steps (no batched
    LU: torch's batched LU solve on the CPU returns garbage or hangs from about 150 x 150 up with several
    threads, pytorch/pytorch#142815). Every vector is checked: its residual ``||G u - lambda u||`` must be
    within :data:`RESIDUAL` ``* m * eps * lambda_max`` (measured: below 2, on Gram matrices of MLP Jacobians,
    Krylov's Ritz matrices and random spectra). Samples whose wanted eigenvalue lies within :data:`CLOSE`
    ``* lambda_max`` of a neighbour (there three steps would leave the vector less accurate than the full
    decomposition, whose error is about ``eps * lambda_max / gap``), and samples whose factorisation, iteration
    or residual check fails (a start nearly orthogonal to the wanted vector, say), get their vectors from the
    full eigendecomposition. ``levels`` must lie in ``0 .. m - 1``.
    """
    b, m = gram.shape[0], gram.shape[1]
    if any(not 0 <= level < m for level in levels):
        raise ValueError(f"levels must lie in 0..{m - 1} for {m} x {m} matrices, got {list(levels)}")
    lam = torch.linalg.eigvalsh(gram)  # ascending
    lam_max = lam[:, -1].clamp_min(0)
    gen = torch.Generator().manual_seed(0)  # a fixed generic start, the same for every sample
    start = (torch.rand(m, 1, generator=gen, dtype=gram.dtype) + 0.5).to(gram.device).expand(b, m, 1)
    vectors = []
    inf = torch.full((b, 1), float("inf"), dtype=lam.dtype, device=lam.device)
    gaps = torch.cat([inf, lam.diff(dim=1), inf], 1)  # gaps[:, i] = lam[i] - lam[i - 1], ascending order
    for level in levels:
        i = m - 1 - level
        close = torch.minimum(gaps[:, i], gaps[:, i + 1]) <= CLOSE * lam_max
        shift = lam[:, i] + 1e-10 * lam_max + 1e-300
        system = gram.neg()  # shift I - G
        system.diagonal(dim1=1, dim2=2).add_(shift.unsqueeze(1))
        if level == 0:  # positive definite
            factor, info = torch.linalg.cholesky_ex(system)
            pivots = None
        else:  # indefinite
            factor, pivots, info = torch.linalg.ldl_factor_ex(system)
        del system
        ok = (info == 0) & ~close
        u = start
        for _ in range(3):
            if pivots is None:
                u = torch.linalg.solve_triangular(factor, u, upper=False)
                u = torch.linalg.solve_triangular(factor.transpose(1, 2), u, upper=True)
            else:
                u = torch.linalg.ldl_solve(factor, pivots, u)
            u = u / u.norm(dim=1, keepdim=True)
        del factor
        resid = (gram @ u - lam[:, i].view(b, 1, 1) * u).norm(dim=1).squeeze(1)
        ok &= torch.isfinite(u).all(dim=(1, 2)) & (resid <= RESIDUAL * m * torch.finfo(gram.dtype).eps * lam_max)
        if not bool(ok.all()):
            bad = ~ok
            u = u.clone()
            u[bad] = torch.linalg.eigh(gram[bad])[1][:, :, m - 1 - level : m - level]
        vectors.append(u)
    return lam.flip(1), torch.cat(vectors, 2)
