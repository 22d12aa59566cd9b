"""Round 20: the breaks this hostile round found, one table per class (every row failed before its fix), on real
files and runs of the command:

1. A prompt's length was capped for a text source's line and a WebDataset `.txt` caption only
   (`sources.S.max_prompt_bytes`, 64 KiB): a DALL-E-3 json caption, a DiffusionDB or Gustavosta parquet prompt and
   a CSV cell (the csv module's limit is 131,072 characters, up to 512 KiB of UTF-8) went into the prompt table
   whole at exit 0, and on into clean's regular expressions and dedup's shingles. Every kind's prompt is now
   checked in the one record check (text_lines.prompt_too_long), and `max_prompt_bytes` is a key of every kind.
2. `generate.preset` of a list or a mapping (`dvc exp run -S 'generate.preset=[fast]'`) was looked up as a dict
   key before validation: a TypeError traceback from every stage that reads params.yaml. It is now validated as
   any other value, one line naming the key (params.generate.preset_values).
3. A bucketed export's manifest.json whose bucket is no mapping (`"buckets": {"b1": ["shard.tar"]}`, or a list of
   names) was passed over: its shards' rows lost at exit 0, and a manifest of such buckets only read as one listing
   nothing, so every buckets/*/shard-*.tar was read, those it did not name too. Now one line naming the bucket
   (readers.webdataset.manifest_buckets).
4. runtime.engine ray: ray.init installs its own SIGTERM handler (`sys.exit(signum)`) for its duration, so a SIGTERM to
   dedup's process (`kill PID`) while Ray started ended it at exit 15 with no line, not `interrupted (SIGTERM)` and
   143 (round 13d put the command's handlers back after ray.init only). ray_engine.rays_sigterm_exit tells Ray's exit
   from any other; the command stops as on its own SIGTERM.
"""

from __future__ import annotations

import copy
import io
import json
import os
import signal
import subprocess
import sys
import tarfile
import time

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from helpers.children import start_child
from helpers.commands import cli
from helpers.repos import REPO
from helpers.workspace import PARAMS, PNG, error_line, ingest_source, write_params

# ---------------------------------------------------------------- 1. every kind's prompt is capped

LONG = "a red fox " * 7_000  # 70,000 bytes: over the default cap of 65,536, under the csv module's 131,072 characters


def tar_of(members: list[tuple[str, bytes]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def parquet_of(columns: dict) -> bytes:
    buf = io.BytesIO()
    pq.write_table(pa.table(columns), buf)
    return buf.getvalue()


def dalle3(prompt: str) -> tuple[dict, dict[str, bytes]]:
    record = {"width": 1, "height": 1, "short_caption": prompt}
    return {"kind": "dalle3", "images": "data/raw/s"}, {
        "data-000000.tar": tar_of([("k1.png", PNG), ("k1.json", json.dumps(record).encode())])
    }


def diffusiondb(prompt: str) -> tuple[dict, dict[str, bytes]]:
    row = {"image_name": ["k1.png"], "prompt": [prompt], "part_id": [1], "seed": [1], "step": [50], "cfg": [7.0]}
    row |= {"sampler": ["k_lms"], "width": [512], "height": [512], "user_name": ["u"], "timestamp": ["2022-08-01"]}
    row |= {"image_nsfw": [0.1], "prompt_nsfw": [0.1]}
    return {"kind": "diffusiondb", "images": "data/images/s"}, {"metadata.parquet": parquet_of(row)}


def gustavosta(prompt: str) -> tuple[dict, dict[str, bytes]]:
    return {"kind": "gustavosta", "images": "data/images/s"}, {"data/train.parquet": parquet_of({"Prompt": [prompt]})}


def openprompts(prompt: str) -> tuple[dict, dict[str, bytes]]:
    return {"kind": "openprompts", "images": "data/images/s"}, {"o.csv": f'prompt,raw_data\n{prompt},"{{}}"\n'.encode()}


LONG_PROMPTS = {  # a source of one prompt of LONG, by kind
    "a DALL-E-3 json caption": dalle3,
    "a DiffusionDB metadata.parquet prompt": diffusiondb,
    "a Gustavosta parquet prompt": gustavosta,
    "an OpenPrompts CSV cell": openprompts,
}


@pytest.mark.parametrize("case", LONG_PROMPTS)
def test_a_prompt_over_max_prompt_bytes_is_refused_whatever_its_kind(tmp_path, monkeypatch, capfd, case):
    """70,000 bytes of prompt went into data/prompts/s.parquet at exit 0; now one line naming the cap."""
    source, files = LONG_PROMPTS[case](LONG)
    result, rows = ingest_source(tmp_path, monkeypatch, capfd, {**source, "on_error": "fail"}, files)
    line = error_line(result.stderr)
    assert result.returncode == 2 and rows is None, result.stderr
    assert "70,000 bytes, over max_prompt_bytes (65,536)" in line, line


@pytest.mark.parametrize("case", list(LONG_PROMPTS)[:2])
def test_a_prompt_within_max_prompt_bytes_is_kept_and_the_cap_is_a_key_of_every_kind(
    tmp_path, monkeypatch, capfd, case
):
    """The same prompt under a raised cap is read whole (the key was refused for these kinds); under `skip` a long
    one is counted as prompt_too_long."""
    source, files = LONG_PROMPTS[case](LONG)
    result, rows = ingest_source(tmp_path, monkeypatch, capfd, {**source, "max_prompt_bytes": 70_000}, files)
    assert result.returncode == 0 and rows is not None and [r["prompt"] for r in rows] == [LONG], result.stderr
    result, rows = ingest_source(tmp_path, monkeypatch, capfd, {**source, "on_error": "skip"}, {})
    report = json.loads((tmp_path / "data" / "prompts" / "s.report.json").read_text())
    assert result.returncode == 0 and rows == [] and report["skipped"] == {"prompt_too_long": 1}, result.stderr


# ---------------------------------------------------------------- 2. generate.preset of another shape


@pytest.mark.parametrize("preset", [[], ["fast"], {}, {"fast": 1}])
def test_a_generate_preset_that_is_no_name_is_one_line(tmp_path, monkeypatch, capfd, preset):
    """`-S 'generate.preset=[fast]'`: `TypeError: unhashable type: 'list'`, a traceback from any stage."""
    write_params(tmp_path, generate={**PARAMS["generate"], "preset": preset})
    (tmp_path / "p.txt").write_text("a red fox\n", encoding="utf-8")
    result = cli(["clean-text", "p.txt", "out.jsonl"], tmp_path, monkeypatch, capfd)
    line = error_line(result.stderr)
    assert result.returncode == 2 and line.startswith("error: params.yaml: generate.preset: "), result.stderr
    assert "'fast' or 'reference'" in line and not (tmp_path / "out.jsonl").exists()


# ---------------------------------------------------------------- 3. a manifest's bucket that is no mapping


def sample(key: str) -> list[tuple[str, bytes]]:
    meta = json.dumps({"target_w": 512, "target_h": 512}).encode()
    return [(f"{key}.png", PNG), (f"{key}.txt", b"a red fox\n"), (f"{key}.json", meta)]


BUCKETS = {  # manifest.json's `buckets` -> the bucket named in the line
    "a bucket of a list of shard names beside a good one": (
        {"b1": ["buckets/b1/shard-000000.tar"], "b2": {"shards": ["buckets/b2/shard-000000.tar"]}},
        "bucket 'b1' is a list",
    ),
    "a list of bucket names": (["b1", "b2"], "bucket 0 is a str"),
    "a bucket of null": ({"b1": None}, "bucket 'b1' is a NoneType"),
    "a list holding a number": ([{"shards": ["buckets/b1/shard-000000.tar"]}, 5], "bucket 1 is a int"),
}


@pytest.mark.parametrize("case", BUCKETS)
def test_a_manifest_bucket_that_is_no_mapping_is_one_line(tmp_path, monkeypatch, capfd, case):
    """The bucket was passed over at exit 0: its shards' rows lost, or every shard of buckets/ read instead."""
    buckets, named = BUCKETS[case]
    files = {"manifest.json": json.dumps({"format": "bucketed_shards_v1", "buckets": buckets}).encode()}
    files |= {f"buckets/{b}/shard-000000.tar": tar_of(sample(f"k{b}")) for b in ("b1", "b2")}
    source = {"kind": "bucketed_webdataset", "images": "data/raw/s", "on_error": "skip"}
    result, rows = ingest_source(tmp_path, monkeypatch, capfd, source, files)
    line = error_line(result.stderr)
    assert result.returncode == 2 and rows is None, result.stderr
    assert line.startswith("error: data/raw/s/manifest.json: ") and named in line, line
    assert "expected a mapping holding its shards" in line


def test_a_manifest_of_mappings_still_reads_every_listed_shard(tmp_path, monkeypatch, capfd):
    """The fix refuses only what is no mapping: both shapes a manifest takes still list their shards."""
    files = {f"buckets/{b}/shard-000000.tar": tar_of(sample(f"k{b}")) for b in ("b1", "b2")}
    source = {"kind": "bucketed_webdataset", "images": "data/raw/s"}
    for buckets in (
        {b: {"shards": [f"buckets/{b}/shard-000000.tar"]} for b in ("b1", "b2")},
        [{"shards": [{"path": f"buckets/{b}/shard-000000.tar"}]} for b in ("b1", "b2")],
    ):
        manifest = {"manifest.json": json.dumps({"format": "bucketed_shards_v1", "buckets": buckets}).encode()}
        result, rows = ingest_source(tmp_path, monkeypatch, capfd, copy.deepcopy(source), files | manifest)
        assert result.returncode == 0 and rows is not None and len(rows) == 2, result.stderr


# ---------------------------------------------------------------- 4. SIGTERM while ray.init runs


def test_only_rays_own_sigterm_exit_is_taken_for_a_sigterm():
    """Ray's handler is told apart by its module: a SystemExit(15) of anything else, or Ray's of another code, stays."""
    from scripts.lib.ray_engine import rays_sigterm_exit

    def ray_handler(signum, frame):
        raise SystemExit(signum)

    ray_handler.__module__ = "ray._private.worker"
    assert rays_sigterm_exit(SystemExit(signal.SIGTERM), ray_handler)
    assert not rays_sigterm_exit(SystemExit(signal.SIGTERM), signal.SIG_DFL)  # a command's own sys.exit(15)
    assert not rays_sigterm_exit(SystemExit(2), ray_handler)
    assert not rays_sigterm_exit(KeyboardInterrupt(), ray_handler)


def session_has(session: int, name: str) -> bool:
    found = subprocess.run(["pgrep", "-s", str(session), "-f", name], capture_output=True, text=True).stdout
    return bool(found.split())


@pytest.mark.slow
@pytest.mark.parametrize("started", ["gcs_server", "raylet", "runtime_env/agent"])  # moments of ray.init (~10 s each)
def test_a_sigterm_to_dedup_while_ray_starts_is_143_and_one_line(tmp_path, started):
    """`kill PID` of dedup on Ray once `started` runs (ray.init still working): exit 15, stderr empty, before."""
    texts = [f"a red fox number {i % 700} jumps over {i}" for i in range(4000)]
    table = pa.table({"id": [str(i) for i in range(4000)], "text": texts, "source": ["s"] * 4000})
    pq.write_table(table, tmp_path / "in.parquet")
    (tmp_path / "params.yaml").write_text(
        "dedup: {threshold: 0.7}\nruntime: {engine: ray, object_store_mb: 100, partitions: 3}\n", encoding="utf-8"
    )
    (tmp_path / "out").mkdir()
    argv = [
        sys.executable,
        "-m",
        "scripts",
        "dedup",
        "s",
        str(tmp_path / "in.parquet"),
        str(tmp_path / "out" / "s.parquet"),
    ]
    process = start_child(argv, cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(REPO)})
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None and not session_has(process.pid, started):
        time.sleep(0.02)
    assert process.poll() is None, "the run ended before the SIGTERM"
    os.kill(process.pid, signal.SIGTERM)  # the command alone, as `kill PID` sends it
    _, err = process.communicate(timeout=120)
    err = err.decode() if isinstance(err, bytes) else err
    assert process.returncode == 143 and err.strip() == "interrupted (SIGTERM)", (process.returncode, err)
    assert not list((tmp_path / "out").iterdir())
    deadline = time.monotonic() + 10
    while session_has(process.pid, "") and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not session_has(process.pid, ""), "processes of the run still alive"
