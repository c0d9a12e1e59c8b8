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

Jacobians come from ``torch.func``, chunk by chunk: when ``d <= n`` one reverse pass over the whole chunk per
output (``vjp`` of the batch vmapped over the unit cotangents; valid because the model treats samples
independently, as checked on two distinct inputs by :func:`_samples_independent`), otherwise ``vmap`` of ``jacfwd`` (``n < d``) or
``jacrev`` one sample at a time. Everything is computed in float64.

Memory: a chunk holds as many samples as fit in ``memory_budget`` bytes (default :data:`MEMORY_BUDGET`,
256 MiB), estimated from the Jacobians' sizes, the Gram matrices of the smaller side ``min(n, d)`` and the
models' activations; one chunk is alive at a time, so the working memory does not grow with the number of
samples (only the per-sample results do: outputs and deviations, ``O(N d)``). Per sample, only the
``min(n, d) x min(n, d)`` Gram matrix is formed (``J J^T`` when ``d <= n``, ``J^T J`` when ``n < d``). Small
ones (``min(n, d) <`` :data:`LAPACK_FROM`) are solved as one torch batch: eigenvalues, then a few steps of
inverse iteration for the wanted singular vector; the moments of the gradient matching are then one symmetric
rank-k update (``dsyrk``) of both models' Jacobians side by side per chunk. Larger ones go to LAPACK one
sample at a time, both models together while the sample's Jacobians are in cache: one ``dsyrk`` of the
stacked ``[J_S; J_T]`` gives both Gram matrices (when ``d <= n``) and the sample's share of the moments,
``dsyevr`` computes only the wanted eigenpairs, one product gives the four deviations. BLAS runs with one
thread there (many small calls).
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Iterator

import numpy as np
import torch
from torch import nn

from ._torch import fresh, frozen_eval, model_device, model_dtype
from ._validate import check_choice, check_flag, check_int, check_model, check_positive, check_real, check_seed, model_outputs_2d
from ._eigen import eigenpairs, rank_cutoff
from .alpha import DIRECTIONS, DirectionResult, direction_metrics
from .attacks import OUTPUTS, ThreatModel, model_output, validate_inputs

METHODS = ("jacobian", "krylov")
MEMORY_BUDGET = 256 * 2**20
"""Default working-memory budget of one chunk, in bytes (``memory_budget=`` of the functions below)."""

_F64 = 8  # bytes per float64

JACOBIAN_MAX = 1e140
"""Largest Jacobian entry accepted: Gram matrices and moments sum squares of entries over inputs and samples, and
float64 overflows at 1.8e308."""


@dataclass(frozen=True)
class _Model:
    """What the chunking needs to know about one model on these inputs."""

    model: nn.Module
    name: str
    d: int  # outputs measured
    act: int  # activations per sample in one forward pass (sum of the submodules' output sizes), an estimate
    device: torch.device
    dtype: torch.dtype
    # reverse-mode Jacobians from one pass over the whole chunk (the model treats samples independently, as
    # checked on two distinct inputs); otherwise each sample is differentiated on its own
    by_batch: bool = False


def _prepare(model: nn.Module, x: torch.Tensor, name: str, output: str, batch_pass: bool = True) -> _Model:
    """Check that ``model`` maps ``x`` to (N, d) outputs; measure ``d`` and the activations per sample; with
    ``batch_pass``, whether its Jacobians can come from one reverse pass over a batch (``d <= n`` and
    :func:`_samples_independent`)."""
    check_choice(output, "output", OUTPUTS)
    dev, dt = model_device(model), model_dtype(model, x.dtype)
    probe = x[:2].to(dev, dt)
    sizes: dict[int, int] = {}

    def count(module: nn.Module, _inputs: Any, out: Any) -> None:
        total = 0
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor) and t.ndim > 0 and t.shape[0] > 0:
                total += t.numel() // t.shape[0]
        sizes[id(module)] = max(sizes.get(id(module), 0), total)

    handles = []
    try:
        for m in model.modules():
            handles.append(m.register_forward_hook(count))
    except Exception:  # noqa: BLE001 - a module that takes no hooks: the estimate then counts inputs and outputs only
        pass
    try:
        with frozen_eval(model):
            out = model_outputs_2d(model, probe, name)
            if output != "logits":
                out = model_output(model, probe, output)
    finally:
        for h in handles:
            h.remove()
    m = _Model(model, name, int(out.shape[1]), sum(sizes.values()), dev, dt)
    if batch_pass and m.d <= int(np.prod(x.shape[1:])):
        with frozen_eval(model):
            m = _Model(model, name, m.d, m.act, dev, dt, by_batch=_samples_independent(m, x, output))
    return m


PROBE_INPUTS = 64
"""The batch pass is checked on the first input and the first of the next ``PROBE_INPUTS - 1`` that differs
from it."""


def _samples_independent(m: _Model, x: torch.Tensor, output: str) -> bool:
    """Whether one reverse pass over a batch gives each input's own gradient: a random cotangent pulled back
    through a batch of two distinct inputs must equal the same cotangents pulled back through each input alone
    (to ``1e3`` machine epsilons). A model that mixes the samples of a batch in its gradients fails (its outputs
    were already checked to be per sample), and is then differentiated one input at a time. Inconclusive cases
    count as a failure: no two distinct inputs among the first :data:`PROBE_INPUTS`, or a zero gradient. A
    coupling that grows with the batch and stays below that tolerance on two inputs would go unnoticed; the
    check costs three backward passes and ``O(n)`` memory."""
    from torch.func import vjp

    head = x[:PROBE_INPUTS].reshape(min(len(x), PROBE_INPUTS), -1)
    differs = torch.nonzero((head[1:] != head[0]).any(dim=1)).flatten()
    if len(differs) == 0:
        return False
    probe = torch.stack([x[0], x[1 + int(differs[0])]])
    shape, n = probe.shape[1:], int(np.prod(probe.shape[1:]))
    xin = fresh(probe, m.device, m.dtype).reshape(2, n)
    cot = torch.rand(2, m.d, generator=torch.Generator().manual_seed(0), dtype=torch.float64) + 0.5
    cot = cot.to(m.device, m.dtype)

    g = _batch_function(m, shape, output)
    try:
        together = vjp(g, xin)[1](cot)[0]
        alone = torch.cat([vjp(g, xin[i : i + 1])[1](cot[i : i + 1])[0] for i in range(2)])
    except RuntimeError:
        return False
    scale = float(alone.abs().max())
    if not scale > 0 or not bool(torch.isfinite(together).all()):
        return False
    return float((together - alone).abs().max()) <= 1e3 * torch.finfo(m.dtype).eps * scale


def _bytes_per_sample(n: int, models: tuple[_Model, ...]) -> int:
    """Estimated working memory per sample of one chunk: each model's float64 Jacobian and a transposed copy of
    it (for the chunk-wide products), its ``min(n, d)`` Gram matrix with a factorisation and workspace, plus the
    largest Jacobian computation in flight (``torch.func`` carries one tangent per input when ``n < d``, one
    cotangent per output otherwise, through every activation, in the model's dtype)."""
    kept = sum(2 * _F64 * m.d * n + 3 * _F64 * min(n, m.d) ** 2 for m in models)
    elem = [torch.finfo(m.dtype).bits // 8 for m in models]
    in_flight = max((n if n < m.d else m.d) * (m.act + m.d + n) * e for m, e in zip(models, elem))
    return kept + in_flight


def _chunk_rows(n_samples: int, n: int, models: tuple[_Model, ...], chunk_size: int | None, budget: int) -> int:
    """Samples per chunk: as many as ``budget`` allows (at least one), at most ``chunk_size`` when given."""
    rows = max(1, budget // max(1, _bytes_per_sample(n, models)))
    if chunk_size is not None:
        rows = min(rows, chunk_size)
    return min(rows, n_samples)


def _batch_function(m: _Model, shape: torch.Size, output: str) -> Any:
    """The model's measured output as a function of flattened inputs ``(B, n)``, for ``torch.func``; it is given
    a differentiable copy, so that a model that works in place on its input never writes into ``x``."""

    def g(xf: torch.Tensor) -> torch.Tensor:
        return model_output(m.model, xf.reshape(-1, *shape).clone(), output)

    return g


ROWS_PER_PASS = 1024
"""Each reverse pass of the batch pass carries about this many cotangent rows (outputs x samples): a chunk of
more samples goes through in blocks of about this many, one output per pass (the activations of a block stay in
cache); a smaller chunk takes a few outputs per pass (vmapped), so that it does not pay the overhead of a pass
once per output, or all of them in one pass when the caller has no buffer for the rows (copying each pass's
rows into one costs more than it saves when the inputs are wide)."""


def _batch_rows(m: _Model, xin: torch.Tensor, shape: torch.Size, output: str, rows: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """The batch pass of :func:`_jacobian_chunk`: outputs ``(B, d)`` and Jacobian rows ``(d, B, n)`` (float64,
    CPU; written into ``rows`` when given) of flattened inputs ``xin`` (B, n)."""
    from torch.func import vjp, vmap

    g = _batch_function(m, shape, output)
    b, n = xin.shape
    if rows is None and b < ROWS_PER_PASS:  # nowhere to write to: one vmapped pass, its result kept as it is
        out, pull = vjp(g, xin)
        basis = torch.eye(out.shape[1], dtype=out.dtype, device=out.device).unsqueeze(1).expand(-1, b, -1)
        return out.detach(), vmap(pull)(basis)[0].detach().to("cpu", torch.float64)
    blocks = -(-b // ROWS_PER_PASS)
    outs = []
    for s in range(blocks):
        lo, hi = s * b // blocks, (s + 1) * b // blocks
        out, pull = vjp(g, xin[lo:hi])
        if rows is None:
            rows = torch.empty(out.shape[1], b, n, dtype=torch.float64)
        d = out.shape[1]
        per = max(1, ROWS_PER_PASS // (hi - lo))
        if per == 1:
            cot = torch.zeros_like(out)  # contiguous: a broadcast one-hot row makes the first product slow
            for k in range(d):
                cot[:, k] = 1
                rows[k, lo:hi] = pull(cot)[0]
                cot[:, k] = 0
        else:
            eye = torch.eye(d, dtype=out.dtype, device=out.device)
            for k in range(0, d, per):
                rows[k : k + per, lo:hi] = vmap(pull)(eye[k : k + per].unsqueeze(1).expand(-1, hi - lo, -1))[0]
        outs.append(out.detach())
        del out, pull
    return torch.cat(outs), rows


def _jacobian_chunk(
    m: _Model, xb: torch.Tensor, output: str, start: int, into: torch.Tensor | None = None, products: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """Outputs ``(B, d)`` and Jacobians ``(B, d, n)`` of one chunk, in float64 on the CPU.

    When the model treats samples independently (``m.by_batch``) and ``d <= n``, reverse passes over the whole
    chunk give every sample's Jacobian rows at once: the gradient of ``sum_b y_b[k]`` with respect to ``x_b`` is
    row ``k`` of ``J(x_b)``. A forward pass, then one reverse pass per output, in blocks of samples or with a
    few outputs per pass (:data:`ROWS_PER_PASS`); each pass is written straight into ``into`` (a float64
    ``(d, B, n)`` buffer; allocated when not given), and the result is its ``(B, d, n)`` view (sample rows are
    strided). Otherwise each sample is differentiated on its own (``vmap`` of ``jacrev``, or ``jacfwd`` when
    ``n < d``) and ``into`` is not used. With ``products`` (the caller forms Gram matrices or moments from
    them), entries above :data:`JACOBIAN_MAX` are refused.
    """
    from torch.func import jacfwd, jacrev, vmap

    shape = xb.shape[1:]
    n = int(np.prod(shape))
    xin = fresh(xb, m.device, m.dtype).reshape(-1, n)
    try:
        if m.by_batch:
            out, rows = _batch_rows(m, xin, shape, output, into)
            j = rows.permute(1, 0, 2)
        else:

            def f(xi: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
                y = model_output(m.model, xi.reshape(1, *shape).clone(), output)[0]
                return y, y

            jac = jacfwd(f, has_aux=True) if n < m.d else jacrev(f, has_aux=True)
            j, out = vmap(jac)(xin)
    except RuntimeError as exc:
        raise ValueError(
            f"{m.name}: could not differentiate the model's output with torch.func ({exc}). Exact metrics "
            "need a differentiable model made of standard torch operations"
        ) from exc
    del xin
    j, out = j.detach().to("cpu", torch.float64), out.detach().to("cpu", torch.float64)
    # Two cheap reductions over the Jacobians (NaN propagates through both; vector_norm(inf) is 4x slower than
    # the pair) and one over the outputs.
    hi, lo = float(j.amax()), float(j.amin())
    largest = max(hi, -lo)
    finite_out = bool(torch.isfinite(out.sum())) or bool(torch.isfinite(out).all())  # a sum may overflow alone
    if not (np.isfinite(hi) and np.isfinite(lo) and finite_out):
        raise ValueError(
            f"{m.name} has NaN/Inf in its outputs or Jacobians (overflow?) on inputs {start}..{start + len(xb) - 1}; "
            "rescale the inputs or use a float64 model"
        )
    if products and largest > JACOBIAN_MAX:
        raise ValueError(
            f"{m.name}'s Jacobian entries reach {largest:.3g} on inputs {start}..{start + len(xb) - 1}: the products "
            f"the exact metrics form from them would overflow float64 (entries must stay below {JACOBIAN_MAX:.0e}). "
            "Divide the model's outputs by a constant: alpha metrics do not change, distances scale with it"
        )
    return out, j.reshape(len(xb), out.shape[1], n)


def _chunks(m: _Model, x: torch.Tensor, output: str, rows: int, products: bool = True):
    """``(rows, outputs, Jacobians)`` chunk by chunk, model frozen in eval mode meanwhile. The caller drops each
    chunk before asking for the next (``del``), so that only one is alive."""
    with frozen_eval(m.model):
        for i in range(0, len(x), rows):
            out, j = _jacobian_chunk(m, x[i : i + rows], output, i, products=products)
            yield slice(i, i + len(out)), out, j
            del out, j


def _validate(
    source: nn.Module, target: nn.Module | None, x: Any, level: Any, chunk_size: Any, memory_budget: Any
) -> tuple[torch.Tensor, int, int | None, int]:
    """Checked inputs, ``level``, ``chunk_size`` (``None`` or a count) and ``memory_budget`` (bytes)."""
    check_model(source, "source" if target is not None else "model")
    if target is not None:
        check_model(target, "target")
    x = validate_inputs(x)
    level = check_int(level, "level", 0)
    chunk_size = None if chunk_size is None else check_int(chunk_size, "chunk_size", 1)
    memory_budget = check_int(memory_budget, "memory_budget", 1)
    return x.detach(), level, chunk_size, memory_budget


def _check_level(level: int, n: int, d: int, name: str) -> None:
    if level >= min(n, d):
        raise ValueError(
            f"level={level} needs at least {level + 1} singular values, but the {name} Jacobian is {d} x {n} "
            f"(min(n, d) = {min(n, d)}); use level < {min(n, d)}"
        )


def jacobians(
    model: nn.Module, x: torch.Tensor, *, output: str = "logits", chunk_size: int | None = None, memory_budget: int = MEMORY_BUDGET
) -> torch.Tensor:
    """Per-sample Jacobians ``(N, d, n)`` (float64) of the model's output w.r.t. its flattened input.

    The result itself takes ``8 N d n`` bytes; ``memory_budget`` bounds the working memory on top of it.
    """
    x, _, chunk_size, memory_budget = _validate(model, None, x, 0, chunk_size, memory_budget)
    n = int(np.prod(x.shape[1:]))
    m = _prepare(model, x, "model", output)
    result = torch.empty(len(x), m.d, n, dtype=torch.float64)
    for rows, _, j in _chunks(m, x, output, _chunk_rows(len(x), n, (m,), chunk_size, memory_budget), products=False):
        result[rows] = j
        del j
    return result


LAPACK_FROM = 32
"""From this ``min(n, d)`` up, each sample's Gram matrix is formed and solved by LAPACK one sample at a time
(``dsyrk``, then ``dsyevr`` for the wanted eigenpairs only); below it, the chunk's small problems go to torch
as one batch."""


_BLAS: dict[str, Any] = {"controller": None, "limiter": None, "depth": 0}
_BLAS_LOCK = threading.Lock()


@contextmanager
def _one_blas_thread() -> Iterator[None]:
    """Run numpy's and SciPy's BLAS with one thread meanwhile: the per-sample loops make many small calls, and on
    them a second BLAS thread only adds synchronisation (measured 10-45 % slower with two threads on two cores,
    from 100 x 100 to 600 x 600 Gram matrices). The limit is process-wide (threadpoolctl), so calls from several
    threads share it: the first to enter sets it, the last to leave restores the previous setting."""
    with _BLAS_LOCK:
        if _BLAS["controller"] is None:
            import scipy.linalg  # noqa: F401 - loaded first, so that the controller sees SciPy's BLAS
            from threadpoolctl import ThreadpoolController

            _BLAS["controller"] = ThreadpoolController()  # finding the loaded libraries takes ~1 ms: once
        if _BLAS["depth"] == 0:
            _BLAS["limiter"] = _BLAS["controller"].limit(limits=1, user_api="blas")
        _BLAS["depth"] += 1
    try:
        yield
    finally:
        with _BLAS_LOCK:
            _BLAS["depth"] -= 1
            if _BLAS["depth"] == 0:
                _BLAS["limiter"].restore_original_limits()
                _BLAS["limiter"] = None


def _eigh_top(gram: np.ndarray, k: int, full: Any) -> tuple[np.ndarray, np.ndarray]:
    """The top ``k`` eigenvalues (descending) and eigenvectors (columns, ``(m, k)``) of one symmetric matrix given
    by its upper triangle (Fortran order; overwritten): ``dsyevr`` (relatively robust representations) for the
    eigenpairs ``m - k + 1 .. m`` only, that is the reduction to tridiagonal form and no eigenvector beyond the
    ``k`` wanted. Where it fails, numpy's full ``eigh`` of ``full()`` (the whole matrix formed again)."""
    from scipy.linalg import lapack

    m = gram.shape[0]
    w, z, found, _, info = lapack.dsyevr(gram, compute_v=1, range="I", il=m - k + 1, iu=m, lower=0, overwrite_a=1)
    if info != 0 or found != k:
        w, z = np.linalg.eigh(full())
        w, z = w[m - k :], z[:, m - k :]
    return w[:k][::-1], z[:, :k][:, ::-1]


def _sample_gram(a: np.ndarray) -> np.ndarray:
    """Upper triangle (``dsyrk``: half the work of a matrix product) of the smaller Gram matrix of one sample's
    Jacobian ``a`` (d, n), C order: ``J^T J`` when ``n < d``, else ``J J^T``."""
    from scipy.linalg import blas

    d, n = a.shape
    return blas.dsyrk(1.0, a.T, trans=0 if n < d else 1)  # a.T is Fortran-ordered: no copy on the way to BLAS


def _gram_eigenpairs_lapack(j: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The top ``k`` eigenvalues ``(B, k)`` (descending, clamped at 0) and unit eigenvectors ``(B, k, m)`` of
    each sample's smaller Gram matrix (``J^T J`` when ``n < d``, else ``J J^T``; ``m = min(n, d)``), one sample
    at a time: :func:`_sample_gram`, then :func:`_eigh_top`.
    """
    jn = j.numpy()
    b, d, n = jn.shape
    values = np.empty((b, k))
    vectors = np.empty((b, k, min(d, n)))
    with _one_blas_thread():
        for i in range(b):
            a = np.ascontiguousarray(jn[i])
            values[i], z = _eigh_top(_sample_gram(a), k, lambda: a.T @ a if n < d else a @ a.T)
            vectors[i] = z.T
    return torch.from_numpy(values).clamp_min(0), torch.from_numpy(vectors)


def _top_one(a: np.ndarray, gram: np.ndarray | None, level: int) -> tuple[float, np.ndarray]:
    """:func:`_top_and_level` for one sample's Jacobian ``a`` (d, n), C order: ``sigma_max`` and the unit
    right-singular vector at ``level`` (zero below the numerical-rank cut-off). ``gram`` is the upper triangle
    of its smaller Gram matrix when already formed (overwritten), else ``None``."""
    d, n = a.shape
    if gram is None:
        gram = _sample_gram(a)
    w, z = _eigh_top(gram, level + 1, lambda: a.T @ a if n < d else a @ a.T)
    lam_max = max(float(w[0]), 0.0)
    if n < d:
        v = np.ascontiguousarray(z[:, level])
        sigma = float(np.linalg.norm(a @ v))
        scale = 1.0
    else:
        v = z[:, level] @ a
        sigma = float(np.linalg.norm(v))
        scale = 1.0 / max(sigma, 1e-300)
    if not sigma > rank_cutoff(d, n, np.sqrt(lam_max)):
        scale = 0.0
    return float(np.sqrt(lam_max)), v * scale


def _both_models_lapack(j_s: torch.Tensor, j_t: torch.Tensor, level: int, moments: "_Moments") -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """Both models on one chunk, one sample at a time while its two Jacobians are in cache (``min(n, d)`` of
    both at least :data:`LAPACK_FROM`): ``sigma_max`` ``(B,)`` of each, the four deviations ``(B, d)``
    (``J_S v_S``, ``J_T v_S``, ``J_T v_T``, ``J_S v_T``), and the gradient-matching moments added to ``moments``.

    Per sample the Jacobians are stacked, ``[J_S; J_T]``, and one ``dsyrk`` forms their joint Gram matrix: its
    diagonal blocks ``J_S J_S^T`` and ``J_T J_T^T`` are the Gram matrices whose top eigenpairs give the attack
    directions when ``d <= n``, and the whole is the sample's share of the moments. When an output side exceeds
    ``n``, each model's ``n x n`` Gram matrix is formed on its own and the joint one is added straight into the
    moments (``dsyrk`` with ``beta = 1``). One product ``[J_S; J_T] [v_S, v_T]`` then gives the deviations.
    """
    from scipy.linalg import blas

    a_s, a_t = j_s.numpy(), j_t.numpy()
    b, ds, n = a_s.shape
    dt = a_t.shape[1]
    joint_grams = max(ds, dt) <= n
    stacked = np.empty((ds + dt, n))
    sigma = np.empty((2, b))
    dev = np.empty((b, ds + dt, 2))
    with _one_blas_thread():
        for i in range(b):
            stacked[:ds], stacked[ds:] = a_s[i], a_t[i]
            if joint_grams:
                joint = blas.dsyrk(1.0, stacked.T, trans=1)  # upper triangle of [J_S; J_T] [J_S; J_T]^T
                moments.upper += joint
                gram_s, gram_t = joint[:ds, :ds].copy(order="F"), joint[ds:, ds:].copy(order="F")
            else:
                moments.upper = blas.dsyrk(1.0, stacked.T, beta=1.0, c=moments.upper, trans=1, overwrite_c=1)
                gram_s = gram_t = None
            sigma[0, i], v_s = _top_one(stacked[:ds], gram_s, level)
            sigma[1, i], v_t = _top_one(stacked[ds:], gram_t, level)
            dev[i] = stacked @ np.stack([v_s, v_t], axis=1)
    devs = {"s2s": dev[:, :ds, 0], "t2s": dev[:, :ds, 1], "s2t": dev[:, ds:, 0], "t2t": dev[:, ds:, 1]}
    return sigma[0], sigma[1], devs


def _both_models_small(j_s: torch.Tensor, j_t: torch.Tensor, moments: "_Moments") -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
    """Both models on one chunk at level 0 when each has fewer outputs than :data:`LAPACK_FROM` and at most as
    many as inputs: ``sigma_max`` ``(B,)`` of each, the four deviations ``(B, d)`` and the
    chunk's gradient-matching moments, all from three batched products ``J_S J_S^T``, ``J_T J_T^T`` and
    ``J_T J_S^T``: the Jacobians are read by these three products only.

    The top eigenvector ``u`` of ``J J^T`` gives ``v = J^T u / sigma`` with ``sigma = ||J^T u||``, so every
    deviation is a Gram matrix times ``u``: ``J_S v_S = (J_S J_S^T) u_S / sigma_S``,
    ``J_T v_S = (J_T J_S^T) u_S / sigma_S``, and the same for ``v_T``. Formed so, a deviation carries the
    rounding it carries when formed from ``v`` (``eps`` times the deviating model's ``sigma_max``) because
    ``sigma`` is the largest singular value; below the top it would be divided by a smaller one, so other levels
    take :func:`_top_and_level`.
    """
    n = j_s.shape[2]
    g_ss = j_s @ j_s.transpose(1, 2)
    g_tt = j_t @ j_t.transpose(1, 2)
    g_ts = j_t @ j_s.transpose(1, 2)  # J_T J_S^T
    moments.add_blocks(g_ss.sum(0), g_ts.sum(0), g_tt.sum(0))
    out: dict[str, torch.Tensor] = {}
    tops = []
    for own, cross, own_key, cross_key in ((g_ss, g_ts, "s2s", "s2t"), (g_tt, g_ts.transpose(1, 2), "t2t", "t2s")):
        lam, u = _eigenvector(own, 0)
        img = own @ u.unsqueeze(2)  # J J^T u
        sigma = (u * img[:, :, 0]).sum(1).clamp_min(0).sqrt()  # ||J^T u||
        d = own.shape[1]
        ok = sigma > rank_cutoff(d, n, lam.sqrt())
        scale = torch.where(ok, 1.0 / sigma.clamp_min(1e-300), torch.zeros_like(sigma)).unsqueeze(1)
        out[own_key] = img[:, :, 0] * scale
        out[cross_key] = (cross @ u.unsqueeze(2))[:, :, 0] * scale
        tops.append(lam.sqrt())
    return tops[0], tops[1], out


def _svd(j: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Top ``k`` singular values ``(B, k)`` and right-singular vectors ``(B, k, n)`` of ``j`` (B, d, n).

    Through the eigendecomposition of the smaller Gram matrix: a batch of tiny symmetric eigenproblems is
    several times cheaper than a batched SVD (from :data:`LAPACK_FROM` up, LAPACK computes only the ``k``
    wanted eigenpairs of each). When d <= n the left vectors ``u_i`` come from ``J J^T`` and
    ``sigma_i = ||J^T u_i||``, ``v_i = J^T u_i / sigma_i`` (taking the norm of ``J^T u_i`` rather than the
    square root of the eigenvalue keeps tiny singular values tiny instead of ``sqrt(rounding)``). Singular
    values below the numerical-rank cut-off ``max(d, n) * eps * sigma_max`` are returned as 0 with a zero
    vector (such samples are degenerate at that level and excluded by the metrics).
    """
    d, n = j.shape[1], j.shape[2]
    if min(d, n) >= LAPACK_FROM:
        _, vecs = _gram_eigenpairs_lapack(j, k)  # (B, k, m)
    else:
        _, vecs = torch.linalg.eigh(j.transpose(1, 2) @ j if n < d else j @ j.transpose(1, 2))
        vecs = vecs.flip(2)[:, :, :k].transpose(1, 2)  # (B, k, m), unit rows
    if n < d:
        v = vecs
        sigma = (j @ v.transpose(1, 2)).norm(dim=1)
        scale = torch.ones_like(sigma)
    else:
        v = (j.transpose(1, 2) @ vecs.transpose(1, 2)).transpose(1, 2)  # (B, k, n), rows have norm sigma_i
        sigma = v.norm(dim=2)
        scale = 1.0 / sigma.clamp_min(1e-300)
    # Below the numerical rank cut-off (as in pinv) a direction is rounding noise; it is returned as 0
    # (with sigma 0) rather than as a fake unit vector.
    rank_ok = sigma > rank_cutoff(d, n, sigma[:, :1])
    scale = torch.where(rank_ok, scale, torch.zeros_like(scale))
    return torch.where(rank_ok, sigma, torch.zeros_like(sigma)), v * scale.unsqueeze(2)


def _eigenvector(gram: torch.Tensor, level: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Largest eigenvalue ``(B,)`` (clamped at 0) and a unit eigenvector ``(B, m)`` of the eigenvalue ``level``
    places below the top, for a batch of symmetric positive semi-definite ``gram`` (B, m, m): see
    :func:`transferlens._eigen.eigenpairs`."""
    lam, vecs = eigenpairs(gram, (level,))
    return lam[:, 0].clamp_min(0), vecs[:, :, 0]


def _top_and_level(j: torch.Tensor, level: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``sigma_max`` ``(B,)`` and the unit right-singular vector at ``level`` ``(B, n)`` of ``j`` (B, d, n), zero
    below the numerical-rank cut-off ``max(d, n) * eps * sigma_max``.

    From the smaller Gram matrix: ``J J^T`` (d x d) when ``d <= n``, whose eigenvector ``u`` gives
    ``v = J^T u / ||J^T u||``; ``J^T J`` (n x n) when ``n < d``, whose eigenvector is ``v`` itself. From
    :data:`LAPACK_FROM` up, LAPACK sample by sample (:func:`_top_one`), else a torch batch.
    """
    d, n = j.shape[1], j.shape[2]
    if min(d, n) >= LAPACK_FROM:
        jn = j.numpy()
        sig, vecs = np.empty(len(jn)), np.empty((len(jn), n))
        with _one_blas_thread():
            for i in range(len(jn)):
                sig[i], vecs[i] = _top_one(np.ascontiguousarray(jn[i]), None, level)
        return torch.from_numpy(sig), torch.from_numpy(vecs)
    lam_max, u = _eigenvector(j.transpose(1, 2) @ j if n < d else j @ j.transpose(1, 2), level)
    if n < d:
        v = u
        sigma = torch.einsum("bdn,bn->bd", j, v).norm(dim=1)
        scale = torch.ones_like(sigma)
    else:
        v = torch.einsum("bdn,bd->bn", j, u)
        sigma = v.norm(dim=1)
        scale = 1.0 / sigma.clamp_min(1e-300)
    rank_ok = sigma > rank_cutoff(d, n, lam_max.sqrt())
    scale = torch.where(rank_ok, scale, torch.zeros_like(scale))
    return lam_max.sqrt(), v * scale.unsqueeze(1)


def singular_directions(
    model: nn.Module,
    x: torch.Tensor,
    k: int = 1,
    *,
    output: str = "logits",
    chunk_size: int | None = None,
    memory_budget: int = MEMORY_BUDGET,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-``k`` singular values ``(N, k)`` and right-singular vectors ``(N, k, n)`` of each sample's Jacobian.

    The sign of each vector is arbitrary (as for any SVD); no metric here depends on it. ``chunk_size`` caps
    the samples per chunk; ``memory_budget`` (bytes) bounds a chunk's working memory.
    """
    k = check_int(k, "k", 1)
    x, _, chunk_size, memory_budget = _validate(model, None, x, k - 1, chunk_size, memory_budget)
    n = int(np.prod(x.shape[1:]))
    m = _prepare(model, x, "model", output)
    _check_level(k - 1, n, m.d, "model")
    values = torch.empty(len(x), k, dtype=torch.float64)
    vectors = torch.empty(len(x), k, n, dtype=torch.float64)
    for rows, _, j in _chunks(m, x, output, _chunk_rows(len(x), n, (m,), chunk_size, memory_budget)):
        values[rows], vectors[rows] = _svd(j, k)
        del j
    return values, vectors


def exact_attack(
    model: nn.Module,
    x: torch.Tensor,
    eps: float,
    *,
    level: int = 0,
    output: str = "logits",
    chunk_size: int | None = None,
    memory_budget: int = MEMORY_BUDGET,
) -> torch.Tensor:
    """The theory's attack: ``delta = eps * v_level(x)`` (shape of ``x``), the l2 step along a right-singular vector."""
    eps = check_positive(eps, "eps")
    level = check_int(level, "level", 0)
    x = validate_inputs(x)
    _, v = singular_directions(model, x, level + 1, output=output, chunk_size=chunk_size, memory_budget=memory_budget)
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
    # method="krylov": the most Krylov blocks any chunk built, and the samples computed from full Jacobians
    # because they had not converged
    diagnostics: dict[str, Any] = field(default_factory=dict)

    def __getitem__(self, key: str) -> float:
        metric, _, direction = key.rpartition("_")
        if direction in DIRECTIONS and metric in ("alpha1", "alpha2", "combined"):
            return float(getattr(getattr(self, direction), metric))
        if direction in DIRECTIONS and metric in ("grad_match", "func_match"):
            table = self.gradient_matching if metric == "grad_match" else self.function_matching
            if direction not in table:
                raise KeyError(f"{key!r}: gradient matching needs the full Jacobians, use method='jacobian'")
            return table[direction].distance
        raise KeyError(f"{key!r}; use METRIC_DIRECTION with METRIC in alpha1/alpha2/combined/grad_match/func_match")

    def metrics(self) -> dict[str, float]:
        """Every metric as ``METRIC_DIRECTION`` (``grad_match`` only when it was computed)."""
        names = ("alpha1", "alpha2", "combined", "grad_match", "func_match")
        return {
            f"{m}_{d}": self[f"{m}_{d}"] for d in DIRECTIONS for m in names if m != "grad_match" or self.gradient_matching
        }

    def to_dict(self, samples: bool = False) -> dict[str, Any]:
        return {
            "metrics": self.metrics(),
            "s2t": self.s2t.to_dict(samples),
            "t2s": self.t2s.to_dict(samples),
            "gradient_matching": {k: v.to_dict() for k, v in self.gradient_matching.items()},
            "function_matching": {k: v.to_dict() for k, v in self.function_matching.items()},
            "n": self.n,
            "options": self.options,
            **({"diagnostics": self.diagnostics} if self.diagnostics else {}),
        }


class _Moments:
    """Streaming sum of the joint Gram matrix of both models' Jacobians, ``sum [J_S; J_T] [J_S; J_T]^T``
    (``d_S + d_T`` square; upper triangle), whose blocks are ``sum J_S J_S^T``, ``sum J_T J_S^T`` and
    ``sum J_T J_T^T``: everything the optimal affine maps between the Jacobians need, from one symmetric
    rank-k update per chunk (``dsyrk``: half the work of the three matrix products it replaces)."""

    def __init__(self, d_s: int, d_t: int) -> None:
        self.d_s = d_s
        self.upper = np.zeros((d_s + d_t, d_s + d_t), order="F")  # Fortran order: BLAS can add into it in place

    def add(self, j_s: torch.Tensor, j_t: torch.Tensor, side: torch.Tensor | None = None) -> None:
        """Add one chunk, Jacobians ``(B, d_S, n)`` and ``(B, d_T, n)``; ``side`` is the contiguous
        ``(d_S + d_T, B, n)`` buffer they are views of, when they are (else they are copied into one)."""
        from scipy.linalg import blas

        b, d_s, n = j_s.shape
        if side is None:
            side = torch.empty(d_s + j_t.shape[1], b, n, dtype=torch.float64)  # [J_S; J_T], samples side by side
            side[:d_s].copy_(j_s.transpose(0, 1))
            side[d_s:].copy_(j_t.transpose(0, 1))
        # side.T is Fortran-ordered for BLAS (no copy); trans=1 gives side side^T
        self.upper += blas.dsyrk(1.0, side.reshape(len(side), b * n).numpy().T, trans=1)

    def add_blocks(self, ss: torch.Tensor, ts: torch.Tensor, tt: torch.Tensor) -> None:
        """Add one chunk given its sums ``sum J_S J_S^T``, ``sum J_T J_S^T`` and ``sum J_T J_T^T``."""
        ds = self.d_s
        self.upper[:ds, :ds] += ss.numpy()
        self.upper[:ds, ds:] += ts.numpy().T
        self.upper[ds:, ds:] += tt.numpy()

    def distances(self, n: int) -> dict[str, MatchingDistance]:
        full = torch.from_numpy(np.triu(self.upper) + np.triu(self.upper, 1).T)
        ds = self.d_s
        gram_s, gram_t, cross = full[:ds, :ds], full[ds:, ds:], full[ds:, :ds]  # cross = sum J_T J_S^T
        return {"s2t": _affine_distance(cross, gram_s, gram_t, n, "s2t"), "t2s": _affine_distance(cross.T, gram_t, gram_s, n, "t2s")}


def _affine_distance(ba: torch.Tensor, aa: torch.Tensor, bb: torch.Tensor, n: int, direction: str) -> MatchingDistance:
    """``sqrt(E ||J_b - A* J_a||_F^2)`` with ``A* = E[J_b J_a^T] (E[J_a J_a^T])^+``, from the summed moments
    ``ba = sum J_b J_a^T``, ``aa = sum J_a J_a^T``, ``bb = sum J_b J_b^T`` over ``n`` samples."""
    a_star = ba @ torch.linalg.pinv(aa, hermitian=True)
    sq_b = float(torch.trace(bb))
    # E||J_b - A J_a||^2 = E||J_b||^2 - 2 tr(A E[J_a J_b^T]) + tr(A E[J_a J_a^T] A^T)
    sq = sq_b - 2 * float(torch.trace(a_star @ ba.T)) + float(torch.trace(a_star @ aa @ a_star.T))
    sq = max(sq, 0.0) / n
    scale = sq_b / n
    return MatchingDistance(direction, float(np.sqrt(sq)), float(np.sqrt(sq / scale)) if scale > 0 else 0.0)


def _function_matching(fa: torch.Tensor, fb: torch.Tensor, direction: str) -> MatchingDistance:
    """Least squares ``fb ~ A fa + b`` on all samples; RMS residual norm.

    The columns of ``fa`` are centred and scaled to unit RMS first, which leaves the residual unchanged and
    keeps the rank cut-off of the solver from mistaking the intercept's column for noise beside outputs of a
    very different scale (outputs 1e20 times larger once moved the distance by 1.2%). Before that, each column
    of ``fa``, and ``fb`` as a whole, is scaled by a power of two to a largest magnitude in [0.5, 1): exact, so
    a column made of a large offset and a small variation keeps its variation to the last bit, and outputs up
    to float64's range do not overflow when squared. A column whose values differ by at most 8 eps of its size
    is constant up to rounding and is left to the intercept (scaled up, it would fit noise)."""
    eps = torch.finfo(fa.dtype).eps
    na = torch.ldexp(fa, -torch.frexp(fa.abs().amax(0))[1])
    keep = na.amax(0) - na.amin(0) > 8 * eps
    centred_a = (na - na.mean(0))[:, keep]
    unit = centred_a / centred_a.abs().amax(0)
    unit = unit / unit.pow(2).mean(0).sqrt()
    design = torch.cat([unit, torch.ones(len(fa), 1, dtype=fa.dtype)], dim=1)
    power = int(torch.frexp(fb.abs().amax())[1]) if fb.numel() else 0
    nb = torch.ldexp(fb, torch.tensor(-power))
    centred = nb - nb.mean(0)  # the intercept would absorb the mean; removing it first keeps the solve small
    coef = torch.linalg.lstsq(design, centred, driver="gelsd").solution
    resid = centred - design @ coef
    sq = float((resid * resid).sum(1).mean())
    scale = float((centred * centred).sum(1).mean())
    with np.errstate(over="ignore"):  # a distance beyond float64's range is inf
        distance = float(np.ldexp(np.sqrt(sq), power))
    return MatchingDistance(direction, distance, float(np.sqrt(sq / scale)) if scale > 0 else 0.0)


def exact_transferability(
    source: nn.Module,
    target: nn.Module,
    x: torch.Tensor,
    *,
    level: int = 0,
    output: str = "logits",
    squared: bool = False,
    tol: float = 1e-10,
    chunk_size: int | None = None,
    memory_budget: int = MEMORY_BUDGET,
    method: str = "jacobian",
    krylov_tol: float = 1e-10,
    krylov_steps: int = 30,
) -> ExactTransferability:
    """Exact alpha metrics both ways, plus gradient- and function-matching distances, on inputs ``x``.

    ``level`` picks the singular vector used as the attack direction for both models (0 = largest); alpha1
    always divides by the other model's largest singular value. Samples whose singular value at ``level``
    (of the attacked model) or whose largest singular value (of the other) is ``<= tol`` are excluded and
    counted.
    ``squared`` reports alpha2 and combined as squared Frobenius norms (as the ``paper`` preset does).
    ``memory_budget`` (bytes, default :data:`MEMORY_BUDGET`) bounds the working memory of a chunk of samples;
    ``chunk_size`` caps the samples per chunk. Neither changes the results beyond rounding.

    ``method="krylov"`` never forms the Jacobians: each sample's singular vectors come from block Krylov
    steps over Jacobian-vector products (:mod:`transferlens.krylov`), accepted at a relative residual of
    ``krylov_tol`` (at least 100 x the models' machine epsilon; float32 or float64 models) within
    ``krylov_steps`` blocks; samples that have not converged by then are computed from their Jacobians
    (counted in ``diagnostics``). It pays off when ``min(n, d)`` is large (hundreds and up); gradient matching
    needs the full Jacobians and is left out (``metrics()`` has no ``grad_match``). Each sample starts from a
    block drawn from its index in ``x`` and stops when it has converged, so chunking changes nothing beyond
    rounding there either.
    """
    check_model(target, "target")
    x, level, chunk_size, memory_budget = _validate(source, target, x, level, chunk_size, memory_budget)
    tol = check_positive(tol, "tol")
    squared = check_flag(squared, "squared")
    check_choice(method, "method", METHODS)
    krylov_tol = check_positive(krylov_tol, "krylov_tol")
    krylov_steps = check_int(krylov_steps, "krylov_steps", 1)
    n_in = int(np.prod(x.shape[1:]))
    if method == "krylov":
        return _exact_krylov(source, target, x, level, output, squared, tol, chunk_size, memory_budget, krylov_tol, krylov_steps)
    # The outer context restores both models even when source is target.
    with frozen_eval(source, target):
        ms, mt = _prepare(source, x, "source", output), _prepare(target, x, "target", output)
        _check_level(level, n_in, ms.d, "source")
        _check_level(level, n_in, mt.d, "target")
        rows = _chunk_rows(len(x), n_in, (ms, mt), chunk_size, memory_budget)
        dev = {k: torch.empty(len(x), mt.d if k[-1] == "t" else ms.d, dtype=torch.float64) for k in ("s2s", "s2t", "t2t", "t2s")}
        top = {"s": torch.empty(len(x), dtype=torch.float64), "t": torch.empty(len(x), dtype=torch.float64)}
        f_s = torch.empty(len(x), ms.d, dtype=torch.float64)
        f_t = torch.empty(len(x), mt.d, dtype=torch.float64)
        moments = _Moments(ms.d, mt.d)
        per_sample = min(n_in, ms.d, mt.d) >= LAPACK_FROM
        small_joint = level == 0 and max(ms.d, mt.d) <= n_in and max(ms.d, mt.d) < LAPACK_FROM
        for i in range(0, len(x), rows):
            xb = x[i : i + rows]
            r = slice(i, i + len(xb))
            # both batch passes write into one [J_S; J_T] buffer, (d_S + d_T, B, n): the moments' layout
            # (the sample-by-sample path takes each sample's rows from wherever they are)
            both = ms.by_batch and mt.by_batch and not per_sample and not small_joint
            side = torch.empty(ms.d + mt.d, len(xb), n_in, dtype=torch.float64) if both else None
            f_s[r], j_s = _jacobian_chunk(ms, xb, output, i, None if side is None else side[: ms.d])
            f_t[r], j_t = _jacobian_chunk(mt, xb, output, i, None if side is None else side[ms.d :])
            # alpha1's denominator is the other model's worst case, sigma_max, whatever the attack's level.
            if per_sample:
                sig_s, sig_t, devs = _both_models_lapack(j_s, j_t, level, moments)
                for k, v in devs.items():
                    dev[k][r] = torch.from_numpy(v)
            elif small_joint:
                sig_s, sig_t, devs = _both_models_small(j_s, j_t, moments)
                for k, v in devs.items():
                    dev[k][r] = v
            else:
                sig_s, v_s = _top_and_level(j_s, level)
                sig_t, v_t = _top_and_level(j_t, level)
                dev["s2s"][r] = torch.einsum("bdn,bn->bd", j_s, v_s)
                dev["s2t"][r] = torch.einsum("bdn,bn->bd", j_t, v_s)
                dev["t2t"][r] = torch.einsum("bdn,bn->bd", j_t, v_t)
                dev["t2s"][r] = torch.einsum("bdn,bn->bd", j_s, v_t)
                moments.add(j_s, j_t, side)
            top["s"][r], top["t"][r] = torch.as_tensor(sig_s), torch.as_tensor(sig_t)
            del j_s, j_t, side
    d = {k: v.numpy() for k, v in dev.items()}
    keep = np.ones(len(x), dtype=bool)
    tops = {k: v.numpy()[:, None] for k, v in top.items()}  # norms of the top deviations
    s2t = direction_metrics("s2t", d["s2s"], d["s2t"], tops["t"], keep, tol, squared, None)
    t2s = direction_metrics("t2s", d["t2t"], d["t2s"], tops["s"], keep, tol, squared, None)
    return ExactTransferability(
        s2t=s2t,
        t2s=t2s,
        gradient_matching=moments.distances(len(x)),
        function_matching={"s2t": _function_matching(f_s, f_t, "s2t"), "t2s": _function_matching(f_t, f_s, "t2s")},
        n=len(x),
        options={
            "level": level,
            "output": output,
            "squared": squared,
            "tol": tol,
            "chunk_size": chunk_size,
            "memory_budget": memory_budget,
            "attack": "exact",
            "method": "jacobian",
        },
    )


def _krylov_bytes_per_sample(n: int, models: tuple[_Model, ...], block: int, steps: int) -> int:
    """Estimated working memory per sample with ``method="krylov"``: each model's subspace (its vectors, their
    images ``J K`` and ``A K``, the projected Gram matrix), plus the largest pass in flight (``block`` tangents
    or cotangents through every activation, in the model's dtype)."""
    kept = 0
    for m in models:
        width = min(n, min(n, m.d) + block, block * steps)
        kept += _F64 * width * (2 * n + m.d + width)
    elem = [torch.finfo(m.dtype).bits // 8 for m in models]
    in_flight = max(block * (m.act + m.d + n) * e for m, e in zip(models, elem))
    return kept + in_flight


def _krylov_side(m: _Model, xb: torch.Tensor, output: str, level: int, tol: float, steps: int, start: int, budget: int):
    """One model on one chunk: outputs (B, d), the Jacobian-vector product, and ``sigma_max`` (B,), the unit
    vector at ``level`` (B, n) and its image ``J v`` (B, d); samples the Krylov steps left unconverged are
    computed from their Jacobians (in chunks that keep to ``budget``). Returns them with the steps taken and
    the count of such samples."""
    from .krylov import sample_operators, top_pairs

    n = int(np.prod(xb.shape[1:]))
    eps = torch.finfo(m.dtype).eps  # the products are computed in the model's dtype
    jv, jtv, outputs = sample_operators(m.model, xb, output, m.dtype, m.device)
    overflow = (
        f"{m.name} has NaN/Inf in its outputs or Jacobian products (overflow?) on inputs {start}..{start + len(xb) - 1}; "
        "rescale the inputs or use a float64 model"
    )
    try:
        out = outputs()
        if not bool(torch.isfinite(out).all()):
            raise ValueError(overflow)
        # each sample's start block is drawn from its index in x, so that chunking does not change it
        block = max(4, level + 2)
        starts = torch.stack([
            torch.randn(block, n, generator=torch.Generator().manual_seed(start + i), dtype=torch.float64) for i in range(len(xb))
        ])
        pairs = top_pairs(
            jv, jtv, len(xb), n, m.d, level=level, block=block, max_steps=steps, tol=max(tol, 100 * eps),
            noise=max(1e-10, 100 * eps), starts=starts,
        )
    except FloatingPointError:
        raise ValueError(overflow) from None
    except RuntimeError as exc:
        raise ValueError(
            f"{m.name}: could not differentiate the model's output with torch.func ({exc}). Exact metrics "
            "need a differentiable model made of standard torch operations"
        ) from exc
    sig, vec, image = pairs.sigma_max.clone(), pairs.vector.clone(), pairs.image.clone()
    bad = torch.nonzero(~pairs.converged).flatten()
    rows = _chunk_rows(max(len(bad), 1), n, (m,), None, budget)
    for i in range(0, len(bad), rows):
        idx = bad[i : i + rows]
        _, j = _jacobian_chunk(m, xb[idx], output, start)
        s_bad, v_bad = _top_and_level(j, level)
        sig[idx], vec[idx], image[idx] = s_bad, v_bad, torch.einsum("bdn,bn->bd", j, v_bad)
        del j
    return out, jv, sig, vec, image, pairs.steps, len(bad)


def _exact_krylov(
    source: nn.Module, target: nn.Module, x: torch.Tensor, level: int, output: str, squared: bool, tol: float,
    chunk_size: int | None, memory_budget: int, krylov_tol: float, krylov_steps: int,
) -> ExactTransferability:
    """:func:`exact_transferability` with ``method="krylov"`` (inputs already checked)."""
    n_in = int(np.prod(x.shape[1:]))
    block = max(4, level + 2)
    with frozen_eval(source, target):
        # no batch-pass check: Krylov forms Jacobians only for the samples it leaves unconverged, one at a time
        ms, mt = _prepare(source, x, "source", output, False), _prepare(target, x, "target", output, False)
        _check_level(level, n_in, ms.d, "source")
        _check_level(level, n_in, mt.d, "target")
        for m in (ms, mt):
            if torch.finfo(m.dtype).eps > 1e-6:
                raise ValueError(
                    f"method='krylov' needs float32 or float64 models: the {m.name} computes in {m.dtype}, whose "
                    "rounding is too coarse for the Krylov residual test; use method='jacobian' or convert the model"
                )
        rows = max(1, memory_budget // max(1, _krylov_bytes_per_sample(n_in, (ms, mt), block, krylov_steps)))
        rows = min(rows, chunk_size or len(x), len(x))
        dev = {k: torch.empty(len(x), mt.d if k[-1] == "t" else ms.d, dtype=torch.float64) for k in ("s2s", "s2t", "t2t", "t2s")}
        top = {"s": torch.empty(len(x), dtype=torch.float64), "t": torch.empty(len(x), dtype=torch.float64)}
        f_s = torch.empty(len(x), ms.d, dtype=torch.float64)
        f_t = torch.empty(len(x), mt.d, dtype=torch.float64)
        most_steps, fallback = 0, 0
        for i in range(0, len(x), rows):
            xb = x[i : i + rows]
            r = slice(i, i + len(xb))
            f_s[r], jv_s, top["s"][r], v_s, dev["s2s"][r], steps_s, bad_s = _krylov_side(ms, xb, output, level, krylov_tol, krylov_steps, i, memory_budget)
            f_t[r], jv_t, top["t"][r], v_t, dev["t2t"][r], steps_t, bad_t = _krylov_side(mt, xb, output, level, krylov_tol, krylov_steps, i, memory_budget)
            dev["s2t"][r] = jv_t(v_s.unsqueeze(2)).squeeze(2)
            dev["t2s"][r] = jv_s(v_t.unsqueeze(2)).squeeze(2)
            most_steps, fallback = max(most_steps, steps_s, steps_t), fallback + bad_s + bad_t
    d = {k: v.numpy() for k, v in dev.items()}
    keep = np.ones(len(x), dtype=bool)
    tops = {k: v.numpy()[:, None] for k, v in top.items()}
    return ExactTransferability(
        s2t=direction_metrics("s2t", d["s2s"], d["s2t"], tops["t"], keep, tol, squared, None),
        t2s=direction_metrics("t2s", d["t2t"], d["t2s"], tops["s"], keep, tol, squared, None),
        gradient_matching={},
        function_matching={"s2t": _function_matching(f_s, f_t, "s2t"), "t2s": _function_matching(f_t, f_s, "t2s")},
        n=len(x),
        options={
            "level": level, "output": output, "squared": squared, "tol": tol, "chunk_size": chunk_size,
            "memory_budget": memory_budget, "attack": "exact", "method": "krylov", "krylov_tol": krylov_tol,
            "krylov_steps": krylov_steps,
        },
        diagnostics={"krylov_blocks_max": most_steps, "krylov_block_size": block, "samples_from_jacobians": fallback},
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
