"""`python -m scripts dedup-preview S`: the near-duplicate sheet of a source from existing dedup outputs."""

from __future__ import annotations

from pathlib import Path

import typer

from scripts.lib.io import shown
from scripts.lib.params import load_section
from scripts.lib.preview import write_dedup_preview


def cli(
    source: str = typer.Argument(..., help="source name, e.g. diffusiondb"),
    data: Path = typer.Option(Path("data"), "--data", help="data folder holding clean/ and dedup/"),
    output: Path = typer.Option(None, "--output", help="default: DATA/dedup/SOURCE.preview.html"),
) -> None:
    """Write the near-duplicate sheet of SOURCE from existing clean and dedup outputs."""
    output = output or data / "dedup" / f"{source}.preview.html"
    n = load_section("preview", missing_ok=True).dedup_clusters
    write_dedup_preview(
        source,
        data / "clean" / f"{source}.parquet",
        data / "dedup" / f"{source}.parquet",
        data / "dedup" / f"{source}.clusters.parquet",
        output,
        n,
    )
    print(shown(f"dedup-preview {source}: -> {output}"))
