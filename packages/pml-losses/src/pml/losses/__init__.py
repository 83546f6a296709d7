"""pml-losses: metric-learning losses and loss wrappers (reference-compatible API)."""

from pml.losses.__about__ import __version__
from pml.losses._base import (
    BaseLossWrapper,
    BaseMetricLossFunction,
    EmbeddingRegularizerMixin,
    GenericPairLoss,
    TorchInitWrapper,
    WeightMixin,
    WeightRegularizerMixin,
)

__all__ = [
    "BaseLossWrapper",
    "BaseMetricLossFunction",
    "EmbeddingRegularizerMixin",
    "GenericPairLoss",
    "TorchInitWrapper",
    "WeightMixin",
    "WeightRegularizerMixin",
    "__version__",
]
