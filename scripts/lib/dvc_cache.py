"""The one reader of DVC's internals: a directory output as dvc.lock records it, found in the DVC cache.

generate@S uses it to start the generation store from the output's previous version: DVC deletes a
stage's outputs before it runs, and a fresh clone after `dvc pull` has no store, so without it a
threshold change would re-render what the cache already holds. It is only ever a head start: every
failure to read the lock or the cache means "nothing known", never an error.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import yaml

LOCK = "dvc.lock"
# cache file names: checked, so a doctored lock or listing never names a path of its choosing
MD5 = re.compile(r"[0-9a-f]{32}")
DIR_OID = re.compile(r"[0-9a-f]{32}\.dir")


def locked_output_oid(output: Path | str, root: Path | str = ".") -> str | None:
    """The md5 dvc.lock (in `root`) records for `output` when it is a directory (`<md5>.dir`), else None."""
    root = Path(root)
    rel = os.path.relpath(os.path.abspath(output), os.path.abspath(root)).replace(os.sep, "/")
    if rel.startswith("../"):
        return None
    try:
        lock = yaml.safe_load((root / LOCK).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return None
    stages = lock.get("stages") if isinstance(lock, dict) else None
    for stage in (stages or {}).values() if isinstance(stages, dict) else ():
        for out in (stage.get("outs") or []) if isinstance(stage, dict) else ():
            if isinstance(out, dict) and out.get("path") == rel:
                oid = out.get("md5")
                return oid if isinstance(oid, str) and DIR_OID.fullmatch(oid) else None
    return None


def cached_directory(output: Path | str, root: Path | str = ".") -> dict[str, Path]:
    """file name inside `output` -> its file in the DVC cache, for `output` as dvc.lock records it.
    Empty outside a DVC repository, for an output dvc.lock does not list as a directory, or when the
    cache lacks the listing. The files named may be absent too (a partial `dvc pull`): check them."""
    oid = locked_output_oid(output, root)
    if oid is None:
        return {}
    from dvc.exceptions import DvcException
    from dvc.repo import Repo

    try:
        with Repo(str(root)) as repo:  # the cache may live elsewhere (cache.dir, `dvc exp run --temp`)
            odb = repo.cache.local
            entries = json.loads(Path(odb.oid_to_path(oid)).read_text(encoding="utf-8"))
            if not isinstance(entries, list):
                return {}
            return {
                e["relpath"]: Path(odb.oid_to_path(e["md5"]))
                for e in entries
                if isinstance(e, dict) and isinstance(e.get("relpath"), str) and MD5.fullmatch(str(e.get("md5")))
            }
    except (DvcException, OSError, UnicodeDecodeError, ValueError):
        return {}
