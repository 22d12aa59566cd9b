"""Round 38b: unprintable paths for `simpletuner` and `simpletuner-config` (scripts/tools/simpletuner.py).

An output, --data-dir, --config, --txt-dir or --cache-dir path holding a line break, an escape code or another
unprintable character was written at exit 0: a file name no listing shows as it is, and (for the folders and
caches) a SimpleTuner config entry naming it. Now one line at the tool, the path escaped, exit 2, nothing written.
"""

from __future__ import annotations

import io
import json

import pytest
from PIL import Image

from helpers import cli, write_tar
from scripts.lib.simpletuner import backend_config


def shards(root):
    buffer = io.BytesIO()
    Image.new("RGB", (4, 4), (1, 2, 3)).save(buffer, format="PNG")
    record = {"image_name": "a.png", "short_caption": "a cat", "width": 4, "height": 4}
    write_tar(root / "in" / "data-000000.tar", [("0.png", buffer.getvalue()), ("0.json", json.dumps(record).encode())])
    return "in"


def release_split(root):
    split = root / "rel" / "train"
    split.mkdir(parents=True)
    entries = backend_config("t2i-train", "train", "train/simpletuner.parquet", "cache")
    (split / "multidatabackend.json").write_text(json.dumps(entries), encoding="utf-8")
    return "rel/train"


def everything(root):
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def assert_refused_in_one_line(result, bad: str):
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert result.stderr.count("\n") == 1 and "unprintable character" in result.stderr, result.stderr
    assert bad not in result.stderr.rstrip("\n") and bad.encode("unicode_escape").decode() in result.stderr  # escaped


SIMPLETUNER = {  # case: (the unprintable text, argv after the shards with BAD where it goes)
    "an output holding a newline": ("\n", ["oBADut.parquet"]),
    "an output holding an escape code": ("\x1b[31m", ["BADout.parquet"]),
    "a --data-dir holding a bell": ("\x07", ["out.parquet", "--data-dir", "daBADta"]),
    "a --config holding a tab": ("\t", ["out.parquet", "--data-dir", "data", "--config", "cBADfg.json"]),
    "a --txt-dir holding a carriage return": ("\r", ["out.parquet", "--txt-dir", "txBADt"]),
    "a --data-dir holding DEL": ("\x7f", ["out.parquet", "--data-dir", "dBAD"]),
}


@pytest.mark.parametrize("case", SIMPLETUNER)
def test_simpletuner_refuses_an_unprintable_path(tmp_path, monkeypatch, capfd, case):
    bad, argv = SIMPLETUNER[case]
    source = shards(tmp_path)
    before = everything(tmp_path)
    argv = [arg.replace("BAD", bad) for arg in argv]
    result = cli(["simpletuner", source, *argv], tmp_path, monkeypatch, capfd)
    assert_refused_in_one_line(result, bad)
    assert everything(tmp_path) == before


CONFIG = {  # case: (the unprintable text, argv after the split)
    "an output holding a newline": ("\n", ["oBADut.json"]),
    "an output holding an escape code": ("\x1b]0;x\x07", ["BADout.json"]),
    "a --cache-dir holding a newline": ("\n", ["out.json", "--cache-dir", "caBADche"]),
    "a --cache-dir holding a vertical tab": ("\x0b", ["out.json", "--cache-dir", "cBAD"]),
}


@pytest.mark.parametrize("case", CONFIG)
def test_simpletuner_config_refuses_an_unprintable_path(tmp_path, monkeypatch, capfd, case):
    bad, argv = CONFIG[case]
    split = release_split(tmp_path)
    before = everything(tmp_path)
    argv = [arg.replace("BAD", bad) for arg in argv]
    result = cli(["simpletuner-config", split, *argv], tmp_path, monkeypatch, capfd)
    assert_refused_in_one_line(result, bad)
    assert everything(tmp_path) == before
