"""The size and prefix filters before exact verification: the same verified pairs and similarities as
counting every candidate's whole intersection, and most common-phrase candidates never counted."""

from __future__ import annotations

import numpy as np
import pytest

from scripts.lib import minhash as mh
from scripts.lib.prefix_filter import jaccard_at_least, mostly_below, prefixes, rarest_first


def ranked(sets: list[list[int]]) -> mh.RankedSets:
    """RankedSets of given rank lists (sorted, distinct)."""
    clean = [sorted(set(s)) for s in sets]
    return mh.RankedSets(
        ranks=np.array([r for s in clean for r in s], dtype=np.int64),
        offsets=mh.offsets_from_counts(np.array([len(s) for s in clean], dtype=np.int64)),
    )


def random_sets(rng, n: int, vocabulary: int) -> list[list[int]]:
    """Sets drawn Zipf-like from a small vocabulary, half of them edits of an earlier set."""
    weights = 1.0 / np.arange(1, vocabulary + 1)
    weights /= weights.sum()
    out: list[list[int]] = []
    for i in range(n):
        if i and rng.random() < 0.5:
            base = set(out[rng.integers(0, i)])
            strength = rng.choice([0.0, 0.05, 0.2])  # a copy, a light edit or a heavier one
            drop = {x for x in base if rng.random() < strength}
            added = rng.choice(vocabulary, rng.integers(0, 4) if strength else 0, p=weights)
            out.append(sorted((base - drop) | set(added.tolist())))
        else:
            out.append(sorted(set(rng.choice(vocabulary, rng.integers(0, 30), p=weights).tolist())))
    return out


def assert_verifies_like(filtered: np.ndarray, full: np.ndarray, threshold: float) -> None:
    """Exact where the full count reaches the threshold, below it wherever the full count is."""
    reached = full >= threshold
    np.testing.assert_array_equal(filtered[reached], full[reached])
    assert (filtered[~reached] < threshold).all()


@pytest.mark.parametrize("threshold", [0.3, 0.5, 0.7, 0.85, 0.9, 1.0])
def test_self_pairs_verify_exactly_as_a_full_count(threshold):
    rng = np.random.default_rng(int(threshold * 100))
    sets = ranked(random_sets(rng, 400, 300))
    pairs = np.array([(a, b) for a in range(400) for b in range(a + 1, 400) if rng.random() < 0.2])
    full = mh.pair_jaccard(sets, sets, pairs)
    filtered = jaccard_at_least(sets, sets, pairs, threshold)
    assert 10 < (full >= threshold).sum() < len(pairs) / 2  # pairs on both sides of the threshold
    assert_verifies_like(filtered, full, threshold)


def test_cross_pairs_verify_exactly_as_a_full_count():
    rng = np.random.default_rng(7)
    drawn = random_sets(rng, 600, 200)
    left_rows, right_rows = drawn[:300], drawn[300:]
    left, right = ranked(left_rows), ranked(right_rows)
    pairs = np.stack([rng.integers(0, 300, 20_000), rng.integers(0, 300, 20_000)], axis=1)
    pairs = np.concatenate([pairs, np.array([(i, i) for i in range(300)])])
    full = mh.pair_jaccard(left, right, pairs)
    assert (full >= 0.5).sum() > 0
    assert_verifies_like(jaccard_at_least(left, right, pairs, 0.5), full, 0.5)


def test_pairs_exactly_at_the_threshold_are_kept():
    """55 of 100 as a subset (J = 0.55) and 7 of 10 shared (J = 7/13): in floats 0.55 * 100 is
    55.00000000000001, which must neither reject the pair by size nor shorten a prefix."""
    assert np.float64(0.55) * np.int64(100) > 55
    subset = ranked([list(range(100)), list(range(55))])
    assert jaccard_at_least(subset, subset, np.array([[0, 1]]), 0.55)[0] == 0.55
    overlap = ranked([list(range(10)), [*range(7), 100, 101, 102]])
    assert jaccard_at_least(overlap, overlap, np.array([[0, 1]]), 7 / 13)[0] == pytest.approx(7 / 13)
    assert jaccard_at_least(overlap, overlap, np.array([[0, 1]]), 7 / 13 + 1e-6)[0] < 7 / 13 + 1e-6


def test_empty_sets_are_never_duplicates():
    sets = ranked([[], [], [1, 2]])
    assert list(jaccard_at_least(sets, sets, np.array([[0, 1], [0, 2]]), 0.5)) == [0.0, 0.0]


def test_a_pair_sharing_only_common_shingles_is_rejected_by_its_prefix():
    """Rows 0 and 1 share the four shingles every row holds (a common phrase) and nothing rare: the
    rarest-first prefixes of length |x| - ceil(0.7 |x|) + 1 = 3 hold only their own rare shingles."""
    common = [0, 1, 2, 3]
    sets = ranked([[*common, 10, 11, 12, 13], [*common, 20, 21, 22, 23]] + [[*common, 30 + i] for i in range(20)])
    rare, _ = rarest_first(sets, sets)
    first_two = prefixes(rare, 0.7)
    assert list(first_two.counts[:2]) == [3, 3]
    assert mh.pair_intersections(first_two, first_two, np.array([[0, 1]]))[0] == 0
    assert mh.pair_jaccard(sets, sets, np.array([[0, 1]]))[0] == pytest.approx(4 / 12)
    assert jaccard_at_least(sets, sets, np.array([[0, 1]]), 0.7)[0] == 0.0


def test_the_prefix_filter_runs_only_where_a_sample_says_most_pairs_fall_below_the_threshold():
    """Near-copies (most pairs verify) skip the prefix filter, whose relabelling costs about a full count;
    pairs sharing little use it. The verified pairs and similarities are the full count's either way."""
    rng = np.random.default_rng(11)
    originals = [sorted(set(rng.choice(5000, 20, replace=False).tolist())) for _ in range(1500)]
    copies = [s[:-1] + [6000 + i] for i, s in enumerate(originals)]  # J = 19 / 21
    sets = ranked(originals + copies)
    near = np.array([(i, 1500 + i) for i in range(1500)])
    far = np.array([(i, (i + 1) % 1500) for i in range(1500)])
    assert not mostly_below(sets, sets, near, 0.7) and mostly_below(sets, sets, far, 0.7)
    for pairs in (near, far, np.concatenate([near[:100], far])):
        full = mh.pair_jaccard(sets, sets, pairs)
        assert_verifies_like(jaccard_at_least(sets, sets, pairs, 0.7), full, 0.7)
