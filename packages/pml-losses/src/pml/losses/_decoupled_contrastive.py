"""DecoupledContrastiveLoss: DCL and DCLW (Yeh et al., "Decoupled Contrastive Learning", 2022).

Math: :func:`pml.losses.functional.decoupled_contrastive_loss` and
:func:`pml.losses.functional.von_mises_weights`. ``compute_loss`` reads: pair inputs
(:func:`pml.losses._pairs.pair_inputs`: labels or a miner's tuple) -> the pairs whose anchor
has a negative -> the distance's matrix in at least float32 -> the positive weights -> one
functional call -> the non-finite guard -> one value per positive pair.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from pml.core.indices import IndicesTuple
from pml.distances import BaseDistance, CosineSimilarity
from pml.losses._arguments import check_real
from pml.losses._base import BaseMetricLossFunction, loss_entry
from pml.losses._pairs import nan_if_nonfinite, pair_inputs
from pml.losses.functional._decoupled_contrastive import (
    decoupled_contrastive_loss,
    von_mises_weights,
)
from pml.reducers import LossDict

__all__ = ["DecoupledContrastiveLoss"]

#: ``f(pos_sim (P,)) -> (P,)`` weights of the positive terms
WeightFn = Callable[[Tensor], Tensor]


class DecoupledContrastiveLoss(BaseMetricLossFunction):
    """Decoupled contrastive loss, DCL and DCLW (Yeh et al., ECCV 2022).

    "Decoupled Contrastive Learning".
    For every positive pair ``(a, p)``, with ``z = s / temperature`` (``s`` the similarity;
    a distance is negated):

    ``loss_ap = -w_ap · z_ap + log Σ_{n ∈ neg(a)} exp(z_an)``

    — NT-Xent (:class:`~pml.losses.NTXentLoss`) with the positive removed from the
    denominator. DCL: ``w = 1``. DCLW (``weight_fn="von_mises"``): the paper's von
    Mises-Fisher weighting ``w_k = 2 - exp(s_k / sigma) / mean_j exp(s_j / sigma)`` over the ``P``
    positive pairs of the batch (:func:`pml.losses.functional.von_mises_weights`; the weights
    average to 1 and are not detached). The loss can be negative, so the default reducer is
    ``MeanReducer``.

    The pairs are pml's: positives and negatives from labels (any number of views or samples
    per class; two views of each sample labelled ``arange(N).repeat(2)`` is the paper's
    setting), or a miner's ``indices_tuple`` (pairs, or
    triplets converted to pairs; duplicate negatives count). A positive pair whose anchor has
    no negative has no defined loss and is left out; no pair left: the zero loss.

    Args:
        temperature: softmax temperature (> 0); the paper uses 0.1.
        weight_fn: None (DCL), ``"von_mises"`` (DCLW with ``sigma``), or a callable
            ``f(pos_sim) -> weights`` taking the ``(P,)`` similarities of the positive pairs
            (negated distances for a distance) and returning ``(P,)`` weights.
        sigma: ``sigma > 0`` of the ``"von_mises"`` weighting (the paper: 0.5).
        **kwargs: ``distance`` (default ``CosineSimilarity()``), ``reducer`` (default
            ``MeanReducer``), ``collect_stats``, ``embedding_regularizer``,
            ``embedding_reg_weight``.

    Shapes:
        Sub-loss ``loss``: ``(P,)`` per positive pair, indices ``(a1, p)``, "pos_pair".

    Raises:
        TypeError: ``weight_fn`` is neither None, ``"von_mises"`` nor callable.
        ValueError: ``temperature`` or ``sigma`` not positive; a ``weight_fn`` returning
            another shape than ``(P,)``.

    Example:
        >>> emb = torch.tensor([[1.0, 0.0], [0.9, 0.3], [0.0, 1.0], [0.2, 1.0]])
        >>> DecoupledContrastiveLoss()(emb, torch.tensor([0, 0, 1, 1]))
        tensor(-5.7911)
        >>> DecoupledContrastiveLoss(weight_fn="von_mises")(emb, torch.tensor([0, 0, 1, 1]))
        tensor(-5.7860)
    """

    def __init__(
        self,
        temperature: float = 0.1,
        weight_fn: WeightFn | str | None = None,
        sigma: float = 0.5,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.temperature = check_real("temperature", temperature, min=0, min_open=True)
        self.sigma = check_real("sigma", sigma, min=0, min_open=True)
        if isinstance(weight_fn, str):
            if weight_fn != "von_mises":
                raise ValueError(
                    f"weight_fn must be None, 'von_mises' or a callable; got {weight_fn!r}"
                )
        elif weight_fn is not None and not callable(weight_fn):
            raise TypeError(
                "weight_fn must be None, 'von_mises' or a callable f(pos_sim) -> weights; "
                f"got {type(weight_fn).__name__}"
            )
        self.weight_fn = weight_fn
        self.add_to_recordable_attributes(list_of_names=["temperature", "sigma"], is_stat=False)

    def get_default_distance(self) -> BaseDistance:
        return CosineSimilarity()

    def _weights(self, pos_sim: Tensor) -> Tensor | None:
        if self.weight_fn is None:
            return None
        if self.weight_fn == "von_mises":
            return von_mises_weights(pos_sim, self.sigma)  # type: ignore[arg-type]
        weights = self.weight_fn(pos_sim)  # type: ignore[operator]
        if not isinstance(weights, Tensor) or weights.shape != pos_sim.shape:
            got = tuple(weights.shape) if isinstance(weights, Tensor) else type(weights).__name__
            raise ValueError(
                f"weight_fn must return a tensor of shape {tuple(pos_sim.shape)} (one weight "
                f"per positive pair); got {got}"
            )
        return weights

    def compute_loss(
        self,
        embeddings: Tensor,
        labels: Tensor | None,
        indices_tuple: IndicesTuple | None,
        ref_emb: Tensor,
        ref_labels: Tensor | None,
    ) -> LossDict:
        pairs = pair_inputs(indices_tuple, labels, ref_labels, embeddings.device)
        if len(pairs.a1) == 0 or pairs.num_neg == 0:
            return self.zero_losses()
        n = len(embeddings)
        if isinstance(pairs.neg, Tensor):
            has_neg = pairs.neg.any(dim=1)
        else:
            has_neg = torch.bincount(pairs.neg[0], minlength=n)[:n] > 0
        keep = has_neg[pairs.a1]
        a1, p = pairs.a1[keep], pairs.p[keep]  # pairs without a negative have no loss
        if len(a1) == 0:
            return self.zero_losses()
        mat = self.distance.acc_matrix(embeddings, ref_emb)
        is_inverted = self.distance.is_inverted
        weights = self._weights(mat[a1, p] if is_inverted else -mat[a1, p])
        losses = decoupled_contrastive_loss(
            mat, a1, p, pairs.neg, self.temperature, weights=weights, is_inverted=is_inverted
        )
        losses = nan_if_nonfinite(losses.to(embeddings.dtype), embeddings, ref_emb)
        return {"loss": loss_entry(losses, (a1, p), "pos_pair")}
