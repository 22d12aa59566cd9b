"""Nesting depth, bounded before any JSON or YAML text is parsed.

Python's json and PyYAML's composer recurse once per level: 100k nested `[` is a RecursionError
traceback (json) or a segfault after a minute (libyaml's composer). Every reader of JSON or YAML
from a file or the network checks the text here first; no file of ours nests anywhere near the cap.
"""

from __future__ import annotations

import codecs
import json
import math
import re
import sys
from pathlib import Path
from typing import Any

from scripts.lib.errors import DataError, shown, shown_short

MAX_DEPTH = 200
# values, lists and mappings in one YAML text: params.yaml has ~2,000, 10,000 releases of a few steps ~500,000;
# 10**6 empty steps (`[{}, {}, ...]`, 4 MB) took over a minute to build and check before any check refused it
MAX_YAML_NODES = 1_000_000
# a report of ours (a release's stats.json, a clean report) is under a kilobyte: 60 MB of `[]` (within the 64 MB
# config cap) parsed into 1.5 GB of Python lists, 14-19 s. summary, history-table and plots read with this cap.
MAX_REPORT_BYTES = 1 << 20


class TooDeep(ValueError):
    """Nested deeper than MAX_DEPTH: a ValueError, so readers that count a bad record still do."""

    def __init__(self, depth: int):
        super().__init__(f"nested deeper than {depth} levels")


class TooManyNodes(TooDeep):
    """More than MAX_YAML_NODES nodes: a TooDeep, so every reader that bounds a YAML text's nesting bounds this too."""

    def __init__(self, nodes: int):
        ValueError.__init__(self, f"more than {nodes:,} YAML values, lists and mappings; refusing to read it")


def check_json_depth(text: str | bytes, limit: int = MAX_DEPTH) -> None:
    """TooDeep when the brackets of a JSON text (outside its strings) nest deeper than `limit`."""
    if isinstance(text, (bytes, bytearray)):
        text = text.decode("utf-8", "replace")
    if text.count("[") + text.count("{") <= limit:  # the common case: nothing to scan
        return
    depth, in_string, escaped = 0, False, False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            if depth > limit:
                raise TooDeep(limit)
        elif char in "]}":
            depth -= 1


def loads_json(text: str | bytes, limit: int = MAX_DEPTH, non_finite: str = "refuse") -> Any:
    """json.loads after the depth check (ValueError, TooDeep included, for any text that is not JSON).
    A leading UTF-8 byte order mark is read past (RFC 8259 lets a parser ignore one; Notepad and other
    Windows tools write it), whether the text is still bytes or was decoded with it as U+FEFF.
    Refused, as RFC 8259 has no word for them (Python's json reads them; other readers refuse, or take them for
    null): NaN, Infinity, -Infinity, a number too large for a float (1e999 read as inf), and a lone surrogate
    escape ("\\ud800": no character, not UTF-8; a later write of it failed as "not valid UTF-8").
    `non_finite`: "null" reads NaN, Infinity and an overflowing number as null, for a column of a published
    dataset that Python's json wrote (OpenPrompts' raw_data: its rows stay, ingested as null); "keep" reads them
    as Python does, for a file a library wrote and reads back so (diffusers' and transformers' model configs)."""
    if isinstance(text, (bytes, bytearray)):  # json.loads would decode with surrogatepass: the raw bytes of one
        raw = bytes(text).removeprefix(codecs.BOM_UTF8)
        text = raw.decode(json.detect_encoding(raw))  # strict: a UnicodeDecodeError is a ValueError
    text = text.removeprefix("\ufeff")
    check_json_depth(text, limit)
    try:
        value = json.loads(text, object_pairs_hook=_unique_keys, **_NUMBERS[non_finite])
    except ValueError as exc:  # Python's own words advise sys.set_int_max_str_digits(), no advice for a user
        if "integer string conversion" not in str(exc):
            raise
        raise ValueError(f"an integer of more than {sys.get_int_max_str_digits():,} digits") from None
    if _SURROGATE_ESCAPE.search(text):  # the common case: no such escape, no walk
        _check_no_lone_surrogate(value)
    return value


_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def _not_json(word: str) -> Any:
    raise ValueError(f"{word} is not a JSON number (RFC 8259 has no NaN or Infinity)")


def _finite(literal: str) -> float:
    number = float(literal)
    if not math.isfinite(number):
        raise ValueError(f"the number {shown_short(literal)} is too large for a float (read as {number})")
    return number


def _null(word: str) -> None:
    return None


def _finite_or_null(literal: str) -> float | None:
    number = float(literal)
    return number if math.isfinite(number) else None


_NUMBERS: dict[str, dict[str, Any]] = {
    "refuse": {"parse_constant": _not_json, "parse_float": _finite},
    "null": {"parse_constant": _null, "parse_float": _finite_or_null},
    "keep": {},
}


def _check_no_lone_surrogate(value: Any) -> None:
    """ValueError for a string (a value or a key) holding half a UTF-16 surrogate pair: a pair of escapes was
    joined into its one character by json.loads, so any surrogate left is alone."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, str) and not _encodes(item):
            found = next(char for char in item if 0xD800 <= ord(char) <= 0xDFFF)  # a UnicodeDecodeError, as its
            reason = f"a lone surrogate \\u{ord(found):04x} in a string (no character)"  # raw bytes are: not UTF-8
            raise UnicodeDecodeError("utf-8", found.encode("utf-8", "surrogatepass"), 0, 3, reason)


def _encodes(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def dumps_json(value: Any, target: Path | str, **options: Any) -> str:
    """json.dumps refusing NaN and Infinity (allow_nan=False: Python writes them, other JSON readers refuse the
    file) and a lone surrogate, as a DataError naming `target`, the file it was meant for; U+2028, U+2029 and
    U+0085 escaped whatever `ensure_ascii` (line_safe_json)."""
    try:
        text = json.dumps(value, allow_nan=False, **options)
        if _SURROGATE_ESCAPE.search(text) or not _encodes(text):
            _check_no_lone_surrogate(value)
    except ValueError as exc:
        raise DataError(f"{shown(target)}: {exc}; refusing to write it (not JSON)") from None
    return line_safe_json(text)


# Characters JSON lets stay raw in a string that str.splitlines (and JavaScript before ES2019) end a line at: a
# metadata.jsonl record holding one was read as two torn records by such a reader. Escaped, json.loads gives
# the same string back. (VT, FF and 0x1C-0x1E, which splitlines also ends a line at, json.dumps escapes itself.)
_LINE_SEPARATORS = ("\u2028", "\u2029", "\u0085")


def line_safe_json(text: str) -> str:
    """JSON text `text` (json.dumps's, any `ensure_ascii`) with U+2028, U+2029 and U+0085 as \\u escapes: raw,
    they are only ever inside a string, where the escape means the same character."""
    for char in _LINE_SEPARATORS:
        if char in text:  # the common case: none, no copy
            text = text.replace(char, f"\\u{ord(char):04x}")
    return text


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """An object's members as a dict; a ValueError when a name comes twice. RFC 8259 leaves which one counts to
    the reader (Python takes the last, others the first or refuse), so `{"width": 1, ..., "width": 5}` was read
    as width 5 of a 1x1 image, and a sample's caption named twice took its last at exit 0: ambiguous, refused
    as a YAML mapping or a parquet column named twice is."""
    found = dict(pairs)
    if len(found) < len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise ValueError(f"the key {shown_short(repr(key))} appears twice in one object")
            seen.add(key)
    return found


JSON_KINDS = {bool: "a boolean", str: "text", int: "a number", float: "a number", list: "a list", dict: "an object"}


def json_kind(value: Any) -> str:
    """What a parsed JSON value is, as a one-line error names it ("found a list", "found text")."""
    return "null" if value is None else JSON_KINDS.get(type(value), type(value).__name__)


def json_found(value: Any) -> str:
    """json_kind, and a scalar's first characters: "found text '3'", "found a number -5", "found a list"."""
    if value is None or isinstance(value, (list, dict)):
        return json_kind(value)
    return f"{json_kind(value)} {shown_short(repr(value))}"


_NODE_EVENTS = frozenset({"ScalarEvent", "MappingStartEvent", "SequenceStartEvent", "AliasEvent"})


def check_yaml_depth(events, limit: int = MAX_DEPTH, max_nodes: int | None = None):
    """Pass a YAML event stream through, raising TooDeep once collections nest deeper than `limit`, and
    TooManyNodes once it holds more than `max_nodes` nodes (libyaml's parser is not recursive: the events come
    before anything is composed, and are counted as they come: the stream stops at the cap)."""
    depth = nodes = 0
    max_nodes = MAX_YAML_NODES if max_nodes is None else max_nodes  # read now: a test lowers the cap
    for event in events:
        name = type(event).__name__
        if name in _NODE_EVENTS:
            nodes += 1
            if nodes > max_nodes:
                raise TooManyNodes(max_nodes)
        if name in ("MappingStartEvent", "SequenceStartEvent"):
            depth += 1
            if depth > limit:
                raise TooDeep(limit)
        elif name in ("MappingEndEvent", "SequenceEndEvent"):
            depth -= 1
        yield event
