"""Miners: one forward (mining) call on a class-clustered batch, D = 128, 8 items per class."""

from __future__ import annotations

TITLE = "Miners: one mining call, D = 128, 8 per class (clustered embeddings)"

D = 128
PER_CLASS = 8


def _data(n: int, d: int = D, per_class: int = PER_CLASS):
    from pml.core.testing import clustered_embeddings

    num_classes = -(-n // per_class)  # enough classes for n rows; sliced to n below
    return clustered_embeddings(num_classes, per_class, d, seed=0, spread=1.0)


def _step(miner, n: int):  # type: ignore[no-untyped-def]
    emb, labels = _data(n)
    emb, labels = emb[:n], labels[:n]

    def step() -> None:
        out = miner(emb, labels)
        del out

    return step


def _factory(lib: str, name: str, **kwargs):  # type: ignore[no-untyped-def]
    def make(n: int, d: int = D):  # type: ignore[no-untyped-def]
        if lib == "pml":
            import pml.miners as M
        else:
            import pytorch_metric_learning.miners as M  # type: ignore[no-redef]
        return _step(getattr(M, name)(**kwargs), n)

    return make


# factories resolved by name from the harness ("module:function")
angular_pml, angular_ref = _factory("pml", "AngularMiner"), _factory("ref", "AngularMiner")
bhard_pml, bhard_ref = _factory("pml", "BatchHardMiner"), _factory("ref", "BatchHardMiner")
beh_pml, beh_ref = _factory("pml", "BatchEasyHardMiner"), _factory("ref", "BatchEasyHardMiner")
dw_pml = _factory("pml", "DistanceWeightedMiner")
dw_ref = _factory("ref", "DistanceWeightedMiner")
packaged_pml = _factory("pml", "EmbeddingsAlreadyPackagedAsTriplets")
packaged_ref = _factory("ref", "EmbeddingsAlreadyPackagedAsTriplets")
hdc_pml, hdc_ref = _factory("pml", "HDCMiner"), _factory("ref", "HDCMiner")
ms_pml, ms_ref = _factory("pml", "MultiSimilarityMiner"), _factory("ref", "MultiSimilarityMiner")
pm_pml, pm_ref = _factory("pml", "PairMarginMiner"), _factory("ref", "PairMarginMiner")
tm_pml, tm_ref = _factory("pml", "TripletMarginMiner"), _factory("ref", "TripletMarginMiner")
tmh_pml = _factory("pml", "TripletMarginMiner", type_of_triplets="hard")
tmh_ref = _factory("ref", "TripletMarginMiner", type_of_triplets="hard")
uh_pml, uh_ref = _factory("pml", "UniformHistogramMiner"), _factory("ref", "UniformHistogramMiner")
# tuples_per_anchor (issue 15): the reference has no such keyword, its column is the plain miner
ms64_pml, ms64_ref = _factory("pml", "MultiSimilarityMiner", tuples_per_anchor=64), ms_ref
tm64_pml, tm64_ref = _factory("pml", "TripletMarginMiner", tuples_per_anchor=64), tm_ref
# "easy" selects almost every candidate: without the cap the output itself is the memory
tme_pml = _factory("pml", "TripletMarginMiner", type_of_triplets="easy")
tme_ref = _factory("ref", "TripletMarginMiner", type_of_triplets="easy")
tme64_pml = _factory("pml", "TripletMarginMiner", type_of_triplets="easy", tuples_per_anchor=64)
tme64_ref = tme_ref


def _case(name: str, key: str, n: int, ref_skip: str | None = None, repeats: int = 3) -> dict:
    return {
        "name": name,
        "params": {"n": n, "d": D},
        "pml": f"{__name__}:{key}_pml",
        "ref": f"{__name__}:{key}_ref",
        "repeats": repeats,
        "ref_skip": ref_skip,
    }


_GATHER = "gathers 3 x T x D floats (T = 7.3M triplets at N = 1024: > 8 GB)"
SUITE = [
    _case("AngularMiner", "angular", 1024, ref_skip=_GATHER, repeats=1),
    _case("AngularMiner", "angular", 4096, ref_skip=_GATHER, repeats=1),
    _case("BatchEasyHardMiner", "beh", 1024),
    _case("BatchEasyHardMiner", "beh", 4096),
    _case("BatchHardMiner", "bhard", 1024),
    _case("BatchHardMiner", "bhard", 2048),
    _case("BatchHardMiner", "bhard", 4096),
    _case("DistanceWeightedMiner", "dw", 1024),
    _case("DistanceWeightedMiner", "dw", 4096),
    _case("EmbeddingsAlreadyPackagedAsTriplets (N = 1023)", "packaged", 1023),
    _case("EmbeddingsAlreadyPackagedAsTriplets (N = 4095)", "packaged", 4095),
    _case("HDCMiner", "hdc", 1024),
    _case("HDCMiner", "hdc", 4096, repeats=1),
    _case("MultiSimilarityMiner", "ms", 1024),
    _case("MultiSimilarityMiner", "ms", 2048),
    _case("MultiSimilarityMiner", "ms", 4096),
    _case("MultiSimilarityMiner tuples_per_anchor=64 (reference: plain)", "ms64", 4096),
    _case("PairMarginMiner", "pm", 1024),
    _case("PairMarginMiner", "pm", 4096),
    _case("TripletMarginMiner", "tm", 1024, repeats=1),
    _case(
        "TripletMarginMiner",
        "tm",
        4096,
        ref_skip="all 117M candidate triplets as int64 indices plus gathered values (> 8 GB)",
        repeats=1,
    ),
    _case(
        "TripletMarginMiner tuples_per_anchor=64 (reference: plain)",
        "tm64",
        4096,
        ref_skip="all 117M candidate triplets as int64 indices plus gathered values (> 8 GB)",
        repeats=1,
    ),
    _case(
        "TripletMarginMiner easy",
        "tme",
        4096,
        ref_skip="all 117M candidate triplets as int64 indices plus gathered values (> 8 GB)",
        repeats=1,
    ),
    _case(
        "TripletMarginMiner easy tuples_per_anchor=64 (reference: plain)",
        "tme64",
        4096,
        ref_skip="all 117M candidate triplets as int64 indices plus gathered values (> 8 GB)",
        repeats=1,
    ),
    _case("TripletMarginMiner hard", "tmh", 1024, repeats=1),
    _case(
        "TripletMarginMiner hard",
        "tmh",
        4096,
        ref_skip="all 117M candidate triplets as int64 indices plus gathered values (> 8 GB)",
        repeats=1,
    ),
    _case("UniformHistogramMiner", "uh", 1024),
    _case("UniformHistogramMiner", "uh", 4096, repeats=1),
]
