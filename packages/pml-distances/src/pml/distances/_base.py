"""BaseDistance, the distance-holding module base, and the distance-type guard."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from pml.core.dtypes import accumulation_dtype
from pml.core.records import ModuleWithRecords
from pml.core.validation import InvalidArgumentError, check_embeddings
from pml.distances import functional as DF


class BaseDistance(ModuleWithRecords):
    """Base of every distance: ``forward(query_emb, ref_emb=None) -> (N, M)``.

    Args:
        normalize_embeddings: Lp-normalise rows (with ``p``) before computing the matrix.
        p: norm order for normalisation, :meth:`get_norm` and (LpDistance) the distance.
        power: raise every matrix entry to this power when ``!= 1``.
        is_inverted: ``True`` for similarities (larger means closer).
        collect_stats: record average norms before/after normalisation.
    """

    def __init__(
        self,
        normalize_embeddings: bool = True,
        p: float = 2,
        power: float = 1,
        is_inverted: bool = False,
        collect_stats: bool | None = None,
    ) -> None:
        super().__init__(collect_stats=collect_stats)
        self.normalize_embeddings = normalize_embeddings
        self.p = p
        self.power = power
        self.is_inverted = is_inverted
        self.add_to_recordable_attributes(list_of_names=["p", "power"], is_stat=False)
        self.add_to_recordable_attributes(
            list_of_names=[
                "initial_avg_query_norm",
                "initial_avg_ref_norm",
                "final_avg_query_norm",
                "final_avg_ref_norm",
            ],
            is_stat=True,
        )

    def forward(self, query_emb: Tensor, ref_emb: Tensor | None = None) -> Tensor:
        """Distance (or similarity) matrix between query and reference rows.

        Args:
            query_emb: shape ``(N, D)``.
            ref_emb: shape ``(M, D)``; None compares the query with itself.

        Returns:
            Shape ``(N, M)``, dtype and device of ``query_emb``.

        Raises:
            ValueError: an input is not 2-D, or the embedding sizes differ.
            TypeError: an input is not a floating-point tensor.
        """
        self.reset_stats()
        self.check_shapes(query_emb, ref_emb)
        query = self.maybe_normalize(query_emb)
        ref = query if ref_emb is None else self.maybe_normalize(ref_emb)
        if self.collect_stats:
            self._set_norm_stats(query_emb, ref_emb, query, ref)
        mat = self.compute_mat(query, ref)
        if self.power != 1:
            mat = mat**self.power
        if mat.shape != (query_emb.shape[0], ref.shape[0]):
            raise RuntimeError(
                f"{type(self).__name__}.compute_mat returned shape {tuple(mat.shape)}; "
                f"expected {(query_emb.shape[0], ref.shape[0])}"
            )
        return mat

    def acc_matrix(self, query_emb: Tensor, ref_emb: Tensor | None = None) -> Tensor:
        """:meth:`forward` computed and returned in the accumulation dtype (at least float32).

        The batch against itself (``ref_emb`` None or ``query_emb`` itself) goes through
        :meth:`self_matrix`, which a distance may compute faster.

        Args:
            query_emb: shape ``(N, D)``.
            ref_emb: shape ``(M, D)``; None (or ``query_emb``) compares the query with itself.

        Returns:
            Shape ``(N, M)``, dtype ``accumulation_dtype(query_emb.dtype)``.
        """
        query = query_emb.to(accumulation_dtype(query_emb.dtype))
        if ref_emb is None or ref_emb is query_emb:
            return self.self_matrix(query)
        return self(query, ref_emb.to(query.dtype))

    def self_matrix(self, x: Tensor) -> Tensor:
        """The ``(N, N)`` matrix of ``x`` against itself: ``self(x)``.

        A subclass overrides it with a faster route giving the same values up to rounding,
        taken only when :meth:`_computes_like` holds (else ``self(x)``, which records stats).
        """
        return self(x)

    def against(self, ref_emb: Tensor) -> Callable[[Tensor], Tensor]:
        """A function ``f(query_block) -> (B, M)`` matrix against the fixed ``ref_emb``.

        For searches that sweep many query blocks over one reference set: the reference is
        normalised once. A subclass that changes how the matrix is computed, or a distance
        recording stats, gets ``self(query_block, ref_emb)`` for every block instead.

        Example:
            >>> from pml.distances import CosineSimilarity
            >>> f = CosineSimilarity().against(torch.eye(2))
            >>> f(torch.tensor([[3.0, 4.0]]))
            tensor([[0.6000, 0.8000]])
        """
        if not self._computes_like(type(self)):
            return lambda query: self(query, ref_emb)
        self.check_shapes(ref_emb, None)
        ref = self.maybe_normalize(ref_emb)

        def blocks(query: Tensor) -> Tensor:
            self.check_shapes(query, ref_emb)
            mat = self.compute_mat(self.maybe_normalize(query), ref)
            return mat**self.power if self.power != 1 else mat

        return blocks

    def _computes_like(self, owner: type) -> bool:
        """Whether ``forward``, ``check_shapes`` and ``compute_mat`` are still ``owner``'s.

        What a faster :meth:`self_matrix` route of ``owner`` assumes: a subclass that changes
        how the matrix is computed (or which inputs it takes), or a distance recording stats,
        takes the plain call.
        """
        cls = type(self)
        return (
            not self.collect_stats
            and cls.forward is BaseDistance.forward
            and cls.check_shapes is BaseDistance.check_shapes
            and cls.compute_mat is owner.compute_mat
        )

    def _set_norm_stats(
        self, query_emb: Tensor, ref_emb: Tensor | None, query: Tensor, ref: Tensor
    ) -> None:
        with torch.no_grad():
            raw_ref = query_emb if ref_emb is None else ref_emb
            self.set_stats(
                initial_avg_query_norm=torch.mean(self.get_norm(query_emb)),
                initial_avg_ref_norm=torch.mean(self.get_norm(raw_ref)),
                final_avg_query_norm=torch.mean(self.get_norm(query)),
                final_avg_ref_norm=torch.mean(self.get_norm(ref)),
            )

    def check_shapes(self, query_emb: Tensor, ref_emb: Tensor | None) -> None:
        """Validate inputs; a subclass may override to accept other ranks.

        Raises:
            ValueError: not 2-D, embedding sizes differ, or ``ref_emb`` has another dtype or
                device than ``query_emb``.
            TypeError: not a floating-point tensor.
        """
        check_embeddings(query_emb, "query_emb")
        if ref_emb is not None:
            check_embeddings(ref_emb, "ref_emb")
            if ref_emb.shape[1] != query_emb.shape[1]:
                raise ValueError(
                    f"ref_emb must have embedding size {query_emb.shape[1]} like query_emb; "
                    f"got {ref_emb.shape[1]}"
                )
            # fix: torch's matmul/cdist raised "expected m1 and m2 to have the same dtype"
            if ref_emb.dtype != query_emb.dtype or ref_emb.device != query_emb.device:
                raise ValueError(
                    f"ref_emb must have the dtype and device of query_emb ({query_emb.dtype}, "
                    f"{query_emb.device}); got {ref_emb.dtype}, {ref_emb.device}: cast one of "
                    "them with .to()"
                )

    def compute_mat(self, query_emb: Tensor, ref_emb: Tensor) -> Tensor:
        """The ``(N, M)`` matrix from already (maybe) normalised inputs."""
        raise NotImplementedError

    def pairwise_distance(self, query_emb: Tensor, ref_emb: Tensor) -> Tensor:
        """Row ``i`` against row ``i`` (``(K,)``); no normalisation and no ``power``."""
        raise NotImplementedError

    def smallest_dist(self, *args: Any, **kwargs: Any) -> Any:
        """The closest: ``torch.max`` for similarities, ``torch.min`` for distances."""
        return torch.max(*args, **kwargs) if self.is_inverted else torch.min(*args, **kwargs)

    def largest_dist(self, *args: Any, **kwargs: Any) -> Any:
        """The farthest: ``torch.min`` for similarities, ``torch.max`` for distances."""
        return torch.min(*args, **kwargs) if self.is_inverted else torch.max(*args, **kwargs)

    def margin(self, x: Tensor, y: Tensor) -> Tensor:
        """Positive when ``x`` is farther than ``y``: ``x - y`` (distance) or ``y - x``."""
        return y - x if self.is_inverted else x - y

    def normalize(self, embeddings: Tensor, dim: int = 1, **kwargs: Any) -> Tensor:
        """Lp-normalise with this distance's ``p`` (always, whatever ``normalize_embeddings``)."""
        if kwargs:
            return torch.nn.functional.normalize(embeddings, p=self.p, dim=dim, **kwargs)
        return DF.lp_normalize(embeddings, p=self.p, dim=dim)

    def maybe_normalize(self, embeddings: Tensor, dim: int = 1, **kwargs: Any) -> Tensor:
        """:meth:`normalize` when ``normalize_embeddings`` is on, else ``embeddings``."""
        if self.normalize_embeddings:
            return self.normalize(embeddings, dim=dim, **kwargs)
        return embeddings

    def get_norm(self, embeddings: Tensor, dim: int = 1, **kwargs: Any) -> Tensor:
        """The ``p``-norm of each row."""
        if kwargs:
            return torch.norm(embeddings, p=self.p, dim=dim, **kwargs)
        return DF.lp_norm(embeddings, p=self.p, dim=dim)


class ModuleWithRecordsAndDistance(ModuleWithRecords):
    """A module holding a distance (default :meth:`get_default_distance`).

    Args:
        distance: the distance object; None builds a fresh default.
        collect_stats: see :class:`pml.core.records.ModuleWithRecords`.
    """

    def __init__(self, distance: BaseDistance | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if distance is not None and not isinstance(distance, BaseDistance):
            # fix: a string or a class fails at the first forward in the reference
            hint = (
                f" (pass an instance: {distance.__name__}())" if isinstance(distance, type) else ""
            )
            raise TypeError(
                "distance must be a BaseDistance instance such as LpDistance() or "
                f"CosineSimilarity(); got {type(distance).__name__} {distance!r:.80}{hint}"
            )
        self.distance = self.get_default_distance() if distance is None else distance

    def get_default_distance(self) -> BaseDistance:
        """``LpDistance(p=2)`` (L2 between L2-normalised rows) unless overridden."""
        from pml.distances._lp import LpDistance

        return LpDistance(p=2)


def assert_distance_type(
    obj: Any, distance_type: type | tuple[type, ...] | None = None, **kwargs: Any
) -> None:
    """Check ``obj.distance`` against a type and attribute values.

    Raises:
        InvalidArgumentError: (a ValueError and an AssertionError) naming the object, the
            required type or attribute, and what was found.
    """
    name = type(obj).__name__
    distance = obj.distance
    if distance_type is not None:
        types = distance_type if isinstance(distance_type, tuple) else (distance_type,)
        if not isinstance(distance, types):
            wanted = " or ".join(t.__name__ for t in types)
            raise InvalidArgumentError(
                f"{name} requires the distance to be {wanted}; got {type(distance).__name__}"
            )
    for k, v in kwargs.items():
        got = getattr(distance, k)
        if got != v:
            raise InvalidArgumentError(f"{name} requires distance.{k} == {v!r}; got {got!r}")
