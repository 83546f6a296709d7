"""Class-frequency margins of the dynamic-margin ArcFace (Ha et al., 2020).

"Google Landmark Recognition 2020 Competition Third Place Solution".
The margin of class ``c`` with ``n_c`` training samples is ``m_c = a · n_c^(-λ) + b``, with
``a`` and ``b`` chosen so that the margins span ``[lower, upper]``: the smallest class gets
``upper``, the largest ``lower``. The ArcFace target logits with these margins are
:func:`pml.losses.functional.arcface_target_logits` given a tensor of margins.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["dynamic_margins"]


def dynamic_margins(
    class_counts: Tensor, lower: float = 0.05, upper: float = 0.5, power: float = 0.25
) -> Tensor:
    """Per-class margins ``m_c = a · n_c^(-power) + b`` mapped linearly onto ``[lower, upper]``.

    ``a = (upper - lower) / (max_c n_c^(-power) - min_c n_c^(-power))`` and
    ``b = lower - a · min_c n_c^(-power)``: the rarest class gets ``upper``, the most frequent
    ``lower``. When every class has the same count (or ``power`` is 0) the map is undefined:
    every class then gets ``upper`` (each is the rarest), i.e. plain ArcFace with margin
    ``upper``. Computed in float64.

    Args:
        class_counts: ``(C,)`` positive numbers of training samples per class.
        lower: the margin of the most frequent class (radians).
        upper: the margin of the rarest class (radians), ``>= lower``.
        power: ``λ >= 0``.

    Returns:
        ``(C,)`` float64 margins in radians.

    Example:
        >>> dynamic_margins(torch.tensor([1, 16, 81]), 0.05, 0.5)
        tensor([0.5000, 0.1625, 0.0500], dtype=torch.float64)
    """
    x = class_counts.to(torch.float64).pow(-power)
    low, high = torch.aminmax(x)
    spread = high - low
    scaled = torch.where(spread > 0, (x - low) / torch.where(spread > 0, spread, 1), 1)
    return lower + (upper - lower) * scaled
