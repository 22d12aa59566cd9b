"""`runtime`: speed only (engine, workers, batch sizes); no stage lists it in dvc.yaml."""

from __future__ import annotations

from typing import Literal

from pydantic import (
    Field,
)

from scripts.lib.params.base import NonEmpty, Section


class Runtime(Section):
    """How a stage runs, never what it writes: every output is byte-identical for any value here, so no
    stage lists this section in dvc.yaml and switching engines reruns nothing (tests prove it)."""

    engine: Literal["local", "ray"] = Field(
        "local",
        description="local: this machine's processes | ray: Ray Data (dedup, clean) and a Ray actor pool (generate)",
    )
    ray_address: NonEmpty | None = Field(
        None, description='null starts a local Ray for the run; "auto" or ray://host:port joins a running cluster'
    )
    connect_timeout_s: int = Field(
        8,
        ge=1,
        le=3600,
        description="ray_address: seconds to wait for the cluster's GCS to answer before the stage stops with one line",
    )
    workers: int = Field(
        0, ge=0, le=65_536, description="parallel workers (processes, or Ray tasks/actors): 0 = one per CPU"
    )
    batch_rows: int = Field(
        20_000, ge=1, le=10_000_000, description="rows per batch handed to a worker (bounds each worker's memory)"
    )
    stream_rows: int = Field(
        262_144,
        ge=1,
        le=100_000_000,
        description="rows a streaming stage (clean, dedup, prefilter, captions, split) reads, processes and writes at a time (bounds its memory)",
    )
    partitions: int = Field(
        0,
        ge=0,
        le=1_000_000,
        description="ray: blocks a table is cut into (0: one per 100k rows, at least 2 per worker)",
    )
    object_store_mb: int | None = Field(
        None,
        ge=64,
        le=10_000_000,
        description="ray, local instance only: object store size in MiB (null: Ray's default); "
        "blocks beyond it spill to disk",
    )
    verify_pairs: int = Field(
        500_000, ge=1, le=100_000_000, description="dedup: candidate pairs per exact-Jaccard batch (bounds memory)"
    )
    driver_edges: int = Field(
        50_000_000,
        ge=0,
        le=10_000_000_000,
        description="dedup on ray: verified pairs up to this many are resolved "
        "into clusters on the driver; more go through distributed rounds (large-star/small-star)",
    )
    writers: int = Field(
        2, ge=1, le=256, description="generate: threads encoding and writing images beside the diffusion loop"
    )
