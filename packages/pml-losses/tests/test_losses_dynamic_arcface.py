"""DynamicArcFaceLoss and its functional math: margins, per-sample ArcFace margins, naive
cross entropy, state dict, bad input."""

from __future__ import annotations

import math

import pytest
import torch

from pml.core.testing import assert_close
from pml.losses import DynamicArcFaceLoss, SubCenterArcFaceLoss
from pml.losses.functional import arcface_target_logits, dynamic_margins
from pml.reducers import DoNothingReducer

COUNTS = [200, 50, 10, 3]
LABELS = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3, 0])


def emb_data(n: int = 9, d: int = 5, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def naive_losses(loss_fn, emb, labels):
    """Cross entropy of scale·cos with cos(θ_y + m_y) at the target, sample by sample."""
    W = loss_fn.W.detach().double()
    k, scale = loss_fn.sub_centers, loss_fn.scale
    out = []
    for e, y in zip(emb, labels.tolist(), strict=True):
        cos = []
        for c in range(loss_fn.num_classes):
            cols = W[:, c * k : (c + 1) * k]
            cos.append(
                max(float(e @ cols[:, j] / (e.norm() * cols[:, j].norm())) for j in range(k))
            )
        m = float(loss_fn.margins[y])
        theta = math.acos(max(-1.0, min(1.0, cos[y])))
        target = math.cos(theta + m) if theta <= math.pi - m else cos[y] - m * math.sin(m)
        logits = [scale * c for c in cos]
        logits[y] = scale * target
        top = max(logits)
        lse = top + math.log(sum(math.exp(v - top) for v in logits))
        out.append(lse - logits[y])
    return torch.tensor(out, dtype=torch.float64)


# --------------------------------------------------------------------------- functional


def test_dynamic_margins_hand_computed():
    got = dynamic_margins(torch.tensor([1, 16, 81, 16]), 0.05, 0.5, 0.25)
    # n^-1/4 = 1, 1/2, 1/3: a = 0.45 / (2/3), b = 0.05 - a/3
    expected = torch.tensor(
        [0.5, 0.05 + 0.45 * 0.25, 0.05, 0.05 + 0.45 * 0.25], dtype=torch.float64
    )
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=0)
    a = 0.45 / (1 - 1 / 3)
    torch.testing.assert_close(
        got, a * torch.tensor([1, 16, 81, 16.0]).double() ** -0.25 + (0.05 - a / 3)
    )


def test_dynamic_margins_equal_counts_give_the_upper_bound():
    assert dynamic_margins(torch.tensor([7, 7, 7]), 0.1, 0.4).tolist() == [0.4, 0.4, 0.4]
    assert dynamic_margins(torch.tensor([1, 5]), 0.1, 0.4, power=0).tolist() == [0.4, 0.4]


@pytest.mark.parametrize("margins", [[0.0, 0.3, 1.2, 2.0], [-0.2, 3.5, 0.5, math.pi]])
def test_arcface_target_logits_tensor_margins_equal_the_scalar_path(margins):
    cos = torch.linspace(-1, 1, 41, dtype=torch.float64)
    for m in margins:
        got = arcface_target_logits(cos, torch.full_like(cos, m))
        torch.testing.assert_close(got, arcface_target_logits(cos, m), rtol=1e-12, atol=1e-15)
    per_sample = torch.tensor(margins, dtype=torch.float64).repeat(11)[: len(cos)]
    expected = torch.stack(
        [arcface_target_logits(c, float(m)) for c, m in zip(cos, per_sample, strict=True)]
    )
    torch.testing.assert_close(arcface_target_logits(cos, per_sample), expected)


# --------------------------------------------------------------------------- the loss


def test_dynamic_arcface_margins_are_a_state_dict_buffer():
    loss_fn = DynamicArcFaceLoss(COUNTS, embedding_size=5)
    assert loss_fn.num_classes == 4 and loss_fn.W.shape == (5, 12)
    expected = dynamic_margins(torch.tensor(COUNTS), 0.05, 0.5, 0.25).float()
    torch.testing.assert_close(loss_fn.margins, expected)
    assert loss_fn.margins[0] == pytest.approx(0.05) and loss_fn.margins[3] == pytest.approx(0.5)
    state = loss_fn.state_dict()
    assert set(state) == {"W", "margins"}
    other = DynamicArcFaceLoss([1, 1, 1, 1], embedding_size=5)
    other.load_state_dict(state)
    torch.testing.assert_close(other.margins, loss_fn.margins)
    torch.testing.assert_close(other.W, loss_fn.W)


@pytest.mark.parametrize("sub_centers", [1, 3])
def test_dynamic_arcface_loss_matches_naive_cross_entropy(sub_centers):
    torch.manual_seed(1)
    loss_fn = DynamicArcFaceLoss(
        COUNTS, 5, scale=8, sub_centers=sub_centers, reducer=DoNothingReducer()
    )
    emb = emb_data()
    got = loss_fn(emb, LABELS)["loss"]["losses"]
    torch.testing.assert_close(got, naive_losses(loss_fn, emb, LABELS), rtol=1e-10, atol=1e-12)


def test_dynamic_arcface_loss_linear_branch_past_pi_minus_margin():
    loss_fn = DynamicArcFaceLoss([1000, 1], 2, margin_bounds=(0.1, 1.5), scale=4, sub_centers=1)
    with torch.no_grad():
        loss_fn.W.copy_(torch.tensor([[1.0, 1.0], [0.0, 0.0]]))
    emb = torch.tensor([[-1.0, 0.05], [-1.0, 0.05]], dtype=torch.float64)  # θ ≈ π for both
    labels = torch.tensor([0, 1])
    loss_fn.reducer = DoNothingReducer()
    got = loss_fn(emb, labels)["loss"]["losses"]
    torch.testing.assert_close(got, naive_losses(loss_fn, emb, labels), rtol=1e-10, atol=1e-12)


def test_dynamic_arcface_equal_counts_equal_sub_center_arcface():
    torch.manual_seed(2)
    dyn = DynamicArcFaceLoss([5, 5, 5, 5], 5, margin_bounds=(0.1, 0.4))
    plain = SubCenterArcFaceLoss(4, 5, margin=math.degrees(0.4))
    plain.load_state_dict({"W": dyn.W.detach()})
    emb = emb_data()
    torch.testing.assert_close(dyn(emb, LABELS), plain(emb, LABELS), rtol=1e-6, atol=1e-6)


def test_dynamic_arcface_gradient_finite_on_the_class_vector():
    torch.manual_seed(3)
    loss_fn = DynamicArcFaceLoss(COUNTS, 3, sub_centers=1)
    emb = loss_fn.W.detach().t()[:2].clone().requires_grad_(True)  # cos = 1 exactly
    loss_fn(emb, torch.tensor([0, 1])).backward()
    assert torch.isfinite(emb.grad).all() and torch.isfinite(loss_fn.W.grad).all()


def test_dynamic_arcface_loss_dtypes(dtype, device):
    torch.manual_seed(4)
    loss_fn = DynamicArcFaceLoss(COUNTS, 5, scale=8)
    emb = emb_data()
    expected = loss_fn(emb, LABELS)
    x = emb.to(device=device, dtype=dtype).requires_grad_(True)
    loss = loss_fn.to(device)(x, LABELS.to(device))
    assert loss.dtype == dtype and loss_fn.W.dtype == torch.float32
    assert_close(loss, expected)
    loss.backward()
    assert torch.isfinite(x.grad).all()


def test_dynamic_arcface_get_outliers_is_inherited():
    loss_fn = DynamicArcFaceLoss(COUNTS, 5, sub_centers=2)
    outliers, centers = loss_fn.get_outliers(emb_data().float(), LABELS)
    assert centers.shape == (5, 4) and outliers.dtype == torch.int64


# --------------------------------------------------------------------------- bad input


def test_dynamic_arcface_rejects_margin_bounds_in_degrees():
    with pytest.raises(ValueError, match="degrees") as info:
        DynamicArcFaceLoss(COUNTS, 5, margin_bounds=(5, 30))
    assert "radians" in str(info.value) and "math.radians" in str(info.value)
    with pytest.raises(ValueError, match="margin_bounds"):
        DynamicArcFaceLoss(COUNTS, 5, margin_bounds=(0.5, 0.1))
    with pytest.raises(ValueError, match="margin_bounds"):
        DynamicArcFaceLoss(COUNTS, 5, margin_bounds=(-0.1, 0.5))
    with pytest.raises(TypeError, match="margin_bounds"):
        DynamicArcFaceLoss(COUNTS, 5, margin_bounds=0.5)
    with pytest.raises(TypeError, match="margin_bounds"):
        DynamicArcFaceLoss(COUNTS, 5, margin_bounds=("a", 0.5))


@pytest.mark.parametrize(
    ("counts", "error"),
    [
        ([], ValueError),
        ([[1, 2]], ValueError),
        ([3, 0, 2], ValueError),
        ([3, -1], ValueError),
        ([3, math.nan], ValueError),
        ("abc", TypeError),
        (None, TypeError),
        ([True, False], TypeError),
        ([{"a": 1}], TypeError),
    ],
)
def test_dynamic_arcface_rejects_bad_class_counts(counts, error):
    with pytest.raises(error, match="class_counts"):
        DynamicArcFaceLoss(counts, 5)


def test_dynamic_arcface_rejects_bad_arguments():
    with pytest.raises(ValueError, match="power"):
        DynamicArcFaceLoss(COUNTS, 5, power=-0.25)
    with pytest.raises(ValueError, match="sub_centers"):
        DynamicArcFaceLoss(COUNTS, 5, sub_centers=0)
    with pytest.raises(ValueError, match="scale"):
        DynamicArcFaceLoss(COUNTS, 5, scale=0)
    with pytest.raises(ValueError, match="embedding_size"):
        DynamicArcFaceLoss(COUNTS, 0)
    with pytest.raises(ValueError, match="labels"):
        DynamicArcFaceLoss(COUNTS, 5)(emb_data().float(), torch.tensor([0, 1, 2, 3, 4, 0, 0, 0, 0]))


def test_dynamic_arcface_num_classes_keyword_matching_class_counts_is_accepted():
    # it used to raise "got multiple values for argument 'num_classes'" from the base class
    torch.manual_seed(0)
    a = DynamicArcFaceLoss(COUNTS, 5, num_classes=len(COUNTS))
    torch.manual_seed(0)
    b = DynamicArcFaceLoss(COUNTS, 5)
    assert torch.equal(a.W, b.W) and a.W.shape[1] == 3 * len(COUNTS)
    with pytest.raises(
        ValueError, match=rf"num_classes must equal len\(class_counts\) = {len(COUNTS)}"
    ):
        DynamicArcFaceLoss(COUNTS, 5, num_classes=len(COUNTS) + 1)

    with pytest.raises(TypeError, match="takes margin_bounds=.*not margin.*got margin=0.3"):
        DynamicArcFaceLoss(COUNTS, 5, margin=0.3)
