"""Benchmark adversarial training's cost: a PGD-AT epoch against a standard epoch.

Target (README, "Benchmarks"), 2-core CPU, one thread, MNIST-1D (4000 samples, 3200 for training) and the
zoo's cnn1d and mlp: a PGD-AT epoch with ``k`` attack steps does ``k`` forward+backward passes for the attack
and one for the update, so the ideal ratio to a standard epoch is ``k + 1``; the target is
``(PGD-AT epoch time / standard epoch time) / (k + 1) <= 1.3`` (the per-sample random start, projection and
bookkeeping cost at most 30 % on top). TRADES is reported against the same ideal (its attack maximises a
KL to the clean prediction; the update adds one clean forward pass). Attack steps need no gradients of the
parameters, so they cost a little less than a training step and the measured ratio can sit below 1.

The two arms alternate in one process (standard, PGD-AT, standard, PGD-AT, ...) and the minimum and median
of ``REPEATS`` epochs each are reported, with the cores other processes kept busy (/proc/stat).

Run: ``.venv/bin/python benchmarks/bench_training.py``. The last lines are one JSON object per benchmark.
"""

from __future__ import annotations

import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch  # noqa: E402
from torch.nn import functional as F  # noqa: E402

from _common import OtherLoad, emit, record, say, tune_malloc  # noqa: E402
import transferlens as tl  # noqa: E402
from transferlens.regimes import PGDAdversarial, Standard, Trades  # noqa: E402

STEPS = 7
REPEATS = 5
BATCH = 128
TARGET = 1.3


def epoch_seconds(model, regime, x, y, seed: int) -> float:
    """One training epoch (mini-batches of BATCH, Adam) under ``regime``; wall seconds."""
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    t0 = time.perf_counter()
    model.train()
    for i in range(0, len(x), BATCH):
        idx = order[i : i + BATCH]
        if isinstance(regime, Standard):
            loss = F.cross_entropy(model(x[idx]), y[idx])
        else:
            loss = regime.loss(model, x[idx], y[idx], seed + i)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    model.eval()
    return time.perf_counter() - t0


def main() -> None:
    torch.set_num_threads(1)
    tune_malloc()
    task = tl.mnist1d_task("reference", num_samples=4000, seed=0)
    x, y = task.x_train, task.y_train
    say(f"MNIST-1D: {len(x)} training samples, batch {BATCH}, {STEPS} attack steps, 1 thread")
    start = OtherLoad.mark()
    for arch in ("cnn1d", "mlp"):
        model = tl.build_model(arch, task.input_shape, 10, seed=0)
        arms = {"standard": Standard(), "pgd_at": PGDAdversarial(eps=0.3, steps=STEPS),
                "trades": Trades(eps=0.3, steps=STEPS, beta=6.0)}
        epoch_seconds(model, arms["standard"], x[:512], y[:512], 0)  # warm-up
        times: dict[str, list[float]] = {k: [] for k in arms}
        for r in range(REPEATS):
            for name, regime in arms.items():
                times[name].append(epoch_seconds(model, regime, x, y, r))
        std = min(times["standard"])
        for name in ("pgd_at", "trades"):
            ratio = min(times[name]) / std
            say(f"{arch} {name}: {min(times[name]):.2f} s min / {statistics.median(times[name]):.2f} s median per epoch; "
                f"standard {std:.3f} s; ratio {ratio:.2f} vs ideal {STEPS + 1}")
            load = OtherLoad.cores(start, OtherLoad.mark())
            record(f"{name}_epoch_vs_ideal", ratio=ratio / (STEPS + 1), target=TARGET, target_kind="max", arch=arch,
                   seconds_min=round(min(times[name]), 3), seconds_median=round(statistics.median(times[name]), 3),
                   standard_seconds_min=round(std, 4), standard_seconds_median=round(statistics.median(times["standard"]), 4),
                   ratio_to_standard=round(ratio, 2), ideal=STEPS + 1,
                   other_cpu_cores=None if load is None else round(load, 2))
    emit()


if __name__ == "__main__":
    main()
