"""One prompt through compiled rules: `clean_text(text, rules) -> (text, None) or (None, reason)`.

The rewrite phases run in order; after each, the drop rules the rule set lists for that point. Pure:
the same text and rules give the same answer in any process, which is what lets the engines (one
process, a local pool, Ray) split the work any way they like.
"""

from __future__ import annotations

import re

from scripts.lib.cleaning.rules import Rules
from scripts.lib.params import ByClause
from scripts.lib.regex_engine import Phase, is_plain, run_phase

# Not a rule of any set but a guarantee of ours: NUL and other control characters (terminal escapes)
# never reach a caption, in any mode. Tab and newline stay (the rules treat them as spaces).
CONTROL_CHARS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
# Reasons of our own: a missing or blank prompt (the reference crashed on them), and a prompt the
# rewrites emptied completely (the reference returned "").
EMPTY = "empty"
EMPTY_AFTER_CLEAN = "empty_after_clean"

Outcome = tuple[str | None, str | None]  # (cleaned text, None) or (None, reason)


def without_control_chars(text: str) -> str:
    return CONTROL_CHARS.sub(" ", text) if CONTROL_CHARS.search(text) else text


def clean_text(text: str | None, rules: Rules) -> Outcome:
    """Clean one prompt: (cleaned text, None), or (None, name of the first rule that dropped it)."""
    if text is None:
        return None, EMPTY
    text = without_control_chars(text).strip()
    if not text:
        return None, EMPTY
    drop_rules = rules.drop_rules

    # 1. drops on the raw prompt
    for name, drop in drop_rules["raw"]:
        if drop(text, rules):
            return None, name
    # Printable-ASCII text stays so through every phase when each rewrite's new text is (deletions
    # and cuts keep it): worked out once, told to every phase.
    plain = True if rules.keeps_plain and is_plain(text) else None

    # 2. normalise punctuation and strip technical jargon
    text = run_phase(rules.normalise, text, plain)
    for name, drop in drop_rules["normalise"]:
        if drop(text, rules):
            return None, name

    # 3-4. artist credits, stop phrases, artists and sites; 5. drops on what is left
    if rules.by_clause is not None:
        assert rules.remove_to_comma is not None  # compiled with by_clause
        text = cut_by_clause(text, rules.by_clause, rules.remove_to_comma, plain)
    if rules.phrases.rewrites:
        text = run_phase(rules.phrases, text.strip(), plain)
    text = run_phase(rules.tidy, text, plain)
    for name, drop in drop_rules["tidy"]:
        if drop(text, rules):
            return None, name

    # 6. repeats; 7. "thought" texts
    text = run_phase(rules.collapse_repeats, text, plain)
    for name, drop in drop_rules["collapse_repeats"]:
        if drop(text, rules):
            return None, name

    # 8. final touches
    text = run_phase(rules.finish, text, plain)
    if not text:
        return None, EMPTY_AFTER_CLEAN
    for name, drop in drop_rules["finish"]:
        if drop(text, rules):
            return None, name
    return text, None


def cut_by_clause(text: str, by: ByClause, remove_to_comma: Phase, plain: bool | None = None) -> str:
    """Drop an artist credit: cut at the first marker when a list of names follows it, then delete
    "by ... ," up to the nearest comma. Texts with the exempt form ("surrounded by") are left alone
    (a cut keeps a prefix, so a text without it never gains it)."""
    if by.exempt in text:
        return text
    index = text.find(by.marker)
    if index >= 0 and text[index + 2 :].count(",") >= by.cut_if_commas_after:
        text = _cut_at(text, index)
    index = text.find(by.marker)
    if index >= 0:
        after = text[index + 2 :]  # like the reference: from the marker's "y", so it is not counted
        if after.count(by.and_marker) + after.count(by.marker) >= by.cut_if_names_after:
            text = _cut_at(text, index)
    return run_phase(remove_to_comma, text, plain)


def _cut_at(text: str, index: int) -> str:
    text = text[:index].strip()
    return text[:-1] if text.endswith(",") else text
