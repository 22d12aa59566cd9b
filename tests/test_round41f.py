"""Round 41f: params.yaml's size in nodes bounded before it is built, and gcloud's application-default login.

1. A params.yaml of 10**6 empty steps (`steps: [{}, {}, ...]`, 4 MB, or a block list of `- {}` lines), 10**6
   sources or a 10**6-item list anywhere ran over a minute building and checking it before any check refused it.
   The event pass that bounds nesting (nesting.check_yaml_depth) now counts nodes too, and stops at
   nesting.MAX_YAML_NODES: one line naming the file and the cap, before anything is built.
2. gcloud's application-default credentials (~/.config/gcloud/application_default_credentials.json, or
   CLOUDSDK_CONFIG's folder: what the Google SDKs use when GOOGLE_APPLICATION_CREDENTIALS is unset) were read by
   nothing: its refresh_token or client_secret pasted into a source path went into dvc.lock.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers.workspace import params_error

ROOT = Path(__file__).resolve().parents[1]


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


# ---------------------------------------------------------------- 1. nodes bounded before the build
CAP = 1000
OVER = CAP + 1
MANY = {  # label: a params text of more than CAP nodes
    "empty steps, a flow list": "releases:\n  v:\n    steps: [" + "{}, " * OVER + "]\n",
    "empty steps, a block list": "releases:\n  v:\n    steps:\n" + "      - {}\n" * OVER,
    "sources": "sources:\n" + "".join(f"  s{i}: {{kind: text, path: p{i}}}\n" for i in range(OVER // 4)),
    "a list anywhere": "zz:\n  q: [" + "1, " * OVER + "]\n",
}


@pytest.mark.parametrize("case", MANY)
def test_too_many_nodes_is_one_line_before_the_build(tmp_path, monkeypatch, case):
    from scripts.lib import nesting

    monkeypatch.setattr(nesting, "MAX_YAML_NODES", CAP)
    line = params_error(tmp_path, MANY[case])
    assert line is not None and line.endswith(
        f"params.yaml: more than {CAP:,} YAML values, lists and mappings; refusing to read it"
    ), line


def test_the_repository_params_are_under_the_cap():
    import yaml

    from scripts.lib.nesting import MAX_YAML_NODES, check_yaml_depth

    text = (ROOT / "params.yaml").read_text(encoding="utf-8")
    assert sum(1 for _ in check_yaml_depth(yaml.parse(text, Loader=yaml.CSafeLoader))) < MAX_YAML_NODES // 100


REAL = {  # label: what replaces `releases:` in the repository's params.yaml (10**6 nodes and more)
    "10**6 empty steps, flow": "zz: [" + "{}, " * 10**6 + "]\nreleases:\n",
    "10**6 empty steps, block": "zz:\n" + "  - {}\n" * 10**6 + "releases:\n",
}


@pytest.mark.slow
@pytest.mark.parametrize("case", REAL)
def test_a_million_nodes_is_refused_in_seconds(tmp_path, case):
    params = (ROOT / "params.yaml").read_text(encoding="utf-8").replace("releases:\n", REAL[case], 1)
    write(tmp_path / "params.yaml", params)
    (tmp_path / "dvc.yaml").write_bytes((ROOT / "dvc.yaml").read_bytes())
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "scripts", "recipes", "data/recipes"],
        cwd=tmp_path,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=60,  # it ran over a minute (66 s on a loaded machine); now the event pass stops at the cap
    )
    assert done.returncode == 2, done.stderr[-2000:]
    assert (
        done.stderr.strip()
        == "error: params.yaml: more than 1,000,000 YAML values, lists and mappings; refusing to read it"
    )
    assert not (tmp_path / "data").exists() and time.monotonic() - started < 60


# ---------------------------------------------------------------- 2. gcloud's application-default credentials
REFRESH = "1//0gRefreshTok3nXyZ9aQ-abcdEFGH"
CLIENT_SECRET = "d-FL95Q19q7MQmFpd7hHD0Ty"
PEM_BODY = "MIIEvQIBADANBgkqhkiG9w0BAQEFAASC"

ADC = {  # label: (the file's JSON, CLOUDSDK_CONFIG's folder under home or None, the secret)
    "refresh_token, ~/.config/gcloud": ({"type": "authorized_user", "refresh_token": REFRESH}, None, REFRESH),
    "client_secret, CLOUDSDK_CONFIG": (
        {"type": "authorized_user", "client_id": "x.apps", "client_secret": CLIENT_SECRET},
        "gc",
        CLIENT_SECRET,
    ),
    "service account private_key, ~/.config/gcloud": (
        {
            "type": "service_account",
            "private_key": f"-----BEGIN PRIVATE KEY-----\n{PEM_BODY}\n-----END PRIVATE KEY-----\n",
        },
        None,
        PEM_BODY,
    ),
}


@pytest.mark.parametrize("case", ADC)
def test_gcloud_application_default_credentials_are_known_secrets(tmp_path, home, monkeypatch, case):
    from scripts.lib.import_env import redact_line

    content, folder, secret = ADC[case]
    for name in ("GOOGLE_APPLICATION_CREDENTIALS", "CLOUDSDK_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    where = home / (folder or ".config/gcloud")
    write(where / "application_default_credentials.json", json.dumps(content))
    if folder:
        monkeypatch.setenv("CLOUDSDK_CONFIG", str(where))
    monkeypatch.chdir(tmp_path)
    line = params_error(tmp_path, f"sources:\n  x:\n    kind: text\n    path: data/x{secret}/raw.txt\n")
    assert line is not None and "secret read from gcloud's application-default credentials" in line, line
    assert secret.lower() not in line.lower() and "\n" not in line
    assert secret not in redact_line(f"error: bad token {secret}")
