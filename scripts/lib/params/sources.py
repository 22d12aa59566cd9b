"""`sources`: one entry per raw dataset (scripts/ingest.py, scripts/lib/readers/)."""

from __future__ import annotations

import re
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    Field,
    field_validator,
    model_validator,
)

from scripts.lib.errors import quoted
from scripts.lib.params.base import NonEmpty, Section, Seed, no_archive_mark
from scripts.lib.params.clean import LanguageCode, RuleName, SourceClean, SourceDedup, _rule_set_name

MAX_PROMPT_BYTES = 65_536  # a longer text line is refused: by ingest (its default) and by clean-text and dedup-text


class Source(Section):
    """One raw dataset, `sources.<name>`. `kind` picks the reader. Rules: a key only other kinds' readers read
    (`caption_field` with kind text) is refused; set `part_ids` or `num_parts`, not both; `num_parts` <=
    `part_id_max`."""

    # the keys one reader reads (scripts/lib/readers/): written for another kind, they would do nothing
    KIND_KEYS: ClassVar[dict[str, tuple[str, ...]]] = {
        "read": ("diffusiondb",),
        "part_ids": ("diffusiondb",),
        "num_parts": ("diffusiondb",),
        "part_seed": ("diffusiondb",),
        "part_id_max": ("diffusiondb",),
        "format": ("gustavosta",),
        "csv_files": ("kaggle_sd2",),
        "caption_field": ("dalle3",),
        "max_member_bytes": ("diffusiondb", "gustavosta", "kaggle_sd2", "dalle3", "bucketed_webdataset"),
        "max_image_pixels": ("diffusiondb", "gustavosta", "kaggle_sd2", "dalle3", "bucketed_webdataset"),
    }

    kind: Literal["diffusiondb", "gustavosta", "openprompts", "text", "kaggle_sd2", "dalle3", "bucketed_webdataset"] = (
        Field(description="reader of the native format (docs/contracts.md §5)")
    )
    path: NonEmpty = Field(
        description="raw data in its native format: a file or a folder (no folder name ending in '!': `a.tar!/x` "
        "names a member of an archive)"
    )
    images: NonEmpty | None = Field(
        None,
        description="where the images live: data/images/<name> for prompt-only sources (generate@<name>), "
        "else the raw path; captions@S reads it (null: none). One shell word (letters, digits, _./@%+=:,-, not "
        "first -): dvc.yaml pastes it unquoted into captions@S's command",
    )
    clean: bool | RuleName | SourceClean = Field(
        True,
        description="clean@S: true = the `clean.rules` set (with its overrides), rewrite; false = off (rows "
        "pass through unchanged); a rule set name; or {rules, mode} (mode: rewrite | filter_only | off)",
    )
    license: NonEmpty | None = Field(None, description="license of the raw data, for the release card (null: unknown)")
    homepage: NonEmpty | None = Field(
        None, description="where the raw data is published, for the release card (null: unknown)"
    )
    citation: NonEmpty | None = Field(
        None, description="how the raw data asks to be cited (BibTeX), copied into the release card (null: none asked)"
    )
    text_only: bool = Field(
        False,
        description="a prompt dataset: rows carry no image (captions@S passes them through; only a release "
        "with `export: prompts` takes them); `images` then names any existing path, e.g. `path`",
    )
    on_error: Literal["fail", "skip"] = Field(
        "fail",
        description="fail: stop at the first bad record naming file and row; skip: count it per reason in "
        "data/prompts/<name>.report.json",
    )
    keep_empty: bool = Field(
        False, description="keep empty prompts (clean drops them with a reason) instead of an error/skip"
    )
    batch_rows: int = Field(
        50_000, ge=1, le=10_000_000, description="rows per parquet row group (memory stays flat as input grows)"
    )
    max_prompt_bytes: int = Field(
        MAX_PROMPT_BYTES,
        ge=1,
        le=1 << 24,
        description="a longer prompt is refused, whatever the kind (text: a line; bucketed_webdataset: a .txt caption; "
        "dalle3: the json caption; the parquet and CSV kinds: a prompt cell)",
    )
    max_member_bytes: int = Field(
        64 << 20,
        ge=1,
        le=1 << 30,
        description="kinds with images (all but text, openprompts): cap on one archive member or image file, in bytes",
    )
    max_image_pixels: int = Field(
        40_000_000,
        ge=1,
        le=1 << 28,
        description="kinds with images (all but text, openprompts): cap on an image's width x height (decompression bombs)",
    )
    read: Literal["metadata", "parts"] = Field(
        "metadata", description="diffusiondb: metadata.parquet, or the part zips' json"
    )
    part_ids: list[Annotated[int, Field(ge=1, le=100000)]] | None = Field(
        None, min_length=1, description="diffusiondb: the parts to read (null: `num_parts`, or all parts)"
    )
    num_parts: int | None = Field(
        None,
        ge=1,
        le=100_000,
        description="diffusiondb: parts drawn from 1..part_id_max with random.Random(part_seed) (null: all)",
    )
    part_seed: Seed = Field(
        0, description="diffusiondb: seed of the `num_parts` draw (the hub's random subsets are unseeded)"
    )
    part_id_max: int = Field(2000, ge=1, le=100_000, description="diffusiondb: highest part id")
    format: Literal["auto", "parquet", "kaggle_csv"] = Field(
        "auto", description="gustavosta: the hub's parquet files or the Kaggle CSV copy"
    )
    csv_files: list[NonEmpty] | None = Field(
        None, min_length=1, description="kaggle_sd2: CSV files under `path` (null: every *.csv)"
    )
    caption_field: NonEmpty = Field(
        "short_caption", description="dalle3: json field used as the prompt (short_caption, long_caption, ...)"
    )
    dedup: bool | SourceDedup = Field(
        True,
        description="dedup@S: true = the `dedup:` section; false = off (every row passes, as the team did for "
        "DiffusionDB and Gustavosta before their split); or {threshold, keep, method} overriding it",
    )
    caption_language: LanguageCode | None = Field(
        None,
        description="captions@S keeps a row only if langdetect (seed 0) reads its raw prompt as this language "
        "(a code langdetect returns: en, de, zh-cn, ...); "
        "undetectable text is kept (the team's make_captions.py); null: no check",
    )
    follow_symlinks: bool = Field(
        False,
        description="read files reached through a symbolic link inside `path` (false: such a link stops ingest "
        "with one line, since it can pull in any file, a secrets file included; `path` itself may be a link)",
    )

    @field_validator("clean", mode="before")
    @classmethod
    def _clean_set(cls, value: Any) -> Any:
        return value if isinstance(value, (bool, dict)) else _rule_set_name(value)

    @field_validator("path", "images")
    @classmethod
    def _no_archive_mark(cls, path: str | None) -> str | None:
        return no_archive_mark(path)

    @field_validator("images")
    @classmethod
    def _one_shell_word(cls, path: str | None) -> str | None:
        return one_shell_word(path, "captions@S's command (`${item.images}`)")

    @field_validator("csv_files")
    @classmethod
    def _inside(cls, files: list[str] | None) -> list[str] | None:
        for name in files or []:
            if name.startswith(("/", "\\")) or ".." in name.replace("\\", "/").split("/"):
                raise ValueError(f"{quoted(name)} leaves the source folder: name files under `path`")
        return files

    @model_validator(mode="after")
    def _keys_of_kind(self) -> Source:
        for key in sorted(self.model_fields_set & set(self.KIND_KEYS)):
            if self.kind not in self.KIND_KEYS[key]:
                raise ValueError(
                    f"{key} is read only by kind {' | '.join(self.KIND_KEYS[key])}, not by kind {self.kind} (remove it)"
                )
        return self

    @model_validator(mode="after")
    def _parts(self) -> Source:
        if self.part_ids is not None and self.num_parts is not None:
            raise ValueError("set part_ids or num_parts, not both")
        if self.num_parts is not None and self.num_parts > self.part_id_max:
            raise ValueError(f"num_parts = {self.num_parts} exceeds part_id_max = {self.part_id_max}")
        return self


# dvc.yaml pastes a source's `images` unquoted into captions@S's shell command: a space made it two arguments,
# `;` or `$(...)` ran a command of its own, and `$HOME`, `~` or `*` read another folder than params.yaml names
SHELL_WORD = re.compile(r"[\w./@%+=:,-]+")


def one_shell_word(value: str | None, where: str) -> str | None:
    """`value`, if the shell reads it as the one word written (letters, digits and `_./@%+=:,-`, not first `-`)."""
    if value is None or (SHELL_WORD.fullmatch(value) and not value.startswith("-")):
        return value
    problem = "starts with '-'" if value.startswith("-") else f"holds {re.sub(SHELL_WORD, '', value)[0]!r}"
    raise ValueError(
        f"{quoted(value)} {problem}: dvc.yaml pastes it unquoted into {where}, where the shell reads it "
        "otherwise; name the folder with letters, digits and _./@%+=:,- only (a link to it will do)"
    )
