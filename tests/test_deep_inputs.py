"""Deep or malformed inputs that reached a traceback or a segfault, one table per break (B14-B17).

Each row runs the real command in a subprocess (a segfault must not take pytest down) and checks the
one `error:` line (exit 2, no traceback) naming the file, and that nothing is left half-written.
Every row failed before its fix; the inputs differ from test_hostile_classes.py's nesting rows.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pandas as pd
import pytest
from test_hostile_classes import one_error_line, python

from helpers import dvc_init, env
from helpers.tiers import fast_first
from helpers.workspace import make_splits, write_params
from scripts.lib.errors import DataError
from scripts.lib.tables import write_parquet

RELEASES = ("v2", "v3", "v4", "v4-a", "v4-b")
DEEP_LIST = "[" * 100_000  # unclosed: the check stops at the cap, json would recurse first
DEEP_OBJECTS = '{"a": ' * 60_000 + "1" + "}" * 60_000
DEEP_MIXED = '[{"a": ' * 40_000 + "1" + "}]" * 40_000


# ---------------------------------------------------------------- B14. summary: a release's stats.json


@pytest.mark.parametrize(
    ("release", "text"),
    [
        ("v3", '{"rows": ' + DEEP_OBJECTS + "}"),  # deep under rows itself
        ("v4-b", DEEP_MIXED),  # the last release read: the earlier ones are fine
        ("v2", '{"rows": {"total": 1}, "by_source": ' + "[" * 100_000 + "]" * 100_000 + "}"),  # rows.total is there
        ("v4-a", '{"removed": {"x": ' + DEEP_LIST + "}}"),
    ],
    ids=["deep-rows", "mixed-last", "total-then-deep", "unclosed-in-removed"],
)
def test_summary_refuses_a_deep_stats_json_in_one_line(tmp_path, release, text):
    write_params(tmp_path)
    for name in RELEASES:
        (tmp_path / "rel" / name).mkdir(parents=True)
        (tmp_path / "rel" / name / "stats.json").write_text('{"rows": {"total": 1}}', encoding="utf-8")
    (tmp_path / "rel" / release / "stats.json").write_text(text, encoding="utf-8")
    line = one_error_line(python(["summary", "rel", "out.json"], tmp_path))
    assert f"rel/{release}/stats.json" in line and "nested deeper than" in line, line
    assert not (tmp_path / "out.json").exists()


# ---------------------------------------------------------------- B15. a DVC cache's .dir listing

OID = "0123456789abcdef0123456789abcdef"
X_MD5 = "99914b932bd37a50b983c5e7c90ae93b"  # md5 of "{}": the listing's entry is the file's own bytes


@pytest.mark.parametrize(
    "listing",
    [
        f'[{{"relpath": "x.jsonl", "md5": "{X_MD5}"}}, ' + DEEP_LIST,  # a true entry, then deep
        f'[{{"relpath": "x.jsonl", "md5": "{X_MD5}", "extra": ' + "[" * 100_000 + "]" * 100_000 + "}]",
        DEEP_OBJECTS,
        "[" + DEEP_MIXED + "]",
    ],
    ids=["entry-then-deep", "deep-field-of-an-entry", "deep-objects", "deep-mixed"],
)
def test_a_deep_dir_listing_in_the_cache_proves_nothing(tmp_path, listing):
    """The ownership check reads the lock's .dir listing: too deep is "not known", the file stays the user's."""
    dvc_init(tmp_path, scm=False)
    write_params(tmp_path)
    (tmp_path / "in.txt").write_text("a\n", encoding="utf-8")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "x.jsonl").write_text("{}", encoding="utf-8")
    (tmp_path / "dvc.lock").write_text(
        f"schema: '2.0'\nstages:\n  s:\n    cmd: echo\n    outs:\n    - path: out\n      md5: {OID}.dir\n",
        encoding="utf-8",
    )
    cached = tmp_path / ".dvc" / "cache" / "files" / "md5" / OID[:2] / f"{OID[2:]}.dir"
    cached.parent.mkdir(parents=True)
    cached.write_text(listing, encoding="utf-8")
    line = one_error_line(python(["clean-text", "in.txt", "out/x.jsonl", "--rules", "final"], tmp_path))
    assert "out/x.jsonl" in line and "cannot prove it wrote it" in line, line
    assert (tmp_path / "out" / "x.jsonl").read_text(encoding="utf-8") == "{}"


# ---------------------------------------------------------------- B16. release: a split table's generation column


@pytest.mark.parametrize(
    ("value", "split", "row", "problem"),
    fast_first(
        [
            ('{"model": ' + DEEP_OBJECTS + "}", "validation", 3, "nested deeper than"),
            ("{'model': 'tiny'}", "validation", 10, "not JSON"),  # Python's repr, not JSON
            ("null", "train", 2, "not a JSON object"),
            ('{"seed": 1, "sampler": ' + DEEP_LIST, "train", 5, "nested deeper than"),
            ("[" + DEEP_MIXED + "]", "train", 1, "nested deeper than"),
            ('{"steps": ' + "9" * 5000 + "}", "train", 30, "not JSON"),  # past Python's int digit limit
            ("{", "validation", 1, "not JSON"),
            ('"tiny-sd2"', "validation", 7, "not a JSON object"),
            ("3.5", "train", 12, "not a JSON object"),
        ],
        keep=3,  # one of each problem in CI's tier
        columns=4,
    ),
    ids=["deep-object", "repr", "null", "deep-unclosed", "deep-mixed", "huge-int", "brace", "string", "number"],
)
def test_release_names_the_split_row_of_a_bad_generation_value(tmp_path, value, split, row, problem):
    components = [{"source": "diffusiondb", "split": s, "into": s} for s in ("train", "validation")]
    write_params(tmp_path, releases={"r": {"components": components}})  # no dedup step: no model to load
    make_splits(tmp_path)  # 30 train rows, 10 validation rows
    path = tmp_path / "data" / "splits" / "diffusiondb" / f"{split}.parquet"
    table = pd.read_parquet(path)
    table["generation"] = [value if number == row else None for number in range(1, len(table) + 1)]
    write_parquet(table, path)
    result = python(["release", "r", "data/splits", "data/releases/r"], tmp_path, timeout=120)
    line = one_error_line(result)
    where = f"data/splits/diffusiondb/{split}.parquet: row {row}: column 'generation': {problem}"
    assert where in line, line
    assert not (tmp_path / "data" / "releases").exists()


# ---------------------------------------------------------------- B17. replay-history


def _git_repo(folder: Path, files: dict[str, str]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (folder / name).write_text(text, encoding="utf-8")
    subprocess.run(["git", "init", "-q", "."], cwd=folder, check=True)
    subprocess.run(["git", "add", "-A"], cwd=folder, check=True)
    subprocess.run(["git", "commit", "-qm", "x"], cwd=folder, env=env(), check=True)


def _repo_params() -> str:
    from helpers.repos import REPO

    return (REPO / "params.yaml").read_text(encoding="utf-8")


def _plain_folder(src: Path) -> None:
    src.mkdir()
    (src / "params.yaml").write_text(_repo_params(), encoding="utf-8")


def _git_file_not_a_repo(src: Path) -> None:  # a `.git` file that is no gitdir link
    _plain_folder(src)
    (src / ".git").write_text("not a gitdir\n", encoding="utf-8")


def _empty_git_folder(src: Path) -> None:  # an empty `.git` folder: git looks above it (stopped by the ceiling)
    _plain_folder(src)
    (src / ".git").mkdir()


def _committed(text: str | None):
    def make(src: Path) -> None:
        _git_repo(src, {"params.yaml": text} if text is not None else {"README.md": "no params\n"})

    return make


@pytest.mark.parametrize(
    ("make", "dest", "says"),
    [
        (_plain_folder, "d1", "not a git repository"),
        (_git_file_not_a_repo, "new/d1", "not a git repository"),
        (_empty_git_folder, "empty", "not a git repository"),
        (_committed("releases: " + "{a: " * 50_000 + "1" + "}" * 50_000), "d2", "nested deeper than"),
        (_committed("releases:\n" + "".join(" " * i + "- \n" for i in range(1, 3000))), "new/d2", "nested deeper"),
        (_committed("releases: " + "[{a: " * 30_000 + "1" + "}]" * 30_000), "empty", "nested deeper than"),
        (_committed(None), "d3", "params file not found"),
        (_committed("releases: [v2, v3]\n"), "new/d3", "releases"),
        (_committed("- releases\n"), "empty", "expected a mapping"),
        (_committed("releases: [\n"), "d4", "not valid YAML"),
    ],
    ids=[
        "plain-folder",
        "git-file",
        "empty-git-folder",
        "deep-flow-map",
        "deep-block-seq",
        "deep-mixed",
        "no-params",
        "releases-a-list",
        "top-level-list",
        "unclosed-flow",
    ],
)
def test_replay_history_refuses_in_one_line_and_leaves_nothing(tmp_path, make, dest, says):
    make(tmp_path / "src")
    (tmp_path / "empty").mkdir()  # a user's empty folder named as DEST: it stays, empty
    result = python(
        ["replay-history", f"../{dest}"], tmp_path / "src", timeout=60, GIT_CEILING_DIRECTORIES=str(tmp_path)
    )
    line = one_error_line(result)
    assert says in line, line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty", "src"]
    assert list((tmp_path / "empty").iterdir()) == []


def _tracked_file_deleted(src: Path) -> list[str]:  # git lists it, the copy fails
    _git_repo(src, {"params.yaml": _repo_params(), "notes.txt": "x\n"})
    (src / "notes.txt").unlink()
    return []


def _remote_without_dvc(src: Path) -> list[str]:  # `dvc remote modify` in a tree with no .dvc fails
    _git_repo(src, {"params.yaml": _repo_params()})
    return ["--remote", "../remote"]


def _repro_without_dvc(src: Path) -> list[str]:  # the first `dvc repro` fails
    _git_repo(src, {"params.yaml": _repo_params()})
    return []


@pytest.mark.parametrize(
    ("make", "dest"),
    [(_tracked_file_deleted, "new/d"), (_remote_without_dvc, "d"), (_repro_without_dvc, "empty")],
    ids=["copy-fails", "remote-fails", "repro-fails"],
)
def test_replay_history_failing_after_dest_is_made_removes_what_it_made(tmp_path, make, dest):
    extra = make(tmp_path / "src")
    (tmp_path / "empty").mkdir()
    result = python(["replay-history", f"../{dest}", *extra], tmp_path / "src", timeout=120)
    one_error_line(result)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty", "src"]
    assert list((tmp_path / "empty").iterdir()) == []


# ---------------------------------------------------------------- dedup: an index folder's index.json


@pytest.mark.parametrize(
    "text",
    ['{"params": ' + DEEP_OBJECTS + "}", DEEP_MIXED, '{"reference_rows": 1, "params": {"x": ' + DEEP_LIST],
    ids=["deep-params", "deep-mixed", "unclosed"],
)
def test_a_deep_index_json_is_one_data_error(tmp_path, text):
    """Index.load (the library's: no CLI command loads an index) reads index.json depth-bounded."""
    from scripts.lib.dedup import Index

    for name in ("keys.npy", "rows.npy", "texts.parquet"):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "index.json").write_text(text, encoding="utf-8")
    with pytest.raises(DataError, match="index.json: .*nested deeper than"):
        Index.load(tmp_path)
