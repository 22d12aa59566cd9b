"""Round 25f: the Ray engine (`runtime.engine: ray`) under inputs that only it meets. Every row failed before
its fix:

1. a `runtime.ray_address` that no Ray can join by its shape (an http:// dashboard URL, a garbage string, a
   host without a port, a port past 65535) started Ray's import and client for 5-15 s, then printed Ray's
   words, which blamed RAY_ADDRESS and ended mid-sentence (`... To fix this, either:)`); now one line naming
   the forms Ray joins, before Ray is imported;
2. `runtime.object_store_mb` under Ray's minimum (75 MiB) passed validation and failed after Ray's whole start,
   blamed on `runtime.ray_address=None`; now params.yaml's one line;
3. clean@S on Ray when a worker's cleaning process died (killed: the OOM killer, an operator) was Ray's
   96-line traceback at exit 1; now the process is started again for the batch (the run goes on to the local
   engine's bytes), and one that dies again is one line at exit 2;
4. dedup@S on Ray read text that is not UTF-8 unchecked into its tokenizer (exit 0, a table the local engine
   refuses); now the local engine's own line (input and row), exit 2, nothing written.

Rows that need a cluster share one local `ray.cluster_utils.Cluster` (module-scoped) and run the real command
against it (`runtime.ray_address`); they are in the slow tier.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from helpers.children import scripts_env, start_scripts
from helpers.ray_runs import cluster_processes, out_bytes, ray_stage_folder, two_cpu_cluster, write_numbered_prompts
from helpers.repos import REPO
from helpers.tiers import fast_first

FIXTURES = REPO / "tests" / "fixtures"
HARD_TIMEOUT_S = 600


def run(root: Path, *argv: str, timeout: float = HARD_TIMEOUT_S) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "scripts", *argv],
        cwd=root,
        env=scripts_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def dedup_workspace(root: Path, runtime: dict) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({"id": ["a", "b"], "text": ["a red fox", "a red fox runs"]}), root / "in.parquet")
    (root / "params.yaml").write_text(
        yaml.safe_dump({"dedup": {"threshold": 0.7}, "runtime": {"engine": "ray", **runtime}}), encoding="utf-8"
    )
    (root / "out").mkdir()
    return root


# Ray 2.60's core worker line (ray#53727), once per actor pool from C++: known, documented (docs/scale.md)
KNOWN_RAY_LINE = "has constructor arguments in the object store and max_restarts > 0"


def one_line(done: subprocess.CompletedProcess) -> str:
    lines = [line for line in done.stderr.strip().splitlines() if KNOWN_RAY_LINE not in line]
    assert done.returncode == 2 and len(lines) == 1, done.stderr[-3000:]
    return lines[0]


# --- 1, 2: params that no Ray can take are one line before Ray starts ------------------------------------------
FORMS = 'expected "auto", "host:port" or "ray://host:port"'
BEFORE_RAY = {
    "an http:// dashboard URL": ({"ray_address": "http://127.0.0.1:8265"}, "an http:// address is the dashboard's"),
    "object_store_mb 64": (
        {"object_store_mb": 64},
        "runtime.object_store_mb: Input should be greater than or equal to 75",
    ),
    "an https:// URL": ({"ray_address": "https://ray.example.com"}, FORMS),
    "a garbage string": ({"ray_address": "garbage string!!"}, f"not an address Ray joins; {FORMS}"),
    "a host without a port": ({"ray_address": "head-node"}, f"not an address Ray joins; {FORMS}"),
    "a port past 65535": ({"ray_address": "127.0.0.1:99999"}, "port 99999 is out of range (1 to 65535)"),
    "a port that is not a number": ({"ray_address": "127.0.0.1:gcs"}, FORMS),
    "object_store_mb 70": ({"object_store_mb": 70}, "greater than or equal to 75 (got 70)"),
    "object_store_mb 74": ({"object_store_mb": 74}, "greater than or equal to 75 (got 74)"),
}


@pytest.mark.parametrize(
    "runtime, said", fast_first([pytest.param(*row, id=name) for name, row in BEFORE_RAY.items()], keep=2)
)
def test_params_no_ray_can_take_are_one_line_before_ray_starts(tmp_path, runtime, said):
    root = dedup_workspace(tmp_path, runtime)
    line = one_line(run(root, "dedup", "s", "in.parquet", "out/s.parquet", timeout=120))
    assert said in line, line
    assert "ray_address=None" not in line and not list((root / "out").iterdir())


# --- a cluster shared by the rows below ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def cluster():
    pytest.importorskip("ray")
    yield from two_cpu_cluster()


# --- 3: a cleaning process killed inside a Ray actor -----------------------------------------------------------
CLEANING_PROCESS = "scripts.lib.workers import serve"  # an actor's cleaning child (scripts/lib/workers.py's _BOOT)


ACTOR = "ray::MapWorker(MapBatches(BatchCleaner))"  # a Ray actor of clean@S's pool


def kill_once(marker: str) -> Callable:
    def killer(cluster, stop: threading.Event) -> None:
        """The first process of this run seen whose command line holds `marker`, killed once it has had a moment
        to work (one an earlier run on the shared cluster left going down is not this run's)."""
        earlier = set(cluster_processes(cluster, marker))
        while not stop.is_set():
            if victims := [pid for pid in cluster_processes(cluster, marker) if pid not in earlier]:
                time.sleep(1)
                with contextlib.suppress(ProcessLookupError):
                    os.kill(victims[0], 9)
                return
            time.sleep(0.1)

    return killer


def kill_always(cluster, stop: threading.Event) -> None:
    """Every cleaning process, as soon as it is seen, for the whole run."""
    while not stop.is_set():
        for pid in cluster_processes(cluster, CLEANING_PROCESS):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, 9)
        time.sleep(0.05)


def clean_workspace(root: Path, runtime: dict) -> Path:
    write_numbered_prompts(ray_stage_folder(root, FIXTURES, runtime), FIXTURES, 2)
    return root


@pytest.fixture(scope="module")
def local_clean(tmp_path_factory) -> dict[str, bytes]:
    root = clean_workspace(tmp_path_factory.mktemp("local"), {"engine": "local", "workers": 1})
    done = run(root, "clean", "t_gpt4", "in.parquet", "out/t_gpt4.parquet")
    assert done.returncode == 0, done.stderr
    return out_bytes(root)


def clean_on_cluster(root: Path, cluster, killer: Callable, **runtime) -> subprocess.CompletedProcess:
    clean_workspace(root, {"engine": "ray", "ray_address": cluster.address, "batch_rows": 300, **runtime})
    stop = threading.Event()
    thread = threading.Thread(target=killer, args=(cluster, stop), daemon=True)
    thread.start()
    try:
        process = start_scripts(root, "clean", "t_gpt4", "in.parquet", "out/t_gpt4.parquet")
        out, err = process.communicate(timeout=HARD_TIMEOUT_S)
    finally:
        stop.set()
        thread.join()
    return subprocess.CompletedProcess(process.args, process.returncode, out, err)


KILLED_ONCE = {
    "a cleaning process, one worker": (CLEANING_PROCESS, {"workers": 1}),
    "a cleaning process, two workers": (CLEANING_PROCESS, {"workers": 2}),
    "a cleaning process, two workers, 5 blocks": (CLEANING_PROCESS, {"workers": 2, "partitions": 5}),
    "an actor, one worker": (ACTOR, {"workers": 1}),
    "an actor, two workers": (ACTOR, {"workers": 2}),
}


@pytest.mark.slow
@pytest.mark.parametrize("marker, runtime", list(KILLED_ONCE.values()), ids=list(KILLED_ONCE))
def test_a_worker_killed_once_is_started_again_and_the_bytes_are_the_local_engines(
    tmp_path, cluster, local_clean, marker, runtime
):
    done = clean_on_cluster(tmp_path, cluster, kill_once(marker), **runtime)
    assert done.returncode == 0, done.stderr[-3000:]
    # the raylet's `(raylet) A worker died ...` was printed on stdout beside the stage's lines
    assert "Traceback" not in done.stderr and "(raylet)" not in done.stdout + done.stderr, done.stdout + done.stderr
    assert out_bytes(tmp_path) == local_clean


KILLED_ALWAYS = {"one worker": {"workers": 1}, "two workers": {"workers": 2}, "batches of 50": {"batch_rows": 50}}


@pytest.mark.slow
@pytest.mark.parametrize("runtime", list(KILLED_ALWAYS.values()), ids=list(KILLED_ALWAYS))
def test_a_cleaning_process_that_dies_again_is_one_line_and_nothing_written(tmp_path, cluster, runtime):
    done = clean_on_cluster(tmp_path, cluster, kill_always, **runtime)
    line = one_line(done)
    assert (
        line == "error: clean on Ray failed (RuntimeError: the cleaning process died twice on one batch (exit code -9))"
    )
    assert not list((tmp_path / "out").iterdir())


# --- 4: text that is not UTF-8, seen only by a Ray worker ------------------------------------------------------
def not_utf8(texts: list[bytes]) -> pa.Array:
    """A string array holding `texts` as they are (pyarrow checks nothing it is handed as buffers)."""
    offsets = pa.array([sum(map(len, texts[:i])) for i in range(len(texts) + 1)], pa.int32())
    return pa.Array.from_buffers(pa.string(), len(texts), [None, offsets.buffers()[1], pa.py_buffer(b"".join(texts))])


def texts(rows: int, bad: int | None) -> list[bytes]:
    return [b"bad \xff\xfe bytes" if i == bad else f"a red fox number {i}".encode() for i in range(rows)]


def one_file(root: Path, bad_text: int, group_rows: int = 4) -> str:
    table = pa.table({"id": [f"r{i}" for i in range(10)], "text": not_utf8(texts(10, bad_text))})
    pq.write_table(table, root / "in.parquet", row_group_size=group_rows)
    return "in.parquet"


def two_shards(root: Path, bad_text: int) -> str:
    (root / "in").mkdir()
    for shard, first in enumerate((0, 6)):
        rows = texts(12, bad_text)[first : first + 6]
        ids = [f"r{first + i}" for i in range(6)]
        pq.write_table(pa.table({"id": ids, "text": not_utf8(rows)}), root / "in" / f"part-{shard}.parquet")
    return "in"


NOT_UTF8 = {
    "a text in the second row group": lambda root: one_file(root, bad_text=7),
    "the first row's text": lambda root: one_file(root, bad_text=0, group_rows=10),
    "a text in the second shard": lambda root: two_shards(root, bad_text=9),
    "the last row's text": lambda root: one_file(root, bad_text=9),
}


@pytest.mark.slow
@pytest.mark.parametrize("make", list(NOT_UTF8.values()), ids=list(NOT_UTF8))
def test_text_that_is_not_utf8_is_the_local_engines_line_on_ray(tmp_path, cluster, make):
    lines = {}
    for engine in ("local", "ray"):
        root = tmp_path / engine
        dedup_workspace(root, {"engine": engine, "ray_address": cluster.address} if engine == "ray" else {})
        (root / "in.parquet").unlink()
        source = make(root)
        lines[engine] = one_line(run(root, "dedup", "s", source, "out/s.parquet"))
        assert not list((root / "out").iterdir())
    assert "not UTF-8" in lines["local"] and lines["ray"] == lines["local"]


@pytest.fixture(autouse=True)
def _no_stray_ray_address(monkeypatch) -> Iterator[None]:
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    yield
