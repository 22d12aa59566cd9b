"""Round 25d: a path a stage or tool reads under a folder it was given, checked by one rule (safe_paths.leads_out:
the old table_in, summary.stats_path and side_inputs.check_repository_file each spelled it), one table per class
(every row failed before its fix), on real files, links and runs of the command:

1. `summary` read a release's stats.json that is a hard link to another file (outside data/releases, or
   another release's) and copied its row count into data/summary.json, `dvc exp show`'s metrics, at exit 0:
   a hard link keeps the name and passes every path check. stats.json is `cache: false` (never DVC's hard
   link), so a second name is refused in one line (safe_paths.read_within, one_name).
2. A file replaced by a link out between the check and the open was read: summary's stats.json, the
   workspace dvc.lock of pr-comment (lock_text.lock_at). The check ran on the name, the open followed
   whatever was there by then. The file is checked again once open, by what its descriptor names
   (safe_paths.read_within, opened_real_path: /proc/self/fd).
3. dedup read a folder input's `*.parquet` shard that is a link out of the folder (absolute, `..` up and out,
   a link to a link, a `x.parquet` folder elsewhere) as the input's own rows, at exit 0: refused in one line by
   the same rule (dedup.stage_input.shards), a link into DVC's cache (cache.type symlink) still read.
"""

from __future__ import annotations

import io
import os
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from helpers.commands import cli
from helpers.repos import REPO
from helpers.tiers import fast_first
from helpers.workspace import error_line, write_params

COMPONENTS = [{"source": "diffusiondb", "split": s, "into": s} for s in ("train", "validation")]
PICKS = {"r": {"components": COMPONENTS}}  # summary reads release r's stats.json only
OURS = '{"rows": {"total": 6}}'
THEIRS = '{"rows": {"total": 99}}'  # what must never reach the metrics


def _workspace(tmp_path: Path) -> tuple[Path, Path]:
    root, out = tmp_path / "ws", tmp_path / "elsewhere"
    (root / "data/releases/r").mkdir(parents=True)
    out.mkdir()
    (out / "stats.json").write_text(THEIRS, encoding="utf-8")
    write_params(root, releases=PICKS)
    return root, out


# ---------------------------------------------------------------- 1. summary's stats.json with another name


def hard_link_out(root: Path, out: Path) -> str:
    os.link(out / "stats.json", root / "data/releases/r/stats.json")
    return "data/releases"


def hard_link_to_another_release(root: Path, out: Path) -> str:  # a leftover folder's file: inside, yet not r's
    (root / "data/releases/old").mkdir()
    (root / "data/releases/old/stats.json").write_text(THEIRS, encoding="utf-8")
    os.link(root / "data/releases/old/stats.json", root / "data/releases/r/stats.json")
    return "data/releases"


def hard_link_out_releases_dotted(root: Path, out: Path) -> str:  # the folder spelled with a trailing `/.`
    os.link(out / "stats.json", root / "data/releases/r/stats.json")
    return "data/releases/."


def hard_link_out_release_linked_in(root: Path, out: Path) -> str:  # the release folder a link inside, `//`
    (root / "data/releases/r").rmdir()
    (root / "data/releases/r-real").mkdir()
    (root / "data/releases/r").symlink_to("r-real")
    os.link(out / "stats.json", root / "data/releases/r-real/stats.json")
    return "data/releases//"


SECOND_NAME = [
    hard_link_out,
    hard_link_to_another_release,
    hard_link_out_releases_dotted,
    hard_link_out_release_linked_in,
]


@pytest.mark.parametrize("case", fast_first(SECOND_NAME, keep=2), ids=lambda case: case.__name__)
def test_summary_never_copies_a_stats_file_with_another_name(tmp_path, monkeypatch, capfd, case):
    root, out = _workspace(tmp_path)
    releases = case(root, out)
    result = cli(["summary", releases, "data/summary.json"], root, monkeypatch, capfd)
    assert result.returncode == 2, result.stderr
    assert "stats.json: has another hard link; refusing to read" in error_line(result.stderr)
    assert not (root / "data/summary.json").exists()


def test_summary_reads_its_own_stats_file(tmp_path, monkeypatch, capfd):
    root, _ = _workspace(tmp_path)
    (root / "data/releases/r/stats.json").write_text(OURS, encoding="utf-8")
    result = cli(["summary", "data/releases/.", "data/summary.json"], root, monkeypatch, capfd)
    assert result.returncode == 0, result.stderr
    assert '"r": 6' in (root / "data/summary.json").read_text(encoding="utf-8")


# ---------------------------------------------------------------- 2. replaced by a link between check and open


def _replaced_at_open(monkeypatch, target: Path, replace) -> None:
    """The first open of `target` (os.open or io.open, as each reader opens) finds it replaced first: the
    moment between a check on its name and the open, made certain."""
    target, pending = os.path.abspath(target), [True]

    def hooked(real_open):
        def opening(path, *args, **kwargs):
            if pending and not isinstance(path, int) and os.path.abspath(os.fsdecode(path)) == target:
                pending.clear()
                replace()
            return real_open(path, *args, **kwargs)

        return opening

    monkeypatch.setattr(os, "open", hooked(os.open))
    monkeypatch.setattr(io, "open", hooked(io.open))


def _swap(path: Path, make_link) -> None:
    moved = path.with_name(path.name + ".moved")
    shutil.move(path, moved)
    make_link(path)


def stats_to_absolute_link(root: Path, out: Path):
    path = root / "data/releases/r/stats.json"
    return path, lambda: _swap(path, lambda p: p.symlink_to(out / "stats.json"))


def stats_to_relative_link_up(root: Path, out: Path):  # `..` climbs out from inside the releases folder
    path = root / "data/releases/r/stats.json"
    return path, lambda: _swap(path, lambda p: p.symlink_to("../../../../elsewhere/stats.json"))


def stats_to_link_to_a_link(root: Path, out: Path):  # a link inside data/releases, to a link out
    path = root / "data/releases/r/stats.json"
    (root / "data/releases/hop").symlink_to(out / "stats.json")
    return path, lambda: _swap(path, lambda p: p.symlink_to("../hop"))


REPLACED = [stats_to_absolute_link, stats_to_relative_link_up, stats_to_link_to_a_link]


@pytest.mark.parametrize("case", fast_first(REPLACED, keep=2), ids=lambda case: case.__name__)
def test_summary_never_reads_a_stats_file_replaced_by_a_link_out(tmp_path, monkeypatch, capfd, case):
    root, out = _workspace(tmp_path)
    (root / "data/releases/r/stats.json").write_text(OURS, encoding="utf-8")
    target, replace = case(root, out)
    _replaced_at_open(monkeypatch, target, replace)
    result = cli(["summary", "data/releases", "data/summary.json"], root, monkeypatch, capfd)
    assert result.returncode == 2, result.stderr
    line = error_line(result.stderr)
    assert "data/releases/r/stats.json: a link on its way leads out of data/releases" in line, line
    assert not (root / "data/summary.json").exists()


LOCK = "schema: '2.0'\nstages: {}\n"
LOCKS_REPLACED = {  # case: the link dvc.lock becomes, from a file in the repository's parent
    "an absolute link": lambda repo: (repo.parent / "elsewhere.lock").absolute(),
    "a relative link up": lambda repo: Path("..") / "elsewhere.lock",
    "a link to a link out": lambda repo: Path("conf") / "hop.lock",
}


@pytest.mark.parametrize("case", fast_first(LOCKS_REPLACED, keep=2))
def test_a_workspace_dvc_lock_replaced_by_a_link_out_is_never_read(tmp_path, monkeypatch, case):
    from scripts.lib.errors import DataError
    from scripts.tools.lock_text import lock_at

    repo = tmp_path / "repo"
    (repo / "conf").mkdir(parents=True)
    (repo / "dvc.lock").write_text(LOCK, encoding="utf-8")
    (tmp_path / "elsewhere.lock").write_text("schema: '2.0'\nstages: {secret: {}}\n", encoding="utf-8")
    (repo / "conf/hop.lock").symlink_to(tmp_path / "elsewhere.lock")
    link = LOCKS_REPLACED[case](repo)
    _replaced_at_open(monkeypatch, repo / "dvc.lock", lambda: _swap(repo / "dvc.lock", lambda p: p.symlink_to(link)))
    with pytest.raises(DataError) as caught:
        lock_at(str(repo), "workspace")
    assert str(caught.value) == "dvc.lock: a link on its way leads out of the repository; refusing to read it"


def test_a_workspace_dvc_lock_is_read():
    from scripts.tools.lock_text import lock_at

    assert "stages:" in (lock_at(str(REPO), "workspace") or "")


# ---------------------------------------------------------------- 3. a shard of dedup's folder input linked out


def _prompts(tag: str, n: int = 4) -> pa.Table:
    texts = [f"{tag} green lamp number {i}" for i in range(n)]
    return pa.table({"id": [f"{tag}{i}" for i in range(n)], "source": ["diffusiondb"] * n, "text": texts})


def shard_to_absolute_link(root: Path, out: Path) -> None:
    pq.write_table(_prompts("x"), out / "x.parquet")
    (root / "in/b.parquet").symlink_to(out / "x.parquet")


def shard_to_relative_link_up(root: Path, out: Path) -> None:
    pq.write_table(_prompts("x"), out / "x.parquet")
    (root / "in/b.parquet").symlink_to("../../elsewhere/x.parquet")


def shard_to_link_to_a_link(root: Path, out: Path) -> None:  # the first hop stays in the workspace
    pq.write_table(_prompts("x"), out / "x.parquet")
    (root / "hop.parquet").symlink_to(out / "x.parquet")
    (root / "in/b.parquet").symlink_to("../hop.parquet")


def shard_folder_linked_out(root: Path, out: Path) -> None:  # a folder named as a shard: pyarrow reads all in it
    (out / "more").mkdir()
    pq.write_table(_prompts("x"), out / "more/x.parquet")
    (root / "in/B.PARQUET").symlink_to(out / "more")


SHARDS_OUT = [shard_to_absolute_link, shard_to_relative_link_up, shard_to_link_to_a_link, shard_folder_linked_out]


def _dedup_folder(tmp_path: Path, monkeypatch, capfd, plant):
    root, out = tmp_path / "ws", tmp_path / "elsewhere"
    (root / "in").mkdir(parents=True)
    out.mkdir()
    write_params(root)
    pq.write_table(_prompts("a"), root / "in/a.parquet")
    plant(root, out)
    return root, cli(["dedup", "diffusiondb", "in", "out/d.parquet"], root, monkeypatch, capfd)


@pytest.mark.parametrize("case", fast_first(SHARDS_OUT, keep=2), ids=lambda case: case.__name__)
def test_dedup_never_reads_a_shard_linked_out_of_its_folder(tmp_path, monkeypatch, capfd, case):
    root, result = _dedup_folder(tmp_path, monkeypatch, capfd, case)
    assert result.returncode == 2, result.stderr
    assert ": a link on its way leads out of in; refusing to read it" in error_line(result.stderr)
    assert not (root / "out").exists()


def test_dedup_reads_a_shard_linked_into_the_dvc_cache(tmp_path, monkeypatch, capfd):
    def cached(root: Path, out: Path) -> None:
        (root / ".dvc/cache/files/md5/ab").mkdir(parents=True)
        pq.write_table(_prompts("c"), root / ".dvc/cache/files/md5/ab" / ("0" * 30))
        (root / "in/b.parquet").symlink_to(root / ".dvc/cache/files/md5/ab" / ("0" * 30))

    root, result = _dedup_folder(tmp_path, monkeypatch, capfd, cached)
    assert result.returncode == 0, result.stderr
    assert pq.read_table(root / "out/d.parquet").num_rows == 8
