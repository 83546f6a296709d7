"""NormalizedSoftmaxLoss: a softmax over normalised class vectors (Zhai & Wu, BMVC 2019)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from pml.core.indices import IndicesTuple
from pml.core.validation import check_embeddings
from pml.distances import (
    BaseDistance,
    DotProductSimilarity,
)
from pml.losses._base import loss_entry, zero_loss_entry
from pml.losses._class_vectors import ClassVectorLoss, full_precision
from pml.losses._margin_softmax import (
    _check_embedding_size,
    _is_plain_dot_product,
    _positive_finite,
)
from pml.losses.functional._margin_softmax import (
    class_logits,
    margin_cross_entropy,
)
from pml.reducers import LossDict

__all__ = ["NormalizedSoftmaxLoss"]


class NormalizedSoftmaxLoss(ClassVectorLoss):
    """Normalized softmax loss (Zhai & Wu, "Classification is a Strong Baseline for DML", 2019).

    ``logits_ij = distance(e_i, Ŵ_j) / temperature`` (negated for a distance), ``Ŵ`` the
    columns of ``W`` normalised with the distance's ``p``; ``loss_i = cross_entropy · w_i``.
    With the default ``DotProductSimilarity`` (normalising) these are cosines.

    fix: ``embedding_size`` and ``num_classes`` are recorded with their values (the reference
    never assigned them: 0). Float32 ``W`` and computation, the empty batch: as
    :class:`LargeMarginSoftmaxLoss`.

    Args:
        num_classes: ``C``.
        embedding_size: ``D``.
        temperature: a positive divisor of the logits.
        **kwargs: ``weight_init_func`` (default ``normal_``), ``weight_regularizer`` (applied
            to ``W.t()``), ``weight_reg_weight``, ``distance`` (any; default
            ``DotProductSimilarity()``), ``reducer`` (default ``MeanReducer``),
            ``collect_stats``, ``embedding_regularizer``, ``embedding_reg_weight``.

    Shapes:
        ``W``: ``(embedding_size, num_classes)``.

    Example:
        >>> _ = torch.manual_seed(0)  # W is drawn with normal_
        >>> loss_fn = NormalizedSoftmaxLoss(num_classes=3, embedding_size=4)
        >>> emb = torch.randn(6, 4, generator=torch.Generator().manual_seed(0))
        >>> loss_fn(emb, torch.tensor([0, 0, 1, 1, 2, 2]))
        tensor(15.8992, grad_fn=<...>)
    """

    def __init__(
        self, num_classes: int, embedding_size: int, temperature: float = 0.05, **kwargs: Any
    ) -> None:
        super().__init__(num_classes, embedding_size, **kwargs)
        self.temperature = _positive_finite("temperature", temperature)
        self.init_vectors("W", (self.embedding_size, self.num_classes))
        self.add_to_recordable_attributes(
            list_of_names=["embedding_size", "num_classes", "temperature"], is_stat=False
        )

    def get_default_distance(self) -> BaseDistance:
        return DotProductSimilarity()

    def _logits(self, emb: Tensor, W: Tensor) -> Tensor:
        d = self.distance
        if _is_plain_dot_product(d):
            return class_logits(
                emb,
                W,
                scale=1 / self.temperature,
                p=d.p,
                normalize_embeddings=d.normalize_embeddings,
            )
        mat = d(emb, d.normalize(W, dim=0).t())
        return mat / self.temperature if d.is_inverted else -mat / self.temperature

    def compute_loss(
        self,
        embeddings: Tensor,
        labels: Tensor | None,
        indices_tuple: IndicesTuple | None,
        ref_emb: Tensor,
        ref_labels: Tensor | None,
    ) -> LossDict:
        labels = self.class_labels(embeddings, labels, ref_emb, ref_labels)
        _check_embedding_size(embeddings, self.W)
        W = self.vectors_for(self.W, embeddings)
        loss_dict: LossDict = {"loss": zero_loss_entry()}
        if len(embeddings) > 0:  # fix: the reference's mean of nothing was NaN
            logits = self._logits(embeddings.to(W.dtype), W)
            weights = None
            if indices_tuple is not None:
                weights = self.miner_weights(indices_tuple, labels, logits.dtype)
            losses = self.nonfinite_guard(margin_cross_entropy(logits, labels, None, weights))
            rows = torch.arange(len(labels), device=labels.device)
            loss_dict["loss"] = loss_entry(losses, rows, "element")
        self.add_weight_regularization_to_loss_dict(loss_dict, W.t())
        return loss_dict

    def get_logits(self, embeddings: Tensor) -> Tensor:
        """``distance(e, Ŵ) / temperature`` (negated for a distance), ``(N, C)``, >= float32."""
        check_embeddings(embeddings, "embeddings")
        _check_embedding_size(embeddings, self.W)
        with full_precision(embeddings.device):
            W = self.vectors_for(self.W, embeddings)
            return self._logits(embeddings.to(W.dtype), W)
