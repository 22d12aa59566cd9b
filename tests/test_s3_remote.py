"""S3 remote round trip on a real S3 server on loopback (moto's ThreadedMotoServer, as dvc-s3's own
tests use): push the session's built pipeline (from a work copy of it), clone fresh, `dvc pull`,
compare bytes with the build; credentials live only in
.dvc/config.local or the environment and never reach a committed file or a log.

The server runs in this process; moto keeps the buckets in process memory, so a server stopped and
started again on the same port serves the same objects (test_interrupts.py relies on that).
"""

from __future__ import annotations

import hashlib
import logging
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import pytest

from helpers import env, run, work_copy

# Fake credentials moto accepts, made up per run so no file (this one included) holds them: a test
# can then grep logs and git history for them.
_RUN = hashlib.sha256(uuid.uuid4().hex.encode()).hexdigest()
ACCESS_KEY = "AKIA" + _RUN[:16].upper()
SECRET_KEY = "trust-secret-" + _RUN[16:48]
MOTO_ACCOUNT = "123456789012"


class S3Server:
    """A moto S3 server on 127.0.0.1 that can be stopped (socket closed) and started on the same port."""

    def __init__(self) -> None:
        self.port = 0
        self._server = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> S3Server:
        from moto.server import ThreadedMotoServer

        self._server = ThreadedMotoServer("127.0.0.1", self.port, verbose=False)
        self._server.start()
        self.port = self._server.get_host_and_port()[1]
        return self

    def stop(self) -> None:
        """Stop serving and close the listening socket: new connections are refused, like a dead host."""
        if self._server is not None:
            self._server.stop()
            self._server._server.server_close()  # stop() alone leaves the port accepting connections
            self._server = None

    def client(self):
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name="us-east-1",
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
        )


def object_count(bucket: str) -> int:
    """Objects in a bucket, read from moto's in-process state (works while the server is down)."""
    from moto.s3.models import s3_backends

    buckets = s3_backends[MOTO_ACCOUNT]["aws"].buckets
    return len(buckets[bucket].keys) if bucket in buckets else 0


@pytest.fixture
def s3_server():
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one log line per request otherwise
    server = S3Server().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def bucket(s3_server) -> str:
    name = f"t2i-{uuid.uuid4().hex[:12]}"
    s3_server.client().create_bucket(Bucket=name)
    return name


def aws_env(with_credentials: bool) -> dict:
    """The test env with no real AWS config reachable, and the fake credentials only if asked."""
    empty = Path(tempfile.gettempdir()) / "t2i-tests-empty-aws-config"
    empty.touch()
    e = {k: v for k, v in env().items() if not k.startswith("AWS_")}
    e.update(
        AWS_CONFIG_FILE=str(empty),
        AWS_SHARED_CREDENTIALS_FILE=str(empty),
        AWS_EC2_METADATA_DISABLED="true",
        AWS_DEFAULT_REGION="us-east-1",
    )
    if with_credentials:
        e.update(AWS_ACCESS_KEY_ID=ACCESS_KEY, AWS_SECRET_ACCESS_KEY=SECRET_KEY)
    return e


def dvc(args: list[str], cwd: Path, with_credentials: bool = False, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [sys.executable, "-m", "dvc", *args], cwd=cwd, env=aws_env(with_credentials), capture_output=True, text=True
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"dvc {' '.join(args)} failed ({result.returncode}):\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
        )
    return result


def add_s3_remote(repo: Path, server: S3Server, bucket: str) -> None:
    """The README's recipe: url and endpoint committed, credentials in .dvc/config.local only."""
    run(["dvc", "remote", "add", "-d", "s3", f"s3://{bucket}/t2i-datasets"], repo)
    run(["dvc", "remote", "modify", "s3", "endpointurl", server.endpoint], repo)
    run(["dvc", "remote", "modify", "--local", "s3", "access_key_id", ACCESS_KEY], repo)
    run(["dvc", "remote", "modify", "--local", "s3", "secret_access_key", SECRET_KEY], repo)
    run(["git", "add", ".dvc/config"], repo)
    run(["git", "commit", "-q", "-m", "s3 remote"], repo)


def tracked_outputs(repo: Path) -> list[str]:
    """Every output path of dvc.lock and of .dvc files (metrics included), relative to the repo root."""
    import yaml

    paths = []
    lock = repo / "dvc.lock"
    if lock.exists():
        for stage in (yaml.safe_load(lock.read_text()) or {}).get("stages", {}).values():
            paths += [o["path"] for o in stage.get("outs", [])]
    for dvcfile in repo.rglob("*.dvc"):
        if dvcfile.is_file() and not {".dvc", ".git"} & set(dvcfile.relative_to(repo).parts[:-1]):
            base = dvcfile.parent.relative_to(repo)
            paths += [str(base / o["path"]) for o in yaml.safe_load(dvcfile.read_text())["outs"]]
    return sorted(paths)


def cached_outputs(repo: Path) -> list[str]:
    """The outputs DVC caches and pushes (every one but `cache: false` metrics), as DVC itself sees them."""
    from dvc.repo import Repo

    with Repo(str(repo)) as dvc_repo:
        return sorted(str(out.def_path) for stage in dvc_repo.index.stages for out in stage.outs if out.use_cache)


def file_digests(repo: Path, paths: list[str]) -> dict[str, str]:
    """sha256 of every file under the given paths (files or folders), keyed by repo-relative path."""
    digests = {}
    for top in paths:
        root = repo / top
        files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
        for file in files:
            digests[str(file.relative_to(repo))] = hashlib.sha256(file.read_bytes()).hexdigest()
    return digests


def fresh_clone(repo: Path, dest: Path) -> Path:
    run(["git", "clone", "-q", str(repo), str(dest)], repo.parent)
    assert not (dest / ".dvc" / "config.local").exists()
    return dest


def assert_no_secret_committed(repo: Path) -> None:
    committed = run(["git", "show", "HEAD:.dvc/config"], repo).stdout
    assert "endpointurl" in committed and "s3://" in committed
    assert SECRET_KEY not in committed and ACCESS_KEY not in committed
    assert "secret_access_key" not in committed and "access_key_id" not in committed
    every_blob = run(["git", "log", "-p", "--all"], repo).stdout
    assert SECRET_KEY not in every_blob and ACCESS_KEY not in every_blob
    assert SECRET_KEY in (repo / ".dvc" / "config.local").read_text()  # where it does live
    assert ".dvc/config.local" not in run(["git", "ls-files"], repo).stdout


# ------------------------------------------------------------------ a small repo (fast, no build)


def small_repo(root: Path, files: int = 20) -> Path:
    root.mkdir(parents=True)
    run(["git", "init", "-q", "-b", "main"], root)
    run(["dvc", "init", "-q"], root)
    data = root / "data"
    for i in range(files):
        folder = data / f"part{i % 4}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{i:03d}.bin").write_bytes(hashlib.sha256(str(i).encode()).digest() * (64 + i))
    (root / "single.txt").write_text("one file tracked on its own\n")
    run(["dvc", "add", "-q", "data", "single.txt"], root)
    run(["git", "add", "-A"], root)
    run(["git", "commit", "-q", "-m", "data"], root)
    return root


def test_small_repo_round_trip(tmp_path, s3_server, bucket):
    repo = small_repo(tmp_path / "repo")
    add_s3_remote(repo, s3_server, bucket)
    assert_no_secret_committed(repo)
    pushed = dvc(["push", "-v"], repo)  # credentials from .dvc/config.local
    assert SECRET_KEY not in pushed.stdout + pushed.stderr
    assert object_count(bucket) == 20 + 1 + 1  # every file, the single file and the .dir listing

    clone = fresh_clone(repo, tmp_path / "clone")
    denied = dvc(["pull"], clone, check=False)  # no config.local, no env: no credentials at all
    assert denied.returncode != 0
    dvc(["pull"], clone, with_credentials=True)  # the clone gets them from the environment
    outputs = tracked_outputs(repo)
    assert outputs == ["data", "single.txt"]
    assert file_digests(clone, outputs) == file_digests(repo, outputs)
    assert len(file_digests(clone, outputs)) == 21
    assert dvc(["status", "-c", "--json"], clone, with_credentials=True).stdout.strip() in ("{}", "")


# ------------------------------------------------------------------ the built pipeline


@pytest.fixture(scope="module")
def pushed_and_pulled(history, tmp_path_factory):
    """The built pipeline pushed to S3 (credentials in config.local) from a work copy of the session build
    (clone + its cache, no workspace: a push reads the cache) and pulled into a fresh clone of that.
    Its readers are in xdist group `s3`: one worker pushes once and runs them all."""
    tmp = tmp_path_factory.mktemp("s3-pushed-and-pulled")
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    server = S3Server().start()
    try:
        name = f"t2i-{uuid.uuid4().hex[:12]}"
        server.client().create_bucket(Bucket=name)
        repo = work_copy(history.repo, tmp / "repo", checkout=False)
        add_s3_remote(repo, server, name)
        pushed = dvc(["push", "-v"], repo)
        remote_status = dvc(["status", "-c", "--json"], repo).stdout.strip()
        clone = fresh_clone(repo, tmp / "clone")
        dvc(["pull"], clone, with_credentials=True)
        return {
            "repo": repo,
            "built": history.repo,
            "clone": clone,
            "log": pushed.stdout + pushed.stderr,
            "remote_status": remote_status,
        }
    finally:
        server.stop()


@pytest.mark.xdist_group("s3")
def test_built_pipeline_push_keeps_secrets_out(pushed_and_pulled):
    repo = pushed_and_pulled["repo"]
    assert_no_secret_committed(repo)
    assert SECRET_KEY not in pushed_and_pulled["log"]
    assert pushed_and_pulled["remote_status"] in ("{}", "")  # everything in the cache is on the remote


@pytest.mark.xdist_group("s3")
def test_built_pipeline_pull_is_byte_identical(pushed_and_pulled):
    built, clone = pushed_and_pulled["built"], pushed_and_pulled["clone"]
    outputs = cached_outputs(pushed_and_pulled["repo"])
    assert {f"data/releases/{r}/{s}" for r in ("v2", "v3", "v4-a", "v4-b") for s in ("train", "validation")} <= set(
        outputs
    )
    ours, theirs = file_digests(built, outputs), file_digests(clone, outputs)
    assert theirs == ours
    assert sum(1 for p in theirs if p.startswith("data/releases/") and p.endswith(".jpg")) > 100


@pytest.mark.xdist_group("s3")
def test_a_pulled_clone_is_complete_and_up_to_date(pushed_and_pulled):
    """Every output in dvc.lock, metrics included, reaches a clone (through git or the remote)."""
    built, clone = pushed_and_pulled["built"], pushed_and_pulled["clone"]
    outputs = tracked_outputs(pushed_and_pulled["repo"])
    missing = sorted(set(file_digests(built, outputs)) - set(file_digests(clone, outputs)))
    assert not missing, f"{len(missing)} outputs reach neither git nor the remote, e.g. {missing[:3]}"
    status = run("dvc status --json", clone)
    assert status.stdout.strip() in ("{}", ""), status.stdout[:2000]
