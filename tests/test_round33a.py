"""Round 33a: what Ray's workers read and what the command says while Ray runs.

1. A worker is a fresh import: a `load_params` there (import_env.redact_line asks it for the `*_env` names of the
   secrets to redact) read params.yaml by name again, where the driver's command run parses one text of it
   (params.base.read_once). params.yaml edited, removed or broken mid-run gave the workers another version, or
   none. Each worker now starts with the driver's texts (ray_workers.worker_setup, Ray's
   worker_process_setup_hook).
2. What the workers print never reaches the terminal (ray.init's log_to_driver=False, the raylet's messages
   logged: ray_engine._quiet_console). Once a place of the cluster went silent, though, ClusterWatch._quiet
   moved the command's own lines to a bare copy of descriptor 2: sys.stderr no longer redacted, so a progress
   line or warning quoting a secret showed it raw. The copy is now written through redact_line
   (ray_workers.RedactedLines).
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from helpers.children import scripts_env
from helpers.repos import REPO
from helpers.tiers import fast_first

# ---------------------------------------------------------------- 1. workers parse the driver's params.yaml

DRIVER_PARAMS = "runtime:\n  batch_rows: 1234\n"
CHANGED_MID_RUN = {  # case: what happens to params.yaml after the driver read it, before the workers start
    "edited to another value": "path.write_text('runtime:\\n  batch_rows: 999\\n')",
    "removed": "path.unlink()",
    "broken (not YAML)": "path.write_text('runtime: [\\n')",
}

WORKER_RUN = """
import pathlib
from scripts.lib.params import Runtime, load_params
from scripts.lib.params.base import one_read_per_run
from scripts.lib.ray_engine import ray_session

path = pathlib.Path("params.yaml")
with one_read_per_run():
    print("driver", load_params()["runtime"]["batch_rows"])
    {change}
    with ray_session(Runtime(engine="ray")) as ray:

        @ray.remote
        def worker_reads():
            from scripts.lib.params import load_params

            try:
                return load_params()["runtime"]["batch_rows"]
            except Exception as exc:
                return f"failed: {{exc}}"

        print("worker", ray.get(worker_reads.remote()))
"""


@pytest.mark.slow
@pytest.mark.parametrize("case", CHANGED_MID_RUN)
def test_a_worker_parses_the_text_the_driver_read(tmp_path, case):
    (tmp_path / "params.yaml").write_text(DRIVER_PARAMS, encoding="utf-8")
    script = WORKER_RUN.format(change=CHANGED_MID_RUN[case])
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, env=scripts_env(), capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.splitlines()[-2:] == ["driver 1234", "worker 1234"], done.stdout


# ---------------------------------------------------------------- 2. the command's lines once Ray's go nowhere

SECRETS = {  # case: (extra environment, the line printed, the secret it must not show)
    "a URL's user and password": ({}, "fetching https://bob:hunter2pw@example.org/x", "hunter2pw"),
    "an environment secret's value": ({"MY_SERVICE_TOKEN": "tok-9f8e7d6c5b4a"}, "using tok-9f8e7d6c5b4a", "9f8e7d6c"),
    "an `*_env` param's variable": ({"CAPTION_ROUTE": "rt-0a1b2c3d4e5f6a"}, "via rt-0a1b2c3d4e5f6a", "0a1b2c3d4e"),
}

QUIETED_RUN = """
import sys, time
from scripts.lib.ray_engine import ClusterWatch

watch = ClusterWatch(None, {{"a silent place": "127.0.0.1:9"}}, 30, quiet_ray=True)
with watch:
    deadline = time.monotonic() + 20
    while watch._python_only == 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    print({line!r}, file=sys.stderr, flush=True)
print("quieted", watch._python_only != 2, file=sys.stderr, flush=True)
"""


def params_naming(variable: str) -> str:
    """The repository's params.yaml with the caption entry's api_key_env naming `variable`."""
    text = (REPO / "params.yaml").read_text(encoding="utf-8")
    return text.replace("api_key_env: OPENROUTER_API_KEY", f"api_key_env: {variable}")


@pytest.mark.parametrize("case", fast_first(SECRETS))  # the first row alone: < 5 s
def test_the_commands_lines_stay_redacted_once_ray_is_quieted(tmp_path, case):
    extra, line, secret = SECRETS[case]
    (tmp_path / "params.yaml").write_text(params_naming("CAPTION_ROUTE"), encoding="utf-8")
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(QUIETED_RUN.format(line=line))],
        cwd=tmp_path,
        env=scripts_env(**extra),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "quieted True" in done.stderr
    assert secret not in done.stderr and line.split()[0] in done.stderr, done.stderr
