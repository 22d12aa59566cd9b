"""plots: the data files behind `dvc plots show` / `dvc plots diff` (declared under `plots:` in dvc.yaml).

    python -m scripts plots data/releases data/clean data/dedup data/plots

Each file is a small CSV covering every release (or every source), so one file per question:

    prompt_lengths.csv  release, split, chars, rows        caption length histogram (chars = bin start)
    source_mix.csv      release, split, source, rows, share, panel
    clean_removed.csv   source, rule, rows, panel          rows dropped per cleaning rule
    dedup_clusters.csv  source, cluster_size, clusters, panel   near-duplicate cluster sizes (kept + removed)

`panel` names the small multiple a row belongs to (the templates in .dvc/plots/ facet on it; `rev` is
added by DVC, so `dvc plots diff v4-a v4-b` draws both revisions side by side). Releases come from
params.yaml `releases` and sources from `sources`, in that order; a missing input names its path, and one
reached through a link out of its folder is refused (safe_paths.table_in: DVC's cache links are the folder's).
Generation speed is not plotted: generate@S records no timing in its manifest or elsewhere.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import typer

from scripts.lib.clusters_table import read_clusters_table
from scripts.lib.errors import DataError, shown_short
from scripts.lib.io import (
    SPLITS,
    atomic_path,
    check_files_ours,
    check_output_kind,
    commit_together,
    present_file,
    regular_file,
    shown,
)
from scripts.lib.nesting import MAX_REPORT_BYTES, json_found, json_kind, loads_json
from scripts.lib.params import load_section
from scripts.lib.safe_paths import read_within, table_in
from scripts.lib.tables import (
    BATCH_BYTES,
    BATCH_MAX_ROWS,
    byte_batches,
    check_cells,
    check_column_names,
    frame_of,
    reads_as_text,
    release_rows_file,
    utf8_checked,
)
from scripts.lib.temps import output_lock

# file name -> its columns, in order (the tests and dvc.yaml's `plots:` rely on these names)
ROW_TEXT = ("split", "source", "text")  # the columns of rows.parquet plotted: text, or a missing caption
PLOT_FILES = {
    "prompt_lengths.csv": ["release", "split", "chars", "rows"],
    "source_mix.csv": ["release", "split", "source", "rows", "share", "panel"],
    "clean_removed.csv": ["source", "rule", "rows", "panel"],
    "dedup_clusters.csv": ["source", "cluster_size", "clusters", "panel"],
}


# --- reading -------------------------------------------------------------------------------------


def read_release_rows(releases_dir: Path, releases: list[str]) -> pd.DataFrame:
    """release, split, source, text of every row of every release (release_batches' checks): small releases
    and the tests; the stage itself counts lengths (caption_counts), never holding the texts."""
    frames = [
        pd.DataFrame({"release": release, "split": split, "source": source, "text": text})
        for release in releases
        for split, source, text in release_batches(releases_dir, release, lengths=False)
    ]
    columns = ["release", "split", "source", "text"]
    return sorted_by_split(pd.concat(frames, ignore_index=True)[columns]) if frames else pd.DataFrame(columns=columns)


def caption_counts(releases_dir: Path, releases: list[str]) -> pd.DataFrame:
    """release, split, source, chars (a caption's length), rows: every release's rows counted batch by batch,
    in the order whole rows would group (splits in SPLITS order, then first seen). rows.parquet was read whole
    into pandas: 10^5 captions of 10,000 characters (a 670 KB file) took 3.1 GB and 40 s."""
    frames = []
    for release in releases:
        counts: dict[tuple, int] = {}  # (split, source, chars) -> rows, in the order first seen
        for split, source, chars in release_batches(releases_dir, release, lengths=True):
            batch = pd.DataFrame({"split": split, "source": source, "chars": chars})
            for key, n in batch.groupby(["split", "source", "chars"], sort=False).size().items():
                counts[key] = counts.get(key, 0) + int(n)
        table = pd.DataFrame([(*key, n) for key, n in counts.items()], columns=["split", "source", "chars", "rows"])
        frames.append(sorted_by_split(table.assign(release=release)))
    columns = ["release", "split", "source", "chars", "rows"]
    return pd.concat(frames, ignore_index=True)[columns] if frames else pd.DataFrame(columns=columns)


def sorted_by_split(rows: pd.DataFrame) -> pd.DataFrame:
    """Splits in SPLITS order (any other last), rows in the order read."""
    order = {split: n for n, split in enumerate(SPLITS)}
    return rows.sort_values("split", key=lambda s: s.map(order), kind="stable", ignore_index=True)


def release_batches(releases_dir: Path, release: str, lengths: bool) -> Iterator[tuple[list, list, Any]]:
    """(splits, sources, captions) of a release a batch at a time: its rows.parquet (any export layout), or,
    for a release built before rows.parquet, its ImageFolder metadata.jsonl line by line. Captions are their
    lengths in characters when `lengths` (a missing one: 0), else the texts ("" for a missing one)."""
    path = table_in(releases_dir, release, "rows.parquet").parent / "rows.parquet"  # not through a link out
    if present_file(path):
        yield from parquet_batches(path, lengths)
        return
    for split in SPLITS:
        folder = table_in(releases_dir, release, split, "metadata.jsonl").parent
        for sources, texts in metadata_batches(folder, f"run release@{release} first"):
            yield [split] * len(texts), sources, [len(t) for t in texts] if lengths else texts


def parquet_batches(path: Path, lengths: bool) -> Iterator[tuple[list, list, Any]]:
    """release_batches of rows.parquet, checked batch by batch as the whole table was: every column's UTF-8,
    the release columns there, and split/source text (present), text text or missing (check_cells, the row
    named as in the file)."""
    with release_rows_file(path) as file:
        check_column_names(path, file.schema_arrow.names)
        first = 0  # rows before this batch
        for batch in byte_batches(file, path):  # bounded in bytes: 4,096 captions of 100 KB were 400 MB
            utf8_checked(batch, path, first + 1)
            keys = frame_of(batch.select(["split", "source"]))
            # as diff reads it: str() made a null caption 'nan' (3 characters), a list or bytes their repr
            check_cells(keys, path, ROW_TEXT[:2], present=("split", "source"), first_row=first)
            yield keys["split"].tolist(), keys["source"].tolist(), captions(batch, path, first, lengths)
            first += batch.num_rows


def captions(batch, path: Path, first_row: int, lengths: bool):
    """A batch's text column as lengths (0: no caption) or texts ("" for none), checked by check_cells: a
    column of text (string, large_string, string_view) passes it cell by cell, so it is counted in Arrow."""
    import pyarrow as pa
    import pyarrow.compute as pc

    column = batch.column("text")
    if lengths and reads_as_text(column.type) and not pa.types.is_dictionary(column.type):
        return pc.fill_null(pc.utf8_length(column.cast(pa.large_string())), 0).to_numpy()
    cells = frame_of(batch.select(["text"]))
    check_cells(cells, path, ("text",), first_row=first_row)
    texts = ["" if pd.isna(text) else text for text in cells["text"]]  # no caption: 0 characters
    return [len(text) for text in texts] if lengths else texts


def metadata_batches(folder: Path, hint: str) -> Iterator[tuple[list, list]]:
    """(sources, texts) of folder/metadata.jsonl, lines of about tables.BATCH_BYTES at a time, read line by line with
    read_metadata's rules (cut at "\\n", UTF-8, parse_metadata's records): read whole, 10^5 lines of 2 KB
    took 0.94 GB."""
    from scripts.lib.export import parse_metadata

    path = Path(folder) / "metadata.jsonl"
    if not path.exists():
        raise DataError(f"{path}: not found ({hint})")
    sources: list[str] = []
    texts: list[str] = []
    with open(regular_file(path), "rb") as lines:
        at = held = 0  # bytes before this line; bytes of the lines in this batch
        for line_no, raw in enumerate(lines, start=1):  # binary lines end at b"\n" only (not at U+2028)
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:  # bytes not UTF-8 were a traceback in plots and publish
                raise DataError(f"{shown(path)}: byte {at + exc.start}: not UTF-8 text") from None
            at += len(raw)
            held += len(raw)
            try:
                records = parse_metadata([line], str(path), ("source", "text"))
            except DataError as exc:  # its one line numbers the line within what it was given
                raise DataError(str(exc).replace(f"{path}: line 1:", f"{path}: line {line_no}:", 1)) from None
            for record in records:
                sources.append(str(record["source"]))
                texts.append(str(record["text"]))
            if held >= BATCH_BYTES or len(texts) >= BATCH_MAX_ROWS:  # counted in bytes, as byte_batches
                yield sources, texts
                sources, texts, held = [], [], 0
    if texts:
        yield sources, texts


def read_clean_reports(clean_dir: Path, sources: list[str]) -> dict[str, dict]:
    """source -> its clean report, whose `dropped_by_reason` is checked (dropped_by_reason)."""
    reports = {}
    for source in sources:
        path = table_in(clean_dir, f"{source}.report.json")
        if not path.exists():
            raise DataError(f"{shown(path)}: not found (run clean@{source} first)")
        try:
            # the one file table_in checked, opened once (a link out or FIFO swapped in after the check was read)
            report = loads_json(read_within(path, clean_dir, cap=MAX_REPORT_BYTES, dvc_cache=True).decode("utf-8"))
        except FileNotFoundError:
            raise DataError(f"{shown(path)}: not found (run clean@{source} first)") from None
        except ValueError as exc:  # NaN, 1e999, a lone surrogate (loads_json) said which, not only "not valid"
            raise DataError(f"{shown(path)}: not valid JSON ({shown_short(str(exc), 200)})") from None
        dropped_by_reason(report, path)
        reports[source] = report
    return reports


def dropped_by_reason(report, path: Path | str) -> dict[str, int]:
    """A clean report's rows dropped per rule: an object of counts (whole numbers, not negative). A report
    of another shape (a list, counts as text) was a traceback in clean_removed; now one line naming it."""
    if not isinstance(report, dict):
        raise DataError(f"{shown(path)}: expected a JSON object (a clean report), found {json_kind(report)}")
    if "dropped_by_reason" not in report:
        raise DataError(f"{shown(path)}: no dropped_by_reason (not a clean report; run clean again)")
    counts = report["dropped_by_reason"]
    if not isinstance(counts, dict):
        raise DataError(f"{shown(path)}: dropped_by_reason: expected an object of counts, found {json_kind(counts)}")
    for rule, n in counts.items():
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise DataError(
                f"{shown(path)}: dropped_by_reason: {shown_short(repr(rule))}: expected a count of rows, "
                f"found {json_found(n)}"
            )
    return counts


def read_clusters(dedup_dir: Path, sources: list[str]) -> dict[str, pd.DataFrame]:
    """source -> its clusters table, checked (clusters_table.check_clusters: text ids, numbers in jaccard)."""
    return {s: read_clusters_table(table_in(dedup_dir, f"{s}.clusters.parquet")).to_pandas() for s in sources}


# --- tables (pure) -------------------------------------------------------------------------------


def counted(rows: pd.DataFrame) -> pd.DataFrame:
    """caption_counts' table (chars, rows) of rows one a caption (a `text` column); counts pass as they are."""
    if "text" not in rows.columns:
        return rows
    chars = rows["text"].str.len() if len(rows) else pd.Series([], dtype=int)
    table = rows.assign(chars=chars).groupby(["release", "split", "source", "chars"], sort=False).size()
    return table.rename("rows").reset_index()


def prompt_lengths(rows: pd.DataFrame, bin_width: int) -> pd.DataFrame:
    """Histogram of caption length in characters per release and split; `chars` is the bin start.
    Every bin between the shortest and the longest is listed (0 rows included) so lines stay honest.
    `rows`: caption_counts' table, or one row a caption (counted)."""
    if bin_width < 1:
        raise DataError(f"params.yaml: preview.length_bin: expected a positive integer, got {bin_width!r}")
    if rows.empty:
        return pd.DataFrame(columns=PLOT_FILES["prompt_lengths.csv"])
    counts = counted(rows)
    binned = counts.assign(chars=counts["chars"].astype("int64") // bin_width * bin_width)
    bins = pd.RangeIndex(int(binned["chars"].min()), int(binned["chars"].max()) + 1, bin_width, name="chars")
    frames = []
    for (release, split), group in binned.groupby(["release", "split"], sort=False):
        # one reindex, not a lookup a bin: a caption of 300,000 characters at length_bin 1 took 22 s
        per_bin = group.groupby("chars")["rows"].sum().reindex(bins, fill_value=0).astype(int)
        frames.append(pd.DataFrame({"release": release, "split": split, "chars": bins, "rows": per_bin.to_numpy()}))
    return pd.concat(frames, ignore_index=True)


def source_mix(rows: pd.DataFrame) -> pd.DataFrame:
    """Rows per source in each release and split, with their share of that split (`rows` as prompt_lengths')."""
    counts = counted(rows).groupby(["release", "split", "source"], sort=False)["rows"].sum().reset_index()
    totals = counts.groupby(["release", "split"], sort=False)["rows"].transform("sum")
    counts["share"] = (counts["rows"] / totals).round(4)
    counts["panel"] = counts["release"] + " / " + counts["split"]
    return counts[PLOT_FILES["source_mix.csv"]]


def clean_removed(reports: dict[str, dict]) -> pd.DataFrame:
    """Rows dropped per cleaning rule and source (from data/clean/S.report.json)."""
    records = [
        (source, rule, int(n))
        for source, report in reports.items()
        for rule, n in sorted(dropped_by_reason(report, f"{source}.report.json").items())
    ]
    table = pd.DataFrame(records, columns=["source", "rule", "rows"])
    table["panel"] = table["source"]
    return table[PLOT_FILES["clean_removed.csv"]]


def dedup_cluster_sizes(clusters: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """How many near-duplicate clusters of each size (the kept row + its removed duplicates) per source."""
    frames = []
    for source, table in clusters.items():
        if "duplicate_of" not in table.columns:
            raise DataError(f"data/dedup/{source}.clusters.parquet: no 'duplicate_of' column")
        sizes = table.groupby("duplicate_of").size() + 1
        hist = sizes.value_counts().sort_index()
        frames.append(
            pd.DataFrame(
                {"source": source, "cluster_size": hist.index.astype(int), "clusters": hist.values.astype(int)}
            )
        )
    table = (
        pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["source", "cluster_size", "clusters"])
    )
    table["panel"] = table["source"]
    return table[PLOT_FILES["dedup_clusters.csv"]]


def build_plots(
    releases_dir: Path, clean_dir: Path, dedup_dir: Path, releases: list[str], sources: list[str], length_bin: int
) -> dict[str, pd.DataFrame]:
    """File name -> table, for every file in PLOT_FILES."""
    rows = caption_counts(releases_dir, releases)
    return {
        "prompt_lengths.csv": prompt_lengths(rows, length_bin),
        "source_mix.csv": source_mix(rows),
        "clean_removed.csv": clean_removed(read_clean_reports(clean_dir, sources)),
        "dedup_clusters.csv": dedup_cluster_sizes(read_clusters(dedup_dir, sources)),
    }


def write_csvs(tables: dict[str, pd.DataFrame], output: Path) -> None:
    """Every file written whole, then all renamed in together (commit_together): written one after another,
    a signal between two left the first files of this run beside the others of the previous one."""
    with contextlib.ExitStack() as outputs:
        for name, table in tables.items():
            tmp = outputs.enter_context(atomic_path(output / name))
            table.to_csv(tmp, index=False, lineterminator="\n")
        commit_together(outputs)


# --- stage ---------------------------------------------------------------------------------------


def cli(
    releases_dir: Path = typer.Argument(..., help="data/releases"),
    clean_dir: Path = typer.Argument(..., help="data/clean"),
    dedup_dir: Path = typer.Argument(..., help="data/dedup"),
    output: Path = typer.Argument(..., help="data/plots"),
    plan: Path = typer.Option(None, "--recipe", help="data/recipes/plots.json (default: params.yaml)"),
) -> None:
    """Write the plot data files (see `dvc plots show`)."""
    from scripts.lib.plans import check_plan, plots_plan, written_releases, written_sources

    reads = plots_plan(written_releases(), written_sources())
    if plan is not None:  # dvc.yaml: the file this stage depends on must hold what it reads
        check_plan(plan, reads)
    releases, sources = reads["releases"], reads["sources"]
    length_bin = load_section("preview", missing_ok=True).length_bin
    check_output_kind(output)  # a link to a folder was written through: the CSVs landed in the folder it names
    check_files_ours(*(output / name for name in PLOT_FILES), inputs=[releases_dir, clean_dir, dedup_dir])
    with output_lock(output, whole_run=True):  # a second run at once is refused before it reads, not at its first file
        tables = build_plots(releases_dir, clean_dir, dedup_dir, releases, sources, length_bin)
        write_csvs(tables, output)
    print(shown(f"plots: {len(releases)} releases, {len(sources)} sources -> {output}/ ({', '.join(tables)})"))
