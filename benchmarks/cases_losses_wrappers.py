"""Loss wrappers: CrossBatchMemory and SelfSupervisedLoss, forward + backward.

CrossBatchMemory cases start from a full memory (filled during setup), so every step
compares the batch with ``memory_size`` stored embeddings, as in steady-state training.
Both libraries run with ``torch.set_num_threads(1)``, like the other loss suites.
"""

from __future__ import annotations

import torch

TITLE = (
    "Loss wrappers: forward + backward, 1 thread "
    "(CrossBatchMemory with a full memory, SelfSupervised)"
)


def _batch(n: int, d: int, classes: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, classes, (n,), generator=g)
    centers = torch.randn(classes, d, generator=g)
    return centers[labels] + 0.5 * torch.randn(n, d, generator=g), labels


def _cbm_step(lib, loss_name: str, loss_kwargs: dict, n: int, d: int, memory: int, classes: int):  # type: ignore[no-untyped-def]
    torch.set_num_threads(1)
    loss = getattr(lib, loss_name)(**loss_kwargs)
    cbm = lib.CrossBatchMemory(loss, embedding_size=d, memory_size=memory)
    with torch.no_grad():
        for i in range(memory // n + 1):  # fill the memory
            cbm(*_batch(n, d, classes, seed=100 + i))
    emb, labels = _batch(n, d, classes)
    emb.requires_grad_()

    def step() -> None:
        cbm(emb, labels).backward()
        emb.grad = None

    return step


def _ss_step(lib, loss_name: str, loss_kwargs: dict, n: int, d: int):  # type: ignore[no-untyped-def]
    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(0)
    view_1 = torch.randn(n, d, generator=g).requires_grad_()
    view_2 = (view_1.detach() + 0.3 * torch.randn(n, d, generator=g)).requires_grad_()
    loss_func = lib.SelfSupervisedLoss(getattr(lib, loss_name)(**loss_kwargs))

    def step() -> None:
        loss_func(view_1, view_2).backward()
        view_1.grad = view_2.grad = None

    return step


def _ours():  # type: ignore[no-untyped-def]
    import pml.losses

    return pml.losses


def _ref():  # type: ignore[no-untyped-def]
    import pytorch_metric_learning.losses

    return pytorch_metric_learning.losses


def cbm_contrastive_pml(**p):  # type: ignore[no-untyped-def]
    return _cbm_step(_ours(), "ContrastiveLoss", {}, **p)


def cbm_contrastive_ref(**p):  # type: ignore[no-untyped-def]
    return _cbm_step(_ref(), "ContrastiveLoss", {}, **p)


def cbm_ntxent_pml(**p):  # type: ignore[no-untyped-def]
    return _cbm_step(_ours(), "NTXentLoss", {"temperature": 0.1}, **p)


def cbm_ntxent_ref(**p):  # type: ignore[no-untyped-def]
    return _cbm_step(_ref(), "NTXentLoss", {"temperature": 0.1}, **p)


def cbm_triplet_pml(**p):  # type: ignore[no-untyped-def]
    return _cbm_step(_ours(), "TripletMarginLoss", {"margin": 0.1}, **p)


def cbm_triplet_ref(**p):  # type: ignore[no-untyped-def]
    return _cbm_step(_ref(), "TripletMarginLoss", {"margin": 0.1}, **p)


def ss_ntxent_pml(**p):  # type: ignore[no-untyped-def]
    return _ss_step(_ours(), "NTXentLoss", {"temperature": 0.1}, **p)


def ss_ntxent_ref(**p):  # type: ignore[no-untyped-def]
    return _ss_step(_ref(), "NTXentLoss", {"temperature": 0.1}, **p)


def ss_triplet_pml(**p):  # type: ignore[no-untyped-def]
    return _ss_step(_ours(), "TripletMarginLoss", {}, **p)


def ss_triplet_ref(**p):  # type: ignore[no-untyped-def]
    return _ss_step(_ref(), "TripletMarginLoss", {}, **p)


M = __name__
SUITE = [
    {
        "name": "CrossBatchMemory(ContrastiveLoss)",
        "params": {"n": 256, "d": 128, "memory": 4096, "classes": 100},
        "pml": f"{M}:cbm_contrastive_pml",
        "ref": f"{M}:cbm_contrastive_ref",
        "repeats": 11,
        "rounds": 3,
    },
    {
        "name": "CrossBatchMemory(NTXentLoss)",
        "params": {"n": 64, "d": 128, "memory": 1024, "classes": 64},
        "pml": f"{M}:cbm_ntxent_pml",
        "ref": f"{M}:cbm_ntxent_ref",
    },
    {
        "name": "CrossBatchMemory(NTXentLoss)",
        "params": {"n": 256, "d": 128, "memory": 4096, "classes": 100},
        "pml": f"{M}:cbm_ntxent_pml",
        "ref": f"{M}:cbm_ntxent_ref",
        "ref_skip": "pos x neg pair matrix of 10.7k x 1.04M entries (> 10 GB)",
    },
    {
        "name": "CrossBatchMemory(TripletMarginLoss), all triplets",
        "params": {"n": 128, "d": 128, "memory": 1024, "classes": 32},
        "pml": f"{M}:cbm_triplet_pml",
        "ref": f"{M}:cbm_triplet_ref",
    },
    {
        "name": "CrossBatchMemory(TripletMarginLoss), all triplets",
        "params": {"n": 256, "d": 128, "memory": 4096, "classes": 100},
        "pml": f"{M}:cbm_triplet_pml",
        "ref": f"{M}:cbm_triplet_ref",
        "ref_skip": "N x M x M mask of 4.3G entries (> 10 GB with the triplet lists)",
    },
    {
        "name": "SelfSupervisedLoss(NTXentLoss)",
        "params": {"n": 256, "d": 128},
        "pml": f"{M}:ss_ntxent_pml",
        "ref": f"{M}:ss_ntxent_ref",
    },
    {
        "name": "SelfSupervisedLoss(NTXentLoss)",
        "params": {"n": 1024, "d": 128},
        "pml": f"{M}:ss_ntxent_pml",
        "ref": f"{M}:ss_ntxent_ref",
        "ref_skip": "pos x neg pair matrix of 2k x 4.2M entries (> 10 GB)",
    },
    {
        "name": "SelfSupervisedLoss(TripletMarginLoss)",
        "params": {"n": 512, "d": 128},
        "pml": f"{M}:ss_triplet_pml",
        "ref": f"{M}:ss_triplet_ref",
    },
]
