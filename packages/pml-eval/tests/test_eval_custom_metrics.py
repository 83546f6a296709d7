"""AccuracyCalculator(custom_metrics=...): QueryNeighbors, averaging, routes, bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from pml.core.testing import clustered_embeddings
from pml.eval import AccuracyCalculator, ApproximateKNN, QueryNeighbors, TorchKNN
from pml.eval import _custom_metrics as custom_module

CPU = torch.device("cpu")
EMB = torch.tensor([[0.0], [1.0], [2.0], [10.0], [11.0], [20.0]])
LABELS = torch.tensor([0, 0, 0, 1, 1, 2])
KNN = [
    "mean_average_precision",
    "mean_average_precision_at_r",
    "mean_reciprocal_rank",
    "precision_at_1",
    "r_precision",
]


def calc(**kwargs) -> AccuracyCalculator:
    kwargs.setdefault("device", CPU)
    return AccuracyCalculator(**kwargs)


# ---------------------------------------------------------------------------- the metrics
def p_at_1(nb: QueryNeighbors) -> torch.Tensor:
    return nb.is_match[:, 0].double()


def p_at_2(nb: QueryNeighbors) -> torch.Tensor:
    return nb.is_match[:, :2].double().mean(1)


def r_prec(nb: QueryNeighbors) -> torch.Tensor:
    """R-precision from the lists (needs every same-class item within k)."""
    cols = nb.ranks.unsqueeze(0) <= nb.num_relevant.unsqueeze(1)
    hits = (nb.is_match & cols).sum(1).double()
    return hits / nb.num_relevant.clamp(min=1)


def map_at_r(nb: QueryNeighbors) -> torch.Tensor:
    rel = nb.is_match.double()
    precision = rel.cumsum(1) / nb.ranks.double()
    cols = nb.ranks.unsqueeze(0) <= nb.num_relevant.unsqueeze(1)
    return (precision * rel * cols).sum(1) / nb.num_relevant.clamp(min=1)


def naive_lists(q, r, k, own):  # type: ignore[no-untyped-def]
    """Squared-L2 neighbours by a stable sort (ties by index), self row removed."""
    d = ((q[:, None, :].double() - r[None, :, :].double()) ** 2).sum(-1)
    if own:
        d[torch.arange(q.shape[0]), torch.arange(q.shape[0])] = float("inf")
    order = torch.sort(d, dim=1, stable=True).indices
    return order[:, :k]


# ---------------------------------------------------------------------------- hand-computed
def test_custom_precision_at_2_matches_the_hand_computed_value():
    # neighbours (self removed): 0 -> 1, 2; 1 -> 0, 2; 2 -> 1, 0; 3 -> 4, 2; 4 -> 3, 2
    # (label 2 is lone: left out); P@2 = (1 + 1 + 1 + 0.5 + 0.5) / 5
    c = calc(include=("p_at_2",), custom_metrics={"p_at_2": p_at_2})
    assert c.get_accuracy(EMB, LABELS) == {"p_at_2": pytest.approx(0.8)}


def test_query_neighbors_fields_on_a_hand_computed_case():
    seen: list[QueryNeighbors] = []

    def record(nb: QueryNeighbors) -> torch.Tensor:
        seen.append(nb)
        return torch.zeros(nb.query_labels.shape[0])

    c = calc(k=2, include=("rec",), custom_metrics={"rec": record})
    assert c.get_accuracy(EMB, LABELS) == {"rec": 0.0}
    (nb,) = seen
    assert nb.k == 2 and nb.ref_includes_query is True
    assert nb.knn_indices.tolist() == [[1, 2], [0, 2], [1, 0], [4, 2], [3, 2], [4, 3]]
    assert nb.knn_labels.tolist() == [[0, 0], [0, 0], [0, 0], [1, 0], [1, 0], [1, 1]]
    assert nb.knn_distances.tolist() == [[1, 4], [1, 1], [1, 4], [1, 64], [1, 81], [81, 100]]
    assert nb.is_match.tolist() == [[True, True]] * 3 + [[True, False]] * 2 + [[False, False]]
    assert nb.num_relevant.tolist() == [2, 2, 2, 1, 1, 0]
    assert nb.query_indices.tolist() == list(range(6))
    assert nb.ranks.tolist() == [1, 2]
    with pytest.raises(AttributeError):
        nb.k = 3  # type: ignore[misc]  (frozen)


def test_nan_values_are_left_out_of_every_mean():
    def odd(nb: QueryNeighbors) -> torch.Tensor:
        # values 0..5 by query; NaN for query 1 and for every query of label 1
        v = nb.query_indices.double()
        v[nb.query_indices == 1] = float("nan")
        return torch.where(nb.query_labels == 1, float("nan"), v)

    # kept queries (not lone): 0, 1, 2 (label 0) and 3, 4 (label 1); valid: 0 and 2
    plain = calc(include=("odd",), custom_metrics={"odd": odd}).get_accuracy(EMB, LABELS)
    assert plain == {"odd": 1.0}
    per_class = calc(include=("odd",), custom_metrics={"odd": odd}, return_per_class=True)
    got = per_class.get_accuracy(EMB, LABELS)["odd"]
    assert got[0] == 1.0 and math.isnan(got[1]) and len(got) == 2
    avg = calc(include=("odd",), custom_metrics={"odd": odd}, avg_of_avgs=True)
    assert avg.get_accuracy(EMB, LABELS) == {"odd": 1.0}
    all_nan = calc(include=("n",), custom_metrics={"n": lambda nb: nb.knn_distances[:, 0] * np.nan})
    assert math.isnan(all_nan.get_accuracy(EMB, LABELS)["n"])


def test_no_query_with_a_neighbour_gives_nan():
    c = calc(custom_metrics={"p": p_at_1}, include=("p",), return_per_class=True)
    got = c.get_accuracy(EMB[:2], torch.tensor([0, 1]), EMB[2:], torch.tensor([2, 3, 4, 5]))
    assert len(got["p"]) == 2 and all(math.isnan(v) for v in got["p"])
    c = calc(custom_metrics={"p": p_at_1}, include=("p",))
    assert math.isnan(c.get_accuracy(EMB[:2], torch.tensor([0, 1]), EMB[2:], LABELS[2:] + 5)["p"])


# ---------------------------------------------------------------------------- vs built-ins
CUSTOM = {"c_p_at_1": p_at_1, "c_r_precision": r_prec, "c_map_at_r": map_at_r}
PAIRS = {
    "c_p_at_1": "precision_at_1",
    "c_r_precision": "r_precision",
    "c_map_at_r": "mean_average_precision_at_r",
}


@pytest.mark.parametrize("k", [None, "max_bin_count", 30])
@pytest.mark.parametrize("mode", ["self", "separate", "self_extra"])
@pytest.mark.parametrize("options", [{}, {"avg_of_avgs": True}, {"return_per_class": True}])
def test_custom_metrics_equal_the_built_ins_on_every_route(k, mode, options):
    x, y = clustered_embeddings(12, 8, 5, seed=3, spread=2.0)
    if mode == "self":
        args: tuple = (x, y)
    elif mode == "separate":
        args = (x[:40], y[:40], x[40:], y[40:], False)
    else:
        args = (x[:40], y[:40], x, y, True)
    with_custom = calc(k=k, exclude=("NMI", "AMI"), custom_metrics=CUSTOM, **options)
    got = with_custom.get_accuracy(*args)
    assert list(got) == KNN + list(CUSTOM)
    expected = calc(k=k, exclude=("NMI", "AMI"), **options).get_accuracy(*args)
    for name in KNN:  # the built-ins are unchanged by the custom metrics
        assert got[name] == expected[name], name
    for name, built_in in PAIRS.items():
        assert got[name] == pytest.approx(expected[built_in], rel=1e-12, abs=1e-12), name
    only = calc(k=k, include=tuple(CUSTOM), custom_metrics=CUSTOM, **options).get_accuracy(*args)
    assert only == {n: got[n] for n in CUSTOM}  # without built-ins: blocks of knn_func lists


def test_the_neighbours_equal_a_naive_sort():
    x, y = clustered_embeddings(6, 7, 4, seed=1, spread=1.0)
    got: list[torch.Tensor] = []

    def idx(nb: QueryNeighbors) -> torch.Tensor:
        got.append(nb.knn_indices)
        return torch.zeros(nb.knn_indices.shape[0])

    for k, own, ref in ((5, True, None), (8, False, x[10:]), (None, True, x)):
        got.clear()

        c = calc(k=k, include=("i",), custom_metrics={"i": idx})
        if ref is None:
            c.get_accuracy(x, y)
            r = x
        else:
            c.get_accuracy(x[:10], y[:10], ref, y[10:] if not own else y, own)
            r = ref
        q = x if ref is None else x[:10]
        width = got[0].shape[1]
        assert torch.equal(got[0], naive_lists(q, r, width, own or ref is None))


def test_blocks_of_queries_give_the_one_block_result(monkeypatch):
    x, y = clustered_embeddings(10, 6, 4, seed=2, spread=1.5)
    calls: list[int] = []

    def counted(nb: QueryNeighbors) -> torch.Tensor:
        calls.append(nb.query_labels.shape[0])
        return map_at_r(nb)

    metrics = {"m": counted, "r": r_prec}
    one = calc(include=("m", "r"), custom_metrics=metrics).get_accuracy(x, y)
    assert calls == [60]
    monkeypatch.setattr(custom_module, "_BLOCK_ENTRIES", 7 * 60)  # 7 rows of k + 1 = 60 per block
    calls.clear()
    blocks = calc(include=("m", "r"), custom_metrics=metrics).get_accuracy(x, y)
    assert calls == [7] * 8 + [4]
    assert blocks == one


def test_custom_comparison_and_multi_column_labels():
    x, y = clustered_embeddings(5, 6, 3, seed=4, spread=1.0)
    two = torch.stack([y, y // 2], 1)  # (N, 2) labels: a row is one class

    def shapes(nb: QueryNeighbors) -> torch.Tensor:
        assert nb.knn_labels.shape == (*nb.knn_indices.shape, 2)
        return p_at_1(nb)

    got = calc(custom_metrics={"p": shapes}, exclude=("NMI", "AMI")).get_accuracy(x, two)
    assert got["p"] == pytest.approx(got["precision_at_1"], abs=1e-12)

    def coarse(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return (a // 2) == (b // 2)

    c = calc(custom_metrics={"p": p_at_1}, exclude=("NMI", "AMI"), label_comparison_fn=coarse)
    got = c.get_accuracy(x, y)
    assert got["p"] == pytest.approx(got["precision_at_1"], abs=1e-12)


def test_every_float_dtype_of_embeddings_and_of_values(dtype):
    x, y = clustered_embeddings(6, 8, 4, seed=5, spread=0.2)
    expected = calc(include=("precision_at_1",)).get_accuracy(x.double(), y)["precision_at_1"]
    c = calc(include=("p",), custom_metrics={"p": lambda nb: p_at_1(nb).to(dtype)})
    assert c.get_accuracy(x.to(dtype), y)["p"] == pytest.approx(expected, abs=1e-12)
    as_list = calc(include=("p",), custom_metrics={"p": lambda nb: p_at_1(nb).tolist()})
    as_numpy = calc(include=("p",), custom_metrics={"p": lambda nb: p_at_1(nb).numpy() > 0})
    assert as_list.get_accuracy(x, y) == as_numpy.get_accuracy(x, y) == {"p": expected}


def test_include_exclude_and_order_name_custom_metrics():
    c = calc(custom_metrics={"b": p_at_1, "a": p_at_2})
    assert c.get_curr_metrics()[-2:] == ["b", "a"]
    got = c.get_accuracy(EMB, LABELS, include=("a", "precision_at_1"))
    assert list(got) == ["precision_at_1", "a"]
    assert list(c.get_accuracy(EMB, LABELS, exclude=("a", "b", "NMI", "AMI"))) == KNN
    with pytest.raises(ValueError, match="include"):
        c.get_accuracy(EMB, LABELS, include=("c",))


def test_approximate_knn_reports_recall_with_custom_metrics():
    x, y = clustered_embeddings(10, 20, 8, seed=0, spread=0.5)
    knn = ApproximateKNN("ivf", nlist=5, nprobe=5)
    c = calc(k="max_bin_count", include=("p",), custom_metrics={"p": p_at_1}, knn_func=knn)
    got = c.get_accuracy(x, y)
    assert list(got) == ["p", "knn_recall_at_k"] and got["knn_recall_at_k"] == 1.0
    assert got["p"] == calc(include=("precision_at_1",)).get_accuracy(x, y)["precision_at_1"]


def test_a_list_knn_func_and_the_ranking_route_agree():
    x, y = clustered_embeddings(8, 9, 4, seed=6, spread=2.0)

    class ListKNN(TorchKNN):
        def __call__(self, *args, **kwargs):  # type: ignore[no-untyped-def]
            return super().__call__(*args, **kwargs)

    for k in (None, "max_bin_count"):
        a = calc(k=k, include=tuple(CUSTOM), custom_metrics=CUSTOM).get_accuracy(x, y)
        b = calc(k=k, custom_metrics=CUSTOM, include=tuple(CUSTOM), knn_func=ListKNN())
        assert b.get_accuracy(x, y) == a


# ---------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    ("value", "error", "match"),
    [
        ([("a", p_at_1)], TypeError, "custom_metrics must be a dict"),
        ({1: p_at_1}, TypeError, "custom_metrics names must be str"),
        ({"": p_at_1}, ValueError, "non-empty"),
        ({"a": "p_at_1"}, TypeError, r"custom_metrics\['a'\] must be callable"),
        ({"precision_at_1": p_at_1}, ValueError, "clashes with a built-in metric"),
        ({"NMI": p_at_1}, ValueError, "clashes with a built-in metric"),
        ({"knn_recall_at_k": p_at_1}, ValueError, "clashes"),
    ],
)
def test_bad_custom_metrics_are_rejected(value, error, match):
    with pytest.raises(error, match=match):
        calc(custom_metrics=value)


def test_a_name_clashing_with_a_subclass_metric_is_rejected():
    class WithP2(AccuracyCalculator):
        def calculate_precision_at_2(self, **kwargs):  # type: ignore[no-untyped-def]
            return 0.0

    with pytest.raises(ValueError, match="'precision_at_2' clashes"):
        WithP2(custom_metrics={"precision_at_2": p_at_2})


@pytest.mark.parametrize(
    ("fn", "error", "match"),
    [
        (lambda nb: nb.is_match.double(), ValueError, r"'bad' must return one value per query"),
        (lambda nb: 1.0, ValueError, r"shape \(6,\); got \(\)"),
        (lambda nb: object(), TypeError, "'bad' must return per-query values"),
        (lambda nb: ["a"] * 6, TypeError, "'bad' must return per-query values"),
        (lambda nb: torch.ones(6, dtype=torch.complex64), TypeError, "real values"),
    ],
)
def test_bad_custom_metric_results_are_rejected(fn, error, match):
    with pytest.raises(error, match=match):
        calc(custom_metrics={"bad": fn}, include=("bad",)).get_accuracy(EMB, LABELS)


def test_distributed_must_be_a_bool():
    with pytest.raises(TypeError, match="distributed"):
        calc(distributed=1)
    # without a process group distributed=True changes nothing
    got = calc(distributed=True, exclude=("NMI", "AMI")).get_accuracy(EMB, LABELS)
    assert got == calc(exclude=("NMI", "AMI")).get_accuracy(EMB, LABELS)


def test_a_knn_func_pml_does_not_know_is_called_once_for_custom_metrics(monkeypatch):
    # a stateful knn_func (e.g. an index that keeps what it is given) must not be called
    # once per block of queries
    x, y = clustered_embeddings(6, 5, 3, seed=7, spread=1.0)
    calls: list[int] = []

    def knn(query, k, reference, ref_includes_query):  # type: ignore[no-untyped-def]
        calls.append(query.shape[0])
        return TorchKNN()(query, k, reference, ref_includes_query)

    monkeypatch.setattr(custom_module, "_BLOCK_ENTRIES", 60)  # blocks of 2 rows if blockwise
    got = calc(include=("p",), custom_metrics={"p": p_at_1}, knn_func=knn).get_accuracy(x, y)
    assert calls == [30]
    assert got == {"p": calc(include=("precision_at_1",)).get_accuracy(x, y)["precision_at_1"]}


@pytest.mark.parametrize("k", [None, "max_bin_count"])
def test_custom_metrics_on_every_device(device, k):
    x, y = clustered_embeddings(8, 6, 4, seed=8, spread=2.0)
    c = calc(k=k, device=device, exclude=("NMI", "AMI"), custom_metrics=CUSTOM)
    got = c.get_accuracy(x.to(device), y.to(device))
    for name, built_in in PAIRS.items():
        assert got[name] == pytest.approx(got[built_in], rel=1e-12, abs=1e-12), name
    only = calc(k=k, device=device, include=tuple(CUSTOM), custom_metrics=CUSTOM)
    assert only.get_accuracy(x, y) == {n: got[n] for n in CUSTOM}


def test_the_k_warning_is_logged_once_with_custom_metrics(caplog):
    x, y = clustered_embeddings(2, 6, 3, seed=9, spread=1.0)
    c = calc(k=2, exclude=("NMI", "AMI"), custom_metrics={"p": p_at_1})
    with caplog.at_level("WARNING", logger="PML"):
        c.get_accuracy(x, y)
    assert sum("is smaller than the largest class" in r.getMessage() for r in caplog.records) == 1
