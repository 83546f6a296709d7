"""GenericPairLoss: the reference's base of the pair losses (subclasses define ``_compute_loss``).

The built-in pair losses override ``compute_loss`` with their own composition (see
:mod:`pml.losses._pairs`); a user subclass gets the reference's pipeline here: all pairs from
labels (or a miner's tuple), the distance matrix, then ``_compute_loss`` on masks or pair lists.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

from pml.core.indices import IndicesTuple, convert_to_pairs
from pml.core.validation import labels_or_indices_tuple_required
from pml.losses._base import BaseMetricLossFunction
from pml.losses._pairs import listed_pair_masks, too_few_pairs
from pml.reducers import LossDict


class GenericPairLoss(BaseMetricLossFunction):
    """A loss over positive and negative pairs.

    Args:
        mat_based_loss: ``True`` -> ``_compute_loss(mat, pos_mask, neg_mask)`` with ``(N, M)``
            masks (duplicate pairs collapse); ``False`` -> ``_compute_loss(pos_pair, neg_pair,
            indices_tuple)`` with the matrix entries of each listed pair (duplicates kept).
    """

    accepts_mat = True  # forward(..., mat=): the batch matrix through batch_matrix

    def __init__(self, mat_based_loss: bool, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.mat_based_loss = mat_based_loss

    def compute_loss(self, embeddings, labels, indices_tuple, ref_emb, ref_labels):  # type: ignore[no-untyped-def]
        labels_or_indices_tuple_required(labels, indices_tuple)
        pairs = convert_to_pairs(indices_tuple, labels, ref_labels)
        if too_few_pairs(len(pairs[0]), len(pairs[2]), need_both=False):
            return self.zero_losses()
        mat = self.batch_matrix(embeddings, ref_emb)
        if self.mat_based_loss:
            return self.mat_based_loss_fn(mat, pairs, check_overlap=indices_tuple is not None)
        return self.pair_based_loss(mat, pairs)

    @staticmethod
    def pair_masks(
        mat: Tensor, pairs: IndicesTuple, check_overlap: bool = True
    ) -> tuple[Tensor, Tensor]:
        """``(pos_mask, neg_mask)`` in ``mat``'s dtype with 1 at the listed pairs.

        Raises:
            InvalidArgumentError: a cell is both a positive and a negative pair (checked only
                for caller-supplied tuples; it forces a device sync).
        """
        pos, neg = listed_pair_masks(pairs, mat.shape, mat.device, check_overlap)
        return pos.to(mat.dtype), neg.to(mat.dtype)

    def mat_based_loss_fn(
        self, mat: Tensor, pairs: IndicesTuple, check_overlap: bool = True
    ) -> LossDict:
        pos_mask, neg_mask = self.pair_masks(mat, pairs, check_overlap)
        return self._compute_loss(mat, pos_mask, neg_mask)

    def pair_based_loss(self, mat: Tensor, pairs: IndicesTuple) -> LossDict:
        a1, p, a2, n = pairs
        pos_pair: Tensor | list = mat[a1, p] if len(a1) > 0 else []
        neg_pair: Tensor | list = mat[a2, n] if len(a2) > 0 else []
        return self._compute_loss(pos_pair, neg_pair, pairs)

    def _compute_loss(self, *args: Any) -> LossDict:
        raise NotImplementedError
