"""HistogramLoss and DynamicSoftMarginLoss: losses built on histograms of similarities."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from pml.core.indices import IndicesTuple
from pml.core.validation import (
    InvalidArgumentError,
    labels_or_indices_tuple_required,
    labels_required,
    ref_not_supported,
)
from pml.distances import BaseDistance, CosineSimilarity, LpDistance, assert_distance_type
from pml.losses._arguments import check_count, check_real
from pml.losses._base import BaseMetricLossFunction, loss_entry
from pml.losses._pairs import poison_nonfinite
from pml.losses.functional._pair_sets import histogram_loss
from pml.losses.functional._triplet import (
    dynamic_soft_margin_loss,
    dynamic_soft_margin_loss_from_mat,
    dynamic_soft_margin_paired_x,
)
from pml.reducers import LossDict


def _unique_unordered(i: Tensor, j: Tensor, n: int) -> tuple[Tensor, Tensor]:
    """Distinct unordered pairs ``{i, j}`` as ``(min, max)``."""
    lo, hi = torch.minimum(i, j), torch.maximum(i, j)
    keys = torch.unique(lo * n + hi)
    return keys // n, keys % n


def histogram_pair_sets(
    labels: Tensor | None, indices_tuple: IndicesTuple | None, n: int
) -> tuple[tuple[Tensor, Tensor], tuple[Tensor, Tensor]]:
    """The anchor-positive and anchor-negative pairs of all triplets, each unordered pair once.

    Pairs come as ``(i, j)`` with ``i <= j`` (the reference's triplets deduplicated back to
    pairs).

    From labels: every same-label pair, and every different-label pair one of whose members
    has a same-label partner (empty when no triplet exists). From a pairs tuple: the entries
    whose anchor also has an entry of the other kind. From triplets: ``{a, p}`` and ``{a, n}``.
    Nothing of size ``O(T)`` is built, except for a triplets tuple (which is that size).
    """
    if indices_tuple is None:
        labels = labels_required(labels)
        same = labels.unsqueeze(1) == labels.unsqueeze(0)
        upper = torch.ones_like(same).triu_(diagonal=1)
        has_pos = same.sum(dim=1) > 1
        if not bool((~same).any()):  # a single label: no negatives, no triplets
            empty = torch.empty(0, dtype=torch.long, device=labels.device)
            return (empty, empty), (empty, empty)
        pos = torch.where(same & upper)
        neg = torch.where(~same & upper & (has_pos.unsqueeze(1) | has_pos.unsqueeze(0)))
        if len(pos[0]) == 0:  # no positives: no triplets
            neg = (neg[0][:0], neg[1][:0])
        return pos, neg
    t = [x.long() for x in indices_tuple]
    if len(t) == 3:
        a, p, ng = t
        return _unique_unordered(a, p, n), _unique_unordered(a, ng, n)
    a1, p, a2, ng = t
    size = max(n, int(torch.cat([a1, a2]).max()) + 1) if len(a1) and len(a2) else n
    keep_p = torch.bincount(a2, minlength=size)[a1] > 0
    keep_n = torch.bincount(a1, minlength=size)[a2] > 0
    return (
        _unique_unordered(a1[keep_p], p[keep_p], n),
        _unique_unordered(a2[keep_n], ng[keep_n], n),
    )


class HistogramLoss(BaseMetricLossFunction):
    """Histogram loss (Ustinova & Lempitsky, NeurIPS 2016).

    The probability that a random negative pair is more similar than a random positive pair,
    from linearly interpolated histograms of the two similarity sets (nodes ``delta`` apart on
    ``[-1, 1]``). Positive and negative pairs are those of all triplets, each unordered pair
    counted once. Math: :func:`pml.losses.functional.histogram_loss`.

    Args:
        n_bins: number of bins (default 100 when ``delta`` is not given either).
        delta: node spacing; if both are given ``delta`` must equal ``2 / n_bins``.
        **kwargs: ``distance`` (default CosineSimilarity; values are read as similarities in
            ``[-1, 1]``), ``reducer``, ``collect_stats``, ...

    Raises:
        InvalidArgumentError: ``delta != 2 / n_bins`` when both are given.
        ValueError: ``n_bins`` or ``delta`` not positive.

    Example:
        >>> loss_fn = HistogramLoss(n_bins=10)
        >>> emb = torch.tensor([[1.0, 0.0], [0.8, 0.6], [0.0, 1.0], [-0.6, 0.8]])
        >>> round(loss_fn(emb, torch.tensor([0, 0, 1, 1])).item(), 4)
        0.0
    """

    accepts_mat = True  # forward(..., mat=): the batch matrix through batch_matrix

    def __init__(self, n_bins: int | None = None, delta: float | None = None, **kwargs: Any):
        super().__init__(**kwargs)
        # fix: the reference takes n_bins=2.5 silently and fails at forward for delta <= 0
        n_bins = check_count("n_bins", n_bins, allow_none=True)
        check_real("delta", delta, min=0, min_open=True, allow_none=True)
        if delta is not None and n_bins is not None and delta != 2 / n_bins:
            raise InvalidArgumentError(
                f"delta must equal 2 / n_bins = {2 / n_bins} when both are given; got {delta}"
            )
        if delta is None and n_bins is None:
            n_bins = 100
        self.delta: float = delta if delta is not None else 2 / n_bins  # type: ignore[operator]
        self.add_to_recordable_attributes(name="delta", is_stat=False)

    def get_default_distance(self) -> BaseDistance:
        return CosineSimilarity()

    def compute_loss(self, embeddings, labels, indices_tuple, ref_emb, ref_labels) -> LossDict:  # type: ignore[no-untyped-def]
        labels_or_indices_tuple_required(labels, indices_tuple)
        ref_not_supported(embeddings, labels, ref_emb, ref_labels)
        n = embeddings.shape[0]
        (pi, pj), (ni, nj) = histogram_pair_sets(labels, indices_tuple, n)
        if len(pi) == 0 or len(ni) == 0:
            return self.zero_losses()
        mat = self.batch_matrix(embeddings)
        loss = histogram_loss(mat[pi, pj], mat[ni, nj], self.delta)
        # fix: a NaN/inf row in no pair still makes the loss NaN
        return poison_nonfinite({"loss": loss_entry(loss, None, "already_reduced")}, embeddings)


def _dsm_loss_and_histogram(
    mat: Tensor,
    hist: Tensor,
    labels: Tensor | None,
    indices_tuple: IndicesTuple | None,
    ref_labels: Tensor | None,
    min_val: float,
    momentum: float,
) -> tuple[Tensor, Tensor] | None:
    """``(loss, new histogram)`` of DynamicSoftMarginLoss, or None without any triplet.

    Routes: no labels -> paired mode (row ``i`` of both sets is the positive pair, the
    hardest other row or column the negative; ``indices_tuple`` ignored, like the
    reference); a triplets tuple -> its triplets; labels or a pairs tuple -> all their
    triplets from sums over the matrix, never listed.
    """
    if labels is None:
        r, c = mat.shape
        if r * c - min(r, c) == 0:  # no off-diagonal entry to serve as a negative
            return None
        return dynamic_soft_margin_loss(dynamic_soft_margin_paired_x(mat), hist, min_val, momentum)
    if indices_tuple is not None and len(indices_tuple) == 3:
        a, p, n = (t.long() for t in indices_tuple)
        if len(a) == 0:
            return None
        return dynamic_soft_margin_loss(mat[a, p] - mat[a, n], hist, min_val, momentum)
    loss, new, num = dynamic_soft_margin_loss_from_mat(
        mat,
        hist,
        labels if indices_tuple is None else None,
        ref_labels,
        pairs=indices_tuple,
        min_val=min_val,
        momentum=momentum,
        same_set=ref_labels is labels,
    )
    return (loss, new) if bool(num > 0) else None


class DynamicSoftMarginLoss(BaseMetricLossFunction):
    """Dynamic soft margin loss (Zhang & Rusinkiewicz, ICCV 2019).

    Keeps a running histogram of ``x = d_ap - d_an`` over calls (``num_bins`` nodes on
    ``[min_val, -min_val)``) and weights each triplet's ``x`` by the histogram's CDF at ``x``.
    Without labels, row ``i`` of ``embeddings`` and of ``ref_emb`` form the positive pair and
    the hardest other row or column gives the negative. Math:
    :func:`pml.losses.functional.dynamic_soft_margin_loss`.

    The histogram ``hist_`` is stored detached: each call's gradient includes the path through
    the current batch's histogram update, and a later call never back-propagates into an
    earlier graph (the reference raised "backward through the graph a second time").

    Args:
        min_val: lower end of the histogram (``delta = 2 |min_val| / num_bins``).
        num_bins: number of histogram nodes.
        momentum: weight of the current batch in the running histogram.
        **kwargs: ``distance`` (an LpDistance with ``p=2`` and normalized embeddings),
            ``reducer``, ``collect_stats``, ...

    Raises:
        InvalidArgumentError: the distance is not such an LpDistance.
        ValueError: ``num_bins < 1`` or ``min_val == 0``.

    Example:
        >>> loss_fn = DynamicSoftMarginLoss()
        >>> emb = torch.tensor([[1.0, 0.0], [0.8, 0.6], [0.0, 1.0], [-0.6, 0.8]])
        >>> round(loss_fn(emb, torch.tensor([0, 0, 1, 1])).item(), 4)
        -0.4085
    """

    accepts_mat = True  # forward(..., mat=): the batch matrix through batch_matrix

    def __init__(
        self, min_val: float = -2.0, num_bins: int = 10, momentum: float = 0.01, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        assert_distance_type(self, LpDistance, normalize_embeddings=True, p=2)
        # fix: the reference fails at forward (index out of bounds) for min_val >= 0
        check_real("min_val", min_val, max=0, max_open=True)
        num_bins = check_count("num_bins", num_bins)
        check_real("momentum", momentum, min=0, max=1)
        self.min_val = min_val
        self.num_bins = num_bins
        self.delta = 2 * abs(min_val) / self.num_bins
        self.momentum = momentum
        self.hist_ = torch.zeros(self.num_bins)
        self.add_to_recordable_attributes(name="num_bins", is_stat=False)

    def compute_loss(self, embeddings, labels, indices_tuple, ref_emb, ref_labels) -> LossDict:  # type: ignore[no-untyped-def]
        mat = self.batch_matrix(embeddings, ref_emb)
        hist = self.hist_.to(device=embeddings.device)
        out = _dsm_loss_and_histogram(
            mat, hist, labels, indices_tuple, ref_labels, self.min_val, self.momentum
        )
        if out is None:
            return self.zero_losses()
        # fix: listed triplets may not read a NaN/inf row; the loss is NaN all the same
        loss_dict = poison_nonfinite(
            {"loss": loss_entry(out[0], None, "already_reduced")}, embeddings, ref_emb
        )
        self._store_histogram(out[1], loss_dict["loss"]["losses"])
        return loss_dict

    def _store_histogram(self, new: Tensor, loss: Tensor) -> None:
        new = new.detach()
        # fix: the histogram is stored without its graph; a non-finite batch (a NaN/inf
        # histogram or loss) leaves it as is
        ok = torch.isfinite(new).all() & torch.isfinite(loss.detach()).all()
        self.hist_ = torch.where(ok, new, self.hist_.to(device=new.device, dtype=new.dtype))
