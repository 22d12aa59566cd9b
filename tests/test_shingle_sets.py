"""Shingle sets and the exact Jaccard of pairs of them: the compiled merge walk and numpy's count give
the same floats, exact wherever a pair reaches the threshold and 0.0 wherever it does not."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from scripts.lib import minhash as mh
from scripts.lib.shingle_sets import (
    COMPILED_FROM,
    ShingleSets,
    jaccard_at_least,
    least_shared,
    pair_jaccard,
    shingle_sets,
)

BOTH = pytest.mark.parametrize("compiled", [False, True], ids=["numpy", "compiled"])


def sets_from(lists: list[list[int]]) -> ShingleSets:
    clean = [sorted(set(s)) for s in lists]
    return ShingleSets(
        hashes=np.array([h for s in clean for h in s], dtype=np.uint64),
        offsets=mh.offsets_from_counts(np.array([len(s) for s in clean], dtype=np.int64)),
    )


def python_jaccard(a: list[int], b: list[int]) -> float:
    union = len(set(a) | set(b))
    return len(set(a) & set(b)) / union if union else 0.0


def random_sets(rng, n: int, vocabulary: int) -> list[list[int]]:
    """Sets drawn Zipf-like from a small vocabulary (hashes spread over 64 bits), half of them edits of an
    earlier set."""
    weights = 1.0 / np.arange(1, vocabulary + 1)
    weights /= weights.sum()
    spread = rng.integers(0, 2**63, vocabulary, dtype=np.uint64) * np.uint64(2) + np.uint64(1)
    out: list[list[int]] = []
    for i in range(n):
        if i and rng.random() < 0.5:
            base = set(out[rng.integers(0, i)])
            strength = rng.choice([0.0, 0.05, 0.2])  # a copy, a light edit or a heavier one
            drop = {x for x in base if rng.random() < strength}
            added = spread[rng.choice(vocabulary, rng.integers(0, 4) if strength else 0, p=weights)]
            out.append(sorted((base - drop) | {int(x) for x in added}))
        else:
            out.append(sorted({int(x) for x in spread[rng.choice(vocabulary, rng.integers(0, 30), p=weights)]}))
    return out


def expected(lists_a, lists_b, pairs, threshold) -> np.ndarray:
    exact = np.array([python_jaccard(lists_a[a], lists_b[b]) for a, b in pairs])
    return np.where(exact >= threshold, exact, 0.0)


@BOTH
@pytest.mark.parametrize("threshold", [0.0, 0.3, 0.5, 0.7, 0.85, 1.0])
def test_self_pairs_are_exact_where_they_reach_the_threshold_and_zero_elsewhere(threshold, compiled):
    rng = np.random.default_rng(int(threshold * 100))
    lists = random_sets(rng, 300, 300)
    sets = sets_from(lists)
    pairs = np.array([(a, b) for a in range(300) for b in range(a + 1, 300) if rng.random() < 0.2])
    got = jaccard_at_least(sets, sets, pairs, threshold, compiled=compiled)
    want = expected(lists, lists, pairs, threshold)
    assert 10 < (want > 0).sum() < len(pairs) or threshold == 0.0  # pairs on both sides of the threshold
    np.testing.assert_array_equal(got, want)


@BOTH
def test_cross_pairs_of_sets_built_apart_compare_directly(compiled):
    rng = np.random.default_rng(7)
    drawn = random_sets(rng, 600, 200)
    left_lists, right_lists = drawn[:300], drawn[300:]
    pairs = np.stack([rng.integers(0, 300, 20_000), rng.integers(0, 300, 20_000)], axis=1)
    pairs = np.concatenate([pairs, np.array([(i, i) for i in range(300)])])
    got = jaccard_at_least(sets_from(left_lists), sets_from(right_lists), pairs, 0.5, compiled=compiled)
    np.testing.assert_array_equal(got, expected(left_lists, right_lists, pairs, 0.5))
    assert (got > 0).sum() > 0


@BOTH
def test_pairs_exactly_at_the_threshold_are_kept(compiled):
    """55 of 100 as a subset (J = 0.55) and 7 of 10 shared (J = 7/13): in floats 0.55 * 100 is
    55.00000000000001, which must neither reject the pair by size nor stop its walk."""
    assert np.float64(0.55) * np.int64(100) > 55
    subset = sets_from([list(range(100)), list(range(55))])
    assert jaccard_at_least(subset, subset, np.array([[0, 1]]), 0.55, compiled=compiled)[0] == 0.55
    overlap = sets_from([list(range(10)), [*range(7), 100, 101, 102]])
    assert jaccard_at_least(overlap, overlap, np.array([[0, 1]]), 7 / 13, compiled=compiled)[0] == 7 / 13
    assert jaccard_at_least(overlap, overlap, np.array([[0, 1]]), 7 / 13 + 1e-6, compiled=compiled)[0] == 0.0


@BOTH
def test_empty_sets_are_never_duplicates(compiled):
    sets = sets_from([[], [], [1, 2]])
    assert list(jaccard_at_least(sets, sets, np.array([[0, 1], [0, 2]]), 0.5, compiled=compiled)) == [0.0, 0.0]
    assert list(jaccard_at_least(sets, sets, np.array([[0, 1], [0, 2]]), 0.0, compiled=compiled)) == [0.0, 0.0]


@BOTH
def test_a_pair_whose_shared_shingles_come_last_is_still_counted(compiled):
    """The walk stops only when the rest cannot reach the threshold: a pair sharing its largest hashes,
    after a run of unshared small ones, reaches it."""
    shared = list(range(1000, 1010))
    sets = sets_from([[1, 2, *shared], [3, *shared]])
    assert jaccard_at_least(sets, sets, np.array([[0, 1]]), 0.7, compiled=compiled)[0] == 10 / 13


@pytest.mark.parametrize("threshold", [0.1, 0.3, 0.55, 0.7, 7 / 13, 0.8, 0.95, 1.0])
def test_least_shared_is_the_fewest_shared_shingles_that_reach_the_threshold(threshold):
    totals = np.arange(1, 400)
    need = least_shared(totals, threshold)
    for total, x in zip(totals.tolist(), need.tolist(), strict=True):
        reaches = [s for s in range(0, total // 2 + 1) if s / (total - s) >= threshold]
        assert x == (reaches[0] if reaches else x) and (reaches or x > total // 2)


def test_the_compiled_walk_and_numpy_agree_on_a_large_call():
    """From COMPILED_FROM pairs past the size filter a call walks compiled by itself: the same floats as
    numpy's count."""
    rng = np.random.default_rng(3)
    sets = sets_from(random_sets(rng, 2000, 400))
    pairs = rng.integers(0, 2000, (400_000, 2))
    sizes_a, sizes_b = sets.counts[pairs[:, 0]], sets.counts[pairs[:, 1]]
    walked = (least_shared(sizes_a + sizes_b, 0.6) <= np.minimum(sizes_a, sizes_b)) & (sizes_a + sizes_b > 0)
    assert walked.sum() >= COMPILED_FROM
    by_default = jaccard_at_least(sets, sets, pairs, 0.6)
    np.testing.assert_array_equal(by_default, jaccard_at_least(sets, sets, pairs, 0.6, compiled=False))
    assert (by_default > 0).sum() > 100


TEXTS = pa.array(
    [
        "A red car, parked.",
        "red car",
        "Red CAR!",
        "",
        "?!",
        "a red car parked in the rain a red car",
        "über straße café",
    ]
    * 5
)


@pytest.mark.parametrize("block", [1, 3, 7, 65_536])
@pytest.mark.parametrize("unit, ngram", [("word", 3), ("char", 5)])
def test_shingle_sets_are_each_texts_distinct_shingles_sorted_in_any_block_size(block, unit, ngram):
    shingles = mh.shingle_hashes(TEXTS, unit, ngram)
    sets = shingle_sets(TEXTS, unit, ngram, block=block)
    assert len(sets.counts) == len(TEXTS)
    for i in range(len(TEXTS)):
        own = sets.hashes[sets.offsets[i] : sets.offsets[i + 1]]
        want = np.unique(shingles.hashes[shingles.offsets[i] : shingles.offsets[i + 1]])
        np.testing.assert_array_equal(own, want)


def test_pair_jaccard_of_texts_is_their_shingle_sets_jaccard():
    sets = shingle_sets(TEXTS, "word", 3)
    pairs = np.array([(0, 1), (0, 5), (1, 2), (3, 4), (0, 7)])
    shingles = mh.shingle_hashes(TEXTS, "word", 3)
    as_lists = [shingles.hashes[shingles.offsets[i] : shingles.offsets[i + 1]].tolist() for i in range(len(TEXTS))]
    np.testing.assert_array_equal(pair_jaccard(sets, sets, pairs), expected(as_lists, as_lists, pairs, 0.0))
    assert pair_jaccard(sets, sets, np.array([(0, 7)]))[0] == 1.0  # the same text, a row apart
