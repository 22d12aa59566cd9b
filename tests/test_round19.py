"""Round 19: the breaks this hostile round found, one table per class (every row failed before its fix), on real
files and runs of the command:

1. An output folder a user made read-only (`chmod -R a-w data/recipes`, or one folder in it: a protected copy,
   a mount that went read-only) was replaced all the same: the old copy renamed aside, the new one put in its
   place, and then, the old copy not deletable, the run stopped at exit 2 with its output changed, leaving
   `.T.tmp-old` behind. Its temp tag could not be set on a read-only folder either, so every later run refused
   it ("no run of this command left it"): the stage was stuck until the user deleted it by hand. `generate-prune`
   deleted the images before a read-only folder of the store and stopped at exit 2 on the first it could not, its
   index not rewritten. A folder whose old copy cannot be deleted is now refused in one line before anything is
   moved or deleted (temps.check_removable, image_store.check_prunable, both through temps.unremovable_folder).
2. A CSV record the csv module stops at (a field over its 131,072-character limit, a stray quote inside a quoted
   field) inside a quoted field that runs over lines: the module goes on at the next line, inside that field, so
   the field's lines were read as rows: under `on_error: skip` an OpenPrompts or Kaggle SD2 source ingested a
   line of one prompt (`injected prompt,{}`) as a row of its own at exit 0, and with Kaggle's numbered images
   every later row took the image of the row before it. A malformed record is now read on to the line where its
   quotes close, one bad record (csv_sources._LastLine.past_record).

The read-only rows run without the capabilities that let root write anywhere (setpriv drops CAP_DAC_OVERRIDE): the
suite runs as root here, and root ignores a folder's permissions.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from helpers import REPO
from helpers.tiers import fast_first
from helpers.workspace import PNG, error_line, leftovers, write_params
from helpers.workspace import run_scripts as run
from scripts.ingest import ingest
from scripts.lib.errors import DataError
from scripts.lib.image_store import STORE_MARK_TEXT
from scripts.lib.readers import SourceConfig

# --- 1. a read-only output folder ------------------------------------------------------------------------

UNPRIVILEGED = ["--bounding-set=-dac_override,-dac_read_search,-fowner"]


def as_user(root: Path, *argv: str) -> subprocess.CompletedProcess:
    """`python -m scripts ARGV` in `root` as a user without root's right to write anywhere (CAP_DAC_OVERRIDE)."""
    return python_as_user(root, "-m", "scripts", *argv)


def python_as_user(root: Path, *args: str) -> subprocess.CompletedProcess:
    """`python ARGS` in `root` as a user without root's right to write anywhere (CAP_DAC_OVERRIDE)."""
    cmd = [sys.executable, *args]
    if os.geteuid() == 0:
        setpriv = shutil.which("setpriv")
        if setpriv is None or subprocess.run([setpriv, *UNPRIVILEGED, "true"], capture_output=True).returncode:
            pytest.skip("root, and setpriv cannot drop CAP_DAC_OVERRIDE here")
        cmd = [setpriv, *UNPRIVILEGED, *cmd]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "T2I_PROGRESS_EVERY_S": "3600"}
    return subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=120)


def snapshot(root: Path) -> dict[str, tuple]:
    """Every entry under `root`: its inode, mode and (a file's) bytes."""
    found = {}
    for path in sorted(root.rglob("*")):
        info = path.lstat()
        data = path.read_bytes() if stat.S_ISREG(info.st_mode) else None
        found[path.relative_to(root).as_posix()] = (info.st_ino, info.st_mode, data)
    return found


def store(root: Path) -> list[str]:
    """A generation store as generate leaves it: its mark, index and two images in folders of their own."""
    names = [f"ab/ab{'0' * 62}.jpg", f"cd/cd{'1' * 62}.jpg"]
    (root / "st" / ".tmp").mkdir(parents=True)
    (root / "st" / ".tmp" / "store.lock").write_bytes(b"")  # what a run of generate leaves
    (root / "st" / ".t2i-image-store").write_bytes(STORE_MARK_TEXT)
    (root / "st" / ".gitignore").write_text("*\n")
    (root / "st" / "index.txt").write_text("".join(f"{name}\n" for name in names))
    for name in names:
        (root / "st" / name).parent.mkdir()
        (root / "st" / name).write_bytes(name.encode())
    return ["generate-prune", "--store", "st", "--all"]


def built(*argv: str):
    def make(root: Path) -> list[str]:
        write_params(root)
        assert run(root, *argv).returncode == 0
        return list(argv)

    return make


READ_ONLY_ROWS = [  # (what builds the output and gives the command, the folder made read-only, its mode)
    pytest.param(store, "st/cd", 0o555, id="generate-prune, a folder of the store read-only"),
    pytest.param(built("recipes", "out"), "out/release", 0o555, id="recipes, a folder in it read-only"),
    pytest.param(built("sample-data", "out"), "out", 0o555, id="sample-data, its folder read-only"),
    pytest.param(built("sample-data", "out"), "out/chatgpt", 0o000, id="sample-data, a folder in it unreadable"),
]


@pytest.mark.parametrize("make, locked, mode", fast_first(READ_ONLY_ROWS, keep=2, columns=3))
def test_a_folder_that_cannot_be_deleted_is_refused_before_anything_moves(tmp_path, make, locked, mode):
    argv = make(tmp_path)
    output = tmp_path / argv[argv.index("--store") + 1 if "--store" in argv else -1]
    (tmp_path / locked).chmod(mode)
    try:
        before = snapshot(output)
        done = as_user(tmp_path, *argv)
        line = error_line(done.stderr)
        assert done.returncode == 2 and "may not write" in line and locked.split("/")[-1] in line, done.stderr
        assert snapshot(output) == before and leftovers(tmp_path) == []  # nothing moved, deleted or left
    finally:
        (tmp_path / locked).chmod(0o755)
    done = as_user(tmp_path, *argv)  # made writable again, the command runs
    assert done.returncode == 0 and leftovers(tmp_path) == [], done.stderr


OPENED_FOLDERS = {  # how a command opens its output folder: every one holds output_lock first
    "atomic_path (split, compose, recipes)": "from scripts.lib.io import atomic_path as opened; kw = {'is_dir': True}",
    "staging_dir (release)": "from scripts.lib.io import staging_dir as opened; kw = {}",
    "output_lock (generate, caption, synthesize)": "from scripts.lib.temps import output_lock as opened; kw = {}",
}
WORK = """
from scripts.lib.errors import DataError
try:
    with opened('out', **kw):
        print('the work ran')
except DataError as exc:
    print('error:', exc)
"""


@pytest.mark.parametrize("opening", OPENED_FOLDERS.values(), ids=OPENED_FOLDERS)
def test_a_folder_that_cannot_be_deleted_is_refused_before_the_work(tmp_path, opening):
    """The refusal above came at the rename, after the work (a long release ran to its end first): the output's
    lock now looks before the command's work starts, for every way a command opens its output folder."""
    (tmp_path / "out" / "part").mkdir(parents=True)
    (tmp_path / "out" / "part" / "a.txt").write_text("a")
    (tmp_path / "out" / "part").chmod(0o555)
    try:
        before = snapshot(tmp_path / "out")
        done = python_as_user(tmp_path, "-c", opening + WORK)
        assert done.returncode == 0 and "the work ran" not in done.stdout, done.stdout + done.stderr
        assert "error: out: holds 'part', a folder this process may not write" in done.stdout
        assert snapshot(tmp_path / "out") == before and leftovers(tmp_path) == []
    finally:
        (tmp_path / "out" / "part").chmod(0o755)


# --- 2. the lines of a malformed record's quoted field read as rows --------------------------------------

GOOD = json.dumps({"raw_discord_data": {"seed": 1}}).replace('"', '""')


def openprompts(root: Path, record: str) -> dict:
    """An OpenPrompts CSV: a fine row, `record` (over lines), another fine row."""
    lines = ["prompt,raw_data", f'a fine prompt,"{GOOD}"', record, f'another fine prompt,"{GOOD}"']
    (root / "op.csv").write_bytes(("\n".join(lines) + "\n").encode())
    return dict(kind="openprompts", path=str(root))


def kaggle(root: Path, record: str) -> dict:
    """A Kaggle SD2 folder: row N's image is N-1.png (each a 1x1 PNG)."""
    (root / "p.csv").write_text("\n".join(["prompt", "a fine prompt", record, "another fine prompt"]) + "\n")
    for index in range(6):
        (root / f"{index}.png").write_bytes(PNG)
    return dict(kind="kaggle_sd2", path=str(root))


INJECTED = "injected prompt,{}"  # a line of a quoted field that is a whole record of its own
FIELD_ROWS = {  # (the source, the malformed record whose quoted field runs over lines, holding INJECTED)
    "a field over the csv module's limit": (
        openprompts,
        '"' + "\n".join(["x" * 60] * 2500 + [INJECTED, "end"]) + '",{}',
    ),
    "a first line over the limit": (openprompts, '"' + "x" * 200_000 + f'\n{INJECTED}\nend",{{}}'),
    "a stray quote in the field": (openprompts, f'"a "stray" quote\n{INJECTED}\nend",{{}}'),
    "a stray quote, Kaggle's numbered images": (kaggle, f'"a "stray" quote\n{INJECTED}\nend"'),
}


@pytest.mark.parametrize("make, record", FIELD_ROWS.values(), ids=FIELD_ROWS)
def test_a_malformed_records_quoted_lines_are_never_rows(tmp_path, make, record):
    """The csv module goes on at the next line after an error, which may lie inside the record's quoted field:
    `injected prompt` was ingested as a row at exit 0 (and with Kaggle's numbering, each later row took the
    image of the row before it)."""
    (tmp_path / "src").mkdir()
    config = make(tmp_path / "src", record)
    report = ingest("s", SourceConfig(**config, on_error="skip"), tmp_path / "out.parquet")
    rows = pq.read_table(tmp_path / "out.parquet").to_pylist()
    assert [row["prompt"] for row in rows] == ["a fine prompt", "another fine prompt"]
    assert report["skipped"] == {"bad_csv": 1}
    if config["kind"] == "kaggle_sd2":  # rows 1 and 3, the malformed one row 2: as pandas numbers them
        assert [Path(row["image"]).name for row in rows] == ["0.png", "2.png"]
    with pytest.raises(DataError, match=r"row 2 \(line \d+\): malformed CSV .*its quoted field closes on line"):
        ingest("s", SourceConfig(**config, on_error="fail"), tmp_path / "failed.parquet")
