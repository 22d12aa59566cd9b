"""Round 32d: replay-history's DEST and the files inside it, and sample-data's inner files, on real files and
real runs of the command (a hook on replay-history's `_run`, or on sample-data's archive writers, plants an
entry mid-run as another process would). Every row failed before its fix:

1. replay-history's lock was a file beside DEST (temps.output_lock): an empty DEST in a parent it cannot write
   (immutable: `chattr +i`) was refused, and a user's file, link or FIFO of the lock's name beside DEST refused
   the run. The lock is now a flock of DEST itself (the kernel drops it with a killed run).
2. A failed replay deleted DEST's top-level entries by name: a user's `models` or `.dvc-storage` put there
   meanwhile, a user's README.md renamed over the replay's, a user's file in a DEST the replay made (all of it
   went). Each entry the replay makes is now recorded by identity when made and only those go.
3. replay-history copied the tracked files, and sample-data wrote its files, with plain opens: a link planted
   at an inner name was written through (a user's file elsewhere overwritten, or made), a FIFO blocked or failed
   with a traceback. Both make every folder and file through replay_history.MadeHere (no link followed, a new
   name exclusive): a planted entry is refused in one line and stays as it was.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import threading
from pathlib import Path

import pytest

from helpers import env
from helpers.commands import cli
from helpers.workspace import error_line, leftovers, write_params

pytestmark = pytest.mark.usefixtures("no_proxy")


def git(*args: str, cwd: Path) -> None:
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, env=env())


def source_repo(root: Path) -> Path:
    """A git repository with no releases (a replay of it is `git init` and a copy) and no .dvc (so `--remote`
    makes its `dvc remote modify` fail, for real)."""
    (root / "docs").mkdir(parents=True)
    (root / "params.yaml").write_text("releases: {}\n", encoding="utf-8")
    (root / "README.md").write_text("readme\n", encoding="utf-8")
    (root / "docs" / "a.md").write_text("a\n", encoding="utf-8")
    git("init", "-q", "-b", "main", cwd=root)
    git("add", "-A", cwd=root)
    git("commit", "-q", "-m", "base", cwd=root)
    return root


def at_run(monkeypatch, word: str, plant) -> None:
    """Call plant(DEST) before the replay's first child command holding `word` (its real command runs after)."""
    from scripts.tools import replay_history

    real = replay_history._run
    done = []

    def hooked(cmd, cwd, say=None):
        if word in cmd and not done:
            done.append(plant(Path(cwd)))
        return real(cmd, cwd, say)

    monkeypatch.setattr(replay_history, "_run", hooked)


# ---------------------------------------------------------------- 1. DEST's lock is DEST's own flock


@contextlib.contextmanager
def immutable(folder: Path):
    if subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode != 0:
        pytest.skip("chattr +i is not available here")
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", str(folder)], check=True)


def a_lock_named_file(beside: Path) -> None:
    (beside / ".dest.tmp-lock").write_text("mine\n", encoding="utf-8")


def a_lock_named_link(beside: Path) -> None:
    (beside / ".dest.tmp-lock").symlink_to("mine.txt")


def a_lock_named_fifo(beside: Path) -> None:
    os.mkfifo(beside / ".dest.tmp-lock")


BESIDE = {"a user's file": a_lock_named_file, "a user's link": a_lock_named_link, "a user's FIFO": a_lock_named_fifo}


def entries(folder: Path) -> dict[str, int]:
    return {p.name: p.lstat().st_ino for p in folder.iterdir()}


@pytest.mark.parametrize("case", BESIDE)
def test_a_user_entry_of_the_old_lock_name_beside_dest_is_no_lock(tmp_path, monkeypatch, capfd, case):
    src = source_repo(tmp_path / "src")
    parent = tmp_path / "out"
    (parent / "dest").mkdir(parents=True)
    BESIDE[case](parent)
    before = entries(parent)
    done = cli(["replay-history", str(parent / "dest")], src, monkeypatch, capfd)
    assert done.returncode == 0, done.stderr
    assert entries(parent) == before  # nothing beside DEST made, taken or removed
    assert (parent / "dest" / "docs" / "a.md").read_text(encoding="utf-8") == "a\n"


@pytest.mark.parametrize("deep", ["dest", "a/dest", "a/b/dest"])
def test_an_empty_dest_in_a_parent_it_cannot_write_replays(tmp_path, monkeypatch, capfd, deep):
    src = source_repo(tmp_path / "src")
    dest = tmp_path / "ro" / deep
    dest.mkdir(parents=True)
    with immutable(dest.parent):
        done = cli(["replay-history", str(dest)], src, monkeypatch, capfd)
    assert done.returncode == 0, done.stderr
    assert (dest / "params.yaml").read_text(encoding="utf-8") == "releases: {}\n"
    assert sorted(p.name for p in dest.parent.iterdir()) == ["dest"]


# ---------------------------------------------------------------- 2. a failed replay deletes only what it made


def users_models(dest: Path) -> Path:
    with contextlib.suppress(FileNotFoundError):
        (dest / "models").rmdir()  # the replay's own, empty: the user puts theirs in its place
    (dest / "models").mkdir()
    (dest / "models" / "m.bin").write_bytes(b"weights")
    return dest / "models"


def users_storage(dest: Path) -> Path:
    (dest / ".dvc-storage").mkdir()  # --remote given: the replay makes none
    (dest / ".dvc-storage" / "s").write_bytes(b"s")
    return dest / ".dvc-storage"


def users_readme(dest: Path) -> Path:
    (dest / "mine.md").write_text("my readme\n", encoding="utf-8")
    (dest / "mine.md").rename(dest / "README.md")  # over the replay's copy
    return dest / "README.md"


FAILED = {"a user's models/": users_models, "a user's .dvc-storage": users_storage, "a user's README.md": users_readme}


def fail_with(dest_name: str, plant, tmp_path: Path, monkeypatch, capfd) -> tuple[Path, str, dict]:
    src = source_repo(tmp_path / "src")
    planted: dict[str, int] = {}

    def plant_and_note(dest: Path) -> None:
        path = plant(dest)
        planted[path.relative_to(tmp_path).as_posix()] = path.lstat().st_ino

    at_run(monkeypatch, "remote", plant_and_note)  # then `dvc remote modify` fails: no .dvc in the source
    done = cli(["replay-history", str(tmp_path / dest_name), "--remote", str(tmp_path / "r")], src, monkeypatch, capfd)
    assert done.returncode == 2, done.stderr
    return tmp_path / dest_name, error_line(done.stderr), planted


@pytest.mark.slow  # `dvc remote modify` runs, and fails: 4-5 s a row
@pytest.mark.parametrize("case", FAILED)
def test_a_failed_replay_deletes_only_what_it_made(tmp_path, monkeypatch, capfd, case):
    (tmp_path / "dest").mkdir()
    dest, line, planted = fail_with("dest", FAILED[case], tmp_path, monkeypatch, capfd)
    assert "dvc remote modify" in line, line
    assert {k: (tmp_path / k).lstat().st_ino for k in planted} == planted  # the user's, as they were
    assert sorted(p.name for p in dest.iterdir()) == [Path(next(iter(planted))).parts[1]]  # the replay's gone


def users_file(dest: Path) -> Path:
    (dest / "mine.txt").write_text("mine\n", encoding="utf-8")
    return dest / "mine.txt"


@pytest.mark.slow  # `dvc remote modify` runs, and fails: 4-5 s a row
@pytest.mark.parametrize("deep", ["dest", "new/dest", "new/er/dest"])
def test_a_failed_replay_into_a_dest_it_made_keeps_a_users_file_there(tmp_path, monkeypatch, capfd, deep):
    dest, _, planted = fail_with(deep, users_file, tmp_path, monkeypatch, capfd)
    assert {k: (tmp_path / k).lstat().st_ino for k in planted} == planted
    assert sorted(p.name for p in dest.iterdir()) == ["mine.txt"]


# ---------------------------------------------------------------- 3. inner files: never written through a plant


def link_to_theirs(name: str):
    def plant(dest: Path) -> Path:
        (dest.parent / "theirs.txt").write_text("theirs\n", encoding="utf-8")
        (dest / name).symlink_to(dest.parent / "theirs.txt")
        return dest / name

    return plant


def dangling_link(name: str):
    def plant(dest: Path) -> Path:
        (dest / name).symlink_to(dest.parent / "made-elsewhere")
        return dest / name

    return plant


def fifo_at(name: str):
    def plant(dest: Path) -> Path:
        os.mkfifo(dest / name)
        return dest / name

    return plant


INNER = {
    "a link at params.yaml to a user's file": link_to_theirs("params.yaml"),
    "a link at README.md to a user's file": link_to_theirs("README.md"),
    "a dangling link at params.yaml": dangling_link("params.yaml"),
    "a link at docs/ to a user's folder": lambda dest: link_folder(dest, "docs"),
    "a FIFO at params.yaml": fifo_at("params.yaml"),
}


def link_folder(dest: Path, name: str) -> Path:
    (dest.parent / "their-folder").mkdir()
    (dest / name).symlink_to(dest.parent / "their-folder")
    return dest / name


def outside(tmp_path: Path) -> dict[str, bytes | None]:
    return {
        p.relative_to(tmp_path).as_posix(): (p.read_bytes() if p.is_file() else None)
        for p in sorted(tmp_path.rglob("*"))
        if not p.is_relative_to(tmp_path / "src") and not p.is_relative_to(tmp_path / "dest")
    }


@pytest.mark.parametrize("case", INNER)
def test_replay_history_never_writes_through_an_entry_planted_in_dest(tmp_path, monkeypatch, capfd, case):
    src = source_repo(tmp_path / "src")
    seen: list[dict] = []

    def plant(dest: Path) -> None:
        INNER[case](dest)
        seen.append(outside(tmp_path))

    at_run(monkeypatch, "init", plant)  # DEST made, before `git init` and the copy of the tracked files
    done = cli(["replay-history", str(tmp_path / "dest")], src, monkeypatch, capfd)
    assert done.returncode == 2, done.stderr
    assert "another entry took this name" in error_line(done.stderr)
    assert outside(tmp_path) == seen[0]  # the user's file or folder as it was, nothing made beside
    assert [p.name for p in (tmp_path / "dest").iterdir()] == [Path(case.split(" at ")[1].split(" ")[0]).name]


def users_file_renamed_over(path: Path) -> None:
    (path.parent / "mine.yaml").write_text("mine\n", encoding="utf-8")
    (path.parent / "mine.yaml").rename(path)


def link_to_outside(path: Path) -> None:
    path.unlink()
    path.symlink_to(path.parent.parent / "theirs.txt")


def fifo_instead(path: Path) -> None:
    path.unlink()
    a_fifo_read_by_another(path)


RELEASE_PARAMS = {
    "a link to a user's file": link_to_outside,
    "a FIFO another reads": fifo_instead,
    "a user's file renamed over it": users_file_renamed_over,
}


@pytest.mark.parametrize("case", RELEASE_PARAMS)
def test_replay_history_never_writes_a_releases_params_through_an_entry_put_there(tmp_path, monkeypatch, capfd, case):
    from scripts.tools import replay_history

    src = tmp_path / "src"
    src.mkdir()
    write_params(src)  # releases: the replay writes each one's params.yaml over the copy
    git("init", "-q", "-b", "main", cwd=src)
    git("add", "-A", cwd=src)
    git("commit", "-q", "-m", "base", cwd=src)
    (tmp_path / "theirs.txt").write_text("theirs\n", encoding="utf-8")
    real = replay_history.params_up_to
    planted = []

    def plant_then_render(text: str, last: str) -> str:
        if not planted:
            RELEASE_PARAMS[case](tmp_path / "dest" / "params.yaml")
            planted.append((tmp_path / "dest" / "params.yaml").lstat().st_ino)
        return real(text, last)

    monkeypatch.setattr(replay_history, "params_up_to", plant_then_render)
    done = cli(["replay-history", str(tmp_path / "dest")], src, monkeypatch, capfd)
    assert done.returncode == 2, done.stderr
    assert "another entry took this name" in error_line(done.stderr), done.stderr  # before any dvc run
    assert (tmp_path / "theirs.txt").read_text(encoding="utf-8") == "theirs\n"
    assert [p.name for p in (tmp_path / "dest").iterdir()] == ["params.yaml"]  # the user's, as put there
    assert (tmp_path / "dest" / "params.yaml").lstat().st_ino == planted[0]


def plant_at_call(monkeypatch, writer: str, call: int, name: str, make) -> None:
    """Before sample-data's `call`-th call of `writer` (zip_bytes, tar_bytes), make sample's temp/`name`."""
    from scripts.tools import sample_data

    real = getattr(sample_data, writer)
    calls = []

    def hooked(members):
        calls.append(1)
        if len(calls) == call:
            (temp,) = Path.cwd().glob(".raw.tmp-new*")
            (temp / name).parent.mkdir(parents=True, exist_ok=True)  # the source's folder, if not yet made
            make(temp / name)
        return real(members)

    monkeypatch.setattr(sample_data, writer, hooked)


def a_link_to_users_file(path: Path) -> None:
    path.symlink_to(Path.cwd() / "theirs.txt")


def a_hard_link_to_users_file(path: Path) -> None:
    os.link(Path.cwd() / "theirs.txt", path)


def a_dangling_link(path: Path) -> None:
    path.symlink_to(Path.cwd() / "made-elsewhere")


def a_fifo_read_by_another(path: Path) -> None:
    os.mkfifo(path)

    def drain() -> None:  # before the fix the write went into the FIFO: read it so that the run goes on
        with contextlib.suppress(OSError), open(path, "rb") as fifo:
            fifo.read()

    threading.Thread(target=drain, daemon=True).start()


SAMPLE = {  # case: (writer hooked, its call, the name planted, what is planted there)
    "a link to a user's file at a DiffusionDB part": (
        "zip_bytes",
        1,
        "diffusiondb/part-000001.zip",
        a_link_to_users_file,
    ),
    "a hard link to a user's file at a part": (
        "zip_bytes",
        2,
        "diffusiondb/part-000002.zip",
        a_hard_link_to_users_file,
    ),
    "a dangling link at dalle3's shard": ("tar_bytes", 1, "dalle3/data-000000.tar", a_dangling_link),
    "a FIFO at a LAION bucket's shard": (
        "tar_bytes",
        3,
        "laion_buckets/buckets/p1216x832/shard-000000.tar",
        a_fifo_read_by_another,
    ),
}


@pytest.mark.parametrize("case", SAMPLE)
def test_sample_data_never_writes_through_an_entry_planted_in_its_temp(tmp_path, monkeypatch, capfd, case):
    writer, call, name, make = SAMPLE[case]
    (tmp_path / "theirs.txt").write_text("theirs\n", encoding="utf-8")
    plant_at_call(monkeypatch, writer, call, name, make)
    monkeypatch.chdir(tmp_path)
    done = cli(["sample-data", "raw"], tmp_path, monkeypatch, capfd)
    assert done.returncode == 2, done.stderr
    line = error_line(done.stderr)
    assert "another entry took this name" in line and "tmp-new" not in line, line
    assert (tmp_path / "theirs.txt").read_text(encoding="utf-8") == "theirs\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["theirs.txt"]  # no raw/, nothing made elsewhere
    assert leftovers(tmp_path) == []
