"""Ranking losses: FastAP, PNP, Smooth-AP and the ranked-list loss.

Each takes the batch's ``(N, N)`` distance or similarity matrix and computes in at least
float32 (float64 stays float64). PNP and Smooth-AP need, for every (query, pivot) pair, a sum
of sigmoids over a whole row: :class:`_SigmoidRankSums` computes those sums in bounded chunks
of pairs and recomputes them in its backward, so memory stays ``O(chunk·N)`` instead of the
reference's ``N x N x N`` tensors. FastAP builds its histograms with two ``scatter_add`` calls
(each distance falls into two neighbouring bins) instead of one ``(N, N)`` pulse per bin.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor
from torch.autograd.function import FunctionCtx, once_differentiable

from pml.core.dtypes import accumulation_dtype

__all__ = [
    "PNP_VARIANTS",
    "fast_ap_loss",
    "pnp_loss",
    "ranked_list_loss",
    "sigmoid_rank_sums",
    "smooth_ap_loss",
]

PNPVariant = Literal["Ds", "Dq", "Iu", "Ib", "O"]

#: PNP's rank functions, in the reference's order
PNP_VARIANTS: tuple[str, ...] = ("Ds", "Dq", "Iu", "Ib", "O")

#: cells (pairs x columns) of one chunk of :class:`_SigmoidRankSums` (16 MB in float32)
_CHUNK_CELLS = 1 << 22


def _chunks(num_pairs: int, num_cols: int) -> range:
    step = max(1, _CHUNK_CELLS // max(num_cols, 1))
    return range(0, num_pairs, step)


def _chunk_sigmoid(
    sim: Tensor, rows: Tensor, cols: Tensor, temperature: float, bound: float | None
) -> tuple[Tensor, Tensor | None]:
    """``sig_pk = 1 / (1 + exp(clamp((sim[r_p, c_p] - sim[r_p, k]) / τ, ±bound)))``, ``(c, N)``.

    Also returns the cells where the clamp let the gradient through (None without a bound).
    """
    t = sim[rows].neg_().add_(sim[rows, cols].unsqueeze(1)).div_(temperature)
    inside = None
    if bound is not None:
        inside = (t >= -bound) & (t <= bound)
        t.clamp_(-bound, bound)
    return t.exp_().add_(1).reciprocal_(), inside


def _chunk_mask(keys: Tensor, rows: Tensor, same: bool) -> Tensor:
    """``keys[k] == keys[r_p]`` (``same``) or ``!=``, shape ``(c, N)``."""
    mine = keys[rows].unsqueeze(1)
    return mine == keys.unsqueeze(0) if same else mine != keys.unsqueeze(0)


class _SigmoidRankSums(torch.autograd.Function):
    """Masked (and optionally full) row sums of sigmoids of similarity differences.

    Forward and backward walk the pairs in chunks of about ``_CHUNK_CELLS`` cells and keep
    nothing of size ``pairs x N``: the backward recomputes each chunk's sigmoids.
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: FunctionCtx,
        sim: Tensor,
        rows: Tensor,
        cols: Tensor,
        keys: Tensor,
        same: bool,
        with_all: bool,
        temperature: float,
        bound: float | None,
    ) -> Tensor:
        out = sim.new_empty((len(rows), 2 if with_all else 1))
        step = _chunks(len(rows), sim.shape[1]).step
        for start in range(0, len(rows), step):
            r, c = rows[start : start + step], cols[start : start + step]
            sig, _ = _chunk_sigmoid(sim, r, c, temperature, bound)
            if with_all:
                out[start : start + step, 1] = sig.sum(1)
            out[start : start + step, 0] = sig.mul_(_chunk_mask(keys, r, same)).sum(1)
        ctx.save_for_backward(sim, rows, cols, keys)
        ctx.same, ctx.with_all = same, with_all  # type: ignore[attr-defined]
        ctx.temperature, ctx.bound = temperature, bound  # type: ignore[attr-defined]
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx: FunctionCtx, grad_out: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        sim, rows, cols, keys = ctx.saved_tensors  # type: ignore[attr-defined]
        same, with_all = ctx.same, ctx.with_all  # type: ignore[attr-defined]
        temperature, bound = ctx.temperature, ctx.bound  # type: ignore[attr-defined]
        grad = torch.zeros_like(sim)
        grad_out = grad_out.to(sim.dtype)
        step = _chunks(len(rows), sim.shape[1]).step
        for start in range(0, len(rows), step):
            r, c = rows[start : start + step], cols[start : start + step]
            g = grad_out[start : start + step]
            sig, inside = _chunk_sigmoid(sim, r, c, temperature, bound)
            # dsig/dsim[r, k] = sig(1 - sig)/τ (inside the clamp); dsig/dsim[r, c] is its negative
            d = sig.sub_(sig.square()).div_(temperature)
            if inside is not None:
                d.mul_(inside)
            coef = _chunk_mask(keys, r, same) * g[:, :1]
            if with_all:
                coef.add_(g[:, 1:2])
            d.mul_(coef)
            grad.index_add_(0, r, d)
            grad.index_put_((r, c), -d.sum(1), accumulate=True)
        return grad, None, None, None, None, None, None, None


def sigmoid_rank_sums(
    sim: Tensor,
    rows: Tensor,
    cols: Tensor,
    keys: Tensor,
    *,
    same: bool,
    with_all: bool = False,
    temperature: float,
    bound: float | None = None,
) -> Tensor:
    """Soft rank counts: sums of ``sig((sim[r, k] - sim[r, c]) / τ)`` over columns ``k``.

    For pair ``p = (r, c)`` (query row ``r``, pivot column ``c``) and every column ``k``,
    ``sig_pk = 1 / (1 + exp(clamp(-(sim[r, k] - sim[r, c]) / τ, -bound, bound)))`` (no clamp
    without ``bound``). Column ``k`` counts when ``keys[k] == keys[r]`` (``same``) or
    ``keys[k] != keys[r]`` (not ``same``); the pivot's own term, if counted, is ``sig(0) = 0.5``.
    Computed in bounded chunks of pairs, forward and backward: memory ``O(chunk·N)``.

    Args:
        sim: similarities, shape ``(N, M)``, floating point (kept in its dtype).
        rows: query rows of the pairs, int64 ``(P,)``.
        cols: pivot columns of the pairs, int64 ``(P,)``.
        keys: one key per column, shape ``(M,)`` (labels, block ids), compared with ``==``;
            ``keys[r]`` is the row's key (so ``N <= M`` and rows index ``keys``).
        same: count the columns whose key equals the row's (else those that differ).
        with_all: also return the sums over every column.
        temperature: ``τ > 0``.
        bound: clamp of the sigmoid's argument (PNP: 50), or None.

    Returns:
        Shape ``(P, 1)`` (masked sums), or ``(P, 2)`` (masked, all) with ``with_all``;
        ``sim``'s dtype.

    Example:
        >>> sim = torch.tensor([[1.0, 0.5, 0.9], [0.5, 1.0, 0.2], [0.9, 0.2, 1.0]])
        >>> r, c = torch.tensor([0]), torch.tensor([1])
        >>> sigmoid_rank_sums(sim, r, c, torch.tensor([0, 0, 1]), same=False, temperature=0.1)
        tensor([[0.9820]])
    """
    return _SigmoidRankSums.apply(sim, rows, cols, keys, same, with_all, float(temperature), bound)


def fast_ap_loss(
    dist: Tensor,
    labels: Tensor,
    num_bins: int = 10,
    hist_max: float = 4.0,
    weights: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """FastAP per query row (Cakir et al., CVPR 2019), from triangular-pulse histograms.

    Bins ``t_b = b·Δ``, ``Δ = hist_max / num_bins``, ``b = 0..num_bins``; a distance ``d``
    adds ``relu(1 - |d - t_b| / Δ)`` to bin ``b`` of the positive (same label, other row) or
    negative histogram of its row: at most two neighbouring bins, so the histograms come
    from two ``scatter_add`` calls (``O(N²)`` memory, not ``O(N²·bins)``). With
    ``H⁺ = cumsum h⁺`` and ``H = cumsum (h⁺ + h⁻)``, ``FastAP_i = Σ_b h⁺H⁺/H`` over the bins
    where ``h⁺H⁺ > 0`` and ``H > 0``; ``loss_i = (1 - FastAP_i / N⁺_i)·w_i``.

    Args:
        dist: distances of the batch to itself, shape ``(N, N)``, in ``[0, hist_max]``.
        labels: shape ``(N,)``.
        num_bins: number of bins (``num_bins + 1`` centres).
        hist_max: the largest distance (4 for squared distances of unit vectors).
        weights: per-row weights ``(N,)`` (miner weights), or None for ones.

    Returns:
        ``(losses, valid)``: losses ``(N,)`` in the compute dtype (at least float32; NaN on
        rows whose distances are not finite) and the boolean ``(N,)`` rows that count: rows
        with a positive, none at all when no bin of the batch counts.

    Example:
        >>> d = torch.tensor([[0.0, 1.0, 3.0], [1.0, 0.0, 2.0], [3.0, 2.0, 0.0]])
        >>> fast_ap_loss(d, torch.tensor([0, 0, 1]), num_bins=4)
        (tensor([0., 0., 1.]), tensor([ True,  True, False]))
    """
    acc = accumulation_dtype(dist.dtype)
    d = dist.to(acc)
    n = d.shape[0]
    delta = hist_max / num_bins
    width = num_bins + 4  # bins -1 .. num_bins + 2 of one histogram: the ends are dropped
    same = labels.unsqueeze(1) == labels.unsqueeze(0)
    # clamp: a pulse centred past the range is 0 on every bin (gradient 0 there, like relu)
    u = (d / delta).clamp(-1, num_bins + 1)
    with torch.no_grad():
        lower = torch.nan_to_num(torch.floor(u), nan=-1.0)
        # histogram 0: positives, 1: negatives, 2: the row itself (dropped)
        idx = lower.long() + 1 + torch.where(same, 0, width)
        idx.diagonal().add_(2 * width)
    frac = u - lower  # NaN distances stay NaN here and make their row's histogram NaN
    hist = d.new_zeros((n, 3 * width))
    hist = hist.scatter_add(1, idx, 1 - frac).scatter_add(1, idx + 1, frac)
    h_pos = hist[:, 1 : num_bins + 2]
    h_neg = hist[:, width + 1 : width + num_bins + 2]
    cum_pos = torch.cumsum(h_pos, 1)
    cum_all = torch.cumsum(h_pos + h_neg, 1)
    num = h_pos * cum_pos
    counts = (num > 0) & (cum_all > 0)
    fast_ap = torch.where(counts, num / torch.where(counts, cum_all, 1), 0).sum(1)
    num_pos = same.sum(1) - 1
    losses = 1 - fast_ap / num_pos.clamp_min(1)
    if weights is not None:
        losses = losses * weights.to(acc)
    finite = torch.isfinite(hist.detach().sum(1))
    losses = torch.where(finite, losses, torch.nan)
    valid = (num_pos > 0) & counts.any()
    return losses, valid


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
    positive ``(i, j)``, ``R_ij = Σ_{k: y_k ≠ y_i} sig(s_ik - s_ij)`` with
    ``sig(x) = 1 / (1 + exp(clamp(-x / anneal, -50, 50)))``, computed by
    :func:`sigmoid_rank_sums` in bounded chunks (``O(N²)`` memory, not ``N³``). With
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
    num_others = same.sum(1) - 1
    valid = num_others > 0
    positives = same.clone()
    positives.diagonal().copy_(valid)  # the row itself counts only where it has a positive
    rows, cols = positives.nonzero(as_tuple=True)
    ranks = sigmoid_rank_sums(
        s, rows, cols, labels, same=False, temperature=anneal, bound=50.0
    ).squeeze(1)
    match variant:
        case "O":
            f = ranks
        case "Ds":
            f = torch.log(1 + ranks)
        case "Dq":
            f = (1 + ranks).pow(-alpha)
        case "Iu":
            f = (1 + ranks) * torch.log(1 + ranks)
        case _:  # "Ib"
            f = (b * ranks - torch.log(1 + b * ranks)) / b**2
    per_row = s.new_zeros(n).index_add(0, rows, f) / (num_others + 1)
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
        sums = sigmoid_rank_sums(
            s, rows, cols, ids // block_size, same=True, with_all=True, temperature=temperature
        )
        # each sum holds the pivot's own term sig(0) = 0.5: 1 + Σ_{k ≠ l} = sum + 0.5
        ratio = (sums[:, 0] + 0.5) / (sums[:, 1] + 0.5)
        losses = 1 - ratio.view(n, block_size).mean(1)
    if weights is not None:
        losses = losses * weights.to(acc)
    return losses


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
    same.fill_diagonal_(False)
    different = labels.unsqueeze(1) != labels.unsqueeze(0)
    positive = d > 0
    pos_gap = d - (alpha - margin)
    pos_sel = same & (pos_gap > 0) & positive
    neg_gap = alpha - d
    neg_sel = different & (neg_gap > 0) & positive
    # exp of the selected cells only: an overflow elsewhere would poison the gradient
    pos_w = torch.where(pos_sel, torch.exp(Tp * torch.where(pos_sel, pos_gap, 0)), 0)
    neg_w = torch.where(neg_sel, torch.exp(Tn * torch.where(neg_sel, neg_gap, 0)), 0)
    pad = n * 1e-5
    loss_pos = (pos_w * pos_gap).sum(1) / (pos_w.sum(1) + pad)
    loss_neg = (neg_w * neg_gap).sum(1) / (neg_w.sum(1) + pad)
    return (1 - imbalance) * loss_pos + imbalance * loss_neg
