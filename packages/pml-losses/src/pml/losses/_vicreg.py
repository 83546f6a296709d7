"""VICRegLoss: variance-invariance-covariance regularization of two views.

Math: :func:`pml.losses.functional.vicreg_loss`.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from pml.core.indices import IndicesTuple
from pml.core.validation import indices_tuple_not_supported
from pml.losses._arguments import check_real
from pml.losses._base import BaseMetricLossFunction, loss_entry
from pml.losses.functional._vicreg import vicreg_loss
from pml.reducers import LossDict

__all__ = ["VICRegLoss"]


class VICRegLoss(BaseMetricLossFunction):
    """VICReg (Bardes et al., ICLR 2022): self-supervised loss of two views of a batch.

    Paper: "VICReg: Variance-Invariance-Covariance Regularization for Self-Supervised
    Learning". ``embeddings`` and ``ref_emb`` are two views, row ``i`` of one matching row
    ``i`` of the other (``ref_emb`` None: ``embeddings`` against itself, invariance 0 and the
    other terms doubled). Four sub-losses, each with its own reducer (default ``MeanReducer``)
    and summed: ``"invariance_loss"`` ``(N,)``, ``"variance_loss1"`` / ``"variance_loss2"``
    ``(D,)`` and ``"covariance_loss"`` (already reduced). Statistics are computed in at least
    float32. No labels, no distance, no embedding regularizer.

    fix: a batch of one row raises ``ValueError`` (the reference: NaN from the unbiased
    variance), and so does a ``ref_emb`` with another number of rows (the reference: a
    broadcasting error).

    Args:
        invariance_lambda: ``λ``, weight of the invariance term.
        variance_mu: ``μ``, weight of the variance terms.
        covariance_v: ``nu``, weight of the covariance term.
        eps: added to the variance under the square root (``>= 0``).
        **kwargs: ``reducer``, ``collect_stats``.

    Raises:
        ValueError: a ``distance`` or ``embedding_regularizer`` keyword (even None), or
            ``eps < 0``.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> x, y = torch.randn(8, 4, generator=g), torch.randn(8, 4, generator=g)
        >>> VICRegLoss()(x, ref_emb=y)
        tensor(62.2753)
    """

    def __init__(
        self,
        invariance_lambda: float = 25,
        variance_mu: float = 25,
        covariance_v: float = 1,
        eps: float = 1e-4,
        **kwargs: Any,
    ) -> None:
        if "distance" in kwargs:
            raise ValueError("distance is not accepted by VICRegLoss: it uses no distance")
        if "embedding_regularizer" in kwargs:
            raise ValueError(
                "embedding_regularizer is not accepted by VICRegLoss: it regularizes the "
                "embeddings itself"
            )
        super().__init__(**kwargs)
        check_real("invariance_lambda", invariance_lambda)
        check_real("variance_mu", variance_mu)
        check_real("covariance_v", covariance_v)
        # fix: a negative eps gave NaN for dimensions of small variance
        check_real("eps", eps, min=0)
        self.invariance_lambda = invariance_lambda
        self.variance_mu = variance_mu
        self.covariance_v = covariance_v
        self.eps = eps

    def _sub_loss_names(self) -> list[str]:
        return ["invariance_loss", "variance_loss1", "variance_loss2", "covariance_loss"]

    def forward(
        self,
        embeddings: Tensor,
        labels: Tensor | None = None,
        indices_tuple: IndicesTuple | None = None,
        ref_emb: Tensor | None = None,
        ref_labels: Tensor | None = None,
    ) -> Tensor:
        """Compute the loss of two views.

        Args:
            embeddings: first view, shape ``(N, D)``, ``N >= 2``.
            labels: must be None.
            indices_tuple: must be None.
            ref_emb: second view, shape ``(N, D)``; None uses ``embeddings``.
            ref_labels: must be None.

        Returns:
            A 0-dim tensor in the embeddings' dtype (the loss dict with DoNothingReducer).

        Raises:
            ValueError: labels, ref_labels or indices_tuple given; ``N < 2``; ``ref_emb``
                of another shape.
        """
        if labels is not None or ref_labels is not None:
            raise ValueError("labels and ref_labels are not supported by VICRegLoss; pass None")
        indices_tuple_not_supported(indices_tuple)
        return super().forward(embeddings, None, None, ref_emb, None)

    def compute_loss(
        self,
        embeddings: Tensor,
        labels: Tensor | None,
        indices_tuple: IndicesTuple | None,
        ref_emb: Tensor,
        ref_labels: Tensor | None,
    ) -> LossDict:
        n, dim = embeddings.shape
        if ref_emb.shape != embeddings.shape:
            raise ValueError(
                f"ref_emb must have the shape of embeddings {tuple(embeddings.shape)} (one "
                f"row per sample of the first view); got {tuple(ref_emb.shape)}"
            )
        if n < 2:
            raise ValueError(
                f"embeddings must have at least 2 rows: VICReg's variance and covariance "
                f"need 2 samples; got {n}"
            )
        invariance, var_e, var_r, covariance = vicreg_loss(
            embeddings,
            ref_emb,
            self.invariance_lambda,
            self.variance_mu,
            self.covariance_v,
            self.eps,
        )
        dtype = embeddings.dtype
        samples = torch.arange(n, device=embeddings.device)
        dims = torch.arange(dim, device=embeddings.device)
        return {
            "invariance_loss": loss_entry(invariance.to(dtype), samples, "element"),
            "variance_loss1": loss_entry(var_e.to(dtype), dims, "element"),
            "variance_loss2": loss_entry(var_r.to(dtype), dims, "element"),
            "covariance_loss": loss_entry(covariance.to(dtype), None, "already_reduced"),
        }
