"""pr-comment and pr-build look their revisions up with `git rev-parse` (tools/side_inputs.commit_of). At `ulimit -n`
8 to 12 git's pipes cannot be made and the line was `.: git rev-parse failed (OSError)`: no reason, no limit (found
by round 37d). It now names the step, the revision and the OS's reason, and the CLI adds the limit. Every row
failed before; slow: each runs the command under the limit.
"""

from __future__ import annotations

import resource

import pytest
from test_round37d import release_repo, run_limited

from helpers.workspace import error_line

pytestmark = [pytest.mark.usefixtures("no_proxy"), pytest.mark.slow]


@pytest.mark.parametrize(
    ("command", "files"),
    [("pr-comment", 8), ("pr-comment", 12), ("pr-build", 8), ("pr-build", 9)],
    ids=lambda value: str(value),
)
def test_a_revision_looked_up_at_the_open_file_limit_names_the_step_and_the_limit(tmp_path, command, files):
    repo = release_repo(tmp_path / "repo")
    argv = [command, "HEAD", "workspace", "--out", str(tmp_path / "out" / "c")]
    if command == "pr-build":
        argv = [command, "HEAD", "--base-dir", str(tmp_path / "base")]
    done = run_limited(argv, repo, resource.RLIMIT_NOFILE, files)
    line = error_line(done.stderr)
    assert done.returncode == 2, line
    assert "cannot start `git rev-parse` to look up 'HEAD' (Too many open files)" in line, line
    assert f"may hold {files} open files at most" in line
    assert not (tmp_path / "out").exists() and not (tmp_path / "base").exists()
