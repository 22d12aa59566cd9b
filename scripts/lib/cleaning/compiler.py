"""A validated `CleanRules` compiled into `Rules`: each rewrite list into a regex-engine phase, the word
lists into searches, `drops` into the drop rules that run at each point.

The model checked every key's type and range; what is left here needs the registry or the regex
engine: each listed drop rule exists, has its key and runs once; a key that is set is listed; every
regex and replacement compiles (an error names its place).
"""

from __future__ import annotations

import re
from typing import NamedTuple

from scripts.lib.cleaning.drop_rules import DROP_POINTS, DROP_RULES, SWITCHED_RULES, person_counter
from scripts.lib.cleaning.rules import DropRule, Rules
from scripts.lib.errors import DataError
from scripts.lib.params import CleanRules, Rewrite
from scripts.lib.regex_engine import CompiledRewrite, Phase, compile_phase, compile_rewrite, compile_search

PHASES = ("normalise", "tidy", "collapse_repeats", "finish")  # the rule set's lists of rewrites


class RuleOrigin(NamedTuple):
    """Where a rule set was written, so that its errors name that file and key: params.yaml `clean`
    (the default), a rules file's `sets.NAME`, or a shipped set's file (its keys at the top, at="")."""

    file: str = "params.yaml"
    at: str = "clean"

    def key(self, name: str) -> str:
        """The key path of `name` in the file, e.g. clean.normalise[0]."""
        return f"{self.at}.{name}" if self.at else name

    def place(self, name: str) -> str:
        """The file and key path of `name`, as an error line starts: params.yaml: clean.normalise[0]."""
        return f"{self.file}: {self.key(name)}"


PARAMS = RuleOrigin()


def compile_rules(rules: CleanRules, fast: bool = True, origin: RuleOrigin = PARAMS) -> Rules:
    """`rules` ready for `clean_text`; a rule that cannot run is a DataError naming its file and key
    (`origin`: where the set was written).

    `fast=False` leaves out the regex guards (same results, slower): the benchmark's baseline and
    the tests' proof that the guards never change an output."""
    listed = _listed_drop_rules(rules, origin)
    phases = {key: _phase(getattr(rules, key), origin, key, fast) for key in PHASES}
    phrases = [_phrase(phrase, origin, "stop_phrases", fast) for phrase in rules.stop_phrases]
    for key in ("artists", "sites"):
        for name in getattr(rules, key):
            phrases += [_phrase("by " + name, origin, key, fast), _phrase(name, origin, key, fast)]
    phases["phrases"] = compile_phase(tuple(phrases), fast)
    remove_to_comma = None
    if rules.by_clause is not None:
        step = Rewrite(name="by_clause.remove_to_comma", pattern=rules.by_clause.remove_to_comma)
        compiled = _rewrite(step, origin.place("by_clause.remove_to_comma"), fast)
        remove_to_comma = phases["by_clause"] = compile_phase((compiled,), fast)
    on = {name for name in listed if name not in SWITCHED_RULES or getattr(rules, name).enabled}
    persons = rules.person_names  # set when listed and enabled: `on` read its `enabled`
    ban_words = [word.lower() for word in rules.ban_words or ()]
    thoughts = rules.thought_phrases or ()
    return Rules(
        document=rules,
        normalise=phases["normalise"],
        by_clause=rules.by_clause,
        remove_to_comma=remove_to_comma,
        phrases=phases["phrases"],
        tidy=phases["tidy"],
        collapse_repeats=phases["collapse_repeats"],
        finish=phases["finish"],
        ban_words=compile_search("|".join(map(re.escape, ban_words)), fast) if ban_words else None,
        thought_phrases=(
            compile_search(r"(?i)\b(" + "|".join(map(re.escape, thoughts)) + r")\b", fast) if thoughts else None
        ),
        person_names=person_counter(persons.model) if "person_names" in on and persons is not None else None,
        drop_rules={
            point: tuple(DropRule(name, DROP_RULES[name]) for name in getattr(rules.drops, point) if name in on)
            for point in DROP_POINTS
        },
        fast=fast,
        keeps_plain=all(phase.plain_steps is not None for phase in phases.values()),
    )


def _listed_drop_rules(rules: CleanRules, origin: RuleOrigin) -> set[str]:
    """The drop rules `drops` lists. Each needs its key, and a rule key that is set must be listed (an
    override that would change nothing is an error)."""
    seen: set[str] = set()
    for point in DROP_POINTS:
        for name in getattr(rules.drops, point):
            drops = origin.place(f"drops.{point}")
            if name not in DROP_RULES:
                raise DataError(f"{drops}: unknown drop rule {name!r} (registry: {', '.join(DROP_RULES)})")
            if name in seen:
                raise DataError(f"{drops}: {name!r} is listed twice")
            if getattr(rules, name, None) is None:
                raise DataError(f"{drops} lists {name!r}, but {origin.key(name)} is not set")
            seen.add(name)
    for name in DROP_RULES:
        if name not in seen and getattr(rules, name, None) is not None:
            raise DataError(f"{origin.place(name)} is set, but {origin.key('drops')} lists no {name!r} (add it there)")
    return seen


def _phase(rewrites: list[Rewrite], origin: RuleOrigin, key: str, fast: bool) -> Phase:
    compiled = tuple(_rewrite(rewrite, origin.place(f"{key}[{i}]"), fast) for i, rewrite in enumerate(rewrites))
    return compile_phase(compiled, fast)


def _rewrite(rewrite: Rewrite, where: str, fast: bool) -> CompiledRewrite:
    return compile_rewrite(
        rewrite.name,
        find=rewrite.find,
        pattern=rewrite.pattern,
        repl=rewrite.repl,
        strip=rewrite.strip,
        fast=fast,
        where=where,
    )


def _phrase(phrase: str, origin: RuleOrigin, key: str, fast: bool) -> CompiledRewrite:
    """A phrase deleted as whole words in any case, the text trimmed after (like the reference)."""
    rewrite = Rewrite(name=f"{key}: {phrase}", pattern=r"(?i)\b" + re.escape(phrase) + r"\b", strip=True)
    return _rewrite(rewrite, f"{origin.place(key)}: {phrase!r}", fast)
