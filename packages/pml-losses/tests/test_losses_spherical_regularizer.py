"""SphericalEmbeddingRegularizer as the embedding regularizer of a loss."""

from __future__ import annotations

import torch

from pml.core.testing import assert_close
from pml.losses import ContrastiveLoss, TripletMarginLoss
from pml.regularizers import SphericalEmbeddingRegularizer


def test_spherical_regularizer_adds_weighted_norm_variance() -> None:
    g = torch.Generator().manual_seed(2)
    x = torch.randn(6, 4, generator=g, dtype=torch.float64) * torch.linspace(0.5, 2, 6)[:, None]
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    norm_variance = x.norm(dim=1).var(unbiased=False)
    for cls in (ContrastiveLoss, TripletMarginLoss):
        plain = cls()(x, labels)
        reg = cls(embedding_regularizer=SphericalEmbeddingRegularizer(), embedding_reg_weight=0.5)
        assert_close(reg(x, labels), plain + 0.5 * norm_variance)
