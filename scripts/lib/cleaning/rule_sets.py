"""Rule sets at the boundary: every form a rule set arrives in, parsed once into a `CleanRules` model.

The forms: a shipped set (scripts/clean_rules/<name>.yaml), params.yaml `clean` (a named set and
overrides of its keys), and rules.json, which the clean_rules stage writes with every set once
(`{"rules": default name, "sets": {name: document}}`) so that DVC tracks the rule lists in one file.
Past this module the cleaner sees only `CleanRules`.
"""

from __future__ import annotations

import datetime
import functools
from pathlib import Path
from typing import Any, NamedTuple

from scripts.lib.cleaning.compiler import RuleOrigin, compile_rules
from scripts.lib.cleaning.rules import Rules
from scripts.lib.errors import DataError
from scripts.lib.io import config_text
from scripts.lib.nesting import loads_json
from scripts.lib.params import CLEAN_RULES_DIR, Clean, CleanRules, SourceClean, parse, read_yaml, rule_set_names

DEFAULT_RULE_SET = "final"
MODES = ("rewrite", "filter_only", "off")


def load_rule_set(name: str) -> CleanRules:
    """The shipped rule set scripts/clean_rules/<name>.yaml; a bad file is one line naming it."""
    name = set_name(name)
    path = CLEAN_RULES_DIR / f"{name}.yaml"
    if not path.is_file():
        raise DataError(f"clean: no rule set named {name!r} (shipped: {', '.join(rule_set_names())})")
    return _read_rule_set(path, path.stat().st_mtime_ns)


@functools.lru_cache(maxsize=16)
def _read_rule_set(path: Path, mtime_ns: int) -> CleanRules:  # a frozen model: safe to share
    root = CLEAN_RULES_DIR.parents[1]
    where = str(path.relative_to(root) if path.is_relative_to(root) else path)
    try:
        data = read_yaml(config_text(path))
    except Exception as exc:  # YAML syntax, alias, encoding: one line naming the file
        raise DataError(f"{where}: not a valid rule set ({type(exc).__name__}: {str(exc).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise DataError(f"{where}: expected a mapping of rules")
    return compiled(parse(CleanRules, data, file=where), where, at="")


def compiled(rules: CleanRules, file: str, at: str) -> CleanRules:
    """`rules` once every rule in it compiles, a bad one named in `file` at key path `at`: checked where the
    set is read, since whatever compiles it later cannot know the file (and named params.yaml)."""
    compile_rules(rules, origin=RuleOrigin(file, at))
    return rules


def set_name(name: Any, where: str = "clean") -> str:
    if isinstance(name, datetime.date):  # YAML reads an unquoted 2023-04-04 as a date
        name = name.isoformat()
    if not isinstance(name, str) or not name:
        raise DataError(f"{where}: a rule set name must be text, got {name!r}")
    return name


def document(rules: CleanRules) -> dict:
    """A rule set as the keys it was written with (JSON-ready): what rules.json holds."""
    return rules.model_dump(mode="json", exclude_unset=True)


def resolve(clean: Clean) -> CleanRules:
    """params.yaml `clean` -> the rule set it means: the set named by `rules`, each non-null other key
    replacing that set's value whole."""
    overrides = {
        key: value
        for key, value in clean.model_dump(mode="json", exclude_unset=True).items()
        if key in CleanRules.model_fields and value is not None
    }
    named = load_rule_set(clean.rules)
    if not overrides:
        return named
    return parse(CleanRules, {**document(named), **overrides}, at=("clean",))


def all_rule_sets(clean: Clean) -> dict[str, CleanRules]:
    """Every shipped rule set, the default one (`clean.rules`) with the params.yaml overrides applied."""
    sets = {name: load_rule_set(name) for name in rule_set_names()}
    sets[clean.rules] = resolve(clean)
    return sets


def rules_file_document(default: str, sets: dict[str, CleanRules]) -> dict:
    """What the clean_rules stage writes to rules.json."""
    return {"rules": default, "sets": {name: document(rules) for name, rules in sets.items()}}


class RulesFile(NamedTuple):
    """rules.json, parsed: the default set's name and every set."""

    default: str
    sets: dict[str, CleanRules]

    def rule_set(self, name: str | None, where: str) -> CleanRules:
        name = self.default if name is None else set_name(name)
        if name not in self.sets:
            raise DataError(f"{where}: no rule set named {name!r} (has: {', '.join(sorted(self.sets))})")
        return compiled(self.sets[name], where, at=f"sets.{name}")


def read_rules_file(path: Path) -> RulesFile:
    """rules.json as written by the clean_rules stage; a missing or broken file is one line naming it."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: rules file not found (run the clean_rules stage first)")
    if not path.is_file():  # a FIFO would block the read for good
        raise DataError(f"{path}: not a regular file; a rules file is JSON")
    try:  # capped as every configuration file: a 3 GB file (a sparse one reads as NULs) was read whole
        data = loads_json(config_text(path))
    except ValueError as exc:
        raise DataError(f"{path}: not valid JSON ({exc})") from None
    return _rules_file(data, str(path))


def _rules_file(data: Any, where: str) -> RulesFile:
    sets = data.get("sets") if isinstance(data, dict) else None
    if not isinstance(sets, dict):
        raise DataError(f"{where}: no `sets` mapping (write it with the clean_rules stage)")
    parsed = {name: parse(CleanRules, rules, at=("sets", name), file=where) for name, rules in sets.items()}
    return RulesFile(set_name(data.get("rules", DEFAULT_RULE_SET), f"{where}: rules"), parsed)


def rule_set_from_file(path: Path, name: str | None = None) -> CleanRules:
    """The rule set `name` of a rules.json (None: its default, params.yaml `clean` with its overrides)."""
    return read_rules_file(path).rule_set(name, str(path))


def as_rule_set(data: CleanRules | Clean | dict) -> CleanRules:
    """Any accepted form as a `CleanRules`: the model itself, params.yaml `clean` (the model, or a mapping
    with `rules` or without `drops`), a complete rule document (has `drops`), or a whole rules.json (its
    default set)."""
    if isinstance(data, CleanRules):
        return data
    if isinstance(data, Clean):
        return resolve(data)
    if not isinstance(data, dict):
        raise DataError("params.yaml: clean: expected a mapping of rules")
    if "sets" in data:
        return _rules_file(data, "rules file").rule_set(None, "rules file")
    if "rules" in data or "drops" not in data:
        return resolve(parse(Clean, data, at=("clean",)))
    return parse(CleanRules, data, at=("clean",))


def source_choice(value: bool | str | datetime.date | SourceClean | None) -> tuple[str | None, str]:
    """`sources.S.clean` -> (rule set name or None for the default set, mode).
    true: (None, rewrite); false: (None, off); "2023-04-04": (that, rewrite); {rules, mode}: as given."""
    if value is None or value is True:
        return None, "rewrite"
    if value is False:
        return None, "off"
    if isinstance(value, (str, datetime.date)):
        return set_name(value), "rewrite"
    if isinstance(value, SourceClean):
        return value.rules, value.mode
    raise DataError(
        f"params.yaml: sources.*.clean: expected true, false, a rule set name or {{rules, mode}}, got {value!r}"
    )


def load_rules(rules: CleanRules | Clean | dict, fast: bool = True) -> Rules:
    """Any form of a rule set (`as_rule_set`: the model, params.yaml `clean`, a complete rule document, a
    rules.json), parsed and compiled."""
    return compile_rules(as_rule_set(rules), fast=fast)
