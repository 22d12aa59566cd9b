"""MinHash side of dedup: texts -> LSH band keys (in batches, optionally in worker processes),
candidate pairs from the bands, and the exact Jaccard that verifies each candidate.

The batch function `sketch_batch` is what both engines run: the local one over batches of texts
(scripts/lib/dedup/texts.py), the Ray one inside `map_batches`, so their band keys are the same bits.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from scripts.lib import minhash as mh
from scripts.lib.dedup.texts import ArrayTexts, Texts, as_texts, compact
from scripts.lib.params import Dedup, Runtime
from scripts.lib.shingle_sets import COMPILED_FROM, ShingleSets, compile_walk, jaccard_at_least, shingle_sets
from scripts.lib.workers import forked_map


def banding(params: Dedup) -> tuple[int, int]:
    """(bands, rows): the params' own, or chosen from threshold and target_recall."""
    if params.bands is not None and params.rows is not None:
        return params.bands, params.rows
    return mh.choose_bands(params.threshold, params.num_perm, params.target_recall)


def banding_stats(params: Dedup) -> dict:
    """The report's banding keys: the layout and the recall of a pair at exactly the threshold."""
    bands, rows = banding(params)
    return {
        "bands": bands,
        "rows": rows,
        "pair_recall_at_threshold": round(mh.band_recall(float(params.threshold), bands, rows), 6),
    }


@dataclass
class Sketch:
    band_keys: np.ndarray  # uint32[bands, n] (band-major: each band's sort reads one row)
    sequence_keys: np.ndarray  # uint64[n, 2]: equal <=> identical shingle sequence
    shingle_counts: np.ndarray  # int64[n]; 0 = no tokens (never a duplicate)


def sketch_batch(texts: pa.Array, params: Dedup) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(band keys uint32[bands, n], sequence keys uint64[n, 2], shingle counts int64[n]) of one batch."""
    bands, rows = banding(params)
    shingles = mh.shingle_hashes(texts, params.unit, params.ngram)
    signatures = mh.signatures(shingles, mh.permutations(params.num_perm, params.seed))
    return mh.band_keys(signatures, bands, rows).T, mh.sequence_keys(shingles), shingles.counts


def workers(runtime: Runtime) -> int:
    return runtime.workers if runtime.workers > 0 else (os.cpu_count() or 1)


def sketch(texts, params: Dedup, runtime: Runtime) -> Sketch:
    """Band keys of every text (an Arrow array or a Texts), `runtime.batch_rows` at a time, in
    `runtime.workers` processes."""
    texts = as_texts(texts)
    bands, _ = banding(params)
    n, size = len(texts), runtime.batch_rows
    # Arrow's allocator keeps what the caller freed (a parquet read's buffers: ~1 GB at 10M rows) until
    # Arrow allocates again, which this process may not do while forks sign: hand it back first
    pa.default_memory_pool().release_unused()
    out = Sketch(
        band_keys=np.empty((bands, n), dtype=np.uint32),
        sequence_keys=np.empty((n, 2), dtype=np.uint64),
        shingle_counts=np.empty(n, dtype=np.int64),
    )
    pool_size = min(workers(runtime), -(-n // size))
    if pool_size <= 1:
        _fill(out, (sketch_batch(batch, params) for batch in bounded_batches(texts, size)))
        return out
    if isinstance(texts, ArrayTexts):  # the forks inherit the array: only batch bounds travel
        bounds = mh.text_slices(texts.array, size)
        _fill(out, forked_map(_sketch_slice, bounds, pool_size, (texts.array, params)))
        return out
    # batches travel to the workers pickled, one a worker at a time: the texts are never all in memory at once
    batches = (compact(batch) for batch in bounded_batches(texts, size))
    _fill(out, forked_map(_sketch_item, batches, pool_size, (params,)))
    return out


def bounded_batches(texts: Texts, size: int) -> Iterator[pa.Array]:
    """The texts in order, in batches of at most `size` texts and mh.TEXT_BLOCK_BYTES bytes (a longer text
    alone): a batch's memory is its bytes', so 20,000 prompts of 64 KB no longer make one batch of 20 GB."""
    for batch in texts.batches(size):
        for lo, hi in mh.text_slices(batch, size):
            yield batch.slice(lo, hi - lo)


def _sketch_item(params: Dedup, texts: pa.Array) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return sketch_batch(texts, params)


def _sketch_slice(texts: pa.Array, params: Dedup, bounds: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    start, stop = bounds
    return sketch_batch(texts.slice(start, stop - start), params)


def spread(function, tasks: list, shared: tuple, processes: int) -> list:
    """[function(*shared, task) for task in tasks], in `processes` forks that inherit `shared` when more than one."""
    processes = min(processes, len(tasks))
    if processes <= 1:
        return [function(*shared, task) for task in tasks]
    return list(forked_map(function, tasks, processes, shared))


def _fill(out: Sketch, results) -> None:
    start = 0
    for band_keys, sequence_keys, counts in results:
        stop = start + len(counts)
        out.band_keys[:, start:stop] = band_keys
        out.sequence_keys[start:stop] = sequence_keys
        out.shingle_counts[start:stop] = counts
        start = stop


def self_candidates(
    band_keys: np.ndarray, reps: np.ndarray, rank: np.ndarray, window: int, processes: int = 1
) -> tuple[np.ndarray, np.ndarray]:
    """Distinct candidate pairs among `reps` (rows), from every band's buckets walked in keep order,
    groups of bands in `processes` forked workers. Returns (packed, order): order = reps in keep order,
    packed = sorted distinct uint64 (i << 32 | j) of positions in it. Packed, a pair costs 8 bytes, not
    the 16 of a row pair: at 1M realistic prompts there are ~145M of them."""
    order = reps[np.argsort(rank[reps], kind="stable")]
    bands = len(band_keys)
    if bands == 0:
        return np.zeros(0, dtype=np.uint64), order
    groups = np.array_split(np.arange(bands), min(bands, 4 * processes) if processes > 1 else 1)
    found = spread(_band_group_pairs, [(g[0], g[-1] + 1) for g in groups], (band_keys, order, window), processes)
    if len(found) == 1:
        return found[0], order
    joined = np.concatenate(found)
    del found
    return mh.sorted_unique(joined, in_place=True), order


def candidate_rows(packed: np.ndarray, order: np.ndarray) -> np.ndarray:
    """int64[m, 2] row pairs of packed candidates (the whole array: for small inputs and tests)."""
    return order[mh.unpack_pairs(packed)]


def _band_group_pairs(band_keys: np.ndarray, reps: np.ndarray, window: int, bands: tuple[int, int]) -> np.ndarray:
    """Distinct packed pairs of positions (in keep order) sharing a bucket in one of bands [lo, hi)."""
    # a pair comes from every band it shares (a near-duplicate: about 13 of 32): packed, it costs 8 bytes
    found = [mh.pack_pairs(mh.bucket_pairs(band_keys[b][reps], window)) for b in range(*bands)]
    joined = np.concatenate(found)
    del found  # the bands' arrays, then the joined one sorted in place: two copies at most, not three
    return mh.sorted_unique(joined, in_place=True)


def shingles_of(texts: pa.Array, rows: np.ndarray, params: Dedup) -> ShingleSets:
    """The shingle sets of texts[rows] (only candidate rows are shingled again for verification)."""
    return shingle_sets(texts.take(pa.array(rows)), params.unit, params.ngram)


def self_verified(
    texts: Texts, packed: np.ndarray, order: np.ndarray, params: Dedup, chunk: int, processes: int = 1
) -> tuple[np.ndarray, np.ndarray]:
    """The candidates (self_candidates' packed, order) at >= params.threshold: (row pairs int64[k, 2],
    exact Jaccard float64[k]), in candidate order. Each row in a pair is shingled once, its set shared by
    every pair naming it; chunks of `chunk` pairs are unpacked, checked and dropped in `processes` forked
    workers, so memory holds the sets, the packed candidates and the verified pairs, never a row pair or
    a similarity per candidate."""
    rows = _rows_in(packed, order, chunk)
    sets = shingle_sets(texts.take(rows), params.unit, params.ngram)
    if processes > 1:
        chunk = max(1, min(chunk // processes, -(-len(packed) // processes)))
    starts = list(range(0, len(packed), chunk))
    if len(packed) >= COMPILED_FROM:
        compile_walk()  # before the fork: every worker inherits the compiled walk
    found = spread(_verified_chunk, starts, (sets, rows, packed, order, params, chunk), processes)
    if not found:
        return np.zeros((0, 2), dtype=np.int64), np.zeros(0, dtype=np.float64)
    return np.concatenate([pairs for pairs, _ in found]), np.concatenate([jaccard for _, jaccard in found])


def _rows_in(packed: np.ndarray, order: np.ndarray, chunk: int) -> np.ndarray:
    """Sorted distinct rows of the packed pairs, marked in a table a chunk at a time."""
    seen = np.zeros(len(order), dtype=bool)
    for lo in range(0, len(packed), chunk):
        seen[mh.unpack_pairs(packed[lo : lo + chunk]).ravel()] = True
    return np.sort(order[seen])


def _verified_chunk(
    sets: ShingleSets, rows: np.ndarray, packed: np.ndarray, order: np.ndarray, params: Dedup, chunk: int, start: int
) -> tuple[np.ndarray, np.ndarray]:
    """The pairs of packed[start:start + chunk] at >= threshold (row pairs) and their exact Jaccard."""
    pairs = candidate_rows(packed[start : start + chunk], order)
    jaccard = jaccard_at_least(sets, sets, mh.positions_in(rows, pairs), params.threshold)
    ok = jaccard >= params.threshold
    return pairs[ok], jaccard[ok]


def exact_jaccard(left: pa.Array, right: pa.Array, pairs: np.ndarray, params: Dedup, chunk: int) -> np.ndarray:
    """float64 exact shingle-Jaccard of left[pairs[:, 0]] vs right[pairs[:, 1]] where it reaches
    params.threshold (0.0 below it: `jaccard_at_least`), `chunk` pairs at a time (only the rows a chunk
    names are shingled, so memory stays bounded however many candidates come)."""
    out = np.zeros(len(pairs), dtype=np.float64)
    for lo in range(0, len(pairs), chunk):
        part = pairs[lo : lo + chunk]
        if left is right:  # self mode: shingle each row once
            rows = mh.distinct_values(part.ravel(), len(left))
            sets = shingles_of(left, rows, params)
            out[lo : lo + len(part)] = jaccard_at_least(sets, sets, mh.positions_in(rows, part), params.threshold)
            continue
        left_rows, right_rows = mh.sorted_unique(part[:, 0]), mh.sorted_unique(part[:, 1])
        local = np.stack([np.searchsorted(left_rows, part[:, 0]), np.searchsorted(right_rows, part[:, 1])], axis=1)
        out[lo : lo + len(part)] = jaccard_at_least(
            shingles_of(left, left_rows, params), shingles_of(right, right_rows, params), local, params.threshold
        )
    return out


def identical_groups(sequence_keys: np.ndarray, rank: np.ndarray, rows: np.ndarray):
    """Split `rows` (ascending) into representatives (best rank of each identical-text group) and members.

    Returns (reps, members, member_rep). One argsort on the first key finds the few rows that
    share it; only those are sorted on both keys and rank.
    """
    empty = np.zeros(0, dtype=np.int64)
    if len(rows) == 0:
        return empty, empty, empty
    grouped = _sharing_first_key(sequence_keys, rows)
    if len(grouped) == 0:
        return rows, empty, empty
    order = grouped[np.lexsort((rank[grouped], sequence_keys[grouped, 1], sequence_keys[grouped, 0]))]
    keys = sequence_keys[order]
    first = np.ones(len(order), dtype=bool)
    first[1:] = (keys[1:] != keys[:-1]).any(axis=1)
    group_rep = order[first][np.cumsum(first) - 1]
    members = order[~first]
    is_member = np.zeros(int(rows[-1]) + 1, dtype=bool)  # a table, not np.isin's sort of every row
    is_member[members] = True
    return rows[~is_member[rows]], members, group_rep[~first]


def _sharing_first_key(sequence_keys: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """The rows whose first sequence key another row has too (the temporaries freed as soon as spent:
    each is 80 MB at 10M rows)."""
    by_key = rows[np.argsort(sequence_keys[rows, 0])]
    first_key = sequence_keys[by_key, 0]
    same = first_key[1:] == first_key[:-1]
    del first_key
    shared = np.zeros(len(by_key), dtype=bool)
    shared[1:] |= same
    shared[:-1] |= same
    return by_key[shared]
