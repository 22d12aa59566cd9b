"""prefilter@S: the recipe steps that must run before generate@S, so no image is rendered for a row a
release would drop anyway.

For every release component of source S with a step `dedup: {scope: against, before_generate: true,
reference: W, against: train}`, the rows of S the component takes (its row range; for `split: train` or
`validation`, the rows split@S will draw into that split: split.method hash only, the recipes plan
refuses shuffle there) that near-duplicate W's `against` split are removed. W's rows are composed by
scripts/lib/compose.py, as compose@W composes them, from the text tables upstream of generation
(`text_loader`: data/dedup/X.parquet less the rows captions@X drops for `sources.X.caption_language`, split
by split.py's own draw over the rows left): a dependency on release@W would be a cycle. Those are the rows
data/splits/X holds, since between dedup@X and split@X only prefilter@X (a source W reads may have no
before_generate step: the recipes plan refuses it) and that language check drop rows.
Sources without such a step pass through.

In:  data/dedup/S.parquet (+ data/dedup/X.parquet of W's sources, data/clean/rules.json)
Out: data/prefilter/S.parquet = the kept rows + `position` (the row's place in data/dedup/S.parquet:
     what `rows: [a, b]` ranges and split.method shuffle count in), S.removed.parquet, S.report.json
Streams `runtime.stream_rows` rows at a time; the reference releases are composed once. A step's index
is built from its reference for each chunk (one chunk up to stream_rows: the sample's case).
"""

from __future__ import annotations

import contextlib
import functools
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import typer

from scripts.lib.compose import ROW_COLUMNS, Ops, output_rows
from scripts.lib.compose_ops import cleaner, deduper
from scripts.lib.errors import DataError, shown
from scripts.lib.io import atomic_path, check_files_ours, commit_together, json_text
from scripts.lib.params import Component, DedupStep, Split, load_section
from scripts.lib.plans import (
    before_generate_steps,
    check_plan,
    plan_releases,
    prefilter_plan,
    written_releases,
    written_sources,
)
from scripts.lib.recipe import resolve_recipe
from scripts.lib.safe_paths import table_in
from scripts.lib.tables import ParquetChunks, check_table, check_unique, read_parquet, row_groups_to, stage_input


def with_positions(rows: pd.DataFrame) -> pd.DataFrame:
    return rows.assign(position=np.arange(len(rows), dtype=np.int64))


def prefilter(
    rows: pd.DataFrame,
    steps: list[tuple[str, Component, DedupStep]],
    reference,
    keep,
    split_params: Split | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(kept rows, removed rows with `reason`): each step drops the rows its component takes (`taken`)
    whose text near-duplicates the reference release's split. reference(name) -> rows; keep as in
    compose.Ops; split_params: params.yaml `split` (for components of one split)."""
    rows = rows if "position" in rows else with_positions(rows)
    drop = np.zeros(len(rows), dtype=bool)
    reasons = np.full(len(rows), "", dtype=object)
    for _name, component, step in steps:
        inside = taken(rows, component, split_params) & ~drop
        ref = reference(step.reference)
        ref_texts = ref.loc[ref["split"] == step.against, "text"].astype(str).tolist()
        index = np.flatnonzero(inside)
        if not len(index) or not ref_texts:
            continue
        texts = rows["text"].astype(str).to_numpy()[index].tolist()
        if step.match == "exact":
            seen = {t.strip() for t in ref_texts}
            kept = np.array([t not in seen for t in texts], dtype=bool)
        else:
            kept = np.asarray(keep(texts, None, step, ref_texts), dtype=bool)
        drop[index[~kept]] = True
        reasons[index[~kept]] = f"cross_dedup:{step.reference}:{step.against}"
    return rows[~drop].reset_index(drop=True), rows[drop].assign(reason=reasons[drop]).reset_index(drop=True)


def taken(rows: pd.DataFrame, component: Component, split_params: Split | None) -> np.ndarray:
    """bool[n]: the rows (with `position`) the component takes from its source: its row range and, for
    `split: train|validation`, the rows split@S draws into that split. Only split.method hash can say so
    before generation (a row's draw is its own id's); a removed row of the other split would be lost to
    every release that reads it, so another method is refused (plans.check_before_generate says why first)."""
    from scripts.split import assign_splits

    start, stop = component.row_range()
    position = rows["position"]
    inside = ((position >= start) & (position < (stop if stop is not None else np.inf))).to_numpy()
    if component.split == "all":
        return inside
    split_params = split_params or Split()
    if split_params.method != "hash":
        raise DataError(
            f"params.yaml: source {component.source}: a before_generate step on a component of split "
            f"{component.split!r} needs split.method hash (got {split_params.method})"
        )
    drawn = assign_splits(rows, split_params.validation_fraction, split_params.seed, "hash")
    return inside & (drawn == component.split).to_numpy()


def text_loader(dedup_dir: Path, split_params: Split, languages: dict[str, str | None]):
    """load_split for release.compose from the text tables upstream of generation: the rows of
    data/dedup/X.parquet that captions@X keeps (`languages`: sources.X.caption_language, checked by the
    same function), split by split.py's own draw over them: the rows, order and ids split@X sees."""
    from scripts.captions import language_mask
    from scripts.split import assign_splits

    cache: dict[str, pd.DataFrame] = {}

    def load_split(source: str, split: str) -> pd.DataFrame:
        if source not in cache:
            path = table_in(dedup_dir, f"{source}.parquet")  # one checked open in data/dedup, as every table read
            rows = with_positions(read_parquet(path))
            check_table(rows, path, strings=("id", "text", "prompt"), unique="id", present=("id", "text"))
            if languages.get(source) is not None:  # captions@X drops these before split@X draws
                kept = language_mask(rows["prompt"].astype(str).tolist(), languages[source])
                rows = rows[np.asarray(kept, dtype=bool)].reset_index(drop=True)
            drawn = assign_splits(
                rows, split_params.validation_fraction, split_params.seed, split_params.method, rows["position"]
            )
            cache[source] = rows.assign(
                split=drawn, source=source, orig_text=rows["prompt"], image="", width=pd.NA, height=pd.NA
            )
        rows = cache[source]
        return rows.loc[rows["split"] == split, ROW_COLUMNS + ["position"]].reset_index(drop=True)

    return load_split


def cli(
    source: str = typer.Argument(..., help="source name in params.yaml: sources"),
    input: Path = typer.Argument(..., help="data/dedup/S.parquet"),
    output: Path = typer.Argument(..., help="data/prefilter/S.parquet (S.removed.parquet, S.report.json beside it)"),
    dedup_dir: Path = typer.Option(Path("data/dedup"), "--dedup-dir", help="text tables of the reference's sources"),
    rules: Path = typer.Option(Path("data/clean/rules.json"), "--rules", help="compiled cleaning rules (clean steps)"),
    recipe: Path = typer.Option(None, "--recipe", help="data/recipes/prefilter/S.json (default: params.yaml releases)"),
) -> None:
    """Drop a source's rows that a release removes before generation (cross-dedup against a built release)."""
    split_params = load_section("split", missing_ok=True)
    reads = prefilter_plan(source, written_releases(), written_sources(), split_params.method)
    if recipe is not None:  # dvc.yaml: the file this stage depends on must hold what it reads
        check_plan(recipe, reads)
    releases = plan_releases(reads)  # what S's steps read, no more
    stem = output.name.removesuffix(".parquet")
    removed_path, report_path = (output.parent / f"{stem}{suffix}" for suffix in (".removed.parquet", ".report.json"))
    check_files_ours(output, removed_path, report_path, inputs=[input, rules, recipe])  # before the input is read
    input = stage_input(input)  # its ids checked and its rows streamed: one file, the first read's
    rows = ParquetChunks(input, load_section("runtime", missing_ok=True).stream_rows)
    check_unique(input)
    steps = before_generate_steps(source, releases)

    @functools.cache
    def reference(name: str) -> pd.DataFrame:  # composed once, read by every chunk
        return output_rows(resolve_recipe(name, releases), ops)

    ops = Ops(  # with `reference`: a reference release may dedup against another one
        text_loader(dedup_dir, split_params, reads.get("caption_language", {})),
        cleaner(rules, f"prefilter@{source}"),
        deduper(load_section("dedup", missing_ok=True), load_section("runtime", missing_ok=True)),
        reference,
        built={},
    )

    rows_in, reasons = 0, Counter()
    with contextlib.ExitStack() as outputs:  # the three appear together: each written whole, then all renamed
        kept_out = outputs.enter_context(row_groups_to(output))
        removed_out = outputs.enter_context(row_groups_to(removed_path))
        report_tmp = outputs.enter_context(atomic_path(report_path))
        for chunk in rows.frames(f"prefilter@{source}"):  # a chunk at a time: memory stays flat however many rows
            check_table(chunk, input, strings=("id", "text"), present=("id", "text"), first_row=rows_in)
            positioned = chunk.assign(position=np.arange(rows_in, rows_in + len(chunk), dtype=np.int64))
            kept, removed = prefilter(positioned, steps, reference, ops.keep, split_params)
            kept_out.add(rows.arrow(kept))
            if len(removed):  # an empty table's `reason` has no type: written only when no row is removed
                removed_out.add(rows.arrow(removed))
            rows_in += len(chunk)
            reasons.update(removed["reason"].tolist())
        if removed_out.schema is None:
            removed_out.add(rows.arrow(removed))
        kept_out.finish()
        removed_out.finish()
        report = {
            "source": source,
            "rows_in": rows_in,
            "kept": rows_in - sum(reasons.values()),
            "removed": sum(reasons.values()),
            "steps": [
                {
                    "release": n,
                    "rows": c.rows,
                    "reference": s.reference,
                    "against": s.against,
                    "removed": reasons[f"cross_dedup:{s.reference}:{s.against}"],
                }
                for n, c, s in steps
            ],
        }
        report_tmp.write_text(json_text(report), encoding="utf-8")
        commit_together(outputs)
    print(
        shown(
            f"prefilter@{source}: {report['rows_in']} rows -> {report['kept']} kept, {report['removed']} removed "
            "before generation"
        )
    )
