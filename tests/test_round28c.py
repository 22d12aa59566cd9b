"""Round 28c: no secret in any line printed or file written, whatever form it takes (every row failed before its fix
unless its table says it guards):

1. Lines on stdout at exit 0 and stderr's progress lines were printed as given: a success line quoting an output
   path that holds a key, a progress summary naming an input that does. cli's standard output and error now put
   every line through import_env.redact_line, as error lines were; the secrets are read once per process
   (known_secrets), and progress redacts its description once.
2. Credentials the SDKs read from files, not the environment (AWS_SHARED_CREDENTIALS_FILE, AWS_CONFIG_FILE or
   ~/.aws, NETRC, HF_TOKEN_PATH or the Hub's token files) were not redacted from a line: they are now among the
   secrets known (import_env.file_credentials: bounded, a FIFO or a folder never waited on nor failing the line).
3. A key written with `ß` for `ss` (or `ẞ`, case folded), or %-escaped twice or more at some characters, was kept
   whole; the scheme-less `user:password@host` rule blanked a time before a place (`12:30@venue`) and mail
   addresses after a label (`email:jo@example.com`): a host is now a dotted name, a name and port, or [IPv6].
4. A server's reply or error echoing a secret other than the API key (the Hub token, an AWS key of a credentials
   file) went into the response cache, prompts.txt and the error line: redact_secrets removes every secret known.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import urllib.parse
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest

from helpers import Loopback, cli
from helpers.repos import REPO

pytestmark = pytest.mark.usefixtures("no_proxy")

KEY = "sk-R28cPRINTEDkey0123456789abcdEF"  # long: found by pieces
SHORT = "Hx7pass9Qw"  # short (under 16 characters): found whole, in any encoding
FILE_SECRET = "R28cFILEsecret0123456789abcdEFghIJ"


def readable(text: str, secret: str) -> bool:
    """Whether `secret` can be read in `text`: in any letter case, ß as ss, separators left out."""
    folded = text.casefold()
    joined = "".join(char for char in folded if char.isalnum())
    return secret.casefold() in folded or secret.casefold() in joined


def clean_params(root: Path) -> None:
    (root / "params.yaml").write_text("clean: {}\n", encoding="utf-8")


# ---------------------------------------------------------------- 1. every line printed, at exit 0 too


def _success_line(root: Path, name: str) -> tuple[str, str]:
    """clean-rules into a folder `name`: its success line on stdout quotes the output path."""
    clean_params(root)
    return "clean-rules", f"{name}/rules.json"


PRINTED = {  # (secret, the name the user typed holding it)
    "stdout, the key as is": (KEY, f"out-{KEY}"),
    "stdout, the key upper-cased": (KEY, f"out-{KEY.upper()}"),
    "stdout, the key %-escaped": (KEY, "out-" + "".join(f"%{ord(c):02X}" if c in "kRd" else c for c in KEY)),
    "stdout, a short key": (SHORT, f"out {SHORT}"),
}


@pytest.mark.parametrize("row", sorted(PRINTED))
def test_a_success_line_on_stdout_never_shows_a_secret(tmp_path, home, monkeypatch, capfd, row):
    secret, name = PRINTED[row]
    monkeypatch.setenv("MY_API_KEY", secret)
    command, output = _success_line(tmp_path, name)
    result = cli([command, output], tmp_path, monkeypatch, capfd)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("clean_rules: 3 rule sets"), result.stdout
    assert not readable(result.stdout, secret) and name not in result.stdout, result.stdout
    assert (tmp_path / output).is_file()  # the output is where the user said, only the line is redacted


PROGRESS = {  # (secret, the input's file name)
    "the summary, the key as is": (KEY, f"in-{KEY}.txt"),
    "the summary, the key reversed": (KEY, f"in-{KEY[::-1]}.txt"),
    "the summary, a short key in capitals": (SHORT, f"in {SHORT.upper()}.txt"),
}


@pytest.mark.parametrize("row", sorted(PROGRESS))
def test_a_progress_line_never_shows_a_secret(tmp_path, home, monkeypatch, capfd, row):
    secret, name = PROGRESS[row]
    monkeypatch.setenv("MY_API_KEY", secret)
    monkeypatch.setenv("T2I_PROGRESS_EVERY_S", "0")
    (tmp_path / name).write_text("a prompt here\n" * 50, encoding="utf-8")
    result = cli(["clean-text", "--rules", "final", name, "out.jsonl"], tmp_path, monkeypatch, capfd)
    assert result.returncode == 0, result.stderr
    assert "clean-text " in result.stderr and " bytes in " in result.stderr, result.stderr
    assert not readable(result.stderr, secret) and not readable(result.stderr, secret[::-1]), result.stderr


@pytest.mark.slow
@pytest.mark.parametrize("stream", ["stdout", "stderr"])
def test_a_real_process_prints_no_secret_at_exit_0(tmp_path, stream):
    """The same, as a user runs it: `python -m scripts` in a process of its own."""
    clean_params(tmp_path)
    (tmp_path / f"in-{KEY}.txt").write_text("a prompt here\n" * 50, encoding="utf-8")
    argv = (
        ["clean-rules", f"out-{KEY}/rules.json"]
        if stream == "stdout"
        else ["clean-text", "--rules", "final", f"in-{KEY}.txt", "out.jsonl"]
    )
    env = {**os.environ, "PYTHONPATH": str(REPO), "MY_API_KEY": KEY, "T2I_PROGRESS_EVERY_S": "0"}
    done = subprocess.run(
        [sys.executable, "-m", "scripts", *argv], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    printed = getattr(done, stream)
    assert printed.strip() and not readable(printed, KEY), printed


# ---------------------------------------------------------------- 2. credentials the SDKs read from files


def _aws_credentials(home: Path, monkeypatch) -> None:
    path = home / "elsewhere" / "credentials"
    path.parent.mkdir()
    path.write_text(f"[default]\naws_access_key_id = AKIA0EXAMPLE\naws_secret_access_key = {FILE_SECRET}\n")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(path))


def _aws_home_profile(home: Path, monkeypatch) -> None:
    (home / ".aws").mkdir()
    (home / ".aws" / "credentials").write_text(f"[work]\naws_secret_access_key={FILE_SECRET}\n")
    monkeypatch.setenv("AWS_PROFILE", "work")


def _aws_config_session(home: Path, monkeypatch) -> None:
    path = home / "aws.cfg"
    path.write_text(f"[profile ci]\nregion = eu-west-1\naws_session_token = {FILE_SECRET}\n")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(path))


def _netrc(home: Path, monkeypatch) -> None:
    (home / ".netrc").write_text(f"machine s3.example login me password {FILE_SECRET}\n")


def _hub_token_path(home: Path, monkeypatch) -> None:
    (home / "tok").write_text(f"{FILE_SECRET}\n")
    monkeypatch.setenv("HF_TOKEN_PATH", str(home / "tok"))


def _hub_stored_tokens(home: Path, monkeypatch) -> None:
    (home / "hf").mkdir()
    (home / "hf" / "stored_tokens").write_text(f"[laptop]\nhf_token = {FILE_SECRET}\n")
    monkeypatch.setenv("HF_HOME", str(home / "hf"))


def _fifo_beside_a_netrc(home: Path, monkeypatch) -> None:  # the FIFO is not waited on; the netrc's still found
    os.mkfifo(home / "fifo")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(home / "fifo"))
    _netrc(home, monkeypatch)


def _garbage_beside_a_token(home: Path, monkeypatch) -> None:  # an INI that is none, a folder, 3 MB: no failure
    (home / "junk").write_bytes(b"\xff\x00[[[\n=\n" * 10 + b"x" * 3_000_000)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(home / "junk"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(home))
    monkeypatch.setenv("NETRC", "/dev/zero")
    _hub_token_path(home, monkeypatch)


CREDENTIAL_FILES = {
    "AWS_SHARED_CREDENTIALS_FILE": _aws_credentials,
    "~/.aws/credentials, a named profile": _aws_home_profile,
    "AWS_CONFIG_FILE's session token": _aws_config_session,
    "~/.netrc": _netrc,
    "HF_TOKEN_PATH": _hub_token_path,
    "HF_HOME/stored_tokens": _hub_stored_tokens,
    "a FIFO as the credentials file, a netrc": _fifo_beside_a_netrc,
    "garbage, a folder and /dev/zero, a token file": _garbage_beside_a_token,
}


@pytest.mark.parametrize("row", sorted(CREDENTIAL_FILES))
def test_a_credential_read_from_a_file_never_reaches_the_line(tmp_path, home, monkeypatch, capfd, row):
    CREDENTIAL_FILES[row](home, monkeypatch)
    clean_params(tmp_path)
    result = cli(["clean-text", f"in-{FILE_SECRET}.txt", "out.jsonl"], tmp_path, monkeypatch, capfd)
    assert result.returncode == 2 and result.stderr.startswith("error: "), result.stderr
    assert "Traceback" not in result.stderr and not readable(result.stderr, FILE_SECRET), result.stderr


# ---------------------------------------------------------------- 3. folded, escaped again; what is no credential


def _escaped_again(text: str, chars: str, times: int) -> str:
    out = []
    for char in text:
        escaped = f"%{ord(char):02X}" if char in chars else char
        for _ in range(times - 1):
            escaped = escaped.replace("%", "%25")
        out.append(escaped)
    return "".join(out)


FORMS = {  # (secret, how the name the user typed writes it)
    "ß for ss": (SHORT, SHORT.replace("ss", "ß")),
    "ẞ for SS, upper-cased": (SHORT, SHORT.upper().replace("SS", "ẞ")),
    "ß inside a long key's every piece": ("sk-ssassassassassassass", "sk-ßaßaßaßaßaßaßaß"),
    "%-escaped twice at some characters": (SHORT, _escaped_again(SHORT, "a7", 2)),
    "%-escaped three times char by char": (SHORT, _escaped_again(SHORT, SHORT, 3)),
}


@pytest.mark.parametrize("row", sorted(FORMS))
def test_a_secret_folded_or_escaped_again_never_reaches_the_line(tmp_path, home, monkeypatch, capfd, row):
    secret, written = FORMS[row]
    monkeypatch.setenv("MY_API_KEY", secret)
    clean_params(tmp_path)
    result = cli(["clean-text", f"in {written} x.txt", "out.jsonl"], tmp_path, monkeypatch, capfd)
    assert result.returncode == 2, result.stderr
    line = result.stderr
    decoded = line
    for _ in range(3):
        decoded = urllib.parse.unquote(decoded)
    assert written not in line and not readable(decoded, secret), line


KEPT = [  # metadata no credential is in: kept as the source wrote it
    "meet 12:30@venue",
    "doors 19:30@club.example",
    "at 7:45pm@cafe.example",
    "email:jo@example.com",
    "Contact:jo.doe@example.com",
]
BLANKED = {  # guards: a user:password@ without a scheme before a real host is still ***@
    "a dotted host": ("x ftp:s3cretPw@host-1.example.org", "x ***@host-1.example.org"),
    "a host and port": ("admin:pw0rd@localhost:8080/db", "***@localhost:8080/db"),
    "an IPv6 host": ("u:p4ss@[::1]:80", "***@[::1]:80"),
}


@pytest.mark.parametrize("text", KEPT)
def test_a_time_or_mail_address_in_metadata_is_kept(text):
    from scripts.lib.readers.base import without_signatures

    assert without_signatures({"note": text}) == {"note": text}


@pytest.mark.parametrize("row", sorted(BLANKED))
def test_a_password_without_a_scheme_is_still_blanked(row):
    from scripts.lib.readers.base import without_signatures

    text, blanked = BLANKED[row]
    assert without_signatures(text) == blanked


# ---------------------------------------------------------------- 4. what a server echoes, into the cache


def echoing(status: int, echoed: str) -> Loopback:
    class Echo(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_POST(self):
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            reply = {"choices": [{"message": {"content": f"a prompt {echoed}"}, "finish_reason": "stop"}]}
            body = reply if status == 200 else {"error": {"message": f"bad request near {echoed}"}}
            raw = json.dumps({**body, "usage": {"prompt_tokens": 1, "completion_tokens": 1}}).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

    return Loopback(Echo)


def _hub_token(home: Path, monkeypatch) -> tuple[str, str]:
    monkeypatch.setenv("HF_TOKEN", f"hf_{FILE_SECRET}")
    return f"hf_{FILE_SECRET}", f"hf_{FILE_SECRET}"


def _aws_file_key(home: Path, monkeypatch) -> tuple[str, str]:
    _aws_credentials(home, monkeypatch)
    return FILE_SECRET, FILE_SECRET.upper()


def _github_base64(home: Path, monkeypatch) -> tuple[str, str]:
    monkeypatch.setenv("GITHUB_TOKEN", f"ghp_{FILE_SECRET}")
    return f"ghp_{FILE_SECRET}", base64.b64encode(f"x-access-token:ghp_{FILE_SECRET}".encode()).decode()


def _netrc_escaped(home: Path, monkeypatch) -> tuple[str, str]:
    _netrc(home, monkeypatch)
    return FILE_SECRET, urllib.parse.quote(urllib.parse.quote("/".join(FILE_SECRET), safe=""), safe="")


ECHOED = {  # what is set, and (the secret, what the server echoes)
    "the Hub token": _hub_token,
    "an AWS key of the credentials file, upper-cased": _aws_file_key,
    "a GitHub token, base64 of a Basic header": _github_base64,
    "a netrc password, %-escaped twice": _netrc_escaped,
}


def _not_readable(text: str, secret: str) -> bool:
    decoded = text
    for _ in range(3):
        decoded = urllib.parse.unquote(decoded)
    return not readable(decoded, secret) and base64.b64encode(f"x-access-token:{secret}".encode()).decode() not in text


@pytest.mark.parametrize("row", sorted(ECHOED))
def test_a_reply_echoing_a_secret_never_reaches_the_cache(home, monkeypatch, row):
    from scripts.lib.chat_client import post_chat

    secret, echoed = ECHOED[row](home, monkeypatch)
    server = echoing(200, echoed)
    try:
        reply = post_chat(f"{server.base_url}/chat/completions", {"model": "m"}, "sk-the-api-key-00000", 10)
    finally:
        server.close()
    stored = json.dumps(reply, ensure_ascii=False)  # what the cache entry and prompts.txt get
    assert "a prompt " in stored and _not_readable(stored, secret), stored


@pytest.mark.parametrize("row", sorted(ECHOED))
def test_an_error_body_echoing_a_secret_never_reaches_the_reason(home, monkeypatch, row):
    from scripts.lib.chat_client import FatalError, post_chat

    secret, echoed = ECHOED[row](home, monkeypatch)
    server = echoing(400, echoed)
    try:
        with pytest.raises(FatalError) as caught:
            post_chat(f"{server.base_url}/chat/completions", {"model": "m"}, "sk-the-api-key-00000", 10)
    finally:
        server.close()
    assert "HTTP 400" in str(caught.value) and _not_readable(str(caught.value), secret), caught.value
