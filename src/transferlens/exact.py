"""Exact (Jacobian) transferability for small differentiable models ``R^n -> R^d``.

The theory's attack on model ``f`` at ``x`` moves along the top right-singular vector ``v_f(x)`` of the
Jacobian ``J_f(x)`` (``level=k`` uses the (k+1)-th one, an ablation). With it:

* ``Delta_{S->S} = J_S v_S``, ``Delta_{S->T} = J_T v_S``;
* ``alpha1^{S->T}(x) = ||J_T v_S|| / sigma_max(J_T)``: the denominator is always the target's own worst
  case, also when ``level > 0`` (so at zero deviation the ablation gives ``sigma_{k+1} / sigma_max``);
  alpha2 and combined by the shared kernel :mod:`transferlens.alpha`, from ``Delta_{S->S}`` and ``Delta_{S->T}``;
  symmetrically for T->S.
* gradient matching: ``A* = E[J_T J_S^T] (E[J_S J_S^T])^+``, distance ``sqrt(E ||J_T - A* J_S||_F^2)``
  (``s2t``: S's Jacobians mapped onto T's; ``t2s`` the reverse);
* function matching: ``min_{A,b} sqrt(E ||f_T(x) - A f_S(x) - b||^2)`` in closed form (least squares).

Jacobians come from ``torch.func`` (``vmap`` of ``jacrev``, or ``jacfwd`` when ``n < d``), chunk by chunk,
so memory holds one chunk of Jacobians at a time; everything is computed in float64.
"""

from __future__ import annotations

from contextlib import closing
from dataclasses import dataclass, field
from typing import Any, Iterator

import numpy as np
import torch
from torch import nn

from ._torch import fresh, frozen_eval, model_device, model_dtype
from ._validate import check_choice, check_flag, check_int, check_model, check_positive, check_real, check_seed, model_outputs_2d
from .alpha import DIRECTIONS, DirectionResult, direction_metrics
from .attacks import OUTPUTS, ThreatModel, model_output, validate_inputs


def _check_model_and_input(model: nn.Module, x: torch.Tensor, name: str, output: str) -> int:
    check_choice(output, "output", OUTPUTS)
    probe = x[:2].to(model_device(model), model_dtype(model, x.dtype))
    with frozen_eval(model):
        out = model_outputs_2d(model, probe, name)
        if output != "logits":
            out = model_output(model, probe, output)
    return int(out.shape[1])


def _jacobian_chunks(
    model: nn.Module, x: torch.Tensor, output: str, chunk_size: int, name: str
) -> Iterator[tuple[slice, torch.Tensor, torch.Tensor]]:
    """Yield ``(rows, outputs (B, d), jacobians (B, d, n))`` in float64 for consecutive chunks of ``x``."""
    from torch.func import jacfwd, jacrev, vmap

    dev, dt = model_device(model), model_dtype(model, x.dtype)
    n = int(np.prod(x.shape[1:]))
    d = _check_model_and_input(model, x, name, output)
    shape = x.shape[1:]

    def f(xi: torch.Tensor) -> torch.Tensor:
        # a differentiable copy: a model that works in place on its input must not write into x
        y = model_output(model, xi.reshape(1, *shape).clone(), output)[0]
        return y, y

    jac = jacfwd(f, has_aux=True) if n < d else jacrev(f, has_aux=True)
    with frozen_eval(model):
        for i in range(0, len(x), chunk_size):
            xb = fresh(x[i : i + chunk_size], dev, dt).reshape(-1, n)
            try:
                j, out = vmap(jac)(xb)
            except RuntimeError as exc:
                raise ValueError(
                    f"{name}: could not differentiate the model's output with torch.func ({exc}). Exact metrics "
                    "need a differentiable model made of standard torch operations"
                ) from exc
            j, out = j.detach().double(), out.detach().double()
            # One cheap reduction first (NaN/Inf anywhere propagates); the exact check only if it trips.
            if not bool(torch.isfinite(j.sum() + out.sum())) and not (
                bool(torch.isfinite(j).all()) and bool(torch.isfinite(out).all())
            ):
                raise ValueError(
                    f"{name} has NaN/Inf in its outputs or Jacobians (overflow?) on inputs {i}..{i + len(xb) - 1}; "
                    "rescale the inputs or use a float64 model"
                )
            yield slice(i, i + len(xb)), out.cpu(), j.reshape(len(xb), out.shape[1], n).cpu()


def _validate(source: nn.Module, target: nn.Module | None, x: Any, level: Any, chunk_size: Any) -> tuple[torch.Tensor, int, int]:
    """Checked inputs, ``level`` and ``chunk_size`` (numbers normalised to ``int``)."""
    check_model(source, "source" if target is not None else "model")
    if target is not None:
        check_model(target, "target")
    x = validate_inputs(x)
    return x.detach(), check_int(level, "level", 0), check_int(chunk_size, "chunk_size", 1)


def _check_level(level: int, n: int, d: int, name: str) -> None:
    if level >= min(n, d):
        raise ValueError(
            f"level={level} needs at least {level + 1} singular values, but the {name} Jacobian is {d} x {n} "
            f"(min(n, d) = {min(n, d)}); use level < {min(n, d)}"
        )


def jacobians(model: nn.Module, x: torch.Tensor, *, output: str = "logits", chunk_size: int = 1024) -> torch.Tensor:
    """Per-sample Jacobians ``(N, d, n)`` (float64) of the model's output w.r.t. its flattened input."""
    x, _, chunk_size = _validate(model, None, x, 0, chunk_size)
    return torch.cat([j for _, _, j in _jacobian_chunks(model, x, output, chunk_size, "model")])


def _svd(j: torch.Tensor, k: int, gram: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Top ``k`` singular values ``(B, k)`` and right-singular vectors ``(B, k, n)`` of ``j`` (B, d, n).

    Through the eigendecomposition of the smaller Gram matrix: a batch of tiny symmetric eigenproblems is
    several times cheaper than a batched SVD. When d <= n the left vectors ``u_i`` come from ``J J^T`` and
    ``sigma_i = ||J^T u_i||``, ``v_i = J^T u_i / sigma_i`` (taking the norm of ``J^T u_i`` rather than the
    square root of the eigenvalue keeps tiny singular values tiny instead of ``sqrt(rounding)``). Singular
    values below the numerical-rank cut-off ``max(d, n) * eps * sigma_max`` are returned as 0 with a zero
    vector (such samples are degenerate at that level and excluded by the metrics). ``gram`` may pass a
    precomputed ``J J^T`` (used when d <= n).
    """
    d, n = j.shape[1], j.shape[2]
    if n < d:
        _, vecs = torch.linalg.eigh(j.transpose(1, 2) @ j)
        v = vecs.flip(2)[:, :, :k].transpose(1, 2)  # (B, k, n), unit rows
        sigma = (j @ v.transpose(1, 2)).norm(dim=1)
        scale = torch.ones_like(sigma)
    else:
        _, u = torch.linalg.eigh(j @ j.transpose(1, 2) if gram is None else gram)
        v = (j.transpose(1, 2) @ u.flip(2)[:, :, :k]).transpose(1, 2)  # (B, k, n), rows have norm sigma_i
        sigma = v.norm(dim=2)
        scale = 1.0 / sigma.clamp_min(1e-300)
    # Below the numerical rank cut-off (as in pinv) a direction is rounding noise; it is returned as 0
    # (with sigma 0) rather than as a fake unit vector.
    rank_ok = sigma > max(d, n) * torch.finfo(j.dtype).eps * sigma[:, :1]
    scale = torch.where(rank_ok, scale, torch.zeros_like(scale))
    return torch.where(rank_ok, sigma, torch.zeros_like(sigma)), v * scale.unsqueeze(2)


def _top_and_level(j: torch.Tensor, gram: torch.Tensor, level: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``sigma_max`` ``(B,)`` and the right-singular vector at ``level`` ``(B, n)`` (zero below the rank cut-off).

    Faster than a full eigendecomposition when d <= n: the eigenvalues of ``J J^T`` alone, then three
    steps of inverse iteration shifted just past the wanted eigenvalue give its eigenvector ``u`` to
    rounding (each step shrinks the error by ``1e-10 * lambda_max / gap``); ``v = J^T u / ||J^T u||``.
    Samples where the shifted solve fails fall back to the full decomposition.
    """
    d, n = j.shape[1], j.shape[2]
    if n < d:
        s, v = _svd(j, level + 1)
        return s[:, 0], v[:, level, :]
    lam = torch.linalg.eigvalsh(gram)  # ascending
    lam_max = lam[:, -1].clamp_min(0)
    shift = lam[:, d - 1 - level] + 1e-10 * lam_max + 1e-300
    system = gram - shift.view(-1, 1, 1) * torch.eye(d, dtype=gram.dtype)
    gen = torch.Generator().manual_seed(0)  # a fixed generic start, the same for every sample
    u = (torch.rand(d, 1, generator=gen, dtype=gram.dtype) + 0.5).expand(len(j), d, 1)
    ok = torch.ones(len(j), dtype=torch.bool)
    for _ in range(3):
        u, info = torch.linalg.solve_ex(system, u)
        ok &= info == 0
        u = u / u.norm(dim=1, keepdim=True)
    ok &= torch.isfinite(u).all(dim=(1, 2))
    if not bool(ok.all()):
        bad = ~ok
        _, vecs = torch.linalg.eigh(gram[bad])
        u = u.clone()
        u[bad] = vecs[:, :, d - 1 - level : d - level]
    v = (j.transpose(1, 2) @ u).squeeze(2)
    sigma = v.norm(dim=1)
    rank_ok = sigma > max(d, n) * torch.finfo(j.dtype).eps * lam_max.sqrt()
    scale = torch.where(rank_ok, 1.0 / sigma.clamp_min(1e-300), torch.zeros_like(sigma))
    return lam_max.sqrt(), v * scale.unsqueeze(1)


def singular_directions(
    model: nn.Module, x: torch.Tensor, k: int = 1, *, output: str = "logits", chunk_size: int = 1024
) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-``k`` singular values ``(N, k)`` and right-singular vectors ``(N, k, n)`` of each sample's Jacobian.

    The sign of each vector is arbitrary (as for any SVD); no metric here depends on it.
    """
    k = check_int(k, "k", 1)
    x, _, chunk_size = _validate(model, None, x, k - 1, chunk_size)
    values, vectors = [], []
    for _, out, j in _jacobian_chunks(model, x, output, chunk_size, "model"):
        _check_level(k - 1, j.shape[2], j.shape[1], "model")
        s, v = _svd(j, k)
        values.append(s)
        vectors.append(v)
    return torch.cat(values), torch.cat(vectors)


def exact_attack(model: nn.Module, x: torch.Tensor, eps: float, *, level: int = 0, output: str = "logits", chunk_size: int = 1024) -> torch.Tensor:
    """The theory's attack: ``delta = eps * v_level(x)`` (shape of ``x``), the l2 step along a right-singular vector."""
    eps = check_positive(eps, "eps")
    level = check_int(level, "level", 0)
    x = validate_inputs(x)
    _, v = singular_directions(model, x, level + 1, output=output, chunk_size=chunk_size)
    return (eps * v[:, level, :]).reshape(x.shape).to(x.dtype)


@dataclass(frozen=True)
class MatchingDistance:
    """A matching distance in one direction; ``relative`` divides by the RMS size of what is matched."""

    direction: str
    distance: float
    relative: float

    def to_dict(self) -> dict[str, Any]:
        return {"direction": self.direction, "distance": self.distance, "relative": self.relative}


@dataclass(frozen=True)
class ExactTransferability:
    """Exact alphas (both directions), gradient- and function-matching distances, and the options used."""

    s2t: DirectionResult
    t2s: DirectionResult
    gradient_matching: dict[str, MatchingDistance]
    function_matching: dict[str, MatchingDistance]
    n: int
    options: dict[str, Any] = field(default_factory=dict)

    def __getitem__(self, key: str) -> float:
        metric, _, direction = key.rpartition("_")
        if direction in DIRECTIONS and metric in ("alpha1", "alpha2", "combined"):
            return float(getattr(getattr(self, direction), metric))
        if direction in DIRECTIONS and metric in ("grad_match", "func_match"):
            table = self.gradient_matching if metric == "grad_match" else self.function_matching
            return table[direction].distance
        raise KeyError(f"{key!r}; use METRIC_DIRECTION with METRIC in alpha1/alpha2/combined/grad_match/func_match")

    def metrics(self) -> dict[str, float]:
        names = ("alpha1", "alpha2", "combined", "grad_match", "func_match")
        return {f"{m}_{d}": self[f"{m}_{d}"] for d in DIRECTIONS for m in names}

    def to_dict(self, samples: bool = False) -> dict[str, Any]:
        return {
            "metrics": self.metrics(),
            "s2t": self.s2t.to_dict(samples),
            "t2s": self.t2s.to_dict(samples),
            "gradient_matching": {k: v.to_dict() for k, v in self.gradient_matching.items()},
            "function_matching": {k: v.to_dict() for k, v in self.function_matching.items()},
            "n": self.n,
            "options": self.options,
        }


class _Moments:
    """Streaming sums for the optimal affine map of ``a``'s Jacobians onto ``b``'s: ``sum J_b J_a^T``,
    ``sum J_a J_a^T`` and ``sum ||J_b||_F^2``."""

    def __init__(self) -> None:
        self.ba: torch.Tensor | float = 0.0
        self.aa: torch.Tensor | float = 0.0
        self.bb = 0.0

    def add(self, cross_ba: torch.Tensor, gram_a: torch.Tensor, sq_b: float) -> None:
        self.ba = self.ba + cross_ba
        self.aa = self.aa + gram_a
        self.bb += sq_b

    def distance(self, n: int, direction: str) -> MatchingDistance:
        a_star = self.ba @ torch.linalg.pinv(self.aa, hermitian=True)
        # E||J_b - A J_a||^2 = E||J_b||^2 - 2 tr(A E[J_a J_b^T]) + tr(A E[J_a J_a^T] A^T)
        sq = self.bb - 2 * float(torch.trace(a_star @ self.ba.T)) + float(torch.trace(a_star @ self.aa @ a_star.T))
        sq = max(sq, 0.0) / n
        scale = self.bb / n
        return MatchingDistance(direction, float(np.sqrt(sq)), float(np.sqrt(sq / scale)) if scale > 0 else 0.0)


def _function_matching(fa: torch.Tensor, fb: torch.Tensor, direction: str) -> MatchingDistance:
    """Least squares ``fb ~ A fa + b`` on all samples; RMS residual norm."""
    design = torch.cat([fa, torch.ones(len(fa), 1, dtype=fa.dtype)], dim=1)
    coef = torch.linalg.lstsq(design, fb, driver="gelsd").solution
    resid = fb - design @ coef
    sq = float((resid * resid).sum(1).mean())
    centred = fb - fb.mean(0)
    scale = float((centred * centred).sum(1).mean())
    return MatchingDistance(direction, float(np.sqrt(sq)), float(np.sqrt(sq / scale)) if scale > 0 else 0.0)


def _paired_chunks(source, target, x, output, chunk_size):
    """Source and target chunks side by side; both generators are closed (their model states restored) on exit."""
    gs = _jacobian_chunks(source, x, output, chunk_size, "source")
    gt = _jacobian_chunks(target, x, output, chunk_size, "target")
    try:
        yield from zip(gs, gt)
    finally:
        gt.close()
        gs.close()


def exact_transferability(
    source: nn.Module,
    target: nn.Module,
    x: torch.Tensor,
    *,
    level: int = 0,
    output: str = "logits",
    squared: bool = False,
    tol: float = 1e-10,
    chunk_size: int = 1024,
) -> ExactTransferability:
    """Exact alpha metrics both ways, plus gradient- and function-matching distances, on inputs ``x``.

    ``level`` picks the singular vector used as the attack direction for both models (0 = largest); alpha1
    always divides by the other model's largest singular value. Samples whose singular value at ``level``
    (of the attacked model) or whose largest singular value (of the other) is ``<= tol`` are excluded and
    counted.
    ``squared`` reports alpha2 and combined as squared Frobenius norms (as the ``paper`` preset does).
    """
    check_model(target, "target")
    x, level, chunk_size = _validate(source, target, x, level, chunk_size)
    tol = check_positive(tol, "tol")
    squared = check_flag(squared, "squared")
    n_in = int(np.prod(x.shape[1:]))
    dev: dict[str, list[torch.Tensor]] = {k: [] for k in ("s2s", "s2t", "t2t", "t2s")}
    sigma_max: dict[str, list[torch.Tensor]] = {"s": [], "t": []}
    f_s, f_t = [], []
    mom_st, mom_ts = _Moments(), _Moments()
    # The outer context restores both models even when source is target (the generators' own contexts
    # close in an order that would otherwise leave the shared model frozen).
    with frozen_eval(source, target), closing(_paired_chunks(source, target, x, output, chunk_size)) as chunks:
        for (rows, out_s, j_s), (_, out_t, j_t) in chunks:
            _check_level(level, n_in, j_s.shape[1], "source")
            _check_level(level, n_in, j_t.shape[1], "target")
            # Per-sample Gram matrices serve both the singular vectors and the matching moments.
            g_s, g_t = j_s @ j_s.transpose(1, 2), j_t @ j_t.transpose(1, 2)
            sig_s, v_s = _top_and_level(j_s, g_s, level)
            sig_t, v_t = _top_and_level(j_t, g_t, level)
            dev["s2s"].append(torch.einsum("bdn,bn->bd", j_s, v_s))
            dev["s2t"].append(torch.einsum("bdn,bn->bd", j_t, v_s))
            dev["t2t"].append(torch.einsum("bdn,bn->bd", j_t, v_t))
            dev["t2s"].append(torch.einsum("bdn,bn->bd", j_s, v_t))
            # alpha1's denominator is the other model's worst case, sigma_max, whatever the attack's level.
            sigma_max["s"].append(sig_s)
            sigma_max["t"].append(sig_t)
            # sum J_T J_S^T over the chunk, (d_T, d_S), as one matrix product
            cross = j_t.transpose(0, 1).reshape(j_t.shape[1], -1) @ j_s.transpose(0, 1).reshape(j_s.shape[1], -1).T
            sq_s, sq_t = float(torch.diagonal(g_s, dim1=1, dim2=2).sum()), float(torch.diagonal(g_t, dim1=1, dim2=2).sum())
            mom_st.add(cross, g_s.sum(0), sq_t)
            mom_ts.add(cross.T, g_t.sum(0), sq_s)
            f_s.append(out_s)
            f_t.append(out_t)
    d = {k: torch.cat(v).numpy() for k, v in dev.items()}
    keep = np.ones(len(x), dtype=bool)
    top = {k: torch.cat(v).numpy()[:, None] for k, v in sigma_max.items()}  # norms of the top deviations
    s2t = direction_metrics("s2t", d["s2s"], d["s2t"], top["t"], keep, tol, squared, None)
    t2s = direction_metrics("t2s", d["t2t"], d["t2s"], top["s"], keep, tol, squared, None)
    fs, ft = torch.cat(f_s), torch.cat(f_t)
    return ExactTransferability(
        s2t=s2t,
        t2s=t2s,
        gradient_matching={"s2t": mom_st.distance(len(x), "s2t"), "t2s": mom_ts.distance(len(x), "t2s")},
        function_matching={"s2t": _function_matching(fs, ft, "s2t"), "t2s": _function_matching(ft, fs, "t2s")},
        n=len(x),
        options={"level": level, "output": output, "squared": squared, "tol": tol, "chunk_size": chunk_size, "attack": "exact"},
    )


@dataclass(frozen=True)
class ConsistencyCheck:
    """Attack-based (deviation objective, l2 PGD) vs exact alphas for decreasing eps."""

    eps: tuple[float, ...]
    max_abs_diff: tuple[float, ...]
    attack_metrics: tuple[dict[str, float], ...]
    exact_metrics: dict[str, float]
    steps: int

    @property
    def converges(self) -> bool:
        """The disagreement at the smallest eps is below 1e-2 and no larger than at the largest eps."""
        return self.max_abs_diff[-1] < 1e-2 and self.max_abs_diff[-1] <= self.max_abs_diff[0] + 1e-12

    def to_dict(self) -> dict[str, Any]:
        return {
            "eps": list(self.eps),
            "max_abs_diff": list(self.max_abs_diff),
            "attack_metrics": list(self.attack_metrics),
            "exact_metrics": self.exact_metrics,
            "steps": self.steps,
            "converges": self.converges,
        }


def _check_eps_sequence(eps: Any) -> tuple[float, ...]:
    """A non-empty sequence of radii > 0 (one number is accepted as a sequence of one)."""
    if isinstance(eps, (str, bytes)) or not hasattr(eps, "__iter__"):
        eps = (eps,)
    values = tuple(check_real(e, "each eps", positive=True) for e in eps)
    if not values:
        raise ValueError("eps must hold at least one radius, e.g. eps=(1e-1, 1e-2, 1e-3)")
    return values


def check_consistency(
    source: nn.Module,
    target: nn.Module,
    x: torch.Tensor,
    *,
    eps: tuple[float, ...] = (1e-1, 1e-2, 1e-3),
    steps: int = 100,
    step_multiplier: float = 10.0,
    output: str = "logits",
    seed: int = 0,
) -> ConsistencyCheck:
    """Compare :func:`transferlens.transferability` (deviation objective, l2) with the exact alphas.

    As ``eps -> 0`` the model is linear in the ball, PGD on the deviation objective becomes a power
    iteration on ``J^T J`` and the attack-based alphas converge to the exact ones. The step size is
    ``step_multiplier * eps``: a long step followed by the projection makes each PGD step a full power
    iteration (the default ``2.5 * eps / steps`` converges far more slowly). Samples whose top two singular
    values are close converge slowest. Use float64 models for the smallest radii. Returns the largest
    absolute difference over the six alpha metrics at each eps.
    """
    check_model(source, "source")
    check_model(target, "target")
    step_multiplier = check_positive(step_multiplier, "step_multiplier")
    steps = check_int(steps, "steps", 1)
    seed = check_seed(seed)
    eps = _check_eps_sequence(eps)
    from .adversarial import transferability

    exact = exact_transferability(source, target, x, output=output)
    keys = [f"{m}_{d}" for d in DIRECTIONS for m in ("alpha1", "alpha2", "combined")]
    ex = {k: exact[k] for k in keys}
    diffs, attacked = [], []
    for e in eps:
        r = transferability(
            source, target, x, preset="theory", threat=ThreatModel(norm="l2", eps=e, steps=steps, step_size=step_multiplier * e), output=output, seed=seed, tol=1e-300
        )
        m = {k: r[k] for k in keys}
        attacked.append(m)
        diffs.append(max(abs(m[k] - ex[k]) for k in keys))
    return ConsistencyCheck(tuple(eps), tuple(diffs), tuple(attacked), ex, steps)
