"""Round 37b: hostile paths for `simpletuner` and `simpletuner-config` (scripts/tools/simpletuner.py).

1. simpletuner-config took a --cache-dir that exists and is no folder (a file, /dev/null, a FIFO, a link to a
   file): exit 0, and the config pointed SimpleTuner's caches under it. Now one line, exit 2, nothing written.
2. A --config / --output that is a folder was refused as "a data-backend config this command did not write";
   the line now says what it is (a folder, expected a file path).
"""

from __future__ import annotations

import json
import os

import pytest

from helpers.commands import cli
from scripts.lib.simpletuner import backend_config


def release_split(root):
    split = root / "rel" / "train"
    split.mkdir(parents=True)
    entries = backend_config("t2i-train", "train", "train/simpletuner.parquet", "cache")
    (split / "multidatabackend.json").write_text(json.dumps(entries), encoding="utf-8")
    return split


def cache_file(root):
    (root / "cf").write_bytes(b"USER DATA\n")
    return "cf"


def cache_fifo(root):
    os.mkfifo(root / "cf")
    return "cf"


def cache_link_to_file(root):
    (root / "u.txt").write_bytes(b"USER DATA\n")
    (root / "cf").symlink_to(root / "u.txt")
    return "cf"


NOT_A_CACHE_FOLDER = {  # case: makes the --cache-dir, returns its name
    "a user's file": cache_file,
    "/dev/null": lambda root: "/dev/null",
    "a FIFO": cache_fifo,
    "a link to a file": cache_link_to_file,
}


@pytest.mark.parametrize("case", NOT_A_CACHE_FOLDER)
def test_a_cache_dir_that_is_no_folder_is_one_line(tmp_path, monkeypatch, capfd, case):
    release_split(tmp_path)
    cache = NOT_A_CACHE_FOLDER[case](tmp_path)
    result = cli(["simpletuner-config", "rel/train", "out.json", "--cache-dir", cache], tmp_path, monkeypatch, capfd)
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1 and "--cache-dir exists and is not a folder" in result.stderr
    assert not (tmp_path / "out.json").exists()


def folder(root, name, holds=()):
    (root / name).mkdir()
    for item in holds:
        (root / name / item).write_bytes(b"USER DATA\n")
    return name


CONFIG_FOLDERS = {  # case: the argv (after the command's inputs are made), with the folder named
    "simpletuner-config --output an empty folder": lambda root: (
        ["simpletuner-config", "rel/train", folder(root, "od")],
        "od",
    ),
    "simpletuner-config --output a folder of the user's": lambda root: (
        ["simpletuner-config", "rel/train", folder(root, "od", ["mine.txt"])],
        "od",
    ),
    "simpletuner-config --output a folder named like a config": lambda root: (
        ["simpletuner-config", "rel/train", folder(root, "out.json")],
        "out.json",
    ),
}


@pytest.mark.parametrize("case", CONFIG_FOLDERS)
def test_a_config_path_that_is_a_folder_says_so(tmp_path, monkeypatch, capfd, case):
    release_split(tmp_path)
    argv, named = CONFIG_FOLDERS[case](tmp_path)
    result = cli(argv, tmp_path, monkeypatch, capfd)
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1 and f"{named}: is a folder, expected a file path" in result.stderr
    assert sorted(p.name for p in (tmp_path / named).iterdir()) in ([], ["mine.txt"])
