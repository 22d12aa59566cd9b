"""A rule set compiled for `clean_text`: the phases' regexes, the searches, the drop rules in order."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

from scripts.lib.params import ByClause, CleanRules
from scripts.lib.regex_engine import Phase, Search


class DropRule(NamedTuple):
    """A named test of the text: `test(text, rules)` says whether to drop it; `name` is the rule set key
    that configures it and the `reason` recorded for the rows it drops."""

    name: str
    test: Callable[[str, Rules], bool]


@dataclass(frozen=True)
class Rules:
    """`compile_rules(CleanRules)`: the document it was compiled from, and what `clean_text` runs."""

    document: CleanRules  # the limits and word lists the drop rules read
    normalise: Phase
    by_clause: ByClause | None  # the artist-credit cut, None when the set has no such step
    remove_to_comma: Phase | None  # by_clause.remove_to_comma as a phase (so it gets the guards)
    phrases: Phase  # deletes stop phrases, then "by artist"/artist, then "by site"/site
    tidy: Phase
    collapse_repeats: Phase
    finish: Phase
    ban_words: Search | None  # searched in the lowercase text
    thought_phrases: Search | None
    person_names: Callable[[str], int] | None  # text -> number of PERSON entities, None = rule off
    drop_rules: dict[str, tuple[DropRule, ...]]  # per drop point, the rules that run there, in order
    fast: bool = True  # the regex engine's guards on (see compile_rules)
    keeps_plain: bool = False  # no rewrite can make printable-ASCII text otherwise (see clean_text)

    def regex_rule(self, patterns: tuple[str, ...]) -> str:
        """The rewrite one of `patterns` belongs to (its regex, or the faster one that screens for
        it), as its place and name; else the first pattern."""
        phases = (self.normalise, self.remove_to_comma, self.phrases, self.tidy, self.collapse_repeats, self.finish)
        for phase in phases:
            for rewrite in phase.rewrites if phase is not None else ():
                regexes = (rewrite.regex, rewrite.prefilter)
                if rewrite.regex is not None and any(r is not None and r.pattern in patterns for r in regexes):
                    return f"{rewrite.where} ({rewrite.name}): regex {rewrite.regex.pattern!r}"
        return f"regex {patterns[0]!r}" if patterns else "a regex"
