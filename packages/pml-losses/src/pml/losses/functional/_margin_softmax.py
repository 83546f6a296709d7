"""Margin-softmax classification losses: class logits, target-logit margins, cross entropy.

The losses of the ``LargeMarginSoftmaxLoss`` family (L-Softmax, SphereFace, ArcFace, CosFace,
sub-center ArcFace) and ``NormalizedSoftmaxLoss`` are a softmax cross entropy over class
logits in which the logit of the true class (the *target* logit) is replaced by a harder
one. The pieces:

* :func:`class_logits`: ``scale · row_i · col_j · cos(e_i, w_j)`` against the columns of a
  ``(D, C)`` weight matrix, with one ``(N, D) @ (D, C)`` product and one ``(N, C)``
  multiplication (the weight columns are never copied normalised); optionally the maximum over
  ``K`` sub-centers per class;
* :func:`large_margin_target_logits`, :func:`arcface_target_logits`,
  :func:`cosface_target_logits`: the margin applied to the target cosines, shape ``(N,)``;
* :func:`margin_cross_entropy`: the cross entropy with the target logits replaced (one
  scatter, no one-hot matrix), times per-sample weights, in at least float32.

Everything takes and returns tensors in at least float32 (float64 stays float64).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor
from torch.nn import functional as F

from pml.core.dtypes import accumulation_dtype

__all__ = [
    "arcface_target_logits",
    "class_logits",
    "cosface_target_logits",
    "large_margin_target_logits",
    "margin_cross_entropy",
    "sub_center_max",
    "sub_center_outliers",
]

_EPS = 1e-12  # the norm floor of torch.nn.functional.normalize
#: weight matrices from this size on take the one-pass W gradient (below: plain autograd,
#: whose per-call overhead is smaller); same values either way
_ONE_PASS_MIN = 1 << 16
#: logit matrices from this size on take the fused target cross entropy (same values)
_FUSED_CE_MIN = 1 << 16


def class_logits(
    embeddings: Tensor,
    weight: Tensor,
    *,
    scale: float = 1.0,
    row_scale: Tensor | None = None,
    col_scale: Tensor | None = None,
    p: float = 2,
    normalize_embeddings: bool = True,
    sub_centers: int = 1,
) -> Tensor:
    """``scale · row_scale_i · col_scale_j · cos(e_i, w_j)`` for the columns ``w_j`` of ``weight``.

    ``cos(e_i, w_j) = (e_i / max(‖e_i‖_p, 1e-12)) · (w_j / max(‖w_j‖_p, 1e-12))``, the
    cosine similarity of ``CosineSimilarity(p=p)`` (with ``normalize_embeddings=False`` the
    embeddings are taken as they are: ``DotProductSimilarity(normalize_embeddings=False)``
    against normalised columns). The factors are folded into the two sides of one matrix
    product: the row factors into the ``(N, D)`` embeddings, the column factors into a
    ``(C,)`` vector applied to the smaller side (see Routes).

    With ``sub_centers = K > 1`` the columns ``c·K + k`` (``k < K``) belong to class ``c`` and
    the result is the maximum over each class's ``K`` columns, shape ``(N, C/K)`` (the factors
    must be positive for this to equal the factor times the maximal cosine).

    Routes (same values up to rounding): with more rows ``N`` than ``D`` the column factors
    scale a ``(D, C)`` copy of ``weight`` before the product; otherwise they scale the
    ``(N, C)`` product, and for ``p = 2`` and a ``weight`` of at least 65,536 entries that
    requires grad a custom backward computes the gradient of ``weight`` (through its column
    norms) in one pass over it (no normalised copy of ``weight``: the face-recognition case,
    a batch against 100,000 classes).

    Args:
        embeddings: ``(N, D)``, floating point.
        weight: ``(D, C)`` (columns are classes or sub-centers).
        scale: a multiplier of every entry.
        row_scale: ``(N,)`` per-row multipliers, or None.
        col_scale: ``(C,)`` per-column multipliers, or None.
        p: the norm order of the normalisation.
        normalize_embeddings: normalise the embeddings (the columns are always normalised).
        sub_centers: ``K``, the number of columns per class.

    Returns:
        ``(N, C / K)`` in the promoted dtype of the inputs, at least float32.

    Example:
        >>> w = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
        >>> class_logits(torch.tensor([[3.0, 4.0]]), w, scale=10.0)
        tensor([[6., 8.]])
    """
    acc = accumulation_dtype(torch.promote_types(embeddings.dtype, weight.dtype))
    x, w = embeddings.to(acc), weight.to(acc)
    if normalize_embeddings:  # F.normalize's formula without its Python overhead
        x = x / torch.linalg.vector_norm(x, ord=p, dim=1, keepdim=True).clamp_min(_EPS)
    if row_scale is not None:
        x = x * row_scale.to(acc).unsqueeze(1)
    one_pass = p == 2 and w.requires_grad and w.numel() >= _ONE_PASS_MIN
    if x.shape[0] <= w.shape[0] and one_pass:
        logits = _ColumnCosine.apply(x, w, float(scale))
        if col_scale is not None:
            logits = logits * col_scale.to(acc)
    else:
        col = torch.linalg.vector_norm(w, ord=p, dim=0).clamp_min(_EPS).reciprocal() * scale
        if col_scale is not None:
            col = col * col_scale.to(acc)
        # more rows than D: scale the (D, C) side, else the (N, C) product
        logits = x @ (w * col) if x.shape[0] > w.shape[0] else (x @ w) * col
    return sub_center_max(logits, sub_centers) if sub_centers > 1 else logits


class _ColumnCosine(torch.autograd.Function):
    """``(x @ w) · scale / max(‖w_j‖₂, eps)`` with a one-pass gradient for ``w``.

    Autograd through ``vector_norm`` walks the ``(D, C)`` weight several times in the
    backward; here ``grad_w = xᵀ(G·v) - w·(inv_j² Σ_i G_ij out_ij)`` (``v = scale·inv``) is one
    product and one fused ``addcmul`` (0 for clamped columns). The output is saved for the
    backward instead of the raw product (same size).
    """

    @staticmethod
    def forward(ctx: Any, x: Tensor, w: Tensor, scale: float) -> Tensor:
        norms = torch.linalg.vector_norm(w, dim=0)
        inv = norms.clamp_min(_EPS).reciprocal()
        out = (x @ w).mul_(inv * scale)
        ctx.save_for_backward(x, w, inv, norms, out)
        ctx.scale = scale
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, Tensor | None, None]:
        x, w, inv, norms, out = ctx.saved_tensors
        grad_w = None
        if ctx.needs_input_grad[1]:  # before grad_scaled: one (N, C) temporary at a time
            coef = (grad * out).sum(dim=0) * inv * inv
            coef = torch.where(norms > _EPS, coef, 0)  # a clamped norm is a constant
        grad_scaled = grad * (inv * ctx.scale)
        grad_x = grad_scaled @ w.t() if ctx.needs_input_grad[0] else None
        if ctx.needs_input_grad[1]:
            grad_w = (x.t() @ grad_scaled).addcmul_(w, coef, value=-1)
        return grad_x, grad_w, None


def sub_center_max(mat: Tensor, sub_centers: int) -> Tensor:
    """The maximum over each class's ``K`` consecutive columns: ``(N, C·K) -> (N, C)``.

    Column ``c·K + k`` is sub-center ``k`` of class ``c``. The gradient goes to one maximal
    entry per class (``torch.max``).

    Example:
        >>> sub_center_max(torch.tensor([[0.1, 0.7, 0.3, 0.2]]), 2)
        tensor([[0.7000, 0.3000]])
    """
    n, cols = mat.shape
    if cols % sub_centers:
        raise ValueError(
            f"mat must have a multiple of sub_centers = {sub_centers} columns; got {cols}"
        )
    return mat.view(n, cols // sub_centers, sub_centers).max(dim=2).values


def _sin_of_acos(cos: Tensor) -> Tensor:
    """``sin(acos(cos)) = sqrt(1 - cos²)`` for ``cos`` in ``[-1, 1]``, with a finite gradient.

    At ``|cos| = 1`` the exact derivative is infinite; the floor ``finfo.tiny`` under the
    square root changes the value by at most ``sqrt(tiny)`` (1e-19 in float32) and gives a
    zero gradient there instead of NaN.
    """
    return torch.sqrt((1 - cos * cos).clamp_min(torch.finfo(cos.dtype).tiny))


def arcface_target_logits(cos: Tensor, margin: float | Tensor) -> Tensor:
    """ArcFace's additive angular margin (Deng et al., CVPR 2019) on target cosines.

    With ``θ = acos(clamp(cos, -1, 1))``: ``cos(θ + m)`` where ``θ ≤ π - m``, else
    ``cos(θ) - m·sin(m)`` (keeps the logit decreasing in ``θ`` past ``π - m``).
    ``cos(θ + m)`` is computed as ``cos·cos(m) - sin(θ)·sin(m)``, which has a finite
    gradient at ``θ = 0``.

    fix: an embedding exactly on its class vector (``cos = 1``) gave NaN gradients in the
    reference (the derivative of ``acos`` at 1); here its gradient is finite.

    Args:
        cos: target cosines, any shape, floating point.
        margin: ``m`` in radians: a number, or a tensor broadcastable to ``cos`` (one margin
            per sample, e.g. :class:`~pml.losses.DynamicArcFaceLoss`'s class margins).

    Returns:
        The margin-penalised cosines, same shape and dtype.

    Example:
        >>> arcface_target_logits(torch.tensor([1.0, 0.0, -1.0]), math.pi / 6)
        tensor([ 0.8660, -0.5000, -1.2618])
        >>> arcface_target_logits(torch.tensor([1.0, -1.0]), torch.tensor([0.0, math.pi / 6]))
        tensor([ 1.0000, -1.2618])
    """
    c = cos.clamp(-1, 1)
    if isinstance(margin, Tensor):
        return _arcface_target_logits_per_sample(c, margin.to(c.dtype))
    plus = c * math.cos(margin) - _sin_of_acos(c) * math.sin(margin)
    if margin <= 0:  # θ ≤ π ≤ π - m: always the first branch
        return plus
    linear = c - margin * math.sin(margin)
    if margin > math.pi:  # π - m < 0 ≤ θ: never
        return linear
    # θ ≤ π - m  ⇔  cos ≥ cos(π - m) = -cos(m), as acos decreases on [-1, 1]
    return torch.where(c >= -math.cos(margin), plus, linear)


def _arcface_target_logits_per_sample(c: Tensor, m: Tensor) -> Tensor:
    """:func:`arcface_target_logits` with a tensor of margins: the same branches per entry."""
    plus = c * torch.cos(m) - _sin_of_acos(c) * torch.sin(m)
    linear = c - m * torch.sin(m)
    # m <= 0: always cos(θ + m); m > π: always the linear branch; else θ <= π - m
    first = (m <= 0) | ((m <= math.pi) & (c >= -torch.cos(m)))
    return torch.where(first, plus, linear)


def cosface_target_logits(cos: Tensor, margin: float) -> Tensor:
    """CosFace's additive cosine margin (Wang et al., CVPR 2018): ``cos - margin``.

    Example:
        >>> cosface_target_logits(torch.tensor([0.5]), 0.35)
        tensor([0.1500])
    """
    return cos - margin


def large_margin_target_logits(cos: Tensor, margin: int) -> Tensor:
    """L-Softmax's multiplicative angular margin (Liu et al., ICML 2016) on target cosines.

    ``ψ(θ) = (-1)^k · cos(mθ) - 2k`` with ``θ = acos(clamp(cos, -1, 1))`` and
    ``k = floor(θ·m / π)`` (no gradient through ``k``), monotonically decreasing in ``θ``.
    ``cos(mθ)`` is the multiple-angle polynomial
    ``Σ_{n ≤ m/2} (-1)^n · C(m, 2n) · cos^{m-2n} · (1 - cos²)^n`` of the *unclamped* cosine
    (computed as the Chebyshev polynomial ``T_m(cos)``, the same polynomial).

    Args:
        cos: target cosines, any shape, floating point (compute in at least float32: the
            powers overflow float16 for large margins).
        margin: ``m``, an integer ``>= 1`` (1: no margin).

    Returns:
        ``ψ``, same shape and dtype as ``cos``.

    Example:
        >>> large_margin_target_logits(torch.tensor([1.0, 0.5, 0.0]), 2)
        tensor([ 1.0000, -0.5000, -1.0000])
    """
    with torch.no_grad():
        k = torch.floor(torch.acos(cos.clamp(-1, 1)) / (math.pi / margin))
        sign = 1 - 2 * torch.remainder(k, 2)
    # the multiple-angle polynomial is the Chebyshev polynomial T_m: T_{n+1} = 2c·T_n - T_{n-1}
    before, cos_m, twice = torch.ones_like(cos), cos, 2 * cos
    for _ in range(margin - 1):
        before, cos_m = cos_m, twice * cos_m - before
    return sign * cos_m - 2 * k


def margin_cross_entropy(
    logits: Tensor,
    labels: Tensor,
    target_logits: Tensor | None = None,
    weights: Tensor | None = None,
) -> Tensor:
    """Per-sample cross entropy with the target logits replaced, times per-sample weights.

    ``loss_i = w_i · (log Σ_j exp(z_ij) - z_{i,y_i})`` where ``z`` is ``logits`` with
    ``z_{i,y_i} = target_logits_i``. The replacement is one scatter into a copy of
    ``logits`` (no ``(N, C)`` one-hot). Computed in at least float32. From 65,536 logits on
    the replacement, softmax and their gradients run as one custom autograd function (two
    passes over the matrix each way instead of about six; same values).

    Args:
        logits: ``(N, C)`` class logits without the margin.
        labels: ``(N,)`` int64 class indices in ``[0, C)``.
        target_logits: ``(N,)`` the logits of the true classes, or None to keep them.
        weights: ``(N,)`` per-sample weights (a miner's, see
            ``pml.core.indices.convert_to_weights``), or None for ones.

    Returns:
        ``(N,)`` unreduced losses in the accumulation dtype of ``logits``.

    Example:
        >>> logits = torch.tensor([[2.0, 0.0], [0.0, 2.0]])
        >>> margin_cross_entropy(logits, torch.tensor([0, 1]), torch.tensor([0.0, 2.0]))
        tensor([0.6931, 0.1269])
    """
    acc = accumulation_dtype(logits.dtype)
    z = logits.to(acc)
    if target_logits is None:
        losses = F.cross_entropy(z, labels, reduction="none")
    elif z.numel() >= _FUSED_CE_MIN:
        losses = _TargetCrossEntropy.apply(z, labels, target_logits.to(acc))
    else:
        z = z.scatter(1, labels.unsqueeze(1), target_logits.to(acc).unsqueeze(1))
        losses = F.cross_entropy(z, labels, reduction="none")
    return losses if weights is None else losses * weights.to(acc)


class _TargetCrossEntropy(torch.autograd.Function):
    """Cross entropy of ``z`` with the target entries replaced by ``t``, in two passes.

    Forward: the replaced copy, its row maxima, ``exp`` in place, row sums. Backward: the
    softmax times the incoming gradient, the target column moved to ``t``'s gradient. Saves
    one ``(N, C)`` tensor; replaces scatter + log_softmax + nll_loss and their backwards (a
    batch against many classes).
    """

    @staticmethod
    def forward(ctx: Any, z: Tensor, labels: Tensor, t: Tensor) -> Tensor:
        idx = labels.unsqueeze(1)
        e = z.scatter(1, idx, t.unsqueeze(1))
        top = e.amax(dim=1, keepdim=True)
        e.sub_(top).exp_()
        sums = e.sum(dim=1)
        ctx.save_for_backward(e, sums, idx)
        return top.squeeze(1) + torch.log(sums) - t

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None, Tensor]:
        e, sums, idx = ctx.saved_tensors
        grad_z = e * (grad / sums).unsqueeze(1)  # softmax · grad
        grad_t = grad_z.gather(1, idx).squeeze(1) - grad
        return grad_z.scatter_(1, idx, 0.0), None, grad_t


def sub_center_outliers(
    own_cos: Tensor, labels: Tensor, num_classes: int, threshold: float
) -> tuple[Tensor, Tensor]:
    """Dominant sub-center per class and the samples far from it (sub-center ArcFace).

    Every sample votes for the sub-center of its class nearest to it; a class's dominant
    sub-center is the one with the most votes (the lowest index on a tie). A sample whose
    cosine to its class's dominant sub-center is below ``threshold`` is an outlier. No loop
    over classes: one ``bincount`` of the votes.

    Args:
        own_cos: ``(N, K)`` cosine of every sample to the ``K`` sub-centers of its class.
        labels: ``(N,)`` int64 class indices in ``[0, num_classes)``.
        num_classes: ``C``.
        threshold: the cosine below which a sample is an outlier.

    Returns:
        ``(outliers, dominant)``: the outliers' indices (int64, ordered by class, then by
        index) and the dominant sub-center of every class (int64 ``(C,)``, ``-1`` for a
        class without samples).

    Example:
        >>> own = torch.tensor([[0.9, 0.1], [0.8, 0.2], [0.1, 0.3]])
        >>> sub_center_outliers(own, torch.tensor([0, 0, 0]), 2, 0.5)
        (tensor([2]), tensor([ 0, -1]))
    """
    k = own_cos.shape[1]
    votes = labels * k + own_cos.argmax(dim=1)
    counts = torch.bincount(votes, minlength=num_classes * k).view(num_classes, k)
    dominant = torch.where(counts.sum(dim=1) > 0, counts.argmax(dim=1), -1)
    to_dominant = own_cos.gather(1, dominant[labels].unsqueeze(1)).squeeze(1)
    idx = torch.nonzero(to_dominant < threshold).squeeze(1)
    order = torch.argsort(labels[idx], stable=True)
    return idx[order], dominant
