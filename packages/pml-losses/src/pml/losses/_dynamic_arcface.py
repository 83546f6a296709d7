"""DynamicArcFaceLoss: sub-center ArcFace with a margin per class from its frequency.

Ha et al., "Google Landmark Recognition 2020 Competition Third Place Solution" (2020). Math:
:func:`pml.losses.functional.dynamic_margins` (the margins) and
:func:`pml.losses.functional.arcface_target_logits` (given one margin per sample); everything
else is :class:`~pml.losses.SubCenterArcFaceLoss`.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from pml.losses._arguments import check_real
from pml.losses._sub_center_arcface import SubCenterArcFaceLoss
from pml.losses.functional._dynamic_arcface import dynamic_margins
from pml.losses.functional._margin_softmax import arcface_target_logits

__all__ = ["DynamicArcFaceLoss"]


def _check_class_counts(class_counts: Any) -> Tensor:
    """``class_counts`` as a float64 ``(C,)`` tensor of positive finite numbers."""
    if isinstance(class_counts, str | bytes) or class_counts is None:
        raise TypeError(
            "class_counts must be a sequence or 1-D tensor of per-class sample counts; "
            f"got {type(class_counts).__name__}"
        )
    try:
        counts = torch.as_tensor(class_counts)
    except (TypeError, ValueError, RuntimeError) as e:
        raise TypeError(
            "class_counts must be a sequence or 1-D tensor of per-class sample counts; "
            f"got {type(class_counts).__name__}"
        ) from e
    if counts.dtype == torch.bool or counts.dtype.is_complex:
        raise TypeError(f"class_counts must hold real numbers; got dtype {counts.dtype}")
    if counts.ndim != 1 or counts.numel() == 0:
        raise ValueError(
            f"class_counts must be 1-D with one count per class; got shape {tuple(counts.shape)}"
        )
    counts = counts.detach().to("cpu", torch.float64)
    if not bool((torch.isfinite(counts) & (counts > 0)).all()):
        raise ValueError(
            "class_counts must be positive finite numbers (every class needs at least one "
            f"training sample); got {counts.tolist()[:10]}"
        )
    return counts


def _check_margin_bounds(margin_bounds: Any) -> tuple[float, float]:
    """``(lower, upper)`` radians with ``0 <= lower <= upper <= π/2``."""
    if not isinstance(margin_bounds, tuple | list) or len(margin_bounds) != 2:
        raise TypeError(
            "margin_bounds must be a pair (lower, upper) of margins in radians; "
            f"got {margin_bounds!r:.80}"
        )
    lower = check_real("margin_bounds[0]", margin_bounds[0])
    upper = check_real("margin_bounds[1]", margin_bounds[1])
    assert lower is not None and upper is not None
    if not 0 <= lower <= upper <= math.pi / 2:
        hint = ""
        if upper > math.pi / 2:
            hint = (
                f" They look like degrees: DynamicArcFaceLoss takes RADIANS (the paper's "
                f"(0.05, 0.5)), unlike ArcFaceLoss's margin in degrees; for degrees pass "
                f"(math.radians({lower:g}), math.radians({upper:g}))."
            )
        raise ValueError(
            "margin_bounds must be radians with 0 <= lower <= upper <= pi/2 (90 degrees); "
            f"got ({lower:g}, {upper:g}).{hint}"
        )
    return float(lower), float(upper)


class DynamicArcFaceLoss(SubCenterArcFaceLoss):
    """Sub-center ArcFace with class-frequency margins (Ha et al., 2020).

    "Google Landmark Recognition 2020 Competition Third Place Solution".
    Class ``c`` with ``n_c`` training samples gets the margin ``m_c = a · n_c^(-power) + b``,
    ``a`` and ``b`` chosen so that the margins span ``margin_bounds``: the rarest class gets
    the upper bound, the most frequent the lower one (equal counts: every class gets the
    upper bound). Each sample's target logit is ArcFace's ``cos(θ + m_y)``
    (``cos θ - m_y · sin m_y`` past ``θ > π - m_y``) with its class's margin; every logit is
    ``scale · cos``, the cosine being the maximum over the class's ``sub_centers``
    (:class:`SubCenterArcFaceLoss`, whose ``get_outliers``, ``get_logits``, miner weights,
    float32 ``W`` and fixes this loss shares).

    Units: ``margin_bounds`` are **radians**, the paper's defaults ``(0.05, 0.5)``, unlike
    :class:`ArcFaceLoss`, whose ``margin`` is in degrees like the reference 2.9. Bounds
    outside ``[0, π/2]`` are rejected (a message says how to convert degrees).

    The margins are the buffer ``margins`` ``(C,)`` (float32, radians): saved in the state
    dict (the reference 3.0 does not save them) and moved by ``.to()``. ``margin`` holds the
    upper bound (radians).

    Args:
        class_counts: ``(C,)`` training samples per class (positive; a sequence or a 1-D
            tensor). Its length is ``num_classes`` (a ``num_classes`` keyword is accepted
            when it equals that length).
        embedding_size: ``D``.
        margin_bounds: ``(lower, upper)`` in radians, ``0 <= lower <= upper <= π/2``.
        power: ``λ >= 0`` of ``n_c^(-λ)``.
        scale: a positive multiplier of the logits.
        sub_centers: ``K >= 1`` columns per class (1: ArcFace with per-class margins).
        **kwargs: as :class:`LargeMarginSoftmaxLoss` (``weight_init_func``, ``reducer``, ...).

    Shapes:
        ``W``: ``(embedding_size, C·K)``; ``labels`` ``(N,)`` integers in ``[0, C)``.

    Raises:
        TypeError, ValueError: a bad argument (named in the message).

    Example:
        >>> _ = torch.manual_seed(0)  # W is drawn with normal_
        >>> loss_fn = DynamicArcFaceLoss([100, 10, 1], embedding_size=4)
        >>> loss_fn.margins
        tensor([0.0500, 0.2120, 0.5000])
        >>> emb = torch.randn(6, 4, generator=torch.Generator().manual_seed(0))
        >>> loss_fn(emb, torch.tensor([0, 0, 1, 1, 2, 2]))
        tensor(43.0624, grad_fn=<...>)
    """

    margins: Tensor

    def __init__(
        self,
        class_counts: Any,
        embedding_size: int,
        margin_bounds: tuple[float, float] = (0.05, 0.5),
        power: float = 0.25,
        scale: float = 64,
        sub_centers: int = 3,
        **kwargs: Any,
    ) -> None:
        counts = _check_class_counts(class_counts)
        # num_classes is len(class_counts): a matching one is accepted (code that builds
        # every classification loss with num_classes), another is an error
        num_classes = kwargs.pop("num_classes", len(counts))
        if num_classes != len(counts):
            raise ValueError(
                f"num_classes must equal len(class_counts) = {len(counts)} (or be left out); "
                f"got {num_classes}"
            )
        if "margin" in kwargs:
            raise TypeError(
                "DynamicArcFaceLoss takes margin_bounds=(lower, upper), not margin (its margins "
                f"come from class_counts); got margin={kwargs['margin']!r}"
            )
        lower, upper = _check_margin_bounds(margin_bounds)
        power = check_real("power", power, min=0, max=math.inf, max_open=True)  # type: ignore[assignment]
        super().__init__(
            len(counts),
            embedding_size,
            margin=upper,
            scale=scale,
            sub_centers=sub_centers,
            **kwargs,
        )
        self.margin_bounds = (lower, upper)
        self.power = float(power)
        self.register_buffer("margins", dynamic_margins(counts, lower, upper, power).float())
        self._sample_margins: Tensor | None = None
        self.add_to_recordable_attributes(name="power", is_stat=False)

    def _margin_argument(self, margin: Any) -> Any:
        return float(margin)  # the upper bound, already checked and in radians

    def _margin_logits(
        self, emb: Tensor, W: Tensor, labels: Tensor
    ) -> tuple[Tensor, Tensor, Tensor]:
        self._sample_margins = self.margins.to(labels.device)[labels]
        try:
            return super()._margin_logits(emb, W, labels)
        finally:
            self._sample_margins = None

    def _target_cosines(self, cos: Tensor) -> Tensor:
        if self._sample_margins is None:  # only called from _margin_logits
            raise RuntimeError("DynamicArcFaceLoss: the target cosines need the batch's labels")
        return arcface_target_logits(cos, self._sample_margins)
