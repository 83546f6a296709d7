"""pml-trainers: training loops, hook containers, checkpoints with exact resume, datasets."""

from pml.trainers.__about__ import __version__
from pml.trainers._base_trainer import BaseTrainer
from pml.trainers._daml import DeepAdversarialMetricLearning
from pml.trainers._key_checker import KeyChecker, KeyCheckerDict
from pml.trainers._loss_tracker import LossTracker
from pml.trainers._trainers import (
    CascadedEmbeddings,
    MetricLossOnly,
    TrainWithClassifier,
    TwoStreamMetricLoss,
)

__all__ = [
    "BaseTrainer",
    "CascadedEmbeddings",
    "DeepAdversarialMetricLearning",
    "KeyChecker",
    "KeyCheckerDict",
    "LossTracker",
    "MetricLossOnly",
    "TrainWithClassifier",
    "TwoStreamMetricLoss",
    "__version__",
]
