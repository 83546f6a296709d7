"""DotProductSimilarity and CosineSimilarity: similarities (larger means closer)."""

from __future__ import annotations

from typing import Any

from torch import Tensor

from pml.core.validation import InvalidArgumentError
from pml.distances import functional as DF
from pml.distances._base import BaseDistance
from pml.distances._gram import gram
from pml.distances._lp import check_distance_arguments


class DotProductSimilarity(BaseDistance):
    """Inner-product similarity.

    Note: rows are normalised by default (``normalize_embeddings=True``), which makes it equal
    to :class:`CosineSimilarity`; pass ``normalize_embeddings=False`` for raw dot products.

    Example:
        >>> DotProductSimilarity(normalize_embeddings=False)(torch.tensor([[1.0, 2.0]]))
        tensor([[5.]])
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(is_inverted=True, **kwargs)
        check_distance_arguments(self)
        if not self.is_inverted:
            raise InvalidArgumentError("DotProductSimilarity must be inverted")

    def compute_mat(self, query_emb: Tensor, ref_emb: Tensor) -> Tensor:
        return DF.dot_product_matrix(query_emb, ref_emb)

    def pairwise_distance(self, query_emb: Tensor, ref_emb: Tensor) -> Tensor:
        return DF.dot_product_pairwise(query_emb, ref_emb)

    def self_matrix(self, x: Tensor) -> Tensor:
        """``x`` against itself; with ``power`` 1, a symmetric Gram matrix (faster backward)."""
        if self.power == 1 and self._computes_like(DotProductSimilarity):
            return gram(self.maybe_normalize(x))
        return super().self_matrix(x)


class CosineSimilarity(DotProductSimilarity):
    """Cosine similarity (dot product of L2-normalised rows).

    ``pairwise_distance`` is the raw dot product of the rows it is given (like the
    reference): normalise first to get cosines.

    Example:
        >>> CosineSimilarity()(torch.tensor([[1.0, 0.0]]), torch.tensor([[2.0, 0.0], [0.0, 3.0]]))
        tensor([[1., 0.]])
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(normalize_embeddings=True, **kwargs)
        if not (self.is_inverted and self.normalize_embeddings):
            raise InvalidArgumentError("CosineSimilarity must be inverted and normalised")
