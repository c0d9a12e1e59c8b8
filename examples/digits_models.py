"""A user's own model file, as transferlens select sees it: plain torch, no transferlens imports.

``small_mlp`` builds the network; the trained weights live in ``examples/weights/*.safetensors``
(made by ``examples/make_example.py``).
"""

from torch import nn


class DigitsMLP(nn.Module):
    """8x8 grey images (N, 1, 8, 8) -> 10 class logits; the features are the input of ``classifier``."""

    def __init__(self, width: int = 48) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(64, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU())
        self.classifier = nn.Linear(width, 10)

    def forward(self, x):
        return self.classifier(self.body(x))


def small_mlp(width: int = 48) -> nn.Module:
    return DigitsMLP(width)
