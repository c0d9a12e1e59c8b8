"""Small architectures for the embedded domains: MLP, 1-D CNN, 2-D CNN."""

from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
from torch import nn

from .._torch import seeded
from .._validate import check_int, check_seed
from .base import FeatureModel


class MLP(FeatureModel):
    """Flatten -> [Linear -> ReLU] x len(hidden) -> Linear head."""

    def __init__(self, input_shape: Sequence[int], num_classes: int, hidden: Sequence[int] = (256, 64)) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        width = math.prod(input_shape)
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            width = h
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(width, num_classes)


class CNN1D(FeatureModel):
    """1-D CNN for (N, L) or (N, C, L) signals: three convolutions, then a dense feature layer."""

    def __init__(self, input_shape: Sequence[int], num_classes: int, channels: int = 32, feature_dim: int = 64) -> None:
        super().__init__()
        if len(input_shape) == 1:
            in_ch, length = 1, input_shape[0]
            self._add_channel = True
        elif len(input_shape) == 2:
            in_ch, length = input_shape
            self._add_channel = False
        else:
            raise ValueError(f"CNN1D needs inputs of shape (L,) or (C, L), got {tuple(input_shape)}")
        self.conv = nn.Sequential(
            nn.Conv1d(in_ch, channels, 5, padding=2),
            nn.ReLU(),
            nn.Conv1d(channels, channels, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv1d(channels, channels, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.Flatten(),
        )
        out_len = (length + 1) // 2
        out_len = (out_len + 1) // 2
        self.dense = nn.Sequential(nn.Linear(channels * out_len, feature_dim), nn.ReLU())
        self.head = nn.Linear(feature_dim, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        if self._add_channel:
            x = x.unsqueeze(1)
        return self.dense(self.conv(x))


class CNN2D(FeatureModel):
    """Small 2-D CNN for (N, C, H, W) images (e.g. 8x8 digits)."""

    def __init__(self, input_shape: Sequence[int], num_classes: int, channels: int = 16, feature_dim: int = 64) -> None:
        super().__init__()
        if len(input_shape) != 3:
            raise ValueError(f"CNN2D needs inputs of shape (C, H, W), got {tuple(input_shape)}")
        c, h, w = input_shape
        self.body = nn.Sequential(
            nn.Conv2d(c, channels, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(channels, 2 * channels, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.Flatten(),
            nn.Linear(2 * channels * ((h + 1) // 2) * ((w + 1) // 2), feature_dim),
            nn.ReLU(),
        )
        self.head = nn.Linear(feature_dim, num_classes)


ARCHITECTURES: dict[str, Callable[..., FeatureModel]] = {"mlp": MLP, "cnn1d": CNN1D, "cnn2d": CNN2D}


def build_model(arch: str, input_shape: Sequence[int], num_classes: int, *, seed: int = 0, **kwargs: object) -> FeatureModel:
    """Instantiate a zoo architecture with weights drawn from ``seed`` (global RNG left untouched)."""
    if not isinstance(arch, str) or arch not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {arch!r}; choose one of {sorted(ARCHITECTURES)}")
    num_classes = check_int(num_classes, "num_classes", 2)
    seed = check_seed(seed)
    try:
        shape = tuple(check_int(d, "input_shape entries", 1) for d in input_shape)
    except TypeError as exc:
        if isinstance(exc, ValueError):
            raise
        raise TypeError(f"input_shape must be a sequence of positive integers, got {input_shape!r}") from exc
    with seeded(seed):
        model = ARCHITECTURES[arch](shape, num_classes, **kwargs)
    model.arch = arch  # type: ignore[assignment]
    return model
