"""pml-trainers: training loops, hook containers, checkpoints with exact resume, datasets."""

from pml.trainers.__about__ import __version__
from pml.trainers._base_trainer import BaseTrainer
from pml.trainers._daml import DeepAdversarialMetricLearning
from pml.trainers._datasets import BaseDataset
from pml.trainers._datasets_generic import DigitsDataset, FeaturesDataset, ImageFolderDataset
from pml.trainers._datasets_reference import CUB, Cars196, INaturalist2018, StanfordOnlineProducts
from pml.trainers._hooks import EmptyContainer, HookContainer, get_hook_container, get_record_keeper
from pml.trainers._key_checker import KeyChecker, KeyCheckerDict
from pml.trainers._loss_tracker import LossTracker
from pml.trainers._record_keeper import RecordKeeper
from pml.trainers._records import RecordWriter
from pml.trainers._trainers import (
    CascadedEmbeddings,
    MetricLossOnly,
    TrainWithClassifier,
    TwoStreamMetricLoss,
)
from pml.trainers._transforms import Compose, Normalize, ToTensor
from pml.trainers._transforms_geometry import (
    CenterCrop,
    RandomHorizontalFlip,
    RandomResizedCrop,
    Resize,
)

__all__ = [
    "BaseDataset",
    "BaseTrainer",
    "CUB",
    "Cars196",
    "CascadedEmbeddings",
    "CenterCrop",
    "Compose",
    "DeepAdversarialMetricLearning",
    "DigitsDataset",
    "EmptyContainer",
    "FeaturesDataset",
    "HookContainer",
    "INaturalist2018",
    "ImageFolderDataset",
    "KeyChecker",
    "KeyCheckerDict",
    "LossTracker",
    "MetricLossOnly",
    "Normalize",
    "RandomHorizontalFlip",
    "RandomResizedCrop",
    "RecordKeeper",
    "RecordWriter",
    "Resize",
    "StanfordOnlineProducts",
    "ToTensor",
    "TrainWithClassifier",
    "TwoStreamMetricLoss",
    "__version__",
    "get_hook_container",
    "get_record_keeper",
]
