"""Round 41a: a tar shard's oversized extension header, and replay-history's removal at the open-file limit.
Every row failed before its fix:

1. A pax header over 1 MiB (a 10 MB `comment`, which GNU tar reads) or a GNU long-name header over it ended the
   walk through the shard: one corrupt_archive, and every later sample lost uncounted (samples a, b, c with b's
   image behind one: 1 row, 2 skips, c in neither). The header is now passed over by its size (its records read
   one by one, a comment never held), the one member it describes refused (its sample incomplete), the walk goes on.
2. A walk that still ends mid-shard (a bad checksum, two extension headers for one member, a bad pax record) now
   says in its one counted skip how much of the shard was not read, as its samples cannot be counted. (Round 42a:
   such a walk no longer ends; its rows check the skip names the bytes passed over and the walk goes on.)
3. replay-history at `ulimit -n` 10-12 left DEST/.git: MadeHere.remove's rmtree(ignore_errors=True) failed in
   silence for lack of descriptors. Each entry's pin is closed before its removal (DEST goes whole), and an entry
   left is one line naming it after the run's own failure.
"""

from __future__ import annotations

import io
import json
import resource
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from helpers import REPO, env
from helpers.limits import run_limited
from scripts.lib.archive import UnsafeArchive, iter_samples, open_tar
from scripts.lib.readers.dalle3 import Dalle3Sample, iter_dalle3

PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010802000000907753de0000000c4944415408d763f8cfc000000301010018dd8db0"
    "0000000049454e44ae426082"
)
BIG = 2 * 1024 * 1024  # over the 1 MiB cap


def member(name: str, data: bytes, pax: dict[str, str] | None = None) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.pax_headers = pax or {}
    return info, data


def sample(key: str, pax: dict[str, str] | None = None, on: str = "png") -> list[tuple[tarfile.TarInfo, bytes]]:
    record = json.dumps({"short_caption": f"caption {key}", "width": 1, "height": 1}).encode()
    return [
        member(f"{key}.json", record, pax if on == "json" else None),
        member(f"{key}.png", PNG, pax if on == "png" else None),
    ]


def write_shard(path: Path, members, fmt=tarfile.PAX_FORMAT, global_pax=None) -> Path:
    with tarfile.open(path, "w", format=fmt, pax_headers=global_pax or {}) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data))
    return path


def samples(shard: Path) -> list:
    with open_tar(shard) as buf:
        return list(iter_samples(buf))


def counted(shard: Path) -> tuple[list[str], list[tuple[str, str]]]:
    """iter_dalle3's rows (sample keys) and skips (reason, where) of one shard."""
    rows, skips = [], []
    for item in iter_dalle3(shard):
        if isinstance(item, Dalle3Sample):
            rows.append(item.key)
        else:
            skips.append((item.reason, item.where))
    return rows, skips


# ---------------------------------------------------------------- 1. an oversized extension header is passed over

OVERSIZED = {
    "10 MB pax comment on b.png": (sample("b", {"comment": "x" * 10_000_000}), "png"),
    "2 MiB pax comment and a path on b.png": (sample("b", {"comment": "y" * BIG, "path": "b.png"}), "png"),
    "2 MiB pax comment on b.json": (sample("b", {"comment": "z" * BIG}, on="json"), "json"),
}


@pytest.mark.parametrize("case", OVERSIZED)
def test_an_oversized_pax_header_refuses_its_member_only(tmp_path, case):
    members, refused_ext = OVERSIZED[case]
    shard = write_shard(tmp_path / "data-000000.tar", [*sample("a"), *members, *sample("c")])
    rows, skips = counted(shard)
    assert rows == ["a", "c"], (rows, skips)
    assert [reason for reason, _ in skips] == ["corrupt_archive", "incomplete_sample"], skips
    refused = [item for item in samples(shard) if isinstance(item, UnsafeArchive)]
    assert refused[0].member == f"b.{refused_ext}" and "oversized pax header" in str(refused[0]), refused


def test_an_oversized_gnu_long_name_refuses_its_member_only(tmp_path):
    long_name = "b" * BIG + ".png"  # the name is the header's data: the member is refused without it
    members = [*sample("a"), member(long_name, PNG), *sample("c")]
    shard = write_shard(tmp_path / "data-000000.tar", members, fmt=tarfile.GNU_FORMAT)
    rows, skips = counted(shard)
    assert rows == ["a", "c"] and [reason for reason, _ in skips] == ["corrupt_archive"], (rows, skips)
    refused = [item for item in samples(shard) if isinstance(item, UnsafeArchive)]
    assert "oversized GNU long-name header" in str(refused[0]) and refused[0].member is None, refused


def test_an_oversized_global_comment_refuses_nothing(tmp_path):
    """A global header names no member: git archive writes one (a comment); over the cap it is walked too."""
    shard = write_shard(tmp_path / "data-000000.tar", [*sample("a"), *sample("c")], global_pax={"comment": "g" * BIG})
    assert counted(shard) == (["a", "c"], [])


# ---------------------------------------------------------------- 2. a walk that ends says what it left


def corrupted(path: Path, how: str) -> Path:
    """Samples a, b, c; b's png header broken `how`."""
    members = [*sample("a"), *sample("b", {"comment": "x"} if how == "bad pax record" else None), *sample("c")]
    data = bytearray(write_shard(path, members).read_bytes())
    at = data.index(b"b.png") if how == "bad checksum" else data.index(b"comment=x") - 3
    if how == "bad checksum":
        data[at] = ord("q")
    else:
        data[at : at + 2] = b"99"
    path.write_bytes(bytes(data))
    return path


@pytest.mark.parametrize("how", ["bad checksum", "bad pax record", "bad checksum of the first member"])
def test_a_corrupt_header_says_what_it_passed_over(tmp_path, how):
    """Round 42a: the walk no longer ends at a corrupt header; its one skip names the bytes passed over, and the
    walk goes on at the next valid header (c is read)."""
    shard = tmp_path / "data-000000.tar"
    if how == "bad checksum of the first member":
        data = bytearray(write_shard(shard, [*sample("a"), *sample("c")]).read_bytes())
        data[0] = ord("q")
        shard.write_bytes(bytes(data))
    else:
        corrupted(shard, how)
    items = samples(shard)
    skipped = [item for item in items if isinstance(item, UnsafeArchive) and item.reason == "corrupt_archive"]
    assert len(skipped) == 1 and "skipped to the next valid header, the walk goes on" in str(skipped[0]), items
    assert "c" in [item[0] for item in items if isinstance(item, tuple)], items


# ---------------------------------------------------------------- 3. what a failed run made, removed or named

REMOVE = """
import os, resource, sys
from pathlib import Path
from scripts.lib.errors import DataError
from scripts.lib.safe_paths import MadeHere
base, depth, extra = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
made = MadeHere(base, pin=True)
made.new_file("/".join(["d"] * depth) + "/f", b"x")
made.new_file("top.txt", b"x")
open_now = len(os.listdir("/proc/self/fd")) - 1
resource.setrlimit(resource.RLIMIT_NOFILE, (open_now + extra, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
try:
    try:
        raise DataError("the run failed")
    except DataError:
        made.remove()
    print("removed")
except DataError as exc:
    print(exc)
"""


@pytest.mark.parametrize(("depth", "extra"), [(6, 0), (6, 2), (12, 3)], ids=lambda v: str(v))
def test_made_here_names_what_it_could_not_remove(tmp_path, depth, extra):
    """rmtree(ignore_errors=True) at the open-file limit left the folder, and said nothing."""
    base = tmp_path / "dest"
    base.mkdir()
    done = subprocess.run(
        [sys.executable, "-c", REMOVE, str(base), str(depth), str(extra)],
        env={**env(), "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    said = done.stdout.strip()
    assert done.returncode == 0, done.stderr
    assert said == f"the run failed; {base / 'd'} left behind (made by this run, not removed): remove it by hand"
    assert sorted(p.name for p in base.iterdir()) == ["d"]  # top.txt went


def source_repo(root: Path) -> Path:
    (root / "docs").mkdir(parents=True)
    (root / "params.yaml").write_text("releases: {}\n", encoding="utf-8")
    (root / "docs" / "a.md").write_text("a\n", encoding="utf-8")
    for args in (["init", "-q", "-b", "main"], ["add", "-A"], ["commit", "-q", "-m", "base"]):
        subprocess.run(["git", *args], cwd=root, check=True, capture_output=True, env=env())
    return root


@pytest.mark.slow  # a real replay-history run: 1-2 s a row
@pytest.mark.parametrize("files", [10, 11, 12], ids=lambda n: f"ulimit -n {n}")
def test_replay_history_at_the_open_file_limit_removes_what_it_made(tmp_path, files):
    src = source_repo(tmp_path / "src")
    dest = tmp_path / "out" / "dest"
    args = ["replay-history", str(dest), "--remote", str(tmp_path / "remote")]
    done = run_limited(args, src, resource.RLIMIT_NOFILE, files)
    assert done.returncode == 2 and "Too many open files" in done.stderr, done.stderr
    assert not (tmp_path / "out").exists(), sorted(str(p) for p in (tmp_path / "out").rglob("*"))


@pytest.mark.parametrize("signal_kind", [KeyboardInterrupt, SystemExit])
def test_what_a_signal_leaves_is_not_told_over_the_signal(tmp_path, monkeypatch, signal_kind):
    """Lead's review: under a signal (KeyboardInterrupt, or the SystemExit of a SIGTERM handler) an entry left
    behind raised a DataError over it, exit 2 instead of 130 or 143; the signal's own line and code now stand."""
    from scripts.lib import safe_paths

    made = safe_paths.MadeHere(tmp_path)
    made.new_file("top.txt", b"x")
    monkeypatch.setattr(safe_paths, "removed", lambda path: False)  # rmtree could not remove it
    with pytest.raises(signal_kind):
        try:
            raise signal_kind()
        except BaseException:
            made.remove()
            raise
    with pytest.raises(safe_paths.DataError, match="left behind"):  # a failure's line still names it
        try:
            raise safe_paths.DataError("the run failed")
        except safe_paths.DataError:
            made.remove()
