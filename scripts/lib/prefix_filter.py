"""Exact Jaccard of the candidate pairs that can reach a threshold, without counting the others.

LSH proposes many pairs that share a common phrase and little else (on prompts recombined from real
phrases, ~99% of candidates verify below 0.7). Two exact filters reject most of them before the full
intersection count, so the verified pairs and their similarity are the same as checking every pair
(the prefix filter only where a sample says most pairs fall below the threshold, see `mostly_below`):
- size: J(A, B) <= min(|A|, |B|) / max(|A|, |B|);
- prefix (Bayardo et al., "Scaling up all pairs similarity search", WWW 2007): with every set's
  shingles in one global order, rarest first, J(A, B) >= t implies |A & B| >= ceil(t |A|), so A's first
  |A| - ceil(t |A|) + 1 shingles and B's first |B| - ceil(t |B|) + 1 share at least one. Pairs joined by
  common phrases share only frequent shingles, which the rarest-first order puts last.
"""

from __future__ import annotations

import numpy as np

from scripts.lib.minhash import RankedSets, offsets_from_counts, pair_intersections, pair_jaccard

# Float slack in the bounds: each filter may keep a pair it could reject, never the reverse.
_SLACK = 1e-9


def jaccard_at_least(left: RankedSets, right: RankedSets, pairs: np.ndarray, threshold: float) -> np.ndarray:
    """float64[m]: the exact Jaccard of each pair (left[a], right[b]) that reaches `threshold`; a pair the
    filters prove below it gets 0.0 (its true value is below `threshold`). Sets as from `ranked_pair`."""
    if threshold <= 0:
        return pair_jaccard(left, right, pairs)
    sizes_a, sizes_b = left.counts[pairs[:, 0]], right.counts[pairs[:, 1]]
    fits = np.minimum(sizes_a, sizes_b) >= (threshold - _SLACK) * np.maximum(sizes_a, sizes_b)
    survivors = np.flatnonzero(fits & (np.maximum(sizes_a, sizes_b) > 0))
    if mostly_below(left, right, pairs[survivors], threshold):
        left_rare, right_rare = rarest_first(left, right)
        shared = pair_intersections(prefixes(left_rare, threshold), prefixes(right_rare, threshold), pairs[survivors])
        survivors = survivors[shared > 0]
    out = np.zeros(len(pairs), dtype=np.float64)
    out[survivors] = pair_jaccard(left, right, pairs[survivors])
    return out


# The prefix filter relabels and sorts every shingle of the sets, which costs about as much as counting
# every pair in full: it pays where most pairs fall below the threshold (pairs joined by common
# phrases), not where most are near-duplicates (planted copies), and either way the result is the same.
SAMPLE_PAIRS = 1024
PREFIX_WORTH = 0.8


def mostly_below(left: RankedSets, right: RankedSets, pairs: np.ndarray, threshold: float) -> bool:
    """Whether at least PREFIX_WORTH of an evenly spaced sample of the pairs, counted in full, fall below
    `threshold`."""
    if len(pairs) == 0:
        return False
    sample = pairs[np.unique(np.linspace(0, len(pairs) - 1, min(len(pairs), SAMPLE_PAIRS)).astype(np.int64))]
    return float((pair_jaccard(left, right, sample) < threshold).mean()) >= PREFIX_WORTH


def rarest_first(left: RankedSets, right: RankedSets) -> tuple[RankedSets, RankedSets]:
    """Both groups' sets relabelled so that rank order is (how many sets hold the shingle, old rank) and
    sorted within each set: one global order, rarest shingle first."""
    vocabulary = int(max(left.ranks.max(initial=-1), right.ranks.max(initial=-1))) + 1
    frequency = np.bincount(left.ranks, minlength=vocabulary)
    if right is not left:
        frequency += np.bincount(right.ranks, minlength=vocabulary)
    relabel = np.empty(vocabulary, dtype=np.int64)
    relabel[_by_frequency(frequency)] = np.arange(vocabulary)
    relabelled = _resorted(left, relabel)
    return relabelled, relabelled if right is left else _resorted(right, relabel)


def _by_frequency(frequency: np.ndarray) -> np.ndarray:
    """The ranks ordered by (frequency, rank): np.lexsort's answer by a plain sort of (frequency << 32 | rank)."""
    packed = frequency.astype(np.uint64) << np.uint64(32)
    packed |= np.arange(len(frequency), dtype=np.uint64)
    packed.sort()
    return (packed & np.uint64(0xFFFFFFFF)).astype(np.int64)


def _resorted(sets: RankedSets, relabel: np.ndarray) -> RankedSets:
    owner = np.repeat(np.arange(len(sets.counts), dtype=np.uint64), sets.counts)
    packed = np.sort((owner << np.uint64(32)) | relabel[sets.ranks].astype(np.uint64))
    return RankedSets(ranks=(packed & np.uint64(0xFFFFFFFF)).astype(np.int64), offsets=sets.offsets)


def prefixes(sets: RankedSets, threshold: float) -> RankedSets:
    """Each set's first |x| - ceil(t |x|) + 1 ranks (the whole set when that is longer)."""
    sizes = sets.counts
    keep = np.clip(sizes - np.ceil(threshold * sizes - _SLACK).astype(np.int64) + 1, 0, sizes)
    owner = np.repeat(np.arange(len(sizes)), keep)
    offsets = offsets_from_counts(keep)
    at = sets.offsets[owner] + np.arange(owner.size) - offsets[owner]
    return RankedSets(ranks=sets.ranks[at], offsets=offsets)
