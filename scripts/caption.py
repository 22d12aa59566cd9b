"""caption@S: captions for a folder of images from OpenAI-compatible vision models, in a waterfall.

The bucketed LAION export's captions were written this way: every image goes to the first model of
`models`; only when its caption fails QA (empty, cut by max_tokens, too short or long, placeholder,
unavailable-image, blank-image or refusal text) is the next model asked, and so on. An image no
model captions is dropped, its reasons counted. Each kept caption records its provenance as the card
does: `caption_variant`, `caption_selector_index` (position in the waterfall) and `caption_source_id`
(an int keying the caption_sources table: backend, model, created_at, sha256 of the prompts).

Images (`images` of the entry, read only): a folder with manifest.parquet (generate@S: id, file), or
any folder of image files and/or WebDataset tar shards (read as streams through scripts/lib/archive.py,
nothing extracted). Symbolic links are skipped: a link could send any file, a secrets file
included, to a remote API; so is a hard link, unless generate's store or DVC's cache made it.

Requests go through scripts/lib/chat_client.py, shared with synthesize@N: the same cache (one file
per request, keyed by base_url and the request body, the image given by its sha256 so cache files
stay small), retries, deadline, key redaction, kill -9 resume and offline replay.

Outputs in OUT/: captions.parquet (one row per captioned image), rejections.parquet (one row per
caption that failed QA, also those a later model replaced), sources.json, cache/, report.json.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import re
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from scripts.lib import chat_client
from scripts.lib.archive import (
    UnsafeArchive,
)
from scripts.lib.caption_images import ImageInfo, inspect_image, list_images, read_image
from scripts.lib.chat_client import Job, ResponseCache, cache_key, call_missing, read_completion
from scripts.lib.errors import DataError, shown_short
from scripts.lib.io import (
    atomic_path,
    check_not_input,
    check_output_kind,
    check_outputs_ours,
    commit_together,
    json_text,
    sha256_text,
    shown,
    writing,
)
from scripts.lib.key_redaction import redact_secrets
from scripts.lib.params import CaptionEntry, CaptionQa, load_section, parse
from scripts.lib.regex_deadline import RegexTooSlow, bounded_regexes
from scripts.lib.regex_engine import Search, compile_search
from scripts.lib.safe_paths import resolved
from scripts.lib.tables import write_parquet_file
from scripts.lib.temps import output_lock

CAPTION_COLUMNS = [
    "id",
    "image",
    "caption",
    "caption_variant",
    "caption_selector_index",
    "caption_source_id",
    "width",
    "height",
]
REJECTION_COLUMNS = ["id", "image", "caption_variant", "caption_selector_index", "reason", "caption"]


def parse_params(name: str, raw: Any) -> CaptionEntry:
    """One entry of params.yaml `caption` as its model; a bad key or value names `caption.<name>.<key>`."""
    if not isinstance(raw, dict):
        raise DataError(f"params.yaml: caption.{name}: expected a mapping, got {type(raw).__name__}")
    return parse(CaptionEntry, raw, at=("caption", name))


# ---------------------------------------------------------------- requests (pure)


def build_request(params: CaptionEntry, step: int, image_url: str) -> dict:
    """The chat-completions body asking model `step` of the waterfall for a caption of the image at
    `image_url` (a data: URI when sent; the cache records the image's sha256 in its place)."""
    content = [{"type": "text", "text": params.prompt}, {"type": "image_url", "image_url": {"url": image_url}}]
    messages: list[dict] = [{"role": "user", "content": content}]
    if params.system is not None:
        messages.insert(0, {"role": "system", "content": params.system})
    body = {**params.extra_body, "model": params.models[step].model, "messages": messages}
    if params.temperature is not None:
        body["temperature"] = params.temperature
    if params.max_tokens is not None:
        body["max_tokens"] = params.max_tokens
    return body


def stored_url(image: ImageInfo) -> str:
    """The image as the cache key and cache file name it: its type and sha256 (the bytes are in `images`)."""
    return f"data:{image.mime};sha256,{image.sha256}"


def data_url(image: ImageInfo, data: bytes) -> str:
    return f"data:{image.mime};base64,{base64.b64encode(data).decode('ascii')}"


# ---------------------------------------------------------------- QA (pure)


_ALNUM = re.compile(r"\w")


def normalise(content: str) -> str:
    """One line: the exports write a caption per .txt line."""
    return " ".join(content.split())


def qa_reason(caption: str, truncated: bool, qa: CaptionQa, rules: list[tuple[str, Search]]) -> str | None:
    """Why `caption` is not usable (None: it is). Checked in the documented order, first match wins."""
    if not _ALNUM.search(caption):
        return "empty"
    if truncated and qa.reject_truncated:
        return "truncated"
    if len(caption) < qa.min_chars:
        return "too_short"
    if qa.max_chars is not None and len(caption) > qa.max_chars:
        return "too_long"
    for reason, pattern in rules:
        if pattern.found(caption):
            return reason
    return None


def compile_rules(qa: CaptionQa) -> list[tuple[str, Search]]:
    """The QA rules as the cleaner's regex engine runs them (Python's `re`, exactly), so the same time
    bound holds them: a user's pattern that backtracks without end stops the command, never hangs it."""
    return [(rule.reason, compile_search(rule.pattern, fast=False)) for rule in qa.rules]


def checked_reason(
    caption: str, truncated: bool, qa: CaptionQa, rules: list[tuple[str, Search]], where: str
) -> str | None:
    """qa_reason under the regex time bound; past it, one line naming the rule and the image."""
    try:
        with bounded_regexes():
            return qa_reason(caption, truncated, qa, rules)
    except RegexTooSlow as exc:
        patterns = ", ".join(repr(p) for p in exc.patterns) or "a QA rule"
        raise DataError(
            f"{where}: QA regex {shown_short(patterns)} ran over {exc.seconds:g} s on its caption"
        ) from None


# ---------------------------------------------------------------- provenance (pure)


def caption_sources(params: CaptionEntry, created: list[int | None]) -> list[dict]:
    """The caption_sources table of the card: caption_source_id -> backend, model, created_at (the
    earliest `created` of the model's responses, so a replay writes the same value) and prompt hashes."""
    system_sha = sha256_text(params.system) if params.system is not None else None
    return [
        {
            "caption_source_id": step + 1,
            "backend": params.backend,
            "model": model.model,
            "created_at": created[step],
            "system_prompt_sha256": system_sha,
            "user_prompt_sha256": sha256_text(params.prompt),
        }
        for step, model in enumerate(params.models)
    ]


# ---------------------------------------------------------------- the stage


def caption(
    name: str,
    params: CaptionEntry,
    out_dir: Path,
    api_key: str | None,
    log: Callable[[str], None] = lambda message: print(shown(message), file=sys.stderr),
) -> dict:
    """Run entry `name`: caption the first `max_images` images model by model, write OUT/.

    Returns the report (also OUT/report.json). A request that fails for good stops new requests and
    fails the stage with a DataError; what finished stays cached, so the next run resumes. OUT is
    locked (output_lock): a second run into it fails at once, paying for no request twice."""
    check_output_kind(out_dir)  # a link to a folder would be written through
    with output_lock(out_dir):
        return _caption(name, params, out_dir, api_key, log)


def _caption(name: str, params: CaptionEntry, out_dir: Path, api_key: str | None, log) -> dict:
    images_dir = Path(params.images)
    check_not_input(out_dir, [images_dir])  # never write into the user's images
    if resolved(images_dir) in resolved(out_dir).parents:
        raise DataError(f"{out_dir}: inside the images folder {images_dir}; choose another output path")
    check_outputs_ours(out_dir, OUTPUTS)  # each one ours and unchanged: a report naming this entry proves
    # nothing of the files beside it (a copy of the folder keeps it; a user edits prompts.txt beside it)
    cache = ResponseCache(out_dir / "cache").open()

    listed, skipped = list_images(images_dir)
    selected = listed if params.max_images is None else listed[: params.max_images]
    infos: list[ImageInfo] = []
    for image in selected:
        try:
            infos.append(check_name(inspect_image(image, params)))
        except UnsafeArchive as exc:
            skipped[exc.reason] += 1
    log(
        f"caption {shown(name)}: {len(listed)} images in {shown(images_dir)}, {len(selected)} selected, "
        f"{len(selected) - len(infos)} skipped"
    )
    rules = compile_rules(params.qa)
    with contextlib.ExitStack() as stack:  # all four written whole before any is renamed in (a full disk left some)
        # Opened before the first request, so each output path is checked (a folder or a user's file at its
        # temp's name), and locked, before anything is paid for. Entered last, renamed first: report.json
        # proves the files beside it ours to the next run.
        sources_tmp, rejections_tmp, captions_tmp, report_tmp = (
            stack.enter_context(atomic_path(out_dir / name))
            for name in ("sources.json", "rejections.parquet", "captions.parquet", "report.json")
        )
        accepted, rejections, steps, created, usage = _waterfall(name, params, infos, cache, api_key, rules, log)
        pending = [index for index in range(len(infos)) if index not in accepted]
        last_reason = {r["id"]: r["reason"] for r in rejections}  # rejections are in waterfall order
        dropped = Counter(last_reason[infos[i].id] for i in pending)
        report = {
            "name": name,
            "base_url": params.base_url,
            "backend": params.backend,
            "images": {
                "listed": len(listed),
                "selected": len(selected),
                "skipped": dict(sorted(skipped.items())),
                "captioned": len(accepted),
                "dropped": len(pending),
            },
            "dropped": dict(sorted(dropped.items())),  # by the last model's reason
            "steps": steps,
            "requests": sum(s["requests"] for s in steps),
            "cache_hits": sum(s["cache_hits"] for s in steps),
            "api_calls": sum(s["api_calls"] for s in steps),
            "usage": usage,
        }
        import pandas as pd

        rejected = pd.DataFrame(rejections, columns=REJECTION_COLUMNS).astype({"caption_selector_index": "int16"})
        with writing(out_dir / "captions.parquet"):
            write_parquet_file(_caption_table(infos, accepted, params.variants), captions_tmp)
        with writing(out_dir / "rejections.parquet"):
            write_parquet_file(rejected, rejections_tmp)
        with writing(out_dir / "sources.json"):
            sources_tmp.write_text(json_text(waterfall(caption_sources(params, created), steps)), encoding="utf-8")
        report_tmp.write_text(json_text(report), encoding="utf-8")  # the innermost: its own errors name it
        commit_together(stack)
    log(
        f"caption {shown(name)}: {len(accepted)} captioned, {len(pending)} dropped -> {shown(out_dir / 'captions.parquet')}"
    )
    return report


def check_name(image: ImageInfo) -> ImageInfo:
    """`image`, unless its name is not UTF-8 (bytes os.fsdecode keeps as surrogates): captions.parquet and
    rejections.parquet hold its id and path as text, which such a name cannot be. Checked before the
    first request, so refusing it costs none (it was refused at the write, every request paid for)."""
    for text in (image.id, image.ref):
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise DataError(
                f"{shown(image.ref)}: the file name is not UTF-8, so captions.parquet cannot hold it; rename it"
            ) from None
    return image


def _waterfall(name: str, params: CaptionEntry, infos: list[ImageInfo], cache, api_key, rules, log) -> tuple:
    """Model by model, the images no earlier model captioned: (accepted {image index: (step, caption)},
    rejections, per-step stats, each model's earliest `created`, token usage)."""
    accepted: dict[int, tuple[int, str]] = {}  # image index -> (step, caption)
    rejections: list[dict] = []
    steps: list[dict] = []
    created: list[int | None] = []
    usage = {"prompt_tokens": 0, "completion_tokens": 0}
    pending = list(range(len(infos)))
    for step, variant in enumerate(params.variants):
        responses, stats = _run_step(name, params, step, [infos[i] for i in pending], cache, api_key, log)
        rejected: Counter = Counter()
        stamps = []
        for position, index in enumerate(pending):
            response = responses[position]
            content, truncated = read_completion(response)
            text = normalise(content)
            reason = checked_reason(text, truncated, params.qa, rules, f"caption {name}: image {infos[index].id}")
            if reason is None:
                accepted[index] = (step, text)
            else:
                rejected[reason] += 1
                image = infos[index]
                rejections.append(
                    {
                        "id": image.id,
                        "image": image.ref,
                        "caption_variant": variant,
                        "caption_selector_index": step,
                        "reason": reason,
                        "caption": text,
                    }
                )
            stamp = response.get("created")
            if isinstance(stamp, int) and not isinstance(stamp, bool):
                stamps.append(stamp)
            for kind in usage:
                value = (response.get("usage") or {}).get(kind)
                usage[kind] += value if isinstance(value, int) else 0
        created.append(min(stamps) if stamps else None)
        steps.append(
            {
                "caption_selector_index": step,
                "caption_variant": variant,
                "model": params.models[step].model,
                **stats,
                "accepted": len(pending) - sum(rejected.values()),
                "rejected": dict(sorted(rejected.items())),
            }
        )
        pending = [index for index in pending if index not in accepted]
    return accepted, rejections, steps, created, usage


def waterfall(sources, steps) -> dict:
    """sources.json: where each caption variant came from, model by model."""
    return {
        "caption_sources": sources,
        "waterfall": [
            {
                "caption_selector_index": s["caption_selector_index"],
                "caption_variant": s["caption_variant"],
                "caption_source_id": s["caption_selector_index"] + 1,
                "model": s["model"],
                "images": s["accepted"],
            }
            for s in steps
        ],
    }


def _run_step(
    name: str, params: CaptionEntry, step: int, images: list[ImageInfo], cache: ResponseCache, api_key: str | None, log
) -> tuple[list[dict], dict]:
    """Responses of model `step` for `images` (in order): cached ones replayed, the rest requested."""
    variant = params.variants[step]
    stored = [build_request(params, step, stored_url(image)) for image in images]
    keys = [cache_key(params.base_url, body) for body in stored]
    responses, missing = cache.lookup(keys)
    if images:
        log(f"caption {name}: {variant}: {len(images)} requests, {len(responses)} cached, {len(missing)} to call")
    if missing and params.offline:
        raise DataError(
            f"caption {name}: {len(missing)} of {len(images)} requests to {params.models[step].model} not in "
            f"{cache.directory} and offline is true (pull the cache or set offline: false)"
        )

    def sender(image: ImageInfo) -> Callable[[], dict]:
        def body() -> dict:  # the image is read when its request starts, not all at once
            data = read_image(image.ref, params, image.stored)
            if hashlib.sha256(data).hexdigest() != image.sha256:
                raise DataError(f"{image.ref}: the image changed while it was captioned; re-run")
            return build_request(params, step, data_url(image, data))

        return body

    jobs = [Job(position, sender(images[position]), stored[position], keys[position]) for position in missing]
    stats, failures = call_missing(
        jobs,
        base_url=params.base_url,
        api_key=api_key,
        policy=params,
        concurrency=params.concurrency,
        cache=cache,
        responses=responses,
        log=log,
        desc=f"caption {name} {variant}",
    )
    if failures:
        position, message = min(failures)
        raise DataError(
            f"caption {name}: {variant}: image {images[position].id} failed: "
            f"{redact_secrets(message, api_key)}; {len(responses)} of {len(images)} requests to "
            f"{params.models[step].model} cached, re-run to resume"
        )
    counts = {
        "requests": len(images),
        "cache_hits": len(images) - len(missing),
        "api_calls": len(missing),
        "attempts": stats.attempts,
        "retries": stats.retries,
    }
    return [responses[position] for position in range(len(images))], counts


def _caption_table(infos: list[ImageInfo], accepted: dict[int, tuple[int, str]], variants: list[str]):
    import pandas as pd

    rows = [
        {
            "id": infos[i].id,
            "image": infos[i].ref,
            "caption": text,
            "caption_variant": variants[step],
            "caption_selector_index": step,
            "caption_source_id": step + 1,
            "width": infos[i].width,
            "height": infos[i].height,
        }
        for i, (step, text) in sorted(accepted.items())
    ]
    frame = pd.DataFrame(rows, columns=CAPTION_COLUMNS)
    return frame.astype(
        {"caption_selector_index": "int16", "caption_source_id": "int64", "width": "int32", "height": "int32"}
    )


OUTPUTS = ("captions.parquet", "rejections.parquet", "sources.json", "report.json")  # cache/ is only added to


def cli(
    name: Annotated[str, typer.Argument(help="entry of params.yaml: caption")],
    out_dir: Annotated[
        Path,
        typer.Argument(help="writes captions.parquet, rejections.parquet, sources.json, cache/ and report.json here"),
    ],
) -> None:
    """Caption images with vision models in a waterfall (cached: replays offline)."""
    entries = load_section("caption")
    if name not in entries:
        raise DataError(f"params.yaml: caption has no entry '{name}' (entries: {', '.join(entries) or 'none'})")
    params = entries[name]
    caption(name, params, out_dir, chat_client.api_key_from_env(params.api_key_env))
