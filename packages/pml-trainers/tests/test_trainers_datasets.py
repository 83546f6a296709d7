"""Datasets of pml.trainers on tiny folders fabricated here (spec §9; nothing downloads)."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

from pml.trainers import (
    CUB,
    BaseDataset,
    Cars196,
    Compose,
    DigitsDataset,
    FeaturesDataset,
    ImageFolderDataset,
    INaturalist2018,
    Resize,
    StanfordOnlineProducts,
    ToTensor,
)

# ---------------------------------------------------------------- fabricated layouts


def _image(path, mode="RGB", size=(5, 4)):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.new(mode, size, 90 if mode == "L" else (10, 20, 30)).save(path)


def _write(path, lines, trailing="\n"):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write("\n".join(lines) + trailing)


def make_cub(root, rows=((1, 150), (2, 1), (3, 100), (4, 101), (5, 200), (6, 1), (7, 201))):
    """CUB_200_2011 with ``rows`` of (image id, class id); image 2 is greyscale."""
    base = os.path.join(root, "CUB_200_2011")
    names, labels = [], []
    for img_id, c in rows:
        rel = f"{c:03d}.class_{c}/img_{img_id}.jpg"
        _image(os.path.join(base, "images", rel), "L" if img_id == 2 else "RGB")
        names.append(f"{img_id} {rel}")
        labels.append(f"{img_id} {c}")
    _write(os.path.join(base, "images.txt"), names)
    _write(os.path.join(base, "image_class_labels.txt"), labels)
    return base


CARS_NAMES = [f"Make {c} C/V {c}" if c % 2 else f"Make {c} Sedan" for c in range(1, 197)]


def make_cars(root, train=(1, 99, 98, 196, 3), test=(99, 2, 98, 196)):
    _write(os.path.join(root, "names.csv"), CARS_NAMES)
    n = 0
    for part, classes in (("train", train), ("test", test)):
        rows = []
        for c in classes:
            n += 1
            fname = f"{n:05d}.jpg"
            folder = CARS_NAMES[c - 1].replace("/", "-")
            _image(os.path.join(root, "car_data", "car_data", part, folder, fname))
            rows.append(f"{fname},3,4,50,60,{c}")
        _write(os.path.join(root, f"anno_{part}.csv"), rows)


def make_sop(root, train=(4, 1, 1, 9), test=(12, 11, 12)):
    base = os.path.join(root, "Stanford_Online_Products")
    n = 0
    for part, classes in (("train", train), ("test", test)):
        rows = ["image_id class_id super_class_id path"]
        for c in classes:
            n += 1
            rel = f"chair_final/{c}_{n}.JPG"
            _image(os.path.join(base, rel))
            rows.append(f"{n} {c} {c % 3 + 1} {rel}")
        _write(os.path.join(base, f"Ebay_{part}.txt"), rows)


def make_inat(root):
    """3 train2018 + 3 val2018 images; lists: train = 2 + 1 images, test = 1 + 1 images."""
    lists = {"train": [], "test": []}
    n = 0
    for name, entries in (
        ("train2018.json", [(30, "test"), (3, "train"), (4, "train")]),
        ("val2018.json", [(5, "train"), (9, "test"), (9, None)]),
    ):
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
    return lists


def rel_paths(ds, root):
    return [os.path.relpath(p, root).replace(os.sep, "/") for p in ds.paths]


# ---------------------------------------------------------------- CUB


def test_cub_splits_by_class_ranges_in_file_order(tmp_path):
    make_cub(str(tmp_path))
    assert CUB(tmp_path, split="train").labels == [1, 100, 1]
    assert CUB(tmp_path, split="test").labels == [150, 101, 200]
    both = CUB(tmp_path)
    assert both.split == "train+test"
    assert both.labels == [150, 1, 100, 101, 200, 1]  # class 201 is in no split
    assert len(both) == 6
    assert rel_paths(both, tmp_path)[0] == "CUB_200_2011/images/150.class_150/img_1.jpg"


def test_cub_greyscale_image_passes_unconverted(tmp_path):
    make_cub(str(tmp_path))
    ds = CUB(tmp_path, split="train")
    img, label = ds[0]
    assert isinstance(img, Image.Image) and img.mode == "L" and label == 1
    assert img.size == (5, 4)
    assert ds[1][0].mode == "RGB"
    assert getattr(img, "fp", None) is None  # read at once: no open file per sample


def test_cub_keeps_rows_only_when_the_two_files_agree_on_the_id(tmp_path):
    base = make_cub(str(tmp_path), rows=((1, 5), (2, 6), (3, 7)))
    _write(os.path.join(base, "image_class_labels.txt"), ["1 5", "9 6", "3 7"])
    assert CUB(tmp_path).labels == [5, 7]


def test_cub_blank_lines_are_skipped(tmp_path):
    base = make_cub(str(tmp_path), rows=((1, 5), (2, 6)))
    _write(
        os.path.join(base, "images.txt"),
        ["1 005.class_5/img_1.jpg", "", "2 006.class_6/img_2.jpg"],
        trailing="\n\n",
    )
    assert CUB(tmp_path).labels == [5, 6]


def test_cub_path_with_a_space_is_kept_whole(tmp_path):
    base = make_cub(str(tmp_path), rows=((1, 5),))
    _image(os.path.join(base, "images", "005.x", "a b.jpg"))
    _write(os.path.join(base, "images.txt"), ["1 005.x/a b.jpg"])
    assert rel_paths(CUB(tmp_path), tmp_path) == ["CUB_200_2011/images/005.x/a b.jpg"]


def test_cub_malformed_line_names_the_file_and_line(tmp_path):
    base = make_cub(str(tmp_path), rows=((1, 5), (2, 6)))
    _write(os.path.join(base, "image_class_labels.txt"), ["1 5", "2 six"])
    with pytest.raises(ValueError, match=r"image_class_labels\.txt, line 2: class id"):
        CUB(tmp_path)


# ---------------------------------------------------------------- Cars196


def test_cars196_pools_annotations_then_splits_1_98_and_99_196(tmp_path):
    make_cars(str(tmp_path))
    assert Cars196(tmp_path, split="train").labels == [1, 98, 3, 2, 98]
    assert Cars196(tmp_path, split="test").labels == [99, 196, 99, 196]
    assert Cars196(tmp_path).labels == [1, 99, 98, 196, 3, 99, 2, 98, 196]


def test_cars196_paths_use_the_class_name_with_slash_as_dash(tmp_path):
    make_cars(str(tmp_path))
    paths = rel_paths(Cars196(tmp_path, split="test"), tmp_path)
    assert paths[0] == "car_data/car_data/train/Make 99 C-V 99/00002.jpg"
    assert paths[2] == "car_data/car_data/test/Make 99 C-V 99/00006.jpg"
    img, label = Cars196(tmp_path, split="test")[2]
    assert (img.size, label) == ((5, 4), 99)


def test_cars196_class_197_is_in_no_split(tmp_path):
    make_cars(str(tmp_path), train=(1,), test=(2,))
    with open(os.path.join(tmp_path, "anno_train.csv"), "a") as f:
        f.write("x.jpg,1,2,3,4,197\n")
    assert Cars196(tmp_path).labels == [1, 2]


def test_cars196_header_line_is_a_clear_error(tmp_path):
    make_cars(str(tmp_path))
    path = os.path.join(tmp_path, "anno_test.csv")
    with open(path) as f:
        body = f.read()
    with open(path, "w") as f:
        f.write("fname,x1,y1,x2,y2,class\n" + body)
    with pytest.raises(ValueError, match=r"anno_test\.csv, line 1: class id"):
        Cars196(tmp_path)


def test_cars196_class_without_a_name_is_a_clear_error(tmp_path):
    make_cars(str(tmp_path))
    _write(os.path.join(tmp_path, "names.csv"), CARS_NAMES[:50])
    with pytest.raises(ValueError, match=r"class id 99 has no name in .*names\.csv"):
        Cars196(tmp_path, split="test")


# ---------------------------------------------------------------- StanfordOnlineProducts


def test_sop_official_files_header_skipped(tmp_path):
    make_sop(str(tmp_path))
    assert StanfordOnlineProducts(tmp_path, split="train").labels == [4, 1, 1, 9]
    assert StanfordOnlineProducts(tmp_path, split="test").labels == [12, 11, 12]
    both = StanfordOnlineProducts(tmp_path)
    assert both.labels == [4, 1, 1, 9, 12, 11, 12]
    assert rel_paths(both, tmp_path)[4] == "Stanford_Online_Products/chair_final/12_5.JPG"
    assert both[4][1] == 12


def test_sop_short_row_names_the_file_and_line(tmp_path):
    make_sop(str(tmp_path))
    with open(os.path.join(tmp_path, "Stanford_Online_Products", "Ebay_test.txt"), "a") as f:
        f.write("99 3\n")
    with pytest.raises(ValueError, match=r"Ebay_test\.txt, line 5: expected 4 fields"):
        StanfordOnlineProducts(tmp_path, split="test")


# ---------------------------------------------------------------- INaturalist2018


def test_inaturalist2018_lists_and_category_ids(tmp_path):
    lists = make_inat(str(tmp_path))
    train = INaturalist2018(tmp_path, split="train")
    assert train.labels == [3, 4, 5]
    assert rel_paths(train, tmp_path) == lists["train"]
    assert INaturalist2018(tmp_path, split="test").labels == [30, 9]
    assert INaturalist2018(tmp_path).labels == [3, 4, 5, 30, 9]
    assert INaturalist2018(tmp_path, split="test")[0][1] == 30


def test_inaturalist2018_unlisted_path_names_the_split_file(tmp_path):
    make_inat(str(tmp_path))
    with open(os.path.join(tmp_path, "Inat_dataset_splits", "Inaturalist_test_set1.txt"), "a") as f:
        f.write("train_val2018/Aves/0/nope.jpg\n")
    with pytest.raises(
        ValueError, match=r"Inaturalist_test_set1\.txt, line 3: 'train_val2018/Aves/0/nope\.jpg'"
    ):
        INaturalist2018(tmp_path)


def test_inaturalist2018_json_without_annotations_is_a_clear_error(tmp_path):
    make_inat(str(tmp_path))
    with open(os.path.join(tmp_path, "val2018.json"), "w") as f:
        json.dump({"images": []}, f)
    with pytest.raises(ValueError, match=r"val2018\.json: expected COCO-like JSON"):
        INaturalist2018(tmp_path)


# ---------------------------------------------------------------- BaseDataset behaviour

LAYOUTS = [
    (CUB, make_cub, ["CUB_200_2011/images.txt", "CUB_200_2011/image_class_labels.txt"]),
    (Cars196, make_cars, ["names.csv", "anno_train.csv", "anno_test.csv"]),
    (
        StanfordOnlineProducts,
        make_sop,
        ["Stanford_Online_Products/Ebay_train.txt", "Stanford_Online_Products/Ebay_test.txt"],
    ),
    (
        INaturalist2018,
        make_inat,
        [
            "train2018.json",
            "val2018.json",
            "Inat_dataset_splits/Inaturalist_train_set1.txt",
            "Inat_dataset_splits/Inaturalist_test_set1.txt",
        ],
    ),
]
IDS = [c[0].__name__ for c in LAYOUTS]


@pytest.mark.parametrize(("cls", "make", "files"), LAYOUTS, ids=IDS)
def test_missing_root_is_a_value_error_listing_the_expected_paths(tmp_path, cls, make, files):
    root = tmp_path / "nowhere"
    with pytest.raises(ValueError, match="does not exist") as info:
        cls(root)
    for rel in files:
        assert os.path.join(str(root), rel) in str(info.value)
    assert not root.exists()


@pytest.mark.parametrize(("cls", "make", "files"), LAYOUTS, ids=IDS)
def test_missing_files_error_names_each_expected_path(tmp_path, cls, make, files):
    with pytest.raises(FileNotFoundError) as info:
        cls(tmp_path)
    message = str(info.value)
    for rel in files:
        assert f"{os.path.join(str(tmp_path), rel)}  (missing)" in message
    assert cls.source.split()[0] in message
    assert "Images: <root>/" in message


def test_only_the_missing_files_are_marked(tmp_path):
    make_cars(str(tmp_path))
    os.remove(tmp_path / "anno_test.csv")
    with pytest.raises(FileNotFoundError, match="1 of its files are missing") as info:
        Cars196(tmp_path)
    message = str(info.value)
    assert f"{os.path.join(str(tmp_path), 'anno_test.csv')}  (missing)" in message
    assert f"{os.path.join(str(tmp_path), 'names.csv')}\n" in message


@pytest.mark.parametrize(("cls", "make", "files"), LAYOUTS, ids=IDS)
def test_download_true_on_a_missing_root_says_where_to_get_the_files(tmp_path, cls, make, files):
    root = tmp_path / "data"
    with pytest.raises(FileNotFoundError, match="pml does not download") as info:
        cls(root, download=True)
    assert cls.source.split()[0] in str(info.value)
    assert os.path.join(str(root), files[0]) in str(info.value)
    assert not root.exists()  # nothing created
    (root).mkdir()
    with pytest.raises(FileNotFoundError, match="pml does not download"):
        cls(root, download=True)


@pytest.mark.parametrize(("cls", "make", "files"), LAYOUTS, ids=IDS)
def test_download_true_on_a_filled_root_reads_it(tmp_path, cls, make, files):
    make(str(tmp_path))
    assert cls(tmp_path, download=True).labels == cls(tmp_path).labels


@pytest.mark.parametrize(("cls", "make", "files"), LAYOUTS, ids=IDS)
def test_unknown_split_lists_the_supported_splits(tmp_path, cls, make, files):
    make(str(tmp_path))
    with pytest.raises(
        ValueError, match=r"split must be one of \['train', 'test', 'train\+test'\]; got 'val'"
    ):
        cls(tmp_path, split="val")
    # checked before any download attempt
    with pytest.raises(ValueError, match="split must be one of"):
        cls(tmp_path / "empty", split="val", download=True)


def test_get_available_splits(tmp_path):
    make_sop(str(tmp_path))
    assert StanfordOnlineProducts(tmp_path).get_available_splits() == [
        "train",
        "test",
        "train+test",
    ]


def test_root_that_is_a_file_is_rejected(tmp_path):
    path = tmp_path / "file.txt"
    path.write_text("x")
    with pytest.raises(ValueError, match="root must be a folder"):
        CUB(path)


def test_argument_types_are_checked(tmp_path):
    make_sop(str(tmp_path))
    with pytest.raises(TypeError, match="transform"):
        StanfordOnlineProducts(tmp_path, transform=3)
    with pytest.raises(TypeError, match="target_transform"):
        StanfordOnlineProducts(tmp_path, target_transform="x")
    with pytest.raises(TypeError, match="download"):
        StanfordOnlineProducts(tmp_path, download="yes")
    with pytest.raises(TypeError, match="root"):
        StanfordOnlineProducts(3)
    with pytest.raises(TypeError, match="split"):
        StanfordOnlineProducts(tmp_path, split=None)


def test_transform_and_target_transform_are_applied(tmp_path):
    make_sop(str(tmp_path))
    ds = StanfordOnlineProducts(
        tmp_path, transform=lambda im: im.size, target_transform=lambda y: -y
    )
    assert [ds[i] for i in range(len(ds))] == [((5, 4), -c) for c in (4, 1, 1, 9, 12, 11, 12)]
    assert ds[-1] == ((5, 4), -12)
    with pytest.raises(IndexError):
        ds[7]


def test_missing_image_error_names_its_path(tmp_path):
    make_sop(str(tmp_path))
    ds = StanfordOnlineProducts(tmp_path)
    os.remove(ds.paths[2])
    with pytest.raises(FileNotFoundError, match="1_3.JPG"):
        ds[2]


def test_root_is_kept_as_a_string_and_repr(tmp_path):
    make_sop(str(tmp_path))
    ds = StanfordOnlineProducts(tmp_path, split="test")
    assert ds.root == str(tmp_path)
    assert repr(ds) == f"StanfordOnlineProducts(root={str(tmp_path)!r}, split='test', 3 images)"


def test_base_dataset_is_abstract(tmp_path):
    with pytest.raises(TypeError, match="abstract"):
        BaseDataset(tmp_path)


def test_subclass_download_and_remove_is_called_like_the_reference(tmp_path):
    calls = []

    class Mine(BaseDataset):
        def download_and_remove(self):
            calls.append(sorted(os.listdir(self.root)))
            _write(os.path.join(self.root, "list.txt"), ["a 1", "b 2"])

        def generate_split(self):
            with open(os.path.join(self.root, "list.txt")) as f:
                for line in f:
                    name, label = line.split()
                    self.paths.append(os.path.join(self.root, name))
                    self.labels.append(int(label))

    root = tmp_path / "new"
    ds = Mine(root, download=True)
    assert calls == [[]]  # root created, then download_and_remove
    assert ds.labels == [1, 2]
    Mine(root, download=True)  # non-empty: no second download
    assert calls == [[]]
    with pytest.raises(ValueError, match="download=True"):
        Mine(tmp_path / "absent")


def test_dataloader_batches_greyscale_and_rgb_images(tmp_path):
    make_cub(str(tmp_path))
    ds = CUB(tmp_path, split="train", transform=Compose([Resize((4, 4)), ToTensor(mode="RGB")]))
    images, labels = next(iter(torch.utils.data.DataLoader(ds, batch_size=3)))
    assert images.shape == (3, 3, 4, 4)
    assert labels.tolist() == [1, 100, 1]
    assert torch.allclose(images[0, 0], images[0, 1])  # the greyscale image, repeated


# ---------------------------------------------------------------- ImageFolderDataset


def make_folder(root):
    _image(os.path.join(root, "zebra", "a.png"))
    _image(os.path.join(root, "zebra", "sub", "b.JPG"), "L")
    _image(os.path.join(root, "ant", "c.jpeg"), "L")
    _image(os.path.join(root, "ant", ".hidden.png"))
    _image(os.path.join(root, "mole", "d.png"))
    with open(os.path.join(root, "mole", "notes.txt"), "w") as f:
        f.write("not an image")
    os.makedirs(os.path.join(root, ".git"))


def test_image_folder_classes_in_sorted_order(tmp_path):
    make_folder(str(tmp_path))
    ds = ImageFolderDataset(tmp_path)
    assert ds.classes == ["ant", "mole", "zebra"]
    assert ds.class_to_idx == {"ant": 0, "mole": 1, "zebra": 2}
    assert ds.labels == [0, 1, 2, 2]
    assert rel_paths(ds, tmp_path) == ["ant/c.jpeg", "mole/d.png", "zebra/a.png", "zebra/sub/b.JPG"]
    img, label = ds[3]
    assert img.mode == "L" and label == 2


def test_image_folder_mode_converts(tmp_path):
    make_folder(str(tmp_path))
    ds = ImageFolderDataset(
        tmp_path, mode="RGB", transform=lambda im: im.mode, target_transform=str
    )
    assert [ds[i] for i in range(len(ds))] == [
        ("RGB", "0"),
        ("RGB", "1"),
        ("RGB", "2"),
        ("RGB", "2"),
    ]


def test_image_folder_extensions_filter(tmp_path):
    make_folder(str(tmp_path))
    ds = ImageFolderDataset(tmp_path, extensions=(".PNG",), allow_empty=True)
    assert rel_paths(ds, tmp_path) == ["mole/d.png", "zebra/a.png"]
    assert ds.labels == [1, 2]  # "ant" keeps index 0 without samples
    everything = ImageFolderDataset(tmp_path, extensions=None)
    assert "mole/notes.txt" in rel_paths(everything, tmp_path)


def test_image_folder_empty_class_is_an_error(tmp_path):
    make_folder(str(tmp_path))
    with pytest.raises(FileNotFoundError, match=r"ant'? holds no file.*allow_empty"):
        ImageFolderDataset(tmp_path, extensions=".png")


def test_image_folder_missing_root_or_no_classes(tmp_path):
    with pytest.raises(FileNotFoundError, match="is not a folder"):
        ImageFolderDataset(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="holds no class folder"):
        ImageFolderDataset(tmp_path)
    with pytest.raises(TypeError, match="extensions"):
        ImageFolderDataset(tmp_path, extensions=[3])


# ---------------------------------------------------------------- FeaturesDataset


def test_features_from_arrays_give_float_tensors_and_int_labels():
    feats = np.arange(12, dtype=np.float64).reshape(4, 3)
    ds = FeaturesDataset(feats, labels=np.array([3, 1, 3, 0]))
    assert len(ds) == 4
    x, y = ds[1]
    assert x.dtype == torch.float32 and x.tolist() == [3.0, 4.0, 5.0]
    assert type(y) is int and y == 1
    ds64 = FeaturesDataset(torch.ones(2, 2, 2), labels=torch.tensor([0, 1]), dtype=torch.float64)
    assert ds64[0][0].dtype == torch.float64 and ds64[0][0].shape == (2, 2)


def test_features_from_npz_and_npy(tmp_path):
    feats = np.random.default_rng(0).normal(size=(5, 4)).astype(np.float32)
    labels = np.array([0, 1, 1, 2, 0])
    np.savez(tmp_path / "emb.npz", features=feats, labels=labels)
    ds = FeaturesDataset(tmp_path / "emb.npz")
    assert torch.equal(ds.features, torch.from_numpy(feats))
    assert ds.labels == [0, 1, 1, 2, 0]
    np.savez(tmp_path / "custom.npz", x=feats, y=labels)
    assert (
        FeaturesDataset(str(tmp_path / "custom.npz"), features_key="x", labels_key="y").labels
        == ds.labels
    )
    np.save(tmp_path / "x.npy", feats)
    np.save(tmp_path / "y.npy", labels)
    assert FeaturesDataset(tmp_path / "x.npy", labels=tmp_path / "y.npy").labels == ds.labels
    assert FeaturesDataset(tmp_path / "x.npy", labels=[4, 4, 4, 4, 4])[4][1] == 4


def test_features_errors_name_the_argument(tmp_path):
    feats = np.zeros((3, 2), dtype=np.float32)
    with pytest.raises(ValueError, match="labels are required"):
        FeaturesDataset(feats)
    np.save(tmp_path / "x.npy", feats)
    with pytest.raises(ValueError, match="labels are required"):
        FeaturesDataset(tmp_path / "x.npy")
    with pytest.raises(ValueError, match=r"labels must have shape \(N,\) = \(3,\)"):
        FeaturesDataset(feats, labels=[0, 1])
    with pytest.raises(TypeError, match="labels must be integers"):
        FeaturesDataset(feats, labels=[0.0, 1.0, 2.0])
    with pytest.raises(ValueError, match="features must have shape"):
        FeaturesDataset(np.zeros((0, 2)), labels=[])
    np.savez(tmp_path / "a.npz", emb=feats)
    with pytest.raises(ValueError, match="holds no array 'features'"):
        FeaturesDataset(tmp_path / "a.npz", labels=[0, 1, 2])
    with pytest.raises(TypeError, match=r"\.npy or \.npz"):
        (tmp_path / "f.csv").write_text("1,2")
        FeaturesDataset(tmp_path / "f.csv", labels=[0])
    with pytest.raises(FileNotFoundError, match="missing.npy"):
        FeaturesDataset(tmp_path / "missing.npy", labels=[0])
    with pytest.raises(TypeError, match="dtype must be a floating dtype"):
        FeaturesDataset(feats, labels=[0, 1, 2], dtype=torch.int64)


def test_features_file_with_pickled_objects_is_refused(tmp_path):
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match="allow_pickle"):
        FeaturesDataset(tmp_path / "obj.npy", labels=[0, 1])


# ---------------------------------------------------------------- DigitsDataset


def test_digits_samples_protocol_is_a_stratified_seeded_partition():
    train, test = DigitsDataset("train"), DigitsDataset("test")
    assert len(train) + len(test) == 1797
    assert len(test) == 540  # ceil(0.3 * 1797)
    assert train.classes == test.classes == list(range(10))
    whole = DigitsDataset("train+test")
    assert len(whole) == 1797
    counts = np.bincount(whole.labels)
    test_counts = np.bincount(test.labels, minlength=10)
    assert np.all(np.abs(test_counts - 0.3 * counts) <= 1)  # stratified
    # a partition of the samples: the rows of train and test are the rows of the whole set
    rows = torch.cat([train.data, test.data])
    assert sorted(map(tuple, rows.tolist())) == sorted(map(tuple, whole.data.tolist()))
    again = DigitsDataset("test")
    assert torch.equal(again.data, test.data) and again.labels == test.labels
    other = DigitsDataset("test", seed=1)
    assert not torch.equal(other.data, test.data)


def test_digits_values_and_shapes():
    ds = DigitsDataset("train+test")
    from sklearn.datasets import load_digits

    digits = load_digits()
    assert ds.data.dtype == torch.float32 and ds.data.shape == (1797, 64)
    assert torch.equal(ds.data, torch.from_numpy(digits.data / 16.0).float())
    assert ds.labels == digits.target.tolist()
    x, y = ds[5]
    assert x.shape == (64,) and type(y) is int and y == int(digits.target[5])
    img = DigitsDataset("train", as_image=True)
    assert img.data.shape == (len(img), 1, 8, 8) and img[0][0].shape == (1, 8, 8)
    assert float(ds.data.min()) == 0.0 and float(ds.data.max()) == 1.0


def test_digits_classes_protocol_is_open_set():
    train = DigitsDataset("train", protocol="classes")
    test = DigitsDataset("test", protocol="classes")
    assert train.classes == [0, 1, 2, 3, 4] and test.classes == [5, 6, 7, 8, 9]
    assert len(train) + len(test) == 1797
    custom = DigitsDataset("test", protocol="classes", train_classes=[9, 0])
    assert custom.classes == [1, 2, 3, 4, 5, 6, 7, 8]
    whole = np.array(DigitsDataset("train+test").labels)
    assert len(custom) == int(np.isin(whole, [1, 2, 3, 4, 5, 6, 7, 8]).sum())


def test_digits_transforms():
    ds = DigitsDataset("test", transform=lambda x: x.sum(), target_transform=lambda y: y + 10)
    x, y = ds[0]
    assert x.ndim == 0 and 10 <= y <= 19


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"split": "val"}, ValueError, "split must be one of"),
        ({"protocol": "open"}, ValueError, "protocol must be one of"),
        ({"test_size": 1.0}, ValueError, "test_size"),
        ({"test_size": 0}, ValueError, "test_size"),
        ({"seed": -1}, ValueError, "seed"),
        ({"seed": 1.5}, TypeError, "seed"),
        ({"train_classes": []}, ValueError, "train_classes"),
        ({"train_classes": range(10)}, ValueError, "train_classes"),
        ({"train_classes": [1, 1]}, ValueError, "train_classes must not repeat"),
        ({"train_classes": [10]}, ValueError, "train_classes"),
        ({"train_classes": 3}, TypeError, "train_classes"),
        ({"as_image": 1}, TypeError, "as_image"),
    ],
)
def test_digits_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        DigitsDataset(**kwargs)
