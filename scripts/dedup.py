"""dedup@S and dedup-text: near-duplicate removal commands over the core in scripts/lib/dedup/.

dedup@S reads data/clean/S.parquet and writes the kept rows, S.clusters.parquet (every removed `id`,
the `duplicate_of` id and their similarity in column `jaccard`, cosine with method embedding: the
column name is the contract's), S.report.json and S.preview.html. `runtime.engine: ray` runs the
minhash method on Ray Data with the same output bytes. The names re-exported below are the API that
release.py, prefilter.py, the tests and the benchmarks import from here.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np
import pyarrow as pa
import typer

from scripts.lib.dedup import (
    SPEED_KEYS,
    EmbeddingIndex,
    Index,
    MinHashIndex,
    Result,
    banding,
    build_index,
    dedup_against,
    dedup_self,
    keep_mask,
    near_duplicate_mask,
    resolve_params,
)
from scripts.lib.dedup.embedded import embed as _embed
from scripts.lib.dedup.stage_input import StageInput, check_unchanged, input_state, release_arrow_memory
from scripts.lib.errors import DataError
from scripts.lib.io import atomic_path, check_files_ours, commit_together, json_text, shown, writing
from scripts.lib.nesting import dumps_json
from scripts.lib.params import Dedup, Runtime, load_section, section_or_default
from scripts.lib.s3_input import is_s3
from scripts.lib.tables import write_row_groups
from scripts.lib.text_lines import decode_lines, line_batches, text_input

DedupParams = Dedup  # the `dedup:` section's model; Dedup() = the documented defaults

__all__ = [
    "SPEED_KEYS",
    "DedupParams",
    "EmbeddingIndex",
    "Index",
    "MinHashIndex",
    "Result",
    "banding",
    "build_index",
    "dedup_against",
    "dedup_self",
    "embed",
    "keep_mask",
    "near_duplicate_mask",
    "resolve_params",
]


def embed(texts, params=None) -> np.ndarray:
    """float32[n, dim] unit-length embeddings of `texts` (what method embedding compares); blank -> zero row."""
    from scripts.lib import minhash as mh

    return _embed(mh.as_string_array(texts), resolve_params(params))


def runtime_section() -> Runtime:
    return section_or_default("runtime", Runtime())


# --- dedup@S -----------------------------------------------------------------------------------------


def read_stage_input(path: Path) -> pa.Table:
    """The whole stage input as one table, checked as the stage checks it (the stage itself never holds it)."""
    source = StageInput(path)
    return pa.concat_tables([source.schema.empty_table(), *source.tables()])


def write_table(table: pa.Table, path: Path, into: Path | None = None) -> None:
    table = table.replace_schema_metadata(None)
    write_row_groups([table], table.schema, path, into)  # the Ray engine's bytes however the input was chunked


def clusters_table(ids: pa.Array, result: Result, params: Dedup) -> pa.Table:
    """S.clusters.parquet: each removed id, the id it duplicates, their similarity (in input order)."""
    removed = np.nonzero(~result.keep)[0]
    similarity = result.similarity[removed]
    if params.method == "embedding":  # float32 encoders differ in the last bits across devices/batches
        similarity = np.round(similarity, 6)
    return pa.table(
        {
            "id": ids.take(pa.array(removed)),
            "duplicate_of": ids.take(pa.array(result.duplicate_of[removed])),
            "jaccard": pa.array(similarity, type=pa.float64()),
        }
    )


def stage_report(source: str, stats: dict, params: Dedup) -> dict:
    if params.method == "embedding":
        return {"source": source, **stats, "method": "embedding", "model": params.embedding_model, "keep": params.keep}
    # minhash: the keys the default pipeline's report has always had
    return {
        "source": source,
        **stats,
        "num_perm": params.num_perm,
        "ngram": params.ngram,
        "unit": params.unit,
        "keep": params.keep,
    }


def cli(
    source: str = typer.Argument(..., help="source name in params.yaml: sources"),
    location: str = typer.Argument(
        ...,
        metavar="INPUT",
        help="data/clean/S.parquet, a folder of parquet shards or s3://bucket/prefix (dedup runs on column `text`)",
    ),
    output: Path = typer.Argument(..., help="data/dedup/S.parquet; S.clusters.parquet and S.report.json go beside it"),
) -> None:
    """Remove near-duplicate rows of one source (MinHash-LSH + exact Jaccard, or embeddings + exact cosine)."""
    input: Path | str = location if is_s3(location) else Path(location)  # Path() would fold s3:// into s3:/
    params, setting = source_params(load_section("dedup"), source)
    runtime = runtime_section()
    stem = output.name.removesuffix(".parquet")
    clusters_path, report_path, preview_path = (
        output.parent / f"{stem}{suffix}" for suffix in (".clusters.parquet", ".report.json", ".preview.html")
    )
    outputs = (output, clusters_path, report_path, preview_path)
    check_files_ours(*outputs, inputs=[] if is_s3(input) else [input])
    before = input_state(input)  # checked again before the outputs go in (check_unchanged)
    with contextlib.ExitStack() as stack:  # the four written whole before any is renamed in (a full disk left some)
        kept_tmp, clusters_tmp, report_tmp, page_tmp = (stack.enter_context(atomic_path(p)) for p in outputs)
        if setting is False:  # the source's rows pass untouched (its near-duplicates are left to the recipes)
            rows = StageInput(input, runtime.stream_rows)
            n = len(rows)
            result = Result(
                np.ones(n, dtype=bool),
                np.full(n, -1, dtype=np.int64),
                np.full(n, np.nan),
                {"rows_in": n, "kept": n, "removed": 0},
            )
            write_row_groups(rows.tables(), rows.schema, output, kept_tmp)
            stats, clusters = result.stats, clusters_table(rows.ids, result, params)
        elif runtime.engine == "ray" and params.method == "minhash":
            from scripts.lib.dedup.on_ray import dedup_stage

            stats, clusters = dedup_stage(input, output, kept_tmp, params, runtime)
        else:  # the input is read as each step needs it (scripts/lib/dedup/stage_input.py), never held whole
            rows = StageInput(input, runtime.stream_rows)
            result = dedup_self(rows, rows.ids, params, runtime.model_copy(update={"engine": "local"}))
            release_arrow_memory()  # verification's texts, before the kept rows' row groups
            write_row_groups(rows.tables(result.keep), rows.schema, output, kept_tmp)
            stats, clusters = result.stats, clusters_table(rows.ids, result, params)
        write_table(clusters, clusters_path, clusters_tmp)
        report = (
            {"source": source, **stats, "method": "off"} if setting is False else stage_report(source, stats, params)
        )
        with writing(report_path):
            report_tmp.write_text(json_text(report), encoding="utf-8")
        page = preview_page(source, input, kept_tmp, clusters_tmp)
        page_tmp.write_text(page, encoding="utf-8")  # the innermost: its own errors name it
        check_unchanged(input, before)
        commit_together(stack)
    print(shown(f"dedup {source}: {report['rows_in']} rows -> {report['kept']} kept, {report['removed']} removed"))


def source_params(params: Dedup, source: str) -> tuple[Dedup, object]:
    """(the `dedup:` section with `sources.<source>.dedup`'s overrides, that setting: True, False or a mapping)."""
    sources = load_section("sources", missing_ok=True) or {}
    setting = sources[source].dedup if source in sources else True
    if isinstance(setting, bool):
        return params, setting
    return params.replace(**setting.overrides()), setting


def preview_page(source: str, input: Path | str, kept: Path, clusters: Path) -> str:
    """data/dedup/S.preview.html: the largest clusters, kept vs removed texts (params preview.dedup_clusters)."""
    from scripts.lib.preview import dedup_preview_page

    return dedup_preview_page(source, input, kept, clusters, load_section("preview", missing_ok=True).dedup_clusters)


# --- dedup-text ----------------------------------------------------------------------------------------


def cli_text(
    input: Path = typer.Argument(..., help="text file, one text per line"),
    output: Path = typer.Argument(..., help="JSONL, one {keep, duplicate_of} per input line"),
    threshold: float | None = typer.Option(
        None,
        help="similarity threshold: Jaccard, or cosine with dedup.method "
        "embedding (default: params.yaml dedup.threshold, else 0.7)",
    ),
) -> None:
    """Near-duplicate flags for a text file; an empty line (no tokens) is always kept.

    Works outside a DVC repo: without params.yaml (or its `dedup:` section) the documented
    defaults (docs/params.md#dedup) apply.
    """
    params = section_or_default("dedup", Dedup())
    if threshold is not None:
        if not 0.0 < threshold <= 1.0:
            raise DataError(f"--threshold must be in (0, 1], got {threshold}")
        params = params.replace(threshold=threshold)
    check_files_ours(output, inputs=[input])
    result = dedup_self(read_lines(input), None, params, runtime_section())
    with atomic_path(output) as tmp, tmp.open("w", encoding="utf-8") as f:
        for keep, dup in zip(result.keep.tolist(), result.duplicate_of.tolist()):
            f.write(dumps_json({"keep": keep, "duplicate_of": None if keep else dup}, output) + "\n")


def read_lines(path: Path) -> list[str]:
    """The file's lines, each capped as ingest caps a text line (a newline-free file was read whole)."""
    lines: list[str] = []
    with text_input(path).open("rb") as f:
        for batch in line_batches(f, path):
            lines += decode_lines(batch, path, len(lines))
    return lines
