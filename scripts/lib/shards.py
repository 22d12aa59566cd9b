"""Tar shards written the same way on every machine (WebDataset exports, the bucketed export)."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path


class ShardWriter:
    """Deterministic tar shards: the same samples give the same bytes on every machine."""

    def __init__(self, folder: Path, shard_size: int):
        self.folder, self.shard_size = folder, shard_size
        self.index, self.count = -1, 0
        self.tar: tarfile.TarFile | None = None

    def add(self, key: str, members: list[tuple[str, bytes]]) -> None:
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
        self.tar = tarfile.open(self.folder / f"shard-{self.index:06d}.tar", "w", format=tarfile.USTAR_FORMAT)  # noqa: SIM115  # closed by close()

    def close(self) -> None:
        if self.tar is not None:
            self.tar.close()
            self.tar = None

    @property
    def shards(self) -> int:
        return self.index + 1
