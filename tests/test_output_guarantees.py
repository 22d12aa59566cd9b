"""The fourth hostile round's breaks, one table each (every row failed before its fix): outputs keep the
user's umask, no command writes through a linked output folder, a FIFO where dedup reads is refused,
outputs written together appear together or not at all, and a full disk names the file being written."""

from __future__ import annotations

import copy
import errno
import os
import random
import signal
import stat
from pathlib import Path

import pandas as pd
import pytest
import yaml

from helpers.tiers import fast_first
from scripts.lib.errors import os_error_message
from tests.helpers.trees import file_digests
from tests.helpers.workspace import PARAMS, error_line, leftovers, make_splits, naming_its_sources, write_params
from tests.helpers.workspace import run_scripts as run


def mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


# ---------------------------------------------------------------- the user's umask


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o027])
def test_outputs_keep_the_users_umask(tmp_path, umask):
    """io's UMASK read back the 0 it set to read it: every output was 666 / 777, writable by anyone."""
    write_params(tmp_path)
    (tmp_path / "in.txt").write_text("a red fox\n", encoding="utf-8")
    assert run(tmp_path, "clean-text", "in.txt", "out.jsonl", "--rules", "final", umask=umask).returncode == 0
    assert run(tmp_path, "recipes", "recipes", umask=umask).returncode == 0
    assert mode(tmp_path / "out.jsonl") == 0o666 & ~umask
    assert mode(tmp_path / "recipes") == 0o777 & ~umask


# ---------------------------------------------------------------- a linked output folder


def synthesize_params(root: Path) -> None:
    entry = {**PARAMS["synthesize"]["gpt4_style"], "api_key_env": None, "requests": 0, "examples": []}
    write_params(root, synthesize={"t": entry})


LINKED = {  # command, its setup, the output argument
    "release into a link to a folder": (["release", "v2", "data/splits", "rel"], "folder"),
    "release into a dangling link": (["release", "v2", "data/splits", "rel"], "nowhere"),
    "synthesize into a link to a folder": (["synthesize", "t", "rel"], "folder"),
    "caption into a link to a folder": (["caption", "laion_buckets", "rel"], "folder"),
}


@pytest.mark.parametrize("case", sorted(LINKED))
def test_no_command_writes_through_a_linked_output_folder(tmp_path, case):
    argv, target = LINKED[case]
    if argv[0] == "synthesize":
        synthesize_params(tmp_path)
    else:
        write_params(tmp_path)
        make_splits(tmp_path)
    if target == "folder":
        (tmp_path / "mine").mkdir()
        (tmp_path / "mine" / "notes.md").write_text("my notes\n", encoding="utf-8")
    (tmp_path / "rel").symlink_to("mine")
    before = file_digests(tmp_path)
    done = run(tmp_path, *argv)
    assert done.returncode == 2 and "is a symbolic link" in error_line(done.stderr), done.stderr
    assert file_digests(tmp_path) == before and (tmp_path / "rel").is_symlink()
    assert not (tmp_path / "mine").exists() or sorted(os.listdir(tmp_path / "mine")) == ["notes.md"]


# ---------------------------------------------------------------- a FIFO where dedup reads


def dedup_fifo_file(root: Path) -> list[str]:
    os.mkfifo(root / "in.parquet")
    return ["dedup", "s", "in.parquet", "out.parquet"]


def dedup_fifo_shard(root: Path) -> list[str]:
    (root / "shards").mkdir()
    pd.DataFrame({"id": ["a"], "text": ["a red fox"]}).to_parquet(root / "shards" / "part-000.parquet")
    os.mkfifo(root / "shards" / "part-001.parquet")
    return ["dedup", "s", "shards", "out.parquet"]


def preview_fifo_input(root: Path) -> list[str]:
    (root / "data" / "clean").mkdir(parents=True)
    (root / "data" / "dedup").mkdir()
    os.mkfifo(root / "data" / "clean" / "s.parquet")
    return ["dedup-preview", "s", "--output", "p.html"]


@pytest.mark.parametrize("setup", [dedup_fifo_file, dedup_fifo_shard, preview_fifo_input], ids=lambda f: f.__name__)
def test_a_fifo_where_dedup_reads_is_refused_at_once(tmp_path, setup):
    """The open blocked in C, deaf to SIGINT and SIGTERM, until SIGKILL."""
    write_params(tmp_path)
    done = run(tmp_path, *setup(tmp_path), timeout=60)
    line = error_line(done.stderr)
    assert done.returncode == 2 and "not a regular file" in line, done.stderr
    assert not (tmp_path / "out.parquet").exists() and not (tmp_path / "p.html").exists()


# ---------------------------------------------------------------- outputs that appear together


def text_source(root: Path, lines: list[str] | None = None) -> None:
    """A text source `notes` ingested and cleaned in `root` (p.parquet, c.parquet). Not deduplicated: its 20,000
    templated lines sit just under dedup's threshold (10.7M candidate pairs, 34 s to verify), and prefilter
    reads a cleaned table as well as a deduplicated one."""
    params = copy.deepcopy(PARAMS)
    params["sources"] = {"notes": {"kind": "text", "path": "raw", "text_only": True, "clean": False}}
    params = naming_its_sources(params)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False), encoding="utf-8")
    (root / "raw").mkdir()
    lines = lines or [f"a red fox number {i} in the snow under a {i % 7} moon, oil painting" for i in range(20_000)]
    (root / "raw" / "prompts.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    for argv in (["ingest", "notes", "p.parquet"], ["clean", "notes", "p.parquet", "c.parquet"]):
        assert run(root, *argv).returncode == 0


def near_duplicates(bases: int = 40, variants: int = 25) -> list[str]:
    """Prompts of 60 words in clusters of `variants` (one word changed): few kept rows, a long preview page
    (its 20 largest clusters' texts, some 240 kB) after the small tables."""
    rng = random.Random(3)
    words = [f"w{i}" for i in range(5000)]
    lines = []
    for _ in range(bases):
        base = [rng.choice(words) for _ in range(60)]
        for _ in range(variants):
            variant = list(base)
            variant[rng.randrange(60)] = rng.choice(words)
            lines.append(" ".join(variant))
    return lines


TOGETHER = [  # command, its input's prompts, a file-size limit the first outputs pass and a later one does not
    pytest.param(  # the same output failing at a smaller size: the slow tier (CI's 10 minutes)
        ["clean", "notes", "p.parquet", "out/o.parquet"], None, 32 * 1024, "o.parquet", marks=pytest.mark.slow
    ),
    (["clean", "notes", "p.parquet", "out/o.parquet"], None, 128 * 1024, "o.parquet"),
    (["prefilter", "notes", "c.parquet", "out/o.parquet"], None, 64 * 1024, "o.parquet"),
    # dedup's kept rows (17 kB), clusters (11 kB) and report fit, the preview page does not
    (["dedup", "notes", "c.parquet", "out/o.parquet"], near_duplicates(), 64 * 1024, "o.preview.html"),
    (["dedup", "notes", "c.parquet", "out/o.parquet"], near_duplicates(), 14 * 1024, "o.parquet"),
    (["dedup", "notes", "c.parquet", "out/o.parquet"], near_duplicates(60, 40), 64 * 1024, "o.preview.html"),
]


@pytest.mark.parametrize(
    "argv, lines, limit, failing",
    fast_first(TOGETHER, keep=3, columns=4),
    ids=[f"{c[0][0]}-{c[2]}-{c[3]}" for c in (getattr(c, "values", c) for c in TOGETHER)],
)
def test_outputs_written_together_appear_together_or_not_at_all(tmp_path, argv, lines, limit, failing):
    """On a full disk the small siblings (`.dropped.parquet`, `.removed.parquet`) were renamed in before the
    main table failed: a new sibling beside no table (or beside the previous run's); dedup's kept rows,
    clusters and report were in place when its preview page failed."""
    text_source(tmp_path, lines)
    (tmp_path / "out").mkdir()
    done = run(tmp_path, *argv, limit=limit)
    line = error_line(done.stderr)
    assert done.returncode == 2 and line.startswith(f"error: out/{failing}: cannot write"), done.stderr
    assert list((tmp_path / "out").iterdir()) == []
    assert leftovers(tmp_path) == []


# ---------------------------------------------------------------- a full disk names what was being written


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EDQUOT, errno.EFBIG], ids=errno.errorcode.get)
def test_a_full_disk_names_the_output_not_the_file_being_copied(tmp_path, code):
    """shutil.copyfile's ENOSPC names its source: `publish --out full/hub` blamed the release's preview.jpg."""
    source = tmp_path / "release" / "preview.jpg"
    error = OSError(code, os.strerror(code), str(source))
    line = os_error_message(error, tmp_path / "hub")
    assert line == f"{tmp_path / 'hub'}: cannot write ({os.strerror(code)})"
    assert os_error_message(OSError(errno.ENOENT, "No such file", str(source)), tmp_path / "hub").startswith(
        str(source)
    )


# ---------------------------------------------------------------- a signal between an output's renames


@pytest.mark.parametrize("after", ["moved aside", "tagged", "moved in"])
def test_a_signal_between_an_outputs_renames_waits_for_the_last_one(tmp_path, after):
    """replace_path renames the old folder aside, tags it, renames the new one in: a Ctrl-C between
    those steps left the output gone and an untagged `.T.tmp-old` the next run refused (CI's flake of
    test_a_signal_stops_a_stage_with_one_line_and_no_leftovers[release-SIGINT]). Now the signal waits."""
    import scripts.lib.io as io
    from scripts.cli import _install_signal_handlers, _restore_signal_handlers
    from scripts.lib.interrupts import Interrupted, forget
    from scripts.lib.temps import is_our_temp

    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "a.txt").write_text("old\n", encoding="utf-8")
    io.mark_folder(tmp_path / "out")
    (tmp_path / "new").mkdir()
    (tmp_path / "new" / "a.txt").write_text("new\n", encoding="utf-8")
    at = {"moved aside": 1, "tagged": 2, "moved in": 3}[after]  # the step the signal lands after
    calls = {"n": 0}
    real = {"replace": os.replace, "mark_temp": io.mark_temp}

    def signalled(name):
        def step(*args, **kwargs):
            result = real[name](*args, **kwargs)
            calls["n"] += 1
            if calls["n"] == at:
                os.kill(os.getpid(), signal.SIGINT)
            return result

        return step

    old = _install_signal_handlers()
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(io.os, "replace", signalled("replace"))
            patch.setattr(io, "mark_temp", signalled("mark_temp"))
            with pytest.raises(Interrupted):
                io.replace_path(tmp_path / "new", tmp_path / "out", is_dir=True)
    finally:
        _restore_signal_handlers(old)
        forget()
    assert (tmp_path / "out" / "a.txt").read_text(encoding="utf-8") == "new\n"  # the renames finished
    assert all(is_our_temp(tmp_path / name) for name in leftovers(tmp_path))  # the next run removes them


# ---------------------------------------------------------------- dedup-preview over what it reads (fifth round)


@pytest.mark.parametrize("table", ["dedup/s.parquet", "clean/s.parquet", "dedup/s.clusters.parquet"])
def test_dedup_preview_refuses_to_write_over_a_table_it_reads(tmp_path, table):
    """`--output data/dedup/S.parquet` wrote the HTML page over the dedup table (exit 0; the next run failed)."""
    write_params(tmp_path)
    (tmp_path / "data" / "clean").mkdir(parents=True)
    (tmp_path / "data" / "dedup").mkdir()
    for name in ("clean/s.parquet", "dedup/s.parquet", "dedup/s.clusters.parquet"):
        (tmp_path / "data" / name).write_bytes(b"PAR1 a table of the user's PAR1")
    before = file_digests(tmp_path)
    done = run(tmp_path, "dedup-preview", "s", "--output", f"data/{table}")
    assert done.returncode == 2 and "the output is the input" in error_line(done.stderr), done.stderr
    assert file_digests(tmp_path) == before
