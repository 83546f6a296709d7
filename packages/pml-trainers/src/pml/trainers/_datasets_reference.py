"""The reference's four image-retrieval datasets, read from their standard on-disk layouts.

Each reads its index files (never lists folders), keeps the reference's split rule and raw
1-based class ids, and opens images lazily in ``__getitem__`` (see :class:`BaseDataset`).
Blank lines in the index files are skipped (the reference fails on them); a malformed line is
a ``ValueError`` naming the file and the line.
"""

from __future__ import annotations

import json
import os
from typing import Any

from pml.trainers._datasets import BaseDataset, parse_int, read_index_lines, split_fields

__all__ = ["CUB", "Cars196", "INaturalist2018", "StanfordOnlineProducts"]

_SOP_FIELDS = ("image_id", "class_id", "super_class_id", "path")
# compat: spec §9, the class ranges of each split (Cars196: range(1, 99) / range(99, 197) as
# in the reference's code, not the 1-99 / 99-197 of its docs).
_CUB_CLASSES = {"train": range(1, 101), "test": range(101, 201), "train+test": range(1, 201)}
_CARS_CLASSES = {"train": range(1, 99), "test": range(99, 197), "train+test": range(1, 197)}


class CUB(BaseDataset):
    """Caltech-UCSD Birds-200-2011: 11,788 images of 200 bird species.

    Wah et al., "The Caltech-UCSD Birds-200-2011 Dataset", 2011. The metric-learning split:
    ``"train"`` = classes 1-100 (5,864 images), ``"test"`` = classes 101-200 (5,924),
    ``"train+test"`` = classes 1-200 (11,788), in the order of ``images.txt``.

    Files under ``root``: ``CUB_200_2011/images.txt`` (``<image id> <relative path>`` per
    line) and ``CUB_200_2011/image_class_labels.txt`` (``<image id> <class id>`` per line),
    read line by line in lockstep (a row is kept only when both ids agree); images at
    ``CUB_200_2011/images/<relative path>``. Some images are greyscale (mode ``"L"``).

    Labels are the class ids 1..200 (not remapped). Arguments as in :class:`BaseDataset`.

    Example:
        >>> ds = CUB("data/cub", split="train")  # doctest: +SKIP
        >>> len(ds), ds.labels[0]  # doctest: +SKIP
        (5864, 1)
    """

    required_files = ("CUB_200_2011/images.txt", "CUB_200_2011/image_class_labels.txt")
    source = "https://www.vision.caltech.edu/datasets/cub_200_2011/ (CUB_200_2011.tgz)"
    layout = "<root>/CUB_200_2011/images/<path listed in images.txt>"

    def generate_split(self) -> None:
        base = os.path.join(self.root, "CUB_200_2011")
        names_file = os.path.join(base, "images.txt")
        labels_file = os.path.join(base, "image_class_labels.txt")
        wanted = _CUB_CLASSES[self.split]
        for (n1, line1), (n2, line2) in zip(
            read_index_lines(names_file), read_index_lines(labels_file)
        ):
            id_text, rel = split_fields(line1, names_file, n1, ("image id", "path"))
            img_id = parse_int(id_text, names_file, n1, "image id")
            id_text2, class_text = split_fields(line2, labels_file, n2, ("image id", "class id"))
            # compat: spec §9, the two files are read in lockstep; rows whose ids differ drop.
            if img_id != parse_int(id_text2, labels_file, n2, "image id"):
                continue
            label = parse_int(class_text, labels_file, n2, "class id")
            if label in wanted:
                self.paths.append(os.path.join(base, "images", rel))
                self.labels.append(label)


class Cars196(BaseDataset):
    """Stanford Cars: 16,185 images of 196 car models.

    Krause et al., "3D Object Representations for Fine-Grained Categorization", 2013. The train
    and test annotations are pooled, then split by class: ``"train"`` = classes 1-98 (8,054
    images), ``"test"`` = classes 99-196 (8,131), ``"train+test"`` = 1-196 (16,185); within a
    split, the rows of ``anno_train.csv`` come first, then those of ``anno_test.csv``.
    (The reference's docs say 1-99 / 99-197; its code, which this follows, uses 1-98 / 99-196.)

    Files under ``root`` (the layout of the "Stanford Car Dataset by classes folder"):
    ``names.csv`` (one class name per line; line c = class c), ``anno_train.csv`` and
    ``anno_test.csv`` (comma-separated rows, no header: first field the file name, last field
    the class id); images at ``car_data/car_data/<train|test>/<class name, "/" -> "-">/<file>``.

    Labels are the class ids 1..196 (not remapped). Arguments as in :class:`BaseDataset`.

    Example:
        >>> ds = Cars196("data/cars196", split="test")  # doctest: +SKIP
        >>> len(ds), min(ds.labels)  # doctest: +SKIP
        (8131, 99)
    """

    required_files = ("names.csv", "anno_train.csv", "anno_test.csv")
    source = (
        "https://www.kaggle.com/datasets/jutrera/stanford-car-dataset-by-classes-folder "
        '("Stanford Car Dataset by classes folder")'
    )
    layout = '<root>/car_data/car_data/<train|test>/<class name with "/" -> "-">/<file name>'

    def generate_split(self) -> None:
        names_file = os.path.join(self.root, "names.csv")
        with open(names_file, encoding="utf-8") as f:
            names = [line.strip() for line in f]
        wanted = _CARS_CLASSES[self.split]
        for part in ("train", "test"):
            anno_file = os.path.join(self.root, f"anno_{part}.csv")
            folder = os.path.join(self.root, "car_data", "car_data", part)
            for n, line in read_index_lines(anno_file):
                fields = line.split(",")
                if len(fields) < 2:
                    raise ValueError(
                        f"{anno_file}, line {n}: expected comma-separated fields (file name, "
                        f"..., class id); got {line!r}"
                    )
                label = parse_int(fields[-1], anno_file, n, "class id (last field)")
                if label not in wanted:
                    continue
                if label > len(names) or not names[label - 1]:
                    raise ValueError(
                        f"{anno_file}, line {n}: class id {label} has no name in {names_file} "
                        f"(line {label} of {len(names)})"
                    )
                class_folder = names[label - 1].replace("/", "-")
                self.paths.append(os.path.join(folder, class_folder, fields[0].strip()))
                self.labels.append(label)


class StanfordOnlineProducts(BaseDataset):
    """Stanford Online Products: 120,053 images of 22,634 products.

    Oh Song et al., "Deep Metric Learning via Lifted Structured Feature Embedding", CVPR 2016.
    The official split: ``"train"`` = ``Ebay_train.txt`` (59,551 images, 11,318 classes),
    ``"test"`` = ``Ebay_test.txt`` (60,502 images, 11,316 classes), ``"train+test"`` = the train
    rows, then the test rows.

    Files under ``root``: ``Stanford_Online_Products/Ebay_train.txt`` and ``Ebay_test.txt`` (a
    header line, then ``image_id class_id super_class_id path`` per line); images at
    ``Stanford_Online_Products/<path>``.

    Labels are the ``class_id`` column (1-based, not remapped). Arguments as in
    :class:`BaseDataset`.

    Example:
        >>> ds = StanfordOnlineProducts("data/sop", split="train")  # doctest: +SKIP
        >>> len(ds)  # doctest: +SKIP
        59551
    """

    required_files = (
        "Stanford_Online_Products/Ebay_train.txt",
        "Stanford_Online_Products/Ebay_test.txt",
    )
    source = "https://cvgl.stanford.edu/projects/lifted_struct/ (Stanford_Online_Products.zip)"
    layout = "<root>/Stanford_Online_Products/<path column of Ebay_train.txt / Ebay_test.txt>"

    def generate_split(self) -> None:
        base = os.path.join(self.root, "Stanford_Online_Products")
        parts = ("train", "test") if self.split == "train+test" else (self.split,)
        for part in parts:
            index_file = os.path.join(base, f"Ebay_{part}.txt")
            with open(index_file, encoding="utf-8") as f:
                rows = [(n, line.strip()) for n, line in enumerate(f, start=1) if n > 1]
            for n, line in rows:
                if not line:
                    continue
                _, class_text, _, rel = split_fields(line, index_file, n, _SOP_FIELDS)
                self.labels.append(parse_int(class_text, index_file, n, "class_id"))
                self.paths.append(os.path.join(base, rel))


class INaturalist2018(BaseDataset):
    """iNaturalist 2018 with the Smooth-AP retrieval split: 461,939 images of 8,142 species.

    Van Horn et al., "The iNaturalist Species Classification and Detection Dataset", CVPR 2018;
    split of Brown et al., "Smooth-AP", ECCV 2020: ``"train"`` = the paths listed in
    ``Inaturalist_train_set1.txt`` (325,846 images), ``"test"`` = ``Inaturalist_test_set1.txt``
    (136,093), ``"train+test"`` = the train list, then the test list.

    Files under ``root``: ``train2018.json`` and ``val2018.json`` (COCO-like:
    ``images[{file_name, id}]``, ``annotations[{image_id, category_id}]``) and
    ``Inat_dataset_splits/Inaturalist_<train|test>_set1.txt`` (one relative image path per
    line); images at ``<root>/<path>``.

    Labels are the ``category_id`` of each listed image (not remapped). Arguments as in
    :class:`BaseDataset`.

    Raises:
        ValueError: a listed path has no annotation in the two JSON files.

    Example:
        >>> ds = INaturalist2018("data/inat2018", split="test")  # doctest: +SKIP
        >>> len(ds)  # doctest: +SKIP
        136093
    """

    required_files = (
        "train2018.json",
        "val2018.json",
        "Inat_dataset_splits/Inaturalist_train_set1.txt",
        "Inat_dataset_splits/Inaturalist_test_set1.txt",
    )
    source = (
        "https://github.com/visipedia/inat_comp/tree/master/2018 (train_val2018.tar.gz, "
        "train2018.json, val2018.json) and the Smooth-AP split files (Inat_dataset_splits) "
        "from https://github.com/Andrew-Brown1/Smooth_AP"
    )
    layout = "<root>/<path listed in Inat_dataset_splits/Inaturalist_<train|test>_set1.txt>"

    def generate_split(self) -> None:
        categories: dict[str, Any] = {}
        for name in ("train2018.json", "val2018.json"):
            categories.update(_categories_by_file(os.path.join(self.root, name)))
        parts = ("train", "test") if self.split == "train+test" else (self.split,)
        for part in parts:
            list_file = os.path.join(
                self.root, "Inat_dataset_splits", f"Inaturalist_{part}_set1.txt"
            )
            for n, rel in read_index_lines(list_file):
                if rel not in categories:
                    raise ValueError(
                        f"{list_file}, line {n}: {rel!r} is not annotated in train2018.json "
                        "or val2018.json"
                    )
                self.paths.append(os.path.join(self.root, rel))
                self.labels.append(categories[rel])


def _categories_by_file(path: str) -> dict[str, Any]:
    """``{file_name: category_id}`` of a COCO-like iNaturalist annotation file."""
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    try:
        files = {image["id"]: image["file_name"] for image in data["images"]}
        return {files[ann["image_id"]]: ann["category_id"] for ann in data["annotations"]}
    except (KeyError, TypeError) as err:
        raise ValueError(
            f"{path}: expected COCO-like JSON with images[{{file_name, id}}] and "
            f"annotations[{{image_id, category_id}}]; missing {err}"
        ) from None
