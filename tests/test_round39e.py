"""Known secrets anywhere in params.yaml, and the credentials Docker and Google keep in files (every row failed before):

1. A known secret of 8 to 15 characters (a credential file's, DVC's config's, git's store's, or the value of a variable
   an `*_env` key names) was refused only as a whole value: one that was part of a path went into dvc.lock. It is now
   looked for anywhere in a value (any case, reversed, percent-escaped, base64), by key_redaction.holds_whole_key.
2. Docker's config.json (`auths`: base64 user:password, identitytoken) and the JSON file GOOGLE_APPLICATION_CREDENTIALS
   names (private_key, private_key_id) were read by nothing. A bad one adds no secret and breaks no run.
3. A hostile user's other ways: the secret in a key, in a list item, in an unknown section, cut across two neighbouring
   values, or with a zero-width space inside.

The refusal is one line naming the key, never the value.
"""

from __future__ import annotations

import base64
import json
import os
import urllib.parse
from pathlib import Path

import pytest

from helpers.workspace import params_error

SHORT = "Gq8lark5Zp2"  # 11 characters: under 16, no word
SEVEN = "Zq7x9k2"  # 7: looked for only as a whole value
LONG = "StoreHeldSecret0123456789abcdXY"


@pytest.fixture
def clean(home, monkeypatch, tmp_path):
    for name in ("DOCKER_CONFIG", "GOOGLE_APPLICATION_CREDENTIALS", "MY_SERVICE_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    return home


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


def source(value: str) -> str:
    return f"sources:\n  x:\n    kind: text\n    path: {json.dumps(value)}\n"


# where a short secret is held: (file under the test's folder, its text, the words the line names it by)
def aws(secret: str) -> tuple[str, str, str]:
    return "home/.aws/credentials", f"[default]\naws_secret_access_key = {secret}\n", "the AWS credentials file"


def dvc_local(secret: str) -> tuple[str, str, str]:
    return ".dvc/config.local", f"['remote \"r\"']\n    url = s3://b/x\n    password = {secret}\n", ".dvc/config.local"


def git_store(secret: str) -> tuple[str, str, str]:
    return "home/.git-credentials", f"https://me:{secret}@github.com\n", "git's credential store"


SHORT_PARTS = {  # holder, the path pasted
    "AWS key inside a path": (aws, f"data/run-{SHORT}/raw.txt"),
    "DVC password upper-cased": (dvc_local, f"data/{SHORT.upper()}.txt"),
    "git token reversed": (git_store, f"d/{SHORT[::-1]}/r.txt"),
    "AWS key percent-escaped char by char": (aws, "d/" + "".join(f"%{ord(c):02X}" for c in SHORT) + "/r"),
    "git token base64 in a query": (git_store, "s3://b/x?t=" + base64.b64encode(f"me:{SHORT}".encode()).decode()),
}


@pytest.mark.parametrize("case", SHORT_PARTS)
def test_a_short_known_secret_part_of_a_value_is_refused(tmp_path, clean, case):
    holder, pasted = SHORT_PARTS[case]
    file, text, words = holder(SHORT)
    write(tmp_path / file, text)
    line = params_error(tmp_path, source(pasted))
    assert line is not None and f"sources.x.path: holds a secret read from {words}" in line, line
    assert "\n" not in line and SHORT.lower() not in line.lower()


@pytest.mark.parametrize(
    "pasted", [f"data/{SHORT}/raw.txt", f"d/{SHORT[::-1]}.txt", "d/" + urllib.parse.quote(f"{SHORT}/x", safe="")]
)
def test_a_short_value_of_a_variable_an_env_key_names_is_refused_anywhere(tmp_path, clean, monkeypatch, pasted):
    monkeypatch.setenv("MY_SERVICE_KEY", SHORT)
    params = source(pasted) + "synthesize:\n  api_key_env: MY_SERVICE_KEY\n"
    line = params_error(tmp_path, params)
    assert line is not None and "sources.x.path: holds the value of the environment variable MY_SERVICE_KEY" in line


@pytest.mark.parametrize("pasted", [f"data/{SEVEN}/raw.txt", "photos/sunshine-day.txt", "data/Gq8lark5.txt"])
def test_no_false_positive_for_a_7_character_secret_a_word_or_a_piece(tmp_path, clean, pasted):
    """1-7 characters are not looked for as a part; nor a word (`sunshine`); nor a piece of an 11-character one."""
    write(tmp_path / "home/.git-credentials", f"https://me:{SEVEN}@a.example\nhttps://u:sunshine@b.example\n")
    write(tmp_path / "home/.aws/credentials", f"[default]\naws_secret_access_key = {SHORT}\n")
    line = params_error(tmp_path, source(pasted))
    assert line is None or "secret" not in line, line


# ---------------------------------------------------------------- 2. Docker's and Google's credential files
def docker_auth(secret: str) -> str:
    auth = base64.b64encode(f"me:{secret}".encode()).decode()
    return json.dumps({"auths": {"registry.example": {"auth": auth}}})


def docker_token(secret: str) -> str:
    return json.dumps({"auths": {"ghcr.io": {"identitytoken": secret}}})


def google(field: str) -> object:
    def text(secret: str) -> str:
        value = (
            f"-----BEGIN PRIVATE KEY-----\n{secret}\n-----END PRIVATE KEY-----\n" if field == "private_key" else secret
        )
        return json.dumps({"type": "service_account", field: value})

    return text


FILES = {  # label: (file under home, its text of the secret, variable naming the file or its folder, words)
    "docker auth, ~/.docker": (".docker/config.json", docker_auth, None, "Docker's config.json"),
    "docker identitytoken, DOCKER_CONFIG": ("dk/config.json", docker_token, "DOCKER_CONFIG", "Docker's config.json"),
    "google private_key_id": ("keys/sa.json", google("private_key_id"), "GOOGLE_APPLICATION_CREDENTIALS", "Google's"),
    "google private_key": ("keys/sa.json", google("private_key"), "GOOGLE_APPLICATION_CREDENTIALS", "Google's"),
}


@pytest.mark.parametrize("secret", [SHORT, LONG], ids=["short", "long"])
@pytest.mark.parametrize("label", FILES)
def test_docker_and_google_credentials_are_known_secrets(tmp_path, clean, monkeypatch, label, secret):
    from scripts.lib.import_env import redact_line

    file, text, variable, words = FILES[label]
    write(clean / file, text(secret))
    if variable:
        target = clean / file
        monkeypatch.setenv(variable, str(target if variable.startswith("GOOGLE") else target.parent))
    line = params_error(tmp_path, source(f"data/x{secret}/raw.txt"))
    assert line is not None and f"sources.x.path: holds a secret read from {words}" in line, line
    assert secret.lower() not in line.lower()
    assert secret not in redact_line(f"error: bad key {secret}")


BAD = {
    "truncated JSON": '{"auths": {"r": {"auth": "bWU6',
    "too deep": "[" * 100_000,
    "auths a list": '{"auths": [1, 2]}',
    "auth not base64, not a string": '{"auths": {"r": {"auth": 7, "identitytoken": null}, "s": "x"}}',
}


@pytest.mark.parametrize("text", list(BAD.values()), ids=list(BAD))
def test_a_bad_docker_or_google_file_adds_no_secret_and_breaks_nothing(tmp_path, clean, monkeypatch, text):
    from scripts.lib.params.credential_files import credential_sources

    write(clean / ".docker/config.json", text)
    write(clean / "g.json", text)
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(clean / "g.json"))
    os.mkfifo(clean / "fifo.json")
    assert credential_sources() == {}
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(clean / "fifo.json"))
    assert credential_sources() == {}


# ---------------------------------------------------------------- 3. a hostile user's other places
HOSTILE = {  # label: (params text, the key the line names)
    "in a key": (f"sources:\n  x-{SHORT}-y:\n    kind: text\n    path: a.txt\n", "sources: holds"),
    "in a list item": (f"zz:\n  - ok\n  - data/{SHORT}x/raw\n", "zz.1: holds"),
    "in an unknown nested section": (f"zz:\n  q:\n    r: p/{SHORT}_2\n", "zz.q.r: holds"),
    "split across two values (short)": (
        f"zz:\n  a: x/{SHORT[:5]}\n  b: {SHORT[5:]}/y\n",
        "zz.a and zz.b: together hold",
    ),
    "split across two values (long)": (f"zz:\n  - {LONG[:15]}\n  - {LONG[15:]}\n", "zz.0 and zz.1: together hold"),
    "split across a list's three items": (f"zz: [a, {LONG[:10]}, {LONG[10:]}]\n", "zz.1 and zz.2: together hold"),
    "zero-width space in a 7-character one": (f'zz: "{SEVEN[:3]}\\u200b{SEVEN[3:]}"\n', "zz: holds"),
    "zero-width space in a short one's part": (f'zz: "d/{SHORT[:4]}\\u200b{SHORT[4:]}/r"\n', "zz: holds"),
    "zero-width joiner in a 7-character one": (f'zz: "{SEVEN[:5]}\\u200d{SEVEN[5:]}"\n', "zz: holds"),
}


@pytest.mark.parametrize("case", HOSTILE)
def test_a_known_secret_hidden_another_way_is_refused(tmp_path, clean, case):
    params, said = HOSTILE[case]
    creds = "".join(f"https://me{i}:{s}@h{i}.example\n" for i, s in enumerate((SHORT, SEVEN, LONG)))
    write(clean / ".git-credentials", creds)
    line = params_error(tmp_path, params)
    assert line is not None and f"{said} a secret read from git's credential store" in line, line
    assert "\n" not in line and all(s.lower() not in line.lower() for s in (SHORT, SEVEN, LONG))
