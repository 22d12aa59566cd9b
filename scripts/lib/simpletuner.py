"""The one SimpleTuner writer: the DALL-E-3 preset's files, for the `simpletuner` tool (DALL-E-3 tar
shards: scripts/lib/readers/dalle3.py compile_simpletuner) and the release export `format: simpletuner`.

What SimpleTuner's DALL-E-3 preset (../shared/seeds/simpletuner-dalle3-preset.txt) asks for:
- a parquet table `width, height, caption, filename` (int32, int32, string, string), `filename` the
  image's name relative to `instance_data_dir` WITH its extension (for DALL-E-3: the json's
  `image_name`, not the tar member's name);
- `<stem>.txt` beside each image holding its caption (caption_strategy "textfile");
- a data-backend entry (`multidatabackend.json`, a JSON list) with the parquet metadata backend.

SimpleTuner's own keys, checked against bghira/SimpleTuner: documentation/DATALOADER.md ("Parquet
caption strategy / JSON Lines datasets": `metadata_backend: parquet` and the `parquet` block with
`path`, `filename_column`, `caption_column`, `width_column`, `height_column`,
`identifier_includes_extension`; `caption_strategy: textfile` "requires your image.png be next to an
image.txt"; a `dataset_type: text_embeds` entry with `default: true`) and
simpletuner/helpers/metadata/backends/parquet.py (ParquetMetadataBackend reads `parquet_config["path"]`,
indexes the table by `filename_column`, and matches a file by its path with `instance_data_dir`
removed, keeping the extension when `identifier_includes_extension` is true), with
simpletuner/helpers/data_backend/local.py (list_files gives absolute paths: hence absolute_config) and
simpletuner/helpers/data_backend/factory.py (init_backend_config: `resolution_type: area` needs
maximum_image_size and target_downsample_size under 20 megapixels; check_column_values refuses an
empty caption). A release split's sizes come from its images (`resolution_for`): SimpleTuner drops an
image under `minimum_image_size` (its metadata backend's meets_resolution_requirements).
"""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath
from typing import Any

import pandas as pd

from scripts.lib.errors import DataError, shown, shown_short
from scripts.lib.io import atomic_path
from scripts.lib.nesting import dumps_json, loads_json
from scripts.lib.safe_paths import dvc_cache_of, inside, new_file, open_regular, opened_real_path, read_capped, resolved

COLUMNS = ["width", "height", "caption", "filename"]  # the preset's compile.py, in its order
PARQUET_NAME = "simpletuner.parquet"
MAX_CONFIG_BYTES = 16 << 20  # a release's data-backend config is two entries: kilobytes
CONFIG_NAME = "multidatabackend.json"
# The preset's resolution settings (its "data loader entry"): 1 megapixel area buckets, images under
# 0.75 MP dropped, images over 2 MP downsampled to 1.75 MP before cropping.
PRESET_RESOLUTION = {
    "resolution": 1.0,
    "maximum_image_size": 2.0,
    "minimum_image_size": 0.75,
    "target_downsample_size": 1.75,
    "resolution_type": "area",
}


def _schema():
    import pyarrow as pa

    return pa.schema(
        [("width", pa.int32()), ("height", pa.int32()), ("caption", pa.string()), ("filename", pa.string())]
    )


def txt_name(filename: str) -> str:
    """The caption file beside an image: the preset's `os.path.splitext(image_name)[0] + ".txt"`."""
    path = PurePosixPath(filename)
    return str(path.with_name(path.stem + ".txt")) if path.suffix else filename + ".txt"


# The rows held before they are written as a row group. 50,000 were held as Python lists (about 1 KB a row with
# short captions: peak RSS grew 48 MiB from 0 to 50,000 records, then stayed; 50,000 rows of 64 KB captions were
# 3 GB). 8,192 rows or 8 MiB of text, whichever comes first: a 1M-record parquet has ~125 row groups.
ROW_GROUP_ROWS = 8192
ROW_GROUP_TEXT = 8 << 20


def table_writer(path: Path, batch_rows: int = ROW_GROUP_ROWS):
    """The parquet table (the preset's COLUMNS), streamed: millions of DALL-E-3 records in flat memory."""
    from scripts.lib.tables import ParquetRows

    return ParquetRows(path, _schema(), batch_rows, flush_bytes=ROW_GROUP_TEXT)


# SimpleTuner refuses a pixel maximum_image_size or target_downsample_size under 512 (it takes it for megapixels)
MIN_PIXEL_CAP = 512


def resolution_for(sizes: list[tuple[int, int]]) -> dict[str, Any]:
    """Resolution settings every image of `sizes` (width, height) passes: pixel edges, the shortest edge of
    any image as both the training resolution and the minimum (so SimpleTuner drops none and upsamples
    none past its own size), and a downsampling cap no image reaches. No images: the preset's."""
    if not sizes:
        return dict(PRESET_RESOLUTION)
    edge = min(min(w, h) for w, h in sizes)
    cap = max(MIN_PIXEL_CAP, max(max(w, h) for w, h in sizes))
    return {
        "resolution": edge,
        "maximum_image_size": cap,
        "minimum_image_size": edge,
        "target_downsample_size": cap,
        "resolution_type": "pixel",
    }


def backend_config(
    dataset_id: str,
    instance_data_dir: str,
    parquet_path: str,
    cache_dir: str,
    caption_strategy: str = "textfile",
    resolution: dict | None = None,
) -> list[dict[str, Any]]:
    """A multidatabackend.json SimpleTuner accepts: the image entry (parquet metadata backend; `resolution`
    settings, the preset's by default) and the default text-embed cache every SimpleTuner run needs."""
    image = {
        "id": dataset_id,
        "type": "local",
        "dataset_type": "image",
        "instance_data_dir": instance_data_dir,
        **(resolution or PRESET_RESOLUTION),
        "cache_dir_vae": f"{cache_dir}/vae/{dataset_id}",
        "caption_strategy": caption_strategy,
        "metadata_backend": "parquet",
        "parquet": {
            "path": parquet_path,
            "caption_column": "caption",
            "filename_column": "filename",
            "width_column": "width",
            "height_column": "height",
            "identifier_includes_extension": True,
        },
    }
    text = {
        "id": f"{dataset_id}-text-embeds",
        "type": "local",
        "dataset_type": "text_embeds",
        "default": True,
        "cache_dir": f"{cache_dir}/text/{dataset_id}",
    }
    return [image, text]


def write_config(entries: list[dict], path: Path) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(dumps_json(entries, path, indent=2) + "\n", encoding="utf-8")  # NaN: refused


# --- release export -----------------------------------------------------------------------------


def write_release_split(rows: pd.DataFrame, folder: Path, placed) -> None:
    """A release split as SimpleTuner data: `placed` puts every image in `folder` and yields
    (row, file_name); beside each image its `.txt`, then simpletuner.parquet (filename relative to the
    split folder, SimpleTuner's instance_data_dir; width and height read from the image, as shown) and
    multidatabackend.json, its sizes fitted to these images (resolution_for). Its paths are relative to
    the release folder (`train`, `train/simpletuner.parquet`), so the release's bytes do not depend on
    where it is built; `python -m scripts simpletuner-config` makes them absolute (absolute_config)."""
    from scripts.lib.pixels import opened, shown_size

    split = folder.name
    sizes = []
    with atomic_path(folder / PARQUET_NAME) as tmp, table_writer(tmp) as table:
        for row, file_name in placed:
            new_file(folder / txt_name(file_name), row.text.encode("utf-8"))  # never into a linked image
            image_path = folder / file_name
            with opened(image_path, str(image_path)) as image:  # the header only: the size as shown (EXIF
                sizes.append(shown_size(image))  # turned), as trainers load it (exif_transpose)
            table.add(*sizes[-1], row.text, file_name)
    write_config(
        backend_config(f"t2i-{split}", split, f"{split}/{PARQUET_NAME}", "cache", resolution=resolution_for(sizes)),
        folder / CONFIG_NAME,
    )


def absolute_config(split_dir: Path, cache_dir: Path) -> list[dict[str, Any]]:
    """A release split's multidatabackend.json with absolute paths, for SimpleTuner to use as it is.

    SimpleTuner's local backend lists images by absolute path, and its parquet metadata backend turns
    one into an identifier by deleting the `instance_data_dir` string from it; a relative
    instance_data_dir matches nothing, and every image would count as having no caption. The release
    keeps relative paths (its bytes must not depend on where it was built); this resolves them against
    the release folder, and the caches against `cache_dir` (outside the release: DVC owns that folder)."""
    split_dir = resolved(split_dir)
    path = split_dir / CONFIG_NAME
    release, cache = split_dir.parent, resolved(cache_dir)
    if not os.path.lexists(path):
        raise DataError(f"{shown(path)}: not found (a split of a release built with export: simpletuner?)")
    check_in_release(path, release)
    try:
        entries = loads_json(config_in_release(path, release).decode("utf-8"))  # regular, capped, depth-checked
    except ValueError as exc:  # UnicodeDecodeError, TooDeep, NaN, a lone surrogate: each a ValueError
        raise DataError(f"{shown(path)}: not valid JSON ({shown_short(str(exc))})") from None
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise DataError(f"{path}: expected a list of data-backend entries")
    for number, entry in enumerate(entries, start=1):
        where = f"{shown(path)}: entry {number}"
        if "instance_data_dir" in entry:
            entry["instance_data_dir"] = confined(entry["instance_data_dir"], release, f"{where}: instance_data_dir")
        for key in ("cache_dir_vae", "cache_dir"):
            if key in entry:  # written as cache/...: the cache folder's own name is not repeated
                value = entry[key].removeprefix("cache/") if isinstance(entry[key], str) else entry[key]
                entry[key] = confined(value, cache, f"{where}: {key}")
        if isinstance(entry.get("parquet"), dict) and "path" in entry["parquet"]:
            entry["parquet"]["path"] = confined(entry["parquet"]["path"], release, f"{where}: parquet.path")
    return entries


def config_in_release(path: Path, release: Path) -> bytes:
    """The config's bytes from its one open (safe_paths.open_regular: regular, never waited on), checked again
    there by what the descriptor names: a link out swapped in after check_in_release's look was read."""
    with open_regular(path) as file:
        check_in_release(path, release, opened_real_path(file, path))
        return read_capped(file, MAX_CONFIG_BYTES, path)


def check_in_release(path: Path, release: Path, real: str | None = None) -> None:
    """Refuse a config that is a link leading out of the release (a 3 GB file elsewhere was read whole),
    but into DVC's cache (cache.type symlink links a release's files there); `real`: where the opened file is."""
    real, dvc_cache = os.path.realpath(path) if real is None else real, dvc_cache_of(release)
    if not (inside(real, str(release)) or (dvc_cache is not None and inside(real, dvc_cache))):
        raise DataError(
            f"{shown(path)}: a link out of the release {shown(release)} (to {shown_short(real)}); refusing to read it"
        )


def confined(value, root: Path, where: str) -> str:
    """`value` (a path read from a release's config) made absolute against `root`, refused unless it stays
    inside `root` as written (`..` applied) and after every link, but a link into DVC's cache (cache.type
    symlink links a release's files there): `../../etc`, `/etc/shadow`, a link out are the data's, not ours."""
    if not isinstance(value, str) or not value or "\0" in value:
        raise DataError(f"{where}: {shown_short(repr(value))} is not a path")
    named = os.path.normpath(os.path.join(root, value))
    real, top = os.path.realpath(named), os.path.realpath(root)
    dvc_cache = dvc_cache_of(top)
    if not (inside(named, str(root)) and (inside(real, top) or (dvc_cache is not None and inside(real, dvc_cache)))):
        raise DataError(
            f"{where}: {shown_short(repr(value))} is outside {shown(root)}; refusing to point SimpleTuner at it"
        )
    return named
