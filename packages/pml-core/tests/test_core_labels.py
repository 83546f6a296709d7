"""Labels of every dtype: sortable labels for grouping, labels used as indices."""

from __future__ import annotations

import pytest
import torch

from pml.core.indices import get_random_triplet_indices, sortable_labels
from pml.core.validation import check_index_labels

INT_DTYPES = [torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8]


# --------------------------------------------------------------------------- sortable_labels


LABEL_DTYPES = [
    *(torch.bool, torch.uint8, torch.int8, torch.int64, torch.uint16, torch.uint32, torch.uint64),
    *(torch.float16, torch.bfloat16, torch.float32, torch.float64),
]


@pytest.mark.parametrize("dtype", LABEL_DTYPES)
def test_sortable_labels_keep_equality_and_order(dtype):
    g = torch.Generator().manual_seed(0)
    values = torch.randint(0, 2 if dtype == torch.bool else 50, (40,), generator=g)
    labels = values.to(dtype)
    lab, ref = sortable_labels(labels)
    assert lab is ref
    assert lab.dtype != torch.bool
    sorted_lab = torch.sort(lab).values
    torch.searchsorted(sorted_lab, lab)  # supported for the returned dtype
    assert torch.equal(lab.unsqueeze(1) == lab.unsqueeze(0), values.unsqueeze(1) == values)
    assert torch.equal(torch.argsort(lab, stable=True), torch.argsort(values, stable=True))


def test_sortable_labels_uint64_keeps_the_order_of_large_values():
    big = torch.tensor([2**63 + 5, 3, 2**63, 0, 2**64 - 1], dtype=torch.uint64)
    lab, _ = sortable_labels(big)
    assert lab.dtype == torch.int64
    assert torch.argsort(lab).tolist() == [3, 1, 2, 0, 4]


def test_sortable_labels_of_two_dtypes_compare_like_the_values():
    # int64 300 must not meet int8 44 (300 wraps to 44 in int8)
    lab, ref = sortable_labels(torch.tensor([300, 1]), torch.tensor([44, 1], dtype=torch.int8))
    assert lab.dtype == ref.dtype == torch.int64
    assert (lab.unsqueeze(1) == ref.unsqueeze(0)).tolist() == [[False, False], [False, True]]
    lab, ref = sortable_labels(torch.tensor([True, False]), torch.tensor([1, 0, 2]))
    assert lab.tolist() == [1, 0] and ref.tolist() == [1, 0, 2]


def test_weighted_random_triplets_with_bool_labels_equal_the_int_labels_draws():
    # bool labels crashed in searchsorted (NotImplementedError) before the fix
    g = torch.Generator().manual_seed(3)
    values = torch.randint(0, 2, (12,), generator=g)
    weights = torch.rand(12, 12, generator=g)
    torch.manual_seed(5)
    expected = get_random_triplet_indices(values, weights=weights)
    torch.manual_seed(5)
    got = get_random_triplet_indices(values.bool(), weights=weights)
    assert all(torch.equal(x, y) for x, y in zip(got, expected, strict=True))
    assert len(got[0]) > 0


# --------------------------------------------------------------------------- check_index_labels


@pytest.mark.parametrize("dtype", INT_DTYPES)
def test_check_index_labels_converts_integer_labels_to_int64(dtype):
    labels = torch.tensor([0, 2, 1, 2]).to(dtype)
    out = check_index_labels(labels)
    assert out.dtype == torch.int64 and out.tolist() == [0, 2, 1, 2]
    # uint8 labels index like int64 ones, never as a mask
    assert torch.arange(10.0, 13.0)[out].tolist() == [10.0, 12.0, 11.0, 12.0]


def test_check_index_labels_bool_labels_are_classes_0_and_1():
    out = check_index_labels(torch.tensor([True, False, True]), num_classes=2)
    assert out.dtype == torch.int64 and out.tolist() == [1, 0, 1]


def test_check_index_labels_int64_is_returned_as_is():
    labels = torch.tensor([3, 1])
    assert check_index_labels(labels) is labels


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32, torch.float64, torch.complex64])
def test_check_index_labels_rejects_non_integral_labels(dtype):
    with pytest.raises(ValueError, match=r"labels must be integer.*float|labels must be integer"):
        check_index_labels(torch.tensor([0.0, 1.0]).to(dtype))
    with pytest.raises(ValueError, match="ref_labels"):
        check_index_labels(torch.tensor([0.5]).to(dtype), name="ref_labels")


def test_check_index_labels_rejects_non_tensors():
    with pytest.raises(TypeError, match="labels must be a torch.Tensor"):
        check_index_labels([0, 1])


def test_check_index_labels_range():
    assert check_index_labels(torch.tensor([0, 4]), num_classes=5).tolist() == [0, 4]
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 5\); got \[0, 5\]"):
        check_index_labels(torch.tensor([0, 5]), num_classes=5)
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 3\); got \[-1, 2\]"):
        check_index_labels(torch.tensor([-1, 2], dtype=torch.int8), num_classes=3)
    empty = check_index_labels(torch.tensor([], dtype=torch.uint8), num_classes=3)
    assert empty.dtype == torch.int64 and len(empty) == 0
