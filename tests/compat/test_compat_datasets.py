"""pml.trainers datasets vs the reference's datasets on tiny fabricated folders (spec §9).

The same files on disk must give the same paths, labels, split membership and order, and
``dataset[i]`` the same image mode and label. Deviations (clear errors instead of crashes on
blank lines or unknown paths) are asserted in the unit tests.
"""

from __future__ import annotations

import json
import os

import pytest

pytest.importorskip("pytorch_metric_learning")

from PIL import Image
from pytorch_metric_learning import datasets as ref

from pml import trainers as ours

pytestmark = pytest.mark.compat

SPLITS = ["train", "test", "train+test"]


def _image(path: str, mode: str = "RGB") -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.new(mode, (5, 4), 90 if mode == "L" else (10, 20, 30)).save(path)


def _write(path: str, lines: list[str]) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


def _cub(root: str) -> None:
    base = os.path.join(root, "CUB_200_2011")
    # file order is not class order; one row with mismatched ids; classes outside 1..200
    rows = [(1, 150), (2, 1), (3, 100), (4, 101), (5, 200), (6, 1), (7, 250), (8, 0), (9, 7)]
    names, labels = [], []
    for img_id, c in rows:
        rel = f"{c:03d}.class_{c}/img_{img_id}.jpg"
        _image(os.path.join(base, "images", rel), "L" if img_id == 2 else "RGB")
        names.append(f"{img_id} {rel}")
        labels.append(f"{img_id if img_id != 9 else 99} {c}")
    _write(os.path.join(base, "images.txt"), names)
    _write(os.path.join(base, "image_class_labels.txt"), labels)


def _cars(root: str) -> None:
    names = [f"Make {c} Cab/Van {c}" if c % 3 == 0 else f" Make {c} Sedan " for c in range(1, 198)]
    _write(os.path.join(root, "names.csv"), names)
    n = 0
    for part, classes in [("train", [1, 99, 98, 196, 197, 3]), ("test", [99, 2, 98, 196])]:
        rows = []
        for c in classes:
            n += 1
            fname = f"{n:05d}.jpg"
            folder = names[c - 1].strip().replace("/", "-")
            _image(os.path.join(root, "car_data", "car_data", part, folder, fname))
            rows.append(f"{fname},3,4,50,60,{c}")
        _write(os.path.join(root, f"anno_{part}.csv"), rows)


def _sop(root: str) -> None:
    base = os.path.join(root, "Stanford_Online_Products")
    n = 0
    for part, classes in [("train", [4, 1, 1, 9]), ("test", [12, 11, 12])]:
        rows = ["image_id class_id super_class_id path"]
        for c in classes:
            n += 1
            rel = f"chair_final/{c}_{n}.JPG"
            _image(os.path.join(base, rel))
            rows.append(f"{n} {c} {c % 3 + 1} {rel}")
        _write(os.path.join(base, f"Ebay_{part}.txt"), rows)


def _inat(root: str) -> None:
    lists: dict[str, list[str]] = {"train": [], "test": []}
    n = 0
    for name, entries in [
        ("train2018.json", [(30, "test"), (3, "train"), (3, "train")]),
        ("val2018.json", [(5, "train"), (9, "test"), (9, None)]),
    ]:
        images, annotations = [], []
        for cat, part in entries:
            n += 1
            rel = f"train_val2018/Aves/{cat}/{n}.jpg"
            _image(os.path.join(root, rel))
            images.append({"file_name": rel, "id": 500 + n})
            annotations.append({"image_id": 500 + n, "category_id": cat, "id": n})
            if part:
                lists[part].append(rel)
        with open(os.path.join(root, name), "w") as f:
            json.dump({"images": images, "annotations": annotations}, f)
    for part, rels in lists.items():
        _write(os.path.join(root, "Inat_dataset_splits", f"Inaturalist_{part}_set1.txt"), rels)


CASES = [
    ("CUB", _cub),
    ("Cars196", _cars),
    ("StanfordOnlineProducts", _sop),
    ("INaturalist2018", _inat),
]


@pytest.mark.parametrize("split", SPLITS)
@pytest.mark.parametrize(("name", "make"), CASES, ids=[c[0] for c in CASES])
def test_same_paths_labels_and_items(tmp_path, name, make, split) -> None:
    make(str(tmp_path))
    expected = getattr(ref, name)(str(tmp_path), split=split)
    got = getattr(ours, name)(str(tmp_path), split=split)
    assert got.paths == expected.paths
    assert got.labels == expected.labels
    assert len(got) == len(expected) > 0
    for i in range(len(got)):
        (img_e, y_e), (img_g, y_g) = expected[i], got[i]
        assert (img_g.mode, img_g.size, y_g) == (img_e.mode, img_e.size, y_e)


@pytest.mark.parametrize(("name", "make"), CASES, ids=[c[0] for c in CASES])
def test_both_reject_an_unknown_split(tmp_path, name, make) -> None:
    make(str(tmp_path))
    with pytest.raises(ValueError, match="train\\+test"):
        getattr(ref, name)(str(tmp_path), split="val")
    with pytest.raises(ValueError, match="train\\+test"):
        getattr(ours, name)(str(tmp_path), split="val")


@pytest.mark.parametrize("name", [c[0] for c in CASES])
def test_both_raise_value_error_for_a_missing_root(tmp_path, name) -> None:
    missing = str(tmp_path / "nowhere")
    with pytest.raises(ValueError, match="does not exist"):
        getattr(ref, name)(missing)
    with pytest.raises(ValueError, match="does not exist"):
        getattr(ours, name)(missing)


def test_transforms_are_applied_alike(tmp_path) -> None:
    _sop(str(tmp_path))
    kwargs = {"transform": lambda im: im.size, "target_transform": lambda y: -y}
    expected = ref.StanfordOnlineProducts(str(tmp_path), **kwargs)
    got = ours.StanfordOnlineProducts(str(tmp_path), **kwargs)
    assert [got[i] for i in range(len(got))] == [expected[i] for i in range(len(expected))]
