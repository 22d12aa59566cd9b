"""RE2 (google-re2) for the regex engine: one pass over printable-ASCII text finds which of many
regexes can match, in C.

On such text \\s, \\w, \\b and case folding mean the same in RE2 and Python's `re`, so a regex is
handed to RE2 only in syntax both read alike; lookarounds and backreferences RE2 lacks are rewritten
for it only where that is exact. Without google-re2 every function here says so (None, or an empty
set) and the engine runs each regex with its own guards: same results.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

_RE2_UNSAFE = ("[:", "{,", "(?x", "(?a", "(?L", "(?u", "\\Z", "\\u", "\\U", "\\N")

# The characters that make ASCII text not printable (see `is_plain`), as an RE2 pattern.
CONTROL = r"[\x00-\x1f\x7f]"

# RE2 patterns for rewrites that often match without changing the text: on printable-ASCII text
# the rewrite can only change it where this matches (tests check each on random text).
CHANGES_WHEN_PLAIN: dict[tuple[str, str], str] = {
    (r"\s+", " "): "  ",
    (r"\s*([^\w\s,\.!\?])(?:\s+|$)", r"\1"): r"[\"-+\-/:->@\[-\^`{-~] | [\"-+\-/:->@\[-\^`{-~]$",
}


def rewrite_pattern(find: str | None, regex: re.Pattern | None, repl: str, strip: bool) -> str | None:
    """An RE2 pattern that matches printable-ASCII text wherever a rewrite (replace `find`, or
    substitute `regex` by `repl`, then trim when `strip`) could change it, or None. A step that trims
    can also change text with whitespace at either end."""
    pattern: str | None
    if find is not None:
        pattern = re.escape(find)
    elif regex is None:
        return None
    else:
        pattern = CHANGES_WHEN_PLAIN.get((regex.pattern, repl)) or re2_syntax(regex)
    if pattern is None:
        return None
    return f"(?:{pattern})|^\\s|\\s$" if strip else pattern


def re2_syntax(regex: re.Pattern) -> str | None:
    """The regex as an RE2 pattern that matches the same printable-ASCII texts, or None. On such
    text \\s, \\w, \\b and case folding agree; only syntax both engines read alike passes (no
    POSIX classes or "{,n}", which RE2 reads differently). Lookarounds and backreferences RE2
    lacks are rewritten where that is exact (`without_edge_lookarounds`, `doubled_character`)."""
    if any(x in regex.pattern for x in _RE2_UNSAFE) or regex.flags & ~(re.IGNORECASE | re.UNICODE):
        return None
    try:
        from re import _parser as parser  # type: ignore[attr-defined]  # typeshed lacks the private re._parser
    except ImportError:
        return None
    pattern = without_edge_lookarounds(regex.pattern, parser) or doubled_character(regex, parser) or regex.pattern
    return pattern if _plain_syntax(parser.parse(pattern), parser) else None


def without_edge_lookarounds(pattern: str, parser) -> str | None:
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
        new = new[:ahead_at] + "(?:" + new[ahead_at + 3 :]
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


def doubled_character(regex: re.Pattern, parser) -> str | None:
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
    categories = {
        parser.CATEGORY_DIGIT,
        parser.CATEGORY_NOT_DIGIT,
        parser.CATEGORY_WORD,
        parser.CATEGORY_NOT_WORD,
        parser.CATEGORY_SPACE,
        parser.CATEGORY_NOT_SPACE,
    }
    anchors = {
        parser.AT_BOUNDARY,
        parser.AT_NON_BOUNDARY,
        parser.AT_BEGINNING,
        parser.AT_END,
        parser.AT_BEGINNING_STRING,
    }
    for op, av in items:
        if op in (parser.LITERAL, parser.NOT_LITERAL, parser.ANY):
            continue
        if op is parser.IN:
            if not all(
                kind in (parser.LITERAL, parser.RANGE, parser.NEGATE) or (kind is parser.CATEGORY and arg in categories)
                for kind, arg in av
            ):
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
            if (av[1] is not parser.MAXREPEAT and av[1] > 1000) or not _plain_syntax(av[2], parser):
                return False  # RE2 caps counted repeats at 1000
        else:
            return False
    return True


def set_match(regex_set: Any) -> Callable[[bytes], Any]:
    """The set's Match for bytes. The binding's public Match wraps the compiled set's own with a
    type check per call, a measurable share of a cleaned prompt's time; it is the fallback."""
    return getattr(regex_set, "_set", regex_set).Match


def re2_set(patterns: list[str | None]) -> tuple[Any, list[int]]:
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
