"""Every ```bash and ```python block of README.md runs, in order, in a work copy of the session's build
(as a reader would type them, one block after the other), and, with T2I_TESTS_FRESH_CLONE=1, again in a
fresh `git clone --no-tags` of it (no DVC cache, no tags: the first block's `dvc repro` builds everything;
11-15 minutes on two cores, so not in the slow tier), unless an HTML comment right before it says why not:

    <!-- readme-test: skip (needs network: pushes to S3) -->    not run; the reason is required
    <!-- readme-test: after-install (why) -->                    runs only what follows the last
                                                                `pip install ... &&` (the venv exists)

A block that is neither run nor marked fails the fast test; the slow one runs them."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass

import pytest

from helpers import REPO, env, run

README = REPO / "README.md"
SHELLS = {"bash", "sh", "shell", "console"}
BLOCK = re.compile(
    r"(?:<!--\s*readme-test:\s*(?P<marker>.*?)\s*-->[ \t]*\n(?:[ \t]*\n)?)?^```(?P<lang>[\w+-]*)[ \t]*\n(?P<code>.*?)^```[ \t]*$",
    re.S | re.M,
)
MARKER = re.compile(r"(?P<kind>skip|after-install)\s*\((?P<reason>[^)]+(?:\([^)]*\)[^)]*)*)\)$")


@dataclass
class Block:
    line: int
    lang: str  # bash | python
    code: str  # what runs (after-install: the tail only); "" when skipped
    skip: str | None  # the reason, when skipped


def readme_blocks(text: str) -> list[Block]:
    """The README's shell and Python blocks, each with what the test runs or why it does not."""
    blocks = []
    for match in BLOCK.finditer(text):
        lang = "bash" if match["lang"] in SHELLS else match["lang"]
        line = text.count("\n", 0, match.start("code"))
        if lang not in ("bash", "python"):
            assert not match["marker"], f"README.md:{line}: readme-test marker on a ```{match['lang']} block"
            continue
        code, skip = match["code"], None
        if match["marker"] is not None:
            marker = MARKER.fullmatch(match["marker"])
            assert marker and marker["reason"].strip(), (
                f"README.md:{line}: bad marker {match['marker']!r}: "
                "use `readme-test: skip (why)` or `readme-test: after-install (why)`"
            )
            if marker["kind"] == "skip":
                code, skip = "", marker["reason"].strip()
            else:
                parts = [p.strip() for p in code.strip().split("&&")]
                installs = [i for i, p in enumerate(parts) if re.match(r"pip3? install\b", p)]
                assert lang == "bash" and installs, f"README.md:{line}: after-install, but no `pip install ... &&`"
                code = " && ".join(parts[installs[-1] + 1 :]) + "\n"
                assert code.strip(), f"README.md:{line}: nothing after the install"
        blocks.append(Block(line, lang, code, skip))
    return blocks


def test_every_block_is_run_or_marked_with_a_reason():
    text = README.read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 200, "README.md: keep it under 200 lines (the rest goes to docs/)"
    blocks = readme_blocks(text)
    fenced = len(re.findall(r"^```(?:bash|sh|shell|console|python)\s*$", text, re.M))
    assert len(blocks) == fenced, "a shell/python block the parser did not see (indented fence?)"
    skipped = [b for b in blocks if b.skip]
    assert len(skipped) <= 3, f"most blocks must run; skipped: {[(b.line, b.skip) for b in skipped]}"
    assert blocks[0].code.strip() == "dvc repro"  # the install line's tail


def test_the_parser_refuses_unmarked_markers_and_reasonless_skips():
    assert readme_blocks("```bash\necho hi\n```\n")[0].code == "echo hi\n"
    assert readme_blocks("<!-- readme-test: skip (needs a GPU) -->\n```bash\nx\n```\n")[0].skip == "needs a GPU"
    tail = readme_blocks(
        "<!-- readme-test: after-install (venv) -->\n```bash\npython3 -m venv .venv && . .venv/bin/activate && "
        "pip install -r r.txt && dvc repro\n```\n"
    )[0]
    assert tail.code == "dvc repro\n"
    for bad in (
        "<!-- readme-test: skip -->\n```bash\nx\n```\n",
        "<!-- readme-test: maybe (x) -->\n```bash\nx\n```\n",
        "<!-- readme-test: after-install (x) -->\n```bash\ndvc repro\n```\n",
    ):
        with pytest.raises(AssertionError):
            readme_blocks(bad)


def test_docs_use_the_hf_command():
    """`huggingface-cli` is gone from the pinned huggingface_hub; its successor is `hf`."""
    for page in [README, *sorted((REPO / "docs").glob("*.md"))]:
        used = re.findall(r"huggingface-cli\s+[a-z-]+", page.read_text(encoding="utf-8"))  # a command, not a mention
        assert not used, f"{page.name}: {used[0]!r}: use `hf` (e.g. `hf download`)"


def run_readme_blocks(repo, tmp_path) -> list[tuple[Block, subprocess.CompletedProcess]]:
    """Every block not skipped, in order, in `repo`; stops at the first failure (returned last)."""
    environ = {**env(), "HF_HOME": str(tmp_path / "hf-home"), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    results = []
    for number, block in enumerate(readme_blocks(README.read_text(encoding="utf-8"))):
        if block.skip:
            continue
        if block.lang == "python":
            script = tmp_path / f"block{number}.py"
            script.write_text(block.code, encoding="utf-8")
            cmd = [sys.executable, str(script)]
        else:
            cmd = ["bash", "--noprofile", "--norc", "-euo", "pipefail", "-c", block.code]
        result = subprocess.run(cmd, cwd=repo, env=environ, capture_output=True, text=True, timeout=900)
        results.append((block, result))
        if result.returncode != 0:
            break
    return results


@pytest.mark.xdist_group("readme")  # shares the session's one README run (conftest `readme_run`)
def test_readme_blocks_run_in_a_copy_of_the_build(readme_run):
    """The session's README run (conftest `readme_run`: a work copy of the build) ran every block."""
    _repo, results = readme_run
    assert results, "no README block ran"
    for block, result in results:
        assert result.returncode == 0, (
            f"README.md:{block.line} ({block.lang}) failed ({result.returncode}):\n{block.code}\n"
            f"{result.stdout[-2000:]}\n{result.stderr[-3000:]}"
        )
    assert len(results) == len([b for b in readme_blocks(README.read_text(encoding="utf-8")) if not b.skip])


@pytest.mark.skipif(
    not os.environ.get("T2I_TESTS_FRESH_CLONE"),
    reason="builds every stage from data/raw (11-15 min on two cores): T2I_TESTS_FRESH_CLONE=1 runs it",
)
def test_readme_blocks_run_in_a_fresh_clone_without_tags(history, tmp_path):
    """A reader's clone: no tags, no DVC cache, nothing built. The first block's `dvc repro` builds every
    stage from data/raw; then `diff v4-a v4-b` compares the workspace's release folders (README: "reads
    tags v4-a, v4-b if git has them, else the workspace's release folders"), and the experiment, the
    plots and the publish dry-run run on that build."""
    repo = tmp_path / "clone"
    run(["git", "clone", "-q", "--no-tags", "--no-hardlinks", str(history.repo), str(repo)], tmp_path)
    assert run(["git", "tag"], repo).stdout == "" and not (repo / ".dvc" / "cache").exists()
    assert not (repo / "data" / "releases" / "v4-b" / "train").exists()
    results = run_readme_blocks(repo, tmp_path)
    for block, result in results:
        assert result.returncode == 0, (
            f"README.md:{block.line} ({block.lang}) failed ({result.returncode}) in a fresh clone:\n{block.code}\n"
            f"{result.stdout[-2000:]}\n{result.stderr[-3000:]}"
        )
    assert len(results) == len([b for b in readme_blocks(README.read_text(encoding="utf-8")) if not b.skip])
    assert "Running stage 'ingest@" in results[0][1].stdout  # built from data/raw, nothing pulled
    assert run(["git", "tag"], repo).stdout == ""  # no block needed (or made) a tag
    diff = next(r for b, r in results if "scripts diff v4-a v4-b" in b.code)
    assert "no git revision 'v4-a': release v4-a of the workspace" in diff.stderr
