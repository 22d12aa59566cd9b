"""A DALL-E-3 record's `image_name` and caption as `simpletuner` writes them (found by round 37b, in
readers/dalle3.py; every row failed before):

- an `image_name` part holding a newline, an escape code or another character that is not printable, or starting
  or ending with a space, was written into `data/` and the parquet at exit 0 (a file named `a\\nb.png` breaks every
  line-based tool; Windows drops a part's trailing space);
- a caption holding NUL, or longer than ingest's default `max_prompt_bytes` (64 KiB; 10 MB was tried), was written
  whole into the parquet and the `.txt` beside its image.

Now each is refused as ingest refuses a prompt: one line naming the shard and sample under `--on-error fail`, a
counted skip otherwise. ingest@dalle3 reads the same records through the same checks.
"""

from __future__ import annotations

import pytest
from test_simpletuner_cli import png, record

from helpers import cli, write_tar

NAMES = ["a\nb.png", "a\x1bb.png", " lead.png", "trail.png ", "sub /x.png", "a\u2028b.png", "tab\there.png"]
CAPTIONS = {"NUL": "a\x00b", "over 64 KiB": "x" * (64 * 1024 + 1), "10 MB": "y" * (10 << 20)}


def shards(root, name: str = "ok.png", caption: str | None = None):
    folder = root / "dalle3"
    fields = {} if caption is None else {"short_caption": caption}
    write_tar(folder / "data-000000.tar", [("000.png", png(12, 8)), ("000.json", record(name, **fields))])
    return folder


def simpletuner(root, monkeypatch, capfd, folder, *extra):
    argv = ["simpletuner", folder, root / "st.parquet", "--data-dir", root / "data", *extra]
    return cli(argv, root, monkeypatch, capfd)


@pytest.mark.parametrize("name", NAMES, ids=repr)
def test_an_image_name_with_a_control_character_or_an_outer_space_is_refused(tmp_path, monkeypatch, capfd, name):
    result = simpletuner(tmp_path, monkeypatch, capfd, shards(tmp_path, name=name), "--on-error", "fail")
    assert result.returncode == 2, result.stdout
    assert result.stderr.count("\n") == 1 and "data-000000.tar: sample '000'" in result.stderr
    assert "not a plain relative file name" in result.stderr and "\n" not in result.stderr.rstrip("\n")
    assert not (tmp_path / "st.parquet").exists() and not (tmp_path / "data").exists()


@pytest.mark.parametrize("caption", list(CAPTIONS))
def test_a_caption_ingest_would_refuse_is_refused(tmp_path, monkeypatch, capfd, caption):
    result = simpletuner(
        tmp_path, monkeypatch, capfd, shards(tmp_path, caption=CAPTIONS[caption]), "--on-error", "fail"
    )
    assert result.returncode == 2, result.stdout
    assert result.stderr.count("\n") == 1 and "data-000000.tar: sample '000'" in result.stderr
    assert ("NUL" in result.stderr) if caption == "NUL" else ("over max_prompt_bytes" in result.stderr)
    assert not (tmp_path / "st.parquet").exists() and not (tmp_path / "data").exists()


@pytest.mark.parametrize(("name", "caption"), [("a\nb.png", None), ("ok.png", "a\x00b")], ids=["name", "caption"])
def test_under_on_error_skip_the_record_is_a_counted_skip(tmp_path, monkeypatch, capfd, name, caption):
    result = simpletuner(tmp_path, monkeypatch, capfd, shards(tmp_path, name=name, caption=caption))
    assert result.returncode == 0, result.stderr
    reason = "bad_image_name" if caption is None else "nul_byte"
    assert f"skipped: {reason} 1" in result.stdout
    assert sorted(p.name for p in (tmp_path / "data").iterdir() if not p.name.startswith(".")) == []
