"""`synthesize`: prompts from a chat model, and the chat client settings caption shares."""

from __future__ import annotations

import datetime
import math
import re
import string
import urllib.parse
from typing import Any

from pydantic import (
    Field,
    field_validator,
)

from scripts.lib.errors import shown_short
from scripts.lib.params.base import NonEmpty, Section, Seed, looks_like_a_key

TEMPLATE_FIELDS = {"examples", "avoid_topics"}
RESERVED_BODY_KEYS = {"model", "messages", "temperature", "max_tokens", "seed", "stream", "n"}
DEFAULT_TEMPLATE = (
    "Examples\n{examples}\n\nThese are the examples of prompts for generating images.\n\n"
    "Make other prompts in the similar style as many as possible, with variety of random scenes, and range from "
    "fairly simple to complex with multiple objects and modifiers. Different words from examples are preferred.\n\n"
    "Not preferred topics: [{avoid_topics}]"
)


def check_host(url: str) -> None:
    """ValueError (never echoing the URL) unless its host can be looked up: `a..b`, a label over 63
    characters or `[::1` failed at connect with urllib's ValueError or UnicodeError traceback."""
    try:
        parts = urllib.parse.urlsplit(url)
        host, _ = parts.hostname, parts.port
        if not host:
            raise ValueError("no host")
        if not parts.netloc.startswith("["):  # an IPv6 literal is no DNS name
            host.encode("idna")
    except ValueError:  # UnicodeError too
        raise ValueError("has no valid host (an empty or over-long name part, a bad [IPv6] address or port)") from None


# api_key_env names a variable the way shells and CI write them (OPENAI_API_KEY): upper case, and no
# long run mixing letters and digits, which is what a key pasted in its place looks like (gsk_Q7xV2mLp9...)
ENV_VAR = re.compile(r"[A-Z_][A-Z0-9_]{0,63}")
KEY_LIKE_PART = re.compile(r"(?=[A-Z0-9]*[0-9])(?=[A-Z0-9]*[A-Z])[A-Z0-9]{16,}")


def check_json_values(value: Any, at: str = "") -> None:
    """ValueError naming the key path (never the value) for anything in `value` that is not a JSON
    value: YAML reads a date, !!binary, !!set, !!pairs, .nan or .inf, which the request body (and the
    cache key) cannot hold."""
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise ValueError(
                    f"{at or 'a key'}: a key that is not a string ({type(key).__name__}); JSON keys are strings"
                )
            name = key if re.fullmatch(r"[\w.-]{1,64}", key) else ascii(key[:40])
            check_json_values(item, f"{at}.{name}" if at else name)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            check_json_values(item, f"{at}[{index}]")
    elif isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{at}: NaN or infinity is not a JSON value (extra_body must hold JSON values only)")
    elif value is not None and not isinstance(value, (str, bool, int, float)):
        kind = (
            "a date (quote it to send text: '2024-01-01')"
            if isinstance(value, (datetime.date, datetime.time))
            else "binary data (!!binary)"
            if isinstance(value, (bytes, bytearray))
            else "a set (!!set; write a list)"
            if isinstance(value, (set, frozenset))
            else f"a {type(value).__name__} (!!pairs or another YAML tag)"
        )
        raise ValueError(f"{at}: holds {kind}, not a JSON value (extra_body must hold JSON values only)")


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
        # the value is never echoed: a URL may carry a credential (`HTTPS://token@host`, `?api_key=...`)
        if not value.startswith(("http://", "https://")):
            raise ValueError("is not an http(s) URL (it must start with http:// or https://)")
        if "?" in value or "#" in value:
            raise ValueError(
                "has a query (?...) or fragment (#...); /chat/completions is appended to base_url, and a key "
                "in a URL reaches dvc.lock and logs: put the key in the variable api_key_env names"
            )
        if "@" in value.split("/", 3)[2]:
            raise ValueError("holds a user or password (user:password@host); put the key in api_key_env's variable")
        check_host(value)
        return value

    @field_validator("api_key_env", check_fields=False)
    @classmethod
    def _env_name(cls, value: str | None) -> str | None:
        # the value is never echoed: the key itself pasted here would reach the error line and dvc.lock
        if value is not None and (
            not ENV_VAR.fullmatch(value) or KEY_LIKE_PART.search(value) or looks_like_a_key(value)
        ):
            raise ValueError(
                "must name an environment variable in upper case (A-Z, 0-9, '_', at most 64, e.g. OPENAI_API_KEY), "
                "not hold the key itself (it looks like one: it is committed and copied into dvc.lock)"
            )
        return value

    @field_validator("extra_body", check_fields=False)
    @classmethod
    def _json_only(cls, value: dict) -> dict:
        check_json_values(value)
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
            parts = [(name, spec, conversion) for _, name, spec, conversion in string.Formatter().parse(value)]
        except ValueError as exc:
            raise ValueError(f"{exc} (write literal braces as {{{{ and }}}})") from None
        for name, spec, conversion in parts:
            if name is None:
                continue
            if name not in TEMPLATE_FIELDS:
                raise ValueError(
                    f"unknown field {{{shown_short(name)}}} "
                    f"(available: {', '.join('{' + f + '}' for f in sorted(TEMPLATE_FIELDS))})"
                )
            if spec or conversion:  # {examples:>999999999} padded to a billion characters: out of memory
                raise ValueError(
                    f"field {{{name}}} has a format spec or conversion "
                    f"({shown_short((f'!{conversion}' if conversion else '') + (f':{spec}' if spec else ''), 40)}); "
                    "fields are inserted as they are: write {examples} or {avoid_topics}"
                )
        return value

    @field_validator("extra_body")
    @classmethod
    def _not_reserved(cls, value: dict) -> dict:
        reserved = sorted(RESERVED_BODY_KEYS & set(value))
        if reserved:
            raise ValueError(f"'{reserved[0]}' is set by the stage (use the param of that name)")
        return value
