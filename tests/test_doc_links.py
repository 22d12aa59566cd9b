"""Every relative link in the Markdown docs points at a file of the repository, and at a heading of it
when the link names one."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from helpers import REPO

DOCS = sorted(
    [
        REPO / "README.md",
        REPO / "CONTRIBUTING.md",
        REPO / "tests" / "fixtures" / "README.md",
        *(REPO / "docs").glob("*.md"),
    ]
)
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")  # [text](target), not images
FENCE = re.compile(r"^(```|~~~).*?^\1", re.M | re.S)


def relative_links(text: str) -> list[str]:
    """The link targets outside code blocks and inline code that are not URLs or mail addresses."""
    text = re.sub(r"`[^`\n]*`", "", FENCE.sub("", text))
    return [t for t in LINK.findall(text) if not re.match(r"[a-z][a-z0-9+.-]*:", t, re.I)]


def anchors(markdown: str) -> set[str]:
    """GitHub's heading ids (lowercased, punctuation but `-` and `_` dropped, spaces turned into `-`) and
    the ids of HTML anchors (`<a id="...">`)."""
    markdown = FENCE.sub("", markdown)
    headings = re.findall(r"^#{1,6}\s+(.+?)\s*#*\s*$", markdown, re.M)
    html = re.findall(r"<a\s+(?:id|name)=\"([^\"]+)\"", markdown)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings} | set(html)


def test_relative_links_are_found_and_urls_are_not():
    text = "[a](docs/a.md) [b](https://x.org/a.md) `[c](nowhere.md)` ![img](p.png) [d](#top)\n```\n[e](f.md)\n```"
    assert relative_links(text) == ["docs/a.md", "#top"]
    assert anchors('# Adding a drop rule\n## `dedup@S`: near-duplicates, v2 … v4-b\n<a id="step"></a>') == {
        "adding-a-drop-rule",
        "dedups-near-duplicates-v2--v4-b",
        "step",
    }


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(REPO)))
def test_every_relative_link_resolves(doc: Path):
    broken = []
    for target in relative_links(doc.read_text(encoding="utf-8")):
        path, _, anchor = target.partition("#")
        file = (doc.parent / path).resolve() if path else doc
        if not file.exists():
            broken.append(f"{target}: no such file")
        elif anchor and file.suffix == ".md" and anchor not in anchors(file.read_text(encoding="utf-8")):
            broken.append(f"{target}: no heading #{anchor} in {file.relative_to(REPO)}")
    assert not broken, f"{doc.relative_to(REPO)}: " + "; ".join(broken)
