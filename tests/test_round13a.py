"""Round 13a's breaks, one table per class (every row failed before its fix), on real files and the real
commands: a byte order mark read as text (a UTF-8 one opened the first prompt and hid its `- `, named a CSV's
first column; a UTF-16 file was every line a NUL-byte row, all skipped at exit 0); native metadata numbers
rounded or written as no JSON has them (`{:.7g}` on a float64 seed, NaN); SimpleTuner image names one file on
a case-insensitive disk; dictionary-encoded text columns refused."""

from __future__ import annotations

import io
import json
import unicodedata
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from helpers import cli
from helpers.archives import write_tar
from helpers.workspace import PNG, error_line, ingest_source, write_params

BOM = b"\xef\xbb\xbf"


def png(width: int = 8, height: int = 6) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (width, height), (200, 10, 10)).save(buf, format="PNG")
    return buf.getvalue()


# ---------------------------------------------------------------- 1. byte order marks
READ_PAST = {  # source, files -> the prompts written (a UTF-8 mark is no character of the text)
    "a text file from Notepad": (
        {"kind": "text"},
        {"prompts.txt": BOM + b"- a red fox\n- a blue bird\n"},
        ["a red fox", "a blue bird"],
    ),
    "a text file that is only the mark": ({"kind": "text", "on_error": "skip"}, {"p.txt": BOM}, []),
    "an OpenPrompts CSV saved by Excel": (
        {"kind": "openprompts"},
        {"o.csv": BOM + b'prompt,raw_data\na red fox,"{}"\n'},
        ["a red fox"],
    ),
    "a Kaggle SD2 CSV saved by Excel": (
        {"kind": "kaggle_sd2"},
        {"gpt_generated_prompts.csv": BOM + b"prompt\na red fox\n", "0.png": PNG},
        ["a red fox"],
    ),
    "a Gustavosta Kaggle CSV saved by Excel": (
        {"kind": "gustavosta", "format": "kaggle_csv"},
        {"train.csv": BOM + b"Prompt,image_path\na red fox,i/0.png\n", "i/0.png": PNG},
        ["a red fox"],
    ),
}


@pytest.mark.parametrize("case", READ_PAST)
def test_a_utf8_byte_order_mark_is_read_past(tmp_path, monkeypatch, capfd, case):
    """The text source's first prompt was '\\ufeff- a red fox' at exit 0 (its list markup kept); a CSV's was
    `missing column 'prompt' (did you mean '\\ufeffprompt'?)`."""
    source, files, prompts = READ_PAST[case]
    result, rows = ingest_source(tmp_path, monkeypatch, capfd, source, files)
    assert result.returncode == 0, result.stderr
    assert [row["prompt"] for row in rows] == prompts


def bucketed_files(caption: bytes) -> dict[str, bytes]:
    import tarfile

    meta = json.dumps({"target_w": 512, "target_h": 512}).encode()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data in (("k1.png", PNG), ("k1.txt", caption), ("k1.json", meta)):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return {
        "manifest.json": json.dumps({"format": "bucketed_shards_v1"}).encode(),
        "buckets/p1/shard-000000.tar": buf.getvalue(),
    }


CAPTIONS = {  # a bucketed sample's .txt -> its caption
    "a UTF-8 mark": BOM + b"a red fox\n",
    "a Windows line end": b"a red fox\r\n",
    "both": BOM + b"a red fox\r\n",
}


@pytest.mark.parametrize("case", CAPTIONS)
def test_a_bucketed_caption_file_is_its_line(tmp_path, monkeypatch, capfd, case):
    """The caption was '\\ufeffa red fox\\r' at exit 0: the mark and the "\\r" of "\\r\\n" kept as text."""
    source = {"kind": "bucketed_webdataset", "images": "data/raw/s"}
    result, rows = ingest_source(tmp_path, monkeypatch, capfd, source, bucketed_files(CAPTIONS[case]))
    assert result.returncode == 0, result.stderr
    assert [row["prompt"] for row in rows] == ["a red fox"]


UTF16 = {  # source, files, the file the line names -> (UTF-16 or UTF-32 text: every line a NUL byte)
    "a text file, on_error skip": (
        {"kind": "text", "on_error": "skip"},
        {"p.txt": "a red fox\na blue bird\n".encode("utf-16")},
        "p.txt",
    ),
    "a big-endian text file": ({"kind": "text"}, {"p.txt": b"\xfe\xff" + "a red fox\n".encode("utf-16-be")}, "p.txt"),
    "a UTF-32 text file, on_error skip": (
        {"kind": "text", "on_error": "skip"},
        {"p.txt": "a red fox\n".encode("utf-32")},
        "p.txt",
    ),
    "an OpenPrompts CSV": (
        {"kind": "openprompts"},
        {"o.csv": 'prompt,raw_data\na red fox,"{}"\n'.encode("utf-16")},
        "o.csv",
    ),
}


@pytest.mark.parametrize("case", UTF16)
def test_a_utf16_source_is_one_line_naming_it(tmp_path, monkeypatch, capfd, case):
    """With on_error: skip every line was skipped as `nul_byte` and 0 rows written at exit 0."""
    source, files, name = UTF16[case]
    result, rows = ingest_source(tmp_path, monkeypatch, capfd, source, files)
    line = error_line(result.stderr)
    assert result.returncode == 2 and rows is None, line
    assert f"data/raw/s/{name}: UTF-" in line and "save it as UTF-8" in line, line


@pytest.mark.parametrize("command", ["clean-text", "dedup-text"])
def test_a_utf16_text_file_is_one_line_at_the_text_commands(tmp_path, monkeypatch, capfd, command):
    """clean-text and dedup-text read the NUL-laden lines at exit 0."""
    write_params(tmp_path)
    (tmp_path / "in.txt").write_bytes("a red fox in the snow\na red fox in the snow\n".encode("utf-16"))
    result = cli([command, "in.txt", "out.jsonl"], tmp_path, monkeypatch, capfd)
    line = error_line(result.stderr)
    assert result.returncode == 2 and "in.txt: UTF-16 text" in line, line
    assert not (tmp_path / "out.jsonl").exists()


# ---------------------------------------------------------------- 2. native metadata numbers
def metadata(**columns) -> bytes:
    """A DiffusionDB metadata.parquet of one row, `columns` replacing the defaults."""
    row = {
        "image_name": pa.array(["a.png"]),
        "prompt": pa.array(["a red fox"]),
        "part_id": pa.array([1], pa.uint16()),
        "seed": pa.array([1], pa.uint32()),
        "step": pa.array([50], pa.uint16()),
        "cfg": pa.array([7.0], pa.float32()),
        "sampler": pa.array([8], pa.uint8()),
        "width": pa.array([512], pa.uint16()),
        "height": pa.array([512], pa.uint16()),
        "user_name": pa.array(["u"]),
        "timestamp": pa.array([0], pa.timestamp("s", tz="UTC")),
        "image_nsfw": pa.array([0.5], pa.float32()),
        "prompt_nsfw": pa.array([0.5], pa.float32()),
    }
    buf = io.BytesIO()
    pq.write_table(pa.table({**row, **columns}), buf)
    return buf.getvalue()


def strict_json(text: str):
    def refuse(constant):
        raise ValueError(f"{constant} is not JSON")

    return json.loads(text, parse_constant=refuse)


NUMBERS = {  # source, files -> the meta key and the number it must hold
    "a float64 seed (a pandas column with a null)": (
        {"kind": "diffusiondb"},
        {"metadata.parquet": metadata(seed=pa.array([3456789012.0], pa.float64()))},
        "seed",
        3456789012,
    ),
    "a float64 score": (
        {"kind": "diffusiondb"},
        {"metadata.parquet": metadata(prompt_nsfw=pa.array([0.123456789012], pa.float64()))},
        "prompt_nsfw",
        0.123456789012,
    ),
    "a float32 of 8 digits (1.0000001 was 1.0)": (
        {"kind": "diffusiondb"},
        {"metadata.parquet": metadata(cfg=pa.array([1.0000001], pa.float32()))},
        "cfg",
        1.0000001,
    ),
    "a NaN cfg": (
        {"kind": "diffusiondb"},
        {"metadata.parquet": metadata(cfg=pa.array([float("nan")], pa.float32()))},
        "cfg",
        None,
    ),
    "an infinite score": (
        {"kind": "diffusiondb"},
        {"metadata.parquet": metadata(image_nsfw=pa.array([float("inf")], pa.float64()))},
        "image_nsfw",
        None,
    ),
    "NaN in OpenPrompts raw_data": (
        {"kind": "openprompts"},
        {"o.csv": b'prompt,raw_data\na red fox,"{""raw_discord_data"": {""cfg_scale"": NaN}}"\n'},
        "cfg_scale",
        None,
    ),
    "1e400 in OpenPrompts raw_data": (
        {"kind": "openprompts"},
        {"o.csv": b'prompt,raw_data\na red fox,"{""raw_discord_data"": {""seed"": 1e400}}"\n'},
        "seed",
        None,
    ),
}


@pytest.mark.parametrize("case", NUMBERS)
def test_native_metadata_numbers_are_kept_as_json_numbers(tmp_path, monkeypatch, capfd, case):
    """meta is JSON text: a float64 seed 3456789012 was written 3456789000.0, a float32 1.0000001 as 1.0
    (another float32), and NaN or Infinity as `NaN`/`Infinity`, which only Python's json reads."""
    source, files, key, expected = NUMBERS[case]
    result, rows = ingest_source(tmp_path, monkeypatch, capfd, source, files)
    assert result.returncode == 0, result.stderr
    assert strict_json(rows[0]["meta"])[key] == expected, rows[0]["meta"]


# ---------------------------------------------------------------- 3. SimpleTuner names one file on a disk
def dalle3_shard(path: Path, image_names: list[str]) -> None:
    members = []
    for number, name in enumerate(image_names):
        record = {"short_caption": f"caption {number}", "width": 8, "height": 6, "image_name": name}
        members += [(f"{number:04d}.png", png()), (f"{number:04d}.json", json.dumps(record).encode())]
    write_tar(path, members)


NFD = unicodedata.normalize("NFD", "café.png")
DISK_NAMES = {  # image names in order -> the names written (later ones, one file with an earlier, skipped)
    "two cases of one name": (["cat.png", "Cat.png"], ["cat.png"]),
    "captions one file (x.png, X.jpg: x.txt, X.txt)": (["x.png", "X.jpg"], ["x.png"]),
    "a folder's case": (["a/x.png", "A/y.png", "A/x.png"], ["a/x.png", "A/y.png"]),
    "composed and decomposed": (["café.png", NFD], ["café.png"]),
}


@pytest.mark.parametrize("case", DISK_NAMES)
def test_simpletuner_names_one_file_on_a_case_insensitive_disk_are_refused(tmp_path, monkeypatch, capfd, case):
    """Both were written: on macOS or Windows the second image and caption overwrote the first, whose parquet
    row then paired its caption with the other record's image."""
    names, written = DISK_NAMES[case]
    dalle3_shard(tmp_path / "raw" / "data-000000.tar", names)
    result = cli(
        ["simpletuner", "raw", "st.parquet", "--data-dir", "data", "--config", "backend.json"],
        tmp_path,
        monkeypatch,
        capfd,
    )
    assert result.returncode == 0, result.stderr
    assert pq.read_table(tmp_path / "st.parquet").column("filename").to_pylist() == written
    assert f"duplicate_image_name {len(names) - len(written)}" in result.stdout


def test_simpletuner_names_of_one_file_fail_with_on_error_fail(tmp_path, monkeypatch, capfd):
    dalle3_shard(tmp_path / "raw" / "data-000000.tar", ["cat.png", "Cat.png"])
    result = cli(["simpletuner", "raw", "st.parquet", "--on-error", "fail"], tmp_path, monkeypatch, capfd)
    line = error_line(result.stderr)
    assert result.returncode == 2 and "'Cat.png': 'cat.png' was already written" in line, line
    assert "one file on macOS and Windows" in line and not (tmp_path / "st.parquet").exists()


# ---------------------------------------------------------------- 4. dictionary-encoded text columns
def parquet_bytes(table: pa.Table) -> bytes:
    buf = io.BytesIO()
    pq.write_table(table, buf)
    return buf.getvalue()


def dictionary(values: list[str]) -> pa.Array:
    return pa.array(values).dictionary_encode()


DICTIONARY = {  # source, files -> prompts (a pandas category column is dictionary-encoded text)
    "Gustavosta's Prompt": (
        {"kind": "gustavosta"},
        {"data/train.parquet": parquet_bytes(pa.table({"Prompt": dictionary(["a red fox", "a blue bird"])}))},
        ["a red fox", "a blue bird"],
    ),
    "DiffusionDB's prompt and image_name": (
        {"kind": "diffusiondb"},
        {"metadata.parquet": metadata(prompt=dictionary(["a red fox"]), image_name=dictionary(["a.png"]))},
        ["a red fox"],
    ),
}


@pytest.mark.parametrize("case", DICTIONARY)
def test_a_dictionary_encoded_text_column_is_read(tmp_path, monkeypatch, capfd, case):
    """`column 'Prompt' holds dictionary<values=string, indices=int8, ordered=0>, expected string`, exit 2."""
    source, files, prompts = DICTIONARY[case]
    result, rows = ingest_source(tmp_path, monkeypatch, capfd, source, files)
    assert result.returncode == 0, result.stderr
    assert [row["prompt"] for row in rows] == prompts
