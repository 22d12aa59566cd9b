"""`releases`: recipes of the published dataset versions (scripts/release.py, scripts/lib/compose*.py)."""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    Field,
    model_validator,
)

from scripts.lib.params.base import NonEmpty, Section
from scripts.lib.params.clean import RuleName


class CleanStep(Section):
    """A recipe step that runs a named cleaning rule set over rows (`- clean: {rules: 2023-04-04}`)."""

    rules: RuleName = Field("final", description="final | 2023-04-04 | 2023-03-30 (scripts/clean_rules/<name>.yaml)")
    mode: Literal["rewrite", "filter_only"] = Field(
        "rewrite",
        description="rewrite: drop rows and replace `text` by the cleaned text | filter_only: drop rows, "
        "kept rows keep their text (the team's filter_before_generate_image.py)",
    )
    column: Literal["text", "orig_text"] = Field(
        "text",
        description="column cleaned: text (what the release holds; the team re-ran preprocess on metadata "
        "text) | orig_text (the raw prompt)",
    )
    repeat: Literal["once", "fixed_point"] = Field(
        "once",
        description="once: one pass | fixed_point: passes over the cleaned text until no text changes and no "
        "row is dropped (the team ran filter_by_preproc.py repeatedly for v4-b)",
    )
    language: Literal[False] | None = Field(
        None, description="false: the set's language check is off for this step (null: the set's own)"
    )


DEDUP_SCOPES = ("self", "per_split", "after_merge", "against", "validation_vs_train")
SELF_SCOPES = ("self", "per_split", "after_merge")  # those that choose which copy stays (`keep`)


class DedupStep(Section):
    """A recipe step that removes duplicates (`- dedup: {scope: per_split, threshold: 0.85, keep: none_of_pair}`).
    Unset keys take the `dedup:` section's value. Rules: scope against names `against`; before_generate
    needs scope against and a `reference` release; `threshold` and `method` go with match near, `keep`
    with the self scopes (self, per_split, after_merge): a key the step would not read is refused."""

    scope: Literal["self", "per_split", "after_merge", "against", "validation_vs_train"] = Field(
        "self",
        description="self: within the rows at hand | per_split: within each split separately | after_merge: "
        "within the whole release (release steps) | against: rows near a reference split are "
        "dropped, the reference untouched | validation_vs_train: validation rows near train dropped",
    )
    against: Literal["train", "validation"] | None = Field(None, description="scope against: the reference split")
    reference: NonEmpty | None = Field(
        None,
        description="scope against: a release whose output rows are the reference (null: the release being "
        "built, rows added so far)",
    )
    before_generate: bool = Field(
        False,
        description="run by prefilter@S on the component's source rows before generate@S (no image is "
        "rendered for a removed row); needs scope against and a `reference` release",
    )
    match: Literal["near", "exact"] = Field(
        "near", description="near: the dedup method at `threshold` | exact: identical text (the team's leak check)"
    )
    threshold: float | None = Field(
        None, gt=0, le=1, description="match near only: override of dedup.threshold (null: the section's)"
    )
    keep: Literal["first", "longest", "none_of_pair"] | None = Field(
        None,
        description="self scopes only: override of dedup.keep (null: the section's; with match exact, first); "
        "none_of_pair = every member of a duplicate pair is removed (the team's dedup_prompts.py); with match "
        "exact, longest keeps the copy with the lowest stable id (copies are equally long)",
    )
    method: Literal["minhash", "embedding"] | None = Field(
        None, description="match near only: override of dedup.method (null: the section's)"
    )

    @model_validator(mode="after")
    def _scope_keys(self) -> DedupStep:
        if self.match == "exact":
            for key in ("threshold", "method"):
                if getattr(self, key) is not None:
                    raise ValueError(f"{key} goes with match near (match exact compares the texts themselves)")
        if self.keep is not None and self.scope not in SELF_SCOPES:
            raise ValueError(
                f"keep goes with scopes {', '.join(SELF_SCOPES)} (scope {self.scope} removes rows of one side "
                "only, the other is untouched)"
            )
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
        "all", description="which split of the source's data/splits/<source>/"
    )
    into: Literal["train", "validation", "same"] = Field(
        "train",
        description="release split the rows go to; same: each row to its source split (absent: the same "
        "as `split`; train when split is all)",
    )
    rows: list[Annotated[int, Field(ge=0)] | None] | None = Field(
        None,
        min_length=2,
        max_length=2,
        description="[start, stop): a batch, by position in the source's generation "
        "list (data/dedup/S.parquet order; stop null = to the end); null: all",
    )
    steps: list[Step] = Field([], description="run in order on this component's rows before they join the release")
    dedup_against: Literal["train", "validation"] | None = Field(
        None, description="shorthand for a last step `dedup: {scope: against, against: ...}` (null: none)"
    )

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
        if self.rows is None:
            return 0, None
        start, stop = self.rows
        assert start is not None  # _range refuses a null start
        return start, stop


Bucket = Annotated[list[Annotated[int, Field(ge=64, le=8192)]], Field(min_length=2, max_length=2)]  # [width, height]
Resolution = Annotated[int, Field(ge=64, le=8192)]  # a bucketed export's base resolution


class Export(Section):
    """A release's layout: a format name, or {format: ..., option: ...}. Options are null for the format's
    default and allowed only where the format has them (webdataset: shard_size, image_format; parquet:
    shard_size; bucketed: the rest)."""

    OPTIONS: ClassVar[dict[str, set[str]]] = {
        "imagefolder": set(),
        "simpletuner": set(),
        "webdataset": {"shard_size", "image_format"},
        "parquet": {"shard_size"},
        "prompts": set(),
        "bucketed": {
            "shard_size",
            "base_resolution",
            "divisible",
            "quality",
            "proto_buckets_1024",
            "image_mode",
            "too_small_policy",
            "allowed_corners",
            "corner_jitter",
            "subsampling_policy",
            "adaptive_threshold",
            "missing_caption_policy",
            "on_error",
        },
    }

    format: Literal["imagefolder", "webdataset", "simpletuner", "parquet", "bucketed", "prompts"] = Field(
        "imagefolder",
        description="imagefolder (HF ImageFolder) | webdataset | simpletuner (SimpleTuner's DALL-E-3 "
        "preset) | parquet (images embedded) | bucketed (SDXL aspect buckets) | prompts "
        "(text only: <split>/prompts.parquet, for text_only sources)",
    )
    allow_empty: bool = Field(
        False,
        description="a split the export leaves empty while the recipe gave it rows is an error unless true "
        "(e.g. bucketed at a base_resolution above every image)",
    )
    shard_size: int | None = Field(
        None, ge=1, le=1_000_000, description="samples per tar shard or parquet file (null: 1000)"
    )
    image_format: Literal["png", "jpg", "keep"] | None = Field(
        None,
        description="webdataset: every image under one member extension, so loaders see one image column: png "
        "(lossless: PNGs as stored, others re-encoded) | jpg (JPEGs as stored, others encoded at "
        "q95) | keep (each image as stored; a release mixing types has two image columns) (null: png)",
    )
    base_resolution: Resolution | Annotated[list[Resolution], Field(min_length=1, max_length=8)] | None = Field(
        None,
        description="bucketed: side of the square bucket; a list of several: multi-resolution, "
        "bucket ids r<base>_<proto> (null: 512)",
    )
    divisible: int | None = Field(
        None, ge=1, le=1024, description="bucketed: bucket sides are multiples of this (null: 32)"
    )
    quality: int | None = Field(None, ge=1, le=100, description="bucketed: JPEG quality (null: 95)")
    proto_buckets_1024: list[Bucket] | None = Field(
        None, min_length=1, description="bucketed: [width, height] buckets at 1024 (null: the card's 40)"
    )
    image_mode: Literal["reencode_jpeg", "passthrough_jpeg"] | None = Field(
        None,
        description="bucketed: reencode_jpeg (transpose, resize, crop, encode) | passthrough_jpeg (a JPEG "
        "source's own bytes, the plan in its json) (null: reencode_jpeg)",
    )
    too_small_policy: Literal["drop", "upsample"] | None = Field(
        None, description="bucketed: an image smaller than its bucket: drop (counted) | upsample (null: drop)"
    )
    allowed_corners: list[Literal[0, 1, 2, 3]] | None = Field(
        None,
        min_length=1,
        max_length=4,
        description="bucketed: crop corners, 0 TL 1 TR 2 BL 3 BR, one per image by sha256(id) (null: [2, 3])",
    )
    corner_jitter: int | None = Field(
        None, ge=0, le=4096, description="bucketed: the crop box moves inwards up to this many pixels (null: 0)"
    )
    subsampling_policy: Literal["adaptive_scale", "4:4:4", "4:2:0"] | None = Field(
        None,
        description="bucketed: JPEG chroma; adaptive_scale: 4:4:4 when the resize scale <= adaptive_threshold, "
        "else 4:2:0 (null: adaptive_scale)",
    )
    adaptive_threshold: float | None = Field(
        None, gt=0, le=1, description="bucketed: the adaptive_scale threshold (null: 0.85)"
    )
    missing_caption_policy: Literal["empty", "skip"] | None = Field(
        None, description="bucketed: a row with blank text: empty (an empty caption) | skip (counted) (null: empty)"
    )
    on_error: Literal["fail", "skip"] | None = Field(
        None,
        description="bucketed: an image that cannot be decoded or encoded: fail (one line naming it) | "
        "skip (counted in manifest.json export_summary) (null: fail)",
    )

    @model_validator(mode="before")
    @classmethod
    def _name_alone(cls, data: Any) -> Any:
        return {"format": data} if isinstance(data, str) else data

    @model_validator(mode="after")
    def _options_of_format(self) -> Export:
        allowed = self.OPTIONS[self.format]
        for key in sorted(self.model_fields_set - {"format", "allow_empty"} - allowed):
            raise ValueError(
                f"{key} is not an option of {self.format} (options: {', '.join(sorted(allowed)) or 'none'})"
            )
        return self

    def spec(self) -> str | dict:
        """What scripts/lib/export.py's export_options takes: the name, or the name and the options set."""
        options = {k: v for k, v in self.model_dump().items() if k not in ("format", "allow_empty") and v is not None}
        return {"format": self.format, **options} if options else self.format


class Release(Section):
    """One published version, `releases.<V>` (the language: docs/recipes.md). With `base`, the base release's
    output rows come first and this recipe's components and steps apply to them; only `export` is inherited."""

    base: NonEmpty | None = Field(None, description="release whose output rows this one starts from (null: none)")
    description: str = Field("", description="one paragraph for the data card")
    components: list[Component] = Field([], description="added in order, after the base's rows")
    steps: list[Step] = Field([], description="run in order on all rows once the components are merged")
    reclean: bool = Field(False, description="shorthand for a last step `clean: {rules: final, column: orig_text}`")
    validation_leaks: Literal["none", "exact", "near"] = Field(
        "none", description="shorthand for a last step `dedup: {scope: validation_vs_train, match: exact|near}`"
    )
    export: Export = Field(Export(), description="layout of train/ and validation/ (see the Export table)")
