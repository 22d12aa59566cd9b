"""tag reads a release's stats.json as a regular file only (round 10): a FIFO, a device or a folder put
where stats.json belongs is one line naming it, never a hang; a stats.json of another shape is one line."""

from __future__ import annotations

import json
import os

import pytest

from scripts.lib.errors import DataError
from scripts.tools.tag import release_message

STATS = {"rows": {"train": 3, "validation": 1, "total": 4}, "by_source": {"train": {"a": 3}}}


def fifo(path):
    os.mkfifo(path)


def device(path):
    os.symlink("/dev/zero", path)


def folder(path):
    path.mkdir()


def list_json(path):
    path.write_text("[1, 2]")


@pytest.mark.parametrize(
    "make, said",
    [
        (fifo, "not a regular file"),
        (device, "refusing to read it"),  # a link to /dev/zero: out of the release's folder, refused first
        (folder, "not a regular file"),
        (list_json, "not the stats release writes"),
    ],
)
def test_a_stats_file_that_is_not_a_regular_stats_file_is_one_line(tmp_path, monkeypatch, make, said):
    monkeypatch.chdir(tmp_path)
    stats = tmp_path / "stats.json"
    make(stats)
    with pytest.raises(DataError) as caught:
        release_message("v9", stats, "release@v9")  # a FIFO opened for reading blocked here before
    assert said in str(caught.value) and "stats.json" in str(caught.value)
    assert "\n" not in str(caught.value)


def test_a_release_stats_file_gives_the_tag_message(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    stats = tmp_path / "stats.json"
    stats.write_text(json.dumps(STATS))
    message = release_message("v9", stats, "release@v9")
    assert message.splitlines()[0] == "release v9: train 3, validation 1"
