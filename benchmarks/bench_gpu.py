"""GPU against CPU on one machine: the same models measured on both, values compared, times reported.

Needs CUDA; without it the script says so and exits 0 (nothing to measure). No target: it reports what a
machine with a GPU gives, for the README's "CPU and GPU" section.

* alpha metrics of an MNIST-1D CNN pair (N=1000, linf PGD-10, ``paper`` preset) at batch 1024 and 4096, the
  CPU with every core against the GPU; the largest difference of the six metrics in float32 with TF32 off and
  on (``torch.backends.cuda.matmul.allow_tf32``, ``torch.backends.cudnn.allow_tf32``), and in float64;
* exact metrics (float64 MLPs of width 100, as in ``bench_exact.py``) with ``method="jacobian"`` at E1 sizes and
  n=200, d=400, and ``method="krylov"`` at n=d=1000: time on each and the largest relative difference.

Each timed call is the minimum of ``REPEATS`` after one warm-up, with ``torch.cuda.synchronize()`` around it.
``device="auto"`` is checked to pick CUDA. The last lines are one JSON object per measurement.

Run: ``.venv/bin/python benchmarks/bench_gpu.py`` (on a machine where torch sees a GPU).
"""

from __future__ import annotations

import copy
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch  # noqa: E402

from _common import emit, note, say, tune_malloc  # noqa: E402
import transferlens as tl  # noqa: E402
from transferlens._torch import resolve_device  # noqa: E402

REPEATS = 3
N = 1000
THREAT = tl.ThreatModel(norm="linf", eps=0.1, steps=10)
EPOCHS = 5
EXACT_SHAPES = ((50, 10, 5000, "jacobian"), (200, 400, 200, "jacobian"), (1000, 1000, 40, "krylov"))


def _sync() -> None:
    torch.cuda.synchronize()


def timed(fn, repeats: int = REPEATS):
    """(minimum seconds, last result) over ``repeats`` calls after one warm-up."""
    out = fn()
    times = []
    for _ in range(repeats):
        _sync()
        t0 = time.perf_counter()
        out = fn()
        _sync()
        times.append(time.perf_counter() - t0)
    return min(times), out


def largest_difference(a: dict[str, float], b: dict[str, float], relative: bool = False) -> float:
    return max(abs(a[k] - b[k]) / (max(1.0, abs(a[k])) if relative else 1.0) for k in a)


def bench_alpha() -> None:
    task, source_task = tl.mnist1d_task("reference"), tl.mnist1d_task("noisy")
    shape = tuple(task.x_train.shape[1:])
    target = tl.build_model("cnn1d", shape, task.num_classes, seed=0)
    source = tl.build_model("cnn1d", shape, source_task.num_classes, seed=1)
    tl.fit(target, task, device="cpu", epochs=EPOCHS, seed=0)
    tl.fit(source, source_task, device="cpu", epochs=EPOCHS, seed=0)
    x, y = task.x_test[:N], task.y_test[:N]

    def alpha(s, t, xs, batch_size=1024):
        return tl.transferability(s, t, xs, y, preset="paper", threat=THREAT, batch_size=batch_size).metrics()

    gpu = copy.deepcopy(source).cuda(), copy.deepcopy(target).cuda()
    for batch in (1024, 4096):
        cpu_s, _ = timed(lambda: alpha(source, target, x, batch))
        gpu_s, _ = timed(lambda: alpha(*gpu, x, batch))
        say(f"alpha metrics, batch {batch}: CPU {cpu_s:.3f} s ({torch.get_num_threads()} threads), GPU {gpu_s:.3f} s")
        note(f"gpu_alpha_batch{batch}", cpu_s=round(cpu_s, 4), gpu_s=round(gpu_s, 4), cpu_threads=torch.get_num_threads())
    flags = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    reference = alpha(source, target, x)
    try:
        for tf32 in (False, True):
            torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = tf32
            diff = largest_difference(reference, alpha(*gpu, x))
            say(f"alpha metrics float32, TF32 {'on' if tf32 else 'off'}: largest CPU-GPU difference {diff:.2e}")
            note(f"gpu_alpha_float32_tf32_{'on' if tf32 else 'off'}", max_abs_diff=diff)
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = flags
    s64, t64 = copy.deepcopy(source).double(), copy.deepcopy(target).double()
    on_cpu = alpha(s64, t64, x.double())
    on_gpu = alpha(s64.cuda(), t64.cuda(), x.double())
    diff32 = largest_difference(reference, on_cpu)
    diff = largest_difference(on_cpu, on_gpu)
    say(f"alpha metrics float64: largest CPU-GPU difference {diff:.2e} (float32 vs float64 on the CPU: {diff32:.2e})")
    note("gpu_alpha_float64", max_abs_diff=diff, float32_vs_float64_cpu=diff32)


def bench_exact() -> None:
    from bench_exact import build_pair

    for n_in, n_out, n, method in EXACT_SHAPES:
        source, target, x = build_pair(n_in, n_out, n)
        cpu_s, on_cpu = timed(lambda: tl.exact_transferability(source, target, x, method=method).metrics(), 2)
        gpu_models = copy.deepcopy(source).cuda(), copy.deepcopy(target).cuda()
        gpu_s, on_gpu = timed(lambda: tl.exact_transferability(*gpu_models, x, method=method).metrics(), 2)
        diff = largest_difference(on_cpu, on_gpu, relative=True)
        say(f"exact ({method}) n={n_in}, d={n_out}, N={n}: CPU {cpu_s:.3f} s, GPU {gpu_s:.3f} s, largest relative difference {diff:.1e}")
        note(f"gpu_exact_{method}_n{n_in}_d{n_out}", cpu_s=round(cpu_s, 4), gpu_s=round(gpu_s, 4), max_rel_diff=diff)


def main() -> int:
    if not torch.cuda.is_available():
        say("bench_gpu: torch sees no GPU here; nothing to measure")
        return 0
    tune_malloc()
    auto = resolve_device("auto")
    say(f"bench_gpu: {torch.cuda.get_device_name(0)}, torch {torch.__version__}, device='auto' -> {auto}, "
        f"{torch.get_num_threads()} CPU threads")
    if auto.type != "cuda":
        say("MISSED: device='auto' did not pick CUDA")
    bench_alpha()
    bench_exact()
    emit(gpu=torch.cuda.get_device_name(0), auto_device=str(auto))
    return 0


if __name__ == "__main__":
    sys.exit(main())
