"""Embedding side of dedup (`dedup.method: embedding`): identical texts grouped, the rest encoded
(scripts/lib/embedding.py), exact top-k neighbours propose candidates, float64 cosine verifies them."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from scripts.lib import minhash as mh
from scripts.lib.dedup.keep import assign, keep_rank, self_stats
from scripts.lib.dedup.result import Result
from scripts.lib.params import Dedup


def has_text(texts: pa.Array) -> np.ndarray:
    """bool[n]: rows with a non-blank text (a blank one, like a text without tokens, is never a duplicate)."""
    return pc.greater(pc.utf8_length(pc.utf8_trim_whitespace(texts)), 0).to_numpy(zero_copy_only=False)


def embed(texts: pa.Array, params: Dedup) -> np.ndarray:
    """float32[n, dim] unit-length embeddings with params.embedding_model; blank texts get a zero row."""
    from scripts.lib import embedding as em

    encoder = em.load_encoder(params.embedding_model, params.embedding_device)
    rows = np.flatnonzero(has_text(texts))
    out = np.zeros((len(texts), encoder.dim), dtype=np.float32)
    if len(rows):
        out[rows] = encoder.encode(texts.take(pa.array(rows)).to_pylist(), params.embedding_batch)
    return out


def device(params: Dedup) -> str:
    from scripts.lib import embedding as em

    return em.pick_device(params.embedding_device)


def exact_groups(texts: pa.Array, rank: np.ndarray, rows: np.ndarray):
    """Rows with the very same string: (reps, members, member_rep) over `rows` (rep = best rank)."""
    empty = np.zeros(0, dtype=np.int64)
    if len(rows) == 0:
        return empty, empty, empty
    group = texts.take(pa.array(rows)).dictionary_encode().indices.to_numpy(zero_copy_only=False).astype(np.int64)
    order = np.lexsort((rank[rows], group))
    first = np.ones(len(order), dtype=bool)
    first[1:] = group[order][1:] != group[order][:-1]
    rep_of = rows[order][first][np.cumsum(first) - 1]
    return np.sort(rows[order][first]), rows[order][~first], rep_of[~first]


def dedup_self_embedding(texts: pa.Array, order_keys, params: Dedup) -> Result:
    from scripts.lib import embedding as em

    n = len(texts)
    rank = keep_rank(texts, order_keys, params.keep)
    nonblank = np.flatnonzero(has_text(texts))
    reps, members, member_rep = exact_groups(texts, rank, nonblank)
    vectors = embed(texts.take(pa.array(reps)), params) if len(reps) else np.zeros((0, 1), dtype=np.float32)
    index, sims = em.top_k(
        vectors, vectors, params.embedding_top_k, params.embedding_block, exclude_self=True, device=device(params)
    )
    local = em.candidate_pairs(index, sims, params.threshold)
    local = mh.unique_pairs(np.sort(local, axis=1))  # (i, j) and (j, i) are one pair
    cosine = em.exact_cosine(vectors, vectors, local)
    ok = cosine >= params.threshold
    pairs, cosine = reps[local[ok]], cosine[ok]
    at_k = int((sims[:, -1] >= params.threshold).sum()) if sims.shape[1] == params.embedding_top_k else 0

    keep, duplicate_of, dup_cosine = assign(n, pairs, cosine, rank, members, member_rep, params.keep)
    stats = {
        **self_stats(keep, pairs, members, member_rep, len(local), n - len(nonblank), params),
        "measure": "cosine",
        "top_k": int(params.embedding_top_k),
        "rows_at_top_k": at_k,
    }
    return Result(keep=keep, duplicate_of=duplicate_of, similarity=dup_cosine, stats=stats)


def cross_candidates(new: pa.Array, vectors: np.ndarray, params: Dedup):
    """(pairs (new row, reference row), exact cosine, candidate count) of new texts against reference vectors."""
    from scripts.lib import embedding as em

    rows = np.flatnonzero(has_text(new))
    reference = np.flatnonzero(vectors.any(axis=1)) if len(vectors) else np.zeros(0, dtype=np.int64)
    if not (len(rows) and len(reference)):
        return np.zeros((0, 2), dtype=np.int64), np.zeros(0), 0
    queries = embed(new.take(pa.array(rows)), params)
    ref_vectors = np.ascontiguousarray(vectors[reference])
    index, sims = em.top_k(queries, ref_vectors, params.embedding_top_k, params.embedding_block, device=device(params))
    local = em.candidate_pairs(index, sims, params.threshold)
    cosine = em.exact_cosine(queries, ref_vectors, local)
    pairs = np.stack([rows[local[:, 0]], reference[local[:, 1]]], axis=1) if len(local) else np.zeros((0, 2), np.int64)
    return pairs, cosine, len(local)
