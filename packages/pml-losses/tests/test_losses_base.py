"""The loss pipeline of ``_base.py``: reducer rules, zero losses, regularizers, identity rule.

Uses small losses defined here, so the pipeline is tested on its own (spec losses.md §1, §3, §5;
00-architecture.md §5, §8).
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
import torch.nn.functional as F

from pml.core.records import ModuleWithRecords
from pml.core.testing import assert_close
from pml.core.validation import InvalidArgumentError, UnsupportedLossError
from pml.distances import CosineSimilarity, LpDistance
from pml.losses import (
    BaseLossWrapper,
    BaseMetricLossFunction,
    EmbeddingRegularizerMixin,
    GenericPairLoss,
    TorchInitWrapper,
    WeightRegularizerMixin,
)
from pml.losses._base import loss_entry, zero_loss_entry
from pml.reducers import (
    AvgNonZeroReducer,
    DoNothingReducer,
    MeanReducer,
    ModuleWithRecordsReducerAndDistance,
    MultipleReducers,
    SumReducer,
)
from pml.regularizers import LpRegularizer

MARGIN = 1.0


class RowLoss(BaseMetricLossFunction):
    """Per query row: mean of its distances to the reference set (element reduction)."""

    def compute_loss(self, embeddings, labels, indices_tuple, ref_emb, ref_labels):  # type: ignore[no-untyped-def]
        self.seen = (embeddings, labels, indices_tuple, ref_emb, ref_labels)
        if len(embeddings) == 0:
            return self.zero_losses()
        mat = self.distance(embeddings, ref_emb)
        idx = torch.arange(len(embeddings), device=embeddings.device)
        return {"loss": loss_entry(mat.mean(dim=1), idx, "element")}


class PairLoss(GenericPairLoss):
    """pos: d(a, p); neg: relu(1 - d(a, n)). Records the pairs it got."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(mat_based_loss=False, **kwargs)

    def _sub_loss_names(self) -> list[str]:
        return ["pos_loss", "neg_loss"]

    def _compute_loss(self, pos_pair, neg_pair, indices_tuple):  # type: ignore[no-untyped-def]
        self.pairs = indices_tuple
        a1, p, a2, n = indices_tuple
        pos = loss_entry(pos_pair, (a1, p), "pos_pair") if len(a1) else zero_loss_entry()
        neg = (
            loss_entry(torch.relu(MARGIN - neg_pair), (a2, n), "neg_pair")
            if len(a2)
            else zero_loss_entry()
        )
        return {"pos_loss": pos, "neg_loss": neg}


class MatLoss(GenericPairLoss):
    """Per row: sum of positive distances + sum of relu(1 - negative distances)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(mat_based_loss=True, **kwargs)

    def _compute_loss(self, mat, pos_mask, neg_mask):  # type: ignore[no-untyped-def]
        self.masks = (pos_mask, neg_mask)
        losses = (mat * pos_mask).sum(1) + (torch.relu(MARGIN - mat) * neg_mask).sum(1)
        return {"loss": loss_entry(losses, torch.arange(len(mat), device=mat.device), "element")}


class WeightedLoss(WeightRegularizerMixin, BaseMetricLossFunction):
    """Row loss plus a weight regularization of W (C x D)."""

    def __init__(self, num_classes: int = 3, embedding_size: int = 4, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.W = torch.nn.Parameter(torch.empty(num_classes, embedding_size))
        self.weight_init_func(self.W)

    def compute_loss(self, embeddings, labels, indices_tuple, ref_emb, ref_labels):  # type: ignore[no-untyped-def]
        logits = embeddings @ self.W.t()
        idx = torch.arange(len(embeddings), device=embeddings.device)
        out = {
            "loss": loss_entry(F.cross_entropy(logits, labels, reduction="none"), idx, "element")
        }
        self.add_weight_regularization_to_loss_dict(out, self.W)
        return out


class SpyReducer(MeanReducer):
    def forward(self, loss_dict, embeddings, labels):  # type: ignore[no-untyped-def]
        self.seen = (embeddings, labels)
        return super().forward(loss_dict, embeddings, labels)


class StatLoss(RowLoss):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.add_to_recordable_attributes(name="num_rows", is_stat=True)

    def compute_loss(self, embeddings, labels, indices_tuple, ref_emb, ref_labels):  # type: ignore[no-untyped-def]
        assert self.num_rows == 0, "stats must be reset before compute_loss"
        self.set_stats(num_rows=len(embeddings))
        return super().compute_loss(embeddings, labels, indices_tuple, ref_emb, ref_labels)


def _data(
    n: int = 8, d: int = 4, classes: int = 3, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g, dtype=torch.float64), torch.arange(n) % classes


def _dist(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return torch.linalg.vector_norm(F.normalize(x, dim=0) - F.normalize(y, dim=0))


# ----------------------------------------------------------------------------- hierarchy, defaults


def test_hierarchy() -> None:
    assert issubclass(GenericPairLoss, BaseMetricLossFunction)
    assert issubclass(BaseMetricLossFunction, EmbeddingRegularizerMixin)
    assert issubclass(BaseMetricLossFunction, ModuleWithRecordsReducerAndDistance)
    assert issubclass(BaseMetricLossFunction, ModuleWithRecords)
    assert issubclass(BaseLossWrapper, torch.nn.Module)


def test_default_distance_and_reducer() -> None:
    loss = RowLoss()
    assert isinstance(loss.reducer, MeanReducer) and type(loss.reducer) is MeanReducer
    assert isinstance(loss.distance, LpDistance)
    assert (loss.distance.p, loss.distance.power, loss.distance.normalize_embeddings) == (
        2,
        1,
        True,
    )
    assert loss.sub_loss_names() == ["loss"]
    assert RowLoss().distance is not loss.distance  # a fresh default per instance


def test_given_reducer_is_deep_copied_but_multiple_and_do_nothing_are_not() -> None:
    mine = AvgNonZeroReducer()
    loss = RowLoss(reducer=mine)
    assert isinstance(loss.reducer, AvgNonZeroReducer) and loss.reducer is not mine
    multi = MultipleReducers({"loss": SumReducer()})
    assert RowLoss(reducer=multi).reducer is multi
    nothing = DoNothingReducer()
    assert RowLoss(reducer=nothing).reducer is nothing


def test_several_sub_losses_get_one_reducer_copy_each_and_are_summed() -> None:
    mine = SumReducer()
    loss = PairLoss(reducer=mine)
    assert isinstance(loss.reducer, MultipleReducers)
    reducers = loss.reducer.reducers
    assert set(reducers) == {"pos_loss", "neg_loss"}
    assert reducers["pos_loss"] is not reducers["neg_loss"] is not mine
    emb, labels = _data()
    out = loss(emb, labels)
    parts = PairLoss(reducer=DoNothingReducer())(emb, labels)
    exp = parts["pos_loss"]["losses"].sum() + parts["neg_loss"]["losses"].sum()
    torch.testing.assert_close(out, exp, rtol=1e-12, atol=0)


def test_collect_stats_does_not_propagate_to_default_children() -> None:
    loss = RowLoss(collect_stats=True)
    assert loss.collect_stats is True
    assert loss.reducer.collect_stats is False and loss.distance.collect_stats is False


def test_stats_are_reset_at_the_start_of_forward() -> None:
    loss = StatLoss(collect_stats=True)
    emb, labels = _data()
    loss(emb, labels)
    assert loss.num_rows == 8 and "num_rows" in loss._record_these_stats
    loss.num_rows = 99
    loss(emb[:5], labels[:5])  # compute_loss asserts the reset happened first
    assert loss.num_rows == 5


def test_reducer_gets_query_embeddings_and_labels() -> None:
    loss = RowLoss(reducer=SpyReducer())
    emb, labels = _data()
    ref, ref_labels = _data(n=5, seed=1)
    loss(emb, labels, ref_emb=ref, ref_labels=ref_labels)
    assert loss.reducer.seen[0] is emb and loss.reducer.seen[1] is labels


# ----------------------------------------------------------------------------- zero losses


def test_zero_losses_entries() -> None:
    loss = PairLoss(embedding_regularizer=LpRegularizer())
    z = loss.zero_losses()
    assert list(z) == ["pos_loss", "neg_loss", "embedding_reg_loss"]
    for entry in z.values():
        assert entry == {"losses": 0, "indices": None, "reduction_type": "already_reduced"}
    assert loss.zero_loss() == zero_loss_entry()


def test_single_sample_gives_a_graph_connected_zero(dtype: torch.dtype) -> None:
    emb = _data(n=1)[0].to(dtype).requires_grad_()
    out = PairLoss()(emb, torch.tensor([0]))  # no pairs at all: zero_losses()
    out.backward()
    assert out.dtype == dtype and out.ndim == 0 and out.item() == 0
    assert emb.grad is not None and emb.grad.abs().sum() == 0


def test_no_positives_or_no_negatives_keep_the_other_part() -> None:
    emb, _ = _data(n=5)
    distinct, single = torch.arange(5), torch.zeros(5, dtype=torch.long)
    d = torch.stack([torch.stack([_dist(x, y) for y in emb]) for x in emb])
    off = ~torch.eye(5, dtype=torch.bool)
    exp_neg = torch.relu(MARGIN - d[off]).mean()
    torch.testing.assert_close(PairLoss()(emb, distinct), exp_neg, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(PairLoss()(emb, single), d[off].mean(), rtol=1e-9, atol=1e-12)


def test_at_most_one_pair_of_each_kind_gives_zero() -> None:
    # compat: the reference returns zero when all four index lists have length <= 1.
    emb, _ = _data(n=4)
    one_each = (torch.tensor([0]), torch.tensor([1]), torch.tensor([0]), torch.tensor([2]))
    assert PairLoss()(emb, None, one_each).item() == 0
    two_pos = (torch.tensor([0, 2]), torch.tensor([1, 3]), torch.tensor([0]), torch.tensor([2]))
    assert PairLoss()(emb, None, two_pos).item() > 0


def test_zero_loss_of_nan_embeddings_is_nan() -> None:
    emb, _ = _data(n=1)
    emb[0, 0] = float("nan")
    assert torch.isnan(PairLoss()(emb, torch.tensor([0])))


def test_nan_embeddings_give_nan() -> None:
    emb, labels = _data()
    emb[3, 1] = float("inf")
    assert torch.isnan(PairLoss()(emb, labels))
    assert torch.isnan(RowLoss()(emb, labels))


# ----------------------------------------------------------------------------- regularizers


def test_embedding_regularizer_is_added_and_applied_to_queries_only() -> None:
    emb, labels = _data()
    ref, ref_labels = _data(n=5, seed=1)
    loss = RowLoss(embedding_regularizer=LpRegularizer(), embedding_reg_weight=0.5)
    assert loss.sub_loss_names() == ["loss", "embedding_reg_loss"]
    assert isinstance(loss.reducer, MultipleReducers)
    assert "embedding_reg_weight" in loss._record_these
    out = loss(emb, labels, ref_emb=ref, ref_labels=ref_labels)
    base = RowLoss()(emb, labels, ref_emb=ref, ref_labels=ref_labels)
    reg = torch.linalg.vector_norm(emb, dim=1).mean()
    torch.testing.assert_close(out, base + 0.5 * reg, rtol=1e-12, atol=0)
    d = RowLoss(embedding_regularizer=LpRegularizer(), reducer=DoNothingReducer())(emb, labels)
    assert d["embedding_reg_loss"]["reduction_type"] == "already_reduced"
    assert "embedding_reg_weight" not in getattr(RowLoss(), "_record_these", [])


def test_embedding_regularizer_still_applies_without_pairs() -> None:
    emb, _ = _data(n=1)
    out = PairLoss(embedding_regularizer=LpRegularizer())(emb, torch.tensor([0]))
    torch.testing.assert_close(out, torch.linalg.vector_norm(emb, dim=1).mean())


def test_weight_regularizer_names_order_and_records() -> None:
    loss = WeightedLoss(weight_regularizer=LpRegularizer(), embedding_regularizer=LpRegularizer())
    assert loss.sub_loss_names() == ["loss", "weight_reg_loss", "embedding_reg_loss"]
    assert {"weight_reg_weight", "embedding_reg_weight"} <= set(loss._record_these)
    emb, labels = _data()
    out = loss.double()(emb, labels)
    parts = WeightedLoss(
        weight_regularizer=LpRegularizer(),
        embedding_regularizer=LpRegularizer(),
        reducer=DoNothingReducer(),
    ).double()
    parts.W.data = loss.W.data.clone()
    d = parts(emb, labels)
    assert list(d) == ["loss", "weight_reg_loss", "embedding_reg_loss"]
    exp = (
        d["loss"]["losses"].mean()
        + d["weight_reg_loss"]["losses"]
        + d["embedding_reg_loss"]["losses"]
    )
    torch.testing.assert_close(out, exp, rtol=1e-12, atol=0)


def test_weight_init_func() -> None:
    torch.manual_seed(3)
    default = WeightedLoss().W.detach().clone()
    torch.manual_seed(3)
    torch.testing.assert_close(default, torch.randn(3, 4))  # normal_(0, 1)
    const = WeightedLoss(weight_init_func=TorchInitWrapper(torch.nn.init.constant_, val=0.25))
    assert bool((const.W == 0.25).all())


# ----------------------------------------------------------------------------- identity rule, ref


def test_ref_given_as_the_same_objects_equals_no_ref() -> None:
    emb, labels = _data()
    a = PairLoss()(emb, labels)
    b = PairLoss()(emb, labels, ref_emb=emb, ref_labels=labels)
    torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_ref_labels_without_ref_emb_are_ignored() -> None:
    emb, labels = _data()
    a = PairLoss()(emb, labels)
    b = PairLoss()(emb, labels, ref_labels=torch.zeros(3, dtype=torch.long))
    torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_copied_labels_keep_self_pairs() -> None:
    # compat: "same set" is object identity, so a copy keeps (i, i) as positives.
    emb, labels = _data()
    loss = PairLoss()
    loss(emb, labels)
    a1, p, _, _ = loss.pairs
    assert not bool((a1 == p).any())
    loss(emb, labels, ref_emb=emb, ref_labels=labels.clone())
    a1, p, _, _ = loss.pairs
    assert int((a1 == p).sum()) == 8


def test_real_reference_set_matches_naive() -> None:
    emb, labels = _data()
    ref, ref_labels = _data(n=5, seed=1)
    emb.requires_grad_(), ref.requires_grad_()
    out = PairLoss()(emb, labels, ref_emb=ref, ref_labels=ref_labels)
    pos, neg = [], []
    for i in range(8):
        for j in range(5):
            d = _dist(emb[i], ref[j])
            (pos if labels[i] == ref_labels[j] else neg).append(d)
    exp = torch.stack(pos).mean() + torch.relu(MARGIN - torch.stack(neg)).mean()
    torch.testing.assert_close(out, exp, rtol=1e-9, atol=1e-12)
    for g, h in zip(torch.autograd.grad(out, (emb, ref)), torch.autograd.grad(exp, (emb, ref))):
        torch.testing.assert_close(g, h, rtol=1e-7, atol=1e-10)


def test_ref_emb_without_ref_labels_raises() -> None:
    # fix: the reference silently paired labels with themselves (docs/compatibility.md).
    emb, labels = _data()
    ref, _ = _data(n=5, seed=1)
    with pytest.raises(ValueError, match="ref_labels"):
        PairLoss()(emb, labels, ref_emb=ref)
    with pytest.raises(ValueError, match="ref_labels"):
        PairLoss()(emb, labels, ref_emb=emb.clone())
    # fine when the pairs do not come from labels
    t = (torch.tensor([0, 1]), torch.tensor([2, 3]), torch.tensor([0, 1]), torch.tensor([4, 0]))
    assert torch.isfinite(PairLoss()(emb, labels, t, ref_emb=ref))
    assert torch.isfinite(RowLoss()(emb, None, ref_emb=ref))


def test_labels_any_integer_dtype_and_moved_to_embeddings_device() -> None:
    emb, labels = _data()
    exp = PairLoss()(emb, labels)
    for dt in (torch.int32, torch.int16, torch.uint8):
        torch.testing.assert_close(PairLoss()(emb, labels.to(dt)), exp, rtol=0, atol=0)


# ----------------------------------------------------------------------------- mat-based pairs


def test_mat_based_masks_collapse_duplicates() -> None:
    emb, labels = _data(n=6)
    loss = MatLoss()
    t = (torch.tensor([0, 0, 1]), torch.tensor([3, 3, 4]), torch.tensor([0]), torch.tensor([1]))
    loss(emb, labels, t)
    pos_mask, neg_mask = loss.masks
    assert pos_mask.sum() == 2 and pos_mask[0, 3] == 1 and neg_mask.sum() == 1
    assert pos_mask.dtype == emb.dtype


def test_mat_based_overlap_raises() -> None:
    emb, labels = _data(n=6)
    t = (torch.tensor([0, 1]), torch.tensor([3, 4]), torch.tensor([0]), torch.tensor([3]))
    with pytest.raises(InvalidArgumentError, match="either positive or negative"):
        MatLoss()(emb, labels, t)
    with pytest.raises(AssertionError):
        MatLoss()(emb, labels, t)


def test_triplets_become_pairs_with_duplicates() -> None:
    emb, labels = _data(n=6)
    loss = PairLoss()
    t = (torch.tensor([0, 0]), torch.tensor([3, 3]), torch.tensor([1, 2]))
    loss(emb, labels, t)
    a1, p, a2, n = loss.pairs
    assert a1.tolist() == [0, 0] and p.tolist() == [3, 3] and n.tolist() == [1, 2]


# ----------------------------------------------------------------------------- dtype, device


def test_dtype_and_device(dtype: torch.dtype, device: torch.device) -> None:
    emb, labels = _data()
    x = emb.to(device, dtype).requires_grad_()
    for loss in (PairLoss(), MatLoss(), RowLoss(distance=CosineSimilarity())):
        out = loss(x, labels.to(device))
        (g,) = torch.autograd.grad(out, x)
        assert out.dtype == dtype and out.device.type == device.type and g.dtype == dtype
        assert_close(out, loss(emb.to(dtype).double(), labels).to(dtype))


def test_empty_batch() -> None:
    emb = torch.zeros(0, 4, requires_grad=True)
    out = PairLoss()(emb, torch.zeros(0, dtype=torch.long))
    assert out.item() == 0 and out.requires_grad


# ----------------------------------------------------------------------------- bad input


def test_bad_input_errors() -> None:
    emb, labels = _data()
    loss = PairLoss()
    with pytest.raises(TypeError, match="embeddings"):
        loss(emb.tolist(), labels)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="embeddings"):
        loss(emb[0], labels)
    with pytest.raises(TypeError, match="embeddings"):
        loss(emb.long(), labels)
    with pytest.raises(ValueError, match="labels"):
        loss(emb, labels[:5])
    with pytest.raises(ValueError, match="labels"):
        loss(emb, labels.reshape(2, 4))
    with pytest.raises(ValueError, match="labels and indices_tuple cannot both be None"):
        loss(emb)
    with pytest.raises(ValueError, match="ref_emb"):
        loss(emb, labels, ref_emb=emb[:, :3], ref_labels=labels)
    with pytest.raises(ValueError, match="ref_labels"):
        loss(emb, labels, ref_emb=emb[:5], ref_labels=labels)
    with pytest.raises(TypeError, match="indices_tuple"):
        loss(emb, labels, (labels, labels))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="indices_tuple"):
        loss(emb, labels, (emb[:, 0], emb[:, 0], emb[:, 0]))
    with pytest.raises(ValueError, match="indices_tuple"):
        loss(emb, labels, (labels, labels, labels[:3]))


def test_loss_wrapper_support_is_by_class_name() -> None:
    class Wrapper(BaseLossWrapper):
        @staticmethod
        def supported_losses() -> list[str]:
            return ["PairLoss"]

    Wrapper(PairLoss())
    with pytest.raises(UnsupportedLossError, match="Wrapper does not support RowLoss"):
        Wrapper(RowLoss())
    sub = type("MyPairLoss", (PairLoss,), {})()
    with pytest.raises(TypeError, match="MyPairLoss"):  # an Exception, and a TypeError
        Wrapper(sub)
    with pytest.raises(TypeError):
        Wrapper(PairLoss(), collect_stats=True)  # nn.Module takes no keywords
