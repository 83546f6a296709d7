"""SelectivelyContrastiveTripletLoss (Xuan et al., ECCV 2020).

"Hard negative examples are hard, but useful".
Math: :func:`pml.losses.functional.selectively_contrastive_triplet_loss`. ``compute_loss``
reads: the triplets (all from labels, or a miner's tuple) -> the distance's matrix in at least
float32 -> one functional call -> the non-finite guard -> one value per triplet.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from pml.core.indices import IndicesTuple, convert_to_triplets, is_same_set
from pml.core.validation import labels_or_indices_tuple_required
from pml.distances import BaseDistance, CosineSimilarity
from pml.losses._arguments import check_real
from pml.losses._base import BaseMetricLossFunction, loss_entry
from pml.losses._pairs import nan_if_nonfinite
from pml.losses.functional._selectively_contrastive import selectively_contrastive_triplet_loss
from pml.reducers import LossDict

__all__ = ["SelectivelyContrastiveTripletLoss"]


class SelectivelyContrastiveTripletLoss(BaseMetricLossFunction):
    """Selectively contrastive triplet loss (Xuan et al., ECCV 2020).

    "Hard negative examples are hard, but useful".
    For a triplet ``(a, p, n)`` with similarities ``s_ap``, ``s_an`` (a distance is negated):

    ``loss = λ · s_an`` if ``s_an > s_ap`` (the negative is harder than the positive: only
    push the negative away), else ``loss = -log(exp(s_ap/T) / (exp(s_ap/T) + exp(s_an/T)))``
    (the NCA triplet loss).

    The paper trains with the hardest negative of each anchor (e.g. a
    :class:`~pml.miners.BatchHardMiner` or ``BatchEasyHardMiner(neg_strategy="hard")``);
    without a miner every triplet of the batch is used. The contrastive term can be
    negative, so the default reducer is ``MeanReducer``. No triplet: the zero loss.

    Args:
        temperature: ``T > 0`` of the NCA term (the paper: 0.1).
        hard_weight: ``λ >= 0``, the weight of the contrastive term (the paper: 1).
        **kwargs: ``distance`` (default ``CosineSimilarity()``), ``reducer`` (default
            ``MeanReducer``), ``collect_stats`` (stat ``num_hard_triplets``),
            ``embedding_regularizer``, ``embedding_reg_weight``.

    Shapes:
        Sub-loss ``loss``: ``(T,)`` per triplet, indices ``(a, p, n)``, "triplet".

    Example:
        >>> emb = torch.tensor([[1.0, 0.0], [0.9, 0.3], [0.0, 1.0], [0.2, 1.0]])
        >>> SelectivelyContrastiveTripletLoss()(emb, torch.tensor([0, 0, 1, 1]))
        tensor(0.0028)
    """

    def __init__(self, temperature: float = 0.1, hard_weight: float = 1.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.temperature = check_real("temperature", temperature, min=0, min_open=True)
        self.hard_weight = check_real("hard_weight", hard_weight, min=0)
        self.add_to_recordable_attributes(
            list_of_names=["temperature", "hard_weight"], is_stat=False
        )
        self.add_to_recordable_attributes(name="num_hard_triplets", is_stat=True)

    def get_default_distance(self) -> BaseDistance:
        return CosineSimilarity()

    def compute_loss(
        self,
        embeddings: Tensor,
        labels: Tensor | None,
        indices_tuple: IndicesTuple | None,
        ref_emb: Tensor,
        ref_labels: Tensor | None,
    ) -> LossDict:
        labels_or_indices_tuple_required(labels, indices_tuple)
        ref = None if is_same_set(labels, ref_labels) else ref_labels
        a, p, n = (
            t.to(device=embeddings.device, dtype=torch.long)
            for t in convert_to_triplets(indices_tuple, labels, ref, t_per_anchor="all")
        )
        if len(a) == 0:
            return self.zero_losses()
        mat = self.distance.acc_matrix(embeddings, ref_emb)
        is_inverted = self.distance.is_inverted
        if self.collect_stats:
            with torch.no_grad():
                s = mat if is_inverted else -mat
                self.set_stats(num_hard_triplets=(s[a, n] > s[a, p]).sum())
        losses = selectively_contrastive_triplet_loss(
            mat, a, p, n, self.temperature, self.hard_weight, is_inverted=is_inverted
        )
        losses = nan_if_nonfinite(losses.to(embeddings.dtype), embeddings, ref_emb)
        return {"loss": loss_entry(losses, (a, p, n), "triplet")}
