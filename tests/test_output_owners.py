"""The fifth hostile round's ownership breaks, one table each (every row failed before its fix): an output is
the command's that wrote it (`params-doc` pointed at `clean`'s table replaced it: the mark said only "ours"),
and a user's empty folder inside an output folder is the user's (the folder's proof ignored folders, so a
rerun deleted it). Real processes, real files, a real dvc.lock; nothing mocked."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import pytest
import yaml

from helpers.tiers import fast_first
from helpers.workspace import PARAMS, error_line, naming_its_sources, write_params
from helpers.workspace import run_scripts as run


def tree(root: Path) -> dict[str, bytes | None]:
    """Every path under root: a file's bytes, None for a folder (an empty one included)."""
    return {p.relative_to(root).as_posix(): (None if p.is_dir() else p.read_bytes()) for p in sorted(root.rglob("*"))}


def refused(root: Path, *argv: str, says: str = "refusing") -> None:
    """`python -m scripts ARGV` fails in one line, with nothing under `root` changed, added or removed."""
    before = tree(root)
    done = run(root, *argv)
    line = error_line(done.stderr)
    assert done.returncode == 2 and says in line, done.stderr
    assert tree(root) == before


def text_source(root: Path) -> None:
    params = naming_its_sources(
        {**PARAMS, "sources": {"notes": {"kind": "text", "path": "raw", "text_only": True, "clean": False}}}
    )
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False), encoding="utf-8")
    (root / "raw").mkdir()
    (root / "raw" / "prompts.txt").write_text("a red fox in the snow\na blue boat at dawn\n", encoding="utf-8")


def ok(root: Path, *argv: str) -> None:
    done = run(root, *argv)
    assert done.returncode == 0, done.stderr


# ---------------------------------------------------------------- an output is the command's that wrote it

ANOTHER_COMMANDS = {  # (the command that writes the output, another command pointed at it)
    "params-doc over ingest's table": (["ingest", "notes", "p.parquet"], ["params-doc", "p.parquet"]),
    "clean-rules over clean's report": (
        ["clean", "notes", "p.parquet", "c.parquet"],
        ["clean-rules", "c.report.json"],
    ),
    "params-doc over clean-rules' rules": (["clean-rules", "rules.json"], ["params-doc", "rules.json"]),
    "clean-rules over params-doc's page": (["params-doc", "doc.md"], ["clean-rules", "doc.md"]),
    "sample-data over recipes' folder": (["recipes", "rec"], ["sample-data", "rec"]),
    "dedup-text over clean-text's lines": (
        ["clean-text", "raw/prompts.txt", "o.jsonl"],
        ["dedup-text", "raw/prompts.txt", "o.jsonl"],
    ),
}


@pytest.mark.parametrize(
    "first, second",
    fast_first([pytest.param(*row, id=name) for name, row in ANOTHER_COMMANDS.items()], keep=2),
)
def test_a_command_never_replaces_another_commands_output(tmp_path, first, second):
    text_source(tmp_path)
    ok(tmp_path, "ingest", "notes", "p.parquet")
    ok(tmp_path, *first)
    refused(tmp_path, *second)
    ok(tmp_path, *first)  # the command that wrote it still replaces it


def lock_for(root: Path, cmd: str, output: str) -> None:
    """A dvc.lock recording `output` (with its bytes) as the output of a stage running `cmd`; the file
    itself copied (a `dvc checkout` copy carries no mark of ours, only the lock proves it)."""
    (root / ".dvc").mkdir(exist_ok=True)
    target = root / output
    shutil.copyfile(target, root / "copy")
    os.replace(root / "copy", target)
    md5 = hashlib.md5(target.read_bytes(), usedforsecurity=False).hexdigest()
    lock = {"schema": "2.0", "stages": {"s": {"cmd": cmd, "outs": [{"path": output, "md5": md5}]}}}
    (root / "dvc.lock").write_text(yaml.safe_dump(lock), encoding="utf-8")


LOCKED = {  # (cmd in dvc.lock, the output it records, the command pointed at it that is refused)
    "params-doc over clean's locked table": (
        "python -m scripts clean notes p.parquet c.parquet",
        "c.parquet",
        ["params-doc", "c.parquet"],
    ),
    "clean-rules over a locked report, cmd a list": (
        ["echo start", "python -m scripts clean notes p.parquet c.parquet"],
        "c.report.json",
        ["clean-rules", "c.report.json"],
    ),
    "ingest over clean's locked table": (
        "python -m scripts clean notes p.parquet c.parquet",
        "c.parquet",
        ["ingest", "notes", "c.parquet"],
    ),
}


@pytest.mark.parametrize("cmd, output, other", LOCKED.values(), ids=LOCKED)
def test_a_locked_output_is_the_stage_commands_only(tmp_path, cmd, output, other):
    text_source(tmp_path)
    ok(tmp_path, "ingest", "notes", "p.parquet")
    ok(tmp_path, "clean", "notes", "p.parquet", "c.parquet")
    lock_for(tmp_path, cmd, output)
    refused(tmp_path, *other)
    ok(tmp_path, "clean", "notes", "p.parquet", "c.parquet")  # the lock proves it clean's


# ---------------------------------------------------------------- a user's empty folder is the user's


def marked_recipes(root: Path) -> Path:
    write_params(root)
    ok(root, "recipes", "rec")
    return root / "rec"


def copied_recipes(root: Path) -> Path:
    """A copy of an output folder: its marker proves nothing, so every file must be one the command writes."""
    shutil.copytree(marked_recipes(root), root / "copy")
    return root / "copy"


EMPTY_FOLDERS = {  # (an output folder, the user's empty folder made in it)
    "a nested empty folder in a marked output": (marked_recipes, "mine/keep"),
    "an empty folder at the top of a marked output": (marked_recipes, "keep"),
    "an empty folder beside the command's own folders": (marked_recipes, "release/keep"),
    "an empty folder in a copy of an output": (copied_recipes, "keep"),
}


@pytest.mark.parametrize("make, empty", EMPTY_FOLDERS.values(), ids=EMPTY_FOLDERS)
def test_a_users_empty_folder_inside_an_output_is_never_deleted(tmp_path, make, empty):
    folder = make(tmp_path)
    made = [p for p in [folder / empty, *(folder / empty).parents] if not p.exists()]
    (folder / empty).mkdir(parents=True)
    refused(tmp_path, "recipes", folder.name)
    assert (folder / empty).is_dir()
    for path in made:
        path.rmdir()
    ok(tmp_path, "recipes", folder.name)  # without it the folder is the command's again
