"""Cleaning on Ray Data (`runtime.engine: ray`): the same batch function, rules and outcomes as the
local engine, so the tables and the report are byte-identical.

The driver reads the prompt column (it holds every outcome anyway) and hands it to Ray in blocks: Ray
Data's own parquet read lists files in a task that needs a whole CPU, which never comes while the
actors hold every CPU. A pool of actors (each compiles the rules once: compiled regexes do not pickle)
runs `clean_batch` over batches of `runtime.batch_rows` rows; only the outcomes come back, in row
order, and the driver writes the outputs as the local engine does.
"""

from __future__ import annotations

import math
from pathlib import Path

from scripts.lib.cleaning.compiler import compile_rules
from scripts.lib.cleaning.table import clean_batch, distinct, outcomes_of, prompt_values
from scripts.lib.cleaning.text import Outcome
from scripts.lib.params import CleanRules, Runtime
from scripts.lib.ray_engine import ray_session

ROWS_PER_BLOCK = 100_000  # runtime.partitions 0: one block per this many rows, at least 2 per worker


class BatchCleaner:
    """A Ray actor's `map_batches` callable: a pyarrow batch of prompts -> its `text` and `reason`."""

    def __init__(self, rules: CleanRules, fast: bool, column: str):
        self.rules, self.column = compile_rules(rules, fast=fast), column

    def __call__(self, batch):
        import pyarrow as pa

        prompts = prompt_values(batch.column(self.column).to_pylist())
        texts = distinct(prompts)
        outcomes = outcomes_of(prompts, dict(zip(texts, clean_batch(texts, self.rules))))
        return pa.table(
            {
                "text": pa.array([text for text, _ in outcomes], pa.string()),
                "reason": pa.array([reason for _, reason in outcomes], pa.string()),
            }
        )


def outcomes_on_ray(
    path: Path, column: str, rules: CleanRules, runtime: Runtime, desc: str = "clean", fast: bool = True
) -> list[Outcome]:
    """Each row's outcome for `column` of the parquet file at `path`, in row order, cleaned on Ray."""
    import pyarrow.parquet as pq

    from scripts.lib.progress import track

    prompts = pq.read_table(path, columns=[column])
    rows = prompts.num_rows
    with ray_session(runtime) as ray:
        context = ray.data.DataContext.get_current()
        context.execution_options.preserve_order = True  # outcomes in row order, on any cluster
        context.enable_progress_bars = False  # one progress line of ours instead
        workers = runtime.workers or max(1, int(ray.cluster_resources().get("CPU", 1)))
        blocks = runtime.partitions or max(2 * workers, math.ceil(rows / ROWS_PER_BLOCK))
        size = max(1, math.ceil(rows / blocks))
        dataset = ray.data.from_arrow([prompts.slice(start, size) for start in range(0, max(rows, 1), size)])
        dataset = dataset.map_batches(
            BatchCleaner,
            fn_constructor_args=(rules, fast, column),
            batch_format="pyarrow",
            batch_size=runtime.batch_rows,
            concurrency=workers,
            num_cpus=1,
        )
        outcomes: list[Outcome] = []
        batches = dataset.iter_batches(batch_format="pyarrow", batch_size=None)
        for batch in track(batches, total=None, desc=desc, unit="batches"):
            outcomes += zip(batch.column("text").to_pylist(), batch.column("reason").to_pylist())
    return outcomes
