"""Round 10f's hostile-user breaks, one table per class (every row failed before its fix):

1. a chat reply cache entry answered whatever request its file name said: two entries swapped gave each image
   the other's caption, an entry copied over another duplicated prompts, all at exit 0;
2. a table with a null where a value is needed, or with dictionary-encoded text, was a traceback
   (caption@S, captions@S, through scripts/lib/tables.py check_table and check_unique);
3. synthesize@N wrote reply lines into prompts.txt that ingest (its next stage, `kind: text`) refuses;
4. generate@S named its progress after the output folder, and a model reference that is no hub id loaded
   diffusers (~40 s) before its one-line error.
"""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image
from test_chat_hostile import caption_entry, one_error_line, synth_entry, write_params

from helpers import REPO, cli, env, send_json
from helpers.loopback import JsonServer

pytestmark = pytest.mark.usefixtures("no_proxy")

COLOURS = {"red": (200, 30, 30), "blue": (30, 30, 200)}


class EchoServer(JsonServer):
    """A chat server whose reply names what was asked: the image's digest (caption@S) or the request's
    seed (synthesize@N), so a reply given to another request shows. `lines` replaces synthesize's reply."""

    def __init__(self, lines: str | None = None):
        self.lines = lines
        super().__init__()

    def answer(self, handler, body):
        last = body["messages"][-1]["content"]
        if isinstance(last, list):  # a vision request: the image as a data: URI
            digest = hashlib.sha256(last[1]["image_url"]["url"].encode()).hexdigest()[:8]
            content = f"A plain square picture with the number {digest} written on it."
        else:
            content = (
                self.lines if self.lines is not None else f"1. a red kite {body['seed']}\n2. a boat {body['seed']}"
            )
        message = {"role": "assistant", "content": content}
        send_json(handler, 200, {"choices": [{"message": message, "finish_reason": "stop"}]})

    def __enter__(self) -> EchoServer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def png(colour: str) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), COLOURS[colour]).save(buf, format="PNG")
    return buf.getvalue()


def two_images(root: Path) -> Path:
    folder = root / "images"
    folder.mkdir(exist_ok=True)
    for colour in COLOURS:
        (folder / f"{colour}.png").write_bytes(png(colour))
    return folder


def setup(root: Path, stage: str, base_url: str, **overrides) -> None:
    if stage == "synthesize":
        write_params(root, "synthesize", {"t": synth_entry(base_url, requests=2, **overrides)})
    else:
        entry = caption_entry(two_images(root), base_url, max_images=None, **overrides)
        write_params(root, "caption", {"t": entry})


# ---------------------------------------------------------------- 1: a cache entry answers only its own request


def _swap(entries: list[Path]) -> list[Path]:
    first, second = (path.read_bytes() for path in entries)
    entries[0].write_bytes(second)
    entries[1].write_bytes(first)
    return entries  # the first one read is refused


def _copy_over(entries: list[Path]) -> list[Path]:
    entries[1].write_bytes(entries[0].read_bytes())
    return entries[1:]


def _edit(entries: list[Path], change) -> list[Path]:
    entry = json.loads(entries[0].read_text(encoding="utf-8"))
    change(entry)
    entries[0].write_text(json.dumps(entry), encoding="utf-8")
    return entries[:1]


TAMPERED = {  # name: (what is done to the two entries -> the entries either of which is refused, the words)
    "swapped": (_swap, "cache entry of another request"),
    "copied-over-another": (_copy_over, "cache entry of another request"),
    "request-edited": (lambda e: _edit(e, lambda x: x["request"].update(model="other")), "of another request"),
    "base-url-edited": (lambda e: _edit(e, lambda x: x.update(base_url="http://127.0.0.2:9/v1")), "another request"),
    "request-missing": (lambda e: _edit(e, lambda x: x.pop("request")), "corrupt cache entry"),
}


@pytest.mark.parametrize("stage", ["caption", "synthesize"])
@pytest.mark.parametrize("case", sorted(TAMPERED))
def test_a_cache_entry_whose_request_does_not_hash_to_its_name_is_one_line(tmp_path, monkeypatch, capfd, stage, case):
    tamper, words = TAMPERED[case]
    with EchoServer() as server:
        setup(tmp_path, stage, server.base_url)
        assert cli([stage, "t", "out"], tmp_path, monkeypatch, capfd).returncode == 0
        entries = sorted((tmp_path / "out" / "cache").glob("*.json"))
        assert len(entries) == 2
        setup(tmp_path, stage, server.base_url, offline=True)  # the replay: a clone with the cache pulled
        again = cli([stage, "t", "out"], tmp_path, monkeypatch, capfd)
        assert again.returncode == 0, again.stderr  # the entries as written pass the check
        refused = tamper(entries)
        line = one_error_line(cli([stage, "t", "out"], tmp_path, monkeypatch, capfd))
    assert any(path.name in line for path in refused) and words in line, line


# ---------------------------------------------------------------- 2: nulls and dictionary-encoded text in tables


def _text(values: list) -> pa.Array:
    return pa.array(values, pa.large_string())


def _caption(root: Path, base_url: str, manifest: pa.Table) -> list:
    """caption@S of an images folder with `manifest`, online: a dictionary-encoded one was captioned before."""
    pq.write_table(manifest, two_images(root) / "manifest.parquet")
    write_params(root, "caption", {"t": caption_entry(root / "images", base_url, max_images=None)})
    return ["caption", "t", "out"]


def _captions(root: Path, manifest: pa.Table, rows: dict | None = None, without: str = "") -> list:
    """captions@S on a prefilter-shaped table of two rows (less the column `without`) and an images folder
    with `manifest`."""
    table = {
        "id": _text(["r0", "r1"]),
        "source": _text(["s", "s"]),
        "prompt": _text(["A red square", "A blue square"]),
        "split": _text([None, None]),
        "image": _text([None, None]),
        "width": pa.array([None, None], pa.float64()),
        "height": pa.array([None, None], pa.float64()),
        "meta": _text(["{}", "{}"]),
        "text": _text(["a red square", "a blue square"]),
        "position": pa.array([0, 1]),
    }
    table = {name: column for name, column in {**table, **(rows or {})}.items() if name != without}
    pq.write_table(pa.table(table), root / "in.parquet")
    pq.write_table(manifest, two_images(root) / "manifest.parquet")
    (root / "params.yaml").write_text("{}\n", encoding="utf-8")
    return ["captions", "s", "in.parquet", "images", "out.parquet"]


def _manifest(ids: list, files: list, encode: tuple[str, ...] = ()) -> pa.Table:
    columns = {"id": _text(ids), "file": _text(files)}
    return pa.table(
        {name: column.dictionary_encode() if name in encode else column for name, column in columns.items()}
    )


GOOD = (["r0", "r1"], ["red.png", "blue.png"])
TABLES = {  # name: (argv for a root and a server, the error line's end)
    **{  # round 11: a column caption_table copies was a KeyError traceback when missing
        f"captions-input-without-{column}": (
            lambda r, u, column=column: _captions(r, _manifest(*GOOD), without=column),
            f"in.parquet: no '{column}' column",
        )
        for column in ("source", "split", "width", "height", "meta")
    },
    "caption-null-file": (
        lambda r, u: _caption(r, u, _manifest(["r0", "r1"], ["red.png", None])),
        "images/manifest.parquet: row 2: column 'file' is missing (null or NaN)",
    ),
    "caption-null-id": (
        lambda r, u: _caption(r, u, _manifest(["r0", None], GOOD[1])),
        "images/manifest.parquet: row 2: column 'id' is missing (null or NaN)",
    ),
    "caption-dictionary-id-and-file": (
        lambda r, u: _caption(r, u, _manifest(*GOOD, encode=("id", "file"))),
        "column 'id' must hold text, found dictionary-encoded values",
    ),
    "caption-dictionary-file": (
        lambda r, u: _caption(r, u, _manifest(*GOOD, encode=("file",))),
        "column 'file' must hold text, found dictionary-encoded values",
    ),
    "captions-dictionary-manifest-file": (
        lambda r, u: _captions(r, _manifest(*GOOD, encode=("file",))),
        "images/manifest.parquet: column 'file' must hold text, found dictionary-encoded values",
    ),
    "captions-null-manifest-file": (
        lambda r, u: _captions(r, _manifest(GOOD[0], ["red.png", None])),
        "images/manifest.parquet: row 2: column 'file' is missing (null or NaN)",
    ),
    "captions-null-input-id": (
        lambda r, u: _captions(r, _manifest(*GOOD), {"id": _text(["r0", None])}),
        "in.parquet: row 2: column 'id' is missing (null or NaN)",
    ),
    "captions-dictionary-input-prompt": (
        lambda r, u: _captions(r, _manifest(*GOOD), {"prompt": _text(["A red", "A blue"]).dictionary_encode()}),
        "in.parquet: column 'prompt' must hold text, found dictionary-encoded values",
    ),
}


@pytest.mark.parametrize("case", sorted(TABLES))
def test_a_null_or_dictionary_encoded_column_is_one_line_naming_the_row(tmp_path, monkeypatch, capfd, case):
    argv, end = TABLES[case]
    with EchoServer() as server:
        line = one_error_line(cli(argv(tmp_path, server.base_url), tmp_path, monkeypatch, capfd))
    assert line.endswith(end), line
    assert not (tmp_path / "out.parquet").exists() and not (tmp_path / "out" / "captions.parquet").exists()


# ---------------------------------------------------------------- 3: synthesize writes only lines ingest reads

LONG = "a very long prompt " * 3500  # 66,500 bytes: over ingest's 65,536-byte line cap, under max_chars
REPLIES = {  # name: (the reply to each of 2 requests, the prompts kept of it, its drops beyond the usual ones)
    "nul-inside-a-line": ("1. a red kite\n2. a boat\x00 at sea\n3. an owl", ["a red kite", "an owl"], {"nul_byte": 1}),
    "nul-at-the-end": ("- a red kite\x00\n- a small boat", ["a small boat"], {"nul_byte": 1}),
    "every-line-nul": ("1. \x00a\n2. b\x00c", [], {"nul_byte": 2}),
    "a-line-over-the-ingest-cap": (f"1. {LONG}\n2. a red kite", ["a red kite"], {"line_too_long": 1}),
}


@pytest.mark.parametrize("case", sorted(REPLIES))
def test_synthesize_drops_a_line_ingest_refuses_and_counts_it(tmp_path, monkeypatch, capfd, case):
    reply, kept, dropped = REPLIES[case]
    with EchoServer(lines=reply) as server:
        write_params(tmp_path, "synthesize", {"t": synth_entry(server.base_url, requests=2, max_chars=1_000_000)})
        result = cli(["synthesize", "t", "out"], tmp_path, monkeypatch, capfd)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "out" / "prompts.txt").read_text(encoding="utf-8").splitlines() == kept * 2
    lines = json.loads((tmp_path / "out" / "report.json").read_text(encoding="utf-8"))["lines"]
    for reason, n in dropped.items():
        assert lines[f"dropped_{reason}"] == 2 * n
    assert lines["kept"] == 2 * len(kept)
    # the next stage reads every line written, under on_error: fail
    write_params(tmp_path, "sources", {"syn": {"kind": "text", "path": "out/prompts.txt", "on_error": "fail"}})
    if kept:
        ingested = cli(["ingest", "syn", "prompts.parquet"], tmp_path, monkeypatch, capfd)
        assert ingested.returncode == 0, ingested.stderr
        assert pq.read_table(tmp_path / "prompts.parquet").column("prompt").to_pylist() == kept * 2


# ---------------------------------------------------------------- 4: generate's progress label and model check

BAD_MODELS = ["package:nonexist/model", "owner/na me", "owner/--name", "nobody/not-in-the-cache-t2i"]
LOAD = """
import sys
from scripts.cli import main
try:
    main(sys.argv[1:])
except SystemExit:
    pass
print("diffusers loaded" if "diffusers" in sys.modules else "diffusers not loaded")
"""


@pytest.mark.parametrize("model", BAD_MODELS)
def test_a_model_that_is_no_cached_hub_id_is_refused_before_diffusers_loads(tmp_path, model):
    write_params(tmp_path, "generate", {"model": model})
    pq.write_table(pa.table({"id": ["r0"], "text": ["a red kite"], "prompt": ["a red kite"]}), tmp_path / "in.parquet")
    run = subprocess.run(
        [sys.executable, "-c", LOAD, "generate", "g", "in.parquet", "out"],
        cwd=tmp_path,
        env={**env(), "PYTHONPATH": str(REPO), "HF_HUB_CACHE": str(tmp_path / "hub"), "HF_HUB_OFFLINE": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    errors = [line for line in run.stderr.splitlines() if line.startswith("error: ")]
    assert errors and errors[0].startswith(f"error: generate.model={model}: "), run.stderr
    assert "Traceback" not in run.stderr and run.stdout.strip() == "diffusers not loaded", run.stdout


def test_generate_progress_is_labelled_with_the_source_not_the_folder(tmp_path, tiny_model_dir, capfd):
    from scripts.generate import generate
    from scripts.lib.params import Generate

    table = pa.table({"id": ["r0"], "text": ["a red kite"], "prompt": ["a red kite"]}).to_pandas()
    settings = Generate(model=str(tiny_model_dir), steps=3, batch_size=1)
    capfd.readouterr()
    generate(table, settings, tmp_path / "g2", prefix="diffusiondb")
    err = capfd.readouterr().err
    assert "generate@diffusiondb: 1" in err and "generate@g2" not in err, err
