"""Models that follow the ``features`` / ``head`` contract, and an adapter for any ``nn.Module``."""

from .base import FeatureModel, WrappedModel, wrap_model
from .zoo import ARCHITECTURES, CNN1D, CNN2D, MLP, build_model

__all__ = ["ARCHITECTURES", "CNN1D", "CNN2D", "MLP", "FeatureModel", "WrappedModel", "build_model", "wrap_model"]
