"""What every pair-based loss composes: its pairs, the too-few-pairs rule, the non-finite guard.

A ``compute_loss`` reads: guard -> :func:`pair_inputs` (or :func:`pair_masks`) ->
``self.distance(...)`` -> one functional call -> loss dict. Pairs built from labels come as
boolean masks or sorted same-label lists (no ``N x M`` pair list); pairs from a miner's tuple
come as lists (duplicates count).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import Tensor

from pml.core.dtypes import accumulation_dtype
from pml.core.indices import (
    IndicesTuple,
    convert_to_pairs,
    is_same_set,
    pos_neg_masks,
    same_label_cells,
)
from pml.core.records import ModuleWithRecords
from pml.core.validation import (
    InvalidArgumentError,
    labels_or_indices_tuple_required,
    labels_required,
)
from pml.losses._arguments import check_real
from pml.losses._base import loss_entry, zero_loss_entry
from pml.losses.functional._pair_ops import HingeSums
from pml.losses.functional._softmax_ops import Negatives
from pml.reducers import LossDict


def all_finite(*tensors: Tensor) -> Tensor:
    """0-dim bool: no NaN/inf in any of ``tensors`` (each counted once; empty ones skipped).

    ``aminmax`` propagates NaN and is much cheaper than ``isfinite(t).all()`` on CPU. No sync.
    """
    checks = []
    for t in {id(t): t for t in tensors}.values():
        if t.numel() > 0:
            low, high = torch.aminmax(t)
            checks.append(torch.isfinite(low) & torch.isfinite(high))
    if not checks:
        return torch.ones((), dtype=torch.bool)
    return checks[0] if len(checks) == 1 else torch.stack(checks).all()


def nan_if_nonfinite(losses: Tensor, *tensors: Tensor) -> Tensor:
    """``losses``, or NaN everywhere when one of ``tensors`` holds NaN or inf.

    A loss may not read every embedding (a miner's subset, rows in no pair): a broken batch
    must still never give a finite number. Filtering reducers (AvgNonZero, Threshold) would
    otherwise drop NaN losses and report the healthy ones. No device sync.
    """
    finite = all_finite(*tensors)
    # fix: a NaN/inf input never gives a finite loss (docs/compatibility.md).
    return torch.where(finite.to(losses.device), losses, torch.nan)


def poison_nonfinite(loss_dict: LossDict, *tensors: Tensor) -> LossDict:
    """:func:`nan_if_nonfinite` applied to every tensor entry of ``loss_dict`` (in place).

    A "sums" entry also keeps a count of at least 1, so that its reducer returns the NaN
    rather than the zero loss of "nothing kept".
    """
    finite: Tensor | None = None
    for entry in loss_dict.values():
        losses = entry["losses"]
        if isinstance(losses, Tensor) and losses.numel() > 0:
            finite = all_finite(*tensors).to(losses.device) if finite is None else finite
            # fix: a NaN/inf input never gives a finite loss (docs/compatibility.md).
            entry["losses"] = torch.where(finite, losses, torch.nan)
            if entry["reduction_type"] == "sums":
                entry["count"] = torch.where(finite, entry["count"], entry["count"].clamp_min(1))
    return loss_dict


def set_hyperparameters(loss: ModuleWithRecords, **values: Any) -> None:
    """Check that each value is a real number, store it on ``loss`` and record it (no stat)."""
    for name, value in values.items():
        check_real(name, value)
        setattr(loss, name, value)
    loss.add_to_recordable_attributes(list_of_names=list(values), is_stat=False)


def too_few_pairs(num_pos: int, num_neg: int, *, need_both: bool = True) -> bool:
    """Whether a loss gives the zero loss for this many positive and negative pairs.

    The reference's rule (GenericPairLoss): at most one positive and at most one negative
    pair. With ``need_both`` (losses that need a positive and a negative pair), also no
    positive or no negative pair.
    """
    # compat: GenericPairLoss gives zero when every index list has length <= 1 (spec §5).
    few = num_pos <= 1 and num_neg <= 1
    return few or (need_both and (num_pos == 0 or num_neg == 0))


@dataclass
class PairInputs:
    """The pairs of a batch.

    Positive pairs ``(a1, p)`` as lists; negatives as a bool ``(N, M)`` mask (from labels, each
    cell once) or an ``(a2, n)`` list (from a tuple, duplicates count); their number.
    """

    a1: Tensor
    p: Tensor
    neg: Negatives
    num_neg: int


def pair_inputs(
    indices_tuple: IndicesTuple | None,
    labels: Tensor | None,
    ref_labels: Tensor | None,
    device: torch.device,
) -> PairInputs:
    """The pairs of a batch: from ``labels`` (no ``indices_tuple``) or from the tuple.

    From labels the positives are the same-label cells in row-major order (self pairs removed
    when the reference set is the batch) and the negatives the boolean mask; from a miner's
    tuple both are its lists.

    Raises:
        ValueError: both ``labels`` and ``indices_tuple`` are None.
    """
    labels_or_indices_tuple_required(labels, indices_tuple)
    if indices_tuple is None:
        labels = labels_required(labels)
        ref = labels if ref_labels is None else ref_labels.to(labels.device)
        a1, p = same_label_cells(labels, ref)
        num_neg = len(labels) * len(ref) - len(a1)
        if is_same_set(labels, ref_labels):  # compat: self pairs dropped by identity only
            keep = a1 != p
            a1, p = a1[keep], p[keep]
        return PairInputs(a1, p, labels.unsqueeze(1) != ref.unsqueeze(0), num_neg)
    a1, p, a2, n = (
        t.to(device=device, dtype=torch.long)
        for t in convert_to_pairs(indices_tuple, labels, ref_labels)
    )
    return PairInputs(a1, p, (a2, n), len(a2))


def listed_negatives(pairs: PairInputs) -> PairInputs:
    """``pairs`` with the negatives as an ``(a2, n)`` list (a mask's cells in row-major order)."""
    if not isinstance(pairs.neg, Tensor):
        return pairs
    return replace(pairs, neg=torch.where(pairs.neg))


def masked_negatives(pairs: PairInputs, num_rows: int, num_cols: int) -> PairInputs:
    """``pairs`` with the negatives as a mask where that gives the same sums.

    A long duplicate-free list (most cells, e.g. CrossBatchMemory's all pairs against its
    memory) is scattered into a mask; a short list (scattering costs more than it saves) or
    one with duplicates (a duplicate pair counts twice) stays a list.
    """
    neg = pairs.neg
    if isinstance(neg, Tensor) or 8 * pairs.num_neg < num_rows * num_cols:
        return pairs
    mask = torch.zeros(num_rows * num_cols, dtype=torch.bool, device=neg[0].device)
    mask[neg[0] * num_cols + neg[1]] = True
    if int(mask.sum()) != pairs.num_neg:
        return pairs
    return replace(pairs, neg=mask.view(num_rows, num_cols))


def negative_counts(neg: Negatives, like: Tensor) -> Tensor:
    """How often each cell of ``like`` is a negative pair: the mask, or a list's counts."""
    if isinstance(neg, Tensor):
        return neg
    counts = torch.zeros(like.shape, dtype=accumulation_dtype(like.dtype), device=like.device)
    return counts.index_put_(neg, torch.ones_like(neg[0], dtype=counts.dtype), accumulate=True)


def pair_masks(
    indices_tuple: IndicesTuple | None,
    labels: Tensor | None,
    ref_labels: Tensor | None,
    embeddings: Tensor,
    ref_emb: Tensor,
) -> tuple[Tensor, Tensor] | None:
    """Boolean ``(pos_mask, neg_mask)`` of shape ``(N, M)``, or None for too few pairs.

    From labels: the label masks (a diagonal cleared in the same set; counted only when the
    mask is too small for more than two pairs). From a tuple: its cells (duplicates collapse).

    Raises:
        ValueError: both ``labels`` and ``indices_tuple`` are None.
        InvalidArgumentError: a tuple lists a cell as a positive and a negative pair (a
            device sync).
    """
    labels_or_indices_tuple_required(labels, indices_tuple)
    if indices_tuple is None:
        pos, neg = pos_neg_masks(labels_required(labels), ref_labels)
        n, m = pos.shape  # every cell but a cleared diagonal is a pair
        if n * m <= 2 + min(n, m) and too_few_pairs(
            int(pos.sum()), int(neg.sum()), need_both=False
        ):
            return None
        return pos, neg
    pairs = convert_to_pairs(indices_tuple, labels, ref_labels)
    if too_few_pairs(len(pairs[0]), len(pairs[2]), need_both=False):
        return None
    return listed_pair_masks(pairs, (len(embeddings), len(ref_emb)), embeddings.device)


def listed_pair_masks(
    pairs: IndicesTuple, shape: tuple[int, ...], device: torch.device, check_overlap: bool = True
) -> tuple[Tensor, Tensor]:
    """Boolean masks of ``shape``, True at the listed positive / negative pairs ``(a1, p, a2, n)``.

    Raises:
        InvalidArgumentError: with ``check_overlap`` (a device sync), a cell is listed as a
            positive and as a negative pair.
    """
    a1, p, a2, n = pairs
    pos = torch.zeros(shape, dtype=torch.bool, device=device)
    neg = torch.zeros_like(pos)
    pos[a1, p] = True
    neg[a2, n] = True
    if check_overlap and bool((pos & neg).any()):
        raise InvalidArgumentError(
            "indices_tuple: each pair should be either positive or negative, not both"
        )
    return pos, neg


def pair_entries(pos: Tensor, neg: Tensor | HingeSums, pairs: PairInputs) -> LossDict:
    """``pos_loss`` / ``neg_loss`` entries: per-pair losses, or the negatives' sums.

    A side without pairs is the zero loss (its indices still listed for per-pair entries).
    """
    a1, p = pairs.a1, pairs.p
    entries = {"pos_loss": loss_entry(pos if len(a1) > 0 else 0, (a1, p), "pos_pair")}
    if isinstance(neg, HingeSums):
        sums = {"count": neg.count, "num": neg.num}
        entries["neg_loss"] = (
            loss_entry(neg.total, None, "sums", **sums) if pairs.num_neg else zero_loss_entry()
        )
    else:
        a2, n = pairs.neg
        entries["neg_loss"] = loss_entry(neg if len(a2) > 0 else 0, (a2, n), "neg_pair")
    return entries


def row_entry(losses: Tensor) -> LossDict:
    """The ``loss`` entry of a matrix loss: one value per query row ("element")."""
    rows = torch.arange(len(losses), device=losses.device)
    return {"loss": loss_entry(losses, rows, "element")}
