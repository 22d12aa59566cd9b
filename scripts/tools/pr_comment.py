"""pr-comment: the dataset-diff comment of a pull request, assembled and posted in place.

    python -m scripts pr-comment BASE_REV [HEAD_REV] --out DIR [--assets-url URL] [--run-url URL]
    python -m scripts pr-comment-post DIR/comment.md (--pr N | --pr-from FILE) [--head-sha SHA] [--assets DIR/sheets ...]

`pr-comment` writes DIR/comment.md: one Markdown body holding, for every release of HEAD_REV (default
`workspace`, the PR's rebuilt tree), the row-level diff against BASE_REV (`python -m scripts diff`'s
report: added/removed rows by source and by reason), `dvc metrics diff`, `dvc plots diff` (the plot
data that changed; the rendered page goes to DIR/plots/) and both contact sheets (the base's and the
PR's preview.jpg, fetched with `dvc plots diff`, copied to DIR/sheets/). A release new in HEAD_REV is
compared with its `base:` release at BASE_REV (v4-b with v4-a), so a new recipe shows what it changed.
The body starts with MARKER, a hidden HTML comment by which the next run finds and edits it.

`pr-comment-post` (GitHub REST API, token from GITHUB_TOKEN or GH_TOKEN, repository from
GITHUB_REPOSITORY, API from GITHUB_API_URL) commits the contact sheets to an assets branch (a comment
shows images only by URL) and edits the comment holding MARKER, or creates it; with --head-sha it posts
only if the PR's head is the commit that was built. The client, every request bounded and checked, and
the bounded readers of its inputs: scripts/tools/github_client.py. .github/workflows/dataset-diff.yml builds the body
with no token; dataset-diff-post.yml posts it; tests/test_workflow.py runs both workflows' steps.
"""

from __future__ import annotations

import html
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import typer

from scripts.lib.errors import DataError, shown
from scripts.lib.io import atomic_path, check_files_ours, check_output_kind, check_replaceable, outputs_together
from scripts.lib.markdown_text import cell, code, code_span, metrics_table
from scripts.tools.child_group import dvc_env, run_in_group
from scripts.tools.plot_points import dvc_json, plot_changes
from scripts.tools.side_inputs import check_inside, check_outside_stores

MARKER = "<!-- t2i-dataset-diff -->"
MAX_BODY = 65_000  # GitHub refuses comment bodies over 65,536 characters
PLOT_ROWS = 12  # changed data points listed per plot and side


# --- releases to compare -------------------------------------------------------------------------


def release_pairs(at_base: dict, at_head: dict) -> list[tuple[str | None, str]]:
    """(release at base, release at head) for every head release: itself when the base has it, else
    the nearest ancestor along `base:` that the base has, else None (nothing to compare with)."""
    pairs = []
    for name in at_head:
        current, seen = name, set()
        while current is not None and current not in at_base and current not in seen:
            seen.add(current)
            current = (at_head.get(current) or {}).get("base")
        pairs.append((current if current in at_base else None, name))
    return pairs


def release_outs(lock_text: str | None, where: str = "dvc.lock") -> dict[str, list]:
    """release name -> its outputs' (path, md5) in a dvc.lock text ({} when there is no lock). Read as
    params.yaml is (read_yaml: nesting bounded before parsing, no aliases): the PR's lock is its own."""
    import yaml

    from scripts.lib.nesting import TooDeep
    from scripts.lib.params import read_yaml

    try:
        lock = read_yaml(lock_text or "") or {}
    except (TooDeep, yaml.YAMLError) as exc:
        raise DataError(f"{where}: not a readable dvc.lock ({_last_line(str(exc))})") from None
    stages = (lock.get("stages") if isinstance(lock, dict) else None) or {}
    if not isinstance(stages, dict) or not all(isinstance(stage, dict) for stage in stages.values()):
        raise DataError(f"{where}: `stages` is not a mapping of stages")
    outs = {
        name.split("@", 1)[1]: stage.get("outs") or [] for name, stage in stages.items() if name.startswith("release@")
    }
    if not all(isinstance(out, list) and all(isinstance(o, dict) for o in out) for out in outs.values()):
        raise DataError(f"{where}: a release stage's `outs` is not a list of outputs")
    return {name: sorted((str(o.get("path")), str(o.get("md5"))) for o in out) for name, out in outs.items()}


def unchanged_releases(repo: str, base_rev: str, head_rev: str) -> set[str]:
    """Releases whose outputs both revisions' dvc.lock pin alike: unchanged without reading any data (a
    fresh runner with no remote has none)."""
    from scripts.tools.lock_text import lock_at

    before = release_outs(lock_at(repo, base_rev), f"{base_rev}:dvc.lock")
    after = release_outs(lock_at(repo, head_rev), "dvc.lock" if head_rev == "workspace" else f"{head_rev}:dvc.lock")
    return {name for name, outs in after.items() if before.get(name) == outs}


NO_CHANGE = {"splits": {}}  # the report of a release both locks pin alike


def changed(report: dict) -> bool:
    return any(s[k] for s in report["splits"].values() for k in ("added", "removed", "text_changed", "image_changed"))


def row_reports(repo: str, base_rev: str, head_rev: str, labels: dict[str, str]):
    """Per head release: (base release, head release, diff report or None, note)."""
    from scripts.tools import diff

    fs_a, fs_b = diff.open_fs(repo, base_rev), diff.open_fs(repo, head_rev)
    try:
        at_base = diff.releases_at(fs_a, labels[base_rev])
    except DataError:  # no params.yaml at the base: every release is new; one that is there but unreadable
        if fs_a.exists("params.yaml"):  # (not UTF-8, too deep, a link) said so, not every release "new"
            raise
        at_base = {}
    at_head = diff.releases_at(fs_b, "" if head_rev == "workspace" else labels[head_rev])
    same = unchanged_releases(repo, base_rev, head_rev)
    out = []
    for release_a, release_b in release_pairs(at_base, at_head):
        if release_a == release_b and release_b in same:
            out.append((release_a, release_b, NO_CHANGE, ""))
            continue
        if release_a is None:
            out.append((None, release_b, None, f"new release, nothing at {labels[base_rev]} to compare with"))
            continue
        try:
            a = diff.read_snapshot(fs_a, labels[base_rev], release_a)
            b = diff.read_snapshot(fs_b, labels[head_rev], release_b)
        except DataError as exc:
            out.append((release_a, release_b, None, f"not compared: {exc}"))
            continue
        explain = diff.source_removals(fs_b, set(a.rows["source"]), labels[head_rev])
        explain.update(dict(zip(b.removed["id"], b.removed["reason"])))
        out.append((release_a, release_b, diff.compare(a, b, explain), ""))
    gone = [r for r in at_base if r not in at_head]
    return out, gone, fs_a, fs_b


# --- dvc metrics diff / dvc plots diff ------------------------------------------------------------


DVC_TIMEOUT_S = 1800  # generous: a stalled remote or a file that never answers ends in one line


def dvc(args: list[str], repo: str) -> subprocess.CompletedProcess:
    try:
        return run_in_group(  # a signal to pr-comment alone stops dvc and all it started
            [sys.executable, "-m", "dvc", *args],
            cwd=repo,
            capture_output=True,
            text=True,
            env=dvc_env(),
            timeout=DVC_TIMEOUT_S,
        )
    except subprocess.TimeoutExpired:
        raise DataError(f"dvc {' '.join(args[:2])}: no answer within {DVC_TIMEOUT_S}s") from None


def _dvc_rev(rev: str) -> list[str]:
    return [] if rev == "workspace" else [rev]


def metrics_section(repo: str, base_rev: str, head_rev: str, labels: dict[str, str], releases=()) -> list[str]:
    """`dvc metrics diff` of data/summary.json and the stats.json of `releases` (plain outputs, not
    metrics, so that `dvc exp show` stays narrow: named as targets)."""
    targets = ["data/summary.json", *(f"data/releases/{r}/stats.json" for r in releases)]
    from scripts.tools.lock_text import refuse_git_links

    refuse_git_links(repo, (base_rev, head_rev), targets, labels)  # (commits) a link is its target's text
    result = dvc(["metrics", "diff", base_rev, *_dvc_rev(head_rev), "--json", "--targets", *targets], repo)
    lines = ["### Metrics (`dvc metrics diff`)", ""]
    head = labels.get(head_rev, head_rev)
    table = metrics_table(result.stdout, labels.get(base_rev, base_rev), head) if result.returncode == 0 else None
    if table is None:
        return lines + [f"_dvc metrics diff failed: {cell(_last_line(result.stderr), 300)}_"]
    return lines + table


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1].strip() if lines else "no output"


def _error_line(text: str) -> str:
    """DVC's `ERROR: ...` line (its last line is a banner: "Having any troubles? Hit us up ...")."""
    errors = [line for line in text.splitlines() if line.startswith("ERROR")]
    return cell(errors[-1].strip(), 300) if errors else cell(_last_line(text), 300)


def plots_section(repo: str, base_rev: str, head_rev: str, out: Path, run_url: str | None, labels=None) -> list[str]:
    from scripts.tools.lock_text import plot_files, refuse_git_links

    lines = ["### Plots (`dvc plots diff`)", ""]
    with tempfile.TemporaryDirectory() as tmp:  # -o: image plots are copied there, not into the repository
        result = dvc(["plots", "diff", base_rev, *_dvc_rev(head_rev), "--json", "-o", tmp], repo)
    if result.returncode != 0:
        return lines + [f"_dvc plots diff failed: {cell(_last_line(result.stderr), 300)}_"]
    plots = dvc_json(result.stdout)
    if plots is None:
        return lines + ["_dvc plots diff failed: its --json output is not an object of plots_"]
    refuse_git_links(repo, (base_rev, head_rev), plot_files(plots), labels or {})  # dvc read a link's target text
    changes = plot_changes(plots, base_rev, head_rev)
    from scripts.lib.io import atomic_path

    with atomic_path(out / "plots", is_dir=True) as page:  # the page, for the artifact; a folder of ours
        rendered = dvc(["plots", "diff", base_rev, *_dvc_rev(head_rev), "-o", str(page)], repo)
        if rendered.returncode != 0:  # a full disk while dvc wrote the page: the cut page was put in, exit 0
            raise DataError(f"{shown(out / 'plots')}: cannot write (dvc plots diff: {_error_line(rendered.stderr)})")
    where = f"[the run's `dataset-diff` artifact]({run_url})" if run_url else f"`{out.name}/plots/index.html`"
    if not changes:
        return lines + [f"No plot data changed. Rendered plots: {where}."]
    lines.append(f"{len(changes)} plot(s) with changed data; rendered overlays: {where}.")
    for plot_id, (before, after) in changes.items():
        columns = sorted({k for p in before + after for k in p})
        lines += [
            "",
            f"<details><summary><code>{html.escape(str(plot_id))}</code>: {len(before)} point(s) only in base, "
            f"{len(after)} only in PR</summary>",
            "",
            "| | " + " | ".join(cell(c, 80) for c in columns) + " |",
            "|---|" + "---|" * len(columns),
        ]
        for sign, points in (("−", before), ("+", after)):
            lines += [
                f"| {sign} | " + " | ".join(cell(p.get(c, ""), 80) for c in columns) + " |" for p in points[:PLOT_ROWS]
            ]
            if len(points) > PLOT_ROWS:
                lines.append(f"| {sign} | … {len(points) - PLOT_ROWS} more |" + " |" * (len(columns) - 1))
        lines += ["", "</details>"]
    return lines


# --- contact sheets ----------------------------------------------------------------------------------


def contact_sheets(
    repo: str, base_rev: str, head_rev: str, pairs: list[tuple[str | None, str]], fs_a, fs_b, out: Path
) -> dict[tuple[str, str], str | None]:
    """Copy each pair's base and head preview.jpg into out/sheets/ as `base-R.jpg` / `head-R.jpg`;
    (side, release) -> file name (None when that revision has no contact sheet). The images come from
    `dvc plots diff --targets ...preview.jpg` (as image plots), else straight from DVC's filesystem.
    Each is read in full and checked first; then written atomically, over sheets of ours only."""
    from scripts.tools import diff

    wanted = {("base", a): (a, base_rev, fs_a) for a, _ in pairs if a} | {
        ("head", b): (b, head_rev, fs_b) for _, b in pairs
    }
    targets = sorted({f"data/releases/{release}/preview.jpg" for release, _, _ in wanted.values()})
    for release, rev, _ in wanted.values():  # dvc plots diff and DVC's filesystem follow a link: look first
        if rev == "workspace":
            path = Path(repo) / f"data/releases/{release}/preview.jpg"
            check_inside(path, (repo, Path(repo) / ".dvc" / "cache"), "copy it as a contact sheet")
    found: dict[tuple[str, str], bytes] = {}
    with tempfile.TemporaryDirectory() as tmp:
        result = dvc(["plots", "diff", base_rev, *_dvc_rev(head_rev), "--json", "-o", tmp, "--targets", *targets], repo)
        plots = (dvc_json(result.stdout) or {}).get("data", {}) if result.returncode == 0 else {}
        head_name = "workspace" if head_rev == "workspace" else head_rev
        for key, (release, rev, _) in wanted.items():
            for entry in plots.get(f"data/releases/{release}/preview.jpg", []):
                if entry.get("type") == "image" and entry.get("revisions") == [head_name if key[0] == "head" else rev]:
                    data = _read_sheet(Path(entry["url"]), repo, tmp)
                    if data is not None:
                        found[key] = data
    for key, (release, _rev, fs) in wanted.items():
        if key not in found:
            path = f"data/releases/{release}/preview.jpg"
            try:  # not in the cache here (a fresh clone): no sheet, the rows' note says to pull
                with diff.open_at(fs, path, path) as f:
                    data = f.read(MAX_SHEET_BYTES + 1)
            except (FileNotFoundError, OSError, DataError):
                continue
            if _is_sheet(data):
                found[key] = data
    return _write_sheets(out / "sheets", {key: (f"{key[0]}-{wanted[key][0]}.jpg", data) for key, data in found.items()})


def _is_sheet(data: bytes) -> bool:
    """JPEG bytes no larger than a contact sheet pr-comment-post commits (sheets_to_commit's rule)."""
    return data.startswith(b"\xff\xd8\xff") and len(data) <= MAX_SHEET_BYTES


def _read_sheet(path: Path, repo: str, tmp: str) -> bytes | None:
    """A preview.jpg's bytes (None when absent or not a JPEG sheet) that dvc put in `tmp`; a link only
    into the repository or DVC's cache."""
    check_inside(path, (repo, Path(repo) / ".dvc" / "cache", tmp), "copy it as a contact sheet")
    if not path.is_file():
        return None
    with open(path, "rb") as f:
        data = f.read(MAX_SHEET_BYTES + 1)
    return data if _is_sheet(data) else None


def _write_sheets(sheets: Path, files: dict[tuple[str, str], tuple[str, bytes]]) -> dict[tuple[str, str], str | None]:
    """Write the sheets (every path checked before the first is written: a user's file or a link under
    a sheet's name is refused, never replaced); (side, release) -> file name."""
    from scripts.lib.io import atomic_path, check_files_ours

    check_files_ours(*(sheets / name for name, _ in files.values()))
    for name, data in files.values():
        with atomic_path(sheets / name) as tmp:
            tmp.write_bytes(data)
    return {key: name for key, (name, _) in files.items()}


def sheets_section(
    pairs, names: dict, labels: dict[str, str], base_rev: str, head_rev: str, assets_url: str | None
) -> list[str]:
    prefix = assets_url.rstrip("/") + "/" if assets_url else "sheets/"
    lines = [
        "### Contact sheets (`preview.jpg`)",
        "",
        f"| release | base: {code(labels[base_rev])} | PR: {code(labels[head_rev])} |",
        "|---|---|---|",
    ]
    for release_a, release_b in pairs:
        cells = []
        for side, release in (("base", release_a), ("head", release_b)):
            name = names.get((side, release)) if release else None
            cells.append(f"![{side} {release} preview.jpg]({prefix}{name})<br>`{release}`" if name else "_none_")
        lines.append(f"| `{release_b}` | " + " | ".join(cells) + " |")
    return lines


# --- the body ------------------------------------------------------------------------------------


def release_details(reports: list) -> list[str]:
    """The comment's lines for each release compared (its row diff) or not (why not: an error line that
    may quote the data, a hostile id, so it is shown as text)."""
    from scripts.tools import diff

    details = []
    for _release_a, release_b, report, note in reports:
        if report is None:
            details += [f"### `{release_b}`", "", f"_{cell(note, 300)}_", ""]
        elif changed(report):
            details += [diff.to_markdown(report).replace("## Dataset diff", "### Rows").rstrip(), ""]
    return details


def build_body(
    repo: str, base_rev: str, head_rev: str, out: Path, assets_url: str | None = None, run_url: str | None = None
) -> str:
    labels = {base_rev: base_rev, head_rev: head_rev}
    base_sha = _git_rev(repo, base_rev)  # dvc commands get the commit: a ref like origin/main has a slash
    head_name, head_rev = head_rev, head_rev if head_rev == "workspace" else _git_rev(repo, head_rev)
    labels[head_rev] = head_name
    reports, gone, fs_a, fs_b = row_reports(repo, base_rev, head_rev, labels)
    labels[base_sha] = base_rev
    head_sha = _git_rev(repo, "HEAD")
    head = f"{head_sha[:8]} + rebuilt workspace" if head_rev == "workspace" else head_name
    title = f"## Dataset diff: {code_span(base_rev)} ({base_sha[:8]}) → PR ({cell(head)})"
    lines = [MARKER, title, ""]
    unchanged = [
        f"`{b}`" + (f" (= `{a}`)" if a != b else "") for a, b, report, _ in reports if report and not changed(report)
    ]
    shown = [(a, b) for a, b, report, _ in reports if report is None or changed(report)]
    details = release_details(reports)
    if unchanged:
        lines += ["Releases with no row, text or image change: " + ", ".join(unchanged) + ".", ""]
    if gone:
        lines += ["Releases removed by this PR: " + ", ".join(f"`{r}`" for r in gone) + ".", ""]
    if not shown:
        lines += ["No release changed.", ""]
    lines += details
    if shown:
        names = contact_sheets(repo, base_sha, head_rev, shown, fs_a, fs_b, out)
        lines += sheets_section(shown, names, {**labels, base_sha: base_rev}, base_sha, head_rev, assets_url) + [""]
    # the head's column named as the title names it (its commit was shown: the labels held the base only)
    metric_labels = {base_sha: base_rev, head_rev: head_name}
    lines += metrics_section(repo, base_sha, head_rev, metric_labels, [b for _, b in shown]) + [""]
    plots = plots_section(repo, base_sha, head_rev, out, run_url, metric_labels)
    body = "\n".join(lines + plots) + "\n"
    if len(body) > MAX_BODY:  # the plot tables go first, then the row details are cut
        body = "\n".join(lines + plots[:3] + ["", "_Plot details left out (comment size limit)._"]) + "\n"
    if len(body) > MAX_BODY:
        body = (
            body[: MAX_BODY - 200]
            + "\n\n_… cut at GitHub's comment size limit; the full report is in the run's artifact._\n"
        )
    return body


def _git_rev(repo: str, rev: str) -> str:
    from scripts.tools.side_inputs import commit_of

    if rev == "HEAD":  # a repository with no commit yet: the title shows none
        try:
            return commit_of(repo, rev)
        except DataError:
            return ""
    return commit_of(repo, rev)


def cli(
    base_rev: str = typer.Argument(..., help="the base revision (e.g. origin/main)"),
    head_rev: str = typer.Argument("workspace", help="the PR's revision; workspace = the rebuilt working tree"),
    out: Path = typer.Option(Path("dataset-diff"), "--out", help="folder for comment.md, sheets/, plots/"),
    assets_url: str = typer.Option(
        None, "--assets-url", help="URL the sheets/ images will be served from (default: relative paths)"
    ),
    run_url: str = typer.Option(None, "--run-url", help="link to the CI run holding the artifact"),
    repo: Path = typer.Option(Path("."), "--repo", help="the DVC repository"),
) -> None:
    """Write the dataset-diff PR comment body (rows, metrics, plots, contact sheets) to OUT/comment.md."""
    check_outside_stores(repo, out / "comment.md", out / "sheets", out / "plots")  # never into what it compares
    check_files_ours(out / "comment.md")  # before any work: a user's comment.md, or a link there, stays
    check_output_kind(out / "sheets")  # written into: never through a link
    check_replaceable(out / "plots")  # replaced whole (dvc renders into a temp): only a plots/ we wrote
    from scripts.lib.temps import output_lock
    from scripts.tools.github_client import comment_link

    assets_url, run_url = comment_link(assets_url, "--assets-url"), comment_link(run_url, "--run-url")
    # the whole run under comment.md's lock: two at once wrote one's plots/ and sheets/ beside the other's comment
    # plots/, the sheets and comment.md are renamed in together: a full disk at one left the others new
    with output_lock(out / "comment.md", whole_run=True), outputs_together():
        body = build_body(str(repo), base_rev, head_rev, out, assets_url, run_url)
        with atomic_path(out / "comment.md") as tmp:
            tmp.write_text(body, encoding="utf-8")
    print(shown(f"pr-comment: {out / 'comment.md'} ({len(body)} characters)"))


# --- posting (GitHub REST API, standard library only: scripts/tools/github_client.py) -------------


SHEET_NAME = re.compile(r"(base|head)-[A-Za-z0-9][A-Za-z0-9._-]*\.jpg")
MAX_SHEET_BYTES, MAX_SHEETS = 8 << 20, 64  # the artifact is the PR's output: only small JPEGs are committed


def sheets_to_commit(folder: Path, prefix: str) -> dict[str, bytes]:
    """The contact sheets of pr-comment's OUT/sheets, checked: names pr-comment gives, JPEG bytes, sizes
    bounded before a byte is read (the folder comes from a run of the PR's own code)."""
    from scripts.tools.github_client import read_capped

    paths = []
    with os.scandir(folder) as entries:
        for entry in entries:  # counted while listed: a folder of a million names is refused early
            paths.append(folder / entry.name)
            if len(paths) > MAX_SHEETS:
                raise DataError(f"{shown(folder)}: more than the {MAX_SHEETS} contact sheets a comment shows")
    files = {}
    for path in sorted(paths):
        data = read_capped(path, MAX_SHEET_BYTES, "contact sheet") if SHEET_NAME.fullmatch(path.name) else b""
        if not data.startswith(b"\xff\xd8\xff"):
            raise DataError(
                f"{shown(path)}: not a contact sheet pr-comment writes (base-R.jpg / head-R.jpg, a JPEG under 8 MiB)"
            )
        files[f"{prefix}/{path.name}"] = data
    return files


def pr_number(pr: int | None, pr_from: Path | None) -> int:
    from scripts.tools.github_client import pr_number_from

    if pr is not None:
        return pr
    if pr_from is None:
        raise DataError("give --pr N or --pr-from FILE")
    return pr_number_from(pr_from)


def cli_post(
    body_file: Path = typer.Argument(..., help="the comment body (pr-comment's OUT/comment.md)"),
    pr: int = typer.Option(None, "--pr", min=1, help="pull request number"),
    pr_from: Path = typer.Option(None, "--pr-from", help="file holding the number (the build job's artifact)"),
    head_sha: str = typer.Option(
        None, "--head-sha", help="refuse unless the PR's head is this commit (the run that built the body)"
    ),
    assets: Path = typer.Option(None, "--assets", help="folder of images to commit first (pr-comment's OUT/sheets)"),
    assets_branch: str = typer.Option("dataset-diff-assets", "--assets-branch", help="branch that holds the images"),
    assets_prefix: str = typer.Option(
        None, "--assets-prefix", help="folder on that branch (default: pr-N/HEAD_SHA, else pr-N)"
    ),
    timeout: float = typer.Option(60.0, "--timeout", min=0.1, max=3600, help="seconds per API request, all told"),
) -> None:
    """Post the dataset-diff comment on a pull request, editing the previous one in place."""
    from scripts.tools.github_client import DEFAULT_API, GitHub, check_branch, read_text, token_from_env

    token = token_from_env()
    github = GitHub(
        os.environ.get("GITHUB_REPOSITORY") or "", token, os.environ.get("GITHUB_API_URL") or DEFAULT_API, timeout
    )
    number = pr_number(pr, pr_from)
    body = read_text(body_file, 4 * MAX_BODY, "comment body")  # UTF-8: up to 4 bytes a character
    if MARKER not in body:
        raise DataError(f"{shown(body_file)}: no {MARKER} marker (write it with `python -m scripts pr-comment`)")
    if len(body) > MAX_BODY:
        raise DataError(f"{shown(body_file)}: {len(body)} characters, over GitHub's comment limit")
    files: dict[str, bytes] = {}  # the sheets, read and checked before the first request is sent
    if assets is not None and assets.is_dir():
        check_branch(assets_branch, "--assets-branch")  # branch and folder go into API paths and the tree
        prefix = assets_prefix or (f"pr-{number}/{head_sha}" if head_sha else f"pr-{number}")
        files = sheets_to_commit(assets, check_branch(prefix, "--assets-prefix" if assets_prefix else "--head-sha"))
    if head_sha:  # the number came with the artifact: post only on the PR whose head that run built
        actual = github.head_sha(number)
        if actual != head_sha:
            message = f"pull request #{number}: head is {actual}, not {head_sha} (the run that wrote {body_file})"
            raise DataError(github.redacted(message))
    if files:
        sha = github.commit_files(assets_branch, files, f"dataset-diff images for #{number}")
        print(shown(f"pr-comment-post: {len(files)} image(s) on {assets_branch} ({sha[:8]})"))
    action, comment = github.upsert_comment(number, body, MARKER)
    print(github.redacted(f"pr-comment-post: {action} {github.comment_url(comment)}"))  # the token never shown
