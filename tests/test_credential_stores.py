"""Credentials held where DVC and git keep them outside the repository are known secrets (every row failed before):

1. `dvc remote modify --global` / `--system` keeps a remote's key out of the repository's config, in DVC's global
   config (DVC_GLOBAL_CONFIG_DIR, else XDG_CONFIG_HOME's or ~/.config's `dvc/config`) or the system's
   (DVC_SYSTEM_CONFIG_DIR, else /etc/xdg/dvc/config). Only .dvc/config and .dvc/config.local were read: a source
   path holding such a key went into dvc.lock and the ingest report, and a line quoting it was printed whole.
2. git's `store` helper keeps `https://user:token@host` lines in ~/.git-credentials or ~/.config/git/credentials;
   tag, pr-build and replay-history run git. Those tokens were no known secret either.

params.credential_files reads both (dvc_config_files, git_store_credentials), bounded like the others.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from helpers import cli

pytestmark = pytest.mark.usefixtures("no_proxy")

LONG = "StoreHeldSecret0123456789abcdXY"  # no key shape: found only as a known secret
SHORT = "Gq8lark5Zp"  # under 16 characters: refused as a whole value, redacted anywhere


def remote_config(option: str, value: str) -> str:
    return f"['remote \"s3\"']\n    url = s3://bucket/store\n    {option} = {value}\n"


def git_line(secret: str) -> str:
    return f"https://me:{secret}@github.com\n"


# label: (where the file goes, given the test's home; its text; the variable to point at its folder, or None)
STORES = {
    "DVC global, DVC_GLOBAL_CONFIG_DIR": (
        "gdvc/config",
        lambda s: remote_config("secret_access_key", s),
        "DVC_GLOBAL_CONFIG_DIR",
    ),
    "DVC global, ~/.config": ("home/.config/dvc/config", lambda s: remote_config("password", s), None),
    "DVC global, XDG_CONFIG_HOME": (
        "xdg/dvc/config",
        lambda s: remote_config("session_token", f'"{s}"'),
        "XDG_CONFIG_HOME",
    ),
    "DVC system, DVC_SYSTEM_CONFIG_DIR": ("home/system-dvc/config", lambda s: remote_config("token", s), None),
    "DVC system, url": ("home/system-dvc/config", lambda s: remote_config("url", f"ssh://me:{s}@box.example/x"), None),
    "git, ~/.git-credentials": ("home/.git-credentials", git_line, None),
    "git, ~/.config/git/credentials": ("home/.config/git/credentials", git_line, None),
}
WORDS = {"DVC global": "DVC's global config", "DVC system": "DVC's system config", "git": "git's credential store"}


def hold(root: Path, monkeypatch, label: str, secret: str) -> str:
    """`secret` written where STORES[label] says; the words a line names that place by."""
    name, text, variable = STORES[label]
    path = root / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text(secret), encoding="utf-8")
    if variable:
        monkeypatch.setenv(variable, str(path.parent.parent if variable == "XDG_CONFIG_HOME" else path.parent))
    return WORDS[label.split(",")[0]]


def readable(text: str, secret: str) -> bool:
    return secret.casefold() in text.casefold()


def text_source(root: Path, path: str) -> None:
    (root / path).parent.mkdir(parents=True, exist_ok=True)
    (root / path).write_text("a red cat\n", encoding="utf-8")
    (root / "params.yaml").write_text(f"sources:\n  x:\n    kind: text\n    path: {path}\n", encoding="utf-8")


@pytest.mark.parametrize(
    ("label", "secret"), [(label, LONG) for label in STORES] + [("git, ~/.git-credentials", SHORT)]
)
def test_a_source_path_holding_a_key_of_dvcs_or_gits_own_stores_is_refused_in_one_line(
    tmp_path, home, monkeypatch, capfd, label, secret
):
    words = hold(tmp_path, monkeypatch, label, secret)
    text_source(tmp_path, secret if secret == SHORT else f"data/{secret}/raw.txt")
    result = cli(["ingest", "x", "out.parquet"], tmp_path, monkeypatch, capfd)
    assert result.returncode == 2, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
    assert f"sources.x.path: holds a secret read from {words}" in result.stderr
    assert not readable(result.stdout + result.stderr, secret)
    assert not (tmp_path / "out.parquet").exists() and not (tmp_path / "out.report.json").exists()


@pytest.mark.parametrize("label", list(STORES))
def test_a_line_quoting_a_key_of_dvcs_or_gits_own_stores_is_redacted(tmp_path, home, monkeypatch, capfd, label):
    hold(tmp_path, monkeypatch, label, SHORT)
    text_source(tmp_path, "data/plain/raw.txt")
    result = cli(["ingest", SHORT, "out.parquet"], tmp_path, monkeypatch, capfd)  # `no source '<name>'`
    assert result.returncode == 2 and "no source" in result.stderr and "***" in result.stderr, result.stderr
    assert not readable(result.stdout + result.stderr, SHORT)
