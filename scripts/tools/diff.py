"""diff: what a dataset version gained and lost, row by row, between two git revisions.

    python -m scripts diff REV_A REV_B [--release V] [--format md|json]

Rows are matched by their stable `id`, read from the release's rows.parquet (any export layout; a
release built before rows.parquet existed is read from its ImageFolder metadata.jsonl, so diffs
against old tags still work). Files are read at each revision through DVCFileSystem, so a
branch, a tag or a commit works as long as its data is in the cache or the default remote;
`workspace` means the working tree. With no
--release, a revision that is itself a release name (a tag such as v4-a) compares that release;
otherwise every release present at both revisions is compared. A name git does not know but the
workspace's params.yaml lists as a release means that release's folder in the workspace (a fresh
clone has no tags): `diff v4-a v4-b` compares the two built releases either way.
Removals are explained from REV_B's own records: the release's removed.parquet (recipe steps:
cross-dedup, reclean, leaks), then the source's clean/dedup outputs, else "recipe" (the row's
component is no longer in the recipe).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import sqlite3
import subprocess
import sys
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import typer
import yaml

from scripts.lib.clusters_table import CLUSTER_COLUMNS, check_clusters
from scripts.lib.errors import DataError, shown, shown_lines, shown_short
from scripts.lib.export import parse_metadata
from scripts.lib.failure_lines import dvc_index_line
from scripts.lib.io import MAX_CONFIG_BYTES, SPLITS, regular_file
from scripts.lib.markdown_text import cell, code, code_span
from scripts.lib.nesting import TooDeep
from scripts.lib.params import read_yaml
from scripts.lib.tables import check_cells, check_table
from scripts.tools.diff_rows import compare_rows, leaks, rows_by_id, split_report
from scripts.tools.diff_stream import ROW_PRESENT, ROW_TEXT, SortedRows, read_sorted
from scripts.tools.side_inputs import commit_of

WORKSPACE = "workspace"  # a revision name meaning the working tree (uncommitted results of `dvc repro`)
NOT_HERE = "not in the DVC cache here (run `dvc pull`, or `dvc fetch` for another revision)"


@dataclass
class Snapshot:
    """One release at one revision: its rows (both splits), removals and image hashes."""

    rev: str
    release: str
    rows: pd.DataFrame | SortedRows  # id, source, split, text (rows.parquet's: spilled in id order, digests with them)
    removed: pd.DataFrame  # id, reason
    # id -> "md5:<hex>" of an image file (DVC's index) or "sha256:<hex>" of an image inside a shard
    # (a frame's rows; SortedRows carry theirs); hashes of two kinds are not compared
    image_md5: dict[str, str]
    sources: set | None = None  # the rows' sources (None: the frame's)
    leaks: int | None = None  # validation rows whose text is a train row's (None: counted from the frame)

    def row_sources(self) -> set:
        return self.sources if self.sources is not None else set(self.rows["source"])

    def ordered(self):
        """The rows in id order as (id, source, split, text, image digest)."""
        if isinstance(self.rows, SortedRows):
            return self.rows.rows()
        return rows_by_id(self.rows, self.image_md5)

    def close(self) -> None:
        if isinstance(self.rows, SortedRows):
            self.rows.close()


# --- reading at a revision -----------------------------------------------------------------------


def open_fs(repo: str, rev: str):
    from dvc.api import DVCFileSystem

    if rev == WORKSPACE:  # the working tree's params.yaml is read through the filesystem: a FIFO there hung diff
        with contextlib.suppress(FileNotFoundError):
            regular_file(Path(repo) / "params.yaml")
    # the commit git names, asked first: a tree or a blob (`HEAD^{tree}`, `HEAD:params.yaml`) was DVC's own
    # AttributeError text, and a name holding a line break was cut mid-line
    commit = None if rev == WORKSPACE else commit_of(repo, rev)
    try:
        fs = DVCFileSystem(repo, rev=commit)
        fs.repo  # noqa: B018  the filesystem opens the revision lazily: an unknown one fails here
        fs.t2i_root = Path(repo) if rev == WORKSPACE else None  # the workspace's files are checked first
        fs.t2i_commit = (repo, commit) if commit else None  # a revision's git files: links refused (open_at)
        return fs
    except (OSError, sqlite3.Error) as exc:  # DVC's index (sqlite) at a full disk, `ulimit -f` or `ulimit -n`
        raise DataError(dvc_index_line(repo, rev, exc)) from None
    except Exception as exc:
        raise DataError(f"{repo}: cannot open revision {rev!r} ({type(exc).__name__}: {exc})".splitlines()[0]) from None


def _from_dvc(exc: Exception) -> bool:
    return type(exc).__module__.split(".")[0] in ("dvc", "dvc_data", "dvc_objects")


@contextlib.contextmanager
def dvc_read(where: str):
    """DVC's own errors reading `where` (a folder whose .dir the cache lacks: a fresh clone) as one line."""
    try:
        yield
    except (DataError, FileNotFoundError, UnicodeDecodeError):
        raise
    except Exception as exc:
        if _from_dvc(exc):
            raise DataError(f"{shown(where)}: {NOT_HERE}") from None
        raise


@contextlib.contextmanager
def open_at(fs, path: str, where: str, mode: str = "rb"):
    """fs.open(path); a workspace file is opened ONCE here instead (workspace_file) and read from that open."""
    root, at_commit = getattr(fs, "t2i_root", None), getattr(fs, "t2i_commit", None)
    if at_commit is not None:  # a link git stores is its target's text: refused, as the workspace's link out
        from scripts.tools.lock_text import git_entry

        git_entry(*at_commit, path, shown(where))
    if root is None or not os.path.lexists(root / path):  # nothing there: fs.open says FileNotFoundError
        with dvc_read(where), fs.open(path, mode, **({"encoding": "utf-8"} if "b" not in mode else {})) as f:
            yield f
        return
    from scripts.tools.side_inputs import workspace_file

    file = workspace_file(root, path, where)
    with file if "b" in mode else io.TextIOWrapper(file, encoding="utf-8") as f:
        yield f


def releases_at(fs, rev: str = "") -> dict:
    """`releases` of params.yaml at `rev`: a file missing, not YAML or not a mapping there is one line."""
    where = f"{rev}:params.yaml" if rev else "params.yaml"
    try:
        with open_at(fs, "params.yaml", where) as f:
            # a revision's file is read whole by git's object reader: its size is checked first, as the
            # workspace's params.yaml is bounded (io.config_text); a 500 MB one took minutes and gigabytes
            if (
                fs.size("params.yaml") > MAX_CONFIG_BYTES
                or len(data := f.read(MAX_CONFIG_BYTES + 1)) > MAX_CONFIG_BYTES
            ):
                raise DataError(f"{shown(where)}: larger than {MAX_CONFIG_BYTES} bytes; refusing to read it")
        params = read_yaml(data.decode("utf-8")) or {}  # as load_params and DVC read it: YAML 1.2, depth-bounded
    except FileNotFoundError:
        raise DataError(f"{where}: not found") from None
    except UnicodeDecodeError:
        raise DataError(f"{where}: not UTF-8 text") from None
    except TooDeep as exc:
        raise DataError(f"{where}: {exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f"line {mark.line + 1}: " if mark is not None else ""
        raise DataError(
            f"{where}: {at}not valid YAML ({getattr(exc, 'problem', None) or type(exc).__name__})"
        ) from None
    releases = params.get("releases") if isinstance(params, dict) else None
    if not isinstance(params, dict) or not isinstance(releases or {}, dict):
        raise DataError(f"{where}: expected a mapping with a `releases` mapping")
    return check_release_entries(releases or {}, where)


def check_release_entries(releases: dict, where: str) -> dict:
    """`releases` as the stages accept them: plain names (a PR's `X/../../../y` joined into pr-comment's
    sheet path wrote outside --out, and `@everyone <!--` went raw into the comment), each entry a mapping
    whose `base` is a name (a list there was a traceback). Pure: the revision's file is read by the caller."""
    from scripts.lib.params import check_name

    for name, entry in releases.items():
        try:
            check_name(name if isinstance(name, str) else "", "release")
        except ValueError:
            raise DataError(f"{where}: releases: {shown_short(repr(name))} is not a plain release name") from None
        base = entry.get("base") if isinstance(entry, dict) else None
        if not isinstance(entry, dict | None) or not isinstance(base, str | None):
            raise DataError(f"{where}: releases.{name}: expected a mapping whose `base` is a release name")
    return releases


def read_snapshot(fs, rev: str, release: str) -> Snapshot:
    base = f"data/releases/{release}"
    removed = _read_parquet(fs, f"{base}/removed.parquet", ["id", "reason"], rev)
    where = f"{rev}:{base}/rows.parquet"
    try:
        with open_at(fs, f"{base}/rows.parquet", where) as f:
            file = pq.ParquetFile(seekable(f), pre_buffer=False)
            rows, sources, leak_count = read_sorted(file, where, partial(_digests, fs, rev, release, where=where))
            return Snapshot(rev, release, rows, removed, {}, sources=sources, leaks=leak_count)
    except FileNotFoundError:
        return _read_metadata_snapshot(fs, rev, release, removed)
    except DataError:
        raise
    except Exception as exc:
        raise DataError(f"{where}: not a readable parquet table ({type(exc).__name__})") from None


def _digests(fs, rev: str, release: str, batch, where: str) -> list[str | None]:
    """Each row's image digest ("md5:" from DVC's index, "sha256:" of a shard member), None without an image."""
    base = f"data/releases/{release}"
    names = batch.schema.names
    sha = batch.column("image_sha256").to_pylist() if "image_sha256" in names else [None] * batch.num_rows
    digests: list[str | None] = []
    for row_id, image, digest in zip(batch.column("id").to_pylist(), batch.column("image").to_pylist(), sha):
        if image is None:
            digests.append(None)
            continue
        check_in_folder(image, f"{where}: id {shown_short(row_id)!r}: image")
        if "!/" in image:
            digests.append(f"sha256:{digest}" if isinstance(digest, str) else "")
        else:
            digests.append(_file_md5(fs, rev, base, image, f"{base}/rows.parquet", row_id))
    return digests


def seekable(f):
    """`f` where pyarrow can seek in it (a workspace file, DVC's cache), else its bytes: a git object's stream (a
    revision's file git stores) cannot seek, and git's object reader hands it over whole anyway."""
    return f if f.seekable() else io.BytesIO(f.read())


def _read_metadata_snapshot(fs, rev: str, release: str, removed: pd.DataFrame) -> Snapshot:
    """A release built before rows.parquet: its ImageFolder metadata.jsonl, split by split."""
    base = f"data/releases/{release}"
    frames = []
    image_md5: dict[str, str] = {}
    for split in SPLITS:
        path = f"{base}/{split}/metadata.jsonl"
        try:
            with open_at(fs, path, f"{rev}:{path}", "r") as f:
                records = parse_metadata(f, f"{rev}:{path}", ("id", "source", "text", "file_name"))
        except FileNotFoundError:
            raise DataError(f"{rev}:{path}: not found (is release {release} built and pushed at {rev}?)") from None
        frame = pd.DataFrame.from_records(records, columns=["id", "source", "text", "file_name"]).assign(split=split)
        check_table(frame, f"{rev}:{path}", strings=ROW_TEXT + ("file_name",), unique="id", present=ROW_PRESENT)
        for row_id in frame["id"]:
            if row_id in image_md5:  # an id in both splits: which row is it?
                raise DataError(f"{rev}:{path}: id {shown_short(row_id)!r} is in another split's metadata.jsonl too")
        frames.append(frame[["id", "source", "split", "text"]])
        for row in frame.itertuples(index=False):
            check_in_folder(row.file_name, f"{rev}:{path}: id {shown_short(row.id)!r}: file_name")
            image_md5[row.id] = _file_md5(
                fs, rev, f"{base}/{split}", row.file_name, f"{base}/{split}/metadata.jsonl", row.id
            )
    return Snapshot(rev, release, pd.concat(frames, ignore_index=True), removed, image_md5)


def check_in_folder(name: str, where: str) -> None:
    """A path a release's table names (rows.parquet's `image`, an archive's part of it; metadata.jsonl's
    `file_name`) that stays in the folder it is relative to, by its text: at a git revision no link can be
    followed, so `..` is refused outright, as an absolute path is. `../../../params.yaml` compared a file
    outside the release as the row's image, at exit 0 (publish and export refuse it: safe_paths.confined_file)."""
    parts = name.partition("!/")[0].split("/")  # `a.tar!/k1.png`: the archive's path
    if not name or "\0" in name or name.startswith("/") or ".." in parts:
        raise DataError(f"{where} {shown_short(repr(name))} leaves its folder (no `..`, no absolute path)")


def _file_md5(fs, rev: str, folder: str, name: str, listed_in: str, row_id: str) -> str:
    """ "md5:<hex>" of the image file folder/name from DVC's own index (no image bytes are read)."""
    try:
        with dvc_read(f"{rev}:{folder}/{name}"):
            info = fs.info(f"{folder}/{name}")
    except FileNotFoundError:
        raise DataError(f"{rev}:{listed_in}: image {name!r} of id {row_id} not found") from None
    md5 = info.get("md5") or (info.get("dvc_info") or {}).get("md5")
    return f"md5:{md5}" if md5 else ""


def _read_parquet(fs, path: str, columns: list[str], rev: str = "", check=None) -> pd.DataFrame:
    """A table at a revision, empty when absent; unreadable, lacking a column, or a cell that is not text
    (nothing missing) is one line naming it (and the row). `check(table, where)` (a pyarrow table) replaces
    that text check for a table whose readers share one (the clusters table's check_clusters)."""
    where = f"{rev}:{path}" if rev else path
    try:
        with open_at(fs, path, where) as f:
            data = io.BytesIO(f.read())
        table = pq.read_table(data) if check else pd.read_parquet(data)
    except FileNotFoundError:
        return pd.DataFrame(columns=columns)
    except DataError:
        raise
    except Exception as exc:  # pyarrow's errors on a file that is not parquet
        raise DataError(f"{shown(where)}: not a readable parquet table ({type(exc).__name__})") from None
    if check:
        check(table, where)
        return table.select(columns).to_pandas()
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise DataError(f"{shown(where)}: no {missing[0]!r} column")
    check_cells(table, shown(where), text=tuple(columns), present=tuple(columns))
    return table


def source_removals(fs, sources: set[str], rev: str = "") -> dict[str, str]:
    """id -> reason from the per-source clean and dedup outputs at one revision."""
    reasons: dict[str, str] = {}
    for source in sorted(sources):
        dropped = _read_parquet(fs, f"data/clean/{source}.dropped.parquet", ["id", "reason"], rev)
        reasons.update({i: f"clean:{r}" for i, r in zip(dropped["id"], dropped["reason"])})
        path = f"data/dedup/{source}.clusters.parquet"
        clusters = _read_parquet(fs, path, list(CLUSTER_COLUMNS), rev, check=check_clusters)
        for row in clusters.itertuples(index=False):
            reasons[row.id] = f"dedup:duplicate_of={row.duplicate_of} jaccard={float(row.jaccard):.2f}"
    return reasons


# --- comparing (tables in, report out) -----------------------------------------------------------


def compare(a: Snapshot, b: Snapshot, explain: dict[str, str]) -> dict:
    """Row-level differences per split and source; explain maps removed ids to reasons. The rows are
    merged in id order (diff_rows): no indexed copies of both tables, no sort of every id in Python."""
    splits = compare_rows(a.ordered(), b.ordered(), explain)
    report = {"rev_a": a.rev, "rev_b": b.rev, "release_a": a.release, "release_b": b.release, "splits": {}}
    report["splits"] = {split: split_report(s) for split, s in splits.items()}
    report["leaks_b"] = b.leaks if b.leaks is not None else leaks(b.rows)
    return report


def to_markdown(report: dict) -> str:
    a, b = report["rev_a"], report["rev_b"]
    title = (
        report["release_b"]
        if report["release_a"] == report["release_b"]
        else f"{report['release_a']} → {report['release_b']}"
    )
    lines = [
        f"## Dataset diff: {code_span(title)} ({cell(a)} → {cell(b)})",
        "",
        "| split | rows before | rows after | added | removed | text changed | image changed |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for split, s in report["splits"].items():
        lines.append(
            f"| {split} | {s['rows_a']} | {s['rows_b']} | +{s['added']} | -{s['removed']} | {s['text_changed']} | {s['image_changed']} |"
        )
    lines.append("")
    lines.append(f"Validation rows whose text is also in train after the change: **{report['leaks_b']}**")
    lines.append("")
    lines.append(
        f"See: contact sheet `data/releases/{report['release_b']}/preview.jpg`, near-duplicates "
        f"`data/dedup/<source>.preview.html`, plots {code_span(f'dvc plots diff {a} {b}', 400)}"
    )
    for split, s in report["splits"].items():
        if not (s["added"] or s["removed"] or s["text_changed"]):
            continue
        lines += ["", f"### {split}", ""]
        for label, key in (
            ("added by source", "added_by_source"),
            ("removed by source", "removed_by_source"),
            ("removed by reason", "removed_by_reason"),
        ):
            if s[key]:
                lines.append(f"- {label}: " + ", ".join(f"{code_span(k)} {v}" for k, v in s[key].items()))
        if s["samples_removed"]:
            lines += [
                "",
                "<details><summary>sample removed rows</summary>",
                "",
                "| id | source | reason | text |",
                "|---|---|---|---|",
            ]
            lines += [
                f"| {code(r['id'])} | {cell(r['source'])} | {code(r['reason'])} | {cell(r['text'])} |"
                for r in s["samples_removed"]
            ]
            lines += ["", "</details>"]
        if s["samples_added"]:
            lines += [
                "",
                "<details><summary>sample added rows</summary>",
                "",
                "| id | source | text |",
                "|---|---|---|",
            ]
            lines += [f"| {code(r['id'])} | {cell(r['source'])} | {cell(r['text'])} |" for r in s["samples_added"]]
            lines += ["", "</details>"]
        if s["samples_text_changed"]:
            lines += [
                "",
                "<details><summary>sample text changes</summary>",
                "",
                "| id | before | after |",
                "|---|---|---|",
            ]
            lines += [
                f"| {code(r['id'])} | {cell(r['before'])} | {cell(r['after'])} |" for r in s["samples_text_changed"]
            ]
            lines += ["", "</details>"]
    return "\n".join(lines) + "\n"


# --- command -------------------------------------------------------------------------------------


def pick_releases(rev_a: str, rev_b: str, release: str | None, at_a: dict, at_b: dict) -> list[tuple[str, str]]:
    if release:
        pairs = [(release, release)]
    elif rev_a in at_a and rev_b in at_b:
        pairs = [(rev_a, rev_b)]
    else:
        pairs = [(r, r) for r in at_b if r in at_a]
    for ra, rb in pairs:
        if ra not in at_a or rb not in at_b:
            missing = (rev_a, ra) if ra not in at_a else (rev_b, rb)
            raise DataError(f"{missing[0]}:params.yaml: no release {missing[1]!r}")
    if not pairs:
        raise DataError(f"no release exists at both {rev_a} and {rev_b}")
    return pairs


def is_git_revision(repo: Path, rev: str) -> bool:
    verify = ["git", "rev-parse", "--verify", "-q", "--end-of-options", f"{rev}^{{commit}}"]
    try:
        done = subprocess.run(verify, cwd=repo, capture_output=True)
    except OSError as exc:  # git not started (its pipes, at the open-file limit) is no "unknown revision"
        raise DataError(shown(f"{repo}: cannot start `git rev-parse` to look up {rev!r} ({exc.strerror})")) from None
    return done.returncode == 0


def workspace_or_rev(repo: Path, rev: str) -> str:
    """`rev` itself when git knows it; else, when it names a release of the workspace's params.yaml (a
    fresh clone has no tags), the workspace: `diff v4-a v4-b` then compares the two built folders."""
    if rev == WORKSPACE or is_git_revision(repo, rev):
        return rev
    try:
        here = releases_at(open_fs(str(repo), WORKSPACE))
    except DataError:
        here = {}
    if rev in here:  # README: without tags, a release name means that release's folder in the workspace
        return WORKSPACE
    return rev  # open_fs names it as an unknown revision


def _compared(fs_a, fs_b, rev_a: str, rev_b: str, release_a: str, release_b: str) -> dict:
    """One release pair's report; the snapshots' temp spills go with it (a signal unwinds through here)."""
    a = b = None
    try:
        a = read_snapshot(fs_a, rev_a, release_a)
        b = read_snapshot(fs_b, rev_b, release_b)
        explain = source_removals(fs_b, a.row_sources(), rev_b)
        explain.update(dict(zip(b.removed["id"], b.removed["reason"])))
        return compare(a, b, explain)
    finally:
        for snapshot in (a, b):
            if snapshot is not None:
                snapshot.close()


def cli(
    rev_a: str = typer.Argument(..., help="base revision (branch, tag or commit)"),
    rev_b: str = typer.Argument(..., help="new revision"),
    release: str = typer.Option(None, "--release", help="release name; default: see module doc"),
    format: str = typer.Option("md", "--format", help="md (for a PR comment) or json"),
    repo: Path = typer.Option(Path("."), "--repo", help="the DVC repository"),
) -> None:
    """Row-level diff of releases between two git revisions."""
    if format not in ("md", "json"):
        raise DataError(f"--format must be md or json, got {format!r}")
    at_a, at_b = workspace_or_rev(repo, rev_a), workspace_or_rev(repo, rev_b)
    fs_a, fs_b = open_fs(str(repo), at_a), open_fs(str(repo), at_b)
    reports = []
    for release_a, release_b in pick_releases(
        rev_a, rev_b, release, releases_at(fs_a, rev_a), releases_at(fs_b, rev_b)
    ):
        reports.append(_compared(fs_a, fs_b, rev_a, rev_b, release_a, release_b))
    for rev, at in ((rev_a, at_a), (rev_b, at_b)):
        if at != rev:  # said once the diff is built: a failure stays one line
            print(
                shown(f"diff: no git revision {rev!r}: release {rev} of the workspace (data/releases/{rev})"),
                file=sys.stderr,
            )
    if format == "json":
        print(shown_lines(json.dumps(reports if len(reports) > 1 else reports[0], indent=2, ensure_ascii=False)))
    else:  # prompts are data: an escape code in one is shown, never sent to the terminal
        print(shown_lines("\n".join(to_markdown(r) for r in reports)))
