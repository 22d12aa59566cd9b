"""A workspace for a failure test: the repository's params.yaml (sections replaced at will), split tables
as split@S writes them, and the checks every guarantee shares (one error line, nothing left over)."""

from __future__ import annotations

import hashlib
import os
import re
import resource
import signal
import subprocess
import sys
from pathlib import Path

import pandas as pd
import yaml

from helpers.commands import CliResult, cli
from helpers.repos import REPO
from scripts.lib.io import stable_id
from scripts.lib.marks import MARKER
from scripts.lib.tables import write_parquet

PARAMS = yaml.safe_load((REPO / "params.yaml").read_text(encoding="utf-8"))
RAW = REPO / "data" / "raw"
# scripts/lib/progress.py's one line per finished loop; its label may hold spaces (`release@v2 2023-03-30`)
SUMMARY = re.compile(r"^(?!error: ).+: [\d,]+ .* in [\d.]+ s \([\d,.]+ .*/s\)$")
LEFTOVER = re.compile(r"\.(tmp-|staging-)")
PNG = bytes.fromhex(  # a valid 1x1 PNG
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360000002000001e221bc330000000049454e44ae426082"
)


def without_embedding_steps(releases: dict) -> dict:
    """The release recipes with every `dedup: {method: embedding}` step left out. A release process that
    runs one imports torch and transformers and loads the MiniLM encoder (10 s of a failure test's 12, on
    two cores) and, on make_splits' near-identical texts, removes every row: a release of nothing."""

    def kept(steps: list) -> list:
        return [step for step in steps if (step.get("dedup") or {}).get("method") != "embedding"]

    light = {}
    for name, recipe in releases.items():
        recipe = {**recipe, "steps": kept(recipe.get("steps", []))}
        recipe["components"] = [{**c, "steps": kept(c.get("steps", []))} for c in recipe.get("components", [])]
        light[name] = recipe
    return light


def write_params(root: Path, **sections) -> None:
    """The repository's params.yaml in `root`, with the given sections replaced; its release recipes without
    their embedding steps unless `releases` is given (a test of embedding dedup in a release says so)."""
    params = {**PARAMS, "releases": without_embedding_steps(PARAMS["releases"]), **sections}
    if "sources" in sections:
        params = naming_its_sources(params, keep=set(sections))
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False), encoding="utf-8")


def params_error(root: Path, text: str) -> str | None:
    """The params error line for `text` written as root/params.yaml, or None when load_params accepts it."""
    from scripts.lib.errors import DataError
    from scripts.lib.params import load_params

    (root / "params.yaml").write_text(text, encoding="utf-8")
    try:
        load_params(path=root / "params.yaml")
    except DataError as exc:
        return str(exc)
    return None


def naming_its_sources(params: dict, keep: set[str] = frozenset()) -> dict:
    """`params` whose shipped `releases` and `generate.sources` name only entries it holds (every stage refuses a
    file naming a source or release it lacks: params.references): the releases naming another source, or
    based on or referencing a release left out, are left out. Sections in `keep` stay as they are."""
    names = set(params.get("sources") or {})
    params = {**params}
    if "generate" not in keep and isinstance(params.get("generate"), dict):
        params["generate"] = {**params["generate"], "sources": [s for s in params["generate"]["sources"] if s in names]}
    if "releases" in keep:
        return params
    releases = dict(params.get("releases") or {})
    while True:
        left = {
            name: spec
            for name, spec in releases.items()
            if set(_names_read(spec)) <= set(releases) and {c["source"] for c in spec.get("components", [])} <= names
        }
        if left.keys() == releases.keys():
            return {**params, "releases": left}
        releases = left


def _names_read(spec: dict) -> list[str]:
    """The releases a release entry reads: its base and each step's reference."""
    steps = [*spec.get("steps", []), *(s for c in spec.get("components", []) for s in c.get("steps", []))]
    reads = [spec["base"]] if spec.get("base") else []
    return reads + [s["dedup"]["reference"] for s in steps if (s.get("dedup") or {}).get("reference")]


def write_files(root: Path, files: dict[str, bytes]) -> None:
    """Each relative path of `files` under `root` (its folders made), holding its bytes."""
    for rel, data in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


def ingest_source(tmp_path: Path, monkeypatch, capfd, source: dict, files: dict[str, bytes]):
    """`ingest s` in-process, of a source `s` (path data/raw/s, holding `files`; the repository's params with
    `source` added): (the command's CliResult, its prompt table's rows, or None when it wrote none)."""
    import pyarrow.parquet as pq

    write_files(tmp_path / "data" / "raw" / "s", files)
    write_params(tmp_path, sources={**PARAMS["sources"], "s": {"path": "data/raw/s", **source}})
    result: CliResult = cli(["ingest", "s", "data/prompts/s.parquet"], tmp_path, monkeypatch, capfd)
    table = tmp_path / "data" / "prompts" / "s.parquet"
    return result, (pq.read_table(table).to_pylist() if table.exists() else None)


def snapshot(root: Path) -> dict[str, bytes | str | None]:
    """Every path under root -> its bytes (None for a folder, "fifo" for a FIFO, whose read would block):
    'nothing touched' is an equal snapshot."""
    return {p.relative_to(root).as_posix(): _content(p) for p in sorted(root.rglob("*"))}


def _content(path: Path) -> bytes | str | None:
    if path.is_fifo():
        return "fifo"
    return None if path.is_dir() else path.read_bytes()


def leftovers(root: Path) -> list[str]:
    """Temp and staging files an interrupted or failed command would leave."""
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if LEFTOVER.search(p.name))


def error_line(err: str) -> str:
    """The one line a failed or interrupted command prints (progress summaries aside); asserts it is one."""
    lines = [line for line in err.splitlines() if line.strip() and not SUMMARY.match(line)]
    assert len(lines) == 1, f"expected one stderr line, got:\n{err}"
    assert "Traceback" not in err
    return lines[0]


def captions_error_line(tmp_path, monkeypatch, capfd, manifest: dict) -> str:
    """captions@s's one error line (exit 2, no output), for two prompt rows and `manifest` as generate@s's manifest.parquet."""
    (tmp_path / "params.yaml").write_text("sources: {}\n", encoding="utf-8")
    (tmp_path / "images").mkdir()
    rows = {"id": ["a", "b"], "text": ["x", "y"], "prompt": ["x", "y"], "source": ["s", "s"]}
    rows |= {"split": ["train", "train"], "meta": ["{}", "{}"], "width": [8, 8], "height": [8, 8]}
    pd.DataFrame(rows).to_parquet(tmp_path / "in.parquet")
    pd.DataFrame(manifest).to_parquet(tmp_path / "images" / "manifest.parquet")
    result = cli(["captions", "s", "in.parquet", "images", "out.parquet"], tmp_path, monkeypatch, capfd)
    line = error_line(result.stderr)
    assert result.returncode == 2, result.stderr
    assert not (tmp_path / "out.parquet").exists()
    return line


def split_rows(n: int, source: str, image: Path, split: str | None = None) -> pd.DataFrame:
    ids = [stable_id(source, i) for i in range(n)]
    texts = [f"a red fox number {i}" for i in range(n)]
    return pd.DataFrame(
        {
            "id": ids,
            "source": source,
            "split": split,
            "text": texts,
            "orig_text": texts,
            "image": str(image),
            "width": 1,
            "height": 1,
        }
    )


def make_splits(root: Path, source: str = "diffusiondb", n: int = 40, digests: bool = False) -> None:
    """data/splits/<source>/{train,validation}.parquet as split@S writes them (marker included); the
    image in the source's image store (release refuses images outside params.yaml's sources.S.images).
    With `digests`, each row records its image's sha256 (`image_sha256`), as a rendered source's rows do."""
    image = root / "data" / "images" / source / "img.png"
    image.parent.mkdir(parents=True, exist_ok=True)
    image.write_bytes(PNG)
    folder = root / "data" / "splits" / source
    folder.mkdir(parents=True)
    rows = split_rows(n, source, image)
    if digests:
        rows["image_sha256"] = hashlib.sha256(PNG).hexdigest()
    write_parquet(rows.iloc[: n * 3 // 4].assign(split="train"), folder / "train.parquet")
    write_parquet(rows.iloc[n * 3 // 4 :].assign(split="validation"), folder / "validation.parquet")
    (folder / MARKER).write_text("", encoding="utf-8")


def run_scripts(
    root: Path,
    *argv: str,
    umask: int | None = None,
    limit: int | None = None,
    timeout: float = 300,
    memory: int | None = None,
) -> subprocess.CompletedProcess:
    """`python -m scripts ARGV` in `root` as a user runs it (one torch thread, no progress lines between the
    start and the summary), under `umask`, with writes past `limit` bytes failing as on a full disk, and
    `memory` bytes of address space at most (a command that holds a whole input fails, not the machine)."""

    def child() -> None:
        if umask is not None:
            os.umask(umask)
        if limit is not None:  # EFBIG past `limit` bytes, as a full disk fails a write
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        if memory is not None:
            resource.setrlimit(resource.RLIMIT_AS, (memory, memory))

    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "T2I_PROGRESS_EVERY_S": "3600"}
    return subprocess.run(
        [sys.executable, "-m", "scripts", *argv],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        preexec_fn=child,
    )


def assert_refused_untouched(result, root: Path, before: dict, named: str, said: str) -> None:
    """Exit 2, one line naming `named` and saying `said` (never the FIFO's read), root as `before`."""
    line = error_line(result.stderr)
    assert result.returncode == 2 and named in line and said in line, result.stderr
    assert "FIFO" not in line
    assert snapshot(root) == before  # the user's files byte for byte, nothing written
