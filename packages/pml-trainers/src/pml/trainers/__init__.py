"""pml-trainers: training loops, hook containers, checkpoints with exact resume, datasets."""

from pml.trainers.__about__ import __version__
from pml.trainers._hooks import EmptyContainer, HookContainer, get_hook_container, get_record_keeper
from pml.trainers._records import RecordKeeper, RecordWriter

__all__ = [
    "EmptyContainer",
    "HookContainer",
    "RecordKeeper",
    "RecordWriter",
    "__version__",
    "get_hook_container",
    "get_record_keeper",
]
