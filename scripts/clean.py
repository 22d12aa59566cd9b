"""clean@S: the reference team's prompt filter (DESIGN.md §5), with every rule in params.yaml `clean`.

Reads data/prompts/S.parquet, writes data/clean/S.parquet (input columns + `text`, the cleaned
prompt), data/clean/S.dropped.parquet (input columns + `reason`, the first rule that dropped the
row) and data/clean/S.report.json (counts per reason; a DVC metric).

The rules run in fixed phases (see `clean_text`); what each phase does (limits, word lists, regexes)
comes only from params. `load_rules` compiles them once into a frozen `Rules`. Speed (issue 4:
>= 20k prompts/s on one core): on printable-ASCII text, which is most prompts, an RE2 set per phase
(`Scanner`, google-re2) finds in one pass the few rewrites that can change the text, and only those
run, with Python's `re`; elsewhere cheap guards read off each regex skip the ones that cannot
match. Neither changes an output (tests compare with `load_rules(..., fast=False)`).

Re-cleaning (the release stage, v4-b): call `clean_table(df, rules)` on rows that already carry
`text`. It cleans `prompt` again, never `text`: the raw prompt is the source of truth, cleaning is
not idempotent, and re-cleaning must reproduce exactly what this stage would have written. Rows the
filter drops go to the dropped table; kept rows get `text` rewritten.
"""
from __future__ import annotations

import copy
import functools
import json
import operator
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import typer

from scripts.lib.errors import DataError
from scripts.lib.params import load_params
from scripts.lib.io import atomic_path, check_table, read_parquet, write_json, write_parquet

# Reason for rows whose prompt is missing or only whitespace (the reference crashed on them), and
# for rows the rewrites emptied completely (the reference returned "").
EMPTY = "empty"
EMPTY_AFTER_CLEAN = "empty_after_clean"

_DIGIT = re.compile(r"\d")

REQUIRED_KEYS = [
    "banned_nospace", "max_dashes", "max_pipes", "ban_words", "max_repeat_ratio", "min_mean_word_len",
    "normalise", "max_commas", "by_clause", "stop_phrases", "artists", "sites", "tidy",
    "min_chars", "max_chars", "min_unique_words", "collapse_repeats", "thought_phrases", "finish",
]


# --------------------------------------------------------------------------- compiled rules

@dataclass(frozen=True)
class Rewrite:
    """One named rewrite: a plain-text replacement (`find`) or a regex substitution (`pattern`).

    The guards are facts read off the regex when it is compiled: every match contains a digit
    (`needs_digit`) and/or one of `literals` (lowercase when `ignore_case`). When the text lacks
    them the regex cannot match, so it is skipped; that is most regexes for most prompts.
    `unchanged` (`unchanged_plain` for printable-ASCII text) is a cheap test proving the regex
    would return its input unchanged, when one is known (see _UNCHANGED_WHEN)."""

    name: str
    sub: Callable[[str], str]
    strip: bool = False
    needs_digit: bool = False
    literals: tuple[str, ...] = ()
    ignore_case: bool = False
    plain_literals: tuple[str, ...] = ()  # a stronger `literals` for printable-ASCII text
    adds_digits: bool = True  # whether its replacement text itself holds a digit
    find: str | None = None  # the plain text a `find` rewrite replaces (None: a regex)
    regex: re.Pattern | None = None
    repl: str = ""
    unchanged: Callable[[str], bool] | None = None
    unchanged_plain: Callable[[str], bool] | None = None
    keeps_plain: bool = False  # printable-ASCII text stays printable ASCII (its new text is)
    prefilter: re.Pattern | None = None  # the regex minus a leading \\b: see `_prefilter`


# How a step's guard reads the text (bit flags): which haystack, and how it looks for the
# literals (one substring; a few substrings in turn; a regex search).
_LOWER, _REGEX, _ANY = 1, 2, 4


@dataclass(frozen=True)
class Phase:
    """An ordered list of rewrites, packed as plain tuples for a tight loop (see `_step`).
    `plain_steps` is the same list with the guards and unchanged-tests for printable-ASCII text
    (most prompts), None when a rewrite could make such text non-ASCII. `*_without_digits` are
    the lists minus the steps that need a digit, for texts without one: no rewrite of the phase
    can add a digit, so those steps could never run (None if one could)."""

    rewrites: tuple[Rewrite, ...]
    steps: tuple[tuple, ...]
    steps_without_digits: tuple | None
    plain_steps: tuple | None = None
    plain_steps_without_digits: tuple | None = None
    scanner: "Scanner | None" = None  # printable-ASCII text: the steps that can match, in one pass


def _step(rw: Rewrite, plain: bool) -> tuple:
    """(needs_digit, guard kind, guard, prefilter, find, regex sub, repl, unchanged, strip) for `_run`.
    The fastest way to look for the literals (measured): single characters as one regex class (the
    engine scans for a class in C), a few words one `in` after another, many as one alternation."""
    literals = rw.plain_literals if plain and rw.plain_literals else rw.literals
    kind, guard = 0, None
    if literals:
        kind = _LOWER if rw.ignore_case else 0
        literals = tuple(dict.fromkeys(literals))
        if len(literals) == 1:
            guard = literals[0]
        elif all(len(x) == 1 for x in literals):
            kind |= _REGEX
            guard = re.compile("[" + "".join(re.escape(x) for x in literals) + "]")
        elif len(literals) <= 4:
            kind |= _ANY
            guard = literals
        else:
            kind |= _REGEX
            guard = re.compile("|".join(re.escape(x) for x in sorted(literals, key=len, reverse=True)))
    unchanged = rw.unchanged_plain if plain else rw.unchanged
    sub = rw.regex.sub if rw.regex is not None else None
    if plain and rw.regex is not None and (rw.regex.pattern, rw.repl) in _SAME_ON_PLAIN:
        sub = _SAME_ON_PLAIN[rw.regex.pattern, rw.repl].sub
    if rw.find is None and rw.regex is None:  # built by hand: only `sub` is known
        sub, repl = (lambda repl, text, f=rw.sub: f(text)), ""
    else:
        repl = rw.repl
    return (rw.needs_digit, kind, guard, rw.prefilter, rw.find, sub, repl, unchanged, rw.strip)


# Faster regexes with the same substitution on printable-ASCII text, for (pattern, repl) pairs of
# the default params that run often: `\\s+` -> " " matches every single space and writes it back;
# only runs of two or more change anything (tests check each pair on random text).
_SAME_ON_PLAIN: dict[tuple[str, str], re.Pattern] = {
    (r"\s+", " "): re.compile(" {2,}"),
}

_TRIM_ONLY = (False, 0, None, None, None, lambda repl, text: text, "", None, True)


def _without_digits(steps: tuple) -> tuple:
    # a skipped step still trims when it says strip: keep it as a trim-only step
    return tuple(_TRIM_ONLY if step[0] else step for step in steps if not step[0] or step[8])


def _phase(rewrites: tuple[Rewrite, ...], fast: bool = True) -> Phase:
    steps = tuple(_step(rw, plain=False) for rw in rewrites)
    plain_steps = tuple(_step(rw, plain=True) for rw in rewrites) if all(rw.keeps_plain for rw in rewrites) else None
    if any(rw.adds_digits for rw in rewrites) or not any(step[0] for step in steps):
        without = plain_without = None
    else:
        without = _without_digits(steps)
        plain_without = _without_digits(plain_steps) if plain_steps is not None else None
    scanner = _scanner(rewrites, plain_steps) if fast and plain_steps is not None else None
    return Phase(rewrites, steps, without, plain_steps, plain_without, scanner)


# --------------------------------------------------------------------------- one-pass scanner

@dataclass(frozen=True)
class Scanner:
    """Finds, in one pass over printable-ASCII text, which rewrites of a phase can change it.

    Most regexes of a phase match nowhere in most prompts; running each one just to learn that
    was most of the cleaner's time. An RE2 set (google-re2) holds one pattern per step and
    matches them all at once in C; only the steps it names run, in order, with Python's `re` as
    before. After a rewrite changes the text the set looks again, for the steps after it. A step
    whose regex RE2 cannot read the same way has the empty pattern, which always matches: it
    runs with its own guards (`guarded`)."""

    match: Callable[[bytes], Any]  # the set's Match: a list of step indexes, or a false value
    steps: tuple[tuple, ...]  # `_step` tuples; unguarded where a hit proves the step can change the text
    guarded: tuple[bool, ...]


_RE2_UNSAFE = ("[:", "{,", "(?x", "(?a", "(?L", "(?u", "\\Z", "\\u", "\\U", "\\N")

# RE2 patterns for rewrites that often match without changing the text: on printable-ASCII text
# the rewrite can only change it where this matches (tests check each on random text).
_CHANGES_WHEN_PLAIN: dict[tuple[str, str], str] = {
    (r"\s+", " "): "  ",
    (r"\s*([^\w\s,\.!\?])(?:\s+|$)", r"\1"): r"[\"-+\-/:->@\[-\^`{-~] | [\"-+\-/:->@\[-\^`{-~]$",
}


def _re2_pattern(rw: Rewrite) -> str | None:
    """An RE2 pattern that matches printable-ASCII text wherever the rewrite could change it, or
    None. A step that trims can also change text with whitespace at either end."""
    if rw.find is not None:
        pattern = re.escape(rw.find)
    elif rw.regex is None:
        return None
    else:
        pattern = _CHANGES_WHEN_PLAIN.get((rw.regex.pattern, rw.repl)) or _re2_syntax(rw.regex)
    if pattern is None:
        return None
    return f"(?:{pattern})|^\\s|\\s$" if rw.strip else pattern


def _re2_syntax(regex: re.Pattern) -> str | None:
    """The regex as an RE2 pattern that matches the same printable-ASCII texts, or None. On such
    text \\s, \\w, \\b and case folding agree; only syntax both engines read alike passes (no
    POSIX classes or "{,n}", which RE2 reads differently). Lookarounds and backreferences RE2
    lacks are rewritten where that is exact (`_without_edge_lookarounds`, `_doubled_character`)."""
    if any(x in regex.pattern for x in _RE2_UNSAFE) or regex.flags & ~(re.IGNORECASE | re.UNICODE):
        return None
    try:
        from re import _parser as parser
    except ImportError:
        return None
    pattern = (_without_edge_lookarounds(regex.pattern, parser) or _doubled_character(regex, parser)
               or regex.pattern)
    return pattern if _plain_syntax(parser.parse(pattern), parser) else None


def _without_edge_lookarounds(pattern: str, parser) -> str | None:
    """`(?<=X)Y(?=Z)` matches somewhere exactly when `XYZ` does: a lookbehind that opens the
    pattern and a lookahead that closes it become plain groups. None when there are none."""
    tree = list(parser.parse(pattern))
    behind = bool(tree) and tree[0][0] is parser.ASSERT and tree[0][1][0] == -1 and pattern.startswith("(?<=")
    ahead_at = pattern.rfind("(?=")
    ahead = bool(tree) and tree[-1][0] is parser.ASSERT and tree[-1][1][0] == 1 and ahead_at > 0
    if not (behind or ahead):
        return None
    new = pattern
    if ahead:
        new = new[:ahead_at] + "(?:" + new[ahead_at + 3:]
    if behind:
        new = "(?:" + new[4:]
    try:
        new_tree = list(parser.parse(new))
    except re.error:
        return None
    # the same tree with those nodes' contents spliced in (the parser inlines "(?:...)"), else
    # the text edit hit something else
    edges = ((0,) if behind else ()) + ((len(tree) - 1,) if ahead else ())
    expect = [item for i, node in enumerate(tree) for item in (list(node[1][1]) if i in edges else [node])]
    return new if repr(new_tree) == repr(expect) else None


def _doubled_character(regex: re.Pattern, parser) -> str | None:
    """`(C)\\1+` for a one-character class C matches where some character of C appears twice in
    a row: on printable ASCII, an alternation of those pairs. None for any other pattern."""
    tree = list(parser.parse(regex.pattern))
    if len(tree) != 2 or tree[0][0] is not parser.SUBPATTERN or tree[1][0] is not parser.MAX_REPEAT:
        return None
    group, body = tree[0][1], list(tree[0][1][3])
    repeat = tree[1][1]
    if group[1] or group[2] or len(body) != 1 or body[0][0] not in (parser.IN, parser.LITERAL):
        return None
    if repeat[0] != 1 or list(repeat[2]) != [(parser.GROUPREF, group[0])]:
        return None
    chars = [chr(c) for c in range(0x20, 0x7F) if regex.fullmatch(chr(c) * 2)]  # cc matches iff c is in C
    return "|".join(re.escape(c + c) for c in chars) if chars else None


def _plain_syntax(items, parser) -> bool:
    categories = {parser.CATEGORY_DIGIT, parser.CATEGORY_NOT_DIGIT, parser.CATEGORY_WORD,
                  parser.CATEGORY_NOT_WORD, parser.CATEGORY_SPACE, parser.CATEGORY_NOT_SPACE}
    anchors = {parser.AT_BOUNDARY, parser.AT_NON_BOUNDARY, parser.AT_BEGINNING, parser.AT_END,
               parser.AT_BEGINNING_STRING}
    for op, av in items:
        if op in (parser.LITERAL, parser.NOT_LITERAL, parser.ANY):
            continue
        if op is parser.IN:
            if not all(kind in (parser.LITERAL, parser.RANGE, parser.NEGATE) or
                       (kind is parser.CATEGORY and arg in categories) for kind, arg in av):
                return False
        elif op is parser.AT:
            if av not in anchors:
                return False
        elif op is parser.BRANCH:
            if not all(_plain_syntax(branch, parser) for branch in av[1]):
                return False
        elif op is parser.SUBPATTERN:
            if av[1] or av[2] or not _plain_syntax(av[3], parser):
                return False
        elif op in (parser.MAX_REPEAT, parser.MIN_REPEAT):
            if av[1] is not parser.MAXREPEAT and av[1] > 1000 or not _plain_syntax(av[2], parser):
                return False  # RE2 caps counted repeats at 1000
        else:
            return False
    return True


def _scanner(rewrites: tuple[Rewrite, ...], plain_steps: tuple) -> Scanner | None:
    """The phase's scanner, or None without google-re2 (then every step runs its own guards)."""
    patterns = [_re2_pattern(rw) for rw in rewrites]
    if all(pattern is None for pattern in patterns):
        return None  # nothing for RE2 to rule out
    regex_set, taken = _re2_set([pattern if pattern is not None else "" for pattern in patterns])
    if regex_set is None or len(taken) != len(rewrites):
        return None
    guarded = tuple(pattern is None for pattern in patterns)
    steps = tuple(step if keep_guards else (False, 0, None, None) + step[4:]
                  for step, keep_guards in zip(plain_steps, guarded))
    return Scanner(_set_match(regex_set), steps, guarded)


def _set_match(regex_set: Any) -> Callable[[bytes], Any]:
    """The set's Match for bytes. The binding's public Match wraps the compiled set's own with a
    type check per call, a measurable share of a cleaned prompt's time; it is the fallback."""
    return getattr(regex_set, "_set", regex_set).Match


@dataclass(frozen=True)
class Search:
    """Whether a regex matches somewhere in a text. RE2 answers when it reads the pattern exactly
    like Python's `re`: for printable-ASCII text, or for any text when the pattern is only
    literals (a substring search either way)."""

    regex: re.Pattern
    re2_match: Callable[[bytes], Any] | None = None  # a one-pattern RE2 set's Match: the cheapest RE2 call
    any_text: bool = False

    def found(self, text: str, plain: bool | None = None) -> bool:
        if self.re2_match is not None and (self.any_text or (_plain(text) if plain is None else plain)):
            return bool(self.re2_match(text.encode()))
        return self.regex.search(text) is not None


def _search(pattern: str, fast: bool) -> Search:
    regex = re.compile(pattern)
    re2_set = _re2_set([_re2_syntax(regex)])[0] if fast else None
    if re2_set is None:
        return Search(regex)
    return Search(regex, _set_match(re2_set), _literals_only(regex))


def _re2_set(patterns: list[str | None]) -> tuple[Any, list[int]]:
    """(an RE2 set of the patterns RE2 takes, the indexes of those it took); (None, []) when it
    takes none or google-re2 is not installed (then every pattern runs with Python's `re`)."""
    try:
        import re2
    except ImportError:
        return None, []
    options = re2.Options()
    options.log_errors = False
    regex_set, taken = re2.Set.SearchSet(options), []
    for i, pattern in enumerate(patterns):
        if pattern is None:
            continue
        try:
            regex_set.Add(pattern)
        except re2.error:
            continue
        taken.append(i)
    if not taken:
        return None, []
    try:
        regex_set.Compile()
    except re2.error:
        return None, []
    return regex_set, taken


def _literals_only(regex: re.Pattern) -> bool:
    """A case-sensitive literal, or an alternation of them."""
    from re import _parser as parser

    tree = list(parser.parse(regex.pattern))
    branches = tree[0][1][1] if len(tree) == 1 and tree[0][0] is parser.BRANCH else [tree]
    return not regex.flags & re.IGNORECASE and all(op is parser.LITERAL for branch in branches for op, _ in branch)


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
    banned_nospace: tuple[str, ...]
    max_dashes: int
    max_pipes: int
    person_names: Any  # callable(text) -> number of PERSON entities, None = rule off
    max_persons: int
    ban_words: "Search | None"  # searched in the lowercase text
    max_repeat_ratio: float
    min_mean_word_len: float
    normalise: Phase
    max_commas: int
    by_clause: ByClause
    phrases: Phase  # deletes stop phrases, then "by artist"/artist, then "by site"/site
    tidy: Phase
    min_chars: int
    max_chars: int
    min_unique_words: int
    collapse_repeats: Phase
    thought_phrases: "Search | None"
    finish: Phase
    workers: int = 1  # processes for clean_table (same output for any number)
    fast: bool = True  # guards on (see load_rules)
    keeps_plain: bool = False  # no rewrite can make printable-ASCII text otherwise (see clean_text)
    params: dict = field(default_factory=dict, compare=False, repr=False)  # what it was compiled from


def load_rules(params_clean: dict, fast: bool = True) -> Rules:
    """Compile params.yaml `clean` into Rules; a bad entry is a DataError naming its key.

    `fast=False` leaves out the regex guards (same results, slower): the benchmark's baseline and
    the tests' proof that the guards never change an output."""
    if not isinstance(params_clean, dict):
        raise DataError("params.yaml: clean: expected a mapping of rules")
    missing = [key for key in REQUIRED_KEYS if key not in params_clean]
    if missing:
        raise DataError(f"params.yaml: clean: missing rule(s) {', '.join(missing)}")
    p = params_clean
    language = p.get("language") or {}
    persons = p.get("person_names") or {}
    phrases = [_phrase(x, "stop_phrases", fast) for x in _strings(p, "stop_phrases")]
    for key in ("artists", "sites"):
        for name in _strings(p, key):
            phrases += [_phrase("by " + name, key, fast), _phrase(name, key, fast)]
    thoughts = _strings(p, "thought_phrases")
    ban_words = [w.lower() for w in _strings(p, "ban_words")]
    phases = {key: _rewrites(p, key, fast) for key in ("normalise", "tidy", "collapse_repeats", "finish")}
    phases["phrases"] = _phase(tuple(phrases), fast)
    by_clause = _by_clause(p["by_clause"], fast)
    phases["by_clause"] = by_clause.remove_to_comma
    return Rules(
        language=tuple(language.get("keep", ["en"])) if language.get("enabled") else None,
        language_seed=int(language.get("seed", 0)),
        banned_nospace=tuple(_strings(p, "banned_nospace")),
        max_dashes=_number(p, "max_dashes", int),
        max_pipes=_number(p, "max_pipes", int),
        person_names=_person_counter(persons.get("model", "en_core_web_sm")) if persons.get("enabled") else None,
        max_persons=int(persons.get("max_persons", 1)),
        ban_words=_search("|".join(map(re.escape, ban_words)), fast) if ban_words else None,
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
            _search(r"(?i)\b(" + "|".join(map(re.escape, thoughts)) + r")\b", fast) if thoughts else None
        ),
        finish=phases["finish"],
        workers=_workers(p.get("workers", 1)),
        fast=fast,
        keeps_plain=all(phase.plain_steps is not None for phase in phases.values()),
        params=copy.deepcopy(p),
    )


def _strings(p: dict, key: str) -> list[str]:
    value = p[key] or []
    if not isinstance(value, list) or not all(isinstance(v, (str, int, float)) for v in value):
        raise DataError(f"params.yaml: clean.{key}: expected a list of strings")
    return [str(v) for v in value]


def _workers(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise DataError(f"params.yaml: clean.workers: expected a whole number >= 1, got {value!r}")
    return value


def _number(p: dict, key: str, kind: type) -> Any:
    value = p[key]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise DataError(f"params.yaml: clean.{key}: expected a number, got {value!r}")
    return kind(value)


def _regex(pattern: str, where: str) -> re.Pattern:
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise DataError(f"params.yaml: {where}: bad regex {pattern!r} ({exc})") from None


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
    return _phase(tuple(compiled), fast)


def _rewrite(step: dict, where: str, fast: bool) -> Rewrite:
    name, repl, strip = str(step["name"]), str(step.get("repl", "")), bool(step.get("strip", False))
    if "find" in step:
        find = str(step["find"])
        return Rewrite(name, lambda text: text.replace(find, repl), strip, literals=(find,) if fast else (),
                       adds_digits=bool(_DIGIT.search(repl)), find=find, repl=repl, keeps_plain=_plain(repl))
    # group references (\\1, \\g<name>) copy what matched; only the rest of `repl` is new text
    new_text = re.sub(r"\\(\d+|g<[^>]*>)", "", repl)
    regex = _regex(str(step["pattern"]), where)
    try:
        regex.sub(repl, "")  # a bad group reference in `repl` fails here, not on row 1,000,000
    except (re.error, IndexError) as exc:
        raise DataError(f"params.yaml: {where}: bad repl {repl!r} ({exc})") from None
    sub = regex.sub
    needs_digit, literals, plain_literals, ignore_case = _guards(regex) if fast else (False, (), (), False)
    unchanged = unchanged_plain = None
    if fast and (regex.pattern, repl) in _UNCHANGED_WHEN:
        unchanged, unchanged_plain = _UNCHANGED_WHEN[regex.pattern, repl], _UNCHANGED_WHEN_PLAIN[regex.pattern, repl]
    return Rewrite(name, lambda text: sub(repl, text), strip, needs_digit, literals, ignore_case, plain_literals,
                   adds_digits=bool(_DIGIT.search(new_text)), regex=regex, repl=repl, unchanged=unchanged,
                   unchanged_plain=unchanged_plain, keeps_plain=_plain(new_text) and "\\" not in new_text,
                   prefilter=_prefilter(regex) if fast else None)


def _starts_with_a_character(node, parser) -> bool:
    """Whether a parse-tree node always begins with one literal or a narrow class (a group or a
    repeat of at least one of them counts). \\w or a negated class matches most characters, so a
    search for it is no faster."""
    op, av = node
    if op is parser.LITERAL:
        return True
    if op is parser.IN:
        return all(kind is not parser.NEGATE and not (kind is parser.CATEGORY and arg is parser.CATEGORY_WORD)
                   for kind, arg in av)
    if op is parser.SUBPATTERN and not (av[1] or av[2]) and av[3]:
        return _starts_with_a_character(av[3][0], parser)
    if op in (parser.MAX_REPEAT, parser.MIN_REPEAT) and av[0] >= 1 and av[2]:
        return _starts_with_a_character(av[2][0], parser)
    return False


_LEADING_BOUNDARY = re.compile(r"(\(\?[aiLmsux]+\))?\\b")


def _prefilter(regex: re.Pattern) -> re.Pattern | None:
    """The regex without its leading \\b, when it has one: a match of the whole regex is a match
    of this one at the same place, so when this finds nothing the rewrite is skipped. It is worth
    it because the engine can only jump ahead to a pattern's first character (a literal or a
    class) when no assertion comes first: `n\\d+\\b` scans ~8x faster than `\\b(n\\d+)\\b`."""
    head = _LEADING_BOUNDARY.match(regex.pattern)
    if head is None:
        return None
    try:
        from re import _parser as parser
    except ImportError:
        return None
    rest = (head.group(1) or "") + regex.pattern[head.end():]
    try:
        tree, rest_tree = parser.parse(regex.pattern), parser.parse(rest)
    except re.error:
        return None
    # only when it is exactly the tree minus its first node (a top-level \\b, not "\\b*" or "\\b|x")
    first, *others = list(tree)
    if first != (parser.AT, parser.AT_BOUNDARY) or repr(others) != repr(list(rest_tree)):
        return None
    if not rest_tree or not _starts_with_a_character(rest_tree[0], parser):
        return None  # no first character to jump to: no faster than the regex itself
    return re.compile(rest, regex.flags)


def _plain(text: str) -> bool:
    """Printable ASCII: whitespace is only " ", \\w is [A-Za-z0-9_], case folding is lower()."""
    return text.isascii() and text.isprintable()


def _no_repeated_word(text: str) -> bool:
    """No \\w-run equals the next one (case-insensitively). Printable-ASCII text only."""
    runs = _lower_word_runs(text)
    return not any(map(operator.eq, runs, runs[1:]))  # operator.eq: ~3x faster than bytes.__eq__ here


def _no_repeated_bigram(text: str) -> bool:
    """No two \\w-runs in a row equal the next two (runs i, i+1 = runs i+2, i+3), case-insensitively.
    Printable-ASCII text only."""
    runs = _lower_word_runs(text)
    same = list(map(operator.eq, runs, runs[2:]))  # run i = run i+2
    return True not in same or not any(map(operator.and_, same, same[1:]))


@functools.lru_cache(maxsize=4)  # the word and bigram checks look at the same text in a row
def _lower_word_runs(text: str) -> list[bytes]:
    """The \\w-runs of ASCII text, lowercased (the rest to spaces, then split)."""
    return text.encode("ascii").lower().translate(_PUNCT_TO_SPACE).split()


_PUNCT_TO_SPACE = bytes(c if chr(c).isalnum() or c == ord("_") else ord(" ") for c in range(256))


# In printable ASCII, [^\w\s] is this class; simple ASCII classes let the regex engine skip ahead
# fast, so these searches cost a fraction of the rewrites they rule out.
_PUNCT = r"!-/:-@\[-\^`{-~"
_SYMBOL = r"\"-+\-/:->@\[-\^`{-~"  # the same without ",.!?"
_DOUBLED_PUNCT = re.compile(f"([{_PUNCT}])\\1")
_SPACED_SYMBOL = re.compile(f"[{_SYMBOL}] | [{_SYMBOL}]$")
_SPACED_PUNCT = re.compile(r" [.,;!?]")
_PUNCT_PAIR = re.compile(r"[.,][.,]")


def _no_comma_before_nonspace(text: str) -> bool:
    """`(?<=[^ ]),(?=[^ ])` needs a comma followed by a character other than " "."""
    return text.count(",") == text.count(", ") + text.endswith(",")


# Cheap tests that prove a rewrite would return its input unchanged, for the exact (pattern,
# repl) pairs of the default params whose regexes have no literal to guard on and run on every
# prompt. Another pattern in params simply runs unguarded; tests check each entry against the
# regex on real and random text. Each test here holds for printable-ASCII text (see `_plain`),
# where \\s is " " and \\w is [A-Za-z0-9_]; `_ANY_TEXT` ones hold for any text.
_UNCHANGED_WHEN_PLAIN: dict[tuple[str, str], Callable[[str], bool]] = {
    (r"(?<=[^ ]),(?=[^ ])", ", "): _no_comma_before_nonspace,
    (r"([^\w\s])\1+", r"\1"): lambda text: not _DOUBLED_PUNCT.search(text),
    (r"(?i)\b[a-z]\.\s", ""): lambda text: ". " not in text,
    (r"\s+", " "): lambda text: "  " not in text,
    (r"\s+([.,;!?])", r"\1"): lambda text: not _SPACED_PUNCT.search(text),
    # `\s*([^\w\s,.!?])(?:\s+|$)` only changes text where such a symbol has whitespace after it,
    # or ends the text after whitespace
    (r"\s*([^\w\s,\.!\?])(?:\s+|$)", r"\1"): lambda text: not _SPACED_SYMBOL.search(text),
    (r"[.,]{2,}", " "): lambda text: not _PUNCT_PAIR.search(text),
    # a match is a \w-run (a bigram of them), whitespace, and the same run(s) again
    (r"(?i)\b(\w+)(\s+\1\b)+", r"\1"): _no_repeated_word,
    (r"(?i)\b(\w+\s+\w+)(\s+\1\b)+", r"\1"): _no_repeated_bigram,
    # printable ASCII has no control characters
    (r"[\x00-\x08\x0b-\x1f\x7f]", " "): lambda text: True,
}

_ANY_TEXT = {(r"(?<=[^ ]),(?=[^ ])", ", "), (r"[.,]{2,}", " ")}


def _only_if_plain(test: Callable[[str], bool]) -> Callable[[str], bool]:
    return lambda text: _plain(text) and test(text)


_UNCHANGED_WHEN: dict[tuple[str, str], Callable[[str], bool]] = {
    key: test if key in _ANY_TEXT else _only_if_plain(test) for key, test in _UNCHANGED_WHEN_PLAIN.items()
}


def _guards(regex: re.Pattern) -> tuple[bool, tuple[str, ...], tuple[str, ...], bool]:
    """(needs_digit, literals, plain_literals, ignore_case): what any match of `regex` must contain,
    read off its parse tree; `plain_literals`, when set, is a stronger guard for printable-ASCII
    text, where \\s can only be " ". Conservative: what the walk does not understand adds no guard."""
    try:
        from re import _parser as parser  # Python's own regex parser (private; present in 3.11+)
    except ImportError:
        return False, (), (), False  # no guards: every regex runs, same results
    ignore_case = bool(regex.flags & re.IGNORECASE)
    tree = parser.parse(regex.pattern)
    needs_digit, options = _required(tree, parser, plain=False)
    _, plain_options = _required(tree, parser, plain=True)
    best, best_plain = _best(options, ignore_case), _best(plain_options, ignore_case)
    if min(map(len, best_plain), default=0) <= min(map(len, best), default=0):
        best_plain = ()  # no stronger than the general guard
    return needs_digit, best, best_plain, ignore_case


def _best(options: list[tuple[str, ...]], ignore_case: bool) -> tuple[str, ...]:
    """The most selective option: the one whose shortest literal is longest."""
    if ignore_case:
        options = [tuple(x.lower() for x in opt) for opt in options if all(x.isascii() for x in opt)]
    return max(options, key=lambda opt: min(map(len, opt)), default=())


def _required(items, parser, plain: bool) -> tuple[bool, list[tuple[str, ...]]]:
    """Walk one sequence of a parse tree: does every match need a digit, and which sets of
    literals (one of each set must occur) does every match need. `plain`: read \\s as " "."""
    space = [(parser.CATEGORY, parser.CATEGORY_SPACE)]
    repeats = (parser.MAX_REPEAT, parser.MIN_REPEAT, parser.POSSESSIVE_REPEAT)
    needs_digit, options, run = False, [], []
    for op, av in list(items) + [(None, None)]:
        if op is parser.LITERAL:
            run.append(chr(av))
            continue
        if plain and op is parser.IN and av == space:
            run.append(" ")
            continue
        if plain and op in repeats and av[0] >= 1 and list(av[2]) == [(parser.IN, space)]:
            run.append(" ")  # one or more spaces: the run so far ends in " ", the next starts with one
            options.append(("".join(run),))
            run = [" "]
            continue
        if run:
            options.append(("".join(run),))
            run = []
        if op is parser.IN:
            if av == [(parser.CATEGORY, parser.CATEGORY_DIGIT)]:
                needs_digit = True
            elif av and all(kind is parser.LITERAL for kind, _ in av):
                options.append(tuple(chr(c) for _, c in av))
        elif op in repeats and av[0] >= 1:
            digit, opts = _required(av[2], parser, plain)
            needs_digit, options = needs_digit or digit, options + opts
        elif op is parser.SUBPATTERN and not (av[1] or av[2]):  # a group that changes no flags
            digit, opts = _required(av[3], parser, plain)
            needs_digit, options = needs_digit or digit, options + opts
        elif op is parser.ASSERT:  # a positive lookaround must match too
            digit, opts = _required(av[1], parser, plain)
            needs_digit, options = needs_digit or digit, options + opts
        elif op is parser.BRANCH:
            walked = [_required(branch, parser, plain) for branch in av[1]]
            needs_digit = needs_digit or all(digit for digit, _ in walked)
            if all(opts for _, opts in walked):  # one literal of some branch must occur
                best = [max(opts, key=lambda opt: min(map(len, opt))) for _, opts in walked]
                options.append(tuple(x for opt in best for x in opt))
    return needs_digit, options


def _phrase(phrase: str, key: str, fast: bool) -> Rewrite:
    """A phrase deleted as whole words in any case, the text trimmed after (like the reference)."""
    step = {"name": f"{key}: {phrase}", "pattern": r"(?i)\b" + re.escape(phrase) + r"\b", "strip": True}
    return _rewrite(step, f"clean.{key}: {phrase!r}", fast)


def _by_clause(p: Any, fast: bool) -> ByClause:
    if not isinstance(p, dict):
        raise DataError("params.yaml: clean.by_clause: expected a mapping")
    try:
        return ByClause(
            marker=str(p["marker"]),
            exempt=str(p["exempt"]),
            and_marker=str(p["and_marker"]),
            cut_if_commas_after=int(p["cut_if_commas_after"]),
            cut_if_names_after=int(p["cut_if_names_after"]),
            remove_to_comma=_phase((_rewrite({"name": "by_clause.remove_to_comma", "pattern": str(p["remove_to_comma"])},
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


# --------------------------------------------------------------------------- the filter

def clean_text(text: str | None, rules: Rules) -> tuple[str | None, str | None]:
    """Clean one prompt: (cleaned text, None), or (None, name of the first rule that dropped it)."""
    if text is None:
        return None, EMPTY
    text = text.strip()
    if not text:
        return None, EMPTY

    # 1. drops on the raw prompt
    if rules.language is not None and _language(text, rules.language_seed) not in rules.language:
        return None, "language"
    nospace = text.replace(" ", "")
    for word in rules.banned_nospace:  # plain loops: no generator per prompt
        if word in nospace:
            return None, "banned_nospace"
    if text.count("-") > rules.max_dashes:
        return None, "max_dashes"
    if text.count("|") > rules.max_pipes:
        return None, "max_pipes"
    if rules.person_names is not None and rules.person_names(text) > rules.max_persons:
        return None, "person_names"
    if rules.ban_words is not None and rules.ban_words.found(text.lower()):
        return None, "ban_words"
    words = text.split()
    if (len(words) - len(set(words))) / len(words) > rules.max_repeat_ratio:
        return None, "max_repeat_ratio"
    # Printable-ASCII text stays so through every phase when each rewrite's new text is (deletions
    # and cuts keep it): worked out once, told to every phase.
    plain = True if rules.keeps_plain and _plain(text) else None
    letters = len(text) - text.count(" ") if plain else sum(map(len, words))  # plain: " " is the only space
    if letters / len(words) < rules.min_mean_word_len:
        return None, "min_mean_word_len"

    # 2. normalise punctuation and strip technical jargon
    text = _run(rules.normalise, text, plain)
    if text.count(",") > rules.max_commas:
        return None, "max_commas"

    # 3-4. artist credits, stop phrases, artists and sites
    text = _cut_by_clause(text, rules.by_clause, plain)
    if rules.phrases.rewrites:
        text = _run(rules.phrases, text.strip(), plain)
    text = _run(rules.tidy, text, plain)

    # 5. size of what is left
    if len(text) < rules.min_chars:
        return None, "min_chars"
    if len(text) > rules.max_chars:
        return None, "max_chars"
    if len(set(text.split())) < rules.min_unique_words:
        return None, "min_unique_words"

    # 6-8. repeats, "thought" texts, final touches
    text = _run(rules.collapse_repeats, text, plain)
    if rules.thought_phrases is not None and rules.thought_phrases.found(text, plain):
        return None, "thought_phrases"
    text = _run(rules.finish, text, plain)
    if not text:
        return None, EMPTY_AFTER_CLEAN
    return text, None


def _run(phase: Phase, text: str, plain: bool | None = None) -> str:
    """Apply a phase's rewrites in order, skipping those whose guards show they cannot match.
    `plain`: whether `text` is printable ASCII (`_plain`), when the caller knows."""
    if plain is None:
        plain = _plain(text)
    if plain and phase.scanner is not None:
        return _run_scanned(phase.scanner, text)
    if plain and phase.plain_steps is not None:  # every rewrite keeps the text printable ASCII
        steps, without = phase.plain_steps, phase.plain_steps_without_digits
    else:
        steps, without, plain = phase.steps, phase.steps_without_digits, False
    has_digit = None
    if without is not None and not _DIGIT.search(text):
        steps, has_digit = without, False
    return _run_steps(steps, text, plain, has_digit)


def _run_scanned(scanner: Scanner, text: str) -> str:
    """`_run` for printable-ASCII text: only the steps the scanner finds, looking again after a change."""
    match, steps, guarded = scanner.match, scanner.steps, scanner.guarded
    todo = sorted(match(text.encode()) or ())
    i = 0
    while i < len(todo):
        k = todo[i]
        if guarded[k]:
            new = _run_steps((steps[k],), text, True)
        else:
            new = _apply(text, *steps[k][4:])
        if new != text:
            text, i = new, 0
            todo = sorted(h for h in match(text.encode()) or () if h > k)
        else:
            i += 1
    return text


def _run_steps(steps: tuple, text: str, plain: bool, has_digit: bool | None = None) -> str:
    """The steps in order, each skipped when its guards show it cannot match."""
    lower = None  # facts about the current text, recomputed after it changes
    for needs_digit, kind, guard, prefilter, find, sub, repl, unchanged, strip in steps:
        if needs_digit:
            if has_digit is None:
                has_digit = _DIGIT.search(text) is not None
            if not has_digit:
                if strip:
                    text = text.strip()
                continue
        if guard is not None:
            if kind & _LOWER:
                if lower is None:  # False: not ASCII, Unicode case folding, cannot tell
                    lower = text.lower() if plain or text.isascii() else False
                haystack = lower
            else:
                haystack = text
            if haystack is False:
                found = True
            elif kind & _REGEX:
                found = guard.search(haystack) is not None
            elif kind & _ANY:
                found = False
                for literal in guard:
                    if literal in haystack:
                        found = True
                        break
            else:
                found = guard in haystack
            if not found or (prefilter is not None and prefilter.search(text) is None):
                if strip:
                    text = text.strip()
                continue
        elif prefilter is not None and prefilter.search(text) is None:
            if strip:
                text = text.strip()
            continue
        new = _apply(text, find, sub, repl, unchanged, strip)
        if new != text:
            text, lower, has_digit = new, None, None
    return text


def _apply(text: str, find: str | None, sub: Callable, repl: str, unchanged: Callable | None, strip: bool) -> str:
    """One rewrite on a text its guards (or the scanner) let through."""
    if find is not None:
        new = text.replace(find, repl)
    elif unchanged is not None and unchanged(text):
        new = text
    else:
        new = sub(repl, text)
    return new.strip() if strip else new


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
    return _run(by.remove_to_comma, text, plain)


def _cut_at(text: str, index: int) -> str:
    text = text[:index].strip()
    return text[:-1] if text.endswith(",") else text


def _language(text: str, seed: int) -> str:
    """langdetect's guess, seeded so it is the same on every run; undetectable text counts as kept
    (the reference logged the exception and kept the prompt)."""
    try:
        from langdetect import DetectorFactory, detect
        from langdetect.lang_detect_exception import LangDetectException
    except ImportError:
        raise DataError("params.yaml: clean.language.enabled needs the langdetect package") from None
    DetectorFactory.seed = seed
    try:
        return detect(text)
    except LangDetectException:
        return "en"


# --------------------------------------------------------------------------- tables

def clean_table(df, rules: Rules, column: str = "prompt", desc: str = "clean"):
    """Clean `column` of every row: (kept rows + `text`, dropped rows + `reason`), order preserved.
    `desc` names the loop in its progress bar and summary line (e.g. "clean@diffusiondb")."""
    import pandas as pd

    if column not in df.columns:
        raise DataError(f"clean: input table has no '{column}' column")
    values = [None if _missing(v) else str(v) for v in df[column].tolist()]
    distinct = list(dict.fromkeys(v for v in values if v is not None))  # real sources repeat prompts a lot
    cleaned = dict(zip(distinct, _clean_many(distinct, rules, desc)))
    results = [cleaned[v] if v is not None else (None, EMPTY) for v in values]
    keep = pd.Series([text is not None for text, _ in results], index=df.index, dtype=bool)
    kept = df[keep].copy()
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
    import multiprocessing

    context = multiprocessing.get_context("spawn")  # no fork: the parent may hold pyarrow threads
    with context.Pool(rules.workers, initializer=_start_worker, initargs=(rules.params, rules.fast)) as pool:
        results = pool.imap(_clean_in_worker, texts, chunksize=2000)  # imap: in order, counted as they come
        return list(track(results, total=len(texts), desc=desc, unit="distinct prompts"))


_WORKER_RULES: Rules | None = None


def _start_worker(params: dict, fast: bool) -> None:
    global _WORKER_RULES
    _WORKER_RULES = load_rules(params, fast=fast)


def _clean_in_worker(text: str) -> tuple[str | None, str | None]:
    return clean_text(text, _WORKER_RULES)


def pass_through(df, column: str = "prompt"):
    """`sources.S.clean: false`: every row kept unchanged, `text` = the raw prompt (v4-a's bug)."""
    kept = df.copy()
    kept["text"] = kept[column].astype("string")
    dropped = df.iloc[0:0].copy()
    dropped["reason"] = kept["text"].iloc[0:0]
    return kept.reset_index(drop=True), dropped.reset_index(drop=True)


def report(source: str, rows_in: int, dropped, applied: bool) -> dict:
    reasons = Counter(dropped["reason"].tolist())
    return {
        "source": source,
        "cleaning_applied": applied,
        "rows_in": rows_in,
        "kept": rows_in - len(dropped),
        "dropped": len(dropped),
        "dropped_by_reason": dict(sorted(reasons.items())),
    }


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and value != value)


def sibling_paths(output: Path) -> tuple[Path, Path]:
    """data/clean/S.parquet -> (data/clean/S.dropped.parquet, data/clean/S.report.json)."""
    output = Path(output)
    stem = output.name[: -len(".parquet")] if output.name.endswith(".parquet") else output.stem
    return output.with_name(f"{stem}.dropped.parquet"), output.with_name(f"{stem}.report.json")


# --------------------------------------------------------------------------- commands

def read_rules_params(rules_file: Path | None) -> dict:
    """The `clean` params: from the compiled rules file when given (what DVC tracks), else params.yaml."""
    if rules_file is None:
        return load_params("clean")
    rules_file = Path(rules_file)
    if not rules_file.exists():
        raise DataError(f"{rules_file}: rules file not found (run the clean_rules stage first)")
    try:
        return json.loads(rules_file.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise DataError(f"{rules_file}: not valid JSON ({exc})") from None


def cli_rules(output: Path) -> None:
    """clean_rules: validate params.yaml `clean` and write it to OUTPUT as the one tracked copy.

    Every clean@S and release@V depends on this file instead of on the `clean` params, so dvc.lock
    records the (long) rule lists once, not once per stage."""
    params_clean = load_params("clean")
    load_rules(params_clean)  # a bad rule fails here, once, naming its key
    write_json(params_clean, output)
    print(f"clean_rules: {len(params_clean)} rule entries -> {output}")


def cli(
    source: str,
    input: Path,
    output: Path,
    rules: Optional[Path] = typer.Option(None, "--rules", help="compiled rules (data/clean/rules.json); default: params.yaml clean"),
) -> None:
    """clean@S: drop and rewrite prompts with the cleaning rules (or pass through when
    sources.S.clean is false) -> output, its .dropped.parquet and .report.json."""
    sources = load_params("sources")
    if source not in (sources or {}):
        raise DataError(f"params.yaml: sources: no source named '{source}'")
    applied = bool((sources[source] or {}).get("clean", True))
    df = read_parquet(input)
    if "prompt" not in df.columns:
        raise DataError(f"{input}: no 'prompt' column (expected the normalised prompt table)")
    check_table(df, input, strings=("prompt",))
    if applied:
        kept, dropped = clean_table(df, load_rules(read_rules_params(rules)), desc=f"clean@{source}")
    else:
        kept, dropped = pass_through(df)
    dropped_path, report_path = sibling_paths(output)
    write_parquet(dropped, dropped_path)
    write_json(report(source, len(df), dropped, applied), report_path)
    write_parquet(kept, output)
    print(f"clean {source}: {len(df)} rows in, {len(kept)} kept, {len(dropped)} dropped -> {output}")


def cli_text(input: Path, output: Path) -> None:
    """Clean a text file, one prompt per line -> JSONL {"text": str|null, "reason": str|null}."""
    input = Path(input)
    if not input.exists():
        raise DataError(f"{input}: input not found")
    rules = load_rules(load_params("clean"))
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
