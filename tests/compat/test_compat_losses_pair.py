"""Pair losses vs the reference: Contrastive, SNRContrastive, IntraPairVariance, (Generalized)
LiftedStructure, MultiSimilarity, Circle, SupCon.

Same constructor arguments, same inputs (float64), same loss values, gradients and unreduced
loss dicts. Where pml fixes a reference "Known issue" the test asserts the documented
difference instead (docs/compatibility.md, section pml-losses).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch

pytest.importorskip("pytorch_metric_learning")
import pytorch_metric_learning.distances as ref_distances
import pytorch_metric_learning.losses as ref_losses
import pytorch_metric_learning.miners as ref_miners
import pytorch_metric_learning.reducers as ref_reducers
import pytorch_metric_learning.regularizers as ref_regularizers

import pml.distances as our_distances
import pml.losses as our_losses
import pml.reducers as our_reducers
import pml.regularizers as our_regularizers

pytestmark = pytest.mark.compat

Lib = dict[str, Any]
OURS: Lib = {
    "losses": our_losses,
    "distances": our_distances,
    "reducers": our_reducers,
    "regularizers": our_regularizers,
}
REF: Lib = {
    "losses": ref_losses,
    "distances": ref_distances,
    "reducers": ref_reducers,
    "regularizers": ref_regularizers,
}
NAMES = [
    "ContrastiveLoss",
    "SignalToNoiseRatioContrastiveLoss",
    "IntraPairVarianceLoss",
    "GeneralizedLiftedStructureLoss",
    "LiftedStructureLoss",
    "MultiSimilarityLoss",
    "CircleLoss",
    "SupConLoss",
]


def no_kwargs(lib: Lib) -> dict:
    return {}


def kw(**values: Any) -> Callable[[Lib], dict]:
    def make(lib: Lib) -> dict:
        return dict(values)

    return make


def with_distance(name: str, **values: Any) -> Callable[[Lib], dict]:
    def make(lib: Lib) -> dict:
        return {"distance": getattr(lib["distances"], name)(), **values}

    return make


def with_reducer(name: str, **reducer_kwargs: Any) -> Callable[[Lib], dict]:
    def make(lib: Lib) -> dict:
        return {"reducer": getattr(lib["reducers"], name)(**reducer_kwargs)}

    return make


def with_regularizer(lib: Lib) -> dict:
    return {
        "embedding_regularizer": lib["regularizers"].LpRegularizer(),
        "embedding_reg_weight": 0.3,
    }


CONFIGS = [
    ("ContrastiveLoss", no_kwargs),
    ("ContrastiveLoss", kw(pos_margin=0.2, neg_margin=1.3)),
    ("ContrastiveLoss", with_distance("CosineSimilarity", pos_margin=0.9, neg_margin=0.2)),
    ("ContrastiveLoss", with_reducer("MeanReducer")),
    ("ContrastiveLoss", with_reducer("ThresholdReducer", low=0.05, high=0.6)),
    ("ContrastiveLoss", with_reducer("PerAnchorReducer")),
    ("ContrastiveLoss", with_regularizer),
    ("SignalToNoiseRatioContrastiveLoss", no_kwargs),
    ("SignalToNoiseRatioContrastiveLoss", kw(pos_margin=0.1, neg_margin=1.2)),
    ("IntraPairVarianceLoss", no_kwargs),
    ("IntraPairVarianceLoss", with_distance("LpDistance", pos_eps=0.05, neg_eps=0.1)),
    ("IntraPairVarianceLoss", with_reducer("AvgNonZeroReducer")),
    ("GeneralizedLiftedStructureLoss", no_kwargs),
    ("GeneralizedLiftedStructureLoss", kw(neg_margin=0.5, pos_margin=0.1)),
    (
        "GeneralizedLiftedStructureLoss",
        with_distance("CosineSimilarity", neg_margin=0.1, pos_margin=0.8),
    ),
    ("LiftedStructureLoss", no_kwargs),
    ("LiftedStructureLoss", kw(neg_margin=0.8, pos_margin=0.1)),
    ("LiftedStructureLoss", with_distance("CosineSimilarity", neg_margin=0.2, pos_margin=0.9)),
    ("MultiSimilarityLoss", no_kwargs),
    ("MultiSimilarityLoss", kw(alpha=1, beta=10, base=0.3)),
    ("MultiSimilarityLoss", with_distance("LpDistance", base=0.9)),
    ("CircleLoss", no_kwargs),
    ("CircleLoss", kw(m=0.25, gamma=256)),
    ("SupConLoss", no_kwargs),
    ("SupConLoss", kw(temperature=0.5)),
    ("SupConLoss", with_distance("LpDistance")),
]
IDS = [f"{name}-{i}" for i, (name, _) in enumerate(CONFIGS)]


def build(name: str, make: Callable[[Lib], dict]) -> tuple[Any, Any]:
    return getattr(our_losses, name)(**make(OURS)), getattr(ref_losses, name)(**make(REF))


def batch(n: int = 24, d: int = 8, classes: int = 6, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, classes, (n,), generator=g)
    centers = torch.randn(classes, d, generator=g, dtype=torch.float64)
    emb = centers[labels] + 0.7 * torch.randn(n, d, generator=g, dtype=torch.float64)
    return emb, labels


def run(fn, emb, labels, indices_tuple=None, ref_emb=None, ref_labels=None, same_ref=False):
    e = emb.clone().requires_grad_()
    r = e if same_ref else (None if ref_emb is None else ref_emb.clone().requires_grad_())
    rl = labels if same_ref and ref_labels is None else ref_labels
    loss = fn(e, labels, indices_tuple, r, rl)
    if loss.requires_grad:
        loss.backward()
    return loss.detach(), e.grad, (None if r is None or same_ref else r.grad)


def compare(name, make, emb, labels, indices_tuple=None, ref_emb=None, ref_labels=None, **kw):
    """Run both libraries on copies of the same inputs; assert loss and gradients agree."""
    ours, ref = build(name, make)
    (lo, go, gro), (lr, gr, grr) = (
        run(f, emb, labels, indices_tuple, ref_emb, ref_labels, **kw) for f in (ours, ref)
    )
    torch.testing.assert_close(lo, lr, rtol=1e-9, atol=1e-12, equal_nan=True)
    for ours_g, ref_g in ((go, gr), (gro, grr)):
        if ref_g is None:
            assert ours_g is None or (ours_g == 0).all()
            continue
        torch.testing.assert_close(ours_g, ref_g, rtol=1e-7, atol=1e-10)
    return lo


@pytest.mark.parametrize(("name", "make"), CONFIGS, ids=IDS)
@pytest.mark.parametrize("seed", [0, 1])
def test_labels(name, make, seed):
    emb, labels = batch(seed=seed)
    value = compare(name, make, emb, labels)
    assert torch.isfinite(value) and value != 0


MINERS = [
    lambda: ref_miners.MultiSimilarityMiner(epsilon=0.1),
    lambda: ref_miners.PairMarginMiner(pos_margin=0.3, neg_margin=0.9),
    lambda: ref_miners.TripletMarginMiner(margin=0.3, type_of_triplets="all"),
    lambda: ref_miners.TripletMarginMiner(margin=0.2, type_of_triplets="semihard"),
    lambda: ref_miners.BatchHardMiner(),
]
MINER_IDS = [
    "multisim_pairs",
    "pair_margin_pairs",
    "triplets_all",
    "triplets_semihard",
    "batch_hard",
]


@pytest.mark.parametrize(("name", "make"), CONFIGS, ids=IDS)
@pytest.mark.parametrize("miner", MINERS, ids=MINER_IDS)
def test_miner_indices_tuple(name, make, miner):
    emb, labels = batch(seed=3)
    indices_tuple = miner()(emb, labels)
    assert len(indices_tuple[0]) > 0
    per_anchor = make is CONFIGS[5][1]
    if per_anchor and len(indices_tuple) == 3:
        pytest.skip("duplicate pairs: PerAnchorReducer fix of pml-reducers (docs/compatibility.md)")
    compare(name, make, emb, labels, indices_tuple)
    if not per_anchor:
        compare(name, make, emb, None, indices_tuple)  # labels not needed with a tuple


@pytest.mark.parametrize(("name", "make"), CONFIGS, ids=IDS)
def test_ref_emb(name, make):
    emb, labels = batch(seed=4)
    ref_emb, ref_labels = batch(n=17, seed=5)
    if name != "LiftedStructureLoss":  # documented difference: test_lifted_ref_emb_differs
        compare(name, make, emb, labels, ref_emb=ref_emb, ref_labels=ref_labels)
        miner_pairs = ref_miners.PairMarginMiner(pos_margin=0.3, neg_margin=0.9)(
            emb, labels, ref_emb, ref_labels
        )
        compare(name, make, emb, labels, miner_pairs, ref_emb=ref_emb, ref_labels=ref_labels)
    # the same objects, and an equal copy of the labels (keeps the pairs (i, i))
    compare(name, make, emb, labels, same_ref=True)
    compare(name, make, emb, labels, ref_labels=labels.clone(), same_ref=True)


@pytest.mark.parametrize(("name", "make"), CONFIGS, ids=IDS)
@pytest.mark.parametrize(
    "case", ["no_positives", "single_class", "single_sample", "two_labels", "three"]
)
def test_edge_batches(name, make, case):
    emb, _ = batch(n=8, seed=6)
    labels = {
        "no_positives": torch.arange(8),
        "single_class": torch.zeros(8, dtype=torch.long),
        "single_sample": torch.tensor([2]),
        "two_labels": torch.tensor([0, 0, 0, 0, 1, 1, 1, 1]),
        "three": torch.tensor([0, 0, 1]),
    }[case]
    compare(name, make, emb[: len(labels)], labels)


@pytest.mark.parametrize("name", NAMES)
def test_small_and_empty_index_tuples(name):
    emb, labels = batch()
    e = torch.empty(0, dtype=torch.long)
    compare(name, no_kwargs, emb, labels, (e, e, e))
    compare(name, no_kwargs, emb, labels, (e, e, e, e))
    one_each = (torch.tensor([0]), torch.tensor([1]), torch.tensor([0]), torch.tensor([2]))
    compare(name, no_kwargs, emb, None, one_each)
    pos_only = (torch.tensor([0, 1, 5]), torch.tensor([1, 0, 0]), e, e)
    if name not in (
        "CircleLoss",
        "MultiSimilarityLoss",
        "SupConLoss",
        "GeneralizedLiftedStructureLoss",
    ):
        compare(name, no_kwargs, emb, None, pos_only)


@pytest.mark.parametrize(("name", "make"), CONFIGS, ids=IDS)
@pytest.mark.parametrize("source", ["labels", "pairs", "triplets"])
def test_unreduced_loss_dict(name, make, source):
    """DoNothingReducer: same sub-losses, values, indices and order as the reference."""
    emb, labels = batch(seed=7)
    tup = None
    if source == "pairs":
        tup = ref_miners.PairMarginMiner(pos_margin=0.3, neg_margin=0.9)(emb, labels)
    elif source == "triplets":
        tup = ref_miners.TripletMarginMiner(margin=0.3, type_of_triplets="all")(emb, labels)

    def make_nothing(lib: Lib) -> dict:
        return {**make(lib), "reducer": lib["reducers"].DoNothingReducer()}

    ours, ref = build(name, make_nothing)
    got, want = ours(emb, labels, tup), ref(emb, labels, tup)
    assert list(got) == list(want)
    for key, w in want.items():
        g = got[key]
        assert g["reduction_type"] == w["reduction_type"]
        if not isinstance(w["losses"], torch.Tensor):
            assert g["losses"] == w["losses"]
            continue
        assert g["losses"].shape == w["losses"].shape
        torch.testing.assert_close(g["losses"], w["losses"], rtol=1e-9, atol=1e-12)
        gi, wi = g["indices"], w["indices"]
        if wi is None:
            assert gi is None
            continue
        for a, b in zip(
            gi if isinstance(gi, tuple) else (gi,), wi if isinstance(wi, tuple) else (wi,)
        ):
            assert torch.equal(a, b)


@pytest.mark.parametrize("name", NAMES)
def test_api_hierarchy_and_records(name):
    ours, ref = getattr(our_losses, name)(), getattr(ref_losses, name)()
    ref_mro = [
        c.__name__ for c in type(ref).__mro__ if c.__module__.startswith("pytorch_metric_learning")
    ]
    our_mro = [c.__name__ for c in type(ours).__mro__ if c.__module__.startswith("pml")]
    assert [c for c in ref_mro if "Mixin" not in c and "ModuleWith" not in c] == [
        c for c in our_mro if "Mixin" not in c and "ModuleWith" not in c
    ]
    assert set(ref._record_these) <= set(ours._record_these)
    for attr in ref._record_these:
        assert getattr(ours, attr) == getattr(ref, attr), attr
    assert type(ours.distance).__name__ == type(ref.distance).__name__
    assert ours.distance.is_inverted == ref.distance.is_inverted
    assert type(ours.reducer).__name__ == type(ref.reducer).__name__
    assert ours.sub_loss_names() == ref.sub_loss_names()


@pytest.mark.parametrize(
    ("name", "bad"),
    [
        ("SignalToNoiseRatioContrastiveLoss", "LpDistance"),
        ("CircleLoss", "LpDistance"),
        ("CircleLoss", "DotProductSimilarity"),
    ],
)
def test_locked_distances_raise_assertion_errors(name, bad):
    with pytest.raises(AssertionError):
        getattr(ref_losses, name)(distance=getattr(ref_distances, bad)())
    with pytest.raises(AssertionError):
        getattr(our_losses, name)(distance=getattr(our_distances, bad)())


@pytest.mark.parametrize(
    "name", ["MultiSimilarityLoss", "CircleLoss", "SupConLoss", "GeneralizedLiftedStructureLoss"]
)
def test_overlapping_tuple_raises_assertion_errors(name):
    emb, labels = batch()
    bad = (torch.tensor([0, 1]), torch.tensor([1, 0]), torch.tensor([0, 2]), torch.tensor([1, 3]))
    with pytest.raises(AssertionError):
        getattr(ref_losses, name)()(emb, labels, bad)
    with pytest.raises(AssertionError):
        getattr(our_losses, name)()(emb, labels, bad)


def test_reducer_stats_with_collect_stats():
    """With stats on, the reducers see every per-pair loss, exactly as in the reference."""
    emb, labels = batch(seed=2)

    def make(lib: Lib) -> dict:
        r = lib["reducers"]
        multi = r.MultipleReducers(
            {
                "pos_loss": r.AvgNonZeroReducer(collect_stats=True),
                "neg_loss": r.AvgNonZeroReducer(collect_stats=True),
            }
        )
        return {"reducer": multi}

    ours, ref = build("ContrastiveLoss", make)
    torch.testing.assert_close(ours(emb, labels), ref(emb, labels), rtol=1e-9, atol=1e-12)
    for key in ("pos_loss", "neg_loss"):
        o, r = ours.reducer.reducers[key], ref.reducer.reducers[key]
        for stat in ("losses_size", "num_past_filter"):
            assert getattr(o, stat) == getattr(r, stat), (key, stat)


# --------------------------------------------------------------------------- documented fixes


def test_lifted_ref_emb_differs():
    """docs/compatibility.md: with a separate ref_emb the negatives of p are reference column p."""
    emb, labels = batch(seed=4)
    ref_emb, ref_labels = batch(n=17, seed=5)
    ours, ref = our_losses.LiftedStructureLoss(), ref_losses.LiftedStructureLoss()
    a = ours(emb, labels, None, ref_emb, ref_labels)
    b = ref(emb, labels, None, ref_emb, ref_labels)
    assert torch.isfinite(a) and torch.isfinite(b) and not torch.isclose(a, b, rtol=1e-6)
    # where the reference's row p happens to hold the negatives of reference sample p (a
    # copy of the batch as reference set, symmetric pair lists, symmetric distance), both agree
    pairs = ref_miners.PairMarginMiner(pos_margin=0, neg_margin=100)(emb, labels)  # all pairs
    copy_emb = emb.clone()
    torch.testing.assert_close(
        ours(emb, labels, pairs, copy_emb, labels.clone()),
        ref(emb, labels, pairs, copy_emb, labels.clone()),
        rtol=1e-9,
        atol=1e-12,
    )


@pytest.mark.parametrize(
    "name", ["ContrastiveLoss", "SignalToNoiseRatioContrastiveLoss", "CircleLoss"]
)
def test_nonfinite_embeddings_differ(name):
    """docs/compatibility.md: the reference's AvgNonZero filter drops the NaN pair losses."""
    emb, labels = batch(seed=8)
    tup = ref_miners.PairMarginMiner(pos_margin=0.3, neg_margin=0.9)(emb, labels)
    emb = emb.clone()
    emb[int(tup[0][0])] = float("nan")  # pairs not touching this row stay finite
    ours, ref = getattr(our_losses, name)(), getattr(ref_losses, name)()
    assert torch.isnan(ours(emb, labels, tup))
    assert torch.isfinite(ref(emb, labels, tup))
