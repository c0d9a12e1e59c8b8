"""tune_allocator: glibc keeps large freed blocks for reuse (counted in page faults, in a fresh process), the
user's own allocator settings win, a refusal is reported, bad thresholds are refused, and the command line
tunes its process."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from transferlens import allocator, cli
from transferlens.allocator import DISABLE_ENV, AllocatorTuning, tune_allocator

GLIBC = allocator._skip_reason() == ""
needs_glibc = pytest.mark.skipif(not GLIBC, reason=f"glibc's thresholds only: {allocator._skip_reason()}")


def _transparent_huge_pages() -> str:
    try:
        with open("/sys/kernel/mm/transparent_hugepage/enabled") as f:
            return f.read().split("[")[1].split("]")[0]
    except (OSError, IndexError):
        return "unknown"


# With transparent huge pages always on, a fresh mapping faults once per 2 MiB: too few faults to count the waste.
small_pages = pytest.mark.skipif(
    _transparent_huge_pages() not in ("madvise", "never"),
    reason=f"transparent huge pages are {_transparent_huge_pages()!r}: page faults do not count the mappings",
)

# A PGD attack on a batch of 1,024 inputs allocates and frees megabyte-sized activations and gradients at every
# step: by default glibc maps most of them afresh (and the kernel zero-fills every page on first touch).
ATTACK = """
import json, resource, sys, torch
import transferlens as tl
tuning = tl.tune_allocator() if sys.argv[1] == "tune" else None
torch.set_num_threads(1)
model = tl.build_model("cnn1d", (40,), 10, seed=0)
x = torch.rand(1024, 40, generator=torch.Generator().manual_seed(0))
threat = tl.ThreatModel(norm="linf", eps=0.1, steps=8)
for _ in range(2):  # warm-up: the heap grows to what an attack needs
    tl.pgd(model, x, threat, "ce")
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(2):
    tl.pgd(model, x, threat, "ce")
faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
print(json.dumps({"faults": faults, "applied": None if tuning is None else tuning.applied}))
"""


def _attack(mode: str) -> dict:
    """Minor page faults of two identical attacks after two more, in a fresh process."""
    out = subprocess.run([sys.executable, "-c", ATTACK, mode], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.fixture()
def fresh_state(monkeypatch):
    """A first call again, whatever this process did before; glibc itself is not called."""
    monkeypatch.setattr(allocator, "_state", {})
    for var in (DISABLE_ENV, "LD_PRELOAD", "GLIBC_TUNABLES", *allocator.USER_ENV):
        monkeypatch.delenv(var, raising=False)


class FakeLibc:
    def __init__(self, answers=(1, 1)):
        self.answers = list(answers)
        self.calls: list[tuple[int, int]] = []

        def mallopt(param: int, value: int) -> int:
            self.calls.append((param, value))
            return self.answers[len(self.calls) - 1] if len(self.calls) <= len(self.answers) else 1

        self.mallopt = mallopt


@pytest.fixture()
def fake_libc(monkeypatch, fresh_state):
    lib = FakeLibc()
    monkeypatch.setattr(allocator.ctypes, "CDLL", lambda name: lib)
    monkeypatch.setattr(allocator, "_skip_reason", lambda: "")
    return lib


@needs_glibc
@small_pages
def test_a_tuned_process_reuses_freed_blocks_instead_of_faulting_them_in_again() -> None:
    default, tuned = _attack("default"), _attack("tune")
    assert tuned["applied"] is True
    # measured over 2 and 3 fresh processes: 42,000-67,000 faults by default (160-260 MiB of pages), 0-960 tuned
    assert default["faults"] > 10_000
    assert tuned["faults"] < 0.1 * default["faults"]


def test_both_thresholds_are_set_mmap_first_and_a_second_call_changes_nothing(fake_libc) -> None:
    first = tune_allocator()
    assert first == AllocatorTuning(True, allocator.MMAP_THRESHOLD, allocator.TRIM_THRESHOLD, "")
    assert fake_libc.calls == [(allocator._M_MMAP_THRESHOLD, allocator.MMAP_THRESHOLD), (allocator._M_TRIM_THRESHOLD, allocator.TRIM_THRESHOLD)]
    assert tune_allocator() is first
    assert len(fake_libc.calls) == 2
    other = tune_allocator(mmap_threshold=1 << 20, trim_threshold=1 << 24)  # other thresholds are applied
    assert other.applied and fake_libc.calls[2:] == [(allocator._M_MMAP_THRESHOLD, 1 << 20), (allocator._M_TRIM_THRESHOLD, 1 << 24)]


def test_a_refused_mmap_threshold_leaves_the_trim_threshold_alone_and_says_so(fake_libc) -> None:
    fake_libc.answers = [0, 1]
    out = tune_allocator()
    assert not out.applied and "refused" in out.reason
    assert fake_libc.calls == [(allocator._M_MMAP_THRESHOLD, allocator.MMAP_THRESHOLD)]


@pytest.mark.parametrize(
    "var, value, says",
    [
        (DISABLE_ENV, "0", DISABLE_ENV),
        (DISABLE_ENV, "off", DISABLE_ENV),
        ("MALLOC_TRIM_THRESHOLD_", "1000000", "MALLOC_TRIM_THRESHOLD_"),
        ("MALLOC_MMAP_THRESHOLD_", "1000000", "MALLOC_MMAP_THRESHOLD_"),
        ("GLIBC_TUNABLES", "glibc.malloc.trim_threshold=1000", "GLIBC_TUNABLES"),
        ("LD_PRELOAD", "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2", "jemalloc"),
    ],
)
def test_the_users_own_settings_win(monkeypatch, fresh_state, var, value, says) -> None:
    monkeypatch.setattr(allocator.platform, "system", lambda: "Linux")
    monkeypatch.setattr(allocator.platform, "libc_ver", lambda: ("glibc", "2.36"))
    monkeypatch.setenv(var, value)
    monkeypatch.setattr(allocator.ctypes, "CDLL", lambda name: pytest.fail("glibc must not be called"))
    out = tune_allocator()
    assert not out.applied and says in out.reason


def test_other_settings_in_the_environment_do_not_stop_it(monkeypatch, fresh_state) -> None:
    monkeypatch.setattr(allocator.platform, "system", lambda: "Linux")
    monkeypatch.setattr(allocator.platform, "libc_ver", lambda: ("glibc", "2.36"))
    monkeypatch.setenv(DISABLE_ENV, "1")
    monkeypatch.setenv("GLIBC_TUNABLES", "glibc.pthread.rseq=0")
    monkeypatch.setenv("LD_PRELOAD", "/opt/lib/libfaketime.so")
    assert allocator._skip_reason() == ""


@pytest.mark.parametrize("system, libc", [("Darwin", ("", "")), ("Linux", ("", "")), ("Linux", ("musl", "1.2"))])
def test_without_glibc_nothing_is_touched(monkeypatch, fresh_state, system, libc) -> None:
    monkeypatch.setattr(allocator.platform, "system", lambda: system)
    monkeypatch.setattr(allocator.platform, "libc_ver", lambda: libc)
    monkeypatch.setattr(allocator.ctypes, "CDLL", lambda name: pytest.fail("glibc must not be called"))
    out = tune_allocator()
    assert not out.applied and "glibc" in out.reason


def test_an_unreachable_mallopt_is_reported(monkeypatch, fresh_state) -> None:
    monkeypatch.setattr(allocator, "_skip_reason", lambda: "")

    def no_lib(name):
        raise OSError(f"{name}: cannot open shared object file")

    monkeypatch.setattr(allocator.ctypes, "CDLL", no_lib)
    out = tune_allocator()
    assert not out.applied and "not reachable" in out.reason


@pytest.mark.parametrize(
    "kwargs, err, match",
    [
        ({"mmap_threshold": 0}, ValueError, "mmap_threshold"),
        ({"trim_threshold": -5}, ValueError, "trim_threshold"),
        ({"trim_threshold": 2**31}, ValueError, "2\\*\\*31"),
        ({"mmap_threshold": 1.5e6}, TypeError, "mmap_threshold"),
        ({"mmap_threshold": True}, TypeError, "mmap_threshold"),
        ({"trim_threshold": "256M"}, TypeError, "trim_threshold"),
    ],
)
def test_bad_thresholds_are_refused_before_glibc_is_called(fake_libc, kwargs, err, match) -> None:
    with pytest.raises(err, match=match):
        tune_allocator(**kwargs)
    assert fake_libc.calls == []


def test_the_command_line_tunes_its_process_before_running(monkeypatch) -> None:
    order = []
    monkeypatch.setattr(allocator, "tune_allocator", lambda: order.append("tune"))
    monkeypatch.setattr(cli, "app", lambda: order.append("app"))
    cli.main()
    assert order == ["tune", "app"]
