"""The Ops a release's composition runs on: split tables read and checked, rule sets, near-dup matching.

`split_loader` reads data/splits/S/<split>.parquet, refuses rows it must not trust
(scripts/lib/paths.py) and adds each row's place in its source's generation list; `cleaner` and
`deduper` wrap the cleaning and dedup cores with their rule sets and params loaded once; `stage_ops`
wires them for compose@V and release@V.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from scripts.lib.compose import ROW_COLUMNS, Ops, output_rows
from scripts.lib.errors import DataError
from scripts.lib.params import CleanStep, Dedup, DedupStep, Release, Runtime, Source
from scripts.lib.paths import check_split_rows
from scripts.lib.plans import releases_read_by
from scripts.lib.positions import checked_positions
from scripts.lib.recipe import Recipe, Recipes, source_roots
from scripts.lib.safe_paths import table_in
from scripts.lib.tables import check_table, read_parquet


def split_loader(
    splits_dir: Path,
    roots: dict[str, list[Path]],
    positions_dir: Path | None = None,
    text_only: frozenset[str] = frozenset(),
):
    """load_split(source, split) for Ops: the split table, checked, with `position`. Rows of a `text_only`
    source may have no image."""

    def load_split(source: str, split: str) -> pd.DataFrame:
        path = table_in(splits_dir, source, f"{split}.parquet")  # not through a link out
        rows = read_parquet(path, columns=ROW_COLUMNS)  # composition keeps no other column
        check_split_rows(rows, path, source, roots[source], images_required=source not in text_only)
        return with_positions(rows, source, positions_dir)

    return load_split


def with_positions(rows: pd.DataFrame, source: str, positions_dir: Path | None) -> pd.DataFrame:
    """Rows with `position`: where each sits in the source's generation list (prefilter@S writes it), so a
    component can take a batch by row range. Without the file, positions are unknown (NaN)."""
    path = table_in(positions_dir, f"{source}.parquet") if positions_dir is not None else None
    if path is None or not path.exists():
        return rows.assign(position=np.nan)
    order = read_parquet(path, columns=["id"])
    check_table(order, path, strings=("id",), unique="id", present=("id",))  # a list id was a traceback
    places = checked_positions(path)  # whole, unique, non-negative: row ranges and order rest on them
    ids = pd.Index(order["id"])
    # a lookup, not a merge: a merge copies every column of `rows` (gigabytes of text at 10M rows).
    # As a left merge would: int64 when every row has a position, else float64 with NaN
    found = ids.get_indexer(rows["id"])
    position = places[found]
    if (found < 0).any():
        position = np.where(found >= 0, position, np.nan)
    return rows.drop(columns=["position"], errors="ignore").assign(position=position)


def rule_set(name: str, rules_file: Path | None = None):
    """The compiled rule set `name`: from data/clean/rules.json (the clean_rules stage writes every set
    there, so DVC tracks them), or from scripts/clean_rules/<name>.yaml without one."""
    from scripts.lib.cleaning import compile_rules, load_rule_set, rule_set_from_file

    if rules_file is not None and Path(rules_file).exists():
        return compile_rules(rule_set_from_file(Path(rules_file), name))
    return compile_rules(load_rule_set(name))


# repeat: fixed_point gives up after this many passes (the 04-04 rules settle in 2-3 on real prompts)
MAX_PASSES = 10


def without_language_check(rules):
    """`rules` compiled again with their langdetect drop rule off (a clean step's `language: false`)."""
    from scripts.lib.cleaning import compile_rules

    document = rules.document
    if document.language is None or not document.language.enabled:
        return rules
    return compile_rules(document.replace(language=document.language.replace(enabled=False)), fast=rules.fast)


def cleaner(rules_file: Path | None = None, desc: str = "clean", load=rule_set):
    """clean(rows, CleanStep) for Ops: rules loaded once per set; `filter_only` keeps the text the rows had;
    `repeat: fixed_point` cleans the cleaned text again until a pass changes and drops nothing."""
    from scripts.lib.cleaning import clean_table

    loaded: dict = {}

    def rules_of(step: CleanStep):
        key = (step.rules, step.language)
        if key not in loaded:
            rules = load(step.rules, rules_file)
            loaded[key] = without_language_check(rules) if step.language is False else rules
        return loaded[key]

    def one_pass(rows: pd.DataFrame, step: CleanStep, column: str):
        extra = [c for c in rows.columns if c not in ROW_COLUMNS]
        table = rows.assign(_cleaned_from=rows[column].astype(str))
        kept, dropped = clean_table(table, rules_of(step), column="_cleaned_from", desc=f"{desc} {step.rules}")
        if step.mode == "filter_only":  # clean_table wrote the cleaned text: put the rows' own back
            kept = kept.drop(columns=["text"]).merge(rows[["id", "text"]], on="id", how="left", validate="one_to_one")
        kept = kept.astype({"text": object})[ROW_COLUMNS + extra]
        dropped = dropped.assign(reason="clean:" + dropped["reason"].astype(str))[ROW_COLUMNS + extra + ["reason"]]
        return kept.reset_index(drop=True), dropped.reset_index(drop=True)

    def clean_rows(rows: pd.DataFrame, step: CleanStep):
        kept, dropped = one_pass(rows, step, step.column)
        if step.repeat == "once":
            return kept, dropped
        gone = [dropped]
        for _ in range(MAX_PASSES):
            again, dropped = one_pass(kept, step, "text")
            gone.append(dropped)
            if not len(dropped) and again["text"].tolist() == kept["text"].tolist():
                return kept, pd.concat(gone, ignore_index=True)
            kept = again
        raise DataError(f"clean {step.rules}: repeat fixed_point: the text still changes after {MAX_PASSES} passes")

    return clean_rows


def deduper(dedup: Dedup | None, runtime: Runtime | None = None):
    """keep(texts, ids, DedupStep, against) for Ops: the `dedup:` section with the step's overrides, run as
    `runtime:` says (speed only)."""
    from scripts.lib.dedup import keep_mask, resolve_params

    def keep(texts: list[str], ids, step: DedupStep, against):
        params = resolve_params(dedup, **step.overrides())
        return keep_mask(texts, params, against=against, order_keys=ids, runtime=runtime)

    return keep


def stage_ops(
    sources: dict[str, Source],
    releases: dict[str, Release],
    dedup: Dedup,
    splits: Path,
    rules: Path | None,
    positions: Path | None,
    recipe: Recipe,
    desc: str,
    runtime: Runtime | None = None,
) -> Ops:
    """Ops reading data/splits (images checked) and the releases named by `reference` (composed the same way)."""
    roots, recipes = source_roots(sources, recipe), Recipes(releases)
    for other in releases_read_by([recipe.name], releases, recipes):  # a reference's own references too
        roots.update(source_roots(sources, recipes(other)))
    text_only = frozenset(name for name, entry in sources.items() if entry.text_only)

    def reference(name: str) -> pd.DataFrame:
        # the same Ops, `reference` included: a reference release may dedup against another one
        return output_rows(recipes(name), ops)

    ops = Ops(
        split_loader(splits, roots, positions, text_only),
        cleaner(rules, desc),
        deduper(dedup, runtime),
        reference,
        built={},
    )
    return ops
