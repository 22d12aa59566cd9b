"""Round 10c's secret-handling breaks, one table each (every row failed before its fix): a secret's value
pasted into params.yaml encoded, short or with spaces passed; a credential variable holding a file's path
refused params naming the file and blanked it in error lines; pr-comment-post and publish sent their own
token in what they posted; under a file-size limit (ulimit -f) this package's own bytecode was cached
torn, and every later run was a traceback."""

from __future__ import annotations

import base64
import json
import marshal
import os
import resource
import shutil
import subprocess
import sys
import urllib.parse
from pathlib import Path

import pytest
import yaml
from test_publish import tiny_release
from test_round8_github import MARKER, FakeGitHub, normal, run_post
from test_round8_publish import HostileHub, hub_env, publish

from helpers import Loopback
from helpers.repos import REPO
from helpers.tiers import fast_first

PARAMS = yaml.safe_load((REPO / "params.yaml").read_text(encoding="utf-8"))


def write_params(root: Path, at: tuple[str, ...], value: str) -> Path:
    """The repository's params.yaml in `root`, the scalar at `at` set to `value`."""
    params = yaml.safe_load(yaml.safe_dump(PARAMS))
    node = params
    for key in at[:-1]:
        node = node[key]
    node[at[-1]] = value
    path = root / "params.yaml"
    path.write_text(yaml.safe_dump(params, sort_keys=False), encoding="utf-8")
    return path


def load(path: Path) -> str | None:
    """The params error line, or None when params.yaml is accepted."""
    from scripts.lib.errors import DataError
    from scripts.lib.params import load_params

    try:
        load_params(path=path)
    except DataError as exc:
        return str(exc)
    return None


# ---------------------------------------------------------------- a secret's value in params.yaml, disguised
AWS = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
PHRASE = "correct horse battery staple"
DESCRIPTION = ("releases", "v2", "description")
HOMEPAGE = ("sources", "chatgpt", "homepage")
CITATION = ("sources", "gustavosta", "citation")


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


DISGUISED = {  # variable, its value, where it is pasted, as what
    "base64, whole": ("AWS_SECRET_ACCESS_KEY", AWS, DESCRIPTION, b64(AWS)),
    "base64 of user:secret behind Basic": (
        "AWS_SECRET_ACCESS_KEY",
        AWS,
        CITATION,
        f"Authorization: Basic {b64('me:' + AWS)}",
    ),
    "base64url in a query": (
        "HF_TOKEN",
        "Tq9~zz>>zz??Kw0-lmno",
        HOMEPAGE,
        "https://x.org/?t=" + base64.urlsafe_b64encode(b"Tq9~zz>>zz??Kw0-lmno").decode(),
    ),
    "percent-encoded in a query": (
        "AWS_SECRET_ACCESS_KEY",
        AWS,
        HOMEPAGE,
        "https://x.org/?k=" + urllib.parse.quote(AWS, safe=""),
    ),
    "percent-encoded in lower-case hex": (
        "AWS_SECRET_ACCESS_KEY",
        AWS,
        DESCRIPTION,
        "key " + urllib.parse.quote(AWS, safe="").replace("%2F", "%2f"),
    ),
    "a phrase, plus-encoded": ("DB_PASSWORD", PHRASE, HOMEPAGE, "https://x.org/?p=" + urllib.parse.quote_plus(PHRASE)),
    "a phrase with spaces, as is": ("DB_PASSWORD", PHRASE, DESCRIPTION, f"v2, {PHRASE}"),
    "a phrase upper-cased over two lines": ("MY_SECRET", PHRASE, CITATION, "CORRECT HORSE\nBATTERY STAPLE"),
    "a phrase reversed": ("API_KEY_PASSPHRASE", PHRASE, DESCRIPTION, PHRASE[::-1]),
    "short, the whole scalar": ("MY_PASSWORD", "hunter22x", DESCRIPTION, "hunter22x"),
    "short, base64 as the whole scalar": ("GITLAB_TOKEN", "p@ss-w0rd", DESCRIPTION, b64("p@ss-w0rd")),
    "short, percent-encoded as the whole scalar": ("GITLAB_TOKEN", "p@ss-w0rd", DESCRIPTION, "p%40ss-w0rd"),
}


@pytest.mark.parametrize("case", DISGUISED)
def test_a_secret_pasted_encoded_short_or_with_spaces_is_refused(tmp_path, monkeypatch, case):
    """Only the value as written (16 characters or more, no spaces) was refused. The line names the key and
    the variable, never the value; a short value inside a longer text stays accepted (a word is in too many)."""
    name, value, at, pasted = DISGUISED[case]
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(name, value)
    line = load(write_params(tmp_path, at, pasted))
    said = f"{'.'.join(at)}: holds the value of the environment variable {name}"
    if "Basic " in pasted:  # since round 12 a Basic header's credentials are refused by their shape first
        said = f"{'.'.join(at)}: holds what looks like an API key or token"
    assert line is not None and said in line, line
    assert value.lower() not in line.lower() and pasted not in line
    if len(value) < 16:
        assert load(write_params(tmp_path, at, f"the release notes mention {value} once")) is None


# ---------------------------------------------------------------- a credential variable that names a file
CREDENTIAL_FILES = {  # variable, its value ({tmp} is the test's folder), where params names the file
    "an existing key file": ("GOOGLE_APPLICATION_CREDENTIALS", "{tmp}/keys/service-account.json", DESCRIPTION),
    "a home-relative token file": ("HF_TOKEN_PATH", "~/.cache/huggingface/stored_tokens.txt", CITATION),
    "a dot-relative credentials file": ("AWS_SHARED_CREDENTIALS_FILE", "./secrets/aws-credentials.ini", DESCRIPTION),
}


@pytest.mark.parametrize("case", CREDENTIAL_FILES)
def test_a_credential_variable_naming_a_file_is_no_secret(tmp_path, monkeypatch, case):
    """GOOGLE_APPLICATION_CREDENTIALS=/home/u/key.json holds where the key is: params naming that file was
    refused, and an error line quoting the path showed `***`. A real token set beside it still counts."""
    from scripts.lib.import_env import redact_line

    name, value, at = CREDENTIAL_FILES[case]
    value = value.format(tmp=tmp_path)
    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / "service-account.json").write_text("{}", encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(name, value)
    monkeypatch.setenv("T2I_ROUND10C_TOKEN", "zQ8vLw3RkP0sXt7YbN2m")
    text = f"the key file: {value}"
    assert load(write_params(tmp_path, at, text)) is None
    assert "T2I_ROUND10C_TOKEN" in (load(write_params(tmp_path, at, f"{text} zQ8vLw3RkP0sXt7YbN2m")) or "")
    line = redact_line(f"importing google.auth failed: OSError: {value}: bad key file, token zQ8vLw3RkP0sXt7YbN2m")
    assert value in line and "zQ8vLw3RkP0sXt7YbN2m" not in line, line


# ---------------------------------------------------------------- pr-comment-post never posts its token
TOKEN = "ghp_SECRETtoken1234567890abcdefABCDEF"  # test_round8_github's, which run_post sets
IN_THE_BODY = {
    "a diff row quoting it": f"| 3 | a prompt with {TOKEN} in it |",
    "upper-cased": f"| 3 | {TOKEN.upper()} |",
    "base64": f"| 3 | {b64('Bearer ' + TOKEN)} |",
    "reversed, percent-encoded": f"| 3 | {urllib.parse.quote(TOKEN[::-1])} |",
}


@pytest.fixture
def github():
    servers: list[FakeGitHub] = []
    yield lambda: servers.append(FakeGitHub(normal)) or servers[-1]
    for server in servers:
        server.close()


def _sent_token(requests: list[tuple[str, str, str]]) -> bool:
    from scripts.lib.key_redaction import holds_key

    return any(holds_key(body, TOKEN) for _, _, body in requests)


@pytest.mark.parametrize("case", IN_THE_BODY)
def test_pr_comment_post_refuses_a_body_holding_its_token(tmp_path, github, case):
    server = github()
    body = tmp_path / "comment.md"
    body.write_text(f"{MARKER}\n## dataset diff\n\n{IN_THE_BODY[case]}\n", encoding="utf-8")
    done = run_post([str(body), "--pr", "1"], server.url)
    lines = done.stderr.splitlines()
    assert done.returncode == 2 and len(lines) == 1 and "holds the token" in lines[0], done.stderr
    assert not _sent_token(server.requests) and not [r for r in server.requests if r[0] != "GET"]


def test_pr_comment_post_refuses_a_contact_sheet_holding_its_token(tmp_path, github):
    server = github()
    (tmp_path / "sheets").mkdir()
    (tmp_path / "sheets" / "base-v2.jpg").write_bytes(b"\xff\xd8\xff\xfe\x00\x2c" + TOKEN.lower().encode() + b"\0" * 64)
    body = tmp_path / "comment.md"
    body.write_text(f"{MARKER}\nhello\n", encoding="utf-8")
    done = run_post([str(body), "--pr", "1", "--assets", str(tmp_path / "sheets")], server.url)
    lines = done.stderr.splitlines()
    assert done.returncode == 2 and len(lines) == 1 and "holds the token" in lines[0], done.stderr
    assert not _sent_token(server.requests) and not any("/git/blobs" in r[1] for r in server.requests)


# ---------------------------------------------------------------- publish never uploads its token
HF_TOKEN = "hf_round10cUPLOADtoken0123456789xyz"
IN_THE_RELEASE = {  # file of the release, what goes into it
    "a caption quoting it": ("train/metadata.jsonl", "text", HF_TOKEN),
    "an original text upper-cased": ("validation/metadata.jsonl", "orig_text", HF_TOKEN.upper()),
    "the card, base64": ("README.md", None, b64(f"token={HF_TOKEN}")),
}


@pytest.fixture
def hub():
    handler = type("Hub", (HostileHub,), {"mode": "normal", "requests": [], "files": {}})
    server = Loopback(handler)
    yield server.base_url.removesuffix("/v1"), handler
    server.close()


@pytest.mark.parametrize("case", IN_THE_RELEASE)
def test_publish_refuses_a_release_holding_its_token(tmp_path, hub, case):
    """The data and the card went to the Hub as they were: a caption holding HF_TOKEN was published."""
    root = tiny_release(tmp_path / "repo")
    name, column, text = IN_THE_RELEASE[case]
    path = root / "data" / "releases" / "v2" / name
    if column is None:
        path.write_text(path.read_text(encoding="utf-8") + f"\nnotes: {text}\n", encoding="utf-8")
    else:
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
        rows[0][column] = f"a picture of {text} on a desk"
        path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    endpoint, handler = hub
    done, _ = publish(root, hub_env(tmp_path, HF_ENDPOINT=endpoint, HF_TOKEN=HF_TOKEN))
    lines = done.stderr.splitlines()
    assert done.returncode == 2 and len(lines) == 1 and "holds HF_TOKEN" in lines[0], done.stderr[-2000:]
    assert HF_TOKEN.lower() not in done.stderr.lower() and handler.requests == []  # nothing sent at all


# ---------------------------------------------------------------- a file-size limit tears no bytecode
def _whole(pyc: Path) -> bool:
    try:
        marshal.loads(pyc.read_bytes()[16:])
    except (EOFError, ValueError, TypeError):
        return False
    return True


@pytest.mark.parametrize("limit", fast_first([1500, 700, 2200]))
def test_a_file_size_limit_leaves_no_torn_bytecode_and_is_one_line(tmp_path, limit):
    """Under `ulimit -f` below the size of scripts/__init__'s cache (~2.3 KiB), Python's own writer (this
    file runs before ours is set) installed it torn: every later run was `EOFError: marshal data too
    short`. A copy of the package, its cache under its own PYTHONPYCACHEPREFIX (the venv's is untouched),
    everything else cached first: the run under the limit is one line, the next one runs."""
    shutil.copytree(REPO / "scripts", tmp_path / "scripts", ignore=shutil.ignore_patterns("__pycache__"))
    (tmp_path / "params.yaml").write_bytes((REPO / "params.yaml").read_bytes())
    cache = tmp_path / "pycache"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env |= {"PYTHONPATH": str(tmp_path), "PYTHONPYCACHEPREFIX": str(cache)}
    argv = [sys.executable, "-m", "scripts", "clean-rules", "rules.json"]

    def run(**kwargs) -> subprocess.CompletedProcess:
        return subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300, **kwargs)

    assert run().returncode == 0  # caches the interpreter's own modules; then the package's goes
    shutil.rmtree(cache / tmp_path.relative_to(tmp_path.anchor) / "scripts")
    (tmp_path / "rules.json").unlink()

    def limited() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    first = run(preexec_fn=limited)
    lines = first.stderr.splitlines()
    assert first.returncode == 2 and lines == ["error: rules.json: cannot write (File too large)"], first.stderr
    torn = [p for p in cache.rglob("*.pyc") if not _whole(p)]
    assert not torn, torn
    again = run()
    assert again.returncode == 0 and "Traceback" not in again.stderr, again.stderr[-2000:]
    assert (tmp_path / "rules.json").is_file()
