"""`clean`: the cleaning rule sets and a source's choice of one (scripts/lib/cleaning/)."""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Annotated, Any, Literal, Optional, get_args

import yaml
from pydantic import (
    AfterValidator,
    BeforeValidator,
    Field,
    create_model,
    model_validator,
)
from pydantic.fields import FieldInfo

from scripts.lib.errors import DataError, quoted
from scripts.lib.io import config_text
from scripts.lib.params.base import NonEmpty, Section, Seed
from scripts.lib.params.yaml_text import read_yaml


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


def _names_apart(rewrites: list[Rewrite]) -> list[Rewrite]:
    """A phase's rewrites, refused when two share a name (errors and reports name the rewrite that ran)."""
    first: dict[str, int] = {}
    for index, rewrite in enumerate(rewrites):
        if first.setdefault(rewrite.name, index) != index:
            raise ValueError(
                f"[{first[rewrite.name]}] and [{index}] are both named {rewrite.name!r} (errors and reports name a "
                "rewrite by its name); rename one"
            )
    return rewrites


Rewrites = Annotated[list[Rewrite], AfterValidator(_names_apart)]  # one phase of a rule set


# The codes langdetect 1.0.9 returns (its profiles folder, langdetect.detector_factory.PROFILES_DIRECTORY):
# a code it never returns ("EN", "english", "en-US") dropped every row at exit 0
# fmt: off
LANGDETECT_CODES = (
    "af", "ar", "bg", "bn", "ca", "cs", "cy", "da", "de", "el", "en", "es", "et", "fa", "fi", "fr", "gu", "he",
    "hi", "hr", "hu", "id", "it", "ja", "kn", "ko", "lt", "lv", "mk", "ml", "mr", "ne", "nl", "no", "pa", "pl",
    "pt", "ro", "ru", "sk", "sl", "so", "sq", "sv", "sw", "ta", "te", "th", "tl", "tr", "uk", "ur", "vi", "zh-cn",
    "zh-tw",
)
# fmt: on


def nearest_language_code(value: str) -> str | None:
    """The langdetect code `value` most likely means: 'EN' -> 'en', 'en-US' -> 'en', 'english' -> 'en'."""
    low = value.strip().lower().replace("_", "-")
    head = low.split("-")[0]
    for guess in (low, head):
        if guess in LANGDETECT_CODES:
            return guess
    near = difflib.get_close_matches(low, LANGDETECT_CODES, n=1, cutoff=0.6)
    if near:
        return near[0]
    prefixed = [code for code in LANGDETECT_CODES if code.startswith(head[:2])] if len(head) >= 2 else []
    return prefixed[0] if prefixed else None


def _language_code(value: str) -> str:
    if value not in LANGDETECT_CODES:
        near = nearest_language_code(value)
        hint = f"did you mean {near!r}?" if near else f"its codes: {', '.join(LANGDETECT_CODES)}"
        raise ValueError(f"{quoted(value)} is not a language code langdetect returns ({hint})")
    return value


LanguageCode = Annotated[str, AfterValidator(_language_code)]  # sources.S.caption_language too


class Language(Section):
    """The reference's langdetect filter (needs the `langdetect` package when enabled)."""

    enabled: bool = Field(False, description="drop prompts whose detected language is not in `keep`")
    keep: list[LanguageCode] = Field(
        ["en"], min_length=1, description="language codes kept, as langdetect returns them (en, de, zh-cn, ...)"
    )
    seed: Seed = Field(0, description="langdetect's seed (DetectorFactory.seed; its detection is random otherwise)")
    undetectable: Literal["keep", "drop"] = Field(
        "keep",
        description="a text langdetect cannot read (no letters): kept (2023-04-04: the exception was logged) "
        "or dropped (2023-03-30)",
    )


class PersonNames(Section):
    """The reference's spaCy NER filter (needs spaCy and the model installed when enabled)."""

    enabled: bool = Field(False, description="drop prompts naming more than `max_persons` people")
    max_persons: int = Field(1, ge=0, le=1000, description="PERSON entities allowed")
    only_if: list[NonEmpty] = Field(
        [],
        description='run the model only on prompts containing one of these (final: " by ", " style "; '
        "empty: every prompt)",
    )
    model: NonEmpty = Field("en_core_web_sm", description="spaCy model name")


class ByClause(Section):
    """Artist credits: cut at `marker` when many names/commas follow it, then delete `by ... ,`."""

    marker: NonEmpty = Field(description="where a credit starts")
    exempt: NonEmpty = Field(description='no cut when this occurs ("surrounded by ")')
    cut_if_commas_after: int = Field(ge=0, le=1000, description="cut when more commas than this follow the marker")
    cut_if_names_after: int = Field(
        ge=0, le=1000, description="cut when more `and_marker` + `marker` than this follow it"
    )
    and_marker: NonEmpty = Field(description="joins names")
    remove_to_comma: NonEmpty = Field(description="regex deleted up to the nearest comma")


Phrase = Annotated[str, Field(min_length=1)]  # an empty phrase would match (and drop) every prompt
CLEAN_RULES_DIR = Path(__file__).resolve().parents[2] / "clean_rules"  # scripts/clean_rules/<name>.yaml


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
        raise ValueError(f"unknown cleaning rule set {quoted(value)}{hint}")
    return value


# A shipped rule set's name, wherever params name one (clean.rules, sources.S.clean, recipe clean steps)
RuleName = Annotated[
    str, BeforeValidator(_rule_set_name), Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
]


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
        None, description='1. dropped if found after deleting spaces ("h t t p s" too)'
    )
    max_dashes: int | None = Field(None, ge=0, le=100_000, description='1. dropped with more "-" than this')
    max_pipes: int | None = Field(None, ge=0, le=100_000, description='1. dropped with more "|" than this')
    max_by: int | None = Field(None, ge=0, le=100_000, description='1. dropped with more " by " than this')
    person_names: PersonNames | None = Field(None, description="1. drop prompts naming many people (spaCy)")
    ban_words: list[Phrase] | None = Field(None, description="1. dropped when one occurs (any case)")
    max_repeat_ratio: float | None = Field(
        None, ge=0, lt=1, description="1. dropped when (words - unique words) / words is above this"
    )
    min_mean_word_len: float | None = Field(
        None, ge=0, le=1000, description="1. dropped when the mean whitespace-word length is below this"
    )
    normalise: Rewrites = Field(description="2. punctuation, numbers, SD flags, camera and resolution jargon")
    max_commas: int | None = Field(
        None, ge=0, le=100_000, description='2. dropped with more "," than this (after normalising)'
    )
    by_clause: ByClause | None = Field(description="3. artist credits (null: no such step)")
    stop_phrases: list[Phrase] = Field(description="4. deleted as whole words, any case")
    artists: list[Phrase] = Field(description='4. deleted, bare or as "by <name>"')
    sites: list[Phrase] = Field(description='4. deleted, bare or as "by <name>"')
    tidy: Rewrites = Field(description="4. rewrites after the phrase deletions")
    min_chars: int | None = Field(None, ge=0, le=1_000_000, description="5. dropped when shorter")
    max_chars: int | None = Field(None, ge=1, le=1_000_000, description="5. dropped when longer")
    min_unique_words: int | None = Field(
        None, ge=0, le=100_000, description="5. dropped with fewer distinct whitespace words"
    )
    collapse_repeats: Rewrites = Field(description='6. collapse "a a a" and "red car red car"')
    thought_phrases: list[Phrase] | None = Field(
        None, description="7. requests, not image descriptions: dropped when one occurs as whole words"
    )
    finish: Rewrites = Field(description="8. final touches")

    @model_validator(mode="after")
    def _lengths(self) -> CleanRules:
        if self.min_chars is not None and self.max_chars is not None and self.min_chars > self.max_chars:
            raise ValueError(
                f"min_chars = {self.min_chars} exceeds max_chars = {self.max_chars} (every prompt would be dropped)"
            )
        return self


class _CleanChoice(Section):
    rules: RuleName = Field(
        "final", description="the default rule set: final | 2023-04-04 | 2023-03-30 (scripts/clean_rules/<name>.yaml)"
    )

    @model_validator(mode="after")
    def _lengths(self) -> Any:
        # the rule between keys, on the overrides and the named set's own values
        lo, hi = getattr(self, "min_chars", None), getattr(self, "max_chars", None)
        if lo is None or hi is None:
            try:
                own = read_yaml(config_text(CLEAN_RULES_DIR / f"{self.rules}.yaml")) or {}
            except (OSError, yaml.YAMLError, UnicodeDecodeError, DataError):
                own = {}  # the stage names a broken rule set file when it loads it
            lo = own.get("min_chars") if lo is None else lo
            hi = own.get("max_chars") if hi is None else hi
        if isinstance(lo, int) and isinstance(hi, int) and lo > hi:
            raise ValueError(f"min_chars = {lo} exceeds max_chars = {hi} (every prompt would be dropped)")
        return self


def _override(field: FieldInfo) -> Any:
    """A rule set key's type as an override: null allowed, the set's own checks kept (ranges, rewrite names
    apart), so every stage refuses a bad override, not only those that clean."""
    kind = Annotated[(field.annotation, *field.metadata)] if field.metadata else field.annotation
    return kind if type(None) in get_args(field.annotation) else Optional[kind]  # noqa: UP045  # any annotation, at run time


# params.yaml `clean`: `rules`, then every key of a rule set as an optional override
Clean = create_model(  # type: ignore[call-overload]  # the override fields are built at run time
    "Clean",
    __base__=_CleanChoice,
    __module__=__name__,
    __doc__="""params.yaml `clean`: the named rule set the pipeline cleans with by default, and overrides of its
    keys (any key of a rule set, scripts/clean_rules/<name>.yaml; docs/cleaning.md). A key given replaces the
    set's value whole; null keeps the set's own. A source may name another set (sources.S.clean), a release
    too; the overrides apply to the set named here only.""",
    **{
        name: (_override(field), Field(None, description=f"override, null: the set's ({field.description})"))
        for name, field in CleanRules.model_fields.items()
    },
)


class SourceClean(Section):
    """`sources.S.clean` as a mapping: which rule set, and how it applies."""

    rules: RuleName | None = Field(None, description="a rule set name (null: `clean.rules` with its overrides)")
    mode: Literal["rewrite", "filter_only", "off"] = Field(
        "rewrite",
        description="rewrite: drop and rewrite; filter_only: drop, but kept rows keep their raw prompt "
        "as `text` (the team's v4-a bug); off: every row kept as is",
    )


class SourceDedup(Section):
    """`sources.S.dedup` as a mapping: the keys of the `dedup:` section this source's dedup@S overrides."""

    threshold: float | None = Field(None, gt=0, le=1, description="override of dedup.threshold (null: the section's)")
    keep: Literal["first", "longest", "none_of_pair"] | None = Field(
        None, description="override of dedup.keep (null: the section's)"
    )
    method: Literal["minhash", "embedding"] | None = Field(
        None, description="override of dedup.method (null: the section's)"
    )

    def overrides(self) -> dict:
        return {k: getattr(self, k) for k in ("threshold", "keep", "method") if getattr(self, k) is not None}
