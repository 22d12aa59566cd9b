"""params.yaml, defined once: one pydantic model per section (a module each here), with each key's
default, type, range and doc. Stages read their section as a model, defaults filled:

    dedup = load_section("dedup")            # -> Dedup
    source = load_section("sources")["x"]    # -> Source (sources, releases, synthesize, caption: name -> model)

`load_params` reads the file as DVC does and checks all of it once per process, so a typo, a wrong type
or a value out of range stops any stage at start with one line naming params.yaml and the key path
(`params.yaml: dedup: unknown key 'treshold' (did you mean 'threshold'?)`), and against the dvc.yaml beside it
(listed.py: a key its stages list that the file lacks, which DVC refuses late). Rules that need data or other
files stay in the stage modules. docs/params.md is generated from these models (`python -m scripts
params-doc`). The package imports only scripts.lib.errors, io and nesting, so any module can import it.
"""

from __future__ import annotations

import contextlib
import errno
import gc
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml
from pydantic import (
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from scripts.lib.errors import DataError, quoted
from scripts.lib.io import config_text, sha256_text
from scripts.lib.nesting import TooDeep
from scripts.lib.params.base import (  # noqa: F401
    ENTRY_NAME,
    PARAMS_FILE,
    SOURCE_OUTPUT_SUFFIXES,
    NonEmpty,
    Section,
    Seed,
    Seed32,
    _first_error,
    check_name,
    check_names_apart,
    key_path,
    not_a_name_message,
    one_read_per_run,
    parse,
    read_once,
    unknown_key_message,
)
from scripts.lib.params.caption import (  # noqa: F401
    CAPTION_PROMPT,
    CAPTION_REASONS,
    CAPTION_RULES,
    CAPTION_SYSTEM,
    CaptionEntry,
    CaptionQa,
    CaptionQaRule,
    CaptionStep,
)
from scripts.lib.params.clean import (  # noqa: F401
    CLEAN_RULES_DIR,
    ByClause,
    Clean,
    CleanRules,
    Drops,
    Language,
    PersonNames,
    Phrase,
    Rewrite,
    RuleName,
    SourceClean,
    SourceDedup,
    rule_set_names,
)
from scripts.lib.params.dedup import Dedup
from scripts.lib.params.generate import FORMAT_NAMES, GENERATE_PRESETS, Generate, Side  # noqa: F401
from scripts.lib.params.listed import check_listed_params
from scripts.lib.params.preview import Preview
from scripts.lib.params.references import FOREACH_SECTIONS, check_references, null_foreach_section  # noqa: F401
from scripts.lib.params.releases import (  # noqa: F401
    DEDUP_SCOPES,
    Bucket,
    CleanStep,
    Component,
    DedupStep,
    Export,
    Release,
    Resolution,
    Step,
)
from scripts.lib.params.runtime import Runtime
from scripts.lib.params.sources import Source
from scripts.lib.params.split import Split
from scripts.lib.params.synthesize import (  # noqa: F401
    DEFAULT_TEMPLATE,
    RESERVED_BODY_KEYS,
    TEMPLATE_FIELDS,
    ChatClientSettings,
    ExampleSource,
    SynthesizeEntry,
)
from scripts.lib.params.tiny_models import Channels, TinyEncoder, TinyModel  # noqa: F401
from scripts.lib.params.yaml_text import ENV_NAME, SECRET_SHAPES, AliasError, RuamelError, read_yaml, refuse_secrets  # noqa: F401

# --- the whole file -------------------------------------------------------------------------------


class Params(Section):
    """The whole file. A section may be absent (its stage then reports it missing when it runs)."""

    sources: dict[str, Source] | None = Field(None, description="one entry per raw dataset")
    clean: Clean | None = Field(None, description="prompt cleaning rules")
    dedup: Dedup | None = Field(None, description="near-duplicate removal")
    tiny_model: TinyModel | None = Field(None, description="the offline test model")
    tiny_encoder: TinyEncoder | None = Field(None, description="the offline test sentence encoder")
    generate: Generate | None = Field(None, description="image generation")
    split: Split | None = Field(None, description="train/validation split")
    releases: dict[str, Release] | None = Field(None, description="published dataset versions")
    synthesize: dict[str, SynthesizeEntry] | None = Field(None, description="prompts from a chat model")
    caption: dict[str, CaptionEntry] | None = Field(None, description="image captions from vision models")
    preview: Preview | None = Field(None, description="contact sheets, previews and plots")
    runtime: Runtime | None = Field(None, description="speed only: engine, workers, batch sizes")

    @model_validator(mode="before")
    @classmethod
    def _no_null_foreach(cls, data: Any) -> Any:
        if (message := null_foreach_section(data)) is not None:
            raise ValueError(message)
        return data

    # Entry names become file and folder names: plain, and apart when case is ignored (macOS, Windows)
    @field_validator("sources", "releases", "synthesize", "caption", mode="before")
    @classmethod
    def _plain_names(cls, entries: Any, info: ValidationInfo) -> Any:
        if isinstance(entries, dict):
            for name in entries:
                if isinstance(name, str):
                    check_name(name)
                else:
                    raise ValueError(not_a_name_message(name))
            # only a source's outputs carry a suffix after its name (a release's are folders data/*/V)
            suffixes = SOURCE_OUTPUT_SUFFIXES if info.field_name == "sources" else None
            check_names_apart([name for name in entries if isinstance(name, str)], suffixes)
            if info.field_name in DOTTED_PARAMS:
                for name in entries:
                    if isinstance(name, str) and "." in name:
                        raise ValueError(
                            f"name {name!r} holds '.': dvc.yaml lists its params as {info.field_name}.{name}, "
                            f"which DVC reads as the keys {' -> '.join([info.field_name, *name.split('.')])}, so "
                            "its stages fail ('Parameters ... are missing'); use '-' or '_' instead"
                        )
        return entries


# Sections whose entries dvc.yaml lists as params `SECTION.${key}`: DVC splits a params path at each '.'
DOTTED_PARAMS = ("sources", "synthesize", "caption")


ENTRY_SECTIONS = ("sources", "releases", "synthesize", "caption")  # name -> model mappings
SECTION_MODELS: dict[str, type[Section]] = {
    "sources": Source,
    "clean": Clean,
    "dedup": Dedup,
    "tiny_model": TinyModel,
    "tiny_encoder": TinyEncoder,
    "generate": Generate,
    "split": Split,
    "releases": Release,
    "synthesize": SynthesizeEntry,
    "caption": CaptionEntry,
    "preview": Preview,
    "runtime": Runtime,
}


# --- checking ------------------------------------------------------------------------------------


def check_params(params: Any, file: str = "params.yaml") -> None:
    """Raise one DataError naming `file` and the key path if `params` does not fit the models, or names an
    entry of `sources` or `releases` they do not hold (references.check_references: checked at every stage)."""
    if not isinstance(params, dict):
        raise DataError(f"{file}: expected a mapping of sections, got {type(params).__name__}")
    check_references(parse(Params, params, file=file), file)


# --- reading ------------------------------------------------------------------------------------


_CHECKED_PARAMS: set[tuple[str, str]] = set()  # (path, sha256 of text) already checked in this process


# Shapes of API keys and tokens (OpenAI, Anthropic, Hugging Face, GitHub, AWS, Slack, Google, GitLab):
# params.yaml is committed and its values are copied into dvc.lock, so none may hold one.


def load_params(section: str | None = None, path: Path | str = PARAMS_FILE) -> Any:
    """Read params.yaml (or one top-level section of it, as plain data), checked against the models.

    A YAML syntax error, an alias, an unknown key, a wrong type or a value out of range is one
    DataError naming the file and key.
    """
    path = Path(path)
    with collector_paused():
        return _loaded_params(section, path)


def _loaded_params(section: str | None, path: Path) -> Any:
    """load_params's work: the file read, parsed, checked once per text, and `section` of it."""
    try:
        text = read_once(path, params_text)  # one version of the file for every section a run loads
        params = read_yaml(text) or {}
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    except (AliasError, TooDeep) as exc:
        raise DataError(f"{path}: {exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f"line {mark.line + 1}: " if mark is not None else ""
        raise DataError(f"{path}: {at}not valid YAML ({getattr(exc, 'problem', None) or type(exc).__name__})") from None
    key = (str(path.resolve()), sha256_text(text))
    if key not in _CHECKED_PARAMS:
        refuse_secrets(params, str(path))
        check_params(params, str(path))
        check_listed_params(params, path)  # what DVC will refuse of it, late: dvc.yaml's lists
        _CHECKED_PARAMS.add(key)
    if section is None:
        return params
    if section not in params:
        raise DataError(f"{path}: missing section '{section}'")
    return params[section]


@contextlib.contextmanager
def collector_paused() -> Iterator[None]:
    """Python's cycle collector off while params.yaml is built and checked: each of its passes walked the
    containers the load had made so far, which doubled the load of a 10,000-release file (700,000 nodes). The
    load makes no garbage cycles; what it leaves is collected once it is on again."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def params_text(path: Path) -> str:
    """The text of the params file `path`, bounded: a FIFO or device is refused before it is opened (it hung the
    command)."""
    if not path.exists():
        raise DataError(f"{path}: {missing_file_reason(path)}")
    return config_text(path)


def missing_file_reason(path: Path) -> str:
    """Why `path` (which does not exist as a file) cannot be read: a link to nothing or in a loop says so."""
    if not path.is_symlink():
        return "params file not found (run from the repository root)"
    try:
        path.resolve(strict=True)
    except RuntimeError:  # Python before 3.13: a loop of links
        return "is a symbolic link in a loop of links (it never reaches a file); point it at the params file"
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return "is a symbolic link in a loop of links (it never reaches a file); point it at the params file"
    return f"is a symbolic link to {quoted(os.readlink(path))}, which does not exist; point it at the params file"


def load_section(section: str, path: Path | str = PARAMS_FILE, missing_ok: bool = False) -> Any:
    """One section as its model, defaults filled: Dedup, Generate, ... or, for sources, releases and
    synthesize, a dict of entry name -> model. An absent section is a DataError unless `missing_ok`
    (then the defaults)."""
    model = SECTION_MODELS[section]
    if missing_ok and section not in load_params(path=path):
        return {} if section in ENTRY_SECTIONS else parse(model, {}, at=(section,), file=str(path))
    raw = load_params(section, path)
    if section in ENTRY_SECTIONS:
        return {name: parse(model, entry, at=(section, name), file=str(path)) for name, entry in (raw or {}).items()}
    return parse(model, raw or {}, at=(section,), file=str(path))


def section_or_default(section: str, default: Any) -> Any:
    """params.yaml's `section` (its defaults when absent), or `default` when there is no params.yaml at all: the
    file is loaded first, never looked at by name before (exists() was False for a link to nothing, or in a
    loop, and the defaults were used at exit 0; a file swapped between the look and the load). Only a load
    that failed asks whether anything is there (lstat: a broken link is there, and its one line stands)."""
    try:
        return load_section(section, missing_ok=True)
    except DataError:
        if not os.path.lexists(PARAMS_FILE):
            return default
        raise
