"""What a regex needs in a text before it can match or change it, read off the regex once.

- `guards`: every match needs a digit and/or one of a few literals (from the parse tree, Python's
  private `re._parser`); a text without them skips the regex.
- `prefilter`: the regex minus a leading \\b, which the engine scans for faster.
- `UNCHANGED_WHEN` / `UNCHANGED_WHEN_PLAIN`: cheap tests proving a busy rewrite of the shipped rule
  sets would return its input unchanged; `SAME_ON_PLAIN`: faster regexes with the same result.

Conservative throughout: what the walk does not understand adds no guard. tests/test_regex_engine.py
checks each entry against the plain regex on real and random text.
"""

from __future__ import annotations

import functools
import operator
import re
from collections.abc import Callable
from typing import NamedTuple


def is_plain(text: str) -> bool:
    """Printable ASCII: whitespace is only " ", \\w is [A-Za-z0-9_], case folding is lower()."""
    return text.isascii() and text.isprintable()


def literals_only(regex: re.Pattern) -> bool:
    """A case-sensitive literal, or an alternation of them."""
    from re import _parser as parser  # type: ignore[attr-defined]  # typeshed lacks the private re._parser

    tree = list(parser.parse(regex.pattern))
    branches = tree[0][1][1] if len(tree) == 1 and tree[0][0] is parser.BRANCH else [tree]
    return not regex.flags & re.IGNORECASE and all(op is parser.LITERAL for branch in branches for op, _ in branch)


# --------------------------------------------------------------------------- guards: what every match needs


class Guards(NamedTuple):
    """What any match of a regex must contain: a digit, and/or one of `literals` (lowercase when
    `ignore_case`); `plain_literals`, when set, is a stronger `literals` for printable-ASCII text,
    where \\s can only be " "."""

    needs_digit: bool = False
    literals: tuple[str, ...] = ()
    plain_literals: tuple[str, ...] = ()
    ignore_case: bool = False


def guards(regex: re.Pattern) -> Guards:
    """The regex's `Guards`, read off its parse tree. Conservative: what the walk does not understand
    adds no guard."""
    try:
        from re import _parser as parser  # type: ignore[attr-defined]  # Python's own regex parser (private; 3.11+)
    except ImportError:
        return Guards()  # no guards: every regex runs, same results
    ignore_case = bool(regex.flags & re.IGNORECASE)
    tree = parser.parse(regex.pattern)
    needs_digit, options = _required(tree, parser, plain=False)
    _, plain_options = _required(tree, parser, plain=True)
    best, best_plain = _best(options, ignore_case), _best(plain_options, ignore_case)
    if min(map(len, best_plain), default=0) <= min(map(len, best), default=0):
        best_plain = ()  # no stronger than the general guard
    return Guards(needs_digit, best, best_plain, ignore_case)


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
    needs_digit, run = False, []
    options: list[tuple[str, ...]] = []
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
        return all(
            kind is not parser.NEGATE and not (kind is parser.CATEGORY and arg is parser.CATEGORY_WORD)
            for kind, arg in av
        )
    if op is parser.SUBPATTERN and not (av[1] or av[2]) and av[3]:
        return _starts_with_a_character(av[3][0], parser)
    if op in (parser.MAX_REPEAT, parser.MIN_REPEAT) and av[0] >= 1 and av[2]:
        return _starts_with_a_character(av[2][0], parser)
    return False


_LEADING_BOUNDARY = re.compile(r"(\(\?[aiLmsux]+\))?\\b")


def prefilter(regex: re.Pattern) -> re.Pattern | None:
    """The regex without its leading \\b, when it has one: a match of the whole regex is a match
    of this one at the same place, so when this finds nothing the rewrite is skipped. It is worth
    it because the engine can only jump ahead to a pattern's first character (a literal or a
    class) when no assertion comes first: `n\\d+\\b` scans ~8x faster than `\\b(n\\d+)\\b`."""
    head = _LEADING_BOUNDARY.match(regex.pattern)
    if head is None:
        return None
    try:
        from re import _parser as parser  # type: ignore[attr-defined]  # typeshed lacks the private re._parser
    except ImportError:
        return None
    rest = (head.group(1) or "") + regex.pattern[head.end() :]
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
UNCHANGED_WHEN_PLAIN: dict[tuple[str, str], Callable[[str], bool]] = {
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


UNCHANGED_WHEN: dict[tuple[str, str], Callable[[str], bool]] = {
    key: test if key in _ANY_TEXT else _only_if_plain(test) for key, test in UNCHANGED_WHEN_PLAIN.items()
}


# Faster regexes with the same substitution on printable-ASCII text, for (pattern, repl) pairs of
# the default params that run often: `\\s+` -> " " matches every single space and writes it back;
# only runs of two or more change anything (tests check each pair on random text).
SAME_ON_PLAIN: dict[tuple[str, str], re.Pattern] = {
    (r"\s+", " "): re.compile(" {2,}"),
}
