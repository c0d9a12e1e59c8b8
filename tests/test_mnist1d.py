"""Tests for the MNIST-1D domains (``transferlens.data.mnist1d``)."""

from __future__ import annotations

import json
import random
import socket
from typing import Any

import numpy as np
import pytest
import torch

from transferlens.data.mnist1d import MNIST1D_DOMAINS, SHIFT_KNOBS, mnist1d_task
from transferlens.data.task import Task

N = 400  # small: 320 train / 80 test


@pytest.fixture(scope="module")
def reference() -> Task:
    return mnist1d_task(num_samples=N)


def same_data(a: Task, b: Task) -> bool:
    return (
        torch.equal(a.x_train, b.x_train)
        and torch.equal(a.x_test, b.x_test)
        and torch.equal(a.y_train, b.y_train)
        and torch.equal(a.y_test, b.y_test)
    )


def test_domain_names() -> None:
    assert list(MNIST1D_DOMAINS)[0] == "reference"
    assert set(MNIST1D_DOMAINS) == {"reference", "noisy", "sheared", "untranslated", "very-noisy", "shuffled"}
    for overrides, description in MNIST1D_DOMAINS.values():
        assert set(overrides) <= set(SHIFT_KNOBS)
        assert isinstance(description, str) and description


def test_shapes_dtypes_classes(reference: Task) -> None:
    t = reference
    assert isinstance(t, Task)
    assert t.x_train.shape == (320, 40) and t.x_test.shape == (80, 40)
    assert t.input_shape == (40,)
    assert t.x_train.dtype == torch.float32 and t.x_test.dtype == torch.float32
    assert t.y_train.dtype == torch.int64 and t.y_test.dtype == torch.int64
    assert t.num_classes == 10
    assert t.bounds is None
    y = torch.cat([t.y_train, t.y_test])
    assert int(y.min()) >= 0 and int(y.max()) <= 9
    # mnist1d makes num_samples // 10 examples of every class
    assert torch.bincount(y, minlength=10).tolist() == [40] * 10
    for x in (t.x_train, t.x_test):
        assert bool(torch.isfinite(x).all())
    # standardized over the whole generated set
    x_all = torch.cat([t.x_train, t.x_test]).double()
    assert abs(float(x_all.mean())) < 1e-4
    assert abs(float(x_all.std(unbiased=False)) - 1.0) < 1e-4


def test_name_meta_summary(reference: Task) -> None:
    assert reference.name == "mnist1d-reference"
    assert reference.meta["generator"] == "mnist1d"
    assert reference.meta["domain"] == "reference"
    assert reference.meta["seed"] == 42 and reference.meta["num_samples"] == N
    assert "seed 42" in reference.description
    json.dumps(reference.summary())
    assert mnist1d_task(num_samples=N, seed=7).name == "mnist1d-reference-s7"
    assert mnist1d_task(num_samples=N, name="custom").name == "custom"


def test_train_split_respected() -> None:
    t = mnist1d_task(num_samples=N, train_split=0.5)
    assert len(t.x_train) == 200 and len(t.x_test) == 200


def test_deterministic(reference: Task) -> None:
    again = mnist1d_task(num_samples=N)
    assert again is not reference
    assert same_data(again, reference)


def test_returned_tensors_do_not_alias_cache(reference: Task) -> None:
    t = mnist1d_task(num_samples=N)
    before = t.x_train.clone()
    t.x_train.add_(100.0)
    t.y_train.zero_()
    fresh = mnist1d_task(num_samples=N)
    assert torch.equal(fresh.x_train, before)
    assert same_data(fresh, reference)


def test_different_seed_gives_different_data(reference: Task) -> None:
    other = mnist1d_task(num_samples=N, seed=1)
    assert other.x_train.shape == reference.x_train.shape
    assert not torch.equal(other.x_train, reference.x_train)
    assert not torch.equal(other.y_train, reference.y_train)


@pytest.mark.parametrize("domain", [d for d in MNIST1D_DOMAINS if d != "reference"])
def test_every_domain_builds_and_differs(domain: str, reference: Task) -> None:
    t = mnist1d_task(domain, num_samples=N)
    assert t.x_train.shape == (320, 40) and t.x_test.shape == (80, 40)
    assert t.x_train.dtype == torch.float32 and t.num_classes == 10
    assert bool(torch.isfinite(t.x_train).all()) and bool(torch.isfinite(t.x_test).all())
    assert t.name == f"mnist1d-{domain}"
    assert t.meta["domain"] == domain
    assert not torch.equal(t.x_train, reference.x_train)
    assert t.description.startswith(MNIST1D_DOMAINS[domain][1])


def test_domain_is_its_overrides_on_reference() -> None:
    noisy = mnist1d_task("noisy", num_samples=N)
    manual = mnist1d_task(num_samples=N, iid_noise_scale=0.1, corr_noise_scale=0.5)
    assert same_data(noisy, manual)


def test_overrides_equal_to_defaults_reproduce_reference(reference: Task) -> None:
    t = mnist1d_task(num_samples=N, iid_noise_scale=2e-2, corr_noise_scale=0.25)
    assert same_data(t, reference)


def test_override_changes_data_and_is_recorded(reference: Task) -> None:
    t = mnist1d_task(num_samples=N, iid_noise_scale=0.3)
    assert not torch.equal(t.x_train, reference.x_train)
    assert t.meta["iid_noise_scale"] == 0.3
    assert "iid_noise_scale=0.3" in t.description


def test_override_on_top_of_domain() -> None:
    sheared = mnist1d_task("sheared", num_samples=N)
    t = mnist1d_task("sheared", num_samples=N, shear_scale=0.75)
    assert t.meta["shear_scale"] == 0.75 and t.meta["scale_coeff"] == 0.8
    assert not torch.equal(t.x_train, sheared.x_train)


def test_list_valued_override() -> None:
    t = mnist1d_task(num_samples=N, padding=[30, 50])
    assert t.x_train.shape == (320, 40)
    assert t.meta["padding"] == [30, 50]
    json.dumps(t.summary())


def test_shuffled_domain_is_a_permutation_of_positions() -> None:
    # same seed, same samples: the shuffled domain permutes the 40 positions of each signal
    plain = mnist1d_task(num_samples=N, seed=5)
    shuffled = mnist1d_task("shuffled", num_samples=N, seed=5)
    assert torch.equal(plain.y_train, shuffled.y_train)
    a = torch.sort(plain.x_train, dim=1).values
    b = torch.sort(shuffled.x_train, dim=1).values
    assert torch.allclose(a, b, atol=1e-5)
    assert not torch.allclose(plain.x_train, shuffled.x_train)


# --------------------------------------------------------------------------------------------- errors


def test_unknown_domain() -> None:
    with pytest.raises(ValueError, match="unknown MNIST-1D domain 'nope'"):
        mnist1d_task("nope", num_samples=N)


@pytest.mark.parametrize("knob", ["noise", "final_seq_length", "url", "seed_offset"])
def test_unknown_knob(knob: str) -> None:
    with pytest.raises(ValueError, match="unknown MNIST-1D knob"):
        mnist1d_task(num_samples=N, **{knob: 1})


@pytest.mark.parametrize("num_samples", [0, 10, 19, -5, 400.0, "400", None])
def test_bad_num_samples(num_samples: Any) -> None:
    with pytest.raises(ValueError, match="num_samples must be an integer >= 20"):
        mnist1d_task(num_samples=num_samples)


@pytest.mark.parametrize("train_split", [0.0, 1.0, -0.1, 1.5, float("nan")])
def test_bad_train_split(train_split: float) -> None:
    with pytest.raises(ValueError, match=r"train_split must be in \(0, 1\)"):
        mnist1d_task(num_samples=N, train_split=train_split)


# --------------------------------------------------------------------------------------------- side effects


def test_global_rng_states_untouched() -> None:
    random.seed(1234)
    np.random.seed(1234)
    py_state = random.getstate()
    np_state = np.random.get_state()
    torch_state = torch.random.get_rng_state()
    mnist1d_task(num_samples=N, seed=98765)  # a seed no other test uses: really generates (no cache)
    assert random.getstate() == py_state
    after = np.random.get_state()
    assert after[0] == np_state[0]
    assert np.array_equal(after[1], np_state[1])
    assert after[2:] == np_state[2:]
    assert torch.equal(torch.random.get_rng_state(), torch_state)
    # the streams continue exactly where they were
    expected_np = np.random.RandomState()
    expected_np.set_state(np_state)
    assert np.random.rand() == expected_np.rand()


def test_no_network_and_no_files(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    import requests

    calls: list[Any] = []

    def forbidden(*args: Any, **kwargs: Any) -> Any:
        calls.append((args, kwargs))
        raise AssertionError("network access attempted")

    monkeypatch.setattr(requests, "get", forbidden)
    monkeypatch.setattr(requests.Session, "request", forbidden)
    monkeypatch.setattr(socket, "create_connection", forbidden)
    monkeypatch.setattr(socket.socket, "connect", forbidden)
    monkeypatch.chdir(tmp_path)
    t = mnist1d_task("very-noisy", num_samples=N, seed=4242)  # unique args: not served from the cache
    assert t.x_train.shape == (320, 40)
    assert calls == []
    assert list(tmp_path.iterdir()) == []  # nothing cached on disk either


# ------------------------------------------------------------------------------------------ disk cache


@pytest.fixture
def fresh_cache(tmp_path, monkeypatch):
    from transferlens.data import mnist1d

    monkeypatch.setenv("TRANSFERLENS_CACHE", str(tmp_path))
    mnist1d._generate.cache_clear()
    yield tmp_path / "mnist1d"
    mnist1d._generate.cache_clear()


def _arrays(t: Task) -> list[torch.Tensor]:
    return [t.x_train, t.y_train, t.x_test, t.y_test]


def test_a_generated_set_is_read_back_from_disk_not_generated_again(fresh_cache, monkeypatch) -> None:
    from transferlens.data import mnist1d

    first = mnist1d_task("noisy", seed=3, num_samples=200)
    files = list(fresh_cache.glob("*.npz"))
    assert len(files) == 1
    mnist1d._generate.cache_clear()
    monkeypatch.setattr(mnist1d, "_make", lambda items: pytest.fail("generated again despite the disk cache"))
    again = mnist1d_task("noisy", seed=3, num_samples=200)
    assert all(torch.equal(a, b) and a.dtype == b.dtype for a, b in zip(_arrays(first), _arrays(again)))


def test_other_arguments_are_other_files(fresh_cache) -> None:
    mnist1d_task("noisy", seed=3, num_samples=200)
    mnist1d_task("noisy", seed=4, num_samples=200)
    mnist1d_task("noisy", seed=3, num_samples=220)
    assert len(list(fresh_cache.glob("*.npz"))) == 3


def test_a_corrupt_cache_file_is_regenerated(fresh_cache) -> None:
    from transferlens.data import mnist1d

    want = mnist1d_task("sheared", seed=1, num_samples=200)
    (path,) = fresh_cache.glob("*.npz")
    path.write_bytes(path.read_bytes()[:100])  # truncated
    mnist1d._generate.cache_clear()
    got = mnist1d_task("sheared", seed=1, num_samples=200)
    assert all(torch.equal(a, b) for a, b in zip(_arrays(want), _arrays(got)))
    mnist1d._generate.cache_clear()
    assert all(torch.equal(a, b) for a, b in zip(_arrays(want), _arrays(mnist1d_task("sheared", seed=1, num_samples=200))))


def test_cache_off_and_unwritable_cache_still_give_the_data(tmp_path, monkeypatch) -> None:
    from transferlens.data import mnist1d

    monkeypatch.setenv("TRANSFERLENS_CACHE", "off")
    mnist1d._generate.cache_clear()
    assert mnist1d.cache_dir() is None
    want = mnist1d_task("reference", seed=2, num_samples=200)
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("TRANSFERLENS_CACHE", str(blocker))  # mkdir under a file fails: generate, don't cache
    mnist1d._generate.cache_clear()
    got = mnist1d_task("reference", seed=2, num_samples=200)
    assert all(torch.equal(a, b) for a, b in zip(_arrays(want), _arrays(got)))
    mnist1d._generate.cache_clear()
