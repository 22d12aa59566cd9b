"""generate@S stage: render one image per prompt into a content-addressed, resumable image store.

    python -m scripts generate S data/dedup/S.parquet data/images/S [--store data/image_store]
    python -m scripts generate-prune [--store data/image_store] [--keep data/images/S ...] [--all]

Each prompt row gets its own seed, derived from `generate.seed` and the row id (never from batch
position), and its own initial noise, so an image depends only on (model, settings, prompt, seed).
The image's file name is the key sha256(model identity, settings, prompt, seed):

    data/images/S/manifest.parquet          one row per prompt (written last, atomically)
    data/images/S/ab/abcdef0123....jpg      fanned out by the first two hex digits of the key

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
from scripts.lib.params import Generate, load_section, parse
from scripts.lib.io import read_parquet, write_parquet

MANIFEST = "manifest.parquet"
MANIFEST_COLUMNS = ["id", "file", "key", "seed", "model", "model_revision", "scheduler", "steps", "guidance",
                    "width", "height", "format"]


def load_settings(params: dict | None) -> Generate:
    """params.yaml `generate:` (a plain mapping) as its model (scripts/lib/params.py); a bad value is one
    DataError naming the key. The stage itself uses `load_section("generate")`."""
    return parse(Generate, params or {}, at=("generate",))


def key_settings(settings: Generate, dtype: str) -> dict:
    """Everything besides model, prompt and seed that changes the saved bytes (goes into the key)."""
    return {"scheduler": settings.scheduler, "steps": settings.steps, "guidance": settings.guidance,
            "height": settings.height, "width": settings.width, "resize": settings.resize,
            "format": settings.format, "dtype": dtype}


# ---------------------------------------------------------------- pure core: seeds, keys, plan

def prompt_seed(global_seed: int, prompt_id: str) -> int:
    """The seed of one prompt: depends on the global seed and the row id only (63 bits, fits int64)."""
    digest = hashlib.sha256(f"{global_seed}\x00{prompt_id}".encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") >> 1


def image_key(model_identity: str, render_settings: dict, prompt: str, seed: int) -> str:
    payload = json.dumps({"model": model_identity, "settings": render_settings, "prompt": prompt, "seed": seed},
                         sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Job:
    id: str
    prompt: str
    seed: int
    key: str
    file: str  # relative to the output dir


def plan_jobs(table, settings: Generate, model_identity: str, dtype: str, input_name: str = "input") -> list[Job]:
    """One job per row, in row order. Bad rows (missing/empty text, duplicate id) are a DataError."""
    field_name = settings.prompt_field
    for column in ("id", field_name):
        if column not in table.columns:
            raise DataError(f"{input_name}: missing column '{column}' (generate.prompt_field={field_name})")
    render = key_settings(settings, dtype)
    jobs, seen = [], {}
    for row, (prompt_id, prompt) in enumerate(zip(table["id"], table[field_name])):
        if not isinstance(prompt_id, str) or not prompt_id:
            raise DataError(f"{input_name}: row {row}: empty id")
        if prompt_id in seen:
            raise DataError(f"{input_name}: row {row}: duplicate id {prompt_id!r} (first at row {seen[prompt_id]})")
        seen[prompt_id] = row
        if not isinstance(prompt, str) or not prompt.strip():
            raise DataError(f"{input_name}: row {row}: empty {field_name!r} (id {prompt_id})")
        seed = prompt_seed(settings.seed, prompt_id)
        key = image_key(model_identity, render, prompt, seed)
        jobs.append(Job(prompt_id, prompt, seed, key, f"{key[:2]}/{key}.{settings.format}"))
    return jobs


def manifest_table(jobs: list[Job], settings: Generate, model_identity: str):
    import pandas as pd

    width, height = final_size(settings)
    rows = {
        "id": [j.id for j in jobs], "file": [j.file for j in jobs], "key": [j.key for j in jobs],
        "seed": pd.array([j.seed for j in jobs], dtype="int64"),
    }
    n = len(jobs)
    constants = {"model": settings.model, "model_revision": model_identity, "scheduler": settings.scheduler,
                 "steps": settings.steps, "guidance": settings.guidance, "width": width, "height": height,
                 "format": settings.format}
    for name, value in constants.items():
        rows[name] = [value] * n
    df = pd.DataFrame(rows, columns=MANIFEST_COLUMNS)
    strings = {name: "str" for name in ("id", "file", "key", "model", "model_revision", "scheduler", "format")}
    return df.astype({**strings, "steps": "int64", "width": "int64", "height": "int64", "guidance": "float64"})


def final_size(settings: Generate) -> tuple[int, int]:
    if settings.resize is None:
        return settings.width, settings.height
    return settings.resize, max(1, round(settings.height * settings.resize / settings.width))


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


def encode_image(pixels, settings: Generate) -> bytes:
    """uint8 HxWx3 array -> file bytes (no metadata, so the bytes depend only on the pixels)."""
    from PIL import Image

    image = Image.fromarray(pixels)
    size = final_size(settings)
    if image.size != size:
        image = image.resize(size, Image.Resampling.LANCZOS)
    buffer = BytesIO()
    if settings.format == "jpg":
        image.save(buffer, "JPEG", quality=95)
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
            write_file_atomic(saved / job.file, data, saved / STORE_TMP)
            link_file(saved / job.file, out / job.file)

    max_pending = 2 * settings.batch_size  # bounded: encoding may lag one batch behind, never more
    with ThreadPoolExecutor(settings.writers, thread_name_prefix="encode") as pool, torch.inference_mode(), \
            Progress(desc, total=len(jobs), unit="images") as progress:
        pending: deque = deque()
        for start in range(0, len(jobs), settings.batch_size):
            batch = jobs[start:start + settings.batch_size]
            padded = batch
            if settings.compile and len(batch) < settings.batch_size:
                padded = batch + [batch[-1]] * (settings.batch_size - len(batch))  # one shape: no recompile
            images = pipe([j.prompt for j in padded], num_inference_steps=settings.steps,
                          guidance_scale=settings.guidance, height=settings.height, width=settings.width,
                          latents=initial_latents(padded, pipe, settings), output_type="pt").images[:len(batch)]
            stats.pipeline_calls += 1
            stats.prompts_rendered += len(batch)
            # [0,1] floats -> uint8 on the device (4x less to copy), then hand off to the encoders
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


def prune_store(output: Path, wanted: set[str], keep_in: Path | None = None) -> int:
    """Delete every file under `output` that is not a wanted image (old keys, temp files, manifest);
    return how many files besides the manifest went. With `keep_in` (the generation store), every
    image of `output` is linked into it first, so a pruned image is never rendered again.

    Refuses, deleting nothing, when the directory holds anything this stage did not write: a
    mistyped output path must not wipe someone's data.
    """
    if not output.exists():
        return 0
    paths = sorted(output.rglob("*"), reverse=True)
    for path in paths:
        rel = path.relative_to(output).as_posix()
        ours = _STORE_DIR.fullmatch(rel) if path.is_dir() and not path.is_symlink() else _STORE_FILE.fullmatch(rel)
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
        if keep_in is not None and _IMAGE_FILE.fullmatch(rel) and not (keep_in / rel).is_file():
            link_file(path, keep_in / rel, keep_in / STORE_TMP)
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
    """Image file name -> DVC cache file, for OUTPUT as the working directory's dvc.lock records it (the
    version this run replaces: DVC deletes a stage's outputs before running it). Empty outside a DVC
    repository, for an output dvc.lock does not list, or when its listing is not in the cache."""
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
            return {e["relpath"]: Path(odb.oid_to_path(e["md5"])) for e in entries
                    if _IMAGE_FILE.fullmatch(str(e.get("relpath", ""))) and isinstance(e.get("md5"), str)}
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


def generate(table, settings: Generate, output: Path, input_name: str = "input", store: Path | None = None) -> dict:
    """Make `output` hold exactly one image per row of `table` plus the manifest. Returns counts.

    With `store` (the generation store), images come from it when it has their key, new ones are
    rendered into it, and the images of `output` (now and in its previous DVC version) are added to it."""
    model_dir, identity = resolve_model(settings)
    _, dtype = resolve_device(settings)
    jobs = plan_jobs(table, settings, identity, dtype, input_name)
    output = Path(output)
    if store is not None:
        store = open_store(store, output)
    output.mkdir(parents=True, exist_ok=True)
    # also drops the manifest: incomplete until the end
    pruned = prune_store(output, {j.file for j in jobs}, keep_in=store)
    missing = [j for j in jobs if not (output / j.file).is_file()]
    from_store = 0
    if store is not None and missing:
        take_in_previous(output, store)
        for job in missing:
            if (store / job.file).is_file():
                link_file(store / job.file, output / job.file, store / STORE_TMP)
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
    write_parquet(manifest_table(jobs, settings, identity), output / MANIFEST)
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
    counts = generate(read_parquet(input), settings, output, input_name=str(input), store=store)
    # one line, parsed by tests and people counting renders: `rendered` is what the pipeline drew
    print(f"generate@{source}: {counts['prompts']} prompts, {counts['rendered']} rendered "
          f"({counts['pipeline_calls']} pipeline calls), {counts['reused']} reused ({counts['from_store']} from the store), "
          f"{counts['pruned']} files pruned")


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
            if "file" not in table.columns:
                raise DataError(f"{manifest}: no 'file' column (not a generate manifest)")
            wanted.update(str(f) for f in table["file"])
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
