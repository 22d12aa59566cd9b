"""`caption`: image captions from vision models, with their QA rules."""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import (
    Field,
    field_validator,
    model_validator,
)

from scripts.lib.params.base import NonEmpty, Section, no_archive_mark
from scripts.lib.params.synthesize import RESERVED_BODY_KEYS, ChatClientSettings

CAPTION_SYSTEM = (
    "You write captions for a text-to-image training set. Describe only what is visible: subjects, "
    "actions, setting, composition, colours, lighting, style and any legible text. No guesses about "
    "names, no opinions, no preamble."
)
CAPTION_PROMPT = "Write one caption for this image: a single paragraph of plain text, 1 to 3 sentences."
CAPTION_RULES = [  # caption QA: the first rule whose pattern is found (re.search) rejects the caption
    {
        "reason": "placeholder",
        "pattern": r"(?i)lorem ipsum|\[(?:insert |your )?(?:caption|description)[^\]]*\]"
        r"|^\W*(?:n/?a|none|null|no caption(?: available)?|placeholder|caption)\W*$",
    },
    {
        "reason": "unavailable",
        "pattern": r"(?i)\b(?:image|photo|picture)\b[^.]{0,40}?\b(?:is |was |has been )?(?:no longer available|not available"
        r"|unavailable|removed|not found)\b|\b(?:failed|unable) to load\b",
    },
    {
        "reason": "blank_image",
        "pattern": r"(?i)^\W*(?:the |this )?(?:image|picture|photo) (?:is|appears to be|shows) (?:an? |the )?"
        r"(?:completely |entirely |mostly |just )?(?:blank|empty)\b"
        r"|^\W*(?:an? |the )?(?:completely |entirely |mostly |just )?(?:blank|empty|solid|plain|uniform)"
        r"(?: (?:white|black|gr[ae]y|dark|light|colou?red))*"
        r" (?:image|picture|photo|background|screen|canvas|frame|rectangle|square)\W*$",
    },
    {
        "reason": "refusal",
        "pattern": r"(?i)^\W*(?:i'?m sorry|i am sorry|sorry,|i (?:can(?:no|')t|cannot|am unable|'m unable|am not able"
        r"|'m not able|won'?t)\b|as an ai\b|unfortunately,? i\b)",
    },
]
CAPTION_REASONS = {"empty", "truncated", "too_short", "too_long"}  # built in, before the rules


class CaptionStep(Section):
    """One model of the waterfall; its selector index is its position in `models`, its
    caption_source_id that position + 1."""

    model: NonEmpty = Field(description="model name at the endpoint (e.g. google/gemini-2.0-flash-lite-001)")
    variant: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{1,100}$")] | None = Field(
        None, description="caption_variant recorded per image (null: caption_<model name, non-alphanumerics as _>)"
    )


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
    max_chars: int | None = Field(
        None, ge=1, le=1_000_000, description="longer captions are rejected as too_long (null: no cap)"
    )
    reject_truncated: bool = Field(True, description='reject a caption cut by max_tokens (finish_reason "length")')
    rules: list[CaptionQaRule] = Field(
        CAPTION_RULES, validate_default=True, description="placeholder, unavailable-image, blank-image and refusal text"
    )

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
        0,
        ge=0,
        le=100_000_000,
        description="images captioned, the first in id order (0: no call, the offline default; null: all)",
    )
    base_url: NonEmpty = Field(
        "https://openrouter.ai/api/v1", description="OpenAI-compatible root (vLLM: http://localhost:8000/v1)"
    )
    backend: NonEmpty = Field("openrouter", description="label of the endpoint in the caption_sources table")
    api_key_env: NonEmpty | None = Field(
        "OPENROUTER_API_KEY", description="env var holding the key, never logged (null: servers without auth)"
    )
    models: list[CaptionStep] = Field(
        [
            {"model": "google/gemini-2.0-flash-lite-001", "variant": "caption_gemini_2_flash_lite"},
            {"model": "mistralai/mistral-medium-3.1", "variant": "caption_mistral_medium_3_1"},
        ],
        min_length=1,
        validate_default=True,
        description="the waterfall: the next model is asked only when the previous caption failed QA",
    )
    system: str | None = Field(CAPTION_SYSTEM, description="system message (null: none); its sha256 is in sources.json")
    prompt: NonEmpty = Field(
        CAPTION_PROMPT, description="user message sent with the image; its sha256 is in sources.json"
    )
    temperature: float | None = Field(0.2, ge=0, le=2, description="sampling temperature (null: not sent)")
    max_tokens: int | None = Field(300, ge=1, le=1_000_000, description="completion cap (null: not sent)")
    extra_body: dict[str, Any] = Field({}, description="more request fields (e.g. top_p); part of the cache key")
    qa: CaptionQa = Field(CaptionQa(), description="caption QA rules")
    max_image_bytes: int = Field(
        20 << 20, ge=1, le=1 << 30, description="larger image files are skipped (OpenAI: 20 MiB)"
    )
    max_image_pixels: int = Field(
        40_000_000, ge=1, le=1 << 28, description="images with more pixels are skipped (bombs)"
    )

    @field_validator("images")
    @classmethod
    def _no_archive_mark(cls, path: str) -> str | None:
        return no_archive_mark(path)

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
        return [
            step.variant or "caption_" + re.sub(r"[^A-Za-z0-9]+", "_", step.model.rsplit("/", 1)[-1]).strip("_").lower()
            for step in self.models
        ]
