"""What a Ray session of ours gives its worker processes, and its own lines once Ray's own go nowhere (ray_engine).

A worker is a fresh import: a `load_params` there (import_env.redact_line asks it for the `*_env` names of the
secrets it redacts) read params.yaml by name again, where the driver's command run parses one text of it
(params.base.read_once): an edit, a rename over or a removal mid-run gave the workers another version, or none.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from scripts.lib.params import PARAMS_FILE


def driver_reads() -> dict[str, str]:
    """The texts this command run has read so far (params.base.read_once: params.yaml's), by absolute path."""
    from scripts.lib.params.base import run_reads

    return run_reads()


def worker_setup(reads: dict[str, str]) -> Callable[[], None]:
    """Ray's `worker_process_setup_hook` (runtime_env): each worker starts as one run of the driver's, reading
    `reads` (driver_reads) and nothing by name again. A worker whose folder is not the driver's (a cluster's node)
    finds params.yaml, the file the stages load, at its own path. The hook is a closure: Ray exports it by value."""
    params_text = reads.get(os.path.abspath(PARAMS_FILE))

    def read_as_the_driver() -> None:
        from scripts.lib.params.base import seed_run_reads

        texts = dict(reads)
        if params_text is not None:
            texts[os.path.abspath(PARAMS_FILE)] = params_text
        seed_run_reads(texts)

    return read_as_the_driver


class RedactedLines:
    """A text stream whose writes go through import_env.redact_line, as the command's standard error does (cli):
    the copy of descriptor 2 ClusterWatch writes the command's lines to once Ray's C++ threads have it. A line that
    cannot be checked is left out, never written as it came."""

    def __init__(self, stream):
        self._stream = stream

    def write(self, text: str) -> int:
        try:
            from scripts.lib.import_env import redact_line

            checked = redact_line(text) if text.strip() else text
        except Exception:
            checked = "(a line left out: it could not be checked for secrets)\n"
        return self._stream.write(checked)

    def __getattr__(self, name):
        return getattr(self._stream, name)
