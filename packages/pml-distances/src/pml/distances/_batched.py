"""BatchedDistance: compute a distance matrix block by block of query rows."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import Tensor, nn

from pml.core.validation import check_embeddings
from pml.distances._base import BaseDistance


class BatchedDistance(nn.Module):
    """Call ``iter_fn(mat, s, e)`` for each block of ``batch_size`` query rows.

    Peak memory is one ``(batch_size, M)`` block instead of the ``(N, M)`` matrix. Attributes
    not found on the wrapper (``is_inverted``, ``margin``, ``smallest_dist``, ...) come from the
    wrapped distance.

    Args:
        distance: the wrapped distance.
        iter_fn: callable ``(mat, s, e)``; ``e = s + batch_size`` is not clipped to ``N``
            (like the reference), so the last block may have fewer than ``e - s`` rows.
        batch_size: query rows per block.

    Example:
        >>> from pml.distances import CosineSimilarity
        >>> blocks = []
        >>> fn = lambda m, s, e: blocks.append((s, e))
        >>> BatchedDistance(CosineSimilarity(), fn, batch_size=2)(torch.randn(5, 3))
        >>> blocks
        [(0, 2), (2, 4), (4, 6)]
    """

    def __init__(
        self,
        distance: BaseDistance,
        iter_fn: Callable[[Tensor, int, int], Any] | None = None,
        batch_size: int = 32,
    ) -> None:
        super().__init__()
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer; got {batch_size!r}")
        self.distance = distance
        self.iter_fn = iter_fn
        self.batch_size = batch_size

    def forward(self, query_emb: Tensor, ref_emb: Tensor | None = None) -> None:
        """Run ``iter_fn`` over the blocks; returns None.

        Raises:
            TypeError: ``iter_fn`` was never set.
        """
        if self.iter_fn is None:
            raise TypeError("BatchedDistance needs iter_fn (a callable (mat, s, e)); got None")
        check_embeddings(query_emb, "query_emb")
        ref = query_emb if ref_emb is None else ref_emb
        for s in range(0, query_emb.shape[0], self.batch_size):
            e = s + self.batch_size
            mat = self.distance(query_emb[s:e], ref)
            self.iter_fn(mat, s, e)

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            modules = self.__dict__.get("_modules", {})
            if "distance" in modules and name != "distance":
                return getattr(modules["distance"], name)
            raise
