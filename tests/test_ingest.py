"""ingest@S: every reader on files written in the native format by the test, plus the real fixtures."""

from __future__ import annotations

import csv
import datetime as dt
import functools
import http.server
import io
import json
import os
import subprocess
import sys
import tarfile
import threading
import zipfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from helpers import write_tar
from scripts.ingest import ingest, report_path
from scripts.lib.archive import read_image, read_member
from scripts.lib.io import PROMPT_COLUMNS, stable_id
from scripts.lib.params import load_params
from scripts.lib.readers import SourceConfig, compile_simpletuner

REPO = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).resolve().parent / "fixtures"


# ---------------------------------------------------------------- helpers that write native files
def png(width: int = 8, height: int = 8) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (width, height), (200, 30, 30)).save(buf, format="PNG")
    return buf.getvalue()


def jpg(width: int = 8, height: int = 8) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (width, height), (30, 30, 200)).save(buf, format="JPEG")
    return buf.getvalue()


def run_ingest(tmp_path: Path, name: str = "src", **config) -> tuple[list[dict], dict]:
    out = tmp_path / "prompts" / f"{name}.parquet"
    report = ingest(name, SourceConfig(**config), out)
    assert json.loads(report_path(out).read_text()) == report
    table = pq.read_table(out)
    assert table.schema.names == PROMPT_COLUMNS
    return table.to_pylist(), report


# ---------------------------------------------------------------- acceptance 1: the real fixtures
def test_openprompts_fixture_ingests_all_998_rows_byte_equal(tmp_path):
    fixture = FIXTURES / "openprompts-1k.csv"
    with fixture.open(newline="", encoding="utf-8") as f:
        expected = list(csv.DictReader(f))
    assert len(expected) == 998
    params = load_params("sources", REPO / "params.yaml")["openprompts"]
    rows, report = run_ingest(tmp_path, "openprompts", **dict(params, path=str(fixture)))
    assert report["rows_read"] == report["rows_written"] == 998 and report["skipped"] == {}
    assert [r["prompt"].encode("utf-8") for r in rows] == [e["prompt"].encode("utf-8") for e in expected]
    for row, source in zip(rows, expected):
        discord = json.loads(source["raw_data"])["raw_discord_data"]
        meta = json.loads(row["meta"])
        assert meta["seed"] == discord.get("seed")  # absent in some real rows: kept as null
        assert (meta["width"], meta["height"], meta["num_step"], meta["cfg_scale"]) == (
            discord.get("width"),
            discord.get("height"),
            discord.get("num_step"),
            discord.get("cfg_scale"),
        )
    assert sum(json.loads(r["meta"])["seed"] is not None for r in rows) == 908
    assert len({r["id"] for r in rows}) == 998


def test_gpt4_fixture_ingests_all_3057_lines(tmp_path):
    fixture = FIXTURES / "gpt4-prompts-3k.txt"
    rows, report = run_ingest(tmp_path, "chatgpt", kind="text", path=str(fixture))
    lines = fixture.read_text(encoding="utf-8").splitlines()
    assert len(rows) == report["rows_written"] == 3057
    assert [r["prompt"] for r in rows] == lines
    assert {r["split"] for r in rows} == {None} and {r["image"] for r in rows} == {None}


# ---------------------------------------------------------------- one test per reader
def test_text_strips_list_markers_and_line_endings_and_counts_blank_lines(tmp_path):
    src = tmp_path / "raw"
    src.mkdir()
    (src / "a.txt").write_bytes(b"- a red fox in the snow\r\nplain prompt - with dash\n\n-  two spaces kept\n")
    rows, report = run_ingest(tmp_path, kind="text", path=str(src))
    assert [r["prompt"] for r in rows] == ["a red fox in the snow", "plain prompt - with dash", " two spaces kept"]
    assert report["skipped"] == {"blank_line": 1} and report["rows_read"] == 4


def test_openprompts_keeps_generation_settings_in_meta(tmp_path):
    raw = {
        "modifiers": ["x"],
        "raw_discord_data": {
            "seed": 7,
            "width": 512,
            "height": 768,
            "num_step": 50,
            "cfg_scale": 7.5,
            "image_uri": "https://cdn/x.png",
            "content": "",
        },
    }
    path = tmp_path / "op.csv"
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["prompt", "raw_data"])
        w.writerow(['a castle, "quoted",\nsecond line', json.dumps(raw)])
        w.writerow(["no discord data", json.dumps({"modifiers": []})])
    rows, _ = run_ingest(tmp_path, kind="openprompts", path=str(path))
    assert rows[0]["prompt"] == 'a castle, "quoted",\nsecond line'
    assert json.loads(rows[0]["meta"]) == {
        "seed": 7,
        "width": 512,
        "height": 768,
        "num_step": 50,
        "cfg_scale": 7.5,
        "image_uri": "https://cdn/x.png",
        "timestamp": None,
    }
    assert json.loads(rows[1]["meta"])["seed"] is None


def diffusiondb_table(n: int) -> pa.Table:
    ts = dt.datetime(2022, 8, 7, tzinfo=dt.UTC)
    return pa.table(
        {
            "image_name": pa.array([f"img{i}.png" for i in range(n)]),
            "prompt": pa.array([f"prompt number {i}" for i in range(n)]),
            "part_id": pa.array([1 + i % 3 for i in range(n)], pa.uint16()),
            "seed": pa.array(range(n), pa.uint32()),
            "step": pa.array([50] * n, pa.uint16()),
            "cfg": pa.array([7.5] * n, pa.float32()),
            "sampler": pa.array([8] * n, pa.uint8()),
            "width": pa.array([512] * n, pa.uint16()),
            "height": pa.array([768] * n, pa.uint16()),
            "user_name": pa.array(["u"] * n),
            "timestamp": pa.array([ts] * n, pa.timestamp("us", tz="UTC")),
            "image_nsfw": pa.array([0.1] * n, pa.float32()),
            "prompt_nsfw": pa.array([0.2] * n, pa.float32()),
        }
    )


def test_diffusiondb_metadata_streams_in_batches_and_filters_seeded_parts(tmp_path):
    src = tmp_path / "db"
    src.mkdir()
    pq.write_table(diffusiondb_table(30), src / "metadata.parquet", row_group_size=7)
    rows, report = run_ingest(tmp_path, kind="diffusiondb", path=str(src), batch_rows=4)
    assert len(rows) == 30 and pq.ParquetFile(tmp_path / "prompts" / "src.parquet").metadata.num_row_groups == 8
    meta = json.loads(rows[0]["meta"])
    assert meta["cfg"] == 7.5 and meta["prompt_nsfw"] == 0.2 and meta["timestamp"] == "2022-08-07T00:00:00+00:00"
    assert rows[0]["id"] == stable_id("src", "img0.png") and rows[0]["image"] is None
    # num_parts drawn with a seeded RNG, recorded in the report; the same seed gives the same parts
    rows, report = run_ingest(tmp_path, kind="diffusiondb", path=str(src), num_parts=2, part_seed=3, part_id_max=3)
    again = run_ingest(tmp_path, kind="diffusiondb", path=str(src), num_parts=2, part_seed=3, part_id_max=3)[1]
    assert report["part_ids"] == again["part_ids"] and len(report["part_ids"]) == 2
    assert {json.loads(r["meta"])["part_id"] for r in rows} == set(report["part_ids"])


def test_diffusiondb_part_zips_with_part_json(tmp_path):
    src = tmp_path / "db"
    src.mkdir()
    listing = {
        "a.png": {"p": "a red fox", "se": 1, "c": 7.0, "st": 50, "sa": "k_lms"},
        "b.png": {"p": "a blue owl", "se": 2, "c": 9.0, "st": 30, "sa": "ddim"},
    }
    with zipfile.ZipFile(src / "part-000002.zip", "w") as zf:
        zf.writestr("a.png", png(16, 8))
        zf.writestr("b.png", png(8, 16))
        zf.writestr("part-000002.json", json.dumps(listing))
    rows, report = run_ingest(tmp_path, kind="diffusiondb", path=str(src), read="parts")
    assert report["part_ids"] == [2]
    assert [(r["prompt"], r["width"], r["height"]) for r in rows] == [("a red fox", 16, 8), ("a blue owl", 8, 16)]
    assert rows[0]["image"] == f"{src.as_posix()}/part-000002.zip!/a.png"
    assert read_member(rows[1]["image"]) == png(8, 16)
    assert json.loads(rows[0]["meta"])["sampler"] == "k_lms"


def test_gustavosta_parquet_keeps_predefined_split(tmp_path):
    data = tmp_path / "g" / "data"
    data.mkdir(parents=True)
    pq.write_table(pa.table({"Prompt": ["a", "b", "c"]}), data / "train.parquet")
    pq.write_table(pa.table({"Prompt": ["d"]}), data / "eval.parquet")
    rows, report = run_ingest(tmp_path, kind="gustavosta", path=str(tmp_path / "g"), keep_empty=True)
    assert [(r["prompt"], r["split"]) for r in rows] == [
        ("a", "train"),
        ("b", "train"),
        ("c", "train"),
        ("d", "validation"),
    ]
    assert report["format"] == "parquet"


def test_gustavosta_kaggle_csv_with_images(tmp_path):
    src = tmp_path / "g"
    (src / "train_images").mkdir(parents=True)
    (src / "train_images" / "00000000.jpg").write_bytes(jpg(12, 10))
    (src / "train.csv").write_text("Prompt,image_path\na fox in snow,train_images/00000000.jpg\n")
    (src / "eval.csv").write_text("Prompt,image_path\n")
    rows, report = run_ingest(tmp_path, kind="gustavosta", path=str(src))
    assert report["format"] == "kaggle_csv"
    assert [(r["prompt"], r["split"], r["width"], r["height"]) for r in rows] == [("a fox in snow", "train", 12, 10)]
    assert read_image(rows[0]["image"], src).size == (12, 10)


def test_kaggle_sd2_csv_and_row_index_images(tmp_path):
    src = tmp_path / "k"
    src.mkdir()
    (src / "gpt_generated_prompts.csv").write_text("prompt\nfirst prompt here\nsecond prompt here\n")
    (src / "0.png").write_bytes(png(20, 10))
    (src / "1.png").write_bytes(png(10, 20))
    rows, _ = run_ingest(tmp_path, kind="kaggle_sd2", path=str(src))
    assert [(r["prompt"], r["image"], r["width"]) for r in rows] == [
        ("first prompt here", f"{src.as_posix()}/0.png", 20),
        ("second prompt here", f"{src.as_posix()}/1.png", 10),
    ]


def dalle3_record(i: int, **overrides) -> dict:
    record = {
        "image_name": f"{i:04d}.png",
        "md5_pil_hash": "x",
        "md5_file_hash": "y",
        "sha512_hash": "z",
        "short_caption": f"short caption {i}",
        "long_caption": f"long caption {i}",
        "resolution": "8x6",
        "width": 8,
        "height": 6,
        "url": "u",
        "source": "s",
        "original_prompt": "o",
        "short_caption2": ["s2"],
        "long_caption2": ["l2"],
    }
    record.update(overrides)
    return {k: v for k, v in record.items() if v is not None}


def dalle3_shard(path: Path, records: list[dict], fmt=tarfile.USTAR_FORMAT) -> Path:
    members = []
    for rec in records:
        stem = rec["image_name"].rsplit(".", 1)[0]
        members += [(f"{stem}.png", png(8, 6)), (f"{stem}.json", json.dumps(rec).encode())]
    return write_tar(path, members, fmt)


@pytest.mark.parametrize("fmt", [tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT, tarfile.PAX_FORMAT])
def test_dalle3_streams_shards_and_skips_records_without_width(tmp_path, fmt):
    src = tmp_path / "d"
    long_name = "d" * 70 + "/" + "n" * 90  # > 100 bytes: ustar prefix / GNU long name / pax path
    dalle3_shard(
        src / "data-000000.tar",
        [dalle3_record(0), dalle3_record(1, width=None), dalle3_record(2, short_caption="é ünïcode")],
        fmt,
    )
    dalle3_shard(src / "data-000001.tar", [dalle3_record(3, image_name=f"{long_name}.png")], fmt)
    rows, report = run_ingest(tmp_path, kind="dalle3", path=str(src), caption_field="long_caption")
    assert report["skipped"] == {"missing_width": 1} and report["rows_read"] == 4
    assert [r["prompt"] for r in rows] == ["long caption 0", "long caption 2", "long caption 3"]
    assert rows[2]["image"] == f"{src.as_posix()}/data-000001.tar!/{long_name}.png"
    assert read_member(rows[2]["image"]) == png(8, 6) and (rows[0]["width"], rows[0]["height"]) == (8, 6)
    assert json.loads(rows[0]["meta"])["short_caption"] == "short caption 0"


def test_compile_simpletuner_writes_parquet_and_txt_captions(tmp_path):
    shard = dalle3_shard(
        tmp_path / "data-000000.tar", [dalle3_record(0), dalle3_record(1, width=None), dalle3_record(2)]
    )
    stats = compile_simpletuner(
        [shard], tmp_path / "st.parquet", "short_caption", write_txt_dir=tmp_path / "txt", batch_rows=1
    )
    assert stats == {"rows_read": 3, "rows_written": 2, "skipped": {"missing_width": 1}}
    assert pq.read_table(tmp_path / "st.parquet").to_pylist() == [
        {"width": 8, "height": 6, "caption": "short caption 0", "filename": "0000.png"},
        {"width": 8, "height": 6, "caption": "short caption 2", "filename": "0002.png"},
    ]
    assert sorted(p.name for p in (tmp_path / "txt").iterdir()) == [
        ".t2i-output",
        "0000.txt",
        "0002.txt",
    ]  # + ownership marker
    assert (tmp_path / "txt" / "0002.txt").read_text() == "short caption 2"


def test_compile_simpletuner_fail_policy_leaves_no_output(tmp_path):
    bad = json.dumps(dalle3_record(1)).replace("short caption 1", "\\udce9 lone surrogate")
    shard = write_tar(
        tmp_path / "data-000000.tar",
        [
            ("0000.png", png(8, 6)),
            ("0000.json", json.dumps(dalle3_record(0)).encode()),
            ("0001.png", png(8, 6)),
            ("0001.json", bad.encode()),
        ],
    )
    from scripts.lib.errors import DataError

    with pytest.raises(DataError, match="sample '0001'"):
        compile_simpletuner([shard], tmp_path / "st.parquet", write_txt_dir=tmp_path / "txt", on_error="fail")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data-000000.tar"]
    stats = compile_simpletuner([shard], tmp_path / "st.parquet", on_error="skip")
    assert stats["skipped"] == {"not_utf8": 1} and stats["rows_written"] == 1


def test_bucketed_webdataset_reads_manifest_buckets_and_both_size_spellings(tmp_path):
    src = tmp_path / "w"
    write_tar(
        src / "buckets" / "p1216x832" / "shard-000000.tar",
        [
            ("k1.jpg", jpg(12, 8)),
            ("k1.txt", b"a red fox\n"),
            (
                "k1.json",
                json.dumps(
                    {"target_w": 608, "target_h": 416, "bucket_id": "p1216x832", "caption_variant": "short"}
                ).encode(),
            ),
            ("k2.JPG", jpg(12, 8)),
            ("k2.txt", b"an owl at night\n"),
            ("k2.json", json.dumps({"w": 608, "h": 416}).encode()),
        ],
    )
    manifest = {
        "format": "bucketed_shards_v1",
        "base_resolution": 512,
        "divisible": 32,
        "proto_buckets_1024": [{"width": 1216, "height": 832}],
        "buckets": [{"bucket_id": "p1216x832", "shards": ["buckets/p1216x832/shard-000000.tar"]}],
    }
    (src / "manifest.json").write_text(json.dumps(manifest))
    rows, _ = run_ingest(tmp_path, kind="bucketed_webdataset", path=str(src))
    assert [(r["prompt"], r["width"], r["height"]) for r in rows] == [
        ("a red fox", 608, 416),
        ("an owl at night", 608, 416),
    ]
    assert [json.loads(r["meta"])["bucket_id"] for r in rows] == ["p1216x832", "p1216x832"]  # 2nd from the path
    assert read_image(rows[1]["image"], src).size == (12, 8)


# ---------------------------------------------------------------- the embedded sample, ids, bytes
SAMPLE_SOURCES = ["diffusiondb", "chatgpt", "gustavosta", "openprompts", "dalle3", "laion_buckets"]


@pytest.fixture(scope="module")
def sample_outputs(tmp_path_factory):
    """Every source of params.yaml ingested from the committed data/raw (run from the repo root)."""
    if not (REPO / "data" / "raw" / "dalle3").exists():
        pytest.skip("data/raw not generated")
    out = tmp_path_factory.mktemp("prompts")
    sources = load_params("sources", REPO / "params.yaml")
    cwd = os.getcwd()
    os.chdir(REPO)
    try:
        reports = {
            name: ingest(name, SourceConfig(**sources[name]), out / f"{name}.parquet") for name in SAMPLE_SOURCES
        }
    finally:
        os.chdir(cwd)
    return out, reports


def test_sample_sources_all_ingest_with_unique_stable_ids(sample_outputs):
    out, reports = sample_outputs
    expected_min = {
        "diffusiondb": 250,
        "chatgpt": 150,
        "gustavosta": 200,
        "openprompts": 290,
        "dalle3": 25,
        "laion_buckets": 30,
    }
    for name, minimum in expected_min.items():
        table = pq.read_table(out / f"{name}.parquet").to_pylist()
        assert len(table) == reports[name]["rows_written"] >= minimum, name
        assert len({r["id"] for r in table}) == len(table), name
    assert reports["dalle3"]["skipped"] == {"missing_width": 3}
    splits = {r["split"] for r in pq.read_table(out / "gustavosta.parquet").to_pylist()}
    assert splits == {"train", "validation"}


def test_ingest_is_byte_stable_across_runs(sample_outputs, tmp_path):
    out, _ = sample_outputs
    sources = load_params("sources", REPO / "params.yaml")
    cwd = os.getcwd()
    os.chdir(REPO)
    try:
        for name in ("diffusiondb", "dalle3"):
            ingest(name, SourceConfig(**sources[name]), tmp_path / f"{name}.parquet")
            assert (tmp_path / f"{name}.parquet").read_bytes() == (out / f"{name}.parquet").read_bytes()
    finally:
        os.chdir(cwd)


def test_cli_subprocess_writes_table_and_report(tmp_path):
    if not (REPO / "data" / "raw" / "chatgpt").exists():
        pytest.skip("data/raw not generated")
    out = tmp_path / "chatgpt.parquet"
    proc = subprocess.run(
        [sys.executable, "-m", "scripts", "ingest", "chatgpt", str(out)], cwd=REPO, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads((tmp_path / "chatgpt.report.json").read_text())
    assert report["rows_written"] == pq.read_metadata(out).num_rows > 0


# ---------------------------------------------------------------- dvc import-url from loopback HTTP
def test_dvc_import_url_from_a_local_http_server(tmp_path):
    served = tmp_path / "served"
    served.mkdir()
    (served / "prompts.txt").write_text("- a red fox in the snow\na blue owl at night\n")
    handler = functools.partial(QuietHandler, directory=str(served))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    repo = tmp_path / "repo"
    (repo / "data" / "raw" / "chatgpt").mkdir(parents=True)  # import-url needs the target folder
    dvc = [str(Path(sys.executable).with_name("dvc"))]
    try:
        for cmd in (
            ["git", "init", "-q"],
            dvc + ["init", "-q"],
            dvc + ["import-url", f"http://127.0.0.1:{server.server_port}/prompts.txt", "data/raw/chatgpt/prompts.txt"],
        ):
            proc = subprocess.run(
                cmd, cwd=repo, capture_output=True, text=True, timeout=120, env=dict(os.environ, DVC_NO_ANALYTICS="1")
            )
            assert proc.returncode == 0, proc.stderr
    finally:
        server.shutdown()
    assert (repo / "data/raw/chatgpt/prompts.txt.dvc").exists()
    assert "127.0.0.1" in (repo / "data/raw/chatgpt/prompts.txt.dvc").read_text()  # `dvc update` refetches
    rows, _ = run_ingest(tmp_path, kind="text", path=str(repo / "data/raw/chatgpt"))
    assert [r["prompt"] for r in rows] == ["a red fox in the snow", "a blue owl at night"]


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def test_an_interrupt_between_two_column_appends_stays_an_interrupt(tmp_path):
    """A Ctrl-C between two columns' appends leaves the row buffer ragged: it is dropped, not written, so the
    interrupt is what surfaces (it came out as a pyarrow ValueError traceback, exit 1: seen once under load
    in test_interrupts' SIGINT to ingest@chatgpt)."""
    import pyarrow as pa

    from scripts.lib.tables import ParquetRows

    schema = pa.schema([("a", pa.string()), ("b", pa.string())])
    with pytest.raises(KeyboardInterrupt), ParquetRows(tmp_path / "t.parquet", schema, batch_rows=10) as table:
        table.add("x", "y")
        table.columns[0].append("half a row")  # where the signal landed: column a appended, b not yet
        raise KeyboardInterrupt
    with ParquetRows(tmp_path / "u.parquet", schema, batch_rows=2) as table:
        for i in range(5):
            table.add(f"a{i}", f"b{i}")
    assert pa.parquet.read_table(tmp_path / "u.parquet").to_pylist() == [{"a": f"a{i}", "b": f"b{i}"} for i in range(5)]
    assert table.rows == 5
