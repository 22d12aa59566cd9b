"""Round 10b's breaks, one table per class (every row failed before its fix): a JSON or parquet file a
command reads, of the wrong shape, was a traceback, a hang or a silent wrong answer.

1. A sentence-transformers model folder (dedup.method embedding): text, a list, a boolean, a negative or
   NaN where modules.json, 1_Pooling/config.json or sentence_bert_config.json want a number or an object
   was a traceback or taken (bool("false") is true); a FIFO hung the read, /dev/zero grew without bound.
2. A clusters table (data/dedup/S.clusters.parquet) at dedup-preview, plots and diff: text in `jaccard`, a
   null `duplicate_of`, a missing column or a list column was a traceback or a wrong count.
3. A clean report (data/clean/S.report.json) at plots: a list, counts as text, no `dropped_by_reason`;
   a release's metadata.jsonl that is a FIFO hung plots.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from test_plots import make_inputs

from helpers import cli
from helpers.repos import REPO
from helpers.tiers import fast_first
from scripts.lib import embedding as em
from scripts.lib.errors import DataError

MEMORY_CAP = 4 << 30  # a read of /dev/zero stops here (MemoryError) instead of taking the machine


def capped_memory() -> None:
    resource.setrlimit(resource.RLIMIT_DATA, (MEMORY_CAP, MEMORY_CAP))


def run(argv: list[str], root: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    """`python -m scripts ...` as a user runs it; a hang is a TimeoutExpired, a runaway read a MemoryError."""
    return subprocess.run(
        [sys.executable, "-m", "scripts", *argv],
        cwd=root,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=timeout,
        preexec_fn=capped_memory,
    )


def one_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    return lines[0].removeprefix("error: ")


# ---------------------------------------------------------------- 1. a model folder of the wrong shape
TRANSFORMER = {"type": "sentence_transformers.models.Transformer", "path": ""}
POOLING = {"type": "sentence_transformers.models.Pooling", "path": "1_Pooling"}
MODEL_FILES = {
    "modules.json": [TRANSFORMER, POOLING],
    "1_Pooling/config.json": {"pooling_mode_mean_tokens": True},
    "sentence_bert_config.json": {"max_seq_length": 128, "do_lower_case": False},
}


def write_model(folder: Path, replaced: dict[str, object]) -> None:
    """A sentence-transformers folder's config files (no weights: read_spec reads only these), with
    `replaced`'s files in place of the good ones (a str is written as it is: NaN is not json.dumps')."""
    for name, content in {**MODEL_FILES, **replaced}.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(content if isinstance(content, str) else json.dumps(content), encoding="utf-8")


MODEL_SHAPES = {  # case: (file, its content, what the line says after "m/FILE: ")
    "modules.json an object": ("modules.json", {"0": TRANSFORMER}, "expected a JSON list of modules, found an object"),
    "a module that is text": ("modules.json", ["Transformer"], "[0]: expected an object, found text"),
    "a module's type a number": ("modules.json", [{"type": 5, "path": ""}], "[0].type: expected text, found a number"),
    "a module's path a list": (
        "modules.json",
        [{**TRANSFORMER, "path": ["a"]}],
        "[0].path: expected text, found a list",
    ),
    "a module's path leaving": (
        "modules.json",
        [{**TRANSFORMER, "path": "../x"}],
        "[0].path: ../x leaves the model folder",
    ),
    "pooling config a list": ("1_Pooling/config.json", [True], "expected a JSON object, found a list"),
    "sentence_bert_config a list": ("sentence_bert_config.json", [128], "expected a JSON object, found a list"),
    "max_seq_length text": (
        "sentence_bert_config.json",
        {"max_seq_length": "128"},
        "max_seq_length: expected a positive whole number, found text '128'",
    ),
    "max_seq_length a boolean": (
        "sentence_bert_config.json",
        {"max_seq_length": True},
        "max_seq_length: expected a positive whole number, found a boolean True",
    ),
    "max_seq_length negative": (
        "sentence_bert_config.json",
        {"max_seq_length": -5},
        "max_seq_length: expected a positive whole number, found a number -5",
    ),
    "max_seq_length NaN": (
        "sentence_bert_config.json",
        '{"max_seq_length": NaN}',
        "not a readable JSON file (NaN is not a JSON number (RFC 8259 has no NaN or Infinity))",
    ),
    "max_seq_length past floats": (
        "sentence_bert_config.json",
        '{"max_seq_length": 1e999}',
        "not a readable JSON file (the number 1e999 is too large for a float (read as inf))",
    ),
    "max_seq_length a fraction": (
        "sentence_bert_config.json",
        {"max_seq_length": 1.5},
        "max_seq_length: expected a positive whole number, found a number 1.5",
    ),
    "do_lower_case text": (
        "sentence_bert_config.json",
        {"do_lower_case": "false"},
        "do_lower_case: expected true or false, found text 'false'",
    ),
    "a config of 2 MiB": (
        "sentence_bert_config.json",
        json.dumps({"max_seq_length": 128, "pad": "x" * (2 << 20)}),
        "larger than 1048576 bytes; refusing to read it",
    ),
}


def test_a_good_model_folder_is_read(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_model(tmp_path / "m", {})
    assert em.read_spec(Path("m")) == em.EncoderSpec(Path("m"), 128, False)


@pytest.mark.parametrize("case", MODEL_SHAPES)
def test_a_model_config_of_the_wrong_shape_is_one_line_naming_file_and_key(tmp_path, monkeypatch, case):
    name, content, said = MODEL_SHAPES[case]
    monkeypatch.chdir(tmp_path)
    write_model(tmp_path / "m", {name: content})
    with pytest.raises(DataError) as caught:
        em.read_spec(Path("m"))
    assert str(caught.value) == f"m/{name}: {said}"


def fifo(path: Path) -> None:
    os.mkfifo(path)


def dev_zero(path: Path) -> None:
    path.symlink_to("/dev/zero")


def text_max_length(path: Path) -> None:
    path.write_text('{"max_seq_length": "long"}', encoding="utf-8")


MODEL_FILES_AT_DEDUP = {  # case: (file, how it is made, the line)
    "modules.json a FIFO": ("modules.json", fifo, "m/modules.json: is a FIFO, not a regular file; refusing to read it"),
    "pooling config a FIFO": (
        "1_Pooling/config.json",
        fifo,
        "m/1_Pooling/config.json: is a FIFO, not a regular file; refusing to read it",
    ),
    "sentence_bert_config.json a link to /dev/zero": (
        "sentence_bert_config.json",
        dev_zero,
        "m/sentence_bert_config.json: is a device, not a regular file; refusing to read it",
    ),
    "max_seq_length text": (
        "sentence_bert_config.json",
        text_max_length,
        "m/sentence_bert_config.json: max_seq_length: expected a positive whole number, found text 'long'",
    ),
}


@pytest.mark.parametrize("case", fast_first(MODEL_FILES_AT_DEDUP, keep=2))  # a FIFO, a device in CI
def test_dedup_with_a_model_file_that_is_not_a_config_stops_in_one_line(tmp_path, monkeypatch, case):
    """The real command: a FIFO hung it (until the timeout here), /dev/zero ran out of memory, text was
    a traceback."""
    name, make, said = MODEL_FILES_AT_DEDUP[case]
    monkeypatch.chdir(tmp_path)
    write_model(tmp_path / "m", {})
    (tmp_path / "m" / name).unlink()
    make(tmp_path / "m" / name)
    dedup = {"method": "embedding", "embedding_model": "m"}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"dedup": dedup}), encoding="utf-8")
    (tmp_path / "in.txt").write_text("a red car\na red car!\n", encoding="utf-8")
    done = run(["dedup-text", "in.txt", "out.jsonl"], tmp_path)
    assert done.returncode == 2 and one_line(done.stderr) == said
    assert not (tmp_path / "out.jsonl").exists()


# ---------------------------------------------------------------- 2. a clusters table of the wrong shape
CLUSTERS = "data/dedup/s.clusters.parquet"
CLUSTER_TABLES = {  # case: (columns, the line after "FILE: ")
    "jaccard as text": (
        {"id": ["r1"], "duplicate_of": ["k1"], "jaccard": ["high"]},
        "column 'jaccard' must hold numbers, found string",
    ),
    "jaccard as booleans": (
        {"id": ["r1"], "duplicate_of": ["k1"], "jaccard": [True]},
        "column 'jaccard' must hold numbers, found bool",
    ),
    "jaccard null": (
        {"id": ["r1"], "duplicate_of": ["k1"], "jaccard": pa.array([None], pa.float64())},
        "row 1: jaccard is missing (null or NaN)",
    ),
    "jaccard infinite": (
        {"id": ["r1"], "duplicate_of": ["k1"], "jaccard": [float("inf")]},
        "row 1: jaccard inf is not a finite number",
    ),
    "duplicate_of null in row 2": (
        {"id": ["r1", "r2"], "duplicate_of": pa.array(["k1", None]), "jaccard": [0.9, 0.8]},
        "row 2: duplicate_of is missing (null or NaN)",
    ),
    "id null": (
        {"id": pa.array([None], pa.string()), "duplicate_of": ["k1"], "jaccard": [0.9]},
        "row 1: id is missing (null or NaN)",
    ),
    "no jaccard column": ({"id": ["r1"], "duplicate_of": ["k1"]}, "no column(s) jaccard (not a dedup clusters table)"),
    "id a list column": (
        {"id": [[1, 2]], "duplicate_of": ["k1"], "jaccard": [0.9]},
        "column 'id' must hold text, found list<element: int64>",
    ),
    "duplicate_of a struct column": (
        {"id": ["r1"], "duplicate_of": [{"a": 1}], "jaccard": [0.9]},
        "column 'duplicate_of' must hold text, found struct<a: int64>",
    ),
}


def write_dedup_outputs(root: Path, clusters: dict, kept_ids=None) -> None:
    """data/clean/s.parquet, data/dedup/s.parquet (the kept rows) and the clusters table `clusters`."""
    for folder in ("data/clean", "data/dedup"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    pq.write_table(
        pa.table({"id": ["k1", "r1", "r2"], "text": ["a red car", "a red car!", "red car"]}),
        root / "data/clean/s.parquet",
    )
    pq.write_table(pa.table({"id": kept_ids or ["k1"], "text": ["a red car"]}), root / "data/dedup/s.parquet")
    pq.write_table(pa.table(clusters), root / CLUSTERS)
    (root / "params.yaml").write_text("preview:\n  dedup_clusters: 5\n", encoding="utf-8")


@pytest.mark.parametrize("case", CLUSTER_TABLES)
def test_dedup_preview_of_a_bad_clusters_table_is_one_line_naming_it(tmp_path, monkeypatch, capfd, case):
    columns, said = CLUSTER_TABLES[case]
    write_dedup_outputs(tmp_path, columns)
    done = cli(["dedup-preview", "s"], tmp_path, monkeypatch, capfd)
    assert done.returncode == 2 and one_line(done.stderr) == f"{CLUSTERS}: {said}"
    assert not (tmp_path / "data/dedup/s.preview.html").exists()


def test_dedup_preview_of_a_kept_table_whose_ids_are_lists_is_one_line(tmp_path, monkeypatch, capfd):
    write_dedup_outputs(tmp_path, {"id": ["r1"], "duplicate_of": ["k1"], "jaccard": [0.9]}, kept_ids=[[1]])
    done = cli(["dedup-preview", "s"], tmp_path, monkeypatch, capfd)
    line = one_line(done.stderr)
    assert (
        done.returncode == 2 and line == "data/dedup/s.parquet: column 'id' must hold text, found list<element: int64>"
    )


def test_dedup_preview_of_a_good_clusters_table_still_writes_the_page(tmp_path, monkeypatch, capfd):
    write_dedup_outputs(tmp_path, {"id": ["r1", "r2"], "duplicate_of": ["k1", "k1"], "jaccard": [0.9, 0.7]})
    done = cli(["dedup-preview", "s"], tmp_path, monkeypatch, capfd)
    assert done.returncode == 0, done.stderr
    assert "1 clusters, 2 rows removed" in (tmp_path / "data/dedup/s.preview.html").read_text(encoding="utf-8")


# case: (file, its columns, how the line after "FILE: " starts). diff checks a clusters table as dedup-preview
# and plots do (clusters_table.check_clusters: one rule set, so an infinite jaccard is refused by all three)
DIFF_TABLES = {f"clusters {case}": (CLUSTERS, *CLUSTER_TABLES[case]) for case in CLUSTER_TABLES} | {
    "dropped id a list column": (
        "data/clean/s.dropped.parquet",
        {"id": [["r1"]], "reason": ["empty"]},
        "row 1: column 'id' holds a list ['r1'], not text",
    ),
}


@pytest.mark.parametrize("case", DIFF_TABLES)
def test_diff_explaining_removals_from_a_bad_table_is_one_line(tmp_path, monkeypatch, case):
    """diff's reasons for removed rows: float() of text, or a list as a dict key, was a traceback."""
    import fsspec
    from fsspec.implementations.dirfs import DirFileSystem

    from scripts.tools.diff import source_removals

    name, columns, said = DIFF_TABLES[case]
    monkeypatch.chdir(tmp_path)
    (tmp_path / name).parent.mkdir(parents=True)
    pq.write_table(pa.table(columns), tmp_path / name)
    with pytest.raises(DataError) as caught:
        source_removals(DirFileSystem(str(tmp_path), fsspec.filesystem("file")), {"s"})
    assert str(caught.value).startswith(f"{name}: {said}") and "\n" not in str(caught.value)


# ---------------------------------------------------------------- 3. plots of a clean report of the wrong shape
CLEAN_REPORTS = {  # case: (the report, the line after "data/clean/gpt4.report.json: ")
    "a list": ([{"dropped_by_reason": {"empty": 1}}], "expected a JSON object (a clean report), found a list"),
    "null": (None, "expected a JSON object (a clean report), found null"),
    "no dropped_by_reason": (
        {"source": "gpt4", "rows_in": 3},
        "no dropped_by_reason (not a clean report; run clean again)",
    ),
    "dropped_by_reason a list": (
        {"dropped_by_reason": [["empty", 1]]},
        "dropped_by_reason: expected an object of counts, found a list",
    ),
    "a count as text": (
        {"dropped_by_reason": {"empty": "3"}},
        "dropped_by_reason: 'empty': expected a count of rows, found text '3'",
    ),
    "a count nested": (
        {"dropped_by_reason": {"empty": {"n": [1]}}},
        "dropped_by_reason: 'empty': expected a count of rows, found an object",
    ),
    "a count negative": (
        {"dropped_by_reason": {"empty": -2}},
        "dropped_by_reason: 'empty': expected a count of rows, found a number -2",
    ),
    "a count a boolean": (
        {"dropped_by_reason": {"empty": True}},
        "dropped_by_reason: 'empty': expected a count of rows, found a boolean True",
    ),
    "a count a fraction": (
        {"dropped_by_reason": {"empty": 1.5}},
        "dropped_by_reason: 'empty': expected a count of rows, found a number 1.5",
    ),
}
PLOTS = ["plots", "data/releases", "data/clean", "data/dedup", "data/plots"]


def no_plots_written(root: Path) -> bool:
    return not (root / "data/plots").exists() or not any((root / "data/plots").iterdir())


@pytest.mark.parametrize("case", CLEAN_REPORTS)
def test_plots_of_a_clean_report_of_the_wrong_shape_is_one_line_naming_it(tmp_path, monkeypatch, capfd, case):
    report, said = CLEAN_REPORTS[case]
    make_inputs(tmp_path)
    (tmp_path / "data/clean/gpt4.report.json").write_text(json.dumps(report), encoding="utf-8")
    done = cli(PLOTS, tmp_path, monkeypatch, capfd)
    assert done.returncode == 2 and one_line(done.stderr) == f"data/clean/gpt4.report.json: {said}"
    assert no_plots_written(tmp_path)


PLOT_CLUSTERS = {  # case: (columns, the dedup folder, the line)
    "duplicate_of null in row 2": (
        {"id": ["a", "b"], "duplicate_of": pa.array(["k", None]), "jaccard": [0.9, 0.8]},
        "data/dedup",
        "data/dedup/gpt4.clusters.parquet: row 2: duplicate_of is missing (null or NaN)",
    ),
    "duplicate_of a list column": (
        {"id": ["a"], "duplicate_of": [["k"]], "jaccard": [0.9]},
        "data/dedup",
        "data/dedup/gpt4.clusters.parquet: column 'duplicate_of' must hold text, found list<element: string>",
    ),
    "no duplicate_of, in another folder": (
        {"id": ["a"], "jaccard": [0.9]},
        "other",
        "other/gpt4.clusters.parquet: no column(s) duplicate_of (not a dedup clusters table)",
    ),
}


@pytest.mark.parametrize("case", PLOT_CLUSTERS)
def test_plots_of_a_bad_clusters_table_is_one_line_naming_it(tmp_path, monkeypatch, capfd, case):
    columns, folder, said = PLOT_CLUSTERS[case]
    make_inputs(tmp_path)
    if folder != "data/dedup":
        (tmp_path / "data/dedup").rename(tmp_path / folder)
    pq.write_table(pa.table(columns), tmp_path / folder / "gpt4.clusters.parquet")
    done = cli(["plots", "data/releases", "data/clean", folder, "data/plots"], tmp_path, monkeypatch, capfd)
    assert done.returncode == 2 and one_line(done.stderr) == said
    assert no_plots_written(tmp_path)


def a_folder(path: Path) -> None:
    path.mkdir()


METADATA_FILES = {  # case: how data/releases/r2/validation/metadata.jsonl is made, what the line says of it
    "a FIFO": (fifo, "is a FIFO, not a regular file"),
    "a link to /dev/zero": (dev_zero, "a link on its way leads out of data/releases"),  # round 23e: refused first
    "a folder": (a_folder, "is a folder, not a regular file"),
}


@pytest.mark.parametrize("case", METADATA_FILES)
def test_plots_of_a_release_whose_metadata_is_not_a_file_is_one_line(tmp_path, case):
    """A FIFO hung plots (until the timeout here) and /dev/zero ran out of memory."""
    make, said = METADATA_FILES[case]
    make_inputs(tmp_path)
    metadata = tmp_path / "data/releases/r2/validation/metadata.jsonl"
    metadata.unlink()
    make(metadata)
    done = run(PLOTS, tmp_path, timeout=60)
    assert done.returncode == 2 and one_line(done.stderr) == (
        f"data/releases/r2/validation/metadata.jsonl: {said}; refusing to read it"
    )
    assert no_plots_written(tmp_path)
