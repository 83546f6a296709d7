"""Index tuples: pairs and triplets built from labels, and conversions between them.

Formats (see the reference's conventions):

* pairs: a 4-tuple ``(a1, p, a2, n)``; ``(a1[i], p[i])`` is a positive pair and
  ``(a2[j], n[j])`` a negative pair;
* triplets: a 3-tuple ``(a, p, n)`` of equal lengths.

Anchors index the query ``embeddings``; ``p`` and ``n`` index the reference set (the query
itself when no reference is given). All outputs are int64 tensors on the labels' device.

"Same set" is decided by object identity: the diagonal (self pairs) is removed only when
``ref_labels is None`` or ``ref_labels is labels``. An equal copy keeps ``(i, i)`` pairs.

Nothing here materialises an ``N x M x M`` tensor: all triplets are enumerated per anchor
(memory proportional to the number of triplets), pairs-to-triplets conversion groups by
anchor instead of comparing every positive pair with every negative pair, and
:func:`iter_all_triplets_indices` yields all triplets in bounded chunks.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Literal, NamedTuple, TypeAlias

import torch
from torch import Tensor

__all__ = [
    "IndicesTuple",
    "LabelGroups",
    "PairsTuple",
    "TripletsTuple",
    "concatenate_indices_tuples",
    "convert_to_pairs",
    "convert_to_pos_pairs_with_unique_labels",
    "convert_to_triplets",
    "convert_to_weights",
    "get_all_pairs_indices",
    "get_all_triplets_indices",
    "get_anchors",
    "get_matches_and_diffs",
    "get_random_triplet_indices",
    "is_same_set",
    "iter_all_triplets_indices",
    "label_groups",
    "matched_size_indices",
    "neg_pairs_from_tuple",
    "pairs_to_triplets",
    "pos_neg_masks",
    "pos_pairs_from_tuple",
    "remove_self_comparisons",
    "repeat_to_match_size",
    "same_label_cells",
    "shift_indices_tuple",
    "sortable_labels",
]

PairsTuple: TypeAlias = tuple[Tensor, Tensor, Tensor, Tensor]
TripletsTuple: TypeAlias = tuple[Tensor, Tensor, Tensor]
IndicesTuple: TypeAlias = PairsTuple | TripletsTuple


def _empty(device: torch.device) -> Tensor:
    return torch.empty(0, dtype=torch.long, device=device)


#: unsigned dtypes that ``torch.searchsorted`` (and type promotion) do not support
_WIDE_UNSIGNED = (torch.uint16, torch.uint32, torch.uint64)


def _sortable(x: Tensor, keep_uint64_order: bool = True) -> Tensor:
    if x.dtype == torch.bool:
        return x.to(torch.uint8)
    if x.dtype == torch.uint64 and keep_uint64_order:  # flip the sign bit: the same order
        return x.view(torch.int64) ^ torch.iinfo(torch.int64).min
    if x.dtype in _WIDE_UNSIGNED:
        return x.to(torch.int64)
    return x


def sortable_labels(labels: Tensor, ref_labels: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """``labels`` and ``ref_labels`` in one dtype that ``sort`` and ``searchsorted`` accept.

    Losses and miners only compare labels, so every dtype torch compares is accepted; code that
    groups labels by sorting them needs one common dtype that ``searchsorted`` supports. Equality
    and order are kept: the common dtype is ``torch.promote_types`` of the two (int64 300 never
    meets int8 44), with bool as uint8, uint16/uint32 as int64 and uint64 as int64 with its sign
    bit flipped (same order). With ``ref_labels`` None or ``labels`` itself, the one converted
    tensor is returned twice. Devices are left as they are.

    Example:
        >>> lab, ref = sortable_labels(torch.tensor([True, False]), torch.tensor([2, 1]))
        >>> lab.tolist(), ref.tolist(), lab.dtype
        ([1, 0], [2, 1], torch.int64)
    """
    if ref_labels is None or ref_labels is labels:
        lab = _sortable(labels)
        return lab, lab
    if labels.dtype == ref_labels.dtype:
        return _sortable(labels), _sortable(ref_labels)
    # two dtypes: convert by value (uint64 beyond int64's range is not comparable then)
    lab, ref = _sortable(labels, False), _sortable(ref_labels, False)
    common = torch.promote_types(lab.dtype, ref.dtype)
    return lab.to(common), ref.to(common)


class LabelGroups(NamedTuple):
    """Reference rows grouped by label, for each query label (see :func:`label_groups`).

    ``order[start[i] : start[i] + count[i]]`` are the reference rows with ``labels[i]``'s label,
    in ascending row order.
    """

    order: Tensor
    start: Tensor
    count: Tensor


def label_groups(labels: Tensor, ref_labels: Tensor | None = None) -> LabelGroups:
    """Group the reference rows by label: one stable sort of ``ref_labels``, two searchsorted.

    The building block of every "rows of the same label" lookup (positive pairs, same-label
    softmax cells, triplet layouts, weighted random triplets): O((N + M) log M), no ``(N, M)``
    mask. Labels may have any dtype torch compares (bool too), the two possibly different.

    Args:
        labels: query labels, shape ``(N,)``.
        ref_labels: reference labels, shape ``(M,)`` (None: ``labels``).

    Returns:
        ``LabelGroups(order (M,), start (N,), count (N,))``, int64.

    Example:
        >>> g = label_groups(torch.tensor([1, 0]), torch.tensor([0, 1, 1]))
        >>> g.order.tolist(), g.start.tolist(), g.count.tolist()
        ([0, 1, 2], [1, 0], [2, 1])
    """
    query, ref = sortable_labels(labels, ref_labels)
    ref = ref.to(query.device)
    sorted_ref, order = torch.sort(ref, stable=True)
    if not sorted_ref.is_floating_point():
        start = torch.searchsorted(sorted_ref, query, side="left")
        count = torch.searchsorted(sorted_ref, query, side="right") - start
        return LabelGroups(order, start, count)
    # fix: NaN labels (sorted last, equal to nothing) broke the binary search for every label;
    # search up to the first NaN only, and give NaN queries no group
    nan = torch.isnan(sorted_ref)
    searchable = torch.where(nan, torch.inf, sorted_ref)
    start = torch.searchsorted(searchable, query, side="left")
    end = torch.minimum(torch.searchsorted(searchable, query, side="right"), (~nan).sum())
    count = torch.where(torch.isnan(query), 0, (end - start).clamp_min(0))
    return LabelGroups(order, start, count)


def same_label_cells(labels: Tensor, ref_labels: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Every ``(i, j)`` with ``labels[i] == ref_labels[j]`` (diagonal included), as two lists.

    Row-major order (rows ascending, then columns ascending), like ``torch.where`` of the
    equality mask, without building the ``(N, M)`` mask: O(N log N + number of cells).

    Example:
        >>> [t.tolist() for t in same_label_cells(torch.tensor([1, 0, 1]), torch.tensor([0, 1, 1]))]
        [[0, 0, 1, 2, 2], [1, 2, 0, 1, 2]]
    """
    order, start, count = label_groups(labels, ref_labels)
    total = int(count.sum())
    device = order.device
    rows = torch.repeat_interleave(
        torch.arange(len(count), device=device), count, output_size=total
    )
    offset = torch.repeat_interleave(
        start - (torch.cumsum(count, 0) - count), count, output_size=total
    )
    return rows, order[torch.arange(total, device=device) + offset]


def is_same_set(labels: Tensor | None, ref_labels: Tensor | None) -> bool:
    """``True`` when the reference set is the query set: ``ref_labels is None or is labels``."""
    return ref_labels is None or ref_labels is labels


def pos_neg_masks(labels: Tensor, ref_labels: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Boolean positive and negative masks, shape ``(N, M)``.

    ``pos[i, j] = labels[i] == ref_labels[j]`` with the diagonal cleared in the same-set case;
    ``neg = ~(labels[i] == ref_labels[j])``.

    Example:
        >>> pos, neg = pos_neg_masks(torch.tensor([0, 0, 1]))
        >>> pos.int().tolist(), neg.int().tolist()
        ([[0, 1, 0], [1, 0, 0], [0, 0, 0]], [[0, 0, 1], [0, 0, 1], [1, 1, 0]])
    """
    same = is_same_set(labels, ref_labels)
    ref = labels if ref_labels is None else ref_labels.to(labels.device)
    eq = labels.unsqueeze(1) == ref.unsqueeze(0)
    neg = ~eq
    if same:
        eq.fill_diagonal_(False)
    return eq, neg


def get_matches_and_diffs(
    labels: Tensor, ref_labels: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """The reference's uint8 ``matches`` / ``diffs`` matrices, shape ``(N, M)``."""
    pos, neg = pos_neg_masks(labels, ref_labels)
    return pos.to(torch.uint8), neg.to(torch.uint8)


def get_all_pairs_indices(labels: Tensor, ref_labels: Tensor | None = None) -> PairsTuple:
    """All positive and negative pairs in row-major order.

    Example:
        >>> [t.tolist() for t in get_all_pairs_indices(torch.tensor([0, 0, 1]))]
        [[0, 1], [1, 0], [0, 1, 2, 2], [2, 2, 0, 1]]
    """
    pos, neg = pos_neg_masks(labels, ref_labels)
    a1, p = torch.where(pos)
    a2, n = torch.where(neg)
    return a1, p, a2, n


def _group_offsets(counts: Tensor) -> Tensor:
    """Start offset of each group given group sizes (exclusive cumulative sum)."""
    return torch.cumsum(counts, 0) - counts


def _expand_by_anchor(
    a1: Tensor, p: Tensor, a2_sorted: Tensor, n_sorted: Tensor, num_anchors: int
) -> TripletsTuple:
    """Pair every positive pair with every negative pair of the same anchor.

    ``a2_sorted``/``n_sorted`` must be grouped by anchor (stable within an anchor). Output
    order: positive-pair order major, negative order (within the anchor) minor.
    """
    neg_counts = torch.bincount(a2_sorted, minlength=num_anchors)
    neg_start = _group_offsets(neg_counts)
    reps = neg_counts[a1]
    total = int(reps.sum())
    if total == 0:
        e = _empty(a1.device)
        return e, e.clone(), e.clone()
    a = torch.repeat_interleave(a1, reps, output_size=total)
    pp = torch.repeat_interleave(p, reps, output_size=total)
    first = torch.repeat_interleave(_group_offsets(reps), reps, output_size=total)
    k = torch.arange(total, device=a1.device) - first
    nn_ = n_sorted[neg_start[a] + k]
    return a, pp, nn_


def get_all_triplets_indices(labels: Tensor, ref_labels: Tensor | None = None) -> TripletsTuple:
    """All ``(a, p, n)`` with ``a, p`` positive and ``a, n`` negative, lexicographic order.

    Memory is proportional to the number of triplets (no ``N x M x M`` mask).

    Example:
        >>> [t.tolist() for t in get_all_triplets_indices(torch.tensor([0, 0, 1]))]
        [[0, 1], [1, 0], [2, 2]]
    """
    a1, p, a2, n = get_all_pairs_indices(labels, ref_labels)
    return _expand_by_anchor(a1, p, a2, n, len(labels))


def iter_all_triplets_indices(
    labels: Tensor, ref_labels: Tensor | None = None, *, max_triplets: int = 1 << 22
) -> Iterator[TripletsTuple]:
    """Yield all triplets, in the order of :func:`get_all_triplets_indices`, in chunks.

    Each chunk covers whole anchors and holds at most ``max_triplets`` triplets (an anchor
    with more triplets than that is yielded alone). Memory per chunk is bounded, so losses
    can work through ``N = 10^4`` batches whose full triplet list would not fit.

    Args:
        labels: query labels, shape ``(N,)``.
        ref_labels: reference labels, shape ``(M,)``; ``None`` (or ``labels`` itself) for the
            same set.
        max_triplets: upper bound of triplets per chunk.

    Yields:
        ``(a, p, n)`` int64 tensors.
    """
    if max_triplets < 1:
        raise ValueError(f"max_triplets must be >= 1; got {max_triplets}")
    pos, neg = pos_neg_masks(labels, ref_labels)
    per_anchor = (pos.sum(1) * neg.sum(1)).tolist()
    start = 0
    while start < len(per_anchor):
        stop, total = start, 0
        while stop < len(per_anchor) and (
            stop == start or total + per_anchor[stop] <= max_triplets
        ):
            total += per_anchor[stop]
            stop += 1
        if total > 0:
            a1, p = torch.where(pos[start:stop])
            a2, n = torch.where(neg[start:stop])
            a, pp, nn_ = _expand_by_anchor(a1, p, a2, n, stop - start)
            yield a + start, pp, nn_
        start = stop


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
        e = _empty(device)
        return e, e.clone(), e.clone()
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
    ref_order = torch.argsort(refl, stable=True)
    ref_sorted = refl[ref_order]
    p_start = torch.searchsorted(ref_sorted, uniq)
    p_count = torch.searchsorted(ref_sorted, uniq, right=True) - p_start
    if same:
        q_order, a_start, a_count = ref_order, p_start, p_count
    else:
        q_order = torch.argsort(lab, stable=True)
        q_sorted = lab[q_order]
        a_start = torch.searchsorted(q_sorted, uniq)
        a_count = torch.searchsorted(q_sorted, uniq, right=True) - a_start
    valid = (p_count >= (2 if same else 1)) & (len(refl) - p_count > 0)
    uniq, p_start, p_count = uniq[valid], p_start[valid], p_count[valid]
    a_start, a_count = a_start[valid], a_count[valid]
    if len(uniq) == 0:
        e = _empty(labels.device)
        return e, e.clone(), e.clone()
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


def pairs_to_triplets(pairs: PairsTuple) -> TripletsTuple:
    """Every positive pair joined with every negative pair that shares its anchor.

    Order: positive-pair order major, negative-pair order minor (the reference's order),
    computed by grouping negative pairs by anchor (no ``P x Nn`` matrix).

    Example:
        >>> a1, p = torch.tensor([0, 2, 0]), torch.tensor([1, 3, 1])
        >>> a2, n = torch.tensor([0, 0, 2, 5]), torch.tensor([2, 3, 4, 0])
        >>> [t.tolist() for t in pairs_to_triplets((a1, p, a2, n))]
        [[0, 0, 2, 0, 0], [1, 1, 3, 1, 1], [2, 3, 4, 2, 3]]
    """
    a1, p, a2, n = (t.long() for t in pairs)
    if len(a1) == 0 or len(a2) == 0:
        e = _empty(a1.device)
        return e, e.clone(), e.clone()
    num_anchors = int(torch.maximum(a1.max(), a2.max())) + 1
    order = torch.argsort(a2, stable=True)
    return _expand_by_anchor(a1, p, a2[order], n[order], num_anchors)


def convert_to_pairs(
    indices_tuple: IndicesTuple | None, labels: Tensor | None, ref_labels: Tensor | None = None
) -> PairsTuple:
    """Pairs from a miner output: None -> all pairs; triplets -> ``(a, p, a, n)``.

    Duplicates are kept (a pair in several triplets appears several times).
    """
    if indices_tuple is None:
        if labels is None:
            raise ValueError("labels must be given when indices_tuple is None")
        return get_all_pairs_indices(labels, ref_labels)
    if len(indices_tuple) == 4:
        return indices_tuple  # type: ignore[return-value]
    if len(indices_tuple) == 3:
        a, p, n = indices_tuple
        return a, p, a, n
    raise TypeError(f"indices_tuple must have 3 or 4 entries; got {len(indices_tuple)}")


def convert_to_triplets(
    indices_tuple: IndicesTuple | None,
    labels: Tensor | None,
    ref_labels: Tensor | None = None,
    t_per_anchor: int | Literal["all"] | None = 100,
) -> TripletsTuple:
    """Triplets from a miner output.

    None -> all triplets (``t_per_anchor == "all"``) or random ones (an integer); pairs ->
    :func:`pairs_to_triplets`; triplets are returned unchanged.
    """
    if indices_tuple is None:
        if labels is None:
            raise ValueError("labels must be given when indices_tuple is None")
        if t_per_anchor == "all":
            return get_all_triplets_indices(labels, ref_labels)
        return get_random_triplet_indices(labels, ref_labels, t_per_anchor=t_per_anchor)  # type: ignore[arg-type]
    if len(indices_tuple) == 3:
        return indices_tuple  # type: ignore[return-value]
    if len(indices_tuple) == 4:
        return pairs_to_triplets(indices_tuple)  # type: ignore[arg-type]
    raise TypeError(f"indices_tuple must have 3 or 4 entries; got {len(indices_tuple)}")


def convert_to_weights(
    indices_tuple: IndicesTuple | None,
    labels: Tensor,
    dtype: torch.dtype,
    using_ref: bool = False,
) -> Tensor:
    """Per-sample weights ``count / max(count)`` from a miner output, shape ``(N,)``.

    None (or an all-empty tuple) gives all ones. Otherwise every index of the tuple is
    counted (only anchors with ``using_ref``); samples never mentioned get weight 0.

    Example:
        >>> t = (torch.tensor([0, 1, 2, 3]), torch.tensor([4, 4, 4, 4]), torch.tensor([5, 5, 6, 6]))
        >>> convert_to_weights(t, torch.zeros(7), torch.float64).tolist()
        [0.25, 0.25, 0.25, 0.25, 1.0, 0.5, 0.5]
    """
    n = len(labels)
    if indices_tuple is None or all(len(t) == 0 for t in indices_tuple):
        return torch.ones(n, dtype=dtype, device=labels.device)
    if using_ref:
        idx = get_anchors(indices_tuple)
    else:
        idx = torch.cat([t.to(labels.device).long() for t in indices_tuple])
    counts = torch.bincount(idx.to(labels.device), minlength=n)[:n].to(dtype)
    return counts / counts.max()


def convert_to_pos_pairs_with_unique_labels(
    indices_tuple: IndicesTuple | None, labels: Tensor
) -> tuple[Tensor, Tensor]:
    """One positive pair per distinct anchor label: the first one in pair order.

    Output is ordered by ascending label value (what NPairsLoss uses).
    """
    a, p, _, _ = convert_to_pairs(indices_tuple, labels)
    if len(a) == 0:
        return a, p
    anchor_labels = labels[a]
    _, inverse = torch.unique(anchor_labels, return_inverse=True)
    num = int(inverse.max()) + 1
    positions = torch.arange(len(a), device=a.device)
    first = torch.full((num,), len(a), dtype=torch.long, device=a.device)
    first = first.scatter_reduce(0, inverse, positions, reduce="amin")
    return a[first], p[first]


def pos_pairs_from_tuple(indices_tuple: IndicesTuple) -> tuple[Tensor, ...]:
    """The positive half ``(a1, p)`` (the first two entries)."""
    return tuple(indices_tuple[:2])


def neg_pairs_from_tuple(indices_tuple: IndicesTuple) -> tuple[Tensor, ...]:
    """The negative half ``(a2, n)`` (the last two entries)."""
    return tuple(indices_tuple[2:])


def get_anchors(indices_tuple: IndicesTuple) -> Tensor:
    """Anchors: ``a`` for triplets, ``cat(a1, a2)`` for pairs."""
    if len(indices_tuple) == 3:
        return indices_tuple[0]
    return torch.cat([indices_tuple[0], indices_tuple[2]])


def concatenate_indices_tuples(t1: IndicesTuple, t2: IndicesTuple) -> IndicesTuple:
    """Entry-wise concatenation; ``t2`` is moved to ``t1``'s device."""
    if len(t1) != len(t2):
        raise ValueError(
            "indices tuples must have the same length to be concatenated; "
            f"got {len(t1)} and {len(t2)}"
        )
    return tuple(torch.cat([x, y.to(x.device)]) for x, y in zip(t1, t2, strict=True))  # type: ignore[return-value]


def shift_indices_tuple(indices_tuple: IndicesTuple, batch_size: int) -> IndicesTuple:
    """Add ``batch_size`` to the reference-side entries ``p`` and ``n`` (two-stream setups)."""
    if len(indices_tuple) == 3:
        a, p, n = indices_tuple
        return a, p + batch_size if len(p) else p, n + batch_size if len(n) else n
    if len(indices_tuple) == 4:
        a1, p, a2, n = indices_tuple
        return a1, p + batch_size if len(p) else p, a2, n + batch_size if len(n) else n
    return indices_tuple


def repeat_to_match_size(x: Tensor, larger_size: int, smaller_size: int) -> Tensor:
    """Tile ``x`` (length ``smaller_size``) to length ``larger_size``."""
    return x.repeat(math.ceil(larger_size / smaller_size))[:larger_size]


def matched_size_indices(curr_p_idx: Tensor, curr_n_idx: Tensor) -> tuple[Tensor, Tensor]:
    """Tile the shorter of two index lists so that both have the same length."""
    np_, nn_ = len(curr_p_idx), len(curr_n_idx)
    if np_ > nn_:
        return curr_p_idx, repeat_to_match_size(curr_n_idx, np_, nn_)
    if nn_ > np_:
        return repeat_to_match_size(curr_p_idx, nn_, np_), curr_n_idx
    return curr_p_idx, curr_n_idx


def remove_self_comparisons(
    indices_tuple: IndicesTuple,
    curr_batch_idx: Tensor,
    ref_size: int,
    ref_is_subset: bool = False,
) -> IndicesTuple:
    """Drop pairs/triplets whose positive is the reference slot holding the anchor itself.

    The query batch sits in the reference set at slots ``curr_batch_idx`` (``curr_batch_idx[i]``
    holds query row ``i``). With ``ref_is_subset`` the roles of anchor and positive are swapped.
    Triplets are filtered on ``(a, p)``; for pairs only the positive half is filtered.

    Unlike the reference, a batch of one sample is handled too (the reference keeps that
    self pair; see docs/compatibility.md).
    """
    del ref_size  # slots are given explicitly; kept for signature compatibility
    curr = curr_batch_idx.to(indices_tuple[0].device).long()
    a, p = indices_tuple[0], indices_tuple[1]
    if len(a) == 0:
        return indices_tuple
    is_self = (a == curr[p]) if ref_is_subset else (p == curr[a])
    keep = ~is_self
    if len(indices_tuple) == 3:
        return a[keep], p[keep], indices_tuple[2][keep]
    return a[keep], p[keep], indices_tuple[2], indices_tuple[3]
