"""SelfSupervisedLoss with more than two views: every view paired with every other."""

from __future__ import annotations

import pytest
import torch

from pml.core.testing import assert_close
from pml.losses import ContrastiveLoss, NTXentLoss, SelfSupervisedLoss, TripletMarginLoss
from pml.reducers import MeanReducer


def _views(num_views: int = 3, n: int = 5, d: int = 4, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(n, d, generator=g, dtype=torch.float64)
    return [
        base + 0.3 * torch.randn(n, d, generator=g, dtype=torch.float64) for _ in range(num_views)
    ]


def _contrastive() -> ContrastiveLoss:
    return ContrastiveLoss(pos_margin=0.0, neg_margin=1.0, reducer=MeanReducer())


def naive_contrastive(queries, q_labels, refs, r_labels, skip_self: bool) -> torch.Tensor:  # type: ignore[no-untyped-def]
    """Mean positive distance + mean relu(1 - negative distance), cosine-normalised rows."""
    q = torch.nn.functional.normalize(queries, dim=1)
    r = torch.nn.functional.normalize(refs, dim=1)
    pos, neg = [], []
    for i in range(len(q)):
        for j in range(len(r)):
            if skip_self and i == j:
                continue
            dist = torch.linalg.vector_norm(q[i] - r[j])
            if int(q_labels[i]) == int(r_labels[j]):
                pos.append(dist)
            else:
                neg.append(torch.relu(1.0 - dist))
    return torch.stack(pos).mean() + torch.stack(neg).mean()


def test_symmetric_three_views_pairs_every_view_with_every_other() -> None:
    views = [v.requires_grad_() for v in _views(3)]
    got = SelfSupervisedLoss(_contrastive())(*views)
    both = torch.cat(views)
    labels = torch.arange(5).repeat(3)
    want = naive_contrastive(both, labels, both, labels, skip_self=True)
    assert_close(got, want)
    # 3 views of 5 rows: each row has 2 positives per view, 3 * 5 * 2 = 30 positive pairs
    assert int((labels[:, None] == labels[None]).sum()) - 15 == 30
    g_got = torch.autograd.grad(got, views)
    g_want = torch.autograd.grad(want, views)
    for a, b in zip(g_got, g_want, strict=True):
        assert_close(a, b)
        assert bool(a.abs().sum() > 0)


def test_list_of_views_equals_positional_views() -> None:
    views = _views(4)
    loss = SelfSupervisedLoss(TripletMarginLoss())
    positional = loss(*views)
    assert_close(loss(views), positional)
    assert_close(loss(tuple(views)), positional)
    assert_close(loss(views[0], *views[1:]), positional)
    want = TripletMarginLoss()(torch.cat(views), torch.arange(5).repeat(4))
    torch.testing.assert_close(positional, want, rtol=0, atol=0)


def test_two_views_in_a_list_equal_the_two_view_call() -> None:
    a, b = _views(2)
    for symmetric in (True, False):
        loss = SelfSupervisedLoss(_contrastive(), symmetric=symmetric)
        torch.testing.assert_close(loss([a, b]), loss(a, b), rtol=0, atol=0)
        torch.testing.assert_close(loss(a, ref_emb=b), loss(a, b), rtol=0, atol=0)


def test_asymmetric_three_views_first_view_queries_the_others() -> None:
    views = [v.requires_grad_() for v in _views(3, seed=1)]
    got = SelfSupervisedLoss(_contrastive(), symmetric=False)(*views)
    labels = torch.arange(5)
    want = naive_contrastive(
        views[0], labels, torch.cat(views[1:]), labels.repeat(2), skip_self=False
    )
    assert_close(got, want)
    for a, b in zip(torch.autograd.grad(got, views), torch.autograd.grad(want, views), strict=True):
        assert_close(a, b)


def test_multi_view_dtype_and_device(dtype: torch.dtype, device: torch.device) -> None:
    views = [v.to(dtype) for v in _views(3)]
    loss = SelfSupervisedLoss(NTXentLoss())
    moved = [v.to(device).requires_grad_() for v in views]
    out = loss(moved)
    out.backward()
    assert out.dtype == dtype and out.device.type == device.type
    assert all(v.grad is not None and torch.isfinite(v.grad).all() for v in moved)
    assert_close(out, loss([v.double() for v in views]).to(dtype))


def test_multi_view_nan_gives_nan() -> None:
    views = _views(3)
    views[2][1, 0] = float("nan")
    assert torch.isnan(SelfSupervisedLoss(_contrastive())(*views))


def test_multi_view_bad_input_names_the_view() -> None:
    loss = SelfSupervisedLoss(TripletMarginLoss())
    a, b, c = _views(3)
    with pytest.raises(ValueError, match=r"views\[0\] must have the same shape"):
        loss(a, b, c[:4])
    with pytest.raises(ValueError, match=r"embeddings\[2\] must have the same shape"):
        loss([a, b, c[:, :3]])
    with pytest.raises(TypeError, match=r"views\[1\]"):
        loss(a, b, c, c.tolist())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"embeddings\[1\] must be a floating-point"):
        loss([a, b.long()])
    with pytest.raises(ValueError, match="at least two views"):
        loss([a])
    with pytest.raises(TypeError, match="list of views"):
        loss([a, b], c)
    with pytest.raises(TypeError, match="ref_emb"):
        loss(a)


def test_decoupled_contrastive_loss_is_accepted_and_equals_it_on_concatenated_views() -> None:
    from pml.losses import DecoupledContrastiveLoss, SelfSupervisedLoss

    g = torch.Generator().manual_seed(3)
    a, b = torch.randn(6, 4, generator=g), torch.randn(6, 4, generator=g)
    out = SelfSupervisedLoss(DecoupledContrastiveLoss())(a, b)
    expected = DecoupledContrastiveLoss()(torch.cat([a, b]), torch.arange(6).repeat(2))
    torch.testing.assert_close(out, expected)
    assert "DecoupledContrastiveLoss" not in SelfSupervisedLoss.supported_losses()
