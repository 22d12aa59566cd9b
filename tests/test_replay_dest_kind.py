"""replay-history's DEST must be a folder (new or empty): a FIFO or device there was refused as "not a regular
file" (check_output_kind's words for a file output) and a plain file as the OS's bare `File exists` (round 39a's
report). Each is now one line saying DEST is not a folder, exit 2, nothing made or changed."""

from __future__ import annotations

import os

import pytest

from helpers.commands import cli
from helpers.workspace import error_line, snapshot

DESTS = {  # case: (makes the thing at DEST, what the line calls it)
    "a FIFO": (lambda path: os.mkfifo(path), "a FIFO"),
    "a plain file": (lambda path: path.write_bytes(b"my notes\n"), "a file"),
    "an empty file named like a folder": (lambda path: path.write_bytes(b""), "a file"),
}


@pytest.mark.parametrize("case", DESTS)
def test_a_dest_that_is_no_folder_is_one_line(tmp_path, monkeypatch, capfd, case, fifo_reads_fail):
    make, kind = DESTS[case]
    dest = tmp_path / "out" / ("replay.d" if "folder" in case else "replay")
    dest.parent.mkdir()
    make(dest)
    before = snapshot(tmp_path / "out")
    done = cli(["replay-history", str(dest)], tmp_path, monkeypatch, capfd)
    line = error_line(done.stderr)
    assert done.returncode == 2 and f"is {kind}, not a folder" in line, done.stderr
    assert snapshot(tmp_path / "out") == before
