"""`runtime`: speed only (engine, workers, batch sizes); no stage lists it in dvc.yaml."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import (
    Field,
    field_validator,
    model_validator,
)

from scripts.lib.params.base import NonEmpty, Section

# Ray refuses a smaller object store (78,643,200 bytes): 64 passed here and failed after Ray's whole start,
# blamed on `runtime.ray_address=None`
OBJECT_STORE_MIN_MB = 75


# what Ray joins: its GCS as host:port (an IPv6 host in brackets), or its client server as ray://host[:port]
_HOST = r"(?:\[[0-9A-Fa-f:.]+\]|[^\s/:@\[\]]+)"
_JOINABLE = re.compile(rf"auto|local|ray://{_HOST}(?::(?P<client_port>\d+))?|{_HOST}:(?P<port>\d+)")
_EXPECTED = 'expected "auto", "host:port" or "ray://host:port"'


def ray_address_problem(address: str) -> str | None:
    """Why `address` is no address Ray can join, told at params' load: Ray took 5-15 s to say so, after its
    import, in words that blamed RAY_ADDRESS and ended mid-sentence (an http:// dashboard URL)."""
    if (shape := _JOINABLE.fullmatch(address)) is None:
        scheme = address.partition("://")[0] if "://" in address else None
        if scheme in ("http", "https"):
            return f"an {scheme}:// address is the dashboard's, not one Ray joins; {_EXPECTED}"
        return f"not an address Ray joins; {_EXPECTED}"
    port = int(shape["port"] or shape["client_port"] or 1)
    return None if 1 <= port <= 65_535 else f"port {port} is out of range (1 to 65535)"


class Runtime(Section):
    """How a stage runs, never what it writes: every output is byte-identical for any value here, so no
    stage lists this section in dvc.yaml and switching engines reruns nothing (tests prove it)."""

    engine: Literal["local", "ray"] = Field(
        "local",
        description="local: this machine's processes | ray: Ray Data (dedup, clean) and a Ray actor pool (generate)",
    )
    ray_address: NonEmpty | None = Field(
        None,
        description='null starts a local Ray for the run; "auto", host:port (its GCS) or ray://host:port joins a running cluster',
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
        description="ray: blocks a table is cut into (0: one per 100k rows, at least 2 per worker); at most one per row",
    )
    object_store_mb: int | None = Field(
        None,
        ge=OBJECT_STORE_MIN_MB,
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

    @field_validator("ray_address")
    @classmethod
    def _joinable(cls, address: str | None) -> str | None:
        # the address is never echoed: it may hold a password (user:password@host)
        if address is not None and (problem := ray_address_problem(address)):
            raise ValueError(f"cannot start or join Ray ({problem})")
        return address

    @model_validator(mode="after")
    def _store_sizes_a_local_ray_only(self) -> Runtime:
        # a cluster's object store is sized when the cluster starts: joining one ignored this value without a word
        if self.ray_address not in (None, "local") and self.object_store_mb is not None:
            raise ValueError(
                'object_store_mb sizes the local Ray that ray_address null (or "local") starts; '
                "a cluster's store is set where it starts (leave object_store_mb null to join one)"
            )
        return self
