"""Refused outputs, found by the second hostile round: what a command did not write is never replaced,
deleted or written through, and a refusal writes nothing. One table per cause, each row a new input;
every row failed before its fix. Real processes (`python -m scripts`), nothing mocked.

B2  release deleted a `.X.tmp-old` in the release folder by its name (only a temp it tagged goes)
B8  simpletuner renamed its config into place before the data folder's check refused the run
B9  pr-comment / pr-build wrote comment.md, the contact sheets and build.json over a user's file or
    through a link; pr-comment read dvc.lock with no depth bound or shape check
B11 simpletuner-config wrote paths read from a release's multidatabackend.json unconfined
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import env
from helpers.tiers import fast_first
from helpers.trees import tree
from helpers.workspace import make_splits, write_params

REPO = Path(__file__).resolve().parents[1]
DALLE3 = REPO / "data" / "raw" / "dalle3"
pytestmark = pytest.mark.usefixtures("no_proxy")


def python(args: list, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    """`python -m scripts ARGS` as a real process, this repository importable."""
    environment = {**env(), "PYTHONPATH": str(REPO), "DVC_NO_ANALYTICS": "1"}
    return subprocess.run(
        [sys.executable, "-m", "scripts", *map(str, args)],
        cwd=cwd,
        env=environment,
        capture_output=True,
        timeout=timeout,
    )


def one_error_line(result: subprocess.CompletedProcess) -> str:
    err = result.stderr.decode("utf-8", "replace")
    assert result.returncode == 2, (result.returncode, err[-2000:])
    assert "Traceback" not in err, err[-2000:]
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, err
    return lines[0]


def refused_untouched(act, root: Path, *words: str) -> str:
    """Run `act`; it must fail in one line holding `words`, with nothing under `root` changed or added."""
    before = tree(root)
    line = one_error_line(act())
    assert all(word in line for word in words), line
    assert tree(root) == before
    return line


# ---------------------------------------------------------------- B2. release: a user's `.X.tmp-old`

OLD_NAMES = {  # made by the user in (or as the only thing of) a release folder: rmtree'd by name before
    "a folder named as train's old copy, released before": (".train.tmp-old", True),
    "a folder named as validation's old copy, released before": (".validation.tmp-old", True),
    "a folder named as the preview's old copy, released before": (".preview.jpg.tmp-old", True),
    "a folder named as train's old copy, in a new release folder": (".train.tmp-old", False),
}


@pytest.mark.parametrize("case", sorted(OLD_NAMES))
def test_release_refuses_a_user_folder_named_as_its_old_copy(tmp_path, case):
    name, released = OLD_NAMES[case]
    write_params(tmp_path)
    make_splits(tmp_path)
    release = ["release", "v2", "data/splits", "rel"]
    if released:
        assert python(release, tmp_path).returncode == 0
    (tmp_path / "rel" / name / "drafts").mkdir(parents=True)
    (tmp_path / "rel" / name / "drafts" / "draft.txt").write_text("my precious draft\n", encoding="utf-8")
    refused_untouched(lambda: python(release, tmp_path), tmp_path, name, "refusing to delete it")


# ---------------------------------------------------------------- B8. simpletuner: every check first


def _user_data(tmp_path: Path) -> Path:
    (tmp_path / "mydata").mkdir()
    (tmp_path / "mydata" / "photo.txt").write_text("my photo's caption\n", encoding="utf-8")
    return tmp_path / "mydata"


def data_dir_of_the_user(tmp_path):  # the config went in beside the parquet, then the folder was refused
    return ["out/dalle3.parquet", "--data-dir", _user_data(tmp_path)]


def data_dir_of_the_user_config_elsewhere(tmp_path):  # --config in a folder of its own
    return ["out/dalle3.parquet", "--data-dir", _user_data(tmp_path), "--config", "cfg/backend.json"]


def data_dir_ours_then_edited(tmp_path):  # a run's own data folder, a photo added by the user since
    assert python(["simpletuner", DALLE3, "first/dalle3.parquet", "--data-dir", "mydata"], tmp_path).returncode == 0
    (tmp_path / "mydata" / "my_photo.png").write_bytes(b"my own photo")
    return ["out/dalle3.parquet", "--data-dir", "mydata"]


def txt_dir_of_the_user(tmp_path):  # the data folder new, the captions folder the user's
    (tmp_path / "captions").mkdir()
    (tmp_path / "captions" / "notes.txt").write_text("mine\n", encoding="utf-8")
    return ["out/dalle3.parquet", "--data-dir", "newdata", "--txt-dir", "captions"]


@pytest.mark.parametrize(
    "case",
    [data_dir_of_the_user, data_dir_of_the_user_config_elsewhere, data_dir_ours_then_edited, txt_dir_of_the_user],
    ids=lambda f: f.__name__,
)
def test_simpletuner_refuses_before_anything_is_renamed_into_place(tmp_path, case):
    args = case(tmp_path)
    refused_untouched(lambda: python(["simpletuner", DALLE3, *args], tmp_path), tmp_path, "did not write")


# ---------------------------------------------------------------- B9. pr-comment, pr-build


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    """A git repository with DVC and no release at its commit (pr-comment's base has none)."""
    root = tmp_path_factory.mktemp("repo")
    git = ["git", "-c", "user.email=t@example.com", "-c", "user.name=t"]
    subprocess.run(["git", "init", "-q", "-b", "main"], cwd=root, check=True)
    subprocess.run([sys.executable, "-m", "dvc", "init", "-q"], cwd=root, check=True, env=env())
    subprocess.run(["git", "add", "-A"], cwd=root, check=True)
    subprocess.run([*git, "commit", "-q", "-m", "base"], cwd=root, check=True)
    return root


@pytest.fixture()
def ws(repo, tmp_path) -> Path:
    """The repository's workspace for one test: params.yaml with no release, nothing else uncommitted."""
    subprocess.run(["git", "clean", "-qfdx", "-e", ".dvc"], cwd=repo, check=True)
    (repo / "params.yaml").write_text("releases: {}\n", encoding="utf-8")
    return repo


def _precious(tmp_path: Path) -> Path:
    (tmp_path / "precious.txt").write_text("precious\n", encoding="utf-8")
    return tmp_path / "precious.txt"


def users_file(tmp_path, name):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / name).write_text("my notes\n", encoding="utf-8")


def link_to_a_file(tmp_path, name):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / name).symlink_to(_precious(tmp_path))


def link_to_nowhere(tmp_path, name):  # writing through it made the file it names
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / name).symlink_to(tmp_path / "made-elsewhere.txt")


@pytest.mark.parametrize("make", [users_file, link_to_a_file, link_to_nowhere], ids=lambda f: f.__name__)
@pytest.mark.parametrize("command", ["pr-comment", "pr-build"])
def test_pr_tools_refuse_an_output_they_did_not_write(ws, tmp_path, make, command):
    name = "comment.md" if command == "pr-comment" else "build.json"
    make(tmp_path, name)
    args = [command, "HEAD", *(["workspace"] if command == "pr-comment" else []), "--out", tmp_path / "out"]
    refused_untouched(lambda: python(args, ws), tmp_path, name)


def plots_page_of_the_user(tmp_path):
    (tmp_path / "out" / "plots").mkdir(parents=True)
    (tmp_path / "out" / "plots" / "index.html").write_text("<p>my page</p>\n", encoding="utf-8")


def plots_page_links_to_a_file(tmp_path):
    (tmp_path / "out" / "plots").mkdir(parents=True)
    (tmp_path / "out" / "plots" / "index.html").symlink_to(_precious(tmp_path))


def plots_folder_of_the_users_notes(tmp_path):
    (tmp_path / "out" / "plots").mkdir(parents=True)
    (tmp_path / "out" / "plots" / "notes.md").write_text("my notes\n", encoding="utf-8")


@pytest.mark.parametrize(
    "make",
    [plots_page_of_the_user, plots_page_links_to_a_file, plots_folder_of_the_users_notes],
    ids=lambda f: f.__name__,
)
def test_pr_comment_renders_its_plots_only_into_a_folder_of_its_own(ws, tmp_path, make):
    """`dvc plots diff -o OUT/plots` wrote into whatever OUT/plots held, and through a link there (sixth
    round): the page is rendered into a temp folder and replaces only a plots/ pr-comment wrote."""
    make(tmp_path)
    args = ["pr-comment", "HEAD", "workspace", "--out", tmp_path / "out"]
    refused_untouched(lambda: python(args, ws), tmp_path, "plots")


def _with_release(ws: Path) -> None:
    """A release only the workspace has: pr-comment shows it with its contact sheet (the head's)."""
    from PIL import Image

    (ws / "params.yaml").write_text("releases:\n  r1: {}\n", encoding="utf-8")
    (ws / "data" / "releases" / "r1").mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(ws / "data" / "releases" / "r1" / "preview.jpg")


def preview_links_out(ws, tmp_path):  # a JPEG elsewhere on the runner was copied into the artifact
    from PIL import Image

    (ws / "data" / "releases" / "r1" / "preview.jpg").unlink()
    Image.new("RGB", (8, 8), "red").save(tmp_path / "elsewhere.jpg")
    (ws / "data" / "releases" / "r1" / "preview.jpg").symlink_to(tmp_path / "elsewhere.jpg")
    return "preview.jpg"


def sheet_of_the_user(ws, tmp_path):  # the user's own picture under the sheet's name
    (tmp_path / "out" / "sheets").mkdir(parents=True)
    (tmp_path / "out" / "sheets" / "head-r1.jpg").write_bytes(b"\xff\xd8\xff my own picture")
    return "head-r1.jpg"


def sheet_links_to_a_file(ws, tmp_path):
    (tmp_path / "out" / "sheets").mkdir(parents=True)
    (tmp_path / "out" / "sheets" / "head-r1.jpg").symlink_to(_precious(tmp_path))
    return "head-r1.jpg"


def sheets_folder_links_elsewhere(ws, tmp_path):  # the sheets were written into the folder it names
    (tmp_path / "out").mkdir()
    (tmp_path / "theirs").mkdir()
    (tmp_path / "out" / "sheets").symlink_to(tmp_path / "theirs")
    return "sheets"


@pytest.mark.parametrize(
    "case",
    fast_first([preview_links_out, sheet_of_the_user, sheet_links_to_a_file, sheets_folder_links_elsewhere], keep=2),
    ids=lambda f: f.__name__,
)
def test_pr_comment_copies_only_its_own_contact_sheets(ws, tmp_path, case):
    _with_release(ws)
    word = case(ws, tmp_path)
    args = ["pr-comment", "HEAD", "workspace", "--out", tmp_path / "out"]
    refused_untouched(lambda: python(args, ws), tmp_path, word)


LOCKS = {  # the workspace's dvc.lock, read by pr-comment to find unchanged releases
    "nested lists": "stages: " + "[" * 5000 + "]" * 5000 + "\n",
    "nested flow mappings": "stages: " + "{a: " * 5000 + "1" + "}" * 5000 + "\n",
    "stages a list": "schema: '2.0'\nstages: [1, 2]\n",
    "a release's outs a string": "schema: '2.0'\nstages:\n  release@r1:\n    outs: data/releases/r1\n",
}


@pytest.mark.parametrize("case", fast_first(sorted(LOCKS), keep=2))
def test_pr_comment_reads_dvc_lock_bounded_and_checked(ws, tmp_path, case):
    (ws / "dvc.lock").write_text(LOCKS[case], encoding="utf-8")
    args = ["pr-comment", "HEAD", "workspace", "--out", tmp_path / "out"]
    line = one_error_line(python(args, ws))
    assert "dvc.lock" in line, line
    assert not (tmp_path / "out" / "comment.md").exists()


# ---------------------------------------------------------------- B11. simpletuner-config confines paths

IMAGE = {"id": "t2i-train", "type": "local", "instance_data_dir": "train", "cache_dir_vae": "cache/vae/t2i-train"}
IMAGE["parquet"] = {"path": "train/simpletuner.parquet"}
TEXT = {"id": "t2i-train-text-embeds", "type": "local", "dataset_type": "text_embeds", "cache_dir": "cache/text/x"}

CONFIGS = {  # (field the line names, the image entry's change, the text entry's change)
    "instance_data_dir up and out": ("instance_data_dir", {"instance_data_dir": "../../outside"}, {}),
    "instance_data_dir through a link out": ("instance_data_dir", {"instance_data_dir": "linked"}, {}),
    "parquet path absolute": ("parquet.path", {"parquet": {"path": "/etc/passwd"}}, {}),
    "parquet path not a string": ("parquet.path", {"parquet": {"path": ["train", "x"]}}, {}),
    "vae cache up and out": ("cache_dir_vae", {"cache_dir_vae": "cache/../../elsewhere"}, {}),
    "text cache absolute": ("cache_dir", {}, {"cache_dir": "/root/.ssh"}),
}


@pytest.mark.parametrize("case", sorted(CONFIGS))
def test_simpletuner_config_confines_every_path_it_reads(tmp_path, case):
    field, image, text = CONFIGS[case]
    split = tmp_path / "rel" / "train"
    split.mkdir(parents=True)
    (tmp_path / "outside").mkdir()
    (tmp_path / "rel" / "linked").symlink_to(tmp_path / "outside")
    (split / "multidatabackend.json").write_text(json.dumps([{**IMAGE, **image}, {**TEXT, **text}]), encoding="utf-8")
    args = ["simpletuner-config", "rel/train", "cfg.json", "--cache-dir", "sc"]
    line = refused_untouched(lambda: python(args, tmp_path), tmp_path, "multidatabackend.json", field)
    assert "entry" in line, line
