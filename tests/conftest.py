"""Fixtures shared by the test files; the helpers they import are in tests/helpers/.

`history` is the reference history (`python -m scripts replay-history`: v2 -> v3 -> v4-a -> v4-b as
four tagged commits, each pushed to a local DVC remote) replayed from a copy of this working tree, once
per test run: under pytest-xdist the first worker that needs it builds it under a file lock and the
others wait for that one build. It is read-only (checked at the end of the session): a test that
changes a repository works on `helpers.work_copy(...)`. Every test that uses it is marked `slow`.
T2I_TESTS_HISTORY=DIR reuses a replay made earlier with `python -m scripts replay-history DIR/repo
--remote DIR/remote` (handy while iterating on slow tests; CI never sets it).
"""

from __future__ import annotations

import fcntl
import os
import shutil
import signal
import sys
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NamedTuple

import pytest

from helpers import REPO, copy_repo, fingerprint, run, work_copy

# One thread for torch here and in every stage subprocess (env() copies os.environ): two cores shared
# by torch threads and parallel work only slow each other down.
for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")
# DVC run by a test (in process or not) neither phones home nor leaves its analytics report in the system's temp
# folder (a /tmp/tmpXXXXXXXX per command: the daemon that would send it has no network here)
os.environ.setdefault("DVC_NO_ANALYTICS", "1")
# A suite started from a non-interactive shell's background job inherits SIGINT ignored, and so would every
# process it starts (an ignored signal stays ignored across exec): the Ctrl-C tests need Python's default.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


# The heaviest rows of the default tier (each over 10 s of a loaded two-core run's 465 s; `--durations` at 4c39720)
# run with the slow tier: CI's plain run stays under its 10 minutes, and each guarantee they prove keeps lighter rows
# of its own there. `-m slow` (or `make test`) still runs them.
HEAVIEST_ROWS = frozenset(
    (
        "tests/test_outputs_round6.py::test_an_old_copy_that_cannot_be_deleted_is_said_not_left[release]",
        "tests/test_round14b.py::test_pil_warnings_never_reach_stderr[bomb-warning-release]",
        "tests/test_recipe_language.py::test_v4a_to_v4b_diff_is_the_raw_text_of_filtered_openprompts_rows",
        "tests/test_interrupts.py::test_after_a_sigkill_the_next_run_leaves_nothing_behind[release]",
        "tests/test_team_recipes.py::test_every_dedup_step_removes_the_rows_the_teams_script_removes",
        "tests/test_round13c.py::test_pr_comment_shows_the_prs_metric_names_and_values_as_text",
        "tests/test_round15b.py::test_release_plans_growing_as_a_chains_square_are_one_line[700 releases, each referencing the one before]",
        "tests/test_hostile_classes.py::test_a_control_character_in_an_output_path_is_escaped_in_the_success_line[c1-csi-tiny-encoder]",
        "tests/test_output_owners.py::test_a_locked_output_is_the_stage_commands_only[ingest over clean's locked table]",
        "tests/test_round14b.py::test_sample_data_replaces_its_own_folder_at_a_new_seed_never_a_users[own-folder-then-replaced-by-a-copy]",
        "tests/test_round10b.py::test_dedup_with_a_model_file_that_is_not_a_config_stops_in_one_line[pooling config a FIFO]",
        "tests/test_regex_engine.py::test_guards_never_change_an_output",
        "tests/test_output_guarantees.py::test_outputs_written_together_appear_together_or_not_at_all[prefilter-65536-o.parquet]",
        "tests/test_round14b.py::test_sample_data_replaces_its_own_folder_at_a_new_seed_never_a_users[own-folder-then-a-file-added]",
        "tests/test_generate_hostile.py::test_escape_codes_in_names_never_reach_the_terminal['\\\\x1b]0;pwned\\\\x07']",
        "tests/test_output_owners.py::test_a_locked_output_is_the_stage_commands_only[clean-rules over a locked report, cmd a list]",
        "tests/test_output_owners.py::test_a_command_never_replaces_another_commands_output[clean-rules over clean's report]",
        "tests/test_output_owners.py::test_a_command_never_replaces_another_commands_output[params-doc over ingest's table]",
        "tests/test_fuzz.py::test_params_values_give_success_or_one_line",
        "tests/test_outputs_round6.py::test_a_failed_run_leaves_no_folder_it_made[dedup-text on a full disk]",
        "tests/test_round14b.py::test_sample_data_replaces_its_own_folder_at_a_new_seed_never_a_users[own-folder-then-a-file-edited]",
        "tests/test_output_guarantees.py::test_outputs_written_together_appear_together_or_not_at_all[clean-131072-o.parquet]",
        "tests/test_interrupts.py::test_a_signal_that_a_library_swallows_still_stops_the_stage_before_it_commits",
        "tests/test_output_owners.py::test_a_locked_output_is_the_stage_commands_only[params-doc over clean's locked table]",
        "tests/test_generate_hostile.py::test_a_full_disk_while_rendering_is_one_line_naming_an_image_with_no_temp_left[1000]",
        "tests/test_interrupts.py::test_after_a_sigkill_the_next_run_leaves_nothing_behind[clean]",
        "tests/test_round10c.py::test_a_file_size_limit_leaves_no_torn_bytecode_and_is_one_line[1500]",
        "tests/test_round14b.py::test_sample_data_replaces_its_own_folder_at_a_new_seed_never_a_users[cloned-data-raw-then-a-source-added]",
        "tests/test_synthesize.py::test_dvc_repro_replays_from_the_persisted_cache",
        "tests/test_round10b.py::test_dedup_with_a_model_file_that_is_not_a_config_stops_in_one_line[modules.json a FIFO]",
        "tests/test_refused_outputs.py::test_release_refuses_a_user_folder_named_as_its_old_copy[a folder named as train's old copy, released before]",
        "tests/test_round11h.py::test_a_chain_past_the_recursion_limit_resolves_and_composes[its rows, composed]",
    )
)


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects by marker
def pytest_collection_modifyitems(items):
    """A test that needs the session's pipeline build is `slow`, so `-m "not slow"` never builds it; so is each of
    HEAVIEST_ROWS."""
    for item in items:
        if {"history", "built_repo"} & set(getattr(item, "fixturenames", ())) or item.nodeid in HEAVIEST_ROWS:
            item.add_marker(pytest.mark.slow)


# the variables that name a credential file the SDKs (and import_env.file_credentials) read
CREDENTIAL_VARIABLES = (
    "AWS_SHARED_CREDENTIALS_FILE",
    "AWS_CONFIG_FILE",
    "NETRC",
    "HF_TOKEN_PATH",
    "HF_HOME",
    "DOCKER_CONFIG",
    "GOOGLE_APPLICATION_CREDENTIALS",
    "CLOUDSDK_CONFIG",
)
# the variables that move the folders of the credential files and of DVC's and git's configs
CONFIG_VARIABLES = ("XDG_CACHE_HOME", "XDG_CONFIG_HOME", "XDG_CONFIG_DIRS", "DVC_GLOBAL_CONFIG_DIR")


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    """A home of the test's own: no credential file of the machine's is read, none of the variables naming one."""
    folder = tmp_path / "home"
    folder.mkdir()
    monkeypatch.setenv("HOME", str(folder))
    monkeypatch.setenv("DVC_SYSTEM_CONFIG_DIR", str(folder / "system-dvc"))  # not the machine's /etc/xdg/dvc
    for name in CREDENTIAL_VARIABLES + CONFIG_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    return folder


def built_once(tmp_path_factory, name: str, build: Callable[[Path], None]) -> Path:
    """`build(folder)` once per test run, in a folder all xdist workers of the run share (the parent of
    each worker's base temp); a failed build fails every test that asks for it, without a second try."""
    base = tmp_path_factory.getbasetemp()
    root = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / name
    with open(f"{root}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, or when its process dies
        if not (root / "done").exists() and not (root / "failed").exists():
            shutil.rmtree(root, ignore_errors=True)  # what a worker that died while building left
            root.mkdir()
            try:
                build(root)
            except BaseException:
                (root / "failed").write_text(traceback.format_exc()[-5000:], encoding="utf-8")
                raise
            (root / "done").touch()
    if (root / "failed").exists():
        pytest.fail(f"building {name} failed:\n{(root / 'failed').read_text(encoding='utf-8')}")
    return root


def replay_history(root: Path) -> None:
    """The four releases replayed into root/repo and root/remote from a fresh copy of this tree."""
    src = copy_repo(root / "src")
    run(["python", "scripts", "replay-history", str(root / "repo"), "--remote", str(root / "remote")], src)


class History(NamedTuple):
    repo: Path  # four commits `Release v2` .. `Release v4-b`, tagged; workspace and cache at v4-b
    remote: Path  # the local DVC remote every tag was pushed to


@pytest.fixture(scope="session")
def history(tmp_path_factory) -> Iterator[History]:
    """The release history, built once per run; checked unchanged (every file, .git and the DVC cache
    included) when the session ends."""
    if os.environ.get("T2I_TESTS_HISTORY"):
        root = Path(os.environ["T2I_TESTS_HISTORY"])
    else:
        root = built_once(tmp_path_factory, "history", replay_history)
    repo, remote = root / "repo", root / "remote"
    before = fingerprint(repo), fingerprint(remote)
    yield History(repo, remote)
    after = fingerprint(repo), fingerprint(remote)
    changed = sorted(p for b, a in zip(before, after) for p in set(b) | set(a) if b.get(p) != a.get(p))
    assert not changed, f"a test changed the shared history repo or remote (use work_copy): {changed[:10]}"


@pytest.fixture(scope="session")
def built_repo(history) -> Path:
    """Every stage built: the history's workspace at v4-b (read-only; see `history`)."""
    return history.repo


@pytest.fixture(scope="session")
def readme_run(history, tmp_path_factory):
    """The README's shell and Python blocks run in order in a work copy of the build (tests/test_readme.py):
    (repo, [(block, result)]). Its `dvc exp run -S dedup.threshold=0.8` is also the experiment
    tests/test_pipeline.py inspects; both tests are in xdist group `readme`, so it runs once."""
    from test_readme import run_readme_blocks

    root = tmp_path_factory.mktemp("readme")
    repo = work_copy(history.repo, root / "repo")
    return repo, run_readme_blocks(repo, root)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """The tiny SD2-architecture model, built once per run (minutes on a loaded CPU) and shared by the
    xdist workers. Read-only: a test that changes a model works on its own copy."""

    def build(root: Path) -> None:
        import torch

        from scripts.tiny_model import save_tiny_model

        torch.set_num_threads(1)
        save_tiny_model({}, root / "tiny-sd2")

    return built_once(tmp_path_factory, "tiny-model", build) / "tiny-sd2"


@pytest.fixture(autouse=True)
def _torch_one_thread():
    """A test that changed torch's thread count (or imported torch) leaves the next one single-threaded."""
    yield
    torch = sys.modules.get("torch")
    if torch is not None and torch.get_num_threads() != 1:
        torch.set_num_threads(1)


@pytest.fixture
def no_proxy(monkeypatch):
    """Loopback requests never go through a proxy from the environment."""
    for name in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    """The real corpora in tests/fixtures/ (sources and licences in its README)."""
    return REPO / "tests" / "fixtures"


@pytest.fixture
def fifo_reads_fail():
    """A FIFO read would block: the test fails after 20 s rather than hang the suite."""

    def stop(signum, frame):
        raise TimeoutError("the command read its FIFO input")

    old = signal.signal(signal.SIGALRM, stop)
    signal.alarm(20)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, old)
