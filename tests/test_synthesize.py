"""synthesize@N against a real chat-completions server on loopback (http.server in a thread).

The server answers deterministically from the request body, records every request (with its
Authorization header) and can be told to fail: 429 with Retry-After, 500, a reply slower than the
client's timeout, a non-JSON body, or a status forever for one request.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from helpers import send_json
from helpers.loopback import JsonServer
from scripts.lib.errors import DataError
from scripts.lib.tables import write_parquet
from scripts.lib.temps import mark_temp
from scripts.synthesize import (
    ExampleSource,
    backoff_delay,
    build_requests,
    cache_key,
    clean_line,
    parse_completion,
    parse_params,
    parse_retry_after,
    read_example_pool,
    synthesize,
)

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures("no_proxy")
FIXTURES = Path(__file__).resolve().parent / "fixtures"
API_KEY = "sk-test-DO-NOT-LEAK-4242"


# ---------------------------------------------------------------- the fake chat server


class ChatServer(JsonServer):
    """A chat-completions endpoint on 127.0.0.1 with scripted failures."""

    def __init__(self):
        self.received: list[dict] = []  # {"path", "authorization", "body"}
        self.faults: list[tuple] = []  # consumed one per request: ("status", code, retry_after) | ("slow", s) |
        # ("trickle", s) | ("garbage",)
        self.fail_seed: int | None = None  # requests with this `seed` always get 500
        self.lock = threading.Lock()
        super().__init__()

    def answer(self, handler, body):
        with self.lock:
            self.received.append(
                {"path": handler.path, "authorization": handler.headers.get("Authorization"), "body": body}
            )
            fault = self.faults.pop(0) if self.faults else None
        if body.get("seed") == self.fail_seed:
            fault = ("status", 500, None)
        try:
            if fault and fault[0] == "status":
                headers = {"Retry-After": str(fault[2])} if fault[2] is not None else {}
                send_json(handler, fault[1], {"error": {"message": f"injected {fault[1]}"}}, headers)
            elif fault and fault[0] == "slow":
                time.sleep(fault[1])
                send_json(handler, 200, reply(body))
            elif fault and fault[0] == "body":  # ("body", status, raw bytes)
                send_json(handler, fault[1], fault[2])
            elif fault and fault[0] == "trickle":  # ("trickle", s): the whole reply a byte every s seconds
                raw = json.dumps(reply(body)).encode()
                head = (
                    f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {len(raw)}\r\n\r\n"
                ).encode()
                handler.close_connection = True
                for i in range(len(head + raw)):
                    handler.wfile.write((head + raw)[i : i + 1])
                    time.sleep(fault[1])
            elif fault and fault[0] == "garbage":
                send_json(handler, 200, b"<html>bad gateway</html>")
            elif fault and fault[0] == "echo_key":  # an error body that quotes the key back
                send_json(handler, 401, {"error": {"message": f"bad key {handler.headers.get('Authorization')}"}})
            else:
                send_json(handler, 200, reply(body))
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (timeout test)


def reply(body: dict) -> dict:
    """Deterministic completion: a header, bullets, numbering, quotes, a blank and an over-long line."""
    tag = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:8]
    content = "\n".join(
        [
            "Here are more prompts:",
            "",
            f"1. a copper owl {tag} reading a map",
            f'- "a glass tram {tag} in fog"',
            f"* a paper fox {tag}, oil painting",
            "x" * 300,
        ]
    )
    return {
        "id": "cmpl-1",
        "object": "chat.completion",
        "model": body["model"],
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 100, "completion_tokens": 20, "total_tokens": 120},
    }


@pytest.fixture
def server():
    chat = ChatServer()
    yield chat
    chat.close()


def example_file(tmp_path: Path, n: int = 30) -> Path:
    path = tmp_path / "examples.txt"
    path.write_text("".join(f"- an example prompt number {i}\n" for i in range(n)), encoding="utf-8")
    return path


def raw_params(base_url: str, examples: Path, **overrides) -> dict:
    """A full entry as in params.yaml, with tiny timeouts and backoff so the tests take seconds."""
    params = {
        "base_url": base_url,
        "model": "test-model",
        "api_key_env": "SYNTH_TEST_KEY",
        "temperature": 1.0,
        "max_tokens": 256,
        "extra_body": {},
        "requests": 3,
        "seed": 7,
        "examples": [{"path": str(examples), "column": None, "count": 4}],
        "fixed_examples": ["hyper realistic photo of very friendly and dystopian crater"],
        "avoid_topics": ["mushroom", "jellyfish"],
        "system": None,
        "template": "Examples\n{examples}\n\nMore like these.\n\nNot preferred topics: [{avoid_topics}]",
        "max_chars": 256,
        "drop_header_lines": True,
        "offline": False,
        "concurrency": 2,
        "timeout_s": 0.5,
        "max_attempts": 4,
        "backoff_base_s": 0.01,
        "backoff_cap_s": 0.05,
    }
    params.update(overrides)
    return params


def run(tmp_path, server, api_key=API_KEY, **overrides) -> dict:
    params = parse_params("t", raw_params(server.base_url, example_file(tmp_path), **overrides))
    return synthesize("t", params, tmp_path / "out", api_key, log=lambda message: None)


def cache_files(tmp_path) -> list[Path]:
    return sorted((tmp_path / "out" / "cache").iterdir())


# ---------------------------------------------------------------- parsing


@pytest.mark.parametrize(
    "line, expected",
    [
        ("- a red kite", "a red kite"),
        ("* a red kite", "a red kite"),
        ("• a red kite", "a red kite"),
        ("1. a red kite", "a red kite"),
        ("12) a red kite", "a red kite"),
        ("(3) a red kite", "a red kite"),
        ('"a red kite"', "a red kite"),
        ('"a red kite",', "a red kite"),
        ("“a red kite”", "a red kite"),
        ('7. "a red kite"', "a red kite"),
        ("  - 'a red kite'  ", "a red kite"),
        ("1.5 meter tall robot", "1.5 meter tall robot"),  # a number, not numbering
        ("-shaped cloud", "-shaped cloud"),  # no space after the dash: not a bullet
        ('a sign saying "hello"', 'a sign saying "hello"'),  # inner quotes stay
        ("2001: a space odyssey poster", "2001: a space odyssey poster"),
        ("3. **A red kite** over dunes", "A red kite over dunes"),  # markdown bold
        ('\'90s car with "neon"', '\'90s car with "neon"'),  # quotes that do not pair
        ('"red" and "blue"', '"red" and "blue"'),  # two quoted words, not one quoted prompt
        ("— a red kite", "a red kite"),
    ],
)
def test_clean_line_strips_bullets_numbering_and_quotes(line, expected):
    assert clean_line(line) == expected


def test_parse_completion_drops_and_counts_each_reason():
    content = "\n".join(
        [
            "Sure! Here are 5 more prompts:",
            "",
            "   ",
            "1. a brass lighthouse at dusk",
            "---",
            "2) " + "y" * 30,
            '- "a cactus wearing a scarf"',
            "3. a crowded tram in the rain and a",
        ]
    )
    markdown = "### Fantasy\n**Sci-fi:**\n1. **a moon library**"
    assert parse_completion(markdown, max_chars=99, drop_header_lines=True)[0] == ["a moon library"]
    prompts, counts = parse_completion(content, max_chars=40, drop_header_lines=True, truncated=True)
    assert prompts == ["a brass lighthouse at dusk", "y" * 30, "a cactus wearing a scarf"]
    assert counts == {
        "total": 8,
        "kept": 3,
        "dropped_empty": 3,
        "dropped_header": 1,
        "dropped_too_long": 0,
        "dropped_truncated": 1,
    }
    # without header/truncation rules those lines are judged by length like any other
    prompts, counts = parse_completion(content, max_chars=25, drop_header_lines=False, truncated=False)
    assert prompts == ["a cactus wearing a scarf"]
    assert counts == {
        "total": 8,
        "kept": 1,
        "dropped_empty": 3,
        "dropped_header": 0,
        "dropped_too_long": 4,
        "dropped_truncated": 0,
    }


def test_parse_completion_of_empty_content():
    assert parse_completion("", max_chars=10, drop_header_lines=True, truncated=True) == (
        [],
        {"total": 0, "kept": 0, "dropped_empty": 0, "dropped_header": 0, "dropped_too_long": 0, "dropped_truncated": 0},
    )


# ---------------------------------------------------------------- params, examples, requests


def test_unknown_param_key_names_the_nearest_valid_one(tmp_path):
    raw = raw_params("http://x/v1", example_file(tmp_path), temprature=0.5)
    with pytest.raises(DataError, match=r"synthesize\.t: unknown key 'temprature' \(did you mean 'temperature'\?\)"):
        parse_params("t", raw)


def test_bad_param_value_and_template_field_are_one_line_errors(tmp_path):
    with pytest.raises(DataError, match=r"synthesize\.t\.requests: .*greater than or equal to 0"):
        parse_params("t", raw_params("http://x/v1", example_file(tmp_path), requests=-1))
    with pytest.raises(DataError, match=r"template: unknown field \{topics\}"):
        parse_params("t", raw_params("http://x/v1", example_file(tmp_path), template="{examples} {topics}"))
    raw = raw_params("http://x/v1", example_file(tmp_path))
    del raw["seed"]
    assert parse_params("t", raw).seed == 0  # an absent key takes its documented default (docs/params.md)
    with pytest.raises(DataError, match=r"synthesize\.t\.examples\[0\]\.count: Field required"):
        parse_params("t", {**raw, "examples": [{"path": "x.txt"}]})
    with pytest.raises(DataError, match=r"synthesize\.t\.timeout_s: Input should be a finite number"):
        parse_params("t", {**raw, "timeout_s": float("inf")})


def test_endpoint_and_body_params_are_checked(tmp_path):
    examples = example_file(tmp_path)
    with pytest.raises(DataError, match=r"synthesize\.t\.base_url: is not an http\(s\) URL"):
        parse_params("t", raw_params("api.openai.com/v1", examples))
    with pytest.raises(DataError, match=r"synthesize\.t\.extra_body: 'model' is set by the stage"):
        parse_params("t", raw_params("http://x/v1", examples, extra_body={"model": "other"}))
    params = parse_params(
        "t",
        raw_params(
            "http://x/v1",
            examples,
            temperature=None,
            max_tokens=None,
            extra_body={"top_p": 0.9, "max_completion_tokens": 900},
            requests=1,
        ),
    )
    body = build_requests(params, [read_example_pool(params.examples[0])])[0]
    assert sorted(body) == ["max_completion_tokens", "messages", "model", "seed", "top_p"]


def test_repository_default_is_offline_and_fast(tmp_path, monkeypatch):
    """The shipped entry makes no request: it needs no key, no example files, no network."""
    entries = yaml.safe_load((REPO / "params.yaml").read_text())["synthesize"]
    monkeypatch.chdir(tmp_path)  # data/raw/chatgpt does not exist here
    for name, raw in entries.items():
        params = parse_params(name, raw)
        assert params.requests == 0, f"synthesize.{name}: the default dvc repro must not call the API"
        report = synthesize(name, params, tmp_path / name, api_key=None, log=lambda message: None)
        assert report["api_calls"] == 0 and report["prompts"] == 0
        assert (tmp_path / name / "prompts.txt").read_text() == ""


def test_example_pools_from_text_folder_and_parquet(tmp_path):
    folder = tmp_path / "raw"
    folder.mkdir()
    (folder / "b.txt").write_text("- second file prompt\n", encoding="utf-8")
    (folder / "a.txt").write_text('first prompt\n\n- "quoted prompt"\n', encoding="utf-8")
    (folder / "README.md").write_text("not an example\n", encoding="utf-8")
    assert read_example_pool(ExampleSource(path=str(folder), count=1)) == [
        "first prompt",
        "quoted prompt",
        "second file prompt",
    ]

    split = tmp_path / "train.parquet"
    write_parquet(pd.DataFrame({"id": ["a", "b", "c"], "text": ["one cat", None, " two dogs "]}), split)
    assert read_example_pool(ExampleSource(path=str(split), column="text", count=1)) == ["one cat", "two dogs"]
    with pytest.raises(DataError, match=r"train\.parquet: no column 'prompt' \(columns: id, text\)"):
        read_example_pool(ExampleSource(path=str(split), column="prompt", count=1))
    with pytest.raises(DataError, match=r"train\.parquet: a parquet example source needs `column`"):
        read_example_pool(ExampleSource(path=str(split), count=1))
    with pytest.raises(DataError, match=r"missing\.txt: example source not found"):
        read_example_pool(ExampleSource(path=str(tmp_path / "missing.txt"), count=1))


def test_real_gpt4_set_as_example_pool():
    path = FIXTURES / "gpt4-prompts-3k.txt"
    pool = read_example_pool(ExampleSource(path=str(path), count=10))
    assert len(pool) == 3057
    assert not any(prompt.startswith("- ") for prompt in pool)


def test_requests_are_seeded_and_adding_requests_keeps_the_old_ones(tmp_path):
    pools = [[f"gpt4 prompt {i}" for i in range(50)], [f"train prompt {i}" for i in range(50)]]
    base = raw_params("http://x/v1", example_file(tmp_path))
    base["examples"] = [
        {"path": "a.txt", "column": None, "count": 10},
        {"path": "b.parquet", "column": "text", "count": 10},
    ]
    three = build_requests(parse_params("t", {**base, "requests": 3}), pools)
    five = build_requests(parse_params("t", {**base, "requests": 5}), pools)
    assert five[:3] == three
    assert len({cache_key("http://x/v1", body) for body in five}) == 5
    user = three[0]["messages"][0]["content"]
    assert sum("- gpt4 prompt " in line for line in user.splitlines()) == 10
    assert sum("- train prompt " in line for line in user.splitlines()) == 10
    assert "Not preferred topics: [mushroom, jellyfish]" in user
    other_seed = build_requests(parse_params("t", {**base, "requests": 3, "seed": 8}), pools)
    assert [body["messages"] for body in other_seed] != [body["messages"] for body in three]
    with pytest.raises(DataError, match=r"a\.txt: 5 example prompts, fewer than count=10"):
        build_requests(parse_params("t", {**base, "requests": 1}), [pools[0][:5], pools[1]])


def test_cache_key_covers_endpoint_model_messages_and_sampling():
    body = {
        "model": "m",
        "messages": [{"role": "user", "content": "x"}],
        "temperature": 1.0,
        "max_tokens": 9,
        "seed": 1,
    }
    key = cache_key("http://a/v1", body)
    assert cache_key("http://a/v1/", dict(reversed(body.items()))) == key
    for changed in (
        {"model": "n"},
        {"temperature": 0.5},
        {"max_tokens": 10},
        {"seed": 2},
        {"messages": [{"role": "user", "content": "y"}]},
        {"top_p": 0.9},
    ):
        assert cache_key("http://a/v1", {**body, **changed}) != key
    assert cache_key("http://b/v1", body) != key


def test_caches_written_before_the_client_moved_still_replay(tmp_path):
    """The keys below were computed by scripts/synthesize.py before the client moved to
    scripts/lib/chat_client.py: a cache written then must replay offline, with no server at all."""
    params = parse_params("t", raw_params("http://127.0.0.1:9/v1", example_file(tmp_path), requests=2, offline=True))
    bodies = build_requests(params, [read_example_pool(params.examples[0])])
    golden = [
        "ea3a698b81a64606a034e1869aa356f69502d8b83aec9ec6185b33fbc7aa7977",
        "f0202dd497a47fd071301cc89ebf0c431096a7e02d2e4fbf223e6e4d77218c36",
    ]
    assert [cache_key(params.base_url, body) for body in bodies] == golden
    cache = tmp_path / "out" / "cache"
    cache.mkdir(parents=True)
    for key, body in zip(golden, bodies):
        entry = {"base_url": params.base_url, "request": body, "response": reply(body)}
        (cache / f"{key}.json").write_text(json.dumps(entry), encoding="utf-8")
    report = synthesize("t", params, tmp_path / "out", None, log=lambda message: None)
    assert report["cache_hits"] == 2 and report["api_calls"] == 0 and report["prompts"] == 6


def test_backoff_is_exponential_capped_and_honours_retry_after():
    assert [backoff_delay(n, 1.0, 10.0, None) for n in (1, 2, 3, 4, 5)] == [1, 2, 4, 8, 10]
    assert backoff_delay(1, 1.0, 10.0, 5.0) == 5.0
    assert backoff_delay(3, 1.0, 10.0, 0.5) == 4.0
    assert backoff_delay(1, 1.0, 10.0, 99.0) == 10.0
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after("garbage") is None and parse_retry_after(None) is None
    assert 25 < parse_retry_after(time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() + 30))) <= 31


# ---------------------------------------------------------------- against the loopback server


def test_first_run_calls_then_replay_makes_zero_requests(tmp_path, server):
    report = run(tmp_path, server)
    assert len(server.received) == 3
    assert {r["path"] for r in server.received} == {"/v1/chat/completions"}
    assert report["api_calls"] == 3 and report["cache_hits"] == 0 and report["attempts"] == 3
    assert report["lines"] == {
        "total": 18,
        "kept": 9,
        "dropped_empty": 3,
        "dropped_header": 3,
        "dropped_too_long": 3,
        "dropped_truncated": 0,
    }
    assert report["usage"] == {"prompt_tokens": 300, "completion_tokens": 60}
    prompts = (tmp_path / "out" / "prompts.txt").read_text(encoding="utf-8").splitlines()
    assert len(prompts) == 9 and prompts[1].startswith("a glass tram ") and prompts[1].endswith(" in fog")
    assert len(cache_files(tmp_path)) == 3
    first_bytes = (tmp_path / "out" / "prompts.txt").read_bytes()

    replay = run(tmp_path, server, api_key=None)  # no key needed to replay
    assert len(server.received) == 3
    assert replay["api_calls"] == 0 and replay["cache_hits"] == 3
    assert (tmp_path / "out" / "prompts.txt").read_bytes() == first_bytes


def test_adding_requests_calls_only_the_new_ones(tmp_path, server):
    run(tmp_path, server, requests=2)
    first_two = [r["body"] for r in server.received]
    params = parse_params("t", raw_params(server.base_url, example_file(tmp_path), requests=5))
    logged: list[str] = []
    report = synthesize("t", params, tmp_path / "out", API_KEY, log=logged.append)
    assert logged[0] == "synthesize t: 5 requests, 2 cached, 3 to call"
    assert logged[1:4] == ["  1/3 requests done", "  2/3 requests done", "  3/3 requests done"]
    assert len(server.received) == 5
    assert report["cache_hits"] == 2 and report["api_calls"] == 3
    assert not any(body in first_two for body in (r["body"] for r in server.received[2:]))
    assert len(cache_files(tmp_path)) == 5


def test_429_500_timeout_and_garbage_are_retried_and_counted(tmp_path, server):
    server.faults = [("status", 429, 0.02), ("status", 500, None), ("slow", 1.5), ("garbage",), ("status", 503, None)]
    report = run(tmp_path, server, requests=1, timeout_s=0.3, max_attempts=6)
    assert report["attempts"] == 6 and len(server.received) == 6
    assert report["retries"] == {"timeout": 1, "http_429": 1, "http_5xx": 2, "connection": 0, "invalid_response": 1}
    assert report["api_calls"] == 1 and len(cache_files(tmp_path)) == 1


@pytest.mark.parametrize("timeout_s", [0.5, 1.0])
def test_timeout_is_a_deadline_for_the_whole_request(tmp_path, server, timeout_s):
    """A reply trickling a byte every 0.1 s never lets one read wait timeout_s, yet takes ~60 s in all:
    each attempt must end at timeout_s (a per-read timeout would wait for the last byte)."""
    server.faults = [("trickle", 0.1), ("trickle", 0.1)]
    start = time.monotonic()
    with pytest.raises(DataError, match=rf"request 0 failed: no response within {timeout_s:g}s \(after 2 attempts\)"):
        run(tmp_path, server, requests=1, timeout_s=timeout_s, max_attempts=2, backoff_base_s=0.01, backoff_cap_s=0.01)
    elapsed = time.monotonic() - start
    assert elapsed < 2 * timeout_s + 1.0, f"2 attempts of timeout_s={timeout_s} took {elapsed:.1f} s"
    assert len(server.received) == 2


def test_connection_refused_is_retried_then_fails_cleanly(tmp_path, server):
    server.close()  # nothing listens on its port any more
    with pytest.raises(DataError, match=r"request 0 failed: connection failed .*\(after 2 attempts\)") as info:
        run(tmp_path, server, requests=1, max_attempts=2)
    assert "\n" not in str(info.value)


def test_request_failing_past_the_cap_leaves_no_cache_entry_and_resumes(tmp_path, server):
    params = parse_params(
        "t", raw_params(server.base_url, example_file(tmp_path), requests=4, max_attempts=3, concurrency=1)
    )
    bodies = build_requests(params, [read_example_pool(params.examples[0])])
    server.fail_seed = bodies[2]["seed"]
    with pytest.raises(DataError) as info:
        synthesize("t", params, tmp_path / "out", API_KEY, log=lambda message: None)
    message = str(info.value)
    assert "\n" not in message
    assert message == (
        "synthesize t: request 2 failed: HTTP 500: injected 500 (after 3 attempts); "
        "2 of 4 requests cached, re-run to resume"
    )
    assert len(server.received) == 2 + 3  # requests 0 and 1, three attempts of 2, request 3 never started
    cached = {path.stem for path in cache_files(tmp_path)}
    assert cached == {cache_key(params.base_url, body) for body in bodies[:2]}
    assert not (tmp_path / "out" / "prompts.txt").exists() and not (tmp_path / "out" / "report.json").exists()

    server.fail_seed = None
    server.received.clear()
    report = synthesize("t", params, tmp_path / "out", API_KEY, log=lambda message: None)
    assert [r["body"] for r in server.received] == bodies[2:]
    assert report["cache_hits"] == 2 and report["api_calls"] == 2 and report["attempts"] == 2


def test_client_errors_are_not_retried_and_stop_new_requests(tmp_path, server):
    server.faults = [("status", 401, None)]
    with pytest.raises(DataError, match=r"request 0 failed: HTTP 401: injected 401; 0 of 20 requests cached"):
        run(tmp_path, server, requests=20, concurrency=1)
    assert len(server.received) == 1 and cache_files(tmp_path) == []


@pytest.mark.parametrize(
    "raw, shown",
    [
        (b'{"error": {"message": "model not found"}}', "HTTP 404: model not found"),  # OpenAI, vLLM, llama.cpp
        (b'{"error": "model \'x\' not found"}', "HTTP 404: model 'x' not found"),  # Ollama
        (b'{"detail": "Server is pinned to \'a\'"}', "HTTP 404: Server is pinned to 'a'"),  # transformers serve
        (b"Not Found\n\n<html>", "HTTP 404;"),  # no JSON: the status alone
    ],
)
def test_error_messages_of_common_servers(tmp_path, server, raw, shown):
    server.faults = [("body", 404, raw)]
    with pytest.raises(DataError) as info:
        run(tmp_path, server, requests=1)
    assert f"request 0 failed: {shown}" in str(info.value) and "\n" not in str(info.value)


def test_offline_mode_refuses_cache_misses_without_calling(tmp_path, server):
    run(tmp_path, server, requests=2)
    assert len(server.received) == 2
    assert run(tmp_path, server, requests=2, offline=True)["cache_hits"] == 2
    with pytest.raises(DataError, match=r"1 of 3 requests not in .*cache and offline is true"):
        run(tmp_path, server, requests=3, offline=True)
    assert len(server.received) == 2


def test_stale_temp_files_of_a_killed_run_are_removed(tmp_path, server):
    cache = tmp_path / "out" / "cache"
    cache.mkdir(parents=True)
    (cache / ".abc.json.tmp-123").write_text("{half", encoding="utf-8")
    mark_temp(cache / ".abc.json.tmp-123")  # as the killed run tagged it (an untagged one is the user's)
    run(tmp_path, server, requests=1)
    assert [path.name.startswith(".") for path in cache_files(tmp_path)] == [False]


def test_corrupt_cache_entry_is_a_clear_error(tmp_path, server):
    run(tmp_path, server, requests=1)
    entry = cache_files(tmp_path)[0]
    for corrupt in ("{not json", '{"response": {"choices": []}}'):
        entry.write_text(corrupt, encoding="utf-8")
        with pytest.raises(DataError, match=rf"{entry.name}: corrupt cache entry"):
            run(tmp_path, server, requests=1)


# ---------------------------------------------------------------- the CLI and the API key


def write_repo_params(root: Path, entries: dict) -> None:
    (root / "params.yaml").write_text(yaml.safe_dump({"synthesize": entries}), encoding="utf-8")


def cli(root: Path, *args: str, key: str | None = API_KEY) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    env["PYTHONPATH"] = str(REPO)
    env.pop("SYNTH_TEST_KEY", None)
    if key is not None:
        env["SYNTH_TEST_KEY"] = key
    return subprocess.run(
        [sys.executable, "-m", "scripts", "synthesize", *args],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_cli_sends_the_key_only_in_the_authorization_header(tmp_path, server):
    write_repo_params(tmp_path, {"x": raw_params(server.base_url, example_file(tmp_path), requests=2)})
    result = cli(tmp_path, "x", "data/synthesize/x")
    assert result.returncode == 0, result.stderr
    assert [r["authorization"] for r in server.received] == [f"Bearer {API_KEY}"] * 2
    assert API_KEY not in result.stdout + result.stderr
    for path in (tmp_path / "data").rglob("*"):
        if path.is_file():
            assert API_KEY not in path.read_text(encoding="utf-8"), path
    report = json.loads((tmp_path / "data/synthesize/x/report.json").read_text())
    assert report["api_calls"] == 2 and report["prompts"] == 6


def test_cli_errors_are_one_line_and_never_show_the_key(tmp_path, server):
    write_repo_params(tmp_path, {"x": raw_params(server.base_url, example_file(tmp_path), requests=1)})
    server.faults = [("echo_key",)]
    result = cli(tmp_path, "x", "out")
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    assert result.stderr.splitlines()[-1] == (
        "error: synthesize x: request 0 failed: HTTP 401: bad key Bearer ***; 0 of 1 requests cached, re-run to resume"
    )
    assert API_KEY not in result.stderr + result.stdout

    result = cli(tmp_path, "nope", "out")
    assert result.returncode == 2, result.stderr
    assert result.stderr == "error: params.yaml: synthesize has no entry 'nope' (entries: x)\n"


def test_servers_without_auth_get_no_authorization_header(tmp_path, server):
    write_repo_params(
        tmp_path, {"x": raw_params(server.base_url, example_file(tmp_path), requests=1, api_key_env=None)}
    )
    result = cli(tmp_path, "x", "out")
    assert result.returncode == 0, result.stderr
    assert server.received[0]["authorization"] is None


# ---------------------------------------------------------------- inside a real DVC repo


def test_dvc_repro_replays_from_the_persisted_cache(tmp_path, server):
    """The stage block of the real dvc.yaml: persist keeps the cache, a re-run only adds new requests."""
    venv_bin = Path(sys.executable).parent
    if not (venv_bin / "dvc").exists():
        pytest.skip("dvc not installed beside this python")
    repo = tmp_path / "repo"
    shutil.copytree(REPO / "scripts", repo / "scripts", ignore=shutil.ignore_patterns("__pycache__"))
    stage = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]["synthesize"]
    (repo / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"synthesize": stage}}), encoding="utf-8")
    examples = example_file(repo)
    entry = raw_params(server.base_url, examples.relative_to(repo), requests=2)
    entry["examples"][0]["path"] = "examples.txt"
    default = yaml.safe_load((REPO / "params.yaml").read_text())["synthesize"]["gpt4_style"]
    write_repo_params(repo, {"x": entry, "gpt4_style": default})

    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    env.update(PATH=f"{venv_bin}{os.pathsep}{env['PATH']}", DVC_NO_ANALYTICS="1", SYNTH_TEST_KEY=API_KEY)

    def sh(*args):
        result = subprocess.run(list(args), cwd=repo, env=env, capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stdout + result.stderr
        return result.stdout + result.stderr

    sh("git", "init", "-q")
    sh("dvc", "init", "-q")
    sh("dvc", "repro")
    assert len(server.received) == 2
    assert (repo / "data/synthesize/gpt4_style/prompts.txt").read_text() == ""  # the default: no call
    assert "Data and pipelines are up to date" in sh("dvc", "status")
    sh("dvc", "repro")
    assert len(server.received) == 2

    entry["requests"] = 3
    write_repo_params(repo, {"x": entry, "gpt4_style": default})
    sh("dvc", "repro")
    assert len(server.received) == 3  # only the new request
    lock = (repo / "dvc.lock").read_text()

    # a clone that only has the DVC cache: restore the outputs and force a replay, offline
    shutil.rmtree(repo / "data")
    sh("dvc", "checkout")
    entry["offline"] = True
    write_repo_params(repo, {"x": entry, "gpt4_style": default})
    sh("dvc", "repro", "-f", "synthesize@x")
    assert len(server.received) == 3
    assert json.loads((repo / "data/synthesize/x/report.json").read_text())["cache_hits"] == 3
    new_lock = yaml.safe_load((repo / "dvc.lock").read_text())["stages"]["synthesize@x"]
    old_lock = yaml.safe_load(lock)["stages"]["synthesize@x"]
    assert [o for o in new_lock["outs"] if o["path"].endswith("prompts.txt")] == [
        o for o in old_lock["outs"] if o["path"].endswith("prompts.txt")
    ]
