"""One reader per native source format (docs/contracts.md §5), picked by `params.yaml: sources.<name>.kind`."""

from scripts.lib.readers.base import Problem, Record, SourceConfig, noting_skips
from scripts.lib.readers.csv_sources import read_kaggle_sd2, read_openprompts
from scripts.lib.readers.dalle3 import compile_simpletuner, read_dalle3
from scripts.lib.readers.parquet_sources import read_diffusiondb, read_gustavosta
from scripts.lib.readers.text import read_text
from scripts.lib.readers.webdataset import read_bucketed_webdataset

READERS = {  # each noting where its skipped records are (report.json's `skipped_at`)
    kind: noting_skips(read)
    for kind, read in {
        "diffusiondb": read_diffusiondb,
        "gustavosta": read_gustavosta,
        "openprompts": read_openprompts,
        "text": read_text,
        "kaggle_sd2": read_kaggle_sd2,
        "dalle3": read_dalle3,
        "bucketed_webdataset": read_bucketed_webdataset,
    }.items()
}

__all__ = ["READERS", "Problem", "Record", "SourceConfig", "compile_simpletuner"]
