"""The math of every loss as pure functions on tensors (``pml.losses.functional``).

One private module per family; this file only re-exports their public names.
"""

__all__: list[str] = []
