"""`python -m scripts simpletuner`: DALL-E-3 tar shards -> SimpleTuner's DALL-E-3 preset, streamed.

    python -m scripts simpletuner SHARDS dalle3.parquet --data-dir data [--caption-field long_caption]

Writes the preset's parquet (`width, height, caption, filename`, filename = the json's `image_name`),
and with --data-dir the preset's `data/` folder (each image under its `image_name`, its `<stem>.txt`
caption beside it) plus a multidatabackend.json entry that points SimpleTuner at both (default
beside the parquet; --config to put it elsewhere). scripts/lib/simpletuner.py is the one writer.
"""

from __future__ import annotations

import os
from pathlib import Path

from scripts.lib.errors import DataError
from scripts.lib.io import (
    check_apart,
    check_files_ours,
    check_not_input,
    check_output_kind,
    file_is_ours,
    shown,
)
from scripts.lib.readers.dalle3 import compile_simpletuner
from scripts.lib.simpletuner import CONFIG_NAME


def check_config_ours(path: Path) -> None:
    """Refuse to replace a data-backend config we did not write, or one the user tuned since (a
    resolution, a repeat count: SimpleTuner's configs are made to be edited). Listing our backend ids
    proves nothing (a tuned copy of ours lists them too): only file_is_ours does."""
    if os.path.lexists(path):
        check_output_kind(path)
        if path.is_dir():  # a folder is no config of anyone's: say so, not "one this command did not write"
            raise DataError(f"{shown(path)}: is a folder, expected a file path for the data-backend config")
        if not file_is_ours(path):
            raise DataError(
                f"{shown(path)}: a data-backend config this command did not write, or one changed since it "
                "wrote it; refusing to replace it (--config elsewhere, or move it away)"
            )


def check_printable(path: Path | None, what: str) -> None:
    """Refuse a path this command writes, or writes into SimpleTuner's config, that holds a line break, an
    escape code or another unprintable character (as given or through the working folder it is resolved
    against): it was written at exit 0, a file name no listing shows as it is and a config entry no one reads
    back as typed. An undecodable byte (os.fsdecode's surrogateescape) is unprintable too."""
    if path is not None and not os.fsdecode(os.path.abspath(path)).isprintable():
        raise DataError(
            f"{what} {shown(path)}: holds a line break, escape code or other unprintable character; "
            "refusing it (name a plain path)"
        )


def check_cache_dir(cache_dir: Path) -> None:
    """Refuse a --cache-dir SimpleTuner cannot make its cache folders under: a file, a device (/dev/null),
    a FIFO, or a link to one (the config was written, and SimpleTuner failed at its first cached latent)."""
    if os.path.lexists(cache_dir) and not cache_dir.is_dir():
        raise DataError(
            f"{shown(cache_dir)}: --cache-dir exists and is not a folder (SimpleTuner writes its caches under it)"
        )


def cli(
    shards: Path,
    output: Path,
    caption_field: str = "short_caption",
    data_dir: Path | None = None,
    config: Path | None = None,
    txt_dir: Path | None = None,
    on_error: str = "skip",
) -> None:
    """Compile DALL-E-3 tar shards (a folder or one .tar) to SimpleTuner's parquet, images + <stem>.txt
    captions (--data-dir) and multidatabackend.json (--config, default beside the parquet)."""
    if on_error not in ("skip", "fail"):
        raise DataError(f"--on-error must be skip or fail, got {on_error!r}")
    if config is not None and data_dir is None:
        raise DataError("--config needs --data-dir (the folder the config points SimpleTuner at)")
    for path, what in ((output, "output"), (data_dir, "--data-dir"), (config, "--config"), (txt_dir, "--txt-dir")):
        check_printable(path, what)  # the default --config: beside the output, checked as the output
    if data_dir is not None and config is None:
        config = output.parent / CONFIG_NAME
    # before any work: an output that is (or holds) the shards or another output would replace it
    check_not_input(output, [shards])
    check_files_ours(output)
    for folder in (data_dir, txt_dir):
        if folder is not None:
            check_not_input(folder, [shards, output] + ([config] if config else []))
    if config is not None:
        check_not_input(config, [shards, output])
        check_config_ours(config)
    check_apart(output, data_dir, txt_dir, config)
    stats = compile_simpletuner(
        [shards] if shards.is_file() else shards,
        output,
        caption_field,
        data_dir=data_dir,
        config=config,
        write_txt_dir=txt_dir,
        on_error=on_error,
    )
    skipped = ", ".join(f"{k} {v}" for k, v in sorted(stats["skipped"].items())) or "none"
    extra = f" + {data_dir}/ (images, <stem>.txt) + {config}" if data_dir is not None else ""
    print(
        shown(
            f"simpletuner: {stats['rows_written']} of {stats['rows_read']} records -> {output}{extra} (skipped: {skipped})"
        )
    )


def cli_config(
    split: Path,
    output: Path,
    cache_dir: Path = Path("simpletuner-cache"),
) -> None:
    """Write a SimpleTuner data-backend config (absolute paths) for a split of a release built with
    `export: simpletuner` (its multidatabackend.json holds paths relative to the release)."""
    from scripts.lib.io import atomic_path
    from scripts.lib.nesting import dumps_json
    from scripts.lib.safe_paths import resolved
    from scripts.lib.simpletuner import absolute_config
    from scripts.lib.temps import output_lock

    for path, what in ((output, "--output"), (cache_dir, "--cache-dir"), (split, "split")):
        check_printable(path, what)  # the split's and the caches' folders are written into the config
    release = resolved(split).parent
    for path, what in ((output, "--output"), (cache_dir, "--cache-dir")):
        if resolved(path) == release or release in resolved(path).parents:
            raise DataError(
                f"{path}: inside the release folder {release} ({what} must be elsewhere: DVC owns that folder)"
            )
    check_cache_dir(cache_dir)
    check_config_ours(output)
    with output_lock(output, whole_run=True):  # a second run at once is refused before it reads the release
        entries = absolute_config(split, cache_dir)
        with atomic_path(output) as tmp:
            tmp.write_text(dumps_json(entries, output, indent=2) + "\n", encoding="utf-8")
    print(shown(f"simpletuner-config: {output} (images and parquet in {release}, caches in {resolved(cache_dir)})"))
