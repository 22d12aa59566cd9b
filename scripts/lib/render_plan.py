"""What generate@S renders, before any pixel: one Job per prompt row, its seed, its key, its file name,
and the manifest that records them.

The key is sha256(model identity, every byte-changing setting, prompt, seed): an image depends on
nothing else, so the same key always names the same bytes, whichever engine, batch or machine drew it.
`noise: per_prompt` seeds each row from (generate.seed, row id); `noise: sequential` (the reference
team's) gives row i the draw i div N of generator i mod N, so its key holds (stream, draw) instead.
Pure functions: tables and settings in, jobs and tables out.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path

from scripts.lib.errors import DataError, shown_short
from scripts.lib.io import config_text
from scripts.lib.nesting import loads_json
from scripts.lib.params import Generate
from scripts.lib.safe_paths import STORE_KEY
from scripts.lib.safe_paths import stored_name as stored_name

MANIFEST = "manifest.parquet"
MANIFEST_COLUMNS = [
    "id",
    "file",
    "key",
    "seed",
    "draw",
    "model",
    "model_revision",
    "scheduler",
    "steps",
    "guidance",
    "width",
    "height",
    "format",
    "settings",
    "sha256",
]
# `draw`: sequential noise only, the row's draw from its generator (null for per_prompt noise).
# `settings`: JSON of every resolved setting that changes the saved bytes or names (preset included).
# `sha256`: of the file's bytes as generate wrote them: a file changed since is the user's (image_store.py).
MANIFEST_COLUMNS_BEFORE_SHA256 = MANIFEST_COLUMNS[:-1]  # a manifest written before it: read, never written

INDEX_PREFIX = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
KEY = STORE_KEY


@dataclass(frozen=True)
class Job:
    id: str
    prompt: str
    seed: int
    key: str
    file: str  # relative to the output dir
    stored: str = ""  # <key[:2]>/<key>.<ext>: its name in the generation store (= file with key names)
    stream: int | None = None  # sequential noise: generator (row mod noise_streams) ...
    draw: int | None = None  # ... and the draw from it (row div noise_streams)


def key_settings(settings: Generate, dtype: str, device: str = "cpu") -> dict:
    """Everything besides model, prompt and seed that changes the saved bytes (goes into the key).

    Keys added with the presets appear only when they differ from what rendering did before them, so
    the fast preset's keys (and every stored image) stay what they were. `device` matters only for
    sequential noise, drawn by a generator on the device (CPU and CUDA generators differ)."""
    if "model" in (settings.height, settings.width):
        raise ValueError("height/width 'model' must be resolved first (with_model_size)")
    key = {
        "scheduler": settings.scheduler,
        "steps": settings.steps,
        "guidance": settings.guidance,
        "height": settings.height,
        "width": settings.width,
        "resize": settings.resize or None,
        "format": settings.format,
        "dtype": dtype,
    }
    if settings.format == "jpg" and settings.quality != 95:
        key["quality"] = settings.quality
    if settings.resample != "lanczos":
        key["resample"] = settings.resample
    if settings.quantize != "native":
        key["quantize"] = settings.quantize
    if settings.noise == "sequential":
        key.update(noise="sequential", streams=settings.noise_streams, generator=device.split(":")[0])
    if dtype == "fp64":  # render.float64_scheduler changed these bytes: a store drawn before never serves them
        key["scheduler_tables"] = "fp64"
    return key


def run_settings(settings: Generate, dtype: str, device: str = "cpu", scheduler_class: str | None = None) -> dict:
    """What the manifest records: the resolved byte- and name-changing settings (no speed keys)."""
    out = {
        **key_settings(settings, dtype, device),
        "preset": settings.preset,
        "prompt_field": settings.prompt_field,
        "seed": settings.seed,
        "noise": settings.noise,
        "resample": settings.resample,
        "quantize": settings.quantize,
        "file_names": settings.file_names,
    }
    if settings.format == "jpg":
        out["quality"] = settings.quality
    if settings.scheduler == "model":
        out["scheduler_class"] = scheduler_class
    return out


def prompt_seed(global_seed: int, prompt_id: str) -> int:
    """The seed of one prompt: depends on the global seed and the row id only (63 bits, fits int64)."""
    digest = hashlib.sha256(f"{global_seed}\x00{prompt_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


def image_key(model_identity: str, render_settings: dict, prompt: str, seed: int | dict) -> str:
    payload = json.dumps(
        {"model": model_identity, "settings": render_settings, "prompt": prompt, "seed": seed},
        sort_keys=True,
        ensure_ascii=False,
    )
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def sequential_noise(settings: Generate, row: int) -> dict:
    """Where a row's noise comes from with sequential noise: its generator and its draw from it."""
    return {"seed": settings.seed, "stream": row % settings.noise_streams, "draw": row // settings.noise_streams}


def plan_jobs(
    table,
    settings: Generate,
    model_identity: str,
    dtype: str,
    input_name: str = "input",
    prefix: str = "images",
    device: str = "cpu",
) -> list[Job]:
    """One job per row, in row order. Bad rows (missing/empty text, duplicate id) are a DataError.
    `prefix` names the files with `file_names: index` (the stage passes the source name)."""
    field_name = settings.prompt_field
    if settings.file_names == "index" and not INDEX_PREFIX.fullmatch(prefix):
        raise DataError(f"{prefix!r}: not usable as an image file prefix (ASCII letters, digits, . _ -)")
    for column in ("id", field_name):
        if column not in table.columns:
            raise DataError(f"{input_name}: missing column '{column}' (generate.prompt_field={field_name})")
    render = key_settings(settings, dtype, device)
    jobs: list[Job] = []
    seen: dict[str, int] = {}
    for row, (prompt_id, prompt) in enumerate(zip(table["id"], table[field_name])):
        if not isinstance(prompt_id, str) or not prompt_id:
            raise DataError(f"{input_name}: row {row}: empty id")
        if prompt_id in seen:
            raise DataError(f"{input_name}: row {row}: duplicate id {prompt_id!r} (first at row {seen[prompt_id]})")
        seen[prompt_id] = row
        if not isinstance(prompt, str) or not prompt.strip():
            raise DataError(f"{input_name}: row {row}: empty {field_name!r} (id {prompt_id})")
        if settings.noise == "sequential":
            noise = sequential_noise(settings, row)
            seed, stream, draw = settings.seed, noise["stream"], noise["draw"]
            key = image_key(model_identity, render, prompt, noise)
        else:
            seed, stream, draw = prompt_seed(settings.seed, prompt_id), None, None
            key = image_key(model_identity, render, prompt, seed)
        stored = f"{key[:2]}/{key}.{settings.format}"
        file = stored if settings.file_names == "key" else f"{prefix}_{row:08d}.{settings.format}"
        jobs.append(Job(prompt_id, prompt, seed, key, file, stored, stream, draw))
    return jobs


def final_size(settings: Generate) -> tuple[int, int]:
    width, height = settings.width, settings.height
    if not (isinstance(width, int) and isinstance(height, int)):  # with_model_size resolves "model" first
        raise DataError(f"generate: size {width!r}x{height!r} is not resolved to pixels (read the model's first)")
    if not settings.resize:  # false: the rendered size
        return width, height
    return settings.resize, max(1, round(height * settings.resize / width))


def manifest_table(
    jobs: list[Job],
    settings: Generate,
    model_identity: str,
    recorded: dict | None = None,
    digests: dict[str, str] | None = None,
):
    """One row per job; `recorded` is the run's resolved settings (run_settings), one JSON per row;
    `digests` each file's sha256 (OutputFolder.digests_of)."""
    import pandas as pd

    width, height = final_size(settings)
    rows = {
        "id": [j.id for j in jobs],
        "file": [j.file for j in jobs],
        "key": [j.key for j in jobs],
        "seed": pd.array([j.seed for j in jobs], dtype="int64"),
        "draw": pd.array([j.draw for j in jobs], dtype="Int64"),
    }
    n = len(jobs)
    constants = {
        "model": settings.model,
        "model_revision": model_identity,
        "scheduler": settings.scheduler,
        "steps": settings.steps,
        "guidance": settings.guidance,
        "width": width,
        "height": height,
        "format": settings.format,
        "settings": json.dumps(recorded or {}, sort_keys=True),
    }
    for name, value in constants.items():
        rows[name] = [value] * n
    rows["sha256"] = pd.array([(digests or {}).get(j.file) for j in jobs], dtype="string")
    df = pd.DataFrame(rows, columns=MANIFEST_COLUMNS)
    strings = {
        name: "str" for name in ("id", "file", "key", "model", "model_revision", "scheduler", "format", "settings")
    }
    return df.astype({**strings, "steps": "int64", "width": "int64", "height": "int64", "guidance": "float64"})


def model_config(model_dir: str | Path) -> dict:
    """What the pipeline's files say about the defaults `model` stands for: the default size (the
    pipeline's own: unet sample_size x 2^(VAE levels - 1)) and the scheduler class."""

    def read(name: str) -> dict:
        try:
            # config_text: a FIFO there hung generate. "keep": a library's file (diffusers writes -Infinity)
            config = loads_json(config_text(Path(model_dir) / name), non_finite="keep")
        except (OSError, ValueError) as exc:
            raise DataError(f"{Path(model_dir) / name}: unreadable ({type(exc).__name__})") from None
        if not isinstance(config, dict):  # `[1, 2]` was an AttributeError traceback at .get
            raise DataError(f"{Path(model_dir) / name}: not a JSON object")
        return config

    sample = read("unet/config.json").get("sample_size")
    channels = read("vae/config.json").get("block_out_channels") or [0] * 4
    listed = isinstance(sample, list) or sample is None  # none: 0 x 0, as before (only `model` sizes need it)
    sides = (sample, sample) if isinstance(sample, int) else tuple(sample or (0, 0)) if listed else ()
    if len(sides) != 2 or not all(isinstance(s, int) and not isinstance(s, bool) for s in sides):  # "abc", [1]
        raise DataError(f"{Path(model_dir) / 'unet/config.json'}: sample_size {shown_short(repr(sample))} is no size")
    if not isinstance(channels, list):
        raise DataError(f"{Path(model_dir) / 'vae/config.json'}: block_out_channels {shown_short(repr(channels))}")
    (height, width), levels = sides, len(channels)
    scale = 2 ** (levels - 1)
    scheduler = read("model_index.json").get("scheduler")
    return {
        "height": height * scale,
        "width": width * scale,
        "scheduler_class": scheduler[-1] if isinstance(scheduler, list) and scheduler else None,
    }  # what loads


def with_model_size(settings: Generate, model_dir: str | Path) -> Generate:
    """`height`/`width: model` replaced by the pipeline's default size (what the team's call, which
    passed no size, rendered at)."""
    if "model" not in (settings.height, settings.width):
        return settings
    config = model_config(model_dir)
    sides = {
        side: config[side] if getattr(settings, side) == "model" else getattr(settings, side)
        for side in ("height", "width")
    }
    return settings.replace(**sides)
