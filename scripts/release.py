"""release@V: write a composed release in its layout, with its card, stats and contact sheet.

    python -m scripts release V data/splits data/releases/V --composed data/compose/V --recipe data/recipes/release/V.json

The rows come from compose@V (`--composed`), or are composed here without it (scripts/compose.py). The
cores are in scripts/lib/: export.py (the layouts), card.py (README.md), paths.py (what may be replaced).
A row the layout leaves out (bucketed: too small for its bucket, ...) is a removed row with reason
`export:<why>`, so stats.json, the card and rows.parquet count what was exported; a split left empty
that way is an error unless the recipe's export says `allow_empty: true`.
Outputs (data/releases/V/): train/ and validation/ in the recipe's `export` layout, removed.parquet,
rows.parquet, stats.json (a DVC metric), preview.jpg (contact sheet) and README.md (a data card).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pandas as pd
import typer

from scripts.compose import ROWS, compose_release, read_composed
from scripts.lib.card import data_card, generation_settings
from scripts.lib.compose import ROW_COLUMNS, composed_table, release_stats
from scripts.lib.errors import DataError
from scripts.lib.export import export_options, write_prompts_release, write_rows_table, write_split
from scripts.lib.io import SPLITS, check_not_input, staging_dir, write_json
from scripts.lib.marks import mark_folder
from scripts.lib.params import Preview, Source, load_section
from scripts.lib.paths import check_composed_rows, check_ids_apart, check_output, move_into_place
from scripts.lib.plans import check_plan, plan_releases, plan_sources, release_plan, written_releases, written_sources
from scripts.lib.recipe import Recipe, resolve_recipe, source_roots
from scripts.lib.release_images import SourceRoots, check_folder_links, of_row
from scripts.lib.safe_paths import table_in
from scripts.lib.tables import ParquetChunks, check_table, read_parquet, write_parquet

# layouts written a chunk of rows at a time (text only: an image layout holds its rows)
STREAMED_LAYOUTS = ("prompts",)


def without_unexported(rows: pd.DataFrame, removed: pd.DataFrame, dropped: dict[str, str]):
    """(exported rows, removed rows + the rows the layout left out with reason `export:<why>`)."""
    if not dropped:
        return rows, removed
    out = rows["id"].isin(list(dropped))
    left_out = rows[out].assign(reason=["export:" + dropped[i] for i in rows.loc[out, "id"]])[ROW_COLUMNS + ["reason"]]
    return rows[~out].reset_index(drop=True), pd.concat([removed, left_out], ignore_index=True)


def check_exported(
    recipe: Recipe, fmt: str, before: pd.DataFrame, after: pd.DataFrame, dropped: dict[str, str]
) -> None:
    """A split the recipe gave rows and the layout left empty is an error unless `allow_empty`."""
    if recipe.export.allow_empty:
        return
    for split in SPLITS:
        in_split = (before["split"] == split).to_numpy()
        if not in_split.any() or (after["split"] == split).any():
            continue
        given = before[in_split]  # only here: a copy of a split's rows costs as much as the split
        reasons = pd.Series([dropped[i] for i in given["id"]]).value_counts()
        why = ", ".join(f"{n} {reason}" for reason, n in reasons.items())
        small = given.assign(edge=given[["width", "height"]].min(axis=1)).sort_values("edge").iloc[0]
        raise DataError(
            f"params.yaml: releases.{recipe.name}.export: the {fmt} export kept 0 of {len(given)} "
            f"{split} rows ({why}; the smallest image is {small['width']}x{small['height']}): fit the "
            "export to the images (bucketed: base_resolution) or set allow_empty: true"
        )


def check_layout_takes(recipe: Recipe, sources: dict[str, Source], fmt: str) -> None:
    """Rows of a text-only source have no image: only the `prompts` layout takes them."""
    for component in recipe.all_components():
        if fmt != "prompts" and sources[component.source].text_only:
            raise DataError(
                f"params.yaml: releases.{recipe.name}: source {component.source!r} is text_only (no images): "
                f"its release needs export: prompts, not {fmt}"
            )


def read_split_records(splits: Path, names: list[str]) -> tuple[dict[str, list[dict]], dict[tuple[str, str], str]]:
    """(source -> the settings that rendered its images, (source, id) -> the sha256 the row records for its
    image), from the `generation`, `id` and `image_sha256` columns of the sources' split tables (a carried
    image, or a table from before image_sha256, records none)."""
    settings, digests = {}, {}
    for name in names:
        values, files = [], []  # files: (table, its rows), so a bad `generation` value names its row
        for split in SPLITS:
            path = table_in(splits, name, f"{split}.parquet")
            table = read_parquet(path, columns=["generation", "id", "image_sha256"]) if path.is_file() else None
            if table is None:
                continue
            if "generation" in table:
                values += table["generation"].tolist()
                files.append((path, len(table)))
            if "image_sha256" in table:
                pairs = zip(table["id"], table["image_sha256"])
                digests.update(((name, i), sha) for i, sha in pairs if isinstance(sha, str))
        settings[name] = generation_settings(values, files)
    return settings, digests


def cli(
    name: str = typer.Argument(..., help="release name in params.yaml: releases"),
    splits: Path = typer.Argument(..., help="data/splits (one folder per source)"),
    output: Path = typer.Argument(..., help="data/releases/V"),
    rules: Path = typer.Option(Path("data/clean/rules.json"), "--rules", help="compiled cleaning rules (clean steps)"),
    positions: Path = typer.Option(
        Path("data/prefilter"),
        "--positions",
        help="prefilter@S outputs: each row's place in its source's generation list (row ranges)",
    ),
    composed: Path = typer.Option(None, "--composed", help="data/compose/V (compose@V's rows; default: compose here)"),
    plan: Path = typer.Option(None, "--recipe", help="data/recipes/release/V.json (default: params.yaml releases)"),
) -> None:
    """Write a release from per-source splits by its recipe."""
    reads = release_plan(name, written_releases(), written_sources())
    if plan is not None:  # dvc.yaml: the file this stage depends on must hold what it reads
        check_plan(plan, reads)
    check_not_input(output, [splits, rules, composed, positions])
    check_output(output)  # before any work: a mistyped output path fails at once, in one line
    sources = plan_sources(reads)
    recipe = resolve_recipe(name, plan_releases(reads))
    roots = source_roots(sources, recipe)  # a component of an unknown source: one line, before any work
    check_folder_links(sources, roots)  # a source folder that is a link out: its target was the root
    text_only = frozenset(source for source, entry in sources.items() if entry.text_only)
    fmt, options = export_options(recipe.export.spec(), f"params.yaml: releases.{name}")
    check_layout_takes(recipe, sources, fmt)
    streamed = composed is not None and fmt in STREAMED_LAYOUTS  # the rows stream from rows.parquet
    if composed is None:
        recipe, rows, removed = compose_release(name, reads, splits, rules, positions, f"release@{name}")
    else:
        rows, removed = read_composed(composed, ["id", "source", "split"] if streamed else ROW_COLUMNS)
        rows_file = table_in(composed, ROWS)  # the streamed reads: one open, in the folder (and its ids: rows')
        if streamed:  # each chunk is checked as it is written (checked_chunks), the ids across them here
            check_table(rows, composed / ROWS, strings=("id", "source", "split"), unique="id")
        else:  # any folder may be named: its rows are checked as compose@V checks the split tables'
            check_composed_rows(rows, composed / ROWS, roots, text_only)
        check_ids_apart(rows["id"], composed / ROWS)  # a hand-edited rows.parquet: compose@V checks its own
    names = sorted({c.source for c in recipe.all_components()})
    generation, digests = read_split_records(splits, names)
    if not streamed:  # each rendered image is checked against the sha256 generate recorded, where it is read
        rows = rows.assign(image_sha256=[digests.get(key) for key in zip(rows["source"], rows["id"])])
    from scripts.lib.progress import Progress

    # each image is checked in its source's folders on the file it is read from (the rows were, by name)
    confined = SourceRoots(roots)

    # Everything is written into a staging folder first and moved into place only at the end, so a
    # bad image or a crash leaves the previous release whole (never train new and validation old).
    with staging_dir(output) as staging:  # locked; a killed run's staging folder goes on the next run
        dropped: dict[str, str] = {}
        unit = "rows" if fmt == "prompts" else "images"
        with Progress(f"release@{name}", total=len(rows), unit=unit) as progress:
            if streamed:
                chunks = ParquetChunks(rows_file, load_section("runtime", missing_ok=True).stream_rows)
                write_prompts_release(
                    checked_chunks(chunks.frames(), rows_file, roots, text_only, rows["id"]), staging, progress.advance
                )
            else:
                for part in SPLITS:
                    split_rows = rows[rows["split"] == part]
                    write_split(split_rows, staging / part, fmt, options, progress.advance, dropped, confined)
                    mark_folder(staging / part)
        exported, removed = without_unexported(rows, removed, dropped)
        check_exported(recipe, fmt, rows, exported, dropped)
        stats = release_stats(exported, removed)
        card = data_card(
            recipe,
            stats,
            sources,
            load_section("dedup", missing_ok=True),
            load_section("split", missing_ok=True),
            generation,
        )
        if streamed:  # the sample's texts from the file: `exported` holds ids, sources and splits only
            write_preview(exported["id"], lambda ids: rows_of(rows_file, ids), staging / "preview.jpg", roots=confined)
        else:
            write_preview(
                exported["id"], lambda ids: exported.set_index("id").loc[ids], staging / "preview.jpg", roots=confined
            )
        write_parquet(composed_table(removed), staging / "removed.parquet")
        (staging / "README.md").write_text(card, encoding="utf-8")
        write_json(stats, staging / "stats.json")
        if not streamed:  # rows.parquet: the release's rows, whatever the layout (streamed: written above)
            write_rows_table(exported.drop(columns="image_sha256"), staging)  # the release's images' sha256
        move_into_place(staging, output)
    print(
        f"release@{name}: train {stats['rows']['train']}, validation {stats['rows']['validation']}, removed {stats['removed']['total']}"
    )


def checked_chunks(chunks: Iterator[pd.DataFrame], path: Path, roots: dict, text_only: frozenset[str], ids: pd.Series):
    """The chunks of a composed rows.parquet, each checked (check_composed_rows) before it is written, and
    holding the `ids` read (and checked) before, in order: a rows.parquet renamed over the name between the
    two reads was streamed unchecked, under the card and stats of the first."""
    first = 1
    for chunk in chunks:
        if (
            not chunk["id"]
            .reset_index(drop=True)
            .equals(ids.iloc[first - 1 : first - 1 + len(chunk)].reset_index(drop=True))
        ):
            raise DataError(
                f"{path}: changed while it was read (its ids differ from the first read); refusing to mix two"
            )
        check_composed_rows(chunk, path, roots, text_only, first)
        first += len(chunk)
        yield chunk


def rows_of(path: Path, ids: list[str]) -> pd.DataFrame:
    """The rows of `ids` (id-indexed, in that order) from a parquet file, read a row group at a time."""
    import pyarrow.parquet as pq

    from scripts.lib.tables import parquet_source

    columns = ["id", "text", "image", "source"]  # source: where the preview checks each image (SourceRoots)
    table = None
    if ids:
        with parquet_source(path) as source:  # the file the rows were streamed from, never the name again
            table = pq.read_table(source, columns=columns, filters=[("id", "in", ids)])
    return (table.to_pandas() if table is not None else pd.DataFrame(columns=columns)).set_index("id").loc[ids]


def write_preview(
    ids: pd.Series, rows_of: Callable, output: Path, geometry: Preview | None = None, roots: SourceRoots | None = None
) -> None:
    """preview.jpg: contact sheet of a deterministic sample of `ids` (the ids whose sha256 sorts first),
    whose text and image `rows_of(sample ids)` gives (indexed by id); the images come from the image
    store, so it looks the same whatever the export layout; a row without an image (a text-only release)
    is a grey box over its caption. `roots`: where each source's images may be (export.write_split's)."""
    import io

    from scripts.lib.export import image_check, recorded_image_bytes
    from scripts.lib.preview import contact_sheet, sample_ids

    geometry = geometry or load_section("preview", missing_ok=True)
    sample = rows_of(sample_ids(ids, geometry.columns * geometry.rows))

    def picture(ref, sha256, row_id, source):
        if not (isinstance(ref, str) and ref):
            return None
        with of_row(row_id, source):
            return io.BytesIO(recorded_image_bytes(ref, sha256, image_check(roots, row_id, source)))

    digests = sample["image_sha256"] if "image_sha256" in sample else [None] * len(sample)
    sources = sample["source"] if "source" in sample else [None] * len(sample)
    columns = zip(sample["image"], sample["text"], digests, sample.index, sources)
    items = [(picture(image, sha, row_id, source), str(text)) for image, text, sha, row_id, source in columns]
    contact_sheet(items, geometry).save(output, format="JPEG", quality=geometry.quality)
