"""Proxy and class-center losses: ProxyAnchor, SoftTriple, P2SGrad, Manifold.

Pure functions on tensors: they take the distance matrix (or the raw weights) the class
computed and return unreduced losses (ProxyAnchor, SoftTriple) or the reduced value (P2SGrad,
Manifold), in at least float32. ProxyNCA is :func:`pml.losses.functional.nca_loss` with the
proxies as the reference set.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torch.nn import functional as F

from pml.core.dtypes import accumulation_dtype
from pml.core.functional import masked_logsumexp

__all__ = [
    "manifold_loss",
    "manifold_ranking",
    "p2sgrad_loss",
    "proxy_anchor_loss",
    "soft_triple_class_similarity",
    "soft_triple_loss",
]


def proxy_anchor_loss(
    mat: Tensor,
    labels: Tensor,
    alpha: float = 32,
    margin: float = 0.1,
    *,
    is_inverted: bool = True,
    weights: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Proxy-anchor loss per proxy (Kim et al., CVPR 2020), positive and negative parts.

    For proxy ``c`` with ``shift_i = weights_i - 1`` (the miner weight enters the exponent):

    * ``pos_c = log(1 + Σ_{i: y_i = c} exp(alpha·margin(S_ic, δ) + shift_i))`` (0 for a class
      absent from the batch); for a similarity ``margin(s, δ) = δ - s``;
    * ``neg_c = log(1 + Σ_{i: y_i ≠ c} exp(alpha·margin(-δ, S_ic) + shift_i))``; for a
      similarity ``alpha·(s + δ)``.

    The positive part reads only the ``N`` target entries (a segment log-sum-exp by label);
    the negative part is one masked log-sum-exp over the columns of ``mat`` (the targets set
    to ``-inf``): ``O(N·C)`` time and memory, no per-class loop. One autograd node with a
    fused backward (the softmax weights of both parts, recomputed from ``mat``).

    Args:
        mat: distances or similarities between embeddings and proxies, shape ``(N, C)``.
        labels: int64 class ids in ``[0, C)``, shape ``(N,)``.
        alpha: the scale ``alpha``.
        margin: the margin ``δ``.
        is_inverted: ``True`` when ``mat`` holds similarities.
        weights: per-sample miner weights ``(N,)`` (None: all ones); not differentiated.

    Returns:
        ``(pos, neg)``, each of shape ``(C,)``, dtype ``accumulation_dtype(mat.dtype)``.

    Example:
        >>> mat = torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.7, 0.3]])
        >>> pos, neg = proxy_anchor_loss(mat, torch.tensor([0, 1, 0]), alpha=4)
        >>> pos, neg
        (tensor([0.1235, 0.0590]), tensor([1.4633, 2.1015]))
    """
    acc = accumulation_dtype(mat.dtype)
    mat = mat.to(acc)
    labels = labels.to(mat.device).long()
    if mat.shape[0] == 0:  # no rows: log(1 + 0) everywhere, on the graph of mat
        zero = mat.sum(dim=0) * 0
        return zero, zero
    shift = None if weights is None else weights.to(device=mat.device, dtype=acc).detach() - 1
    # similarity: neg = alpha·(s + δ), pos = alpha·(δ - s); distance: both negated
    scale = alpha if is_inverted else -alpha
    pos, neg = _ProxyAnchorLSE.apply(mat, labels, shift, scale, scale * margin)
    return pos, neg


def _neg_exponents(mat: Tensor, shift: Tensor | None, scale: float, offset: float) -> Tensor:
    x = torch.mul(mat, scale).add_(offset)
    return x if shift is None else x.add_(shift.unsqueeze(1))


class _ProxyAnchorLSE(torch.autograd.Function):
    """``(pos, neg)`` of :func:`proxy_anchor_loss` with a fused backward.

    With ``x_ic = scale·S_ic + offset + shift_i`` (negatives) and
    ``z_i = -scale·S_iy_i + offset + shift_i`` (positives): ``neg_c = LSE₁ over y_i ≠ c of
    x_ic``, ``pos_c = LSE₁ over y_i = c of z_i``. The gradient of an add-one log-sum-exp is
    the softmax weight of each entry, so ``∂/∂S_ic = scale·(g_neg_c·exp(x_ic - neg_c)
    [y_i ≠ c] - g_pos_c·exp(z_i - pos_c)[y_i = c])``: two passes over ``(N, C)``.
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: torch.autograd.function.FunctionCtx,
        mat: Tensor,
        labels: Tensor,
        shift: Tensor | None,
        scale: float,
        offset: float,
    ) -> tuple[Tensor, Tensor]:
        num_classes = mat.shape[1]
        # the masked add-one log-sum-exp (losses.md §2.8) with the one target per row as -inf:
        # a scatter instead of an (N, C) boolean mask, whose reductions are slow on CPU
        x = _neg_exponents(mat, shift, scale, offset).scatter_(1, labels.unsqueeze(1), -math.inf)
        top = x.amax(dim=0).clamp_min_(0)  # the implicit zero entry included
        neg = torch.log(torch.sub(x, top).exp_().sum(dim=0).add_(torch.exp(-top))).add_(top)
        del x
        z = mat.gather(1, labels.unsqueeze(1)).squeeze(1).mul(-scale).add_(offset)
        if shift is not None:
            z = z.add_(shift)
        top = z.new_zeros(num_classes).scatter_reduce(0, labels, z, "amax", include_self=True)
        total = torch.exp(-top).index_add_(0, labels, torch.exp(z - top[labels]))
        pos = top.add_(total.log_())
        ctx.save_for_backward(mat, labels, shift, z, pos, neg)
        ctx.scale, ctx.offset = scale, offset  # type: ignore[attr-defined]
        return pos, neg

    @staticmethod
    def backward(  # type: ignore[override]
        ctx: torch.autograd.function.FunctionCtx, g_pos: Tensor, g_neg: Tensor
    ) -> tuple[Tensor, None, None, None, None]:
        mat, labels, shift, z, pos, neg = ctx.saved_tensors  # type: ignore[attr-defined]
        scale, offset = ctx.scale, ctx.offset  # type: ignore[attr-defined]
        lab = labels.unsqueeze(1)
        x = _neg_exponents(mat, shift, scale, offset).scatter_(1, lab, float("-inf"))
        grad = x.sub_(neg).exp_().mul_(g_neg.to(mat.dtype) * scale)
        z_weight = torch.exp(z - pos[labels]) * g_pos.to(mat.dtype)[labels] * -scale
        return grad.scatter_add_(1, lab, z_weight.unsqueeze(1)), None, None, None, None


def soft_triple_class_similarity(
    sim: Tensor, num_classes: int, centers_per_class: int, gamma: float
) -> Tensor:
    """SoftTriple's relaxed similarity to each class: a softmax-weighted mean over its centers.

    ``S_ic = Σ_k p_ick·s_ick`` with ``p_ic = softmax_k(gamma·s_ic)`` (``gamma`` is the stored
    reciprocal, 10 by default); column ``c·K + k`` of ``sim`` is center ``k`` of class ``c``.

    Args:
        sim: similarities to every center, shape ``(N, C·K)``.
        num_classes: ``C``.
        centers_per_class: ``K``.
        gamma: the multiplier inside the softmax (the reciprocal of the constructor's gamma).

    Returns:
        Shape ``(N, C)``, dtype ``accumulation_dtype(sim.dtype)``.

    Example:
        >>> sim = torch.tensor([[1.0, 0.0, 0.5, 0.5]])
        >>> soft_triple_class_similarity(sim, 2, 2, gamma=1.0)
        tensor([[0.7311, 0.5000]])
    """
    s = sim.to(accumulation_dtype(sim.dtype)).reshape(-1, num_classes, centers_per_class)
    # centers along dim 1, classes contiguous: a softmax over a short inner dimension (K = 10)
    # is many times slower on CPU than one vectorised across the classes
    return _SoftTripleSimilarity.apply(s.transpose(1, 2).contiguous(), gamma)


class _SoftTripleSimilarity(torch.autograd.Function):
    """``S = Σ_k p_k·s_k`` with ``p = softmax_k(gamma·s)`` for ``s`` of shape ``(N, K, C)``.

    Fused backward: ``∂S/∂s_k = p_k·(1 + gamma·(s_k - S))``.
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: torch.autograd.function.FunctionCtx, s: Tensor, gamma: float
    ) -> Tensor:
        p = torch.softmax(s * gamma, dim=1)
        out = (p * s).sum(dim=1)
        ctx.save_for_backward(s, p, out)
        ctx.gamma = gamma  # type: ignore[attr-defined]
        return out

    @staticmethod
    def backward(  # type: ignore[override]
        ctx: torch.autograd.function.FunctionCtx, grad: Tensor
    ) -> tuple[Tensor, None]:
        s, p, out = ctx.saved_tensors  # type: ignore[attr-defined]
        weight = (s - out.unsqueeze(1)).mul_(ctx.gamma).add_(1).mul_(p)  # type: ignore[attr-defined]
        return weight.mul_(grad.unsqueeze(1)), None


def soft_triple_loss(
    sim: Tensor,
    labels: Tensor,
    num_classes: int,
    centers_per_class: int = 10,
    la: float = 20,
    gamma: float = 10,
    margin: float = 0.01,
    *,
    weights: Tensor | None = None,
) -> Tensor:
    """SoftTriple loss per sample (Qian et al., ICCV 2019), without the center regularizer.

    ``loss_i = cross_entropy(la·(S_i - δ·onehot(y_i)), y_i)·w_i`` with ``S`` from
    :func:`soft_triple_class_similarity`.

    Args:
        sim: similarities to every center, shape ``(N, C·K)``.
        labels: int64 class ids in ``[0, C)``, shape ``(N,)``.
        num_classes: ``C``.
        centers_per_class: ``K``.
        la: the scale ``λ``.
        gamma: the softmax multiplier (the stored reciprocal).
        margin: the margin ``δ`` taken off the target class.
        weights: per-sample miner weights ``(N,)`` (None: all ones).

    Returns:
        Shape ``(N,)``, dtype ``accumulation_dtype(sim.dtype)``.

    Example:
        >>> sim = torch.tensor([[1.0, 0.0, 0.5, 0.5]])
        >>> soft_triple_loss(sim, torch.tensor([0]), 2, 2, la=2.0, gamma=1.0)
        tensor([0.4963])
    """
    s = soft_triple_class_similarity(sim, num_classes, centers_per_class, gamma)
    labels = labels.to(s.device).long().unsqueeze(1)
    logits = la * s.scatter_add(1, labels, torch.full_like(labels, -1, dtype=s.dtype) * margin)
    losses = F.cross_entropy(logits, labels.squeeze(1), reduction="none")
    if weights is not None:
        losses = losses * weights.to(device=losses.device, dtype=losses.dtype)
    return losses


def p2sgrad_loss(embeddings: Tensor, weight: Tensor, labels: Tensor) -> Tensor:
    """P2SGrad loss (Zhang et al., CVPR 2019): mean squared error of cosines to one-hot targets.

    ``cos_ij = clamp((e_i · w_j) / ‖e_i‖₂, -1, 1)`` (the columns of ``weight`` are unit
    vectors), ``loss = mean over all N·C entries of (cos_ij - onehot(y_i)_j)²``.

    Args:
        embeddings: shape ``(N, D)``.
        weight: class vectors as columns, shape ``(D, C)``, of unit L2 norm.
        labels: int64 class ids in ``[0, C)``, shape ``(N,)``.

    Returns:
        0-dim, dtype ``accumulation_dtype`` of the promoted input dtype.

    Example:
        >>> w = torch.eye(2)
        >>> p2sgrad_loss(torch.tensor([[2.0, 0.0], [1.0, 1.0]]), w, torch.tensor([0, 0]))
        tensor(0.1464)
    """
    acc = accumulation_dtype(torch.promote_types(embeddings.dtype, weight.dtype))
    labels = labels.to(embeddings.device).long()
    return _P2SGrad.apply(embeddings.to(acc), weight.to(acc), labels)


class _P2SGrad(torch.autograd.Function):
    """:func:`p2sgrad_loss` with a fused backward.

    With ``m = e·W``, ``raw = m / ‖e‖``, ``d = clamp(raw, -1, 1) - onehot`` and ``g_m =
    (2g / NC)·d·[|raw| ≤ 1] / ‖e‖``: ``∂W = eᵀ·g_m`` and ``∂e = g_m·Wᵀ - e·Σ_j(g_m·raw)_j /
    ‖e‖`` (the second term through the norm).
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: torch.autograd.function.FunctionCtx, e: Tensor, w: Tensor, labels: Tensor
    ) -> Tensor:
        norm = torch.linalg.vector_norm(e, dim=1, keepdim=True)
        raw = (e @ w).div_(norm)
        diff = raw.clamp(-1, 1)
        diff.scatter_add_(1, labels.unsqueeze(1), diff.new_full((len(labels), 1), -1))
        ctx.save_for_backward(e, w, norm, raw, diff)
        return diff.square().mean()

    @staticmethod
    def backward(  # type: ignore[override]
        ctx: torch.autograd.function.FunctionCtx, grad: Tensor
    ) -> tuple[Tensor | None, Tensor | None, None]:
        e, w, norm, raw, diff = ctx.saved_tensors  # type: ignore[attr-defined]
        g_m = diff.mul(grad * (2 / max(diff.numel(), 1))).masked_fill_(raw.abs() > 1, 0)
        g_m = g_m.div_(norm)
        grad_e = grad_w = None
        if ctx.needs_input_grad[0]:  # type: ignore[attr-defined]
            through_norm = (g_m * raw).sum(dim=1, keepdim=True).div_(norm)
            grad_e = torch.addcmul(g_m @ w.t(), e, through_norm, value=-1)
        if ctx.needs_input_grad[1]:  # type: ignore[attr-defined]
            grad_w = e.t() @ g_m
        return grad_e, grad_w, None


def manifold_ranking(sim: Tensor, alpha: float = 0.8) -> Tensor:
    """The manifold-ranking matrix ``F = (1 - alpha)·(I - alpha·S̄)^{-1}`` of a similarity graph.

    ``S = exp(max(sim, 0) / 0.5)`` with a zero diagonal, ``S̄ = D^{-1/2} S D^{-1/2}`` (``D`` the
    row sums). compat: the inverse is computed in float32, like the reference, whatever the
    input dtype (float64 inputs get float32-accurate values here); everything around it in at
    least float32, so float16 inputs do not overflow in ``exp`` or the row sums.

    Args:
        sim: similarities of the graph's nodes, shape ``(M, M)``.
        alpha: the random-walk parameter ``alpha``.

    Returns:
        Shape ``(M, M)``, dtype ``accumulation_dtype(sim.dtype)``.

    Example:
        >>> manifold_ranking(torch.tensor([[1.0, 0.5], [0.5, 1.0]]), alpha=0.5)
        tensor([[0.6667, 0.3333],
                [0.3333, 0.6667]])
    """
    acc = accumulation_dtype(sim.dtype)
    m = sim.shape[0]
    eye = torch.eye(m, dtype=torch.bool, device=sim.device)
    s = torch.exp(sim.to(acc).clamp_min(0) / 0.5).masked_fill(eye, 0)
    d = s.sum(dim=1).rsqrt()
    s_bar = d.unsqueeze(1) * s * d.unsqueeze(0)
    system = torch.eye(m, dtype=acc, device=sim.device) - alpha * s_bar
    return (1 - alpha) * torch.linalg.inv(system.float()).to(acc)


def _manifold_term(x: Tensor, meta_classes: Tensor, margin: float) -> Tensor:
    """``mean_i log(1 + Σ exp(t_ik))`` over ``k ≠ c_i``, ``t_ik = x_ik - x_ic_i + margin ≥ 0``.

    An entry with ``t < 0`` is dropped (``t = 0`` is kept); NaN is kept, so it propagates.
    """
    c = meta_classes.unsqueeze(1)
    t = x - x.gather(1, c) + margin
    keep = ~(t < 0)
    keep.scatter_(1, c, False)
    return masked_logsumexp(t, keep, dim=1, add_one=True).mean()


def manifold_loss(
    sim: Tensor,
    meta_classes: Tensor,
    alpha: float = 0.8,
    margin: float = 5e-4,
    lambda_c: float = 1.0,
) -> Tensor:
    """Manifold proxy loss (Aziere & Todorovic, CVPR 2019), 0-dim.

    The graph's nodes are the ``N`` embeddings followed by the ``K`` proxies; ``F`` is
    :func:`manifold_ranking` of ``sim``. With ``t_ik = X_ik - X_ic_i + margin`` and
    ``term(X) = mean_i log(1 + Σ_{k ≠ c_i, t_ik ≥ 0} exp(t_ik))``:

    * intrinsic: ``X = F[:N, N:]``;
    * context: ``X_ik = cos(F[i, :], F[N + k, :])`` (norms clamped at 1e-8, computed as one
      product of row-normalised matrices);
    * ``loss = term(intrinsic) + lambda_c·term(context)``.

    fix: with ``lambda_c = inf`` the loss is the context term alone (the reference documented
    that, but returned ``inf``).

    Args:
        sim: similarities of ``cat(embeddings, proxies)``, shape ``(N + K, N + K)``.
        meta_classes: int64 proxy index of each embedding, shape ``(N,)``, in ``[0, K)``.
        alpha: the random-walk parameter.
        margin: the margin added to each ``t``.
        lambda_c: weight of the context term (``inf``: the context term only).

    Returns:
        0-dim, dtype ``accumulation_dtype(sim.dtype)``.

    Example:
        >>> x = torch.tensor([[1.0, 0.0], [0.8, 0.6], [0.0, 1.0], [1.0, 0.1], [0.1, 1.0]])
        >>> manifold_loss(x @ x.T, torch.tensor([1, 1, 0]), margin=0.1)
        tensor(1.5713)
    """
    n = meta_classes.shape[0]
    f = manifold_ranking(sim, alpha)
    c = meta_classes.to(f.device).long()
    f_e, f_p = f[:n], f[n:]
    unit_e = f_e / torch.linalg.vector_norm(f_e, dim=1, keepdim=True).clamp_min(1e-8)
    unit_p = f_p / torch.linalg.vector_norm(f_p, dim=1, keepdim=True).clamp_min(1e-8)
    context = _manifold_term(unit_e @ unit_p.T, c, margin)
    if math.isinf(lambda_c):  # fix: context only (the reference returned inf)
        return context
    return _manifold_term(f_e[:, n:], c, margin) + lambda_c * context
