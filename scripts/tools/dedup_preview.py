"""`python -m scripts dedup-preview S`: the near-duplicate sheet of a source from existing dedup outputs."""

from __future__ import annotations

from pathlib import Path

import typer

from scripts.lib.io import check_not_input, shown
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
    inputs = (data / "clean" / f"{source}.parquet", data / "dedup" / f"{source}.parquet")
    clusters = data / "dedup" / f"{source}.clusters.parquet"
    check_not_input(output, [*inputs, clusters])  # the page written over the table it reads destroyed it
    write_dedup_preview(source, *inputs, clusters, output, n)
    print(shown(f"dedup-preview {source}: -> {output}"))
