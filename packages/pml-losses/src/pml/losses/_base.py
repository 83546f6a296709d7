"""The loss pipeline: BaseMetricLossFunction, its input checks, loss-dict entries, wrappers.

``forward`` validates inputs, resolves the reference set, calls ``compute_loss`` (which returns
a loss dict of *unreduced* losses), adds the embedding regularization and hands the dict to the
reducer. Subclasses implement ``compute_loss``.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from pml.core.dtypes import accumulation_dtype, to_device
from pml.core.functional import zero_loss
from pml.core.indices import IndicesTuple
from pml.core.validation import (
    UnsupportedLossError,
    check_embeddings,
    check_indices_tuple,
    check_shapes,
)
from pml.distances import BaseDistance
from pml.losses._mat import check_loss_mat
from pml.losses._precision import full_precision
from pml.losses._regularizer_mixins import (
    EMBEDDING_REG_LOSS,
    WEIGHT_REG_LOSS,
    EmbeddingRegularizerMixin,
)
from pml.reducers import LossDict, ModuleWithRecordsReducerAndDistance


def zero_loss_entry() -> dict[str, Any]:
    """The "no loss" entry: ``{"losses": 0, "indices": None, "reduction_type": "already_reduced"}``.

    Reducers turn the Python int 0 into ``sum(embeddings * 0)`` (0 on the autograd graph).
    """
    return {"losses": 0, "indices": None, "reduction_type": "already_reduced"}


def loss_entry(losses: Tensor | int, indices: Any, reduction_type: str, **extra: Any) -> dict:
    """One loss-dict entry ``{"losses", "indices", "reduction_type", **extra}``."""
    return {"losses": losses, "indices": indices, "reduction_type": reduction_type, **extra}


def resolve_ref(
    embeddings: Tensor,
    labels: Tensor | None,
    ref_emb: Tensor | None,
    ref_labels: Tensor | None,
) -> tuple[Tensor, Tensor | None]:
    """The reference set; ``(embeddings, labels)`` themselves (same objects) without ``ref_emb``.

    A ``ref_labels`` given without ``ref_emb`` is ignored (like the reference). With a
    ``ref_emb`` (its shape already checked, see :func:`check_input_shapes`), ``ref_labels`` is
    moved to its device and checked.

    Raises:
        ValueError: ``ref_labels`` does not match ``ref_emb``.
    """
    if ref_emb is None:
        return embeddings, labels
    if ref_labels is not None:
        ref_labels = to_device(ref_labels, ref_emb)
        check_shapes(ref_emb, ref_labels, names=("ref_emb", "ref_labels"))
    return ref_emb, ref_labels


def check_floating_tensor(x: Any, name: str) -> None:
    """Raise ``TypeError`` unless ``x`` is a floating-point tensor (any shape)."""
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor; got {type(x).__name__}")
    if not x.dtype.is_floating_point:
        raise TypeError(f"{name} must be a floating-point tensor; got {x.dtype}")


def check_input_shapes(distance: Any, embeddings: Tensor, ref_emb: Tensor | None) -> None:
    """Shapes of a loss's embeddings, decided by its distance.

    A distance that overrides ``check_shapes`` (e.g. to accept ``(N, T, D)`` sequences)
    decides alone, like in the reference. Otherwise BaseDistance's rule applies (2-D inputs,
    equal embedding sizes), worded with the loss's argument names.

    Raises:
        ValueError: (default rule) an input is not 2-D, or the embedding sizes differ.
    """
    own = getattr(type(distance), "check_shapes", None)
    if own is not None and own is not BaseDistance.check_shapes:
        distance.check_shapes(embeddings, ref_emb)
        return
    check_embeddings(embeddings, "embeddings")
    if ref_emb is not None:
        check_embeddings(ref_emb, "ref_emb")
        if ref_emb.shape[1] != embeddings.shape[1]:
            raise ValueError(
                f"ref_emb must have embedding size {embeddings.shape[1]} like embeddings; "
                f"got {ref_emb.shape[1]}"
            )


def promote_to_common_dtype(embeddings: Tensor, ref_emb: Tensor) -> tuple[Tensor, Tensor]:
    """``(embeddings, ref_emb)`` in their promoted float dtype (the same objects if equal).

    fix: a float32 batch against a float16/float64 reference set (autocast, an fp32 memory
    bank) crashed inside torch; ``.to`` keeps the gradients of both.
    """
    if ref_emb is embeddings or ref_emb.dtype == embeddings.dtype:
        return embeddings, ref_emb
    common = torch.promote_types(embeddings.dtype, ref_emb.dtype)
    return embeddings.to(common), ref_emb.to(common)


def cast_output(out: Any, dtype: torch.dtype) -> Any:
    """A loss's output (a tensor, or a loss dict under DoNothingReducer) in ``dtype``."""
    if isinstance(out, Tensor):
        return out.to(dtype) if out.dtype.is_floating_point else out
    if isinstance(out, dict):
        for entry in out.values():
            losses = entry.get("losses") if isinstance(entry, dict) else None
            if isinstance(losses, Tensor) and losses.dtype.is_floating_point:
                entry["losses"] = losses.to(dtype)
    return out


class CheckedIndicesTuple(tuple):
    """An indices tuple whose index range was checked (see :func:`checked_indices_tuple`)."""

    __slots__ = ()


def checked_indices_tuple(indices_tuple: Any) -> IndicesTuple:
    """Mark ``indices_tuple`` as range-checked for the inputs it is passed with.

    For wrappers that checked a tuple once (``check_indices_tuple(..., check_bounds=True)``)
    or built it themselves: a loss then checks only its form, without the per-tensor
    ``aminmax`` and the device sync of the range check.

    Example:
        >>> t = torch.tensor([0, 1])
        >>> type(checked_indices_tuple((t, t, t))).__name__
        'CheckedIndicesTuple'
    """
    return CheckedIndicesTuple(indices_tuple)  # type: ignore[return-value]


def check_loss_inputs(
    distance: Any,
    embeddings: Tensor,
    labels: Tensor | None,
    indices_tuple: IndicesTuple | None,
    ref_emb: Tensor | None,
    ref_labels: Tensor | None,
) -> tuple[Tensor | None, Tensor, Tensor | None]:
    """Check a loss's inputs; ``(labels, ref_emb, ref_labels)`` on the embeddings' device.

    The reference set is resolved (:func:`resolve_ref`); see
    :meth:`BaseMetricLossFunction.forward` for what is checked and raised.
    """
    check_floating_tensor(embeddings, "embeddings")
    if ref_emb is not None:
        check_floating_tensor(ref_emb, "ref_emb")
    # fix: the distance decides the shapes (a custom one may accept (N, T, D) sequences)
    check_input_shapes(distance, embeddings, ref_emb)
    check_shapes(embeddings, labels)
    if labels is not None:
        labels = to_device(labels, embeddings)
    needs_ref_labels = labels is not None and indices_tuple is None
    if ref_emb is not None and ref_labels is None and needs_ref_labels:
        # fix: the reference silently paired labels with themselves here (spec 00 §5).
        raise ValueError(
            "ref_labels must be given with ref_emb when pairs are built from labels "
            "(labels given, indices_tuple None)"
        )
    ref_emb, ref_labels = resolve_ref(embeddings, labels, ref_emb, ref_labels)
    if indices_tuple is not None:
        # fix: out-of-range indices gave wrong numbers (-1 wraps around) or an IndexError
        # deep inside; one aminmax per tensor, skipped for a wrapper's checked tuple.
        check_indices_tuple(
            indices_tuple,
            embeddings.shape[0],
            ref_emb.shape[0],
            check_bounds=not isinstance(indices_tuple, CheckedIndicesTuple),
        )
    return labels, ref_emb, ref_labels


class BaseMetricLossFunction(EmbeddingRegularizerMixin, ModuleWithRecordsReducerAndDistance):
    """Base of every loss: ``forward(embeddings, labels, indices_tuple, ref_emb, ref_labels)``.

    Args:
        collect_stats: record per-forward statistics (None: the global default).
        reducer: how the unreduced losses become a scalar (None: the loss's default).
        distance: the distance/similarity (None: the loss's default).
        embedding_regularizer: optional regularizer of the query embeddings.
        embedding_reg_weight: its multiplier.
    """

    #: whether ``compute_loss`` reads the distances only through :meth:`batch_matrix` /
    #: :meth:`batch_acc_matrix` (one matrix of embeddings x ref_emb), so that
    #: ``forward(..., mat=)`` can hand it a matrix computed once outside (shared with a miner)
    accepts_mat: ClassVar[bool] = False
    _given_mat: Tensor | None = None
    #: how :func:`pml.losses.anchor_batched_backward` may split the loss: ``"reference"`` (a
    #: sum over anchors of terms reading the anchor's row against the whole reference set),
    #: ``"samples"`` (terms reading one sample and the loss's parameters) or None (it cannot;
    #: :attr:`anchor_batching_obstacle` says why)
    anchor_batching: ClassVar[str | None] = None
    anchor_batching_obstacle: ClassVar[str] = "it does not declare that it decomposes over anchors"
    #: run :meth:`forward` with autocast off (:func:`pml.losses._precision.full_precision`):
    #: losses that compute in at least float32 anyway, or whose hand-written backwards need
    #: the dtypes they saved
    autocast_off: ClassVar[bool] = False

    def forward(
        self,
        embeddings: Tensor,
        labels: Tensor | None = None,
        indices_tuple: IndicesTuple | None = None,
        ref_emb: Tensor | None = None,
        ref_labels: Tensor | None = None,
        *,
        mat: Tensor | None = None,
    ) -> Tensor:
        """Compute the loss.

        Args:
            embeddings: query embeddings, shape ``(N, D)`` (or what a distance overriding
                ``check_shapes`` accepts), floating point.
            labels: shape ``(N,)``, any dtype supporting ``==`` (None where the loss allows).
            indices_tuple: a miner output, ``(a, p, n)`` or ``(a1, p, a2, n)``; anchors index
                ``embeddings``, ``p``/``n`` index ``ref_emb``.
            ref_emb: reference embeddings ``(M, D)``; None uses ``embeddings`` (same object).
                Another float dtype is fine: both are computed in the promoted dtype.
            ref_labels: reference labels ``(M,)``.
            mat: keyword-only, the ``(N, M)`` matrix ``self.distance(embeddings, ref_emb)``
                computed once outside (e.g. shared with a miner's ``mat=``), used instead of
                computing it; it must carry the autograd graph back to the embeddings. Only
                for losses with ``accepts_mat`` (one matrix of the batch); it is read in the
                dtype the loss's own matrix would have. Its values are trusted: it must come
                from the loss's own distance.

        Returns:
            A 0-dim tensor in the embeddings' dtype (the loss dict with DoNothingReducer).

        Raises:
            ValueError: mismatched shapes (checked by the distance when it overrides
                ``check_shapes``), 2-D labels, missing labels where required, or
                ``indices_tuple`` indices outside ``[0, N)`` (anchors) / ``[0, M)`` (others).
            TypeError: non-tensor inputs, or an indices_tuple of the wrong form or of an
                integer dtype other than int64/int32.
            TypeError, ValueError: a ``mat`` this loss cannot take, of the wrong shape or
                without an autograd graph (see :func:`check_loss_mat`).
        """
        if self.autocast_off and isinstance(embeddings, Tensor):
            with full_precision(embeddings.device):
                return self._forward(embeddings, labels, indices_tuple, ref_emb, ref_labels, mat)
        return self._forward(embeddings, labels, indices_tuple, ref_emb, ref_labels, mat)

    def _forward(
        self,
        embeddings: Tensor,
        labels: Tensor | None,
        indices_tuple: IndicesTuple | None,
        ref_emb: Tensor | None,
        ref_labels: Tensor | None,
        mat: Tensor | None,
    ) -> Tensor:
        self.reset_stats()
        labels, ref_emb, ref_labels = check_loss_inputs(
            self.distance, embeddings, labels, indices_tuple, ref_emb, ref_labels
        )
        if mat is not None:
            check_loss_mat(self, mat, embeddings, ref_emb)
        out_dtype = embeddings.dtype
        embeddings, ref_emb = promote_to_common_dtype(embeddings, ref_emb)
        self._given_mat = mat
        try:
            loss_dict = self.compute_loss(embeddings, labels, indices_tuple, ref_emb, ref_labels)
        finally:
            self._given_mat = None
        self.add_embedding_regularization_to_loss_dict(loss_dict, embeddings)
        out = self.reducer(loss_dict, embeddings, labels)
        if ref_emb is not embeddings and isinstance(out, Tensor):
            # fix: a reducer's zero loss hangs on `embeddings` only, so NaN/inf in `ref_emb`
            # whose NaN losses a filtering reducer dropped would give a finite 0: + 0 * ref
            out = out + zero_loss(ref_emb).to(out.dtype)
        return out if embeddings.dtype == out_dtype else cast_output(out, out_dtype)

    def compute_loss(
        self,
        embeddings: Tensor,
        labels: Tensor | None,
        indices_tuple: IndicesTuple | None,
        ref_emb: Tensor,
        ref_labels: Tensor | None,
    ) -> LossDict:
        """Return the loss dict ``{name: {"losses", "indices", "reduction_type"}}``."""
        raise NotImplementedError

    def batch_matrix(self, embeddings: Tensor, ref_emb: Tensor | None = None) -> Tensor:
        """``self.distance(embeddings, ref_emb)``, or the ``mat`` given to ``forward``.

        A given matrix is returned in the embeddings' dtype (what the distance would give).
        """
        mat = self._given_mat
        if mat is None:
            return (
                self.distance(embeddings) if ref_emb is None else self.distance(embeddings, ref_emb)
            )
        return mat.to(embeddings.dtype)

    def batch_acc_matrix(self, embeddings: Tensor, ref_emb: Tensor | None = None) -> Tensor:
        """``self.distance.acc_matrix(embeddings, ref_emb)``, or the given ``mat``.

        Either in ``accumulation_dtype(embeddings.dtype)`` (at least float32).
        """
        mat = self._given_mat
        if mat is None:
            return self.distance.acc_matrix(embeddings, ref_emb)
        return mat.to(accumulation_dtype(embeddings.dtype))

    def zero_loss(self) -> dict[str, Any]:
        """The "no loss" entry (see :func:`zero_loss_entry`)."""
        return zero_loss_entry()

    def zero_losses(self) -> LossDict:
        """A "no loss" entry for every sub-loss name (regularization names included)."""
        return {name: zero_loss_entry() for name in self.sub_loss_names()}

    def _sub_loss_names(self) -> list[str]:
        return ["loss"]

    def sub_loss_names(self) -> list[str]:
        """The loss's own sub-loss names followed by the regularization names in use."""
        return self._sub_loss_names() + self.all_regularization_loss_names()

    def all_regularization_loss_names(self) -> list[str]:
        """``["weight_reg_loss"]`` and/or ``["embedding_reg_loss"]``, in that order, when set."""
        names = []
        if getattr(self, "_has_weight_regularizer", False):
            names.append(WEIGHT_REG_LOSS)
        if getattr(self, "_has_embedding_regularizer", False):
            names.append(EMBEDDING_REG_LOSS)
        return names


class BaseLossWrapper(nn.Module):
    """Base of loss wrappers; rejects losses whose class name is not supported.

    Args:
        loss: the wrapped loss.
        **kwargs: forwarded to the next base class (e.g. ``collect_stats``).

    Raises:
        UnsupportedLossError: (a TypeError) ``type(loss).__name__`` is not in
            :meth:`supported_losses`.
    """

    def __init__(self, loss: nn.Module, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.check_loss_support(type(loss).__name__)

    @staticmethod
    def supported_losses() -> list[str]:
        raise NotImplementedError

    @classmethod
    def check_loss_support(cls, loss_name: str) -> None:
        # compat: support is decided by class name, like the reference (spec 00 §8.11).
        if loss_name not in cls.supported_losses():
            raise UnsupportedLossError(
                f"{cls.__name__} does not support {loss_name}; supported: "
                f"{sorted(cls.supported_losses())}"
            )


__all__ = [
    "BaseLossWrapper",
    "BaseMetricLossFunction",
    "CheckedIndicesTuple",
    "cast_output",
    "check_floating_tensor",
    "check_input_shapes",
    "check_loss_inputs",
    "checked_indices_tuple",
    "loss_entry",
    "promote_to_common_dtype",
    "resolve_ref",
    "zero_loss_entry",
]
