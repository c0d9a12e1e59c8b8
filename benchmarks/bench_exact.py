"""Benchmark the exact (Jacobian) metrics (``transferlens.exact.exact_transferability``).

Targets (README, "Benchmarks"), 2-core CPU, float64 sigmoid MLPs (one hidden layer of width 100):

* exact_batched_vs_per_sample_loop (E1 sizes: N=5000 inputs in R^50, 10 outputs): the batched call is >= 50x
  faster than the textbook per-sample loop (``torch.autograd.functional.jacobian`` and ``torch.linalg.svd``
  per sample and model, then alpha1, the u/v vectors, the alpha2 / combined matrices and the
  gradient-matching moments accumulated in Python), takes < 5 s, and gives the same metrics (max abs diff
  over alpha1 / alpha2 / combined and grad_match, both directions, < 1e-8). The loop runs on the first
  ``LOOP_SUBSET`` samples and its time is extrapolated linearly to N (``--full-loop`` also runs it on all N
  once and reports how far the extrapolation was off); values are compared on that subset.
* exact_peak_memory (n=200 inputs, d=400 outputs): the peak resident memory of a process that computes the
  metrics on N=4000 samples is at most 1.2x that of N=1000 (each measured in a fresh subprocess: its VmHWM,
  the kernel's high-water mark of resident memory; ru_maxrss where /proc is missing).
* exact_new_vs_previous_<shape> (d >= 100): the current implementation against a faithful copy of the
  previous algorithm kept below (chunks of 1024 samples whatever their size, per-sample d x d Gram matrices
  even when n < d, a full eigendecomposition there, a batched LU solve per inverse-iteration step when
  d <= n): >= 3x faster, metrics equal to 1e-8 (relative).

* exact_krylov_vs_jacobian_<shape> (min(n, d) >= 500): ``method="krylov"`` (block Krylov over Jacobian-vector
  products, no Jacobians formed) against the default ``method="jacobian"``: >= 2x faster, alpha metrics and
  alpha1 samples equal to 1e-8 (relative). A smaller shape (n=300, d=120) is reported without a target: there
  the Jacobian needs fewer model passes than the Krylov steps do.

Timing (``--threads``, default 1): every comparison alternates its arms (a b a b ...) ``REPEATS`` times and
reports the minimum and the median of each arm and both ratios (``ratio`` is the ratio of the minima). The
benchmark runs torch and the BLAS of numpy and SciPy with one thread by default: on the shared 2-core machine a second thread per arm makes
the ratios depend on what else runs (a descheduled worker thread stalls every parallel region), while with one
thread a busy core slows both arms alike. ``other_load_cores`` is the CPU that other processes used over each
benchmark's window (/proc/stat); above 0.25 a warning is printed.

Run: ``.venv/bin/python benchmarks/bench_exact.py``. The last lines are one JSON object per benchmark.
Exit code is 0 even when a target is missed (this is a measurement); look for "MISSED TARGET".
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

from _common import LoadWindow, alternate, emit, fmt_times, min_median, note, pin_threads, record, say, tune_malloc  # noqa: E402
from transferlens.alpha import direction_metrics  # noqa: E402
from transferlens.attacks import model_output  # noqa: E402
from transferlens.exact import MEMORY_BUDGET, exact_transferability  # noqa: E402

REPEATS = 3
WIDTH = 100
PERTURB = 0.3  # source = target + PERTURB * U(-0.5, 0.5), per parameter entry
TOL = 1e-10  # exact_transferability's default tol (degenerate-sample cut-off)

# [E] E1 sizes, against the per-sample loop
N_E1, N_IN_E1, N_OUT_E1 = 5000, 50, 10
LOOP_SUBSET = 500
TARGET_SPEEDUP = 50.0
TARGET_ABS_S = 5.0
TOL_EQUAL = 1e-8
ALPHA_KEYS = [f"{m}_{d}" for d in ("s2t", "t2s") for m in ("alpha1", "alpha2", "combined", "grad_match")]

# [M] peak memory
MEM_N_IN, MEM_N_OUT = 200, 400
MEM_SIZES = (1000, 4000)
TARGET_MEM_RATIO = 1.2

# [S] against the previous algorithm: (n inputs, d outputs, N samples). d stays below 130 where d <= n: there
# the previous algorithm's batched LU solve hangs or returns garbage with several threads from d = 150 or so
# (pytorch/pytorch#142815; 140 works), which --threads 2 would hit.
SPEED_SHAPES = ((200, 400, 200), (300, 120, 200), (100, 100, 400))
TARGET_VS_PREVIOUS = 3.0
TOL_REL = 1e-8

# [K] method="krylov" against method="jacobian": (n inputs, d outputs, N samples, with a target)
KRYLOV_SHAPES = ((784, 512, 40, True), (1000, 1000, 40, True), (300, 120, 200, False))
TARGET_KRYLOV = 2.0
ALPHA_ONLY = [f"{m}_{d}" for d in ("s2t", "t2s") for m in ("alpha1", "alpha2", "combined")]


def build_pair(n_in: int, n_out: int, n: int, seed: int = 0) -> tuple[nn.Module, nn.Module, torch.Tensor]:
    torch.manual_seed(seed)
    target = nn.Sequential(nn.Linear(n_in, WIDTH), nn.Sigmoid(), nn.Linear(WIDTH, n_out)).double()
    source = nn.Sequential(nn.Linear(n_in, WIDTH), nn.Sigmoid(), nn.Linear(WIDTH, n_out)).double()
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for ps, pt in zip(source.parameters(), target.parameters()):
            noise = torch.rand(pt.shape, generator=g, dtype=torch.float64) - 0.5
            ps.copy_(pt + PERTURB * noise)
    for m in (source, target):
        m.eval()
        for p in m.parameters():
            p.requires_grad_(False)
    x = torch.randn(n, n_in, generator=torch.Generator().manual_seed(seed + 2), dtype=torch.float64)
    return source, target, x


# ---------------------------------------------------------------------------------------------------------
# [E] the textbook per-sample loop
# ---------------------------------------------------------------------------------------------------------


class _Direction:
    """Per-sample accumulators of one direction (attack crafted on ``a``, measured on ``b``)."""

    def __init__(self, d: int) -> None:
        self.a1_sum = 0.0
        self.m = torch.zeros(d, d, dtype=torch.float64)  # sum of u v^T
        self.w = torch.zeros(d, d, dtype=torch.float64)  # sum of alpha1 u v^T
        self.n_used = 0

    def add(self, j_a, j_b, v_a, sigma_b_max) -> None:
        dev_aa = j_a @ v_a  # Delta_{a->a}
        dev_ab = j_b @ v_a  # Delta_{a->b}
        n_aa, n_ab = float(torch.linalg.vector_norm(dev_aa)), float(torch.linalg.vector_norm(dev_ab))
        if n_aa <= TOL or sigma_b_max <= TOL:  # degenerate sample, excluded (as the library does)
            return
        a1 = n_ab / sigma_b_max
        u = dev_aa / n_aa
        v = dev_ab / n_ab if n_ab > 0 else torch.zeros_like(dev_ab)
        uv = torch.outer(u, v)
        self.a1_sum += a1
        self.m += uv
        self.w += a1 * uv
        self.n_used += 1

    def metrics(self) -> dict[str, float]:
        k = self.n_used
        return {
            "alpha1": self.a1_sum / k,
            "alpha2": float(torch.linalg.matrix_norm(self.m / k)),
            "combined": float(torch.linalg.matrix_norm(self.w / k)),
        }


class _GradMoments:
    """E[J_b J_a^T], E[J_a J_a^T], E||J_b||_F^2, summed one sample at a time (``a`` mapped onto ``b``)."""

    def __init__(self, d: int) -> None:
        self.ba = torch.zeros(d, d, dtype=torch.float64)
        self.aa = torch.zeros(d, d, dtype=torch.float64)
        self.bb = 0.0

    def add(self, j_a, j_b) -> None:
        self.ba += j_b @ j_a.T
        self.aa += j_a @ j_a.T
        self.bb += float((j_b * j_b).sum())

    def distance(self, n: int) -> float:
        a_star = self.ba @ torch.linalg.pinv(self.aa)
        sq = self.bb - 2 * float(torch.trace(a_star @ self.ba.T)) + float(torch.trace(a_star @ self.aa @ a_star.T))
        return math.sqrt(max(sq, 0.0) / n)


def per_sample_loop(source, target, x) -> dict[str, float]:
    """The textbook computation, one sample at a time."""
    d = N_OUT_E1
    s2t, t2s = _Direction(d), _Direction(d)
    g_st, g_ts = _GradMoments(d), _GradMoments(d)
    for i in range(len(x)):
        xi = x[i]
        j_s = torch.autograd.functional.jacobian(source, xi)  # (d, n)
        j_t = torch.autograd.functional.jacobian(target, xi)
        _, s_s, vh_s = torch.linalg.svd(j_s, full_matrices=False)
        _, s_t, vh_t = torch.linalg.svd(j_t, full_matrices=False)
        s2t.add(j_s, j_t, vh_s[0], float(s_t[0]))
        t2s.add(j_t, j_s, vh_t[0], float(s_s[0]))
        g_st.add(j_s, j_t)
        g_ts.add(j_t, j_s)
    out = {}
    for name, dr, gm in (("s2t", s2t, g_st), ("t2s", t2s, g_ts)):
        for k, v in dr.metrics().items():
            out[f"{k}_{name}"] = v
        out[f"grad_match_{name}"] = gm.distance(len(x))
        out[f"n_used_{name}"] = dr.n_used
    return out


def bench_batched_vs_loop(full_loop: bool, threads: int) -> None:
    name = "exact_batched_vs_per_sample_loop"
    say(f"[E] {name}: N={N_E1}, n={N_IN_E1}, d={N_OUT_E1}; loop on the first {LOOP_SUBSET} samples, extrapolated")
    source, target, x = build_pair(N_IN_E1, N_OUT_E1, N_E1)
    sub = x[:LOOP_SUBSET]
    exact_transferability(source, target, x[:16])  # warm-up
    per_sample_loop(source, target, x[:4])
    with LoadWindow(name) as load:
        times, outs = alternate(
            {"batched": lambda: exact_transferability(source, target, x), "loop": lambda: per_sample_loop(source, target, sub)},
            REPEATS,
        )
    scale = N_E1 / LOOP_SUBSET
    batched_min, batched_med = min_median(times["batched"])
    loop_min, loop_med = min_median([t * scale for t in times["loop"]])
    say(f"  batched: {fmt_times(times['batched'])}")
    say(f"  loop ({LOOP_SUBSET} samples, x{scale:g} to N={N_E1}): {fmt_times(times['loop'], scale)}")
    res_cmp = exact_transferability(source, target, sub)  # values: the same subset
    m_loop = outs["loop"]
    diffs = {k: abs(res_cmp[k] - m_loop[k]) for k in ALPHA_KEYS}
    max_abs_diff = max(diffs.values())
    for k in ALPHA_KEYS:
        say(f"    {k:18s} batched {res_cmp[k]: .12f}  loop {m_loop[k]: .12f}  |diff| {diffs[k]:.2e}")
    same_used = res_cmp.s2t.n_used == m_loop["n_used_s2t"] and res_cmp.t2s.n_used == m_loop["n_used_t2s"]
    equal = max_abs_diff < TOL_EQUAL and same_used
    extra = {}
    if full_loop:
        full_s = time.perf_counter()
        per_sample_loop(source, target, x)
        full_s = time.perf_counter() - full_s
        say(f"  full loop on all {N_E1} samples: {full_s:.2f} s; extrapolated min {loop_min:.2f} s, median {loop_med:.2f} s "
            f"({100 * (loop_med / full_s - 1):+.1f}% median vs full)")
        extra = {"full_loop_s": round(full_s, 4), "extrapolation_error": round(loop_med / full_s - 1, 4)}
    ratio, ratio_med = loop_min / batched_min, loop_med / batched_med
    fast = batched_min < TARGET_ABS_S
    say(f"  ratio loop / batched: {ratio:.1f}x (minima), {ratio_med:.1f}x (medians); batched {batched_min:.3f} s (target < {TARGET_ABS_S:g} s)")
    failures = []
    if not fast:
        failures.append(f"batched {batched_min:.3f} s >= {TARGET_ABS_S:g} s")
    if not equal:
        failures.append(f"max_abs_diff {max_abs_diff:.3e} >= {TOL_EQUAL:g} or different n_used (per metric: {diffs})")
    record(
        name,
        ratio=ratio,
        target=TARGET_SPEEDUP,
        target_kind="min",
        ratio_median=round(ratio_med, 4),
        batched_s=round(batched_min, 4),
        batched_median_s=round(batched_med, 4),
        baseline_s=round(loop_min, 4),
        baseline_median_s=round(loop_med, 4),
        baseline_extrapolated_from=LOOP_SUBSET,
        repeats=REPEATS,
        absolute_target_s=TARGET_ABS_S,
        max_abs_diff=max_abs_diff,
        tol=TOL_EQUAL,
        n=N_E1,
        threads=threads,
        other_load_cores=load.rounded,
        **extra,
        passed=fast and equal,
        **({"failure": "; ".join(failures)} if failures else {}),
    )


# ---------------------------------------------------------------------------------------------------------
# The previous algorithm, kept as the baseline of [S] (and of [M] with --previous-memory)
# ---------------------------------------------------------------------------------------------------------


def _prev_jacobian_chunks(model, x, output, chunk_size):
    """(outputs, Jacobians) in float64 for chunks of ``chunk_size`` samples, whatever their size."""
    from torch.func import jacfwd, jacrev, vmap

    n = int(np.prod(x.shape[1:]))
    shape = x.shape[1:]
    with torch.no_grad():
        d = int(model_output(model, x[:2].clone(), output).shape[1])

    def f(xi):
        y = model_output(model, xi.reshape(1, *shape).clone(), output)[0]
        return y, y

    jac = jacfwd(f, has_aux=True) if n < d else jacrev(f, has_aux=True)
    for i in range(0, len(x), chunk_size):
        xb = x[i : i + chunk_size].clone().reshape(-1, n)
        j, out = vmap(jac)(xb)
        j, out = j.detach().double(), out.detach().double()
        if not bool(torch.isfinite(j.sum() + out.sum())):
            raise ValueError("NaN/Inf in the Jacobians")
        yield out, j.reshape(len(xb), out.shape[1], n)


def _prev_svd(j, k):
    d, n = j.shape[1], j.shape[2]
    if n < d:
        _, vecs = torch.linalg.eigh(j.transpose(1, 2) @ j)
        v = vecs.flip(2)[:, :, :k].transpose(1, 2)
        sigma = (j @ v.transpose(1, 2)).norm(dim=1)
        scale = torch.ones_like(sigma)
    else:
        _, u = torch.linalg.eigh(j @ j.transpose(1, 2))
        v = (j.transpose(1, 2) @ u.flip(2)[:, :, :k]).transpose(1, 2)
        sigma = v.norm(dim=2)
        scale = 1.0 / sigma.clamp_min(1e-300)
    rank_ok = sigma > max(d, n) * torch.finfo(j.dtype).eps * sigma[:, :1]
    scale = torch.where(rank_ok, scale, torch.zeros_like(scale))
    return torch.where(rank_ok, sigma, torch.zeros_like(sigma)), v * scale.unsqueeze(2)


def _prev_top_and_level(j, gram, level):
    d, n = j.shape[1], j.shape[2]
    if n < d:
        s, v = _prev_svd(j, level + 1)
        return s[:, 0], v[:, level, :]
    lam = torch.linalg.eigvalsh(gram)
    lam_max = lam[:, -1].clamp_min(0)
    shift = lam[:, d - 1 - level] + 1e-10 * lam_max + 1e-300
    system = gram - shift.view(-1, 1, 1) * torch.eye(d, dtype=gram.dtype)
    gen = torch.Generator().manual_seed(0)
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


def _prev_grad_match(ba, aa, bb, n):
    a_star = ba @ torch.linalg.pinv(aa, hermitian=True)
    sq = bb - 2 * float(torch.trace(a_star @ ba.T)) + float(torch.trace(a_star @ aa @ a_star.T))
    return float(np.sqrt(max(sq, 0.0) / n))


def _prev_func_match(fa, fb):
    design = torch.cat([fa, torch.ones(len(fa), 1, dtype=fa.dtype)], dim=1)
    coef = torch.linalg.lstsq(design, fb, driver="gelsd").solution
    resid = fb - design @ coef
    return float(np.sqrt(float((resid * resid).sum(1).mean())))


def previous_exact(source, target, x, level=0, output="logits", squared=False, tol=TOL, chunk_size=1024):
    """The previous exact_transferability: metrics and the alpha1 samples of both directions."""
    dev = {k: [] for k in ("s2s", "s2t", "t2t", "t2s")}
    sigma_max = {"s": [], "t": []}
    f_s, f_t = [], []
    mom = {"st": [0.0, 0.0, 0.0], "ts": [0.0, 0.0, 0.0]}  # sum J_b J_a^T, sum J_a J_a^T, sum ||J_b||^2
    chunks = zip(_prev_jacobian_chunks(source, x, output, chunk_size), _prev_jacobian_chunks(target, x, output, chunk_size))
    for (out_s, j_s), (out_t, j_t) in chunks:
        g_s, g_t = j_s @ j_s.transpose(1, 2), j_t @ j_t.transpose(1, 2)
        sig_s, v_s = _prev_top_and_level(j_s, g_s, level)
        sig_t, v_t = _prev_top_and_level(j_t, g_t, level)
        dev["s2s"].append(torch.einsum("bdn,bn->bd", j_s, v_s))
        dev["s2t"].append(torch.einsum("bdn,bn->bd", j_t, v_s))
        dev["t2t"].append(torch.einsum("bdn,bn->bd", j_t, v_t))
        dev["t2s"].append(torch.einsum("bdn,bn->bd", j_s, v_t))
        sigma_max["s"].append(sig_s)
        sigma_max["t"].append(sig_t)
        cross = j_t.transpose(0, 1).reshape(j_t.shape[1], -1) @ j_s.transpose(0, 1).reshape(j_s.shape[1], -1).T
        sq_s, sq_t = float(torch.diagonal(g_s, dim1=1, dim2=2).sum()), float(torch.diagonal(g_t, dim1=1, dim2=2).sum())
        for key, add in (("st", (cross, g_s.sum(0), sq_t)), ("ts", (cross.T, g_t.sum(0), sq_s))):
            mom[key] = [a + b for a, b in zip(mom[key], add)]
        f_s.append(out_s)
        f_t.append(out_t)
    d = {k: torch.cat(v).numpy() for k, v in dev.items()}
    keep = np.ones(len(x), dtype=bool)
    top = {k: torch.cat(v).numpy()[:, None] for k, v in sigma_max.items()}
    res = {
        "s2t": direction_metrics("s2t", d["s2s"], d["s2t"], top["t"], keep, tol, squared, None),
        "t2s": direction_metrics("t2s", d["t2t"], d["t2s"], top["s"], keep, tol, squared, None),
    }
    fs, ft = torch.cat(f_s), torch.cat(f_t)
    out = {f"{m}_{dr}": float(getattr(res[dr], m)) for dr in ("s2t", "t2s") for m in ("alpha1", "alpha2", "combined")}
    out["grad_match_s2t"] = _prev_grad_match(*mom["st"], len(x))
    out["grad_match_t2s"] = _prev_grad_match(*mom["ts"], len(x))
    out["func_match_s2t"] = _prev_func_match(fs, ft)
    out["func_match_t2s"] = _prev_func_match(ft, fs)
    return out, {dr: res[dr].alpha1_samples for dr in ("s2t", "t2s")}


# ---------------------------------------------------------------------------------------------------------
# [S] current vs previous, d >= 100
# ---------------------------------------------------------------------------------------------------------


def _rel(a: float, b: float) -> float:
    return abs(a - b) / max(abs(a), abs(b), 1e-300)


def _time_arms(name: str, arms: dict) -> tuple[dict, dict, LoadWindow]:
    """Alternate ``arms`` ``REPEATS`` times inside a load window and print each arm's times; returns
    ``{arm: (min, median)}``, each arm's last output and the window."""
    with LoadWindow(name) as load:
        times, outs = alternate(arms, REPEATS)
    width = max(len(a) for a in arms) + 1
    for arm, ts in times.items():
        say(f"  {arm + ':':<{width}} {fmt_times(ts)}")
    return {arm: min_median(ts) for arm, ts in times.items()}, outs, load


def _value_diffs(ma: dict, mb: dict, keys, samples_a: dict, samples_b: dict) -> tuple[float, float]:
    """The largest absolute and relative differences over the metrics ``keys`` and the alpha1 samples of both
    directions (``inf`` when the sample counts differ)."""
    ab = max(abs(ma[k] - mb[k]) for k in keys)
    rel = max(_rel(ma[k], mb[k]) for k in keys)
    for dr in ("s2t", "t2s"):
        a, b = samples_a[dr], samples_b[dr]
        if a.shape != b.shape:
            return math.inf, math.inf
        ab = max(ab, float(np.abs(a - b).max()))
        rel = max(rel, float((np.abs(a - b) / np.maximum(np.abs(b), 1e-300)).max()))
    return ab, rel


def _alpha1_samples(r) -> dict:
    return {dr: getattr(r, dr).alpha1_samples for dr in ("s2t", "t2s")}


def bench_vs_previous(threads: int) -> None:
    for n_in, n_out, n in SPEED_SHAPES:
        name = f"exact_new_vs_previous_n{n_in}_d{n_out}"
        say(f"[S] {name}: N={n}, n={n_in} inputs, d={n_out} outputs ({'n < d' if n_in < n_out else 'd <= n'})")
        source, target, x = build_pair(n_in, n_out, n, seed=10)
        exact_transferability(source, target, x[:8])  # warm-up
        previous_exact(source, target, x[:8])
        stats, outs, load = _time_arms(
            name, {"new": lambda: exact_transferability(source, target, x), "previous": lambda: previous_exact(source, target, x)}
        )
        (new_min, new_med), (old_min, old_med) = stats["new"], stats["previous"]
        r_new, (m_old, a1_old) = outs["new"], outs["previous"]
        m_new = r_new.metrics()
        ab, rel = _value_diffs(m_new, m_old, list(m_new), _alpha1_samples(r_new), a1_old)
        ratio, ratio_med = old_min / new_min, old_med / new_med
        say(f"  ratio previous / new: {ratio:.2f}x (minima), {ratio_med:.2f}x (medians); values: max abs diff {ab:.2e}, "
            f"max rel diff {rel:.2e} (metrics and alpha1 samples)")
        equal = rel <= TOL_REL
        record(
            name,
            ratio=ratio,
            target=TARGET_VS_PREVIOUS,
            target_kind="min",
            ratio_median=round(ratio_med, 4),
            new_s=round(new_min, 4),
            new_median_s=round(new_med, 4),
            previous_s=round(old_min, 4),
            previous_median_s=round(old_med, 4),
            repeats=REPEATS,
            max_abs_diff=ab,
            max_rel_diff=rel,
            tol_rel=TOL_REL,
            n=n,
            n_inputs=n_in,
            n_outputs=n_out,
            threads=threads,
            other_load_cores=load.rounded,
            passed=equal,
            **({} if equal else {"failure": f"max_rel_diff {rel:.3e} > {TOL_REL:g}"}),
        )


# ---------------------------------------------------------------------------------------------------------
# [K] Krylov against Jacobians
# ---------------------------------------------------------------------------------------------------------


def bench_krylov(threads: int) -> None:
    for n_in, n_out, n, targeted in KRYLOV_SHAPES:
        name = f"exact_krylov_vs_jacobian_n{n_in}_d{n_out}"
        say(f"[K] {name}: N={n}, n={n_in} inputs, d={n_out} outputs")
        source, target, x = build_pair(n_in, n_out, n, seed=30)
        exact_transferability(source, target, x[:4], method="krylov")  # warm-up
        exact_transferability(source, target, x[:4])
        stats, outs, load = _time_arms(
            name, {"krylov": lambda: exact_transferability(source, target, x, method="krylov"),
                   "jacobian": lambda: exact_transferability(source, target, x)}
        )
        (k_min, k_med), (j_min, j_med) = stats["krylov"], stats["jacobian"]
        rk, rj = outs["krylov"], outs["jacobian"]
        _, rel = _value_diffs(rk.metrics(), rj.metrics(), ALPHA_ONLY, _alpha1_samples(rk), _alpha1_samples(rj))
        ratio, ratio_med = j_min / k_min, j_med / k_med
        say(f"  ratio jacobian / krylov: {ratio:.2f}x (minima), {ratio_med:.2f}x (medians); max rel diff {rel:.2e}; "
            f"{rk.diagnostics}")
        fields = dict(ratio_median=round(ratio_med, 4), krylov_s=round(k_min, 4), krylov_median_s=round(k_med, 4),
                      jacobian_s=round(j_min, 4), jacobian_median_s=round(j_med, 4), repeats=REPEATS, max_rel_diff=rel,
                      tol_rel=TOL_REL, n=n, n_inputs=n_in, n_outputs=n_out, threads=threads,
                      other_load_cores=load.rounded, **rk.diagnostics)
        if targeted:
            record(name, ratio=ratio, target=TARGET_KRYLOV, target_kind="min", passed=rel <= TOL_REL,
                   **({} if rel <= TOL_REL else {"failure": f"max_rel_diff {rel:.3e} > {TOL_REL:g}"}), **fields)
        else:
            note(name, ratio=round(ratio, 4), **fields)


# ---------------------------------------------------------------------------------------------------------
# [M] peak memory, each size in a fresh process
# ---------------------------------------------------------------------------------------------------------


def _peak_kib() -> int:
    """This process's peak resident memory so far, KiB: VmHWM (/proc/self/status), else ru_maxrss. (ru_maxrss
    survives exec on Linux: a child started from a large parent would report the parent's peak.)"""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    import resource

    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


def child_memory(n: int, previous: bool) -> None:
    """In a fresh process: build the pair and the inputs, then compute the metrics; print the peak memory."""
    source, target, x = build_pair(MEM_N_IN, MEM_N_OUT, n, seed=20)
    base = _peak_kib()
    t0 = time.perf_counter()
    if previous:
        previous_exact(source, target, x)
    else:
        exact_transferability(source, target, x)
    seconds = time.perf_counter() - t0
    print(json.dumps({"base_kib": base, "peak_kib": _peak_kib(), "seconds": seconds}), flush=True)


def _measure(n: int, threads: int, previous: bool = False) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), "--child-memory", str(n), "--threads", str(threads)]
    if previous:
        cmd.append("--previous")
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def bench_memory(threads: int, previous_too: bool) -> None:
    name = "exact_peak_memory"
    say(f"[M] {name}: n={MEM_N_IN} inputs, d={MEM_N_OUT} outputs, N={MEM_SIZES[0]} vs N={MEM_SIZES[1]} "
        f"(memory_budget {MEMORY_BUDGET / 2**20:.0f} MiB), each in a fresh process")
    with LoadWindow(name) as load:
        runs = {n: _measure(n, threads) for n in MEM_SIZES}
        prev = _measure(MEM_SIZES[0], threads, previous=True) if previous_too else None
    mib = {n: r["peak_kib"] / 1024 for n, r in runs.items()}
    for n, r in runs.items():
        say(f"  N={n}: peak {r['peak_kib'] / 1024:.0f} MiB ({(r['peak_kib'] - r['base_kib']) / 1024:.0f} MiB above the "
            f"{r['base_kib'] / 1024:.0f} MiB of the process before the call), {r['seconds']:.1f} s")
    extra = {}
    if prev is not None:
        say(f"  previous algorithm, N={MEM_SIZES[0]}: peak {prev['peak_kib'] / 1024:.0f} MiB, {prev['seconds']:.1f} s")
        extra = {"previous_peak_mib": round(prev["peak_kib"] / 1024, 1)}
    ratio = mib[MEM_SIZES[1]] / mib[MEM_SIZES[0]]
    say(f"  ratio peak N={MEM_SIZES[1]} / N={MEM_SIZES[0]} = {ratio:.3f}")
    record(
        name,
        ratio=ratio,
        target=TARGET_MEM_RATIO,
        target_kind="max",
        **{f"peak_mib_n{n}": round(v, 1) for n, v in mib.items()},
        **{f"above_start_mib_n{n}": round((r["peak_kib"] - r["base_kib"]) / 1024, 1) for n, r in runs.items()},
        **{f"seconds_n{n}": round(r["seconds"], 2) for n, r in runs.items()},
        memory_budget_mib=MEMORY_BUDGET / 2**20,
        n_inputs=MEM_N_IN,
        n_outputs=MEM_N_OUT,
        threads=threads,
        other_load_cores=load.rounded,
        **extra,
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=1, help="torch threads for every timed arm (default 1)")
    ap.add_argument("--full-loop", action="store_true", help="also run the per-sample loop on all N once")
    ap.add_argument("--previous-memory", action="store_true",
                    help=f"also measure the previous algorithm's peak memory at N={MEM_SIZES[0]} (several GB)")
    ap.add_argument("--child-memory", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--previous", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    threads = pin_threads(args.threads)
    tune_malloc()
    if args.child_memory is not None:
        child_memory(args.child_memory, args.previous)
        return 0
    t0 = time.perf_counter()
    say(f"bench_exact: sigmoid MLPs width {WIDTH} (float64), torch {torch.__version__}, {threads} thread(s), "
        f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f} before start")
    bench_batched_vs_loop(args.full_loop, threads)
    bench_vs_previous(threads)
    bench_krylov(threads)
    bench_memory(threads, args.previous_memory)
    say(f"total wall time {time.perf_counter() - t0:.1f} s")
    emit()
    return 0


if __name__ == "__main__":
    sys.exit(main())
