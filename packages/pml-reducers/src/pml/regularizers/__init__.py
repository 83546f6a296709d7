"""pml.regularizers (in the pml-reducers distribution): embedding and weight regularizers.

Example:
    >>> import torch
    >>> from pml.regularizers import LpRegularizer
    >>> LpRegularizer()(torch.tensor([[3.0, 4.0], [0.0, 1.0]]))
    tensor(3.)
"""

from pml.reducers.__about__ import __version__
from pml.regularizers._base import BaseRegularizer
from pml.regularizers._regularizers import (
    CenterInvariantRegularizer,
    LpRegularizer,
    RegularFaceRegularizer,
    SparseCentersRegularizer,
    ZeroMeanRegularizer,
)
from pml.regularizers._spherical import SphericalEmbeddingRegularizer

__all__ = [
    "BaseRegularizer",
    "CenterInvariantRegularizer",
    "LpRegularizer",
    "RegularFaceRegularizer",
    "SparseCentersRegularizer",
    "SphericalEmbeddingRegularizer",
    "ZeroMeanRegularizer",
    "__version__",
]
