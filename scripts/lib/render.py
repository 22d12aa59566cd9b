"""Rendering: the diffusers pipeline for a Generate section, the initial noise, the diffusion loop and
the encoding of each image. Both engines run `render_images`; only where the bytes go differs.

On CPU the pipeline runs in float64 (`generate.cpu_dtype`): float32 CPU kernels change the last bits
with the batch size and thread count, float64 ones (measured) do not, so the saved bytes are the same
for any batch size, thread count or engine, and the scheduler's tables are float64 too
(float64_scheduler): diffusers builds them in float32 with math whose last bit depends on the CPU.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
from typing import Any, Protocol

from scripts.lib.errors import DataError, exception_line
from scripts.lib.params import Generate
from scripts.lib.render_plan import Job, final_size


@dataclass
class RenderStats:
    pipeline_calls: int = 0
    prompts_rendered: int = 0

    def add(self, other: RenderStats) -> None:
        self.pipeline_calls += other.pipeline_calls
        self.prompts_rendered += other.prompts_rendered


class Advances(Protocol):
    def advance(self, n: int = 1) -> None: ...


# ---------------------------------------------------------------- the model: where it is, what it is


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
    return download_model(settings)


def download_model(settings: Generate, revision: str | None = None) -> tuple[str, str]:
    """A hub id's snapshot folder in the local Hugging Face cache (fetched only with allow_download). The hub
    client sends only the download's requests and writes only its cache (import_env.quiet_hub_client: its
    telemetry fetched `{HF_ENDPOINT}/api/agent-harnesses` and wrote HF_HOME/.agent_harnesses.json)."""
    from scripts.lib.import_env import quiet_hub_client

    quiet_hub_client()
    check_hub_id(settings)
    quiet_libraries()
    from diffusers import StableDiffusionPipeline

    try:
        local = StableDiffusionPipeline.download(
            settings.model, revision=revision, local_files_only=not settings.allow_download
        )
    except (OSError, ValueError) as exc:  # the hub client's errors (not cached, HTTP, a bad id) are these
        if settings.allow_download:
            raise DataError(f"generate.model={settings.model}: cannot download ({type(exc).__name__})") from None
        raise not_cached(settings) from None
    return str(local), f"{settings.model}@{Path(local).name}"


def check_hub_id(settings: Generate) -> None:
    """The refusals StableDiffusionPipeline.download would make, made before diffusers loads (~40 s): a model
    that is no hub id (`package:x/y`), or, without allow_download, one whose folder the cache lacks."""
    from huggingface_hub import constants
    from huggingface_hub.file_download import repo_folder_name
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(settings.model)
    except HFValidationError:
        raise DataError(
            f"generate.model={settings.model}: no such directory, and not a hub id (owner/name: letters, "
            "digits, '-', '_', '.')"
        ) from None
    folder = Path(constants.HF_HUB_CACHE) / repo_folder_name(repo_id=settings.model, repo_type="model")
    if not settings.allow_download and not folder.is_dir():
        raise not_cached(settings)


def not_cached(settings: Generate) -> DataError:
    return DataError(
        f"generate.model={settings.model}: no such directory and not in the local Hugging Face "
        "cache (build the tiny model with `dvc repro tiny_model`, or set "
        "generate.allow_download: true to fetch a hub id)"
    )


def model_on_this_machine(settings: Generate, model_dir: str, identity: str) -> str:
    """The pipeline folder holding the weights `identity` names, on the machine this runs on (a Ray
    node sees no files of the driver's): the same folder, or the hub snapshot of the same commit.
    Other weights would render other bytes, so they are refused."""
    if identity.startswith("sha256:"):
        if Path(model_dir).is_dir() and "sha256:" + hash_directory(Path(model_dir)) == identity:
            return model_dir
        raise DataError(
            f"generate.model={settings.model}: {model_dir} is missing or holds other weights on this "
            "machine (put the same pipeline folder at the same path on every Ray node, or use a hub id)"
        )
    local, found = download_model(settings, revision=identity.rpartition("@")[2])
    if found != identity:
        raise DataError(f"generate.model={settings.model}: this machine's copy is {found}, the driver's {identity}")
    return local


_DIRECTORY_HASHES: dict = {}  # (path, stamp) -> sha256, so a benchmark or Ray actor hashes a model once


def directory_stamp(path: Path) -> tuple:
    """Cheap fingerprint (names, sizes, mtimes, inodes): changes whenever a file is replaced."""
    files = sorted(p for p in Path(path).rglob("*") if p.is_file())
    return tuple(
        (p.relative_to(path).as_posix(), p.stat().st_size, p.stat().st_mtime_ns, p.stat().st_ino) for p in files
    )


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


def resolve_device(settings: Generate, cuda: bool | None = None) -> tuple[str, str]:
    """(torch device, dtype name) actually used; CPU always uses cpu_dtype. `cuda`: whether the machines
    that render have CUDA (a Ray cluster's, not the driver's); None asks this machine."""
    if cuda is None:
        import torch

        cuda = torch.cuda.is_available()
    device = settings.device
    if device == "auto":
        device = "cuda" if cuda else "cpu"
    if device.startswith("cuda") and not cuda:
        raise DataError("generate.device=cuda but no CUDA device is available (use device: auto or cpu)")
    return device, (settings.cpu_dtype if device == "cpu" else settings.dtype)


def quiet_libraries() -> None:
    """Silence per-prompt truncation notices, import-time backend notes and progress bars."""
    from transformers.utils import logging as transformers_logging

    transformers_logging.set_verbosity_error()
    transformers_logging.disable_progress_bar()
    from diffusers.utils import logging as diffusers_logging

    diffusers_logging.set_verbosity_error()
    diffusers_logging.disable_progress_bar()


@contextlib.contextmanager
def failing_as_the_model(settings: Generate, first_id: str):
    """A pipeline that loaded but cannot render (a tokenizer folder missing: OverflowError deep in
    transformers, a part of another shape) is one line naming generate.model and the batch's first row."""
    try:
        yield
    except (DataError, MemoryError):
        raise
    except Exception as exc:
        raise _model_error(settings, f"the pipeline failed on the batch from id {first_id}", exc) from None


@contextlib.contextmanager
def loading_quietly(settings: Generate, model_dir: str):
    """A folder that is no loadable pipeline (a part missing, a config of the wrong shape, cut weights) is one
    line naming generate.model: diffusers and transformers raised any kind (ValueError, OverflowError: an
    80-line traceback), after logging lines and warnings of their own, which are held back while it loads."""
    import warnings

    import torch
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    levels = diffusers_logging.get_verbosity(), transformers_logging.get_verbosity()
    # transformers sets torch's process-wide default dtype while it loads a part and puts it back only when
    # the load succeeds: a folder that fails half way left float64, and this process's next render mixed dtypes
    default_dtype = torch.get_default_dtype()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            diffusers_logging.set_verbosity(logging.CRITICAL + 1)
            transformers_logging.set_verbosity(logging.CRITICAL + 1)
            yield
    except MemoryError:
        raise
    except Exception as exc:
        raise _model_error(settings, f"{model_dir} is not a pipeline diffusers can load", exc) from None
    finally:
        diffusers_logging.set_verbosity(levels[0])
        transformers_logging.set_verbosity(levels[1])
        torch.set_default_dtype(default_dtype)


def _model_error(settings: Generate, what: str, exc: BaseException) -> DataError:
    return DataError(f"generate.model={settings.model}: {what} ({exception_line(exc)})")


# ---------------------------------------------------------------- the pipeline

_PIPELINES: dict = {}  # the loaded pipeline of this process, by model files and settings


def load_pipeline(settings: Generate, model_dir: str, device: str, dtype: str):
    """The diffusers pipeline for these settings, loaded once per process (Ray actors, benchmarks)."""
    cache_key = (model_dir, directory_stamp(Path(model_dir)), device, dtype, settings.scheduler, settings.compile)
    if cache_key not in _PIPELINES:
        _PIPELINES.clear()  # one model in memory at a time
        _PIPELINES[cache_key] = _load_pipeline(settings, model_dir, device, dtype)
    return _PIPELINES[cache_key]


def _load_pipeline(settings: Generate, model_dir: str, device: str, dtype: str):
    import torch

    quiet_libraries()
    from diffusers import DDIMScheduler, DPMSolverMultistepScheduler, EulerDiscreteScheduler, StableDiffusionPipeline

    torch_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32, "fp64": torch.float64}[dtype]
    with loading_quietly(settings, model_dir):
        pipe = StableDiffusionPipeline.from_pretrained(
            model_dir,
            dtype=torch_dtype,
            local_files_only=True,
            use_safetensors=True,  # never unpickle weights
            safety_checker=None,
            requires_safety_checker=False,
        )
    pipe.to(device=device, dtype=torch_dtype)
    assert settings.scheduler is not None  # the preset fills every key left null
    if settings.scheduler != "model":  # model: the pipeline's own scheduler config, as loaded
        scheduler_class = {"ddim": DDIMScheduler, "dpmpp": DPMSolverMultistepScheduler, "euler": EulerDiscreteScheduler}
        extra = {"algorithm_type": "dpmsolver++"} if settings.scheduler == "dpmpp" else {}
        pipe.scheduler = scheduler_class[settings.scheduler].from_config(pipe.scheduler.config, **extra)
    if torch_dtype == torch.float64:
        float64_scheduler(pipe.scheduler)
    pipe.set_progress_bar_config(disable=True)
    if device != "cpu":
        pipe.unet.to(memory_format=torch.channels_last)
        pipe.vae.to(memory_format=torch.channels_last)
    if settings.compile:
        mode = None
        if device != "cpu":  # the diffusers "speed up inference" recipe
            import torch._inductor.config as inductor

            inductor.conv_1x1_as_mm = True
            inductor.coordinate_descent_tuning = True
            inductor.epilogue_fusion = False
            inductor.coordinate_descent_check_all_directions = True
            pipe.fuse_qkv_projections()
            mode = "max-autotune"  # CUDA graphs too: render_images pads batches to one shape
        pipe.unet = torch.compile(pipe.unet, mode=mode, fullgraph=device != "cpu")
        pipe.vae.decode = torch.compile(pipe.vae.decode, mode=mode, fullgraph=device != "cpu")
    return pipe


def float64_scheduler(scheduler) -> None:
    """Every float32 table of `scheduler` (betas, alphas_cumprod, sigmas, ...) in float64, now and after
    each set_timesteps. diffusers computes them in float32 (`** 0.5`, exp, log) through MKL, whose last
    bit depends on the code path it picks for the processor: MKL_CBWR=AUTO vs COMPATIBLE moved sigmas
    by a float32 ulp and, through the diffusion loop, 19 of 2M pixel values of the sample by one. In
    float64 that last bit stays ~1e-16 and never reaches a pixel."""
    import torch

    def widen() -> None:
        for name, value in list(vars(scheduler).items()):
            if torch.is_tensor(value) and value.dtype == torch.float32:
                setattr(scheduler, name, value.to(torch.float64))

    set_timesteps = scheduler.set_timesteps

    def set_timesteps_in_float64(*args, **kwargs):
        set_timesteps(*args, **kwargs)
        widen()

    widen()
    scheduler.set_timesteps = set_timesteps_in_float64


# ---------------------------------------------------------------- noise


def initial_latents(jobs: list[Job], pipe, settings: Generate):
    """Per-prompt noise from a per-prompt CPU generator: independent of batch, device and order."""
    import torch

    channels = pipe.unet.config.in_channels
    scale = pipe.vae_scale_factor
    shape = (1, channels, settings.height // scale, settings.width // scale)
    noise = [
        torch.randn(shape, generator=torch.Generator("cpu").manual_seed(j.seed), dtype=torch.float32) for j in jobs
    ]
    return torch.cat(noise).to(device=pipe.device, dtype=pipe.unet.dtype)


class SequentialNoise:
    """The team's noise: per stream one generator on the pipeline's device seeded `seed`, and one draw
    of the latent shape per row, in row order, exactly as StableDiffusionPipeline draws it when given
    the generator (diffusers' randn_tensor, in the text encoder's dtype). Draws of rows not rendered
    here are taken and dropped, so a row's noise depends only on its position. A row before the
    stream's position (a Ray actor handed an earlier block) restarts that stream from its seed."""

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
        drawn: dict[str, Any] = {}  # a padded batch repeats its last job
        for job in jobs:
            if job.id in drawn:
                continue
            assert job.stream is not None and job.draw is not None  # plan_jobs numbers them for sequential noise
            state = self.streams.get(job.stream)
            if state is None or job.draw < state[1]:
                state = self.streams[job.stream] = [self._torch.Generator(self.device).manual_seed(self.seed), 0]
            while state[1] < job.draw:
                self._draw(state[0])
                state[1] += 1
            drawn[job.id] = self._draw(state[0])
            state[1] += 1
        return self._torch.cat([drawn[j.id] for j in jobs])


def noise_for(pipe, settings: Generate) -> SequentialNoise | None:
    """The noise state one process keeps across its batches (None: per-prompt noise needs none)."""
    return SequentialNoise(pipe, settings) if settings.noise == "sequential" else None


# ---------------------------------------------------------------- encoding and the loop


def encode_image(pixels, settings: Generate) -> bytes:
    """uint8 HxWx3 array -> file bytes (no metadata, so the bytes depend only on the pixels)."""
    from PIL import Image

    image = Image.fromarray(pixels)
    size = final_size(settings)
    if image.size != size:
        assert settings.resample is not None  # the preset fills every key left null
        image = image.resize(
            size, {"lanczos": Image.Resampling.LANCZOS, "bicubic": Image.Resampling.BICUBIC}[settings.resample]
        )
    buffer = BytesIO()
    if settings.format == "jpg":
        image.save(buffer, "JPEG", quality=settings.quality)
    elif settings.format == "webp":
        image.save(buffer, "WEBP", lossless=True)
    else:
        image.save(buffer, "PNG")
    return buffer.getvalue()


def render_images(
    jobs: list[Job],
    pipe,
    settings: Generate,
    deliver: Callable[[Job, bytes], None],
    writers: int = 2,
    noise: SequentialNoise | None = None,
    progress: Advances | None = None,
) -> RenderStats:
    """Render `jobs` in batches of `settings.batch_size` and hand each encoded image to `deliver`
    (called from `writers` encoder threads while the next batch denoises). Sequential noise needs
    `noise` (noise_for) and jobs in row order within each call."""
    import torch

    stats = RenderStats()
    if not jobs:
        return stats
    if settings.noise == "sequential" and noise is None:
        noise = SequentialNoise(pipe, settings)
    # Handed to the pipeline only to prove it unused: noise comes from `latents`, and a scheduler that
    # draws more at each step (ancestral, SDE) would make the bytes depend on the global RNG.
    probe = torch.Generator(pipe._execution_device).manual_seed(0)
    probe_state = probe.get_state()

    def save(array, job: Job) -> None:
        deliver(job, encode_image(array, settings))

    assert settings.batch_size is not None  # the preset fills every key left null
    max_pending = 2 * settings.batch_size  # bounded: encoding may lag one batch behind, never more
    with ThreadPoolExecutor(writers, thread_name_prefix="encode") as pool, torch.inference_mode():
        pending: deque = deque()
        for start in range(0, len(jobs), settings.batch_size):
            batch = jobs[start : start + settings.batch_size]
            padded = batch
            if settings.compile and len(batch) < settings.batch_size:
                padded = batch + [batch[-1]] * (settings.batch_size - len(batch))  # one shape: no recompile
            with failing_as_the_model(settings, batch[0].id):
                latents = noise.latents(padded) if noise else initial_latents(padded, pipe, settings)
                images = pipe(
                    [j.prompt for j in padded],
                    num_inference_steps=settings.steps,
                    guidance_scale=settings.guidance,
                    height=settings.height,
                    width=settings.width,
                    latents=latents,
                    generator=probe,
                    output_type="pt",
                ).images[: len(batch)]
            if not torch.equal(probe.get_state(), probe_state):
                raise DataError(
                    f"generate.scheduler={settings.scheduler}: {type(pipe.scheduler).__name__} draws noise "
                    "at every step, so images would not be reproducible (use ddim, dpmpp or euler)"
                )
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
            if progress is not None:
                progress.advance(len(batch))
        for future in pending:
            future.result()
    return stats
