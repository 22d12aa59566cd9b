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


NOT_COMPARED = {  # case: an error line of a release that could not be compared, quoting its data
    "a repeated hostile id": "pr:data/releases/v2/rows.parquet: duplicate id '@everyone </details><!-- #1' at row 2",
    "a missing image's name": "pr:data/releases/v2: image '@octocat/<img src=x>.png' of id r1 not found",
    "a team in a path": "pr:data/releases/v2/rows.parquet: no 'id' column (@github/security #7)",
}


@pytest.mark.parametrize("note", NOT_COMPARED.values(), ids=NOT_COMPARED.keys())
def test_why_a_release_was_not_compared_is_shown_inert(note):
    """round 12: the note was pasted raw, so a hostile id in the error line pinged, linked or hid the rest."""
    from scripts.tools.pr_comment import release_details

    text = "\n".join(release_details([("v2", "v2", None, f"not compared: {note}")]))
    assert "@everyone" not in text and "@octocat" not in text and "@github" not in text
    assert "<!--" not in text and "</details>" not in text and "<img" not in text and "#1" not in text.split("`v2`")[1]
