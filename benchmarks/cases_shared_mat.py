"""Issue 15 items 2 and 3: a shared ``mat=`` and ``anchor_batched_backward``, pml against pml.

Both columns are pml: "with" uses the feature, "without" the same step without it. Each case
runs 3 rounds (5 for ``mat=``) that alternate the two in fresh processes (shared cores).
"""

from __future__ import annotations

TITLE = "Shared distance matrix (mat=) and anchor_batched_backward: pml with vs without"
#: the table's column labels (see benchmarks/run.py), instead of pml / reference 2.9
COLUMNS = ("with the feature", "without it")
NOTE = (
    "Both columns are pml at this commit: the step with the feature against the same step "
    "without it, alternated in fresh processes (3 rounds, 5 for mat=, median round), on an idle "
    "machine. One step = forward + backward on a class-clustered batch, D = 128, "
    "8 per class."
)

D = 128


def _leaf(n: int):  # type: ignore[no-untyped-def]
    from pml.core.testing import clustered_embeddings

    emb, labels = clustered_embeddings(-(-n // 8), 8, D, seed=0, spread=1.0)
    return emb[:n].clone().requires_grad_(), labels[:n]


def ms_pair(n: int, d: int = D, mat: bool = True):  # type: ignore[no-untyped-def]
    """MultiSimilarityMiner + MultiSimilarityLoss, with one shared matrix or two."""
    from pml.losses import MultiSimilarityLoss
    from pml.miners import MultiSimilarityMiner

    emb, labels = _leaf(n)
    loss_func, miner = MultiSimilarityLoss(), MultiSimilarityMiner()

    def step() -> None:
        emb.grad = None
        if mat:
            m = loss_func.distance(emb)
            loss = loss_func(emb, labels, miner(emb, labels, mat=m), mat=m)
        else:
            loss = loss_func(emb, labels, miner(emb, labels))
        loss.backward()

    return step


def ms_pair_without(n: int, d: int = D):  # type: ignore[no-untyped-def]
    return ms_pair(n, d, mat=False)


def _batched(name: str, n: int, batch_size: int | None, m: int = 0, **kwargs):  # type: ignore[no-untyped-def]
    """The loss's backward by chunks (or at once); ``m > 0``: against a reference set of m."""
    import pml.losses as L

    emb, labels = _leaf(n)
    ref, ref_labels = _leaf(m) if m else (None, None)
    if ref is not None:
        ref.data.add_(0.1)  # another set than the queries
    loss_func = getattr(L, name)(**kwargs)

    def step() -> None:
        emb.grad = None
        if ref is not None:
            ref.grad = None
        if batch_size is None:
            loss_func(emb, labels, None, ref, ref_labels).backward()
        else:
            L.anchor_batched_backward(
                loss_func, emb, labels, batch_size, ref_emb=ref, ref_labels=ref_labels
            )

    return step


def ms_batched(n: int, batch_size: int, d: int = D, m: int = 0):  # type: ignore[no-untyped-def]
    return _batched("MultiSimilarityLoss", n, batch_size, m)


def ms_batched_without(n: int, batch_size: int, d: int = D, m: int = 0):  # type: ignore[no-untyped-def]
    return _batched("MultiSimilarityLoss", n, None, m)


def tm_batched(n: int, batch_size: int, d: int = D):  # type: ignore[no-untyped-def]
    return _batched("TripletMarginLoss", n, batch_size, margin=0.2)


def tm_batched_without(n: int, batch_size: int, d: int = D):  # type: ignore[no-untyped-def]
    return _batched("TripletMarginLoss", n, None, margin=0.2)


def _case(name: str, key: str, repeats: int = 3, rounds: int = 3, **params) -> dict:  # type: ignore[no-untyped-def]
    return {
        "name": name,
        "params": {**params, "d": D},
        "pml": f"{__name__}:{key}",
        "ref": f"{__name__}:{key}_without",
        "repeats": repeats,
        "rounds": rounds,
    }


SUITE = [
    # the saving is one distance matrix of a few percent of the step: more rounds and repeats
    _case("MultiSimilarityMiner + MultiSimilarityLoss, mat= shared", "ms_pair", 7, 5, n=2048),
    _case("MultiSimilarityMiner + MultiSimilarityLoss, mat= shared", "ms_pair", 5, 5, n=4096),
    _case(
        "MultiSimilarityLoss, anchor_batched_backward",
        "ms_batched",
        repeats=1,
        n=8192,
        batch_size=1024,
    ),
    _case(
        "MultiSimilarityLoss, anchor_batched_backward",
        "ms_batched",
        repeats=1,
        n=8192,
        batch_size=256,
    ),
    _case(
        "MultiSimilarityLoss against a reference set, anchor_batched_backward",
        "ms_batched",
        repeats=1,
        n=8192,
        batch_size=1024,
        m=8192,
    ),
    _case(
        "TripletMarginLoss (all triplets), anchor_batched_backward",
        "tm_batched",
        repeats=1,
        n=8192,
        batch_size=1024,
    ),
]
