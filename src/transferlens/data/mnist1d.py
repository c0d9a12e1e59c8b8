"""MNIST-1D domains, generated procedurally by the ``mnist1d`` package (never downloaded).

The generator's own arguments are natural domain-shift knobs: noise levels, shear, translation,
scale, and the spatial shuffle of the sequence. ``MNIST1D_DOMAINS`` names a ladder of domains from the
reference domain to severe shifts; :func:`mnist1d_task` builds any of them, or any custom mix of knobs.
"""

from __future__ import annotations

import random
from contextlib import contextmanager
from functools import lru_cache
from typing import Any, Iterator

import numpy as np
import torch

from .._validate import check_int, check_real, check_seed
from .task import Task

# Knobs of mnist1d's generator that describe the domain (plus ``seed`` and sample counts).
SHIFT_KNOBS = (
    "scale_coeff",
    "max_translation",
    "corr_noise_scale",
    "iid_noise_scale",
    "shear_scale",
    "shuffle_seq",
    "padding",
    "template_len",
)

# Named domains, ordered from no shift to severe shift. Each maps to generator overrides and a
# one-line description. "reference" is mnist1d's default domain.
MNIST1D_DOMAINS: dict[str, tuple[dict[str, Any], str]] = {
    "reference": ({}, "MNIST-1D default domain"),
    "noisy": ({"iid_noise_scale": 0.1, "corr_noise_scale": 0.5}, "MNIST-1D with stronger background noise"),
    "sheared": ({"shear_scale": 2.0, "scale_coeff": 0.8}, "MNIST-1D with strong shear and scale jitter"),
    "untranslated": ({"max_translation": 2, "corr_noise_scale": 0.05}, "MNIST-1D with digits barely translated"),
    "very-noisy": ({"iid_noise_scale": 0.4, "corr_noise_scale": 1.0}, "MNIST-1D drowned in noise"),
    "shuffled": ({"shuffle_seq": True}, "MNIST-1D with the 40 positions permuted (spatial structure destroyed)"),
}


@contextmanager
def _preserve_global_rng() -> Iterator[None]:
    """mnist1d seeds Python's and NumPy's global RNGs; keep the caller's streams untouched."""
    np_state = np.random.get_state()
    py_state = random.getstate()
    try:
        yield
    finally:
        np.random.set_state(np_state)
        random.setstate(py_state)


@lru_cache(maxsize=32)
def _generate(items: tuple[tuple[str, Any], ...]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args(as_dict=True)
    for key, value in items:
        args[key] = list(value) if isinstance(value, tuple) else value
    args.pop("url", None)

    class _Args:  # mnist1d reads attributes
        pass

    obj = _Args()
    obj.__dict__.update(args)
    with _preserve_global_rng():
        data = make_dataset(obj)
    return data["x"], data["y"], data["x_test"], data["y_test"]


def mnist1d_task(
    domain: str = "reference",
    *,
    seed: int = 42,
    num_samples: int = 5000,
    train_split: float = 0.8,
    name: str | None = None,
    **overrides: Any,
) -> Task:
    """Build an MNIST-1D task.

    ``domain`` picks a named domain from :data:`MNIST1D_DOMAINS`; ``overrides`` set any generator knob
    in :data:`SHIFT_KNOBS` on top of it. Inputs are (N, 40) float32 signals standardized over the whole
    generated set (mnist1d's own convention), 10 classes, no input bounds.
    """
    if domain not in MNIST1D_DOMAINS:
        raise ValueError(f"unknown MNIST-1D domain {domain!r}; choose one of {sorted(MNIST1D_DOMAINS)}")
    unknown = set(overrides) - set(SHIFT_KNOBS)
    if unknown:
        raise ValueError(f"unknown MNIST-1D knob(s) {sorted(unknown)}; valid knobs: {list(SHIFT_KNOBS)}")
    num_samples = check_int(num_samples, "num_samples", 20)
    train_split = check_real(train_split, "train_split", positive=True, below=1.0)
    seed = check_seed(seed, limit=2**32)  # mnist1d seeds numpy's legacy global RNG
    base, description = MNIST1D_DOMAINS[domain]
    knobs = {**base, **overrides}
    items = dict(knobs, seed=int(seed), num_samples=num_samples, train_split=float(train_split))
    key = tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in items.items()))
    x, y, xt, yt = _generate(key)
    if overrides:
        description += " + " + ", ".join(f"{k}={v}" for k, v in sorted(overrides.items()))
    return Task(
        name=name or (f"mnist1d-{domain}" + (f"-s{seed}" if seed != 42 else "")),
        x_train=torch.tensor(x, dtype=torch.float32),
        y_train=torch.tensor(y, dtype=torch.long),
        x_test=torch.tensor(xt, dtype=torch.float32),
        y_test=torch.tensor(yt, dtype=torch.long),
        num_classes=10,
        bounds=None,
        description=description + f" (generator seed {seed})",
        meta={"generator": "mnist1d", "domain": domain, **items},
    )
