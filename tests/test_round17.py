"""Round 17: the breaks this hostile round found, one table per class (every row failed before its fix), on
real files and runs of the command (`helpers.cli`: scripts.cli.main in this process, as __main__ runs it):

1. SOURCE_DATE_EPOCH out of datetime's range (300000000000: year 11476), past the platform's time_t, or in
   digits str.isdigit takes and int() does not ('²') was a ValueError or OverflowError traceback from a
   bucketed release's manifest.json; a value in other digits or form was dropped silently. One line naming the
   variable, before a shard is written (source_date.created).
2. A variable a library reads and cannot read printed the library's own line beside the command's output at
   exit 0 (tiny-encoder, tiny-model, generate, a bucketed release, embedding dedup): an OpenMP one torch's libgomp
   refuses (OMP_NUM_THREADS=abc or 0, OMP_PROC_BIND=true,close, OMP_DYNAMIC=1, ...: `libgomp: Invalid value for
   environment variable ...`), TORCH_CPP_LOG_LEVEL=WARN, TORCH_SHOW_CPP_STACKTRACES=true (a UserWarning),
   TRANSFORMERS_VERBOSITY=INFO, DIFFUSERS_VERBOSITY=detail (`Unknown option ...`). Checked before the library is
   imported, as Arrow's are (import_env.IMPORT_TIME_VARIABLES): one line naming it, exit 2.
3. torch's allocator failing under a memory limit (`ulimit -v`) raised a RuntimeError (`DefaultCPUAllocator: can't
   allocate memory`), not a MemoryError: a tiny_encoder or tiny_model too wide for the limit was a 67-line
   traceback, exit 1. It is `out of memory`, one line, exit 2, as any MemoryError is (cli._torch_out_of_memory).
4. A NUMBA_* variable numba cannot parse (NUMBA_OPT=9, NUMBA_DISABLE_JIT=abc, NUMBA_BOUNDSCHECK=abc) was a
   12-line RuntimeWarning holding a traceback beside dedup's output at exit 0 (numba then ignores it), once
   the exact check compiles its walk (100k candidate pairs). The warning is one line naming the variable
   (import_env.variables_parsed), whichever of numba's sixty it is.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from helpers import cli
from helpers.repos import REPO
from helpers.tiers import fast_first
from helpers.workspace import PARAMS, error_line, leftovers, make_splits, run_scripts, write_params

# --- 1. SOURCE_DATE_EPOCH -----------------------------------------------------------------------------------


def bucketed_release(root: Path) -> list[str]:
    """A release of make_splits' rows with a bucketed export (1x1 images, upsampled), and its command."""
    components = [{"source": "diffusiondb", "split": s, "into": s} for s in ("train", "validation")]
    export = {"format": "bucketed", "too_small_policy": "upsample", "base_resolution": 64}
    write_params(root, releases={"r": {"components": components, "export": export}})
    make_splits(root, n=4)
    Image.new("RGB", (1, 1), (200, 40, 40)).save(root / "data/images/diffusiondb/img.png")  # a decodable 1x1
    return ["release", "r", "data/splits", "data/releases/r"]


EPOCH_ROWS = {
    "past-year-9999": "300000000000",  # ValueError: year 11476 is out of range
    "past-time_t": "9" * 30,  # OverflowError: timestamp out of range for platform time_t
    "superscript-digit": "1²",  # str.isdigit() is true, int() refuses it
    "arabic-indic-digits": "١٧٠٠٠٠٠٠٠٠",  # int() reads it as 1700000000; the spec's value is ASCII
    "fraction": "1700000000.5",  # dropped silently: created null
}


@pytest.mark.parametrize("row", EPOCH_ROWS)
def test_a_source_date_epoch_that_is_no_whole_ascii_second_is_one_line(tmp_path, monkeypatch, capfd, row):
    command = bucketed_release(tmp_path)
    monkeypatch.setenv("SOURCE_DATE_EPOCH", EPOCH_ROWS[row])
    result = cli(command, tmp_path, monkeypatch, capfd)
    assert result.returncode == 2, result.stderr
    assert error_line(result.stderr).startswith("error: SOURCE_DATE_EPOCH: "), result.stderr
    assert not (tmp_path / "data" / "releases" / "r").exists()
    assert not leftovers(tmp_path)


def test_a_source_date_epoch_of_whole_ascii_seconds_dates_the_manifest(tmp_path, monkeypatch, capfd):
    command = bucketed_release(tmp_path)
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    assert cli(command, tmp_path, monkeypatch, capfd).returncode == 0
    manifest = json.loads((tmp_path / "data/releases/r/train/manifest.json").read_text())
    assert manifest["created"] == "2023-11-14T22:13:20+00:00"


# --- 2. an OpenMP variable libgomp cannot read ----------------------------------------------------------------


def run(root: Path, *argv: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    """`python -m scripts ARGV` in `root` with `env` added, as a user runs it (torch imported afresh)."""
    full = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "T2I_PROGRESS_EVERY_S": "3600", **env}
    return subprocess.run(
        [sys.executable, "-m", "scripts", *argv], cwd=root, env=full, capture_output=True, text=True, timeout=180
    )


# row -> (the command, the variable, its value): each printed its library's own line(s) at exit 0
LIBRARY_VARIABLE_ROWS = {  # the first two (torch's libgomp, torch's C++) run in every tier
    "threads-text": ("tiny-encoder", "OMP_NUM_THREADS", "abc"),
    "torch-cpp-log-level": ("tiny-encoder", "TORCH_CPP_LOG_LEVEL", "WARN"),
    "transformers-upper-case": ("tiny-encoder", "TRANSFORMERS_VERBOSITY", "INFO"),
    "threads-zero": ("tiny-encoder", "OMP_NUM_THREADS", "0"),
    "threads-trailing-comma": ("tiny-encoder", "OMP_NUM_THREADS", "4,"),
    "proc-bind": ("tiny-encoder", "OMP_PROC_BIND", "true,close"),
    "dynamic-one": ("tiny-encoder", "OMP_DYNAMIC", "1"),
    "wait-policy": ("tiny-encoder", "OMP_WAIT_POLICY", "busy"),
    "thread-limit-zero": ("tiny-encoder", "OMP_THREAD_LIMIT", "0"),
    "torch-stacktraces": ("tiny-encoder", "TORCH_SHOW_CPP_STACKTRACES", "true"),
    "diffusers-detail": ("tiny-model", "DIFFUSERS_VERBOSITY", "detail"),
}


@pytest.mark.parametrize("row", fast_first(LIBRARY_VARIABLE_ROWS, keep=2))
def test_a_library_variable_it_cannot_read_is_one_line_before_it_loads(tmp_path, row):
    command, name, value = LIBRARY_VARIABLE_ROWS[row]
    write_params(tmp_path)
    result = run(tmp_path, command, "out", env={name: value})
    assert result.returncode == 2, result.stderr
    line = error_line(result.stderr)
    assert line.startswith(f"error: {name}: must be "), result.stderr
    assert not (tmp_path / "out").exists() and not leftovers(tmp_path)


@pytest.mark.parametrize(
    "name, value",
    [
        ("OMP_NUM_THREADS", " +4 , 2 "),
        ("OMP_NUM_THREADS", "2147483648"),
        ("OMP_PROC_BIND", "Master"),
        ("OMP_PROC_BIND", " close,spread "),
        ("OMP_DYNAMIC", "TRUE"),
        ("OMP_WAIT_POLICY", " passive "),
        ("OMP_THREAD_LIMIT", "4"),
        ("TORCH_CPP_LOG_LEVEL", "info"),
        ("TORCH_CPP_LOG_LEVEL", "3"),
        ("TORCH_CPP_LOG_LEVEL", ""),
        ("TORCH_SHOW_CPP_STACKTRACES", "1"),
        ("TRANSFORMERS_VERBOSITY", "error"),
        ("TRANSFORMERS_VERBOSITY", ""),
        ("DIFFUSERS_VERBOSITY", "warning"),
    ],
)
def test_a_library_variable_value_it_reads_passes_the_check(monkeypatch, name, value):
    """Values each library takes without a word (each tried against the installed torch, libgomp, transformers
    and diffusers): never refused."""
    from scripts.lib.import_env import check_variables

    monkeypatch.setenv(name, value)
    for library in ("torch", "transformers", "diffusers"):
        check_variables(library)


# --- 3. torch's allocator under a memory limit ---------------------------------------------------------------

WIDE_ENCODER = {"hidden": 4096, "layers": 48, "heads": 64}  # 9.7G weights: 39 GB of float32
# row -> (the command, its params section, the keys that make it too wide for MEMORY)
TOO_WIDE_ROWS = {
    "tiny-encoder": ("tiny-encoder", "tiny_encoder", WIDE_ENCODER),
    "tiny-model-text-encoder": ("tiny-model", "tiny_model", {"text_hidden": 4096, "text_layers": 48, "text_heads": 64}),
    "tiny-model-unet": ("tiny-model", "tiny_model", {"unet_channels": [4096, 4096], "unet_heads": [64, 64]}),
}
MEMORY = 1_500_000_000  # bytes of address space: torch and transformers import in about 750 MB


@pytest.mark.parametrize(
    "row", fast_first(TOO_WIDE_ROWS, keep=0)
)  # ~12 s each: -m slow; the told_from rows run in every tier
def test_torch_out_of_memory_under_a_memory_limit_is_one_line(tmp_path, row):
    command, section, keys = TOO_WIDE_ROWS[row]
    write_params(tmp_path, **{section: {**PARAMS[section], **keys}})
    result = run_scripts(tmp_path, command, "out", memory=MEMORY, timeout=300)
    assert result.returncode == 2, result.stderr
    assert error_line(result.stderr).startswith("error: out of memory"), result.stderr
    assert not (tmp_path / "out").exists() and not leftovers(tmp_path)


def _raised_from(cause: BaseException) -> BaseException:
    """A DataError a handler raised while `cause` was handled (its context), as a stage's `except` does."""
    from scripts.lib.errors import DataError

    try:
        try:
            raise cause
        except RuntimeError:
            raise DataError("x.parquet: row 3: cannot embed") from None
    except DataError as exc:
        return exc


ALLOCATOR = "[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't allocate memory: you tried to allocate 8 bytes"


@pytest.mark.parametrize(
    "make, out_of_memory",
    [
        (lambda: RuntimeError(ALLOCATOR), True),
        (lambda: __import__("torch").OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"), True),
        (lambda: _raised_from(RuntimeError(ALLOCATOR)), True),
        (lambda: RuntimeError("mat1 and mat2 shapes cannot be multiplied"), False),
        (lambda: ValueError("DefaultCPUAllocator: can't allocate memory"), False),
    ],
    ids=["cpu-allocator", "gpu", "handled-into-a-data-error", "other-runtime-error", "not-a-runtime-error"],
)
def test_torch_s_out_of_memory_errors_are_told_from_others(make, out_of_memory):
    from scripts.cli import _out_of_memory

    assert _out_of_memory(make()) is out_of_memory


# --- 4. a NUMBA_* variable numba cannot parse -----------------------------------------------------------------

NUMBA_ROWS = {
    "opt-level": ("NUMBA_OPT", "9"),
    "disable-jit": ("NUMBA_DISABLE_JIT", "abc"),
    "boundscheck": ("NUMBA_BOUNDSCHECK", "abc"),
}


@pytest.mark.parametrize("row", fast_first(NUMBA_ROWS))
def test_a_numba_variable_it_cannot_parse_is_one_line(tmp_path, row):
    name, value = NUMBA_ROWS[row]
    lines = (f"a photo of a red fox in the snow at dawn with a tall tree variant {i}" for i in range(5000))
    (tmp_path / "many.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")  # 300k pairs: numba compiles
    result = run(tmp_path, "dedup-text", "many.txt", "out.jsonl", env={name: value})
    assert result.returncode == 2, result.stderr
    assert (
        error_line(result.stderr)
        == f"error: {name}: numba cannot parse its value, and would ignore it; fix or unset it"
    )
    assert not (tmp_path / "out.jsonl").exists() and not leftovers(tmp_path)
