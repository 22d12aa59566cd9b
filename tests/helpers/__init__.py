"""What tests import besides fixtures: `from helpers import cli, run, work_copy, write_tar, Loopback`."""

from helpers.archives import tar_bytes, write_tar
from helpers.commands import CliResult, cli
from helpers.loopback import Loopback, Unaccepted, send_json
from helpers.python_ast import parse_python
from helpers.repos import GIT_ENV, REPO, copy_repo, dvc_init, env, fingerprint, repo_files, run, work_copy
from helpers.trees import file_digests

__all__ = [
    "GIT_ENV",
    "REPO",
    "CliResult",
    "Loopback",
    "Unaccepted",
    "cli",
    "copy_repo",
    "dvc_init",
    "env",
    "file_digests",
    "fingerprint",
    "parse_python",
    "repo_files",
    "run",
    "send_json",
    "tar_bytes",
    "work_copy",
    "write_tar",
]
