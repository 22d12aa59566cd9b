"""The sixth hostile round's generation-store and simpletuner breaks, one table each (every row failed
before its fix): the store's records (index, lock, journal) linked out were written through or blocked on;
a full disk tore the index and wedged generate-prune; simpletuner-config trusted any `.dvc/cache`; two
DALL-E-3 records sharing a caption file overwrote each other. Real files, the real stage functions."""

from __future__ import annotations

import io
import json
import os
import tarfile
from pathlib import Path

import pandas as pd
import pytest

from scripts.generate import generate, prune_generation_store
from scripts.lib.errors import DataError
from scripts.lib.image_store import claim_store
from scripts.lib.name_lists import NameList
from scripts.lib.params import Generate
from tests.helpers.trees import file_digests
from tests.helpers.workspace import REPO, error_line, run_scripts

TEXTS = ["a lighthouse at night", "a red fox in the snow"]


def prompts() -> pd.DataFrame:
    return pd.DataFrame({"id": [f"row{i}" for i in range(len(TEXTS))], "text": TEXTS, "prompt": TEXTS})


def settings(model: Path) -> Generate:
    return Generate(model=str(model), steps=2, batch_size=1)


# ---------------------------------------------------------------- the store's records, never through a link


def index_hard_link(store: Path, outside: Path) -> None:
    os.link(outside, store / "index.txt")


def index_symlink(store: Path, outside: Path) -> None:
    (store / "index.txt").symlink_to(outside)


def tmp_symlink(store: Path, outside: Path) -> None:
    (store / ".tmp").symlink_to(outside.parent)


def index_fifo(store: Path, outside: Path) -> None:
    os.mkfifo(store / "index.txt")


def lock_fifo(store: Path, outside: Path) -> None:
    (store / ".tmp").mkdir()
    os.mkfifo(store / ".tmp" / "store.lock")


def lock_symlink(store: Path, outside: Path) -> None:
    (store / ".tmp").mkdir()
    (store / ".tmp" / "store.lock").symlink_to(outside)


@pytest.mark.parametrize(
    "make", [index_hard_link, index_symlink, tmp_symlink, index_fifo, lock_fifo, lock_symlink], ids=lambda f: f.__name__
)
def test_the_stores_records_are_never_written_through_a_link_or_blocked_on(tiny_model_dir, tmp_path, make):
    """index.txt hard- or soft-linked to a user's file had the store's names appended to it; `.tmp` linked
    elsewhere got the lock and temp files; a FIFO as the index or the lock hung generate for good."""
    (tmp_path / "elsewhere").mkdir()
    outside = tmp_path / "elsewhere" / "notes.txt"
    outside.write_text("my notes\n", encoding="utf-8")
    store = tmp_path / "store"
    store.mkdir()
    make(store, outside)
    before = file_digests(tmp_path / "elsewhere")
    with pytest.raises(DataError, match="store|generate"):
        generate(prompts(), settings(tiny_model_dir), tmp_path / "out", store=store)
    assert file_digests(tmp_path / "elsewhere") == before


def test_a_journal_that_is_a_fifo_is_refused_at_once(tiny_model_dir, tmp_path):
    (tmp_path / "out").mkdir()
    os.mkfifo(tmp_path / "out" / ".generate-journal")
    with pytest.raises(DataError, match="generate-journal"):
        generate(prompts(), settings(tiny_model_dir), tmp_path / "out")


# ---------------------------------------------------------------- a full disk never tears the index


@pytest.mark.parametrize("torn", ["e7/e7557641d214b44", "ab", "ff/" + "0" * 40])
def test_a_line_cut_short_by_a_full_disk_never_swallows_the_next(tmp_path, torn):
    """A full disk left `e7/e755...` without its newline; the next name was glued onto it, so the store
    held an image its index did not list, and generate-prune refused the store for good."""
    index = NameList(tmp_path / "index.txt")
    (tmp_path / "index.txt").write_text(f"aa/{'1' * 64}.jpg\n{torn}", encoding="utf-8")
    index.add(f"bb/{'2' * 64}.jpg")
    assert f"bb/{'2' * 64}.jpg" in index.names()


@pytest.mark.slow  # a generate run against a size limit: 13 s of CI; tests/test_stream_stages.py keeps a full disk in CI
def test_a_full_disk_while_the_index_grows_names_the_index(tiny_model_dir, tmp_path):
    store = tmp_path / "store"
    claim_store(store)  # a store generate made, its index grown by earlier runs
    (store / "index.txt").write_text("".join(f"ff/{i:064x}.jpg\n" for i in range(1442)), encoding="utf-8")
    (tmp_path / "params.yaml").write_text(
        json.dumps({"generate": {"model": str(tiny_model_dir), "steps": 2, "batch_size": 1}}), encoding="utf-8"
    )
    prompts().to_parquet(tmp_path / "in.parquet")
    done = run_scripts(tmp_path, "generate", "s", "in.parquet", "out", "--store", "store", limit=100 * 1024)
    line = error_line(done.stderr)
    assert done.returncode == 2 and "index.txt" in line, done.stderr
    done = run_scripts(tmp_path, "generate", "s", "in.parquet", "out", "--store", "store", timeout=600)
    assert done.returncode == 0, done.stderr
    prune_generation_store(store, [tmp_path / "out"])  # every image the store holds is listed


# ---------------------------------------------------------------- simpletuner-config trusts only its repository's cache


def cache_links_to_root(root: Path) -> Path:
    """`.dvc/cache` a link to `/`: every absolute path was "inside the cache"."""
    (root / ".dvc").mkdir()
    (root / ".dvc" / "cache").symlink_to("/")
    (root / "private").mkdir()
    return root / "private"


def cache_links_to_a_shared_folder(root: Path) -> Path:
    """`.dvc/cache` a link to a shared folder: all of it was trusted as DVC's."""
    (root / ".dvc").mkdir()
    (root / "shared" / "keys").mkdir(parents=True)
    (root / ".dvc" / "cache").symlink_to(root / "shared")
    return root / "shared" / "keys"


def cache_of_the_working_folder_only(root: Path) -> Path:
    """The release in a repository of its own; the `.dvc/cache` of the folder the command runs in is not its."""
    (root / ".dvc" / "cache" / "keys").mkdir(parents=True)
    (root / "rel" / ".dvc").mkdir(parents=True)
    return root / ".dvc" / "cache" / "keys"


@pytest.mark.parametrize(
    "make",
    [cache_links_to_root, cache_links_to_a_shared_folder, cache_of_the_working_folder_only],
    ids=lambda f: f.__name__,
)
def test_simpletuner_config_trusts_only_the_release_repositorys_own_cache(tmp_path, make):
    keys = make(tmp_path)
    (keys / "id_rsa").write_text("key\n", encoding="utf-8")
    (tmp_path / "rel" / "train").mkdir(parents=True)
    (tmp_path / "rel" / "keys").symlink_to(keys)
    entries = [{"id": "x", "type": "local", "instance_data_dir": "keys", "parquet": {"path": "keys/id_rsa"}}]
    (tmp_path / "rel" / "train" / "multidatabackend.json").write_text(json.dumps(entries), encoding="utf-8")
    done = run_scripts(tmp_path, "simpletuner-config", "rel/train", "cfg.json")
    assert done.returncode == 2 and "outside" in error_line(done.stderr), done.stderr
    assert not (tmp_path / "cfg.json").exists()


# ---------------------------------------------------------------- two records, one caption file


def dalle3_tar(path: Path, names: list[str]) -> None:
    from PIL import Image

    with tarfile.open(path, "w") as tar:
        for i, name in enumerate(names):
            image = io.BytesIO()
            Image.new("RGB", (8, 8), (i * 40, 0, 0)).save(image, "PNG")
            meta = json.dumps({"image_name": name, "width": 8, "height": 8, "short_caption": f"caption {i}"}).encode()
            for suffix, data in ((".png", image.getvalue()), (".json", meta)):
                info = tarfile.TarInfo(f"{i:04d}{suffix}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))


@pytest.mark.parametrize(
    "names",
    [["x.jpg", "x.txt"], ["x.jpg", "x.png"], ["a/b.jpg", "a/b.webp"]],
    ids=["image named as a caption", "two images one stem", "in a folder"],
)
def test_two_records_sharing_a_caption_file_are_a_duplicate(tmp_path, names):
    """The second record's caption overwrote the first's (or its image), exit 0."""
    dalle3_tar(tmp_path / "x.tar", names)
    done = run_scripts(tmp_path, "simpletuner", "x.tar", "st.parquet", "--data-dir", "dd", "--on-error", "fail")
    line = error_line(done.stderr)  # an image named x.txt is refused by its name first (round 8)
    assert done.returncode == 2 and ("already written" in line or "has no image extension" in line), done.stderr
    assert not (tmp_path / "dd").exists()


def test_the_sample_dalle3_shards_have_no_shared_caption_files(tmp_path):
    """The rule refuses nothing of the real sample (its image names are distinct stems)."""
    done = run_scripts(tmp_path, "simpletuner", str(REPO / "data" / "raw" / "dalle3"), "st.parquet", "--data-dir", "dd")
    assert done.returncode == 0 and "duplicate_image_name" not in done.stdout, done.stdout + done.stderr
