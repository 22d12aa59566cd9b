"""Round 26a: the Ray gaps round 25f left. Every row failed before its fix (but class 2's, see there):

1. generate on Ray turned a failure inside Ray into a line of its own (`render_ray.ray_failure`): Ray Data's
   wrapper by name (`RayTaskError(UserCodeException): ... UDF failed to process a data block.`), never the
   actor's DataError or what it raised; now `ray_engine.failure_line`, as clean and dedup say it. Rows at the
   unit level with real Ray exception objects, built as a task's failure reaches the driver (a generate row
   needs the tiny diffusion model, minutes to build on CPU);
2. a `RAY_ADDRESS` in the environment with `runtime.ray_address: null` (or "local"): params are the only
   source, so the cluster it names is not joined (Ray's own processes no longer see it either), and with
   `ray_address: auto` it is, as Ray documents;
3. `runtime.object_store_mb` with a cluster to join was ignored without a word; now params.yaml's one line;
4. an actor killed on every try: Ray Data restarts actors and retries their tasks without a limit (the run
   never ended); now `ray_engine.ACTOR_RETRIES` bounds both, and the run is one line at exit 2.

Rows that need a cluster share one local `ray.cluster_utils.Cluster` (module-scoped), as test_round25f.py's do,
and are in the slow tier.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import threading
import time
import traceback
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from helpers.children import scripts_env, start_scripts
from helpers.ray_runs import cluster_processes, ray_workspace, two_cpu_cluster, write_numbered_prompts
from helpers.repos import REPO
from scripts.lib.errors import DataError
from scripts.lib.params import check_params

FIXTURES = REPO / "tests" / "fixtures"
RUN_TIMEOUT_S = 300  # a run that hangs fails here, not at CI's limit


# --- 1: generate's failure inside Ray is failure_line's one line -------------------------------------------------
def raised_on_a_worker(error: BaseException, wrapped_by_ray_data: bool):
    """`error` as the driver gets it from a failed actor task: a RayTaskError carrying the worker's traceback.
    Ray Data raises a UserCodeException from the actor's error, and only that comes back as the cause."""
    import ray.exceptions as rx

    try:
        try:
            raise error
        except BaseException as actor_error:
            if wrapped_by_ray_data:
                raise rx.UserCodeException("UDF failed to process a data block.") from actor_error
            raise
    except BaseException as caught:
        text = "".join(traceback.format_exception(caught))
        # what is pickled to the driver: the exception's args, never its __cause__ (the actor's error)
        cause = type(caught)(*caught.args)
        return rx.RayTaskError("MapWorker(MapBatches(RenderActor)).submit", text, cause).as_instanceof_cause()


def actor_died():
    import ray.exceptions as rx

    return rx.ActorDiedError()


GENERATE_FAILURES = {
    "an actor's DataError, through Ray Data": (
        lambda: raised_on_a_worker(DataError("models/tiny: no model_index.json"), True),
        "models/tiny: no model_index.json",
    ),
    "an actor's RuntimeError, through Ray Data": (
        lambda: raised_on_a_worker(RuntimeError("CUDA out of memory"), True),
        "generate on Ray failed (RuntimeError: CUDA out of memory)",
    ),
    "an actor's OSError, through Ray Data": (
        lambda: raised_on_a_worker(FileNotFoundError(2, "No such file or directory"), True),
        "generate on Ray failed (FileNotFoundError: [Errno 2] No such file or directory)",
    ),
    "a constructor's RuntimeError, a plain task failure": (
        lambda: raised_on_a_worker(RuntimeError("no GPU here"), False),
        "generate on Ray failed (RuntimeError: no GPU here)",
    ),
}


@pytest.mark.parametrize("make, said", list(GENERATE_FAILURES.values()), ids=list(GENERATE_FAILURES))
def test_a_failure_inside_ray_is_generates_one_line_as_cleans(make, said):
    pytest.importorskip("ray")
    from scripts.lib.ray_engine import failure_line
    from scripts.lib.render_ray import ray_failure

    exc = make()
    line = ray_failure(exc)
    assert line == said and "\n" not in line, line
    assert line == failure_line(exc, "clean").replace("clean on Ray", "generate on Ray")


# --- 3: object_store_mb with a cluster to join is params.yaml's one line -----------------------------------------
JOINING = {
    "auto": "auto",
    "host:port": "10.0.0.5:6379",
    "ray://host:port": "ray://head:10001",
    "an IPv6 host:port": "[::1]:6379",
}


@pytest.mark.parametrize("address", list(JOINING.values()), ids=list(JOINING))
def test_object_store_mb_with_a_cluster_to_join_is_one_line(address):
    with pytest.raises(DataError) as raised:
        check_params({"runtime": {"engine": "ray", "ray_address": address, "object_store_mb": 100}})
    line = str(raised.value)
    assert line.startswith("params.yaml: runtime: object_store_mb sizes the local Ray") and "\n" not in line, line
    assert address not in line


@pytest.mark.parametrize("address", [None, "local"])
def test_object_store_mb_for_a_local_ray_is_still_taken(address):
    check_params({"runtime": {"engine": "ray", "ray_address": address, "object_store_mb": 100}})


# --- a cluster shared by the rows below ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def cluster():
    pytest.importorskip("ray")
    yield from two_cpu_cluster()


@pytest.fixture(autouse=True)
def _no_stray_ray_address(monkeypatch) -> Iterator[None]:
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    yield


def finished(process: subprocess.Popen) -> subprocess.CompletedProcess:
    try:
        out, err = process.communicate(timeout=RUN_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()
        pytest.fail(f"the run did not end within {RUN_TIMEOUT_S} s")
    return subprocess.CompletedProcess(process.args, process.returncode, out, err)


# --- 2: a RAY_ADDRESS in the environment has no say over ray_address: null -------------------------------------
def joined(cluster, pid: int) -> bool:
    """Whether the process `pid` joined `cluster` as a driver: each driver's core log goes to the session folder
    of the cluster it joined, named with its pid."""
    logs = Path(cluster.head_node.get_session_dir_path()) / "logs"
    return any(path.name.endswith(f"_{pid}.log") for path in logs.glob("python-core-driver-*"))


def dedup_with_ray_address(root: Path, ray_address: str | None, env_address: str) -> tuple[int, bool]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    root.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({"id": ["a", "b"], "text": ["a red fox", "a red fox runs"]}), root / "in.parquet")
    runtime = {"engine": "ray", "ray_address": ray_address}
    params = {"dedup": {"threshold": 0.7}, "runtime": runtime}
    (root / "params.yaml").write_text(yaml.safe_dump(params), encoding="utf-8")
    process = start_scripts(root, "dedup", "s", "in.parquet", "s.parquet", env=scripts_env(RAY_ADDRESS=env_address))
    done = finished(process)
    assert done.returncode == 0, done.stderr[-3000:]
    return process.pid, (root / "s.parquet").is_file()


RAY_ADDRESS_ROWS = {
    "null, RAY_ADDRESS the cluster's host:port": (None, lambda cluster: cluster.address, False),
    "local, RAY_ADDRESS the cluster's host:port": ("local", lambda cluster: cluster.address, False),
    "null, RAY_ADDRESS auto (the cluster this machine runs)": (None, lambda cluster: "auto", False),
    "auto, RAY_ADDRESS the cluster's host:port: joined": ("auto", lambda cluster: cluster.address, True),
}


@pytest.mark.slow
@pytest.mark.parametrize("ray_address, env_address, joins", list(RAY_ADDRESS_ROWS.values()), ids=list(RAY_ADDRESS_ROWS))
def test_ray_address_in_the_environment_joins_only_where_params_say(tmp_path, cluster, ray_address, env_address, joins):
    pid, written = dedup_with_ray_address(tmp_path, ray_address, env_address(cluster))
    assert written and joined(cluster, pid) == joins


# --- 4: an actor killed on every try ends the run in one line -------------------------------------------------
ACTOR = "ray::MapWorker(MapBatches(BatchCleaner))"
KNOWN_RAY_LINE = "has constructor arguments in the object store and max_restarts > 0"  # test_round25f.py


def kill_every_actor(cluster, stop: threading.Event) -> None:
    """Every actor of the pool, each as soon as it has had a moment to take a batch, for the whole run."""
    while not stop.is_set():
        if victims := cluster_processes(cluster, ACTOR):
            time.sleep(0.5)
            for pid in victims:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, 9)
        time.sleep(0.05)


ALWAYS_KILLED = {"one worker": {"workers": 1}, "two workers": {"workers": 2}, "batches of 50": {"batch_rows": 50}}


@pytest.mark.slow
@pytest.mark.parametrize("runtime", list(ALWAYS_KILLED.values()), ids=list(ALWAYS_KILLED))
def test_an_actor_killed_on_every_try_ends_the_run_in_one_line(tmp_path, cluster, runtime):
    ray_workspace(tmp_path, FIXTURES, {"engine": "ray", "ray_address": cluster.address, "batch_rows": 300, **runtime})
    write_numbered_prompts(tmp_path, FIXTURES, 2)
    (tmp_path / "out").mkdir()
    stop = threading.Event()
    killer = threading.Thread(target=kill_every_actor, args=(cluster, stop), daemon=True)
    killer.start()
    try:
        done = finished(start_scripts(tmp_path, "clean", "t_gpt4", "in.parquet", "out/t_gpt4.parquet"))
    finally:
        stop.set()
        killer.join()
    lines = [line for line in done.stderr.strip().splitlines() if KNOWN_RAY_LINE not in line]
    assert done.returncode == 2 and len(lines) == 1, done.stderr[-3000:]
    assert lines[0].startswith("error: clean on Ray failed ("), lines[0]
    assert not list((tmp_path / "out").iterdir())
