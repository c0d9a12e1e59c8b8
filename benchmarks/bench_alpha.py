"""Benchmark the alpha metrics (``transferlens.adversarial.transferability``) on an MNIST-1D CNN pair.

Targets (README, "Benchmarks"), 2-core CPU, N=1000, PGD-10, "paper" preset (ce objective):

* alpha_batched_vs_per_sample: the default batched call is >= 20x faster than the same computation one
  sample at a time (``batch_size=1``), with equal metrics (max abs diff <= 1e-5);
* alpha_batched_vs_published_loop: the batched call against the published method's loop, emulated from
  public pieces: batch size 1 and, for each sample and each direction, both attacks (on the attacked model
  and on the other one, whose own deviation is alpha1's denominator) run afresh, with the models' autograd
  graphs built on every forward pass; nothing is shared between the two directions (the library attacks each
  model once and reuses the result for both). Equal metrics (max abs diff <= 1e-5), target >= 20x;
* alpha_overhead_vs_attacks: the full call costs <= 1.25x the attacks alone (the PGD runs it needs:
  one per model, each reused for both directions).

Timing (``--threads``, default 1): the arms of a comparison alternate (a b a b ...) ``REPEATS`` times; the
minimum and the median of each arm are reported with the ratio of the minima (``ratio``) and of the medians
(``ratio_median``). The two per-sample arms run on the first ``PER_SAMPLE_SUBSET`` / ``PUBLISHED_SUBSET``
samples and their times are extrapolated linearly to N (``--full-check`` also runs both on all N once and
reports how far the extrapolation was off); their values are compared with the batched call on the same
subset. torch runs with one thread by default: on the shared 2-core machine a second thread makes ratios
depend on what else runs (a descheduled worker thread stalls every parallel region, which hits the per-sample
arms' many small calls far harder than the batched ones), while with one thread a busy core slows every arm
alike. ``other_load_cores`` is the CPU other processes used over each benchmark's window (/proc/stat minus
this process); above 0.25 a warning is printed.

Run: ``.venv/bin/python benchmarks/bench_alpha.py``. The last lines are one JSON object per benchmark.
Exit code is 0 even when a target is missed (this is a measurement); look for "MISSED TARGET".
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch  # noqa: E402

from _common import LoadWindow, alternate, emit, fmt_times, min_median, pin_threads, record, say, time_once, tune_malloc  # noqa: E402
from transferlens.adversarial import transferability  # noqa: E402
from transferlens.attacks import ThreatModel, pgd  # noqa: E402
from transferlens.data.mnist1d import mnist1d_task  # noqa: E402
from transferlens.models.zoo import build_model  # noqa: E402
from transferlens.training import fit  # noqa: E402

N = 1000
PRESET = "paper"
OBJECTIVE = "ce"  # the objective of the "paper" preset
THREAT = ThreatModel(norm="linf", eps=0.1, steps=10)
BATCH_SIZE = 1024  # transferability's and pgd's default
TOL_DEGENERATE = 1e-6  # transferability's default tol
EPOCHS = 15
REPEATS = 5
OVERHEAD_REPEATS = 5
PER_SAMPLE_SUBSET = 100
PUBLISHED_SUBSET = 50
TARGET_SPEEDUP = 20.0
TARGET_PUBLISHED = 20.0
TARGET_OVERHEAD = 1.25
TOL_EQUAL = 1e-5
KEYS = [f"{m}_{d}" for d in ("s2t", "t2s") for m in ("alpha1", "alpha2", "combined")]


def build_pair():
    target_task = mnist1d_task("reference")
    source_task = mnist1d_task("noisy")
    shape = tuple(target_task.x_train.shape[1:])
    target = build_model("cnn1d", shape, target_task.num_classes, seed=0)
    source = build_model("cnn1d", shape, source_task.num_classes, seed=1)
    rt = fit(target, target_task, device="cpu", epochs=EPOCHS, seed=0)
    rs = fit(source, source_task, device="cpu", epochs=EPOCHS, seed=0)
    say(f"  target cnn1d on {target_task.name}: test acc {rt.test_accuracy:.3f} ({rt.epochs_run} epochs)")
    say(f"  source cnn1d on {source_task.name}: test acc {rs.test_accuracy:.3f} ({rs.epochs_run} epochs)")
    x, y = target_task.x_test[:N], target_task.y_test[:N]
    return source, target, x, y


def alpha(source, target, x, y, batch_size=BATCH_SIZE):
    return transferability(source, target, x, y, preset=PRESET, threat=THREAT, batch_size=batch_size)


def attacks(source, target, x, batch_size=BATCH_SIZE):
    # The two PGD runs transferability makes, with the same arguments (it validates x once itself,
    # so the attacks are called with validate=False, as inside transferability).
    kw = dict(seed=0, batch_size=batch_size, validate=False)
    return pgd(source, x, THREAT, OBJECTIVE, **kw), pgd(target, x, THREAT, OBJECTIVE, **kw)


def published_loop(source, target, x, y) -> dict[str, float]:
    """The published method's loop, one sample at a time: for each direction (attack crafted on ``a``,
    evaluated on ``b``) both attacks run afresh (``a``'s for the deviations, ``b``'s own for alpha1's
    denominator), and every forward pass builds its autograd graph (the models keep their trained
    ``requires_grad``). The metrics are written out here: ``alpha1 = ||Delta_ab|| / ||Delta_bb||``,
    ``u = Delta_aa / ||.||``, ``v = Delta_ab / ||.||``, ``alpha2 = ||mean u v^T||_F^2``,
    ``combined = ||mean alpha1 u v^T||_F^2`` (squared: the paper preset), over the samples the target
    classifies correctly, excluding those where ``||Delta_aa||`` or ``||Delta_bb||`` is <= ``TOL_DEGENERATE``."""
    for m in (source, target):
        m.eval()
    sums = {d: {"a1": 0.0, "uv": 0.0, "a1uv": 0.0, "k": 0} for d in ("s2t", "t2s")}
    for i in range(len(x)):
        xi = x[i : i + 1]
        correct = int(target(xi).argmax(1)) == int(y[i])
        for name, a, b in (("s2t", source, target), ("t2s", target, source)):
            d_a = pgd(a, xi, THREAT, OBJECTIVE, seed=0, batch_size=1, validate=False)
            d_b = pgd(b, xi, THREAT, OBJECTIVE, seed=0, batch_size=1, validate=False)
            fa_clean, fa_adv = a(xi).double(), a(xi + d_a).double()
            fb_clean, fb_adv_a, fb_adv_b = b(xi).double(), b(xi + d_a).double(), b(xi + d_b).double()
            dev_aa = (fa_adv - fa_clean).detach()[0]
            dev_ab = (fb_adv_a - fb_clean).detach()[0]
            dev_bb = (fb_adv_b - fb_clean).detach()[0]
            n_aa, n_ab, n_bb = (float(torch.linalg.vector_norm(v)) for v in (dev_aa, dev_ab, dev_bb))
            if not correct or n_aa <= TOL_DEGENERATE or n_bb <= TOL_DEGENERATE:
                continue
            a1 = n_ab / n_bb
            u = dev_aa / n_aa
            v = dev_ab / n_ab if n_ab > 0 else torch.zeros_like(dev_ab)
            uv = torch.outer(u, v)
            s = sums[name]
            s["a1"], s["uv"], s["a1uv"], s["k"] = s["a1"] + a1, s["uv"] + uv, s["a1uv"] + a1 * uv, s["k"] + 1
    out = {}
    for name, s in sums.items():
        k = s["k"]
        out[f"alpha1_{name}"] = s["a1"] / k
        out[f"alpha2_{name}"] = float((s["uv"] / k).pow(2).sum())
        out[f"combined_{name}"] = float((s["a1uv"] / k).pow(2).sum())
        out[f"n_used_{name}"] = k
    return out


def _compare(label: str, ref: dict[str, float], other: dict[str, float]) -> float:
    diffs = {k: abs(ref[k] - other[k]) for k in KEYS}
    for k in KEYS:
        say(f"    {k:16s} batched {ref[k]: .8f}  {label} {other[k]: .8f}  |diff| {diffs[k]:.2e}")
    return max(diffs.values())


def bench_batched_vs_per_sample(source, target, x, y, threads: int, full_check: bool) -> None:
    say(f"[A] alpha_batched_vs_per_sample and alpha_batched_vs_published_loop: batched on N={len(x)}, "
        f"per-sample on the first {PER_SAMPLE_SUBSET}, published loop on the first {PUBLISHED_SUBSET} (extrapolated to N)")
    xs, ys = x[:PER_SAMPLE_SUBSET], y[:PER_SAMPLE_SUBSET]
    xp, yp = x[:PUBLISHED_SUBSET], y[:PUBLISHED_SUBSET]
    alpha(source, target, x[:16], y[:16])  # warm-up
    alpha(source, target, x[:4], y[:4], batch_size=1)
    published_loop(source, target, x[:2], y[:2])
    with LoadWindow("alpha_batched_vs_per_sample") as load:
        times, outs = alternate(
            {
                "batched": lambda: alpha(source, target, x, y),
                "per_sample": lambda: alpha(source, target, xs, ys, batch_size=1),
                "published": lambda: published_loop(source, target, xp, yp),
            },
            REPEATS,
        )
    scale_1, scale_p = len(x) / PER_SAMPLE_SUBSET, len(x) / PUBLISHED_SUBSET
    b_min, b_med = min_median(times["batched"])
    s_min, s_med = min_median([t * scale_1 for t in times["per_sample"]])
    p_min, p_med = min_median([t * scale_p for t in times["published"]])
    say(f"  batched (batch_size={BATCH_SIZE}): {fmt_times(times['batched'])}")
    say(f"  per-sample (batch_size=1), {PER_SAMPLE_SUBSET} samples x{scale_1:g}: {fmt_times(times['per_sample'], scale_1)}")
    say(f"  published loop, {PUBLISHED_SUBSET} samples x{scale_p:g}: {fmt_times(times['published'], scale_p)}")

    # Values, on the subsets the per-sample arms ran on.
    res_s = alpha(source, target, xs, ys).metrics()
    diff_1 = _compare("per-sample", res_s, outs["per_sample"].metrics())
    res_p = alpha(source, target, xp, yp)
    diff_p = _compare("published", res_p.metrics(), outs["published"])
    same_used = (res_p.s2t.n_used, res_p.t2s.n_used) == (outs["published"]["n_used_s2t"], outs["published"]["n_used_t2s"])
    say(f"  n_used s2t/t2s on the first {PUBLISHED_SUBSET}: batched {res_p.s2t.n_used}/{res_p.t2s.n_used}, published loop "
        f"{outs['published']['n_used_s2t']}/{outs['published']['n_used_t2s']}")

    full = {}
    if full_check:
        t1, _ = time_once(lambda: alpha(source, target, x, y, batch_size=1))
        tp, _ = time_once(lambda: published_loop(source, target, x, y))
        say(f"  full runs on all {len(x)}: per-sample {t1:.2f} s (extrapolated median {s_med:.2f} s, {100 * (s_med / t1 - 1):+.1f}%), "
            f"published loop {tp:.2f} s (extrapolated median {p_med:.2f} s, {100 * (p_med / tp - 1):+.1f}%)")
        full = {"per_sample": {"full_s": round(t1, 4), "extrapolation_error": round(s_med / t1 - 1, 4)},
                "published": {"full_s": round(tp, 4), "extrapolation_error": round(p_med / tp - 1, 4)}}

    common = dict(batched_s=round(b_min, 4), batched_median_s=round(b_med, 4), n=len(x), repeats=REPEATS, threads=threads,
                  other_load_cores=load.rounded, tol=TOL_EQUAL)
    for name, base_min, base_med, subset, diff, target, ok_extra, key in (
        ("alpha_batched_vs_per_sample", s_min, s_med, PER_SAMPLE_SUBSET, diff_1, TARGET_SPEEDUP, True, "per_sample"),
        ("alpha_batched_vs_published_loop", p_min, p_med, PUBLISHED_SUBSET, diff_p, TARGET_PUBLISHED, same_used, "published"),
    ):
        ratio, ratio_med = base_min / b_min, base_med / b_med
        say(f"  {name}: {ratio:.1f}x (minima), {ratio_med:.1f}x (medians); max abs diff {diff:.2e}")
        equal = diff <= TOL_EQUAL and ok_extra
        record(
            name,
            ratio=ratio,
            target=target,
            target_kind="min",
            ratio_median=round(ratio_med, 4),
            baseline_s=round(base_min, 4),
            baseline_median_s=round(base_med, 4),
            baseline_extrapolated_from=subset,
            max_abs_diff=diff,
            **({f"baseline_{k}": v for k, v in full[key].items()} if full else {}),
            **common,
            passed=equal,
            **({} if equal else {"failure": f"values differ: max_abs_diff {diff:.3e} (tol {TOL_EQUAL:g}) or n_used"}),
        )


def bench_overhead(source, target, x, y, threads: int) -> None:
    name = "alpha_overhead_vs_attacks"
    say(f"[B] {name}")
    attacks(source, target, x[:16])  # warm-up
    alpha(source, target, x[:16], y[:16])
    with LoadWindow(name) as load:
        times, _ = alternate({"attacks": lambda: attacks(source, target, x), "full": lambda: alpha(source, target, x, y)}, OVERHEAD_REPEATS)
    a_min, a_med = min_median(times["attacks"])
    f_min, f_med = min_median(times["full"])
    say(f"  attacks: {fmt_times(times['attacks'])}")
    say(f"  full:    {fmt_times(times['full'])}")
    ratio, ratio_med = f_min / a_min, f_med / a_med
    say(f"  ratio full / attacks = {ratio:.3f} (minima), {ratio_med:.3f} (medians)")
    record(
        name,
        ratio=ratio,
        target=TARGET_OVERHEAD,
        target_kind="max",
        ratio_median=round(ratio_med, 4),
        full_s=round(f_min, 4),
        full_median_s=round(f_med, 4),
        attacks_s=round(a_min, 4),
        attacks_median_s=round(a_med, 4),
        repeats=OVERHEAD_REPEATS,
        n=len(x),
        threads=threads,
        other_load_cores=load.rounded,
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=1, help="torch threads for the set-up and every timed arm (default 1)")
    ap.add_argument("--full-check", action="store_true", help="also run both per-sample arms on all N once")
    args = ap.parse_args()
    threads = pin_threads(args.threads)
    tune_malloc()
    t0 = time.perf_counter()
    torch.manual_seed(0)
    say(f"bench_alpha: N={N}, preset={PRESET!r}, {THREAT}, torch {torch.__version__}, {threads} thread(s), "
        f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f} before start")
    say("set-up: training the MNIST-1D CNN pair")
    source, target, x, y = build_pair()
    say(f"  set-up took {time.perf_counter() - t0:.1f} s")
    bench_batched_vs_per_sample(source, target, x, y, threads, args.full_check)
    bench_overhead(source, target, x, y, threads)
    say(f"total wall time {time.perf_counter() - t0:.1f} s")
    emit()
    return 0


if __name__ == "__main__":
    sys.exit(main())
