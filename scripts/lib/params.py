"""The shape of params.yaml: every section, every key, its type. Checked once per process.

`scripts.common.load_params` calls `check_params` before any stage reads its section, so a typo or a
wrong type stops the stage at start with one line naming params.yaml and the key path:

    params.yaml: dedup: unknown key 'treshold' (did you mean 'threshold'?)
    params.yaml: split.seed: Input should be a valid integer (got '42')

This checks structure and types only (strict: no "42" -> 42, no 1 -> true). Value rules that need a
stage's knowledge (a regex compiles, bands*rows <= num_perm, a release's base exists) stay in the
stage modules. Every key is optional here: which keys a stage requires is the stage's business, so
tests may write a params.yaml holding only the section they exercise.
"""
from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, Literal, Optional

from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

import yaml

from scripts.lib.errors import DataError
from scripts.lib.io import sha256_text

PARAMS_FILE = Path("params.yaml")


def unknown_key_message(key: Any, known: set[str]) -> str:
    """"unknown key 'treshold' (did you mean 'threshold'?)" - the nearest valid name, if any is close."""
    near = difflib.get_close_matches(str(key), sorted(known), n=1, cutoff=0.6)
    hint = f" (did you mean '{near[0]}'?)" if near else f" (valid: {', '.join(sorted(known))})"
    return f"unknown key '{key}'{hint}"


class Strict(BaseModel):
    """A mapping with a fixed set of keys: unknown keys and wrong types are rejected, never coerced."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    @model_validator(mode="before")
    @classmethod
    def _known_keys_only(cls, data: Any) -> Any:
        # pydantic's own extra="forbid" message names the bad key but not the one that was meant
        if isinstance(data, dict):
            for key in data:
                if key not in cls.model_fields:
                    raise ValueError(unknown_key_message(key, set(cls.model_fields)))
        return data


# --- sources: one entry per raw dataset (scripts/lib/readers/base.py: SourceConfig) -------------------

class Source(Strict):
    kind: Literal["diffusiondb", "gustavosta", "openprompts", "text", "kaggle_sd2", "dalle3", "bucketed_webdataset"]
    path: str
    images: Optional[str] = None
    clean: Optional[bool] = None
    license: Optional[str] = None
    on_error: Optional[Literal["fail", "skip"]] = None
    keep_empty: Optional[bool] = None
    batch_rows: Optional[int] = None
    max_prompt_bytes: Optional[int] = None
    max_member_bytes: Optional[int] = None
    max_image_pixels: Optional[int] = None
    read: Optional[Literal["metadata", "parts"]] = None
    part_ids: Optional[list[int]] = None
    num_parts: Optional[int] = None
    part_seed: Optional[int] = None
    part_id_max: Optional[int] = None
    format: Optional[Literal["auto", "parquet", "kaggle_csv"]] = None
    csv_files: Optional[list[str]] = None
    caption_field: Optional[str] = None


# --- clean (scripts/clean.py: load_rules) -----------------------------------------------------------

class Rewrite(Strict):
    name: str
    find: Optional[str] = None
    pattern: Optional[str] = None
    repl: Optional[str] = None
    strip: Optional[bool] = None


class Language(Strict):
    enabled: Optional[bool] = None
    keep: Optional[list[str]] = None
    seed: Optional[int] = None


class PersonNames(Strict):
    enabled: Optional[bool] = None
    max_persons: Optional[int] = None
    model: Optional[str] = None


class ByClause(Strict):
    marker: Optional[str] = None
    exempt: Optional[str] = None
    cut_if_commas_after: Optional[int] = None
    cut_if_names_after: Optional[int] = None
    and_marker: Optional[str] = None
    remove_to_comma: Optional[str] = None


class Clean(Strict):
    workers: Optional[int] = None
    language: Optional[Language] = None
    banned_nospace: Optional[list[str]] = None
    max_dashes: Optional[int] = None
    max_pipes: Optional[int] = None
    person_names: Optional[PersonNames] = None
    ban_words: Optional[list[str]] = None
    max_repeat_ratio: Optional[float] = None
    min_mean_word_len: Optional[float] = None
    normalise: Optional[list[Rewrite]] = None
    max_commas: Optional[int] = None
    by_clause: Optional[ByClause] = None
    stop_phrases: Optional[list[str]] = None
    artists: Optional[list[str]] = None
    sites: Optional[list[str]] = None
    tidy: Optional[list[Rewrite]] = None
    min_chars: Optional[int] = None
    max_chars: Optional[int] = None
    min_unique_words: Optional[int] = None
    collapse_repeats: Optional[list[Rewrite]] = None
    thought_phrases: Optional[list[str]] = None
    finish: Optional[list[Rewrite]] = None


# --- dedup (scripts/dedup.py: DedupParams) ---------------------------------------------------------

class Dedup(Strict):
    threshold: Optional[float] = None
    num_perm: Optional[int] = None
    ngram: Optional[int] = None
    unit: Optional[Literal["word", "char"]] = None
    seed: Optional[int] = None
    scheme: Optional[str] = None
    keep: Optional[Literal["first", "longest"]] = None
    bands: Optional[int] = None
    rows: Optional[int] = None
    target_recall: Optional[float] = None
    bucket_window: Optional[int] = None
    batch_size: Optional[int] = None
    verify_batch: Optional[int] = None
    workers: Optional[int] = None


# --- tiny_model (scripts/tiny_model.py: DEFAULTS) --------------------------------------------------

class TinyModel(Strict):
    seed: Optional[int] = None
    unet_channels: Optional[list[int]] = None
    unet_heads: Optional[list[int]] = None
    vae_channels: Optional[list[int]] = None
    text_hidden: Optional[int] = None
    text_layers: Optional[int] = None
    text_heads: Optional[int] = None
    bpe_merges: Optional[int] = None
    sample_size: Optional[int] = None


# --- generate (scripts/generate.py: Settings) ------------------------------------------------------

class Generate(Strict):
    sources: Optional[list[str]] = None
    model: Optional[str] = None
    allow_download: Optional[bool] = None
    prompt_field: Optional[str] = None
    seed: Optional[int] = None
    steps: Optional[int] = None
    guidance: Optional[float] = None
    scheduler: Optional[str] = None
    height: Optional[int] = None
    width: Optional[int] = None
    resize: Optional[int] = None
    format: Optional[str] = None
    batch_size: Optional[int] = None
    dtype: Optional[str] = None
    cpu_dtype: Optional[str] = None
    device: Optional[str] = None
    compile: Optional[bool] = None
    writers: Optional[int] = None
    engine: Optional[Literal["local", "ray"]] = None
    ray_address: Optional[str] = None


class Split(Strict):
    validation_fraction: Optional[float] = None
    seed: Optional[int] = None


# --- releases (scripts/release.py: RECIPE_KEYS, COMPONENT_KEYS) --------------------------------------

class Component(Strict):
    source: str
    split: Optional[Literal["train", "validation", "all"]] = None
    into: Optional[Literal["train", "validation"]] = None
    dedup_against: Optional[Literal["train", "validation"]] = None


class Release(Strict):
    base: Optional[str] = None
    description: Optional[str] = None
    components: Optional[list[Component]] = None
    reclean: Optional[bool] = None
    validation_leaks: Optional[Literal["none", "exact", "near"]] = None
    export: Optional[str] = None


# --- synthesize (scripts/synthesize.py: SynthesizeParams, which also checks presence and ranges) --

class ExampleSource(Strict):
    path: str
    column: Optional[str] = None
    count: Optional[int] = None


class SynthesizeEntry(Strict):
    base_url: Optional[str] = None
    model: Optional[str] = None
    api_key_env: Optional[str] = None
    temperature: Optional[float] = None
    max_tokens: Optional[int] = None
    extra_body: Optional[dict[str, Any]] = None
    requests: Optional[int] = None
    seed: Optional[int] = None
    examples: Optional[list[ExampleSource]] = None
    fixed_examples: Optional[list[str]] = None
    avoid_topics: Optional[list[str]] = None
    system: Optional[str] = None
    template: Optional[str] = None
    max_chars: Optional[int] = None
    drop_header_lines: Optional[bool] = None
    offline: Optional[bool] = None
    concurrency: Optional[int] = None
    timeout_s: Optional[float] = None
    max_attempts: Optional[int] = None
    backoff_base_s: Optional[float] = None
    backoff_cap_s: Optional[float] = None


class Preview(Strict):
    columns: Optional[int] = None
    rows: Optional[int] = None
    thumb: Optional[int] = None
    caption_height: Optional[int] = None
    quality: Optional[int] = None
    dedup_clusters: Optional[int] = None
    length_bin: Optional[int] = None


class Params(Strict):
    """The whole file. A section may be absent (its stage then reports it missing when it runs)."""

    sources: Optional[dict[str, Source]] = None
    clean: Optional[Clean] = None
    dedup: Optional[Dedup] = None
    tiny_model: Optional[TinyModel] = None
    generate: Optional[Generate] = None
    split: Optional[Split] = None
    releases: Optional[dict[str, Release]] = None
    synthesize: Optional[dict[str, SynthesizeEntry]] = None
    preview: Optional[Preview] = None


# --- checking ------------------------------------------------------------------------------------

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


def _first_error(exc: ValidationError) -> tuple[str, str]:
    """The most useful error of a validation failure as (key path, message)."""
    errors = exc.errors(include_url=False)
    # An unknown key beats the errors pydantic raises for sibling branches of an Optional/union.
    err = next((e for e in errors if e["type"] == "value_error"), errors[0])
    where = key_path(tuple(err["loc"]))
    if err["type"] == "value_error":
        return where, err["msg"].removeprefix("Value error, ")
    shown = repr(err.get("input"))
    if len(shown) > 60:
        shown = shown[:57] + "..."
    return where, f"{err['msg']} (got {shown})"


def check_params(params: Any, file: str = "params.yaml") -> None:
    """Raise one DataError naming `file` and the key path if `params` does not fit the schema."""
    if not isinstance(params, dict):
        raise DataError(f"{file}: expected a mapping of sections, got {type(params).__name__}")
    try:
        Params.model_validate(params)
    except ValidationError as exc:
        where, message = _first_error(exc)
        raise DataError(f"{file}: {where}: {message}" if where else f"{file}: {message}") from None


# --- reading ------------------------------------------------------------------------------------

_CHECKED_PARAMS: set[tuple[str, str]] = set()  # (path, sha256 of text) already checked in this process


def load_params(section: str | None = None, path: Path | str = PARAMS_FILE) -> Any:
    """Read params.yaml (or one top-level section of it), checked against scripts/lib/params.py.

    A YAML syntax error, an unknown key or a wrong type is one DataError naming the file and key.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: params file not found (run from the repository root)")
    try:
        text = path.read_text(encoding="utf-8")
        params = yaml.safe_load(text) or {}
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f"line {mark.line + 1}: " if mark is not None else ""
        raise DataError(f"{path}: {at}not valid YAML ({getattr(exc, 'problem', None) or type(exc).__name__})") from None
    key = (str(path.resolve()), sha256_text(text))
    if key not in _CHECKED_PARAMS:
        check_params(params, str(path))
        _CHECKED_PARAMS.add(key)
    if section is None:
        return params
    if section not in params:
        raise DataError(f"{path}: missing section '{section}'")
    return params[section]
