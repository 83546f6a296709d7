"""SubCenterArcFaceLoss: ArcFace with ``K`` columns of ``W`` per class (Deng et al., ECCV 2020)."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from pml.core.validation import check_embeddings, check_index_labels, check_shapes
from pml.losses._arguments import check_count, check_real
from pml.losses._class_vectors import full_precision
from pml.losses._margin_softmax import (
    ArcFaceLoss,
    _check_embedding_size,
    _is_plain_dot_product,
)
from pml.losses.functional._margin_softmax import (
    sub_center_outliers,
)

__all__ = ["SubCenterArcFaceLoss"]


class SubCenterArcFaceLoss(ArcFaceLoss):
    """Sub-center ArcFace loss (Deng et al., "Sub-center ArcFace", ECCV 2020).

    ``K = sub_centers`` columns per class (column ``c·K + k`` of ``W`` is sub-center ``k`` of
    class ``c``); the cosine to a class is the maximum over its sub-centers, then exactly
    :class:`ArcFaceLoss`. :meth:`get_outliers` finds the samples far from their class's
    dominant sub-center (to drop noisy labels).

    fix: ``num_classes`` and ``embedding_size`` may be given positionally (the reference
    raised ``KeyError('num_classes')`` and silently dropped other positional arguments).

    Args:
        num_classes: ``C`` (recorded as ``C``; ``W`` has ``C·K`` columns).
        embedding_size: ``D``.
        margin: the additive angular margin in degrees (see :class:`ArcFaceLoss`).
        scale: a positive multiplier of the logits.
        sub_centers: ``K >= 1``.
        **kwargs: as :class:`LargeMarginSoftmaxLoss`.

    Example:
        >>> _ = torch.manual_seed(0)  # W is drawn with normal_
        >>> loss_fn = SubCenterArcFaceLoss(num_classes=3, embedding_size=4)
        >>> emb = torch.randn(6, 4, generator=torch.Generator().manual_seed(0))
        >>> loss_fn(emb, torch.tensor([0, 0, 1, 1, 2, 2]))
        tensor(52.8478, grad_fn=<...>)
    """

    def __init__(
        self,
        num_classes: int,
        embedding_size: int,
        margin: float = 28.6,
        scale: float = 64,
        sub_centers: int = 3,
        **kwargs: Any,
    ) -> None:
        # before the base allocates W (C·K columns); a plain attribute, like the reference's
        self.sub_centers = check_count("sub_centers", sub_centers)
        super().__init__(num_classes, embedding_size, margin=margin, scale=scale, **kwargs)

    @property
    def _sub_centers(self) -> int:  # type: ignore[override]
        return self.sub_centers

    def get_outliers(
        self,
        embeddings: Tensor,
        labels: Tensor,
        threshold: float = 75,
        return_dominant_centers: bool = True,
    ) -> tuple[Tensor, Tensor]:
        """Samples farther than ``threshold`` degrees from their class's dominant sub-center.

        Every sample votes for the nearest sub-center of its class; the dominant sub-center
        of a class has the most votes (the lowest index on a tie). Vectorised (no loop over
        classes), no gradient.

        compat: always returns the 2-tuple, whatever ``return_dominant_centers`` says (like
        the reference). fix: columns of classes absent from ``labels`` are NaN (the reference
        left them uninitialised: arbitrary numbers), and no outliers is an empty int64 tensor
        (the reference: float32).

        Args:
            embeddings: ``(N, D)``.
            labels: ``(N,)`` integer class ids in ``[0, num_classes)``.
            threshold: the angle in degrees, in ``[0, 180]``.
            return_dominant_centers: ignored (compat).

        Returns:
            ``(outliers, dominant_centers)``: the outliers' batch indices (int64, class by
            class, ascending within a class) and the dominant sub-center of every class,
            ``(D, C)`` in the embeddings' dtype (the raw ``W`` column; NaN for classes absent
            from ``labels``).

        Raises:
            ValueError, TypeError: bad embeddings, labels or threshold.

        Example:
            >>> loss_fn = SubCenterArcFaceLoss(num_classes=2, embedding_size=4, sub_centers=2)
            >>> emb = torch.randn(6, 4, generator=torch.Generator().manual_seed(0))
            >>> outliers, centers = loss_fn.get_outliers(emb, torch.tensor([0, 0, 0, 0, 0, 0]))
            >>> centers.shape, bool(centers[:, 1].isnan().all())
            (torch.Size([4, 2]), True)
        """
        check_embeddings(embeddings, "embeddings")
        _check_embedding_size(embeddings, self.W)
        labels = check_index_labels(labels, "labels", num_classes=self.num_classes)
        check_shapes(embeddings, labels)
        labels = labels.to(embeddings.device)
        cos_threshold = math.cos(math.radians(check_real("threshold", threshold, min=0, max=180)))
        k = self.sub_centers
        with torch.no_grad(), full_precision(embeddings.device):
            W = self.vectors_for(self.W, embeddings)
            emb = embeddings.to(W.dtype)
            cols = labels.unsqueeze(1) * k + torch.arange(k, device=labels.device)
            if _is_plain_dot_product(self.distance):  # only the K columns of each sample
                own_vectors = self.distance.normalize(W.t()[cols], dim=2)  # (N, K, D)
                x = self.distance.normalize(emb).unsqueeze(2)
                own = (own_vectors @ x).squeeze(2)
            else:
                own = self.distance(emb, W.t()).gather(1, cols)
            outliers, dominant = sub_center_outliers(own, labels, self.num_classes, cos_threshold)
            present = dominant >= 0
            centers = W.new_full((self.embedding_size, self.num_classes), math.nan)
            classes = torch.arange(self.num_classes, device=W.device)
            centers[:, present] = W[:, classes[present] * k + dominant[present]]
        return outliers, centers.to(embeddings.dtype)
