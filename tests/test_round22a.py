"""Round 22a: the breaks this hostile round found in the data-reading stages, one table per class (every row
failed before its fix), on real parquet files and runs of the commands:

1. A parquet input's `pandas` schema metadata (its writer's: ours write none) decided the frame clean read: it
   named the index (`index_columns: ["id"]`: clean's output lost its `id` column at exit 0), renamed columns (a
   `name` per `field_name`: `meta` cleaned as the prompt, at exit 0) and, as bad JSON or the wrong shape, was a
   traceback. A stage input is read by its columns alone (tables.frame_of).
2. A NUL inside a list item of params (`clean.stop_phrases: ["\\0"]`, `artists`, `sites`; a `--rules` file's
   too) passed the section's NUL check, which saw only plain strings, and the rewrite built of it later refused
   it as a pydantic traceback. The check now reads every string a list holds (params.base._strings).
3. Parquet stores text as bytes and pyarrow reads them unchecked: a text column with invalid UTF-8 (another tool's
   file) was a traceback in clean (to_pandas), in dedup (the tokenizer, the preview), or passed on at exit 0
   (clean's `id`, dedup's other columns). Every batch a stage input gives is validated where it is read
   (tables.utf8_checked), one line naming the file and column.
4. A rules file (`clean --rules`, and the rule_set_from_file of compose, release and prefilter) was read whole:
   a 3 GB sparse file, read as NULs, held the command for minutes and gigabytes before the JSON parser refused it.
   It is read as every configuration file is (io.config_text: regular, at most MAX_CONFIG_BYTES).
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from helpers.commands import cli
from helpers.tiers import fast_first
from helpers.workspace import PARAMS, error_line, write_params
from scripts.lib.cleaning import rule_set_from_file
from scripts.lib.errors import DataError
from scripts.lib.io import MAX_CONFIG_BYTES

TEXTS = [
    "a majestic red fox standing in a snowy forest at dawn, highly detailed",
    "a majestic red fox standing in a snowy forest at dawn, highly detailed",
    "portrait of an old sailor with a pipe, oil painting, dramatic lighting",
]
SOURCE = {"kind": "text", "path": "data/raw/s", "images": "data/raw/s", "text_only": True}


def prompt_table() -> pa.Table:
    """A prompt table as ingest writes it (clean@S's input), with a `text` column too (dedup@S's)."""
    n = len(TEXTS)
    return pa.table(
        {
            "id": [f"id{i}" for i in range(n)],
            "source": ["s"] * n,
            "prompt": TEXTS,
            "image": [""] * n,
            "meta": ["{}"] * n,
            "text": TEXTS,
        }
    )


def workspace(root: Path, clean: dict | None = None) -> None:
    """params.yaml with source `s` (cleaned by the `final` rules, no language or person checks: fast)."""
    section = {**PARAMS["clean"], **(clean or {})}
    write_params(root, sources={**PARAMS["sources"], "s": {**SOURCE, "clean": {"rules": "final", "mode": "rewrite"}}})
    params = yaml.safe_load((root / "params.yaml").read_text(encoding="utf-8"))
    params["clean"] = section
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False), encoding="utf-8")


# ---------------------------------------------------------------- 1. pandas metadata is not the table


def pandas_columns(table: pa.Table, rename: dict[str, str] | None = None) -> list[dict]:
    return [
        {"name": (rename or {}).get(n, n), "field_name": n, "pandas_type": "unicode", "numpy_type": "object"}
        for n in table.column_names
    ]


def pandas_metadata(case: str, table: pa.Table) -> bytes:
    document = {
        "bad JSON": '{"index_columns": [',
        "a list": [],
        "no index_columns key": {"columns": 5},
        "id as the index": {"index_columns": ["id"], "column_indexes": [], "columns": pandas_columns(table)},
        "prompt and meta swapped": {
            "index_columns": [],
            "column_indexes": [],
            "columns": pandas_columns(table, {"prompt": "meta", "meta": "prompt"}),
        },
    }[case]
    return (document if isinstance(document, str) else json.dumps(document)).encode()


PANDAS_METADATA = ["bad JSON", "a list", "no index_columns key", "id as the index", "prompt and meta swapped"]


@pytest.mark.parametrize("case", PANDAS_METADATA)
def test_clean_reads_its_input_by_its_columns_not_its_pandas_metadata(tmp_path, monkeypatch, capfd, case):
    workspace(tmp_path)
    table = prompt_table()
    pq.write_table(table, tmp_path / "plain.parquet")
    pq.write_table(table.replace_schema_metadata({b"pandas": pandas_metadata(case, table)}), tmp_path / "odd.parquet")
    for name in ("plain", "odd"):
        result = cli(["clean", "s", f"{name}.parquet", f"out/{name}.parquet"], tmp_path, monkeypatch, capfd)
        assert result.returncode == 0, result.stderr
    plain, odd = (pq.read_table(tmp_path / "out" / f"{name}.parquet") for name in ("plain", "odd"))
    assert odd.column_names == plain.column_names
    assert odd.to_pylist() == plain.to_pylist()


# ---------------------------------------------------------------- 2. a NUL in a list item of params

NUL_ITEMS = {"stop_phrases": ["by\0night"], "artists": ["greg\0"], "sites": ["\0artstation.com"]}


@pytest.mark.parametrize("key", NUL_ITEMS)
def test_a_nul_in_a_list_item_of_params_is_one_line(tmp_path, monkeypatch, capfd, key):
    workspace(tmp_path, {key: NUL_ITEMS[key]})
    result = cli(["clean-rules", "data/clean_rules.json"], tmp_path, monkeypatch, capfd)
    assert result.returncode == 2
    assert error_line(result.stderr) == (
        f"error: params.yaml: clean.{key}: holds a NUL character (\\0), which no path or name may hold"
    )
    assert not (tmp_path / "data" / "clean_rules.json").exists()


@pytest.mark.parametrize("key", NUL_ITEMS)
def test_a_nul_in_a_list_item_of_a_rules_file_is_one_line(tmp_path, monkeypatch, capfd, key):
    workspace(tmp_path)
    assert cli(["clean-rules", "rules.json"], tmp_path, monkeypatch, capfd).returncode == 0
    document = json.loads((tmp_path / "rules.json").read_text(encoding="utf-8"))
    document["sets"]["final"][key] = NUL_ITEMS[key]
    (tmp_path / "edited.json").write_text(json.dumps(document), encoding="utf-8")
    pq.write_table(prompt_table(), tmp_path / "in.parquet")
    result = cli(["clean", "s", "in.parquet", "out.parquet", "--rules", "edited.json"], tmp_path, monkeypatch, capfd)
    assert result.returncode == 2
    assert f"edited.json: sets.final.{key}: holds a NUL character" in error_line(result.stderr)
    assert not (tmp_path / "out.parquet").exists()


# ---------------------------------------------------------------- 3. text that is not UTF-8 in a parquet input

BAD_UTF8 = [b"\xff\xfe a red fox", b"\xed\xa0\x80 a surrogate", b"\xc0\xaf overlong slash"]


def with_invalid_utf8(column: str) -> pa.Table:
    table = prompt_table()
    bad = pa.array(BAD_UTF8, pa.binary()).view(pa.string())  # what pyarrow reads back from such a file
    return table.set_column(table.schema.get_field_index(column), column, bad)


INVALID_TEXT = [  # command, the column holding invalid UTF-8
    ("clean", "prompt"),
    ("clean", "id"),
    ("dedup", "text"),
    ("dedup", "id"),
    ("dedup", "meta"),
]


@pytest.mark.parametrize(("command", "column"), INVALID_TEXT)
def test_invalid_utf8_in_a_parquet_text_column_is_one_line(tmp_path, monkeypatch, capfd, command, column):
    workspace(tmp_path)
    pq.write_table(with_invalid_utf8(column), tmp_path / "in.parquet")
    result = cli([command, "s", "in.parquet", "out/s.parquet"], tmp_path, monkeypatch, capfd)
    assert result.returncode == 2, result.stderr
    line = error_line(result.stderr)
    assert line.startswith(f"error: in.parquet: column '{column}' holds invalid data, such as text that is not UTF-8")
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


# ---------------------------------------------------------------- 4. a rules file is capped as a configuration file

OVERSIZED_RULES = fast_first(
    [
        ("clean --rules", "sparse"),  # a sparse file: its bytes read as NULs
        ("rule_set_from_file", "sparse"),  # compose's, release's and prefilter's reader
        ("clean --rules", "spaces"),  # real bytes: valid JSON whitespace, a parser's work too
    ],
    keep=2,
    columns=2,
)


@pytest.mark.parametrize(("reader", "content"), OVERSIZED_RULES)
def test_a_rules_file_over_the_configuration_cap_is_refused_unread(tmp_path, monkeypatch, capfd, reader, content):
    workspace(tmp_path)
    rules = tmp_path / "rules.json"
    with rules.open("wb") as f:
        if content == "sparse":
            f.truncate(MAX_CONFIG_BYTES + 1)
        else:
            f.write(b" " * (MAX_CONFIG_BYTES + 1))
    expected = f"rules.json: larger than {MAX_CONFIG_BYTES} bytes; refusing to read it"
    if reader == "rule_set_from_file":
        with pytest.raises(DataError, match=expected):
            rule_set_from_file(rules)
        return
    pq.write_table(prompt_table(), tmp_path / "in.parquet")
    result = cli(["clean", "s", "in.parquet", "out.parquet", "--rules", "rules.json"], tmp_path, monkeypatch, capfd)
    assert result.returncode == 2
    assert error_line(result.stderr) == f"error: {expected}"
    assert not (tmp_path / "out.parquet").exists()
