"""A release's recipe (params.yaml `releases.V`, the language of docs/recipes.md), resolved.

`resolve_recipe` follows the `base:` chain, turns the shorthands (`reclean`, `validation_leaks`,
a component's `dedup_against`) into steps and refuses what no stage can run (a base cycle, a release
that reads itself through `base:` and `reference:`, a step `reference` to an unknown release, a scope
against outside a component) in one line naming the key;
`source_roots` says where each component's images may live (and refuses a source params.yaml lacks).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from scripts.lib.errors import DataError, quoted
from scripts.lib.params import CleanStep, Component, DedupStep, Export, Release, Source, Step, parse


@dataclass(frozen=True)
class Recipe:
    name: str
    own_components: tuple[Component, ...]  # this recipe's; `components` adds the base chain's
    steps: tuple[Step, ...]
    export: Export  # scripts/lib/export.py takes `export.spec()`
    base: Recipe | None = None
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

    def chain(self) -> list[Recipe]:
        """This recipe and its base chain, the root first (a loop: a chain of thousands is no recursion)."""
        chain: list[Recipe] = []
        at: Recipe | None = self
        while at is not None:
            chain.append(at)
            at = at.base
        return chain[::-1]

    @property
    def components(self) -> tuple[Component, ...]:
        """Components of the base chain and this recipe, in build order (the sources its rows come from)."""
        return tuple(component for recipe in self.chain() for component in recipe.own_components)

    def all_components(self) -> tuple[Component, ...]:
        return self.components

    def chain_steps(self) -> list[Step]:
        """Every step of this recipe and its base chain: the release steps and each component's."""
        return [
            step
            for recipe in self.chain()
            for step in [*recipe.steps, *(step for component in recipe.own_components for step in component.steps)]
        ]


def resolve_recipe(name: str, releases: dict) -> Recipe:
    """The recipe of `name` with its base chain resolved. `releases` maps names to params.yaml entries
    (plain mappings, checked here, or Release models). Shorthands become steps here."""
    return Recipes(releases)(name)


class Recipes:
    """resolve_recipe for many names of one `releases`: each release is resolved (parsed, checked, its read
    cycles looked for) once, so resolving every release of a chain of N bases is N resolutions, not N**2
    (plans resolved each link of each chain again: `recipes` took minutes at 1,000 chained releases)."""

    def __init__(self, releases: dict):
        self.releases = releases
        self.resolved: dict[str, Recipe] = {}
        self.acyclic: set[str] = set()  # releases whose reads are free of cycles (check_no_read_cycle)
        self.specs: dict[str, Release] = {}  # each entry parsed once: the cycle check reads it again

    def spec(self, name: str) -> Release:
        if name not in self.specs:
            self.specs[name] = _spec(name, self.releases)
        return self.specs[name]

    def __call__(self, name: str) -> Recipe:
        chain: dict[str, Release] = {}  # `name` and its bases not yet resolved, `name` first
        at: str | None = name
        while at is not None and at not in self.resolved:
            if at not in self.releases:
                raise DataError(f"params.yaml: releases.{next(reversed(chain), at)}: unknown release {quoted(at)}")
            if at in chain:
                raise DataError(f"params.yaml: releases: base cycle {shown_path([*chain, at])}")
            chain[at] = self.spec(at)
            at = chain[at].base
        for link, spec in reversed(chain.items()):  # the root first: as the recursion this loop replaced
            base = self.resolved[spec.base] if spec.base is not None else None
            self.resolved[link] = _resolved(link, spec, base, self.releases)
        if name not in self.acyclic:  # after the base chain (a cycle of bases alone is named above)
            check_no_read_cycle(name, self.releases, self.acyclic, self.spec)
        return self.resolved[name]


# A path named in a one-line error: a cycle of 1,000 bases was a line of 7,000 characters
SHOWN_PATH_ENDS = 4


def shown_path(names: list[str]) -> str:
    """`a -> b -> a`; a long path by its first and last few names and how many are left out between."""
    if len(names) <= 2 * SHOWN_PATH_ENDS + 1:
        return " -> ".join(names)
    left_out = len(names) - 2 * SHOWN_PATH_ENDS
    return " -> ".join([*names[:SHOWN_PATH_ENDS], f"... ({left_out} more)", *names[-SHOWN_PATH_ENDS:]])


def _spec(name: str, releases: dict) -> Release:
    spec = releases[name]
    return spec if isinstance(spec, Release) else parse(Release, spec or {}, at=("releases", name))


def _resolved(name: str, spec: Release, base: Recipe | None, releases: dict) -> Recipe:
    """The recipe of release `name` (entry `spec`) on its resolved `base`: shorthands made steps, checked."""
    export = spec.export if base is None or "export" in spec.model_fields_set else base.export
    components = tuple(_with_shorthand(c) for c in spec.components)
    steps = list(spec.steps)
    if spec.reclean:
        steps.append(Step(clean=CleanStep(rules="final", column="orig_text")))
    if spec.validation_leaks != "none":
        steps.append(Step(dedup=DedupStep(scope="validation_vs_train", match=spec.validation_leaks)))
    for number, step in enumerate(steps):
        if step.dedup is not None and (
            step.dedup.before_generate or (step.dedup.scope == "against" and step.dedup.reference is None)
        ):
            raise DataError(
                f"params.yaml: releases.{name}.steps[{number}]: scope against runs on a component's rows "
                "(put it in the component's steps)"
            )
    for number, component in enumerate(components):
        for k, step in enumerate(component.steps):
            if step.dedup is not None and step.dedup.reference is not None and step.dedup.reference not in releases:
                raise DataError(
                    f"params.yaml: releases.{name}.components[{number}].steps[{k}].dedup.reference: "
                    f"unknown release {quoted(step.dedup.reference)}"
                )
    if not components and base is None:
        raise DataError(f"params.yaml: releases.{name}: no components")
    return Recipe(
        name,
        components,
        tuple(steps),
        export,
        base=base,
        description=spec.description,
        lineage=(base.lineage if base else ()) + (name,),
    )


def _reads(name: str, spec: Release) -> list[tuple[str, str]]:
    """(key path, release) for each release `name` (entry `spec`) reads: its base and every step's `reference`."""
    at = f"releases.{name}"
    reads = [(f"{at}.base", spec.base)] if spec.base is not None else []
    steps = [(f"{at}.steps[{k}]", s) for k, s in enumerate(spec.steps)] + [
        (f"{at}.components[{n}].steps[{k}]", s) for n, c in enumerate(spec.components) for k, s in enumerate(c.steps)
    ]
    return reads + [(f"{key}.dedup.reference", s.dedup.reference) for key, s in steps if s.dedup and s.dedup.reference]


def check_no_read_cycle(
    name: str, releases: dict, done: set[str] | None = None, spec: Callable[[str], Release] | None = None
) -> None:
    """Refuse a release that reads itself through `base:` and `reference:` together (`a` references `b`,
    whose base is `a`): composing it would compose itself first, without end. One line naming the key
    that starts the cycle. Depth-first with its own stack: a chain of thousands is no recursion. `done`:
    releases already found free of cycles (not walked again), filled in; `spec`: a release's parsed entry."""
    done = set() if done is None else done
    spec = spec or (lambda other: _spec(other, releases))
    path, keys = [name], list[str]()  # keys[i]: the key of the read from path[i] to path[i + 1]
    todo = [iter(_reads(name, spec(name)))]
    while todo:
        edge = next(todo[-1], None)
        if edge is None:  # every release this one reads is free of cycles
            todo.pop()
            done.add(path.pop())
            del keys[len(path) - 1 :]
            continue
        key, other = edge
        if other in path:
            start = path.index(other)
            raise DataError(
                f"params.yaml: {(keys + [key])[start]}: reference cycle {shown_path(path[start:] + [other])}"
            )
        if other in done or other not in releases:  # an unknown name: resolve_recipe names it
            continue
        path.append(other)
        keys.append(key)
        todo.append(iter(_reads(other, spec(other))))


def _with_shorthand(component: Component) -> Component:
    if component.dedup_against is None:
        return component
    step = Step(dedup=DedupStep(scope="against", against=component.dedup_against))
    return component.model_copy(update={"steps": [*component.steps, step], "dedup_against": None})


def source_roots(sources: dict[str, Source], recipe: Recipe) -> dict[str, list[Path]]:
    """Where each component's images may live: its source's `images` and `path` (params.yaml); a
    component whose source is not in params.yaml is one line before any work."""
    roots = {}
    for number, component in enumerate(recipe.all_components()):
        entry = sources.get(component.source)
        if entry is None:
            raise DataError(
                f"params.yaml: releases.{recipe.name}: component {number} names source {component.source!r}, "
                f"which is not under sources (have: {', '.join(sources) or 'none'})"
            )
        roots[component.source] = [Path(p) for p in (entry.images, entry.path) if p]
    return roots
