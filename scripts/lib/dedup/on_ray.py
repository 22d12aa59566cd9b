"""Dedup on Ray Data (`runtime.engine: ray`, method minhash): the local engine's result, in steps that
never bring the texts to the driver.

1. sign: `map_batches` over row blocks with the local engine's `sketch_batch` (same bits);
2. identical texts: grouped by sequence key; the best-ranked row of each group represents it;
3. buckets: a few bands per pass, band rows (row, band, key) grouped by a hash of (band, key) into
   `partitions` groups; in each, `bucket_pairs` over the rows in keep order (the local windows);
4. verify: distinct candidates joined with both rows' texts, exact Jaccard (the local code);
5. keep: up to `runtime.driver_edges` verified pairs are resolved on the driver with `keep.assign`;
   more go through large-star/small-star rounds (scripts/lib/dedup/components.py) and each group
   of whole clusters is resolved where it lands. Greedy keep order only looks inside a cluster, so
   both give the local answer. Every grouping is Ray's groupby/join: no scheduler of our own.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

import scripts.lib.dedup.components as components
import scripts.lib.dedup.signing as signing
from scripts.lib import minhash as mh
from scripts.lib import s3_input
from scripts.lib.dedup.keep import report_counts
from scripts.lib.dedup.result import Result
from scripts.lib.dedup.rows import (
    RANKS,
    TEXT_FIELD,
    bucket_rows,
    candidates_in_group,
    distinct_with_text_a,
    id_parts,
    identical_in_group,
    lookup_requests,
    lookup_sources,
    member_edges,
    pair_fields,
    part_of,
    repeated_in_group,
    resolve_edges,
    row_type,
    sign_rows,
    verified_with_text_b,
)
from scripts.lib.dedup.stage_input import check_same_columns, parquet_file, read, shards
from scripts.lib.errors import DataError
from scripts.lib.params import Dedup, Runtime
from scripts.lib.ray_checks import blocks_note, bounded_blocks
from scripts.lib.tables import (
    check_column_names,
    plain_schema,
    plain_texts,
    reads_as_text,
    utf8_checked,
    write_row_groups,
)

BANDS_PER_PASS = 8  # band rows of this many bands are shuffled at once (bounds the shuffle's memory)
# Ray's join goes through Polars and hands strings back as large_string: keys start out that type so that
# rank columns that went through a join and ones that did not concatenate on the driver.
ORDER_KEY = pa.large_string()
# each phase's wall time at INFO: benchmarks/dedup_ray_phases.py shows where the time goes; a stage leaves
# this logger unconfigured, so it prints nothing
log = logging.getLogger(__name__)


@contextlib.contextmanager
def phase(name: str) -> Iterator[None]:
    start = time.perf_counter()
    yield
    log.info("phase %s %.2f s", name, time.perf_counter() - start)


def partitions(runtime: Runtime, rows: int) -> int:
    """Groups of each shuffle: runtime.partitions, else one per 100k rows and at least 2 per worker; at most one
    per row, and over MANY_BLOCKS only with MIN_BLOCK_ROWS rows each (ray_checks.bounded_blocks)."""
    workers = signing.workers(runtime)
    return bounded_blocks(runtime.partitions or max(2 * workers, -(-rows // 100_000)), rows, workers)


def row_blocks(table: pa.Table, runtime: Runtime) -> list[pa.Table]:
    """`table` in blocks of `runtime.batch_rows` rows, fewer where bounded_blocks says so (`batch_rows: 1` made a
    block, a task and a shuffle's row of pieces per row), said in one line; one block of none for no rows."""
    n = table.num_rows
    asked = -(-n // runtime.batch_rows)
    used = bounded_blocks(asked, n, signing.workers(runtime))
    if note := blocks_note(f"batch_rows={runtime.batch_rows}", n, asked, used):
        print(note)
    size = max(1, -(-n // used))
    return [table.slice(lo, size) for lo in range(0, n, size)] or [table]


def dedup_arrays(texts: pa.Array, order_keys, params: Dedup, runtime: Runtime) -> Result:
    """dedup_self on Ray for texts already in memory (release steps, dedup-text)."""
    from scripts.lib.ray_engine import ray_session

    n = len(texts)
    keys = (mh.as_string_array(order_keys) if order_keys is not None else pa.nulls(n, pa.string()).fill_null("")).cast(
        ORDER_KEY
    )
    if len(keys) != n:
        raise DataError(f"order_keys has {len(keys)} values for {n} texts")
    table = pa.table({"row": np.arange(n, dtype=np.int64), "text": texts, "order_key": keys})
    with ray_session(runtime) as ray:
        rows = ray.data.from_arrow(row_blocks(table, runtime))
        removed, stats = run(ray, rows, n, params, runtime)
    keep = np.ones(n, dtype=bool)
    duplicate_of = np.full(n, -1, dtype=np.int64)
    similarity = np.full(n, np.nan)
    keep[removed["row"]] = False
    duplicate_of[removed["row"]] = removed["duplicate_of"]
    similarity[removed["row"]] = removed["similarity"]
    return Result(keep=keep, duplicate_of=duplicate_of, similarity=similarity, stats=stats)


def run(ray, rows, n: int, params: Dedup, runtime: Runtime) -> tuple[dict, dict]:
    """rows: a Dataset of (row, text, order_key). Returns the removed rows (numpy columns row,
    duplicate_of, similarity; sorted by row) and the report's stats, as dedup_self gives them."""
    try:
        return _run(ray, rows, n, params, runtime)
    except (ray.exceptions.RayError, ray.exceptions.RaySystemError) as exc:
        raise DataError(_ray_failure(exc)) from None


def _run(ray, rows, n: int, params: Dedup, runtime: Runtime) -> tuple[dict, dict]:
    parts = partitions(runtime, n)
    if note := blocks_note(f"partitions={runtime.partitions}", n, runtime.partitions, parts):
        print(note)
    bands, _ = signing.banding(params)
    ranks = RANKS[params.keep]
    by_part = dict(batch_format="pyarrow")
    with phase("sign"):
        signed = rows.map_batches(sign_rows, fn_args=(params,), batch_size=runtime.batch_rows, **by_part).materialize()
    no_tokens = n - signed.count()  # sign_rows drops rows without tokens: never anybody's duplicate
    with phase("identical texts"):
        grouped = (
            signed.map_batches(part_of, fn_args=(["seq0"], parts), **by_part)
            .groupby("part")
            .map_groups(identical_in_group, fn_args=(ranks,), **by_part)
            .materialize()
        )
        members = grouped.filter(expr="rep >= 0").map_batches(member_edges, fn_args=(ranks,), **by_part).materialize()
    reps = grouped.filter(expr="rep < 0")
    passes = []
    for lo in range(0, bands, BANDS_PER_PASS):
        band_rows = reps.map_batches(
            bucket_rows, fn_args=(lo, min(bands, lo + BANDS_PER_PASS), ranks, parts, n), **by_part
        )
        passes.append(
            band_rows.groupby("part").map_groups(candidates_in_group, fn_args=(params.bucket_window, ranks), **by_part)
        )
    found = passes[0].union(*passes[1:]) if len(passes) > 1 else passes[0]
    narrow = row_type(n)  # rows travel through the shuffles as narrow as the run allows
    pairs, pairs_a = pair_fields(ranks, rows=narrow), pair_fields(ranks, texts="a", rows=narrow)
    with phase(f"{bands} bands in {len(passes)} passes, then text_a"):
        candidates = (
            found.map_batches(lookup_requests, fn_args=("a", pairs, TEXT_FIELD, parts), **by_part)
            .union(rows.map_batches(lookup_sources, fn_args=("row", pairs, TEXT_FIELD, parts), **by_part))
            .groupby("part")
            .map_groups(distinct_with_text_a, fn_args=(pairs, parts), **by_part)
            .materialize()
        )
    candidate_count = candidates.count()
    with phase("text_b and the exact check"):
        verified = (
            candidates.map_batches(lookup_requests, fn_args=("b", pairs_a, TEXT_FIELD, parts), **by_part)
            .union(rows.map_batches(lookup_sources, fn_args=("row", pairs_a, TEXT_FIELD, parts), **by_part))
            .groupby("part")
            .map_groups(verified_with_text_b, fn_args=(pairs_a, params, runtime.verify_pairs), **by_part)
            .materialize()
        )
    verified_count, member_count = verified.count(), members.count()
    with phase("keep policy"):
        if verified_count + member_count <= runtime.driver_edges:
            removed, sizes = resolve_edges(_collect(ray, verified), _collect(ray, members), ranks, params.keep)
        else:
            removed, sizes = components.resolve(ray, verified, members, ranks, params.keep, parts)
    stats = report_counts(
        n, n - len(removed["row"]), sizes, member_count, candidate_count, verified_count, no_tokens, params
    )
    return removed, {**stats, **signing.banding_stats(params)}


def _collect(ray, dataset) -> pa.Table:
    tables = [ray.get(ref) for ref in dataset.to_arrow_refs()]
    return pa.concat_tables(tables, promote_options="default") if tables else pa.table({})


# --- the dedup@S stage on Ray: sharded parquet in, the local engine's files out -------------------------


def fragments(files: list[Path | str], input: Path | str | None = None) -> tuple[list[dict], pa.Schema]:
    """One item per row group (path, group, first row, rows): Ray tasks read them in parallel, in order.
    `input`: the path the user gave (a file, or the folder of `files`), named in a row's message."""
    items, offset, first = [], 0, None
    for file in files:
        meta = read(file, parquet_file, file)  # any failure: its one line, as the local engine's
        first = first or meta.schema_arrow.remove_metadata()
        check_same_columns(file, meta.schema_arrow, first)
        check_column_names(file, meta.schema_arrow.names)
        for column in ("id", "text"):
            if column not in meta.schema_arrow.names:
                raise DataError(f"{file}: missing column '{column}'")
            kind = meta.schema_arrow.field(column).type
            if not reads_as_text(kind):
                raise DataError(f"{file}: column '{column}' must hold text, found {kind}")
        in_file = 0  # the group's first row in its file, for messages
        for group in range(meta.num_row_groups):
            # read by the path as this process resolves it (a cluster's workers run in their own folders; an
            # s3:// object is read by each worker from the bucket), named as the user gave it
            at = str(file) if s3_input.is_s3(file) else os.path.abspath(file)
            rows = meta.metadata.row_group(group).num_rows
            items.append(
                {
                    **({"input": str(input)} if input is not None else {}),
                    **{"path": at, "shown": str(file), "in_file": in_file, "group": group, "offset": offset},
                    "rows": rows,
                }
            )
            offset += rows
            in_file += rows
    return items, plain_schema(first) if first else pa.schema([])  # as read_fragment gives the rows


def read_fragment(batch: pa.Table, columns: list[str] | None) -> pa.Table:
    """The rows of one row group with their input position `row` (and `order_key` = id)."""
    fields = ("path", "shown", "in_file", "group", "offset")
    (file,), (shown,), (in_file,), (group,), (offset,) = (batch.column(c).to_pylist() for c in fields)
    try:
        table = plain_texts(parquet_file(file).read_row_group(group, columns=columns).replace_schema_metadata(None))
    except FileNotFoundError:
        raise DataError(f"{shown}: input shard vanished during the run") from None
    # checked as the local engine's reads are (the input and its row from 1): bytes that are not UTF-8 went
    # unchecked into the tokenizer here, deduped at exit 0 where the local engine stops with this line
    table = utf8_checked(
        table, batch.column("input")[0].as_py() if "input" in batch.column_names else shown, offset + 1
    )
    for column in [c for c in ("id", "text") if c in table.column_names]:
        nulls = pc.is_null(table.column(column)).to_numpy(zero_copy_only=False)
        if nulls.any():  # the row in its file, counted from 0 as the local engine's message does
            raise DataError(f"{shown}: row {in_file + int(np.argmax(nulls))}: {column} is null")
    table = table.append_column("row", pa.array(np.arange(offset, offset + table.num_rows, dtype=np.int64)))
    return table.append_column("order_key", table.column("id").cast(ORDER_KEY))


def dedup_stage(input: Path | str, output: Path, into: Path, params: Dedup, runtime: Runtime) -> tuple[dict, pa.Table]:
    """dedup@S on Ray: writes the kept rows into `into` (the temp of `output`), byte-identical to the local
    engine; returns the stats and the clusters table (the caller writes it beside the kept rows)."""
    from scripts.lib.ray_engine import S3_CREDENTIALS, ray_session

    items, schema = fragments(shards(input), input)
    # an s3:// input's row groups are read on the workers: the AWS credentials go to them, no other secret
    on_s3 = any(s3_input.is_s3(item["path"]) for item in items)
    with ray_session(runtime, S3_CREDENTIALS if on_s3 else ()) as ray:
        ray.data.DataContext.get_current().execution_options.preserve_order = True  # output in input order
        try:
            ds = ray.data.from_items(items, override_num_blocks=max(1, len(items)))
            # read once: signing, the id check and both text lookups use the rows (blocks spill past the store)
            with phase("read"):
                rows = ds.map_batches(
                    read_fragment, fn_args=(["id", "text"],), batch_size=1, batch_format="pyarrow"
                ).materialize()
            n = rows.count()
            with phase("id check"):
                if _repeated_ids(ray, rows, partitions(runtime, n)):
                    raise DataError(f"{input}: column 'id' has repeated values")
            removed, stats = _run(ray, rows, n, params, runtime)
            with phase("ids of the removed rows"):
                needed = np.union1d(removed["row"], removed["duplicate_of"])
                ids = _ids_of(ray, items, needed)
            with phase("kept rows written"):
                kept = ray.data.from_items(
                    with_rows(items, removed["row"], "gone"), override_num_blocks=len(items) or 1
                )
                kept = kept.map_batches(_kept_rows, batch_size=1, batch_format="pyarrow")
                write_row_groups(kept.iter_batches(batch_size=None, batch_format="pyarrow"), schema, output, into)
        except (ray.exceptions.RayError, ray.exceptions.RaySystemError) as exc:
            raise DataError(_ray_failure(exc)) from None
    at = np.searchsorted(needed, removed["row"]), np.searchsorted(needed, removed["duplicate_of"])
    table = pa.table(
        {
            "id": ids.take(pa.array(at[0])),
            "duplicate_of": ids.take(pa.array(at[1])),
            "jaccard": pa.array(removed["similarity"], type=pa.float64()),
        }
    )
    return stats, table


def _repeated_ids(ray, rows, parts: int) -> int:
    """How many rows repeat an earlier row's id (ids grouped by a hash of their bytes: an int key sorts
    fast in Ray's shuffle, where a groupby on the strings themselves took 4x the whole signing step)."""
    groups = rows.map_batches(id_parts, fn_args=(parts,), batch_format="pyarrow").groupby("part")
    found = _collect(ray, groups.map_groups(repeated_in_group, batch_format="pyarrow"))
    return int(np.sum(found.column("repeated").to_numpy())) if found.num_rows else 0


def with_rows(items: list[dict], rows: np.ndarray, name: str) -> list[dict]:
    """Each row group's item with `name`: the rows of `rows` (sorted positions) inside it, as int64 bytes. A task
    gets the rows of its own row group: the whole array in every task's arguments (100M removed rows of a 1B-row
    input: 800 MB each) and an `isin` against it in each were the cost of the old way, not the rows."""
    starts = np.array([item["offset"] for item in items], dtype=np.int64)
    ends = starts + np.array([item["rows"] for item in items], dtype=np.int64)
    lo, hi = np.searchsorted(rows, starts), np.searchsorted(rows, ends)
    return [{**item, name: rows[a:b].astype(np.int64).tobytes()} for item, a, b in zip(items, lo, hi)]


def _ids_of(ray, items: list[dict], needed: np.ndarray) -> pa.Array:
    """The ids of rows `needed` (sorted positions), in that order, each read from its own row group."""
    wanted = ray.data.from_items(with_rows(items, needed, "wanted"), override_num_blocks=len(items) or 1)
    picked = wanted.map_batches(_picked_ids, batch_size=1, batch_format="pyarrow")
    # a block of no rows comes back as a table of no columns either (an input of empty row groups)
    parts = [part for part in (ray.get(r) for r in picked.to_arrow_refs()) if part.num_rows]
    table = (
        pa.concat_tables(parts, promote_options="default")
        if parts
        else pa.table({"row": pa.array([], pa.int64()), "id": pa.array([], pa.string())})
    )
    order = np.argsort(table.column("row").to_numpy())
    return table.column("id").combine_chunks().take(pa.array(order))


def _rows_in(batch: pa.Table, name: str) -> np.ndarray:
    """The rows `with_rows` put in this row group's item, as places in the group."""
    (offset,), (value,) = batch.column("offset").to_pylist(), batch.column(name).to_pylist()
    return np.frombuffer(value, dtype=np.int64) - offset


def _picked_ids(batch: pa.Table) -> pa.Table:
    wanted = _rows_in(batch, "wanted")
    if not len(wanted):  # no removed row and no kept duplicate here: the group is not read (left out above)
        return pa.table({"row": pa.array([], pa.int64())})
    return read_fragment(batch, ["id"]).select(["row", "id"]).take(pa.array(wanted))


def _kept_rows(batch: pa.Table) -> pa.Table:
    table = read_fragment(batch, None)
    mask = np.ones(table.num_rows, dtype=bool)
    mask[_rows_in(batch, "gone")] = False
    return table.filter(pa.array(mask)).drop_columns(["row", "order_key"])


def _ray_failure(exc: BaseException) -> str:
    """The one line of a failed Ray run: our own DataError's where a task raised one, else what the task raised
    (Ray's own first line was `UserCodeException: UDF failed to process a data block.`, whatever failed)."""
    from scripts.lib.ray_engine import failure_line

    cause = getattr(exc, "cause", None)
    if isinstance(cause, DataError):
        return str(cause)
    # a worker's failed S3 read quotes the server's message, which may echo the credentials
    return s3_input.redact_credentials(failure_line(exc, "dedup"))
