"""Round 31a: the tool commands that run child processes (pr-build's dvc, tag's git), on hostile inputs. Every
row failed before its fix, on real repositories and real runs of `python -m scripts` (dvc a fake package first
on PYTHONPATH, as `python -m dvc` finds it, where a row needs DVC's output to be what a hostile DVC prints):

1. pr-build's `dvc pull` / `dvc repro` wrote to the terminal themselves: an error naming a remote's
   `user:password@` URL, or quoting a secret of the environment or of ~/.netrc, was printed raw. Each line of
   theirs now goes through the redaction the command's own lines do (child_group.run_shown), exit code kept.
2. Two `tag` runs at once both passed the "already exists" check and ran `dvc status`; the second was refused
   only at `git tag`. Each run now holds a flock of .git/t2i-tag.lock first: the second is refused at once in
   one line, and a run killed (SIGINT, SIGKILL) holding it blocks no later one.
3. pr-build read `dvc status --json` with json.loads: text that is not JSON, 100k nested brackets, a NaN or a
   value of another shape was a traceback at exit 1. It is now the bounded reader and a shape check: one line.
"""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers import REPO, env
from helpers.commands import CliResult, cli
from helpers.repos import committed_dvc_repository
from helpers.tiers import fast_first
from helpers.workspace import error_line

pytestmark = pytest.mark.usefixtures("no_proxy")

FAKE_DVC = """import os, sys
args = sys.argv[1:]
if args[:1] == ["status"]:
    if os.environ.get("FAKE_STATUS_FILE"):
        sys.stdout.write(open(os.environ["FAKE_STATUS_FILE"], encoding="utf-8").read())
    sys.exit(int(os.environ.get("FAKE_STATUS_CODE", "0")))
sys.stdout.write(os.environ.get("FAKE_OUT", ""))
sys.stderr.write(os.environ.get("FAKE_ERR", ""))
sys.exit(1)
"""


def git(*args: str, cwd: Path) -> None:
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, env=env())


def fake_dvc(tmp_path: Path) -> Path:
    package = tmp_path / "fake" / "dvc"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("", encoding="utf-8")
    (package / "__main__.py").write_text(FAKE_DVC, encoding="utf-8")
    return package.parent


def pr_build(tmp_path: Path, monkeypatch, capfd, **extra: str) -> CliResult:
    """pr-build HEAD in a new repository, run in this process (its dvc a real child: the fake package)."""
    root = committed_dvc_repository(tmp_path / "repo", files={"README.md": "r\n"})
    monkeypatch.setenv("PYTHONPATH", f"{fake_dvc(tmp_path)}{os.pathsep}{REPO}")
    for name, value in extra.items():
        monkeypatch.setenv(name, value)
    argv = ["pr-build", "HEAD", "--out", tmp_path / "out", "--base-dir", tmp_path / "base"]
    return cli(argv, root, monkeypatch, capfd)


# ---------------------------------------------------------------- 1. dvc's own lines are redacted


def a_netrc(tmp_path: Path) -> dict[str, str]:
    (tmp_path / "netrc").write_text("machine remote.example login u password NetrcPassw0rd99\n", encoding="utf-8")
    return {"NETRC": str(tmp_path / "netrc")}


LEAKS = [  # (case, secret, environment beyond the fake's, what dvc writes: stdout or stderr, its line)
    pytest.param(
        "pa55-Word-zz",
        {},
        "FAKE_ERR",
        "ERROR: failed to connect to s3://alice:pa55-Word-zz@minio.example/b\n",
        id="url",
    ),
    pytest.param(
        "wJalrXUtnFEMIK7MDENGbPxRfiCYzz",
        {"AWS_SECRET_ACCESS_KEY": "wJalrXUtnFEMIK7MDENGbPxRfiCYzz"},
        "FAKE_OUT",
        "param secret_access_key = wJalrXUtnFEMIK7MDENGbPxRfiCYzz\n",
        id="aws key on stdout",
    ),
    pytest.param(
        "hf_SecretTokenValue123",
        {"HF_TOKEN": "hf_SecretTokenValue123"},
        "FAKE_ERR",
        "ERROR: 401 for token HF_SECRETTOKENVALUE123 (no newline at the end)",
        id="hub token, upper case, no newline",
    ),
    pytest.param("NetrcPassw0rd99", "netrc", "FAKE_ERR", "auth NetrcPassw0rd99 refused\n", id="netrc password"),
]


@pytest.mark.parametrize(("secret", "extra", "stream", "said"), fast_first(LEAKS, columns=4))
def test_what_dvc_prints_is_redacted(tmp_path, monkeypatch, capfd, secret, extra, stream, said):
    extra = a_netrc(tmp_path) if extra == "netrc" else extra
    done = pr_build(tmp_path, monkeypatch, capfd, FAKE_STATUS_CODE="1", **{stream: said}, **extra)
    both = done.stdout + done.stderr
    assert secret.lower() not in both.lower(), both
    assert said.split()[0] in (done.stdout if stream == "FAKE_OUT" else done.stderr), both  # the line, passed on
    last = done.stderr.strip().splitlines()[-1]  # dvc's lines before it, our one line last
    assert done.returncode == 2 and last.startswith("error: dvc repro --pull failed"), done.stderr
    assert "Traceback" not in both and not (tmp_path / "out").exists()


# ---------------------------------------------------------------- 2. two tag runs at once


def start_tag(cwd: Path, name: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "scripts", "tag", name],
        cwd=cwd,
        env={**env(), "PYTHONPATH": str(REPO)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def held(lock: Path) -> bool:
    """Whether another process holds `lock`'s flock."""
    fd = os.open(lock, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


def stopped_holding(proc: subprocess.Popen, lock: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not (lock.exists() and held(lock)):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.005)
    proc.send_signal(signal.SIGSTOP)


def same_folder(root: Path) -> Path:
    return root


def a_worktree(root: Path) -> Path:
    git("worktree", "add", "-q", "--detach", str(root.parent / "wt"), "HEAD", cwd=root)
    return root.parent / "wt"


TWO_TAGS = [  # (case, where the second runs, the second's tag name)
    pytest.param(same_folder, "v2", id="same name"),
    pytest.param(same_folder, "v3", id="another name"),
    pytest.param(a_worktree, "v2", id="from a worktree of the repository"),
]


@pytest.mark.slow  # two real tag runs: 2-4 s a row
@pytest.mark.parametrize(("where", "second_name"), TWO_TAGS)
def test_a_second_tag_run_is_refused_at_once(tmp_path, where, second_name):
    root = committed_dvc_repository(tmp_path / "repo", files={"README.md": "r\n"})
    second_root = where(root)
    first = start_tag(root, "v2")
    try:
        stopped_holding(first, root / ".git" / "t2i-tag.lock")
        second = start_tag(second_root, second_name)
        _, err = second.communicate(timeout=60)
        assert second.returncode == 2 and "another tag run is at work" in error_line(err), err
        assert len(err.strip().splitlines()) == 1, err
    finally:
        first.send_signal(signal.SIGCONT)
    _, err = first.communicate(timeout=120)
    assert first.returncode == 2 and "no stage release@v2" in error_line(err), err  # its own work, unharmed


def a_tag_exists(root: Path) -> None:
    git("tag", "v2", cwd=root)


def uncommitted(root: Path) -> None:
    (root / "dvc.yaml").write_text("stages: {x: 1}\n", encoding="utf-8")


def nothing(root: Path) -> None:
    return None


HELD_BY_ANOTHER = [  # the second's own failure, had it done its work: the lock's refusal comes before it
    pytest.param(a_tag_exists, id="the tag exists"),
    pytest.param(uncommitted, id="dvc.yaml uncommitted"),
    pytest.param(nothing, id="no such stage"),
]


@pytest.mark.parametrize("setup", fast_first(HELD_BY_ANOTHER))
def test_the_lock_is_checked_before_any_work(tmp_path, monkeypatch, capfd, setup):
    root = committed_dvc_repository(tmp_path / "repo", files={"README.md": "r\n"})
    setup(root)
    holder = subprocess.Popen(  # a first run at work: a process holding the lock
        [
            sys.executable,
            "-c",
            "import fcntl,os,sys,time; fd=os.open(sys.argv[1], os.O_RDWR|os.O_CREAT); "
            "fcntl.flock(fd, fcntl.LOCK_EX); print('held', flush=True); time.sleep(60)",
            str(root / ".git" / "t2i-tag.lock"),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline() == "held\n"
        done = cli(["tag", "v2"], root, monkeypatch, capfd)
    finally:
        holder.kill()
        holder.wait()
    assert done.returncode == 2 and "another tag run is at work" in error_line(done.stderr), done.stderr


KILLS = [signal.SIGKILL, signal.SIGINT, signal.SIGTERM]


@pytest.mark.slow  # two real tag runs
@pytest.mark.parametrize("signum", KILLS, ids=[s.name for s in KILLS])
def test_a_killed_tag_run_blocks_no_later_one(tmp_path, signum):
    """Regression guard, not failing before (there was no lock): a dead holder's lock blocks nothing."""
    root = committed_dvc_repository(tmp_path / "repo", files={"README.md": "r\n"})
    first = start_tag(root, "v2")
    stopped_holding(first, root / ".git" / "t2i-tag.lock")
    first.send_signal(signum)
    first.send_signal(signal.SIGCONT)
    first.communicate(timeout=60)
    done = start_tag(root, "v2")
    _, err = done.communicate(timeout=60)
    assert done.returncode == 2 and "no stage release@v2" in error_line(err), err


# ---------------------------------------------------------------- 3. dvc status --json of another shape


STATUSES = [  # (case, what `dvc status --json` prints)
    pytest.param("Traceback (most recent call last):\n  oops\n", id="not JSON"),
    pytest.param("[" * 100_000 + "]" * 100_000, id="100k nested lists"),
    pytest.param("NaN", id="a NaN"),
    pytest.param('{"release@v2": NaN}', id="a stage's NaN"),
    pytest.param('{"release@v2": [5]}', id="a change that is a number"),
    pytest.param('{"release@v2": [{"changed deps": ["data/x"]}]}', id="changed deps a list"),
    pytest.param('{"a": [], "a": ["changed outs"]}', id="a stage named twice"),
]


@pytest.mark.parametrize("printed", fast_first(STATUSES))
def test_dvc_status_of_another_shape_is_one_line(tmp_path, monkeypatch, capfd, printed):
    (tmp_path / "status.json").write_text(printed, encoding="utf-8")
    done = pr_build(tmp_path, monkeypatch, capfd, FAKE_STATUS_FILE=str(tmp_path / "status.json"))
    line = error_line(done.stderr)
    assert done.returncode == 2 and line.startswith("error: dvc status --json: not"), done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert not (tmp_path / "out").exists()
