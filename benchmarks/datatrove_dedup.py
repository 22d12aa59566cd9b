"""datatrove's MinHash pipeline on prompts that `dedup_bench.py --datatrove` wrote; run by a venv made for it.

    /work/dtvenv/bin/python benchmarks/datatrove_dedup.py INPUT_FOLDER WORK_FOLDER [--ngrams 3] [--buckets 17]
        [--hashes-per-bucket 8] [--workers 2]

datatrove is not in requirements.txt. Its own venv (measured with datatrove 0.10.1):

    python3 -m venv /work/dtvenv
    /work/dtvenv/bin/pip install datatrove==0.10.1 pyarrow orjson regex "xxhash<4" tokenizers "spacy>=3.8"

The core install leaves out what these steps import (all in its `io`, `processing` and `multilingual`
extras, which pull much more): pyarrow (ParquetReader), orjson (JsonlWriter), regex and xxhash (text
normalisation, 64-bit shingle hashes), tokenizers (imported by `datatrove.pipeline.dedup`), spacy (the
English word tokenizer is a blank spacy pipeline; measured with spacy 3.8.18).

INPUT_FOLDER holds parquet shards with the columns id (the row number, as a string) and text, one shard
per task. The four stages run as datatrove's `examples/minhash_deduplication.py` runs them, one
LocalPipelineExecutor each (default start method, forkserver), one after the other:

  1. ParquetReader -> MinhashDedupSignature           tasks = shards, `--workers` processes
  2. MinhashDedupBuckets                              tasks = num_buckets (the stage needs a multiple of it)
  3. MinhashDedupCluster                              tasks = 1 (the stage needs one)
  4. ParquetReader -> MinhashDedupFilter(exclusion_writer=JsonlWriter)   tasks = shards

The kept documents are not written (the bench's other engines return a keep mask and write nothing);
the removed ones go through the exclusion writer, as in datatrove's example. MinhashConfig: word
`--ngrams`-grams of datatrove's text normalisation (lowercase, digits -> 0, punctuation -> space) and
spacy tokens, `--buckets` bands of `--hashes-per-bucket` 64-bit xxhash minima; a pair sharing a band is a
duplicate (no similarity check), clusters are its union-find components, one document of each is kept.

Prints one JSON line: seconds of each stage and of all four, the sampled peak PSS of this process and
all its descendants summed (benchmarks/_record.py TreeMemory), the largest peak RSS (VmHWM) of any one of
them, and the file listing the removed ids (one a line), written after the timed stages.
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._record import TreeMemory, _process_tree, _pss_kib


class TreePeaks(TreeMemory):
    """TreeMemory (peak of the summed PSS) plus the largest VmHWM of any one process of the tree."""

    largest_gib = 0.0

    def _run(self) -> None:
        while not self._stop.wait(self._every):
            pids = _process_tree()
            self.peak_gib = max(self.peak_gib, sum(map(_pss_kib, pids)) / 2**20)
            self.largest_gib = max(self.largest_gib, max(map(_hwm_kib, pids)) / 2**20)


def _hwm_kib(pid: int) -> int:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("input", type=Path, help="folder of parquet shards (id, text), one a task")
    parser.add_argument("work", type=Path, help="empty folder for signatures, buckets, clusters, logs")
    parser.add_argument("--ngrams", type=int, default=3)
    parser.add_argument("--buckets", type=int, default=17)
    parser.add_argument("--hashes-per-bucket", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()

    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.dedup import MinhashDedupSignature
    from datatrove.pipeline.dedup.minhash import (
        MinhashConfig,
        MinhashDedupBuckets,
        MinhashDedupCluster,
        MinhashDedupFilter,
    )
    from datatrove.pipeline.readers import ParquetReader
    from datatrove.pipeline.writers.jsonl import JsonlWriter
    from datatrove.utils.hashing import HashConfig
    from datatrove.utils.typeshelper import Languages

    config = MinhashConfig(
        n_grams=args.ngrams,
        num_buckets=args.buckets,
        hashes_per_bucket=args.hashes_per_bucket,
        hash_config=HashConfig(precision=64),
    )
    shards = len(list(args.input.glob("*.parquet")))
    work = args.work

    def reader() -> ParquetReader:
        return ParquetReader(str(args.input), text_key="text", id_key="id", glob_pattern="*.parquet")

    stages = {
        "signatures": LocalPipelineExecutor(
            pipeline=[
                reader(),
                MinhashDedupSignature(
                    output_folder=str(work / "signatures"), config=config, language=Languages.english
                ),
            ],
            tasks=shards,
            workers=args.workers,
            logging_dir=str(work / "logs" / "signatures"),
        ),
        "buckets": LocalPipelineExecutor(
            pipeline=[
                MinhashDedupBuckets(
                    input_folder=str(work / "signatures"), output_folder=str(work / "buckets"), config=config
                )
            ],
            tasks=config.num_buckets,
            workers=args.workers,
            logging_dir=str(work / "logs" / "buckets"),
        ),
        "clusters": LocalPipelineExecutor(
            pipeline=[
                MinhashDedupCluster(
                    input_folder=str(work / "buckets"), output_folder=str(work / "remove_ids"), config=config
                )
            ],
            tasks=1,
            workers=1,
            logging_dir=str(work / "logs" / "clusters"),
        ),
        "filter": LocalPipelineExecutor(
            pipeline=[
                reader(),
                MinhashDedupFilter(
                    input_folder=str(work / "remove_ids"),
                    exclusion_writer=JsonlWriter(str(work / "removed"), compression=None),
                ),
            ],
            tasks=shards,
            workers=args.workers,
            logging_dir=str(work / "logs" / "filter"),
        ),
    }
    seconds = {}
    with TreePeaks() as tree:
        start = time.perf_counter()
        for name, executor in stages.items():
            t0 = time.perf_counter()
            executor.run()
            seconds[name] = time.perf_counter() - t0
        total = time.perf_counter() - start

    removed_file = work / "removed_ids.txt"
    with removed_file.open("w") as out:
        for path in sorted((work / "removed").glob("*.jsonl*")):
            with (gzip.open if path.suffix == ".gz" else open)(path, "rt") as lines:
                out.writelines(json.loads(line)["id"] + "\n" for line in lines)
    print(
        json.dumps(
            {
                "seconds": seconds,
                "total_s": total,
                "tree_pss_gib": tree.peak_gib,
                "largest_rss_gib": tree.largest_gib,
                "removed_ids": str(removed_file),
                "config": str(config),
                "shards": shards,
                "workers": args.workers,
            }
        )
    )


if __name__ == "__main__":
    main()
