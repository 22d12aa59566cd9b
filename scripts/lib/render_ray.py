"""Rendering on `runtime.engine: ray`: a Ray Data actor pool draws the images, the driver writes them.

Each actor loads the pipeline once and runs the same `render_images` as the local engine. Every image
it encodes goes at once into the generation store of the actor's own machine (the store's path, made
there if absent), and back to the driver as (key, bytes); the driver alone writes the stage output. So
no filesystem is shared beyond the driver's, and a retried batch (a lost actor) re-renders only the
keys its machine's store lacks. One actor per GPU (`num_gpus=1`) where the cluster has GPUs, else one
per CPU; `runtime.workers` caps the pool, `runtime.partitions` sets how many blocks the jobs make.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from dataclasses import asdict

from scripts.lib.errors import DataError
from scripts.lib.image_store import ImageStore
from scripts.lib.params import Generate, Runtime
from scripts.lib.ray_engine import HUB_CREDENTIALS, failure_line, map_on_actors, ray_session
from scripts.lib.render import (
    RenderStats,
    load_pipeline,
    model_on_this_machine,
    noise_for,
    render_images,
    resolve_device,
)
from scripts.lib.render_plan import Job

CALLS_PER_BATCH = 4  # pipeline calls per actor call: encoding overlaps the next denoise, retries stay small


def jobs_table(jobs: list[Job]):
    import pyarrow as pa

    rows = [asdict(job) for job in jobs]
    return pa.Table.from_pylist(
        rows,
        schema=pa.schema(
            [
                ("id", pa.string()),
                ("prompt", pa.string()),
                ("seed", pa.int64()),
                ("key", pa.string()),
                ("file", pa.string()),
                ("stored", pa.string()),
                ("stream", pa.int64()),
                ("draw", pa.int64()),
            ]
        ),
    )


class RenderActor:
    """One per GPU (or CPU): the pipeline, loaded once, and the noise state kept across its batches."""

    def __init__(self, settings: Generate, model_dir: str, identity: str, store: str | None, writers: int):
        self.settings, self.writers = settings, writers
        device, dtype = resolve_device(settings)  # settings.device: the driver's choice, cuda or cpu
        self.pipe = load_pipeline(settings, model_on_this_machine(settings, model_dir, identity), device, dtype)
        self.noise = noise_for(self.pipe, settings)
        self.store = None
        if store is not None:
            with contextlib.suppress(
                OSError, DataError
            ):  # no usable store here: a retry re-renders, nothing else changes
                self.store = ImageStore(store)

    def __call__(self, batch):
        import pyarrow as pa

        jobs = [Job(**row) for row in batch.to_pylist()]
        images: dict[str, bytes] = {}
        if self.store is not None:
            for job in jobs:
                if self.store.has(job.stored):
                    images[job.key] = self.store.path(job.stored).read_bytes()
        done_before = set(images)

        def keep(job: Job, data: bytes) -> None:
            if self.store is not None:
                self.store.put(job.stored, data)
            images[job.key] = data

        stats = render_images(
            [j for j in jobs if j.key not in done_before], self.pipe, self.settings, keep, self.writers, self.noise
        )
        keys = [j.key for j in jobs]
        return pa.table(
            {
                "key": keys,
                "data": pa.array([images[k] for k in keys], pa.binary()),
                "rendered": [k not in done_before for k in keys],
                "calls": [stats.pipeline_calls if i == 0 else 0 for i in range(len(keys))],
            }
        )


def pool_size(resources: dict, workers: int, on_gpu: bool, jobs: int) -> tuple[int, bool]:
    """(actors, one GPU each?): one per GPU, else per CPU; `workers` (0: no cap) and the job count cap it."""
    gpus = int(resources.get("GPU", 0)) if on_gpu else 0
    slots = gpus or max(1, int(resources.get("CPU", 1)))
    return max(1, min(slots, workers or slots, jobs)), gpus > 0


@contextlib.contextmanager
def ray_cluster(runtime: Runtime) -> Iterator[bool]:
    """A Ray session for a whole run; yields whether the cluster has GPUs (what `device: auto` means there).
    Its actors may fetch a hub model (model_on_this_machine): HF_TOKEN goes to them, no other secret."""
    with ray_session(runtime, HUB_CREDENTIALS) as ray:
        yield ray.cluster_resources().get("GPU", 0) > 0


def render_on_ray(
    jobs: list[Job],
    settings: Generate,
    model_dir: str,
    identity: str,
    runtime: Runtime,
    deliver: Callable[[Job, bytes], None],
    store: str | None = None,
    progress=None,
) -> RenderStats:
    """Render `jobs` on Ray; `deliver(job, bytes)` runs on the driver for each image as it arrives.
    `settings.device`: resolved (cpu or cuda); `store`: the generation store's absolute path (each
    machine's own)."""
    stats = RenderStats()
    if not jobs:
        return stats
    by_key = {job.key: job for job in jobs}
    on_gpu = settings.device != "cpu"
    settings = settings.replace(device="cuda" if on_gpu else "cpu")  # an actor sees its one GPU as cuda:0
    with ray_session(runtime, HUB_CREDENTIALS) as ray:
        size, gpu = pool_size(ray.cluster_resources(), runtime.workers, on_gpu, len(jobs))
        assert settings.batch_size is not None  # the preset fills every key left null
        per_call = CALLS_PER_BATCH * settings.batch_size
        rows = (
            math.ceil(len(jobs) / runtime.partitions)
            if runtime.partitions
            else max(1, min(per_call, math.ceil(len(jobs) / size)))
        )
        blocks = [jobs_table(jobs[i : i + rows]) for i in range(0, len(jobs), rows)]
        size = min(size, len(blocks))  # no more actors than blocks: Ray Data warns of a pool it cannot fill
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = context.print_on_execution_start = False  # the stage prints its own
        dataset = map_on_actors(
            ray.data.from_arrow(blocks),
            RenderActor,
            batch_size=min(rows, per_call),
            batch_format="pyarrow",
            compute=ray.data.ActorPoolStrategy(size=size),
            num_gpus=1 if gpu else 0,
            num_cpus=None if gpu else 1,
            fn_constructor_kwargs={
                "settings": settings,
                "model_dir": model_dir,
                "identity": identity,
                "store": store,
                "writers": runtime.writers,
            },
        )
        try:
            for batch in dataset.iter_batches(batch_size=None, batch_format="pyarrow"):
                columns = batch.to_pydict()
                for key, data, rendered, calls in zip(
                    columns["key"], columns["data"], columns["rendered"], columns["calls"]
                ):
                    deliver(by_key[key], data)
                    stats.prompts_rendered += rendered
                    stats.pipeline_calls += calls
                    if progress is not None:
                        progress.advance(1)
        except (ray.exceptions.RayError, ray.exceptions.RaySystemError) as exc:
            raise DataError(ray_failure(exc)) from None
    return stats


def ray_failure(exc: BaseException) -> str:
    """One line for a failure inside Ray, as clean and dedup say it (`ray_engine.failure_line`): an actor's
    DataError as it was, anything else by type and message. Its own walk returned a DataError's text as it
    was (a newline in it made two lines) and named Ray's wrapper, not what the actor raised."""
    return failure_line(exc, "generate")
