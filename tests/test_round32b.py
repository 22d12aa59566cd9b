"""Round 32b: no secret read from a file reaches params' copies, the ingest report or a printed line (every row
failed before its fix):

1. params.yaml refused an environment variable's secret in any value, not one the SDKs read from a file (the AWS
   credentials and config files, the netrc file, the Hub's token file and stored_tokens) nor a DVC remote's: a
   source `path` holding one went into data/prompts/S.report.json and dvc.lock. refuse_secrets now refuses every
   secret known (yaml_text.held_secrets), in one line naming where it is held, never the value.
2. ingest's report copied `path` as written: a short secret (found only as a whole value by the params check) as
   one folder of it, or a piece of a long one, was written. The report now goes through import_env.redact_known;
   the prompts stay as written.
3. Credentials of DVC's own config (.dvc/config, .dvc/config.local: a remote's password, keys, tokens, a URL's
   user:password) were no known secret: a line quoting one was printed whole. params.credential_files.dvc_config_credentials
   reads them (bounded, as configobj writes them).

Each row runs in process (`cli`, the default tier) and as `python -m scripts` (slow).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from helpers import cli
from helpers.workspace import run_scripts

pytestmark = pytest.mark.usefixtures("no_proxy")

LONG = "R32bFILEsecret0123456789abcdEFgh"  # no key shape: found only as a known secret
SEVEN = "Qz7hu3X"  # the params check finds one of 6-7 characters only as a whole value
SHORT = "Qz7hunt3rX"  # 8 to 15 characters: the params check finds it anywhere in a value (round 39e)


@pytest.fixture(params=["in process", pytest.param("subprocess", marks=pytest.mark.slow)])
def run(request, monkeypatch, capfd) -> Callable[..., tuple[int, str, str]]:
    """The CLI in `root`: (exit code, stdout, stderr)."""

    def go(root: Path, *argv: str) -> tuple[int, str, str]:
        if request.param == "subprocess":
            done = run_scripts(root, *argv, timeout=120)
            return done.returncode, done.stdout, done.stderr
        result = cli(list(argv), root, monkeypatch, capfd)
        return result.returncode, result.stdout, result.stderr

    return go


def readable(text: str, secret: str) -> bool:
    folded = text.casefold()
    return secret.casefold() in folded or secret.casefold() in "".join(c for c in folded if c.isalnum())


# (file, its text, the variable naming it or None for the default place, how the message names it)
def aws_credentials(secret: str) -> str:
    return f"[default]\naws_access_key_id = R32bID\naws_secret_access_key = {secret}\n"


def aws_config(secret: str) -> str:
    return f"[profile ci]\nregion = eu-west-1\naws_session_token = {secret}\n"


def netrc(secret: str) -> str:
    return f"machine hub.example login me password {secret}\n"


def stored_tokens(secret: str) -> str:
    return f"[work]\nhf_token = {secret}\n"


def dvc_local(secret: str) -> str:
    return f"['remote \"s3\"']\n    url = s3://bucket/store\n    secret_access_key = {secret}\n"


def dvc_url(secret: str) -> str:
    return f"[core]\n    remote = box\n['remote \"box\"']\n    url = ssh://me:{secret}@box.example/store\n"


HELD = {  # label: (file under root, its text, the variable naming it, the words the line names it by)
    "AWS credentials file": ("aws/creds", aws_credentials, "AWS_SHARED_CREDENTIALS_FILE", "the AWS credentials file"),
    "AWS config file": ("aws/config", aws_config, "AWS_CONFIG_FILE", "the AWS config file"),
    "netrc": ("netrc", netrc, "NETRC", "the netrc file"),
    "HF_TOKEN_PATH": ("hf/token", lambda secret: secret + "\n", "HF_TOKEN_PATH", "the Hub's token file"),
    "HF_HOME stored_tokens": ("hf/stored_tokens", stored_tokens, "HF_HOME", "the Hub's stored_tokens"),
    "DVC config.local": (".dvc/config.local", dvc_local, None, ".dvc/config.local"),
    "DVC config url": (".dvc/config", dvc_url, None, ".dvc/config"),
}


def hold(root: Path, monkeypatch, label: str, secret: str) -> str:
    """`secret` written into the file of HELD[label], the variable pointed at it; the words naming it."""
    name, text, variable, words = HELD[label]
    (root / ".dvc").mkdir(exist_ok=True)
    path = root / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text(secret), encoding="utf-8")
    if variable == "HF_HOME":
        monkeypatch.setenv(variable, str(path.parent))
    elif variable:
        monkeypatch.setenv(variable, str(path))
    return words


def source(root: Path, folder: str, line: str = "a red cat") -> str:
    """A text source `x` at data/FOLDER/raw.txt, written in params.yaml; its path."""
    path = f"data/{folder}/raw.txt"
    (root / path).parent.mkdir(parents=True)
    (root / path).write_text(line + "\n", encoding="utf-8")
    (root / "params.yaml").write_text(f"sources:\n  x:\n    kind: text\n    path: {path}\n", encoding="utf-8")
    return path


# ---------------------------------------------------------------- 1. params refuses every known secret


@pytest.mark.parametrize(
    ("label", "folder"),
    [
        ("AWS credentials file", LONG),
        ("AWS config file", f"raw-{LONG}"),
        ("netrc", LONG.upper()),
        ("HF_TOKEN_PATH", LONG),
        ("HF_HOME stored_tokens", LONG),
        ("DVC config.local", LONG),
        ("DVC config url", LONG),
        ("netrc", SHORT),  # a short one as a whole value: the path is that folder alone
    ],
)
def test_a_source_path_holding_a_secret_read_from_a_file_is_refused_in_one_line(
    tmp_path, home, monkeypatch, run, label, folder
):
    secret = LONG if LONG.casefold() in folder.casefold() else SHORT
    words = hold(tmp_path, monkeypatch, label, secret)
    if folder == SHORT:
        (tmp_path / SHORT).write_text("a red cat\n", encoding="utf-8")
        (tmp_path / "params.yaml").write_text(f"sources:\n  x:\n    kind: text\n    path: {SHORT}\n", encoding="utf-8")
    else:
        source(tmp_path, folder)
    code, out, err = run(tmp_path, "ingest", "x", "out.parquet")
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert f"sources.x.path: holds a secret read from {words}" in err
    assert not readable(out + err, secret)
    assert not (tmp_path / "out.parquet").exists() and not (tmp_path / "out.report.json").exists()


# ---------------------------------------------------------------- 2. the report holds no known secret


@pytest.mark.parametrize(
    ("label", "secret", "folder"),
    [
        ("netrc", SEVEN, f"{SEVEN}"),  # a secret of 6-7 characters as one folder of the path (8 to 15 are
        ("DVC config.local", SEVEN, f"in-{SEVEN}-set"),  # refused anywhere since round 39e)
        ("AWS credentials file", LONG, LONG[:12]),  # a piece of a long one: never the whole
        ("HF_TOKEN_PATH", LONG, f"tok{LONG[8:20]}"),
    ],
)
def test_the_ingest_report_redacts_a_known_secret_and_keeps_the_prompts(
    tmp_path, home, monkeypatch, run, label, secret, folder
):
    hold(tmp_path, monkeypatch, label, secret)
    path = source(tmp_path, folder, line=f"a red cat named {folder}")
    code, out, err = run(tmp_path, "ingest", "x", "out.parquet")
    assert code == 0 and "1 rows written" in out, err
    report = json.loads((tmp_path / "out.report.json").read_text(encoding="utf-8"))
    assert "***" in report["path"] and not readable(report["path"], folder)
    assert report["rows_written"] == 1 and path != report["path"]
    assert pq.read_table(tmp_path / "out.parquet").column("prompt").to_pylist() == [f"a red cat named {folder}"]


# ---------------------------------------------------------------- 3. DVC's config credentials are known


def config_text(option: str, value: str) -> str:
    return f"[core]\n    remote = r\n['remote \"r\"']\n    url = s3://bucket/x\n    {option} = {value}\n"


@pytest.mark.parametrize(
    ("config", "option", "written", "secret"),
    [
        ("config.local", "password", LONG, LONG),
        ("config", "secret_access_key", LONG, LONG),
        ("config.local", "access_key_id", SHORT, SHORT),
        ("config.local", "session_token", f'"{LONG}"  # quoted, with a comment', LONG),
        ("config", "token", SHORT, SHORT),
        ("config.local", "url", f"https://me:{SHORT}@dav.example/store", SHORT),
    ],
)
def test_a_line_quoting_a_dvc_remote_credential_is_redacted(tmp_path, home, run, config, option, written, secret):
    (tmp_path / ".dvc").mkdir()
    (tmp_path / ".dvc" / config).write_text(config_text(option, written), encoding="utf-8")
    source(tmp_path, "plain")
    code, out, err = run(tmp_path, "ingest", secret, "out.parquet")  # `no source '<name>'` quotes it
    assert code == 2 and "no source" in err and "***" in err, err
    assert not readable(out + err, secret)
