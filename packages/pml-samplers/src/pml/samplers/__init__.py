"""pml-samplers: dataset samplers for metric learning (m per class, hierarchical, offline mining).

The numpy random streams match pytorch-metric-learning's under the same seed; every sampler
also accepts ``seed``, ``num_replicas`` and ``rank`` for DistributedDataParallel training
(see the README). Helpers live in :mod:`pml.samplers.functional`.

Example:
    >>> from pml.samplers import MPerClassSampler
    >>> sampler = MPerClassSampler([0, 0, 1, 1, 2, 2], m=2, batch_size=4, seed=0)
    >>> len(sampler)
    100000
"""

from pml.samplers.__about__ import __version__
from pml.samplers._fixed_pairs import FixedSetOfPairs
from pml.samplers._fixed_triplets import FixedSetOfTriplets
from pml.samplers._hierarchical import HierarchicalSampler
from pml.samplers._m_per_class import MPerClassSampler
from pml.samplers._m_per_class_batches import MPerClassBatchSampler
from pml.samplers._tuples_to_weights import TuplesToWeightsSampler
from pml.samplers.functional import get_labels_to_indices, safe_random_choice, set_numpy_random

__all__ = [
    "FixedSetOfPairs",
    "FixedSetOfTriplets",
    "HierarchicalSampler",
    "MPerClassBatchSampler",
    "MPerClassSampler",
    "TuplesToWeightsSampler",
    "__version__",
    "get_labels_to_indices",
    "safe_random_choice",
    "set_numpy_random",
]
