"""label_groups / same_label_cells / masked_logsumexp against naive definitions."""

import pytest
import torch

from pml.core.functional import logsumexp, masked_logsumexp
from pml.core.indices import label_groups, same_label_cells


@pytest.mark.parametrize(
    "dtypes", [(torch.int64, torch.int64), (torch.bool, torch.bool), (torch.int8, torch.int64)]
)
def test_same_label_cells_equal_where_of_the_equality_mask(dtypes):
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 2 if dtypes[0] == torch.bool else 5, (13,), generator=g)
    ref = torch.randint(0, 2 if dtypes[1] == torch.bool else 5, (17,), generator=g)
    labels, ref = labels.to(dtypes[0]), ref.to(dtypes[1])
    rows, cols = same_label_cells(labels, ref)
    want = torch.where(labels.long()[:, None] == ref.long()[None, :])
    assert torch.equal(rows, want[0]) and torch.equal(cols, want[1])


def test_label_groups_list_each_labels_reference_rows_in_order():
    labels, ref = torch.tensor([3, 1, 7]), torch.tensor([1, 3, 1, 3, 3])
    order, start, count = label_groups(labels, ref)
    got = [order[s : s + c].tolist() for s, c in zip(start.tolist(), count.tolist(), strict=True)]
    assert got == [[1, 3, 4], [0, 2], []]


@pytest.mark.parametrize("add_one", [False, True])
@pytest.mark.parametrize("dim", [0, 1])
def test_masked_logsumexp_matches_naive(add_one, dim):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(6, 5, generator=g, dtype=torch.float64)
    keep = torch.rand(6, 5, generator=g) > 0.5
    keep[2] = False
    keep[:, 3] = False
    got = masked_logsumexp(x, keep, dim, add_one=add_one, empty=-7.0)
    for i in range(x.shape[1 - dim]):
        vals = (x[i] if dim == 1 else x[:, i])[keep[i] if dim == 1 else keep[:, i]]
        if add_one:
            vals = torch.cat([vals, vals.new_zeros(1)])
        want = torch.logsumexp(vals, 0) if len(vals) else torch.tensor(-7.0, dtype=x.dtype)
        torch.testing.assert_close(got[i], want)


def test_masked_logsumexp_gradients_are_finite_for_empty_slices():
    x = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    keep = torch.tensor([[True, False, True, False], [False] * 4, [True] * 4])
    masked_logsumexp(x, keep, empty=float("-inf")).clamp_min(-1e3).sum().backward()
    assert torch.isfinite(x.grad).all() and (x.grad[1] == 0).all()
    assert torch.autograd.gradcheck(lambda t: masked_logsumexp(t, keep, add_one=True), (x,))


def test_compat_logsumexp_is_the_masked_one_with_kept_dim():
    x = torch.tensor([[1.0, 2.0, 3.0], [0.5, 0.1, 0.2]])
    m = torch.tensor([[True, False, True], [False, False, False]])
    torch.testing.assert_close(logsumexp(x, m), masked_logsumexp(x, m, add_one=True)[:, None])


@pytest.mark.parametrize("with_ref", [False, True])
def test_nan_float_labels_do_not_hide_the_other_labels_cells(with_ref):
    # a NaN label (equal to nothing) broke the binary search: no cell came back at all
    labels = torch.tensor([1.0, float("nan"), 1.0, float("nan"), 2.0, float("inf"), 2.0])
    ref = torch.tensor([float("inf"), 2.0, float("nan"), 1.0, float("nan")]) if with_ref else None
    rows, cols = same_label_cells(labels, ref)
    other = labels if ref is None else ref
    want = torch.where(labels.unsqueeze(1) == other.unsqueeze(0))
    assert torch.equal(rows, want[0]) and torch.equal(cols, want[1])
