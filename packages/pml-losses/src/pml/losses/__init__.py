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
from pml.losses._cross_batch_memory import CrossBatchMemory
from pml.losses._distributed import DistributedLossWrapper
from pml.losses._wrappers import MultipleLosses, SelfSupervisedLoss

__all__ = [
    "BaseLossWrapper",
    "BaseMetricLossFunction",
    "CrossBatchMemory",
    "DistributedLossWrapper",
    "EmbeddingRegularizerMixin",
    "GenericPairLoss",
    "MultipleLosses",
    "SelfSupervisedLoss",
    "TorchInitWrapper",
    "WeightMixin",
    "WeightRegularizerMixin",
    "__version__",
]
