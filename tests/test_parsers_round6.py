"""The sixth hostile round's parser breaks, one table per cause; every row failed before its fix.

1 a YAML value whose constructor raises its own error (`2024-02-30`, `!!int abc`, a 5,000-digit int)
  was a traceback: now one line naming the file and the line, wherever params.yaml is read
2 a FIFO or device as params.yaml (diff's workspace too) or a `--recipe` plan hung the command (or read
  /dev/zero until memory ran out): refused in one line before it is opened
3 clean-text and dedup-text held a line whole, however long (/dev/zero grew to 21 GB until the kernel
  killed the command): each line is capped as ingest caps it, and a device as the input is refused
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from helpers import GIT_ENV, dvc_init
from helpers.workspace import PARAMS, error_line, run_scripts, write_params

FAST = 9  # seconds: a row that hangs or reads forever fails here instead
MEMORY = 1 << 30  # address space for the long-line rows: holding a 2 GB line fails the command, not the machine
CAP = 65_536  # ingest's cap on a text line (sources.<name>.max_prompt_bytes' default)
RELEASE = next(iter(PARAMS["releases"]))
SOURCE = next(iter(PARAMS["sources"]))


# ---------------------------------------------------------------- 1. a constructor's own error


def _source_with(line: str) -> str:
    """params.yaml with one text source whose 4th line is `line` (indented under the source)."""
    return f"sources:\n  x:\n    kind: text\n    {line}\n"


@pytest.mark.parametrize(
    ("text", "line", "problem"),
    [
        (_source_with("path: 2023-02-29"), 4, "'2023-02-29' is not a valid timestamp: day is out of range"),
        (_source_with("path: 2023-13-01"), 4, "'2023-13-01' is not a valid timestamp: month must be in 1..12"),
        (_source_with("path: x\n    tags: {0000-12-31: 1}"), 5, "'0000-12-31' is not a valid timestamp: year 0"),
        (_source_with("path: 2001-12-14 21:59:43.10 +48:00"), 4, "is not a valid timestamp: offset must be"),
        (_source_with("path: !!float 1.2.3"), 4, "'1.2.3' is not a valid float"),
        (_source_with("path: !!int 12ab"), 4, "'12ab' is not a valid int"),
        (_source_with("path: " + "7" * 6_000), 4, "is not a valid int: Exceeds the limit"),
        (_source_with("path: !!bool perhaps"), 4, "'perhaps' is not a valid bool"),
        (_source_with("path: !!omap [a: 1, b: 2, a: 3]"), 4, "not a valid omap"),
    ],
    ids=[
        "feb-29-not-leap",
        "month-13",
        "year-zero-key",
        "offset-of-two-days",
        "float-tag-two-points",
        "int-tag-letters",
        "int-of-6000-digits",
        "bool-tag-perhaps",
        "omap-repeated-key",
    ],
)
def test_a_value_its_type_cannot_hold_is_one_line_naming_the_line(tmp_path, text, line, problem):
    (tmp_path / "params.yaml").write_text(text, encoding="utf-8")
    result = run_scripts(tmp_path, "ingest", "x", "o.parquet", timeout=FAST)
    assert result.returncode == 2, result.stderr[-2000:]
    assert error_line(result.stderr).startswith(f"error: params.yaml: line {line}: not valid YAML (")
    assert problem in result.stderr
    assert not (tmp_path / "o.parquet").exists()


def _git(root: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=root, check=True, capture_output=True, env={**os.environ, **GIT_ENV})


def _commit_params(root: Path, text: str) -> None:
    (root / "params.yaml").write_text(text, encoding="utf-8")
    _git(root, "add", "params.yaml")
    _git(root, "commit", "-qm", "params")


@pytest.mark.parametrize(
    ("before", "after", "where"),
    [
        ("releases: {}\n", "releases: {}\nseed: 2024-02-30\n", "HEAD:params.yaml: line 2"),
        ("releases: {}\nseed: !!int seven\n", "releases: {}\n", "HEAD~1:params.yaml: line 2"),
        ("releases: {}\n", "releases:\n  r1: {seed: !!bool maybe}\n", "HEAD:params.yaml: line 2"),
    ],
    ids=["impossible-date-at-head", "int-tag-at-the-base", "bool-tag-in-a-release"],
)
def test_diff_names_the_revision_whose_value_its_type_cannot_hold(tmp_path, before, after, where):
    _git(tmp_path, "init", "-q", "-b", "main")
    dvc_init(tmp_path)
    _commit_params(tmp_path, before)
    _commit_params(tmp_path, after)
    result = run_scripts(tmp_path, "diff", "HEAD~1", "HEAD", timeout=60)
    assert result.returncode == 2, result.stderr[-2000:]
    assert error_line(result.stderr).startswith(f"error: {where}: not valid YAML (")


# ---------------------------------------------------------------- 2. a FIFO or device where a config is read


@pytest.mark.parametrize(
    ("folder", "argv", "shown"),
    [
        (".", ["diff", "HEAD", "workspace"], "params.yaml"),
        (".", ["diff", "workspace", "HEAD"], "params.yaml"),
        ("repo", ["diff", "HEAD", "workspace", "--repo", "repo"], "repo/params.yaml"),
    ],
    ids=["workspace-second", "workspace-first", "workspace-of-another-repo"],
)
def test_diff_refuses_a_fifo_as_the_workspace_params(tmp_path, folder, argv, shown):
    repo = tmp_path / folder
    repo.mkdir(exist_ok=True)
    _git(repo, "init", "-q", "-b", "main")
    dvc_init(repo)
    _commit_params(repo, "releases: {}\n")
    (repo / "params.yaml").unlink()
    os.mkfifo(repo / "params.yaml")
    result = run_scripts(tmp_path, *argv, timeout=20)  # it hung reading the FIFO
    assert result.returncode == 2, result.stderr[-2000:]
    assert error_line(result.stderr) == f"error: {shown}: is a FIFO, not a regular file; refusing to read it"


def _fifo(path: Path) -> Path:
    os.mkfifo(path)
    return path


def _link(path: Path, target: str) -> Path:
    path.symlink_to(target)
    return path


@pytest.mark.parametrize(
    ("make", "argv", "shown"),
    [
        (lambda ws: _fifo(ws / "params.yaml"), ["recipes", "rec"], "params.yaml: is a FIFO"),
        (lambda ws: _fifo(ws / "params.yaml"), ["dedup-text", "in.txt", "out.jsonl"], "params.yaml: is a FIFO"),
        (
            lambda ws: _link(ws / "params.yaml", "/dev/zero"),
            ["clean-text", "in.txt", "o.jsonl"],
            "params.yaml: is a device",
        ),
        (
            lambda ws: _fifo(ws / "plan.json"),
            ["summary", "data", "s.json", "--recipe", "plan.json"],
            "plan.json: is a FIFO",
        ),
        (
            lambda ws: _fifo(ws / "p"),
            ["plots", "data/r", "data/c", "data/d", "data/p", "--recipe", "p"],
            "p: is a FIFO",
        ),
        (
            lambda ws: _fifo(ws / "c.json"),
            ["compose", RELEASE, "data", "out", "--recipe", "c.json"],
            "c.json: is a FIFO",
        ),
        (
            lambda ws: _link(ws / "r.json", "/dev/zero"),
            ["release", RELEASE, "data", "out", "--recipe", "r.json"],
            "r.json: is a device",
        ),
        (
            lambda ws: _fifo(ws / "pre.json"),
            ["prefilter", SOURCE, "in.parquet", "out.parquet", "--recipe", "pre.json"],
            "pre.json: is a FIFO",
        ),
    ],
    ids=[
        "fifo-params-recipes",
        "fifo-params-dedup-text",
        "zero-params-clean-text",
        "fifo-plan-summary",
        "fifo-plan-plots",
        "fifo-plan-compose",
        "zero-plan-release",
        "fifo-plan-prefilter",
    ],
)
def test_a_fifo_or_device_as_a_config_file_is_refused_not_waited_on(tmp_path, make, argv, shown):
    if make(tmp_path).name != "params.yaml":
        write_params(tmp_path)
    (tmp_path / "data").mkdir()
    (tmp_path / "in.txt").write_text("a red fox\n", encoding="utf-8")
    result = run_scripts(tmp_path, *argv, timeout=FAST, memory=MEMORY)  # /dev/zero was read until memory ran out
    assert result.returncode == 2, result.stderr[-2000:]
    assert error_line(result.stderr) == f"error: {shown}, not a regular file; refusing to read it"


# ---------------------------------------------------------------- 3. a line without end, a device as the input


def _sparse(size: int):
    def make(path: Path) -> None:
        path.write_bytes(b"")
        os.truncate(path, size)  # no newline in 2 GB of holes: nothing on disk

    return make


def _lines(*sizes: int):
    def make(path: Path) -> None:
        path.write_bytes(b"".join(b"x" * size + b"\n" for size in sizes))

    return make


@pytest.mark.parametrize("command", ["clean-text", "dedup-text"])
@pytest.mark.parametrize(
    ("make", "line"),
    [
        (_sparse(2 << 30), 1),
        (_lines(10, 20, CAP + 1), 3),  # one byte over, not at the end of the file
        (_lines(*[60_000] * 20, CAP * 4), 21),  # past the first ~1 MB batch
    ],
    ids=["sparse-2gb-no-newline", "line-3-one-byte-over", "line-21-after-a-batch"],
)
def test_a_line_longer_than_ingest_allows_is_one_line_in_flat_memory(tmp_path, command, make, line):
    write_params(tmp_path)
    make(tmp_path / "in.txt")
    result = run_scripts(tmp_path, command, "in.txt", "out.jsonl", timeout=FAST, memory=MEMORY)
    assert result.returncode == 2, result.stderr[-2000:]
    assert error_line(result.stderr) == f"error: in.txt: line {line}: line longer than {CAP} bytes"
    assert not (tmp_path / "out.jsonl").exists()


@pytest.mark.parametrize("command", ["clean-text", "dedup-text"])
@pytest.mark.parametrize("device", ["/dev/zero", "/dev/full", "/dev/null"], ids=["zero", "full", "null"])
def test_a_device_as_the_text_input_is_refused(tmp_path, command, device):
    if not os.path.exists(device):
        pytest.skip(f"no {device} here")
    write_params(tmp_path)
    result = run_scripts(tmp_path, command, device, "out.jsonl", timeout=FAST, memory=MEMORY)
    assert result.returncode == 2, result.stderr[-2000:]
    assert error_line(result.stderr) == f"error: {device}: is a device, not a regular file; refusing to read it"
    assert not (tmp_path / "out.jsonl").exists()
