"""pml.core.indices against naive Python loops written from the spec."""

from __future__ import annotations

import itertools

import pytest
import torch

from pml.core import indices as I
from pml.core._random_triplets import _random_triplets_loop


def naive_pairs(labels: list, ref: list | None = None):
    same = ref is None
    ref = labels if ref is None else ref
    pos = [
        (i, j)
        for i in range(len(labels))
        for j in range(len(ref))
        if labels[i] == ref[j] and not (same and i == j)
    ]
    neg = [(i, j) for i in range(len(labels)) for j in range(len(ref)) if labels[i] != ref[j]]
    return pos, neg


def naive_triplets(labels: list, ref: list | None = None):
    pos, neg = naive_pairs(labels, ref)
    return [(a, p, n) for a, p in pos for a2, n in neg if a2 == a]


def as_tuples(t):
    return list(zip(*[x.tolist() for x in t]))


@pytest.mark.parametrize("seed", range(3))
def test_all_pairs_match_naive(seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 4, (13,), generator=g)
    a1, p, a2, n = I.get_all_pairs_indices(labels)
    pos, neg = naive_pairs(labels.tolist())
    assert list(zip(a1.tolist(), p.tolist())) == pos
    assert list(zip(a2.tolist(), n.tolist())) == neg
    assert a1.dtype == torch.long


def test_all_pairs_spec_example_and_identity_rule() -> None:
    labels = torch.tensor([0, 0, 1])
    got = [t.tolist() for t in I.get_all_pairs_indices(labels)]
    assert got == [[0, 1], [1, 0], [0, 1, 2, 2], [2, 2, 0, 1]]
    same_obj = [t.tolist() for t in I.get_all_pairs_indices(labels, labels)]
    assert same_obj == got
    copy = [t.tolist() for t in I.get_all_pairs_indices(labels, labels.clone())]
    assert copy[:2] == [[0, 0, 1, 1, 2], [0, 1, 0, 1, 2]]


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("with_ref", [False, True])
def test_all_triplets_match_naive(seed: int, with_ref: bool) -> None:
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 4, (11,), generator=g)
    ref = torch.randint(0, 4, (9,), generator=g) if with_ref else None
    got = as_tuples(I.get_all_triplets_indices(labels, ref))
    assert got == naive_triplets(labels.tolist(), None if ref is None else ref.tolist())


@pytest.mark.parametrize("max_triplets", [1, 7, 100, 10**6])
def test_iter_all_triplets_chunks_concatenate_to_the_full_list(max_triplets: int) -> None:
    labels = torch.randint(0, 3, (12,), generator=torch.Generator().manual_seed(1))
    full = I.get_all_triplets_indices(labels)
    chunks = list(I.iter_all_triplets_indices(labels, max_triplets=max_triplets))
    for k in range(3):
        assert torch.equal(torch.cat([c[k] for c in chunks]), full[k])
    for a, _, _ in chunks:  # bounded, unless a single anchor alone exceeds the bound
        assert len(a) <= max_triplets or len(torch.unique(a)) == 1


def test_iter_all_triplets_rejects_bad_chunk_size() -> None:
    with pytest.raises(ValueError, match="max_triplets"):
        list(I.iter_all_triplets_indices(torch.tensor([0, 0, 1]), max_triplets=0))


def test_triplets_empty_cases() -> None:
    for labels in (
        torch.tensor([0, 1, 2]),
        torch.tensor([5, 5, 5]),
        torch.tensor([3]),
        torch.tensor([], dtype=torch.long),
    ):
        a, p, n = I.get_all_triplets_indices(labels)
        assert len(a) == len(p) == len(n) == 0 and a.dtype == torch.long


def test_pairs_to_triplets_spec_example() -> None:
    a1, p = torch.tensor([0, 2, 0]), torch.tensor([1, 3, 1])
    a2, n = torch.tensor([0, 0, 2, 5]), torch.tensor([2, 3, 4, 0])
    got = [t.tolist() for t in I.pairs_to_triplets((a1, p, a2, n))]
    assert got == [[0, 0, 2, 0, 0], [1, 1, 3, 1, 1], [2, 3, 4, 2, 3]]


@pytest.mark.parametrize("seed", range(4))
def test_pairs_to_triplets_matches_naive(seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    a1, p = torch.randint(0, 6, (15,), generator=g), torch.randint(0, 9, (15,), generator=g)
    a2, n = torch.randint(0, 6, (11,), generator=g), torch.randint(0, 9, (11,), generator=g)
    want = [
        (a1[i].item(), p[i].item(), n[j].item())
        for i in range(15)
        for j in range(11)
        if a1[i] == a2[j]
    ]
    assert as_tuples(I.pairs_to_triplets((a1, p, a2, n))) == want


def test_convert_to_pairs_and_triplets() -> None:
    labels = torch.tensor([0, 0, 1, 1])
    a, p, n = torch.tensor([0, 1]), torch.tensor([1, 0]), torch.tensor([2, 3])
    pairs = I.convert_to_pairs((a, p, n), labels)
    assert [t.tolist() for t in pairs] == [[0, 1], [1, 0], [0, 1], [2, 3]]
    four = (a, p, a, n)
    assert I.convert_to_pairs(four, labels) is four
    three = (a, p, n)
    assert I.convert_to_triplets(three, labels) is three
    assert as_tuples(I.convert_to_triplets(None, labels, t_per_anchor="all")) == naive_triplets(
        labels.tolist()
    )
    with pytest.raises(TypeError, match="indices_tuple"):
        I.convert_to_pairs((a, p), labels)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="labels"):
        I.convert_to_pairs(None, None)


def test_convert_to_weights_spec_example() -> None:
    t = (torch.tensor([0, 1, 2, 3]), torch.tensor([4, 4, 4, 4]), torch.tensor([5, 5, 6, 6]))
    w = I.convert_to_weights(t, torch.zeros(7), torch.float64)
    assert w.tolist() == [0.25, 0.25, 0.25, 0.25, 1, 0.5, 0.5]
    assert I.convert_to_weights(t, torch.zeros(7), torch.float64, using_ref=True).tolist() == [
        1,
        1,
        1,
        1,
        0,
        0,
        0,
    ]
    empty = tuple(torch.tensor([], dtype=torch.long) for _ in range(3))
    assert I.convert_to_weights(empty, torch.zeros(3), torch.float32).tolist() == [1, 1, 1]
    assert I.convert_to_weights(None, torch.zeros(2), torch.float16).dtype == torch.float16


def test_pos_pairs_with_unique_labels() -> None:
    labels = torch.tensor([2, 1, 2, 1, 0, 0])
    a, p = I.convert_to_pos_pairs_with_unique_labels(None, labels)
    # all positive pairs in row-major order; first per anchor label, ordered by label
    assert list(zip(a.tolist(), p.tolist())) == [(4, 5), (1, 3), (0, 2)]


def test_random_triplets_rng_exact_against_spec_pseudocode() -> None:
    labels = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2, 3])

    def spec(labels, t_per_anchor):  # the spec's pseudo-code, verbatim
        out = [], [], []
        for label in torch.unique(labels):
            P = torch.where(labels == label)[0]
            Nn = torch.where(labels != label)[0]
            if len(P) < 2 or len(Nn) == 0:
                continue
            k = len(P) if t_per_anchor is None else t_per_anchor
            T = len(P) * k
            cands = torch.stack([torch.cat([P[:r], P[r + 1 :]]) for r in range(len(P))])
            r_p = torch.randint(0, cands.shape[1], (T,))
            rows = torch.arange(len(P)).repeat_interleave(k)
            out[0].append(P[rows])
            out[1].append(cands[rows, r_p])
            out[2].append(Nn[torch.randint(0, len(Nn), (T,))])
        return [torch.cat(x).tolist() for x in out]

    for tpa in (None, 3):
        torch.manual_seed(5)
        want = spec(labels, tpa)
        torch.manual_seed(5)
        got = [t.tolist() for t in I.get_random_triplet_indices(labels, t_per_anchor=tpa)]
        assert got == want


def test_random_triplets_validity_with_ref_and_weights() -> None:
    labels = torch.tensor([0, 0, 1, 1, 2])
    ref = torch.tensor([0, 1, 1, 2, 2, 0])
    a, p, n = I.get_random_triplet_indices(labels, ref, t_per_anchor=4)
    assert len(a) == 5 * 4
    assert (labels[a] == ref[p]).all() and (labels[a] != ref[n]).all()
    weights = torch.zeros(5, 6)
    weights[:, 3] = 1.0  # only ref index 3 (label 2) may be drawn as a negative
    a, p, n = I.get_random_triplet_indices(labels, ref, t_per_anchor=2, weights=weights)
    assert set(n.tolist()) == {3} and (labels[a] != 2).all()
    empty = I.get_random_triplet_indices(torch.tensor([0, 1, 2]))
    assert all(len(t) == 0 for t in empty)


def test_remove_self_comparisons_spec_examples() -> None:
    a, p = torch.tensor([0, 1, 0]), torch.tensor([5, 6, 6])
    out = I.remove_self_comparisons((a, p, a, p), torch.tensor([5, 6]), 10)
    assert list(zip(out[0].tolist(), out[1].tolist())) == [(0, 6)]
    assert out[2].tolist() == [0, 1, 0]  # negatives untouched
    a, p, n = torch.tensor([0, 1, 2, 2]), torch.tensor([9, 0, 1, 9]), torch.tensor([3, 3, 3, 4])
    out = I.remove_self_comparisons((a, p, n), torch.tensor([9, 0, 1]), 10)
    assert as_tuples(out) == [(2, 9, 4)]


def test_remove_self_comparisons_single_item_batch() -> None:
    # fix: the reference keeps (0, 5) here because its wrap-around test fires when s == e.
    a, p = torch.tensor([0, 0]), torch.tensor([5, 3])
    out = I.remove_self_comparisons((a, p, a, p), torch.tensor([5]), 10)
    assert list(zip(out[0].tolist(), out[1].tolist())) == [(0, 3)]


def test_tuple_helpers() -> None:
    a, p, n = torch.tensor([0, 1]), torch.tensor([2, 3]), torch.tensor([4, 5])
    assert [t.tolist() for t in I.shift_indices_tuple((a, p, n), 10)] == [
        [0, 1],
        [12, 13],
        [14, 15],
    ]
    assert [t.tolist() for t in I.shift_indices_tuple((a, p, a, n), 10)] == [
        [0, 1],
        [12, 13],
        [0, 1],
        [14, 15],
    ]
    assert I.get_anchors((a, p, a, n)).tolist() == [0, 1, 0, 1]
    cat = I.concatenate_indices_tuples((a, p, n), (n, a, p))
    assert [t.tolist() for t in cat] == [[0, 1, 4, 5], [2, 3, 0, 1], [4, 5, 2, 3]]
    with pytest.raises(ValueError, match="same length"):
        I.concatenate_indices_tuples((a, p, n), (a, p, a, n))
    x, y = I.matched_size_indices(torch.tensor([1, 2, 3, 4, 5]), torch.tensor([7, 8]))
    assert y.tolist() == [7, 8, 7, 8, 7] and len(x) == 5
    assert I.pos_pairs_from_tuple((a, p, a, n))[1] is p
    assert I.neg_pairs_from_tuple((a, p, a, n))[1] is n


def test_float_labels_and_devices(device: torch.device) -> None:
    labels = torch.tensor([0.5, 0.5, 1.5]).to(device)
    a1, p, a2, n = I.get_all_pairs_indices(labels)
    assert a1.device.type == device.type
    assert list(zip(a1.tolist(), p.tolist())) == [(0, 1), (1, 0)]


def test_matches_and_diffs_dtype() -> None:
    m, d = I.get_matches_and_diffs(torch.tensor([1, 1]))
    assert (
        m.dtype == torch.uint8 and m.tolist() == [[0, 1], [1, 0]] and d.tolist() == [[0, 0], [0, 0]]
    )


def test_no_cubic_memory_in_all_triplets() -> None:
    # N=600 with 2 classes would need a 600^3 = 216M-entry mask in the reference; ours is
    # proportional to the triplet count (N * 299 * 300 = 54M) only when materialised, and
    # iterating in chunks keeps each chunk small.
    labels = torch.arange(600) % 2
    sizes = [
        len(c[0])
        for c in itertools.islice(I.iter_all_triplets_indices(labels, max_triplets=10**5), 5)
    ]
    assert all(s <= 10**5 for s in sizes) and sizes[0] == 299 * 300 * (10**5 // (299 * 300))


@pytest.mark.parametrize("with_ref", [False, True])
@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("tpa", [None, 3])
def test_weighted_random_triplets_match_the_literal_loop(with_ref, seed, dtype, tpa):
    # the vectorised path does only the random draws in its loop; the literal loop is the spec
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 5, (23,), generator=g)
    labels[:3] = torch.tensor([7, 8, 8])  # a singleton label, a label without negatives rows
    ref_labels = torch.randint(0, 6, (17,), generator=g) if with_ref else None
    m = 17 if with_ref else 23
    weights = torch.rand(23, m, generator=g, dtype=dtype)
    weights[4] = 0  # an anchor without any weight
    weights[5, :] = float("nan")  # a NaN row
    same = labels.unsqueeze(1) == (labels if ref_labels is None else ref_labels).unsqueeze(0)
    weights[same] = 0
    for s in range(3):
        torch.manual_seed(s)
        got = I.get_random_triplet_indices(labels, ref_labels, tpa, weights=weights)
        after = torch.rand(1)
        torch.manual_seed(s)
        expected = _random_triplets_loop(labels, ref_labels, tpa, weights=weights)
        assert all(torch.equal(x, y) for x, y in zip(got, expected))
        assert torch.equal(after, torch.rand(1))


@pytest.mark.parametrize("which", ["labels", "ref_labels"])
def test_label_sets_given_to_pair_builders_are_rejected_naming_the_argument(which: str) -> None:
    # (N, C) label sets used to fail deep inside with "too many values to unpack"
    labels = torch.tensor([0, 1, 0])
    sets = torch.tensor([[1, 0], [0, 1], [1, 1]])
    args = (sets, None) if which == "labels" else (labels, sets)
    with pytest.raises(ValueError, match=rf"^{which} must be 1-D .*got shape \(3, 2\)"):
        I.get_all_pairs_indices(*args)
    with pytest.raises(ValueError, match=rf"^{which} must be 1-D"):
        I.get_all_triplets_indices(*args)
