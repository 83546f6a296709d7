"""DistributedMinerWrapper: mine over the batches of every rank."""

from __future__ import annotations

import warnings

import torch
from torch import Tensor, nn

from pml.core.distributed import gather_emb_and_ref, get_world_size, is_distributed
from pml.core.indices import IndicesTuple, remove_self_comparisons
from pml.core.validation import check_bool, check_type
from pml.miners._base import BaseMiner


class DistributedMinerWrapper(nn.Module):
    """Run a miner on the embeddings gathered from every process.

    The local batch comes first in the gathered batch (local row ``i`` is global row ``i``),
    the other ranks follow in rank order. Use the same ``efficient`` as the loss wrapper.

    Unlike the reference, it also works without ``torch.distributed``: when no process
    group is initialised it warns once and mines the local batch.

    Args:
        miner: the miner to wrap.
        efficient: False: anchors are the whole gathered batch and the indices refer to it.
            True: anchors are the local rows only, compared against the gathered set
            (pairs of an anchor with its own copy are removed).

    Raises:
        TypeError: ``miner`` is not a ``BaseMiner``, or ``efficient`` not a bool.

    Example:
        >>> from pml.miners import MultiSimilarityMiner
        >>> wrapper = DistributedMinerWrapper(MultiSimilarityMiner())
        >>> import warnings
        >>> with warnings.catch_warnings():
        ...     warnings.simplefilter("ignore")
        ...     out = wrapper(torch.randn(8, 4), torch.tensor([0, 0, 1, 1, 2, 2, 3, 3]))
        >>> len(out)
        4
    """

    def __init__(self, miner: BaseMiner, efficient: bool = False) -> None:
        super().__init__()
        self.miner = check_type("miner", miner, BaseMiner)
        self.efficient = check_bool("efficient", efficient)
        self._warned = False

    def forward(
        self,
        emb: Tensor,
        labels: Tensor,
        ref_emb: Tensor | None = None,
        ref_labels: Tensor | None = None,
    ) -> IndicesTuple:
        """Mine across ranks; see the class docstring for what the indices refer to."""
        if not is_distributed():
            # fix: the reference raises when no process group is initialised
            if not self._warned:
                warnings.warn(
                    "DistributedMinerWrapper: torch.distributed is not initialised; "
                    "mining the local batch only",
                    RuntimeWarning,
                    stacklevel=2,
                )
                self._warned = True
            return self.miner(emb, labels, ref_emb, ref_labels)
        if get_world_size() <= 1:
            return self.miner(emb, labels, ref_emb, ref_labels)
        all_emb, all_labels, all_ref_emb, all_ref_labels, labels = gather_emb_and_ref(
            emb, labels, ref_emb, ref_labels
        )
        if not self.efficient:
            return self.miner(all_emb, all_labels, all_ref_emb, all_ref_labels)
        if all_ref_emb is None:
            ref_set, ref_set_labels = all_emb, all_labels
        else:
            ref_set, ref_set_labels = all_ref_emb, all_ref_labels
        out = self.miner(emb, labels, ref_set, ref_set_labels)
        curr = torch.arange(len(emb), device=emb.device)
        return remove_self_comparisons(out, curr, len(ref_set_labels))  # type: ignore[arg-type]
