"""`recipes` at scale: N releases based on one release of S steps, planned by the stage (scripts/recipes.py)
and by the algorithm it replaced (params.yaml parsed four times, every plan dumped whole by dumps_json), in
one process on one params.yaml. Both write every plan file; their bytes are compared.

    python benchmarks/recipes_bench.py                       # 1,000 and 10,000 steps, 1,000 derived releases
    python benchmarks/recipes_bench.py --steps 1000 --derived 200 --out benchmarks/results/recipes.txt

The old algorithm at 10,000 steps x 1,000 releases runs for many minutes: --old-limit (entries x steps)
skips it above that size (the new one still runs).
"""

from __future__ import annotations

import argparse
import filecmp
import os
import sys
import tempfile
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._record import add_out_argument, record
from scripts.lib.io import atomic_path
from scripts.lib.nesting import dumps_json
from scripts.lib.params import load_section
from scripts.lib.plans import (
    check_plans_bounded,
    compose_plan,
    plots_plan,
    prefilter_plan,
    release_plan,
    written_releases,
    written_sources,
)
from scripts.lib.recipe import Recipes
from scripts.recipes import write_recipes

REPO = Path(__file__).resolve().parents[1]


def params_text(steps: int, derived: int) -> str:
    params = yaml.safe_load((REPO / "params.yaml").read_text(encoding="utf-8"))
    step = {"clean": {"rules": "2023-03-30", "mode": "rewrite", "column": "orig_text"}}
    releases = {"big": {"components": [{"source": "diffusiondb", "split": "train"}], "steps": [step] * steps}}
    releases |= {f"d{i}": {"base": "big", "description": f"derived {i}"} for i in range(derived)}
    return yaml.dump({**params, "releases": releases}, Dumper=NoAliases, sort_keys=False)


class NoAliases(yaml.SafeDumper):
    def ignore_aliases(self, data):  # params.yaml refuses aliases: every step written out
        return True


def old_write_recipes(output: Path) -> None:
    """scripts/recipes.py before round 39d: four loads of params.yaml, each plan dumped whole."""
    releases, sources = written_releases(), written_sources()
    split_method = load_section("split", missing_ok=True).method
    plans, recipes, entries = {}, Recipes(releases), 0
    for name in releases:
        plans[f"release/{name}.json"] = release_plan(name, releases, sources, recipes)
        entries += len(plans[f"release/{name}.json"]["releases"])
        check_plans_bounded(entries, name)
        plans[f"compose/{name}.json"] = compose_plan(plans[f"release/{name}.json"])
    plans |= {f"prefilter/{s}.json": prefilter_plan(s, releases, sources, split_method, recipes) for s in sources}
    plans["plots.json"] = plots_plan(releases, sources)
    with atomic_path(output, is_dir=True) as tmp:
        for rel, plan in plans.items():
            (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
            text = dumps_json(plan, output / rel, indent=2, sort_keys=True, ensure_ascii=False)
            (tmp / rel).write_text(text + "\n", encoding="utf-8")


def timed(write, output: Path) -> float:
    started = time.perf_counter()
    write(output)
    return time.perf_counter() - started


def same_files(a: Path, b: Path) -> bool:
    names = sorted(p.relative_to(a) for p in a.rglob("*.json"))
    return names == sorted(p.relative_to(b) for p in b.rglob("*.json")) and all(
        filecmp.cmp(a / n, b / n, shallow=False) for n in names
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--derived", type=int, default=1000)
    parser.add_argument("--old-limit", type=int, default=2_000_000, help="largest derived x steps the old one runs")
    add_out_argument(parser)
    args = parser.parse_args()
    record(args.out)
    for steps in args.steps:
        with tempfile.TemporaryDirectory() as folder:
            os.chdir(folder)
            Path("params.yaml").write_text(params_text(steps, args.derived), encoding="utf-8")
            new = timed(write_recipes, Path("new"))
            line = f"{steps:>6} steps, {args.derived} derived releases: new {new:7.2f} s"
            if args.derived * steps <= args.old_limit:
                old = timed(old_write_recipes, Path("old"))
                line += f", old {old:7.2f} s, ratio old/new {old / new:5.1f}x, same bytes: {same_files(Path('old'), Path('new'))}"
            else:
                line += ", old skipped (--old-limit)"
            print(line, flush=True)


if __name__ == "__main__":
    main()
