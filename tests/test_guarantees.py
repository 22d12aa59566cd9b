"""Issue 14: nothing a user does loses data, leaks a secret, hangs, or ends in a traceback.

Every case runs a real command: in-process through `scripts.cli.main` (fast: a workspace in a temp
dir, its own params.yaml), or as a subprocess where the process itself is the subject (signals, a
file-size limit, a tar truncated while read). A refused command must exit 2 with ONE stderr line
`error: ...` and leave the workspace byte for byte as it was (no output, no temp or lock file).
"""
from __future__ import annotations

import json
import os
import random
import re
import resource
import shutil
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pandas as pd
import pytest
import yaml

from helpers import write_tar
from scripts.cli import main
from scripts.lib.io import MARKER, output_lock, stable_id, write_parquet

REPO = Path(__file__).resolve().parents[1]
PARAMS = yaml.safe_load((REPO / "params.yaml").read_text(encoding="utf-8"))
RAW = REPO / "data" / "raw"
SUMMARY = re.compile(r"^\S+: [\d,]+ .* in [\d.]+ s \(")  # scripts/lib/progress.py's one line per finished loop
LEFTOVER = re.compile(r"\.(tmp-|staging-)")
PNG = bytes.fromhex(  # a valid 1x1 PNG
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360000002000001e221bc330000000049454e44ae426082")


# ---------------------------------------------------------------- helpers


def snapshot(root: Path) -> dict[str, bytes | None]:
    """Every path under root -> its bytes (None for a folder): 'nothing touched' is an equal snapshot."""
    return {p.relative_to(root).as_posix(): (None if p.is_dir() else p.read_bytes()) for p in sorted(root.rglob("*"))}


def leftovers(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if LEFTOVER.search(p.name))


def error_line(err: str) -> str:
    """The one line a failed or interrupted command prints (progress summaries aside); asserts it is one."""
    lines = [line for line in err.splitlines() if line.strip() and not SUMMARY.match(line)]
    assert len(lines) == 1, f"expected one stderr line, got:\n{err}"
    assert "Traceback" not in err
    return lines[0]


def cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def write_params(root: Path, **sections) -> None:
    params = {**PARAMS, **sections}
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False), encoding="utf-8")


@pytest.fixture
def ws(tmp_path, monkeypatch) -> Path:
    """A workspace with the repository's params.yaml, as the current folder."""
    write_params(tmp_path)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def split_rows(n: int, source: str, image: Path, split: str | None = None) -> pd.DataFrame:
    ids = [stable_id(source, i) for i in range(n)]
    return pd.DataFrame({"id": ids, "source": source, "split": split, "text": [f"a red fox number {i}" for i in range(n)],
                         "orig_text": [f"a red fox number {i}" for i in range(n)], "image": str(image),
                         "width": 1, "height": 1})


def make_splits(root: Path, source: str = "diffusiondb", n: int = 40) -> None:
    """data/splits/<source>/{train,validation}.parquet as split@S writes them (marker included); the
    image in the source's image store (release refuses images outside params.yaml's sources.S.images)."""
    image = root / "data" / "images" / source / "img.png"
    image.parent.mkdir(parents=True, exist_ok=True)
    image.write_bytes(PNG)
    folder = root / "data" / "splits" / source
    folder.mkdir(parents=True)
    rows = split_rows(n, source, image)
    write_parquet(rows.iloc[: n * 3 // 4].assign(split="train"), folder / "train.parquet")
    write_parquet(rows.iloc[n * 3 // 4 :].assign(split="validation"), folder / "validation.parquet")
    (folder / MARKER).write_text("", encoding="utf-8")


# ---------------------------------------------------------------- data loss: refused, nothing touched


def _shards(root: Path) -> None:
    (root / "SHARDS").mkdir()
    shutil.copy(RAW / "dalle3" / "data-000000.tar", root / "SHARDS")


def _captions(root: Path) -> None:
    (root / "data" / "captions").mkdir(parents=True)
    write_parquet(split_rows(20, "chatgpt", root / "img.png"), root / "data" / "captions" / "chatgpt.parquet")


def _user_file(path: str, text: str = "mine, not the pipeline's\n"):
    def make(root: Path) -> None:
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text(text, encoding="utf-8")
    return make


def _raw_with_user_source(root: Path) -> None:
    shutil.copytree(RAW, root / "data" / "raw")
    _user_file("data/raw/mine/prompts.txt")(root)


def _user_dataset(root: Path) -> None:
    make_splits(root)
    for split in ("train", "validation"):
        _user_file(f"mine/{split}/photo.png")(root)


REFUSED = {
    # name: (setup steps, argv, substrings of the one error line)
    "simpletuner_txt_dir_is_the_shards": ([_shards], ["simpletuner", "SHARDS", "st.parquet", "--txt-dir", "SHARDS"], ["SHARDS"]),
    "simpletuner_txt_dir_is_the_working_folder": ([_shards, _user_file("notes.txt")],
                                                  ["simpletuner", "SHARDS", "st.parquet", "--txt-dir", "."], ["SHARDS"]),
    "simpletuner_txt_dir_is_a_user_folder": ([_shards, _user_file("notes/todo.md")],
                                             ["simpletuner", "SHARDS", "st.parquet", "--txt-dir", "notes"], ["notes", "todo.md"]),
    "split_into_the_parent_of_its_folder": ([_captions, make_splits],
                                            ["split", "chatgpt", "data/captions/chatgpt.parquet", "data/splits"],
                                            ["data/splits", "diffusiondb"]),
    "sample_data_over_a_user_source": ([_raw_with_user_source], ["sample-data", "data/raw"], ["data/raw", "mine/prompts.txt"]),
    "release_into_the_releases_folder": ([make_splits, _user_file("data/releases/v1/README.md")],
                                         ["release", "v2", "data/splits", "data/releases"], ["data/releases", "'v1'"]),
    "release_over_a_user_dataset": ([_user_dataset], ["release", "v2", "data/splits", "mine"], ["mine/train", "photo.png"]),
    "release_into_its_input": ([make_splits], ["release", "v2", "data/splits", "data/splits"], ["input"]),
    "release_into_the_working_folder": ([make_splits, _user_file("notes.txt")], ["release", "v2", "data/splits", "."], ["input"]),
    "file_output_is_a_folder": ([_user_file("in.txt", "a red fox in the snow\n"), _user_file("out/keep.txt")],
                                ["clean-text", "in.txt", "out"], ["out", "is a folder"]),
    "file_output_under_a_file": ([_user_file("in.txt", "a red fox in the snow\n"), _user_file("afile")],
                                 ["clean-text", "in.txt", "afile/out.jsonl"], ["afile", "is a file"]),
    "folder_output_is_a_file": ([_captions, _user_file("data/splits/chatgpt")],
                                ["split", "chatgpt", "data/captions/chatgpt.parquet", "data/splits/chatgpt"],
                                ["data/splits/chatgpt", "not a folder"]),
}


@pytest.mark.parametrize("case", REFUSED)
def test_a_command_never_replaces_what_it_did_not_write(ws, capsys, case):
    steps, argv, needles = REFUSED[case]
    for step in steps:
        step(ws)
    before = snapshot(ws)
    code, _, err = cli(capsys, *argv)
    line = error_line(err)
    assert code == 2 and line.startswith("error: "), err
    for needle in needles:
        assert needle in line
    assert snapshot(ws) == before, "the workspace changed"


def test_outputs_it_wrote_are_replaced_on_the_next_run(ws, capsys):
    """The marker makes re-runs work: a folder output is replaced whole, even with other contents."""
    _captions(ws)
    for _ in range(2):
        assert cli(capsys, "split", "chatgpt", "data/captions/chatgpt.parquet", "data/splits/chatgpt")[0] == 0
    assert sorted(p.name for p in (ws / "data/splits/chatgpt").iterdir()) == [MARKER, "train.parquet", "validation.parquet"]
    _shards(ws)
    assert cli(capsys, "simpletuner", "SHARDS", "st.parquet", "--txt-dir", "txt")[0] == 0
    (ws / "txt" / "old-caption.txt").write_text("from an earlier compile", encoding="utf-8")
    assert cli(capsys, "simpletuner", "SHARDS", "st.parquet", "--txt-dir", "txt")[0] == 0
    assert not (ws / "txt" / "old-caption.txt").exists() and (ws / "txt" / MARKER).is_file()
    make_splits(ws)
    for _ in range(2):
        code, _, err = cli(capsys, "release", "v2", "data/splits", "data/releases/v2")
        assert code == 0, err
    assert (ws / "data/releases/v2/train" / MARKER).is_file()
    assert leftovers(ws) == [] and not list(ws.rglob("*.tmp-lock"))


def test_sample_data_rewrites_the_committed_data_raw_without_a_marker(ws, capsys):
    """data/raw is committed to git without a marker: rewriting it is allowed (every file is rewritten)
    and adds nothing (tests/test_sample_data.py compares it byte for byte)."""
    shutil.copytree(RAW, ws / "data" / "raw")
    before = snapshot(ws / "data" / "raw")
    assert cli(capsys, "sample-data", "data/raw")[0] == 0
    assert snapshot(ws / "data" / "raw") == before


# ---------------------------------------------------------------- temp files, locks, concurrent runs


def test_a_killed_runs_temp_files_are_removed_by_the_next_run(ws, capsys):
    _user_file("in.txt", "a red fox in the snow\n")(ws)
    for name in (".out.jsonl.tmp-new", ".out.jsonl.tmp-lock"):
        (ws / name).write_text("half", encoding="utf-8")
    make_splits(ws)
    (ws / "data/releases/.v2.staging-k1ll3d/train").mkdir(parents=True)
    (ws / "data/splits/.chatgpt.tmp-old").mkdir()
    _captions(ws)
    assert cli(capsys, "clean-text", "in.txt", "out.jsonl")[0] == 0
    assert cli(capsys, "release", "v2", "data/splits", "data/releases/v2")[0] == 0
    assert cli(capsys, "split", "chatgpt", "data/captions/chatgpt.parquet", "data/splits/chatgpt")[0] == 0
    assert leftovers(ws) == []


def test_a_second_run_of_the_same_output_is_refused_while_one_runs(ws, capsys):
    _user_file("in.txt", "a red fox in the snow\n")(ws)
    with output_lock(ws / "out.jsonl"):  # held as another process would (flock: per open file)
        code, _, err = cli(capsys, "clean-text", "in.txt", "out.jsonl")
    assert code == 2 and "another run is writing" in error_line(err)
    assert not (ws / "out.jsonl").exists()
    assert cli(capsys, "clean-text", "in.txt", "out.jsonl")[0] == 0  # the lock went with its holder


# ---------------------------------------------------------------- exit codes: one line, never a traceback


def _nested(depth: int = 100_000) -> str:
    return "[" * depth + "]" * depth


def _source(root: Path, name: str, **changes) -> None:
    sources = {**PARAMS["sources"], name: {**PARAMS["sources"][name], "on_error": "fail", **changes}}
    write_params(root, sources=sources)


def _deep_dalle3(root: Path) -> None:
    write_tar(root / "in" / "data-000000.tar", [("0000.png", PNG), ("0000.json", _nested().encode())])
    _source(root, "dalle3", path="in")


def _deep_manifest(root: Path) -> None:
    (root / "in").mkdir()
    (root / "in" / "manifest.json").write_text(_nested(), encoding="utf-8")
    _source(root, "laion_buckets", path="in")


def _deep_csv(root: Path) -> None:
    (root / "in").mkdir()
    (root / "in" / "openprompts.csv").write_text(f'prompt,raw_data\na red fox,"{_nested(50_000)}"\n', encoding="utf-8")
    _source(root, "openprompts", path="in")


DEEP_JSON = {
    "dalle3_member": (_deep_dalle3, "dalle3", ["data-000000.tar", "json"]),
    "webdataset_manifest": (_deep_manifest, "laion_buckets", ["manifest.json"]),
    "openprompts_raw_data": (_deep_csv, "openprompts", ["openprompts.csv", "row"]),
}


@pytest.mark.parametrize("case", DEEP_JSON)
def test_deeply_nested_json_is_one_line(ws, capsys, case):
    setup, source, needles = DEEP_JSON[case]
    setup(ws)
    code, _, err = cli(capsys, "ingest", source, "out.parquet")
    line = error_line(err)
    assert code == 2 and all(n in line for n in needles), line
    assert not (ws / "out.parquet").exists() and leftovers(ws) == []


def _subprocess(argv: list[str], cwd: Path, **kwargs) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=120, **kwargs)


def _file_size_limit() -> None:  # in the child: writes past 64 KiB fail with EFBIG, as on a full disk
    resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, 64 * 1024))
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)


@pytest.mark.parametrize("writer", ["clean-text", "ingest"])
def test_a_full_disk_is_one_line_and_leaves_nothing(ws, writer):
    lines = "".join(f"a red fox number {i} jumping over the lazy dog in the snow\n" for i in range(20_000))
    _user_file("in/prompts.txt", lines)(ws)
    _source(ws, "chatgpt", path="in")
    argv = ["clean-text", "in/prompts.txt", "out/x.jsonl"] if writer == "clean-text" else ["ingest", "chatgpt", "out/x.parquet"]
    result = _subprocess([sys.executable, "-m", "scripts", *argv], ws, preexec_fn=_file_size_limit)
    line = error_line(result.stderr)
    assert result.returncode == 2 and line.startswith("error: out/x.") and "too large" in line.lower(), result.stderr
    assert not list((ws / "out").iterdir())


def test_a_tar_truncated_while_read_is_one_line(ws):
    """A memory-mapped tar cut short under the reader killed the process with SIGBUS (exit 135)."""
    shutil.copytree(RAW / "dalle3", ws / "in")
    _source(ws, "dalle3", path="in")
    script = (
        "import os, sys\n"
        "import scripts.lib.readers.dalle3 as reader\n"
        "from scripts.cli import main\n"
        "walk = reader.iter_samples\n"
        "def cut(buf, *args, **kwargs):\n"
        "    os.truncate('in/data-000000.tar', 1024)  # another process rewrites the shard\n"
        "    yield from walk(buf, *args, **kwargs)\n"
        "reader.iter_samples = cut\n"
        "sys.exit(main(['ingest', 'dalle3', 'out.parquet']))\n"
    )
    result = _subprocess([sys.executable, "-c", script], ws)
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert "data-000000.tar" in error_line(result.stderr) and "shrank" in result.stderr
    assert not (ws / "out.parquet").exists() and leftovers(ws) == []


# ---------------------------------------------------------------- signals: 130 / 143, one line, nothing left


@pytest.fixture(scope="module")
def signal_ws(tmp_path_factory) -> Path:
    """Inputs big enough that each stage runs about a second: 20k prompts, a 400-image release."""
    root = tmp_path_factory.mktemp("signals")
    lines = "".join(f"a {c} fox number {i} in the {w} snow at dawn, oil painting\n"
                    for i, (c, w) in enumerate(zip(["red", "grey", "small"] * 7000, ["deep", "fresh"] * 10500)))
    (root / "data/raw/big").mkdir(parents=True)
    (root / "data/raw/big/prompts.txt").write_text(lines, encoding="utf-8")
    sources = {**PARAMS["sources"], "big": {"kind": "text", "path": "data/raw/big", "images": "data/images/big",
                                            "on_error": "fail", "clean": True}}
    write_params(root, sources=sources)
    make_splits(root, n=400)
    cwd = os.getcwd()
    os.chdir(root)
    try:
        for argv in (["ingest", "big", "data/prompts/big.parquet"], ["clean-rules", "data/clean/rules.json"],
                     ["clean", "big", "data/prompts/big.parquet", "data/clean/big.parquet", "--rules", "data/clean/rules.json"]):
            assert main(argv) == 0
    finally:
        os.chdir(cwd)
    return root


STAGES = {
    "ingest": ["ingest", "big", "data/prompts/big.parquet"],
    "clean": ["clean", "big", "data/prompts/big.parquet", "data/clean/big.parquet", "--rules", "data/clean/rules.json"],
    "dedup": ["dedup", "big", "data/clean/big.parquet", "data/dedup/big.parquet"],
    "release": ["release", "v2", "data/splits", "data/releases/v2"],
}


def interrupt(root: Path, argv: list[str], signum: int, seed: str) -> subprocess.CompletedProcess | None:
    """Run the command and send `signum` after a random delay (shorter each time it finished first,
    or the signal came after its result line: a process ending cannot be interrupted any more)."""
    rng = random.Random(seed)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    high = 2.0
    for _ in range(4):
        delay = rng.uniform(0.3, high)
        proc = subprocess.Popen([sys.executable, "-m", "scripts", *argv], cwd=root, env=env, start_new_session=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(delay)
        if proc.poll() is None:
            os.killpg(proc.pid, signum)  # the whole group, as Ctrl-C does: worker processes get it too
            out, err = proc.communicate(timeout=60)
            finished = proc.returncode in (0, -signum) and out.strip()  # the signal came after its last line
            if not finished:
                return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
        else:
            proc.communicate()
        high = max(0.35, delay * 0.6)
    return None  # finished every time: nothing to interrupt on this machine


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
@pytest.mark.parametrize("stage", STAGES)
def test_a_signal_stops_a_stage_with_one_line_and_no_leftovers(signal_ws, stage, signum):
    result = interrupt(signal_ws, STAGES[stage], signum, f"{stage}:{signum}")
    if result is None:
        pytest.skip("the stage always finished before the signal")
    name = signal.Signals(signum).name
    assert result.returncode == 128 + signum, (result.returncode, result.stderr)
    assert error_line(result.stderr) == f"interrupted ({name})"
    assert leftovers(signal_ws) == [] and not list(signal_ws.rglob("*.tmp-lock"))


@pytest.mark.parametrize("delay", [0.0, 0.5], ids=["while-workers-import", "while-workers-clean"])
def test_ctrl_c_during_a_clean_with_worker_processes_is_one_line(signal_ws, tmp_path, delay):
    """runtime.workers: 2 over 21k prompts runs worker processes: Ctrl-C reaches every worker too (each
    used to print its own KeyboardInterrupt traceback, and multiprocessing.Pool's teardown hung 4 runs
    in 12): one line, exit 130, no leftovers, whether the workers are still importing or cleaning."""
    root = tmp_path / "ws"
    shutil.copytree(signal_ws / "data", root / "data", ignore=shutil.ignore_patterns("releases", "splits", "images"))
    params = yaml.safe_load((signal_ws / "params.yaml").read_text(encoding="utf-8"))
    params.setdefault("runtime", {})["workers"] = 2
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False), encoding="utf-8")
    proc = subprocess.Popen([sys.executable, "-m", "scripts", *STAGES["clean"]], cwd=root, start_new_session=True,
                            env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _worker_process(proc.pid)  # a worker process is up
        time.sleep(delay)
        assert proc.poll() is None, "clean finished before the signal"
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C does: the parent and every worker
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 130, (proc.returncode, err)
    assert error_line(err) == "interrupted (SIGINT)"
    assert leftovers(root) == [] and not list(root.rglob("*.tmp-lock"))


@pytest.mark.parametrize("stage", ["clean", "release"])
def test_after_a_sigkill_the_next_run_leaves_nothing_behind(signal_ws, stage):
    interrupt(signal_ws, STAGES[stage], signal.SIGKILL, f"{stage}:kill")
    result = _subprocess([sys.executable, "-m", "scripts", *STAGES[stage]], signal_ws)
    assert result.returncode == 0, result.stderr
    assert leftovers(signal_ws) == [] and not list(signal_ws.rglob("*.tmp-lock"))


# ---------------------------------------------------------------- secrets: the API key stays in its header

API_KEY = "sk-guarantee-NEVER-WRITE-ME-0123456789"


def fragments(text: str, key: str = API_KEY, n: int = 8) -> list[str]:
    return sorted({key[i : i + n] for i in range(len(key) - n + 1) if key[i : i + n] in text})


class Server:
    """A loopback HTTP server; `respond(handler, body)` answers each POST; every request is recorded."""

    def __init__(self, respond):
        self.requests: list[dict] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _record(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length)) if length else None
                server.requests.append({"method": self.command, "authorization": self.headers.get("Authorization"), "body": body})
                return body

            def do_POST(self):
                respond(self, self._record())

            do_GET = do_POST

            def send(self, status, payload, headers=()):
                raw = json.dumps(payload).encode()
                self.send_response(status)
                for name, value in [("Content-Type", "application/json"), ("Content-Length", str(len(raw))), *headers]:
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(raw)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def completion(content: str) -> dict:
    return {"id": "c", "object": "chat.completion", "model": "m",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}]}


@pytest.fixture
def servers():
    started: list[Server] = []
    yield lambda respond: started.append(Server(respond)) or started[-1]
    for server in started:
        server.close()


@pytest.fixture(autouse=True)
def no_proxy(monkeypatch):
    for name in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)


def synthesize_ws(root: Path, base_url: str, monkeypatch, key: str = API_KEY) -> None:
    from test_synthesize import raw_params

    (root / "examples.txt").write_text("".join(f"an example prompt {i}\n" for i in range(10)), encoding="utf-8")
    entry = raw_params(f"{base_url}/v1", root / "examples.txt", requests=2, max_attempts=2, api_key_env="T2I_GUARANTEE_KEY")
    write_params(root, synthesize={"t": entry})
    monkeypatch.setenv("T2I_GUARANTEE_KEY", key)


def synthesize_error(err: str) -> str:
    """synthesize logs its progress on stderr; the error is the last line, and the only `error:` one."""
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and err.rstrip().splitlines()[-1] == errors[0], err
    return errors[0]


def written_text(root: Path) -> str:
    return "\n".join(p.read_bytes().decode("utf-8", "replace") for p in root.rglob("*") if p.is_file() and p.name != "params.yaml")


def test_a_redirect_never_carries_the_key_to_another_origin(ws, capsys, monkeypatch, servers):
    elsewhere = servers(lambda h, body: h.send(200, completion("a stolen prompt")))
    configured = servers(lambda h, body: h.send(302, {}, [("Location", f"{elsewhere.url}/v1/chat/completions")]))
    synthesize_ws(ws, configured.url, monkeypatch)
    code, out, err = cli(capsys, "synthesize", "t", "out")
    assert code == 2 and "redirect" in synthesize_error(err), err
    assert [r["authorization"] for r in elsewhere.requests if r["authorization"]] == []
    assert fragments(out + err + written_text(ws)) == []


def test_a_server_echoing_the_key_never_gets_it_written(ws, capsys, monkeypatch, servers):
    def echo(handler, body):
        auth = handler.headers.get("Authorization")
        handler.send(200, {**completion(f"a red fox {auth}\n- a grey owl {API_KEY[3:20]} at dusk\n- a blue jay"),
                           "echo": {"headers": {"authorization": auth}}, auth: "as a key"})
    synthesize_ws(ws, servers(echo).url, monkeypatch)
    code, out, err = cli(capsys, "synthesize", "t", "out")
    assert code == 0, err
    assert (ws / "out/prompts.txt").read_text(encoding="utf-8").count("a blue jay") == 2
    assert fragments(out + err + written_text(ws)) == []


def test_an_error_reply_quoting_part_of_the_key_is_redacted(ws, capsys, monkeypatch, servers):
    server = servers(lambda h, body: h.send(401, {"error": {"message": f"invalid key ...{API_KEY[4:-2]}"}}))
    synthesize_ws(ws, server.url, monkeypatch)
    code, out, err = cli(capsys, "synthesize", "t", "out")
    assert code == 2 and "HTTP 401" in synthesize_error(err)
    assert fragments(out + err + written_text(ws)) == []


@pytest.mark.parametrize("bad_key", [API_KEY + "\r", API_KEY + "\n", "sk-with space-0123456789", "sk-ünïcode-0123456789"])
def test_a_key_that_cannot_be_a_header_is_refused_without_printing_it(ws, capsys, monkeypatch, servers, bad_key):
    server = servers(lambda h, body: h.send(200, completion("- a red fox")))
    synthesize_ws(ws, server.url, monkeypatch, key=bad_key)
    code, out, err = cli(capsys, "synthesize", "t", "out")
    assert code == 2 and "T2I_GUARANTEE_KEY" in error_line(err)
    assert fragments(out + err, key=bad_key.strip()) == [] and server.requests == []


def test_a_deeply_nested_reply_is_one_line(ws, capsys, monkeypatch, servers):
    def deep(handler, body):
        raw = _nested().encode()
        handler.send_response(200)
        handler.send_header("Content-Length", str(len(raw)))
        handler.end_headers()
        handler.wfile.write(raw)
    synthesize_ws(ws, servers(deep).url, monkeypatch)
    code, _, err = cli(capsys, "synthesize", "t", "out")
    assert code == 2 and "not JSON" in synthesize_error(err)


# ---------------------------------------------------------------- dvc repro never records an interrupted stage


def _worker_process(parent: int, timeout: float = 60) -> int:
    """The pid of a clean worker (scripts/lib/workers.py) started by `parent`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            children = Path(f"/proc/{parent}/task/{parent}/children").read_text().split()
        except OSError:
            children = []
        for pid in children:
            try:
                if b"scripts.lib.workers" in Path(f"/proc/{pid}/cmdline").read_bytes():
                    return int(pid)
            except OSError:
                continue
        time.sleep(0.02)
    raise AssertionError(f"no worker process of {parent} within {timeout} s")


def _stage_process(group: int, marker: bytes, timeout: float = 60) -> int:
    """The pid of the stage process (command line holding `marker`) in process group `group`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                if marker in (entry / "cmdline").read_bytes() and os.getpgid(int(entry.name)) == group:
                    return int(entry.name)
            except (OSError, ProcessLookupError):
                continue
        time.sleep(0.02)
    raise AssertionError(f"no stage process {marker!r} appeared")


def _lock_entry(repo: Path, stage: str) -> dict | None:
    lock = repo / "dvc.lock"
    return (yaml.safe_load(lock.read_text(encoding="utf-8"))["stages"].get(stage)) if lock.exists() else None


@pytest.mark.slow
@pytest.mark.parametrize("target", ["stage", "group"])
def test_dvc_repro_never_records_an_interrupted_stage(tmp_path, target):
    """Ctrl-C (SIGINT to the whole process group) or SIGINT to the stage alone while `dvc repro` runs
    ingest@chatgpt: the stage exits 130, dvc repro fails, dvc.lock keeps the stage's previous entry (DVC
    trusts the exit code: a 0 here would record a half-done stage), and the next repro finishes."""
    from helpers import copy_repo, env, run

    repo = copy_repo(tmp_path / "repo")
    run(["dvc", "repro", "ingest@chatgpt"], repo)
    recorded = _lock_entry(repo, "ingest@chatgpt")
    lines = "".join(f"a {c} fox number {i} in the {w} snow at dawn, oil painting\n"
                    for i, (c, w) in enumerate(zip(["red", "grey", "small"] * 200_000, ["deep", "fresh"] * 300_000)))
    (repo / "data/raw/chatgpt/prompts.txt").write_text(lines, encoding="utf-8")  # ~3 s of ingest
    proc = subprocess.Popen([sys.executable, "-m", "dvc", "repro", "ingest@chatgpt"], cwd=repo, env=env(),
                            start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        stage = _stage_process(proc.pid, b"scripts\x00ingest\x00chatgpt")
        time.sleep(0.8)  # inside the stage's work
        assert proc.poll() is None, "dvc repro finished before the signal"
        if target == "stage":
            os.kill(stage, signal.SIGINT)
        else:
            os.killpg(proc.pid, signal.SIGINT)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode != 0, f"dvc repro succeeded after its stage was interrupted:\n{out[-2000:]}\n{err[-2000:]}"
    if target == "stage":
        assert "interrupted (SIGINT)" in err and "130" in out + err, err[-2000:]
    assert _lock_entry(repo, "ingest@chatgpt") == recorded, "dvc.lock recorded the interrupted stage"
    assert run(["dvc", "status", "ingest@chatgpt"], repo).stdout.strip() != "Data and pipelines are up to date."
    run(["dvc", "repro", "ingest@chatgpt"], repo)
    assert _lock_entry(repo, "ingest@chatgpt") != recorded
    assert "up to date" in run(["dvc", "status", "ingest@chatgpt"], repo).stdout
    assert leftovers(repo / "data") == [] and not list((repo / "data").rglob("*.tmp-lock"))
