"""pml.eval against pytorch-metric-learning 2.9 on random clustered data (compat env only).

Same numbers where the reference is right; the asserted differences are the known issues we
fix (docs/compatibility.md, section pml-eval).
"""

from __future__ import annotations

import math

import pytest

pml_ref = pytest.importorskip("pytorch_metric_learning")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from pytorch_metric_learning import testers as ref_testers  # noqa: E402
from pytorch_metric_learning.utils import accuracy_calculator as ref_ac  # noqa: E402
from pytorch_metric_learning.utils import inference as ref_inf  # noqa: E402
from torch.utils.data import TensorDataset  # noqa: E402

import pml.eval as ours  # noqa: E402
from pml.core.testing import clustered_embeddings  # noqa: E402

pytestmark = pytest.mark.compat

CPU = torch.device("cpu")
KNN_METRICS = (
    "mean_average_precision",
    "mean_average_precision_at_r",
    "mean_reciprocal_rank",
    "precision_at_1",
    "r_precision",
)


def assert_same(a: dict, b: dict) -> None:
    assert list(a) == list(b)
    for name in a:
        rtol = 1e-6 if "reciprocal_rank" in name else 1e-9  # float32 in the reference
        np.testing.assert_allclose(a[name], b[name], rtol=rtol, atol=1e-12, err_msg=name)


def both(**kwargs) -> tuple:
    kwargs.setdefault("device", CPU)
    return ref_ac.AccuracyCalculator(**kwargs), ours.AccuracyCalculator(**kwargs)


def data(seed=0, classes=12, per_class=15, dim=16, spread=1.2, unbalanced=False):
    emb, labels = clustered_embeddings(classes, per_class, dim, seed=seed, spread=spread)
    if unbalanced:  # drop samples so class sizes differ (1 .. per_class)
        keep = (torch.arange(len(labels)) % per_class) <= (labels % per_class)
        emb, labels = emb[keep], labels[keep]
    return emb, labels


# ---------------------------------------------------------------------------- same numbers
@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("unbalanced", [False, True])
def test_defaults_same_numbers(seed, unbalanced):
    emb, labels = data(seed, unbalanced=unbalanced)
    ref, pml = both()  # faiss k-means in both (niter=20, same seed): same clusters
    assert_same(pml.get_accuracy(emb, labels), ref.get_accuracy(emb, labels))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"k": "max_bin_count"},
        {"k": 5},
        {"k": 1},
        {"avg_of_avgs": True},
        {"return_per_class": True},
        {"k": "max_bin_count", "return_per_class": True},
        {"include": ("precision_at_1", "r_precision")},
        {"exclude": ("mean_average_precision",)},
    ],
    ids=str,
)
def test_options_same_numbers(kwargs):
    emb, labels = data(2, unbalanced=True)
    ref, pml = both(exclude=kwargs.pop("exclude", ("NMI", "AMI")), **kwargs)
    assert_same(pml.get_accuracy(emb, labels), ref.get_accuracy(emb, labels))


@pytest.mark.parametrize("ref_includes_query", [False, True])
def test_separate_reference_same_numbers(ref_includes_query):
    emb, labels = data(3)
    query, q_labels = emb[:60], labels[:60]
    reference = emb if ref_includes_query else emb[60:]
    r_labels = labels if ref_includes_query else labels[60:]
    ref, pml = both(exclude=("NMI", "AMI"))
    args = (query, q_labels, reference, r_labels, ref_includes_query)
    assert_same(pml.get_accuracy(*args), ref.get_accuracy(*args))


def test_lone_query_labels_same_numbers():
    emb, labels = data(4)
    q_labels = labels[:40].clone()
    q_labels[:5] = 999  # not in the reference
    ref, pml = both(exclude=("NMI", "AMI"), return_per_class=True)
    args = (emb[:40], q_labels, emb[40:], labels[40:], False)
    assert_same(pml.get_accuracy(*args), ref.get_accuracy(*args))


def test_numpy_and_float64_inputs_same_numbers():
    emb, labels = data(5)
    ref, pml = both(exclude=("NMI", "AMI"))
    assert_same(
        pml.get_accuracy(emb.double().numpy(), labels.numpy()),
        ref.get_accuracy(emb.double().numpy(), labels.numpy()),
    )


def test_custom_comparison_and_knn_func_same_numbers():
    emb, labels = data(6)

    def near(a, b):
        return (a - b).abs() <= 1

    ref, pml = both(exclude=("NMI", "AMI"), label_comparison_fn=near)
    assert_same(pml.get_accuracy(emb, labels), ref.get_accuracy(emb, labels))
    ref = ref_ac.AccuracyCalculator(exclude=("NMI", "AMI"), device=CPU, knn_func=ref_inf.FaissKNN())
    pml = ours.AccuracyCalculator(exclude=("NMI", "AMI"), device=CPU, knn_func=ours.FaissKNN())
    assert_same(pml.get_accuracy(emb, labels), ref.get_accuracy(emb, labels))


def test_custom_metric_subclass_same_numbers():
    def make(base, helpers):
        class WithP2(base):
            def calculate_precision_at_2(self, knn_labels, query_labels, **kwargs):
                return helpers.precision_at_k(
                    knn_labels,
                    query_labels[:, None],
                    2,
                    self.avg_of_avgs,
                    self.return_per_class,
                    self.label_comparison_fn or torch.eq,
                )

            def requires_knn(self):
                return [*super().requires_knn(), "precision_at_2"]

        return WithP2(include=("precision_at_2", "precision_at_1"), device=CPU)

    emb, labels = data(7)
    assert_same(
        make(ours.AccuracyCalculator, ours).get_accuracy(emb, labels),
        make(ref_ac.AccuracyCalculator, ref_ac).get_accuracy(emb, labels),
    )


def test_knn_backends_same_neighbours():
    emb, _ = data(8)
    rd, ri = ref_inf.FaissKNN()(emb, 10, emb, True)
    for knn in (ours.TorchKNN(), ours.FaissKNN()):
        d, i = knn(emb, 10, emb, True)
        assert torch.equal(i, ri)
        torch.testing.assert_close(d, rd, rtol=1e-4, atol=1e-4)
    from pytorch_metric_learning.distances import CosineSimilarity as RefCos

    from pml.distances import CosineSimilarity

    rd, ri = ref_inf.CustomKNN(RefCos(), batch_size=32)(emb, 5, emb, True)
    d, i = ours.CustomKNN(CosineSimilarity(), batch_size=32)(emb, 5, emb, True)
    assert torch.equal(i, ri)
    torch.testing.assert_close(d, rd, rtol=1e-5, atol=1e-5)


def test_match_finder_and_inference_model_same_results(tmp_path):
    from pytorch_metric_learning.distances import CosineSimilarity as RefCos

    from pml.distances import CosineSimilarity

    emb, _ = data(9, classes=4, per_class=5, dim=4)
    mf_ref = ref_inf.MatchFinder(RefCos(), threshold=0.7)
    mf = ours.MatchFinder(CosineSimilarity(), threshold=0.7)
    assert (mf.get_matching_pairs(emb) == mf_ref.get_matching_pairs(emb)).all()
    assert mf.get_matching_pairs(emb, return_tuples=True) == mf_ref.get_matching_pairs(
        emb, return_tuples=True
    )
    im_ref = ref_inf.InferenceModel(torch.nn.Identity(), data_device=CPU)
    im = ours.InferenceModel(torch.nn.Identity(), data_device=CPU)
    im_ref.train_knn(emb)
    im.train_knn(emb)
    rd, ri = im_ref.get_nearest_neighbors(emb[:3], 4)
    d, i = im.get_nearest_neighbors(emb[:3], 4)
    assert torch.equal(i, ri)
    torch.testing.assert_close(d, rd)
    # our index file is a faiss file: the reference loads it
    im.save_knn_func(tmp_path / "idx")
    im_ref.load_knn_func(str(tmp_path / "idx"))
    assert torch.equal(im_ref.get_nearest_neighbors(emb[:3], 4)[1], ri)
    assert im.is_match(emb[:2], emb[:2]).tolist() == im_ref.is_match(emb[:2], emb[:2]).tolist()


def circle(degrees):
    a = torch.tensor(degrees, dtype=torch.float64) * math.pi / 180
    return torch.stack([a.cos(), a.sin()], 1).float()


@pytest.mark.parametrize(
    "splits",
    [
        None,
        [("train", ["train", "val"]), ("val", ["train", "val"])],
        [("train", ["train"]), ("val", ["train"])],
    ],
    ids=["default", "both", "train_only"],
)
def test_tester_same_numbers(splits):
    train = TensorDataset(circle([0, 10, 20, 29, 41, 50, 60, 70]), torch.tensor([0] * 4 + [1] * 4))
    val = TensorDataset(circle([1, 11, 21, 30, 42, 51, 61, 71]), torch.tensor([1] * 5 + [0] * 3))
    results = []
    # precision@1 only: farther down the full ranking, equal arc gaps (e.g. 10 deg each side)
    # are ties at float32 rounding level, ordered differently by different code paths.
    for module, calc in ((ref_testers, ref_ac), (ours, ours)):
        tester = module.GlobalEmbeddingSpaceTester(
            accuracy_calculator=calc.AccuracyCalculator(include=("precision_at_1",), device=CPU),
            dataloader_num_workers=0,
            data_device=CPU,
        )
        splits_copy = None if splits is None else [(q, list(r)) for q, r in splits]
        out = tester.test(
            {"train": train, "val": val}, 1, torch.nn.Identity(), splits_to_eval=splits_copy
        )
        results.append({k: dict(v) for k, v in out.items()})
    assert results[0].keys() == results[1].keys()
    for split in results[0]:
        assert_same(results[1][split], results[0][split])


def test_hierarchy_testers_same_numbers():
    emb, fine = data(10, classes=8, per_class=6, dim=6)
    labels = torch.stack([fine, fine // 2], 1)
    dataset = TensorDataset(emb, labels)
    for name in ("GlobalEmbeddingSpaceTester", "WithSameParentLabelTester"):
        out = []
        for module, calc in ((ref_testers, ref_ac), (ours, ours)):
            tester = getattr(module, name)(
                accuracy_calculator=calc.AccuracyCalculator(exclude=("NMI", "AMI"), device=CPU),
                dataloader_num_workers=0,
                data_device=CPU,
                label_hierarchy_level="all",
            )
            out.append(dict(tester.test({"val": dataset}, 0, torch.nn.Identity())["val"]))
        assert_same(out[1], out[0])


# ---------------------------------------------------------------------------- known issues
def test_fix_mean_reciprocal_rank_alone():
    emb, labels = data(11)
    ref, pml = both(include=("mean_reciprocal_rank",))
    with pytest.raises(TypeError):
        ref.get_accuracy(emb, labels)
    with_other = both(include=("mean_reciprocal_rank", "precision_at_1"))[0]
    want = with_other.get_accuracy(emb, labels)["mean_reciprocal_rank"]
    assert pml.get_accuracy(emb, labels)["mean_reciprocal_rank"] == pytest.approx(want, rel=1e-6)


def test_fix_labels_above_2_pow_24():
    emb = torch.tensor([[0.0], [0.1], [0.2], [0.3]])
    labels = torch.tensor([16777216, 16777217, 16777216, 16777217])
    ref, pml = both(include=("precision_at_1",))
    assert ref.get_accuracy(emb, labels)["precision_at_1"] == 1.0  # labels collided
    assert pml.get_accuracy(emb, labels)["precision_at_1"] == 0.0


def test_fix_k_larger_than_reference():
    emb, labels = data(12, classes=3, per_class=4, dim=2)
    ref, pml = both(k=100, include=("mean_average_precision",))
    assert ref.get_accuracy(emb, labels)["mean_average_precision"] > 1.0  # padded with -1
    full = both(include=("mean_average_precision",))[0].get_accuracy(emb, labels)
    assert_same(pml.get_accuracy(emb, labels), full)


def test_fix_non_reflexive_comparison():
    emb = torch.tensor([[0.0], [0.1], [5.0], [5.1]])
    labels = torch.tensor([0, 1, 2, 3])

    def pairs(a, b):
        return (
            torch.div(a, 2, rounding_mode="floor") == torch.div(b, 2, rounding_mode="floor")
        ) & (a != b)

    ref, pml = both(label_comparison_fn=pairs, exclude=("NMI", "AMI"))
    bad = ref.get_accuracy(emb, labels)
    assert math.isnan(bad["r_precision"]) or math.isinf(bad["mean_average_precision"])
    assert pml.get_accuracy(emb, labels) == {m: 1.0 for m in KNN_METRICS}


def test_fix_precision_at_k_three_arguments():
    knn_labels, gt = torch.tensor([[0, 1], [1, 1]]), torch.tensor([[0], [0]])
    with pytest.raises(TypeError):
        ref_ac.precision_at_k(knn_labels, gt, 2)
    assert ours.precision_at_k(knn_labels, gt, 2) == ref_ac.precision_at_k(
        knn_labels, gt, 2, False, False, torch.eq
    )


def test_fix_multi_dimensional_labels_with_equality():
    emb, labels = data(13)
    rows = torch.stack([labels // 3, labels % 3], 1)
    ref, pml = both(exclude=("NMI", "AMI"))
    with pytest.raises(RuntimeError):
        ref.get_accuracy(emb, rows)
    assert_same(pml.get_accuracy(emb, rows), ref.get_accuracy(emb, labels))


def test_fix_set_min_label_to_zero_without_dataset_labels():
    dataset = TensorDataset(torch.randn(4, 2), torch.tensor([3, 5, 3, 5]))
    ref = ref_testers.BaseTester(
        set_min_label_to_zero=True, dataloader_num_workers=0, data_device=CPU
    )
    with pytest.raises(AttributeError):
        ref.get_all_embeddings(dataset, torch.nn.Identity())
    pml = ours.BaseTester(set_min_label_to_zero=True, dataloader_num_workers=0, data_device=CPU)
    with pytest.raises(ValueError, match="dataset_labels"):
        pml.get_all_embeddings(dataset, torch.nn.Identity())


def test_fix_two_stream_label_level():
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(12) % 3
    anchors = torch.randn(12, 4, generator=g) + labels[:, None] * 5
    posnegs = anchors + 0.01
    two_levels = torch.stack([labels, labels // 2], 1)
    dataset = TensorDataset(anchors, posnegs, two_levels)
    kwargs = {"dataloader_num_workers": 0, "data_device": CPU, "label_hierarchy_level": 1}
    ref = ref_testers.GlobalTwoStreamEmbeddingSpaceTester(
        accuracy_calculator=ref_ac.AccuracyCalculator(include=("precision_at_1",), device=CPU),
        **kwargs,
    )
    with pytest.raises(AssertionError):
        ref.test({"val": dataset}, 0, torch.nn.Identity())
    pml = ours.GlobalTwoStreamEmbeddingSpaceTester(
        accuracy_calculator=ours.AccuracyCalculator(include=("precision_at_1",), device=CPU),
        **kwargs,
    )
    assert pml.test({"val": dataset}, 0, torch.nn.Identity())["val"]["precision_at_1_level1"] == 1.0


def test_fix_pca_shared_across_compared_splits():
    g = torch.Generator().manual_seed(3)
    a = TensorDataset(torch.randn(30, 6, generator=g), torch.arange(30) % 3)
    b = TensorDataset(torch.randn(30, 6, generator=g) * 3 + 1, torch.arange(30) % 3)
    seen = []
    for module in (ref_testers, ours):
        tester = module.GlobalEmbeddingSpaceTester(
            pca=2,
            normalize_embeddings=False,
            dataloader_num_workers=0,
            data_device=CPU,
            accuracy_calculator=(ref_ac if module is ref_testers else ours).AccuracyCalculator(
                include=("precision_at_1",), device=CPU
            ),
            end_of_testing_hook=lambda t: seen.append(
                {k: v[0].clone() for k, v in t.embeddings_and_labels.items()}
            ),
        )
        tester.test({"a": a, "b": b}, 0, torch.nn.Identity(), splits_to_eval=[("a", ["a", "b"])])
    ref_emb, our_emb = seen
    # the reference standardises each split separately: each has zero mean on its own
    assert torch.allclose(ref_emb["b"].mean(0), torch.zeros(2), atol=1e-4)
    # ours projects both with one basis: split b keeps its offset from split a
    assert not torch.allclose(our_emb["b"].mean(0), torch.zeros(2), atol=1e-2)
    joint = torch.cat([our_emb["a"], our_emb["b"]])
    assert torch.allclose(joint.mean(0), torch.zeros(2), atol=1e-4)


# ---------------------------------------------------------------------------- reliability
def test_kmeans_func_gets_the_same_arguments():
    seen: dict[str, list] = {"ref": [], "pml": []}

    def recorder(key):
        def kmeans(x, n):
            seen[key].append((type(x), x.dtype, x.device, tuple(x.shape), type(n), n))
            return torch.zeros(len(x), dtype=torch.long)

        return kmeans

    emb, labels = data(13)
    ref = ref_ac.AccuracyCalculator(include=("NMI",), kmeans_func=recorder("ref"), device=CPU)
    pml = ours.AccuracyCalculator(include=("NMI",), kmeans_func=recorder("pml"), device=CPU)
    for query in (emb.double().numpy(), emb.double(), emb):
        ref.get_accuracy(query, labels)
        pml.get_accuracy(query, labels)
    assert seen["pml"] == seen["ref"]
    assert seen["ref"][0][:2] == (torch.Tensor, torch.float32)


def test_fix_bool_k():
    assert ref_ac.AccuracyCalculator(k=True, device=CPU).k is True  # accepted as k=1
    with pytest.raises(TypeError, match="k"):
        ours.AccuracyCalculator(k=True, device=CPU)


def test_fix_unknown_metric_name_per_call():
    emb, labels = data(14)
    ref, pml = both()
    assert ref.get_accuracy(emb, labels, include=("precision_at_2",)) == {}  # a typo
    with pytest.raises(ValueError, match="include.*precision_at_2"):
        pml.get_accuracy(emb, labels, include=("precision_at_2",))


def test_fix_nan_query_row():
    emb, labels = data(15, classes=4, per_class=6, dim=4, spread=0.05)
    query = emb[:8].clone()
    query[3] = float("nan")
    ref, pml = both(include=("precision_at_1",))
    out = ref.get_accuracy(query, labels[:8], emb, labels)["precision_at_1"]
    assert math.isfinite(out)  # the NaN row is scored with reference_labels[-1]
    with pytest.raises(ValueError, match="query must be finite"):
        pml.get_accuracy(query, labels[:8], emb, labels)


def test_fix_faiss_knn_nan_query():
    emb = torch.randn(6, 3)
    query = emb.clone()
    query[1] = float("nan")
    _, idx = ref_inf.FaissKNN()(query, 2, emb, False)
    assert (idx[1] == -1).all()  # then read as reference_labels[-1]
    with pytest.raises(ValueError, match="query must be finite"):
        ours.FaissKNN()(query, 2, emb, False)


def test_fix_match_finder_is_match_lengths():
    from pytorch_metric_learning.distances import CosineSimilarity as RefCosine

    x, y = torch.randn(2, 3), torch.randn(3, 3)
    with pytest.raises(RuntimeError):
        ref_inf.MatchFinder(RefCosine(), threshold=0.5).is_match(x, y)
    with pytest.raises(ValueError, match="x and y"):
        ours.MatchFinder(ours_cosine(), threshold=0.5).is_match(x, y)


def ours_cosine():
    from pml.distances import CosineSimilarity

    return CosineSimilarity()


def test_fix_faiss_knn_reset_before_without_reference_is_an_error_not_minus_one():
    """Reference: a trained InferenceModel with the default FaissKNN() searches a fresh empty
    index and returns index -1 at distance 3.4e38 for every neighbour; pml: an error saying
    how to search a trained index."""
    ref_im = ref_inf.InferenceModel(torch.nn.Identity(), knn_func=ref_inf.FaissKNN())
    ref_im.train_knn(torch.randn(10, 4))
    _, ref_idx = ref_im.get_nearest_neighbors(torch.randn(2, 4), k=3)
    assert (ref_idx == -1).all()
    our_im = ours.InferenceModel(torch.nn.Identity(), knn_func=ours.FaissKNN())
    our_im.train_knn(torch.randn(10, 4))
    with pytest.raises(ours.IndexNotReadyError, match="reset_before=False"):
        our_im.get_nearest_neighbors(torch.randn(2, 4), k=3)


def test_fix_one_dimensional_input_and_zero_k():
    """Reference: a 1-D item in is_match raises IndexError, k=0 faiss's RuntimeError; pml: a
    ValueError naming the shape, and empty results for k=0."""
    ref_im = ref_inf.InferenceModel(torch.nn.Identity())
    with pytest.raises(IndexError):
        ref_im.is_match(torch.randn(4), torch.randn(4))
    with pytest.raises(RuntimeError):
        ref_inf.FaissKNN()(torch.randn(2, 4), 0, torch.randn(5, 4))
    our_im = ours.InferenceModel(torch.nn.Identity())
    with pytest.raises(ValueError, match="batch dimension"):
        our_im.is_match(torch.randn(4), torch.randn(4))
    _, idx = ours.FaissKNN()(torch.randn(2, 4), 0, torch.randn(5, 4))
    assert idx.shape == (2, 0)
