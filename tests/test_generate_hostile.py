"""generate as a hostile user meets it: a second run on the same folder, an output that is a link, names
with escape codes, a full disk; and the model builders on a full disk. One line each, nothing of the
user's touched, no temp file left (found by the third hostile round: each row failed before)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pandas as pd
import pytest
import yaml

from scripts.generate import generate, prune_generation_store
from scripts.lib.errors import DataError
from scripts.lib.image_store import store_lock
from scripts.lib.params import Generate
from scripts.lib.temps import output_lock
from tests.helpers.tiers import fast_first
from tests.helpers.trees import file_digests
from tests.helpers.workspace import REPO, error_line, leftovers, run_scripts

TEXTS = ["a lighthouse at night", "a red fox in the snow", "an owl on a branch"]


def prompts() -> pd.DataFrame:
    return pd.DataFrame({"id": [f"row{i}" for i in range(len(TEXTS))], "text": TEXTS, "prompt": TEXTS})


def settings(model: Path) -> Generate:
    return Generate(model=str(model), steps=2, batch_size=1)


def cli(root: Path, *argv: str, limit: int | None = None) -> subprocess.CompletedProcess:
    return run_scripts(root, *argv, limit=limit, timeout=600)


def stage_repo(root: Path, model: Path) -> None:
    params = {"generate": {"model": str(model), "steps": 2, "batch_size": 1}}
    (root / "params.yaml").write_text(yaml.safe_dump(params), encoding="utf-8")
    prompts().to_parquet(root / "in.parquet")


# ---------------------------------------------------------------- a second run on the same folder


@pytest.mark.parametrize("spelling", ["out", "out/", "./sub/../out", "lnk/../out"])
def test_a_second_generate_on_the_same_folder_fails_at_once(tiny_model_dir, tmp_path, monkeypatch, spelling):
    """Two runs on one folder both went on, and the folder was wedged: each pruned or listed the other's
    files, and every later run refused it ("holds ..., which generate did not write")."""
    (tmp_path / "sub").mkdir()
    (tmp_path / "a").mkdir()
    (tmp_path / "lnk").symlink_to("a")  # lnk/.. is the kernel's tmp_path: the same folder as out
    monkeypatch.chdir(tmp_path)
    with (
        output_lock(tmp_path / "out"),
        pytest.raises(DataError, match="another run is writing it"),
    ):  # as a run holds it
        generate(prompts(), settings(tiny_model_dir), Path(spelling))
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
    generate(prompts(), settings(tiny_model_dir), Path(spelling))  # the lock went with its holder
    assert len(list((tmp_path / "out").rglob("*.jpg"))) == 3 and leftovers(tmp_path) == []


# ---------------------------------------------------------------- an output that is a link


def _link_to_a_folder(tmp_path: Path) -> None:
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("my notes\n", encoding="utf-8")
    (tmp_path / "out").symlink_to("mine")


def _link_to_an_empty_folder(tmp_path: Path) -> None:
    (tmp_path / "mine").mkdir()
    (tmp_path / "out").symlink_to(tmp_path / "mine")


def _link_to_nowhere(tmp_path: Path) -> None:
    (tmp_path / "out").symlink_to("mine")  # generate made the folder it names


@pytest.mark.parametrize(
    "make", [_link_to_a_folder, _link_to_an_empty_folder, _link_to_nowhere], ids=lambda f: f.__name__
)
def test_an_output_folder_that_is_a_link_is_refused(tiny_model_dir, tmp_path, make):
    make(tmp_path)
    before = file_digests(tmp_path)
    with pytest.raises(DataError, match="is a symbolic link"):
        generate(prompts(), settings(tiny_model_dir), tmp_path / "out")
    assert file_digests(tmp_path) == before and (tmp_path / "out").is_symlink()
    assert not (tmp_path / "mine").exists() or sorted(os.listdir(tmp_path / "mine")) in ([], ["notes.txt"])


# ---------------------------------------------------------------- names with escape codes


ESCAPES = ["\x1b]0;pwned\x07", "\x1b[2J", "\x9b31m", "\r\x1b[1A"]


@pytest.mark.parametrize("escape", fast_first(ESCAPES), ids=repr)
def test_escape_codes_in_names_never_reach_the_terminal(tiny_model_dir, tmp_path, escape):
    """The success line and the progress lines printed a source or file name raw: a title change, a
    cleared screen, a line rewritten above."""
    stage_repo(tmp_path, tiny_model_dir)
    done = cli(tmp_path, "generate", f"src{escape}", "in.parquet", f"o{escape}")
    assert done.returncode == 0, done.stderr
    (tmp_path / f"in{escape}.txt").write_text("a red fox\n", encoding="utf-8")
    cleaned = cli(tmp_path, "clean-text", f"in{escape}.txt", "o.jsonl", "--rules", "final")
    assert cleaned.returncode == 0, cleaned.stderr
    missing = cli(tmp_path, "clean-text", f"gone{escape}.txt", "o2.jsonl")
    assert missing.returncode == 2 and "gone" in error_line(missing.stderr)
    for text in (done.stdout, done.stderr, cleaned.stdout, cleaned.stderr, missing.stderr):
        assert not any((ord(c) < 32 and c != "\n") or 0x7F <= ord(c) < 0xA0 for c in text), repr(text)
    assert "generate@src\\x1b" in done.stdout or "generate@src\\x9b" in done.stdout or "\\r" in done.stdout


# ---------------------------------------------------------------- a full disk


@pytest.mark.parametrize("limit", fast_first([1_000, 300, 2_000]))
def test_a_full_disk_while_rendering_is_one_line_naming_an_image_with_no_temp_left(tiny_model_dir, tmp_path, limit):
    """`error: File too large` named no file, and each writer thread left its temp image behind."""
    stage_repo(tmp_path, tiny_model_dir)
    done = cli(tmp_path, "generate", "demo", "in.parquet", "out", limit=limit)
    line = error_line(done.stderr)
    assert done.returncode == 2 and line.startswith("error: out/") and "too large" in line.lower(), done.stderr
    assert leftovers(tmp_path) == [] and not [p for p in (tmp_path / "out").rglob("*") if ".tmp-" in p.name]


@pytest.mark.parametrize(
    "command, limit",
    fast_first(
        [
            ("tiny-model", 64 * 1024),
            ("tiny-encoder", 64 * 1024),
            ("tiny-encoder", 4 * 1024),
            ("tiny-encoder", 200 * 1024),
        ],
        keep=2,
        columns=2,
    ),
)
def test_a_full_disk_while_a_model_is_saved_is_one_line(tmp_path, command, limit):
    """safetensors reports a failed write as its own exception ("... File too large (os error 27)"): a traceback."""
    (tmp_path / "params.yaml").write_bytes((REPO / "params.yaml").read_bytes())
    done = cli(tmp_path, command, "models/m", limit=limit)
    line = error_line(done.stderr)
    assert done.returncode == 2 and line == "error: models/m: cannot write (File too large)", done.stderr
    assert not (tmp_path / "models" / "m").exists() and leftovers(tmp_path) == []


# ---------------------------------------------------------------- generate-prune beside generate


@pytest.mark.parametrize("keep", ["all", "the other output", "nothing kept"])
def test_generate_prune_waits_for_no_one_while_a_generate_run_uses_the_store(tiny_model_dir, tmp_path, keep):
    """generate-prune deleted images a running generate had just linked (the store had no lock)."""
    store = tmp_path / "store"
    generate(prompts(), settings(tiny_model_dir), tmp_path / "a", store=store)
    generate(prompts().iloc[:1], settings(tiny_model_dir), tmp_path / "b", store=store)
    before = file_digests(store)
    kept = {"all": None, "the other output": [tmp_path / "b"], "nothing kept": []}[keep]
    with store_lock(store):  # as a generate run holds it
        with pytest.raises(DataError, match="a generate run is using it"):
            prune_generation_store(store, kept, everything=kept is None)
        generate(prompts(), settings(tiny_model_dir), tmp_path / "c", store=store)  # runs share it
    assert file_digests(store) == before
    assert prune_generation_store(store, [tmp_path / "b"])["removed"] == 2  # the lock went with its holder


@pytest.mark.parametrize("output", ["a", "fresh", "nested/out"])
def test_generate_fails_at_once_while_generate_prune_prunes_the_store(tiny_model_dir, tmp_path, output):
    store = tmp_path / "store"
    generate(prompts(), settings(tiny_model_dir), tmp_path / "a", store=store)
    with store_lock(store, exclusive=True), pytest.raises(DataError, match="generate-prune is pruning it"):
        generate(prompts(), settings(tiny_model_dir), tmp_path / output, store=store)
    assert output == "a" or not (tmp_path / output).exists() or not any((tmp_path / output).iterdir())
