"""The shape every section shares: strict frozen models, one-line errors naming the key path."""

from __future__ import annotations

import contextlib
import difflib
import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Any, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from scripts.lib.errors import DataError, quoted
from scripts.lib.io import REF_SEPARATOR

PARAMS_FILE = Path("params.yaml")


def read_once(path: Path, read: Callable[[Path], str]) -> str:
    """The text of `path` as this command run first read it (by `read`): every later load_section of the run
    parses that text, never the name again. A stage loads several sections (summary: releases, sources, then
    dedup), and params.yaml renamed over between two loads (`dvc exp run` beside it, an editor's save) mixed two
    versions of it in one output. Outside a command run (a library call) each call reads the file anew."""
    if _RUN_READS is None:
        return read(path)
    key = os.path.abspath(path)
    if key not in _RUN_READS:
        _RUN_READS[key] = read(path)
    return _RUN_READS[key]


_RUN_READS: dict[str, str] | None = None  # the texts read in the command run now under way (one_read_per_run)


def run_reads() -> dict[str, str]:
    """The texts the command run now under way has read (read_once), by absolute path; none outside a run."""
    return dict(_RUN_READS or {})


def seed_run_reads(texts: dict[str, str]) -> None:
    """Make `texts` (another process's run_reads) this process's run: a Ray worker parses the driver's params.yaml
    text, never the file by name again (ray_workers.worker_setup)."""
    global _RUN_READS
    _RUN_READS = dict(texts)


@contextlib.contextmanager
def one_read_per_run() -> Iterator[None]:
    """A command run (cli), during which read_once keeps each file's first text; commands run one after another
    in one process (tests/helpers/commands.cli) each read the file they find."""
    global _RUN_READS
    _RUN_READS = {}
    try:
        yield
    finally:
        _RUN_READS = None


NonEmpty = Annotated[str, Field(min_length=1)]
Seed = Annotated[int, Field(ge=0, le=2**63 - 1)]
Seed32 = Annotated[int, Field(ge=0, le=2**32 - 1)]  # numpy RandomState seeds


def unknown_key_message(key: Any, known: set[str]) -> str:
    """ "unknown key 'treshold' (did you mean 'threshold'?)" - the nearest valid name, if any is close."""
    near = difflib.get_close_matches(str(key), sorted(known), n=1, cutoff=0.6)
    hint = f" (did you mean '{near[0]}'?)" if near else f" (valid: {', '.join(sorted(known))})"
    return f"unknown key {quoted(str(key))}{hint}"  # repr: a key holding a newline stays on the one line


class Section(BaseModel):
    """A mapping with a fixed set of keys: unknown keys, wrong types, NaN and inf are rejected, never coerced."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, allow_inf_nan=False)

    @model_validator(mode="before")
    @classmethod
    def _known_keys_only(cls, data: Any) -> Any:
        # pydantic's own extra="forbid" message names the bad key but not the one that was meant
        if isinstance(data, dict):
            for key in data:
                if key not in cls.model_fields:
                    raise ValueError(unknown_key_message(key, set(cls.model_fields)))
        return data

    @field_validator("*", mode="before")
    @classmethod
    def _no_nul(cls, value: Any) -> Any:
        # a path with one failed deep inside pathlib; an item of a list too (`stop_phrases: ["\0"]` passed here,
        # and the rule built of it later refused it as a traceback)
        if any("\0" in text for text in _strings(value)):
            raise ValueError("holds a NUL character (\\0), which no path or name may hold")
        return value

    def replace(self, **changes: Any) -> Self:
        """A copy with `changes` applied, validated like params.yaml (a bad value is a DataError). The keys
        left unset stay unset (rules on which keys are written: Source's kind keys, Export's options)."""
        data = {**self.model_dump(exclude_unset=True), **changes}
        return parse(type(self), data, file=f"{type(self).__name__}.replace")


def _strings(value: Any) -> Iterator[str]:
    """The strings `value` is or holds as list items, at any depth (a mapping's entries are models, checked
    by their own validator, or free-form request fields)."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _strings(item)


KEY_LIKE = re.compile(r"(?=[\w-]*[0-9])(?=[\w-]*[A-Za-z])[\w-]{20,}")  # a long run mixing letters and digits


def looks_like_a_key(text: str) -> bool:
    """Whether a value may be a credential: a known key shape (has_secret_shape) or a long token."""
    from scripts.lib.params.yaml_text import has_secret_shape

    return bool(has_secret_shape(text) or KEY_LIKE.search(text))


def no_archive_mark(path: str | None) -> str | None:
    """A folder path that no image path under it can hold '!/': "data/raw/k!/set/1.png" reads as member
    set/1.png of archive data/raw/k. Refused, so that a reference means one thing (telling them apart by
    looking for an archive file could read either when both exist)."""
    if path is not None and REF_SEPARATOR in path.replace("\\", "/") + "/":
        raise ValueError(
            f"{quoted(path)} holds a folder name ending in '!': '{REF_SEPARATOR}' marks a member inside an archive "
            "(a.tar!/1.png), so the images under it would not be found; rename the folder"
        )
    return path


# What YAML 1.2 (ruamel, as DVC reads params.yaml) makes of a key written unquoted that is no string
YAML_SCALAR_KINDS = {bool: "a boolean", int: "a number", float: "a number", type(None): "null"}


def not_a_name_message(name: Any) -> str:
    """An entry name YAML read as no string (`true:`, `1:`, `1.10:` (the number 1.1), `~:`, `2024-01-01:`): one
    line saying what it became, for a key path naming `sources[1]` or a type error about the value."""
    kind = YAML_SCALAR_KINDS.get(type(name), "a date" if type(name).__name__ in ("date", "datetime") else "no string")
    return (
        f"entry name {quoted(str(name))} is no name: YAML reads this key, written unquoted, as {kind}, not text (an "
        "unquoted 1.10 is the number 1.1); write the name in quotes"
    )


def check_name(name: str, what: str = "name") -> str:
    """A source, release or synthesize entry name becomes part of file paths (data/prompts/NAME.parquet):
    a plain name only, never `..`, a slash or an empty string, nor one ending in '.' (Windows drops a
    trailing dot from a file name: `v2.` and `v2` would be one folder)."""
    if not ENTRY_NAME.fullmatch(name):
        raise ValueError(
            f"{what} {quoted(name)} is not a plain name (ASCII letters, digits, '_', '-', '.'; it becomes part of file paths)"
        )
    if name.endswith("."):
        raise ValueError(
            f"{what} {name!r} ends in '.', which Windows drops from a file name ({name.rstrip('.')!r} would be the "
            "same file); remove it"
        )
    if windows_device(name):
        raise ValueError(
            f"{what} {name!r} is a device name on Windows ({name.split('.')[0].upper()}): a file named {name}.<ext> "
            "there is that device, not a file (what is written to it is lost); rename it"
        )
    return name


# Names Windows gives its devices in every folder, whatever the extension: `aux.parquet` opens the AUX device
WINDOWS_DEVICES = frozenset({"con", "prn", "aux", "nul"} | {f"{port}{n}" for port in ("com", "lpt") for n in range(10)})


def windows_device(name: str) -> bool:
    """Whether a file or folder named `name` is a device on Windows (its part before the first '.', any case;
    Windows ignores trailing spaces there too)."""
    return name.split(".", 1)[0].rstrip(" ").casefold() in WINDOWS_DEVICES


ENTRY_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")  # ASCII: no two Unicode forms of one name
# What stages append to a source's name before the extension (dvc.yaml), one file each as an example:
# sources `x` and `x.dropped` would write one file, data/clean/x.dropped.parquet
SOURCE_OUTPUT_SUFFIXES = {
    "dropped": "data/clean/{}.dropped.parquet",
    "clusters": "data/dedup/{}.clusters.parquet",
    "preview": "data/dedup/{}.preview.html",
    "report": "data/clean/{}.report.json",
    "removed": "data/prefilter/{}.removed.parquet",
}


def check_names_apart(names: list[str], suffixes: dict[str, str] | None = None) -> None:
    """Refuse two entries of a section whose files would mix: names equal but for case (one file on
    macOS and Windows file systems), or one the other's plus a stage's `.suffix` (`suffixes`)."""
    seen: dict[str, str] = {}
    suffixes = suffixes or {}
    for name in names:
        other = seen.setdefault(name.casefold(), name)
        if other != name:
            raise ValueError(
                f"entries {other!r} and {name!r} differ only by case: their files are one on a case-insensitive "
                "file system (macOS, Windows); rename one"
            )
    for name in names:
        stem, _, suffix = name.casefold().rpartition(".")
        if stem in seen and suffix in suffixes:
            raise ValueError(
                f"entries {seen[stem]!r} and {name!r} would mix their files: the outputs of {seen[stem]!r} include "
                f"{suffixes[suffix].format(seen[stem])}, those of {name!r} are named {name}.*; rename {name!r}"
            )


def key_path(loc: tuple) -> str:
    """('releases', 'v2', 'components', 0, 'into') -> 'releases.v2.components[0].into'."""
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        elif part in ("function-after", "function-before") or str(part).startswith(("function-", "literal[")):
            continue  # pydantic's names for validator wrappers, not keys
        else:
            text += f".{part}" if text else str(part)
    return text


def written_keys(loc: tuple, data: Any, missing: bool = False) -> tuple:
    """The parts of an error's `loc` that name keys or indexes of `data` as the user wrote it: pydantic adds
    the name of a union's branch (`sources.x.dedup.SourceDedup.threshold`, `.bool`, a validator chain) and
    `[key]` for a mapping's key, which no one wrote. Kept too: a missing key (`missing`, the last part) and a
    field under a value a validator made a mapping of (`export: tarball` is export.format)."""
    keys = []
    for part in loc:
        is_index = isinstance(data, list) and isinstance(part, int) and 0 <= part < len(data)
        if is_index or (isinstance(data, dict) and part in data):
            data = data[part]
        elif isinstance(data, (dict, list)) or not FIELD_NAME.fullmatch(str(part)) or part in TYPE_TAGS:
            continue
        keys.append(part)
    return (*keys, loc[-1]) if missing and loc and keys[-1:] != [loc[-1]] else tuple(keys)


FIELD_NAME = re.compile(r"[a-z_][a-z0-9_]*")  # every model's field names; a branch's class name is CamelCase
TYPE_TAGS = {"bool", "int", "float", "str", "list", "dict"}  # pydantic's names of plain-type union branches


def _first_error(exc: ValidationError, at: tuple = (), data: Any = None) -> tuple[str, str]:
    """The most useful error of a validation failure as (key path, message)."""
    errors = [(err, written_keys(err["loc"], data, err["type"] == "missing")) for err in exc.errors(include_url=False)]
    # An unknown key or a rule beats the errors pydantic raises for sibling branches of a union; then the
    # deepest: `dedup: {threshold: 5}` fails `bool` at dedup and the range at dedup.threshold, the one meant
    # (max keeps the first of equals: pydantic's order)
    err, keys = max(errors, key=lambda pair: (pair[0]["type"] == "value_error", len(pair[1])))
    where = key_path(tuple(at) + keys)
    if err["type"] == "value_error":
        return where, err["msg"].removeprefix("Value error, ")
    if err["type"] == "missing":
        return where, "Field required"
    shown = repr(err.get("input"))[:200]  # only the start is echoed: KEY_LIKE took minutes on a 100 kB value
    if looks_like_a_key(shown):  # `temperature: gsk_...` echoed 50 characters of the key
        return where, f"{err['msg']} (got a value shaped like an API key, not shown)"
    if len(shown) > 60:
        shown = shown[:57] + "..."
    return where, f"{err['msg']} (got {shown})"


def parse(model: type[Section], data: Any, at: tuple = (), file: str = "params.yaml"):
    """`data` as a `model` instance; a bad key or value is one DataError naming `file` and the key path
    (`at` is where `data` sits in the file, e.g. ("synthesize", "gpt4_style"))."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        where, message = _first_error(exc, at, data)
        raise DataError(f"{file}: {where}: {message}" if where else f"{file}: {message}") from None
