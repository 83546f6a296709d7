"""Label columns of a batch, and the optional mapping of labels to 0..n-1 per level."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor


def _as_columns(labels: Any) -> np.ndarray:
    """Labels of a batch as a 2-D numpy array ``(n, levels)`` (strings allowed)."""
    if isinstance(labels, Tensor):
        arr = labels.detach().cpu().numpy()
    elif (
        isinstance(labels, list | tuple)
        and len(labels) > 0
        and all(isinstance(c, Tensor | np.ndarray | list | tuple) for c in labels)
    ):
        # one entry per level (what the default collate makes of per-sample label tuples)
        arr = np.stack(
            [c.detach().cpu().numpy() if isinstance(c, Tensor) else np.asarray(c) for c in labels],
            axis=1,
        )
    else:
        arr = np.asarray(labels)
    return arr[:, None] if arr.ndim == 1 else arr.reshape(arr.shape[0], -1)


class LabelMapper:
    """Map labels to their rank among the dataset's sorted distinct labels, per level.

    With ``set_min_label_to_zero`` each level's distinct values (from ``dataset_labels``) are
    sorted and replaced by ``0..n-1`` (strings too: ``'dog', 'cat', 'monkey'`` -> 1, 0, 2).
    Otherwise labels pass through unchanged. Vectorised (``searchsorted``), no Python loop.

    Args:
        set_min_label_to_zero: map labels to ranks.
        dataset_labels: every label of the dataset, ``(N,)`` or ``(N, levels)``.

    Example:
        >>> m = LabelMapper(True, ["dog", "cat", "monkey"])
        >>> m.map(["monkey", "dog"]).flatten().tolist()
        [2, 1]
    """

    def __init__(self, set_min_label_to_zero: bool = False, dataset_labels: Any = None) -> None:
        self.set_min_label_to_zero = set_min_label_to_zero
        self.label_map: list[np.ndarray] | None = None
        if set_min_label_to_zero and dataset_labels is not None:
            columns = _as_columns(dataset_labels)
            self.label_map = [np.unique(columns[:, i]) for i in range(columns.shape[1])]

    def map(self, labels: Any) -> Tensor:
        """Label columns ``(n, levels)`` as an int64 tensor (mapped when enabled).

        Raises:
            ValueError: mapping is enabled without ``dataset_labels``, or a label is not in
                ``dataset_labels``.
            TypeError: non-numeric labels without mapping.
        """
        if not self.set_min_label_to_zero:
            if isinstance(labels, Tensor):
                t = labels if labels.ndim > 1 else labels.unsqueeze(1)
                return t.reshape(t.shape[0], -1)
            columns = _as_columns(labels)
            if columns.dtype.kind not in "biuf":
                raise TypeError(
                    "labels must be numeric; got "
                    f"{columns.dtype}: use set_min_label_to_zero=True with dataset_labels "
                    "to map other labels to integers"
                )
            return torch.from_numpy(np.ascontiguousarray(columns))
        if self.label_map is None:
            # fix: the reference fails here with an AttributeError.
            raise ValueError(
                "set_min_label_to_zero=True needs dataset_labels (every label of the dataset) "
                "to build the mapping; got dataset_labels=None"
            )
        columns = _as_columns(labels)
        if columns.shape[1] > len(self.label_map):
            raise ValueError(
                f"labels have {columns.shape[1]} levels but dataset_labels has "
                f"{len(self.label_map)}"
            )
        mapped = np.empty(columns.shape, dtype=np.int64)
        for level in range(columns.shape[1]):  # levels, not samples
            known = self.label_map[level]
            col = columns[:, level].astype(known.dtype, copy=False)
            pos = np.searchsorted(known, col)
            found = (pos < len(known)) & (known[np.minimum(pos, len(known) - 1)] == col)
            if not found.all():
                raise ValueError(
                    f"labels at level {level} contain values missing from dataset_labels: "
                    f"{col[~found][:5].tolist()}"
                )
            mapped[:, level] = pos
        return torch.from_numpy(mapped)
