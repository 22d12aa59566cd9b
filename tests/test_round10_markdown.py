"""A dataset diff in a PR comment shows the data as text and does nothing else (round 10): a prompt, id,
source or removal reason holding a mention, an issue reference, HTML, a comment opener or a backtick was
pasted raw into GitHub Markdown (pinging people, hiding or breaking the rest of the comment)."""

from __future__ import annotations

import re

import pandas as pd
import pytest

from scripts.tools.diff import Snapshot, compare, to_markdown

HOSTILE = {  # case: (id, text, what must not survive into the Markdown)
    "a user mention": ("r1", "portrait by @octocat, trending", "@octocat"),
    "a team mention": ("r2", "cc @github/security please", "@github/security"),
    "an issue reference": ("r3", "see owner/repo#12 and #7", "#12"),
    "a details closer": ("r4", "a cat</details></details> on a mat", "</details></details>"),
    "an unclosed comment": ("r5", "a dog <!-- everything after is hidden", "<!--"),
    "a carriage return": ("r6", "first line\r| fake | row |", "\r"),
    "an image tag": ("r7", '<img src="https://evil.example/pixel.gif"> sunset', "<img"),
    "a link": ("r8", "[click me](https://evil.example) forest", "](https"),
}
PLAIN = "a watercolor painting of a lighthouse at dawn"


def report_for(id_: str, text: str, source: str = "chatgpt") -> dict:
    def snapshot(rev, rows):
        return Snapshot(rev, "v9", pd.DataFrame(rows, columns=["id", "source", "split", "text"]), pd.DataFrame(), {})

    keep = ("k1", "gpt4", "train", PLAIN)
    a = snapshot("v8", [keep, (f"{id_}-old", source, "train", text)])
    b = snapshot("v9", [keep, (id_, source, "train", text)])
    return compare(a, b, {f"{id_}-old": f"dedup:duplicate_of={id_} jaccard=0.91"})


def table_rows(markdown: str) -> list[str]:
    return [line for line in markdown.splitlines() if line.startswith("| ") and not line.startswith("|---")]


@pytest.mark.parametrize("case", HOSTILE.values(), ids=HOSTILE.keys())
def test_data_in_a_diff_comment_is_shown_inert(case):
    id_, text, raw = case
    markdown = to_markdown(report_for(id_, text))
    assert raw not in markdown
    assert markdown.count("<details>") == markdown.count("</details>")
    assert "<!--" not in markdown and "\r" not in markdown
    for row in table_rows(markdown):  # no cell adds a column: every `|` inside one is escaped
        assert len(re.split(r"(?<!\\)\|", row)[1:-1]) in (3, 4, 7), row  # added, removed, the splits


def test_a_backtick_in_an_id_stays_inside_its_code_span():
    markdown = to_markdown(report_for("a`b", "a red fox"))
    assert "| ``a`b`` |" in markdown


def test_plain_prompts_read_as_written():
    markdown = to_markdown(report_for("r9", PLAIN))
    assert f"| `r9` | chatgpt | {PLAIN} |" in markdown
