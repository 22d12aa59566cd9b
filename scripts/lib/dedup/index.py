"""A reference set for cross-dedup: `Index` (one interface, saved as a folder), built for either method.

`query(new_texts)` is the same for both: the method proposes (new row, reference row) pairs with their
exact similarity, and each new row at >= threshold goes, pointing at its best reference row.
MinHash keeps each band's keys sorted with the reference row of each (a query is np.searchsorted,
O(new rows * bands * log m)); embedding keeps the unit vectors. Both keep the reference texts, which
MinHash needs to verify candidates exactly.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

import scripts.lib.dedup.embedded as embedded
import scripts.lib.dedup.signing as signing
from scripts.lib import minhash as mh
from scripts.lib.dedup.result import Result, best_partner
from scripts.lib.errors import DataError
from scripts.lib.io import atomic_path
from scripts.lib.nesting import dumps_json, loads_json
from scripts.lib.params import Dedup, Runtime, parse


class Index:
    """Reference texts indexed for `query`; `Index.load(folder)` reads either kind back."""

    params: Dedup
    texts: pa.Array
    FILES: ClassVar[tuple[str, ...]] = ()
    ARRAYS: ClassVar[tuple[str, ...]] = ()  # attributes saved as <name>.npy

    def query(self, new_texts, runtime: Runtime | None = None) -> Result:
        """Which new rows near-duplicate a reference row (only new rows are ever removed)."""
        new = mh.as_string_array(new_texts)
        pairs, similarity, candidates = self.verified_pairs(new, runtime or Runtime())
        ok = similarity >= self.params.threshold
        result = best_partner(len(new), pairs[ok], similarity[ok])
        n, kept = len(new), int(result.keep.sum())
        result.stats = {"rows_in": n, "kept": kept, "removed": n - kept, "candidate_pairs": int(candidates)}
        if self.params.method == "embedding":
            result.stats["measure"] = "cosine"
        return result

    def verified_pairs(self, new: pa.Array, runtime: Runtime) -> tuple[np.ndarray, np.ndarray, int]:
        """(pairs int64[m, 2] of (new row, reference row), their exact similarity, candidates proposed)."""
        raise NotImplementedError

    def save(self, path: Path | str) -> None:
        """Write the index as a folder, atomically (a reader never sees half an index)."""
        with atomic_path(path, is_dir=True) as tmp:
            for name in self.ARRAYS:
                np.save(tmp / f"{name}.npy", getattr(self, name))
            pq.write_table(pa.table({"text": self.texts}), tmp / "texts.parquet", compression="zstd")
            meta = {"params": self.params.model_dump(), "reference_rows": len(self.texts)}
            (tmp / "index.json").write_text(
                dumps_json(meta, "index.json", indent=2, sort_keys=True) + "\n", encoding="utf-8"
            )

    @staticmethod
    def load(path: Path | str) -> Index:
        """An index written by `save` (index.json's params.method says which kind)."""
        path = Path(path)
        meta = _read_meta(path / "index.json")
        embedding = isinstance(meta.get("params"), dict) and meta["params"].get("method") == "embedding"
        kind: type[EmbeddingIndex] | type[MinHashIndex] = EmbeddingIndex if embedding else MinHashIndex
        missing = [name for name in kind.FILES if not (path / name).exists()]
        if missing:
            raise DataError(f"{path}: not a dedup index (missing {', '.join(missing)})")
        if not isinstance(meta.get("params"), dict):
            raise DataError(f"{path / 'index.json'}: not a dedup index's index.json (no params)")
        params = parse(Dedup, meta["params"], at=("params",), file=str(path / "index.json"))
        texts = pq.read_table(path / "texts.parquet").column("text").combine_chunks()
        arrays = {name: np.load(path / f"{name}.npy", mmap_mode="r") for name in kind.ARRAYS}
        if embedding:
            arrays = {name: np.asarray(value) for name, value in arrays.items()}
        return kind(params=params, texts=texts, **arrays)


def _read_meta(file: Path) -> dict:
    """index.json ({} when absent: load names it missing), depth-bounded: an index is any folder handed in."""
    if not file.exists():
        return {}
    try:
        meta = loads_json(file.read_text(encoding="utf-8"))
    except ValueError as exc:  # TooDeep, not JSON, not UTF-8
        raise DataError(f"{file}: not a dedup index's index.json ({exc})") from None
    if not isinstance(meta, dict):
        raise DataError(f"{file}: not a dedup index's index.json (not a JSON object)")
    return meta


class MinHashIndex(Index):
    """Per band, the sorted band keys of the reference rows and the row of each."""

    FILES = ("keys.npy", "rows.npy", "texts.parquet", "index.json")
    ARRAYS = ("keys", "rows")

    def __init__(self, params: Dedup, texts: pa.Array, keys: np.ndarray, rows: np.ndarray):
        self.params, self.texts = params, texts
        self.keys = keys  # uint32[bands, m] (m = reference rows with at least one shingle)
        self.rows = rows  # uint32[bands, m]: reference row of each sorted key

    @classmethod
    def build(cls, texts: pa.Array, params: Dedup, runtime: Runtime) -> MinHashIndex:
        sk = signing.sketch(texts, params, runtime)
        rows = np.nonzero(sk.shingle_counts > 0)[0]
        bands, _ = signing.banding(params)
        keys = np.empty((bands, len(rows)), dtype=np.uint32)
        sorted_rows = np.empty((bands, len(rows)), dtype=np.uint32)
        for band in range(bands):  # one sort of (key << 32 | row): by key, then by row
            packed = np.sort((sk.band_keys[band][rows].astype(np.uint64) << np.uint64(32)) | rows.astype(np.uint64))
            keys[band] = packed >> np.uint64(32)
            sorted_rows[band] = packed & np.uint64(0xFFFFFFFF)
        return cls(params, texts, keys, sorted_rows)

    def verified_pairs(self, new: pa.Array, runtime: Runtime) -> tuple[np.ndarray, np.ndarray, int]:
        sk = signing.sketch(new, self.params, runtime)
        rows = np.nonzero(sk.shingle_counts > 0)[0]
        found = [self._band_candidates(band, sk.band_keys[band][rows], rows) for band in range(len(self.keys))]
        candidates = mh.unique_pairs(np.concatenate(found) if found else np.zeros((0, 2), dtype=np.int64))
        jaccard = signing.exact_jaccard(new, self.texts, candidates, self.params, runtime.verify_pairs)
        return candidates, jaccard, len(candidates)

    def _band_candidates(self, band: int, keys: np.ndarray, rows: np.ndarray) -> np.ndarray:
        sorted_keys = self.keys[band]
        order = np.argsort(keys)  # sorted queries walk the (memory-mapped) index in order
        keys, rows = keys[order], rows[order]
        lo = np.searchsorted(sorted_keys, keys, side="left")
        hi = np.searchsorted(sorted_keys, keys, side="right")
        count = np.minimum(hi - lo, self.params.bucket_window)
        new = np.repeat(rows, count)
        at = np.repeat(lo, count) + (np.arange(int(count.sum())) - np.repeat(mh.offsets_from_counts(count)[:-1], count))
        return np.stack([new, np.asarray(self.rows[band])[at]], axis=1).astype(np.int64)


class EmbeddingIndex(Index):
    """The reference rows' unit embeddings (blank texts hold a zero row: never a duplicate)."""

    FILES = ("vectors.npy", "texts.parquet", "index.json")
    ARRAYS = ("vectors",)

    def __init__(self, params: Dedup, texts: pa.Array, vectors: np.ndarray):
        self.params, self.texts, self.vectors = params, texts, vectors  # vectors: float32[m, dim]

    @classmethod
    def build(cls, texts: pa.Array, params: Dedup, runtime: Runtime) -> EmbeddingIndex:
        return cls(params, texts, embedded.embed(texts, params))

    def verified_pairs(self, new: pa.Array, runtime: Runtime) -> tuple[np.ndarray, np.ndarray, int]:
        return embedded.cross_candidates(new, self.vectors, self.params)


def build_index(texts, params: Dedup, runtime: Runtime | None = None) -> Index:
    """Index a reference set for `query` (the kind params.method says)."""
    kind: type[MinHashIndex] | type[EmbeddingIndex] = EmbeddingIndex if params.method == "embedding" else MinHashIndex
    return kind.build(mh.as_string_array(texts), params, runtime or Runtime())
