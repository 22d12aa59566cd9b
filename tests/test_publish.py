"""`python -m scripts publish`: the Hub folder loads with `datasets`, its card says what the Hub needs, and
the upload talks to the Hub's API (a loopback server recording every request) with the token only in
Authorization headers, then tags the uploaded commit with the git tag."""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import pytest

from helpers import REPO, cli, env, work_copy

TOKEN = "hf_loopbackTESTtoken0123456789abcdef"


# --- a tiny release, built by hand -----------------------------------------------------------------


def tiny_release(root: Path, rows: dict[str, int] = {"train": 5, "validation": 2}) -> Path:  # noqa: B006  # read only
    """root/ holding this repo's params.yaml and data/releases/v2/ in the ImageFolder layout."""
    from PIL import Image

    root.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(REPO / "params.yaml", root / "params.yaml")
    release = root / "data" / "releases" / "v2"
    for split, count in rows.items():
        folder = release / split
        (folder / "images" / "diffusiondb").mkdir(parents=True)
        lines = []
        for i in range(count):
            rid = f"{split[0]}{i:015d}"
            name = f"images/diffusiondb/{rid}.png"
            Image.new("RGB", (16, 12), (i * 40 % 256, 80, 160)).save(folder / name)
            lines.append(
                json.dumps(
                    {
                        "file_name": name,
                        "text": f"a {split} picture number {i}",
                        "orig_text": f"A {split} picture #{i}",
                        "source": "diffusiondb",
                        "id": rid,
                        "width": 16,
                        "height": 12,
                    }
                )
            )
        (folder / "metadata.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    Image.new("RGB", (32, 32), (1, 2, 3)).save(release / "preview.jpg", format="JPEG")
    (release / "README.md").write_text(
        "---\nlicense: other\n---\n# t2i-datasets v2\n\n## Rows\n\nrelease card text\n", encoding="utf-8"
    )
    return root


def load(folder: Path):
    import datasets

    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    return datasets.load_dataset("parquet", data_dir=str(folder / "data"), cache_dir=str(folder.parent / "hf-cache"))


# --- the folder ----------------------------------------------------------------------------------


def test_dry_run_folder_loads_with_datasets_and_has_a_hub_card(tmp_path, monkeypatch, capfd):
    from huggingface_hub import DatasetCard

    root = tiny_release(tmp_path / "repo")
    out = tmp_path / "hub"
    result = cli(["publish", "v2", "--repo-id", "me/t2i-v2", "--dry-run", "--out", out], root, monkeypatch, capfd)
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in (out / "data").iterdir()) == [
        "train-00000-of-00001.parquet",
        "validation-00000-of-00001.parquet",
    ]

    ds = load(out)
    assert {s: len(d) for s, d in ds.items()} == {"train": 5, "validation": 2}
    features = ds["train"].features
    assert type(features["image"]).__name__ == "Image" and features["text"].dtype == "string"
    row = ds["train"][0]
    assert (
        row["image"].size == (16, 12) and row["text"] == "a train picture number 0" and row["id"] == "t000000000000000"
    )

    card = DatasetCard.load(out / "README.md")
    data = card.data.to_dict()
    assert (
        data["license"] == "cc0-1.0"
    )  # v2's one source, DiffusionDB, is CC0 (params.yaml sources.diffusiondb.license)
    assert data["language"] == ["en"] and data["size_categories"] == ["n<1K"]
    assert "extended|poloclub/diffusiondb" in data["source_datasets"]
    info = data["dataset_info"]
    assert {f["name"]: f["dtype"] for f in info["features"]}["image"] == "image"
    assert {s["name"]: s["num_examples"] for s in info["splits"]} == {"train": 5, "validation": 2}
    assert all(s["num_bytes"] > 0 for s in info["splits"]) and info["download_size"] > 0
    assert data["configs"][0]["data_files"][0] == {"split": "train", "path": "data/train-*"}
    assert 'load_dataset("me/t2i-v2", revision="v2")' in card.text
    assert "](preview.jpg)" in card.text and (out / "preview.jpg").is_file()
    assert "release card text" in card.text


def test_shards_respect_the_size_limit_and_keep_every_row(tmp_path):
    from scripts.tools.publish import plan_shards, read_split, size_category, write_shards

    assert plan_shards([4, 4, 4, 4, 9, 1], 8) == [(0, 2), (2, 4), (4, 5), (5, 6)]
    assert plan_shards([], 8) == [(0, 0)]
    assert [size_category(n) for n in (0, 999, 1000, 2_000_000, 10**12)] == [
        "n<1K",
        "n<1K",
        "1K<n<10K",
        "1M<n<10M",
        "n>1T",
    ]

    root = tiny_release(tmp_path / "repo", {"train": 9, "validation": 1})
    records = read_split(root / "data/releases/v2", "train")
    out = tmp_path / "hub"
    (out / "data").mkdir(parents=True)
    size = records[0]["_size"] + 40
    info = write_shards(records, "train", out / "data", 2 * size)  # two rows per shard
    assert info["files"] == [f"train-{i:05d}-of-00005.parquet" for i in range(5)]
    import datasets

    ds = datasets.load_dataset(
        "parquet", data_files=[str(out / "data" / f) for f in info["files"]], cache_dir=str(tmp_path / "hf-cache")
    )["train"]
    assert ds["id"] == [r["id"] for r in records]  # every row, in order


def test_upload_needs_the_git_tag_and_a_token(tmp_path, monkeypatch, capfd):
    root = tiny_release(tmp_path / "repo")
    result = cli(["publish", "v2", "--repo-id", "me/t2i-v2"], root, monkeypatch, capfd)
    assert result.returncode == 2 and "git tag v2 not found" in result.stderr
    result = cli(["publish", "v2", "--repo-id", "not-a-repo-id", "--dry-run"], root, monkeypatch, capfd)
    assert result.returncode == 2 and "ORG/NAME" in result.stderr


# --- the upload, against a loopback Hub ------------------------------------------------------------


class FakeHub(BaseHTTPRequestHandler):
    """The Hub endpoints publish uses; every request is recorded (method, path, headers, body)."""

    requests: ClassVar[list] = []
    files: ClassVar[dict] = {}

    def log_message(self, *args):  # quiet
        pass

    def _reply(self, status: int, payload) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _handle(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.requests.append((self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, body))
        path = self.path.split("?")[0]
        parts = path.strip("/").split("/")
        endpoint = f"http://{self.headers['Host']}"
        if path == "/api/repos/create":
            request = json.loads(body)
            return self._reply(200, {"url": f"{endpoint}/datasets/{request['organization']}/{request['name']}"})
        if path == "/api/validate-yaml":  # the Hub checks the card's metadata before the commit
            return self._reply(200, {"errors": [], "warnings": []})
        if len(parts) >= 6 and parts[:2] == ["api", "datasets"]:
            repo, action = "/".join(parts[2:4]), parts[4]
            if action == "preupload":
                files = json.loads(body)["files"]
                return self._reply(
                    200,
                    {
                        "files": [
                            {"path": f["path"], "uploadMode": "regular", "shouldIgnore": False, "oid": None}
                            for f in files
                        ]
                    },
                )
            if action == "commit":
                for line in body.splitlines():
                    item = json.loads(line)
                    if item["key"] == "file":
                        self.files[item["value"]["path"]] = base64.b64decode(item["value"]["content"])
                return self._reply(
                    200, {"commitUrl": f"{endpoint}/datasets/{repo}/commit/{'c' * 40}", "commitOid": "c" * 40}
                )
            if action == "tag":
                return self._reply(200, {})
        return self._reply(404, {"error": f"not found: {self.command} {path}"})

    do_GET = do_POST = do_PUT = do_PATCH = _handle


@pytest.fixture
def fake_hub():
    FakeHub.requests, FakeHub.files = [], {}
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeHub)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", FakeHub
    server.shutdown()
    server.server_close()


def test_upload_creates_commits_and_tags_on_the_hub_with_the_token_only_in_headers(history, tmp_path, fake_hub):
    endpoint, hub = fake_hub
    repo = work_copy(history.repo, tmp_path / "wc", rev="v2")
    environ = {k: v for k, v in env().items() if not k.startswith("HF_")}
    environ.update(
        HF_ENDPOINT=endpoint,
        HF_TOKEN=TOKEN,
        HF_HOME=str(tmp_path / "hf-home"),
        HF_HUB_DISABLE_TELEMETRY="1",
        NO_PROXY="127.0.0.1",
        no_proxy="127.0.0.1",
    )
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "scripts",
            "publish",
            "v2",
            "--repo-id",
            "my-org/t2i-v2",
            "--out",
            str(tmp_path / "hub"),
        ],
        cwd=repo,
        env=environ,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "tagged v2" in result.stdout

    calls = [(method, path.split("?")[0]) for method, path, _, _ in hub.requests]
    assert calls[0] == ("POST", "/api/repos/create")
    assert (
        json.loads(hub.requests[0][3]).items()
        >= {"name": "t2i-v2", "organization": "my-org", "type": "dataset"}.items()
    )
    validate = next(json.loads(b) for m, p, _, b in hub.requests if p == "/api/validate-yaml")
    # v2's one source is CC0 (params.yaml): the card names that licence, no LICENSE.md of its own
    assert validate["repoType"] == "dataset" and "\nlicense: cc0-1.0\n" in validate["content"]
    assert "license_link" not in validate["content"]
    assert ("POST", "/api/datasets/my-org/t2i-v2/preupload/main") in calls
    assert ("POST", "/api/datasets/my-org/t2i-v2/commit/main") in calls
    assert calls[-1] == ("POST", "/api/datasets/my-org/t2i-v2/tag/" + "c" * 40)  # the uploaded commit
    assert json.loads(hub.requests[-1][3])["tag"] == "v2"
    assert {p for p in hub.files if p.startswith("data/")} == {
        "data/train-00000-of-00001.parquet",
        "data/validation-00000-of-00001.parquet",
    }
    assert {"README.md", "preview.jpg"} <= set(hub.files) and ".t2i-output" not in hub.files
    stats = json.loads((repo / "data/releases/v2/stats.json").read_text())
    import pyarrow.parquet as pq

    assert pq.read_table(io.BytesIO(hub.files["data/train-00000-of-00001.parquet"])).num_rows == stats["rows"]["train"]

    for method, path, headers, body in hub.requests:
        assert headers.get("authorization") == f"Bearer {TOKEN}", (method, path, sorted(headers))
        assert TOKEN not in path and TOKEN.encode() not in body
        assert all(TOKEN not in v for k, v in headers.items() if k != "authorization"), (method, path)
    assert TOKEN not in result.stdout + result.stderr
    assert not any(TOKEN.encode() in p.read_bytes() for p in (tmp_path / "hub").rglob("*") if p.is_file())
