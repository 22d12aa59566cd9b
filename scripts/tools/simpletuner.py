"""`python -m scripts simpletuner`: compile DALL-E-3 tar shards to SimpleTuner's parquet (+ <stem>.txt)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

from scripts.lib.errors import DataError
from scripts.lib.io import check_not_input
from scripts.lib.readers.dalle3 import compile_simpletuner


def cli(
    shards: Path,
    output: Path,
    caption_field: str = "short_caption",
    txt_dir: Optional[Path] = None,
    on_error: str = "skip",
) -> None:
    """Compile DALL-E-3 tar shards (a folder or one .tar) to SimpleTuner's parquet (+ <stem>.txt captions)."""
    if on_error not in ("skip", "fail"):
        raise DataError(f"--on-error must be skip or fail, got {on_error!r}")
    # before any work: an output that is (or holds) the shards would replace them
    check_not_input(output, [shards])
    if txt_dir is not None:
        check_not_input(txt_dir, [shards, output])
    stats = compile_simpletuner([shards] if shards.is_file() else shards, output, caption_field,
                                write_txt_dir=txt_dir, on_error=on_error)
    skipped = ", ".join(f"{k} {v}" for k, v in sorted(stats["skipped"].items())) or "none"
    print(f"simpletuner: {stats['rows_written']} of {stats['rows_read']} records -> {output} (skipped: {skipped})")
