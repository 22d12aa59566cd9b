"""The eighth hostile round and its review, one table each (every row failed before its fix unless it
says it guards what held): DVC's cache found where `dvc cache dir` put it, not only at `.dvc/cache`.
Real DVC repositories, real links."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from scripts.lib.errors import DataError
from scripts.lib.paths import check_split_rows

PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c63f8cfc0f01f0005000201a5f0e1b70000000049454e44ae426082"
)


def dvc_repo(root: Path, cache: Path | None) -> Path:
    root.mkdir(parents=True)
    subprocess.run(["git", "init", "-q", "-b", "main"], cwd=root, check=True)
    subprocess.run([sys.executable, "-m", "dvc", "init", "-q"], cwd=root, check=True)
    if cache is not None:
        subprocess.run([sys.executable, "-m", "dvc", "cache", "dir", str(cache)], cwd=root, check=True)
    return root


def split_rows(images: list[str]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "id": [f"r{n}" for n in range(len(images))],
            "source": "s",
            "text": "a lighthouse",
            "orig_text": "A lighthouse",
            "image": images,
            "width": 1,
            "height": 1,
        }
    )


CACHES = {  # where the cache is -> (cache folder, relative to tmp_path, or None for .dvc/cache)
    "dvc cache dir, absolute, elsewhere": "shared/dvc-cache",
    "dvc cache dir, a sibling of the repository": "repo-cache",
    "the default .dvc/cache (guards what held)": None,
}


@pytest.mark.parametrize("case", CACHES)
def test_an_image_linked_into_the_repositorys_dvc_cache_is_inside_its_source(tmp_path, monkeypatch, case):
    """cache.type symlink leaves each image a link into the cache: release@V accepts it wherever the
    cache is, and still refuses a link to a file outside both."""
    cache = tmp_path / CACHES[case] if CACHES[case] else None
    repo = dvc_repo(tmp_path / "repo", cache)
    cached = (cache or repo / ".dvc" / "cache") / "files" / "md5" / "ab" / "cdef0123456789abcdef0123456789"
    cached.parent.mkdir(parents=True, exist_ok=True)
    cached.write_bytes(PNG)
    (tmp_path / "mine.png").write_bytes(PNG)
    images = repo / "data" / "images" / "s"
    images.mkdir(parents=True)
    (images / "r0.png").symlink_to(cached)
    (images / "r1.png").symlink_to(tmp_path / "mine.png")
    monkeypatch.chdir(repo)
    check_split_rows(split_rows(["data/images/s/r0.png"]), Path("t.parquet"), "s", [Path("data/images/s")])
    with pytest.raises(DataError, match="row 2: image 'data/images/s/r1.png' is outside the folders of source 's'"):
        check_split_rows(
            split_rows(["data/images/s/r0.png", "data/images/s/r1.png"]),
            Path("t.parquet"),
            "s",
            [Path("data/images/s")],
        )
