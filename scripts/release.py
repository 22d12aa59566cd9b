"""release@V: compose per-source splits into a published dataset version by its recipe.

The recipe language (params.yaml: releases.V; reference and the team's history in docs/recipes.md):
  base: W          start from W's OUTPUT rows (W's own steps already applied, in W's order); only
                   `export` is inherited. Removals recorded here are this release's own.
  components:      added in order; each is (source, split, into) with optional
    rows: [a, b]   a batch: positions a..b-1 of the source's generation list (data/dedup/S.parquet order)
    steps: [...]   run on the component's rows before they join (scopes below)
  steps: [...]     run on all rows once every component is merged
A step is `clean: {rules, mode, column}` (a named rule set; rewrite | filter_only) or
`dedup: {scope, threshold, keep, method, match, against, reference, before_generate}`, scopes:
  self / after_merge   within the rows at hand (a component's, or the whole release's)
  per_split            within each split separately (a component: by the source's split)
  against: train       rows near the release's train so far (or a `reference` release's) are dropped;
                       before_generate: true runs it in prefilter@S, before any image is rendered
  validation_vs_train  validation rows near (match: near) or equal to (match: exact) train rows dropped
Shorthands kept from the first language: component `dedup_against`, release `reclean`,
`validation_leaks`. Every removed row is recorded with a reason: clean:<rule>, dedup:<scope>,
cross_dedup:<split>, leak:exact|near.
Outputs (data/releases/V/): train/ and validation/ in the recipe's `export` layout (default
ImageFolder: metadata.jsonl + images, hardlinked where possible; also webdataset, simpletuner and
bucketed: see scripts/lib/export.py), removed.parquet (every removed row with its reason), stats.json
(a DVC metric), preview.jpg (contact sheet) and README.md (a Hugging Face data card).
"""
from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import pandas as pd
import typer

from scripts.lib.errors import DataError
from scripts.lib.nesting import loads_json
from scripts.lib.params import (CleanStep, Component, DedupStep, Export, Preview, Release, Step, load_params,
                                load_section, parse)
from scripts.lib.archive import parse_ref
from scripts.lib.io import (MARKER, SPLITS, check_not_input, check_outputs_ours, check_replaceable, check_table, mark_folder, read_parquet,
                          replace_path, staging_dir, write_json, write_parquet)
from scripts.lib.export import card_data_files, export_options, write_rows_table, write_split

ROW_COLUMNS = ["id", "source", "split", "text", "orig_text", "image", "width", "height"]
SOURCE_SPLIT = "_source_split"  # a component row's split in its source (per_split scope), dropped on merge


@dataclass(frozen=True)
class Recipe:
    name: str
    own_components: tuple[Component, ...]  # this recipe's; `components` adds the base chain's
    steps: tuple[Step, ...]
    export: Export  # scripts/lib/export.py takes `export.spec()`
    base: Optional["Recipe"] = None
    description: str = ""
    lineage: tuple[str, ...] = field(default=())

    @property
    def reclean(self) -> bool:  # the card and older readers: does any step clean?
        return any(s.clean is not None for s in self.steps)

    @property
    def validation_leaks(self) -> str:
        for s in reversed(self.steps):
            if s.dedup is not None and s.dedup.scope == "validation_vs_train":
                return s.dedup.match
        return "none"

    @property
    def components(self) -> tuple[Component, ...]:
        """Components of the base chain and this recipe, in build order (the sources its rows come from)."""
        return (self.base.components if self.base else ()) + self.own_components

    def all_components(self) -> tuple[Component, ...]:
        return self.components


# --- recipe -----------------------------------------------------------------------------------


def resolve_recipe(name: str, releases: dict, _seen: tuple[str, ...] = ()) -> Recipe:
    """The recipe of `name` with its base chain resolved. `releases` maps names to params.yaml entries
    (plain mappings, checked here, or Release models). Shorthands become steps here."""
    if name not in releases:
        raise DataError(f"params.yaml: releases.{_seen[-1] if _seen else name}: unknown release {name!r}")
    if name in _seen:
        raise DataError(f"params.yaml: releases: base cycle {' -> '.join(_seen + (name,))}")
    spec = releases[name]
    if not isinstance(spec, Release):
        spec = parse(Release, spec or {}, at=("releases", name))
    base = resolve_recipe(spec.base, releases, _seen + (name,)) if spec.base is not None else None
    export = spec.export if base is None or "export" in spec.model_fields_set else base.export
    components = tuple(_with_shorthand(c) for c in spec.components)
    steps = list(spec.steps)
    if spec.reclean:
        steps.append(Step(clean=CleanStep(rules="final", column="orig_text")))
    if spec.validation_leaks != "none":
        steps.append(Step(dedup=DedupStep(scope="validation_vs_train", match=spec.validation_leaks)))
    for number, step in enumerate(steps):
        if step.dedup is not None and (step.dedup.before_generate or step.dedup.scope == "against" and step.dedup.reference is None):
            raise DataError(f"params.yaml: releases.{name}.steps[{number}]: scope against runs on a component's rows "
                            "(put it in the component's steps)")
    for number, component in enumerate(components):
        for k, step in enumerate(component.steps):
            if step.dedup is not None and step.dedup.reference is not None and step.dedup.reference not in releases:
                raise DataError(f"params.yaml: releases.{name}.components[{number}].steps[{k}].dedup.reference: "
                                f"unknown release {step.dedup.reference!r}")
    recipe = Recipe(name, components, tuple(steps), export, base=base, description=spec.description,
                    lineage=(base.lineage if base else ()) + (name,))
    if not recipe.own_components and base is None:
        raise DataError(f"params.yaml: releases.{name}: no components")
    return recipe


# --- plans: the share of `releases` a stage reads (written by scripts/recipes.py) -------------------


def releases_read_by(names: list[str], releases: dict) -> list[str]:
    """`names` and every release they read (base chains, step references), transitively, in params order."""
    found: set[str] = set()
    todo = list(names)
    while todo:
        name = todo.pop()
        if name in found:
            continue
        found.add(name)
        recipe = resolve_recipe(name, releases)
        while recipe is not None:
            found.add(recipe.name)
            steps = list(recipe.steps) + [s for c in recipe.own_components for s in c.steps]
            todo += [s.dedup.reference for s in steps if s.dedup is not None and s.dedup.reference is not None]
            recipe = recipe.base
    return [name for name in releases if name in found]


def release_plan(name: str, releases: dict) -> dict:
    """data/recipes/release/V.json (scripts/recipes.py): the entries of `releases` release@V reads."""
    return {"releases": [[n, releases[n]] for n in releases_read_by([name], releases)]}


def plan_releases(plan: dict) -> dict:
    """The `releases` mapping a stage reads: the plan's entries, in params order."""
    return {name: entry for name, entry in plan["releases"]}


def check_plan(path: Path, expected: dict) -> None:
    """Refuse the plan file DVC gave a stage unless it holds `expected` (computed from params.yaml now)."""
    try:
        plan = loads_json(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"{path}: not found (run `dvc repro recipes`)") from None
    except (OSError, ValueError) as exc:  # UnicodeDecodeError, JSONDecodeError, TooDeep
        raise DataError(f"{path}: unreadable recipe plan ({exc})") from None
    if plan != json.loads(json.dumps(expected)):
        raise DataError(f"{path}: differs from params.yaml releases (params edited since): run `dvc repro recipes`")


def _with_shorthand(component: Component) -> Component:
    if component.dedup_against is None:
        return component
    step = Step(dedup=DedupStep(scope="against", against=component.dedup_against))
    return component.model_copy(update={"steps": [*component.steps, step], "dedup_against": None})


# --- composition (tables in, tables out) --------------------------------------------------------


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
    reference: Callable = None
    built: Optional[dict] = None  # release name -> its output rows, composed once per process (a dict to share)


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
    removed_rows = pd.concat(removed, ignore_index=True) if removed else pd.DataFrame(columns=ROW_COLUMNS + ["reason"])
    return rows[ROW_COLUMNS].reset_index(drop=True), removed_rows[ROW_COLUMNS + ["reason"]].reset_index(drop=True)


def output_rows(recipe: Recipe, ops: Ops) -> pd.DataFrame:
    """A release's output rows; composed once when `ops.built` is shared (a chain v2 -> v4 -> v4-a -> v4-b,
    or a `reference`, reuses what was built)."""
    if ops.built is None:
        return compose(recipe, ops)[0]
    if recipe.name not in ops.built:
        ops.built[recipe.name] = compose(recipe, ops)[0]
    return ops.built[recipe.name]


def component_rows(component: Component, load_split) -> pd.DataFrame:
    """The component's rows: its split(s) of the source, cut to `rows`, in generation order when the
    source gives positions (else by id), with `split` = into and the source split kept aside."""
    parts = SPLITS if component.split == "all" else (component.split,)
    frames = [load_split(component.source, part).assign(**{SOURCE_SPLIT: part}) for part in parts]
    rows = pd.concat(frames, ignore_index=True)
    if "position" in rows and rows["position"].notna().all():
        start, stop = component.row_range()
        inside = (rows["position"] >= start) & (rows["position"] < (stop if stop is not None else np.inf))
        rows = rows[inside].sort_values(["position", "id"], kind="stable")
    elif component.rows is not None:
        raise DataError(f"source {component.source}: rows {component.rows} needs row positions (data/prefilter/"
                        f"{component.source}.parquet)")
    else:
        rows = rows.sort_values("id", kind="stable")
    into = rows[SOURCE_SPLIT] if component.into == "same" else component.into
    return rows[ROW_COLUMNS + [SOURCE_SPLIT]].assign(split=into).reset_index(drop=True)


def run_step(step: Step, rows: pd.DataFrame, ops: Ops, so_far: Optional[pd.DataFrame], group: str):
    """One step on `rows` -> (kept rows, removed rows with reason). `so_far`: the release's rows before
    this component (None for release steps); `group`: the column per_split groups by."""
    if step.clean is not None:
        if not len(rows):
            return rows, rows.iloc[:0].assign(reason="")
        kept, dropped = ops.clean(rows, step.clean)
        return kept, dropped
    d = step.dedup
    if step.dedup.before_generate:  # done by prefilter@S: its rows never reached data/splits
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
        reference = so_far if d.reference is None else ops.reference(d.reference)
        ref_texts = reference.loc[reference["split"] == d.against, "text"].astype(str).tolist() if reference is not None else []
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
        return ~series.duplicated(keep=False if step.keep == "none_of_pair" else "first").to_numpy()
    return np.asarray(ops.keep(texts, ids, step, None), dtype=bool)


def _cross_keep(texts: list[str], reference: list[str], step: DedupStep, ops: Ops) -> np.ndarray:
    if not texts or not reference:
        return np.ones(len(texts), dtype=bool)
    if step.match == "exact":  # the team: `if caption["text"] in visited` (train texts, stripped)
        seen = {t.strip() for t in reference}
        return np.array([t not in seen for t in texts], dtype=bool)
    return np.asarray(ops.keep(texts, None, step, reference), dtype=bool)


def release_stats(rows: pd.DataFrame, removed: pd.DataFrame) -> dict:
    stats = {"rows": {s: int((rows["split"] == s).sum()) for s in SPLITS}}
    stats["rows"]["total"] = int(len(rows))
    stats["by_source"] = {
        s: {src: int(n) for src, n in rows.loc[rows["split"] == s, "source"].value_counts().sort_index().items()}
        for s in SPLITS
    }
    stats["removed"] = {reason: int(n) for reason, n in removed["reason"].value_counts().sort_index().items()}
    stats["removed"]["total"] = int(len(removed))
    return stats


# --- writing ------------------------------------------------------------------------------------


def card_params(params: dict) -> dict:
    """The params a release's card shows: dedup and split, without keys that change speed only
    (the stage does not depend on them, so a card naming them would go stale)."""
    from scripts.dedup import SPEED_KEYS

    dedup = {k: v for k, v in (params.get("dedup") or {}).items() if k not in SPEED_KEYS}
    if dedup.get("method", "minhash") == "minhash":  # the embedding keys change nothing then
        dedup = {k: v for k, v in dedup.items() if not k.startswith("embedding_")}
    return {"dedup": dedup, "split": params.get("split")}


def data_card(recipe: Recipe, stats: dict, params: dict) -> str:
    """README.md with Hugging Face YAML front matter: counts, sources, recipe, params, licences."""
    import yaml

    sources = sorted({c.source for c in recipe.all_components()})
    licences = {s: (params["sources"].get(s) or {}).get("license", "unknown") for s in sources}
    total = stats["rows"]["total"]
    size = "n<1K" if total < 1_000 else "1K<n<10K" if total < 10_000 else "10K<n<100K" if total < 100_000 else "100K<n<1M"
    front = {
        "pretty_name": f"t2i-datasets {recipe.name}",
        "license": "other",
        "task_categories": ["text-to-image", "image-to-text"],
        "size_categories": [size],
        "configs": [
            {
                "config_name": "default",
                "data_files": [{"split": s, "path": card_data_files(recipe.export.format, s)} for s in SPLITS],
            }
        ],
        "dataset_info": {"splits": [{"name": s, "num_examples": stats["rows"][s]} for s in SPLITS]},
    }
    recipe_yaml = {
        "lineage": list(recipe.lineage),
        "base": recipe.base.name if recipe.base else None,
        "components": [c.model_dump(exclude_defaults=True) for c in recipe.own_components],
        "steps": [s.model_dump(exclude_defaults=True) for s in recipe.steps],
    }
    lines = [
        "---",
        yaml.safe_dump(front, sort_keys=False).rstrip(),
        "---",
        f"# t2i-datasets {recipe.name}",
        "",
        recipe.description or "",
        "",
        "## Rows",
        "",
        "| split | rows | " + " | ".join(sources) + " |",
        "|---|---|" + "---|" * len(sources),
    ]
    for s in SPLITS:
        per = [str(stats["by_source"][s].get(src, 0)) for src in sources]
        lines.append(f"| {s} | {stats['rows'][s]} | " + " | ".join(per) + " |")
    lines += ["", "## Removed rows", ""]
    lines += [f"- `{reason}`: {n}" for reason, n in stats["removed"].items()]
    lines += ["", "## Sources and licences", ""]
    lines += [f"- `{s}` ({params['sources'][s].get('kind', '?')}): licence `{licences[s]}`" for s in sources]
    lines += [
        "",
        "## Recipe",
        "",
        "```yaml",
        yaml.safe_dump(recipe_yaml, sort_keys=False).rstrip(),
        "```",
        "",
        "## Params",
        "",
        "```yaml",
        yaml.safe_dump(card_params(params), sort_keys=True).rstrip(),
        "```",
        "",
        "Built by `dvc repro release@" + recipe.name + "`; the git tag of the same name pins every input.",
        "",
    ]
    return "\n".join(lines)


# --- stage ---------------------------------------------------------------------------------------


def _loader(splits_dir: Path, roots: dict[str, list[Path]], positions_dir: Optional[Path] = None):
    def load_split(source: str, split: str) -> pd.DataFrame:
        path = splits_dir / source / f"{split}.parquet"
        rows = read_parquet(path)
        check_split_rows(rows, path, source, roots[source])
        return with_positions(rows, source, positions_dir)

    return load_split


def with_positions(rows: pd.DataFrame, source: str, positions_dir: Optional[Path]) -> pd.DataFrame:
    """Rows with `position`: where each sits in the source's generation list (prefilter@S writes it), so a
    component can take a batch by row range. Without the file, positions are unknown (NaN)."""
    path = positions_dir / f"{source}.parquet" if positions_dir is not None else None
    if path is None or not path.exists():
        return rows.assign(position=np.nan)
    order = read_parquet(path)[["id", "position"]]
    return rows.drop(columns=["position"], errors="ignore").merge(order, on="id", how="left", validate="one_to_one")


def source_roots(params: dict, recipe: Recipe) -> dict[str, list[Path]]:
    """Where each component's images may live: its source's `images` and `path` (params.yaml); a
    component whose source is not in params.yaml is one line before any work."""
    sources = params.get("sources") or {}
    roots = {}
    for number, component in enumerate(recipe.all_components()):
        entry = sources.get(component.source)
        if entry is None:
            raise DataError(f"params.yaml: releases.{recipe.name}: component {number} names source {component.source!r}, "
                            f"which is not under sources (have: {', '.join(sources) or 'none'})")
        roots[component.source] = [Path(entry[key]) for key in ("images", "path") if entry.get(key)]
    return roots


PLAIN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")  # ids become file and tar member names


def check_split_rows(rows: pd.DataFrame, path: Path, source: str, roots: list[Path]) -> None:
    """Refuse, in one line naming the file and row, what a release would trust blindly: a missing
    column, a null value, an id that is not a plain name (it becomes a file name), a row of another
    source, an image outside the source's folders (`/etc/passwd`, `../../x`, a link out of the store)."""
    check_table(rows, path, strings=("id", "source", "text", "orig_text", "image"), unique="id")
    for column in ("width", "height"):
        if column not in rows.columns:
            raise DataError(f"{path}: no '{column}' column")
    for column in ("id", "source", "text", "image"):
        nulls = rows[column].isna().to_numpy().nonzero()[0]
        if len(nulls):
            raise DataError(f"{path}: row {nulls[0] + 1}: null {column}")
    real_roots = [os.path.realpath(root) for root in roots]
    named_roots = [os.path.abspath(root) for root in roots]
    cache = os.path.realpath(".dvc/cache")  # DVC's cache.type symlink links every image into it
    for number, (row_id, row_source, image) in enumerate(zip(rows["id"], rows["source"], rows["image"]), start=1):
        if not PLAIN_ID.fullmatch(row_id):
            raise DataError(f"{path}: row {number}: id {row_id!r} is not a plain name (letters, digits, '_', '-', '.')")
        if row_source != source:
            raise DataError(f"{path}: row {number}: source {row_source!r} in the split folder of {source!r}")
        file = parse_ref(image)[0]
        real = os.path.realpath(file)  # what a link (anywhere on the way) points at
        named = os.path.abspath(file)  # the path as written, `..` applied
        if not (any(_inside(real, root) for root in real_roots)
                or _inside(real, cache) and any(_inside(named, root) for root in named_roots)):
            where = ", ".join(str(root) for root in roots) or "none in params.yaml"
            raise DataError(f"{path}: row {number}: image {image!r} is outside the folders of source {source!r} ({where})")


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def rule_set(name: str, rules_file: Optional[Path] = None):
    """The compiled rule set `name`: from data/clean/rules.json (the clean_rules stage writes every set
    there, so DVC tracks them), or from scripts/clean_rules/<name>.yaml without one."""
    from scripts.clean import load_rule_set, load_rules, rules_from_file

    if rules_file is not None and Path(rules_file).exists():
        return rules_from_file(Path(rules_file), name)
    return load_rules(load_rule_set(name))


def cleaner(rules_file: Optional[Path] = None, desc: str = "clean", load=rule_set):
    """clean(rows, CleanStep) for Ops: rules loaded once per set; `filter_only` keeps the text the rows had."""
    from scripts.clean import clean_table

    loaded: dict = {}

    def clean_rows(rows: pd.DataFrame, step: CleanStep):
        if step.rules not in loaded:
            loaded[step.rules] = load(step.rules, rules_file)
        extra = [c for c in rows.columns if c not in ROW_COLUMNS]
        table = rows.assign(_cleaned_from=rows[step.column].astype(str))
        kept, dropped = clean_table(table, loaded[step.rules], column="_cleaned_from", desc=f"{desc} {step.rules}")
        if step.mode == "filter_only":  # clean_table wrote the cleaned text: put the rows' own back
            kept = kept.drop(columns=["text"]).merge(rows[["id", "text"]], on="id", how="left", validate="one_to_one")
        kept = kept.astype({"text": object})[ROW_COLUMNS + extra]
        dropped = dropped.assign(reason="clean:" + dropped["reason"].astype(str))[ROW_COLUMNS + extra + ["reason"]]
        return kept.reset_index(drop=True), dropped.reset_index(drop=True)

    return clean_rows


def deduper(dedup_params):
    """keep(texts, ids, DedupStep, against) for Ops: the `dedup:` section with the step's overrides."""
    from scripts.dedup import keep_mask, resolve_params

    def keep(texts: list[str], ids, step: DedupStep, against):
        params = resolve_params(dedup_params, **step.overrides())
        return keep_mask(texts, params, against=against, order_keys=ids)

    return keep


def stage_ops(params: dict, splits: Path, rules: Optional[Path], positions: Optional[Path], recipe: Recipe,
              desc: str) -> Ops:
    """Ops reading data/splits (images checked) and the releases named by `reference` (composed the same way)."""
    roots = source_roots(params, recipe)
    releases = params.get("releases") or {}
    for other in referenced_releases(recipe):
        roots.update(source_roots(params, resolve_recipe(other, releases)))
    built: dict[str, pd.DataFrame] = {}
    ops = Ops(_loader(splits, roots, positions), cleaner(rules, desc), deduper(params.get("dedup")), built=built)

    def reference(name: str) -> pd.DataFrame:
        return output_rows(resolve_recipe(name, releases), ops)

    return Ops(ops.load_split, ops.clean, ops.keep, reference, built)


def referenced_releases(recipe: Recipe) -> set[str]:
    names = {s.dedup.reference for c in recipe.all_components() for s in c.steps
             if s.dedup is not None and s.dedup.reference is not None and not s.dedup.before_generate}
    return names


def cli(
    name: str = typer.Argument(..., help="release name in params.yaml: releases"),
    splits: Path = typer.Argument(..., help="data/splits (one folder per source)"),
    output: Path = typer.Argument(..., help="data/releases/V"),
    rules: Path = typer.Option(Path("data/clean/rules.json"), "--rules", help="compiled cleaning rules (clean steps)"),
    positions: Path = typer.Option(Path("data/prefilter"), "--positions",
                                   help="prefilter@S outputs: each row's place in its source's generation list (row ranges)"),
    plan: Path = typer.Option(None, "--recipe", help="data/recipes/release/V.json (default: params.yaml releases)"),
) -> None:
    """Compose a release from per-source splits by its recipe."""
    params = load_params()
    reads = release_plan(name, params.get("releases") or {})
    if plan is not None:  # dvc.yaml: the file this stage depends on must hold what it reads
        check_plan(plan, reads)
    params = {**params, "releases": plan_releases(reads)}  # the releases V reads, and no other
    recipe = resolve_recipe(name, params["releases"])
    fmt, options = export_options(recipe.export.spec(), f"params.yaml: releases.{name}")
    from scripts.lib.progress import Progress

    geometry = load_section("preview", missing_ok=True)
    check_not_input(output, [splits, rules])
    check_output(output)  # before any work: a mistyped output path fails at once, in one line
    rows, removed = compose(recipe, stage_ops(params, splits, rules, positions, recipe, f"release@{name}"))
    stats = release_stats(rows, removed)
    # Everything is written into a staging folder first and moved into place only at the end, so a
    # bad image or a crash leaves the previous release whole (never train new and validation old).
    with staging_dir(output) as staging:  # locked; a killed run's staging folder goes on the next run
        with Progress(f"release@{name}", total=len(rows), unit="images") as progress:
            for split in SPLITS:
                write_split(rows[rows["split"] == split], staging / split, fmt, options, progress.advance)
                mark_folder(staging / split)
        write_preview(rows, staging / "preview.jpg", geometry)
        write_parquet(removed.astype({"width": "Int64", "height": "Int64"}), staging / "removed.parquet")
        (staging / "README.md").write_text(data_card(recipe, stats, params), encoding="utf-8")
        write_json(stats, staging / "stats.json")
        write_rows_table(rows, staging)  # rows.parquet: the release's rows, whatever the layout
        move_into_place(staging, output)
    print(f"release@{name}: train {stats['rows']['train']}, validation {stats['rows']['validation']}, removed {stats['removed']['total']}")


def write_preview(rows: pd.DataFrame, output: Path, geometry: Preview) -> None:
    """preview.jpg: contact sheet of a deterministic sample (the ids whose sha256 sorts first),
    read from the image store, so it looks the same whatever the export layout."""
    import io

    from scripts.lib.export import image_bytes
    from scripts.lib.preview import contact_sheet, sample_ids

    by_id = rows.set_index("id")
    chosen = sample_ids(by_id.index, geometry.columns * geometry.rows)
    items = [(io.BytesIO(image_bytes(by_id.at[i, "image"])), str(by_id.at[i, "text"])) for i in chosen]
    contact_sheet(items, geometry).save(output, format="JPEG", quality=geometry.quality)


OUTPUTS = ("train", "validation", "README.md", "removed.parquet", "rows.parquet", "stats.json", "preview.jpg")


def check_output(output: Path) -> None:
    """What move_into_place checks again at the end, on what a release writes (OUTPUTS)."""
    if output.exists() and not output.is_dir():
        raise DataError(f"{output}: is a file, expected a release folder")
    if output.is_dir():
        allowed = {*OUTPUTS, ".gitignore", *(f".{name}.tmp-old" for name in OUTPUTS)}
        _refuse_foreign(output, sorted(p.name for p in output.iterdir() if p.name not in allowed))
        check_outputs_ours(output, sorted(set(OUTPUTS) - set(SPLITS)), proven=any((output / s / MARKER).is_file() for s in SPLITS))
    for split in SPLITS:
        if (output / split).is_dir() and not (output / split / MARKER).is_file():
            check_replaceable(output / split)


def _refuse_foreign(output: Path, foreign: list[str]) -> None:
    if foreign:
        raise DataError(f"{output}: holds {foreign[0]!r}, which release did not write; refusing to write a "
                        "release into it (point it at its own folder, e.g. data/releases/NAME)")


def move_into_place(staging: Path, output: Path) -> None:
    """Replace each release output with its staged version (renames on one filesystem: no copies).

    Nothing is replaced unless the output folder holds only release outputs and each folder being
    replaced is one a release wrote (io.check_replaceable): a mistyped output path loses no data."""
    staged = sorted(staging.iterdir())
    if output.exists() and not output.is_dir():
        raise DataError(f"{output}: is a file, expected a release folder")
    if output.is_dir():
        names = {item.name for item in staged} | {".gitignore"}  # DVC writes .gitignore beside outputs
        left = {f".{item.name}.tmp-old" for item in staged}  # a run killed while moving its folders in
        _refuse_foreign(output, sorted(p.name for p in output.iterdir() if p.name not in names | left))
        for name in sorted(left):
            shutil.rmtree(output / name, ignore_errors=True)
    for item in staged:
        check_replaceable(output / item.name, item)
    output.mkdir(parents=True, exist_ok=True)
    for item in staged:
        replace_path(item, output / item.name, item.is_dir())
