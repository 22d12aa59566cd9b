"""A release's refusal of a row's image named the image's path raw: an escape code or a newline in a source's
file name reached the terminal as it was (round 41c's report: webdataset's and parquet's `refused (...)` line,
`image not found`, bucketed's `cannot read image (...)`). Each is printable-escaped now, as every path in a line."""

from __future__ import annotations

import os

import pytest

from scripts.lib.errors import DataError
from scripts.lib.release_images import image_bytes

NAME = "cat\x1b[31m\nred.png"  # an escape code and a newline in a file name

REFS = {  # case: (makes the thing at the image's name, what the line says)
    "a missing image": (lambda path: None, "image not found"),
    "a folder at its name": (lambda path: path.mkdir(), "refused"),
    "a FIFO at its name": (lambda path: os.mkfifo(path), "refused"),
}


@pytest.mark.parametrize("case", REFS)
def test_a_refused_image_path_is_shown_escaped(tmp_path, case, fifo_reads_fail):
    make, says = REFS[case]
    make(tmp_path / NAME)
    with pytest.raises(DataError) as raised:
        image_bytes(str(tmp_path / NAME))
    line = str(raised.value)
    assert says in line and "\x1b" not in line and "\n" not in line, repr(line)
    assert "\\x1b" in line  # the name is still there, escaped
