"""Domains built from scikit-learn's bundled handwritten digits.

``sklearn.datasets.load_digits`` ships 1,797 real 8x8 grey-level images of the digits 0-9 (pixel values
0..16) with scikit-learn itself, so these tasks need no download. :func:`digits_task` turns them into a
:class:`~transferlens.data.task.Task` with inputs of shape ``(N, 1, 8, 8)`` scaled to ``[0, 1]``, and can
apply a deterministic *domain shift* (rotation, flip, contrast inversion, blur, noise, rim occlusion) of
adjustable ``strength`` to every image, train and test alike. Tasks that differ only in the transform are
the same labelled problem seen through different input distributions, which is what transfer experiments
between a source and a target domain need.

Every transform is the identity at ``strength=0``. No global random state (numpy, torch, or Python's) is
read or changed: noise comes from ``numpy.random.default_rng(seed)`` and the split from ``split_seed``.
"""

from __future__ import annotations

import functools
import math
import numbers
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from .._validate import check_real, check_seed
from .task import Task

__all__ = ["DIGITS_TRANSFORMS", "digits_task"]

DIGITS_TRANSFORMS: tuple[str, ...] = ("none", "rotate", "flip", "invert", "blur", "noise", "crop")
"""Names accepted by :func:`digits_task` as ``transform``."""

_NUM_DIGITS = 10
_SIDE = 8
_NOISE_STD = 0.2  # noise std at strength 1
_MAX_SEED = 2**32 - 1  # sklearn's random_state limit


@functools.lru_cache(maxsize=1)
def _load_digits() -> tuple[np.ndarray, np.ndarray]:
    """All 1,797 images as read-only ``float32`` ``(N, 8, 8)`` in ``[0, 1]`` and ``int64`` labels."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = (np.asarray(bunch.images, dtype=np.float64) / 16.0).astype(np.float32)
    labels = np.asarray(bunch.target, dtype=np.int64)
    images.setflags(write=False)
    labels.setflags(write=False)
    return images, labels


def _crop_pixels(strength: float) -> int:
    """Width of the zeroed rim for ``crop``: ``2 * strength`` rounded half up."""
    return int(math.floor(2.0 * strength + 0.5))


def _apply_transform(images: np.ndarray, transform: str, strength: float, seed: int) -> np.ndarray:
    """Return a transformed float32 copy of ``images`` (shape ``(N, 8, 8)``), clipped to ``[0, 1]``."""
    x = np.array(images, dtype=np.float32, copy=True)
    if transform == "none" or strength == 0:
        return x
    if transform == "rotate":
        from scipy.ndimage import rotate

        out = rotate(x, angle=90.0 * strength, axes=(2, 1), reshape=False, order=1, mode="constant", cval=0.0)
    elif transform == "flip":
        out = x[:, :, ::-1]
    elif transform == "invert":
        out = (1.0 - strength) * x + strength * (1.0 - x)
    elif transform == "blur":
        from scipy.ndimage import gaussian_filter

        out = gaussian_filter(x, sigma=(0.0, strength, strength), mode="constant", cval=0.0)
    elif transform == "noise":
        rng = np.random.default_rng(seed)
        out = x + rng.normal(0.0, _NOISE_STD * strength, size=x.shape)
    elif transform == "crop":
        b = min(_crop_pixels(strength), _SIDE // 2)
        out = x
        if b > 0:
            out[:, :b, :] = 0.0
            out[:, -b:, :] = 0.0
            out[:, :, :b] = 0.0
            out[:, :, -b:] = 0.0
    else:  # pragma: no cover - validated by the caller
        raise ValueError(f"unknown transform {transform!r}")
    return np.ascontiguousarray(np.clip(out, 0.0, 1.0), dtype=np.float32)


def _describe(transform: str, strength: float, seed: int) -> str:
    s = f"{strength:g}"
    if transform == "none" or strength == 0:
        return "unchanged"
    if transform == "rotate":
        return f"rotated by {90.0 * strength:g} degrees"
    if transform == "flip":
        return "horizontally flipped (mirrored left-right)"
    if transform == "invert":
        return f"contrast-inverted with strength {s} (x -> (1-s)x + s(1-x), clipped)"
    if transform == "blur":
        return f"gaussian-blurred with sigma {s} pixels"
    if transform == "noise":
        return f"with additive gaussian noise of std {_NOISE_STD * strength:g} (seed {seed}), clipped"
    b = min(_crop_pixels(strength), _SIDE // 2)
    return f"with the outer {b}-pixel rim zeroed (occluded)"


def _check_classes(classes: Sequence[int] | None) -> list[int]:
    if classes is None:
        return list(range(_NUM_DIGITS))
    if isinstance(classes, (str, bytes)) or not isinstance(classes, (Sequence, np.ndarray, torch.Tensor)):
        raise ValueError(f"classes must be a sequence of digit labels 0..9 or None, got {classes!r}")
    out: list[int] = []
    for c in list(classes):
        if isinstance(c, (np.ndarray, torch.Tensor)) and c.ndim == 0:
            c = c.item()
        if isinstance(c, (bool, np.bool_)) or not isinstance(c, (numbers.Integral, np.integer)):
            raise ValueError(f"classes must hold integer digit labels 0..9, got {c!r} in {classes!r}")
        c = int(c)
        if not 0 <= c < _NUM_DIGITS:
            raise ValueError(f"classes must lie in the range 0..9, got {c} in {list(classes)!r}")
        out.append(c)
    if len(set(out)) != len(out):
        raise ValueError(f"classes must not contain duplicates, got {out!r}")
    if len(out) < 2:
        raise ValueError(f"classes must name at least 2 distinct digits, got {out!r}")
    return out


def digits_task(
    transform: str = "none",
    *,
    strength: float = 1.0,
    classes: Sequence[int] | None = None,
    test_fraction: float = 0.25,
    seed: int = 0,
    split_seed: int = 0,
    name: str | None = None,
) -> Task:
    """A classification task on scikit-learn's 8x8 handwritten digits, optionally domain-shifted.

    Args:
        transform: one of :data:`DIGITS_TRANSFORMS`, applied identically to train and test images:

            * ``"none"``: the original images (``strength`` is ignored);
            * ``"rotate"``: rotated counter-clockwise by ``90 * strength`` degrees about the centre
              (bilinear, ``reshape=False``, zero fill, clipped to ``[0, 1]``);
            * ``"flip"``: mirrored left-right. A flip cannot be partial, so ``strength`` only switches it:
              ``0`` is the identity and any ``strength > 0`` is the full flip;
            * ``"invert"``: ``x -> (1 - s) * x + s * (1 - x)`` with ``s = strength`` (``1`` is the full
              negative, ``0.5`` a flat grey image); values are clipped to ``[0, 1]`` for ``s > 1``;
            * ``"blur"``: Gaussian blur with ``sigma = strength`` pixels (zero padding);
            * ``"noise"``: additive Gaussian noise of std ``0.2 * strength`` drawn from
              ``numpy.random.default_rng(seed)``, clipped to ``[0, 1]``;
            * ``"crop"``: occlusion of the rim: a border of ``round(2 * strength)`` pixels (rounded half
              up, at most 4, which blanks the image) is set to 0; the image stays 8x8.

        strength: finite number ``>= 0``; ``0`` is the identity for every transform.
        classes: optional subset of digits (distinct, in ``0..9``, at least 2) to keep. Labels are
            re-indexed to ``0..len(classes)-1`` in the order given, so ``classes=[7, 1]`` maps digit 7 to
            label 0 and digit 1 to label 1. ``meta["classes"]`` records the original digits.
        test_fraction: fraction of the samples held out for test, in ``(0, 1)``; the split is stratified
            by class, so every class appears in both splits.
        seed: seed of the ``"noise"`` transform (recorded but unused otherwise); integer ``>= 0``.
        split_seed: seed of the stratified train/test split; integer ``>= 0``.
        name: task name; defaults to ``"digits-<transform>"``, followed by ``-s<strength>`` when the
            strength is not 1 (and the transform is not ``"none"``) and ``-c<digits>`` when ``classes``
            is given, e.g. ``"digits-rotate-s0.5-c38"``.

    Returns:
        A :class:`Task` with ``float32`` inputs of shape ``(N, 1, 8, 8)``, ``bounds=(0.0, 1.0)``,
        ``int64`` labels, a one-line ``description`` of the domain, and every option in ``meta``.

    Raises:
        ValueError: for an unknown transform, a negative or non-finite strength, invalid classes, a
            ``test_fraction`` outside ``(0, 1)`` or too small/large to put every class in both splits,
            or negative / non-integer seeds.
    """
    if not isinstance(transform, str) or transform not in DIGITS_TRANSFORMS:
        raise ValueError(f"unknown transform {transform!r}; valid transforms are {', '.join(DIGITS_TRANSFORMS)}")
    strength = check_real(strength, "strength (0 = identity)", nonnegative=True)
    digit_classes = _check_classes(classes)
    test_fraction = check_real(test_fraction, "test_fraction", positive=True, below=1.0)
    seed = check_seed(seed, "seed", _MAX_SEED + 1)
    split_seed = check_seed(split_seed, "split_seed", _MAX_SEED + 1)
    if name is not None and (not isinstance(name, str) or not name):
        raise ValueError(f"name must be a non-empty string or None, got {name!r}")

    images, labels = _load_digits()
    # Transform the full set first, so an image's noise does not depend on the class subset or the split.
    x_all = _apply_transform(images, transform, strength, seed)

    keep = np.isin(labels, digit_classes)
    x_all = x_all[keep]
    remap = np.full(_NUM_DIGITS, -1, dtype=np.int64)
    remap[digit_classes] = np.arange(len(digit_classes), dtype=np.int64)
    y_all = remap[labels[keep]]

    n, k = len(y_all), len(digit_classes)
    n_test = math.ceil(test_fraction * n)
    if n_test < k or n - n_test < k:
        raise ValueError(
            f"test_fraction={test_fraction!r} gives {n_test} test and {n - n_test} train samples out of {n}; "
            f"both splits need at least one sample of each of the {k} classes"
        )

    from sklearn.model_selection import train_test_split

    x_tr, x_te, y_tr, y_te = train_test_split(
        x_all, y_all, test_size=test_fraction, stratify=y_all, random_state=split_seed, shuffle=True
    )

    if name is None:
        name = f"digits-{transform}"
        if transform != "none" and strength != 1.0:
            name += f"-s{strength:g}"
        if classes is not None:
            name += "-c" + "".join(str(c) for c in digit_classes)

    description = f"sklearn digits 8x8, {_describe(transform, strength, seed)}"
    if classes is not None:
        description += f"; digits {digit_classes} relabelled 0..{k - 1}"

    meta: dict[str, Any] = {
        "source": "sklearn.datasets.load_digits",
        "transform": transform,
        "strength": strength,
        "classes": list(digit_classes),
        "test_fraction": test_fraction,
        "seed": seed,
        "split_seed": split_seed,
        "image_size": [_SIDE, _SIDE],
    }
    if transform == "rotate":
        meta["angle_degrees"] = 90.0 * strength
    elif transform == "crop":
        meta["crop_pixels"] = min(_crop_pixels(strength), _SIDE // 2)
    elif transform == "noise":
        meta["noise_std"] = _NOISE_STD * strength

    def to_x(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32)).unsqueeze(1)

    return Task(
        name=name,
        x_train=to_x(x_tr),
        y_train=torch.from_numpy(np.ascontiguousarray(y_tr, dtype=np.int64)),
        x_test=to_x(x_te),
        y_test=torch.from_numpy(np.ascontiguousarray(y_te, dtype=np.int64)),
        num_classes=k,
        bounds=(0.0, 1.0),
        description=description,
        meta=meta,
    )
