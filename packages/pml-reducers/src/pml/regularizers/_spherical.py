"""SphericalEmbeddingRegularizer: the spherical embedding constraint (Zhang et al., 2020)."""

from __future__ import annotations

from torch import Tensor

from pml.reducers import LossDict
from pml.regularizers import functional as RF
from pml.regularizers._base import BaseRegularizer


class SphericalEmbeddingRegularizer(BaseRegularizer):
    """Spherical embedding constraint: the variance of the embedding norms in the batch.

    From Zhang et al., "Deep Metric Learning with Spherical Embedding" (NeurIPS 2020):
    ``L_sec = 1/N sum_i (||e_i||_2 - mu)^2`` with ``mu = 1/N sum_i ||e_i||_2``, the batch's
    mean norm, treated as a constant (detached). With the default mean reducer the gradient
    is the same as with ``mu`` differentiated (the deviations from the mean sum to zero), so
    either reading of the paper gives these updates; the detached ``mu`` only matters for
    reducers that weight or drop rows, where it keeps each row's pull towards the batch's
    mean norm. It pulls every embedding's norm towards the mean norm, so that unnormalised
    embeddings lie near one hypersphere (which makes angle-based losses such as the triplet
    or contrastive loss with an Lp distance behave like their cosine counterparts while
    training). The per-row terms go through the
    reducer (default :class:`~pml.reducers.MeanReducer`: the formula above). Norms are the
    raw L2 norms of the rows (the distance's ``normalize_embeddings`` is not applied).

    Use it as the ``embedding_regularizer`` of any loss, with ``embedding_reg_weight`` for
    the paper's weight ``eta``.

    Example:
        >>> import torch
        >>> SphericalEmbeddingRegularizer()(torch.tensor([[3.0, 4.0], [0.0, 1.0]]))
        tensor(4.)
    """

    def compute_loss(self, x: Tensor) -> LossDict:
        return self.element_loss(RF.spherical_embedding_regularizer(x))
