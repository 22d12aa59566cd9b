"""Round 23e: the breaks round 22 left open in compose and release, and what this round found around them,
one table per class (every row of a class table failed before its fix), on real files, folders and links:

1. A split folder `data/splits/S` (or its table, a positions file of `--positions`, compose@V's rows.parquet
   under `--composed`; plots' clean report, clusters table and release rows) that is a symbolic link out of
   its folder was read by compose, release and plots, plain and streamed, at exit 0: refused in one line
   (safe_paths.table_in), while a link into DVC's cache (cache.type symlink) is still read, by the one rule
   paths.ImageRoots applies to an image (safe_paths.Roots).
2. dedup refused `text` and `id` columns that ingest and clean read (dictionary-encoded, string_view), clean's
   own output among them (clean keeps an `id` column as it found it): dedup reads them as the plain texts they
   stand for, a read at a time, and keeps and removes what it does for the plain table (tables.plain_texts).
3. The invalid-UTF-8 line quoted Arrow's string index within the read batch (`string index 0` for the 5th row
   read 2 at a time): it names the input's row, 1-based, counted across reads and shards (tables.utf8_checked).
4. A dedup clusters table whose ids are not UTF-8 was counted by plots at exit 0 and was a traceback in
   dedup-preview: clusters_table.check_clusters, which both run, checks the UTF-8 too.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from helpers.commands import cli
from helpers.tiers import fast_first
from helpers.workspace import PARAMS, error_line, make_splits, snapshot, write_params

COMPONENTS = [{"source": "diffusiondb", "split": s, "into": s} for s in ("train", "validation")]
PICKS = {"r": {"components": COMPONENTS}}  # only picks rows: compose streams them (compose_stream)
ONE_SOURCE = {"diffusiondb": PARAMS["sources"]["diffusiondb"]}  # plots reads each source's reports
CLEANED = {"r": {"components": COMPONENTS, "steps": [{"clean": {"rules": "final"}}]}}  # reads texts: plain

# ---------------------------------------------------------------- 1. a split table through a link out


def _moved_out(path: Path, elsewhere: Path, relative: bool = False) -> None:
    """`path` moved to `elsewhere`, a link to it left in its place."""
    elsewhere.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(path, elsewhere)
    path.symlink_to(Path("../" * (len(path.parts) - 1)) / elsewhere if relative else elsewhere.absolute())


def split_folder_out_compose_streamed(root: Path, out: Path, run) -> tuple:
    _moved_out(root / "data/splits/diffusiondb", out / "diffusiondb")
    return PICKS, ["compose", "r", "data/splits", "data/compose/r"], "data/splits/diffusiondb/train.parquet"


def split_folder_out_compose_plain(root: Path, out: Path, run) -> tuple:  # a relative link, a clean step
    _moved_out(root / "data/splits/diffusiondb", out / "diffusiondb", relative=True)
    return CLEANED, ["compose", "r", "data/splits", "data/compose/r"], "data/splits/diffusiondb/train.parquet"


def split_file_out_release(root: Path, out: Path, run) -> tuple:  # the table alone, release's own reads
    _moved_out(root / "data/splits/diffusiondb/validation.parquet", out / "validation.parquet")
    return PICKS, ["release", "r", "data/splits", "data/releases/r"], "data/splits/diffusiondb/validation.parquet"


def split_folder_out_release_plain(root: Path, out: Path, run) -> tuple:
    _moved_out(root / "data/splits/diffusiondb", out / "diffusiondb")
    return CLEANED, ["release", "r", "data/splits", "data/releases/r"], "data/splits/diffusiondb/train.parquet"


def positions_out_compose(root: Path, out: Path, run) -> tuple:  # --positions' table of the source
    (out / "p").mkdir(parents=True)
    ids = pd.read_parquet(root / "data/splits/diffusiondb/train.parquet")["id"]
    pd.DataFrame({"id": ids, "position": range(len(ids))}).to_parquet(out / "p/diffusiondb.parquet")
    (root / "data/prefilter").mkdir(parents=True)
    (root / "data/prefilter/diffusiondb.parquet").symlink_to(out / "p/diffusiondb.parquet")
    return PICKS, ["compose", "r", "data/splits", "data/compose/r"], "data/prefilter/diffusiondb.parquet"


def composed_rows_out_release(root: Path, out: Path, run) -> tuple:  # --composed: compose@r's rows.parquet
    write_params(root, releases=PICKS)
    assert run(["compose", "r", "data/splits", "data/compose/r"]).returncode == 0
    _moved_out(root / "data/compose/r/rows.parquet", out / "rows.parquet")
    argv = ["release", "r", "data/splits", "data/releases/r", "--composed", "data/compose/r"]
    return PICKS, argv, "data/compose/r/rows.parquet"


PLOTS = ["plots", "data/releases", "data/clean", "data/dedup", "data/plots"]


def _plots_inputs(root: Path, run) -> None:
    """What plots reads: release r, diffusiondb's clean report and dedup clusters table."""
    write_params(root, releases=PICKS, sources=ONE_SOURCE)
    assert run(["release", "r", "data/splits", "data/releases/r"]).returncode == 0
    (root / "data/clean").mkdir()
    (root / "data/clean/diffusiondb.report.json").write_text('{"dropped_by_reason": {"nsfw": 2}}')
    (root / "data/dedup").mkdir()
    clusters = pa.table({"id": ["a", "b"], "duplicate_of": ["k", "k"], "jaccard": [0.9, 0.8]})
    pq.write_table(clusters, root / "data/dedup/diffusiondb.clusters.parquet")


def plots_clean_report_out(root: Path, out: Path, run) -> tuple:  # its rule counts copied into clean_removed.csv
    _plots_inputs(root, run)
    _moved_out(root / "data/clean/diffusiondb.report.json", out / "report.json")
    return PICKS, PLOTS, "data/clean/diffusiondb.report.json"


def plots_clusters_out(root: Path, out: Path, run) -> tuple:
    _plots_inputs(root, run)
    _moved_out(root / "data/dedup/diffusiondb.clusters.parquet", out / "c.parquet", relative=True)
    return PICKS, PLOTS, "data/dedup/diffusiondb.clusters.parquet"


def plots_release_folder_out(root: Path, out: Path, run) -> tuple:  # the release's folder, not its file
    _plots_inputs(root, run)
    _moved_out(root / "data/releases/r", out / "r")
    return PICKS, PLOTS, "data/releases/r/rows.parquet"


LINKED_OUT = fast_first(
    [
        split_folder_out_compose_streamed,
        split_file_out_release,
        positions_out_compose,
        composed_rows_out_release,
        plots_clean_report_out,
        split_folder_out_compose_plain,
        split_folder_out_release_plain,
        plots_clusters_out,
        plots_release_folder_out,
    ],
    keep=5,
)


@pytest.mark.parametrize("case", LINKED_OUT, ids=lambda case: case.__name__)
def test_a_table_linked_out_of_its_folder_is_refused(tmp_path, monkeypatch, capfd, case):
    root, out = tmp_path / "ws", tmp_path / "elsewhere"
    root.mkdir()
    make_splits(root, n=8)
    run = lambda argv: cli(argv, root, monkeypatch, capfd)  # noqa: E731
    releases, argv, linked = case(root, out, run)
    write_params(root, releases=releases, sources=ONE_SOURCE)
    output = root / argv[3]
    before = snapshot(output) if output.exists() else None
    result = run(argv)
    assert result.returncode == 2, result.stderr
    line = error_line(result.stderr)
    assert line.startswith(f"error: {linked}: a link on its way leads out of"), line
    assert (snapshot(output) if output.exists() else None) == before


def test_a_split_table_linked_into_the_dvc_cache_is_read(tmp_path, monkeypatch, capfd):
    """cache.type symlink checks each output file out as a link into .dvc/cache: still the split's own."""
    root = tmp_path / "ws"
    root.mkdir()
    make_splits(root, n=8)
    write_params(root, releases=CLEANED)
    for name in ("train", "validation"):
        table = root / "data/splits/diffusiondb" / f"{name}.parquet"
        cached = root / ".dvc/cache/files/md5" / ("ab" if name == "train" else "cd") / ("0" * 30)
        cached.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(table, cached)
        table.symlink_to(cached)
    for argv in (["compose", "r", "data/splits", "data/compose/r"], ["release", "r", "data/splits", "data/releases/r"]):
        result = cli(argv, root, monkeypatch, capfd)
        assert result.returncode == 0, result.stderr


# ---------------------------------------------------------------- 2. dedup reads every text layout clean reads

TEXTS = ["a red fox in the snowy forest at dawn, highly detailed"] * 3 + [f"a blue boat number {i}" for i in range(5)]


def _prompt_table(id_kind=None, text_kind=None) -> pa.Table:
    def column(values, kind):
        array = pa.array(values)
        return array.dictionary_encode() if kind == "dictionary" else array.cast(kind) if kind else array

    ids = [f"p{i}" for i in range(len(TEXTS))]
    return pa.table(
        {"id": column(ids, id_kind), "source": ["diffusiondb"] * len(ids), "text": column(TEXTS, text_kind)}
    )


def dictionary_ids_from_clean(root: Path, run) -> str:  # the pipeline itself: clean@S's output, as dedup@S reads it
    rows = (
        _prompt_table("dictionary").append_column("prompt", pa.array(TEXTS)).append_column("meta", pa.array(["{}"] * 8))
    )
    (root / "data/prompts").mkdir(parents=True)
    pq.write_table(rows, root / "data/prompts/diffusiondb.parquet")
    assert run(["clean", "diffusiondb", "data/prompts/diffusiondb.parquet", "data/clean/in.parquet"]).returncode == 0
    return "data/clean/in.parquet"


def string_view_texts(root: Path, run) -> str:  # pyarrow 16+ and polars write it
    pq.write_table(_prompt_table(text_kind=pa.string_view()), root / "data/clean/in.parquet")
    return "data/clean/in.parquet"


def dictionary_texts_string_view_ids_in_shards(root: Path, run) -> str:  # a folder of shards, both at once
    rows = _prompt_table(pa.string_view(), "dictionary")
    (root / "data/clean/in").mkdir()
    pq.write_table(rows.slice(0, 4), root / "data/clean/in/part-0.parquet")
    pq.write_table(rows.slice(4), root / "data/clean/in/part-1.parquet")
    return "data/clean/in"


@pytest.mark.parametrize(
    "case",
    fast_first([dictionary_ids_from_clean, dictionary_texts_string_view_ids_in_shards, string_view_texts], keep=2),
    ids=lambda case: case.__name__,
)
def test_dedup_reads_the_text_layouts_clean_reads(tmp_path, monkeypatch, capfd, case):
    (tmp_path / "data/clean").mkdir(parents=True)
    write_params(tmp_path)
    run = lambda argv: cli(argv, tmp_path, monkeypatch, capfd)  # noqa: E731
    pq.write_table(_prompt_table(), tmp_path / "data/clean/plain.parquet")
    assert run(["dedup", "diffusiondb", "data/clean/plain.parquet", "data/dedup/plain.parquet"]).returncode == 0
    result = run(["dedup", "diffusiondb", case(tmp_path, run), "data/dedup/in.parquet"])
    assert result.returncode == 0, result.stderr
    for name in ("", ".clusters"):  # the same rows kept and the same clusters as of the plain table
        kept, plain = (pq.read_table(tmp_path / f"data/dedup/{s}{name}.parquet") for s in ("in", "plain"))
        assert (
            kept.select(["id", "text"] if not name else kept.column_names).to_pylist()
            == plain.select(["id", "text"] if not name else plain.column_names).to_pylist()
        )
    assert pq.read_table(tmp_path / "data/dedup/in.parquet").num_rows == 6  # two copies of the fox removed


# ---------------------------------------------------------------- 3. the invalid-UTF-8 line names the file's row


def _with_bad_text(rows: pa.Table, column: str, row: int) -> pa.Table:
    """`rows` with the text of `column` at `row` (0-based) bytes that are not UTF-8, as pyarrow reads them back."""
    values = [v.encode() for v in rows.column(column).to_pylist()]
    values[row] = b"\xff\xfe " + values[row]
    return rows.set_column(rows.schema.get_field_index(column), column, pa.array(values, pa.binary()).view(pa.string()))


def _prompts(n: int = 8) -> pa.Table:
    texts = [f"a green lamp number {i}" for i in range(n)]
    meta = ["{}"] * n
    return pa.table(
        {"id": [f"p{i}" for i in range(n)], "source": ["diffusiondb"] * n, "prompt": texts, "text": texts, "meta": meta}
    )


def clean_streamed_two_rows_a_read(root: Path, run) -> tuple:  # the 5th row: index 0 of the third read
    write_params(root, runtime={"engine": "local", "stream_rows": 2})
    pq.write_table(_with_bad_text(_prompts(), "prompt", 4), root / "in.parquet")
    return ["clean", "diffusiondb", "in.parquet", "out/c.parquet"], "in.parquet", 5


def dedup_second_shard(root: Path, run) -> tuple:  # the 7th row of the input: the 3rd of its second shard
    write_params(root, runtime={"engine": "local", "stream_rows": 3})
    rows = _with_bad_text(_prompts(), "text", 6)
    (root / "in").mkdir()
    pq.write_table(rows.slice(0, 4), root / "in/a.parquet")
    pq.write_table(rows.slice(4), root / "in/b.parquet")
    return ["dedup", "diffusiondb", "in", "out/d.parquet"], "in", 7


def dedup_ids_in_shards(root: Path, run) -> tuple:  # the id column, read whole a shard at a time
    write_params(root)
    rows = _with_bad_text(_prompts(), "id", 5)
    (root / "in").mkdir()
    pq.write_table(rows.slice(0, 3), root / "in/a.parquet")
    pq.write_table(rows.slice(3), root / "in/b.parquet")
    return ["dedup", "diffusiondb", "in", "out/d.parquet"], "in", 6


def compose_split_text(root: Path, run) -> tuple:  # a split table read whole: its 3rd row
    write_params(root, releases=PICKS)
    make_splits(root, n=8)
    table = root / "data/splits/diffusiondb/train.parquet"
    pq.write_table(_with_bad_text(pq.read_table(table), "text", 2), table)
    return ["compose", "r", "data/splits", "out/r"], "data/splits/diffusiondb/train.parquet", 3


@pytest.mark.parametrize(
    "case", [clean_streamed_two_rows_a_read, dedup_second_shard, dedup_ids_in_shards, compose_split_text]
)
def test_the_invalid_utf8_line_names_the_files_row(tmp_path, monkeypatch, capfd, case):
    argv, path, row = case(tmp_path, lambda argv: cli(argv, tmp_path, monkeypatch, capfd))
    result = cli(argv, tmp_path, monkeypatch, capfd)
    assert result.returncode == 2, result.stderr
    line = error_line(result.stderr)
    assert line.startswith(f"error: {path}: column '"), line
    assert line.endswith(f"holds invalid data, such as text that is not UTF-8, first in row {row}"), line
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


# ---------------------------------------------------------------- 4. a clusters table's ids are UTF-8


def _clusters_not_utf8(root: Path, column: str, row: int) -> None:
    clusters = pa.table({"id": ["a", "b", "c"], "duplicate_of": ["k", "k", "m"], "jaccard": [0.9, 0.8, 0.7]})
    pq.write_table(_with_bad_text(clusters, column, row), root / "data/dedup/diffusiondb.clusters.parquet")


def plots_duplicate_of(root: Path, run) -> tuple:  # counted into dedup_clusters.csv at exit 0
    _plots_inputs(root, run)
    _clusters_not_utf8(root, "duplicate_of", 1)
    return PLOTS, "duplicate_of", 2


def plots_id(root: Path, run) -> tuple:
    _plots_inputs(root, run)
    _clusters_not_utf8(root, "id", 2)
    return PLOTS, "id", 3


def dedup_preview_id(root: Path, run) -> tuple:  # the page's reader of the same table
    write_params(root)
    (root / "data/dedup").mkdir(parents=True)
    (root / "data/clean").mkdir(parents=True)
    rows = pa.table({"id": ["a", "b", "c", "k", "m"], "text": ["x a", "x b", "x c", "x k", "x m"]})
    pq.write_table(rows, root / "data/clean/diffusiondb.parquet")
    pq.write_table(rows.slice(3), root / "data/dedup/diffusiondb.parquet")
    _clusters_not_utf8(root, "id", 0)
    return ["dedup-preview", "diffusiondb", "--output", "out/p.html"], "id", 1


@pytest.mark.parametrize(
    "case", fast_first([plots_duplicate_of, dedup_preview_id, plots_id], keep=2), ids=lambda case: case.__name__
)
def test_a_clusters_table_that_is_not_utf8_is_one_line(tmp_path, monkeypatch, capfd, case):
    make_splits(tmp_path, n=8)
    argv, column, row = case(tmp_path, lambda argv: cli(argv, tmp_path, monkeypatch, capfd))
    result = cli(argv, tmp_path, monkeypatch, capfd)
    assert result.returncode == 2, result.stderr
    assert error_line(result.stderr) == (
        f"error: data/dedup/diffusiondb.clusters.parquet: column '{column}' holds invalid data, "
        f"such as text that is not UTF-8, first in row {row}"
    )
    assert not (tmp_path / "data/plots").exists() and not (tmp_path / "out").exists()
