"""The eighth hostile round's publish breaks, each row the real command against a loopback Hub.

09 a secret in HF_ENDPOINT's user:password@ (or an HF_TOKEN holding a newline) reached the error line
10 a Hub trickling its reply held publish forever: the timeouts restarted at every byte
11 the reply cap counted compressed bytes: a small gzip reply inflated past it
25 shards were planned from rows.parquet's image_nbytes: a wrong value made one shard of every image
21 an HF_* variable huggingface_hub int()s at import, or any library failing while imported: a traceback
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import json
import os
import subprocess
import sys
import time
import zlib
from pathlib import Path

import pytest
from test_publish import FakeHub, tiny_release

from helpers import REPO, Loopback, env
from helpers.tiers import fast_first

TOKEN = "hf_round8LOOPBACKtoken0123456789abc"
STUB = (  # only the git-tag check is stubbed: it needs a tagged DVC history, the Hub client is what is tested
    "import sys; import scripts.tools.publish as p; p.check_tag = lambda tag, name: 'c' * 40\n"
    "from scripts.cli import main; sys.exit(main(sys.argv[1:]))"
)


class HostileHub(FakeHub):
    """FakeHub (test_publish), but POST /api/repos/create answers as `mode` says."""

    mode = "normal"

    def _handle(self) -> None:
        if self.path.split("?")[0] != "/api/repos/create" or self.mode == "normal":
            return super()._handle()
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.requests.append((self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, b""))
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # the client gave up first
            getattr(self, f"_{self.mode.partition(':')[0]}")()

    do_GET = do_POST = do_PUT = do_PATCH = _handle  # FakeHub's are bound to its own _handle

    def _status(self) -> None:  # status:NNN, the Authorization header echoed as the error
        self._reply(int(self.mode.partition(":")[2]), {"error": f"bad token {self.headers.get('Authorization')}"})

    def _drip_body(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "100000")
        self.end_headers()
        self._drip(lambda: self.wfile.write(b" "))

    def _drip_headers(self) -> None:
        self.wfile.write(b"HTTP/1.1 200 OK\r\n")
        self._drip(lambda: self.wfile.write(b"X-Slow: x\r\n"))

    def _drip_chunks(self) -> None:
        self.send_response(200)
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        self._drip(lambda: self.wfile.write(b"1\r\n \r\n"))

    def _drip(self, send) -> None:
        for _ in range(120):  # a byte every 0.4 s: each read well inside the 2 s timeout
            send()
            self.wfile.flush()
            time.sleep(0.4)

    def _encoded(self) -> None:  # encoded:NAME: valid JSON, inflating past the 16 MiB cap (or not: small)
        name = self.mode.partition(":")[2]
        url = f"http://{self.headers['Host']}/datasets/a/b"
        pad = 64 if name == "small" else 20 << 20
        raw = json.dumps({"url": url}).encode()[:-1] + b" " * pad + b"}"
        body, header = {
            "gzip": (gzip.compress(raw), "gzip"),
            "deflate": (zlib.compress(raw), "deflate"),
            "gzip-twice": (gzip.compress(gzip.compress(raw)), "gzip, gzip"),
            "small": (gzip.compress(raw), "gzip"),
        }[name]
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Encoding", header)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def hub():
    """start(mode) -> (endpoint, handler class with its recorded requests); every server closed after."""
    servers = []

    def start(mode: str):
        handler = type("Hub", (HostileHub,), {"mode": mode, "requests": [], "files": {}})
        servers.append(Loopback(handler))
        return servers[-1].base_url.removesuffix("/v1"), handler

    yield start
    for server in servers:
        server.close()


def hub_env(tmp_path: Path, **extra: str) -> dict:
    environ = {k: v for k, v in env().items() if not k.startswith("HF_")}
    environ.update(
        PYTHONPATH=str(REPO),
        HF_HOME=str(tmp_path / "hf-home"),
        HF_HUB_DISABLE_TELEMETRY="1",
        HF_HUB_DOWNLOAD_TIMEOUT="20",  # a loaded machine is slow; the trickle rows set 2
        HF_TOKEN=TOKEN,
        NO_PROXY="127.0.0.1",
        no_proxy="127.0.0.1",
    )
    environ.update(extra)
    return environ


def publish(root: Path, environ: dict, *args: str, timeout: float = 60) -> tuple[subprocess.CompletedProcess, float]:
    """The real publish (git-tag check stubbed) in `root`; the result and the seconds it took."""
    started = time.monotonic()
    try:
        result = subprocess.run(
            [sys.executable, "-c", STUB, "publish", "v2", "--repo-id", "a/b", "--out", "hub", *args],
            cwd=root,
            env=environ,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"publish still running after {timeout} s")
    return result, time.monotonic() - started


def one_error_line(result: subprocess.CompletedProcess, *secrets: str) -> str:
    lines = result.stderr.splitlines()
    assert result.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), result.stderr[-3000:]
    for secret in secrets:
        assert secret.lower() not in (result.stdout + result.stderr).lower(), secret
    return lines[0]


# ------------------------------------------------------------ 09. no URL userinfo, no token, in any line

USERINFO = {
    "password_on_401": ("http://u:hf_USERINFOsecret77@{host}", "status:401", {}, ["hf_USERINFOsecret77"]),
    "token_as_user_on_404": ("http://hf_TOKENasUSERname1234@{host}", "status:404", {}, ["hf_TOKENasUSERname1234"]),
    "encoded_password_on_500": ("http://me:p%40ss-Word-9876x@{host}", "status:500", {}, ["p%40ss-Word-9876x"]),
    "password_in_capitals_on_502": ("HTTP://ME:SeCrEtPaSs4242@{host}", "status:502", {}, ["secretpass4242"]),
    # a token with a line break: the header is refused, and its error quoted the token's short part
    "token_then_a_newline_and_a_short_part": ("http://{host}", "normal", {"HF_TOKEN": TOKEN + "\nzq9x7"}, ["zq9x7"]),
    "token_then_crlf_and_a_short_part": ("http://{host}", "normal", {"HF_TOKEN": TOKEN + "\r\nZq9Pw"}, ["zq9pw"]),
    "short_token_then_a_newline": (
        "http://{host}",
        "normal",
        {"HF_TOKEN": "hf_short\nSECONDpartSECRET99x"},
        ["hf_short", "SECONDpartSECRET99x"],
    ),
}


@pytest.mark.parametrize(
    "endpoint, mode, extra, secrets",
    fast_first([pytest.param(*row, id=name) for name, row in USERINFO.items()], keep=4),
)
def test_09_no_secret_of_the_endpoint_or_token_in_the_line(tmp_path, hub, endpoint, mode, extra, secrets):
    root = tiny_release(tmp_path / "repo")
    base, _handler = hub(mode)
    environ = hub_env(tmp_path, HF_ENDPOINT=endpoint.format(host=base.removeprefix("http://")), **extra)
    result, _ = publish(root, environ)
    one_error_line(result, TOKEN, *secrets)


# ------------------------------------------------------------ 10. every request has an overall deadline

DRIPS = {"body": "drip_body", "headers": "drip_headers", "chunked_body": "drip_chunks"}


@pytest.mark.parametrize("mode", fast_first([pytest.param(mode, id=name) for name, mode in DRIPS.items()], keep=2))
def test_10_a_trickling_hub_ends_at_the_deadline_in_one_line(tmp_path, hub, mode):
    root = tiny_release(tmp_path / "repo")
    endpoint, handler = hub(mode)
    result, took = publish(root, hub_env(tmp_path, HF_ENDPOINT=endpoint, HF_HUB_DOWNLOAD_TIMEOUT="2"), timeout=45)
    line = one_error_line(result, TOKEN)
    assert "HF_HUB_DOWNLOAD_TIMEOUT" in line and took < 25, (line, took)
    assert len(handler.requests) == 1  # the first request ended it: nothing sent after


# ------------------------------------------------------------ 11. replies are taken uncompressed only

ENCODED = {
    "gzip_inflating_past_the_cap": "encoded:gzip",
    "deflate_inflating_past_the_cap": "encoded:deflate",
    "gzip_twice": "encoded:gzip-twice",
    "small_gzip_not_asked_for": "encoded:small",
}


@pytest.mark.parametrize("mode", ENCODED.values(), ids=ENCODED.keys())
def test_11_an_encoded_reply_is_refused_before_it_is_inflated(tmp_path, hub, mode):
    root = tiny_release(tmp_path / "repo")
    endpoint, handler = hub(mode)
    result, _ = publish(root, hub_env(tmp_path, HF_ENDPOINT=endpoint))
    line = one_error_line(result, TOKEN)
    assert "not asked for" in line, line
    assert [r[2].get("accept-encoding") for r in handler.requests] == ["identity"]  # asked for none; no 2nd request


# ------------------------------------------------------------ 25. shards count the bytes they read


def noisy_release(root: Path, nbytes, big: int | None = None) -> list[tuple[str, int]]:
    """tiny_release with rows.parquet whose images are ~270 KB of noise (`big`: that row 1.2 MB) and whose
    image_nbytes is nbytes(true size); returns (id, image bytes + text bytes) per train row."""
    import pandas as pd
    from PIL import Image

    tiny_release(root, {"train": 8, "validation": 2})
    release, rows, sizes = root / "data/releases/v2", [], []
    for split in ("train", "validation"):
        for index, line in enumerate((release / split / "metadata.jsonl").read_text().splitlines()):
            record = json.loads(line)
            side = 630 if index == big else 300
            image = Image.frombytes("RGB", (side, side), os.urandom(side * side * 3))
            image.save(release / split / record["file_name"])
            data = (release / split / record["file_name"]).read_bytes()
            rows.append(
                {
                    **{k: record[k] for k in ("id", "source", "text", "orig_text")},
                    **{"split": split, "image": f"{split}/{record['file_name']}", "width": side, "height": side},
                    **{"image_sha256": hashlib.sha256(data).hexdigest(), "image_nbytes": nbytes(len(data))},
                }
            )
            if split == "train":
                sizes.append((record["id"], len(data) + len(record["text"].encode())))
    pd.DataFrame(rows).to_parquet(release / "rows.parquet", index=False)
    return sizes


NBYTES = {
    "recorded_zero": (lambda size: 0, None),
    "recorded_negative": (lambda size: -(10**9), None),
    "recorded_huge": (lambda size: 10**12, None),
    "recorded_a_tenth": (lambda size: size // 10, None),
    "zero_and_one_image_over_the_limit": (lambda size: 0, 3),
}


@pytest.mark.parametrize("nbytes, big", NBYTES.values(), ids=NBYTES.keys())
def test_25_shards_are_planned_from_the_image_bytes_not_the_recorded_size(tmp_path, nbytes, big):
    import pyarrow.parquet as pq

    root = tmp_path / "repo"
    sizes = noisy_release(root, nbytes, big)
    environ = hub_env(tmp_path)
    result = subprocess.run(
        [sys.executable, "-m", "scripts", "publish", "v2", "--repo-id", "a/b", "--dry-run", "--max-shard-mb", "1"],
        cwd=root,
        env=environ,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    shards = sorted((root / "dist/hub/v2/data").glob("train-*.parquet"))
    held = [pq.read_table(shard, columns=["id"])["id"].to_pylist() for shard in shards]
    size = dict(sizes)
    for ids in held:  # at most 1 MB a shard; a bigger image alone
        assert len(ids) == 1 or sum(size[i] for i in ids) <= 1_000_000, [size[i] for i in ids]
    assert [i for ids in held for i in ids] == [i for i, _ in sizes]  # every row, in order
    expected, total = 1, 0  # the shards the true sizes give (each shard as full as the limit lets it)
    for index, (_, row) in enumerate(sizes):
        if index and total + row > 1_000_000:
            expected, total = expected + 1, 0
        total += row
    assert len(shards) == expected and shards[0].name == f"train-00000-of-{expected:05d}.parquet"


# ------------------------------------------------------------ 21. import-time failures are one line

HF_VARIABLES = {
    "download_timeout_word_dry_run": (
        ["publish", "v2", "--repo-id", "a/b", "--dry-run"],
        "HF_HUB_DOWNLOAD_TIMEOUT",
        "abc",
    ),
    "etag_timeout_fraction_dry_run": (["publish", "v2", "--repo-id", "a/b", "--dry-run"], "HF_HUB_ETAG_TIMEOUT", "1.5"),
    "download_timeout_secret_like": (
        ["publish", "v2", "--repo-id", "a/b", "--dry-run"],
        "HF_HUB_DOWNLOAD_TIMEOUT",
        "hf_SECRETpastedHERE987654",
    ),
    "tiny_encoder_etag_timeout": (["tiny-encoder", "enc"], "HF_HUB_ETAG_TIMEOUT", "1.5"),
    "tiny_model_download_timeout": (["tiny-model", "model"], "HF_HUB_DOWNLOAD_TIMEOUT", "ten"),
}


@pytest.mark.parametrize("argv, name, value", HF_VARIABLES.values(), ids=HF_VARIABLES.keys())
def test_21_a_bad_hf_variable_is_one_line_naming_it(tmp_path, argv, name, value):
    root = tiny_release(tmp_path / "repo")
    result = subprocess.run(
        [sys.executable, "-m", "scripts", *argv],
        cwd=root,
        env=hub_env(tmp_path, **{name: value}),
        capture_output=True,
        text=True,
        timeout=300,
    )
    line = one_error_line(result, value)
    assert line.startswith(f"error: {name}: "), line
    assert not (root / "enc").exists() and not (root / "model").exists()


BROKEN_LIBRARIES = {  # a library (shadowed on PYTHONPATH) whose module body raises
    "huggingface_hub_runtime_error": ("huggingface_hub", "raise RuntimeError('this install is broken')", []),
    "huggingface_hub_value_error_quoting_the_token": (
        "huggingface_hub",
        "import os\nraise ValueError('cannot use ' + os.environ['HF_TOKEN'])",
        [TOKEN],
    ),
    "huggingface_hub_submodule_import_error": (
        "huggingface_hub",
        "from huggingface_hub._missing_part import x",
        [],
    ),
    "pyarrow_os_dependent_failure": ("pyarrow", "raise SystemError('libarrow.so: wrong ELF class')", []),
}


@pytest.mark.parametrize("package, body, secrets", BROKEN_LIBRARIES.values(), ids=BROKEN_LIBRARIES.keys())
def test_21_a_library_failing_while_imported_is_one_line_naming_it(tmp_path, package, body, secrets):
    root = tiny_release(tmp_path / "repo")
    shadow = tmp_path / "shadow" / package
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text(body + "\n", encoding="utf-8")
    environ = hub_env(tmp_path, PYTHONPATH=f"{tmp_path / 'shadow'}{os.pathsep}{REPO}")
    result = subprocess.run(
        [sys.executable, "-m", "scripts", "publish", "v2", "--repo-id", "a/b", "--dry-run"],
        cwd=root,
        env=environ,
        capture_output=True,
        text=True,
        timeout=120,
    )
    line = one_error_line(result, *secrets)
    assert package in line and "Traceback" not in result.stderr, line
