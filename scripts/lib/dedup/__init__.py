"""Near-duplicate removal, the typed core under `dedup@S`, `dedup-text` and the release dedup steps.

MinHash-LSH proposes candidate pairs and the exact Jaccard of the shingle sets verifies each one
(`dedup.method: minhash`), or sentence embeddings propose and the exact cosine verifies (`embedding`).
Self mode (`dedup_self`) keeps one row per cluster by `dedup.keep` (scripts/lib/dedup/keep.py); cross
mode (`build_index(...).query`, `dedup_against`) removes new rows near a reference set. Both return
one `Result`. `params` is everywhere a Dedup, a mapping checked like params.yaml, or None (defaults);
`runtime` (params.yaml `runtime:`) changes speed only: engine local or ray, workers, batch sizes.

The only probabilistic step of minhash is banding: a pair at exactly the threshold becomes a candidate
with probability `band_recall` >= dedup.target_recall (0.995 by default), pairs above it more often.
"""

from scripts.lib.dedup.api import (
    SPEED_KEYS,
    dedup_against,
    dedup_self,
    keep_mask,
    near_duplicate_mask,
    resolve_params,
)
from scripts.lib.dedup.index import EmbeddingIndex, Index, MinHashIndex, build_index
from scripts.lib.dedup.result import Result
from scripts.lib.dedup.signing import banding

__all__ = [
    "SPEED_KEYS",
    "EmbeddingIndex",
    "Index",
    "MinHashIndex",
    "Result",
    "banding",
    "build_index",
    "dedup_against",
    "dedup_self",
    "keep_mask",
    "near_duplicate_mask",
    "resolve_params",
]
