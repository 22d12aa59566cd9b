"""Round 16's breaks, one table per class (every row failed before its fix), on real files and real runs of
`python -m scripts`:

1. A source file matched by its pattern that is no regular file was passed over at exit 0, its rows missing:
   a FIFO `b.txt`, a link to nothing under `follow_symlinks`, a shard extracted into a folder named
   `data-000001.tar/` (ingest and the simpletuner tool), a Spark-written `data/eval.parquet/` folder (the
   whole validation split). Each is now one line naming it (readers/base.check_source_file).
2. A params.yaml error quoted a secret: ruamel's and PyYAML's messages quote the value or key they stopped at
   (`!!int sk-...`: `'sk-...' is not a valid int`, a key written twice, a tag), and refuse_secrets never saw
   it, since nothing was built. The line is now the same with each quoted secret left out (yaml_text).
3. history-table printed a negative or 4,000-digit row count and summed a boolean as 1 (summary refuses
   these); a stats.json it could not read (a FIFO) left its heading printed before the error (a table
   redirected to a file cut short at exit 2); the heading printed the folder names unescaped.
4. A parquet prompt column of Arrow's string_view (pyarrow 16+ and polars write it) was refused, `holds
   string_view, expected string`: a valid source lost.
5. A JSON object naming a key twice was read as its last value (`"width": 1, ..., "width": 5` recorded width 5
   for a 1x1 image): ambiguous, RFC 8259 leaves it to the reader. It is now a malformed record (nesting.loads_json).
6. An entry name or a simpletuner image name that Windows gives a device (`aux`, `NUL`, `con.v2`, `CON.png`)
   passed: on Windows data/prompts/aux.parquet is the AUX device, and what was written to it was lost.
7. A standard output whose encoding lacks a character (PYTHONIOENCODING=ascii, a Latin-1 locale, a Windows
   pipe's cp1252): history-table printed nothing at exit 2, and ingest, its output written, failed its own
   success line (exit 2, blaming the file name). The character is now printed as its escape, as on stderr.
8. A DiffusionDB part's zip member that its external attributes mark a FIFO, a device, a socket or a folder was
   read as an image at exit 0 (a tar's such member was refused; unzip or bsdtar makes the FIFO). Refused now.
"""

from __future__ import annotations

import copy
import io
import json
import os
import stat
import subprocess
import sys
import zipfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from helpers import tar_bytes
from helpers.repos import REPO
from helpers.workspace import PARAMS, PNG, error_line, write_files, write_params

RAW = REPO / "data" / "raw"


def run(root: Path, *argv: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """`python -m scripts ARGV` in `root`, as a user runs it, with `env` added to the environment."""
    full = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "T2I_PROGRESS_EVERY_S": "3600"}
    return subprocess.run(
        [sys.executable, "-m", "scripts", *argv],
        cwd=root,
        env={**full, **(env or {})},
        capture_output=True,
        encoding="utf-8",
        errors="replace",  # a row's standard output in Latin-1
        timeout=180,
    )


def source(kind: str, path: str, **keys) -> dict:
    return {"kind": kind, "path": path, "images": path, "on_error": "fail", "clean": False, "dedup": False, **keys}


def dalle3_json(**fields) -> bytes:
    record = {"image_name": "a.png", "short_caption": "a red fox", "width": 1, "height": 1, **fields}
    return json.dumps(record).encode()


def parquet_bytes(table: pa.Table) -> bytes:
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    return buffer.getvalue()


# --- 1. a source file that is no regular file ---------------------------------------------------------------


def text_fifo(root: Path) -> tuple[dict, str]:
    write_files(root, {"raw/a.txt": b"a red fox\n"})
    os.mkfifo(root / "raw" / "b.txt")
    return source("text", "raw"), "raw/b.txt: is a FIFO"


def text_link_to_nothing(root: Path) -> tuple[dict, str]:
    write_files(root, {"raw/a.txt": b"a red fox\n"})
    os.symlink(root / "gone.txt", root / "raw" / "b.txt")
    return source("text", "raw", follow_symlinks=True), "raw/b.txt: a symbolic link to nothing"


def dalle3_extracted_shard(root: Path) -> tuple[dict, str]:
    shard = tar_bytes([("a.png", PNG), ("a.json", dalle3_json())])
    write_files(root, {"raw/data-000000.tar": shard, "raw/data-000001.tar/b.png": PNG})
    return source("dalle3", "raw", caption_field="short_caption"), "raw/data-000001.tar: is a folder"


def openprompts_fifo(root: Path) -> tuple[dict, str]:
    write_files(root, {"raw/a.csv": b'prompt,raw_data\na red fox,"{}"\n'})
    os.mkfifo(root / "raw" / "b.csv")
    return source("openprompts", "raw"), "raw/b.csv: is a FIFO"


def gustavosta_spark_folder(root: Path) -> tuple[dict, str]:
    train = parquet_bytes(pa.table({"Prompt": ["a red fox"]}))
    write_files(root, {"raw/data/train.parquet": train, "raw/data/eval.parquet/part-0.parquet": train})
    return source("gustavosta", "raw"), "raw/data/eval.parquet: is a folder"


SOURCE_FILE_ROWS = {
    "text-fifo": text_fifo,
    "text-link-to-nothing": text_link_to_nothing,
    "dalle3-extracted-shard": dalle3_extracted_shard,
    "openprompts-fifo": openprompts_fifo,
    "gustavosta-spark-folder": gustavosta_spark_folder,
}


@pytest.mark.parametrize("row", SOURCE_FILE_ROWS)
def test_a_source_file_that_is_no_regular_file_is_one_line(tmp_path, row):
    entry, expected = SOURCE_FILE_ROWS[row](tmp_path)
    write_params(tmp_path, sources={"s": entry})
    result = run(tmp_path, "ingest", "s", "out/s.parquet")
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert expected in error_line(result.stderr)
    assert not (tmp_path / "out" / "s.parquet").exists()


def test_the_simpletuner_tool_names_a_shard_extracted_into_a_folder(tmp_path):
    write_files(
        tmp_path,
        {"shards/data-000000.tar": tar_bytes([("a.png", PNG), ("a.json", dalle3_json())]), "shards/data-1.tar/x": b""},
    )
    result = run(tmp_path, "simpletuner", "shards", "out/st.parquet")
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "shards/data-1.tar: is a folder" in error_line(result.stderr)
    assert not (tmp_path / "out").exists()


# --- 2. a YAML error quoting a secret ------------------------------------------------------------------------

KEY = "sk-proj-Ab3dE9fG1hJ2kL4mN5pQ7rS8tU0vW"  # shaped as an OpenAI project key, made up
ENV_SECRET = "hunter2secretvalue"
TEMPERATURE = "    temperature: 1.0\n"

# row -> (the line replacing synthesize's temperature, environment, the secret that must not be printed)
YAML_SECRET_ROWS = {
    "int-tag": (f"    temperature: !!int {KEY}\n", {}, KEY),
    "float-tag": (f"    temperature: !!float {KEY}\n", {}, KEY),
    "bool-tag": (f"    temperature: !!bool {KEY}\n", {}, KEY),
    "key-twice": (f"{TEMPERATURE}    {KEY}: 1\n    {KEY}: 2\n", {}, KEY),
    "unknown-tag": (f"    temperature: !{KEY} 1\n", {}, KEY),
    "env-secret-int-tag": (f"    temperature: !!int {ENV_SECRET}\n", {"DB_PASSWORD": ENV_SECRET}, ENV_SECRET),
    "env-secret-key-twice": (
        f"{TEMPERATURE}    {ENV_SECRET}: 1\n    {ENV_SECRET}: 2\n",
        {"DB_PASSWORD": ENV_SECRET},
        ENV_SECRET,
    ),
    "short-env-secret": ("    temperature: !!int hunt3r\n", {"DB_PASSWORD": "hunt3r"}, "hunt3r"),
}


@pytest.mark.parametrize("row", YAML_SECRET_ROWS)
def test_a_yaml_error_never_quotes_a_secret(tmp_path, row):
    line, env, secret = YAML_SECRET_ROWS[row]
    text = (REPO / "params.yaml").read_text(encoding="utf-8")
    assert text.count(TEMPERATURE) == 1
    (tmp_path / "params.yaml").write_text(text.replace(TEMPERATURE, line), encoding="utf-8")
    result = run(tmp_path, "ingest", "chatgpt", "out/c.parquet", env=env)
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "not valid YAML" in error_line(result.stderr)
    assert secret.casefold() not in (result.stdout + result.stderr).casefold()


# --- 3. history-table --------------------------------------------------------------------------------------


def write_stats(root: Path, release: str = "v2", train: object = 184, removed: dict | None = None) -> None:
    stats = {
        "rows": {"train": train, "validation": 12, "total": 196},
        "removed_by_split": {"train": removed or {"dedup:per_split": 32}, "validation": {}},
    }
    write_files(root, {f"data/releases/{release}/stats.json": json.dumps(stats).encode()})


# row -> (release, its stats.json's rows.train, its removed_by_split.train, the table line whose cell is ours)
HISTORY_COUNT_ROWS = {
    "negative-rows": ("v2", -5, None, "train rows"),
    "4000-digit-rows": ("v2", 10**4000 - 1, None, "train rows"),
    "boolean-removal": ("v4-b", 184, {"clean:ban_words": True}, "train rows removed by the cleaning"),
}


@pytest.mark.parametrize("row", HISTORY_COUNT_ROWS)
def test_history_table_shows_only_counts(tmp_path, row):
    release, train, removed, what = HISTORY_COUNT_ROWS[row]
    write_stats(tmp_path, release, train, removed)
    result = run(tmp_path, "history-table")
    assert result.returncode == 0, result.stderr
    line = next(line for line in result.stdout.splitlines() if line.startswith(f"| {release} | {what} |"))
    assert line.split(" | ")[3] == "unreadable"


def test_history_table_prints_nothing_before_an_error(tmp_path):
    write_stats(tmp_path)
    os.unlink(tmp_path / "data/releases/v2/stats.json")
    os.mkfifo(tmp_path / "data/releases/v2/stats.json")
    result = run(tmp_path, "history-table")
    assert result.returncode == 2
    assert "is a FIFO" in error_line(result.stderr)
    assert result.stdout == ""


def test_history_table_escapes_the_folder_it_names(tmp_path):
    (tmp_path / "r\x1b[2J").mkdir()
    result = run(tmp_path, "history-table", "--releases", "r\x1b[2J")
    assert result.returncode == 0, result.stderr
    assert "\x1b" not in result.stdout


# --- 4. string_view text ---------------------------------------------------------------------------------


def gustavosta_of(kind: pa.DataType) -> dict[str, bytes]:
    texts = pa.array(["a red fox", "a blue cat"]).cast(kind)
    return {"raw/data/train.parquet": parquet_bytes(pa.table({"Prompt": texts}))}


def diffusiondb_of(kind: pa.DataType) -> dict[str, bytes]:
    table = pq.read_table(RAW / "diffusiondb" / "metadata.parquet")
    index = table.schema.get_field_index("prompt")
    table = table.set_column(index, "prompt", table["prompt"].cast(kind))
    return {"raw/metadata.parquet": parquet_bytes(table)}


STRING_VIEW_ROWS = {
    "gustavosta-string-view": ("gustavosta", gustavosta_of, pa.string_view()),
    "diffusiondb-string-view": ("diffusiondb", diffusiondb_of, pa.string_view()),
}


@pytest.mark.parametrize("row", STRING_VIEW_ROWS)
def test_a_string_view_text_column_reads_as_its_texts(tmp_path, row):
    kind, files_of, arrow_type = STRING_VIEW_ROWS[row]
    entry = source(kind, "raw", read="metadata") if kind == "diffusiondb" else source(kind, "raw")
    tables = {}
    for name, of in (("view", arrow_type), ("plain", pa.string())):
        root = tmp_path / name
        write_files(root, files_of(of))
        write_params(root, sources={"s": entry})
        result = run(root, "ingest", "s", "out/s.parquet")
        assert result.returncode == 0, result.stderr
        tables[name] = pq.read_table(root / "out" / "s.parquet")
    assert tables["view"].equals(tables["plain"])


# --- 5. a JSON key named twice -----------------------------------------------------------------------------


def dalle3_twice(root: Path, member: bytes, on_error: str) -> dict:
    write_files(root, {"raw/data-000000.tar": tar_bytes([("a.png", PNG), ("a.json", member)])})
    return source("dalle3", "raw", caption_field="short_caption", on_error=on_error)


def bucketed_manifest_twice(root: Path) -> dict:
    for path in (RAW / "laion_buckets").rglob("*"):
        if path.is_file():
            write_files(root, {f"raw/{path.relative_to(RAW / 'laion_buckets').as_posix()}": path.read_bytes()})
    manifest = root / "raw" / "manifest.json"
    manifest.write_text('{"buckets": [], ' + manifest.read_text(encoding="utf-8").lstrip()[1:], encoding="utf-8")
    return source("bucketed_webdataset", "raw")


WIDTH_TWICE = b'{"image_name": "a.png", "short_caption": "a red fox", "width": 1, "height": 1, "width": 5}'
CAPTION_TWICE = b'{"image_name": "a.png", "short_caption": "a red fox", "width": 1, "height": 1, "short_caption": "x"}'
RAW_DATA_TWICE = (
    b'prompt,raw_data\na red fox,"{""raw_discord_data"": {""seed"": 1}, ""raw_discord_data"": {""seed"": 2}}"\n'
)

# row -> (the source entry it writes, the text the error line holds)
JSON_TWICE_ROWS = {
    "dalle3-width": (lambda root: dalle3_twice(root, WIDTH_TWICE, "fail"), "'width' appears twice"),
    "dalle3-caption": (lambda root: dalle3_twice(root, CAPTION_TWICE, "fail"), "'short_caption' appears twice"),
    "openprompts-raw-data": (
        lambda root: write_files(root, {"raw/a.csv": RAW_DATA_TWICE}) or source("openprompts", "raw"),
        "'raw_discord_data' appears twice",
    ),
    "bucketed-manifest": (bucketed_manifest_twice, "'buckets' appears twice"),
}


@pytest.mark.parametrize("row", JSON_TWICE_ROWS)
def test_a_json_key_named_twice_is_a_malformed_record(tmp_path, row):
    make, expected = JSON_TWICE_ROWS[row]
    write_params(tmp_path, sources={"s": make(tmp_path)})
    result = run(tmp_path, "ingest", "s", "out/s.parquet")
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert expected in error_line(result.stderr)
    assert not (tmp_path / "out").exists()


def test_a_json_key_named_twice_is_skipped_and_counted_under_skip(tmp_path):
    write_params(tmp_path, sources={"s": dalle3_twice(tmp_path, WIDTH_TWICE, "skip")})
    result = run(tmp_path, "ingest", "s", "out/s.parquet")
    assert result.returncode == 0, result.stderr
    assert pq.read_table(tmp_path / "out" / "s.parquet").num_rows == 0
    assert json.loads((tmp_path / "out" / "s.report.json").read_text())["skipped"] == {"bad_json": 1}


# --- 6. a Windows device name ------------------------------------------------------------------------------

# row -> (params section, entry name)
DEVICE_NAME_ROWS = {
    "source-aux": ("sources", "aux"),
    "source-NUL": ("sources", "NUL"),
    "source-con.v2": ("sources", "con.v2"),
    "release-PRN": ("releases", "PRN"),
    "release-com1": ("releases", "com1"),
}


@pytest.mark.parametrize("row", DEVICE_NAME_ROWS)
def test_an_entry_named_as_a_windows_device_is_one_line(tmp_path, row):
    section, name = DEVICE_NAME_ROWS[row]
    if section == "sources":
        write_params(tmp_path, sources={**PARAMS["sources"], name: copy.deepcopy(PARAMS["sources"]["chatgpt"])})
    else:
        write_params(tmp_path, releases={**PARAMS["releases"], name: {"base": "v2"}})
    result = run(tmp_path, "ingest", "chatgpt", "out/c.parquet")
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert f"name '{name}' is a device name on Windows" in error_line(result.stderr)


@pytest.mark.parametrize("name", ["CON.png", "a/aux.jpg"])
def test_a_simpletuner_image_named_as_a_windows_device_is_one_line(tmp_path, name):
    write_files(
        tmp_path, {"shards/data-000000.tar": tar_bytes([("a.png", PNG), ("a.json", dalle3_json(image_name=name))])}
    )
    result = run(tmp_path, "simpletuner", "shards", "o/st.parquet", "--data-dir", "o/images", "--on-error", "fail")
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "is a device name on Windows" in error_line(result.stderr)
    assert not (tmp_path / "o").exists()


# --- 7. a standard output that cannot encode a character -----------------------------------------------------

# row -> (environment, argv, what stdout holds after)
ENCODING_ROWS = {
    "ingest-ascii": ({"PYTHONIOENCODING": "ascii"}, ["ingest", "chatgpt", "out/é.parquet"], "out/\\xe9.parquet"),
    "history-table-ascii": ({"PYTHONIOENCODING": "ascii"}, ["history-table"], "\\ud559\\uc2b5"),
    "history-table-latin-1": ({"PYTHONIOENCODING": "latin-1"}, ["history-table"], "\\ud559\\uc2b5"),
}


@pytest.mark.parametrize("row", ENCODING_ROWS)
def test_a_character_standard_output_cannot_encode_is_printed_escaped(tmp_path, row):
    env, argv, expected = ENCODING_ROWS[row]
    write_params(tmp_path, sources={"chatgpt": {**PARAMS["sources"]["chatgpt"], "path": str(RAW / "chatgpt")}})
    (tmp_path / "data" / "releases").mkdir(parents=True)
    result = run(tmp_path, *argv, env=env)
    assert result.returncode == 0, result.stderr
    assert expected in result.stdout


# --- 8. a zip member marked as no regular file ---------------------------------------------------------------


def part_zip(mode: int) -> bytes:
    """A DiffusionDB part whose one image member's external attributes mark it `mode` (its bytes a real PNG)."""
    listing = {"x.png": {"p": "a red fox", "se": 1, "c": 7.0, "st": 50, "sa": "k_lms"}}
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        zf.writestr("part-000001.json", json.dumps(listing))
        member = zipfile.ZipInfo("x.png")
        member.external_attr = (mode | 0o644) << 16
        zf.writestr(member, PNG)
    return buffer.getvalue()


# row -> (the member's file type, what the line says it is)
ZIP_MEMBER_ROWS = {
    "fifo": (stat.S_IFIFO, "a FIFO"),
    "character-device": (stat.S_IFCHR, "a character device"),
    "socket": (stat.S_IFSOCK, "a socket"),
    "folder-with-bytes": (stat.S_IFDIR, "a folder"),
}


@pytest.mark.parametrize("row", ZIP_MEMBER_ROWS)
@pytest.mark.parametrize("on_error", ["fail", "skip"])
def test_a_zip_member_marked_as_no_regular_file_is_refused(tmp_path, row, on_error):
    mode, kind = ZIP_MEMBER_ROWS[row]
    write_files(tmp_path, {"raw/part-000001.zip": part_zip(mode)})
    write_params(tmp_path, sources={"s": source("diffusiondb", "raw", read="parts", part_ids=[1], on_error=on_error)})
    result = run(tmp_path, "ingest", "s", "out/s.parquet")
    if on_error == "fail":
        assert result.returncode == 2, (result.stdout, result.stderr)
        assert f"member 'x.png' is {kind}, only regular files are read" in error_line(result.stderr)
    else:
        assert result.returncode == 0, result.stderr
        assert json.loads((tmp_path / "out" / "s.report.json").read_text())["skipped"] == {"unsafe_member": 1}
