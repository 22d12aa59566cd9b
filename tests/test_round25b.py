"""Round 25b: text from data or users in every Markdown this project writes, rendered as a reviewer sees it.

Each output is rendered with markdown-it (CommonMark with tables, raw HTML passed through as GitHub and the
Hub pass it before their sanitizers) and the test asserts on what shows: no tag, link, heading or hidden
text the data did not ask to be shown as text.

1. `publish --license-name` and `--license-link` went into the Hub card's Licence line raw: a name holding
   `<img onerror>`, `<!--` or a link was Markdown, a link `x) [click](javascript:...)` made its own link.
   The name is shown as text (markdown_text.cell) and must be one line; the link must be an http(s) URL with
   a plain host or a plain relative path (markdown_text.link_target), else one line refuses it.
2. A code span built from data (a git tag in the Hub card's Provenance, a rev in pr-comment's sheet table and
   diff's `dvc plots diff` hint, a generation setting or model in the release card, the folders in
   history-table's heading) was fenced by one backtick: a backtick inside (git allows one in a tag or
   branch) closed it and the rest read as Markdown. markdown_text.code_span fences it with a run longer
   than any inside (CommonMark); history-table's `<release>` was a bare HTML tag GitHub drops.
3. The release card pasted into the Hub card kept an h1 on its first line (`"\\n# "` was replaced), every
   setext h1 (`===` under text), and the replace also rewrote `# ` lines inside fenced code.
   markdown_text.h1_demoted demotes every h1 outside fences.
4. The release card (scripts/lib/card.py) put params text raw into its tables and blocks: a licence with
   `|` split the sources row, one with `<!--` hid the rest of the card, a homepage `[click](url)` was a link,
   a citation holding a ``` line closed its bibtex block, a generation setting's key was raw HTML. Cells are
   markdown_text.cell, a homepage is shown as a URL only when link_target takes it, blocks markdown_text.fenced.
"""

from __future__ import annotations

import json
import re

import pytest
from markdown_it import MarkdownIt

from helpers.commands import cli
from helpers.workspace import error_line
from scripts.lib.card import data_card, generation_settings
from scripts.lib.params import Dedup, Source, Split
from scripts.lib.recipe import resolve_recipe

RELEASES = {"r": {"description": "A release.", "components": [{"source": "diffusiondb", "split": "all"}]}}
STATS = {
    "rows": {"train": 1, "validation": 1, "total": 2},
    "by_source": {"train": {"diffusiondb": 1}, "validation": {"diffusiondb": 1}},
    "removed": {"dedup:self": 1},
}


def html(markdown: str) -> str:
    """What GitHub or the Hub would render, before their HTML sanitizer (which would drop a tag silently)."""
    return MarkdownIt("commonmark").enable("table").render(markdown)


def hub_card(tmp_path, tag: str = "v2", licence: dict | None = None, release_card: str = "") -> str:
    """The Hub card publish builds (build_card), from a recipe, a release card and a licence."""
    from scripts.tools.publish import build_card

    (tmp_path / "README.md").write_text(release_card, encoding="utf-8")
    splits = {s: {"num_examples": 1, "num_bytes": 10} for s in ("train", "validation")}
    licence = licence or {"license": "cc0-1.0"}
    recipe = resolve_recipe("r", RELEASES)
    return str(build_card(recipe, tmp_path, "me/x", tag, "0" * 40, splits, {}, licence, 10))


def release_card(source: Source | None = None, generation: list[str] | None = None) -> str:
    source = source or Source(kind="diffusiondb", path="data/raw/diffusiondb")
    found = {"diffusiondb": generation_settings(generation or [])}
    return data_card(resolve_recipe("r", RELEASES), STATS, {"diffusiondb": source}, Dedup(), Split(), found)


def section(markdown: str, heading: str) -> str:
    return markdown.split(f"## {heading}\n", 1)[1].split("\n## ", 1)[0]


# ---------------------------------------------------------------- 1. --license-name and --license-link

LICENCE_NAMES = {  # case: (--license-name, what must not be in the rendered Licence line)
    "an image tag with a handler": ("<img src=x onerror=alert(1)>", "<img"),
    "a link": ("[read me](https://evil.example)", 'href="https://evil.example"'),
    "a comment hiding a clause": ("custom <!-- no commercial use -->", "<!--"),
    "a details left open": ("custom <details><summary>ok</summary>", "<details>"),
    "an entity shown as its character": ("&lt;b&gt;bold&lt;/b&gt;", "&lt;b&gt;bold"),
    "emphasis": ("**not** a _licence_", "<strong>"),
}


@pytest.mark.parametrize("case", LICENCE_NAMES)
def test_a_licence_name_is_text_in_the_hub_card(tmp_path, case):
    name, hidden = LICENCE_NAMES[case]
    card = hub_card(tmp_path, licence={"license": "other", "license_name": name, "license_link": "LICENSE.md"})
    shown = html(section(card, "Licence"))
    assert hidden not in shown, shown
    assert 'href="LICENSE.md"' in shown and "Release card" in html(card).split("Licence", 1)[1], shown


REFUSED = {  # case: (option, value)
    "a link that closes its parenthesis": ("--license-link", "x) [click](javascript:alert(1)"),
    "a javascript: link": ("--license-link", "javascript:alert(1)"),
    "a user before the host": ("--license-link", "https://huggingface.co@evil.example/licence"),
    "another site, scheme-relative": ("--license-link", "//evil.example/LICENSE"),
    "a space and a title": ("--license-link", 'LICENSE.md "owned"'),
    "an escape code": ("--license-link", "https://example.org/\x1b]0;x\x07"),
    "a name over two lines": ("--license-name", "MIT\n===\nlicense: apache-2.0"),
    "a name with an escape code": ("--license-name", "MIT\x1b[2J"),
    "an empty name": ("--license-name", " "),
}


@pytest.mark.parametrize("case", REFUSED)
def test_publish_refuses_a_licence_option_the_card_cannot_show_as_given(tmp_path, monkeypatch, capfd, case):
    option, value = REFUSED[case]
    out = tmp_path / "hub"
    argv = ["publish", "v2", "--repo-id", "me/x", "--dry-run", "--out", out, "--license", "other", option, value]
    done = cli(argv, tmp_path, monkeypatch, capfd)
    assert done.returncode == 2, done.stderr[-2000:]
    line = error_line(done.stderr)
    assert line.startswith(f"error: {option}: expected") and line.isprintable(), line
    assert not out.exists()


# ---------------------------------------------------------------- 2. code spans from data


def _hub_provenance(tmp_path, tag: str) -> str:
    return html(section(hub_card(tmp_path, tag=tag), "Provenance"))


def _sheet_table(label: str) -> str:
    from scripts.tools.pr_comment import sheets_section

    return html(
        "\n".join(
            sheets_section([("v2", "v2")], {}, {"main": label, "workspace": "workspace"}, "main", "workspace", None)
        )
    )


def _plots_hint(rev: str) -> str:
    from test_round10_markdown import report_for

    from scripts.tools.diff import to_markdown

    report = report_for("r1", "a cat") | {"rev_a": rev}
    return html(to_markdown(report))


def _release_card_setting(value: str) -> str:
    generation = [json.dumps({"model": value, "steps": 4})]
    return html(section(release_card(generation=generation), "Images"))


CODE_SPANS = {  # case: (render the output holding `value` in a code span, value, the code element it must show)
    "a git tag with a backtick and a tag": (_hub_provenance, "v1`<img src=x onerror=alert(1)>`", None),
    "a git tag ending in a backtick": (_hub_provenance, "v2`", None),
    "a git tag starting with a backtick": (_hub_provenance, "`v2", None),
    "a base rev in pr-comment's sheet table": (_sheet_table, "main`<b>bold</b>`", None),
    "a rev in diff's plots hint": (
        _plots_hint,
        "v8`<img src=x>`",
        "<code>dvc plots diff v8`&lt;img src=x&gt;` v9</code>",
    ),
    "a model name with backticks": (_release_card_setting, "m``<img src=x>``", None),
}


@pytest.mark.parametrize("case", CODE_SPANS)
def test_a_backtick_in_a_value_stays_inside_its_code_span(tmp_path, case):
    render, value, element = CODE_SPANS[case]
    shown = render(tmp_path, value) if render is _hub_provenance else render(value)
    escaped = value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    assert (element or f"<code>{escaped}</code>") in shown, shown
    assert "<img" not in shown and "<b>" not in shown, shown


HISTORY_FOLDERS = {  # --releases: a folder name as history-table's heading shows it
    "the placeholder alone": "rel",
    "a backtick": "a`b",
    "emphasis and a tag": "my_<b>x_dir_",
}


@pytest.mark.parametrize("case", HISTORY_FOLDERS)
def test_history_table_heading_shows_its_paths_as_code(tmp_path, monkeypatch, capfd, case):
    folder = tmp_path / HISTORY_FOLDERS[case]
    folder.mkdir()
    done = cli(["history-table", "--releases", folder.name], tmp_path, monkeypatch, capfd)
    assert done.returncode == 0, done.stderr
    heading = html(done.stdout.split("\n", 1)[0])
    escaped = folder.name.replace("<", "&lt;").replace(">", "&gt;")
    assert f"<code>{escaped}/&lt;release&gt;/stats.json</code>" in heading, heading  # bare, <release> was a tag
    assert "<b>" not in heading and "<em>" not in heading, heading


# ---------------------------------------------------------------- 3. every h1 of the release card demoted

RELEASE_CARDS = {  # case: (the release card's text, text that must still show)
    "an h1 on the first line": ("# t2i-datasets v2\n\nrelease card text\n", "t2i-datasets v2"),
    "a setext h1": ("Release v2\n==========\n\nrelease card text\n", "Release v2"),
    "an indented h1 first": ("   # v2 card\nrelease card text\n", "v2 card"),
    "a setext h1 after an ATX one": ("# a\n\nPart two\n===\n", "Part two"),
}


@pytest.mark.parametrize("case", RELEASE_CARDS)
def test_the_release_card_has_no_h1_in_the_hub_card(tmp_path, case):
    text, kept = RELEASE_CARDS[case]
    shown = html(hub_card(tmp_path, release_card=text).split("\n---\n", 1)[1])
    assert shown.count("<h1>") == 1 and "<h1>t2i-datasets r</h1>" in shown, shown  # the Hub card's own title
    assert kept in shown.split("Release card", 1)[1], shown


FENCED = {  # a release card whose fenced code holds `# ` lines: they are code, kept as written
    "a yaml comment": "# card\n\n```yaml\n# a comment\nkey: 1\n```\n",
    "a shell prompt in a tilde fence": "~~~sh\n# dvc repro\n~~~\n",
    "a longer fence around a short one": "````\n```\n# inside\n```\n````\n",
}


@pytest.mark.parametrize("case", FENCED)
def test_hash_lines_in_fenced_code_are_not_rewritten(tmp_path, case):
    body = hub_card(tmp_path, release_card=FENCED[case]).split("## Release card\n", 1)[1]
    code_lines = [line for line in FENCED[case].splitlines() if line.startswith("# ") and "card" not in line]
    assert code_lines and all(f"\n{line}\n" in body for line in code_lines), body


# ---------------------------------------------------------------- 4. params text in the release card

CARD_TEXT = {  # case: (a source's params, what the rendered card must not hold)
    "a licence with a pipe": ({"license": "cc-by|4.0"}, "<td>4.0</td>"),
    "a licence opening a comment": ({"license": "mit <!-- non-commercial -->"}, "<!--"),
    "a homepage that is a Markdown link": ({"homepage": "[docs](https://evil.example)"}, 'href="https://evil.example"'),
    "a homepage with an image tag": ({"homepage": "<img src=x onerror=alert(1)>"}, "<img"),
    "a citation closing its block": ({"citation": "@misc{a}\n```\n<img src=x onerror=alert(1)>"}, "<img"),
    "a citation closing with a longer fence": ({"citation": "````\n<script>alert(1)</script>"}, "<script>"),
}


@pytest.mark.parametrize("case", CARD_TEXT)
def test_params_text_in_the_release_card_is_shown_as_text(case):
    given, hidden = CARD_TEXT[case]
    card = release_card(Source(kind="diffusiondb", path="data/raw/diffusiondb", **given))
    shown = html(card.split("\n---\n", 1)[1])  # the front matter is YAML, not Markdown (a YAML string)
    assert hidden not in shown, shown
    assert "Reproducing it</h2>" in shown, shown  # nothing hid the rest of the card
    row = next(line for line in card.splitlines() if line.startswith("| `diffusiondb` |"))
    assert len(re.split(r"(?<!\\)\|", row)) == 8, row  # six cells: an escaped `|` splits nothing


SETTING_KEYS = {  # a key of captions@S's `generation` JSON (a split table's column): shown as text
    "an image tag": "<img src=x onerror=alert(1)>",
    "a link": "[x](https://evil.example)",
    "a comment": "<!-- hidden -->steps",
}


@pytest.mark.parametrize("case", SETTING_KEYS)
def test_a_generation_setting_key_is_text(case):
    key = SETTING_KEYS[case]
    shown = html(release_card(generation=[json.dumps({"model": "m", key: 1})]))
    assert "<img" not in shown and 'href="https://evil' not in shown and "<!--" not in shown, shown
    assert "How it was made</h2>" in shown, shown


def test_plain_values_render_as_before():
    """Not a fail-before row: the escaping leaves the usual card as it was."""
    source = Source(kind="diffusiondb", path="p", license="cc0-1.0", homepage="https://huggingface.co/datasets/x")
    assert "| `diffusiondb` | diffusiondb | cc0-1.0 | https://huggingface.co/datasets/x |" in release_card(source)


def test_a_plain_setting_key_is_written_as_before():
    """A settings key that is a plain identifier is inert Markdown and keeps the card's bytes (`guidance\\_scale`
    changed every rendered release's README.md); an underscore inside a word emphasises nothing."""
    card = release_card(generation=[json.dumps({"model": "m", "guidance_scale": 7.5, "_x_": 1})])
    assert "guidance_scale `7.5`" in card, card
    assert "<em>" not in html(card) and "\\_x\\_ `1`" in card, card
