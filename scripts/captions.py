"""captions@S: join each kept prompt with its image into the caption table.

In:  data/prefilter/S.parquet (kept rows, `text` = cleaned caption, `prompt` = raw prompt)
     the source's images: data/images/S/ (rendered by generate@S, with manifest.parquet)
     or, for sources that carry images, their raw path (rows already hold an `image` reference);
     a `text_only` source's rows keep no image (its `images` names any existing path, for DVC).
Out: data/captions/S.parquet: id, source, split, text, orig_text, image, width, height, meta,
     generation (JSON of the settings that rendered the image; null for carried images), image_sha256
     (a rendered image's, from the manifest; null for carried images), in id order:
     sorted on disk (scripts/lib/external_sort.py), `runtime.stream_rows` rows read at a time.
`sources.S.caption_language` (e.g. en) drops a row whose raw prompt langdetect reads as another
language, before the split, as the team's make_captions.py skipped it (undetectable text is kept).
"""

from __future__ import annotations

import unicodedata
from pathlib import Path

import numpy as np
import pandas as pd
import typer

from scripts.lib.errors import DataError
from scripts.lib.external_sort import key_ranks, sorted_rows_to
from scripts.lib.io import check_files_ours, shown
from scripts.lib.nesting import dumps_json
from scripts.lib.params import load_section
from scripts.lib.tables import (
    ParquetChunks,
    arrow_table,
    check_cells,
    check_table,
    check_unique,
    read_parquet,
    stage_input,
)

MANIFEST = "manifest.parquet"
CAPTION_COLUMNS = [
    *["id", "source", "split", "text", "orig_text", "image", "width", "height", "meta", "generation"],
    "image_sha256",  # a rendered image's, as generate wrote it (its manifest): release takes only those bytes
]
GENERATION_FIELDS = ["model", "scheduler", "steps", "guidance", "seed", "format"]


def join_rendered(rows: pd.DataFrame, manifest: pd.DataFrame, images_dir: str) -> pd.DataFrame:
    """Attach rendered images (generate@S manifest) to rows; every row must have one."""
    joined = rows.drop(columns=["image", "width", "height"], errors="ignore").merge(
        manifest, on="id", how="left", validate="one_to_one"
    )
    missing = joined["file"].isna()
    if missing.any():
        first = joined.loc[missing, "id"].iloc[0]
        raise DataError(
            f"{images_dir}/{MANIFEST}: {int(missing.sum())} rows have no image (first id {first}); rerun generate"
        )
    for row_id, name in zip(joined["id"], joined["file"]):
        if name.startswith(("/", "\\")) or ".." in name.replace("\\", "/").split("/"):
            raise DataError(f"{images_dir}/{MANIFEST}: id {row_id}: file {name!r} leaves the images folder")
    joined["image"] = images_dir.rstrip("/") + "/" + joined["file"]
    joined["image_sha256"] = joined.get("sha256")  # none from a manifest written before it
    present = [f for f in GENERATION_FIELDS if f in joined.columns]
    # dumps_json: a guidance of inf or NaN (or a null, NaN once in pandas) was written as `Infinity`/`NaN` at
    # exit 0, a generation value release's card then refused as not JSON; now one line naming the manifest's row
    joined["generation"] = [
        dumps_json(
            {f: _plain(v) for f, v in zip(present, values)}, f"{images_dir}/{MANIFEST}: id {row_id}", sort_keys=True
        )
        for row_id, values in zip(joined["id"], joined[present].itertuples(index=False, name=None))
    ]
    return joined


def carried_images(rows: pd.DataFrame, source: str, text_only: bool = False) -> pd.DataFrame:
    """Sources with their own images: the ingest reader already set `image`. A text-only source's rows
    may have none (a prompt dataset)."""
    missing = rows["image"].isna()
    if missing.any() and not text_only:
        first = rows.loc[missing, "id"].iloc[0]
        raise DataError(
            f"source {source}: {int(missing.sum())} rows have no image reference (first id {first}; "
            f"a prompt dataset says sources.{source}.text_only: true)"
        )
    return rows.assign(generation=None, image_sha256=None)


def caption_table(rows: pd.DataFrame) -> pd.DataFrame:
    """The caption columns, in the rows' order (the stage sorts the whole table by id on disk)."""
    out = rows.rename(columns={"prompt": "orig_text"})[CAPTION_COLUMNS].reset_index(drop=True)
    out["width"] = out["width"].astype("Int64")
    out["height"] = out["height"].astype("Int64")
    out["image_sha256"] = out["image_sha256"].astype("string")  # one type, whether any row has one or none
    return out


def language_mask(prompts: list[str], language: str, seed: int = 0):
    """True for a prompt langdetect (seeded) reads as `language`, or cannot read at all (make_captions.py:
    `if detect(prompt) != "en": continue`, its exception printed and the prompt kept)."""
    from scripts.lib.cleaning.drop_rules import detect_language

    guesses = [detect_language(p.strip(), seed) for p in prompts]
    return [g is None or g == language for g in guesses]


def caption_language(source: str):
    """sources.<source>.caption_language from params.yaml (None without the source or the key)."""
    # loaded, never looked at by name first (the stage's runtime section was loaded the same way before it)
    entry = load_section("sources", missing_ok=True).get(source)
    return entry.caption_language if entry is not None else None


def _plain(value):
    """numpy scalars -> Python, so json.dumps is exact and stable."""
    return value.item() if hasattr(value, "item") else value


def cli(
    source: str = typer.Argument(..., help="source name in params.yaml: sources"),
    input: Path = typer.Argument(..., help="data/prefilter/S.parquet"),
    images: Path = typer.Argument(..., help="data/images/S (rendered) or the source's raw path"),
    output: Path = typer.Argument(..., help="data/captions/S.parquet"),
) -> None:
    """Join kept prompts with their images into the caption table."""
    check_files_ours(output, inputs=[input, images])
    input = stage_input(input)  # its ids ranked and its rows streamed: one file, the first read's
    rows = ParquetChunks(input, load_section("runtime", missing_ok=True).stream_rows)
    ranks = key_ranks(check_unique(input))  # each row's place in the output, which is in id order
    check_images, attach = image_joiner(source, images, input, rows.columns)
    language = caption_language(source)
    offset = not_language = written = 0
    with sorted_rows_to(output, ranks) as out:
        for at, chunk in enumerate(
            rows.frames(f"captions@{source}")
        ):  # a chunk at a time, sorted on disk: memory stays flat
            # every column caption_table copies: a missing one was a KeyError traceback, a width of 2.5 or
            # inf a TypeError where it became an integer
            check_table(chunk, input, strings=("id", "text", "prompt", "source", "split", "meta"))
            check_cells(chunk, input, sizes=("width", "height"), first_row=offset)
            if at == 0:  # once, after the first chunk's own checks: the input's fault is said first
                check_images()
            positions = np.arange(offset, offset + len(chunk))
            offset += len(chunk)
            if language is not None:
                keep = np.asarray(language_mask(chunk["prompt"].astype(str).tolist(), language), dtype=bool)
                not_language += int((~keep).sum())
                chunk, positions = chunk[keep].reset_index(drop=True), positions[keep]
            out.add_rows(arrow_table(caption_table(attach(chunk))), positions)
            written += len(positions)
    if language is not None:
        print(shown(f"captions@{source}: {not_language} rows whose prompt is not {language} (langdetect) dropped"))
    print(shown(f"captions@{source}: {written} rows -> {output}"))


def image_joiner(source: str, images: Path, input: Path, columns: list[str]):
    """(check, attach): attach maps rows -> rows with their images: the rendered ones of generate@S's manifest,
    else the source's own (`columns`: the input's, which must then hold `image`); check checks the manifest's
    cells the rows take (check_manifest), called once."""
    manifest_path = images / MANIFEST
    if manifest_path.exists():
        manifest = read_parquet(manifest_path)
        check_table(manifest, manifest_path, strings=("id", "file"), unique="id", present=("file",))
        return (lambda: check_manifest(manifest, manifest_path)), (
            lambda rows: join_rendered(rows, manifest, images.as_posix())
        )
    if "image" not in columns:  # a mistyped images folder, or a file: a KeyError traceback at the first chunk
        raise DataError(
            f"{shown(images)}: no {MANIFEST} here, and {shown(input)} has no 'image' column (name generate@S's "
            "image folder, or the raw path of a source that carries its images)"
        )
    # text_only only lets rows without an image through (those would fail otherwise), so it changes
    # no output byte: not a DVC param of this stage
    entry = load_section("sources", missing_ok=True).get(source)
    text_only = entry is not None and entry.text_only
    return (lambda: None), (lambda rows: carried_images(rows, source, text_only=text_only))


GENERATION_TEXTS = ("model", "scheduler", "format")  # copied into each row's `generation`, then the card
MAX_SETTING_CHARS = 1024  # a model id or a scheduler's name is tens of characters


def check_manifest(manifest: pd.DataFrame, path: Path) -> None:
    """One line naming the manifest and the row for a cell the rows take from it that they cannot hold: a width or
    height (a KeyError or TypeError once) and a generation setting that is no plain text: another type, a NUL, an
    escape code or other control character, a lone surrogate or over MAX_SETTING_CHARS (copied as it was into
    `generation`, then the card and the terminal)."""
    texts = tuple(c for c in GENERATION_TEXTS if c in manifest.columns)  # a manifest before a setting: none
    check_cells(manifest, path, sizes=("width", "height"), text=texts)
    for column in texts:
        values = manifest[column]
        for value in pd.unique(values[values.notna()]):  # a setting is mostly one value for every row
            why = setting_problem(value)
            if why:
                row = int(np.flatnonzero((values == value).to_numpy())[0]) + 1
                raise DataError(f"{shown(path)}: row {row}: column '{column}' {why}")


def setting_problem(text: str) -> str:
    """Why `text` is no generation setting ("" when it is one)."""
    if len(text) > MAX_SETTING_CHARS:
        return f"holds {len(text):,} characters, over the {MAX_SETTING_CHARS} a setting may have"
    bad = next((c for c in text if unicodedata.category(c) in ("Cc", "Cs")), None)
    if bad is None:
        return ""
    kind = "a lone surrogate (not UTF-8)" if unicodedata.category(bad) == "Cs" else "a control character"
    return f"holds {kind} {bad!a}; a setting is plain text"
