"""Margin-softmax classification losses: a learnable ``W`` ``(D, C)``, one column per class.

``LargeMarginSoftmaxLoss`` and its reference subclasses ``SphereFaceLoss``, ``ArcFaceLoss``
(and ``SubCenterArcFaceLoss``, in ``_sub_center_arcface.py``), ``CosFaceLoss``;
``NormalizedSoftmaxLoss`` beside them (``_normalized_softmax.py``). Each
is a softmax cross entropy over class logits whose target logit carries a margin. Math:
``pml.losses.functional`` (:func:`~pml.losses.functional.class_logits`, the
``*_target_logits`` margins, :func:`~pml.losses.functional.margin_cross_entropy`).

Routes: with the default distance (exactly ``CosineSimilarity``/``DotProductSimilarity``,
``power`` 1, not recording stats) the logits are one product of the normalised embeddings
with ``W``, its column norms folded into the smaller side (see
:func:`~pml.losses.functional.class_logits`; a batch against 100,000 classes makes no
normalised copy of ``W``); any other distance (a subclass, stats on) is called as
``distance(embeddings, W.t())``. Both give the same numbers. Either way there is no
``(N, C)`` one-hot: the target logits are gathered and scattered.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import torch
from torch import Tensor

from pml.core.indices import IndicesTuple
from pml.core.validation import check_embeddings
from pml.distances import (
    BaseDistance,
    CosineSimilarity,
    DotProductSimilarity,
    assert_distance_type,
)
from pml.losses._arguments import check_count, check_real
from pml.losses._base import loss_entry, zero_loss_entry
from pml.losses._class_vectors import ClassVectorLoss, full_precision
from pml.losses.functional._margin_softmax import (
    arcface_target_logits,
    class_logits,
    cosface_target_logits,
    large_margin_target_logits,
    margin_cross_entropy,
    sub_center_max,
)
from pml.reducers import LossDict

__all__ = ["ArcFaceLoss", "CosFaceLoss", "LargeMarginSoftmaxLoss", "SphereFaceLoss"]


def _is_plain_dot_product(distance: BaseDistance) -> bool:
    """Whether ``distance`` computes exactly like Cosine/DotProductSimilarity (fast route)."""
    return (
        type(distance) in (CosineSimilarity, DotProductSimilarity)
        and distance.power == 1
        and not distance.collect_stats
    )


def _check_embedding_size(embeddings: Tensor, W: Tensor) -> None:
    """``ValueError`` unless the embeddings have ``W.shape[0]`` columns (not a matmul error)."""
    if embeddings.shape[1] != W.shape[0]:
        raise ValueError(
            f"embeddings must have embedding_size = {W.shape[0]} columns; "
            f"got shape {tuple(embeddings.shape)}"
        )


def _positive_finite(name: str, value: Any) -> float:
    return check_real(name, value, min=0, min_open=True, max=math.inf, max_open=True)  # type: ignore[return-value]


def _finite(name: str, value: Any) -> float:
    return check_real(name, value, min=-math.inf, max=math.inf, min_open=True, max_open=True)  # type: ignore[return-value]


class LargeMarginSoftmaxLoss(ClassVectorLoss):
    """L-Softmax loss (Liu et al., "Large-Margin Softmax Loss for CNNs", ICML 2016).

    With ``c_i`` the cosine of embedding ``i`` to its class column of ``W`` and
    ``θ_i = acos(c_i)``, the target logit becomes ``ψ(θ_i) = (-1)^k cos(mθ_i) - 2k``
    (``k = floor(mθ_i / π)``); every logit is scaled by ``scale · ‖e_i‖ · ‖W_j‖``.
    ``loss_i = cross_entropy(logits_i, y_i) · w_i`` (``w``: a miner's per-sample weights,
    ones without one). Math: :func:`pml.losses.functional.large_margin_target_logits`.

    The logits and the cross entropy are computed in at least float32 (fix: the reference
    computed them in the embeddings' dtype, so float16 embeddings of moderate norm overflowed to
    inf/NaN), and ``W`` stays float32 under float16/bfloat16 embeddings and autocast (fix: the
    reference cast it to the embeddings' dtype for good). An empty batch gives the zero loss
    (the reference: NaN).

    Args:
        num_classes: ``C``; labels lie in ``[0, C)``.
        embedding_size: ``D``.
        margin: ``m``, an integer ``>= 1`` (an integral float such as ``4.0`` is taken).
        scale: a positive multiplier of the logits.
        **kwargs: ``weight_init_func`` (default ``normal_``), ``weight_regularizer`` (applied
            to ``W.t()``, ``(C, D)``), ``weight_reg_weight``, ``distance`` (must be
            :class:`~pml.distances.CosineSimilarity`, the default), ``reducer`` (default
            ``MeanReducer``), ``collect_stats`` (stat ``avg_angle``: the mean target angle in
            degrees), ``embedding_regularizer``, ``embedding_reg_weight``.

    Shapes:
        ``W``: ``(embedding_size, num_classes)``; forward ``embeddings`` ``(N, D)``,
        ``labels`` ``(N,)`` (required).

    Raises:
        InvalidArgumentError: another distance.
        TypeError, ValueError: a bad argument (named in the message).

    Example:
        >>> _ = torch.manual_seed(0)  # W is drawn with normal_
        >>> loss_fn = LargeMarginSoftmaxLoss(num_classes=3, embedding_size=4)
        >>> emb = torch.randn(6, 4, generator=torch.Generator().manual_seed(0))
        >>> loss_fn(emb, torch.tensor([0, 0, 1, 1, 2, 2]))
        tensor(16.3250, grad_fn=<...>)
    """

    #: columns of ``W`` per class (sub-centers)
    _sub_centers = 1

    def __init__(
        self,
        num_classes: int,
        embedding_size: int,
        margin: float = 4,
        scale: float = 1,
        **kwargs: Any,
    ) -> None:
        super().__init__(num_classes, embedding_size, **kwargs)
        assert_distance_type(self, CosineSimilarity)
        self.margin = self._margin_argument(margin)
        self.scale = _positive_finite("scale", scale)
        self.init_vectors("W", (self.embedding_size, self.num_classes * self._sub_centers))
        self.add_to_recordable_attributes(
            list_of_names=["num_classes", "margin", "scale"], is_stat=False
        )
        self.add_to_recordable_attributes(list_of_names=["avg_angle"], is_stat=True)

    def get_default_distance(self) -> BaseDistance:
        return CosineSimilarity()

    # -- the hooks of the family ----------------------------------------------------------------

    def _margin_argument(self, margin: Any) -> Any:
        """The margin as stored (L-Softmax: an integer; compat: the reference's int())."""
        return check_count("margin", margin, min=1)

    def _target_cosines(self, cos: Tensor) -> Tensor:
        """The margin applied to the target cosines ``(N,)``."""
        return large_margin_target_logits(cos, self.margin)

    def _logit_factors(self, emb: Tensor, W: Tensor) -> tuple[float, Tensor | None, Tensor | None]:
        """``(scale, row, col)``: logit ``ij`` = cosine ``ij`` · scale · row_i · col_j."""
        return self.scale, self.distance.get_norm(emb), self.distance.get_norm(W, dim=0)

    # -- the computation ------------------------------------------------------------------------

    def _cosines(self, emb: Tensor, W: Tensor) -> Tensor:
        """Cosines ``(N, C)`` through the distance (sub-center maximum included)."""
        cos = self.distance(emb, W.t())
        return sub_center_max(cos, self._sub_centers) if self._sub_centers > 1 else cos

    def _logits(
        self, emb: Tensor, W: Tensor, factors: tuple[float, Tensor | None, Tensor | None]
    ) -> Tensor:
        """The logits ``(N, C)`` without the margin: cosine · scale · row_i · col_j."""
        scale, row, col = factors
        if _is_plain_dot_product(self.distance):
            return class_logits(
                emb,
                W,
                scale=scale,
                row_scale=row,
                col_scale=col,
                p=self.distance.p,
                sub_centers=self._sub_centers,
            )
        logits = self._cosines(emb, W) * scale
        if row is not None:
            logits = logits * row.unsqueeze(1)
        return logits if col is None else logits * col

    def _margin_logits(
        self, emb: Tensor, W: Tensor, labels: Tensor
    ) -> tuple[Tensor, Tensor, Tensor]:
        """``(logits without the margin, target logits with it, target cosines)``."""
        factors = self._logit_factors(emb, W)
        logits = self._logits(emb, W, factors)
        scale, row, col = factors
        target = logits.gather(1, labels.unsqueeze(1)).squeeze(1)
        if row is None and col is None:
            return logits, scale * self._target_cosines(target / scale), target / scale
        factor = row * scale if col is None else row * col[labels] * scale  # type: ignore[operator]
        # a zero norm gives the cosine 0 (normalisation) and the factor 0: the cosine is 0
        nonzero = factor != 0
        cos = torch.where(nonzero, target / torch.where(nonzero, factor, 1), 0)
        return logits, factor * self._target_cosines(cos), cos

    def compute_loss(
        self,
        embeddings: Tensor,
        labels: Tensor | None,
        indices_tuple: IndicesTuple | None,
        ref_emb: Tensor,
        ref_labels: Tensor | None,
    ) -> LossDict:
        labels = self.class_labels(embeddings, labels, ref_emb, ref_labels)
        _check_embedding_size(embeddings, self.W)
        W = self.vectors_for(self.W, embeddings)
        loss_dict: LossDict = {"loss": zero_loss_entry()}
        if len(embeddings) > 0:  # fix: the reference's mean of nothing was NaN
            emb = embeddings.to(W.dtype)
            logits, target, cos = self._margin_logits(emb, W, labels)
            weights = None
            if indices_tuple is not None:
                weights = self.miner_weights(indices_tuple, labels, logits.dtype)
            losses = self.nonfinite_guard(margin_cross_entropy(logits, labels, target, weights))
            if self.collect_stats:
                with torch.no_grad():
                    angles = torch.rad2deg(torch.acos(cos.clamp(-1, 1)))
                    self.set_stats(avg_angle=angles.mean())
            rows = torch.arange(len(labels), device=labels.device)
            loss_dict["loss"] = loss_entry(losses, rows, "element")
        self.add_weight_regularization_to_loss_dict(loss_dict, W.t())
        return loss_dict

    def get_logits(self, embeddings: Tensor) -> Tensor:
        """The class logits without the margin: what to take the argmax of at inference.

        Args:
            embeddings: ``(N, D)``.

        Returns:
            ``(N, C)`` logits in at least float32 (this loss: ``cos · scale · ‖e_i‖ ·
            ‖W_j‖``), on the autograd graph.
        """
        check_embeddings(embeddings, "embeddings")
        _check_embedding_size(embeddings, self.W)
        with full_precision(embeddings.device):
            W = self.vectors_for(self.W, embeddings)
            emb = embeddings.to(W.dtype)
            return self._logits(emb, W, self._logit_factors(emb, W))


class SphereFaceLoss(LargeMarginSoftmaxLoss):
    """SphereFace / A-Softmax loss (Liu et al., "SphereFace", CVPR 2017).

    :class:`LargeMarginSoftmaxLoss` with normalised class weights: every logit is scaled by
    ``scale · ‖e_i‖`` only (no ``‖W_j‖``). Same arguments, defaults, records and fixes.

    Example:
        >>> _ = torch.manual_seed(0)  # W is drawn with normal_
        >>> loss_fn = SphereFaceLoss(num_classes=3, embedding_size=4)
        >>> emb = torch.randn(6, 4, generator=torch.Generator().manual_seed(0))
        >>> loss_fn(emb, torch.tensor([0, 0, 1, 1, 2, 2]))
        tensor(7.7827, grad_fn=<...>)
    """

    def _logit_factors(self, emb: Tensor, W: Tensor) -> tuple[float, Tensor | None, Tensor | None]:
        return self.scale, self.distance.get_norm(emb), None


#: the ArcFace classes that already warned about a margin that looks like radians
_WARNED_RADIANS: set[str] = set()


class ArcFaceLoss(LargeMarginSoftmaxLoss):
    """ArcFace loss (Deng et al., "ArcFace: Additive Angular Margin Loss", CVPR 2019).

    Target logit ``cos(θ_i + m)`` (``cos(θ_i) - m·sin(m)`` past ``θ_i > π - m``), every logit
    ``scale · cos``; ``loss_i = cross_entropy · w_i``. Math:
    :func:`pml.losses.functional.arcface_target_logits`.

    The margin is given in **degrees** like the reference 2.9 (the default 28.6° is 0.4992
    rad) and stored and recorded in radians. compat: later versions of the reference take
    radians; a margin in ``(0, 1.6)`` (which looks like radians) is still read as degrees,
    with a ``UserWarning`` once per class and process.

    fix: an embedding exactly on its class column gave NaN gradients in the reference (the
    derivative of ``acos`` at 1); here they are finite. Float32 ``W`` and computation, the
    empty batch: as :class:`LargeMarginSoftmaxLoss`.

    Args:
        num_classes: ``C``.
        embedding_size: ``D``.
        margin: the additive angular margin in degrees (a finite number).
        scale: a positive multiplier of the logits.
        **kwargs: as :class:`LargeMarginSoftmaxLoss`.

    Example:
        >>> _ = torch.manual_seed(0)  # W is drawn with normal_
        >>> loss_fn = ArcFaceLoss(num_classes=3, embedding_size=4)
        >>> emb = torch.randn(6, 4, generator=torch.Generator().manual_seed(0))
        >>> loss_fn(emb, torch.tensor([0, 0, 1, 1, 2, 2]))
        tensor(66.8956, grad_fn=<...>)
    """

    def __init__(
        self,
        num_classes: int,
        embedding_size: int,
        margin: float = 28.6,
        scale: float = 64,
        **kwargs: Any,
    ) -> None:
        super().__init__(num_classes, embedding_size, margin=margin, scale=scale, **kwargs)

    def _margin_argument(self, margin: Any) -> Any:
        degrees = _finite("margin", margin)
        name = type(self).__name__
        if 0 < abs(degrees) < 1.6 and name not in _WARNED_RADIANS:
            _WARNED_RADIANS.add(name)
            warnings.warn(
                f"{name}(margin={degrees:g}) is read as degrees ({degrees:g}° = "
                f"{math.radians(degrees):.4g} rad), like pytorch-metric-learning 2.9 (later "
                f"versions take radians). For a margin of {degrees:g} rad pass "
                f"margin={math.degrees(degrees):.4g}.",
                UserWarning,
                stacklevel=4,
            )
        return math.radians(degrees)  # compat: degrees in, radians stored and recorded

    def _target_cosines(self, cos: Tensor) -> Tensor:
        return arcface_target_logits(cos, self.margin)

    def _logit_factors(self, emb: Tensor, W: Tensor) -> tuple[float, Tensor | None, Tensor | None]:
        return self.scale, None, None


class CosFaceLoss(LargeMarginSoftmaxLoss):
    """CosFace / AM-Softmax loss (Wang et al., "CosFace", CVPR 2018).

    Target logit ``cos_i - margin``, every logit ``scale · cos``; ``loss_i = cross_entropy ·
    w_i``. The stat ``avg_angle`` is computed only when collecting stats. Float32 ``W`` and
    computation, the empty batch: as :class:`LargeMarginSoftmaxLoss`.

    Args:
        num_classes: ``C`` (positional or keyword).
        embedding_size: ``D`` (positional or keyword).
        margin: the additive cosine margin (a finite number).
        scale: a positive multiplier of the logits.
        **kwargs: as :class:`LargeMarginSoftmaxLoss`.

    Example:
        >>> _ = torch.manual_seed(0)  # W is drawn with normal_
        >>> loss_fn = CosFaceLoss(num_classes=3, embedding_size=4)
        >>> emb = torch.randn(6, 4, generator=torch.Generator().manual_seed(0))
        >>> loss_fn(emb, torch.tensor([0, 0, 1, 1, 2, 2]))
        tensor(68.6969, grad_fn=<...>)
    """

    def __init__(
        self,
        num_classes: int,
        embedding_size: int,
        margin: float = 0.35,
        scale: float = 64,
        **kwargs: Any,
    ) -> None:
        super().__init__(num_classes, embedding_size, margin=margin, scale=scale, **kwargs)

    def _margin_argument(self, margin: Any) -> Any:
        return _finite("margin", margin)

    def _target_cosines(self, cos: Tensor) -> Tensor:
        return cosface_target_logits(cos, self.margin)

    def _logit_factors(self, emb: Tensor, W: Tensor) -> tuple[float, Tensor | None, Tensor | None]:
        return self.scale, None, None
