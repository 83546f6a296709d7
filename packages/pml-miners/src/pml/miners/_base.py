"""BaseMiner: the template forward shared by every miner."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor

from pml.core.indices import IndicesTuple
from pml.core.validation import (
    InvalidArgumentError,
    check_distance_matrix,
    check_embeddings,
    check_int,
    check_shapes,
)
from pml.distances import (
    BaseDistance,
    LpDistance,
    ModuleWithRecordsAndDistance,
    assert_distance_type,
)
from pml.miners.functional._sample import cap_tuples


class BaseMiner(ModuleWithRecordsAndDistance):
    """Base of every miner: ``forward(embeddings, labels, ref_emb=None, ref_labels=None)``.

    ``forward`` checks the inputs, moves labels to the embeddings' device, resolves the
    reference set (``ref_emb=None`` means the batch itself; ``ref_labels`` is then ignored),
    calls :meth:`mine` under ``torch.no_grad()`` and checks the output. It always sets
    ``num_triplets`` (triplet miners) or ``num_pos_pairs``/``num_neg_pairs`` (pair miners);
    with ``collect_stats`` these are also registered statistics.

    Args:
        distance: the distance used to build the ``(N, M)`` matrix; None for the miner's
            default (a fresh ``LpDistance(p=2)`` unless the miner says otherwise).
        collect_stats: record per-call statistics (None: the global default).
        tuples_per_anchor: None (default) returns every tuple the miner selects. An int
            ``k >= 1`` keeps, for each anchor, a uniformly random subset (without
            replacement) of ``min(count, k)`` of its ``count`` selected tuples; pair miners
            cap positive and negative pairs separately (at most ``k`` of each per anchor).
            Kept tuples stay in the miner's order; draws come from torch's default
            generator of the embeddings' device (``torch.manual_seed``). Each miner says
            how it applies the cap; a subclass that does not handle it in :meth:`mine`
            (``handles_tuples_per_anchor = False``) gets its output capped by ``forward``.

    Raises:
        TypeError: ``tuples_per_anchor`` is not None or an int.
        ValueError: ``tuples_per_anchor`` is smaller than 1.
    """

    #: whether ``mine`` reads the labels (False only for miners that ignore them)
    needs_labels: bool = True
    #: whether ``mine`` applies ``tuples_per_anchor`` itself (else ``forward`` caps the output)
    handles_tuples_per_anchor: bool = False
    #: whether ``mine`` reads the distances only through :meth:`batch_matrix` (one matrix of
    #: embeddings x ref_emb), so that ``forward(..., mat=)`` can hand it one computed outside
    accepts_mat: ClassVar[bool] = False
    _given_mat: Tensor | None = None

    def __init__(
        self,
        distance: BaseDistance | None = None,
        collect_stats: bool | None = None,
        *,
        tuples_per_anchor: int | None = None,
    ) -> None:
        super().__init__(distance=distance, collect_stats=collect_stats)
        self.add_to_recordable_attributes(
            list_of_names=["num_pos_pairs", "num_neg_pairs", "num_triplets"], is_stat=True
        )
        # not a recordable attribute: the reference's records stay as they are
        self.tuples_per_anchor = check_int(
            "tuples_per_anchor", tuples_per_anchor, min=1, allow_none=True
        )

    def mine(
        self, embeddings: Tensor, labels: Tensor, ref_emb: Tensor, ref_labels: Tensor
    ) -> IndicesTuple:
        """Return ``(a, p, n)`` or ``(a1, p, a2, n)``; called under ``torch.no_grad()``.

        ``ref_emb is embeddings`` and ``ref_labels is labels`` when no reference set was
        given (same set: self pairs are excluded).
        """
        raise NotImplementedError

    def forward(
        self,
        embeddings: Tensor,
        labels: Tensor | None,
        ref_emb: Tensor | None = None,
        ref_labels: Tensor | None = None,
        *,
        mat: Tensor | None = None,
    ) -> IndicesTuple:
        """Mine an index tuple.

        A ``ref_emb`` in another float dtype than ``embeddings`` is compared in the promoted
        dtype (``torch.promote_types``): both are cast, the inputs are left unchanged.

        Args:
            embeddings: shape ``(N, D)``, any float dtype and device.
            labels: shape ``(N,)``, any dtype supporting ``==``.
            ref_emb: shape ``(M, D)``; None compares the batch with itself.
            ref_labels: shape ``(M,)``; required with ``ref_emb``, ignored without it.
            mat: keyword-only, the ``(N, M)`` matrix ``self.distance(embeddings, ref_emb)``
                computed once outside (e.g. shared with the loss's ``mat=``), used (detached,
                in the embeddings' dtype) instead of computing it. Only for miners with
                ``accepts_mat``; its values are trusted: it must come from the miner's
                distance (the same distance as the loss's when shared).

        Returns:
            Triplets ``(a, p, n)`` or pairs ``(a1, p, a2, n)`` of int64 tensors. Anchors index
            ``embeddings``, ``p``/``n`` index ``ref_emb``.

        Raises:
            TypeError: an input is not a tensor, or embeddings are not floating point.
            ValueError: missing labels, shapes that do not match, or NaN/inf in
                ``embeddings`` or ``ref_emb`` (one reduction and one device sync per call
                for both; the mined indices are data-dependent, so mining syncs anyway).
            TypeError, ValueError: a ``mat`` this miner cannot take (TypeError naming the
                class), not a float tensor, or not ``(N, M)`` on the embeddings' device.
        """
        self.reset_stats()
        with torch.no_grad():
            embeddings, labels, ref_emb, ref_labels = self._resolve_inputs(
                embeddings, labels, ref_emb, ref_labels
            )
            if mat is not None:
                _check_mat(self, mat, embeddings, ref_emb)
            _check_finite(embeddings, ref_emb)
            self._given_mat = mat
            try:
                output = self.mine(embeddings, labels, ref_emb, ref_labels)  # type: ignore[arg-type]
            finally:
                self._given_mat = None
        if self.tuples_per_anchor is not None and not self.handles_tuples_per_anchor:
            self.output_assertion(output)  # a well-formed tuple before capping it
            output = cap_tuples(output, self.tuples_per_anchor)
        self.output_assertion(output)
        return output

    def _resolve_inputs(
        self,
        embeddings: Tensor,
        labels: Tensor | None,
        ref_emb: Tensor | None,
        ref_labels: Tensor | None,
    ) -> tuple[Tensor, Tensor | None, Tensor, Tensor | None]:
        check_embeddings(embeddings, "embeddings")
        if labels is None:
            if self.needs_labels:
                raise ValueError(f"labels must not be None: {type(self).__name__} needs labels")
        else:
            check_shapes(embeddings, labels)
            labels = labels.to(embeddings.device)
        if ref_emb is None:
            return embeddings, labels, embeddings, labels
        check_embeddings(ref_emb, "ref_emb")
        if ref_emb.shape[1] != embeddings.shape[1]:
            raise ValueError(
                f"ref_emb must have embedding size {embeddings.shape[1]} like embeddings; "
                f"got {ref_emb.shape[1]}"
            )
        if ref_emb.dtype != embeddings.dtype:
            # fix: the reference fails inside torch (matmul/cdist of two dtypes)
            dtype = torch.promote_types(embeddings.dtype, ref_emb.dtype)
            embeddings, ref_emb = embeddings.to(dtype), ref_emb.to(dtype)
        if ref_labels is None:
            if self.needs_labels:
                # fix: the reference silently reuses `labels` as reference labels
                raise ValueError(
                    "ref_labels must be given with ref_emb: the reference set needs its own "
                    f"labels (shape ({ref_emb.shape[0]},))"
                )
        else:
            check_shapes(ref_emb, ref_labels, names=("ref_emb", "ref_labels"))
            ref_labels = ref_labels.to(ref_emb.device)
        return embeddings, labels, ref_emb, ref_labels

    def output_assertion(self, output: IndicesTuple) -> None:
        """Record the tuple sizes and check that they are consistent.

        Raises:
            TypeError: ``output`` is not a 3- or 4-tuple.
            InvalidArgumentError: lengths that do not match (also an ``AssertionError``).
        """
        if len(output) == 3:
            self.num_triplets = len(output[0])
            if not len(output[0]) == len(output[1]) == len(output[2]):
                raise InvalidArgumentError(
                    f"{type(self).__name__} returned triplets (a, p, n) of different lengths "
                    f"{[len(t) for t in output]}"
                )
        elif len(output) == 4:
            self.num_pos_pairs = len(output[0])
            self.num_neg_pairs = len(output[2])
            if len(output[0]) != len(output[1]) or len(output[2]) != len(output[3]):
                raise InvalidArgumentError(
                    f"{type(self).__name__} returned pairs (a1, p, a2, n) with "
                    f"len(a1) != len(p) or len(a2) != len(n): {[len(t) for t in output]}"
                )
        else:
            raise TypeError(
                f"{type(self).__name__} must return 3 (a, p, n) or 4 (a1, p, a2, n) index "
                f"tensors; got {len(output)}"
            )

    def extra_repr(self) -> str:
        names = list(getattr(self, "_record_these", []))
        if getattr(self, "tuples_per_anchor", None) is not None:
            names.append("tuples_per_anchor")
        return ", ".join(f"{n}={getattr(self, n)!r}" for n in names)

    def batch_matrix(self, embeddings: Tensor, ref_emb: Tensor) -> Tensor:
        """``self.distance(embeddings, ref_emb)``, or the ``mat`` given to ``forward``.

        A given matrix is returned detached, in the embeddings' dtype.
        """
        mat = self._given_mat
        if mat is None:
            return self.distance(embeddings, ref_emb)
        return mat.detach().to(embeddings.dtype)

    def _require_lp_distance(self) -> None:
        assert_distance_type(self, LpDistance, p=2, power=1, normalize_embeddings=True)


def _check_mat(miner: BaseMiner, mat: Any, embeddings: Tensor, ref_emb: Tensor) -> None:
    """Check a matrix handed to ``miner.forward(..., mat=)``: accepted, float, ``(N, M)``."""
    owner = type(miner).__name__
    check_distance_matrix(mat, embeddings, ref_emb, owner=owner, accepted=miner.accepts_mat)


def _check_finite(embeddings: Tensor, ref_emb: Tensor) -> None:
    """Raise ``ValueError`` naming ``embeddings`` or ``ref_emb`` if it holds NaN or inf.

    One ``aminmax`` per tensor (it propagates NaN; an inf is the min or the max), read back
    in a single transfer: one device sync for both, and no ``(N, D)`` mask as with
    ``isfinite().all()``. ``ref_emb`` has the dtype of ``embeddings`` here (promoted before).
    """
    names = ("embeddings",) if ref_emb is embeddings else ("embeddings", "ref_emb")
    tensors = (embeddings, ref_emb)[: len(names)]
    extremes = [v for t in tensors if t.numel() for v in torch.aminmax(t)]
    if not extremes:
        return
    finite = torch.isfinite(torch.stack(extremes)).tolist()
    for name, t in zip(names, tensors):
        if t.numel():
            low, high = finite.pop(0), finite.pop(0)
            if not (low and high):
                # fix: the reference mines from NaN distances (silently wrong indices)
                raise ValueError(f"{name} must be finite; got NaN or inf values")


def _records(module: BaseMiner, **values: Any) -> None:
    """Set hyper-parameters and register them as recordable configuration."""
    for name, value in values.items():
        setattr(module, name, value)
    module.add_to_recordable_attributes(list_of_names=list(values), is_stat=False)
