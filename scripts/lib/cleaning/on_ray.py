"""Cleaning on Ray Data (`runtime.engine: ray`): the same batch function, rules and outcomes as the
local engine, so the tables and the report are byte-identical.

The driver reads the prompt column a window of WINDOW_ROWS rows at a time and hands each to Ray in blocks
(a cluster's workers need not see the driver's disk; Ray Data's own parquet read lists files in a task that
needs a whole CPU, which never comes while the actors hold every CPU). A pool of actors (each compiles the
rules once: compiled regexes do not pickle) runs `clean_batch` over batches of `runtime.batch_rows` rows;
only the outcomes come back, in row order, and the driver writes them as they come, as the local engine
does (`OutcomeStream`): it holds one window, never the whole column (a source of 1B prompts).

Ray calls an actor's `map_batches` callable on a thread of its own, where no signal can stop a regex
(scripts/lib/regex_deadline.py): each actor cleans in a child process of its own, in that process's
main thread, so a regex that backtracks without end fails there as in the local engine.
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Generator, Iterator
from pathlib import Path

import pyarrow as pa

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
from scripts.lib.errors import DataError, shown
from scripts.lib.params import CleanRules, Runtime
from scripts.lib.ray_checks import blocks_note, bounded_blocks, ray_workers
from scripts.lib.ray_engine import failure_line, map_on_actors, ray_session
from scripts.lib.regex_deadline import RegexTooSlow
from scripts.lib.workers import Worker

ROWS_PER_BLOCK = 100_000  # runtime.partitions 0: one block per this many rows, at least 2 per worker
WINDOW_ROWS = 4_000_000  # prompts the driver reads and hands to Ray at a time (one actor pool a window)


class BatchCleaner:
    """A Ray actor's `map_batches` callable: a pyarrow batch of prompts -> its `text` and `reason`."""

    def __init__(self, rules: CleanRules, fast: bool, column: str):
        self.setup, self.column = (rules, fast), column
        self.worker: Worker | None = None  # started at the first batch, and again after one that it died on

    def clean(self, texts: list[str]) -> list[Outcome] | RegexTooSlow:
        """The texts' outcomes from this actor's cleaning process, or the `RegexTooSlow` it met. A process that
        died on the batch (killed: the OOM killer, an operator's `kill`) is started again for one more try: it
        ended clean@S at exit 1 with Ray's 96-line traceback, the run's work lost."""
        for last_try in (False, True):
            try:
                if self.worker is None:
                    self.worker = Worker(clean_batch_in_worker, start_worker, self.setup)
                    self.worker.start()
                self.worker.outbox.send([texts])
                ok, answer = self.worker.inbox.recv()
                break
            except (EOFError, OSError):  # the pipe closed: the process is gone (or going: stop kills it)
                code = self._stopped()
                if last_try:
                    raise RuntimeError(f"the cleaning process died twice on one batch (exit code {code})") from None
        if not ok:
            raise RuntimeError(f"worker process failed: {answer}")
        return answer[0]

    def _stopped(self) -> int | None:
        worker, self.worker = self.worker, None
        if worker is None:
            return None
        worker.stop()
        return worker.process.returncode

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


def outcome_batches(
    path: Path, column: str, rules: CleanRules, runtime: Runtime, desc: str = "clean", fast: bool = True
) -> Generator[list[Outcome], None, None]:
    """Each row's outcome for `column` of the parquet file at `path`, in row order, a batch at a time, cleaned on
    Ray a window at a time. Ray runs while the caller takes them; closing the generator shuts Ray down."""
    import pyarrow.compute as pc

    from scripts.lib.progress import track

    with ray_session(runtime) as ray:
        context = ray.data.DataContext.get_current()
        context.execution_options.preserve_order = True  # outcomes in row order, on any cluster
        context.enable_progress_bars = False  # one progress line of ours instead
        workers = ray_workers(runtime.workers, ray.cluster_resources().get("CPU", 1))  # at most the cluster's CPUs

        def cleaned() -> Iterator[pa.Table]:
            for index, window in enumerate(prompt_windows(path, column, WINDOW_ROWS)):
                parts = blocks_of(window, window_blocks(runtime, workers, window.num_rows, say=index == 0))
                dataset = map_on_actors(
                    ray.data.from_arrow(parts),
                    BatchCleaner,
                    fn_constructor_args=(rules, fast, column),
                    batch_format="pyarrow",
                    batch_size=runtime.batch_rows,
                    # no more actors than blocks: Ray Data warns (a UserWarning beside the output) of a pool it cannot fill
                    concurrency=min(workers, len(parts)),
                    num_cpus=1,
                )
                yield from dataset.iter_batches(batch_format="pyarrow", batch_size=None)

        done = 0
        batches = track(cleaned(), total=None, desc=desc, unit="batches")
        while (batch := _next_or_one_line(ray, batches)) is not None:
            reasons = batch.column("reason")
            index = pc.index(pc.starts_with(reasons, TOO_SLOW), True).as_py()
            if index >= 0:
                slow = RegexTooSlow(*json.loads(reasons[index].as_py().removeprefix(TOO_SLOW)))
                raise slow_regex_error(slow, compile_rules(rules, fast=fast), f"{shown(path)}: row {done + index}")
            done += batch.num_rows
            yield list(zip(batch.column("text").to_pylist(), reasons.to_pylist()))


def _next_or_one_line(ray, batches: Iterator[pa.Table]) -> pa.Table | None:
    """The next batch Ray cleaned; a failure inside Ray (an actor lost for good, a task that raised) is one
    line, not Ray's traceback of the actor's and the driver's stacks at exit 1."""
    try:
        return next(batches, None)
    except (ray.exceptions.RayError, ray.exceptions.RaySystemError) as exc:
        raise DataError(failure_line(exc, "clean")) from None


def prompt_windows(path: Path, column: str, rows: int) -> Iterator[pa.Table]:
    """`column` of the parquet file at `path`, at most `rows` rows at a time, in order (a file of no rows: one
    window of none, as Ray is handed one block at least)."""
    import pyarrow.parquet as pq

    from scripts.lib.tables import utf8_checked

    file = pq.ParquetFile(path)
    batches = file.iter_batches(batch_size=rows, columns=[column])
    first = next(batches, None)
    if first is None:
        yield file.schema_arrow.empty_table().select([column])
        return
    row = 1
    for batch in itertools.chain([first], batches):  # checked as the local engine's reads are: a worker's traceback
        yield pa.Table.from_batches([utf8_checked(batch, path, row)])
        row += batch.num_rows


def window_blocks(runtime: Runtime, workers: int, rows: int, say: bool) -> int:
    """Blocks for a window of `rows` rows: runtime.partitions, else one per ROWS_PER_BLOCK rows and at least 2 per
    worker; bounded by the rows (ray_checks.bounded_blocks: `partitions: 1000000` cut 200 rows into 200 one-row
    blocks), which `say` prints in one line when it cut the param."""
    asked = runtime.partitions or max(2 * workers, math.ceil(rows / ROWS_PER_BLOCK))
    used = bounded_blocks(asked, rows, workers)
    if say and (note := blocks_note(f"partitions={runtime.partitions}", rows, runtime.partitions, used)):
        print(note)
    return used


def blocks_of(table: pa.Table, blocks: int) -> list[pa.Table]:
    """`table` cut into `blocks` slices of equal rows (the last shorter; one of none for no rows)."""
    size = max(1, math.ceil(table.num_rows / blocks))
    return [table.slice(start, size) for start in range(0, max(table.num_rows, 1), size)]


class OutcomeStream:
    """The outcomes of `outcome_batches`, taken in row order a chunk at a time (a chunk of the command's own size,
    which cuts across Ray's batches)."""

    def __init__(self, batches: Generator[list[Outcome], None, None]):
        self.batches, self.pending = batches, []  # type: ignore[var-annotated]

    def take(self, rows: int) -> list[Outcome]:
        while len(self.pending) < rows:
            batch = next(self.batches, None)
            if batch is None:
                raise RuntimeError(f"the Ray engine returned fewer outcomes than rows ({len(self.pending)} < {rows})")
            self.pending += batch
        taken, self.pending = self.pending[:rows], self.pending[rows:]
        return taken

    def close(self) -> None:
        """Ray shut down (the generator closed), the outcomes taken or not: a failed or interrupted run."""
        self.batches.close()

    def finish(self) -> None:
        """Every outcome taken: Ray shut down (the generator closed), before the outputs are renamed in."""
        extra = len(self.pending) + sum(len(batch) for batch in self.batches)
        if extra:
            raise RuntimeError(f"the Ray engine returned {extra} outcomes more than rows")


# An actor's batch whose regex ran past its bound comes back with this reason at the prompt's rows:
# an exception raised in an actor reaches the driver as Ray's own, its details lost on the way.
TOO_SLOW = "\x00regex too slow "


def _too_slow_outcomes(prompts: list[str | None], slow: RegexTooSlow) -> list[Outcome]:
    mark = TOO_SLOW + json.dumps([list(slow.patterns), slow.seconds])
    return [(None, mark if prompt == slow.prompt else None) for prompt in prompts]
