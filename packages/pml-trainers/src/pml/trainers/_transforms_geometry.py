"""Geometric image transforms without torchvision: resize, crops and flips.

PIL images are processed with Pillow, float tensors ``(..., C, H, W)`` with
``torch.nn.functional``; random transforms draw from the torch RNG (the global one, or
``generator``). :mod:`pml.trainers._transforms` has the pipeline and tensor conversions.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Any, Literal

import torch
import torch.nn.functional as F
from PIL import Image

from pml.core.validation import check_int, check_real, check_type
from pml.trainers._transforms import _check_float_image

__all__ = ["CenterCrop", "RandomHorizontalFlip", "RandomResizedCrop", "Resize"]

Interpolation = Literal["nearest", "bilinear", "bicubic"]
_PIL_RESAMPLE = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
}


class Resize:
    """Resize to ``size``: an int sets the shorter side (aspect kept), ``(h, w)`` both.

    With an int ``size``, the longer side becomes ``int(size * long / short)``.

    Args:
        size: the shorter side's length, or ``(height, width)``.
        interpolation: ``"nearest"``, ``"bilinear"`` or ``"bicubic"`` (antialiased when
            shrinking, on PIL images and tensors alike).

    Example:
        >>> Resize(4)(Image.new("RGB", (10, 5))).size  # PIL sizes are (width, height)
        (8, 4)
        >>> Resize((2, 3))(torch.zeros(3, 4, 4)).shape
        torch.Size([3, 2, 3])
    """

    def __init__(
        self, size: int | Sequence[int], interpolation: Interpolation = "bilinear"
    ) -> None:
        self.size = _size("size", size)
        self.interpolation = _interpolation(interpolation)

    def __call__(self, img: Image.Image | torch.Tensor) -> Image.Image | torch.Tensor:
        height, width = _image_hw(img)
        if isinstance(self.size, int):
            short, long = sorted((height, width))
            new_long = int(self.size * long / short)
            new_h, new_w = (self.size, new_long) if height <= width else (new_long, self.size)
        else:
            new_h, new_w = self.size
        return _resize(img, (new_h, new_w), self.interpolation)

    def __repr__(self) -> str:
        return f"Resize(size={self.size}, interpolation={self.interpolation!r})"


class CenterCrop:
    """Crop the centre ``size`` region; an image smaller than ``size`` is padded with zeros.

    Args:
        size: the side of a square crop, or ``(height, width)``.

    Example:
        >>> CenterCrop(2)(torch.arange(16.0).view(1, 4, 4)).tolist()
        [[[5.0, 6.0], [9.0, 10.0]]]
    """

    def __init__(self, size: int | Sequence[int]) -> None:
        s = _size("size", size)
        self.size = (s, s) if isinstance(s, int) else s

    def __call__(self, img: Image.Image | torch.Tensor) -> Image.Image | torch.Tensor:
        height, width = _image_hw(img)
        crop_h, crop_w = self.size
        top = round((height - crop_h) / 2)
        left = round((width - crop_w) / 2)
        return _crop(img, top, left, crop_h, crop_w)

    def __repr__(self) -> str:
        return f"CenterCrop(size={self.size})"


class RandomResizedCrop:
    """Crop a random region (area fraction ``scale``, aspect ratio ``ratio``), resize it.

    The region is drawn as in the Inception papers: up to 10 tries of an area in
    ``scale * H * W`` and a log-uniform aspect ratio in ``ratio``; if none fits, the largest
    centred region with a ratio clamped to ``ratio``. Draws come from the torch RNG
    (``generator`` or the global one).

    Args:
        size: the output side (square), or ``(height, width)``.
        scale: the range of the region's area as a fraction of the image's.
        ratio: the range of the region's width / height.
        interpolation: ``"nearest"``, ``"bilinear"`` or ``"bicubic"``.
        generator: a ``torch.Generator`` to draw from; None uses the global RNG.

    Example:
        >>> _ = torch.manual_seed(0)
        >>> RandomResizedCrop(4)(Image.new("RGB", (20, 10))).size
        (4, 4)
    """

    def __init__(
        self,
        size: int | Sequence[int],
        scale: tuple[float, float] = (0.08, 1.0),
        ratio: tuple[float, float] = (3.0 / 4.0, 4.0 / 3.0),
        interpolation: Interpolation = "bilinear",
        generator: torch.Generator | None = None,
    ) -> None:
        s = _size("size", size)
        self.size = (s, s) if isinstance(s, int) else s
        self.scale = _range_pair("scale", scale)
        self.ratio = _range_pair("ratio", ratio)
        self.interpolation = _interpolation(interpolation)
        self.generator = check_type("generator", generator, torch.Generator, allow_none=True)

    def get_params(self, height: int, width: int) -> tuple[int, int, int, int]:
        """Draw a region ``(top, left, height, width)`` of a ``height x width`` image."""
        area = height * width
        log_lo, log_hi = math.log(self.ratio[0]), math.log(self.ratio[1])
        for _ in range(10):
            u = torch.rand(2, generator=self.generator).tolist()
            target_area = area * (self.scale[0] + u[0] * (self.scale[1] - self.scale[0]))
            aspect = math.exp(log_lo + u[1] * (log_hi - log_lo))
            w = round(math.sqrt(target_area * aspect))
            h = round(math.sqrt(target_area / aspect))
            if 0 < w <= width and 0 < h <= height:
                top = int(torch.randint(0, height - h + 1, (1,), generator=self.generator))
                left = int(torch.randint(0, width - w + 1, (1,), generator=self.generator))
                return top, left, h, w
        in_ratio = width / height
        if in_ratio < self.ratio[0]:
            w, h = width, round(width / self.ratio[0])
        elif in_ratio > self.ratio[1]:
            h, w = height, round(height * self.ratio[1])
        else:
            h, w = height, width
        return (height - h) // 2, (width - w) // 2, h, w

    def __call__(self, img: Image.Image | torch.Tensor) -> Image.Image | torch.Tensor:
        height, width = _image_hw(img)
        top, left, h, w = self.get_params(height, width)
        return _resize(_crop(img, top, left, h, w), self.size, self.interpolation)

    def __repr__(self) -> str:
        return (
            f"RandomResizedCrop(size={self.size}, scale={self.scale}, ratio={self.ratio}, "
            f"interpolation={self.interpolation!r})"
        )


class RandomHorizontalFlip:
    """Mirror left-right with probability ``p`` (one draw from the torch RNG per call).

    Args:
        p: the flip probability, in [0, 1].
        generator: a ``torch.Generator`` to draw from; None uses the global RNG.

    Example:
        >>> RandomHorizontalFlip(p=1.0)(torch.tensor([[[1.0, 2.0]]])).tolist()
        [[[2.0, 1.0]]]
    """

    def __init__(self, p: float = 0.5, generator: torch.Generator | None = None) -> None:
        self.p = check_real("p", p, min=0, max=1)
        self.generator = check_type("generator", generator, torch.Generator, allow_none=True)

    def __call__(self, img: Image.Image | torch.Tensor) -> Image.Image | torch.Tensor:
        _image_hw(img)
        if torch.rand(1, generator=self.generator).item() >= self.p:
            return img
        if isinstance(img, Image.Image):
            return img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        return img.flip(-1)

    def __repr__(self) -> str:
        return f"RandomHorizontalFlip(p={self.p})"


def _image_hw(img: Any) -> tuple[int, int]:
    """``(height, width)`` of a PIL image or a ``(..., C, H, W)`` tensor."""
    if isinstance(img, Image.Image):
        return img.height, img.width
    if isinstance(img, torch.Tensor):
        if img.ndim < 3:
            raise ValueError(
                f"image tensors must have shape (..., C, H, W); got {tuple(img.shape)}"
            )
        return int(img.shape[-2]), int(img.shape[-1])
    raise TypeError(f"expected a PIL image or a tensor (..., C, H, W); got {type(img).__name__}")


def _crop(img: Any, top: int, left: int, h: int, w: int) -> Any:
    """The ``h x w`` region at ``(top, left)``; outside the image reads as zeros."""
    if isinstance(img, Image.Image):
        return img.crop((left, top, left + w, top + h))
    height, width = img.shape[-2], img.shape[-1]
    pad = (max(0, -left), max(0, left + w - width), max(0, -top), max(0, top + h - height))
    if any(pad):
        img = F.pad(img, pad)
        top, left = top + pad[2], left + pad[0]
    return img[..., top : top + h, left : left + w]


def _resize(img: Any, size: tuple[int, int], interpolation: str) -> Any:
    """Resize a PIL image (Pillow) or a float tensor (``F.interpolate``) to ``(h, w)``."""
    h, w = size
    if isinstance(img, Image.Image):
        if img.size == (w, h):
            return img
        return img.resize((w, h), _PIL_RESAMPLE[interpolation])
    _check_float_image("Resize", img)
    if tuple(img.shape[-2:]) == (h, w):
        return img
    lead = img.shape[:-3]
    flat = img.reshape(-1, *img.shape[-3:])
    smooth = interpolation != "nearest"
    out = F.interpolate(
        flat,
        size=(h, w),
        mode=interpolation,
        align_corners=False if smooth else None,
        antialias=smooth,
    )
    return out.reshape(*lead, *out.shape[-3:])


def _size(name: str, size: Any) -> int | tuple[int, int]:
    if isinstance(size, numbers.Integral) and not isinstance(size, bool):
        return check_int(name, size, min=1)
    if isinstance(size, Sequence) and not isinstance(size, str) and len(size) == 2:
        return (check_int(name, size[0], min=1), check_int(name, size[1], min=1))
    raise TypeError(f"{name} must be an int or a (height, width) pair; got {size!r}")


def _range_pair(name: str, pair: Any) -> tuple[float, float]:
    if not isinstance(pair, Sequence) or isinstance(pair, str) or len(pair) != 2:
        raise TypeError(f"{name} must be a (low, high) pair; got {pair!r}")
    low = check_real(name, pair[0], min=0, min_open=True)
    high = check_real(name, pair[1], min=0, min_open=True)
    if low > high or math.isinf(high):
        raise ValueError(f"{name} must be a finite (low, high) pair with low <= high; got {pair}")
    return low, high


def _interpolation(value: Any) -> str:
    if value not in _PIL_RESAMPLE:
        raise ValueError(f"interpolation must be one of {list(_PIL_RESAMPLE)}; got {value!r}")
    return value
