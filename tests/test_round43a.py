"""Round 43a: one line rule wherever text is split into lines or written as lines (docs/sources.md).

A line ends at "\\n", "\\r\\n" or a bare "\\r", never at U+2028, U+2029, U+0085, VT, FF or 0x1C-0x1E:
- synthesize's parse_completion split a chat reply with str.splitlines, so one prompt holding U+2028 became
  two kept prompts at exit 0; it now splits as ingest's text reader does (text_lines.split_lines).
- every JSON Lines writer (dumps_json: metadata.jsonl; clean-text's fast writer) escapes U+2028, U+2029 and
  U+0085: kept raw, a reader splitting with str.splitlines read torn records.
- refusals of a non-ASCII name say "ASCII letters" (`café` was refused as not "letters, digits").
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from scripts.lib.errors import DataError
from scripts.lib.io import write_json
from scripts.lib.nesting import dumps_json
from scripts.lib.text_lines import split_lines
from scripts.synthesize import parse_completion

REPO = Path(__file__).resolve().parents[1]
SEPARATORS = {"u2028": "\u2028", "u2029": "\u2029", "u0085": "\u0085"}


def completion(content: str) -> list[str]:
    return parse_completion(content, max_chars=500, drop_header_lines=True)[0]


COMPLETIONS = [
    ("u2028", "a red fox in snow\u2028at dawn\nsecond", ["a red fox in snow\u2028at dawn", "second"]),
    ("u2029", "a blue kite\u2029over hills\nsecond", ["a blue kite\u2029over hills", "second"]),
    ("u0085", "an old mill\u0085by a river\nsecond", ["an old mill\u0085by a river", "second"]),
    ("vt_ff", "a cat\x0bon a mat\x0cat noon\nsecond", ["a cat\x0bon a mat\x0cat noon", "second"]),
    ("x1c_x1e", "a boat\x1cat sea\x1dtoday\x1eat dusk", ["a boat\x1cat sea\x1dtoday\x1eat dusk"]),
    ("guard_crlf_cr_lf", "first one\r\nsecond one\rthird one\n", ["first one", "second one", "third one"]),
]


@pytest.mark.parametrize(("content", "expected"), [c[1:] for c in COMPLETIONS], ids=[c[0] for c in COMPLETIONS])
def test_a_reply_splits_into_prompts_as_ingest_reads_lines(content, expected):
    prompts = completion(content)
    assert prompts == expected
    # prompts.txt, as synthesize writes it, gives ingest's reader the same prompts back
    assert split_lines("\n".join(prompts)) == prompts


def test_guard_line_counts_match_str_splitlines_for_plain_replies():
    counts = parse_completion("a red fox\n\n---\nsecond one\n", max_chars=500, drop_header_lines=True)[1]
    assert (counts["total"], counts["kept"], counts["dropped_empty"]) == (4, 2, 2)
    assert parse_completion("", max_chars=500, drop_header_lines=True)[1]["total"] == 0


@pytest.mark.parametrize("char", SEPARATORS.values(), ids=SEPARATORS.keys())
def test_a_jsonl_record_is_one_line_for_any_line_reader(char):
    record = {"file_name": "images/a.png", "text": f"a fox{char}at dawn", "id": "a"}
    text = dumps_json(record, "metadata.jsonl", ensure_ascii=False)  # as export writes metadata.jsonl
    assert len(text.splitlines()) == 1 and char not in text
    assert json.loads(text) == record


@pytest.mark.parametrize("char", SEPARATORS.values(), ids=SEPARATORS.keys())
def test_a_json_file_keeps_the_same_strings(tmp_path, char):
    write_json({"note": f"x{char}y"}, tmp_path / "r.json")
    raw = (tmp_path / "r.json").read_text(encoding="utf-8")
    assert char not in raw and json.loads(raw) == {"note": f"x{char}y"}


@pytest.mark.slow  # a subprocess: about 1.6 s
def test_guard_clean_text_writes_one_record_a_line(tmp_path):
    """A guard: the default rules already turn these characters into spaces; the writer escapes any left."""
    source = tmp_path / "in.txt"
    prompts = [f"a red fox {name}{char}at dawn in the snow" for name, char in SEPARATORS.items()]
    source.write_text("\n".join(prompts) + "\n", encoding="utf-8")
    out = tmp_path / "out.jsonl"
    done = subprocess.run(
        [sys.executable, "-m", "scripts", "clean-text", str(source), str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,  # the repository's params.yaml, read only
    )
    assert done.returncode == 0, done.stderr
    raw = out.read_text(encoding="utf-8")
    assert raw.splitlines() == raw.split("\n")[:-1]  # no line reader tears a record
    assert len([json.loads(line) for line in raw.split("\n")[:-1]]) == len(prompts)


def plain_id_refusal() -> str:
    from scripts.lib.paths import check_plain_ids

    with pytest.raises(DataError) as caught:
        check_plain_ids(pd.Series(["café"]), Path("rows.parquet"))
    return str(caught.value)


def entry_name_refusal() -> str:
    from scripts.lib.params.base import check_name

    with pytest.raises(ValueError) as caught:
        check_name("café", "source")
    return str(caught.value)


def repo_id_refusal() -> str:
    from scripts.tools.hub_http import check_publish_names

    with pytest.raises(DataError) as caught:
        check_publish_names("me/café", "v1", "--tag", None)
    return str(caught.value)


def prefix_refusal() -> str:
    from scripts.lib.render_plan import INDEX_PREFIX

    assert not INDEX_PREFIX.fullmatch("café")  # the regex is ASCII; the message is checked in the source below
    return (REPO / "scripts/lib/render_plan.py").read_text(encoding="utf-8")


REFUSALS = [
    ("row_id", plain_id_refusal),
    ("entry_name", entry_name_refusal),
    ("repo_id", repo_id_refusal),
    ("index_prefix", prefix_refusal),
]


@pytest.mark.parametrize("refusal", [r[1] for r in REFUSALS], ids=[r[0] for r in REFUSALS])
def test_a_non_ascii_name_is_refused_as_not_ascii(refusal):
    said = refusal()
    assert "ASCII letters, digits" in said and "(letters, digits" not in said
