"""Benchmark the alpha metrics (``transferlens.adversarial.transferability``) on an MNIST-1D CNN pair.

Targets (README, "Benchmarks"), 2-core CPU, N=1000, PGD-10, "paper" preset (ce objective):

* alpha_batched_vs_per_sample: the default batched call is >= 20x faster than the same computation one
  sample at a time (``batch_size=1``, as the published scripts do), with equal metrics (max abs diff <= 1e-5);
* alpha_overhead_vs_attacks: the full call costs <= 1.25x the attacks alone (the PGD runs it needs:
  one per model, each reused for both directions).

Run: ``.venv/bin/python benchmarks/bench_alpha.py``. The last lines are one JSON object per benchmark.
Exit code is 0 even when a target is missed (this is a measurement); look for "MISSED TARGET".
"""

from __future__ import annotations

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch  # noqa: E402

from _common import Contention, best_of, best_of_interleaved, emit, record, say, time_once  # noqa: E402
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
EPOCHS = 15
BATCHED_REPEATS = 3
OVERHEAD_REPEATS = 5
TARGET_SPEEDUP = 20.0
TARGET_OVERHEAD = 1.25
TOL_EQUAL = 1e-5


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


def bench_batched_vs_per_sample(source, target, x, y) -> None:
    say("[A] alpha_batched_vs_per_sample")
    alpha(source, target, x[:16], y[:16])  # warm-up
    batched_s, times, res_b = best_of(lambda: alpha(source, target, x, y), BATCHED_REPEATS)
    say(f"  batched (batch_size={BATCH_SIZE}): min {batched_s:.3f} s over {BATCHED_REPEATS} " f"({', '.join(f'{t:.3f}' for t in times)})")
    per_sample_s, res_1 = time_once(lambda: alpha(source, target, x, y, batch_size=1))
    repeats_1 = 1
    if per_sample_s < 5.0:  # too short for a single run to be trustworthy
        t2, _, res_1 = best_of(lambda: alpha(source, target, x, y, batch_size=1), 2)
        per_sample_s, repeats_1 = min(per_sample_s, t2), 3
    say(f"  per-sample (batch_size=1): {per_sample_s:.3f} s (best of {repeats_1})")
    mb, m1 = res_b.metrics(), res_1.metrics()
    diffs = {k: abs(mb[k] - m1[k]) for k in mb}
    max_abs_diff = max(diffs.values())
    for k in mb:
        say(f"    {k:16s} batched {mb[k]: .8f}  per-sample {m1[k]: .8f}  |diff| {diffs[k]:.2e}")
    say(f"  n_used s2t/t2s: batched {res_b.s2t.n_used}/{res_b.t2s.n_used}, per-sample {res_1.s2t.n_used}/{res_1.t2s.n_used}")
    equal = max_abs_diff <= TOL_EQUAL
    if not equal:
        say(f"  VALUES DIFFER: max_abs_diff {max_abs_diff:.3e} > {TOL_EQUAL:g} (per metric: {diffs})")
    ratio = per_sample_s / batched_s
    say(f"  ratio per-sample / batched = {ratio:.1f}x")
    record(
        "alpha_batched_vs_per_sample",
        ratio=ratio,
        target=TARGET_SPEEDUP,
        target_kind="min",
        max_abs_diff=max_abs_diff,
        tol=TOL_EQUAL,
        batched_s=round(batched_s, 4),
        per_sample_s=round(per_sample_s, 4),
        n=len(x),
        passed=equal,
        **({} if equal else {"failure": f"max_abs_diff {max_abs_diff:.3e} > {TOL_EQUAL:g}"}),
    )


def bench_overhead(source, target, x, y) -> None:
    say("[B] alpha_overhead_vs_attacks")
    attacks(source, target, x[:16])  # warm-up
    alpha(source, target, x[:16], y[:16])
    times = best_of_interleaved(
        {"attacks": lambda: attacks(source, target, x), "full": lambda: alpha(source, target, x, y)}, OVERHEAD_REPEATS
    )
    attacks_s, full_s = min(times["attacks"]), min(times["full"])
    for k, ts in times.items():
        say(f"  {k:8s} min {min(ts):.3f} s over {OVERHEAD_REPEATS} ({', '.join(f'{t:.3f}' for t in ts)})")
    ratio = full_s / attacks_s
    say(f"  ratio full / attacks = {ratio:.3f}")
    record(
        "alpha_overhead_vs_attacks",
        ratio=ratio,
        target=TARGET_OVERHEAD,
        target_kind="max",
        full_s=round(full_s, 4),
        attacks_s=round(attacks_s, 4),
        n=len(x),
    )


def main() -> int:
    t0 = time.perf_counter()
    torch.manual_seed(0)
    say(f"bench_alpha: N={N}, preset={PRESET!r}, {THREAT}, torch {torch.__version__}, {torch.get_num_threads()} threads")
    contention = Contention()
    say("set-up: training the MNIST-1D CNN pair")
    source, target, x, y = build_pair()
    say(f"  set-up took {time.perf_counter() - t0:.1f} s")
    bench_batched_vs_per_sample(source, target, x, y)
    bench_overhead(source, target, x, y)
    busy = contention.report()
    say(f"total wall time {time.perf_counter() - t0:.1f} s")
    emit(other_cpu_cores=round(busy, 3))
    return 0


if __name__ == "__main__":
    sys.exit(main())
