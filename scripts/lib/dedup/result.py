"""The one result type of every dedup mode (self or cross, minhash or embedding)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Result:
    """Per input row: kept or not, the row it duplicates, and how similar the two are.

    Self mode: `duplicate_of` is a row of the same input (a kept one, except with keep none_of_pair).
    Cross mode: it is a reference row and only input rows are ever removed.
    `similarity` is the exact Jaccard of the shingle sets (minhash) or the exact cosine (embedding).
    """

    keep: np.ndarray  # bool[n]
    duplicate_of: np.ndarray  # int64[n]; -1 where kept
    similarity: np.ndarray  # float64[n]; NaN where kept
    stats: dict = field(default_factory=dict)


def best_partner(n: int, pairs: np.ndarray, similarity: np.ndarray) -> Result:
    """Cross mode: each row of pairs[:, 0] goes, pointing at its best reference row pairs[:, 1]
    (highest similarity, then the lowest reference index, so the answer is one for any pair order)."""
    keep = np.ones(n, dtype=bool)
    duplicate_of = np.full(n, -1, dtype=np.int64)
    best = np.full(n, np.nan)
    if len(pairs):
        order = np.lexsort((pairs[:, 1], -similarity, pairs[:, 0]))
        pairs, similarity = pairs[order], similarity[order]
        first = np.ones(len(pairs), dtype=bool)
        first[1:] = pairs[1:, 0] != pairs[:-1, 0]
        hit = pairs[first, 0]
        keep[hit] = False
        duplicate_of[hit] = pairs[first, 1]
        best[hit] = similarity[first]
    return Result(keep=keep, duplicate_of=duplicate_of, similarity=best)
