"""Labels of every dtype: losses that compare labels accept them all, MarginLoss indexes.

Bool labels are two classes (``False``/``True``); every loss must give what it gives for
the int64 labels 0/1, on the dense and on the gathered (large batch) paths.
"""

from __future__ import annotations

import inspect

import pytest
import torch

import pml.losses as L
from pml.losses import BaseMetricLossFunction, CrossBatchMemory, MarginLoss
from pml.losses.functional import _softmax_ops

VALUES = torch.tensor([0, 0, 1, 1, 0, 1, 0, 1, 1, 0])

_NOT_LOSSES = {
    "BaseMetricLossFunction",
    "GenericPairLoss",
    "CrossBatchMemory",
    "DistributedLossWrapper",
    "MultipleLosses",
    "SelfSupervisedLoss",
    "VICRegLoss",  # takes no labels
}
LOSS_NAMES = sorted(
    name
    for name in L.__all__
    if name not in _NOT_LOSSES
    and inspect.isclass(getattr(L, name))
    and issubclass(getattr(L, name), BaseMetricLossFunction)
)


#: values of required constructor arguments (losses that learn per-class vectors; D = 4)
REQUIRED = {
    "num_classes": 3,
    "embedding_size": 4,
    "descriptors_dim": 4,
    "l": 4,
    "margin": 0.4,
    "Tn": 1.0,
    "class_counts": [3, 2, 1],  # DynamicArcFaceLoss (3 classes)
}


def make(name):
    """A factory of ``name`` with the arguments it cannot go without (from :data:`REQUIRED`)."""
    cls = getattr(L, name)
    needed = {
        p.name: REQUIRED[p.name]
        for p in list(inspect.signature(cls.__init__).parameters.values())[1:]
        if p.default is inspect.Parameter.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    }
    return lambda: cls(**needed)


def data(n: int = 10, d: int = 4, seed: int = 0, dtype: torch.dtype = torch.float64):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g, dtype=dtype)


def run(make_loss, labels, seed=7):
    torch.manual_seed(seed)
    emb = data().requires_grad_()
    loss = make_loss()(emb, labels)
    loss.backward()
    return loss.detach(), emb.grad


def test_every_loss_is_listed():
    assert len(LOSS_NAMES) >= 19 and "InstanceLoss" in LOSS_NAMES and "MarginLoss" in LOSS_NAMES


@pytest.mark.parametrize("gathered", [False, True], ids=["dense", "gathered"])
@pytest.mark.parametrize("name", LOSS_NAMES)
def test_bool_labels_work_in_every_loss(name, gathered, monkeypatch):
    # seven losses raised NotImplementedError ("searchsorted" for Bool) before the fix
    if name == "ManifoldLoss":
        pytest.skip("ManifoldLoss takes no labels")
    if gathered:
        monkeypatch.setattr(_softmax_ops, "_DENSE_CELLS", 0)
    cls = make(name)
    expected, expected_grad = run(cls, VALUES)
    got, grad = run(cls, VALUES.bool())
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(grad, expected_grad, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("inner", ["TripletMarginLoss", "NTXentLoss", "NCALoss"])
def test_bool_labels_work_in_cross_batch_memory(inner):
    def make():
        return CrossBatchMemory(getattr(L, inner)(), embedding_size=4, memory_size=16)

    expected, _ = run(make, VALUES)
    got, _ = run(make, VALUES.bool())
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("name", ["TripletMarginLoss", "NTXentLoss", "NCALoss", "MarginLoss"])
@pytest.mark.parametrize(
    "dtype", [torch.uint8, torch.int8, torch.int16, torch.int32, torch.float32, torch.float64]
)
def test_losses_that_compare_labels_accept_every_dtype(name, dtype):
    values = torch.tensor([0, 0, 1, 1, 2, 1, 2, 0, 2, 1])
    expected, _ = run(getattr(L, name), values)
    got, _ = run(getattr(L, name), values.to(dtype))
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-14)


def test_mixed_label_dtypes_do_not_wrap_around():
    # int64 labels against int8 reference labels: 300 is not 44
    emb, ref = data(), data(6, seed=1)
    labels = torch.tensor([300, 300, 1, 1, 2, 2, 44, 44, 1, 2])
    ref_labels = torch.tensor([44, 1, 1, 2, 2, 44])
    for name in ["TripletMarginLoss", "NTXentLoss", "NCALoss"]:
        expected = getattr(L, name)()(emb, labels, ref_emb=ref, ref_labels=ref_labels)
        got = getattr(L, name)()(emb, labels, ref_emb=ref, ref_labels=ref_labels.to(torch.int8))
        torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-14)


# --------------------------------------------------------------------------- MarginLoss


def margin_per_class(labels, triplets_per_anchor="all"):
    torch.manual_seed(3)
    emb = data(12, 4, seed=2).requires_grad_()
    loss_fn = MarginLoss(
        num_classes=3, learn_beta=True, nu=0.1, triplets_per_anchor=triplets_per_anchor
    )
    with torch.no_grad():
        loss_fn.beta.copy_(torch.tensor([0.9, 1.2, 1.5]))
    loss = loss_fn(emb, labels)
    loss.backward()
    return loss.detach(), emb.grad, loss_fn.beta.grad


CLASS_LABELS = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1, 2, 2, 1, 0])


@pytest.mark.parametrize("triplets_per_anchor", ["all", 5])
@pytest.mark.parametrize("dtype", [torch.uint8, torch.int8, torch.int16, torch.int32])
def test_margin_loss_per_class_beta_with_small_integer_labels(dtype, triplets_per_anchor):
    # uint8 labels were read as a mask (a wrong value or an IndexError), int8/int16 raised
    # a bare IndexError
    expected = margin_per_class(CLASS_LABELS, triplets_per_anchor)
    got = margin_per_class(CLASS_LABELS.to(dtype), triplets_per_anchor)
    for x, y in zip(got, expected, strict=True):
        torch.testing.assert_close(x, y, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("triplets_per_anchor", ["all", 5])
def test_margin_loss_per_class_beta_with_bool_labels(triplets_per_anchor):
    values = (CLASS_LABELS > 0).long()
    expected = margin_per_class(values, triplets_per_anchor)
    got = margin_per_class(values.bool(), triplets_per_anchor)
    for x, y in zip(got, expected, strict=True):
        torch.testing.assert_close(x, y, rtol=1e-12, atol=1e-14)
    assert got[2][2] == 0  # beta of class 2 is never used


@pytest.mark.parametrize("triplets_per_anchor", ["all", 5])
@pytest.mark.parametrize("dtype", [torch.float16, torch.float32, torch.float64])
def test_margin_loss_per_class_beta_rejects_float_labels(dtype, triplets_per_anchor):
    loss_fn = MarginLoss(num_classes=3, triplets_per_anchor=triplets_per_anchor)
    with pytest.raises(ValueError, match="labels must be integer"):
        loss_fn(data(12), CLASS_LABELS.to(dtype))


def test_margin_loss_per_class_uint8_labels_equal_int64_when_the_mask_shape_fits():
    # the silent case: as many labels as classes, so uint8 labels made a valid mask
    labels = torch.tensor([0, 1, 0, 1, 2, 2, 0, 1])
    emb = data(8, 4, seed=5)

    def value(lab):
        loss_fn = MarginLoss(num_classes=8, learn_beta=True, nu=0.1)
        with torch.no_grad():
            loss_fn.beta.copy_(torch.linspace(0.6, 1.6, 8))
        torch.manual_seed(0)
        return loss_fn(emb, lab)

    torch.testing.assert_close(value(labels.to(torch.uint8)), value(labels), rtol=1e-12, atol=0)
