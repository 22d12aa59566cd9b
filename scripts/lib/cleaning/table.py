"""Tables through the cleaner: rows in -> (kept rows + `text`, dropped rows + `reason`), order kept.

`clean_batch` is the one batch function every engine runs (this process, worker processes, Ray's
`map_batches`); `split_rows` turns the per-row outcomes into the two tables the same way for all.
`clean_table` cleans `column` (the raw prompt), never `text`: the raw prompt is the source of truth,
cleaning is not idempotent, and re-cleaning must reproduce exactly what clean@S would have written.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from contextlib import closing
from typing import Any

from scripts.lib.cleaning.compiler import compile_rules
from scripts.lib.cleaning.rule_sets import MODES
from scripts.lib.cleaning.rules import Rules
from scripts.lib.cleaning.text import CONTROL_CHARS, EMPTY, Outcome, clean_text
from scripts.lib.errors import DataError, shown
from scripts.lib.params import CleanRules
from scripts.lib.regex_deadline import RegexTooSlow, bounded_regexes

PARALLEL_MIN_ROWS = 20_000  # below this, starting worker processes costs more than it saves
WORKER_BATCH = 2_000  # distinct prompts handed to a worker process at a time


def clean_batch(texts: Iterable[str | None], rules: Rules) -> list[Outcome]:
    """The batch function of every engine: each text's outcome, in order. A regex call that runs
    past its time bound raises `RegexTooSlow` naming the text (scripts/lib/regex_deadline.py)."""
    outcomes = []
    with bounded_regexes():
        for text in texts:
            try:
                outcomes.append(clean_text(text, rules))
            except RegexTooSlow as exc:
                raise exc.for_prompt(text) from None
    return outcomes


def slow_regex_error(exc: RegexTooSlow, rules: Rules, row: str) -> DataError:
    """The one line for a regex that ran past its bound on the prompt at `row`."""
    return DataError(
        f"{row}: {rules.regex_rule(exc.patterns)} ran over {exc.seconds:g} s on this prompt "
        "(it backtracks without end: rewrite it without a repeat inside a repeat; see docs/cleaning.md)"
    )


def prompt_values(values: Iterable[Any]) -> list[str | None]:
    """A column's values as prompts: missing ones (None, NaN) as None."""
    return [None if value is None or (isinstance(value, float) and value != value) else str(value) for value in values]


def distinct(prompts: Sequence[str | None]) -> list[str]:
    """Each prompt once, in first-seen order: real sources repeat prompts a lot."""
    return list(dict.fromkeys(p for p in prompts if p is not None))


def outcomes_of(prompts: Sequence[str | None], cleaned: dict[str, Outcome]) -> list[Outcome]:
    return [cleaned[p] if p is not None else (None, EMPTY) for p in prompts]


def clean_table(
    df,
    rules: Rules,
    column: str = "prompt",
    desc: str = "clean",
    mode: str = "rewrite",
    workers: int = 1,
    rows_in: str | None = None,
    first_row: int = 0,
):
    """Clean `column` of every row: (kept rows + `text`, dropped rows + `reason`), order preserved.
    mode: rewrite (`text` = the cleaned prompt), filter_only (the rules decide which rows go, `text` =
    the raw `column`: the team's v4-a bug) or off (every row kept, `text` = the raw `column`).
    `desc` names the loop in its progress bar; `workers` > 1 cleans in that many processes (same output).
    An error names the row as `rows_in` (default `desc`): row `first_row` + its place in `df`."""
    check_mode(mode)
    if column not in df.columns:
        raise DataError(f"clean: input table has no '{column}' column")
    if mode == "off":
        return pass_through(df, column)
    prompts = prompt_values(df[column].tolist())
    texts = distinct(prompts)
    try:
        cleaned = dict(zip(texts, _clean_locally(texts, rules, desc, workers)))
    except RegexTooSlow as exc:
        index = prompts.index(exc.prompt)
        row = f"{rows_in or desc}: row {first_row + index}"
        row += f" (id {shown(str(df['id'].iloc[index]))})" if "id" in df else ""
        raise slow_regex_error(exc, rules, row) from None
    return split_rows(df, outcomes_of(prompts, cleaned), column, mode)


def check_mode(mode: str) -> None:
    if mode not in MODES:
        raise DataError(f"clean: mode must be one of {', '.join(MODES)}, got {mode!r}")


def split_rows(df, outcomes: Sequence[Outcome], column: str, mode: str):
    """The rows with their outcomes -> (kept rows + `text`, dropped rows + `reason`), order preserved."""
    import pandas as pd

    keep = pd.Series([text is not None for text, _ in outcomes], index=df.index, dtype=bool)
    kept = df[keep].copy()
    if mode == "filter_only":
        kept["text"] = kept[column].astype("string").str.replace(CONTROL_CHARS, " ", regex=True)
    else:
        kept["text"] = pd.Series([t for t, _ in outcomes if t is not None], index=kept.index, dtype="string")
    dropped = df[~keep].copy()
    dropped["reason"] = pd.Series([r for t, r in outcomes if t is None], index=dropped.index, dtype="string")
    return kept.reset_index(drop=True), dropped.reset_index(drop=True)


def pass_through(df, column: str = "prompt"):
    """Mode `off` (`sources.S.clean: false`): every row kept unchanged, `text` = the raw prompt."""
    kept = df.copy()
    kept["text"] = kept[column].astype("string").str.replace(CONTROL_CHARS, " ", regex=True)
    dropped = df.iloc[0:0].copy()
    dropped["reason"] = kept["text"].iloc[0:0]
    return kept.reset_index(drop=True), dropped.reset_index(drop=True)


def report(
    source: str, rows_in: int, reasons: Counter, applied: bool, rules: str | None = None, mode: str | None = None
) -> dict:
    """The stage's metric: rows in, kept, dropped, and the rows each drop rule removed (`reasons`)."""
    dropped = sum(reasons.values())
    out = {
        "source": source,
        "cleaning_applied": applied,
        "rows_in": rows_in,
        "kept": rows_in - dropped,
        "dropped": dropped,
        "dropped_by_reason": dict(sorted(reasons.items())),
    }
    if rules is not None:
        out["rules"] = rules
    if mode is not None:
        out["mode"] = mode
    return out


# --------------------------------------------------------------------------- the local engine


def _clean_locally(texts: list[str], rules: Rules, desc: str, workers: int) -> list[Outcome]:
    """clean_batch over the texts, in `workers` processes when there are enough of them."""
    from scripts.lib.progress import track

    if workers <= 1 or len(texts) < PARALLEL_MIN_ROWS:
        return clean_batch(track(texts, desc=desc, unit="distinct prompts"), rules)
    from scripts.lib.workers import ordered_map

    # fresh interpreters, not forks (the parent may hold pyarrow threads); they compile the rules again
    # (compiled regexes and lambdas do not pickle)
    batches = [texts[start : start + WORKER_BATCH] for start in range(0, len(texts), WORKER_BATCH)]
    results = ordered_map(
        clean_batch_in_worker,
        batches,
        workers,
        chunksize=1,
        initializer=start_worker,
        initargs=(rules.document, rules.fast),
    )
    with closing(results):  # an interrupt stops the workers now, not when the traceback is freed
        return list(
            track(
                (outcome for batch in results for outcome in raised_in_worker(batch)),
                total=len(texts),
                desc=desc,
                unit="distinct prompts",
            )
        )


def raised_in_worker(batch: list[Outcome] | RegexTooSlow) -> list[Outcome]:
    if isinstance(batch, RegexTooSlow):  # a worker's regex ran past its bound: raised here, in the parent
        raise batch
    return batch


_WORKER_RULES: Rules | None = None


def start_worker(document: CleanRules, fast: bool) -> None:
    global _WORKER_RULES
    _WORKER_RULES = compile_rules(document, fast=fast)


def clean_batch_in_worker(texts: list[str]) -> list[Outcome] | RegexTooSlow:
    """The batch's outcomes, or the `RegexTooSlow` it met (returned: the parent names the row)."""
    assert _WORKER_RULES is not None  # start_worker ran in this process
    try:
        return clean_batch(texts, _WORKER_RULES)
    except RegexTooSlow as exc:
        return exc
