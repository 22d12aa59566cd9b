"""generate@S stage: render one image per prompt into a content-addressed, resumable image store.

    python -m scripts generate S data/dedup/S.parquet data/images/S [--store data/image_store]
    python -m scripts generate-prune [--store data/image_store] [--keep data/images/S ...] [--all]

`generate.preset` fills every key left null (scripts/lib/params.py GENERATE_PRESETS): `fast` (the
default) is what follows; `reference` is the reference team's generate_sd2_images.py (see below).

With `noise: per_prompt` (fast) each prompt row gets its own seed, derived from `generate.seed` and the
row id (never from batch position), and its own initial noise, so an image depends only on (model,
settings, prompt, seed). The image's file name is the key sha256(model identity, settings, prompt, seed):

    data/images/S/manifest.parquet          one row per prompt (written last, atomically), with the
                                            resolved settings (`settings`, JSON) of the run
    data/images/S/ab/abcdef0123....jpg      fanned out by the first two hex digits of the key

`noise: sequential` (reference) draws the noise as the team did: one generator on the pipeline's
device seeded `generate.seed`, one draw of the latent shape per row in row order (row i uses
generator i mod `noise_streams`, the team's one process per GPU), so a row's image depends on its
position: the key holds (stream, draw) instead of a per-row seed, and dropping a row re-renders every
later one. Rows already rendered are drawn and dropped, so a resumed run gives the team's bytes (their
own resume did not: it skipped the draw). `file_names: index` names the images `<S>_<row:08d>.jpg`
at the top of OUTPUT (the team's `{prefix}_{idx:08d}.jpg`); the store keeps them by key, and OUTPUT's
manifest says which key each name holds.

A re-run prunes files of OUTPUT whose key is no longer wanted, renders only the missing keys, then
writes the manifest. With `--store DIR` (dvc.yaml: data/image_store) images are rendered into the
generation store, a folder outside every DVC output with the same `<key[:2]>/<key>.<ext>` layout, and
hard-linked (copied across filesystems) into OUTPUT; a key found there is never rendered again:

    data/image_store/.gitignore             `*`: a local cache, never committed
    data/image_store/.tmp/                  temp files (a killed run's are swept by the next one)
    data/image_store/ab/abcdef0123....jpg   every image rendered or seen here, until generate-prune

Before rendering, the store takes in (hard links, no copies) the images OUTPUT already holds and the
ones of OUTPUT's previous version as dvc.lock records it, read from the DVC cache: DVC deletes a
stage's outputs before it runs, and a fresh clone after `dvc pull` has no store, so a threshold
change never re-renders what the cache holds. The store only ever saves time: an image in it has the
bytes rendering would give (same key), so OUTPUT and dvc.lock do not depend on its history, and
only `generate-prune` deletes from it. Every image is written to a temp file and renamed, so `kill
-9` at any moment leaves only whole images and a re-run completes the set. Encoding and writing run
in a thread pool while the next batch denoises. Pruning refuses to touch a directory holding files
this stage did not write (a mistyped path).

On CPU the pipeline runs in float64 (`generate.cpu_dtype`): float32 CPU kernels change the last bits
with the batch size and thread count, float64 ones (measured) do not, so the saved bytes are the same
for any batch size, thread count or engine.
"""
from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import shutil
import threading
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
from typing import Optional

import typer

from scripts.lib.errors import DataError
from scripts.lib.nesting import loads_json
from scripts.lib.params import Generate, load_section, parse
from scripts.lib.io import read_parquet, write_parquet

MANIFEST = "manifest.parquet"
MANIFEST_COLUMNS = ["id", "file", "key", "seed", "draw", "model", "model_revision", "scheduler", "steps", "guidance",
                    "width", "height", "format", "settings"]
# `draw`: sequential noise only, the row's draw from its generator (null for per_prompt noise).
# `settings`: JSON of every resolved setting that changes the saved bytes or names (preset included).


def load_settings(params: dict | None) -> Generate:
    """params.yaml `generate:` (a plain mapping) as its model (scripts/lib/params.py); a bad value is one
    DataError naming the key. The stage itself uses `load_section("generate")`."""
    return parse(Generate, params or {}, at=("generate",))


def key_settings(settings: Generate, dtype: str, device: str = "cpu") -> dict:
    """Everything besides model, prompt and seed that changes the saved bytes (goes into the key).

    Keys added with the presets appear only when they differ from what rendering did before them, so
    the fast preset's keys (and every stored image) stay what they were. `device` matters only for
    sequential noise, drawn by a generator on the device (CPU and CUDA generators differ)."""
    if "model" in (settings.height, settings.width):
        raise ValueError("height/width 'model' must be resolved first (with_model_size)")
    key = {"scheduler": settings.scheduler, "steps": settings.steps, "guidance": settings.guidance,
           "height": settings.height, "width": settings.width, "resize": settings.resize or None,
           "format": settings.format, "dtype": dtype}
    if settings.format == "jpg" and settings.quality != 95:
        key["quality"] = settings.quality
    if settings.resample != "lanczos":
        key["resample"] = settings.resample
    if settings.quantize != "native":
        key["quantize"] = settings.quantize
    if settings.noise == "sequential":
        key.update(noise="sequential", streams=settings.noise_streams, generator=device.split(":")[0])
    return key


def run_settings(settings: Generate, dtype: str, device: str = "cpu", scheduler_class: str | None = None) -> dict:
    """What the manifest records: the resolved byte- and name-changing settings (no speed keys)."""
    out = {**key_settings(settings, dtype, device), "preset": settings.preset, "prompt_field": settings.prompt_field,
           "seed": settings.seed, "noise": settings.noise, "resample": settings.resample,
           "quantize": settings.quantize, "file_names": settings.file_names}
    if settings.format == "jpg":
        out["quality"] = settings.quality
    if settings.scheduler == "model":
        out["scheduler_class"] = scheduler_class
    return out


# ---------------------------------------------------------------- pure core: seeds, keys, plan

def prompt_seed(global_seed: int, prompt_id: str) -> int:
    """The seed of one prompt: depends on the global seed and the row id only (63 bits, fits int64)."""
    digest = hashlib.sha256(f"{global_seed}\x00{prompt_id}".encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") >> 1


def image_key(model_identity: str, render_settings: dict, prompt: str, seed: int | dict) -> str:
    payload = json.dumps({"model": model_identity, "settings": render_settings, "prompt": prompt, "seed": seed},
                         sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def sequential_noise(settings: Generate, row: int) -> dict:
    """Where a row's noise comes from with sequential noise: its generator and its draw from it."""
    return {"seed": settings.seed, "stream": row % settings.noise_streams, "draw": row // settings.noise_streams}


@dataclass(frozen=True)
class Job:
    id: str
    prompt: str
    seed: int
    key: str
    file: str  # relative to the output dir
    stored: str = ""  # <key[:2]>/<key>.<ext>: its name in the generation store (= file with key names)
    stream: Optional[int] = None  # sequential noise: generator (row mod noise_streams) ...
    draw: Optional[int] = None  # ... and the draw from it (row div noise_streams)


INDEX_PREFIX = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def plan_jobs(table, settings: Generate, model_identity: str, dtype: str, input_name: str = "input",
              prefix: str = "images", device: str = "cpu") -> list[Job]:
    """One job per row, in row order. Bad rows (missing/empty text, duplicate id) are a DataError.
    `prefix` names the files with `file_names: index` (the stage passes the source name)."""
    field_name = settings.prompt_field
    if settings.file_names == "index" and not INDEX_PREFIX.fullmatch(prefix):
        raise DataError(f"{prefix!r}: not usable as an image file prefix (letters, digits, . _ -)")
    for column in ("id", field_name):
        if column not in table.columns:
            raise DataError(f"{input_name}: missing column '{column}' (generate.prompt_field={field_name})")
    render = key_settings(settings, dtype, device)
    jobs, seen = [], {}
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


def manifest_table(jobs: list[Job], settings: Generate, model_identity: str, recorded: dict | None = None):
    """One row per job; `recorded` is the run's resolved settings (run_settings), one JSON per row."""
    import pandas as pd

    width, height = final_size(settings)
    rows = {
        "id": [j.id for j in jobs], "file": [j.file for j in jobs], "key": [j.key for j in jobs],
        "seed": pd.array([j.seed for j in jobs], dtype="int64"),
        "draw": pd.array([j.draw for j in jobs], dtype="Int64"),
    }
    n = len(jobs)
    constants = {"model": settings.model, "model_revision": model_identity, "scheduler": settings.scheduler,
                 "steps": settings.steps, "guidance": settings.guidance, "width": width, "height": height,
                 "format": settings.format, "settings": json.dumps(recorded or {}, sort_keys=True)}
    for name, value in constants.items():
        rows[name] = [value] * n
    df = pd.DataFrame(rows, columns=MANIFEST_COLUMNS)
    strings = {name: "str" for name in ("id", "file", "key", "model", "model_revision", "scheduler", "format",
                                        "settings")}
    return df.astype({**strings, "steps": "int64", "width": "int64", "height": "int64", "guidance": "float64"})


def final_size(settings: Generate) -> tuple[int, int]:
    if not settings.resize:  # false: the rendered size
        return settings.width, settings.height
    return settings.resize, max(1, round(settings.height * settings.resize / settings.width))


def model_config(model_dir: str | Path) -> dict:
    """What the pipeline's files say about the defaults `model` stands for: the default size (the
    pipeline's own: unet sample_size x 2^(VAE levels - 1)) and the scheduler class."""
    def read(name: str) -> dict:
        try:
            return loads_json((Path(model_dir) / name).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise DataError(f"{Path(model_dir) / name}: unreadable ({type(exc).__name__})") from None

    sample = read("unet/config.json").get("sample_size")
    levels = len(read("vae/config.json").get("block_out_channels") or [0] * 4)
    height, width = (sample, sample) if isinstance(sample, int) else tuple(sample or (0, 0))
    scale = 2 ** (levels - 1)
    return {"height": height * scale, "width": width * scale,
            "scheduler_class": (read("model_index.json").get("scheduler") or [None, None])[-1]}  # what loads


def with_model_size(settings: Generate, model_dir: str | Path) -> Generate:
    """`height`/`width: model` replaced by the pipeline's default size (what the team's call, which
    passed no size, rendered at)."""
    if "model" not in (settings.height, settings.width):
        return settings
    config = model_config(model_dir)
    sides = {side: config[side] if getattr(settings, side) == "model" else getattr(settings, side)
             for side in ("height", "width")}
    return settings.replace(**sides)


# ---------------------------------------------------------------- model: where it is, what it is

def resolve_model(settings: Generate) -> tuple[str, str]:
    """(local directory of the pipeline, identity string that changes when the weights change).

    A local directory is identified by the sha256 of all its files; a hub id by its commit
    (`id@revision`), resolved from the local cache unless `generate.allow_download` is true.
    """
    path = Path(settings.model)
    if path.is_dir():
        if not (path / "model_index.json").exists():
            raise DataError(f"generate.model={settings.model}: no model_index.json (not a diffusers pipeline dir)")
        return str(path), "sha256:" + hash_directory(path)
    if path.exists() or settings.model.startswith((".", "/")) or settings.model.count("/") != 1:
        raise DataError(f"generate.model={settings.model}: not found (run `dvc repro tiny_model`, or give a hub id)")
    quiet_libraries()
    from diffusers import StableDiffusionPipeline

    try:
        local = StableDiffusionPipeline.download(settings.model, local_files_only=not settings.allow_download)
    except Exception as exc:
        if settings.allow_download:
            raise DataError(f"generate.model={settings.model}: cannot download ({type(exc).__name__})") from None
        raise DataError(f"generate.model={settings.model}: no such directory and not in the local Hugging Face "
                        "cache (build the tiny model with `dvc repro tiny_model`, or set "
                        "generate.allow_download: true to fetch a hub id)") from None
    return str(local), f"{settings.model}@{Path(local).name}"


_DIRECTORY_HASHES: dict = {}  # (path, stamp) -> sha256, so a benchmark or Ray worker hashes a model once


def directory_stamp(path: Path) -> tuple:
    """Cheap fingerprint (names, sizes, mtimes, inodes): changes whenever a file is replaced."""
    files = sorted(p for p in Path(path).rglob("*") if p.is_file())
    return tuple((p.relative_to(path).as_posix(), p.stat().st_size, p.stat().st_mtime_ns, p.stat().st_ino) for p in files)


def hash_directory(path: Path) -> str:
    """sha256 over every file's relative name and bytes (an SD2 checkpoint: a few seconds, once per process)."""
    cache_key = (str(Path(path).resolve()), directory_stamp(path))
    if cache_key not in _DIRECTORY_HASHES:
        _DIRECTORY_HASHES[cache_key] = _hash_files(Path(path))
    return _DIRECTORY_HASHES[cache_key]


def _hash_files(path: Path) -> str:
    digest = hashlib.sha256()
    for file in sorted(p for p in Path(path).rglob("*") if p.is_file()):
        digest.update(file.relative_to(path).as_posix().encode("utf-8") + b"\x00")
        with file.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        digest.update(b"\x00")
    return digest.hexdigest()


def resolve_device(settings: Generate) -> tuple[str, str]:
    """(torch device, dtype name) actually used; CPU always uses cpu_dtype."""
    import torch

    device = settings.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise DataError("generate.device=cuda but no CUDA device is available (use device: auto or cpu)")
    return device, (settings.cpu_dtype if device == "cpu" else settings.dtype)


_PIPELINES: dict = {}  # the loaded pipeline of this process, by model files and settings


def load_pipeline(settings: Generate, model_dir: str, device: str, dtype: str):
    """The diffusers pipeline for these settings, loaded once per process (Ray workers, benchmarks)."""
    cache_key = (model_dir, directory_stamp(Path(model_dir)), device, dtype, settings.scheduler, settings.compile)
    if cache_key not in _PIPELINES:
        _PIPELINES.clear()  # one model in memory at a time
        _PIPELINES[cache_key] = _load_pipeline(settings, model_dir, device, dtype)
    return _PIPELINES[cache_key]


def quiet_libraries() -> None:
    """Silence per-prompt truncation notices, import-time backend notes and progress bars."""
    from transformers.utils import logging as transformers_logging

    transformers_logging.set_verbosity_error()
    transformers_logging.disable_progress_bar()
    from diffusers.utils import logging as diffusers_logging

    diffusers_logging.set_verbosity_error()
    diffusers_logging.disable_progress_bar()


def _load_pipeline(settings: Generate, model_dir: str, device: str, dtype: str):
    import torch

    quiet_libraries()
    from diffusers import (DDIMScheduler, DPMSolverMultistepScheduler, EulerDiscreteScheduler,
                           StableDiffusionPipeline)

    torch_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32, "fp64": torch.float64}[dtype]
    pipe = StableDiffusionPipeline.from_pretrained(model_dir, dtype=torch_dtype, local_files_only=True,
                                                   use_safetensors=True,  # never unpickle weights
                                                   safety_checker=None, requires_safety_checker=False)
    pipe.to(device=device, dtype=torch_dtype)
    if settings.scheduler != "model":  # model: the pipeline's own scheduler config, as loaded
        scheduler_class = {"ddim": DDIMScheduler, "dpmpp": DPMSolverMultistepScheduler, "euler": EulerDiscreteScheduler}
        extra = {"algorithm_type": "dpmsolver++"} if settings.scheduler == "dpmpp" else {}
        pipe.scheduler = scheduler_class[settings.scheduler].from_config(pipe.scheduler.config, **extra)
    pipe.set_progress_bar_config(disable=True)
    if device != "cpu":
        pipe.unet.to(memory_format=torch.channels_last)
        pipe.vae.to(memory_format=torch.channels_last)
    if settings.compile:
        mode = None
        if device != "cpu":  # the diffusers "speed up inference" recipe (unmeasured here: no GPU yet)
            import torch._inductor.config as inductor

            inductor.conv_1x1_as_mm = True
            inductor.coordinate_descent_tuning = True
            inductor.epilogue_fusion = False
            inductor.coordinate_descent_check_all_directions = True
            pipe.fuse_qkv_projections()
            mode = "max-autotune"  # CUDA graphs too: render_shard pads batches to one shape
        pipe.unet = torch.compile(pipe.unet, mode=mode, fullgraph=device != "cpu")
        pipe.vae.decode = torch.compile(pipe.vae.decode, mode=mode, fullgraph=device != "cpu")
    return pipe


# ---------------------------------------------------------------- rendering and writing

def initial_latents(jobs: list[Job], pipe, settings: Generate):
    """Per-prompt noise from a per-prompt CPU generator: independent of batch, device and order."""
    import torch

    channels = pipe.unet.config.in_channels
    scale = pipe.vae_scale_factor
    shape = (1, channels, settings.height // scale, settings.width // scale)
    noise = [torch.randn(shape, generator=torch.Generator("cpu").manual_seed(j.seed), dtype=torch.float32) for j in jobs]
    return torch.cat(noise).to(device=pipe.device, dtype=pipe.unet.dtype)


class SequentialNoise:
    """The team's noise: per stream one generator on the pipeline's device seeded `seed`, and one draw
    of the latent shape per row, in row order, exactly as StableDiffusionPipeline draws it when given
    the generator (diffusers' randn_tensor, in the text encoder's dtype). Draws of rows not rendered
    now (already in OUTPUT or the store, or in another Ray shard) are taken and dropped, so a row's
    noise depends only on its position. Jobs must come in row order."""

    def __init__(self, pipe, settings: Generate):
        import torch
        from diffusers.utils.torch_utils import randn_tensor

        self._randn, self._torch = randn_tensor, torch
        self.device = pipe._execution_device
        self.dtype = pipe.text_encoder.dtype  # = prompt_embeds.dtype, which prepare_latents draws in
        scale = pipe.vae_scale_factor
        self.shape = (1, pipe.unet.config.in_channels, settings.height // scale, settings.width // scale)
        self.seed = settings.seed
        self.streams: dict[int, list] = {}  # stream -> [generator, draws taken]

    def _draw(self, generator):
        return self._randn(self.shape, generator=generator, device=self.device, dtype=self.dtype)

    def latents(self, jobs: list[Job]):
        drawn: dict[str, object] = {}  # a padded batch repeats its last job
        for job in jobs:
            if job.id in drawn:
                continue
            state = self.streams.get(job.stream)
            if state is None:
                state = self.streams[job.stream] = [self._torch.Generator(self.device).manual_seed(self.seed), 0]
            if job.draw < state[1]:
                raise RuntimeError(f"sequential noise: row {job.id} comes after a later row of its stream")
            while state[1] < job.draw:
                self._draw(state[0])
                state[1] += 1
            drawn[job.id] = self._draw(state[0])
            state[1] += 1
        return self._torch.cat([drawn[j.id] for j in jobs])


def encode_image(pixels, settings: Generate) -> bytes:
    """uint8 HxWx3 array -> file bytes (no metadata, so the bytes depend only on the pixels)."""
    from PIL import Image

    image = Image.fromarray(pixels)
    size = final_size(settings)
    if image.size != size:
        image = image.resize(size, {"lanczos": Image.Resampling.LANCZOS, "bicubic": Image.Resampling.BICUBIC}[settings.resample])
    buffer = BytesIO()
    if settings.format == "jpg":
        image.save(buffer, "JPEG", quality=settings.quality)
    elif settings.format == "webp":
        image.save(buffer, "WEBP", lossless=True)
    else:
        image.save(buffer, "PNG")
    return buffer.getvalue()


def write_file_atomic(path: Path, data: bytes, tmp_dir: Path | None = None) -> None:
    """Temp file + rename: a name in the store always holds a whole image (the temp file in `tmp_dir`,
    on the same filesystem, or beside `path`)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = (tmp_dir or path.parent) / f".{path.name}.tmp-{os.getpid()}-{threading.get_ident()}"
    with tmp.open("wb") as f:
        f.write(data)
    os.replace(tmp, path)


def link_file(src: Path, dst: Path, tmp_dir: Path | None = None) -> None:
    """Make `dst` the file `src` (a hard link; a copy across filesystems or where links are refused).
    Never writes into an existing file: a link or a temp copy renamed over `dst`."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)
        return
    except FileExistsError:
        pass
    except OSError as exc:
        if exc.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP, errno.EACCES):
            raise
        tmp = (tmp_dir or dst.parent) / f".{dst.name}.tmp-{os.getpid()}-{threading.get_ident()}"
        shutil.copyfile(src, tmp)
        os.replace(tmp, dst)
        return
    tmp = (tmp_dir or dst.parent) / f".{dst.name}.tmp-{os.getpid()}-{threading.get_ident()}"
    os.link(src, tmp)
    os.replace(tmp, dst)


@dataclass
class RenderStats:
    pipeline_calls: int = 0
    prompts_rendered: int = 0


def render_shard(jobs: list[Job], settings: Generate, model_dir: str, output: str, desc: str = "generate",
                 store: str | None = None) -> RenderStats:
    """Render `jobs` into `output` (with `store`: into the store, each image then linked into `output`
    as soon as it is written). The one function both engines run (Ray: one per GPU)."""
    import torch

    from scripts.lib.progress import Progress

    stats = RenderStats()
    if not jobs:
        return stats
    device, dtype = resolve_device(settings)
    pipe = load_pipeline(settings, model_dir, device, dtype)
    out = Path(output)
    saved = Path(store) if store else None

    def save(array, job: Job) -> None:
        data = encode_image(array, settings)
        if saved is None:
            write_file_atomic(out / job.file, data)
        else:
            write_file_atomic(saved / job.stored, data, saved / STORE_TMP)
            link_file(saved / job.stored, out / job.file)

    sequential = SequentialNoise(pipe, settings) if settings.noise == "sequential" else None
    # Handed to the pipeline only to prove it unused: noise comes from `latents`, and a scheduler that
    # draws more at each step (ancestral, SDE) would make the bytes depend on the global RNG.
    probe = torch.Generator(pipe._execution_device).manual_seed(0)
    probe_state = probe.get_state()

    max_pending = 2 * settings.batch_size  # bounded: encoding may lag one batch behind, never more
    with ThreadPoolExecutor(settings.writers, thread_name_prefix="encode") as pool, torch.inference_mode(), \
            Progress(desc, total=len(jobs), unit="images") as progress:
        pending: deque = deque()
        for start in range(0, len(jobs), settings.batch_size):
            batch = jobs[start:start + settings.batch_size]
            padded = batch
            if settings.compile and len(batch) < settings.batch_size:
                padded = batch + [batch[-1]] * (settings.batch_size - len(batch))  # one shape: no recompile
            latents = sequential.latents(padded) if sequential else initial_latents(padded, pipe, settings)
            images = pipe([j.prompt for j in padded], num_inference_steps=settings.steps,
                          guidance_scale=settings.guidance, height=settings.height, width=settings.width,
                          latents=latents, generator=probe, output_type="pt").images[:len(batch)]
            if not torch.equal(probe.get_state(), probe_state):
                raise DataError(f"generate.scheduler={settings.scheduler}: {type(pipe.scheduler).__name__} draws noise "
                                "at every step, so images would not be reproducible (use ddim, dpmpp or euler)")
            stats.pipeline_calls += 1
            stats.prompts_rendered += len(batch)
            # [0,1] floats -> uint8 on the device (4x less to copy), then hand off to the encoders;
            # float32 first rounds as diffusers' PIL output does (numpy_to_pil), the team's images
            if settings.quantize == "float32":
                images = images.float()
            pixels = (images * 255).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
            for job, array in zip(batch, pixels):
                pending.append(pool.submit(save, array, job))
            while len(pending) > max_pending:
                pending.popleft().result()
            progress.advance(len(batch))
        for future in pending:
            future.result()
    return stats


def render_with_ray(jobs: list[Job], settings: Generate, model_dir: str, output: str,
                    store: str | None = None) -> RenderStats:
    """Same shard function as Ray tasks, one per GPU (or per CPU when the cluster has none).

    The output dir and model dir must be on a filesystem every Ray node sees (as on a GPU cluster).
    """
    if not jobs:
        return RenderStats()
    try:
        import ray
    except ImportError:
        raise DataError("generate.engine=ray but ray is not installed (pip install ray)") from None
    repo_root = str(Path(__file__).resolve().parents[1])
    started_here = not ray.is_initialized()
    if started_here:
        python_path = os.pathsep.join(p for p in (repo_root, os.environ.get("PYTHONPATH")) if p)
        ray.init(address=settings.ray_address, include_dashboard=False, log_to_driver=False,
                 runtime_env={"env_vars": {"PYTHONPATH": python_path}})  # workers import scripts.generate
    try:
        resources = ray.cluster_resources()
        gpus = int(resources.get("GPU", 0))
        workers = gpus or max(1, int(resources.get("CPU", 1)))
        task = ray.remote(num_gpus=1 if gpus else 0, num_cpus=1)(render_shard)
        shards = [jobs[i::workers] for i in range(workers)]
        results = ray.get([task.remote(shard, settings, model_dir, output, "generate", store) for shard in shards if shard])
    finally:
        if started_here:
            ray.shutdown()
    total = RenderStats()
    for r in results:
        total.pipeline_calls += r.pipeline_calls
        total.prompts_rendered += r.prompts_rendered
    return total


# ---------------------------------------------------------------- the output folder

# What this stage writes: the manifest, <2 hex>/<key>.<ext>, and their temp files (`.<name>.tmp-...`).
_STORE_FILE = re.compile(r"(\.?manifest\.parquet(\.tmp-.*)?|[0-9a-f]{2}/\.?[0-9a-f]{64}\.(jpg|webp|png)(\.tmp-.*)?)")
_STORE_DIR = re.compile(r"[0-9a-f]{2}")
_IMAGE_FILE = re.compile(r"[0-9a-f]{2}/[0-9a-f]{64}\.(jpg|webp|png)")
# file_names: index puts <prefix>_<row:08d>.<ext> (and its temp files) at the top of OUTPUT
_INDEX_FILE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*_[0-9]{8,}\.(jpg|webp|png)")
_KEY = re.compile(r"[0-9a-f]{64}")
_INDEX_TEMP = re.compile(r"\.[A-Za-z0-9][A-Za-z0-9._-]*_[0-9]{8,}\.(jpg|webp|png)\.tmp-.*")


def stored_name(key: str, file: str) -> str:
    """An image's name in the generation store, from its key and any name it has in OUTPUT."""
    return f"{key[:2]}/{key}{Path(file).suffix}"


def output_keys(output: Path) -> dict[str, str]:
    """file -> key from OUTPUT's manifest, if any. Written last, after every image, and deleted before a
    run touches anything, so it tells which key an index-named file holds; without it they are unknown."""
    manifest = Path(output) / MANIFEST
    if not manifest.is_file():
        return {}
    try:
        import pyarrow.parquet as pq

        table = pq.read_table(manifest, columns=["file", "key"]).to_pydict()
    except Exception:  # noqa: BLE001 - an unreadable manifest only means re-rendering
        return {}
    return {f: k for f, k in zip(table["file"], table["key"]) if isinstance(f, str) and _KEY.fullmatch(str(k))}


def prune_store(output: Path, wanted: set[str], keep_in: Path | None = None, keys: dict[str, str] | None = None) -> int:
    """Delete every file under `output` that is not a wanted image (old keys, temp files, manifest);
    return how many files besides the manifest went. With `keep_in` (the generation store), every
    image of `output` whose key is known (its name, or `keys`: file -> key for index names) is linked
    into it first, so a pruned image is never rendered again.

    Refuses, deleting nothing, when the directory holds anything this stage did not write: a
    mistyped output path must not wipe someone's data.
    """
    if not output.exists():
        return 0
    paths = sorted(output.rglob("*"), reverse=True)
    for path in paths:
        rel = path.relative_to(output).as_posix()
        ours = _STORE_DIR.fullmatch(rel) if path.is_dir() and not path.is_symlink() else (
            _STORE_FILE.fullmatch(rel) or _INDEX_FILE.fullmatch(rel) or _INDEX_TEMP.fullmatch(rel))
        if not ours:
            raise DataError(f"{output}: holds {rel!r}, which generate did not write; refusing to prune it "
                            "(point the stage at its own image directory)")
    removed = 0
    for path in paths:
        rel = path.relative_to(output).as_posix()
        if path.is_dir() and not path.is_symlink():
            if not any(path.iterdir()):
                path.rmdir()
            continue
        stored = rel if _IMAGE_FILE.fullmatch(rel) else (
            stored_name(keys[rel], rel) if keys and rel in keys and _INDEX_FILE.fullmatch(rel) else None)
        if keep_in is not None and stored and not (keep_in / stored).is_file():
            link_file(path, keep_in / stored, keep_in / STORE_TMP)
        if rel not in wanted:
            path.unlink()
            removed += rel != MANIFEST
    return removed


# ---------------------------------------------------------------- the generation store

STORE_TMP = ".tmp"  # temp files of the store's writers (same filesystem: renamed into place)
STORE_IGNORE = ".gitignore"
_TMP_PID = re.compile(r"\.tmp-(\d+)-\d+$")


def check_store(store: Path, output: Path | None = None) -> None:
    """The store holds only what generate writes there, and is neither inside OUTPUT nor around it."""
    if store.exists() and not store.is_dir():
        raise DataError(f"{store}: is a file, expected the generation store folder")
    if output is not None:
        a, b = os.path.abspath(store), os.path.abspath(output)
        if a == b or a.startswith(b + os.sep) or b.startswith(a + os.sep):
            raise DataError(f"--store {store}: must be a folder of its own, not {output} or inside/around it")
    if store.is_dir():
        for entry in sorted(store.iterdir()):
            if entry.name in (STORE_IGNORE, STORE_TMP) or (_STORE_DIR.fullmatch(entry.name) and entry.is_dir()):
                continue
            raise DataError(f"{store}: holds {entry.name!r}, which generate did not write; refusing to use it as "
                            "the generation store (point --store at its own folder, e.g. data/image_store)")


def open_store(store: Path, output: Path | None = None) -> Path:
    """Create the store (ignored by git: a local cache) if needed; sweep temp files of dead runs."""
    store = Path(store)
    check_store(store, output)
    (store / STORE_TMP).mkdir(parents=True, exist_ok=True)
    if not (store / STORE_IGNORE).is_file():
        write_file_atomic(store / STORE_IGNORE, b"*\n", store / STORE_TMP)
    for tmp in (store / STORE_TMP).iterdir():
        match = _TMP_PID.search(tmp.name)
        if match is None or not _alive(int(match.group(1))):
            tmp.unlink(missing_ok=True)
    return store


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def previous_version(output: Path) -> dict[str, Path]:
    """Image name in the store -> DVC cache file, for OUTPUT as the working directory's dvc.lock records it
    (the version this run replaces: DVC deletes a stage's outputs before running it); index-named files
    through that version's manifest. Empty outside a DVC repository, for an output dvc.lock does not
    list, or when its listing is not in the cache."""
    lock = Path("dvc.lock")
    rel = os.path.relpath(os.path.abspath(output), os.getcwd()).replace(os.sep, "/")
    if not lock.is_file() or rel.startswith("../"):
        return {}
    import yaml

    try:
        stages = (yaml.safe_load(lock.read_text(encoding="utf-8")) or {}).get("stages") or {}
        oid = next((out.get("md5") for stage in stages.values() for out in stage.get("outs") or []
                    if out.get("path") == rel), None)
        if not isinstance(oid, str) or not oid.endswith(".dir"):
            return {}
        from dvc.repo import Repo

        with Repo(".") as repo:  # the cache may live elsewhere (cache.dir, `dvc exp run --temp`)
            odb = repo.cache.local
            entries = json.loads(Path(odb.oid_to_path(oid)).read_text(encoding="utf-8"))
            cached = {str(e.get("relpath", "")): Path(odb.oid_to_path(e["md5"])) for e in entries
                      if isinstance(e.get("md5"), str)}
        keys = {}
        if any(_INDEX_FILE.fullmatch(rel) for rel in cached) and MANIFEST in cached:
            import pyarrow.parquet as pq

            table = pq.read_table(cached[MANIFEST], columns=["file", "key"]).to_pydict()
            keys = {f: k for f, k in zip(table["file"], table["key"]) if _KEY.fullmatch(str(k))}
        found = {rel: path for rel, path in cached.items() if _IMAGE_FILE.fullmatch(rel)}
        found.update({stored_name(keys[rel], rel): path for rel, path in cached.items()
                      if _INDEX_FILE.fullmatch(rel) and rel in keys})
        return found
    except Exception:  # noqa: BLE001 - only a head start: a lock or cache it cannot read means rendering
        return {}


def take_in_previous(output: Path, store: Path) -> int:
    """Link into the store every image of OUTPUT's previous version (dvc.lock) that the DVC cache holds
    and the store lacks; return how many."""
    taken = 0
    for rel, cached in previous_version(output).items():
        if not (store / rel).is_file() and cached.is_file():
            link_file(cached, store / rel, store / STORE_TMP)
            taken += 1
    return taken


def generate(table, settings: Generate, output: Path, input_name: str = "input", store: Path | None = None,
             prefix: str | None = None) -> dict:
    """Make `output` hold exactly one image per row of `table` plus the manifest. Returns counts.

    With `store` (the generation store), images come from it when it has their key, new ones are
    rendered into it, and the images of `output` (now and in its previous DVC version) are added to it.
    `prefix` (default: OUTPUT's folder name, i.e. the source) names the files with `file_names: index`."""
    model_dir, identity = resolve_model(settings)
    device, dtype = resolve_device(settings)
    settings = with_model_size(settings, model_dir)
    output = Path(output)
    jobs = plan_jobs(table, settings, identity, dtype, input_name, prefix or output.name, device)
    recorded = run_settings(settings, dtype, device, model_config(model_dir)["scheduler_class"]
                            if settings.scheduler == "model" else None)
    if store is not None:
        store = open_store(store, output)
    output.mkdir(parents=True, exist_ok=True)
    # An index-named file is kept only if the manifest says it holds the wanted key.
    known = output_keys(output)
    wanted = {j.file for j in jobs if j.file == j.stored or known.get(j.file) == j.key}
    # also drops the manifest: incomplete until the end
    pruned = prune_store(output, wanted, keep_in=store, keys=known)
    missing = [j for j in jobs if not (output / j.file).is_file()]
    from_store = 0
    if store is not None and missing:
        take_in_previous(output, store)
        for job in missing:
            if (store / job.stored).is_file():
                link_file(store / job.stored, output / job.file, store / STORE_TMP)
                from_store += 1
        missing = [j for j in missing if not (output / j.file).is_file()]
    shared = str(store) if store is not None else None
    if settings.engine == "ray":
        stats = render_with_ray(missing, settings, model_dir, str(output), shared)
    else:
        stats = render_shard(missing, settings, model_dir, str(output), desc=f"generate@{output.name}", store=shared)
    absent = [j.file for j in jobs if not (output / j.file).is_file()]
    if absent:
        raise DataError(f"{output}: {len(absent)} images missing after rendering (first: {absent[0]})")
    write_parquet(manifest_table(jobs, settings, identity, recorded), output / MANIFEST)
    return {"prompts": len(jobs), "rendered": stats.prompts_rendered, "reused": len(jobs) - len(missing),
            "from_store": from_store, "pruned": pruned, "pipeline_calls": stats.pipeline_calls}


def cli(
    source: str = typer.Argument(..., help="source name (params.yaml sources)"),
    input: Path = typer.Argument(..., help="deduplicated prompt table, e.g. data/dedup/S.parquet"),
    output: Path = typer.Argument(..., help="image store dir, e.g. data/images/S"),
    store: Optional[Path] = typer.Option(None, "--store", help="generation store kept across runs, e.g. data/image_store"),
) -> None:
    """Render one image per prompt into OUTPUT (resumable; only images in neither OUTPUT nor the store are rendered)."""
    settings = load_section("generate")
    counts = generate(read_parquet(input), settings, output, input_name=str(input), store=store, prefix=source)
    # one line, parsed by tests and people counting renders: `rendered` is what the pipeline drew
    print(f"generate@{source}: {counts['prompts']} prompts, {counts['rendered']} rendered "
          f"({counts['pipeline_calls']} pipeline calls), {counts['reused']} reused ({counts['from_store']} from the store), "
          f"{counts['pruned']} files pruned; preset {settings.preset}")


def image_folders() -> list[Path]:
    """The output folder of every generate@S (sources.S.images, else data/images/S)."""
    sources = load_section("sources", missing_ok=True)
    return [Path(sources[s].images) if s in sources and sources[s].images else Path("data/images") / s
            for s in load_section("generate").sources]


def prune_generation_store(store: Path, keep: list[Path] | None, everything: bool = False) -> dict:
    """Delete from the store every image no manifest in `keep` names (all with `everything`), and
    the temp files of dead runs. Nothing is deleted if the store holds a file generate did not write
    or a kept folder has no manifest."""
    store = Path(store)
    if not store.is_dir():
        raise DataError(f"{store}: no generation store here (nothing to prune)")
    check_store(store)
    wanted: set[str] = set()
    if not everything:
        for folder in keep:
            manifest = Path(folder) / MANIFEST
            if not manifest.is_file():
                raise DataError(f"{manifest}: not found; its images would be pruned (build it first, name the "
                                "folders to keep with --keep, or empty the store with --all)")
            table = read_parquet(manifest)
            if "file" not in table.columns or "key" not in table.columns:
                raise DataError(f"{manifest}: no 'file' and 'key' columns (not a generate manifest)")
            wanted.update(stored_name(str(k), str(f)) for f, k in zip(table["file"], table["key"]))
    folders = [d for d in sorted(store.iterdir()) if d.is_dir() and _STORE_DIR.fullmatch(d.name)]
    files = [p for d in folders for p in sorted(d.iterdir())]
    for path in files:
        if not (_STORE_FILE.fullmatch(path.relative_to(store).as_posix()) and path.is_file()):
            raise DataError(f"{store}: holds {path.relative_to(store).as_posix()!r}, which generate did not write; "
                            "refusing to prune")
    removed = kept = 0
    for path in files:
        if path.relative_to(store).as_posix() in wanted:
            kept += 1
        else:
            path.unlink()
            removed += 1
    for folder in folders:
        if not any(folder.iterdir()):
            folder.rmdir()
    open_store(store)  # sweeps temp files of runs that are not alive
    return {"removed": removed, "kept": kept}


def cli_prune(
    store: Path = typer.Option(Path("data/image_store"), "--store", help="the generation store"),
    keep: Optional[list[Path]] = typer.Option(
        None, "--keep", help="image folder whose manifest's images stay (repeatable; default: every generate@S output)"),
    everything: bool = typer.Option(False, "--all", help="empty the store"),
) -> None:
    """Delete images of the generation store that no current generate@S output uses (the store never shrinks otherwise)."""
    counts = prune_generation_store(store, None if everything else (keep or image_folders()), everything)
    print(f"generate-prune: {counts['removed']} images removed, {counts['kept']} kept in {store}")
