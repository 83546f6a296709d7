"""pml-trainers: training loops, hook containers, checkpoints with exact resume, datasets."""

from pml.trainers.__about__ import __version__
from pml.trainers._transforms import (
    CenterCrop,
    Compose,
    Normalize,
    RandomHorizontalFlip,
    RandomResizedCrop,
    Resize,
    ToTensor,
)

__all__ = [
    "CenterCrop",
    "Compose",
    "Normalize",
    "RandomHorizontalFlip",
    "RandomResizedCrop",
    "Resize",
    "ToTensor",
    "__version__",
]
