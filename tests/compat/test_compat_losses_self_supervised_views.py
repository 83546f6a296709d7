"""SelfSupervisedLoss with more than two views (beyond the reference 2.9, which takes two).

The reference rejects a third view; pml's multi-view loss equals the reference's wrapped
loss on the concatenated views with labels ``arange(N)`` repeated once per view (symmetric),
or on the first view against the others (asymmetric), and a list of two views equals the
reference's two-view call.
"""

from __future__ import annotations

import pytest
import torch

ref_losses = pytest.importorskip("pytorch_metric_learning.losses")
import pml.losses as ours  # noqa: E402

pytestmark = pytest.mark.compat


def _views(num: int, n: int = 6, d: int = 5) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(num)
    base = torch.randn(n, d, generator=g, dtype=torch.float64)
    return [base + 0.3 * torch.randn(n, d, generator=g, dtype=torch.float64) for _ in range(num)]


def test_three_views_rejected_by_the_reference_computed_by_pml() -> None:
    views = _views(3)
    with pytest.raises(TypeError):
        ref_losses.SelfSupervisedLoss(ref_losses.TripletMarginLoss())(*views)
    got = ours.SelfSupervisedLoss(ours.TripletMarginLoss())(*views)
    want = ref_losses.TripletMarginLoss()(torch.cat(views), torch.arange(6).repeat(3))
    torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-12)


def test_asymmetric_three_views_is_the_first_view_against_the_others() -> None:
    views = _views(3)
    got = ours.SelfSupervisedLoss(ours.ContrastiveLoss(), symmetric=False)(views)
    labels = torch.arange(6)
    want = ref_losses.ContrastiveLoss()(
        views[0], labels, ref_emb=torch.cat(views[1:]), ref_labels=labels.repeat(2)
    )
    torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("symmetric", [True, False])
def test_two_views_as_a_list_equal_the_reference_two_view_call(symmetric: bool) -> None:
    a, b = _views(2)
    got = ours.SelfSupervisedLoss(ours.NTXentLoss(), symmetric=symmetric)([a, b])
    want = ref_losses.SelfSupervisedLoss(ref_losses.NTXentLoss(), symmetric=symmetric)(a, b)
    torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-12)
