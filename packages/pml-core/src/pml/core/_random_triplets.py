"""Random triplets, consuming torch's RNG exactly like the reference.

Re-exported by :mod:`pml.core.indices` (:func:`get_random_triplet_indices`).
"""

from __future__ import annotations

import torch
from torch import Tensor

from pml.core._all_tuples import TripletsTuple, empty_triplets
from pml.core._label_groups import is_same_set, label_groups, sortable_labels

__all__ = ["get_random_triplet_indices"]


def get_random_triplet_indices(
    labels: Tensor,
    ref_labels: Tensor | None = None,
    t_per_anchor: int | None = None,
    weights: Tensor | None = None,
) -> TripletsTuple:
    """Random triplets, consuming torch's RNG exactly like the reference.

    For each label (ascending) with enough positives and at least one negative: every
    anchor gets ``t_per_anchor`` triplets (``len(positives)`` when None); positives are drawn
    with ``randint`` from the anchor's positives (itself excluded in the same-set case), and
    negatives with ``randint`` or, when ``weights`` (``(N, M)``) is given, with
    ``multinomial`` over the anchor's row of weights. ``randint`` uses the global CPU
    generator, so results under a seed match the reference on any device.

    The random calls stay one per label and kind, in ascending label order: that order is
    what makes results reproducible against the reference. With ``weights`` everything but
    those draws is vectorised (:func:`_weighted_random_triplets`).
    """
    if weights is not None:
        return _weighted_random_triplets(labels, ref_labels, weights, t_per_anchor)
    return _random_triplets_loop(labels, ref_labels, t_per_anchor, weights)


def _random_triplets_loop(
    labels: Tensor,
    ref_labels: Tensor | None = None,
    t_per_anchor: int | None = None,
    weights: Tensor | None = None,
) -> TripletsTuple:
    """:func:`get_random_triplet_indices` written literally, one label at a time (the spec)."""
    same = is_same_set(labels, ref_labels)
    ref = labels if ref_labels is None else ref_labels
    device = labels.device
    out_a, out_p, out_n = [], [], []
    labels_cpu, ref_cpu = labels.cpu(), ref.cpu()
    for label in torch.unique(labels_cpu):
        pos_idx = torch.where(ref_cpu == label)[0]
        anchors = pos_idx if same else torch.where(labels_cpu == label)[0]
        neg_idx = torch.where(ref_cpu != label)[0]
        if len(pos_idx) < (2 if same else 1) or len(neg_idx) == 0:
            continue
        k = len(pos_idx) if t_per_anchor is None else int(t_per_anchor)
        n_a = len(anchors)
        total = n_a * k
        if same:
            keep = ~torch.eye(n_a, dtype=torch.bool)
            candidates = pos_idx.unsqueeze(0).expand(n_a, -1)[keep].view(n_a, n_a - 1)
        else:
            candidates = pos_idx.unsqueeze(0).expand(n_a, -1)
        r_p = torch.randint(0, candidates.shape[1], (total,))
        rows = torch.arange(n_a).repeat_interleave(k)
        p = candidates[rows, r_p]
        a = anchors[rows]
        if weights is not None:
            w = weights[a.to(weights.device)][:, neg_idx.to(weights.device)]
            keep_rows = w.sum(dim=1) > 0
            if not bool(keep_rows.any()):
                continue
            keep_cpu = keep_rows.cpu()
            a, p, w = a[keep_cpu], p[keep_cpu], w[keep_rows]
            if w.dtype == torch.float16:
                w = w.float()
            n_local = torch.multinomial(w, 1, replacement=True).flatten().cpu()
        else:
            n_local = torch.randint(0, len(neg_idx), (total,))
        out_a.append(a)
        out_p.append(p)
        out_n.append(neg_idx[n_local])
    if not out_a:
        return empty_triplets(device)
    return tuple(torch.cat(x).to(device=device, dtype=torch.long) for x in (out_a, out_p, out_n))  # type: ignore[return-value]


def _weighted_random_triplets(
    labels: Tensor, ref_labels: Tensor | None, weights: Tensor, t_per_anchor: int | None = None
) -> TripletsTuple:
    """:func:`get_random_triplet_indices` with ``weights``: the same draws as the loop.

    The random calls must stay one ``randint`` (positives) and one ``multinomial``
    (negatives) per label, in ascending label order, to reproduce the reference's stream.
    Everything else is done once for all labels, so the loop body is only the two draws and
    the arg-max that ``multinomial(w, 1)`` performs (``argmax(w / q)`` with ``q`` exponential).
    Weights must be non-negative where finite; rows summing to 0 or NaN are skipped.
    """
    device = weights.device
    same = is_same_set(labels, ref_labels)
    ref = labels if ref_labels is None else ref_labels
    lab, refl = sortable_labels(labels.cpu(), ref.cpu())
    uniq = torch.unique(lab)
    # positives: reference rows of each label; anchors: query rows of each label
    ref_order, p_start, p_count = label_groups(uniq, refl)
    q_order, a_start, a_count = (ref_order, p_start, p_count) if same else label_groups(uniq, lab)
    valid = (p_count >= (2 if same else 1)) & (len(refl) - p_count > 0)
    uniq, p_start, p_count = uniq[valid], p_start[valid], p_count[valid]
    a_start, a_count = a_start[valid], a_count[valid]
    if len(uniq) == 0:
        return empty_triplets(labels.device)
    # every triplet slot: label index, anchor, local positive draw
    k = p_count if t_per_anchor is None else torch.full_like(p_count, int(t_per_anchor))
    per_label = a_count * k  # k triplets per anchor (len(P) by default)
    slot_label = torch.repeat_interleave(torch.arange(len(uniq)), per_label)
    slot_row = torch.arange(int(per_label.sum())) - torch.repeat_interleave(
        torch.cumsum(per_label, 0) - per_label, per_label
    )
    anchor_rank = slot_row // k[slot_label]  # which anchor of the label
    anchors = q_order[a_start[slot_label] + anchor_rank]
    # an anchor row is kept when its weights over the label's negatives sum to > 0
    neg = (lab.unsqueeze(1) != refl.unsqueeze(0)).to(device)
    row_ok = (torch.where(neg, weights, 0).sum(1) > 0).cpu()
    keep = row_ok[anchors]
    kept_per_label = torch.zeros(len(uniq), dtype=torch.long).index_add_(0, slot_label, keep.long())
    kept_anchors = anchors[keep].to(device)
    kept_start = (torch.cumsum(kept_per_label, 0) - kept_per_label).tolist()
    draws, negatives = [], []
    for label, n_slots, n_cand, n_kept, start in zip(
        uniq.tolist(),
        per_label.tolist(),
        (p_count - 1 if same else p_count).tolist(),
        kept_per_label.tolist(),
        kept_start,
    ):
        draws.append(torch.randint(0, n_cand, (n_slots,)))
        if n_kept == 0:
            continue
        neg_cols = torch.where(refl != label)[0]
        w = weights.index_select(0, kept_anchors[start : start + n_kept])
        w = w.index_select(1, neg_cols.to(device))
        if w.dtype == torch.float16:
            w = w.float()
        q = torch.empty_like(w).exponential_()
        negatives.append(neg_cols[torch.div(w, q, out=q).argmax(1).cpu()])
    r_p = torch.cat(draws)
    if same:  # the anchor itself is not a candidate: skip its slot
        r_p = r_p + (r_p >= anchor_rank).long()
    positives = ref_order[p_start[slot_label] + r_p]
    out = (anchors[keep], positives[keep], torch.cat(negatives) if negatives else anchors[:0])
    return tuple(t.to(device=labels.device, dtype=torch.long) for t in out)  # type: ignore[return-value]
