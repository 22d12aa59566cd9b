"""Text from the data shown in a GitHub Markdown comment, inert: a prompt in a PR comment is shown as
written and does nothing else. Raw, a prompt holding `@user` or `@org/team` pinged them, `#12` or
`owner/repo#12` put a cross-reference on another issue, `</details>` or an unclosed `<!--` broke or hid
the rest of the comment, a backtick in an id left its code span, and a bidi override (U+202E) or a
zero-width character made a caption read as other text than it is.
"""

from __future__ import annotations

import json
import re
import unicodedata

ZERO_WIDTH_SPACE = "\u200b"
# a line break of any kind ends a table row; control characters are not text a reader can see
_BREAKS = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]+")
# GitHub's Markdown meaning, escaped with a backslash (CommonMark: any ASCII punctuation may be)
_MARKDOWN = re.compile(r"([\\`*_\[\]()!~|])")
_HTML = {"&": "&amp;", "<": "&lt;", ">": "&gt;"}
# Unicode format characters (category Cf: bidi overrides and isolates, zero-width spaces and non-joiners, tag
# characters, the byte-order mark) show nothing themselves and reorder or hide what a reader sees; they are
# shown as their escape. The zero-width joiner alone is kept: emoji sequences (a family, a profession) need it.
_KEPT_FORMAT = "\u200d"


def _visible(char: str) -> str:
    if unicodedata.category(char) != "Cf" or char in _KEPT_FORMAT:
        return char
    return f"\\u{ord(char):04x}" if ord(char) <= 0xFFFF else f"\\U{ord(char):08x}"


def one_line(value: object, width: int) -> str:
    """str(value) on one line (breaks and controls as one space, format characters as their escape), at
    most `width` characters."""
    return "".join(map(_visible, _BREAKS.sub(" ", str(value))[:width]))[:width]


def cell(value: object, width: int = 160) -> str:
    """A table cell that shows `value` as plain text: no HTML, link, emphasis, mention or reference."""
    text = one_line(value, width)
    text = "".join(_HTML.get(c, c) for c in text)
    text = _MARKDOWN.sub(r"\\\1", text)
    # a zero-width space after @ and # keeps the characters while GitHub links no user, team or issue
    return text.replace("@", "@" + ZERO_WIDTH_SPACE).replace("#", "#" + ZERO_WIDTH_SPACE)


def code(value: object, width: int = 160) -> str:
    """`value` as a code span in a table cell: a fence longer than any run of backticks inside it (a
    backtick in an id closed the span), `|` escaped (GitHub splits the row at it even inside a span)."""
    text = one_line(value, width)
    fence = "`" * (max((len(run) for run in re.findall(r"`+", text)), default=0) + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text.replace('|', chr(92) + '|')}{pad}{fence}"


def metrics_table(dvc_json: str, base: str, head: str) -> list[str] | None:
    """`dvc metrics diff --json`'s output as a Markdown table, every cell shown as text (None when it is not
    that JSON): the metric names and values are the PR's own files, and DVC's --md table pasted them raw
    (`@everyone` pinged, `<!--` hid the rest of the comment, `|` split a row)."""
    from scripts.lib.nesting import loads_json

    try:
        metrics = loads_json(dvc_json or "{}")
    except ValueError:
        return None
    if not isinstance(metrics, dict):
        return None
    rows = [
        (path, name, change)
        for path, found in sorted(metrics.items())
        if isinstance(found, dict)
        for name, change in sorted(found.items())
        if isinstance(change, dict)
    ]
    if not rows:
        return ["No metric changed."]
    lines = [f"| Path | Metric | {cell(base, 80)} | {cell(head, 80)} | Change |", "|---|---|---:|---:|---:|"]
    for path, name, change in rows:
        values = (_metric(change.get(key)) for key in ("old", "new", "diff"))
        lines.append(f"| {cell(path, 120)} | {cell(name, 120)} | " + " | ".join(cell(v, 80) for v in values) + " |")
    return lines


def _metric(value: object) -> str:
    """A value as `dvc metrics diff` shows it: `-` for none, numbers rounded to 5 decimals (its --precision)."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return str(round(value, 5))
    return value if isinstance(value, str) else json.dumps(value)
