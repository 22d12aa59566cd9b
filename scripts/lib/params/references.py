"""Names one section gives another's entries: checked once for the whole file, when any stage reads it.

A release component's `source`, a `generate.sources` item, a release's `base` and a step's `reference` each
name an entry of `sources` or `releases`. A stage reads only its own section, so a name missing there
passed every stage's checks and was met only by compose@V, release@V or DVC's missing dependency of
generate@NAME, after `dvc repro` had run the stages before them (tiny_model first). Like DVC, which refuses a
bad dvc.yaml before it runs anything, load_params refuses the file at any stage's start.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterator
from typing import Any

from scripts.lib.errors import DataError, quoted

# Sections dvc.yaml runs a stage per entry of (`foreach: ${sources}`): DVC refuses `null` there before any
# stage runs ("expected list/dictionary, got NoneType"), while a stage read it as no entries
FOREACH_SECTIONS = ("sources", "releases", "synthesize", "caption")
SHOWN_NAMES = 8  # names listed after an unknown one (a file may hold thousands)


def null_foreach_section(data: Any) -> str | None:
    """The message for a foreach section written as `null`, if `data` (the whole file) has one."""
    for section in FOREACH_SECTIONS:
        if isinstance(data, dict) and section in data and data[section] is None:
            return (
                f"{section}: null is not a mapping of entries (dvc.yaml's `foreach: ${{{section}}}` refuses it "
                "before any stage runs); write `{}` for none"
            )
    return None


def named_entries(params: Any) -> Iterator[tuple[str, str, str]]:
    """(key path, section named, name) for every name the checked whole file (a Params model) gives an entry
    of `sources` or `releases`, in file order. Only what is written: generate's default list is no name."""
    generate = params.generate
    if generate is not None and "sources" in generate.model_fields_set:
        for number, name in enumerate(generate.sources):
            yield f"generate.sources[{number}]", "sources", name
    for release, spec in (params.releases or {}).items():
        at = f"releases.{release}"
        if spec.base is not None:
            yield f"{at}.base", "releases", spec.base
        steps = [(f"{at}.steps[{k}]", step) for k, step in enumerate(spec.steps)]
        for number, component in enumerate(spec.components):
            yield f"{at}.components[{number}].source", "sources", component.source
            steps += [(f"{at}.components[{number}].steps[{k}]", step) for k, step in enumerate(component.steps)]
        for key, step in steps:
            if step.dedup is not None and step.dedup.reference is not None:
                yield f"{key}.dedup.reference", "releases", step.dedup.reference


def check_references(params: Any, file: str) -> None:
    """One DataError naming `file`, the key and the name, for the first name of `named_entries` absent from its
    section. An absent section is left to the stage that reads it (DVC refuses dvc.yaml's foreach over it)."""
    for key, section, name in named_entries(params):
        entries = getattr(params, section)
        if entries is not None and name not in entries:
            raise DataError(f"{file}: {key}: {unknown_name_message(section, name, list(entries))}")


def unknown_name_message(section: str, name: str, names: list[str]) -> str:
    """`names source 'difusiondb', which is not under sources (did you mean 'diffusiondb'?)`: the nearest name,
    or the first few."""
    near = difflib.get_close_matches(name[:100], names, n=1, cutoff=0.6)  # an entry name is 100 characters at most
    if near:
        hint = f"did you mean {near[0]!r}?"
    elif names:
        hint = f"{section} has: {', '.join(names[:SHOWN_NAMES])}{', ...' if len(names) > SHOWN_NAMES else ''}"
    else:
        hint = f"{section} is empty"
    return f"names {section.removesuffix('s')} {quoted(name)}, which is not under {section} ({hint})"
