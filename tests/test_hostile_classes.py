"""Hostile inputs by class: one table per class of failure, each row a new input of that class.

Every row failed before its class was fixed (the counts are in docs/guarantees.md). Real files,
real processes, real loopback servers; nothing of ours is mocked.

1 ownership: a folder or file we did not write is refused, never replaced
3 special files as outputs: links, FIFOs, sockets, devices are refused
4 paths read from data stay inside their folder after every link
5 secrets in any letter case, reversed, in a redirect host or in params.yaml never get out
6 network reads are bounded: reply bytes capped, a Hub that never answers times out, one line
7 Ctrl-C during requests and retries exits 130 within 2 s and sends nothing more
8 nesting is bounded before any JSON or YAML is parsed: one line, no RecursionError, no segfault
9 params.yaml is read as DVC reads it (YAML 1.2)
10 paths in messages are printable; a non-UTF-8 output path works or fails in one line
11 a file put under an image's name (a hard link to a file elsewhere) is refused, not shipped
12 rows release@V reads from any `--composed` folder are checked as split rows are (paths, types, splits)
13 an output inside one of the command's own input folders is refused: it would replace what it reads
14 a signal while the interpreter exits never ends the process silently (exit -2, no line)
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pandas as pd
import pytest

from helpers import Loopback, Unaccepted, cli, env, file_digests
from helpers.children import start_child, start_scripts
from helpers.tiers import fast_first
from helpers.workspace import make_splits, write_params
from scripts.lib.errors import DataError

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures("no_proxy")
KEY = "sk-Test-DoNot-Leak-9f3A7c"  # mixed case: an upper- or lower-cased echo differs from it
DALLE3 = REPO / "data" / "raw" / "dalle3"


def python(args: list, cwd: Path, timeout: float = 60, **extra_env) -> subprocess.CompletedProcess:
    """`python -m scripts ARGS` (or `python -c` when args[0] == '-c') as a real process, the repo importable."""
    command = [sys.executable, *(args if args[0] == "-c" else ["-m", "scripts", *args])]
    environment = {**env(), "PYTHONPATH": str(REPO), **extra_env}
    return subprocess.run(command, cwd=cwd, env=environment, capture_output=True, timeout=timeout)


def one_error_line(result: subprocess.CompletedProcess, code: int = 2) -> str:
    err = result.stderr.decode("utf-8", "replace")
    assert result.returncode == code, (result.returncode, err[-2000:])
    assert "Traceback" not in err, err[-2000:]
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, err
    return lines[0]


# ---------------------------------------------------------------- 1. ownership


def _user_folder(tmp_path: Path, files: dict[str, str]) -> Path:
    folder = tmp_path / "mine"
    for name, text in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text, encoding="utf-8")
    return folder


def _folder_output(folder: Path, files: dict[str, str]) -> None:
    """A command's folder output (atomic_path, as split, publish --out, recipes write theirs)."""
    from scripts.lib.io import atomic_path

    with atomic_path(folder, is_dir=True) as tmp:
        for name, text in files.items():
            (tmp / name).parent.mkdir(parents=True, exist_ok=True)
            (tmp / name).write_text(text, encoding="utf-8")


# Each case makes a user's folder ("mine") and returns the command that must refuse to replace it.


def own_split_folder(tmp_path):  # split's train/validation parquet names, the user's bytes
    folder = _user_folder(tmp_path, {"train.parquet": "my own table", "validation.parquet": "mine too"})
    return lambda: _folder_output(folder, {"train.parquet": "new", "validation.parquet": "new"})


def own_hub_folder(tmp_path):  # publish --out over a user's dataset card
    folder = _user_folder(tmp_path, {"README.md": "# my dataset card\n"})
    return lambda: _folder_output(
        folder, {"README.md": "---\n---\n# t2i-datasets v1\n", "data/train-00000-of-00001.parquet": "x"}
    )


def own_release_folder(tmp_path):  # a folder holding only names a release writes, none of them ours
    from scripts.lib.paths import check_output

    folder = _user_folder(tmp_path, {"README.md": "# notes\n", "stats.json": '{"mine": 1}\n'})
    return lambda: check_output(folder)


def own_synthesize_raw_folder(tmp_path):  # synthesize pointed at a text source's folder
    from scripts.synthesize import parse_params, synthesize

    folder = _user_folder(tmp_path, {"prompts.txt": "a prompt I wrote\n"})
    params = parse_params("t", {"base_url": "http://127.0.0.1:9/v1", "model": "m", "requests": 0, "examples": []})
    return lambda: synthesize("t", params, folder, None, log=lambda message: None)


def _synthesize_into(folder: Path):
    from scripts.synthesize import parse_params, synthesize

    params = parse_params("t", {"base_url": "http://127.0.0.1:9/v1", "model": "m", "requests": 0, "examples": []})
    return lambda: synthesize("t", params, folder, None, log=lambda message: None)


# synthesize's folder of separate outputs: its report naming the entry was taken as proof of the rest


def own_synthesize_prompts_edited(tmp_path):  # its own output, then the user curates prompts.txt in place
    act = _synthesize_into(tmp_path / "mine")
    act()
    with open(tmp_path / "mine" / "prompts.txt", "a", encoding="utf-8") as f:
        f.write("a prompt I added by hand\n")
    return act


def own_synthesize_copy(tmp_path):  # cp -a of its output folder, the user's prompts in the copy
    _synthesize_into(tmp_path / "ours")()
    shutil.copytree(tmp_path / "ours", tmp_path / "mine")
    (tmp_path / "mine" / "prompts.txt").write_text("my prompts\n", encoding="utf-8")
    return _synthesize_into(tmp_path / "mine")


def own_synthesize_hand_made_report(tmp_path):  # a report.json naming the entry, written by the user
    report = {"name": "t", "requests": 0, "api_calls": 0}
    _user_folder(tmp_path, {"prompts.txt": "my prompts\n", "report.json": json.dumps(report)})
    return _synthesize_into(tmp_path / "mine")


def own_sample_data_edit(tmp_path):  # sample-data over its own layout, one file edited by the user
    from scripts.tools.sample_data import cli

    cli(tmp_path / "mine", seed=1)
    (tmp_path / "mine" / "chatgpt" / "prompts.txt").write_text("my curated prompts\n", encoding="utf-8")
    return lambda: cli(tmp_path / "mine", seed=1)


def own_simpletuner_config(tmp_path):  # the user's own multidatabackend.json beside the parquet
    folder = _user_folder(tmp_path, {"multidatabackend.json": json.dumps([{"id": "my-run", "type": "local"}])})

    def act():
        result = python(["simpletuner", DALLE3, folder / "dalle3.parquet", "--data-dir", tmp_path / "data"], tmp_path)
        if result.returncode:
            raise DataError(one_error_line(result))

    return act


# The folder marker's bytes are fixed (DVC tracks it), so they prove nothing: only the mark on the
# marker file we wrote does. A marker made by hand or copied with its folder is the user's name.


def own_folder_with_a_hand_made_marker(tmp_path):  # the marker's exact bytes, written by the user
    from scripts.lib.marks import MARKER, MARKER_TEXT

    folder = _user_folder(tmp_path, {"train.parquet": "my own table", MARKER: MARKER_TEXT})
    return lambda: _folder_output(folder, {"train.parquet": "new", "validation.parquet": "new"})


def own_copy_of_a_release(tmp_path):  # cp -a of a release (marker and its attribute), a photo added
    write_params(tmp_path)
    make_splits(tmp_path)
    release = ["release", "v2", tmp_path / "data" / "splits"]
    assert python([*release, tmp_path / "rel"], tmp_path).returncode == 0
    shutil.copytree(tmp_path / "rel", tmp_path / "mine")  # copy2: the marker's extended attribute too
    (tmp_path / "mine" / "train" / "my_photo.png").write_bytes(b"my own photo")

    def act():
        result = python([*release, tmp_path / "mine"], tmp_path)
        if result.returncode:
            raise DataError(one_error_line(result))

    return act


def _released_then(tmp_path: Path, edit):
    """A release written into "mine" by the command, then `edit`ed by the user; the command again."""
    write_params(tmp_path)
    make_splits(tmp_path)
    release = ["release", "v2", tmp_path / "data" / "splits", tmp_path / "mine"]
    assert python(release, tmp_path).returncode == 0
    edit(tmp_path / "mine")

    def act():
        result = python(release, tmp_path)
        if result.returncode:
            raise DataError(one_error_line(result))

    return act


# A release's card, stats and preview sit beside its marked split folders: the marks prove the splits
# ours, not the files beside them (a data card is made to be edited).


def own_release_card_edited(tmp_path):  # the user's notes appended to the card in place
    def edit(folder):
        with open(folder / "README.md", "a", encoding="utf-8") as f:
            f.write("\n## Notes from our review\nRows 10-20 look over-saturated.\n")

    return _released_then(tmp_path, edit)


def own_release_stats_rewritten(tmp_path):  # stats.json written anew (another inode), as a script would
    return _released_then(tmp_path, lambda folder: (folder / "stats.json").write_text('{"reviewed": true}\n'))


def own_release_preview_swapped(tmp_path):  # the contact sheet replaced by the user's own picture
    def edit(folder):
        (folder / "preview.jpg").unlink()
        (folder / "preview.jpg").write_bytes(b"\xff\xd8\xff\xe0 my own contact sheet \xff\xd9")

    return _released_then(tmp_path, edit)


def _git_file_edited(tmp_path: Path, flag: str | None, commit: bool = True):
    """`mine` a git work tree whose notes.jsonl git holds, then edited by the user (`flag`: how git is told
    to look away); clean-text pointed at it. git ls-files -m reports none of these as modified."""
    folder = _user_folder(tmp_path, {"notes.jsonl": '{"committed": 1}\n'})
    write_params(tmp_path)
    (tmp_path / "in.txt").write_text("a red fox\na blue cat\n", encoding="utf-8")
    git = ["git", "-c", "user.email=a@b", "-c", "user.name=a"]
    subprocess.run([*git, "init", "-q", "."], cwd=folder, check=True)
    subprocess.run([*git, "add", "notes.jsonl"], cwd=folder, check=True)
    if commit:
        subprocess.run([*git, "commit", "-qm", "notes"], cwd=folder, check=True)
        subprocess.run([*git, "update-index", flag, "notes.jsonl"], cwd=folder, check=True)
    (folder / "notes.jsonl").write_text('{"my local edit": "precious"}\n', encoding="utf-8")
    if not commit:
        subprocess.run([*git, "add", "notes.jsonl"], cwd=folder, check=True)  # in the index only

    def act():
        result = python(["clean-text", tmp_path / "in.txt", folder / "notes.jsonl", "--rules", "final"], tmp_path)
        if result.returncode:
            raise DataError(one_error_line(result))

    return act


def own_file_git_skips_in_the_worktree(tmp_path):  # `git update-index --skip-worktree`, then edited
    return _git_file_edited(tmp_path, "--skip-worktree")


def own_file_git_assumes_unchanged(tmp_path):  # `git update-index --assume-unchanged`, then edited
    return _git_file_edited(tmp_path, "--assume-unchanged")


def own_file_only_in_gits_index(tmp_path):  # added, never committed: no commit brings it back
    return _git_file_edited(tmp_path, None, commit=False)


def own_file_beside_a_copied_marker(tmp_path):  # a file output in the copy of a marked folder
    from scripts.lib.io import write_json
    from scripts.lib.marks import MARKER

    _folder_output(tmp_path / "ours", {"train.parquet": "ours"})
    folder = _user_folder(tmp_path, {"notes.json": '{"my": "notes"}\n'})
    shutil.copy2(tmp_path / "ours" / MARKER, folder / MARKER)
    return lambda: write_json({"new": 1}, folder / "notes.json")


def _simpletuner_into(tmp_path: Path, folder: Path):
    def act():
        result = python(["simpletuner", DALLE3, folder / "dalle3.parquet", "--data-dir", tmp_path / "data"], tmp_path)
        if result.returncode:
            raise DataError(one_error_line(result))

    return act


# simpletuner's multidatabackend.json: listing our backend ids was taken as proof, so a config the user
# tuned (SimpleTuner's configs are made to be edited) was replaced


def _tuned(path: Path) -> None:
    entries = json.loads(path.read_text(encoding="utf-8"))
    entries[0]["resolution"] = 2048  # the user's own training setting
    path.write_text(json.dumps(entries, indent=2), encoding="utf-8")


def own_simpletuner_config_tuned(tmp_path):  # its own config, then tuned in place by the user
    act = _simpletuner_into(tmp_path, tmp_path / "mine")
    act()
    _tuned(tmp_path / "mine" / "multidatabackend.json")
    return act


def own_simpletuner_config_copied(tmp_path):  # our config copied (with its mark) beside the user's run, tuned
    _simpletuner_into(tmp_path, tmp_path / "ours")()
    (tmp_path / "mine").mkdir()
    shutil.copy2(tmp_path / "ours" / "multidatabackend.json", tmp_path / "mine" / "multidatabackend.json")
    _tuned(tmp_path / "mine" / "multidatabackend.json")
    return _simpletuner_into(tmp_path, tmp_path / "mine")


def own_simpletuner_config_with_our_ids(tmp_path):  # written by hand with our two backend ids
    entries = [{"id": "dalle3", "type": "local", "resolution": 2048}, {"id": "dalle3-text-embeds", "type": "local"}]
    _user_folder(tmp_path, {"multidatabackend.json": json.dumps(entries)})
    return _simpletuner_into(tmp_path, tmp_path / "mine")


@pytest.mark.parametrize(
    "case",
    fast_first(
        [
            own_split_folder,
            own_hub_folder,
            own_release_folder,
            own_synthesize_raw_folder,
            own_sample_data_edit,
            own_simpletuner_config,
            own_folder_with_a_hand_made_marker,
            own_copy_of_a_release,
            own_file_beside_a_copied_marker,
            own_synthesize_prompts_edited,
            own_synthesize_copy,
            own_synthesize_hand_made_report,
            own_simpletuner_config_tuned,
            own_simpletuner_config_copied,
            own_simpletuner_config_with_our_ids,
            own_release_card_edited,
            own_release_stats_rewritten,
            own_release_preview_swapped,
            own_file_git_skips_in_the_worktree,
            own_file_git_assumes_unchanged,
            own_file_only_in_gits_index,
        ],
        keep=6,
    ),
    ids=lambda f: f.__name__,
)
def test_a_folder_or_file_we_did_not_write_is_refused_untouched(tmp_path, case):
    """Names prove nothing: a folder without our marker whose files have the names a command writes
    (but not its bytes) is the user's."""
    act = case(tmp_path)
    before = file_digests(tmp_path / "mine")
    with pytest.raises(DataError, match="did not write|cannot prove"):
        act()
    assert file_digests(tmp_path / "mine") == before
    assert not list(tmp_path.rglob(".*tmp-*"))


# ---------------------------------------------------------------- 2. deleting by name: our temp files' names

TEMP_NAMES = {  # the user's own, under the names of a killed run's leftovers beside out.jsonl: deleted before
    "a folder named as the old copy": (".out.jsonl.tmp-old", {"draft.txt": "my precious draft\n"}),
    "a file named as the new copy": (".out.jsonl.tmp-new", None),
    "a file named as the sort's spill": (".out.jsonl.tmp-spill", None),
    "a file named as the lock": (".out.jsonl.tmp-lock", None),  # it was locked, then unlinked at the end
    "a folder named as the lock": (".out.jsonl.tmp-lock", {"notes.md": "my notes\n"}),
}


@pytest.mark.parametrize("case", sorted(TEMP_NAMES))
def test_a_file_named_like_a_temp_of_ours_is_refused_not_deleted(tmp_path, case):
    name, files = TEMP_NAMES[case]
    write_params(tmp_path)
    (tmp_path / "in.txt").write_text("a red fox\na blue cat\n", encoding="utf-8")
    if files is None:
        (tmp_path / name).write_text("the user's file\n", encoding="utf-8")
    else:
        for rel, text in files.items():
            (tmp_path / name / rel).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / name / rel).write_text(text, encoding="utf-8")
    before = file_digests(tmp_path)
    line = one_error_line(python(["clean-text", "in.txt", "out.jsonl", "--rules", "final"], tmp_path))
    assert name in line and "refusing to delete it" in line, line
    assert file_digests(tmp_path) == before


def _lock_links_to_a_file(tmp_path):
    (tmp_path / "mine.txt").write_text("the user's file\n", encoding="utf-8")
    (tmp_path / ".out.jsonl.tmp-lock").symlink_to("mine.txt")


def _lock_is_a_fifo(tmp_path):
    os.mkfifo(tmp_path / ".out.jsonl.tmp-lock")


def _lock_links_nowhere(tmp_path):
    (tmp_path / ".out.jsonl.tmp-lock").symlink_to("gone.txt")


@pytest.mark.parametrize(
    "make", [_lock_links_to_a_file, _lock_is_a_fifo, _lock_links_nowhere], ids=lambda f: f.__name__
)
def test_a_link_or_fifo_named_as_the_lock_is_refused_untouched(tmp_path, make):
    """The lock was opened with O_CREAT, following links (a user's file was locked and then unlinked)."""
    write_params(tmp_path)
    (tmp_path / "in.txt").write_text("a red fox\na blue cat\n", encoding="utf-8")
    make(tmp_path)
    before = file_digests(tmp_path)
    kinds = {p.name: os.lstat(p).st_mode for p in tmp_path.iterdir()}
    line = one_error_line(python(["clean-text", "in.txt", "out.jsonl", "--rules", "final"], tmp_path))
    assert ".out.jsonl.tmp-lock" in line and "refusing to delete it" in line, line
    assert file_digests(tmp_path) == before and {p.name: os.lstat(p).st_mode for p in tmp_path.iterdir()} == kinds
    assert not (tmp_path / "gone.txt").exists() and not (tmp_path / "out.jsonl").exists()


def test_a_folder_named_like_a_release_staging_folder_stays(tmp_path):
    """release sweeps a killed run's `.V.staging-*` folders: only those a run of it made."""
    write_params(tmp_path)
    make_splits(tmp_path)
    (tmp_path / ".rel.staging-mine").mkdir()
    (tmp_path / ".rel.staging-mine" / "notes.md").write_text("mine\n", encoding="utf-8")
    assert python(["release", "v2", "data/splits", "rel"], tmp_path).returncode == 0
    assert (tmp_path / ".rel.staging-mine" / "notes.md").read_text(encoding="utf-8") == "mine\n"


# ---------------------------------------------------------------- 3. special files as outputs


def _fifo(tmp_path):
    os.mkfifo(tmp_path / "out.json")


def _socket(tmp_path):
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(tmp_path / "out.json"))
    return server


def _link_out(tmp_path):
    (tmp_path / "elsewhere.json").write_text("precious\n", encoding="utf-8")
    (tmp_path / "out.json").symlink_to(tmp_path / "elsewhere.json")


def _device(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("a device node needs root")
    os.mknod(tmp_path / "out.json", 0o666 | stat.S_IFCHR, os.makedev(1, 3))  # a copy of /dev/null


def _link_to_dev_null(tmp_path):
    (tmp_path / "out.json").symlink_to("/dev/null")


@pytest.mark.parametrize("make", [_fifo, _socket, _link_out, _device, _link_to_dev_null], ids=lambda f: f.__name__)
def test_an_output_path_that_is_a_special_file_or_link_is_refused(tmp_path, make):
    from scripts.lib.io import write_json

    keep = make(tmp_path)
    target = tmp_path / "out.json"
    kind = os.lstat(target).st_mode
    with pytest.raises(DataError, match="out.json"):
        write_json({"a": 1}, target)
    assert os.lstat(target).st_mode == kind  # not replaced by a regular file
    if (tmp_path / "elsewhere.json").exists():
        assert (tmp_path / "elsewhere.json").read_text() == "precious\n"  # nor written through
    if keep is not None:
        keep.close()


def _fifo_split_ws(tmp_path: Path) -> Path:
    ws = _release_ws(tmp_path)
    (ws / "data/splits/diffusiondb/validation.parquet").unlink()
    os.mkfifo(ws / "data/splits/diffusiondb/validation.parquet")
    return ws


FIFO_INPUTS = {  # a FIFO where a command reads a table: the open blocked in C, deaf to Ctrl-C and SIGTERM
    "release-split-table": (_fifo_split_ws, ["release", "r", "data/splits", "data/releases/r"], "validation.parquet"),
    "compose-split-table": (_fifo_split_ws, ["compose", "r", "data/splits", "data/compose/r"], "validation.parquet"),
    "release-image-read-into-parquet": (
        lambda tmp_path: _fifo_image(tmp_path),
        ["release", "r", "data/splits", "data/releases/r"],
        "img.png",
    ),
}


def _fifo_image(tmp_path: Path) -> Path:  # the parquet export reads each image's bytes
    ws = _release_ws(tmp_path, export="parquet")
    (ws / IMAGE).unlink()
    os.mkfifo(ws / IMAGE)
    return ws


@pytest.mark.parametrize("case", sorted(FIFO_INPUTS))
def test_a_fifo_where_a_table_is_read_is_refused_not_waited_on(tmp_path, case):
    make, argv, name = FIFO_INPUTS[case]
    ws = make(tmp_path)
    result = python(argv, ws, timeout=60)  # hung until SIGKILL before
    line = one_error_line(result)
    assert name in line and "regular" in line, line


# ---------------------------------------------------------------- 4. paths read from data


def _outside_png(tmp_path: Path) -> Path:
    from PIL import Image

    (tmp_path / "outside").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "outside" / "secret.png")
    return tmp_path / "outside" / "secret.png"


def caption_manifest_link(tmp_path):
    from scripts.lib.caption_images import list_images

    images = tmp_path / "images"
    images.mkdir()
    (images / "a.png").symlink_to(_outside_png(tmp_path))
    pd.DataFrame({"id": ["a"], "file": ["a.png"]}).to_parquet(images / "manifest.parquet")
    return list_images(images)


def caption_manifest_linked_folder(tmp_path):
    from scripts.lib.caption_images import list_images

    images = tmp_path / "images"
    images.mkdir()
    _outside_png(tmp_path)
    (images / "sub").symlink_to(tmp_path / "outside")
    pd.DataFrame({"id": ["a"], "file": ["sub/secret.png"]}).to_parquet(images / "manifest.parquet")
    return list_images(images)


def _release(tmp_path: Path) -> Path:
    release = tmp_path / "release"
    (release / "train").mkdir(parents=True)
    (release / "validation").mkdir()
    (release / "validation" / "metadata.jsonl").write_text("", encoding="utf-8")
    return release


def publish_rows_parent(tmp_path):
    from scripts.tools.publish import read_split

    release = _release(tmp_path)
    _outside_png(tmp_path)
    pd.DataFrame(
        {
            "id": ["a"],
            "source": ["s"],
            "split": ["train"],
            "text": ["t"],
            "orig_text": ["t"],
            "width": [8],
            "height": [8],
            "image": ["../outside/secret.png"],
        }
    ).to_parquet(release / "rows.parquet")
    return read_split(release, "train")


def publish_rows_absolute(tmp_path):
    from scripts.tools.publish import read_split

    release = _release(tmp_path)
    secret = _outside_png(tmp_path)
    pd.DataFrame(
        {
            "id": ["a"],
            "source": ["s"],
            "split": ["train"],
            "text": ["t"],
            "orig_text": ["t"],
            "width": [8],
            "height": [8],
            "image": [str(secret)],
        }
    ).to_parquet(release / "rows.parquet")
    return read_split(release, "train")


def publish_metadata_link(tmp_path):
    from scripts.tools.publish import read_split

    release = _release(tmp_path)
    (release / "train" / "a.png").symlink_to(_outside_png(tmp_path))
    (release / "train" / "metadata.jsonl").write_text(
        json.dumps({"file_name": "a.png", "id": "a", "source": "s", "text": "t"}) + "\n", encoding="utf-8"
    )
    return read_split(release, "train")


def publish_metadata_parent(tmp_path):
    from scripts.tools.publish import read_split

    release = _release(tmp_path)
    _outside_png(tmp_path)
    (release / "train" / "metadata.jsonl").write_text(
        json.dumps({"file_name": "../../outside/secret.png", "id": "a", "source": "s", "text": "t"}) + "\n",
        encoding="utf-8",
    )
    return read_split(release, "train")


@pytest.mark.parametrize(
    "case",
    [
        caption_manifest_link,
        caption_manifest_linked_folder,
        publish_rows_parent,
        publish_rows_absolute,
        publish_metadata_link,
        publish_metadata_parent,
    ],
    ids=lambda f: f.__name__,
)
def test_a_path_from_data_is_confined_to_its_folder_after_links(tmp_path, case):
    with pytest.raises(DataError, match="leaves|outside"):
        case(tmp_path)


# ---------------------------------------------------------------- 5. secrets in any shape


def _key_variants(text: str) -> bool:
    """Whether any 8-character piece of KEY is in `text`, in any letter case or reversed."""
    low = text.lower()
    return any(piece.lower() in low for k in (KEY, KEY[::-1]) for piece in (k[i : i + 8] for i in range(len(k) - 7)))


@pytest.mark.parametrize(
    "echo", [KEY.upper(), KEY.lower(), KEY[::-1], KEY.swapcase()], ids=["upper", "lower", "reversed", "swapcase"]
)
def test_a_key_echoed_in_another_case_or_reversed_is_redacted(echo):
    from scripts.lib.key_redaction import redact_key

    assert not _key_variants(redact_key(f"bad key: Bearer {echo}!", KEY))
    assert not _key_variants(json.dumps(redact_key({"content": [f"x{echo}y"]}, KEY)))


ENCODED_ECHOES = {  # how a server echoed the key into synthesize's error line, prompts.txt and cache
    "base64": base64.b64encode(KEY.encode()).decode(),
    "percent-encoded": "".join(f"%{b:02X}" for b in KEY.encode()),
    "hex": KEY.encode().hex(),
    "split over lines": "\n".join(KEY[i : i + 5] for i in range(0, len(KEY), 5)),
    "spaced out": " ".join(KEY),
}


@pytest.mark.parametrize("form", sorted(ENCODED_ECHOES))
def test_a_key_echoed_encoded_or_split_is_redacted(form):
    from scripts.lib.key_redaction import redact_key

    echo = ENCODED_ECHOES[form]
    pieces = {"".join(echo.split())[i : i + 8].lower() for i in range(len("".join(echo.split())) - 7)}
    for said in (redact_key(f"HTTP 401: bad key {echo} (try again)", KEY), json.dumps(redact_key({"c": [echo]}, KEY))):
        compact = "".join(said.split()).lower()
        assert not any(piece in compact for piece in pieces), said
    assert redact_key(f"HTTP 401: bad key {echo} (try again)", KEY).startswith("HTTP 401: bad key ")


def test_a_redirect_to_a_host_named_after_the_key_neither_follows_nor_prints_it(tmp_path):
    from scripts.lib.chat_client import FatalError, post_chat

    seen = []

    class Redirect(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_POST(self):
            seen.append(self.path)
            self.send_response(307)
            self.send_header("Location", f"http://{KEY.replace('_', '-')}.example/v1/chat/completions")
            self.send_header("Content-Length", "0")
            self.end_headers()

    server = Loopback(Redirect)
    try:
        with pytest.raises(FatalError) as caught:
            post_chat(server.base_url + "/chat/completions", {"model": "m"}, KEY, 5)
    finally:
        server.close()
    assert len(seen) == 1 and not _key_variants(str(caught.value)), str(caught.value)


@pytest.mark.parametrize(
    "entry",
    [
        {"api_key_env": KEY},  # the key pasted where its variable's name goes
        {"api_key_env": "OPENAI_API_KEY", "extra_body": {"api_key": KEY}},
        {"api_key_env": "OPENAI_API_KEY", "system": f"use token hf_{'a1B2' * 9}"},
        {"api_key_env": "$OPENAI_API_KEY"},
        {"api_key_env": None, "base_url": "https://me:a1B2a1B2a1B2@127.0.0.1:9/v1"},  # went into dvc.lock
        {"api_key_env": None, "base_url": "https://:a1B2a1B2a1B2@127.0.0.1:9/v1"},  # no user: went into dvc.lock
        {"api_key_env": None, "base_url": "https://a1B2a1B2a1B2a1B2@127.0.0.1:9/v1"},  # a token as the user
        {"api_key_env": None, "base_url": "HTTPS://a1B2a1B2a1B2a1B2@host/v1"},  # printed by the http(s) check
        {"api_key_env": None, "base_url": "ftp://:a1B2a1B2a1B2@127.0.0.1/v1"},  # printed by the http(s) check
        {"api_key_env": None, "base_url": "a1B2a1B2a1B2a1B2@api.example.com/v1"},  # no scheme: printed by it
    ],
    ids=[
        "key-as-env-name",
        "key-in-extra-body",
        "hf-token-in-text",
        "dollar-env-name",
        "password-in-base-url",
        "password-without-user-in-base-url",
        "token-as-user-in-base-url",
        "token-in-an-upper-case-url",
        "password-in-a-non-http-url",
        "token-in-a-url-without-scheme",
    ],
)
def test_a_key_shaped_value_in_params_is_refused_without_printing_it(tmp_path, entry):
    import yaml

    from scripts.lib.params import load_params

    params = tmp_path / "params.yaml"
    params.write_text(
        yaml.safe_dump({"synthesize": {"t": {"base_url": "http://127.0.0.1:9/v1", "model": "m", **entry}}})
    )
    with pytest.raises(DataError) as caught:
        load_params(path=params)
    assert "synthesize.t." in str(caught.value) and not _key_variants(str(caught.value))
    assert "a1B2a1B2" not in str(caught.value)


# ---------------------------------------------------------------- 6. unbounded network reads


class Endless(BaseHTTPRequestHandler):
    """Answers with a body that never ends, at about 50 MB/s (so an unbounded reader fills memory)."""

    status, length = 200, None

    def log_message(self, *args):
        pass

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.send_response(self.status)
        self.send_header("Content-Type", "application/json")
        if self.length is not None:
            self.send_header("Content-Length", str(self.length))
        self.end_headers()
        chunk = b"[" * (1 << 20)
        try:
            self.wfile.write(b'{"choices": ')
            while True:
                self.wfile.write(chunk)
                time.sleep(0.02)
        except (BrokenPipeError, ConnectionResetError):
            pass


def _endless(status: int, length: int | None) -> type:
    return type("EndlessReply", (Endless,), {"status": status, "length": length})


@pytest.mark.parametrize(
    "handler",
    [_endless(200, None), _endless(200, 10**12), _endless(500, None)],
    ids=["no-length", "huge-length", "error-body"],
)
def test_a_chat_reply_with_no_end_is_capped_not_read_to_the_deadline(handler):
    from scripts.lib.chat_client import TransientError, post_chat

    server = Loopback(handler)
    started = time.monotonic()
    try:
        with pytest.raises(TransientError):
            post_chat(server.base_url + "/chat/completions", {"model": "m"}, None, 6)
    finally:
        server.close()
    assert time.monotonic() - started < 4.5  # the cap ends it; unbounded, it read for the whole 6 s


class HangingHub(BaseHTTPRequestHandler):
    mode = "hang"

    def log_message(self, *args):
        pass

    def _answer(self):
        if self.mode == "hang":
            time.sleep(60)
        elif self.mode == "html":
            body = b"<html><body>502 Bad Gateway</body></html>"
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        else:  # endless JSON, no length
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            try:
                while True:
                    self.wfile.write(b"[" * (1 << 20))
                    time.sleep(0.05)
            except (BrokenPipeError, ConnectionResetError):
                pass

    do_GET = do_POST = do_PUT = do_HEAD = _answer


@pytest.mark.parametrize("mode", ["hang", "html", "endless"])
def test_publish_against_a_bad_hub_is_one_line_in_seconds(tmp_path, mode):
    (tmp_path / "hub").mkdir()
    (tmp_path / "hub" / "README.md").write_text("x\n")
    server = Loopback(type("Hub", (HangingHub,), {"mode": mode}))
    code = (
        "import sys; from pathlib import Path; from scripts.lib.errors import DataError\n"
        "from scripts.tools.publish import upload\n"
        "try:\n upload(Path(sys.argv[1]), 'org/name', 'v1', 'c' * 40, False)\n"
        "except DataError as exc:\n print('error:', exc, file=sys.stderr); sys.exit(2)\n"
    )
    started = time.monotonic()
    try:
        result = python(
            ["-c", code, tmp_path / "hub"],
            tmp_path,
            timeout=40,
            HF_TOKEN="hf_" + "Zq9" * 12,
            HF_ENDPOINT=server.base_url.removesuffix("/v1"),
            HF_HUB_DOWNLOAD_TIMEOUT="2",
            HF_HUB_ETAG_TIMEOUT="2",
            HF_HUB_DISABLE_TELEMETRY="1",
        )
    except subprocess.TimeoutExpired:
        pytest.fail("publish hung on a Hub that does not answer")
    finally:
        server.close()
    line = one_error_line(result)
    assert "Zq9Zq9Zq9" not in line and time.monotonic() - started < 30


# ---------------------------------------------------------------- 7. Ctrl-C during requests and retries


class Hung:
    """A chat server on loopback that records each request and then: hangs (never answers), answers
    503 with Retry-After: 30, or trickles a byte a second."""

    def __init__(self, mode: str):
        self.mode, self.requests, self.closed = mode, [], False
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.base_url = f"http://127.0.0.1:{self.listener.getsockname()[1]}/v1"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self.closed:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn):
        with conn:
            try:
                data = b""
                while b"\r\n\r\n" not in data:
                    data += conn.recv(65536)
                self.requests.append(time.monotonic())
                if self.mode == "backoff":
                    conn.sendall(b"HTTP/1.1 503 Busy\r\nRetry-After: 30\r\nContent-Length: 0\r\n\r\n")
                elif self.mode == "trickle":
                    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n")
                    for _ in range(120):
                        conn.sendall(b" ")
                        time.sleep(1)
                time.sleep(120)
            except OSError:
                pass

    def close(self):
        self.closed = True
        self.listener.close()


@pytest.mark.parametrize("mode", ["hang", "backoff", "trickle"])
def test_ctrl_c_during_requests_exits_130_within_2s_and_sends_nothing_more(tmp_path, mode):
    import yaml

    server = Hung(mode)
    (tmp_path / "params.yaml").write_text(
        yaml.safe_dump(
            {
                "synthesize": {
                    "t": {
                        "base_url": server.base_url,
                        "model": "m",
                        "requests": 8,
                        "examples": [],
                        "concurrency": 2,
                        "timeout_s": 60,
                        "max_attempts": 5,
                        "backoff_base_s": 30,
                        "backoff_cap_s": 60,
                    }
                }
            }
        )
    )
    process = start_scripts(tmp_path, "synthesize", "t", "out", env={**env(), "PYTHONPATH": str(REPO)}, text=False)
    try:
        deadline = time.monotonic() + 60
        while len(server.requests) < 2 and time.monotonic() < deadline and process.poll() is None:
            time.sleep(0.05)
        time.sleep(0.5)  # in flight (hang, trickle) or in the backoff wait (backoff)
        sent = len(server.requests)
        assert sent >= 2, process.stderr.read().decode() if process.poll() is not None else "no request"
        took, err = _ctrl_c(process, lambda: process.send_signal(signal.SIGINT), patience=10)
    finally:
        _stop(process, server)
    _assert_stopped_at_once(process, took, err)
    assert len(server.requests) == sent  # no request after Ctrl-C
    assert not [p for p in tmp_path.rglob(".*tmp-*")]


def _connect_synthesize(tmp_path: Path, base_url: str) -> list:
    return _chat_params(tmp_path, "synthesize", {"model": "m", "requests": 8, "examples": []}, base_url) + [
        "synthesize",
        "t",
        "out",
    ]


def _connect_caption(tmp_path: Path, base_url: str) -> list:
    from PIL import Image

    (tmp_path / "images").mkdir()
    for index in range(4):
        Image.new("RGB", (8, 8), (index * 60, 0, 0)).save(tmp_path / "images" / f"{index}.png")
    extra = {"images": "images", "max_images": None, "models": [{"model": "m"}]}
    return _chat_params(tmp_path, "caption", extra, base_url) + ["caption", "t", "out"]


def _connect_publish(tmp_path: Path, base_url: str) -> list:
    """publish's upload (the Hub client, in the main thread); only the git-tag check is stubbed: it needs
    a tagged DVC history, and the connect is what is tested."""
    from PIL import Image

    shutil.copy(REPO / "params.yaml", tmp_path / "params.yaml")
    for split in ("train", "validation"):
        folder = tmp_path / "data" / "releases" / "v2" / split
        (folder / "images" / "diffusiondb").mkdir(parents=True)
        Image.new("RGB", (8, 8)).save(folder / "images" / "diffusiondb" / "a.png")
        record = {"file_name": "images/diffusiondb/a.png", "id": "a", "source": "diffusiondb", "text": "t"}
        (folder / "metadata.jsonl").write_text(json.dumps({**record, "orig_text": "t"}) + "\n", encoding="utf-8")
    (tmp_path / "data" / "releases" / "v2" / "README.md").write_text("---\n---\n# v2\n", encoding="utf-8")
    stub = (
        "import sys; import scripts.tools.publish as p; p.check_tag = lambda tag, name: 'c' * 40\n"
        "from scripts.cli import main; sys.exit(main(sys.argv[1:]))"
    )
    return ["-c", stub, "publish", "v2", "--repo-id", "me/v2", "--out", "hub"]


def _chat_params(tmp_path: Path, section: str, extra: dict, base_url: str) -> list:
    """params.yaml with one entry `t` of `section` calling `base_url`, patiently (60 s per attempt)."""
    import yaml

    entry = {"base_url": base_url, "api_key_env": None, "concurrency": 2, "timeout_s": 60}
    entry.update(max_attempts=5, backoff_base_s=30, backoff_cap_s=60, **extra)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({section: {"t": entry}}))
    return []


@pytest.mark.parametrize(
    "command", [_connect_synthesize, _connect_caption, _connect_publish], ids=["synthesize", "caption", "publish"]
)
def test_ctrl_c_while_a_tcp_connect_hangs_exits_130_within_2s(tmp_path, command):
    """A server whose port takes no connection (a full accept queue: every SYN dropped): the connect
    waits for its 60 s timeout, and Ctrl-C must not."""
    server = Unaccepted()
    argv = command(tmp_path, server.base_url)
    process = start_child(  # its own group, SIGINT at its default: as a terminal's Ctrl-C finds it
        [sys.executable, *(argv if argv[0] == "-c" else ["-m", "scripts", *argv])],
        cwd=tmp_path,
        env={**env(), "PYTHONPATH": str(REPO), "HF_ENDPOINT": server.base_url.removesuffix("/v1"), "HF_TOKEN": KEY},
        text=False,
    )
    try:
        deadline = time.monotonic() + 90
        while not server.connecting() and time.monotonic() < deadline and process.poll() is None:
            time.sleep(0.05)
        assert server.connecting(), process.stderr.read().decode() if process.poll() is not None else "no connect"
        time.sleep(0.5)  # well inside the connect's 60 s
        took, err = _ctrl_c(process, lambda: os.killpg(process.pid, signal.SIGINT), patience=30)
    finally:
        _stop(process, server)
    _assert_stopped_at_once(process, took, err)
    assert not list(tmp_path.rglob(".*tmp-*"))


def _ctrl_c(process, send, patience: float) -> tuple[float, str]:
    """Ctrl-C (`send()`), then wait up to `patience` s for the exit: (seconds it took, its stderr)."""
    send()
    interrupted = time.monotonic()
    try:
        process.wait(timeout=patience)
    except subprocess.TimeoutExpired:
        pytest.fail(f"still running {patience:.0f} s after Ctrl-C")
    took = time.monotonic() - interrupted
    time.sleep(0.3)
    return took, process.stderr.read().decode()


def _stop(process, server) -> None:
    if process.poll() is None:
        process.kill()
        process.wait()
    server.close()


def _assert_stopped_at_once(process, took: float, err: str) -> None:
    assert process.returncode == 130 and err.splitlines()[-1] == "interrupted (SIGINT)", err
    assert "Traceback" not in err and took < 2.0, (took, err)


# ---------------------------------------------------------------- 8. nesting


DEEP_JSON = "[" * 100_000


def nested_recipe_plan(tmp_path):
    from scripts.lib.plans import check_plan

    (tmp_path / "plan.json").write_text(DEEP_JSON)
    check_plan(tmp_path / "plan.json", {"releases": []})


def nested_simpletuner_config(tmp_path):
    from scripts.lib.simpletuner import absolute_config

    (tmp_path / "train").mkdir()
    (tmp_path / "train" / "multidatabackend.json").write_text(DEEP_JSON)
    absolute_config(tmp_path / "train", tmp_path / "cache")


def nested_metadata_line(tmp_path):
    from scripts.lib.export import parse_metadata

    parse_metadata(
        ['{"file_name": "a.png", "id": "a", "x": ' + "[" * 50_000 + "]" * 50_000 + "}"],
        "metadata.jsonl",
        ("file_name", "id"),
    )


def nested_clean_rules(tmp_path):
    from scripts.lib.cleaning.rule_sets import read_rules_file

    (tmp_path / "rules.json").write_text('{"a": ' + '{"b": ' * 60_000 + "1" + "}" * 60_001)
    read_rules_file(tmp_path / "rules.json")


@pytest.mark.parametrize(
    "case",
    [nested_recipe_plan, nested_simpletuner_config, nested_metadata_line, nested_clean_rules],
    ids=lambda f: f.__name__,
)
def test_deep_json_is_one_line_before_it_is_parsed(tmp_path, case):
    with pytest.raises(DataError):
        case(tmp_path)


@pytest.mark.parametrize(
    "text",
    [
        "synthesize: " + "[" * 100_000 + "]" * 100_000,  # flow sequences
        "synthesize: " + "{a: " * 50_000 + "1" + "}" * 50_000,  # flow mappings
        "synthesize:\n" + "".join(" " * i + "- \n" for i in range(1, 3000)),  # block sequences, one per line
        "synthesize: " + "[{a: " * 30_000 + "1" + "}]" * 30_000,  # both, alternating
    ],
    ids=["flow-seq", "flow-map", "block-seq", "mixed"],
)
def test_deep_params_yaml_is_one_line_in_seconds(tmp_path, text):
    (tmp_path / "params.yaml").write_text(text)
    started = time.monotonic()
    try:
        result = python(["synthesize", "t", "out"], tmp_path, timeout=30)
    except subprocess.TimeoutExpired:
        pytest.fail("a nested params.yaml hung the stage")
    assert "params.yaml" in one_error_line(result) and time.monotonic() - started < 20


# ---------------------------------------------------------------- 9. YAML 1.2, as DVC reads params.yaml


@pytest.mark.parametrize(
    "value, expected",
    [
        ("010", 10),  # YAML 1.1: octal 8
        ("1:20", "1:20"),  # YAML 1.1: sexagesimal 80
        ("0o17", 15),  # YAML 1.1: a string
        ("1e3", 1000.0),  # YAML 1.1: a string
        ("yes", "yes"),  # YAML 1.1: true
        ("off", "off"),  # YAML 1.1: false
    ],
)
def test_params_values_are_what_dvc_reads(value, expected):
    from dvc.utils.serialize import parse_yaml

    from scripts.lib.params import read_yaml

    text = f"split:\n  seed: {value}\n"
    dvc = parse_yaml(text, "params.yaml")
    assert dvc["split"]["seed"] == expected  # the fact: DVC 3 reads YAML 1.2
    assert read_yaml(text) == dvc and type(read_yaml(text)["split"]["seed"]) is type(expected)


# ---------------------------------------------------------------- 10. paths in messages


@pytest.mark.parametrize(
    "name",
    ["in\x1b[31mred\x1b[0m.txt", "in\x9b2J.txt", "in\u202etxt.exe", "in\x07bell.txt"],
    ids=["csi", "c1-csi", "bidi-override", "bell"],
)
def test_a_control_character_in_a_path_is_escaped_in_the_error_line(tmp_path, name):
    result = python(["clean-text", tmp_path / name, tmp_path / "out.jsonl", "--rules", "final"], REPO)
    line = one_error_line(result)
    assert line.isprintable() and "in" in line, repr(line)


# A stage's success line names its output: a path given with escape codes is printed escaped, as in errors.
SUCCESS_COMMANDS = {
    "recipes": lambda out: ["recipes", out],
    "summary": lambda out: ["summary", REPO / "data" / "releases", out / "summary.json"],
    "tiny-encoder": lambda out: ["tiny-encoder", out],
}


OUTPUT_NAMES = {"c1-csi": "out\x9b31m", "osc-title": "out\x1b]0;pwned\x07", "csi-clear": "out\x1b[2J"}
SUCCESS_ROWS = [  # each command with one name in CI's tier, the other names in -m slow (tiny-encoder: 15 s a row)
    pytest.param(command, name, id=f"{label}-{command}", marks=[pytest.mark.slow] if index > 0 else [])
    for command in sorted(SUCCESS_COMMANDS)
    for index, (label, name) in enumerate(OUTPUT_NAMES.items())
]


@pytest.mark.parametrize("command, name", SUCCESS_ROWS)
def test_a_control_character_in_an_output_path_is_escaped_in_the_success_line(tmp_path, command, name):
    shutil.copy(REPO / "params.yaml", tmp_path / "params.yaml")
    result = python(SUCCESS_COMMANDS[command](tmp_path / name), tmp_path, timeout=120)
    assert result.returncode == 0, result.stderr.decode("utf-8", "replace")[-2000:]
    out = result.stdout.decode("utf-8")
    assert out.strip() and all(line.isprintable() for line in out.splitlines()), repr(out)
    assert "\\x1b" in out or "\\x9b" in out  # the name is still there, escaped


@pytest.mark.parametrize(
    "name", [b"out\xff.parquet", b"caf\xe9/out.parquet", b"\xc3(.parquet"], ids=["ff", "latin1-folder", "bad-utf8"]
)
def test_a_non_utf8_output_path_works_or_is_one_line(tmp_path, name):
    output = os.fsencode(tmp_path) + b"/" + name
    result = python(["simpletuner", DALLE3 / "data-000000.tar", os.fsdecode(output)], tmp_path)
    err = result.stderr.decode("utf-8", "replace")
    assert "Traceback" not in err, err[-2000:]
    if result.returncode == 0:
        with open(output, "rb") as table:
            assert pd.read_parquet(table).shape[0] > 0
        assert result.stdout.decode("utf-8", "strict").isprintable() or "\\x" in result.stdout.decode()
    else:
        assert result.returncode == 2 and len(err.strip().splitlines()) == 1


# ---------------------------------------------------------------- 11. a file put under an image's name

SECRET = (
    b"-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA not a real key\n-----END OPENSSH PRIVATE KEY-----\n"
)
IMAGE = "data/images/diffusiondb/img.png"  # make_splits: every row's image, in the source's images folder


def _outside(tmp_path: Path, name: str, data: bytes | None = None, size: tuple[int, int] = (1, 1)) -> Path:
    """A file outside the workspace (another folder of the same disk, as ~/.ssh is): `data`, or a PNG."""
    from PIL import Image

    path = tmp_path / "outside" / name
    path.parent.mkdir(exist_ok=True)
    if data is not None:
        path.write_bytes(data)
    else:
        Image.new("RGB", size, (200, 30, 90)).save(path)
    return path


def _link_in(path: Path, target: Path) -> None:
    """`path` becomes a hard link to `target`: same name, other bytes, nothing a path check can see."""
    path.unlink()
    os.link(target, path)


def _release_ws(tmp_path: Path, export: str = "imagefolder", digests: bool = False) -> Path:
    ws = tmp_path / "ws"
    ws.mkdir()
    write_params(
        ws,
        releases={
            "r": {
                "components": [{"source": "diffusiondb", "split": s, "into": s} for s in ("train", "validation")],
                "export": export,
            }
        },
    )
    make_splits(ws, n=8, digests=digests)
    return ws


def key_linked_into_the_image_store(tmp_path, run):  # a generated image's name, a private key's bytes
    ws = _release_ws(tmp_path)
    _link_in(ws / IMAGE, _outside(tmp_path, "id_ed25519", SECRET))
    return ws, ["release", "r", "data/splits", "data/releases/r"], "img.png", ws / "data/releases/r"


def history_linked_into_a_source_folder(tmp_path, run):  # a shell history under an image's name, parquet export
    ws = _release_ws(tmp_path, export="parquet")
    _link_in(ws / IMAGE, _outside(tmp_path, ".bash_history", b"cat <<EOF\n" + SECRET + b"EOF\n"))
    return ws, ["release", "r", "data/splits", "data/releases/r"], "img.png", ws / "data/releases/r"


def photo_linked_into_a_release_folder(tmp_path, run):  # after the release: same name, same size, other pixels
    ws = _release_ws(tmp_path)
    assert run(["release", "r", "data/splits", "data/releases/r"], ws).returncode == 0
    image = next((ws / "data/releases/r/train/images/diffusiondb").iterdir())
    _link_in(image, _outside(tmp_path, "private.png"))
    return ws, ["publish", "r", "--repo-id", "me/r", "--dry-run", "--out", "hub"], image.name, ws / "hub"


# A rendered image's rows record its sha256 (generate's manifest -> captions -> split): another image
# under its name, valid and of the same size, is no longer the row's image.


def photo_linked_in_under_a_rendered_name(tmp_path, run):  # a private photo, hardlinked: a valid PNG, 1x1
    ws = _release_ws(tmp_path, digests=True)
    _link_in(ws / IMAGE, _outside(tmp_path, "private.png"))
    return ws, ["release", "r", "data/splits", "data/releases/r"], "img.png", ws / "data/releases/r"


def another_picture_copied_over_a_render(tmp_path, run):  # a new file under the name, webdataset export
    from PIL import Image

    ws = _release_ws(tmp_path, export="webdataset", digests=True)
    (ws / IMAGE).unlink()
    Image.new("RGB", (1, 1), (0, 0, 255)).save(ws / IMAGE)
    return ws, ["release", "r", "data/splits", "data/releases/r"], "img.png", ws / "data/releases/r"


def render_edited_in_place(tmp_path, run):  # another 1x1 picture saved over it, the same inode, parquet export
    from PIL import Image

    ws = _release_ws(tmp_path, export="parquet", digests=True)
    with open(ws / IMAGE, "r+b") as f:  # as an editor saving over the file does: the link stays
        Image.new("RGB", (1, 1), (255, 255, 255)).save(f, format="PNG")
        f.truncate()
    return ws, ["release", "r", "data/splits", "data/releases/r"], "img.png", ws / "data/releases/r"


def one_row_recording_another_digest(tmp_path, run):  # rows share the image; one row's record differs
    ws = _release_ws(tmp_path, digests=True)
    train = ws / "data/splits/diffusiondb/train.parquet"
    rows = pd.read_parquet(train)
    rows.loc[0, "image_sha256"] = "0" * 64  # the digest was keyed by image, so another row's hid it
    rows.to_parquet(train)
    return ws, ["release", "r", "data/splits", "data/releases/r"], "img.png", ws / "data/releases/r"


@pytest.mark.parametrize(
    "case",
    [
        key_linked_into_the_image_store,
        history_linked_into_a_source_folder,
        photo_linked_into_a_release_folder,
        photo_linked_in_under_a_rendered_name,
        another_picture_copied_over_a_render,
        render_edited_in_place,
        one_row_recording_another_digest,
    ],
    ids=lambda f: f.__name__,
)
def test_a_file_linked_in_under_an_images_name_is_refused_not_shipped(tmp_path, monkeypatch, capfd, case):
    """The store, the DVC cache and releases hardlink images legitimately, so a link count proves
    nothing; what the row recorded (an image; rows.parquet's sha256) is checked where the file is read."""

    def run(argv: list, cwd: Path):
        return cli(argv, cwd, monkeypatch, capfd)

    ws, argv, name, output = case(tmp_path, run)
    result = run(argv, ws)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-2000:]
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and name in lines[0] and lines[0].isprintable(), result.stderr
    assert not output.exists()  # no partial output
    assert [p for p in ws.rglob("*") if p.is_file() and SECRET in p.read_bytes()] in ([], [ws / IMAGE])


# ---------------------------------------------------------------- 12. release --composed: rows from any folder


def _set(column: str, value, row: int = 2):
    """rows[row, column] = value (OUTSIDE: a 64x64 PNG outside the workspace)."""

    def change(rows: pd.DataFrame, outside: Path) -> None:
        rows[column] = rows[column].astype(object)
        rows.loc[row, column] = str(outside) if value == "OUTSIDE" else rows.loc[0, column] if value is _set else value

    return change


def _whole(column: str, value):
    def change(rows: pd.DataFrame, outside: Path) -> None:
        rows[column] = value(rows[column]) if callable(value) else value

    return change


COMPOSED_ROWS = {  # (export, change, what the one line names); each shipped or silently dropped the rows before
    "id-leaving-the-release": ("imagefolder", _set("id", "../../../../../outside/pwn"), "row 3: id"),
    "image-outside-the-sources": ("imagefolder", _set("image", "OUTSIDE"), "row 3: image"),
    "image-outside-in-a-prompts-release": ("prompts", _set("image", "OUTSIDE"), "row 3: image"),
    "split-neither-train-nor-validation": ("prompts", _set("split", "test"), "row 3: split 'test'"),
    "split-as-a-number": ("prompts", _whole("split", 1), "column 'split'"),
    "text-as-bytes": ("prompts", _whole("text", lambda text: text.str.encode("utf-8")), "column 'text'"),
    "source-not-in-the-release": ("imagefolder", _set("source", "chatgpt"), "row 3: source 'chatgpt'"),
    "id-twice": ("prompts", _set("id", _set), "duplicate id"),  # row 3 takes row 1's id
}


@pytest.mark.parametrize("case", sorted(COMPOSED_ROWS))
def test_a_composed_rows_file_is_checked_as_split_rows_are(tmp_path, monkeypatch, capfd, case):
    """release@V --composed reads any folder: its rows pass the checks compose@V makes on split tables,
    for the whole-table layouts and the streamed `prompts` one alike, before anything is read or written
    (a `../` id wrote an image outside the release; an image path outside was read into the contact sheet)."""
    export, change, named = COMPOSED_ROWS[case]
    ws = _release_ws(tmp_path, export=export)
    rows = pd.concat(
        [pd.read_parquet(ws / "data/splits/diffusiondb" / f"{s}.parquet") for s in ("train", "validation")]
    )
    rows = rows[["id", "source", "split", "text", "orig_text", "image", "width", "height"]].reset_index(drop=True)
    change(rows, _outside(tmp_path, "private.png", size=(64, 64)))
    (ws / "mine").mkdir()
    rows.to_parquet(ws / "mine" / "rows.parquet")
    pd.DataFrame(columns=[*rows.columns, "reason"]).to_parquet(ws / "mine" / "removed.parquet")
    before = file_digests(tmp_path)
    argv = ["release", "r", "data/splits", "data/releases/r", "--composed", "mine"]
    result = cli(argv, ws, monkeypatch, capfd)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-2000:]
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "rows.parquet" in lines[0] and named in lines[0], result.stderr
    assert file_digests(tmp_path) == before and not (ws / "data/releases/r").exists()


# ---------------------------------------------------------------- 13. an output inside its own input


@pytest.mark.parametrize(
    "argv",
    [
        ["compose", "r", "data/splits", "data/splits/diffusiondb"],  # replaced the split folder it read (marked)
        ["compose", "r", "data/splits", "data/splits/new"],
        ["release", "r", "data/splits", "data/splits/diffusiondb"],
        ["compose", "r", "data/splits", "data/prefilter/r", "--positions", "data/prefilter"],
    ],
    ids=["compose-into-a-split-folder", "compose-into-the-splits", "release-into-a-split-folder", "into-positions"],
)
def test_an_output_inside_an_input_folder_is_refused_untouched(tmp_path, monkeypatch, capfd, argv):
    ws = _release_ws(tmp_path)
    (ws / "data/prefilter").mkdir()
    before = file_digests(ws)
    result = cli(argv, ws, monkeypatch, capfd)
    assert result.returncode == 2, result.stderr[-2000:]
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "inside the input" in lines[0], result.stderr
    assert file_digests(ws) == before


# A split table's sizes of the wrong type: compose@V's cast to int64 was an ArrowInvalid traceback.
BAD_SIZES = {"text": ["64"] * 8, "words": ["wide"] * 8, "fraction": [64.5] * 8, "flags": [True] * 8}


@pytest.mark.parametrize("values", sorted(BAD_SIZES))
@pytest.mark.parametrize("streamed", [True, False], ids=["streamed", "whole-table"])
def test_a_split_table_whose_sizes_are_not_whole_numbers_is_one_line(tmp_path, monkeypatch, capfd, values, streamed):
    import scripts.compose

    ws = _release_ws(tmp_path)
    path = ws / "data/splits/diffusiondb/validation.parquet"
    rows = pd.read_parquet(path)
    rows["width"] = BAD_SIZES[values][: len(rows)]
    rows.to_parquet(path)
    if not streamed:
        monkeypatch.setattr(scripts.compose, "picks_only", lambda recipe: False)
    result = cli(["compose", "r", "data/splits", "data/compose/r"], ws, monkeypatch, capfd)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-2000:]
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "validation.parquet: row 1: column 'width'" in lines[0], result.stderr
    assert not (ws / "data/compose/r").exists()


# ---------------------------------------------------------------- 14. a signal while the interpreter exits

EXITING = {  # a command, and the output it leaves when it ends normally
    "compose": (["compose", "r", "data/splits", "data/compose/r"], "data/compose/r/rows.parquet"),
    "release": (["release", "r", "data/splits", "data/releases/r"], "data/releases/r/stats.json"),
}


@pytest.mark.parametrize("command", fast_first(sorted(EXITING)))
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_while_the_interpreter_exits_is_not_a_silent_death(tmp_path, command, signum):
    """After main() returns, the interpreter tears down for up to a second (pyarrow's threads): Python had
    reset the handlers, so a Ctrl-C there killed the process by the signal with no line (exit -2, 8 of 20
    Ctrl-Cs at random moments of a compose). Held open here by an atexit callback that sleeps (registered
    before the command's own, so it runs after them; a SIGINT there printed "Exception ignored ...
    KeyboardInterrupt", a SIGTERM killed it): the command's code and output stand, nothing printed."""
    argv, output = EXITING[command]
    ws = _release_ws(tmp_path)
    code = (
        "import atexit, runpy, sys, time; atexit.register(time.sleep, 3); "
        f"sys.argv = ['scripts', *{[str(a) for a in argv]!r}]; runpy.run_module('scripts', run_name='__main__')"
    )
    process = start_child([sys.executable, "-c", code], cwd=ws, env={**env(), "PYTHONPATH": str(REPO)}, text=False)
    assert process.stdout is not None
    line = process.stdout.readline()  # the success line: main() is about to return
    time.sleep(0.5)
    process.send_signal(signum)
    _, err = process.communicate(timeout=30)
    err_text = err.decode("utf-8", "replace")
    assert line and not any(word in err_text for word in ("Traceback", "KeyboardInterrupt", "Exception ignored"))
    assert process.returncode == 0, (process.returncode, err_text)
    assert (ws / output).is_file()
