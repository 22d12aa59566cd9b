"""summary: the few numbers `dvc exp show` puts first, one small metrics file.

    python -m scripts summary data/releases data/summary.json --recipe data/recipes/plots.json

{"dedup_threshold": 0.7, "rows": {"v2": 700, ...}}: the dedup threshold and each release's row count
(train + validation, from data/releases/V/stats.json), by name. It is the pipeline's only `metrics:` file,
so these lead `dvc exp show` (the README's `--drop` keeps them and the dedup params in 160 columns); the
detailed reports (stats.json, each stage's report.json) are plain outputs beside it (cache: false,
committed), read with `dvc metrics diff --targets FILE` or cat.
"""

from __future__ import annotations

from pathlib import Path

import typer

from scripts.lib.errors import DataError, shown_short
from scripts.lib.io import check_files_ours, shown, write_json
from scripts.lib.nesting import MAX_REPORT_BYTES, json_found, loads_json
from scripts.lib.params import load_section
from scripts.lib.safe_paths import check_stays_in, read_within
from scripts.lib.temps import output_lock

MAX_COUNT = 2**63 - 1  # what any table of ours (int64) can hold; history-table shows a count past it as unreadable


def is_count(value: object) -> bool:
    """Whether `value` is a row count: a whole number from 0 to MAX_COUNT. A boolean is no count (True was 1), and
    2**70 was copied into the metrics whole (no release holds it, and no int64 column can)."""
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_COUNT


def summarise(threshold: float, stats: dict[str, dict]) -> dict:
    """The summary of each release's stats.json (release -> its parsed file), releases in that order."""
    return {"dedup_threshold": threshold, "rows": {name: s["rows"]["total"] for name, s in stats.items()}}


def stats_path(releases: Path, name: str) -> Path:
    """RELEASES/NAME/stats.json, refused when a link on its way leads out of RELEASES: summary copied the row
    count of a `stats.json -> /elsewhere/stats.json` into the metrics (and tag into its message). No DVC-cache
    exception: stats.json is `cache: false`, never a link into the cache."""
    return check_stays_in(releases / name / "stats.json", releases)


def read_stats(releases: Path, names: list[str]) -> dict[str, dict]:
    stats = {}
    for name in names:
        path = releases / name / "stats.json"
        try:
            # read_within: stays in RELEASES (stats_path's check) and again once open (replaced by a link out
            # since?), one name only (a hard link to a file elsewhere was copied), never a FIFO (it hung);
            # loads_json: depth-bounded
            stats[name] = loads_json(read_within(path, releases, cap=MAX_REPORT_BYTES, one_name=True).decode())
            total = stats[name]["rows"]["total"]
        except FileNotFoundError:
            raise DataError(f"{path}: input not found (run release@{name})") from None
        except ValueError as exc:  # TooDeep, not JSON, NaN or 1e999 or a lone surrogate: was "no rows.total"
            raise DataError(f"{path}: not a release's stats.json ({shown_short(str(exc), 200)})") from None
        except (KeyError, TypeError):
            raise DataError(f"{path}: not a release's stats.json (no rows.total)") from None
        if not is_count(total):  # the line says the value: "rows.total is int" was all a -5 or 2**70 got
            raise DataError(
                f"{path}: rows.total is {json_found(total)}, not a count of rows (0 to 2**63-1); refusing to copy it"
            )
    return stats


def cli(
    releases: Path = typer.Argument(..., help="the releases folder (data/releases)"),
    output: Path = typer.Argument(..., help="the summary file (data/summary.json)"),
    plan: Path = typer.Option(
        None, "--recipe", help="data/recipes/plots.json: the release names (default: params.yaml)"
    ),
) -> None:
    """Write the dedup threshold and each release's row count: `dvc exp show`'s metrics."""
    from scripts.lib.plans import check_plan, plots_plan, written_releases, written_sources

    check_files_ours(output, inputs=[releases])
    with output_lock(output, whole_run=True):  # a second run at once is refused before it reads, not at its write
        reads = plots_plan(written_releases(), written_sources())
        if plan is not None:  # dvc.yaml: the names come from the file this stage depends on, not every entry
            check_plan(plan, reads)
        names = reads["releases"]
        summary = summarise(load_section("dedup").threshold, read_stats(releases, names))
        write_json(summary, output)
    print(shown(f"summary: {len(names)} releases -> {output}"))
