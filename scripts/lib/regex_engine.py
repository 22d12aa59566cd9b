"""The cleaner's regex engine: named rewrites in ordered phases, run fast and exactly as Python's `re`.

A `Phase` is an ordered list of `Rewrite`s (a plain-text replacement or a regex substitution);
`run_phase` applies them in order. A `Search` answers whether a regex matches somewhere. Both
give exactly what running every regex with Python's `re` gives (`fast=False`); the speed (issue
4: >= 20k prompts/s on one core) comes from skipping what cannot change the text:

- guards read off each regex's parse tree (Python's private `re._parser`) when it is compiled:
  every match needs a digit and/or one of a few literals; a text without them skips the regex;
- a prefilter (the regex minus a leading \\b) the engine can scan for faster;
- for the default params' busiest regexes, a cheap test proving the regex would change nothing;
- on printable-ASCII text (most prompts), an RE2 set per phase (`Scanner`, google-re2) that finds
  in one pass the few rewrites that can change the text; only those run, with Python's `re`.
  Lookarounds and backreferences RE2 lacks are rewritten for it only where that is exact.

Without google-re2 (or Python's `re._parser`) the shortcuts it needs are left out: same results.
tests/test_regex_engine.py checks each shortcut against the plain regex on real and random text.
scripts/clean.py holds the rules themselves (docs/cleaning.md).
"""
from __future__ import annotations

import functools
import operator
import re
from dataclasses import dataclass
from typing import Any, Callable

from scripts.lib.errors import DataError


def is_plain(text: str) -> bool:
    """Printable ASCII: whitespace is only " ", \\w is [A-Za-z0-9_], case folding is lower()."""
    return text.isascii() and text.isprintable()


_DIGIT = re.compile(r"\d")


# --------------------------------------------------------------------------- compiling

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


def compile_rewrite(name: str, *, find: str | None = None, pattern: str | None = None, repl: str = "",
                    strip: bool = False, fast: bool = True, where: str = "rewrite") -> Rewrite:
    """One rewrite: replace the plain text `find`, or substitute the regex `pattern`, by `repl`;
    `strip` trims the result. `fast=False` leaves out the guards (same results, slower). A bad
    pattern or repl is a DataError that starts with `where`."""
    if find is not None:
        return Rewrite(name, lambda text: text.replace(find, repl), strip, literals=(find,) if fast else (),
                       adds_digits=bool(_DIGIT.search(repl)), find=find, repl=repl, keeps_plain=is_plain(repl))
    # group references (\\1, \\g<name>) copy what matched; only the rest of `repl` is new text
    new_text = re.sub(r"\\(\d+|g<[^>]*>)", "", repl)
    regex = _regex(pattern, where)
    try:
        regex.sub(repl, "")  # a bad group reference in `repl` fails here, not on row 1,000,000
    except (re.error, IndexError) as exc:
        raise DataError(f"{where}: bad repl {repl!r} ({exc})") from None
    sub = regex.sub
    needs_digit, literals, plain_literals, ignore_case = _guards(regex) if fast else (False, (), (), False)
    unchanged = unchanged_plain = None
    if fast and (regex.pattern, repl) in _UNCHANGED_WHEN:
        unchanged, unchanged_plain = _UNCHANGED_WHEN[regex.pattern, repl], _UNCHANGED_WHEN_PLAIN[regex.pattern, repl]
    return Rewrite(name, lambda text: sub(repl, text), strip, needs_digit, literals, ignore_case, plain_literals,
                   adds_digits=bool(_DIGIT.search(new_text)), regex=regex, repl=repl, unchanged=unchanged,
                   unchanged_plain=unchanged_plain, keeps_plain=is_plain(new_text) and "\\" not in new_text,
                   prefilter=_prefilter(regex) if fast else None)


def _regex(pattern: str, where: str) -> re.Pattern:
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise DataError(f"{where}: bad regex {pattern!r} ({exc})") from None


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


def compile_phase(rewrites: tuple[Rewrite, ...], fast: bool = True) -> Phase:
    """The rewrites as one phase for `run_phase`; `fast=False`: no RE2 scanner."""
    steps = tuple(_step(rw, plain=False) for rw in rewrites)
    plain_steps = tuple(_step(rw, plain=True) for rw in rewrites) if all(rw.keeps_plain for rw in rewrites) else None
    if any(rw.adds_digits for rw in rewrites) or not any(step[0] for step in steps):
        without = plain_without = None
    else:
        without = _without_digits(steps)
        plain_without = _without_digits(plain_steps) if plain_steps is not None else None
    scanner = _scanner(rewrites, plain_steps) if fast and plain_steps is not None else None
    return Phase(rewrites, steps, without, plain_steps, plain_without, scanner)


# How a step's guard reads the text (bit flags): which haystack, and how it looks for the
# literals (one substring; a few substrings in turn; a regex search).
_LOWER, _REGEX, _ANY = 1, 2, 4


def _step(rw: Rewrite, plain: bool) -> tuple:
    """(needs_digit, guard kind, guard, prefilter, find, regex sub, repl, unchanged, strip) for `run_phase`.
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


# --------------------------------------------------------------------------- one search

@dataclass(frozen=True)
class Search:
    """Whether a regex matches somewhere in a text. RE2 answers when it reads the pattern exactly
    like Python's `re`: for printable-ASCII text, or for any text when the pattern is only
    literals (a substring search either way). Its set also looks for control characters, so the
    one pass tells whether ASCII text is printable (see `found`)."""

    regex: re.Pattern
    re2_match: Callable[[bytes], Any] | None = None  # an RE2 set's Match: [the regex, _CONTROL]
    any_text: bool = False

    def found(self, text: str, plain: bool | None = None) -> bool:
        """`plain`: whether `text` is printable ASCII (`is_plain`), when the caller knows."""
        if self.re2_match is not None and (self.any_text or plain is not False and text.isascii()):
            hits = self.re2_match(text.encode()) or ()
            if self.any_text or plain or 1 not in hits:  # ASCII without a control character: plain
                return 0 in hits
        return self.regex.search(text) is not None


# The characters that make ASCII text not printable (see `is_plain`), as an RE2 pattern.
_CONTROL = r"[\x00-\x1f\x7f]"


def compile_search(pattern: str, fast: bool) -> Search:
    """A `Search` for the regex; `fast=False`: Python's `re` only."""
    regex = re.compile(pattern)
    re2_set, taken = _re2_set([_re2_syntax(regex), _CONTROL]) if fast else (None, [])
    if taken != [0, 1]:
        return Search(regex)
    return Search(regex, _set_match(re2_set), _literals_only(regex))


def _literals_only(regex: re.Pattern) -> bool:
    """A case-sensitive literal, or an alternation of them."""
    from re import _parser as parser

    tree = list(parser.parse(regex.pattern))
    branches = tree[0][1][1] if len(tree) == 1 and tree[0][0] is parser.BRANCH else [tree]
    return not regex.flags & re.IGNORECASE and all(op is parser.LITERAL for branch in branches for op, _ in branch)


# --------------------------------------------------------------------------- guards: what every match needs

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


# --------------------------------------------------------------------------- proofs that a rewrite changes nothing

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
# regex on real and random text. Each test here holds for printable-ASCII text (see `is_plain`),
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
    return lambda text: is_plain(text) and test(text)


_UNCHANGED_WHEN: dict[tuple[str, str], Callable[[str], bool]] = {
    key: test if key in _ANY_TEXT else _only_if_plain(test) for key, test in _UNCHANGED_WHEN_PLAIN.items()
}


# --------------------------------------------------------------------------- RE2: the one-pass scanner

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
