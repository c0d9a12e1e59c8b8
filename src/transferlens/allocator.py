"""glibc's malloc, set up for large short-lived tensors.

By default glibc serves every allocation above its mmap threshold (128 KiB, raised on the fly up to the largest
block freed) with a fresh ``mmap`` and returns heap memory to the system as soon as more than twice that sits
free at the top. A batched attack allocates and frees megabyte-sized activations and gradients at every step,
so each step maps fresh pages and the kernel zero-fills them on first touch: on a 2-core CPU that doubled the
time of the alpha metrics at the default batch of 1,024 samples (``benchmarks/bench_alpha.py``). Raising both
thresholds keeps those blocks in the heap, reused from step to step. ``mallopt`` is not thread-safe: call it
before starting threads of your own.

:func:`tune_allocator` does that for the current process. The ``transferlens`` command and the worker processes
of a run call it on start; a Python program calls it once itself. It changes no result, only where freed memory
goes: up to ``trim_threshold`` bytes of freed heap stay with the process instead of going back to the system.
"""

from __future__ import annotations

import ctypes
import os
import platform
from dataclasses import dataclass

MMAP_THRESHOLD = 32 << 20
"""Allocations below this many bytes come from the heap (glibc's default starts at 128 KiB; glibc up to 2.34
refuses more than 32 MiB on 64-bit systems)."""

TRIM_THRESHOLD = 256 << 20
"""Free memory at the top of the heap is returned to the system only beyond this many bytes."""

DISABLE_ENV = "TRANSFERLENS_TUNE_MALLOC"
"""Set to ``0`` to leave the allocator alone (the command line and the run workers then do not touch it)."""

# Settings the user made themselves, which win: glibc reads these environment variables at start-up.
USER_ENV = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_", "MALLOC_MMAP_MAX_")
OTHER_ALLOCATORS = ("jemalloc", "tcmalloc", "mimalloc")

_M_TRIM_THRESHOLD = -1  # mallopt parameters, from glibc's <malloc.h>
_M_MMAP_THRESHOLD = -3


@dataclass(frozen=True)
class AllocatorTuning:
    """What :func:`tune_allocator` did: ``applied`` (both thresholds set), the thresholds asked for, and in
    ``reason`` why nothing was set when ``applied`` is false."""

    applied: bool
    mmap_threshold: int
    trim_threshold: int
    reason: str = ""


_state: dict[str, AllocatorTuning] = {}


def _check_bytes(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be a number of bytes (int), got {type(value).__name__}")
    if not 0 < value < 2**31:
        raise ValueError(f"{name} must lie in 1 .. 2**31 - 1 bytes (glibc takes an int), got {value}")
    return value


def _skip_reason() -> str:
    """Why the allocator should be left as it is, or ``""``."""
    if os.environ.get(DISABLE_ENV, "").strip().lower() in ("0", "false", "no", "off"):
        return f"{DISABLE_ENV} is set to {os.environ[DISABLE_ENV]!r}"
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return "not a glibc system (thresholds are glibc's)"
    preload = os.environ.get("LD_PRELOAD", "")
    for name in OTHER_ALLOCATORS:
        if name in preload:
            return f"{name} is preloaded (LD_PRELOAD) and replaces glibc's malloc"
    for var in USER_ENV:
        if var in os.environ:
            return f"{var} is set in the environment: the user's settings stand"
    if "glibc.malloc." in os.environ.get("GLIBC_TUNABLES", ""):
        return "GLIBC_TUNABLES sets malloc tunables: the user's settings stand"
    return ""


def tune_allocator(mmap_threshold: int = MMAP_THRESHOLD, trim_threshold: int = TRIM_THRESHOLD) -> AllocatorTuning:
    """Raise glibc's mmap and trim thresholds for this process (``mallopt``), so that the large tensors a batched
    attack allocates and frees at every step are reused from the heap rather than mapped afresh each time.

    Nothing is changed, and ``applied`` is false with the reason, on a system without glibc, when another
    allocator is preloaded, when the user set glibc's malloc environment variables (``MALLOC_*_`` or
    ``GLIBC_TUNABLES``) or when ``TRANSFERLENS_TUNE_MALLOC=0``. Calling it again with the same thresholds returns
    the first call's answer and changes nothing. Setting either threshold turns off glibc's own adjustment of the mmap threshold for the rest of
    the process; setting only one of them makes large blocks slower, so it is both or neither.
    """
    mmap_threshold = _check_bytes(mmap_threshold, "mmap_threshold")
    trim_threshold = _check_bytes(trim_threshold, "trim_threshold")
    done = _state.get("done")
    if done is not None and (done.mmap_threshold, done.trim_threshold) == (mmap_threshold, trim_threshold):
        return done
    reason = _skip_reason()
    if not reason:
        try:
            mallopt = ctypes.CDLL("libc.so.6").mallopt
        except (OSError, AttributeError) as exc:
            reason = f"glibc's mallopt is not reachable ({exc})"
        else:
            mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
            # the mmap threshold first: were it refused, a trim threshold alone would make large blocks slower
            # (every one of them mapped afresh), so the second call is then not made
            if not (mallopt(_M_MMAP_THRESHOLD, mmap_threshold) and mallopt(_M_TRIM_THRESHOLD, trim_threshold)):
                reason = "glibc refused the thresholds (mallopt returned 0)"
    result = AllocatorTuning(not reason, mmap_threshold, trim_threshold, reason)
    _state["done"] = result
    return result
