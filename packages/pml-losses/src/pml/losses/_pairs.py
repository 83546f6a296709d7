"""What every pair-based loss composes: its pairs, the too-few-pairs rule, the non-finite guard.

A ``compute_loss`` reads: guard -> :func:`pair_inputs` -> ``self.distance(...)`` -> one
functional call -> loss dict. Pairs built from labels come as boolean masks or sorted
same-label lists (no ``N x M`` pair list); pairs from a miner's tuple come as lists
(duplicates count).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from pml.core.indices import IndicesTuple, convert_to_pairs, is_same_set, same_label_cells
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
    """:func:`nan_if_nonfinite` applied to every tensor entry of ``loss_dict`` (in place)."""
    for entry in loss_dict.values():
        losses = entry["losses"]
        if isinstance(losses, Tensor) and losses.numel() > 0:
            entry["losses"] = nan_if_nonfinite(losses, *tensors)
    return loss_dict


def too_few_pairs(num_pos: int, num_neg: int) -> bool:
    """No positive or no negative pair, or (the reference's rule) at most one of each."""
    # compat: GenericPairLoss gives zero when every index list has length <= 1 (spec §5).
    return num_pos == 0 or num_neg == 0 or (num_pos <= 1 and num_neg <= 1)


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
    """
    if indices_tuple is None:
        if labels is None:
            raise ValueError("labels and indices_tuple cannot both be None")
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
