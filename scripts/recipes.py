"""recipes: the part of params.yaml `releases` each release@V and prefilter@S reads, one file apiece.

    python -m scripts recipes data/recipes

DVC can depend on a params key, but not on "V, its base chain and the releases its steps reference":
release@V and prefilter@S depended on all of `releases`, so adding a release re-ran every earlier
release and every prefilter. They depend on their file here instead: adding v4-b re-runs release@v4-b
only. Each file holds params.yaml entries verbatim (keys sorted), in params order, and the stage that
reads it checks it against params.yaml (a hand-run stage after an edit fails in one line). What a file
holds is said in scripts/lib/plans.py (`release_plan`, `prefilter_plan`); this stage only writes them.

Out: data/recipes/release/V.json    releases V reads: V, its `base:` chain and every step `reference:`,
                                    transitively, and the entries of the sources their components name
     data/recipes/compose/V.json    the same less `export` and `description` (compose@V)
     data/recipes/prefilter/S.json  releases with a `before_generate` step on S and those they read, the
                                    sources that have such steps (their rows cannot be a reference), and
                                    the `caption_language` of the sources the references read
     data/recipes/plots.json        the names of the releases and sources, in params order (plots)
"""

from __future__ import annotations

from pathlib import Path

import typer

from scripts.lib.io import atomic_path, shown
from scripts.lib.plans import (
    PlanTexts,
    check_plans_bounded,
    compose_plan,
    plots_plan,
    prefilter_plan,
    release_plan,
    written_params,
)
from scripts.lib.recipe import Recipes
from scripts.lib.temps import output_lock

PLAN_KINDS = {"release": "release", "prefilter": "release", "compose": "compose"}  # plots.json holds names alone


def cli(output: Path = typer.Argument(..., help="data/recipes")) -> None:
    """Write each release's and each source's share of params.yaml `releases` (and `sources`)."""
    with output_lock(output, whole_run=True):  # a second run at once is refused before it reads params.yaml
        write_recipes(output)


def write_recipes(output: Path) -> None:
    # a plan holds entries as written (scripts/lib/plans.py); split.method only decides whether a plan is
    # refused (prefilter@S, which depends on `split`, checks it too). params.yaml is parsed once.
    releases, sources, split_method = written_params()
    plans, recipes = {}, Recipes(releases)  # one resolver: each release resolved once, however long its chain
    entries = 0  # plans grow as a chain's square: bounded before they are built
    for name in releases:
        plans[f"release/{name}.json"] = release_plan(name, releases, sources, recipes)
        entries += len(plans[f"release/{name}.json"]["releases"])
        check_plans_bounded(entries, name)
        plans[f"compose/{name}.json"] = compose_plan(plans[f"release/{name}.json"])
    plans.update(
        {
            f"prefilter/{source}.json": prefilter_plan(source, releases, sources, split_method, recipes)
            for source in sources
        }
    )
    plans["plots.json"] = plots_plan(releases, sources)
    texts = PlanTexts()  # each release entry dumped once per kind, however many plans hold it
    with atomic_path(output, is_dir=True) as tmp:
        for rel, plan in plans.items():
            path = tmp / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            kind = PLAN_KINDS.get(rel.split("/")[0])  # compose entries lack export and description
            path.write_text(texts.text(plan, kind, output / rel) + "\n", encoding="utf-8")
    print(shown(f"recipes: {len(releases)} releases, {len(sources)} sources -> {output}/"))
