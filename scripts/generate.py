"""generate@S stage: render one image per prompt into a content-addressed, resumable image folder.

    python -m scripts generate S data/prefilter/S.parquet data/images/S [--store data/image_store]
    python -m scripts generate-prune [--store data/image_store] [--keep data/images/S ...] [--all]

A run plans one job per row (scripts/lib/render_plan.py: seeds, keys, file names), clears OUTPUT of
what is no longer wanted (scripts/lib/image_store.py), takes what the generation store and OUTPUT's
previous DVC version (scripts/lib/dvc_cache.py) already hold, renders only the rest on this machine
(scripts/lib/render.py) or on Ray (scripts/lib/render_ray.py, `runtime.engine: ray`), then writes the
manifest. Formats and guarantees: docs/generation.md.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import typer

from scripts.lib.dvc_cache import cached_directory
from scripts.lib.errors import DataError
from scripts.lib.image_store import ImageStore, OutputFolder, check_store, manifest_keys, store_lock
from scripts.lib.io import check_output_kind, shown
from scripts.lib.params import Generate, Runtime, load_section, parse
from scripts.lib.progress import Progress
from scripts.lib.render import RenderStats, load_pipeline, render_images, resolve_device, resolve_model
from scripts.lib.render_plan import (
    KEY,
    MANIFEST,
    Job,
    manifest_table,
    model_config,
    plan_jobs,
    run_settings,
    stored_name,
    with_model_size,
)
from scripts.lib.safe_paths import PIPELINE_STORE
from scripts.lib.tables import read_parquet
from scripts.lib.temps import output_lock


def load_settings(params: dict | None) -> Generate:
    """params.yaml `generate:` (a plain mapping) as its model; a bad value is one DataError naming the key."""
    return parse(Generate, params or {}, at=("generate",))


def take_in_previous(output: Path, store: ImageStore) -> int:
    """Link into the store every image of OUTPUT's previous version (dvc.lock) that the DVC cache holds
    and the store lacks, by that version's manifest; return how many."""
    cached = cached_directory(output)
    manifest = cached.get(MANIFEST)
    if manifest is None or not manifest.is_file():
        return 0
    try:
        keys = manifest_keys(manifest)
    except DataError:
        return 0  # a head start only: an unreadable listing means rendering
    taken = 0
    for file, key in keys.items():
        if file in cached and cached[file].is_file():
            taken += store.take(cached[file], stored_name(key, file))
    return taken


def render_missing(
    jobs: list[Job],
    settings: Generate,
    model_dir: str,
    identity: str,
    runtime: Runtime,
    output: OutputFolder,
    store: ImageStore | None,
    source: str,
) -> RenderStats:
    """Render `jobs` on the configured engine; each image lands in the store (if any) and OUTPUT. Progress
    is labelled generate@`source`, as the stage's other lines (not OUTPUT's folder name)."""

    def deliver(job: Job, data: bytes) -> None:
        if store is None:
            output.write(job.file, data)
            return
        if not store.has(job.stored):  # a Ray actor on this machine may have put it there already
            store.put(job.stored, data)
        output.link(store.path(job.stored), job.file)

    if not jobs:
        return RenderStats()
    with Progress(f"generate@{source}", total=len(jobs), unit="images") as progress:
        if runtime.engine == "ray":
            from scripts.lib.render_ray import render_on_ray

            return render_on_ray(
                jobs,
                settings,
                model_dir,
                identity,
                runtime,
                deliver,
                os.path.abspath(store.root) if store is not None else None,
                progress,
            )
        device, dtype = resolve_device(settings)
        pipe = load_pipeline(settings, model_dir, device, dtype)
        return render_images(jobs, pipe, settings, deliver, runtime.writers, progress=progress)


def generate(
    table,
    settings: Generate,
    output: Path,
    input_name: str = "input",
    store: Path | None = None,
    prefix: str | None = None,
    runtime: Runtime | None = None,
) -> dict:
    """Make `output` hold exactly one image per row of `table` plus the manifest. Returns counts.

    With `store` (the generation store), images come from it when it has their key, new ones are
    rendered into it, and the images of `output` (now and in its previous DVC version) are added to it.
    `prefix` (default: OUTPUT's folder name, i.e. the source) names the files with `file_names: index`."""
    runtime = runtime or Runtime()
    check_output_kind(output)  # a link would be written through (into the folder it names)
    with output_lock(output), store_lock(store, output=output), engine_session(runtime) as cuda:
        return _generate(table, settings, Path(output), input_name, store, prefix, runtime, cuda)


def engine_session(runtime: Runtime):
    """Ray for the whole run on engine ray (its cluster decides what `device: auto` is), else nothing."""
    if runtime.engine != "ray":
        return contextlib.nullcontext(None)
    from scripts.lib.render_ray import ray_cluster

    return ray_cluster(runtime)


def _generate(
    table,
    settings: Generate,
    output: Path,
    input_name: str,
    store: Path | None,
    prefix: str | None,
    runtime: Runtime,
    cuda: bool | None,
) -> dict:
    model_dir, identity = resolve_model(settings)
    device, dtype = resolve_device(settings, cuda)
    settings = with_model_size(settings, model_dir).replace(device=device)
    source = prefix or output.name
    jobs = plan_jobs(table, settings, identity, dtype, input_name, source, device)
    recorded = run_settings(
        settings, dtype, device, model_config(model_dir)["scheduler_class"] if settings.scheduler == "model" else None
    )
    opened = ImageStore(store, output) if store is not None else None
    folder = OutputFolder(output)
    known = folder.keys()  # an index-named file is kept only if the manifest says it holds the wanted key
    wanted = {j.file for j in jobs if j.file == j.stored or known.get(j.file) == j.key}
    pruned = folder.start(wanted, opened)
    missing = [j for j in jobs if not folder.has(j.file)]
    from_store = 0
    if opened is not None and missing:
        take_in_previous(output, opened)
        for job in missing:
            if opened.has(job.stored):
                folder.link(opened.path(job.stored), job.file)
                from_store += 1
        missing = [j for j in missing if not folder.has(j.file)]
        opened.refuse_folders_at([j.stored for j in missing])
    stats = render_missing(missing, settings, model_dir, identity, runtime, folder, opened, source)
    absent = [j.file for j in jobs if not folder.has(j.file)]
    if absent:
        raise DataError(f"{output}: {len(absent)} images missing after rendering (first: {absent[0]})")
    folder.finish(manifest_table(jobs, settings, identity, recorded, folder.digests_of([j.file for j in jobs])))
    return {
        "prompts": len(jobs),
        "rendered": stats.prompts_rendered,
        "reused": len(jobs) - len(missing),
        "from_store": from_store,
        "pruned": pruned,
        "pipeline_calls": stats.pipeline_calls,
    }


def cli(
    source: str = typer.Argument(..., help="source name (params.yaml sources)"),
    input: Path = typer.Argument(..., help="prompt table, e.g. data/prefilter/S.parquet"),
    output: Path = typer.Argument(..., help="image folder, e.g. data/images/S"),
    store: Path | None = typer.Option(None, "--store", help="generation store kept across runs, e.g. data/image_store"),
) -> None:
    """Render one image per prompt into OUTPUT (resumable; only images in neither OUTPUT nor the store are rendered)."""
    settings = load_section("generate")
    runtime = load_section("runtime", missing_ok=True)
    # the output's refusals that hash nothing, before the input is read and the model loaded (minutes at scale):
    # a user's README.md in OUTPUT, or OUTPUT a link, was said after all of that; generate checks again locked
    check_output_kind(output)
    if store is not None:  # a store reached through a link, or inside OUTPUT, is that said first
        check_store(store, output)
    OutputFolder(output).refuse_foreign()
    counts = generate(
        read_parquet(input), settings, output, input_name=str(input), store=store, prefix=source, runtime=runtime
    )
    # one line, parsed by tests and people counting renders: `rendered` is what the pipeline drew
    print(
        shown(
            f"generate@{source}: {counts['prompts']} prompts, {counts['rendered']} rendered "
            f"({counts['pipeline_calls']} pipeline calls), {counts['reused']} reused ({counts['from_store']} from the "
            f"store), {counts['pruned']} files pruned; preset {settings.preset}"
        )
    )


def image_folders() -> list[Path]:
    """The output folder of every generate@S (sources.S.images, else data/images/S)."""
    sources = load_section("sources", missing_ok=True)
    return [
        Path(sources[s].images) if s in sources and sources[s].images else Path("data/images") / s
        for s in load_section("generate").sources
    ]


def prune_generation_store(store: Path, keep: list[Path] | None, everything: bool = False) -> dict:
    """Delete from the store every image its index lists and no manifest in `keep` names (all with
    `everything`). Nothing is deleted if the store holds a file its index does not list or a kept
    folder has no manifest."""
    store = Path(store)
    if not store.is_dir():
        raise DataError(f"{store}: no generation store here (nothing to prune)")
    wanted: set[str] | None = None
    if not everything:
        wanted = set()
        for folder in keep or []:
            manifest = Path(folder) / MANIFEST
            if not os.path.lexists(manifest):
                raise DataError(
                    f"{manifest}: not found; its images would be pruned (build it first, name the "
                    "folders to keep with --keep, or empty the store with --all)"
                )
            # OutputFolder.keys: a manifest that is a link, FIFO or folder is refused unread
            wanted.update(stored_name(k, f) for f, k in OutputFolder(Path(folder)).keys().items() if KEY.fullmatch(k))
    with store_lock(store, exclusive=True):  # not while a generate run links images out of it
        return ImageStore(store).prune(wanted)


def cli_prune(
    store: Path = typer.Option(PIPELINE_STORE, "--store", help="the generation store"),
    keep: list[Path] | None = typer.Option(
        None, "--keep", help="image folder whose manifest's images stay (repeatable; default: every generate@S output)"
    ),
    everything: bool = typer.Option(False, "--all", help="empty the store"),
) -> None:
    """Delete images of the generation store that no current generate@S output uses (the store never shrinks otherwise)."""
    counts = prune_generation_store(store, None if everything else (keep or image_folders()), everything)
    print(shown(f"generate-prune: {counts['removed']} images removed, {counts['kept']} kept in {store}"))
