"""Label dtypes, NCA's softmax scale and InstanceLoss's empty batch vs the reference.

Bool labels: the reference accepts them in every loss and miner; pml gives the same values.
Where pml fixes a defect (labels that index per-class betas, NCA scales, the empty Instance
batch) the test asserts the documented difference (docs/compatibility.md).
"""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("pytorch_metric_learning")
import pytorch_metric_learning.losses as ref_losses
import pytorch_metric_learning.miners as ref_miners
import pytorch_metric_learning.reducers as ref_reducers

import pml.losses as our_losses
import pml.miners as our_miners
import pml.reducers as our_reducers

pytestmark = pytest.mark.compat


def batch(n: int = 12, d: int = 6, seed: int = 0, dtype: torch.dtype = torch.float64):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g, dtype=dtype)


BOOL_LABELS = torch.tensor([0, 0, 1, 1, 0, 1, 0, 1, 1, 0, 1, 0]).bool()
#: the losses whose label grouping crashed on bool labels before the fix
SORTING_LOSSES = [
    "AngularLoss",
    "DynamicSoftMarginLoss",
    "MarginLoss",
    "NTXentLoss",
    "TripletMarginLoss",
    "TupletMarginLoss",
    "NCALoss",
    "InstanceLoss",
]


@pytest.mark.parametrize("name", SORTING_LOSSES)
def test_bool_labels_match_the_reference(name):
    emb = batch()
    if name == "AngularLoss":  # raw == normalised negatives, where pml and the reference agree
        emb = torch.nn.functional.normalize(emb)
    values = []
    for lib in (our_losses, ref_losses):
        torch.manual_seed(0)
        values.append(getattr(lib, name)()(emb, BOOL_LABELS))
    if name == "InstanceLoss":  # fix: same-label targets; agree only for distinct labels
        assert not torch.allclose(values[0], values[1])
        return
    torch.testing.assert_close(values[0], values[1], rtol=1e-9, atol=1e-12)


def test_bool_labels_distance_weighted_miner_matches_the_reference():
    emb = torch.nn.functional.normalize(batch())
    out = []
    for lib in (our_miners, ref_miners):
        torch.manual_seed(3)
        out.append(lib.DistanceWeightedMiner()(emb, BOOL_LABELS))
    for ours, ref in zip(*out, strict=True):
        assert torch.equal(ours.cpu(), ref.cpu())


def test_margin_loss_per_class_beta_with_uint8_labels_differs():
    """Reference: uint8 labels index beta as a mask (IndexError or a wrong value)."""
    emb = batch(n=8, seed=1)
    labels = torch.tensor([0, 1, 0, 1, 2, 2, 0, 1])

    def value(lib, lab):
        loss_fn = lib.MarginLoss(num_classes=8, learn_beta=True, nu=0.1)
        with torch.no_grad():
            loss_fn.beta.copy_(torch.linspace(0.6, 1.6, 8))
        return loss_fn(emb, lab)

    expected = value(ref_losses, labels)
    torch.testing.assert_close(value(our_losses, labels), expected, rtol=1e-9, atol=0)
    torch.testing.assert_close(
        value(our_losses, labels.to(torch.uint8)), expected, rtol=1e-9, atol=0
    )
    try:
        ref_uint8 = value(ref_losses, labels.to(torch.uint8))
    except IndexError:
        return
    assert not torch.allclose(ref_uint8, expected)


def test_margin_loss_per_class_beta_with_float_labels_differs():
    """Reference: a bare IndexError; pml: ValueError naming labels."""
    emb, labels = batch(seed=2), torch.tensor([0, 1, 2] * 4).float()
    with pytest.raises(IndexError):
        ref_losses.MarginLoss(num_classes=3)(emb, labels)
    with pytest.raises(ValueError, match="labels"):
        our_losses.MarginLoss(num_classes=3)(emb, labels)


@pytest.mark.parametrize("scale", [0.5, 10, 20])
def test_nca_softmax_scale_matches_the_reference_in_float32(scale):
    """pml raised an overflow RuntimeError for a scale > 1 in float32 (finfo.min * scale)."""
    emb, labels = batch(dtype=torch.float32), torch.tensor([0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3])
    ours = our_losses.NCALoss(softmax_scale=scale)(emb, labels)
    ref = ref_losses.NCALoss(softmax_scale=scale)(emb, labels)
    torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-4 * scale)


@pytest.mark.parametrize(
    ("dtype", "scale", "limit"), [(torch.float64, 2000, 700), (torch.float32, 100, 80)]
)
def test_nca_rows_whose_probability_underflows_differ(dtype, scale, limit):
    """Reference: a row whose same-label mass underflows to 0 is dropped; pml keeps it."""
    emb = batch(seed=4, dtype=dtype)
    labels = torch.tensor([0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3])
    ours = our_losses.NCALoss(softmax_scale=scale, reducer=our_reducers.DoNothingReducer())
    ref = ref_losses.NCALoss(softmax_scale=scale, reducer=ref_reducers.DoNothingReducer())
    a, b = ours(emb, labels)["loss"], ref(emb, labels)["loss"]
    assert len(a["indices"]) == 12 and len(b["indices"]) < 12
    kept = torch.isin(a["indices"], b["indices"])
    assert (a["losses"][~kept] > limit).all()  # exp(-loss) is below the dtype's smallest value
    # where both keep a row they agree (the reference's subnormal p loses digits)
    normal = b["losses"] < limit
    tol = (1e-9, 1e-12) if dtype == torch.float64 else (1e-4, 1e-5)
    torch.testing.assert_close(
        a["losses"][kept][normal], b["losses"][normal], rtol=tol[0], atol=tol[1]
    )


def test_instance_empty_batch_differs():
    """Reference: the mean of no rows is NaN; pml: the zero loss."""
    emb, labels = torch.zeros(0, 4), torch.zeros(0, dtype=torch.long)
    assert ref_losses.InstanceLoss()(emb, labels).isnan()
    assert our_losses.InstanceLoss()(emb, labels).item() == 0
