"""pml.core.testing helpers: the float64 gradcheck wrapper."""

from __future__ import annotations

import pytest
import torch
from torch.autograd.gradcheck import GradcheckError

from pml.core.testing import gradcheck


def test_gradcheck_casts_float_inputs_to_float64_and_passes_the_rest():
    seen = {}

    def fn(x, mask, scale):
        seen.update(dtype=x.dtype, grad=x.requires_grad, mask=mask.dtype, scale=scale)
        return (x * mask).sum(dim=1) * scale

    x = torch.randn(3, 4, dtype=torch.float32)
    assert gradcheck(fn, (x, torch.ones(3, 4, dtype=torch.bool), 2.0))
    assert seen == {"dtype": torch.float64, "grad": True, "mask": torch.bool, "scale": 2.0}
    assert x.dtype == torch.float32 and not x.requires_grad  # the caller's tensor is untouched


def test_gradcheck_accepts_one_tensor_and_raises_on_a_wrong_gradient():
    assert gradcheck(torch.tanh, torch.randn(5))

    class WrongGrad(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            return x * 2

        @staticmethod
        def backward(ctx, grad):
            return grad

    with pytest.raises(GradcheckError):
        gradcheck(WrongGrad.apply, torch.randn(4))
