"""pml-reducers: turn a loss dict of per-element/pair/triplet losses into a scalar.

Example:
    >>> import torch
    >>> from pml.reducers import AvgNonZeroReducer
    >>> d = {"loss": {"losses": torch.tensor([0.0, 2.0, 0.0, 3.0]), "indices": torch.arange(4),
    ...               "reduction_type": "element"}}
    >>> AvgNonZeroReducer()(d, torch.zeros(4, 2), None)
    tensor(2.5000)
"""

from pml.reducers.__about__ import __version__
from pml.reducers._base import BaseReducer, LossDict, ReductionType
from pml.reducers._basic import (
    AvgNonZeroReducer,
    ClassWeightedReducer,
    DivisorReducer,
    DoNothingReducer,
    MeanReducer,
    SumReducer,
    ThresholdReducer,
)
from pml.reducers._composite import MultipleReducers, PerAnchorReducer
from pml.reducers._with_reducer import (
    ModuleWithRecordsAndReducer,
    ModuleWithRecordsReducerAndDistance,
)

__all__ = [
    "AvgNonZeroReducer",
    "BaseReducer",
    "ClassWeightedReducer",
    "DivisorReducer",
    "DoNothingReducer",
    "LossDict",
    "MeanReducer",
    "ModuleWithRecordsAndReducer",
    "ModuleWithRecordsReducerAndDistance",
    "MultipleReducers",
    "PerAnchorReducer",
    "ReductionType",
    "SumReducer",
    "ThresholdReducer",
    "__version__",
]
