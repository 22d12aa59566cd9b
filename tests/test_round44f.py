"""Round 44f: code written twice in tests/ and benchmarks/, now written once (behaviour unchanged).

The class: one step spelled again in each file that needs it, so a fix to one copy misses the others.
(1) benchmarks: the child-process peak-RSS runner (Popen, os.wait4, its rusage) was spelled in seven benchmarks;
now benchmarks/_peak_rss.run_child, whose output goes to temporary files (a pipe no one reads while wait4 waits
could fill and hang the child: the old copies read only after wait4). (2) tests: the Ray stage workspace, the
bounded run killed with its session, the out/ bytes and the local Cluster of test_round25f, 40f and 42b; now
tests/helpers/ray_runs.py (and children.communicate_or_kill). (3) tests: captions@s's one error line, spelled
alike in test_round34d and 35f; now helpers/workspace.captions_error_line.

Rows: the source holds each step once (AST over the files), and the shared helpers do what the copies did, on
real children, real parquet and real folders.
"""

from __future__ import annotations

import ast
import functools
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from helpers.children import process_alive
from helpers.python_ast import parse_python
from helpers.repos import REPO

BENCHMARKS = REPO / "benchmarks"
TESTS = REPO / "tests"


# --- the source holds each step once ---------------------------------------------------------------------------
@functools.cache
def parsed(path: Path) -> ast.Module:
    return parse_python(path)


def calls(path: Path, name: str) -> list[int]:
    """Lines of `path` that call something named `name` (`name(...)` or `x.name(...)`)."""
    found = []
    for node in ast.walk(parsed(path)):
        if isinstance(node, ast.Call):
            called = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", None)
            if called == name:
                found.append(node.lineno)
    return found


def bodies_spelled_twice(paths: list[Path]) -> list[str]:
    """Functions of 3 statements or more whose bodies (docstrings aside) are the same AST in two places."""
    seen: dict[str, str] = {}
    twice = []
    for path in paths:
        for node in ast.walk(parsed(path)):
            if isinstance(node, ast.FunctionDef):
                body = [s for s in node.body if not (isinstance(s, ast.Expr) and isinstance(s.value, ast.Constant))]
                if len(body) < 3:
                    continue
                key = ast.dump(ast.Module(body=body, type_ignores=[]))
                place = f"{path.name}:{node.name}"
                if key in seen:
                    twice.append(f"{seen[key]} ~ {place}")
                seen.setdefault(key, place)
    return twice


def callers(folder: Path, name: str, allowed: set[str]) -> list[str]:
    return [
        f"{p.name}:{calls(p, name)}" for p in sorted(folder.glob("*.py")) if p.name not in allowed and calls(p, name)
    ]


RAY_TESTS = [TESTS / f"test_round{r}.py" for r in ("25f", "40f", "42b")]
ONCE = {
    "benchmarks: os.wait4 only in _peak_rss": lambda: callers(BENCHMARKS, "wait4", {"_peak_rss.py"}),
    "benchmarks: no child's usage read from RUSAGE_CHILDREN": lambda: [
        p.name for p in sorted(BENCHMARKS.glob("*.py")) if "RUSAGE_CHILDREN" in p.read_text(encoding="utf-8")
    ],
    "ray tests: no function body twice (25f, 40f, 42b, ray_runs)": lambda: bodies_spelled_twice(
        [*RAY_TESTS, TESTS / "helpers" / "ray_runs.py"]
    ),
    "ray tests: no Cluster built outside helpers": lambda: [p.name for p in RAY_TESTS if calls(p, "Cluster")],
    "ray tests: no session killed outside helpers": lambda: [p.name for p in RAY_TESTS if calls(p, "killpg")],
    "ray tests: no prompt table written outside helpers": lambda: [
        p.name for p in RAY_TESTS if calls(p, "write_parquet")
    ],
    "captions tests: no function body twice (34d, 35f)": lambda: bodies_spelled_twice(
        [TESTS / "test_round34d.py", TESTS / "test_round35f.py", TESTS / "helpers" / "workspace.py"]
    ),
    "guard: tests/helpers has no function body twice": lambda: bodies_spelled_twice(
        sorted((TESTS / "helpers").glob("*.py"))
    ),
}


@pytest.mark.parametrize("found", list(ONCE.values()), ids=list(ONCE))
def test_each_step_is_spelled_once(found):
    assert found() == []


# --- benchmarks/_peak_rss: one child, its own peak ------------------------------------------------------------------
def run_child(code: str, **options):
    from benchmarks._peak_rss import run_child as run

    return run([sys.executable, "-c", code], **options)


@pytest.mark.slow  # a 300 MB child, pandas and parquet, or `python -m scripts`: seconds on a loaded machine
def test_a_childs_peak_is_its_own_not_this_processes():
    small = run_child("print('x')")
    large = run_child("b = bytearray(300 << 20); b[::4096] = b'x' * len(b[::4096]); print(len(b))")
    assert small.exit_code == large.exit_code == 0
    # 300 MB touched: a little of it may be swapped out under load
    assert large.peak_mib > 250 > small.peak_mib, (small.peak_mib, large.peak_mib)
    assert large.stdout.strip() == str(300 << 20) and large.seconds > 0 and large.cpu_seconds > 0


def test_a_child_that_writes_more_than_a_pipe_holds_ends_with_all_of_it():
    # 4 MiB on each stream: 64 times a pipe's 64 KiB, which a child blocks on while wait4 waits
    code = "import sys; sys.stdout.write('o' * (4 << 20)); sys.stderr.write('e' * (4 << 20))"
    done = run_child(code)
    assert (done.exit_code, done.stdout, done.stderr) == (0, "o" * (4 << 20), "e" * (4 << 20))


def test_stderr_merged_into_stdout_in_order():
    code = "import sys; print('one', flush=True); print('two', file=sys.stderr, flush=True); print('three')"
    done = run_child(code, merge_stderr=True)
    assert (done.stdout.split(), done.stderr) == (["one", "two", "three"], "")


def test_a_failed_child_is_said_as_exit_and_its_last_line():
    from benchmarks._peak_rss import said

    done = run_child("import sys; print('working'); sys.exit('error: it broke')")
    assert (done.exit_code, said(done)) == (1, "exit 1: error: it broke")
    assert said(run_child("print(' 1000 ')")) == "1000"


# --- tests/helpers: the Ray workspace, the bounded run, the out/ bytes ----------------------------------------------
def test_the_ray_stage_folder_has_params_with_the_runtime_and_an_empty_out(tmp_path):
    import yaml

    from helpers.ray_runs import ray_stage_folder

    root = ray_stage_folder(tmp_path / "ws", TESTS / "fixtures", {"engine": "ray", "workers": 2})
    params = yaml.safe_load((root / "params.yaml").read_text(encoding="utf-8"))
    assert params["runtime"]["engine"] == "ray" and params["runtime"]["workers"] == 2
    assert {"t_gpt4", "t_open"} <= set(params["sources"]) and list((root / "out").iterdir()) == []


@pytest.mark.slow
def test_prompts_are_written_as_a_stages_prompt_table(tmp_path):
    from helpers.ray_runs import write_numbered_prompts, write_prompts
    from scripts.lib.io import PROMPT_COLUMNS

    table = pq.read_table(write_prompts(tmp_path, ["a red fox", "a blue cat"])).to_pydict()
    assert list(table) == PROMPT_COLUMNS
    assert (table["id"], table["prompt"], table["source"]) == (
        ["r0", "r1"],
        ["a red fox", "a blue cat"],
        ["t_gpt4"] * 2,
    )
    numbered = pq.read_table(write_numbered_prompts(tmp_path, TESTS / "fixtures", 2), columns=["prompt"])
    assert numbered.num_rows == 2 * 3_057 and len(set(numbered["prompt"].to_pylist())) == 2 * 3_057


def test_out_bytes_are_the_out_folders_files_by_name(tmp_path):
    from helpers.ray_runs import out_bytes

    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "b.parquet").write_bytes(b"\x00b")
    (tmp_path / "out" / "a.json").write_bytes(b"{}")
    assert list(out_bytes(tmp_path).items()) == [("a.json", b"{}"), ("b.parquet", b"\x00b")]


def test_a_run_past_its_bound_is_killed_with_its_whole_session(tmp_path):
    from helpers.children import communicate_or_kill, start_child

    pid_file = tmp_path / "grandchild.pid"
    code = (
        "import subprocess, sys, time, pathlib\n"
        f"g = subprocess.Popen(['sleep', '60']); pathlib.Path({str(pid_file)!r}).write_text(str(g.pid))\n"
        "time.sleep(60)"
    )
    process = start_child([sys.executable, "-c", code], cwd=tmp_path)
    while not pid_file.exists() or not pid_file.read_text():
        time.sleep(0.02)
    with pytest.raises(subprocess.TimeoutExpired):
        communicate_or_kill(process, 0.3)
    assert process.returncode == -signal.SIGKILL
    grandchild = int(pid_file.read_text())
    deadline = time.monotonic() + 5
    while process_alive(grandchild) and time.monotonic() < deadline:  # a zombie of init's until it is reaped
        time.sleep(0.02)
    assert not process_alive(grandchild)


@pytest.mark.slow
def test_a_bounded_run_in_time_is_its_completed_process(tmp_path):
    from helpers.ray_runs import run_bounded

    done, seconds = run_bounded(tmp_path, ["no-such-command"], 60)
    assert done.returncode == 2 and "no-such-command" in done.stderr and 0 < seconds < 60


def test_stderr_shown_goes_to_the_terminal_and_stdout_is_kept(capfd):
    done = run_child("import sys; print('kept'); print('ingest@s: 1 records', file=sys.stderr)", stderr_shown=True)
    assert (done.stdout, done.stderr) == ("kept\n", "")
    assert "ingest@s: 1 records" in capfd.readouterr().err
