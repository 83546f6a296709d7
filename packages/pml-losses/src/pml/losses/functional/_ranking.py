"""Ranking losses: FastAP, PNP, Smooth-AP and the ranked-list loss.

Each takes the batch's ``(N, N)`` distance or similarity matrix and computes in at least
float32 (float64 stays float64). PNP and Smooth-AP need, for every (query, pivot) pair, a sum
of sigmoids over a whole row: :class:`_SigmoidRankSums` computes those sums in bounded chunks
of pairs and recomputes them in its backward, so memory stays ``O(chunk·N)`` instead of the
reference's ``N x N x N`` tensors. FastAP (histograms, two ``scatter_add`` calls instead of
one ``(N, N)`` pulse per bin) is in :mod:`pml.losses.functional._fast_ap`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal, cast

import torch
from torch import Tensor
from torch.autograd.function import FunctionCtx, once_differentiable

from pml.core.dtypes import accumulation_dtype

__all__ = [
    "PNP_VARIANTS",
    "pnp_loss",
    "ranked_list_loss",
    "row_rank_values",
    "smooth_ap_loss",
]

PNPVariant = Literal["Ds", "Dq", "Iu", "Ib", "O"]

#: PNP's rank functions, in the reference's order
PNP_VARIANTS: tuple[str, ...] = ("Ds", "Dq", "Iu", "Ib", "O")

#: cells (pairs x columns) of one chunk of :class:`_RowRankValues` (1 MB in float32)
_CHUNK_CELLS = 1 << 18

#: ``(start, stop, all_sums, block_sums) -> (values, d values / d all_sums, d / d block_sums)``
#: for the pairs ``start:stop`` (``block_sums`` and its derivative None without blocks)
PairFunction = Callable[[int, int, Tensor, Tensor | None], tuple[Tensor, Tensor, Tensor | None]]


def _block_columns(rows: Tensor, block_size: int) -> Tensor:
    """Columns of the block of consecutive rows holding each row, shape ``(c, g)``."""
    offsets = torch.arange(block_size, device=rows.device)
    return (rows - rows % block_size).unsqueeze(1) + offsets


class _RowRankValues(torch.autograd.Function):
    """Per-row sums of a function of soft rank counts, with the row Jacobian built on the way.

    For pair ``p`` (row ``r_p``), ``sig_pk = sigmoid(logits[r_p, k] - pivots_p)``; its sums
    over all columns (and over the block of ``r_p``) go through ``pair_fn``, and row ``r``'s
    value is the sum of its pairs' values. Each value depends only on row ``r`` of ``logits``
    and the row's pivots, so the gradient is ``grad_r · J[r]`` with ``J`` of ``logits``' shape:
    the forward accumulates ``J`` chunk by chunk while the sigmoids are at hand (each sigmoid
    is computed once; nothing of size ``pairs x M`` is kept).
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: FunctionCtx,
        logits: Tensor,
        pivots: Tensor,
        rows: Tensor,
        block_size: int | None,
        pair_fn: PairFunction,
        pairs_per_row: int | None,
    ) -> Tensor:
        values = logits.new_zeros(logits.shape[0])
        needs_grad = any(ctx.needs_input_grad[:2])  # type: ignore[attr-defined]
        jac = torch.zeros_like(logits) if needs_grad else None
        jac_pivots = torch.empty_like(pivots) if needs_grad else None
        num_cols = max(logits.shape[1], 1)
        # dense layout (every row has m consecutive pairs): whole rows per chunk, no gather
        per = pairs_per_row or 1
        step = max(1, _CHUNK_CELLS // (num_cols * per)) * per
        for start in range(0, len(rows), step):
            stop = min(start + step, len(rows))
            r = rows[start:stop]
            piv = pivots[start:stop]
            if pairs_per_row is None:
                sig = logits.index_select(0, r).sub_(piv.unsqueeze(1))
            else:
                first, last = start // per, stop // per
                sig = logits[first:last].unsqueeze(1) - piv.view(last - first, per, 1)
                sig = sig.view(stop - start, -1)
            sig.sigmoid_()
            cols = block = None
            if block_size is not None:
                cols = _block_columns(r, block_size)
                block = sig.gather(1, cols)
            vals, d_all, d_block = pair_fn(
                start, stop, sig.sum(1), None if block is None else block.sum(1)
            )
            if pairs_per_row is None:
                values.index_add_(0, r, vals)
            else:
                values[first:last] = vals.view(-1, per).sum(1)
            if jac is None or jac_pivots is None:
                continue
            # d sigmoid(x) = sigmoid(x)(1 - sigmoid(x)) dx, one fused pass
            d = torch.ops.aten.sigmoid_backward(d_all.unsqueeze(1).expand_as(sig), sig)
            if cols is not None and block is not None and d_block is not None:
                d_blk = torch.ops.aten.sigmoid_backward(
                    d_block.unsqueeze(1).expand_as(block), block
                )
                d.scatter_add_(1, cols, d_blk)
            if pairs_per_row is None:
                jac.index_add_(0, r, d)
            else:
                torch.sum(d.view(last - first, per, -1), 1, out=jac[first:last])
            torch.sum(d, 1, out=jac_pivots[start:stop]).neg_()
        ctx.save_for_backward(jac, jac_pivots, rows)
        return values

    @staticmethod
    @once_differentiable
    def backward(ctx: FunctionCtx, grad: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        jac, jac_pivots, rows = ctx.saved_tensors  # type: ignore[attr-defined]
        grad = grad.to(jac.dtype)
        return jac * grad.unsqueeze(1), jac_pivots * grad[rows], None, None, None, None


def row_rank_values(
    logits: Tensor,
    pivots: Tensor,
    rows: Tensor,
    pair_fn: PairFunction,
    block_size: int | None = None,
    pairs_per_row: int | None = None,
) -> Tensor:
    """Per-row sums of ``pair_fn`` of soft rank counts, in bounded chunks of pairs.

    For pair ``p`` with row ``r_p`` the soft rank count is ``Σ_k sigmoid(logits[r_p, k] -
    pivots_p)``: with ``logits = sim / τ`` and ``pivots_p = sim[r_p, c_p] / τ`` it counts
    (softly) the columns of row ``r_p`` that rank above column ``c_p``; a column set to
    ``-inf`` counts 0. With ``block_size = g`` the count over the ``g`` columns of the block
    of consecutive rows holding ``r_p`` is formed too. ``pair_fn`` turns the counts of pairs
    ``start:stop`` into values and their derivatives; row ``r``'s result is the sum of its
    pairs' values. Memory ``O(chunk·M)`` plus one ``(N, M)`` Jacobian, never ``P x M``.

    Args:
        logits: shape ``(N, M)``, floating point (kept in its dtype).
        pivots: shape ``(P,)``, ``logits``' dtype.
        rows: rows of the pairs, int64 ``(P,)``.
        pair_fn: ``(start, stop, all_counts (c,), block_counts (c,) | None) -> (values (c,),
            d values / d all_counts, d values / d block_counts | None)``.
        block_size: ``g`` (a divisor of ``M``), or None.
        pairs_per_row: ``m`` when ``rows`` is ``arange(N).repeat_interleave(m)`` (a faster
            layout: whole rows per chunk, no row gather), else None.

    Returns:
        Shape ``(N,)``, ``logits``' dtype (0 for rows without pairs).

    Example:
        >>> logits = torch.tensor([[0.0, 2.0, float("-inf")], [1.0, 0.0, 3.0]])
        >>> count = lambda i, j, a, b: (a, torch.ones_like(a), None)
        >>> row_rank_values(logits, torch.tensor([2.0, 1.0]), torch.tensor([0, 1]), count)
        tensor([0.6192, 1.6497])
    """
    return _RowRankValues.apply(logits, pivots, rows, block_size, pair_fn, pairs_per_row)


def _same_label_counts(labels: Tensor) -> Tensor:
    """How often each row's label occurs in ``labels`` (itself included), int64 ``(N,)``."""
    _, inverse, counts = torch.unique(labels, return_inverse=True, return_counts=True)
    return counts[inverse]


def _pnp_function(ranks: Tensor, variant: str, b: float, alpha: float) -> tuple[Tensor, Tensor]:
    """PNP's ``f(R)`` and ``f'(R)`` for one variant."""
    one_plus = 1 + ranks
    match variant:
        case "O":
            return ranks, torch.ones_like(ranks)
        case "Ds":
            return torch.log(one_plus), 1 / one_plus
        case "Dq":
            power = one_plus.pow(-alpha)
            return power, -alpha * power / one_plus
        case "Iu":
            log = torch.log(one_plus)
            return one_plus * log, log + 1
        case _:  # "Ib"
            scaled = b * ranks
            return (scaled - torch.log(1 + scaled)) / b**2, ranks / (1 + scaled)


def pnp_loss(
    sim: Tensor,
    labels: Tensor,
    b: float = 2,
    alpha: float = 1,
    anneal: float = 0.01,
    variant: PNPVariant = "O",
) -> tuple[Tensor, Tensor]:
    """PNP loss (Li et al., "Rethinking the optimization of average precision", AAAI 2022).

    Positives of row ``i``: same-label rows ``j ≠ i`` and, when there is one, ``i`` itself
    (``N⁺_i`` = their number); rows with no other same-label row are not valid. For each
    positive ``(i, j)``, ``R_ij = Σ_{k: y_k ≠ y_i} sigmoid((s_ik - s_ij) / anneal)``,
    computed by :func:`sigmoid_rank_sums` in bounded chunks (``O(N²)`` memory, not ``N³``;
    the reference clamps the sigmoid's argument to ``[-50, 50]``, which changes a term by
    less than ``sigmoid(-50) = 2e-22``). With
    ``f`` = ``O``: ``R``; ``Ds``: ``log(1 + R)``; ``Dq``: ``(1 + R)^-alpha``; ``Iu``:
    ``(1 + R)·log(1 + R)``; ``Ib``: ``(b·R - log(1 + b·R)) / b²``, the loss is the mean over
    valid rows of ``Σ_j f(R_ij) / N⁺_i`` (``1 -`` that for ``Dq``).

    Args:
        sim: similarities of the batch to itself, shape ``(N, N)``.
        labels: shape ``(N,)``.
        b: the ``Ib`` variant's slope.
        alpha: the ``Dq`` variant's exponent.
        anneal: the sigmoid's temperature (``> 0``).
        variant: one of :data:`PNP_VARIANTS`.

    Returns:
        ``(loss, valid)``: the 0-dim loss in the compute dtype (at least float32; NaN when no
        row is valid) and the boolean ``(N,)`` valid rows.

    Raises:
        ValueError: unknown ``variant``.

    Example:
        >>> sim = torch.tensor([[1.0, 0.8, 0.1], [0.8, 1.0, 0.3], [0.1, 0.3, 1.0]])
        >>> pnp_loss(sim, torch.tensor([0, 0, 1]), anneal=0.1)
        (tensor(0.0022), tensor([ True,  True, False]))
    """
    if variant not in PNP_VARIANTS:
        raise ValueError(f"variant must be one of {list(PNP_VARIANTS)}; got {variant!r}")
    acc = accumulation_dtype(sim.dtype)
    s = sim.to(acc)
    n = s.shape[0]
    same = labels.unsqueeze(1) == labels.unsqueeze(0)
    num_others = _same_label_counts(labels) - 1
    valid = num_others > 0
    positives = same.clone()
    positives.diagonal().copy_(valid)  # the row itself counts only where it has a positive
    rows, cols = positives.nonzero(as_tuple=True)
    scaled = s / anneal
    # compat: the reference clamps the sigmoid's argument to [-50, 50]; a term beyond differs
    # by less than sigmoid(-50) = 2e-22 (invisible in float64 sums and gradients)
    negatives = scaled.clone()  # same-label cells at -inf count 0 (an index fill: cheap)
    negatives.diagonal().fill_(float("-inf"))
    negatives[rows, cols] = float("-inf")
    pair_scale = 1 / (num_others + 1).to(acc)[rows]

    def per_pair(start: int, stop: int, ranks: Tensor, _: Tensor | None) -> tuple:
        value, slope = _pnp_function(ranks, variant, b, alpha)
        scale = pair_scale[start:stop]
        return value * scale, slope * scale, None

    num_pairs = torch.where(valid, num_others + 1, 0)
    low, high = torch.aminmax(num_pairs) if n > 0 else (num_pairs.new_zeros(()),) * 2
    dense = int(high) if bool(low == high) and int(high) > 0 else None
    per_row = row_rank_values(negatives, scaled[rows, cols], rows, per_pair, None, dense)
    loss = torch.where(valid, per_row, 0).sum() / valid.sum()
    return (1 - loss if variant == "Dq" else loss), valid


def smooth_ap_loss(
    sim: Tensor,
    block_size: int,
    temperature: float = 0.01,
    weights: Tensor | None = None,
) -> Tensor:
    """Smooth-AP per query (Brown et al., ECCV 2020) over blocks of consecutive rows.

    The batch is cut into consecutive blocks of ``g = block_size`` rows, and the positives
    of query ``q`` are the members of its block ``B(q)``, ``q`` included. With
    ``sig(x) = sigmoid(x / τ)``, for ``l ∈ B(q)``:
    ``all_rank(q, l) = 1 + Σ_{k ≠ l} sig(s_qk - s_ql)``,
    ``pos_rank(q, l) = 1 + Σ_{k ∈ B(q), k ≠ l} sig(s_qk - s_ql)``;
    ``AP_q = mean_{l ∈ B(q)} pos_rank / all_rank`` and ``loss_q = (1 - AP_q)·w_q``. Both ranks
    come from one :func:`sigmoid_rank_sums` pass in bounded chunks (``O(N·g·N)`` time,
    ``O(chunk·N)`` memory; the reference builds ``N x N x N`` tensors).

    Args:
        sim: similarities of the batch to itself, shape ``(N, N)``.
        block_size: ``g``, a divisor of ``N`` (``>= 1``).
        temperature: ``τ > 0``.
        weights: per-row weights ``(N,)`` (miner weights), or None for ones.

    Returns:
        Shape ``(N,)``, in the compute dtype (at least float32).

    Raises:
        ValueError: ``block_size`` does not divide ``N``.

    Example:
        >>> sim = torch.tensor([[1.0, 0.8, 0.1, 0.9], [0.8, 1.0, 0.3, 0.2],
        ...                     [0.1, 0.3, 1.0, 0.4], [0.9, 0.2, 0.4, 1.0]])
        >>> smooth_ap_loss(sim, 2, temperature=0.1)
        tensor([0.2370, 0.0030, 0.0689, 0.2847])
    """
    acc = accumulation_dtype(sim.dtype)
    s = sim.to(acc)
    n = s.shape[0]
    if block_size < 1 or n % block_size != 0:
        raise ValueError(f"block_size must be a divisor of N = {n}; got {block_size}")
    if block_size == n:
        # one block: every rank is its own positive rank, AP = 1 (0 on the graph, NaN kept)
        losses = s.sum(1) * 0
    else:
        ids = torch.arange(n, device=s.device)
        rows = ids.repeat_interleave(block_size)
        cols = rows - rows % block_size + ids[:block_size].repeat(n)
        scaled = s / temperature

        def per_pair(start: int, stop: int, all_sums: Tensor, pos_sums: Tensor | None) -> tuple:
            # each sum holds the pivot's own term sigmoid(0) = 0.5: 1 + Σ_{k ≠ l} = sum + 0.5
            pos_rank, all_rank = cast(Tensor, pos_sums) + 0.5, all_sums + 0.5
            inv = 1 / (all_rank * block_size)
            return pos_rank * inv, -pos_rank * inv / all_rank, inv

        ap = row_rank_values(scaled, scaled[rows, cols], rows, per_pair, block_size, block_size)
        losses = 1 - ap
    if weights is not None:
        losses = losses * weights.to(acc)
    return losses


def _weighted_mean_gap(gap: Tensor, mask: Tensor, temperature: float, pad: float) -> Tensor:
    """``Σ_j w·gap / (Σ_j w + pad)`` per row, ``w = exp(temperature·gap)`` on ``mask``.

    ``gap`` is 0 outside ``mask``, so no ``exp`` there can overflow.
    """
    weights = mask if temperature == 0 else torch.exp(temperature * gap) * mask
    return (weights * gap).sum(1) / (weights.sum(1) + pad)


def ranked_list_loss(
    dist: Tensor,
    labels: Tensor,
    margin: float,
    alpha: float,
    Tp: float = 0,  # the reference's argument name
    Tn: float = 1,
    imbalance: float = 0.5,
) -> Tensor:
    """Ranked list loss per query row (Wang et al., CVPR 2019).

    With ``D`` the distances (diagonal ignored): positives ``j ≠ i`` of the same label with
    ``D_ij > alpha - margin`` and negatives of another label with ``D_ij < alpha`` are
    selected (a selected distance ``<= 0`` is ignored). Weights ``w⁺ = exp(Tp·(D - (alpha -
    margin)))``, ``w⁻ = exp(Tn·(alpha - D))`` on the selected cells;
    ``L_P(i) = Σ_j w⁺(D - (alpha - margin)) / Σ_j (w⁺ + 1e-5)`` and
    ``L_N(i) = Σ_j w⁻(alpha - D) / Σ_j (w⁻ + 1e-5)``, the ``1e-5`` added for every column;
    ``loss_i = (1 - imbalance)·L_P(i) + imbalance·L_N(i)``.

    Args:
        dist: distances of the batch to itself, shape ``(N, N)``.
        labels: shape ``(N,)``.
        margin: ``m``.
        alpha: the negative boundary.
        Tp: positive temperature.
        Tn: negative temperature.
        imbalance: weight of the negative term.

    Returns:
        Shape ``(N,)``, in the compute dtype (at least float32).

    Example:
        >>> d = torch.tensor([[0.0, 1.5, 0.7], [1.5, 0.0, 0.9], [0.7, 0.9, 0.0]])
        >>> ranked_list_loss(d, torch.tensor([0, 0, 1]), margin=0.4, alpha=1.2)
        tensor([0.6000, 0.5000, 0.2050])
    """
    acc = accumulation_dtype(dist.dtype)
    d = dist.to(acc)
    n = d.shape[0]
    same = labels.unsqueeze(1) == labels.unsqueeze(0)
    different = ~same
    same.fill_diagonal_(False)
    # selected cells as float masks: multiplying is much cheaper than where/masked_fill, and a
    # NaN distance still reaches the sums (0 * NaN = NaN)
    pos_mask = (same & (d > max(alpha - margin, 0))).to(acc)
    neg_mask = (different & (d > 0) & (d < alpha)).to(acc)
    pad = n * 1e-5
    loss_pos = _weighted_mean_gap((d - (alpha - margin)) * pos_mask, pos_mask, Tp, pad)
    loss_neg = _weighted_mean_gap((alpha - d) * neg_mask, neg_mask, Tn, pad)
    return (1 - imbalance) * loss_pos + imbalance * loss_neg
