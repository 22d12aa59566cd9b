"""clean@S: the reference team's prompt filter (docs/cleaning.md), as named, versioned rule sets.

Reads data/prompts/S.parquet, writes data/clean/S.parquet (input columns + `text`, the cleaned
prompt), data/clean/S.dropped.parquet (input columns + `reason`, the first rule that dropped the
row) and data/clean/S.report.json (counts per reason; a DVC metric).

A rule set is a complete rule document, scripts/clean_rules/<name>.yaml (`final`, `2023-04-04`,
`2023-03-30`: the team's `preprocess` at three commits, transcribed as data). params.yaml `clean.rules`
names the default set and its other keys override that set's keys; `sources.S.clean` may name another
set and a mode (rewrite | filter_only | off). `load_rules` compiles a document once into a frozen
`Rules`; `clean_text` runs the rewrite phases in order, each followed by the drop rules the document's
`drops` lists for it (`DROP_RULES`: named tests of the text, the name being both the params key and
the `reason`). The rewrites run on scripts/lib/regex_engine.py, which skips, exactly, the regexes that
cannot change a text (>= 20k prompts/s on one core).

For other stages (the release recipes):

    rules = rules_from_file(Path("data/clean/rules.json"), "2023-04-04")   # any named set, compiled
    kept, dropped = clean_table(df, rules, column="prompt", mode="filter_only")

Re-cleaning (v4-b): call `clean_table` on rows that already carry `text`. It cleans `column` (the raw
prompt), never `text`: the raw prompt is the source of truth, cleaning is not idempotent, and
re-cleaning must reproduce exactly what this stage would have written.
"""
from __future__ import annotations

import copy
import datetime
import functools
import json
import re
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Optional

import typer

from scripts.lib.errors import DataError
from scripts.lib.nesting import loads_json
from scripts.lib.io import atomic_path, check_table, read_parquet, write_json, write_parquet
from scripts.lib.params import CLEAN_RULES_DIR, CleanRules, load_params, parse, read_yaml, rule_set_names
from scripts.lib.regex_engine import (Phase, Rewrite, Search, compile_phase, compile_rewrite, compile_search,
                                      is_plain, run_phase)

# Reason for rows whose prompt is missing or only whitespace (the reference crashed on them), and
# for rows the rewrites emptied completely (the reference returned "").
# Not a rule of any set but a guarantee of ours: NUL and other control characters (terminal escapes)
# never reach a caption, in any mode. Tab and newline stay (the rules treat them as spaces).
CONTROL_CHARS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
EMPTY = "empty"
EMPTY_AFTER_CLEAN = "empty_after_clean"

DEFAULT_RULE_SET = "final"
MODES = ("rewrite", "filter_only", "off")


# --------------------------------------------------------------------------- rule sets

def load_rule_set(name: str) -> dict:
    """The complete rule document scripts/clean_rules/<name>.yaml, checked against the CleanRules model."""
    name = _set_name(name)
    path = CLEAN_RULES_DIR / f"{name}.yaml"
    if not path.is_file():
        raise DataError(f"clean: no rule set named {name!r} (shipped: {', '.join(rule_set_names())})")
    return _read_rule_set(path)


@functools.lru_cache(maxsize=16)
def _read_rule_set_cached(path: Path, mtime_ns: int) -> dict:
    where = str(path.relative_to(CLEAN_RULES_DIR.parents[1]) if path.is_relative_to(CLEAN_RULES_DIR.parents[1]) else path)
    try:
        data = read_yaml(path.read_text(encoding="utf-8"))
    except Exception as exc:  # YAML syntax, alias, encoding: one line naming the file
        raise DataError(f"{where}: not a valid rule set ({type(exc).__name__}: {str(exc).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise DataError(f"{where}: expected a mapping of rules")
    parse(CleanRules, data, file=where)
    return data


def _read_rule_set(path: Path) -> dict:
    return copy.deepcopy(_read_rule_set_cached(path, path.stat().st_mtime_ns))


def _set_name(name: Any) -> str:
    if isinstance(name, datetime.date):  # YAML reads an unquoted 2023-04-04 as a date
        name = name.isoformat()
    if not isinstance(name, str) or not name:
        raise DataError(f"clean: a rule set name must be text, got {name!r}")
    return name


CHOICE_KEYS = ("rules", "workers")  # params.yaml `clean` keys that are not keys of a rule set


def resolve_rules_params(params_clean: dict) -> dict:
    """params.yaml `clean` -> the complete rule document it means: the set named by `rules` (default
    `final`) with every non-null other key replacing that set's value whole."""
    name = _set_name(params_clean.get("rules", DEFAULT_RULE_SET))
    document = load_rule_set(name)
    document.update({key: copy.deepcopy(value) for key, value in params_clean.items()
                     if key not in CHOICE_KEYS and value is not None})
    return document


def rules_document(params: dict) -> dict:
    """Any of the accepted forms -> a complete rule document: a rules.json (`sets`: its default set),
    params.yaml `clean` (`rules` and overrides), or a complete document (has `drops`, no `rules`)."""
    if not isinstance(params, dict):
        raise DataError("params.yaml: clean: expected a mapping of rules")
    if "sets" in params:
        return _set_from_file_document(params, None, "rules file")
    if "rules" in params or "drops" not in params:
        return resolve_rules_params(params)
    return params


def _set_from_file_document(document: dict, name: str | None, where: str) -> dict:
    sets = document.get("sets")
    if not isinstance(sets, dict):
        raise DataError(f"{where}: no `sets` mapping (write it with the clean_rules stage)")
    name = _set_name(name if name is not None else document.get("rules", DEFAULT_RULE_SET))
    if name not in sets:
        raise DataError(f"{where}: no rule set named {name!r} (has: {', '.join(sorted(sets))})")
    return sets[name]


def rules_from_file(rules_file: Path, name: str | None = None, fast: bool = True) -> Rules:
    """The rule set `name` (None: the default, params.yaml `clean.rules` with its overrides) of a
    rules.json written by the clean_rules stage, compiled."""
    return load_rules(_set_from_file_document(read_rules_params(rules_file), name, str(rules_file)), fast=fast)


def source_choice(value: Any) -> tuple[str | None, str]:
    """`sources.S.clean` -> (rule set name or None for the default set, mode).
    true: (None, rewrite); false: (None, off); "2023-04-04": (that, rewrite); {rules, mode}: as given."""
    if value is None or value is True:
        return None, "rewrite"
    if value is False:
        return None, "off"
    if isinstance(value, (str, datetime.date)):
        return _set_name(value), "rewrite"
    if isinstance(value, dict):
        mode = value.get("mode", "rewrite")
        if mode not in MODES:
            raise DataError(f"params.yaml: sources.*.clean.mode: expected one of {', '.join(MODES)}, got {mode!r}")
        name = value.get("rules")
        return (None if name is None else _set_name(name)), mode
    raise DataError(f"params.yaml: sources.*.clean: expected true, false, a rule set name or {{rules, mode}}, got {value!r}")


# --------------------------------------------------------------------------- compiled rules

@dataclass(frozen=True)
class ByClause:
    marker: str
    exempt: str
    and_marker: str
    cut_if_commas_after: int
    cut_if_names_after: int
    remove_to_comma: Phase  # one rewrite: delete "by ... ," (a phase, so it gets the guards)


@dataclass(frozen=True)
class Rules:
    language: tuple[str, ...] | None  # languages kept, None = rule off
    language_seed: int
    language_undetectable: str  # "keep" | "drop"
    banned_nospace: tuple[str, ...]
    max_dashes: int | None
    max_pipes: int | None
    max_by: int | None
    person_names: Any  # callable(text) -> number of PERSON entities, None = rule off
    person_only_if: tuple[str, ...]  # run the model only when one occurs (empty: always)
    max_persons: int
    ban_words: Search | None  # searched in the lowercase text
    max_repeat_ratio: float | None
    min_mean_word_len: float | None
    normalise: Phase
    max_commas: int | None
    by_clause: ByClause | None
    phrases: Phase  # deletes stop phrases, then "by artist"/artist, then "by site"/site
    tidy: Phase
    min_chars: int | None
    max_chars: int | None
    min_unique_words: int | None
    collapse_repeats: Phase
    thought_phrases: Search | None
    finish: Phase
    drop_rules: dict[str, tuple]  # per drop point: ((name, predicate), ...) that run, in order
    workers: int = 1  # processes for clean_table (same output for any number)
    fast: bool = True  # guards on (see load_rules)
    keeps_plain: bool = False  # no rewrite can make printable-ASCII text otherwise (see clean_text)
    params: dict = field(default_factory=dict, compare=False, repr=False)  # the complete document compiled


def load_rules(params_clean: dict, fast: bool = True) -> Rules:
    """Compile a rule document into Rules; a bad entry is a DataError naming its key. Accepts params.yaml
    `clean` (resolved against its named set), a complete rule document, or a rules.json (its default set).

    `fast=False` leaves out the regex guards (same results, slower): the benchmark's baseline and
    the tests' proof that the guards never change an output."""
    p = rules_document(params_clean)
    missing = [key for key in REQUIRED_KEYS if key not in p]
    if missing:
        raise DataError(f"params.yaml: clean: missing rule(s) {', '.join(missing)}")
    drops = _drops(p)
    language = p.get("language") or {}
    persons = p.get("person_names") or {}
    phrases = [_phrase(x, "stop_phrases", fast) for x in _strings(p, "stop_phrases")]
    for key in ("artists", "sites"):
        for name in _strings(p, key):
            phrases += [_phrase("by " + name, key, fast), _phrase(name, key, fast)]
    thoughts = _strings(p, "thought_phrases")
    ban_words = [w.lower() for w in _strings(p, "ban_words")]
    phases = {key: _rewrites(p, key, fast) for key in ("normalise", "tidy", "collapse_repeats", "finish")}
    phases["phrases"] = compile_phase(tuple(phrases), fast)
    by_clause = _by_clause(p["by_clause"], fast) if p["by_clause"] is not None else None
    if by_clause is not None:
        phases["by_clause"] = by_clause.remove_to_comma
    listed = {name for names in drops.values() for name in names}
    on = {name for name in listed if name not in OPTIONAL_KEYS or (p.get(name) or {}).get("enabled")}
    undetectable = language.get("undetectable", "keep")
    if undetectable not in ("keep", "drop"):
        raise DataError(f"params.yaml: clean.language.undetectable: expected keep or drop, got {undetectable!r}")
    return Rules(
        language=tuple(language.get("keep", ["en"])) if "language" in on else None,
        language_seed=int(language.get("seed", 0)),
        language_undetectable=undetectable,
        banned_nospace=tuple(_strings(p, "banned_nospace")),
        max_dashes=_number(p, "max_dashes", int),
        max_pipes=_number(p, "max_pipes", int),
        max_by=_number(p, "max_by", int),
        person_names=_person_counter(persons.get("model", "en_core_web_sm")) if "person_names" in on else None,
        person_only_if=tuple(str(x) for x in persons.get("only_if") or ()),
        max_persons=int(persons.get("max_persons", 1)),
        ban_words=compile_search("|".join(map(re.escape, ban_words)), fast) if ban_words else None,
        max_repeat_ratio=_number(p, "max_repeat_ratio", float),
        min_mean_word_len=_number(p, "min_mean_word_len", float),
        normalise=phases["normalise"],
        max_commas=_number(p, "max_commas", int),
        by_clause=by_clause,
        phrases=phases["phrases"],
        tidy=phases["tidy"],
        min_chars=_number(p, "min_chars", int),
        max_chars=_number(p, "max_chars", int),
        min_unique_words=_number(p, "min_unique_words", int),
        collapse_repeats=phases["collapse_repeats"],
        thought_phrases=(
            compile_search(r"(?i)\b(" + "|".join(map(re.escape, thoughts)) + r")\b", fast) if thoughts else None
        ),
        finish=phases["finish"],
        drop_rules={point: tuple((name, DROP_RULES[name]) for name in drops.get(point, ()) if name in on)
                    for point in DROP_POINTS},
        workers=_workers(params_clean.get("workers", p.get("workers", 1))),
        fast=fast,
        keeps_plain=all(phase.plain_steps is not None for phase in phases.values()),
        params={key: value for key, value in copy.deepcopy(p).items() if key not in CHOICE_KEYS},
    )


def _drops(p: dict) -> dict[str, list[str]]:
    """`drops`: per drop point, the registry rules that run there. Each listed rule needs its key, and a
    rule key that is set must be listed (an override that would change nothing is an error)."""
    drops = p["drops"]
    if not isinstance(drops, dict):
        raise DataError("params.yaml: clean.drops: expected a mapping of drop point -> list of rules")
    seen: set[str] = set()
    for point, names in drops.items():
        if point not in DROP_POINTS:
            raise DataError(f"params.yaml: clean.drops: unknown drop point {point!r} (valid: {', '.join(DROP_POINTS)})")
        if not isinstance(names, list):
            raise DataError(f"params.yaml: clean.drops.{point}: expected a list of rule names")
        for name in names:
            if name not in DROP_RULES:
                raise DataError(f"params.yaml: clean.drops.{point}: unknown drop rule {name!r} "
                                f"(registry: {', '.join(DROP_RULES)})")
            if name in seen:
                raise DataError(f"params.yaml: clean.drops.{point}: {name!r} is listed twice")
            if p.get(name) is None:
                raise DataError(f"params.yaml: clean.drops.{point} lists {name!r}, but clean.{name} is not set")
            seen.add(name)
    for name in DROP_RULES:
        if name not in seen and p.get(name) is not None:
            raise DataError(f"params.yaml: clean.{name} is set, but clean.drops lists no {name!r} (add it there)")
    return drops


def _strings(p: dict, key: str) -> list[str]:
    value = p.get(key) or []
    if not isinstance(value, list) or not all(isinstance(v, (str, int, float)) for v in value):
        raise DataError(f"params.yaml: clean.{key}: expected a list of strings")
    return [str(v) for v in value]


def _workers(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise DataError(f"params.yaml: clean.workers: expected a whole number >= 1, got {value!r}")
    return value


def _number(p: dict, key: str, kind: type) -> Any:
    value = p.get(key)
    if value is None:
        return None  # rule not in this set (`_drops` made sure no listed rule lacks it)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise DataError(f"params.yaml: clean.{key}: expected a number, got {value!r}")
    return kind(value)


def _rewrites(p: dict, key: str, fast: bool) -> Phase:
    steps = p[key] or []
    if not isinstance(steps, list):
        raise DataError(f"params.yaml: clean.{key}: expected a list of rewrites")
    compiled = []
    for i, step in enumerate(steps):
        where = f"clean.{key}[{i}]"
        if not isinstance(step, dict) or "name" not in step or ("find" in step) == ("pattern" in step):
            raise DataError(f"params.yaml: {where}: expected {{name, find|pattern, repl?, strip?}}")
        compiled.append(_rewrite(step, where, fast))
    return compile_phase(tuple(compiled), fast)


def _rewrite(step: dict, where: str, fast: bool) -> Rewrite:
    """A rewrite from its params entry {name, find|pattern, repl?, strip?}; `where` names it in errors."""
    name, repl, strip = str(step["name"]), str(step.get("repl", "")), bool(step.get("strip", False))
    if "find" in step:
        return compile_rewrite(name, find=str(step["find"]), repl=repl, strip=strip, fast=fast)
    return compile_rewrite(name, pattern=str(step["pattern"]), repl=repl, strip=strip, fast=fast,
                           where=f"params.yaml: {where}")


def _phrase(phrase: str, key: str, fast: bool) -> Rewrite:
    """A phrase deleted as whole words in any case, the text trimmed after (like the reference)."""
    step = {"name": f"{key}: {phrase}", "pattern": r"(?i)\b" + re.escape(phrase) + r"\b", "strip": True}
    return _rewrite(step, f"clean.{key}: {phrase!r}", fast)


def _by_clause(p: Any, fast: bool) -> ByClause:
    if not isinstance(p, dict):
        raise DataError("params.yaml: clean.by_clause: expected a mapping (or null: no such step)")
    try:
        return ByClause(
            marker=str(p["marker"]),
            exempt=str(p["exempt"]),
            and_marker=str(p["and_marker"]),
            cut_if_commas_after=int(p["cut_if_commas_after"]),
            cut_if_names_after=int(p["cut_if_names_after"]),
            remove_to_comma=compile_phase((_rewrite({"name": "by_clause.remove_to_comma", "pattern": str(p["remove_to_comma"])},
                                             "clean.by_clause.remove_to_comma", fast),), fast),
        )
    except KeyError as exc:
        raise DataError(f"params.yaml: clean.by_clause: missing {exc.args[0]}") from None


def _person_counter(model: str) -> Callable[[str], int]:
    """The reference's NER rule; spaCy and its model must already be installed (no downloads)."""
    try:
        import spacy

        nlp = spacy.load(model)
    except (ImportError, OSError) as exc:
        raise DataError(
            f"params.yaml: clean.person_names.enabled needs spaCy with the {model} model installed "
            f"({type(exc).__name__}); set it to false or install them"
        ) from None
    return lambda text: sum(1 for ent in nlp(text).ents if ent.label_ == "PERSON")


# --------------------------------------------------------------------------- drop rules

def wrong_language(text: str, rules: Rules) -> bool:
    if rules.language is None:
        return False
    language = _language(text, rules.language_seed)
    if language is None:  # langdetect found nothing to read
        return rules.language_undetectable == "drop"
    return language not in rules.language


def has_banned_nospace(text: str, rules: Rules) -> bool:
    """One of `banned_nospace` occurs once the spaces are deleted ("h t t p" is "http")."""
    nospace = text.replace(" ", "")
    for word in rules.banned_nospace:  # plain loops: no generator per prompt
        if word in nospace:
            return True
    return False


def too_many_dashes(text: str, rules: Rules) -> bool:
    return text.count("-") > rules.max_dashes


def too_many_pipes(text: str, rules: Rules) -> bool:
    return text.count("|") > rules.max_pipes


def too_many_by(text: str, rules: Rules) -> bool:
    return text.count(" by ") > rules.max_by


def too_many_persons(text: str, rules: Rules) -> bool:
    if rules.person_names is None:
        return False
    if rules.person_only_if and not any(marker in text for marker in rules.person_only_if):
        return False  # final: the model runs only on prompts with " by " or " style "
    return rules.person_names(text) > rules.max_persons


def has_ban_word(text: str, rules: Rules) -> bool:
    return rules.ban_words is not None and rules.ban_words.found(text.lower())


def too_repetitive(text: str, rules: Rules) -> bool:
    words = _words(text)
    return bool(words) and (len(words) - len(set(words))) / len(words) > rules.max_repeat_ratio


def words_too_short(text: str, rules: Rules) -> bool:
    words = _words(text)  # no words (a text the rewrites emptied): `empty_after_clean` at the end
    return bool(words) and len("".join(words)) / len(words) < rules.min_mean_word_len


def too_many_commas(text: str, rules: Rules) -> bool:
    return text.count(",") > rules.max_commas


def too_short(text: str, rules: Rules) -> bool:
    return len(text) < rules.min_chars


def too_long(text: str, rules: Rules) -> bool:
    return len(text) > rules.max_chars


def too_few_unique_words(text: str, rules: Rules) -> bool:
    return len(set(text.split())) < rules.min_unique_words


def has_thought_phrase(text: str, rules: Rules) -> bool:
    return rules.thought_phrases is not None and rules.thought_phrases.found(text)


# The whitespace words of a (stripped) text; two rules in a row read them. Read only.
_words = functools.lru_cache(maxsize=1)(str.split)

DropRule = Callable[[str, Rules], bool]

# The drop rules: name -> predicate. The name is the rule's key in a rule set (its limit or word list)
# and the `reason` recorded for the rows it drops (the stage report counts rows per reason); the
# predicate gets the text as it stands and the compiled rules, and says whether to drop. A rule set's
# `drops` lists which rules run at which point (DROP_POINTS) and in what order; the first that fires
# is the reason. Adding one: docs/cleaning.md.
DROP_RULES: dict[str, DropRule] = {
    "language": wrong_language,
    "banned_nospace": has_banned_nospace,
    "max_dashes": too_many_dashes,
    "max_pipes": too_many_pipes,
    "max_by": too_many_by,
    "person_names": too_many_persons,
    "ban_words": has_ban_word,
    "max_repeat_ratio": too_repetitive,
    "min_mean_word_len": words_too_short,
    "max_commas": too_many_commas,
    "min_chars": too_short,
    "max_chars": too_long,
    "min_unique_words": too_few_unique_words,
    "thought_phrases": has_thought_phrase,
}

# Where drops can run: "raw" = the stripped prompt before any rewrite, then after each rewrite step.
DROP_POINTS = ("raw", "normalise", "tidy", "collapse_repeats", "finish")
OPTIONAL_KEYS = ("language", "person_names")  # rules that run only when `enabled` (besides being listed)
# The keys every rule document must have (by_clause may be null); drop rules' keys only when listed.
REQUIRED_KEYS = ["drops", "normalise", "by_clause", "stop_phrases", "artists", "sites", "tidy",
                 "collapse_repeats", "finish"]


# --------------------------------------------------------------------------- the filter

def without_control_chars(text: str) -> str:
    return CONTROL_CHARS.sub(" ", text) if CONTROL_CHARS.search(text) else text


def clean_text(text: str | None, rules: Rules) -> tuple[str | None, str | None]:
    """Clean one prompt: (cleaned text, None), or (None, name of the first rule that dropped it).
    The rewrite phases run in order; after each, the drop rules the rule set lists for it."""
    if text is None:
        return None, EMPTY
    text = without_control_chars(text).strip()
    if not text:
        return None, EMPTY

    # 1. drops on the raw prompt
    for name, drop in rules.drop_rules["raw"]:
        if drop(text, rules):
            return None, name
    # Printable-ASCII text stays so through every phase when each rewrite's new text is (deletions
    # and cuts keep it): worked out once, told to every phase.
    plain = True if rules.keeps_plain and is_plain(text) else None

    # 2. normalise punctuation and strip technical jargon
    text = run_phase(rules.normalise, text, plain)
    for name, drop in rules.drop_rules["normalise"]:
        if drop(text, rules):
            return None, name

    # 3-4. artist credits, stop phrases, artists and sites; 5. drops on what is left
    if rules.by_clause is not None:
        text = _cut_by_clause(text, rules.by_clause, plain)
    if rules.phrases.rewrites:
        text = run_phase(rules.phrases, text.strip(), plain)
    text = run_phase(rules.tidy, text, plain)
    for name, drop in rules.drop_rules["tidy"]:
        if drop(text, rules):
            return None, name

    # 6. repeats; 7. "thought" texts
    text = run_phase(rules.collapse_repeats, text, plain)
    for name, drop in rules.drop_rules["collapse_repeats"]:
        if drop(text, rules):
            return None, name

    # 8. final touches
    text = run_phase(rules.finish, text, plain)
    if not text:
        return None, EMPTY_AFTER_CLEAN
    for name, drop in rules.drop_rules["finish"]:
        if drop(text, rules):
            return None, name
    return text, None


def _cut_by_clause(text: str, by: ByClause, plain: bool | None = None) -> str:
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
    return run_phase(by.remove_to_comma, text, plain)


def _cut_at(text: str, index: int) -> str:
    text = text[:index].strip()
    return text[:-1] if text.endswith(",") else text


@functools.lru_cache(maxsize=1 << 16)
def _language(text: str, seed: int) -> str | None:
    """langdetect's guess, seeded (DetectorFactory.seed) so it is the same on every run; None when it
    finds nothing to read (the reference caught that exception). A seeded guess is a function of the
    text, so it is kept: composing a release re-cleans its base chain's rows, and langdetect takes ~5 ms
    a prompt (an interrupt is an exception, never kept)."""
    try:
        from langdetect import DetectorFactory, detect
        from langdetect.lang_detect_exception import LangDetectException
    except ImportError:
        raise DataError("params.yaml: clean.language.enabled needs the langdetect package") from None
    DetectorFactory.seed = seed
    try:
        return detect(text)
    except LangDetectException as exc:
        if exc.__context__ is not None and not isinstance(exc.__context__, Exception):
            # langdetect loads its profiles on first use under a bare `except:`, which turns a Ctrl-C into
            # its own error and keeps the half-loaded profiles: drop them and let the interrupt go on
            from langdetect import detector_factory

            detector_factory._factory = None
            raise exc.__context__ from None
        return None


# --------------------------------------------------------------------------- tables

def clean_table(df, rules: Rules, column: str = "prompt", desc: str = "clean", mode: str = "rewrite"):
    """Clean `column` of every row: (kept rows + `text`, dropped rows + `reason`), order preserved.
    mode: rewrite (`text` = the cleaned prompt), filter_only (the rules decide which rows go, `text` =
    the raw `column`: the team's v4-a bug) or off (every row kept, `text` = the raw `column`).
    `desc` names the loop in its progress bar and summary line (e.g. "clean@diffusiondb")."""
    import pandas as pd

    if mode not in MODES:
        raise DataError(f"clean: mode must be one of {', '.join(MODES)}, got {mode!r}")
    if column not in df.columns:
        raise DataError(f"clean: input table has no '{column}' column")
    if mode == "off":
        return pass_through(df, column)
    values = [None if _missing(v) else str(v) for v in df[column].tolist()]
    distinct = list(dict.fromkeys(v for v in values if v is not None))  # real sources repeat prompts a lot
    cleaned = dict(zip(distinct, _clean_many(distinct, rules, desc)))
    results = [cleaned[v] if v is not None else (None, EMPTY) for v in values]
    keep = pd.Series([text is not None for text, _ in results], index=df.index, dtype=bool)
    kept = df[keep].copy()
    if mode == "filter_only":
        kept["text"] = kept[column].astype("string").str.replace(CONTROL_CHARS, " ", regex=True)
    else:
        kept["text"] = pd.Series([t for t, _ in results if t is not None], index=kept.index, dtype="string")
    dropped = df[~keep].copy()
    dropped["reason"] = pd.Series([r for t, r in results if t is None], index=dropped.index, dtype="string")
    return kept.reset_index(drop=True), dropped.reset_index(drop=True)


PARALLEL_MIN_ROWS = 20_000  # below this, starting worker processes costs more than it saves


def _clean_many(texts: list[str], rules: Rules, desc: str = "clean") -> list[tuple[str | None, str | None]]:
    """clean_text over many texts, in `rules.workers` processes when there are enough of them.
    Workers rebuild the rules from their params (compiled regexes and lambdas do not pickle)."""
    from scripts.lib.progress import track

    if rules.workers <= 1 or len(texts) < PARALLEL_MIN_ROWS:
        return [clean_text(text, rules) for text in track(texts, desc=desc, unit="distinct prompts")]
    from contextlib import closing

    from scripts.lib.workers import ordered_map

    # fresh interpreters, not forks (the parent may hold pyarrow threads); they rebuild the rules from params
    results = ordered_map(_clean_in_worker, texts, rules.workers, chunksize=2000,
                          initializer=_start_worker, initargs=(rules.params, rules.fast))
    with closing(results):  # an interrupt stops the workers now, not when the traceback is freed
        return list(track(results, total=len(texts), desc=desc, unit="distinct prompts"))


_WORKER_RULES: Rules | None = None


def _start_worker(params: dict, fast: bool) -> None:
    global _WORKER_RULES
    _WORKER_RULES = load_rules(params, fast=fast)


def _clean_in_worker(text: str) -> tuple[str | None, str | None]:
    return clean_text(text, _WORKER_RULES)


def pass_through(df, column: str = "prompt"):
    """Mode `off` (`sources.S.clean: false`): every row kept unchanged, `text` = the raw prompt."""
    kept = df.copy()
    kept["text"] = kept[column].astype("string").str.replace(CONTROL_CHARS, " ", regex=True)
    dropped = df.iloc[0:0].copy()
    dropped["reason"] = kept["text"].iloc[0:0]
    return kept.reset_index(drop=True), dropped.reset_index(drop=True)


def report(source: str, rows_in: int, dropped, applied: bool, rules: str | None = None,
           mode: str | None = None) -> dict:
    reasons = Counter(dropped["reason"].tolist())
    out = {
        "source": source,
        "cleaning_applied": applied,
        "rows_in": rows_in,
        "kept": rows_in - len(dropped),
        "dropped": len(dropped),
        "dropped_by_reason": dict(sorted(reasons.items())),
    }
    if rules is not None:
        out["rules"] = rules
    if mode is not None:
        out["mode"] = mode
    return out


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and value != value)


def sibling_paths(output: Path) -> tuple[Path, Path]:
    """data/clean/S.parquet -> (data/clean/S.dropped.parquet, data/clean/S.report.json)."""
    output = Path(output)
    stem = output.name[: -len(".parquet")] if output.name.endswith(".parquet") else output.stem
    return output.with_name(f"{stem}.dropped.parquet"), output.with_name(f"{stem}.report.json")


# --------------------------------------------------------------------------- commands

SPEED_KEYS = ("workers",)  # `clean` keys that change speed only: not in rules.json, not DVC params of clean_rules


def read_rules_params(rules_file: Path | None) -> dict:
    """The `clean` params: from the compiled rules file when given (what DVC tracks: {"rules": default
    set name, "sets": {name: complete rule document}}), else params.yaml. `load_rules` takes either."""
    if rules_file is None:
        return load_params("clean")
    rules_file = Path(rules_file)
    if not rules_file.exists():
        raise DataError(f"{rules_file}: rules file not found (run the clean_rules stage first)")
    try:
        return loads_json(rules_file.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise DataError(f"{rules_file}: not valid JSON ({exc})") from None


def all_rule_sets(params_clean: dict) -> dict:
    """What clean_rules writes: every shipped rule set once, the default one (`clean.rules`) with the
    params.yaml overrides applied; each checked by compiling it."""
    default = _set_name(params_clean.get("rules", DEFAULT_RULE_SET))
    sets = {name: load_rule_set(name) for name in rule_set_names()}
    sets[default] = resolve_rules_params(params_clean)
    for name, document in sets.items():
        try:
            load_rules(document)
        except DataError as exc:
            raise DataError(f"{exc} (rule set {name!r})") from None
    return {"rules": default, "sets": sets}


def cli_rules(output: Path) -> None:
    """clean_rules: validate every rule set (the default with params.yaml `clean` overrides) and write
    them to OUTPUT as the one tracked copy.

    Every clean@S and release@V depends on this file instead of on the rule files and `clean` params,
    so dvc.lock records them once, not once per stage. `workers` changes speed, never a result, so it
    is not in the file (clean@S reads it from params.yaml)."""
    document = all_rule_sets(load_params("clean"))
    write_json(document, output)
    print(f"clean_rules: {len(document['sets'])} rule sets ({', '.join(document['sets'])}; default "
          f"{document['rules']}) -> {output}")


def cli(
    source: str,
    input: Path,
    output: Path,
    rules: Optional[Path] = typer.Option(None, "--rules", help="compiled rules (data/clean/rules.json); default: params.yaml clean"),
) -> None:
    """clean@S: drop and rewrite prompts with the source's rule set and mode (sources.S.clean) -> output,
    its .dropped.parquet and .report.json."""
    sources = load_params("sources")
    if source not in (sources or {}):
        raise DataError(f"params.yaml: sources: no source named '{source}'")
    name, mode = source_choice((sources[source] or {}).get("clean", True))
    df = read_parquet(input)
    if "prompt" not in df.columns:
        raise DataError(f"{input}: no 'prompt' column (expected the normalised prompt table)")
    check_table(df, input, strings=("prompt",))
    params_clean = load_params("clean")
    used = name or _set_name(params_clean.get("rules", DEFAULT_RULE_SET))
    if mode == "off":
        kept, dropped = pass_through(df)
    else:
        if rules is not None:
            compiled = rules_from_file(rules, name)
        else:
            compiled = load_rules(params_clean if name is None else load_rule_set(name))
        # the rules file holds no `workers` (SPEED_KEYS): params.yaml's applies
        compiled = replace(compiled, workers=_workers(params_clean.get("workers", 1)))
        kept, dropped = clean_table(df, compiled, desc=f"clean@{source}", mode=mode)
    dropped_path, report_path = sibling_paths(output)
    write_parquet(dropped, dropped_path)
    write_json(report(source, len(df), dropped, mode != "off", used if mode != "off" else None, mode), report_path)
    write_parquet(kept, output)
    print(f"clean {source} ({used}, {mode}): {len(df)} rows in, {len(kept)} kept, {len(dropped)} dropped -> {output}")


def cli_text(
    input: Path,
    output: Path,
    rule_set: Optional[str] = typer.Option(None, "--rules", help="a named rule set (default: params.yaml clean)"),
) -> None:
    """Clean a text file, one prompt per line -> JSONL {"text": str|null, "reason": str|null}."""
    input = Path(input)
    if not input.exists():
        raise DataError(f"{input}: input not found")
    rules = load_rules(load_params("clean") if rule_set is None else load_rule_set(rule_set))
    line_no = 0
    with input.open("rb") as src, atomic_path(output) as tmp:
        with tmp.open("w", encoding="utf-8") as dst:
            while batch := src.readlines(1 << 20):  # ~1 MB at a time: one decode and one write per batch
                lines = _decode_lines(batch, input, line_no)
                line_no += len(batch)
                results = [clean_text(line.rstrip("\r\n"), rules) for line in lines]
                dst.write("".join([_JSONL_LINE % (_json_value(text), _json_value(reason)) for text, reason in results]))


def _decode_lines(batch: list[bytes], input: Path, line_no: int) -> list[str]:
    """The batch's lines as text (split at "\\n" only, like the file's lines); invalid UTF-8 is an
    error naming its line."""
    try:
        lines = b"".join(batch).decode("utf-8").split("\n")
    except UnicodeDecodeError:
        for offset, raw in enumerate(batch, start=line_no + 1):
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError:
                raise DataError(f"{input}: line {offset}: not valid UTF-8") from None
        raise
    if lines[-1] == "":
        lines.pop()  # after the batch's last "\n"
    return lines


# What json.dumps({"text": ..., "reason": ...}, ensure_ascii=False) writes, a few times faster
# (no dict, no encoder set up per line): this command's output format.
_JSONL_LINE = '{"text": %s, "reason": %s}\n'
_json_string = json.JSONEncoder(ensure_ascii=False).encode


def _json_value(value: str | None) -> str:
    return "null" if value is None else _json_string(value)
