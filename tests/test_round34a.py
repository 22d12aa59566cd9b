"""Round 34a: Ray leftovers (`runtime.engine: ray`). Every row failed before its fix.

1. ClusterWatch's last line (`_stop_the_run`: the cluster went away and Ray holds the main thread) was written to
   descriptor 2 with os.write, past import_env.redact_line: the address's user:password alone was hidden, a known
   secret, an `*_env` variable's value or a URL's password in a place's name was shown. Now it is redacted as every
   line of the command, and left out where redaction itself fails (ray_workers.checked_line).
2. A SIGKILL between mkdtemp and the owner marker's write left a local Ray's folder (`ray-XXXXXXXX`) no later run
   could prove its own: kept for ever. Now it is made under a name holding its command's pid and start time, its
   marker written there, then renamed into place; the next local start removes it wherever the kill came.
3. A `ray://` client run prints the server's log stream with print() on sys.stdout / sys.stderr, looked up at each
   call: through the CLI's redacting wrappers already (checked by hand, no rows: ray's client needs grpc).
"""

from __future__ import annotations

import builtins
import os
import signal
import tempfile
import time
from collections.abc import Callable

import pytest

from helpers.repos import REPO

SECRET = "hf_r34aSecretTokenValue0123456789"
PASSWORD = "r34aPlacePassword"


def closed_port() -> str:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{sock.getsockname()[1]}"


def in_a_child(work: Callable[[], object]) -> tuple[int, str]:
    """`work()` in a forked copy of this process, its descriptors 1 and 2 into a file: (how it ended: an exit code,
    or minus the signal that killed it; what it wrote). A fork has this process's imports: milliseconds, where a new
    Python took 2 s."""
    with tempfile.TemporaryFile() as written:
        pid = os.fork()
        if pid == 0:
            try:
                os.dup2(written.fileno(), 1)
                os.dup2(written.fileno(), 2)
                work()
            finally:
                os._exit(99)  # never the test's own exit, whatever `work` did
        _, status = os.waitpid(pid, 0)
        written.seek(0)
        return os.waitstatus_to_exitcode(status), written.read().decode("utf-8", "replace")


# --- 1. the watch's last line, said from its own thread: redacted, or left out ----------------------------------
def params_naming(variable: str) -> str:
    text = (REPO / "params.yaml").read_text(encoding="utf-8")
    return text.replace("api_key_env: OPENROUTER_API_KEY", f"api_key_env: {variable}")


def redaction_fails() -> None:
    import scripts.lib.import_env as import_env

    def at_the_file_limit(text: str) -> str:
        raise OSError(24, "Too many open files")

    import_env.redact_line = at_the_file_limit


LAST_LINES = {  # set up first (in the child), address, place's name, place (None: a closed port), environment
    "the Hub token in the address": (None, f"{SECRET}.example:6379", "the cluster's GCS", None, {"HF_TOKEN": SECRET}),
    "an *_env variable's value in the address": (
        None,
        "head-r34aGatewayValue77:6379",
        "the cluster's GCS",
        None,
        {"R34A_GATEWAY": "head-r34aGatewayValue77"},
    ),
    "a URL's password in a place's name": (None, "h:1", "the cluster's GCS", f"http://u:{PASSWORD}@127.0.0.1:1", {}),
    "redaction fails: the line is left out": (
        redaction_fails,
        f"{SECRET}.example:6379",
        "the cluster's GCS",
        None,
        {"HF_TOKEN": SECRET},
    ),
}


def cheap_first(table: dict) -> list:
    """The rows of `table`, all but the first in the slow tier: each child reads params.yaml for its secrets."""
    return [
        pytest.param(*row, id=name, marks=[pytest.mark.slow] * (i > 0)) for i, (name, row) in enumerate(table.items())
    ]


@pytest.mark.parametrize("before, address, name, place, env", cheap_first(LAST_LINES))
def test_the_watch_s_last_line_is_redacted_as_every_line(tmp_path, before, address, name, place, env):
    from scripts.lib import ray_engine

    (tmp_path / "params.yaml").write_text(params_naming("R34A_GATEWAY"), encoding="utf-8")
    places = {name: place or closed_port()}

    def held_by_ray() -> None:  # a main thread that runs no handler: the watch says the line itself
        os.chdir(tmp_path)
        os.environ.update(env)
        if before is not None:
            before()
        ray_engine.LOST_GRACE_S = 0.2
        with ray_engine.ClusterWatch(address, places, 0, True):
            signal.pthread_sigmask(signal.SIG_BLOCK, [ray_engine.LOST_SIGNAL])
            time.sleep(30)

    code, said = in_a_child(held_by_ray)
    lines = said.splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), said
    for hidden in [*env.values(), PASSWORD]:
        assert hidden not in said
    if before is not None:
        assert "left out" in lines[0]
    else:
        assert "the Ray cluster went away during the run" in lines[0] and "***" in lines[0]


# --- 2. a local Ray's folder, killed while it is made: the next start proves it ours and removes it -------------
def kill_after(module: object, name: str, when: Callable[[str], bool], first: Callable[[object], object]) -> None:
    """`module.name` made to SIGKILL this process right after a call whose path `when` takes (`first(result)`
    done before the kill)."""
    real = getattr(module, name)

    def killing(path, *args, **kwargs):
        result = real(path, *args, **kwargs)
        if when(str(path)):
            first(result)
            os.kill(os.getpid(), signal.SIGKILL)
        return result

    setattr(module, name, killing)


def marker(path: str) -> bool:
    return path.endswith(".t2i-datasets-owner")


def half_written(opened) -> None:
    opened.write("123")
    opened.flush()


KILL_POINTS = {  # what the kill comes right after: the function patched, at which call, what it does first
    "the folder's mkdir": (os, "mkdir", lambda path: True, lambda _: None),
    "the marker's open, nothing in it": (builtins, "open", marker, lambda _: None),
    "the marker's pid written, not its start": (builtins, "open", marker, half_written),
}


@pytest.mark.parametrize("module, name, when, first", list(KILL_POINTS.values()), ids=list(KILL_POINTS))
def test_a_folder_whose_command_was_killed_while_it_was_made_is_removed_next_time(tmp_path, module, name, when, first):
    from scripts.lib import ray_engine

    parent = tmp_path / "tmp"
    parent.mkdir()
    make = getattr(ray_engine, "own_folder", None) or ray_engine._own_folder  # its name before round 34a

    def killed_while_making() -> None:
        kill_after(module, name, when, first)
        make(str(parent))

    assert in_a_child(killed_while_making)[0] == -signal.SIGKILL
    assert len(list(parent.iterdir())) == 1  # the folder the kill left
    ray_engine.remove_stale_folders(str(parent))
    assert list(parent.iterdir()) == []
