"""Shared test fixtures.

One pipeline build per test session: `history`, the reference history (`python -m scripts
replay-history`: v2 -> v3 -> v4-a -> v4-b as four commits and tags, each pushed to a local DVC
remote) replayed from a copy of this working tree. Its workspace at v4-b is every stage built
(`built_repo`). It is READ-ONLY: a test that changes a repository (`dvc exp run`, a killed repro,
a push to S3) works on `work_copy(...)` (git clone + hardlinked DVC cache), and the fixture checks at
the end of the session that no test changed it.

Tests that need it are marked `slow` automatically and run last; when any is selected, the build
starts in the background as soon as collection ends (a serial chain of stage processes) and the first
test that needs it waits for it. The suite runs in pytest-xdist workers (pytest.ini: one per core, at
most 4): the first worker whose tests need the build starts it in a folder the controller named, and
every worker reads that one build. While iterating on slow tests, T2I_TESTS_HISTORY=DIR reuses a
replay made earlier with `python -m scripts replay-history DIR/repo --remote DIR/remote` (CI never
sets it); `-n 0` runs in one process.

Tests that exercise `python -m scripts` for its exit code and error line call `cli(...)` (the same
`scripts.cli.main`, in this process); a few subprocess smoke tests keep the real process path tested.
"""
from __future__ import annotations

import io
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
import traceback
import uuid
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, NamedTuple

import pytest

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO.parent / "shared" / "fixtures"
GIT_ENV = {"GIT_AUTHOR_NAME": "test", "GIT_AUTHOR_EMAIL": "test@example.invalid",
           "GIT_COMMITTER_NAME": "test", "GIT_COMMITTER_EMAIL": "test@example.invalid"}
# One thread for torch here and in every stage subprocess (env() copies os.environ): CI's setting,
# and two cores shared by torch threads and parallel work only slow each other down.
for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")
# A suite started from a non-interactive shell's background job inherits SIGINT ignored, and so would every
# process it starts (an ignored signal stays ignored across exec): the Ctrl-C tests need Python's default.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)
HISTORY_FIXTURES = {"history", "built_repo"}  # tests using these need the session build: slow


# The heaviest tests of files whose owners have not marked them (node ids; a missing one is ignored):
# each builds a DVC pipeline or starts a Ray instance.
SLOW_ELSEWHERE = {
    "tests/test_generate.py::test_dvc_repro_is_reproducible_and_incremental",
    "tests/test_generate.py::test_sigkill_at_several_points_then_rerun_equals_an_uninterrupted_run",
    "tests/test_generate.py::test_ray_engine_gives_the_same_bytes",
}


def fixtures(item) -> set[str]:
    return set(getattr(item, "fixturenames", ()))


def uses_history(item) -> bool:
    return bool({"history_soon", *HISTORY_FIXTURES} & fixtures(item))


# Values built once per session from the build (computed_once): the test named here builds it and runs
# first among the build's readers; every other test reading it runs last, so that no xdist worker sits
# waiting while another computes it (the last CI run: 28 s of one worker idle on the S3 push).
COMPUTED_BY = {
    "readme_run": "tests/test_readme.py::test_readme_blocks_run_in_a_copy_of_the_build",
    "pushed_and_pulled": "tests/test_s3_remote.py::test_built_pipeline_push_keeps_secrets_out",
}


def run_order(item) -> int:
    """Fast tests first, then slow ones that need no session build (all beside the background build),
    then those that do their own builds before they read the session's (`history_soon`), then those
    that need it from the start (those that compute a shared value first, its other readers last)."""
    for fixture, first in COMPUTED_BY.items():
        if fixture in fixtures(item):
            return 3 if item.nodeid == first else 5
    if HISTORY_FIXTURES & fixtures(item):
        return 4
    return 2 if "history_soon" in fixtures(item) else 1 if item.get_closest_marker("slow") else 0


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects by marker
def pytest_collection_modifyitems(config, items):
    """Every test that needs the session's pipeline build is `slow` (so `-m "not slow"` never builds it),
    and runs after the others (which run while the build does)."""
    for item in items:
        if uses_history(item) or item.nodeid in SLOW_ELSEWHERE:
            item.add_marker(pytest.mark.slow)
    items.sort(key=run_order)  # stable: file order otherwise


_BUILD: dict = {}  # the background replay this process started: root, proc
SHARED_ENV = "T2I_TESTS_HISTORY_SHARED"
RUN_ID_ENV = "T2I_TESTS_RUN_ID"  # random, one per session: every xdist worker sees the controller's  # pytest-xdist: the folder every worker's session build lives in


@pytest.hookimpl(trylast=True)  # after the tmpdir plugin made its factory
def pytest_configure(config):
    """The controller draws the session's run id and, under pytest-xdist, names one folder for the build
    (its workers inherit both): the first worker whose tests need the build starts it there, the others
    wait for its exit status."""
    if hasattr(config, "workerinput"):
        return
    os.environ.setdefault(RUN_ID_ENV, uuid.uuid4().hex)
    if not getattr(config.option, "numprocesses", None):
        return
    os.environ[SHARED_ENV] = str(config._tmp_path_factory.getbasetemp() / "history")


def pytest_collection_finish(session):
    if session.config.option.collectonly or os.environ.get("T2I_TESTS_HISTORY"):
        return
    if any(uses_history(item) for item in session.items):
        _start_history_build(session.config)


def _start_history_build(config) -> Path:
    """Start the build once per session (per xdist run: once for all workers); return its folder."""
    if _BUILD:
        return _BUILD["root"]
    if os.environ.get(SHARED_ENV):
        root = Path(os.environ[SHARED_ENV])
        try:
            root.mkdir()  # atomic: exactly one worker gets to build
        except FileExistsError:
            return root
    else:
        factory = getattr(config, "_tmp_path_factory", None)  # pytest's tmp_path_factory, before any fixture
        root = factory.mktemp("history") if factory is not None else Path(tempfile.mkdtemp(prefix="history"))
    src = copy_repo(root / "src.tmp")
    src = src.rename(root / "src")  # complete: another worker may now read it (history_soon)
    replay = [sys.executable, "-m", "scripts", "replay-history", str(root / "repo"), "--remote", str(root / "remote")]
    # the exit status lands in root/rc, where any process of this session (an xdist worker) can wait for it
    record = ("import os, subprocess, sys\nwith open(sys.argv[1] + '/replay.log', 'w') as log:\n"
              "    code = subprocess.call(sys.argv[2:], stdout=log, stderr=subprocess.STDOUT)\n"
              "open(sys.argv[1] + '/rc.tmp', 'w').write(str(code))\nos.replace(sys.argv[1] + '/rc.tmp', sys.argv[1] + '/rc')\n")
    proc = subprocess.Popen([sys.executable, "-c", record, str(root), *replay], cwd=src, env=env(),
                            start_new_session=True)  # its own process group: stoppable with its stage processes
    (root / "pgid").write_text(str(proc.pid))
    _BUILD.update(root=root, proc=proc)
    return root


def _wait_for_build(root: Path) -> None:
    while not (root / "rc").exists():  # written when the build ends, whichever process started it
        if (root / "pgid").exists() and not _group_alive(int((root / "pgid").read_text())) and not (root / "rc").exists():
            pytest.fail("the session build was stopped before it finished")
        time.sleep(0.5)
    code = int((root / "rc").read_text())
    if code != 0:
        pytest.fail(f"replay-history failed ({code}):\n{(root / 'replay.log').read_text()[-3000:]}")


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False


def pytest_sessionfinish(session):
    """Stop a build that is still running when the session ends (interrupted): the process that started
    it, or under xdist the controller (a worker may finish while another still waits for the build)."""
    if hasattr(session.config, "workerinput"):
        return
    root = Path(os.environ[SHARED_ENV]) if os.environ.get(SHARED_ENV) else _BUILD.get("root")
    if root is not None and (root / "pgid").exists() and not (root / "rc").exists():
        pgid = int((root / "pgid").read_text())
        if _group_alive(pgid):
            os.killpg(pgid, signal.SIGKILL)
    if _BUILD.get("proc") is not None:
        _BUILD["proc"].wait()


@pytest.fixture(autouse=True)
def _torch_one_thread():
    """A test that changed torch's thread count (or imported torch) leaves the next one single-threaded."""
    yield
    torch = sys.modules.get("torch")
    if torch is not None and torch.get_num_threads() != 1:
        torch.set_num_threads(1)


def env() -> dict:
    """The test's interpreter first on PATH, so dvc.yaml's `python -m scripts` uses this venv."""
    bin_dir = str(Path(sys.executable).parent)
    return {**os.environ, **GIT_ENV, "PATH": bin_dir + os.pathsep + os.environ.get("PATH", ""),
            "DVC_NO_ANALYTICS": "1", "PYTHONUNBUFFERED": "1"}


def run(cmd: list[str] | str, cwd: Path, check: bool = True, **kwargs) -> subprocess.CompletedProcess:
    if isinstance(cmd, str):
        cmd = cmd.split()
    if cmd[0] in ("dvc", "python"):
        cmd = [sys.executable, "-m", *cmd[1:]] if cmd[0] == "python" else [sys.executable, "-m", "dvc", *cmd[1:]]
    result = subprocess.run(cmd, cwd=cwd, env=env(), capture_output=True, text=True, **kwargs)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, cmd))} failed ({result.returncode}):\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result


# ------------------------------------------------------------------ `python -m scripts`, in process

@dataclass
class CliResult:
    returncode: int
    stdout: str
    stderr: str


def cli(argv: list, cwd: Path, monkeypatch, capfd) -> CliResult:
    """`python -m scripts ARGV` run in `cwd` by this process: scripts.cli.main, which turns every failure
    into its exit code and one `error: ...` line, exactly as __main__ does. What a subprocess would add:
    an uncaught exception becomes exit 1 with its traceback on stderr; a warning the interpreter's
    default filters would print is appended to stderr (pytest would otherwise swallow it)."""
    from scripts.cli import main

    monkeypatch.chdir(cwd)
    capfd.readouterr()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for category in (DeprecationWarning, PendingDeprecationWarning, ImportWarning, ResourceWarning):
            warnings.simplefilter("ignore", category)  # hidden by default outside __main__
        try:
            code = main([str(a) for a in argv])
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        except Exception:  # noqa: BLE001 - what the interpreter would print before exiting 1
            code = 1
            sys.stderr.write(traceback.format_exc())
    out, err = capfd.readouterr()
    err += "".join(warnings.formatwarning(w.message, w.category, w.filename, w.lineno) for w in caught)
    return CliResult(code, out, err)


# ------------------------------------------------------------------ repositories

def repo_files() -> list[str]:
    """Tracked files plus untracked ones git does not ignore: the tree as a fresh clone would get it."""
    out = subprocess.run(["git", "ls-files", "-z", "-co", "--exclude-standard"], cwd=REPO,
                         capture_output=True, check=True).stdout
    return sorted({f for f in out.decode().split("\0") if f and (REPO / f).is_file()})


def copy_repo(dest: Path) -> Path:
    """A fresh git repository holding this tree, committed, with no DVC outputs or cache (nor the lock,
    metrics and plot data main commits)."""
    from scripts.tools.replay_history import built_by_the_pipeline

    dest.mkdir(parents=True, exist_ok=True)
    for name in repo_files():
        if built_by_the_pipeline(name):
            continue
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, target)
    run(["git", "init", "-q", "-b", "main"], dest)
    run(["git", "add", "-A"], dest)
    run(["git", "commit", "-q", "-m", "test copy"], dest)
    return dest


def work_copy(src: Path, dest: Path, rev: str | None = None, checkout: bool = True) -> Path:
    """A private copy of a built repository that a test may change, without touching `src`: a git clone
    (at `rev`; objects copied, as git would freshen a hardlinked one in place), the DVC cache hardlinked
    file by file (cache objects are read-only and never rewritten; what DVC adds are new files), and,
    if asked, the workspace restored by `dvc checkout` (hardlinks into that cache: .dvc/config's cache.type
    is reflink,hardlink,copy, and every stage writes temp + rename, never in place)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    run(["git", "clone", "-q", "--no-hardlinks", *(["--branch", rev] if rev else []), str(src), str(dest)], dest.parent)
    shutil.copytree(src / ".dvc" / "cache", dest / ".dvc" / "cache", copy_function=os.link)
    if checkout:
        run(["dvc", "checkout", "-q"], dest)
    return dest


def _fingerprint(repo: Path) -> dict[str, tuple[int, int]]:
    """Every file of a repository with its size and mtime; not .dvc/tmp (DVC's locks and state), .git/index
    (git refreshes its stat cache on a read-only `git status`) nor __pycache__ (Python's bytecode cache of
    scripts/, written by any `python -m scripts` run there: gitignored, not data)."""
    skip = {repo / ".dvc" / "tmp"}
    files = {}
    for root, dirs, names in os.walk(repo):
        dirs[:] = [d for d in dirs if Path(root, d) not in skip and d != "__pycache__"]
        for name in names:
            if name == "index" and root == str(repo / ".git"):
                continue
            stat = os.lstat(os.path.join(root, name))
            files[os.path.relpath(os.path.join(root, name), repo)] = (stat.st_size, stat.st_mtime_ns)
    return files


class History(NamedTuple):
    repo: Path  # four commits `Release v2` .. `Release v4-b`, tagged; workspace and cache at v4-b
    remote: Path  # the local DVC remote every tag was pushed to


@pytest.fixture(scope="session")
def history(request) -> History:
    """The release history replayed once per session from a copy of this working tree (untracked files
    included). Read-only: checked unchanged (every file, .git and the DVC cache included) at the end."""
    if os.environ.get("T2I_TESTS_HISTORY"):
        root = Path(os.environ["T2I_TESTS_HISTORY"])
    else:
        root = _start_history_build(request.config)  # started at collection, normally
        _wait_for_build(root)
    repo, remote = root / "repo", root / "remote"
    before = _fingerprint(repo), _fingerprint(remote)
    yield History(repo, remote)
    after = _fingerprint(repo), _fingerprint(remote)
    changed = sorted(p for b, a in zip(before, after) for p in set(b) | set(a) if b.get(p) != a.get(p))
    assert not changed, f"a test changed the shared history repo or remote (use work_copy): {changed[:10]}"


class PendingHistory(NamedTuple):
    src: Path  # the tree the session build replays (committed, no outputs, no cache)
    wait: Callable[[], History]  # the session build, once it has finished

    def fresh_copy(self, dest: Path) -> Path:
        """A second fresh copy of the very tree the session build was made from (no lock, no cache)."""
        run(["git", "clone", "-q", "--no-hardlinks", str(self.src), str(dest)], dest.parent)
        return dest


@pytest.fixture
def history_soon(request, tmp_path_factory) -> PendingHistory:
    """For a test that does its own (slow) build first and reads the session build only at its end, so that
    its work runs beside the background build: `.src` now, `.wait()` for `history`."""
    if os.environ.get("T2I_TESTS_HISTORY"):
        src = Path(os.environ["T2I_TESTS_HISTORY"]) / "src"
        src = src if src.is_dir() else copy_repo(tmp_path_factory.mktemp("src") / "src")
    else:
        src = _start_history_build(request.config) / "src"
        while not src.is_dir():  # another xdist worker is copying it
            time.sleep(0.2)
    return PendingHistory(src, lambda: request.getfixturevalue("history"))


@pytest.fixture(scope="session")
def readme_run(history, tmp_path_factory):
    """The README's shell and Python blocks run once per session, in order, in a work copy of the build
    (tests/test_readme.py): (repo, [(block, result)]). Its `dvc exp run -S dedup.threshold=0.8` is also
    the experiment tests/test_pipeline.py inspects, so the suite runs that whole experiment once."""
    from test_readme import run_readme_blocks

    def compute(root: Path):
        repo = work_copy(history.repo, root / "repo")
        return repo, run_readme_blocks(repo, root)

    return computed_once("readme", compute, tmp_path_factory)


def computed_once(name: str, compute: Callable[[Path], object], tmp_path_factory):
    """compute(folder) once per session: under xdist the first worker to ask computes it in a shared
    folder and the others wait for its pickled value (a session fixture is otherwise per worker)."""
    import pickle

    if not os.environ.get(SHARED_ENV):
        return compute(tmp_path_factory.mktemp(name))
    root = Path(os.environ[SHARED_ENV]).parent / name
    try:
        root.mkdir()
    except FileExistsError:
        while not (root / "value.pickle").exists():
            time.sleep(0.5)
        value = pickle.loads((root / "value.pickle").read_bytes())
        if isinstance(value, BaseException):
            pytest.fail(f"{name}: failed in another worker: {value!r}")
        return value
    try:
        value = compute(root)
    except BaseException as exc:
        value = RuntimeError(f"{type(exc).__name__}: {exc}")
        raise
    finally:
        (root / "value.tmp").write_bytes(pickle.dumps(value))
        os.replace(root / "value.tmp", root / "value.pickle")
    return value


@pytest.fixture(scope="session")
def built_repo(history) -> Path:
    """Every stage built: the history's workspace at v4-b (read-only; see `history`)."""
    return history.repo


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """The tiny SD2-architecture model, built once per test session (single-threaded, as in CI; under xdist by
    one worker, computed_once). Read-only: a test that changes a model works on its own copy."""

    def build(root: Path) -> Path:
        import torch

        from scripts.tiny_model import save_tiny_model

        torch.set_num_threads(1)
        save_tiny_model({}, root / "tiny-sd2")
        return root / "tiny-sd2"

    return computed_once("tiny-model", build, tmp_path_factory)


class Loopback:
    """A threading HTTP server on 127.0.0.1 (a free port) answering with `handler` (a
    BaseHTTPRequestHandler class); `base_url` is its OpenAI-style root. Close it with close()."""

    def __init__(self, handler: type):
        from http.server import ThreadingHTTPServer
        import threading

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.httpd.daemon_threads = True
        self.base_url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def close(self) -> None:
        if self.thread.is_alive():
            self.httpd.shutdown()
            self.httpd.server_close()


def send_json(handler, status: int, payload, headers: dict | None = None) -> None:
    """Reply from a BaseHTTPRequestHandler: `payload` as JSON (or raw bytes); a client that already gave
    up (a timeout test) is not an error."""
    import json

    raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    try:
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(raw)))
        for name, value in (headers or {}).items():
            handler.send_header(name, value)
        handler.end_headers()
        handler.wfile.write(raw)
    except (BrokenPipeError, ConnectionResetError):
        pass


@pytest.fixture
def no_proxy(monkeypatch):
    """Loopback requests never go through a proxy from the environment."""
    for name in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    if not FIXTURES.is_dir():
        pytest.skip("../shared/fixtures is absent")
    return FIXTURES


def tar_bytes(members: list[tuple[str, bytes]], fmt: int = tarfile.USTAR_FORMAT) -> bytes:
    """A real tar archive of (member name, bytes) regular files, in memory."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def write_tar(path: Path, members: list[tuple[str, bytes]], fmt: int = tarfile.USTAR_FORMAT) -> Path:
    """tar_bytes written to `path` (parents created)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(tar_bytes(members, fmt))
    return path
