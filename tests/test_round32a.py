"""Round 32a: JSON that is not JSON, read and written.

1. nesting.loads_json, the one bounded reader of every JSON file and reply, took Python's extensions: `NaN`,
   `Infinity`, `-Infinity`, a number that overflows a float (`1e999` read as inf) and a lone surrogate escape
   (`"\\ud800"`: half a UTF-16 pair, no character, not UTF-8). None is JSON (RFC 8259). `simpletuner-config`
   copied NaN and Infinity from a release's multidatabackend.json into the config it wrote (SimpleTuner's
   reader, and every strict one, refuses it) at exit 0; a DALL-E-3 record or a webdataset sample with NaN
   in its .json was read as a good one (ingest wrote it as null). Each is now refused, one line naming the
   file (or counted as the sample's bad_json).
2. Our own writers (io.write_json/json_text, the SimpleTuner configs, recipes, the dedup index) wrote NaN or
   Infinity as Python does; they now refuse it (nesting.dumps_json) in one line naming the output.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import cli, write_tar
from helpers.repos import REPO
from helpers.workspace import PNG, error_line, ingest_source
from scripts.lib.errors import DataError
from scripts.lib.io import json_text, write_json
from scripts.lib.nesting import loads_json

# A value of each class, as the JSON text a hostile file holds, and the words the line says.
NOT_JSON = {  # case: (text of the value, words of the refusal)
    "NaN": ("NaN", "NaN is not a JSON number"),
    "NaN in a list": ("[1, NaN]", "NaN is not a JSON number"),
    "NaN as an object's member": ('{"a": {"b": NaN}}', "NaN is not a JSON number"),
    "Infinity": ("Infinity", "Infinity is not a JSON number"),
    "-Infinity": ("-Infinity", "-Infinity is not a JSON number"),
    "Infinity in a list": ("[0.5, Infinity]", "Infinity is not a JSON number"),
    "1e999": ("1e999", "too large for a float"),
    "-1e999": ("-1e999", "too large for a float"),
    "a 400-digit number with a fraction": ("1" + "0" * 400 + ".5", "too large for a float"),
    "a lone high surrogate": ('"\\ud800"', "lone surrogate \\ud800"),
    "a lone low surrogate, upper case": ('"a\\uDC00b"', "lone surrogate \\udc00"),
    "a high surrogate before a letter": ('"\\ud83dx"', "lone surrogate \\ud83d"),
    "a lone surrogate as a key": ('{"\\udbff": 1}', "lone surrogate \\udbff"),
}
STILL_JSON = {  # case: (text, value): what the checks must not refuse
    "a surrogate pair": ('"\\ud83d\\ude00"', "\U0001f600"),
    "an escaped backslash before ud800": ('"\\\\ud800"', "\\ud800"),
    "the largest float": ("1.7976931348623157e308", 1.7976931348623157e308),
    "a word NaN in a string": ('{"NaN": "Infinity"}', {"NaN": "Infinity"}),
}


@pytest.mark.parametrize("case", NOT_JSON)
def test_loads_json_refuses_what_is_not_json(case):
    text, said = NOT_JSON[case]
    for given in (text, text.encode("utf-8")):
        with pytest.raises(ValueError, match=said.replace("\\", "\\\\")):
            loads_json(given)


@pytest.mark.parametrize("case", STILL_JSON)
def test_loads_json_still_reads_json(case):
    text, value = STILL_JSON[case]
    assert loads_json(text) == value


def test_the_utf8_bytes_of_a_surrogate_are_refused():
    """json.loads decodes bytes with surrogatepass: the three bytes of U+D800 were read as that half pair."""
    with pytest.raises(ValueError):
        loads_json(b'"\xed\xa0\x80"')


# ---------------------------------------------------------------- 1a. simpletuner-config, a real process

ENTRY = {"id": "t2i-train", "type": "local", "instance_data_dir": "train", "cache_dir_vae": "cache/vae/t2i-train"}


def python(args: list, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "scripts", *map(str, args)],
        cwd=cwd,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO), "DVC_NO_ANALYTICS": "1"},
        capture_output=True,
        timeout=120,
    )


def _config_with(value: str) -> str:
    """A release split's multidatabackend.json, `value` (JSON text) as its image entry's `repeats`."""
    text = json.dumps([{**ENTRY, "repeats": "@"}])
    return text.replace('"@"', value)


PROCESS_CASES = [  # a real process each (2-3 s): one in the default tier, the in-process rows below cover the rest
    "NaN",
    *(pytest.param(case, marks=pytest.mark.slow) for case in ("-Infinity", "1e999", "a lone high surrogate")),
]


@pytest.mark.parametrize("case", PROCESS_CASES)
def test_simpletuner_config_refuses_a_config_that_is_not_json(tmp_path, case):
    """It wrote `"repeats": NaN` (or Infinity, or an escape no reader turns into text) at exit 0."""
    text, said = NOT_JSON[case]
    split = tmp_path / "rel" / "train"
    split.mkdir(parents=True)
    (split / "multidatabackend.json").write_text(_config_with(text), encoding="utf-8")
    result = python(["simpletuner-config", "rel/train", "cfg.json", "--cache-dir", "sc"], tmp_path)
    err = result.stderr.decode("utf-8", "replace")
    assert result.returncode == 2 and "Traceback" not in err, err[-2000:]
    line = error_line(err)
    assert "multidatabackend.json" in line and said in line, line
    assert not (tmp_path / "cfg.json").exists()


IN_PROCESS_CASES = ["NaN in a list", "Infinity", "-1e999", "a lone low surrogate, upper case"]


@pytest.mark.parametrize("case", IN_PROCESS_CASES)
def test_simpletuner_config_refuses_in_process_too(tmp_path, monkeypatch, capfd, case):
    text, said = NOT_JSON[case]
    split = tmp_path / "rel" / "train"
    split.mkdir(parents=True)
    (split / "multidatabackend.json").write_text(_config_with(text), encoding="utf-8")
    result = cli(["simpletuner-config", "rel/train", "cfg.json", "--cache-dir", "sc"], tmp_path, monkeypatch, capfd)
    assert result.returncode == 2, result.stderr[-2000:]
    line = error_line(result.stderr)
    assert "multidatabackend.json" in line and said in line, line
    assert not (tmp_path / "cfg.json").exists()


# ---------------------------------------------------------------- 1b. a DALL-E-3 shard's .json


def _png() -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (12, 8), (200, 20, 90)).save(buffer, format="PNG")
    return buffer.getvalue()


DALLE3_CASES = ["NaN", "Infinity in a list", "1e999", "a lone high surrogate", "a lone surrogate as a key"]


@pytest.mark.parametrize("case", DALLE3_CASES)
def test_simpletuner_refuses_a_dalle3_record_that_is_not_json(tmp_path, monkeypatch, capfd, case):
    """`"width": NaN` passed caption_of's `is None` test at exit 0. A lone surrogate is the sample's not_utf8."""
    text, said = NOT_JSON[case]
    record = json.dumps({"image_name": "a.png", "short_caption": "a cat", "width": 12, "height": 8, "extra": "@"})
    members = [("000.png", _png()), ("000.json", record.replace('"@"', text).encode())]
    write_tar(tmp_path / "dalle3" / "data-000000.tar", members)
    argv = ["simpletuner", "dalle3", "o.parquet", "--on-error", "fail"]
    result = cli(argv, tmp_path, monkeypatch, capfd)
    assert result.returncode == 2, result.stderr[-2000:]
    line = error_line(result.stderr)
    assert "data-000000.tar" in line and (said if "surrogate" not in case else "not UTF-8") in line, line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dalle3"]


# ---------------------------------------------------------------- 1c. a webdataset shard's .json (ingest)

WEBDATASET_CASES = [
    "NaN as an object's member",
    "-Infinity",
    "a 400-digit number with a fraction",
    "a lone high surrogate",
]


@pytest.mark.parametrize("case", WEBDATASET_CASES)
def test_ingest_refuses_a_webdataset_sample_whose_json_is_not_json(tmp_path, monkeypatch, capfd, case):
    """The sample was ingested, its NaN or Infinity written as null, at exit 0."""
    text, said = NOT_JSON[case]
    meta = json.dumps({"target_w": 512, "target_h": 512, "score": "@"}).replace('"@"', text).encode()
    shard = write_tar(tmp_path / "shard.tar", [("k.png", PNG), ("k.txt", b"a red fox\n"), ("k.json", meta)])
    manifest = {"format": "bucketed_shards_v1", "buckets": {"b1": {"shards": ["buckets/b1/shard-000000.tar"]}}}
    files = {"manifest.json": json.dumps(manifest).encode(), "buckets/b1/shard-000000.tar": shard.read_bytes()}
    source = {"kind": "bucketed_webdataset", "images": "data/raw/s", "on_error": "fail"}
    result, rows = ingest_source(tmp_path, monkeypatch, capfd, source, files)
    assert result.returncode == 2 and rows is None, result.stderr[-2000:]
    line = error_line(result.stderr)
    assert "shard-000000.tar" in line and (said if "surrogate" not in case else "not UTF-8") in line, line


# ---------------------------------------------------------------- 2. what we write


UNWRITABLE = {  # case: a value no JSON file of ours may hold
    "NaN": float("nan"),
    "Infinity in a list": [1.0, float("inf")],
    "-Infinity as a member": {"mean": float("-inf")},
    "a lone surrogate": {"caption": "a\ud800b"},
}


@pytest.mark.parametrize("case", UNWRITABLE)
def test_write_json_refuses_what_is_not_json_naming_the_output(tmp_path, case):
    from scripts.lib.nesting import dumps_json

    target = tmp_path / "stats.json"
    with pytest.raises(DataError, match="stats.json") as caught:
        write_json({"value": UNWRITABLE[case]}, target)
    assert "\n" not in str(caught.value)
    assert not target.exists() and list(tmp_path.iterdir()) == []
    with pytest.raises(DataError, match="report.json"):
        json_text(UNWRITABLE[case], "report.json")
    with pytest.raises(DataError, match="multidatabackend.json"):
        dumps_json([UNWRITABLE[case]], "multidatabackend.json", indent=2)


PLAN_CASES = ["NaN in a list", "Infinity", "1e999", "a lone low surrogate, upper case"]


@pytest.mark.parametrize("case", PLAN_CASES)
def test_a_recipe_plan_that_is_not_json_is_unreadable_not_stale(tmp_path, case):
    """A plan file (data/recipes/*.json) holding NaN was read, then called stale ("params edited since")."""
    from scripts.lib.plans import check_plan

    text, said = NOT_JSON[case]
    path = tmp_path / "r1.json"
    path.write_text('{"releases": [["r1", {"x": @}]]}'.replace("@", text), encoding="utf-8")
    with pytest.raises(DataError, match="unreadable recipe plan") as caught:
        check_plan(path, {"releases": [["r1", {"x": 1}]]})
    assert said in str(caught.value) and "r1.json" in str(caught.value)
