"""`python -m scripts dedup-preview S`: the near-duplicate sheet of a source from existing dedup outputs.

A cluster shows at most ROWS_SHOWN removed rows (the most similar), its caption telling how many more: a
cluster of 100,000 removed rows was a 12.6 MB page of 100,001 table rows, built in 8 s (10^6: ~126 MB)."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import typer

from scripts.lib.errors import DataError
from scripts.lib.io import atomic_path, check_not_input, shown
from scripts.lib.params import load_section
from scripts.lib.temps import output_lock

ROWS_SHOWN = 100  # removed rows shown per cluster: a page a reviewer reads, whatever the cluster's size


def check_source_name(source: str) -> None:
    """A plain name: it is joined into --data's paths, so `/`, `..` or NUL would read and write elsewhere."""
    if not source or source in (".", "..") or any(c in source for c in "/\\\0"):
        raise DataError(f"{shown(repr(source))}: not a source name (a plain name such as diffusiondb)")


def capped_clusters(clusters: pa.Table, n: int, cap: int = ROWS_SHOWN):
    """preview.largest_clusters' n largest clusters, each cut to its `cap` most similar removed rows (Jaccard
    highest first, then id), and {kept id: removed rows in all}. Cut in Arrow: only the rows shown become
    Python objects (largest_clusters made every row of a 10^6-row cluster one, then sorted them)."""
    from scripts.lib.preview import Clusters

    ids = [clusters.column(c).cast(pa.large_string()) for c in ("id", "duplicate_of")]
    sizes = pa.table({"kid": ids[1]}).group_by("kid").aggregate([([], "count_all")])
    top = sizes.sort_by([("count_all", "descending"), ("kid", "ascending")]).slice(0, max(0, n))
    rows = pa.table({"kid": ids[1], "jaccard": clusters.column("jaccard").cast(pa.float64()), "rid": ids[0]})
    rows = rows.filter(pc.is_in(ids[1], value_set=top.column("kid").combine_chunks()))
    rows = rows.sort_by([("kid", "ascending"), ("jaccard", "descending"), ("rid", "ascending")])
    in_kid_order = top.sort_by([("kid", "ascending")])
    picked, start = [], 0
    for count in in_kid_order.column("count_all").to_pylist():  # each cluster's rows are one run, kid order
        picked.extend(range(start, start + min(count, cap)))
        start += count
    shown_rows: dict[str, list[tuple[float, str]]] = {kid: [] for kid in top.column("kid").to_pylist()}
    cut = rows.take(pa.array(picked, pa.int64()))
    for kid, jac, rid in zip(*(cut.column(c).to_pylist() for c in ("kid", "jaccard", "rid"))):
        shown_rows[kid].append((float(jac), rid))
    totals = dict(zip(top.column("kid").to_pylist(), top.column("count_all").to_pylist()))
    return Clusters(sizes.num_rows, clusters.num_rows, list(shown_rows.items())), totals


def with_more(page: str, largest: list, totals: dict[str, int]) -> str:
    """Each cut cluster's caption told with its full size and how many removed rows are not shown."""
    for number, (kid, rows) in enumerate(largest, start=1):
        if (more := totals[kid] - len(rows)) > 0:
            head = f'<table class="cluster" id="cluster-{number}">\n<caption>cluster {number}: '
            page = page.replace(
                f"{head}{len(rows) + 1} rows</caption>",  # unique: every text on the page is escaped
                f"{head}{totals[kid] + 1:,} rows; the {len(rows):,} most similar removed rows shown, "
                f"and {more:,} more</caption>",
                1,
            )
    return page


def capped_page(source: str, clean_path: Path, dedup_path: Path, clusters_path: Path, n: int) -> str:
    """preview.dedup_preview_page, with each cluster cut to ROWS_SHOWN removed rows (the same checks first)."""
    from scripts.lib.clusters_table import CLUSTER_COLUMNS, check_clusters, check_clusters_columns
    from scripts.lib.dedup.stage_input import open_parquet, read
    from scripts.lib.preview import cluster_page, texts_by_id
    from scripts.lib.tables import reads_as_text

    clean, clusters_files, dedup = (open_parquet(p) for p in (clean_path, clusters_path, dedup_path))
    check_clusters_columns(clusters_path, clusters_files[0].schema_arrow.names)
    for path, files in ((dedup_path, dedup), (clean_path, clean)):
        schema = files[0].schema_arrow
        if missing := [c for c in ("id", "text") if c not in schema.names]:
            raise DataError(f"{shown(path)}: no column(s) {', '.join(missing)}")
        if not reads_as_text(schema.field("id").type):  # a list column failed the cast to text
            raise DataError(f"{shown(path)}: column 'id' must hold text, found {schema.field('id').type}")
    clusters = read(clusters_path, clusters_files[0].read, columns=list(CLUSTER_COLUMNS))
    check_clusters(clusters, clusters_path)  # text in jaccard, a null duplicate_of: one line, not a traceback
    picked, totals = capped_clusters(clusters, n)
    page = cluster_page(
        picked,
        texts_by_id(dedup_path, dedup, [kid for kid, _ in picked.largest]),
        texts_by_id(clean_path, clean, [rid for _, rows in picked.largest for _, rid in rows]),
        title=f"dedup@{source}: largest near-duplicate clusters",
    )
    return with_more(page, picked.largest, totals)


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
        page = capped_page(source, *inputs, clusters, n)
        with atomic_path(output) as tmp:
            tmp.write_text(page, encoding="utf-8")
    print(shown(f"dedup-preview {source}: -> {output}"))
