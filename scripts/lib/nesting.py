"""Nesting depth, bounded before any JSON or YAML text is parsed.

Python's json and PyYAML's composer recurse once per level: 100k nested `[` is a RecursionError
traceback (json) or a segfault after a minute (libyaml's composer). Every reader of JSON or YAML
from a file or the network checks the text here first; no file of ours nests anywhere near the cap.
"""

from __future__ import annotations

import codecs
import json
from typing import Any

from scripts.lib.errors import shown_short

MAX_DEPTH = 200


class TooDeep(ValueError):
    """Nested deeper than MAX_DEPTH: a ValueError, so readers that count a bad record still do."""

    def __init__(self, depth: int):
        super().__init__(f"nested deeper than {depth} levels")


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


def loads_json(text: str | bytes, limit: int = MAX_DEPTH) -> Any:
    """json.loads after the depth check (ValueError, TooDeep included, for any text that is not JSON).
    A leading UTF-8 byte order mark is read past (RFC 8259 lets a parser ignore one; Notepad and other
    Windows tools write it), whether the text is still bytes or was decoded with it as U+FEFF."""
    text = text.removeprefix(codecs.BOM_UTF8) if isinstance(text, (bytes, bytearray)) else text.removeprefix("\ufeff")
    check_json_depth(text, limit)
    return json.loads(text, object_pairs_hook=_unique_keys)


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


def check_yaml_depth(events, limit: int = MAX_DEPTH):
    """Pass a YAML event stream through, raising TooDeep once collections nest deeper than `limit`
    (libyaml's parser is not recursive: the events come before anything is composed)."""
    depth = 0
    for event in events:
        name = type(event).__name__
        if name in ("MappingStartEvent", "SequenceStartEvent"):
            depth += 1
            if depth > limit:
                raise TooDeep(limit)
        elif name in ("MappingEndEvent", "SequenceEndEvent"):
            depth -= 1
        yield event
