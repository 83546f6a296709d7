"""AccuracyCalculator: arguments, metric set, edge cases, fixes of the reference's issues."""

from __future__ import annotations

import logging
import math

import numpy as np
import pytest
import torch

from pml.core.testing import clustered_embeddings
from pml.eval import (
    EQUALITY,
    AccuracyCalculator,
    TorchKNN,
    get_label_match_counts,
    get_lone_query_labels,
    get_relevance_mask,
    maybe_get_avg_of_avgs,
    mean_average_precision,
    precision_at_k,
    r_precision,
)

CPU = torch.device("cpu")
ALL = [
    "AMI",
    "NMI",
    "mean_average_precision",
    "mean_average_precision_at_r",
    "mean_reciprocal_rank",
    "precision_at_1",
    "r_precision",
]
KNN = ALL[2:]


def calc(**kwargs) -> AccuracyCalculator:
    kwargs.setdefault("device", CPU)
    return AccuracyCalculator(**kwargs)


class ListKNN(TorchKNN):
    """Same neighbours as TorchKNN, but forces the neighbour-list (generic) path."""

    def __call__(self, *args, **kwargs):
        return super().__call__(*args, **kwargs)


SPEC_EMB = torch.tensor([[0.0], [1.0], [2.0], [10.0], [11.0], [20.0]])
SPEC_LABELS = torch.tensor([0, 0, 0, 1, 1, 2])


# ---------------------------------------------------------------------------- construction
def test_metric_discovery_order_and_defaults():
    c = calc()
    assert c.get_curr_metrics() == ALL
    assert list(c.original_function_dict) == ALL
    assert c.k is None and c.avg_of_avgs is False and c.return_per_class is False
    assert c.label_comparison_fn is None and c.device == CPU
    assert isinstance(c.knn_func, TorchKNN)
    assert c.requires_clustering() == ["NMI", "AMI"]
    assert "mean_reciprocal_rank" in c.requires_knn()
    assert c.description() == "" and calc(avg_of_avgs=True).description() == "avg_of_avgs"


def test_include_exclude():
    c = calc(include=["precision_at_1", "NMI", "AMI"], exclude=("AMI",))
    assert c.get_curr_metrics() == ["NMI", "precision_at_1"]
    assert c.get_function_dict(exclude=("NMI",)).keys() == {"precision_at_1"}


@pytest.mark.parametrize("arg", ["include", "exclude"])
def test_include_exclude_type_error(arg):
    with pytest.raises(TypeError, match=f"{arg}.*str"):
        calc(**{arg: "precision_at_1"})


@pytest.mark.parametrize("arg", ["include", "exclude"])
def test_include_exclude_unknown_name(arg):
    with pytest.raises(ValueError, match=f"{arg}.*precision_at_1"):
        calc(**{arg: ("precision_at_2",)})


def test_avg_of_avgs_and_return_per_class_exclusive():
    with pytest.raises(ValueError, match="avg_of_avgs and return_per_class"):
        calc(avg_of_avgs=True, return_per_class=True)


@pytest.mark.parametrize("k", [0, -1, 1.5, 2.0, "max"])
def test_bad_k(k):
    with pytest.raises(ValueError, match="k must be"):
        calc(k=k)


@pytest.mark.parametrize("k", [True, False])
def test_bool_k_is_rejected(k):
    # fix: the reference accepts k=True (a bool is an int) and retrieves one neighbour
    with pytest.raises(TypeError, match="k must be"):
        calc(k=k)


def test_numpy_integer_k_is_accepted():
    c = calc(k=np.int64(3))
    assert c.k == 3 and type(c.k) is int


def test_custom_comparison_with_clustering_not_implemented():
    with pytest.raises(NotImplementedError, match="NMI"):
        calc(label_comparison_fn=torch.eq)
    calc(label_comparison_fn=torch.eq, exclude=("NMI", "AMI"))


def test_device_accepts_strings():
    assert calc(device="cpu").device == CPU


# ---------------------------------------------------------------------------- values
def test_spec_example_lone_label_excluded():
    out = calc(exclude=("NMI", "AMI")).get_accuracy(SPEC_EMB, SPEC_LABELS)
    assert out == {m: 1.0 for m in KNN}
    per_class = calc(exclude=("NMI", "AMI"), return_per_class=True).get_accuracy(
        SPEC_EMB, SPEC_LABELS
    )
    assert per_class == {m: [1.0, 1.0] for m in KNN}


def test_reference_none_forces_ref_includes_query():
    c = calc(exclude=("NMI", "AMI"))
    a = c.get_accuracy(SPEC_EMB, SPEC_LABELS, ref_includes_query=False)
    b = c.get_accuracy(SPEC_EMB, SPEC_LABELS, SPEC_EMB, SPEC_LABELS, True)
    assert a == b


def test_per_call_include_exclude_and_curr_metrics():
    c = calc(exclude=("AMI",))
    out = c.get_accuracy(SPEC_EMB, SPEC_LABELS, include=("precision_at_1", "AMI"))
    assert list(out) == ["precision_at_1"]  # AMI is a metric, but not this instance's
    assert c.get_curr_metrics() == ["precision_at_1"]


@pytest.mark.parametrize("arg", ["include", "exclude"])
def test_unknown_metric_name_per_call_is_rejected(arg):
    # fix: a typo in get_accuracy(include=...) returned {} (exclude=...: was ignored)
    c = calc(exclude=("AMI",))
    with pytest.raises(ValueError, match=f"{arg} has unknown metrics.*precision_at_2.*AMI"):
        c.get_accuracy(SPEC_EMB, SPEC_LABELS, **{arg: ("precision_at_2",)})


@pytest.mark.parametrize("arg", ["include", "exclude"])
def test_string_metric_names_per_call_are_rejected(arg):
    # a str is a container of substrings: include="precision_at_1" matched by substring
    with pytest.raises(TypeError, match=f"{arg}.*str"):
        calc().get_accuracy(SPEC_EMB, SPEC_LABELS, **{arg: "precision_at_1"})


def test_mean_reciprocal_rank_alone():
    # fix: the reference omits it from requires_knn() and raises TypeError here
    emb, labels = clustered_embeddings(5, 8, 4, seed=0, spread=1.5)
    alone = calc(include=("mean_reciprocal_rank",)).get_accuracy(emb, labels)
    both = calc(include=("mean_reciprocal_rank", "precision_at_1")).get_accuracy(emb, labels)
    assert alone["mean_reciprocal_rank"] == both["mean_reciprocal_rank"]
    generic = calc(include=("mean_reciprocal_rank",), knn_func=ListKNN()).get_accuracy(emb, labels)
    assert generic == alone


@pytest.mark.parametrize("k", [None, 1, 3, "max_bin_count", 50])
@pytest.mark.parametrize("avg", ["plain", "avg_of_avgs", "per_class"])
@pytest.mark.parametrize("same_set", [True, False])
def test_fast_ranking_equals_neighbour_lists(k, avg, same_set):
    emb, labels = clustered_embeddings(6, 9, 4, seed=1, spread=2.0)
    labels = labels * 7 + 3  # arbitrary label values
    kw = {"k": k, "exclude": ("NMI", "AMI")}
    kw["avg_of_avgs"] = avg == "avg_of_avgs"
    kw["return_per_class"] = avg == "per_class"
    split = (emb[:20], labels[:20], emb[20:], labels[20:], False)
    args = (emb, labels) if same_set else split
    fast = calc(**kw).get_accuracy(*args)
    slow = calc(**kw, knn_func=ListKNN()).get_accuracy(*args)
    assert fast.keys() == slow.keys()
    for name in fast:
        np.testing.assert_allclose(fast[name], slow[name], rtol=1e-12)


def test_single_sample_class_and_missing_query_label():
    emb = torch.tensor([[0.0], [0.1], [5.0], [9.0], [9.1]])
    labels = torch.tensor([0, 0, 1, 2, 2])  # class 1 has one sample
    out = calc(exclude=("NMI", "AMI"), return_per_class=True).get_accuracy(emb, labels)
    assert out["precision_at_1"] == [1.0, 1.0]  # classes 0 and 2 only
    query = torch.tensor([[0.0], [5.0]])
    q_labels = torch.tensor([0, 7])  # 7 is not in the reference
    out = calc(exclude=("NMI", "AMI")).get_accuracy(query, q_labels, emb, labels, False)
    assert out["precision_at_1"] == 1.0 and out["mean_average_precision"] == 1.0


def test_all_queries_lone_gives_nan(caplog):
    query = torch.tensor([[0.0], [1.0]])
    with caplog.at_level(logging.WARNING, logger="PML"):
        out = calc(exclude=("NMI", "AMI")).get_accuracy(
            query, torch.tensor([5, 6]), query, torch.tensor([0, 1]), False
        )
    assert all(math.isnan(v) for v in out.values())
    assert "None of the query labels" in caplog.text
    per_class = calc(exclude=("NMI", "AMI"), return_per_class=True).get_accuracy(
        query, torch.tensor([5, 6]), query, torch.tensor([0, 1]), False
    )
    assert all(len(v) == 2 and all(math.isnan(x) for x in v) for v in per_class.values())


def test_k_larger_than_reference_is_clamped(caplog):
    # fix: the reference lets faiss pad with -1 and reports MAP > 1
    emb, labels = clustered_embeddings(3, 4, 2, seed=2, spread=1.0)
    with caplog.at_level(logging.WARNING, logger="PML"):
        big = calc(k=100, exclude=("NMI", "AMI")).get_accuracy(emb, labels)
    assert "exceeds" in caplog.text
    full = calc(exclude=("NMI", "AMI")).get_accuracy(emb, labels)
    assert big == full
    assert all(0.0 <= v <= 1.0 for v in big.values())
    generic = calc(k=100, exclude=("NMI", "AMI"), knn_func=ListKNN()).get_accuracy(emb, labels)
    assert generic == full


def test_small_k_warns_for_r_metrics(caplog):
    emb, labels = clustered_embeddings(3, 5, 2, seed=2)
    with caplog.at_level(logging.WARNING, logger="PML"):
        calc(k=2, exclude=("NMI", "AMI")).get_accuracy(emb, labels)
    assert "r_precision" in caplog.text


def test_labels_above_2_pow_24_stay_distinct():
    # fix: the reference casts labels to float32, where 16777216 == 16777217
    emb = torch.tensor([[0.0], [0.1], [0.2], [0.3]])
    labels = torch.tensor([16777216, 16777217, 16777216, 16777217])
    out = calc(include=("precision_at_1", "NMI")).get_accuracy(emb, labels)
    assert out["precision_at_1"] == 0.0  # nearest neighbours alternate classes
    small = calc(include=("precision_at_1",)).get_accuracy(emb, torch.tensor([0, 1, 0, 1]))
    assert small["precision_at_1"] == 0.0


def test_float64_embeddings_are_kept():
    seen = {}

    class Spy(AccuracyCalculator):
        def calculate_spy(self, query, query_labels, **kwargs):
            seen["dtypes"] = (query.dtype, query_labels.dtype)
            return 0.0

    Spy(include=("spy",), device=CPU).get_accuracy(SPEC_EMB.double(), SPEC_LABELS)
    assert seen["dtypes"] == (torch.float64, torch.int64)


def test_multi_dimensional_labels_default_comparison():
    # fix: the reference fails with a shape error; a row is one class
    emb, labels = clustered_embeddings(4, 6, 3, seed=3, spread=1.5)
    rows = torch.stack([labels // 2, labels % 2], dim=1)
    for kw in ({}, {"knn_func": ListKNN()}):
        got = calc(exclude=("NMI", "AMI"), **kw).get_accuracy(emb, rows)
        want = calc(exclude=("NMI", "AMI")).get_accuracy(emb, labels)
        assert got == pytest.approx(want)
    assert calc(include=("NMI",)).get_accuracy(emb, rows)["NMI"] == pytest.approx(
        calc(include=("NMI",)).get_accuracy(emb, labels)["NMI"]
    )


def test_multi_dimensional_labels_custom_comparison():
    emb, labels = clustered_embeddings(4, 6, 3, seed=3, spread=1.5)
    rows = torch.stack([labels, torch.arange(len(labels))], dim=1)  # 2nd column: noise

    def first_column_equal(a, b):
        return a[..., 0] == b[..., 0]

    got = calc(label_comparison_fn=first_column_equal, exclude=("NMI", "AMI"))
    out = got.get_accuracy(emb, rows)
    # every row is its own "class" (unique rows), but relevance uses the first column
    want = calc(exclude=("NMI", "AMI")).get_accuracy(emb, labels)
    assert out["precision_at_1"] == pytest.approx(want["precision_at_1"])
    assert out["mean_average_precision"] == pytest.approx(want["mean_average_precision"])


def test_non_reflexive_comparison_gives_finite_values():
    # fix: the reference subtracts the self match even when a label does not match itself
    emb = torch.tensor([[0.0], [0.1], [5.0], [5.1]])
    labels = torch.tensor([0, 1, 2, 3])

    def pairs(a, b):  # 0 matches 1 and 2 matches 3, nothing matches itself
        return (a // 2 == b // 2) & (a != b)

    out = calc(label_comparison_fn=pairs, exclude=("NMI", "AMI"), knn_func=ListKNN())
    result = out.get_accuracy(emb, labels)
    assert result == {m: 1.0 for m in KNN}


def test_custom_comparison_matches_equality():
    emb, labels = clustered_embeddings(5, 6, 3, seed=4, spread=1.5)
    custom = calc(label_comparison_fn=lambda a, b: a == b, exclude=("NMI", "AMI"))
    assert custom.get_accuracy(emb, labels) == pytest.approx(
        calc(exclude=("NMI", "AMI")).get_accuracy(emb, labels)
    )


def test_numpy_inputs():
    out = calc(exclude=("NMI", "AMI")).get_accuracy(SPEC_EMB.numpy(), SPEC_LABELS.numpy())
    assert out == {m: 1.0 for m in KNN}


def test_dtype_and_device(dtype, device):
    emb, labels = clustered_embeddings(4, 6, 5, seed=5, spread=0.05)
    c = AccuracyCalculator(exclude=("NMI", "AMI"), device=device)
    out = c.get_accuracy(emb.to(device, dtype), labels.to(device))
    assert out == {m: 1.0 for m in KNN}


# ---------------------------------------------------------------------------- bad input
def test_bad_inputs():
    c = calc(exclude=("NMI", "AMI"))
    with pytest.raises(TypeError, match="query"):
        c.get_accuracy([[0.0], [1.0]], SPEC_LABELS[:2])
    with pytest.raises(ValueError, match="query_labels"):
        c.get_accuracy(SPEC_EMB, SPEC_LABELS[:5])
    with pytest.raises(ValueError, match="reference_labels"):
        c.get_accuracy(SPEC_EMB, SPEC_LABELS, SPEC_EMB, SPEC_LABELS[:5])
    with pytest.raises(ValueError, match="reference_labels"):
        c.get_accuracy(SPEC_EMB, SPEC_LABELS, SPEC_EMB)
    with pytest.raises(ValueError, match="embedding size"):
        c.get_accuracy(SPEC_EMB, SPEC_LABELS, torch.zeros(6, 2), SPEC_LABELS)
    with pytest.raises(ValueError, match="query"):
        c.get_accuracy(SPEC_EMB[:, 0], SPEC_LABELS)


def test_query_must_be_reference_prefix():
    c = calc(exclude=("NMI", "AMI"))
    ref = torch.cat([SPEC_EMB, SPEC_EMB + 100])
    ref_labels = torch.cat([SPEC_LABELS, SPEC_LABELS])
    c.get_accuracy(SPEC_EMB, SPEC_LABELS, ref, ref_labels, True)
    with pytest.raises(ValueError, match="first len\\(query\\) rows"):
        c.get_accuracy(SPEC_EMB, SPEC_LABELS, ref.flip(0), ref_labels.flip(0), True)


# ---------------------------------------------------------------------------- subclassing
class WithPrecisionAt2(AccuracyCalculator):
    def calculate_precision_at_2(self, knn_labels, query_labels, not_lone_query_mask, **kwargs):
        knn_labels = knn_labels[not_lone_query_mask]
        query_labels = query_labels[not_lone_query_mask]
        # the reference's documented 3-argument call (fix: trailing args have defaults)
        return precision_at_k(knn_labels, query_labels[:, None], 2)

    def calculate_fancy(self, query, reference, query_labels, **kwargs):
        self.seen_kwargs = set(kwargs)
        return 0.5

    def requires_knn(self):
        return [*super().requires_knn(), "precision_at_2"]


def test_custom_metrics_are_discovered_and_called():
    c = WithPrecisionAt2(device=CPU, exclude=("NMI", "AMI"))
    assert c.get_curr_metrics() == [
        "fancy",
        "mean_average_precision",
        "mean_average_precision_at_r",
        "mean_reciprocal_rank",
        "precision_at_1",
        "precision_at_2",
        "r_precision",
    ]
    out = c.get_accuracy(SPEC_EMB, SPEC_LABELS)
    assert out["precision_at_2"] == 0.8  # class 0: 1, 1, 1; class 1: 1/2, 1/2 (tie by index)
    assert out["fancy"] == 0.5
    assert {"knn_labels", "knn_distances", "label_counts", "lone_query_labels"} <= c.seen_kwargs


def test_custom_metric_without_knn_gets_base_kwargs_only():
    c = WithPrecisionAt2(device=CPU, include=("fancy",))
    c.get_accuracy(SPEC_EMB, SPEC_LABELS)
    assert c.seen_kwargs == {"reference_labels", "ref_includes_query", "label_comparison_fn"}


def test_custom_metrics_get_unfiltered_knn_labels():
    seen = {}

    class Spy(AccuracyCalculator):
        def calculate_spy(self, knn_labels, not_lone_query_mask, knn_distances, **kwargs):
            seen.update(
                shape=tuple(knn_labels.shape),
                mask=not_lone_query_mask.tolist(),
                sorted=bool((knn_distances.diff(dim=1) >= 0).all()),
            )
            return 0.0

        def requires_knn(self):
            return [*super().requires_knn(), "spy"]

    Spy(include=("spy",), device=CPU).get_accuracy(SPEC_EMB, SPEC_LABELS)
    assert seen == {"shape": (6, 5), "mask": [True] * 5 + [False], "sorted": True}


def test_overridden_builtin_metric_is_used():
    class Fixed(AccuracyCalculator):
        def calculate_precision_at_1(self, **kwargs):
            return 0.25

    assert Fixed(include=("precision_at_1",), device=CPU).get_accuracy(SPEC_EMB, SPEC_LABELS) == {
        "precision_at_1": 0.25
    }


def test_ranking_route_only_stands_in_for_code_it_knows():
    from pml.eval._ranked import can_rank_exactly

    class Plain(AccuracyCalculator):
        pass

    class Halved(Plain):
        def calculate_precision_at_1(self, **kwargs):
            return super().calculate_precision_at_1(**kwargs) / 2

    plain, halved = Plain(device=CPU), Halved(device=CPU)
    assert can_rank_exactly(plain, plain.curr_function_dict)
    assert not can_rank_exactly(halved, halved.curr_function_dict)
    listed = calc(knn_func=ListKNN())
    assert not can_rank_exactly(listed, listed.curr_function_dict)
    want = plain.get_accuracy(SPEC_EMB, SPEC_LABELS)["precision_at_1"] / 2
    assert halved.get_accuracy(SPEC_EMB, SPEC_LABELS)["precision_at_1"] == want


# ---------------------------------------------------------------------------- helpers
def test_module_helpers():
    knn_labels = torch.tensor([[0, 1, 0], [1, 0, 0]])
    gt = torch.tensor([[0], [1]])
    counts = get_label_match_counts(torch.tensor([0, 1]), torch.tensor([0, 0, 1, 1, 1]), EQUALITY)
    assert counts[1].tolist() == [2, 3]
    assert precision_at_k(knn_labels, gt, 1) == 1.0
    assert r_precision(knn_labels, gt, False, counts) == pytest.approx((1 / 2 + 1 / 3) / 2)
    map_ = mean_average_precision(knn_labels, gt, False, counts)
    assert map_ == pytest.approx(((1 + 2 / 3) / 2 + 1 / 3) / 2)
    mask, r = get_relevance_mask((2, 3), gt, True, counts)
    assert r.tolist() == [1, 2] and mask.tolist() == [[True, False, False], [True, True, False]]
    lone, not_lone = get_lone_query_labels(torch.tensor([0, 1, 1]), counts, True, EQUALITY)
    assert lone.numel() == 0 and not_lone.all()
    values = torch.tensor([1.0, 0.0, 0.5], dtype=torch.float64)
    assert maybe_get_avg_of_avgs(values, torch.tensor([[2], [2], [9]]), True, False) == 0.5


def test_match_counts_custom_comparison_blocks():
    q = torch.arange(10)
    r = torch.arange(100) % 10
    _, counts = get_label_match_counts(q, r, lambda a, b: (a - b).abs() <= 1)
    assert counts.tolist() == [20] + [30] * 8 + [20]


# ---------------------------------------------------------------------------- clustering
def test_clustering_metrics_with_torch_kmeans(monkeypatch):
    from pml.eval import TorchKMeans, _faiss

    monkeypatch.setattr(_faiss, "get_faiss", lambda: None)
    c = calc(include=("NMI", "AMI"))
    assert isinstance(c.kmeans_func, TorchKMeans)
    emb, labels = clustered_embeddings(4, 10, 6, seed=7, spread=0.05)
    assert c.get_accuracy(emb, labels) == {"NMI": 1.0, "AMI": 1.0}


def test_clustering_uses_query_only():
    seen = {}

    def kmeans(x, n):
        seen.update(rows=len(x), n=n)
        return torch.zeros(len(x), dtype=torch.long)

    c = calc(include=("NMI",), kmeans_func=kmeans)
    c.get_accuracy(SPEC_EMB[:4], SPEC_LABELS[:4], SPEC_EMB, SPEC_LABELS, True)
    assert seen == {"rows": 4, "n": 2}


def test_kmeans_func_gets_a_float32_tensor_on_the_device_like_the_reference():
    # fix: pml passed the float64 query as float64; the reference passes float32 tensors
    seen = []

    def kmeans(x, n):
        seen.append((type(x), x.dtype, x.device, tuple(x.shape), type(n), n))
        return torch.zeros(len(x), dtype=torch.long)

    c = calc(include=("NMI",), kmeans_func=kmeans)
    for query in (SPEC_EMB.double().numpy(), SPEC_EMB.double(), SPEC_EMB.half()):
        c.get_accuracy(query, SPEC_LABELS)
    assert seen == [(torch.Tensor, torch.float32, CPU, (6, 1), int, 3)] * 3


# ---------------------------------------------------------------------------- NaN / inf
NAN_EMB, NAN_LABELS = clustered_embeddings(4, 6, 3, seed=3, spread=0.5)


def _knn_funcs():
    from pml.distances import LpDistance
    from pml.eval import CustomKNN, FaissKNN, _faiss

    funcs = [
        pytest.param(None, id="ranked"),
        pytest.param(ListKNN(), id="torch-lists"),
        pytest.param(CustomKNN(LpDistance()), id="custom"),
    ]
    if _faiss.faiss_available():
        funcs.append(pytest.param(FaissKNN(), id="faiss"))
    return funcs


@pytest.mark.parametrize("knn_func", _knn_funcs())
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_nan_or_inf_query_is_rejected_not_scored(knn_func, bad):
    # fix: one NaN query row still gave precision_at_1 == 1.0 (torch) / read labels[-1] (faiss)
    emb = NAN_EMB.clone()
    emb[3, 1] = bad
    c = calc(exclude=("NMI", "AMI"), knn_func=knn_func)
    with pytest.raises(ValueError, match="query must be finite"):
        c.get_accuracy(emb, NAN_LABELS)
    with pytest.raises(ValueError, match="query must be finite"):
        c.get_accuracy(emb[:8], NAN_LABELS[:8], NAN_EMB, NAN_LABELS)


@pytest.mark.parametrize("knn_func", _knn_funcs())
def test_nan_reference_is_rejected_not_scored(knn_func):
    ref = NAN_EMB.clone()
    ref[-1, 0] = float("nan")
    c = calc(exclude=("NMI", "AMI"), knn_func=knn_func)
    with pytest.raises(ValueError, match="reference must be finite"):
        c.get_accuracy(NAN_EMB[:8], NAN_LABELS[:8], ref, NAN_LABELS)


def test_nan_query_is_rejected_for_clustering_metrics():
    emb = NAN_EMB.clone()
    emb[0, 0] = float("nan")
    with pytest.raises(ValueError, match="query must be finite"):
        calc(include=("NMI",)).get_accuracy(emb, NAN_LABELS)


class MinusOneKNN:
    """A knn_func that pads with -1 (what faiss does when it finds fewer than k)."""

    def __call__(self, query, k, reference, ref_includes_query):
        d, i = TorchKNN()(query, k, reference, ref_includes_query)
        i[:, -1] = -1
        return d, i


def test_knn_func_index_minus_one_is_rejected_not_read_as_last_label():
    # fix: knn_labels = reference_labels[-1] silently scored the last reference item
    c = calc(exclude=("NMI", "AMI"), knn_func=MinusOneKNN(), k=2)
    with pytest.raises(ValueError, match="knn_func.*-1"):
        c.get_accuracy(NAN_EMB, NAN_LABELS)


def test_knn_func_index_past_the_reference_is_rejected():
    class TooFar(MinusOneKNN):
        def __call__(self, query, k, reference, ref_includes_query):
            d, i = super().__call__(query, k, reference, ref_includes_query)
            i[:, -1] = len(reference)
            return d, i

    with pytest.raises(ValueError, match="knn_func"):
        calc(exclude=("NMI", "AMI"), knn_func=TooFar(), k=2).get_accuracy(NAN_EMB, NAN_LABELS)


# ---------------------------------------------------------------------------- mixed inputs
@pytest.mark.parametrize("knn_func", _knn_funcs())
def test_mixed_dtypes_and_numpy_torch_inputs_are_evaluated(knn_func):
    # fix: a float64 numpy query with a float32 reference raised a dtype error (CustomKNN)
    query, q_labels = NAN_EMB[:10].double(), NAN_LABELS[:10]
    c = calc(exclude=("NMI", "AMI"), knn_func=knn_func, k=4)
    expected = c.get_accuracy(query, q_labels, NAN_EMB.double(), NAN_LABELS)
    mixed = [
        (query.numpy(), NAN_EMB.float()),
        (query, NAN_EMB.float().numpy()),
        (query.float(), NAN_EMB.double().numpy()),
    ]
    for q, r in mixed:
        out = c.get_accuracy(q, q_labels.numpy(), r, NAN_LABELS)
        assert out.keys() == expected.keys()
        for name in out:
            np.testing.assert_allclose(out[name], expected[name], rtol=1e-6)


@pytest.mark.parametrize(
    ("kwargs", "error", "name"),
    [
        ({"avg_of_avgs": "yes"}, TypeError, "avg_of_avgs"),
        ({"return_per_class": 1}, TypeError, "return_per_class"),
        ({"knn_func": "faiss"}, TypeError, "knn_func"),
        ({"kmeans_func": 3}, TypeError, "kmeans_func"),
        (
            {"label_comparison_fn": "eq", "exclude": ("NMI", "AMI")},
            TypeError,
            "label_comparison_fn",
        ),
        ({"device": "gpu"}, ValueError, "device"),
        ({"device": 2.5}, TypeError, "device"),
    ],
)
def test_constructor_arguments_of_the_wrong_kind_are_rejected_naming_them(kwargs, error, name):
    # these were accepted (and failed, or were read by truthiness, at the first call), or
    # raised torch's RuntimeError / a clustering NotImplementedError
    with pytest.raises(error, match=rf"^{name} must"):
        AccuracyCalculator(**kwargs)


def test_empty_query_gives_nan_for_clustering_metrics_too():
    # with NMI/AMI included, an empty query used to raise "nmb_clusters must be >= 1 and <= 0"
    # from the k-means function; the k-NN metrics were already NaN
    got = AccuracyCalculator().get_accuracy(torch.zeros(0, 4), torch.zeros(0, dtype=torch.long))
    assert set(got) >= {"NMI", "AMI", "precision_at_1"}
    assert all(math.isnan(v) for v in got.values())
