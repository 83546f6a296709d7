"""anchor_batched_backward: exact gradients of a loss by chunks of anchors (issue 15 item 3).

A loss declares how it decomposes (``BaseMetricLossFunction.anchor_batching``): ``"reference"``
(a sum over anchors of terms that read the anchor's row against the whole reference set) or
``"samples"`` (terms that read one sample and the loss's own parameters). Its reducer must
finish from sums (``sums_plan``: a sum, a mean, a threshold mean or a divisor), so the loss is
``sum_k total_k / denominator_k`` over its sub-losses ``k``, and ``total_k`` and the
denominator are sums over anchors.

One pass over the chunks: each chunk's ``total_k`` is differentiated separately (one backward
per sub-loss with a gradient, the graph kept between them) into a per-sub-loss gradient of the
inputs; the denominators (e.g. the number of non-zero losses for AvgNonZeroReducer) are known
after the last chunk, and the gradient is ``sum_k gradient_k / denominator_k``. Peak memory is
that of one chunk (``batch_size x M``) plus those ``(N + M) x D`` gradient buffers.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor

from pml.core.dtypes import accumulation_dtype
from pml.core.validation import check_embeddings, check_int, check_shapes
from pml.losses._base import BaseMetricLossFunction, check_floating_tensor, checked_indices_tuple
from pml.losses._pairs import all_finite
from pml.reducers import BaseReducer, DivisorReducer
from pml.reducers.functional import threshold_mask

_MODES = ("reference", "samples")


class _CollectingReducer(BaseReducer):
    """Stands in for a loss's reducer: same plans, returns the loss dict unreduced."""

    def __init__(self, plans: dict[str, tuple[Any, bool]]) -> None:
        super().__init__()
        self.plans = plans

    def sums_plan(self, name: str = "loss") -> Any | None:
        return self.plans[name][0] if name in self.plans else None

    def forward(self, loss_dict: Any, embeddings: Tensor, labels: Tensor | None) -> Any:  # type: ignore[override]
        return loss_dict


def _reducer_plans(loss_func: BaseMetricLossFunction) -> dict[str, tuple[Any, bool]]:
    """Every sub-loss's reducer's sums plan, and whether it divides by the loss's divisor.

    Raises:
        ValueError: a reducer without a plan (it does not sum or average its losses).
    """
    reducer = loss_func.reducer
    name = type(loss_func).__name__
    reducer_for = getattr(reducer, "reducer_for", None)  # MultipleReducers: one per sub-loss
    plans = {}
    for sub in loss_func.sub_loss_names():
        r = reducer_for(sub) if reducer_for is not None else reducer
        plan = r.sums_plan(sub) if isinstance(r, BaseReducer) else None
        if plan is None:
            raise ValueError(
                f"anchor_batched_backward needs reducers that sum or average over anchors "
                f"(MeanReducer, SumReducer, AvgNonZeroReducer, ThresholdReducer, "
                f"DivisorReducer); {name}'s sub-loss {sub!r} has {type(r).__name__}"
            )
        plans[sub] = (plan, type(r) is DivisorReducer)
    return plans


def _entry_sums(
    name: str, sub: str, entry: dict, plan_and_divisor: tuple[Any, bool]
) -> tuple[Tensor, Tensor | None] | None:
    """``(total, denominator)`` of one entry; None for the zero loss, no denominator for a sum."""
    plan, by_divisor = plan_and_divisor
    losses = entry["losses"]
    kind = entry["reduction_type"]
    if not isinstance(losses, Tensor):
        return None  # the "no loss" sentinel
    if kind == "already_reduced":
        raise ValueError(
            f"{name} cannot be split by anchors here: its sub-loss {sub!r} is already reduced "
            "over the whole batch (e.g. a regularizer)"
        )
    if kind == "sums":
        total, count, num = losses, entry["count"], entry["num"]
    else:
        acc = accumulation_dtype(losses.dtype)
        kept = threshold_mask(losses, plan.low, plan.high) if plan.kind == "threshold" else None
        if kept is None:
            total = losses.sum(dtype=acc)
        else:
            total = torch.where(kept, losses, 0).sum(dtype=acc)
            # a NaN loss is never silently dropped by the filter
            total = torch.where(losses.isnan().any(), torch.nan, total)
        num = torch.tensor(losses.numel(), device=losses.device)
        count = num if kept is None else kept.sum()
    if by_divisor:
        if "divisor" not in entry:
            raise ValueError(f"DivisorReducer needs a 'divisor' entry; {name}'s {sub!r} has none")
        return total, entry["divisor"]
    if plan.kind == "sum":
        return total, None
    return total, count if plan.kind == "threshold" else num


def _chunks(n: int, batch_size: int) -> Iterator[tuple[int, int]]:
    for start in range(0, n, batch_size):
        yield start, min(n, start + batch_size)


def _all_pairs_but_self(labels: Tensor, start: int, stop: int) -> tuple[Tensor, ...]:
    """Rows ``start:stop`` against the whole batch: every pair but ``(i, start + i)``."""
    same = labels[start:stop, None] == labels[None, :]
    rows = torch.arange(stop - start, device=labels.device)
    pos = same.clone()
    pos[rows, rows + start] = False
    return (*torch.nonzero(pos, as_tuple=True), *torch.nonzero(~same, as_tuple=True))


def anchor_batched_backward(
    loss_func: BaseMetricLossFunction,
    embeddings: Tensor,
    labels: Tensor,
    batch_size: int,
    *,
    ref_emb: Tensor | None = None,
    ref_labels: Tensor | None = None,
) -> Tensor:
    """Backpropagate ``loss_func(embeddings, labels[, ref_emb, ref_labels])`` by anchor chunks.

    Runs the loss on ``batch_size`` anchors at a time against the whole reference set (the
    batch itself without ``ref_emb``, each anchor's own slot left out as in the unchunked
    loss) and accumulates the exact gradient of the whole loss: into ``embeddings.grad``
    (and ``ref_emb.grad``) for leaves, through their graph otherwise (one backward through
    the model at the end), and into the loss's own parameters. Equivalent to
    ``loss_func(...).backward()`` with peak memory ``~ batch_size x M`` instead of ``N x M``.

    The loss must declare that it decomposes (``type(loss_func).anchor_batching``:
    ``"reference"`` for pair/triplet/row losses, ``"samples"`` for class-vector losses), and
    each sub-loss's reducer must finish from sums (Mean, Sum, AvgNonZero, Threshold, Divisor).
    Each chunk runs forward once, and backward once per sub-loss (most losses have one).

    Args:
        loss_func: the loss (e.g. ``MultiSimilarityLoss()``).
        embeddings: ``(N, D)`` float, the anchors (and the reference set without ``ref_emb``).
        labels: ``(N,)``.
        batch_size: anchors per chunk, ``>= 1``.
        ref_emb: ``(M, D)`` reference set (``"reference"`` losses only).
        ref_labels: ``(M,)``, required with ``ref_emb``.

    Returns:
        The loss value, detached, in the embeddings' dtype.

    Raises:
        ValueError: the loss does not decompose over anchors (the message says why), a
            reducer that does not sum or average, an already-reduced sub-loss, or bad
            ``batch_size``/shapes. TypeError: wrong argument types.

    Example:
        >>> from pml.losses import MultiSimilarityLoss
        >>> emb = torch.randn(8, 4, requires_grad=True)
        >>> labels = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
        >>> loss = anchor_batched_backward(MultiSimilarityLoss(), emb, labels, batch_size=3)
        >>> emb.grad.shape
        torch.Size([8, 4])
    """
    name = type(loss_func).__name__
    if not isinstance(loss_func, BaseMetricLossFunction):
        raise TypeError(f"loss_func must be a pml loss (BaseMetricLossFunction); got {name}")
    mode = type(loss_func).anchor_batching
    if mode not in _MODES:
        raise ValueError(
            f"{name} does not decompose over anchors: {type(loss_func).anchor_batching_obstacle}"
            "; call loss_func(...).backward() on the whole batch"
        )
    per_anchor = getattr(loss_func, "triplets_per_anchor", "all")
    if per_anchor != "all":
        raise ValueError(
            f"{name} with triplets_per_anchor={per_anchor!r} draws random triplets per call, "
            "which chunks cannot reproduce; use triplets_per_anchor='all'"
        )
    batch_size = check_int("batch_size", batch_size, min=1)
    check_floating_tensor(embeddings, "embeddings")
    check_embeddings(embeddings, "embeddings")
    if not isinstance(labels, Tensor):
        raise TypeError(f"labels must be a torch.Tensor; got {type(labels).__name__}")
    check_shapes(embeddings, labels)
    labels = labels.to(embeddings.device)
    if ref_emb is embeddings:
        ref_emb = None
    if ref_emb is not None:
        if mode == "samples":
            raise ValueError(f"ref_emb must be None: {name} has no reference set")
        check_floating_tensor(ref_emb, "ref_emb")
        check_embeddings(ref_emb, "ref_emb")
        if ref_labels is None:
            raise ValueError("ref_labels must be given with ref_emb")
        check_shapes(ref_emb, ref_labels, names=("ref_emb", "ref_labels"))
        ref_labels = ref_labels.to(ref_emb.device)
    plans = _reducer_plans(loss_func)

    emb = embeddings.detach().requires_grad_(embeddings.requires_grad)
    ref = None if ref_emb is None else ref_emb.detach().requires_grad_(ref_emb.requires_grad)
    n, m = len(emb), len(emb) if ref is None else len(ref)
    # tiny sets: a chunk could fall under the at-most-one-pair rule of the whole set
    size = max(n, 1) if mode == "reference" and m <= 3 else batch_size

    def chunk_dict(start: int, stop: int) -> dict:
        if mode == "samples":
            return loss_func(emb[start:stop], labels[start:stop])
        if ref is not None:
            return loss_func(emb[start:stop], labels[start:stop], None, ref, ref_labels)
        pairs = checked_indices_tuple(_all_pairs_but_self(labels, start, stop))
        return loss_func(emb[start:stop], labels[start:stop], pairs, emb, labels)

    # what gets gradients: the (detached) embeddings and the loss's own parameters
    inputs = [t for t in (emb, ref) if t is not None and t.requires_grad]
    inputs += [p for p in loss_func.parameters() if p.requires_grad]
    totals: dict[str, list[Tensor]] = {k: [] for k in plans}
    denoms: dict[str, list[Tensor]] = {k: [] for k in plans}
    grads: dict[str, list[Tensor | None]] = {k: [None] * len(inputs) for k in plans}
    inner = loss_func.reducer
    loss_func.reducer = _CollectingReducer(plans)
    try:
        for start, stop in _chunks(n, size):
            terms = {}
            for sub, entry in chunk_dict(start, stop).items():
                sums = _entry_sums(name, sub, entry, plans[sub])
                if sums is None:
                    continue
                totals[sub].append(sums[0].detach())
                if sums[1] is not None:
                    denoms[sub].append(torch.as_tensor(sums[1], device=emb.device))
                if inputs and sums[0].requires_grad:
                    terms[sub] = sums[0]
            for i, (sub, total) in enumerate(terms.items()):
                # one gradient per sub-loss: its denominator is known after the last chunk
                chunk_grads = torch.autograd.grad(
                    total, inputs, retain_graph=i < len(terms) - 1, allow_unused=True
                )
                grads[sub] = [_add(g, c) for g, c in zip(grads[sub], chunk_grads)]
    finally:
        loss_func.reducer = inner

    one = torch.ones((), device=emb.device)
    # a plain sum has no denominator (1)
    denom = {k: torch.stack(denoms[k]).sum() if denoms[k] else one for k in plans if totals[k]}
    acc = accumulation_dtype(emb.dtype)
    value = torch.zeros((), dtype=acc, device=emb.device)
    final: list[Tensor | None] = [None] * len(inputs)
    for sub, d in denom.items():
        total = torch.stack(totals[sub]).sum().to(acc)
        d = d.to(acc)
        safe = torch.where(d == 0, torch.ones_like(d), d)
        value = value + torch.where((d != 0) | total.isnan(), total / safe, 0)
        scale = torch.where(d == 0, torch.zeros_like(d), 1 / safe)
        final = [_add(f, None if g is None else g * scale) for f, g in zip(final, grads[sub])]
    value = torch.where(all_finite(emb, *(() if ref is None else (ref,))), value, torch.nan)
    sources = {id(emb): embeddings, id(ref): ref_emb}
    for x, g in zip(inputs, final):
        if g is None:
            continue
        if id(x) in sources:
            torch.autograd.backward(sources[id(x)], g.to(x.dtype))  # leaf .grad or the model
        else:
            x.grad = g.to(x.dtype) if x.grad is None else x.grad + g.to(x.dtype)
    return value.to(embeddings.dtype).detach()


def _add(a: Tensor | None, b: Tensor | None) -> Tensor | None:
    """``a + b`` in at least float32 (None is 0)."""
    if b is None:
        return a
    b = b.to(accumulation_dtype(b.dtype))
    return b if a is None else a + b


__all__ = ["anchor_batched_backward"]
