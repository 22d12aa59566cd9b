"""The eighth hostile round and its review, one table each (every row failed before its fix unless it
says it guards what held): DVC's cache found where `dvc cache dir` put it, not only at `.dvc/cache`.
Real DVC repositories, real links."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from helpers import dvc_init
from helpers.tiers import fast_first
from scripts.lib.errors import DataError
from scripts.lib.paths import check_split_rows

PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c63f8cfc0f01f0005000201a5f0e1b70000000049454e44ae426082"
)


def dvc_repo(root: Path, cache: Path | None) -> Path:
    root.mkdir(parents=True)
    subprocess.run(["git", "init", "-q", "-b", "main"], cwd=root, check=True)
    dvc_init(root)
    if cache is not None:
        subprocess.run([sys.executable, "-m", "dvc", "cache", "dir", str(cache)], cwd=root, check=True)
    return root


def split_rows(images: list[str]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "id": [f"r{n}" for n in range(len(images))],
            "source": "s",
            "text": "a lighthouse",
            "orig_text": "A lighthouse",
            "image": images,
            "width": 1,
            "height": 1,
        }
    )


CACHES = {  # where the cache is -> (cache folder, relative to tmp_path, or None for .dvc/cache)
    "dvc cache dir, absolute, elsewhere": "shared/dvc-cache",
    "dvc cache dir, a sibling of the repository": "repo-cache",
    "the default .dvc/cache (guards what held)": None,
}


@pytest.mark.parametrize("case", CACHES)
def test_an_image_linked_into_the_repositorys_dvc_cache_is_inside_its_source(tmp_path, monkeypatch, case):
    """cache.type symlink leaves each image a link into the cache: release@V accepts it wherever the
    cache is, and still refuses a link to a file outside both."""
    cache = tmp_path / CACHES[case] if CACHES[case] else None
    repo = dvc_repo(tmp_path / "repo", cache)
    cached = (cache or repo / ".dvc" / "cache") / "files" / "md5" / "ab" / "cdef0123456789abcdef0123456789"
    cached.parent.mkdir(parents=True, exist_ok=True)
    cached.write_bytes(PNG)
    (tmp_path / "mine.png").write_bytes(PNG)
    images = repo / "data" / "images" / "s"
    images.mkdir(parents=True)
    (images / "r0.png").symlink_to(cached)
    (images / "r1.png").symlink_to(tmp_path / "mine.png")
    monkeypatch.chdir(repo)
    check_split_rows(split_rows(["data/images/s/r0.png"]), Path("t.parquet"), "s", [Path("data/images/s")])
    with pytest.raises(DataError, match="row 2: image 'data/images/s/r1.png' is outside the folders of source 's'"):
        check_split_rows(
            split_rows(["data/images/s/r0.png", "data/images/s/r1.png"]),
            Path("t.parquet"),
            "s",
            [Path("data/images/s")],
        )


# ---------------------------------------------------------------- a folder is generate's store only by its marker
IMAGE = "ab/ab" + "0" * 62 + ".png"


def user_folder_with_index(root: Path) -> None:
    (root / "ab").mkdir(parents=True)
    (root / IMAGE).write_bytes(b"my holiday photo")
    (root / "index.txt").write_text(IMAGE + "\n", encoding="utf-8")


def with_own_gitignore(root: Path) -> None:
    user_folder_with_index(root)
    (root / ".gitignore").write_text("my rules\n", encoding="utf-8")


def with_a_tmp_folder(root: Path) -> None:
    user_folder_with_index(root)
    (root / ".tmp").mkdir()
    (root / ".gitignore").write_text("*.log\n", encoding="utf-8")


def images_without_an_index(root: Path) -> None:
    (root / "ab").mkdir(parents=True)
    (root / IMAGE).write_bytes(b"my holiday photo")


USER_FOLDERS = {
    "an index and a two-hex folder": user_folder_with_index,
    "and a .gitignore of the user's": with_own_gitignore,
    "and a .tmp folder": with_a_tmp_folder,
    "two-hex folders, no index": images_without_an_index,
}


def tree(root: Path) -> dict[str, bytes | None]:
    return {p.relative_to(root).as_posix(): (p.read_bytes() if p.is_file() else None) for p in root.rglob("*")}


@pytest.mark.parametrize("case", USER_FOLDERS)
def test_generate_prune_refuses_a_folder_generate_did_not_make_and_writes_nothing_there(tmp_path, case):
    from helpers.workspace import error_line
    from helpers.workspace import run_scripts as run

    USER_FOLDERS[case](tmp_path / "mystuff")
    before = tree(tmp_path / "mystuff")
    done = run(tmp_path, "generate-prune", "--store", "mystuff", "--all")
    assert done.returncode == 2 and "has no .t2i-image-store" in error_line(done.stderr), done.stderr
    assert tree(tmp_path / "mystuff") == before


@pytest.mark.parametrize("case", USER_FOLDERS)
def test_generate_opens_no_store_in_a_folder_generate_did_not_make(tmp_path, case):
    from scripts.lib.image_store import ImageStore, store_lock

    USER_FOLDERS[case](tmp_path / "mystuff")
    before = tree(tmp_path / "mystuff")
    for open_store in (lambda: ImageStore(tmp_path / "mystuff"), lambda: store_lock(tmp_path / "mystuff").__enter__()):
        with pytest.raises(DataError, match="has no .t2i-image-store"):
            open_store()
    assert tree(tmp_path / "mystuff") == before


def test_a_store_made_before_the_marker_is_still_used_and_gets_the_marker(tmp_path):
    """Guards what held: the `.gitignore` of "*" and the `.tmp` folder generate always made first."""
    from helpers.workspace import run_scripts as run

    user_folder_with_index(tmp_path / "store")
    (tmp_path / "store" / ".gitignore").write_bytes(b"*\n")
    (tmp_path / "store" / ".tmp").mkdir()
    done = run(tmp_path, "generate-prune", "--store", "store", "--all")
    assert done.returncode == 0, done.stderr
    assert not (tmp_path / "store" / IMAGE).exists() and (tmp_path / "store" / ".t2i-image-store").is_file()


# ---------------------------------------------------------------- a committed file is not an output of ours
COMMITTED = {  # path in a git repository -> the command that names it as its output
    "dvc.yaml, by clean-rules": ("dvc.yaml", ["clean-rules", "dvc.yaml"]),
    "params.yaml, by clean-rules": ("params.yaml", ["clean-rules", "params.yaml"]),
    "the README, by params-doc": ("README.md", ["params-doc", "README.md"]),
    "requirements.txt, by clean-rules": ("requirements.txt", ["clean-rules", "requirements.txt"]),
    "a committed data file in a folder, by params-doc": ("data/notes.md", ["params-doc", "data/notes.md"]),
}


@pytest.mark.parametrize("case", COMMITTED)
def test_a_file_git_holds_unmodified_is_not_replaced_by_a_command_that_did_not_write_it(tmp_path, case):
    """git holding a file proved it ours: a mistyped output path wrote over dvc.yaml and params.yaml."""
    from helpers.repos import REPO
    from helpers.workspace import error_line
    from helpers.workspace import run_scripts as run

    path, argv = COMMITTED[case]
    (tmp_path / "params.yaml").write_bytes((REPO / "params.yaml").read_bytes())
    (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
    if path != "params.yaml":
        (tmp_path / path).write_text("# the project's own file\n", encoding="utf-8")
    subprocess.run(["git", "init", "-q", "-b", "main"], cwd=tmp_path, check=True)
    subprocess.run(["git", "add", "-A"], cwd=tmp_path, check=True)
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "c"], cwd=tmp_path, check=True)
    before = (tmp_path / path).read_bytes()
    done = run(tmp_path, *argv)
    assert done.returncode == 2 and "cannot prove it wrote it" in error_line(done.stderr), done.stderr
    assert (tmp_path / path).read_bytes() == before


# ---------------------------------------------------------------- a full disk never leaves a torn module cache
@pytest.mark.parametrize("limit", fast_first([8192, 4096, 16384]))
def test_a_run_on_a_full_disk_leaves_no_torn_bytecode_for_the_next_run(tmp_path, limit):
    """Python cached each module with one write() that a full disk cut short, and installed the torn file:
    every later run was a traceback (EOFError: marshal data too short). A copy of the package with no
    cache, run as a user runs it (bytecode caching on) once on a full disk, then once as usual."""
    import os
    import resource
    import shutil
    import signal

    from helpers.repos import REPO

    shutil.copytree(REPO / "scripts", tmp_path / "scripts", ignore=shutil.ignore_patterns("__pycache__"))
    (tmp_path / "params.yaml").write_bytes((REPO / "params.yaml").read_bytes())
    # every cache under tmp_path: a module the venv holds uncached (_distutils_hack, run by a .pth before
    # this package) was written torn into the shared venv, and every later python printed its traceback
    cache = tmp_path / "pycache"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env |= {"PYTHONPATH": str(tmp_path), "PYTHONPYCACHEPREFIX": str(cache)}

    def full_disk() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)

    argv = [sys.executable, "-m", "scripts", "clean-rules", "rules.json"]
    warm = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert warm.returncode == 0, warm.stderr  # the interpreter's own modules cached; then the package's goes
    package_cache = cache / tmp_path.relative_to(tmp_path.anchor) / "scripts"
    shutil.rmtree(package_cache)
    (tmp_path / "rules.json").unlink()
    first = subprocess.run(
        argv, cwd=tmp_path, env=env, preexec_fn=full_disk, capture_output=True, text=True, timeout=300
    )
    assert first.returncode == 2 and first.stderr.strip().splitlines()[-1].startswith("error: "), first.stderr
    assert list(package_cache.rglob("*.pyc")), "nothing was cached: the case tests nothing"
    again = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and (tmp_path / "rules.json").is_file(), again.stderr[-2000:]


# ---------------------------------------------------------------- a secret's value pasted into params.yaml
AWS_EXAMPLE = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"  # AWS's documented example shape: no key pattern matches it
PASTED = {  # env var, its value, where it is pasted, how
    "AWS's secret key in a release description": (
        "AWS_SECRET_ACCESS_KEY",
        AWS_EXAMPLE,
        ("releases", "v2", "description"),
        lambda v: f"v2 {v}",
    ),
    "a chat key upper-cased in a citation": (
        "OPENAI_API_KEY",
        "vllm/Tok3n+abcdef/ghijk",
        ("sources", "gustavosta", "citation"),
        str.upper,
    ),
    "a token reversed in a license": (
        "HF_TOKEN",
        "abcdEFGH1234/ijklMNOP5678",
        ("sources", "chatgpt", "license"),
        lambda v: v[::-1],
    ),
    "the value of the variable api_key_env names": (
        "MY_LLM_CREDS",
        "Zq8/Zq8/Zq8/Zq8/Zq8/Zq8",
        ("sources", "chatgpt", "homepage"),
        lambda v: f"https://x/{v}",
    ),
}


@pytest.mark.parametrize("case", PASTED)
def test_the_value_of_a_secret_environment_variable_in_params_is_refused_by_name(tmp_path, case):
    """Only key shapes were refused: a secret of no shape pasted into params.yaml went into data/recipes,
    the release card and dvc.lock. The line names the key and the variable, never the value."""
    import os

    import yaml

    from helpers.repos import REPO

    name, value, at, paste = PASTED[case]
    params = yaml.safe_load((REPO / "params.yaml").read_text(encoding="utf-8"))
    params["synthesize"]["gpt4_style"]["api_key_env"] = "MY_LLM_CREDS"
    node = params
    for key in at[:-1]:
        node = node[key]
    node[at[-1]] = paste(value)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False), encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": str(REPO), name: value}
    done = subprocess.run(
        [sys.executable, "-m", "scripts", "recipes", "rec"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1, done.stderr
    assert f"{'.'.join(at)}: holds the value of the environment variable {name}" in lines[0]
    assert value.lower() not in done.stderr.lower() and value[::-1].lower() not in done.stderr.lower()
    assert not (tmp_path / "rec").exists()


def test_secret_variables_whose_values_params_does_not_hold_change_nothing(tmp_path):
    """Guards what held: the variables set, params.yaml as shipped, the command runs."""
    import os

    from helpers.repos import REPO

    (tmp_path / "params.yaml").write_bytes((REPO / "params.yaml").read_bytes())
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "AWS_SECRET_ACCESS_KEY": AWS_EXAMPLE,
        "TOKENIZERS_PARALLELISM": "false",
    }
    done = subprocess.run(
        [sys.executable, "-m", "scripts", "recipes", "rec"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr


# ---------------------------------------------------------------- summary copies only a count into the metrics
TOTALS = {"text": "outside the repo", "a fraction": 3.5, "negative": -1, "a boolean": True, "an object": {"n": 1}}


@pytest.mark.parametrize("case", TOTALS)
def test_summary_copies_rows_total_into_the_metrics_only_when_it_is_a_count(tmp_path, case):
    """rows.total went into data/summary.json (dvc exp show's metrics) whatever it was."""
    import json

    import yaml

    from helpers.repos import REPO
    from helpers.workspace import error_line
    from helpers.workspace import run_scripts as run

    params = yaml.safe_load((REPO / "params.yaml").read_text(encoding="utf-8"))
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False), encoding="utf-8")
    for name in params["releases"]:
        (tmp_path / "rel" / name).mkdir(parents=True)
        total = TOTALS[case] if name == "v3" else 100
        (tmp_path / "rel" / name / "stats.json").write_text(json.dumps({"rows": {"total": total}}), encoding="utf-8")
    done = run(tmp_path, "summary", "rel", "summary.json")
    assert done.returncode == 2 and "rel/v3/stats.json: rows.total is" in error_line(done.stderr), done.stderr
    assert not (tmp_path / "summary.json").exists()


# ---------------------------------------------------------------- replay-history's DEST as the system resolves it
def dest_through_a_missing_folder(tmp_path: Path) -> tuple[str, Path]:
    return "nothere/../../mine", tmp_path / "mine"


def dest_through_two_missing_folders(tmp_path: Path) -> tuple[str, Path]:
    return "a/b/../../../mine", tmp_path / "mine"


def dest_through_a_link(tmp_path: Path) -> tuple[str, Path]:
    (tmp_path / "deep" / "er").mkdir(parents=True)
    (tmp_path / "src" / "link").symlink_to(tmp_path / "deep" / "er")
    return "link/../mine", tmp_path / "deep" / "mine"


@pytest.mark.parametrize(
    "where", [dest_through_a_missing_folder, dest_through_two_missing_folders, dest_through_a_link]
)
def test_replay_history_refuses_a_non_empty_dest_however_it_is_spelt(tmp_path, where):
    """`nothere/../../mine` did not exist as written, so the non-empty check passed; the replay then wrote
    into the user's ../mine (its README replaced) and a Ctrl-C removed only nothere/."""
    import shutil

    from helpers.repos import REPO
    from helpers.workspace import error_line
    from helpers.workspace import run_scripts as run

    (tmp_path / "src").mkdir()
    shutil.copyfile(REPO / "params.yaml", tmp_path / "src" / "params.yaml")
    spelt, mine = where(tmp_path)
    mine.mkdir(parents=True)
    (mine / "README.md").write_text("my precious readme\n", encoding="utf-8")
    done = run(tmp_path / "src", "replay-history", spelt)
    assert done.returncode == 2 and "exists and is not empty" in error_line(done.stderr), done.stderr
    assert [p.name for p in mine.iterdir()] == ["README.md"]
    assert (mine / "README.md").read_text(encoding="utf-8") == "my precious readme\n"
    assert not (tmp_path / "src" / "nothere").exists() and not (tmp_path / "src" / "a").exists()


# ---------------------------------------------------------------- tag: a remote that cannot answer is one line
class _Reply:
    """A loopback server answering every request with one fixed reply (an S3 endpoint that is not S3)."""

    def __init__(self, status: int, body: bytes, kind: str):
        import http.server
        import threading

        class Handler(http.server.BaseHTTPRequestHandler):
            def _answer(self):
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            do_GET = do_HEAD = do_PUT = do_POST = _answer

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


REMOTES = {  # a remote's reply -> (status, body, content type, user part of the endpoint URL)
    "a proxy's HTML error page": (502, b"<html><body>Bad Gateway</body></html>", "text/html", ""),
    "403 for every request": (403, b"<Error><Code>AccessDenied</Code></Error>", "application/xml", ""),
    "500, the endpoint written with a password": (500, b"oops", "text/plain", "me:pw0rdSECRET@"),
}


@pytest.mark.parametrize("case", fast_first(REMOTES))
def test_tag_says_in_one_line_that_the_remote_cannot_be_checked(tmp_path, monkeypatch, case):
    """check_pushed asked DVC for the remote's status and let whatever the S3 client raised through: a
    192-line botocore traceback, or a line followed by asyncio's warnings."""
    import os

    from scripts.tools.tag import check_pushed

    status, body, kind, user = REMOTES[case]
    server = _Reply(status, body, kind)
    repo_dir = tmp_path / "repo"
    repo_dir.mkdir()
    for argv in (["git", "init", "-q"], [sys.executable, "-m", "dvc", "init", "-q"]):
        subprocess.run(argv, cwd=repo_dir, check=True)
    (repo_dir / "dvc.yaml").write_text("stages:\n  s:\n    cmd: echo hi > out.txt\n    outs: [out.txt]\n")
    subprocess.run([sys.executable, "-m", "dvc", "repro", "-q"], cwd=repo_dir, check=True)
    config = (
        "[core]\n    remote = s3x\n['remote \"s3x\"']\n    url = s3://bucket/x\n"
        f"    endpointurl = http://{user}127.0.0.1:{server.port}\n"
        "    access_key_id = AKIAIOSFODNN7EXAMPLE\n    secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY\n"
        "    read_timeout = 5\n    connect_timeout = 5\n"
    )
    (repo_dir / ".dvc" / "config.local").write_text(config)
    monkeypatch.chdir(repo_dir)
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    from dvc.repo import Repo

    with Repo(os.fspath(repo_dir)) as repo, pytest.raises(DataError) as refused:
        check_pushed(repo, "s")
    said = str(refused.value)
    assert said.startswith("the default remote: cannot check s's outputs there") and "\n" not in said
    assert "pw0rdSECRET" not in said and "wJalrXUtnFEMI" not in said
    server.server.shutdown()


# ---------------------------------------------------------------- caption's QA regexes have the cleaner's time bound
QA_RULES = {  # a QA rule and the reply it backtracks on without end
    "overlapping alternation": (r"(a|aa)+$", "a" * 5000 + "!"),
    "nested repeat": (r"(\w+\s?)+$", "word " * 2000 + "!"),
    "a lookahead around a repeat": (r"(?=(a+)+$)x", "a" * 5000 + "!"),
}


@pytest.mark.parametrize("case", QA_RULES)
def test_a_caption_qa_regex_that_backtracks_without_end_is_one_line(tmp_path, case):
    """qa.rules ran with Python's `re` and no bound: a rule backtracking on the reply held caption past 60 s."""
    import os

    import yaml
    from test_chat_hostile import caption_entry, make_images, one_error_line
    from test_chat_round6 import Server, completion, json_reply

    from helpers.commands import CliResult
    from helpers.repos import REPO

    pattern, reply = QA_RULES[case]
    with Server(json_reply(completion(reply))) as server:
        entry = caption_entry(make_images(tmp_path / "images"), server.base_url, max_images=1)
        entry["qa"] = {"rules": [{"reason": "bad", "pattern": pattern}]}
        (tmp_path / "params.yaml").write_text(yaml.safe_dump({"caption": {"t": entry}}), encoding="utf-8")
        env = {**os.environ, "PYTHONPATH": str(REPO), "T2I_REGEX_SECONDS": "0.5"}
        done = subprocess.run(
            [sys.executable, "-m", "scripts", "caption", "t", "out"],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
    line = one_error_line(CliResult(done.returncode, done.stdout, done.stderr))
    assert "QA regex" in line and "ran over 0.5 s" in line and "image" in line, line
    written = [p.relative_to(tmp_path / "out").parts[0] for p in (tmp_path / "out").rglob("*") if p.is_file()]
    assert set(written) <= {"cache"}, written  # the paid replies are kept for the next run; no output
