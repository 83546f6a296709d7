"""Margin-softmax classification losses: forward + backward of the loss and its weight matrix.

Both libraries get the same embeddings, labels and initial ``W`` (seeded ``normal_`` init in
the same shape). Rows at N = 256 and 1024 use C = N/8 classes and D = 128; the large rows use
C = 100,000 classes, D = 512, N = 256 (the face-recognition setting: one N x C logit matrix,
no one-hot). SubCenterArcFaceLoss keeps its default ``sub_centers=3`` there: ``W`` is
512 x 300,000 (614 MB, and as much again for its gradient) and the cosines are N x 300,000
before the maximum over sub-centers, so its peak is about three times ArcFace's. Shared
set-up (one thread): ``benchmarks/_loss_cases.py``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from benchmarks._loss_cases import libs

TITLE = (
    "Margin-softmax classification losses: forward + backward incl. the W gradient "
    "(1 thread; labels uniform over C classes)"
)


def make_class_step(
    lib: str, name: str, n: int, d: int, c: int, **kwargs: Any
) -> Callable[[], None]:
    """Forward + backward of ``name(num_classes=c, embedding_size=d, **kwargs)``."""
    losses, _ = libs(lib)
    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(0)
    emb = torch.randn(n, d, generator=g).requires_grad_()
    labels = torch.randint(0, c, (n,), generator=g)
    torch.manual_seed(0)
    loss_fn = getattr(losses, name)(num_classes=c, embedding_size=d, **kwargs)

    def step() -> None:
        loss_fn(emb, labels).backward()
        emb.grad = None
        loss_fn.W.grad = None

    return step


def _factories(name: str, **kwargs: Any) -> tuple[Callable, Callable]:
    def ours(n: int, d: int, c: int) -> Callable[[], None]:
        return make_class_step("pml", name, n, d, c, **kwargs)

    def ref(n: int, d: int, c: int) -> Callable[[], None]:
        return make_class_step("ref", name, n, d, c, **kwargs)

    return ours, ref


large_margin_pml, large_margin_ref = _factories("LargeMarginSoftmaxLoss")
sphereface_pml, sphereface_ref = _factories("SphereFaceLoss")
arcface_pml, arcface_ref = _factories("ArcFaceLoss")
cosface_pml, cosface_ref = _factories("CosFaceLoss")
subcenter_pml, subcenter_ref = _factories("SubCenterArcFaceLoss")
normalized_softmax_pml, normalized_softmax_ref = _factories("NormalizedSoftmaxLoss")


def _case(name: str, prefix: str, n: int, d: int, c: int, **extra: Any) -> dict:
    return {
        "name": name,
        "params": {"n": n, "d": d, "c": c},
        "pml": f"{__name__}:{prefix}_pml",
        "ref": f"{__name__}:{prefix}_ref",
        **extra,
    }


_CLASSES = [
    ("LargeMarginSoftmaxLoss", "large_margin"),
    ("SphereFaceLoss", "sphereface"),
    ("ArcFaceLoss", "arcface"),
    ("CosFaceLoss", "cosface"),
    ("SubCenterArcFaceLoss", "subcenter"),
    ("NormalizedSoftmaxLoss", "normalized_softmax"),
]
_LARGE = {"ArcFaceLoss", "CosFaceLoss", "SubCenterArcFaceLoss", "NormalizedSoftmaxLoss"}

SUITE = [
    *(
        _case(name, prefix, n, 128, n // 8, repeats=9, rounds=3)
        for name, prefix in _CLASSES
        for n in (256, 1024)
    ),
    *(
        _case(f"{name} 100k classes", prefix, 256, 512, 100_000, repeats=3)
        for name, prefix in _CLASSES
        if name in _LARGE
    ),
]
