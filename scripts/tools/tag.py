"""tag: publish a release as an annotated git tag, only when it is reproducible and stored.

    python -m scripts tag V

Refuses unless (1) params.yaml, dvc.yaml and dvc.lock are committed, (2) `release@V` and every
stage it depends on are up to date in dvc.lock (`dvc status` clean), and (3) every output of that
pipeline is in the default remote (`dvc status -c` clean). Then `git tag -a V` with the row counts
from stats.json in the message, so `git show V` tells what the version holds.
"""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import typer

from scripts.lib.errors import DataError

TRACKED = ["params.yaml", "dvc.yaml", "dvc.lock"]


def _git(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["git", *args], capture_output=True, text=True, check=check)


def check_committed() -> None:
    dirty = _git("status", "--porcelain", "--", *TRACKED).stdout.strip()
    if dirty:
        raise DataError(f"uncommitted changes in {', '.join(TRACKED)}: commit them first ({dirty.splitlines()[0].strip()})")


def check_up_to_date(repo, stage: str) -> None:
    status = repo.status(targets=[stage], with_deps=True)
    if status:
        raise DataError(f"{stage} is not up to date in dvc.lock ({', '.join(sorted(status))} changed): run `dvc repro {stage}`")


def check_pushed(repo, stage: str) -> None:
    status = repo.status(targets=[stage], with_deps=True, cloud=True)
    missing = sorted(path for path, state in status.items() if state != "deleted")
    if missing:
        raise DataError(f"{len(missing)} outputs of {stage} are not in the default remote (e.g. {missing[0]}): run `dvc push`")


def tag_message(name: str, stats: dict) -> str:
    rows = stats["rows"]
    lines = [f"release {name}: train {rows['train']}, validation {rows['validation']}"]
    for split, per_source in stats.get("by_source", {}).items():
        lines.append(f"{split}: " + ", ".join(f"{s} {n}" for s, n in per_source.items()))
    return "\n".join(lines)


def cli(name: str = typer.Argument(..., help="release name in params.yaml: releases")) -> None:
    """Create the annotated git tag NAME for a built, pushed release."""
    from dvc.repo import Repo

    stage = f"release@{name}"
    if _git("rev-parse", "-q", "--verify", f"refs/tags/{name}", check=False).returncode == 0:
        raise DataError(f"tag {name} already exists")
    check_committed()
    with Repo(".") as repo:
        try:
            repo.stage.collect(stage)
        except Exception:
            raise DataError(f"dvc.yaml: no stage {stage} (is {name} in params.yaml: releases?)") from None
        check_up_to_date(repo, stage)
        check_pushed(repo, stage)
    stats = json.loads(Path(f"data/releases/{name}/stats.json").read_text(encoding="utf-8"))
    _git("tag", "-a", name, "-m", tag_message(name, stats))
    print(f"tagged {name}: {tag_message(name, stats).splitlines()[0]}")
