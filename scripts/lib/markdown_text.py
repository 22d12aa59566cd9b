"""Text from the data shown in a GitHub Markdown comment, inert: a prompt in a PR comment is shown as
written and does nothing else. Raw, a prompt holding `@user` or `@org/team` pinged them, `#12` or
`owner/repo#12` put a cross-reference on another issue, `</details>` or an unclosed `<!--` broke or hid
the rest of the comment, a backtick in an id left its code span, and a bidi override (U+202E) or a
zero-width character made a caption read as other text than it is.
"""

from __future__ import annotations

import bisect
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


# a name of letters, digits and underscores that starts with a letter: inert in Markdown (an underscore inside
# a word opens no emphasis, CommonMark), so `guidance_scale` is shown without backslashes
_IDENTIFIER = re.compile(r"[A-Za-z][A-Za-z0-9_]*")


def name_text(value: object, width: int = 160) -> str:
    """A name (a settings key) as text: as written when it is a plain identifier, else cell's escaping."""
    text = str(value)
    return text if len(text) <= width and _IDENTIFIER.fullmatch(text) else cell(value, width)


def code_span(value: object, width: int = 160) -> str:
    """`value` as an inline code span: a fence longer than any run of backticks inside it (CommonMark; a
    backtick in an id or a git tag closed a one-backtick span early and the rest read as Markdown)."""
    text = one_line(value, width)
    fence = "`" * (_longest_run(text, "`") + 1)
    # one space each side is stripped from a span that has both: a padding space keeps a leading backtick
    # apart from the fence, and a value's own outer spaces
    edge = text[:1] == "`" or text[-1:] == "`" or (text[:1] == text[-1:] == " " and text.strip() != "")
    pad = " " if edge else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def code(value: object, width: int = 160) -> str:
    """`value` as a code span in a table cell: code_span with `|` escaped (GitHub splits the row at it even
    inside a span, and shows `\\|` there as `|`); outside a table use code_span."""
    return code_span(value, width).replace("|", chr(92) + "|")


def fenced(text: str, info: str = "") -> list[str]:
    """The lines of a fenced code block showing `text` as is: its fence is longer than any run of backticks
    in it (a citation holding a ``` line closed the block, and the rest read as Markdown)."""
    fence = "`" * max(3, _longest_run(text, "`") + 1)
    return [fence + info, text, fence]


def _longest_run(text: str, char: str) -> int:
    return max((len(run) for run in re.findall(f"{re.escape(char)}+", text)), default=0)


# A link target a card may hold: an http(s) URL with a plain host (no user@ before it: `https://github.com@evil`
# reads as one site and opens another) and no space, quote, parenthesis, angle bracket or control character
# (each ends the link early, or opens raw HTML), or a relative path of plain characters (no scheme, so no
# `javascript:`, and no leading `/`: `//evil.example` is another site).
_URL = re.compile(r"https?://[A-Za-z0-9.-]+(?::[0-9]{1,5})?(?:[/?#][A-Za-z0-9._~:/?#@!$&*+,;=%-]*)?", re.IGNORECASE)
_RELATIVE = re.compile(r"[A-Za-z0-9_.~-][A-Za-z0-9_.~/%+#-]*")


def link_target(value: str) -> str | None:
    """`value` when a Markdown link may point at it as written (see _URL), else None."""
    return value if len(value) <= 2000 and (_URL.fullmatch(value) or _RELATIVE.fullmatch(value)) else None


def link(text: object, target: str | None) -> str:
    """A link showing `text` as text, or the text alone when there is no target link_target accepts."""
    shown = cell(text, 300)
    return f"[{shown}]({target})" if target and link_target(target) else shown


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


_FENCE = re.compile(r" {0,3}(`{3,}|~{3,})")


def _fence_opened(line: str) -> str:
    """The run of backticks or tildes that opens a fenced code block on `line`, or "". A backtick run
    followed by a backtick on its line opens none (CommonMark: the info string holds no backtick; ```a`b
    is an inline code span, and what followed was taken for code)."""
    opened = _FENCE.match(line)
    if opened is None or (opened.group(1)[0] == "`" and "`" in line[opened.end() :]):
        return ""
    return opened.group(1)


def _fence_closes(line: str, fence: str) -> bool:
    """Whether `line` closes the block `fence` opened: a bare run of its character, at least as long."""
    found = _FENCE.match(line)
    run = found.group(1) if found and not line[found.end() :].strip() else ""
    return run[:1] == fence[0] and len(run) >= len(fence)


_ATX_H1 = re.compile(r"( {0,3})#(?=[ \t]|$)")
_SETEXT_H1 = re.compile(r" {0,3}=+[ \t]*")
# a line a setext underline turns into a heading: paragraph text, not a list item, quote, table row or heading
_PARAGRAPH = re.compile(r" {0,3}(?![-*+>|#]|[0-9]{1,9}[.)]|\s)\S")


def h1_demoted(markdown: str) -> str:
    """`markdown` with every level-1 heading made a lower one, outside fenced code: `# T` as `### T`, a
    setext one (`T` over a `===` line) as level 2 (`---`). Pasted under a heading of another card, its h1
    was a second title; the first line's escaped a `"\\n# "` replace, a `===` underline every one."""
    lines, fence, previous = [], "", ""
    for line in markdown.split("\n"):
        opened = _fence_opened(line)
        if fence:
            fence = "" if _fence_closes(line, fence) else fence
        elif opened:
            fence = opened
        elif _ATX_H1.match(line):
            line = _ATX_H1.sub(r"\1###", line, count=1)
        elif _SETEXT_H1.fullmatch(line) and _PARAGRAPH.match(previous):
            line = line.replace("=", "-")
        lines.append(line)
        previous = "" if fence or opened else line
    return "\n".join(lines)


# a blank line ends a paragraph, and with it any code span (CommonMark)
_BLANK_LINE = re.compile(r"\n[ \t]*\n")


def authored(markdown: str) -> str:
    """An author's Markdown (a recipe's `description`) as a card pastes it under the card's own title: its
    ordinary Markdown kept (emphasis, lists, links, code, headings below h1), what would hide text or
    change the card's structure made inert. Raw HTML, comments and autolinks are shown as text (`<` as
    `&lt;` outside code: `<!--` hid the rest of the card, `<details>` folded it); every h1 is demoted
    (h1_demoted: a second title); a fence left open is closed (it made the rest of the card code)."""
    out: list[str] = []
    block: list[str] = []
    fence = ""
    for line in markdown.replace("\r\n", "\n").replace("\r", "\n").split("\n"):
        if fence:
            out.append(line)
            fence = "" if _fence_closes(line, fence) else fence
        elif fence := _fence_opened(line):
            out += [_html_as_text("\n".join(block))] if block else []
            out.append(line)
            block = []
        else:
            block.append(line)
    out += [_html_as_text("\n".join(block))] if block else []
    if fence:
        out.append(fence)
    return h1_demoted("\n".join(out))


def _html_as_text(text: str) -> str:
    """`text` (Markdown outside fenced code) with each `<` outside a code span as `&lt;`, paragraph by
    paragraph (a code span never crosses a blank line): no tag, comment or autolink."""
    if "<" not in text:
        return text
    parts = _BLANK_LINE.split(text)
    breaks = _BLANK_LINE.findall(text)
    return "".join(
        _paragraph_html_as_text(part) + (breaks[n] if n < len(breaks) else "") for n, part in enumerate(parts)
    )


def _paragraph_html_as_text(text: str) -> str:
    """One paragraph's `<` outside code spans as `&lt;`. Spans are found as CommonMark finds them: the
    leftmost backtick run, closed by the next run as long (a backslash escapes a backtick outside one); a
    span over a line break is escaped too (a list item or quote on its next line ends the paragraph first)."""
    starts: dict[int, list[int]] = {}  # run length -> where each maximal backtick run of that length starts
    for found in re.finditer(r"`+", text):
        starts.setdefault(len(found.group()), []).append(found.start())
    out, i = [], 0
    while i < len(text):
        char = text[i]
        if char == "\\" and i + 1 < len(text):  # `\<` stays: an escaped `<` is text
            out.append(text[i : i + 2])
            i += 2
        elif char == "`":
            after = i
            while after < len(text) and text[after] == "`":
                after += 1
            same = starts.get(after - i, [])
            later = bisect.bisect_right(same, i)  # the next run as long closes the span (none: text)
            span = text[i : same[later] + after - i] if later < len(same) else text[i:after]
            out.append(span.replace("<", "&lt;") if "\n" in span else span)
            i += len(span)
        else:
            out.append("&lt;" if char == "<" else char)
            i += 1
    return "".join(out)


def front_matter_as_code(markdown: str) -> str:
    """A card body whose first line opens a second `---` block: that block as fenced YAML. Pasted under
    a heading it showed as a rule and its last line as a setext h2 (`key: value` over `---`)."""
    lines = markdown.split("\n")
    if not lines or lines[0].rstrip() != "---":
        return markdown
    end = next((n for n in range(1, len(lines)) if lines[n].rstrip() == "---"), None)
    if end is None:
        return markdown
    return "\n".join([*fenced("\n".join(lines[1:end]), "yaml"), *lines[end + 1 :]])
