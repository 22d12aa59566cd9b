"""Faults in the middle of long work: the S3 server dies during `dvc push`, `dvc repro` is SIGKILLed
during a stage. Afterwards the remote is complete, pulls are byte-identical, the next repro finishes
with the same dvc.lock as an uninterrupted build (the session's `history` build), and the cache never
holds a half-written file. Both work on private repositories, never on the session build.
"""
from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import yaml

from helpers import env, run, work_copy
from test_s3_remote import (S3Server, add_s3_remote, aws_env, bucket, cached_outputs, dvc,  # noqa: F401
                            file_digests, fresh_clone, object_count, s3_server)


def cache_files(repo: Path) -> list[Path]:
    root = repo / ".dvc" / "cache" / "files" / "md5"
    return sorted(p for p in root.glob("*/*") if p.is_file())


def assert_cache_intact(repo: Path) -> int:
    """Every cache object hashes to its own name (a .dir object is the md5 of its JSON listing)."""
    files = cache_files(repo)
    bad = []
    for file in files:
        name = file.parent.name + file.name
        expected = name.removesuffix(".dir")
        if hashlib.md5(file.read_bytes()).hexdigest() != expected:
            bad.append(str(file.relative_to(repo)))
    assert not bad, f"{len(bad)} cache files do not match their names, e.g. {bad[:3]}"
    return len(files)


def outs_md5(lock_text: str) -> dict[str, str]:
    lock = yaml.safe_load(lock_text)
    return {out["path"]: out["md5"] for stage in lock["stages"].values() for out in stage.get("outs", [])}


# ------------------------------------------------------------------ S3 server dies during a push

def stop_when(server: S3Server, bucket_name: str, count: int, proc: subprocess.Popen, seen: list[int]) -> None:
    """Watch moto's state and kill the server once `count` objects have arrived."""
    while proc.poll() is None and object_count(bucket_name) < count:
        time.sleep(0.005)
    seen.append(object_count(bucket_name))
    server.stop()


def test_push_survives_a_server_crash(built_repo, tmp_path, s3_server, bucket):
    repo = work_copy(built_repo, tmp_path / "repo", checkout=False)  # a push reads the cache only
    add_s3_remote(repo, s3_server, bucket)
    total = len(cache_files(repo))  # a few more than a push uploads (the cache also holds metrics)
    assert total > 100

    push_env = {**aws_env(False), "AWS_MAX_ATTEMPTS": "2", "AWS_RETRY_MODE": "standard"}  # fail fast while down
    # 8 jobs: the uploads left when the server dies fail 8 at a time (each after s3fs's retries)
    proc = subprocess.Popen([sys.executable, "-m", "dvc", "push", "-j", "8"], cwd=repo, env=push_env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    seen: list[int] = []
    watcher = threading.Thread(target=stop_when, args=(s3_server, bucket, total // 3, proc, seen))
    watcher.start()
    output, _ = proc.communicate(timeout=540)
    watcher.join()
    assert seen and seen[0] < total // 2, "the push finished before the server was stopped: nothing was tested"
    assert proc.returncode != 0, f"a push to a dead server must fail:\n{output[-2000:]}"
    interrupted_at = object_count(bucket)

    s3_server.start()  # same port, same moto state: what arrived before the crash is still there
    assert object_count(bucket) == interrupted_at
    assert dvc(["status", "-c", "--json"], repo, check=False).stdout.strip() not in ("{}", "")
    dvc(["push", "-j", "8"], repo)
    assert dvc(["status", "-c", "--json"], repo).stdout.strip() in ("{}", "")
    assert object_count(bucket) > interrupted_at

    clone = fresh_clone(repo, tmp_path / "clone")
    dvc(["pull"], clone, with_credentials=True)
    outputs = cached_outputs(repo)
    assert file_digests(clone, outputs) == file_digests(built_repo, outputs)
    assert_cache_intact(clone)


# ------------------------------------------------------------------ SIGKILL during a stage

def rendered(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file() and p.name != "manifest.parquet"] if folder.is_dir() else []


TARGET = "generate@diffusiondb"  # the largest render


def test_repro_killed_mid_stage_recovers(history, tmp_path):
    """`dvc repro` and the stage it runs, SIGKILLed together while TARGET writes images (a work copy of the
    session build, TARGET forced to render afresh: no generation store, and its previous listing taken
    out of this copy's cache), then a plain `dvc repro`: no manual cleanup, the DVC cache whole, the
    outputs the session build's bytes. (Killing a run that builds from nothing: test_guarantees'
    interrupted-stage tests; the stage alone killed at several points: test_generate.)"""
    built = history.repo
    repo = work_copy(built, tmp_path / "repo")
    listing = outs_md5((repo / "dvc.lock").read_text())["data/images/diffusiondb"]
    (repo / ".dvc" / "cache" / "files" / "md5" / listing[:2] / listing[2:]).unlink()  # a hardlink: history keeps it
    images = repo / "data" / "images" / "diffusiondb"
    proc = subprocess.Popen([sys.executable, "-m", "dvc", "repro", "--force", "--single-item", TARGET], cwd=repo,
                            env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    seen, written = [], 0
    try:
        for line in proc.stdout:  # ends at EOF if dvc exits early
            seen.append(line)
            if line.startswith(f"Running stage '{TARGET}'"):
                deadline = time.monotonic() + 300
                while proc.poll() is None and time.monotonic() < deadline:
                    written = len(rendered(images))
                    if written:
                        break  # the stage has written images and is still running: kill it now
                    time.sleep(0.02)
                break
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # dvc and the stage it runs: no cleanup handler runs
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, "".join(seen[-20:])
    finished = (images / "manifest.parquet").exists()  # generate writes its manifest last
    assert written > 0 and not finished, f"the stage was not caught mid-write ({written} images):\n{''.join(seen[-20:])}"
    killed_with = len(rendered(images))

    assert assert_cache_intact(repo) > 0  # the kill corrupted nothing DVC had stored
    rerun = run(["dvc", "repro", TARGET], repo)  # no manual cleanup: stale locks and temp files are DVC's job
    assert f"Running stage '{TARGET}'" in rerun.stdout
    assert_cache_intact(repo)
    assert killed_with < len(rendered(built / "data" / "images" / "diffusiondb"))
    assert outs_md5((repo / "dvc.lock").read_text()) == outs_md5((built / "dvc.lock").read_text())
    assert run(["dvc", "status", "--json", TARGET], repo).stdout.strip() in ("{}", "")
    leftovers = [str(p.relative_to(repo)) for p in (repo / "data").rglob("*") if ".tmp-" in p.name]
    assert not leftovers, f"temporary files left in the workspace: {leftovers[:5]}"
