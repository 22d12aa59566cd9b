"""Round 22d: the breaks this hostile round found in `simpletuner`'s tar walk, `replay-history`'s DEST and the side
tools' outputs, one table per class (every row failed before its fix), on real files and runs of the command:

1. The tar walk followed some pax records and passed over others that tar follows: a pax sparse member (a regular
   `0` member with GNU.sparse.* records) was read as the file (its holes dropped: GNU tar's 35 MB image became its
   4 kB of data, written at exit 0), a global header's `path` or `size` (every later member's, to GNU tar and
   tarfile) was ignored, and of two pax or GNU long-name headers before one member the walk took one name where
   GNU tar or tarfile took another (`x path=A` then `L B`: A to both, B to the walk). Such a member is refused as
   a sparse file; such a header ends the walk as `corrupt_archive` (archive.iter_tar, archive._check_global). A
   global header of other records (git archive's comment) and one long name per member are read as before.
2. `replay-history DEST` with DEST itself a symbolic link (dangling, or to an empty folder) resolved the link and
   wrote the whole replay wherever it pointed, at exit 0. Refused in one line now (io.check_output_kind), a link on
   the way to DEST still followed as before.
3. `replay-history DEST`, `publish --out` and `pr-build --base-dir` wrote into the repository's stores:
   `replay-history .git/replay` put a whole repository in git's folder, `publish --dry-run --out data/hub` its Hub
   folder among the stages' outputs, and pr-build took `--base-dir .git/base` for the base's worktree (the gap round
   21 left: only pr-comment's and pr-build's --out were refused). All refuse now, in one line, before any work
   (side_inputs.check_outside_stores).
"""

from __future__ import annotations

import struct
import subprocess
import tarfile
import zlib
from pathlib import Path

import pytest

from helpers import env
from helpers.commands import cli
from helpers.workspace import error_line

pytestmark = pytest.mark.usefixtures("no_proxy")

# ---------------------------------------------------------------- 1. pax records the walk must follow or refuse


def png() -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    pixels = zlib.compress(b"".join(b"\x00" + b"\x00" * 12 for _ in range(4)))
    head = struct.pack(">IIBBBBB", 4, 4, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", head) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")


RECORD = b'{"width": 4, "height": 4, "short_caption": "a cat", "image_name": "a.png"}'


def header(name: str, size: int, typeflag: bytes = b"0") -> bytes:
    """One ustar header block, as tar writes it (the extension headers' too: pax `x`/`g`)."""
    info = tarfile.TarInfo(name)
    info.size, info.type = size, typeflag
    return info.tobuf(tarfile.USTAR_FORMAT)


def member(name: str, data: bytes, typeflag: bytes = b"0") -> bytes:
    return header(name, len(data), typeflag) + data + b"\x00" * (-len(data) % 512)


def long_name(name: str) -> bytes:
    """A GNU long-name header (`L`): the next member's name."""
    return member("././@LongLink", name.encode() + b"\x00", b"L")


def pax(records: dict[str, str], typeflag: bytes = b"x") -> bytes:
    """A pax extended header (`x`: the next member's, `g`: global) holding `records`."""
    data = b""
    for key, value in records.items():
        body = f" {key}={value}\n".encode()
        length = len(body) + 1  # a record's length counts its own digits
        while len(str(length)) + len(body) != length:
            length += 1
        data += str(length).encode() + body
    return header("pax", len(data), typeflag) + data + b"\x00" * (-len(data) % 512)


END = b"\x00" * 1024
IMAGE = png()
SPARSE_00 = {"GNU.sparse.size": str(1 << 20), "GNU.sparse.numblocks": "1", "GNU.sparse.offset": "0"}
SPARSE_00 |= {"GNU.sparse.numbytes": str(len(IMAGE)), "path": "a.png"}
SPARSE_10 = {"GNU.sparse.major": "1", "GNU.sparse.minor": "0", "GNU.sparse.name": "a.png"}
SPARSE_10 |= {"GNU.sparse.realsize": str(1 << 20), "path": "GNUSparseFile.0/a.png"}
SPARSE_MAP = b"1\n0\n" + str(len(IMAGE)).encode() + b"\n"

PAX_SHARDS = {  # case: (the shard's bytes, the skip reason its image gets)
    "a pax 0.0 sparse member: its data without the holes": (
        pax(SPARSE_00) + member("a.png", IMAGE) + member("a.json", RECORD) + END,
        "unsafe_member",
    ),
    "a global header renaming every member": (
        pax({"path": "q.png"}, b"g") + member("a.png", IMAGE) + member("a.json", RECORD) + END,
        "corrupt_archive",
    ),
    "two pax headers before one member": (
        pax({"path": "a.png"}) + pax({"comment": "x"}) + member("z.png", IMAGE) + member("a.json", RECORD) + END,
        "corrupt_archive",
    ),
    "a global header sizing every member": (
        pax({"size": "0"}, b"g") + member("a.png", IMAGE) + member("a.json", RECORD) + END,
        "corrupt_archive",
    ),
    "a GNU long name after a pax path": (  # GNU tar and tarfile: z.png; the walk took a.png
        pax({"path": "z.png"}) + long_name("a.png") + member("q.png", IMAGE) + member("a.json", RECORD) + END,
        "corrupt_archive",
    ),
    "two GNU long names": (  # GNU tar: the last, tarfile: the first
        long_name("z.png") + long_name("a.png") + member("q.png", IMAGE) + member("a.json", RECORD) + END,
        "corrupt_archive",
    ),
    "a pax 1.0 sparse member under its real name": (
        pax(SPARSE_10)
        + member("GNUSparseFile.0/a.png", SPARSE_MAP + b"\x00" * (512 - len(SPARSE_MAP)) + IMAGE)
        + member("a.json", RECORD)
        + END,
        "unsafe_member",
    ),
}


def simpletuner(tmp_path: Path, shard: bytes, monkeypatch, capfd):
    (tmp_path / "shards").mkdir()
    (tmp_path / "shards" / "s.tar").write_bytes(shard)
    argv = ["simpletuner", "shards", "out.parquet", "--data-dir", "data"]
    return cli(argv, tmp_path, monkeypatch, capfd)


@pytest.mark.parametrize("case", PAX_SHARDS)
def test_a_pax_record_tar_follows_is_followed_or_refused(tmp_path, monkeypatch, capfd, case):
    shard, reason = PAX_SHARDS[case]
    done = simpletuner(tmp_path, shard, monkeypatch, capfd)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "simpletuner: 0 of" in done.stdout and f"{reason} 1" in done.stdout, done.stdout
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == [".t2i-output"]


def test_a_global_comment_and_a_long_pax_name_are_read(tmp_path, monkeypatch, capfd):
    long = "d/" + "x" * 150
    shard = pax({"comment": "0123abcd"}, b"g") + pax({"path": f"{long}.png"}) + member("short.png", IMAGE)
    shard += pax({"path": f"{long}.json"}) + member("short.json", RECORD) + END
    done = simpletuner(tmp_path, shard, monkeypatch, capfd)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "simpletuner: 1 of 1 records" in done.stdout, done.stdout
    assert (tmp_path / "data" / "a.png").read_bytes() == IMAGE


# ---------------------------------------------------------------- 2 and 3. replay-history's DEST, publish's --out


def source_repo(root: Path) -> Path:
    """A git repository with a params.yaml of no releases: a replay of it is `git init` and a copy."""
    root.mkdir(parents=True)
    (root / "params.yaml").write_text("releases: {}\n", encoding="utf-8")
    for args in (["init", "-q", "-b", "main"], ["add", "params.yaml"], ["commit", "-q", "-m", "params"]):
        subprocess.run(["git", *args], cwd=root, check=True, capture_output=True, env=env())
    return root


def dangling(tmp: Path) -> tuple[str, Path]:
    (tmp / "dest").symlink_to(tmp / "elsewhere")
    return "../dest", tmp / "elsewhere"


def to_an_empty_folder(tmp: Path) -> tuple[str, Path]:
    (tmp / "mine").mkdir()
    (tmp / "dest").symlink_to("mine")
    return "../dest", tmp / "mine"


def to_a_link_to_a_folder(tmp: Path) -> tuple[str, Path]:
    (tmp / "deep" / "mine").mkdir(parents=True)
    (tmp / "hop").symlink_to(tmp / "deep" / "mine")
    (tmp / "dest").symlink_to("hop")
    return "../dest", tmp / "deep" / "mine"


LINKED_DESTS = {"a dangling link": dangling, "a link to an empty folder": to_an_empty_folder}
LINKED_DESTS |= {"a link to a link to a folder": to_a_link_to_a_folder}


@pytest.mark.parametrize("case", LINKED_DESTS)
def test_replay_history_never_writes_through_a_link_named_as_dest(tmp_path, monkeypatch, capfd, case):
    src = source_repo(tmp_path / "src")
    dest, target = LINKED_DESTS[case](tmp_path)
    before = sorted(p.name for p in target.iterdir()) if target.exists() else None
    done = cli(["replay-history", dest], src, monkeypatch, capfd)
    assert done.returncode == 2, done.stdout[-500:] + done.stderr[-2000:]
    assert "is a symbolic link" in error_line(done.stderr), done.stderr
    assert (sorted(p.name for p in target.iterdir()) if target.exists() else None) == before


def test_replay_history_still_follows_a_link_on_the_way_to_dest(tmp_path, monkeypatch, capfd):
    src = source_repo(tmp_path / "src")
    (tmp_path / "there").mkdir()
    (tmp_path / "via").symlink_to("there")
    done = cli(["replay-history", "../via/replay"], src, monkeypatch, capfd)
    assert done.returncode == 0, done.stderr[-2000:]
    assert (tmp_path / "there" / "replay" / "params.yaml").is_file()


def publish_repo(root: Path) -> Path:
    from test_publish import tiny_release

    tiny_release(root)
    subprocess.run(["git", "init", "-q", "-b", "main"], cwd=root, check=True, capture_output=True, env=env())
    (root / ".dvc").mkdir()
    return root


INTO_THE_STORES = {  # case: (command, output under the repository)
    "replay-history into .git": ("replay-history", ".git/replay"),
    "publish into data/": ("publish", "data/hub"),
    "publish into .git": ("publish", ".git/hub"),
    "replay-history into .dvc": ("replay-history", ".dvc/replay"),
    "replay-history into data/": ("replay-history", "data/replay"),
    "publish into .dvc": ("publish", ".dvc/hub"),
    "pr-build's base worktree into .git": ("pr-build", ".git/base"),
    "pr-build's base worktree into data/": ("pr-build", "data/base"),
    "pr-build's base worktree into .dvc": ("pr-build", ".dvc/base"),
}


@pytest.mark.parametrize("case", INTO_THE_STORES)
def test_side_tools_never_write_into_the_repositorys_stores(tmp_path, monkeypatch, capfd, case):
    command, out = INTO_THE_STORES[case]
    if command == "publish":
        root = publish_repo(tmp_path / "repo")
        argv = ["publish", "v2", "--repo-id", "a/b", "--dry-run", "--out", out]
    else:  # a repository with no stages: pr-build had nothing to build and made build.json, never the worktree
        root = source_repo(tmp_path / "repo")
        (root / ".dvc").mkdir()
        (root / "data").mkdir()
        (root / "dvc.yaml").write_text("stages: {}\n", encoding="utf-8")
        argv = ["replay-history", out] if command == "replay-history" else ["pr-build", "HEAD", "--base-dir", out]
    done = cli(argv, root, monkeypatch, capfd)
    assert done.returncode == 2, done.stdout[-500:] + done.stderr[-2000:]
    line = error_line(done.stderr)
    assert "the output is inside the input" in line, line
    assert not (root / out).exists()
