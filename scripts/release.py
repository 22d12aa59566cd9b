"""release@V: compose per-source splits into a published dataset version by its recipe.

A recipe (params.yaml: releases.V) lists components - (source, split) -> train|validation - and
optional steps. `base: W` inherits W's components and settings; the child's settings override.
Steps run in this order, each recording why it removed a row:
  1. components in order; `dedup_against: train|validation` drops added rows that near-duplicate
     rows already in that split (cross-dedup: only the new rows are removed)
  2. `reclean: true` re-applies the cleaning filter to every row, from its original prompt
     (v4-b: the fix for v4-a, which added OpenPrompts batch 2 without cleaning)
  3. `validation_leaks: exact|near|none` drops validation rows whose text is in train (exact) or
     near-duplicates a train row (near, at dedup.threshold)
Outputs (data/releases/V/): train/ and validation/ in the recipe's `export` layout (default
ImageFolder: metadata.jsonl + images, hardlinked where possible; also webdataset, simpletuner and
bucketed: see scripts/lib/export.py), removed.parquet (every removed row with its reason), stats.json
(a DVC metric), preview.jpg (contact sheet) and README.md (a Hugging Face data card).
"""
from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import typer

from scripts.lib.errors import DataError
from scripts.lib.params import Component, Export, Preview, Release, load_params, load_section, parse
from scripts.lib.archive import parse_ref
from scripts.lib.io import (SPLITS, check_not_input, check_replaceable, check_table, mark_folder, read_parquet,
                          replace_path, staging_dir, write_json, write_parquet)
from scripts.lib.export import export_options, write_split

ROW_COLUMNS = ["id", "source", "split", "text", "orig_text", "image", "width", "height"]
INHERITED = ("reclean", "validation_leaks", "export")  # settings a release takes from its base unless it sets them


@dataclass(frozen=True)
class Recipe:
    name: str
    components: tuple[Component, ...]
    reclean: bool
    validation_leaks: str
    export: Export  # scripts/lib/export.py takes `export.spec()`
    description: str = ""
    lineage: tuple[str, ...] = field(default=())


# --- recipe -----------------------------------------------------------------------------------


def resolve_recipe(name: str, releases: dict, _seen: tuple[str, ...] = ()) -> Recipe:
    """Flatten `base:` inheritance into one recipe (base components first). `releases` maps names to
    params.yaml entries (plain mappings, checked here, or Release models)."""
    if name not in releases:
        raise DataError(f"params.yaml: releases.{_seen[-1] if _seen else name}: unknown release {name!r}")
    if name in _seen:
        raise DataError(f"params.yaml: releases: base cycle {' -> '.join(_seen + (name,))}")
    spec = releases[name]
    if not isinstance(spec, Release):
        spec = parse(Release, spec or {}, at=("releases", name))
    if spec.base is not None:
        base = resolve_recipe(spec.base, releases, _seen + (name,))
        settings = {k: getattr(spec if k in spec.model_fields_set else base, k) for k in INHERITED}
        components, lineage = base.components + tuple(spec.components), base.lineage + (name,)
    else:
        settings = {k: getattr(spec, k) for k in INHERITED}
        components, lineage = tuple(spec.components), (name,)
    recipe = Recipe(name, components, description=spec.description, lineage=lineage, **settings)
    if not recipe.components:
        raise DataError(f"params.yaml: releases.{name}: no components")
    return recipe


# --- composition (tables in, tables out) --------------------------------------------------------


def compose(recipe: Recipe, load_split, clean_rows, near_duplicates) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Build the release rows and the removed rows (with `reason`).

    load_split(source, split) -> rows; clean_rows(rows) -> (kept, dropped with reason);
    near_duplicates(new_texts, reference_texts) -> bool mask over new_texts.
    """
    rows = pd.DataFrame(columns=ROW_COLUMNS)
    removed: list[pd.DataFrame] = []
    for component in recipe.components:
        added = _component_rows(component, load_split)
        if component.dedup_against and len(added):
            reference = rows.loc[rows["split"] == component.dedup_against, "text"].tolist()
            dup = near_duplicates(added["text"].tolist(), reference) if reference else None
            if dup is not None and dup.any():
                removed.append(added[dup].assign(reason=f"cross_dedup:{component.dedup_against}"))
                added = added[~dup]
        rows = pd.concat([rows, added], ignore_index=True) if len(rows) else added.reset_index(drop=True)
    if recipe.reclean:
        rows, dropped = clean_rows(rows)
        removed.append(dropped)
    if recipe.validation_leaks != "none":
        rows, leaks = remove_validation_leaks(rows, recipe.validation_leaks, near_duplicates)
        removed.append(leaks)
    removed_rows = pd.concat(removed, ignore_index=True) if removed else pd.DataFrame(columns=ROW_COLUMNS + ["reason"])
    return rows.reset_index(drop=True), removed_rows.reset_index(drop=True)


def _component_rows(component: Component, load_split) -> pd.DataFrame:
    parts = SPLITS if component.split == "all" else (component.split,)
    frames = [load_split(component.source, part) for part in parts]
    rows = pd.concat(frames, ignore_index=True).sort_values("id", kind="stable")
    return rows[ROW_COLUMNS].assign(split=component.into).reset_index(drop=True)


def remove_validation_leaks(rows: pd.DataFrame, mode: str, near_duplicates) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Drop validation rows whose text is in train (exact), or near-duplicates a train row (near)."""
    is_val = rows["split"] == "validation"
    train_texts = rows.loc[~is_val, "text"]
    exact = is_val & rows["text"].isin(set(train_texts))
    leaks = [rows[exact].assign(reason="leak:exact")]
    keep = ~exact
    if mode == "near":
        candidates = rows[is_val & keep]
        if len(candidates) and len(train_texts):
            near = near_duplicates(candidates["text"].tolist(), train_texts.tolist())
            near_index = candidates.index[near]
            leaks.append(rows.loc[near_index].assign(reason="leak:near"))
            keep &= ~rows.index.isin(near_index)
    return rows[keep], pd.concat(leaks, ignore_index=True)


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
    return {"dedup": dedup, "split": params.get("split")}


def data_card(recipe: Recipe, stats: dict, params: dict) -> str:
    """README.md with Hugging Face YAML front matter: counts, sources, recipe, params, licences."""
    import yaml

    sources = sorted({c.source for c in recipe.components})
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
                "data_files": [{"split": s, "path": f"{s}/**"} for s in SPLITS],
            }
        ],
        "dataset_info": {"splits": [{"name": s, "num_examples": stats["rows"][s]} for s in SPLITS]},
    }
    recipe_yaml = {
        "lineage": list(recipe.lineage),
        "components": [c.model_dump() for c in recipe.components],
        "reclean": recipe.reclean,
        "validation_leaks": recipe.validation_leaks,
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


def _loader(splits_dir: Path, roots: dict[str, list[Path]]):
    def load_split(source: str, split: str) -> pd.DataFrame:
        path = splits_dir / source / f"{split}.parquet"
        rows = read_parquet(path)
        check_split_rows(rows, path, source, roots[source])
        return rows

    return load_split


def source_roots(params: dict, recipe: Recipe) -> dict[str, list[Path]]:
    """Where each component's images may live: its source's `images` and `path` (params.yaml); a
    component whose source is not in params.yaml is one line before any work."""
    sources = params.get("sources") or {}
    roots = {}
    for number, component in enumerate(recipe.components):
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


def _cleaner(rules_file: Path, desc: str = "reclean"):
    from scripts.clean import clean_table, load_rules, read_rules_params

    rules = load_rules(read_rules_params(rules_file))

    def clean_rows(rows: pd.DataFrame):
        as_prompts = rows.drop(columns=["text"]).rename(columns={"orig_text": "prompt"})
        kept, dropped = clean_table(as_prompts, rules, desc=desc)
        back = {"prompt": "orig_text"}
        kept = kept.rename(columns=back)[ROW_COLUMNS]
        dropped = dropped.rename(columns=back).assign(text=dropped["prompt"])
        return kept, dropped.assign(reason="clean:" + dropped["reason"].astype(str))[ROW_COLUMNS + ["reason"]]

    return clean_rows


def _near_duplicates(params: dict):
    from scripts.dedup import near_duplicate_mask

    def near_duplicates(new_texts: list[str], reference_texts: list[str]):
        return near_duplicate_mask(new_texts, reference_texts, params["dedup"])

    return near_duplicates


def cli(
    name: str = typer.Argument(..., help="release name in params.yaml: releases"),
    splits: Path = typer.Argument(..., help="data/splits (one folder per source)"),
    output: Path = typer.Argument(..., help="data/releases/V"),
    rules: Path = typer.Option(Path("data/clean/rules.json"), "--rules", help="compiled cleaning rules, for reclean"),
) -> None:
    """Compose a release from per-source splits by its recipe."""
    params = load_params()
    recipe = resolve_recipe(name, params.get("releases") or {})
    fmt, options = export_options(recipe.export.spec(), f"params.yaml: releases.{name}")
    from scripts.lib.progress import Progress

    geometry = load_section("preview", missing_ok=True)
    roots = source_roots(params, recipe)
    cleaner = _cleaner(rules, f"release@{name} reclean") if recipe.reclean else None
    rows, removed = compose(recipe, _loader(splits, roots), cleaner, _near_duplicates(params))
    stats = release_stats(rows, removed)
    # Everything is written into a staging folder first and moved into place only at the end, so a
    # bad image or a crash leaves the previous release whole (never train new and validation old).
    check_not_input(output, [splits, rules])
    with staging_dir(output) as staging:  # locked; a killed run's staging folder goes on the next run
        with Progress(f"release@{name}", total=len(rows), unit="images") as progress:
            for split in SPLITS:
                write_split(rows[rows["split"] == split], staging / split, fmt, options, progress.advance)
                mark_folder(staging / split)
        write_preview(rows, staging / "preview.jpg", geometry)
        write_parquet(removed.astype({"width": "Int64", "height": "Int64"}), staging / "removed.parquet")
        (staging / "README.md").write_text(data_card(recipe, stats, params), encoding="utf-8")
        write_json(stats, staging / "stats.json")
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
        foreign = sorted(p.name for p in output.iterdir() if p.name not in names | left)
        if foreign:
            raise DataError(f"{output}: holds {foreign[0]!r}, which release did not write; refusing to write a "
                            "release into it (point it at its own folder, e.g. data/releases/NAME)")
        for name in sorted(left):
            shutil.rmtree(output / name, ignore_errors=True)
    for item in staged:
        check_replaceable(output / item.name, item)
    output.mkdir(parents=True, exist_ok=True)
    for item in staged:
        replace_path(item, output / item.name, item.is_dir())
