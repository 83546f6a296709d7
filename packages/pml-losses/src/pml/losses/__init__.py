"""pml-losses: metric-learning losses and loss wrappers (reference-compatible API)."""

from pml.losses.__about__ import __version__
from pml.losses._anchor_batched import anchor_batched_backward
from pml.losses._angular_npairs import AngularLoss, NPairsLoss
from pml.losses._base import BaseLossWrapper, BaseMetricLossFunction
from pml.losses._contrastive import (
    ContrastiveLoss,
    IntraPairVarianceLoss,
    SignalToNoiseRatioContrastiveLoss,
)
from pml.losses._cross_batch_memory import CrossBatchMemory
from pml.losses._decoupled_contrastive import DecoupledContrastiveLoss
from pml.losses._distributed import DistributedLossWrapper
from pml.losses._dynamic_arcface import DynamicArcFaceLoss
from pml.losses._generic_pair import GenericPairLoss
from pml.losses._histogram_dsm import DynamicSoftMarginLoss, HistogramLoss
from pml.losses._lifted import GeneralizedLiftedStructureLoss, LiftedStructureLoss
from pml.losses._margin_softmax import (
    ArcFaceLoss,
    CosFaceLoss,
    LargeMarginSoftmaxLoss,
    SphereFaceLoss,
)
from pml.losses._multi_supcon import MultiSupConLoss
from pml.losses._nca_instance import InstanceLoss, NCALoss
from pml.losses._normalized_softmax import NormalizedSoftmaxLoss
from pml.losses._p2sgrad_manifold import ManifoldLoss, P2SGradLoss
from pml.losses._pair_weighting import CircleLoss, MultiSimilarityLoss
from pml.losses._proxy import ProxyAnchorLoss, ProxyNCALoss, SoftTripleLoss
from pml.losses._ranking import FastAPLoss, PNPLoss, RankedListLoss, SmoothAPLoss
from pml.losses._regularizer_mixins import (
    EmbeddingRegularizerMixin,
    TorchInitWrapper,
    WeightMixin,
    WeightRegularizerMixin,
)
from pml.losses._selectively_contrastive import SelectivelyContrastiveTripletLoss
from pml.losses._softmax_pairs import NTXentLoss, SupConLoss, TupletMarginLoss
from pml.losses._sub_center_arcface import SubCenterArcFaceLoss
from pml.losses._threshold_consistent import ThresholdConsistentMarginLoss
from pml.losses._triplet import MarginLoss, TripletMarginLoss
from pml.losses._vicreg import VICRegLoss
from pml.losses._wrappers import MultipleLosses, SelfSupervisedLoss

__all__ = [
    "AngularLoss",
    "ArcFaceLoss",
    "BaseLossWrapper",
    "BaseMetricLossFunction",
    "CircleLoss",
    "ContrastiveLoss",
    "CosFaceLoss",
    "CrossBatchMemory",
    "DecoupledContrastiveLoss",
    "DistributedLossWrapper",
    "DynamicArcFaceLoss",
    "DynamicSoftMarginLoss",
    "EmbeddingRegularizerMixin",
    "FastAPLoss",
    "GeneralizedLiftedStructureLoss",
    "GenericPairLoss",
    "HistogramLoss",
    "InstanceLoss",
    "IntraPairVarianceLoss",
    "LargeMarginSoftmaxLoss",
    "LiftedStructureLoss",
    "ManifoldLoss",
    "MarginLoss",
    "MultiSimilarityLoss",
    "MultiSupConLoss",
    "MultipleLosses",
    "NCALoss",
    "NPairsLoss",
    "NTXentLoss",
    "NormalizedSoftmaxLoss",
    "P2SGradLoss",
    "PNPLoss",
    "ProxyAnchorLoss",
    "ProxyNCALoss",
    "RankedListLoss",
    "SelectivelyContrastiveTripletLoss",
    "SelfSupervisedLoss",
    "SignalToNoiseRatioContrastiveLoss",
    "SmoothAPLoss",
    "SoftTripleLoss",
    "SphereFaceLoss",
    "SubCenterArcFaceLoss",
    "SupConLoss",
    "ThresholdConsistentMarginLoss",
    "TorchInitWrapper",
    "TripletMarginLoss",
    "TupletMarginLoss",
    "VICRegLoss",
    "WeightMixin",
    "WeightRegularizerMixin",
    "__version__",
    "anchor_batched_backward",
]
