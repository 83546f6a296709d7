"""The math of every loss as pure functions on tensors (``pml.losses.functional``).

One private module per family; this file only re-exports their public names.
"""

from pml.losses.functional._softmax import (
    angular_average_angle,
    angular_loss,
    instance_loss,
    nca_loss,
    npairs_loss,
    ntxent_loss,
    tuplet_margin_loss,
)

__all__: list[str] = [
    "angular_average_angle",
    "angular_loss",
    "instance_loss",
    "nca_loss",
    "npairs_loss",
    "ntxent_loss",
    "tuplet_margin_loss",
]
