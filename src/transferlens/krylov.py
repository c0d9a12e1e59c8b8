"""Matrix-free top singular pairs of per-sample Jacobians: block Krylov (block Lanczos with full
reorthogonalisation) over Jacobian-vector and vector-Jacobian products.

For a model ``f: R^n -> R^d`` and a chunk of samples, the right-singular vectors of each ``J_i`` are the
eigenvectors of ``A_i = J_i^T J_i``, which is only ever applied to blocks of vectors: ``J V`` by forward mode
(``torch.func.jvp``), ``J^T U`` by reverse mode (``torch.func.vjp``), ``vmap``-ed over the samples and the
block. The subspace ``span{V_0, A V_0, A^2 V_0, ...}`` grows one block per step; Rayleigh-Ritz on it gives the
Ritz pairs, and a pair is accepted when its residual ``||A w - theta w|| <= tol * theta_max``. Per step this
costs ``2 * block`` passes through the model, against ``min(n, d)`` passes for the full Jacobian plus a
``min(n, d)``-sized eigenproblem, and it holds ``O(steps * block * (n + d))`` numbers per sample instead of
``d * n``. Samples that have not converged after ``max_steps`` are reported, and the caller computes them
exactly.

The Ritz vector of a pair whose eigenvalue is close to the next one is ill-determined (as any eigenvector
then is): its error is bounded by the residual divided by the gap, so ``tol`` is a relative residual, not a
promise about every digit of the vector.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

_F64 = torch.float64
Operator = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class KrylovPairs:
    """One chunk's result. ``sigma_max`` (B,), the unit right-singular vector at the wanted level (B, n) (zero
    below the numerical-rank cut-off), ``image`` = ``J v`` (B, d), ``converged`` (B,) bool, and how many steps
    (blocks) were built."""

    sigma_max: torch.Tensor
    vector: torch.Tensor
    image: torch.Tensor
    converged: torch.Tensor
    steps: int


def sample_operators(model: torch.nn.Module, x: torch.Tensor, output: str, dtype: torch.dtype, device: torch.device) -> tuple[Operator, Operator, Callable[[], torch.Tensor]]:
    """``(jv, jtv, outputs)`` for the samples ``x`` (B, ...): ``jv(V)`` maps (B, n, p) to each sample's
    ``J_i V_i`` (B, d, p), ``jtv(U)`` maps (B, d, p) to ``J_i^T U_i`` (B, n, p), ``outputs()`` gives (B, d);
    all float64 on the CPU, computed in the model's dtype on its device. Every sample goes through the model
    alone (as in :func:`transferlens.exact.jacobians`), so no layer can mix samples."""
    from torch.func import jvp, vjp, vmap

    from .attacks import model_output

    shape = x.shape[1:]
    n = int(np.prod(shape))
    xin = x.detach().to(device, dtype).reshape(-1, n)

    def f(xi: torch.Tensor) -> torch.Tensor:
        return model_output(model, xi.reshape(1, *shape).clone(), output)[0]

    def jv(v: torch.Tensor) -> torch.Tensor:
        tangents = v.to(device, dtype).transpose(1, 2)  # (B, p, n)
        out = vmap(lambda xi, ts: vmap(lambda t: jvp(f, (xi,), (t,))[1])(ts))(xin, tangents)
        return out.transpose(1, 2).detach().to("cpu", _F64)

    def jtv(u: torch.Tensor) -> torch.Tensor:
        cotangents = u.to(device, dtype).transpose(1, 2)  # (B, p, d)

        def one(xi: torch.Tensor, cs: torch.Tensor) -> torch.Tensor:
            _, pullback = vjp(f, xi)
            return vmap(lambda c: pullback(c)[0])(cs)

        out = vmap(one)(xin, cotangents)
        return out.transpose(1, 2).detach().to("cpu", _F64)

    def outputs() -> torch.Tensor:
        return vmap(f)(xin).detach().to("cpu", _F64)

    return jv, jtv, outputs


def _orthonormal(v: torch.Tensor, basis: torch.Tensor) -> torch.Tensor:
    """The rows of ``v`` (B, p, n) made orthogonal to the rows of ``basis`` (B, s, n) (twice: "twice is
    enough"), then orthonormalised. A row left with less than ``1e-10`` of its norm (it lay in the subspace
    already: the Krylov space has stopped growing there) becomes zero: normalised, its rounding noise would
    be a vector no longer orthogonal to the basis."""
    before = v.norm(dim=2)  # (B, p)
    if basis.shape[1]:
        for _ in range(2):
            v = v - (v @ basis.transpose(1, 2)) @ basis
    q, r = torch.linalg.qr(v.transpose(1, 2))
    keep = r.diagonal(dim1=1, dim2=2).abs() > 1e-10 * before
    return (q * keep.unsqueeze(1)).transpose(1, 2)


def top_pairs(
    jv: Operator, jtv: Operator, b: int, n: int, d: int, *, level: int = 0, block: int | None = None,
    max_steps: int = 20, tol: float = 1e-10, seed: int = 0,
) -> KrylovPairs:
    """Block Krylov on ``A = J^T J`` for a chunk of ``b`` samples (see the module docstring). ``block``
    defaults to ``max(4, level + 2)``; at most ``max_steps`` blocks are built, and never more vectors than
    ``min(n, d)`` (the whole space, where Rayleigh-Ritz is exact)."""
    block = max(4, level + 2) if block is None else block
    width = min(n, min(n, d) + block, block * max_steps)  # V_0, then the range of A: min(n, d) more
    gen = torch.Generator().manual_seed(seed)  # the same start for every run
    # the subspace's vectors as rows (contiguous slices for every product below)
    basis = torch.zeros(b, width, n, dtype=_F64)  # K^T: orthonormal rows
    images = torch.zeros(b, width, d, dtype=_F64)  # (J K)^T
    applied = torch.zeros(b, width, n, dtype=_F64)  # (A K)^T = (J^T J K)^T
    gram = torch.zeros(b, width, width, dtype=_F64)  # (J K)^T (J K) = K^T A K
    wanted = [0, level] if level else [0]
    v = torch.randn(b, block, n, generator=gen, dtype=_F64)
    s, steps = 0, 0
    while True:
        cols = min(block, width - s)
        q = _orthonormal(v[:, :cols], basis[:, :s])  # (B, cols, n)
        u = jv(q.transpose(1, 2)).transpose(1, 2)  # (B, cols, d)
        a = jtv(u.transpose(1, 2)).transpose(1, 2)  # (B, cols, n)
        new = slice(s, s + cols)
        basis[:, new], images[:, new], applied[:, new] = q, u, a
        cross = images[:, : s + cols] @ u.transpose(1, 2)  # (B, s + cols, cols)
        gram[:, : s + cols, new] = cross
        gram[:, new, : s + cols] = cross.transpose(1, 2)
        s, steps = s + cols, steps + 1
        theta, w = torch.linalg.eigh(gram[:, :s, :s])  # Rayleigh-Ritz, ascending
        theta, w = theta.flip(1).clamp_min(0), w.flip(2)
        ww = w[:, :, wanted].transpose(1, 2)  # (B, wanted, s)
        resid = (ww @ applied[:, :s] - (ww @ basis[:, :s]) * theta[:, wanted].unsqueeze(2)).norm(dim=2)
        lam_max = theta[:, 0]
        converged = (resid <= tol * lam_max.unsqueeze(1)).all(dim=1) & torch.isfinite(resid).all(dim=1)
        if bool(converged.all()) or s >= width or not bool(q.any()):  # converged, or nothing left to add
            break
        v = a
    wl = w[:, :, level].unsqueeze(1)  # (B, 1, s)
    vec = (wl @ basis[:, :s]).squeeze(1)
    image = (wl @ images[:, :s]).squeeze(1)
    sigma = image.norm(dim=1)
    rank_ok = sigma > max(d, n) * torch.finfo(_F64).eps * lam_max.sqrt()
    vec = torch.where(rank_ok.unsqueeze(1), vec / vec.norm(dim=1, keepdim=True).clamp_min(1e-300), torch.zeros_like(vec))
    image = torch.where(rank_ok.unsqueeze(1), image, torch.zeros_like(image))
    # a model with a zero Jacobian converges at once (every residual is 0), with sigma 0 and no direction
    return KrylovPairs(lam_max.sqrt(), vec, image, converged, steps)
