"""synthesize@N: new prompts from a chat model, the reference team's ChatGPT/GPT-4 augmentation.

Each request shows the model example prompts (drawn with a seeded RNG from example files, plus fixed
examples), asks for more "in the similar style" and lists topics to avoid. The endpoint is any
OpenAI-compatible chat-completions server (OpenAI, vLLM, llama.cpp server, Ollama).

Reproducibility: every response is cached under OUT/cache/<sha256>.json, keyed by (base_url, request
body). The cache is a DVC output with `persist: true`, so `dvc repro` on a clone with the cache
pulled replays without network and only requests that are not cached yet reach the API. A request is
written to the cache only after it succeeded, one file per request, atomically: a failed or killed
run leaves every finished request cached, and the next run resumes from there. The client (HTTP,
retries, cache, key redaction) is scripts/lib/chat_client.py, shared with caption@S.

Outputs in OUT/: prompts.txt (one prompt per line, a normal `kind: text` source), cache/, report.json.
Pure parts (params -> request bodies, completion text -> prompts) come first; HTTP and files last.
"""

from __future__ import annotations

import functools
import hashlib
import heapq
import os
import random
import re
import string
import sys
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Annotated, Any, BinaryIO, TextIO

import typer

from scripts.lib import chat_client
from scripts.lib.chat_client import (  # noqa: F401 - re-exported: synthesize's API before the client moved
    Job,
    ResponseCache,
    backoff_delay,
    cache_key,
    call_missing,
    parse_retry_after,
    read_completion,
)
from scripts.lib.chat_stream import OrderedCalls
from scripts.lib.errors import DataError
from scripts.lib.io import atomic_path, check_output_kind, check_outputs_ours, shown, write_json
from scripts.lib.key_redaction import redact_secrets
from scripts.lib.params import ExampleSource, SynthesizeEntry, load_section, parse
from scripts.lib.safe_paths import open_regular, own_regular_file
from scripts.lib.temps import output_lock
from scripts.lib.text_lines import line_batches, line_problem, prompt_problem, split_lines

# ---------------------------------------------------------------- params


def parse_params(name: str, raw: Any) -> SynthesizeEntry:
    """One entry of params.yaml `synthesize` (a plain mapping) as its model (scripts/lib/params/); a bad
    key or value is one line naming `synthesize.<name>.<key>`."""
    if not isinstance(raw, dict):
        raise DataError(f"params.yaml: synthesize.{name}: expected a mapping, got {type(raw).__name__}")
    return parse(SynthesizeEntry, raw, at=("synthesize", name))


# ---------------------------------------------------------------- requests (pure)


def request_seed(seed: int, index: int) -> int:
    """Seed of request `index`: depends only on (seed, index), so adding requests keeps the old ones."""
    digest = hashlib.sha256(f"synthesize\x00{seed}\x00{index}".encode()).hexdigest()
    return int(digest[:8], 16) & 0x7FFFFFFF


def render_user_message(params: SynthesizeEntry, examples: list[str]) -> str:
    lines = [f"- {example}" for example in [*examples, *params.fixed_examples]]
    return params.template.format(examples="\n".join(lines), avoid_topics=", ".join(params.avoid_topics))


def build_request(params: SynthesizeEntry, pools: list[list[str]], index: int) -> dict:
    """The chat-completions body of request `index` (examples drawn with its own seeded RNG)."""
    seed = request_seed(params.seed, index)
    rng = random.Random(seed)
    examples: list[str] = []
    for source, pool in zip(params.examples, pools):
        examples.extend(rng.sample(pool, source.count))
    messages = [{"role": "user", "content": render_user_message(params, examples)}]
    if params.system is not None:
        messages.insert(0, {"role": "system", "content": params.system})
    # `seed` makes two requests with the same examples distinct (and servers that honour it, repeatable)
    body = {**params.extra_body, "model": params.model, "messages": messages, "seed": seed}
    if params.temperature is not None:
        body["temperature"] = params.temperature
    if params.max_tokens is not None:
        body["max_tokens"] = params.max_tokens
    return body


def check_pools(params: SynthesizeEntry, pools: list[list[str]]) -> None:
    for source, pool in zip(params.examples, pools):
        if source.count > len(pool):
            raise DataError(f"{shown(source.path)}: {len(pool)} example prompts, fewer than count={source.count}")


# A request's messages, in characters: far past any model's context (a million tokens is about 4M characters).
# A template repeating {examples} 30,000 times (530 KB of params.yaml) built a 7 GB message for every request
MAX_MESSAGE_CHARS = 32 << 20


def check_message_size(name: str, params: SynthesizeEntry, pools: list[list[str]]) -> None:
    """DataError before any request is built when the longest draw (each source's `count` longest prompts,
    every field of the template filled) makes messages over MAX_MESSAGE_CHARS."""
    examples = sum(len(line) + 3 for line in params.fixed_examples)  # "- " and a newline each
    for source, pool in zip(params.examples, pools):
        examples += sum(heapq.nlargest(source.count, map(len, pool))) + 3 * source.count
    topics = sum(len(topic) + 2 for topic in params.avoid_topics)
    fields = [name for _, name, _, _ in string.Formatter().parse(params.template) if name]
    longest = len(params.template) + len(params.system or "")
    longest += fields.count("examples") * examples + fields.count("avoid_topics") * topics
    if longest > MAX_MESSAGE_CHARS:
        raise DataError(
            f"synthesize {shown(name)}: a request's messages may reach {longest} characters, over {MAX_MESSAGE_CHARS} "
            "(the template repeats {examples} or {avoid_topics}, or the examples are long): trim one of them"
        )


def build_requests(params: SynthesizeEntry, pools: list[list[str]]) -> list[dict]:
    """Every request body at once: for a few requests (tests); the stage streams them (RequestKeys)."""
    check_pools(params, pools)
    return [build_request(params, pools, index) for index in range(params.requests)]


class RequestKeys:
    """The cache key of every request, 32 bytes each (a million: 32 MB), each body built once to key it and
    dropped: a million bodies of a thousand examples held at once filled memory in seconds."""

    def __init__(self, params: SynthesizeEntry, pools: list[list[str]]):
        self.params, self.pools = params, pools
        self.digests = bytearray()
        for index in range(params.requests):
            self.digests += bytes.fromhex(cache_key(params.base_url, build_request(params, pools, index)))

    def __len__(self) -> int:
        return len(self.digests) // 32

    def key(self, index: int) -> str:
        return self.digests[32 * index : 32 * (index + 1)].hex()

    def requests(self) -> Iterator[tuple[int, Callable[[], dict], str]]:
        """(index, a function building its body, key): a body is built again only when it is sent."""
        for index in range(len(self)):
            yield index, functools.partial(build_request, self.params, self.pools, index), self.key(index)


# ---------------------------------------------------------------- parsing (pure)

_BULLET = re.compile(r"^(?:[-*•–—]\s+|\d{1,4}[.)]\s+|\(\d{1,4}\)\s+)")
_QUOTE_PAIRS = {'"': '"', "“": "”", "„": "“", "'": "'", "‘": "’", "`": "`"}
_ALNUM = re.compile(r"\w")
LINE_COUNTS = ("total", "kept", "dropped_empty", "dropped_header", "dropped_too_long", "dropped_truncated")


def clean_line(line: str) -> str:
    """Strip bullets/numbering ("- ", "* ", "1. ", "1)", "(1)"), wrapping quotes and markdown bold."""
    text = line.replace("**", "").strip()
    while True:
        stripped = _strip_quotes(_BULLET.sub("", text, count=1).strip())
        if stripped == text:
            return text
        text = stripped


def _strip_quotes(text: str) -> str:
    """'"a red kite",' -> 'a red kite'; left alone when the quotes do not pair or recur inside."""
    body = text[:-1] if text.endswith(",") else text
    close = _QUOTE_PAIRS.get(body[:1])
    if close is None or len(body) < 2 or body[-1] != close:
        return text
    inner = body[1:-1]
    if body[0] in inner or close in inner:  # '"a" and "b"' is not one quoted prompt
        return text
    return inner.strip()


def parse_completion(
    content: str, *, max_chars: int, drop_header_lines: bool, truncated: bool = False
) -> tuple[list[str], dict[str, int]]:
    """Completion text -> prompts, one per line, with a count per drop reason.

    `truncated` (finish_reason "length") drops the last non-blank line: the model stopped inside it. A line
    ingest would refuse in prompts.txt (a NUL byte, over its line cap: text_lines.line_problem) is dropped
    as `dropped_<its reason>`, a count present only when it is not 0 (the reports of earlier runs stay).
    """
    lines = split_lines(content)  # docs/sources.md's line: a reply's U+2028 is inside a prompt, as ingest reads it
    if lines[-1] == "":
        lines.pop()  # after the reply's last line end (str.splitlines gave no line there)
    last = max((i for i, line in enumerate(lines) if line.strip()), default=-1)
    counts = dict.fromkeys(LINE_COUNTS, 0)
    prompts = []
    for i, line in enumerate(lines):
        counts["total"] += 1
        text = clean_line(line)
        if not _ALNUM.search(text):  # "", "---", "```"
            counts["dropped_empty"] += 1
        elif truncated and i == last:
            counts["dropped_truncated"] += 1
        elif drop_header_lines and (text.endswith(":") or text.startswith("#")):
            counts["dropped_header"] += 1
        elif len(text) > max_chars:
            counts["dropped_too_long"] += 1
        elif (problem := line_problem(text)) is not None:  # the next stage, ingest, stopped at it
            counts[f"dropped_{problem[0]}"] = counts.get(f"dropped_{problem[0]}", 0) + 1
        else:
            prompts.append(text)
    counts["kept"] = len(prompts)
    return prompts, counts


# ---------------------------------------------------------------- example files


MAX_EXAMPLE_BYTES = 128 << 20  # of one source's text files: a pool is held in memory while requests are built
MAX_EXAMPLE_PROMPTS = 2_000_000


def example_files(path: Path) -> list[Path]:
    """The files an example source reads (and its report hashes): the file named, or a folder's own regular
    `.txt` and `.parquet` files; a link in it would send what it points to to the API."""
    if not path.is_dir():
        return [path]
    return [own_regular_file(p, path) for p in sorted(path.iterdir()) if p.suffix.lower() in (".txt", ".parquet")]


def open_example(file: Path, source: Path) -> BinaryIO:
    """An example file opened without waiting (a FIFO hung the run) as a regular file; in a folder, one
    that is still its own (not a link, one name) as it is opened."""
    in_folder = file != source
    try:
        return open_regular(file, follow=not in_folder, one_link=in_folder)
    except OSError as exc:
        raise DataError(f"{shown(file)}: cannot read ({exc.strerror or exc})") from None


def read_example_pool(source: ExampleSource) -> list[str]:
    """Prompts of one example source, in file order (bullets stripped, blank lines skipped); its text read
    in bounded pieces, each line and the whole source capped (a 3 GB file without a newline filled memory)."""
    path = Path(source.path)
    if not path.exists():
        raise DataError(f"{shown(path)}: example source not found (run its upstream stage first)")
    pool: list[str] = []
    budget = [MAX_EXAMPLE_BYTES]
    for file in example_files(path):
        if file.suffix.lower() == ".parquet":
            pool.extend(_read_parquet_prompts(file, source.column))
        else:
            with open_example(file, path) as f:
                pool.extend(_text_prompts(f, file, budget))
        if len(pool) > MAX_EXAMPLE_PROMPTS:
            raise DataError(f"{shown(path)}: more than {MAX_EXAMPLE_PROMPTS} example prompts; use a sample of them")
    pool = [prompt for prompt in pool if prompt]
    if not pool:
        raise DataError(f"{shown(path)}: no example prompts")
    if (problem := next(filter(None, map(prompt_problem, pool)), None)) is not None:  # ingest refuses it too
        raise DataError(f"{shown(path)}: an example {problem[1]}; the API would be sent it as is")
    return pool


def _text_prompts(f: BinaryIO, file: Path, budget: list[int]) -> Iterator[str]:
    """The prompts of one text file; `budget`: the bytes its source may still read (spent here)."""
    offset = 0
    for batch in line_batches(f, file):
        data = b"".join(batch)
        budget[0] -= len(data)
        if budget[0] < 0:
            raise DataError(f"{shown(file)}: example files over {MAX_EXAMPLE_BYTES} bytes; use a sample of them")
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise DataError(f"{shown(file)}: not UTF-8 text (byte {offset + exc.start})") from None
        offset += len(data)
        # a batch ends at a line end: splitting it splits the file's text where splitting it whole did
        yield from (clean_line(line) for line in split_lines(text) if line.strip())


def _read_parquet_prompts(file: Path, column: str | None) -> list[str]:
    from scripts.lib.tables import check_cells, read_parquet

    if column is None:
        raise DataError(f"{shown(file)}: a parquet example source needs `column` (e.g. text)")
    frame = read_parquet(file)
    if column not in frame.columns:
        raise DataError(
            f"{shown(file)}: no column {shown(repr(column)[:80])} (columns: {shown(', '.join(map(str, frame.columns))[:200])})"
        )
    # text only: bytes, lists or numbers went to the paid API as their repr ("b'a cat'", "['a' 'b']")
    check_cells(frame, shown(file), text=(column,))
    return [value.strip() for value in frame[column].dropna()]


def file_sha256(path: Path) -> str:
    """sha256 of an example source: of the files it reads (example_files), each streamed; a folder's entries
    named by their path in it. A link in the folder was read through, whole."""
    digest = hashlib.sha256()
    for file in example_files(path):
        digest.update(str(file.relative_to(path) if path.is_dir() else file.name).encode() + b"\x00")
        one = hashlib.sha256()
        with open_example(file, path) as f:
            while chunk := f.read(1 << 20):
                one.update(chunk)
        digest.update(one.digest())
    return digest.hexdigest()


# ---------------------------------------------------------------- the stage


def synthesize(
    name: str,
    params: SynthesizeEntry,
    out_dir: Path,
    api_key: str | None,
    log=lambda message: print(shown(message), file=sys.stderr),
) -> dict:
    """Run entry `name`: replay cached requests, call the API for the rest, write OUT/prompts.txt.

    Returns the report (also written to OUT/report.json). A request that fails for good (fatal
    status, or max_attempts spent) stops new requests and fails the stage with a DataError; what
    finished stays cached, so the next run resumes. OUT is locked for the whole run: a second run
    into it fails at once (it would pay for the same requests).
    """
    check_output_kind(out_dir)  # a link to a folder would be written through
    with output_lock(out_dir):
        return _synthesize(name, params, out_dir, api_key, log)


def _synthesize(name: str, params: SynthesizeEntry, out_dir: Path, api_key: str | None, log) -> dict:
    check_outputs_ours(out_dir, OUTPUTS)  # each one ours and unchanged: a report naming this entry proves
    # nothing of the files beside it (a copy of the folder keeps it; a user edits prompts.txt beside it)
    cache = ResponseCache(out_dir / "cache")
    cache.check_folder()  # a link refused before the examples are read, as the outputs are
    pools = [read_example_pool(source) for source in params.examples] if params.requests else []
    check_pools(params, pools)
    if params.requests:  # before any body is built: each is built to key it
        check_message_size(name, params, pools)
    # after the inputs pass: a run refused for a bad examples file left an empty cache/ it had made
    cache.open()
    total = params.requests
    # keys first (32 bytes each, the bodies dropped): the counts and offline's refusal come before any call
    keys = RequestKeys(params, pools)
    missing = sum(not os.path.lexists(cache.path(keys.key(index))) for index in range(total))
    log(f"synthesize {shown(name)}: {total} requests, {total - missing} cached, {missing} to call")
    if missing and params.offline:
        raise DataError(
            f"synthesize {shown(name)}: {missing} of {total} requests not in "
            f"{shown(cache.directory)} and offline is true (pull the cache or set offline: false)"
        )

    calls = OrderedCalls(
        base_url=params.base_url,
        api_key=api_key,
        policy=params,
        concurrency=params.concurrency,
        cache=cache,
        calls=missing,
        log=log,
        desc="synthesize",
    )
    with atomic_path(out_dir / "prompts.txt") as tmp:
        with tmp.open("w", encoding="utf-8") as out:
            prompts, line_counts, usage = _collect_prompts(params, calls.run(keys.requests()), out)
        if calls.failures:
            index, message = min(calls.failures)
            raise DataError(
                f"synthesize {shown(name)}: request {index} failed: {redact_secrets(message, api_key)}; "
                f"{total - missing + calls.called} of {total} requests cached, re-run to resume"
            )
        report = {
            "name": name,
            "base_url": params.base_url,
            "model": params.model,
            "requests": total,
            "cache_hits": total - missing,
            "api_calls": missing,
            "attempts": calls.stats.attempts,
            "retries": calls.stats.retries,
            "lines": line_counts,
            "prompts": prompts,
            "usage": usage,
            "example_sources": [
                {"path": source.path, "sha256": file_sha256(Path(source.path)), "prompts": len(pool)}
                for source, pool in zip(params.examples, pools)
            ],
        }
        write_json(report, out_dir / "report.json")  # first: it proves prompts.txt ours to the next run
    log(f"synthesize {shown(name)}: {prompts} prompts -> {shown(out_dir / 'prompts.txt')}")
    return report


OUTPUTS = ("prompts.txt", "report.json")  # cache/ is only added to: a killed first run leaves it, and resumes


def _collect_prompts(params: SynthesizeEntry, responses: Iterable[tuple[int, dict]], out: TextIO):
    """Write the prompts of each response, in order, to `out`; (prompt count, line counts, token usage)."""
    prompts = 0
    counts = dict.fromkeys(LINE_COUNTS, 0)
    usage = {"prompt_tokens": 0, "completion_tokens": 0}
    for _, response in responses:
        content, truncated = read_completion(response)
        kept, line_counts = parse_completion(
            content, max_chars=params.max_chars, drop_header_lines=params.drop_header_lines, truncated=truncated
        )
        out.write("".join(f"{prompt}\n" for prompt in kept))
        prompts += len(kept)
        for reason, n in line_counts.items():
            counts[reason] = counts.get(reason, 0) + n
        for kind in usage:
            value = (response.get("usage") or {}).get(kind)
            usage[kind] += value if isinstance(value, int) else 0
    return prompts, counts, usage


def api_key_from_env(params: SynthesizeEntry) -> str | None:
    """The key from the env var named by `api_key_env` (refused, unprinted, if it holds a control character)."""
    return chat_client.api_key_from_env(params.api_key_env)


def cli(
    name: Annotated[str, typer.Argument(help="entry of params.yaml: synthesize")],
    out_dir: Annotated[Path, typer.Argument(help="writes prompts.txt, cache/ and report.json here")],
) -> None:
    """Ask a chat model for prompts like the examples (cached: replays offline)."""
    entries = load_section("synthesize")
    if name not in entries:
        raise DataError(f"params.yaml: synthesize has no entry '{name}' (entries: {', '.join(entries) or 'none'})")
    params = entries[name]
    synthesize(name, params, out_dir, api_key_from_env(params))
