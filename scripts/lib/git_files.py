"""Which files git holds unmodified: one proof io.file_is_ours accepts (replacing such a file loses
nothing, `git checkout` brings it back)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path


def git_unmodified(folder: Path | str) -> set[str]:
    """Paths (relative to `folder`) of the regular files there whose bytes are those of git's HEAD. By
    content, not `git ls-files -m`: git does not report a file marked skip-worktree or assume-unchanged
    as modified, however the user edited it, and a file only in the index has no commit to come back
    from. Empty outside a git work tree."""

    def git(args: list[str], stdin: bytes | None = None) -> list[bytes]:
        try:
            result = subprocess.run(["git", *args], cwd=folder, input=stdin, capture_output=True, timeout=60)
        except (OSError, subprocess.SubprocessError):
            return []
        return result.stdout.split(b"\0" if "-z" in args else b"\n") if result.returncode == 0 else []

    committed = {}  # path -> blob id at HEAD, of regular files (a link's blob is its target's name)
    for meta, _, name in (entry.partition(b"\t") for entry in git(["ls-tree", "-r", "-z", "HEAD", "--", "."])):
        path = Path(folder) / os.fsdecode(name)
        if b"\n" not in name and meta[:6] in (b"100644", b"100755") and path.is_file() and not path.is_symlink():
            committed[name] = meta.split()[2]
    paths = b"".join(name + b"\n" for name in committed)
    blobs = git(["hash-object", "--no-filters", "--stdin-paths"], paths) if committed else []
    return {os.fsdecode(name) for name, blob in zip(committed, blobs) if blob == committed[name]}
