"""Release composition, table in -> table out: a recipe's rows from per-source split tables.

`compose(recipe, ops)` takes the base's output rows, adds each component (its split(s) of the source,
cut to its row range, its steps run), then runs the release steps; every removed row keeps a reason
(clean:<rule>, dedup:<scope>, cross_dedup:<split>, leak:exact|near). Reading splits, cleaning and
near-duplicate matching come in through `Ops`, so this module does no I/O (scripts/lib/compose_ops.py
builds the stage's Ops; prefilter@S builds its own from the text tables).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from scripts.lib.errors import DataError
from scripts.lib.io import SPLITS
from scripts.lib.params import Component, DedupStep, Step
from scripts.lib.paths import check_ids_apart
from scripts.lib.recipe import Recipe
from scripts.lib.tables import arrow_table

ROW_COLUMNS = ["id", "source", "split", "text", "orig_text", "image", "width", "height"]
SOURCE_SPLIT = "_source_split"  # a component row's split in its source (per_split scope), dropped on merge


@dataclass(frozen=True)
class Ops:
    """What composition needs from the outside, injected so the core is table in -> table out.

    load_split(source, split) -> rows (ROW_COLUMNS, plus `position` for sources read by range);
    clean(rows, CleanStep) -> (kept rows with text as the step says, dropped rows with `reason`);
    keep(texts, ids, DedupStep, against_texts | None) -> bool[n] (True = keep; near match);
    reference(release name) -> output rows of that release (scope against with `reference`)."""

    load_split: Callable
    clean: Callable
    keep: Callable
    reference: Callable | None = None
    built: dict | None = None  # release name -> its output rows, composed once per process (a dict to share)


def compose(recipe: Recipe, ops: Ops) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(release rows, this release's removed rows with `reason`): the base's output rows, then each
    component (loaded, cut to its row range, its steps run), then the release steps."""
    rows = output_rows(recipe.base, ops) if recipe.base is not None else pd.DataFrame(columns=ROW_COLUMNS)
    removed: list[pd.DataFrame] = []
    for component in recipe.own_components:
        added = component_rows(component, ops.load_split)
        for step in component.steps:
            added, gone = run_step(step, added, ops, so_far=rows, group=SOURCE_SPLIT)
            removed.append(gone)
        added = added.drop(columns=[SOURCE_SPLIT])
        rows = pd.concat([rows, added], ignore_index=True) if len(rows) else added.reset_index(drop=True)
    for step in recipe.steps:
        rows, gone = run_step(step, rows, ops, so_far=None, group="split")
        removed.append(gone)
    removed = [r for r in removed if len(r)]
    removed_rows = pd.concat(removed, ignore_index=True) if removed else no_removed_rows()
    check_unique_ids(rows["id"], recipe)
    return rows[ROW_COLUMNS].reset_index(drop=True), removed_rows[ROW_COLUMNS + ["reason"]].reset_index(drop=True)


def check_unique_ids(ids: pd.Series, recipe: Recipe) -> None:
    """One row per id in a release (an id names the row's files in every layout): an id that two
    components, or two splits of a source, both give is one line; so are two ids equal but for case."""
    import pyarrow.compute as pc

    repeated = ids[:0]  # no hash table of Python strings unless pyarrow counts a repeat
    if pc.count_distinct(pa.array(ids), mode="all").as_py() < len(ids):
        repeated = ids[ids.duplicated()]
    if len(repeated):
        raise DataError(
            f"params.yaml: releases.{recipe.name}: id {repeated.iloc[0]!r} would be in the release twice "
            f"({len(repeated)} such ids): two of its components, or two splits of a source, hold it"
        )
    check_ids_apart(ids, f"params.yaml: releases.{recipe.name}")  # nor two that one file system takes for one


def no_removed_rows() -> pd.DataFrame:
    return pd.DataFrame(columns=ROW_COLUMNS + ["reason"])


def composed_table(rows: pd.DataFrame) -> pd.DataFrame:
    """Rows as compose@V writes them: sizes as nullable integers (a text-only row has none)."""
    return rows.astype({"width": "Int64", "height": "Int64"})


# rows.parquet's types: those the whole-table writer has always given (`text` is `string` because the
# cleaner makes it an object column), fixed so that every row writes one schema, however the rows were
# composed or chunked and whatever types their split tables had (a text-only source's all-null `image`)
ROWS_SCHEMA = pa.schema(
    [(name, pa.string() if name == "text" else pa.large_string()) for name in ROW_COLUMNS[:6]]
    + [("width", pa.int64()), ("height", pa.int64())]
)


def composed_arrow(rows: pd.DataFrame) -> pa.Table:
    """rows.parquet's rows (ROW_COLUMNS, in order) as the table written, in ROWS_SCHEMA."""
    return arrow_table(composed_table(rows[ROW_COLUMNS])).cast(ROWS_SCHEMA)


def output_rows(recipe: Recipe, ops: Ops) -> pd.DataFrame:
    """A release's output rows; composed once when `ops.built` is shared (a chain v2 -> v4 -> v4-a -> v4-b,
    or a `reference`, reuses what was built). The chain is built root first, so composing a release finds
    its base built: a chain of thousands is no recursion."""
    if ops.built is None:
        return compose(recipe, ops)[0]
    for link in recipe.chain():
        if link.name not in ops.built:
            ops.built[link.name] = compose(link, ops)[0]
    return ops.built[recipe.name]


def component_rows(component: Component, load_split) -> pd.DataFrame:
    """The component's rows: its split(s) of the source, cut to `rows`, in generation order when the
    source gives positions (else by id), with `split` = into and the source split kept aside."""
    parts = component_parts(component)
    frames = [load_split(component.source, part).assign(**{SOURCE_SPLIT: part, "split": part}) for part in parts]
    keys = pd.concat([frame[[c for c in ("position", "id") if c in frame]] for frame in frames], ignore_index=True)
    rows = gathered(frames, ROW_COLUMNS + [SOURCE_SPLIT], component_order(component, keys))
    return rows.assign(split=rows[SOURCE_SPLIT] if component.into == "same" else component.into)


def component_parts(component: Component) -> tuple[str, ...]:
    """The source splits a component reads, in the order their rows are numbered."""
    return SPLITS if component.split == "all" else (component.split,)


def component_order(component: Component, keys: pd.DataFrame) -> np.ndarray:
    """Which rows the component takes and in what order, as indices into `keys` (the `id` and, where
    prefilter@S gave one, `position` of its parts' rows, concatenated): its row range in generation
    order when every row has a position, else every row by id."""
    if "position" in keys and keys["position"].notna().all():
        start, stop = component.row_range()
        inside = (keys["position"] >= start) & (keys["position"] < (stop if stop is not None else np.inf))
        return keys[inside].sort_values(["position", "id"], kind="stable").index.to_numpy()
    if component.rows is not None:
        raise DataError(
            f"source {component.source}: rows {component.rows} needs row positions (data/prefilter/"
            f"{component.source}.parquet)"
        )
    return keys["id"].sort_values(kind="stable").index.to_numpy()


def picks_only(recipe: Recipe) -> bool:
    """True when composing only picks and orders rows: no step of the recipe or its base chain reads a
    text here (a clean step, or a dedup step prefilter@S has not already run). compose@V then needs the
    rows' keys alone and streams the rows (scripts/lib/compose_stream.py)."""
    steps = recipe.chain_steps()
    return not any(step.clean is not None or not (step.dedup and step.dedup.before_generate) for step in steps)


def gathered(frames: list[pd.DataFrame], columns: list[str], order: np.ndarray) -> pd.DataFrame:
    """`pd.concat(frames, ignore_index=True)[columns].take(order)`, built a column at a time, each frame's
    column let go once taken: one copy of the rows is held, not three (whole, cut, sorted), which at
    10M rows is gigabytes of text. Empties `frames`."""
    taken = {}
    for column in columns:
        values = pd.concat([frame.pop(column) for frame in frames], ignore_index=True)
        taken[column] = values.take(order).reset_index(drop=True)
        del values
    frames.clear()
    return pd.DataFrame(taken)


def run_step(step: Step, rows: pd.DataFrame, ops: Ops, so_far: pd.DataFrame | None, group: str):
    """One step on `rows` -> (kept rows, removed rows with reason). `so_far`: the release's rows before
    this component (None for release steps); `group`: the column per_split groups by."""
    if step.clean is not None:
        if not len(rows):
            return rows, rows.iloc[:0].assign(reason="")
        kept, dropped = ops.clean(rows, step.clean)
        return kept, dropped
    d = step.dedup
    assert d is not None  # a step is either clean or dedup
    if d.before_generate:  # done by prefilter@S: its rows never reached data/splits
        return rows, rows.iloc[:0].assign(reason="")
    keep = np.ones(len(rows), dtype=bool)
    texts = rows["text"].astype(str).tolist()
    if d.scope in ("self", "after_merge"):
        keep = _self_keep(texts, rows["id"].tolist(), d, ops)
        reason = f"dedup:{d.scope}"
    elif d.scope == "per_split":
        for _, index in rows.groupby(group, sort=True).indices.items():
            part = rows.iloc[index]
            keep[index] = _self_keep(part["text"].astype(str).tolist(), part["id"].tolist(), d, ops)
        reason = "dedup:per_split"
    elif d.scope == "against":
        if d.reference is None:
            reference = so_far
        elif ops.reference is None:  # a real error, not an assert: `python -O` drops asserts
            raise DataError(f"params.yaml: dedup.reference {d.reference!r}: this command cannot compose other releases")
        else:
            reference = ops.reference(d.reference)
        ref_texts = (
            reference.loc[reference["split"] == d.against, "text"].astype(str).tolist() if reference is not None else []
        )
        keep = _cross_keep(texts, ref_texts, d, ops)
        reason = f"cross_dedup:{d.against}"
    else:  # validation_vs_train
        is_val = (rows["split"] == "validation").to_numpy()
        train = [t for t, v in zip(texts, is_val) if not v]
        val_index = np.flatnonzero(is_val)
        keep[val_index] = _cross_keep([texts[i] for i in val_index], train, d, ops)
        reason = f"leak:{d.match}"
    return rows[keep], rows[~keep].assign(reason=reason)


def _self_keep(texts: list[str], ids: list[str], step: DedupStep, ops: Ops) -> np.ndarray:
    if not texts:
        return np.ones(0, dtype=bool)
    if step.match == "exact":  # first occurrence of each text stays (none_of_pair: no occurrence of a repeated one)
        series = pd.Series(texts)
        if step.keep == "longest":  # copies are equally long: the lowest stable id stays, as near dedup breaks ties
            series = series.iloc[np.argsort(np.asarray(ids, dtype=object), kind="stable")]
        return ~series.duplicated(keep=False if step.keep == "none_of_pair" else "first").sort_index().to_numpy()
    return np.asarray(ops.keep(texts, ids, step, None), dtype=bool)


def _cross_keep(texts: list[str], reference: list[str], step: DedupStep, ops: Ops) -> np.ndarray:
    if not texts or not reference:
        return np.ones(len(texts), dtype=bool)
    if step.match == "exact":  # the team: `if caption["text"] in visited` (train texts, stripped)
        seen = {t.strip() for t in reference}
        return np.array([t not in seen for t in texts], dtype=bool)
    return np.asarray(ops.keep(texts, None, step, reference), dtype=bool)


def release_stats(rows: pd.DataFrame, removed: pd.DataFrame) -> dict:
    stats: dict[str, Any] = {"rows": {s: int((rows["split"] == s).sum()) for s in SPLITS}}
    stats["rows"]["total"] = len(rows)
    stats["by_source"] = {
        s: {src: int(n) for src, n in rows.loc[rows["split"] == s, "source"].value_counts().sort_index().items()}
        for s in SPLITS
    }
    stats["removed"] = {reason: int(n) for reason, n in removed["reason"].value_counts().sort_index().items()}
    stats["removed"]["total"] = len(removed)
    # per split, so a log count of one step (11,010 train rows removed as near-duplicates) has its match
    stats["removed_by_split"] = {
        s: {
            reason: int(n)
            for reason, n in removed.loc[removed["split"] == s, "reason"].value_counts().sort_index().items()
        }
        for s in SPLITS
    }
    return stats
