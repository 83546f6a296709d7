"""SelfSupervisedLoss and MultipleLosses.

The wrappers are checked with small losses defined here (named like supported losses, since
support is decided by class name) against naive pair loops, and with the real losses once
pml.losses exports them (skipped before).
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
import torch.nn.functional as F

import pml.losses
from pml.core.indices import get_all_pairs_indices
from pml.core.testing import assert_close
from pml.core.validation import InvalidArgumentError, UnsupportedLossError
from pml.losses import GenericPairLoss, MultipleLosses, SelfSupervisedLoss
from pml.losses._base import loss_entry, zero_loss_entry

MARGIN = 1.0


class _PairLoss(GenericPairLoss):
    """pos: scale * d(a, p); neg: relu(1 - d(a, n)); each averaged. Records its inputs."""

    def __init__(self, scale: float = 1.0, **kwargs: Any) -> None:
        super().__init__(mat_based_loss=False, **kwargs)
        self.scale = scale
        self.seen: dict[str, Any] = {}
        self.calls = 0

    def _sub_loss_names(self) -> list[str]:
        return ["pos_loss", "neg_loss"]

    def compute_loss(self, embeddings, labels, indices_tuple, ref_emb, ref_labels):  # type: ignore[no-untyped-def]
        self.calls += 1
        self.seen = {
            "embeddings": embeddings,
            "labels": labels,
            "indices_tuple": indices_tuple,
            "ref_emb": ref_emb,
            "ref_labels": ref_labels,
        }
        return super().compute_loss(embeddings, labels, indices_tuple, ref_emb, ref_labels)

    def _compute_loss(self, pos_pair, neg_pair, indices_tuple):  # type: ignore[no-untyped-def]
        a1, p, a2, n = indices_tuple
        pos = (
            loss_entry(pos_pair * self.scale, (a1, p), "pos_pair") if len(a1) else zero_loss_entry()
        )
        neg = (
            loss_entry(torch.relu(MARGIN - neg_pair), (a2, n), "neg_pair")
            if len(a2)
            else zero_loss_entry()
        )
        return {"pos_loss": pos, "neg_loss": neg}


def named(name: str, **kwargs: Any) -> _PairLoss:
    """A _PairLoss whose class is named ``name`` (wrappers check support by class name)."""
    return type(name, (_PairLoss,), {})(**kwargs)


class _FirstPairsMiner(torch.nn.Module):
    """Returns the first k positive and negative pairs of the batch; records its calls."""

    def __init__(self, k: int) -> None:
        super().__init__()
        self.k = k
        self.calls: list[tuple] = []

    def forward(self, embeddings, labels, ref_emb=None, ref_labels=None):  # type: ignore[no-untyped-def]
        self.calls.append((embeddings, labels, ref_emb, ref_labels))
        return tuple(t[: self.k] for t in get_all_pairs_indices(labels))


def _dist(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return torch.linalg.vector_norm(F.normalize(x, dim=0) - F.normalize(y, dim=0))


def naive_pair_loss(queries, q_labels, refs, r_labels, skip_self: bool) -> torch.Tensor:  # type: ignore[no-untyped-def]
    pos, neg = [], []
    for i in range(len(queries)):
        for j in range(len(refs)):
            if skip_self and i == j:
                continue
            d = _dist(queries[i], refs[j])
            if int(q_labels[i]) == int(r_labels[j]):
                pos.append(d)
            else:
                neg.append(torch.relu(MARGIN - d))
    return torch.stack(pos).mean() + torch.stack(neg).mean()


def _views(seed: int = 0, n: int = 6, d: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    emb = torch.randn(n, d, generator=g, dtype=torch.float64)
    return emb, emb + 0.3 * torch.randn(n, d, generator=g, dtype=torch.float64)


def _batch(seed: int = 0, n: int = 8, d: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g, dtype=torch.float64), torch.arange(n) % 3


# ----------------------------------------------------------------------------- SelfSupervised


def test_self_supervised_symmetric_matches_naive() -> None:
    emb, aug = _views()
    emb.requires_grad_(), aug.requires_grad_()
    inner = named("ContrastiveLoss")
    got = SelfSupervisedLoss(inner)(emb, aug)
    both = torch.cat([emb, aug])
    labels = torch.arange(6).repeat(2)
    exp = naive_pair_loss(both, labels, both, labels, skip_self=True)
    torch.testing.assert_close(got, exp, rtol=1e-9, atol=1e-12)
    g_got = torch.autograd.grad(got, (emb, aug))
    g_exp = torch.autograd.grad(exp, (emb, aug))
    for a, b in zip(g_got, g_exp):
        torch.testing.assert_close(a, b, rtol=1e-7, atol=1e-10)
    assert inner.seen["labels"].tolist() == list(range(6)) * 2
    assert inner.seen["labels"].dtype == torch.int64
    assert inner.seen["ref_labels"] is inner.seen["labels"]  # one set: self pairs dropped


def test_self_supervised_asymmetric_pairs_each_row_with_its_own_view() -> None:
    emb, aug = _views()
    emb.requires_grad_(), aug.requires_grad_()
    inner = named("ContrastiveLoss")
    got = SelfSupervisedLoss(inner, symmetric=False)(emb, aug)
    labels = torch.arange(6)
    exp = naive_pair_loss(emb, labels, aug, labels, skip_self=False)
    torch.testing.assert_close(got, exp, rtol=1e-9, atol=1e-12)
    assert inner.seen["ref_emb"] is aug
    # a copy of the labels (not the same object), so (i, i) is the positive pair of row i
    assert inner.seen["ref_labels"] is not inner.seen["labels"]
    assert inner.seen["ref_labels"].tolist() == list(range(6))
    g_got = torch.autograd.grad(got, (emb, aug))
    g_exp = torch.autograd.grad(exp, (emb, aug))
    for a, b in zip(g_got, g_exp):
        torch.testing.assert_close(a, b, rtol=1e-7, atol=1e-10)


def test_self_supervised_dtype_and_device(dtype: torch.dtype, device: torch.device) -> None:
    emb, aug = _views()
    loss_fn = SelfSupervisedLoss(named("NTXentLoss"))
    x, y = emb.to(device, dtype).requires_grad_(), aug.to(device, dtype)
    out = loss_fn(x, y)
    out.backward()
    assert out.dtype == dtype and out.device.type == device.type
    assert x.grad is not None and x.grad.dtype == dtype
    assert_close(out, loss_fn(emb.to(dtype).double(), aug.to(dtype).double()).to(dtype))


def test_self_supervised_supported_names_and_errors() -> None:
    names = SelfSupervisedLoss.supported_losses()
    assert len(names) == 13 and "MarginLoss" not in names and "NCALoss" in names
    with pytest.raises(UnsupportedLossError, match="SelfSupervisedLoss does not support"):
        SelfSupervisedLoss(named("MarginLoss"))
    with pytest.raises(Exception, match="MyTriplet"):  # subclasses with other names: rejected
        SelfSupervisedLoss(named("MyTriplet"))
    with pytest.raises(TypeError):
        SelfSupervisedLoss(named("TripletMarginLoss"), margin=0.1)  # type: ignore[call-arg]
    loss_fn = SelfSupervisedLoss(named("TripletMarginLoss"))
    emb, aug = _views()
    with pytest.raises(ValueError, match="ref_emb"):
        loss_fn(emb, aug[:5])
    with pytest.raises(ValueError, match="ref_emb"):
        loss_fn(emb, aug[:, :4])
    with pytest.raises(TypeError, match="ref_emb"):
        loss_fn(emb, aug.tolist())  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="embeddings"):
        loss_fn(emb[0], aug[0])


def test_self_supervised_nan_gives_nan() -> None:
    emb, aug = _views()
    aug[2, 1] = float("nan")
    assert torch.isnan(SelfSupervisedLoss(named("ContrastiveLoss"))(emb, aug))


def test_self_supervised_single_sample() -> None:
    emb, aug = _views(n=1)
    emb.requires_grad_()
    out = SelfSupervisedLoss(named("ContrastiveLoss"))(emb, aug)
    assert out.item() >= 0 and out.requires_grad


@pytest.mark.parametrize("name", sorted(SelfSupervisedLoss.supported_losses()))
def test_self_supervised_every_exported_supported_loss(name: str) -> None:
    if not hasattr(pml.losses, name):
        pytest.skip(f"{name} not in pml.losses yet")
    emb, aug = _views(n=8)
    emb, aug = emb.float().requires_grad_(), aug.float()
    out = SelfSupervisedLoss(getattr(pml.losses, name)())(emb, aug)
    out.backward()
    assert out.ndim == 0 and torch.isfinite(out) and torch.isfinite(emb.grad).all()


def test_seeds_self_supervised_recipe_with_triplet_margin_loss() -> None:
    if not hasattr(pml.losses, "TripletMarginLoss"):
        pytest.skip("TripletMarginLoss not in pml.losses yet")
    from pml.losses import TripletMarginLoss

    embeddings, augmented = _views(n=8)
    loss = SelfSupervisedLoss(TripletMarginLoss())
    out = loss(embeddings, augmented)
    labels = torch.arange(8).repeat(2)
    exp = TripletMarginLoss()(torch.cat([embeddings, augmented]), labels)
    torch.testing.assert_close(out, exp, rtol=1e-12, atol=0)


# ----------------------------------------------------------------------------- MultipleLosses


def test_multiple_losses_list_is_weighted_sum() -> None:
    emb, labels = _batch()
    emb.requires_grad_()
    l1, l2 = named("A", scale=1.0), named("B", scale=3.0)
    got = MultipleLosses([l1, l2], weights=[0.5, 2.0])(emb, labels)
    exp = 0.5 * l1(emb, labels) + 2.0 * l2(emb, labels)
    torch.testing.assert_close(got, exp, rtol=1e-12, atol=0)
    g_got = torch.autograd.grad(got, emb)[0]
    g_exp = torch.autograd.grad(exp, emb)[0]
    torch.testing.assert_close(g_got, g_exp, rtol=1e-12, atol=1e-15)


def test_multiple_losses_defaults_and_attributes() -> None:
    ml = MultipleLosses((named("A"), named("B")))
    assert ml.is_dict is False and isinstance(ml.losses, torch.nn.ModuleList)
    assert ml.miners is None and ml.weights == [1, 1]
    md = MultipleLosses({"x": named("A"), "y": named("B")})
    assert md.is_dict is True and isinstance(md.losses, torch.nn.ModuleDict)
    assert md.weights == {"x": 1, "y": 1}
    emb, labels = _batch()
    torch.testing.assert_close(md(emb, labels), ml(emb, labels), rtol=1e-12, atol=0)


def test_multiple_losses_indices_tuple_goes_to_every_loss() -> None:
    emb, labels = _batch()
    l1, l2 = named("A"), named("B")
    t = (
        torch.tensor([0, 1]),
        torch.tensor([3, 4]),
        torch.tensor([0, 1, 2]),
        torch.tensor([1, 2, 3]),
    )
    MultipleLosses([l1, l2])(emb, labels, t)
    # the same tensors, in a tuple marked as range-checked (the losses do not check it again)
    for seen in (l1.seen["indices_tuple"], l2.seen["indices_tuple"]):
        assert isinstance(seen, tuple) and all(x is y for x, y in zip(seen, t, strict=True))


def test_multiple_losses_dict_with_miners() -> None:
    emb, labels = _batch()
    emb.requires_grad_()
    miner = _FirstPairsMiner(k=3)
    la, lb = named("A"), named("B", scale=2.0)
    ml = MultipleLosses({"a": la, "b": lb}, miners={"b": miner}, weights={"a": 1.0, "b": 0.1})
    got = ml(emb, labels)
    assert len(miner.calls) == 1
    assert miner.calls[0][0] is emb and miner.calls[0][1] is labels and miner.calls[0][2] is None
    assert la.seen["indices_tuple"] is None
    mined = lb.seen["indices_tuple"]
    assert [len(t) for t in mined] == [3, 3, 3, 3]
    exp = la(emb, labels) + 0.1 * lb(emb, labels, mined)
    torch.testing.assert_close(got, exp, rtol=1e-12, atol=0)


def test_multiple_losses_list_miners_with_none() -> None:
    emb, labels = _batch()
    miner = _FirstPairsMiner(k=2)
    la, lb = named("A"), named("B")
    ml = MultipleLosses([la, lb], miners=[None, miner])
    assert isinstance(ml.miners, torch.nn.ModuleList) and ml.miners[0] is None
    ml(emb, labels)
    assert la.seen["indices_tuple"] is None and len(lb.seen["indices_tuple"][0]) == 2


def test_multiple_losses_parameters_are_registered() -> None:
    la = named("A")
    la.W = torch.nn.Parameter(torch.zeros(2))
    ml = MultipleLosses({"arcface": la, "b": named("B")}, miners={"arcface": _FirstPairsMiner(1)})
    assert "losses.arcface.W" in dict(ml.named_parameters())


def test_multiple_losses_dtype_and_device(dtype: torch.dtype, device: torch.device) -> None:
    emb, labels = _batch()
    ml = MultipleLosses([named("A"), named("B", scale=2.0)], weights=[1, 0.5])
    x = emb.to(device, dtype).requires_grad_()
    out = ml(x, labels.to(device))
    out.backward()
    assert out.dtype == dtype and out.device.type == device.type and x.grad.dtype == dtype
    assert_close(out, ml(emb.to(dtype).double(), labels).to(dtype))


def test_multiple_losses_no_losses_gives_graph_connected_zero() -> None:
    emb, labels = _batch()
    emb.requires_grad_()
    out = MultipleLosses([])(emb, labels)
    out.backward()
    assert out.item() == 0 and emb.grad is not None and emb.grad.abs().sum() == 0


def test_multiple_losses_container_rules() -> None:
    a, b = named("A"), named("B")
    with pytest.raises(TypeError, match="losses"):
        MultipleLosses(a)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match="miners"):
        MultipleLosses([a, b], miners={"x": None})  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match="miners"):
        MultipleLosses([a, b], miners=[None])
    with pytest.raises(AssertionError, match="miners"):
        MultipleLosses({"a": a}, miners={"zzz": _FirstPairsMiner(1)})
    with pytest.raises(InvalidArgumentError, match="miners"):
        MultipleLosses({"a": a}, miners=[None])
    with pytest.raises(InvalidArgumentError, match="weights"):
        MultipleLosses([a, b], weights=[1])
    with pytest.raises(InvalidArgumentError, match="weights"):
        MultipleLosses([a, b], weights={"a": 1, "b": 1})
    with pytest.raises(InvalidArgumentError, match="weights"):
        MultipleLosses({"a": a, "b": b}, weights={"a": 1})
    with pytest.raises(InvalidArgumentError, match="weights"):
        MultipleLosses({"a": a, "b": b}, weights=[1, 1])
    with pytest.raises(InvalidArgumentError, match="losses"):
        MultipleLosses([a, None])  # type: ignore[list-item]
    ml = MultipleLosses([a, b], miners=[None, _FirstPairsMiner(1)])
    emb, labels = _batch()
    t = (labels[:1], labels[:1], labels[:1])
    with pytest.raises(InvalidArgumentError, match="indices_tuple"):
        ml(emb, labels, t)


def test_multiple_losses_with_real_losses() -> None:
    needed = ("TripletMarginLoss", "ContrastiveLoss")
    if not all(hasattr(pml.losses, n) for n in needed):
        pytest.skip(f"{needed} not all in pml.losses yet")
    from pml.losses import ContrastiveLoss, TripletMarginLoss

    emb, labels = _batch(n=12)
    ml = MultipleLosses([TripletMarginLoss(margin=0.1), ContrastiveLoss()], weights=[1.0, 0.5])
    exp = TripletMarginLoss(margin=0.1)(emb, labels) + 0.5 * ContrastiveLoss()(emb, labels)
    torch.testing.assert_close(ml(emb, labels), exp, rtol=1e-12, atol=0)
