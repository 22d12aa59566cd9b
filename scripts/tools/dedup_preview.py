"""`python -m scripts dedup-preview S`: the near-duplicate sheet of a source from existing dedup outputs."""

from __future__ import annotations

from pathlib import Path

import typer

from scripts.lib.errors import DataError
from scripts.lib.io import check_not_input, shown
from scripts.lib.params import load_section
from scripts.lib.preview import write_dedup_preview
from scripts.lib.temps import output_lock


def check_source_name(source: str) -> None:
    """A plain name: it is joined into --data's paths, so `/`, `..` or NUL would read and write elsewhere."""
    if not source or source in (".", "..") or any(c in source for c in "/\\\0"):
        raise DataError(f"{shown(repr(source))}: not a source name (a plain name such as diffusiondb)")


def cli(
    source: str = typer.Argument(..., help="source name, e.g. diffusiondb"),
    data: Path = typer.Option(Path("data"), "--data", help="data folder holding clean/ and dedup/"),
    output: Path = typer.Option(None, "--output", help="default: DATA/dedup/SOURCE.preview.html"),
) -> None:
    """Write the near-duplicate sheet of SOURCE from existing clean and dedup outputs."""
    check_source_name(source)
    output = output or data / "dedup" / f"{source}.preview.html"
    inputs = (data / "clean" / f"{source}.parquet", data / "dedup" / f"{source}.parquet")
    clusters = data / "dedup" / f"{source}.clusters.parquet"
    check_not_input(output, [*inputs, clusters])  # the page written over the table it reads destroyed it
    with output_lock(output, whole_run=True):  # a second run at once is refused before it reads params and tables
        n = load_section("preview", missing_ok=True).dedup_clusters
        write_dedup_preview(source, *inputs, clusters, output, n)
    print(shown(f"dedup-preview {source}: -> {output}"))
