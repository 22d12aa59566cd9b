"""Round 21: the breaks this hostile round found in the side tools, one table per class (every row failed before its
fix), on real files, real git and DVC repositories and runs of the command:

1. `publish` cut its own YAML front matter off the release's README.md at the second `---` it met, not at the line
   that closes the front matter: a `---` rule in the card's body (a recipe description's) dropped the card's title
   and every line before the rule from the Hub card, and a rule at its end dropped the whole body, at exit 0. The
   front matter is now found as the Hub finds it (publish.without_front_matter: huggingface_hub's REGEX_YAML_BLOCK).
2. A loop of symbolic links on a path a command resolves (`a -> b -> a`) was a RuntimeError traceback: Python 3.11's
   Path.resolve raises it. `simpletuner-config` (the split, --output, --cache-dir), `replay-history --remote` and
   `caption`'s images folder resolved their paths so. Now one line (safe_paths.resolved).
3. `diff` took rows.parquet's `image` and metadata.jsonl's `file_name` as paths without checking them: an image
   `../../../params.yaml` compared a file outside the release as the row's image, at exit 0 (publish and export
   refuse it). A path with `..`, or absolute, is one line naming the table and id (diff.check_in_folder: at a git
   revision no link can be followed, so the check is by the path's text).
4. `pr-comment --out` and `pr-build --out` wrote into the data they compare: `--out data/releases/r1` put
   comment.md, plots/ and sheets/ into the release (`dvc status`: modified, and `dvc commit` would take them in),
   `--out .dvc/cache` into DVC's cache and `--out .git` into git's folder. An output that is, holds or lies inside
   the repository's data/, .dvc/ or .git/ is refused in one line before any work
   (side_inputs.check_outside_stores).
5. HF_ENDPOINT with a token pasted where the port goes (`https://hub.example:hf_...`), a port out of range or an IPv6
   host never closed failed huggingface_hub's import: `Port could not be cast to integer value as 'hf_...'`, on two
   lines (the library's own `Error importing ...`, then ours), the token in both, `publish --dry-run` too. It is now
   checked before the library is imported, one line naming the variable (import_env.IMPORT_TIME_VARIABLES).
6. `publish` took any file of the release that metadata.jsonl or rows.parquet named as a row's image: the release's own
   metadata.jsonl, README.md or rows.parquet passed every path check (inside, one link, regular) and its bytes were
   published as the image at exit 0. A name without an image's extension is one line (safe_paths.check_image_name).
7. `diff` and `pr-comment` read the workspace's params.yaml and dvc.lock through a link out of the repository
   (`params.yaml -> /elsewhere.yaml`), quoting its keys in error lines; both are git's files, never DVC links: one
   line now (side_inputs.check_repository_file).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from helpers import REPO, dvc_init, env
from helpers.commands import cli
from helpers.tiers import fast_first
from helpers.workspace import error_line
from scripts.tools.publish import release_card_body

pytestmark = pytest.mark.usefixtures("no_proxy")

# ---------------------------------------------------------------- 1. the card's front matter, and only it

FRONT = "---\nlicense: other\npretty_name: t2i-datasets v2\n---\n"
CARDS = {  # the release's README.md after its front matter: every line of it reaches the Hub card
    "a rule after the intro": "# t2i-datasets v2\n\nintro line one\n\n---\n\n## Rows\n\nrows line two\n",
    "a rule at the end": "# t2i-datasets v2\n\nintro line one\n\n## Rows\n\nrows line two\n\n---\n",
    "a rule with words after it": "# t2i-datasets v2\n\nintro line one\n--- rows line two\n",
    "two rules": "# t2i-datasets v2\n\nintro line one\n\n---\n\nrows line two\n\n---\n\nthe end line three\n",
}


@pytest.mark.parametrize("case", CARDS)
def test_publish_keeps_the_whole_card_body_after_its_front_matter(tmp_path, case):
    (tmp_path / "README.md").write_text(FRONT + CARDS[case], encoding="utf-8")
    body = release_card_body(tmp_path)
    assert body == CARDS[case].strip()
    assert "license: other" not in body


def test_publish_reads_a_card_without_front_matter_whole(tmp_path):
    (tmp_path / "README.md").write_text("# a card\n\n---\n\nbelow the rule\n", encoding="utf-8")
    assert release_card_body(tmp_path) == "# a card\n\n---\n\nbelow the rule"


# ---------------------------------------------------------------- 2. a loop of symbolic links


def loop(tmp: Path) -> Path:
    """tmp/loop-a -> loop-b -> loop-a."""
    (tmp / "loop-a").symlink_to("loop-b")
    (tmp / "loop-b").symlink_to("loop-a")
    return tmp / "loop-a"


LOOPS = {  # case: argv (L: the loop, T: tmp_path), cwd (None: tmp_path)
    "simpletuner-config split in the loop": (["simpletuner-config", "L/train", "T/o.json"], None),
    "simpletuner-config --output in the loop": (["simpletuner-config", "T/r/train", "L/o.json"], None),
    "simpletuner-config --cache-dir the loop": (
        ["simpletuner-config", "T/r/train", "T/o.json", "--cache-dir", "L"],
        None,
    ),
    "simpletuner-config --cache-dir under the loop": (
        ["simpletuner-config", "T/r/train", "T/o.json", "--cache-dir", "L/cache"],
        None,
    ),
    "replay-history --remote the loop": (["replay-history", "T/dest", "--remote", "L"], REPO),
}


@pytest.mark.parametrize("case", fast_first(LOOPS, keep=3))  # the rest: -m slow
def test_a_loop_of_links_is_one_line(tmp_path, monkeypatch, capfd, case):
    argv, cwd = LOOPS[case]
    target = loop(tmp_path)
    argv = [a.replace("L", str(target), 1) if a.startswith("L") else a.replace("T", str(tmp_path), 1) for a in argv]
    before = sorted(os.listdir(tmp_path))
    done = cli(argv, cwd or tmp_path, monkeypatch, capfd)
    assert done.returncode == 2, done.stderr[-2000:]
    assert "a loop of symbolic links" in error_line(done.stderr)
    assert sorted(os.listdir(tmp_path)) == before  # nothing made: not o.json, not DEST


# ---------------------------------------------------------------- 3. diff: a table's path out of the release


def git(*args: str, cwd: Path) -> None:
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, env=env())


def release_repo(root: Path) -> Path:
    """A git repository with DVC and release r1 in its params.yaml, committed (r1's folder: the test's)."""
    root.mkdir(parents=True)
    git("init", "-q", "-b", "main", cwd=root)
    dvc_init(root)
    (root / "params.yaml").write_text("releases:\n  r1: {}\n", encoding="utf-8")
    (root / "data" / "releases" / "r1").mkdir(parents=True)
    git("add", "-A", cwd=root)
    git("commit", "-q", "-m", "base", cwd=root)
    return root


def rows_naming(release: Path, image: str) -> None:
    pd.DataFrame({"id": ["a", "b"], "source": ["s1"] * 2, "split": ["train", "validation"], "text": ["x", "y"]}).assign(
        image=[image, None]
    ).to_parquet(release / "rows.parquet")


def metadata_naming(release: Path, image: str) -> None:
    for split in ("train", "validation"):
        (release / split).mkdir()
        record = {"id": split[0], "source": "s1", "text": split, "file_name": image if split == "train" else "v.png"}
        (release / split / "metadata.jsonl").write_text(json.dumps(record) + "\n", encoding="utf-8")
    (release / "validation" / "v.png").write_bytes(b"\x89PNG")


OUT_OF_RELEASE = {  # case: (how the release names it, the path)
    "rows.parquet: up to params.yaml": (rows_naming, "../../../params.yaml"),
    "rows.parquet: an archive up and out": (rows_naming, "../../../params.yaml!/k1.png"),
    "rows.parquet: down then up and out": (rows_naming, "train/../../../../.dvcignore"),
    "metadata.jsonl: up to params.yaml": (metadata_naming, "../../../../params.yaml"),
    "metadata.jsonl: to another split's image": (metadata_naming, "../validation/v.png"),
}


@pytest.mark.parametrize("case", fast_first(OUT_OF_RELEASE, keep=3))  # the rest: -m slow
def test_diff_refuses_an_image_path_leaving_the_release(tmp_path, monkeypatch, capfd, case):
    write, image = OUT_OF_RELEASE[case]
    repo = release_repo(tmp_path / "repo")
    write(repo / "data" / "releases" / "r1", image)
    done = cli(["diff", "workspace", "workspace", "--repo", repo], repo, monkeypatch, capfd)
    assert done.returncode == 2, (done.stdout[-500:], done.stderr[-2000:])
    line = error_line(done.stderr)
    assert "leaves its folder" in line and repr(image) in line, line
    assert done.stdout == ""


def test_diff_still_compares_a_release_whose_images_stay_in_it(tmp_path, monkeypatch, capfd):
    repo = release_repo(tmp_path / "repo")
    release = repo / "data" / "releases" / "r1"
    (release / "train").mkdir()
    (release / "train" / "k1.png").write_bytes(b"\x89PNG")
    rows_naming(release, "train/k1.png")
    done = cli(["diff", "workspace", "workspace", "--repo", repo, "--format", "json"], repo, monkeypatch, capfd)
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout)["splits"]["train"]["rows_b"] == 1


# ---------------------------------------------------------------- 4. pr-comment / pr-build into the repository's data

INTO_THE_DATA = {  # case: (command, --out under the repository)
    "pr-comment into the release it compares": ("pr-comment", "data/releases/r1"),
    "pr-build into the release": ("pr-build", "data/releases/r1"),
    "pr-comment into DVC's cache": ("pr-comment", ".dvc/cache"),
    "pr-comment into data/": ("pr-comment", "data"),
    "pr-comment into .git": ("pr-comment", ".git"),
    "pr-build into .dvc": ("pr-build", ".dvc"),
}


@pytest.mark.parametrize("case", fast_first(INTO_THE_DATA, keep=3))  # the rest: -m slow
def test_a_side_tool_never_writes_into_the_repositorys_data(tmp_path, monkeypatch, capfd, case):
    command, out = INTO_THE_DATA[case]
    repo = release_repo(tmp_path / "repo")
    rows_naming(repo / "data" / "releases" / "r1", None)
    if command == "pr-build":  # a pipeline with nothing to build: pr-build went straight to writing build.json
        (repo / "dvc.yaml").write_text("stages: {}\n", encoding="utf-8")
        (repo / "params.yaml").write_text("releases: {}\n", encoding="utf-8")
        git("add", "-A", cwd=repo)
        git("commit", "-q", "-m", "no stages", cwd=repo)
    before = {p for p in repo.rglob("*") if ".git" not in p.relative_to(repo).parts[:1]}
    argv = [command, "HEAD", "--out", repo / out] + (["--repo", repo] if command == "pr-comment" else [])
    done = cli(argv, repo, monkeypatch, capfd)
    assert done.returncode == 2, done.stderr[-2000:]
    line = error_line(done.stderr)
    assert "the output is inside the input" in line and "choose another output path" in line, line
    assert {p for p in repo.rglob("*") if ".git" not in p.relative_to(repo).parts[:1]} == before
    assert not (repo / out / "comment.md").exists() and not (repo / out / "build.json").exists()


# ---------------------------------------------------------------- 5. HF_ENDPOINT that huggingface_hub cannot parse

BAD_ENDPOINTS = {  # huggingface_hub's import parsed it: `Port could not be cast to integer value as 'hf_...'`, twice
    "a token where the port goes": "https://hub.example:hf_PORTsecret12345",
    "a token after the port": "http://127.0.0.1:9;hf_SEMIsecret12345",
    "a token as the port after user:password@": "http://u:pw@hub.example:hf_USERport98765",
    "a port out of range": "http://hub.example:999999",
    "an IPv6 host never closed": "http://[::1",
}
SECRETS = ("secret", "98765", "999999", "[::1")  # each bad value's own part, lower-cased
GOOD_ENDPOINTS = ["", "https://huggingface.co", "http://127.0.0.1:8080/", "HTTPS://Hub.Example:443/api"]


@pytest.mark.parametrize("case", BAD_ENDPOINTS)
def test_a_bad_hf_endpoint_is_one_line_naming_it_never_its_value(monkeypatch, case):
    from scripts.lib.errors import DataError
    from scripts.lib.import_env import check_variables

    monkeypatch.setenv("HF_ENDPOINT", BAD_ENDPOINTS[case])
    with pytest.raises(DataError) as caught:
        check_variables("huggingface_hub")  # what runs just before huggingface_hub is first imported
    line = str(caught.value)
    assert line.startswith("HF_ENDPOINT: must be an http(s) URL") and "\n" not in line, line
    assert not any(secret in line.lower() for secret in SECRETS) and BAD_ENDPOINTS[case] not in line


@pytest.mark.parametrize("value", GOOD_ENDPOINTS)
def test_a_good_hf_endpoint_passes(monkeypatch, value):
    from scripts.lib.import_env import check_variables

    monkeypatch.setenv("HF_ENDPOINT", value)
    check_variables("huggingface_hub")


@pytest.mark.slow
@pytest.mark.parametrize("case", BAD_ENDPOINTS)
def test_publish_with_a_bad_hf_endpoint_is_one_line_without_it(tmp_path, case):
    from test_publish import tiny_release

    root = tiny_release(tmp_path / "repo")
    environ = {**env(), "PYTHONPATH": str(REPO), "HF_ENDPOINT": BAD_ENDPOINTS[case], "HF_TOKEN": "hf_TOKENsecret99999"}
    done = subprocess.run(
        [sys.executable, "-m", "scripts", "publish", "v2", "--repo-id", "a/b", "--dry-run"],
        cwd=root,
        env=environ,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 2, done.stderr[-2000:]
    line = error_line(done.stderr)  # huggingface_hub's own `Error importing ...` line was a second one
    assert line.startswith("error: HF_ENDPOINT: "), line
    assert not any(secret in (done.stdout + done.stderr).lower() for secret in SECRETS), done.stderr
    assert not (root / "dist").exists()


# ---------------------------------------------------------------- 6. publish: a row's image that is no image


def rows_table_of(release: Path) -> pd.DataFrame:
    """The ImageFolder release's rows as rows.parquet records them (image: the path in the release)."""
    frames = []
    for split in ("train", "validation"):
        lines = (release / split / "metadata.jsonl").read_text(encoding="utf-8").splitlines()
        records = [json.loads(line) for line in lines]
        frames.append(pd.DataFrame(records).assign(split=split, image=[f"{split}/{r['file_name']}" for r in records]))
    return pd.concat(frames, ignore_index=True).drop(columns=["file_name"])


def metadata_lists(release: Path, name: str) -> None:
    path = release / "train" / "metadata.jsonl"
    records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    records[0]["file_name"] = name
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")


def rows_list(release: Path, name: str) -> None:
    rows = rows_table_of(release)
    rows.loc[0, "image"] = name
    rows.to_parquet(release / "rows.parquet")


NOT_IMAGES = {  # case: (how the release lies, the name of a file in it that is no image)
    "metadata.jsonl naming itself": (metadata_lists, "metadata.jsonl"),
    "metadata.jsonl naming itself down and up": (metadata_lists, "images/diffusiondb/../../metadata.jsonl"),
    "rows.parquet naming the card": (rows_list, "README.md"),
    "rows.parquet naming itself": (rows_list, "rows.parquet"),
    "rows.parquet naming a split's metadata": (rows_list, "train/metadata.jsonl"),
}


@pytest.mark.parametrize("case", fast_first(NOT_IMAGES, keep=3))  # the rest: -m slow
def test_publish_refuses_a_row_whose_image_is_no_image_file(tmp_path, monkeypatch, capfd, case):
    from test_publish import tiny_release

    lie, name = NOT_IMAGES[case]
    root = tiny_release(tmp_path / "repo")
    lie(root / "data" / "releases" / "v2", name)
    done = cli(["publish", "v2", "--repo-id", "a/b", "--dry-run", "--out", "hub"], root, monkeypatch, capfd)
    assert done.returncode == 2, done.stdout[-500:] + done.stderr[-2000:]
    line = error_line(done.stderr)
    assert "has no image extension" in line and "refusing to read it as an image" in line, line
    assert not (root / "hub").exists()


def test_publish_still_reads_a_rows_table_of_images(tmp_path, monkeypatch, capfd):
    from test_publish import tiny_release

    root = tiny_release(tmp_path / "repo")
    rows_table_of(root / "data" / "releases" / "v2").to_parquet(root / "data" / "releases" / "v2" / "rows.parquet")
    done = cli(["publish", "v2", "--repo-id", "a/b", "--dry-run", "--out", "hub"], root, monkeypatch, capfd)
    assert done.returncode == 0, done.stderr[-2000:]
    assert len(list((root / "hub" / "data").glob("*.parquet"))) == 2


# ---------------------------------------------------------------- 7. the workspace's params.yaml / dvc.lock through a link out

OUTSIDE = "releases:\n  r1: {}\nstages: {}\n"  # good YAML for either file: what was read is the question
LINKED_OUT = {  # case: (command's argv but --repo/--out, the file linked out, the link's target: absolute or relative)
    "diff: params.yaml to an absolute path": (["diff", "HEAD", "workspace"], "params.yaml", "abs"),
    "diff: params.yaml up and out": (["diff", "workspace", "workspace"], "params.yaml", "rel"),
    "pr-comment: params.yaml to an absolute path": (["pr-comment", "HEAD", "workspace"], "params.yaml", "abs"),
    "pr-comment: dvc.lock to an absolute path": (["pr-comment", "HEAD", "workspace"], "dvc.lock", "abs"),
    "pr-comment: dvc.lock up and out": (["pr-comment", "HEAD", "workspace"], "dvc.lock", "rel"),
}


@pytest.mark.parametrize("case", fast_first(LINKED_OUT, keep=3))  # the rest: -m slow
def test_a_repository_file_linked_out_of_it_is_never_read(tmp_path, monkeypatch, capfd, case):
    argv, name, how = LINKED_OUT[case]
    repo = release_repo(tmp_path / "repo")
    rows_naming(repo / "data" / "releases" / "r1", None)
    (tmp_path / "elsewhere.yaml").write_text(OUTSIDE, encoding="utf-8")
    (repo / name).unlink(missing_ok=True)
    (repo / name).symlink_to(tmp_path / "elsewhere.yaml" if how == "abs" else Path("..") / "elsewhere.yaml")
    out = ["--out", tmp_path / "o"] if argv[0] == "pr-comment" else []
    done = cli([*argv, "--repo", repo, *out], repo, monkeypatch, capfd)
    assert done.returncode == 2, done.stderr[-2000:]
    line = error_line(done.stderr)
    assert f"{name}: a link on its way leads out of the repository; refusing to read it" in line, line
    assert not (tmp_path / "o").exists()


def test_a_repository_file_linked_inside_it_is_read(tmp_path, monkeypatch, capfd):
    repo = release_repo(tmp_path / "repo")
    rows_naming(repo / "data" / "releases" / "r1", None)
    (repo / "conf").mkdir()
    (repo / "params.yaml").rename(repo / "conf" / "params.yaml")
    (repo / "params.yaml").symlink_to(Path("conf") / "params.yaml")
    done = cli(["diff", "workspace", "workspace", "--repo", repo, "--format", "json"], repo, monkeypatch, capfd)
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout)["release_b"] == "r1"
