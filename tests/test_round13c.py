"""Round 13c: the review tools and the text readers, hostile inputs. Every row failed before its fix.

1. pr-comment took release names and entries from the PR's params.yaml as they were: `X/../../../y` wrote a
   contact sheet outside --out, `@everyone <!--` went raw into the comment, and a list where an entry or
   its `base` goes was a traceback. diff.releases_at now holds them to the stages' rules (one line).
2. `dvc metrics diff`'s --md table was pasted raw: a metric named `@everyone <!--` in the PR's summary.json
   pinged and hid the rest of the comment. The table is built from --json, each cell as text.
3. A UTF-8 byte-order mark (Notepad, Excel's "CSV UTF-8") stayed an invisible U+FEFF in the first prompt of
   a text source, a synthesize example file and a webdataset caption, and named a CSV's first column
   `\\ufeffprompt` (refused).
4. synthesize's parquet example column sent bytes, lists and numbers to the paid API as their repr.
5. plots counted a missing caption as the 3 characters of 'nan' and plotted a list as its repr; diff left a
   row whose split is neither train nor validation out of the report at exit 0.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from test_refused_outputs import python

from helpers import env
from helpers.archives import write_tar
from helpers.workspace import PNG
from scripts.lib.errors import DataError

pytestmark = pytest.mark.usefixtures("no_proxy")
JPEG = b"\xff\xd8\xff\xe0" + b"\x00" * 64  # pr-comment copies a sheet whose bytes start as a JPEG's
BOM = b"\xef\xbb\xbf"


def git(*args: str, cwd: Path) -> None:
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, env=env())


def dvc_repo(root: Path) -> Path:
    """A git repository with DVC whose commit has release r0; the test then edits the workspace (the PR)."""
    root.mkdir(parents=True)
    git("init", "-q", "-b", "main", cwd=root)
    subprocess.run([sys.executable, "-m", "dvc", "init", "-q"], cwd=root, check=True, env=env())
    (root / "params.yaml").write_text("releases:\n  r0: {}\n", encoding="utf-8")
    (root / "data").mkdir()
    (root / "data" / "summary.json").write_text('{"rows": {"r0": 3}}', encoding="utf-8")
    git("add", "-A", cwd=root)
    git("commit", "-q", "-m", "base", cwd=root)
    return root


def error_line(result: subprocess.CompletedProcess) -> str:
    err = result.stderr.decode("utf-8", "replace")
    assert result.returncode == 2 and "Traceback" not in err, (result.returncode, err[-2000:])
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, err
    return lines[0]


# ---------------------------------------------------------------- 1. release names and entries of a PR

PR_RELEASES = {  # case: (the releases of the PR's params.yaml, what the one line says after "params.yaml: ")
    "a name up and out": ('  "X/../../../y": {}\n', "releases: 'X/../../../y' is not a plain release name"),
    "markdown in a name": (
        '  "x` @everyone <!-- ": {}\n',
        "releases: 'x` @everyone <!-- ' is not a plain release name",
    ),
    "a name on two lines": (
        '  "y\\n## Approved": {base: r0}\n',
        "releases: 'y\\n## Approved' is not a plain release name",
    ),
    "a name that is a number": ("  1: {}\n", "releases: 1 is not a plain release name"),
    "an entry that is a list": ("  r1: [1, 2]\n", "releases.r1: expected a mapping whose `base` is a release name"),
    "an entry that is text": ("  r1: text\n", "releases.r1: expected a mapping whose `base` is a release name"),
    "a base that is a list": ("  r1: {base: [r0]}\n", "releases.r1: expected a mapping whose `base` is a release name"),
}


@pytest.mark.parametrize("case", sorted(PR_RELEASES))
def test_diff_and_pr_comment_read_release_names_and_entries_as_the_stages_do(tmp_path, monkeypatch, case):
    """diff, pr-build and pr-comment read each revision's releases with releases_at (a list there was a
    traceback in pr-comment's release_pairs, a name went raw into the comment and into a sheet's path)."""
    import fsspec
    from fsspec.implementations.dirfs import DirFileSystem

    from scripts.tools.diff import releases_at

    releases, said = PR_RELEASES[case]
    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text("releases:\n  r0: {}\n" + releases, encoding="utf-8")
    with pytest.raises(DataError) as caught:
        releases_at(DirFileSystem(str(tmp_path), fsspec.filesystem("file")))
    assert str(caught.value) == f"params.yaml: {said}"


def test_pr_comment_writes_no_sheet_outside_out_for_a_release_name_of_the_pr(tmp_path):
    """Releases `X/a` then `X/../../../y`, each with a preview.jpg: the second sheet went to OUT/../y.jpg."""
    repo = dvc_repo(tmp_path / "repo")
    (repo / "params.yaml").write_text('releases:\n  "X/a": {}\n  "X/../../../y": {}\n', encoding="utf-8")
    for name in ("data/releases/X/a/preview.jpg", "y/preview.jpg"):
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        (repo / name).write_bytes(JPEG)
    line = error_line(python(["pr-comment", "HEAD", "workspace", "--out", tmp_path / "out" / "o"], repo))
    assert line == "error: params.yaml: releases: 'X/a' is not a plain release name"
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------- 2. the metrics table of the comment

METRICS = {  # the PR's summary.json: a raw fragment that must not reach the comment -> the cell shown instead
    "<!-- hidden": "rows.@\u200beveryone &lt;\\!-- hidden",
    "| rows.a|b |": "| rows.a\\|b |",
    "[click](": "\\[click\\]\\(https://e.invalid\\)",
}


def test_pr_comment_shows_the_prs_metric_names_and_values_as_text(tmp_path):
    repo = dvc_repo(tmp_path / "repo")
    summary = {"rows": {"@everyone <!-- hidden": 5, "a|b": 5}, "note": "[click](https://e.invalid)"}
    (repo / "data" / "summary.json").write_text(json.dumps(summary), encoding="utf-8")
    done = python(["pr-comment", "HEAD", "workspace", "--out", tmp_path / "o"], repo)
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    body = (tmp_path / "o" / "comment.md").read_text(encoding="utf-8")
    metrics = body[body.index("### Metrics") : body.index("### Plots")]
    for raw, shown in METRICS.items():
        assert raw not in metrics and shown in metrics, (raw, metrics)
    assert body.count("<!--") == 1  # the marker only
    assert "| data/summary.json | rows.r0 | 3 | - | - |" in metrics  # a metric the PR removed


# ---------------------------------------------------------------- 3. a UTF-8 byte-order mark


def text_source(root: Path) -> dict:
    (root / "p.txt").write_bytes(BOM + b"a red kite over the sea\nblue sky at dawn\n")
    return {"kind": "text", "path": str(root)}


def openprompts_csv(root: Path) -> dict:
    (root / "o.csv").write_bytes(BOM + b'prompt,raw_data\na red kite over the sea,"{}"\nblue sky at dawn,"{}"\n')
    return {"kind": "openprompts", "path": str(root)}


def kaggle_csv(root: Path) -> dict:
    (root / "gpt_generated_prompts.csv").write_bytes(BOM + b"prompt\na red kite over the sea\nblue sky at dawn\n")
    for n in range(2):
        (root / f"{n}.png").write_bytes(PNG)
    return {"kind": "kaggle_sd2", "path": str(root)}


def webdataset(root: Path) -> dict:
    shard = "buckets/p512/shard-000000.tar"
    members = []
    for key, caption in (("k1", "a red kite over the sea"), ("k2", "blue sky at dawn")):
        members += [
            (f"{key}.png", PNG),
            (f"{key}.txt", BOM + caption.encode() + b"\n"),
            (f"{key}.json", b'{"w": 1, "h": 1}'),
        ]
    (root / shard).parent.mkdir(parents=True)
    write_tar(root / shard, members)
    (root / "manifest.json").write_text(json.dumps({"format": "bucketed_shards_v1", "buckets": [{"shards": [shard]}]}))
    return {"kind": "bucketed_webdataset", "path": str(root)}


BOM_SOURCES = {"text": text_source, "openprompts CSV": openprompts_csv, "kaggle_sd2 CSV": kaggle_csv}
BOM_SOURCES["webdataset caption"] = webdataset


@pytest.mark.parametrize("case", sorted(BOM_SOURCES))
def test_a_byte_order_mark_is_no_character_of_the_first_prompt(tmp_path, monkeypatch, case):
    from scripts.ingest import ingest
    from scripts.lib.readers import SourceConfig

    monkeypatch.chdir(tmp_path)
    (tmp_path / "src").mkdir()
    config = BOM_SOURCES[case](tmp_path / "src")
    ingest("s", SourceConfig(**config, on_error="fail"), tmp_path / "out.parquet")
    prompts = sorted(pq.read_table(tmp_path / "out.parquet").column("prompt").to_pylist())
    assert prompts == ["a red kite over the sea", "blue sky at dawn"]


def test_a_byte_order_mark_is_no_character_of_a_synthesize_example(tmp_path, monkeypatch):
    from scripts.lib.params import ExampleSource
    from scripts.synthesize import read_example_pool

    monkeypatch.chdir(tmp_path)
    (tmp_path / "e.txt").write_bytes(BOM + b"a red kite\nblue sky\n")
    assert read_example_pool(ExampleSource(path="e.txt", count=1)) == ["a red kite", "blue sky"]


# ---------------------------------------------------------------- 4. synthesize's parquet examples

EXAMPLE_COLUMNS = {  # case: (the column, what the line says of row 1)
    "bytes": (pa.array([b"a cat", b"a dog"]), "holds bytes"),
    "a list": (pa.array([["a", "b"], ["c"]]), "holds a list"),
    "numbers": (pa.array([1.5, 2.0]), "holds float 1.5"),
    "a struct": (pa.array([{"a": 1}, {"a": 2}]), "holds a mapping"),
}


@pytest.mark.parametrize("case", sorted(EXAMPLE_COLUMNS))
def test_synthesize_examples_from_parquet_are_text(tmp_path, monkeypatch, case):
    from scripts.lib.params import ExampleSource
    from scripts.synthesize import read_example_pool

    column, said = EXAMPLE_COLUMNS[case]
    monkeypatch.chdir(tmp_path)
    pq.write_table(pa.table({"text": column}), tmp_path / "e.parquet")
    with pytest.raises(DataError) as caught:
        read_example_pool(ExampleSource(path="e.parquet", column="text", count=1))
    assert str(caught.value).startswith("e.parquet: row 1: column 'text' ") and said in str(caught.value)


# ---------------------------------------------------------------- 5. plots and diff read every row as it is

ROWS = {"id": ["a", "b"], "source": ["s", "s"], "split": ["train", "validation"], "text": ["abcdefghij", "x"]}


@pytest.mark.parametrize(
    "case, column, values, said",
    [
        ("a list caption", "text", [["a"], ["x"]], "row 1: column 'text' holds a list"),
        ("bytes as the source", "source", [b"s", "s"], "row 1: column 'source' holds bytes"),
        ("a null source", "source", [None, "s"], "row 1: column 'source' is missing"),
    ],
)
def test_plots_refuses_a_release_row_it_cannot_plot(tmp_path, monkeypatch, case, column, values, said):
    from scripts.plots import read_release_rows

    monkeypatch.chdir(tmp_path)
    (tmp_path / "r").mkdir()
    pq.write_table(pa.table({**ROWS, column: values, "image": [None, None]}), tmp_path / "r" / "rows.parquet")
    with pytest.raises(DataError) as caught:
        read_release_rows(Path("."), ["r"])
    assert str(caught.value).startswith(f"r/rows.parquet: {said}")


def test_plots_counts_a_missing_caption_as_no_characters(tmp_path, monkeypatch):
    from scripts.plots import prompt_lengths, read_release_rows

    monkeypatch.chdir(tmp_path)
    (tmp_path / "r").mkdir()
    table = pa.table({**ROWS, "text": pa.array([None, "x"], pa.string()), "image": [None, None]})
    pq.write_table(table, tmp_path / "r" / "rows.parquet")
    lengths = prompt_lengths(read_release_rows(Path("."), ["r"]), 1)
    train = lengths[(lengths["split"] == "train") & (lengths["rows"] > 0)]
    assert train["chars"].tolist() == [0]  # 'nan' made it 3


@pytest.mark.parametrize("split", ["test", "Train", "val"])
def test_diff_refuses_a_row_of_no_split_it_compares(tmp_path, monkeypatch, split):
    import fsspec
    from fsspec.implementations.dirfs import DirFileSystem

    from scripts.tools.diff import read_snapshot

    monkeypatch.chdir(tmp_path)
    folder = tmp_path / "data" / "releases" / "r1"
    folder.mkdir(parents=True)
    pd.DataFrame({**ROWS, "split": ["train", split]}).assign(image=None).to_parquet(folder / "rows.parquet")
    with pytest.raises(DataError) as caught:
        read_snapshot(DirFileSystem(str(tmp_path), fsspec.filesystem("file")), "workspace", "r1")
    assert str(caught.value) == (
        f"workspace:data/releases/r1/rows.parquet: row 2: split '{split}' is not one of train, validation"
    )
