"""Losses on the sets of positive- and negative-pair similarities: histogram and TCM losses.

Each takes the similarities of the positive pairs ``(P,)`` and of the negative pairs
``(Nn,)`` of a batch and returns one 0-dim loss (the reducer passes it through). Computed in at
least float32 and returned in the input's dtype.
"""

from __future__ import annotations

import torch
from torch import Tensor

from pml.core.dtypes import accumulation_dtype

__all__ = ["histogram_loss", "soft_histogram", "threshold_consistent_margin_loss"]


def soft_histogram(values: Tensor, delta: float) -> Tensor:
    """Linearly interpolated histogram of similarities on nodes ``-1 + r delta``.

    ``R = round(1 + 2 / delta)`` nodes; value ``v`` with ``r = floor((v + 1) / delta)``
    (computed in float32, like the reference) adds ``(v + 1 - r delta) / delta`` to node
    ``r + 1`` and ``((r + 1) delta - 1 - v) / delta`` to node ``r``; divided by the number of
    values. Values are clamped to the node range ``[-1, -1 + (R - 1) delta]`` (the reference
    raised an index error for a similarity of exactly 1 or beyond).

    Args:
        values: similarities, shape ``(V,)``, ``V > 0``.
        delta: node spacing.

    Returns:
        ``(R,)`` densities (accumulation dtype) summing to 1.

    Example:
        >>> soft_histogram(torch.tensor([0.0, 0.25]), 0.5)
        tensor([0.0000, 0.0000, 0.7500, 0.2500, 0.0000])
    """
    acc = accumulation_dtype(values.dtype)
    num_nodes = round(1 + 2 / delta)
    v = values.to(acc).reshape(-1)
    # fix: clamp into the node range instead of indexing past the last node
    v = v.clamp(-1.0, -1.0 + (num_nodes - 1) * delta)
    # compat: like the reference, the node index and the node positions ``r * delta`` and
    # ``(r + 1) * delta - 1`` are float32 (the weights then promote to the input's precision)
    r = torch.floor((v.float() + 1) / delta)
    r = torch.nan_to_num(r, nan=0.0).clamp(0, max(num_nodes - 2, 0))
    up = (v + 1 - r * delta) / delta
    lo = ((r + 1) * delta - 1 - v) / delta
    ri = r.long()
    hist = torch.zeros(num_nodes + 1, dtype=acc, device=v.device)
    hist = hist.index_add(0, ri + 1, up).index_add(0, ri, lo)
    return hist[:num_nodes] / v.numel()


def histogram_loss(pos_sims: Tensor, neg_sims: Tensor, delta: float) -> Tensor:
    """Histogram loss (Ustinova & Lempitsky, 2016): ``sum_r h_neg[r] * cumsum(h_pos)[r]``.

    The probability that a random negative pair is more similar than a random positive pair,
    from the soft histograms (:func:`soft_histogram`) of the two similarity sets.

    Args:
        pos_sims: positive-pair similarities ``(P,)``, ``P > 0``.
        neg_sims: negative-pair similarities ``(Nn,)``, ``Nn > 0``.
        delta: histogram node spacing (``2 / n_bins``).

    Returns:
        0-dim loss, dtype of ``pos_sims``.

    Example:
        >>> histogram_loss(torch.tensor([0.9, 0.8]), torch.tensor([0.1, 0.85]), 0.1).item()
        0.375
    """
    h_pos = soft_histogram(pos_sims, delta)
    h_neg = soft_histogram(neg_sims, delta)
    return (h_neg * torch.cumsum(h_pos, 0)).sum().to(pos_sims.dtype)


def threshold_consistent_margin_loss(
    pos_sims: Tensor,
    neg_sims: Tensor,
    lambda_plus: float = 1.0,
    lambda_minus: float = 1.0,
    margin_plus: float = 0.9,
    margin_minus: float = 0.5,
) -> Tensor:
    """Threshold-consistent margin loss (Zhang et al., 2023).

    ``lambda_plus * mean_{s <= margin_plus}(margin_plus - s)`` over positive-pair similarities
    plus ``lambda_minus * mean_{s >= margin_minus}(s - margin_minus)`` over negative-pair
    similarities; a side without qualifying pairs gives 0. The result stays on the graph of
    the inputs even when it is 0, and is NaN if any similarity is NaN.

    Args:
        pos_sims: positive-pair cosine similarities ``(P,)``.
        neg_sims: negative-pair cosine similarities ``(Nn,)``.
        lambda_plus: weight of the positive term.
        lambda_minus: weight of the negative term.
        margin_plus: positive pairs below this similarity are penalised.
        margin_minus: negative pairs above this similarity are penalised.

    Returns:
        0-dim loss, dtype of ``pos_sims``.

    Example:
        >>> threshold_consistent_margin_loss(torch.tensor([0.95, 0.7]), torch.tensor([0.6, 0.1]))
        tensor(0.3000)
    """
    acc = accumulation_dtype(pos_sims.dtype)
    ps, ns = pos_sims.to(acc), neg_sims.to(acc)
    pos_sel, neg_sel = ps <= margin_plus, ns >= margin_minus
    pos_cnt, neg_cnt = pos_sel.sum(), neg_sel.sum()
    pos = torch.where(pos_sel, margin_plus - ps, 0).sum() / pos_cnt.clamp(min=1)
    neg = torch.where(neg_sel, ns - margin_minus, 0).sum() / neg_cnt.clamp(min=1)
    loss = lambda_plus * pos + lambda_minus * neg
    # 0 * sum keeps the graph (and NaN) of every input when nothing qualifies
    return (loss + (ps.sum() + ns.sum()) * 0).to(pos_sims.dtype)
