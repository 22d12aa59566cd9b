"""Release exports: one writer per layout, each `rows -> folder` (release@V picks one per recipe).

- imagefolder (default): Hugging Face ImageFolder, `metadata.jsonl` beside `images/<source>/<id>.<ext>`
  (hardlinked from the image store where the filesystem allows, never copied when it does).
- webdataset: deterministic tar shards `shard-NNNNNN.tar`, per sample `<key>.<ext>` + `<key>.txt` +
  `<key>.json`, key the id escaped (shards.sample_key: no '.' or '/'); fixed member order, mtime, owner and mode, so the bytes depend only on the rows. Every
  image under one extension (`image_format`, default png: lossless), since a loader makes one column
  per extension (`datasets` refuses samples whose members differ).
- simpletuner: SimpleTuner's DALL-E-3 preset (scripts/lib/simpletuner.py): the images, `<stem>.txt`
  beside each, `simpletuner.parquet` (`width, height, caption, filename`) and `multidatabackend.json`;
  plus the ImageFolder `metadata.jsonl`, so `datasets` loads it too.
- parquet: `part-NNNNN-of-NNNNN.parquet`, the rows with their images embedded in datasets' Image
  layout (what `publish` uploads), `shard_size` rows per file.
- bucketed: the LAION Aesthetics 512 bucketed card's layout, in its own module (scripts/lib/bucketed.py);
  the rows it drops (too small for their bucket, ...) are reported back, so the release counts only
  what it exported.
- prompts: a text-only release, `prompts.parquet` (`id, source, text, orig_text`) per split.

Rows carry `id, source, text, orig_text, image (path or archive ref), width, height`. Whatever the
layout, release@V also writes `rows.parquet` (write_rows_table): every row with where its image is in
the release, the one table `diff`, `plots` and `publish` read. `card_data_files` tells the release's
card which files of a split `datasets.load_dataset` reads.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pandas as pd

from scripts.lib import bucketed
from scripts.lib.archive import check_sha256
from scripts.lib.errors import DataError
from scripts.lib.io import SPLITS, mark_folder, present_file, regular_file, shown
from scripts.lib.nesting import dumps_json, loads_json
from scripts.lib.release_images import IMAGE_SUFFIXES, OpenedCheck, SourceRoots, image_bytes, locate_images, of_row
from scripts.lib.release_images import release_image_bytes as release_image_bytes
from scripts.lib.safe_paths import link_opened, new_file, open_regular
from scripts.lib.shards import ShardWriter, json_member
from scripts.lib.tables import arrow_table, row_groups_to, write_parquet

FORMATS = ("imagefolder", "webdataset", "simpletuner", "parquet", "bucketed", "prompts")
IMAGE_FORMATS = ("png", "jpg", "keep")
DEFAULT_OPTIONS: dict[str, dict[str, Any]] = {
    "imagefolder": {},
    "webdataset": {"shard_size": 1000, "image_format": "png"},
    "simpletuner": {},
    "parquet": {"shard_size": 1000},
    "bucketed": bucketed.DEFAULT_OPTIONS,
    "prompts": {},
}


def export_options(spec, where: str) -> tuple[str, dict]:
    """`export: webdataset` or `export: {format: webdataset, shard_size: 500}` -> (format, options)."""
    spec = {"format": spec} if isinstance(spec, str) else dict(spec or {"format": "imagefolder"})
    fmt = spec.pop("format", "imagefolder")
    if fmt not in FORMATS:
        raise DataError(f"{where}.export: unknown format {fmt!r} (one of {', '.join(FORMATS)})")
    unknown = set(spec) - set(DEFAULT_OPTIONS[fmt])
    if unknown:
        raise DataError(
            f"{where}.export: unknown option(s) {sorted(unknown)} for {fmt} (allowed {sorted(DEFAULT_OPTIONS[fmt])})"
        )
    options = {**DEFAULT_OPTIONS[fmt], **spec}
    if "shard_size" in options and (not isinstance(options["shard_size"], int) or options["shard_size"] < 1):
        raise DataError(f"{where}.export.shard_size: expected a positive integer")
    if options.get("image_format", "png") not in IMAGE_FORMATS:
        raise DataError(
            f"{where}.export.image_format: expected one of {', '.join(IMAGE_FORMATS)}, got {options['image_format']!r}"
        )
    return fmt, options


def write_split(
    rows: pd.DataFrame,
    folder: Path,
    fmt: str,
    options: dict,
    on_image: Callable[[], None] | None = None,
    dropped: dict[str, str] | None = None,
    roots: SourceRoots | None = None,
):
    """Write one split of a release in the chosen layout; `dropped` gets id -> reason for each row the
    layout left out (only bucketed leaves rows out); `roots`: where each source's images may be, checked on
    the file each is read from (release@V: its sources' folders)."""
    folder.mkdir(parents=True, exist_ok=True)
    tick = on_image or (lambda: None)
    if fmt == "prompts":
        write_prompts(rows, folder, tick)
    elif fmt == "imagefolder":
        write_imagefolder(rows, folder, tick, roots)
    elif fmt == "webdataset":
        write_webdataset(rows, folder, options["shard_size"], tick, options.get("image_format", "png"), roots)
    elif fmt == "simpletuner":
        write_simpletuner(rows, folder, tick, roots)
    elif fmt == "parquet":
        write_parquet_shards(rows, folder, options["shard_size"], tick, roots)
    else:
        return bucketed.write_bucketed(rows, folder, options, tick, dropped, roots)  # the export summary


# --- images -------------------------------------------------------------------------------------


def image_ext(row) -> str:
    return os.path.splitext(str(row.image))[1].lower() or ".jpg"


def image_file_name(row) -> str:
    """Where a row's image lives in its split folder: images/<source>/<id><ext> (ids are portable: paths.PLAIN_ID)."""
    return f"images/{row.source}/{row.id}{image_ext(row)}"


def image_check(roots: SourceRoots | None, row_id, source) -> OpenedCheck | None:
    """The check of a row's opened image file (SourceRoots.check), none without roots."""
    return None if roots is None else roots.check(row_id, source)


def placed_images(rows: pd.DataFrame, folder: Path, tick: Callable[[], None], roots: SourceRoots | None = None):
    """Place every row's image under `folder` (images/<source>/<id><ext>); yield (row, file_name)."""
    for row in rows.itertuples(index=False):
        file_name = image_file_name(row)
        with of_row(row.id, row.source):  # a folder, FIFO or 0-byte file at its name: the row named too
            check = image_check(roots, row.id, row.source)
            place_image(row.image, folder / file_name, getattr(row, "image_sha256", None), check)
        tick()
        yield row, file_name


def recorded_image_bytes(ref: str, sha256=None, check: OpenedCheck | None = None) -> bytes:
    """image_bytes, refused unless they are an image (check_recorded) and, where the row records its
    image's `sha256`, those bytes (check_sha256)."""
    data = image_bytes(ref, check)
    check_sha256(ref, data, sha256)
    check_recorded(ref, io.BytesIO(data))
    return data


def check_recorded(ref: str, image) -> None:
    """Refuse a file under an image's name that is not an image.

    Every path check looks at the name only, and a hard link keeps the name: a key file (or any file
    elsewhere on the disk) linked in under an image's name would be shipped as is. Its link count
    proves nothing (the generation store, the DVC cache and releases hardlink images legitimately), so
    the header (read only) must be an image's. Not its size: a bucketed source's rows record the bucket's
    size while the stored JPEG keeps its own (readers/webdataset.py). Another image linked in under a
    rendered image's name is refused by its sha256 (check_sha256); a carried image records none."""
    from scripts.lib.pixels import TooManyPixels, opened

    try:
        with opened(image, ref):  # the header only, no pixels decoded
            return
    except TooManyPixels:  # an image, but one PIL will not decode: its own line, not "not an image"
        raise
    except Exception:  # anything PIL cannot read as an image (a key file, text, a truncated header)
        raise DataError(
            f"{shown(ref)}: not an image, though a row names it as one: the file was replaced after ingest "
            "(a hard link or copy of another file?); restore it or rebuild its source"
        ) from None


def place_image(ref: str, target: Path, sha256=None, check: OpenedCheck | None = None) -> None:
    """Hardlink a rendered image (no copy), or extract a carried one from its archive; either way only an
    image (check_recorded) and only the bytes its row records (check_sha256). A rendered image is checked in
    its one open, and the link made is of that file (safe_paths.link_opened)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    if "!/" in ref:
        return new_file(target, recorded_image_bytes(ref, sha256, check))
    try:
        file = open_regular(ref)  # a link into DVC's cache is followed; a FIFO never waited on
    except FileNotFoundError:
        raise DataError(f"{ref}: image not found") from None
    with file:
        if check is not None:  # where the file opened is, never the name again
            check(file, Path(ref))
        if isinstance(sha256, str):
            check_sha256(ref, file.read(), sha256)
        check_recorded(ref, file)
        if not link_opened(file, ref, target):  # another filesystem, links not allowed: a copy (never over a name)
            new_file(target, file.read())


def _size(value) -> int | None:
    return None if pd.isna(value) else int(value)


def sample_json(row) -> dict:
    return {
        "text": row.text,
        "orig_text": row.orig_text,
        "source": row.source,
        "id": row.id,
        "width": _size(row.width),
        "height": _size(row.height),
    }


# --- layouts ------------------------------------------------------------------------------------


def write_imagefolder(
    rows: pd.DataFrame, folder: Path, tick: Callable[[], None], roots: SourceRoots | None = None
) -> None:
    """Hugging Face ImageFolder: metadata.jsonl beside the images, file_name relative to it."""
    lines = []
    for row, file_name in placed_images(rows, folder, tick, roots):
        record = {"file_name": file_name, **sample_json(row)}  # a NaN or infinity: one line (dumps_json)
        lines.append(dumps_json(record, folder / "metadata.jsonl", ensure_ascii=False))
    new_file(folder / "metadata.jsonl", ("\n".join(lines) + ("\n" if lines else "")).encode("utf-8"))


def parse_metadata(lines: Iterable[str], where: str, required: tuple[str, ...]) -> list[dict]:
    """The records of an ImageFolder metadata.jsonl (blank lines skipped); a line that is not a
    JSON object with the `required` keys is a DataError naming `where` and the line."""
    records = []
    for line_no, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = loads_json(line)
            missing = [key for key in required if key not in record]
        except (ValueError, TypeError):
            record, missing = None, list(required)
        if not isinstance(record, dict) or missing:
            raise DataError(f"{where}: line {line_no}: not a metadata record with {', '.join(required)}")
        records.append(record)
    return records


def read_metadata(folder: Path, required: tuple[str, ...], hint: str = "run release first") -> list[dict]:
    """parse_metadata of folder/metadata.jsonl cut at "\\n" (not at a caption's U+2028); missing: DataError + `hint`."""
    path = Path(folder) / "metadata.jsonl"
    if not path.exists():
        raise DataError(f"{path}: not found ({hint})")
    try:  # bytes not UTF-8 were a traceback in plots and publish
        text = regular_file(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(f"{shown(path)}: byte {exc.start}: not UTF-8 text") from None
    return parse_metadata(text.split("\n"), str(path), required)


PROMPT_COLUMNS = ["id", "source", "text", "orig_text"]


def write_prompts(rows: pd.DataFrame, folder: Path, tick: Callable[[], None]) -> None:
    """A text-only split: prompts.parquet, the rows' text and where it came from (no image)."""
    for _ in range(len(rows)):
        tick()
    write_parquet(rows[PROMPT_COLUMNS].reset_index(drop=True), folder / "prompts.parquet")


def write_simpletuner(
    rows: pd.DataFrame, folder: Path, tick: Callable[[], None], roots: SourceRoots | None = None
) -> None:
    """SimpleTuner's files (scripts/lib/simpletuner.py, the one writer) over an ImageFolder split: the
    metadata.jsonl stays so `datasets` loads the same folder (card_data_files leaves the .txt out)."""
    from scripts.lib.simpletuner import write_release_split

    write_imagefolder(rows, folder, tick, roots)
    write_release_split(rows, folder, ((row, image_file_name(row)) for row in rows.itertuples(index=False)))


def write_webdataset(
    rows: pd.DataFrame,
    folder: Path,
    shard_size: int,
    tick: Callable[[], None],
    image_format: str = "png",
    roots: SourceRoots | None = None,
) -> None:
    """WebDataset shards: key = sample_key(row id), members image + txt + json, adjacent (its reading rule)."""
    writer = ShardWriter(folder, shard_size)
    try:
        for row in rows.itertuples(index=False):
            meta = json_member(sample_json(row), folder)
            with of_row(row.id, row.source):
                check = image_check(roots, row.id, row.source)
                data = recorded_image_bytes(row.image, getattr(row, "image_sha256", None), check)
            ext, data = image_as(data, image_format, image_ext(row).lstrip("."), row.image)
            writer.add(row.id, [(ext, data), ("txt", (row.text + "\n").encode("utf-8")), ("json", meta)])
            tick()
    finally:
        writer.close()


def image_as(data: bytes, image_format: str, stored_ext: str, ref: str) -> tuple[str, bytes]:
    """(member extension, bytes) of an image in `image_format`: bytes already in that format are kept as
    stored; png re-encodes losslessly (the decoded pixels), jpg at quality 95, either as the image is
    shown (pixels.reencoded: upright, 16-bit grey scaled, not clipped to white); keep changes nothing."""
    if image_format == "keep":
        return stored_ext, data
    if data.startswith(b"\x89PNG\r\n\x1a\n" if image_format == "png" else b"\xff\xd8\xff"):
        return image_format, data
    from scripts.lib.pixels import opened, reencoded

    try:
        with opened(io.BytesIO(data), ref) as image:
            image.load()
            return image_format, reencoded(image, image_format, name=ref)
    except DataError:  # UnsupportedPixels: its own line names the image and why
        raise
    except Exception as exc:
        raise DataError(f"{ref}: cannot re-encode as {image_format} ({type(exc).__name__})") from None


# --- images embedded in parquet (export: parquet; publish's Hub shards) ---------------------------

TABLE_COLUMNS = ("id", "source", "text", "orig_text", "width", "height")
# datasets' own JSON form of the features (Features.to_dict): `load_dataset("parquet")` decodes `image`
HF_FEATURES = {
    "image": {"_type": "Image"},
    **{c: {"dtype": "string", "_type": "Value"} for c in TABLE_COLUMNS[:4]},
    "width": {"dtype": "int32", "_type": "Value"},
    "height": {"dtype": "int32", "_type": "Value"},
}


def image_table(records: list[dict], images: list[tuple[bytes, str]]):
    """An Arrow table in datasets' Image layout: `image` a struct {bytes, path} beside TABLE_COLUMNS,
    with the `huggingface` schema metadata naming the features."""
    import pyarrow as pa

    def ints(key):
        return pa.array(
            [None if r.get(key) is None or pd.isna(r.get(key)) else int(r[key]) for r in records], pa.int32()
        )

    image = pa.StructArray.from_arrays(
        [pa.array([b for b, _ in images], pa.binary()), pa.array([n for _, n in images], pa.string())],
        names=["bytes", "path"],
    )
    strings = [
        pa.array([None if r.get(c) is None else str(r[c]) for r in records], pa.string()) for c in TABLE_COLUMNS[:4]
    ]
    schema = pa.schema(
        [pa.field("image", image.type)]
        + [pa.field(c, pa.string()) for c in TABLE_COLUMNS[:4]]
        + [pa.field("width", pa.int32()), pa.field("height", pa.int32())],
        metadata={"huggingface": json.dumps({"info": {"features": HF_FEATURES}})},
    )
    return pa.Table.from_arrays([image, *strings, ints("width"), ints("height")], schema=schema)


def write_parquet_shards(
    rows: pd.DataFrame, folder: Path, shard_size: int, tick: Callable[[], None], roots: SourceRoots | None = None
) -> None:
    """part-NNNNN-of-NNNNN.parquet, `shard_size` rows each, row groups of 100 (the viewer reads a group at
    a time); the image bytes as stored."""
    import pyarrow.parquet as pq

    records = rows.to_dict("records")
    count = max(1, -(-len(records) // shard_size))
    for index in range(count):
        chunk = records[index * shard_size : (index + 1) * shard_size]
        images = []
        for record in chunk:
            ext = os.path.splitext(str(record["image"]))[1].lower() or ".jpg"
            with of_row(record["id"], record["source"]):
                check = image_check(roots, record["id"], record["source"])
                data = recorded_image_bytes(record["image"], record.get("image_sha256"), check)
            images.append((data, f"{record['id']}{ext}"))
            tick()
        pq.write_table(
            image_table(chunk, images),
            folder / f"part-{index:05d}-of-{count:05d}.parquet",
            row_group_size=100,
            compression="zstd",
        )


# --- what datasets.load_dataset reads, and rows.parquet -------------------------------------------


def card_data_files(fmt: str, split: str) -> str | list[str]:
    """The files of one split that `datasets.load_dataset(release folder)` reads (the card's `configs`):
    one kind of data file per split, or datasets refuses ("Couldn't infer the same data file format for
    all splits": a SimpleTuner split has as many .txt as images, and .txt would win)."""
    if fmt == "simpletuner":
        return [f"{split}/metadata.jsonl"] + [f"{split}/images/**/*{suffix}" for suffix in IMAGE_SUFFIXES]
    if fmt == "webdataset":
        return f"{split}/shard-*.tar"
    if fmt == "bucketed":
        return f"{split}/buckets/*/*.tar"
    if fmt == "parquet":
        return f"{split}/part-*.parquet"
    if fmt == "prompts":
        return f"{split}/prompts.parquet"
    return f"{split}/**"


ROWS_COLUMNS = [
    "id",
    "source",
    "split",
    "text",
    "orig_text",
    "image",
    "width",
    "height",
    "image_sha256",
    "image_nbytes",
]


def write_rows_table(rows: pd.DataFrame, release_dir: Path) -> None:
    """rows.parquet: every row of the release whatever its layout, with `image` where its image is in the
    release (relative to the release folder: `train/images/s/<id>.png`, `train/shard-000000.tar!/<key>.png`,
    `train/part-00000-of-00001.parquet!/<id>`; null if the layout left it out), and that image's sha256 and
    size. Found by reading what the export wrote, so it holds for every writer."""
    release_dir = Path(release_dir)
    located: dict[tuple[str, str], tuple[str, str, int]] = {}
    for split in sorted(set(rows["split"])):
        for row_id, where in locate_images(release_dir, split).items():
            located[(split, row_id)] = where
    write_parquet(rows_table(rows, located), release_dir / "rows.parquet")


def rows_table(rows: pd.DataFrame, located: dict[tuple[str, str], tuple[str, str, int]]) -> pd.DataFrame:
    """rows.parquet's rows: `rows` with where each one's image is ((split, id) -> (ref, sha256, bytes))."""
    found = [located.get((split, row_id), (None, None, None)) for split, row_id in zip(rows["split"], rows["id"])]
    table = rows.assign(
        image=[f[0] for f in found],
        image_sha256=[f[1] for f in found],
        image_nbytes=pd.array([f[2] for f in found], dtype="Int64"),
    )
    return table[ROWS_COLUMNS].astype({"width": "Int64", "height": "Int64"}).reset_index(drop=True)


def write_prompts_release(chunks: Iterable[pd.DataFrame], release_dir: Path, tick: Callable[[int], None]) -> None:
    """The prompts layout of every split and rows.parquet in one pass over the rows, a chunk at a time
    (a text-only release of 10M rows holds one chunk): the bytes write_split and write_rows_table write
    from the whole table, as tables.RowGroups lays out row groups however the rows come."""
    with contextlib.ExitStack() as files:
        prompts = {}
        for split in SPLITS:
            (release_dir / split).mkdir(parents=True, exist_ok=True)
            prompts[split] = files.enter_context(row_groups_to(release_dir / split / "prompts.parquet"))
        table = files.enter_context(row_groups_to(release_dir / "rows.parquet"))
        for chunk in chunks:
            for split, out in prompts.items():
                out.add(arrow_table(chunk.loc[chunk["split"] == split, PROMPT_COLUMNS].reset_index(drop=True)))
            table.add(arrow_table(rows_table(chunk, {})))  # a prompts release places no image
            tick(len(chunk))
    for split in SPLITS:
        mark_folder(release_dir / split)


def read_rows_table(release_dir: Path, columns: list[str] | None = None) -> pd.DataFrame | None:
    """The `columns` (those it has; None: all) of a release's rows.parquet, read in byte-bounded batches (tables.read_columns),
    or None for a release built before it existed (read metadata.jsonl)."""
    path = Path(release_dir) / "rows.parquet"
    if not present_file(path):  # a FIFO or folder there is one line, never "absent": metadata.jsonl read instead
        return None
    from scripts.lib.tables import read_columns, release_rows_file

    with release_rows_file(path) as file:
        return read_columns(file, path, columns)
