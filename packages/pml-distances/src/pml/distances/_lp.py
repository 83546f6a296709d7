"""LpDistance and SNRDistance: distances (smaller means closer)."""

from __future__ import annotations

from typing import Any

from torch import Tensor

from pml.core.validation import InvalidArgumentError, check_bool, check_real
from pml.distances import functional as DF
from pml.distances._base import BaseDistance
from pml.distances._gram import squared_euclidean_gram


def check_distance_arguments(distance: BaseDistance) -> None:
    """Check ``p`` (> 0, inf allowed), ``power`` (a real) and ``normalize_embeddings``.

    Raises:
        TypeError: not a number (``normalize_embeddings``: not a bool).
        ValueError: ``p <= 0`` or NaN.
    """
    # fix: the reference takes p <= 0 (p = 0 "normalises" by the count of non-zero entries,
    # p < 0 fails inside torch.cdist at the first forward)
    check_real("p", distance.p, min=0, min_open=True)
    check_real("power", distance.power)
    check_bool("normalize_embeddings", distance.normalize_embeddings)


class LpDistance(BaseDistance):
    """Minkowski (Lp) distance; by default L2 between L2-normalised rows.

    ``LpDistance(power=2)`` is the squared Euclidean distance; ``LpDistance(p=1)``
    L1-normalises and then takes L1 distances.

    Example:
        >>> LpDistance(normalize_embeddings=False)(torch.tensor([[0.0, 0.0], [3.0, 4.0]]))
        tensor([[0., 5.],
                [5., 0.]])
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        check_distance_arguments(self)
        if self.is_inverted:
            raise InvalidArgumentError("LpDistance is a distance: is_inverted must be False")

    def compute_mat(self, query_emb: Tensor, ref_emb: Tensor) -> Tensor:
        return DF.lp_distance_matrix(query_emb, ref_emb, p=self.p)

    def pairwise_distance(self, query_emb: Tensor, ref_emb: Tensor) -> Tensor:
        return DF.lp_distance_pairwise(query_emb, ref_emb, p=self.p)

    def self_matrix(self, x: Tensor) -> Tensor:
        """``x`` against itself; squared Euclidean (``p=2, power=2``) from a symmetric Gram."""
        if self.p == 2 and self.power == 2 and self._computes_like(LpDistance):
            return squared_euclidean_gram(self.maybe_normalize(x))
        return super().self_matrix(x)


class SNRDistance(BaseDistance):
    """Signal-to-noise ratio distance ``var(q - r) / var(q)`` (Yuan et al., CVPR 2019).

    Rows are L2-normalised first by default. Variances are unbiased.

    Example:
        >>> snr = SNRDistance(normalize_embeddings=False)
        >>> snr(torch.tensor([[1.0, 2.0, 3.0]]), torch.tensor([[3.0, 2.0, 1.0]]))
        tensor([[4.]])
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        check_distance_arguments(self)
        if self.is_inverted:
            raise InvalidArgumentError("SNRDistance is a distance: is_inverted must be False")

    def compute_mat(self, query_emb: Tensor, ref_emb: Tensor) -> Tensor:
        return DF.snr_distance_matrix(query_emb, ref_emb)

    def pairwise_distance(self, query_emb: Tensor, ref_emb: Tensor) -> Tensor:
        return DF.snr_distance_pairwise(query_emb, ref_emb)
