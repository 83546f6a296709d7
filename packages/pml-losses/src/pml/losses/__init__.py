"""pml-losses: metric-learning losses and loss wrappers (reference-compatible API)."""

from pml.losses.__about__ import __version__
from pml.losses._angular import AngularLoss, NPairsLoss
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
from pml.losses._nca import InstanceLoss, NCALoss
from pml.losses._ntxent import NTXentLoss, TupletMarginLoss
from pml.losses._wrappers import MultipleLosses, SelfSupervisedLoss

__all__ = [
    "AngularLoss",
    "BaseLossWrapper",
    "BaseMetricLossFunction",
    "CrossBatchMemory",
    "DistributedLossWrapper",
    "EmbeddingRegularizerMixin",
    "GenericPairLoss",
    "InstanceLoss",
    "MultipleLosses",
    "NCALoss",
    "NPairsLoss",
    "NTXentLoss",
    "SelfSupervisedLoss",
    "TorchInitWrapper",
    "TupletMarginLoss",
    "WeightMixin",
    "WeightRegularizerMixin",
    "__version__",
]
