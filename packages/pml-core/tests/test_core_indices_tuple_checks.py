"""check_indices_tuple: allowed index dtypes and the range check (anchors < n, others < m)."""

from __future__ import annotations

import pytest
import torch

from pml.core.validation import check_indices_tuple


@pytest.mark.parametrize("dtype", [torch.int8, torch.int16, torch.uint8, torch.bool])
def test_small_integer_dtype_in_indices_tuple_is_rejected(dtype: torch.dtype) -> None:
    t = torch.tensor([0, 1])
    with pytest.raises(TypeError, match=r"indices_tuple\[1\] must be an integer tensor"):
        check_indices_tuple((t, t.to(dtype), t))


@pytest.mark.parametrize("dtype", [torch.int32, torch.int64])
def test_int32_and_int64_indices_are_accepted(dtype: torch.dtype) -> None:
    t = torch.tensor([0, 1], dtype=dtype)
    check_indices_tuple((t, t, t), n=2, m=2, check_bounds=True)
    check_indices_tuple((t, t, t[:1], t[:1]), n=2, m=2, check_bounds=True)


def test_negative_index_in_indices_tuple_is_rejected() -> None:
    t = torch.tensor([0, 1])
    for pos in range(4):
        bad = [t, t, t, t]
        bad[pos] = torch.tensor([0, -1])
        with pytest.raises(ValueError, match=rf"indices_tuple\[{pos}\] has indices outside"):
            check_indices_tuple(tuple(bad), n=None, m=None, check_bounds=True)


def test_indices_tuple_bounds_are_n_for_anchors_and_m_for_the_others() -> None:
    a, r = torch.tensor([0, 2]), torch.tensor([0, 4])
    check_indices_tuple((a, r, r), n=3, m=5, check_bounds=True)
    check_indices_tuple((a, r, a, r), n=3, m=5, check_bounds=True)
    with pytest.raises(ValueError, match=r"indices_tuple\[1\] .*\[0, 4\) .*got range \[0, 4\]"):
        check_indices_tuple((a, r, a, r), n=3, m=4, check_bounds=True)
    with pytest.raises(ValueError, match=r"indices_tuple\[0\] .*\[0, 2\) .*got range \[0, 2\]"):
        check_indices_tuple((a, r, r), n=2, m=5, check_bounds=True)
    with pytest.raises(ValueError, match=r"indices_tuple\[2\] .*\[0, 2\)"):
        check_indices_tuple((a[:1], r[:1], a, r), n=2, m=5, check_bounds=True)
    with pytest.raises(ValueError, match=r"indices_tuple\[3\] .*\[0, 4\) \(rows of ref_emb"):
        check_indices_tuple((a, a, a, r), n=3, m=4, check_bounds=True)
    check_indices_tuple((a, r + 100, r), n=3, m=None, check_bounds=True)  # no upper bound
    check_indices_tuple((a, a, a), n=1, m=1)  # the range is checked only on request


def test_empty_indices_tuple_passes_the_range_check() -> None:
    e = torch.empty(0, dtype=torch.long)
    check_indices_tuple((e, e, e), n=0, m=0, check_bounds=True)
    check_indices_tuple((torch.tensor([0]), torch.tensor([0]), e, e), n=1, m=1, check_bounds=True)
