"""The shared validation vocabulary: wrong type -> TypeError, wrong value -> ValueError."""

import numpy as np
import pytest
import torch

from pml.core.validation import check_bool, check_int, check_real, check_type


def test_check_int_accepts_integers_and_returns_int():
    assert check_int("m", 3) == 3
    assert check_int("m", np.int64(5), min=1) == 5
    assert check_int("m", torch.tensor(7)) == 7
    assert check_int("m", None, allow_none=True) is None


@pytest.mark.parametrize("bad", [True, 2.7, "3", None, torch.tensor(2.0)])
def test_check_int_rejects_non_integers(bad):
    with pytest.raises(TypeError, match="m must be an int"):
        check_int("m", bad)


def test_check_int_range():
    with pytest.raises(ValueError, match=r"m must be >= 1; got 0"):
        check_int("m", 0, min=1)
    with pytest.raises(ValueError, match=r"k must be >= 1 and <= 3; got 4"):
        check_int("k", 4, min=1, max=3)


def test_check_real():
    assert check_real("t", 1) == 1.0
    assert check_real("t", np.float32(0.5)) == 0.5
    with pytest.raises(TypeError, match="t must be a real number"):
        check_real("t", "x")
    with pytest.raises(TypeError, match="t must be a real number"):
        check_real("t", False)
    with pytest.raises(ValueError, match="t must be a number; got nan"):
        check_real("t", float("nan"))
    with pytest.raises(ValueError, match=r"t must be > 0; got 0.0"):
        check_real("t", 0, min=0, min_open=True)
    with pytest.raises(ValueError, match=r"p must be >= 0 and < 1; got 1.0"):
        check_real("p", 1, min=0, max=1, max_open=True)


def test_check_bool_and_type():
    assert check_bool("flag", np.bool_(True)) is True
    with pytest.raises(TypeError, match="flag must be a bool; got int"):
        check_bool("flag", 1)
    assert check_type("x", 1, (int, float)) == 1
    with pytest.raises(TypeError, match="x must be int or float; got str"):
        check_type("x", "a", (int, float))
