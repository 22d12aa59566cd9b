"""The seventh hostile round's breaks, one table each (every row failed before its fix): a word `scripts`
anywhere in a dvc.lock stage's cmd proved an output to that "command"; a second signal while outputs were
renamed in together ended the process half way; outputs checked only at the start were renamed in one by
one though a user had put a file in place since; an API key pasted into params went out in the request body
and into the cache. Real processes, real files, a loopback server."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from test_chat_round6 import Server, completion, json_reply, run_stage

from helpers.repos import REPO
from helpers.tiers import fast_first
from helpers.workspace import error_line
from helpers.workspace import run_scripts as run

# ---------------------------------------------------------------- a stage's cmd names the command it runs

CMDS = {  # a dvc.lock stage cmd that runs no `params-doc` of ours, though the words are in it
    "the words in an echo": "cat draft.md > NOTES.md && echo regenerate with python -m scripts params-doc",
    "the words after a shell comment": "cat draft.md > NOTES.md # was: python -m scripts params-doc",
    "scripts as an argument": "tar -c scripts params-doc > NOTES.md",
    "in a list, after an echo": ["echo python -m scripts params-doc", "cp draft.md NOTES.md"],
}


def locked_notes(root: Path, cmd) -> None:
    (root / ".dvc").mkdir()
    (root / "NOTES.md").write_text("my hand-written release notes\n", encoding="utf-8")
    md5 = hashlib.md5((root / "NOTES.md").read_bytes(), usedforsecurity=False).hexdigest()
    lock = {"schema": "2.0", "stages": {"notes": {"cmd": cmd, "outs": [{"path": "NOTES.md", "md5": md5}]}}}
    (root / "dvc.lock").write_text(yaml.safe_dump(lock), encoding="utf-8")


@pytest.mark.parametrize("cmd", CMDS.values(), ids=CMDS)
def test_a_locked_output_is_the_command_its_stage_runs_not_a_word_in_it(tmp_path, cmd):
    locked_notes(tmp_path, cmd)
    done = run(tmp_path, "params-doc", "NOTES.md")
    assert done.returncode == 2 and "cannot prove" in error_line(done.stderr), done.stderr
    assert (tmp_path / "NOTES.md").read_text(encoding="utf-8") == "my hand-written release notes\n"


def test_a_stage_that_runs_the_command_proves_its_output(tmp_path):
    locked_notes(tmp_path, "cp draft.md x && python3 -m scripts params-doc NOTES.md")
    assert run(tmp_path, "params-doc", "NOTES.md").returncode == 0


# ---------------------------------------------------------------- a second signal while outputs go in

SECOND_SIGNAL = """
import os, signal, sys
from pathlib import Path
import scripts.lib.io as io
from scripts.cli import _install_signal_handlers
from scripts.lib.interrupts import Interrupted
from scripts.lib.marks import mark_file
root = Path(sys.argv[1])
pairs = []
for name in ("a.txt", "b.txt", "c.txt"):
    for side, text in (("out", "old"), ("new", "new")):
        (root / side).mkdir(exist_ok=True)
        (root / side / name).write_text(text, encoding="utf-8")
        mark_file(root / side / name)
    pairs.append((root / "new" / name, root / "out" / name))
calls, real = [0], os.replace
def replace(a, b):
    real(a, b)
    calls[0] += 1
    if calls[0] == int(sys.argv[2]):  # an impatient user: Ctrl-C, then Ctrl-C again
        os.kill(os.getpid(), signal.SIGINT)
        os.kill(os.getpid(), signal.SIGINT)
io.os.replace = replace
_install_signal_handlers()
try:
    io.replace_together(pairs)
except Interrupted:
    print(sorted((root / "out" / n).read_text(encoding="utf-8") for n in ("a.txt", "b.txt", "c.txt")))
"""


@pytest.mark.parametrize("at", [1, 3, 5])
def test_a_second_signal_while_outputs_go_in_waits_too(tmp_path, at):
    """`interrupted again: stopping now` ended the process between the renames: entries gone, their old
    copies untagged, and every later run refused them."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [sys.executable, "-c", SECOND_SIGNAL, str(tmp_path), str(at)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0 and done.stdout.strip() == "['new', 'new', 'new']", done.stdout + done.stderr
    from scripts.lib.temps import is_our_temp

    assert all(is_our_temp(p) for p in (tmp_path / "out").iterdir() if ".tmp-" in p.name)  # the next run's to delete


# ---------------------------------------------------------------- outputs checked again before any goes in


@pytest.mark.parametrize("users, link", [("a.txt", False), ("b.txt", False), ("a.txt", True)], ids=["a", "b", "a link"])
def test_an_output_a_user_put_in_place_since_the_start_stops_every_rename(tmp_path, users, link):
    """clean checked its three outputs at the start; a user's file put at one of them while it ran was
    refused only when its turn came, after the others were renamed in: a new report beside an old table."""
    from scripts.lib.errors import DataError
    from scripts.lib.io import atomic_path, commit_together

    for name in ("a.txt", "b.txt", "c.txt"):
        with atomic_path(tmp_path / name) as tmp:
            tmp.write_text("old\n", encoding="utf-8")
    with pytest.raises(DataError, match="cannot prove|symbolic link"), contextlib.ExitStack() as stack:
        temps = [stack.enter_context(atomic_path(tmp_path / name)) for name in ("a.txt", "b.txt", "c.txt")]
        for tmp in temps:
            tmp.write_text("new\n", encoding="utf-8")
        (tmp_path / users).unlink()
        (tmp_path / "mine.txt").write_text("the user's\n", encoding="utf-8")
        if link:
            (tmp_path / users).symlink_to("mine.txt")
        else:
            (tmp_path / "mine.txt").rename(tmp_path / users)
        commit_together(stack)
    texts = {name: (tmp_path / name).read_text(encoding="utf-8") for name in ("a.txt", "b.txt", "c.txt")}
    assert texts == {name: "the user's\n" if name == users else "old\n" for name in texts}


# ---------------------------------------------------------------- an API key in the request body

KEY = "0f3a9c7e5b1d4a8f9e2c6b0d7a5f3e1c"  # 32 hex characters (an Azure key's shape: on no shape list)
IN_BODY = {
    "pasted into fixed_examples": {"fixed_examples": [f"hyper realistic photo {KEY}"]},
    "upper-cased in fixed_examples": {"fixed_examples": [f"a photo, {KEY.upper()}"]},
    "as an extra_body value": {"extra_body": {"user": KEY}},
}


@pytest.mark.parametrize("overrides", IN_BODY.values(), ids=IN_BODY)
def test_a_key_in_the_request_body_is_never_sent_or_cached(tmp_path, monkeypatch, capfd, overrides):
    with Server(json_reply(completion())) as server:
        result = run_stage(tmp_path, monkeypatch, capfd, "synthesize", server.base_url, key=KEY, **overrides)
    assert result.returncode == 2 and "API key" in result.stderr and KEY not in result.stderr, result.stderr
    assert server.bodies == []
    texts = [p.read_text(encoding="utf-8") for p in (tmp_path / "out").rglob("*") if p.is_file()]
    assert not any(KEY in t.lower() for t in texts), json.dumps(texts)[:500]


# ---------------------------------------------------------------- inputs: repeated columns, cut tars, long CSV lines

MEMORY = 1 << 30  # a command that held a whole 1 GB input would fail under this, not pass


def gustavosta_repeated_prompt(root: Path) -> list[str]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    (root / "raw" / "data").mkdir(parents=True)
    table = pa.Table.from_arrays([pa.array(["a red fox"]), pa.array(["a blue boat"])], names=["Prompt", "Prompt"])
    pq.write_table(table, root / "raw" / "data" / "train.parquet")
    pq.write_table(pa.table({"Prompt": ["c"]}), root / "raw" / "data" / "eval.parquet")
    write_params_sources(root, {"s": {"kind": "gustavosta", "path": "raw", "on_error": "skip"}})
    return ["ingest", "s", "out/s.parquet"]


def csv_header_repeats_prompt(root: Path) -> list[str]:
    """A header `prompt,prompt`: the last column's value was taken without a word."""
    (root / "raw").mkdir()
    (root / "raw" / "p.csv").write_text("prompt,prompt,raw_data\na red fox,a blue boat,{}\n", encoding="utf-8")
    write_params_sources(root, {"c": {"kind": "openprompts", "path": "raw", "on_error": "fail"}})
    return ["ingest", "c", "out.parquet"]


def dedup_repeated(column: str):
    def make(root: Path) -> list[str]:
        import pyarrow as pa
        import pyarrow.parquet as pq

        ids, texts = pa.array(["a", "b"]), pa.array(["a red fox", "a blue boat"])
        names = ["id", "text", column]
        pq.write_table(
            pa.Table.from_arrays([ids, texts, ids if column == "id" else texts], names=names), root / "in.parquet"
        )
        write_params_sources(root, {})
        return ["dedup", "s", "in.parquet", "out.parquet"]

    make.__name__ = f"dedup_repeated_{column}"
    return make


def write_params_sources(root: Path, sources: dict) -> None:
    from helpers.workspace import write_params

    write_params(root, sources=sources)


@pytest.mark.parametrize(
    "make",
    [gustavosta_repeated_prompt, csv_header_repeats_prompt, dedup_repeated("id"), dedup_repeated("text")],
    ids=lambda f: f.__name__,
)
def test_a_column_named_twice_is_one_line(tmp_path, make):
    """pyarrow writes a table with a column name twice; looking the column up was a KeyError traceback."""
    argv = make(tmp_path)
    done = run(tmp_path, *argv)
    assert done.returncode == 2 and "appears twice" in error_line(done.stderr), done.stderr


def dalle3_shards(root: Path, cut: str) -> None:
    """The sample's first DALL-E-3 shard, cut: to nothing, after a member (no end blocks), or a copy beside
    an empty shard."""
    shard = sorted((REPO / "data" / "raw" / "dalle3").glob("*.tar"))[0]
    data = shard.read_bytes()
    (root / "raw").mkdir()
    body = data.rstrip(b"\0")
    end = (len(body) + 511) // 512 * 512  # the last member's data, padded to its block: no end-of-archive blocks
    (root / "raw" / "a.tar").write_bytes({"empty": b"", "after a member": data[:end], "beside an empty one": data}[cut])
    if cut == "beside an empty one":
        (root / "raw" / "b.tar").write_bytes(b"")
    write_params_sources(
        root, {"d": {"kind": "dalle3", "path": "raw", "on_error": "fail", "caption_field": "short_caption"}}
    )


@pytest.mark.parametrize("cut", ["empty", "after a member", "beside an empty one"])
def test_a_tar_shard_cut_short_is_never_read_as_whole(tmp_path, cut):
    """A 0-byte shard, or one cut right after a member, was read as complete: rows lost, exit 0, nothing counted."""
    dalle3_shards(tmp_path, cut)
    done = run(tmp_path, "ingest", "d", "out.parquet")
    assert done.returncode == 2 and "tar" in error_line(done.stderr), done.stdout + done.stderr
    assert not (tmp_path / "out.parquet").exists()


def sparse_csv(root: Path, header: bool) -> None:
    (root / "raw").mkdir()
    path = root / "raw" / "p.csv"
    with open(path, "wb") as f:
        if header:
            f.write(b"prompt,raw_data\na red fox,{}\n")
        f.truncate(f.tell() + (1 << 30))  # 1 GB of holes, no newline: nothing on disk


CSVS = {  # (source kind, a header first)
    "openprompts, no newline at all": ("openprompts", False),
    "openprompts, a long line after good ones": ("openprompts", True),
    "kaggle_sd2, no newline at all": ("kaggle_sd2", False),
}


@pytest.mark.parametrize("kind, header", fast_first([pytest.param(*row, id=name) for name, row in CSVS.items()]))
def test_a_csv_line_without_end_is_one_line_in_flat_memory(tmp_path, kind, header):
    """csv.reader took the file's lines whole: a 10 GB sparse CSV grew to 21 GB of memory."""
    sparse_csv(tmp_path, header)
    write_params_sources(tmp_path, {"c": {"kind": kind, "path": "raw", "on_error": "fail"}})
    done = run(tmp_path, "ingest", "c", "out.parquet", memory=MEMORY, timeout=120)
    assert done.returncode == 2 and "longer than" in error_line(done.stderr), done.stderr
