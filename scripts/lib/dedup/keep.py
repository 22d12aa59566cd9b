"""Which rows stay, given verified near-duplicate pairs: the keep policies and the report's counts.

Greedy in keep order (`first` | `longest`): a row is kept unless a verified partner earlier in that
order is kept, and a removed row points at its best kept partner. So no two kept rows are verified
near-duplicates, and every `duplicate_of` is a KEPT row at similarity >= threshold (plain union-find
would not: a chain a~b~c keeps only a although c may share nothing with a).
`none_of_pair` removes every row that has a verified partner; `duplicate_of` is its best partner.
Only the relative order of `rank` among rows of the pairs matters, which lets the Ray engine pass
ranks of just those rows.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from scripts.lib import minhash as mh
from scripts.lib.dedup.texts import as_texts
from scripts.lib.errors import DataError
from scripts.lib.params import Dedup


def keep_rank(texts, order_keys, keep: str) -> np.ndarray:
    """rank[i] = position of row i in keep order (0 = kept first; none_of_pair: input order, for ties).
    texts: an Arrow array or a Texts (only keep longest reads them, for their lengths)."""
    texts = as_texts(texts)
    n = len(texts)
    if keep in ("first", "none_of_pair"):
        return np.arange(n, dtype=np.int64)
    columns = {"neg_len": pc.negate(texts.lengths().cast(pa.int64()))}
    if order_keys is not None:
        keys = mh.as_string_array(order_keys)
        if len(keys) != n:
            raise DataError(f"order_keys has {len(keys)} values for {n} texts")
        columns["key"] = keys
    columns["position"] = pa.array(np.arange(n, dtype=np.int64))
    table = pa.table(columns)
    order = pc.sort_indices(table, sort_keys=[(name, "ascending") for name in columns]).to_numpy()
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n)
    return rank


def assign(
    n: int,
    pairs: np.ndarray,
    similarity: np.ndarray,
    rank: np.ndarray,
    members: np.ndarray,
    member_rep: np.ndarray,
    keep_policy: str,
):
    """keep, duplicate_of, similarity-to-it from the verified pairs and the identical-text groups."""
    if keep_policy == "none_of_pair":
        # an identical copy is a partner at similarity 1: the whole group goes, like any pair
        edges = np.concatenate([pairs, np.stack([members, member_rep], axis=1)])
        return remove_paired(n, edges, np.concatenate([similarity, np.ones(len(members))]), rank)
    keep, duplicate_of, dup_similarity = greedy_assign(n, pairs, similarity, rank)
    # identical texts follow their representative (same shingle set / embedding: same similarity to its kept row)
    rep_kept = keep[member_rep]
    keep[members] = False
    duplicate_of[members] = np.where(rep_kept, member_rep, duplicate_of[member_rep])
    dup_similarity[members] = np.where(rep_kept, 1.0, dup_similarity[member_rep])
    return keep, duplicate_of, dup_similarity


def remove_paired(n: int, pairs: np.ndarray, similarity: np.ndarray, rank: np.ndarray):
    """none_of_pair: every row of a pair goes, pointing at its best partner (highest similarity, then
    earliest in keep order), which is removed too."""
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


def greedy_assign(n: int, pairs: np.ndarray, similarity: np.ndarray, rank: np.ndarray):
    """Walk rows in keep order: keep a row unless a verified partner earlier in that order is kept."""
    keep = np.ones(n, dtype=bool)
    duplicate_of = np.full(n, -1, dtype=np.int64)
    dup_similarity = np.full(n, np.nan)
    if len(pairs) == 0:
        return keep, duplicate_of, dup_similarity
    a, b = pairs[:, 0], pairs[:, 1]
    swap = rank[a] > rank[b]
    earlier_rows = np.where(swap, b, a)
    later_rows = np.where(swap, a, b)
    # per later row: its earlier partners, best first (highest similarity, then earliest in keep order)
    order = np.lexsort((rank[earlier_rows], -similarity, rank[later_rows]))
    nodes, local = np.unique(np.stack([earlier_rows[order], later_rows[order]]), return_inverse=True)
    earlier, later = local.reshape(2, -1).tolist()  # compact ids: Python lists only for rows with pairs
    sim = similarity[order].tolist()
    kept = [True] * len(nodes)
    dup = [-1] * len(nodes)
    dup_sim = [float("nan")] * len(nodes)
    i, m = 0, len(later)
    while i < m:
        row = later[i]
        j = i
        while j < m and later[j] == row:
            if dup[row] < 0 and kept[earlier[j]]:
                dup[row], dup_sim[row] = earlier[j], sim[j]
            j += 1
        if dup[row] >= 0:
            kept[row] = False
        i = j
    keep[nodes] = kept
    removed = np.flatnonzero(~np.array(kept))
    duplicate_of[nodes[removed]] = nodes[np.array(dup, dtype=np.int64)[removed]]
    dup_similarity[nodes] = dup_sim
    return keep, duplicate_of, dup_similarity


def component_sizes(n: int, edges: np.ndarray) -> np.ndarray:
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


def self_stats(
    keep: np.ndarray,
    pairs: np.ndarray,
    members: np.ndarray,
    member_rep: np.ndarray,
    candidates: int,
    no_tokens: int,
    params: Dedup,
) -> dict:
    """The report's counts, the same for both methods (their own keys follow)."""
    n = len(keep)
    sizes = component_sizes(n, np.concatenate([pairs, np.stack([members, member_rep], axis=1)]))
    return report_counts(n, int(keep.sum()), sizes, len(members), candidates, len(pairs), no_tokens, params)


def report_counts(
    n: int,
    kept: int,
    cluster_sizes: np.ndarray,
    exact_duplicates: int,
    candidates: int,
    verified: int,
    no_tokens: int,
    params: Dedup,
) -> dict:
    """cluster_sizes: the sizes of the clusters (rows in no cluster may be left out)."""
    return {
        "rows_in": int(n),
        "kept": int(kept),
        "removed": int(n - kept),
        "clusters": int((cluster_sizes >= 2).sum()),
        "largest_cluster": int(cluster_sizes.max(initial=1)) if n else 0,
        "exact_duplicates": int(exact_duplicates),
        "candidate_pairs": int(candidates),
        "verified_pairs": int(verified),
        "no_tokens": int(no_tokens),
        "threshold": float(params.threshold),
    }
