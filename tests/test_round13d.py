"""Round 13d: output paths at the file system's limits. Every row failed before its fix.

1. An output whose name fits NAME_MAX (255 bytes) but not with `.NAME.tmp-lock.XXXXXXXX` beside it (240 to
   254 bytes) was refused as `File name too long`, naming a temp file the user never made: temps.sibling_name
   now shortens a temp's name (the same each run, so a killed run's temps are still found).
2. A folder where the lock cannot be made (a read-only mount) named the lock's temp
   (`.out.tmp-lock.x1y2z3: Read-only file system`), not the output.
3. runtime.engine ray: ray.init put its own SIGTERM handler (sys.exit(15)) in place of the command's, so a
   SIGTERM while Ray cleaned was Ray's C++ stack dump and SIGABRT (exit -6), not `interrupted (SIGTERM)`
   and exit 143. ray_session puts the command's handlers back after ray.init.
4. runtime.engine ray: a Ctrl-C while ray.init ran raised Interrupted inside Ray's code, which caught it, and the
   run went on to exit 0: ray_session stops before the run's first step when a signal was noted.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers import REPO
from helpers.ray_runs import clean_on_ray_stopped_by, ray_workspace, write_numbered_prompts
from helpers.workspace import leftovers, write_params

LONG = "a" * 245  # + `.json`: 250 bytes, a name ext4 takes
WIDE = "é" * 122 + ".json"  # 249 bytes of UTF-8 in 127 characters


def run(argv: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "scripts", *argv], cwd=cwd, env=env, capture_output=True, text=True)


@pytest.mark.parametrize(
    "argv, output",
    [
        (["clean-rules", f"out/{LONG}.json"], f"out/{LONG}.json"),
        (["clean-rules", f"out/{WIDE}"], f"out/{WIDE}"),
        (["recipes", f"out/{LONG}"], f"out/{LONG}"),  # a folder output, its staging folder beside it
    ],
    ids=["file-250-bytes", "file-utf8-249-bytes", "folder-245-bytes"],
)
def test_an_output_name_the_file_system_takes_is_written(tmp_path, argv, output):
    write_params(tmp_path)
    first = run(argv, tmp_path)
    assert first.returncode == 0, first.stderr
    assert (tmp_path / output).exists() and leftovers(tmp_path) == []
    again = run(argv, tmp_path)  # the next run finds its own temps' names and replaces its output
    assert again.returncode == 0, again.stderr
    assert leftovers(tmp_path) == []


@pytest.mark.skipif(os.geteuid() != 0, reason="a read-only bind mount needs root")
def test_a_read_only_output_folder_is_named_not_the_locks_temp(tmp_path):
    write_params(tmp_path)
    folder = tmp_path / "ro"
    folder.mkdir()
    subprocess.run(["mount", "--bind", folder, folder], check=True)
    try:
        subprocess.run(["mount", "-o", "remount,ro,bind", folder], check=True)
        result = run(["clean-rules", "ro/rules.json"], tmp_path)
    finally:
        subprocess.run(["umount", folder], check=True)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.splitlines() == ["error: ro/rules.json: cannot write (Read-only file system)"]


@pytest.mark.slow
def test_sigterm_during_a_ray_run_is_the_commands(tmp_path, fixtures_dir):
    pytest.importorskip("ray")
    root = ray_workspace(tmp_path / "ws", fixtures_dir, {"engine": "ray", "workers": 1, "object_store_mb": 100})
    write_numbered_prompts(root, fixtures_dir, copies=20)  # Ray still cleans at the signal
    # what `kill`, systemd or a scheduler sends the stage, once ray.init has run
    run = clean_on_ray_stopped_by(root, lambda pid: os.kill(pid, signal.SIGTERM))
    assert run.returncode == 143, run.stderr
    # the command's line last, no dump of Ray's (its core worker's own `E core_worker.cc` line may come first)
    lines = run.stderr.strip().splitlines()
    assert lines[-1] == "interrupted (SIGTERM)" and "SIGTERM received" not in run.stderr, run.stderr
    assert not (root / "out").exists() or not list((root / "out").iterdir())


def test_a_signal_that_ray_swallowed_while_it_started_still_stops_the_run(monkeypatch):
    """A Ctrl-C while ray.init ran raised the command's Interrupted inside Ray's own code, which caught it
    (round 13d: exit 0, outputs written, at 25 s into a loaded start): ray_session now stops before the
    run's first step when a signal came (and shuts down what it started)."""
    pytest.importorskip("ray")
    from scripts.cli import _install_signal_handlers, _restore_signal_handlers
    from scripts.lib import ray_engine
    from scripts.lib.interrupts import Interrupted, forget
    from scripts.lib.params.runtime import Runtime

    def start_swallowing_a_signal(ray, runtime, children_before):  # as a library's bare `except:` does
        try:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(5)  # the handler raises here
        except Interrupted:
            pass

    monkeypatch.setattr(ray_engine, "_start_or_join", start_swallowing_a_signal)
    monkeypatch.setattr(ray_engine, "_adopt_orphans", lambda: None)  # leaves the test process's reaping alone
    old = _install_signal_handlers()
    try:
        with pytest.raises(Interrupted), ray_engine.ray_session(Runtime(engine="ray")):
            pytest.fail("the run went on past a Ctrl-C")
    finally:
        _restore_signal_handlers(old)
        forget()  # the noted SIGINT would stop the next command this process runs
