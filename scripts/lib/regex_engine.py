"""The cleaner's regex engine: rewrites in ordered phases, run fast and exactly as Python's `re`.

A `Phase` is an ordered list of `CompiledRewrite`s (a plain-text replacement or a regex
substitution); `run_phase` applies them in order. A `Search` answers whether a regex matches
somewhere. Both give exactly what running every regex with Python's `re` gives (`fast=False`); the
speed (>= 20k prompts/s on one core) comes from skipping what cannot change the text: the guards
and proofs of scripts/lib/regex_guards.py, and on printable-ASCII text (most prompts) an RE2 set per
phase (`Scanner`, scripts/lib/regex_re2.py) that finds in one pass the few rewrites that can change
it; only those run, with Python's `re`. It knows nothing about prompts (scripts/lib/cleaning/).
"""

from __future__ import annotations

import enum
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple, overload

from scripts.lib.errors import DataError, shown_short
from scripts.lib.regex_deadline import RegexTooSlow, bounded_regexes
from scripts.lib.regex_guards import (
    SAME_ON_PLAIN,
    UNCHANGED_WHEN,
    UNCHANGED_WHEN_PLAIN,
    guards,
    is_plain,
    literals_only,
    prefilter,
)
from scripts.lib.regex_re2 import CONTROL, re2_set, re2_syntax, rewrite_pattern, set_match

__all__ = [
    "CompiledRewrite",
    "Phase",
    "Search",
    "compile_phase",
    "compile_rewrite",
    "compile_search",
    "is_plain",
    "run_phase",
]

_DIGIT = re.compile(r"\d")


# --------------------------------------------------------------------------- compiling


@dataclass(frozen=True)
class CompiledRewrite:
    """One named rewrite, compiled: a plain-text replacement (`find`) or a regex substitution (`regex`).

    The guards are facts read off the regex when it is compiled (`regex_guards.Guards`): every match
    contains a digit (`needs_digit`) and/or one of `literals` (lowercase when `ignore_case`). When the
    text lacks them the regex cannot match, so it is skipped; that is most regexes for most prompts.
    `unchanged` (`unchanged_plain` for printable-ASCII text) is a cheap test proving the regex would
    return its input unchanged, when one is known (regex_guards.UNCHANGED_WHEN)."""

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
    prefilter: re.Pattern | None = None  # the regex minus a leading \\b: see `regex_guards.prefilter`
    where: str = ""  # the rule's place in its file, for an error met while it runs


def compile_rewrite(
    name: str,
    *,
    find: str | None = None,
    pattern: str | None = None,
    repl: str = "",
    strip: bool = False,
    fast: bool = True,
    where: str = "rewrite",
) -> CompiledRewrite:
    """One rewrite: replace the plain text `find`, or substitute the regex `pattern`, by `repl`;
    `strip` trims the result. `fast=False` leaves out the guards (same results, slower). A bad
    pattern or repl is a DataError that starts with `where`."""
    if find is not None:
        return CompiledRewrite(
            name,
            lambda text: text.replace(find, repl),
            strip,
            literals=(find,) if fast else (),
            adds_digits=bool(_DIGIT.search(repl)),
            find=find,
            repl=repl,
            keeps_plain=is_plain(repl),
        )
    # group references (\\1, \\g<name>) copy what matched; only the rest of `repl` is new text
    new_text = re.sub(r"\\(\d+|g<[^>]*>)", "", repl)
    assert pattern is not None, "compile_rewrite needs `find` or `pattern`"
    regex = _regex(pattern, where)
    try:
        with bounded_regexes():  # a pattern can backtrack without end on the empty text too
            regex.sub(repl, "")  # a bad group reference in `repl` fails here, not on row 1,000,000
    except (re.error, IndexError) as exc:
        raise DataError(f"{where}: bad repl {repl!r} ({exc})") from None
    except RegexTooSlow as exc:
        raise DataError(
            f"{where}: regex {shown_short(pattern)!r} ran over {exc.seconds:g} s on the empty text"
        ) from None
    sub = regex.sub
    found = guards(regex)._asdict() if fast else {}
    unchanged = unchanged_plain = None
    if fast and (regex.pattern, repl) in UNCHANGED_WHEN:
        unchanged, unchanged_plain = UNCHANGED_WHEN[regex.pattern, repl], UNCHANGED_WHEN_PLAIN[regex.pattern, repl]
    return CompiledRewrite(
        name,
        lambda text: sub(repl, text),
        strip,
        **found,
        adds_digits=bool(_DIGIT.search(new_text)),
        regex=regex,
        repl=repl,
        unchanged=unchanged,
        unchanged_plain=unchanged_plain,
        keeps_plain=is_plain(new_text) and "\\" not in new_text,
        prefilter=prefilter(regex) if fast else None,
        where=where,
    )


def _regex(pattern: str, where: str) -> re.Pattern:
    try:
        return re.compile(pattern)
    except (re.error, OverflowError, RecursionError) as exc:  # a{4294967296}, groups nested thousands deep
        raise DataError(f"{where}: bad regex {shown_pattern(pattern)} ({exc})") from None


def shown_pattern(pattern: str, limit: int = 80) -> str:
    """A pattern as an error line quotes it: cut to `limit` characters (one may be thousands long)."""
    return repr(pattern) if len(pattern) <= limit else f"{pattern[:limit]!r}... ({len(pattern)} characters)"


class Lookup(enum.Enum):
    """How a step's guard looks for its literals: one substring, a few substrings in turn, or one
    regex search (single characters as a class, which the engine scans for in C; many literals as
    an alternation). Each was the fastest for its case, measured."""

    SUBSTRING = "in"
    ANY_SUBSTRING = "any in"
    REGEX = "search"


class Step(NamedTuple):
    """A `CompiledRewrite` as `run_phase` reads it: the guards in the form they are tested, for one kind
    of text (any, or printable ASCII). `Phase` stores each as a plain tuple of these fields (`_packed`):
    `_run_steps` unpacks every step of a phase per text, and CPython unpacks an exact tuple on a fast
    path that a NamedTuple misses. Measured (the final rule set's phases, 20k mutated fixture prompts,
    old and new engine interleaved in one process): unpacking NamedTuples cost 3.5% (median of 7) on
    the unscanned path; packed, both paths are at parity with the positional tuples this replaced."""

    needs_digit: bool  # skip when the text has no digit
    lower: bool  # look for the literals in the lowercased text
    lookup: Lookup | None  # None: no literal guard
    guard: Any  # the literal (SUBSTRING), literals (ANY_SUBSTRING) or compiled regex (REGEX)
    prefilter: re.Pattern | None
    find: str | None  # a plain-text rewrite: str.replace
    sub: Any  # a regex rewrite: sub(repl, text) (Callable[[str, str], str]); None for a `find` rewrite
    repl: str
    unchanged: Callable[[str], bool] | None
    strip: bool


@dataclass(frozen=True)
class Phase:
    """An ordered list of rewrites, as `Step`s for a tight loop. `plain_steps` is the same list with
    the guards and unchanged-tests for printable-ASCII text (most prompts), None when a rewrite could
    make such text non-ASCII. `*_without_digits` are the lists minus the steps that need a digit, for
    texts without one: no rewrite of the phase can add a digit, so those steps could never run (None
    if one could)."""

    rewrites: tuple[CompiledRewrite, ...]
    steps: tuple[Step, ...]
    steps_without_digits: tuple[Step, ...] | None
    plain_steps: tuple[Step, ...] | None = None
    plain_steps_without_digits: tuple[Step, ...] | None = None
    scanner: Scanner | None = None  # printable-ASCII text: the steps that can match, in one pass


def compile_phase(rewrites: tuple[CompiledRewrite, ...], fast: bool = True) -> Phase:
    """The rewrites as one phase for `run_phase`; `fast=False`: no RE2 scanner."""
    steps = tuple(_step(rw, plain=False) for rw in rewrites)
    plain_steps = tuple(_step(rw, plain=True) for rw in rewrites) if all(rw.keeps_plain for rw in rewrites) else None
    if any(rw.adds_digits for rw in rewrites) or not any(step.needs_digit for step in steps):
        without = plain_without = None
    else:
        without = _without_digits(steps)
        plain_without = _without_digits(plain_steps) if plain_steps is not None else None
    scanner = _scanner(rewrites, plain_steps) if fast and plain_steps is not None else None
    return Phase(rewrites, _packed(steps), _packed(without), _packed(plain_steps), _packed(plain_without), scanner)


@overload
def _packed(steps: tuple[Step, ...]) -> tuple[Step, ...]: ...


@overload
def _packed(steps: None) -> None: ...


@overload
def _packed(steps: tuple[Step, ...] | None) -> tuple[Step, ...] | None: ...


def _packed(steps: tuple[Step, ...] | None) -> tuple[Step, ...] | None:
    """Each `Step` as a plain tuple, the form `_run_steps` unpacks fastest (see `Step`)."""
    return None if steps is None else tuple(tuple(step) for step in steps)  # type: ignore[misc]


def _step(rw: CompiledRewrite, plain: bool) -> Step:
    literals = rw.plain_literals if plain and rw.plain_literals else rw.literals
    lookup: Lookup | None = None
    guard: Any = None  # see `Step.guard`
    if literals:
        literals = tuple(dict.fromkeys(literals))
        if len(literals) == 1:
            lookup, guard = Lookup.SUBSTRING, literals[0]
        elif all(len(x) == 1 for x in literals):
            lookup, guard = Lookup.REGEX, re.compile("[" + "".join(re.escape(x) for x in literals) + "]")
        elif len(literals) <= 4:
            lookup, guard = Lookup.ANY_SUBSTRING, literals
        else:
            lookup = Lookup.REGEX
            guard = re.compile("|".join(re.escape(x) for x in sorted(literals, key=len, reverse=True)))
    unchanged = rw.unchanged_plain if plain else rw.unchanged
    sub = rw.regex.sub if rw.regex is not None else None
    if plain and rw.regex is not None and (rw.regex.pattern, rw.repl) in SAME_ON_PLAIN:
        sub = SAME_ON_PLAIN[rw.regex.pattern, rw.repl].sub
    if rw.find is None and rw.regex is None:  # built by hand: only `sub` is known
        sub, repl = (lambda repl, text, f=rw.sub: f(text)), ""
    else:
        repl = rw.repl
    return Step(
        rw.needs_digit,
        bool(literals) and rw.ignore_case,
        lookup,
        guard,
        rw.prefilter,
        rw.find,
        sub,
        repl,
        unchanged,
        rw.strip,
    )


_TRIM_ONLY = Step(False, False, None, None, None, None, lambda repl, text: text, "", None, True)


def _without_digits(steps: tuple[Step, ...]) -> tuple[Step, ...]:
    # a skipped step still trims when it says strip: keep it as a trim-only step
    return tuple(_TRIM_ONLY if step.needs_digit else step for step in steps if not step.needs_digit or step.strip)


# --------------------------------------------------------------------------- the phase runner


def run_phase(phase: Phase, text: str, plain: bool | None = None) -> str:
    """Apply a phase's rewrites in order, skipping those whose guards show they cannot match.
    `plain`: whether `text` is printable ASCII (`is_plain`), when the caller knows."""
    if plain is None:
        plain = is_plain(text)
    if plain and phase.scanner is not None:
        hits = phase.scanner.match(text.encode())
        return _run_scanned(phase.scanner, text, hits) if hits else text  # no hits: most phases, most prompts
    if plain and phase.plain_steps is not None:  # every rewrite keeps the text printable ASCII
        steps, without = phase.plain_steps, phase.plain_steps_without_digits
    else:
        steps, without, plain = phase.steps, phase.steps_without_digits, False
    has_digit = None
    if without is not None and not _DIGIT.search(text):
        steps, has_digit = without, False
    return _run_steps(steps, text, plain, has_digit)


def _run_scanned(scanner: Scanner, text: str, hits: list[int]) -> str:
    """`run_phase` for printable-ASCII text: only the steps the scanner found (`hits`), looking
    again after a change."""
    match, steps, guarded = scanner.match, scanner.steps, scanner.guarded
    todo = sorted(hits)
    i = 0
    while i < len(todo):
        k = todo[i]
        new = _run_steps((steps[k],), text, True) if guarded[k] else _apply(text, *steps[k][5:])
        if new != text:
            text, i = new, 0
            todo = sorted(h for h in match(text.encode()) or () if h > k)
        else:
            i += 1
    return text


_SUBSTRING, _ANY_SUBSTRING, _REGEX = Lookup.SUBSTRING, Lookup.ANY_SUBSTRING, Lookup.REGEX  # module globals: fast


def _run_steps(steps: tuple[Step, ...], text: str, plain: bool, has_digit: bool | None = None) -> str:
    """The steps in order, each skipped when its guards show it cannot match."""
    lower: str | Literal[False] | None = None  # facts about the current text, recomputed after it changes
    for needs_digit, lower_case, lookup, guard, step_prefilter, find, sub, repl, unchanged, strip in steps:
        if needs_digit:
            if has_digit is None:
                has_digit = _DIGIT.search(text) is not None
            if not has_digit:
                if strip:
                    text = text.strip()
                continue
        if lookup is not None:
            if lower_case:
                if lower is None:  # False: not ASCII, Unicode case folding, cannot tell
                    lower = text.lower() if plain or text.isascii() else False
                haystack = lower
            else:
                haystack = text
            if haystack is False:
                found = True
            elif lookup is _REGEX:
                found = guard.search(haystack) is not None
            elif lookup is _ANY_SUBSTRING:
                found = False
                for literal in guard:
                    if literal in haystack:
                        found = True
                        break
            else:
                found = guard in haystack
            if not found or (step_prefilter is not None and step_prefilter.search(text) is None):
                if strip:
                    text = text.strip()
                continue
        elif step_prefilter is not None and step_prefilter.search(text) is None:
            if strip:
                text = text.strip()
            continue
        new = _apply(text, find, sub, repl, unchanged, strip)
        if new != text:
            text, lower, has_digit = new, None, None
    return text


def _apply(text: str, find: str | None, sub: Callable, repl: str, unchanged: Callable | None, strip: bool) -> str:
    """One rewrite (a `Step` from `find` on) on a text its guards (or the scanner) let through."""
    if find is not None:
        new = text.replace(find, repl)
    elif unchanged is not None and unchanged(text):
        new = text
    else:
        new = sub(repl, text)
    return new.strip() if strip else new


# --------------------------------------------------------------------------- the RE2 scanner of a phase


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
    steps: tuple[Step, ...]  # unguarded where a hit proves the step can change the text
    guarded: tuple[bool, ...]


def _scanner(rewrites: tuple[CompiledRewrite, ...], plain_steps: tuple[Step, ...]) -> Scanner | None:
    """The phase's scanner, or None without google-re2 (then every step runs its own guards)."""
    patterns = [rewrite_pattern(rw.find, rw.regex, rw.repl, rw.strip) for rw in rewrites]
    if all(pattern is None for pattern in patterns):
        return None  # nothing for RE2 to rule out
    regex_set, taken = re2_set([pattern if pattern is not None else "" for pattern in patterns])
    if regex_set is None or len(taken) != len(rewrites):
        return None
    guarded = tuple(pattern is None for pattern in patterns)
    steps = tuple(
        step if keep_guards else step._replace(needs_digit=False, lower=False, lookup=None, guard=None, prefilter=None)
        for step, keep_guards in zip(plain_steps, guarded)
    )
    return Scanner(set_match(regex_set), _packed(steps), guarded)


# --------------------------------------------------------------------------- one search


@dataclass(frozen=True)
class Search:
    """Whether a regex matches somewhere in a text. RE2 answers when it reads the pattern exactly
    like Python's `re`: for printable-ASCII text, or for any text when the pattern is only
    literals (a substring search either way). Its set also looks for control characters, so the
    one pass tells whether ASCII text is printable (see `found`)."""

    regex: re.Pattern
    re2_match: Callable[[bytes], Any] | None = None  # an RE2 set's Match: [the regex, CONTROL]
    any_text: bool = False

    def found(self, text: str, plain: bool | None = None) -> bool:
        """`plain`: whether `text` is printable ASCII (`is_plain`), when the caller knows."""
        if self.re2_match is not None and (self.any_text or (plain is not False and text.isascii())):
            hits = self.re2_match(text.encode()) or ()
            if self.any_text or plain or 1 not in hits:  # ASCII without a control character: plain
                return 0 in hits
        return self.regex.search(text) is not None


def compile_search(pattern: str, fast: bool) -> Search:
    """A `Search` for the regex; `fast=False`: Python's `re` only."""
    regex = re.compile(pattern)
    regex_set, taken = re2_set([re2_syntax(regex), CONTROL]) if fast else (None, [])
    if taken != [0, 1]:
        return Search(regex)
    return Search(regex, set_match(regex_set), literals_only(regex))
