"""Nothing a user owns is lost: a command never replaces or deletes what it did not write, replaces
what it did write whole on the next run, cleans up after a killed run, and refuses a second concurrent
run of the same output. Each case runs the real command in-process in a workspace of its own; a refused
one exits 2 with ONE `error:` line and leaves the workspace byte for byte as it was.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from helpers.workspace import RAW, error_line, leftovers, make_splits, snapshot, split_rows, write_params
from scripts.cli import main
from scripts.ingest import ingest
from scripts.lib.errors import DataError
from scripts.lib.io import atomic_path
from scripts.lib.marks import MARKER, OWNER_XATTR
from scripts.lib.readers import SourceConfig
from scripts.lib.tables import write_parquet
from scripts.lib.temps import output_lock


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


def lock_of(path: str, md5: str, cmd: str = "python -m scripts clean-text in.txt out.jsonl") -> str:
    """A dvc.lock recording one output of a stage running `cmd` (as `dvc repro` writes it)."""
    return (
        f"schema: '2.0'\nstages:\n  c:\n    cmd: {cmd}\n    outs:\n    - path: {path}\n      hash: md5\n"
        f"      md5: {md5}\n"
    )


def cache_listing(root: Path, files: dict[str, bytes]) -> str:
    """Put a folder output's .dir listing (relpath, md5 of each file) in root's DVC cache, as `dvc commit`
    does; returns the folder's md5 (what dvc.lock records)."""
    if not (root / ".dvc" / "config").exists():  # a repository as `dvc init --no-scm` makes it
        (root / ".dvc").mkdir(exist_ok=True)
        (root / ".dvc" / "config").write_text("[core]\n    no_scm = True\n", encoding="utf-8")
    entries = [{"md5": hashlib.md5(data).hexdigest(), "relpath": rel} for rel, data in sorted(files.items())]
    text = json.dumps(entries, separators=(", ", ": "))
    name = hashlib.md5(text.encode()).hexdigest()
    (root / ".dvc" / "cache" / "files" / "md5" / name[:2]).mkdir(parents=True, exist_ok=True)
    (root / ".dvc" / "cache" / "files" / "md5" / name[:2] / f"{name[2:]}.dir").write_text(text, encoding="utf-8")
    return name + ".dir"


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


def _ours(path: str, text: str = '{"text": "a red fox in the snow", "reason": null}\n'):
    """A file a command wrote (atomic_path marks it), as the user finds it after a run."""

    def make(root: Path) -> None:
        with atomic_path(root / path) as tmp:
            tmp.write_text(text, encoding="utf-8")

    return make


def _copied_with_mark(ours: str, mine: str, extra: str = "my own line\n"):
    """The user copies one of our outputs keeping its attributes (cp --preserve=xattr, rsync -X: copy2
    copies them too), then adds to the copy: the mark came along, but the file is the user's."""

    def make(root: Path) -> None:
        _ours(ours)(root)
        shutil.copy2(root / ours, root / mine)
        assert os.getxattr(root / mine, OWNER_XATTR)
        with open(root / mine, "a", encoding="utf-8") as f:
            f.write(extra)

    return make


def _edited_in_place(path: str, same_size: bool = False):
    """One of our outputs, then edited by the user in place (same inode, so the mark stays on it)."""

    def make(root: Path) -> None:
        _ours(path)(root)
        if same_size:
            with open(root / path, "r+b") as f:  # a script patching bytes: same size, same inode
                f.write(b"{" + b"X" * 8)
        else:
            with open(root / path, "a", encoding="utf-8") as f:
                f.write("a line I added by hand\n")

    return make


def _gitignored(line: str):
    """A .gitignore line such as DVC writes (`/name`), written by a user keeping a private file out of git."""

    def make(root: Path) -> None:
        with open(root / ".gitignore", "a", encoding="utf-8") as f:
            f.write(f"{line}\n")

    return make


def _dvc_added(path: str, tracked: str | None = None):
    """`dvc add TRACKED` (default: the file itself) of a user's file: DVC's .gitignore line and .dvc file."""

    def make(root: Path) -> None:
        _user_file(path, "the user's own data\n")(root)
        target = Path(tracked or path)
        (root / target.parent / ".gitignore").write_text(f"/{target.name}\n", encoding="utf-8")
        (root / target.parent / f"{target.name}.dvc").write_text(
            f"outs:\n- md5: 0\n  path: {target.name}\n", encoding="utf-8"
        )

    return make


def _ingested(name: str):  # ingest@chatgpt's table and report, under another name
    def make(root: Path) -> None:
        _raw(root)
        ingest("chatgpt", SourceConfig(kind="text", path=str(root / "data/raw/chatgpt")), root / name)

    return make


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
    # the mark proves only the file it was put on, as it was written: not a copy, not an edit
    "clean_text_over_a_copy_that_kept_the_mark": (
        [_user_file("in.txt", "a red fox in the snow\n"), _copied_with_mark("out.jsonl", "notes.jsonl")],
        ["clean-text", "in.txt", "notes.jsonl"],
        ["notes.jsonl", "cannot prove"],
    ),
    "ingest_beside_a_report_copied_with_the_mark": (
        [_raw, _copied_with_mark("data/old.report.json", "mine.report.json", "")],
        ["ingest", "chatgpt", "mine.parquet"],
        ["mine.report.json", "cannot prove"],
    ),
    "dedup_text_over_its_output_appended_to": (
        [_user_file("in.txt", "a red fox\na red fox\n"), _edited_in_place("flags.jsonl")],
        ["dedup-text", "in.txt", "flags.jsonl"],
        ["flags.jsonl", "cannot prove"],
    ),
    "summary_over_its_output_patched_same_size": (
        [make_splits, _user_file("data/releases/.keep", ""), _edited_in_place("mine.json", same_size=True)],
        ["summary", "data/releases", "mine.json"],
        ["mine.json", "cannot prove"],
    ),
    # a .gitignore line is a name: DVC writes one, so does a user hiding a private file from git
    "clean_text_over_a_gitignored_private_file": (
        [_user_file("in.txt", "a red fox in the snow\n"), _user_file("notes.jsonl"), _gitignored("/notes.jsonl")],
        ["clean-text", "in.txt", "notes.jsonl"],
        ["notes.jsonl", "cannot prove"],
    ),
    "dedup_text_in_a_gitignored_folder": (
        [_user_file("in.txt", "a red fox\n"), _user_file("private/flags.jsonl"), _gitignored("/private")],
        ["dedup-text", "in.txt", "private/flags.jsonl"],
        ["private/flags.jsonl", "cannot prove"],
    ),
    "ingest_over_a_gitignored_table": (
        [_raw, _user_file("mine.parquet", "my own table"), _gitignored("/mine.parquet")],
        ["ingest", "chatgpt", "mine.parquet"],
        ["mine.parquet", "cannot prove"],
    ),
    # what `dvc add` tracks is the user's data (a source), not a stage's output: DVC's .gitignore and .dvc file
    "clean_text_over_a_dvc_added_file": (
        [_user_file("in.txt", "a red fox\n"), _dvc_added("data/sources/big.jsonl")],
        ["clean-text", "in.txt", "data/sources/big.jsonl"],
        ["data/sources/big.jsonl", "cannot prove"],
    ),
    "ingest_over_a_dvc_added_table": (
        [_raw, _dvc_added("data/sources/mine.parquet")],
        ["ingest", "chatgpt", "data/sources/mine.parquet"],
        ["data/sources/mine.parquet", "cannot prove"],
    ),
    "split_into_a_dvc_added_folder": (
        [_captions, _dvc_added("data/sources/mine/train.parquet", "data/sources/mine")],
        ["split", "chatgpt", "data/captions/chatgpt.parquet", "data/sources/mine"],
        ["data/sources/mine", "train.parquet"],
    ),
    # an output that is the command's input, or lies in its input folder: it would replace what it reads
    "clean_into_its_input": (
        [_ingested("p.parquet")],
        ["clean", "chatgpt", "p.parquet", "p.parquet"],
        ["p.parquet", "is the input"],
    ),
    "clean_whose_dropped_table_is_its_input": (
        [_ingested("p.dropped.parquet")],
        ["clean", "chatgpt", "p.dropped.parquet", "p.parquet"],
        ["p.dropped.parquet", "is the input"],
    ),
    "clean_text_into_its_input": (
        [_ours("out.jsonl", "a red fox in the snow\n")],
        ["clean-text", "out.jsonl", "out.jsonl"],
        ["out.jsonl", "is the input"],
    ),
    "dedup_text_into_its_input": (
        [_ours("flags.jsonl", "a red fox\na red fox\n")],
        ["dedup-text", "flags.jsonl", "./flags.jsonl"],
        ["flags.jsonl", "is the input"],
    ),
    "ingest_into_its_source_folder": (
        [_raw],
        ["ingest", "chatgpt", "data/raw/chatgpt/x.parquet"],
        ["data/raw/chatgpt/x.parquet", "inside the input"],
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
    """The marker makes re-runs work: a folder output is replaced whole while it holds what we wrote."""
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
    (ws / "txt" / "my-caption.txt").write_text("added by hand", encoding="utf-8")  # the folder is not ours now
    code, _, err = cli(capsys, "simpletuner", "SHARDS", "st.parquet", "--txt-dir", "txt")
    assert code == 2 and "txt" in error_line(err)
    assert (ws / "txt" / "my-caption.txt").read_text(encoding="utf-8") == "added by hand"
    (ws / "txt" / "my-caption.txt").unlink()  # as we wrote it again: replaced whole
    assert cli(capsys, "simpletuner", "SHARDS", "st.parquet", "--txt-dir", "txt")[0] == 0
    assert (ws / "txt" / MARKER).is_file()
    make_splits(ws)
    for _ in range(2):
        code, _, err = cli(capsys, "release", "v2", "data/splits", "data/releases/v2")
        assert code == 0, err
    assert (ws / "data/releases/v2/train" / MARKER).is_file()
    assert leftovers(ws) == [] and not list(ws.rglob("*.tmp-lock"))


def test_a_file_output_is_replaced_only_when_it_is_provably_ours(ws, capsys):
    """A file a command wrote carries its mark (an extended attribute, not bytes); DVC's lock (for the
    file or a folder above it) proves it too. Nothing else does: not a .gitignore line, not git."""
    _user_file("in.txt", "a red fox in the snow\n")(ws)
    clean_text = ("clean-text", "in.txt")
    assert cli(capsys, *clean_text, "out.jsonl")[0] == 0
    assert cli(capsys, *clean_text, "out.jsonl")[0] == 0  # its own mark
    os.removexattr(ws / "out.jsonl", OWNER_XATTR)  # a file with our bytes but not our mark: refused
    code, _, err = cli(capsys, *clean_text, "out.jsonl")
    assert code == 2 and "out.jsonl: exists and this command cannot prove it wrote it" in error_line(err)

    (ws / ".gitignore").write_text("/out.jsonl\n", encoding="utf-8")  # a name, as DVC or a user writes it
    code, _, err = cli(capsys, *clean_text, "out.jsonl")
    assert code == 2 and "cannot prove" in error_line(err)
    out_md5 = hashlib.md5((ws / "out.jsonl").read_bytes()).hexdigest()
    (ws / "dvc.lock").write_text(lock_of("./out.jsonl", "0" * 32), encoding="utf-8")  # edited since its checkout
    code, _, err = cli(capsys, *clean_text, "out.jsonl")
    assert code == 2 and "cannot prove" in error_line(err)
    (ws / "dvc.lock").write_text(lock_of("./out.jsonl", out_md5, "python -m scripts clean x"), encoding="utf-8")
    code, _, err = cli(capsys, *clean_text, "out.jsonl")  # the bytes, but another command's output
    assert code == 2 and "cannot prove" in error_line(err)
    (ws / "dvc.lock").write_text(lock_of("./out.jsonl", out_md5), encoding="utf-8")  # the bytes DVC's cache holds
    assert cli(capsys, *clean_text, "out.jsonl")[0] == 0
    _user_file("tracked/deep/out.jsonl", "checked out by dvc\n")(ws)
    (ws / "tracked" / "dvc.lock").write_text(lock_of("deep/other.jsonl", "0" * 32), encoding="utf-8")
    code, _, err = cli(capsys, *clean_text, "tracked/deep/out.jsonl")
    assert code == 2 and "cannot prove" in error_line(err)
    (ws / "tracked" / "dvc.lock").write_text(lock_of("deep", "a" * 32 + ".dir"), encoding="utf-8")
    code, _, err = cli(capsys, *clean_text, "tracked/deep/out.jsonl")  # a folder output, but no listing to compare
    assert code == 2 and "cannot prove" in error_line(err)
    dir_md5 = cache_listing(ws, {"out.jsonl": b"checked out by dvc\n"})
    (ws / "tracked" / "dvc.lock").write_text(lock_of("deep", dir_md5), encoding="utf-8")
    assert cli(capsys, *clean_text, "tracked/deep/out.jsonl")[0] == 0  # in the listing of a folder output above it
    code, _, err = cli(capsys, *clean_text, "tracked/deep/out.jsonl")  # now our bytes, not the listing's: the mark
    assert code == 0, err
    os.removexattr(ws / "tracked/deep/out.jsonl", OWNER_XATTR)
    code, _, err = cli(capsys, *clean_text, "tracked/deep/out.jsonl")  # neither the listing's bytes nor marked
    assert code == 2 and "cannot prove" in error_line(err)

    os.link(ws / "out.jsonl", ws / "snapshot.jsonl")  # a hard-link snapshot of our output, then a run into it
    kept = (ws / "out.jsonl").read_bytes()
    _user_file("in.txt", "a grey wolf at night\n")(ws)
    assert cli(capsys, *clean_text, "snapshot.jsonl")[0] == 0  # ours (the same inode, unchanged): replaced,
    assert (ws / "out.jsonl").read_bytes() == kept  # by a rename: the other name keeps its bytes
    _user_file("in.txt", "a red fox in the snow\n")(ws)

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
    code, _, err = cli(capsys, *clean_text, "committed.jsonl")  # unmodified in git: still not ours (dvc.yaml is)
    assert code == 2 and "cannot prove" in error_line(err)
    assert (ws / "committed.jsonl").read_text(encoding="utf-8") == "in git\n"


def _added(folder: Path) -> None:
    (folder / "notes.txt").write_text("my notes on this split\n", encoding="utf-8")


def _appended(folder: Path) -> None:
    with (folder / "train.parquet").open("ab") as f:
        f.write(b"my edit")


def _swapped(folder: Path) -> None:
    (folder / "validation.parquet").unlink()
    (folder / "validation.parquet").write_bytes(b"my own validation rows")


def _nested(folder: Path) -> None:
    (folder / "mine").mkdir()
    (folder / "mine" / "labels.csv").write_text("id,label\n", encoding="utf-8")


@pytest.mark.parametrize("change", [_added, _appended, _swapped, _nested], ids=lambda f: f.__name__.strip("_"))
def test_a_file_a_user_put_in_a_folder_we_wrote_keeps_the_folder(ws, capsys, change):
    """The folder marker's mark holds the identity of every file the command wrote beside it: a file
    added, edited, swapped, or a subfolder made since, and the folder is the user's: refused, untouched."""
    _captions(ws)
    split = ("split", "chatgpt", "data/captions/chatgpt.parquet", "data/splits/chatgpt")
    assert cli(capsys, *split)[0] == 0
    folder = ws / "data/splits/chatgpt"
    change(folder)
    mine = snapshot(folder)
    code, _, err = cli(capsys, *split)
    assert code == 2 and "data/splits/chatgpt" in error_line(err)
    assert snapshot(folder) == mine and leftovers(ws) == []


@pytest.mark.parametrize(
    "argv",
    [
        ("clean-text", "in.txt", "out/"),
        ("dedup-text", "in.txt", "flags/"),
        ("clean-text", "in.txt", "deep/out.jsonl/"),
        ("clean-text", "in.txt", "./out//"),
    ],
    ids=["clean-text", "dedup-text", "nested", "dot-double-slash"],
)
def test_a_file_output_spelled_as_a_folder_is_refused(ws, capsys, argv):
    """`out/` names a folder; the argument parser hands it over as `out`, and the command wrote the file
    `out`. Refused in one line, nothing written."""
    _user_file("in.txt", "a red fox in the snow\n")(ws)
    before = snapshot(ws)
    code, _, err = cli(capsys, *argv)
    assert code == 2 and "names a folder (it ends with /)" in error_line(err)
    assert snapshot(ws) == before


def test_a_checked_out_output_folder_is_replaced_only_while_it_holds_the_locks_bytes(ws, capsys):
    """After `dvc checkout` an output folder's files carry no marks: the lock's .dir listing in DVC's
    cache proves the folder ours while every file in it is listed with those bytes. A file a user added,
    or a file edited since, is the user's: the run is refused and both stay."""
    _captions(ws)
    split = ("split", "chatgpt", "data/captions/chatgpt.parquet", "data/splits/chatgpt")
    assert cli(capsys, *split)[0] == 0
    folder = ws / "data/splits/chatgpt"
    files = {p.name: p.read_bytes() for p in folder.iterdir()}

    def checked_out() -> None:  # DVC's copies: the same bytes, no extended attributes
        for name in files:
            with contextlib.suppress(OSError):
                os.removexattr(folder / name, OWNER_XATTR)

    checked_out()
    (ws / "dvc.lock").write_text(lock_of("data/splits/chatgpt", cache_listing(ws, files)), encoding="utf-8")
    assert cli(capsys, *split)[0] == 0
    for user_change in ("notes.txt", "train.parquet"):
        checked_out()
        (folder / user_change).write_bytes(files.get(user_change, b"") + b"the user's\n")
        mine = snapshot(folder)
        code, _, err = cli(capsys, *split)
        assert code == 2 and "data/splits/chatgpt" in error_line(err), user_change
        assert snapshot(folder) == mine


def test_sample_data_rewrites_the_committed_data_raw_without_a_marker(ws, capsys):
    """data/raw is committed to git with its marker but not the marker's mark (git keeps no extended
    attribute): rewriting it is allowed (every file is rewritten with the same bytes) and adds nothing
    (tests/test_sample_data.py compares it byte for byte)."""
    shutil.copytree(RAW, ws / "data" / "raw")
    before = snapshot(ws / "data" / "raw")
    assert cli(capsys, "sample-data", "data/raw")[0] == 0
    assert snapshot(ws / "data" / "raw") == before


# ---------------------------------------------------------------- temp files, locks, concurrent runs


def test_a_killed_runs_temp_files_are_removed_by_the_next_run(ws, capsys):
    """Leftovers as a killed run leaves them: each temp tagged by the run that made it (io.mark_temp; a
    user's file under such a name is refused: test_a_file_named_like_a_temp_of_ours_is_refused_not_deleted)."""
    from scripts.lib.temps import mark_temp

    _user_file("in.txt", "a red fox in the snow\n")(ws)
    for name in (".out.jsonl.tmp-new", ".out.jsonl.tmp-lock"):
        (ws / name).write_text("half", encoding="utf-8")
    for name in (".out.jsonl.tmp-new", ".out.jsonl.tmp-lock"):
        mark_temp(ws / name)  # as the killed run tagged them (the lock: before it had its name)
    make_splits(ws)
    (ws / "data/releases/.v2.staging-k1ll3d/train").mkdir(parents=True)
    (ws / "data/splits/.chatgpt.tmp-old").mkdir()
    for temp in ("data/releases/.v2.staging-k1ll3d", "data/splits/.chatgpt.tmp-old"):
        mark_temp(ws / temp)
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


@pytest.mark.parametrize("spelling", ["lnk/../out.jsonl", "lnk/../b/../out.jsonl", "./lnk/./../out.jsonl"])
def test_an_output_named_through_a_linked_folder_and_dotdot_shares_its_lock(ws, capsys, spelling):
    """`lnk/../out.jsonl` with lnk -> a/b is a/out.jsonl to the kernel; abspath read it as ./out.jsonl,
    so the lock (and temp file) went to another folder and a second run wrote it beside the first."""
    _user_file("in.txt", "a red fox in the snow\n")(ws)
    (ws / "a" / "b").mkdir(parents=True)
    (ws / "lnk").symlink_to("a/b")
    with output_lock(ws / "a" / "out.jsonl"):
        code, _, err = cli(capsys, "clean-text", "in.txt", spelling)
    assert code == 2 and "another run is writing" in error_line(err)
    assert not (ws / "a" / "out.jsonl").exists() and not (ws / "out.jsonl").exists()
    assert cli(capsys, "clean-text", "in.txt", spelling)[0] == 0
    assert (ws / "a" / "out.jsonl").is_file() and leftovers(ws) == [] and not list(ws.rglob("*.tmp-lock"))


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
