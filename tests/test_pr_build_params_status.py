"""pr-build reads `dvc status --json` in DVC's shape (round 31a refused every other shape): a params dep's state is
an object of the changed keys, each a text (`{"params.yaml": {"dedup.threshold": "modified"}}`), which the check
took for "not an object of texts", so every pull request that changed a param stopped pr-build at exit 2 (found by
test_workflow's slow rows). The first rows fail before the fix; the refusals stay (guards)."""

from __future__ import annotations

import json
import subprocess

import pytest

from helpers import env
from scripts.tools.pr_build import _odd_status

ACCEPTED = [  # what DVC writes for a stage whose params changed
    pytest.param({"s": [{"changed deps": {"params.yaml": {"a": "modified"}}}]}, id="one param modified"),
    pytest.param(
        {"s": [{"changed deps": {"params.yaml": {"a": "new", "b": "deleted"}, "in.txt": "modified"}}]},
        id="params and a file",
    ),
    pytest.param(
        {"s": [{"changed deps": {"params.yaml": {"a": "modified"}}}, {"changed outs": {"out.txt": "modified"}}]},
        id="params, then outs",
    ),
    pytest.param({"s": ["changed checksum"], "t": [{"changed deps": {"in.txt": "modified"}}]}, id="guard: texts"),
]

REFUSED = [  # not DVC's shape: still one line
    pytest.param({"s": [{"changed deps": {"params.yaml": {"a": 5}}}]}, id="guard: a param's state a number"),
    pytest.param({"s": [{"changed deps": {"params.yaml": {"a": {"b": "modified"}}}}]}, id="guard: nested deeper"),
    pytest.param({"s": [{"changed deps": {"params.yaml": ["a"]}}]}, id="guard: a list of keys"),
]


@pytest.mark.parametrize("status", ACCEPTED)
def test_dvc_s_own_status_shapes_are_read(status):
    assert _odd_status(status) is None


@pytest.mark.parametrize("status", REFUSED)
def test_other_shapes_stay_refused(status):
    assert _odd_status(status) == "a stage's changed deps not an object of texts"


@pytest.mark.slow  # a real DVC repository and three dvc runs
def test_the_status_real_dvc_writes_after_a_param_change_is_read(tmp_path):
    def run(*args: str) -> str:
        return subprocess.run(args, cwd=tmp_path, env=env(), check=True, capture_output=True, text=True).stdout

    run("git", "init", "-q")
    run("dvc", "init", "-q")
    (tmp_path / "params.yaml").write_text("a: 1\n")
    (tmp_path / "in.txt").write_text("x\n")
    run("dvc", "stage", "add", "-q", "-n", "s", "-p", "a", "-d", "in.txt", "-o", "out.txt", "cp in.txt out.txt")
    run("dvc", "repro", "-q")
    (tmp_path / "params.yaml").write_text("a: 2\n")
    status = json.loads(run("dvc", "status", "--json"))
    assert status == {"s": [{"changed deps": {"params.yaml": {"a": "modified"}}}]}
    assert _odd_status(status) is None
