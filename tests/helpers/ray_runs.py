"""A stage on the Ray engine in a process of its own, as a user runs it: the harness of the tests that stop a
Ray run with a signal (Ctrl-C, `kill`) and check that nothing of it is left."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NamedTuple

import yaml

from helpers.children import communicate_or_kill, start_scripts
from helpers.repos import REPO


def ray_workspace(root: Path, fixtures: Path, runtime: dict) -> Path:
    """A folder with params.yaml (the repository's, the fixture sources t_gpt4 and t_open added, `runtime`
    over its runtime section)."""
    params = yaml.safe_load((REPO / "params.yaml").read_text(encoding="utf-8"))
    params["sources"]["t_gpt4"] = {"kind": "text", "path": str(fixtures / "gpt4-prompts-3k.txt"), "clean": True}
    params["sources"]["t_open"] = {
        "kind": "openprompts",
        "path": str(fixtures / "openprompts-1k.csv"),
        "clean": {"rules": "final", "mode": "filter_only"},
        "keep_empty": True,
    }
    params["runtime"] = {**params.get("runtime", {}), **runtime}
    root.mkdir(parents=True, exist_ok=True)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False), encoding="utf-8")
    return root


def ray_stage_folder(root: Path, fixtures: Path, runtime: dict) -> Path:
    """ray_workspace's folder with an empty out/ for the stage's output."""
    ray_workspace(root, fixtures, runtime)
    (root / "out").mkdir()
    return root


def write_prompts(root: Path, prompts: list[str]) -> Path:
    """in.parquet: `prompts` as a stage's prompt table (ids r0, r1, ...; source t_gpt4)."""
    import pandas as pd

    from scripts.lib.io import PROMPT_COLUMNS
    from scripts.lib.tables import write_parquet

    table = pd.DataFrame({"id": [f"r{i}" for i in range(len(prompts))], "source": "t_gpt4", "prompt": prompts})
    table = table.assign(split=None, image=None, width=512, height=512, meta="{}")
    write_parquet(table[PROMPT_COLUMNS], root / "in.parquet")
    return root / "in.parquet"


def write_numbered_prompts(root: Path, fixtures: Path, copies: int) -> Path:
    """in.parquet: the 3,057 GPT-4 prompts `copies` times, each copy numbered so that no two rows are the
    same (cleaning takes seconds per actor, and dedup removes nothing)."""
    prompts = (fixtures / "gpt4-prompts-3k.txt").read_text(encoding="utf-8").splitlines()
    return write_prompts(root, [f"{prompt} {i}" for i in range(copies) for prompt in prompts])


def run_bounded(root: Path, argv: list[str], bound_s: float) -> tuple[subprocess.CompletedProcess, float]:
    """`python -m scripts ARGV` in `root` in a session of its own, and its seconds; one that outlives `bound_s`
    is killed with its whole session (communicate's timeout fails the test)."""
    start = time.monotonic()
    process = start_scripts(root, *argv)
    out, err = communicate_or_kill(process, bound_s)
    return subprocess.CompletedProcess(process.args, process.returncode, out, err), time.monotonic() - start


def out_bytes(root: Path) -> dict[str, bytes]:
    """root/out's files by name: a stage's outputs, compared byte for byte between engines."""
    return {path.name: path.read_bytes() for path in sorted((root / "out").iterdir())}


def session_processes(session: int) -> list[str]:
    """The command lines of the live processes in a session (the stage and everything it started)."""
    out = subprocess.run(["ps", "-e", "-o", "sid=,stat=,args="], capture_output=True, text=True).stdout
    return [
        args
        for sid, stat, args in (line.split(None, 2) for line in out.splitlines() if line.strip())
        if int(sid) == session and not stat.startswith("Z")
    ]


def session_gone(session: int, within_s: float) -> bool:
    """Whether every process of the session has exited within `within_s` (Ray's go after the stage)."""
    deadline = time.monotonic() + within_s
    while session_processes(session) and time.monotonic() < deadline:
        time.sleep(0.2)
    return not session_processes(session)


class Stopped(NamedTuple):
    pid: int  # the stage's, and its session's id
    returncode: int
    stderr: str


def clean_on_ray_stopped_by(root: Path, send: Callable[[int], None], settle_s: float = 0.0) -> Stopped:
    """Run `clean t_gpt4 in.parquet out/t_gpt4.parquet` in `root` in a session of its own; once a Ray actor
    cleans (and `settle_s` later), `send(pid)` signals it. A run that outlives its deadlines is killed with
    its whole session and fails the test."""
    proc = start_scripts(root, "clean", "t_gpt4", "in.parquet", "out/t_gpt4.parquet", stdout=None)
    try:
        deadline = time.monotonic() + 120
        while not any("BatchCleaner" in args for args in session_processes(proc.pid)):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "no Ray actor started"
            time.sleep(0.2)
        time.sleep(settle_s)
        send(proc.pid)
        _, err = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return Stopped(proc.pid, proc.returncode, err)


OBJECT_STORE = 80 * 2**20  # Ray's minimum object store (75 MiB), a little over


def local_cluster(num_cpus: int) -> Iterator:
    """A local ray.cluster_utils.Cluster of `num_cpus` CPUs and an 80 MiB object store, for a module's fixture
    (`yield from local_cluster(1)`); shut down when the module ends."""
    from ray.cluster_utils import Cluster

    os.environ.setdefault("RAY_raylet_start_wait_time_s", "120")
    for last_try in (False, True):  # Ray 2.60 waits 30 s for a raylet (fixed): a loaded machine can take longer
        try:
            cluster = Cluster(
                initialize_head=True, head_node_args={"num_cpus": num_cpus, "object_store_memory": OBJECT_STORE}
            )
            break
        except Exception:
            if last_try:
                raise
    try:
        yield cluster
    finally:
        cluster.shutdown()


def two_cpu_cluster() -> Iterator:
    """local_cluster of 2 CPUs."""
    yield from local_cluster(2)


def node_processes(nodes, marker: str) -> list[int]:
    """The pids of the nodes' processes (their raylets' descendants) whose command line holds `marker`."""
    import psutil

    raylets = [info.process.pid for node in nodes for info in node.all_processes.get("raylet", [])]
    found = []
    for raylet in raylets:
        for process in psutil.Process(raylet).children(recursive=True):
            with contextlib.suppress(psutil.Error):
                if marker in " ".join(process.cmdline()):
                    found.append(process.pid)
    return found


def cluster_processes(cluster, marker: str) -> list[int]:
    """node_processes over every node of the cluster."""
    return node_processes(cluster.list_all_nodes(), marker)
