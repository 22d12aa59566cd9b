"""Tar shards written the same way on every machine (WebDataset exports, the bucketed export).

A sample's key is the stem of its member names, and WebDataset reads a name's key as everything up to
the first '.' of its basename, with '/' a folder: a row id such as `src/a.b` written as is became the
sample `src/a` with the extension `b.png`, and `src/a.c` merged into it. So the key is the id escaped
(sample_key): every byte outside `[a-z0-9_-]` as `%XX`. That mapping is reversible (key_id), so distinct
ids give distinct keys, and an escaped key holds no '.', '/' or capital letter, so it is also a unique
file name on a case-insensitive disk. The ids the pipeline makes (16 hex digits) are their own keys: a
shard of them keeps its bytes. The true id stays in each sample's .json member.
"""

from __future__ import annotations

import io
import tarfile
from pathlib import Path
from urllib.parse import unquote

from scripts.lib.errors import DataError, shown_short

KEY_CHARACTERS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789_-")


def sample_key(row_id) -> str:
    """The WebDataset key of a row id: the id, every character outside KEY_CHARACTERS as %XX of its UTF-8
    bytes (capital hex digits: a key is a sequence of unambiguous parts, so no two ids share one)."""
    if not isinstance(row_id, str) or not row_id:
        raise DataError(f"sample id {shown_short(repr(row_id))}: a sample needs a non-empty text id")
    return "".join(
        c if c in KEY_CHARACTERS else "".join(f"%{b:02X}" for b in c.encode("utf-8", "surrogatepass")) for c in row_id
    )


def key_id(key: str) -> str:
    """The row id a sample_key came from."""
    return unquote(key, errors="surrogatepass")


class ShardWriter:
    """Deterministic tar shards: the same samples give the same bytes on every machine.

    `keys`, shared by several writers (one per bucket), refuses a key already written by any of them."""

    def __init__(self, folder: Path, shard_size: int, keys: set[str] | None = None):
        self.folder, self.shard_size = folder, shard_size
        self.index, self.count = -1, 0
        self.tar: tarfile.TarFile | None = None
        self.keys = set() if keys is None else keys

    def add(self, row_id: str, members: list[tuple[str, bytes]]) -> None:
        """Write one sample, its member names `<sample_key(row_id)>.<ext>`; an id already written (two rows
        under one id would read back as one sample, or two with one key), or an extension twice (one
        member of the two read back), is refused."""
        key = sample_key(row_id)
        if key in self.keys:
            raise DataError(f"sample id {shown_short(repr(row_id))}: written twice; a sample's id must be unique")
        extensions = [ext.lower() for ext, _ in members]
        if len(set(extensions)) < len(extensions):  # an image kept as x.json: one of the two members is lost
            twice = next(ext for ext in extensions if extensions.count(ext) > 1)
            raise DataError(
                f"sample id {shown_short(repr(row_id))}: two members named {key}.{shown_short(twice)}; "
                "a sample's members need extensions of their own"
            )
        self.keys.add(key)
        if self.tar is None or self.count == self.shard_size:
            self._next()
        assert self.tar is not None  # _next opened one
        for ext, data in members:
            info = tarfile.TarInfo(f"{key}.{ext}")
            info.size, info.mtime, info.mode = len(data), 0, 0o644
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            self.tar.addfile(info, io.BytesIO(data))
        self.count += 1

    def _next(self) -> None:
        self.close()
        self.index, self.count = self.index + 1, 0
        self.folder.mkdir(parents=True, exist_ok=True)
        # pax: a name over ustar's 100 bytes (a long id, escaped) gets a pax header; a shorter one the
        # very bytes ustar writes
        self.tar = tarfile.open(self.folder / f"shard-{self.index:06d}.tar", "w", format=tarfile.PAX_FORMAT)  # noqa: SIM115  # closed by close()

    def close(self) -> None:
        if self.tar is not None:
            self.tar.close()
            self.tar = None

    @property
    def shards(self) -> int:
        return self.index + 1


def json_member(value: dict, shards: Path) -> bytes:
    """A sample's .json member, by nesting.dumps_json: a NaN or infinity (a float column's value) went in as `NaN`
    or `Infinity`, which other JSON readers refuse."""
    from scripts.lib.nesting import dumps_json

    return dumps_json(value, shards, ensure_ascii=False, sort_keys=True).encode("utf-8")
