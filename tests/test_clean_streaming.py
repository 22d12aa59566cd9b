"""clean@S streams its input `runtime.stream_rows` rows at a time: any chunk size writes the bytes one chunk
does (real corpora through their real readers, and a table whose integer column is missing values only in
its later chunks), and a file that breaks part-way through is one line with nothing written."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from helpers.commands import cli
from helpers.tiers import fast_first
from helpers.workspace import error_line
from scripts.lib.errors import DataError

REPO = Path(__file__).resolve().parents[1]
OUTPUTS = ("{}.parquet", "{}.dropped.parquet", "{}.report.json")
SOURCES = ("t_gpt4", "t_open", "t_raw", "t_sized")


def workspace(root: Path, fixtures: Path) -> Path:
    """params.yaml (the repository's, with the fixture sources) and each source's prompt table."""
    params = yaml.safe_load((REPO / "params.yaml").read_text(encoding="utf-8"))
    gpt4 = str(fixtures / "gpt4-prompts-3k.txt")
    params["sources"]["t_gpt4"] = {"kind": "text", "path": gpt4, "clean": True}
    params["sources"]["t_open"] = {
        "kind": "openprompts",
        "path": str(fixtures / "openprompts-1k.csv"),
        "clean": {"rules": "final", "mode": "filter_only"},
        "keep_empty": True,
    }
    params["sources"]["t_raw"] = {"kind": "text", "path": gpt4, "clean": False}
    params["sources"]["t_sized"] = {"kind": "text", "path": gpt4, "clean": True}
    root.mkdir(parents=True)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False), encoding="utf-8")
    return root


def set_stream_rows(root: Path, rows: int) -> None:
    params = yaml.safe_load((root / "params.yaml").read_text(encoding="utf-8"))
    params["runtime"]["stream_rows"] = rows
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False), encoding="utf-8")


def run_ok(argv: list, root: Path, monkeypatch, capfd) -> str:
    result = cli(argv, root, monkeypatch, capfd)
    assert result.returncode == 0, result.stderr
    return result.stdout


def sized_prompts(root: Path) -> None:
    """t_sized: the ingested GPT-4 prompts with widths on the first 40 rows only, so a chunk of the first
    rows holds whole numbers (int32 in pandas) and the later ones NaN (float64)."""
    table = pq.read_table(root / "prompts" / "t_gpt4.parquet")
    widths = pa.array([512 if i < 40 else None for i in range(table.num_rows)], pa.int32())
    table = table.set_column(table.schema.get_field_index("width"), "width", widths)
    table = table.set_column(table.schema.get_field_index("source"), "source", pa.array(["t_sized"] * table.num_rows))
    pq.write_table(table, root / "prompts" / "t_sized.parquet", row_group_size=100)


@pytest.fixture(scope="module")
def prompts(tmp_path_factory, fixtures_dir) -> Path:
    root = workspace(tmp_path_factory.mktemp("stream") / "ws", fixtures_dir)
    monkeypatch = pytest.MonkeyPatch()
    try:
        from scripts.cli import main

        monkeypatch.chdir(root)
        for source in ("t_gpt4", "t_open", "t_raw"):
            assert main(["ingest", source, f"prompts/{source}.parquet"]) in (0, None)
        assert main(["clean-rules", "rules.json"]) in (0, None)
    finally:
        monkeypatch.undo()
    sized_prompts(root)
    return root


def clean_all(root: Path, folder: str, monkeypatch, capfd) -> list[str]:
    return [
        run_ok(
            ["clean", s, f"prompts/{s}.parquet", f"{folder}/{s}.parquet", "--rules", "rules.json"],
            root,
            monkeypatch,
            capfd,
        )
        for s in SOURCES
    ]


@pytest.mark.parametrize("rows", fast_first([7, 100, 1000]))
def test_any_chunk_size_writes_the_bytes_of_one_chunk(prompts, rows, monkeypatch, capfd):
    set_stream_rows(prompts, 10_000_000)
    whole = clean_all(prompts, f"whole{rows}", monkeypatch, capfd)
    set_stream_rows(prompts, rows)
    streamed = clean_all(prompts, f"streamed{rows}", monkeypatch, capfd)
    assert [line.replace("streamed", "whole") for line in streamed] == whole  # the same counts
    for source in SOURCES:
        for name in OUTPUTS:
            one = (prompts / f"whole{rows}" / name.format(source)).read_bytes()
            assert (prompts / f"streamed{rows}" / name.format(source)).read_bytes() == one, (source, name)
    assert sorted(p.name for p in (prompts / f"streamed{rows}").iterdir()) == sorted(  # no temp files left
        name.format(s) for s in SOURCES for name in OUTPUTS
    )
    sized = pq.read_table(prompts / f"streamed{rows}" / "t_sized.parquet")
    assert sized.schema.field("width").type == pa.float64()  # as pandas types the whole column
    source = pq.read_table(prompts / "prompts" / "t_sized.parquet", columns=["id", "width"]).to_pydict()
    widths = dict(zip(source["id"], source["width"]))
    assert sized.column("width").to_pylist() == [widths[i] for i in sized.column("id").to_pylist()]
    assert 0 < sized.column("width").null_count < sized.num_rows
    report = yaml.safe_load((prompts / f"streamed{rows}" / "t_open.report.json").read_text(encoding="utf-8"))
    assert report["rows_in"] == pq.read_metadata(prompts / "prompts" / "t_open.parquet").num_rows
    assert report["kept"] == pq.read_metadata(prompts / f"streamed{rows}" / "t_open.parquet").num_rows > 0
    assert report["dropped"] == sum(report["dropped_by_reason"].values()) > 0


def test_a_file_broken_part_way_is_one_line_and_writes_nothing(prompts, monkeypatch, capfd):
    table = pq.read_table(prompts / "prompts" / "t_gpt4.parquet")
    broken = prompts / "prompts" / "broken.parquet"
    pq.write_table(table, broken, row_group_size=500, compression="zstd")
    metadata = pq.read_metadata(broken)
    assert metadata.num_row_groups > 3
    column = metadata.row_group(3).column(table.schema.get_field_index("prompt"))
    data = bytearray(broken.read_bytes())
    start = column.data_page_offset  # the fourth row group's prompt page header: pages are unreadable
    data[start : start + 16] = b"\xff" * 16
    broken.write_bytes(bytes(data))
    set_stream_rows(prompts, 500)
    result = cli(
        ["clean", "t_gpt4", "prompts/broken.parquet", "out/t_gpt4.parquet", "--rules", "rules.json"],
        prompts,
        monkeypatch,
        capfd,
    )
    assert result.returncode == 2
    assert "prompts/broken.parquet: not a readable parquet file" in error_line(result.stderr)
    assert "500 distinct prompts" in result.stderr  # earlier chunks were cleaned: it broke part-way
    assert not (prompts / "out").exists() or not list((prompts / "out").iterdir())  # not even a temp file


def test_the_ray_engine_reads_windows_and_hands_the_outcomes_out_in_row_order(tmp_path):
    """clean@S on Ray holds one window of prompts at a time (prompt_windows) and the command takes the outcomes
    as it writes its chunks (OutcomeStream), whatever sizes Ray's batches and the chunks have; Ray (the batches'
    generator) is closed once every outcome is taken."""
    from scripts.lib.cleaning.on_ray import OutcomeStream, blocks_of, prompt_windows

    prompts = [f"a prompt number {k}" for k in range(1_000)]
    path = tmp_path / "p.parquet"
    pq.write_table(pa.table({"id": [str(k) for k in range(1_000)], "prompt": prompts}), path, row_group_size=300)
    windows = list(prompt_windows(path, "prompt", 128))
    assert [w.column_names for w in windows] == [["prompt"]] * len(windows) and len(windows) >= 8
    assert max(w.num_rows for w in windows) == 128 and pa.concat_tables(windows).column(0).to_pylist() == prompts
    blocks = blocks_of(windows[0], 7)
    assert len(blocks) == 7 and pa.concat_tables(blocks).equals(windows[0])
    pq.write_table(pa.table({"prompt": pa.array([], pa.string())}), tmp_path / "empty.parquet")
    (empty,) = prompt_windows(tmp_path / "empty.parquet", "prompt", 128)
    assert empty.num_rows == 0 and len(blocks_of(empty, 7)) == 1

    closed = []

    def batches(sizes):
        try:
            start = 0
            for size in sizes:
                yield [(p.upper(), None) for p in prompts[start : start + size]]
                start += size
        finally:
            closed.append(True)

    stream = OutcomeStream(batches([97, 3, 500, 400]))
    taken = stream.take(300) + stream.take(1) + stream.take(699)
    assert taken == [(p.upper(), None) for p in prompts] and not closed
    stream.finish()
    assert closed == [True]
    with pytest.raises(RuntimeError, match="fewer outcomes"):
        OutcomeStream(batches([10])).take(11)
    short = OutcomeStream(batches([10, 5]))
    short.take(12)
    with pytest.raises(RuntimeError, match="3 outcomes more"):
        short.finish()


BAD_BYTES = {  # case: (bytes in the prompt, its 1-based row): the Ray engine's prompt windows are 128 rows
    "a lone continuation byte in the first window": (b"a \x80 cat", 5),
    "an overlong slash in a later window": (b"a \xc0\xaf cat", 300),
    "a surrogate encoded in the last row": (b"a \xed\xa0\x80 cat", 1_000),
}


@pytest.mark.parametrize("case", BAD_BYTES.values(), ids=BAD_BYTES.keys())
def test_the_ray_engines_prompt_windows_name_a_row_that_is_not_utf8(tmp_path, case):
    """clean@S on Ray reads its prompts itself (prompt_windows): invalid UTF-8 was passed to the workers unchecked,
    as the local engine's reads no longer pass it."""
    from scripts.lib.cleaning.on_ray import prompt_windows

    data, row = case
    prompts = [f"a prompt number {k}".encode() for k in range(1_000)]
    prompts[row - 1] = data
    path = tmp_path / "p.parquet"
    pq.write_table(pa.table({"prompt": pa.array(prompts, pa.binary()).view(pa.string())}), path, row_group_size=300)
    with pytest.raises(DataError, match=rf"p\.parquet: column 'prompt' holds invalid data.*first in row {row}$"):
        list(prompt_windows(path, "prompt", 128))
