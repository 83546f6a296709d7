"""pml-all: the ``pml`` command (``pml train``, ``pml eval``, ``pml embed``, ``pml search``)."""

from pml.cli.__about__ import __version__

__all__ = ["__version__"]
