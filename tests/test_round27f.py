"""Round 27f: paths and names in messages, parsers of the PR's own data, and Markdown an author writes.

Every CLI command was first run with hostile names as its path arguments (bytes not UTF-8, escape codes, `\\r`,
a bidi override, zero-width characters, a newline, names past NAME_MAX and PATH_MAX, `-rf`, `--out`, '', '.',
'/', '~'): each was one printable line, exit 2 or a clean exit 0 (cli._error shows every message through
errors.shown). What failed were names found inside the data, and text the cards paste:

1. A source's image_path (a Gustavosta CSV) or a bucketed export's manifest shard past NAME_MAX or PATH_MAX
   was an OSError (`File name too long`) out of a path check: the whole run failed even with `on_error: skip`,
   its line naming the 100 KB name whole; a path leaving the folder was quoted whole too. The row's image is
   now missing (skipped or one line, by on_error), and a message shows the first NAME_SHOWN characters.
2. pr-comment read `dvc plots diff --json`, which holds the PR's own plot files, with json.loads: 100k nested
   `[` was a RecursionError traceback, a list or text an AttributeError or JSONDecodeError one, a point whose
   `rev` was a list a TypeError. It is read depth-bounded (plot_points.dvc_json) and every shape checked; a
   whole pr-comment run with hostile revision names shows each as text, and its metrics table names the
   head as the title does (its commit was shown).
3. A recipe's `description` went into both cards (the release README and the Hub card) as raw Markdown: a
   `<!--` hid the rest of the card, `<details>` folded it, `# ` or `===` added a second title, an unclosed
   fence turned the rest of the card into code. markdown_text.authored keeps ordinary Markdown and shows raw
   HTML as text. A release card whose body began with a second `---` block showed it under "Release card" as
   a rule and a setext h2; it is now fenced YAML (markdown_text.front_matter_as_code).
"""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys

import pytest
from markdown_it import MarkdownIt

from helpers.repos import env
from helpers.workspace import PNG, ingest_source

pytestmark = pytest.mark.usefixtures("no_proxy")


def html(markdown: str) -> str:
    """What GitHub or the Hub would render, before their HTML sanitizer."""
    return MarkdownIt("commonmark").enable("table").render(markdown)


def one_short_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err[:2000]
    assert len(lines[0]) < 1000 and lines[0].isprintable(), lines[0][:2000]
    return lines[0]


# ---------------------------------------------------------------- 1. names past NAME_MAX / PATH_MAX in the data

IMAGE_PATHS = {  # a Gustavosta CSV's image_path -> what a failing run's one line says
    "one name past NAME_MAX": ("i/" + "x" * 300 + ".png", "File name too long"),
    "a name of 100 KB": ("i/" + "x" * 100_000 + ".png", "File name too long"),
    "a path past PATH_MAX": ("a/" * 2100 + "x.png", "File name too long"),
    "a 100 KB path leaving the folder": ("../" + "x" * 100_000, "leaves the source folder"),
}


def _gustavosta(image_path: str) -> dict[str, bytes]:
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerows([["Prompt", "image_path"], ["a red fox", image_path], ["a blue fox", "i/0.png"]])
    return {"train.csv": buf.getvalue().encode(), "i/0.png": PNG}


@pytest.mark.parametrize("case", IMAGE_PATHS)
def test_an_image_path_past_the_limits_is_one_short_line(tmp_path, monkeypatch, capfd, case):
    path, said = IMAGE_PATHS[case]
    source = {"kind": "gustavosta", "format": "kaggle_csv", "on_error": "fail"}
    result, rows = ingest_source(tmp_path, monkeypatch, capfd, source, _gustavosta(path))
    line = one_short_line(result.stderr)
    assert result.returncode == 2 and rows is None
    assert "train.csv: row 1" in line and said in line, line


@pytest.mark.parametrize("case", [case for case in IMAGE_PATHS if "leaving" not in case])
def test_an_image_path_past_the_limits_is_a_skipped_row(tmp_path, monkeypatch, capfd, case):
    """on_error: skip passed over the row whose image cannot exist; the run failed whole."""
    source = {"kind": "gustavosta", "format": "kaggle_csv", "on_error": "skip"}
    result, rows = ingest_source(tmp_path, monkeypatch, capfd, source, _gustavosta(IMAGE_PATHS[case][0]))
    assert result.returncode == 0, result.stderr[:2000]
    assert [row["prompt"] for row in rows] == ["a blue fox"]


SHARD_PATHS = {  # a bucketed export's manifest shard path -> what the one line says
    "a name of 100 KB": ("buckets/p1/" + "s" * 100_000 + ".tar", "File name too long"),
    "a path past PATH_MAX": ("b/" * 2100 + "s.tar", "File name too long"),
    "a 100 KB path leaving the folder": ("../" + "s" * 100_000, "leaves the export folder"),
}


@pytest.mark.parametrize("case", SHARD_PATHS)
def test_a_manifest_shard_past_the_limits_is_one_short_line(tmp_path, monkeypatch, capfd, case):
    shard, said = SHARD_PATHS[case]
    manifest = {"format": "bucketed_shards_v1", "buckets": {"p1": {"shards": [shard]}}}
    files = {"manifest.json": json.dumps(manifest).encode(), "buckets/p1/.keep": b""}  # the long name is looked up
    source = {"kind": "bucketed_webdataset", "images": "data/raw/s"}
    result, rows = ingest_source(tmp_path, monkeypatch, capfd, source, files)
    line = one_short_line(result.stderr)
    assert result.returncode == 2 and rows is None and said in line, line


# ---------------------------------------------------------------- 2. dvc plots diff --json: the PR's plot data

DEEP = "[" * 100_000 + "]" * 100_000
PLOTS_OUTPUT = {  # `dvc plots diff --json` stdout (exit 0) pr-comment was given
    "100k nested lists": '{"data": {"p.csv": ' + DEEP + "}}",
    "a list": "[1, 2]",
    "a warning, not JSON": "WARNING: something\n{}",
    "entries that are text": '{"data": {"p.csv": "x"}}',
    "content that is a list": '{"data": {"p.csv": [{"type": "vega", "content": [1]}]}}',
    "a point's rev that is a list": (
        '{"data": {"p.csv": [{"type": "vega", "content": {"data": {"values": [{"rev": ["a"], "y": 1}]}}}]}}'
    ),
}


@pytest.mark.parametrize("case", PLOTS_OUTPUT)
def test_pr_comment_reads_the_plot_json_of_a_pr_bounded(tmp_path, monkeypatch, case):
    from scripts.tools import pr_comment

    def fake_dvc(args, repo):
        if "-o" in args:  # the rendered page: a folder of ours
            (tmp_path / "out" / "plots").mkdir(parents=True, exist_ok=True)
        return subprocess.CompletedProcess(args, 0, PLOTS_OUTPUT[case], "")

    monkeypatch.setattr(pr_comment, "dvc", fake_dvc)
    lines = pr_comment.plots_section(str(tmp_path), "a" * 40, "workspace", tmp_path / "out", None)
    assert lines[0].startswith("### Plots") and len(lines) <= 3, lines


# ---------------------------------------------------------------- 3. a recipe's description and the release card

DESCRIPTIONS = {  # a recipe's description -> (what the rendered card must not hold, text it must show)
    "a comment hiding the rest": ("Prompts.\n\n<!-- ", "<!--", "<h2>Rows</h2>"),
    "details folding the card": ("Prompts.\n\n<details><summary>more</summary>\n", "<details>", "<h2>Rows</h2>"),
    "a script tag": ("<script>alert(1)</script> prompts", "<script>", "prompts"),
    "an autolink": ("see <https://evil.example>", 'href="https://evil.example"', "evil.example"),
    "a setext h1": ("Owned\n===", "<h1>Owned", "Owned"),
    "an ATX h1": ("# Owned", "<h1>Owned", "Owned"),
    "an unclosed fence": ("```\ncode", "## Rows", "<h2>Rows</h2>"),
    "a span over a line break before a comment": ("x `y\nz` <!-- `w` -->", "<!--", "<h2>Rows</h2>"),
    "a list item interrupting a span": ("`a\n- <!-- `", "<!--", "<h2>Rows</h2>"),
    "a backtick fence with a backtick in its info": ("```a`b\n<!-- x", "<!--", "<h2>Rows</h2>"),
}


def _cards(tmp_path, description: str) -> tuple[str, str]:
    """(the release card's Markdown body, the Hub card's) for a recipe with this description."""
    from scripts.lib.card import data_card
    from scripts.lib.params import Dedup, Source, Split
    from scripts.lib.recipe import resolve_recipe
    from scripts.tools.publish import build_card

    releases = {"r": {"description": description, "components": [{"source": "diffusiondb", "split": "all"}]}}
    stats = {
        "rows": {"train": 1, "validation": 1, "total": 2},
        "by_source": {"train": {"diffusiondb": 1}, "validation": {"diffusiondb": 1}},
        "removed": {"dedup:self": 1},
    }
    recipe = resolve_recipe("r", releases)
    source = {"diffusiondb": Source(kind="diffusiondb", path="data/raw/diffusiondb")}
    card = data_card(recipe, stats, source, Dedup(), Split(), {"diffusiondb": []})
    (tmp_path / "README.md").write_text(card, encoding="utf-8")
    splits = {s: {"num_examples": 1, "num_bytes": 10} for s in ("train", "validation")}
    hub = str(build_card(recipe, tmp_path, "me/x", "v2", "0" * 40, splits, {}, {"license": "cc0-1.0"}, 10))
    return card.split("\n---\n", 1)[1], hub.split("\n---\n", 1)[1]


@pytest.mark.parametrize("case", DESCRIPTIONS)
def test_a_description_is_inert_in_both_cards(tmp_path, case):
    description, hidden, kept = DESCRIPTIONS[case]
    for card in _cards(tmp_path, description):
        shown = html(card)
        assert hidden not in shown and kept in shown, shown
        assert shown.count("<h1>") == 1, shown  # the card's own title only


ORDINARY = {  # ordinary Markdown in a description renders as the author meant it
    "emphasis and a list": ("*soft* prompts\n\n- one\n- two", "<em>soft</em>"),
    "a code span holding a tag": ("use `<b>` here", "<code>&lt;b&gt;</code>"),
    "a fenced block holding a tag": ("```html\n<b>x</b>\n```", "&lt;b&gt;x&lt;/b&gt;\n</code>"),
    "an escaped angle bracket": ("a \\<b> c", "a &lt;b&gt; c"),
}


@pytest.mark.parametrize("case", ORDINARY)
def test_ordinary_markdown_in_a_description_is_kept(case):
    from scripts.lib.markdown_text import authored

    description, shown = ORDINARY[case]
    assert shown in html(authored(description)), html(authored(description))


SECOND_BLOCKS = {  # a release README whose body starts with a second `---` block -> a line of it
    "a licence block": "---\nlicense: mit\n---\n---\nlicense: other\n---\n# t\nbody\n",
    "a block of two keys": "---\nlicense: mit\n---\n\n---\nfoo: 1\nbar: 2\n---\nbody\n",
    "an empty second block": "---\nlicense: mit\n---\n---\n---\nbody\n",
}


@pytest.mark.parametrize("case", SECOND_BLOCKS)
def test_a_second_front_matter_block_is_shown_as_yaml(tmp_path, case):
    from scripts.lib.recipe import resolve_recipe
    from scripts.tools.publish import build_card

    (tmp_path / "README.md").write_text(SECOND_BLOCKS[case], encoding="utf-8")
    recipe = resolve_recipe("r", {"r": {"components": [{"source": "diffusiondb", "split": "all"}]}})
    splits = {s: {"num_examples": 1, "num_bytes": 10} for s in ("train", "validation")}
    hub = str(build_card(recipe, tmp_path, "me/x", "v2", "0" * 40, splits, {}, {"license": "cc0-1.0"}, 10))
    shown = html(hub.split("\n---\n", 1)[1]).split("Release card", 1)[1]
    assert "<hr" not in shown and "<h2>" not in shown and "<pre><code" in shown, shown
    assert "body" in shown


def test_a_body_with_a_rule_later_is_unchanged():
    from scripts.lib.markdown_text import front_matter_as_code

    text = "# t\n\n---\n\nrule\n"
    assert front_matter_as_code(text) == text


# ---------------------------------------------------------------- pr-comment as a whole run, hostile revisions


def _git(*args: str, cwd) -> None:
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, env=env())


@pytest.mark.slow
def test_pr_comment_shows_hostile_revision_names_as_text(tmp_path):
    """build_body, run whole (git, dvc metrics and plots diff) on a base and head branch named with Markdown."""
    base, head = "x`<!--@everyone#1|<details>", "h<img/src=x>`|@all"
    repo = tmp_path / "repo"
    repo.mkdir()
    _git("init", "-q", "-b", "main", cwd=repo)
    subprocess.run([sys.executable, "-m", "dvc", "init", "-q"], cwd=repo, check=True, env=env())
    (repo / "params.yaml").write_text("releases:\n  r0: {}\n", encoding="utf-8")
    (repo / "data").mkdir()
    (repo / "data" / "summary.json").write_text('{"rows": {"r0": 3}}', encoding="utf-8")
    _git("add", "-A", cwd=repo)
    _git("commit", "-q", "-m", "base", cwd=repo)
    _git("branch", base, cwd=repo)
    _git("checkout", "-q", "-b", head, cwd=repo)
    (repo / "data" / "summary.json").write_text('{"rows": {"r0": 4}}', encoding="utf-8")
    _git("commit", "-q", "-am", "head", cwd=repo)
    done = subprocess.run(
        [sys.executable, "-m", "scripts", "pr-comment", base, head, "--out", tmp_path / "o", "--repo", repo],
        capture_output=True,
        text=True,
        env=env(),
    )
    assert done.returncode == 0, done.stderr[-2000:]
    shown = html((tmp_path / "o" / "comment.md").read_text(encoding="utf-8").split("\n", 1)[1])
    for tag in ("<!--", "<details", "<img"):
        assert tag not in shown, shown
    metrics = shown.split("Metrics", 1)[1]
    assert "h&lt;img/src=x&gt;`|@\u200ball</th>" in metrics, metrics  # the head by its name, as text
