"""FixedSetOfTriplets: a fixed set of (anchor, positive, negative) rows, reshuffled per pass."""

from __future__ import annotations

from collections.abc import Hashable, Iterator
from functools import cached_property
from typing import Any

import numpy as np
from torch.utils.data import Sampler

from pml.samplers import functional as SF
from pml.samplers._arguments import check_count
from pml.samplers._sharding import Sharding


class FixedSetOfTriplets(Sampler[int]):
    """Yield ``a0, p0, n0, a1, p1, n1, ...`` from a set of triplets built once.

    Each triplet draws two distinct labels (anchor, negative), two items of the anchor label
    (the same item twice when the label has one item) and one item of the negative label.
    Every pass shuffles the order of the triplets, never the set. Use a DataLoader batch
    size that is a multiple of 3, without shuffling, with
    ``pml.miners.EmbeddingsAlreadyPackagedAsTriplets``.

    The set equals pytorch-metric-learning's under the same numpy seed. With ``seed`` the
    set is drawn vectorised from a private generator (identical on every rank), and
    ``num_replicas``/``rank`` split the triplets between processes.

    Args:
        labels: one label per dataset item (list, numpy array or tensor).
        num_triplets: size of the set, ``> 0``.
        num_replicas: number of processes sharing the triplets (DDP world size).
        rank: this process's index in ``[0, num_replicas)``.
        seed: seed of a private generator; combined with :meth:`set_epoch` for the order.

    Raises:
        TypeError: ``num_triplets`` is not an int (a bool, ``2.7``; an integral float such
            as ``3.0`` is accepted, like the reference).
        InvalidArgumentError: ``num_triplets <= 0`` (also an ``AssertionError``).
        ValueError: fewer than two distinct labels, no label with two items, or (with
            ``num_replicas``) fewer triplets than ranks.

    Example:
        >>> np.random.seed(0)
        >>> sampler = FixedSetOfTriplets([0, 0, 1, 1, 2, 2], num_triplets=3)
        >>> len(sampler), sampler.fixed_set_of_triplets.tolist()
        (9, [[4, 5, 3], [0, 1, 5], [5, 4, 3]])
    """

    def __init__(
        self,
        labels: Any,
        num_triplets: int,
        *,
        num_replicas: int | None = None,
        rank: int | None = None,
        seed: int | None = None,
    ) -> None:
        # compat: the reference casts with int() (3.0 is accepted; 2.7 and True are not:
        # the reference would silently use 2 and 1)
        self.num_triplets = check_count("num_triplets", num_triplets, integral_float=True)
        self._keys, self._members, self._offsets = SF.group_by_label(labels)
        if len(self._keys) < 2:
            raise ValueError(
                "labels must hold at least 2 distinct labels to draw anchor and negative "
                f"labels; got {len(self._keys)}"
            )
        if not (np.diff(self._offsets) >= 2).any():
            # fix: the reference returns triplets whose anchor is also the positive
            raise ValueError(
                "labels must hold at least one label with 2 or more items (an anchor and a "
                f"positive); got {len(self._keys)} labels of one item each"
            )
        self._shard = Sharding(num_replicas, rank, seed)
        # fix: fewer triplets than ranks would give every rank nothing
        self._shard.require_blocks(self.num_triplets, f"num_triplets = {self.num_triplets}")
        if self._shard.seed is None:
            self.fixed_set_of_triplets = self._reference_set(SF.NUMPY_RANDOM)
        else:
            gen = np.random.default_rng([self._shard.seed, 2**32 - 1])  # not an epoch's
            self.fixed_set_of_triplets = self._vectorised_set(gen)

    @cached_property
    def labels_to_indices(self) -> dict[Hashable, np.ndarray]:
        """Each label's sorted item positions."""
        return {
            k: self._members[self._offsets[c] : self._offsets[c + 1]]
            for c, k in enumerate(self._keys)
        }

    def _group(self, c: int) -> np.ndarray:
        return self._members[self._offsets[c] : self._offsets[c + 1]]

    def _reference_set(self, rng: Any) -> np.ndarray:
        """Three draws per triplet, in the reference's order."""
        out = np.full((self.num_triplets, 3), -1, dtype=np.int64)
        num_labels = len(self._keys)
        classes = np.arange(num_labels)
        legacy = SF._is_legacy(rng)
        for i in range(self.num_triplets):
            if legacy:
                anchor_c, negative_c = rng.permutation(num_labels)[:2].tolist()
            else:
                anchor_c, negative_c = rng.choice(classes, size=2, replace=False).tolist()
            out[i, :2] = SF._choice(rng, self._group(anchor_c), 2)
            out[i, 2] = rng.choice(self._group(negative_c), replace=False)
        return out

    def _vectorised_set(self, rng: np.random.Generator) -> np.ndarray:
        """The same distribution without a Python loop over triplets."""
        num, num_labels = self.num_triplets, len(self._keys)
        labels = SF.sample_distinct(rng, num_labels, num, 2)
        sizes = np.diff(self._offsets)
        ap = SF.draw_within_groups(rng, sizes[labels[:, 0]], 2)
        ap[sizes[labels[:, 0]] == 1] = 0  # a single item is both anchor and positive
        neg = SF.draw_within_groups(rng, sizes[labels[:, 1]], 1)
        starts = self._offsets[labels]
        return np.concatenate(
            [self._members[starts[:, :1] + ap], self._members[starts[:, 1:] + neg]], axis=1
        )

    def __len__(self) -> int:
        return 3 * self._shard.num_blocks(self.num_triplets)

    def set_epoch(self, epoch: int) -> None:
        """Select the order of ``epoch`` (only with ``seed``/``num_replicas``)."""
        self._shard.set_epoch(epoch)

    def __iter__(self) -> Iterator[int]:
        if self._shard.seed is None:
            SF.NUMPY_RANDOM.shuffle(self.fixed_set_of_triplets)  # in place, like the reference
            rows = self.fixed_set_of_triplets
        else:
            perm = self._shard.rng().permutation(self.num_triplets)
            rows = self.fixed_set_of_triplets[perm]
        rows = self._shard.take(rows.reshape(-1), 3)
        return iter(rows.tolist())
