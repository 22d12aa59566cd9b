"""Nothing a user owns is lost: a command never replaces or deletes what it did not write, replaces
what it did write whole on the next run, cleans up after a killed run, and refuses a second concurrent
run of the same output. Each case runs the real command in-process in a workspace of its own; a refused
one exits 2 with ONE `error:` line and leaves the workspace byte for byte as it was.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from helpers.workspace import RAW, error_line, leftovers, make_splits, snapshot, split_rows, write_params
from scripts.cli import main
from scripts.ingest import ingest
from scripts.lib.errors import DataError
from scripts.lib.io import MARKER, OWNER_XATTR, output_lock
from scripts.lib.readers import SourceConfig
from scripts.lib.tables import write_parquet


def cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def ws(tmp_path, monkeypatch) -> Path:
    """A workspace with the repository's params.yaml, as the current folder."""
    write_params(tmp_path)
    monkeypatch.chdir(tmp_path)
    return tmp_path


# ---------------------------------------------------------------- data loss: refused, nothing touched


def _shards(root: Path) -> None:
    (root / "SHARDS").mkdir()
    shutil.copy(RAW / "dalle3" / "data-000000.tar", root / "SHARDS")


def _captions(root: Path) -> None:
    (root / "data" / "captions").mkdir(parents=True)
    write_parquet(split_rows(20, "chatgpt", root / "img.png"), root / "data" / "captions" / "chatgpt.parquet")


def _user_file(path: str, text: str = "mine, not the pipeline's\n"):
    def make(root: Path) -> None:
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text(text, encoding="utf-8")

    return make


def _raw_with_user_source(root: Path) -> None:
    shutil.copytree(RAW, root / "data" / "raw")
    _user_file("data/raw/mine/prompts.txt")(root)


def _raw(root: Path) -> None:
    shutil.copytree(RAW, root / "data" / "raw")


def _prompts(root: Path) -> None:  # data/prompts/chatgpt.parquet, as ingest@chatgpt writes it
    _raw(root)
    ingest("chatgpt", SourceConfig(kind="text", path=str(root / "data/raw/chatgpt")), root / "prompts.parquet")


def _user_dataset(root: Path) -> None:
    make_splits(root)
    for split in ("train", "validation"):
        _user_file(f"mine/{split}/photo.png")(root)


REFUSED = {
    # name: (setup steps, argv, substrings of the one error line)
    "simpletuner_txt_dir_is_the_shards": (
        [_shards],
        ["simpletuner", "SHARDS", "st.parquet", "--txt-dir", "SHARDS"],
        ["SHARDS"],
    ),
    "simpletuner_txt_dir_is_the_working_folder": (
        [_shards, _user_file("notes.txt")],
        ["simpletuner", "SHARDS", "st.parquet", "--txt-dir", "."],
        ["SHARDS"],
    ),
    "simpletuner_txt_dir_is_a_user_folder": (
        [_shards, _user_file("notes/todo.md")],
        ["simpletuner", "SHARDS", "st.parquet", "--txt-dir", "notes"],
        ["notes", "todo.md"],
    ),
    "split_into_the_parent_of_its_folder": (
        [_captions, make_splits],
        ["split", "chatgpt", "data/captions/chatgpt.parquet", "data/splits"],
        ["data/splits", "diffusiondb"],
    ),
    "sample_data_over_a_user_source": (
        [_raw_with_user_source],
        ["sample-data", "data/raw"],
        ["data/raw", "mine/prompts.txt"],
    ),
    "release_into_the_releases_folder": (
        [make_splits, _user_file("data/releases/v1/README.md")],
        ["release", "v2", "data/splits", "data/releases"],
        ["data/releases", "'v1'"],
    ),
    "release_over_a_user_dataset": (
        [_user_dataset],
        ["release", "v2", "data/splits", "mine"],
        ["mine/train", "photo.png"],
    ),
    "release_into_its_input": ([make_splits], ["release", "v2", "data/splits", "data/splits"], ["input"]),
    "release_into_the_working_folder": (
        [make_splits, _user_file("notes.txt")],
        ["release", "v2", "data/splits", "."],
        ["input"],
    ),
    "file_output_is_a_folder": (
        [_user_file("in.txt", "a red fox in the snow\n"), _user_file("out/keep.txt")],
        ["clean-text", "in.txt", "out"],
        ["out", "is a folder"],
    ),
    "file_output_under_a_file": (
        [_user_file("in.txt", "a red fox in the snow\n"), _user_file("afile")],
        ["clean-text", "in.txt", "afile/out.jsonl"],
        ["afile", "is a file"],
    ),
    # a user's file named as one of a command's single-file outputs: nothing written, not even its siblings
    "clean_text_over_a_user_file": (
        [_user_file("in.txt", "a red fox in the snow\n"), _user_file("notes.jsonl")],
        ["clean-text", "in.txt", "notes.jsonl"],
        ["notes.jsonl", "cannot prove"],
    ),
    "ingest_over_a_user_parquet": (
        [_raw, _user_file("mine.parquet", "my own table")],
        ["ingest", "chatgpt", "mine.parquet"],
        ["mine.parquet", "cannot prove"],
    ),
    "ingest_beside_a_user_report": (
        [_raw, _user_file("mine.report.json", '{"my": "report"}')],
        ["ingest", "chatgpt", "mine.parquet"],
        ["mine.report.json", "cannot prove"],
    ),
    "dedup_text_over_a_user_file": (
        [_user_file("in.txt", "a red fox\na red fox\n"), _user_file("flags.jsonl")],
        ["dedup-text", "in.txt", "flags.jsonl"],
        ["flags.jsonl", "cannot prove"],
    ),
    "clean_beside_a_user_dropped_table": (
        [_prompts, _user_file("mine.dropped.parquet", "rows I set aside")],
        ["clean", "chatgpt", "prompts.parquet", "mine.parquet"],
        ["mine.dropped.parquet", "cannot prove"],
    ),
    "dedup_beside_a_user_preview": (
        [_prompts, _user_file("mine.preview.html", "<p>my page</p>")],
        ["dedup", "chatgpt", "prompts.parquet", "mine.parquet"],
        ["mine.preview.html", "cannot prove"],
    ),
    "summary_over_a_user_json": (
        [make_splits, _user_file("data/releases/.keep", ""), _user_file("mine.json", '{"mine": 1}')],
        ["summary", "data/releases", "mine.json"],
        ["mine.json", "cannot prove"],
    ),
    "folder_output_is_a_file": (
        [_captions, _user_file("data/splits/chatgpt")],
        ["split", "chatgpt", "data/captions/chatgpt.parquet", "data/splits/chatgpt"],
        ["data/splits/chatgpt", "not a folder"],
    ),
}


@pytest.mark.parametrize("case", REFUSED)
def test_a_command_never_replaces_what_it_did_not_write(ws, capsys, case):
    steps, argv, needles = REFUSED[case]
    for step in steps:
        step(ws)
    before = snapshot(ws)
    code, _, err = cli(capsys, *argv)
    line = error_line(err)
    assert code == 2 and line.startswith("error: "), err
    for needle in needles:
        assert needle in line
    assert snapshot(ws) == before, "the workspace changed"


def test_outputs_it_wrote_are_replaced_on_the_next_run(ws, capsys):
    """The marker makes re-runs work: a folder output is replaced whole, even with other contents."""
    _captions(ws)
    for _ in range(2):
        assert cli(capsys, "split", "chatgpt", "data/captions/chatgpt.parquet", "data/splits/chatgpt")[0] == 0
    assert sorted(p.name for p in (ws / "data/splits/chatgpt").iterdir()) == [
        MARKER,
        "train.parquet",
        "validation.parquet",
    ]
    _shards(ws)
    assert cli(capsys, "simpletuner", "SHARDS", "st.parquet", "--txt-dir", "txt")[0] == 0
    (ws / "txt" / "old-caption.txt").write_text("from an earlier compile", encoding="utf-8")
    assert cli(capsys, "simpletuner", "SHARDS", "st.parquet", "--txt-dir", "txt")[0] == 0
    assert not (ws / "txt" / "old-caption.txt").exists() and (ws / "txt" / MARKER).is_file()
    make_splits(ws)
    for _ in range(2):
        code, _, err = cli(capsys, "release", "v2", "data/splits", "data/releases/v2")
        assert code == 0, err
    assert (ws / "data/releases/v2/train" / MARKER).is_file()
    assert leftovers(ws) == [] and not list(ws.rglob("*.tmp-lock"))


def test_a_file_output_is_replaced_only_when_it_is_provably_ours(ws, capsys):
    """A file a command wrote carries its mark (an extended attribute, not bytes); DVC's .gitignore
    (for the file or a folder above it) or an unmodified git checkout prove it too. Nothing else does."""
    _user_file("in.txt", "a red fox in the snow\n")(ws)
    clean_text = ("clean-text", "in.txt")
    assert cli(capsys, *clean_text, "out.jsonl")[0] == 0
    assert cli(capsys, *clean_text, "out.jsonl")[0] == 0  # its own mark
    os.removexattr(ws / "out.jsonl", OWNER_XATTR)  # a file with our bytes but not our mark: refused
    code, _, err = cli(capsys, *clean_text, "out.jsonl")
    assert code == 2 and "out.jsonl: exists and this command cannot prove it wrote it" in error_line(err)

    (ws / ".gitignore").write_text("/out.jsonl\n", encoding="utf-8")  # as `dvc repro` lists its outputs
    assert cli(capsys, *clean_text, "out.jsonl")[0] == 0
    _user_file("tracked/deep/out.jsonl", "checked out by dvc\n")(ws)
    (ws / "tracked" / "deep" / ".gitignore").write_text("/other.jsonl\n", encoding="utf-8")
    code, _, err = cli(capsys, *clean_text, "tracked/deep/out.jsonl")
    assert code == 2 and "cannot prove" in error_line(err)
    (ws / ".gitignore").write_text("/out.jsonl\n/tracked\n", encoding="utf-8")  # a folder output above it
    assert cli(capsys, *clean_text, "tracked/deep/out.jsonl")[0] == 0

    _user_file("committed.jsonl", "in git\n")(ws)
    for command in (
        ["init", "-q"],
        ["add", "committed.jsonl"],
        ["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "c"],
    ):
        subprocess.run(["git", *command], cwd=ws, check=True)
    _user_file("committed.jsonl", "edited, not committed\n")(ws)
    code, _, err = cli(capsys, *clean_text, "committed.jsonl")
    assert code == 2 and "committed.jsonl" in error_line(err)
    subprocess.run(["git", "checkout", "-q", "committed.jsonl"], cwd=ws, check=True)
    assert cli(capsys, *clean_text, "committed.jsonl")[0] == 0  # git brings it back: nothing lost
    assert (ws / "committed.jsonl").read_text(encoding="utf-8").startswith('{"text": "a red fox')


def test_sample_data_rewrites_the_committed_data_raw_without_a_marker(ws, capsys):
    """data/raw is committed to git without a marker: rewriting it is allowed (every file is rewritten)
    and adds nothing (tests/test_sample_data.py compares it byte for byte)."""
    shutil.copytree(RAW, ws / "data" / "raw")
    before = snapshot(ws / "data" / "raw")
    assert cli(capsys, "sample-data", "data/raw")[0] == 0
    assert snapshot(ws / "data" / "raw") == before


# ---------------------------------------------------------------- temp files, locks, concurrent runs


def test_a_killed_runs_temp_files_are_removed_by_the_next_run(ws, capsys):
    _user_file("in.txt", "a red fox in the snow\n")(ws)
    for name in (".out.jsonl.tmp-new", ".out.jsonl.tmp-lock"):
        (ws / name).write_text("half", encoding="utf-8")
    make_splits(ws)
    (ws / "data/releases/.v2.staging-k1ll3d/train").mkdir(parents=True)
    (ws / "data/splits/.chatgpt.tmp-old").mkdir()
    _captions(ws)
    assert cli(capsys, "clean-text", "in.txt", "out.jsonl")[0] == 0
    assert cli(capsys, "release", "v2", "data/splits", "data/releases/v2")[0] == 0
    assert cli(capsys, "split", "chatgpt", "data/captions/chatgpt.parquet", "data/splits/chatgpt")[0] == 0
    assert leftovers(ws) == []


def test_a_second_run_of_the_same_output_is_refused_while_one_runs(ws, capsys):
    _user_file("in.txt", "a red fox in the snow\n")(ws)
    with output_lock(ws / "out.jsonl"):  # held as another process would (flock: per open file)
        code, _, err = cli(capsys, "clean-text", "in.txt", "out.jsonl")
    assert code == 2 and "another run is writing" in error_line(err)
    assert not (ws / "out.jsonl").exists()
    assert cli(capsys, "clean-text", "in.txt", "out.jsonl")[0] == 0  # the lock went with its holder


def test_a_failed_run_keeps_the_previous_output_intact(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "p.txt").write_text("a fine prompt\n")
    out = tmp_path / "bad.parquet"
    ingest("bad", SourceConfig(kind="text", path=str(src)), out)
    before = out.read_bytes(), (tmp_path / "bad.report.json").read_bytes()
    (src / "p.txt").write_bytes(b"a fine prompt\nbad \x00 prompt\n")
    with pytest.raises(DataError, match="line 2"):
        ingest("bad", SourceConfig(kind="text", path=str(src)), out)
    assert (out.read_bytes(), (tmp_path / "bad.report.json").read_bytes()) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.parquet", "bad.report.json", "src"]
