"""The `dvc` children our tools start send no usage analytics and write no report in the system's temp folder,
whatever the repository's config says (`child_group.dvc_env`). pr-build's `dvc status --json` ran without
DVC_NO_ANALYTICS: in a repository that does not set `core.analytics = false` (a plain `dvc init`), each run wrote
`{"cmd_class": "CmdDataStatus", ...}` into a temp file and started DVC's daemon to send it out (found in /tmp after
a round's probes; both pr-build rows failed before, pr-comment's children already had it set). Each row runs the tool with DVC_NO_ANALYTICS unset and TMPDIR a folder
of the test's own, and looks there for DVC's report.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from test_round37d import release_repo

from helpers import REPO, env

pytestmark = [pytest.mark.usefixtures("no_proxy"), pytest.mark.slow]


def reports(folder: Path) -> list[str]:
    """DVC's analytics reports in `folder` (json files naming the command class)."""
    return [p.name for p in folder.rglob("*") if p.is_file() and b'"cmd_class"' in p.read_bytes()[:200]]


@pytest.mark.parametrize(
    "argv",
    [
        ["pr-build", "HEAD", "--out", "{out}/build"],
        ["pr-comment", "HEAD", "workspace", "--out", "{out}/comment"],
        ["pr-build", "HEAD~0", "--out", "{out}/build2"],
    ],
    ids=["pr-build", "pr-comment", "pr-build at HEAD~0"],
)
def test_a_dvc_child_of_ours_sends_no_analytics(tmp_path, argv):
    repo = release_repo(tmp_path / "repo")
    temp = tmp_path / "temp"
    temp.mkdir()
    child_env = {k: v for k, v in env().items() if k != "DVC_NO_ANALYTICS"}
    child_env.update(PYTHONPATH=str(REPO), TMPDIR=str(temp))
    subprocess.run(
        [sys.executable, "-m", "scripts", *(a.format(out=tmp_path / "out") for a in argv)],
        cwd=repo,
        env=child_env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert "analytics" not in (repo / ".dvc" / "config").read_text(encoding="utf-8")  # DVC's default: on
    assert reports(temp) == []
