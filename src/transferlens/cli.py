"""The ``transferlens`` command line: a thin layer over the library (parse, call, show progress)."""

from __future__ import annotations

import dataclasses
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

# One thread by default (benchmarks/bench_threads.py): as fast as two on an idle 2-core machine, and several
# times faster when another process keeps a core busy (the models are small; extra threads wait on each other).
DEFAULT_THREADS = 1
# Typed shortcuts for common options: each is the same as --set NAME=VALUE, for experiments whose config has NAME.
SHORTCUTS = ("seed", "preset", "eps", "schedule", "level", "device")


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


def _fail(message: str, code: int = 2) -> typer.Exit:
    console.print(f"[red]error:[/red] {escape(message)}")
    return typer.Exit(code)


def _check_out_dir(out: Path, overwrite: bool) -> None:
    """Refuse, before any work, an output path that cannot take the results."""
    if out.exists() and not out.is_dir():
        raise _fail(f"--out {out} exists and is not a folder; pass a folder path")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise _fail(f"--out {out} is not empty; pass another folder, or --overwrite to replace its results")
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".transferlens-write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise _fail(f"cannot write into --out {out}: {exc.strerror or exc}") from exc


def _executor_option():
    return typer.Option(
        "serial", "--executor",
        help="Where cells are computed: serial (this process, one at a time), process (a local process pool) "
        "or ray (a Ray cluster). Every executor gives the same numbers.",
    )


def _workers_option():
    return typer.Option(
        None, "--workers",
        help="Cells computed at once (>= 1; default 1 for serial, the number of CPUs for process and ray). "
        "Each worker uses --threads threads.",
    )


def _address_option():
    return typer.Option(None, "--address", help="ray: the cluster to join, auto or HOST:PORT (default: start a local Ray instance).")


def _cpus_option():
    return typer.Option(1.0, "--cpus-per-cell", help="ray: CPUs each cell reserves on the cluster.")


def _gpus_option():
    return typer.Option(0.0, "--gpus-per-cell", help="ray: GPUs each cell reserves; above 0, cells run on cuda.")


def _out_option():
    return typer.Option(None, "--out", help="Output folder (default runs/<timestamp>/).")


def _overwrite_option():
    return typer.Option(False, "--overwrite", help="Replace the results in a non-empty --out folder.")


def _store_option():
    return typer.Option(None, "--store", help="Results store (default runs.db beside the run folders).")


def _fresh_option():
    return typer.Option(False, "--fresh", help="Recompute every cell, even those already in the store.")


def _make_executor(kind: str, workers: Optional[int], address: Optional[str], cpus: float, gpus: float, threads: int):
    """The executor the options ask for (and ``--threads`` checked), refused with what to do before any work;
    warnings printed."""
    import warnings

    from .runs.executors import ExecutorError, make_executor

    if threads < 1:
        raise _fail(f"--threads must be an integer >= 1, got {threads}")
    if workers is not None and workers < 1:
        raise _fail(f"--workers must be an integer >= 1 (the number of cells computed at once), got {workers}")
    if kind != "ray" and (address is not None or cpus != 1.0 or gpus != 0.0):
        raise _fail(f"--address, --cpus-per-cell and --gpus-per-cell apply to --executor ray only, not to {kind}")
    names = {"cpus_per_cell": "--cpus-per-cell", "gpus_per_cell": "--gpus-per-cell", "executor must": "--executor must"}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            executor = make_executor(
                kind, workers=workers, threads_per_worker=threads, address=address, cpus_per_cell=cpus, gpus_per_cell=gpus,
            )
        except (ValueError, TypeError, ExecutorError) as exc:
            message = str(exc)
            for name, option in names.items():
                message = message.replace(name, option)
            raise _fail(message) from exc
    for w in caught:
        console.print(f"[yellow]warning:[/yellow] {escape(str(w.message))}")
    return executor


def _run_name() -> str:
    return _dt.datetime.now().strftime("%Y%m%d-%H%M%S")


@app.command()
def run(
    experiment: str = typer.Argument("e2", help="Experiment name: e2 (default) or synthetic (e1). See `transferlens config show NAME`."),
    config: Optional[Path] = typer.Option(None, "--config", help="A TOML config (as printed by `transferlens config show NAME`)."),
    sets: list[str] = typer.Option([], "--set", help="Override one option: --set key=value (nested: train.lr=0.01). Repeatable."),
    quick: bool = typer.Option(False, "--quick", help="The 'quick' variant: a reduced run on less data, a smoke test in seconds."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Same as --set seed=N: every seed of the study derives from it."),
    preset: Optional[str] = typer.Option(None, "--preset", help="e2: alpha-metric preset, theory or paper (--set preset=...)."),
    eps: Optional[float] = typer.Option(None, "--eps", help="e2: attack radius (--set eps=...)."),
    schedule: Optional[str] = typer.Option(None, "--schedule", help="synthetic: accumulated or linear (--set schedule=...)."),
    level: Optional[int] = typer.Option(None, "--level", help="synthetic: singular vector of the attack, 0 = top (--set level=...)."),
    device: Optional[str] = typer.Option(None, "--device", help="e2: auto (CUDA when available), cpu or cuda."),
    out: Optional[Path] = _out_option(),
    overwrite: bool = _overwrite_option(),
    store_path: Optional[Path] = _store_option(),
    fresh: bool = _fresh_option(),
    threads: int = typer.Option(
        DEFAULT_THREADS, "--threads",
        help="CPU threads for torch and BLAS/OpenMP during the run (>= 1). One is fastest for these small models, "
        "especially beside other busy processes.",
    ),
    executor: str = _executor_option(),
    workers: Optional[int] = _workers_option(),
    address: Optional[str] = _address_option(),
    cpus_per_cell: float = _cpus_option(),
    gpus_per_cell: float = _gpus_option(),
) -> None:
    """Run an experiment: every cell's results go into the store the moment they exist (a rerun skips them),
    then results.csv, summary.json and report.html are written."""
    from .experiments import get_experiment
    from .runs.config import ConfigError, build_config

    runner = _make_executor(executor, workers, address, cpus_per_cell, gpus_per_cell, threads)
    try:
        exp = get_experiment(experiment)
    except ValueError as exc:
        raise _fail(str(exc)) from exc
    fields = set(getattr(exp.config_cls, "__dataclass_fields__", {}))
    given = {"seed": seed, "preset": preset, "eps": eps, "schedule": schedule, "level": level, "device": device}
    shortcut_sets = []
    for name in SHORTCUTS:
        value = given[name]
        if value is None:
            continue
        if name not in fields:
            raise _fail(f"--{name} does not apply to experiment {exp.name!r}; its options: {', '.join(sorted(fields))}")
        shortcut_sets.append(f"{name}={value!r}" if isinstance(value, str) else f"{name}={value}")
    try:
        cfg = build_config(exp.config_cls, defaults=exp.variants["quick"] if quick else None, file=config, sets=[*sets, *shortcut_sets])
    except (ConfigError, ValueError, TypeError) as exc:
        raise _fail(str(exc)) from exc
    out_dir = out or Path("runs") / _run_name()
    _check_out_dir(out_dir, overwrite)
    _execute(exp, cfg, out_dir, store_path=store_path, fresh=fresh, threads=threads, executor=runner)


_LIST_OPTIONS = ("--candidates", "--estimators")


def _split_lists(args: list[str]) -> dict[str, list[str]]:
    """``--candidates A B C --estimators x y`` (values up to the next option) from the unparsed arguments."""
    found: dict[str, list[str]] = {k: [] for k in _LIST_OPTIONS}
    current: str | None = None
    for token in args:
        if token.startswith("--"):
            name, eq, value = token.partition("=")
            if name not in _LIST_OPTIONS:
                raise _fail(f"unknown option {name}; see transferlens select --help")
            current = name
            if eq:
                found[name].extend(v for v in value.split(",") if v)
            continue
        if current is None:
            raise _fail(f"unexpected argument {token!r}; candidates go after --candidates")
        found[current].extend(v for v in token.split(",") if v)
    return found


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def select(
    ctx: typer.Context,
    target: Optional[str] = typer.Option(None, "--target", help="The target task: a .npz file (x_train, y_train, x_test, y_test), package.module:factory returning a Task, or mnist1d:DOMAIN / digits:TRANSFORM."),
    config: Optional[Path] = typer.Option(None, "--config", help="A TOML config (transferlens config show select): candidates with weights, kwargs, head."),
    sets: list[str] = typer.Option([], "--set", help="Override one option: --set key=value. Repeatable."),
    rank_by: Optional[str] = typer.Option(None, "--rank-by", help="The estimator that orders the table (default logme)."),
    verify: Optional[int] = typer.Option(None, "--verify", help="Transfer the top K candidates (linear probe on the target) and show how the ranking held up."),
    reference: Optional[str] = typer.Option(None, "--reference", help="A model trained on the target, package.module:factory[@WEIGHTS]: adds the alpha metrics."),
    device: Optional[str] = typer.Option(None, "--device", help="auto (CUDA when available), cpu or cuda."),
    out: Optional[Path] = _out_option(),
    overwrite: bool = _overwrite_option(),
    store_path: Optional[Path] = _store_option(),
    fresh: bool = _fresh_option(),
    threads: int = typer.Option(DEFAULT_THREADS, "--threads", help="CPU threads for torch and BLAS during the run (>= 1)."),
    executor: str = _executor_option(),
    workers: Optional[int] = _workers_option(),
    address: Optional[str] = _address_option(),
    cpus_per_cell: float = _cpus_option(),
    gpus_per_cell: float = _gpus_option(),
) -> None:
    """Rank candidate models for a target task with every transferability estimator.

    --candidates A B C ...: each [NAME=]package.module:factory[@WEIGHTS] (weights: .safetensors or a
    weights-only checkpoint). --estimators x y ...: a subset of the registered estimators (default: all
    that apply). Features and source predictions are extracted once per candidate and kept in the store,
    so rerunning with other estimators only computes the new scores.
    """
    from .experiments import get_experiment
    from .experiments.select import parse_candidate, verify_top, with_verified
    from .runs.config import ConfigError, build_config, config_to_dict

    runner = _make_executor(executor, workers, address, cpus_per_cell, gpus_per_cell, threads)
    lists = _split_lists(list(ctx.args))
    exp = get_experiment("select")
    overrides: dict[str, object] = {}
    try:
        if lists["--candidates"]:
            overrides["candidates"] = [config_to_dict(parse_candidate(c)) for c in lists["--candidates"]]
        base = build_config(exp.config_cls, file=config, sets=sets)
        data = config_to_dict(base)
        if target is not None:
            data["target"] = target
        if lists["--estimators"]:
            data["estimators"] = lists["--estimators"]
        for key, value in (("rank_by", rank_by), ("verify", verify), ("device", device)):
            if value is not None:
                data[key] = value
        if reference is not None:
            data["reference"] = config_to_dict(parse_candidate(reference))
        data.update(overrides)
        cfg = build_config(exp.config_cls, defaults=data)
    except (ConfigError, ValueError, TypeError) as exc:
        raise _fail(str(exc)) from exc
    out_dir = out or Path("runs") / _run_name()
    _check_out_dir(out_dir, overwrite)

    def finish(outcome, rerun):
        if cfg.verify == 0 or outcome.failed:
            return outcome
        second = rerun(with_verified(cfg, verify_top(outcome.result)))  # the scores are in the store: only verifies
        return dataclasses.replace(
            second, n_computed=outcome.n_computed + second.n_computed, n_skipped=outcome.n_skipped,
            seconds=outcome.seconds + second.seconds,
        )

    _execute(exp, cfg, out_dir, store_path=store_path, fresh=fresh, threads=threads, finish=finish, executor=runner)


def _open_run_store(store_path: Optional[Path], out_dir: Path):
    from .runs.store import Store, StoreError

    try:
        return Store(store_path or out_dir.parent / "runs.db")
    except StoreError as exc:
        raise _fail(str(exc)) from exc


def _status(state) -> str:
    """Running and failed cells and the time left, across all workers."""
    if state is None:
        return ""
    parts = [f"{state.running} running"] + ([f"{state.failed} failed"] if state.failed else [])
    if state.eta is not None and state.finished < state.total:
        parts.append(f"ETA {_dt.timedelta(seconds=round(state.eta))}")
    return ", ".join(parts)


def _execute(
    exp, cfg, out_dir: Path, *, store_path: Optional[Path], fresh: bool, threads: int, finish=None, executor=None,
) -> None:
    """Run ``exp`` with ``cfg`` into the store with a progress bar, write its outputs into ``out_dir``, print
    its summary. ``finish(outcome, store)`` may return a new outcome (e.g. a second, verifying pass).
    ``executor`` computes the cells (default: serial, in this process)."""
    from .runs.executors import ExecutorError
    from .runs.runner import RunInterrupted, execute

    executor = executor or "serial"

    try:  # a config the grid cannot build is refused before the store is touched
        exp.grid(cfg)
        title = exp.describe(cfg)
    except (ValueError, TypeError) as exc:
        raise _fail(str(exc)) from exc
    store = _open_run_store(store_path, out_dir)
    console.print(f"[bold]{escape(title)}[/bold]")
    with store, _thread_limit(threads):  # the limit covers writing too: summary.json records the threads in force
        with Progress(
            TextColumn("{task.description:<28}"), BarColumn(), TextColumn("{task.completed}/{task.total}"), TimeElapsedColumn(),
            TextColumn("{task.fields[status]}"), console=console, transient=False,
        ) as bar:
            task_id = bar.add_task("starting", total=1, status="")

            def progress(stage: str, done: int, total: int, state=None) -> None:
                bar.update(task_id, description=stage[:28], completed=done, total=total, status=_status(state))

            try:
                outcome = execute(exp, cfg, store=store, fresh=fresh, progress=progress, out_dir=str(out_dir),
                                  graceful_interrupt=True, executor=executor)
                if finish is not None:
                    outcome = finish(outcome, lambda c: execute(exp, c, store=store, fresh=False, progress=progress,
                                                                out_dir=str(out_dir), graceful_interrupt=True,
                                                                executor=executor))
            except RunInterrupted as stop:
                bar.stop()
                console.print(
                    f"[yellow]interrupted[/yellow] after {stop.n_done} of {stop.n_total} cells; they are kept in "
                    f"{store.path}. Run the same command again to resume (finished cells are skipped)."
                )
                raise typer.Exit(130) from None
            except (ValueError, TypeError, ExecutorError) as exc:  # a config the grid cannot build, a cluster out of reach
                bar.stop()
                raise _fail(str(exc)) from exc
        paths = exp.write(outcome.result, out_dir)
    _print_summary(exp, outcome.result)
    reused = f"; {outcome.n_skipped} of {outcome.n_cells} cells were already in the store" if outcome.n_skipped else ""
    console.print(f"finished in {outcome.seconds:.1f} s: {outcome.n_computed} cells computed{reused} (run {outcome.run_id})")
    for kind_, path in paths.items():
        console.print(f"{kind_:>8}: {path}")
    console.print(f"{'store':>8}: {store.path}")
    if outcome.failed:
        for label, err in outcome.failed:
            console.print(f"[red]failed cell[/red] {escape(label)}: {escape(err)}")
        console.print(f"{len(outcome.failed)} cell(s) failed; the results above leave them out. Fix the cause and rerun to compute them.")
        raise typer.Exit(1)


STORE_HELP = "Results store (default runs/runs.db)."


def _open_store(path: Optional[Path]):
    from .runs.results import DEFAULT_STORE
    from .runs.store import Store, StoreError

    p = path or DEFAULT_STORE
    if not p.exists():
        raise _fail(f"no results store at {p}; run an experiment first (transferlens run) or pass --store PATH")
    try:
        return Store(p, readonly=True)
    except StoreError as exc:
        raise _fail(str(exc)) from exc


def _when(t: float | None) -> str:
    return "-" if t is None else _dt.datetime.fromtimestamp(t).strftime("%Y-%m-%d %H:%M:%S")


@app.command("list")
def list_runs(store_path: Optional[Path] = typer.Option(None, "--store", help=STORE_HELP)) -> None:
    """The runs in the store, newest first: status, cells done/failed, start and duration."""
    with _open_store(store_path) as store:
        runs = store.runs()
    if not runs:
        console.print("no runs in the store yet")
        return
    table = Table(title=f"runs in {store_path or 'runs/runs.db'}", box=None, pad_edge=False)
    for col in ("run", "experiment", "status", "cells", "failed", "started", "took"):
        table.add_column(col, justify="right" if col in ("cells", "failed", "took") else "left", no_wrap=True)
    for r in runs:
        took = "-" if r["finished"] is None else f"{r['finished'] - r['created']:.1f} s"
        started = "-" if r["created"] is None else _dt.datetime.fromtimestamp(r["created"]).strftime("%m-%d %H:%M")
        table.add_row(r["run_id"], r["experiment"], r["status"], f"{r['n_done']}/{r['n_cells']}", str(r["n_failed"]), started, took)
    Console(width=max(console.width, 100)).print(table)  # one line per run, even in a narrow pipe


def _analysed(store_path: Optional[Path], run_id: str):
    from .runs.results import analyse_run
    from .runs.store import StoreError

    store = _open_store(store_path)
    try:
        return (*analyse_run(store, run_id), store)
    except (StoreError, ValueError) as exc:
        store.close()
        raise _fail(str(exc)) from exc


@app.command()
def show(
    run_id: str = typer.Argument("latest", help="Run id (a unique prefix is enough), or latest."),
    store_path: Optional[Path] = typer.Option(None, "--store", help=STORE_HELP),
) -> None:
    """A run's config (TOML) and headline correlations, from the store alone."""
    from .runs.config import dump_toml

    exp, result, info, store = _analysed(store_path, run_id)
    store.close()
    console.print(f"[bold]{info['run_id']}[/bold] ({info['experiment']}, {info['status']}, {info['n_done']}/{info['n_cells']} cells)")
    typer.echo(dump_toml(result.config))
    _print_summary(exp, result)
    for label, err in getattr(result, "failed_cells", ()):
        console.print(f"[red]not in the results[/red] {escape(label)}: {escape(err)}")


@app.command()
def report(
    run_id: str = typer.Argument("latest", help="Run id (a unique prefix is enough), or latest."),
    out: Optional[Path] = typer.Option(None, "--out", help="Output folder (default: the run's own folder, else runs/<run id>)."),
    store_path: Optional[Path] = typer.Option(None, "--store", help=STORE_HELP),
) -> None:
    """Rebuild results.csv, summary.json and report.html of a run from the store alone."""
    exp, result, info, store = _analysed(store_path, run_id)
    store.close()
    out_dir = out or Path(info.get("out_dir") or Path("runs") / info["run_id"])
    if out_dir.exists() and not out_dir.is_dir():
        raise _fail(f"--out {out_dir} exists and is not a folder; pass a folder path")
    paths = exp.write(result, out_dir)
    for kind_, path in paths.items():
        console.print(f"{kind_:>8}: {path}")


@app.command()
def export(
    run_id: str = typer.Argument("latest", help="Run id (a unique prefix is enough), or latest."),
    fmt: str = typer.Option("csv", "--format", help="csv, json or parquet (parquet needs pyarrow)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Output file (default runs/<run id>.<format>)."),
    wide: bool = typer.Option(False, "--wide", help="One row per cell and one column per metric (default: long rows)."),
    store_path: Optional[Path] = typer.Option(None, "--store", help=STORE_HELP),
) -> None:
    """Every result of a run as a table: long rows (run_id, cell_key, kind, metric, direction, value)."""
    import csv
    import json

    from .runs.results import resolve_run, wide_rows
    from .runs.store import StoreError

    if fmt not in ("csv", "json", "parquet"):
        raise _fail(f"--format must be csv, json or parquet, got {fmt!r}")
    if fmt == "parquet":
        try:
            import pyarrow  # noqa: F401
        except ImportError as exc:
            raise _fail("--format parquet needs pyarrow: pip install 'transferlens[parquet]' (or pip install pyarrow)") from exc
    with _open_store(store_path) as store:
        try:
            info = resolve_run(store, None if run_id == "latest" else run_id)
            rows = wide_rows(store, info["run_id"]) if wide else store.run_results(info["run_id"])
        except StoreError as exc:
            raise _fail(str(exc)) from exc
    path = out or Path("runs") / f"{info['run_id']}.{fmt}"
    path.parent.mkdir(parents=True, exist_ok=True)
    columns = list(dict.fromkeys(k for r in rows for k in r))
    if fmt == "csv":
        with path.open("w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=columns)
            writer.writeheader()
            writer.writerows({k: ("" if r.get(k) is None else r.get(k)) for k in columns} for r in rows)
    elif fmt == "json":
        path.write_text(json.dumps(rows, indent=1) + "\n")
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(rows), path)
    console.print(f"{len(rows)} rows of run {info['run_id']} -> {path}")


def _print_summary(exp, result) -> None:
    """The experiment's own console table when it declares one, then its correlations with the ground truth."""
    own = getattr(exp, "summary_table", None)
    if own is not None:
        title, columns, rows = own(result)
        table = Table(title=title)
        for i, col in enumerate(columns):
            table.add_column(col, justify="left" if i == 0 else "right")
        for row in rows:
            table.add_row(*[escape(str(v)) for v in row])
        Console(width=max(console.width, 150)).print(table)  # unwrapped rows, even in a narrow pipe
    corr = getattr(result, "correlations", None)
    if isinstance(corr, dict) and corr and all(hasattr(c, "spearman") for c in corr.values()):
        _print_correlations(exp, result)


def _print_correlations(exp, result) -> None:
    table = Table(title=f"Correlation with {exp.ground_truth}")
    for col in ("metric", "spearman", "95% CI", "pearson", "kendall"):
        table.add_column(col, justify="right" if col != "metric" else "left")
    for metric, c in result.correlations.items():
        ci = f"[{c.spearman_ci[0]:.2f}, {c.spearman_ci[1]:.2f}]" if c.spearman_ci else "-"
        table.add_row(metric, _f(c.spearman), ci, _f(c.pearson), _f(c.kendall))
    console.print(table)


config_app = typer.Typer(add_completion=False, help="Experiment configs as TOML.")
app.add_typer(config_app, name="config")


@config_app.command("show")
def config_show(
    experiment: str = typer.Argument(..., help="Experiment name (e2, synthetic)."),
    quick: bool = typer.Option(False, "--quick", help="Show the 'quick' variant."),
) -> None:
    """Print the full default config as TOML that `run --config FILE` accepts back."""
    from .experiments import get_experiment
    from .runs.config import build_config, dump_toml

    try:
        exp = get_experiment(experiment)
    except ValueError as exc:
        raise _fail(str(exc)) from exc
    cfg = build_config(exp.config_cls, defaults=exp.variants["quick"] if quick else None)
    header = f"transferlens config for {exp.name}" + (" (quick variant)" if quick else "") + f": {exp.title}"
    typer.echo(dump_toml(cfg, header=header), nl=False)


# Read by OpenMP / OpenBLAS / MKL when they load: a library first loaded inside the block (scikit-learn's
# OpenMP runtime loads on its first fit) starts with the limit without being imported up front.
_THREAD_ENV = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


@contextmanager
def _thread_limit(n: int) -> Iterator[None]:
    """torch's intra-op threads and every BLAS/OpenMP pool limited to ``n`` for the block (the pools already
    loaded through threadpoolctl, those loading later through their environment variables); restored
    afterwards."""
    import os

    import torch
    from threadpoolctl import threadpool_limits

    old = torch.get_num_threads()
    old_env = {k: os.environ.get(k) for k in _THREAD_ENV}
    try:
        os.environ.update({k: str(n) for k in _THREAD_ENV})
        with threadpool_limits(limits=n):
            torch.set_num_threads(n)
            yield
    finally:
        torch.set_num_threads(old)
        for k, v in old_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _f(v: float | None) -> str:
    return "-" if v is None else f"{v:.3f}"


def main() -> None:
    from .allocator import tune_allocator

    tune_allocator()  # large tensors reused from the heap, not mapped afresh at every attack step
    app()


if __name__ == "__main__":
    main()
