"""Loss input checks vs the reference: the drop-in behaviour pml shares (a custom distance
decides the embeddings' shape) and the documented differences (indices_tuple range and dtype,
NaN outside the tuple, a reference set in another float dtype; docs/compatibility.md).
"""

from __future__ import annotations

from typing import Any

import pytest
import torch

pytest.importorskip("pytorch_metric_learning")
import pytorch_metric_learning.distances as ref_distances
import pytorch_metric_learning.losses as ref_losses

import pml.distances as our_distances
import pml.losses as our_losses

pytestmark = pytest.mark.compat

N, D = 8, 4


def _sequence_cosine(base: type) -> Any:
    class SequenceCosine(base):  # type: ignore[misc, valid-type]
        """Cosine similarity of the time-means of ``(N, T, D)`` sequences."""

        def check_shapes(self, query_emb: torch.Tensor, ref_emb: Any) -> None:
            if query_emb.ndim != 3:
                raise ValueError("query_emb must be (N, T, D)")

        def maybe_normalize(self, embeddings: torch.Tensor, dim: int = 1, **kw: Any) -> Any:
            return super().maybe_normalize(embeddings.mean(dim=1), dim=dim, **kw)

    return SequenceCosine()


@pytest.mark.parametrize("name", ["ContrastiveLoss", "TripletMarginLoss", "MultiSimilarityLoss"])
def test_custom_distance_accepting_sequence_embeddings_matches_reference(name: str) -> None:
    g = torch.Generator().manual_seed(0)
    seq = torch.randn(N, 5, D, generator=g, dtype=torch.float64)
    labels = torch.arange(N) // 2
    ours_in, ref_in = seq.clone().requires_grad_(), seq.clone().requires_grad_()
    ours = getattr(our_losses, name)(distance=_sequence_cosine(our_distances.CosineSimilarity))
    ref = getattr(ref_losses, name)(distance=_sequence_cosine(ref_distances.CosineSimilarity))
    got, expected = ours(ours_in, labels), ref(ref_in, labels)
    torch.testing.assert_close(got, expected)
    got.backward()
    expected.backward()
    torch.testing.assert_close(ours_in.grad, ref_in.grad)


def _data() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.randn(N, D, generator=g, dtype=torch.float64), torch.arange(N) // 2


def test_negative_index_in_indices_tuple_differs_from_reference() -> None:
    """The reference reads index -1 as row N - 1; pml raises ValueError naming the argument."""
    emb, labels = _data()
    a, p, n = torch.tensor([0, 2]), torch.tensor([1, 3]), torch.tensor([4, -1])
    wrapped = ref_losses.TripletMarginLoss()(emb, labels, (a, p, n))
    as_last = ref_losses.TripletMarginLoss()(emb, labels, (a, p, torch.tensor([4, N - 1])))
    torch.testing.assert_close(wrapped, as_last)
    with pytest.raises(ValueError, match="indices_tuple"):
        our_losses.TripletMarginLoss()(emb, labels, (a, p, n))


def test_index_equal_to_batch_size_differs_from_reference() -> None:
    """The reference raises a bare IndexError inside; pml a ValueError naming the argument."""
    emb, labels = _data()
    t = (torch.tensor([0, 2]), torch.tensor([1, 3]), torch.tensor([4, N]))
    for name, kwargs in (("HistogramLoss", {"n_bins": 10}), ("NCALoss", {})):
        with pytest.raises(IndexError):
            getattr(ref_losses, name)(**kwargs)(emb, labels, t)
        with pytest.raises(ValueError, match="indices_tuple"):
            getattr(our_losses, name)(**kwargs)(emb, labels, t)


@pytest.mark.parametrize(
    ("name", "kwargs"),
    [
        ("ThresholdConsistentMarginLoss", {}),
        ("HistogramLoss", {"n_bins": 10}),
        ("DynamicSoftMarginLoss", {}),
    ],
)
def test_nan_outside_indices_tuple_differs_from_reference(name: str, kwargs: dict) -> None:
    """The reference gives a finite loss when the NaN row is in no triplet; pml gives NaN."""
    emb, labels = _data()
    emb[7, 0] = float("nan")
    t = (torch.tensor([0, 2]), torch.tensor([1, 3]), torch.tensor([4, 5]))
    assert torch.isfinite(getattr(ref_losses, name)(**kwargs)(emb, labels, t))
    assert torch.isnan(getattr(our_losses, name)(**kwargs)(emb, labels, t))


def test_nan_outside_triplets_gives_nan_like_the_reference() -> None:
    emb, labels = _data()
    emb[7, 0] = float("nan")
    t = (torch.tensor([0, 2]), torch.tensor([1, 3]), torch.tensor([4, 5]))
    assert torch.isnan(ref_losses.TripletMarginLoss()(emb, labels, t))
    assert torch.isnan(our_losses.TripletMarginLoss()(emb, labels, t))


def test_ref_emb_in_another_float_dtype_differs_from_reference() -> None:
    """The reference crashes in torch; pml computes in the promoted dtype."""
    emb, labels = _data()
    emb = emb.float()
    ref_emb, ref_labels = emb.double() * 0.5 + 0.1, labels.clone()
    with pytest.raises(RuntimeError):
        ref_losses.ContrastiveLoss()(emb, labels, None, ref_emb, ref_labels)
    got = our_losses.ContrastiveLoss()(emb, labels, None, ref_emb, ref_labels)
    expected = ref_losses.ContrastiveLoss()(emb.double(), labels, None, ref_emb, ref_labels)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, expected.float())
