"""Round 25c: side files read whole, or taken for absent, one table per class (every row failed before its fix).
A hang fails fast: the in-process rows run under an alarm, the others as real `python -m scripts` processes with
a timeout (and a memory limit where /dev/zero is read).

1. A revision's dvc.lock (pr-comment, pr-build) and params.yaml (diff, pr-comment) were read whole (`git show`,
   DVC's git reader), then parsed: a 64 MiB lock took minutes and gigabytes, a folder named dvc.lock was read as
   its listing's text. Its size is asked first and a file over the cap is one line (lock_text.lock_at: `git
   cat-file --batch-check`, then the blob through a pipe up to the cap; diff.releases_at: the file's size).
2. A bucketed export's manifest.json was read whole before anything was checked, and a FIFO, folder or device
   there was "not found" (readers.webdataset.manifest_shards): now read by io.bounded_bytes (a cap of 64 MiB,
   MAX_MANIFEST_BYTES) and a manifest that is no regular file says what it is (io.present_file).
3. A release's rows.parquet that is a FIFO, a folder, a socket or a link to nothing was taken for absent: plots
   read the release's metadata.jsonl instead, at exit 0 (export.read_rows_table, io.present_file); a
   metadata.jsonl whose bytes are not UTF-8 was a UnicodeDecodeError traceback (export.read_metadata).
4. A model folder's config.json or model_index.json that is a FIFO hung generate for good, and one linked to
   /dev/zero was read until memory ran out (render_plan.model_config: io.config_text).
5. The dvc.lock above an output that the output check reads (does DVC record these bytes?) was read whole: a
   2 GiB one was "out of memory" under a 1 GiB limit (gigabytes without one); one over the cap now proves
   nothing (dvc_cache._lock_text).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from helpers.commands import cli
from helpers.repos import GIT_ENV
from helpers.tiers import fast_first
from helpers.workspace import PARAMS, error_line, run_scripts, write_params

CAP = 64 << 20  # the cap of every side file here (io.MAX_CONFIG_BYTES)
pytestmark = pytest.mark.usefixtures("no_proxy")


@pytest.fixture(autouse=True)
def alarm():
    """An in-process command that hangs (a FIFO opened for reading) or parses for minutes fails the row."""

    def hung(signum, frame):
        raise TimeoutError("the command hung (or read for over 20 s)")

    previous = signal.signal(signal.SIGALRM, hung)
    signal.alarm(20)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


def git(root: Path, *args: str, data: bytes | None = None) -> str:
    done = subprocess.run(
        ["git", *args], cwd=root, input=data, capture_output=True, check=True, env={**os.environ, **GIT_ENV}
    )
    return done.stdout.decode().strip()


def commit_with(root: Path, name: str, files: dict[str, str | None]) -> None:
    """Branch `name`: main with `files` (path -> a blob's id, None: a folder holding one file), made without
    touching the workspace."""
    env = {**os.environ, **GIT_ENV, "GIT_INDEX_FILE": str(root / ".git" / f"index-{name}")}
    subprocess.run(["git", "read-tree", "main"], cwd=root, env=env, check=True)
    for path, blob in files.items():
        subprocess.run(["git", "rm", "-q", "--cached", "--ignore-unmatch", path], cwd=root, env=env, check=True)
        target = path if blob is not None else f"{path}/x"
        blob = blob or git(root, "hash-object", "-w", "--stdin", data=b"x\n")
        subprocess.run(["git", "update-index", "--add", "--cacheinfo", f"100644,{blob},{target}"], cwd=root, env=env)
    tree = subprocess.run(["git", "write-tree"], cwd=root, env=env, capture_output=True, check=True).stdout.strip()
    git(root, "branch", name, git(root, "commit-tree", tree.decode(), "-p", "main", "-m", name))


# 64 MiB + 1 byte of YAML, a comment padding it: a dvc.lock or a params.yaml (with no releases)
BIG = b"stages: {}\n" + b"#" * (CAP + 1 - len(b"stages: {}\n"))


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    """main (release r1, a dvc.lock) and tree (a folder named dvc.lock); big_branches adds the others."""
    root = tmp_path_factory.mktemp("r25c") / "repo"
    root.mkdir()
    git(root, "init", "-q", "-b", "main")
    (root / ".dvc").mkdir()  # a DVC repository (dvc_init's real `dvc init` is seconds of imports)
    (root / ".dvc" / "config").write_text("")
    (root / "params.yaml").write_text("releases:\n  r1: {}\n", encoding="utf-8")
    (root / "dvc.lock").write_text("schema: '2.0'\nstages: {}\n", encoding="utf-8")
    (root / "data" / "releases" / "r1").mkdir(parents=True)
    rows = {"id": ["a"], "source": ["s1"], "split": ["train"], "text": ["x"], "image": [None]}
    pq.write_table(pa.table(rows), root / "data" / "releases" / "r1" / "rows.parquet")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "base")
    commit_with(root, "tree", {"dvc.lock": None})
    return root


@pytest.fixture(scope="module")
def big_branches(repo) -> None:
    """big (a dvc.lock of 64 MiB + 1) and bigparams (params.yaml of the same bytes): a second to hash."""
    big = git(repo, "hash-object", "-w", "--stdin", data=BIG)
    commit_with(repo, "big", {"dvc.lock": big})
    commit_with(repo, "bigparams", {"params.yaml": big})


# ---------------------------------------------------------------- 1. a revision's dvc.lock and params.yaml

REVISION_FILES = {  # case: (argv, what the line starts with, what it says)
    "pr-comment: a folder named dvc.lock at the base": (
        ["pr-comment", "tree", "main"],
        "tree:dvc.lock: is a git tree",
        "not a file",
    ),
    "pr-comment: the base's dvc.lock over the cap": (
        ["pr-comment", "big", "main"],
        "big:dvc.lock: 67,108,865 bytes",
        "over the 67,108,864",
    ),
    "pr-comment: the head's dvc.lock over the cap": (
        ["pr-comment", "main", "big"],
        "",  # the head is named by its commit (pr-comment passes it on so)
        "refusing to read it",
    ),
    "diff: params.yaml at a revision over the cap": (
        ["diff", "bigparams", "main"],
        "bigparams:params.yaml: larger than 67108864 bytes",
        "refusing to read it",
    ),
    "pr-comment: params.yaml at the head over the cap": (
        ["pr-comment", "main", "bigparams"],
        "bigparams:params.yaml: larger than 67108864 bytes",  # the head's, named by its revision
        "refusing to read it",
    ),
}


@pytest.mark.parametrize("case", fast_first(REVISION_FILES, keep=1))  # the others hash 64 MiB: -m slow
def test_a_revision_s_side_file_over_the_cap_is_one_line(repo, request, tmp_path, monkeypatch, capfd, case):
    argv, starts, says = REVISION_FILES[case]
    if "tree" not in argv:
        request.getfixturevalue("big_branches")
    out = ["--out", tmp_path / "o"] if argv[0] == "pr-comment" else []
    done = cli([*argv, "--repo", repo, *out], repo, monkeypatch, capfd)
    assert done.returncode == 2, done.stderr[-2000:]
    line = error_line(done.stderr)
    assert line.startswith(f"error: {starts}") and says in line, line
    assert not (tmp_path / "o").exists()


def test_the_workspace_s_dvc_lock_over_the_cap_is_one_line(repo, tmp_path, monkeypatch, capfd):
    """The workspace's lock is bounded as params.yaml is: over the cap, one line before it is parsed."""
    lock = repo / "dvc.lock"
    kept = lock.read_bytes()
    lock.write_bytes(BIG)
    try:
        done = cli(["pr-comment", "main", "--repo", repo, "--out", tmp_path / "o"], repo, monkeypatch, capfd)
    finally:
        lock.write_bytes(kept)
    line = error_line(done.stderr)
    assert done.returncode == 2 and line.endswith("dvc.lock: larger than 67108864 bytes; refusing to read it"), line


@pytest.mark.slow  # pr-build runs `dvc status` first (seconds of imports)
def test_pr_build_refuses_a_base_dvc_lock_over_the_cap(repo, big_branches, tmp_path):
    done = run_scripts(
        repo, "pr-build", "big", "--out", str(tmp_path / "o"), "--base-dir", str(tmp_path / "b"), timeout=120
    )
    line = error_line(done.stderr)
    assert done.returncode == 2 and ":dvc.lock: 67,108,865 bytes, over" in line, done.stderr
    assert not (tmp_path / "o").exists()


def test_a_revision_s_side_files_under_the_cap_are_still_read(repo, tmp_path, monkeypatch, capfd):
    done = cli(["diff", "main", "workspace", "--repo", repo, "--format", "json"], repo, monkeypatch, capfd)
    assert done.returncode == 0 and json.loads(done.stdout)["release_b"] == "r1", done.stderr[-2000:]


# ---------------------------------------------------------------- 2. a bucketed export's manifest.json


def _fifo(path: Path) -> None:
    os.mkfifo(path)


def _folder(path: Path) -> None:
    path.mkdir()
    (path / "x").write_text("{}")


def _socket(path: Path) -> None:
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(path))


def _over_the_cap(path: Path) -> None:
    with open(path, "wb") as f:  # sparse: 64 MiB + 1 of NULs, no disk
        f.truncate(CAP + 1)


MANIFESTS = {  # case: (make data/raw/s/manifest.json, what the line says)
    "a manifest over the cap": (_over_the_cap, "larger than 67108864 bytes; refusing to read it"),
    "a FIFO": (_fifo, "is a FIFO, not a regular file"),
    "a folder": (_folder, "is a folder, not a regular file"),
    "a socket": (_socket, "is a socket, not a regular file"),
}


@pytest.mark.parametrize("case", MANIFESTS)
def test_a_manifest_that_is_no_bounded_file_is_one_line(tmp_path, monkeypatch, capfd, case):
    make, says = MANIFESTS[case]
    raw = tmp_path / "data" / "raw" / "s"
    raw.mkdir(parents=True)
    make(raw / "manifest.json")
    source = {"path": "data/raw/s", "kind": "bucketed_webdataset", "images": "data/raw/s"}
    write_params(tmp_path, sources={**PARAMS["sources"], "s": source})
    done = cli(["ingest", "s", "data/prompts/s.parquet"], tmp_path, monkeypatch, capfd)
    line = error_line(done.stderr)
    assert done.returncode == 2 and line.startswith(f"error: data/raw/s/manifest.json: {says}"), line
    assert not (tmp_path / "data" / "prompts").exists()


# ---------------------------------------------------------------- 3. plots: a rows.parquet that is no file


def _dangling(path: Path) -> None:
    path.symlink_to("gone.parquet")


ROWS_TABLES = {  # case: (make data/releases/r/rows.parquet, what the line says)
    "a FIFO": (_fifo, "is a FIFO, not a regular file; refusing to read it"),
    "a folder": (_folder, "is a folder, not a regular file; refusing to read it"),
    "a socket": (_socket, "is a socket, not a regular file; refusing to read it"),
    "a link to nothing": (_dangling, "a symbolic link to nothing (gone.parquet)"),
}


def _plots_workspace(root: Path) -> Path:
    """What plots reads, for a release r from before rows.parquet (its metadata.jsonl): r's folder."""
    release = root / "data" / "releases" / "r"
    for split in ("train", "validation"):
        (release / split).mkdir(parents=True)
        (release / split / "metadata.jsonl").write_text(json.dumps({"source": "diffusiondb", "text": "a fox"}) + "\n")
    (root / "data" / "clean").mkdir()
    (root / "data" / "clean" / "diffusiondb.report.json").write_text('{"dropped_by_reason": {}}')
    (root / "data" / "dedup").mkdir()
    clusters = pa.table({"id": ["a"], "duplicate_of": ["k"], "jaccard": [0.9]})
    pq.write_table(clusters, root / "data" / "dedup" / "diffusiondb.clusters.parquet")
    components = [{"source": "diffusiondb", "split": s, "into": s} for s in ("train", "validation")]
    write_params(
        root, releases={"r": {"components": components}}, sources={"diffusiondb": PARAMS["sources"]["diffusiondb"]}
    )
    return release


PLOTS = ["plots", "data/releases", "data/clean", "data/dedup", "data/plots"]


@pytest.mark.parametrize("case", ROWS_TABLES)
def test_plots_refuses_a_rows_table_that_is_no_file(tmp_path, monkeypatch, capfd, case):
    """plots read the release's metadata.jsonl instead, at exit 0, without a word."""
    make, says = ROWS_TABLES[case]
    make(_plots_workspace(tmp_path) / "rows.parquet")
    done = cli(PLOTS, tmp_path, monkeypatch, capfd)
    line = error_line(done.stderr)
    assert done.returncode == 2 and line == f"error: data/releases/r/rows.parquet: {says}", line
    assert not (tmp_path / "data" / "plots").exists()


NOT_UTF8 = {  # case: (metadata.jsonl's bytes, the byte the line names)
    "a Latin-1 caption": (b'{"source": "diffusiondb", "text": "caf\xe9"}\n', 38),
    "UTF-16 with its mark": ('{"source": "diffusiondb", "text": "x"}\n'.encode("utf-16"), 0),
    "a character cut at the end": (b'{"source": "diffusiondb", "text": "x"}\n\xe2\x82', 39),
}


@pytest.mark.parametrize("case", NOT_UTF8)
def test_plots_names_a_metadata_file_that_is_not_utf8(tmp_path, monkeypatch, capfd, case):
    """A UnicodeDecodeError traceback (exit 1) before: export.read_metadata, plots' and publish's reader."""
    data, byte = NOT_UTF8[case]
    (_plots_workspace(tmp_path) / "train" / "metadata.jsonl").write_bytes(data)
    done = cli(PLOTS, tmp_path, monkeypatch, capfd)
    line = error_line(done.stderr)
    assert done.returncode == 2, done.stderr[-2000:]
    assert line == f"error: data/releases/r/train/metadata.jsonl: byte {byte}: not UTF-8 text", line


# ---------------------------------------------------------------- 5. the dvc.lock an output check reads

LOCKS_READ = {  # case: where a sparse dvc.lock of 2 GiB is (the repository's, or one above the output in it)
    "the repository's dvc.lock": "dvc.lock",
    "a dvc.lock in a folder above the output": "data/dvc.lock",
    "a dvc.lock beside the output": "data/plots/dvc.lock",
}


@pytest.mark.slow  # a real process under a memory limit: seconds each
@pytest.mark.parametrize("case", LOCKS_READ)
def test_an_output_check_never_reads_a_dvc_lock_over_the_cap(tmp_path, case):
    """Every output check read the dvc.lock above the output whole: 2 GiB under a 1 GiB limit was "out of memory
    (a smaller input ... may fit)", blaming the input; now the lock proves nothing and the check says why."""
    _plots_workspace(tmp_path)
    (tmp_path / "data" / "plots").mkdir()
    (tmp_path / "data" / "plots" / "source_mix.csv").write_text("a user's file\n")
    with open(tmp_path / LOCKS_READ[case], "wb") as lock:
        lock.truncate(2 << 30)  # sparse: no disk
    done = run_scripts(tmp_path, *PLOTS, timeout=60, memory=1 << 30)
    line = error_line(done.stderr)
    assert done.returncode == 2 and line.startswith("error: data/plots/source_mix.csv: exists and this command"), line
    assert (tmp_path / "data" / "plots" / "source_mix.csv").read_text() == "a user's file\n"


# ---------------------------------------------------------------- 4. generate: a model's config that is no file


def _zero(path: Path) -> None:
    path.unlink()
    path.symlink_to("/dev/zero")


def _fifo_over(path: Path) -> None:
    path.unlink()
    os.mkfifo(path)


MODEL_CONFIGS = {  # case: (the model folder's file, make it, what the line says)
    "unet/config.json a FIFO": ("unet/config.json", _fifo_over, "is a FIFO, not a regular file"),
    "model_index.json a FIFO": ("model_index.json", _fifo_over, "is a FIFO, not a regular file"),
    "vae/config.json linked to /dev/zero": ("vae/config.json", _zero, "is a device, not a regular file"),
}


@pytest.mark.slow  # a real process (torch's import): seconds each
@pytest.mark.parametrize("case", MODEL_CONFIGS)
def test_generate_refuses_a_model_config_that_is_no_file(tmp_path, case):
    name, make, says = MODEL_CONFIGS[case]
    model = tmp_path / "models" / "m"
    for rel, config in {
        "model_index.json": {"scheduler": ["diffusers", "DDIMScheduler"]},
        "unet/config.json": {"sample_size": 8},
        "vae/config.json": {"block_out_channels": [4, 4]},
    }.items():
        (model / rel).parent.mkdir(parents=True, exist_ok=True)
        (model / rel).write_text(json.dumps(config))
    make(model / name)
    generate = {**PARAMS["generate"], "model": "models/m", "height": "model", "width": "model", "device": "cpu"}
    write_params(tmp_path, generate=generate)
    rows = {"id": ["a"], "source": ["s"], "prompt": ["a fox"]}
    pq.write_table(pa.table(rows), tmp_path / "p.parquet")
    done = run_scripts(tmp_path, "generate", "s", "p.parquet", "out", timeout=60, memory=4 << 30)
    line = error_line(done.stderr)
    assert done.returncode == 2 and line == f"error: models/m/{name}: {says}; refusing to read it", line
    assert not (tmp_path / "out").exists()
