"""Where a run's cells are computed: in this process, on a local process pool, or on a Ray cluster.

The runner (:func:`transferlens.runs.runner.execute`) decides what runs when: it submits a cell once every
cell it depends on is finished, and it alone records results into the store. An executor only computes:

* ``serial`` (the default): one cell at a time in this process, with the run's own :class:`Context`
  (cells share its cache, and ``CellOutput.value`` stays available to the analysis);
* ``process``: ``workers`` local processes, forked from a ``forkserver`` that has imported transferlens
  once (``spawn`` where there is no forkserver); never forked from this process, which may have run torch
  (forking a process that has started torch's threads is unsafe);
* ``ray``: ``workers`` cells at once as Ray tasks, on a local Ray instance (``address=None``) or on an
  existing cluster (``"auto"`` or ``"HOST:PORT"``), each task reserving ``cpus_per_cell`` CPUs and
  ``gpus_per_cell`` GPUs (a cell with GPUs runs on ``cuda``).

A remote cell gets a :class:`CellJob`: its cell, the experiment (pickled), the device, and the outputs of
the cells it depends on (results, payload, arrays, weights; never ``value``, which is in-process only). It
runs in a fresh ``Context(store=None)`` prefilled with those outputs, with torch and every BLAS/OpenMP pool
pinned to ``threads_per_worker`` threads, and sends back its :class:`CellOutput` without ``value``. Workers
never open the store. Like a serial run, a worker keeps the data it generated from a spec alone (context
cache entries named in :data:`SHARED_CACHE`, for the last :data:`SHARED_CACHE_SIZE` specs) for its next
cells; it never keeps models, which a cell may change.

A cell that raises is returned as failed with its error text and the worker's traceback. A worker process
that dies mid-cell (killed, out of memory) gets its cell retried once; if it dies again, the cell is
recorded as failed with that reason. A local pool cannot tell which cell killed it, so every cell in flight
on a broken pool is charged its one retry.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import math
import multiprocessing
import os
import pickle
import signal
import socket
import sys
import time
import traceback
import warnings
from abc import ABC, abstractmethod
from collections import OrderedDict
from concurrent import futures
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Mapping

from .._validate import check_int, check_real
from ..allocator import tune_allocator
from .context import CellOutput, Context
from .spec import Cell

if TYPE_CHECKING:
    from ..experiments.base import Experiment

EXECUTORS = ("serial", "process", "ray")
# Imported once by the forkserver, so that every pool (and every pool rebuilt after a crash) starts in
# milliseconds rather than each worker importing torch again; scikit-learn and SciPy are otherwise imported
# on first use, inside a worker's first cells. Imports only: the forkserver runs no torch code.
# ``torch._dynamo`` (with SymPy, about 0.9 s) is what torch imports the first time an optimizer is built,
# inside every worker's first training cell otherwise.
PRELOAD = [
    "transferlens.experiments", "transferlens.runs.executors", "sklearn.linear_model", "sklearn.preprocessing",
    "sklearn.model_selection", "sklearn.metrics", "scipy.stats", "torch._dynamo",
]
# Read by OpenMP / OpenBLAS / MKL when they load (the same variables the CLI's --threads sets).
THREAD_ENV = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
RAY_INSTALL = "pip install 'transferlens[ray]'"
# Context cache entries that hold data generated from a spec alone (``("task", spec)``, ``("data", spec)``):
# a worker keeps them across cells, as a serial run does, instead of generating them again for every cell.
SHARED_CACHE = ("task", "data")
SHARED_CACHE_SIZE = 16
CONNECT_TIMEOUT = 3.0  # seconds to wait for a Ray cluster's port before giving up
WORKER_DIED = (
    "WorkerDied: the worker process computing this cell died (killed by a signal, or out of memory), "
    "also on its retry"
)


class ExecutorError(RuntimeError):
    """An executor cannot start (Ray missing, a cluster out of reach, resources it lacks); the message says
    what to do."""


@dataclass(frozen=True)
class Finished:
    """One computed cell: its output (``None`` when it failed), the one-line error (``"Type: message"``, as
    a serial run records it) and, from a worker, the traceback; when it started (``time.time()``), how many
    seconds it took and how often it was retried."""

    key: str
    output: CellOutput | None
    error: str | None = None
    detail: str | None = None
    started: float = 0.0
    seconds: float = 0.0
    retries: int = 0


@dataclass(frozen=True)
class CellJob:
    """What travels to a worker for one cell. ``experiment`` is pickled separately so that the worker can
    first add ``paths`` (the driver's import path) to its own, then import the module that defines it."""

    experiment: bytes
    cell: Cell
    device: str
    deps: Mapping[str, CellOutput] = field(default_factory=dict)
    threads: int = 1
    paths: tuple[str, ...] = ()


def error_text(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def compute_cell(experiment: "Experiment", cell: Cell, ctx: Context, *, keep_traceback: bool = False) -> Finished:
    """Run one cell; an exception (not Ctrl-C) becomes a failed :class:`Finished`."""
    started, t0 = time.time(), time.perf_counter()
    try:
        out = experiment.run_cell(cell, ctx)
    except KeyboardInterrupt:
        raise
    except Exception as exc:  # noqa: BLE001 - the cell is recorded as failed; the run goes on
        detail = traceback.format_exc() if keep_traceback else None
        return Finished(cell.key, None, error_text(exc), detail, started, time.perf_counter() - t0)
    return Finished(cell.key, out, None, None, started, time.perf_counter() - t0)


# ------------------------------------------------------------------------------------------------ workers

_pinned: list[Any] = []  # [threads, the threadpoolctl limiter kept alive]
_experiments: dict[str, Any] = {}
_generated: OrderedDict[Any, Any] = OrderedDict()  # this worker's SHARED_CACHE entries, oldest first


def pin_threads(n: int) -> None:
    """Limit this process to ``n`` threads for good: torch's intra-op pool, every BLAS/OpenMP pool already
    loaded (threadpoolctl) and those that load later (their environment variables)."""
    if _pinned and _pinned[0] == n:
        return
    import torch
    from threadpoolctl import threadpool_limits

    os.environ.update({k: str(n) for k in THREAD_ENV})
    torch.set_num_threads(n)
    _pinned[:] = [n, threadpool_limits(limits=n)]


def _init_process_worker(threads: int) -> None:
    """A pool process: Ctrl-C in the terminal reaches the whole process group; only the driver handles it."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    pin_threads(threads)


def _use_paths(paths: tuple[str, ...]) -> None:
    """The driver's import folders that exist here and are missing, after this worker's own (which win)."""
    for p in paths:
        if p not in sys.path and os.path.isdir(p):
            sys.path.append(p)


def _experiment(blob: bytes) -> Any:
    digest = hashlib.sha256(blob).hexdigest()
    if digest not in _experiments:
        _experiments[digest] = pickle.loads(blob)
    return _experiments[digest]


def _keep_generated(cache: dict[Any, Any]) -> None:
    for key, value in cache.items():
        if isinstance(key, tuple) and key and key[0] in SHARED_CACHE:
            _generated[key] = value
            _generated.move_to_end(key)
    while len(_generated) > SHARED_CACHE_SIZE:
        _generated.popitem(last=False)


def run_job(blob: bytes) -> bytes:
    """A worker's whole job: a pickled :class:`CellJob` in, a pickled :class:`Finished` out (without
    ``value``). Tensors travel by value inside the bytes, never through shared memory."""
    job: CellJob = pickle.loads(blob)
    _use_paths(job.paths)
    pin_threads(job.threads)
    tune_allocator()  # as the command line does in the driver (once per process; later calls return at once)
    ctx = Context(None, device=job.device)
    ctx.outputs.update(job.deps)
    ctx.cache.update(_generated)
    done = compute_cell(_experiment(job.experiment), job.cell, ctx, keep_traceback=True)
    _keep_generated(ctx.cache)
    if done.output is not None:
        done = dataclasses.replace(done, output=dataclasses.replace(done.output, value=None))
    return pickle.dumps(done, protocol=pickle.HIGHEST_PROTOCOL)


# ------------------------------------------------------------------------------------------------ executors


class Executor(ABC):
    """Computes the cells the runner submits. ``workers`` cells are in flight at most; ``in_process``
    executors share the run's Context (and need no dependency outputs shipped)."""

    name: ClassVar[str]
    in_process: ClassVar[bool] = False

    def __init__(self, workers: int = 1) -> None:
        self.workers = workers

    def start(self, experiment: "Experiment", ctx: Context) -> None:
        """Called once per run before any cell, before the store is touched (so a cluster that cannot be
        reached fails the run before it begins)."""

    @abstractmethod
    def submit(self, cell: Cell, deps: Mapping[str, CellOutput]) -> None:
        """Start computing ``cell``; ``deps`` are the outputs of its dependencies (empty in process)."""

    @abstractmethod
    def wait(self) -> list[Finished]:
        """Block until at least one submitted cell is finished (or was resubmitted); return those finished."""

    def close(self, abort: bool = False) -> None:
        """Release the workers; ``abort`` stops cells still in flight."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}(workers={self.workers})"


class SerialExecutor(Executor):
    """One cell at a time in this process, in grid order, with the run's own Context (the cells share its
    cache, and their outputs keep ``value`` for the analysis)."""

    name = "serial"
    in_process = True

    def __init__(self) -> None:
        super().__init__(1)
        self._queue: list[Cell] = []

    def start(self, experiment: "Experiment", ctx: Context) -> None:
        self._experiment, self._ctx = experiment, ctx

    def submit(self, cell: Cell, deps: Mapping[str, CellOutput]) -> None:
        self._queue.append(cell)

    def wait(self) -> list[Finished]:
        return [compute_cell(self._experiment, self._queue.pop(0), self._ctx)]

    def close(self, abort: bool = False) -> None:
        self._queue.clear()


class _Remote(Executor):
    """Shared by the executors whose cells run in other processes: how a job is packed."""

    def __init__(self, workers: int, threads_per_worker: int = 1) -> None:
        super().__init__(workers)
        self.threads_per_worker = threads_per_worker

    def device(self, ctx: Context) -> str:
        return ctx.device

    def start(self, experiment: "Experiment", ctx: Context) -> None:
        try:
            blob = pickle.dumps(experiment, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as exc:  # noqa: BLE001 - any pickling failure means the same thing here
            raise ExecutorError(
                f"experiment {getattr(experiment, 'name', experiment)!r} cannot be sent to worker processes "
                f"({error_text(exc)}); run it with the serial executor"
            ) from exc
        paths = tuple(dict.fromkeys(os.path.abspath(p or os.curdir) for p in sys.path))
        self._job = CellJob(blob, Cell.make("placeholder", {}), self.device(ctx), {}, self.threads_per_worker, paths)

    def pack(self, cell: Cell, deps: Mapping[str, CellOutput]) -> bytes:
        """The pickled job of ``cell`` (dependency outputs without ``value``)."""
        shipped = {k: dataclasses.replace(v, value=None) for k, v in deps.items()}
        job = dataclasses.replace(self._job, cell=cell, deps=shipped)
        return pickle.dumps(job, protocol=pickle.HIGHEST_PROTOCOL)


def _died(key: str, retries: int) -> Finished:
    return Finished(key, None, WORKER_DIED, None, time.time(), 0.0, retries)


def _mp_context() -> multiprocessing.context.BaseContext:
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(PRELOAD)  # takes effect when the forkserver starts (once per process)
    return ctx


class ProcessExecutor(_Remote):
    """A local pool of ``workers`` processes (``forkserver``, else ``spawn``). A worker that dies breaks the
    pool: it is recreated and every cell that was in flight is resubmitted once."""

    name = "process"

    def start(self, experiment: "Experiment", ctx: Context) -> None:
        super().start(experiment, ctx)
        self._inflight: dict[futures.Future, tuple[str, bytes, int]] = {}
        self._pool = self._new_pool()

    def _new_pool(self) -> futures.ProcessPoolExecutor:
        return futures.ProcessPoolExecutor(
            self.workers, mp_context=_mp_context(),
            initializer=_init_process_worker, initargs=(self.threads_per_worker,),
        )

    def submit(self, cell: Cell, deps: Mapping[str, CellOutput]) -> None:
        self._send(cell.key, self.pack(cell, deps), 0)

    def _send(self, key: str, blob: bytes, retries: int) -> None:
        self._inflight[self._pool.submit(run_job, blob)] = (key, blob, retries)

    def wait(self) -> list[Finished]:
        done, _ = futures.wait(self._inflight, return_when=futures.FIRST_COMPLETED)
        if any(isinstance(f.exception(), BrokenProcessPool) for f in done):
            done, _ = futures.wait(self._inflight)  # a broken pool fails every future still pending at once
        finished, lost = [], []
        for fut in done:
            key, blob, retries = self._inflight.pop(fut)
            exc = fut.exception()
            if exc is None:
                finished.append(dataclasses.replace(pickle.loads(fut.result()), retries=retries))
            elif isinstance(exc, BrokenProcessPool):
                lost.append((key, blob, retries))
            else:  # e.g. an output that cannot be pickled
                finished.append(Finished(key, None, error_text(exc), None, time.time(), 0.0, retries))
        if lost:
            finished += self._restart(lost)
        return finished

    def _restart(self, lost: list[tuple[str, bytes, int]]) -> list[Finished]:
        """A new pool; each lost cell is resubmitted once, or fails when it was already retried."""
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._pool = self._new_pool()
        failed = []
        for key, blob, retries in lost:
            if retries >= 1:
                failed.append(_died(key, retries))
            else:
                self._send(key, blob, retries + 1)
        return failed

    def close(self, abort: bool = False) -> None:
        pool = getattr(self, "_pool", None)
        if pool is None:
            return
        if abort:
            for proc in list((getattr(pool, "_processes", None) or {}).values()):
                proc.kill()
        pool.shutdown(wait=True, cancel_futures=True)
        self._pool = None
        self._inflight = {}


def _import_ray() -> Any:
    try:
        import ray
    except ImportError as exc:
        raise ExecutorError(f"the ray executor needs Ray, which is not installed: {RAY_INSTALL}") from exc
    return ray


def _check_reachable(address: str) -> None:
    """Fail within :data:`CONNECT_TIMEOUT` seconds, with what to do, when nothing listens at ``address``."""
    hostport = address.split("://", 1)[-1]
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise ExecutorError(f"Ray address {address!r} is not HOST:PORT (e.g. 10.0.0.5:6379) or auto")
    try:
        socket.create_connection((host, int(port)), timeout=CONNECT_TIMEOUT).close()
    except OSError as exc:
        raise ExecutorError(
            f"cannot reach a Ray cluster at {address} ({exc.strerror or exc}); start one there with "
            f"`ray start --head --port={port}`, or check the host, the port and the firewall"
        ) from None


class RayExecutor(_Remote):
    """Cells as Ray tasks (``max_retries=1``: a worker that dies gets its cell retried once by Ray)."""

    name = "ray"

    def __init__(
        self, workers: int, threads_per_worker: int = 1, address: str | None = None,
        cpus_per_cell: float = 1.0, gpus_per_cell: float = 0.0,
    ) -> None:
        super().__init__(workers, threads_per_worker)
        self.address, self.cpus_per_cell, self.gpus_per_cell = address, cpus_per_cell, gpus_per_cell

    def device(self, ctx: Context) -> str:
        return "cuda" if self.gpus_per_cell > 0 else ctx.device

    def start(self, experiment: "Experiment", ctx: Context) -> None:
        ray = _import_ray()
        super().start(experiment, ctx)
        if self.address not in (None, "auto"):
            _check_reachable(self.address)
        self._owns = not ray.is_initialized()
        if self._owns:
            self._connect(ray)
        self._check_resources(ray)
        self._task = ray.remote(run_job).options(
            num_cpus=self.cpus_per_cell, num_gpus=self.gpus_per_cell, max_retries=1, retry_exceptions=False,
        )
        self._inflight: dict[Any, tuple[str, float]] = {}

    def _connect(self, ray: Any) -> None:
        import logging

        quiet = dict(log_to_driver=False, logging_level=logging.WARNING)
        if self.address is None:
            ray.init(num_cpus=math.ceil(self.workers * self.cpus_per_cell), include_dashboard=False, **quiet)
            return
        try:
            ray.init(address=self.address, **quiet)
        except Exception as exc:  # noqa: BLE001 - whatever Ray raises, the user needs the same advice
            raise ExecutorError(
                f"cannot connect to a Ray cluster at {self.address!r} ({error_text(exc)}); start one with "
                "`ray start --head` and pass its HOST:PORT (or auto on one of its nodes)"
            ) from None

    def _check_resources(self, ray: Any) -> None:
        have = ray.cluster_resources()
        for name, need in (("CPU", self.cpus_per_cell), ("GPU", self.gpus_per_cell)):
            if need > have.get(name, 0.0):
                self.close()
                raise ExecutorError(
                    f"each cell asks for {need:g} {name}(s) but the Ray cluster has {have.get(name, 0.0):g} in "
                    f"all; lower --{name.lower()}s-per-cell or add nodes that have them"
                )

    def submit(self, cell: Cell, deps: Mapping[str, CellOutput]) -> None:
        self._inflight[self._task.remote(self.pack(cell, deps))] = (cell.key, time.time())

    def wait(self) -> list[Finished]:
        import ray

        ready, _ = ray.wait(list(self._inflight), num_returns=1)
        more, _ = ray.wait(list(self._inflight), num_returns=len(self._inflight), timeout=0)
        finished = []
        for ref in dict.fromkeys([*ready, *more]):
            key, _ = self._inflight.pop(ref)
            try:
                finished.append(pickle.loads(ray.get(ref)))
            except ray.exceptions.WorkerCrashedError:
                finished.append(_died(key, 1))
            except ray.exceptions.RayError as exc:  # e.g. the node of the task was lost
                finished.append(Finished(key, None, error_text(exc), None, time.time(), 0.0))
        return finished

    def close(self, abort: bool = False) -> None:
        ray = sys.modules.get("ray")
        if ray is None or not ray.is_initialized():
            return
        if abort:
            for ref in getattr(self, "_inflight", {}):
                ray.cancel(ref, force=True)
        self._inflight = {}
        if getattr(self, "_owns", False):
            ray.shutdown()
            self._owns = False


def _cap_workers(workers: int, name: str) -> int:
    cpus = os.cpu_count() or 1
    if workers > cpus:
        warnings.warn(
            f"workers={workers} is more than the {cpus} CPUs of this machine; using {cpus} "
            f"(more {name} workers than cores only wait on each other)", stacklevel=3,
        )
        return cpus
    return workers


def make_executor(
    kind: str = "serial",
    *,
    workers: int | None = None,
    threads_per_worker: int = 1,
    address: str | None = None,
    cpus_per_cell: float = 1.0,
    gpus_per_cell: float = 0.0,
) -> Executor:
    """An executor by name: ``"serial"``, ``"process"`` or ``"ray"``.

    ``workers``: cells in flight at once (default 1 for serial, the number of CPUs otherwise; more than
    the CPUs of this machine warns and is capped, except on a Ray cluster given by ``address``).
    ``threads_per_worker``: torch and BLAS threads in each worker process (default 1). ``address``,
    ``cpus_per_cell``, ``gpus_per_cell``: Ray only.
    """
    if kind not in EXECUTORS:
        raise ValueError(f"executor must be one of {', '.join(EXECUTORS)}, got {kind!r}")
    threads_per_worker = check_int(threads_per_worker, "threads_per_worker", 1)
    cpus_per_cell = check_real(cpus_per_cell, "cpus_per_cell", positive=True)
    gpus_per_cell = check_real(gpus_per_cell, "gpus_per_cell", nonnegative=True)
    if kind != "ray" and (address is not None or cpus_per_cell != 1.0 or gpus_per_cell != 0.0):
        raise ValueError(f"address, cpus_per_cell and gpus_per_cell apply to the ray executor only, not to {kind}")
    default = 1 if kind == "serial" else (os.cpu_count() or 1)
    workers = default if workers is None else check_int(workers, "workers", 1)
    if kind == "serial":
        if workers != 1:
            raise ValueError(f"the serial executor computes one cell at a time; use process or ray for workers={workers}")
        return SerialExecutor()
    if kind == "ray" and importlib.util.find_spec("ray") is None:
        raise ExecutorError(f"the ray executor needs Ray, which is not installed: {RAY_INSTALL}")
    if address is None:
        workers = _cap_workers(workers, kind)
    if kind == "process":
        return ProcessExecutor(workers, threads_per_worker)
    if address is not None and not isinstance(address, str):
        raise TypeError(f"address must be a string (auto or HOST:PORT), got {type(address).__name__}")
    return RayExecutor(workers, threads_per_worker, address, cpus_per_cell, gpus_per_cell)
