"""``pml search``: nearest neighbours through InferenceModel, saved indexes, result files."""

from __future__ import annotations

import csv
import json
import zipfile

import numpy as np
import pytest
import torch

from pml.cli._cmd_search import COLUMNS
from pml.cli._data import load_data
from pml.cli._settings import load_settings
from pml.eval._faiss import faiss_available

KNNS = ["torch"] + (["faiss"] if faiss_available() else [])


def _one_line_error(code: int, out: str, err: str) -> str:
    assert code == 2, (code, out, err)
    assert err.startswith("pml: error: ") and err.count("\n") == 1, err
    return err


def _brute_force(helpers, run, queries: np.ndarray, reference: np.ndarray, k: int):
    """Indices and squared L2 distances of the k nearest normalised reference embeddings."""
    q = torch.nn.functional.normalize(torch.from_numpy(helpers.embed_directly(run, queries)))
    r = torch.nn.functional.normalize(torch.from_numpy(helpers.embed_directly(run, reference)))
    d = torch.cdist(q.double(), r.double()) ** 2
    dist, idx = torch.sort(d, dim=1, stable=True)
    return idx[:, :k].numpy(), dist[:, :k].numpy()


@pytest.fixture
def query_file(helpers, tmp_path):
    features, labels = helpers.clustered_features(seed=5)
    path = tmp_path / "queries.npz"
    np.savez(path, features=features[:9], labels=labels[:9])
    return path, features[:9], labels[:9]


def _test_split(run):
    test = load_data(load_settings(run / "config.toml")).test
    return test.data.numpy(), np.asarray(test.labels)


def _read_csv(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.mark.parametrize("knn", KNNS)
def test_search_finds_the_nearest_reference_items(
    fake_run, helpers, pml, query_file, tmp_path, knn
):
    path, features, labels = query_file
    out = tmp_path / "results.csv"
    code, stdout, err = pml(
        "search", fake_run, "--query", path, "--k", "4", "--out", out, "--knn", knn,
        "--device", "cpu",
    )  # fmt: skip
    assert code == 0, err
    ref_features, ref_labels = _test_split(fake_run)
    idx, dist = _brute_force(helpers, fake_run, features, ref_features, 4)
    rows = _read_csv(out)
    assert list(rows[0]) == list(COLUMNS)
    assert len(rows) == 9 * 4
    got = np.array([int(r["reference"]) for r in rows]).reshape(9, 4)
    np.testing.assert_array_equal(got, idx)
    got_dist = np.array([float(r["distance"]) for r in rows]).reshape(9, 4)
    np.testing.assert_allclose(got_dist, dist, atol=1e-5)
    assert [int(r["rank"]) for r in rows[:4]] == [1, 2, 3, 4]
    assert [r["query_label"] for r in rows[::4]] == [str(v) for v in labels]
    assert [r["reference_label"] for r in rows] == [str(ref_labels[j]) for j in idx.ravel()]
    assert "reference_label" in stdout and f"wrote {9 * 4} rows" in stdout
    # well separated clusters: every nearest neighbour has the query's class
    assert all(r["query_label"] == r["reference_label"] for r in rows[::4])


def test_search_jsonl_output_and_table_limit(fake_run, pml, query_file, tmp_path):
    path, _, _ = query_file
    out = tmp_path / "results.jsonl"
    code, stdout, err = pml("search", fake_run, "-q", path, "--k", "2", "-o", out, "--show", "3")
    assert code == 0, err
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 18 and list(rows[0]) == list(COLUMNS)
    assert isinstance(rows[0]["distance"], float) and rows[0]["rank"] == 1
    table = [line for line in stdout.splitlines() if line[:1].isdigit()]
    assert len(table) == 3 * 2
    assert "... 6 more queries" in stdout
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_search_k_beyond_the_reference_is_clamped(fake_run, pml, query_file, tmp_path):
    path, _, _ = query_file
    n_ref = len(_test_split(fake_run)[1])
    out = tmp_path / "r.csv"
    code, _, err = pml("search", fake_run, "-q", path, "--k", "1000", "-o", out, "--show", "0")
    assert code == 0, err
    assert len(_read_csv(out)) == 9 * n_ref


@pytest.mark.parametrize("save_with", KNNS)
@pytest.mark.parametrize("load_with", KNNS)
def test_saved_index_loads_without_pickle_and_gives_the_same_results(
    fake_run, pml, query_file, tmp_path, save_with, load_with
):
    path, _, _ = query_file
    index = tmp_path / "ref.index"
    first, second = tmp_path / "first.csv", tmp_path / "second.csv"
    code, stdout, err = pml(
        "search", fake_run, "-q", path, "--save-index", index, "-o", first, "--knn", save_with
    )
    assert code == 0, err
    assert f"saved the index to {index}" in stdout
    head = index.read_bytes()[:4]
    if save_with == "faiss":
        assert head == b"IxF2"  # faiss's own binary format
    else:
        assert zipfile.is_zipfile(index)
        torch.load(index, weights_only=True)  # plain tensors: loads without unpickling code
    code, stdout, err = pml(
        "search", fake_run, "-q", path, "--index", index, "--reference", _data_of(fake_run),
        "-o", second, "--knn", load_with,
    )  # fmt: skip
    assert code == 0, err
    assert f"reference: index {index}" in stdout
    a, b = _read_csv(first), _read_csv(second)
    assert [r["reference"] for r in a] == [r["reference"] for r in b]
    np.testing.assert_allclose(
        [float(r["distance"]) for r in a], [float(r["distance"]) for r in b], atol=1e-5
    )


def _data_of(run):
    """The reference the default search used: the run's held-out split, as a features file."""
    features, labels = _test_split(run)
    path = run.parent / "held_out.npz"
    if not path.exists():
        np.savez(path, features=features, labels=labels)
    return path


def test_index_without_reference_shows_rows_only(fake_run, pml, query_file, tmp_path):
    path, _, _ = query_file
    index = tmp_path / "ref.index"
    assert pml("search", fake_run, "-q", path, "--save-index", index, "--show", "0")[0] == 0
    out = tmp_path / "r.csv"
    code, _, err = pml("search", fake_run, "-q", path, "--index", index, "-o", out)
    assert code == 0, err
    rows = _read_csv(out)
    assert {r["reference_label"] for r in rows} == {""} and rows[0]["query_label"] != ""


def test_search_unlabelled_npy_queries(fake_run, helpers, pml, tmp_path):
    features, _ = helpers.clustered_features(seed=7)
    queries = tmp_path / "q.npy"
    np.save(queries, features[:3])
    out = tmp_path / "r.jsonl"
    code, stdout, err = pml("search", fake_run, "-q", queries, "--k", "2", "-o", out)
    assert code == 0, err
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["query"] for r in rows] == [0, 0, 1, 1, 2, 2]
    assert {r["query_label"] for r in rows} == {""}
    one = tmp_path / "one.npy"
    np.save(one, features[0])  # a single item of the model's input shape
    code, _, err = pml("search", fake_run, "-q", one, "--k", "1", "-o", out)
    assert code == 0, err
    assert len(out.read_text().splitlines()) == 1


@pytest.fixture(scope="module")
def image_run(tmp_path_factory, helpers):
    from PIL import Image

    root = tmp_path_factory.mktemp("image_run")
    rng = np.random.default_rng(0)
    for cls, base in (("red", (220, 30, 30)), ("blue", (30, 30, 220))):
        (root / "photos" / cls).mkdir(parents=True)
        for i in range(4):
            pixels = np.clip(np.array(base) + rng.integers(-20, 20, (12, 10, 3)), 0, 255)
            Image.fromarray(pixels.astype(np.uint8)).save(root / "photos" / cls / f"{i}.png")
    return helpers.make_run(root, root / "photos", image_size=6)


def test_search_with_image_files_as_queries(image_run, pml, tmp_path):
    photos = image_run.parent / "photos"
    query = photos / "blue" / "2.png"
    out = tmp_path / "r.csv"
    code, stdout, err = pml(
        "search", image_run, "-q", query, photos / "red" / "0.png", "--reference", photos,
        "--k", "3", "-o", out,
    )  # fmt: skip
    assert code == 0, err
    rows = _read_csv(out)
    assert [r["query"] for r in rows[::3]] == [str(query), str(photos / "red" / "0.png")]
    # the image decodes exactly as inside the folder: it finds itself at distance 0
    assert float(rows[0]["distance"]) == pytest.approx(0.0, abs=1e-6)
    assert rows[0]["reference_label"] == "blue" and rows[3]["reference_label"] == "red"
    assert rows[0]["query_label"] == ""


# ---------------------------------------------------------------------------- bad input
def test_search_missing_run_is_a_one_line_error(pml, query_file, tmp_path):
    _one_line_error(*pml("search", tmp_path / "nope", "-q", query_file[0]))


def test_search_queries_of_the_wrong_width_are_a_one_line_error(fake_run, helpers, pml, tmp_path):
    features, labels = helpers.clustered_features(dim=3)
    narrow = tmp_path / "narrow.npz"
    np.savez(narrow, features=features, labels=labels)
    err = _one_line_error(*pml("search", fake_run, "-q", narrow))
    assert "(3,)" in err and f"({helpers.DIM},)" in err
    np.save(tmp_path / "narrow.npy", features)
    _one_line_error(*pml("search", fake_run, "-q", tmp_path / "narrow.npy"))


def test_search_missing_or_foreign_index_is_a_one_line_error(fake_run, pml, query_file, tmp_path):
    path = query_file[0]
    err = _one_line_error(*pml("search", fake_run, "-q", path, "--index", tmp_path / "none"))
    assert "does not exist" in err
    junk = tmp_path / "junk.index"
    junk.write_bytes(b"\x00\x01junk")
    err = _one_line_error(*pml("search", fake_run, "-q", path, "--index", junk, "--knn", "torch"))
    assert "cannot load --index" in err
    tiny = tmp_path / "tiny.index"  # torch's unpickler raises struct.error on it
    tiny.write_bytes(b"junk")
    for knn in KNNS:
        err = _one_line_error(*pml("search", fake_run, "-q", path, "--index", tiny, "--knn", knn))
        assert "cannot load --index" in err


class _Payload:
    def __init__(self, flag):
        self.flag = flag

    def __reduce__(self):
        return (exec, (f"open({str(self.flag)!r}, 'w').write('ran')",))


@pytest.mark.parametrize("knn", KNNS)
def test_search_index_carrying_pickled_code_is_refused(fake_run, pml, query_file, tmp_path, knn):
    flag = tmp_path / "code-ran"
    evil = tmp_path / "evil.index"
    torch.save({"format": "pml.eval.TorchKNN", "version": 1, "index": _Payload(flag)}, evil)
    err = _one_line_error(
        *pml("search", fake_run, "-q", query_file[0], "--index", evil, "--knn", knn)
    )
    assert "cannot load --index" in err
    assert not flag.exists()


def test_search_index_of_another_model_is_a_one_line_error(helpers, pml, query_file, tmp_path):
    features, labels = helpers.clustered_features()
    data = tmp_path / "features.npz"
    np.savez(data, features=features, labels=labels)
    small = helpers.make_run(tmp_path, data, name="small", embedding_size=4)
    big = helpers.make_run(tmp_path, data, name="big", embedding_size=8)
    index = tmp_path / "small.index"
    assert pml("search", small, "-q", query_file[0], "--save-index", index)[0] == 0
    err = _one_line_error(*pml("search", big, "-q", query_file[0], "--index", index))
    assert "size 4" in err and "size 8" in err


def test_search_index_and_reference_of_different_sizes(fake_run, pml, query_file, tmp_path):
    index = tmp_path / "ref.index"
    assert pml("search", fake_run, "-q", query_file[0], "--save-index", index)[0] == 0
    err = _one_line_error(
        *pml("search", fake_run, "-q", query_file[0], "--index", index, "-r", query_file[0])
    )
    assert "holds" in err and "--reference" in err


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--k", "0", "--k"),
        ("--out", "results.txt", ".csv or .jsonl"),
        ("--show", "-1", "--show"),
        ("--device", "tpu", "--device"),
    ],
)
def test_search_bad_options_are_one_line_errors(fake_run, pml, query_file, option, value, message):
    err = _one_line_error(*pml("search", fake_run, "-q", query_file[0], option, value))
    assert message in err


def test_search_several_non_image_queries_is_a_one_line_error(fake_run, pml, query_file):
    err = _one_line_error(*pml("search", fake_run, "-q", query_file[0], query_file[0]))
    assert "--query" in err


def test_search_unreadable_query_image_is_a_one_line_error(image_run, pml, tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a png")
    err = _one_line_error(*pml("search", image_run, "-q", bad))
    assert "cannot read image" in err
    _one_line_error(*pml("search", image_run, "-q", tmp_path / "missing.png"))
