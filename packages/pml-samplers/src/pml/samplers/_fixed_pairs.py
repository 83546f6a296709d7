"""FixedSetOfPairs: a fixed, balanced set of positive and negative pairs, in whole batches."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Sampler

from pml.samplers import functional as SF
from pml.samplers._arguments import check_count
from pml.samplers._sharding import Sharding


class FixedSetOfPairs(Sampler[list[int]]):
    """Batches of pairs from a set of positive and negative pairs drawn once.

    The set holds ``num_pairs // 2`` positive pairs (a label drawn uniformly among the labels
    with two or more items, then two distinct items of it) and as many negative pairs (two
    distinct labels drawn uniformly, one item of each). Every pass shuffles the order of the
    pairs, never the set, and yields batches of ``batch_size`` indices: ``batch_size // 4``
    positive and ``batch_size // 4`` negative pairs in a random order, each pair as two
    consecutive indices (rows ``2j`` and ``2j + 1`` of a batch form pair ``j``). Pass it as a
    DataLoader's ``batch_sampler``; :meth:`pairs_tuple` turns a batch's labels into the
    ``(a1, p, a2, n)`` indices tuple of its pairs for any pair loss. A pass yields
    ``(num_pairs // 2) // (batch_size // 4)`` batches (the pairs that do not fill a batch
    wait for a later pass).

    Beyond the reference 2.9 (which has only :class:`FixedSetOfTriplets`). The set is drawn
    from a ``Generator`` seeded by ``seed`` (identical on every rank), or, without ``seed``,
    by one draw from the global numpy handle (:data:`pml.samplers.functional.NUMPY_RANDOM`);
    pass orders come from ``np.random.default_rng([seed, epoch])`` (:meth:`set_epoch`), or
    from the global handle. ``num_replicas``/``rank`` give each process whole batches.

    Args:
        labels: one label per dataset item (list, numpy array or tensor).
        num_pairs: size of the set, even (half positive, half negative).
        batch_size: indices per batch, a multiple of 4 (two pairs of each kind at least).
        num_replicas: number of processes sharing the batches (DDP world size).
        rank: this process's index in ``[0, num_replicas)``.
        seed: seed of a private generator.

    Raises:
        TypeError: ``num_pairs`` or ``batch_size`` is not an int.
        ValueError: ``num_pairs`` odd or below ``batch_size // 2``; ``batch_size`` not a
            multiple of 4; fewer than two labels, or no label with two items; (with
            ``num_replicas``) fewer batches than ranks.

    Example:
        >>> labels = [0, 0, 1, 1, 2, 2]
        >>> pairs = FixedSetOfPairs(labels, num_pairs=4, batch_size=4, seed=0)
        >>> len(pairs), pairs.positive_pairs.tolist(), pairs.negative_pairs.tolist()
        (2, [[2, 3], [0, 1]], [[3, 5], [0, 3]])
        >>> batch = next(iter(pairs))
        >>> batch, FixedSetOfPairs.pairs_tuple(torch.tensor([labels[i] for i in batch]))
        ([3, 5, 2, 3], (tensor([2]), tensor([3]), tensor([0]), tensor([1])))
    """

    def __init__(
        self,
        labels: Any,
        num_pairs: int,
        batch_size: int,
        *,
        num_replicas: int | None = None,
        rank: int | None = None,
        seed: int | None = None,
    ) -> None:
        self.num_pairs = check_count("num_pairs", num_pairs)
        self.batch_size = check_count("batch_size", batch_size)
        if self.num_pairs % 2:
            raise ValueError(
                f"num_pairs must be even (half positive, half negative pairs); got {num_pairs}"
            )
        if self.batch_size % 4:
            raise ValueError(
                "batch_size must be a multiple of 4 (pairs of 2 items, as many positive as "
                f"negative); got {batch_size}"
            )
        if self.num_pairs < self.batch_size // 2:
            raise ValueError(
                f"num_pairs must be >= batch_size // 2 = {self.batch_size // 2} (the pairs of "
                f"one batch); got {num_pairs}"
            )
        self._keys, self._members, self._offsets = SF.group_by_label(labels)
        sizes = np.diff(self._offsets)
        if len(self._keys) < 2:
            raise ValueError(
                "labels must hold at least 2 distinct labels (negative pairs); got "
                f"{len(self._keys)}"
            )
        if not (sizes >= 2).any():
            raise ValueError(
                "labels must hold at least one label with 2 or more items (positive pairs); "
                f"got {len(self._keys)} labels of one item each"
            )
        self._per_kind = self.batch_size // 4  # positive (and negative) pairs per batch
        self._num_batches = (self.num_pairs // 2) // self._per_kind
        self._shard = Sharding(num_replicas, rank, seed)
        # fix: fewer batches than ranks would give every rank nothing
        self._shard.require_blocks(
            self._num_batches,
            f"num_pairs = {self.num_pairs} in batches of {self.batch_size}",
        )
        if self._shard.seed is None:
            gen = SF.NUMPY_RANDOM
            if not isinstance(gen, np.random.Generator):
                gen = np.random.default_rng(int(gen.randint(0, 2**31 - 1)))
        else:
            gen = np.random.default_rng([self._shard.seed, 2**32 - 1])  # not an epoch's
        self.positive_pairs, self.negative_pairs = self._draw_set(gen, sizes)

    @property
    def fixed_set_of_pairs(self) -> np.ndarray:
        """The set, ``(num_pairs, 2)``: the positive pairs, then the negative pairs."""
        return np.concatenate([self.positive_pairs, self.negative_pairs])

    def _draw_set(self, rng: np.random.Generator, sizes: np.ndarray) -> tuple[np.ndarray, ...]:
        half = self.num_pairs // 2
        starts = self._offsets[:-1]
        eligible = np.flatnonzero(sizes >= 2)
        pos_c = eligible[rng.integers(0, len(eligible), half)]
        pos = self._members[starts[pos_c, None] + SF.draw_within_groups(rng, sizes[pos_c], 2)]
        neg_c = SF.sample_distinct(rng, len(sizes), half, 2)
        local = np.minimum(
            (rng.random((half, 2)) * sizes[neg_c]).astype(np.int64), sizes[neg_c] - 1
        )
        neg = self._members[starts[neg_c] + local]
        return pos.astype(np.int64), neg.astype(np.int64)

    def __len__(self) -> int:
        return self._shard.num_blocks(self._num_batches)

    def set_epoch(self, epoch: int) -> None:
        """Select the order of ``epoch`` (only with ``seed``/``num_replicas``)."""
        self._shard.set_epoch(epoch)

    def __iter__(self) -> Iterator[list[int]]:
        rng = self._shard.rng()
        q, num = self._per_kind, self._num_batches
        pos = self.positive_pairs[rng.permutation(len(self.positive_pairs))[: num * q]]
        neg = self.negative_pairs[rng.permutation(len(self.negative_pairs))[: num * q]]
        pairs = np.concatenate([pos.reshape(num, q, 2), neg.reshape(num, q, 2)], axis=1)
        inside = np.argsort(rng.random((num, 2 * q)), axis=1)
        pairs = np.take_along_axis(pairs, inside[:, :, None], axis=1)
        stream = self._shard.take(pairs.reshape(-1), self.batch_size)
        return iter(stream.reshape(-1, self.batch_size).tolist())

    @staticmethod
    def pairs_tuple(labels: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """The ``(a1, p, a2, n)`` pairs of a batch of this sampler, from its labels.

        Rows ``2j`` and ``2j + 1`` form a pair: positive when their labels are equal.

        Raises:
            ValueError: ``labels`` is not 1-D of even length.
        """
        if not isinstance(labels, Tensor):
            labels = torch.as_tensor(labels)
        if labels.ndim != 1 or labels.shape[0] % 2:
            raise ValueError(
                "labels must be 1-D of even length (pairs of consecutive rows); got shape "
                f"{tuple(labels.shape)}"
            )
        first = torch.arange(0, labels.shape[0], 2, device=labels.device)
        same = labels[first] == labels[first + 1]
        return first[same], first[same] + 1, first[~same], first[~same] + 1
