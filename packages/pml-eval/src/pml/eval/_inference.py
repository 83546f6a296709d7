"""MatchFinder (thresholded matches) and InferenceModel (embed, index, search, match)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, Dataset

from pml.core.validation import check_finite, check_int, check_real
from pml.distances import BaseDistance, CosineSimilarity
from pml.eval._faiss import faiss_available
from pml.eval._faiss_knn import FaissKNN
from pml.eval._io import check_dim
from pml.eval._knn import TorchKNN
from pml.eval.functional import chunk_rows

__all__ = ["InferenceModel", "MatchFinder"]


def _check_threshold(threshold: Any) -> float:
    if threshold is None:
        raise TypeError(
            "threshold must be a number: pass it to the call or to MatchFinder(threshold=...); "
            "got None"
        )
    return check_real("threshold", threshold)  # type: ignore[return-value]


class MatchFinder:
    """Pairs whose distance is within a threshold (``<=``; ``>=`` for similarities).

    Args:
        distance: a pml distance.
        threshold: default threshold for calls that pass none.

    Example:
        >>> from pml.distances import CosineSimilarity
        >>> mf = MatchFinder(CosineSimilarity(), threshold=0.9)
        >>> mf.get_matching_pairs(torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.1]])).tolist()
        [[True, False, True], [False, True, False], [True, False, True]]
    """

    def __init__(self, distance: BaseDistance, threshold: float | None = None) -> None:
        if distance is None:
            raise TypeError("distance must be a pml distance; got None")
        self.distance = distance
        self.threshold = threshold

    @classmethod
    def from_threshold_selection(
        cls, selection: Any, distance: BaseDistance | None = None
    ) -> MatchFinder:
        """A MatchFinder applying a :func:`~pml.eval.select_threshold` result.

        Same as ``MatchFinder(distance, threshold=selection.threshold)``, with the distance
        the threshold was selected with by default, and a check that ``distance`` ranks the
        same way (a similarity threshold needs an inverted distance).

        Args:
            selection: a :class:`~pml.eval.ThresholdSelection`.
            distance: the distance to match with (None: ``selection.distance``).

        Raises:
            TypeError: no distance here nor in ``selection`` (pair scores were given).
            ValueError: ``distance.is_inverted`` differs from ``selection.is_inverted``.

        Example:
            >>> from pml.eval import select_threshold
            >>> x, y = torch.tensor([[1.0, 0.0], [1.0, 0.1], [0.0, 1.0]]), torch.tensor([0, 0, 1])
            >>> mf = MatchFinder.from_threshold_selection(select_threshold(x, y))
            >>> mf.get_matching_pairs(x).tolist()
            [[True, True, False], [True, True, False], [False, False, True]]
        """
        distance = getattr(selection, "distance", None) if distance is None else distance
        if distance is None:
            raise TypeError(
                "distance must be given: the selection was made from pair scores, not with a "
                "pml distance"
            )
        if bool(distance.is_inverted) != bool(selection.is_inverted):
            kind = "a similarity" if selection.is_inverted else "a distance"
            raise ValueError(
                f"distance must rank like the selection's scores ({kind} threshold, "
                f"is_inverted={selection.is_inverted}); got {type(distance).__name__} with "
                f"is_inverted={distance.is_inverted}"
            )
        return cls(distance, threshold=selection.threshold)

    def _compare(self, mat: Tensor, threshold: float) -> Tensor:
        return mat >= threshold if self.distance.is_inverted else mat <= threshold

    def get_matching_pairs(
        self,
        query_emb: Tensor,
        ref_emb: Tensor | None = None,
        threshold: float | None = None,
        return_tuples: bool = False,
    ) -> np.ndarray | list[tuple[np.int64, np.int64]]:
        """Match matrix between query and reference rows (query vs itself when ref is None).

        Computed in blocks of query rows (one ``(B, M)`` distance block at a time).

        Returns:
            numpy bool ``(N, M)``, or with ``return_tuples`` the ``(i, j)`` pairs in row-major
            order.

        Raises:
            TypeError: no threshold here or on the instance.
            ValueError: embeddings not 2-D, of different dims, or holding NaN/inf.
        """
        t = _check_threshold(self.threshold if threshold is None else threshold)
        _check_embeddings(query_emb, "query_emb")
        if ref_emb is not None:
            _check_embeddings(ref_emb, "ref_emb", query_emb.shape[1], "query_emb")
        ref = query_emb if ref_emb is None else ref_emb
        rows = chunk_rows(ref.shape[0])
        blocks = []
        with torch.no_grad():
            for s in range(0, max(query_emb.shape[0], 1), rows):
                mat = self.distance(query_emb[s : s + rows], ref)
                blocks.append(self._compare(mat, t).cpu().numpy())
        matches = np.concatenate(blocks) if blocks else np.zeros((0, ref.shape[0]), dtype=bool)
        if return_tuples:
            return list(zip(*np.nonzero(matches)))
        return matches

    def is_match(self, x: Tensor, y: Tensor, threshold: float | None = None) -> bool | np.ndarray:
        """Whether row ``i`` of ``x`` matches row ``i`` of ``y``.

        Returns:
            a Python bool for one pair, else a numpy bool array ``(N,)``.

        Raises:
            TypeError: no threshold here or on the instance.
            ValueError: ``x`` and ``y`` not 2-D of the same shape, or holding NaN/inf.
        """
        t = _check_threshold(self.threshold if threshold is None else threshold)
        _check_embeddings(x, "x")
        _check_embeddings(y, "y")
        if x.shape != y.shape:
            # fix: torch raised a bare RuntimeError (size mismatch) from pairwise_distance
            raise ValueError(
                f"x and y must have the same shape (row i of x is compared with row i of y); "
                f"got {tuple(x.shape)} and {tuple(y.shape)}"
            )
        with torch.no_grad():
            result = self._compare(self.distance.pairwise_distance(x, y), t).cpu().numpy()
        return bool(result.item()) if result.size == 1 else result


def _check_embeddings(x: Any, name: str, dim: int | None = None, like: str = "") -> None:
    """2-D tensor (of ``dim`` columns, like ``like``) without NaN/inf."""
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor; got {type(x).__name__}")
    if x.ndim != 2:
        raise ValueError(f"{name} must have shape (num_embeddings, dim); got {tuple(x.shape)}")
    if dim is not None:
        check_dim(x, name, dim, like)
    check_finite(x, name)


def _default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


class InferenceModel:
    """Embed inputs with a trained model; index, search and match them.

    Args:
        trunk: the model.
        embedder: applied after the trunk (None: identity).
        match_finder: None: ``MatchFinder(CosineSimilarity(), threshold=0.9)``.
        normalize_embeddings: L2-normalise every embedding.
        knn_func: the index; None: ``FaissKNN(reset_before=False, reset_after=False)`` when
            faiss is installed, else :class:`TorchKNN` (both squared L2).
        data_device: where inputs go; None: cuda if available.
        dtype: cast tensor inputs to this dtype.

    Example:
        >>> im = InferenceModel(torch.nn.Identity(), knn_func=TorchKNN(), data_device="cpu")
        >>> im.train_knn(torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
        >>> im.get_nearest_neighbors(torch.tensor([[0.9, 0.1]]), k=1)[1]
        tensor([[0]])
    """

    def __init__(
        self,
        trunk: nn.Module,
        embedder: nn.Module | None = None,
        match_finder: MatchFinder | None = None,
        normalize_embeddings: bool = True,
        knn_func: Any = None,
        data_device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        self.trunk = trunk
        self.embedder = nn.Identity() if embedder is None else embedder
        self.match_finder = (
            MatchFinder(distance=CosineSimilarity(), threshold=0.9)
            if match_finder is None
            else match_finder
        )
        self.normalize_embeddings = normalize_embeddings
        if knn_func is None:
            knn_func = (
                FaissKNN(reset_before=False, reset_after=False) if faiss_available() else TorchKNN()
            )
        self.knn_func = knn_func
        self.data_device = _default_device() if data_device is None else torch.device(data_device)
        self.dtype = dtype

    def process_if_list(self, x: Any) -> Any:
        """Stack a list whose elements are all tensors; anything else is returned as is."""
        if isinstance(x, list) and len(x) > 0 and all(isinstance(e, Tensor) for e in x):
            return torch.stack(x)
        return x

    def get_embeddings(self, x: Any) -> Tensor:
        """``embedder(trunk(x))`` under no_grad, models in eval mode, optionally normalised.

        Tensors are moved to ``data_device`` (and ``dtype``); other inputs (e.g. lists of
        strings for a text model) are passed through untouched.
        """
        x = self.process_if_list(x)
        if isinstance(x, Tensor):
            x = x.to(self.data_device)
            if self.dtype is not None:
                x = x.to(self.dtype)
        self.trunk.eval()
        self.embedder.eval()
        with torch.no_grad():
            emb = self.embedder(self.trunk(x))
        if not isinstance(emb, Tensor) or emb.ndim != 2:
            # fix: a 1-D input failed with "IndexError: Dimension out of range" (normalize)
            got = f"shape {tuple(emb.shape)}" if isinstance(emb, Tensor) else type(emb).__name__
            raise ValueError(
                f"the model must return embeddings of shape (batch, size); got {got} (give "
                "inputs with a batch dimension, e.g. x[None] for one item)"
            )
        if self.normalize_embeddings:
            emb = F.normalize(emb, p=2, dim=1)
        return emb

    def _batches(self, inputs: Any, batch_size: int) -> Iterator[Any]:
        if isinstance(inputs, Tensor | list):
            for s in range(0, len(inputs), batch_size):
                yield inputs[s : s + batch_size]
        elif isinstance(inputs, Dataset):
            for batch in DataLoader(inputs, batch_size=batch_size):
                data, _ = batch
                yield data
        else:
            raise TypeError(
                "inputs must be a torch.Tensor, a list or a torch.utils.data.Dataset; "
                f"got {type(inputs).__name__}"
            )

    def get_embeddings_from_tensor_or_dataset(self, inputs: Any, batch_size: int) -> Tensor:
        """Embeddings of a tensor/list (sliced in batches) or a Dataset of ``(data, label)``.

        Raises:
            TypeError: any other input type, or a ``batch_size`` that is not an int.
            ValueError: ``batch_size < 1``, or no inputs.
        """
        batch_size = check_int("batch_size", batch_size, min=1)  # type: ignore[assignment]
        parts = [self.get_embeddings(b) for b in self._batches(inputs, batch_size)]
        if not parts:
            raise ValueError("inputs must not be empty")
        emb = torch.cat(parts)
        _check_embeddings(emb, "embeddings")
        return emb

    def call_knn(self, func: Callable[[Tensor], Any], inputs: Any, batch_size: int) -> None:
        """Embed ``inputs`` and pass the embeddings to ``func`` (``train`` or ``add``)."""
        func(self.get_embeddings_from_tensor_or_dataset(inputs, batch_size))

    def train_knn(self, inputs: Any, batch_size: int = 64) -> None:
        """Replace the index with the embeddings of ``inputs``."""
        self.call_knn(self.knn_func.train, inputs, batch_size)

    def add_to_knn(self, inputs: Any, batch_size: int = 64) -> None:
        """Add the embeddings of ``inputs`` to the index."""
        self.call_knn(self.knn_func.add, inputs, batch_size)

    def get_nearest_neighbors(self, query: Any, k: int) -> tuple[Tensor, Tensor]:
        """``(distances (N, k), indices (N, k))`` of the indexed items nearest to ``query``.

        Default distances are squared L2 between normalised embeddings (``2 - 2 cos``).

        Raises:
            ValueError: the query's embeddings hold NaN/inf or have another dim than the
                index (from the default k-NN back-ends).
        """
        query_emb = self.get_embeddings(query)
        _check_embeddings(query_emb, "query (its embeddings)")
        return self.knn_func(query_emb, k)

    def get_matches(
        self,
        query: Any,
        ref: Any = None,
        threshold: float | None = None,
        return_tuples: bool = False,
    ) -> np.ndarray | list[tuple[np.int64, np.int64]]:
        """Match matrix (or pairs) between embedded query and ref (query vs itself if None)."""
        query_emb = self.get_embeddings(query)
        ref_emb = query_emb if ref is None else self.get_embeddings(ref)
        return self.match_finder.get_matching_pairs(query_emb, ref_emb, threshold, return_tuples)

    def is_match(self, x: Any, y: Any, threshold: float | None = None) -> bool | np.ndarray:
        """Whether embedded ``x[i]`` matches embedded ``y[i]``."""
        return self.match_finder.is_match(self.get_embeddings(x), self.get_embeddings(y), threshold)

    def save_knn_func(self, filename: str | os.PathLike[str]) -> None:
        """Save the index (faiss index file, or a TorchKNN tensor file), atomically."""
        self.knn_func.save(filename)

    def load_knn_func(self, filename: str | os.PathLike[str]) -> None:
        """Load an index saved by :meth:`save_knn_func`."""
        self.knn_func.load(filename)
