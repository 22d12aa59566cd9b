"""caption@S against a real vision chat-completions server on loopback (http.server in a thread).

The server decodes the image each request carries (a data: URI), looks at its colour with PIL and
answers from a script keyed by (model, colour), so each image of the test folder provokes a known
caption: good, empty, refusal, blank-image, placeholder, too short, cut by max_tokens. It records
every request with its Authorization header and can fail on demand (429 with Retry-After, 5xx,
a reply held until the client is killed, a reply that echoes the key).
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml
from PIL import Image

from helpers import cli, send_json, write_tar
from helpers.children import start_scripts
from helpers.loopback import JsonServer
from scripts.caption import build_request, caption, compile_rules, parse_params, qa_reason
from scripts.lib.caption_images import list_images
from scripts.lib.errors import DataError
from scripts.lib.params import CaptionEntry

pytestmark = pytest.mark.usefixtures("no_proxy")

REPO = Path(__file__).resolve().parents[1]
API_KEY = "sk-or-test-NEVER-LEAK-7777"
COLOURS = {
    "red": (220, 30, 30),
    "blue": (30, 30, 220),
    "green": (30, 200, 30),
    "white": (255, 255, 255),
    "black": (0, 0, 0),
    "yellow": (230, 220, 20),
    "purple": (140, 30, 160),
}
GOOD = "A flat {colour} square filling the frame, evenly lit, with no texture or objects."
SCRIPT = {  # (model, colour) -> (content, finish_reason); any other pair gets a good caption
    ("m1", "blue"): ("   ", "stop"),
    ("m1", "green"): ("I'm sorry, I can't help with identifying this image.", "stop"),
    ("m1", "white"): ("The image is blank.", "stop"),
    ("m2", "white"): ("Lorem ipsum dolor sit amet.", "stop"),
    ("m1", "black"): ("Black.", "stop"),
    ("m1", "yellow"): ("A flat yellow square filling the frame, evenly lit, with no", "length"),
}
RULES = [
    {"reason": "placeholder", "pattern": r"(?i)lorem ipsum|^\W*(?:n/?a|none|placeholder)\W*$"},
    {"reason": "blank_image", "pattern": r"(?i)^the image is (?:blank|empty)\b"},
    {"reason": "refusal", "pattern": r"(?i)^\W*(?:i'?m sorry|i (?:can(?:no|')t|cannot))"},
]


def colour_of(data: bytes) -> str:
    with Image.open(io.BytesIO(data)) as img:
        pixel = img.convert("RGB").getpixel((img.width // 2, img.height // 2))
    return min(COLOURS, key=lambda name: sum((a - b) ** 2 for a, b in zip(COLOURS[name], pixel)))


class VisionServer(JsonServer):
    def __init__(self):
        self.received: list[dict] = []  # {"authorization", "model", "colour", "body"}
        self.faults: list[tuple] = []  # one per request: ("status", code, retry_after) | ("echo",) | ("echo_401",)
        self.hold_from: int | None = None  # requests from this number on wait for `release`
        self.release = threading.Event()
        self.lock = threading.Lock()
        super().__init__()

    def answer(self, handler, body):
        url = body["messages"][-1]["content"][1]["image_url"]["url"]
        header, _, payload = url.partition(",")
        assert header.endswith(";base64"), header  # the image itself is sent, not its hash
        colour = colour_of(base64.b64decode(payload))
        auth = handler.headers.get("Authorization")
        with self.lock:
            self.received.append(
                {"authorization": auth, "model": body["model"], "colour": colour, "body": body, "path": handler.path}
            )
            fault = self.faults.pop(0) if self.faults else None
            held = self.hold_from is not None and len(self.received) > self.hold_from
        if held:
            self.release.wait(20)
        if fault and fault[0] == "status":
            extra = {"Retry-After": str(fault[2])} if fault[2] is not None else {}
            return send_json(handler, fault[1], {"error": {"message": f"injected {fault[1]}"}}, extra)
        if fault and fault[0] == "echo_401":
            return send_json(handler, 401, {"error": {"message": f"invalid key {auth}"}})
        content, finish = SCRIPT.get((body["model"], colour), (GOOD.format(colour=colour), "stop"))
        if fault and fault[0] == "echo":  # a server quoting the header back in its reply
            content, finish = f"{GOOD.format(colour=colour)} (request authorised by {auth})", "stop"
        created = {"m1": 1776589694, "m2": 1776684944}.get(body["model"], 1) + len(self.received)
        send_json(
            handler,
            200,
            {
                "id": "c",
                "object": "chat.completion",
                "created": created,
                "model": body["model"],
                "choices": [
                    {"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": finish}
                ],
                "usage": {"prompt_tokens": 50, "completion_tokens": 10},
            },
        )


@pytest.fixture
def server():
    vision = VisionServer()
    yield vision
    vision.close()


def image_bytes(colour: str, fmt: str = "PNG", size: tuple[int, int] = (24, 16)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, COLOURS[colour]).save(buf, format=fmt)
    return buf.getvalue()


def make_images(folder: Path) -> Path:
    """Six image files (PNG and JPEG, one in a subfolder) and a WebDataset shard with two samples."""
    folder.mkdir(parents=True)
    for colour in ("red", "blue", "green", "white"):
        (folder / f"{colour}.png").write_bytes(image_bytes(colour))
    (folder / "more").mkdir()
    (folder / "more" / "black.jpg").write_bytes(image_bytes("black", "JPEG", (32, 48)))
    (folder / "notes.txt").write_text("not an image", encoding="utf-8")
    write_tar(
        folder / "shards" / "shard-000000.tar",
        [
            ("000001.jpg", image_bytes("yellow", "JPEG")),
            ("000001.txt", b"old caption\n"),
            ("000001.json", b"{}"),
            ("000002.png", image_bytes("purple")),
            ("000002.txt", b"old caption\n"),
        ],
    )
    return folder


def raw_params(base_url: str, images: Path, **overrides) -> dict:
    """A full entry as in params.yaml, with tiny timeouts and backoff so the tests take seconds."""
    params = {
        "images": str(images),
        "max_images": None,
        "base_url": base_url,
        "backend": "test-router",
        "api_key_env": "CAPTION_TEST_KEY",
        "models": [{"model": "m1", "variant": "v_one"}, {"model": "m2"}],
        "system": "Describe images.",
        "prompt": "Caption this image.",
        "temperature": 0.0,
        "max_tokens": 64,
        "extra_body": {},
        "qa": {"min_chars": 10, "max_chars": None, "reject_truncated": True, "rules": RULES},
        "max_image_bytes": 1 << 20,
        "max_image_pixels": 1 << 20,
        "offline": False,
        "concurrency": 2,
        "timeout_s": 2.0,
        "max_attempts": 4,
        "backoff_base_s": 0.01,
        "backoff_cap_s": 0.05,
    }
    params.update(overrides)
    return params


def run(tmp_path: Path, server: VisionServer, api_key: str | None = API_KEY, log=None, **overrides) -> dict:
    images = tmp_path / "images"
    if not images.exists():
        make_images(images)
    params = parse_params("t", raw_params(server.base_url, images, **overrides))
    return caption("t", params, tmp_path / "out", api_key, log=log or (lambda message: None))


def cache_files(tmp_path: Path) -> list[Path]:
    return sorted((tmp_path / "out" / "cache").iterdir())


# ---------------------------------------------------------------- pure parts


def test_qa_reasons_in_order():
    qa = CaptionEntry(images="x", qa={"min_chars": 10, "max_chars": 40, "reject_truncated": True, "rules": RULES}).qa
    rules = compile_rules(qa)
    good = "A red kite over dunes at dusk."
    assert qa_reason(good, False, qa, rules) is None
    assert qa_reason("", False, qa, rules) == "empty"
    assert qa_reason("... --- ...", False, qa, rules) == "empty"
    assert qa_reason(good, True, qa, rules) == "truncated"
    assert qa_reason("N/A", False, qa, rules) == "too_short"  # built-in checks come first
    assert qa_reason("placeholder!!!!!!", False, qa, rules) == "placeholder"
    assert qa_reason("The image is blank, nothing to see.", False, qa, rules) == "blank_image"
    assert qa_reason("I cannot describe people in images.", False, qa, rules) == "refusal"
    assert qa_reason("x" * 41, False, qa, rules) == "too_long"
    kept = CaptionEntry(images="x", qa={"reject_truncated": False, "rules": []}).qa
    assert qa_reason(good, True, kept, []) is None


@pytest.mark.parametrize(
    "text, reason",
    [
        ("The image is blank.", "blank_image"),
        ("A solid black rectangle.", "blank_image"),
        ("This photo is no longer available", "unavailable"),
        ("Lorem ipsum dolor sit amet", "placeholder"),
        ("[Insert caption here]", "placeholder"),
        ("I'm sorry, but I can't help with that request.", "refusal"),
        ("A red apple on a plain white background.", None),
        ("An empty street at dawn with wet cobblestones.", None),
        ("Solid oak table with a plain vase of tulips.", None),
    ],
)
def test_default_rules_in_params_yaml(text, reason):
    entry = yaml.safe_load((REPO / "params.yaml").read_text(encoding="utf-8"))["caption"]["laion_buckets"]
    qa = parse_params("laion_buckets", entry).qa
    assert qa_reason(text, False, qa, compile_rules(qa)) == reason


def test_request_is_an_openai_vision_message():
    params = parse_params("t", raw_params("http://x/v1", Path("imgs"), extra_body={"top_p": 0.9}))
    body = build_request(params, 1, "data:image/png;base64,AAAA")
    assert body == {
        "model": "m2",
        "top_p": 0.9,
        "temperature": 0.0,
        "max_tokens": 64,
        "messages": [
            {"role": "system", "content": "Describe images."},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "Caption this image."},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
                ],
            },
        ],
    }
    assert params.variants == ["v_one", "caption_m2"]
    with pytest.raises(DataError, match=r"caption\.t: models: model 'm1' appears twice"):
        parse_params(
            "t", raw_params("http://x/v1", Path("i"), models=[{"model": "m1"}, {"model": "m1", "variant": "b"}])
        )
    with pytest.raises(DataError, match=r"caption\.t\.qa\.rules\[0\]\.pattern: not a valid regex"):
        parse_params("t", raw_params("http://x/v1", Path("i"), qa={"rules": [{"reason": "x", "pattern": "("}]}))


def test_images_are_listed_from_files_tars_and_manifests_and_links_are_skipped(tmp_path):
    folder = make_images(tmp_path / "images")
    (folder / "link.png").symlink_to(folder / "red.png")
    listed, skipped = list_images(folder)
    assert [image.id for image in listed] == [
        "blue.png",
        "green.png",
        "more/black.jpg",
        "red.png",
        "shards/shard-000000.tar!/000001.jpg",
        "shards/shard-000000.tar!/000002.png",
        "white.png",
    ]
    assert listed[4].ref == f"{folder.as_posix()}/shards/shard-000000.tar!/000001.jpg"
    assert dict(skipped) == {"symlink": 1}
    rendered = tmp_path / "rendered"
    rendered.mkdir()
    (rendered / "b.png").write_bytes(image_bytes("red"))
    pd.DataFrame({"id": ["id2"], "file": ["b.png"]}).to_parquet(rendered / "manifest.parquet")
    assert [(i.id, i.ref) for i in list_images(rendered)[0]] == [("id2", f"{rendered.as_posix()}/b.png")]


# ---------------------------------------------------------------- against the loopback server


def test_waterfall_falls_back_and_qa_drops_with_reasons(tmp_path, server):
    report = run(tmp_path, server)
    first = [r for r in server.received if r["model"] == "m1"]
    second = [r for r in server.received if r["model"] == "m2"]
    assert sorted(r["colour"] for r in first) == sorted(COLOURS)  # 7 images, each asked of m1 once
    assert sorted(r["colour"] for r in second) == ["black", "blue", "green", "white", "yellow"]  # only the rejected
    assert {r["path"] for r in server.received} == {"/v1/chat/completions"}

    captions = pd.read_parquet(tmp_path / "out" / "captions.parquet")
    by_id = captions.set_index("id")
    assert list(captions["id"]) == sorted(captions["id"])
    assert len(captions) == 6 and "white.png" not in by_id.index
    assert by_id.loc["red.png", ["caption_variant", "caption_selector_index", "caption_source_id"]].tolist() == [
        "v_one",
        0,
        1,
    ]
    for image_id in ("blue.png", "green.png", "more/black.jpg", "shards/shard-000000.tar!/000001.jpg"):
        assert by_id.loc[image_id, ["caption_variant", "caption_selector_index", "caption_source_id"]].tolist() == [
            "caption_m2",
            1,
            2,
        ], image_id
    assert by_id.loc["more/black.jpg", "caption"] == GOOD.format(colour="black")
    assert by_id.loc["more/black.jpg", ["width", "height"]].tolist() == [32, 48]
    assert by_id.loc["shards/shard-000000.tar!/000002.png", "caption"] == GOOD.format(colour="purple")
    assert str(captions["caption_source_id"].dtype) == "int64"

    rejections = pd.read_parquet(tmp_path / "out" / "rejections.parquet")
    assert sorted(zip(rejections["id"], rejections["caption_variant"], rejections["reason"])) == [
        ("blue.png", "v_one", "empty"),
        ("green.png", "v_one", "refusal"),
        ("more/black.jpg", "v_one", "too_short"),
        ("shards/shard-000000.tar!/000001.jpg", "v_one", "truncated"),
        ("white.png", "caption_m2", "placeholder"),
        ("white.png", "v_one", "blank_image"),
    ]
    assert report["images"] == {"listed": 7, "selected": 7, "skipped": {}, "captioned": 6, "dropped": 1}
    assert report["dropped"] == {"placeholder": 1}
    assert [(s["requests"], s["accepted"], s["rejected"]) for s in report["steps"]] == [
        (7, 2, {"blank_image": 1, "empty": 1, "refusal": 1, "too_short": 1, "truncated": 1}),
        (5, 4, {"placeholder": 1}),
    ]

    sources = json.loads((tmp_path / "out" / "sources.json").read_text())
    sha = lambda text: hashlib.sha256(text.encode()).hexdigest()  # noqa: E731
    m1_created = min(1776589694 + i + 1 for i, r in enumerate(server.received) if r["model"] == "m1")
    assert sources["caption_sources"][0] == {
        "caption_source_id": 1,
        "backend": "test-router",
        "model": "m1",
        "created_at": m1_created,
        "system_prompt_sha256": sha("Describe images."),
        "user_prompt_sha256": sha("Caption this image."),
    }
    assert [s["images"] for s in sources["waterfall"]] == [2, 4]
    # the cache names each image by its sha256: no image bytes in it
    entry = json.loads(cache_files(tmp_path)[0].read_text())
    url = entry["request"]["messages"][1]["content"][1]["image_url"]["url"]
    assert url.startswith("data:image/") and ";sha256," in url and len(cache_files(tmp_path)) == 12


def test_replay_offline_without_a_server(tmp_path, server):
    run(tmp_path, server)
    out = tmp_path / "out"
    first = {name: (out / name).read_bytes() for name in ("captions.parquet", "rejections.parquet", "sources.json")}
    server.close()  # nothing listens any more
    report = run(tmp_path, server, api_key=None, offline=True)
    assert report["api_calls"] == 0 and report["cache_hits"] == 12
    assert {name: (out / name).read_bytes() for name in first} == first
    # without the offline flag too: everything is cached, so nothing is requested
    assert run(tmp_path, server, api_key=None)["api_calls"] == 0
    with pytest.raises(DataError, match=r"caption t: 1 of 1 requests to m1 not in .*cache and offline is true"):
        run(tmp_path, server, offline=True, prompt="Caption this image, briefly.", max_images=1)


def test_429_and_5xx_are_retried_then_succeed(tmp_path, server):
    server.faults = [("status", 429, 0.02), ("status", 500, None), ("status", 503, None)]
    report = run(tmp_path, server, max_images=1, concurrency=1, max_attempts=4)  # blue.png: m1, then m2
    assert [r["model"] for r in server.received] == ["m1"] * 4 + ["m2"] and report["steps"][0]["attempts"] == 4
    assert report["steps"][0]["retries"] == {
        "timeout": 0,
        "http_429": 1,
        "http_5xx": 2,
        "connection": 0,
        "invalid_response": 0,
    }
    assert report["images"]["captioned"] == 1 and len(cache_files(tmp_path)) == 2

    server.faults = [("status", 500, None)] * 2
    with pytest.raises(
        DataError,
        match=r"caption t: v_one: image green.png failed: HTTP 500: injected 500 "
        r"\(after 2 attempts\); 1 of 2 requests to m1 cached, re-run to resume",
    ):
        run(tmp_path, server, max_images=2, max_attempts=2)
    assert len(cache_files(tmp_path)) == 2  # and no temp file left behind


def test_key_never_reaches_cache_outputs_or_logs(tmp_path, server, monkeypatch, capfd):
    """The key goes in the Authorization header only; a server echoing it back (in a caption, in an
    error) does not get it into the cache, the outputs, the report or the log."""
    make_images(tmp_path / "images")
    entry = raw_params(server.base_url, tmp_path / "images", max_images=3)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"caption": {"x": entry}}), encoding="utf-8")
    monkeypatch.setenv("CAPTION_TEST_KEY", API_KEY)
    server.faults = [("echo",), ("echo",), ("echo",)]
    result = cli(["caption", "x", "out"], tmp_path, monkeypatch, capfd)
    assert result.returncode == 0, result.stderr
    assert [r["authorization"] for r in server.received] == [f"Bearer {API_KEY}"] * 3
    captions = pd.read_parquet(tmp_path / "out" / "captions.parquet")
    assert all(text.endswith("(request authorised by Bearer ***)") for text in captions["caption"])
    fragment = API_KEY[-10:]
    for path in (tmp_path / "out").rglob("*"):
        if path.is_file():
            assert fragment.encode() not in path.read_bytes(), path
    assert fragment not in result.stdout + result.stderr

    server.faults = [("echo_401",)]
    entry["max_images"] = 4
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"caption": {"x": entry}}), encoding="utf-8")
    result = cli(["caption", "x", "out"], tmp_path, monkeypatch, capfd)
    assert result.returncode == 2
    assert result.stderr.splitlines()[-1] == (
        "error: caption x: v_one: image red.png failed: HTTP 401: invalid key "
        "Bearer ***; 3 of 4 requests to m1 cached, re-run to resume"
    )
    assert fragment not in result.stdout + result.stderr


def test_kill_9_mid_run_then_rerun_requests_only_the_missing(tmp_path, server):
    """A caption process killed with SIGKILL keeps every request it finished; the rerun sends only
    the others (and leaves no temp file for DVC to track)."""
    make_images(tmp_path / "images")
    entry = raw_params(server.base_url, tmp_path / "images", concurrency=1)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"caption": {"x": entry}}), encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    env.update(PYTHONPATH=str(REPO), CAPTION_TEST_KEY=API_KEY)
    server.hold_from = 3  # the 4th request hangs until the process is killed
    process = start_scripts(tmp_path, "caption", "x", "out", env=env)
    try:
        deadline = time.monotonic() + 20
        while len(server.received) < 4 and time.monotonic() < deadline and process.poll() is None:
            time.sleep(0.02)
        os.kill(process.pid, signal.SIGKILL)
        _, stderr = process.communicate(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
        server.release.set()
    assert process.returncode == -signal.SIGKILL
    assert API_KEY[-10:] not in stderr
    cache = tmp_path / "out" / "cache"
    done = {path.stem for path in cache.glob("*.json")}
    assert len(done) == 3  # killed mid-run, in the first model's round, the 4th request in flight
    asked_before = len(server.received)

    server.hold_from = None
    params = parse_params("x", entry)
    report = caption("x", params, tmp_path / "out", API_KEY, log=lambda message: None)
    new = server.received[asked_before:]
    assert report["steps"][0]["cache_hits"] == len(done) and report["steps"][0]["api_calls"] == 7 - len(done)
    assert len([r for r in new if r["model"] == "m1"]) == 7 - len(done)  # only the missing ones
    assert len([r for r in new if r["model"] == "m2"]) == 5
    assert report["images"]["captioned"] == 6
    assert not list(cache.glob(".*"))  # the killed run's temp file, if any, is gone
    assert len(list(cache.glob("*.json"))) == 12


def test_output_inside_the_images_folder_is_refused(tmp_path, server):
    make_images(tmp_path / "images")
    params = parse_params("t", raw_params(server.base_url, tmp_path / "images"))
    with pytest.raises(DataError, match="inside the input .*images"):
        caption("t", params, tmp_path / "images" / "out", None, log=lambda message: None)
    with pytest.raises(DataError, match="images folder not found"):
        caption("t", params.replace(images=str(tmp_path / "nope")), tmp_path / "out", None, log=lambda message: None)
    assert server.received == []


LOOPED = {  # case: (images, out) under tmp_path; loop-a -> loop-b -> loop-a
    "images folder is the loop": ("loop-a", "out"),
    "images folder under the loop": ("loop-a/images", "out"),
    "output under the loop": ("images", "loop-b/out"),
}


@pytest.mark.parametrize("case", LOOPED.values(), ids=LOOPED.keys())
def test_a_loop_of_links_is_refused_before_a_request(tmp_path, server, case):
    images, out = case
    make_images(tmp_path / "images")
    (tmp_path / "loop-a").symlink_to("loop-b")
    (tmp_path / "loop-b").symlink_to("loop-a")
    before = sorted(os.listdir(tmp_path))
    params = parse_params("t", raw_params(server.base_url, tmp_path / images))
    with pytest.raises(DataError, match="a loop of symbolic links|Too many levels of symbolic links"):
        caption("t", params, tmp_path / out, None, log=lambda message: None)
    assert server.received == []
    assert sorted(os.listdir(tmp_path)) == before


# ---------------------------------------------------------------- dvc.yaml


def test_stage_lists_the_output_keys_and_params_yaml_writes_them_out():
    stage = yaml.safe_load((REPO / "dvc.yaml").read_text(encoding="utf-8"))["stages"]["caption"]
    listed = {p.removeprefix("caption.${key}.") for p in stage["do"]["params"]}
    speed = {"offline", "concurrency", "timeout_s", "max_attempts", "backoff_base_s", "backoff_cap_s", "api_key_env"}
    assert listed == set(CaptionEntry.model_fields) - speed
    entries = yaml.safe_load((REPO / "params.yaml").read_text(encoding="utf-8"))["caption"]
    for name, entry in entries.items():
        assert listed <= set(entry), f"caption.{name} lacks {sorted(listed - set(entry))} (DVC needs them written)"
        assert parse_params(name, entry).max_images == 0  # the shipped entries make no request
    shipped = entries["laion_buckets"]  # the model's defaults are the values params.yaml ships
    assert parse_params("laion_buckets", shipped) == CaptionEntry(images=shipped["images"])


def test_dvc_repro_persists_the_cache_and_speed_keys_rerun_nothing(tmp_path, server):
    """The real caption stage of dvc.yaml in a fresh repo: a re-run replays, more images call only the
    new requests (the cache is persist), a speed key (concurrency) leaves the stage up to date."""
    venv_bin = Path(sys.executable).parent
    if not (venv_bin / "dvc").exists():
        pytest.skip("dvc not installed beside this python")
    import shutil

    repo = tmp_path / "repo"
    shutil.copytree(REPO / "scripts", repo / "scripts", ignore=shutil.ignore_patterns("__pycache__"))
    stage = yaml.safe_load((REPO / "dvc.yaml").read_text(encoding="utf-8"))["stages"]["caption"]
    (repo / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"caption": stage}}), encoding="utf-8")
    make_images(repo / "images")
    entry = raw_params(server.base_url, Path("images"), max_images=2)

    def write_params():
        (repo / "params.yaml").write_text(yaml.safe_dump({"caption": {"x": entry}}), encoding="utf-8")

    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    env.update(PATH=f"{venv_bin}{os.pathsep}{env['PATH']}", DVC_NO_ANALYTICS="1", CAPTION_TEST_KEY=API_KEY)

    def sh(*args):
        result = subprocess.run(list(args), cwd=repo, env=env, capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stdout + result.stderr
        return result.stdout + result.stderr

    write_params()
    (repo / ".dvc").mkdir()  # what `dvc init --no-scm` writes, without one more dvc process
    (repo / ".dvc" / "config").write_text("[core]\n    no_scm = True\n", encoding="utf-8")
    sh("dvc", "repro")
    assert sorted((r["model"], r["colour"]) for r in server.received) == [
        ("m1", "blue"),
        ("m1", "green"),
        ("m2", "blue"),
        ("m2", "green"),
    ]  # both rejected by m1, captioned by m2
    assert len(pd.read_parquet(repo / "data/caption/x/captions.parquet")) == 2
    entry["concurrency"] = 1
    write_params()
    assert "Data and pipelines are up to date" in sh("dvc", "status")
    entry["max_images"] = 3
    write_params()
    sh("dvc", "repro")
    assert [(r["model"], r["colour"]) for r in server.received[4:]] == [("m1", "black"), ("m2", "black")]
    assert API_KEY[-10:] not in (repo / "dvc.lock").read_text()
