"""pml-distances: distance and similarity matrices for metric learning.

Example:
    >>> import torch
    >>> from pml.distances import CosineSimilarity
    >>> CosineSimilarity()(torch.eye(2)).tolist()
    [[1.0, 0.0], [0.0, 1.0]]
"""

from pml.distances.__about__ import __version__
from pml.distances._base import BaseDistance, ModuleWithRecordsAndDistance, assert_distance_type
from pml.distances._batched import BatchedDistance
from pml.distances._lp import LpDistance, SNRDistance
from pml.distances._similarity import CosineSimilarity, DotProductSimilarity

__all__ = [
    "BaseDistance",
    "BatchedDistance",
    "CosineSimilarity",
    "DotProductSimilarity",
    "LpDistance",
    "ModuleWithRecordsAndDistance",
    "SNRDistance",
    "__version__",
    "assert_distance_type",
]
