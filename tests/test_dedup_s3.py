"""dedup@S reads its input straight from S3 (s3://bucket/prefix of parquet shards), on a real S3 server on
loopback (moto, as tests/test_s3_remote.py): the same kept rows, clusters and report as from a local folder
of the same shards, on both engines; a missing prefix or bucket, objects that are not parquet, credentials
written into the location and a dead server are each one line, no output written and no key in any of it
(moto accepts any signature, so a wrong secret is not among them)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from test_dedup_ray import planted
from test_s3_remote import ACCESS_KEY, SECRET_KEY, aws_env, bucket, s3_server  # noqa: F401

REPO = Path(__file__).resolve().parents[1]
OUTPUTS = ("s.parquet", "s.clusters.parquet", "s.report.json", "s.preview.html")


def shards(folder: Path) -> list[Path]:
    """The planted real prompts in three parquet shards (one of two row groups)."""
    texts, ids = planted(240)
    table = pa.table({"id": ids, "text": texts, "n": list(range(len(texts)))})
    folder.mkdir()
    third = len(texts) // 3
    for k in range(3):
        part = table.slice(k * third, third if k < 2 else None)
        pq.write_table(part, folder / f"part-{k}.parquet", row_group_size=max(1, part.num_rows // 2))
    return sorted(folder.iterdir())


def upload(server, bucket_name: str, files: list[Path], prefix: str) -> str:
    client = server.client()
    for file in files:
        client.upload_file(str(file), bucket_name, f"{prefix}/{file.name}")
    return f"s3://{bucket_name}/{prefix}/"


def dedup(
    tmp_path: Path, location: str, out: str, server, engine: str = "local", **env_extra
) -> subprocess.CompletedProcess:
    (tmp_path / "params.yaml").write_text(
        f"dedup: {{threshold: 0.7}}\nruntime: {{engine: {engine}, object_store_mb: 100, partitions: 3}}\n",
        encoding="utf-8",
    )
    env = {**aws_env(with_credentials=True), "PYTHONPATH": str(REPO), "AWS_ENDPOINT_URL": server.endpoint}
    env.update(env_extra)
    command = [sys.executable, "-m", "scripts", "dedup", "s", location, str(tmp_path / out / "s.parquet")]
    (tmp_path / out).mkdir(exist_ok=True)
    return subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)


def written(folder: Path) -> dict[str, bytes]:
    return {name: (folder / name).read_bytes() for name in OUTPUTS}


def no_key_in(*texts: str) -> bool:
    return not any(key in text for text in texts for key in (ACCESS_KEY, SECRET_KEY))


@pytest.mark.parametrize("engine", ["local", pytest.param("ray", marks=pytest.mark.slow)])
def test_an_s3_prefix_dedups_as_the_same_shards_in_a_local_folder(tmp_path, s3_server, bucket, engine):  # noqa: F811
    files = shards(tmp_path / "shards")
    location = upload(s3_server, bucket, files, "clean/s")
    local = dedup(tmp_path, str(tmp_path / "shards"), "from_folder", s3_server, engine)
    remote = dedup(tmp_path, location, "from_s3", s3_server, engine)
    assert local.returncode == 0 and remote.returncode == 0, local.stderr + remote.stderr
    assert written(tmp_path / "from_s3") == written(tmp_path / "from_folder")
    kept = pq.read_table(tmp_path / "from_s3" / "s.parquet")
    assert 0 < kept.num_rows < sum(pq.ParquetFile(f).metadata.num_rows for f in files)  # near-duplicates went
    assert remote.stdout.strip() == local.stdout.strip()
    one_object = dedup(tmp_path, location + "part-1.parquet", "one_object", s3_server, engine)
    assert one_object.returncode == 0, one_object.stderr
    assert pq.read_table(tmp_path / "one_object" / "s.parquet").num_rows < pq.ParquetFile(files[1]).metadata.num_rows
    assert no_key_in(
        remote.stdout, remote.stderr, *(b.decode("utf-8", "replace") for b in written(tmp_path / "from_s3").values())
    )


def test_each_s3_failure_is_one_line_without_output_or_key(tmp_path, s3_server, bucket):  # noqa: F811
    files = shards(tmp_path / "shards")
    location = upload(s3_server, bucket, files, "clean/s")
    client = s3_server.client()
    client.put_object(Bucket=bucket, Key="broken/part-0.parquet", Body=b"not parquet at all")
    client.put_object(Bucket=bucket, Key="notes/readme.txt", Body=b"no shards here")
    cases = {
        "missing prefix": (f"s3://{bucket}/nowhere/", {}, "input not found on S3"),
        "not parquet": (f"s3://{bucket}/broken/", {}, "not a readable parquet file"),
        "key in the location": (
            f"s3://{ACCESS_KEY}:{SECRET_KEY}@{bucket}/clean/s/",
            {},
            "credentials in an S3 location are refused",
        ),
        "dead server": (location, {"AWS_ENDPOINT_URL": "http://127.0.0.1:9"}, "cannot read from S3"),
    }
    for name, (where, env_extra, message) in cases.items():
        out = f"out_{len(os.listdir(tmp_path))}"
        done = dedup(tmp_path, where, out, s3_server, **env_extra)
        assert done.returncode == 2, (name, done.stderr)
        assert done.stderr.strip().count("\n") == 0 and message in done.stderr, (name, done.stderr)
        assert not list((tmp_path / out).iterdir()), name
        assert no_key_in(done.stdout, done.stderr), name


@pytest.mark.parametrize(
    "location, message",
    [
        ("s3://t2i-no-such-bucket/clean/s/", "input not found on S3"),
        ("s3://{bucket}/notes/", "no parquet shards under this S3 prefix"),
        ("s3://{bucket}/clean/../s/", "not an S3 location of the form s3://bucket/key"),
        ("s3:///clean/s/", "not an S3 location of the form s3://bucket/key"),
        ("s3://AKIAEXAMPLE:secret@{bucket}/clean/s/", "credentials in an S3 location are refused"),
    ],
)
def test_shards_of_an_s3_location_or_one_line(location, message, s3_server, bucket, monkeypatch):  # noqa: F811
    from scripts.lib import s3_input
    from scripts.lib.errors import DataError

    for name, value in aws_env(with_credentials=True).items():
        if name.startswith("AWS_"):
            monkeypatch.setenv(name, value)
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_server.endpoint)
    client = s3_server.client()
    client.put_object(Bucket=bucket, Key="notes/readme.txt", Body=b"no shards here")
    client.put_object(Bucket=bucket, Key="clean/s/B.PARQUET", Body=b"x")
    client.put_object(Bucket=bucket, Key="clean/s/a.parquet", Body=b"x")
    client.put_object(Bucket=bucket, Key="clean/s/deeper/c.parquet", Body=b"x")
    assert s3_input.shards(f"s3://{bucket}/clean/s") == [
        f"s3://{bucket}/clean/s/B.PARQUET",
        f"s3://{bucket}/clean/s/a.parquet",
    ]
    with pytest.raises(DataError, match=message) as refused:
        s3_input.shards(location.format(bucket=bucket))
    assert "secret" not in str(refused.value)
