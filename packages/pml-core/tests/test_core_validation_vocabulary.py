"""The shared validation vocabulary: wrong type -> TypeError, wrong value -> ValueError."""

import numpy as np
import pytest
import torch

from pml.core.validation import check_bool, check_int, check_option, check_real, check_type


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


@pytest.mark.parametrize("value", [4.0, np.float32(4.0), torch.tensor(4.0), 4, np.int64(4)])
def test_check_int_integral_float_takes_integral_values(value):
    out = check_int("m", value, min=1, integral_float=True)
    assert out == 4 and type(out) is int


@pytest.mark.parametrize("bad", [2.7, float("nan"), float("inf"), True, "4", torch.tensor(2.5)])
def test_check_int_integral_float_still_rejects_non_integral_values(bad):
    with pytest.raises(TypeError, match="m must be an int"):
        check_int("m", bad, integral_float=True)


def test_check_option_returns_the_value():
    assert check_option("mode", "hard", ("all", "hard")) == "hard"
    with pytest.raises(ValueError, match=r"mode must be one of \['all', 'hard'\]; got 'x'"):
        check_option("mode", "x", ("all", "hard"))


def test_check_callable():
    from pml.core.validation import check_callable

    assert check_callable("knn_func", None) is None
    assert check_callable("knn_func", len) is len
    with pytest.raises(TypeError, match=r"^knn_func must be callable or None; got str 'x'"):
        check_callable("knn_func", "x")
    with pytest.raises(TypeError, match=r"^hook must be callable; got NoneType"):
        check_callable("hook", None, allow_none=False)


def test_check_device():
    from pml.core.validation import check_device

    assert check_device("device", "cpu") == torch.device("cpu")
    assert check_device("device", torch.device("meta")) == torch.device("meta")
    want = "cuda" if torch.cuda.is_available() else "cpu"
    assert check_device("device", None).type == want
    with pytest.raises(ValueError, match=r"^device must be a torch.device, .*got 'gpu'"):
        check_device("device", "gpu")
    with pytest.raises(ValueError, match=r"^device must be .*got -1"):
        check_device("device", -1)
    for bad in (3.5, True, [0]):
        with pytest.raises(TypeError, match=r"^data_device must be"):
            check_device("data_device", bad)
