"""Cleaning on Ray Data (`runtime.engine: ray`): the same batch function, rules and outcomes as the
local engine, so the tables and the report are byte-identical.

The driver reads the prompt column (it holds every outcome anyway) and hands it to Ray in blocks: Ray
Data's own parquet read lists files in a task that needs a whole CPU, which never comes while the
actors hold every CPU. A pool of actors (each compiles the rules once: compiled regexes do not pickle)
runs `clean_batch` over batches of `runtime.batch_rows` rows; only the outcomes come back, in row
order, and the driver writes the outputs as the local engine does.

Ray calls an actor's `map_batches` callable on a thread of its own, where no signal can stop a regex
(scripts/lib/regex_deadline.py): each actor cleans in a child process of its own, in that process's
main thread, so a regex that backtracks without end fails there as in the local engine.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from scripts.lib.cleaning.compiler import compile_rules
from scripts.lib.cleaning.table import (
    clean_batch_in_worker,
    distinct,
    outcomes_of,
    prompt_values,
    slow_regex_error,
    start_worker,
)
from scripts.lib.cleaning.text import Outcome
from scripts.lib.errors import shown
from scripts.lib.params import CleanRules, Runtime
from scripts.lib.ray_engine import ray_session
from scripts.lib.regex_deadline import RegexTooSlow
from scripts.lib.workers import Worker

ROWS_PER_BLOCK = 100_000  # runtime.partitions 0: one block per this many rows, at least 2 per worker


class BatchCleaner:
    """A Ray actor's `map_batches` callable: a pyarrow batch of prompts -> its `text` and `reason`."""

    def __init__(self, rules: CleanRules, fast: bool, column: str):
        self.worker, self.column = Worker(clean_batch_in_worker, start_worker, (rules, fast)), column
        self.worker.start()

    def clean(self, texts: list[str]) -> list[Outcome] | RegexTooSlow:
        """The texts' outcomes from this actor's cleaning process, or the `RegexTooSlow` it met."""
        self.worker.outbox.send([texts])
        ok, answer = self.worker.inbox.recv()
        if not ok:
            raise RuntimeError(f"worker process failed: {answer}")
        return answer[0]

    def __call__(self, batch):
        import pyarrow as pa

        prompts = prompt_values(batch.column(self.column).to_pylist())
        texts = distinct(prompts)
        cleaned = self.clean(texts)
        if isinstance(cleaned, RegexTooSlow):
            outcomes = _too_slow_outcomes(prompts, cleaned)
        else:
            outcomes = outcomes_of(prompts, dict(zip(texts, cleaned)))
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
    import pyarrow.compute as pc
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
        parts = [prompts.slice(start, size) for start in range(0, max(rows, 1), size)]
        dataset = ray.data.from_arrow(parts).map_batches(
            BatchCleaner,
            fn_constructor_args=(rules, fast, column),
            batch_format="pyarrow",
            batch_size=runtime.batch_rows,
            # no more actors than blocks: Ray Data warns (a UserWarning beside the output) of a pool it cannot fill
            concurrency=min(workers, len(parts)),
            num_cpus=1,
        )
        outcomes: list[Outcome] = []
        batches = dataset.iter_batches(batch_format="pyarrow", batch_size=None)
        for batch in track(batches, total=None, desc=desc, unit="batches"):
            reasons = batch.column("reason")
            index = pc.index(pc.starts_with(reasons, TOO_SLOW), True).as_py()
            if index >= 0:
                slow = RegexTooSlow(*json.loads(reasons[index].as_py().removeprefix(TOO_SLOW)))
                row = f"{shown(path)}: row {len(outcomes) + index}"
                raise slow_regex_error(slow, compile_rules(rules, fast=fast), row)
            outcomes += zip(batch.column("text").to_pylist(), reasons.to_pylist())
    return outcomes


# An actor's batch whose regex ran past its bound comes back with this reason at the prompt's rows:
# an exception raised in an actor reaches the driver as Ray's own, its details lost on the way.
TOO_SLOW = "\x00regex too slow "


def _too_slow_outcomes(prompts: list[str | None], slow: RegexTooSlow) -> list[Outcome]:
    mark = TOO_SLOW + json.dumps([list(slow.patterns), slow.seconds])
    return [(None, mark if prompt == slow.prompt else None) for prompt in prompts]
