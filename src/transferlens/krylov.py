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

from ._eigen import eigenpairs, rank_cutoff

_F64 = torch.float64
Operator = Callable[..., torch.Tensor]  # (vectors, rows=None) -> products


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
    ``J_i V_i`` (B, d, p), ``jtv(U)`` maps (B, d, p) to ``J_i^T U_i`` (B, n, p) (both take ``rows=``, an
    index tensor, to work on those samples only), ``outputs()`` gives (B, d); all float64 on the CPU,
    computed in the model's dtype on its device. Every sample goes through the model
    alone (as in :func:`transferlens.exact.jacobians`), so no layer can mix samples."""
    from torch.func import jvp, vjp, vmap

    from .attacks import model_output

    shape = x.shape[1:]
    n = int(np.prod(shape))
    xin = x.detach().to(device, dtype).reshape(-1, n)

    def f(xi: torch.Tensor) -> torch.Tensor:
        return model_output(model, xi.reshape(1, *shape).clone(), output)[0]

    def pick(rows: torch.Tensor | None) -> torch.Tensor:
        return xin if rows is None else xin[rows.to(xin.device)]

    def jv(v: torch.Tensor, rows: torch.Tensor | None = None) -> torch.Tensor:
        tangents = v.to(device, dtype).transpose(1, 2)  # (B, p, n)
        out = vmap(lambda xi, ts: vmap(lambda t: jvp(f, (xi,), (t,))[1])(ts))(pick(rows), tangents)
        return out.transpose(1, 2).detach().to("cpu", _F64)

    def jtv(u: torch.Tensor, rows: torch.Tensor | None = None) -> torch.Tensor:
        cotangents = u.to(device, dtype).transpose(1, 2)  # (B, p, d)

        def one(xi: torch.Tensor, cs: torch.Tensor) -> torch.Tensor:
            _, pullback = vjp(f, xi)
            return vmap(lambda c: pullback(c)[0])(cs)

        out = vmap(one)(pick(rows), cotangents)
        return out.transpose(1, 2).detach().to("cpu", _F64)

    def outputs() -> torch.Tensor:
        return vmap(f)(xin).detach().to("cpu", _F64)

    return jv, jtv, outputs


def _orthonormal(v: torch.Tensor, basis: torch.Tensor, noise: float) -> torch.Tensor:
    """The rows of ``v`` (B, p, n), one after the other, made orthogonal to the rows of ``basis`` (B, s, n) and
    to the rows already accepted (twice: "twice is enough"), then normalised. A row left with no more than
    ``noise`` of its norm lay in the subspace already (the Krylov space has stopped growing there): it becomes
    zero, since its normalised rounding noise would no longer be orthogonal to the basis."""
    before = v.norm(dim=2, keepdim=True)  # (B, p, 1)
    rows: list[torch.Tensor] = []
    for k in range(v.shape[1]):
        r = v[:, k : k + 1]
        for _ in range(2):
            if basis.shape[1]:
                r = r - (r @ basis.transpose(1, 2)) @ basis
            for q in rows:
                r = r - (r @ q.transpose(1, 2)) @ q
        norm = r.norm(dim=2, keepdim=True)
        keep = norm > noise * before[:, k : k + 1]
        rows.append(torch.where(keep, r / norm.clamp_min(1e-300), torch.zeros_like(r)))
    return torch.cat(rows, 1)


def _compact(t: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """``t[keep]`` without a second copy of ``t``: the kept rows move forward in place, one at a time (each
    only to an earlier or the same position), and the result is a view of the first ones."""
    rows = torch.nonzero(keep).flatten().tolist()
    for to, frm in enumerate(rows):
        if to != frm:
            t[to] = t[frm]
    return t[: len(rows)]


def top_pairs(
    jv: Operator, jtv: Operator, b: int, n: int, d: int, *, level: int = 0, block: int | None = None,
    max_steps: int = 20, tol: float = 1e-10, seed: int = 0, noise: float = 1e-10, starts: torch.Tensor | None = None,
) -> KrylovPairs:
    """Block Krylov on ``A = J^T J`` for a chunk of ``b`` samples (see the module docstring). ``block``
    defaults to ``max(4, level + 2)``; at most ``max_steps`` blocks are built, and at most
    ``min(n, d) + block`` vectors (the start block and the range of ``A``: in exact arithmetic Rayleigh-Ritz is
    exact there; in floating point a sample may still be unconverged, and is reported so). A Ritz pair ``k``
    is accepted when ``||A w_k - theta_k w_k|| <= tol * theta_k`` (``theta_k`` floored at the numerical-rank
    cut-off, below which the direction is dropped anyway): the top pair for ``sigma_max``, the pair at
    ``level`` for the direction. A sample stops as soon as it has converged (or its subspace stops growing),
    so its result depends on its own start block ``starts[i]`` (``(b, block, n)``; by default drawn from
    ``seed``) and not on the other samples of the chunk. ``noise``: the relative norm below which a new
    vector counts as already in the subspace (the precision of the products). Raises ``FloatingPointError``
    when a product is not finite."""
    block = max(4, level + 2) if block is None else block
    width = min(n, min(n, d) + block, block * max_steps)
    if starts is None:
        starts = torch.randn(b, block, n, generator=torch.Generator().manual_seed(seed), dtype=_F64)
    # the active samples' subspaces, vectors as rows (contiguous slices for every product below); a sample
    # that finishes has its result copied out and its rows dropped in place (_compact)
    basis = torch.zeros(b, width, n, dtype=_F64)  # K^T: orthonormal rows
    images = torch.zeros(b, width, d, dtype=_F64)  # (J K)^T
    applied = torch.zeros(b, width, n, dtype=_F64)  # (A K)^T = (J^T J K)^T
    gram = torch.zeros(b, width, width, dtype=_F64)  # (J K)^T (J K) = K^T A K
    wanted = [0, level] if level else [0]
    cutoff = rank_cutoff(d, n, 1.0) ** 2  # of an eigenvalue of A, relative to the largest
    lam_max = torch.zeros(b, dtype=_F64)
    vec, image = torch.zeros(b, n, dtype=_F64), torch.zeros(b, d, dtype=_F64)
    converged = torch.zeros(b, dtype=torch.bool)
    active = torch.arange(b)  # the samples still iterating; they share s, the vectors built so far
    v = starts.to(_F64)
    s, steps = 0, 0
    while len(active):
        cols = min(block, width - s)
        q = _orthonormal(v[:, :cols], basis[:, :s], noise)  # (A, cols, n)
        rows = None if len(active) == b else active
        u = jv(q.transpose(1, 2), rows).transpose(1, 2)  # (A, cols, d)
        a = jtv(u.transpose(1, 2), rows).transpose(1, 2)  # (A, cols, n)
        if not (bool(torch.isfinite(u).all()) and bool(torch.isfinite(a).all())):
            raise FloatingPointError("a Jacobian-vector product is not finite")
        new = slice(s, s + cols)
        basis[:, new], images[:, new], applied[:, new] = q, u, a
        cross = images[:, : s + cols] @ u.transpose(1, 2)  # (A, s + cols, cols)
        gram[:, : s + cols, new] = cross
        gram[:, new, : s + cols] = cross.transpose(1, 2)
        s, steps = s + cols, steps + 1
        theta, w = eigenpairs(gram[:, :s, :s], wanted)  # Rayleigh-Ritz: descending, the wanted vectors
        theta = theta.clamp_min(0)
        ww = w.transpose(1, 2)  # (A, wanted, s)
        resid = (ww @ applied[:, :s] - (ww @ basis[:, :s]) * theta[:, wanted].unsqueeze(2)).norm(dim=2)
        scale = torch.maximum(theta[:, wanted], cutoff * theta[:, :1])  # each pair against its own size
        ok = (resid <= tol * scale).all(dim=1) & torch.isfinite(resid).all(dim=1)
        done = ok | ~q.flatten(1).any(dim=1) | (s >= width)  # converged, or nothing left to add
        if not bool(done.any()):
            v = a
            continue
        idx, wl = active[done], ww[done, -1:]  # (D, 1, s): the pair at level
        vec[idx] = (wl @ basis[done, :s]).squeeze(1)
        image[idx] = (wl @ images[done, :s]).squeeze(1)
        lam_max[idx], converged[idx] = theta[done, 0], ok[done]
        keep = ~done
        active, v = active[keep], a[keep]
        basis, images, applied, gram = (_compact(t, keep) for t in (basis, images, applied, gram))
    sigma = image.norm(dim=1)
    rank_ok = sigma > rank_cutoff(d, n, lam_max.sqrt())
    vec = torch.where(rank_ok.unsqueeze(1), vec / vec.norm(dim=1, keepdim=True).clamp_min(1e-300), torch.zeros_like(vec))
    image = torch.where(rank_ok.unsqueeze(1), image, torch.zeros_like(image))
    # a model with a zero Jacobian converges at once (every residual is 0), with sigma 0 and no direction
    return KrylovPairs(lam_max.sqrt(), vec, image, converged, steps)
