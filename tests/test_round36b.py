"""Round 36b: export and bucketed leftovers (round 35b's, 31e's and 32a's "not covered").

1. archive.read_member had no root: export's source images and bucketed's decode followed a link to a file
   anywhere, a `..` ref or an absolute path. A reader given a root now opens the file once inside it
   (safe_paths.open_within, DVC's cache allowed); a link inside the root still reads.
2. ImageStore.take hashed the output's file by name (_check_ours), then opened it again to link it: a file
   renamed or rewritten in between went into the store under another file's key. take now hashes the open
   it links and refuses bytes other than those just verified.
3. Export's metadata.jsonl and webdataset `.json`, and bucketed's per-sample `.json`, used plain json.dumps: a
   NaN or infinity (a float column's value) was written as `NaN` or `Infinity`, which other JSON readers
   refuse. They go through nesting.dumps_json (shards.json_member): one line, nothing written. (A lone
   surrogate never reaches them: pandas' arrow-backed strings refuse it when the frame is built.)
4. A bucketed sample's `.json` copied its caption variant (a caption source's name, from its config) as is:
   a known secret in it reached every shard while manifest.json was redacted. It is redacted the same way
   (import_env.redact_known); captions and orig_text are data, written as they are (round 31e's rule).
"""

from __future__ import annotations

import json
import math
import os
import tarfile
from pathlib import Path

import pandas as pd
import pytest
from test_bucketed_export import jpeg_bytes, smooth
from test_round31e import _secret_from, clean_aws  # noqa: F401  (a fixture)

from helpers.refusals import assert_one_line, outcome
from scripts.lib import export
from scripts.lib.bucketed import write_bucketed


def _jpeg(path: Path, size: int = 64) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(jpeg_bytes(smooth(size, size, 1)))
    return path


def _rows(image: Path, **values) -> pd.DataFrame:
    row = {"id": "a1", "source": "s", "text": "a caption", "orig_text": "an orig", "image": str(image)}
    row.update({"width": 64, "height": 64, **values})
    return pd.DataFrame([row])


def _members(folder: Path, suffix: str) -> list[bytes]:
    found = []
    for shard in sorted(folder.rglob("*.tar")):
        with tarfile.open(shard) as tar:
            found += [tar.extractfile(m).read() for m in tar.getmembers() if m.name.endswith(suffix)]  # type: ignore[union-attr]
    return found


# ---------------------------------------------------------------- 3. json members: dumps_json


def _imagefolder(tmp: Path, **values) -> Path:
    export.write_imagefolder(_rows(_jpeg(tmp / "src/a.jpg"), **values), tmp / "out", lambda: None)
    return tmp / "out" / "metadata.jsonl"


def _webdataset(tmp: Path, **values) -> Path:
    export.write_webdataset(_rows(_jpeg(tmp / "src/a.jpg"), **values), tmp / "out", 10, lambda: None)
    return tmp / "out"


def _bucketed(tmp: Path, **values) -> Path:
    rows = _rows(_jpeg(tmp / "src/a.jpg", 512), **values)
    write_bucketed(rows, tmp / "out", {"base_resolution": [512]})
    return tmp / "out"


# row -> (writer, the hostile value): a float column's NaN or infinity, where the writer kept the float
JSON_ROWS = {
    "imagefolder: orig_text NaN": (_imagefolder, {"orig_text": math.nan}),
    "imagefolder: orig_text infinite": (_imagefolder, {"orig_text": math.inf}),
    "imagefolder: a caption NaN": (_imagefolder, {"text": math.nan}),
    "webdataset: orig_text NaN": (_webdataset, {"orig_text": math.nan}),
    "webdataset: orig_text minus infinity": (_webdataset, {"orig_text": -math.inf}),
    "webdataset: a source infinite": (_webdataset, {"source": math.inf}),
    "bucketed: orig_text infinite": (_bucketed, {"orig_text": math.inf}),
    "bucketed: orig_text minus infinity": (_bucketed, {"orig_text": -math.inf}),
    "bucketed: a source infinite": (_bucketed, {"source": math.inf}),
}


@pytest.mark.parametrize("row", JSON_ROWS)
def test_a_hostile_value_is_one_line_never_written_as_json(tmp_path, row):
    writer, values = JSON_ROWS[row]
    result = outcome(lambda: writer(tmp_path, **values))
    assert_one_line(result, "Out of range float values are not JSON compliant", str(tmp_path / "out"))
    assert not (tmp_path / "out" / "metadata.jsonl").exists()
    assert all(b"NaN" not in m and b"Infinity" not in m for m in _members(tmp_path / "out", ".json"))


def test_plain_values_are_still_written(tmp_path):
    record = json.loads(_imagefolder(tmp_path / "a", orig_text=None).read_text(encoding="utf-8"))
    assert record["orig_text"] is None and record["text"] == "a caption"
    (meta,) = _members(_webdataset(tmp_path / "b", text="ü caption"), ".json")
    assert json.loads(meta)["text"] == "ü caption"
    (meta,) = _members(_bucketed(tmp_path / "c", orig_text="naïve"), ".json")
    assert json.loads(meta)["orig_text"] == "naïve"


# ---------------------------------------------------------------- 4. a bucketed sample's caption variant


VARIANT_ROWS = {
    "a variant holding a credentials file's secret": ("credentials file", "caption_{}"),
    "a variant that is a ~/.netrc password": ("~/.netrc", "{}"),
    "a variant holding a stored Hub token": ("Hub stored_tokens", "v-{}-long"),
}


@pytest.mark.parametrize("row", VARIANT_ROWS)
def test_no_known_secret_reaches_a_bucketed_sample_json(clean_aws, monkeypatch, row):  # noqa: F811
    kind, variant = VARIANT_ROWS[row]
    secret = _secret_from(kind, clean_aws, monkeypatch)
    values = {"caption_variant": variant.format(secret), "caption_selector_index": 0, "caption_source_id": 1}
    folder = _bucketed(clean_aws, **values)
    (meta,) = _members(folder, ".json")
    assert secret.lower() not in meta.decode().lower() and "***" in meta.decode(), meta
    assert b"a caption" in _members(folder, ".txt")[0]  # the caption itself: data, as written


# ---------------------------------------------------------------- 2. ImageStore.take: the bytes verified


KEYS = {"ab/" + "ab" + "0" * 62 + ".jpg": "ab" + "0" * 62, "cd/" + "cd" + "1" * 62 + ".jpg": "cd" + "1" * 62}
FIRST, SECOND = sorted(KEYS)


def _finished_output(root: Path):
    from scripts.lib.image_store import OutputFolder
    from scripts.lib.render_plan import MANIFEST_COLUMNS

    out = OutputFolder(root)
    out.start(set())
    for name, data in zip(KEYS, (b"first render", b"second render")):
        out.write(name, data)
    base = {"id": "x", "seed": 1, "model": "m", "model_revision": "r", "scheduler": "s", "steps": 1}
    base.update({"guidance": 1.0, "width": 8, "height": 8, "format": "jpg", "settings": "{}"})
    rows = [{**base, "file": f, "key": k, "sha256": out.digests[f]} for f, k in KEYS.items()]
    out.finish(pd.DataFrame(rows, columns=MANIFEST_COLUMNS))


def _renamed_over_by_the_other_render(root: Path) -> None:
    os.replace(root / SECOND, root / FIRST)


def _rewritten_in_place(root: Path) -> None:
    with open(root / FIRST, "r+b") as f:
        f.write(b"USER-EDIT")


def _a_users_file_renamed_in(root: Path) -> None:
    (root / "ab" / "mine.tmp").write_bytes(b"a user's private photo")
    os.replace(root / "ab" / "mine.tmp", root / FIRST)


@pytest.mark.parametrize(
    "swap",
    [_renamed_over_by_the_other_render, _rewritten_in_place, _a_users_file_renamed_in],
    ids=lambda f: f.__name__,
)
def test_the_store_takes_only_the_bytes_just_verified(tmp_path, monkeypatch, swap):
    from scripts.lib.image_store import ImageStore, OutputFolder

    root = tmp_path / "out"
    _finished_output(root)
    checked = OutputFolder._check_ours

    def checking_then_swapped(self, *args):
        checked(self, *args)
        swap(root)

    monkeypatch.setattr(OutputFolder, "_check_ours", checking_then_swapped)
    store = ImageStore(tmp_path / "store")
    assert_one_line(outcome(lambda: OutputFolder(root).start(set(), store)), "changed while generate", FIRST)
    taken = tmp_path / "store" / FIRST
    assert not taken.exists() or taken.read_bytes() == b"first render"


def test_the_store_still_takes_an_unchanged_output(tmp_path):
    from scripts.lib.image_store import ImageStore, OutputFolder

    _finished_output(tmp_path / "out")
    OutputFolder(tmp_path / "out").start(set(), ImageStore(tmp_path / "store"))
    assert (tmp_path / "store" / FIRST).read_bytes() == b"first render"
    assert (tmp_path / "store" / SECOND).read_bytes() == b"second render"
