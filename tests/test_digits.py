"""Tests for the scikit-learn digits domains (``transferlens.data.digits``)."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
import torch

from transferlens.data.digits import DIGITS_TRANSFORMS, digits_task
from transferlens.data.task import Task

SHIFTS = [t for t in DIGITS_TRANSFORMS if t != "none"]


@pytest.fixture(scope="module")
def base() -> Task:
    return digits_task()


def test_transform_names() -> None:
    assert DIGITS_TRANSFORMS == ("none", "rotate", "flip", "invert", "blur", "noise", "crop")


@pytest.mark.parametrize("transform", DIGITS_TRANSFORMS)
def test_shapes_dtype_bounds(transform: str) -> None:
    task = digits_task(transform)
    assert isinstance(task, Task)
    assert task.x_train.shape[1:] == (1, 8, 8) and task.x_test.shape[1:] == (1, 8, 8)
    assert task.x_train.dtype == torch.float32 and task.x_test.dtype == torch.float32
    assert task.y_train.dtype == torch.int64 and task.y_test.dtype == torch.int64
    assert len(task.x_train) + len(task.x_test) == 1797
    assert task.bounds == (0.0, 1.0)
    assert task.num_classes == 10
    for x in (task.x_train, task.x_test):
        assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0
        assert bool(torch.isfinite(x).all())
    for y in (task.y_train, task.y_test):
        assert int(y.min()) >= 0 and int(y.max()) < 10
    assert task.name.startswith(f"digits-{transform}")
    assert task.description.startswith("sklearn digits 8x8")
    assert "\n" not in task.description
    assert task.meta["transform"] == transform
    assert task.meta["classes"] == list(range(10))


def test_split_is_stratified_and_sized(base: Task) -> None:
    assert len(base.x_test) == math.ceil(0.25 * 1797)
    assert set(base.y_train.tolist()) == set(range(10)) == set(base.y_test.tolist())
    train_frac = np.bincount(base.y_train.numpy(), minlength=10) / len(base.y_train)
    test_frac = np.bincount(base.y_test.numpy(), minlength=10) / len(base.y_test)
    assert np.abs(train_frac - test_frac).max() < 0.02
    assert float(base.x_train.max()) == 1.0  # scaled from 0..16 by 1/16


@pytest.mark.parametrize("transform", SHIFTS)
def test_strength_zero_is_identity(base: Task, transform: str) -> None:
    task = digits_task(transform, strength=0.0)
    assert torch.equal(task.x_train, base.x_train)
    assert torch.equal(task.x_test, base.x_test)
    assert torch.equal(task.y_train, base.y_train)
    assert torch.equal(task.y_test, base.y_test)


@pytest.mark.parametrize("transform", SHIFTS)
def test_strength_one_changes_images(base: Task, transform: str) -> None:
    task = digits_task(transform, strength=1.0)
    # Same split, so labels line up, but the images differ substantially.
    assert torch.equal(task.y_train, base.y_train)
    assert torch.equal(task.y_test, base.y_test)
    for shifted, orig in ((task.x_train, base.x_train), (task.x_test, base.x_test)):
        assert not torch.equal(shifted, orig)
        assert float((shifted - orig).abs().mean()) > 0.01


def test_transform_semantics(base: Task) -> None:
    x = base.x_train
    flipped = digits_task("flip").x_train
    assert torch.equal(flipped, x.flip(-1))
    inverted = digits_task("invert").x_train
    assert torch.allclose(inverted, 1.0 - x, atol=1e-6)
    half = digits_task("invert", strength=0.5).x_train
    assert torch.allclose(half, torch.full_like(half, 0.5), atol=1e-6)
    cropped = digits_task("crop").x_train  # 2-pixel rim
    assert float(cropped[..., :2, :].abs().max()) == 0.0
    assert float(cropped[..., -2:, :].abs().max()) == 0.0
    assert float(cropped[..., :, :2].abs().max()) == 0.0
    assert float(cropped[..., :, -2:].abs().max()) == 0.0
    assert torch.equal(cropped[..., 2:-2, 2:-2], x[..., 2:-2, 2:-2])
    assert digits_task("crop").meta["crop_pixels"] == 2
    # strength 2 = 180 degrees, an exact point reflection on the 8x8 grid.
    rot180 = digits_task("rotate", strength=2.0).x_train
    assert torch.allclose(rot180, x.flip(-1).flip(-2), atol=1e-5)
    rot = digits_task("rotate", strength=0.5)
    assert rot.meta["angle_degrees"] == 45.0
    assert "45 degrees" in rot.description
    blurred = digits_task("blur", strength=1.0).x_train
    assert float(blurred.std()) < float(x.std())  # smoothing reduces contrast
    assert float(digits_task("blur", strength=3.0).x_train.std()) < float(blurred.std())


def test_stronger_noise_moves_further(base: Task) -> None:
    d1 = float((digits_task("noise", strength=0.5).x_train - base.x_train).abs().mean())
    d2 = float((digits_task("noise", strength=2.0).x_train - base.x_train).abs().mean())
    assert 0 < d1 < d2


@pytest.mark.parametrize("transform", DIGITS_TRANSFORMS)
def test_determinism(transform: str) -> None:
    kwargs = dict(strength=0.7, classes=[3, 8, 5], test_fraction=0.3, seed=4, split_seed=9)
    a = digits_task(transform, **kwargs)
    b = digits_task(transform, **kwargs)
    for field in ("x_train", "y_train", "x_test", "y_test"):
        assert torch.equal(getattr(a, field), getattr(b, field))
    assert a.name == b.name and a.description == b.description and a.meta == b.meta


def test_noise_seed_changes_noise_only() -> None:
    a = digits_task("noise", seed=0)
    b = digits_task("noise", seed=1)
    assert torch.equal(a.y_train, b.y_train) and torch.equal(a.y_test, b.y_test)
    assert not torch.equal(a.x_train, b.x_train)
    assert not torch.equal(a.x_test, b.x_test)
    # seed does nothing for deterministic transforms
    assert torch.equal(digits_task("blur", seed=0).x_train, digits_task("blur", seed=5).x_train)


def test_split_seed_changes_split() -> None:
    a = digits_task(split_seed=0)
    b = digits_task(split_seed=1)
    assert not torch.equal(a.y_test, b.y_test) or not torch.equal(a.x_test, b.x_test)
    assert len(a.x_test) == len(b.x_test)


def test_class_subset_reindexes(base: Task) -> None:
    task = digits_task(classes=[7, 1, 4])
    assert task.num_classes == 3
    assert task.meta["classes"] == [7, 1, 4]
    assert task.name == "digits-none-c714"
    for y in (task.y_train, task.y_test):
        assert set(y.tolist()) == {0, 1, 2}
    # Each new label's images are exactly the original images of that digit (in some order).
    x_all = torch.cat([base.x_train, base.x_test])
    y_all = torch.cat([base.y_train, base.y_test])
    sub_x = torch.cat([task.x_train, task.x_test])
    sub_y = torch.cat([task.y_train, task.y_test])
    for new, digit in enumerate([7, 1, 4]):
        orig = x_all[y_all == digit].flatten(1)
        mine = sub_x[sub_y == new].flatten(1)
        assert len(orig) == len(mine)
        key = lambda t: sorted(map(tuple, t.tolist()))  # noqa: E731
        assert key(orig) == key(mine)


def test_names_and_meta() -> None:
    assert digits_task().name == "digits-none"
    assert digits_task("rotate", strength=0.5).name == "digits-rotate-s0.5"
    assert digits_task("blur", strength=2, classes=(3, 8)).name == "digits-blur-s2-c38"
    assert digits_task("noise", name="custom").name == "custom"
    meta = digits_task("noise", strength=0.5, seed=3, split_seed=2, test_fraction=0.2).meta
    assert meta["transform"] == "noise" and meta["strength"] == 0.5 and meta["seed"] == 3
    assert meta["split_seed"] == 2 and meta["test_fraction"] == 0.2
    assert meta["noise_std"] == pytest.approx(0.1)
    s = digits_task("invert").summary()
    assert s["input_shape"] == [1, 8, 8] and s["bounds"] == [0.0, 1.0]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(transform="shear"), "valid transforms are none, rotate"),
        (dict(transform=3), "unknown transform"),
        (dict(strength=-0.1), "strength"),
        (dict(strength=float("nan")), "strength"),
        (dict(strength=float("inf")), "strength"),
        (dict(strength="1"), "strength"),
        (dict(classes=[1, 1, 2]), "duplicates"),
        (dict(classes=[3, 10]), "range 0..9"),
        (dict(classes=[-1, 2]), "range 0..9"),
        (dict(classes=[4]), "at least 2"),
        (dict(classes=[]), "at least 2"),
        (dict(classes=[1.5, 2]), "integer"),
        (dict(classes="12"), "sequence"),
        (dict(test_fraction=0.0), "test_fraction"),
        (dict(test_fraction=1.0), "test_fraction"),
        (dict(test_fraction=1.5), "test_fraction"),
        (dict(test_fraction=float("nan")), "test_fraction"),
        (dict(test_fraction=0.001), "at least one sample of each"),
        (dict(seed=-1), "seed"),
        (dict(split_seed=1.5), "split_seed"),
        (dict(name=""), "name"),
    ],
)
def test_bad_inputs_raise(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        digits_task(**kwargs)


def test_global_rng_state_untouched() -> None:
    np_state = np.random.get_state()
    torch_state = torch.get_rng_state()
    py_state = random.getstate()
    digits_task("noise", seed=11, split_seed=5)
    digits_task("rotate", classes=[0, 9])
    after = np.random.get_state()
    assert np_state[0] == after[0]
    assert np.array_equal(np_state[1], after[1])
    assert np_state[2:] == after[2:]
    assert torch.equal(torch_state, torch.get_rng_state())
    assert py_state == random.getstate()


def test_returned_tensors_are_independent() -> None:
    a = digits_task()
    a.x_train.zero_()
    b = digits_task()
    assert float(b.x_train.max()) == 1.0
