"""pml-miners: choose informative pairs and triplets from a batch.

Every miner is called as ``miner(embeddings, labels, ref_emb=None, ref_labels=None)`` and
returns an index tuple: triplets ``(a, p, n)`` or pairs ``(a1, p, a2, n)``, to pass to a loss
as ``indices_tuple``. The math lives in :mod:`pml.miners.functional`.

Example:
    >>> import torch
    >>> from pml.miners import BatchHardMiner
    >>> emb = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.2, 0.8]])
    >>> [t.tolist() for t in BatchHardMiner()(emb, torch.tensor([0, 0, 1, 1]))]
    [[0, 1, 2, 3], [1, 0, 3, 2], [3, 3, 1, 1]]
"""

from pml.miners.__about__ import __version__
from pml.miners._base import BaseMiner
from pml.miners._batch import BatchEasyHardMiner, BatchHardMiner
from pml.miners._distributed import DistributedMinerWrapper
from pml.miners._pair import HDCMiner, MultiSimilarityMiner, PairMarginMiner, UniformHistogramMiner
from pml.miners._triplet import (
    AngularMiner,
    DistanceWeightedMiner,
    EmbeddingsAlreadyPackagedAsTriplets,
    TripletMarginMiner,
)

__all__ = [
    "AngularMiner",
    "BaseMiner",
    "BatchEasyHardMiner",
    "BatchHardMiner",
    "DistanceWeightedMiner",
    "DistributedMinerWrapper",
    "EmbeddingsAlreadyPackagedAsTriplets",
    "HDCMiner",
    "MultiSimilarityMiner",
    "PairMarginMiner",
    "TripletMarginMiner",
    "UniformHistogramMiner",
    "__version__",
]
