"""Round 24i: hostile inputs against the local side of `publish --dry-run` (the Hub folder and its data card).

1. The release's own card (data/releases/V/README.md, pasted under "Release card") was read whole and
   decoded with no check: bytes not UTF-8 were a UnicodeDecodeError traceback (exit 1), a 2 MB file went
   into the Hub card whole, and a byte-order mark before the front matter hid it (the card showed
   `license: ...` as text). It is now read bounded (MAX_RELEASE_CARD_BYTES) and decoded as UTF-8 with an
   optional mark, one line otherwise.
2. Text from the command line and params.yaml went into the card as Markdown or Python source: `--repo-id
   'me/x"); import os #'` became the card's `load_dataset(...)` line a reader copies and runs, an escape
   code or a line break in it too; a source's licence holding `|`, a line break or `<!--` split or hid
   LICENSE.md's table. The repository id is checked as the Hub checks it, the snippet's strings are
   literals (json.dumps), and the licence table's cells are shown as text (markdown_text.cell).
3. A caption, source or id holding a Unicode format character reached `diff`'s Markdown and pr-comment's
   comment raw: a bidi override (U+202E) or isolate (U+2066) reordered what a reviewer reads, a zero-width
   space or a tag character (U+E0041, invisible "ASCII smuggling") hid text. markdown_text.one_line shows
   each as its escape (`\\u202e`), the zero-width joiner of emoji sequences aside.
"""

from __future__ import annotations

import pytest

from helpers.commands import cli
from helpers.workspace import error_line
from scripts.lib.markdown_text import cell, code
from scripts.tools.publish import licence_fields, release_card_body

# ---------------------------------------------------------------- 1. the release's card, bounded and decoded

NOT_A_CARD = {  # case: (the README.md's bytes, what the one line says)
    "Latin-1 bytes": (b"---\nlicense: x\n---\n# caf\xe9\n", "not UTF-8 text"),
    "UTF-16 with its mark": ("# a card\n".encode("utf-16"), "not UTF-8 text"),
    "a NUL-padded binary": (b"\x00\xff\xfe" * 100, "not UTF-8 text"),
    "a 1 MB caption pasted in": (b"# card\n" + b"x" * 1_000_000, "larger than 1000000 bytes"),
}


@pytest.mark.parametrize("case", NOT_A_CARD)
def test_a_release_card_that_is_no_card_is_one_line(tmp_path, case):
    from scripts.lib.errors import DataError

    data, said = NOT_A_CARD[case]
    (tmp_path / "README.md").write_bytes(data)
    with pytest.raises(DataError, match=said) as caught:
        release_card_body(tmp_path)
    assert "\n" not in str(caught.value) and "README.md" in str(caught.value)


CARDS = {  # case: (the README.md's text, the body the Hub card gets)
    "a byte-order mark before the front matter": ("\ufeff---\nlicense: x\n---\n# t\nbody\n", "# t\nbody"),
    "a mark, no front matter": ("\ufeff# t\n\n---\nrule\n", "# t\n\n---\nrule"),
    "a mark, CRLF front matter": ("\ufeff---\r\nlicense: x\r\n---\r\nbody\r\n", "body"),
}


@pytest.mark.parametrize("case", CARDS)
def test_a_release_card_with_a_byte_order_mark_loses_its_front_matter(tmp_path, case):
    text, body = CARDS[case]
    (tmp_path / "README.md").write_text(text, encoding="utf-8", newline="")
    assert release_card_body(tmp_path).replace("\r\n", "\n") == body


# ---------------------------------------------------------------- 2. card text from arguments and params

REPO_IDS = {  # --repo-id values that are not Hub repository ids
    "a quote that ends the snippet's string": 'me/x"); import os  #',
    "an escape code": "me/\x1b]0;owned\x07x",
    "a line break": "me/x\ny",
    "a backtick": "me/x`y",
    "a double dot": "me/..",
    "an HTML tag": "me/<script>",
}


@pytest.mark.parametrize("case", REPO_IDS)
def test_publish_refuses_a_repo_id_the_hub_would_not_take(tmp_path, monkeypatch, capfd, case):
    repo_id = REPO_IDS[case]
    out = tmp_path / "hub"
    done = cli(["publish", "v2", "--repo-id", repo_id, "--dry-run", "--out", out], tmp_path, monkeypatch, capfd)
    assert done.returncode == 2, done.stderr[-2000:]
    line = error_line(done.stderr)
    assert line.startswith("error: --repo-id: expected ORG/NAME") and line.isprintable(), line
    assert not out.exists()


LICENCES = {  # a source's licence in params.yaml
    "a pipe": "cc-by|4.0",
    "a line break and a comment opener": "mit\n<!--",
    "an HTML tag": "<script>alert(1)</script>",
    "a link": "[click](https://example.invalid)",
}


@pytest.mark.parametrize("case", LICENCES)
def test_licence_table_cells_are_text(case):
    class Source:
        license = LICENCES[case]

    # s2 is in no source: the licences differ, so LICENSE.md lists each
    _fields, text = licence_fields({"s1": Source()}, ["s1", "s2"], None, None, None)
    assert text is not None and text.splitlines()[-1] == "| s2 | unknown |", text
    row = text.splitlines()[-2]
    assert row.startswith("| s1 | ") and row.endswith(" |"), text
    assert row.replace("\\|", "").count("|") == 3, row  # two cells: an escaped `|` splits nothing
    assert "<" not in row and "](" not in row, row


# ---------------------------------------------------------------- 3. format characters in the comment's text

FORMAT_CHARACTERS = {  # case: (a caption, the escape the comment shows instead of the character)
    "a right-to-left override": ("safe \u202egpj.exe", "\\u202e"),
    "a left-to-right isolate": ("a\u2066b\u2069c", "\\u2066"),
    "a zero-width space inside a word": ("ever\u200bone", "\\u200b"),
    "a byte-order mark": ("\ufeffcaption", "\\ufeff"),
    "a tag character": ("plain\U000e0041\U000e0042", "\\U000e0041"),
}


def _format_characters(text: str) -> set[str]:
    import unicodedata

    return {c for c in text if unicodedata.category(c) == "Cf"}


@pytest.mark.parametrize("case", FORMAT_CHARACTERS)
def test_format_characters_in_a_comment_are_shown_escaped(case):
    text, escape = FORMAT_CHARACTERS[case]
    for shown_as in (cell(text), code(text)):
        assert not _format_characters(shown_as), ascii(shown_as)
        assert escape in shown_as.replace("\\\\", "\\"), shown_as


def test_emoji_sequences_and_our_own_mention_guard_are_kept():
    family = "\U0001f468\u200d\U0001f469\u200d\U0001f467"
    assert cell(family) == family and code(family) == f"`{family}`"
    assert _format_characters(cell("@everyone #1")) == {"\u200b"}  # the guard markdown_text adds on purpose
