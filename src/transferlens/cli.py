"""The ``transferlens`` command line: a thin layer over the library (parse, call, show progress)."""

from __future__ import annotations

import datetime as _dt
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

app = typer.Typer(add_completion=False, help="Measure and predict transferability between neural networks.")
console = Console()

EXPERIMENTS = ("e2", "synthetic", "e1")
QUICK_E1 = dict(n_samples=500, n_scales=5, train_steps=50)
QUICK = dict(source_domains=("reference", "noisy", "shuffled"), architectures=("mlp", "cnn1d"), num_samples=1000, n_eval=200, n_boot=200)
# One thread by default (benchmarks/bench_threads.py): as fast as two on an idle 2-core machine, and several
# times faster when another process keeps a core busy (the models are small; extra threads wait on each other).
DEFAULT_THREADS = 1


@app.callback(invoke_without_command=True)
def _root(
    ctx: typer.Context,
    version: bool = typer.Option(False, "--version", help="Print the version and exit."),
) -> None:
    """transferlens: adversarial and knowledge transferability between neural networks."""
    if version:
        from . import __version__

        console.print(f"transferlens {__version__}")
        raise typer.Exit()
    if ctx.invoked_subcommand is None:
        console.print(ctx.get_help())
        raise typer.Exit()


def _default_out() -> Path:
    return Path("runs") / _dt.datetime.now().strftime("%Y%m%d-%H%M%S")


@app.command()
def run(
    experiment: str = typer.Argument(
        "e2", help="e2 (default): adversarial vs knowledge transferability on MNIST-1D; synthetic (e1): exact metrics on RBF regression."
    ),
    out: Optional[Path] = typer.Option(None, "--out", help="Output folder (default runs/<timestamp>/)."),
    seed: int = typer.Option(0, "--seed", help="Seed for data generation, model initialisation and training."),
    preset: str = typer.Option("theory", "--preset", help="e2: alpha-metric preset, theory (deviation, l2) or paper (ce, linf, squared norms)."),
    eps: Optional[float] = typer.Option(None, "--eps", help="e2: attack radius (default: the preset's)."),
    schedule: str = typer.Option("accumulated", "--schedule", help="synthetic: deviation schedule, accumulated or linear."),
    level: int = typer.Option(0, "--level", help="synthetic: singular vector used as the attack direction (0 = top)."),
    quick: bool = typer.Option(False, "--quick", help="A reduced run on less data: a smoke test in a few seconds."),
    device: str = typer.Option("auto", "--device", help="e2: auto (CUDA when available), cpu or cuda."),
    threads: int = typer.Option(
        DEFAULT_THREADS, "--threads",
        help="CPU threads for torch and BLAS/OpenMP during the run (>= 1). One is fastest for these small models, "
        "especially beside other busy processes.",
    ),
) -> None:
    """Run an experiment on embedded data and write results.csv, summary.json and report.html."""
    if threads < 1:
        console.print(f"[red]error:[/red] --threads must be an integer >= 1, got {threads}")
        raise typer.Exit(2)
    if experiment not in EXPERIMENTS:
        console.print(f"[red]unknown experiment {experiment!r}[/red]; choose one of {', '.join(EXPERIMENTS)}")
        raise typer.Exit(2)
    kind = "e1" if experiment in ("synthetic", "e1") else "e2"
    try:
        if kind == "e1":
            from .experiments.e1 import E1Config

            ablation = 1 if level == 0 else 0
            cfg = E1Config(seed=seed, schedule=schedule, level=level, ablation_level=ablation, **(QUICK_E1 if quick else {}))
        else:
            from .experiments import E2Config

            cfg = E2Config(seed=seed, preset=preset, eps=eps, device=device, **(QUICK if quick else {}))
    except (ValueError, TypeError) as exc:
        console.print(f"[red]error:[/red] {escape(str(exc))}")
        raise typer.Exit(2) from exc
    out_dir = out or _default_out()
    if kind == "e1":
        from .experiments.e1 import run_e1 as runner, write_e1 as writer

        console.print(
            f"[bold]E1[/bold] (synthetic, exact metrics): {cfg.n_scales} deviation scales, {cfg.schedule} schedule, "
            f"N={cfg.n_samples}, singular vector {cfg.level + 1} (ablation: {cfg.ablation_level + 1 if cfg.ablation_level is not None else 'none'})"
        )
        truth = "refit RMSE (negative: the metric falls as transfer gets worse)"
    else:
        from .experiments import run_e2 as runner, write_e2 as writer

        console.print(
            f"[bold]E2[/bold]: {len(cfg.source_domains) * len(cfg.architectures)} sources "
            f"({', '.join(cfg.architectures)} x {', '.join(cfg.source_domains)}) vs a {cfg.target_arch} target, preset {cfg.preset}"
        )
        truth = "linear-probe accuracy on the target"
    # The limit covers writing too: summary.json records the thread count in force.
    with _thread_limit(threads):
        with Progress(
            TextColumn("{task.description:<28}"), BarColumn(), TextColumn("{task.completed}/{task.total}"), TimeElapsedColumn(),
            console=console, transient=False,
        ) as bar:
            task_id = bar.add_task("starting", total=1)

            def progress(stage: str, done: int, total: int) -> None:
                bar.update(task_id, description=stage, completed=done, total=total)

            result = runner(cfg, progress)
        paths = writer(result, out_dir)

    table = Table(title=f"Correlation with {truth}")
    for col in ("metric", "spearman", "95% CI", "pearson", "kendall"):
        table.add_column(col, justify="right" if col != "metric" else "left")
    for metric, c in result.correlations.items():
        ci = f"[{c.spearman_ci[0]:.2f}, {c.spearman_ci[1]:.2f}]" if c.spearman_ci else "-"
        table.add_row(metric, _f(c.spearman), ci, _f(c.pearson), _f(c.kendall))
    console.print(table)
    console.print(f"finished in {result.seconds:.1f} s")
    for kind_, path in paths.items():
        console.print(f"{kind_:>8}: {path}")


@contextmanager
def _thread_limit(n: int) -> Iterator[None]:
    """torch's intra-op threads and every BLAS/OpenMP pool limited to ``n`` for the block; restored afterwards."""
    import importlib

    import torch
    from threadpoolctl import threadpool_limits

    # Load their BLAS/OpenMP libraries first: threadpoolctl limits only the libraries already loaded.
    for name in ("numpy", "scipy.linalg", "sklearn"):
        importlib.import_module(name)

    old = torch.get_num_threads()
    try:
        with threadpool_limits(limits=n):
            torch.set_num_threads(n)
            yield
    finally:
        torch.set_num_threads(old)


def _f(v: float | None) -> str:
    return "-" if v is None else f"{v:.3f}"


def main() -> None:
    app()


if __name__ == "__main__":
    main()
