"""Each text's set of shingles, and the exact Jaccard of pairs of sets: the check of every dedup candidate.

A set is its text's distinct 64-bit shingle hashes, sorted (`ShingleSets`). Sets built in different calls
compare directly, so a stage builds each candidate row's set once however many pairs name the row.

Two sorted sets intersect in one merge walk, which numba compiles: ~0.15 µs a pair where numpy, sorting
both sets of every pair side by side, took ~1.5 µs (benchmarks/dedup_bench.py --verify-only). The walk
stops as soon as the rest of the shorter set can no longer reach the threshold; a pair whose sizes alone
rule it out is never walked. A call with fewer than COMPILED_FROM pairs counts in numpy instead: importing
numba and compiling the walk costs ~0.5 s a process, which every dedup on the sample would pay for a few
hundred pairs. Both give the same floats (tests/test_shingle_sets.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from scripts.lib import minhash as mh

COMPILED_FROM = 100_000  # pairs in one call from which the compiled walk pays for its compile
BLOCK_ROWS = 65_536  # texts shingled at a time (bounds the temporaries of a large build)


@dataclass(frozen=True)
class ShingleSets(mh._Ragged):
    """Shingle sets of n texts: text i owns hashes[offsets[i]:offsets[i+1]], sorted and distinct."""

    hashes: np.ndarray  # uint64
    offsets: np.ndarray  # int64, length n + 1


def shingle_sets(texts: pa.Array, unit: str, ngram: int, block: int = BLOCK_ROWS) -> ShingleSets:
    """The shingle set of each text (docs/contracts.md §4), `block` texts (and mh.TEXT_BLOCK_BYTES) at a time."""
    texts = mh.as_string_array(texts)
    parts = [
        sets_of(mh.shingle_hashes(texts.slice(lo, hi - lo), unit, ngram)) for lo, hi in mh.text_slices(texts, block)
    ]
    if not parts:
        return ShingleSets(hashes=np.zeros(0, dtype=np.uint64), offsets=np.zeros(1, dtype=np.int64))
    return ShingleSets(
        hashes=np.concatenate([p.hashes for p in parts]),
        offsets=mh.offsets_from_counts(np.concatenate([p.counts for p in parts])),
    )


def sets_of(shingles: mh.Shingles) -> ShingleSets:
    """Each text's shingle hashes sorted and made distinct: one plain sort of (text << 32 | rank of the
    hash), ranks numbered in hash order so that they sort as the hashes do."""
    rank, values = mh.dense_rank(shingles.hashes)
    if len(values) > 1 << 32:
        raise ValueError("sets_of: more than 2^32 distinct shingles in one block")
    owner = np.repeat(np.arange(len(shingles.counts), dtype=np.uint64), shingles.counts)
    packed = mh.sorted_unique((owner << np.uint64(32)) | rank.astype(np.uint64))
    owners = (packed >> np.uint64(32)).astype(np.int64)
    return ShingleSets(
        hashes=values[(packed & np.uint64(0xFFFFFFFF)).astype(np.int64)],
        offsets=mh.offsets_from_counts(np.bincount(owners, minlength=len(shingles.counts))),
    )


def jaccard_at_least(
    left: ShingleSets, right: ShingleSets, pairs: np.ndarray, threshold: float, compiled: bool | None = None
) -> np.ndarray:
    """float64[m]: the exact Jaccard of left[pairs[:, 0]] and right[pairs[:, 1]] where it reaches
    `threshold`, 0.0 where it does not (threshold 0: every pair's exact Jaccard; two empty sets: 0.0).
    `compiled`: the numba walk or numpy's count (None: the walk from COMPILED_FROM pairs)."""
    pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    sizes_a, sizes_b = left.counts[pairs[:, 0]], right.counts[pairs[:, 1]]
    total = sizes_a + sizes_b
    need = least_shared(total, threshold)
    out = np.zeros(len(pairs), dtype=np.float64)
    # size filter: |A & B| <= min(|A|, |B|)
    walk = np.flatnonzero((need <= np.minimum(sizes_a, sizes_b)) & (total > 0))
    if compiled is None:
        compiled = len(walk) >= COMPILED_FROM
    if compiled:
        compile_walk()(left.hashes, left.offsets, right.hashes, right.offsets, pairs[walk], need[walk], out, walk)
        return out
    shared = intersections(left, right, pairs[walk])
    jaccard = shared / (total[walk] - shared)
    out[walk] = np.where(shared >= need[walk], jaccard, 0.0)
    return out


def pair_jaccard(left: ShingleSets, right: ShingleSets, pairs: np.ndarray) -> np.ndarray:
    """float64 exact Jaccard of every pair (two empty sets: 0.0, never duplicates)."""
    return jaccard_at_least(left, right, pairs, 0.0)


def least_shared(total: np.ndarray, threshold: float) -> np.ndarray:
    """int64: per pair of sets whose sizes sum to `total`, the fewest shared shingles x at which
    x / (total - x) >= threshold, in the very float arithmetic of the final check (a pair exactly at
    the threshold is kept: 0.55 * 100 is 55.00000000000001 in floats)."""
    total = np.asarray(total, dtype=np.int64)
    need = np.clip(np.ceil(threshold * total / (1 + threshold)), 0, total).astype(np.int64)
    for _ in range(4):  # the estimate is off by one at most; each pass moves it one step
        lower = np.maximum(need - 1, 0)
        down = (need > 0) & _reaches(lower, total, threshold)
        up = ~_reaches(need, total, threshold) & (need < total)
        if not (down.any() or up.any()):
            break
        need = need - down + up
    return need


def _reaches(shared: np.ndarray, total: np.ndarray, threshold: float) -> np.ndarray:
    union = total - shared
    with np.errstate(divide="ignore", invalid="ignore"):
        return (union > 0) & (shared / np.maximum(union, 1) >= threshold)


def intersections(left: ShingleSets, right: ShingleSets, pairs: np.ndarray, chunk: int = 1 << 22) -> np.ndarray:
    """int64 |left[a] & right[b]| of each pair (a, b), in numpy: the two sets of every pair side by side
    with the pair number as a prefix, sorted, equal neighbours counted; about `chunk` shingles at a time."""
    out = np.zeros(len(pairs), dtype=np.int64)
    ends = np.cumsum(left.counts[pairs[:, 0]] + right.counts[pairs[:, 1]]) if len(pairs) else out
    start = 0
    while start < len(pairs):
        done = ends[start - 1] if start else 0
        stop = max(start + 1, int(np.searchsorted(ends, done + chunk, side="right")))
        out[start:stop] = _counted(left, right, pairs[start:stop])
        start = stop
    return out


def _gather(sets: ShingleSets, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Concatenated hashes of `rows` and, for each, its position in `rows`."""
    counts = sets.counts[rows]
    owner = np.repeat(np.arange(len(rows), dtype=np.int64), counts)
    local = np.arange(owner.size) - mh.offsets_from_counts(counts)[owner]
    return sets.hashes[sets.offsets[rows][owner] + local], owner


def _counted(left: ShingleSets, right: ShingleSets, pairs: np.ndarray) -> np.ndarray:
    left_hashes, left_owner = _gather(left, pairs[:, 0])
    right_hashes, right_owner = _gather(right, pairs[:, 1])
    rank, _ = mh.dense_rank(np.concatenate([left_hashes, right_hashes]))
    packed = np.concatenate([left_owner, right_owner]).astype(np.uint64) << np.uint64(32)
    packed |= rank.astype(np.uint64)
    packed.sort()
    same = packed[1:] == packed[:-1]  # a hash twice within one pair = a shared shingle
    return np.bincount((packed[1:][same] >> np.uint64(32)).astype(np.int64), minlength=len(pairs))


_COMPILED: list = []


def compile_walk():
    """The compiled walk (numba imported and the walk compiled on first use, once a process: a caller
    about to fork workers calls it first, so that they inherit it)."""
    if not _COMPILED:
        from scripts.lib.import_env import variables_parsed

        with variables_parsed("numba"):  # a NUMBA_* value it cannot parse: one line, not its warning
            import numba

        kinds = "void(uint64[:], int64[:], uint64[:], int64[:], int64[:, :], int64[:], float64[:], int64[:])"
        _COMPILED.append(numba.njit(kinds, nogil=True, cache=False)(_walk))  # compiled here, never cached to disk
    return _COMPILED[0]


def _walk(left_hashes, left_offsets, right_hashes, right_offsets, pairs, need, out, at):  # pragma: no cover
    """out[at[k]] = Jaccard of pair k where at least need[k] shingles are shared, else 0.0: a merge walk
    of both sorted sets, given up once the shorter rest cannot bring the count to need[k]."""
    for k in range(len(pairs)):
        i, i_end = left_offsets[pairs[k, 0]], left_offsets[pairs[k, 0] + 1]
        j, j_end = right_offsets[pairs[k, 1]], right_offsets[pairs[k, 1] + 1]
        total = (i_end - i) + (j_end - j)
        shared = 0
        while i < i_end and j < j_end:
            if shared + min(i_end - i, j_end - j) < need[k]:
                break
            x, y = left_hashes[i], right_hashes[j]
            if x == y:
                shared += 1
                i += 1
                j += 1
            elif x < y:
                i += 1
            else:
                j += 1
        if shared >= need[k]:
            out[at[k]] = shared / (total - shared)
