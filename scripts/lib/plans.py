"""Plan files: the share of params.yaml `releases` each release@V and prefilter@S reads.

DVC can depend on a params key, but not on "V, its base chain and the releases its steps reference",
so the `recipes` stage writes one file per reader (data/recipes/{release/V,compose/V,prefilter/S}.json,
plots.json) and the reader depends on that file. A plan holds the entries as params.yaml writes them (so its bytes change
exactly when an entry it reads is edited), in params order; the reader checks the file against
params.yaml (`check_plan`), so a hand-run stage after an edit fails in one line.
"""

from __future__ import annotations

import json
import secrets
from pathlib import Path

from scripts.lib.errors import DataError
from scripts.lib.io import config_text
from scripts.lib.nesting import dumps_json, loads_json
from scripts.lib.params import PARAMS_FILE, Component, DedupStep, Release, Source, Split, load_params, parse
from scripts.lib.recipe import Recipes

SHUFFLE = Split().method  # params.yaml's default split.method


def written_releases(path: Path | str = PARAMS_FILE) -> dict:
    """`releases` as written in params.yaml (checked against the models): what a plan file holds."""
    return load_params(path=path).get("releases") or {}


def written_sources(path: Path | str = PARAMS_FILE) -> dict:
    """`sources` as written in params.yaml (checked against the models)."""
    return load_params(path=path).get("sources") or {}


def written_params(path: Path | str = PARAMS_FILE) -> tuple[dict, dict, str]:
    """`releases` and `sources` as written, and split.method: params.yaml parsed once (each load parsed the
    whole file again: a release of 10,000 steps was parsed six times a run)."""
    params = load_params(path=path)
    split = parse(Split, params.get("split") or {}, at=("split",), file=str(path))
    return params.get("releases") or {}, params.get("sources") or {}, split.method


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


# Entries all release plans may hold together. Each plan holds every release its release reads, so N chained
# releases make N**2 / 2 entries: 3,000 links (85 KB of params.yaml) ran `recipes` for 200 s into 300 MB,
# 10,000 for most of an hour. 200,000 is a chain of over 600; real ones are a few releases long.
MAX_PLAN_ENTRIES = 200_000


def check_plans_bounded(entries: int, name: str) -> None:
    """DataError once the release plans written so far (the last `name`'s) hold more than MAX_PLAN_ENTRIES."""
    if entries > MAX_PLAN_ENTRIES:
        raise DataError(
            f"params.yaml: releases.{name}: the release plans would hold more than {MAX_PLAN_ENTRIES} entries "
            "(each holds every release its release reads through base: and reference:, so a chain of N holds "
            "N*N/2); shorten the chain"
        )


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


def _before_generate(releases: dict, recipes: Recipes | None = None):
    """(key, release, component, step) for every before_generate step in `releases`, in params order; `key`
    is the step's path in params.yaml (`releases.V.components[0].steps[1].dedup`)."""
    recipes = recipes or Recipes(releases)
    for name in releases:
        for number, component in enumerate(recipes(name).own_components):
            for k, step in enumerate(component.steps):
                if step.dedup is not None and step.dedup.before_generate:
                    yield f"releases.{name}.components[{number}].steps[{k}].dedup", name, component, step.dedup


def before_generate_steps(
    source: str, releases: dict, recipes: Recipes | None = None
) -> list[tuple[str, Component, DedupStep]]:
    """(release, component, step) for every before_generate step on `source`, in params order."""
    return [(name, c, step) for _, name, c, step in _before_generate(releases, recipes) if c.source == source]


def prefiltered_sources(releases: dict, recipes: Recipes | None = None) -> set[str]:
    """Sources with a before_generate step in some release (their rows cannot be another step's reference)."""
    return {c.source for _, _, c, _ in _before_generate(releases, recipes)}


def sources_read_by(names: list[str], releases: dict, recipes: Recipes | None = None) -> list[str]:
    """The sources whose rows composing `names` reads (their base chains and references too), in first-read order."""
    recipes = recipes or Recipes(releases)
    read = releases_read_by(names, releases, recipes)
    return list(dict.fromkeys(c.source for n in read for c in recipes(n).components))


def prefilter_plan(
    source: str,
    releases: dict,
    sources: dict | None = None,
    split_method: str = SHUFFLE,
    recipes: Recipes | None = None,
) -> dict:
    """data/recipes/prefilter/S.json: the entries of `releases` prefilter@S reads (the releases with a
    before_generate step on S and what they read), the sources with such steps, and the
    `caption_language` of each source its references read (captions@X drops those rows before the split,
    so the reference drops them too). What prefilter@S cannot know before generation is refused
    (`check_before_generate`)."""
    recipes = recipes or Recipes(releases)
    steps = [(key, name, c, step) for key, name, c, step in _before_generate(releases, recipes) if c.source == source]
    if not steps:
        return {"prefiltered": [], "releases": []}  # nothing runs before generation
    prefiltered = prefiltered_sources(releases, recipes)
    check_before_generate(steps, releases, prefiltered, split_method, recipes)
    references = sorted({step.reference for _, _, _, step in steps})
    return {
        "prefiltered": sorted(prefiltered),  # read only by steps
        "releases": [
            [n, releases[n]] for n in releases_read_by(sorted({n for _, n, _, _ in steps}), releases, recipes)
        ],
        "caption_language": {
            x: ((sources or {}).get(x) or {}).get("caption_language")
            for x in sources_read_by(references, releases, recipes)
        },
    }


def check_before_generate(
    steps: list, releases: dict, prefiltered: set[str], split_method: str, recipes: Recipes | None = None
) -> None:
    """Refuse a before_generate step (key, release, component, step) whose rows prefilter@S cannot tell before
    generation, in one line naming its key: a component of one split unless split.method is hash (prefilter
    runs before split@S draws: with shuffle it would remove rows of the other split, which other releases
    read), or a reference that reads a source with before_generate steps (its rows depend on that prefilter)."""
    for key, _, component, step in steps:
        if component.split != "all" and split_method != "hash":
            raise DataError(
                f"params.yaml: {key}.before_generate: runs before split@{component.source} draws its split by "
                f"{split_method}, so it cannot tell the component's {component.split} rows from the others, which "
                "other releases read; take `split: all` or use split.method hash"
            )
        for read in sources_read_by([step.reference], releases, recipes):
            if read in prefiltered:
                raise DataError(
                    f"params.yaml: {key}.reference: release {step.reference!r} reads source {read!r}, which has "
                    "before_generate steps itself: its rows are not known before generation (they depend on "
                    f"prefilter@{read}'s output); reference a release that does not read {read!r}"
                )


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


class PlanTexts:
    """The text of each plan file, as dumps_json(plan, indent=2, sort_keys=True) writes it, with each release
    entry dumped once per kind of plan and spliced in: every plan holds its releases' whole entries, so 1,000
    releases based on one of 10,000 steps dumped those steps 1,000 times (minutes in json's Python encoder)."""

    ENTRY_INDENT = "\n" + " " * 6  # an entry sits at depth 3: {"releases": [[name, ENTRY]]}

    def __init__(self) -> None:
        self.token = f"plan-entry-{secrets.token_hex(16)}:"  # a placeholder no params.yaml value holds
        self.entries: dict[tuple[str, str], str] = {}

    def text(self, plan: dict, kind: str | None, target: Path) -> str:
        """`plan`'s file text; `kind` names how its entries were cut (release, compose; None: plots.json, whose
        `releases` are names alone), `target` its file."""
        if kind is None:
            return dumps_json(plan, target, indent=2, sort_keys=True, ensure_ascii=False)
        entries = plan.get("releases", [])
        skeleton = {**plan, "releases": [[name, f"{self.token}{k}"] for k, (name, _) in enumerate(entries)]}
        text = dumps_json(skeleton, target, indent=2, sort_keys=True, ensure_ascii=False)
        pieces = text.split(f'"{self.token}')
        if len(pieces) != len(entries) + 1:  # a source's value spelled the placeholder: no splicing
            return dumps_json(plan, target, indent=2, sort_keys=True, ensure_ascii=False)
        out = [pieces[0]]
        for (name, entry), piece in zip(entries, pieces[1:]):
            out += [self._entry(kind, name, entry, target), piece.split('"', 1)[1]]
        return "".join(out)

    def _entry(self, kind: str, name: str, entry: object, target: Path) -> str:
        if (kind, name) not in self.entries:  # JSON strings hold no raw line break: only the layout's are indented
            dumped = dumps_json(entry, target, indent=2, sort_keys=True, ensure_ascii=False)
            self.entries[kind, name] = dumped.replace("\n", self.ENTRY_INDENT)
        return self.entries[kind, name]
