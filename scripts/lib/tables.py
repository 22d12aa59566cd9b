"""Parquet tables in and out of a stage: byte-stable writes (whole, or row group by row group, always
through io.atomic_path) and checked reads of a stage's inputs (whole, by columns, or in chunks), whose
bad input is one line naming the file (and the row, where there is one). It is over 500 lines as one job: the
stages' dvc.yaml deps name this file for every parquet read and write, and a text column's checks (layouts,
UTF-8) are part of each read.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from scripts.lib.errors import DataError, shown, shown_short
from scripts.lib.io import atomic_path, writing
from scripts.lib.side_files import held_open, open_regular


def is_text_type(kind) -> bool:
    """string or large_string: the two ways parquet gives back a text column."""
    import pyarrow as pa

    return pa.types.is_string(kind) or pa.types.is_large_string(kind)


def reads_as_text(kind) -> bool:
    """A type every stage reads as texts: string, large_string, string_view (Arrow's newer layout, which pyarrow
    16+ and polars write) or a dictionary of one of them (a pandas category). ingest and clean read them all;
    dedup refused the last two in clean's own output (clean keeps an `id` column as it found it)."""
    import pyarrow as pa

    if pa.types.is_dictionary(kind):
        kind = kind.value_type
    return is_text_type(kind) or pa.types.is_string_view(kind)


def plain_type(kind):
    """The type plain_texts reads `kind` as: large_string for a string_view or a dictionary of texts, else itself."""
    import pyarrow as pa

    return pa.large_string() if reads_as_text(kind) and not is_text_type(kind) else kind


def plain_texts(rows):
    """`rows` (a pyarrow table or batch) with each string_view or dictionary-of-text column as large_string, the
    layout the text steps take; a dictionary is decoded a read at a time, the memory of the plain column it
    stands for, so a table of 1B rows costs what its plain form would."""
    for i, field in enumerate(rows.schema):
        if (kind := plain_type(field.type)) != field.type:
            rows = rows.set_column(i, field.with_type(kind), rows.column(i).cast(kind))
    return rows


def plain_schema(schema):
    """`schema` as plain_texts leaves its rows."""
    import pyarrow as pa

    return pa.schema([f.with_type(plain_type(f.type)) for f in schema], metadata=schema.metadata)


def check_column_names(path: Path | str, names) -> None:
    """A column name twice (pyarrow writes such files; looking the column up then fails) is one line."""
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise DataError(f"{shown(path)}: column {shown_short(name)!r} appears twice; a column name must be unique")
        seen.add(name)


def utf8_checked(rows, path: Path | str, first_row: int = 1):
    """`rows` (a pyarrow table or batch read from `path`, `first_row` the file's row number of its first) when
    every text in it is UTF-8. Parquet stores a string as bytes and pyarrow reads them unchecked: a file another
    tool wrote with invalid bytes in a text column was a traceback wherever the texts were first used (to_pandas,
    the tokenizer, a preview), or was passed on at exit 0. A full validation is one pass over the bytes (about
    20 ms a million 90-byte prompts); the row named is found only once one fails."""
    for name, column in zip(rows.schema.names, rows.columns):
        if not _valid(column):
            row = _first_invalid(column)
            where = f", first in row {first_row + row}" if row is not None else ""
            raise DataError(
                f"{shown(path)}: column {shown(name)!r} holds invalid data, such as text that is not UTF-8{where}"
            )
    return rows


def _valid(values) -> bool:
    import pyarrow as pa

    try:
        values.validate(full=True)
    except pa.ArrowInvalid:
        return False
    return True


def _first_invalid(column) -> int | None:
    """The first row of `column` (which fails a full validation) that fails it alone, found by halving the rows
    still in question (a text's UTF-8 is its own: n/2 + n/4 + ... rows validated again, not log n passes);
    Arrow's own message counts within a read batch, not the file. None: no one row is at fault."""
    import pyarrow as pa

    if pa.types.is_dictionary(column.type):  # a slice keeps the whole dictionary: halve the values it stands for
        try:
            column = column.cast(column.type.value_type)
        except pa.ArrowInvalid:  # an index out of its dictionary: no row's text to name
            return None
    lo, hi = 0, len(column)  # the first invalid row lies in [lo, hi)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if _valid(column.slice(lo, mid - lo)):
            lo = mid
        else:
            hi = mid
    return lo if hi > lo and not _valid(column.slice(lo, 1)) else None


def frame_of(rows):
    """A pyarrow table or batch as a DataFrame, by its columns alone. A file's `pandas` schema metadata is its
    writer's (ours write none): read, it named the index (an `id` column vanished from clean's output), renamed
    columns (`meta` cleaned as the prompt) and, as bad JSON, was a traceback."""
    return rows.replace_schema_metadata(None).to_pandas()


def arrow_table(df):
    """A DataFrame as pyarrow, without the pandas index or metadata (it embeds versions): byte-stable."""
    import pyarrow as pa

    return pa.Table.from_pandas(df, preserve_index=False).replace_schema_metadata(None)


def write_parquet(df, path: Path | str) -> None:
    """Write a DataFrame as parquet atomically, without the pandas index (byte-stable)."""
    table = arrow_table(df)  # before the output is touched: a bad frame fails here
    with atomic_path(path) as tmp:
        write_parquet_file(table, tmp)


def write_parquet_file(table, tmp: Path) -> None:
    """write_parquet's bytes (a DataFrame, or arrow_table's table) into `tmp`, a caller's atomic_path:
    for outputs that appear together."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = table if isinstance(table, pa.Table) else arrow_table(table)
    with open(tmp, "wb") as sink:  # a file object: pyarrow cannot encode a non-UTF-8 name
        pq.write_table(table, sink, compression="zstd")


PARQUET_ROW_GROUP = 1024 * 1024  # pyarrow's default row group size, written out


def write_row_groups(tables, schema, path: Path | str, into: Path | None = None) -> None:
    """Tables (pyarrow, in order) into one parquet file atomically (see row_groups_to); with `into` (a
    temp of the caller's atomic_path, for outputs that appear together) into that file, named `path`."""
    with row_groups_to(path, schema) if into is None else row_groups_into(into, schema, path) as out:
        for table in tables:
            out.add(table)


@contextlib.contextmanager
def row_groups_to(path: Path | str, schema=None) -> Iterator[RowGroups]:
    """A parquet file written table by table, atomically: nothing reaches `path` unless the block succeeds.

    with row_groups_to(path) as out:   # schema: the first table's, when not given
        for table in tables:
            out.add(table)
    """
    with atomic_path(path) as tmp, row_groups_into(tmp, schema, path) as out:
        yield out


@contextlib.contextmanager
def row_groups_into(tmp: Path, schema, path: Path | str) -> Iterator[RowGroups]:
    """row_groups_to's writer into `tmp`, an atomic_path's temp (errors name `path`, the output)."""
    sink = open(tmp, "wb")  # noqa: SIM115  # a file object: pyarrow cannot encode a non-UTF-8 name
    out = RowGroups(sink, schema, path)
    try:
        yield out
        out.finish()
    except BaseException:  # the writer, then its file, even when interrupted; a full disk failing their
        for close in (out.close, sink.close):  # flush again is no news (it hid the first error's file name)
            with contextlib.suppress(Exception):
                close()
        raise
    with writing(path):
        sink.close()


class RowGroups:
    """Rows into row groups of PARQUET_ROW_GROUP rows, each handed to pyarrow as one contiguous chunk:
    pyarrow's pages follow the chunks it gets, so the bytes are those `pq.write_table` gives the whole
    table, however a reader or an engine chunked the rows. Holds at most one row group."""

    def __init__(self, sink, schema, path: Path | str):
        self.sink, self.schema, self.path = sink, schema, path
        self.pending: list = []
        self.held = self.written = 0
        self.writer: Any = None  # pq.ParquetWriter, opened with the first row group
        self.finished = False

    def add(self, table) -> None:
        import pyarrow as pa

        if self.schema is None:
            self.schema = table.schema
        self.pending.append(table.cast(self.schema))
        self.held += table.num_rows
        while self.held >= PARQUET_ROW_GROUP:
            rows = pa.concat_tables(self.pending)
            self._write(rows.slice(0, PARQUET_ROW_GROUP))
            self.pending, self.held = [rows.slice(PARQUET_ROW_GROUP)], self.held - PARQUET_ROW_GROUP

    def finish(self) -> None:
        """Write the last rows and the footer, and flush: every byte is on disk (a full disk fails here,
        before any output of the command is renamed into place). Once; later calls do nothing."""
        import pyarrow as pa

        if self.finished:
            return
        if self.schema is None:
            raise DataError(f"{self.path}: nothing to write (no table, so no columns)")
        if self.held or not self.written:  # no rows at all: one empty row group, as pq.write_table writes
            self._write(pa.concat_tables([self.schema.empty_table(), *self.pending]))
        with writing(self.path):
            self.close()
            self.sink.flush()
        self.finished = True

    def close(self) -> None:
        writer, self.writer = self.writer, None  # once: a close that failed (a full disk) is not tried again
        if writer is not None:
            writer.close()

    def _write(self, rows) -> None:
        import pyarrow.parquet as pq

        with writing(self.path):
            if self.writer is None:
                self.writer = pq.ParquetWriter(self.sink, self.schema, compression="zstd")
            self.writer.write_table(rows.combine_chunks(), row_group_size=PARQUET_ROW_GROUP)
        self.written += 1


class ParquetRows:
    """A parquet file written row by row, in row groups of `batch_rows` (flat memory, byte-stable), or
    fewer once the rows held hold `flush_bytes` characters of text (a row group of long captions).

        with ParquetRows(tmp, schema, 50_000) as table:
            table.add(value_of_column_1, ...)

    On an error the buffer is dropped, never written: after a Ctrl-C between two columns' appends it is
    ragged, and the caller's temp file is deleted anyway."""

    def __init__(self, path: Path | str, schema, batch_rows: int, flush_bytes: int | None = None):
        import pyarrow.parquet as pq

        self.schema, self.batch_rows, self.rows = schema, batch_rows, 0
        self.flush_bytes, self.held = flush_bytes, 0  # held: characters of text in the rows not yet written
        self.columns: list[list] = [[] for _ in schema.names]
        self.sink = open(path, "wb")  # noqa: SIM115  # closed by close(); a file object: pyarrow cannot encode a non-UTF-8 file name
        self.writer = pq.ParquetWriter(self.sink, schema, compression="zstd")

    def add(self, *values) -> None:
        for column, value in zip(self.columns, values, strict=True):
            column.append(value)
        if self.flush_bytes is not None:
            self.held += sum(len(value) for value in values if isinstance(value, str))
        if len(self.columns[0]) >= self.batch_rows or (self.flush_bytes is not None and self.held >= self.flush_bytes):
            self.flush()

    def flush(self) -> None:
        import pyarrow as pa

        if self.columns[0]:
            arrays = [pa.array(values, field.type) for values, field in zip(self.columns, self.schema)]
            self.writer.write_batch(pa.RecordBatch.from_arrays(arrays, schema=self.schema))
            self.rows += len(self.columns[0])
            for values in self.columns:
                values.clear()
            self.held = 0

    def __enter__(self) -> ParquetRows:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if exc_type is None:
                self.flush()
        finally:  # the writer before its file, even when the last flush is interrupted
            try:
                self.writer.close()
            finally:
                self.sink.close()


def read_parquet(path: Path | str, columns: list[str] | None = None):
    """Read a stage's parquet input (only `columns`, when given: those the file has); a missing input is
    fatal and names the path."""
    import pyarrow.parquet as pq

    path = existing_input(path)
    with parquet_source(path) as source:
        if columns is not None:
            names = set(schema_names(source, path))
            columns = [c for c in columns if c in names]
        try:
            return frame_of(utf8_checked(pq.read_table(source, columns=columns), path))  # rows from 1
        except DataError:
            raise
        except Exception as exc:  # pyarrow raises many types for corrupt files
            raise unreadable(path, exc) from None


def column_names(path: Path | str) -> list[str]:
    """A stage input's columns, from its footer alone."""
    path = existing_input(path)
    with parquet_source(path) as source:
        return schema_names(source, path)


def schema_names(source, path: Path | str) -> list[str]:
    """The columns of `source` (parquet_source's) from its footer; `path` names it in the one line."""
    import pyarrow.parquet as pq

    try:
        return pq.read_schema(source).names
    except Exception as exc:  # pyarrow raises many types for corrupt files
        raise unreadable(path, exc) from None


@contextlib.contextmanager
def parquet_source(path: Path | str) -> Iterator[Any]:
    """What pyarrow reads for the stage input `path`: the file opened ONCE (side_files.open_regular: links
    followed, as DVC's symlink checkout and a user's own link ask; a FIFO never waited on; a folder, FIFO or
    device put there after existing_input's look refused by what was opened: pyarrow opened the name again,
    and read a folder swapped in as a dataset of other rows), or for a table found under a folder by name
    (safe_paths.table_in: split tables, positions files, compose@V's rows.parquet; caption's manifest) the file opened ONCE there
    (safe_paths.open_within: stays in the folder once open, a regular file), so that a link or folder swapped
    in after table_in's check is never what pyarrow reads. The path carries its opener (safe_paths.TablePath):
    only the stages that find tables by name run safe_paths, and their dvc.yaml deps name it."""
    opener = getattr(path, "opener", None) or (lambda: open_regular(path))
    try:
        os.fsdecode(path).encode("utf-8")  # one rule for every reader's name, as pyarrow's own open tells it
    except UnicodeEncodeError as exc:
        raise unreadable(path, exc) from None
    try:
        file = opener()
    except OSError as exc:  # gone since existing_input's look, a loop of links, not readable
        raise DataError(f"{shown(path)}: cannot open ({exc.strerror})") from None
    with file:
        yield file


RELEASE_ROW_COLUMNS = ("id", "source", "split", "text", "image")  # every release's rows.parquet has them


@contextlib.contextmanager
def release_rows_file(path: Path) -> Iterator[Any]:
    """A release's rows.parquet opened once for reads batch by batch (a pyarrow ParquetFile): a file that is not
    parquet, or lacks a column every release has, is one line naming it. plots, export and publish read it so."""
    import pyarrow.parquet as pq

    with parquet_source(existing_input(path)) as source:
        try:
            file = pq.ParquetFile(source, pre_buffer=False)  # pre-buffering keeps every read row group
        except Exception as exc:  # pyarrow raises many types for corrupt files
            raise unreadable(path, exc) from None
        missing = [c for c in RELEASE_ROW_COLUMNS if c not in file.schema_arrow.names]
        if missing:
            raise DataError(f"{path}: no {missing[0]!r} column")
        yield file


class ParquetChunks:
    """A stage input read `rows` rows at a time as DataFrames (only `columns`, when given: those the file
    has), for a stage that streams (flat memory).

    `arrow(df)` turns a chunk's result back into pyarrow with the types the whole file would get through
    `pd.read_parquet` and `write_parquet`: an integer column holding a missing value anywhere in the file
    is float64 there (pandas' NaN), in every chunk. So a streamed stage writes the bytes a whole-table
    one does."""

    def __init__(self, path: Path | str, rows: int, columns: list[str] | None = None):
        import pyarrow as pa
        import pyarrow.parquet as pq

        self.path, self.rows = existing_input(path), rows
        self.source = contextlib.ExitStack()  # the file parquet_source opened, closed when the rows are read
        try:
            source = self.source.enter_context(parquet_source(self.path))
            self.file = pq.ParquetFile(source, pre_buffer=False)  # pre-buffering keeps every read row group
            names = self.file.schema_arrow.names
            self.columns = names if columns is None else [c for c in columns if c in names]  # as read_parquet
            fields = [self.file.schema_arrow.field(name) for name in self.columns]
            integers = self.file.read(columns=[f.name for f in fields if pa.types.is_integer(f.type)])
        except Exception as exc:  # pyarrow raises many types for corrupt files
            self.source.close()
            raise exc if isinstance(exc, DataError) else unreadable(self.path, exc) from None
        self.float_columns = {name for name in integers.column_names if integers.column(name).null_count}

    def frames(self, progress: str | None = None) -> Iterator:
        """The rows as DataFrames of up to `rows` rows, in order; one empty frame for an empty file. With
        `progress` (the stage's name), the rows read so far show as progress (scripts/lib/progress.py)."""
        if progress is not None:
            from scripts.lib.progress import Progress

            with Progress(progress, total=self.file.metadata.num_rows, unit="rows", summary=False) as shown:
                for frame in self.frames():
                    yield frame
                    shown.advance(len(frame))
            return
        with self.source:
            yield from self._frames()

    def _frames(self) -> Iterator:
        batches = self.file.iter_batches(batch_size=self.rows, columns=self.columns)
        seen, first = False, 1
        while True:
            try:
                batch = next(batches, None)
            except Exception as exc:
                raise unreadable(self.path, exc) from None
            if batch is None:
                break
            seen = True
            yield frame_of(utf8_checked(batch, self.path, first))
            first += batch.num_rows
        if not seen:
            yield frame_of(self.file.schema_arrow.empty_table().select(self.columns))

    def arrow(self, df):
        import pyarrow as pa

        table = arrow_table(df)
        for name in self.float_columns & set(table.column_names):
            index = table.schema.get_field_index(name)
            table = table.set_column(index, pa.field(name, pa.float64()), table.column(name).cast(pa.float64()))
        return table


BATCH_BYTES = 16 << 20  # decoded bytes of one byte_batches batch (about): 160 captions of 100 KB, 4,096 of 4 KB
BATCH_MAX_ROWS = 4096  # rows of one batch however short (round 41b's batch: per-batch pandas work stays cheap)
PROBE_ROWS = 64  # rows decoded to learn a row group's row size (a repeated caption is one dictionary entry on disk)


def byte_batches(file, path: Path | str, columns: list[str] | None = None, max_bytes: int = BATCH_BYTES) -> Iterator:
    """The record batches of pyarrow ParquetFile `file` (from `path`, named in errors), in order, each of about
    `max_bytes` decoded bytes at most: a batch counted in rows was 4,096 x 100 KB = 400 MB of captions. Rows per
    batch come from each row group's size (its row_group_rows); a row far over its group's average can still
    make one batch larger (no row-counted read bounds that)."""
    for group in range(file.metadata.num_row_groups):
        rows = row_group_rows(file, group, path, columns, max_bytes)
        yield from _read(file.iter_batches(batch_size=rows, row_groups=[group], columns=columns), path)


def read_columns(file, path: Path | str, columns: list[str] | None = None):
    """The `columns` (those it has; None: all) of pyarrow ParquetFile `file` (from `path`) as a DataFrame, read byte_batches
    at a time, each UTF-8 checked: the file's bytes and its other columns are never held whole (pd.read_parquet
    of the file's bytes held both, plus every column in Arrow and pandas). The frame is the whole table's."""
    import pyarrow as pa

    names = file.schema_arrow.names
    wanted = names if columns is None else [c for c in columns if c in names]
    batches, first = [], 1
    for batch in byte_batches(file, path, wanted):
        batches.append(utf8_checked(batch, path, first))
        first += batch.num_rows
    table = pa.Table.from_batches(batches) if batches else file.schema_arrow.empty_table().select(wanted)
    return frame_of(table)


def row_group_rows(file, group: int, path: Path | str, columns: list[str] | None, max_bytes: int) -> int:
    """Rows of row group `group` that fit `max_bytes`: by the larger of its column chunks' uncompressed bytes
    a row (the metadata) and the decoded bytes a row of its first PROBE_ROWS rows (a dictionary-encoded
    column holds a repeated caption once on disk, but every row decodes to its own copy)."""
    meta = file.metadata.row_group(group)
    if meta.num_rows == 0:
        return 1
    wanted = set(file.schema_arrow.names if columns is None else columns)
    chunks = [meta.column(i) for i in range(meta.num_columns)]
    on_disk = sum(c.total_uncompressed_size for c in chunks if c.path_in_schema.split(".")[0] in wanted)
    probe = next(_read(file.iter_batches(batch_size=PROBE_ROWS, row_groups=[group], columns=columns), path))
    row_bytes = max(on_disk / meta.num_rows, probe.nbytes / max(probe.num_rows, 1), 1)
    return max(1, min(BATCH_MAX_ROWS, int(max_bytes // row_bytes)))


def _read(batches, path: Path | str) -> Iterator:
    """`batches`, a pyarrow batch iterator, with a corrupt file's error as one line naming `path`."""
    while True:
        try:
            batch = next(batches, None)
        except Exception as exc:  # pyarrow raises many types for corrupt files
            raise unreadable(path, exc) from None
        if batch is None:
            return
        yield batch


def stage_input(path: Path | str) -> Path:
    """A stage's input named on the command line (`split`'s input and `--order`) as every read of one run takes
    it: the file the first read opened and checked (side_files.held_open), never the name again. A link is
    followed (DVC's own symlink checkout is one); a file renamed over the name between two reads is one line
    (split read its ids from one table and its rows from another)."""
    path = Path(path)
    return held_open(path, lambda: open_regular(path))


def existing_input(path: Path | str) -> Path:
    """`path`, or a one-line error when the stage input is missing or neither a file nor a folder (a FIFO
    would block the open in C, where no signal handler runs: the command hung, deaf to Ctrl-C)."""
    path = path if isinstance(path, Path) else Path(path)  # a TablePath keeps its folder (parquet_source)
    if not path.exists():
        raise DataError(f"{path}: input not found (run its upstream stage first)")
    mode = path.stat().st_mode
    if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        raise DataError(f"{path}: not a regular file (a FIFO, socket or device); refusing to read it")
    return path


def unreadable(path: Path | str, exc: Exception) -> DataError:
    """The one line for a parquet input pyarrow could not read. pyarrow takes a path as UTF-8 only: a name
    that is not (`x\\xff.parquet`, Python's surrogate escapes) fails before a byte is read, and was told as
    "not a readable parquet file (UnicodeEncodeError: ...)", blaming a file that is fine."""
    if isinstance(exc, UnicodeEncodeError) and "surrogates not allowed" in str(exc):
        return DataError(f"{path}: its name is not UTF-8, which pyarrow cannot open; rename it")
    if isinstance(exc, OSError) and exc.errno in (errno.EMFILE, errno.ENFILE):  # `ulimit -n`: not the file's fault
        return DataError(f"{path}: cannot open ({os.strerror(exc.errno)})")
    return DataError(f"{path}: not a readable parquet file ({type(exc).__name__}: {exc})".splitlines()[0])


def check_unique(path: Path | str, column: str = "id"):
    """The column of a whole file (pyarrow: compact), after check_table's repeated-id check: for a stage
    that streams its rows."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    path = existing_input(path)
    with parquet_source(path) as source:
        try:
            values = (
                pq.read_table(source, columns=[column]).column(column) if column in schema_names(source, path) else None
            )
        except DataError:
            raise
        except Exception as exc:  # pyarrow raises many types for corrupt files
            raise unreadable(path, exc) from None
    if values is None:
        raise DataError(f"{path}: no '{column}' column")
    if values.null_count:  # an id names its row: a null one broke sorting and joins downstream
        raise DataError(
            f"{shown(path)}: row {pc.index(pc.is_null(values), True).as_py() + 1}: column '{column}' is missing (null or NaN)"
        )
    if pc.count_distinct(values, mode="all").as_py() < len(values):
        check_table(values.to_pandas().to_frame(column), path, unique=column)  # names the first repeat
    return values


def check_table(
    df,
    path: Path | str,
    strings: tuple[str, ...] = (),
    unique: str | None = None,
    present: tuple[str, ...] = (),
    first_row: int = 0,
) -> None:
    """One-line errors naming the file when a stage input has a missing or non-text column, or repeated ids:
    check_cells's for `strings` (text or missing) and `present` and `unique` (never missing: an id names
    its row, a null one broke sorting and joins downstream), then the repeats."""
    check_cells(df, path, text=strings, present=(*present, *([unique] if unique else [])), first_row=first_row)
    if unique is not None:
        if unique not in df.columns:
            raise DataError(f"{path}: no '{unique}' column")
        repeated = df[unique].duplicated()
        if repeated.any():
            first: dict = {}
            for at, value in enumerate(df[unique].tolist()):  # names the first repeat and its first row
                if value in first:
                    raise DataError(
                        f"{path}: duplicate id {shown_short(value)!r} at row {first_row + at + 1} (first at row "
                        f"{first_row + first[value] + 1}; {int(repeated.sum())} repeated rows)"
                    )
                first[value] = at


def check_cells(
    df, path: Path | str, text: tuple[str, ...] = (), present: tuple[str, ...] = (), numbers=(), first_row=0, sizes=()
) -> None:
    """One line naming the file and the row (1-based; `first_row` rows came before `df`) of the first cell
    its column cannot hold: `text` columns hold strings, `numbers` real numbers, `sizes` pixel counts
    (size_problem; any of them may be missing), `present` columns nothing missing (null, NaN). Any other
    cell would reach code that hashes, sorts or joins it: a list, a dict or a float NaN there was a
    traceback far from the file that held it."""
    for column in dict.fromkeys((*text, *numbers, *sizes, *present)):
        if column not in df.columns:
            raise DataError(f"{path}: no '{column}' column")
        kind = "text" if column in text else "number" if column in numbers else "size" if column in sizes else None
        if kind == "text" and df[column].dtype == "category":  # as raw parquet sources refuse it (iter_parquet):
            # its values passed as text, then `"dir/" + column` was a TypeError
            raise DataError(f"{shown(path)}: column '{column}' must hold text, found dictionary-encoded values")
        bad = first_bad_cell(df[column], kind, nullable=column not in present)
        if bad is not None:
            raise DataError(f"{shown(path)}: row {first_row + bad[0] + 1}: column '{column}' {bad[1]}")


def first_bad_cell(values, kind: str | None, nullable: bool = True) -> tuple[int, str] | None:
    """(index, what is wrong) of the first value of a Series that is not of `kind` ("text", "number", "size",
    or None: anything), or missing where not `nullable`; None when every value is fine."""
    import pandas as pd

    missing = values.isna().to_numpy()
    if not nullable and missing.any():
        return int(missing.argmax()), "is missing (null or NaN)"
    if kind == "size":  # every value is looked at: an int64 column holds -5 and 2**40 too
        candidates: Iterable[int] = range(len(values))
        if pd.api.types.is_numeric_dtype(values.dtype) and not pd.api.types.is_bool_dtype(values.dtype):
            import numpy as np  # a number column: only the values out of range are looked at one by one

            numbers = values.to_numpy(dtype="float64", na_value=1.0)
            with np.errstate(invalid="ignore"):  # inf % 1 is NaN, and NaN is out of range
                candidates = np.flatnonzero(~((numbers % 1 == 0) & (numbers >= 1) & (numbers <= MAX_SIDE))).tolist()
        for index in candidates:
            value = values.iloc[index]
            value = value.item() if hasattr(value, "item") else value  # numpy scalars as the numbers they are
            why = "" if missing[index] else size_problem(value)
            if why:
                return index, f"holds {_described(value)}, {why}"
        return None
    typed = isinstance(values.dtype, pd.StringDtype) if kind == "text" else None
    if kind == "number":
        typed = pd.api.types.is_numeric_dtype(values.dtype) and not pd.api.types.is_bool_dtype(values.dtype)
    if kind is None or typed:  # the column's type says every present value is right
        return None
    for index, (value, gone) in enumerate(zip(values.tolist(), missing)):
        if gone:
            continue
        right = isinstance(value, str) if kind == "text" else _is_number(value)
        if not right:
            return index, f"holds {_described(value)}, not {'text' if kind == 'text' else 'a number'}"
    return None


def _is_number(value) -> bool:
    import numbers

    return isinstance(value, numbers.Real) and not isinstance(value, bool)


MAX_SIDE = 2**31 - 1  # width/height are int32 columns (ingest, the release layouts, SimpleTuner's parquet)


def size_problem(value) -> str:
    """Why `value` is no image width or height ("" when it is one: a whole number from 1 to MAX_SIDE).
    2.5, inf or 1e30 was a traceback where the column became integers; -5 and 0 went into a release."""
    if not _is_number(value) or value != value or value in (float("inf"), float("-inf")) or value != int(value):
        return "not a whole number of pixels"
    return "" if 0 < value <= MAX_SIDE else f"not a size from 1 to {MAX_SIDE} pixels"


def _described(value) -> str:
    """A cell's type and (short) value for an error line: `int 5`, `a list ['a']`."""
    import numpy as np

    if isinstance(value, (list, tuple, np.ndarray)):
        return f"a list {shown_short(list(value), 40)}"
    if isinstance(value, dict):
        return f"a mapping {shown_short(value, 40)}"
    return f"{type(value).__name__} {shown_short(repr(value), 40)}"


_PART_IMAGES: dict[tuple[int, int, int, int], dict[str, bytes]] = {}  # the last part read, by what it is


def part_images(file, path: Path | str) -> dict[str, bytes]:
    """id -> image bytes of a parquet part of a release (the first row of an id) that `file` has open (opened
    and checked by the caller: open_within), read once per version of the file, known by its device, inode,
    size and time: publish asks for a part's rows one by one, and read the whole part for each (a 1000-row part
    of 500 MB: 500 GB read). By that identity, never the name: a part renamed over between two rows is read
    anew, not taken from the cache of the other file."""
    import pyarrow.parquet as pq

    opened = os.fstat(file.fileno())
    identity = (opened.st_dev, opened.st_ino, opened.st_size, opened.st_mtime_ns)
    if identity not in _PART_IMAGES:
        try:
            table = pq.read_table(file, columns=["id", "image"])
        except Exception as exc:  # pyarrow raises many types for corrupt files
            raise unreadable(path, exc) from None
        images: dict[str, bytes] = {}
        for row_id, image in zip(table["id"].to_pylist(), table["image"].to_pylist()):
            images.setdefault(row_id, image["bytes"])
        _PART_IMAGES.clear()
        _PART_IMAGES[identity] = images
    return _PART_IMAGES[identity]
