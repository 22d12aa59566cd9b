"""`synthesize`: prompts from a chat model, and the chat client settings caption shares."""

from __future__ import annotations

import string
from typing import Any

from pydantic import (
    Field,
    field_validator,
)

from scripts.lib.params.base import NonEmpty, Section, Seed

TEMPLATE_FIELDS = {"examples", "avoid_topics"}
RESERVED_BODY_KEYS = {"model", "messages", "temperature", "max_tokens", "seed", "stream", "n"}
DEFAULT_TEMPLATE = (
    "Examples\n{examples}\n\nThese are the examples of prompts for generating images.\n\n"
    "Make other prompts in the similar style as many as possible, with variety of random scenes, and range from "
    "fairly simple to complex with multiple objects and modifiers. Different words from examples are preferred.\n\n"
    "Not preferred topics: [{avoid_topics}]"
)


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
    backoff_base_s: float = Field(
        2.0, ge=0, le=3600, description="waits base, 2*base, 4*base, ... s (at least Retry-After)"
    )
    backoff_cap_s: float = Field(60.0, ge=0, le=3600, description="longest wait between tries")

    @field_validator("base_url", check_fields=False)
    @classmethod
    def _http(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            # the value is not echoed: a URL may carry a credential (`HTTPS://token@host`, `ftp://:pw@host`)
            raise ValueError("is not an http(s) URL (it must start with http:// or https://)")
        return value


class SynthesizeEntry(ChatClientSettings):
    """synthesize@N: prompts from an OpenAI-compatible chat model. Rules: base_url is http(s); the template
    uses only {examples} and {avoid_topics}; extra_body sets no key the stage sets."""

    base_url: NonEmpty = Field(
        "https://api.openai.com/v1", description="OpenAI-compatible root (vLLM: http://localhost:8000/v1)"
    )
    model: NonEmpty = Field("gpt-4", description="chat model name")
    api_key_env: NonEmpty | None = Field(
        "OPENAI_API_KEY", description="env var holding the key, never logged (null: servers without auth)"
    )
    temperature: float | None = Field(1.0, ge=0, le=2, description="sampling temperature (null: not sent)")
    max_tokens: int | None = Field(
        2048,
        ge=1,
        le=1_000_000,
        description="completion cap (null: not sent, e.g. max_completion_tokens in extra_body)",
    )
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
            raise ValueError(
                f"unknown field {{{sorted(unknown)[0]}}} "
                f"(available: {', '.join('{' + f + '}' for f in sorted(TEMPLATE_FIELDS))})"
            )
        return value

    @field_validator("extra_body")
    @classmethod
    def _not_reserved(cls, value: dict) -> dict:
        reserved = sorted(RESERVED_BODY_KEYS & set(value))
        if reserved:
            raise ValueError(f"'{reserved[0]}' is set by the stage (use the param of that name)")
        return value
