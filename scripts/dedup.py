"""dedup@S: near-duplicate removal, by MinHash-LSH verified with exact Jaccard (`dedup.method: minhash`,
the default) or by sentence embeddings verified with exact cosine (`dedup.method: embedding`, the team's
own method: all-MiniLM-L6-v2, see scripts/lib/embedding.py).

Pipeline of `dedup_self` with minhash (every step is array work; see scripts/lib/minhash.py):
  1. shingle + sign the texts in batches (`dedup.workers` processes), keep only the LSH band keys
     (uint32[bands, n]: 1.3 GB at 10M rows) and a 128-bit key of each text's token sequence;
  2. group texts with identical token sequences (Jaccard 1; they would flood LSH buckets);
  3. LSH: per band, sort the keys and pair rows that share one -> candidate pairs;
  4. verify every candidate with the EXACT Jaccard of the two shingle sets (MinHash only proposes);
  5. greedy keep/assign in keep order (`dedup.keep` first | longest): a row is kept unless it has a
     verified partner that was already kept; a removed row points at its best kept partner. This
     guarantees both properties of the issue: no two kept rows are verified near-duplicates, and every
     removed row's `duplicate_of` is a KEPT row with Jaccard >= threshold. (Plain union-find clusters
     do not: a chain a~b~c keeps only a although c may share nothing with a.)
     `dedup.keep: none_of_pair` removes every row that has a verified partner (what the team's script
     did: both members of every pair go); `duplicate_of` is then its best partner, itself removed.
  6. union-find over the verified pairs gives the clusters reported as metrics.

With embedding, steps 1-4 are: identical texts grouped; the rest encoded (mean pooling, L2 norm);
exact top-`embedding_top_k` neighbours by float32 matrix products in `embedding_block` blocks; each
candidate re-scored with float64 cosine, kept when >= threshold. Steps 5-6 are the same. Results carry
the similarity in `jaccard` (and the stage's clusters column `jaccard`): cosine for this method; the
report says which (`measure`).

Public API (release.py and other stages call these; keep them stable). `params` is everywhere a Dedup,
a plain mapping (checked like params.yaml) or None (the documented defaults), so each release step can
pass its own method/threshold/keep: `resolve_params(base, threshold=0.85, keep="none_of_pair")`.
  load_section("dedup") / Dedup()                                   params.yaml / documented defaults
  resolve_params(params=None, **overrides) -> Dedup                   a step's params, checked
  dedup_self(texts, order_keys=None, params=None) -> SelfResult       keep, duplicate_of, jaccard, stats
  build_index(texts, params=None) -> Index | EmbeddingIndex; .save(dir); Index.load(dir) (either kind)
  index.query(new_texts) -> CrossResult                                cross-dedup, reference untouched
  dedup_against(new_texts, reference, params=None) -> CrossResult      reference: an index or texts
  near_duplicate_mask(new_texts, reference_texts, params) -> bool[n]   True = remove the new row (cross)
  keep_mask(texts, params=None, against=None, order_keys=None) -> bool[n]  True = keep; self or cross

The only probabilistic step of minhash is 3: a pair at exactly the threshold becomes a candidate with
probability `band_recall` >= dedup.target_recall (0.995 by default); pairs above it more often.
Embedding has none; its one bound is top-k: a row with more than `embedding_top_k` partners above
the threshold (after identical texts are grouped) may miss some (counted as `rows_at_top_k`).
"""
from __future__ import annotations

import itertools
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import typer

from scripts.lib import minhash as mh
from scripts.lib.errors import DataError
from scripts.lib.params import PARAMS_FILE, Dedup, load_section, parse
from scripts.lib.io import atomic_path, write_json

# `dedup` keys that change speed only (same bytes for any value): not DVC params of any stage.
# embedding_batch/_device change float32 embeddings in the last bits only; clusters round cosine to 1e-6.
SPEED_KEYS = ("workers", "batch_size", "verify_batch", "embedding_batch", "embedding_block", "embedding_device")

# --- params --------------------------------------------------------------------------------------

DedupParams = Dedup  # the `dedup:` section's model (scripts/lib/params.py); Dedup() = the documented defaults


def banding(params: Dedup) -> tuple[int, int]:
    """(bands, rows): the params' own, or chosen from threshold and target_recall."""
    if params.bands is not None and params.rows is not None:
        return params.bands, params.rows
    return mh.choose_bands(params.threshold, params.num_perm, params.target_recall)


def resolve_params(params=None, **overrides) -> Dedup:
    """A step's Dedup: `params` (Dedup, mapping, or None = defaults) with `overrides` applied and checked.

    A bad value is one DataError naming the key, e.g. resolve_params(base, keep="all") ->
    "Dedup.replace: keep: Input should be 'first', 'longest' or 'none_of_pair' (got 'all')".
    """
    params = _resolve(params)
    return params.replace(**overrides) if overrides else params


def _resolve(params) -> Dedup:
    if params is None:
        return Dedup()
    if isinstance(params, Dedup):
        return params
    return parse(Dedup, params, at=("dedup",))


# --- sketching: texts -> band keys, in batches ---------------------------------------------------


@dataclass
class Sketch:
    band_keys: np.ndarray  # uint32[bands, n] (band-major: each band's sort reads one row)
    sequence_keys: np.ndarray  # uint64[n, 2]: equal <=> identical shingle sequence
    shingle_counts: np.ndarray  # int64[n]; 0 = no tokens (never a duplicate)


def sketch(texts: pa.Array, params: Dedup) -> Sketch:
    """Band keys of every text, batch by batch; `dedup.workers` processes share the batches."""
    bands, _ = banding(params)
    n = len(texts)
    out = Sketch(
        band_keys=np.empty((bands, n), dtype=np.uint32),
        sequence_keys=np.empty((n, 2), dtype=np.uint64),
        shingle_counts=np.empty(n, dtype=np.int64),
    )
    starts = range(0, n, params.batch_size)
    workers = min(_workers(params.workers), len(starts))
    if workers <= 1:
        batches = (texts.slice(start, params.batch_size) for start in starts)
        _fill(out, starts, map(_sketch_batch, batches, itertools.repeat(params)))
        return out
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    # forked workers inherit the texts (no copy, no pickling); only batch starts travel to them
    global _FORKED_TEXTS
    _FORKED_TEXTS = texts
    try:
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork")) as pool:
            _fill(out, starts, pool.map(_sketch_forked_batch, starts, itertools.repeat(params), chunksize=1))
    finally:
        _FORKED_TEXTS = None
    return out


_FORKED_TEXTS: pa.Array | None = None


def _sketch_forked_batch(start: int, params: Dedup):
    return _sketch_batch(_FORKED_TEXTS.slice(start, params.batch_size), params)


def _workers(setting: int) -> int:
    return int(setting) if int(setting) > 0 else (os.cpu_count() or 1)


def _sketch_batch(texts: pa.Array, params: Dedup) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    bands, rows = banding(params)
    shingles = mh.shingle_hashes(texts, params.unit, params.ngram)
    signatures = mh.signatures(shingles, mh.permutations(params.num_perm, params.seed))
    return mh.band_keys(signatures, bands, rows).T, mh.sequence_keys(shingles), shingles.counts


def _fill(out: Sketch, starts: range, results) -> None:
    for start, (band_keys, sequence_keys, counts) in zip(starts, results):
        stop = start + len(counts)
        out.band_keys[:, start:stop] = band_keys
        out.sequence_keys[start:stop] = sequence_keys
        out.shingle_counts[start:stop] = counts


def shingles_of(texts: pa.Array, rows: np.ndarray, params: Dedup) -> mh.Shingles:
    """Shingle hashes of texts[rows] (only candidate rows are re-shingled for verification)."""
    return mh.shingle_hashes(texts.take(pa.array(rows)), params.unit, params.ngram)


# --- self mode -------------------------------------------------------------------------------------


@dataclass
class SelfResult:
    keep: np.ndarray  # bool[n]
    duplicate_of: np.ndarray  # int64[n]: index of the kept row a removed row duplicates, -1 if kept
    jaccard: np.ndarray  # float64[n]: similarity with duplicate_of (Jaccard; cosine for method embedding), NaN if kept
    stats: dict = field(default_factory=dict)

    @property
    def similarity(self) -> np.ndarray:
        return self.jaccard


def dedup_self(texts, order_keys=None, params=None) -> SelfResult:
    """Near-duplicate removal within one set of texts.

    texts: sequence/array of str. order_keys: stable ids (str), used by keep=longest to break ties
    (None: input position). Earlier rows (keep=first) or longer rows (keep=longest) are kept;
    keep=none_of_pair keeps no row that has a near-duplicate. params.method picks minhash or embedding.
    """
    params = _resolve(params)
    texts = mh.as_string_array(texts)
    if params.method == "embedding":
        return _dedup_self_embedding(texts, order_keys, params)
    n = len(texts)
    rank = _keep_rank(texts, order_keys, params.keep)
    sk = sketch(texts, params)
    nonempty = np.nonzero(sk.shingle_counts > 0)[0]
    reps, members, member_rep = _identical_groups(sk.sequence_keys, rank, nonempty)

    bands, rows = banding(params)
    reps = reps[np.argsort(rank[reps], kind="stable")]  # positions in keep order
    found = [mh.bucket_pairs(sk.band_keys[b][reps], params.bucket_window) for b in range(bands)]
    candidates = reps[mh.unique_pairs(np.concatenate(found))] if found else np.zeros((0, 2), dtype=np.int64)
    del found
    del sk
    pairs, jaccard = _verify_pairs(texts, candidates, params)

    keep, duplicate_of, dup_jaccard = _assign(n, pairs, jaccard, rank, members, member_rep, params.keep)
    stats = {
        **_self_stats(keep, pairs, members, member_rep, len(candidates), n - len(nonempty), params),
        "bands": bands,
        "rows": rows,
        "pair_recall_at_threshold": round(mh.band_recall(float(params.threshold), bands, rows), 6),
    }
    return SelfResult(keep=keep, duplicate_of=duplicate_of, jaccard=dup_jaccard, stats=stats)


def _self_stats(keep: np.ndarray, pairs: np.ndarray, members: np.ndarray, member_rep: np.ndarray,
                candidates: int, no_tokens: int, params: Dedup) -> dict:
    """The report's counts, the same for both methods (their own keys follow)."""
    n = len(keep)
    sizes = _component_sizes(n, np.concatenate([pairs, np.stack([members, member_rep], axis=1)]))
    return {
        "rows_in": int(n),
        "kept": int(keep.sum()),
        "removed": int(n - keep.sum()),
        "clusters": int((sizes >= 2).sum()),
        "largest_cluster": int(sizes.max()) if n else 0,
        "exact_duplicates": int(len(members)),
        "candidate_pairs": int(candidates),
        "verified_pairs": int(len(pairs)),
        "no_tokens": int(no_tokens),
        "threshold": float(params.threshold),
    }


def _assign(n: int, pairs: np.ndarray, similarity: np.ndarray, rank: np.ndarray, members: np.ndarray,
            member_rep: np.ndarray, keep_policy: str):
    """keep, duplicate_of, similarity-to-it from the verified pairs and the identical-text groups."""
    if keep_policy == "none_of_pair":
        # an identical copy is a partner at similarity 1: the whole group goes, like any pair
        edges = np.concatenate([pairs, np.stack([members, member_rep], axis=1)])
        return _remove_paired(n, edges, np.concatenate([similarity, np.ones(len(members))]), rank)
    keep, duplicate_of, dup_similarity = _greedy_assign(n, pairs, similarity, rank)
    # identical texts follow their representative (same shingle set / embedding: same similarity to its kept row)
    rep_kept = keep[member_rep]
    keep[members] = False
    duplicate_of[members] = np.where(rep_kept, member_rep, duplicate_of[member_rep])
    dup_similarity[members] = np.where(rep_kept, 1.0, dup_similarity[member_rep])
    return keep, duplicate_of, dup_similarity


def _remove_paired(n: int, pairs: np.ndarray, similarity: np.ndarray, rank: np.ndarray):
    """keep=none_of_pair: every row of a verified pair is removed; it points at its best partner
    (highest similarity, then earliest in keep order), which is removed too."""
    keep = np.ones(n, dtype=bool)
    duplicate_of = np.full(n, -1, dtype=np.int64)
    dup_similarity = np.full(n, np.nan)
    if len(pairs) == 0:
        return keep, duplicate_of, dup_similarity
    row = np.concatenate([pairs[:, 0], pairs[:, 1]])
    partner = np.concatenate([pairs[:, 1], pairs[:, 0]])
    sim = np.concatenate([similarity, similarity])
    order = np.lexsort((rank[partner], -sim, row))
    row, partner, sim = row[order], partner[order], sim[order]
    first = np.ones(len(row), dtype=bool)
    first[1:] = row[1:] != row[:-1]
    keep[row] = False
    duplicate_of[row[first]] = partner[first]
    dup_similarity[row[first]] = sim[first]
    return keep, duplicate_of, dup_similarity


def _keep_rank(texts: pa.Array, order_keys, keep: str) -> np.ndarray:
    """rank[i] = position of row i in keep order (0 = kept first; none_of_pair: input order, for ties)."""
    n = len(texts)
    position = pa.array(np.arange(n, dtype=np.int64))
    if keep in ("first", "none_of_pair"):
        return np.arange(n, dtype=np.int64)
    columns = {"neg_len": pc.negate(pc.utf8_length(texts).cast(pa.int64()))}
    if order_keys is not None:
        keys = mh.as_string_array(order_keys)
        if len(keys) != n:
            raise DataError(f"order_keys has {len(keys)} values for {n} texts")
        columns["key"] = keys
    columns["position"] = position
    table = pa.table(columns)
    order = pc.sort_indices(table, sort_keys=[(name, "ascending") for name in columns]).to_numpy()
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n)
    return rank


def _identical_groups(sequence_keys: np.ndarray, rank: np.ndarray, rows: np.ndarray):
    """Split `rows` into representatives (best rank of each identical-text group) and members.

    Returns (reps, members, member_rep). One argsort on the first key finds the few rows that
    share it; only those are sorted on both keys and rank.
    """
    empty = np.zeros(0, dtype=np.int64)
    if len(rows) == 0:
        return empty, empty, empty
    by_key = rows[np.argsort(sequence_keys[rows, 0])]
    first_key = sequence_keys[by_key, 0]
    shared = np.zeros(len(by_key), dtype=bool)
    same = first_key[1:] == first_key[:-1]
    shared[1:] |= same
    shared[:-1] |= same
    grouped = by_key[shared]
    if len(grouped) == 0:
        return np.sort(rows), empty, empty
    order = grouped[np.lexsort((rank[grouped], sequence_keys[grouped, 1], sequence_keys[grouped, 0]))]
    keys = sequence_keys[order]
    first = np.ones(len(order), dtype=bool)
    first[1:] = (keys[1:] != keys[:-1]).any(axis=1)
    group_rep = order[first][np.cumsum(first) - 1]
    reps = np.sort(np.concatenate([by_key[~shared], order[first]]))
    return reps, order[~first], group_rep[~first]


def _verify_pairs(texts: pa.Array, candidates: np.ndarray, params: Dedup):
    """Candidates whose exact shingle-Jaccard >= threshold, and those Jaccards."""
    jaccard = exact_jaccard(texts, texts, candidates, params)
    ok = jaccard >= params.threshold
    return candidates[ok], jaccard[ok]


def exact_jaccard(left: pa.Array, right: pa.Array, pairs: np.ndarray, params: Dedup) -> np.ndarray:
    """float64 exact shingle-Jaccard of left[pairs[:, 0]] vs right[pairs[:, 1]].

    Works through `dedup.verify_batch` pairs at a time, re-shingling only the rows they name, so
    memory stays bounded however many candidates LSH proposes.
    """
    out = np.zeros(len(pairs), dtype=np.float64)
    for lo in range(0, len(pairs), params.verify_batch):
        part = pairs[lo : lo + params.verify_batch]
        if left is right:  # self mode: shingle each row once
            rows = mh.sorted_unique(part.ravel())
            sets = mh.unique_sets(shingles_of(left, rows, params))
            out[lo : lo + len(part)] = mh.pair_jaccard(sets, sets, np.searchsorted(rows, part))
            continue
        left_rows, right_rows = mh.sorted_unique(part[:, 0]), mh.sorted_unique(part[:, 1])
        left_sets, right_sets = mh.ranked_pair(shingles_of(left, left_rows, params), shingles_of(right, right_rows, params))
        local = np.stack([np.searchsorted(left_rows, part[:, 0]), np.searchsorted(right_rows, part[:, 1])], axis=1)
        out[lo : lo + len(part)] = mh.pair_jaccard(left_sets, right_sets, local)
    return out


def _greedy_assign(n: int, pairs: np.ndarray, jaccard: np.ndarray, rank: np.ndarray):
    """Walk rows in keep order: keep a row unless a verified partner earlier in that order is kept."""
    keep = np.ones(n, dtype=bool)
    duplicate_of = np.full(n, -1, dtype=np.int64)
    dup_jaccard = np.full(n, np.nan)
    if len(pairs) == 0:
        return keep, duplicate_of, dup_jaccard
    a, b = pairs[:, 0], pairs[:, 1]
    swap = rank[a] > rank[b]
    earlier = np.where(swap, b, a)
    later = np.where(swap, a, b)
    # per later row: its earlier partners, best first (highest Jaccard, then earliest in keep order)
    order = np.lexsort((rank[earlier], -jaccard, rank[later]))
    nodes, local = np.unique(np.stack([earlier[order], later[order]]), return_inverse=True)
    earlier, later = local.reshape(2, -1).tolist()  # compact ids: Python lists only for rows with pairs
    jac = jaccard[order].tolist()
    kept = [True] * len(nodes)
    dup = [-1] * len(nodes)
    dup_j = [float("nan")] * len(nodes)
    i, m = 0, len(later)
    while i < m:
        row = later[i]
        j = i
        while j < m and later[j] == row:
            if dup[row] < 0 and kept[earlier[j]]:
                dup[row], dup_j[row] = earlier[j], jac[j]
            j += 1
        if dup[row] >= 0:
            kept[row] = False
        i = j
    keep[nodes] = kept
    removed = np.flatnonzero(~np.array(kept))
    duplicate_of[nodes[removed]] = nodes[np.array(dup, dtype=np.int64)[removed]]
    dup_jaccard[nodes] = dup_j
    return keep, duplicate_of, dup_jaccard


def _component_sizes(n: int, edges: np.ndarray) -> np.ndarray:
    """Union-find (by pointer jumping) over edges; returns the sizes of the components (by root)."""
    parent = np.arange(n, dtype=np.int64)
    if len(edges):
        a, b = edges[:, 0].astype(np.int64), edges[:, 1].astype(np.int64)
        while True:
            ra, rb = parent[a], parent[b]
            low = np.minimum(ra, rb)
            changed = ra != rb
            if not changed.any():
                break
            np.minimum.at(parent, ra[changed], low[changed])
            np.minimum.at(parent, rb[changed], low[changed])
            while True:  # compress paths until every row points at its root
                grand = parent[parent]
                if np.array_equal(grand, parent):
                    break
                parent = grand
    return np.bincount(parent, minlength=n)


# --- embedding (the team's method): exact cosine of sentence embeddings --------------------------------


def _exact_groups(texts: pa.Array, rank: np.ndarray, rows: np.ndarray):
    """Like _identical_groups, on the exact strings: (reps, members, member_rep) over `rows`."""
    empty = np.zeros(0, dtype=np.int64)
    if len(rows) == 0:
        return empty, empty, empty
    group = texts.take(pa.array(rows)).dictionary_encode().indices.to_numpy(zero_copy_only=False).astype(np.int64)
    order = np.lexsort((rank[rows], group))
    first = np.ones(len(order), dtype=bool)
    first[1:] = group[order][1:] != group[order][:-1]
    rep_of = rows[order][first][np.cumsum(first) - 1]
    return np.sort(rows[order][first]), rows[order][~first], rep_of[~first]


def _has_text(texts: pa.Array) -> np.ndarray:
    """bool[n]: rows with a non-blank text (a blank one, like a text without tokens, is never a duplicate)."""
    return pc.greater(pc.utf8_length(pc.utf8_trim_whitespace(texts)), 0).to_numpy(zero_copy_only=False)


def embed(texts, params=None) -> np.ndarray:
    """float32[n, dim] unit-length embeddings of `texts` with params.embedding_model (what dedup compares).

    Blank texts get a zero row. Exposed so that tests and callers can check cosines independently.
    """
    from scripts.lib import embedding as em

    params = _resolve(params)
    texts = mh.as_string_array(texts)
    encoder = em.load_encoder(params.embedding_model, params.embedding_device)
    rows = np.flatnonzero(_has_text(texts))
    out = np.zeros((len(texts), encoder.dim), dtype=np.float32)
    if len(rows):
        out[rows] = encoder.encode(texts.take(pa.array(rows)).to_pylist(), params.embedding_batch)
    return out


def _device(params: Dedup) -> str:
    from scripts.lib import embedding as em

    return em.pick_device(params.embedding_device)


def _dedup_self_embedding(texts: pa.Array, order_keys, params: Dedup) -> SelfResult:
    from scripts.lib import embedding as em

    n = len(texts)
    rank = _keep_rank(texts, order_keys, params.keep)
    nonblank = np.flatnonzero(_has_text(texts))
    reps, members, member_rep = _exact_groups(texts, rank, nonblank)
    vectors = embed(texts.take(pa.array(reps)), params) if len(reps) else np.zeros((0, 1), dtype=np.float32)
    index, sims = em.top_k(vectors, vectors, params.embedding_top_k, params.embedding_block, exclude_self=True,
                           device=_device(params))
    local = em.candidate_pairs(index, sims, params.threshold)
    local = mh.unique_pairs(np.sort(local, axis=1))  # (i, j) and (j, i) are one pair
    cosine = em.exact_cosine(vectors, vectors, local)
    ok = cosine >= params.threshold
    pairs, cosine = reps[local[ok]], cosine[ok]
    at_k = int((sims[:, -1] >= params.threshold).sum()) if sims.shape[1] == params.embedding_top_k else 0

    keep, duplicate_of, dup_cosine = _assign(n, pairs, cosine, rank, members, member_rep, params.keep)
    stats = {
        **_self_stats(keep, pairs, members, member_rep, len(local), n - len(nonblank), params),
        "measure": "cosine",
        "top_k": int(params.embedding_top_k),
        "rows_at_top_k": at_k,
    }
    return SelfResult(keep=keep, duplicate_of=duplicate_of, jaccard=dup_cosine, stats=stats)


# --- cross mode: new rows against a reference set ---------------------------------------------------


@dataclass
class CrossResult:
    keep: np.ndarray  # bool[n_new]
    duplicate_of: np.ndarray  # int64[n_new]: reference row index, -1 if kept
    jaccard: np.ndarray  # float64[n_new]: similarity (Jaccard, or cosine), NaN if kept
    stats: dict = field(default_factory=dict)

    @property
    def similarity(self) -> np.ndarray:
        return self.jaccard


@dataclass
class Index:
    """LSH index of a reference set: per band, the sorted band keys and the reference row of each.

    Querying new rows costs O(new rows * bands * log(reference)) with np.searchsorted; reference
    texts are stored too because candidates are verified with exact Jaccard.
    """

    params: Dedup
    sorted_keys: np.ndarray  # uint32[bands, m] (m = reference rows with at least one shingle)
    rows: np.ndarray  # uint32[bands, m]: reference row of each sorted key
    texts: pa.Array  # reference texts, all rows

    FILES = ("keys.npy", "rows.npy", "texts.parquet", "index.json")

    def save(self, path: Path | str) -> None:
        """Write the index as a directory (atomically: a reader never sees half an index)."""
        with atomic_path(path, is_dir=True) as tmp:
            np.save(tmp / "keys.npy", self.sorted_keys)
            np.save(tmp / "rows.npy", self.rows)
            pq.write_table(pa.table({"text": self.texts}), tmp / "texts.parquet", compression="zstd")
            meta = {"params": self.params.model_dump(), "reference_rows": len(self.texts)}
            (tmp / "index.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, path: Path | str) -> "Index | EmbeddingIndex":
        """An index saved by Index.save or EmbeddingIndex.save (index.json's params.method tells which)."""
        path = Path(path)
        meta = json.loads((path / "index.json").read_text(encoding="utf-8")) if (path / "index.json").exists() else {}
        embedding = isinstance(meta, dict) and isinstance(meta.get("params"), dict) and meta["params"].get("method") == "embedding"
        files = EmbeddingIndex.FILES if embedding else cls.FILES
        missing = [name for name in files if not (path / name).exists()]
        if missing:
            raise DataError(f"{path}: not a dedup index (missing {', '.join(missing)})")
        params = parse(Dedup, meta["params"], at=("params",), file=str(path / "index.json"))
        texts = pq.read_table(path / "texts.parquet").column("text").combine_chunks()
        if embedding:
            return EmbeddingIndex(params, np.load(path / "vectors.npy"), texts)
        return cls(params, np.load(path / "keys.npy", mmap_mode="r"), np.load(path / "rows.npy", mmap_mode="r"), texts)

    def query(self, new_texts) -> CrossResult:
        """Which new rows near-duplicate a reference row (only new rows are ever removed)."""
        params = self.params
        new = mh.as_string_array(new_texts)
        n = len(new)
        sk = sketch(new, params)
        rows = np.nonzero(sk.shingle_counts > 0)[0]
        found = [self._band_candidates(band, sk.band_keys[band][rows], rows) for band in range(len(self.sorted_keys))]
        candidates = mh.unique_pairs(np.concatenate(found) if found else np.zeros((0, 2), dtype=np.int64))
        keep = np.ones(n, dtype=bool)
        duplicate_of = np.full(n, -1, dtype=np.int64)
        jaccard = np.full(n, np.nan)
        if len(candidates):
            j = exact_jaccard(new, self.texts, candidates, params)
            ok = j >= params.threshold
            # best reference row per new row: highest Jaccard, then lowest reference index
            pairs, j = candidates[ok], j[ok]
            order = np.lexsort((pairs[:, 1], -j, pairs[:, 0]))
            pairs, j = pairs[order], j[order]
            first = np.ones(len(pairs), dtype=bool)
            first[1:] = pairs[1:, 0] != pairs[:-1, 0]
            hit = pairs[first, 0]
            keep[hit] = False
            duplicate_of[hit] = pairs[first, 1]
            jaccard[hit] = j[first]
        stats = {"rows_in": n, "kept": int(keep.sum()), "removed": int(n - keep.sum()), "candidate_pairs": int(len(candidates))}
        return CrossResult(keep=keep, duplicate_of=duplicate_of, jaccard=jaccard, stats=stats)

    def _band_candidates(self, band: int, keys: np.ndarray, rows: np.ndarray) -> np.ndarray:
        sorted_keys = self.sorted_keys[band]
        order = np.argsort(keys)  # sorted queries walk the (memory-mapped) index in order
        keys, rows = keys[order], rows[order]
        lo = np.searchsorted(sorted_keys, keys, side="left")
        hi = np.searchsorted(sorted_keys, keys, side="right")
        count = np.minimum(hi - lo, self.params.bucket_window)
        new = np.repeat(rows, count)
        at = np.repeat(lo, count) + (np.arange(int(count.sum())) - np.repeat(mh.offsets_from_counts(count)[:-1], count))
        return np.stack([new, np.asarray(self.rows[band])[at]], axis=1).astype(np.int64)


@dataclass
class EmbeddingIndex:
    """A reference set for cross-dedup with method embedding: its unit embeddings and texts."""

    params: Dedup
    vectors: np.ndarray  # float32[m, dim]; blank texts hold a zero row (never a duplicate)
    texts: pa.Array

    FILES = ("vectors.npy", "texts.parquet", "index.json")

    def save(self, path: Path | str) -> None:
        with atomic_path(path, is_dir=True) as tmp:
            np.save(tmp / "vectors.npy", self.vectors)
            pq.write_table(pa.table({"text": self.texts}), tmp / "texts.parquet", compression="zstd")
            meta = {"params": self.params.model_dump(), "reference_rows": len(self.texts)}
            (tmp / "index.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n", encoding="utf-8")

    def query(self, new_texts) -> CrossResult:
        """Which new rows have a reference row at cosine >= threshold (only new rows are ever removed)."""
        from scripts.lib import embedding as em

        params = self.params
        new = mh.as_string_array(new_texts)
        n = len(new)
        rows = np.flatnonzero(_has_text(new))
        reference = np.flatnonzero(self.vectors.any(axis=1)) if len(self.vectors) else np.zeros(0, dtype=np.int64)
        keep = np.ones(n, dtype=bool)
        duplicate_of = np.full(n, -1, dtype=np.int64)
        cosine = np.full(n, np.nan)
        candidates = np.zeros((0, 2), dtype=np.int64)
        if len(rows) and len(reference):
            vectors = embed(new.take(pa.array(rows)), params)
            ref_vectors = np.ascontiguousarray(self.vectors[reference])
            index, sims = em.top_k(vectors, ref_vectors, params.embedding_top_k, params.embedding_block,
                                   device=_device(params))
            local = em.candidate_pairs(index, sims, params.threshold)
            c = em.exact_cosine(vectors, ref_vectors, local)
            candidates = np.stack([rows[local[:, 0]], reference[local[:, 1]]], axis=1) if len(local) else candidates
            ok = c >= params.threshold
            pairs, c = candidates[ok], c[ok]
            # best reference row per new row: highest cosine, then lowest reference index
            order = np.lexsort((pairs[:, 1], -c, pairs[:, 0]))
            pairs, c = pairs[order], c[order]
            first = np.ones(len(pairs), dtype=bool)
            first[1:] = pairs[1:, 0] != pairs[:-1, 0]
            hit = pairs[first, 0]
            keep[hit] = False
            duplicate_of[hit] = pairs[first, 1]
            cosine[hit] = c[first]
        stats = {"rows_in": n, "kept": int(keep.sum()), "removed": int(n - keep.sum()),
                 "candidate_pairs": int(len(candidates)), "measure": "cosine"}
        return CrossResult(keep=keep, duplicate_of=duplicate_of, jaccard=cosine, stats=stats)


def build_index(texts, params=None) -> "Index | EmbeddingIndex":
    """Index a reference set for `query` / `dedup_against` (the kind params.method says)."""
    params = _resolve(params)
    texts = mh.as_string_array(texts)
    if params.method == "embedding":
        return EmbeddingIndex(params=params, vectors=embed(texts, params), texts=texts)
    sk = sketch(texts, params)
    rows = np.nonzero(sk.shingle_counts > 0)[0]
    bands, _ = banding(params)
    sorted_keys = np.empty((bands, len(rows)), dtype=np.uint32)
    sorted_rows = np.empty((bands, len(rows)), dtype=np.uint32)
    for band in range(bands):  # one sort of (key << 32 | row): by key, then by row
        packed = np.sort((sk.band_keys[band][rows].astype(np.uint64) << np.uint64(32)) | rows.astype(np.uint64))
        sorted_keys[band] = packed >> np.uint64(32)
        sorted_rows[band] = packed & np.uint64(0xFFFFFFFF)
    return Index(params=params, sorted_keys=sorted_keys, rows=sorted_rows, texts=texts)


def dedup_against(new_texts, reference, params=None) -> CrossResult:
    """Remove new rows that near-duplicate any reference row (reference: an Index or texts).

    With an Index, its own params are used (they define its band keys); `params` must then be
    None or equal to them.
    """
    if isinstance(reference, (Index, EmbeddingIndex)):
        if params is not None and _result_params(_resolve(params)) != _result_params(reference.params):
            raise DataError("dedup_against: params differ from the ones the index was built with")
        return reference.query(new_texts)
    return build_index(reference, params).query(new_texts)


def _result_params(params: Dedup) -> dict:
    """The params that change results (workers, batch sizes, block and device only change speed and memory)."""
    return params.model_dump(exclude=set(SPEED_KEYS))


def near_duplicate_mask(new_texts, reference_texts, params=None) -> np.ndarray:
    """bool[n_new]: True where a new text near-duplicates a reference text (release.py's hook).

    Cross mode: the reference rows are never removed, whatever params.keep says."""
    return ~dedup_against(new_texts, reference_texts, params).keep


def keep_mask(texts, params=None, against=None, order_keys=None) -> np.ndarray:
    """bool[n]: True = keep. One call for a release step, with that step's params (Dedup, mapping or None).

    against=None: self mode (params.keep decides which rows of each cluster stay);
    against=texts or an index: cross mode, rows of `texts` near a reference row are dropped, the
    reference is untouched.
    """
    if against is None:
        return dedup_self(texts, order_keys, params).keep
    return dedup_against(texts, against, params).keep


# --- stage CLI ---------------------------------------------------------------------------------------


def _read_stage_input(path: Path) -> pa.Table:
    if not path.exists():
        raise DataError(f"{path}: input not found (run its upstream stage first)")
    try:
        table = pq.read_table(path)
    except Exception as exc:  # pyarrow raises many types for corrupt files
        raise DataError(f"{path}: not a readable parquet file ({type(exc).__name__}: {exc})".splitlines()[0]) from None
    for column in ("id", "text"):
        if column not in table.column_names:
            raise DataError(f"{path}: missing column '{column}'")
    for column in ("id", "text"):
        if not (pa.types.is_string(table.schema.field(column).type) or pa.types.is_large_string(table.schema.field(column).type)):
            raise DataError(f"{path}: column '{column}' must hold text, found {table.schema.field(column).type}")
        nulls = pc.is_null(table.column(column)).to_numpy(zero_copy_only=False)
        if nulls.any():
            raise DataError(f"{path}: row {int(np.argmax(nulls))}: {column} is null")
    if pc.count_distinct(table.column("id")).as_py() != table.num_rows:
        raise DataError(f"{path}: column 'id' has repeated values")
    return table.replace_schema_metadata(None)


def _write_table(table: pa.Table, path: Path) -> None:
    with atomic_path(path) as tmp:
        pq.write_table(table.replace_schema_metadata(None), tmp, compression="zstd")


def cli(
    source: str = typer.Argument(..., help="source name in params.yaml: sources"),
    input: Path = typer.Argument(..., help="data/clean/S.parquet (dedup runs on column `text`)"),
    output: Path = typer.Argument(..., help="data/dedup/S.parquet; S.clusters.parquet and S.report.json go beside it"),
) -> None:
    """Remove near-duplicate rows of one source (MinHash-LSH + exact Jaccard, or embeddings + exact cosine)."""
    params, setting = source_params(load_section("dedup"), source)
    table = _read_stage_input(input)
    ids = table.column("id").combine_chunks()
    if setting is False:  # the source's rows pass untouched (its near-duplicates are left to the recipes)
        n = table.num_rows
        result = SelfResult(np.ones(n, dtype=bool), np.full(n, -1, dtype=np.int64), np.full(n, np.nan),
                            {"rows_in": n, "kept": n, "removed": 0})
    else:
        result = dedup_self(table.column("text"), ids, params)
    removed = np.nonzero(~result.keep)[0]
    similarity = result.jaccard[removed]
    if params.method == "embedding":  # float32 encoders differ in the last bits across devices/batches
        similarity = np.round(similarity, 6)
    clusters = pa.table(
        {
            "id": ids.take(pa.array(removed)),
            "duplicate_of": ids.take(pa.array(result.duplicate_of[removed])),
            "jaccard": pa.array(similarity, type=pa.float64()),
        }
    )
    stem = output.name.removesuffix(".parquet")
    _write_table(table.filter(pa.array(result.keep)), output)
    _write_table(clusters, output.parent / f"{stem}.clusters.parquet")
    if setting is False:
        report = {"source": source, **result.stats, "method": "off"}
    elif params.method == "embedding":
        report = {"source": source, **result.stats, "method": "embedding", "model": params.embedding_model, "keep": params.keep}
    else:  # the same keys as before method existed: the default pipeline's report is unchanged
        report = {"source": source, **result.stats, "num_perm": params.num_perm, "ngram": params.ngram, "unit": params.unit, "keep": params.keep}
    write_json(report, output.parent / f"{stem}.report.json")
    write_preview(source, input, output, output.parent / f"{stem}.clusters.parquet", output.parent / f"{stem}.preview.html")
    print(f"dedup {source}: {report['rows_in']} rows -> {report['kept']} kept, {report['removed']} removed")


def source_params(params: Dedup, source: str) -> tuple[Dedup, object]:
    """(the `dedup:` section with `sources.<source>.dedup`'s overrides, that setting: True, False or a mapping)."""
    sources = load_section("sources", missing_ok=True) or {}
    setting = sources[source].dedup if source in sources else True
    if isinstance(setting, bool):
        return params, setting
    return params.replace(**setting.overrides()), setting


def write_preview(source: str, input: Path, output: Path, clusters: Path, page: Path) -> None:
    """data/dedup/S.preview.html: the largest clusters, kept vs removed texts (params preview.dedup_clusters)."""
    from scripts.lib.preview import write_dedup_preview

    n = load_section("preview", missing_ok=True).dedup_clusters
    write_dedup_preview(source, input, output, clusters, page, n)


def cli_text(
    input: Path = typer.Argument(..., help="text file, one text per line"),
    output: Path = typer.Argument(..., help="JSONL, one {keep, duplicate_of} per input line"),
    threshold: Optional[float] = typer.Option(None, help="similarity threshold: Jaccard, or cosine with dedup.method "
                                                         "embedding (default: params.yaml dedup.threshold, else 0.7)"),
) -> None:
    """Near-duplicate flags for a text file; an empty line (no tokens) is always kept.

    Works outside a DVC repo: without params.yaml (or its `dedup:` section) the documented
    defaults (docs/params.md#dedup) apply.
    """
    params = load_section("dedup", missing_ok=True) if PARAMS_FILE.exists() else Dedup()
    if threshold is not None:
        if not 0.0 < threshold <= 1.0:
            raise DataError(f"--threshold must be in (0, 1], got {threshold}")
        params = params.replace(threshold=threshold)
    lines = _read_lines(input)
    result = dedup_self(lines, None, params)
    with atomic_path(output) as tmp:
        with tmp.open("w", encoding="utf-8") as f:
            for keep, dup in zip(result.keep.tolist(), result.duplicate_of.tolist()):
                f.write(json.dumps({"keep": keep, "duplicate_of": None if keep else dup}) + "\n")


def _read_lines(path: Path) -> list[str]:
    if not path.exists():
        raise DataError(f"{path}: input not found")
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise DataError(f"{path}: line {line}: not valid UTF-8") from None
    if text.endswith("\n"):
        text = text[:-1]
    return [line.removesuffix("\r") for line in text.split("\n")] if text else []
