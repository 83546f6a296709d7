"""Testers: splits, reference sets, label levels, hooks, label mapping, PCA."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import Dataset, TensorDataset

from pml.core.validation import InvalidArgumentError
from pml.eval import (
    AccuracyCalculator,
    BaseTester,
    GlobalEmbeddingSpaceTester,
    GlobalTwoStreamEmbeddingSpaceTester,
    WithSameParentLabelTester,
)

CPU = torch.device("cpu")


def p1_calc(**kwargs) -> AccuracyCalculator:
    return AccuracyCalculator(include=("precision_at_1",), device=CPU, **kwargs)


def make_tester(cls=GlobalEmbeddingSpaceTester, **kwargs):
    kwargs.setdefault("accuracy_calculator", p1_calc())
    return cls(dataloader_num_workers=0, data_device=CPU, batch_size=3, **kwargs)


def circle(degrees) -> torch.Tensor:
    a = torch.tensor(degrees, dtype=torch.float64) * math.pi / 180
    return torch.stack([a.cos(), a.sin()], 1).float()


# 8 points per split; the class boundary has no exact tie (29 deg vs 41 deg)
TRAIN = TensorDataset(
    circle([0, 10, 20, 29, 41, 50, 60, 70]), torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])
)
VAL = TensorDataset(circle([1, 11, 21, 30, 42, 51, 61, 71]), torch.tensor([1, 1, 1, 1, 1, 0, 0, 0]))


def p1(result, split):
    return result[split]["precision_at_1_level0"]


def test_circle_splits_and_reference_sets():
    data = {"train": TRAIN, "val": VAL}
    t = make_tester()
    out = t.test(data, 3, torch.nn.Identity())
    assert out["train"] == {"epoch": 3, "precision_at_1_level0": 1.0}
    assert p1(out, "val") == 0.75  # 42 deg (label 1) and 51 deg (label 0) are each other's NN
    out = t.test(
        data,
        3,
        torch.nn.Identity(),
        splits_to_eval=[("train", ["train", "val"]), ("val", ["train", "val"])],
    )
    assert p1(out, "train") == 0.125 and p1(out, "val") == 0.125
    out = t.test(
        data, 3, torch.nn.Identity(), splits_to_eval=[("train", ["train"]), ("val", ["train"])]
    )
    assert p1(out, "train") == 1.0 and p1(out, "val") == 0.125
    assert t.reference_split_names == {"train": ["train"], "val": ["train"]}
    assert not hasattr(t, "embeddings_and_labels")


def test_query_moved_to_front_of_its_references():
    refs = ["val", "train"]
    t = make_tester()
    t.test({"train": TRAIN, "val": VAL}, 0, torch.nn.Identity(), splits_to_eval=[("train", refs)])
    assert refs == ["train", "val"]  # compat: the caller's list is reordered in place


def test_splits_to_eval_errors():
    t = make_tester()
    data = {"train": TRAIN, "val": VAL}
    with pytest.raises(InvalidArgumentError, match="once"):
        t.test(
            data, 0, torch.nn.Identity(), splits_to_eval=[("train", ["train"]), ("train", ["val"])]
        )
    with pytest.raises(ValueError, match="test"):
        t.test(data, 0, torch.nn.Identity(), splits_to_eval=[("train", ["test"])])


def test_constructor_validation():
    with pytest.raises(ValueError, match="label_hierarchy_level"):
        make_tester(label_hierarchy_level="some")
    with pytest.raises(ValueError, match="label_hierarchy_level"):
        make_tester(label_hierarchy_level=-1)
    with pytest.raises(TypeError, match=r"label_hierarchy_level\[1\]"):
        make_tester(label_hierarchy_level=[0, 1.0])
    with pytest.raises(ValueError, match="pca"):
        make_tester(pca=-2)
    with pytest.raises(ValueError, match="batch_size"):
        GlobalEmbeddingSpaceTester(batch_size=0)
    with pytest.raises(TypeError, match="batch_size"):
        GlobalEmbeddingSpaceTester(batch_size=None)


def test_pca_float_is_a_type_error_not_truncated():
    # a wrong type is a TypeError (was a ValueError); the reference truncates int(1.5) -> 1
    with pytest.raises(TypeError, match="pca"):
        make_tester(pca=1.5)
    assert make_tester(pca=np.int64(2)).pca == 2 and make_tester(pca=0).pca is None


def test_batch_size_is_cast_like_the_reference():
    assert (
        make_tester().batch_size == 3 and GlobalEmbeddingSpaceTester(batch_size=2.5).batch_size == 2
    )


class Hierarchy(Dataset):
    """Points on 3 super-classes x 2 sub-classes, labels (fine, coarse)."""

    def __init__(self, shift: float = 0.0):
        g = torch.Generator().manual_seed(0)
        fine = torch.arange(6).repeat_interleave(5)
        coarse = fine // 2
        centers = torch.randn(6, 4, generator=g) * 5
        self.x = centers[fine] + 0.1 * torch.randn(30, 4, generator=g) + shift
        self.labels = torch.stack([fine, coarse], 1)

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return self.x[i], self.labels[i]


def test_all_levels_and_averages():
    t = make_tester(label_hierarchy_level="all", accuracy_calculator=p1_calc())
    out = t.test({"val": Hierarchy()}, 1, torch.nn.Identity())["val"]
    assert list(out) == [
        "epoch",
        "precision_at_1_level0",
        "precision_at_1_level1",
        "AVERAGE_precision_at_1",
    ]
    assert out["AVERAGE_precision_at_1"] == 1.0


def test_level_selection_and_errors():
    out = make_tester(label_hierarchy_level=1).test({"val": Hierarchy()}, 1, torch.nn.Identity())
    assert list(out["val"]) == ["epoch", "precision_at_1_level1"]
    with pytest.raises(InvalidArgumentError, match="label_hierarchy_level"):
        make_tester(label_hierarchy_level=[0, 2]).test({"val": Hierarchy()}, 1, torch.nn.Identity())


def test_with_same_parent_label_tester():
    t = make_tester(WithSameParentLabelTester, label_hierarchy_level="all")
    out = t.test({"val": Hierarchy()}, 1, torch.nn.Identity())["val"]
    assert list(out) == ["epoch", "precision_at_1_level0"]  # level 1 has no parent
    assert isinstance(out["precision_at_1_level0"], np.float64)
    assert out["precision_at_1_level0"] == 1.0
    with pytest.raises(InvalidArgumentError, match="parent"):
        make_tester(WithSameParentLabelTester).test({"val": TRAIN}, 1, torch.nn.Identity())


def test_with_same_parent_matches_manual_per_parent_mean():
    data = Hierarchy()
    calc = AccuracyCalculator(include=("mean_average_precision",), device=CPU)
    t = make_tester(WithSameParentLabelTester, accuracy_calculator=calc, normalize_embeddings=False)
    got = t.test({"val": data}, 0, torch.nn.Identity())["val"]["mean_average_precision_level0"]
    want = np.mean(
        [
            calc.get_accuracy(
                data.x[data.labels[:, 1] == p], data.labels[data.labels[:, 1] == p, 0]
            )["mean_average_precision"]
            for p in range(3)
        ]
    )
    assert got == pytest.approx(want)


class Visualizer:
    def fit_transform(self, x):
        return x[:, :1] * 0


def test_visualizer_and_end_of_testing_hooks():
    calls, ends = [], []

    def hook(visualizer, reduced, labels, split_name, keyname, epoch):
        calls.append(
            (
                type(visualizer).__name__,
                reduced.shape,
                labels.tolist()[:2],
                split_name,
                keyname,
                epoch,
            )
        )

    def end(t):
        ends.append(sorted(t.embeddings_and_labels))

    t = make_tester(visualizer=Visualizer(), visualizer_hook=hook, end_of_testing_hook=end)
    t.test({"train": TRAIN, "val": VAL}, 7, torch.nn.Identity())
    assert calls == [
        ("Visualizer", (8, 1), [0, 0], "train", "Visualizer_level0", 7),
        ("Visualizer", (8, 1), [1, 1], "val", "Visualizer_level0", 7),
    ]
    assert ends == [["train", "val"]]


class Named(Dataset):
    def __init__(self, names):
        self.names = names

    def __len__(self):
        return len(self.names)

    def __getitem__(self, i):
        return torch.tensor([float(i), 0.0]), self.names[i]


def test_set_min_label_to_zero_with_strings():
    names = ["dog", "cat", "monkey", "cat"]
    t = make_tester(set_min_label_to_zero=True, dataset_labels=names)
    emb, labels = t.get_all_embeddings(Named(names), torch.nn.Identity(), return_as_numpy=True)
    assert labels[:, 0].tolist() == [1, 0, 2, 0]
    assert isinstance(emb, np.ndarray)


def test_set_min_label_to_zero_needs_dataset_labels():
    # fix: the reference fails with an AttributeError at use time
    t = make_tester(set_min_label_to_zero=True)
    with pytest.raises(ValueError, match="dataset_labels"):
        t.get_all_embeddings(TRAIN, torch.nn.Identity())


def test_string_labels_without_mapping():
    with pytest.raises(TypeError, match="set_min_label_to_zero"):
        make_tester().get_all_embeddings(Named(["a", "b"]), torch.nn.Identity())


def test_get_all_embeddings_models_and_options():
    trunk = torch.nn.Linear(2, 3)
    embedder = torch.nn.Linear(3, 2)
    trunk.train()
    t = make_tester(normalize_embeddings=False)
    emb, labels = t.get_all_embeddings(TRAIN, trunk, embedder)
    assert not trunk.training and emb.shape == (8, 2) and labels.shape == (8, 1)
    with torch.no_grad():
        torch.testing.assert_close(emb, embedder(trunk(TRAIN.tensors[0])))
    emb, _ = make_tester(use_trunk_output=True).get_all_embeddings(TRAIN, trunk, embedder)
    assert emb.shape == (8, 3)
    torch.testing.assert_close(emb.norm(dim=1), torch.ones(8))


def test_pca_shared_by_compared_splits():
    # fix: one PCA basis for splits evaluated against each other
    g = torch.Generator().manual_seed(1)
    a = TensorDataset(torch.randn(20, 5, generator=g), torch.arange(20) % 4)
    b = TensorDataset(torch.randn(20, 5, generator=g) + 3, torch.arange(20) % 4)
    t = make_tester(pca=2, normalize_embeddings=False)
    seen = {}
    t.end_of_testing_hook = lambda tt: seen.update(tt.embeddings_and_labels)
    t.test({"a": a, "b": b}, 0, torch.nn.Identity(), splits_to_eval=[("a", ["a", "b"])])
    joint = torch.cat([a.tensors[0], b.tensors[0]])
    standard = (joint - joint.mean(0)) / joint.std(0)
    centred = standard - standard.mean(0)
    _, _, v = torch.linalg.svd(centred.double(), full_matrices=False)
    want = (centred.double() @ v[:2].T).float()
    got = torch.cat([seen["a"][0], seen["b"][0]])
    torch.testing.assert_close(got.abs(), want.abs(), rtol=1e-4, atol=1e-4)
    # the groups are an explicit argument; without them each split gets its own basis
    data, identity = {"a": a, "b": b}, torch.nn.Identity()
    grouped = t.get_all_embeddings_for_all_splits(
        data, identity, identity, ["a", "b"], None, pca_groups=[["a", "b"]]
    )
    assert torch.equal(grouped["a"][0], seen["a"][0])
    alone = t.get_all_embeddings_for_all_splits(data, identity, identity, ["a", "b"], None)
    assert torch.equal(alone["b"][0], t.get_all_embeddings(b, identity)[0])
    assert not torch.allclose(alone["b"][0].abs(), grouped["b"][0].abs())


def test_names():
    t = make_tester(
        pca=8,
        label_hierarchy_level=[0, 1],
        accuracy_calculator=AccuracyCalculator(avg_of_avgs=True, device=CPU),
    )
    assert t.description_suffixes("accuracies") == (
        "accuracies_pca8_normalized_GlobalEmbeddingSpaceTester_level_0_1_avg_of_avgs"
    )
    assert make_tester().description_suffixes("accuracies") == (
        "accuracies_normalized_GlobalEmbeddingSpaceTester_level_0"
    )
    assert t.accuracies_keyname("NMI", 2) == "NMI_level2"
    assert t.accuracies_keyname("NMI", average=True) == "AVERAGE_NMI"


def test_base_tester_is_abstract():
    t = make_tester(BaseTester)
    emb, labels = t.get_all_embeddings(TRAIN, torch.nn.Identity())
    assert emb.shape == (8, 2)
    with pytest.raises(NotImplementedError):
        t.test({"train": TRAIN}, 0, torch.nn.Identity())


class TwoStream(Dataset):
    def __init__(self, levels: int = 1):
        g = torch.Generator().manual_seed(2)
        self.labels = torch.arange(12) % 3
        centers = torch.randn(3, 4, generator=g) * 5
        self.anchors = centers[self.labels] + 0.1 * torch.randn(12, 4, generator=g)
        self.posnegs = centers[self.labels] + 0.1 * torch.randn(12, 4, generator=g)
        self.levels = levels

    def __len__(self):
        return 12

    def __getitem__(self, i):
        label = self.labels[i]
        if self.levels == 2:
            label = torch.stack([label, label // 2])
        return self.anchors[i], self.posnegs[i], label


def test_two_stream_tester():
    t = make_tester(GlobalTwoStreamEmbeddingSpaceTester)
    out = t.test({"val": TwoStream()}, 2, torch.nn.Identity())
    assert out["val"] == {"epoch": 2, "precision_at_1_level0": 1.0}
    emb, labels = t.get_all_embeddings(TwoStream(), torch.nn.Identity())
    assert emb.shape == (24, 4) and labels.shape == (24, 1)
    with pytest.raises(InvalidArgumentError, match="reference splits"):
        t.test(
            {"a": TwoStream(), "b": TwoStream()},
            0,
            torch.nn.Identity(),
            splits_to_eval=[("a", ["b"])],
        )


def test_two_stream_compute_all_embeddings_returns_both_streams():
    # fix: it used the one-stream loop and failed to unpack (anchors, posnegs, labels)
    t = make_tester(GlobalTwoStreamEmbeddingSpaceTester, normalize_embeddings=False)
    data = TwoStream()
    loader = torch.utils.data.DataLoader(data, batch_size=5)
    identity = torch.nn.Identity()
    anchors, posnegs, labels = t.compute_all_embeddings(loader, identity, identity)
    assert torch.equal(anchors, data.anchors) and torch.equal(posnegs, data.posnegs)
    assert torch.equal(labels[:, 0], data.labels)
    emb, all_labels = t.get_all_embeddings(data, identity)
    assert torch.equal(emb, torch.cat([data.anchors, data.posnegs]))
    assert torch.equal(all_labels, torch.cat([labels, labels]))


def test_two_stream_other_levels():
    # fix: the reference only works with label_hierarchy_level=0
    t = make_tester(GlobalTwoStreamEmbeddingSpaceTester, label_hierarchy_level=1)
    out = t.test({"val": TwoStream(levels=2)}, 0, torch.nn.Identity())
    assert list(out["val"]) == ["epoch", "precision_at_1_level1"]


def test_subclass_overriding_get_all_embeddings_for_all_splits_with_the_reference_signature():
    import torch

    from pml.eval import GlobalEmbeddingSpaceTester

    calls = []

    class MyTester(GlobalEmbeddingSpaceTester):
        def get_all_embeddings_for_all_splits(
            self, dataset_dict, trunk_model, embedder_model, splits, collate_fn
        ):
            calls.append(sorted(splits))
            return super().get_all_embeddings_for_all_splits(
                dataset_dict, trunk_model, embedder_model, splits, collate_fn
            )

    g = torch.Generator().manual_seed(0)
    x = torch.randn(40, 4, generator=g)
    y = torch.arange(4).repeat_interleave(10)
    dataset = torch.utils.data.TensorDataset(x, y)
    tester = MyTester(batch_size=8, dataloader_num_workers=0)
    acc = tester.test({"val": dataset}, 1, torch.nn.Identity())
    assert calls == [["val"]]
    assert "precision_at_1_level0" in acc["val"]


@pytest.mark.parametrize(
    ("dataset_dict", "models", "error", "match"),
    [
        ({"val": "ok"}, ({"trunk": 1},), TypeError, r"^trunk_model must be Module; got dict"),
        ({"val": "ok"}, (nn.Identity(), "x"), TypeError, r"^embedder_model must be Module"),
        ([1, 2], (nn.Identity(),), TypeError, r"^dataset_dict must be Mapping"),
        ({"val": torch.randn(3, 4)}, (nn.Identity(),), TypeError, r"got a Tensor \(wrap it"),
        (
            {"val": TensorDataset(torch.zeros(0, 4), torch.zeros(0, dtype=torch.long))},
            (nn.Identity(),),
            ValueError,
            r"^dataset_dict\['val'\] is empty",
        ),
    ],
)
def test_test_arguments_of_the_wrong_kind_are_named(dataset_dict, models, error, match):
    # a dict as trunk_model failed with "'dict' object has no attribute 'eval'", a bare
    # tensor with "must return 1 data stream(s) and the labels; got 2", an empty split
    # with "dataset must not be empty" (no split named)
    if dataset_dict == {"val": "ok"}:
        dataset_dict = {"val": TensorDataset(torch.randn(4, 4), torch.arange(4) % 2)}
    tester = GlobalEmbeddingSpaceTester(accuracy_calculator=AccuracyCalculator(k=1))
    with pytest.raises(error, match=match):
        tester.test(dataset_dict, 1, *models)
