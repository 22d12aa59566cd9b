"""dedup@S reads its input as each step needs it (scripts/lib/dedup/stage_input.py) instead of holding
the whole table: the files it writes are those of the whole-table path, however the input is cut."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from helpers.planted import with_near_duplicates
from scripts.dedup import clusters_table, dedup_self, read_stage_input, resolve_params, stage_report, write_table
from scripts.lib import minhash as mh
from scripts.lib.dedup.stage_input import StageInput
from scripts.lib.errors import DataError
from scripts.lib.preview import dedup_preview_html

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "tests" / "fixtures"


def planted(seed: int = 7) -> tuple[list[str], list[str]]:
    """Real prompts with near-duplicates, exact copies and blanks planted."""
    texts = [t for t in (FIXTURES / "gpt4-prompts-3k.txt").read_text(encoding="utf-8").splitlines()[:900] if t]
    return with_near_duplicates(texts, seed)


def clean_table(texts: list[str], ids: list[str]) -> pa.Table:
    return pa.table(
        {
            "id": pa.array(ids, pa.large_string()),
            "prompt": pa.array(texts, pa.large_string()),
            "text": pa.array(texts, pa.large_string()),
            "width": pa.array([float(i % 7) for i in range(len(texts))]),
        }
    )


def expected_files(table: pa.Table, keep: str, folder: Path) -> dict[str, bytes]:
    """The stage's four files from the whole table in memory (the path the stage took before)."""
    params = resolve_params(None, threshold=0.7, keep=keep)
    ids = table.column("id").combine_chunks()
    result = dedup_self(table.column("text"), ids, params)
    write_table(table.filter(pa.array(result.keep)), folder / "s.parquet")
    write_table(clusters_table(ids, result, params), folder / "s.clusters.parquet")
    report = stage_report("s", result.stats, params)
    kept, removed = pq.read_table(folder / "s.parquet").to_pandas(), table.to_pandas()
    clusters = pq.read_table(folder / "s.clusters.parquet").to_pandas()
    page = dedup_preview_html(clusters, kept, removed, 20, title="dedup@s: largest near-duplicate clusters")
    return {
        "s.parquet": (folder / "s.parquet").read_bytes(),
        "s.clusters.parquet": (folder / "s.clusters.parquet").read_bytes(),
        "s.report.json": (json.dumps(report, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode(),
        "s.preview.html": page.encode(),
    }


def run_stage(tmp_path: Path, input: Path, keep: str, name: str) -> dict[str, bytes]:
    (tmp_path / "params.yaml").write_text(
        f"dedup: {{threshold: 0.7, keep: {keep}}}\n"
        "runtime: {workers: 2, batch_rows: 113, stream_rows: 301, verify_pairs: 250}\n"
        "preview: {dedup_clusters: 20}\n",
        encoding="utf-8",
    )
    out = tmp_path / name / "s.parquet"
    run = subprocess.run(
        [sys.executable, "-m", "scripts", "dedup", "s", str(input), str(out)],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stderr
    return {path.name: path.read_bytes() for path in sorted(out.parent.iterdir())}


@pytest.mark.parametrize("keep", ["first", "longest", "none_of_pair"])
def test_the_streamed_stage_writes_the_whole_table_files_for_any_cut_of_the_input(tmp_path, keep):
    texts, ids = planted()
    table = clean_table(texts, ids)
    (tmp_path / "expected").mkdir()
    expected = expected_files(table, keep, tmp_path / "expected")
    pq.write_table(table, tmp_path / "groups.parquet", row_group_size=97)  # many row groups
    shards = tmp_path / "shards"  # a folder of shards, a read never spanning two
    shards.mkdir()
    for k, lo in enumerate(range(0, table.num_rows, 500)):
        pq.write_table(table.slice(lo, 500), shards / f"part-{k:03d}.parquet", row_group_size=211)
    for name, input in (("one", tmp_path / "groups.parquet"), ("many", shards)):
        assert run_stage(tmp_path, input, keep, name) == expected, name
    assert b"cluster-1" in expected["s.preview.html"] and json.loads(expected["s.report.json"])["removed"] > 100


def test_shingles_in_blocks_are_the_shingles_of_one_block(monkeypatch):
    texts, _ = planted()
    texts += ["Überall grüne Bäume", "один два три четыре"]
    whole = {unit: mh.shingle_hashes(texts, unit, n) for unit, n in (("word", 3), ("char", 5))}
    monkeypatch.setattr(mh, "SHINGLE_BLOCK", 37)
    for unit, n in (("word", 3), ("char", 5)):
        blocks = mh.shingle_hashes(texts, unit, n)
        assert np.array_equal(blocks.hashes, whole[unit].hashes) and np.array_equal(blocks.offsets, whole[unit].offsets)


def test_the_input_checks_find_what_reading_the_whole_table_found(tmp_path):
    texts, ids = planted()
    table = clean_table(texts, ids)
    path = tmp_path / "in.parquet"

    def problem(changed: pa.Table) -> str:
        pq.write_table(changed, path, row_group_size=100)
        with pytest.raises(DataError) as caught:
            StageInput(path)
        return str(caught.value)

    at = table.schema.get_field_index("text")
    null_text = table.set_column(at, "text", pa.array(texts[:250] + [None] + texts[251:], pa.large_string()))
    assert (
        problem(null_text) == f"{path}: row 250: text is null"
    )  # in the third row group, counted from the file's start
    repeated = table.set_column(0, "id", pa.array(ids[:-1] + [ids[5]], pa.large_string()))
    assert problem(repeated) == f"{path}: column 'id' has repeated values"
    assert problem(table.drop_columns(["text"])) == f"{path}: missing column 'text'"
    pq.write_table(table, path, row_group_size=100)
    assert read_stage_input(path).equals(pq.read_table(path).replace_schema_metadata(None))
    source = StageInput(path, read_rows=64)  # reads cut across the row groups
    assert len(source) == len(texts) and source.ids.to_pylist() == ids and source.whole().to_pylist() == texts
    rows = np.array([0, 5, 99, 100, len(texts) - 1])
    assert source.take(rows).to_pylist() == [texts[i] for i in rows]
