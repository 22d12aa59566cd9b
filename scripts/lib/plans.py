"""Plan files: the share of params.yaml `releases` each release@V and prefilter@S reads.

DVC can depend on a params key, but not on "V, its base chain and the releases its steps reference",
so the `recipes` stage writes one file per reader (data/recipes/{release/V,compose/V,prefilter/S}.json,
plots.json) and the reader depends on that file. A plan holds the entries as params.yaml writes them (so its bytes change
exactly when an entry it reads is edited), in params order; the reader checks the file against
params.yaml (`check_plan`), so a hand-run stage after an edit fails in one line.
"""

from __future__ import annotations

import json
from pathlib import Path

from scripts.lib.errors import DataError
from scripts.lib.io import config_text
from scripts.lib.nesting import loads_json
from scripts.lib.params import PARAMS_FILE, Component, DedupStep, Release, Source, load_params, parse
from scripts.lib.recipe import Recipes


def written_releases(path: Path | str = PARAMS_FILE) -> dict:
    """`releases` as written in params.yaml (checked against the models): what a plan file holds."""
    return load_params(path=path).get("releases") or {}


def written_sources(path: Path | str = PARAMS_FILE) -> dict:
    """`sources` as written in params.yaml (checked against the models)."""
    return load_params(path=path).get("sources") or {}


def releases_read_by(names: list[str], releases: dict, recipes: Recipes | None = None) -> list[str]:
    """`names` and every release they read (base chains, step references), transitively, in params order.
    `recipes`: a resolver shared by the caller's other calls (each release resolved once)."""
    recipes = recipes or Recipes(releases)
    found: set[str] = set()
    todo = list(names)
    while todo:
        name = todo.pop()
        if name in found:
            continue
        found.add(name)
        recipe = recipes(name)
        steps = list(recipe.steps) + [s for c in recipe.own_components for s in c.steps]
        todo += [s.dedup.reference for s in steps if s.dedup is not None and s.dedup.reference is not None]
        todo += [recipe.base.name] if recipe.base is not None else []
    return [name for name in releases if name in found]


def release_plan(name: str, releases: dict, sources: dict, recipes: Recipes | None = None) -> dict:
    """data/recipes/release/V.json: the entries of `releases` release@V reads, and of `sources` (the
    sources of their components: image folders, kind, licence, link and citation for the card). An
    unknown source is left out here; the release names it in one line."""
    recipes = recipes or Recipes(releases)
    read = releases_read_by([name], releases, recipes)
    used = {c.source for n in read for c in recipes(n).own_components}  # `read` holds every base
    return {"releases": [[n, releases[n]] for n in read], "sources": [[s, sources[s]] for s in sources if s in used]}


def compose_plan(plan: dict) -> dict:
    """data/recipes/compose/V.json: a release plan less what only the export and the card read (`export`,
    `description`), so a layout change re-composes nothing."""
    only_export = ("export", "description")
    return {
        "releases": [
            [n, {k: v for k, v in (entry or {}).items() if k not in only_export}] for n, entry in plan["releases"]
        ],
        "sources": plan["sources"],
    }


def plots_plan(releases: dict, sources: dict) -> dict:
    """data/recipes/plots.json: the names the plots stage reads, in params order (not their entries)."""
    return {"releases": list(releases), "sources": list(sources)}


def before_generate_steps(
    source: str, releases: dict, recipes: Recipes | None = None
) -> list[tuple[str, Component, DedupStep]]:
    """(release, component, step) for every before_generate step on `source`, in params order."""
    recipes = recipes or Recipes(releases)
    found = []
    for name in releases:
        for component in recipes(name).own_components:
            if component.source != source:
                continue
            found += [
                (name, component, s.dedup) for s in component.steps if s.dedup is not None and s.dedup.before_generate
            ]
    return found


def prefiltered_sources(releases: dict, recipes: Recipes | None = None) -> set[str]:
    """Sources with a before_generate step in some release (their rows cannot be another step's reference)."""
    recipes = recipes or Recipes(releases)
    return {
        c.source
        for name in releases
        for c in recipes(name).own_components
        if any(s.dedup is not None and s.dedup.before_generate for s in c.steps)
    }


def prefilter_plan(source: str, releases: dict, recipes: Recipes | None = None) -> dict:
    """data/recipes/prefilter/S.json: the entries of `releases` prefilter@S reads (the releases with a
    before_generate step on S and what they read) and the sources with such steps."""
    recipes = recipes or Recipes(releases)
    with_steps = sorted({release for release, _, _ in before_generate_steps(source, releases, recipes)})
    return {
        "prefiltered": sorted(prefiltered_sources(releases, recipes)) if with_steps else [],  # read only by steps
        "releases": [[n, releases[n]] for n in releases_read_by(with_steps, releases, recipes)],
    }


def plan_releases(plan: dict) -> dict[str, Release]:
    """The `releases` a stage reads: the plan's entries as models, in params order."""
    return {
        name: entry if isinstance(entry, Release) else parse(Release, entry or {}, at=("releases", name))
        for name, entry in plan["releases"]
    }


def plan_sources(plan: dict) -> dict[str, Source]:
    """The `sources` a release reads: the plan's entries as models."""
    return {name: parse(Source, entry or {}, at=("sources", name)) for name, entry in plan.get("sources", [])}


def check_plan(path: Path, expected: dict) -> None:
    """Refuse the plan file DVC gave a stage unless it holds `expected` (computed from params.yaml now)."""
    try:
        plan = loads_json(config_text(path))  # a FIFO or device is refused before it is opened: it hung
    except FileNotFoundError:
        raise DataError(f"{path}: not found (run `dvc repro recipes`)") from None
    except (OSError, ValueError) as exc:  # UnicodeDecodeError, JSONDecodeError, TooDeep
        raise DataError(f"{path}: unreadable recipe plan ({exc})") from None
    if plan != json.loads(json.dumps(expected)):
        raise DataError(f"{path}: differs from params.yaml releases (params edited since): run `dvc repro recipes`")
