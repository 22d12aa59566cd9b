"""summary: the few numbers `dvc exp show` puts first, one small metrics file.

    python -m scripts summary data/releases data/summary.json

{"dedup_threshold": 0.7, "rows": {"v2": 700, ...}}: the threshold every release was deduplicated at
and each release's row count (train + validation, from data/releases/V/stats.json), by name. It is the pipeline's only `metrics:` file, so `dvc exp show` fits a 160-column
terminal with these visible; the detailed reports (stats.json, each stage's report.json) are plain
outputs beside it (cache: false, committed), read with `dvc metrics diff --targets FILE` or cat.
"""

from __future__ import annotations

import json
from pathlib import Path

import typer

from scripts.lib.errors import DataError
from scripts.lib.io import write_json
from scripts.lib.params import load_params, load_section


def summarise(threshold: float, stats: dict[str, dict]) -> dict:
    """The summary of each release's stats.json (release -> its parsed file), releases in that order."""
    return {"dedup_threshold": threshold, "rows": {name: s["rows"]["total"] for name, s in stats.items()}}


def read_stats(releases: Path, names: list[str]) -> dict[str, dict]:
    stats = {}
    for name in names:
        path = releases / name / "stats.json"
        try:
            stats[name] = json.loads(path.read_text(encoding="utf-8"))
            stats[name]["rows"]["total"]
        except FileNotFoundError:
            raise DataError(f"{path}: input not found (run release@{name})") from None
        except (ValueError, KeyError, TypeError):
            raise DataError(f"{path}: not a release's stats.json (no rows.total)") from None
    return stats


def cli(
    releases: Path = typer.Argument(..., help="the releases folder (data/releases)"),
    output: Path = typer.Argument(..., help="the summary file (data/summary.json)"),
) -> None:
    """Write the dedup threshold and each release's row count: `dvc exp show`'s metrics."""
    names = list(load_params("releases") or {})
    summary = summarise(load_section("dedup").threshold, read_stats(releases, names))
    write_json(summary, output)
    print(f"summary: {len(names)} releases -> {output}")
