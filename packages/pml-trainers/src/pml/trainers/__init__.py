"""pml-trainers: training loops, hook containers, checkpoints with exact resume, datasets."""

from pml.trainers.__about__ import __version__
from pml.trainers._datasets import BaseDataset
from pml.trainers._datasets_generic import DigitsDataset, FeaturesDataset, ImageFolderDataset
from pml.trainers._datasets_reference import CUB, Cars196, INaturalist2018, StanfordOnlineProducts
from pml.trainers._hooks import EmptyContainer, HookContainer, get_hook_container, get_record_keeper
from pml.trainers._records import RecordKeeper, RecordWriter
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
    "BaseDataset",
    "CUB",
    "Cars196",
    "CenterCrop",
    "Compose",
    "DigitsDataset",
    "EmptyContainer",
    "FeaturesDataset",
    "HookContainer",
    "INaturalist2018",
    "ImageFolderDataset",
    "Normalize",
    "RandomHorizontalFlip",
    "RandomResizedCrop",
    "RecordKeeper",
    "RecordWriter",
    "Resize",
    "StanfordOnlineProducts",
    "ToTensor",
    "__version__",
    "get_hook_container",
    "get_record_keeper",
]
