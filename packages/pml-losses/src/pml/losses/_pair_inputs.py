"""Inputs of the pair losses: pairs straight from labels, the reference's pair rules, guards.

When pairs come from labels (no ``indices_tuple``) the positive/negative cells are exactly
the boolean masks ``labels[i] == ref_labels[j]`` (diagonal cleared in the same set), so the
pair losses read them from the masks instead of listing every pair first and scattering the
lists back into float masks (what GenericPairLoss does for miner outputs). Values and pair
order are the same (row-major, like ``torch.where``).
"""

from __future__ import annotations

import numbers
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from pml.core.dtypes import accumulation_dtype
from pml.core.indices import IndicesTuple, convert_to_pairs, is_same_set, pos_neg_masks
from pml.core.validation import labels_or_indices_tuple_required
from pml.losses._base import loss_entry
from pml.losses._generic_pair import GenericPairLoss
from pml.losses._pairs import poison_nonfinite
from pml.reducers import (
    AvgNonZeroReducer,
    BaseReducer,
    LossDict,
    MeanReducer,
    MultipleReducers,
    ThresholdReducer,
)
from pml.reducers.functional import threshold_mask


def check_real(name: str, value: Any) -> None:
    """Raise ``TypeError`` unless ``value`` is a real number (or a one-element tensor)."""
    if isinstance(value, Tensor) and value.numel() == 1 and not value.dtype.is_complex:
        return
    if isinstance(value, numbers.Real):
        return
    raise TypeError(f"{name} must be a real number; got {type(value).__name__} {value!r:.40}")


def _is_integer(t: Tensor) -> bool:
    return not (t.dtype.is_floating_point or t.dtype.is_complex or t.dtype == torch.bool)


#: below this many cells, scanning the positive mask is cheaper than sorting the labels
_SCAN_CELLS = 1 << 17


def label_positive_pairs(
    labels: Tensor, ref_labels: Tensor | None, pos_mask: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """``torch.where(pos_mask)`` for label masks, without scanning a large ``(N, M)`` mask.

    The reference rows of each label are found by sorting ``ref_labels`` once: O(P + N log N)
    instead of a pass over N * M cells (positive pairs are usually a small fraction; the
    scan costs 8 ms at N = M = 1024 on one CPU core, this 0.7 ms). Row-major order, self
    pairs removed in the same set (object identity), exactly like
    :func:`pml.core.indices.get_all_pairs_indices`. Small batches and floating-point labels
    (NaN never equals itself) scan ``pos_mask`` (built when not given).
    """
    same = is_same_set(labels, ref_labels)
    ref = labels if ref_labels is None else ref_labels.to(labels.device)
    small = len(labels) * len(ref) <= _SCAN_CELLS
    if small or not (_is_integer(labels) and _is_integer(ref)):
        if pos_mask is None:
            pos_mask = pos_neg_masks(labels, ref_labels)[0]
        return torch.where(pos_mask)
    common = torch.promote_types(labels.dtype, ref.dtype)
    labels, ref = labels.to(common), ref.to(common)
    sorted_ref, order = torch.sort(ref, stable=True)
    lo = torch.searchsorted(sorted_ref, labels, side="left")
    counts = torch.searchsorted(sorted_ref, labels, side="right") - lo
    total = int(counts.sum())
    rows = torch.arange(len(labels), device=labels.device)
    a = torch.repeat_interleave(rows, counts, output_size=total)
    offset = torch.repeat_interleave(
        lo - (torch.cumsum(counts, 0) - counts), counts, output_size=total
    )
    p = order[torch.arange(total, device=labels.device) + offset]
    if same:
        keep = a != p
        a, p = a[keep], p[keep]
    return a, p


def has_too_few_pairs(pos: Tensor, neg: Tensor) -> bool:
    """The reference's rule: no loss when there is at most one positive and one negative pair.

    Every cell of label masks is a positive or a negative pair except the cleared diagonal,
    so only tiny batches need the (synchronising) count.
    """
    n, m = pos.shape
    if n * m > 2 + min(n, m):
        return False
    return int(pos.sum()) <= 1 and int(neg.sum()) <= 1


#: reducers whose result needs only the sum and count of the kept losses of a sub-loss
_DENSE_REDUCERS = (MeanReducer, AvgNonZeroReducer, ThresholdReducer)

#: ``f(pos_pair (P,), mat (N, M), neg_mask (N, M), neg_reducer)`` ->
#: ``(pos_losses (P,), neg_value 0-dim)`` or None to take the per-pair path: the losses of the
#: listed positive pairs, and what ``neg_reducer`` gives for every cell of ``neg_mask``
DenseLosses = Callable[[Tensor, Tensor, Tensor, BaseReducer], tuple[Tensor, Tensor] | None]


def dense_reducers(loss: GenericPairLoss) -> list[BaseReducer] | None:
    """The reducers of ``loss``'s own sub-losses if each needs only sums and counts.

    That is: a MultipleReducers whose reducer of every own sub-loss is exactly a
    MeanReducer, AvgNonZeroReducer or ThresholdReducer, none collecting stats (with stats on,
    the reducers see every per-pair loss, so ``losses_size`` / ``num_past_filter`` are exact).
    """
    reducer = loss.reducer
    if type(reducer) is not MultipleReducers or reducer.collect_stats:
        return None
    found = []
    for name in loss._sub_loss_names():
        sub = reducer.reducers[name] if name in reducer.reducers else reducer.default_reducer  # noqa: SIM401
        if type(sub) not in _DENSE_REDUCERS or sub.collect_stats:
            return None
        found.append(sub)
    return found


def threshold_bounds(reducer: BaseReducer) -> tuple[float | None, float | None]:
    """``(low, high)`` of a threshold reducer; ``(None, None)`` for a plain mean."""
    if isinstance(reducer, ThresholdReducer):
        return reducer.low, reducer.high
    return None, None


def reduce_values(losses: Tensor, reducer: BaseReducer) -> Tensor:
    """What a mean/threshold ``reducer`` gives for ``losses`` (1-D), without a device sync.

    The mean of the kept entries (strictly between the reducer's ``low`` and ``high``), or 0
    on the graph of ``losses`` (zero gradient) when none is kept, like the reducers' zero loss.
    """
    low, high = threshold_bounds(reducer)
    acc = accumulation_dtype(losses.dtype)
    if low is None and high is None:
        count = losses.new_tensor(losses.numel(), dtype=torch.long)
        total = losses.sum(dtype=acc)
    else:
        keep = threshold_mask(losses, low, high)
        count = torch.count_nonzero(keep)
        total = torch.where(keep, losses, 0).sum(dtype=acc)
    return (total / count.clamp_min(1)).to(losses.dtype)


def _dense_entries(loss: GenericPairLoss, values: list[Tensor]) -> LossDict:
    names = loss._sub_loss_names()
    return {k: loss_entry(v, None, "already_reduced") for k, v in zip(names, values, strict=True)}


def _listed_negatives_densely(
    loss: GenericPairLoss,
    embeddings: Tensor,
    labels: Tensor | None,
    indices_tuple: IndicesTuple | None,
    ref_emb: Tensor,
    ref_labels: Tensor | None,
    dense_losses: DenseLosses | None,
) -> LossDict | None:
    """The fast path of :func:`compute_pair_loss` for a long, duplicate-free negative list.

    A given tuple that lists most cells as negative pairs (e.g. CrossBatchMemory's all pairs
    against its memory) is scattered into a boolean mask and reduced like label-built pairs:
    same numbers up to summation order (mean reducers ignore pair order). None: take the
    pair-list path (short lists, duplicates, other reducers, matrix losses).
    """
    if dense_losses is None or indices_tuple is None or loss.mat_based_loss:
        return None
    reducers = dense_reducers(loss)
    if reducers is None:
        return None
    labels_or_indices_tuple_required(labels, indices_tuple)
    pairs = convert_to_pairs(indices_tuple, labels, ref_labels)
    a1, p, a2, n = pairs
    num_rows, num_cols = embeddings.shape[0], ref_emb.shape[0]
    if all(len(t) <= 1 for t in pairs) or 8 * len(a2) < num_rows * num_cols:
        return None
    neg = torch.zeros(num_rows * num_cols, dtype=torch.bool, device=a2.device)
    neg[a2 * num_cols + n] = True
    if int(neg.sum()) != len(a2):  # a duplicate pair counts twice in the list
        return None
    mat = loss.distance(embeddings, ref_emb)
    dense = dense_losses(mat[a1, p], mat, neg.view(num_rows, num_cols), reducers[1])
    if dense is None:
        return None
    return _dense_entries(loss, [reduce_values(dense[0], reducers[0]), dense[1]])


def compute_pair_loss(
    loss: GenericPairLoss,
    embeddings: Tensor,
    labels: Tensor | None,
    indices_tuple: IndicesTuple | None,
    ref_emb: Tensor,
    ref_labels: Tensor | None,
    dense_losses: DenseLosses | None = None,
) -> LossDict:
    """``GenericPairLoss.compute_loss`` reading label-built pairs from boolean masks.

    Miner outputs take GenericPairLoss's path (pair lists, overlap check). Either way
    ``loss._compute_loss`` gets ``(mat, pos_mask, neg_mask)`` (matrix losses) or
    ``(pos_pair, neg_pair, (a1, p, a2, n))`` (pair-list losses), and non-finite inputs give NaN.

    Fast path: for a pair-list loss with ``dense_losses`` and reducers that need only sums and
    counts (:func:`dense_reducers`), the negative pairs built from labels (nearly every cell)
    are never listed: ``dense_losses`` reduces them over the mask (fused, see
    ``functional.masked_hinge_mean``), the (few) positive pairs are gathered and reduced, and
    both sub-losses are handed over as "already_reduced" values (the same numbers up to
    summation order). Any other reducer gets every per-pair loss in the reference's order.
    """
    if indices_tuple is not None or labels is None:
        loss_dict = _listed_negatives_densely(
            loss, embeddings, labels, indices_tuple, ref_emb, ref_labels, dense_losses
        )
        if loss_dict is None:
            loss_dict = GenericPairLoss.compute_loss(
                loss, embeddings, labels, indices_tuple, ref_emb, ref_labels
            )
        return poison_nonfinite(loss_dict, embeddings, ref_emb)
    pos, neg = pos_neg_masks(labels, ref_labels)
    # compat: the reference returns zero when every index list has length <= 1.
    if has_too_few_pairs(pos, neg):
        return loss.zero_losses()
    mat = loss.distance(embeddings, ref_emb)
    if loss.mat_based_loss:
        return poison_nonfinite(loss._compute_loss(mat, pos, neg), embeddings, ref_emb)
    a1, p = label_positive_pairs(labels, ref_labels, pos)
    reducers = None if dense_losses is None else dense_reducers(loss)
    dense = None if reducers is None else dense_losses(mat[a1, p], mat, neg, reducers[1])  # type: ignore[misc]
    if dense is not None:
        values = [reduce_values(dense[0], reducers[0]), dense[1]]  # type: ignore[index]
        loss_dict = _dense_entries(loss, values)
    else:
        a2, n = torch.where(neg)
        pos_pair: Tensor | list = mat[a1, p] if len(a1) > 0 else []
        neg_pair: Tensor | list = mat[a2, n] if len(a2) > 0 else []
        loss_dict = loss._compute_loss(pos_pair, neg_pair, (a1, p, a2, n))
    return poison_nonfinite(loss_dict, embeddings, ref_emb)


class LabelMasksMixin:
    """``compute_loss`` of a :class:`GenericPairLoss` through :func:`compute_pair_loss`.

    List it before ``GenericPairLoss`` in the bases. A pair-list loss with a fused path for
    the label-built negative pairs defines ``_dense_pair_losses`` (a :data:`DenseLosses`).
    """

    _dense_pair_losses: DenseLosses | None = None

    def compute_loss(  # type: ignore[no-untyped-def]
        self, embeddings, labels, indices_tuple, ref_emb, ref_labels
    ) -> LossDict:
        return compute_pair_loss(
            self,  # type: ignore[arg-type]
            embeddings,
            labels,
            indices_tuple,
            ref_emb,
            ref_labels,
            self._dense_pair_losses,
        )
