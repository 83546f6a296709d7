"""Image transforms without torchvision: Pillow and plain tensor operations.

A small set covering the usual metric-learning pipelines::

    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)  # ImageNet statistics
    train = Compose([Resize(256), RandomResizedCrop(227), RandomHorizontalFlip(),
                     ToTensor(mode="RGB"), Normalize(mean, std)])
    test = Compose([Resize(256), CenterCrop(227), ToTensor(mode="RGB"), Normalize(mean, std)])

The geometric transforms accept PIL images (processed with Pillow) and float tensors of shape
``(..., C, H, W)`` (processed with ``torch.nn.functional``). Random transforms draw from the
torch RNG (the global one, or ``generator``): ``torch.manual_seed`` makes them repeatable, and
DataLoader workers, which torch seeds one by one, draw different crops. The geometric
transforms are in :mod:`pml.trainers._transforms_geometry`.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image

from pml.core.validation import check_real, check_type

__all__ = ["Compose", "Normalize", "ToTensor"]


class Compose:
    """Apply transforms one after the other.

    Args:
        transforms: callables, applied in order.

    Example:
        >>> Compose([lambda x: x + 1, lambda x: x * 2])(3)
        8
    """

    def __init__(self, transforms: Sequence[Callable[[Any], Any]]) -> None:
        transforms = list(transforms)
        for k, t in enumerate(transforms):
            if not callable(t):
                raise TypeError(f"transforms[{k}] must be callable; got {type(t).__name__}")
        self.transforms = transforms

    def __call__(self, x: Any) -> Any:
        for t in self.transforms:
            x = t(x)
        return x

    def __repr__(self) -> str:
        inner = "".join(f"\n    {t!r}," for t in self.transforms)
        return f"Compose([{inner}\n])"


class ToTensor:
    """PIL image (or ``(H, W[, C])`` array) -> float32 tensor ``(C, H, W)``.

    8-bit values are divided by 255 and 16-bit values by 65535 (so they lie in [0, 1]);
    1-bit images give 0/1; 32-bit integer (``"I"``) and float (``"F"``) images keep their
    values. Palette images are expanded to RGB (RGBA with transparency).

    Args:
        mode: a PIL mode to convert to first, e.g. ``"RGB"`` (greyscale -> 3 channels, alpha
            dropped); None keeps the image's channels (greyscale -> 1 channel).

    Example:
        >>> img = Image.new("L", (3, 2), 255)
        >>> ToTensor()(img).shape, ToTensor(mode="RGB")(img).shape
        (torch.Size([1, 2, 3]), torch.Size([3, 2, 3]))
    """

    def __init__(self, mode: str | None = None) -> None:
        self.mode = check_type("mode", mode, str, allow_none=True)

    def __call__(self, img: Image.Image | np.ndarray) -> torch.Tensor:
        if isinstance(img, Image.Image):
            if self.mode is not None and img.mode != self.mode:
                img = img.convert(self.mode)
            elif img.mode in ("P", "PA"):
                keep_alpha = img.mode == "PA" or "transparency" in img.info
                img = img.convert("RGBA" if keep_alpha else "RGB")
            arr = np.asarray(img)
        elif isinstance(img, np.ndarray):
            arr = img
        else:
            raise TypeError(
                f"ToTensor expects a PIL image or a numpy array; got {type(img).__name__}"
            )
        if arr.ndim == 2:
            arr = arr[:, :, None]
        if arr.ndim != 3:
            raise ValueError(f"image array must have shape (H, W) or (H, W, C); got {arr.shape}")
        scale = {np.dtype(np.uint8): 255.0, np.dtype(np.uint16): 65535.0}.get(
            arr.dtype.newbyteorder("="), 1.0
        )
        out = torch.from_numpy(np.ascontiguousarray(arr.astype(np.float32))).permute(2, 0, 1)
        return (out / scale).contiguous() if scale != 1.0 else out.contiguous()

    def __repr__(self) -> str:
        return f"ToTensor(mode={self.mode!r})"


class Normalize:
    """``(x - mean) / std`` per channel of a float tensor ``(..., C, H, W)``.

    Args:
        mean: C values (or 1, used for every channel).
        std: C values (or 1), all non-zero.

    Example:
        >>> Normalize([0.5], [0.25])(torch.ones(1, 1, 2)).tolist()
        [[[2.0, 2.0]]]
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        self.mean = _reals("mean", mean)
        self.std = _reals("std", std)
        if any(s == 0 for s in self.std):
            raise ValueError(f"std must not contain 0 (division by zero); got {self.std}")
        if len(self.std) not in (1, len(self.mean)) and len(self.mean) != 1:
            raise ValueError(
                f"mean and std must have the same length (or one of them 1); got "
                f"{len(self.mean)} and {len(self.std)}"
            )

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        _check_float_image("Normalize", x)
        num_channels = x.shape[-3]
        for name, values in (("mean", self.mean), ("std", self.std)):
            if len(values) not in (1, num_channels):
                raise ValueError(
                    f"{name} has {len(values)} values but the image has {num_channels} "
                    "channels (use ToTensor(mode='RGB') for greyscale images)"
                )
        mean = torch.tensor(self.mean, dtype=x.dtype, device=x.device).view(-1, 1, 1)
        std = torch.tensor(self.std, dtype=x.dtype, device=x.device).view(-1, 1, 1)
        return (x - mean) / std

    def __repr__(self) -> str:
        return f"Normalize(mean={self.mean}, std={self.std})"


def _check_float_image(name: str, x: Any) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} expects a tensor (..., C, H, W); got {type(x).__name__}")
    if not x.dtype.is_floating_point:
        raise TypeError(f"{name} expects a floating tensor (apply ToTensor first); got {x.dtype}")
    if x.ndim < 3:
        raise ValueError(f"{name} expects shape (..., C, H, W); got {tuple(x.shape)}")


def _reals(name: str, values: Any) -> tuple[float, ...]:
    if isinstance(values, numbers.Real):
        values = (values,)
    if isinstance(values, torch.Tensor):
        values = values.flatten().tolist()
    if not isinstance(values, Sequence) or isinstance(values, str) or not values:
        raise TypeError(f"{name} must be a non-empty sequence of numbers; got {values!r}")
    return tuple(check_real(name, v) for v in values)
