"""Round 18: the breaks this hostile round found in `runtime.engine: ray` and dedup's s3:// input, one table per
class (every row failed before its fix), on real files, real servers on loopback and runs of the command:

1. An S3 server (or a proxy in front of it) whose error quotes the request's headers put the AWS credentials on
   dedup's error line: the session token (`x-amz-security-token`, sent as it is) and the access key id (in
   `Authorization`), as written, upper-cased or reversed, from a listing, a footer or a row group's read; an
   endpoint written with `user:secret@` (AWS_ENDPOINT_URL) was quoted as the host the SDK could not resolve.
   Every S3 failure's line is redacted of the environment's credentials (s3_input.redact_credentials), and an
   endpoint with credentials is refused in one line, as a location with them is.
2. dedup@S on a folder of shards whose columns differ (another column, one fewer, another order, `n` int64 in one
   and string in the other, `text` large_string, an empty shard whose columns pandas typed null) was a pyarrow
   traceback (exit 1) when the rows were joined or the kept rows written, on both engines (Ray's after starting
   Ray), or cast the values to the first shard's type without a word. Each shard's columns are checked against
   the first's, by name, order and type, as it is opened: one line naming the shard and the first difference,
   before Ray starts (stage_input.check_same_columns).
3. dedup@S on Ray over an input of no rows held in row groups (an empty shard as pyarrow and pandas write it: one
   row group of 0 rows; two of them; one beside a file of no row groups) was a KeyError traceback (exit 1) after
   the run: Ray hands a block of no rows back as a table of no columns, and the ids of the removed rows were read
   from it (on_ray._ids_of). Blocks of no rows are left out: the local engine's bytes, as an input of no row
   groups already gave.
4. A shard of dedup@S's input rewritten in place (same size), replaced by a rename, added, or removed while the
   stage ran (a second pipeline, a sync job), or an s3:// object overwritten, gave exit 0 with outputs of two inputs
   at once: the decisions from the old rows, the kept rows or the preview read from the new ones (a rewrite in
   place: the kept rows of the new file under the old clusters), and DVC would lock them against the new input's
   hash. The input's state (each shard's name, device, inode, size and modification time; an object's size and
   modification time) is taken before the run and checked again before the outputs go in: one line, nothing
   written (stage_input.input_state / check_unchanged).
5. (found, not fixed: Ray 2.60's C++ core worker's `core_worker.cc` line beside clean@S's output on Ray at exit 0;
   a filter on file descriptor 2 was tried and left out, see docs/guarantees.md "Not proven")
6. dedup@S on `s3://bucket/clean/s/` (a prefix: its trailing slash) read the object `clean/s` when the bucket held
   one beside the prefix (S3 allows both): its rows in place of the shards', silently when it was parquet, or an
   error naming a file the user never meant. A location ending in `/` is a prefix only (s3_input._shard_infos).
7. clean@S on Ray asked Ray Data for an actor pool larger than the blocks it had (an input of 0 or 1 rows on a
   2-CPU machine, `runtime.partitions: 1`): Ray Data's 2-line UserWarning (`The minimum number of concurrent actors
   for 'MapBatches(BatchCleaner)' is set to 2, but the operator only received 1 input(s) ...`) beside the output at
   exit 0. The pool is never larger than the blocks (cleaning.on_ray.outcome_batches; generate's pool the same,
   render_ray.render_on_ray).
"""

from __future__ import annotations

import http.server
import os
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from test_s3_remote import aws_env, bucket, s3_server  # noqa: F401

from helpers import REPO, cli
from helpers.tiers import fast_first
from helpers.workspace import error_line, leftovers
from scripts.lib.ray_checks import blocks_note

# --- 1. AWS credentials quoted back by an S3 server ----------------------------------------------------------

ACCESS_KEY = "AKIAR18" + "Q" * 13  # made-up credentials, each long enough to be matched in any case and form
SECRET_KEY = "r18-secret-" + "s3cr3t" * 5
SESSION_TOKEN = "r18sessiontoken" + "T0k3n" * 6
OBJECT = "shards/part-0.parquet"


def parquet_bytes(path: Path) -> bytes:
    """A parquet file larger than the 64 KiB pyarrow reads for its footer: a row group's read is a GET of its own."""
    rng = __import__("random").Random(18)
    texts = ["".join(rng.choices("abcdefghijklmnopqrstuvwxyz ", k=120)) for _ in range(2000)]
    pq.write_table(pa.table({"id": [f"r{i}" for i in range(2000)], "text": texts}), path)
    return path.read_bytes()


class EchoingS3(http.server.BaseHTTPRequestHandler):
    """Serves one object (HEAD, ranged GET); a listing, or a GET of bytes before the footer, is a 403 whose
    message quotes the request's credentials in `echo`'s form."""

    body = b""
    echo = staticmethod(lambda token, auth: "")

    def do_HEAD(self) -> None:
        if self.path.split("?")[0] != f"/b/{OBJECT}":
            return self._reply(404, b"")
        self._reply(200, b"", length=len(self.body))

    def do_GET(self) -> None:
        found = re.match(r"bytes=(\d+)-(\d+)", self.headers.get("Range", ""))
        footer = len(self.body) - 65536
        if self.path.split("?")[0] == f"/b/{OBJECT}" and found and int(found.group(1)) >= footer:
            lo, hi = int(found.group(1)), int(found.group(2))
            return self._reply(206, self.body[lo : hi + 1])
        said = self.echo(self.headers.get("x-amz-security-token", ""), self.headers.get("Authorization", ""))
        error = f"<?xml version='1.0'?><Error><Code>AccessDenied</Code><Message>denied: {said}</Message></Error>"
        self._reply(403, error.encode(), kind="application/xml")

    def _reply(self, status: int, data: bytes, length: int | None = None, kind: str = "binary/octet-stream") -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(data) if length is None else length))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def echoing_s3(tmp_path) -> Iterator[type[EchoingS3]]:
    handler = type("Handler", (EchoingS3,), {"body": parquet_bytes(tmp_path / "object.parquet")})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    handler.endpoint = f"http://127.0.0.1:{server.server_address[1]}"  # type: ignore[attr-defined]
    yield handler
    server.shutdown()
    server.server_close()


# row -> (the location, what the server quotes of (token, Authorization), AWS_ENDPOINT_URL's userinfo or None)
ECHO_ROWS = {
    "listing-token-as-is": ("s3://b/shards/", lambda token, auth: token, None),
    "listing-token-upper-cased": ("s3://b/shards/", lambda token, auth: token.upper(), None),
    "listing-token-reversed": ("s3://b/shards/", lambda token, auth: token[::-1], None),
    "listing-authorization-lower-cased": ("s3://b/shards/", lambda token, auth: auth.lower(), None),
    "row-group-read-token-upper-cased": (f"s3://b/{OBJECT}", lambda token, auth: token.upper(), None),
    "row-group-read-authorization": (f"s3://b/{OBJECT}", lambda token, auth: auth, None),
    "endpoint-with-key-id-and-secret": ("s3://b/shards/", lambda token, auth: "", f"{ACCESS_KEY}:{SECRET_KEY}"),
    "endpoint-with-key-id": ("s3://b/shards/", lambda token, auth: "", ACCESS_KEY),
    "endpoint-with-secret-only": ("s3://b/shards/", lambda token, auth: "", f":{SECRET_KEY}"),
}


def secrets_in(text: str) -> list[str]:
    low = text.lower()
    forms = [form for key in (ACCESS_KEY, SECRET_KEY, SESSION_TOKEN) for form in (key.lower(), key.lower()[::-1])]
    return [form for form in forms if form in low]


@pytest.mark.parametrize("row", ECHO_ROWS)
def test_no_aws_credential_reaches_an_s3_error_line(tmp_path, monkeypatch, capfd, echoing_s3, row):
    location, echo, userinfo = ECHO_ROWS[row]
    echoing_s3.echo = staticmethod(echo)
    endpoint = echoing_s3.endpoint  # type: ignore[attr-defined]
    if userinfo is not None:
        endpoint = endpoint.replace("://", f"://{userinfo}@")
    for name, value in {
        "AWS_ACCESS_KEY_ID": ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
        "AWS_SESSION_TOKEN": SESSION_TOKEN,
        "AWS_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_EC2_METADATA_DISABLED": "true",
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
    (tmp_path / "params.yaml").write_text("dedup: {threshold: 0.7}\n", encoding="utf-8")
    (tmp_path / "out").mkdir()
    result = cli(["dedup", "s", location, "out/s.parquet"], tmp_path, monkeypatch, capfd)
    assert result.returncode == 2, result.stderr
    line = error_line(result.stderr)
    assert not secrets_in(result.stdout + result.stderr), line
    if userinfo is None:  # the server's own words still come through, the credentials' places starred
        assert "AccessDenied" in line or "ACCESS_DENIED" in line, line
    else:
        assert (
            line
            == "error: AWS_ENDPOINT_URL: credentials in an S3 endpoint are refused; set them in the AWS environment"
        )
    assert not list((tmp_path / "out").iterdir()) and not leftovers(tmp_path)


# --- 2. shards whose columns differ ------------------------------------------------------------------------


def shard(rows: int, first: int = 0, **columns) -> pa.Table:
    """`rows` distinct texts (`id`, `text`), ids from `first`, with `columns` (name -> a function of rows) after."""
    numbers = range(first, first + rows)
    table = pa.table({"id": [f"r{i}" for i in numbers], "text": [f"a photo of thing {i} in a field" for i in numbers]})
    for name, values in columns.items():
        table = table.append_column(name, values(rows))
    return table


# row -> (first shard, second shard): each a traceback or a silent cast before
SCHEMA_ROWS = {
    "another-column": (shard(40), shard(40, 40, n=lambda n: pa.array(range(n)))),
    "one-column-fewer": (shard(40, n=lambda n: pa.array(range(n))), shard(40, 40)),
    "column-order": (
        shard(40, n=lambda n: pa.array(range(n))),
        shard(40, 40, n=lambda n: pa.array(range(n))).select(["n", "text", "id"]),
    ),
    "int-then-string": (
        shard(40, n=lambda n: pa.array(range(n))),
        shard(40, 40, n=lambda n: pa.array([str(i) for i in range(n)])),
    ),
    "large-string-text": (shard(40), shard(40, 40).cast(pa.schema([("id", pa.string()), ("text", pa.large_string())]))),
    "empty-shard-typed-null": (shard(40), pa.table({"id": pa.array([], pa.null()), "text": pa.array([], pa.null())})),
}


def sharded_input(root: Path, first: pa.Table, second: pa.Table) -> None:
    (root / "in").mkdir()
    pq.write_table(first, root / "in" / "part-0.parquet")
    pq.write_table(second, root / "in" / "part-1.parquet")
    (root / "out").mkdir()


@pytest.mark.parametrize("row", SCHEMA_ROWS)
def test_shards_whose_columns_differ_are_one_line(tmp_path, monkeypatch, capfd, row):
    sharded_input(tmp_path, *SCHEMA_ROWS[row])
    (tmp_path / "params.yaml").write_text("dedup: {threshold: 0.7}\n", encoding="utf-8")
    result = cli(["dedup", "s", "in", "out/s.parquet"], tmp_path, monkeypatch, capfd)
    assert result.returncode == 2, result.stderr
    assert error_line(result.stderr).startswith("error: in/part-1.parquet: its columns differ from the first shard's: ")
    assert not list((tmp_path / "out").iterdir()) and not leftovers(tmp_path)


def test_shards_with_the_same_columns_still_dedup_as_one_table(tmp_path, monkeypatch, capfd):
    n = lambda n: pa.array(range(n))  # noqa: E731
    sharded_input(tmp_path, shard(40, n=n), shard(0, 40, n=n).cast(shard(1, n=n).schema))  # an empty second shard
    (tmp_path / "params.yaml").write_text("dedup: {threshold: 0.7}\n", encoding="utf-8")
    result = cli(["dedup", "s", "in", "out/s.parquet"], tmp_path, monkeypatch, capfd)
    assert result.returncode == 0, result.stderr
    assert pq.read_table(tmp_path / "out" / "s.parquet").num_rows == 40


@pytest.mark.slow
@pytest.mark.parametrize("row", ["another-column", "int-then-string", "large-string-text"])
def test_shards_whose_columns_differ_are_one_line_before_ray_starts(tmp_path, row):
    sharded_input(tmp_path, *SCHEMA_ROWS[row])
    (tmp_path / "params.yaml").write_text(
        "dedup: {threshold: 0.7}\nruntime: {engine: ray, object_store_mb: 100, partitions: 3}\n", encoding="utf-8"
    )
    command = [sys.executable, "-m", "scripts", "dedup", "s", "in", "out/s.parquet"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2, result.stderr
    assert error_line(result.stderr).startswith("error: in/part-1.parquet: its columns differ from the first shard's: ")
    assert not list((tmp_path / "out").iterdir()) and not leftovers(tmp_path)


# --- 3. an input of empty row groups on Ray --------------------------------------------------------------

EMPTY = pa.schema([("id", pa.string()), ("text", pa.string()), ("n", pa.int64())])


def no_row_groups(path: Path) -> None:
    pq.ParquetWriter(path, EMPTY).close()


# row -> what writes the input folder's shards: each a KeyError traceback on Ray before
EMPTY_ROWS = {
    "one-empty-row-group": lambda folder: pq.write_table(EMPTY.empty_table(), folder / "a.parquet"),
    "two-empty-shards": lambda folder: [pq.write_table(EMPTY.empty_table(), folder / f"{k}.parquet") for k in "ab"],
    "empty-and-no-row-groups": lambda folder: (
        pq.write_table(EMPTY.empty_table(), folder / "a.parquet"),
        no_row_groups(folder / "b.parquet"),
    ),
}
OUTPUTS = ("s.parquet", "s.clusters.parquet", "s.report.json", "s.preview.html")


def dedup_run(root: Path, engine: str, out: str) -> subprocess.CompletedProcess:
    (root / "params.yaml").write_text(
        f"dedup: {{threshold: 0.7}}\nruntime: {{engine: {engine}, object_store_mb: 100, partitions: 3}}\n",
        encoding="utf-8",
    )
    (root / out).mkdir()
    command = [sys.executable, "-m", "scripts", "dedup", "s", "in", f"{out}/s.parquet"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(command, cwd=root, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
@pytest.mark.parametrize("row", EMPTY_ROWS)
def test_an_input_of_empty_row_groups_dedups_on_ray_as_locally(tmp_path, row):
    (tmp_path / "in").mkdir()
    EMPTY_ROWS[row](tmp_path / "in")
    local, ray = dedup_run(tmp_path, "local", "local"), dedup_run(tmp_path, "ray", "ray")
    assert local.returncode == 0, local.stderr
    assert ray.returncode == 0, ray.stderr
    assert local.stdout == "dedup s: 0 rows -> 0 kept, 0 removed\n"
    # since round 42b Ray first says that runtime.partitions: 3 is one block for 0 rows
    assert ray.stdout.splitlines() == [blocks_note("partitions=3", 0, 3, 1), local.stdout.strip()]
    for name in OUTPUTS:
        assert (tmp_path / "ray" / name).read_bytes() == (tmp_path / "local" / name).read_bytes(), name


# --- 4. an input that changes during the run ---------------------------------------------------------------


def texts_table(word: str, rows: int = 60) -> pa.Table:
    """`rows` texts, each pair near-duplicates (dedup removes half), `word` in each: same size for any 3 letters."""
    texts = [f"a {word} photo of thing {i // 2} standing in a field at dawn" for i in range(rows)]
    return pa.table({"id": [f"r{i}" for i in range(rows)], "text": texts})


def rewrite_in_place(folder: Path) -> None:
    pq.write_table(texts_table("blu"), folder / "part-0.parquet")  # same size, same inode


def replace_by_rename(folder: Path) -> None:
    pq.write_table(texts_table("blu"), folder / "new.tmp")
    os.replace(folder / "new.tmp", folder / "part-0.parquet")


def add_a_shard(folder: Path) -> None:
    pq.write_table(texts_table("new", 4), folder / "part-2.parquet")


def remove_a_shard(folder: Path) -> None:
    (folder / "part-1.parquet").unlink()


CHANGE_ROWS = {
    "rewritten-in-place": rewrite_in_place,
    "replaced-by-rename": replace_by_rename,
    "shard-added": add_a_shard,
    "shard-removed": remove_a_shard,
}


def change_while_running(monkeypatch, change) -> None:
    """`change` runs once the kept rows are written, before the preview reads the input (dedup.preview_page)."""
    import scripts.dedup

    original = scripts.dedup.preview_page

    def preview_page(*args):
        change()
        return original(*args)

    monkeypatch.setattr(scripts.dedup, "preview_page", preview_page)


@pytest.mark.parametrize("row", CHANGE_ROWS)
def test_an_input_that_changes_during_the_run_is_one_line(tmp_path, monkeypatch, capfd, row):
    (tmp_path / "in").mkdir()
    pq.write_table(texts_table("red"), tmp_path / "in" / "part-0.parquet")
    pq.write_table(
        texts_table("big").slice(0, 10).set_column(0, "id", pa.array([f"s{i}" for i in range(10)])),
        tmp_path / "in" / "part-1.parquet",
    )
    (tmp_path / "out").mkdir()
    (tmp_path / "params.yaml").write_text("dedup: {threshold: 0.7}\n", encoding="utf-8")
    change_while_running(monkeypatch, lambda: CHANGE_ROWS[row](tmp_path / "in"))
    result = cli(["dedup", "s", "in", "out/s.parquet"], tmp_path, monkeypatch, capfd)
    assert result.returncode == 2, result.stderr
    assert error_line(result.stderr) == (
        "error: in: the input changed during the run (a shard written, added or removed); run again"
    )
    assert not list((tmp_path / "out").iterdir()) and not leftovers(tmp_path)


def test_an_s3_object_overwritten_during_the_run_is_one_line(tmp_path, monkeypatch, capfd, s3_server, bucket):  # noqa: F811
    for name, value in aws_env(with_credentials=True).items():
        if name.startswith("AWS_"):
            monkeypatch.setenv(name, value)
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_server.endpoint)
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
    pq.write_table(texts_table("red"), tmp_path / "a.parquet")
    pq.write_table(texts_table("other", 80), tmp_path / "b.parquet")
    client = s3_server.client()
    client.upload_file(str(tmp_path / "a.parquet"), bucket, "in/part-0.parquet")
    (tmp_path / "out").mkdir()
    (tmp_path / "params.yaml").write_text("dedup: {threshold: 0.7}\n", encoding="utf-8")
    change_while_running(
        monkeypatch, lambda: client.upload_file(str(tmp_path / "b.parquet"), bucket, "in/part-0.parquet")
    )
    result = cli(["dedup", "s", f"s3://{bucket}/in/", "out/s.parquet"], tmp_path, monkeypatch, capfd)
    assert result.returncode == 2, result.stderr
    assert error_line(result.stderr) == (
        f"error: s3://{bucket}/in/: the input changed during the run (a shard written, added or removed); run again"
    )
    assert not list((tmp_path / "out").iterdir()) and not leftovers(tmp_path)


def test_an_input_left_alone_during_the_run_is_deduped(tmp_path, monkeypatch, capfd):
    (tmp_path / "in").mkdir()
    pq.write_table(texts_table("red"), tmp_path / "in" / "part-0.parquet")
    (tmp_path / "out").mkdir()
    (tmp_path / "params.yaml").write_text("dedup: {threshold: 0.7}\n", encoding="utf-8")
    change_while_running(monkeypatch, lambda: os.utime(tmp_path / "in"))  # the folder's own times change nothing
    result = cli(["dedup", "s", "in", "out/s.parquet"], tmp_path, monkeypatch, capfd)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "dedup s: 60 rows -> 30 kept, 30 removed\n"


def clean_on_ray(root: Path, runtime: dict, rows: int | None = None) -> subprocess.CompletedProcess:
    """clean t_gpt4 on Ray over the 3,057 GPT-4 prompts (the first `rows` of them, if given)."""
    from helpers.ray_runs import ray_workspace, write_numbered_prompts

    fixtures = Path(__file__).resolve().parent / "fixtures"
    ray_workspace(root, fixtures, {"engine": "ray", "object_store_mb": 100, **runtime})
    prompts = write_numbered_prompts(root, fixtures, 1)
    if rows is not None:
        pq.write_table(pq.read_table(prompts).slice(0, rows), prompts)
    command = [sys.executable, "-m", "scripts", "clean", "t_gpt4", "in.parquet", "out/t_gpt4.parquet"]
    env = {**os.environ, "PYTHONPATH": str(REPO), "T2I_PROGRESS_EVERY_S": "3600"}
    return subprocess.run(command, cwd=root, env=env, capture_output=True, text=True, timeout=300)


# --- 6. a trailing slash on an s3:// location --------------------------------------------------------------

# row -> (the location's tail after the bucket, the object named like the prefix): each read that object before
SLASH_ROWS = {
    "parquet-object-beside-the-prefix": ("clean/s/", "parquet"),
    "text-object-beside-the-prefix": ("clean/s/", b"a note, not parquet"),
    "empty-object-beside-the-prefix": ("clean/s/", b""),
    "two-slashes": ("clean/s//", "parquet"),
}


@pytest.mark.parametrize("row", fast_first(SLASH_ROWS, keep=2))
def test_a_location_ending_in_a_slash_is_the_prefix_not_an_object(tmp_path, monkeypatch, capfd, s3_server, bucket, row):  # noqa: F811
    tail, beside = SLASH_ROWS[row]
    for name, value in aws_env(with_credentials=True).items():
        if name.startswith("AWS_"):
            monkeypatch.setenv(name, value)
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_server.endpoint)
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
    pq.write_table(
        texts_table("red", 50).set_column(1, "text", pa.array([f"text {i}" for i in range(50)])),
        tmp_path / "shard.parquet",
    )
    pq.write_table(texts_table("other", 3), tmp_path / "other.parquet")
    client = s3_server.client()
    client.upload_file(str(tmp_path / "shard.parquet"), bucket, "clean/s/part-0.parquet")
    body = (tmp_path / "other.parquet").read_bytes() if beside == "parquet" else beside
    client.put_object(Bucket=bucket, Key="clean/s", Body=body)
    (tmp_path / "out").mkdir()
    (tmp_path / "params.yaml").write_text("dedup: {threshold: 0.7}\n", encoding="utf-8")
    result = cli(["dedup", "s", f"s3://{bucket}/{tail}", "out/s.parquet"], tmp_path, monkeypatch, capfd)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "dedup s: 50 rows -> 50 kept, 0 removed\n"
    assert pq.read_table(tmp_path / "out" / "s.parquet").column("text").to_pylist() == [f"text {i}" for i in range(50)]


# --- 7. an actor pool larger than its blocks ---------------------------------------------------------------

# row -> (runtime, rows): each printed Ray Data's UserWarning of a pool it could not fill, at exit 0
POOL_ROWS = {
    "no-rows": ({"workers": 2}, 0),
    "one-row": ({"workers": 2}, 1),
    "one-partition": ({"workers": 2, "partitions": 1}, None),
}


@pytest.mark.slow
@pytest.mark.parametrize("row", POOL_ROWS)
def test_clean_on_ray_asks_for_no_more_actors_than_blocks(tmp_path, row):
    runtime, rows = POOL_ROWS[row]
    result = clean_on_ray(tmp_path, runtime, rows)
    assert result.returncode == 0, result.stderr
    assert "Warning" not in result.stderr and "warnings.warn" not in result.stderr, result.stderr
    kept = 3057 if rows is None else rows
    assert f"{kept} rows in, {kept} kept" in result.stdout + result.stderr
