"""Benchmark lock_text.git_entry: one `git ls-tree` per file read (before round 35f) against one listing a commit.

    .venv/bin/python benchmarks/diff_revision_bench.py                  # 40 releases, 4 reads each, 2 commits
    .venv/bin/python benchmarks/diff_revision_bench.py --releases 200 --out benchmarks/results/diff_revision.txt

Builds a throwaway git repository of `--releases` release folders (diff reads about four files a release at each
revision: params.yaml, the release's rows, metadata and removed tables), then reads every one of them at two
commits both ways in this process and prints the time of each and old/new: the per-file way spawned a git
process per read, the listing one per commit. The entries each way gives are compared (identical, or it stops).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path, PurePosixPath

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._record import add_out_argument, record
from scripts.tools import lock_text

FILES = ["rows.parquet", "metadata.parquet", "removed.parquet"]


def per_file_entry(repo: str, commit: str, path: str):
    """git_entry as it was: a `git ls-tree` of the path and its folders (the refusals of links left out)."""
    folders = [str(p) for p in reversed(PurePosixPath(path).parents) if str(p) != "."]
    found = subprocess.run(
        ["git", "--literal-pathspecs", "ls-tree", "-l", "-z", "--full-tree", commit, "--", path, *folders],
        cwd=repo,
        capture_output=True,
    )
    entries = {}
    for record_ in found.stdout.split(b"\0") if found.returncode == 0 else []:
        fields, _, name = record_.partition(b"\t")
        entries[name] = fields.decode("ascii", "replace").split()
    parts = entries.get(path.encode(), [])
    return (parts[0], parts[1], parts[3]) if len(parts) == 4 else None


def make_repo(root: Path, releases: int) -> list[str]:
    """A repository with two commits of `releases` release folders; returns the commit ids."""
    env = {**os.environ, "GIT_AUTHOR_NAME": "b", "GIT_AUTHOR_EMAIL": "b@b", "GIT_COMMITTER_NAME": "b"}
    env["GIT_COMMITTER_EMAIL"] = "b@b"
    run = lambda *args: subprocess.run(["git", *args], cwd=root, env=env, check=True, capture_output=True)  # noqa: E731
    run("init", "-q")
    commits = []
    for version in range(2):
        (root / "params.yaml").write_text(f"version: {version}\n")
        for r in range(releases):
            for name in FILES:
                (root / "data" / "releases" / f"r{r}").mkdir(parents=True, exist_ok=True)
                (root / "data" / "releases" / f"r{r}" / name).write_text(f"{r} {name} {version}")
        run("add", "-A")
        run("commit", "-q", "-m", f"v{version}")
        commits.append(run("rev-parse", "HEAD").stdout.decode().strip())
    return commits


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--releases", type=int, default=40)
    add_out_argument(parser)
    args = parser.parse_args()
    record(args.out)
    with tempfile.TemporaryDirectory() as tmp:
        commits = make_repo(Path(tmp), args.releases)
        reads = ["params.yaml", *(f"data/releases/r{r}/{n}" for r in range(args.releases) for n in FILES)]
        started = time.perf_counter()
        old = [per_file_entry(tmp, c, p) for c in commits for p in reads]
        old_s = time.perf_counter() - started
        lock_text._LISTINGS.clear()
        started = time.perf_counter()
        new = [lock_text.git_entry(tmp, c, p, p) for c in commits for p in reads]
        new_s = time.perf_counter() - started
    if old != new:
        raise SystemExit("the entries differ")
    print(f"{len(old)} reads at {len(commits)} commits ({args.releases} releases)")
    print(f"per-file ls-tree: {old_s:.3f} s; one listing a commit: {new_s:.3f} s; old/new: {old_s / new_s:.1f}x")


if __name__ == "__main__":
    main()
