"""publish: a built release as a Hugging Face Hub dataset repository, tagged like its git tag.

    python -m scripts publish V --repo-id ORG/NAME [--dry-run] [--out DIR] [--private]

Writes a Hub-ready folder (default dist/hub/V, replaced whole on the next run):
  data/{split}-NNNNN-of-NNNNN.parquet  rows with images embedded in datasets' Image layout ({bytes, path}; the
      `huggingface` schema metadata names the features for `load_dataset("parquet")` and the Hub's viewer), shards
      of at most --max-shard-mb (default 500 MB), row groups of 100 rows, <= 10,000 files in the folder;
  README.md  the data card (huggingface_hub.DatasetCard): license (name and link), language, source datasets,
      features, num_bytes / num_examples per split, size category, a loading snippet, the contact sheet, and the
      release's own card (rows, removals, recipe, params);
  LICENSE.md the licence of each source (params.yaml: sources.S.license), when they are not one;
  preview.jpg the release's contact sheet.
Then (without --dry-run; HF_HUB_OFFLINE refuses it) creates the dataset repository if needed, uploads the folder with
`HfApi.upload_folder` and tags the uploaded commit with the git tag (default V, at HEAD, with release@V up to date:
`python -m scripts tag V` first), so the Hub's `revision="V"` is the data of `git checkout V`. The token is read from
HF_TOKEN only (never printed nor written); HF_ENDPOINT points at another Hub; the client's telemetry is off
(quiet_hub_client). Reads the release's rows.parquet, so any export layout publishes the same rows and images.
Upload: huggingface_hub 2.x's `upload_folder` (with hf_xet: streamed, several commits, resumable by re-running)."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
from pathlib import Path

import typer

from scripts.lib.errors import DataError, os_reason
from scripts.lib.export import TABLE_COLUMNS as COLUMNS
from scripts.lib.import_env import quiet_hub_client
from scripts.lib.io import SPLITS, atomic_path, shown
from scripts.lib.markdown_text import authored, cell, code_span, front_matter_as_code, link
from scripts.lib.temps import output_lock
from scripts.tools.hub_http import check_online, check_publish_names
from scripts.tools.hub_licence import check_licence_options, licence_fields
from scripts.tools.publish_shards import count_rows, release_rows, write_shards
from scripts.tools.publish_shards import image_read as image_read  # the rows and shards' names, as before
from scripts.tools.publish_shards import plan_shards as plan_shards
from scripts.tools.publish_shards import read_split as read_split
from scripts.tools.publish_shards import rows_with_images as rows_with_images
from scripts.tools.side_inputs import check_outside_stores, release_card_body, release_file

MAX_FILES_PER_FOLDER = 10_000  # the Hub's limit on files in one folder
# the card's YAML form of the features (their JSON form: scripts/lib/export.py HF_FEATURES, shared with `export: parquet`)
CARD_FEATURES = [{"name": "image", "dtype": "image"}] + [
    {"name": c, "dtype": "int32" if c in ("width", "height") else "string"} for c in COLUMNS
]
# source kind -> the Hub dataset it comes from (source_datasets: extended|ID); others are "original"
HUB_SOURCES = {"diffusiondb": "poloclub/diffusiondb", "gustavosta": "Gustavosta/Stable-Diffusion-Prompts"}
SIZE_CATEGORIES = [
    (1_000, "n<1K"),
    (10_000, "1K<n<10K"),
    (100_000, "10K<n<100K"),
    (1_000_000, "100K<n<1M"),
    (10_000_000, "1M<n<10M"),
    (100_000_000, "10M<n<100M"),
    (1_000_000_000, "100M<n<1B"),
    (10_000_000_000, "1B<n<10B"),
    (100_000_000_000, "10B<n<100B"),
    (1_000_000_000_000, "100B<n<1T"),
]


def size_category(rows: int) -> str:
    return next((name for limit, name in SIZE_CATEGORIES if rows < limit), "n>1T")


# --- the contact sheet ---------------------------------------------------------------------------


def copy_preview(path: Path, release_dir: Path, target: Path) -> None:
    """Copy the contact sheet `path` (release_file checked it by name) from one open checked there (a link out
    or hard link swapped in was uploaded), if a JPEG of a sheet's size (pr-comment's MAX_SHEET_BYTES): a 1 GB
    sparse file was uploaded whole, and any bytes named preview.jpg were published as the card's image."""
    from scripts.lib.dvc_cache import is_cache_copy
    from scripts.lib.safe_paths import open_within
    from scripts.tools.pr_comment import MAX_SHEET_BYTES

    try:
        with open_within(path, release_dir, one_name=True, links_ok=is_cache_copy) as file:
            data = file.read(MAX_SHEET_BYTES + 1)
    except FileNotFoundError:
        raise DataError(f"{shown(path)}: removed while the release was read") from None
    if len(data) > MAX_SHEET_BYTES or not data.startswith(b"\xff\xd8\xff"):
        raise DataError(f"{shown(path)}: not a JPEG contact sheet of {MAX_SHEET_BYTES >> 20} MB or less; not published")
    with open(target, "xb") as out:
        out.write(data)


# --- the card ------------------------------------------------------------------------------------


def build_card(
    recipe,
    release_dir: Path,
    repo_id: str,
    tag: str,
    commit: str,
    splits: dict,
    sources: dict,
    licence: dict,
    download_size: int,
):
    from huggingface_hub import DatasetCard, DatasetCardData

    name = recipe.name
    used = sorted({c.source for c in recipe.components})
    kinds = {s: sources[s].kind if s in sources else s for s in used}
    hub = sorted({HUB_SOURCES[k] for k in kinds.values() if k in HUB_SOURCES})
    total = sum(s["num_examples"] for s in splits.values())
    data = DatasetCardData(
        pretty_name=f"t2i-datasets {name}",
        language=["en"],
        **licence,
        task_categories=["text-to-image", "image-to-text"],
        size_categories=[size_category(total)],
        source_datasets=[f"extended|{h}" for h in hub] + (["original"] if len(hub) < len(set(kinds.values())) else []),
        tags=["text-to-image", "stable-diffusion", "dvc"],
        configs=[{"config_name": "default", "data_files": [{"split": s, "path": f"data/{s}-*"} for s in splits]}],
        dataset_info={
            "features": CARD_FEATURES,
            "splits": [
                {"name": s, "num_bytes": i["num_bytes"], "num_examples": i["num_examples"]} for s, i in splits.items()
            ],
            "download_size": download_size,
            "dataset_size": sum(i["num_bytes"] for i in splits.values()),
        },
    )
    counts = ", ".join(f"{s} {i['num_examples']:,}" for s, i in splits.items())
    body = [
        f"# t2i-datasets {name}",
        "",
        authored(recipe.description or ""),  # as the release card shows it (markdown_text.authored)
        "",
        f"Rows: {counts}. Sources: "
        + ", ".join(
            code_span(s)
            + (
                f" ([{HUB_SOURCES[kinds[s]]}](https://huggingface.co/datasets/{HUB_SOURCES[kinds[s]]}))"
                if kinds[s] in HUB_SOURCES
                else ""
            )
            for s in used
        )
        + ".",
        "",
        "## Load it",
        "",
        "```python",
        "from datasets import load_dataset",
        "",
        # JSON strings are Python literals: a `"` in a tag (git allows it) stays inside the string
        f"ds = load_dataset({json.dumps(repo_id)}, revision={json.dumps(tag)})   # the data of git tag {tag}",
        'ds["train"][0]["image"]   # a PIL image; "text" is its caption',
        "```",
        "",
        "## Contact sheet",
        "",
        "![contact sheet: sample images and captions](preview.jpg)",
        "",
        "## Features",
        "",
        "| column | type | meaning |",
        "|---|---|---|",
        "| image | image | the image (PNG/JPEG bytes) |",
        "| text | string | the caption (cleaned prompt) |",
        "| orig_text | string | the prompt as the source had it |",
        "| id | string | stable row id (sha256 of source and key) |",
        "| source | string | the source dataset (params.yaml: sources) |",
        "| width, height | int32 | image size in pixels |",
        "",
        "## Provenance",
        "",
        f"Built by the t2i-datasets pipeline with `dvc repro release@{name}` at git tag {code_span(tag)} (commit "
        f"`{commit[:12]}`), published with `python -m scripts publish {name}`; Hub tag {code_span(tag)} is that "
        "commit's data.",
        "",
        "## Licence",
        "",
        code_span(licence["license"])  # the name as text, the link only where link_target takes it (cli checks)
        + (
            f" ({cell(licence['license_name'])}: {link(licence['license_link'], licence['license_link'])})"
            if licence.get("license_name")
            else ""
        ),
        "",
        "## Release card",
        "",
        # its h1s demoted, raw HTML as text, a second `---` block after the front matter as YAML code
        authored(front_matter_as_code(release_card_body(release_dir))),
        "",
    ]
    return DatasetCard(f"---\n{data.to_yaml()}\n---\n" + "\n".join(body))


# --- git and the upload --------------------------------------------------------------------------


def _git(*args: str) -> str:
    try:  # git not started (the open-file limit: its pipes) is no "not in a git repository"
        result = subprocess.run(["git", *args], capture_output=True, text=True)
    except OSError as exc:
        raise DataError(f"cannot start `git {args[0]}` ({os_reason(exc)})") from None
    return result.stdout.strip() if result.returncode == 0 else ""


def tag_at_head(tag: str, name: str, hint: str = "or --dry-run") -> str:
    """The commit of HEAD, which `tag` must point at; one line outside a git repository or for no such tag.
    `--dry-run --tag X` checked nothing: the card named tag X, and outside git an empty commit."""
    head = _git("rev-parse", "HEAD")
    if not head:
        raise DataError(f"git tag {tag} not found: not in a git repository with a commit (run from the repository)")
    at = _git("rev-parse", "-q", "--verify", f"refs/tags/{tag}^{{commit}}")
    if not at:
        raise DataError(f"git tag {tag} not found: tag the release first (python -m scripts tag {name}), {hint}")
    if at != head:
        raise DataError(
            f"git tag {tag} is {at[:12]}, not HEAD {head[:12]}: `git checkout {tag}` (and `dvc checkout`) first"
        )
    return head


def check_tag(tag: str, name: str) -> str:
    """The commit of HEAD, which `tag` must point at (tag_at_head); release@NAME must be up to date there."""
    head = tag_at_head(tag, name)
    from dvc.repo import Repo

    from scripts.tools.tag import check_up_to_date

    with Repo() as repo:
        check_up_to_date(repo, f"release@{name}")
    return head


def upload(folder: Path, repo_id: str, tag: str, commit: str, private: bool) -> str:
    """Create the dataset repository if needed, upload the folder, tag the commit; the Hub commit id."""
    from scripts.tools.hub_http import (
        check_proxy_variables,
        endpoint_secrets,
        hub_client_factory,
        hub_error,
        hub_token,
        refuse_token_in,
    )

    quiet_hub_client()  # only the requests asked for, and no file of its own in HF_HOME
    token = hub_token(os.environ.get("HF_TOKEN"))
    check_proxy_variables()
    refuse_token_in(folder, token)
    endpoint = os.environ.get("HF_ENDPOINT") or None
    from huggingface_hub import HfApi, constants
    from huggingface_hub.utils import logging as hub_logging
    from huggingface_hub.utils import set_client_factory

    timeout_s = float(constants.HF_HUB_DOWNLOAD_TIMEOUT)
    set_client_factory(hub_client_factory(timeout_s))
    hub_logging.set_verbosity_error()  # its retry warnings quote URLs, and a failure is one line
    api = HfApi(endpoint=endpoint, token=token)
    try:
        api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
        info = api.upload_folder(
            repo_id=repo_id,
            repo_type="dataset",
            folder_path=folder,
            commit_message=f"{tag}: t2i-datasets release (git {commit[:12]})",
            ignore_patterns=[".t2i-output"],
        )
        api.create_tag(
            repo_id,
            repo_type="dataset",
            tag=tag,
            revision=info.oid,
            tag_message=f"t2i-datasets {tag} (git commit {commit})",
        )
    except DataError:
        raise
    except Exception as exc:
        raise DataError(hub_error(exc, [token, *endpoint_secrets(endpoint)], timeout_s)) from None
    return info.oid


def cli(
    name: str = typer.Argument(..., help="release name (data/releases/NAME)"),
    repo_id: str = typer.Option(..., "--repo-id", help="Hub dataset repository, ORG/NAME"),
    dry_run: bool = typer.Option(False, "--dry-run", help="write the folder only; no upload, no token needed"),
    out: Path = typer.Option(None, "--out", help="the Hub folder (default dist/hub/NAME)"),
    tag: str = typer.Option(None, "--tag", help="git tag to publish and name the Hub tag after (default NAME)"),
    private: bool = typer.Option(False, "--private", help="create the Hub repository private"),
    max_shard_mb: int = typer.Option(500, "--max-shard-mb", min=1, help="largest parquet shard, MB"),
    license: str = typer.Option(
        None, "--license", help="card licence id (default: from params.yaml sources.*.license)"
    ),
    license_name: str = typer.Option(None, "--license-name", help="licence name, with --license other"),
    license_link: str = typer.Option(None, "--license-link", help="licence URL or file, with --license other"),
) -> None:
    """Write a release as Hub parquet shards + data card, upload it and tag it on the Hub."""
    from scripts.lib.params import load_section
    from scripts.lib.recipe import resolve_recipe

    check_publish_names(repo_id, tag or name, "--tag" if tag else "release name", out)
    check_licence_options(license_name, license_link)
    check_online(dry_run)
    dry_run_head = dry_run and tag is None  # a tag named with --dry-run is checked too: the card names it
    tag = tag or name
    release_dir = Path("data/releases") / name
    sources = load_section("sources", missing_ok=True)
    recipe = resolve_recipe(name, load_section("releases", missing_ok=True))
    if recipe.export.format == "prompts":  # its rows have no image: the Hub folder here is images and captions
        raise DataError(
            f"params.yaml: releases.{name}: a text-only release (export: prompts) is not for `publish`, which "
            f"uploads images with their captions: upload data/releases/{name} as it is (`hf upload {repo_id} "
            f"data/releases/{name} . --repo-type dataset`; its card's configs name each split's prompts.parquet)"
        )
    out = out or Path("dist/hub") / name
    check_outside_stores(".", out)  # `--out .git/hub`, `data/hub`: never into git's, DVC's or the stages' folders
    # --out's lock for the whole run, upload included: a second run at once is refused before it reads git and
    # the release, not at its write, and never replaces the folder the first is uploading
    with output_lock(out, whole_run=True):
        if dry_run_head:
            commit = _git("rev-parse", "HEAD")
        else:
            commit = tag_at_head(tag, name, "or leave out --tag") if dry_run else check_tag(tag, name)
        with contextlib.ExitStack() as held:  # rows.parquet opened once, for both passes
            rows = held.enter_context(release_rows(release_dir))
            count_rows(rows)  # every row checked before the folder is begun; read again as the shards are written
            tmp = held.enter_context(atomic_path(out, is_dir=True, inputs=[release_dir]))
            (tmp / "data").mkdir()
            infos = {
                split: write_shards(rows.records(split), split, tmp / "data", max_shard_mb * 1_000_000)
                for split in SPLITS
            }
            files = sum(len(i["files"]) for i in infos.values())
            if files > MAX_FILES_PER_FOLDER:
                raise DataError(
                    f"{files} shards in data/: over the Hub's {MAX_FILES_PER_FOLDER} files per folder (raise --max-shard-mb)"
                )
            download_size = sum((tmp / "data" / f).stat().st_size for i in infos.values() for f in i["files"])
            used = sorted({c.source for c in recipe.components})
            licence, licence_text = licence_fields(sources, used, license, license_name, license_link)
            if licence_text:
                (tmp / "LICENSE.md").write_text(licence_text, encoding="utf-8")
            preview = release_file(release_dir, "preview.jpg", str(release_dir))
            if preview:
                copy_preview(preview, release_dir, tmp / "preview.jpg")
            build_card(recipe, release_dir, repo_id, tag, commit, infos, sources, licence, download_size).save(
                tmp / "README.md"
            )
        total = {s: i["num_examples"] for s, i in infos.items()}
        print(f"publish: {shown(out)} ({files} shards, {download_size / 1e6:.1f} MB, rows {total})")
        if dry_run:
            return
        oid = upload(out, repo_id, tag, commit, private)
        print(shown(f"publish: {repo_id} commit {oid[:12]} tagged {tag}"))
