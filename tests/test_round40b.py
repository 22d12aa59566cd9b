"""Round 40b: sample-data and generate refuse before any work what rounds 36c and 37c left to the end.

1. sample-data judged a file with one of its own names but other bytes (a folder without its marker: a user's
   table under `diffusiondb/metadata.parquet`, an edited `chatgpt/prompts.txt`) only at its final rename, after
   writing the whole sample into a temp folder: it is compared with SEED's sample first, nothing written.
2. generate read a `manifest.parquet` in its image folder that is a link (to /dev/zero, a FIFO, a 1 GB file, a
   manifest elsewhere) before _check_ours' regular-file check: it is refused unread, before the prompts are read
   (each row's input is a FIFO); generate-prune refuses such a manifest in a --keep folder the same way.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from helpers.commands import cli
from helpers.repos import REPO
from helpers.trees import bytes_copy, tree
from helpers.workspace import PARAMS, error_line, write_params
from scripts.lib.marks import MARKER

RAW = REPO / "data" / "raw"
SOURCE = {"notes": {"kind": "text", "path": "raw", "text_only": True, "clean": False}}
NOT_REGULAR = "not a regular file"


# ---------------------------------------------------------------- 1. sample-data: its own names, other bytes


def sample_copy(tmp_path: Path) -> Path:
    """A data/raw as a clone has it: the committed sample's bytes, no extended attribute, no marker."""
    return bytes_copy(RAW, tmp_path / "raw")


OTHER_BYTES = {  # case: (the sample's file the user changed, how, extra argv)
    "a user's table as metadata.parquet": ("diffusiondb/metadata.parquet", lambda b: b"PAR1 mine PAR1", []),
    "prompts.txt with a line added": ("chatgpt/prompts.txt", lambda b: b + b"my own prompt\n", []),
    "manifest.json cut short, another seed": ("laion_buckets/manifest.json", lambda b: b[:-10], ["--seed", "7"]),
    "a shard with one byte flipped": (
        "dalle3/data-000000.tar",
        lambda b: b[:600] + bytes([b[600] ^ 1]) + b[601:],
        [],
    ),
}


@pytest.mark.parametrize("case", OTHER_BYTES)
def test_a_sample_name_with_other_bytes_is_refused_before_the_sample_is_written(tmp_path, monkeypatch, capfd, case):
    import scripts.tools.sample_data as sample_data

    rel, change, argv = OTHER_BYTES[case]
    raw = sample_copy(tmp_path)
    (raw / rel).write_bytes(change((raw / rel).read_bytes()))
    committed = {
        p.relative_to(RAW).as_posix(): p.read_bytes() for p in RAW.rglob("*") if p.name != MARKER and p.is_file()
    }
    monkeypatch.setattr(
        sample_data, "sample_files", lambda seed=sample_data.SEED: committed, raising=False
    )  # SEED's, no 2 s render
    written = []
    monkeypatch.setattr(sample_data, "write_all", lambda output, seed=0, files=None: written.append(output))
    before = tree(tmp_path)
    result = cli(["sample-data", str(raw), *argv], tmp_path, monkeypatch, capfd)
    line = error_line(result.stderr)
    assert result.returncode == 2 and written == [], result.stderr  # before the work: nothing written to a temp
    assert f"holds '{rel}', which this command did not write (not the bytes it writes there)" in line
    assert tree(tmp_path) == before


@pytest.mark.slow
def test_a_sample_name_with_other_bytes_is_refused_on_the_real_sample(tmp_path, monkeypatch, capfd):
    raw = sample_copy(tmp_path)
    (raw / "openprompts" / "openprompts.csv").write_bytes(b"prompt,raw_data\nmine,{}\n")
    before = tree(tmp_path)
    result = cli(["sample-data", str(raw)], tmp_path, monkeypatch, capfd)
    assert (
        result.returncode == 2
        and "holds 'openprompts/openprompts.csv', which this command did not write" in error_line(result.stderr)
    )
    assert tree(tmp_path) == before


def test_an_unchanged_clone_copy_is_still_rewritten(tmp_path, monkeypatch, capfd):
    import scripts.tools.sample_data as sample_data

    raw = sample_copy(tmp_path)
    committed = {
        p.relative_to(RAW).as_posix(): p.read_bytes() for p in RAW.rglob("*") if p.name != MARKER and p.is_file()
    }
    monkeypatch.setattr(sample_data, "sample_files", lambda seed=sample_data.SEED: committed, raising=False)
    result = cli(["sample-data", str(raw)], tmp_path, monkeypatch, capfd)
    assert result.returncode == 0, result.stderr
    assert {rel: (raw / rel).read_bytes() for rel in committed} == committed


# ---------------------------------------------------------------- 2. generate: a manifest.parquet that is a link


def _manifest_link(kind: str, tmp_path: Path) -> Path:
    """Where data/images/notes/manifest.parquet points."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    if kind == "to /dev/zero":
        return Path("/dev/zero")
    if kind == "to a FIFO":
        os.mkfifo(elsewhere / "pipe")
        return elsewhere / "pipe"
    if kind == "to a 1 GB file":
        with open(elsewhere / "big.parquet", "wb") as f:
            f.truncate(1 << 30)  # sparse: no disk, but a read of it is 1 GB
        return elsewhere / "big.parquet"
    table = elsewhere / "manifest.parquet"  # a real generate manifest, listing the user's file
    import pyarrow as pa
    import pyarrow.parquet as pq

    from scripts.lib.render_plan import MANIFEST_COLUMNS

    row = {c: ["x"] for c in MANIFEST_COLUMNS} | {"file": ["mine.txt"], "key": ["0" * 64]}
    pq.write_table(pa.table(row), table)
    return table


LINKS = ["to /dev/zero", "to a FIFO", "to a 1 GB file", "to a manifest elsewhere"]


@pytest.mark.parametrize("kind", LINKS)
def test_generate_refuses_a_linked_manifest_unread(tmp_path, monkeypatch, capfd, kind, fifo_reads_fail):
    ws = tmp_path / "ws"
    out = ws / "data" / "images" / "notes"
    out.mkdir(parents=True)
    write_params(ws, sources=SOURCE)
    os.mkfifo(ws / "p.parquet")
    (out / "manifest.parquet").symlink_to(_manifest_link(kind, tmp_path))
    if kind == "to a manifest elsewhere":
        (out / "mine.txt").write_bytes(b"my own words\n")
    before = tree(ws)
    result = cli(["generate", "notes", "p.parquet", "data/images/notes"], ws, monkeypatch, capfd)
    line = error_line(result.stderr)
    assert result.returncode == 2 and "manifest.parquet" in line and NOT_REGULAR in line, result.stderr
    assert tree(ws) == before


@pytest.mark.parametrize("kind", ["to a FIFO", "to a 1 GB file", "to a manifest elsewhere"])
def test_generate_prune_refuses_a_linked_manifest_of_a_kept_folder(tmp_path, monkeypatch, capfd, kind):
    ws = tmp_path / "ws"
    keep = ws / "data" / "images" / "notes"
    keep.mkdir(parents=True)
    write_params(ws, sources=SOURCE)
    (ws / "store").mkdir()
    (keep / "manifest.parquet").symlink_to(_manifest_link(kind, tmp_path))
    before = tree(ws)
    result = cli(["generate-prune", "--store", "store", "--keep", "data/images/notes"], ws, monkeypatch, capfd)
    line = error_line(result.stderr)
    assert result.returncode == 2 and "manifest.parquet" in line and NOT_REGULAR in line, result.stderr
    assert tree(ws) == before


# ---------------------------------------------------------------- 3. generate: a folder at a store image's name

MODEL_FILES = {
    "model_index.json": {"scheduler": ["diffusers", "DDIMScheduler"]},
    "unet/config.json": {"sample_size": 8},
    "vae/config.json": {"block_out_channels": [4, 4]},
}


def _user_folder_at(path: Path, kind: str) -> None:
    path.mkdir(parents=True)
    if kind != "empty":
        (path / "mine.txt").write_bytes(b"my own words\n")
    if kind == "nested":
        (path / "deeper").mkdir()


STORE_FOLDERS = {  # case: (the store's index lists the image's name, what the folder holds)
    "an empty folder, indexed": (True, "empty"),
    "an empty folder, not indexed": (False, "empty"),
    "a folder holding a file": (False, "file"),
    "a folder holding a folder, indexed": (True, "nested"),
}


@pytest.mark.parametrize("case", STORE_FOLDERS)
def test_generate_refuses_a_folder_at_a_store_image_before_the_model_loads(tmp_path, monkeypatch, capfd, case):
    import json

    import pyarrow as pa
    import pyarrow.parquet as pq

    import scripts.generate as generate

    indexed, kind = STORE_FOLDERS[case]
    for rel, config in MODEL_FILES.items():
        (tmp_path / "models" / "m" / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "models" / "m" / rel).write_text(json.dumps(config), encoding="utf-8")
    write_params(tmp_path, generate={**PARAMS["generate"], "model": "models/m", "height": "model", "width": "model"})
    pq.write_table(pa.table({"id": ["a"], "source": ["s"], "text": ["a fox"]}), tmp_path / "p.parquet")
    planned = generate.plan_jobs

    def plan_with_a_folder(*args, **kwargs):  # the user's folder at the first image's name in the store
        jobs = planned(*args, **kwargs)
        _user_folder_at(tmp_path / "store" / jobs[0].stored, kind)
        if indexed:
            with open(tmp_path / "store" / "index.txt", "a", encoding="utf-8") as index:
                index.write(jobs[0].stored + "\n")
        return jobs

    def no_model(*args, **kwargs):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(generate, "plan_jobs", plan_with_a_folder)
    monkeypatch.setattr(generate, "resolve_device", lambda settings, cuda=None: ("cpu", "float32"))
    monkeypatch.setattr(generate, "load_pipeline", no_model)
    result = cli(["generate", "s", "p.parquet", "out", "--store", "store"], tmp_path, monkeypatch, capfd)
    line = error_line(result.stderr)
    assert result.returncode == 2 and "a folder where the generation store keeps an image" in line, result.stderr
    folder = next(p for p in (tmp_path / "store").glob("??/*") if p.is_dir())
    assert kind == "empty" or (folder / "mine.txt").read_bytes() == b"my own words\n"
